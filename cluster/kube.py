"""The KubeRay RayCluster through the kubernetes Python client: status, scale, wait.

Every function takes an `ApiClient` (from `connect`) so tests can point it at a local
HTTP server. Objects are handled as plain dicts (the JSON the API server sends), which
is what custom objects are anyway and keeps pods and RayClusters alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from cluster.sizing import GPU_RESOURCE
from zerotune.errors import ClusterError

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
DEFAULT_NAME = "zerotune"
DEFAULT_NAMESPACE = "zerotune"
JSON_PATCH = "application/json-patch+json"


def connect(*, kubeconfig: str | None = None, context: str | None = None):
    """An ApiClient from a kubeconfig (default ~/.kube/config), else the in-cluster account."""
    from kubernetes import client, config

    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except config.ConfigException as exc:
        if kubeconfig is None and context is None:
            try:  # running inside a pod (e.g. the head): use its service account
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                return client.ApiClient(configuration)
            except config.ConfigException:
                pass
        raise ClusterError(
            f"no usable Kubernetes configuration: {exc}",
            field="kubeconfig",
            fix="pass --kubeconfig FILE / --context NAME, or set KUBECONFIG",
        ) from None


def _call(what: str, fn: Callable[[], Any], *, name: str, namespace: str) -> Any:
    """Run one API call; turn HTTP and connection failures into ClusterError with a fix."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn()
    except ApiException as exc:
        status = exc.status
        if status == 404:
            raise ClusterError(
                f"RayCluster {name!r} not found in namespace {namespace!r} ({what})",
                fix="apply it first (`kubectl apply -k k8s/overlays/<overlay>`) or pass --name/--namespace",
            ) from None
        if status in (401, 403):
            raise ClusterError(
                f"the Kubernetes API refused to {what} (HTTP {status})",
                fix=f"use a kubeconfig/context whose user may get/patch rayclusters and list pods in {namespace!r}",
            ) from None
        if status in (409, 422):
            raise ClusterError(
                f"the RayCluster changed while trying to {what} (HTTP {status}): {_reason(exc)}",
                fix="the autoscaler or someone else edited it; run the command again",
            ) from None
        raise ClusterError(f"could not {what}: HTTP {status} {_reason(exc)}") from None
    except HTTPError as exc:
        raise ClusterError(
            f"cannot reach the Kubernetes API server to {what}: {exc}",
            fix="check the kubeconfig's server address and that the cluster is up (`kubectl cluster-info`)",
        ) from None


def _reason(exc) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def get_raycluster(*, api, name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE) -> dict:
    from kubernetes import client

    objects = client.CustomObjectsApi(api)
    return _call(
        "get the RayCluster",
        lambda: objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
        name=name,
        namespace=namespace,
    )


def list_pods(*, api, name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE) -> list[dict]:
    """The cluster's pods as JSON dicts (KubeRay labels them ray.io/cluster=<name>)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    response = _call(
        "list the cluster's pods",
        lambda: core.list_namespaced_pod(namespace, label_selector=f"ray.io/cluster={name}", _preload_content=False),
        name=name,
        namespace=namespace,
    )
    return json.loads(response.data).get("items", [])


def _pod_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _pod_gpus(pod: dict) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        total += int(limits.get(GPU_RESOURCE, 0) or 0)
    return total


def summarize(*, raycluster: dict, pods: list[dict]) -> dict:
    """Pure: what `zerotune cluster status` shows, from the RayCluster and its pods."""
    meta, spec = raycluster.get("metadata") or {}, raycluster.get("spec") or {}
    status = raycluster.get("status") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    by_type: dict[str, list[dict]] = {"head": [], "worker": []}
    for pod in pods:
        kind = ((pod.get("metadata") or {}).get("labels") or {}).get("ray.io/node-type")
        by_type.setdefault(kind, []).append(pod)
    heads = by_type["head"]
    groups = []
    for group in spec.get("workerGroupSpecs") or []:
        members = [
            p
            for p in by_type["worker"]
            if ((p.get("metadata") or {}).get("labels") or {}).get("ray.io/group") == group["groupName"]
        ]
        ready = [p for p in members if _pod_ready(p)]
        groups.append(
            {
                "group": group["groupName"],
                "desired": int(group.get("replicas", 0) or 0),
                "min": int(group.get("minReplicas", 0) or 0),
                "max": int(group.get("maxReplicas", 0) or 0),
                "ready": len(ready),
                "gpus_ready": sum(_pod_gpus(p) for p in ready),
            }
        )
    head_status = status.get("head") or {}
    service = head_status.get("serviceName") or f"{name}-head-svc"
    port = (status.get("endpoints") or {}).get("dashboard", "8265")
    return {
        "name": name,
        "namespace": namespace,
        "state": status.get("state") or "unknown",
        "ray_version": spec.get("rayVersion") or "unset",
        "autoscaling": bool(spec.get("enableInTreeAutoscaling")),
        "head_ready": any(_pod_ready(p) for p in heads),
        "head_pod": heads[0]["metadata"]["name"] if heads else None,
        "workers_desired": sum(g["desired"] for g in groups),
        "workers_ready": sum(g["ready"] for g in groups),
        "gpus_ready": sum(g["gpus_ready"] for g in groups),
        "groups": groups,
        # In-cluster address; from outside: `kubectl port-forward svc/<service> 8265:8265`.
        "dashboard": f"http://{service}.{namespace}.svc:{port}",
        "port_forward": f"kubectl -n {namespace} port-forward svc/{service} {port}:{port}",
    }


def cluster_status(*, api, name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE) -> dict:
    raycluster = get_raycluster(api=api, name=name, namespace=namespace)
    pods = list_pods(api=api, name=name, namespace=namespace)
    return summarize(raycluster=raycluster, pods=pods)


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


def scale_patch(*, index: int, group: dict, workers: int) -> list[dict]:
    """Pure: the JSON patch that sets one worker group's replicas.

    The `test` ops make the API server reject the patch (422) if the group moved to another
    index or the autoscaler changed replicas since we read it, instead of clobbering it.
    """
    base = f"/spec/workerGroupSpecs/{index}"
    ops: list[dict] = [{"op": "test", "path": f"{base}/groupName", "value": group["groupName"]}]
    if "replicas" in group:
        ops.append({"op": "test", "path": f"{base}/replicas", "value": group["replicas"]})
        ops.append({"op": "replace", "path": f"{base}/replicas", "value": workers})
    else:
        ops.append({"op": "add", "path": f"{base}/replicas", "value": workers})
    return ops


def scale_workers(
    *, api, workers: int, name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE, group: str | None = None
) -> dict:
    """Set a worker group's replicas within [minReplicas, maxReplicas]; refuse before patching."""
    from kubernetes import client

    if workers < 0:
        raise ClusterError(
            f"--workers must be >= 0, got {workers}", field="workers", fix="pass a count like --workers 2"
        )
    raycluster = get_raycluster(api=api, name=name, namespace=namespace)
    index, spec = _pick_group(raycluster, group)
    low, high = int(spec.get("minReplicas", 0) or 0), int(spec.get("maxReplicas", 0) or 0)
    if not low <= workers <= high:
        raise ClusterError(
            f"worker group {spec['groupName']!r} allows {low}..{high} replicas, asked for {workers}",
            field="workers",
            fix=f"pass --workers between {low} and {high}, or raise maxReplicas in your overlay and re-apply it",
        )
    before = spec.get("replicas")
    patch = scale_patch(index=index, group=spec, workers=workers)
    objects = client.CustomObjectsApi(api)
    _call(
        "patch the RayCluster's replicas",
        lambda: objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=JSON_PATCH
        ),
        name=name,
        namespace=namespace,
    )
    result = {
        "name": name,
        "namespace": namespace,
        "group": spec["groupName"],
        "from": before,
        "to": workers,
        "min": low,
        "max": high,
    }
    if (raycluster.get("spec") or {}).get("enableInTreeAutoscaling"):
        # The autoscaler owns replicas: idle workers above minReplicas go after its idle timeout.
        result["note"] = "autoscaling is on: idle workers above minReplicas are removed after the idle timeout"
    return result


def wait_ready(
    *,
    api,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    timeout_s: float = 600.0,
    poll_s: float = 5.0,
    workers: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Poll until the head is ready and `workers` (default: the desired count) workers are."""
    deadline = clock() + timeout_s
    while True:
        status = cluster_status(api=api, name=name, namespace=namespace)
        wanted = status["workers_desired"] if workers is None else workers
        if status["head_ready"] and status["workers_ready"] >= wanted:
            return status
        if clock() >= deadline:
            head = "ready" if status["head_ready"] else "not ready"
            raise ClusterError(
                f"RayCluster {name!r} not ready after {timeout_s:g}s: head {head}, "
                f"{status['workers_ready']}/{wanted} workers ready (state {status['state']})",
                fix=f"see `kubectl -n {namespace} get pods -l ray.io/cluster={name}` and "
                "`kubectl describe pod` for pending GPUs or image pulls; or pass a longer --timeout",
            )
        sleep(min(poll_s, max(0.0, deadline - clock())))
