"""Search-space dimensions -> Tune domains, and a trial's sampled values -> the config groups."""

import numpy as np
import pytest

from sweeps.config import load_config
from sweeps.search.space import apply_params, tune_space
from zerotune.errors import ConfigError


def _cfg(space, **model):
    return load_config(raw={"data": {"path": "x.csv"}, "model": model, "search": {"space": space}})


def test_method_rank_layers_and_tokens_are_searchable():
    from ray.tune.search.sample import Categorical, Integer

    cfg = _cfg({"method": ["full", "partial", "lora"], "lora_rank": [4, 8], "top_layers": {"low": 1, "high": 3}, "prompt_tokens": [8]})
    space = tune_space(cfg.search.space)
    assert isinstance(space["method"], Categorical) and space["method"].categories == ["full", "partial", "lora"]
    assert space["lora_rank"].categories == [4, 8]
    assert isinstance(space["top_layers"], Integer) and (space["top_layers"].lower, space["top_layers"].upper) == (1, 4)


def test_sampled_values_land_in_the_model_group():
    cfg = _cfg({"method": ["lora"], "lora_rank": [4]}, lora={"alpha": 32})
    train, deepspeed, model = apply_params(cfg, {"method": np.str_("lora"), "lora_rank": np.int64(4), "top_layers": np.int64(3), "learning_rate": 1e-4})
    assert (model.method, model.lora.rank, model.lora.alpha, model.top_layers) == ("lora", 4, 32.0, 3)
    assert type(model.lora.rank) is int and train.learning_rate == 1e-4
    assert apply_params(cfg, {})[2] is cfg.model


def test_unknown_method_and_bad_ranks_are_config_errors():
    with pytest.raises(ConfigError) as err:
        _cfg({"method": ["full", "qlora"], "lora_rank": [0]})
    fields = {f for f, _, _ in err.value.problems}
    assert any(f.startswith("search.space.method") for f in fields), fields
    assert any("lora_rank" in m for _, m, _ in err.value.problems) or any("lora_rank" in f for f in fields)
