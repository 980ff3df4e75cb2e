"""Model and tokenizer loading for the three tasks, from a hub name, a directory or a GGUF file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer.config import ModelConfig, Task
from trainer.data import resolve_path
from zerotune.errors import problem

# Config attributes that hold dropout rates, by architecture family.
_DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "attention_dropout",
    "dropout",
)


def locate(cfg: ModelConfig) -> tuple[str, str | None]:
    """(directory or hub name, gguf file name or None)."""
    where = resolve_path(cfg.path)
    if where.endswith(".gguf"):
        path = Path(where)
        return str(path.parent), path.name
    if cfg.gguf_file is None and Path(where).is_dir():
        ggufs = sorted(p.name for p in Path(where).glob("*.gguf"))
        if ggufs and not (Path(where) / "config.json").exists():
            return where, ggufs[0]
    if not Path(where).exists() and where.startswith(("/", ".", "~")):
        raise problem(
            "model.path", f"{where} does not exist", "point model.path at a model directory, a .gguf file or a hub name"
        )
    return where, cfg.gguf_file


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    where, gguf = locate(cfg)
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:  # not found (offline: not cached), or no tokenizer transformers knows
        raise problem(
            "model.path",
            f"cannot load a tokenizer from {where}: {(str(exc).splitlines() or [type(exc).__name__])[0]}",
            "check the path (a directory with the model's tokenizer files, or a hub name); offline runs need a "
            "local directory or a cached hub model",
        ) from None
    if tok.pad_token is None:
        # Causal LMs often ship without a pad token; padding positions are masked anyway.
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    cfg: ModelConfig,
    task: Task,
    *,
    label_names: list[str] | None = None,
    precision: str = "fp32",
    gradient_checkpointing: bool = False,
):
    """A fresh model for the task in the dtype `precision` (the resolved deepspeed.precision: fp32, bf16, fp16) asks
    for, dropout overrides applied, checkpointing on if asked, with the fine-tuning method (trainer.methods)."""
    from trainer.methods import apply_method

    model = load_base_model(cfg, task, label_names=label_names, precision=precision)
    if cfg.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        # casts the norms to fp32 and freezes the base; it enables checkpointing itself when asked
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        enable_checkpointing(model)
    return apply_method(model, cfg, task)


def load_for_fit(spec, *, label_names: list[str] | None, device: str, bf16_supported: bool):
    """`load_model` for one fit of a FitSpec on this worker: the weights in the dtype the fit's DeepSpeed precision
    trains (trainer.ds_config resolves it the same way), checkpointing as train.gradient_checkpointing says."""
    from trainer.ds_config import resolve_precision

    precision = resolve_precision(spec.deepspeed, device=device, bf16_supported=bf16_supported)
    return load_model(
        spec.model,
        spec.task,
        label_names=label_names,
        precision=precision,
        gradient_checkpointing=spec.train.gradient_checkpointing,
    )


@contextmanager
def partitioned_loading(ds_config: dict, cfg: ModelConfig, task: Task) -> Iterator[None]:
    """Under ZeRO-3, a causal LM loaded in this block is built inside DeepSpeed's zero.Init: transformers does so
    while an HfDeepSpeedConfig lives (modeling_utils: is_deepspeed_zero3_enabled), rank 0 reads the checkpoint and
    each rank keeps its partition. Loaded whole, every rank would first hold the full model in host memory (a 70B
    model in bf16: ~140 GB per rank). PEFT reads the same flag. Keep the block open until deepspeed.initialize, and
    no longer: rank 0 alone loads a fresh model at export, which must not be partitioned (a collective).

    Loaded whole, as before: other stages; classification and regression, whose new head transformers' ZeRO-3
    loader (_load_state_dict_into_zero3_model) cannot fit, as it ignores ignore_mismatched_sizes (a checkpoint's
    head of another size fails to load); partial fine-tuning (trainer.methods sizes the block stacks by numel(),
    0 on a partition); GGUF files (dequantized on load, not exercised partitioned)."""
    whole = cfg.method == "partial" or task != "causal-lm" or locate(cfg)[1] is not None
    if ds_config["zero_optimization"]["stage"] != 3 or whole:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    live = HfDeepSpeedConfig(ds_config)  # transformers keeps only a weak reference: this one keeps it alive
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del live


def parameter_count(model, *, trainable: bool = False) -> int:
    """Parameters of `model` (only those that train, if asked); a ZeRO-3 partition counts its full size."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad or not trainable)


def enable_checkpointing(model) -> None:
    """Recompute each block's activations in backward. Non-reentrant checkpointing (torch's recommended form)
    works with frozen inputs; the input-grad hook is what a PEFT model's frozen embeddings need under the
    reentrant form, and transformers adds it for text models anyway. The KV cache is for generation and
    conflicts with recomputation."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise problem(
            "train.gradient_checkpointing",
            f"{type(model).__name__} does not support gradient checkpointing",
            "set train.gradient_checkpointing: false",
        )
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.config.use_cache = False


def weights_dtype(cfg: ModelConfig, precision: str):
    """The torch dtype to load the weights in: model.torch_dtype, auto following the training precision.

    DeepSpeed casts the module to the 16-bit type itself when bf16/fp16 is on and keeps fp32 master copies in its
    optimizer (FP16_(Unfused)Optimizer at ZeRO 0, the ZeRO optimizers' fp32 partitions at 1-3); loading in that
    type directly saves the fp32 copy at load. fp32 weights under 16-bit training are coherent (DeepSpeed casts
    them); 16-bit weights under fp32 training, or the other 16-bit type, are not."""
    import torch

    by_precision = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if cfg.torch_dtype == "auto":
        return by_precision[precision]
    dtype = getattr(torch, cfg.torch_dtype)
    if dtype not in (torch.float32, by_precision[precision]):
        raise problem(
            "model.torch_dtype",
            f"{cfg.torch_dtype} weights cannot train under {precision} precision",
            f"use model.torch_dtype: auto (or float32), or deepspeed.precision: {dtype_precision(cfg.torch_dtype)}",
        )
    return dtype


def dtype_precision(torch_dtype: str) -> str:
    """The deepspeed.precision a model.torch_dtype trains under."""
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(torch_dtype, "auto")


def load_base_model(cfg: ModelConfig, task: Task, *, label_names: list[str] | None = None, precision: str = "fp32"):
    """A fresh transformers model for the task; dropout overrides applied to its config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    where, gguf = locate(cfg)
    kwargs = {"gguf_file": gguf} if gguf else {}
    config = AutoConfig.from_pretrained(where, **kwargs)
    if gguf:
        from transformers import GgufConfig

        # Fine-tuning needs dense weights: without this transformers marks a GGUF model quantized (its weights
        # possibly left in packed blocks), which is not trainable and which save_pretrained refuses to export.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    if cfg.quantization == "4bit":
        kwargs.update(quantized_4bit())
    if cfg.attn_implementation == "flash_attention_2":
        _need_package("flash_attn", "model.attn_implementation", "install flash-attn on every GPU worker, or use sdpa")
    kwargs.update(dtype=weights_dtype(cfg, precision), attn_implementation=cfg.attn_implementation)
    if cfg.dropout is not None:
        for key in _DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, cfg.dropout)
    if cfg.classifier_dropout is not None and hasattr(config, "classifier_dropout"):
        config.classifier_dropout = cfg.classifier_dropout
    if task == "causal-lm":
        return AutoModelForCausalLM.from_pretrained(where, config=config, **kwargs)
    if task == "regression":
        config.num_labels = 1
        config.problem_type = "regression"
    else:
        config.num_labels = len(label_names)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: i for i, name in enumerate(label_names)}
        config.problem_type = "single_label_classification"
    if config.pad_token_id is None:
        config.pad_token_id = getattr(config, "eos_token_id", None) or 0
    # A new head: its size follows this data's labels, whatever the checkpoint had.
    return AutoModelForSequenceClassification.from_pretrained(
        where, config=config, ignore_mismatched_sizes=True, **kwargs
    )


def quantized_4bit() -> dict:
    """from_pretrained arguments of a QLoRA base: NF4 weights (double-quantised) computing in bf16, on this
    worker's GPU (bitsandbytes places the packed weights at load; DeepSpeed leaves non-float tensors alone)."""
    import torch
    from transformers import BitsAndBytesConfig

    _need_package("bitsandbytes", "model.quantization", "install bitsandbytes on every GPU worker, or use none")
    if not torch.cuda.is_available():
        raise problem("model.quantization", "4-bit weights need a GPU", "set scaling.use_gpu: true, or use none")
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    return {"quantization_config": config, "device_map": {"": torch.cuda.current_device()}}


def _need_package(name: str, field: str, fix: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is None:
        raise problem(field, f"the {name} package is not installed on this worker", fix)
