"""The one table of search dimensions drives the YAML group, Tune domains, optuna distributions, a trial's
config, conditions, bounds, pre-flight values; initial points are in test_points.py."""

import numpy as np
import pytest

from sweeps.config import SpaceConfig, load_config
from sweeps.search import space as S
from sweeps.search.space import apply_params
from zerotune.errors import ConfigError

# One in-bounds setting per dimension: every row of the table is exercised.
EVERY = {
    "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
    "batch_size": [8, 16],
    "epochs": {"low": 1, "high": 3},
    "weight_decay": {"low": 0.0, "high": 0.1},
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "dropout": {"low": 0.0, "high": 0.3},
    "zero_stage": [0],  # sgd does not run under ZeRO >= 1 (sweeps.config refuses the pair)
    "optimizer": ["adamw", "sgd"],
    "method": ["full", "partial", "lora", "prompt-tuning"],
    "lora_rank": [4, 8],
    "top_layers": {"low": 1, "high": 3},
    "prompt_tokens": [8, 16],
}


def _cfg(space, initial_points=None, **model):
    search = {"space": space, **({"initial_points": initial_points} if initial_points is not None else {})}
    return load_config(raw={"data": {"path": "x.csv"}, "model": model, "search": search})


def _problems(*args, **kwargs):
    with pytest.raises(ConfigError) as err:
        _cfg(*args, **kwargs)
    return err.value.problems


def test_the_yaml_group_is_the_table():
    assert list(SpaceConfig.model_fields) == [d.key for d in S.DIMENSIONS]
    assert [d.key for d in S.NAMED] == list(EVERY)
    for d in S.DIMENSIONS:
        assert SpaceConfig.model_fields[d.key].description.startswith(f"{d.description}; sets {d.path}")
        assert S.dimension(d.key) is S.dimension(d.path) is d
    with pytest.raises(KeyError):
        S.dimension("model.path")  # text: not searchable


def test_optuna_distributions_and_define_by_run_draws_cover_every_dimension_alike():
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = _cfg(EVERY).search.space
    dists = S.optuna_distributions(space)
    assert list(dists) == list(S.searched(space)) == list(EVERY)
    study = optuna.create_study()
    trial = study.ask()
    for key, d in S.searched(space).items():
        setting = EVERY[key]
        d.suggest(trial, d.setting(space))
        if d.kind == "float":
            assert isinstance(dists[key], FloatDistribution)
            assert (dists[key].low, dists[key].high, dists[key].log) == (
                setting["low"], setting["high"], setting.get("log", False)
            )  # fmt: skip
        elif d.kind == "int":
            assert isinstance(dists[key], IntDistribution) and (dists[key].low, dists[key].high) == (
                setting["low"], setting["high"]
            )  # fmt: skip
        else:
            assert isinstance(dists[key], CategoricalDistribution) and list(dists[key].choices) == setting
    # the draw uses the same distribution as importances rebuild
    assert study.trials[0].distributions == dists


def _at(groups, path):
    train, deepspeed, model = groups
    node = {"train": train, "deepspeed": deepspeed, "model": model}[path.split(".")[0]]
    for part in path.split(".")[1:]:
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("key", list(EVERY))
def test_each_dimension_lands_at_its_config_path(key):
    """A value for every dimension, as a sampler hands it (numpy scalars), lands at the row's path as a plain type."""
    d, cfg = S.dimension(key), _cfg(EVERY)
    value = S.values(cfg.search.space, key)[-1]
    method = next(iter(d.when.values)) if d.when else "full"
    groups = apply_params(cfg, {"method": np.str_(method), key: np.asarray(value)[()]})
    landed = _at(groups, d.path)
    assert landed == value and type(landed) is type(value), (landed, value)


def test_sampled_values_land_in_the_model_group():
    cfg = _cfg({"method": ["lora"], "lora_rank": [4]}, lora={"alpha": 32})
    train, deepspeed, model = apply_params(
        cfg, {"method": np.str_("lora"), "lora_rank": np.int64(4), "learning_rate": 1e-4}
    )
    assert (model.method, model.lora.rank, model.lora.alpha) == ("lora", 4, 32.0)
    assert type(model.lora.rank) is int and train.learning_rate == 1e-4
    assert deepspeed is cfg.deepspeed
    assert apply_params(cfg, {})[2] is cfg.model


def test_a_dimension_applies_only_where_its_condition_holds():
    cfg = _cfg(
        {"method": ["full", "partial", "lora"], "lora_rank": [4, 16], "top_layers": {"low": 1, "high": 5}},
        top_layers=2,
        lora={"rank": 8},
    )
    drawn = {"lora_rank": 16, "top_layers": 5, "learning_rate": 1e-4}
    lora = apply_params(cfg, {**drawn, "method": "lora"})[2]
    assert (lora.method, lora.lora.rank, lora.top_layers) == ("lora", 16, 2)
    partial = apply_params(cfg, {**drawn, "method": "partial"})[2]
    assert (partial.method, partial.lora.rank, partial.top_layers) == ("partial", 8, 5)
    full = apply_params(cfg, {**drawn, "method": "full"})[2]
    assert (full.method, full.lora.rank, full.top_layers) == ("full", 8, 2)
    # method not searched: the condition reads the config's fixed method
    fixed = _cfg({"lora_rank": [4, 16]}, method="lora", lora={"rank": 8})
    assert apply_params(fixed, {"lora_rank": 4})[2].lora.rank == 4
    fixed_full = _cfg({"lora_rank": [4, 16]}, method="full", lora={"rank": 8})
    assert apply_params(fixed_full, {"lora_rank": 4})[2] is fixed_full.model
    # a dimension's own `applies` without a config: an unsearched condition path counts as holding
    assert S.dimension("lora_rank").applies({}) and not S.dimension("lora_rank").applies({"method": "full"})


@pytest.mark.parametrize(
    ("key", "setting", "field", "bound"),
    [
        ("learning_rate", {"low": 0.0, "high": 1e-3}, "train.learning_rate", "0 < value"),
        ("batch_size", [8, 5000], "train.batch_size", "1 <= value <= 4096"),
        ("epochs", {"low": 0, "high": 3}, "train.epochs", "1 <= value <= 1000"),
        ("weight_decay", {"low": 0.0, "high": 1.0}, "train.weight_decay", "0 <= value < 1"),
        ("warmup_ratio", {"low": -0.1, "high": 0.2}, "train.warmup_ratio", "0 <= value < 1"),
        ("dropout", {"low": 0.0, "high": 1.0}, "model.dropout", "0.0 <= value < 1.0"),
        ("lora_rank", [4, 2048], "model.lora.rank", "1 <= value <= 1024"),
        ("top_layers", {"low": 0, "high": 1001}, "model.top_layers", "0 <= value <= 1000"),
        ("prompt_tokens", [0, 8], "model.prompt_tokens", "1 <= value <= 1000"),
    ],
)
def test_a_range_outside_the_fields_own_bounds_is_refused(key, setting, field, bound):
    [(where, message, _)] = _problems({key: setting})
    assert where == f"search.space.{key}"
    assert field in message and bound in message, message


def test_ranges_inside_the_bounds_load_and_unknown_choices_are_refused():
    _cfg(
        {
            "learning_rate": {"low": 1e-6, "high": 9.0, "log": True},
            "batch_size": [1, 4096],
            "top_layers": {"low": 0, "high": 1000},
        }
    )
    problems = _problems({"method": ["full", "qlora"], "lora_rank": [0], "zero_stage": [4]})
    fields = {f for f, _, _ in problems}
    assert "search.space.method.1" in fields and "search.space.zero_stage.0" in fields
    assert any(f == "search.space.lora_rank" and "model.lora.rank" in m for f, m, _ in problems), problems
    assert _problems({"learnig_rate": {"low": 1e-5, "high": 1e-3}})[0][2] == "did you mean 'learning_rate'?"


def test_preflight_helpers_read_the_searched_or_fixed_values():
    cfg = _cfg(
        {"batch_size": [8, 32], "method": ["full", "partial"], "top_layers": {"low": 1, "high": 4}}, prompt_tokens=30
    )
    assert S.trial_values(cfg, "batch_size") == ("search.space.batch_size", [8, 32])
    assert S.trial_values(cfg, "train.batch_size").max == 32
    assert S.trial_values(cfg, "top_layers") == ("search.space.top_layers", [1, 2, 3, 4])
    assert S.trial_values(cfg, "prompt_tokens") == ("model.prompt_tokens", [30])
    assert set(S.trial_values(cfg, "method").values) == {"full", "partial"}
    assert (
        S.can_apply(cfg, "top_layers") and not S.can_apply(cfg, "prompt_tokens") and not S.can_apply(cfg, "lora_rank")
    )
    assert S.can_apply(cfg, "learning_rate")
    assert S.values(cfg.search.space, "epochs") == [] and S.values(cfg.search.space, "model.top_layers") == [1, 2, 3, 4]
    fixed = _cfg({"learning_rate": {"low": 1e-5, "high": 1e-3}}, method="prompt-tuning")
    assert S.can_apply(fixed, "prompt_tokens") and not S.can_apply(fixed, "top_layers")
    assert S.trial_values(fixed, "batch_size") == ("train.batch_size", [16])
