"""Held-out test split and k folds, made once per sweep (seeded) and saved with it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data import Examples
from zerotune.errors import problem


@dataclass(frozen=True)
class Folds:
    strategy: str
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train rows, validation rows) per fold
    test: np.ndarray  # held-out rows (may be empty)

    def to_json(self) -> dict:
        return {
            "strategy": self.strategy,
            "test": self.test.tolist(),
            "folds": [{"train": t.tolist(), "val": v.tolist()} for t, v in self.folds],
        }

    @classmethod
    def from_json(cls, data: dict) -> Folds:
        return cls(
            strategy=data["strategy"],
            test=np.asarray(data["test"], dtype=np.int64),
            folds=[
                (np.asarray(f["train"], dtype=np.int64), np.asarray(f["val"], dtype=np.int64)) for f in data["folds"]
            ],
        )


def pick_strategy(strategy: str, task: str, has_groups: bool) -> str:
    if strategy != "auto":
        return strategy
    if has_groups:
        return "group"
    return "stratified" if task == "classification" else "kfold"


def make_folds(examples: Examples, *, k: int, strategy: str, task: str, test_fraction: float, seed: int) -> Folds:
    from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold, StratifiedKFold, train_test_split

    n = len(examples)
    strategy = pick_strategy(strategy, task, examples.groups is not None)
    if strategy == "stratified" and task != "classification":
        raise problem(
            "folds.strategy", "stratified folds need class labels", "use strategy: kfold for regression and causal-lm"
        )
    if strategy == "group" and examples.groups is None:
        raise problem(
            "folds.strategy", "group folds need data.group_column", "set data.group_column or use strategy: auto"
        )
    rows = np.arange(n)
    test = np.zeros(0, dtype=np.int64)
    if test_fraction > 0 and strategy == "group":
        # Whole groups go to the test split: a group on both sides would leak into the test score.
        cut = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        (rows, test), *_ = cut.split(rows, groups=examples.groups)
    elif test_fraction > 0:
        stratify = examples.labels if strategy == "stratified" else None
        rows, test = train_test_split(rows, test_size=test_fraction, random_state=seed, stratify=stratify)
    rows, test = np.sort(rows), np.sort(test)
    if k > len(rows):
        raise problem("folds.k", f"k={k} is more than the {len(rows)} rows available", f"use folds.k <= {len(rows)}")
    if strategy == "stratified":
        counts = np.bincount(examples.labels[rows], minlength=len(examples.label_names))
        thin = [(examples.label_names[c], int(counts[c])) for c in range(len(counts)) if 0 < counts[c] < k]
        if thin:
            shown = ", ".join(f"{name} ({count})" for name, count in thin)
            raise problem(
                "folds.k",
                f"stratified {k}-fold needs >= {k} rows per class; too few: {shown}",
                "lower folds.k or set data.rare_classes: drop",
            )
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(rows, examples.labels[rows])
    elif strategy == "group":
        n_groups = len(np.unique(examples.groups[rows]))
        if n_groups < k:
            raise problem("folds.k", f"only {n_groups} groups for {k} folds", f"use folds.k <= {n_groups}")
        parts = GroupKFold(n_splits=k).split(rows, groups=examples.groups[rows])
    else:
        parts = KFold(n_splits=k, shuffle=True, random_state=seed).split(rows)
    folds = [(rows[t], rows[v]) for t, v in parts]
    return Folds(strategy=strategy, folds=folds, test=test)


def train_val_split(examples: Examples, *, fraction: float, task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`zerotune train`: one stratified (classification) or random split."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(examples))
    stratify = examples.labels if task == "classification" else None
    if len(rows) < 4:
        raise problem("data.path", f"only {len(rows)} rows", "a fit needs at least 4 rows")
    train, val = train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)
