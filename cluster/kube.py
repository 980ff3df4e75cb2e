"""The KubeRay RayCluster through the kubernetes Python client: status, scale, wait.

Every function takes an `ApiClient` (from `connect`) so tests can point it at a local
HTTP server. Objects are handled as plain dicts (the JSON the API server sends), which
is what custom objects are anyway and keeps pods and RayClusters alike.

Scaling (which fields to patch, with or without the autoscaler) is in cluster/scale.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from zerotune.errors import ClusterError

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
DEFAULT_NAME = "zerotune"  # k8s/base's RayCluster
DEFAULT_NAMESPACE = "zerotune"  # and its namespace
GPU_RESOURCE = "nvidia.com/gpu"
JSON_PATCH = "application/json-patch+json"
DEFAULT_IDLE_TIMEOUT_S = 60  # Ray's, when autoscalerOptions.idleTimeoutSeconds is unset
# What the API server answers when a JSON patch cannot apply (a `test` op failed or a path is gone):
# 422 with this generic message and no causes. Schema and admission errors name their fields instead.
PATCH_NOT_APPLIED = "the server rejected our request due to an error in our request"


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
        status, body = exc.status, _body(exc)
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
        causes = (body.get("details") or {}).get("causes") or []
        if status == 409 or (status == 422 and not causes and body.get("message") == PATCH_NOT_APPLIED):
            raise ClusterError(
                f"the RayCluster changed while trying to {what} (HTTP {status})",
                fix="the autoscaler or someone else edited it; run the command again",
            ) from None
        if status == 422:
            fields = "; ".join(f"{c.get('field', '?')}: {c.get('message', '')}" for c in causes)
            raise ClusterError(
                f"the API server rejected the change ({what}): {body.get('message') or exc.reason}"
                + (f" [{fields}]" if fields else ""),
                fix="running again will not help: check that the KubeRay CRDs are v1.6.2 or newer "
                "(`kubectl get crd rayclusters.ray.io -o yaml`) and report this if they are",
            ) from None
        raise ClusterError(f"could not {what}: HTTP {status} {body.get('message') or exc.reason}") from None
    except HTTPError as exc:
        raise ClusterError(
            f"cannot reach the Kubernetes API server to {what}: {exc}",
            fix="check the kubeconfig's server address and that the cluster is up (`kubectl cluster-info`)",
        ) from None


def _body(exc) -> dict:
    try:
        body = json.loads(exc.body)
        return body if isinstance(body, dict) else {}
    except (TypeError, ValueError):
        return {}


def get_raycluster(*, api, name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE) -> dict:
    from kubernetes import client

    objects = client.CustomObjectsApi(api)
    return _call(
        "get the RayCluster",
        lambda: objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
        name=name,
        namespace=namespace,
    )


def patch_raycluster(ops: list[dict], *, api, what: str, name: str, namespace: str) -> dict:
    from kubernetes import client

    objects = client.CustomObjectsApi(api)
    return _call(
        what,
        lambda: objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, ops, _content_type=JSON_PATCH
        ),
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


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _pod_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or _meta(pod).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _pod_gpus(pod: dict) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        total += int(limits.get(GPU_RESOURCE, 0) or 0)
    return total


def desired_replicas(group: dict) -> int:
    """What the operator creates pods for: replicas clamped to [minReplicas, maxReplicas], times hosts."""
    low, high = int(group.get("minReplicas") or 0), group.get("maxReplicas")
    replicas = max(int(group.get("replicas") or 0), low)
    if high is not None:
        replicas = min(replicas, int(high))
    return replicas * max(1, int(group.get("numOfHosts") or 1))


def _state(status: dict) -> str:
    """The cluster's state from its conditions (KubeRay deprecated `status.state` for them)."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if not conditions:
        return "unknown (no status conditions: needs KubeRay v1.6.2 or newer)"
    if (conditions.get("RayClusterSuspended") or {}).get("status") == "True":
        return "suspended"
    failure = conditions.get("ReplicaFailure") or {}
    if failure.get("status") == "True":
        return f"replica failure: {failure.get('message') or failure.get('reason')}"
    provisioned = (conditions.get("RayClusterProvisioned") or {}).get("status") == "True"
    head = (conditions.get("HeadPodReady") or {}).get("status") == "True"
    return ("provisioned" if provisioned else "provisioning") + ("" if head else ", head not ready")


def summarize(*, raycluster: dict, pods: list[dict]) -> dict:
    """Pure: what `zerotune cluster status` shows, from the RayCluster and its pods."""
    meta, spec = _meta(raycluster), raycluster.get("spec") or {}
    status = raycluster.get("status") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    by_type: dict[str, list[dict]] = {"head": [], "worker": []}
    for pod in pods:
        by_type.setdefault((_meta(pod).get("labels") or {}).get("ray.io/node-type"), []).append(pod)
    heads = by_type["head"]
    groups = []
    for group in spec.get("workerGroupSpecs") or []:
        members = [
            p for p in by_type["worker"] if (_meta(p).get("labels") or {}).get("ray.io/group") == group["groupName"]
        ]
        named = set((group.get("scaleStrategy") or {}).get("workersToDelete") or [])
        leaving = [p for p in members if _meta(p).get("deletionTimestamp") or _meta(p)["name"] in named]
        ready = [p for p in members if _pod_ready(p) and p not in leaving]
        groups.append(
            {
                "group": group["groupName"],
                "desired": desired_replicas(group),
                "replicas": int(group.get("replicas") or 0),
                "min": int(group.get("minReplicas") or 0),
                "max": int(group.get("maxReplicas") or 0),
                "live": len(members) - len(leaving),
                "ready": len(ready),
                "leaving": sorted(_meta(p)["name"] for p in leaving),
                "gpus_ready": sum(_pod_gpus(p) for p in ready),
            }
        )
    service = (status.get("head") or {}).get("serviceName") or f"{name}-head-svc"
    port = (status.get("endpoints") or {}).get("dashboard", "8265")
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    return {
        "name": name,
        "namespace": namespace,
        "state": _state(status),
        "ray_version": spec.get("rayVersion") or "unset",
        "autoscaling": autoscaling,
        "idle_timeout_s": int((spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds") or DEFAULT_IDLE_TIMEOUT_S)
        if autoscaling
        else None,
        "head_ready": any(_pod_ready(p) for p in heads),
        "head_pod": _meta(heads[0])["name"] if heads else None,
        "workers_desired": sum(g["desired"] for g in groups),
        "workers_min": sum(g["min"] for g in groups),
        "workers_live": sum(g["live"] for g in groups),
        "workers_ready": sum(g["ready"] for g in groups),
        "workers_leaving": sum(len(g["leaving"]) for g in groups),
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


def _undoable(status: dict, workers: int | None) -> str | None:
    """Why waiting for `workers` would report a state the cluster will not keep, or None."""
    if workers is None:
        return None
    if workers > sum(g["max"] for g in status["groups"]):
        return f"the worker groups allow at most {sum(g['max'] for g in status['groups'])} workers"
    if status["autoscaling"] and workers > status["workers_min"]:
        return (
            f"autoscaling is on and minReplicas is {status['workers_min']}: the autoscaler removes idle workers above "
            f"it after {status['idle_timeout_s']} s, so {workers} ready workers would not stay"
        )
    if not status["autoscaling"] and workers != status["workers_desired"]:
        return f"the RayCluster asks for {status['workers_desired']} workers, not {workers}"
    return None


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
    """Poll until the head is ready and the workers are: the desired count (at least), or exactly `workers`,
    with no pod still leaving. Fails at once when the spec will not keep `workers` (see _undoable)."""
    deadline = clock() + timeout_s
    while True:
        status = cluster_status(api=api, name=name, namespace=namespace)
        why = _undoable(status, workers)
        if why:
            raise ClusterError(
                f"will not wait for {workers} workers: {why}",
                field="workers",
                fix=f"run `zerotune cluster scale --workers {workers}` first (it sets minReplicas when autoscaling)",
            )
        ready, live, leaving = status["workers_ready"], status["workers_live"], status["workers_leaving"]
        wanted = status["workers_desired"] if workers is None else workers
        done = ready >= wanted and not leaving and (workers is None or live == workers)
        if status["head_ready"] and done:
            return status
        if clock() >= deadline:
            head = "ready" if status["head_ready"] else "not ready"
            extra = f", {leaving} leaving" if leaving else ""
            if workers is not None and live > workers:
                idle_s = status["idle_timeout_s"]
                extra += f", {live - workers} above the target (busy workers leave once idle for {idle_s} s)"
            raise ClusterError(
                f"RayCluster {name!r} not ready after {timeout_s:g}s: head {head}, "
                f"{ready}/{wanted} workers ready{extra} ({status['state']})",
                fix=f"see `kubectl -n {namespace} get pods -l ray.io/cluster={name}` and "
                "`kubectl describe pod` for pending GPUs or image pulls; or pass a longer --timeout",
            )
        sleep(min(poll_s, max(0.0, deadline - clock())))
