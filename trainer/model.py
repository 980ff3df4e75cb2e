"""Model and tokenizer loading for the three tasks, from a hub name, a directory or a GGUF file."""

from __future__ import annotations

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


def load_model(cfg: ModelConfig, task: Task, *, label_names: list[str] | None = None):
    """A fresh model for the task, dropout overrides applied, with the fine-tuning method (trainer.methods) applied."""
    from trainer.methods import apply_method

    return apply_method(load_base_model(cfg, task, label_names=label_names), cfg, task)


def load_base_model(cfg: ModelConfig, task: Task, *, label_names: list[str] | None = None):
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
