import math

import numpy as np

from trainer.metrics import _softmax, causal_lm_metrics, classification_metrics, regression_metrics


def test_classification_metrics_match_hand_counts():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 5.0
    m = classification_metrics(logits, labels, ["a", "b", "c"], eval_loss=0.5)
    assert m["accuracy"] == 4 / 6
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert math.isclose(m["per_class"]["b"]["precision"], 2 / 3)
    assert math.isclose(m["per_class"]["a"]["recall"], 0.5)
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]
    assert math.isclose(m["f1_macro"], np.mean(f1))
    assert 0.5 < m["roc_auc"] <= 1.0 and set(m["roc_curves"]) == {"a", "b", "c"}


def test_binary_roc_is_exact():
    m = classification_metrics(
        np.array([[0, 1], [0, 2], [3, 0], [1, 0]], dtype=float), np.array([1, 1, 0, 0]), ["n", "p"], eval_loss=0
    )
    assert m["roc_auc"] == 1.0


def test_regression_and_causal_lm():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), eval_loss=0)
    assert math.isclose(m["mse"], 4 / 3) and math.isclose(m["mae"], 2 / 3)
    c = causal_lm_metrics(total_loss=20.0, total_tokens=10)
    assert c["eval_loss"] == 2.0 and math.isclose(c["perplexity"], math.exp(2.0))


def test_classification_metrics_agree_with_scikit_learn():
    """The numpy metrics (workers skip importing sklearn.metrics) against scikit-learn on random cases: ties in
    the scores, classes missing from the split or never predicted, two to five classes."""
    from sklearn import metrics as sk

    rng = np.random.default_rng(0)
    for case in range(60):
        n, rows = int(rng.integers(2, 6)), int(rng.integers(3, 40))
        labels = rng.integers(0, n - (case % 3 == 0), rows)  # every third case: the last class is absent
        logits = rng.integers(-2, 3, (rows, n)).astype(float)  # coarse: many tied scores
        names = [f"c{i}" for i in range(n)]
        m = classification_metrics(logits, labels, names, eval_loss=0.0)
        probs = _softmax(logits)  # the same floats: tied scores must stay tied
        preds, ids = probs.argmax(axis=1), list(range(n))
        assert m["accuracy"] == sk.accuracy_score(labels, preds)
        assert m["confusion_matrix"] == sk.confusion_matrix(labels, preds, labels=ids).tolist()
        p, r, f, support = sk.precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
        np.testing.assert_allclose(
            [m["precision_macro"], m["recall_macro"], m["f1_macro"]], [p.mean(), r.mean(), f.mean()], atol=1e-12
        )
        np.testing.assert_allclose(
            [[c["precision"], c["recall"], c["f1"], c["support"]] for c in m["per_class"].values()],
            np.c_[p, r, f, support],
            atol=1e-12,
        )
        present = np.unique(labels)
        if n == 2 and len(present) == 2:
            assert math.isclose(m["roc_auc"], sk.roc_auc_score(labels, probs[:, 1]))
        elif len(present) > 2:
            sub = probs[:, present] / probs[:, present].sum(axis=1, keepdims=True)
            assert math.isclose(m["roc_auc"], sk.roc_auc_score(labels, sub, multi_class="ovr", labels=list(present)))
        else:
            assert math.isnan(m["roc_auc"])
        for c in present:
            if 0 < (labels == c).sum() < rows:
                fpr, tpr, _ = sk.roc_curve(labels == c, probs[:, c])
                keep = np.linspace(0, len(fpr) - 1, min(len(fpr), 50)).astype(int)
                assert m["roc_curves"][names[c]] == {
                    "fpr": fpr[keep].round(4).tolist(),
                    "tpr": tpr[keep].round(4).tolist(),
                }


def test_regression_metrics_agree_with_scikit_learn():
    from sklearn import metrics as sk

    rng = np.random.default_rng(1)
    for targets in (rng.normal(size=30), np.full(5, 2.0)):
        for preds in (targets + rng.normal(scale=0.3, size=len(targets)), targets.copy()):
            m = regression_metrics(preds, targets, eval_loss=0.0)
            assert math.isclose(m["mse"], sk.mean_squared_error(targets, preds), abs_tol=1e-15)
            assert math.isclose(m["mae"], sk.mean_absolute_error(targets, preds), abs_tol=1e-15)
            assert math.isclose(m["r2"], sk.r2_score(targets, preds), abs_tol=1e-12)


def test_diverged_logits_have_no_roc():
    with np.errstate(invalid="ignore"):
        m = classification_metrics(
            np.array([[np.nan, 1.0], [0.0, np.inf]]), np.array([0, 1]), ["a", "b"], eval_loss=float("nan")
        )
    assert math.isnan(m["roc_auc"]) and m["roc_curves"] == {}
