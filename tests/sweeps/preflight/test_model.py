"""sweeps/preflight/model.py: the model's path, tokenizer and config are read (no weights) and the settings
checked against them: token positions, blocks, LoRA target modules, the tokenizer's size."""

import json
import shutil
from types import SimpleNamespace

import pytest

from sweeps.config import load_config
from sweeps.preflight.model import check_model, positions
from zerotune.errors import ConfigError


def _cfg(model_dir, **model):
    return load_config(raw={"model": {"path": str(model_dir), **model}, "data": {"path": "x.csv"}})


def _problems(cfg):
    with pytest.raises(ConfigError) as err:
        check_model(cfg)
    return err.value.problems


def test_max_length_must_fit_the_models_positions(tiny_bert_dir):
    check_model(_cfg(tiny_bert_dir, max_length=128))  # tiny BERT: 128 positions
    [(field, message, fix)] = _problems(_cfg(tiny_bert_dir, max_length=129))
    assert field == "model.max_length" and "128 positions" in message and fix == "use model.max_length <= 128"


def test_roberta_style_positions_start_after_the_padding_index():
    assert positions(SimpleNamespace(model_type="roberta", max_position_embeddings=514, pad_token_id=1)) == 512
    assert positions(SimpleNamespace(model_type="gpt2", n_positions=1024)) == 1024
    assert positions(SimpleNamespace(model_type="llama")) is None


@pytest.mark.parametrize("where", ["no-such-org/no-such-model", "config-only"])
def test_a_model_that_cannot_be_read_is_named(tmp_path, tiny_bert_dir, where):
    """A hub name that is not cached (offline) or a directory without a tokenizer fails validate, not the run."""
    if where == "config-only":
        (tmp_path / where).mkdir()
        shutil.copy(tiny_bert_dir / "config.json", tmp_path / where)
        where = tmp_path / where
    [(field, message, fix)] = _problems(_cfg(where))
    assert field == "model.path" and str(where) in message and fix


def test_a_tokenizer_larger_than_the_embeddings_is_refused(tmp_path, tiny_bert_dir):
    small = tmp_path / "small-vocab"
    shutil.copytree(tiny_bert_dir, small)
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    [(field, message, _)] = _problems(_cfg(small))
    assert field == "model.path" and "embeddings only 1000" in message


def test_lora_targets_must_name_modules_of_the_model(tiny_bert_dir):
    check_model(_cfg(tiny_bert_dir, method="lora", lora={"target_modules": ["query", "value"]}))
    [(field, message, fix)] = _problems(_cfg(tiny_bert_dir, method="lora", lora={"target_modules": ["q_proj"]}))
    assert field == "model.lora.target_modules" and "q_proj" in message and "query" in fix
    check_model(_cfg(tiny_bert_dir, method="full", lora={"target_modules": ["q_proj"]}))  # no lora trial: unused


def test_virtual_tokens_and_blocks_are_checked_against_the_model(tiny_bert_dir):
    [(field, _, fix)] = _problems(_cfg(tiny_bert_dir, method="prompt-tuning", prompt_tokens=20, max_length=120))
    assert field == "model.prompt_tokens" and fix == "use model.max_length <= 108"
    [(field, _, _)] = _problems(_cfg(tiny_bert_dir, method="partial", top_layers=3))
    assert field == "model.top_layers"
