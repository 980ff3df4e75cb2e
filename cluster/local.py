"""Connect to Ray: an address, the cluster a `ray job submit` entrypoint runs in, or an embedded local one."""

from __future__ import annotations

import logging
import os

from zerotune.errors import ClusterError

log = logging.getLogger(__name__)
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # Ray Train V2's switch (ray.train.v2 constants)


def connect(
    *, address: str | None = None, num_cpus: int | None = None, quiet: bool = True, worker_logs: bool = True
) -> dict:
    """Start or join Ray once per process; returns the cluster's total resources.

    `worker_logs=False` keeps workers' output off this process's stdout (for `--format json`).
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    kwargs = {"log_to_driver": worker_logs, "logging_level": logging.WARNING if quiet else logging.INFO}
    env_address = os.environ.get("RAY_ADDRESS")
    if address or env_address:
        probe(address or env_address)
    try:
        if address or env_address:
            ray.init(address=address or env_address, **kwargs)
        else:
            # "local" never joins a cluster that some other `ray start` left on this machine.
            # One extra logical CPU holds the sweep's trial drivers, which only wait on their workers.
            port = _free_port()
            ray.init(
                address="local",
                num_cpus=num_cpus or (os.cpu_count() or 1) + 1,
                dashboard_port=port,
                runtime_env={"env_vars": _local_env(port)},
                **kwargs,
            )
    except ConnectionError as exc:
        raise ClusterError(
            f"cannot reach Ray at {address or env_address}: {exc}",
            field="--address",
            fix="start the cluster (`ray start --head`) or pass the right address; omit --address for a local run",
        ) from None
    except Exception as exc:  # Ray raises plain RuntimeError/PermissionError for auth problems
        text = str(exc)
        if "auth" in text.lower() or "token" in text.lower():
            raise ClusterError(
                f"Ray refused the connection: {text.splitlines()[0]}",
                field="--address",
                fix="export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the head's ~/.ray/auth_token>",
            ) from None
        raise
    return ray.cluster_resources()


def probe(address: str, *, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not after Ray's own minute of retries, when nothing listens at `address`."""
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.hostname is None or parts.port is None:
        return  # let Ray interpret it
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach Ray at {address}: {exc.strerror or exc}",
            field="--address",
            fix=(
                "check the head's address and port (GCS port, default 6379; ray:// client port 10001) "
                "and that it is running"
            ),
        ) from None


def _local_env(dashboard_port: int) -> dict[str, str]:
    """Environment of the embedded Ray's workers (Ray Train's controllers among them)."""
    return {
        # Ray Train's placement-group cleaner finds "its" cluster by auto-detection, which fails when a second Ray
        # runs on this machine; naming the API server keeps cleanup working.
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}",
        # Ray Train's preemption watcher (an actor per fit, polling for drained nodes) has nothing to watch on one
        # machine that no autoscaler drains, and its process start costs every fit seconds of CPU here
        # (benchmarks/RESULTS.md, section 2a). Clusters keep it; a user's own setting wins.
        PREEMPTION_WATCHER: os.environ.get(PREEMPTION_WATCHER, "0"),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_resources(*, gpus: bool = False) -> dict:
    """What the embedded local Ray would have, without starting it (as `connect()` sizes it); `memory`: what this
    machine has free now (the host memory ZeRO offload would use)."""
    import psutil

    out = {"CPU": float((os.cpu_count() or 1) + 1), "memory": float(psutil.virtual_memory().available)}
    if gpus:
        # The count `ray.init` would detect (NVML, honouring CUDA_VISIBLE_DEVICES), without importing torch.
        from ray._private.accelerators import get_accelerator_manager_for_resource

        out["GPU"] = float(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())
    return out


def free_resources() -> dict:
    import ray

    return ray.available_resources()


def cluster_capacity():
    """The connected cluster's ceiling (cluster.capacity): the autoscaler's node types, else the RayCluster where the
    Kubernetes API lets this pod read it, else the live nodes (unbounded where an autoscaler runs whose node types
    cannot be read: KubeRay's sidecar, seen in the GCS)."""
    from cluster.capacity import ceiling

    return ceiling(raycluster=_raycluster if os.environ.get("KUBERNETES_SERVICE_HOST") else None)


def _raycluster() -> dict:
    """This pod's RayCluster (KubeRay names it in RAY_CLUSTER_NAME; the namespace is the service account's)."""
    from cluster.kube import DEFAULT_NAME, DEFAULT_NAMESPACE, connect, get_raycluster

    namespace = DEFAULT_NAMESPACE
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            namespace = f.read().strip() or namespace
    except OSError:
        pass
    return get_raycluster(api=connect(), name=os.environ.get("RAY_CLUSTER_NAME", DEFAULT_NAME), namespace=namespace)
