"""sweeps/search/tuner.py: a restored sweep's Tuner runs this run's trial count and concurrency (Tune alone keeps
the saved ones), and `--retry-failed` restarts failed trials. Real Tune and Optuna objects; none of this needs a
Ray cluster (Tune only saves and loads files here)."""

from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from sweeps.config import load_config
from sweeps.search.tuner import ResumedSearch, _searcher, new_tuner, restore_tuner
from trainer.storage import filesystem


def _cfg(tmp_path, num_trials=2):
    return load_config(
        raw={
            "name": "s",
            "data": {"path": "x.csv"},
            "search": {"num_trials": num_trials, "space": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}},
            "storage": {"path": str(tmp_path)},
        }
    )


def _trainable(config):
    tune.report({"objective": 1.0})


def _saved_search(cfg, directory) -> dict:
    """Run the search generator as Tune does for a new sweep (2 trials, 1 at a time), save it, and return the
    configs it proposed."""
    gen = SearchGenerator(ConcurrencyLimiter(_searcher(cfg), max_concurrent=1))
    gen.set_search_properties(None, None, {})
    gen.add_configurations([Experiment("s", _trainable, num_samples=cfg.search.num_trials, config={})])
    first = gen.next_trial()
    gen.on_trial_complete(first.trial_id, {"objective": 0.5})
    second = gen.next_trial()  # still running when the sweep stops
    assert gen.is_finished()
    gen.save_to_dir(str(directory), session_str="first")
    return {first.trial_id: first.config, second.trial_id: second.config}


def test_a_restored_search_runs_the_raised_trial_count_and_the_new_concurrency(tmp_path):
    proposed = _saved_search(_cfg(tmp_path), tmp_path)
    # What Tune alone restores: the saved trial count, so a raised num_trials would do nothing.
    plain = SearchGenerator(ConcurrencyLimiter(_searcher(_cfg(tmp_path)), max_concurrent=1))
    plain.restore_from_dir(str(tmp_path))
    assert plain.total_samples == 2 and plain.is_finished()

    resumed = ResumedSearch(_searcher(_cfg(tmp_path, num_trials=4)), num_trials=4, concurrent=2)
    resumed.restore_from_dir(str(tmp_path))
    assert resumed.total_samples == 4 and not resumed.is_finished()
    # The Optuna study came back with it: the running trial still counts against the (new) limit of 2.
    third = resumed.next_trial()
    assert third is not None and third.trial_id not in proposed
    assert resumed.next_trial() is None  # two running: the limit
    resumed.on_trial_complete(third.trial_id, {"objective": 0.7})
    assert resumed.next_trial() is not None and resumed.is_finished()


def test_restore_tuner_gives_the_restored_tuner_this_runs_search_and_retry(tmp_path):
    cfg = _cfg(tmp_path)
    fs, path = filesystem(str(tmp_path / "s" / "tune"))
    new_tuner(cfg, _trainable, fs=fs, tune_path=path, concurrent=1, progress=False, callbacks=[])
    watch = tune.Callback()
    tuner = restore_tuner(
        _cfg(tmp_path, num_trials=5),
        _trainable,
        fs=fs,
        tune_path=path,
        concurrent=3,
        retry_failed=True,
        callbacks=[watch],
    )
    internal = tuner._local_tuner  # what Tuner.fit() runs with (Ray 2.60's TunerInternal)
    search = internal._tune_config.search_alg
    assert isinstance(search, ResumedSearch) and (search.num_trials, search.concurrent) == (5, 3)
    assert internal._tune_config.max_concurrent_trials is None  # the limiter is inside the search
    assert internal._run_config.callbacks == [watch]
    resume = internal._resume_config
    assert resume.errored is resume.ResumeType.RESTART and resume.unfinished is resume.ResumeType.RESUME
    default = restore_tuner(cfg, _trainable, fs=fs, tune_path=path, concurrent=1, retry_failed=False, callbacks=[])
    assert default._local_tuner._resume_config.errored is resume.ResumeType.SKIP  # failed trials stay failed


def test_every_aws_and_google_variable_is_kept_out_of_trial_actors(monkeypatch):
    from ray.tune.execution import class_cache

    from sweeps.search.tuner import keep_credentials_out_of_trial_actors

    names = {"AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "TUNE_RESULT_DIR"}
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", names)  # restored after the test
    keep_credentials_out_of_trial_actors()
    assert class_cache.ENV_VARS_TO_PROPAGATE == {"TUNE_RESULT_DIR"}
