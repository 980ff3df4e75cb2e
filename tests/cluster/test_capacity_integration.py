"""cluster/capacity.py, cluster/scale.requested and sweeps/search/pending.py against real Ray: an autoscaling cluster
(the real autoscaler v2 with Ray's fake multi-node provider, which starts real raylets on this machine), shaped as on
KubeRay: a head with 0 CPUs, a worker type of 1 CPU with at most 4 nodes, none up at start. No training: the ceiling,
the pre-flight, the concurrency, the autoscaler request and the pending record are what is checked.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.integration

MAX_WORKERS = 4
FAKE_HEAD_ID = "f" * 51 + "00000"  # the fake provider's head node id (ray.autoscaler._private.fake_multi_node)


def _config(gcs: int) -> dict:
    """An autoscaling config as `ray up` would pass it. The fake provider is named as an external module: the
    wheel lacks the defaults file its own provider type loads."""
    return {
        "cluster_name": "capacity-test",
        "max_workers": MAX_WORKERS,
        "provider": {
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "gcs_address": f"127.0.0.1:{gcs}",
            "launch_multiple": True,
            "head_node_id": FAKE_HEAD_ID,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu1": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": MAX_WORKERS},
        },
        "upscaling_speed": 10.0,
        "idle_timeout_minutes": 5,
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands")},
        **{k: [] for k in ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
        **{k: [] for k in ("cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts_sync_continuously": False,
        "auth": {},
        "docker": {},
        "file_mounts": {},
    }


@contextmanager
def autoscaling_head():
    """A private `ray start --head --autoscaling-config` (token auth, own ports, temp dir and HOME), stopped by its
    own processes only (tests/token_head.py), never a global `ray stop`."""
    from token_head import _free_port, _stop

    temp = Path(tempfile.mkdtemp(prefix="zta", dir="/tmp"))  # short: Ray's socket paths
    (temp / "home").mkdir()
    gcs = _free_port()
    (temp / "autoscaling.json").write_text(json.dumps(_config(gcs)))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24)}
    env = {
        **os.environ,
        **auth,
        "HOME": str(temp / "home"),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_enable_autoscaler_v2": "1",  # as KubeRay runs it
        "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_ID,
        "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_ID,
    }
    env.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).parent / "ray")
    cmd = [ray_cli, "start", "--head", "--block", "--num-cpus=0", f"--port={gcs}", "--disable-usage-stats"]
    cmd += [f"--dashboard-port={_free_port()}", "--dashboard-host=127.0.0.1", f"--temp-dir={temp / 'ray'}"]
    cmd += [f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}"]
    cmd += [f"--autoscaling-config={temp / 'autoscaling.json'}"]
    log = open(temp / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (temp / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the autoscaling head did not come up in 60 s"
            # `ray start --block` says so once every process started; the autoscaler fails within a second of it
            # on a bad config, and `ray start` then stops the head, so look once more after that.
            if "--block" in (temp / "head.log").read_text():
                time.sleep(2)
                assert proc.poll() is None, (temp / "head.log").read_text()[-3000:]
                socket.create_connection(("127.0.0.1", gcs), timeout=1).close()
                break
            time.sleep(0.5)
        yield {"gcs": f"127.0.0.1:{gcs}", "auth": auth}
    finally:
        _stop(proc, str(temp))
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def token_env(auth: dict):
    """This process sends `auth`'s token to Ray (which caches its auth config: reset it), then as before."""
    from ray._private.authentication_test_utils import reset_auth_token_state

    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    reset_auth_token_state()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_auth_token_state()


@pytest.fixture(scope="module")
def autoscaling():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    started = time.monotonic()
    with autoscaling_head() as head, token_env(head["auth"]):
        try:
            ray.init(address=head["gcs"], logging_level="WARNING", log_to_driver=False)
            yield {**head, "start_s": time.monotonic() - started}
        finally:
            ray.shutdown()


def _workers_up() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1)


def _wait(predicate, timeout_s: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"not reached in {timeout_s} s"
        time.sleep(0.5)
    return time.monotonic() - started


def _constraints(gcs: str) -> list:
    from ray._raylet import GcsClient
    from ray.autoscaler.v2.sdk import get_cluster_resource_state

    state = get_cluster_resource_state(GcsClient(address=gcs))
    return [r for c in state.cluster_resource_constraints for r in c.resource_requests]  # what is asked for now


def _cfg(tmp_path, model_dir, data):
    from sweeps.config import load_config

    raw = {
        "name": "ceiling",
        "model": {"path": str(model_dir), "max_length": 16},
        "data": {"path": str(data)},
        "folds": {"k": 2},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "search": {"num_trials": 6, "space": {"batch_size": [4, 8]}},
        "storage": {"path": str(tmp_path)},
    }
    return load_config(raw=raw)


def test_the_ceiling_comes_from_the_autoscaler_and_the_sweep_asks_it_for_every_concurrent_trial(
    autoscaling, tmp_path, tiny_bert_dir, keyword_csv
):
    import ray

    from cluster.local import cluster_capacity
    from cluster.scale import requested
    from sweeps.preflight.checks import max_concurrent, trial_bundles
    from sweeps.preflight.validate import validate
    from sweeps.search.pending import pending_watch, read_waiting

    cfg = _cfg(tmp_path, tiny_bert_dir, keyword_csv)
    assert _workers_up() == 0 and ray.cluster_resources().get("CPU", 0) == 0  # nothing to train on is up
    capacity = cluster_capacity()
    assert capacity.source == "autoscaler" and capacity.autoscaling
    assert [(t.name, t.resources, t.max_count) for t in capacity.node_types if t.resources.get("CPU")] == [
        ("cpu1", {"CPU": 1.0}, MAX_WORKERS)
    ]
    # Pre-flight accepts a 1-CPU-per-worker sweep although no worker is up, and says what it checked against.
    report = validate(cfg, address=autoscaling["gcs"])
    assert any(line.startswith("cluster ceiling (autoscaler): 4 x cpu1 (CPU 1)") for line in report["checks"])

    # A trial whose worker group cannot be placed yet is recorded as waiting, with what it asks and what is free.
    sweep_uri = str(tmp_path / "ceiling")
    watch = pending_watch(sweep_uri, asks=trial_bundles(cfg), ceiling=capacity.describe(), requested=True)
    group = ray.util.placement_group([{"CPU": 1.0}])  # what a trial's worker group asks Ray for
    trials = [SimpleNamespace(trial_id="t1", status="RUNNING")]
    watch.refresh(trials)
    from sweeps.layout import SweepDir

    reason = read_waiting(SweepDir(sweep_uri))["t1"]
    assert "placement group is not placed yet" in reason and "CPU 0 free of CPU 0" in reason, reason
    one_up_s = _wait(lambda: group.wait(0.5), 90)  # the autoscaler starts one node for it
    watch.refresh(trials)
    assert read_waiting(SweepDir(sweep_uri)) == {}  # placed: no longer waiting
    ray.util.remove_placement_group(group)

    # One worker up: the concurrency today's code took from free resources, and the ceiling's.
    before = max(1, min(cfg.search.num_trials, int(ray.available_resources().get("CPU", 0))))
    after = max_concurrent(cfg, cluster_capacity())
    assert (before, after) == (1, MAX_WORKERS)

    # The sweep asks the autoscaler for every concurrent trial's workers at once, and withdraws it at the end.
    asks = trial_bundles(cfg) * after
    with requested(asks, autoscaling=True):
        assert sum(r.count for r in _constraints(autoscaling["gcs"])) == MAX_WORKERS  # one bundle per worker
        all_up_s = _wait(lambda: _workers_up() == MAX_WORKERS, 120)
    assert _constraints(autoscaling["gcs"]) == []
    print(
        f"\nautoscaling head up in {autoscaling['start_s']:.1f} s; first node for a waiting placement group in "
        f"{one_up_s:.1f} s; concurrency before {before}, after {after}; {MAX_WORKERS} nodes up {all_up_s:.1f} s "
        "after the request"
    )


def test_a_fixed_cluster_gives_the_live_ceiling():
    """After the autoscaling cluster: a plain multi-node Cluster (no autoscaler) reports its live nodes."""
    import ray
    from ray.cluster_utils import Cluster

    from cluster.local import cluster_capacity

    if ray.is_initialized():
        ray.shutdown()
    with token_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24)}):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        try:
            cluster.add_node(num_cpus=1)
            cluster.add_node(num_cpus=1)
            ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
            cluster.wait_for_nodes()
            capacity = cluster_capacity()
            assert capacity.source == "live" and not capacity.autoscaling
            assert sorted(t.max_count for t in capacity.node_types if t.resources.get("CPU")) == [2]
            assert capacity.describe().startswith("cluster ceiling (live): 2 x node (CPU 1)"), capacity.describe()
        finally:
            ray.shutdown()
            cluster.shutdown()


def test_a_kuberay_shaped_head_whose_autoscaler_cannot_be_read_is_unbounded_and_asked_for_every_trial_left(
    tmp_path, tiny_bert_dir, keyword_csv
):
    """As this project's KubeRay manifests run it: the head started with autoscaler v2 enabled (KubeRay sets
    RAY_enable_autoscaler_v2) and no monitor of its own (KubeRay passes --no-monitor: the autoscaler is a sidecar the
    driver cannot see, and the Ray container has no Kubernetes token), 0 CPUs, no worker up. A GPU sweep is accepted,
    runs every trial left at once, asks the autoscaler (the GCS's resource constraints) for all their workers, and
    shrinks the request as trials end."""
    import ray
    from ray.cluster_utils import Cluster

    from cluster.local import cluster_capacity
    from cluster.scale import requested
    from sweeps.preflight.checks import max_concurrent, trial_bundles
    from sweeps.preflight.validate import validate
    from sweeps.search.pending import pending_watch

    if ray.is_initialized():
        ray.shutdown()
    with token_env(
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24), "RAY_enable_autoscaler_v2": "1"}
    ):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "no_monitor": True})
        try:
            ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
            capacity = cluster_capacity()
            assert (capacity.source, capacity.autoscaling, capacity.unbounded) == ("live", True, True)
            cfg = _cfg(tmp_path, tiny_bert_dir, keyword_csv)
            cfg = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"use_gpu": True})})
            report = validate(cfg, address=cluster.address)  # no live node has a GPU: not refused, but said so
            assert any("node types cannot be read" in line for line in report["checks"]), report["checks"]
            concurrent = max_concurrent(cfg, capacity)
            assert concurrent == cfg.search.num_trials == 6
            asks = trial_bundles(cfg)
            with requested(asks * concurrent, autoscaling=capacity.autoscaling) as ask:
                assert sum(r.count for r in _constraints(cluster.address)) == 6
                watch = pending_watch(
                    str(tmp_path / "ceiling"),
                    asks=asks,
                    ceiling=capacity.describe(),
                    requested=True,
                    ask=lambda trials: ask(asks * trials),
                    num_trials=6,
                    concurrent=concurrent,
                )
                ended = [SimpleNamespace(trial_id=f"t{i}", status="TERMINATED") for i in range(5)]
                watch.refresh([*ended, SimpleNamespace(trial_id="t5", status="RUNNING")])
                assert sum(r.count for r in _constraints(cluster.address)) == 1  # only the running trial's worker
            assert _constraints(cluster.address) == []
        finally:
            ray.shutdown()
            cluster.shutdown()
