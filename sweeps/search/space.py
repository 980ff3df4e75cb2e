"""The search space: ONE table of dimensions, keyed by the dotted config path each one sets.

A `Dimension` knows its `search.space` key, the config field it sets (and so that field's bounds, read from
the field's own validators), its kind (float range, int range or choice), its Tune domain, its Optuna
distribution and its condition (when a trial uses it, e.g. a LoRA rank only in lora trials). Everything that
reads the space reads `DIMENSIONS`: the `search.space` YAML group (`SpaceConfig` is built from it), Tune's
param space, a trial's config, importances, pre-flight and initial points (sweeps.search.points). Searching another
config field is one more row here.

Conditions: Tune's Optuna searcher samples a flat space, so every searched dimension gets a value in every
trial (a full fine-tuning trial still draws a `lora_rank`). The condition decides whether that value is
used: `apply_params` applies only dimensions whose condition holds, importances leave the unused values out.
A condition reads the trial's effective value of a config path: the trial's sampled value when that path is
searched, else the config's fixed value.

This module imports `trainer.config` only; `sweeps.config` imports it (no cycle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, Field, ValidationError, create_model, model_validator

from sweeps.search.fields import GROUPS, adapter, base_type, bounds_text, field_info, is_int_field
from trainer.config import DeepSpeedConfig, Group, ModelConfig, TrainConfig

Kind = Literal["float", "int", "choice"]


class FloatRange(Group):
    low: float = Field(..., description="Lower bound")
    high: float = Field(..., description="Upper bound")
    log: bool = Field(False, description="Sample on a log scale")

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"empty range: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class IntRange(Group):
    low: int = Field(..., description="Lower bound (inclusive)")
    high: int = Field(..., description="Upper bound (inclusive)")

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low <= self.high:
            raise ValueError(f"empty range: low ({self.low}) must not exceed high ({self.high})")
        return self


@dataclass(frozen=True)
class When:
    """A dimension's condition: it applies when the trial's effective value at `path` is one of `values`."""

    path: str
    values: frozenset

    def __str__(self) -> str:
        if len(self.values) == 1:
            return f"{self.path} is {next(iter(self.values))}"
        return f"{self.path} in {sorted(self.values)}"


@dataclass(frozen=True)
class Dimension:
    key: str  # the `search.space` key
    path: str  # the dotted config path a sampled value sets
    kind: Kind
    description: str
    when: When | None = None

    # -- the config field it sets ---------------------------------------------------------------
    @property
    def field(self):
        """The pydantic FieldInfo of `path` (its annotation, default and validators)."""
        return field_info(self.path)

    def accepts(self, value) -> bool:
        """Whether the config field itself accepts `value` (its own type and bound validators)."""
        try:
            adapter(self.path).validate_python(value)
        except ValidationError:
            return False
        return True

    def typed(self, value):
        """`value` as the config field takes it (its own type, bounds and coercion: "1e-3" -> 0.001, 16.0 -> 16);
        ValueError when the field refuses it. A bool is no number here (True is not a batch size)."""
        if isinstance(value, bool) and base_type(self.field.annotation) is not bool:
            raise ValueError(f"{value!r} is a boolean, not a value of {self.path}")
        try:
            return adapter(self.path).validate_python(value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"]) from None

    def bounds(self) -> str:
        """What the field accepts, in words: '0 < value < 10', 'one of [0, 1, 2, 3]'."""
        return bounds_text(self.path)

    # -- its search.space setting ---------------------------------------------------------------
    def setting(self, space) -> FloatRange | IntRange | list | None:
        """Its value in a SpaceConfig (None: not searched)."""
        return getattr(space, self.key, None)

    def tune_domain(self, value):
        from ray import tune

        if self.kind == "float":
            return tune.loguniform(value.low, value.high) if value.log else tune.uniform(value.low, value.high)
        if self.kind == "int":
            return tune.randint(value.low, value.high + 1)  # randint's upper end is exclusive
        return tune.choice(list(value))

    def optuna_distribution(self, value):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(value.low, value.high, log=value.log)
        if self.kind == "int":
            return IntDistribution(value.low, value.high)
        return CategoricalDistribution(list(value))

    def values(self, value) -> list:
        """Every value a trial can draw (a float range: its two ends)."""
        if self.kind == "float":
            return [value.low, value.high]
        if self.kind == "int":
            return list(range(value.low, value.high + 1))
        return list(value)

    def contains(self, value, candidate) -> bool:
        """Whether `candidate` is a value this setting can draw (initial points)."""
        if isinstance(candidate, bool) and self.kind != "choice":
            return False
        if self.kind == "float":
            number = isinstance(candidate, (int, float)) and math.isfinite(candidate)
            return number and value.low <= candidate <= value.high
        if self.kind == "int":
            return isinstance(candidate, int) and value.low <= candidate <= value.high
        return any(_same(candidate, c) for c in value)

    def describe(self, value) -> str:
        if self.kind == "float":
            return f"[{value.low}, {value.high}]" + (" (log)" if value.log else "")
        if self.kind == "int":
            return f"{value.low}..{value.high}"
        return f"one of {list(value)}"

    def check(self, value):
        """The SpaceConfig field validator: every value the setting can draw must suit the config field."""
        if value is None:
            return value
        ends = [("low", value.low), ("high", value.high)] if self.kind != "choice" else [("choice", c) for c in value]
        bad = [f"{name} {v!r}" for name, v in ends if not self.accepts(v)]
        if bad:
            raise ValueError(f"{', '.join(bad)} outside what {self.path} accepts: {self.bounds()}")
        return value

    # -- a trial --------------------------------------------------------------------------------
    def applies(self, params: dict, cfg=None) -> bool:
        """Whether a trial with these params uses this dimension. `cfg` (a SweepConfig) gives the fixed value of
        an unsearched condition path; without it such a condition counts as holding."""
        if self.when is None:
            return True
        value = effective(self.when.path, params, cfg)
        return value is _UNKNOWN or any(_same(value, v) for v in self.when.values)

    def cast(self, value):
        """A sampled value as the config field's Python type (numpy scalars from samplers -> int/float/str)."""
        value = value.item() if hasattr(value, "item") else value
        if self.kind == "float":
            return float(value)
        if self.kind == "int" or (is_int_field(self.path) and isinstance(value, float) and value.is_integer()):
            return int(value)
        return value


def _dim(key, path, kind, description, *, when: tuple[str, set] | None = None) -> Dimension:
    return Dimension(key, path, kind, description, When(when[0], frozenset(when[1])) if when else None)


METHOD = "model.method"  # what the method-specific dimensions are conditioned on

DIMENSIONS: tuple[Dimension, ...] = (
    _dim("learning_rate", "train.learning_rate", "float", "Learning-rate range (use log: true)"),
    _dim("batch_size", "train.batch_size", "choice", "Per-device batch size choices"),
    _dim("epochs", "train.epochs", "int", "Epochs per fold range"),
    _dim("weight_decay", "train.weight_decay", "float", "Weight-decay range"),
    _dim("warmup_ratio", "train.warmup_ratio", "float", "Warmup share range"),
    _dim("dropout", "model.dropout", "float", "Model dropout range"),
    _dim("zero_stage", "deepspeed.zero_stage", "choice", "ZeRO stage choices"),
    _dim("optimizer", "train.optimizer", "choice", "Optimizer choices"),
    _dim("method", "model.method", "choice", "Fine-tuning method choices"),
    _dim("lora_rank", "model.lora.rank", "choice", "LoRA rank choices", when=(METHOD, {"lora"})),
    _dim("top_layers", "model.top_layers", "int", "Range of top blocks trained", when=(METHOD, {"partial"})),
    _dim("prompt_tokens", "model.prompt_tokens", "choice", "Prompt-token choices", when=(METHOD, {"prompt-tuning"})),
)
BY_KEY: dict[str, Dimension] = {d.key: d for d in DIMENSIONS}
BY_PATH: dict[str, Dimension] = {d.path: d for d in DIMENSIONS}


def dimension(key_or_path: str) -> Dimension:
    """A dimension by its `search.space` key or its config path."""
    found = BY_KEY.get(key_or_path) or BY_PATH.get(key_or_path)
    if found is None:
        raise KeyError(f"no search dimension {key_or_path!r}; known: {', '.join(BY_KEY)}")
    return found


# -- what other modules read ----------------------------------------------------------------------


def searched(space) -> dict[str, Dimension]:
    """The searched dimensions of a SpaceConfig, in table order."""
    return {d.key: d for d in DIMENSIONS if d.setting(space) is not None}


def tune_space(space) -> dict:
    """Tune's param space: every searched dimension (flat: conditions act in `apply_params`)."""
    return {key: d.tune_domain(d.setting(space)) for key, d in searched(space).items()}


def optuna_distributions(space) -> dict:
    """The search space as optuna distributions (the ranges Tune samples from)."""
    return {key: d.optuna_distribution(d.setting(space)) for key, d in searched(space).items()}


def values(space, key_or_path: str) -> list:
    """Every value a searched dimension can draw (a float range: its two ends); [] when not searched."""
    d = dimension(key_or_path)
    setting = d.setting(space)
    return [] if setting is None else d.values(setting)


class TrialValues(NamedTuple):
    field: str  # the config key to name in a problem: `search.space.<key>` when searched, else the config path
    values: list

    @property
    def max(self):
        return max(self.values)


def trial_values(cfg, key_or_path: str) -> TrialValues:
    """Every value a trial of this sweep (a SweepConfig) can use at a config path: the searched values, or the
    fixed config value when it is not searched. It does not look at the condition: see `can_apply`."""
    d = dimension(key_or_path)
    setting = d.setting(cfg.search.space)
    if setting is not None:
        return TrialValues(f"search.space.{d.key}", d.values(setting))
    return TrialValues(d.path, [_at(cfg, d.path)])


def can_apply(cfg, key_or_path: str) -> bool:
    """Whether some trial of this sweep uses the dimension (its condition can hold), searched or not."""
    d = dimension(key_or_path)
    if d.when is None:
        return True
    possible = trial_values(cfg, d.when.path).values if d.when.path in BY_PATH else [_at(cfg, d.when.path)]
    return any(_same(v, w) for v in possible for w in d.when.values)


def apply_params(cfg, params: dict) -> tuple[TrainConfig, DeepSpeedConfig, ModelConfig]:
    """The fixed config (a SweepConfig) with one trial's sampled values put in, where their condition holds.

    Groups no value lands in are returned as they are (the same objects).
    """
    groups = {name: getattr(cfg, name) for name in GROUPS}
    for d in DIMENSIONS:
        if d.key in params and d.applies(params, cfg):
            root, *rest = d.path.split(".")
            groups[root] = _put(groups[root], rest, d.cast(params[d.key]))
    return groups["train"], groups["deepspeed"], groups["model"]


def config_json(train: TrainConfig, deepspeed: DeepSpeedConfig, model: ModelConfig) -> dict:
    """The groups a trial's params override (what `apply_params` returns), as JSON by group name."""
    return {name: group.model_dump(mode="json") for name, group in zip(GROUPS, (train, deepspeed, model), strict=True)}


# -- helpers --------------------------------------------------------------------------------------

_UNKNOWN = object()


def effective(path: str, params: dict, cfg=None):
    """A trial's value at a config path: its sampled value when searched, else the config's (unknown without one)."""
    d = BY_PATH.get(path)
    if d is not None and d.key in params:
        return d.cast(params[d.key])
    return _UNKNOWN if cfg is None else _at(cfg, path)


def _at(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _put(group: BaseModel, rest: list[str], value) -> BaseModel:
    head, *tail = rest
    return group.model_copy(update={head: _put(getattr(group, head), tail, value) if tail else value})


def _same(a, b) -> bool:
    """Equal and both or neither bool (True is not the ZeRO stage 1)."""
    a = a.item() if hasattr(a, "item") else a
    return a == b and isinstance(a, bool) == isinstance(b, bool)


# -- the `search.space` YAML group, built from the table ------------------------------------------


def _space_field(d: Dimension):
    """The SpaceConfig field of a row; resolving its config paths here makes a row naming a field that does not
    exist (or one outside the groups `apply_params` returns) fail at import, not in a sweep."""
    field = d.field
    if d.when:
        field_info(d.when.path)
    if d.kind == "float":
        kind, extra = FloatRange, {}
    elif d.kind == "int":
        kind, extra = IntRange, {}
    else:
        kind, extra = list[base_type(field.annotation)], {"min_length": 1}
    doc = f"{d.description}; sets {d.path}" + (f", only when {d.when}" if d.when else "")
    return Annotated[kind | None, AfterValidator(d.check)], Field(None, description=doc, **extra)


SpaceConfig = create_model(
    "SpaceConfig",
    __base__=Group,
    __module__=__name__,
    __doc__="What the search varies; an absent dimension keeps the `train`/`deepspeed`/`model` value.",
    **{d.key: _space_field(d) for d in DIMENSIONS},
)
