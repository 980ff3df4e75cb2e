"""The sweep a submitted Ray Job runs: read from the job's entrypoint, then found in storage.

`zerotune job submit` starts `python -m sweeps sweep run CONFIG [key=value ...] [storage.path=...]`;
the config (relative to the uploaded directory, i.e. the current one here) and its overrides
give the sweep's name and storage path. The cluster is asked for the entrypoint only.
"""

from __future__ import annotations

import shlex

from zerotune.errors import ClusterError, StorageError


def parse_entrypoint(entrypoint: str) -> tuple[str | None, list[str]]:
    """(config path, overrides) of a `sweep run` entrypoint; ClusterError when it is not one."""
    words = shlex.split(entrypoint)
    try:
        at = next(i for i in range(len(words) - 1) if words[i] == "sweep" and words[i + 1] == "run")
    except StopIteration:
        raise ClusterError(
            f"the job does not run a sweep: {entrypoint!r}",
            field="--job-id",
            fix="pass the id of a job started by `zerotune job submit`",
        ) from None
    config, overrides, args = None, [], words[at + 2 :]
    i = 0
    while i < len(args):
        word = args[i]
        if word in ("--name", "--storage") and i + 1 < len(args):
            overrides.append(f"{'name' if word == '--name' else 'storage.path'}={args[i + 1]}")
            i += 2
            continue
        if word.startswith("--"):
            i += 2 if word in ("--address", "--format") else 1
            continue
        if "=" in word:
            overrides.append(word)
        elif config is None:
            config = word
        i += 1
    return config, overrides


def job_sweep_uri(*, address: str, job_id: str, token: str | None, storage: str | None = None) -> str:
    """The storage URI of the sweep job `job_id` runs; `storage` replaces its storage.path
    (how this machine reaches it)."""
    from pathlib import Path

    from cluster import jobs
    from sweeps.config import load_config, parse_overrides
    from sweeps.layout import storage_root
    from sweeps.results.status import locate_sweep

    status = jobs.job_status(address=address, job_id=job_id, token=token)
    config, overrides = parse_entrypoint(status["entrypoint"] or "")
    if config is not None and Path(config).is_file():
        cfg = load_config(config, overrides)
        name, root = cfg.name, cfg.storage.path
    else:  # no local copy of the config: the overrides may still name the sweep
        tree = parse_overrides(overrides)
        name, root = tree.get("name"), (tree.get("storage") or {}).get("path")
        if name is None:
            raise StorageError(
                f"job {job_id} runs {config!r}, which is not in the current directory",
                field="config",
                fix=(
                    "run this from the directory the job was submitted from, "
                    "or pass the sweep's path: zerotune report PATH"
                ),
            )
    root = storage or root or "./results"
    if storage is None and "://" not in root:
        # A relative or local path is the job's view; shared storage (a URI or a mounted path)
        # is what a reader can reach.
        root = storage_root(root)
    try:
        return locate_sweep(name, storage=root)
    except StorageError:
        raise StorageError(
            f"job {job_id} ({status['status']}) writes sweep {name!r} under {root}, which is not readable here",
            field="storage.path",
            fix=(
                "pass --storage with where that storage is reachable from this machine "
                "(use a shared URI such as s3://... for storage.path)"
            ),
        ) from None
