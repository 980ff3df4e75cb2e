"""Where a restarted worker group resumes (trainer.checkpoint): only from a checkpoint whose state.json is complete."""

import json

import pytest

from trainer.checkpoint import ENGINE_TAG, STATE, ResumeState, Saved, restore
from trainer.records import FoldRecord

FOLD0 = FoldRecord(
    fold=0, epochs_run=2, best_epoch=1, metrics={"f1_macro": 0.5}, history=[{"epoch": 0}, {"epoch": 1}], val_sha="ab"
)
SAVED = Saved(fit=0, fold=1, epoch=0, engine_saved=True, folds=(FOLD0,), history=({"epoch": 0},), resumes=0)


def _checkpoint(tmp_path, saved: Saved | None, *, engine: bool = True, raw: str | None = None):
    from ray.train import Checkpoint

    tmp_path.mkdir(parents=True, exist_ok=True)
    if engine:
        (tmp_path / ENGINE_TAG).mkdir()
        (tmp_path / ENGINE_TAG / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 64)
    if raw is not None:
        (tmp_path / STATE).write_text(raw)
    elif saved is not None:
        (tmp_path / STATE).write_text(json.dumps(saved.to_json()))
    return Checkpoint.from_directory(str(tmp_path))


def test_no_checkpoint_starts_from_scratch():
    assert restore(None) == ResumeState()


def test_a_complete_checkpoint_resumes_mid_fold(tmp_path):
    state = restore(_checkpoint(tmp_path / "c", SAVED))
    assert (state.fold, state.epoch, state.resumes) == (1, 0, 1) and state.engine_dir
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
    assert state.fold is None and state.engine_dir is None and state.folds == (FOLD0,)
    assert state.restarts_fold == 1 and state.resumes_of(1) == 1


def test_a_checkpoint_taken_as_its_fold_ended_restarts_at_the_next_fold(tmp_path):
    ended = Saved(fit=0, fold=0, epoch=1, engine_saved=True, folds=(FOLD0,), history=tuple(FOLD0.history), resumes=0)
    state = restore(_checkpoint(tmp_path / "c", ended))
    assert state.fold is None and state.folds == (FOLD0,) and state.restarts_fold == 1


def test_state_json_round_trips():
    assert Saved.from_json(json.loads(json.dumps(SAVED.to_json()))) == SAVED


def test_a_checkpoint_says_which_of_the_groups_fits_it_belongs_to(tmp_path):
    """A worker group running several fits resumes the checkpoint's fit (the earlier ones finished)."""
    import dataclasses

    later = dataclasses.replace(SAVED, fit=2)
    assert restore(_checkpoint(tmp_path / "mid", later)).fit == 2
    ended = dataclasses.replace(later, fold=0, folds=(FOLD0,), engine_saved=False)
    assert restore(_checkpoint(tmp_path / "between", ended, engine=False)).fit == 2
    legacy = {k: v for k, v in SAVED.to_json().items() if k != "fit"}  # written before fits were numbered
    assert restore(_checkpoint(tmp_path / "old", None, raw=json.dumps(legacy))).fit == 0
