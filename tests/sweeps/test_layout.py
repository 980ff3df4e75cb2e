"""sweeps/layout.py: one owner for every path of a sweep directory, typed records, the trial states."""

import json

from sweeps.layout import Params, SweepDir, TrialState, check_writable
from trainer.records import FoldRecord


def test_paths_live_under_the_sweep_and_records_round_trip(tmp_path):
    sweep = SweepDir(str(tmp_path / "s"))
    assert not sweep.exists()
    sweep.write(sweep.config, {"name": "s"})
    assert sweep.exists() and sweep.read(sweep.config) == {"name": "s"} and sweep.read(sweep.summary, {}) == {}
    trial = sweep.trial("t1")
    trial.write_params(Params(params={"learning_rate": 1e-3}, started=5.0))
    trial.records.write_fold(
        FoldRecord(fold=0, epochs_run=1, best_epoch=0, metrics={"f1_macro": 0.5}, history=[], val_sha="a")
    )
    assert sweep.trial_ids() == ["t1"] and trial.params() == Params(params={"learning_rate": 1e-3}, started=5.0)
    assert [f.score("f1_macro") for f in trial.records.folds()] == [0.5]
    assert sweep.trial("never-started").params() == Params(params={})
    for path in (
        sweep.folds,
        sweep.data,
        sweep.refit_metrics,
        sweep.refit_model,
        sweep.report,
        sweep.train_run("x").metrics,
    ):
        assert path.startswith(sweep.uri)


def test_trial_states_are_the_report_schemas_states():
    from importlib.resources import files

    schema = json.loads(files("sweeps.report").joinpath("report.schema.json").read_text())
    assert schema["$defs"]["state"]["enum"] == [s.value for s in TrialState]
    assert schema["properties"]["states"]["required"] == [s.value for s in TrialState]


def test_storage_probe_leaves_nothing_behind(tmp_path):
    check_writable(str(tmp_path / "new"), keep=False)
    assert not (tmp_path / "new").exists()
    check_writable(str(tmp_path / "kept"))
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())
