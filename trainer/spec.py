"""What one worker group needs to run its fits: a plain, picklable bundle."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.config import DeepSpeedConfig, ModelConfig, Task, TrainConfig


@dataclass(frozen=True)
class FitSpec:
    """The config of the fits one worker group runs (one per fold)."""

    task: Task
    model: ModelConfig
    train: TrainConfig
    deepspeed: DeepSpeedConfig
    use_gpu: bool
    seed: int
    metric: str
    mode: str  # "max" or "min"
    checkpoint_every_epoch: bool = True
    records_uri: str | None = None  # where rank 0 writes fold records (JSON) and the effective DeepSpeed config
    export_uri: str | None = None  # after the last fold, export the model here (refit / `zerotune train`)
    tags: dict = field(default_factory=dict)
