"""The one place that turns the typed config into a DeepSpeed JSON."""

from __future__ import annotations

from trainer.config import DeepSpeedConfig, TrainConfig
from zerotune.errors import problem


def resolve_precision(ds: DeepSpeedConfig, *, device: str, bf16_supported: bool) -> str:
    if device == "cpu":
        if ds.precision in ("fp16", "bf16"):
            raise problem(
                "deepspeed.precision",
                f"{ds.precision} is not supported on CPU",
                "use precision: fp32 or auto, or scaling.use_gpu: true",
            )
        return "fp32"
    if ds.precision == "auto":
        return "bf16" if bf16_supported else "fp16"
    if ds.precision == "bf16" and not bf16_supported:
        raise problem("deepspeed.precision", "this GPU has no bf16 support", "use precision: fp16 or auto")
    return ds.precision


def build_deepspeed_config(
    *,
    ds: DeepSpeedConfig,
    train: TrainConfig,
    world_size: int,
    steps_per_epoch: int,
    device: str,
    bf16_supported: bool = False,
) -> dict:
    """DeepSpeed config for one fit; global batch = micro batch x accumulation x world size."""
    if world_size < 1 or steps_per_epoch < 1:
        raise problem(
            "scaling.num_workers",
            "a fit needs at least one worker and one step",
            "give more rows or a smaller batch size",
        )
    precision = resolve_precision(ds, device=device, bf16_supported=bf16_supported)
    total_steps = max(1, steps_per_epoch * train.epochs)
    warmup = max(1, int(round(train.warmup_ratio * total_steps)))  # DeepSpeed rejects 0 warmup steps
    if train.optimizer == "adamw":
        optimizer = {
            "type": "AdamW",
            "params": {
                "lr": train.learning_rate,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": train.weight_decay,
            },
        }
        # FusedAdam needs CUDA; on CPU without offload DeepSpeed must use torch's AdamW.
        if device == "cpu" and not ds.offload_optimizer:
            optimizer["params"]["torch_adam"] = True
            # torch's fused CPU AdamW kernel (the Hugging Face Trainer's default, adamw_torch_fused): torch's own
            # CPU default is a per-tensor loop; the fused kernel does the same update in one pass.
            optimizer["params"]["fused"] = True
    else:
        optimizer = {
            "type": "SGD",  # not a DeepSpeed optimizer: DeepSpeed takes it from torch.optim by name
            "params": {"lr": train.learning_rate, "momentum": train.momentum, "weight_decay": train.weight_decay},
        }
    if train.schedule == "constant":
        scheduler = {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": train.learning_rate,
                "warmup_num_steps": warmup,
                "warmup_type": "linear",
            },
        }
    elif train.schedule == "cosine":
        scheduler = {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": total_steps,
                "warmup_num_steps": warmup,
                "warmup_min_ratio": 0.0,
                "cos_min_ratio": 0.0,
            },
        }
    else:
        scheduler = {
            "type": "WarmupDecayLR",
            "params": {
                "total_num_steps": total_steps,
                "warmup_min_lr": 0.0,
                "warmup_max_lr": train.learning_rate,
                "warmup_num_steps": warmup,
                "warmup_type": "linear",
            },
        }
    zero: dict = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device != "cpu"}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": device != "cpu"}
    if ds.zero_stage == 3:
        # Export gathers full weights from the partitions on rank 0.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.batch_size * train.grad_accum * world_size,
        "gradient_clipping": train.max_grad_norm,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**9,  # progress is ours; DeepSpeed's own logging would repeat it per rank
        "wall_clock_breakdown": False,
    }
    if precision == "bf16" and ds.zero_stage > 0:
        # DeepSpeed keeps fp32 master weights under every bf16 stage but accumulates gradients in the model's dtype
        # unless data_types.grad_accum_dtype says otherwise; fp32 keeps micro-batch sums exact. DeepSpeed 0.19.8 reads
        # it at ZeRO 1 (it picks BF16_Optimizer, whose grad_acc_dtype it is; with optimizer offload ZeRO 1 runs
        # DeepSpeedZeroOptimizer instead), 2 (DeepSpeedZeroOptimizer: fp32 gradient partitions) and 3 (Stage3:
        # its fp32 grad_partitions_flat_buffer), each via engine.get_data_types(); ZeRO 0 raises on the mix.
        config["data_types"] = {"grad_accum_dtype": "fp32"}
    if ds.offload_optimizer and device == "cpu":
        config["zero_force_ds_cpu_optimizer"] = True
    if train.optimizer != "adamw" and ds.zero_stage > 0:
        # DeepSpeed asserts on a client optimizer its ZeRO stages were not tested with (torch's SGD is one);
        # SGD's state is per parameter, so partitioning it is sound.
        config["zero_allow_untested_optimizer"] = True
    return config
