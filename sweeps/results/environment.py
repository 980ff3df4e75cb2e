"""Environment records (zerotune.environment) under a sweep: written when a sweep starts and when a fit exports, read
back by `zerotune env NAME`, the report and the model card."""

from __future__ import annotations

from sweeps.layout import FitDir, SweepDir
from trainer.storage import exists, join, read_json, write_json
from zerotune.environment import record, with_worker


def write_sweep_record(sweep: SweepDir, config: dict) -> dict:
    """The record of the run starting (or resuming) `sweep` with the effective `config`."""
    rec = record(kind="sweep", config=config)
    write_json(sweep.environment, rec)
    return rec


def write_fit_record(run: FitDir, *, kind: str, config: dict, model_uri: str | None) -> dict:
    """The record of one fit that exported to `model_uri` (refit, train): the driver's, with the runtime its training
    worker recorded in the export (the GPUs that trained are theirs)."""
    from trainer.export import META

    meta_uri = join(model_uri, META) if model_uri else None
    worker = read_json(meta_uri).get("environment") if meta_uri and exists(meta_uri) else None
    rec = with_worker(record(kind=kind, config=config), worker)
    write_json(run.environment, rec)
    return rec


def stored_records(sweep: SweepDir) -> dict[str, dict]:
    """The sweep's records by what wrote them: "sweep", and "refit" (its latest completed refit) where present."""
    out = {}
    if exists(sweep.environment):
        out["sweep"] = read_json(sweep.environment)
    run = sweep.latest_refit()
    if run is not None and exists(run.environment):
        out["refit"] = read_json(run.environment)
    return out
