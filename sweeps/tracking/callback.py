"""Tracking from the sweep's driver: a Ray Tune callback that turns what trials write to storage into runs.

Trials write their fold records to the sweep's storage (trainer.records); the driver reads them as Tune reports
each epoch and as each trial ends, and logs every backend the `tracking:` group turns on. So the workers need no
tracking package and no route to the tracking server, and what is logged is what the sweep's own results say.
When the sweep ends, every trial is synced once more from the summary (anything a failed call missed) and the
sweep's run gets the report.

A backend that fails (a server down) is turned off for the rest of this run with one warning: the sweep goes on,
and the next run of the same command logs what was missed (runs are found again by their tags).
"""

from __future__ import annotations

import logging
import tempfile
from types import SimpleNamespace

from ray.tune import Callback

from sweeps.layout import SweepDir
from sweeps.results.collect import trial_record
from sweeps.tracking.runs import SWEEP_ID, fold_run, fold_score, sweep_run, sweep_tags, trial_run
from zerotune.errors import StorageError

log = logging.getLogger(__name__)


class SweepTracking(Callback):
    def __init__(self, cfg, sweep_uri: str):
        self.cfg, self.uri = cfg, sweep_uri
        self._backends: dict | None = None  # made in the driver process that runs Tune, on first use

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment; clients belong to this run (a resumed run makes its own).
        return {**self.__dict__, "_backends": None}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.sync_trial(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.sync_trial(trial.trial_id, result=SimpleNamespace(metrics=trial.last_result, error=None))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _error_of(trial)
        self.sync_trial(trial.trial_id, result=SimpleNamespace(metrics=trial.last_result, error=error))

    def backends(self) -> dict:
        """name -> backend, made once per process; one that cannot start is left out with a warning."""
        if self._backends is None:
            self._backends = {}
            for name, make in _makers(self.cfg, self.uri).items():
                self._call(name, make, store=True)
        return self._backends

    def sync_trial(self, trial_id: str, *, result=None, row: dict | None = None) -> None:
        """Log the trial's new folds, and once it ended (Tune's `result`, or its summary `row`) its state."""
        if not self.backends():
            return
        cfg, sweep = self.cfg, SweepDir(self.uri)
        if row is None:
            try:
                row = _row(cfg, sweep, trial_id, result=result)
            except StorageError as exc:
                log.warning("tracking: could not read trial %s's records: %s", trial_id, exc)
                return
        trial, parent = trial_run(row, metric=cfg.metric, sweep=self.uri), sweep_run(cfg, sweep=self.uri)
        records = sweep.trial(trial_id).records
        done = records.folds() if row["state"] != "unreadable" else []
        folds = [(fold_run(r, trial_id=trial_id, sweep=self.uri), fold_score(r, metric=cfg.metric)) for r in done]
        deepspeed = records.deepspeed() if done else None  # the effective config the trial ran (its first fold's)
        for name, backend in list(self.backends().items()):
            self._call(name, lambda b=backend: b.sync(trial, parent=parent, folds=folds, deepspeed=deepspeed))

    def end(self, summary: dict) -> None:
        """Once the sweep (and its refit) ended: every trial from the summary, then the sweep's run and report."""
        if not self.backends():
            return
        for row in summary["trials"]:
            self.sync_trial(row["trial_id"], row=row)
        mlflow = self.backends().get("mlflow")
        if mlflow is not None:
            self._call("mlflow", lambda: _mlflow_sweep(mlflow, self.cfg, self.uri, summary))

    def _call(self, name: str, fn, *, store: bool = False) -> None:
        try:
            out = fn()
        except Exception as exc:  # a tracking server or library failing must not fail the sweep
            log.warning(
                "tracking: %s failed (%s: %s); it is off for the rest of this run, the sweep goes on, and the same "
                "command run again logs what was missed",
                name,
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
            )
            self._backends.pop(name, None)
            return
        if store:
            self._backends[name] = out


def trackers(cfg, sweep_uri: str) -> list[SweepTracking]:
    """The run's tracking callback, or none when the `tracking:` group turns nothing on."""
    return [SweepTracking(cfg, sweep_uri)] if cfg.tracking.enabled else []


def end_tracking(callbacks: list, summary: dict) -> None:
    for callback in callbacks:
        if isinstance(callback, SweepTracking):
            callback.end(summary)


def _makers(cfg, uri: str) -> dict:
    tracking, makers = cfg.tracking, {}
    if tracking.mlflow.uri:
        from sweeps.tracking.mlflow_runs import MlflowRuns

        experiment = tracking.mlflow.experiment or cfg.name
        sweep_id = sweep_tags(uri)[SWEEP_ID]
        makers["mlflow"] = lambda: MlflowRuns(uri=tracking.mlflow.uri, experiment=experiment, sweep_id=sweep_id)
    if tracking.tensorboard:
        from sweeps.tracking.tensorboard_runs import TensorBoardRuns

        makers["tensorboard"] = lambda: TensorBoardRuns(uri)
    if tracking.wandb.project:
        from sweeps.tracking.wandb_runs import WandbRuns

        w = tracking.wandb
        makers["wandb"] = lambda: WandbRuns(project=w.project, entity=w.entity, mode=w.mode)
    return makers


def _row(cfg, sweep: SweepDir, trial_id: str, *, result) -> dict:
    """The trial's summary row as sweeps.results.collect makes it (the same state and reason as `sweep status`)."""
    return trial_record(
        sweep,
        trial_id,
        metric=cfg.metric,
        k=cfg.folds.k,
        result=result,
        use_gpu=cfg.scaling.use_gpu,
        workers=cfg.scaling.num_workers,
        live=result is None,
    )


def _error_of(trial):
    try:
        return trial.get_pickled_error() or trial.get_error() or "trial ended in ERROR"
    except Exception:  # an error file Tune could not write or read back
        return "trial ended in ERROR"


def _mlflow_sweep(backend, cfg, uri: str, summary: dict) -> None:
    """The sweep's run: its summary metrics, and the report (html and json) with summary.json as artifacts."""
    from pathlib import Path

    from sweeps.report.facts import build_report
    from trainer.storage import read_bytes

    with tempfile.TemporaryDirectory(prefix="zerotune-report-") as tmp:
        build_report(uri, formats=("html", "json"), out_dir=str(Path(tmp, "report")))
        Path(tmp, "summary").mkdir()
        Path(tmp, "summary", "summary.json").write_bytes(read_bytes(SweepDir(uri).summary))
        run = sweep_run(cfg, sweep=uri, summary=summary)
        backend.close_sweep(run, artifacts={"report": str(Path(tmp, "report")), None: str(Path(tmp, "summary"))})
