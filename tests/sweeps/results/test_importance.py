"""Parameter importances from recorded trial dicts: every searched dimension counts (method included),
conditional dimensions only where their condition held."""

import random

import pytest

from sweeps.config import load_config
from sweeps.results.importance import param_importances


def _cfg(space, **model):
    return load_config(raw={"data": {"path": "x.csv"}, "model": model, "search": {"space": space}})


def _trial(i, params, mean, state="completed"):
    return {"trial_id": f"t{i}", "state": state, "params": params, "mean": mean}


def _method_trials(n=16, seed=0):
    """The score follows the method (lora far better); the learning rate is noise; lora_rank is drawn in every
    trial, as Tune's flat space does, but only lora trials use it."""
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        method = ["full", "lora"][i % 2]
        params = {"method": method, "learning_rate": 10 ** rng.uniform(-5, -3), "lora_rank": rng.choice([4, 16])}
        trials.append(_trial(i, params, (0.9 if method == "lora" else 0.5) + rng.uniform(-0.01, 0.01)))
    return trials


SPACE = {"method": ["full", "lora"], "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}, "lora_rank": [4, 16]}


def test_the_method_dimension_counts():
    """The drift bug: importances ignored method, lora_rank, top_layers and prompt_tokens."""
    cfg = _cfg(SPACE)
    out = param_importances(_method_trials(), space=cfg.search.space, mode="max", cfg=cfg)
    assert out["method"] in {"fANOVA", "mean decrease impurity"} and out["trials_used"] == 16
    assert "method" in out["values"], out
    assert max(out["values"], key=out["values"].get) == "method"
    # lora_rank was used by the lora trials only: optuna needs one parameter set, so it is left out, and said so
    assert "lora_rank" not in out["values"] and "lora_rank left out" in out["note"]


def test_a_conditional_dimension_counts_where_every_trial_uses_it():
    """Method fixed to lora in the config: every trial used its lora_rank, and the rank decides the score."""
    cfg = _cfg({"lora_rank": [4, 16], "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, method="lora")
    rng = random.Random(1)
    trials = [
        _trial(
            i,
            {"lora_rank": [4, 16][i % 2], "learning_rate": 10 ** rng.uniform(-5, -3)},
            0.6 + 0.3 * (i % 2) + rng.uniform(-0.01, 0.01),
        )
        for i in range(12)
    ]
    out = param_importances(trials, space=cfg.search.space, mode="max", cfg=cfg)
    assert max(out["values"], key=out["values"].get) == "lora_rank", out
    # the same trials in a sweep whose fixed method is full: nobody used the rank
    full = _cfg({"lora_rank": [4, 16], "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, method="full")
    out = param_importances(trials, space=full.search.space, mode="max", cfg=full)
    assert set(out["values"]) == {"learning_rate"}


@pytest.mark.parametrize(
    "key,setting,drawn",
    [
        ("top_layers", {"low": 1, "high": 4}, lambda i: 1 + i % 4),
        ("prompt_tokens", [8, 16], lambda i: [8, 16][i % 2]),
    ],
)
def test_partial_and_prompt_dimensions_count(key, setting, drawn):
    method = {"top_layers": "partial", "prompt_tokens": "prompt-tuning"}[key]
    cfg = _cfg({key: setting, "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, method=method)
    rng = random.Random(2)
    trials = [
        _trial(
            i, {key: drawn(i), "learning_rate": 10 ** rng.uniform(-5, -3)}, 0.1 * drawn(i) + rng.uniform(-0.001, 0.001)
        )
        for i in range(12)
    ]
    out = param_importances(trials, space=cfg.search.space, mode="max", cfg=cfg)
    assert max(out["values"], key=out["values"].get) == key, out


def test_too_few_scored_trials_or_nothing_varied_is_a_note():
    cfg = _cfg(SPACE)
    one = _method_trials(n=1) + [_trial(9, {"method": "full"}, float("nan"), state="failed")]
    out = param_importances(one, space=cfg.search.space, mode="max", cfg=cfg)
    assert out["values"] == {} and "at least 2 scored trials" in out["note"]
    pruned = [
        _trial(0, {"method": "full", "learning_rate": 1e-4, "lora_rank": 4}, 0.5),
        _trial(1, {"method": "full", "learning_rate": 1e-4, "lora_rank": 4}, 0.4, state="pruned"),
    ]
    out = param_importances(pruned, space=cfg.search.space, mode="max", cfg=cfg)
    assert out["trials_used"] == 2 and "pruned trials are included" in out["note"]
    assert "no searched parameter took more than one value" in out["note"] and out["values"] == {}
