"""Evaluate an engine on a fold's validation rows: each rank scores its shard, results are gathered.

Shards are padded with dummy forwards so every rank runs the same number of forwards (ZeRO-3 gathers
parameters collectively inside each one). Causal-LM instruction data is also scored by generation when
train.generate_eval is on (trainer.generate, over the same shards).
"""

from __future__ import annotations

import math

import numpy as np

from trainer.methods import strip_virtual_tokens
from trainer.metrics import causal_lm_metrics, classification_metrics, regression_metrics
from trainer.records import WORST_ROWS
from trainer.worker import Worker

# Bounded: every fold record, checkpoint and summary carries them. Enough for the report to show the worst ten.
WORST_ROWS_KEPT = 10
TEXT_CHARS = 300


def evaluate(w: Worker, engine, val_rows: np.ndarray, *, generate: bool = True) -> dict:
    """The task's metrics on `val_rows` (collective: every rank calls this). `generate` False leaves out generation
    (train.generate_eval) where nothing reads it: the early-stopping holdout picks the epoch by its loss alone."""
    import torch

    engine.eval()
    try:
        with torch.no_grad():
            if w.spec.task == "causal-lm":
                metrics = _causal_lm(w, engine, val_rows)
                if generate and w.spec.train.generate_eval:
                    metrics.update(_generated(w, engine, val_rows))
                return metrics
            return _scored(w, *_logits(w, engine, val_rows))
    finally:
        engine.train()


def shard_batches(w: Worker, val_rows: np.ndarray):
    """(rows, real) per batch of this rank's shard; `real` False for a dummy batch that keeps ranks in step."""
    mine = val_rows[w.rank :: w.world]
    bs = w.spec.train.eval_batch_size
    for b in range(math.ceil(math.ceil(len(val_rows) / w.world) / bs)):
        rows = mine[b * bs : (b + 1) * bs]
        yield (rows, True) if len(rows) else (val_rows[:1], False)


def _causal_lm(w: Worker, engine, val_rows: np.ndarray) -> dict:
    import torch
    import torch.distributed as dist

    loss_sum, tokens = 0.0, 0
    for rows, real in shard_batches(w, val_rows):
        inputs = w.inputs(rows)
        out = engine(**inputs)
        if not real:
            continue
        logits = strip_virtual_tokens(out.logits, inputs["labels"].size(1))[:, :-1].float()
        labels = inputs["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        loss_sum += float(loss)
        tokens += int((labels != -100).sum())
    totals = torch.tensor([loss_sum, float(tokens)], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(totals)
    return causal_lm_metrics(float(totals[0]), int(totals[1]))


def _generated(w: Worker, engine, val_rows: np.ndarray) -> dict:
    from trainer.generate import generate_eval
    from trainer.model import load_tokenizer

    capped = val_rows[: w.spec.train.generate_max_rows] if w.spec.train.generate_max_rows else val_rows
    return generate_eval(w, engine, shard_batches(w, capped), load_tokenizer(w.spec.model))


def _logits(w: Worker, engine, val_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, logits) of every validation row, gathered from all ranks, in row order."""
    import torch.distributed as dist

    outputs, rows_seen = [], []
    for rows, real in shard_batches(w, val_rows):
        out = engine(**w.inputs(rows))
        if real:
            outputs.append(out.logits.float().cpu().numpy())
            rows_seen.append(rows)
    local = (
        np.concatenate(rows_seen) if rows_seen else np.zeros(0, dtype=np.int64),
        np.concatenate(outputs) if outputs else None,
    )
    gathered = [local]
    if dist.is_initialized() and w.world > 1:
        gathered = [None] * w.world
        dist.all_gather_object(gathered, local)
    idx = np.concatenate([g[0] for g in gathered])
    logits = np.concatenate([g[1] for g in gathered if g[1] is not None])
    order = np.argsort(idx, kind="stable")
    return idx[order], logits[order]


def _scored(w: Worker, idx: np.ndarray, logits: np.ndarray) -> dict:
    labels = w.encoded.labels[idx]
    if w.spec.task == "regression":
        preds = logits.reshape(-1)
        metrics = regression_metrics(preds, labels, eval_loss=float(np.mean((preds - labels) ** 2)))
        return {**metrics, WORST_ROWS: worst_regressed(idx, preds, labels, w.encoded.texts)}
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    eval_loss = float(-logp[np.arange(len(labels)), labels].mean())
    metrics = classification_metrics(logits, labels, w.encoded.label_names, eval_loss=eval_loss)
    return {**metrics, WORST_ROWS: worst_classified(idx, np.exp(logp), labels, w.encoded.label_names, w.encoded.texts)}


def worst_classified(
    rows: np.ndarray, probs: np.ndarray, labels: np.ndarray, label_names: list[str], texts: list[str] | None
) -> list[dict]:
    """The out-of-fold rows the model got most wrong: misclassified rows first, then by the probability on the true
    class, lowest first (a confident mistake before a hesitant one), at most WORST_ROWS_KEPT of them, each with its
    text, true and predicted label and the predicted class's probability (confidence)."""
    true_prob = probs[np.arange(len(labels)), labels]
    predicted = probs.argmax(axis=1)
    keep = np.lexsort((true_prob, predicted == labels))[:WORST_ROWS_KEPT]
    return [
        {
            "row": int(rows[i]),
            "text": _cut(texts[rows[i]]) if texts is not None else None,
            "label": label_names[labels[i]],
            "predicted": label_names[predicted[i]],
            "confidence": round(float(probs[i, predicted[i]]), 4),
            "true_prob": round(float(true_prob[i]), 4),
        }
        for i in keep
        if np.isfinite(true_prob[i])
    ]


def worst_regressed(rows: np.ndarray, preds: np.ndarray, targets: np.ndarray, texts: list[str] | None) -> list[dict]:
    """The out-of-fold rows with the largest absolute error, at most WORST_ROWS_KEPT of them."""
    error = np.abs(preds - targets)
    keep = np.argsort(-np.nan_to_num(error, nan=np.inf), kind="stable")[:WORST_ROWS_KEPT]
    return [
        {
            "row": int(rows[i]),
            "text": _cut(texts[rows[i]]) if texts is not None else None,
            "target": round(float(targets[i]), 4),
            "prediction": round(float(preds[i]), 4) if np.isfinite(preds[i]) else None,
            "error": round(float(error[i]), 4) if np.isfinite(error[i]) else None,
        }
        for i in keep
    ]


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"
