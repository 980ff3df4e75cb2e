"""Where a restarted worker group resumes (trainer.checkpoint): only from a checkpoint whose state.json and engine
files are whole, else from the one before it; and the engine is loaded without leaving a copy behind."""

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from trainer.checkpoint import ENGINE_TAG, STATE, ResumeState, Saved, load_engine, restore, write_manifest
from trainer.records import FoldRecord

FOLD0 = FoldRecord(
    fold=0, epochs_run=2, best_epoch=1, metrics={"f1_macro": 0.5}, history=[{"epoch": 0}, {"epoch": 1}], val_sha="ab"
)
SAVED = Saved(fit=0, fold=1, epoch=0, engine_saved=True, folds=(FOLD0,), history=({"epoch": 0},), resumes=0, ranks=2)
ENGINE_FILES = [  # what DeepSpeed's ZeRO-1 saves, per rank
    ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"],
    ["zero_pp_rank_1_mp_rank_00_optim_states.pt"],
]


def _checkpoint(path, saved: Saved | None, *, engine: bool = True, raw: str | None = None, filesystem=None):
    """A checkpoint directory as `report` leaves it: each rank's engine files and manifest, rank 0's state.json."""
    from ray.train import Checkpoint

    path.mkdir(parents=True, exist_ok=True)
    for rank in range((saved.ranks if saved else None) or 1) if engine else ():
        with tempfile.TemporaryDirectory() as own:  # each rank saves into a directory of its own ...
            (Path(own) / ENGINE_TAG).mkdir()
            for name in ENGINE_FILES[rank]:
                (Path(own) / ENGINE_TAG / name).write_bytes(b"\1" * (64 + rank))
            write_manifest(own, rank=rank)
            shutil.copytree(own, path, dirs_exist_ok=True)  # ... and Ray Train uploads each into the checkpoint
    if raw is not None:
        (path / STATE).write_text(raw)
    elif saved is not None:
        (path / STATE).write_text(json.dumps(saved.to_json()))
    if filesystem is not None:
        return Checkpoint(path=str(path), filesystem=filesystem)
    return Checkpoint.from_directory(str(path))


def test_no_checkpoint_starts_from_scratch():
    assert restore(None) == ResumeState()


def test_a_complete_checkpoint_resumes_mid_fold(tmp_path):
    state = restore(_checkpoint(tmp_path / "c", SAVED))
    assert (state.fold, state.epoch, state.resumes) == (1, 0, 1) and state.checkpoint.path == str(tmp_path / "c")
    assert state.folds == (FOLD0,) and state.history == ({"epoch": 0},)
    assert state.resumes_of(1) == 1 and state.resumes_of(2) == 0


@pytest.mark.parametrize(
    "raw", [None, '{"fold": 1, "epo', "", '{"fold": 1}'], ids=["no state.json", "truncated", "empty", "keys missing"]
)
def test_a_half_written_checkpoint_is_ignored(tmp_path, raw):
    # The engine files were written, the state that says what they are was not (or not fully).
    assert restore(_checkpoint(tmp_path / "c", None, raw=raw)) == ResumeState()


def test_state_without_its_engine_files_restarts_the_fold_keeping_finished_folds(tmp_path):
    state = restore(_checkpoint(tmp_path / "c", SAVED, engine=False))
    assert state.fold is None and state.checkpoint is None and state.folds == (FOLD0,)
    assert state.restarts_fold == 1 and state.resumes_of(1) == 1


def test_a_checkpoint_taken_as_its_fold_ended_restarts_at_the_next_fold(tmp_path):
    # Fold 0 had been restarted twice; the next fold's restart is its first, whatever fold 0's count.
    ended = Saved(fit=0, fold=0, epoch=1, engine_saved=True, folds=(FOLD0,), history=tuple(FOLD0.history), resumes=2)
    state = restore(_checkpoint(tmp_path / "c", ended))
    assert state.fold is None and state.folds == (FOLD0,) and state.restarts_fold == 1
    assert state.resumes_of(1) == 1


def test_state_json_round_trips():
    assert Saved.from_json(json.loads(json.dumps(SAVED.to_json()))) == SAVED


def test_a_checkpoint_says_which_of_the_groups_fits_it_belongs_to(tmp_path):
    """A worker group running several fits resumes the checkpoint's fit (the earlier ones finished)."""
    later = dataclasses.replace(SAVED, fit=2)
    assert restore(_checkpoint(tmp_path / "mid", later)).fit == 2
    ended = dataclasses.replace(later, fold=0, folds=(FOLD0,), engine_saved=False)
    assert restore(_checkpoint(tmp_path / "between", ended, engine=False)).fit == 2
    legacy = {k: v for k, v in SAVED.to_json().items() if k not in ("fit", "ranks")}  # before fits and manifests
    assert restore(_checkpoint(tmp_path / "old", None, raw=json.dumps(legacy))).fit == 0


# Ray Train's run directory: checkpoint_<time_ns>_..., the last two kept; get_checkpoint() gives the newest.
OLDER, LATEST, UNREGISTERED = "checkpoint_1000_f01_e000", "checkpoint_2000_f01_e001", "checkpoint_3000_f01_e002"


def _damage(path, how: str) -> None:
    if how == "state truncated":
        (path / STATE).write_text((path / STATE).read_text()[:40])
    elif how == "engine file truncated":
        target = path / ENGINE_TAG / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
        target.write_bytes(target.read_bytes()[:10])
    elif how == "engine file missing":
        (path / ENGINE_TAG / "mp_rank_00_model_states.pt").unlink()
    elif how == "a rank's manifest missing":
        (path / "engine-rank1.json").unlink()


@pytest.mark.parametrize(
    "how", ["state truncated", "engine file truncated", "engine file missing", "a rank's manifest missing"]
)
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, how):
    older = dataclasses.replace(SAVED, epoch=0, history=({"epoch": 0},))
    _checkpoint(tmp_path / OLDER, older)
    latest = _checkpoint(tmp_path / LATEST, dataclasses.replace(SAVED, epoch=1, history=({"epoch": 0}, {"epoch": 1})))
    assert restore(latest).epoch == 1  # whole: the latest is used
    _damage(tmp_path / LATEST, how)
    state = restore(latest)
    assert (state.fold, state.epoch, state.folds) == (1, 0, (FOLD0,))
    assert state.checkpoint.path == str(tmp_path / OLDER) and state.resumes == 1


def test_a_newer_directory_than_the_latest_checkpoint_is_never_used(tmp_path):
    """A checkpoint directory newer than Ray Train's latest was uploaded but its report never registered."""
    _checkpoint(tmp_path / UNREGISTERED, dataclasses.replace(SAVED, epoch=2))
    _checkpoint(tmp_path / OLDER, SAVED)
    latest = _checkpoint(tmp_path / LATEST, dataclasses.replace(SAVED, epoch=1), raw="{")
    assert restore(latest).checkpoint.path == str(tmp_path / OLDER)


def test_a_damaged_engine_never_costs_a_finished_fold(tmp_path):
    """The previous checkpoint is older than a fold the damaged one had finished: restart that fold's successor."""
    fold1 = dataclasses.replace(FOLD0, fold=1)
    _checkpoint(tmp_path / OLDER, dataclasses.replace(SAVED, fold=1, epoch=0, folds=(FOLD0,)))
    latest = _checkpoint(tmp_path / LATEST, dataclasses.replace(SAVED, fold=2, epoch=0, folds=(FOLD0, fold1)))
    _damage(tmp_path / LATEST, "engine file missing")
    state = restore(latest)
    assert state.folds == (FOLD0, fold1) and state.restarts_fold == 2 and state.checkpoint is None


class _EngineLoad:
    """Stands in for DeepSpeed's engine.load_checkpoint: records which files it was given to read."""

    def __init__(self):
        self.seen = None

    def load_checkpoint(self, load_dir, tag):
        self.seen = (load_dir, sorted(os.listdir(os.path.join(load_dir, tag))))


@pytest.mark.parametrize("storage", ["local disk", "object store"])
def test_resuming_leaves_no_checkpoint_copy_in_the_temp_dir(tmp_path, monkeypatch, storage):
    """Every rank restores: a copy per rank left in /tmp would fill it. On a local disk the engine is read in
    place; from other storage (a non-local pyarrow filesystem) it is downloaded and the copy deleted once loaded."""
    import pyarrow.fs as pafs

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    fs = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem()) if storage == "object store" else None
    ckpt = _checkpoint(tmp_path / "run" / LATEST, SAVED, filesystem=fs)
    state = restore(ckpt)
    engine = _EngineLoad()
    load_engine(engine, state)
    assert engine.seen[1] == sorted(ENGINE_FILES[0] + ENGINE_FILES[1])  # the engine saw every file the checkpoint holds
    in_place = engine.seen[0] == str(tmp_path / "run" / LATEST)
    assert in_place == (storage == "local disk")  # the object store's engine was read from a download
    assert [p.name for p in temp.iterdir()] == []  # no zt-restore-*, no download left behind


def test_folds_recorded_after_the_checkpoint_are_not_run_again(tmp_path):
    """The report that ended fold 1 was lost (the worker died before Ray Train registered it): the checkpoint
    restored from is mid fold 1, but fold 1's record says it finished. Fold 2 runs next, fold 1 does not."""
    from trainer.checkpoint import past_recorded_folds
    from trainer.records import FitRecords, rows_sha

    val_rows = [[0, 1], [2, 3], [4, 5]]
    records = FitRecords(str(tmp_path / "records"))
    fold = {i: dataclasses.replace(FOLD0, fold=i, val_sha=rows_sha(rows)) for i, rows in enumerate(val_rows)}
    for i in (0, 1):
        records.write_fold(fold[i])
    mid_fold_1 = ResumeState(folds=(fold[0],), fold=1, epoch=2, resumes=0)
    state = past_recorded_folds(mid_fold_1, records, val_rows, exported=False)
    assert state == ResumeState(folds=(fold[0], fold[1]), resumes=1, restarts_fold=2)
    # A fit that exports keeps its last fold for its checkpoint (the model is exported after the fold is recorded).
    records.write_fold(fold[2])
    assert past_recorded_folds(mid_fold_1, records, val_rows, exported=True).folds == (fold[0], fold[1])
    # A record of other validation rows (another split) or of a diverged fold is not a finished fold.
    assert past_recorded_folds(mid_fold_1, records, [[0, 1], [9], [4, 5]], exported=False) == mid_fold_1
    records.write_fold(dataclasses.replace(fold[1], diverged={"fold": 1, "epoch": 0, "step": 3, "loss": "nan"}))
    assert past_recorded_folds(mid_fold_1, records, val_rows, exported=False) == mid_fold_1


def test_a_mid_epoch_checkpoint_resumes_inside_its_epoch_with_the_steps_done(tmp_path):
    """train.checkpoint_every_steps: the epoch so far (its micro-batches' losses, times, tokens) comes back with the
    engine, so the restarted epoch continues at its next micro-batch; the fold's earlier epochs' step losses too."""
    partial = {"losses": [2.5, 2.25, 2.0], "step_times": [0.1, 0.1, 0.1], "tokens": 30, "padded_tokens": 36}
    mid = dataclasses.replace(SAVED, epoch=1, step_losses=((3.0, 2.75),), partial=partial)
    assert Saved.from_json(json.loads(json.dumps(mid.to_json()))) == mid
    state = restore(_checkpoint(tmp_path / "c", mid))
    assert (state.fold, state.epoch, state.partial) == (1, 1, partial) and state.step_losses == ((3.0, 2.75),)
    assert restore(_checkpoint(tmp_path / "epoch-end", SAVED)).partial is None
