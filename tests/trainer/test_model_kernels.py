"""The attention kernel and the 4-bit base where the weights load (trainer.model): the chosen kernel reaches the
model, and a worker without flash-attention or bitsandbytes (this machine: no GPU, neither package) says which
field to change instead of failing inside transformers."""

import importlib.util

import pytest

from trainer.config import ModelConfig
from trainer.model import load_model
from zerotune.errors import ConfigError


def test_the_chosen_kernel_is_the_models(tiny_gpt2_dir):
    for kernel in ("sdpa", "eager"):
        model = load_model(ModelConfig(path=str(tiny_gpt2_dir), attn_implementation=kernel), "causal-lm")
        assert model.config._attn_implementation == kernel


@pytest.mark.parametrize(
    ("model", "package", "field"),
    [
        ({"attn_implementation": "flash_attention_2"}, "flash_attn", "model.attn_implementation"),
        ({"method": "lora", "quantization": "4bit"}, "bitsandbytes", "model.quantization"),
    ],
)
def test_a_worker_without_the_package_names_the_field(tiny_gpt2_dir, model, package, field):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(ConfigError) as err:
        load_model(ModelConfig(path=str(tiny_gpt2_dir), **model), "causal-lm", precision="bf16")
    [(named, message, fix)] = err.value.problems
    assert named == field and package in message and "install" in fix
