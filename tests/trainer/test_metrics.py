import math

import numpy as np

from trainer.metrics import causal_lm_metrics, classification_metrics, regression_metrics


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
    m = classification_metrics(np.array([[0, 1], [0, 2], [3, 0], [1, 0]], dtype=float), np.array([1, 1, 0, 0]), ["n", "p"], eval_loss=0)
    assert m["roc_auc"] == 1.0


def test_regression_and_causal_lm():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), eval_loss=0)
    assert math.isclose(m["mse"], 4 / 3) and math.isclose(m["mae"], 2 / 3)
    c = causal_lm_metrics(total_loss=20.0, total_tokens=10)
    assert c["eval_loss"] == 2.0 and math.isclose(c["perplexity"], math.exp(2.0))
