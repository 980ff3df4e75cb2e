"""The environment record (zerotune.environment): real package metadata, torch's CUDA view and a real git work tree;
`zerotune env` prints this machine's record or the ones a sweep stored."""

import json
import shlex
import subprocess
from importlib import metadata

import pytest

from sweeps.cli import main
from zerotune.environment import record, summary_rows, with_worker


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)  # fmt: skip


def test_the_record_holds_versions_accelerators_git_command_and_config(tmp_path):
    import torch

    _git(tmp_path, "init", "-q")
    (tmp_path / "sweep.yaml").write_text("name: a\n")
    _git(tmp_path, "add", "sweep.yaml")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    argv = ["zerotune", "sweep", "run", "my sweep.yaml", "search.num_trials=3"]
    rec = record(kind="sweep", config={"name": "a"}, argv=argv, cwd=str(tmp_path))
    assert rec["git"] == {"commit": head, "dirty": False}
    assert rec["command"] == shlex.join(argv) and shlex.split(rec["command"]) == argv
    assert rec["config"] == {"name": "a"} and rec["kind"] == "sweep"
    for name in ("torch", "transformers", "deepspeed", "ray", "optuna", "peft"):
        assert rec["packages"][name] == metadata.version(name)
    gpus = rec["accelerators"]["gpus"]
    assert len(gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if not torch.cuda.is_available():
        assert rec["accelerators"]["cuda"] == "none" and dict(summary_rows(rec))["gpus"] == "none"
    assert json.loads(json.dumps(rec)) == rec  # stored as JSON as it is

    (tmp_path / "sweep.yaml").write_text("name: b\n")
    assert record(kind="sweep", cwd=str(tmp_path))["git"]["dirty"] is True
    assert dict(summary_rows(record(kind="sweep", cwd=str(tmp_path))))["git commit"] == f"{head[:12]} (dirty)"
    assert record(kind="train", cwd="/")["git"] is None  # outside any work tree


def test_a_fit_record_shows_the_workers_gpus_beside_the_drivers():
    driver = record(kind="refit", argv=["zerotune", "refit", "s"])
    worker = {
        "host": "gpu-node-1",
        "packages": {**driver["packages"], "torch": "2.13.0+cu128"},
        "accelerators": {"cuda": "12.8", "torch_cuda_build": "12.8", "driver": "570.1", "gpus": [
            {"name": "NVIDIA H100", "memory_gib": 79.2}, {"name": "NVIDIA H100", "memory_gib": 79.2}]},
    }  # fmt: skip
    rows = dict(summary_rows(with_worker(driver, worker)))
    assert rows["worker gpus"] == "2: NVIDIA H100 (79.2 GiB), NVIDIA H100 (79.2 GiB)"
    assert rows["worker torch"] == "2.13.0+cu128" and "worker ray" not in rows  # only what differs from the driver
    assert rows["worker nvidia driver"] == "570.1" and rows["worker host"] == "gpu-node-1"


def test_zerotune_env_prints_this_machine_and_a_sweeps_stored_records(tmp_path, capsys):
    from sweeps.layout import SweepDir
    from sweeps.results.environment import write_fit_record, write_sweep_record

    assert main(["env", "--format", "json"]) == 0
    current = json.loads(capsys.readouterr().out)["current"]
    assert current["packages"]["torch"] == metadata.version("torch") and current["kind"] == "current"

    sd = SweepDir(str(tmp_path / "s"))
    sd.write(sd.config, {"name": "s"})
    assert main(["env", "s", "--storage", str(tmp_path)]) == 3
    assert "holds no environment record" in capsys.readouterr().err
    write_sweep_record(sd, {"name": "s", "seed": 3})
    run = sd.new_refit()
    write_fit_record(run, kind="refit", config={"train": {"learning_rate": 0.003}}, model_uri=None)
    sd.mark_refit_complete(run)
    assert main(["env", "s", "--storage", str(tmp_path), "--format", "json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["sweep"]["config"] == {"name": "s", "seed": 3}
    assert stored["refit"]["config"] == {"train": {"learning_rate": 0.003}} and stored["refit"]["kind"] == "refit"
    assert main(["env", sd.uri]) == 0
    table = capsys.readouterr().out
    assert "[sweep]" in table and "[refit]" in table and f"torch            {metadata.version('torch')}" in table
    assert main(["env", run.uri, "--format", "json"]) == 0  # one run's directory
    assert json.loads(capsys.readouterr().out)["run"]["kind"] == "refit"


@pytest.mark.parametrize("argv", [["env", "--help"], ["push", "--help"]])
def test_the_commands_are_registered(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "--format" in capsys.readouterr().out
