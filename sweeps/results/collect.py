"""A sweep's results, read from its storage (and the ResultGrid when the sweep just ran)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainer.metrics import best_of
from trainer.storage import exists, join, list_dir, read_json

from sweeps.config import SweepConfig


def fold_records(trial_uri: str) -> list[dict]:
    """A trial's finished folds (records/fold-<i>.json), in fold order."""
    names = [n for n in list_dir(join(trial_uri, "records")) if n.startswith("fold-") and n.endswith(".json")]
    return sorted((read_json(join(trial_uri, "records", n)) for n in names), key=lambda r: r["fold"])


def trial_record(uri: str, trial_id: str, *, metric: str, k: int, result=None, use_gpu: bool, workers: int) -> dict:
    """One trial: params, per-fold scores, mean/std, state and cost."""
    from sweeps.search.trial import classify

    trial_uri = join(uri, "trials", trial_id)
    params = read_json(join(trial_uri, "params.json")) if exists(join(trial_uri, "params.json")) else {"params": {}}
    folds = fold_records(trial_uri)
    scores = [f["metrics"].get(metric, math.nan) for f in folds]
    last = (result.metrics or {}) if result is not None else {}
    error = result.error if result is not None else None
    from trainer.loop import read_oom

    oom = read_oom(join(trial_uri, "records"))
    if oom is not None:  # recorded by the worker itself: stands even when Tune's own error text is lost
        state, reason = "failed", f"out-of-memory at fold {oom['fold']} epoch {oom['epoch']} step {oom['step']}"
    elif error is not None:
        state, reason = "failed", classify(error)
    elif any(f.get("diverged") for f in folds):
        state, reason = "failed", "diverged"
    elif len(folds) >= k:
        state, reason = "completed", None
    elif result is not None and last:
        state, reason = "pruned", f"stopped after {len(folds)} of {k} folds"
    else:
        state, reason = "unfinished", None
    if reason == "diverged":  # where: the fold record says (the loss was all-reduced, so every rank agreed)
        where = next((f["diverged"] for f in folds if f.get("diverged")), None)
        if where:
            reason = f"diverged at fold {where['fold']} epoch {where['epoch']} step {where['step']} (loss {where['loss']})"
    duration = float(last.get("time_total_s") or 0.0)
    if not duration and folds:
        duration = sum(sum(h.get("time", 0) for h in f.get("history", [])) for f in folds)
    record = {
        "trial_id": trial_id,
        "state": state,
        "reason": reason,
        "error": str(error).splitlines()[0][:500] if error is not None else None,
        "params": params["params"],
        "folds_done": len(folds),
        "fold_scores": scores,
        "mean": float(np.mean(scores)) if scores else math.nan,
        "std": float(np.std(scores)) if len(scores) > 1 else (0.0 if scores else math.nan),
        "trainable_params": folds[0]["trainable_params"] if folds else None,
        "total_params": folds[0]["total_params"] if folds else None,
        "duration_s": round(duration, 2),
        "worker_seconds": round(duration * workers, 1),
        "gpu_hours": round(duration * workers / 3600, 4) if use_gpu else 0.0,
        "train_eval_s": round(float(last.get("time_train_s", 0)) + float(last.get("time_eval_s", 0)), 2),
    }
    return record


def collect(uri: str, *, cfg: SweepConfig, grid=None, wall_s: float | None = None, finished: bool | None = None) -> dict:
    """The summary saved as summary.json: best trial, every trial, baseline and overhead. `finished`: the sweep
    has ended (default: when its ResultGrid is given)."""
    by_id = {}
    if grid is not None:
        for result in grid:
            tid = (result.metrics or {}).get("trial_id") or _trial_id_from_path(result.path)
            by_id[tid] = result
    else:
        by_id = _tune_state(uri)
    if finished is None:
        finished = grid is not None
    on_disk = set(list_dir(join(uri, "trials")))
    if finished:
        # A directory the finished sweep's Tune does not know, with no fold finished, is a trial an interrupted run
        # started just before it stopped, before Tune saved its state; the resumed run asked the searcher again.
        # Nothing was computed there, so nothing is lost by leaving it out.
        on_disk = {t for t in on_disk if t in by_id or fold_records(join(uri, "trials", t))}
    ids = sorted(on_disk | set(by_id))
    trials = [
        trial_record(uri, tid, metric=cfg.metric, k=cfg.folds.k, result=by_id.get(tid), use_gpu=cfg.scaling.use_gpu, workers=cfg.scaling.num_workers)
        for tid in ids
    ]
    done = [t for t in trials if t["state"] == "completed" and math.isfinite(t["mean"])]
    best = None
    if done:
        best = dict(best_of(done, lambda t: t["mean"], cfg.mode))
        best["folds"] = fold_records(join(uri, "trials", best["trial_id"]))
        ds_path = join(uri, "trials", best["trial_id"], "records", "deepspeed.json")
        best["deepspeed"] = read_json(ds_path) if exists(ds_path) else None
    data = read_json(join(uri, "data.json")) if exists(join(uri, "data.json")) else {}
    states = {s: sum(t["state"] == s for t in trials) for s in ("completed", "pruned", "failed", "unfinished")}
    summary = {
        "name": cfg.name, "task": cfg.task, "metric": cfg.metric, "mode": cfg.mode, "k": cfg.folds.k,
        "storage": uri, "states": states, "trials": trials, "best": best,
        "baseline": data.get("baseline"), "data": {k: v for k, v in data.items() if k != "baseline"},
        "fold_fits": sum(t["folds_done"] for t in trials),
    }
    if wall_s is not None:
        work = sum(t["train_eval_s"] for t in trials)
        summary["wall_s"] = round(wall_s, 1)
        summary["train_eval_s"] = round(work, 1)
        summary["orchestration_share"] = round(max(0.0, 1 - work / wall_s), 3) if wall_s else None
    return summary


def _trial_id_from_path(path: str) -> str:
    """Tune names trial directories `<trainable>_<trial id>_<n>_<params>_<date>`."""
    import re

    match = re.search(r"_([0-9a-f]{8})_\d+_", path.rstrip("/").rsplit("/", 1)[-1])
    return match.group(1) if match else path


@dataclass(frozen=True)
class _SavedTrial:
    """What Tune's saved experiment state says of a trial (when no ResultGrid is at hand)."""

    metrics: dict
    error: str | None


def _tune_state(uri: str) -> dict:
    """Trial status and last result from `tune/experiment_state-*.json`: no Ray cluster needed."""
    import json

    names = [n for n in list_dir(join(uri, "tune")) if n.startswith("experiment_state-") and n.endswith(".json")]
    if not names:
        return {}
    state = read_json(join(uri, "tune", sorted(names)[-1]))
    out = {}
    for trial_json, runtime_json in state.get("trial_data", []):
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        runtime = json.loads(runtime_json) if isinstance(runtime_json, str) else runtime_json
        status = trial.get("status")
        if status not in ("TERMINATED", "ERROR"):
            continue  # pending or running: not an outcome yet
        error = f"trial ended in ERROR (see {runtime.get('error_filename') or 'the trial log'})" if status == "ERROR" else None
        out[trial["trial_id"]] = _SavedTrial(metrics=runtime.get("last_result") or {}, error=error)
    return out
