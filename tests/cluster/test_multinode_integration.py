"""Sweeps on a real multi-node Ray cluster: several raylets on this machine (ray.cluster_utils.Cluster), shaped as on
KubeRay: a head with 0 CPUs that runs the drivers (jobs, submitted with `ray job submit` and token auth) and 1-CPU
worker nodes that come and go. Every assertion reads the sweep's records (which node and pid ran each rank of each
fold, start markers, fold records, trial states), never log text.

The storage path is a local directory: every node of this one-machine cluster reaches it, as every pod reaches a
ReadWriteMany volume on KubeRay.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

PAUSE = "1:0:1"  # fold 1, epoch 0, step 1: where the first trial's rank 0 stands while its node is removed
NODE_LOSS = "node-loss"  # the sweep whose worker node is removed (the pause fires in its fits only)


def _wait_for_dashboard(address: str, token: str, timeout_s: float = 60) -> None:
    """Until the Jobs API answers an authenticated request (the head's dashboard and job agent are up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        request = urllib.request.Request(f"{address}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
        try:
            if urllib.request.urlopen(request, timeout=2).status == 200:
                return
        except (OSError, urllib.error.HTTPError):
            pass
        assert time.monotonic() < deadline, f"the head's Jobs API at {address} did not come up"
        time.sleep(0.5)


def add_worker_node(cluster, temp: str):
    """A 1-CPU worker node with a temp dir of its own, as each pod has its own /tmp/ray. (Nodes sharing one would
    share one runtime-env cache, where one node's agent deletes or re-extracts what another's processes run in: the
    job's working_dir under its running driver included.)"""
    return cluster.add_node(num_cpus=1, temp_dir=tempfile.mkdtemp(prefix="n", dir=temp))


@pytest.fixture(scope="module")
def multinode(tmp_path_factory):
    """A head with 0 CPUs (token auth, dashboard) and ONE 1-CPU worker node; tests add and remove worker nodes.

    The nodes are this process's children: their environment (the token, the fault hook) reaches the job drivers
    and every worker, as a RayCluster's env reaches its pods. All of it is shut down however the tests end."""
    import ray
    from ray._private.authentication_test_utils import reset_auth_token_state
    from ray._private.utils import write_ray_address
    from ray.cluster_utils import Cluster

    from token_head import _free_port

    # This process joins no cluster (the drivers are jobs on the head); a Ray it joined before is left first.
    if ray.is_initialized():
        ray.shutdown()
    token = secrets.token_hex(24)
    dashboard = _free_port()
    temp = tempfile.mkdtemp(prefix="ztm", dir="/tmp")  # short: Ray's unix socket paths are limited to ~107 bytes
    markers = tmp_path_factory.mktemp("multinode-faults")
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        # Jobs run `python` from PATH: the interpreter that has zerotune installed, as a cluster image would.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # Ray Train's placement-group cleaner must find this cluster, not another Ray on this machine.
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}",
        "ZEROTUNE_FAULT_PAUSE_AT": f"{PAUSE}:{markers / 'paused'}",
        "ZEROTUNE_FAULT_ONLY": f"/{NODE_LOSS}/",
    }
    saved = {key: os.environ.get(key) for key in (*env, "RAY_ADDRESS")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.update(env)
    reset_auth_token_state()  # this process's Ray config now sends the token (Cluster waits on nodes through GCS)
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "gcs_server_port": _free_port(),
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": dashboard,
                "dashboard_agent_listen_port": _free_port(),
                "temp_dir": temp,
            },
        )
        # A job's driver finds its cluster ("auto") through the address file in the head's temp dir, which
        # `ray start` writes and Cluster does not (it writes /tmp/ray's): without it, another Ray on this machine.
        write_ray_address(cluster.gcs_address, temp)
        add_worker_node(cluster, temp)
        address = f"http://127.0.0.1:{dashboard}"
        _wait_for_dashboard(address, token)
        yield {"cluster": cluster, "address": address, "token": token, "temp": temp, "paused": markers / "paused"}
    finally:
        if cluster is not None:
            cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_auth_token_state()
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(
    work: Path, *, name: str, model: Path, data: Path, storage: Path, scaling: dict, search: dict, k: int = 2
) -> None:
    work.mkdir()
    raw = {
        "name": name,
        "task": "classification",
        "model": {"path": str(model), "max_length": 16},
        "data": {"path": str(data)},
        "train": {"batch_size": 8, "epochs": 1, "max_steps_per_epoch": 3},
        "deepspeed": {"zero_stage": 0},
        "scaling": scaling,
        "folds": {"k": k, "test_fraction": 0.0},
        "search": {
            "space": {"learning_rate": {"low": 1e-3, "high": 3e-3, "log": True}},
            "scheduler": {"type": "none"},
            **search,
        },
        "storage": {"path": str(storage)},
        "final": {"refit": False},
    }
    (work / "sweep.yaml").write_text(yaml.safe_dump(raw))


def _ray_job_submit(multinode: dict, work: Path, *, wait: bool) -> subprocess.CompletedProcess:
    """`ray job submit` as the README shows it, with the token in the environment (RAY_AUTH_MODE=token)."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": multinode["token"]}
    command = [ray, "job", "submit", "--address", multinode["address"], "--working-dir", "."]
    command += [] if wait else ["--no-wait"]
    command += ["--", "python", "-m", "sweeps", "sweep", "run", "sweep.yaml"]
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def _records(root: Path) -> dict:
    """{trial id: its FitRecords} of every trial the sweep started."""
    from sweeps.layout import SweepDir

    sweep = SweepDir(str(root))
    return {trial_id: sweep.trial(trial_id).records for trial_id in sweep.trial_ids()}


def _window(records, first) -> tuple[float, float]:
    """When a worker group worked on its node: from the setup (model load, engine) of its first fold, whose start
    marker is `first`, to its last fold record."""
    last = Path(records.uri, f"fold-{max(r.fold for r in records.folds())}.json").stat().st_mtime
    return first.time - first.setup_s, last


def test_a_lost_worker_node_restarts_only_its_worker_group_and_an_added_node_is_used(
    multinode, tmp_path, tiny_bert_dir, keyword_csv
):
    """One worker node up, 2 trials allowed at once: the second waits. Mid fold 1 of the first, its node is removed
    and two fresh ones are added: the first trial's worker group restarts from its checkpoint (fold 0 is not
    re-run), the waiting trial starts, and both run at once on the two new nodes."""
    from cluster import jobs
    from trainer.records import FoldRecord

    cluster, token = multinode["cluster"], multinode["token"]
    work, storage = tmp_path / "work", tmp_path / "results"
    _sweep(
        work,
        name=NODE_LOSS,
        model=tiny_bert_dir,
        data=keyword_csv,
        storage=storage,
        scaling={"num_workers": 1, "cpus_per_worker": 1, "max_failures": 2},
        search={"num_trials": 2, "max_concurrent_trials": 2},
        k=3,  # the restarted group runs two folds, the waiting trial three: windows seconds longer than their skew
    )
    started = time.monotonic()
    submitted = _ray_job_submit(multinode, work, wait=False)
    job_id = re.search(r"raysubmit_\w+", submitted.stdout).group(0)
    [first_node] = cluster.worker_nodes
    deadline = time.monotonic() + 240
    while not multinode["paused"].exists():
        status = jobs.job_status(address=multinode["address"], job_id=job_id, token=token)
        assert status["status"] in ("PENDING", "RUNNING"), jobs.job_logs(
            address=multinode["address"], job_id=job_id, token=token
        )[-3000:]
        assert time.monotonic() < deadline, "the first trial never reached fold 1"
        time.sleep(0.2)
    paused_pid = int(multinode["paused"].read_text())
    root = storage / NODE_LOSS
    before = _records(root)
    running = {t: r for t, r in before.items() if r.starts()}
    assert len(running) == 1, f"one worker node fits one trial; started: {list(running)}"  # the other one waits
    [(lost_trial, lost)] = running.items()
    fold0 = lost.folds()
    assert [r.fold for r in fold0] == [0] and fold0[0].memory["node_id"] == [first_node.node_id]
    assert [s.pid for s in lost.starts() if s.fold == 1] == [paused_pid]
    fold0_bytes = Path(lost.uri, "fold-0.json").read_bytes()

    cluster.remove_node(first_node, allow_graceful=False)  # a pod lost with its worker, mid fold 1
    new_nodes = {add_worker_node(cluster, multinode["temp"]).node_id for _ in range(2)}
    status = jobs.wait_for_job(address=multinode["address"], job_id=job_id, token=token, timeout_s=300, poll_s=1)
    logs = jobs.job_logs(address=multinode["address"], job_id=job_id, token=token)
    assert status["status"] == "SUCCEEDED", logs[-3000:]
    elapsed = time.monotonic() - started

    summary = json.loads((root / "summary.json").read_text())
    assert summary["states"] == {**summary["states"], "completed": 2}, summary["states"]
    after = _records(root)
    assert sorted(after) == sorted(before)  # no trial was added to make up for a lost one
    for records in after.values():
        assert [r.fold for r in records.folds()] == [0, 1, 2]  # each fold recorded once
    # The lost trial: fold 0 neither re-run nor rewritten; fold 1 started again by a new process on a new node.
    assert Path(lost.uri, "fold-0.json").read_bytes() == fold0_bytes
    assert [s.fold for s in lost.starts()] == [0, 1, 1, 2]
    restarted = lost.starts()[2]
    assert restarted.pid != paused_pid
    fold1 = FoldRecord.read(str(Path(lost.uri, "fold-1.json")))
    assert fold1.resumes == 1 and fold1.memory["pid"] == [restarted.pid]
    assert fold1.memory["node_id"][0] in new_nodes
    assert FoldRecord.read(str(Path(lost.uri, "fold-2.json"))).memory["pid"] == [restarted.pid]
    # The waiting trial ran once the nodes came: on the other new node, at the same time as the restarted one.
    [(_, waited)] = [(t, r) for t, r in after.items() if t != lost_trial]
    assert [s.fold for s in waited.starts()] == [0, 1, 2]
    nodes = {r.memory["node_id"][0] for r in waited.folds()}
    assert len(nodes) == 1 and nodes <= new_nodes and nodes != {fold1.memory["node_id"][0]}
    (a_from, a_to), (b_from, b_to) = _window(lost, restarted), _window(waited, waited.starts()[0])
    assert max(a_from, b_from) < min(a_to, b_to), f"the two worker groups did not overlap: {a_from, a_to, b_from, b_to}"
    print(f"node-loss sweep: {elapsed:.1f} s from submission to SUCCEEDED")


def test_a_worker_group_spans_two_nodes(multinode, tmp_path, tiny_bert_dir, keyword_csv):
    """2 workers x 0.5 CPU fit one 1-CPU node, where Ray Train's default PACK puts them; scaling.placement_strategy
    STRICT_SPREAD puts them on two nodes: the tokenised data reaches both through the object store, gradients cross
    nodes over gloo, and the sweep, submitted with `ray job submit`, leaves its summary and records on storage."""
    cluster = multinode["cluster"]
    while len(cluster.worker_nodes) < 2:  # the test above leaves two; alone, this one adds them
        add_worker_node(cluster, multinode["temp"])
    workers = {node.node_id for node in cluster.worker_nodes}
    work, storage = tmp_path / "work", tmp_path / "results"
    _sweep(
        work,
        name="span",
        model=tiny_bert_dir,
        data=keyword_csv,
        storage=storage,
        scaling={"num_workers": 2, "cpus_per_worker": 0.5, "placement_strategy": "STRICT_SPREAD"},
        search={"num_trials": 1},
    )
    started = time.monotonic()
    proc = _ray_job_submit(multinode, work, wait=True)
    elapsed = time.monotonic() - started
    assert "succeeded" in proc.stdout.lower(), proc.stdout[-3000:]
    root = storage / "span"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["states"] == {**summary["states"], "completed": 1}, summary["states"]
    [records] = _records(root).values()
    folds = records.folds()
    assert [r.fold for r in folds] == [0, 1]
    for record in folds:
        node_ids, pids = record.memory["node_id"], record.memory["pid"]
        assert len(set(node_ids)) == 2 and set(node_ids) <= workers, node_ids  # rank 0 and rank 1 on two nodes
        assert len(set(pids)) == 2
        assert record.history[-1]["steps"] >= 1  # trained: all-reduced steps across the two nodes
    print(f"span sweep: {elapsed:.1f} s from submission to SUCCEEDED")
