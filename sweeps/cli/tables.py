"""Plain-text tables for people (JSON is the other output)."""

from __future__ import annotations

import math

from sweeps.layout import TrialState
from trainer.metrics import METRICS, scalar_metrics


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(vals: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def fit_table(summary: dict) -> str:
    m = summary["metrics"]
    keys = [k for k in scalar_metrics(m) if k in {x.name for x in METRICS}]
    out = [
        f"fit {summary['name']} ({summary['task']}, {summary['n_train']} train / "
        f"{summary['n_val']} validation rows, {summary['wall_s']} s)"
    ]
    rows = [{"epoch": h["epoch"], **h} for h in summary["history"]]
    if summary.get("before"):
        rows.insert(0, {"epoch": "before", **summary["before"]})
    out.append(table(rows, ["epoch", "train_loss", *keys, "time"]))
    out.append(f"metrics: {summary['metrics_path']}")
    if summary.get("model_dir"):
        out.append(f"model:   {summary['model_dir']}")
    return "\n".join(out)


def sweep_table(summary: dict) -> str:
    metric = summary["metric"]
    rows = []
    for t in sorted(summary["trials"], key=lambda t: t["trial_id"]):
        params = {
            k: (f"{v:.2e}" if k == "learning_rate" else (round(v, 3) if isinstance(v, float) else v))
            for k, v in t["params"].items()
        }
        rows.append(
            {
                "trial": t["trial_id"],
                "state": t["state"],
                "folds": t["folds_done"],
                f"mean {metric}": t["mean"],
                "std": t["std"],
                "params": " ".join(f"{k}={v}" for k, v in sorted(params.items())),
                "time_s": t["duration_s"],
            }
        )
    out = [
        f"sweep {summary['name']}: {summary['states']['completed']} completed, {summary['states']['pruned']} pruned, "
        f"{summary['states']['failed']} failed ({summary['fold_fits']} fold fits)"
        + (f", {summary['states']['pending']} waiting for resources" if summary["states"].get("pending") else "")
    ]
    out.append(table(rows, ["trial", "state", "folds", f"mean {metric}", "std", "time_s", "params"]))
    # A damaged record: say which file and why, since the row itself has nothing else to show.
    unreadable = [t for t in summary["trials"] if t["state"] == TrialState.UNREADABLE]
    out += [f"  {t['trial_id']} unreadable: {t['reason']}" for t in unreadable]
    # A trial waiting for nodes would look like a hang: say what it waits for.
    out += [f"  {t['trial_id']} {t['reason']}" for t in summary["trials"] if t["state"] == TrialState.PENDING]
    # A running fold's step progress (written at epoch ends and train.checkpoint_every_steps checkpoints).
    out += [f"  {t['trial_id']} at {t['progress']['where']}" for t in summary["trials"] if t.get("progress")]
    best = summary.get("best")
    if best:
        folds = ", ".join(_fmt(s) for s in best["fold_scores"])
        out += [
            "",
            f"best trial {best['trial_id']}: {metric} {best['mean']:.4f} +/- {best['std']:.4f} "
            f"over {len(best['fold_scores'])} folds [{folds}]",
            "  config: " + " ".join(f"{k}={v}" for k, v in sorted(best["params"].items())),
        ]
        refit = summary.get("refit")
        if refit and metric in (refit.get("metrics") or {}):  # the held-out test score beside the CV estimate
            out.append(
                f"  refit on {refit['n_train']} rows: test {metric} {refit['metrics'][metric]:.4f} on "
                f"{refit['n_test']} held-out rows (cross-validated {best['mean']:.4f} +/- {best['std']:.4f})"
            )
    else:
        out += ["", "no trial completed all folds"]
    for base in (summary.get("baseline"), summary.get("tfidf_baseline")):
        if base and metric in base:
            out.append(f"  baseline ({base['name']}, same folds): {metric} {base[metric]:.4f}")
    if summary.get("wall_s") is not None:
        out.append(
            f"  wall {summary['wall_s']:.0f} s; training+evaluation {summary['train_eval_s']:.0f} s; "
            f"orchestration share {summary['orchestration_share']:.0%}"
        )
    out.append(f"results: {summary['storage']}  (zerotune sweep status {summary['storage']})")
    return "\n".join(out)
