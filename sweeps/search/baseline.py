"""The bars a fine-tuned model has to clear, scored on a sweep's own folds: the trivial predictor (majority class or
training mean) and a bag-of-words model (TF-IDF + logistic regression, or ridge for regression)."""

from __future__ import annotations

import numpy as np

from sweeps.search.folds import Folds

# Fixed, commonly used settings rather than a search: the baseline costs seconds, once per sweep.
TFIDF = {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 1}
LOGISTIC = {"C": 4.0, "class_weight": "balanced", "max_iter": 2000}
RIDGE = {"alpha": 1.0}
# Above this many rows the bag-of-words fits would take minutes of the driver's time before the first trial: skipped.
TFIDF_MAX_ROWS = 200_000


def baseline(task: str, examples, folds: Folds) -> dict | None:
    """Majority class (classification) or training mean (regression), scored per fold; None for causal-lm."""
    if examples.labels is None:
        return None

    def predict(train_rows, val_rows):
        y_train = examples.labels[train_rows]
        if task == "classification":
            return np.full(len(val_rows), np.bincount(y_train).argmax())
        return np.full(len(val_rows), float(y_train.mean()))

    name = "majority class" if task == "classification" else "training mean"
    return _scored(name, task, examples, folds, predict)


def tfidf_baseline(task: str, examples, folds: Folds) -> dict | None:
    """TF-IDF word uni+bigrams into logistic regression (classification, class-balanced) or ridge (regression),
    fitted on each fold's training rows and scored on its validation rows; None for causal-lm, and None (with a
    warning: the sweep goes on) where it cannot be fitted or the data is too large for the driver to fit it quickly."""
    import logging

    if examples.labels is None:
        return None
    if len(examples) > TFIDF_MAX_ROWS:
        logging.getLogger(__name__).warning("TF-IDF baseline skipped: over %d rows", TFIDF_MAX_ROWS)
        return None
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    texts = _texts(examples)

    def predict(train_rows, val_rows):
        y_train = examples.labels[train_rows]
        if task == "classification" and len(np.unique(y_train)) == 1:  # a fold with one class (group folds)
            return np.full(len(val_rows), y_train[0])
        vec = TfidfVectorizer(**TFIDF)
        x_train = vec.fit_transform([texts[i] for i in train_rows])
        x_val = vec.transform([texts[i] for i in val_rows])
        model = LogisticRegression(**LOGISTIC) if task == "classification" else Ridge(**RIDGE)
        return model.fit(x_train, y_train).predict(x_val)

    name = "TF-IDF + logistic regression" if task == "classification" else "TF-IDF + ridge regression"
    try:
        return _scored(name, task, examples, folds, predict)
    except ValueError as exc:  # e.g. no word in any text (emoji only): no bag of words to fit
        logging.getLogger(__name__).warning("TF-IDF baseline skipped: %s", exc)
        return None


def _texts(examples) -> list[str]:
    """Each row's text, with its pair (data.text_pair_column) appended: a bag of words sees both."""
    if examples.pairs is None:
        return list(examples.texts)
    return [f"{t} {p}" for t, p in zip(examples.texts, examples.pairs, strict=True)]


def _scored(name: str, task: str, examples, folds: Folds, predict) -> dict:
    """{"name", each metric's mean over folds, "per_fold"}: the sweep's own metrics, on the sweep's own folds."""
    from sklearn.metrics import f1_score, mean_squared_error

    scores = []
    for train_rows, val_rows in folds.folds:
        y_val, pred = examples.labels[val_rows], predict(train_rows, val_rows)
        if task == "classification":
            labels = list(range(len(examples.label_names)))
            f1 = f1_score(y_val, pred, labels=labels, average="macro", zero_division=0)
            scores.append({"f1_macro": float(f1), "accuracy": float((pred == y_val).mean())})
        else:
            scores.append({"mse": float(mean_squared_error(y_val, pred))})
    means = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    return {"name": name, **means, "per_fold": scores}
