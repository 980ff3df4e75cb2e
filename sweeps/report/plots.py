"""The report's figures: each function takes plain facts (lists, dicts) and returns PNG bytes.

matplotlib (Agg backend) is imported inside `_figure`, so importing this module is cheap.
"""

from __future__ import annotations

import io
import math

from trainer.metrics import better

STATE_STYLE = {
    "completed": ("tab:blue", "o"),
    "pruned": ("tab:orange", "s"),
    "failed": ("tab:red", "x"),
    "unfinished": ("tab:gray", "^"),
}


def _figure(width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def optimisation_history(trials: list[dict], *, metric: str, mode: str) -> bytes:
    """Each trial's fold mean in start order, by state; the best-so-far line over completed trials."""
    fig, ax = _figure()
    best, best_x, best_y = None, [], []
    floor = min((t["mean"] for t in trials if _finite(t["mean"])), default=0.0)
    for i, t in enumerate(trials):
        color, marker = STATE_STYLE.get(t["state"], STATE_STYLE["unfinished"])
        y = t["mean"] if _finite(t["mean"]) else floor
        ax.scatter([i], [y], color=color, marker=marker, s=40, zorder=3)
        if t["state"] == "completed" and _finite(t["mean"]):
            best = t["mean"] if best is None or better(t["mean"], best, mode) else best
        if best is not None:
            best_x.append(i)
            best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="black", linewidth=1, label="best so far (completed)")
    for state, (color, marker) in STATE_STYLE.items():
        if any(t["state"] == state for t in trials):
            ax.scatter([], [], color=color, marker=marker, label=state)
    _integer_ticks(ax)
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel(f"mean {metric} over folds reached")
    ax.set_title("Optimisation history (a failed trial without a score sits at the lowest)", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def importances(values: dict[str, float], *, method: str) -> bytes:
    fig, ax = _figure(6.4, 1.2 + 0.45 * len(values))
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set_xlabel(f"importance ({method})")
    ax.set_xlim(0, max(1.0, max(values.values(), default=1.0)))
    ax.set_title("Hyperparameter importances")
    return _png(fig)


def fold_spread(trials: list[dict], *, metric: str) -> bytes:
    """Per-fold scores of the top trials: one column per trial, one dot per fold, a bar at the mean."""
    fig, ax = _figure()
    for i, t in enumerate(trials):
        scores = [s for s in t["fold_scores"] if _finite(s)]
        color, _ = STATE_STYLE.get(t["state"], STATE_STYLE["unfinished"])
        ax.scatter([i] * len(scores), scores, color=color, alpha=0.8, zorder=3)
        if scores:
            ax.hlines(sum(scores) / len(scores), i - 0.25, i + 0.25, color="black")
    ax.set_xticks(range(len(trials)), [t["trial_id"] for t in trials], rotation=30, fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title("Per-fold scores of the top trials (bar: mean)")
    return _png(fig)


def confusion(matrix: list[list[int]], labels: list[str], *, title: str) -> bytes:
    fig, ax = _figure(max(4.5, 1.8 + 0.7 * len(labels)), max(3.5, 1.4 + 0.6 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    top = max((max(r) for r in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def roc(curves_by_fold: list[dict], *, title: str) -> bytes:
    """One line per class per fold (one-vs-rest); classes keep their colour across folds."""
    fig, ax = _figure()
    colors: dict[str, str] = {}
    palette = [
        "tab:blue",
        "tab:orange",
        "tab:green",
        "tab:red",
        "tab:purple",
        "tab:brown",
        "tab:pink",
        "tab:olive",
        "tab:cyan",
    ]
    for curves in curves_by_fold:
        for label, c in curves.items():
            first = label not in colors
            colors.setdefault(label, palette[len(colors) % len(palette)])
            ax.plot(c["fpr"], c["tpr"], color=colors[label], alpha=0.7, label=label if first else None)
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    if colors:
        ax.legend(fontsize=8)
    return _png(fig)


def residuals(points: list[tuple[float, float]], *, title: str) -> bytes:
    """Residual (prediction - target) against target."""
    fig, ax = _figure()
    xs = [t for t, _ in points]
    ax.scatter(xs, [p - t for t, p in points], s=12, alpha=0.6)
    ax.axhline(0, color="black", linewidth=1)
    ax.set_xlabel("target")
    ax.set_ylabel("prediction - target")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def loss_curves(histories: list[list[dict]], *, title: str) -> bytes:
    """Eval (solid) and train (dashed) loss per epoch, one colour per fold."""
    fig, ax = _figure()
    for fold, history in enumerate(histories):
        epochs = [h["epoch"] + 1 for h in history]
        line = ax.plot(epochs, [h.get("eval_loss", math.nan) for h in history], marker="o", label=f"fold {fold} eval")[
            0
        ]
        ax.plot(
            epochs,
            [h.get("train_loss", math.nan) for h in history],
            linestyle="--",
            marker=".",
            color=line.get_color(),
            label=f"fold {fold} train",
        )
    _integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def param_slice(study, *, metric: str) -> bytes:
    """Each searched parameter against the score of every completed trial (optuna's slice plot; colour: trial
    number). Raises ValueError when no completed trial has parameters to plot."""
    return _optuna_png(study, "plot_slice", metric)


def param_parallel(study, *, metric: str) -> bytes:
    """Every completed trial as one line through its parameter values to its score (optuna's parallel-coordinate
    plot). Raises ValueError when no completed trial has parameters to plot."""
    return _optuna_png(study, "plot_parallel_coordinate", metric)


def _optuna_png(study, plot: str, metric: str) -> bytes:
    import warnings

    import numpy as np
    import optuna
    import optuna.visualization.matplotlib as ovm

    _figure()  # selects the Agg backend before optuna's pyplot figure (an empty figure, closed below)
    import matplotlib
    import matplotlib.pyplot as plt

    plt.close("all")
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not any(t.params for t in done):
        raise ValueError("no completed trial in the study")
    # rc_context: optuna switches matplotlib to its own style globally, which the report's other figures must not get
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # its matplotlib backend
        fig = np.asarray(getattr(ovm, plot)(study, target_name=metric)).flat[0].figure
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")  # its own layout: colour bars beside the axes
        plt.close(fig)
    return buf.getvalue()
