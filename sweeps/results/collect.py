"""A sweep's results, read from its storage (and the ResultGrid when the sweep just ran)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sweeps.config import SweepConfig
from sweeps.layout import SweepDir, TrialState
from trainer.metrics import best_of
from trainer.outcome import classify
from trainer.storage import read_json
from zerotune.errors import StorageError


def trial_record(
    sweep: SweepDir,
    trial_id: str,
    *,
    metric: str,
    k: int,
    result=None,
    use_gpu: bool,
    workers: int,
    live: bool = False,
    interrupted: bool = False,
) -> dict:
    """One trial: params, per-fold scores, mean/std, state (with how it ended) and cost; `unreadable`, with the
    reason, when one of its records cannot be read (truncated, a partial file), so the other trials still show."""
    trial = sweep.trial(trial_id)
    try:
        folds, oom, params = trial.records.folds(), trial.records.oom(), trial.params().params
    except StorageError as exc:
        return _unreadable(trial_id, exc.message)
    scores = [f.score(metric) for f in folds]
    last = (result.metrics or {}) if result is not None else {}
    error = result.error if result is not None else None
    # `stopped`: Tune has a last result for a trial that ended without finishing every fold, so the scheduler ended
    # it. A `live` trial (Tune had not ended it) was not stopped: its last result is only its latest epoch;
    # `interrupted`: the run stopped on Ctrl+C or the storage watch while it was live.
    stopped = result is not None and bool(last) and not live
    ended = classify(folds=folds, k=k, oom=oom, error=error, stopped=stopped, interrupted=interrupted and live)
    duration = float(last.get("time_total_s") or 0.0)
    if not duration and folds:
        duration = sum(sum(h.get("time", 0) for h in f.history) for f in folds)
    return {
        "trial_id": trial_id,
        "state": TrialState(ended.outcome.trial_state).value,
        "reason": str(ended) if ended.outcome.failed else ended.reason,
        "error": str(error).splitlines()[0][:500] if error is not None else None,
        "params": params,
        "folds_done": len(folds),
        "fold_scores": scores,
        "mean": float(np.mean(scores)) if scores else math.nan,
        "std": float(np.std(scores)) if len(scores) > 1 else (0.0 if scores else math.nan),
        "trainable_params": folds[0].trainable_params if folds else None,
        "total_params": folds[0].total_params if folds else None,
        "duration_s": round(duration, 2),
        "worker_seconds": round(duration * workers, 1),
        "gpu_hours": round(duration * workers / 3600, 4) if use_gpu else 0.0,
        "train_eval_s": round(float(last.get("time_train_s", 0)) + float(last.get("time_eval_s", 0)), 2),
    }


def _unreadable(trial_id: str, reason: str) -> dict:
    """The row of a trial whose records cannot be read: the same keys as trial_record's, no scores, and why."""
    return {
        "trial_id": trial_id,
        "state": TrialState.UNREADABLE.value,
        "reason": reason,
        "error": None,
        "params": {},
        "folds_done": 0,
        "fold_scores": [],
        "mean": math.nan,
        "std": math.nan,
        "trainable_params": None,
        "total_params": None,
        "duration_s": 0.0,
        "worker_seconds": 0.0,
        "gpu_hours": 0.0,
        "train_eval_s": 0.0,
    }


def collect(
    uri: str,
    *,
    cfg: SweepConfig,
    grid=None,
    wall_s: float | None = None,
    finished: bool | None = None,
    interrupted: bool | None = None,
) -> dict:
    """The summary saved as summary.json: best trial, every trial, baseline and overhead. `finished`: the sweep
    has ended (default: when its ResultGrid is given); `interrupted`: its run was stopped (Ctrl+C, the storage
    watch), so the trials it ran are `interrupted` (default: as the saved summary says)."""
    sweep = SweepDir(uri)
    tune_state = _tune_state(sweep)
    live = _live(tune_state)
    earlier = _earlier_summary(sweep)
    if grid is not None:
        by_id = {}
        for result in grid:
            tid = (result.metrics or {}).get("trial_id") or _trial_id_from_path(result.path)
            by_id[tid] = result
        stopped_by_user = live if interrupted else set()
    else:
        by_id = tune_state
        interrupted = bool(earlier.get("interrupted"))
        # Live trials the saved summary calls interrupted still are, until a run ends them (or they run again).
        stopped_by_user = live & _ids_in(earlier, TrialState.INTERRUPTED)
    # A failed trial that `--retry-failed` restarted is gone from Tune's state (its retry is a new trial with its
    # parameters); the summary written before the retry keeps how it ended.
    retried = (_ids_in(earlier, TrialState.FAILED) & set(sweep.trial_ids())) - set(by_id) - set(tune_state)
    earlier_rows = {t["trial_id"]: t for t in earlier.get("trials", [])}
    if finished is None:
        finished = grid is not None
    on_disk = set(sweep.trial_ids())
    if finished:
        # A directory the finished sweep's Tune does not know, with no fold finished, is a trial an interrupted run
        # started just before it stopped, before Tune saved its state; the resumed run asked the searcher again.
        # Nothing was computed there, so nothing is lost by leaving it out.
        on_disk = {t for t in on_disk if t in by_id or t in retried or _has_folds(sweep, t)}
    ids = sorted(on_disk | set(by_id))
    trials = [
        {**earlier_rows[tid], "retried": True}
        if tid in retried
        else trial_record(
            sweep,
            tid,
            metric=cfg.metric,
            k=cfg.folds.k,
            result=by_id.get(tid),
            use_gpu=cfg.scaling.use_gpu,
            workers=cfg.scaling.num_workers,
            live=tid in live,
            interrupted=tid in stopped_by_user,
        )
        for tid in ids
    ]
    if grid is None:  # a status read while a run may be going on (and refreshing its pending record)
        trials = _with_waiting(sweep, trials)
    done = [t for t in trials if t["state"] == TrialState.COMPLETED.value]
    best = best_of(done, lambda t: t["mean"], cfg.mode)
    if best is not None:
        records = sweep.trial(best["trial_id"]).records
        best = {**best, "folds": [f.to_json() for f in records.folds()], "deepspeed": records.deepspeed()}
    data = sweep.read(sweep.data, {})
    states = count_states(trials)
    summary = {
        "name": cfg.name,
        "task": cfg.task,
        "metric": cfg.metric,
        "mode": cfg.mode,
        "k": cfg.folds.k,
        "storage": uri,
        "states": states,
        "trials": trials,
        "best": best,
        "baseline": data.get("baseline"),
        "tfidf_baseline": data.get("tfidf_baseline"),
        "data": {k: v for k, v in data.items() if k not in ("baseline", "tfidf_baseline")},
        "fold_fits": sum(t["folds_done"] for t in trials),
        "interrupted": bool(interrupted),
    }
    if wall_s is not None:
        work = sum(t["train_eval_s"] for t in trials)
        summary["wall_s"] = round(wall_s, 1)
        summary["train_eval_s"] = round(work, 1)
        summary["orchestration_share"] = round(max(0.0, 1 - work / wall_s), 3) if wall_s else None
    return summary


def _with_waiting(sweep: SweepDir, trials: list[dict]) -> list[dict]:
    """Unfinished trials the running sweep's pending record names are `pending`, with what they wait for."""
    from sweeps.search.pending import read_waiting

    waiting = read_waiting(sweep)
    return [
        {**t, "state": TrialState.PENDING.value, "reason": waiting[t["trial_id"]]}
        if t["trial_id"] in waiting and t["state"] == TrialState.UNFINISHED.value
        else t
        for t in trials
    ]


def _has_folds(sweep: SweepDir, trial_id: str) -> bool:
    """Whether a fold of the trial finished; a record that cannot be read counts (the trial shows as unreadable)."""
    try:
        return bool(sweep.trial(trial_id).records.folds())
    except StorageError:
        return True


def count_states(trials: list[dict]) -> dict[str, int]:
    """Trials per state, every state named (zeros included)."""
    return {s.value: sum(t["state"] == s.value for t in trials) for s in TrialState}


def _trial_id_from_path(path: str) -> str:
    """Tune names trial directories `<trainable>_<trial id>_<n>_<params>_<date>`."""
    import re

    match = re.search(r"_([0-9a-f]{8})_\d+_", path.rstrip("/").rsplit("/", 1)[-1])
    return match.group(1) if match else path


_LIVE = ("PENDING", "RUNNING", "PAUSED")  # Tune's statuses of a trial it has not ended


def live_trials(sweep: SweepDir) -> set[str]:
    """The trials Tune's saved state shows it had not ended. After Ctrl+C Tune marks its trials terminated in
    memory (so in its ResultGrid), but the state it saved as it stopped still shows them running."""
    return _live(_tune_state(sweep))


def _live(tune_state: dict) -> set[str]:
    return {t for t, saved in tune_state.items() if saved.status in _LIVE}


def _earlier_summary(sweep: SweepDir) -> dict:
    """The summary the last run saved ({} when there is none, or it cannot be read)."""
    try:
        return sweep.read(sweep.summary, {})
    except StorageError:
        return {}


def _ids_in(summary: dict, state: TrialState) -> set[str]:
    return {t["trial_id"] for t in summary.get("trials", []) if t.get("state") == state.value}


@dataclass(frozen=True)
class _SavedTrial:
    """What Tune's saved experiment state says of a trial (when no ResultGrid is at hand)."""

    metrics: dict
    error: str | None
    status: str


def _tune_state(sweep: SweepDir) -> dict:
    """Every trial's status and last result from Tune's saved experiment state: no Ray cluster needed."""
    import json

    saved = sweep.tune_state_files()
    if not saved:
        return {}
    state = read_json(saved[-1])
    out = {}
    for trial_json, runtime_json in state.get("trial_data", []):
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        runtime = json.loads(runtime_json) if isinstance(runtime_json, str) else runtime_json
        status = trial.get("status")
        error = (
            f"trial ended in ERROR (see {runtime.get('error_filename') or 'the trial log'})"
            if status == "ERROR"
            else None
        )
        out[trial["trial_id"]] = _SavedTrial(metrics=runtime.get("last_result") or {}, error=error, status=status)
    return out
