"""The baselines on a sweep's own folds, with real scikit-learn on small synthetic text."""

import numpy as np
import pytest

from sweeps.search.baseline import baseline, tfidf_baseline
from sweeps.search.folds import make_folds
from trainer.data import Examples


def _examples(n: int = 90, *, pairs: bool = False, regression: bool = False) -> Examples:
    """The label is carried by one word among noise words (in the pair, when `pairs`): learnable by a bag of words,
    out of reach of the majority class."""
    rng = np.random.default_rng(0)
    words = ["red", "green", "blue"]
    labels = np.arange(n) % 3
    noise = [" ".join(rng.choice(["the", "a", "one", "some", "this"], size=4)) for _ in range(n)]
    key = [f"{words[y]} thing" for y in labels]
    if regression:
        return Examples(texts=[f"{k} {z}" for k, z in zip(key, noise, strict=True)], labels=labels * 1.5 + 0.2)
    texts, pair = (noise, key) if pairs else ([f"{k} {z}" for k, z in zip(key, noise, strict=True)], None)
    return Examples(texts=texts, pairs=pair, labels=labels, label_names=words)


def _folds(examples, task):
    strategy = "stratified" if task == "classification" else "kfold"
    return make_folds(examples, k=3, strategy=strategy, task=task, test_fraction=0.0, seed=0)


@pytest.mark.parametrize("pairs", [False, True], ids=["text", "pair"])
def test_tfidf_logistic_regression_learns_what_the_majority_class_cannot(pairs):
    examples = _examples(pairs=pairs)
    folds = _folds(examples, "classification")
    tfidf, majority = tfidf_baseline("classification", examples, folds), baseline("classification", examples, folds)
    assert tfidf["name"] == "TF-IDF + logistic regression" and len(tfidf["per_fold"]) == 3
    assert tfidf["f1_macro"] == pytest.approx(1.0) and tfidf["accuracy"] == pytest.approx(1.0)
    assert majority["f1_macro"] < 0.2  # a third of the rows right, one class of three: F1 1/6
    assert tfidf["f1_macro"] == pytest.approx(np.mean([f["f1_macro"] for f in tfidf["per_fold"]]))


def test_tfidf_ridge_beats_the_training_mean_for_regression():
    examples = _examples(regression=True)
    folds = _folds(examples, "regression")
    tfidf, mean = tfidf_baseline("regression", examples, folds), baseline("regression", examples, folds)
    assert tfidf["name"] == "TF-IDF + ridge regression"
    assert tfidf["mse"] < 0.2 * mean["mse"]


def test_there_is_no_baseline_for_causal_lm():
    examples = Examples(texts=["a b", "c d", "e f"])
    folds = _folds(examples, "causal-lm")
    assert tfidf_baseline("causal-lm", examples, folds) is None and baseline("causal-lm", examples, folds) is None


def test_a_bag_of_words_that_cannot_be_fitted_is_skipped_not_fatal(caplog):
    """Texts without a word (emoji only) give TF-IDF no vocabulary: the sweep goes on without that baseline."""
    examples = Examples(texts=["🙂 🙂", "🙁", "🙂"] * 10, labels=np.arange(30) % 2, label_names=["a", "b"])
    folds = _folds(examples, "classification")
    assert tfidf_baseline("classification", examples, folds) is None
    assert "TF-IDF baseline skipped" in caplog.text
    assert baseline("classification", examples, folds)["name"] == "majority class"
