"""Metrics from gathered predictions, per task. Plain floats and lists: JSON-ready."""

from __future__ import annotations

import math

import numpy as np


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str], *, eval_loss: float) -> dict:
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
        roc_curve,
    )

    n = len(label_names)
    probs = _softmax(logits.astype(np.float64))
    preds = probs.argmax(axis=1)
    ids = list(range(n))
    p, r, f, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    pm, rm, fm, _ = precision_recall_fscore_support(labels, preds, labels=ids, average="macro", zero_division=0)
    present = np.unique(labels)
    roc_auc = float("nan")
    curves = {}
    try:
        if n == 2 and len(present) == 2:
            roc_auc = float(roc_auc_score(labels, probs[:, 1]))
        elif len(present) > 2:
            # One-vs-rest over the classes present in this split; absent classes have no curve.
            cols = [c for c in ids if c in present]
            sub = probs[:, cols] / probs[:, cols].sum(axis=1, keepdims=True)
            roc_auc = float(roc_auc_score(labels, sub, multi_class="ovr", labels=cols))
        for c in present:
            if 0 < (labels == c).sum() < len(labels):
                fpr, tpr, _ = roc_curve(labels == c, probs[:, c])
                keep = np.linspace(0, len(fpr) - 1, min(len(fpr), 50)).astype(int)
                curves[label_names[c]] = {"fpr": fpr[keep].round(4).tolist(), "tpr": tpr[keep].round(4).tolist()}
    except ValueError:
        pass
    return {
        "eval_loss": float(eval_loss),
        "accuracy": float(accuracy_score(labels, preds)),
        "precision_macro": float(pm),
        "recall_macro": float(rm),
        "f1_macro": float(fm),
        "roc_auc": roc_auc,
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
        "labels": list(label_names),
        "roc_curves": curves,
    }


def regression_metrics(preds: np.ndarray, targets: np.ndarray, *, eval_loss: float) -> dict:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    preds = preds.reshape(-1)
    sample = np.linspace(0, len(preds) - 1, min(len(preds), 500)).astype(int)
    return {
        "eval_loss": float(eval_loss),
        "mse": float(mean_squared_error(targets, preds)),
        "mae": float(mean_absolute_error(targets, preds)),
        "r2": float(r2_score(targets, preds)) if len(targets) > 1 else float("nan"),
        "residuals": {"target": targets[sample].round(4).tolist(), "prediction": preds[sample].round(4).tolist()},
    }


def causal_lm_metrics(total_loss: float, total_tokens: int) -> dict:
    mean = total_loss / max(total_tokens, 1)
    return {"eval_loss": float(mean), "perplexity": float(math.exp(min(mean, 50.0))), "eval_tokens": int(total_tokens)}


def scalar_metrics(metrics: dict) -> dict:
    """The numeric top-level entries (what Tune and tables show)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
