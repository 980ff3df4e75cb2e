"""Worker-loop helpers that need no cluster: resume decisions, early stopping, out-of-memory records."""

import json

import pytest

from trainer.loop import ENGINE_TAG, _resume_state, _stalled, is_oom, read_oom


def _checkpoint(tmp_path, state: dict | None, *, engine: bool = True, raw: str | None = None):
    from ray.train import Checkpoint

    tmp_path.mkdir(parents=True, exist_ok=True)
    if engine:
        (tmp_path / ENGINE_TAG).mkdir()
        (tmp_path / ENGINE_TAG / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 64)
    if raw is not None:
        (tmp_path / "state.json").write_text(raw)
    elif state is not None:
        (tmp_path / "state.json").write_text(json.dumps(state))
    return Checkpoint.from_directory(str(tmp_path))


STATE = {"fold": 1, "epoch": 0, "engine_saved": True, "fold_results": [{"fold": 0}], "history": [{"epoch": 0}], "resumes": 0}


def test_a_complete_checkpoint_resumes_mid_fold(tmp_path):
    state = _resume_state(_checkpoint(tmp_path / "c", STATE))
    assert (state["fold"], state["epoch"], state["resumes"]) == (1, 0, 1) and state["dir"]


@pytest.mark.parametrize("raw", [None, '{"fold": 1, "epo', ""], ids=["no state.json", "truncated", "empty"])
def test_a_half_written_checkpoint_is_ignored(tmp_path, raw):
    # The engine files were written, the state that says what they are was not (or not fully).
    state = _resume_state(_checkpoint(tmp_path / "c", None, raw=raw))
    assert state["fold"] is None and state["fold_results"] == [] and state["dir"] is None


def test_state_without_its_engine_files_restarts_the_fold_keeping_finished_folds(tmp_path):
    state = _resume_state(_checkpoint(tmp_path / "c", STATE, engine=False))
    assert state["fold"] is None and state["fold_results"] == [{"fold": 0}] and state["resumed_between_folds"] == 1


def test_stalled_counts_epochs_without_improvement():
    from types import SimpleNamespace

    spec = SimpleNamespace(train=SimpleNamespace(early_stopping_patience=2), metric="f1_macro", mode="max")
    scores = lambda *v: [{"f1_macro": x} for x in v]
    assert not _stalled(scores(0.5, 0.6, 0.6), spec)
    assert _stalled(scores(0.5, 0.6, 0.6, 0.55), spec)
    assert not _stalled(scores(0.5, float("nan"), 0.7), spec)


def test_oom_errors_are_recognised_and_read_back(tmp_path):
    import torch

    assert is_oom(MemoryError()) and is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert read_oom(str(tmp_path / "none")) is None
    (tmp_path / "oom-rank1.json").write_text(json.dumps({"fold": 0, "epoch": 1, "step": 4}))
    assert read_oom(str(tmp_path))["step"] == 4


def test_a_completed_fit_reports_its_fold_mean_again_from_its_records():
    from types import SimpleNamespace

    from trainer.loop import completed_report

    spec = SimpleNamespace(metric="f1_macro")
    records = [
        {"fold": i, "epochs_run": 3, "metrics": {"f1_macro": f, "accuracy": 0.9, "per_class": {}}, "trainable_params": 10, "total_params": 12}
        for i, f in enumerate([0.5, 0.7])
    ]
    report = completed_report(records, spec, 2)
    assert report["objective"] == pytest.approx(0.6) and report["objective_std"] == pytest.approx(0.1)
    assert (report["folds_done"], report["folds_total"], report["fold"], report["epoch"]) == (2, 2, 1, 2)
    assert report["fold0_f1_macro"] == 0.5 and report["epoch_f1_macro"] == 0.7 and "epoch_per_class" not in report
    assert report["trainable_params"] == 10 and report["time_train_s"] == 0.0
