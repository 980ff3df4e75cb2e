"""`zerotune report`: a sweep's report, built from its storage only (local path or URI), never a live cluster.

`report_facts` gathers what the storage says into one JSON-ready dict (the `--format json`
document, validated by `sweeps/report/report.schema.json`); `build_report` draws the plots and
writes html (PNGs embedded), md (PNGs linked) and/or json next to them.
"""

from __future__ import annotations

import json
import math
import time

from sweeps.layout import SweepDir
from trainer.metrics import best_first, best_of, scalar_metrics
from trainer.storage import join, write_bytes
from zerotune.errors import ConfigError, StorageError

SCHEMA_VERSION = 1
FORMATS = ("html", "md", "json")
TOP_TRIALS = 8
SAMPLES = 3  # sample generations shown per fold


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
        "plots": {},
        "notes": [],
    }
    return _clean(facts)


def build_report(sweep_uri: str, *, formats=("html",), out_dir: str | None = None) -> dict:
    """Write the report in each of `formats` under `out_dir` (default `<sweep>/report`); the paths and facts."""
    from sweeps.report import pages as report_render

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


def draw_plots(facts: dict, *, sweep_uri: str) -> dict[str, bytes]:
    """PNG bytes by plot name; `facts["plots"]` gets each plot's file and title, `facts["notes"]` what was skipped."""
    from sweeps.report import plots

    images, notes = {}, []

    def add(name: str, title: str, make):
        try:
            images[name] = make()
        except (ValueError, TypeError, KeyError) as exc:  # a plot never sinks the report
            notes.append(f"{title}: not drawn ({type(exc).__name__}: {exc})")
            return
        facts["plots"][name] = {"file": f"plots/{name}.png", "title": title}

    metric, trials = facts["metric"], facts["trials"]
    if trials:
        add(
            "optimisation_history",
            "Optimisation history",
            lambda: plots.optimisation_history(trials, metric=metric, mode=facts["mode"]),
        )
    imp = facts["importances"]
    if imp["values"]:
        add(
            "importances",
            f"Parameter importances ({imp['method']})",
            lambda: plots.importances(imp["values"], method=imp["method"]),
        )
    else:
        notes.append(f"parameter importances: {imp['note']}")
    ranked = [t for t in trials if t["state"] in ("completed", "pruned") and t["mean"] is not None]
    ranked.sort(key=lambda t: (t["state"] != "completed", best_first(t["mean"], facts["mode"])))
    if ranked:
        add(
            "fold_spread",
            f"Per-fold {metric} of the top trials",
            lambda: plots.fold_spread(ranked[:TOP_TRIALS], metric=metric),
        )
    best = facts["best"]
    if best is None:
        notes.append("no trial completed every fold: no best-trial plots")
    else:
        fold_metrics = [f.metrics for f in SweepDir(sweep_uri).trial(best["trial_id"]).records.folds()]
        _task_plots(
            facts["task"], fold_metrics, best, add, plots, where=f"best trial, {len(fold_metrics)} validation folds"
        )
    refit = facts["refit"]
    if refit and refit.get("confusion_matrix"):
        add(
            "refit_confusion_matrix",
            "Confusion matrix of the refit model (test split)",
            lambda: plots.confusion(
                refit["confusion_matrix"], refit["labels"], title="refit model, held-out test split"
            ),
        )
    facts["notes"] = facts.get("notes", []) + notes
    return images


def _task_plots(task: str, fold_metrics: list[dict], best: dict, add, plots, *, where: str) -> None:
    if task == "classification" and fold_metrics and "confusion_matrix" in fold_metrics[0]:
        n = len(fold_metrics[0]["confusion_matrix"])
        total = [[sum(m["confusion_matrix"][i][j] for m in fold_metrics) for j in range(n)] for i in range(n)]
        add(
            "confusion_matrix",
            "Confusion matrix of the best trial (out-of-fold)",
            lambda: plots.confusion(total, fold_metrics[0]["labels"], title=f"out-of-fold predictions ({where})"),
        )
        add(
            "roc_curves",
            "ROC curves of the best trial (one-vs-rest, per fold)",
            lambda: plots.roc([m.get("roc_curves") or {} for m in fold_metrics], title=f"ROC one-vs-rest ({where})"),
        )
    if task == "regression":
        points = [
            (t, p)
            for m in fold_metrics
            for t, p in zip(m["residuals"]["target"], m["residuals"]["prediction"], strict=True)
        ]
        add("residuals", "Residuals of the best trial", lambda: plots.residuals(points, title=f"residuals ({where})"))
    histories = [f["history"] for f in best["folds"]]
    if any(histories):
        add(
            "loss_curve",
            "Eval loss curve of the best trial",
            lambda: plots.loss_curves(histories, title=f"loss per epoch ({where})"),
        )


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
    }


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
