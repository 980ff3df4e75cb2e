"""The cluster's ceiling: which nodes it can have, not only those up now.

An autoscaling cluster (KubeRay, `ray up`) starts with few workers and adds nodes when work waits, so live resources
undercount it. The ceiling comes, in order, from:
  autoscaler  the autoscaler's node types and max counts: the ClusterConfig an autoscaler publishes in the GCS (what
              Ray Data reads), else the autoscaling config the head's autoscaler runs with (`ray up`, `ray start
              --autoscaling-config`), found through its process on this host. Ray 2.60's own autoscalers (v1 and v2)
              publish no ClusterConfig, and KubeRay's runs in a sidecar, so on KubeRay this finds nothing;
  kuberay     the RayCluster's worker groups, maxReplicas x resources, where the Kubernetes API answers (RBAC);
  live        the nodes up now (a fixed cluster, or an autoscaler whose node types cannot be read).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]  # one node's
    max_count: int  # nodes of this type the cluster can have (its head included)


@dataclass(frozen=True)
class Capacity:
    """What the cluster can hold at most, and where that was learnt (`source`). `autoscaling`: an autoscaler can
    start nodes, so asking it for resources up front (cluster.scale.request_resources) is worth it."""

    node_types: tuple[NodeType, ...]
    source: str  # "autoscaler" | "kuberay" | "live"
    autoscaling: bool = False
    max_workers: int | None = None  # the autoscaler's cap on worker nodes over all types
    head: str | None = None  # the head's node type (not counted against max_workers)
    note: str = ""
    up: dict[str, float] = field(default_factory=dict)  # the live totals, for people

    @classmethod
    def fixed(cls, resources: dict, *, source: str = "live") -> Capacity:
        """One pool of `resources` (what callers that only know totals pass)."""
        return cls(node_types=(NodeType("cluster", dict(resources), 1),), source=source, up=dict(resources))

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.node_types:
            for key, value in t.resources.items():
                out[key] = out.get(key, 0.0) + value * t.max_count
        return out

    def fits_one(self, bundle: dict) -> bool:
        return any(_fits(t.resources, bundle) for t in self.node_types if t.max_count > 0)

    def groups_that_fit(self, bundles: list[dict], *, limit: int) -> int:
        """How many copies of `bundles` (one trial's) fit at once, up to `limit`: each bundle goes to a node already
        in use if one has room, else to the smallest node the ceiling can still add (within `max_workers`)."""
        need = max(1, len(bundles)) * limit  # never more nodes than bundles are needed
        nodes = [
            _Node(dict(t.resources), head=t.name == self.head)
            for t in self.node_types
            for _ in range(min(t.max_count, need))
        ]
        nodes.sort(key=lambda n: (not n.head, sum(n.free.values())))
        order = sorted(bundles, key=lambda b: -sum(b.values()))
        done = 0
        while done < limit:
            trial = [n.copy() for n in nodes]
            if not all(_place(trial, b, self.max_workers) for b in order):
                break
            nodes, done = trial, done + 1
        return done

    def describe(self) -> str:
        types = ", ".join(
            f"{t.max_count} x {t.name} ({_fmt(t.resources)})" for t in self.node_types if _core(t.resources)
        )
        cap = f", at most {self.max_workers} workers" if self.max_workers is not None else ""
        return f"cluster ceiling ({self.source}): {types or 'no resources'}{cap}" + (
            f"; {self.note}" if self.note else ""
        )


def _fits(have: dict, bundle: dict) -> bool:
    return all(have.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items() if v)


@dataclass
class _Node:
    free: dict
    head: bool = False
    used: bool = False

    def copy(self) -> _Node:
        return _Node(dict(self.free), self.head, self.used)


def _place(nodes: list[_Node], bundle: dict, max_workers: int | None) -> bool:
    workers = sum(n.used and not n.head for n in nodes)
    for node in sorted(nodes, key=lambda n: not (n.used or n.head)):  # nodes in use first, then fresh ones
        fresh = not (node.used or node.head)
        if fresh and max_workers is not None and workers >= max_workers:
            return False
        if _fits(node.free, bundle):
            for k, v in bundle.items():
                node.free[k] = node.free.get(k, 0.0) - v
            node.used = True
            return True
    return False


def _fmt(resources: dict) -> str:
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or not k.islower()}
    return " ".join(f"{k} {v:g}" for k, v in sorted(shown.items()) if v and not k.startswith("node:")) or "none"


def ceiling(*, raycluster=None) -> Capacity:
    """The connected cluster's ceiling (Ray must be initialised). `raycluster`: a callable returning the RayCluster
    (cluster.kube), tried only when the autoscaler's node types cannot be read; failing is fine (no RBAC)."""
    import ray

    live = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
    found = from_cluster_config(_gcs_cluster_config()) or from_autoscaling_config(_monitor_config(_gcs_address()))
    note = ""
    if found is None and raycluster is not None:
        try:
            found = from_raycluster(raycluster())
        except Exception as exc:  # noqa: BLE001 - no API, no RBAC, no RayCluster: the live nodes answer
            why = (str(exc) or type(exc).__name__).splitlines()[0][:120]
            note = (
                f"the RayCluster could not be read ({why}), so an autoscaler's nodes not up yet are not counted: "
                "set search.max_concurrent_trials to run more trials at once"
            )
    if found is not None:
        return Capacity(**{**found.__dict__, "up": live})
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    shapes: dict[str, NodeType] = {}
    for n in nodes:
        head = "node:__internal_head__" in n.get("Resources", {})
        res = {k: float(v) for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
        key = json.dumps([head, _core(res)], sort_keys=True)
        old = shapes.get(key)
        shapes[key] = NodeType("head" if head else "node", res, (old.max_count if old else 0) + 1)
    return Capacity(node_types=tuple(shapes.values()), source="live", autoscaling=False, note=note, up=live)


def _core(res: dict) -> dict:
    return {k: v for k, v in res.items() if k in ("CPU", "GPU") and v}


def from_cluster_config(config) -> Capacity | None:
    """An autoscaler's ClusterConfig (autoscaler.proto: node_group_configs with resources and max_count; -1 is
    unlimited, taken as 1000)."""
    if config is None or not config.node_group_configs:
        return None
    types = tuple(
        NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, 1000 if g.max_count < 0 else g.max_count)
        for g in config.node_group_configs
    )
    return Capacity(node_types=types, source="autoscaler", autoscaling=True)


def from_autoscaling_config(config: dict | None) -> Capacity | None:
    """A Ray autoscaling config (cluster YAML): available_node_types with resources and max_workers, the head type
    counting its head node, and the global max_workers. Types whose resources the config leaves to detection are
    skipped (they cannot be counted)."""
    if not config or not config.get("available_node_types"):
        return None
    head = config.get("head_node_type")
    types = []
    for name, spec in config["available_node_types"].items():
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        count = int(spec.get("max_workers", 0)) + (1 if name == head else 0)
        if resources:
            types.append(NodeType(name, resources, count))
    cap = config.get("max_workers")
    return Capacity(
        node_types=tuple(types),
        source="autoscaler",
        autoscaling=True,
        max_workers=None if cap is None else int(cap),
        head=head,
    )


def from_raycluster(raycluster: dict | None) -> Capacity | None:
    """A KubeRay RayCluster: the head (one) and each worker group's maxReplicas, a pod's CPUs and GPUs from its
    rayStartParams (num-cpus, num-gpus), else its Ray container's limits (requests when no limits)."""
    spec = (raycluster or {}).get("spec") or {}
    if not spec.get("workerGroupSpecs"):
        return None
    types = [NodeType("head", _pod_resources(spec.get("headGroupSpec") or {}), 1)]
    for group in spec["workerGroupSpecs"]:
        types.append(
            NodeType(group.get("groupName", "workers"), _pod_resources(group), int(group.get("maxReplicas") or 0))
        )
    return Capacity(
        node_types=tuple(types), source="kuberay", autoscaling=bool(spec.get("enableInTreeAutoscaling")), head="head"
    )


def _pod_resources(group: dict) -> dict[str, float]:
    params = group.get("rayStartParams") or {}
    containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    limits = (
        (containers[0].get("resources") or {}).get("limits")
        or (containers[0].get("resources") or {}).get("requests")
        or {}
    )
    cpu = params.get("num-cpus", limits.get("cpu", 0))
    gpu = params.get("num-gpus", limits.get("nvidia.com/gpu", 0))
    return {"CPU": _quantity(cpu), "GPU": _quantity(gpu)}


def _quantity(value) -> float:
    text = str(value).strip().strip('"')
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text or 0)


def _gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _gcs_cluster_config():
    import ray._private.state

    try:
        return ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older GCS without the key
        return None


def _monitor_config(gcs_address: str) -> dict | None:
    """The autoscaling config of the autoscaler (Ray's monitor process) serving `gcs_address`, when it runs on this
    host (the driver on the head, as `ray job submit` and `ray up` put it)."""
    import yaml

    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith("monitor.py") for a in args) or f"--gcs-address={gcs_address}" not in args:
            continue
        path = next((a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")), None)
        if path:
            try:
                with open(path) as f:
                    return yaml.safe_load(f)
            except OSError:
                return None
    return None
