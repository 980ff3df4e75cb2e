"""cluster/kube.py, cluster/scale.py and `zerotune cluster status|scale|wait` over real HTTP.

The kubernetes client talks to kube_fake_api (http.server on 127.0.0.1) through a real kubeconfig file, so
URL paths, query strings, headers and JSON bodies are what a real API server would receive; its errors are
shaped as the API server shapes them, and it can play the KubeRay operator's pod reconciliation and the Ray
autoscaler's idle scale-down on the RayCluster it holds. No Kubernetes cluster is involved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kube_fake_api import FakeKubeAPI, worker_pod  # noqa: E402
from sweeps.cli import main  # noqa: E402
from zerotune.errors import ClusterError  # noqa: E402

NS, NAME = "zerotune", "zerotune"
RC_PATH = f"/apis/ray.io/v1/namespaces/{NS}/rayclusters/{NAME}"
BEARER = "kubeconfig-user-token"
T0 = "2026-11-29T12:00:00Z"
READY_CONDITIONS = [  # as KubeRay v1.6.2 writes them (metav1.Condition: all five fields)
    {
        "type": "HeadPodReady",
        "status": "True",
        "reason": "HeadPodRunningAndReady",
        "message": "",
        "lastTransitionTime": T0,
    },
    {
        "type": "RayClusterProvisioned",
        "status": "True",
        "reason": "AllPodRunningAndReadyFirstTime",
        "message": "",
        "lastTransitionTime": T0,
    },
]


def _raycluster(*, replicas=1, min_replicas=0, max_replicas=4, groups=("workers",), autoscaling=False) -> dict:
    container = {"name": "ray", "image": "zerotune"}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "7"},
        "spec": {
            "rayVersion": "2.60.0",
            "enableInTreeAutoscaling": autoscaling,
            **({"autoscalerOptions": {"version": "v2", "idleTimeoutSeconds": 300}} if autoscaling else {}),
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [container]}}},
            "workerGroupSpecs": [
                {
                    "groupName": g,
                    "replicas": replicas,
                    "minReplicas": min_replicas,
                    "maxReplicas": max_replicas,
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [container]}},
                }
                for g in groups
            ],
        },
        "status": {
            "conditions": READY_CONDITIONS,
            "head": {"podName": "zerotune-head-abcde", "serviceName": "zerotune-head-svc"},
            "endpoints": {"dashboard": "8265", "client": "10001", "gcs-server": "6379"},
        },
    }


def _head() -> dict:
    pod = worker_pod("zerotune-head-abcde", cluster=NAME, group="headgroup", ip=2)
    pod["metadata"]["labels"] = {"ray.io/cluster": NAME, "ray.io/node-type": "head"}
    return pod


PODS = [
    _head(),
    worker_pod("zerotune-workers-1", cluster=NAME, group="workers", ip=3, gpus=1),
    worker_pod("zerotune-workers-2", cluster=NAME, group="workers", ip=4, phase="Pending", gpus=1),
    # another cluster's pod in the same namespace: must not be counted
    {**_head(), "metadata": {"name": "other-head", "namespace": NS, "labels": {"ray.io/cluster": "other"}}},
]


@pytest.fixture
def raycluster_kwargs() -> dict:
    return {}  # tests override it with @pytest.mark.parametrize("raycluster_kwargs", [...])


@pytest.fixture
def pods() -> list[dict]:
    return PODS


@pytest.fixture
def fake_api(raycluster_kwargs, pods):
    api = FakeKubeAPI(rayclusters=[_raycluster(**raycluster_kwargs)], pods=pods).start()
    yield api
    api.stop()


@pytest.fixture
def kubeconfig(fake_api, tmp_path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": fake_api.url}}],
                "users": [{"name": "me", "user": {"token": BEARER}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
            }
        )
    )
    return str(path)


@pytest.fixture
def api(kubeconfig):
    from cluster.kube import connect

    client = connect(kubeconfig=kubeconfig)
    yield client
    client.close()


def _fake_clock():
    now = [0.0]
    return {"clock": lambda: now[0], "sleep": lambda s: now.__setitem__(0, now[0] + s)}


def test_status_reads_the_raycluster_and_its_pods(api, fake_api):
    from cluster.kube import cluster_status

    status = cluster_status(api=api, name=NAME, namespace=NS)
    assert status["head_ready"] is True and status["head_pod"] == "zerotune-head-abcde"
    assert (status["workers_ready"], status["workers_desired"], status["gpus_ready"]) == (1, 1, 1)
    assert status["ray_version"] == "2.60.0" and status["state"] == "provisioned"
    assert status["dashboard"] == "http://zerotune-head-svc.zerotune.svc:8265"
    get_rc, list_pods = fake_api.requests
    assert (get_rc["method"], get_rc["path"]) == ("GET", RC_PATH)
    assert list_pods["path"] == f"/api/v1/namespaces/{NS}/pods"
    assert list_pods["query"]["labelSelector"] == f"ray.io/cluster={NAME}"
    # the kubeconfig's credentials reach the server
    assert all(r["headers"]["authorization"] == f"Bearer {BEARER}" for r in fake_api.requests)


def test_state_comes_from_conditions_not_the_deprecated_field(api, fake_api):
    from cluster.kube import cluster_status

    status = fake_api.rayclusters[(NS, NAME)]["status"]
    status["state"] = "ready"  # deprecated, and stale: the conditions say otherwise
    status["conditions"] = [
        {"type": "HeadPodReady", "status": "False", "reason": "HeadPodNotFound"},
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreateWorkerPod", "message": "quota exceeded"},
    ]
    assert cluster_status(api=api, name=NAME, namespace=NS)["state"] == "replica failure: quota exceeded"
    status["conditions"] = [{"type": "HeadPodReady", "status": "False"}]
    assert cluster_status(api=api, name=NAME, namespace=NS)["state"] == "provisioning, head not ready"
    del status["conditions"]
    assert cluster_status(api=api, name=NAME, namespace=NS)["state"].startswith("unknown")


def test_scale_without_autoscaling_sets_replicas_with_a_guarded_patch(api, fake_api):
    from cluster.kube import cluster_status
    from cluster.scale import scale_workers

    result = scale_workers(api=api, workers=3, name=NAME, namespace=NS)
    assert (result["from"], result["to"], result["group"], result["autoscaling"]) == (1, 3, "workers", False)
    patch = [r for r in fake_api.requests if r["method"] == "PATCH"]
    assert len(patch) == 1
    assert patch[0]["path"] == RC_PATH
    assert patch[0]["headers"]["content-type"] == "application/json-patch+json"
    assert patch[0]["body"] == [
        {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "workers"},
        {"op": "test", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3},
    ]
    assert "note" not in result
    assert cluster_status(api=api, name=NAME, namespace=NS)["workers_desired"] == 3


@pytest.mark.parametrize("workers", [5, 100])
def test_scale_beyond_max_is_refused_without_a_patch(api, fake_api, workers):
    from cluster.scale import scale_workers

    with pytest.raises(ClusterError) as err:
        scale_workers(api=api, workers=workers, name=NAME, namespace=NS)
    assert "0..4" in err.value.message and "maxReplicas" in err.value.fix
    assert fake_api.methods() == ["GET"]  # it read max, then stopped


def test_negative_workers_are_refused_before_any_request(api, fake_api):
    from cluster.scale import scale_workers

    with pytest.raises(ClusterError):
        scale_workers(api=api, workers=-1, name=NAME, namespace=NS)
    assert fake_api.requests == []


@pytest.mark.parametrize("raycluster_kwargs", [{"min_replicas": 2}])
def test_scale_below_min_is_refused_without_autoscaling(api, fake_api):
    from cluster.scale import scale_workers

    with pytest.raises(ClusterError, match="2..4"):
        scale_workers(api=api, workers=1, name=NAME, namespace=NS)
    assert "PATCH" not in fake_api.methods()


@pytest.mark.parametrize("raycluster_kwargs", [{"groups": ("gpu-a100", "gpu-h100")}])
def test_several_groups_need_a_name(api, fake_api):
    from cluster.scale import scale_workers

    with pytest.raises(ClusterError, match="gpu-a100, gpu-h100"):
        scale_workers(api=api, workers=1, name=NAME, namespace=NS)
    scale_workers(api=api, workers=2, name=NAME, namespace=NS, group="gpu-h100")
    patch = next(r for r in fake_api.requests if r["method"] == "PATCH")
    assert patch["body"][-1] == {"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 2}


def test_a_concurrent_change_is_reported_not_clobbered(api, fake_api, monkeypatch):
    from cluster import scale

    # We read replicas=1; the autoscaler sets 2 before our PATCH lands: the `test` op must fail.
    stale = json.loads(json.dumps(fake_api.rayclusters[(NS, NAME)]))
    fake_api.rayclusters[(NS, NAME)]["spec"]["workerGroupSpecs"][0]["replicas"] = 2
    monkeypatch.setattr(scale, "get_raycluster", lambda **_: stale)
    with pytest.raises(ClusterError, match="changed") as err:
        scale.scale_workers(api=api, workers=3, name=NAME, namespace=NS)
    assert "again" in err.value.fix
    assert fake_api.methods() == ["PATCH"]
    assert fake_api.rayclusters[(NS, NAME)]["spec"]["workerGroupSpecs"][0]["replicas"] == 2


def test_a_schema_rejection_is_not_called_a_concurrent_change(api, fake_api):
    from cluster.kube import patch_raycluster

    ops = [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": "three"}]
    with pytest.raises(ClusterError, match="rejected the change") as err:
        patch_raycluster(ops, api=api, what="patch replicas", name=NAME, namespace=NS)
    assert "spec.workerGroupSpecs[0].replicas" in err.value.message
    assert "run the command again" not in err.value.fix and "CRD" in err.value.fix
    assert fake_api.rayclusters[(NS, NAME)]["spec"]["workerGroupSpecs"][0]["replicas"] == 1


def test_missing_cluster_names_the_fix(api, fake_api):
    from cluster.kube import cluster_status

    with pytest.raises(ClusterError, match="not found") as err:
        cluster_status(api=api, name="nope", namespace=NS)
    assert "kubectl apply -k" in err.value.fix


@pytest.mark.parametrize("raycluster_kwargs", [{"replicas": 2}])
def test_wait_times_out_with_what_is_missing(api, fake_api):
    from cluster.kube import wait_ready

    with pytest.raises(ClusterError, match="1/2 workers ready"):
        wait_ready(api=api, name=NAME, namespace=NS, timeout_s=10, poll_s=5, workers=2, **_fake_clock())
    assert fake_api.methods().count("GET") == 6  # 3 polls x (RayCluster + pods)


def test_wait_returns_once_ready(api, fake_api):
    from cluster.kube import wait_ready

    fake_api.pods = [p for p in fake_api.pods if p["metadata"]["name"] != "zerotune-workers-2"]
    status = wait_ready(api=api, name=NAME, namespace=NS, timeout_s=1, workers=1)
    assert status["head_ready"] and status["workers_ready"] == 1


def test_wait_refuses_a_count_the_spec_does_not_ask_for(api, fake_api):
    from cluster.kube import wait_ready

    with pytest.raises(ClusterError, match="asks for 1 workers, not 3") as err:
        wait_ready(api=api, name=NAME, namespace=NS, timeout_s=600, workers=3, **_fake_clock())
    assert "cluster scale --workers 3" in err.value.fix
    assert fake_api.methods() == ["GET", "GET"]  # one look, no waiting


# --- with the autoscaler: scale through minReplicas, name the pods to delete -------------------


@pytest.mark.parametrize("raycluster_kwargs", [{"replicas": 0, "autoscaling": True}])
@pytest.mark.parametrize("pods", [[_head()]])
def test_scale_up_sets_min_replicas_so_the_autoscaler_keeps_the_workers(api, fake_api):
    from cluster.kube import wait_ready
    from cluster.scale import scale_workers

    result = scale_workers(api=api, workers=3, name=NAME, namespace=NS)
    patch = next(r for r in fake_api.requests if r["method"] == "PATCH")
    assert patch["body"] == [
        {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "workers"},
        {"op": "test", "path": "/spec/workerGroupSpecs/0/minReplicas", "value": 0},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/minReplicas", "value": 3},
        {"op": "test", "path": "/spec/workerGroupSpecs/0/replicas", "value": 0},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3},
    ]
    assert (result["from"], result["min"], result["to"]) == (0, 3, 3)
    assert "minReplicas 0 -> 3" in result["note"] and "300 s" in result["note"]
    fake_api.reconcile(NS, NAME)
    assert len(fake_api.workers(NS, NAME)) == 3
    assert wait_ready(api=api, name=NAME, namespace=NS, timeout_s=1, workers=3)["workers_ready"] == 3
    # idle for longer than idleTimeoutSeconds: the autoscaler may not go below minReplicas
    fake_api.autoscaler_idle(NS, NAME, idle=set(fake_api.workers(NS, NAME)))
    assert len(fake_api.workers(NS, NAME)) == 3


@pytest.mark.parametrize("raycluster_kwargs", [{"replicas": 3, "autoscaling": True}])
def test_wait_fails_at_once_when_the_autoscaler_will_undo_the_count(api, fake_api):
    from cluster.kube import wait_ready

    fake_api.reconcile(NS, NAME)  # 3 workers up (replicas 3) but minReplicas still 0
    with pytest.raises(ClusterError, match="minReplicas is 0") as err:
        wait_ready(api=api, name=NAME, namespace=NS, timeout_s=600, workers=3, **_fake_clock())
    assert "300 s" in err.value.message and "cluster scale --workers 3" in err.value.fix
    # ...and it was right: once idle, they go
    fake_api.autoscaler_idle(NS, NAME, idle=set(fake_api.workers(NS, NAME)))
    assert fake_api.workers(NS, NAME) == []


SCALED_OUT = [
    _head(),
    *[worker_pod(f"zerotune-workers-{i}", cluster=NAME, group="workers", ip=10 + i) for i in range(1, 4)],
    worker_pod("zerotune-workers-4", cluster=NAME, group="workers", ip=14, phase="Pending"),
]


@pytest.mark.parametrize("raycluster_kwargs", [{"replicas": 4, "min_replicas": 4, "autoscaling": True}])
@pytest.mark.parametrize("pods", [SCALED_OUT])
def test_scale_down_names_pending_then_idle_pods_and_the_operator_deletes_them(api, fake_api):
    from cluster.kube import wait_ready
    from cluster.scale import scale_workers

    asked = []

    def idle(*, pods):
        asked.append(sorted(p["metadata"]["name"] for p in pods))
        return {"zerotune-workers-3"}  # what Ray reports: no actor, no running task

    result = scale_workers(api=api, workers=2, name=NAME, namespace=NS, idle=idle)
    assert asked == [[f"zerotune-workers-{i}" for i in range(1, 5)]]  # only worker pods go to Ray
    assert result["workers_to_delete"] == ["zerotune-workers-4", "zerotune-workers-3"]
    patch = next(r for r in fake_api.requests if r["method"] == "PATCH")["body"]
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/0/minReplicas", "value": 2} in patch
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2} in patch
    assert {
        "op": "add",
        "path": "/spec/workerGroupSpecs/0/scaleStrategy",
        "value": {"workersToDelete": ["zerotune-workers-4", "zerotune-workers-3"]},
    } in patch
    fake_api.reconcile(NS, NAME)
    assert fake_api.workers(NS, NAME) == ["zerotune-workers-1", "zerotune-workers-2"]
    assert wait_ready(api=api, name=NAME, namespace=NS, timeout_s=1, workers=2)["workers_live"] == 2


@pytest.mark.parametrize("raycluster_kwargs", [{"replicas": 4, "min_replicas": 4, "autoscaling": True}])
@pytest.mark.parametrize("pods", [SCALED_OUT])
def test_scale_down_keeps_busy_workers_and_wait_says_why(api, fake_api):
    from cluster.kube import wait_ready
    from cluster.scale import scale_workers

    result = scale_workers(api=api, workers=1, name=NAME, namespace=NS)  # Ray not asked: nothing known idle
    assert result["workers_to_delete"] == ["zerotune-workers-4"] and result["busy_above_min"] == 2
    assert "2 worker(s) above the minimum are busy" in result["note"] and "--address" in result["note"]
    fake_api.reconcile(NS, NAME)
    assert len(fake_api.workers(NS, NAME)) == 3  # the operator never deletes busy ones at random
    with pytest.raises(ClusterError, match="2 above the target") as err:
        wait_ready(api=api, name=NAME, namespace=NS, timeout_s=10, poll_s=5, workers=1, **_fake_clock())
    assert "idle for 300 s" in err.value.message
    fake_api.autoscaler_idle(NS, NAME, idle={"zerotune-workers-1", "zerotune-workers-2"})
    assert wait_ready(api=api, name=NAME, namespace=NS, timeout_s=1, workers=1)["workers_live"] == 1


def test_unreachable_api_server_is_a_cluster_error(tmp_path):
    from cluster.kube import cluster_status, connect

    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}],
            }
        )
    )
    client = connect(kubeconfig=str(config))
    client.configuration.retries = 0
    with pytest.raises(ClusterError, match="cannot reach"):
        cluster_status(api=client, name=NAME, namespace=NS)


def test_cli_scale_status_and_wait(kubeconfig, fake_api, capsys):
    assert main(["cluster", "scale", "--workers", "2", "--kubeconfig", kubeconfig, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["to"] == 2
    assert main(["cluster", "scale", "--workers", "9", "--kubeconfig", kubeconfig]) == ClusterError.exit_code
    err = capsys.readouterr().err
    assert "error: workers:" in err and "fix:" in err
    assert fake_api.methods().count("PATCH") == 1
    assert main(["cluster", "status", "--kubeconfig", kubeconfig]) == 0
    out = capsys.readouterr().out
    assert "1/2 ready" in out and "Ray 2.60.0" in out and "port-forward svc/zerotune-head-svc" in out
    fake_api.rayclusters[(NS, NAME)]["spec"]["workerGroupSpecs"][0]["replicas"] = 1
    fake_api.pods = [p for p in fake_api.pods if p["metadata"]["name"] != "zerotune-workers-2"]
    assert main(["cluster", "wait", "--timeout", "1", "--kubeconfig", kubeconfig]) == 0
    assert "storage     NOT CHECKED: pass --address" in capsys.readouterr().out
