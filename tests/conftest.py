"""Shared fixtures: offline Hugging Face, tiny real models, one local Ray cluster per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train's controller polls its workers every 2 s by default: each fit waits on that at start and
# end. Polling faster costs a little CPU and saves ~2.5 s per fit (tests run ~30 fits).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.3")
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
VADER = REPO.parent / "shared" / "data" / "vader"


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    from tiny_models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    from tiny_models import tiny_gpt2

    return tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def keyword_csv(tmp_path_factory) -> Path:
    """A small, learnable classification set: the label is which word the sentence carries."""
    from tiny_models import keyword_rows

    path = tmp_path_factory.mktemp("data") / "keywords.csv"
    keyword_rows().to_csv(path, index=False)
    return path


@pytest.fixture
def ray_local():
    """A local Ray cluster (2 CPUs for workers + 1 for trial drivers), shut down after the test."""
    import ray

    from cluster.local import connect

    connect(num_cpus=3)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_head():
    """ONE private Ray head with token auth for the session (jobs tests and the shared tiny sweep).

    3 CPUs: a trial's 2 workers plus the trial drivers' sliver, as the embedded cluster has. Its workers
    get the shared sweep's simulated memory limit (ZEROTUNE_FAULT_OOM_BATCH: batches of OOM_BATCH rows fail
    as out-of-memory); every other sweep on it uses smaller batches.
    """
    from tiny_models import OOM_BATCH
    from token_head import token_head

    with token_head(num_cpus=3, worker_env={"ZEROTUNE_FAULT_OOM_BATCH": str(OOM_BATCH)}) as head:
        yield head


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_bert_dir, keyword_csv, ray_head):
    """ONE real tiny sweep shared by the sweep, report and job tests (see tiny_models.sweep_raw): completed,
    pruned, out-of-memory and diverged trials, then a refit. Submitted as users do on a cluster, with
    `ray job submit` to the token-auth head. Returns (config, summary with its refit, sweep directory, job)."""
    import json
    import shutil
    import subprocess

    import yaml

    from cluster import jobs
    from sweeps.config import load_config
    from tiny_models import sweep_raw

    raw = sweep_raw(tiny_bert_dir, keyword_csv, tmp_path_factory.mktemp("sweep-results"))
    work = tmp_path_factory.mktemp("sweep-job")
    (work / "sweep.yaml").write_text(yaml.safe_dump(raw))
    address, token = ray_head["address"], ray_head["token"]
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    submitted = subprocess.run([ray, "job", "submit", "--address", address, "--working-dir", ".", "--no-wait", "--",
                                "python", "-m", "sweeps", "sweep", "run", "sweep.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = next(w.strip("'") for line in submitted.stdout.splitlines() for w in line.split() if w.strip("'").startswith("raysubmit_"))
    status = jobs.wait_for_job(address=address, job_id=job_id, token=token, timeout_s=900, poll_s=2)
    logs = jobs.job_logs(address=address, job_id=job_id, token=token)
    assert status["status"] == "SUCCEEDED", logs[-3000:]
    root = Path(raw["storage"]["path"]) / raw["name"]
    summary = json.loads((root / "summary.json").read_text())
    summary["refit"] = json.loads((root / "refit" / "metrics.json").read_text())
    job = {"id": job_id, "status": status, "logs": logs, "submit_output": submitted.stdout + submitted.stderr, "work": work}
    return load_config(raw=raw), summary, root, job
