"""Read a data set (data.path, data.format) into a table: CSV/TSV, JSON lines or one JSON array, Parquet, a saved
`datasets` directory, chatterbot-corpus YAML, a hub name; object storage through a local copy. What the rows mean
is trainer.data's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trainer.chat import read_chatterbot
from trainer.config import DataConfig
from trainer.data import problem, resolve_path
from zerotune.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


def read_table(cfg: DataConfig) -> pd.DataFrame:
    import pandas as pd

    if "://" in cfg.path:  # object storage (s3://, gs://): the readers below take a local copy, named as the URI
        from trainer.storage import local_copy

        with local_copy(cfg.path, field="data.path") as local:
            try:
                return read_table(cfg.model_copy(update={"path": local}))
            except DataError as exc:
                raise DataError([(f, why.replace(local, cfg.path), fix) for f, why, fix in exc.problems]) from None
    field_ = "data.path"
    location = resolve_path(cfg.path)
    path = Path(location)
    fmt = cfg.format
    if fmt in ("auto", "chat", "alpaca"):  # chat and alpaca say what the rows hold; the file says how it is stored
        suffix = path.suffix.lower()
        fmt = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(suffix)
        if fmt == "jsonl" and suffix == ".json" and _opens_with(path, "["):  # one JSON array (alpaca_data.json)
            fmt = "json"
        if fmt is None and path.is_dir():
            fmt = "chatterbot" if any(path.glob("*.yml")) and cfg.format == "auto" else "datasets"
        if fmt is None and not path.exists():
            raise problem(
                field_,
                f"{location} does not exist",
                "point data.path at a CSV, TSV, JSONL or Parquet file or a data directory",
            )
        if fmt is None:
            raise problem(
                field_,
                f"cannot tell the format of {location}",
                "set data.format (csv, tsv, jsonl, parquet, datasets, chatterbot)",
            )
    if fmt != "hub" and not path.exists():
        raise problem(field_, f"{location} does not exist", "point data.path at an existing file or directory")
    try:
        if fmt in ("csv", "tsv"):
            df = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", encoding="utf-8", **_as_written(cfg))
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, encoding="utf-8")
        elif fmt == "json":
            df = pd.read_json(path, orient="records", encoding="utf-8")
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        elif fmt == "chatterbot":
            df = read_chatterbot(path)
        elif fmt == "datasets":
            import datasets

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
            df = ds.to_pandas()
        else:  # hub: needs network access
            import datasets

            df = datasets.load_dataset(cfg.path, split="train").to_pandas()
    except UnicodeDecodeError:
        raise problem(field_, f"{location} is not UTF-8", "re-encode the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise problem(field_, f"{location} is empty", "give a file with a header row and data rows") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise problem(
            field_, f"cannot parse {location} as {fmt}: {str(exc).splitlines()[0]}", "check data.format and the file"
        ) from None
    header = _text_header(path, fmt)
    if len(header) != len(set(header)):
        dupes = sorted({c for c in header if header.count(c) > 1})
        raise problem(field_, f"duplicate column names {dupes}", "rename the columns so each is unique")
    df.columns = [str(c) for c in df.columns]
    if df.empty:
        raise problem(field_, f"{location} has no rows", "give a data set with rows")
    return df


def _opens_with(path: Path, char: str) -> bool:
    """Whether the file's first character that is not whitespace is `char` (read a block at a time)."""
    if not path.is_file():
        return False
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        while block := f.read(4096):
            text = block.lstrip()
            if text:
                return text[0] == char
    return False


def _as_written(cfg: DataConfig) -> dict:
    """read_csv options that keep the configured columns as the strings the file holds.

    pandas reads "NA", "null", "nan", "None" (and more) as missing by default: a text "NA" or a class named "null"
    would silently become an empty text or a missing label. Only an empty cell is missing here; and an integer
    label column with an empty cell stays "1", not "1.0".
    """
    named = (cfg.text_column, cfg.text_pair_column, cfg.label_column, cfg.prompt_column, cfg.response_column)
    return {
        "dtype": {c: str for c in (*named, cfg.group_column) if c},
        "keep_default_na": False,
        "na_values": [""],
    }


def _text_header(path: Path, fmt: str) -> list[str]:
    """The raw header of a CSV/TSV (pandas silently renames duplicate columns to `x.1`)."""
    import csv

    if fmt not in ("csv", "tsv"):
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","), [])
