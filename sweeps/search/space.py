"""The search space: ONE table of dimensions, keyed by the dotted config path each one sets.

A `Dimension` knows its `search.space` key, the config field it sets (and so that field's bounds, read from
the field's own validators), its kind (float, int or choice), its Optuna distribution, how a sampler suggests it
and its condition (when a trial uses it, e.g. a LoRA rank only in lora trials). Everything that reads the space
reads `DIMENSIONS`: the `search.space` YAML group (sweeps.search.settings builds it), the searcher's define-by-run
space (sweeps.search.searcher), a trial's config, importances, pre-flight and initial points. The named rows
(`learning_rate`, `lora_rank`, ...) come first; every other numeric, boolean or choice field of `train`, `model`
(LoRA included) and `deepspeed` follows as a row keyed by its dotted path (`train.schedule`, `model.lora.alpha`).

Conditions: the space is define-by-run (Optuna's), in table order, so a condition's path is drawn before the
dimensions it decides: a full fine-tuning trial never draws a `lora_rank`. `apply_params` still applies only
dimensions whose condition holds (trials recorded before the space was conditional carry every value), and
importances and the report leave unused values out. A condition reads the trial's effective value of a config
path: the trial's sampled value when that path is searched, else the config's fixed value.

A numeric row's setting is a range ({low, high[, log][, step]}) or a list of values; a choice row's a list.

This module imports `trainer.config` only; `sweeps.config` imports it (no cycle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from pydantic import BaseModel, ValidationError

from sweeps.search.fields import GROUPS, adapter, base_type, bounds_text, field_info, is_int_field, searchable_fields
from trainer.config import DeepSpeedConfig, ModelConfig, TrainConfig

Kind = Literal["float", "int", "choice"]


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
    def setting(self, space) -> object | None:
        """Its value in a SpaceConfig: a FloatRange/IntRange or a list (None: not searched)."""
        return getattr(space, self.key, None)

    def listed(self, value) -> bool:
        """Whether a setting is a list of values (a choice row, or a numeric row given as a list)."""
        return self.kind == "choice" or isinstance(value, list)

    def optuna_distribution(self, value):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.listed(value):
            return CategoricalDistribution(list(value))
        if self.kind == "float":
            return FloatDistribution(value.low, value.high, log=value.log, step=value.step)
        return IntDistribution(value.low, value.high, step=value.step or 1)

    def suggest(self, trial, value):
        """The define-by-run draw (an optuna Trial, or Tune's captor of one): the same distribution as above."""
        if self.listed(value):
            return trial.suggest_categorical(self.key, list(value))
        if self.kind == "float":
            return trial.suggest_float(self.key, value.low, value.high, log=value.log, step=value.step)
        return trial.suggest_int(self.key, value.low, value.high, step=value.step or 1)

    def values(self, value) -> list:
        """Every value a trial can draw (a float range without a step: its two ends)."""
        if self.listed(value):
            return list(value)
        if self.kind == "float":
            return self.grid(value) if value.step else [value.low, value.high]
        return list(range(value.low, value.high + 1, value.step or 1))

    def grid(self, value) -> list:
        """Every value, for a grid search; ValueError for a continuous range (it has no finite grid)."""
        if self.kind == "float" and not self.listed(value):
            if not value.step:
                raise ValueError("a continuous range has no grid")
            count = math.floor((value.high - value.low) / value.step + 1e-9) + 1
            return [round(value.low + i * value.step, 12) for i in range(count)]
        return self.values(value)

    def contains(self, value, candidate) -> bool:
        """Whether `candidate` is a value this setting can draw (initial points)."""
        if self.listed(value):
            return any(_same(candidate, c) for c in value)
        if isinstance(candidate, bool):
            return False
        if self.kind == "float":
            number = isinstance(candidate, (int, float)) and math.isfinite(candidate)
            return number and value.low <= candidate <= value.high
        return isinstance(candidate, int) and value.low <= candidate <= value.high

    def describe(self, value) -> str:
        if self.listed(value):
            return f"one of {list(value)}"
        step = f" step {value.step}" if value.step else ""
        if self.kind == "float":
            return f"[{value.low}, {value.high}]" + (" (log)" if value.log else "") + step
        return f"{value.low}..{value.high}{step}"

    def check(self, value):
        """The SpaceConfig field validator: every value the setting can draw must suit the config field."""
        if value is None:
            return value
        if self.listed(value):
            ends = [("choice", c) for c in value]
        else:
            ends = [("low", value.low), ("high", value.high)]
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
        if self.kind == "float" and not isinstance(value, bool):
            return float(value)
        if self.kind == "int" or (is_int_field(self.path) and isinstance(value, float) and value.is_integer()):
            return int(value)
        return value


def _dim(key, path, kind, description, *, when: tuple[str, set] | None = None) -> Dimension:
    return Dimension(key, path, kind, description, When(when[0], frozenset(when[1])) if when else None)


METHOD = "model.method"  # what the method-specific dimensions are conditioned on

NAMED: tuple[Dimension, ...] = (
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

# The conditions of the rows keyed by their path: (path prefix, condition). A path matches its longest prefix.
CONDITIONS: dict[str, tuple[str, set]] = {
    "model.lora.": (METHOD, {"lora"}),
    "train.momentum": ("train.optimizer", {"sgd"}),
}


def _by_path() -> tuple[Dimension, ...]:
    """A row for every other numeric, boolean or choice field of the groups a trial overrides."""
    named = {d.path for d in NAMED}
    rows = []
    for path, kind in searchable_fields():
        if path in named:
            continue
        prefix = max((p for p in CONDITIONS if path.startswith(p)), key=len, default=None)
        doc = "Range or list of values" if kind != "choice" else "Choices"
        rows.append(_dim(path, path, kind, doc, when=CONDITIONS[prefix] if prefix else None))
    return tuple(rows)


DIMENSIONS: tuple[Dimension, ...] = NAMED + _by_path()
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


def optuna_distributions(space) -> dict:
    """The search space as optuna distributions (what the define-by-run draws sample from)."""
    return {key: d.optuna_distribution(d.setting(space)) for key, d in searched(space).items()}


def values(space, key_or_path: str) -> list:
    """Every value a searched dimension can draw (a float range: its two ends); [] when not searched."""
    d = dimension(key_or_path)
    setting = d.setting(space)
    return [] if setting is None else d.values(setting)


def grid_points(cfg) -> list[dict]:
    """Every configuration a grid search of a SweepConfig tries, each once: the searched dimensions' grids crossed
    in table order, a conditional dimension only under the values its condition holds for (a full fine-tuning
    trial is not repeated per LoRA rank). ValueError naming a continuous range, which has no grid."""
    points = [{}]
    for key, d in searched(cfg.search.space).items():
        try:
            grid = d.grid(d.setting(cfg.search.space))
        except ValueError:
            raise ValueError(f"search.space.{key}: a grid needs a step for a float range (add step: ...)") from None
        points = [{**p, key: v} for p in points for v in (grid if d.applies(p, cfg) else [None])]
        points = [{k: v for k, v in p.items() if not (k == key and v is None)} for p in points]
    return points


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


def used_params(params: dict | None, cfg) -> dict | None:
    """A trial's params less the values its conditions left unused (trials recorded before the space was
    define-by-run carry a lora_rank in a full fine-tuning trial): what a report shows."""
    if params is None:
        return None
    return {k: v for k, v in params.items() if k not in BY_KEY or BY_KEY[k].applies(params, cfg)}


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
