"""Fine-tuning methods on tiny real models: exact trainable-parameter counts and frozen flags."""

import pytest

from trainer.config import ModelConfig
from trainer.model import load_model
from zerotune.errors import ConfigError


def _count(params):
    return sum(p.numel() for p in params)


def _trainable(model):
    return _count(p for p in model.parameters() if p.requires_grad)


def test_partial_trains_exactly_the_top_blocks_pooler_and_head(tiny_bert_dir):
    model = load_model(
        ModelConfig(path=str(tiny_bert_dir), method="partial", top_layers=1),
        "classification",
        label_names=["a", "b", "c"],
    )
    bert = model.bert
    expected = (
        _count(bert.encoder.layer[1].parameters())
        + _count(bert.pooler.parameters())
        + _count(model.classifier.parameters())
    )
    assert _trainable(model) == expected
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for p in bert.encoder.layer[0].parameters())


def test_partial_on_gpt2_keeps_the_tied_head_frozen_with_the_embeddings(tiny_gpt2_dir):
    model = load_model(ModelConfig(path=str(tiny_gpt2_dir), method="partial", top_layers=1), "causal-lm")
    gpt = model.transformer
    assert model.lm_head.weight is gpt.wte.weight and not gpt.wte.weight.requires_grad
    assert _trainable(model) == _count(gpt.h[1].parameters()) + _count(gpt.ln_f.parameters())


def test_partial_zero_layers_trains_only_the_head(tiny_bert_dir):
    model = load_model(ModelConfig(path=str(tiny_bert_dir), method="partial", top_layers=0), "regression")
    assert _trainable(model) == _count(model.bert.pooler.parameters()) + _count(model.classifier.parameters())


def test_lora_trains_rank_r_adapters_on_query_value_and_the_head(tiny_bert_dir):
    cfg = ModelConfig(path=str(tiny_bert_dir), method="lora", lora={"rank": 4})
    model = load_model(cfg, "classification", label_names=["a", "b", "c"])
    hidden, layers, classes = 32, 2, 3
    adapters = layers * 2 * 4 * (hidden + hidden)  # query and value: A (r x in) + B (out x r)
    head = hidden * classes + classes
    assert _trainable(model) == adapters + head
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "classifier" in n for n in names), names


def test_lora_on_gpt2_adapts_the_fused_attention_projection(tiny_gpt2_dir):
    model = load_model(ModelConfig(path=str(tiny_gpt2_dir), method="lora", lora={"rank": 2}), "causal-lm")
    assert _trainable(model) == 2 * 2 * (32 + 96)  # 2 blocks, c_attn 32 -> 96


def test_prompt_tuning_trains_the_virtual_tokens_and_the_head(tiny_bert_dir):
    model = load_model(
        ModelConfig(path=str(tiny_bert_dir), method="prompt-tuning", prompt_tokens=5, export_format="adapter"),
        "classification",
        label_names=["a", "b"],
    )
    assert _trainable(model) == 5 * 32 + (32 * 2 + 2)


def test_unknown_lora_target_names_the_field(tiny_bert_dir):
    with pytest.raises(ConfigError) as err:
        load_model(
            ModelConfig(path=str(tiny_bert_dir), method="lora", lora={"target_modules": ["q_proj"]}),
            "classification",
            label_names=["a", "b"],
        )
    assert err.value.problems[0][0] == "model.lora.target_modules"


def test_prompt_tuning_cannot_be_merged():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="export_format"):
        ModelConfig(method="prompt-tuning", export_format="merged")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("methods-llama"), ["the cat sat on the mat", "a dog ran far"] * 4)


@pytest.mark.parametrize(
    ("preset", "adapted"),
    [
        ("attention", {"q_proj", "k_proj", "v_proj", "o_proj"}),
        ("attention+mlp", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
        ("all-linear", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),  # no lm_head
    ],
)
def test_lora_presets_adapt_the_llamas_projections(llama_dir, preset, adapted):
    rank, hidden, inter, layers = 2, 32, 64, 2  # tiny_models.tiny_llama
    model = load_model(
        ModelConfig(path=str(llama_dir), method="lora", lora={"rank": rank, "target_modules": preset}), "causal-lm"
    )
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert names == adapted
    size = {"gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}
    expected = layers * sum(rank * sum(size.get(m, (hidden, hidden))) for m in adapted)
    assert _trainable(model) == expected
