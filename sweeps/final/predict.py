"""`zerotune predict`: run an exported model directory (or a sweep's latest refit) on new rows
(CSV/TSV/JSONL/Parquet), on CPU, no Ray.

Classification rows get the label and one probability per class; regression rows get the value.
Rows are batched by length (less padding) and written back in input order.
"""

from __future__ import annotations

import json
import time
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


def load_model(model_dir: str):
    """(model, tokenizer, task, max_length, paired) from an exported directory (full, merged or PEFT adapter);
    `paired`: the model was trained on sentence pairs (data.text_pair_column)."""
    from transformers import AutoTokenizer

    from trainer.export import load_exported

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
    meta = json.loads((path / "zerotune.json").read_text()) if (path / "zerotune.json").is_file() else {}
    task = meta.get("task")
    if task is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        task = "regression" if config.problem_type == "regression" or config.num_labels == 1 else "classification"
    if task == "causal-lm":
        raise ConfigError(
            [
                (
                    "MODEL_DIR",
                    "zerotune predict runs classification and regression models",
                    "use the causal LM with transformers' generate()",
                )
            ]
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    model, _ = load_exported(path, task=task)
    config = model.config
    max_length = int(
        meta.get("max_length") or min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", 512))
    )
    return model, tokenizer, task, max_length, bool(meta.get("paired"))


def predict_texts(
    model, tokenizer, texts: list[str], *, task: str, max_length: int, batch_size: int = 32, pairs=None
) -> np.ndarray:
    """Logits (classification) or values (regression), in input order. `pairs`: the second texts, tokenized with
    `texts` as training did (trainer.data.tokenize), segment ids included."""
    import torch

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
            )
            logits = model(**enc).logits.float().numpy()
            for i, row in zip(rows, logits, strict=True):
                out[i] = row
    values = np.stack(out) if out else np.zeros((0, model.config.num_labels), dtype=np.float32)
    return values.reshape(-1) if task == "regression" else values


def predict(
    model_dir: str,
    *,
    input_path: str,
    text_column: str = "text",
    text_pair_column: str | None = None,
    output: str | None = None,
    batch_size: int = 32,
) -> dict:
    """Predictions for every row of `input_path`; writes `output` (CSV/TSV/JSONL/Parquet by extension) when given.
    A model trained on sentence pairs needs `text_pair_column`, and only such a model takes one."""
    import pandas as pd
    import torch

    from trainer.storage import local_copy

    if output and Path(output).suffix.lower() not in WRITERS:
        raise ConfigError(
            [("--output", f"cannot tell the format of {output}", f"use a file ending in {', '.join(WRITERS)}")]
        )
    df, texts, pairs = read_rows(input_path, text_column=text_column, text_pair_column=text_pair_column)
    model_dir = model_directory(model_dir)
    with local_copy(model_dir, field="MODEL_DIR") as local:  # a model on object storage: loaded from a copy
        model, tokenizer, task, max_length, paired = load_model(local)
    if paired != (pairs is not None):
        # Single texts into a pairs model (or the reverse) run, and score as noise: refuse it.
        trained = "sentence pairs (text + text_pair)" if paired else "single texts"
        fix = "pass --text-pair-column COLUMN" if paired else "drop --text-pair-column"
        raise ConfigError([("--text-pair-column", f"{model_dir} was trained on {trained}", fix)])
    started = time.perf_counter()
    values = predict_texts(
        model, tokenizer, texts, task=task, max_length=max_length, batch_size=batch_size, pairs=pairs
    )
    seconds = time.perf_counter() - started
    if task == "regression":
        preds = pd.DataFrame({"value": values.astype(float)})
    else:
        labels = [model.config.id2label[i] for i in range(values.shape[1])]
        z = values - values.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        preds = pd.DataFrame(
            {
                "label": [labels[i] for i in probs.argmax(axis=1)],
                **{f"p_{name}": probs[:, j].round(6) for j, name in enumerate(labels)},
            }
        )
    keep = [c for c in dict.fromkeys(("id", text_column, text_pair_column)) if c and c in df.columns]
    table = pd.concat([df[keep].reset_index(drop=True), preds], axis=1)
    if output:
        _write(table, output)
    return {
        "model": str(model_dir),
        "task": task,
        "input": str(input_path),
        "output": output,
        "rows": len(table),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(table) / seconds, 1) if seconds > 0 else None,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "table": table,
    }


def _write(table, output: str) -> None:
    suffix = Path(output).suffix.lower()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".jsonl", ".json"):
        table.to_json(output, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        table.to_parquet(output, index=False)
    else:
        table.to_csv(output, index=False, sep="\t" if suffix == ".tsv" else ",")
