"""Rows 2 and 3 of issue #7: what a trial costs besides training, and what fold-level pruning saves.

One demo-sized sweep (MiniLM on chatterbot-corpus topics, the demo's search space, 3 folds) is run twice
with the same seed and trial budget: with ASHA on folds and without a scheduler. Row 3 compares the two;
row 2 reads the unpruned run's records (every trial fits every fold) for the fixed costs.
"""

from __future__ import annotations

import statistics
import time

CONFIG = "examples/classification.chatterbot-topics.yaml"
# Demo-sized but quicker: 400 sampled utterances, 6 trials, the demo's space, 1 worker x 2 CPUs.
OVERRIDES = ["data.max_rows=400", "search.num_trials=6", "storage.path=./results/bench"]


def sweep_config(scheduler: str, *, stamp: str):
    from sweeps.config import load_config

    extra = ["search.scheduler.type=asha"] if scheduler == "asha" else ["search.scheduler.type=none"]
    return load_config(CONFIG, [*OVERRIDES, *extra, f"name=bench-{scheduler}-{stamp}"])


def run_pair() -> dict:
    """Both sweeps, unpruned first; each a fresh sweep directory (nothing resumed)."""
    import ray

    from sweeps.search.run import run_sweep

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = {}
    for scheduler in ("none", "asha"):
        cfg = sweep_config(scheduler, stamp=stamp)
        print(f"sweep with scheduler={scheduler}: {cfg.search.num_trials} trials x {cfg.folds.k} folds ...", flush=True)
        out[scheduler] = run_sweep(cfg, progress=False)
        ray.shutdown()  # each sweep starts its own embedded Ray, as `zerotune sweep run` would
    return out


def pruning(pair: dict) -> dict:
    """Row 3: fold fits, wall time and best cross-validated score, with and without pruning."""
    rows = {}
    for scheduler, s in pair.items():
        best = s["best"] or {}
        rows[scheduler] = {
            "fold_fits": s["fold_fits"],
            "wall_s": s["wall_s"],
            "states": s["states"],
            "best_mean": best.get("mean"),
            "best_std": best.get("std"),
            "best_params": best.get("params"),
        }
    none, asha = rows["none"], rows["asha"]
    saved = 1 - asha["fold_fits"] / none["fold_fits"]
    # "Within noise": the two best means differ by less than the larger of their fold standard deviations.
    noise = max(none["best_std"] or 0.0, asha["best_std"] or 0.0)
    same_best = abs((asha["best_mean"] or 0) - (none["best_mean"] or 0)) <= noise
    return {
        "runs": rows,
        "fold_fits_saved": round(saved, 3),
        "wall_ratio_asha_vs_none": round(asha["wall_s"] / none["wall_s"], 3),
        "best_mean_difference": round((asha["best_mean"] or 0) - (none["best_mean"] or 0), 4),
        "noise_fold_std": round(noise, 4),
        "goal": "pruning saves >= 40% of fold fits, best score within noise",
        "goal_met": saved >= 0.4 and same_best,
    }


def trial_overhead(summary: dict) -> dict:
    """Row 2: per-trial and per-fold fixed costs of the unpruned sweep, from its records in storage."""
    from sweeps.layout import SweepDir

    uri = summary["storage"]
    trials = []
    for t in summary["trials"]:
        if t["state"] != "completed":
            continue
        trial = SweepDir(uri).trial(t["trial_id"])
        started = trial.params().started
        markers = sorted(trial.records.starts(), key=lambda m: m.time)
        train_eval = sum(h["time"] for f in trial.records.folds() for h in f.history)
        group_start = markers[0].time - markers[0].setup_s - started
        setups = [m.setup_s for m in markers]
        trials.append(
            {
                "trial_id": t["trial_id"],
                "wall_s": t["duration_s"],
                "train_eval_s": round(train_eval, 2),
                "worker_group_start_s": round(group_start, 2),
                "fold_setup_s": setups,
                "worker_pids": sorted({m.pid for m in markers}),
                "fold_fits": len(markers),
                "fixed_share": round((group_start + sum(setups)) / t["duration_s"], 3) if t["duration_s"] else None,
            }
        )
    med = lambda key: statistics.median(x[key] for x in trials)  # noqa: E731
    return {
        "sweep": uri,
        "trials": trials,
        "tokenize_s_once_per_sweep": summary.get("tokenize_s"),
        "median_worker_group_start_s": round(med("worker_group_start_s"), 2),
        "median_fold_setup_s": round(statistics.median(s for x in trials for s in x["fold_setup_s"]), 2),
        "median_trial_wall_s": round(med("wall_s"), 1),
        "median_fixed_share": round(med("fixed_share"), 3),
        "one_worker_group_per_trial": all(len(x["worker_pids"]) == 1 for x in trials),
        "sweep_orchestration_share": summary.get("orchestration_share"),
    }
