"""sweeps/layout.py: one owner for every path of a sweep directory, typed records, the trial states."""

import json
import os
import threading

import pytest

from sweeps.layout import Params, SweepDir, TrialState, check_trusted, check_writable, probe_path, write_probe
from trainer.records import FoldRecord
from zerotune.errors import StorageError


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
        sweep.new_refit().metrics,
        sweep.new_refit().model,
        sweep.refit_latest,
        sweep.report,
        sweep.train_run("x").metrics,
    ):
        assert path.startswith(sweep.uri)


def test_each_refit_has_its_own_directory_and_latest_names_the_last_completed(tmp_path):
    sweep = SweepDir(str(tmp_path / "s"))
    assert sweep.latest_refit() is None
    first, second = sweep.new_refit(), sweep.new_refit()
    assert first.uri != second.uri and first.ray_run() == (sweep.refit, first.uri.rsplit("/", 1)[1])
    sweep.mark_refit_complete(first)
    assert sweep.latest_refit().metrics == first.metrics
    # `second` is running (or failed): until it is marked, readers keep getting the first refit whole.
    sweep.write(second.metrics, {"partial": True})
    assert sweep.latest_refit().model == first.model
    sweep.mark_refit_complete(second)
    assert sweep.latest_refit().model == second.model


def test_a_sweep_refitted_before_refit_runs_had_directories_still_shows_its_refit(tmp_path):
    sweep = SweepDir(str(tmp_path / "s"))
    sweep.write(f"{sweep.refit}/metrics.json", {"trial_id": "t"})  # the former layout: refit/metrics.json
    assert sweep.latest_refit().uri == sweep.refit


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


def test_each_writer_probes_with_a_file_of_its_own(tmp_path):
    # Two runs (or a run and its storage watch) probing at once: neither may delete the other's probe.
    other = tmp_path / ".write-test"  # the one name every writer shared before
    other.write_text("another writer's probe")
    write_probe(str(tmp_path))
    assert other.read_text() == "another writer's probe" and sorted(tmp_path.iterdir()) == [other]
    names = []
    thread = threading.Thread(target=lambda: names.append(probe_path(str(tmp_path))))
    thread.start()
    thread.join()
    assert names[0] != probe_path(str(tmp_path)) != str(other)


def _sweep_dirs(tmp_path) -> SweepDir:
    sweep = SweepDir(str(tmp_path / "s"))
    for path in (sweep.tune, sweep.trials):
        os.makedirs(path)
    for path in (sweep.uri, sweep.tune, sweep.trials):
        os.chmod(path, 0o775)  # group-writable: a volume shared with the Ray user's group is fine
    return sweep


def test_resuming_refuses_a_world_writable_sweep_directory(tmp_path):
    sweep = _sweep_dirs(tmp_path)
    check_trusted(sweep.uri)
    check_trusted(f"file://{sweep.uri}")
    check_trusted("s3://bucket/sweep")  # object stores: their access policies decide (README, Trust)
    for path in (sweep.uri, sweep.tune, sweep.trials):
        os.chmod(path, 0o777)
        for uri in (sweep.uri, f"file://{sweep.uri}"):
            with pytest.raises(StorageError) as err:
                check_trusted(uri)
            assert err.value.message.startswith(f"refusing to resume from {path}: it is writable by every user")
            assert f"chmod o-w {path}" in err.value.fix and "copy the sweep directory" in err.value.fix
        os.chmod(path, 0o775)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_resuming_refuses_a_sweep_directory_owned_by_another_user(tmp_path):
    sweep = _sweep_dirs(tmp_path)
    os.chown(sweep.trials, 4242, -1)
    with pytest.raises(StorageError) as err:
        check_trusted(sweep.uri)
    assert f"{sweep.trials}: it is owned by uid 4242, not by this user (uid 0)" in err.value.message
    assert f"chown -R 0 {sweep.trials}" in err.value.fix
