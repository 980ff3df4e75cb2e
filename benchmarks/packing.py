"""Packing (data.packing) against one row per sequence: training tokens/s and the share of padding.

`python -m benchmarks.packing` runs both layouts over the same epoch of the chat example's rows
(examples/causal-lm.smollm2-chat.yaml: the chatterbot dialogues through SmolLM2's tokenizer and chat template,
model.max_length 128) on a tiny llama (SmolLM2's architecture, 2 layers of width 32, random init, sdpa), in-process
on the CPU: forward, backward and an AdamW step per micro-batch of `batch` sequences. Both layouts see every
training row once; what differs is how many sequences carry them and how much of each is padding. Time is the
process's CPU time on one thread: on a shared machine wall time swings with the other processes' load (runs of
the same layout differed 2.5x), while the work a layout costs does not. It prints a line of JSON and writes
benchmarks/results/packing.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

CONFIG = "examples/causal-lm.smollm2-chat.yaml"


def _encoded(max_length: int, rows: int):
    from sweeps.config import load_config
    from sweeps.preflight.data import encode, sweep_examples

    cfg = load_config(CONFIG, [f"model.max_length={max_length}", "data.packing=true", f"data.max_rows={rows}"])
    return encode(cfg, sweep_examples(cfg))


def _model(vocab: int, pad_id: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=pad_id,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def _epoch(encoded, batches, inputs_of, *, vocab: int) -> dict:
    """Train one pass over `batches`; (real tokens, tokens with padding, seconds) after one warm-up batch."""
    import torch

    model = _model(vocab, encoded.pad_id).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    real = padded = 0
    seconds = 0.0  # CPU seconds of the steps
    for i, (rows, counted) in enumerate(batches):
        inputs = inputs_of(rows)
        t0 = time.process_time()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:  # the first step pays one-off costs (allocations, kernel selection)
            seconds += time.process_time() - t0
            real, padded = real + counted(inputs), padded + inputs["input_ids"].numel()
    return {
        "sequences": sum(len(rows) for rows, _ in batches),
        "steps": len(batches),
        "real_tokens": real,
        "padded_tokens": padded,
        "padding_share": round(1 - real / padded, 4),
        "tokens_per_s": round(real / seconds, 1),
        "cpu_seconds": round(seconds, 2),
    }


def packing(*, batch: int = 8, max_length: int = 128, repeats: int = 3, rows: int = 400) -> dict:
    import numpy as np
    import torch

    from trainer.data import collate
    from trainer.packing import collate_packed, epoch_batches, token_mask

    torch.set_num_threads(1)  # a shared 2-core machine: one thread is steadier
    encoded = _encoded(max_length, rows)
    vocab = int(max(int(ids.max()) for ids in encoded.input_ids)) + 1
    rows = np.arange(len(encoded))
    order = np.random.default_rng([0, 0, 0]).permutation(rows)
    unpacked = [order[i : i + batch] for i in range(0, len(order), batch)]
    packed = epoch_batches(encoded, rows, seed=0, fold=0, epoch=0, rank=0, world=1, batch=batch)
    runs = {"unpacked": [], "packed": []}
    for _ in range(repeats):  # alternated, so that machine load drifts hit both alike
        runs["unpacked"].append(
            _epoch(
                encoded,
                [(r, lambda x: int(x["attention_mask"].sum())) for r in unpacked],
                lambda r: collate(encoded, r, "causal-lm"),
                vocab=vocab,
            )
        )
        runs["packed"].append(
            _epoch(
                encoded,
                [(p, lambda x, p=p: int(token_mask(encoded, p, x).sum())) for p in packed],
                lambda p: collate_packed(encoded, p, flat=False),
                vocab=vocab,
            )
        )
    best = {k: sorted(v, key=lambda r: r["tokens_per_s"])[len(v) // 2] for k, v in runs.items()}  # the median
    return {
        "rows": len(encoded),
        "batch": batch,
        "max_length": max_length,
        "unpacked": best["unpacked"],
        "packed": best["packed"],
        "tokens_per_s_ratio": round(best["packed"]["tokens_per_s"] / best["unpacked"]["tokens_per_s"], 2),
        "padded_tokens_per_s": {k: round(r["padded_tokens"] / r["cpu_seconds"], 1) for k, r in best.items()},
        "tokens_per_s_runs": {k: [r["tokens_per_s"] for r in v] for k, v in runs.items()},
    }


def main() -> None:
    result = packing()
    out = Path(__file__).parent / "results" / "packing.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
