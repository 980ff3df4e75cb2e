"""sweeps/search/view.py: the console view's lines, its ETA, its heartbeat and its whitelist of line patterns."""

import math

import pytest

from sweeps.search.refit_view import RefitProgress, refit_done, refit_started
from sweeps.search.view import (
    LINE_PATTERNS,
    SweepProgress,
    clock,
    eta_s,
    is_view_line,
    rough,
    short_params,
)
from trainer.records import FitProgress


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _view(clock_, lines, **over):
    kw = dict(metric="f1_macro", mode="max", k=3, num_trials=4, concurrent=2, epochs=lambda p: p.get("epochs", 2))
    return SweepProgress(**{**kw, **over}, write=lines.append, now=clock_)


def _epoch(fold, epoch, score, folds_done, objective=math.nan):
    return {"fold": fold, "epoch": epoch, "epoch_f1_macro": score, "folds_done": folds_done, "objective": objective}


def test_durations_read_as_people_write_them():
    assert [clock(s) for s in (0, 42.4, 372, 3600 + 125)] == ["0s", "42s", "6m12s", "1h02m"]
    assert [rough(s) for s in (40, 540, 569, 3900)] == ["40s", "9m", "9m", "1h05m"]
    assert short_params({"learning_rate": 3.1e-4, "batch_size": 16, "epochs": 2, "model.lora.alpha": 16.0}) == (
        "lr 3.1e-04 bs 16 ep 2 alpha 16"
    )


def test_eta_is_remaining_fold_fits_times_mean_fold_time_over_concurrency():
    assert eta_s(remaining_folds=9, fold_seconds=[], concurrent=2) is None  # unknown before a fold has ended
    assert eta_s(remaining_folds=9, fold_seconds=[50.0, 70.0], concurrent=2) == pytest.approx(9 * 60 / 2)
    assert eta_s(remaining_folds=0, fold_seconds=[50.0], concurrent=3) == 0


def test_epoch_lines_carry_fold_epoch_score_best_elapsed_and_an_approximate_eta():
    t, lines = Clock(), []
    view = _view(t, lines)
    view.trial("a", number=1, params={"learning_rate": 3.1e-4, "batch_size": 16})
    view.trial("b", number=2, params={"learning_rate": 1e-3, "batch_size": 8, "epochs": 1})
    t.t += 30
    view.epoch("a", _epoch(0, 0, 0.61, folds_done=0, objective=0.61))
    t.t += 30  # trial a's first fold took 60 s
    view.epoch("a", _epoch(0, 1, 0.83, folds_done=1, objective=0.83))
    t.t += 20  # trial b's first fold took 80 s
    view.epoch("b", _epoch(0, 0, 0.71, folds_done=1, objective=0.71))
    assert lines[0] == "trial 1/4 [lr 3.1e-04 bs 16] fold 1/3 epoch 1/2  f1_macro 0.6100  elapsed 30s"
    assert lines[1].startswith(
        "trial 1/4 [lr 3.1e-04 bs 16] fold 1/3 epoch 2/2  f1_macro 0.8300  best 0.8300 (trial 1)"
    )
    # 2 unstarted trials x 3 folds + 2 + 2 folds left = 10 fold fits x 70 s mean / 2 at once = 350 s
    assert lines[2] == (
        "trial 2/4 [lr 1.0e-03 bs 8 ep 1] fold 1/3 epoch 1/1  f1_macro 0.7100  best 0.8300 (trial 1)  elapsed 1m20s"
        "  ETA ~6m"
    )
    # Ray Train restarted trial a's worker group from its last checkpoint: the epoch it runs again says so.
    view.epoch("a", _epoch(0, 1, 0.84, folds_done=1, objective=0.83))
    assert " fold 1/3 epoch 2/2 again after a restart  f1_macro 0.8400  best" in lines[3]
    assert all(LINE_PATTERNS["epoch"].fullmatch(line) for line in lines)


def test_how_a_trial_ended_is_one_line_each_and_a_better_trial_becomes_the_best():
    t, lines = Clock(), []
    view = _view(t, lines, mode="min", metric="eval_loss")
    for tid, n in (("a", 1), ("b", 2), ("c", 3)):
        view.trial(tid, number=n, params={"learning_rate": 1e-3})
    view.completed("a", [0.4, 0.5, 0.6])
    view.pruned("b", folds_done=1, objective=0.9, scheduler="asha")
    view.failed("c", "out-of-memory at fold 0 epoch 0 step 0")
    view.trial("d", number=4, params={"learning_rate": 1e-4})
    view.completed("d", [0.1, 0.2, 0.3])
    kinds = [next(k for k, p in LINE_PATTERNS.items() if p.fullmatch(line)) for line in lines]
    assert kinds == ["completed", "pruned", "failed", "completed"]
    assert "eval_loss 0.5000 +/- 0.0816 over 3 folds" in lines[0]
    assert "pruned after 1/3 folds: eval_loss 0.9000 (mean so far), stopped by the asha scheduler" in lines[1]
    assert view.best == (pytest.approx(0.2), 4)  # lower is better under mode min
    assert view.remaining_folds() == 0


def test_a_heartbeat_shows_new_progress_at_most_every_interval():
    t, lines = Clock(), []
    view = _view(t, lines)
    view.trial("a", number=1, params={"batch_size": 8})

    def progress(step, at):
        return FitProgress(fold=0, k=3, epoch=0, epochs=2, step=step, steps=120, time=at, samples_per_s=35.25)

    t.t += 10
    view.heartbeat("a", progress(10, 1.0), every_s=30)  # the trial printed its start 10 s ago: too soon
    t.t += 25
    view.heartbeat("a", progress(40, 2.0), every_s=30)
    view.heartbeat("a", progress(40, 2.0), every_s=0)  # nothing new in the record: no line, whatever the interval
    assert lines == ["trial 1/4 [bs 8] fold 1/3 epoch 1/2 step 40/120  35.2 samples/s  elapsed 35s"]
    assert LINE_PATTERNS["heartbeat"].fullmatch(lines[0])


def test_refit_lines_put_its_test_score_beside_the_cross_validated_one(tmp_path):
    from sweeps.layout import SweepDir

    refit = {"n_train": 80, "n_test": 20, "metrics": {"f1_macro": 0.9}, "cv": {"mean": 0.85, "std": 0.03}}
    assert refit_done(refit, "f1_macro") == "refit done: test f1_macro 0.9000 (cross-validated 0.8500 +/- 0.0300)"
    lines = []
    shown = RefitProgress(SweepDir(str(tmp_path / "s")), write=lines.append, every_s=3600)
    shown.show(FitProgress(fold=0, k=1, epoch=0, epochs=2, step=5, steps=10, time=1.0))  # too soon for a heartbeat
    shown.show(FitProgress(fold=0, k=1, epoch=0, epochs=2, step=10, steps=10, time=2.0))  # an epoch's end shows
    shown.show(FitProgress(fold=0, k=1, epoch=0, epochs=2, step=10, steps=10, time=3.0))  # once
    assert lines == ["refit epoch 1/2 step 10/10  elapsed 0s"]
    for line in [refit_started("ab12", n_train=80, n_test=20), refit_done(refit, "f1_macro"), *lines]:
        assert is_view_line(line), line


def test_the_whitelist_refuses_library_chatter():
    for chatter in (
        "(RayTrainWorker pid=123) fold 1/3 epoch 1/2: train_loss 0.6931 f1_macro 0.3333, 12.0 samples/s",
        "2026-12-07 20:44:01,123 WARNING tune.py:123 -- Trial table",
        "Some weights of BertForSequenceClassification were not initialized from the model checkpoint",
        "trial 1/4 [lr 1e-3] fold 1/3 epoch 1/2  f1_macro 0.5",  # a view line cut short
    ):
        assert not is_view_line(chatter), chatter


def test_the_final_summary_shows_the_refit_test_score_beside_the_cross_validated_estimate():
    from sweeps.cli.tables import sweep_table

    best = {"trial_id": "t1", "mean": 0.81, "std": 0.02, "fold_scores": [0.8, 0.82], "params": {"learning_rate": 1e-3}}
    summary = {
        "name": "s",
        "metric": "f1_macro",
        "trials": [],
        "states": {"completed": 1, "pruned": 0, "failed": 0},
        "fold_fits": 2,
        "best": best,
        "storage": "/x/s",
    }
    assert "refit" not in sweep_table(summary)
    summary["refit"] = {"n_train": 80, "n_test": 20, "metrics": {"f1_macro": 0.84}}
    assert "  refit on 80 rows: test f1_macro 0.8400 on 20 held-out rows (cross-validated 0.8100 +/- 0.0200)" in (
        sweep_table(summary).splitlines()
    )


def test_tune_can_save_the_view_with_the_experiment_and_a_resumed_run_gets_none_of_it(tmp_path):
    from ray import cloudpickle

    from sweeps.config import load_config
    from sweeps.search.view import sweep_view

    cfg = load_config(raw={"name": "s", "data": {"path": "x.csv"}, "storage": {"path": str(tmp_path)}})
    with open(tmp_path / "console", "w") as console:  # what the view writes to: a file, which cannot be pickled
        view = sweep_view(cfg, sweep_uri=str(tmp_path / "s"), concurrent=1, write=console.write, heartbeat_s=30)
        restored = cloudpickle.loads(cloudpickle.dumps([view]))[0]
    assert type(restored).__name__ == "Callback" and not hasattr(restored, "_polled")


def test_a_trial_tune_ended_without_error_is_told_from_its_records(tmp_path):
    from sweeps.layout import SweepDir
    from sweeps.search.view import trial_ended
    from trainer.records import FoldRecord

    sweep, lines = SweepDir(str(tmp_path / "s")), []
    view = _view(Clock(), lines)

    def fold(tid, i, diverged=None):
        record = FoldRecord(fold=i, epochs_run=1, best_epoch=0, metrics={"f1_macro": 0.5}, history=[], val_sha="x")
        sweep.trial(tid).records.write_fold(FoldRecord(**{**record.to_json(), "diverged": diverged}))

    for n, tid in enumerate(("done", "stopped", "diverged"), start=1):
        view.trial(tid, number=n, params={})
    for i in range(3):
        fold("done", i)
    fold("stopped", 0)
    fold("diverged", 0, diverged={"fold": 0, "epoch": 0, "step": 3, "loss": "nan"})
    done = {"folds_done": 3, "fold0_f1_macro": 0.5, "fold1_f1_macro": 0.5, "fold2_f1_macro": 0.5}
    trial_ended(view, sweep, "done", done, scheduler="asha")
    for tid in ("stopped", "diverged"):  # the scheduler stopped both after their first fold
        trial_ended(view, sweep, tid, {"folds_done": 1, "objective": 0.5}, scheduler="asha")
    assert [line.split("] ", 1)[1].split("  elapsed")[0] for line in lines] == [
        "completed: f1_macro 0.5000 +/- 0.0000 over 3 folds",
        "pruned after 1/3 folds: f1_macro 0.5000 (mean so far), stopped by the asha scheduler",
        "failed: diverged at fold 0 epoch 0 step 3 (loss nan)",
    ]
