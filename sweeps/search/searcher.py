"""The searcher: Tune's OptunaSearch over the define-by-run space, told what each trial really did.

- The space is define-by-run (`DrawTrial`): dimensions are drawn in table order and a conditional one only when
  its condition holds, so a full fine-tuning trial has no `lora_rank` in the study nor in its params.
- Intermediate values are fold scores, step = fold index (Tune's OptunaSearch reports the running objective per
  epoch, at Tune's iteration count).
- A trial the scheduler stopped before its last fold reaches the study as PRUNED (with its fold scores), not as
  COMPLETE with a partial mean; a failed trial (a diverged one included) as FAIL.
- `search.time_budget_s`: once spent, no new trial is proposed; running trials finish.
- `search.sampler`: tpe | random | grid | cmaes; a grid is every configuration of `grid_points`, enqueued.
- The study is an RDB study (sweeps.search.study): each trial carries its Tune trial id, its cost and, pruned or
  failed, why, as user attributes. Tune pickles the searcher with its experiment; the pickle holds which Tune trial
  is which study trial and how each ended, not the study: a resumed run reopens the study and matches them up
  (`_reconcile`), telling a stored study older than the pickle (an upload that failed) the ends it missed.
- Initial and grid points: each one no study trial has taken (or waits with) is enqueued at the first suggest.
"""

from __future__ import annotations

import logging
import math
import pickle
import sqlite3
import time

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps.config import SweepConfig
from sweeps.layout import SweepDir
from sweeps.search.objective import fold_scores
from sweeps.search.space import grid_points, searched
from sweeps.search.study import StudyStore, open_study, study_store
from trainer.outcome import Outcome, classify
from zerotune.errors import StorageError

log = logging.getLogger(__name__)

TUNE_ID = "tune_trial_id"  # the study trial's user attribute naming its Tune trial
ORPHAN = "the driver stopped before Tune saved this trial; the resumed run proposed another in its place"


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
    def __init__(self, *, cfg: SweepConfig, points: list[dict] | None, sampler, store: StudyStore):
        # read by _setup_study, which OptunaSearch.__init__ calls
        self._store, self._score_metric, self._k = store, cfg.metric, cfg.folds.k
        super().__init__(
            space=DrawTrial(cfg), metric="objective", mode=cfg.mode, sampler=sampler, points_to_evaluate=points
        )
        self._budget_s = cfg.search.time_budget_s
        self._first_at: float | None = None
        self._folds_told: dict[str, int] = {}
        # how each trial ended, pickled with the searcher: a stored study older than Tune's save is told it on resume
        self._ended: dict[str, dict] = {}
        self._legacy = False  # a study pickled whole by an older zerotune, in memory

    def _setup_study(self, mode: str) -> None:
        direction = "minimize" if mode == "min" else "maximize"
        self._ot_study, _ = open_study(
            self._store, direction=direction, sampler=self._sampler, metric=self._score_metric
        )
        # Enqueued at the first suggest, not now: a resumed run whose stored study was lost (never uploaded) skips
        # the points its saved trials took. Not keyed on `created`: a run can die after the study is made and before
        # its first trial, with no experiment state saved (so no restore), and its points must still run.
        self._points_due = self._unqueued()

    def __getstate__(self) -> dict:
        # Tune pickles the searcher (tuner.pkl, and each save of the experiment): the study lives in its database,
        # so the pickle holds only which Tune trial is which study trial, with its params.
        state = self.__dict__.copy()
        if self._legacy:
            return state
        state["_ot_study"] = None
        state["_ot_trials"] = {tid: {"number": t.number, "params": t.params} for tid, t in self._ot_trials.items()}
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as out:
            pickle.dump(self.__getstate__(), out)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as src:
            saved = pickle.load(src)
        budget, study, store = self._budget_s, self._ot_study, self._store
        if saved.get("_ot_study") is not None:  # saved before the study was an RDB one: it goes on in memory
            log.warning("sweep %s keeps its Optuna study in Tune's state (started before study.db)", store.name)
            self.__dict__.update(saved)
            self._legacy, self._store = True, StudyStore(url="", name=store.name, sweep=store.sweep)  # no uploads
            self._points_due = []
        else:
            trials = saved.pop("_ot_trials")
            self.__dict__.update(saved)
            self._ot_study, self._store = study, store
            self._reconcile(trials)
            self._points_due = self._unqueued()
        self._budget_s, self._first_at = budget, None  # this run's budget, counted from this run's first trial

    def _reconcile(self, saved: dict[str, dict]) -> None:
        """Match Tune's saved trials with the study's, which may be newer (a trial that ended after Tune last saved)
        or, where the study is uploaded, older (an upload that failed): nothing is told twice or lost."""
        from optuna.trial import Trial, TrialState

        study = self._ot_study
        by_tune_id = {t.user_attrs.get(TUNE_ID): t for t in study.get_trials(deepcopy=False)}
        self._ot_trials = {}
        for tid, ref in saved.items():
            frozen = by_tune_id.get(tid)
            frozen = self._recreate(tid, ref["params"]) if frozen is None else frozen
            self._ot_trials[tid] = Trial(study, frozen._trial_id)
            self._folds_told[tid] = len(frozen.intermediate_values)
            if frozen.state.is_finished():
                self._completed_trials.add(tid)
            elif tid in self._completed_trials:  # ended, but the stored study is older than Tune's save
                self._tell_late(tid, frozen)
        for orphan in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if orphan.user_attrs.get(TUNE_ID) not in self._ot_trials:
                study._storage.set_trial_user_attr(orphan._trial_id, "reason", ORPHAN)
                study.tell(orphan.number, state=TrialState.FAIL)
                if "fixed_params" in orphan.system_attrs:  # an initial point: it still has to run
                    study.enqueue_trial(orphan.system_attrs["fixed_params"])

    def _unqueued(self) -> list[dict]:
        """The initial (or grid) points that no study trial, in any state, has taken or waits with."""
        taken = [t.system_attrs.get("fixed_params") or t.params for t in self._ot_study.get_trials(deepcopy=False)]
        return [p for p in self._points_to_evaluate if not any(_same_point(p, t) for t in taken)]

    def _tell_late(self, tid: str, frozen) -> None:
        """Tell the study how a trial ended that Tune saved as ended: as the searcher saved it, or (a searcher pickled
        before it saved that) from the trial's fold records: all k folds COMPLETE, otherwise FAIL, with why."""
        from optuna.trial import TrialState

        ended = self._ended.get(tid) or self._from_records(tid)
        trial = self._ot_trials[tid]
        for step, score in enumerate(ended["scores"]):
            if step not in frozen.intermediate_values:
                trial.report(score, step)
        for key, value in ended["attrs"].items():
            trial.set_user_attr(key, value)
        self._ot_study.tell(trial, ended["value"], state=TrialState[ended["state"]])
        self._folds_told[tid] = max(self._folds_told.get(tid, 0), len(ended["scores"]))

    def _from_records(self, tid: str) -> dict:
        try:
            records = SweepDir(self._store.sweep).trial(tid).records
            folds = sorted(records.folds(), key=lambda f: f.fold)
            ended = classify(folds=folds, k=self._k, oom=records.oom())
        except StorageError as exc:
            why = f"its end is not in the study and its records cannot be read: {exc.message}"
            return {"state": "FAIL", "value": None, "scores": [], "attrs": {"reason": why}}
        scores = [f.score(self._score_metric) for f in folds]
        attrs = {"folds_done": len(folds)}
        if ended.outcome is Outcome.COMPLETED:
            return {"state": "COMPLETE", "value": sum(scores) / len(scores), "scores": scores, "attrs": attrs}
        why = str(ended) if ended.outcome.failed else "its end is not in the study (an upload failed)"
        return {"state": "FAIL", "value": None, "scores": scores, "attrs": {**attrs, "reason": why}}

    def _recreate(self, tune_id: str, params: dict):
        """A running trial that Tune saved but the stored study lacks, with its params (and their distributions)."""
        import optuna
        from optuna.trial import TrialState

        fixed = optuna.trial.FixedTrial(params)
        self._space(fixed)
        self._ot_study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.RUNNING,
                params=fixed.params,
                distributions=fixed.distributions,
                user_attrs={TUNE_ID: tune_id},
            )
        )
        return self._ot_study.get_trials(deepcopy=False)[-1]

    def suggest(self, trial_id: str):
        now = time.time()
        self._first_at = self._first_at or now
        if self._budget_s is not None and now - self._first_at > self._budget_s:
            return Searcher.FINISHED  # Tune then starts no trial; those running go on
        for point in self._points_due:
            self._ot_study.enqueue_trial(point)
        self._points_due = []
        new = trial_id not in self._ot_trials
        params = super().suggest(trial_id)
        if new:
            self._ot_trials[trial_id].set_user_attr(TUNE_ID, trial_id)
        return params

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
        result = result or {}
        value = result.get(self.metric)
        done, total = result.get("folds_done", 0), result.get("folds_total", 0)
        # a diverged fold can end the trial before its error reaches Tune (the scheduler stops it first)
        failed = error or bool(result.get("diverged"))
        if failed or value is None:
            state, value = (TrialState.FAIL if failed else TrialState.PRUNED), None
        elif done < total:
            state, value = TrialState.PRUNED, None  # stopped by the scheduler: optuna keeps its last fold score
        else:
            state = TrialState.COMPLETE
        ot_trial = self._ot_trials[trial_id]
        # What the dashboard shows beside the scores (attributes are set before the trial is finished).
        ot_trial.set_user_attr("folds_done", done)
        ot_trial.set_user_attr("duration_s", round(float(result.get("time_total_s") or 0.0), 2))
        if state != TrialState.COMPLETE:
            ot_trial.set_user_attr("reason", self._reason(trial_id, state, done))
        # optuna records a NaN/inf objective (a diverged trial) as FAIL, with a warning
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)
        told = self._ot_study._storage.get_trial(ot_trial._trial_id)
        scores = [told.intermediate_values[step] for step in sorted(told.intermediate_values)]
        self._ended[trial_id] = {
            "state": told.state.name,
            "value": told.value if told.state == TrialState.COMPLETE else None,  # a pruned one's is its last fold's
            "scores": scores,
            "attrs": told.user_attrs,
        }
        try:
            self._store.upload()  # object storage or a network volume: the stored copy, as of this trial's end
        except (StorageError, OSError, sqlite3.Error) as exc:  # the storage watch stops a sweep whose storage broke
            log.warning("could not upload the Optuna study after trial %s: %s", trial_id, exc)

    def _reason(self, trial_id: str, state, done: int) -> str:
        """Why a trial was pruned or failed, as the sweep's summary says it (from its records: trainer.outcome)."""
        from optuna.trial import TrialState

        if state == TrialState.PRUNED:
            return f"stopped by the scheduler after {done} of {self._k} folds"
        try:
            records = SweepDir(self._store.sweep).trial(trial_id).records
            ended = classify(folds=records.folds(), k=self._k, oom=records.oom())
        except StorageError as exc:
            return f"failed (its records cannot be read: {exc.message})"
        return str(ended) if ended.outcome.failed else "error (the sweep's summary has its message)"


def _same_point(point: dict, params: dict) -> bool:
    """Whether a trial's params (or the point it was enqueued with) are this point; floats as stored, near enough."""
    if point.keys() != params.keys():
        return False
    return all(
        math.isclose(v, params[k]) if isinstance(v, float) and isinstance(params[k], float) else v == params[k]
        for k, v in point.items()
    )


def make_searcher(cfg: SweepConfig) -> FoldSearch:
    points = grid_points(cfg) if cfg.search.sampler == "grid" else list(cfg.search.initial_points or [])
    return FoldSearch(cfg=cfg, points=points or None, sampler=make_sampler(cfg), store=study_store(cfg))


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
