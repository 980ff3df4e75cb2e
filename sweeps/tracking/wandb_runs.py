"""Weights & Biases: one W&B run per fold and one per trial, grouped by trial (W&B groups runs where MLflow nests
them). Run ids follow from the sweep, trial and fold, so a resumed sweep logs into the runs it made before."""

from __future__ import annotations

from itertools import groupby

from sweeps.tracking.runs import FOLD, STATE, SWEEP_ID, TRIAL, Run


class WandbRuns:
    def __init__(self, *, project: str, entity: str | None, mode: str):
        self.project, self.entity, self.mode = project, entity, mode
        self._sent: set[tuple[str, str]] = set()

    def sync(self, trial: Run, *, parent: Run, folds: list[tuple[Run, list]], deepspeed: dict | None) -> None:
        """Each fold's run once per process (W&B appends, so a fold is not sent again), the trial's once it ended."""
        for fold, score in folds:
            key = (trial.tags[TRIAL], fold.tags[FOLD])
            if key not in self._sent:
                self.log_fold(fold, trial_id=trial.tags[TRIAL], score=score)
                self._sent.add(key)
        ended = (trial.tags[TRIAL], trial.tags[STATE])
        if trial.status != "RUNNING" and ended not in self._sent:
            self.close_trial(trial)
            self._sent.add(ended)

    def log_fold(self, fold: Run, *, trial_id: str, score: list[tuple[str, float, int]]) -> bool:
        self._run(fold, job_type="fold", run_id=f"{fold.tags[SWEEP_ID]}-{trial_id}-fold{fold.tags[FOLD]}")
        return True

    def close_trial(self, run: Run) -> None:
        self._run(run, job_type="trial", run_id=f"{run.tags[SWEEP_ID]}-{run.tags[TRIAL]}")

    def _run(self, run: Run, *, job_type: str, run_id: str) -> None:
        import wandb

        live = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            id=run_id,
            name=run.name,
            group=run.tags[TRIAL],
            job_type=job_type,
            config={**run.params, **run.tags},
            resume="allow",
            reinit="create_new",
        )
        try:
            ordered = sorted(run.metrics, key=lambda m: m[2])
            for step, rows in groupby(ordered, key=lambda m: m[2]):
                live.log({key: value for key, value, _ in rows}, step=step)
        finally:
            live.finish(exit_code=0 if run.status in ("FINISHED", "RUNNING") else 1)
