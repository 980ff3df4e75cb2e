"""Causal-LM rows as token ids and loss masks. Instruction and chat rows (data.format chat / alpaca): their
turns, and how a chat template renders them into token ids with a loss mask set on the assistant turns only;
prompt + response rows (the response only) and plain texts (all of it).

The mask is found from the template's own output, so it holds for any template that renders a conversation's start
as a prefix of the whole (chatml, Llama 3, Mistral, SmolLM2's, ...): an assistant turn is the text that
rendering the turn adds after the generation prompt of the turns before it (its content and its end-of-turn token).
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import TYPE_CHECKING, Any

import numpy as np

from zerotune.errors import DataError

if TYPE_CHECKING:  # no trainer module here: trainer.config and trainer.data import this one
    from pathlib import Path

    import pandas as pd

ROLES = ("system", "user", "assistant")
# ShareGPT's {from, value} turns name their speakers differently.
_ROLE_NAMES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}

# Named templates (data.chat_template) for tokenizers that ship none.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML}

TURNS = "\0turns"  # chat/alpaca: the column of each row's turns as JSON, made while reading (no file has it)

_TEMPLATE_FIX = "set data.chat_template: chatml (or a Jinja chat template)"


def read_chatterbot(directory: Path) -> pd.DataFrame:
    """chatterbot-corpus YAML files: one row per dialogue, its first two turns and its topic."""
    import pandas as pd
    import yaml

    rows = []
    for file in sorted(directory.glob("*.yml")):
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for convo in doc.get("conversations") or []:
            turns = [str(t) for t in convo if t is not None]
            if not turns:
                continue
            rows.append({"text": turns[0], "response": turns[1] if len(turns) > 1 else "", "topic": file.stem})
    return pd.DataFrame(rows, columns=["text", "response", "topic"])


def is_jinja(text: str) -> bool:
    return "{{" in text or "{%" in text


def _problem(field: str, message: str, fix: str) -> DataError:
    return DataError([(field, message, fix)])


def clean_turn(text: Any, normalize: bool) -> str:
    """A turn's text: NFKC and trimmed when normalising; its line breaks stay (code and lists keep their shape)."""
    if text is None or (isinstance(text, float) and math.isnan(text)):  # an empty cell (alpaca's input)
        return ""
    text = str(text)
    return unicodedata.normalize("NFKC", text).strip() if normalize else text


def turns_of(cell: Any, *, row: int, normalize: bool) -> list[dict[str, str]]:
    """One chat row's turns as [{role, content}], from OpenAI's {role, content} or ShareGPT's {from, value} dicts
    (a list, a Parquet array, or a JSON string in a CSV cell). Anything else is an error naming the row."""
    field = "data.messages_column"
    fix = "give each row a list of {role, content} turns (roles system, user, assistant)"
    if isinstance(cell, str):
        try:
            cell = json.loads(cell)
        except ValueError:
            raise _problem(field, f"row {row}: the cell is text, not a JSON list of turns", fix) from None
    if isinstance(cell, np.ndarray):
        cell = cell.tolist()
    if not isinstance(cell, (list, tuple)):
        raise _problem(field, f"row {row}: expected a list of turns, got {type(cell).__name__}", fix)
    turns = []
    for turn in cell:
        if not isinstance(turn, dict):
            raise _problem(field, f"row {row}: a turn is {type(turn).__name__}, not a dict", fix)
        # Parquet unifies the turns' keys into one struct: the spelling a turn does not use reads as None.
        speaker = turn.get("role") if turn.get("role") is not None else turn.get("from")
        text = turn.get("content") if turn.get("content") is not None else turn.get("value")
        role = _ROLE_NAMES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise _problem(field, f"row {row}: unknown role {speaker!r}", f"use one of {', '.join(ROLES)}")
        turns.append({"role": role, "content": clean_turn(text, normalize)})
    return turns


def alpaca_turns(instruction: Any, input_: Any, output: Any, *, normalize: bool) -> list[dict[str, str]]:
    """An alpaca row as a user turn (the instruction, then its input when there is one) and an assistant turn."""
    prompt = clean_turn(instruction, normalize)
    extra = clean_turn(input_, normalize)
    if extra:
        prompt = f"{prompt}\n\n{extra}"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": clean_turn(output, normalize)}]


def trains_on(turns: list[dict[str, str]]) -> bool:
    """A row trains only if an assistant turn after the first turn has text (the loss is on answers alone)."""
    return any(t["role"] == "assistant" and t["content"] for t in turns[1:])


ALPACA = ("instruction", "input", "output")  # alpaca's columns; input may be missing or empty


def chat_texts(df: pd.DataFrame, cfg) -> list[str]:
    """Each row's turns as JSON (what dedupe compares and the fingerprint hashes); "" for a row with no assistant
    text to train on. `cfg` is the DataConfig."""
    if cfg.format == "chat":
        cells = df[cfg.messages_column]
        rows = [turns_of(cell, row=i + 1, normalize=cfg.normalize) for i, cell in zip(df.index, cells, strict=True)]
    else:
        missing = [c for c in ALPACA if c not in df.columns and c != "input"]
        if missing:
            raise _problem(
                "data.format",
                f"alpaca rows need columns {', '.join(ALPACA)} (input optional); missing {', '.join(missing)}",
                f"rename the data's columns, or use data.format chat (have: {', '.join(map(str, df.columns))})",
            )
        inputs = df["input"] if "input" in df.columns else [None] * len(df)
        rows = [
            alpaca_turns(i, x, o, normalize=cfg.normalize)
            for i, x, o in zip(df["instruction"], inputs, df["output"], strict=True)
        ]
    return [json.dumps(turns, ensure_ascii=False) if trains_on(turns) else "" for turns in rows]


def template_for(tokenizer, configured: str | None) -> str:
    """The Jinja template rows are rendered with: data.chat_template (a name or Jinja) when set, else the
    tokenizer's own; none at all is refused."""
    if configured is not None:
        return TEMPLATES.get(configured, configured)
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the default one is the chat template
        own = own.get("default")
    if not own:
        raise _problem("data.chat_template", "the tokenizer has no chat template", _TEMPLATE_FIX)
    return own


def causal_lm_rows(examples, tokenizer, max_length: int, chat_template: str | None):
    """(ids, loss masks) per row of `examples` (trainer.data.Examples): chat turns through the chat template
    (assistant turns), a prompt + response (the response and eos), or a plain text (all of it, and eos)."""
    if examples.turns is not None:
        if not tokenizer.is_fast:
            raise _problem(
                "model.path", "chat rows need a fast tokenizer (token offsets)", "use the model's tokenizer.json"
            )
        template = template_for(tokenizer, chat_template)
        ids, masks = zip(*(render(t, tokenizer, template, max_length) for t in examples.turns), strict=True)
        ids, masks = list(ids), list(masks)
    else:
        eos = tokenizer.eos_token or ""
        if examples.responses is not None:
            prompts = [t + "\n" for t in examples.texts]
            full = [p + r + eos for p, r in zip(prompts, examples.responses, strict=True)]
            starts = [len(i) for i in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        else:
            full = [t + eos for t in examples.texts]
            starts = [0] * len(full)
        ids = tokenizer(full, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        masks = [np.arange(len(i)) >= start for i, start in zip(ids, starts, strict=True)]
    return ids, masks


def has_answer(mask: np.ndarray) -> bool:
    """Whether a row has a token to train on: the loss predicts token t from the tokens before it, so position 0 is
    never a label. A row max_length truncated before its answer has none (trainer.data.drop_unanswered drops it)."""
    return bool(mask[1:].any())


def answer_span(mask: np.ndarray) -> tuple[int, int]:
    """(start, end) of a row's last run of loss tokens: the answer (a response, the last assistant turn) its prompt
    asks for, without a user turn that may follow it; (0, 0) when it has none."""
    true = np.flatnonzero(mask)
    if not len(true):
        return 0, 0
    gaps = np.flatnonzero(np.diff(true) > 1)
    start = int(true[gaps[-1] + 1]) if len(gaps) else int(true[0])
    return start, int(true[-1]) + 1


def render(turns: list[dict[str, str]], tokenizer, template: str, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, loss mask) of one conversation, truncated to max_length: the mask is set on every token of an
    assistant turn (its end-of-turn token included) but one that opens the conversation, and on nothing else."""
    text = _apply(tokenizer, template, turns)
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant" or i == 0:  # an opening assistant turn answers nothing: context
            continue
        before = _apply(tokenizer, template, turns[:i], prompt=True)
        through = _apply(tokenizer, template, turns[: i + 1])
        if not (through.startswith(before) and text.startswith(through)):
            raise _problem(
                "data.chat_template",
                f"the template renders turn {i} differently once the conversation goes on, so the assistant's "
                "tokens cannot be told apart",
                _TEMPLATE_FIX,
            )
        # What follows the end-of-turn token (chatml's newline) is the next turn's opening, not the answer.
        spans.append((len(before), len(through.rstrip())))
    out = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length, return_offsets_mapping=True)
    ids = np.asarray(out["input_ids"], dtype=np.int32)
    offsets = np.asarray(out["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(len(ids), dtype=bool)
    for start, end in spans:  # a token is the assistant's if any of its characters is
        mask |= (offsets[:, 0] < end) & (offsets[:, 1] > start)
    return ids, mask


def _apply(tokenizer, template: str, turns: list[dict[str, str]], *, prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(
            turns, chat_template=template, tokenize=False, add_generation_prompt=prompt
        )
    except Exception as exc:  # a template's own error (jinja's raise_exception): the message says what it wants
        raise _problem(
            "data.chat_template",
            f"the chat template refused a conversation: {(str(exc).splitlines() or [type(exc).__name__])[0]}",
            "fix the rows (e.g. alternate user and assistant turns), or " + _TEMPLATE_FIX,
        ) from None
