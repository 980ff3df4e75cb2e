"""cluster/sizing.py: worker sizing from a sweep config and node type, the patch applying to the overlays,
and `zerotune cluster render --overlay` refusing a placeholder left in what it would apply."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster.sizing import (
    NODE_TYPES,
    estimated_allocatable,
    node_allocatable,
    parse_quantity,
    raycluster_patch,
    render_patch_yaml,
    worker_plan,
)
from sweeps.cli import main
from zerotune.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("concurrent", "per_trial", "use_gpu", "cpus", "workers", "gpus", "pod_cpus"),
    [
        (None, 2, False, 1.0, 2, 0, 1),  # no concurrency given: one trial at a time
        (4, 1, True, 4.0, 4, 1, 4),
        (3, 2, True, 2.5, 6, 1, 3),  # fractional CPUs round up to whole pod CPUs
    ],
)
def test_worker_plan_without_a_node_type(concurrent, per_trial, use_gpu, cpus, workers, gpus, pod_cpus):
    plan = worker_plan(
        name="s", num_workers=per_trial, use_gpu=use_gpu, cpus_per_worker=cpus, max_concurrent_trials=concurrent
    )
    assert (plan["workers"], plan["gpus_per_worker"], plan["cpus_per_worker"]) == (workers, gpus, pod_cpus)
    assert plan["memory_per_worker"] == f"{pod_cpus * 4}Gi"


def test_invalid_sizes_are_reported_together():
    with pytest.raises(ConfigError) as err:
        worker_plan(name="s", num_workers=0, use_gpu=False, cpus_per_worker=0, max_concurrent_trials=0)
    assert [f for f, _, _ in err.value.problems] == [
        "scaling.num_workers",
        "scaling.cpus_per_worker",
        "search.max_concurrent_trials",
    ]


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_per_gpu_pods_fill_a_node_without_stranding_a_gpu(node_type):
    """All 8 one-GPU pods fit the node's allocatable next to its DaemonSets, with whole CPUs; the per-node pod
    takes the same node whole. (The old fixed 12 CPU per GPU needs 96 of a 96-vCPU node's ~95.7 allocatable.)"""
    node = estimated_allocatable(NODE_TYPES[node_type])
    assert node["cpu"] < NODE_TYPES[node_type].cpus and node["memory_gib"] < NODE_TYPES[node_type].memory_gib
    per_gpu = worker_plan(name="s", num_workers=1, use_gpu=True, cpus_per_worker=4, max_concurrent_trials=16, node=node)
    assert per_gpu["shape"] == "per-gpu" and per_gpu["gpus_per_worker"] == 1 and per_gpu["workers"] == 16
    pods = per_gpu["pods_per_node"]
    assert pods == node["gpus"] == 8
    assert pods * per_gpu["cpus_per_worker"] <= node["cpu"] - 1  # room left for DaemonSets
    assert pods * parse_quantity(per_gpu["memory_per_worker"]) / 2**30 <= node["memory_gib"] - 4
    assert isinstance(per_gpu["cpus_per_worker"], int)
    per_node = worker_plan(name="s", num_workers=8, use_gpu=True, cpus_per_worker=4, max_concurrent_trials=2, node=node)
    assert per_node["shape"] == "per-node" and per_node["gpus_per_worker"] == 8 and per_node["workers"] == 2
    assert per_node["cpus_per_worker"] <= node["cpu"] - 1
    assert parse_quantity(per_node["shm"]) < parse_quantity(per_node["memory_per_worker"])


def test_measured_allocatable_wins_and_a_pod_too_small_is_refused():
    measured = node_allocatable(allocatable='{"cpu": "95690m", "memory": "1100Gi", "nvidia.com/gpu": "8"}')
    assert (round(measured["cpu"], 2), measured["memory_gib"], measured["gpus"]) == (95.69, 1100, 8)
    assert node_allocatable(allocatable="cpu=47,memory=500Gi,nvidia.com/gpu=4")["gpus"] == 4
    with pytest.raises(ConfigError) as err:  # 8 pods of 11 CPUs each: 12 per worker cannot fit
        worker_plan(name="s", num_workers=1, use_gpu=True, cpus_per_worker=12, node=measured, shape="per-gpu")
    assert err.value.field == "scaling.cpus_per_worker" and "per-node" in err.value.fix
    with pytest.raises(ConfigError, match="unknown node type"):
        node_allocatable(node_type="p9.huge")
    with pytest.raises(ConfigError, match="cannot read"):
        node_allocatable(allocatable="cpu=lots")


def test_gpu_patch_requests_equal_limits():
    ops = raycluster_patch(
        plan=worker_plan(name="s", num_workers=2, use_gpu=True, cpus_per_worker=4, max_concurrent_trials=3)
    )
    resources = ops[-1]["value"]
    assert resources["requests"] == resources["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/0/maxReplicas", "value": 6} in ops


def _overlay_with(tmp_path, patch_text: str, base: str) -> Path:
    overlay = tmp_path / "overlay"
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    overlay.mkdir()
    (overlay / "raycluster.demo.yaml").write_text(patch_text)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [f"../k8s/{base}"],
                "patches": [
                    {
                        "path": "raycluster.demo.yaml",
                        "target": {"group": "ray.io", "version": "v1", "kind": "RayCluster", "name": "zerotune"},
                    }
                ],
            }
        )
    )
    return overlay


@pytest.mark.parametrize(("use_gpu", "base"), [(True, "overlays/gpu-node"), (False, "overlays/cpu-dev")])
def test_rendered_patch_applies_to_the_overlays(tmp_path, use_gpu, base):
    """The printed file, wired into an overlay as its header says, renders with kustomize."""
    node = node_allocatable(node_type="p5.48xlarge") if use_gpu else None
    plan = worker_plan(
        name="demo", num_workers=2, use_gpu=use_gpu, cpus_per_worker=2, max_concurrent_trials=2, node=node
    )
    overlay = _overlay_with(tmp_path, render_patch_yaml(plan=plan), base)
    done = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cluster = next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "RayCluster")
    group = cluster["spec"]["workerGroupSpecs"][0]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) is use_gpu
    if use_gpu:  # per-node on a p5: one 8-GPU pod holds both trials' 2 workers
        assert group["maxReplicas"] == 1 and limits["nvidia.com/gpu"] == "8" and int(limits["cpu"]) > 180
        assert group["template"]["spec"]["volumes"][1]["emptyDir"]["sizeLimit"] == plan["shm"]
    else:
        assert group["maxReplicas"] == 4 and limits["cpu"] == "2"


def _sweep(tmp_path, **scaling) -> Path:
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "topics",
                "data": {"path": "data.csv"},
                "scaling": {"num_workers": 2, "use_gpu": True, "cpus_per_worker": 3, **scaling},
                "search": {"max_concurrent_trials": 2},
            }
        )
    )
    return config


def test_cli_render_reads_the_sweep_config(tmp_path, capsys):
    config = _sweep(tmp_path)
    assert main(["cluster", "render", str(config), "search.max_concurrent_trials=3", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert (plan["sweep"], plan["workers"], plan["gpus_per_worker"]) == ("topics", 6, 1)
    assert main(["cluster", "render", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Worker group sized for sweep 'topics'") and "raycluster.topics.yaml" in out
    assert main(["cluster", "render", str(config), "scaling.num_workers=0"]) == ConfigError.exit_code
    capsys.readouterr()
    assert main(["cluster", "render", str(config), "--node-type", "a2-highgpu-8g", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert (plan["shape"], plan["gpus_per_worker"], plan["workers"]) == ("per-node", 8, 1)


def test_cli_render_refuses_an_overlay_with_a_placeholder_until_it_is_set(tmp_path, capsys):
    config = _sweep(tmp_path)
    code = main(["cluster", "render", str(config), "--overlay", str(REPO / "k8s/overlays/gpu")])
    assert code == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "PersistentVolumeClaim/zerotune-results.spec.storageClassName" in err and "SET-ME" in err
    assert "EFS" in err and "standard-rwx" in err and "azurefile" in err
    # The operator's own overlay names the class: render now prints manifests to apply.
    mine = tmp_path / "mine"
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    mine.mkdir()
    (mine / "persistentvolumeclaim.mine.yaml").write_text(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: zerotune-results}\n"
        "spec: {storageClassName: efs-zerotune}\n"
    )
    (mine / "kustomization.yaml").write_text(
        "resources: [../k8s/overlays/gpu]\npatches: [{path: persistentvolumeclaim.mine.yaml}]\n"
    )
    code = main(["cluster", "render", str(config), "--overlay", str(mine), "--node-type", "p4d.24xlarge"])
    assert code == 0, capsys.readouterr().err
    docs = {d["kind"]: d for d in yaml.safe_load_all(capsys.readouterr().out) if d}
    assert docs["PersistentVolumeClaim"]["spec"]["storageClassName"] == "efs-zerotune"
    worker = docs["RayCluster"]["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "8"  # 2 workers a trial: per-node shape
    # overlays meant to be applied as shipped render without a config, and without refusal
    assert main(["cluster", "render", "--overlay", str(REPO / "k8s/overlays/s3-results")]) == 0
