"""Generation evaluation (train.generate_eval): greedy continuations of the validation rows' prompts, scored
against their responses by exact match and ROUGE-L (Google's `rouge-score` package), with a few samples kept.

A row's prompt and reference come from its encoding, not from column names: the tokens before its first loss
token are the prompt, the loss tokens the reference. Rows are sharded over the
ranks as evaluation shards them; under ZeRO-3 every rank generates the same number of batches (dummy ones where
its shard is short) with `synced_gpus`, since each forward gathers the partitioned parameters collectively.
"""

from __future__ import annotations

import numpy as np

from trainer.worker import Worker


def prompt_and_reference(encoded, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt token ids, reference token ids) of one causal-lm row; an empty prompt when nothing is masked."""
    ids = np.asarray(encoded.input_ids[row])
    start = int(encoded.loss_start[row]) if encoded.loss_start is not None else 0
    return ids[:start], ids[start:]  # the end-of-sequence token is a special token: decoding drops it


def is_instruction_data(encoded) -> bool:
    """Whether the rows have prompts to generate from (a loss mask that leaves a prefix out)."""
    return encoded.loss_start is not None and bool(np.any(np.asarray(encoded.loss_start) > 0))


def normalized(text: str) -> str:
    """What exact match compares: the text with its whitespace collapsed."""
    return " ".join(text.split())


def generation_metrics(references: list[str], generated: list[str]) -> dict:
    """exact_match (whitespace-normalised) and mean ROUGE-L F1 of `generated` against `references`."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = list(zip(references, generated, strict=True))
    if not pairs:
        return {"exact_match": float("nan"), "rouge_l": float("nan"), "generated_rows": 0}
    return {
        "exact_match": float(np.mean([normalized(r) == normalized(g) for r, g in pairs])),
        "rouge_l": float(np.mean([scorer.score(r, g)["rougeL"].fmeasure for r, g in pairs])),
        "generated_rows": len(pairs),
    }


def generate_eval(w: Worker, engine, batches, tokenizer) -> dict:
    """The generation metrics and `generations`, the first train.generate_samples rows' (row, prompt, reference,
    generated), over this rank's `batches` ((rows, real) as trainer.evaluate shards them) and every other rank's.
    Collective: every rank calls this."""
    import torch.distributed as dist

    train = w.spec.train
    synced = w.spec.deepspeed.zero_stage == 3 and w.world > 1
    mine = []
    for batch, real in batches:
        if not (real or synced):
            continue  # without ZeRO-3 no rank waits on another's forwards
        new_tokens = _generate(w, engine, batch, synced=synced)
        if real:
            mine += [
                (int(r), _texts(w.encoded, tokenizer, int(r), new)) for r, new in zip(batch, new_tokens, strict=True)
            ]
    gathered = [mine]
    if dist.is_initialized() and w.world > 1:
        gathered = [None] * w.world
        dist.all_gather_object(gathered, mine)
    done = sorted(item for part in gathered for item in part)
    metrics = generation_metrics([t["reference"] for _, t in done], [t["generated"] for _, t in done])
    metrics["generations"] = [{"row": r, **t} for r, t in done[: train.generate_samples]]
    return metrics


def _generate(w: Worker, engine, rows: np.ndarray, *, synced: bool) -> list[np.ndarray]:
    """Greedy new tokens for each row's prompt, the prompts left-padded into one batch."""
    import torch

    prompts = [prompt_and_reference(w.encoded, int(r))[0] for r in rows]
    width = max(1, max(len(p) for p in prompts))
    ids = torch.full((len(prompts), width), w.encoded.pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    out = engine.module.generate(
        input_ids=ids.to(w.device),
        attention_mask=mask.to(w.device),
        max_new_tokens=w.spec.train.generate_max_new_tokens,
        do_sample=False,
        pad_token_id=w.encoded.pad_id,
        synced_gpus=synced,
    )
    return [row.cpu().numpy() for row in out[:, width:]]


def _texts(encoded, tokenizer, row: int, new_tokens: np.ndarray) -> dict:
    prompt, reference = prompt_and_reference(encoded, row)
    return {
        "prompt": tokenizer.decode(prompt, skip_special_tokens=True),
        "reference": tokenizer.decode(reference, skip_special_tokens=True),
        "generated": tokenizer.decode(new_tokens, skip_special_tokens=True),
    }
