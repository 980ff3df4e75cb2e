"""How training turned a row into tokens, as a record: the export keeps it (zerotune.json "preprocessing") and
`zerotune predict` applies it to new rows, so a prediction sees its input as training saw its rows whatever the
current config says: the same normalisation, text pairs and max_length and, for a causal LM, the same prompt format
(the chat template that rendered the turns, prompt + newline, or plain text) and the tokens an answer ends at.
"""

from __future__ import annotations

from trainer.chat import TEMPLATES, clean_turn
from trainer.data import clean_text

# How a causal LM's rows were laid out: turns through a chat template, a prompt line and its response, plain text.
CHAT, PROMPT_RESPONSE, PLAIN = "chat", "prompt-response", "plain"


def recipe(data, model, task: str) -> dict:
    """The record of `data` (DataConfig) and `model` (ModelConfig) preprocessing for `task`; the export adds what
    only the tokenizer knows (`with_tokenizer`)."""
    prompt_format = None
    if task == "causal-lm":
        if data.format in ("chat", "alpaca"):
            prompt_format = CHAT
        elif data.response_column:
            prompt_format = PROMPT_RESPONSE
        else:
            prompt_format = PLAIN
    return {
        "dataset": data.path,
        "dataset_subset": data.subset,
        "format": data.format,
        "text_column": data.prompt_column or data.text_column,
        "text_pair_column": data.text_pair_column,
        "paired": data.text_pair_column is not None,
        "normalize": data.normalize,
        "max_length": model.max_length,
        "prompt_format": prompt_format,
        "chat_template": TEMPLATES.get(data.chat_template, data.chat_template),
    }


def with_tokenizer(rec: dict, tokenizer, *, stop_token_ids: list[int] | None) -> dict:
    """`rec` with the chat template actually used (data.chat_template, else the tokenizer's own) and the token ids an
    answer ends at, so predict needs neither the config nor the training rows."""
    out = dict(rec, stop_token_ids=stop_token_ids)
    if rec.get("prompt_format") == CHAT:
        from trainer.chat import template_for

        out["chat_template"] = template_for(tokenizer, rec.get("chat_template"))
    return out


def clean(texts: list, rec: dict) -> list[str]:
    """Texts as training cleaned its cells (chat turns keep their line breaks, as training kept them)."""
    if rec.get("prompt_format") == CHAT:
        return [clean_turn(t, rec.get("normalize", False)) for t in texts]
    return [clean_text(t, rec.get("normalize", False)) for t in texts]


def prompt_ids(texts: list[str], tokenizer, rec: dict) -> list[list[int]]:
    """Token ids a causal LM continues from, one row each, laid out as its training rows were up to their answer:
    a user turn through the chat template with the assistant's generation prompt, the prompt and its newline, or the
    plain text; at most max_length tokens (training truncated its rows there)."""
    cleaned = clean(texts, rec)
    fmt = rec.get("prompt_format") or PLAIN
    if fmt == CHAT:
        rendered = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}],
                chat_template=rec["chat_template"],
                tokenize=False,
                add_generation_prompt=True,
            )
            for t in cleaned
        ]
    elif fmt == PROMPT_RESPONSE:
        rendered = [t + "\n" for t in cleaned]
    else:
        rendered = cleaned
    ids = tokenizer(rendered, add_special_tokens=False, truncation=True, max_length=rec["max_length"])["input_ids"]
    return [list(i) for i in ids]
