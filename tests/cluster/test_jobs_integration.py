"""`zerotune job submit|logs|status` and `ray job submit` against a real local Ray head with token authentication:
the session's private `ray start --head` (tests/token_head.py, fixture conftest.ray_head).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from zerotune.errors import ClusterError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARKER = "hello-from-a-zerotune-job"


@pytest.fixture
def project(tmp_path) -> Path:
    """A working dir to upload, with things that must stay behind."""
    (tmp_path / "hello.py").write_text(
        "import os\n"
        "assert not os.path.exists('results') and not os.path.exists('.venv'), 'excluded dirs were uploaded'\n"
        f"print('{MARKER}')\n"
    )
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "big.bin").write_bytes(b"\0" * 1024)
    (tmp_path / ".venv").mkdir()
    (tmp_path / "sweep.yaml").write_text("name: smoke\ndata:\n  path: data.csv\n")
    return tmp_path


def test_submit_with_token_succeeds_and_logs(ray_head, project):
    from cluster import jobs

    address, token = ray_head["address"], ray_head["token"]
    job_id = jobs.submit(address=address, entrypoint="python hello.py", token=token, working_dir=project)
    status = jobs.wait_for_job(address=address, job_id=job_id, token=token, timeout_s=60, poll_s=0.5)
    logs = jobs.job_logs(address=address, job_id=job_id, token=token)
    assert status["status"] == "SUCCEEDED", logs
    assert MARKER in logs


def test_missing_or_wrong_token_is_a_cluster_error_naming_the_fix(ray_head, project):
    from cluster import jobs

    with pytest.raises(ClusterError) as missing:
        jobs.submit(address=ray_head["address"], entrypoint="python hello.py", token=None, working_dir=project)
    assert "RAY_AUTH_TOKEN" in missing.value.fix and missing.value.field == "token"
    with pytest.raises(ClusterError, match="rejected the token") as wrong:
        jobs.job_status(address=ray_head["address"], job_id="raysubmit_x", token="not-the-token")
    assert "RAY_AUTH_TOKEN" in wrong.value.fix


def _cli(args: list[str], *, cwd: Path, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", **env_extra}
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        if key not in env_extra:
            env.pop(key, None)
    env["HOME"] = str(cwd / ".venv")  # no ~/.ray/auth_token of the machine's user
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_never_prints_the_token(ray_head, project):
    address, token = ray_head["address"], ray_head["token"]
    with_token = {"RAY_AUTH_TOKEN": token}

    # overrides right after CONFIG: argparse does not intermix positionals after options
    submitted = _cli(
        [
            "job",
            "submit",
            "sweep.yaml",
            "search.num_trials=1",
            "--address",
            address,
            "--storage",
            "/tmp/zt-results",
            "--format",
            "json",
        ],
        cwd=project,
        env_extra=with_token,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout.strip().splitlines()[-1])
    assert job["entrypoint"] == "python -m sweeps sweep run sweep.yaml search.num_trials=1 storage.path=/tmp/zt-results"

    token_file = project / "token"
    token_file.write_text(token + "\n")
    status = _cli(
        ["job", "status", job["job_id"], "--address", address, "--token-file", str(token_file)],
        cwd=project,
        env_extra={},
    )
    assert status.returncode == 0 and job["job_id"] in status.stdout, status.stderr
    logs = _cli(["job", "logs", job["job_id"], "--address", address], cwd=project, env_extra=with_token)
    assert logs.returncode == 0, logs.stderr

    refused = _cli(["job", "status", job["job_id"], "--address", address], cwd=project, env_extra={})
    assert refused.returncode == ClusterError.exit_code
    assert "fix:" in refused.stderr and "RAY_AUTH_TOKEN" in refused.stderr

    for run in (submitted, status, logs, refused):
        assert token not in run.stdout + run.stderr


def test_dashboard_api_rejects_requests_without_the_token(ray_head):
    def get(headers):
        try:
            return urllib.request.urlopen(
                urllib.request.Request(f"{ray_head['address']}/api/jobs/", headers=headers), timeout=10
            ).status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert get({}) == 401
    assert get({"Authorization": "Bearer not-the-token"}) in (401, 403)
    assert get({"Authorization": f"Bearer {ray_head['token']}"}) == 200


def test_a_wrong_token_fails_in_seconds_naming_the_fix(ray_head, project):
    token_file = project / "wrong-token"
    token_file.write_text("not-the-token\n")
    started = time.monotonic()
    proc = _cli(
        ["job", "submit", "sweep.yaml", "--address", ray_head["address"], "--token-file", str(token_file)],
        cwd=project,
        env_extra={},
    )
    assert proc.returncode == ClusterError.exit_code and time.monotonic() - started < 10, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and "fix:" in proc.stderr and "RAY_AUTH_TOKEN" in proc.stderr
    assert "not-the-token" not in proc.stderr + proc.stdout


def _sweep_config(path: Path, *, model_dir: Path, data: Path, storage: Path, name: str) -> Path:
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "task": "classification",
                "model": {"path": str(model_dir), "max_length": 16},
                "data": {"path": str(data)},
                "train": {"batch_size": 8, "epochs": 1, "max_steps_per_epoch": 2},
                "deepspeed": {"zero_stage": 0},
                "scaling": {"num_workers": 1},
                "folds": {"k": 2, "test_fraction": 0.0},
                "search": {
                    "num_trials": 1,
                    "space": {"learning_rate": {"low": 1e-3, "high": 3e-3, "log": True}},
                    "scheduler": {"type": "none"},
                },
                "storage": {"path": str(storage)},
                "final": {"refit": False},
            }
        )
    )
    return path


def test_zerotune_submit_runs_a_sweep_and_the_token_reaches_nothing_written(ray_head, tiny_sweep):
    """The session's shared tiny sweep (4 trials, a refit) was submitted with `zerotune job submit`
    (conftest.tiny_sweep). Its job ran with the token in its environment (jobs inherit the head's): it must not
    reach anything written."""
    from sweeps.layout import SweepDir
    from sweeps.report.facts import build_report

    token = ray_head["token"]
    _, summary, root, job = tiny_sweep
    assert job["status"]["status"] == "SUCCEEDED"
    assert summary["states"]["completed"] >= 1 and summary["refit"]["metrics"]
    assert token not in job["logs"] + job["submit_output"]
    build_report(str(root), formats=("html", "md", "json"))
    assert (Path(SweepDir(str(root)).latest_refit().model) / "README.md").is_file()  # the exported model card
    written = [p for p in root.rglob("*") if p.is_file()]
    written += [
        p
        for p in (ray_head["temp"] / "ray").rglob("*")
        if p.is_file() and ("log" in p.name or p.suffix in (".out", ".err"))
    ]
    leaks = [str(p) for p in written if token.encode() in p.read_bytes()]
    assert not leaks, leaks


def test_ray_job_submit_runs_zerotune_on_the_cluster(ray_head, tmp_path, tiny_bert_dir, keyword_csv):
    """The plain Ray CLI, as the README shows it: `ray job submit --working-dir . -- python -m sweeps ...`. The job
    validates a sweep on the cluster (data, folds, model config, the cluster's resources); the full sweep path through
    the same entrypoint is the `zerotune job submit` job above. Without the token the submission is refused."""
    address, token = ray_head["address"], ray_head["token"]
    work = tmp_path / "work"
    work.mkdir()
    _sweep_config(
        work / "sweep.yaml", model_dir=tiny_bert_dir, data=keyword_csv, storage=tmp_path / "results", name="via-ray-cli"
    )
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [
            ray,
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "sweeps",
            "sweep",
            "validate",
            "sweep.yaml",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "ok: folds: 2 x stratified" in proc.stdout and "succeeded" in proc.stdout.lower(), proc.stdout[-3000:]
    assert token not in proc.stdout + proc.stderr
    env.pop("RAY_AUTH_TOKEN")
    refused = subprocess.run(
        [ray, "job", "submit", "--address", address, "--working-dir", ".", "--no-wait", "--", "true"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
