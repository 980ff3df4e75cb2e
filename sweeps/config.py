"""The sweep config tree: one YAML file, loaded into frozen typed groups.

`load_config` reports every problem at once (field, message, fix), offers a
did-you-mean for unknown keys and never executes YAML tags.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from sweeps.configfile import merge, parse_overrides, read_yaml
from sweeps.lease import HEARTBEAT_S
from sweeps.search.points import check_initial_points, typed_points

# The `search.space` group is built from the one table of search dimensions (re-exported here).
from sweeps.search.settings import LIST, RANGE, FloatRange, IntRange, SpaceConfig, apply_problems
from sweeps.search.space import grid_points, trial_values
from sweeps.search.study import study_storage_problems
from sweeps.tracking.settings import TrackingConfig, tracking_problems
from trainer.config import (
    DataConfig,
    DeepSpeedConfig,
    Group,
    ModelConfig,
    ScalingConfig,
    Task,
    TrainConfig,
)
from trainer.metrics import DEFAULT_METRIC, Direction, direction, metric_names
from zerotune.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class SplitConfig(Group):
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="`zerotune train`: share of rows held out for validation"
    )


class FoldsConfig(Group):
    k: int = Field(3, ge=2, le=50, description="Number of cross-validation folds")
    strategy: Literal["auto", "stratified", "kfold", "group"] = Field(
        "auto", description="auto: stratified for classification, group when data.group_column is set, else kfold"
    )
    test_fraction: float = Field(
        0.0, ge=0, lt=0.9, description="Held-out test share cut off before the folds (0: none)"
    )


class SchedulerConfig(Group):
    type: Literal["none", "asha", "median"] = Field(
        "asha", description="Fold-level pruning: ASHA, median stopping, or none"
    )
    grace_folds: int = Field(1, ge=1, description="Folds every trial finishes before it can be pruned")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep the best 1/reduction_factor at each rung")


class SearchConfig(Group):
    num_trials: int = Field(8, ge=1, le=100000, description="Trials (configurations) to try")
    metric: str | None = Field(
        None, description="Objective; default f1_macro (classification), mse (regression), eval_loss (causal-lm)"
    )
    mode: Literal["max", "min"] | None = Field(None, description="max or min; default follows the metric")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials at once; default: what the cluster's free CPUs/GPUs fit"
    )
    space: SpaceConfig = Field(default_factory=SpaceConfig, description="Search space")
    initial_points: list[dict[str, Any]] | None = Field(
        None, description="Configurations to try first (e.g. a known-good learning rate), then the sampler takes over"
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig, description="Pruning")
    sampler: Literal["tpe", "random", "grid", "cmaes"] = Field(
        "tpe",
        description="How configurations are proposed: tpe (Optuna's TPE), random, grid (every combination once: "
        "ranges need a step, and the trial count is the grid's size) or cmaes (Optuna's CMA-ES for numeric ranges; "
        "choices are drawn at random)",
    )
    time_budget_s: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds after this run's first trial after which no new trial starts; running trials finish "
        "and are scored (not Tune's time_budget_s, which stops them). A resumed run starts a fresh budget",
    )
    study_storage: str | None = Field(
        None,
        description="The Optuna study's SQLAlchemy URL (postgresql://HOST/DB, no password: PGPASSWORD, ~/.pgpass); "
        "unset: study.db under the sweep (on object storage or a network volume: uploaded there after each trial)",
    )

    @field_validator("initial_points")
    @classmethod
    def _typed(cls, points, info: ValidationInfo):
        """Each value as its config field's type ("1e-3" -> 0.001, 16.0 -> 16), as Tune and the trial get it. Points
        with any problem stay as written: `cross_checks` names each one."""
        space = info.data.get("space")
        if points is None or space is None:
            return points
        typed, problems = typed_points(space, points)
        return points if problems else typed


class StorageConfig(Group):
    path: str = Field(
        "./results", description="Local directory or URI (file://, s3://, gs://) shared by the driver and all workers"
    )
    checkpoint_every_epoch: bool = Field(
        True, description="Save engine state each epoch so a restarted worker group resumes mid-fold"
    )
    # At least two heartbeats: a live run is never taken over for one late write.
    lease_timeout_s: float = Field(
        300.0,
        ge=2 * HEARTBEAT_S,
        description=(
            "Seconds without a heartbeat after which the run writing this sweep counts as dead and the next "
            "`sweep run` or `refit` of it takes over (a run whose process is gone from this host is taken over at once)"
        ),
    )


class FinalConfig(Group):
    refit: bool = Field(
        False, description="Train the best config on all non-test rows, score it on the test split, export it"
    )


class SweepConfig(Group):
    name: str = Field(
        "sweep", pattern=NAME_PATTERN, description="Sweep name: a directory under storage.path; re-running resumes it"
    )
    # numpy and sklearn take 32-bit seeds (random_state in [0, 2**32 - 1]).
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for folds, search and initialisation")
    task: Task = Field("classification", description="classification | regression | causal-lm")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model")
    data: DataConfig = Field(..., description="Data set")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Hyperparameters (fixed unless searched)")
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig, description="DeepSpeed")
    scaling: ScalingConfig = Field(default_factory=ScalingConfig, description="Ray Train workers per fit")
    split: SplitConfig = Field(default_factory=SplitConfig, description="`zerotune train` validation split")
    folds: FoldsConfig = Field(default_factory=FoldsConfig, description="Cross-validation")
    search: SearchConfig = Field(default_factory=SearchConfig, description="Search")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Where results go")
    final: FinalConfig = Field(default_factory=FinalConfig, description="After the search")
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment tracking (MLflow, TensorBoard, W&B), from the driver"
    )

    @model_validator(mode="after")
    def _grid_count(self):
        """A grid search runs each combination once: the trial count is the grid's size."""
        search = self.search
        if search.sampler != "grid":
            return self
        size = len(grid_points(self))  # ValueError names a continuous range
        if "num_trials" in search.model_fields_set and search.num_trials != size:
            raise ValueError(
                f"search.sampler grid enumerates {size} configurations, but search.num_trials is "
                f"{search.num_trials}: remove num_trials (the grid sets it) or set it to {size}"
            )
        if search.initial_points:
            raise ValueError("search.initial_points: a grid search tries every configuration already; remove them")
        object.__setattr__(search, "num_trials", size)  # frozen: set once, while validating
        return self

    @property
    def metric(self) -> str:
        return self.search.metric or DEFAULT_METRIC[self.task]

    @property
    def mode(self) -> Direction:
        return self.search.mode or direction(self.metric)


def _fields_at(loc: tuple) -> list[str]:
    """The field names valid at a location in the tree, for did-you-mean."""
    model: Any = SweepConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and hasattr(c, "model_fields")), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def problems_from(error: ValidationError) -> list[tuple[str, str, str | None]]:
    problems = []
    for item in error.errors():
        loc = tuple(str(p) for p in item["loc"] if p not in (RANGE, LIST))
        field = ".".join(loc) or "config"
        kind = item["type"]
        if kind == "extra_forbidden":
            known = _fields_at(loc)
            close = difflib.get_close_matches(loc[-1], known, n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"known keys here: {', '.join(known)}"
            problems.append((field, "unknown key", fix))
        elif kind == "missing":
            problems.append((field, "required but missing", "add it to the config"))
        elif kind == "literal_error":
            problems.append(
                (field, f"got {item.get('input')!r}; {item['msg'].lower()}", "use one of the listed values")
            )
        else:
            message = item["msg"].removeprefix("Value error, ")
            got = item.get("input")
            shown = f" (got {_short(got)})" if not isinstance(got, dict) and got is not None else ""
            problems.append(
                (field, f"{message}{shown}", "see `zerotune sweep validate --help` for the field's meaning")
            )
    return problems


def _short(value) -> str:
    """A bounded repr: a value may be a long list, and an error message must stay one line."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxstring, short.maxother = 2, 4, 60, 60
    return short.repr(value)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, raw: dict | None = None
) -> SweepConfig:
    """Load, merge `key=value` overrides, and validate: one ConfigError lists every problem."""
    tree = read_yaml(path) if path is not None else dict(raw or {})
    tree = merge(tree, parse_overrides(overrides or []))
    try:
        cfg = SweepConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc)) from None
    problems = cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _generation_problems(cfg: SweepConfig) -> list[tuple[str, str, str]]:
    """train.generate_eval generates from prompts: causal-lm rows whose loss mask leaves a prompt out."""
    from trainer.metrics import GENERATION

    if cfg.metric in GENERATION and not cfg.train.generate_eval:
        return [("search.metric", f"{cfg.metric} is computed by generation only", "set train.generate_eval: true")]
    instruction = cfg.data.prompt_column or cfg.data.format in ("chat", "alpaca")
    if cfg.train.generate_eval and (cfg.task != "causal-lm" or not instruction):
        return [
            (
                "train.generate_eval",
                "generation needs causal-lm instruction data, whose prompts it continues",
                "use task causal-lm with data.prompt_column + response_column (or a chat/alpaca data format), "
                "or turn generate_eval off",
            )
        ]
    return []


def cross_checks(cfg: SweepConfig) -> list[tuple[str, str, str]]:
    """Rules that span groups, each naming the field to change."""
    problems = []
    if cfg.metric not in metric_names(cfg.task):
        allowed = ", ".join(metric_names(cfg.task))
        problems.append(("search.metric", f"unknown metric {cfg.metric!r} for {cfg.task}", f"use one of: {allowed}"))
    if cfg.task == "causal-lm" and bool(cfg.data.prompt_column) != bool(cfg.data.response_column):
        problems.append(
            (
                "data.response_column",
                "prompt_column and response_column go together",
                "set both, or neither for plain text",
            )
        )
    problems += _generation_problems(cfg)
    if cfg.deepspeed.precision in {"fp16", "bf16"} and not cfg.scaling.use_gpu:
        problems.append(
            (
                "deepspeed.precision",
                f"{cfg.deepspeed.precision} is not supported on CPU",
                "use precision: auto (fp32 on CPU) or set scaling.use_gpu: true",
            )
        )
    if cfg.final.refit and cfg.folds.test_fraction == 0:
        problems.append(
            (
                "folds.test_fraction",
                "final.refit scores the refit on a held-out test split, and there is none",
                "set folds.test_fraction, e.g. 0.2",
            )
        )
    problems += check_initial_points(cfg.search.space, cfg.search.initial_points)
    problems += apply_problems(cfg)
    problems += _column_clashes(cfg)
    optimizers = trial_values(cfg, "optimizer")
    if "sgd" in optimizers.values and cfg.deepspeed.offload_optimizer:
        # ZeRO-Offload steps the optimizer on the CPU with DeepSpeed's own Adam; it has no SGD.
        problems.append(
            (
                optimizers.field,
                "sgd cannot run with deepspeed.offload_optimizer (DeepSpeed's CPU optimizer is Adam)",
                "use optimizer adamw with optimizer offload, or turn offload_optimizer off for sgd",
            )
        )
    holdout = trial_values(cfg, "train.early_stopping_holdout")
    if any(holdout.values) and not any(trial_values(cfg, "train.early_stopping_patience").values):
        problems.append(
            (
                holdout.field,
                "a holdout for early stopping, but no trial stops early (train.early_stopping_patience is unset)",
                "set train.early_stopping_patience, or remove early_stopping_holdout",
            )
        )
    scheduler = cfg.search.scheduler
    if scheduler.type != "none" and scheduler.grace_folds > cfg.folds.k:
        problems.append(
            (
                "search.scheduler.grace_folds",
                f"{scheduler.grace_folds} grace folds, but a trial has only folds.k={cfg.folds.k}",
                f"use grace_folds <= {cfg.folds.k}, or scheduler type: none",
            )
        )
    for field, uri in (("storage.path", cfg.storage.path), ("data.path", cfg.data.path)):
        if _has_credentials(uri):  # the message must not repeat them: it lands in logs and job entrypoints
            problems.append((field, "the URI carries credentials (user:secret@)", CREDENTIALS_FIX))
    problems += study_storage_problems(cfg.search.study_storage)
    problems += tracking_problems(cfg.tracking)
    if cfg.deepspeed.offload_params and set(trial_values(cfg, "zero_stage").values) != {3}:
        problems.append(
            (
                "deepspeed.offload_params",
                "parameter offload needs ZeRO stage 3 in every trial",
                "search only zero_stage [3] or turn offload_params off",
            )
        )
    return problems


def _column_clashes(cfg: SweepConfig) -> list[tuple[str, str, str]]:
    """One column, one role: a label that is also the text (or the group) would leak into what the model sees
    (or put each class in one fold). A group that is a text column is fine: duplicate texts stay in one fold."""
    problems, seen = [], {}
    for field, column in cfg.data.columns(cfg.task).items():
        other = seen.setdefault(column, field)
        texts = {"data.text_column", "data.prompt_column", "data.text_pair_column"}
        if other != field and not (field == "data.group_column" and other in texts):
            problems.append((field, f"column {column!r} is also {other}", f"give {field} a column of its own"))
    return problems


CREDENTIALS_FIX = (
    "remove them from the URI; give them through the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
    "GOOGLE_APPLICATION_CREDENTIALS) or the SDK's own credential chain"
)


def _has_credentials(uri: str) -> bool:
    from urllib.parse import urlsplit

    if "://" not in uri:
        return False
    try:
        parts = urlsplit(uri)
        return bool(parts.username or parts.password)
    except ValueError:
        return "@" in uri.split("://", 1)[1].split("/", 1)[0]


def field_docs(model: type = SweepConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) of every field: the `--help` text."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        nested = next(
            (
                c
                for c in (annotation, *getattr(annotation, "__args__", ()))
                if isinstance(c, type) and hasattr(c, "model_fields")
            ),
            None,
        )
        if nested is not None and nested not in (FloatRange, IntRange):
            rows.extend(field_docs(nested, key + "."))
            continue
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=False))
        rows.append((key, default, field.description or ""))
    return rows


def config_help() -> str:
    lines = ["config keys (set in YAML or as key=value overrides):"]
    for key, default, doc in field_docs():
        lines.append(f"  {key} [{default}]\n      {doc}")
    return "\n".join(lines)
