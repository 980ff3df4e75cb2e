"""`zerotune sweep validate`: every pre-flight check of a sweep without taking cluster resources."""

from __future__ import annotations

from sweeps.config import SweepConfig
from sweeps.preflight.checks import check_fit
from sweeps.search.run import check_writable, prepare_sweep, sweep_uri


def validate(cfg: SweepConfig, *, address: str | None = None) -> dict:
    examples, folds = prepare_sweep(cfg)
    from cluster.local import connect, local_resources

    # With no address, `sweep run` starts an embedded Ray sized to this machine: check against that.
    resources = connect(address=address) if address else local_resources(gpus=cfg.scaling.use_gpu)
    check_fit(cfg, resources=resources, n_train=min(len(t) for t, _ in folds.folds))
    from trainer.model import locate

    locate(cfg.model)
    uri = sweep_uri(cfg)
    check_writable(uri, keep=False)
    checks = [
        f"config: {cfg.task}, metric {cfg.metric} ({cfg.mode})",
        f"data: {len(examples)} rows" + (f", {len(examples.label_names)} classes" if examples.label_names else "") + "".join(f"; dropped {n} ({why})" for why, n in examples.dropped.items()),
        f"folds: {cfg.folds.k} x {folds.strategy}, {len(folds.test)} test rows held out",
        f"batches fit {cfg.scaling.num_workers} workers",
        f"storage writable: {uri}",
    ]
    if address:
        checks.append(f"cluster has {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    return {"ok": True, "checks": checks}
