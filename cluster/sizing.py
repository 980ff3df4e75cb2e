"""`zerotune cluster render`: size the RayCluster's worker group for one sweep config.

Pure functions over plain keyword arguments (no sweeps import), so the sizing rule is
testable on its own: workers = concurrent trials x Ray Train workers per trial, one GPU
per worker when the sweep uses GPUs. The output is a kustomize JSON patch for an overlay.
"""

from __future__ import annotations

import math

from zerotune.errors import ConfigError

GPU_RESOURCE = "nvidia.com/gpu"


def worker_plan(
    *,
    name: str,
    num_workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    max_concurrent_trials: int | None = None,
    memory_gi_per_cpu: int = 4,
) -> dict:
    """How many worker pods of what size the sweep needs at full concurrency."""
    problems = []
    if num_workers < 1:
        problems.append(
            ("scaling.num_workers", f"must be >= 1, got {num_workers}", "set scaling.num_workers: 1 or more")
        )
    if cpus_per_worker <= 0:
        problems.append(
            ("scaling.cpus_per_worker", f"must be > 0, got {cpus_per_worker}", "e.g. scaling.cpus_per_worker: 4")
        )
    if max_concurrent_trials is not None and max_concurrent_trials < 1:
        problems.append(
            (
                "search.max_concurrent_trials",
                f"must be >= 1, got {max_concurrent_trials}",
                "leave it unset or give a positive count",
            )
        )
    if problems:
        raise ConfigError(problems)
    concurrent = max_concurrent_trials or 1
    # One Ray worker per pod: the pod holds exactly what one Ray Train worker reserves.
    cpus = max(1, math.ceil(cpus_per_worker))
    return {
        "sweep": name,
        "concurrent_trials": concurrent,
        "workers_per_trial": num_workers,
        "workers": concurrent * num_workers,
        "gpus_per_worker": 1 if use_gpu else 0,
        "cpus_per_worker": cpus,
        "memory_per_worker": f"{cpus * memory_gi_per_cpu}Gi",
    }


def raycluster_patch(*, plan: dict, group_index: int = 0, group_name: str = "workers") -> list[dict]:
    """JSON patch ops (RFC 6902) that size worker group `group_index` of the base RayCluster."""
    base = f"/spec/workerGroupSpecs/{group_index}"
    amounts = {"cpu": str(plan["cpus_per_worker"]), "memory": plan["memory_per_worker"]}
    if plan["gpus_per_worker"]:
        amounts[GPU_RESOURCE] = str(plan["gpus_per_worker"])
    return [
        # Fails the render if the base's worker group is not where this patch expects it.
        {"op": "test", "path": f"{base}/groupName", "value": group_name},
        {"op": "replace", "path": f"{base}/maxReplicas", "value": plan["workers"]},
        # Requests equal limits: GPUs must, and Guaranteed QoS keeps folds from being evicted.
        {
            "op": "replace",
            "path": f"{base}/template/spec/containers/0/resources",
            "value": {"requests": dict(amounts), "limits": dict(amounts)},
        },
    ]


def render_patch_yaml(*, plan: dict, cluster_name: str = "zerotune", group_name: str = "workers") -> str:
    """The patch as a file for an overlay, with the lines that wire it into kustomization.yaml."""
    import yaml

    ops = raycluster_patch(plan=plan, group_name=group_name)
    gpus = f"{plan['gpus_per_worker']} GPU + " if plan["gpus_per_worker"] else ""
    header = [
        f"# Worker group sized for sweep {plan['sweep']!r}: {plan['concurrent_trials']} concurrent trial(s) x "
        f"{plan['workers_per_trial']} worker(s) = {plan['workers']} pod(s) of "
        f"{gpus}{plan['cpus_per_worker']} CPU + {plan['memory_per_worker']}.",
        f"# Save as k8s/overlays/<overlay>/raycluster.{plan['sweep']}.yaml and add to that kustomization.yaml:",
        "#   patches:",
        f"#     - path: raycluster.{plan['sweep']}.yaml",
        f"#       target: {{group: ray.io, version: v1, kind: RayCluster, name: {cluster_name}}}",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(ops, sort_keys=False)
