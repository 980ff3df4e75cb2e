"""The Python API, for notebooks and scripts: a few keyword-only functions over the library the CLI runs.

    import zerotune as zt

    cfg = zt.load_config("examples/classification.vader-tweets.yaml", overrides=["search.num_trials=3"])
    sweep = zt.run_sweep(cfg)                      # or zt.load_sweep("vader-tweets", storage="./results")
    sweep.best.params, sweep.best.mean             # typed results
    sweep.trials_dataframe(); sweep.folds_dataframe()
    zt.build_report(sweep.storage, formats=["html"])
    zt.predict(sweep.storage, rows=pd.DataFrame({"text": ["hello there"]}))

Each function wraps the one the matching CLI command calls (`zerotune sweep run|status`, `report`, `predict`), so
the two never disagree; errors are the same ZerotuneError subclasses (field, message, fix). This module is the
top layer: it may import every package, and none of them imports it. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import pandas as pd

    from sweeps.config import SweepConfig

DEFAULT_STORAGE = "./results"  # where `zerotune sweep status|report` look for a sweep given by name


@dataclass(frozen=True)
class Fold:
    """One finished fold of a trial: its scored metrics (the scalar ones) and sizes."""

    trial_id: str
    fold: int
    score: float
    metrics: dict[str, float]
    n_train: int
    n_val: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep: its parameters, state (completed, pruned, failed, ...) and fold scores."""

    trial_id: str
    state: str
    params: dict[str, Any]
    fold_scores: list[float]
    mean: float
    std: float
    reason: str | None = None
    duration_s: float = 0.0
    trainable_params: int | None = None

    @classmethod
    def from_record(cls, record: dict) -> Trial:
        return cls(
            trial_id=record["trial_id"],
            state=record["state"],
            params=dict(record.get("params") or {}),
            fold_scores=list(record.get("fold_scores") or []),
            mean=record.get("mean", float("nan")),
            std=record.get("std", float("nan")),
            reason=record.get("reason"),
            duration_s=record.get("duration_s") or 0.0,
            trainable_params=record.get("trainable_params"),
        )


@dataclass(frozen=True)
class Sweep:
    """What a sweep's storage holds: every trial, the best one, the baseline and the latest refit's test scores.
    `summary` is the full record `zerotune sweep status NAME --format json` prints."""

    name: str
    storage: str  # the sweep's directory or URI
    task: str
    metric: str
    mode: str  # "max" or "min": which way `metric` is better
    trials: list[Trial]
    best: Trial | None
    baseline: dict | None
    refit: dict | None  # the latest completed refit's metrics.json, if one ran
    summary: dict = field(repr=False)

    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial (optuna's `trials_dataframe` shape): trial_id, state, mean, std, folds_done,
        duration_s, reason, then one `params_<name>` column per searched parameter."""
        import pandas as pd

        rows = [
            {
                "trial_id": t.trial_id,
                "state": t.state,
                "mean": t.mean,
                "std": t.std,
                "folds_done": len(t.fold_scores),
                "duration_s": t.duration_s,
                "reason": t.reason,
                **{f"params_{name}": value for name, value in t.params.items()},
            }
            for t in self.trials
        ]
        return pd.DataFrame(rows, columns=None if rows else ["trial_id", "state", "mean", "std", "folds_done"])

    def folds(self) -> list[Fold]:
        """Every finished fold of every trial, read from the trials' records."""
        from sweeps.layout import SweepDir
        from trainer.metrics import scalar_metrics

        sweep = SweepDir(self.storage)
        out = []
        for trial in self.trials:
            if trial.state == "unreadable":  # its records cannot be read: the status says why
                continue
            for record in sweep.trial(trial.trial_id).records.folds():
                out.append(
                    Fold(
                        trial_id=trial.trial_id,
                        fold=record.fold,
                        score=record.score(self.metric),
                        metrics=scalar_metrics(record.metrics),
                        n_train=record.n_train,
                        n_val=record.n_val,
                        epochs_run=record.epochs_run,
                        best_epoch=record.best_epoch,
                        stopped_early=record.stopped_early,
                    )
                )
        return out

    def folds_dataframe(self) -> pd.DataFrame:
        """One row per finished fold: trial_id, fold, score (the sweep's metric), every scalar metric, sizes."""
        import pandas as pd

        rows = [
            {
                "trial_id": f.trial_id,
                "fold": f.fold,
                "score": f.score,
                **f.metrics,
                "n_train": f.n_train,
                "n_val": f.n_val,
                "epochs_run": f.epochs_run,
                "best_epoch": f.best_epoch,
                "stopped_early": f.stopped_early,
            }
            for f in self.folds()
        ]
        return pd.DataFrame(rows, columns=None if rows else ["trial_id", "fold", "score"])


def load_config(
    path: str | Path | None = None, *, overrides: Sequence[str] = (), raw: dict | None = None
) -> SweepConfig:
    """A validated sweep config from a YAML file (or a `raw` dict), with `key=value` overrides applied as on the
    command line (e.g. "search.num_trials=3"); every problem in one ConfigError."""
    from sweeps.config import load_config as load

    if (path is None) == (raw is None):
        from zerotune.errors import ConfigError

        raise ConfigError([("config", "give a YAML path or a raw dict, not both or neither", "pass one of them")])
    return load(path, list(overrides), raw=raw)


def run_sweep(
    config: SweepConfig, *, address: str | None = None, progress: bool = True, retry_failed: bool = False
) -> Sweep:
    """Run the sweep, or resume it (same name and storage), and return its results. `address`: a Ray cluster
    (default: RAY_ADDRESS, else an embedded local Ray). The summary of an interrupted run has `interrupted`."""
    from sweeps.search.run import run_sweep as run

    summary = run(config, address=address, progress=progress, retry_failed=retry_failed)
    return load_sweep(summary["storage"])


def load_sweep(sweep: str, *, storage: str = DEFAULT_STORAGE) -> Sweep:
    """A sweep's results read from its storage (works while it runs, and after the cluster is gone): `sweep` is its
    directory or URI, or its name under `storage`."""
    from sweeps.layout import SweepDir
    from sweeps.results.status import locate_sweep, sweep_status

    uri = locate_sweep(sweep, storage=storage)
    status = sweep_status(uri, storage=storage)
    latest = SweepDir(uri).latest_refit()
    best = status.get("best")
    return Sweep(
        name=status["name"],
        storage=uri,
        task=status["task"],
        metric=status["metric"],
        mode=status["mode"],
        trials=[Trial.from_record(t) for t in status["trials"]],
        best=Trial.from_record(best) if best else None,
        baseline=status.get("baseline"),
        refit=SweepDir(uri).read(latest.metrics) if latest else None,
        summary=status,
    )


def build_report(
    sweep: str, *, storage: str = DEFAULT_STORAGE, formats: Sequence[str] = ("html",), out_dir: str | None = None
) -> dict:
    """Write the sweep's report (html, md, json) under `out_dir` (default <sweep>/report) from its storage only;
    returns {"files": {format: path}, "plots": {name: path}, "facts": the report's data, "out_dir"}."""
    from sweeps.report.facts import build_report as build
    from sweeps.results.status import locate_sweep

    return build(locate_sweep(sweep, storage=storage), formats=tuple(formats), out_dir=out_dir)


def predict(
    model: str,
    *,
    rows: pd.DataFrame | str | Path,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    batch_size: int = 32,
    **options,
) -> pd.DataFrame:
    """Predictions of an exported model (a model directory, or a sweep directory: its latest refit's model) for
    `rows`: a DataFrame or a CSV/TSV/JSONL/Parquet file. Classification: `label` and one `p_<class>` column per
    class; regression: `value`. `text_column`: by default the one the model was trained on (its export records it).
    `options` go to the `zerotune predict` library function as they are."""
    import tempfile
    from pathlib import Path

    from sweeps.final.predict import predict as run

    def call(path: str) -> pd.DataFrame:
        kwargs = {"text_column": text_column, "text_pair_column": text_pair_column, "batch_size": batch_size}
        return run(model, input_path=path, **kwargs, **options)["table"]

    if isinstance(rows, (str, Path)):
        return call(str(rows))
    with tempfile.TemporaryDirectory(prefix="zerotune-predict-") as tmp:  # the library reads rows from a file
        path = str(Path(tmp) / "rows.parquet")
        rows.to_parquet(path, index=False)
        return call(path)
