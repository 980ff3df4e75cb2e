"""The cluster's ceiling: which nodes it can have, not only those up now.

An autoscaling cluster (KubeRay, `ray up`) starts with few workers and adds nodes when work waits, so live resources
undercount it. The ceiling comes, in order, from:
  autoscaler  the autoscaler's node types and max counts: the ClusterConfig an autoscaler publishes in the GCS (what
              Ray Data reads), else the autoscaling config the head's autoscaler runs with (`ray up`, `ray start
              --autoscaling-config`), found through its process on this host. Ray 2.60's own autoscalers (v1 and v2)
              publish no ClusterConfig, and KubeRay's runs in a sidecar, so on KubeRay this finds nothing;
  kuberay     the RayCluster's worker groups, maxReplicas x resources, where the Kubernetes API answers (RBAC);
  live        the nodes up now: a fixed cluster, or (`unbounded`) an autoscaler whose node types cannot be read.

An autoscaler that runs but whose node types cannot be read is what this project's own KubeRay manifests give: the Ray
container holds no Kubernetes token, the v2 autoscaler runs in the head pod's sidecar (invisible from the driver) and
publishes no ClusterConfig. It is still seen from inside Ray, in the GCS's internal KV: the v2 autoscaler's enabled
key (`__autoscaler_v2_enabled` = 1, which KubeRay's `autoscalerOptions.version: v2` sets), or the v1 autoscaler's
status (`__autoscaling_status`) naming node types of a real config. (A head's own monitor without an autoscaling
config, as every `ray start --head` and `ray.init()` starts, is read-only: it starts no node. Its v1 status names
each node `node_<id>`; seen on this host, its process has no --autoscaling-config.) Such a ceiling is `unbounded`:
pre-flight cannot refuse a worker group that no live node holds, so it accepts it and says the node types could not
be read (a trial that no node type can hold then waits, and `sweep status` shows it pending with its reason); the
sweep runs search.max_concurrent_trials trials at once, else as many as are left to run, and asks the autoscaler for
their bundles up front: it starts what it can, and Tune places trials as nodes arrive.
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
    # An autoscaler runs but its node types cannot be read (see the module docstring): `node_types` are the live
    # nodes', and any worker group may fit a node it can start.
    unbounded: bool = False

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
        if self.unbounded:
            return True
        return any(_fits(t.resources, bundle) for t in self.node_types if t.max_count > 0)

    def groups_that_fit(self, bundles: list[dict], *, limit: int) -> int:
        """How many copies of `bundles` (one trial's) fit at once, up to `limit`: each bundle goes to a node already
        in use if one has room, else to the smallest node the ceiling can still add (within `max_workers`). An
        unbounded ceiling holds `limit`: only the autoscaler knows what it can start."""
        if self.unbounded:
            return limit
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

    def largest_memory(self) -> float | None:
        """The most `memory` one node the ceiling can have holds; None when unknown (unbounded, or no node type
        names its memory)."""
        known = [t.resources["memory"] for t in self.node_types if t.max_count > 0 and t.resources.get("memory")]
        return None if self.unbounded or not known else float(max(known))

    def describe(self) -> str:
        if self.unbounded:
            return (
                f"cluster ceiling ({self.source}): an autoscaler runs but its node types cannot be read, so workers "
                "are checked only against what some node type may hold; a trial no node type can hold waits as "
                "pending" + (f"; {self.note}" if self.note else "")
            )
        types = ", ".join(
            f"{t.max_count} x {t.name} ({format_resources(t.resources)})"
            for t in self.node_types
            if core_resources(t.resources)
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


def core_resources(resources: dict) -> dict[str, float]:
    """The CPUs and GPUs of `resources` that are not zero: what placing a worker depends on."""
    return {k: float(v) for k, v in resources.items() if k in ("CPU", "GPU") and v}


def format_resources(resources: dict) -> str:
    """For people: the CPUs (even none), then GPUs and custom resources that are not zero."""
    shown = {
        k: float(v) for k, v in resources.items() if v and k != "CPU" and not k.islower() and not k.startswith("node:")
    }
    return " ".join([f"CPU {float(resources.get('CPU', 0)):g}"] + [f"{k} {v:g}" for k, v in sorted(shown.items())])


def ceiling(*, raycluster=None) -> Capacity:
    """The connected cluster's ceiling (Ray must be initialised). `raycluster`: a callable returning the RayCluster
    (cluster.kube), tried only when the autoscaler's node types cannot be read; failing is fine (no RBAC)."""
    import ray

    live = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
    monitor, config = _local_monitor(_gcs_address())
    found = from_cluster_config(_gcs_cluster_config()) or from_autoscaling_config(config)
    note = ""
    if found is None and raycluster is not None:
        try:
            found = from_raycluster(raycluster())
        except Exception as exc:  # noqa: BLE001 - no API, no RBAC, no RayCluster: Ray's own state answers
            note = f"the RayCluster could not be read ({(str(exc) or type(exc).__name__).splitlines()[0][:120]})"
    if found is not None:
        return Capacity(**{**found.__dict__, "up": live})
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    shapes: dict[str, NodeType] = {}
    for n in nodes:
        head = "node:__internal_head__" in n.get("Resources", {})
        res = {k: float(v) for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
        key = json.dumps([head, core_resources(res)], sort_keys=True)
        old = shapes.get(key)
        shapes[key] = NodeType("head" if head else "node", res, (old.max_count if old else 0) + 1)
    runs = autoscaler_runs(monitor=monitor, v2_enabled=_v2_enabled(), v1_status=_v1_status())
    return Capacity(
        node_types=tuple(shapes.values()), source="live", autoscaling=runs, unbounded=runs, note=note, up=live
    )


def autoscaler_runs(*, monitor: str | None, v2_enabled: bool, v1_status: bytes | None) -> bool:
    """Whether an autoscaler that can start nodes serves the cluster (see the module docstring). `monitor`: the head's
    monitor process seen on this host, "config" (it runs an autoscaling config) or "readonly" (none: it starts no
    node), None when not seen; `v2_enabled`: the GCS's v2 autoscaler key; `v1_status`: the v1 autoscaler's status."""
    if monitor is not None:
        return monitor == "config"
    if v2_enabled:
        return True
    try:
        report = json.loads(v1_status or b"{}").get("autoscaler_report") or {}
    except ValueError:
        return False
    types = report.get("node_type_mapping") or {}
    # The read-only provider names each node's type after the node itself (format_readonly_node_type).
    return any(kind != f"node_{node_id}" for node_id, kind in types.items())


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
    counting its head node, and the global max_workers. None when a type leaves its resources to detection (`ray up`
    allows it): what that type holds is unknown, and a ceiling without it would refuse sweeps it could run."""
    if not config or not config.get("available_node_types"):
        return None
    head = config.get("head_node_type")
    types = []
    for name, spec in config["available_node_types"].items():
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        if not resources:
            return None
        types.append(NodeType(name, resources, int(spec.get("max_workers", 0)) + (1 if name == head else 0)))
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


def _v2_enabled() -> bool:
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    try:
        return is_autoscaler_v2(fetch_from_server=True)  # the GCS's key, not this process's environment
    except Exception:  # noqa: BLE001 - no key, an older GCS: no v2 autoscaler is known
        return False


def _v1_status() -> bytes | None:
    from ray._private import ray_constants
    from ray.experimental.internal_kv import internal_kv_get_gcs_client

    try:
        return internal_kv_get_gcs_client().internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS.encode(), None)
    except Exception:  # noqa: BLE001 - unreadable: no v1 autoscaler is known
        return None


def _local_monitor(gcs_address: str) -> tuple[str | None, dict | None]:
    """The autoscaler (Ray's monitor process) serving `gcs_address` when it runs on this host (the driver on the head,
    as `ray job submit` and `ray up` put it): "config" with its autoscaling config (None when unreadable), "readonly"
    when it runs none, or (None, None) when not seen here."""
    import yaml

    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        # The autoscaler's monitor.py (v1's or v2's), not the log_monitor.py every node runs.
        if not any(os.path.basename(a) == "monitor.py" for a in args) or f"--gcs-address={gcs_address}" not in args:
            continue
        path = next((a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")), None)
        if not path:
            return "readonly", None
        try:
            with open(path) as f:
                return "config", yaml.safe_load(f)
        except OSError:
            return "config", None
    return None, None
