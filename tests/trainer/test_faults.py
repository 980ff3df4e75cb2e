"""The test fault hooks (trainer.faults): none unless asked for, a real allocation failure, limits restored."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trainer import faults

REPO = Path(__file__).resolve().parents[2]


def test_no_fault_variable_means_no_hook():
    assert faults.step_hook("/r/records", rank=0, env={}) is None
    assert faults.step_hook(None, rank=0, env={"PATH": "/bin"}) is None


def test_faults_apply_only_to_fits_whose_records_path_matches():
    env = {faults.OOM_BATCH: "16", faults.ONLY: "/restart/"}
    assert faults.step_hook("/runs/other/records", rank=0, env=env) is None
    assert faults.step_hook(None, rank=0, env=env) is None
    assert faults.step_hook("/runs/restart/records", rank=0, env=env) is not None


def test_only_rank_0_is_killed(tmp_path):
    env = {faults.KILL_AT: f"0:2:3:{tmp_path / 'killed'}"}
    assert faults.step_hook("/r", rank=1, env=env) is None
    assert faults.step_hook("/r", rank=0, env=env) is not None


def _run(code: str) -> dict:
    """Run `code` in a fresh interpreter (address-space limits are per process); it prints one JSON line."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_kill_hook_kills_once_at_its_step(tmp_path):
    marker = tmp_path / "killed"
    code = f"""
        import json
        from trainer import faults
        hook = faults.step_hook(None, rank=0, env={{faults.KILL_AT: "0:1:2:{marker}"}})
        with hook(0, 1, 1, 8):
            pass
        print(json.dumps({{"alive": True}}), flush=True)
        with hook(0, 1, 2, 8):
            pass
        print(json.dumps({{"alive": "after the kill step"}}))
    """
    first = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == -9 and json.loads(first.stdout.splitlines()[-1]) == {"alive": True}, first.stderr
    assert marker.exists()
    assert _run(code) == {"alive": "after the kill step"}  # the marker says it fired: a restart runs on


def test_two_kill_points_each_kill_once_in_turn(tmp_path):
    """A fold boundary, then a later step: the first run dies at the first, its restart at the second, the next
    runs on (what the shared sweep's twice-killed trial needs, tests/tiny_models.sweep_faults)."""
    plan = f"1:0:0:{tmp_path / 'first'}, 2:0:0:{tmp_path / 'second'}"
    code = f"""
        import json
        from trainer import faults
        hook = faults.step_hook(None, rank=0, env={{faults.KILL_AT: "{plan}"}})
        for at in [(0, 3, 5), (1, 0, 0), (1, 3, 5), (2, 0, 0)]:
            with hook(*at, 8):
                print(json.dumps({{"passed": at}}), flush=True)
    """
    passed = []
    for _ in range(3):
        run = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        passed.append((run.returncode, [tuple(json.loads(line)["passed"]) for line in run.stdout.splitlines()]))
    assert passed == [
        (-9, [(0, 3, 5)]),
        (-9, [(0, 3, 5), (1, 0, 0), (1, 3, 5)]),
        (0, [(0, 3, 5), (1, 0, 0), (1, 3, 5), (2, 0, 0)]),
    ], passed
    assert (tmp_path / "first").exists() and (tmp_path / "second").exists()


@pytest.mark.parametrize("hard", ["infinite", "finite"])
def test_the_oom_hook_makes_a_big_batch_fail_and_restores_the_limit(hard):
    """Under the hook an allocation fails as out-of-memory; after it the previous limit (soft and hard) holds
    again and the same allocation succeeds, so an out-of-memory handler needs no setrlimit of its own."""
    result = _run(f"""
        import json, resource
        from trainer import faults
        from trainer.outcome import is_oom
        if "{hard}" == "finite":  # a finite hard limit: raising it back to infinity would be refused
            size = faults._address_space_bytes() + 2**32
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
        before = resource.getrlimit(resource.RLIMIT_AS)
        hook = faults.step_hook(None, rank=1, env={{faults.OOM_BATCH: "16"}})
        with hook(0, 0, 0, 8):  # a smaller batch runs unlimited
            small = resource.getrlimit(resource.RLIMIT_AS)
        error = None
        try:
            with hook(0, 0, 1, 16):
                bytearray(256 * 2**20)
        except MemoryError as exc:
            error = exc
        after = resource.getrlimit(resource.RLIMIT_AS)
        bytearray(256 * 2**20)
        oom = error is not None and is_oom(error)
        print(json.dumps({{"before": before, "small": small, "after": after, "oom": oom}}))
    """)
    assert result["oom"], result
    assert result["small"] == result["before"] and result["after"] == result["before"], result


def test_the_oom_hook_fails_torchs_allocator_as_out_of_memory():
    result = _run("""
        import json
        import torch
        from trainer import faults
        from trainer.outcome import is_oom
        hook = faults.step_hook(None, rank=0, env={faults.OOM_BATCH: "4"})
        try:
            with hook(0, 0, 0, 4):
                torch.ones(2**26)
            error = None
        except Exception as exc:
            error = exc
        torch.ones(2**26)
        print(json.dumps({"oom": error is not None and is_oom(error), "mkldnn": torch.backends.mkldnn.enabled}))
    """)
    assert result == {"oom": True, "mkldnn": False}


def test_the_pause_hook_stands_still_once_at_its_step(tmp_path, monkeypatch):
    """A test removes a node while its worker stands at a known step; the restarted worker group runs on."""
    monkeypatch.setattr(faults, "PAUSE_S", 0.5)
    marker = tmp_path / "paused"
    hook = faults.step_hook("/r", rank=0, env={faults.PAUSE_AT: f"1:0:2:{marker}"})
    assert faults.step_hook("/r", rank=1, env={faults.PAUSE_AT: f"1:0:2:{marker}"}) is None
    started = time.monotonic()
    with hook(1, 0, 1, 8):
        pass
    assert time.monotonic() - started < 0.4 and not marker.exists()
    with hook(1, 0, 2, 8):
        pass
    assert time.monotonic() - started >= 0.5 and marker.read_text() == str(os.getpid())
    again = time.monotonic()
    with hook(1, 0, 2, 8):
        pass
    assert time.monotonic() - again < 0.4
