"""MLflow: the sweep's run, a nested run per trial, and under it a nested run per fold (sweeps.tracking.runs).

Runs are found again by their tags, never by an id kept in memory: a resumed sweep (a new driver) goes on logging
into the runs its first run made, and a fold already logged is not logged twice.
"""

from __future__ import annotations

import os
import time

from sweeps.tracking.runs import FOLD, KIND, STATE, SWEEP_ID, TRIAL, Run

_TERMINAL = ("FINISHED", "FAILED", "KILLED")
_BATCH = 1000  # MLflow's most metrics per log_batch call
_PARENT = "mlflow.parentRunId"  # what MLflow's UI nests runs by


class MlflowRuns:
    def __init__(self, *, uri: str, experiment: str, sweep_id: str):
        from mlflow import MlflowClient

        # MLflow prints two "View run ... at" lines to stdout for every run it ends: in this driver process, whose
        # console is the sweep's own view, dozens of them per sweep. Its own switch turns them off.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # Calls run inside Tune's loop: MLflow's default (7 retries with backoff, 120 s timeouts) would hold the sweep
        # for minutes on a dead server before the backend is turned off. A user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.sweep_id = sweep_id
        self._folds: set[tuple[str, str]] = set()  # (trial, fold) this process logged or found: no query again
        self._trials: dict[str, str] = {}  # trial -> its run's id, once this process made or found it
        self._artifacts: set[tuple[str, str]] = set()  # (run id, artifact) this process logged or found

    def find(self, **tags: str):
        """The run of this sweep carrying `tags`, or None."""
        where = {SWEEP_ID: self.sweep_id, **tags}
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in where.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return runs[0] if runs else None

    def sweep_run_id(self, run: Run) -> str:
        found = self.find(**{KIND: "sweep"})
        return found.info.run_id if found else self._create(run, parent=None)

    def trial_run_id(self, run: Run, *, parent: Run) -> str:
        """The trial's run, made (with its hyperparameters) the first time; a resumed trial's is running again."""
        trial = run.tags[TRIAL]
        if trial in self._trials:
            return self._trials[trial]
        found = self.find(**{KIND: "trial", TRIAL: trial})
        if found is None:
            self._trials[trial] = self._create(run, parent=self.sweep_run_id(parent))
        else:
            if found.info.status in _TERMINAL and run.status == "RUNNING":
                self.client.update_run(found.info.run_id, status="RUNNING")
            self._trials[trial] = found.info.run_id
        return self._trials[trial]

    def sync(self, trial: Run, *, parent: Run, folds: list[tuple[Run, list]], deepspeed: dict | None) -> None:
        """The trial's run with its finished folds (each with its score), its DeepSpeed config, and its state once
        it ended."""
        run_id = self.trial_run_id(trial, parent=parent)
        for fold, score in folds:
            self.log_fold(fold, trial=trial, parent=parent, score=score)
        if deepspeed is not None:
            self.log_artifact_dict(run_id, deepspeed, "deepspeed.json")
        if trial.status != "RUNNING":
            self.close_trial(trial, parent=parent)

    def log_fold(self, fold: Run, *, trial: Run, parent: Run, score: list[tuple[str, float, int]]) -> bool:
        """Log a finished fold once (False: it was already there), and its score on the trial's run."""
        key = (fold.tags[TRIAL], fold.tags[FOLD])
        if key in self._folds or self.find(**{KIND: "fold", TRIAL: key[0], FOLD: key[1]}) is not None:
            self._folds.add(key)
            return False
        trial_id = self.trial_run_id(trial, parent=parent)
        run_id = self._create(fold, parent=trial_id)
        self._log(run_id, fold.metrics)
        self.client.set_terminated(run_id, status=fold.status)
        self._log(trial_id, score)
        self._folds.add(key)
        return True

    def log_artifact_dict(self, run_id: str, data: dict, name: str) -> None:
        """Upload `data` as the run's artifact `name` unless it is there already."""
        if (run_id, name) in self._artifacts:
            return
        if name not in {a.path for a in self.client.list_artifacts(run_id)}:
            self.client.log_dict(run_id, data, name)
        self._artifacts.add((run_id, name))

    def close_trial(self, run: Run, *, parent: Run) -> None:
        """The trial's state, reason and mean/std, once it ended (again only if it ended differently)."""
        run_id = self.trial_run_id(run, parent=parent)
        found = self.client.get_run(run_id)
        if found.info.status == run.status and found.data.tags.get(STATE) == run.tags[STATE]:
            return
        self._tags(run_id, run.tags)
        self._log(run_id, run.metrics)
        self.client.set_terminated(run_id, status=run.status)

    def close_sweep(self, run: Run, *, artifacts: dict[str | None, str]) -> str:
        """The sweep's run with its summary metrics and `artifacts` ({artifact dir, None: the root: local dir})."""
        run_id = self.sweep_run_id(run)
        self.client.update_run(run_id, status="RUNNING")
        self._tags(run_id, run.tags)
        self._log(run_id, run.metrics)
        for where, local in artifacts.items():
            self.client.log_artifacts(run_id, local, where)
        self.client.set_terminated(run_id, status=run.status)
        return run_id

    def _create(self, run: Run, *, parent: str | None) -> str:
        from mlflow.entities import Param

        tags = {**run.tags, **({_PARENT: parent} if parent else {})}
        created = self.client.create_run(self.experiment_id, tags=tags, run_name=run.name)
        run_id = created.info.run_id
        params = [Param(k, v[:6000]) for k, v in run.params.items()]
        for i in range(0, len(params), 100):  # MLflow's most params per call
            self.client.log_batch(run_id, params=params[i : i + 100])
        return run_id

    def _tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def _log(self, run_id: str, metrics: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, step) for key, value, step in metrics]
        for i in range(0, len(batch), _BATCH):
            self.client.log_batch(run_id, metrics=batch[i : i + _BATCH])
