import numpy as np
import pytest

from sweeps.search.folds import Folds, make_folds
from trainer.data import Examples
from zerotune.errors import ConfigError


def _examples(labels, groups=None):
    return Examples(
        texts=[f"t{i}" for i in range(len(labels))],
        labels=np.array(labels),
        label_names=sorted({f"c{label}" for label in labels}),
        groups=None if groups is None else np.array(groups),
    )


def test_stratified_folds_partition_rows_and_keep_class_shares():
    ex = _examples([0] * 30 + [1] * 60 + [2] * 9)
    f = make_folds(ex, k=3, strategy="auto", task="classification", test_fraction=0.0, seed=1)
    assert f.strategy == "stratified"
    vals = np.concatenate([v for _, v in f.folds])
    assert sorted(vals.tolist()) == list(range(99))
    for train, val in f.folds:
        assert not set(train) & set(val)
        assert np.bincount(ex.labels[val]).tolist() == [10, 20, 3]
    again = make_folds(ex, k=3, strategy="auto", task="classification", test_fraction=0.0, seed=1)
    assert all((a[1] == b[1]).all() for a, b in zip(f.folds, again.folds, strict=True))
    assert Folds.from_json(f.to_json()).folds[2][1].tolist() == f.folds[2][1].tolist()


def test_test_split_is_cut_before_the_folds():
    ex = _examples([0, 1] * 50)
    f = make_folds(ex, k=4, strategy="auto", task="classification", test_fraction=0.2, seed=0)
    assert len(f.test) == 20
    assert not set(f.test) & set(np.concatenate([t for t, _ in f.folds]))


def test_groups_stay_together_and_regression_uses_kfold():
    ex = _examples([0, 1] * 10, groups=[i // 4 for i in range(20)])
    f = make_folds(ex, k=5, strategy="auto", task="classification", test_fraction=0, seed=0)
    assert f.strategy == "group"
    for train, val in f.folds:
        assert not set(ex.groups[train]) & set(ex.groups[val])
    reg = Examples(texts=["x"] * 10, labels=np.arange(10.0))
    assert make_folds(reg, k=2, strategy="auto", task="regression", test_fraction=0, seed=0).strategy == "kfold"


def test_no_group_spans_the_test_split_and_the_folds():
    groups = [i // 5 for i in range(100)]  # 20 groups of 5 rows
    ex = _examples([0, 1] * 50, groups=groups)
    f = make_folds(ex, k=4, strategy="auto", task="classification", test_fraction=0.2, seed=3)
    assert f.strategy == "group" and len(f.test) == 20
    folded = np.concatenate([v for _, v in f.folds])
    assert not set(ex.groups[f.test]) & set(ex.groups[folded])
    assert sorted(np.concatenate([f.test, folded]).tolist()) == list(range(100))


def test_k_too_large_and_thin_classes_are_refused():
    with pytest.raises(ConfigError, match="more than the 6 rows"):
        make_folds(_examples([0, 1] * 3), k=7, strategy="kfold", task="classification", test_fraction=0, seed=0)
    with pytest.raises(ConfigError, match=r"too few: c2 \(2\)"):
        make_folds(
            _examples([0] * 10 + [1] * 10 + [2] * 2),
            k=3,
            strategy="auto",
            task="classification",
            test_fraction=0,
            seed=0,
        )
