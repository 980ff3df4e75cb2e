"""Which figures a report gets, drawn from its facts: the sweep's plots, the best trial's task plots, and the
parameter-vs-score plots of the sweep's stored Optuna study (sweeps.report.plots draws each one)."""

from __future__ import annotations

from sweeps.layout import SweepDir
from trainer.metrics import best_first
from zerotune.errors import StorageError

TOP_TRIALS = 8


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
    _study_plots(facts, sweep_uri, add, plots, notes)
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


def _study_plots(facts: dict, sweep_uri: str, add, plots, notes: list[str]) -> None:
    """Parameter against score, from the sweep's stored Optuna study (its completed trials)."""
    from sqlalchemy.exc import SQLAlchemyError

    from sweeps.report.study import stored_study
    from sweeps.results.status import saved_config

    if not facts["search"]["space"]:
        return
    metric = facts["metric"]
    try:
        with stored_study(sweep_uri, saved_config(SweepDir(sweep_uri))) as study:
            if study is None:
                notes.append("parameter-vs-score plots: no Optuna study stored with this sweep")
                return
            add(
                "param_slice",
                f"Each parameter against {metric} (completed trials)",
                lambda: plots.param_slice(study, metric=metric),
            )
            add(
                "param_parallel",
                f"Parameters and {metric} of every completed trial (parallel coordinates)",
                lambda: plots.param_parallel(study, metric=metric),
            )
    except (StorageError, ImportError, RuntimeError, SQLAlchemyError) as exc:  # unreadable, no driver, a newer schema
        notes.append(f"parameter-vs-score plots: the Optuna study could not be read ({exc})")


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
