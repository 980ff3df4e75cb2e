"""What a config field accepts, read from its own pydantic annotation and validators (for the search space)."""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import BaseModel, TypeAdapter

from trainer.config import DeepSpeedConfig, ModelConfig, TrainConfig

# The config groups a trial's params override, in `apply_params`' return order.
GROUPS: dict[str, type[BaseModel]] = {"train": TrainConfig, "deepspeed": DeepSpeedConfig, "model": ModelConfig}


@functools.cache
def field_info(path: str):
    root, *rest = path.split(".")
    model: Any = GROUPS[root]
    for part in rest[:-1]:
        model = base_type(model.model_fields[part].annotation)
    return model.model_fields[rest[-1]]


def base_type(annotation):
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


@functools.cache
def adapter(path: str) -> TypeAdapter:
    field = field_info(path)
    base = base_type(field.annotation)
    return TypeAdapter(Annotated[base, *field.metadata] if field.metadata else base)


def is_int_field(path: str) -> bool:
    base = base_type(field_info(path).annotation)
    if typing.get_origin(base) is Literal:
        return all(isinstance(a, int) and not isinstance(a, bool) for a in typing.get_args(base))
    return base is int


def bounds_text(path: str) -> str:
    field = field_info(path)
    base = base_type(field.annotation)
    if typing.get_origin(base) is Literal:
        return f"one of {list(typing.get_args(base))}"
    low = high = ""
    for m in field.metadata:
        if isinstance(m, at.Gt):
            low = f"{m.gt} < "
        elif isinstance(m, at.Ge):
            low = f"{m.ge} <= "
        elif isinstance(m, at.Lt):
            high = f" < {m.lt}"
        elif isinstance(m, at.Le):
            high = f" <= {m.le}"
    return f"{low}value{high}" if low or high else f"any {getattr(base, '__name__', base)}"


def searchable_fields() -> list[tuple[str, str]]:
    """(dotted path, kind) of every field a search can vary: numbers ("float", "int") and booleans or
    literals ("choice"), in the groups' declaration order, nested groups (model.lora) included. Text and list
    fields (model.path, lora.target_modules) are not searchable."""
    out = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            base, path = base_type(field.annotation), f"{prefix}.{name}"
            if isinstance(base, type) and issubclass(base, BaseModel):
                walk(base, path)
            elif typing.get_origin(base) is Literal or base is bool:
                out.append((path, "choice"))
            elif base in (int, float):
                out.append((path, base.__name__))

    for root, model in GROUPS.items():
        walk(model, root)
    return out
