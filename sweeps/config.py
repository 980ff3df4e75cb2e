"""The sweep config tree: one YAML file, loaded into frozen typed groups.

`load_config` reports every problem at once (field, message, fix), offers a
did-you-mean for unknown keys and never executes YAML tags.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

# The `search.space` group is built from the one table of search dimensions (re-exported here).
from sweeps.search.space import FloatRange, IntRange, SpaceConfig, check_initial_points, trial_values
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


class StorageConfig(Group):
    path: str = Field(
        "./results", description="Local directory or URI (file://, s3://, gs://) shared by the driver and all workers"
    )
    checkpoint_every_epoch: bool = Field(
        True, description="Save engine state each epoch so a restarted worker group resumes mid-fold"
    )


class FinalConfig(Group):
    refit: bool = Field(
        False, description="Train the best config on all non-test rows, score it on the test split, export it"
    )


class SweepConfig(Group):
    name: str = Field(
        "sweep", pattern=NAME_PATTERN, description="Sweep name: a directory under storage.path; re-running resumes it"
    )
    seed: int = Field(0, ge=0, description="Seed for folds, search and initialisation")
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

    @property
    def metric(self) -> str:
        return self.search.metric or DEFAULT_METRIC[self.task]

    @property
    def mode(self) -> Direction:
        return self.search.mode or direction(self.metric)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=value` pairs into a nested dict; values are parsed as YAML scalars."""
    import yaml

    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            raise ConfigError([(item, "an override must look like group.field=value", "e.g. train.epochs=2")])
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([(key, "conflicting overrides", "set a group or its fields, not both")])
        try:
            node[leaf] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            node[leaf] = raw
    return tree


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError([("config", f"{path} does not exist", "pass the path of a sweep YAML file")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError([("config", f"{path} is not UTF-8 text", "save the config as UTF-8 YAML")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([("config", f"{path}: {problem}{where}", "fix the YAML syntax there")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [
                (
                    "config",
                    f"{path} holds a {type(raw).__name__}, not a mapping",
                    "write `key: value` groups at the top level",
                )
            ]
        )
    return raw


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
        loc = tuple(str(p) for p in item["loc"])
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
            shown = f" (got {got!r})" if not isinstance(got, dict) and got is not None else ""
            problems.append(
                (field, f"{message}{shown}", "see `zerotune sweep validate --help` for the field's meaning")
            )
    return problems


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, raw: dict | None = None
) -> SweepConfig:
    """Load, merge `key=value` overrides, and validate: one ConfigError lists every problem."""
    tree = read_yaml(path) if path is not None else dict(raw or {})
    tree = _merge(tree, parse_overrides(overrides or []))
    try:
        cfg = SweepConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc)) from None
    problems = cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


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
    for field, uri in (("storage.path", cfg.storage.path), ("data.path", cfg.data.path)):
        if _has_credentials(uri):  # the message must not repeat them: it lands in logs and job entrypoints
            problems.append((field, "the URI carries credentials (user:secret@)", CREDENTIALS_FIX))
    if cfg.deepspeed.offload_params and set(trial_values(cfg, "zero_stage").values) != {3}:
        problems.append(
            (
                "deepspeed.offload_params",
                "parameter offload needs ZeRO stage 3 in every trial",
                "search only zero_stage [3] or turn offload_params off",
            )
        )
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
