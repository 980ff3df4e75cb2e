"""Fine-tuning methods: which parameters train (full, partial, LoRA, prompt tuning).

Every method returns a model whose `requires_grad` flags say what trains; the
DeepSpeed engine is given only those parameters, so frozen ones carry no
optimizer state and are never updated, under any ZeRO stage.
"""

from __future__ import annotations

from trainer.config import LORA_PRESETS, LoraConfig, ModelConfig, Task
from zerotune.errors import problem

_PEFT_TASK = {"classification": "SEQ_CLS", "regression": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}


def apply_method(model, cfg: ModelConfig, task: Task):
    """The model with the configured method applied (a PEFT model for lora and prompt-tuning)."""
    if cfg.method == "full":
        return model
    if cfg.method == "partial":
        freeze_bottom(model, top_layers=cfg.top_layers)
        return model
    return wrap_peft(model, cfg, task)


def peft_config(cfg: ModelConfig, task: Task):
    from peft import LoraConfig, PromptTuningConfig

    if cfg.method == "lora":
        return LoraConfig(
            task_type=_PEFT_TASK[task],
            r=cfg.lora.rank,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=lora_targets(cfg.lora),
        )
    return PromptTuningConfig(task_type=_PEFT_TASK[task], num_virtual_tokens=cfg.prompt_tokens)


def lora_targets(lora: LoraConfig) -> list[str] | str | None:
    """model.lora.target_modules as PEFT takes it: a preset's module names, PEFT's own `all-linear`, the list."""
    if isinstance(lora.target_modules, str):
        names = LORA_PRESETS[lora.target_modules]
        return lora.target_modules if names is None else list(names)
    return lora.target_modules


def wrap_peft(model, cfg: ModelConfig, task: Task):
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config(cfg, task))
    except ValueError as exc:  # PEFT names the missing target modules
        raise problem(
            "model.lora.target_modules",
            str(exc).splitlines()[0],
            "name Linear modules of this architecture (e.g. [query, value] for BERT), or a preset: "
            f"{', '.join(LORA_PRESETS)}",
        ) from None


def transformer_blocks(model):
    """The model's stack of transformer blocks: the ModuleList holding the most parameters."""
    import torch

    best, best_size = None, 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = module, size
    if best is None:
        raise problem(
            "model.method",
            f"{type(model).__name__} has no stack of transformer blocks",
            "use model.method: full or lora",
        )
    return best


def freeze_bottom(model, *, top_layers: int) -> None:
    """Freeze the embeddings and all but the top `top_layers` blocks; the head and final norms train.

    "Embeddings" are the parameters registered before the block stack (word,
    position and type embeddings); a head tied to the input embeddings stays
    frozen with them.
    """
    blocks = transformer_blocks(model)
    if top_layers > len(blocks):
        raise problem(
            "model.top_layers",
            f"the model has {len(blocks)} transformer blocks, top_layers is {top_layers}",
            f"use model.top_layers <= {len(blocks)}",
        )
    in_blocks = {id(p) for p in blocks.parameters()}
    top = {id(p) for block in list(blocks)[len(blocks) - top_layers :] for p in block.parameters()}
    seen_blocks = False
    for param in model.parameters():  # registration order: embeddings, blocks, final norm / pooler / head
        if id(param) in in_blocks:
            seen_blocks = True
            param.requires_grad = id(param) in top
        else:
            param.requires_grad = seen_blocks


def strip_virtual_tokens(logits, n_tokens: int):
    """Causal-LM logits of a prompt-tuned model start with its virtual tokens' positions: drop them."""
    return logits[:, -n_tokens:] if logits.size(1) > n_tokens else logits
