"""cluster/capacity.py: the ceiling from an autoscaling config, a RayCluster or live totals, and what fits it."""

import json

from cluster.capacity import Capacity, NodeType, autoscaler_runs, from_autoscaling_config, from_raycluster

AUTOSCALING = {
    "max_workers": 5,
    "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "cpu1": {"resources": {"CPU": 1}, "min_workers": 0, "max_workers": 4},
        "gpu": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 2},
    },
}


def test_the_autoscalers_node_types_and_max_counts_are_the_ceiling():
    cap = from_autoscaling_config(AUTOSCALING)
    assert cap.source == "autoscaler" and cap.autoscaling and cap.max_workers == 5
    assert [(t.name, t.max_count) for t in cap.node_types] == [("head", 1), ("cpu1", 4), ("gpu", 2)]
    assert cap.totals() == {"CPU": 20.0, "GPU": 2.0}
    assert "cluster ceiling (autoscaler): 4 x cpu1 (CPU 1), 2 x gpu (CPU 8 GPU 1)" in cap.describe()


def test_groups_are_packed_onto_nodes_not_onto_the_total():
    cap = from_autoscaling_config(AUTOSCALING)
    one_cpu = [{"CPU": 1.0}]
    # 4 one-CPU nodes and 2 GPU nodes of 8 CPUs, but only 5 workers in all: 4 + 8 at most, never the 20 total CPUs.
    assert cap.groups_that_fit(one_cpu, limit=100) == 4 + 8
    assert cap.groups_that_fit([{"CPU": 2.0}] * 2, limit=100) == 4  # only the GPU nodes (8 CPUs) hold 2 CPUs
    assert cap.groups_that_fit([{"CPU": 1.0, "GPU": 1.0}], limit=100) == 2
    assert cap.groups_that_fit([{"CPU": 9.0}], limit=100) == 0 and not cap.fits_one({"CPU": 9.0})
    assert cap.groups_that_fit(one_cpu, limit=3) == 3


def test_a_fixed_pool_keeps_the_totals_behaviour():
    cap = Capacity.fixed({"CPU": 7.0})
    assert cap.source == "live" and not cap.autoscaling
    assert cap.groups_that_fit([{"CPU": 1.0}] * 2, limit=10) == 3


def test_a_rayclusters_worker_groups_give_the_ceiling():
    raycluster = {
        "spec": {
            "enableInTreeAutoscaling": True,
            "headGroupSpec": {"rayStartParams": {"num-gpus": "0"}, "template": _pod(cpu="2")},
            "workerGroupSpecs": [
                {"groupName": "gpu", "maxReplicas": 16, "minReplicas": 0, "template": _pod(cpu="7500m", gpu=1)},
                {"groupName": "cpu", "maxReplicas": 2, "rayStartParams": {"num-cpus": "3"}, "template": _pod(cpu="4")},
            ],
        }
    }
    cap = from_raycluster(raycluster)
    assert cap.source == "kuberay" and cap.autoscaling
    assert cap.node_types == (
        NodeType("head", {"CPU": 2.0, "GPU": 0.0}, 1),
        NodeType("gpu", {"CPU": 7.5, "GPU": 1.0}, 16),
        NodeType("cpu", {"CPU": 3.0, "GPU": 0.0}, 2),
    )
    assert cap.groups_that_fit([{"CPU": 4.0, "GPU": 1.0}], limit=100) == 16
    assert from_raycluster({"spec": {}}) is None


def _pod(*, cpu: str, gpu: int = 0) -> dict:
    limits = {"cpu": cpu, **({"nvidia.com/gpu": gpu} if gpu else {})}
    return {"spec": {"containers": [{"name": "ray", "resources": {"limits": limits}}]}}


def test_a_node_type_whose_resources_are_left_to_detection_makes_the_config_unreadable():
    # Skipping it would leave a ceiling without that type (with only such types: none at all), refusing every sweep.
    detected = {**AUTOSCALING["available_node_types"], "detected": {"max_workers": 3}}
    assert from_autoscaling_config({**AUTOSCALING, "available_node_types": detected}) is None
    only = {"head_node_type": "h", "available_node_types": {"h": {"resources": {}}, "w": {"max_workers": 4}}}
    assert from_autoscaling_config(only) is None


def _v1_status(mapping: dict) -> bytes:
    return json.dumps({"autoscaler_report": {"node_type_mapping": mapping}}).encode()


def test_an_autoscaler_is_seen_from_the_gcs_unless_the_heads_monitor_is_read_only():
    # KubeRay: the sidecar's v2 autoscaler is not visible from the driver, its GCS key is.
    assert autoscaler_runs(monitor=None, v2_enabled=True, v1_status=None)
    # A v1 autoscaler with a config maps nodes to its node types; the read-only one (every `ray start --head` and
    # `ray.init()` runs it) names each node's type after the node.
    assert autoscaler_runs(monitor=None, v2_enabled=False, v1_status=_v1_status({"ab12": "cpu1", "cd34": "head"}))
    assert not autoscaler_runs(monitor=None, v2_enabled=False, v1_status=_v1_status({"ab12": "node_ab12"}))
    assert not autoscaler_runs(monitor=None, v2_enabled=False, v1_status=None)
    assert not autoscaler_runs(monitor=None, v2_enabled=False, v1_status=b"not json")
    # The head's monitor seen on this host says it exactly: v2 enabled with no autoscaling config starts no node.
    assert not autoscaler_runs(monitor="readonly", v2_enabled=True, v1_status=None)
    assert autoscaler_runs(monitor="config", v2_enabled=False, v1_status=None)


def test_an_unbounded_ceiling_accepts_any_worker_and_fits_every_trial_left():
    live = (NodeType("head", {"CPU": 0.0, "memory": 8e9}, 1),)  # KubeRay's head; GPU workers at minReplicas 0
    cap = Capacity(node_types=live, source="live", autoscaling=True, unbounded=True)
    assert cap.fits_one({"CPU": 8.0, "GPU": 1.0}) and cap.groups_that_fit([{"CPU": 8.0, "GPU": 1.0}] * 4, limit=7) == 7
    assert cap.largest_memory() is None  # the live head's memory says nothing of the nodes to come
    assert "node types cannot be read" in cap.describe() and cap.describe().startswith("cluster ceiling (live)")
    bounded = Capacity(node_types=live, source="live")
    assert not bounded.fits_one({"CPU": 1.0}) and bounded.largest_memory() == 8e9
