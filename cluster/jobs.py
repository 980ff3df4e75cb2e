"""Ray Jobs on a remote cluster: submit a sweep, read its status and logs.

The auth token goes into the `Authorization` header of the JobSubmissionClient and nowhere
else: not into the runtime_env, metadata, messages or logs. Passing it explicitly (rather
than via RAY_AUTH_MODE in this process) works whatever this process's Ray config is.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from zerotune.errors import ClusterError

log = logging.getLogger(__name__)
DEFAULT_TOKEN_FILE = "~/.ray/auth_token"
# Ray's job client lets these override the address it is given (ray.dashboard.utils.get_address_for_submission_client).
ADDRESS_OVERRIDES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
# Never uploaded as the job's working_dir: environments, local results, VCS data.
WORKING_DIR_EXCLUDES = (".venv", "results", ".git", "__pycache__", "*.egg-info")
# How to reach the head's dashboard (jobs, State API) from outside a KubeRay cluster.
PORT_FORWARD = "kubectl -n zerotune port-forward svc/zerotune-head-svc 8265:8265"
DASHBOARD_FIX = f"check --address (http://HOST:8265); for KubeRay run `{PORT_FORWARD}` and use http://127.0.0.1:8265"
TOKEN_FIX = (
    "export RAY_AUTH_TOKEN=<token> (or put it in ~/.ray/auth_token or pass --token-file FILE); "
    "on KubeRay: export RAY_AUTH_TOKEN=$(kubectl -n zerotune get secret zerotune-ray-auth "
    "-o jsonpath='{.data.auth_token}' | base64 -d)"
)


def resolve_token(*, token_file: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The token to send: --token-file, else RAY_AUTH_TOKEN, else RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token.

    None when there is none (the head may not use auth; if it does, the first request says so).
    """
    env = os.environ if env is None else env
    if token_file is not None:
        return _read_token(Path(token_file).expanduser(), field="token-file", required=True)
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return _well_formed(env["RAY_AUTH_TOKEN"].strip(), field="RAY_AUTH_TOKEN")
    if env.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token(Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser(), field="RAY_AUTH_TOKEN_PATH", required=True)
    return _read_token(Path(DEFAULT_TOKEN_FILE).expanduser(), field="token-file", required=False)


def _well_formed(token: str, *, field: str) -> str:
    """A token is one printable word. Anything else would make the HTTP client fail with an error that quotes
    the header, token included: refuse it here, without showing it."""
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ClusterError(
            "the auth token holds whitespace or control characters (a file with more than one line?)",
            field=field,
            fix="put the token alone on one line (the head's ~/.ray/auth_token as it is)",
        )
    return token


def _read_token(path: Path, *, field: str, required: bool) -> str | None:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if not required:
            return None
        raise ClusterError(f"token file {path} does not exist", field=field, fix=TOKEN_FIX) from None
    except OSError as exc:
        raise ClusterError(f"cannot read token file {path}: {exc.strerror}", field=field, fix=TOKEN_FIX) from None
    if not token and required:
        raise ClusterError(f"token file {path} is empty", field=field, fix=TOKEN_FIX)
    return _well_formed(token, field=field) if token else None


def _client(*, address: str, token: str | None):
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    if token:
        _warn_if_cleartext(address)
    with _only(address):
        return _guard(
            lambda: JobSubmissionClient(address, headers=headers), address=address, what="connect", token=token
        )


@contextmanager
def _only(address: str) -> Iterator[None]:
    """The explicit address wins: while the client resolves it, Ray's overriding variables are set aside (a
    token must never go to a host the user did not name); a different value is reported."""
    saved = {name: os.environ.pop(name) for name in ADDRESS_OVERRIDES if name in os.environ}
    for name, value in saved.items():
        if value.rstrip("/") != address.rstrip("/"):
            log.warning("%s=%s is ignored: --address %s is where the job commands go", name, value, address)
    try:
        yield
    finally:
        os.environ.update(saved)


def _warn_if_cleartext(address: str) -> None:
    parts = urlsplit(address if "://" in address else f"http://{address}")
    host = parts.hostname or ""
    if parts.scheme == "http" and not (host in ("localhost", "::1") or host.startswith("127.")):
        log.warning(
            "the auth token travels unencrypted to %s over plain http: use https, or a port-forward or tunnel", host
        )


def _guard(fn: Callable, *, address: str, what: str, token: str | None = None):
    """Map Ray's client errors to ClusterError; the token never appears in a message (it is scrubbed)."""
    from ray.exceptions import AuthenticationError

    try:
        return fn()
    except AuthenticationError as exc:
        refused = "rejected the token" if "failed" in str(exc).splitlines()[0].lower() else "requires a token"
        raise ClusterError(f"the Ray cluster at {address} {refused} ({what})", field="token", fix=TOKEN_FIX) from None
    except ConnectionError:
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address} ({what})",
            field="address",
            fix=DASHBOARD_FIX,
        ) from None
    except (RuntimeError, ValueError) as exc:
        text = str(exc).replace(token, "<token>") if token else str(exc)
        raise ClusterError(f"Ray refused to {what}: {text}", field="address") from None


def sweep_entrypoint(*, config: str, overrides: tuple[str, ...] | list[str] = (), storage: str | None = None) -> str:
    """`python -m sweeps sweep run CONFIG [overrides] [storage.path=...]` as one shell-safe line."""
    args = ["python", "-m", "sweeps", "sweep", "run", config, *overrides]
    if storage:
        args.append(f"storage.path={storage}")
    return shlex.join(args)


def submit(
    *,
    address: str,
    entrypoint: str,
    token: str | None,
    working_dir: str | os.PathLike | None = None,
    excludes: tuple[str, ...] = WORKING_DIR_EXCLUDES,
    submission_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> str:
    """Upload `working_dir` (default: the current directory) and start `entrypoint`; the job id."""
    working_dir = Path(working_dir or Path.cwd()).resolve()
    client = _client(address=address, token=token)
    runtime_env = {"working_dir": str(working_dir), "excludes": list(excludes)}
    return _guard(
        lambda: client.submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id, metadata=metadata
        ),
        address=address,
        what="submit the job",
        token=token,
    )


def job_status(*, address: str, job_id: str, token: str | None) -> dict:
    client = _client(address=address, token=token)
    info = _guard(lambda: client.get_job_info(job_id), address=address, what=f"get job {job_id}", token=token)
    return {
        "job_id": job_id,
        "status": str(getattr(info.status, "value", info.status)),
        "message": info.message or "",
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }


def job_logs(*, address: str, job_id: str, token: str | None) -> str:
    client = _client(address=address, token=token)
    return _guard(
        lambda: client.get_job_logs(job_id), address=address, what=f"get the logs of job {job_id}", token=token
    )


def follow_logs(*, address: str, job_id: str, token: str | None, write: Callable[[str], None]) -> None:
    """Stream a job's logs to `write` until the job ends (the Jobs API's websocket tail)."""
    import asyncio

    client = _client(address=address, token=token)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    _guard(lambda: asyncio.run(tail()), address=address, what=f"follow the logs of job {job_id}", token=token)


def wait_for_job(
    *, address: str, job_id: str, token: str | None, timeout_s: float = 600.0, poll_s: float = 1.0
) -> dict:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED; ClusterError on timeout."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        status = job_status(address=address, job_id=job_id, token=token)
        if status["status"] in {"SUCCEEDED", "FAILED", "STOPPED"}:
            return status
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"job {job_id} still {status['status']} after {timeout_s:g}s",
                fix=f"follow it with `zerotune job logs {job_id} --address {address} --follow`",
            )
        time.sleep(poll_s)
