"""Generation evaluation (train.generate_eval): greedy continuations of the validation rows' prompts, scored
against their responses by exact match and ROUGE-L (Google's `rouge-score` package), with a few samples kept.

A row's prompt and reference come from its encoding, not from column names: its answer is its last run of loss
tokens (a response, the last assistant turn), the tokens before it the prompt, the answer the reference (without a
user turn after it). Generation stops at the end-of-turn token a chat template closes the assistant's turns with
(<|im_end|> on a model whose eos is <|endoftext|>), as well as at eos, and neither is scored. Rows are sharded over the
ranks as evaluation shards them; under ZeRO-3 every rank generates the same number of batches (dummy ones where
its shard is short) with `synced_gpus`, since each forward gathers the partitioned parameters collectively.
"""

from __future__ import annotations

import numpy as np

from trainer.worker import Worker


def prompt_and_reference(encoded, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt token ids, reference token ids) of one causal-lm row: the tokens before its answer, and the answer
    (what follows it, e.g. a next user turn, is neither); an empty prompt when nothing is masked."""
    ids = np.asarray(encoded.input_ids[row])
    if encoded.answers is None:
        return ids[:0], ids
    start, end = (int(i) for i in encoded.answers[row])
    return ids[:start], ids[start:end]


def is_instruction_data(encoded) -> bool:
    """Whether the rows have prompts to generate from (a loss mask that leaves a prefix out)."""
    return encoded.answers is not None and bool(np.any(encoded.answers[:, 0] > 0))


def stop_ids(encoded, tokenizer, model_eos=None) -> list[int]:
    """The token ids an answer ends at: the model's eos (`model_eos`: its generation config's, an id or a list), the
    tokenizer's, and each single special or added token the rows' answers end with (chatml's <|im_end|>, Llama 3's
    <|eot_id|>): the end-of-turn token as the encoding holds it, whichever template rendered the rows."""
    ends = {int(encoded.input_ids[r][end - 1]) for r, (start, end) in enumerate(encoded.answers) if end > start}
    single = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    eos = [model_eos] if isinstance(model_eos, int) else list(model_eos or [])
    eos += [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return list(dict.fromkeys([*eos, *sorted(ends & single)]))


def until_stop(tokens: np.ndarray, stops: list[int]) -> np.ndarray:
    """`tokens` up to the first stop token (not included): what generation or a reference answers."""
    at = np.flatnonzero(np.isin(tokens, stops))
    return tokens[: at[0]] if len(at) else tokens


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
    stops = stop_ids(w.encoded, tokenizer, getattr(engine.module.generation_config, "eos_token_id", None))
    mine = []
    for batch, real in batches:
        if not (real or synced):
            continue  # without ZeRO-3 no rank waits on another's forwards
        new_tokens = _generate(w, engine, batch, synced=synced, stops=stops)
        if real:
            mine += [
                (int(r), _texts(w.encoded, tokenizer, int(r), new, stops))
                for r, new in zip(batch, new_tokens, strict=True)
            ]
    gathered = [mine]
    if dist.is_initialized() and w.world > 1:
        gathered = [None] * w.world
        dist.all_gather_object(gathered, mine)
    done = sorted(item for part in gathered for item in part)
    metrics = generation_metrics([t["reference"] for _, t in done], [t["generated"] for _, t in done])
    metrics["generations"] = [{"row": r, **t} for r, t in done[: train.generate_samples]]
    return metrics


def _generate(w: Worker, engine, rows: np.ndarray, *, synced: bool, stops: list[int]) -> list[np.ndarray]:
    """Greedy new tokens for each row's prompt, the prompts left-padded into one batch, until a stop token."""
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
        eos_token_id=stops or None,
        synced_gpus=synced,
    )
    return [row.cpu().numpy() for row in out[:, width:]]


def _texts(encoded, tokenizer, row: int, new_tokens: np.ndarray, stops: list[int]) -> dict:
    prompt, reference = prompt_and_reference(encoded, row)
    return {
        "prompt": tokenizer.decode(prompt, skip_special_tokens=True),
        "reference": tokenizer.decode(until_stop(reference, stops), skip_special_tokens=True),
        "generated": tokenizer.decode(until_stop(new_tokens, stops), skip_special_tokens=True),
    }
