"""Models as the examples load them, each through a real fit (Ray Train + DeepSpeed ZeRO 0, one CPU worker):

- a GGUF file (a tiny random llama written here by tests/tiny_models.tiny_gguf as llama.cpp's converter writes
  one: its config, its gpt2-type byte-level vocabulary and its tensors all come from the file), as
  examples/causal-lm.smollm2-dialogues.yaml and the Chinese example load SmolLM2-135M;
- Chinese text through a tokenizer that covers it (a byte-level BPE trained here on the corpus, as SmolLM2's is
  byte-level) on a tiny random llama, as examples/classification.chatterbot-chinese.yaml classifies it.

Both fits share ONE worker group (sweeps.final.train.run_fits): its start is most of this module's time.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from sweeps.config import load_config
from sweeps.final.train import run_fits

pytestmark = pytest.mark.integration
CHINESE = {
    "path": "pkg:chatterbot_corpus/data/chinese",
    "format": "chatterbot",
    "label_column": "topic",
    "normalize": True,
    "dedupe": True,
    "rare_classes": "drop",
}


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(trainer_ray):
    """The Ray instance of tests/trainer's integration modules (tests/conftest.py)."""


def _cfg(name, root, model_path, data, *, max_length, batch_size, epochs):
    return load_config(
        raw={
            "name": name,
            "task": "classification",
            "model": {"path": str(model_path), "max_length": max_length, "dropout": 0.0},
            "data": data,
            "train": {"learning_rate": 3e-3, "batch_size": batch_size, "epochs": epochs, "warmup_ratio": 0.0},
            "deepspeed": {"zero_stage": 0},
            "scaling": {"num_workers": 1, "max_failures": 0},  # a failure is a bug here
            "storage": {"path": str(root), "checkpoint_every_epoch": False},
        }
    )


def _chinese_texts() -> list[str]:
    from trainer.config import DataConfig
    from trainer.data import to_examples
    from trainer.tables import read_table

    cfg = DataConfig(**CHINESE)
    return to_examples(read_table(cfg), cfg, "classification", seed=0).texts


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    from tiny_models import keyword_rows, tiny_gguf

    return tiny_gguf(tmp_path_factory.mktemp("gguf"), list(keyword_rows()["text"]))


@pytest.fixture(scope="module")
def chinese_model(tmp_path_factory):
    from tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("zh-llama"), _chinese_texts())


@pytest.fixture(scope="module")
def fits(tmp_path_factory, gguf, chinese_model, keyword_csv):
    root = tmp_path_factory.mktemp("model-fits")
    cfgs = [
        _cfg("gguf", root, gguf[0], {"path": str(keyword_csv)}, max_length=32, batch_size=8, epochs=3),
        _cfg("chinese", root, chinese_model, CHINESE, max_length=64, batch_size=16, epochs=4),
    ]
    return {s["name"]: s for s in run_fits(cfgs, export=True)}


def _reloads_as_trained(model_dir: Path) -> None:
    """The export is a plain transformers model that reproduces the engine's predictions on the probe rows."""
    import torch
    from transformers import AutoModelForSequenceClassification

    probe = json.loads((model_dir / "engine_predictions.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        for row, expected in zip(probe["rows"], probe["values"], strict=True):
            logits = model(input_ids=torch.tensor([row])).logits[0].numpy()
            np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_a_gguf_model_trains_and_exports(fits, gguf):
    summary = fits["gguf"]
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < losses[0] * 0.9, losses
    assert summary["metrics"]["accuracy"] > 0.5  # three balanced classes: chance is 1/3
    model_dir = Path(summary["model_dir"])
    meta = json.loads((model_dir / "zerotune.json").read_text())
    assert meta["gguf_file"] == gguf[0].name and meta["base_model"] == str(gguf[0].parent)
    _reloads_as_trained(model_dir)


def test_chinese_text_trains_through_a_tokenizer_that_covers_it(fits, chinese_model):
    from transformers import AutoTokenizer

    texts = _chinese_texts()
    tok = AutoTokenizer.from_pretrained(chinese_model)
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id is None or not any(tok.unk_token_id in row for row in ids)
    assert tok.batch_decode(ids) == texts  # every character comes back: none was lost to an unknown token
    summary = fits["chinese"]
    assert summary["n_train"] + summary["n_val"] == len(texts)
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < losses[0] * 0.9, losses
    assert summary["metrics"]["accuracy"] > 0.25  # 17 topics; it read the characters (0.47 here, 4 epochs)
    _reloads_as_trained(Path(summary["model_dir"]))
