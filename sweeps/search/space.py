"""The search space: config groups -> Tune domains, and a trial's params -> the groups it overrides."""

from __future__ import annotations

from trainer.config import DeepSpeedConfig, ModelConfig, TrainConfig

from sweeps.config import FloatRange, SpaceConfig, SweepConfig

TRAIN_KEYS = ("learning_rate", "batch_size", "epochs", "weight_decay", "warmup_ratio", "optimizer")


def tune_space(space: SpaceConfig) -> dict:
    from ray import tune

    def floats(r: FloatRange):
        return tune.loguniform(r.low, r.high) if r.log else tune.uniform(r.low, r.high)

    out = {}
    for key in ("learning_rate", "weight_decay", "warmup_ratio", "dropout"):
        value = getattr(space, key)
        if value is not None:
            out[key] = floats(value)
    if space.batch_size:
        out["batch_size"] = tune.choice(list(space.batch_size))
    if space.epochs:
        out["epochs"] = tune.randint(space.epochs.low, space.epochs.high + 1)
    if space.zero_stage:
        out["zero_stage"] = tune.choice(list(space.zero_stage))
    if space.optimizer:
        out["optimizer"] = tune.choice(list(space.optimizer))
    for key in ("method", "lora_rank", "prompt_tokens"):
        if getattr(space, key):
            out[key] = tune.choice(list(getattr(space, key)))
    if space.top_layers:
        out["top_layers"] = tune.randint(space.top_layers.low, space.top_layers.high + 1)
    return out


def apply_params(cfg: SweepConfig, params: dict) -> tuple[TrainConfig, DeepSpeedConfig, ModelConfig]:
    """The fixed config with one trial's sampled values put in."""
    train = cfg.train.model_copy(update={k: _plain(params[k]) for k in TRAIN_KEYS if k in params})
    deepspeed = cfg.deepspeed.model_copy(update={"zero_stage": int(params["zero_stage"])}) if "zero_stage" in params else cfg.deepspeed
    update = {key: _plain(params[key]) for key in ("dropout", "method", "top_layers", "prompt_tokens") if key in params}
    if "lora_rank" in params:
        update["lora"] = cfg.model.lora.model_copy(update={"rank": int(params["lora_rank"])})
    model = cfg.model.model_copy(update=update) if update else cfg.model
    return train, deepspeed, model


def _plain(value):
    """numpy scalars from samplers -> Python scalars (JSON, pydantic)."""
    return value.item() if hasattr(value, "item") else value
