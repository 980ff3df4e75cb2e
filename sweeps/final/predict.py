"""`zerotune predict`: run an exported model directory (or a sweep's latest refit) on new rows
(CSV/TSV/JSONL/Parquet), on CPU or a GPU, no Ray.

Each row goes through the preprocessing the model was trained with, as its export recorded it (normalisation, text
pairs, max_length; a causal LM's prompt format and chat template), not as the current config says. Classification
rows get the label and one probability per class; regression rows get the value; a causal LM's rows get a generated
continuation (sweeps.final.generation). Rows are batched by length (less padding) and written back in input order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zerotune.errors import ConfigError, DataError

WRITERS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def read_rows(path: str, *, text_column: str, text_pair_column: str | None = None):
    """The input table, its texts and (sentence pairs) its second texts; one actionable error for a missing file or
    column."""
    from trainer.config import DataConfig
    from trainer.tables import read_table

    fmt = READERS.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(
            [("--input", f"cannot tell the format of {path}", f"use a file ending in {', '.join(READERS)}")]
        )
    try:
        df = read_table(DataConfig(path=path, format=fmt, label_column=None))
    except DataError as exc:
        raise DataError([("--input", message, fix) for _, message, fix in exc.problems]) from None
    named = (("--text-column", text_column), ("--text-pair-column", text_pair_column))
    missing = [(flag, col) for flag, col in named if col is not None and col not in df.columns]
    if missing:
        columns = ", ".join(map(str, df.columns))
        raise DataError([(flag, f"column {col!r} not in {path}", f"use one of: {columns}") for flag, col in missing])

    def column(name: str) -> list[str]:
        return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in df[name]]

    return df, column(text_column), column(text_pair_column) if text_pair_column else None


def model_directory(path: str) -> str:
    """`path` itself, or, for a sweep directory, the model of its latest completed refit (refit/latest.json)."""
    from sweeps.layout import SweepDir
    from trainer.storage import exists

    sweep = SweepDir(path)
    if not exists(sweep.folds):  # not a sweep (a model directory has a config.json too, never folds)
        return path
    run = sweep.latest_refit()
    if run is None:
        raise ConfigError(
            [
                (
                    "MODEL_DIR",
                    f"the sweep at {path} has no completed refit",
                    f"run `zerotune refit {path}` first, or pass an exported model directory",
                )
            ]
        )
    return run.model


@dataclass(frozen=True)
class Exported:
    """An exported model loaded for prediction, with the preprocessing its training applied (from its export)."""

    model: object
    tokenizer: object
    task: str
    preprocessing: dict  # trainer.preprocessing's record; a legacy export's is rebuilt from what it kept
    device: str

    @property
    def paired(self) -> bool:
        return bool(self.preprocessing.get("paired"))


def resolve_device(device: str) -> str:
    """cpu, cuda, or auto (cuda where torch sees a GPU, else cpu)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError([("--device", "torch sees no CUDA device here", "use --device cpu or auto")])
    if device not in ("cpu", "cuda"):
        raise ConfigError([("--device", f"unknown device {device!r}", "use cpu, cuda or auto")])
    return device


def load_model(model_dir: str, *, device: str = "cpu") -> Exported:
    """The model of an exported directory (full, merged or PEFT adapter) on `device`, its tokenizer, task and recorded
    preprocessing."""
    from transformers import AutoTokenizer

    from trainer.export import META, load_exported

    path = Path(model_dir)
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise ConfigError(
            [
                (
                    "MODEL_DIR",
                    f"{model_dir} is not a model directory (no config.json)",
                    "pass the model/ directory a refit or `zerotune train` exported",
                )
            ]
        )
    meta = json.loads((path / META).read_text()) if (path / META).is_file() else {}
    task = meta.get("task")
    if task is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        task = "regression" if config.problem_type == "regression" or config.num_labels == 1 else "classification"
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model, _ = load_exported(path, task=task)
    return Exported(
        model=model.to(device),
        tokenizer=tokenizer,
        task=task,
        preprocessing=meta.get("preprocessing") or _legacy_preprocessing(meta, tokenizer, model.config),
        device=device,
    )


def _legacy_preprocessing(meta: dict, tokenizer, config) -> dict:
    """An export from before preprocessing was recorded: its max_length and pairing; texts as given."""
    longest = min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", 512))
    max_length = meta.get("max_length") or longest
    return {"normalize": False, "paired": bool(meta.get("paired")), "max_length": int(max_length)}


def predict_texts(exported: Exported, texts: list[str], *, batch_size: int = 32, pairs=None) -> np.ndarray:
    """Logits (classification) or values (regression), in input order. Texts (and `pairs`, the second texts) are
    cleaned and tokenized as training did (trainer.preprocessing, trainer.data.tokenize), segment ids included."""
    import torch

    from trainer.preprocessing import clean

    pre, tokenizer = exported.preprocessing, exported.tokenizer
    texts = clean(texts, pre)
    pairs = clean(pairs, pre) if pairs is not None else None
    max_length = int(pre["max_length"])
    lengths = [len(ids) for ids in tokenizer(texts, pairs, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    out = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in rows],
                [pairs[i] for i in rows] if pairs is not None else None,
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(exported.device)
            logits = exported.model(**enc).logits.float().cpu().numpy()
            for i, row in zip(rows, logits, strict=True):
                out[i] = row
    values = np.stack(out) if out else np.zeros((0, exported.model.config.num_labels), dtype=np.float32)
    return values.reshape(-1) if exported.task == "regression" else values


def predict(
    model_dir: str,
    *,
    input_path: str,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    output: str | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    sampling=None,
) -> dict:
    """Predictions for every row of `input_path`; writes `output` (CSV/TSV/JSONL/Parquet by extension) when given.
    `text_column` defaults to the column the model was trained on (its export records it), else "text". A model
    trained on sentence pairs needs `text_pair_column`, and only such a model takes one. A causal LM generates a
    continuation of each row's prompt, laid out as in training; `sampling`: sweeps.final.generation.Sampling."""
    import pandas as pd
    import torch

    from trainer.storage import local_copy

    if output and Path(output).suffix.lower() not in WRITERS:
        raise ConfigError(
            [("--output", f"cannot tell the format of {output}", f"use a file ending in {', '.join(WRITERS)}")]
        )
    model_dir = model_directory(model_dir)
    with local_copy(model_dir, field="MODEL_DIR") as local:  # a model on object storage: loaded from a copy
        exported = load_model(local, device=device)
    text_column = text_column or exported.preprocessing.get("text_column") or "text"
    df, texts, pairs = read_rows(input_path, text_column=text_column, text_pair_column=text_pair_column)
    if exported.paired != (pairs is not None):
        # Single texts into a pairs model (or the reverse) run, and score as noise: refuse it.
        trained = "sentence pairs (text + text_pair)" if exported.paired else "single texts"
        fix = "pass --text-pair-column COLUMN" if exported.paired else "drop --text-pair-column"
        raise ConfigError([("--text-pair-column", f"{model_dir} was trained on {trained}", fix)])
    started = time.perf_counter()
    if exported.task == "causal-lm":
        from sweeps.final.generation import Sampling, generate_texts

        preds, extra = generate_texts(exported, texts, sampling=sampling or Sampling(), batch_size=batch_size)
    else:
        preds, extra = _scored(exported, predict_texts(exported, texts, batch_size=batch_size, pairs=pairs)), {}
    seconds = time.perf_counter() - started
    keep = [c for c in dict.fromkeys(("id", text_column, text_pair_column)) if c and c in df.columns]
    table = pd.concat([df[keep].reset_index(drop=True), preds], axis=1)
    if output:
        _write(table, output)
    return {
        "model": str(model_dir),
        "task": exported.task,
        "input": str(input_path),
        "output": output,
        "rows": len(table),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(table) / seconds, 1) if seconds > 0 else None,
        "batch_size": batch_size,
        "device": exported.device,
        "threads": torch.get_num_threads(),
        "preprocessing": {k: v for k, v in exported.preprocessing.items() if k != "chat_template"},
        **extra,
        "table": table,
    }


def _scored(exported: Exported, values: np.ndarray):
    """The prediction columns: the value (regression), or the label and one probability per class."""
    import pandas as pd

    if exported.task == "regression":
        return pd.DataFrame({"value": values.astype(float)})
    labels = [exported.model.config.id2label[i] for i in range(values.shape[1])]
    z = values - values.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return pd.DataFrame(
        {
            "label": [labels[i] for i in probs.argmax(axis=1)],
            **{f"p_{name}": probs[:, j].round(6) for j, name in enumerate(labels)},
        }
    )


def _write(table, output: str) -> None:
    suffix = Path(output).suffix.lower()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".jsonl", ".json"):
        table.to_json(output, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        table.to_parquet(output, index=False)
    else:
        table.to_csv(output, index=False, sep="\t" if suffix == ".tsv" else ",")
