"""Metrics: the registry of every scalar metric (task, direction, display order) and the functions that compute them.

The registry is the one list of metric names: config validation, the worker's best epoch, the sweep's
best trial, tables and reports all read it. Computed values are plain floats and lists: JSON-ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Direction = Literal["max", "min"]

HOLDOUT = "holdout_"  # the prefix of a metric scored on the early-stopping holdout (train.early_stopping_holdout)


@dataclass(frozen=True)
class Metric:
    name: str
    tasks: tuple[str, ...]
    direction: Direction
    doc: str


# Display order is the order here.
METRICS = (
    Metric("f1_macro", ("classification",), "max", "macro-averaged F1"),
    Metric("accuracy", ("classification",), "max", "share of rows classified right"),
    Metric("precision_macro", ("classification",), "max", "macro-averaged precision"),
    Metric("recall_macro", ("classification",), "max", "macro-averaged recall"),
    Metric("roc_auc", ("classification",), "max", "ROC AUC (one-vs-rest macro mean for >2 classes)"),
    Metric("mse", ("regression",), "min", "mean squared error"),
    Metric("mae", ("regression",), "min", "mean absolute error"),
    Metric("r2", ("regression",), "max", "coefficient of determination"),
    Metric("eval_loss", ("classification", "regression", "causal-lm"), "min", "evaluation loss"),
    Metric("perplexity", ("causal-lm",), "min", "exp(mean token loss)"),
    Metric("rouge_l", ("causal-lm",), "max", "ROUGE-L F1 of greedy generations (train.generate_eval)"),
    Metric("exact_match", ("causal-lm",), "max", "share of greedy generations equal to the response (generate_eval)"),
)
GENERATION = ("rouge_l", "exact_match")  # the metrics only train.generate_eval computes
DEFAULT_METRIC = {"classification": "f1_macro", "regression": "mse", "causal-lm": "eval_loss"}
_BY_NAME = {m.name: m for m in METRICS}


def metric_names(task: str) -> list[str]:
    """The metrics a task can be scored on, in display order."""
    return [m.name for m in METRICS if task in m.tasks]


def direction(name: str) -> Direction:
    """Whether larger ('max') or smaller ('min') is better; unknown names are losses ('min')."""
    known = _BY_NAME.get(name)
    return known.direction if known else "min"


def better(a: float, b: float, mode: Direction) -> bool:
    """Is score `a` better than `b`? A non-finite score is never better; anything finite beats one."""
    if not math.isfinite(a):
        return False
    if not math.isfinite(b):
        return True
    return a > b if mode == "max" else a < b


def best_first(value: float, mode: Direction) -> float:
    """A sort key that puts the best score first (ascending sort); non-finite scores last."""
    if not math.isfinite(value):
        return math.inf
    return -value if mode == "max" else value


def best_of(items: list, key, mode: Direction):
    """The item whose finite `key(item)` is best under `mode`; None when none is finite."""
    best = None
    for item in items:
        if best is None or better(key(item), key(best), mode):
            best = item
    return best if best is not None and math.isfinite(key(best)) else None


def scalar_metrics(metrics: dict) -> dict:
    """The numeric top-level entries (what Tune and tables show): registry metrics first in display order,
    then the rest by name."""
    known = [m.name for m in METRICS if m.name in metrics]
    rest = sorted(k for k in metrics if k not in _BY_NAME)
    return {k: metrics[k] for k in known + rest if _is_number(metrics[k])}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at each distinct score, collinear points dropped (scikit-learn's curve)."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order].astype(np.float64)
    ends = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tps = np.cumsum(positive)[ends]
    fps = 1 + ends - tps
    if len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    return fps / fps[-1], tps / tps[-1]


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    fpr, tpr = roc_curve(positive, score)
    return float(np.trapezoid(tpr, fpr))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str], *, eval_loss: float) -> dict:
    # numpy, not scikit-learn: importing sklearn.metrics would cost every worker a heavy import before it evaluates.
    n = len(label_names)
    probs = _softmax(logits.astype(np.float64))
    preds = probs.argmax(axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    tp, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 counts as 0, as zero_division=0 does
        p = np.where(predicted > 0, tp / predicted, 0.0)
        r = np.where(support > 0, tp / support, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    present = np.unique(labels)
    roc_auc, curves = float("nan"), {}
    if np.isfinite(probs).all():  # a diverged model's logits have no ranking to score
        if n == 2 and len(present) == 2:
            roc_auc = _auc(labels == 1, probs[:, 1])
        elif len(present) > 2:
            # One-vs-rest over the classes present in this split (macro mean); absent classes have no curve.
            sub = probs[:, present] / probs[:, present].sum(axis=1, keepdims=True)
            roc_auc = float(np.mean([_auc(labels == c, sub[:, j]) for j, c in enumerate(present)]))
        for c in present:
            if 0 < (labels == c).sum() < len(labels):
                fpr, tpr = roc_curve(labels == c, probs[:, c])
                keep = np.linspace(0, len(fpr) - 1, min(len(fpr), 50)).astype(int)
                curves[label_names[c]] = {"fpr": fpr[keep].round(4).tolist(), "tpr": tpr[keep].round(4).tolist()}
    return {
        "eval_loss": float(eval_loss),
        "accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
        "precision_macro": float(p.mean()),
        "recall_macro": float(r.mean()),
        "f1_macro": float(f.mean()),
        "roc_auc": roc_auc,
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion.tolist(),
        "labels": list(label_names),
        "roc_curves": curves,
    }


def regression_metrics(preds: np.ndarray, targets: np.ndarray, *, eval_loss: float) -> dict:
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    sample = np.linspace(0, len(preds) - 1, min(len(preds), 500)).astype(int)
    residual = float(((targets - preds) ** 2).sum())
    total = float(((targets - targets.mean()) ** 2).sum())
    if len(targets) < 2:
        r2 = float("nan")
    elif total > 0:
        r2 = 1.0 - residual / total
    else:  # constant targets: scikit-learn's convention, 1 for a perfect fit, else 0
        r2 = 1.0 if residual == 0 else 0.0
    return {
        "eval_loss": float(eval_loss),
        "mse": float(np.mean((preds - targets) ** 2)),
        "mae": float(np.mean(np.abs(preds - targets))),
        "r2": r2,
        "residuals": {"target": targets[sample].round(4).tolist(), "prediction": preds[sample].round(4).tolist()},
    }


def causal_lm_metrics(total_loss: float, total_tokens: int) -> dict:
    mean = total_loss / max(total_tokens, 1)
    return {"eval_loss": float(mean), "perplexity": float(math.exp(min(mean, 50.0))), "eval_tokens": int(total_tokens)}
