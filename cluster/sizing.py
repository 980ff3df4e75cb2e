"""`zerotune cluster render`: size the RayCluster's worker group for one sweep config and node type.

Pure functions over plain keyword arguments (no sweeps import), so the sizing rule is testable on its
own. Workers = concurrent trials x Ray Train workers per trial. On GPU nodes there are two pod shapes:

- per-gpu: one pod per GPU (8 pods on an 8-GPU node): for one-GPU trials, many at once;
- per-node: one pod holding all of a node's GPUs: a trial's workers share the pod, so NCCL talks over
  NVLink instead of TCP between pods. `auto` picks per-node when a trial has more than one worker.

Pod CPU and memory come from what the node can give pods (its allocatable, not its capacity), less
what its DaemonSets use, split evenly between the pods of one node. The output is a kustomize JSON
patch for an overlay, or (with an overlay) the rendered manifests, refused while a placeholder is left.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from cluster.kube import DEFAULT_NAME, GPU_RESOURCE
from zerotune.errors import ConfigError

PLACEHOLDER = "SET-ME"  # marks a value the operator must choose (e.g. the RWX storage class)
SHAPES = ("auto", "per-gpu", "per-node")
STORAGE_FIX = (
    "name your ReadWriteMany storage class in the overlay's persistentvolumeclaim file (EKS: an EFS access-point "
    "class, GKE: standard-rwx, AKS: azurefile-csi; see the README), or use overlays/s3-results"
)
# Left on every node for its DaemonSets (GPU operator/device plugin, DCGM exporter, CNI, kube-proxy,
# logging, node exporter): a conservative sum, so that the 8th one-GPU pod still fits.
DAEMONSET_CPU = 2.0
DAEMONSET_MEMORY_GIB = 8.0
# Ray's object store takes 30 % of a node's memory by default and lives in /dev/shm.
SHM_FRACTION = 0.3
EPHEMERAL_GIB_PER_GPU = 25  # /tmp/ray: logs and spilled objects of one GPU worker


@dataclass(frozen=True)
class NodeType:
    """Published capacity of a cloud GPU instance type (vCPUs, GiB of memory, GPUs)."""

    name: str
    cpus: int
    memory_gib: float
    gpus: int
    gpu: str


_GB = 1e9 / 2**30  # Google lists memory in GB
NODE_TYPES = {
    n.name: n
    for n in (
        NodeType("p4d.24xlarge", 96, 1152, 8, "A100 40GB"),
        NodeType("p4de.24xlarge", 96, 1152, 8, "A100 80GB"),
        NodeType("p5.48xlarge", 192, 2048, 8, "H100 80GB"),
        NodeType("p5e.48xlarge", 192, 2048, 8, "H200"),
        NodeType("g5.48xlarge", 192, 768, 8, "A10G"),
        NodeType("a2-highgpu-8g", 96, 680 * _GB, 8, "A100 40GB"),
        NodeType("a2-ultragpu-8g", 96, 1360 * _GB, 8, "A100 80GB"),
        NodeType("a3-highgpu-8g", 208, 1872 * _GB, 8, "H100 80GB"),
        NodeType("Standard_ND96asr_v4", 96, 900, 8, "A100 40GB"),
        NodeType("Standard_ND96amsr_A100_v4", 96, 1900, 8, "A100 80GB"),
        NodeType("Standard_ND96isr_H100_v5", 96, 1900, 8, "H100 80GB"),
    )
}


def estimated_allocatable(node: NodeType) -> dict:
    """What the kubelet leaves to pods, estimated with GKE's reservation rule (the largest of the
    three clouds' on these sizes) plus the 100 MiB eviction threshold. Prefer the real figure:
    `kubectl get node NODE -o jsonpath='{.status.allocatable}'` (pass it as --node-allocatable)."""
    cores = [(1, 0.06), (1, 0.01), (2, 0.005), (math.inf, 0.0025)]
    mem = [(4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02)]
    return {
        "cpu": node.cpus - _tiered(node.cpus, cores),
        "memory_gib": node.memory_gib - _tiered(node.memory_gib, mem) - 100 / 1024,
        "gpus": node.gpus,
        "source": f"{node.name} ({node.cpus} vCPU, {node.memory_gib:.0f} GiB, {node.gpus}x {node.gpu}), estimated",
    }


def _tiered(total: float, tiers: list[tuple[float, float]]) -> float:
    reserved, left = 0.0, total
    for size, rate in tiers:
        part = min(left, size)
        reserved += part * rate
        left -= part
        if left <= 0:
            break
    return reserved


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity ("95690m", "1152Gi", "1176123456Ki", "8") as a plain number."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or (match[2] and match[2] not in _UNITS):
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match[1]) * _UNITS.get(match[2], 1)


def node_allocatable(*, node_type: str | None = None, allocatable: str | None = None) -> dict | None:
    """The node's allocatable CPU/memory/GPUs: measured (`cpu=..,memory=..,nvidia.com/gpu=..` or the JSON
    `kubectl get node` prints) or estimated from a known instance type; None when neither is given."""
    if node_type and allocatable:
        raise ConfigError([("node", "pass --node-type or --node-allocatable, not both", "keep one of them")])
    if allocatable:
        try:
            raw = json.loads(allocatable) if allocatable.lstrip().startswith("{") else _pairs(allocatable)
            return {
                "cpu": parse_quantity(raw["cpu"]),
                "memory_gib": parse_quantity(raw["memory"]) / 2**30,
                "gpus": int(parse_quantity(raw.get(GPU_RESOURCE, "0"))),
                "source": "measured allocatable",
            }
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                [
                    (
                        "node-allocatable",
                        f"cannot read {allocatable!r}: {exc}",
                        "pass cpu=...,memory=...,nvidia.com/gpu=... or the JSON of "
                        "`kubectl get node NODE -o jsonpath='{.status.allocatable}'`",
                    )
                ]
            ) from None
    if node_type:
        if node_type not in NODE_TYPES:
            raise ConfigError(
                [
                    (
                        "node-type",
                        f"unknown node type {node_type!r}",
                        f"one of {', '.join(NODE_TYPES)}; or pass --node-allocatable with your node's figures",
                    )
                ]
            )
        return estimated_allocatable(NODE_TYPES[node_type])
    return None


def _pairs(text: str) -> dict:
    return dict(part.split("=", 1) for part in text.split(",") if part.strip())


def worker_plan(
    *,
    name: str,
    num_workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    max_concurrent_trials: int | None = None,
    memory_gi_per_cpu: int = 4,
    node: dict | None = None,
    shape: str = "auto",
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
    if shape not in SHAPES:
        problems.append(("shape", f"unknown shape {shape!r}", f"one of {', '.join(SHAPES)}"))
    if node is not None and not use_gpu:
        problems.append(("scaling.use_gpu", "node sizing is for GPU sweeps", "drop --node-type/--node-allocatable"))
    if node is not None and use_gpu and node["gpus"] < 1:
        problems.append(("node", f"{node['source']} has no GPUs", "pass a GPU node type or its allocatable"))
    if problems:
        raise ConfigError(problems)
    concurrent = max_concurrent_trials or 1
    plan = {"sweep": name, "concurrent_trials": concurrent, "workers_per_trial": num_workers}
    if node is None:
        # One Ray worker per pod: the pod holds exactly what one Ray Train worker reserves.
        cpus = max(1, math.ceil(cpus_per_worker))
        return plan | {
            "shape": "per-gpu" if use_gpu else "per-worker",
            "workers": concurrent * num_workers,
            "gpus_per_worker": 1 if use_gpu else 0,
            "cpus_per_worker": cpus,
            "memory_per_worker": f"{cpus * memory_gi_per_cpu}Gi",
        }
    return plan | _node_plan(node, num_workers, cpus_per_worker, concurrent, shape)


def _node_plan(node: dict, num_workers: int, cpus_per_worker: float, concurrent: int, shape: str) -> dict:
    gpus = node["gpus"]
    if shape == "auto":
        shape = "per-node" if num_workers > 1 else "per-gpu"
    pods_per_node = gpus if shape == "per-gpu" else 1
    pod_gpus = gpus // pods_per_node
    # Whole CPUs: KubeRay hands Ray the CPU limit rounded UP, so 11.5 would promise Ray 12.
    cpu = math.floor((node["cpu"] - DAEMONSET_CPU) / pods_per_node)
    memory = math.floor((node["memory_gib"] - DAEMONSET_MEMORY_GIB) / pods_per_node)
    workers_in_pod = min(num_workers, pod_gpus)
    if cpu < 1 or memory < 1 or cpus_per_worker * workers_in_pod > cpu:
        fix = "lower scaling.cpus_per_worker" + ("" if shape == "per-node" else ", or use --shape per-node")
        raise ConfigError(
            [
                (
                    "scaling.cpus_per_worker",
                    f"{workers_in_pod} worker(s) x {cpus_per_worker:g} CPUs do not fit a {shape} pod of {cpu} CPUs "
                    f"on {node['source']}",
                    fix,
                )
            ]
        )
    return {
        "shape": shape,
        "node": node["source"],
        "pods_per_node": pods_per_node,
        "workers": math.ceil(concurrent * num_workers / pod_gpus),
        "gpus_per_worker": pod_gpus,
        "cpus_per_worker": cpu,
        "memory_per_worker": f"{memory}Gi",
        "shm": f"{max(1, math.floor(memory * SHM_FRACTION))}Gi",
        "ephemeral_storage": f"{EPHEMERAL_GIB_PER_GPU * pod_gpus + 10}Gi",
    }


def raycluster_patch(*, plan: dict, group_index: int = 0, group_name: str = "workers") -> list[dict]:
    """JSON patch ops (RFC 6902) that size worker group `group_index` of the base RayCluster."""
    base = f"/spec/workerGroupSpecs/{group_index}"
    amounts = {"cpu": str(plan["cpus_per_worker"]), "memory": plan["memory_per_worker"]}
    if plan["gpus_per_worker"]:
        amounts[GPU_RESOURCE] = str(plan["gpus_per_worker"])
    requests = dict(amounts)
    if "ephemeral_storage" in plan:
        requests["ephemeral-storage"] = plan["ephemeral_storage"]
    ops = [
        # Fails the render if the base's worker group is not where this patch expects it.
        {"op": "test", "path": f"{base}/groupName", "value": group_name},
        {"op": "replace", "path": f"{base}/maxReplicas", "value": plan["workers"]},
        # cpu/memory/GPU requests equal limits: GPUs must, and Guaranteed QoS keeps folds from being evicted.
        {
            "op": "replace",
            "path": f"{base}/template/spec/containers/0/resources",
            "value": {"requests": requests, "limits": amounts},
        },
    ]
    if "shm" in plan:
        ops += [
            {"op": "test", "path": f"{base}/template/spec/volumes/1/name", "value": "dshm"},
            {"op": "replace", "path": f"{base}/template/spec/volumes/1/emptyDir/sizeLimit", "value": plan["shm"]},
        ]
    return ops


def render_patch_yaml(*, plan: dict, cluster_name: str = DEFAULT_NAME, group_name: str = "workers") -> str:
    """The patch as a file for an overlay, with the lines that wire it into kustomization.yaml."""
    import yaml

    ops = raycluster_patch(plan=plan, group_name=group_name)
    gpus = f"{plan['gpus_per_worker']} GPU + " if plan["gpus_per_worker"] else ""
    where = f" ({plan['shape']} on {plan['node']})" if "node" in plan else ""
    header = [
        f"# Worker group sized for sweep {plan['sweep']!r}: {plan['concurrent_trials']} concurrent trial(s) x "
        f"{plan['workers_per_trial']} worker(s) -> {plan['workers']} pod(s) of "
        f"{gpus}{plan['cpus_per_worker']} CPU + {plan['memory_per_worker']}{where}.",
        f"# Save as k8s/overlays/<overlay>/raycluster.{plan['sweep']}.yaml and add to that kustomization.yaml:",
        "#   patches:",
        f"#     - path: raycluster.{plan['sweep']}.yaml",
        f"#       target: {{group: ray.io, version: v1, kind: RayCluster, name: {cluster_name}}}",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(ops, sort_keys=False)


def find_placeholders(docs: list[dict]) -> list[tuple[str, str]]:
    """(where, value) for every string in the rendered objects that still holds a placeholder."""
    found: list[tuple[str, str]] = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, str) and PLACEHOLDER in node:
            found.append((path, node))

    for doc in docs:
        walk(doc, f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}")
    return found


def render_overlay(overlay: str, *, patch: list[dict] | None = None, cluster_name: str = DEFAULT_NAME) -> str:
    """`kubectl kustomize` of `overlay` (plus `patch` on its RayCluster); refused while a placeholder is left."""
    import os
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    import yaml

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ConfigError([("overlay", "kubectl is needed to render an overlay", "install kubectl >= 1.32")])
    root = Path(overlay).resolve()
    if not (root / "kustomization.yaml").is_file():
        raise ConfigError([("overlay", f"{overlay} has no kustomization.yaml", "pass a folder like k8s/overlays/gpu")])
    with tempfile.TemporaryDirectory() as tmp:
        kustomization = {"resources": [os.path.relpath(root, tmp)]}  # kustomize refuses absolute roots
        if patch:
            (Path(tmp) / "raycluster.sized.yaml").write_text(yaml.safe_dump(patch, sort_keys=False))
            target = {"group": "ray.io", "version": "v1", "kind": "RayCluster", "name": cluster_name}
            kustomization["patches"] = [{"path": "raycluster.sized.yaml", "target": target}]
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        done = subprocess.run([kubectl, "kustomize", tmp], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ConfigError([("overlay", f"kubectl kustomize failed: {done.stderr.strip()}", None)])
    left = find_placeholders([d for d in yaml.safe_load_all(done.stdout) if d])
    if left:
        raise ConfigError(
            [
                (where, f"is still the placeholder {value!r}", STORAGE_FIX if "storageClassName" in where else None)
                for where, value in left
            ]
        )
    return done.stdout
