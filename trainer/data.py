"""Turn a table (trainer.tables reads it) into examples for the task, tokenize once.

The driver calls `load_examples` and `tokenize` once per sweep; the result
(`Encoded`) is shipped to every trial and fold, which only index into it.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.chat import TURNS, answer_span, causal_lm_rows, chat_texts, has_answer
from trainer.config import DataConfig, Task
from zerotune.errors import DataError

if TYPE_CHECKING:  # annotations only: both are imported where they are used
    import pandas as pd
    import torch

log = logging.getLogger(__name__)


def problem(field_: str, message: str, fix: str) -> DataError:
    return DataError([(field_, message, fix)])


def resolve_path(path: str) -> str:
    """'pkg:PACKAGE/sub/dir' -> the directory inside an installed package (its __init__ is not run)."""
    if not path.startswith("pkg:"):
        return str(Path(path).expanduser()) if path.startswith(("~", ".", "/")) else path
    import importlib.util

    package, _, sub = path[4:].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        fix = f"pip install {package.replace('_', '-')} (or the 'demo' extra)"
        raise problem("path", f"package {package!r} is not installed", fix)
    return str(Path(list(spec.submodule_search_locations)[0]) / sub)


@dataclass(frozen=True)
class Examples:
    """Rows ready to tokenize; `labels` are ids (classification) or floats (regression)."""

    texts: list[str]  # chat/alpaca: each row's turns as JSON
    pairs: list[str] | None = None
    responses: list[str] | None = None
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    groups: np.ndarray | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    turns: list[list[dict[str, str]]] | None = None  # chat/alpaca: each row's [{role, content}, ...]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def prompted(self) -> bool:
        """causal-lm rows with a prompt outside the loss (chat/alpaca turns, or prompt + response)."""
        return self.turns is not None or self.responses is not None

    def take(self, rows: np.ndarray, *, dropped: dict[str, int]) -> Examples:
        """These rows only, with `dropped` (reason -> rows) added to the counts."""

        def pick(column):
            return None if column is None else [column[int(r)] for r in rows]

        counts = dict(self.dropped)
        for reason, n in dropped.items():
            counts[reason] = counts.get(reason, 0) + n
        return Examples(
            texts=pick(self.texts),
            pairs=pick(self.pairs),
            responses=pick(self.responses),
            labels=None if self.labels is None else self.labels[rows],
            label_names=self.label_names,
            groups=None if self.groups is None else self.groups[rows],
            dropped=counts,
            turns=pick(self.turns),
        )


ANSWER_CUT = "answer past model.max_length"  # the dropped-rows reason of drop_unanswered


def drop_unanswered(examples: Examples, tokenizer, max_length: int, chat_template: str | None) -> Examples:
    """causal-lm: the rows less those that max_length truncates before their answer starts (a long prompt or system
    turn), counted as dropped: the loss is only ever on answers, and such a row has none."""
    if not examples.prompted:
        return examples  # plain text: all of it is in the loss
    _, masks = causal_lm_rows(examples, tokenizer, max_length, chat_template)
    keep = np.flatnonzero([has_answer(m) for m in masks])
    if len(keep) == len(examples):
        return examples
    if not len(keep):
        raise problem(
            "model.max_length",
            f"every row's prompt fills model.max_length {max_length}: no answer token is left to train on",
            "raise model.max_length, or shorten the prompts",
        )
    cut = len(examples) - len(keep)
    log.warning("%d rows have no answer token within model.max_length %d: dropped", cut, max_length)
    return examples.take(keep, dropped={ANSWER_CUT: cut})


def clean_text(text: Any, normalize: bool) -> str:
    """A cell as training reads it: "" when empty; NFKC with collapsed whitespace when normalising."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    text = str(text)
    if normalize:
        text = " ".join(unicodedata.normalize("NFKC", text).split())
    return text


def to_examples(df, cfg: DataConfig, task: Task, *, seed: int, min_per_class: int = 2) -> Examples:
    """Check columns, clean, map labels to ids. `min_per_class` is what the split/folds need.

    A row whose text is empty is dropped and counted; a row without a label or a group (an empty cell,
    None/NaN) is an error naming the column (guessing either would change what is measured), and so is a
    regression target that is not a finite float32. Rows left: none is an error naming what dropped them."""
    needed = cfg.columns(task)
    chat = cfg.format in ("chat", "alpaca")
    if chat and task != "causal-lm":
        raise problem("data.format", f"{cfg.format} rows are instruction data for causal-lm", "set task: causal-lm")
    if task != "causal-lm" and not cfg.label_column:
        raise problem("data.label_column", f"{task} needs a label column", "set data.label_column")
    missing = [
        (k, f"column {v!r} not in the data", f"use one of: {', '.join(map(str, df.columns))}")
        for k, v in needed.items()
        if v not in df.columns
    ]
    if missing:
        raise DataError(missing)

    text_col = TURNS if chat else needed.get("data.prompt_column") or cfg.text_column
    label_col = cfg.label_column if task != "causal-lm" else None
    dropped: dict[str, int] = {}
    if cfg.max_rows and len(df) > cfg.max_rows:
        df = df.sample(n=cfg.max_rows, random_state=seed).sort_index()
    df = df.copy()
    if chat:
        df[TURNS] = chat_texts(df, cfg)
        df = _drop(df, df[TURNS].str.len() == 0, "no assistant turn", dropped)
    for col in {text_col, cfg.text_pair_column, cfg.response_column} - {None, TURNS}:
        df[col] = [clean_text(v, cfg.normalize) for v in df[col]]
    df = _drop(df, df[text_col].str.len() == 0, "empty text", dropped)
    for field_, col in (("data.label_column", label_col), ("data.group_column", cfg.group_column)):
        blank = _blank(df[col]) if col else None
        if blank is not None and blank.any():
            raise problem(field_, f"{int(blank.sum())} rows have no {col!r} value", "fill or drop those rows")
    if cfg.dedupe:
        keys = [c for c in (text_col, cfg.text_pair_column, cfg.response_column, label_col) if c]
        df = _drop(df, df.duplicated(subset=keys), "duplicates", dropped)
    _check_rows_left(df, dropped)

    labels = label_names = None
    if task == "classification":
        raw = df[label_col].astype(str)
        counts = raw.value_counts()
        rare = counts[counts < min_per_class]
        if len(rare):
            shown = ", ".join(f"{k} ({v})" for k, v in rare.items())
            if cfg.rare_classes == "error":
                raise problem(
                    "data.rare_classes",
                    f"classes with fewer than {min_per_class} rows: {shown}",
                    "set data.rare_classes: drop, lower folds.k, or add rows",
                )
            log.warning("dropping %d rare classes (< %d rows): %s", len(rare), min_per_class, shown)
            keep = ~raw.isin(rare.index)
            df, raw = _drop(df, ~keep, "rare classes", dropped), raw[keep]
        label_names = sorted(raw.unique())
        if len(label_names) < 2:
            found = f"only one class ({label_names[0]!r})" if label_names else "no class"
            raise problem(
                "data.label_column",
                f"{found} left with >= {min_per_class} rows",
                "classification needs at least two classes: add rows, or lower folds.k",
            )
        index = {name: i for i, name in enumerate(label_names)}
        labels = np.array([index[v] for v in raw], dtype=np.int64)
    elif task == "regression":
        labels = _targets(df[label_col], label_col)
    groups = df[cfg.group_column].astype(str).to_numpy() if cfg.group_column else None
    return Examples(
        texts=list(df[text_col]),
        pairs=list(df[cfg.text_pair_column]) if cfg.text_pair_column else None,
        responses=list(df[cfg.response_column]) if task == "causal-lm" and cfg.response_column and not chat else None,
        labels=labels,
        label_names=label_names,
        groups=groups,
        dropped=dropped,
        turns=[json.loads(t) for t in df[TURNS]] if chat else None,
    )


# Which field to change when dropping rows for this reason left none.
_DROP_FIELD = {
    "empty text": "data.text_column",
    "no assistant turn": "data.messages_column",
    "duplicates": "data.dedupe",
    "rare classes": "data.rare_classes",
}


def _drop(df, mask, reason: str, dropped: dict[str, int]):
    """`df` without the rows of `mask`, counted under `reason`."""
    if mask.any():
        dropped[reason] = dropped.get(reason, 0) + int(mask.sum())
        df = df[~mask]
    return df


def _blank(values) -> pd.Series:
    """Cells the data left empty: None/NaN, or only whitespace."""
    return values.isna() | (values.astype(str).str.strip() == "")


def _check_rows_left(df, dropped: dict[str, int]) -> None:
    if not df.empty:
        return
    if not dropped:
        raise problem("data.path", "the data has no rows", "give a data set with rows")
    worst = max(dropped, key=dropped.get)
    shown = ", ".join(f"{n} ({why})" for why, n in dropped.items())
    raise problem(
        _DROP_FIELD[worst],
        f"no rows left after dropping {shown}",
        "check that data.text_column names the column that holds the text, or add rows",
    )


def _targets(values, column: str) -> np.ndarray:
    """Regression targets as float32; a value that is not a finite float32 is refused (it would train as inf/NaN)."""
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (np.abs(numbers) > np.finfo(np.float32).max)
    if bad.any():
        first = values.iloc[int(np.argmax(bad))]
        raise problem(
            "data.label_column",
            f"{int(bad.sum())} rows of {column!r} hold no finite number within float32 (e.g. {first!r})",
            "fix those values, or drop those rows",
        )
    return numbers.astype(np.float32)


@dataclass(frozen=True)
class Encoded:
    """Tokenized rows: ragged int32 id arrays, their loss masks (causal-lm) or targets, and how training batches."""

    input_ids: list[np.ndarray]
    labels: np.ndarray | None  # class ids / float targets; None for causal-lm
    # causal-lm: per row, the tokens the loss is on (a response, an assistant turn, all of a plain text); None else
    loss_mask: list[np.ndarray] | None
    pad_id: int
    label_names: list[str] | None
    # Sentence pairs (data.text_pair_column): each row is text + pair, and `zerotune predict` must be given both.
    paired: bool = False
    # Pairs, where the model takes segment ids (BERT): 0 for the text, 1 for the pair. Training without them would
    # teach the model one segment while `zerotune predict` (the tokenizer's full output) feeds it two.
    type_ids: list[np.ndarray] | None = None
    pack_to: int | None = None  # data.packing: training sequences are rows packed up to this many tokens
    # The raw texts (classification, regression): what the report's worst-classified rows show (trainer.evaluate).
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @cached_property
    def answers(self) -> np.ndarray | None:
        """causal-lm: per row, (start, end) of its last stretch of loss tokens (the answer its prompt asks for: the
        response, or the last assistant turn); None for the other tasks. What generation continues from and is
        scored against."""
        if self.loss_mask is None:
            return None
        return np.array([answer_span(m) for m in self.loss_mask], dtype=np.int32).reshape(-1, 2)


def tokenize(
    examples: Examples,
    tokenizer,
    task: Task,
    max_length: int,
    *,
    chat_template: str | None = None,
    packing: bool = False,
) -> Encoded:
    """Tokenize every row once; batches are padded (or packed) later, per batch."""
    type_ids = masks = labels = None
    if task == "causal-lm":
        ids, masks = causal_lm_rows(examples, tokenizer, max_length, chat_template)
    else:
        out = tokenizer(examples.texts, examples.pairs, truncation=True, max_length=max_length)
        ids = out["input_ids"]
        if examples.pairs is not None and "token_type_ids" in tokenizer.model_input_names:
            type_ids = [np.asarray(t, dtype=np.int8) for t in out["token_type_ids"]]
        labels = examples.labels
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return Encoded(
        input_ids=[np.asarray(i, dtype=np.int32) for i in ids],
        labels=labels,
        loss_mask=masks,
        pad_id=int(pad),
        label_names=examples.label_names,
        paired=examples.pairs is not None,
        type_ids=type_ids,
        pack_to=max_length if packing else None,
        texts=None if task == "causal-lm" else list(examples.texts),
    )


def collate(encoded: Encoded, rows: np.ndarray, task: Task) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest row."""
    import torch

    seqs = [encoded.input_ids[i] for i in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), encoded.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.from_numpy(s.astype(np.int64))
        mask[j, : len(s)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if encoded.type_ids is not None:
        types = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, row in enumerate(rows):
            types[j, : len(seqs[j])] = torch.from_numpy(encoded.type_ids[row].astype(np.int64))
        batch["token_type_ids"] = types
    if task == "causal-lm":
        counted = torch.zeros((len(seqs), width), dtype=torch.bool)
        for j, row in enumerate(rows):
            # The masks arrive read-only from Ray's object store; a copy keeps torch from warning about it.
            counted[j, : len(seqs[j])] = torch.from_numpy(encoded.loss_mask[row].copy())
        batch["labels"] = ids.masked_fill(~counted, -100)
    elif task == "regression":
        batch["labels"] = torch.as_tensor(encoded.labels[rows], dtype=torch.float32)
    else:
        batch["labels"] = torch.as_tensor(encoded.labels[rows], dtype=torch.long)
    return batch
