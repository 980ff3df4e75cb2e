"""Pre-flight: every check a sweep passes before it takes a cluster resource or writes a file.

`sweep run` and `sweep validate` both call `preflight`; validate then only reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sweeps.config import SweepConfig
from sweeps.layout import check_writable, sweep_uri
from sweeps.preflight.checks import check_fit
from sweeps.preflight.data import prepare_sweep
from sweeps.search.folds import Folds
from trainer.data import Examples


@dataclass(frozen=True)
class Preflight:
    examples: Examples
    folds: Folds
    resources: dict | None
    checks: list[str]  # what passed, for people


def preflight(cfg: SweepConfig, *, resources: Callable[[], dict | None]) -> Preflight:
    """Data, folds, model and batch checks, then `resources()` (called only once the data passed) against the fit."""
    from trainer.model import locate

    examples, folds = prepare_sweep(cfg)
    locate(cfg.model)
    have = resources()
    check_fit(cfg, resources=have, n_train=min(len(t) for t, _ in folds.folds))
    checks = [
        f"config: {cfg.task}, metric {cfg.metric} ({cfg.mode})",
        f"data: {len(examples)} rows"
        + (f", {len(examples.label_names)} classes" if examples.label_names else "")
        + "".join(f"; dropped {n} ({why})" for why, n in examples.dropped.items()),
        f"folds: {cfg.folds.k} x {folds.strategy}, {len(folds.test)} test rows held out",
        f"batches fit {cfg.scaling.num_workers} workers",
    ]
    if have is not None:
        checks.append(f"cluster has {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs")
    return Preflight(examples=examples, folds=folds, resources=have, checks=checks)


def validate(cfg: SweepConfig, *, address: str | None = None) -> dict:
    """`zerotune sweep validate`: the pre-flight of `sweep run`, plus a storage probe that leaves nothing behind."""
    from cluster.local import connect, local_resources

    # With no address, `sweep run` starts an embedded Ray sized to this machine: check against that.
    result = preflight(
        cfg, resources=lambda: connect(address=address) if address else local_resources(gpus=cfg.scaling.use_gpu)
    )
    uri = sweep_uri(cfg)
    check_writable(uri, keep=False)
    return {"ok": True, "checks": [*result.checks, f"storage writable: {uri}"]}
