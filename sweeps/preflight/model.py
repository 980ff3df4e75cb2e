"""The model, read but not loaded: its path, tokenizer and config, checked against what every trial of the sweep
asks of it (token positions, transformer blocks, LoRA target modules). No weights are read."""

from __future__ import annotations

from sweeps.config import SweepConfig
from sweeps.search.space import can_apply, trial_values
from trainer.methods import lora_targets
from zerotune.errors import ConfigError, problem

# Architectures whose position ids start after the padding index (RoBERTa's "padding_idx + 1"): they use
# max_position_embeddings - pad_token_id - 1 positions (514 -> 512).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer", "mpnet"}

_PATH_FIX = "point model.path at a model directory (with config.json and a tokenizer), a .gguf file or a hub name"


def model_config(cfg: SweepConfig):
    """The model's config: config.json read as is (fast), the GGUF file's metadata, else transformers' AutoConfig
    (a hub name); ConfigError naming model.path when there is none."""
    return _read(cfg)[0]


def _read(cfg: SweepConfig):
    """(config, the GGUF file's tokenizer tokens or None). A GGUF file is parsed once for both: parsing it is
    what takes the time (seconds for a small model), and transformers would parse it again for each."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from transformers import AutoConfig

    from trainer.model import locate

    where, gguf = locate(cfg.model)
    try:
        if gguf:
            from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

            parsed = load_gguf_checkpoint(str(Path(where) / gguf), return_tensors=False)
            return SimpleNamespace(**parsed["config"]), list(parsed["tokenizer"].get("tokens") or [])
        if (Path(where) / "config.json").is_file():
            return SimpleNamespace(**json.loads((Path(where) / "config.json").read_text())), None
        return AutoConfig.from_pretrained(where), None
    except (OSError, ValueError, KeyError) as exc:  # not found (offline: not cached), or not a config a model has
        raise problem("model.path", f"cannot read a model config from {where}: {_first_line(exc)}", _PATH_FIX) from None


def check_model(cfg: SweepConfig) -> None:
    """`model_problems`, raised as one ConfigError."""
    problems = model_problems(cfg)
    if problems:
        raise ConfigError(problems)


def model_problems(cfg: SweepConfig) -> list[tuple[str, str, str]]:
    """Load the tokenizer (a GGUF file's: its vocabulary) and the model config, and check the settings against
    them (a model that cannot be read at all raises at once)."""
    from trainer.model import load_tokenizer

    config, gguf_tokens = _read(cfg)
    problems = _position_problems(cfg, config) + _method_problems(cfg, config) + _attention_problems(cfg, config)
    problems += precision_problems(cfg)
    if gguf_tokens is None:
        tokenizer = load_tokenizer(cfg.model)
        size, specials = len(tokenizer), len(tokenizer.all_special_tokens)
    else:
        size, specials = len(gguf_tokens), 0
    if size <= specials:
        # transformers builds a tokenizer from config.json alone when the vocabulary files are missing: every word
        # would become [UNK]
        problems.append(
            (
                "model.path",
                f"the tokenizer of {cfg.model.path} has no vocabulary, only {size} special tokens",
                "add the model's tokenizer files (vocab.txt, tokenizer.json, ...) to its directory",
            )
        )
    vocab = getattr(config, "vocab_size", None)
    if vocab and size > vocab:
        problems.append(
            (
                "model.path",
                f"the tokenizer has {size} tokens, the model's embeddings only {vocab}",
                "use the tokenizer that belongs to this model",
            )
        )
    return problems


def positions(config) -> int | None:
    """How many token positions the model can embed (None: not bounded by its config, e.g. rotary only)."""
    count = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if count and getattr(config, "model_type", None) in _OFFSET_POSITIONS:
        count -= (getattr(config, "pad_token_id", None) or 1) + 1
    return count


def _position_problems(cfg: SweepConfig, config) -> list:
    """Every example's tokens, plus prompt tuning's virtual tokens, must have a position."""
    limit, length = positions(config), cfg.model.max_length
    if not limit:
        return []
    if length > limit:
        return [
            (
                "model.max_length",
                f"{length} tokens, but the model has {limit} positions",
                f"use model.max_length <= {limit}",
            )
        ]
    tokens = trial_values(cfg, "prompt_tokens")
    if can_apply(cfg, "prompt_tokens") and length + tokens.max > limit:
        return [
            (
                tokens.field,
                f"max_length {length} + {tokens.max} virtual tokens exceeds the model's {limit} positions",
                f"use model.max_length <= {limit - tokens.max}",
            )
        ]
    return []


def _method_problems(cfg: SweepConfig, config) -> list:
    """Partial fine-tuning's blocks and LoRA's target modules must exist in the model."""
    problems = []
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    top = trial_values(cfg, "top_layers")
    if can_apply(cfg, "top_layers") and layers is not None and top.max > layers:
        problems.append(
            (
                top.field,
                f"the model has {layers} transformer blocks; top_layers goes up to {top.max}",
                f"use top_layers <= {layers}",
            )
        )
    targets = lora_targets(cfg.model.lora)
    if isinstance(targets, list) and can_apply(cfg, "lora_rank"):  # a list of names (a preset's included)
        modules = _modules(cfg, config)
        # PEFT's rule for a list of names: a module matches when its name is the target or ends in ".target".
        unknown = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in modules)]
        if unknown:
            # what can be named: the modules that hold weights themselves (Linear, Embedding, ...)
            leaves = sorted(
                {n.rsplit(".", 1)[-1] for n, m in modules.items() if n and m._parameters.get("weight") is not None}
            )
            preset = cfg.model.lora.target_modules
            problems.append(
                (
                    "model.lora.target_modules",
                    f"no module of the model is named {unknown}"
                    + (f" (preset {preset} is for Llama/Qwen/Mistral-style models)" if isinstance(preset, str) else ""),
                    f"use module names of this architecture, e.g. {', '.join(leaves)}, or the preset all-linear",
                )
            )
    return problems


def _attention_problems(cfg: SweepConfig, config) -> list:
    """model.attn_implementation: flash-attention needs GPU workers and its package (checked on this driver, which
    runs the same image as the workers), and the model's class must implement the kernel (what transformers
    asserts when it loads the weights, read here from the class)."""
    import importlib.util

    kernel, field = cfg.model.attn_implementation, "model.attn_implementation"
    problems = []
    if kernel == "flash_attention_2" and not cfg.scaling.use_gpu:
        problems.append((field, "flash_attention_2 runs on GPUs only", "use sdpa (or set scaling.use_gpu: true)"))
    elif kernel == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        problems.append(
            (field, "the flash_attn package is not installed", "install flash-attn in the workers' image, or use sdpa")
        )
    flag = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn"}.get(kernel)
    cls = _model_class(cfg, config)
    if flag and cls is not None and not getattr(cls, flag, False):
        other = "eager" if kernel == "sdpa" else "sdpa" if cls._supports_sdpa else "eager"
        problems.append((field, f"{cls.__name__} does not implement {kernel} attention", f"use {other}"))
    return problems


def precision_problems(cfg: SweepConfig) -> list:
    """model.torch_dtype against every precision a trial can run at, and the 4-bit base's requirements."""
    import importlib.util

    from trainer.ds_config import resolve_precision
    from trainer.model import dtype_precision

    problems = []
    dtype, gpu = cfg.model.torch_dtype, cfg.scaling.use_gpu
    precisions = trial_values(cfg, "deepspeed.precision")
    resolved = set()
    for value in precisions.values:
        # The workers' own resolution, with a bf16 GPU assumed (an fp16-only GPU with bfloat16 weights: the worker)
        ds = cfg.deepspeed.model_copy(update={"precision": value})
        try:
            resolved.add(resolve_precision(ds, device="cuda" if gpu else "cpu", bf16_supported=True))
        except ConfigError:
            continue  # 16-bit on CPU: sweeps.config refuses it with its own fix
    wrong = sorted(resolved - {dtype_precision(dtype)}) if dtype not in ("auto", "float32") else []
    if wrong:  # fp32 weights suit every precision (DeepSpeed casts them); 16-bit ones only their own
        problems.append(
            (
                "model.torch_dtype",
                f"{dtype} weights cannot train under {'/'.join(wrong)} precision",
                f"use model.torch_dtype: auto, or {precisions.field}: {dtype_precision(dtype)}",
            )
        )
    if cfg.model.quantization == "4bit":
        q = "model.quantization"
        if not gpu:
            problems.append((q, "4-bit weights need GPUs (bitsandbytes)", "set scaling.use_gpu: true, or use none"))
        elif importlib.util.find_spec("bitsandbytes") is None:
            problems.append((q, "the bitsandbytes package is not installed", "install bitsandbytes, or use none"))
        stages = trial_values(cfg, "zero_stage")
        if 3 in stages.values:
            problems.append((stages.field, "ZeRO-3 cannot partition 4-bit weights", "use ZeRO 0-2 with a 4-bit base"))
        offload = trial_values(cfg, "deepspeed.offload_params")
        if True in offload.values:
            problems.append((offload.field, "4-bit weights cannot be offloaded", "keep parameters on the GPU: false"))
    return problems


def _model_class(cfg: SweepConfig, config):
    """The transformers class the task loads this config into (None: transformers does not map it)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if cfg.task == "causal-lm" else AutoModelForSequenceClassification
    try:
        return auto._model_mapping[type(_config_object(config))]
    except (KeyError, ValueError):
        return None


def _modules(cfg: SweepConfig, config) -> dict:
    """The modules of the model the task builds, by name, on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if cfg.task == "causal-lm" else AutoModelForSequenceClassification
    with torch.device("meta"):
        return dict(cls.from_config(_config_object(config)).named_modules())


def _config_object(config):
    """A transformers config object of a config read as is (config.json, GGUF metadata)."""
    from transformers import AutoConfig

    if hasattr(config, "to_dict"):
        return config
    fields = {k: v for k, v in vars(config).items() if k != "model_type"}
    return AutoConfig.for_model(config.model_type, **fields)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
