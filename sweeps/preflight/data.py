"""Driver-side preparation, once per sweep: read the data, check it against the config, cut the folds, tokenize."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np

from sweeps.config import SweepConfig
from sweeps.search.folds import Folds, make_folds, pick_strategy
from sweeps.search.space import searched, trial_values
from trainer.data import Encoded, Examples, drop_unanswered, to_examples, tokenize
from trainer.spec import FitSpec
from trainer.tables import read_table
from zerotune.errors import ConfigError

log = logging.getLogger(__name__)


def load_examples(cfg: SweepConfig, *, min_per_class: int, min_rows: int = 2, tokenizer=None) -> Examples:
    """The rows every fit of this config trains on; causal-lm rows whose answer model.max_length cuts off entirely
    are dropped here, before any split (tokenizing them), as the other dropped rows are. `tokenizer`: a function that
    returns the model's tokenizer (default: loads it)."""
    df = read_table(cfg.data)
    _check_enough(len(df), min_rows)
    examples = to_examples(df, cfg.data, cfg.task, seed=cfg.seed, min_per_class=min_per_class)
    if cfg.task == "causal-lm" and examples.prompted:
        tokenizer = tokenizer or _tokenizer_once(cfg)
        examples = drop_unanswered(examples, tokenizer(), cfg.model.max_length, cfg.data.chat_template)
        _check_enough(len(examples), min_rows)
    for reason, count in examples.dropped.items():
        log.warning("dropped %d rows: %s", count, reason)
    return examples


def _tokenizer_once(cfg: SweepConfig):
    """A function that loads the model's tokenizer on its first call only (a GGUF file's takes seconds)."""
    import functools

    from trainer.model import load_tokenizer

    return functools.cache(lambda: load_tokenizer(cfg.model))


def _check_enough(n_rows: int, min_rows: int) -> None:
    if n_rows < min_rows:
        raise ConfigError(
            [
                (
                    "folds.k",
                    f"{min_rows} folds need at least {min_rows} rows; the data has {n_rows}",
                    f"use folds.k <= {n_rows} or more data",
                )
            ]
        )


def sweep_examples(cfg: SweepConfig, *, tokenizer=None) -> Examples:
    """The rows a sweep (and its refit) runs on: one loader, so `rare_classes: drop` drops the same classes."""
    strategy = pick_strategy(cfg.folds.strategy, cfg.task, cfg.data.group_column is not None)
    need = cfg.folds.k + (1 if cfg.folds.test_fraction else 0) if strategy == "stratified" else 2
    return load_examples(cfg, min_per_class=need, min_rows=cfg.folds.k, tokenizer=tokenizer)


def prepare_sweep(cfg: SweepConfig) -> tuple[Examples, Folds]:
    """Data and folds for a sweep: checks everything that needs no cluster."""
    strategy = pick_strategy(cfg.folds.strategy, cfg.task, cfg.data.group_column is not None)
    check_packing(cfg)
    if cfg.data.format in ("chat", "alpaca"):
        check_chat_template(cfg)  # before the rows are rendered with it
    tokenizer = _tokenizer_once(cfg)
    examples = sweep_examples(cfg, tokenizer=tokenizer)
    check_test_split(cfg, examples, strategy)
    folds = make_folds(
        examples,
        k=cfg.folds.k,
        strategy=cfg.folds.strategy,
        task=cfg.task,
        test_fraction=cfg.folds.test_fraction,
        seed=cfg.seed,
    )
    check_packed_folds(cfg, examples, folds, tokenizer)
    if not searched(cfg.search.space):
        raise ConfigError(
            [
                (
                    "search.space",
                    "nothing to search",
                    "add at least one of learning_rate, batch_size, epochs, ... (see examples/)",
                )
            ]
        )
    return examples, folds


def check_test_split(cfg: SweepConfig, examples: Examples, strategy: str) -> None:
    """The held-out test split must leave sklearn something to split (it raises otherwise): under stratification
    every class on each side of it, with groups one group in it and k outside it (one per fold)."""
    fraction, k = cfg.folds.test_fraction, cfg.folds.k
    if not fraction or (strategy == "group" and examples.groups is None):
        return  # no test split, or no groups for group folds (make_folds names that)
    unit, n = ("groups", len(np.unique(examples.groups))) if strategy == "group" else ("rows", len(examples))
    # sklearn's sizes: ceil for the test side, floor for the rest
    n_test, n_train = math.ceil(fraction * n), math.floor((1 - fraction) * n)
    classes = len(examples.label_names) if strategy == "stratified" and examples.label_names else 1
    need_train = k if strategy == "group" else classes
    if n_test < classes or n_train < need_train:
        low, high = classes / n, 1 - need_train / n
        where = f"a test_fraction of {fraction:g} of {n} {unit} leaves {n_test} for the test split and {n_train} "
        if strategy == "stratified":
            why = f"for the folds; stratification needs each of the {classes} classes on both sides"
        else:
            why = f"for the folds, which need {need_train}"
        fix = f"use folds.test_fraction between {low:.3g} and {high:.3g}" if low <= high else "add rows"
        raise ConfigError([("folds.test_fraction", where + why, fix)])


def fingerprint(examples: Examples) -> str:
    """The data a sweep ran on: a resumed sweep or a refit must see the same rows."""
    h = hashlib.sha256()
    for text in examples.texts:
        h.update(text.encode("utf-8", "replace"))
        h.update(b"\0")
    if examples.labels is not None:
        h.update(np.asarray(examples.labels).tobytes())
    # The other columns a fit or a fold reads, each only when present (so a sweep without them keeps its
    # fingerprint): second texts, causal-LM responses, and the groups that decide the folds.
    for name, column in (("pairs", examples.pairs), ("responses", examples.responses), ("groups", examples.groups)):
        if column is not None:
            h.update(f"\1{name}\0".encode())
            for value in column:
                h.update(str(value).encode("utf-8", "replace") + b"\0")
    return h.hexdigest()[:16]


def encode(cfg: SweepConfig, examples: Examples) -> Encoded:
    from trainer.model import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    return tokenize(
        examples,
        tokenizer,
        cfg.task,
        cfg.model.max_length,
        chat_template=cfg.data.chat_template,
        packing=cfg.data.packing,
    )


def check_packing(cfg: SweepConfig) -> None:
    """data.packing concatenates causal-LM rows; a classifier scores each row alone, and prompt tuning's virtual
    tokens would open each packed sequence rather than each row."""
    if not cfg.data.packing:
        return
    if cfg.task != "causal-lm":
        raise ConfigError(
            [
                (
                    "data.packing",
                    f"packing is for causal-lm; {cfg.task} rows are scored one by one",
                    "set data.packing: false",
                )
            ]
        )
    methods = trial_values(cfg, "method")
    if "prompt-tuning" in methods.values:
        raise ConfigError(
            [
                (
                    methods.field,
                    "prompt tuning's virtual tokens cannot open every packed row",
                    "set data.packing: false, or use another fine-tuning method",
                )
            ]
        )


def check_packed_folds(cfg: SweepConfig, examples: Examples, folds: Folds, tokenizer) -> None:
    """data.packing: each rank trains on an equal share of a fold's packed sequences, so a fold with fewer sequences
    than workers would train nothing on every rank. A fold holding more than (workers - 1) sequences' worth of
    tokens packs into at least `workers`: rows are tokenized a chunk at a time until every fold does (for a large
    data set, its first chunks), and packed only when the data runs out first. `tokenizer`: returns the model's."""
    if not cfg.data.packing:
        return
    from trainer.packing import pack
    from trainer.progress import fit_rows

    workers, capacity = cfg.scaling.num_workers, cfg.model.max_length
    spec = fit_spec(cfg)
    trained = [fit_rows(spec, train, fold)[0] for fold, (train, _) in enumerate(folds.folds)]
    rows = np.unique(np.concatenate(trained))
    lengths = np.zeros(len(examples), dtype=np.int64)
    for at in range(0, len(rows), _PACK_CHUNK):
        chunk = rows[at : at + _PACK_CHUNK]
        encoded = tokenize(
            examples.take(chunk, dropped={}), tokenizer(), cfg.task, capacity, chat_template=cfg.data.chat_template
        )
        lengths[chunk] = [len(ids) for ids in encoded.input_ids]
        if all(lengths[t].sum() > (workers - 1) * capacity for t in trained):
            return
    problems = []
    for fold, t in enumerate(trained):
        sequences = len(pack(lengths[t], capacity))
        if sequences < workers:
            problems.append(
                (
                    "data.packing",
                    f"fold {fold}'s {len(t)} training rows pack into {sequences} sequences of up to {capacity} "
                    f"tokens, fewer than the {workers} workers (scaling.num_workers): every rank would train on none",
                    "use a smaller model.max_length, fewer scaling.num_workers, more rows, or data.packing: false",
                )
            )
    if problems:
        raise ConfigError(problems)


_PACK_CHUNK = 512  # rows tokenized at a time by check_packed_folds


def check_chat_template(cfg: SweepConfig) -> None:
    """Chat and alpaca rows need a chat template: data.chat_template's (its Jinja must parse), or the model's own
    (read from the tokenizer, or from a GGUF file's metadata without loading the file)."""
    field, fix = "data.chat_template", "set data.chat_template: chatml (or a Jinja chat template)"
    configured = cfg.data.chat_template
    if configured is not None:
        import jinja2

        from trainer.chat import TEMPLATES

        try:
            jinja2.Environment().parse(TEMPLATES.get(configured, configured))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                [
                    (
                        field,
                        f"the template does not parse: {exc.message} (line {exc.lineno})",
                        "fix the Jinja template, or use chatml",
                    )
                ]
            ) from None
        return
    from trainer.model import load_tokenizer, locate

    where, gguf = locate(cfg.model)
    if gguf:
        own = gguf_string(str(Path(where) / gguf), "tokenizer.chat_template")
    else:
        own = getattr(load_tokenizer(cfg.model), "chat_template", None)
    if not own:
        raise ConfigError([(field, f"{cfg.data.format} rows need a chat template and {cfg.model.path} has none", fix)])


# GGUF metadata value types with a fixed size in bytes (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_string(path: str, key: str) -> str | None:
    """A string from a GGUF file's metadata, skipping past the rest (the vocabulary's arrays included) without
    parsing it: gguf's reader and transformers parse every field, seconds for a small model."""
    import struct

    with open(path, "rb") as f:

        def number(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def skip(kind: int) -> None:
            if kind == _GGUF_STRING:
                f.seek(number("<Q"), 1)
            elif kind == _GGUF_ARRAY:
                elem, count = number("<I"), number("<Q")
                if elem in _GGUF_SIZES:
                    f.seek(_GGUF_SIZES[elem] * count, 1)
                else:
                    for _ in range(count):
                        skip(elem)
            else:
                f.seek(_GGUF_SIZES[kind], 1)

        if f.read(4) != b"GGUF" or number("<I") < 2:
            return None
        number("<Q")  # tensor count
        for _ in range(number("<Q")):
            name = f.read(number("<Q")).decode("utf-8", "replace")
            kind = number("<I")
            if name == key and kind == _GGUF_STRING:
                return f.read(number("<Q")).decode("utf-8")
            skip(kind)
    return None


def fit_spec(
    cfg: SweepConfig, *, train=None, deepspeed=None, model=None, records_uri=None, export_uri=None, **typed
) -> FitSpec:
    """The FitSpec of one fit of this sweep; `train`/`deepspeed`/`model` replace the config's groups
    (a trial's values)."""
    from trainer.preprocessing import recipe

    return FitSpec(
        task=cfg.task,
        model=model or cfg.model,
        train=train or cfg.train,
        deepspeed=deepspeed or cfg.deepspeed,
        use_gpu=cfg.scaling.use_gpu,
        seed=cfg.seed,
        metric=cfg.metric,
        mode=cfg.mode,
        checkpoint_every_epoch=cfg.storage.checkpoint_every_epoch,
        records_uri=records_uri,
        export_uri=export_uri,
        preprocessing=recipe(cfg.data, model or cfg.model, cfg.task),
        **typed,
    )
