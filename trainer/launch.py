"""Build the Ray Train TorchTrainer that runs `train_loop_per_worker` on one worker group."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config import ScalingConfig
from trainer.spec import FitSpec


@dataclass(frozen=True)
class Fit:
    """One fit a worker group runs: its spec, the tokenised data, and the (train, validation) rows per fold.

    `encoded` may be an ObjectRef (one copy shared by every trial of a sweep)."""

    spec: FitSpec
    encoded: object
    folds: list


def worker_bundle(scaling: ScalingConfig) -> dict[str, float]:
    """What one Ray Train worker asks Ray for: its CPUs and, on GPUs, one GPU (one rank per GPU). Pre-flight checks
    it against the cluster's ceiling and the sweep asks the autoscaler for it (sweeps.preflight.checks)."""
    return {"CPU": float(scaling.cpus_per_worker), **({"GPU": 1.0} if scaling.use_gpu else {})}


def build_trainer(
    *,
    fits: list[Fit],
    scaling: ScalingConfig,
    name: str,
    storage_path: str,
    callbacks: list | None = None,
):
    """A TorchTrainer whose ONE worker group runs `fits` in turn (a sweep trial: one fit of k folds).

    Several fits share the group's start (Ray Train's controller, the workers and their imports), which costs
    more than a small model's training; they must share its scaling."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train import ScalingConfig as RayScaling
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainer.loop import train_loop_per_worker
    from trainer.storage import filesystem

    fs, path = filesystem(storage_path)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"fits": list(fits)},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=RayScaling(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=worker_bundle(scaling),
            placement_strategy=scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            # A restart resumes from the latest checkpoint, or from the one before it when the latest is damaged
            # (trainer.checkpoint.restore): keep two.
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )
