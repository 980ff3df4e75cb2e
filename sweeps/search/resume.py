"""What a resumed sweep may change: it runs exactly the configuration it started with (saved as config.json),
except the few fields below, which change how it runs, not what a trial computes.

Every other field of the effective configuration (model, tokenisation, task, metric, folds, search space,
training, scaling, DeepSpeed, data) must equal the saved one; a change is refused before anything is written,
naming each changed field with its saved and new value (ConfigError, exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeps.config import SweepConfig, load_config
from zerotune.errors import ConfigError

# field -> what a resumed run may do with it; each takes effect in sweeps.search.tuner.restore_tuner (or through
# the trainable, which gets this run's config).
ALLOWED = {
    "search.num_trials": "raise",  # more trials after the ones already run
    "search.max_concurrent_trials": "any",  # scheduling only
    "search.time_budget_s": "any",  # when this run stops proposing trials (the budget is per run)
    "storage.checkpoint_every_epoch": "any",  # what a restart resumes from, not what a fold computes
    "storage.lease_timeout_s": "any",  # who may write the sweep, not what it computes
    "tracking.*": "any",  # where runs are logged, not what a trial computes (any key of the group)
}
# Where the sweep and its data live, not what runs: the same sweep may be resumed from a copy or a new mount. The
# data's content is checked by its fingerprint and the folds (folds.json) instead.
LOCATION = ("name", "storage.path", "data.path")
# Why some refused changes matter, for the message.
WHY = {
    "scaling.num_workers": "the global batch is micro batch x grad_accum x workers: its trials would not be comparable",
    "train.grad_accum": "the global batch is micro batch x grad_accum x workers: its trials would not be comparable",
    "seed": "the folds, the sampler and every initialisation follow the seed",
}
_ABSENT = "(absent)"


@dataclass(frozen=True)
class Change:
    field: str  # dotted path in the config
    saved: Any
    new: Any

    def to_json(self) -> dict:
        return {"field": self.field, "saved": self.saved, "new": self.new}

    def __str__(self) -> str:
        return f"{self.field} {self.saved!r} -> {self.new!r}"


def effective(cfg: SweepConfig) -> dict[str, Any]:
    """The configuration as dotted paths, with what defaults resolve to (the metric and its direction)."""
    tree = cfg.model_dump(mode="json")
    tree["search"] = {**tree["search"], "metric": cfg.metric, "mode": cfg.mode}
    return _flatten(tree)


def resume_changes(saved: dict, cfg: SweepConfig, *, config_path: str) -> list[Change]:
    """The allowed changes from the saved config (`saved`, config.json) to `cfg`; ConfigError listing every
    refused one. An empty list: the same configuration."""
    try:
        before = effective(load_config(raw=saved))
    except ConfigError as exc:
        raise ConfigError(
            [
                (
                    f"{config_path}: {field}",
                    why,
                    "use the zerotune version that started this sweep, or a new sweep name",
                )
                for field, why, _ in exc.problems
            ]
        ) from None
    after = effective(cfg)
    changes = [
        Change(key, before.get(key, _ABSENT), after.get(key, _ABSENT))
        for key in sorted(set(before) | set(after))
        if key not in LOCATION and before.get(key, _ABSENT) != after.get(key, _ABSENT)
    ]
    problems = [_refusal(c, config_path) for c in changes if not _allowed(c)]
    if problems:
        raise ConfigError(problems)
    return changes


def with_changes(saved: dict, changes: list[Change]) -> dict:
    """config.json with the applied changes: what the sweep runs from now on."""
    out = _copy_tree(saved)
    for change in changes:
        *parents, leaf = change.field.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = change.new
    return out


def _allowed(change: Change) -> bool:
    rule = ALLOWED.get(change.field) or ALLOWED.get(change.field.split(".", 1)[0] + ".*")
    if rule == "raise":
        return isinstance(change.new, int) and isinstance(change.saved, int) and change.new > change.saved
    return rule == "any"


def _refusal(change: Change, config_path: str) -> tuple[str, str, str]:
    if ALLOWED.get(change.field) == "raise":
        why = f"can only be raised when a sweep resumes: {change.saved!r} -> {change.new!r}"
        return change.field, why, f"set it to at least {change.saved!r}, or use a new sweep name (--name)"
    why = f"changed since the sweep started: {change.saved!r} -> {change.new!r}"
    if change.field in WHY:
        why += f" ({WHY[change.field]})"
    fix = (
        f"a resumed sweep runs the configuration it started with ({config_path}): set it back to "
        f"{change.saved!r}, or run the new configuration under a new sweep name (--name)"
    )
    return change.field, why, fix


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _copy_tree(tree: dict) -> dict:
    return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in tree.items()}
