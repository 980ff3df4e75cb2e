"""sweeps/search/settings.py: any numeric, boolean or choice field of train, model (LoRA included) and deepspeed is
searchable by its dotted path, flat or nested, bounded by the field's own validators and validated by applying
each value to the rest of the config."""

import numpy as np
import pytest

from sweeps.config import load_config
from sweeps.search import space as S
from sweeps.search.space import apply_params
from zerotune.errors import ConfigError

BY_PATH = {
    "train.schedule": ["linear", "cosine", "constant"],
    "train.grad_accum": {"low": 1, "high": 4},
    "model.lora.alpha": [8.0, 32.0],
    "model.max_length": [16, 32],
    "model.classifier_dropout": {"low": 0.0, "high": 0.3},
    "deepspeed.offload_optimizer": [True, False],
}


def _cfg(space, **groups):
    return load_config(raw={"data": {"path": "x.csv"}, "search": {"space": space}, **groups})


def _problems(space, **groups):
    with pytest.raises(ConfigError) as err:
        _cfg(space, **groups)
    return err.value.problems


def test_fields_are_searched_by_dotted_path_and_land_there():
    cfg = _cfg(BY_PATH, model={"method": "lora"})
    assert set(S.searched(cfg.search.space)) == set(BY_PATH)
    drawn = {
        "train.schedule": np.str_("cosine"),
        "train.grad_accum": np.int64(3),
        "model.lora.alpha": np.float64(32.0),
        "model.max_length": 16,
        "model.classifier_dropout": 0.25,
        "deepspeed.offload_optimizer": np.bool_(True),
    }
    train, deepspeed, model = apply_params(cfg, drawn)
    assert (train.schedule, train.grad_accum, type(train.grad_accum)) == ("cosine", 3, int)
    assert (model.lora.alpha, model.max_length, model.classifier_dropout) == (32.0, 16, 0.25)
    assert deepspeed.offload_optimizer is True
    # the nested form (what `search.space.train.schedule=[...]` overrides make) is the same setting
    nested = _cfg({"train": {"schedule": ["linear", "cosine"]}, "model": {"lora": {"alpha": [8.0]}}})
    assert list(S.searched(nested.search.space)) == ["train.schedule", "model.lora.alpha"]
    # a named row's path is its key's alias; one dimension given twice is refused
    assert list(S.searched(_cfg({"train.learning_rate": [1e-4, 1e-3]}).search.space)) == ["learning_rate"]
    twice = _problems({"learning_rate": [1e-4], "train": {"learning_rate": [1e-3]}})
    assert "given twice" in twice[0][1]


def test_lora_and_momentum_rows_are_conditional():
    assert str(S.dimension("model.lora.alpha").when) == "model.method is lora"
    assert str(S.dimension("train.momentum").when) == "train.optimizer is sgd"
    cfg = _cfg({"optimizer": ["adamw", "sgd"], "train.momentum": [0.5, 0.8]}, deepspeed={"zero_stage": 0})
    assert apply_params(cfg, {"optimizer": "adamw", "train.momentum": 0.5})[0].momentum == 0.9  # unused
    assert apply_params(cfg, {"optimizer": "sgd", "train.momentum": 0.5})[0].momentum == 0.5


@pytest.mark.parametrize(
    ("path", "setting", "bound"),
    [
        ("model.max_length", {"low": 4, "high": 64}, "8 <= value <= 32768"),
        ("model.classifier_dropout", [0.1, 1.0], "0.0 <= value < 1.0"),
        ("train.grad_accum", [0], "1 <= value <= 1024"),
        ("train.schedule", ["linear", "step"], "linear"),
    ],
)
def test_a_value_outside_the_fields_own_bounds_is_refused(path, setting, bound):
    [(where, message, _)] = _problems({path: setting})
    assert where.startswith(f"search.space.{path}") and bound in message, (where, message)


def test_values_are_validated_by_applying_them_to_the_config():
    [(where, message, fix)] = _problems({"deepspeed.offload_params": [True, False]}, deepspeed={"zero_stage": 2})
    assert where == "search.space.deepspeed.offload_params" and "zero_stage: 3" in message and "drop True" in fix
    problems = _problems({"model.export_format": ["auto", "merged"]}, model={"method": "prompt-tuning"})
    assert [p[0] for p in problems] == ["search.space.model.export_format"] and "'merged'" in problems[0][1]
    _cfg({"deepspeed.offload_params": [True, False]}, deepspeed={"zero_stage": 3})


def test_text_and_list_fields_are_not_searchable():
    for path in ("model.path", "model.lora.target_modules", "model.gguf_file"):
        assert path not in S.BY_PATH
    assert _problems({"model.path": ["a", "b"]})[0][1] == "unknown key"


def test_a_holdout_without_early_stopping_is_refused():
    [(where, message, fix)] = _problems({"learning_rate": [1e-4]}, train={"early_stopping_holdout": 0.2})
    assert where == "train.early_stopping_holdout" and "early_stopping_patience" in fix
    _cfg({"learning_rate": [1e-4]}, train={"early_stopping_holdout": 0.2, "early_stopping_patience": 1})
