"""What the KubeRay path asks of a real Ray head, run against the session's local token-auth head
(tests/token_head.py, fixture conftest.ray_head): no Kubernetes is involved.

- `zerotune cluster wait --address`'s storage probe: a tiny Ray job that writes, reads back and deletes a file
  under the results path, and says why it cannot;
- `zerotune cluster scale --address`'s view of idle workers: Ray's State API, mapped to pods by IP;
- the sample RayJob's entrypoint, rendered from k8s/samples, submitted as the operator submits it in HTTPMode
  (the Jobs API, entrypoint as written): it waits for a late config file, and submitted again it resumes the
  sweep (the delete-and-apply path the sample documents) without re-running the finished trial.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from zerotune.errors import ClusterError

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_storage_probe_writes_as_the_ray_user_or_says_why_not(ray_head, tmp_path):
    from cluster.probe import check_results_writable

    address, token = ray_head["address"], ray_head["token"]
    ok = check_results_writable(address=address, token=token, path=str(tmp_path), timeout_s=120)
    assert ok["ok"] and ok["path"] == str(tmp_path) and isinstance(ok["uid"], int)
    assert not list(tmp_path.iterdir())  # the probe file is gone again
    # /sys refuses new files even to root, as an NFS export refuses uid 1000
    with pytest.raises(ClusterError, match="cannot write the results path /sys") as err:
        check_results_writable(address=address, token=token, path="/sys", timeout_s=120)
    assert "PermissionError" in err.value.message and "owner 0:0" in err.value.message
    assert "uid 1000 / gid 100" in err.value.fix and "EFS" in err.value.fix and "s3-results" in err.value.fix


def _ray_nodes(address: str, token: str, deadline_s: float = 60) -> list[dict]:
    """The head's node list, once its dashboard has registered the node (it lags the head's start)."""
    from cluster.probe import _state

    deadline = time.monotonic() + deadline_s
    while not (nodes := _state(address, token, "nodes")) and time.monotonic() < deadline:
        time.sleep(1)
    assert nodes, "the dashboard listed no node"
    return nodes


def _pod_at(ip: str) -> dict:
    return {"metadata": {"name": "zerotune-workers-x"}, "status": {"phase": "Running", "podIP": ip}}


def _sample_sweep(tmp_path, tiny_bert_dir, keyword_csv) -> dict:
    from tiny_models import sweep_raw

    raw = sweep_raw(tiny_bert_dir, keyword_csv, tmp_path / "ignored", name="sample-resume", seed=7)
    raw["search"] = {
        "num_trials": 1,
        "space": {"learning_rate": {"low": 1e-3, "high": 3e-3, "log": True}},
        "scheduler": {"type": "none"},
    }
    raw["train"] = {**raw["train"], "epochs": 1}
    raw["scaling"], raw["deepspeed"] = {"num_workers": 1}, {"zero_stage": 0}
    raw["folds"], raw["final"] = {"k": 2}, {"refit": False}
    return raw


def test_sample_entrypoint_waits_for_its_config_and_resumes_when_submitted_again(
    ray_head, tmp_path, tiny_bert_dir, keyword_csv
):
    from ray.job_submission import JobSubmissionClient

    from cluster import jobs
    from cluster.probe import idle_worker_pods

    address, token = ray_head["address"], ray_head["token"]
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "k8s/samples/cpu-dev")], capture_output=True, text=True, check=True
    ).stdout
    job = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "RayJob")
    configs, results = tmp_path / "sweeps", tmp_path / "results"
    configs.mkdir()
    results.mkdir()
    entrypoint = job["spec"]["entrypoint"].replace("/etc/zerotune/sweeps", str(configs))
    # What the container env gives the entrypoint on the cluster (raycluster.base.yaml), given through the job here.
    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    runtime_env = {"env_vars": {"ZEROTUNE_RESULTS": str(results), "HF_HUB_OFFLINE": "1"}}

    def finish(submission_id: str) -> str:
        status = jobs.wait_for_job(address=address, job_id=submission_id, token=token, timeout_s=600, poll_s=1)
        logs = jobs.job_logs(address=address, job_id=submission_id, token=token)
        assert status["status"] == "SUCCEEDED", logs[-3000:]
        return logs

    head_ip = next(n["node_ip"] for n in _ray_nodes(address, token) if n["is_head_node"])
    idle = lambda: idle_worker_pods(address=address, token=token, pods=[_pod_at(head_ip)])  # noqa: E731
    client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id="zerotune-sweep-first")
    # The ConfigMap is not there yet and the entrypoint waits for it; meanwhile the node that runs the job's
    # supervisor is busy, so Ray's view would not let `cluster scale` delete a pod there. (An idle node is
    # recognised in test_cluster_probe.py: this head is shared, other tests' work may still be on it.)
    deadline = time.monotonic() + 30
    while idle() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert idle() == set()
    (configs / "sweep.yaml").write_text(yaml.safe_dump(_sample_sweep(tmp_path, tiny_bert_dir, keyword_csv)))
    first = finish("zerotune-sweep-first")
    assert "waiting for" in first
    root = results / "sample-resume"
    records = sorted(root.glob("trials/*/records/fold-*.json"))
    assert len(records) == 2
    mtimes = {r: r.stat().st_mtime for r in records}

    # delete-and-apply: a new RayJob, a new Ray job, the same entrypoint
    client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id="zerotune-sweep-second")
    second = finish("zerotune-sweep-second")
    assert "sweep sample-resume: resuming from" in second  # the console view's line (sweeps.search.view)
    assert {r: r.stat().st_mtime for r in sorted(root.glob("trials/*/records/fold-*.json"))} == mtimes
    summary = json.loads((root / "summary.json").read_text())
    assert summary["states"]["completed"] == 1 and summary["fold_fits"] == 2
