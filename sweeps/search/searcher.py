"""The searcher: Tune's OptunaSearch over the define-by-run space, told what each trial really did.

- The space is define-by-run (`DrawTrial`): dimensions are drawn in table order and a conditional one only when
  its condition holds, so a full fine-tuning trial has no `lora_rank` in the study nor in its params.
- Intermediate values are fold scores, step = fold index (Tune's OptunaSearch reports the running objective per
  epoch, at Tune's iteration count).
- A trial the scheduler stopped before its last fold reaches the study as PRUNED (with its fold scores), not as
  COMPLETE with a partial mean; a failed trial (a diverged one included) as FAIL.
- `search.time_budget_s`: once spent, no new trial is proposed; running trials finish.
- `search.sampler`: tpe | random | grid | cmaes; a grid is every configuration of `grid_points`, enqueued.
"""

from __future__ import annotations

import time

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps.config import SweepConfig
from sweeps.search.objective import fold_scores
from sweeps.search.space import grid_points, searched


class DrawTrial:
    """The define-by-run space (picklable: Tune saves the searcher with the experiment)."""

    def __init__(self, cfg: SweepConfig):
        self.cfg = cfg

    def __call__(self, trial) -> None:
        params: dict = {}
        space = self.cfg.search.space
        for key, d in searched(space).items():
            if d.applies(params, self.cfg):
                params[key] = d.suggest(trial, d.setting(space))


class FoldSearch(OptunaSearch):
    def __init__(self, *, cfg: SweepConfig, points: list[dict] | None, sampler):
        super().__init__(
            space=DrawTrial(cfg), metric="objective", mode=cfg.mode, sampler=sampler, points_to_evaluate=points
        )
        self._score_metric = cfg.metric
        self._budget_s = cfg.search.time_budget_s
        self._first_at: float | None = None
        self._folds_told: dict[str, int] = {}

    def suggest(self, trial_id: str):
        now = time.time()
        self._first_at = self._first_at or now
        if self._budget_s is not None and now - self._first_at > self._budget_s:
            return Searcher.FINISHED  # Tune then starts no trial; those running go on
        return super().suggest(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        budget = self._budget_s
        super().restore(checkpoint_path)  # the saved run's study and trials, and its attributes
        self._budget_s, self._first_at = budget, None  # this run's budget, counted from this run's first trial

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial, told = self._ot_trials[trial_id], self._folds_told.get(trial_id, 0)
        scores = fold_scores(result, self._score_metric)
        for step in range(told, len(scores)):
            ot_trial.report(scores[step], step)
        self._folds_told[trial_id] = max(told, len(scores))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and not error:
            self.on_trial_result(trial_id, result)  # the last fold's score arrives with the last result
        value = (result or {}).get(self.metric)
        done, total = (result or {}).get("folds_done", 0), (result or {}).get("folds_total", 0)
        # a diverged fold can end the trial before its error reaches Tune (the scheduler stops it first)
        failed = error or bool((result or {}).get("diverged"))
        if failed or value is None:
            state, value = (TrialState.FAIL if failed else TrialState.PRUNED), None
        elif done < total:
            state, value = TrialState.PRUNED, None  # stopped by the scheduler: optuna keeps its last fold score
        else:
            state = TrialState.COMPLETE
        # optuna records a NaN/inf objective (a diverged trial) as FAIL, with a warning
        self._ot_study.tell(self._ot_trials[trial_id], value, state=state)
        self._completed_trials.add(trial_id)


def make_searcher(cfg: SweepConfig) -> FoldSearch:
    points = grid_points(cfg) if cfg.search.sampler == "grid" else list(cfg.search.initial_points or [])
    return FoldSearch(cfg=cfg, points=points or None, sampler=make_sampler(cfg))


def make_sampler(cfg: SweepConfig):
    import optuna

    kind, seed, trials = cfg.search.sampler, cfg.seed, cfg.search.num_trials
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)))
    if kind == "cmaes":
        # CMA-ES samples numeric ranges jointly; choices (and conditional dimensions) go to its independent sampler.
        startup = max(1, min(10, trials // 3))
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)  # random, and grid: every trial is an enqueued grid point
