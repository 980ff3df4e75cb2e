"""One Tune trial: ONE Ray Train worker group that fits every fold in turn.

Runs inside the Tune trial actor. Tune sees each epoch's report, with
`folds_done` and the running fold mean (`objective`) that schedulers prune on.
"""

from __future__ import annotations

import time

from zerotune.errors import TrainingError
from trainer.storage import join, write_json

from sweeps.config import SweepConfig
from sweeps.preflight.data import fit_spec
from sweeps.search.space import apply_params


def run_trial(params: dict, *, cfg: SweepConfig, sweep_uri: str, encoded, folds: list) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from sweeps.results.collect import fold_records
    from trainer.launch import build_trainer
    from trainer.loop import completed_report, read_oom

    trial_id = ray.tune.get_context().get_trial_id()
    trial_uri = join(sweep_uri, "trials", trial_id)
    train, deepspeed, model = apply_params(cfg, params)
    spec = fit_spec(cfg, train=train, deepspeed=deepspeed, model=model, records_uri=join(trial_uri, "records"))
    records = fold_records(trial_uri)
    if finished_before(records, folds):
        # The trial ended after Tune last saved the sweep's state (the driver died, or the storage broke), so Tune
        # resumes it as unfinished. Its fold records hold the result: report that, without a worker group.
        ray.tune.report(completed_report(records, spec, len(folds)))
        return
    write_json(join(trial_uri, "params.json"), {"params": params, "started": time.time()})
    trainer = build_trainer(
        spec=spec, encoded=encoded, folds=folds, scaling=cfg.scaling,
        name="fit", storage_path=trial_uri, callbacks=[TuneReportCallback()],
    )
    result = trainer.fit()
    oom = read_oom(spec.records_uri)
    if oom is not None:
        raise TrainingError(f"trial {trial_id} ran out of memory at fold {oom['fold']} epoch {oom['epoch']} step {oom['step']}: {oom['error']}")
    if result.error is not None:
        raise TrainingError(f"trial {trial_id} failed: {classify(result.error)}: {str(result.error)[:2000]}")
    diverged = [r for r in fold_records(trial_uri) if r.get("diverged")]
    if diverged:
        raise TrainingError(f"trial {trial_id} diverged: non-finite loss at {diverged[0]['diverged']}")


def finished_before(records: list[dict], folds: list) -> bool:
    """Every fold recorded, none diverged, each on the validation rows this sweep assigns it."""
    from trainer.loop import rows_sha

    if len(records) != len(folds) or any(r.get("diverged") for r in records):
        return False
    return all(
        r["fold"] == i and r["val_sha"] == rows_sha(val)
        for i, (r, (_, val)) in enumerate(zip(records, folds))
    )


def classify(error: BaseException) -> str:
    text = f"{type(error).__name__} {error}".lower()
    if any(k in text for k in ("out of memory", "outofmemory", "memoryerror", "can't allocate memory", "ran out of memory")):
        return "out-of-memory"
    if "diverged: non-finite loss" in text:  # our own message; tracebacks also show code that says "diverged"
        return "diverged"
    return "error"
