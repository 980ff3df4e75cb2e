"""A fit's records (trainer.records): typed round trips through a records directory."""

import json

import numpy as np
import pytest

from trainer.records import FitRecords, FoldRecord, OomRecord, StartMarker, rows_sha


def _fold(i, **extra):
    return FoldRecord(
        fold=i,
        epochs_run=2,
        best_epoch=1,
        metrics={"f1_macro": 0.5 + i / 10},
        history=[{"epoch": 0}],
        val_sha="x",
        **extra,
    )


def test_fold_records_round_trip_in_fold_order(tmp_path):
    records = FitRecords(str(tmp_path / "records"))
    assert records.folds() == [] and records.oom() is None and records.deepspeed() is None
    for i in (2, 0, 1):
        records.write_fold(_fold(i, diverged={"fold": i, "epoch": 0, "step": 1, "loss": "nan"} if i == 2 else None))
    folds = records.folds()
    assert [f.fold for f in folds] == [0, 1, 2] and folds[0] == _fold(0) and folds[2].diverged["loss"] == "nan"
    assert folds[1].score("f1_macro") == 0.6 and np.isnan(folds[1].score("mse"))


def test_a_stored_record_with_unknown_keys_still_reads(tmp_path):
    (tmp_path / "fold-0.json").write_text(json.dumps({**_fold(0).to_json(), "added_later": 1}))
    assert FitRecords(str(tmp_path)).folds() == [_fold(0)]


def test_start_markers_read_back_in_start_order_and_the_first_oom_record_counts(tmp_path):
    records = FitRecords(str(tmp_path))
    for ns, epoch in ((20, 1), (3, 0)):
        records.write_start(StartMarker(fold=0, start_epoch=epoch, pid=ns, time=0.0, setup_s=1.0), ns=ns)
    assert [m.start_epoch for m in records.starts()] == [0, 1]
    records.write_oom(OomRecord(fold=0, epoch=1, step=None, rank=1, error="MemoryError: "))
    records.write_oom(OomRecord(fold=0, epoch=1, step=3, rank=0, error="RuntimeError: out of memory"))
    assert records.oom().rank == 0 and records.oom().where() == "fold 0 epoch 1 step 3"
    records.write_deepspeed({"zero_optimization": {"stage": 2}})
    assert records.deepspeed()["zero_optimization"]["stage"] == 2


def test_rows_sha_names_the_rows_not_their_dtype():
    assert rows_sha([1, 2]) == rows_sha(np.array([1, 2], dtype=np.int32)) != rows_sha([2, 1])


def test_a_damaged_record_names_its_file_and_a_write_in_flight_is_not_read(tmp_path):
    from zerotune.errors import StorageError

    records = FitRecords(str(tmp_path))
    records.write_start(StartMarker(fold=0, start_epoch=0, pid=1, time=0.0, setup_s=1.0), ns=5)
    (tmp_path / "starts" / "fold-1-9.json.tmp-123").write_text('{"fold"')  # a write that a crash cut short
    assert [m.fold for m in records.starts()] == [0]
    (tmp_path / "fold-0.json").write_text(json.dumps({"fold": 0, "epochs_run": 1}))  # valid JSON, keys missing
    with pytest.raises(StorageError) as err:
        records.folds()
    assert str(tmp_path / "fold-0.json") in err.value.message and "FoldRecord" in err.value.message


def test_the_fits_progress_reads_back_as_last_written(tmp_path):
    from trainer.records import FitProgress

    records = FitRecords(str(tmp_path))
    assert records.progress() is None
    for step in (8, 16):
        records.write_progress(FitProgress(fold=1, k=3, epoch=0, epochs=2, step=step, steps=32, time=1.0))
    assert records.progress().step == 16
    assert records.progress().where() == "fold 2/3 epoch 1/2 step 16/32"
