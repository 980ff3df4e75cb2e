"""The model, read but not loaded: its path, tokenizer and config, checked against what every trial of the sweep
asks of it (token positions, transformer blocks, LoRA target modules). No weights are read."""

from __future__ import annotations

from sweeps.config import SweepConfig
from sweeps.search.space import can_apply, trial_values
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
    problems = _position_problems(cfg, config) + _method_problems(cfg, config)
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
    targets = cfg.model.lora.target_modules
    if targets and can_apply(cfg, "lora_rank"):
        modules = _modules(cfg, config)
        # PEFT's rule for a list of names: a module matches when its name is the target or ends in ".target".
        unknown = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in modules)]
        if unknown:
            # what can be named: the modules that hold weights themselves (Linear, Embedding, ...)
            leaves = sorted(
                {n.rsplit(".", 1)[-1] for n, m in modules.items() if n and m._parameters.get("weight") is not None}
            )
            problems.append(
                (
                    "model.lora.target_modules",
                    f"no module of the model is named {unknown}",
                    f"use module names of this architecture, e.g. {', '.join(leaves)}",
                )
            )
    return problems


def _modules(cfg: SweepConfig, config) -> dict:
    """The modules of the model the task builds, by name, on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    if not hasattr(config, "to_dict"):  # read as is (config.json, GGUF metadata): build the config object
        fields = {k: v for k, v in vars(config).items() if k != "model_type"}
        config = AutoConfig.for_model(config.model_type, **fields)
    cls = AutoModelForCausalLM if cfg.task == "causal-lm" else AutoModelForSequenceClassification
    with torch.device("meta"):
        return dict(cls.from_config(config).named_modules())


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
