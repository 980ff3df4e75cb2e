"""sweeps/final/refit.py: each refit writes a run directory of its own, so nothing of an earlier refit counts."""

from types import SimpleNamespace

import numpy as np

from sweeps.config import load_config
from sweeps.final.refit import _refit_spec
from sweeps.final.train import _recorded_fold
from sweeps.layout import SweepDir
from trainer.records import FitRecords, FoldRecord, OomRecord

BEST = {"trial_id": "t1", "params": {"learning_rate": 1e-3}, "mean": 0.8, "std": 0.1, "fold_scores": [0.7, 0.9]}


def test_a_leftover_oom_record_of_an_earlier_refit_does_not_fail_a_new_one(tmp_path):
    cfg = load_config(
        raw={
            "name": "s",
            "data": {"path": "x.csv"},
            "folds": {"k": 2, "test_fraction": 0.2},
            "search": {"num_trials": 2, "space": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}},
            "storage": {"path": str(tmp_path)},
        }
    )
    sweep = SweepDir.of(cfg)
    earlier = _refit_spec(cfg, sweep.new_refit(), BEST, n_train=8, test_rows=np.arange(2))
    oom = OomRecord(fold=0, epoch=0, step=0, rank=1, error="RuntimeError: can't allocate memory")
    FitRecords(earlier.records_uri).write_oom(oom)  # that refit ran out of memory (batch size since lowered)

    spec = _refit_spec(cfg, sweep.new_refit(), BEST, n_train=8, test_rows=np.arange(2))
    assert spec.records_uri != earlier.records_uri and spec.export_uri != earlier.export_uri
    assert FitRecords(spec.records_uri).oom() is None
    # The new refit's fit recorded its fold: how the refit reads its end (a Ray Train result without an error).
    fold = FoldRecord(fold=0, epochs_run=1, best_epoch=0, metrics={"f1_macro": 0.9}, history=[], val_sha="a")
    FitRecords(spec.records_uri).write_fold(fold)
    assert _recorded_fold(spec, SimpleNamespace(error=None)) == fold


def test_refit_reads_the_rows_the_sweep_ran_on_when_rare_classes_are_dropped(tmp_path):
    """A class with 2..k rows is dropped by the sweep (stratified folds need k per class); refit must drop it too,
    or its row set (and fingerprint) differs and it refuses to run."""
    from sweeps.final.refit import _same_data
    from sweeps.preflight.data import fingerprint, prepare_sweep
    from tiny_models import keyword_rows

    rows = keyword_rows(30)
    rows.loc[:2, "label"] = "rare"  # 3 rows: enough for refit's old split (2), too few for k=3 + a test split
    rows.to_csv(tmp_path / "d.csv", index=False)
    cfg = load_config(
        raw={
            "name": "s",
            "data": {"path": str(tmp_path / "d.csv"), "rare_classes": "drop"},
            "folds": {"k": 3, "test_fraction": 0.2},
            "search": {"space": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}},
            "storage": {"path": str(tmp_path)},
        }
    )
    examples, _ = prepare_sweep(cfg)
    assert "rare" not in examples.label_names
    again = _same_data(cfg, {"fingerprint": fingerprint(examples)}, SweepDir.of(cfg))
    assert fingerprint(again) == fingerprint(examples)
