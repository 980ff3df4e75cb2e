"""cluster/kube.py and `zerotune cluster status|scale|wait` over real HTTP.

The kubernetes client talks to kube_fake_api (http.server on 127.0.0.1) through a real
kubeconfig file, so URL paths, query strings, headers and JSON bodies are what a real API
server would receive. No Kubernetes cluster is involved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kube_fake_api import FakeKubeAPI  # noqa: E402
from sweeps.cli import main  # noqa: E402
from zerotune.errors import ClusterError  # noqa: E402

NS, NAME = "zerotune", "zerotune"
RC_PATH = f"/apis/ray.io/v1/namespaces/{NS}/rayclusters/{NAME}"
BEARER = "kubeconfig-user-token"


def _raycluster(*, replicas=1, min_replicas=0, max_replicas=4, groups=("workers",)) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "7"},
        "spec": {
            "rayVersion": "2.60.0",
            "enableInTreeAutoscaling": True,
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head"}]}}},
            "workerGroupSpecs": [
                {
                    "groupName": g,
                    "replicas": replicas,
                    "minReplicas": min_replicas,
                    "maxReplicas": max_replicas,
                    "template": {"spec": {"containers": [{"name": "ray-worker"}]}},
                }
                for g in groups
            ],
        },
        "status": {
            "state": "ready",
            "head": {"podName": "zerotune-head-abcde", "serviceName": "zerotune-head-svc"},
            "endpoints": {"dashboard": "8265", "client": "10001", "gcs-server": "6379"},
        },
    }


def _pod(name, *, node_type, group=None, ready=True, gpus=0) -> dict:
    labels = {"ray.io/cluster": NAME, "ray.io/node-type": node_type}
    if group:
        labels["ray.io/group"] = group
    limits = {"cpu": "8", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "ray", "image": "x", "resources": {"limits": limits, "requests": limits}}]},
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


PODS = [
    _pod("zerotune-head-abcde", node_type="head"),
    _pod("zerotune-workers-1", node_type="worker", group="workers", gpus=1),
    _pod("zerotune-workers-2", node_type="worker", group="workers", ready=False, gpus=1),
    # another cluster's pod in the same namespace: must not be counted
    {
        **_pod("other-head", node_type="head"),
        "metadata": {
            "name": "other-head",
            "namespace": NS,
            "labels": {"ray.io/cluster": "other", "ray.io/node-type": "head"},
        },
    },
]


@pytest.fixture
def raycluster_kwargs() -> dict:
    return {}  # tests override it with @pytest.mark.parametrize("raycluster_kwargs", [...])


@pytest.fixture
def fake_api(raycluster_kwargs):
    api = FakeKubeAPI(rayclusters=[_raycluster(**raycluster_kwargs)], pods=PODS).start()
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


def test_status_reads_the_raycluster_and_its_pods(api, fake_api):
    from cluster.kube import cluster_status

    status = cluster_status(api=api, name=NAME, namespace=NS)
    assert status["head_ready"] is True and status["head_pod"] == "zerotune-head-abcde"
    assert (status["workers_ready"], status["workers_desired"], status["gpus_ready"]) == (1, 1, 1)
    assert status["ray_version"] == "2.60.0" and status["state"] == "ready"
    assert status["dashboard"] == "http://zerotune-head-svc.zerotune.svc:8265"
    get_rc, list_pods = fake_api.requests
    assert (get_rc["method"], get_rc["path"]) == ("GET", RC_PATH)
    assert list_pods["path"] == f"/api/v1/namespaces/{NS}/pods"
    assert list_pods["query"]["labelSelector"] == f"ray.io/cluster={NAME}"
    # the kubeconfig's credentials reach the server
    assert all(r["headers"]["authorization"] == f"Bearer {BEARER}" for r in fake_api.requests)


def test_scale_sends_a_guarded_json_patch(api, fake_api):
    from cluster.kube import cluster_status, scale_workers

    result = scale_workers(api=api, workers=3, name=NAME, namespace=NS)
    assert (result["from"], result["to"], result["group"]) == (1, 3, "workers")
    patch = [r for r in fake_api.requests if r["method"] == "PATCH"]
    assert len(patch) == 1
    assert patch[0]["path"] == RC_PATH
    assert patch[0]["headers"]["content-type"] == "application/json-patch+json"
    assert patch[0]["body"] == [
        {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "workers"},
        {"op": "test", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3},
    ]
    assert cluster_status(api=api, name=NAME, namespace=NS)["workers_desired"] == 3


@pytest.mark.parametrize("workers", [5, 100])
def test_scale_beyond_max_is_refused_without_a_patch(api, fake_api, workers):
    from cluster.kube import scale_workers

    with pytest.raises(ClusterError) as err:
        scale_workers(api=api, workers=workers, name=NAME, namespace=NS)
    assert "0..4" in err.value.message and "maxReplicas" in err.value.fix
    assert fake_api.methods() == ["GET"]  # it read max, then stopped


def test_negative_workers_are_refused_before_any_request(api, fake_api):
    from cluster.kube import scale_workers

    with pytest.raises(ClusterError):
        scale_workers(api=api, workers=-1, name=NAME, namespace=NS)
    assert fake_api.requests == []


@pytest.mark.parametrize("raycluster_kwargs", [{"min_replicas": 2}])
def test_scale_below_min_is_refused(api, fake_api):
    from cluster.kube import scale_workers

    with pytest.raises(ClusterError, match="2..4"):
        scale_workers(api=api, workers=1, name=NAME, namespace=NS)
    assert "PATCH" not in fake_api.methods()


@pytest.mark.parametrize("raycluster_kwargs", [{"groups": ("gpu-a100", "gpu-h100")}])
def test_several_groups_need_a_name(api, fake_api):
    from cluster.kube import scale_workers

    with pytest.raises(ClusterError, match="gpu-a100, gpu-h100"):
        scale_workers(api=api, workers=1, name=NAME, namespace=NS)
    scale_workers(api=api, workers=2, name=NAME, namespace=NS, group="gpu-h100")
    patch = next(r for r in fake_api.requests if r["method"] == "PATCH")
    assert patch["body"][-1] == {"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 2}


def test_a_concurrent_change_is_reported_not_clobbered(api, fake_api, monkeypatch):
    from cluster import kube

    # We read replicas=1; the autoscaler sets 2 before our PATCH lands: the `test` op must fail.
    stale = json.loads(json.dumps(fake_api.rayclusters[(NS, NAME)]))
    fake_api.rayclusters[(NS, NAME)]["spec"]["workerGroupSpecs"][0]["replicas"] = 2
    monkeypatch.setattr(kube, "get_raycluster", lambda **_: stale)
    with pytest.raises(ClusterError, match="changed") as err:
        kube.scale_workers(api=api, workers=3, name=NAME, namespace=NS)
    assert "again" in err.value.fix
    assert fake_api.methods() == ["PATCH"]
    assert fake_api.rayclusters[(NS, NAME)]["spec"]["workerGroupSpecs"][0]["replicas"] == 2


def test_missing_cluster_names_the_fix(api, fake_api):
    from cluster.kube import cluster_status

    with pytest.raises(ClusterError, match="not found") as err:
        cluster_status(api=api, name="nope", namespace=NS)
    assert "kubectl apply -k" in err.value.fix


def test_wait_times_out_with_what_is_missing(api, fake_api):
    from cluster.kube import wait_ready

    now = [0.0]
    with pytest.raises(ClusterError, match="1/2 workers ready"):
        wait_ready(
            api=api,
            name=NAME,
            namespace=NS,
            timeout_s=10,
            poll_s=5,
            workers=2,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
    assert fake_api.methods().count("GET") == 6  # 3 polls x (RayCluster + pods)


def test_wait_returns_once_ready(api, fake_api):
    from cluster.kube import wait_ready

    status = wait_ready(api=api, name=NAME, namespace=NS, timeout_s=1, workers=1)
    assert status["head_ready"] and status["workers_ready"] == 1


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


def test_cli_scale_and_status(kubeconfig, fake_api, capsys):
    assert main(["cluster", "scale", "--workers", "2", "--kubeconfig", kubeconfig, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["to"] == 2
    assert main(["cluster", "scale", "--workers", "9", "--kubeconfig", kubeconfig]) == ClusterError.exit_code
    err = capsys.readouterr().err
    assert "error: workers:" in err and "fix:" in err
    assert fake_api.methods().count("PATCH") == 1
    assert main(["cluster", "status", "--kubeconfig", kubeconfig]) == 0
    out = capsys.readouterr().out
    assert "1/2 ready" in out and "Ray 2.60.0" in out and "port-forward svc/zerotune-head-svc" in out
