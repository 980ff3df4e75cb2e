"""sweeps/search/searcher.py: what the Optuna study holds after Tune drives the searcher as it does in a sweep
(suggest, a result per epoch, completion): conditional draws, fold scores as intermediate values, pruned trials as
PRUNED, the time budget, and each sampler. Real Tune searchers and a real Optuna study; no Ray cluster needed."""

import time

import pytest
from optuna.trial import TrialState
from ray.tune.experiment import Experiment
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

from sweeps.config import load_config
from sweeps.search.searcher import make_searcher

LR = {"low": 1e-5, "high": 1e-2, "log": True}


@pytest.fixture(autouse=True)
def _storage_in_tmp(tmp_path, monkeypatch):
    """storage.path ./results: each test's study.db in a directory of its own."""
    monkeypatch.chdir(tmp_path)


def _cfg(space, **search):
    return load_config(raw={"data": {"path": "x.csv"}, "folds": {"k": 3}, "search": {"space": space, **search}})


def _result(scores: list[float], k: int = 3) -> dict:
    """A Tune result as sweeps.search.objective makes it after len(scores) folds."""
    out = {f"fold{i}_f1_macro": s for i, s in enumerate(scores)}
    mean = sum(scores) / len(scores)
    return {**out, "objective": mean, "folds_done": len(scores), "folds_total": k}


def test_a_dimension_is_drawn_only_where_its_condition_holds():
    cfg = _cfg({"method": ["full", "lora"], "lora_rank": [4, 8], "model.lora.alpha": {"low": 4.0, "high": 32.0}})
    search = make_searcher(cfg)
    params = [search.suggest(f"t{i}") for i in range(12)]
    assert {p["method"] for p in params} == {"full", "lora"}
    for p in params:
        lora = p["method"] == "lora"
        assert ("lora_rank" in p) is lora and ("model.lora.alpha" in p) is lora, p
    study = {t.number: t.params for t in search._ot_study.trials}
    assert all(("lora_rank" in p) is (p["method"] == "lora") for p in study.values())


def test_fold_scores_are_intermediate_values_and_a_stopped_trial_is_pruned():
    search = make_searcher(_cfg({"learning_rate": LR}))
    for trial_id in ("done", "pruned", "failed", "diverged"):
        search.suggest(trial_id)
    # Tune reports every epoch: two epochs of fold 0 (no fold finished, then one), then fold 1, ...
    for trial_id in ("done", "pruned"):
        search.on_trial_result(trial_id, {"objective": 0.3, "folds_done": 0, "folds_total": 3})
        search.on_trial_result(trial_id, _result([0.5]))
    search.on_trial_result("done", _result([0.5, 0.7]))
    search.on_trial_complete("done", _result([0.5, 0.7, 0.9]))
    search.on_trial_complete("pruned", _result([0.5]))  # the scheduler stopped it after fold 0
    search.on_trial_complete("failed", _result([0.5]), error=True)
    # a diverged fold's report, then the scheduler stops the trial before its error reaches Tune
    search.on_trial_complete("diverged", {**_result([0.2]), "diverged": 1})
    done, pruned, failed, diverged = search._ot_study.trials
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(0.7)
    assert done.intermediate_values == {0: 0.5, 1: 0.7, 2: 0.9}
    assert pruned.state == TrialState.PRUNED and pruned.intermediate_values == {0: 0.5}
    assert failed.state == TrialState.FAIL and diverged.state == TrialState.FAIL


def test_no_new_trial_after_the_time_budget_while_running_ones_finish():
    cfg = _cfg({"learning_rate": LR}, num_trials=10, time_budget_s=0.2)
    gen = SearchGenerator(ConcurrencyLimiter(make_searcher(cfg), max_concurrent=10))
    gen.set_search_properties(None, None, {})
    gen.add_configurations([Experiment("s", lambda c: None, num_samples=10, config={})])
    first = gen.next_trial()
    assert first is not None and not gen.is_finished()
    time.sleep(0.3)
    assert gen.next_trial() is None and gen.is_finished()
    gen.on_trial_complete(first.trial_id, _result([0.5, 0.6, 0.7]))  # the running trial still reports
    assert gen.searcher.searcher._ot_study.trials[0].state == TrialState.COMPLETE


def test_grid_tries_every_configuration_once_and_sets_the_trial_count():
    space = {"method": ["full", "lora"], "lora_rank": [4, 8], "learning_rate": {"low": 0.1, "high": 0.3, "step": 0.1}}
    cfg = _cfg(space, sampler="grid")
    assert cfg.search.num_trials == 3 * 3  # full x 3 rates, lora x 2 ranks x 3 rates: no full trial per rank
    search = make_searcher(cfg)
    proposed = [search.suggest(f"t{i}") for i in range(cfg.search.num_trials)]
    keys = {tuple(sorted(p.items())) for p in proposed}
    assert len(keys) == 9 and sorted({p["learning_rate"] for p in proposed}) == pytest.approx([0.1, 0.2, 0.3])
    problems = _problems({"learning_rate": LR}, sampler="grid")
    assert "step" in problems[0][1]
    assert "enumerates 9" in _problems(space, sampler="grid", num_trials=4)[0][1]


def _problems(space, **search):
    from zerotune.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        _cfg(space, **search)
    return err.value.problems


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes"])
def test_each_sampler_proposes_inside_the_space(sampler):
    import optuna

    space = {"learning_rate": LR, "warmup_ratio": {"low": 0.0, "high": 0.2}, "optimizer": ["adamw", "sgd"]}
    cfg = _cfg(space, sampler=sampler, num_trials=6)
    search = make_searcher(cfg)
    kind = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    assert isinstance(search._ot_study.sampler, kind.get(sampler, optuna.samplers.CmaEsSampler))
    for i in range(6):  # past the startup trials: CMA-ES samples the two ranges jointly (it imports cmaes)
        p = search.suggest(f"t{i}")
        assert 1e-5 <= p["learning_rate"] <= 1e-2 and 0 <= p["warmup_ratio"] <= 0.2
        search.on_trial_complete(f"t{i}", _result([p["warmup_ratio"]] * 3))
    assert all(t.state == TrialState.COMPLETE for t in search._ot_study.trials)
    assert Searcher.FINISHED not in [search.suggest("t-last")]


def test_a_resumed_run_keeps_the_study_and_counts_its_own_budget(tmp_path):
    first = make_searcher(_cfg({"learning_rate": LR}))
    first.suggest("t0")
    first.save(str(tmp_path / "searcher.pkl"))
    resumed = make_searcher(_cfg({"learning_rate": LR}, time_budget_s=0.2))
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert len(resumed._ot_study.trials) == 1  # the saved study
    assert resumed.suggest("t1") != Searcher.FINISHED  # this run's budget, from this run's first trial
    time.sleep(0.3)
    assert resumed.suggest("t2") == Searcher.FINISHED


def test_points_still_run_when_the_first_run_died_before_proposing_any():
    """The study is made and tuner.pkl written when the Tuner is built; a run that dies before its first trial saves
    no experiment state, so the next run's searcher is never restored: it still queues every point no trial took."""
    space = {"method": ["full", "lora"], "lora_rank": [4, 8], "learning_rate": {"low": 0.1, "high": 0.3, "step": 0.1}}
    cfg = _cfg(space, sampler="grid")
    make_searcher(cfg)  # the first run: study.db created, nothing proposed
    second = make_searcher(cfg)
    proposed = [second.suggest(f"t{i}") for i in range(4)]
    second.on_trial_complete("t0", _result([0.5, 0.6, 0.7]))
    third = make_searcher(cfg)  # the second run died too, unsaved: what its trials took or wait with stays taken
    proposed += [third.suggest(f"u{i}") for i in range(5)]
    assert len({tuple(sorted(p.items())) for p in proposed}) == cfg.search.num_trials  # the whole grid, once each
    assert len(third._ot_study.trials) == 9  # t0 done, t1..t3 asked, the rest enqueued once by the second run


def test_initial_points_run_first_in_a_run_that_restarts_before_its_first_trial():
    points = [{"learning_rate": 1e-4}, {"learning_rate": 2e-4}]
    make_searcher(_cfg({"learning_rate": LR}, initial_points=points))
    again = make_searcher(_cfg({"learning_rate": LR}, initial_points=points))
    assert [again.suggest("a"), again.suggest("b")] == points
