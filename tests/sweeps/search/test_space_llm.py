"""The LLM settings of issue 20 as search dimensions (sweeps/search/space.py reads every field by its dotted path):
LoRA rank/alpha/dropout, gradient checkpointing (a boolean), the attention kernel. A sweep config with them
validates, and a trial's config gets exactly the values Optuna drew for it."""

import optuna
import pytest

from sweeps.config import load_config
from sweeps.search.searcher import DrawTrial
from sweeps.search.space import apply_params, trial_values
from zerotune.errors import ConfigError

SPACE = {
    "method": ["lora", "full"],
    "model.lora.rank": [4, 16],  # the named lora_rank row, by its path
    "model.lora.alpha": {"low": 8.0, "high": 64.0},
    "train.gradient_checkpointing": [True, False],
    # nested, as a search.space.model.lora.dropout=... override writes it
    "model": {"lora": {"dropout": {"low": 0.0, "high": 0.2}}, "attn_implementation": ["sdpa", "eager"]},
}


def _cfg(space, **model):
    raw = {"task": "causal-lm", "data": {"path": "x.csv"}, "model": {"lora": {"target_modules": "attention"}, **model}}
    return load_config(raw={**raw, "search": {"space": space}})


def test_a_space_over_lora_checkpointing_and_kernels_validates_and_trials_get_the_drawn_values():
    cfg = _cfg(SPACE)
    assert trial_values(cfg, "train.gradient_checkpointing") == (
        "search.space.train.gradient_checkpointing",
        [True, False],
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        DrawTrial(cfg)(trial)
        params = trial.params
        train, _, model = apply_params(cfg, params)
        assert train.gradient_checkpointing is params["train.gradient_checkpointing"]
        assert model.attn_implementation == params["model.attn_implementation"]
        if params["method"] == "lora":
            assert model.lora.rank == params["lora_rank"] and type(model.lora.rank) is int
            assert model.lora.alpha == params["model.lora.alpha"]
            assert model.lora.dropout == params["model.lora.dropout"]
            assert model.lora.target_modules == "attention"  # the fixed preset stays
        else:  # define-by-run: a full fine-tuning trial draws no LoRA values
            assert not any(k.startswith("model.lora.") or k == "lora_rank" for k in params)
        seen.add((params["method"], params["train.gradient_checkpointing"]))
    assert len(seen) == 4  # both methods, checkpointing on and off


def test_values_outside_a_fields_bounds_are_refused_naming_the_key():
    with pytest.raises(ConfigError) as err:
        _cfg({"model.lora.dropout": [0.1, 1.0], "train.gradient_checkpointing": [True, "sometimes"]})
    fields = [field for field, _, _ in err.value.problems]
    for key in ("search.space.model.lora.dropout", "search.space.train.gradient_checkpointing"):
        assert any(field.startswith(key) for field in fields), fields
