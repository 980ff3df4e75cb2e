"""The trivial predictor on a sweep's folds: what a fine-tuned model has to beat."""

from __future__ import annotations

import numpy as np

from sweeps.search.folds import Folds


def baseline(task: str, examples, folds: Folds) -> dict | None:
    """Majority class (classification) or training mean (regression), scored per fold; None for causal-lm."""
    from sklearn.metrics import f1_score, mean_squared_error

    if examples.labels is None:
        return None
    scores = []
    for train_rows, val_rows in folds.folds:
        y_train, y_val = examples.labels[train_rows], examples.labels[val_rows]
        if task == "classification":
            pred = np.full(len(y_val), np.bincount(y_train).argmax())
            labels = list(range(len(examples.label_names)))
            f1 = f1_score(y_val, pred, labels=labels, average="macro", zero_division=0)
            scores.append({"f1_macro": float(f1), "accuracy": float((pred == y_val).mean())})
        else:
            pred = np.full(len(y_val), float(y_train.mean()))
            scores.append({"mse": float(mean_squared_error(y_val, pred))})
    means = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    return {"name": "majority class" if task == "classification" else "training mean", **means, "per_fold": scores}
