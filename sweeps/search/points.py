"""`search.initial_points`: configurations Tune tries first, each value typed by the config field it sets (the same
validators as the config: "1e-3" -> 0.001, 16.0 -> 16) and then checked against what the search space can draw."""

from __future__ import annotations

import difflib

from sweeps.search.space import BY_KEY, searched


def typed_points(space, points: list[dict] | None) -> tuple[list[dict] | None, list[tuple[str, str, str]]]:
    """(the points with typed values, problems). Problems: keys not searched, searched keys missing (those the
    point's trial draws: a lora_rank only where method is lora), values the config field refuses, values the space
    cannot draw; each names `search.initial_points.<i>.<key>`."""
    if points is None:
        return None, []
    dims = searched(space)
    known = ", ".join(dims) or "none"
    typed, problems = [], []
    for i, point in enumerate(points):
        out = {}
        for key, value in point.items():
            where, d = f"search.initial_points.{i}.{key}", dims.get(key)
            if d is None and key in BY_KEY:
                problems.append((where, f"{key} is not searched", f"add it to search.space, or use only: {known}"))
                continue
            if d is None:
                close = difflib.get_close_matches(key, list(dims) or list(BY_KEY), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                problems.append((where, "not a search dimension", f"{hint}use only searched keys: {known}"))
                continue
            setting = d.setting(space)
            fix = f"use a value in search.space.{key} ({d.describe(setting)})"
            try:
                out[key] = d.typed(value)
            except ValueError as exc:
                problems.append((where, f"{value!r} is not a valid {d.path}: {exc}", fix))
                continue
            if not d.contains(setting, out[key]):
                message = f"{value!r} is outside search.space.{key} ({d.describe(setting)})"
                problems.append((where, message, f"use a value in search.space.{key}, or widen it"))
        # a dimension whose condition does not hold in this point is not drawn for it (define-by-run)
        for key in [k for k in dims if k not in point and dims[k].applies(out)]:
            example = dims[key].values(dims[key].setting(space))[0]
            message = "missing: every searched dimension needs a value"
            problems.append((f"search.initial_points.{i}.{key}", message, f"add {key}, e.g. {example!r}"))
        typed.append(out)
    return typed, problems


def check_initial_points(space, points: list[dict] | None) -> list[tuple[str, str, str]]:
    """The problems of `typed_points`."""
    return typed_points(space, points)[1]
