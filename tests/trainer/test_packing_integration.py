"""Chat rows, packed, through a real worker (Ray Train, DeepSpeed ZeRO 0, 1 worker): the tiny llama trains on short
arithmetic dialogues (1-2 exchanges) rendered with a compact Jinja chat template, one row per sequence and packed,
both fits on ONE worker group.

The packed fit must run fewer, fuller steps (less padding), its learning-rate schedule must be sized from the packed
steps (not from the row count), and its loss must fall."""

import json
from pathlib import Path

import numpy as np
import pytest

from sweeps.config import load_config
from sweeps.final.train import run_fits
from trainer.records import FitRecords

pytestmark = pytest.mark.integration

# Short turns: the tiny llama's byte-level BPE (400 tokens) spells chatml's markup byte by byte.
TEMPLATE = (
    "{% for m in messages %}{{ m['role'][0] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'a: ' }}{% endif %}"
)


def _dialogues(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        turns = []
        for _ in range(int(rng.integers(1, 3))):
            a, b = (int(x) for x in rng.integers(0, 10, size=2))
            turns += [{"role": "user", "content": f"{a} plus {b}?"}, {"role": "assistant", "content": f"{a + b}."}]
        rows.append({"messages": turns})
    return rows


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(trainer_ray):
    """The Ray instance of tests/trainer's integration modules (tests/conftest.py)."""


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    from tiny_models import tiny_llama

    rows = _dialogues(96)
    root = tmp_path_factory.mktemp("packing")
    data = root / "dialogues.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [f"{t['role'][0]}: {t['content']}" for row in rows for t in row["messages"]]
    model_dir = tiny_llama(tmp_path_factory.mktemp("chat-llama"), texts)
    cfgs = []
    for name, packing in (("chat-rows", False), ("chat-packed", True)):
        raw = {
            "name": name,
            "task": "causal-lm",
            "model": {"path": str(model_dir), "max_length": 64, "dropout": 0.0},
            "data": {
                "path": str(data),
                "format": "chat",
                "chat_template": TEMPLATE,
                "label_column": None,
                "max_rows": 96,
                "packing": packing,
            },
            "train": {"learning_rate": 3e-2, "batch_size": 4, "epochs": 2, "warmup_ratio": 0.25},
            "deepspeed": {"zero_stage": 0},
            "scaling": {"num_workers": 1},
            "storage": {"path": str(root), "checkpoint_every_epoch": False},
        }
        cfgs.append(load_config(raw=raw))
    return {s["name"]: s for s in run_fits(cfgs, export=False)}


def _padding_share(entry: dict) -> float:
    return 1 - entry["tokens_per_s"] / entry["padded_tokens_per_s"]


def test_packed_chat_trains_on_fewer_fuller_sequences_with_its_schedule_sized_from_them(fits):
    rows, packed = fits["chat-rows"], fits["chat-packed"]
    assert packed["n_train"] == rows["n_train"]
    steps = [h["steps"] for h in packed["history"]]
    assert steps[0] == steps[1]  # repacked each epoch, into the same number of sequences
    assert steps[0] < rows["history"][0]["steps"] / 2  # 64-token sequences hold several dialogues each
    assert _padding_share(packed["history"][0]) < _padding_share(rows["history"][0])
    losses = [h["train_loss"] for h in packed["history"]]
    assert losses[1] < losses[0], losses
    ds = FitRecords(str(Path(packed["metrics_path"]).with_name("records"))).deepspeed()
    assert ds["scheduler"]["params"]["total_num_steps"] == sum(steps)  # the schedule ends with the last step
