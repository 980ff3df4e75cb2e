"""Initial points are typed through the config fields' own validators, then checked against the space; every
problem names `search.initial_points.<i>.<key>`."""

import pytest

from sweeps.config import load_config
from sweeps.search.points import check_initial_points, typed_points
from zerotune.errors import ConfigError


def _cfg(space, initial_points=None):
    return load_config(raw={"data": {"path": "x.csv"}, "search": {"space": space, "initial_points": initial_points}})


def _problems(*args):
    with pytest.raises(ConfigError) as err:
        _cfg(*args)
    return err.value.problems


def test_initial_points_are_checked_against_the_space():
    space = {
        "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
        "batch_size": [8, 16],
        "method": ["full", "lora"],
        "lora_rank": [4, 16],
        "epochs": {"low": 1, "high": 3},
    }
    good = {"learning_rate": 1e-4, "batch_size": 16, "method": "lora", "lora_rank": 4, "epochs": 2}
    full = {k: v for k, v in good.items() if k != "lora_rank"}
    _cfg(space, [good, {**full, "learning_rate": 1e-3, "method": "full"}])  # a full trial draws no lora_rank
    points = [
        {**good, "learning_rate": 1e-2},  # outside the range
        {**good, "batch_size": 12},  # not a choice
        {**good, "method": "qlora"},  # not a choice
        {**good, "epochs": 4},  # outside the int range
        {**good, "zero_stage": 2},  # a dimension, not searched
        {**good, "learnig_rate": 1e-4},  # no such dimension
        full,  # missing: a lora trial draws lora_rank
        {**good, "epochs": True},  # a bool is not an epoch count
    ]
    problems = _problems(space, points)
    assert [f for f, _, _ in problems] == [
        "search.initial_points.0.learning_rate",
        "search.initial_points.1.batch_size",
        "search.initial_points.2.method",
        "search.initial_points.3.epochs",
        "search.initial_points.4.zero_stage",
        "search.initial_points.5.learnig_rate",
        "search.initial_points.6.lora_rank",
        "search.initial_points.7.epochs",
    ]
    by_field = {f: (m, fix) for f, m, fix in problems}
    assert "search.space.learning_rate" in by_field["search.initial_points.0.learning_rate"][0]
    assert "did you mean 'learning_rate'" in by_field["search.initial_points.5.learnig_rate"][1]
    assert check_initial_points(_cfg(space).search.space, [good]) == []


def test_values_are_typed_as_their_config_field_takes_them():
    """YAML reads `1e-3` (no dot) as a string and a computed batch size may be 16.0: the config field coerces
    both, so the initial point does too, and Tune and the trial get the field's own type."""
    space = {
        "learning_rate": {"low": 1e-5, "high": 1e-2, "log": True},
        "batch_size": [8, 16],
        "epochs": {"low": 1, "high": 3},
        "method": ["full", "lora"],
    }
    cfg = _cfg(space, [{"learning_rate": "1e-3", "batch_size": 16.0, "epochs": "2", "method": "lora"}])
    [point] = cfg.search.initial_points
    assert point == {"learning_rate": 1e-3, "batch_size": 16, "epochs": 2, "method": "lora"}
    assert [type(point[k]) for k in ("learning_rate", "batch_size", "epochs")] == [float, int, int]


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("batch_size", 16.5, "not a valid train.batch_size"),  # the field refuses a fractional batch
        ("learning_rate", "fast", "not a valid train.learning_rate"),
        ("learning_rate", float("nan"), "not a valid train.learning_rate"),
        ("epochs", True, "boolean"),
        ("batch_size", "32", "outside search.space.batch_size"),  # typed, then not a choice
    ],
)
def test_a_value_the_field_or_the_space_refuses_is_named_by_index_and_key(key, value, needle):
    space = {"learning_rate": {"low": 1e-5, "high": 1e-2}, "batch_size": [8, 16], "epochs": {"low": 1, "high": 3}}
    good = {"learning_rate": 1e-3, "batch_size": 8, "epochs": 1}
    [(field, message, fix)] = _problems(space, [good, {**good, key: value}])
    assert field == f"search.initial_points.1.{key}" and needle in message and f"search.space.{key}" in fix


def test_typed_points_returns_the_typed_points_with_the_problems():
    space = _cfg({"batch_size": [8, 16]}).search.space
    assert typed_points(space, [{"batch_size": 8.0}]) == ([{"batch_size": 8}], [])
    assert typed_points(space, None) == (None, [])
    points, problems = typed_points(space, [{"batch_size": 8.5}])
    assert points == [{}] and [p[0] for p in problems] == ["search.initial_points.0.batch_size"]
