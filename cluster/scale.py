"""`zerotune cluster scale`: the JSON patch that scales a worker group, and what will happen after it.

With in-tree autoscaling on, the Ray autoscaler owns `replicas`: idle workers above `minReplicas` leave
after `idleTimeoutSeconds`, and the operator never deletes surplus pods on its own (it skips random pod
deletion). So scaling goes through `minReplicas`, and scaling down names the pods to remove in
`scaleStrategy.workersToDelete` (only pods that hold no Ray work). Without autoscaling, `replicas`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from cluster.kube import DEFAULT_NAME, DEFAULT_NAMESPACE, _meta, get_raycluster, list_pods, patch_raycluster, summarize
from zerotune.errors import ClusterError


def _pick_group(raycluster: dict, group: str | None) -> tuple[int, dict]:
    groups = (raycluster.get("spec") or {}).get("workerGroupSpecs") or []
    names = [g.get("groupName") for g in groups]
    if group is None:
        if len(groups) == 1:
            return 0, groups[0]
        raise ClusterError(
            f"the RayCluster has {len(groups)} worker groups ({', '.join(map(str, names)) or 'none'})",
            field="group",
            fix="name one with --group",
        )
    if group not in names:
        raise ClusterError(
            f"no worker group {group!r}; the RayCluster has: {', '.join(map(str, names)) or 'none'}",
            field="group",
            fix="pass one of those names to --group",
        )
    index = names.index(group)
    return index, groups[index]


def _set(spec: dict, path: str, key: str, value) -> list[dict]:
    """Guarded ops: the `test` makes the API server reject the patch (422) if the value changed since we
    read it (the autoscaler edits these fields too), instead of clobbering it."""
    if key not in spec:
        return [{"op": "add", "path": f"{path}/{key}", "value": value}]
    return [
        {"op": "test", "path": f"{path}/{key}", "value": spec[key]},
        {"op": "replace", "path": f"{path}/{key}", "value": value},
    ]


def scale_plan(
    *, raycluster: dict, pods: list[dict], workers: int, group: str | None = None, idle: set[str] | None = None
) -> dict:
    """Pure: the JSON patch that scales one worker group to `workers`, and what will happen.

    Without autoscaling: set `replicas` (the operator adds or deletes pods). With it: set `minReplicas`
    (what `kubectl ray scale cluster --min-replicas` does) and `replicas` no lower than the pods that stay;
    to go down, name in `workersToDelete` the surplus pods that hold no Ray work: Pending ones, then those
    Ray reports idle (`idle`, pod names; None when Ray was not asked). Busy surplus workers stay until the
    autoscaler finds them idle for its timeout.
    """
    if workers < 0:
        raise ClusterError(
            f"--workers must be >= 0, got {workers}", field="workers", fix="pass a count like --workers 2"
        )
    index, spec = _pick_group(raycluster, group)
    low, high = int(spec.get("minReplicas") or 0), int(spec.get("maxReplicas") or 0)
    autoscaling = bool((raycluster.get("spec") or {}).get("enableInTreeAutoscaling"))
    if workers > high or (not autoscaling and workers < low):
        allowed = f"0..{high}" if autoscaling else f"{low}..{high}"
        raise ClusterError(
            f"worker group {spec['groupName']!r} allows {allowed} replicas, asked for {workers}",
            field="workers",
            fix=f"pass --workers within {allowed}, or raise maxReplicas in your overlay and re-apply it",
        )
    path = f"/spec/workerGroupSpecs/{index}"
    ops: list[dict] = [{"op": "test", "path": f"{path}/groupName", "value": spec["groupName"]}]
    plan = {"group": spec["groupName"], "autoscaling": autoscaling, "max": high, "to": workers}
    if not autoscaling:
        ops += _set(spec, path, "replicas", workers)
        return plan | {"ops": ops, "from": spec.get("replicas"), "min": low}
    status = summarize(raycluster=raycluster, pods=pods)
    timeout = status["idle_timeout_s"]
    leaving = {n for g in status["groups"] for n in g["leaving"]}
    members = [
        p
        for p in pods
        if (_meta(p).get("labels") or {}).get("ray.io/group") == spec["groupName"] and _meta(p)["name"] not in leaving
    ]
    surplus = max(0, len(members) - workers)
    pending = [_meta(p)["name"] for p in members if (p.get("status") or {}).get("phase") == "Pending"]
    quiet = [
        _meta(p)["name"] for p in members if _meta(p)["name"] in (idle or set()) and _meta(p)["name"] not in pending
    ]
    remove = (pending + quiet)[:surplus]
    replicas = max(workers, len(members) - len(remove))
    ops += _set(spec, path, "minReplicas", workers) + _set(spec, path, "replicas", replicas)
    if remove:
        strategy = spec.get("scaleStrategy")
        if strategy is None:
            ops.append({"op": "add", "path": f"{path}/scaleStrategy", "value": {"workersToDelete": remove}})
        else:
            ops += _set(
                strategy, f"{path}/scaleStrategy", "workersToDelete", (strategy.get("workersToDelete") or []) + remove
            )
    busy = surplus - len(remove)
    note = (
        f"autoscaling is on: minReplicas {low} -> {workers} keeps at least {workers} worker(s); the autoscaler adds "
        f"more when trials ask (up to {high}) and removes idle ones above {workers} after {timeout} s"
    )
    if remove:
        note += f"; deleting now (no Ray work on them): {', '.join(remove)}"
    if busy:
        note += (
            f"; {busy} worker(s) above the minimum are busy or not known to be idle and stay until idle for "
            f"{timeout} s" + ("" if idle is not None else " (pass --address to let Ray name the idle ones now)")
        )
    return plan | {
        "ops": ops,
        "from": low,
        "min": workers,
        "replicas": replicas,
        "workers_to_delete": remove,
        "busy_above_min": busy,
        "note": note,
    }


def scale_workers(
    *,
    api,
    workers: int,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    group: str | None = None,
    idle: Callable[..., set[str]] | None = None,
) -> dict:
    """Scale a worker group (see scale_plan); refuse before patching. `idle(pods=...)` asks Ray which worker
    pods are idle; it is asked only when a scale-down has surplus workers that are not Pending."""
    if workers < 0:  # before any request
        scale_plan(raycluster={}, pods=[], workers=workers)
    raycluster = get_raycluster(api=api, name=name, namespace=namespace)
    autoscaling = bool((raycluster.get("spec") or {}).get("enableInTreeAutoscaling"))
    pods = list_pods(api=api, name=name, namespace=namespace) if autoscaling else []
    plan = scale_plan(raycluster=raycluster, pods=pods, workers=workers, group=group)
    if idle is not None and plan.get("busy_above_min"):
        workers_only = [p for p in pods if (_meta(p).get("labels") or {}).get("ray.io/node-type") == "worker"]
        plan = scale_plan(raycluster=raycluster, pods=pods, workers=workers, group=group, idle=idle(pods=workers_only))
    patch_raycluster(
        plan.pop("ops"), api=api, what="patch the RayCluster's worker group", name=name, namespace=namespace
    )
    return {"name": name, "namespace": namespace, **plan}


@contextmanager
def requested(bundles: list[dict], *, autoscaling: bool):
    """Ask the autoscaler for `bundles` at once (one per worker of each trial that may run at the same time), so that
    nodes start while the first trial is placed instead of one trial's worth at a time; withdraw the request however
    the block ends, so that idle nodes can go. Yields `ask(bundles)`, which replaces the request while the block runs
    (as trials end, fewer nodes are needed). Without an autoscaler there is nothing to ask."""
    from ray.autoscaler.sdk import request_resources

    if not (autoscaling and bundles):
        yield lambda _bundles: None
        return
    open_ = [True]

    def ask(new: list[dict]) -> None:
        if open_[0]:  # never after the withdrawal: a late caller must not leave a request behind
            request_resources(bundles=list(new))

    request_resources(bundles=bundles)
    try:
        yield ask
    finally:
        open_[0] = False
        request_resources(bundles=[])
