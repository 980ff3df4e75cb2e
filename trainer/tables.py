"""Read a data set (data.path, data.format) into a table: CSV/TSV, JSON lines or one JSON array, Parquet, a saved
`datasets` directory, chatterbot-corpus YAML, a hub name; object storage through a local copy. What the rows mean
is trainer.data's."""

from __future__ import annotations

import re
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
    if fmt == "hub" or (fmt in ("auto", "chat", "alpaca") and is_hub_name(cfg.path)):
        return _checked(_read_hub(cfg), location)
    _refuse_hub_only(cfg)
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
                "point data.path at a CSV, TSV, JSONL or Parquet file, a data directory or a hub data set name",
            )
        if fmt is None:
            raise problem(
                field_,
                f"cannot tell the format of {location}",
                "set data.format (csv, tsv, jsonl, parquet, datasets, chatterbot)",
            )
    if not path.exists():
        raise problem(field_, f"{location} does not exist", "point data.path at an existing file or directory")
    if cfg.split is not None and fmt != "datasets":
        raise problem("data.split", f"{location} is a {fmt} file: it has no splits", "remove data.split")
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
        else:  # datasets
            import datasets

            df = _one_split(datasets.load_from_disk(str(path)), cfg.split).to_pandas()
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
    return _checked(df, location)


def _checked(df: pd.DataFrame, location: str) -> pd.DataFrame:
    df.columns = [str(c) for c in df.columns]
    if df.empty:
        raise problem("data.path", f"{location} has no rows", "give a data set with rows")
    return df


# A hub repository id: a name, or owner/name (letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 chars).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
# What names a local data file: a missing "train.csv" is a missing file, not a hub data set called that.
_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".arrow", ".yml", ".yaml", ".txt")


def is_hub_name(path: str) -> bool:
    """Whether data.path names a Hugging Face hub data set: not an existing local path, no URI scheme (nor pkg:),
    not written as a local path (./, ~, /) or a data file name, and shaped like a hub id (name or owner/name)."""
    if "://" in path or path.startswith(("pkg:", ".", "~", "/")) or Path(path).exists():
        return False
    if "--" in path or ".." in path or path.lower().endswith(_FILE_SUFFIXES):
        return False
    return bool(_HUB_ID.match(path))


def _refuse_hub_only(cfg: DataConfig) -> None:
    """data.subset and data.revision mean something for a hub data set only: set elsewhere, they would be ignored."""
    for name in ("subset", "revision"):
        if getattr(cfg, name) is not None:
            raise problem(
                f"data.{name}",
                f"{cfg.path} is not a Hugging Face hub data set name, so it has no {name}",
                f"remove data.{name}, or set data.path to a hub name such as 'stanfordnlp/sst2'",
            )


def _read_hub(cfg: DataConfig) -> pd.DataFrame:
    """One split of a hub data set through datasets.load_dataset: from the hub, or its local cache (HF_DATASETS_CACHE)
    when offline. Every split is loaded and one picked here, so a wrong data.split names the ones there are."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    name = cfg.path
    try:
        loaded = datasets.load_dataset(name, cfg.subset, revision=cfg.revision)
    except ConnectionError:  # offline (HF_HUB_OFFLINE=1) or no network, and not in the local cache
        raise problem(
            "data.path",
            f"hub data set {name!r}"
            + (f" (subset {cfg.subset!r})" if cfg.subset else "")
            + " is not in the local datasets cache and the Hugging Face hub cannot be reached"
            + (" (HF_HUB_OFFLINE=1)" if _offline() else ""),
            "go online (unset HF_HUB_OFFLINE) so it downloads, or download it first where there is network "
            f'(python -c "import datasets; datasets.load_dataset({_arguments(cfg)})" fills the cache this machine '
            "reads: HF_DATASETS_CACHE), or point data.path at a local file",
        ) from None
    except DatasetNotFoundError as exc:
        raise problem(
            "data.path",
            f"no hub data set {name!r} that this machine may read: {exc}",
            "check the name on huggingface.co/datasets (a gated or private one needs `hf auth login`), "
            "or point data.path at a local file",
        ) from None
    except ValueError as exc:  # a subset the data set (or its cache) does not have, or one it needs
        text = " ".join(str(exc).split())
        if "config" not in text.lower():
            raise
        raise problem(
            "data.subset", f"hub data set {name!r}: {text}", "set data.subset to one of the data set's subsets"
        ) from None
    return _one_split(loaded, cfg.split).to_pandas()


def _arguments(cfg: DataConfig) -> str:
    """The datasets.load_dataset arguments that read what the config names (for a command to copy)."""
    named = [f"revision={cfg.revision!r}"] if cfg.revision else []
    return ", ".join([repr(cfg.path), *([repr(cfg.subset)] if cfg.subset else []), *named])


def _one_split(loaded, split: str | None):
    """`split` of a DatasetDict (default: train, else the only or first one); a single Dataset as it is."""
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            raise problem("data.split", "the data set holds a single split", "remove data.split")
        return loaded
    if split is None:
        return loaded["train"] if "train" in loaded else next(iter(loaded.values()))
    if split not in loaded:
        raise problem("data.split", f"no split {split!r}; the data set has {sorted(loaded)}", "pick one of those")
    return loaded[split]


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


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
