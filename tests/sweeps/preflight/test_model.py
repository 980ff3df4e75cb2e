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


# -- issue 20: LoRA presets, attention kernels, weight dtypes, the 4-bit base ---------------------------------------

LLAMA_TEXTS = ["the cat sat on the mat", "a dog ran in the park"] * 4


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("preflight-llama"), LLAMA_TEXTS)


def _llm(model_dir, *, model=None, **groups):
    return load_config(
        raw={"task": "causal-lm", "model": {"path": str(model_dir), **(model or {})}, "data": {"path": "x.csv"}}
        | groups
    )


@pytest.mark.parametrize("preset", ["attention", "attention+mlp", "all-linear"])
def test_lora_presets_fit_a_llama_and_a_preset_for_another_architecture_is_refused(llama_dir, tiny_bert_dir, preset):
    check_model(_llm(llama_dir, model={"method": "lora", "lora": {"target_modules": preset}}))
    bert = _cfg(tiny_bert_dir, method="lora", lora={"target_modules": preset})
    if preset == "all-linear":  # PEFT's own: every Linear of any architecture
        check_model(bert)
        return
    [(field, message, fix)] = _problems(bert)
    assert field == "model.lora.target_modules" and "q_proj" in message and preset in message
    assert "query" in fix and "value" in fix  # the names BERT has


def test_an_unknown_preset_is_refused_by_the_config():
    from zerotune.errors import ConfigError as Refused

    with pytest.raises(Refused) as err:
        load_config(raw={"model": {"lora": {"target_modules": "attn"}}, "data": {"path": "x.csv"}})
    assert err.value.problems[0][0] == "model.lora.target_modules" and "attention+mlp" in err.value.problems[0][1]


def test_flash_attention_needs_gpus_and_its_package(llama_dir):
    import importlib.util

    [(field, message, fix)] = _problems(_llm(llama_dir, model={"attn_implementation": "flash_attention_2"}))
    assert field == "model.attn_implementation" and "GPUs" in message and "sdpa" in fix
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash_attn is installed here: the missing-package refusal cannot be shown")
    gpu = _llm(llama_dir, model={"attn_implementation": "flash_attention_2"}, scaling={"use_gpu": True})
    [(field, message, fix)] = _problems(gpu)
    assert field == "model.attn_implementation" and "flash_attn" in message and "install flash-attn" in fix


def test_a_kernel_the_model_class_lacks_is_refused(tmp_path, tiny_gpt2_dir):
    """OpenAI GPT has no sdpa attention: transformers would refuse it when loading the weights."""
    from transformers import OpenAIGPTConfig

    gpt = tmp_path / "openai-gpt"
    shutil.copytree(tiny_gpt2_dir, gpt)
    OpenAIGPTConfig(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=128).to_json_file(gpt / "config.json")
    [(field, message, fix)] = _problems(_llm(gpt))  # sdpa, the default
    assert field == "model.attn_implementation" and "OpenAIGPTLMHeadModel" in message and fix == "use eager"
    check_model(_llm(gpt, model={"attn_implementation": "eager"}))


def test_weight_dtypes_must_suit_the_precision(llama_dir):
    check_model(_llm(llama_dir, model={"torch_dtype": "float32"}))  # DeepSpeed casts fp32 weights to any precision
    [(field, message, fix)] = _problems(_llm(llama_dir, model={"torch_dtype": "bfloat16"}))  # CPU: fp32 training
    assert field == "model.torch_dtype" and "fp32" in message and "deepspeed.precision: bf16" in fix
    gpu = {"scaling": {"use_gpu": True}}
    check_model(_llm(llama_dir, model={"torch_dtype": "bfloat16"}, **gpu))  # auto on a GPU: bf16
    [(field, message, _)] = _problems(
        _llm(llama_dir, model={"torch_dtype": "float16"}, deepspeed={"precision": "bf16"}, **gpu)
    )
    assert field == "model.torch_dtype" and "bf16" in message


def test_a_4bit_base_needs_lora_gpus_bitsandbytes_and_whole_weights(llama_dir):
    import importlib.util

    lora4 = {"method": "lora", "quantization": "4bit"}
    [(field, message, _)] = _problems(_llm(llama_dir, model=lora4))
    assert field == "model.quantization" and "GPUs" in message
    with pytest.raises(ConfigError) as err:
        _llm(llama_dir, model={"quantization": "4bit"})  # method full: a 4-bit base cannot train itself
    assert err.value.problems[0][0] == "model" and "method: lora" in err.value.problems[0][1]
    gpu = {"scaling": {"use_gpu": True}}
    zero3 = {"zero_stage": 3, "offload_params": True}
    problems = {f: m for f, m, _ in _problems(_llm(llama_dir, model=lora4, deepspeed=zero3, **gpu))}
    assert "ZeRO-3" in problems["deepspeed.zero_stage"] and "offloaded" in problems["deepspeed.offload_params"]
    if importlib.util.find_spec("bitsandbytes") is None:
        assert "bitsandbytes" in problems["model.quantization"]
    searched = _llm(llama_dir, model=lora4, search={"space": {"zero_stage": [2, 3]}}, **gpu)
    assert "search.space.zero_stage" in {f for f, _, _ in _problems(searched)}
