"""cluster/sizing.py: worker sizing from a sweep config, and the patch applying to the base."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster.sizing import raycluster_patch, render_patch_yaml, worker_plan
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
def test_worker_plan(concurrent, per_trial, use_gpu, cpus, workers, gpus, pod_cpus):
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


def test_gpu_patch_requests_equal_limits():
    ops = raycluster_patch(
        plan=worker_plan(name="s", num_workers=2, use_gpu=True, cpus_per_worker=4, max_concurrent_trials=3)
    )
    resources = ops[-1]["value"]
    assert resources["requests"] == resources["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/0/maxReplicas", "value": 6} in ops


@pytest.mark.parametrize("use_gpu", [True, False])
def test_rendered_patch_applies_to_the_base(tmp_path, use_gpu):
    """The printed file, wired into an overlay as its header says, renders with kustomize."""
    plan = worker_plan(name="demo", num_workers=2, use_gpu=use_gpu, cpus_per_worker=2, max_concurrent_trials=2)
    overlay = tmp_path / "overlay"
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    overlay.mkdir()
    (overlay / "raycluster.demo.yaml").write_text(render_patch_yaml(plan=plan))
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../k8s/base"],
                "patches": [
                    {
                        "path": "raycluster.demo.yaml",
                        "target": {"group": "ray.io", "version": "v1", "kind": "RayCluster", "name": "zerotune"},
                    }
                ],
            }
        )
    )
    done = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cluster = next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "RayCluster")
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert group["maxReplicas"] == 4
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) is use_gpu and limits["cpu"] == "2"


def test_cli_render_reads_the_sweep_config(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "topics",
                "data": {"path": "data.csv"},
                "scaling": {"num_workers": 2, "use_gpu": True, "cpus_per_worker": 3},
                "search": {"max_concurrent_trials": 2},
            }
        )
    )
    assert main(["cluster", "render", str(config), "search.max_concurrent_trials=3", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert (plan["sweep"], plan["workers"], plan["gpus_per_worker"]) == ("topics", 6, 1)
    assert main(["cluster", "render", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Worker group sized for sweep 'topics'") and "raycluster.topics.yaml" in out
    assert main(["cluster", "render", str(config), "scaling.num_workers=0"]) == ConfigError.exit_code
