"""sweeps/search/study.py (and the searcher's use of it): the sweep's Optuna study is a standard RDB study, read back
here with plain `optuna.load_study` as optuna-dashboard reads it: every trial's state, params, fold scores
(step = fold) and user attributes; Tune's pickled searcher holds no database, and a resumed run neither tells a
trial twice nor loses one; on object storage the driver's SQLite file is uploaded after each trial and downloaded on
resume (a real S3-protocol server, moto's); a password in the URL is refused. Real Optuna, SQLite, Tune searchers."""

import pickle

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.config import load_config
from sweeps.layout import SweepDir
from sweeps.search.searcher import ORPHAN, TUNE_ID, make_searcher
from sweeps.search.study import on_network_fs, study_store, sync_study
from trainer.records import FoldRecord, OomRecord
from trainer.storage import read_bytes, write_bytes
from zerotune.errors import ConfigError

LR = {"low": 1e-5, "high": 1e-2, "log": True}


def _cfg(storage: str, **search):
    space = {"learning_rate": LR, "method": ["full", "lora"], "lora_rank": [4, 8]}
    raw = {"name": "s", "data": {"path": "x.csv"}, "folds": {"k": 3}, "storage": {"path": storage}}
    return load_config(raw={**raw, "search": {"space": space, **search}})


def _result(scores: list[float], k: int = 3, **extra) -> dict:
    out = {f"fold{i}_f1_macro": s for i, s in enumerate(scores)}
    return {**out, "objective": sum(scores) / len(scores), "folds_done": len(scores), "folds_total": k, **extra}


def _load(path) -> optuna.Study:
    return optuna.load_study(storage=f"sqlite:///{path}", study_name="s")


def _by_tune_id(study) -> dict:
    return {t.user_attrs.get(TUNE_ID): t for t in study.trials}


def test_the_study_on_disk_holds_every_trial_as_the_dashboard_reads_it(tmp_path):
    cfg = _cfg(str(tmp_path))
    search = make_searcher(cfg)
    params = {tid: search.suggest(tid) for tid in ("done", "pruned", "oom", "running")}
    search.on_trial_result("done", _result([0.5]))
    search.on_trial_complete("done", _result([0.5, 0.7, 0.9], time_total_s=12.5))
    search.on_trial_result("pruned", _result([0.2]))
    search.on_trial_complete("pruned", _result([0.2], time_total_s=4.0))
    SweepDir.of(cfg).trial("oom").records.write_oom(OomRecord(fold=1, epoch=0, step=3, rank=0, error="CUDA oom"))
    search.on_trial_complete("oom", _result([0.4]), error=True)
    search.on_trial_result("running", _result([0.6]))

    study = _load(tmp_path / "s" / "study.db")  # a reader of its own, as optuna-dashboard is
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and study.metric_names == ["f1_macro"]
    assert study.user_attrs["sweep"] == str(tmp_path / "s")
    trials = _by_tune_id(study)
    assert set(trials) == set(params)
    for tid, trial in trials.items():
        assert trial.params == params[tid]  # conditional: lora_rank only where method is lora
    done, pruned, oom, running = (trials[t] for t in ("done", "pruned", "oom", "running"))
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(0.7)
    assert done.intermediate_values == {0: 0.5, 1: 0.7, 2: 0.9}
    assert done.user_attrs["duration_s"] == 12.5 and done.user_attrs["folds_done"] == 3
    assert "reason" not in done.user_attrs
    assert pruned.state == TrialState.PRUNED and pruned.intermediate_values == {0: 0.2}
    assert pruned.user_attrs["reason"] == "stopped by the scheduler after 1 of 3 folds"
    assert oom.state == TrialState.FAIL and oom.user_attrs["reason"] == "out-of-memory at fold 1 epoch 0 step 3"
    assert running.state == TrialState.RUNNING and running.intermediate_values == {0: 0.6}


def test_tune_pickles_the_searcher_without_its_database_and_a_resumed_run_tells_no_trial_twice(tmp_path):
    points = [{"learning_rate": lr, "method": "full"} for lr in (1e-4, 2e-4, 3e-4)]
    cfg = _cfg(str(tmp_path), initial_points=points)
    first = make_searcher(cfg)
    for tid in ("a", "b"):
        first.suggest(tid)
    first.on_trial_result("a", _result([0.5]))
    blob = pickle.dumps(first)  # what Tune writes into tuner.pkl
    assert b"sqlalchemy" not in blob and b"RDBStorage" not in blob  # no engine, no session: no database
    assert pickle.loads(blob)._ot_study is None
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's last save of the experiment; then, before the driver dies:
    first.on_trial_complete("a", _result([0.5, 0.6, 0.7]))  # a ends
    first.suggest("c")  # and c is proposed (the third initial point): neither is in the saved state

    resumed = make_searcher(cfg)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    # Tune resumes a from its fold records and reports it again: it stays the one COMPLETE trial it was
    resumed.on_trial_result("a", _result([0.5, 0.6]))
    resumed.on_trial_complete("a", _result([0.5, 0.6, 0.7]))
    resumed.on_trial_complete("b", _result([0.1, 0.2, 0.3]))
    study = _load(tmp_path / "s" / "study.db")
    trials = _by_tune_id(study)
    assert len(study.trials) == 4  # a, b, the orphan c, and c's point waiting again
    assert trials["a"].state == TrialState.COMPLETE and trials["a"].intermediate_values == {0: 0.5, 1: 0.6, 2: 0.7}
    assert trials["b"].state == TrialState.COMPLETE and trials["b"].value == pytest.approx(0.2)
    assert trials["c"].state == TrialState.FAIL and trials["c"].user_attrs["reason"] == ORPHAN
    assert resumed.suggest("d") == {"learning_rate": 3e-4, "method": "full"}  # the orphan's point still runs


def test_on_object_storage_the_study_is_uploaded_after_each_trial_and_downloaded_on_resume(
    s3_server, tmp_path, monkeypatch
):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-1"))
    cfg = _cfg(s3_server.uri("results"))
    store = study_store(cfg)
    assert store.upload_to == SweepDir.of(cfg).study and store.local.startswith(str(tmp_path / "driver-1"))

    first = make_searcher(cfg)
    first.suggest("a")
    first.suggest("b")
    first.on_trial_result("b", _result([0.3]))
    first.on_trial_complete("a", _result([0.5, 0.6, 0.7]))  # uploaded now
    first.save(str(tmp_path / "searcher.pkl"))
    (tmp_path / "stored.db").write_bytes(read_bytes(store.upload_to))
    stored = _by_tune_id(_load(tmp_path / "stored.db"))
    assert stored["a"].state == TrialState.COMPLETE and stored["b"].intermediate_values == {0: 0.3}
    first.on_trial_result("b", _result([0.3, 0.4]))
    sync_study(cfg)  # the run ends (stopped with b running): its latest fold reaches the storage too

    # The sweep resumes on another driver, with no local copy: it starts from the stored study.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-2"))
    resumed = make_searcher(cfg)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert study_store(cfg).local.startswith(str(tmp_path / "driver-2"))
    resumed.on_trial_complete("b", _result([0.3, 0.4, 0.5]))
    (tmp_path / "stored.db").write_bytes(read_bytes(store.upload_to))
    stored = _load(tmp_path / "stored.db")
    assert len(stored.trials) == 2
    assert _by_tune_id(stored)["b"].intermediate_values == {0: 0.3, 1: 0.4, 2: 0.5}


def test_a_trial_the_stored_study_lacks_is_recreated_and_no_initial_point_runs_twice(s3_server, tmp_path, monkeypatch):
    """The driver died before any trial ended, so nothing was uploaded, while Tune had saved its running trial."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-1"))
    points = [{"learning_rate": lr, "method": "full"} for lr in (1e-4, 2e-4)]
    cfg = _cfg(s3_server.uri("results"), initial_points=points)
    first = make_searcher(cfg)
    drawn = first.suggest("a")
    first.on_trial_result("a", _result([0.5]))
    first.save(str(tmp_path / "searcher.pkl"))

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-2"))
    resumed = make_searcher(cfg)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert resumed.suggest("b") == points[1]  # not points[0] again: trial a took it
    resumed.on_trial_complete("a", _result([0.5, 0.6, 0.7]))
    (tmp_path / "stored.db").write_bytes(read_bytes(study_store(cfg).upload_to))
    trials = _by_tune_id(_load(tmp_path / "stored.db"))
    assert set(trials) == {"a", "b"} and trials["a"].params == drawn == points[0]
    assert trials["a"].state == TrialState.COMPLETE and trials["a"].intermediate_values == {0: 0.5, 1: 0.6, 2: 0.7}


def test_a_trial_tune_saved_as_ended_is_told_its_end_when_the_stored_study_missed_it(s3_server, tmp_path, monkeypatch):
    """The upload after b and c ended failed (only warned), Tune's next save succeeded, the driver died: the stored
    study has b running and no c at all, while Tune's saved searcher has both as ended."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-1"))
    cfg = _cfg(s3_server.uri("results"))
    store = study_store(cfg)
    first = make_searcher(cfg)
    first.suggest("a")
    first.suggest("b")
    first.on_trial_result("b", _result([0.3]))
    first.on_trial_complete("a", _result([0.5, 0.6, 0.7]))  # uploaded
    as_of_a = read_bytes(store.upload_to)
    first.suggest("c")
    first.on_trial_complete("b", _result([0.3, 0.4, 0.5]))
    first.on_trial_complete("c", _result([0.1]))  # stopped by the scheduler after fold 0
    first.save(str(tmp_path / "searcher.pkl"))
    write_bytes(store.upload_to, as_of_a)  # the stored copy, as if the uploads after b and c had failed

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-2"))  # resumed on another driver
    resumed = make_searcher(cfg)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_complete("b", _result([0.3, 0.4, 0.5]))  # ignored: Tune saved it as ended
    trials = _by_tune_id(resumed._ot_study)
    assert trials["b"].state == TrialState.COMPLETE and trials["b"].value == pytest.approx(0.4)
    assert trials["b"].intermediate_values == {0: 0.3, 1: 0.4, 2: 0.5}
    assert trials["c"].state == TrialState.PRUNED and trials["c"].intermediate_values == {0: 0.1}
    assert trials["c"].user_attrs["reason"] == "stopped by the scheduler after 1 of 3 folds"
    assert trials["a"].state == TrialState.COMPLETE and len(resumed._ot_study.trials) == 3


def test_a_searcher_saved_without_trial_ends_tells_them_from_the_fold_records(tmp_path):
    """A searcher pickled before it kept how trials ended: the study learns a finished trial's folds from its
    records, and a trial whose records show no end fails with why. (A local study, lost, stands for an old copy.)"""
    cfg = _cfg(str(tmp_path))
    first = make_searcher(cfg)
    for tid in ("done", "lost"):
        first.suggest(tid)
        first.on_trial_complete(tid, _result([0.5]), error=True)
    for fold, score in enumerate([0.5, 0.6, 0.7]):
        record = FoldRecord(fold=fold, epochs_run=1, best_epoch=0, metrics={"f1_macro": score}, history=[], val_sha="")
        SweepDir.of(cfg).trial("done").records.write_fold(record)
    state = first.__getstate__()
    state.pop("_ended", None)  # what an older zerotune pickled
    (tmp_path / "searcher.pkl").write_bytes(pickle.dumps(state))
    (tmp_path / "s" / "study.db").unlink()

    resumed = make_searcher(cfg)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    trials = _by_tune_id(_load(tmp_path / "s" / "study.db"))
    assert trials["done"].state == TrialState.COMPLETE and trials["done"].value == pytest.approx(0.6)
    assert trials["done"].intermediate_values == {0: 0.5, 1: 0.6, 2: 0.7}
    assert trials["lost"].state == TrialState.FAIL and "an upload failed" in trials["lost"].user_attrs["reason"]


def test_a_local_study_newer_than_its_stored_copy_is_kept_and_an_older_one_replaced(s3_server, tmp_path, monkeypatch):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-1"))
    cfg = _cfg(s3_server.uri("results"))
    store = study_store(cfg)
    first = make_searcher(cfg)
    first.suggest("a")
    first.on_trial_complete("a", _result([0.5, 0.6, 0.7]))
    as_of_a = read_bytes(store.upload_to)
    first.suggest("b")
    first.on_trial_complete("b", _result([0.2], time_total_s=1.0), error=True)
    write_bytes(store.upload_to, as_of_a)  # b's upload failed

    again = make_searcher(cfg)  # the same driver runs again: its local file has b's end, the stored copy does not
    assert _by_tune_id(again._ot_study)["b"].state == TrialState.FAIL

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-2"))  # another driver goes on from the stored copy
    other = make_searcher(cfg)
    other.suggest("c")
    other.on_trial_complete("c", _result([0.1, 0.2, 0.3]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-1"))
    back = _by_tune_id(make_searcher(cfg)._ot_study)  # driver-1's local file is not the stored one plus changes
    assert back["c"].state == TrialState.COMPLETE and "b" not in back


def test_a_sqlalchemy_url_is_used_as_it_is_and_a_study_of_another_sweep_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    cfg = _cfg(str(tmp_path / "one"), study_storage=url)
    make_searcher(cfg).suggest("a")
    assert _load(tmp_path / "shared.db").trials[0].user_attrs[TUNE_ID] == "a"
    assert not (tmp_path / "one" / "s" / "study.db").exists()
    with pytest.raises(ConfigError) as err:  # the same sweep name under another storage path
        make_searcher(_cfg(str(tmp_path / "two"), study_storage=url))
    assert err.value.problems[0][0] == "search.study_storage" and "another sweep" in err.value.problems[0][1]


@pytest.mark.parametrize(
    "url, why",
    [
        ("postgresql://zt:s3cret@db.example/optuna", "password"),
        ("postgresql://db.example/optuna?password=s3cret", "password"),
        ("postgresql+nosuchdriver://db.example/optuna", "no database driver"),
        ("not a url", "SQLAlchemy"),
        ("sqlite:///study.db", "absolute path"),  # the driver's working directory: a temporary one under a job
    ],
)
def test_a_password_or_an_unusable_url_is_refused_before_anything_runs(tmp_path, url, why):
    with pytest.raises(ConfigError) as err:
        _cfg(str(tmp_path), study_storage=url)
    (field, message, fix), *_ = err.value.problems
    assert field == "search.study_storage" and why in message
    assert "s3cret" not in f"{message} {fix}"


def test_a_sweep_on_a_network_volume_keeps_its_study_on_the_driver():
    mounts = "/dev/sda1 / ext4 rw 0 0\nfs-1.efs:/ /mnt/results nfs4 rw 0 0\ntmpfs /mnt/results/tmp tmpfs rw 0 0\n"
    assert on_network_fs("/mnt/results/sweep", mounts)
    assert not on_network_fs("/mnt/results/tmp/sweep", mounts) and not on_network_fs("/home/me/results", mounts)
    assert not on_network_fs("/mnt/results-local", mounts)


@pytest.mark.integration
def test_a_real_sweeps_study_shows_every_trial_as_its_summary_does(tiny_sweep):
    """The shared tiny sweep (completed, pruned, out-of-memory and diverged trials, a worker killed twice), as
    `optuna.load_study` reads its study.db once the job ended."""
    cfg, summary, root, _ = tiny_sweep
    study = optuna.load_study(storage=f"sqlite:///{root / 'study.db'}", study_name=cfg.name)
    trials = _by_tune_id(study)
    assert set(trials) == {row["trial_id"] for row in summary["trials"]} and len(study.trials) == len(trials)
    expected = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
    assert {row["state"] for row in summary["trials"]} == set(expected)
    for row in summary["trials"]:
        trial = trials[row["trial_id"]]
        assert trial.state == expected[row["state"]], row
        assert trial.params == pytest.approx(row["params"])
        if row["state"] != "failed":
            assert trial.intermediate_values == pytest.approx(dict(enumerate(row["fold_scores"])))
        if row["state"] == "completed":
            assert trial.value == pytest.approx(row["mean"]) and "reason" not in trial.user_attrs
            assert trial.user_attrs["duration_s"] > 0
        elif row["state"] == "pruned":
            assert (
                trial.user_attrs["reason"]
                == f"stopped by the scheduler after {row['folds_done']} of {cfg.folds.k} folds"
            )
        else:  # out of memory or diverged: the summary's words, from the same records
            assert trial.user_attrs["reason"] == row["reason"], row
