"""trainer/epoch_end.py Heartbeat: rank 0 rewrites its progress record within a long epoch (what the sweep's console
view prints its heartbeat from), no more often than PROGRESS_EVERY_S, and no other rank writes."""

import time
from types import SimpleNamespace

from trainer import epoch_end
from trainer.records import FitRecords


def _worker(tmp_path, *, lead=True):
    train = SimpleNamespace(batch_size=4, grad_accum=2, epochs=3)
    spec = SimpleNamespace(train=train)
    return SimpleNamespace(lead=lead, records=FitRecords(str(tmp_path)), world=2, k=3, spec=spec)


def test_rank_0_writes_step_and_samples_per_second_within_the_epoch(tmp_path, monkeypatch):
    fe = SimpleNamespace(fold=1, micro_batches=40)
    w = _worker(tmp_path)
    beat = epoch_end.Heartbeat(w, fe, 2, done=4)  # resumed after 4 micro-batches of this epoch
    beat.beat(6)
    assert w.records.progress() is None  # within PROGRESS_EVERY_S of the epoch's start: nothing yet
    monkeypatch.setattr(epoch_end, "PROGRESS_EVERY_S", 0.0)
    beat.started = time.perf_counter() - 2.0  # 2 s into the epoch
    beat.beat(12)
    progress = w.records.progress()
    assert progress.where() == "fold 2/3 epoch 3/3 step 6/20"
    # (12 - 4) micro-batches x 2 ranks x 4 rows in ~2 s
    assert 29 < progress.samples_per_s <= 32


def test_other_ranks_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(epoch_end, "PROGRESS_EVERY_S", 0.0)
    w = _worker(tmp_path, lead=False)
    epoch_end.Heartbeat(w, SimpleNamespace(fold=0, micro_batches=8), 0, done=0).beat(4)
    assert w.records.progress() is None
