"""One Tune trial: ONE Ray Train worker group that fits every fold in turn.

Runs inside the Tune trial actor. Tune sees each epoch's report (sweeps.search.objective), with
`folds_done` and the running fold mean (`objective`) that schedulers prune on.
"""

from __future__ import annotations

import time

from sweeps.config import SweepConfig
from sweeps.layout import Params, SweepDir
from sweeps.preflight.data import fit_spec
from sweeps.search.objective import completed_report, tune_metrics
from sweeps.search.space import apply_params
from trainer.outcome import classify
from trainer.records import FoldRecord, rows_sha
from zerotune.errors import TrainingError


def run_trial(params: dict, *, cfg: SweepConfig, sweep_uri: str, encoded, folds: list) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainer.launch import Fit, build_trainer

    trial_id = ray.tune.get_context().get_trial_id()
    trial = SweepDir(sweep_uri).trial(trial_id)
    train, deepspeed, model = apply_params(cfg, params)
    spec = fit_spec(
        cfg, train=train, deepspeed=deepspeed, model=model, records_uri=trial.records.uri, report_metrics=tune_metrics
    )
    records = trial.records.folds()
    if finished_before(records, folds):
        # The trial ended after Tune last saved the sweep's state (the driver died, or the storage broke), so Tune
        # resumes it as unfinished. Its fold records hold the result: report that, without a worker group.
        ray.tune.report(completed_report(records, metric=cfg.metric, k=len(folds)))
        return
    trial.write_params(Params(params=params, started=time.time()))
    trainer = build_trainer(
        fits=[Fit(spec=spec, encoded=encoded, folds=folds)],
        scaling=cfg.scaling,
        name=trial.run_name,
        storage_path=trial.uri,
        callbacks=[TuneReportCallback()],
    )
    result = trainer.fit()
    oom = trial.records.oom()
    ended = classify(folds=trial.records.folds(), k=len(folds), oom=oom, error=result.error)
    if ended.outcome.failed:
        # First line: how it ended, from the records (sweeps.results reads those, not this text); then the details.
        details = [oom.error] if oom is not None else []
        details += [str(result.error)[:2000]] if result.error is not None else []
        raise TrainingError("\n".join([f"trial {trial_id} {ended}", *details]))


def finished_before(records: list[FoldRecord], folds: list) -> bool:
    """Every fold recorded, none diverged, each on the validation rows this sweep assigns it."""
    if len(records) != len(folds) or any(r.diverged for r in records):
        return False
    return all(
        r.fold == i and r.val_sha == rows_sha(val) for i, (r, (_, val)) in enumerate(zip(records, folds, strict=True))
    )
