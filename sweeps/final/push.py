"""`zerotune push`: a sweep's latest refit (the exported model, its card at the root, so the hub shows it) and the
sweep's report, uploaded to a Hugging Face model repository in one commit with huggingface_hub.

The repository holds the model directory's files at its root (it loads with `from_pretrained("ORG/MODEL")`), the
report under `report/`, and the refit's metrics and environment record under `zerotune/`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zerotune.errors import ConfigError, ZerotuneError

REPORT_PREFIX, RECORDS_PREFIX = "report", "zerotune"
REPORT_FORMATS = ("html", "md")
LOGIN_FIX = "log in with `hf auth login`, or set HF_TOKEN to a token with write access"


@dataclass(frozen=True)
class Upload:
    """One file of the commit: where it lands in the repository and the local file it comes from."""

    path_in_repo: str
    local: str


def upload_plan(model_dir: str, *, report_dir: str | None, records: dict[str, str]) -> list[Upload]:
    """The commit's files, sorted by path: the model directory's (recursively) at the root, the report's under
    report/, and `records` (name -> local file: metrics, environment) under zerotune/."""
    plan = [Upload(_posix(p.relative_to(model_dir)), str(p)) for p in _files(Path(model_dir))]
    if report_dir:
        report = _files(Path(report_dir))
        plan += [Upload(f"{REPORT_PREFIX}/{_posix(p.relative_to(report_dir))}", str(p)) for p in report]
    plan += [Upload(f"{RECORDS_PREFIX}/{name}", local) for name, local in sorted(records.items())]
    return sorted(plan, key=lambda u: u.path_in_repo)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _posix(path: Path) -> str:
    return path.as_posix()


def push(
    sweep: str,
    *,
    repo: str,
    storage: str = "./results",
    private: bool = False,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> dict:
    """Create `repo` (exist_ok) and commit the sweep's latest refit model and report to it (`revision`: a branch,
    created when missing; default main). `endpoint`: the hub's URL (default HF_ENDPOINT, else huggingface.co).
    Returns the repository URL, the commit and the files sent."""
    from contextlib import ExitStack

    from sweeps.layout import SweepDir
    from sweeps.results.status import locate_sweep
    from trainer.storage import exists, local_copy

    _check_repo_id(repo)
    api = _api(endpoint=endpoint, token=token)
    sd = SweepDir(locate_sweep(sweep, storage=storage))
    run = sd.latest_refit()
    if run is None:
        raise ConfigError([("NAME", f"the sweep at {sd.uri} has no completed refit", f"run `zerotune refit {sweep}`")])
    report_uri = _report(sd)
    with ExitStack() as stack:
        model = stack.enter_context(local_copy(run.model, field="NAME"))
        report = stack.enter_context(local_copy(report_uri, field="NAME"))
        records = {
            name: stack.enter_context(local_copy(uri, field="NAME"))
            for name, uri in (("metrics.json", run.metrics), ("environment.json", run.environment))
            if exists(uri)
        }
        plan = upload_plan(model, report_dir=report, records=records)
        return _send(api, plan, repo=repo, private=private, revision=revision, message=_message(sd, run))


def _report(sd) -> str:
    """The sweep's report directory, built (html and md) when it holds none: the upload shows the sweep that chose
    the model."""
    from sweeps.report.facts import build_report
    from trainer.storage import exists, join

    if not all(exists(join(sd.report, f"report.{fmt}")) for fmt in REPORT_FORMATS):
        build_report(sd.uri, formats=REPORT_FORMATS)
    return sd.report


def _message(sd, run) -> str:
    return f"zerotune: refit {Path(run.uri.rstrip('/')).name} of sweep {Path(sd.uri.rstrip('/')).name}"


def _check_repo_id(repo: str) -> None:
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise ConfigError([("--repo", f"{repo!r} is not ORG/MODEL", "name the repository as ORG/MODEL")])


def _api(*, endpoint: str | None, token: str | None):
    """An HfApi for `endpoint`, refused up front when offline mode is on or no token is found."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.is_offline_mode():
        raise ZerotuneError(
            "HF_HUB_OFFLINE is set: huggingface_hub sends no request, so nothing can be pushed",
            field="HF_HUB_OFFLINE",
            fix="run where the hub is reachable, with HF_HUB_OFFLINE unset or 0 (`HF_HUB_OFFLINE=0 zerotune push ...`)",
        )
    token = token or get_token()
    if not token:
        raise ZerotuneError("no Hugging Face token found", field="HF_TOKEN", fix=LOGIN_FIX)
    return HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)


def _send(api, plan: list[Upload], *, repo: str, private: bool, revision: str | None, message: str) -> dict:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo, branch=revision, exist_ok=True)
        commit = api.create_commit(
            repo,
            operations=[CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=u.local) for u in plan],
            commit_message=message,
            revision=revision,
        )
    except HfHubHTTPError as exc:
        raise _http_error(exc, repo=repo, endpoint=api.endpoint) from None
    except ValueError as exc:  # the hub's check of the card's metadata (huggingface_hub raises ValueError)
        raise ZerotuneError(
            f"the hub refused the model card's metadata: {exc}", field="README.md", fix="fix the card, or re-export"
        ) from None
    except Exception as exc:
        # No answer at all (refused, DNS, timeout): the HTTP client's TransportError, whichever httpx package
        # huggingface_hub's release uses (httpx, httpx2), so it is told by name rather than imported.
        if not any(cls.__name__ == "TransportError" for cls in type(exc).__mro__):
            raise
        raise ZerotuneError(
            f"cannot reach the hub at {api.endpoint}: {type(exc).__name__}: {exc}",
            field="HF_ENDPOINT",
            fix="check the network, or HF_ENDPOINT if you use a mirror",
        ) from None
    return {
        "repo": repo,
        "url": str(url),
        "revision": revision or "main",
        "commit": commit.oid,
        "commit_url": commit.commit_url,
        "private": private,
        "files": [u.path_in_repo for u in plan],
    }


def _http_error(exc, *, repo: str, endpoint: str) -> ZerotuneError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    if status in (401, 403):
        fix = f"{LOGIN_FIX} (and write access to {repo.split('/')[0]})"
    elif status == 404:
        fix = f"check that the organisation {repo.split('/')[0]!r} exists on {endpoint}"
    else:
        fix = "retry; if it persists, check the hub's status"
    return ZerotuneError(f"the hub at {endpoint} refused the push (HTTP {status}): {first}", field="--repo", fix=fix)
