"""Connect to Ray: an address, the cluster a `ray job submit` entrypoint runs in, or an embedded local one."""

from __future__ import annotations

import logging
import os

from trainer.errors import ClusterError

log = logging.getLogger(__name__)


def connect(*, address: str | None = None, num_cpus: int | None = None, quiet: bool = True, worker_logs: bool = True) -> dict:
    """Start or join Ray once per process; returns the cluster's total resources.

    `worker_logs=False` keeps workers' output off this process's stdout (for `--format json`).
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    kwargs = {"log_to_driver": worker_logs, "logging_level": logging.WARNING if quiet else logging.INFO}
    env_address = os.environ.get("RAY_ADDRESS")
    try:
        if address or env_address:
            ray.init(address=address or env_address, **kwargs)
        else:
            # "local" never joins a cluster that some other `ray start` left on this machine.
            # One extra logical CPU holds the sweep's trial drivers, which only wait on their workers.
            port = _free_port()
            ray.init(
                address="local", num_cpus=num_cpus or (os.cpu_count() or 1) + 1, dashboard_port=port,
                # Ray Train's placement-group cleaner finds "its" cluster by auto-detection, which fails
                # when a second Ray runs on this machine; naming the API server keeps cleanup working.
                runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_resources() -> dict:
    import ray

    return ray.available_resources()
