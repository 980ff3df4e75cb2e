"""`zerotune report`: a sweep's report, built from its storage only (local path or URI), never a live cluster.

`report_facts` gathers what the storage says into one JSON-ready dict (the `--format json`
document, validated by `sweeps/report/report.schema.json`); `build_report` draws the plots (sweeps.report.figures) and
writes html (PNGs embedded), md (PNGs linked) and/or json next to them.
"""

from __future__ import annotations

import json
import math
import time

from sweeps.layout import SweepDir
from sweeps.results.environment import stored_records
from trainer.metrics import best_of, scalar_metrics
from trainer.records import WORST_ROWS
from trainer.storage import join, write_bytes
from zerotune.errors import ConfigError, StorageError

SCHEMA_VERSION = 1
FORMATS = ("html", "md", "json")
SAMPLES = 3  # sample generations shown per fold
WORST_SHOWN = 10  # worst-predicted out-of-fold rows shown for the best trial


def report_facts(sweep_uri: str) -> dict:
    """Everything the report shows, read from `<storage>/<name>/`; NaN/inf become null."""
    from sweeps.results.collect import collect, count_states
    from sweeps.results.importance import param_importances
    from sweeps.results.status import saved_config

    sweep = SweepDir(sweep_uri)
    if not sweep.exists():
        raise StorageError(
            f"no sweep at {sweep_uri} (its config is missing)",
            field="sweep",
            fix="pass the sweep directory or URI, or its name with --storage",
        )
    cfg = saved_config(sweep)
    summary = sweep.read(sweep.summary) or collect(sweep_uri, cfg=cfg)
    folds = sweep.read(sweep.folds, {})
    data = sweep.read(sweep.data, {})
    trials = [_trial_row(sweep, t, cfg) for t in summary["trials"]]
    trials.sort(key=lambda t: (t["started"] is None, t["started"] or 0, t["trial_id"]))
    states = count_states(trials)
    facts = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "name": cfg.name,
        "storage": sweep_uri,
        "task": cfg.task,
        "metric": cfg.metric,
        "mode": cfg.mode,
        "data": {
            "path": cfg.data.path,
            "n_rows": data.get("n_rows"),
            "n_test": len(folds.get("test", [])),
            "label_names": data.get("label_names"),
            "dropped": data.get("dropped") or {},
            "folds": {"k": cfg.folds.k, "strategy": folds.get("strategy"), "test_fraction": cfg.folds.test_fraction},
        },
        "baseline": summary.get("baseline"),
        "tfidf_baseline": summary.get("tfidf_baseline"),
        "states": states,
        "cost": {
            "use_gpu": cfg.scaling.use_gpu,
            "workers_per_trial": cfg.scaling.num_workers,
            "worker_seconds": round(sum(t["worker_seconds"] or 0 for t in trials), 1),
            "gpu_hours": round(sum(t["gpu_hours"] or 0 for t in trials), 4),
            "wall_s": summary.get("wall_s"),
            "orchestration_share": summary.get("orchestration_share"),
        },
        "search": {
            "num_trials": cfg.search.num_trials,
            "space": cfg.search.space.model_dump(exclude_none=True),
            "scheduler": cfg.search.scheduler.model_dump(),
        },
        "trials": trials,
        "best": _best(cfg, summary.get("best")),
        "importances": param_importances(trials, space=cfg.search.space, mode=cfg.mode, cfg=cfg),
        "methods": compare_methods(trials, default=cfg.model.method, mode=cfg.mode),
        "refit": _refit(sweep, summary.get("best")),
        "environment": stored_records(sweep),  # by what wrote it: the sweep's run, its latest refit
        "plots": {},
        "notes": [],
    }
    return _clean(facts)


def build_report(sweep_uri: str, *, formats=("html",), out_dir: str | None = None) -> dict:
    """Write the report in each of `formats` under `out_dir` (default `<sweep>/report`); the paths and facts."""
    from sweeps.report import pages as report_render
    from sweeps.report.figures import draw_plots

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError([("--format", f"unknown report format {unknown[0]!r}", f"use one of: {', '.join(FORMATS)}")])
    facts = report_facts(sweep_uri)
    out_dir = out_dir or SweepDir(sweep_uri).report
    images = draw_plots(facts, sweep_uri=sweep_uri)
    for name, png in images.items():
        write_bytes(join(out_dir, facts["plots"][name]["file"]), png)
    files = {}
    for fmt in formats:
        if fmt == "json":
            text = json.dumps(facts, indent=2)
        elif fmt == "md":
            text = report_render.markdown(facts)
        else:
            text = report_render.html(facts, images)
        files[fmt] = join(out_dir, f"report.{fmt}")
        write_bytes(files[fmt], text.encode("utf-8"))
    return {
        "out_dir": out_dir,
        "files": files,
        "plots": {n: join(out_dir, p["file"]) for n, p in facts["plots"].items()},
        "facts": facts,
    }


def _trial_row(sweep: SweepDir, t: dict, cfg) -> dict:
    from sweeps.search.space import used_params

    try:
        started = sweep.trial(t["trial_id"]).params().started
    except StorageError:  # a damaged params.json: the trial's row says so (state unreadable), the report goes on
        started = None
    keys = (
        "trial_id",
        "state",
        "reason",
        "error",
        "params",
        "folds_done",
        "fold_scores",
        "mean",
        "std",
        "duration_s",
        "worker_seconds",
        "gpu_hours",
        "trainable_params",
        "total_params",
    )
    # each dimension only where it applied (its condition held)
    return {**{k: t.get(k) for k in keys}, "params": used_params(t.get("params"), cfg), "started": started}


def compare_methods(trials: list[dict], *, default: str, mode: str) -> list[dict]:
    """One row per fine-tuning method: trials, best and median cross-validated score, trainable parameters.

    Only trials that finished every fold are scored (a pruned trial's mean covers fewer folds).
    """
    by_method: dict[str, list[dict]] = {}
    for t in trials:
        by_method.setdefault((t["params"] or {}).get("method", default), []).append(t)
    rows = []
    for method, group in sorted(by_method.items()):
        done = [t for t in group if t["state"] == "completed" and t["mean"] is not None]
        means = sorted(t["mean"] for t in done)
        best = best_of(done, lambda t: t["mean"], mode)
        counts = [t["trainable_params"] for t in group if t.get("trainable_params")]
        totals = [t["total_params"] for t in group if t.get("total_params")]
        rows.append(
            {
                "method": method,
                "trials": len(group),
                "completed": len(done),
                "best_mean": best["mean"] if best else None,
                "best_std": best["std"] if best else None,
                "best_trial": best["trial_id"] if best else None,
                "median_mean": means[len(means) // 2] if means else None,
                "trainable_params_min": min(counts) if counts else None,
                "trainable_params_max": max(counts) if counts else None,
                "trainable_share": round(max(counts) / max(totals), 6) if counts and totals else None,
            }
        )
    return rows


def _best(cfg, best: dict | None) -> dict | None:
    from sweeps.search.space import apply_params, config_json, used_params

    if best is None:
        return None
    train, deepspeed, model = apply_params(cfg, best["params"])
    folds = [
        {
            "fold": f["fold"],
            "n_train": f.get("n_train"),
            "n_val": f.get("n_val"),
            "epochs_run": f.get("epochs_run"),
            "metrics": scalar_metrics(f["metrics"]),
            "history": f.get("history", []),
        }
        for f in best["folds"]
    ]
    names = [k for k in folds[0]["metrics"] if all(k in f["metrics"] for f in folds)] if folds else []
    summary = {}
    for k in names:
        values = [float(f["metrics"][k]) for f in folds]
        summary[k] = {"mean": sum(values) / len(values), "std": _std(values)}
    return {
        "trial_id": best["trial_id"],
        "params": used_params(best["params"], cfg),
        "mean": best["mean"],
        "std": best["std"],
        "fold_scores": best["fold_scores"],
        "trainable_params": best.get("trainable_params"),
        "total_params": best.get("total_params"),
        "config": config_json(train, deepspeed, model),
        "selection_note": selection_note(train),
        "folds": folds,
        "metrics": summary,
        "deepspeed": best.get("deepspeed"),
        "duration_s": best.get("duration_s"),
        "worker_seconds": best.get("worker_seconds"),
        "gpu_hours": best.get("gpu_hours"),
        "generations": [  # train.generate_eval: each fold's first sample generations
            {"fold": f["fold"], **g} for f in best["folds"] for g in f["metrics"].get("generations", [])[:SAMPLES]
        ],
        "per_class": per_class([f["metrics"] for f in best["folds"]]),
        "worst_rows": worst_rows(best["folds"]),
    }


def per_class(fold_metrics: list[dict]) -> list[dict]:
    """Per class: precision, recall and F1 as means over the folds (as the cross-validated score is), F1's spread,
    and the validation rows of that class over all folds; empty unless the folds recorded them (classification)."""
    folds = [m["per_class"] for m in fold_metrics if m.get("per_class")]
    if not folds:
        return []
    rows = []
    for label in folds[0]:
        seen = [f[label] for f in folds if label in f]

        def mean(key, seen=seen):
            return sum(c[key] for c in seen) / len(seen)

        rows.append(
            {
                "label": label,
                "precision": mean("precision"),
                "recall": mean("recall"),
                "f1": mean("f1"),
                "f1_std": _std([c["f1"] for c in seen]),
                "support": sum(int(c["support"]) for c in seen),
            }
        )
    return rows


def worst_rows(folds: list[dict], *, most: int = WORST_SHOWN) -> list[dict]:
    """The worst-predicted out-of-fold rows over every fold (each fold keeps its own worst, trainer.evaluate):
    misclassified rows first, then the lowest probability on the true class (classification); the largest absolute
    error first (regression)."""
    rows = [{"fold": f["fold"], **r} for f in folds for r in f["metrics"].get(WORST_ROWS) or []]

    def badness(r: dict) -> tuple:
        if "true_prob" in r:
            return (r["predicted"] == r["label"], r["true_prob"])
        return (False, -r["error"] if r.get("error") is not None else -math.inf)

    return sorted(rows, key=badness)[:most]


def _refit(sweep: SweepDir, best: dict | None) -> dict | None:
    """The newest completed refit (refit/latest.json): its metrics and model directory are the same fit's."""
    run = sweep.latest_refit()
    record = sweep.read(run.metrics) if run is not None else None
    if record is None:
        return None
    test = scalar_metrics(record["metrics"])
    cv = {}
    for f in (best or {}).get("folds", []):
        for k, v in scalar_metrics(f["metrics"]).items():
            cv.setdefault(k, []).append(float(v))
    compare = [
        {
            "metric": k,
            "cv_mean": sum(cv[k]) / len(cv[k]) if k in cv else None,
            "cv_std": _std(cv[k]) if k in cv else None,
            "test": v,
        }
        for k, v in test.items()
    ]
    out = {
        "trial_id": record.get("trial_id"),
        "params": record.get("params"),
        "n_train": record.get("n_train"),
        "n_test": record.get("n_test"),
        "metrics": test,
        "compare": compare,
        "model_dir": record.get("model_dir"),
        "wall_s": record.get("wall_s"),
    }
    if "confusion_matrix" in record["metrics"]:
        out["confusion_matrix"], out["labels"] = record["metrics"]["confusion_matrix"], record["metrics"]["labels"]
    return out


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))  # population std, as the sweep summary


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def selection_note(train) -> str | None:
    """What chose each fold's scored epoch, when early stopping did: said next to the cross-validated score."""
    if not train.early_stopping_patience:
        return None
    if train.early_stopping_holdout:
        return (
            f"early stopping picked each fold's epoch on {train.early_stopping_holdout:g} of its training rows, "
            "held out from training; the validation rows only scored it"
        )
    return (
        "early stopping picked each fold's epoch on the same validation rows that score it, so this score is "
        "optimistic; set train.early_stopping_holdout to pick it on held-out training rows"
    )
