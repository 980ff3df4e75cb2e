"""Pre-flight: every check a sweep passes before it takes a cluster resource or writes a file.

`sweep run` and `sweep validate` both call `preflight`; validate then only reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cluster.capacity import Capacity
from sweeps.config import SweepConfig
from sweeps.layout import check_writable, sweep_uri
from sweeps.preflight.checks import check_fit, describe_resources
from sweeps.preflight.data import prepare_sweep
from sweeps.preflight.model import check_model
from sweeps.search.folds import Folds
from trainer.data import Examples


@dataclass(frozen=True)
class Preflight:
    examples: Examples
    folds: Folds
    resources: dict | Capacity | None
    checks: list[str]  # what passed, for people


def preflight(cfg: SweepConfig, *, resources: Callable[[], dict | Capacity | None]) -> Preflight:
    """Data, folds and model (its tokenizer and config read, no weights), then `resources()` (called only once those
    passed) against the fit."""
    examples, folds = prepare_sweep(cfg)
    check_model(cfg)
    have = resources()
    check_fit(cfg, resources=have, n_train=min(len(t) for t, _ in folds.folds), model=False)
    checks = [
        f"config: {cfg.task}, metric {cfg.metric} ({cfg.mode})",
        f"data: {len(examples)} rows"
        + (f", {len(examples.label_names)} classes" if examples.label_names else "")
        + "".join(f"; dropped {n} ({why})" for why, n in examples.dropped.items()),
        f"folds: {cfg.folds.k} x {folds.strategy}, {len(folds.test)} test rows held out",
        f"model: tokenizer and config of {cfg.model.path} read, max_length {cfg.model.max_length} fits",
        f"batches fit {cfg.scaling.num_workers} workers",
    ]
    if have is not None:
        checks.append(describe_resources(have))
    return Preflight(examples=examples, folds=folds, resources=have, checks=checks)


def validate(cfg: SweepConfig, *, address: str | None = None) -> dict:
    """`zerotune sweep validate`: the pre-flight of `sweep run`, plus a storage probe that leaves nothing behind."""
    from cluster.local import local_resources

    # With no address, `sweep run` starts an embedded Ray sized to this machine: check against that. With one, against
    # the cluster's ceiling (cluster.capacity), not only the nodes up now.
    result = preflight(
        cfg,
        resources=lambda: _ceiling(address) if address else local_resources(gpus=cfg.scaling.use_gpu),
    )
    uri = sweep_uri(cfg)
    _probe_leaving_nothing(uri)
    return {"ok": True, "checks": [*result.checks, f"storage writable: {uri}"]}


def _ceiling(address: str) -> Capacity:
    from cluster.local import cluster_capacity, connect

    connect(address=address)
    return cluster_capacity()


def _probe_leaving_nothing(uri: str) -> None:
    """The storage probe of `sweep run`, minus what it leaves: on a local disk the probe's parent directories are
    created, so the ones that did not exist before are removed again (only while empty)."""
    import os

    local = uri.removeprefix("file://")
    if "://" in local:
        check_writable(uri, keep=False)  # object stores have no directories to leave behind
        return
    path = os.path.abspath(os.path.expanduser(local))
    missing = []
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    try:
        check_writable(uri, keep=False)
    finally:
        for directory in missing:  # deepest first; the sweep directory itself is gone already
            if os.path.isdir(directory):
                try:
                    os.rmdir(directory)
                except OSError:
                    break  # not empty: someone else writes there now
