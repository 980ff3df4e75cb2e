"""The `tracking:` config group, and which of its backends this Python can honour.

Tracking runs on the driver only (sweeps.tracking.callback): the training workers need none of these packages and
no route to a tracking server. A backend whose package is missing is refused before the sweep starts, naming the
field and the install that fixes it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Literal

from pydantic import Field

from trainer.config import Group

INSTALL = "pip install 'zerotune[tracking]'"


class MlflowConfig(Group):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI (http://HOST:5000, or a local sqlite:////abs/mlflow.db); unset: no MLflow. "
        "Each trial is a run (params, mean/std, state) with its folds as nested runs (per-epoch metrics, step = "
        "epoch), under one run per sweep that holds the report",
    )
    experiment: str | None = Field(None, description="MLflow experiment; default: the sweep's name")


class WandbConfig(Group):
    project: str | None = Field(
        None, description="W&B project; unset: no W&B. One run per fold, grouped by trial (needs the wandb package)"
    )
    entity: str | None = Field(None, description="W&B entity (team or user); default: wandb's own")
    mode: Literal["online", "offline"] = Field(
        "online", description="offline: runs are written under ./wandb for a later `wandb sync`"
    )


class TrackingConfig(Group):
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="MLflow")
    tensorboard: bool = Field(
        False, description="TensorBoard event files under <sweep>/tensorboard/, one run directory per trial and fold"
    )
    wandb: WandbConfig = Field(default_factory=WandbConfig, description="Weights & Biases")

    @property
    def enabled(self) -> bool:
        return bool(self.mlflow.uri or self.tensorboard or self.wandb.project)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def tracking_problems(tracking: TrackingConfig) -> list[tuple[str, str, str]]:
    """(field, why, fix) for each backend asked for whose package this Python lacks."""
    problems = []
    uri = tracking.mlflow.uri or ""
    path = uri.removeprefix("file://").removeprefix("sqlite:///") if "://" in uri else uri
    if uri and not uri.startswith(("http://", "https://", "databricks")) and not os.path.isabs(path):
        # relative to the driver's working directory: a temporary one under `ray job submit`, gone after the job
        why = f"a local MLflow store needs an absolute path ({uri!r} is not one)"
        problems.append(("tracking.mlflow.uri", why, "use http://HOST:PORT, sqlite:////abs/mlflow.db or /abs/mlruns"))
    if "@" in uri.split("://", 1)[-1].split("/", 1)[0]:  # it would be written into config.json and job entrypoints
        fix = "remove them from the URI; give them as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or _TOKEN)"
        problems.append(("tracking.mlflow.uri", "the URI carries credentials (user:secret@)", fix))
    if tracking.mlflow.uri and not installed("mlflow"):
        problems.append(("tracking.mlflow.uri", "MLflow tracking needs the mlflow client, not installed", INSTALL))
    if tracking.tensorboard and not installed("tensorboardX"):  # the writer (sweeps.tracking.tensorboard_runs)
        problems.append(("tracking.tensorboard", "TensorBoard event files are written with tensorboardX", INSTALL))
    if tracking.wandb.project and not installed("wandb"):
        problems.append(
            ("tracking.wandb.project", "W&B tracking needs the wandb package, not installed", "pip install wandb")
        )
    return problems
