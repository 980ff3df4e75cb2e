"""Driver-side preparation, once per sweep: read data, check it against the config, tokenize."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trainer.data import Encoded, Examples, read_table, to_examples, tokenize
from trainer.spec import FitSpec

from sweeps.config import SweepConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    examples: Examples
    encoded: Encoded


def load_examples(cfg: SweepConfig, *, min_per_class: int, min_rows: int = 2) -> Examples:
    from zerotune.errors import ConfigError

    df = read_table(cfg.data)
    if len(df) < min_rows:
        raise ConfigError([("folds.k", f"{min_rows} folds need at least {min_rows} rows; the data has {len(df)}", f"use folds.k <= {len(df)} or more data")])
    examples = to_examples(df, cfg.data, cfg.task, seed=cfg.seed, min_per_class=min_per_class)
    for reason, count in examples.dropped.items():
        log.warning("dropped %d rows: %s", count, reason)
    return examples


def encode(cfg: SweepConfig, examples: Examples) -> Encoded:
    from trainer.model import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    return tokenize(examples, tokenizer, cfg.task, cfg.model.max_length)


def fit_spec(cfg: SweepConfig, *, train=None, deepspeed=None, model=None, records_uri=None, export_uri=None) -> FitSpec:
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
    )
