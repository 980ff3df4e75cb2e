"""Export without a cluster (trainer.export): a stand-in for the DeepSpeed engine around a tiny real model;
the exported directory reloads and predicts what the engine predicted on the probe rows."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from trainer.config import DeepSpeedConfig, ModelConfig, TrainConfig
from trainer.data import Encoded
from trainer.export import export_model, load_exported, model_card, probe_rows_for, write_model_card
from trainer.spec import FitSpec


class Engine:
    """What export reads of a DeepSpeed engine (ZeRO stage < 3: the module holds whole weights)."""

    def __init__(self, module):
        self.module = module

    def zero_optimization_partition_weights(self):
        return False

    def __call__(self, **inputs):
        return self.module(**inputs)

    def eval(self):
        self.module.eval()

    def train(self):
        self.module.train()


def _encoded(task, n=20, seed=0):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1000, 2000, size=int(rng.integers(3, 9))).astype(np.int32) for _ in range(n)]
    if task == "causal-lm":
        masks = [np.ones(len(i), dtype=bool) for i in ids]
        return Encoded(input_ids=ids, labels=None, loss_mask=masks, pad_id=0, label_names=None)
    return Encoded(input_ids=ids, labels=np.arange(n) % 3, loss_mask=None, pad_id=0, label_names=["a", "b", "c"])


def _spec(model_dir, task, out, **extra):
    return FitSpec(
        task=task,
        model=ModelConfig(path=str(model_dir)),
        train=TrainConfig(),
        deepspeed=DeepSpeedConfig(zero_stage=1),
        use_gpu=False,
        seed=0,
        metric="eval_loss",
        mode="min",
        export_uri=str(out),
        **extra,
    )


@pytest.mark.parametrize("task", ["classification", "causal-lm"])
def test_the_export_reloads_and_predicts_what_the_engine_did(tmp_path, tiny_bert_dir, tiny_gpt2_dir, task):
    from trainer.model import load_model

    model_dir = tiny_gpt2_dir if task == "causal-lm" else tiny_bert_dir
    encoded = _encoded(task)
    spec = _spec(model_dir, task, tmp_path / "model", probe_rows=(3, 5, 7), card={"data": "twenty rows"})
    export_model(
        Engine(load_model(spec.model, task, label_names=encoded.label_names)), spec=spec, encoded=encoded, rank=0
    )

    out = tmp_path / "model"
    meta = json.loads((out / "zerotune.json").read_text())
    assert meta["task"] == task and meta["format"] == "full"
    assert "- data: twenty rows" in (out / "README.md").read_text()
    probe = json.loads((out / "engine_predictions.json").read_text())
    assert probe["row_ids"] == [3, 5, 7]
    model, _ = load_exported(out)
    for row, expected in zip(probe["rows"], probe["values"], strict=True):
        with torch.no_grad():
            logits = model(
                input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long)
            ).logits[0]
        if task == "causal-lm":  # the argmax token at every position of the row
            assert len(expected) == probe["logits_shape"][1] and logits.argmax(-1).tolist() == expected[: len(row)]
        else:
            np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5)


def test_probe_rows_are_the_specs_else_the_first_rows(tmp_path):
    encoded = _encoded("classification", n=40)
    assert probe_rows_for(_spec("m", "classification", tmp_path), encoded).tolist() == list(range(16))
    assert probe_rows_for(_spec("m", "classification", tmp_path, probe_rows=(9, 2)), encoded).tolist() == [9, 2]
    assert probe_rows_for(_spec("m", "classification", tmp_path), _encoded("classification", n=4)).tolist() == [
        0,
        1,
        2,
        3,
    ]


def test_the_model_card_is_rewritten_with_the_specs_card(tmp_path):
    spec = _spec("some/model", "classification", tmp_path / "model", card={"test metrics": "f1_macro=0.9"})
    write_model_card(spec, _encoded("classification"))
    card = (tmp_path / "model" / "README.md").read_text()
    assert card == model_card(spec, _encoded("classification"))
    assert "- test metrics: f1_macro=0.9" in card and "- labels: a, b, c" in card and "`some/model`" in card


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("export-llama"), ["the cat sat on the mat", "a dog ran far"] * 4)


def test_a_merged_lora_exports_in_bf16_and_reloads_with_the_peft_models_logits(tmp_path, llama_dir):
    from transformers import AutoModelForCausalLM

    from trainer.model import load_model

    model_cfg = ModelConfig(
        path=str(llama_dir), method="lora", lora={"target_modules": "attention+mlp"}, export_dtype="bfloat16"
    )
    spec = dataclasses.replace(_spec(llama_dir, "causal-lm", tmp_path / "model"), model=model_cfg)
    torch.manual_seed(0)
    peft = load_model(spec.model, "causal-lm")
    with torch.no_grad():  # a trained adapter: B is zero at init, which would merge to the base model itself
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    encoded = _encoded("causal-lm")
    encoded.input_ids[:] = [ids % peft.config.vocab_size for ids in encoded.input_ids]
    export_model(Engine(peft), spec=spec, encoded=encoded, rank=0)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype="auto").eval()
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    assert not any("lora" in name for name, _ in reloaded.named_parameters())  # merged: a plain llama
    ids = torch.tensor([encoded.input_ids[0].tolist()])
    with torch.no_grad():
        expected = peft.eval()(input_ids=ids).logits
        base = load_model(ModelConfig(path=str(llama_dir)), "causal-lm")(input_ids=ids).logits
        got = reloaded(input_ids=ids).logits.float()
    assert (expected - base).abs().max() > 0.05  # the adapter changes the outputs ...
    torch.testing.assert_close(got, expected, atol=0.03, rtol=0.02)  # ... and the bf16 merge keeps that change


def test_a_4bit_lora_export_refuses_adapters_that_do_not_load(tmp_path, llama_dir):
    """A QLoRA export loads only the fit's adapters into a fresh fp32 model, non-strictly: keys under another prefix
    would load nothing and export the bare base, so that is an error; the right keys export."""
    from trainer.export import save_peft
    from trainer.model import load_model
    from zerotune.errors import ZerotuneError

    plain = ModelConfig(path=str(llama_dir), method="lora")
    state = {k: v for k, v in load_model(plain, "causal-lm").state_dict().items() if "lora_" in k}
    spec = dataclasses.replace(
        _spec(llama_dir, "causal-lm", tmp_path / "model"), model=plain.model_copy(update={"quantization": "4bit"})
    )
    export = dict(spec=spec, label_names=None, fmt="adapter", dtype=torch.float32)
    moved = {k.replace("base_model.model.", "base_model.", 1): v for k, v in state.items()}
    with pytest.raises(ZerotuneError, match="lose the trained adapters"):
        save_peft(moved, out=tmp_path / "wrong", **export)
    save_peft(state, out=tmp_path / "right", **export)
    assert (tmp_path / "right" / "adapter_config.json").is_file()
