"""What `search.space` accepts: a range or a list per dimension of the table (sweeps.search.space), as ONE group.

Keys are the table's: the named ones (`learning_rate`, `lora_rank`, ...) and every other searchable field's
dotted path (`train.schedule`, `model.lora.alpha`), written flat (`train.schedule: [linear, cosine]`) or nested
(`train: {schedule: [...]}`, which is what a `search.space.train.schedule=...` override makes). A named row's path
(`train.learning_rate`) is its key's alias. Each drawable value is checked against the field's own bounds here, and
against the rest of the config by `apply_problems` (e.g. offload_params in a sweep whose ZeRO stage is 2).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Discriminator, Field, Tag, ValidationError, create_model, model_validator

from sweeps.search.fields import GROUPS, base_type
from sweeps.search.space import BY_KEY, BY_PATH, DIMENSIONS, Dimension, _put, searched
from trainer.config import Group


class FloatRange(Group):
    low: float = Field(..., description="Lower bound")
    high: float = Field(..., description="Upper bound")
    log: bool = Field(False, description="Sample on a log scale")
    step: float | None = Field(None, gt=0, description="Grid step (needed by search.sampler: grid)")

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"empty range: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step:
            raise ValueError("a range is either log or stepped (optuna samples neither both)")
        return self


class IntRange(Group):
    low: int = Field(..., description="Lower bound (inclusive)")
    high: int = Field(..., description="Upper bound (inclusive)")
    step: int | None = Field(None, ge=1, description="Step between values (default 1)")

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low <= self.high:
            raise ValueError(f"empty range: low ({self.low}) must not exceed high ({self.high})")
        return self


RANGE, LIST = "<range>", "<list>"  # the union tags in an error's location (sweeps.config leaves them out)


def _shape(value) -> str:
    return RANGE if isinstance(value, (dict, FloatRange, IntRange)) else LIST


def _space_field(d: Dimension):
    """The SpaceConfig field of a row: a choice row takes a list, a numeric row a range or a list."""
    item = base_type(d.field.annotation)
    listed = Annotated[list[item], Field(min_length=1)]
    kind = listed
    if d.kind != "choice":
        ranged = FloatRange if d.kind == "float" else IntRange
        # one branch by the input's shape, so an error names the field, not each branch of a union
        kind = Annotated[Annotated[ranged, Tag(RANGE)] | Annotated[listed, Tag(LIST)], Discriminator(_shape)]
    doc = f"{d.description}; sets {d.path}" + (f", only when {d.when}" if d.when else "")
    return Annotated[kind | None, AfterValidator(d.check)], Field(None, description=doc)


def _flat(data):
    """Nested groups (`train: {schedule: ...}`) and named rows' paths as the table's keys; a key given twice is
    an error naming both spellings."""
    if not isinstance(data, dict):
        return data
    out: dict = {}

    def put(key: str, value) -> None:
        row = BY_PATH.get(key) or BY_KEY.get(key)
        name = row.key if row else key
        if name in out:
            raise ValueError(f"{name} is given twice (as {name} and {key}): keep one")
        out[name] = value

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and prefix not in BY_PATH and not {"low", "high"} & set(value):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            put(prefix, value)

    for key, value in data.items():
        walk(key, value) if key in GROUPS else put(key, value)
    return out


SpaceConfig = create_model(
    "SpaceConfig",
    __base__=Group,
    __module__=__name__,
    __doc__="What the search varies; an absent dimension keeps the `train`/`deepspeed`/`model` value.",
    __validators__={"_flat": model_validator(mode="before")(_flat)},
    **{d.key: _space_field(d) for d in DIMENSIONS},
)


def apply_problems(cfg) -> list[tuple[str, str, str]]:
    """Each value a searched dimension can draw, put into the sweep's (a SweepConfig) fixed group and validated
    as that group: a value the field accepts alone but the rest of the config refuses is named here."""
    problems = []
    for key, d in searched(cfg.search.space).items():
        root, *rest = d.path.split(".")
        group = getattr(cfg, root)
        for value in d.values(d.setting(cfg.search.space)):
            try:
                type(group).model_validate(_put(group, rest, d.cast(value)).model_dump())
            except ValidationError as exc:
                why = exc.errors()[0]["msg"].removeprefix("Value error, ")
                fix = f"drop {value!r} from search.space.{key}, or change the fixed {root} settings"
                problems.append((f"search.space.{key}", f"{d.path}={value!r}: {why}", fix))
    return problems
