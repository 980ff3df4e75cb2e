import pytest

from trainer.config import DeepSpeedConfig, TrainConfig
from trainer.ds_config import build_deepspeed_config
from zerotune.errors import ConfigError


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_batch_arithmetic_and_stage(stage):
    cfg = build_deepspeed_config(
        ds=DeepSpeedConfig(zero_stage=stage),
        train=TrainConfig(batch_size=8, grad_accum=4),
        world_size=3,
        steps_per_epoch=10,
        device="cpu",
    )
    assert cfg["train_batch_size"] == 8 * 4 * 3
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["bf16"]["enabled"] is False and cfg["fp16"]["enabled"] is False
    assert cfg["optimizer"]["params"]["torch_adam"] is True and cfg["optimizer"]["params"]["fused"] is True
    assert ("stage3_gather_16bit_weights_on_model_save" in cfg["zero_optimization"]) == (stage == 3)


def test_gpu_precision_offload_and_schedules():
    ds = DeepSpeedConfig(zero_stage=3, offload_optimizer=True, offload_params=True)
    train = TrainConfig(epochs=2, warmup_ratio=0.25, schedule="cosine", optimizer="sgd", momentum=0.8)
    cfg = build_deepspeed_config(
        ds=ds, train=train, world_size=8, steps_per_epoch=50, device="cuda", bf16_supported=True
    )
    assert cfg["bf16"]["enabled"] is True
    assert cfg["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["scheduler"] == {
        "type": "WarmupCosineLR",
        "params": {"total_num_steps": 100, "warmup_num_steps": 25, "warmup_min_ratio": 0.0, "cos_min_ratio": 0.0},
    }
    assert cfg["optimizer"]["type"] == "SGD" and cfg["optimizer"]["params"]["momentum"] == 0.8
    old_gpu = build_deepspeed_config(
        ds=DeepSpeedConfig(), train=TrainConfig(), world_size=1, steps_per_epoch=1, device="cuda", bf16_supported=False
    )
    assert old_gpu["fp16"]["enabled"] is True


def test_fp16_on_cpu_and_offload_without_stage_are_refused():
    with pytest.raises(ConfigError, match="not supported on CPU"):
        build_deepspeed_config(
            ds=DeepSpeedConfig(precision="fp16"), train=TrainConfig(), world_size=1, steps_per_epoch=1, device="cpu"
        )
    with pytest.raises(ValueError, match="offload_params needs zero_stage: 3"):
        DeepSpeedConfig(zero_stage=2, offload_params=True)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_sgd_is_allowed_under_zero_and_adamw_needs_no_allowance(stage):
    """DeepSpeed asserts on torch's SGD under ZeRO >= 1 unless told it may partition an untested optimizer."""

    def build(optimizer):
        train = TrainConfig(optimizer=optimizer)
        return build_deepspeed_config(
            ds=DeepSpeedConfig(zero_stage=stage), train=train, world_size=1, steps_per_epoch=4, device="cpu"
        )

    sgd = build("sgd")
    assert sgd["optimizer"]["type"] == "SGD" and "torch_adam" not in sgd["optimizer"]["params"]
    assert sgd.get("zero_allow_untested_optimizer", False) is (stage > 0)
    assert "zero_allow_untested_optimizer" not in build("adamw")


def test_cpu_offload_runs_deepspeeds_cpu_adam_and_the_constant_schedule_warms_up():
    train = TrainConfig(epochs=2, warmup_ratio=0.25, schedule="constant", learning_rate=1e-3)
    ds = DeepSpeedConfig(zero_stage=3, offload_optimizer=True, offload_params=True)
    cfg = build_deepspeed_config(ds=ds, train=train, world_size=1, steps_per_epoch=8, device="cpu")
    # torch's AdamW cannot step offloaded partitions: DeepSpeed must pick its CPU Adam (a JIT-built op).
    assert "torch_adam" not in cfg["optimizer"]["params"] and cfg["zero_force_ds_cpu_optimizer"] is True
    assert cfg["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": False}
    assert cfg["scheduler"] == {
        "type": "WarmupLR",
        "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 1e-3, "warmup_num_steps": 4, "warmup_type": "linear"},
    }


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_bf16_accumulates_gradients_in_fp32_where_deepspeed_allows_it(stage):
    """ZeRO 1-3 take data_types.grad_accum_dtype (ZeRO 1: BF16_Optimizer); ZeRO 0 raises NotImplementedError on the
    mix, and fp32 training has nothing to say (test_model_precision runs each stage's optimizer)."""

    def build(**gpu):
        ds = DeepSpeedConfig(zero_stage=stage)
        return build_deepspeed_config(ds=ds, train=TrainConfig(), world_size=1, steps_per_epoch=4, **gpu)

    bf16 = build(device="cuda", bf16_supported=True)
    assert bf16["bf16"]["enabled"] and bf16.get("data_types") == (None if stage == 0 else {"grad_accum_dtype": "fp32"})
    assert "data_types" not in build(device="cpu") and "data_types" not in build(device="cuda", bf16_supported=False)
