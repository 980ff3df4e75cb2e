"""The worker recipe's pieces that need no cluster: best epoch and early stopping, throughput, row shards,
what an epoch reports, the out-of-memory record."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from trainer.loop import epoch_micro_batches, record_oom
from trainer.progress import EpochResult, FoldProgress, TrainedEpoch
from trainer.records import Diverged, FitRecords, FoldRecord
from trainer.spec import EpochReport
from trainer.worker import batches_per_rank, epoch_rows


def _spec(patience=None, mode="max"):
    train = SimpleNamespace(early_stopping_patience=patience, early_stopping_holdout=None)
    return SimpleNamespace(train=train, metric="f1_macro", mode=mode)


def _result(epoch, score, steps=(0.5, 0.5)):
    trained = TrainedEpoch(loss=1.0, step_times=steps, tokens=100, padded_tokens=160)
    return EpochResult(
        epoch=epoch, trained=trained, metrics={"f1_macro": score, "train_loss": 1.0, "per_class": {}}, seconds=1.234
    )


def _progress(*scores, spec=None):
    spec = spec or _spec(2)
    progress = FoldProgress()
    for epoch, score in enumerate(scores):
        result = _result(epoch, score)
        progress = progress.add(result, result.history_entry(world=2, batch_size=8), spec)
    return progress


def test_stalled_counts_epochs_without_improvement():
    assert not _progress(0.5, 0.6, 0.6).stalled(_spec(2))
    assert _progress(0.5, 0.6, 0.6, 0.55).stalled(_spec(2))
    assert not _progress(0.5, float("nan"), 0.7).stalled(_spec(2))
    assert not _progress(0.5, 0.4, 0.3, 0.2).stalled(_spec(None))
    assert not _progress(0.5, 0.4, 0.3).stalled(_spec(2, mode="min"))


def test_the_best_epoch_is_the_first_best_finite_score():
    assert _progress(0.5, 0.7, 0.7, 0.6).best.epoch == 1
    assert _progress(float("nan"), 0.2).best.epoch == 1
    assert _progress(0.5, 0.4, spec=_spec(2, mode="min")).best.epoch == 1


def test_history_entries_carry_scalar_metrics_and_the_worker_groups_throughput():
    entry = _result(3, 0.5, steps=(0.25, 0.5, 1.0)).history_entry(world=2, batch_size=8)
    assert entry["epoch"] == 3 and entry["f1_macro"] == 0.5 and "per_class" not in entry
    assert entry["steps"] == 3 and entry["time"] == 1.23 and entry["step_s"] == 0.5
    assert entry["samples_per_s"] == 32.0 and entry["tokens_per_s"] == round(200 / 1.75, 1)
    empty = _result(0, 0.5, steps=()).history_entry(world=2, batch_size=8)
    assert empty["steps"] == 0 and empty["samples_per_s"] is None


def test_every_rank_gets_an_equal_shard_of_a_seeded_shuffle():
    rows = np.arange(11)
    shards = [epoch_rows(rows, seed=1, fold=0, epoch=2, rank=r, world=3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3] and len(set(np.concatenate(shards))) == 9
    assert np.array_equal(shards[0], epoch_rows(rows, seed=1, fold=0, epoch=2, rank=0, world=3))
    assert not np.array_equal(shards[0], epoch_rows(rows, seed=1, fold=0, epoch=3, rank=0, world=3))
    assert batches_per_rank(11, 3, 2) == 2 and batches_per_rank(1, 2, 8) == 0


def test_an_epoch_report_flattens_to_its_epochs_scalars_and_costs():
    fold0 = FoldRecord(fold=0, epochs_run=2, best_epoch=1, metrics={"f1_macro": 0.5}, history=[], val_sha="x")
    report = EpochReport(
        fold=1,
        epoch=0,
        k=3,
        metric="f1_macro",
        metrics={"f1_macro": 0.6, "train_loss": 0.9},
        folds=(fold0,),
        timings={"train_s": 2.0},
        trainable_params=10,
        total_params=12,
        diverged=Diverged(fold=1, epoch=0, step=4, loss="nan"),
    )
    flat = report.flat()
    assert flat["epoch_f1_macro"] == 0.6 and flat["epoch_train_loss"] == 0.9
    assert (flat["fold"], flat["epoch"], flat["trainable_params"], flat["total_params"]) == (1, 0, 10, 12)
    assert flat["time_train_s"] == 2.0 and flat["time_eval_s"] == 0.0
    assert flat["diverged"] == 1 and '"step": 4' in flat["diverged_at"]
    assert not any(key.startswith(("objective", "folds_")) for key in flat)  # the fold objective is the sweep's


def test_an_out_of_memory_error_is_recorded_where_it_happened(tmp_path):
    w = SimpleNamespace(rank=1, records=FitRecords(str(tmp_path)))
    record_oom(w, MemoryError(), 0, 2, 5)  # no message: the record still says what it was
    oom = FitRecords(str(tmp_path)).oom()
    assert (oom.fold, oom.epoch, oom.step, oom.rank, oom.error) == (0, 2, 5, 1, "MemoryError: ")
    record_oom(
        SimpleNamespace(rank=0, records=None), RuntimeError("CUDA out of memory"), 0, 0, None
    )  # no records: logged only


def test_a_finished_fit_is_reported_again_from_its_records():
    folds = [
        FoldRecord(
            fold=i,
            epochs_run=3,
            best_epoch=2,
            metrics={"f1_macro": f, "per_class": {}},
            history=[],
            val_sha="x",
            trainable_params=10,
            total_params=12,
        )
        for i, f in enumerate([0.5, 0.7])
    ]
    report = EpochReport.finished(folds, k=2, metric="f1_macro")
    assert (report.fold, report.epoch, report.folds) == (1, 2, tuple(folds))
    assert report.metrics == {"f1_macro": 0.7} and report.timings["train_s"] == 0.0 and report.trainable_params == 10
    assert report.flat()["epoch_f1_macro"] == pytest.approx(0.7)


def test_an_epoch_so_far_round_trips_and_each_epochs_step_losses_are_kept():
    so_far = TrainedEpoch(loss=0.0, step_times=(0.1, 0.2), tokens=20, padded_tokens=24, losses=(3.0, 2.0))
    back = TrainedEpoch.from_json(json.loads(json.dumps(so_far.to_json())))
    assert back.losses == (3.0, 2.0) and back.loss == 2.5 and back.step_times == (0.1, 0.2) and back.tokens == 20
    spec, progress = _spec(), FoldProgress(step_losses=((4.0, 3.5),))
    for epoch, losses in enumerate([(3.0, 2.0), (1.5, 1.0)], start=1):
        result = EpochResult(epoch, dataclasses.replace(back, losses=losses), {"f1_macro": 0.5}, seconds=1.0)
        progress = progress.add(result, result.history_entry(world=1, batch_size=2), spec)
    assert progress.step_losses == ((4.0, 3.5), (3.0, 2.0), (1.5, 1.0)) and progress.last.epoch == 2


def test_every_epoch_and_step_checkpoint_ends_on_a_deepspeed_accumulation_boundary():
    """grad_accum 2 over 7 micro-batches a rank: DeepSpeed steps when (micro_steps + 1) % 2 == 0, micro_steps counted
    over the whole fold and from 0 after a checkpoint load; train_epoch saves every 2 optimizer steps (4 micro-batches)
    counted from the epoch's start. Both must agree in every epoch, or a save lands mid-accumulation."""
    train = SimpleNamespace(grad_accum=2, max_steps_per_epoch=None)
    per_epoch = epoch_micro_batches(7, train)
    assert per_epoch == 6 and epoch_micro_batches(1, train) == 2  # at least one whole cycle
    assert epoch_micro_batches(7, SimpleNamespace(grad_accum=2, max_steps_per_epoch=2)) == 4
    every, micro_steps = 2 * train.grad_accum, 0  # the fold's micro-batches so far, as DeepSpeed counts them
    for _epoch in range(3):
        for step in range(per_epoch):
            boundary = (micro_steps + 1) % train.grad_accum == 0  # DeepSpeed's is_gradient_accumulation_boundary
            micro_steps += 1
            if (step + 1) % every == 0 or step + 1 == per_epoch:  # train_epoch's save points and the epoch's end
                assert boundary, (_epoch, step)
