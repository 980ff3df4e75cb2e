"""sweeps/results/status.py: `zerotune sweep status` shows where a running trial's fold is, down to its step."""

from sweeps.config import load_config
from sweeps.layout import Params, SweepDir
from trainer.records import FitProgress, FoldRecord


def test_a_running_trial_shows_its_fold_epoch_and_step_and_an_ended_one_does_not(tmp_path):
    from sweeps.cli.tables import sweep_table
    from sweeps.results.status import sweep_status

    search = {"num_trials": 2, "space": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}}
    cfg = load_config(
        raw={
            "name": "s",
            "data": {"path": "x.csv"},
            "folds": {"k": 3},
            "search": search,
            "storage": {"path": str(tmp_path)},
        }
    )
    sweep = SweepDir.of(cfg)
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    for tid, folds in (("done", 3), ("running", 1)):
        trial = sweep.trial(tid)
        trial.write_params(Params(params={"learning_rate": 1e-3}, started=1.0))
        for fold in range(folds):
            record = FoldRecord(
                fold=fold, epochs_run=2, best_epoch=1, metrics={"f1_macro": 0.5}, history=[], val_sha="x"
            )
            trial.records.write_fold(record)
        at = {"fold": folds - 1, "epoch": 1, "step": 32} if tid == "done" else {"fold": 1, "epoch": 0, "step": 16}
        trial.records.write_progress(FitProgress(k=3, epochs=2, steps=32, time=1.0, **at))
    status = sweep_status(sweep.uri, storage=str(tmp_path))
    rows = {t["trial_id"]: t for t in status["trials"]}
    assert rows["running"]["state"] == "unfinished" and rows["done"]["state"] == "completed"
    assert rows["running"]["progress"]["where"] == "fold 2/3 epoch 1/2 step 16/32"
    assert rows["running"]["progress"]["step"] == 16 and rows["done"]["progress"] is None
    printed = sweep_table(status)
    assert "  running at fold 2/3 epoch 1/2 step 16/32" in printed and "done at" not in printed
