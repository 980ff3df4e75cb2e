"""sweeps/preflight/data.py (named apart from tests/trainer/test_data.py): the held-out test split is checked
against the classes and groups before sklearn cuts it (sklearn raises a bare ValueError otherwise)."""

import pandas as pd
import pytest

from sweeps.config import load_config
from sweeps.preflight.data import prepare_sweep
from zerotune.errors import ConfigError


def _cfg(tmp_path, rows: list[dict], data=None, **over):
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    raw = {"data": {"path": str(path), **(data or {})}, "search": {"space": {"batch_size": [2]}}, **over}
    return load_config(raw=raw)


def _three_classes(n_per_class: int, groups: int | None = None) -> list[dict]:
    rows = [{"text": f"t{i}", "label": "abc"[i % 3]} for i in range(3 * n_per_class)]
    for i, row in enumerate(rows):
        row["g"] = i % groups if groups else 0
    return rows


def test_a_stratified_test_split_smaller_than_the_classes_is_refused(tmp_path):
    """30 rows, 3 classes: 5 % is 2 test rows, and stratification needs one per class."""
    cfg = _cfg(tmp_path, _three_classes(10), folds={"k": 2, "test_fraction": 0.05})
    with pytest.raises(ConfigError) as err:
        prepare_sweep(cfg)
    [(field, message, fix)] = err.value.problems
    assert field == "folds.test_fraction" and "leaves 2 for the test split" in message and "3 classes" in message
    assert fix == "use folds.test_fraction between 0.1 and 0.9"
    examples, folds = prepare_sweep(_cfg(tmp_path, _three_classes(10), folds={"k": 2, "test_fraction": 0.1}))
    assert len(folds.test) == 3 and len(set(examples.labels[folds.test])) == 3


def test_a_group_test_split_must_leave_a_group_per_fold(tmp_path):
    """3 groups, k=2: a test_fraction of 0.5 takes 2 groups, leaving 1 group for 2 folds."""
    rows = _three_classes(4, groups=3)
    with pytest.raises(ConfigError) as err:
        prepare_sweep(_cfg(tmp_path, rows, data={"group_column": "g"}, folds={"k": 2, "test_fraction": 0.5}))
    [(field, message, _)] = err.value.problems
    assert field == "folds.test_fraction" and "3 groups" in message and "which need 2" in message
    _, folds = prepare_sweep(_cfg(tmp_path, rows, data={"group_column": "g"}, folds={"k": 2, "test_fraction": 0.3}))
    assert len(folds.folds) == 2 and len(folds.test) == 4
