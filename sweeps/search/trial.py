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
        callbacks=[epoch_reports()],
    )
    result = trainer.fit()
    oom = trial.records.oom()
    ended = classify(folds=trial.records.folds(), k=len(folds), oom=oom, error=result.error)
    if ended.outcome.failed:
        # First line: how it ended, from the records (sweeps.results reads those, not this text); then the details.
        details = [oom.error] if oom is not None else []
        details += [str(result.error)[:2000]] if result.error is not None else []
        raise TrainingError("\n".join([f"trial {trial_id} {ended}", *details]))


def trial_actor_resources():
    """Where each trial actor runs: on the driver's node (the head, for a job), holding no CPU.

    The trial actor (and the Ray Train controller, which Ray pins to its node) only waits on its worker group, which
    holds the real CPUs/GPUs. Anywhere else, losing that worker node would kill the trial with its workers, instead of
    restarting only the worker group from its checkpoint; and a head with 0 CPUs (as on KubeRay) could not hold a CPU
    sliver. Tune refuses an empty request: the actor asks for one byte of Ray's `memory` resource, which every node
    has."""
    import ray
    from ray._raylet import RAY_NODE_ID_KEY
    from ray.tune import PlacementGroupFactory

    driver_node = ray.get_runtime_context().get_node_id()
    return PlacementGroupFactory([{"memory": 1}], bundle_label_selector=[{RAY_NODE_ID_KEY: driver_node}])


def epoch_reports():
    """Ray's TuneReportCallback (each Train report becomes a Tune result), less the reports of mid-epoch
    checkpoints (train.checkpoint_every_steps): Tune, its schedulers and the searcher see one result per epoch."""
    return epoch_reports_class()()


def epoch_reports_class() -> type:
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainer.epoch_end import MID_EPOCH

    class EpochReports(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if not (metrics and MID_EPOCH in metrics[0]):
                super().after_report(run_context, metrics, checkpoint)

    return EpochReports


def finished_before(records: list[FoldRecord], folds: list) -> bool:
    """Every fold recorded, none diverged, each on the validation rows this sweep assigns it."""
    if len(records) != len(folds) or any(r.diverged for r in records):
        return False
    return all(
        r.fold == i and r.val_sha == rows_sha(val) for i, (r, (_, val)) in enumerate(zip(records, folds, strict=True))
    )
