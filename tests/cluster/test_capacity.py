"""cluster/capacity.py: the ceiling from an autoscaling config, a RayCluster or live totals, and what fits it."""

from cluster.capacity import Capacity, NodeType, from_autoscaling_config, from_raycluster

AUTOSCALING = {
    "max_workers": 5,
    "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "cpu1": {"resources": {"CPU": 1}, "min_workers": 0, "max_workers": 4},
        "gpu": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 2},
        "detected": {"max_workers": 3},  # resources left to detection: cannot be counted
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
