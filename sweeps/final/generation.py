"""`zerotune predict` for causal LMs: each row's prompt laid out as the model's training rows were (its recorded
preprocessing: chat template, prompt + newline, or plain text), then generated from, greedy or sampled, until one of
the recorded stop tokens (eos, the template's end-of-turn) or max_new_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zerotune.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """How new tokens are chosen: greedy, or sampled (do_sample) with temperature and nucleus (top_p)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(("--max-new-tokens", f"must be at least 1, got {self.max_new_tokens}", "use e.g. 64"))
        if self.temperature <= 0:
            problems.append(("--temperature", f"must be > 0, got {self.temperature:g}", "use e.g. 0.7"))
        if not 0 < self.top_p <= 1:
            problems.append(("--top-p", f"must be in (0, 1], got {self.top_p:g}", "use e.g. 0.9"))
        if not self.do_sample and (self.temperature != 1.0 or self.top_p != 1.0):
            # transformers would ignore them under greedy decoding: say so rather than run something else
            problems.append(("--temperature", "temperature and top_p only apply when sampling", "add --do-sample"))
        if problems:
            raise ConfigError(problems)


def generate_texts(exported, texts: list[str], *, sampling: Sampling, batch_size: int = 8) -> tuple[object, dict]:
    """(a table with each row's `generated` text, {"new_tokens": total generated}) for `exported`
    (sweeps.final.predict.Exported), rows in input order."""
    import pandas as pd
    import torch

    from trainer.generate import until_stop
    from trainer.preprocessing import prompt_ids

    sampling.check()
    tokenizer, pre = exported.tokenizer, exported.preprocessing
    stops = pre.get("stop_token_ids") or ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompts = [ids or [start] for ids in prompt_ids(texts, tokenizer, pre)]  # generate needs one token at least
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out, new_tokens = [""] * len(prompts), 0
    with torch.inference_mode():
        for first in range(0, len(prompts), batch_size):
            rows = order[first : first + batch_size]
            ids, mask = _left_padded([prompts[i] for i in rows], pad)
            generated = exported.model.generate(
                input_ids=ids.to(exported.device),
                attention_mask=mask.to(exported.device),
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sampling.do_sample,
                **({"temperature": sampling.temperature, "top_p": sampling.top_p} if sampling.do_sample else {}),
                pad_token_id=pad,
                eos_token_id=stops or None,
            )
            for i, row in zip(rows, generated[:, ids.shape[1] :].cpu().numpy(), strict=True):
                answer = until_stop(row, stops)
                new_tokens += len(answer)
                out[i] = tokenizer.decode(answer, skip_special_tokens=True)
    return pd.DataFrame({"generated": out}), {"new_tokens": new_tokens, "sampling": vars(sampling)}


def _left_padded(prompts: list[list[int]], pad: int):
    """One batch, prompts right-aligned (generation continues from each row's last token)."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask
