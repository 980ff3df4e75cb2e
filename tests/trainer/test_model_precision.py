"""Precision (model.torch_dtype, deepspeed.precision): bf16 weights load as bf16, DeepSpeed's optimizer steps fp32
master copies of them at every ZeRO stage (a real `deepspeed.initialize` + step on the tiny llama, in this process as
rank 0 of a gloo world of one: DeepSpeed's CPU accelerator supports bf16), and incoherent dtypes are refused."""

from __future__ import annotations

import pytest
import torch

from trainer.config import DeepSpeedConfig, ModelConfig, TrainConfig
from trainer.ds_config import build_deepspeed_config
from trainer.model import load_model, weights_dtype
from zerotune.errors import ConfigError

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello there, how are you today?"] * 4


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("bf16-llama"), TEXTS)


def _bf16_config(stage: int, method: str) -> dict:
    # The GPU config (bf16 on a bf16 GPU), but torch's AdamW instead of FusedAdam, which needs CUDA: the same
    # choice the CPU path makes. Nothing else of the config differs.
    config = build_deepspeed_config(
        ds=DeepSpeedConfig(zero_stage=stage, precision="bf16"),
        train=TrainConfig(batch_size=2, grad_accum=2, learning_rate=1e-2, warmup_ratio=0.0),
        world_size=1,
        steps_per_epoch=4,
        device="cuda",
        bf16_supported=True,
    )
    config["optimizer"]["params"]["torch_adam"] = True
    return config


# The optimizer wrapper DeepSpeed 0.19.8 picks under bf16 (engine._do_optimizer_sanity_check): each keeps fp32 masters
WRAPPER = {
    0: "FP16_UnfusedOptimizer",  # bf16 "DDP" path around torch's AdamW: fp32 copies of every trained tensor
    1: "BF16_Optimizer",  # because grad_accum_dtype is fp32 (trainer.ds_config)
    2: "DeepSpeedZeroOptimizer",  # fp32 partitions (single_partition_of_fp32_groups)
    3: "DeepSpeedZeroOptimizer_Stage3",  # fp32 partitions (fp32_partitioned_groups_flat)
}


@pytest.mark.parametrize(("stage", "method"), [(0, "full"), (1, "full"), (2, "lora"), (3, "full")])
def test_bf16_weights_train_with_fp32_master_copies(world_of_one, llama_dir, stage, method):
    import deepspeed

    cfg = ModelConfig(path=str(llama_dir), method=method, lora={"target_modules": "attention"})
    model = load_model(cfg, "causal-lm", precision="bf16")
    trainable = [p for p in model.parameters() if p.requires_grad]
    # loaded as bf16 (torch_dtype auto), not cast later; PEFT keeps its adapters in fp32 (DeepSpeed casts them)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    config = _bf16_config(stage, method)
    assert ("data_types" in config) is (stage > 0)  # fp32 gradient accumulation where DeepSpeed allows it
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=config)
    torch.manual_seed(0)
    ids = torch.randint(1, model.config.vocab_size, (2, 12))
    before = None if stage == 3 else [p.detach().clone() for p in trainable]
    for _ in range(6):  # three optimizer steps of two micro-batches (the warmup gives the first two a rate of 0)
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()

    assert type(engine.optimizer).__name__ == WRAPPER[stage]
    if stage:  # data_types.grad_accum_dtype (trainer.ds_config) reaches each ZeRO stage's optimizer: sums in fp32
        accumulates = getattr(engine.optimizer, "grad_acc_dtype", None) or engine.optimizer.gradient_accumulation_dtype
        assert accumulates == torch.float32
    # torch's AdamW keys its state by the tensors it steps (ZeRO 3 takes them out of its param_groups between steps)
    masters = list(engine.basic_optimizer.state)
    assert masters and {p.dtype for p in masters} == {torch.float32}
    moments = [s["exp_avg"] for s in engine.basic_optimizer.state.values()]
    assert moments and {m.dtype for m in moments} == {torch.float32}
    assert sum(p.numel() for p in masters) >= sum(p.numel() for p in trainable if p.numel() > 0)
    assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}  # the module itself stays bf16
    if before is not None:
        assert any(not torch.equal(b, p.detach()) for b, p in zip(before, trainable, strict=True))  # it stepped


def test_torch_dtype_follows_the_precision_and_incoherent_pairs_are_refused():
    assert weights_dtype(ModelConfig(), "bf16") == torch.bfloat16
    assert weights_dtype(ModelConfig(), "fp32") == torch.float32
    assert weights_dtype(ModelConfig(torch_dtype="float32"), "bf16") == torch.float32  # DeepSpeed casts it
    for dtype, precision in (("float16", "bf16"), ("bfloat16", "fp32"), ("bfloat16", "fp16")):
        with pytest.raises(ConfigError) as err:
            weights_dtype(ModelConfig(torch_dtype=dtype), precision)
        [(field, message, fix)] = err.value.problems
        assert field == "model.torch_dtype" and precision in message and "deepspeed.precision" in fix


def test_a_fits_model_follows_its_specs_precision_and_checkpointing(llama_dir):
    from trainer.model import load_for_fit
    from trainer.spec import FitSpec

    spec = FitSpec(
        task="causal-lm",
        model=ModelConfig(path=str(llama_dir)),
        train=TrainConfig(gradient_checkpointing=True),
        deepspeed=DeepSpeedConfig(),  # precision auto
        use_gpu=False,
        seed=0,
        metric="eval_loss",
        mode="min",
    )
    on_cpu = load_for_fit(spec, label_names=None, device="cpu", bf16_supported=False)
    assert on_cpu.dtype == torch.float32 and on_cpu.is_activation_checkpointing
    on_bf16_gpu = load_for_fit(spec, label_names=None, device="cuda", bf16_supported=True)  # weights load on CPU
    assert on_bf16_gpu.dtype == torch.bfloat16
    assert load_for_fit(spec, label_names=None, device="cuda", bf16_supported=False).dtype == torch.float16


ADDED = ("lora_", "prompt_encoder")  # parameters PEFT adds to the loaded model


@pytest.mark.parametrize(("task", "method"), [("causal-lm", "lora"), ("causal-lm", "prompt-tuning")])
def test_zero3_loads_each_ranks_partition_and_trains_only_inside_the_loading_block(
    world_of_one, llama_dir, task, method
):
    """ZeRO-3: a causal LM's base weights are DeepSpeed partitions from the moment they load (no whole copy per rank)
    and hold the checkpoint's values; a LoRA adapter or virtual tokens on top train under the engine; after the
    block a model loads whole again (rank 0's export)."""
    import deepspeed

    from trainer.model import parameter_count, partitioned_loading

    cfg = ModelConfig(path=str(llama_dir), method=method, lora={"target_modules": "attention"})
    config = build_deepspeed_config(
        ds=DeepSpeedConfig(zero_stage=3),
        train=TrainConfig(batch_size=2, learning_rate=1e-2, warmup_ratio=0.0),
        world_size=1,
        steps_per_epoch=4,
        device="cpu",
    )
    whole = load_model(cfg, task, label_names=["a", "b", "c"])
    with partitioned_loading(config, cfg, task):
        model = load_model(cfg, task, label_names=["a", "b", "c"])
        # what the fit adds (adapters, virtual tokens, a new head) is created whole: deepspeed.initialize partitions it
        base = [p for n, p in model.named_parameters() if not any(new in n for new in ADDED)]
        assert base and all(hasattr(p, "ds_id") and p.numel() == 0 for p in base)  # placeholders: partitioned
        assert parameter_count(model) == parameter_count(whole)
        assert parameter_count(model, trainable=True) == parameter_count(whole, trainable=True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=config)
    loaded = [(n, p) for n, p in model.named_parameters() if not any(new in n for new in ADDED)]
    with deepspeed.zero.GatheredParameters([p for _, p in loaded]):  # rank 0's checkpoint values, in partitions
        assert all(torch.equal(p, dict(whole.named_parameters())[n]) for n, p in loaded)
    assert not any(hasattr(p, "ds_id") for p in load_model(cfg, task, label_names=["a", "b", "c"]).parameters())
    ids = torch.randint(1, whole.config.vocab_size, (2, 8))
    losses = []
    for _ in range(4):
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_zero3_loads_a_new_classification_head_whole(llama_dir):
    """transformers' ZeRO-3 loader ignores ignore_mismatched_sizes, so a checkpoint's head of another size would not
    load: classification (like partial fine-tuning and GGUF) loads whole, for deepspeed.initialize to partition."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    from trainer.model import partitioned_loading

    config = {"zero_optimization": {"stage": 3}}
    for task, cfg in [
        ("classification", ModelConfig(path=str(llama_dir))),
        ("causal-lm", ModelConfig(path=str(llama_dir), method="partial", top_layers=1)),
    ]:
        with partitioned_loading(config, cfg, task):
            assert not is_deepspeed_zero3_enabled()
