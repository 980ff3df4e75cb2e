"""Will it fit? A per-GPU memory estimate of a sweep's largest trial, made from the model's config alone.

Model states follow DeepSpeed's own estimators (`estimate_zero2_model_states_mem_needs` in
deepspeed/runtime/zero/stage_1_and_2.py, `estimate_zero3_model_states_mem_needs` in stage3.py), bytes per
parameter P on each of N GPUs, 16-bit training with fp32 master copies and Adam's two fp32 moments:

    ZeRO 0: 2 (16-bit params) + 2 (16-bit grads) + 4 (fp32 grads) + 4 (fp32 master) + 8 (moments)   = 20 P
    ZeRO 1: 2 + 2 (16-bit grads, whole) + 16 / N                     ZeRO 2: 2 + 18 / N  (DeepSpeed's numbers)
    ZeRO 3: 18 / N + 4 x the largest layer's parameters (its gathered working set, DeepSpeed's term)
    optimizer offload: ZeRO 1/2 keep only the 16-bit params (2 P), ZeRO 3 its 2 P / N partition;
    parameter offload (ZeRO 3): only the largest layer stays.

fp32 training has no master copy: 4 (params) + 4 (grads) + 8 (moments). SGD keeps one moment, not two. A
method that trains a part (partial, lora, prompt-tuning) keeps every weight but gradients and optimizer state only
for what it trains; a 4-bit base (model.quantization) keeps its frozen weights at NF4's ~0.52 bytes each.

Activations per micro-batch b, sequence length s, hidden size h, a heads, L layers (Korthikanti et al. 2022,
"Reducing activation recomputation in large transformer models", no tensor parallelism), in bytes at 16-bit:

    without checkpointing:  L x s b h (34 + 5 a s / h)
    with checkpointing:     L x 2 s b h  (each layer's input)  +  s b h (34 + 5 a s / h)  (one layer recomputed)

The 5 a s / h term is the attention score matrix, which the fused sdpa / flash-attention kernels never keep: it
counts only with eager attention. fp32 doubles both. A causal LM adds its logits, b s V x (2 + 4 + 4) bytes at
16-bit (the logits, their fp32 copy for the loss, and the log-softmax the loss keeps), and every GPU a fixed
allowance for the CUDA context and communication buffers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from sweeps.config import SweepConfig
from sweeps.preflight.model import model_config
from sweeps.search.space import trial_values
from trainer.config import LORA_PRESETS
from trainer.methods import lora_targets

GIB = 2**30

# Memory of the GPU types Ray labels nodes with (`accelerator_type:<name>` resources), in GiB. Where a name covers
# several sizes (A100: 40 or 80 GB) the largest: a refusal must be certain; scaling.gpu_memory_gb says it exactly.
GPU_MEMORY_GIB = {
    "T4": 16,
    "P100": 16,
    "V100": 32,
    "A10G": 24,
    "L4": 24,
    "L40S": 48,
    "A100": 80,
    "A100-40G": 40,
    "A100-80G": 80,
    "H100": 80,
    "H20": 96,
    "H200": 141,
    "B200": 180,
    "GB200": 186,
    "RTX-PRO-6000": 96,
    "AMD-Instinct-MI300X-OAM": 192,
}

# NF4 with double-quantised constants: 4 bits per weight plus about 0.127 bits of scales (QLoRA, Dettmers et al.).
NF4_BYTES = 4.127 / 8
# Linear modules per block that PEFT's all-linear adapts in a Llama-style block: the attention+mlp preset's.
LORA_ALL_LINEAR = len(LORA_PRESETS["attention+mlp"])

# The CUDA context, NCCL and DeepSpeed's communication buckets: about this much on every GPU whatever the model.
OVERHEAD_BYTES = 1 * GIB


@dataclass(frozen=True)
class Setup:
    """What one trial's per-GPU memory depends on."""

    params: int  # all parameters
    trainable: int  # the ones with gradients and optimizer state
    largest_layer: int  # parameters of the largest single module (ZeRO-3 gathers one at a time)
    hidden: int
    heads: int
    layers: int
    vocab: int  # 0: no per-token logits over a vocabulary (classification, regression)
    stage: int
    offload_optimizer: bool
    offload_params: bool
    gpus: int
    bits16: bool  # bf16/fp16 with fp32 master copies; False: fp32
    adam: bool  # two moments (AdamW); False: one (SGD with momentum)
    batch: int
    seq_len: int
    checkpointing: bool = False
    eager_attention: bool = False
    quantized: bool = False  # a 4-bit (NF4) frozen base: about half a byte per weight, the trained ones 16-bit


def model_states(s: Setup) -> dict[str, float]:
    """Bytes per GPU of parameters, gradients and optimizer state, by component (see the module docstring)."""
    n, p, t = s.gpus, s.params, s.trainable
    moments = 8 if s.adam else 4
    weight, grad = (2, 2) if s.bits16 else (4, 4)
    # fp32 grads + fp32 master weights exist beside the 16-bit ones only in mixed precision
    state = moments + (8 if s.bits16 else 0)  # per trainable parameter, on the optimizer's side
    if s.quantized:  # ZeRO 0-2 only (pre-flight refuses ZeRO-3): the packed base plus the 16-bit adapters
        return {"parameters": NF4_BYTES * (p - t) + weight * t, "gradients": grad * t, "optimizer states": state * t}
    if s.stage == 0:
        out = {"parameters": weight * p, "gradients": grad * t, "optimizer states": state * t}
    elif s.stage in (1, 2):
        grads = grad * t if s.stage == 1 else grad * t / n
        out = {"parameters": weight * p, "gradients": grads, "optimizer states": state * t / n}
        if s.offload_optimizer:  # gradients and optimizer state live in CPU memory
            out.update(gradients=0, **{"optimizer states": 0})
    else:
        # DeepSpeed's ZeRO-3 keeps 16-bit grads only transiently: 18 = 2 params + 4 fp32 grads + 4 master + 8
        grads = (4 if s.bits16 else grad) * t / n
        out = {"parameters": weight * p / n, "gradients": grads, "optimizer states": (state - 4) * t / n}
        if not s.bits16:
            out["optimizer states"] = moments * t / n
        if s.offload_optimizer:
            out.update(gradients=0, **{"optimizer states": 0})
        if s.offload_params:
            out["parameters"] = 0
        out["gathered layer"] = 4 * s.largest_layer
    return out


def activations(s: Setup) -> dict[str, float]:
    """Bytes per GPU of activations (and logits) for one micro-batch (see the module docstring)."""
    sbh = s.seq_len * s.batch * s.hidden
    scale = 1 if s.bits16 else 2
    one_layer = sbh * (34 + (5 * s.heads * s.seq_len / s.hidden if s.eager_attention else 0)) * scale
    acts = (s.layers * 2 * sbh * scale + one_layer) if s.checkpointing else s.layers * one_layer
    out = {"activations": acts}
    if s.vocab:
        out["logits"] = s.batch * s.seq_len * s.vocab * (2 * scale + 8)
    return out


def estimate(s: Setup) -> dict[str, float]:
    """Bytes per GPU by component, with `total`."""
    parts = {**model_states(s), **activations(s), "CUDA context and buffers": OVERHEAD_BYTES}
    return {**parts, "total": sum(parts.values())}


def setups(cfg: SweepConfig) -> list[Setup]:
    """One Setup per combination of the searched (or fixed) values that change memory, at the largest batch."""
    c = model_config(cfg)
    get = lambda *keys, default=0: next((getattr(c, k) for k in keys if getattr(c, k, None)), default)  # noqa: E731
    h = get("hidden_size", "n_embd", "d_model", default=1)
    layers = get("num_hidden_layers", "n_layer", "num_layers", default=1)
    vocab = get("vocab_size")
    params = count_parameters(cfg)
    largest = max(vocab * h, h * get("intermediate_size", "n_inner", default=4 * h))
    values = lambda path: sorted(set(trial_values(cfg, path).values), key=str)  # noqa: E731
    out = []
    for stage, off_opt, off_par, precision, method, optimizer, checkpointing, kernel, quant in itertools.product(
        values("deepspeed.zero_stage"),
        values("deepspeed.offload_optimizer"),
        values("deepspeed.offload_params"),
        values("deepspeed.precision"),
        values("model.method"),
        values("train.optimizer"),
        values("train.gradient_checkpointing"),
        values("model.attn_implementation"),
        values("model.quantization"),
    ):
        if (off_par and stage != 3) or (off_opt and stage == 0):
            continue  # DeepSpeedConfig refuses these: no trial runs them
        bits16 = precision in ("bf16", "fp16") or (precision == "auto" and cfg.scaling.use_gpu)
        out.append(
            Setup(
                params=params,
                trainable=_trainable(cfg, method, params, h, layers),
                largest_layer=largest,
                hidden=h,
                heads=get("num_attention_heads", "n_head", default=1),
                layers=layers,
                vocab=vocab if cfg.task == "causal-lm" else 0,
                stage=stage,
                offload_optimizer=off_opt,
                offload_params=off_par,
                gpus=cfg.scaling.num_workers,  # one GPU per worker
                bits16=bits16,
                adam=optimizer == "adamw",
                batch=trial_values(cfg, "batch_size").max,
                seq_len=cfg.model.max_length,
                checkpointing=checkpointing,
                eager_attention=kernel == "eager",
                quantized=quant == "4bit" and method == "lora",
            )
        )
    return out


def count_parameters(cfg: SweepConfig) -> int:
    """About how many parameters the configured model has, from its config alone (no weights read).

    A transformer estimate (embeddings + per-block attention and MLP): this check must answer in
    seconds, and a memory budget needs the order of magnitude, not the last parameter. A config
    without the sizes the estimate needs is built on the meta device instead.
    """
    c = model_config(cfg)
    get = lambda *keys, default=None: next((getattr(c, k) for k in keys if getattr(c, k, None)), default)  # noqa: E731
    h, layers = get("hidden_size", "n_embd", "d_model"), get("num_hidden_layers", "n_layer", "num_layers")
    if not (h and layers):
        from trainer.model import locate

        return _count_on_meta(*locate(cfg.model), cfg.task)
    inter = get("intermediate_size", "n_inner", default=4 * h)
    heads = get("num_attention_heads", "n_head", default=1)
    kv = h * get("num_key_value_heads", default=heads) // heads
    gated = getattr(c, "model_type", None) in {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "phi3",
        "mixtral",
    }
    block = 2 * h * h + 2 * h * kv + (3 if gated else 2) * h * inter
    tied = getattr(c, "tie_word_embeddings", not gated)
    return int(get("vocab_size", default=0) * h * (1 if tied else 2) + layers * block)


def _count_on_meta(where: str, gguf: str | None, task: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(where, **({"gguf_file": gguf} if gguf else {}))
    cls = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    with torch.device("meta"):
        model = cls.from_config(config)
    return sum(p.numel() for p in model.parameters())


def worst_setup(cfg: SweepConfig) -> Setup:
    """The trial setup that needs the most memory per GPU."""
    return max(setups(cfg), key=lambda s: estimate(s)["total"])


def _trainable(cfg: SweepConfig, method: str, params: int, h: int, layers: int) -> int:
    """Parameters with gradients and optimizer state (heads left out: small next to the rest)."""
    if method == "full":
        return params
    if method == "partial":
        return params * min(max(trial_values(cfg, "top_layers").values), layers) // layers
    if method == "lora":  # A (r x in) and B (out x r) per adapted module; PEFT's default adapts two per block
        named = lora_targets(cfg.model.lora)
        targets = len(named) if isinstance(named, list) else LORA_ALL_LINEAR if named else 2
        return 2 * max(trial_values(cfg, "lora_rank").values) * h * targets * layers
    return max(trial_values(cfg, "prompt_tokens").values) * h


def gpu_memory(cfg: SweepConfig, resources: dict | None) -> tuple[float | None, str]:
    """(bytes per GPU or None when unknown, where that came from): scaling.gpu_memory_gb, else the smallest known
    `accelerator_type:` the cluster reports."""
    if cfg.scaling.gpu_memory_gb:
        return cfg.scaling.gpu_memory_gb * GIB, "scaling.gpu_memory_gb"
    kinds = [k.split(":", 1)[1] for k in (resources or {}) if k.startswith("accelerator_type:")]
    known = [(GPU_MEMORY_GIB[k], k) for k in kinds if k in GPU_MEMORY_GIB]
    if not known:
        return None, "unknown (set scaling.gpu_memory_gb)"
    gib, kind = min(known)
    return gib * GIB, f"the cluster's {kind} GPUs"


def explain(cfg: SweepConfig, resources: dict | None = None) -> dict:
    """`sweep validate --explain-memory`: the largest trial's estimate in GiB per GPU, and the GPU's memory."""
    s = worst_setup(cfg)
    have, where = gpu_memory(cfg, resources)
    return {
        "gib_per_gpu": {k: round(v / GIB, 2) for k, v in estimate(s).items()},
        "gpu_gib": None if have is None else round(have / GIB, 2),
        "gpu_memory_from": where,
        "setup": {
            "parameters": s.params,
            "trainable": s.trainable,
            "gpus": s.gpus,
            "zero_stage": s.stage,
            "offload_optimizer": s.offload_optimizer,
            "offload_params": s.offload_params,
            "precision": "16-bit + fp32 master" if s.bits16 else "fp32",
            "micro_batch": s.batch,
            "seq_len": s.seq_len,
            "gradient_checkpointing": s.checkpointing,
            "attention": "eager (keeps the scores)" if s.eager_attention else "fused (sdpa / flash-attention)",
            "base_weights": "4-bit NF4" if s.quantized else "as trained",
        },
    }


def memory_table(report: dict) -> str:
    """`explain`'s report for people: component, GiB per GPU."""
    rows = [f"{'component':<26} {'GiB/GPU':>9}"]
    rows += [f"{k:<26} {v:>9.2f}" for k, v in report["gib_per_gpu"].items()]
    gpu = report["gpu_gib"]
    rows.append(f"{'GPU memory':<26} {gpu:>9.2f}  ({report['gpu_memory_from']})" if gpu else "GPU memory: unknown")
    rows.append("setup: " + ", ".join(f"{k} {v}" for k, v in report["setup"].items()))
    return "\n".join(rows)


def memory_problems(cfg: SweepConfig, resources: dict | None) -> list[tuple[str, str, str]]:
    """The largest trial's estimate against the GPU's memory: one problem naming the fixes, in order, each with the
    estimate it gives on top of the ones before; none on CPU or when the GPU's memory is unknown."""
    if not cfg.scaling.use_gpu:
        return []
    have, where = gpu_memory(cfg, resources)
    if have is None:
        return []
    s = worst_setup(cfg)
    need = estimate(s)["total"]
    if need <= have:
        return []
    fixes = _fixes(cfg, s, have)
    return [
        (
            fixes[0][0] if fixes else trial_values(cfg, "batch_size").field,
            f"the largest trial needs about {need / GIB:.1f} GiB per GPU ({_summary(s)}); {where} have "
            f"{have / GIB:.0f} GiB (see `zerotune sweep validate --explain-memory`)",
            "; then ".join(f"{field}: {change} -> {gib / GIB:.1f} GiB" for field, change, gib in fixes)
            or "no setting fits: use GPUs with more memory or a smaller model",
        )
    ]


def _fixes(cfg: SweepConfig, s: Setup, have: float) -> list[tuple[str, str, float]]:
    """(field, change, estimate) in order: ZeRO-3, offload, checkpointing, smaller batch (each on top of the ones
    before), then more GPUs at the trial's own settings."""
    field = lambda key: trial_values(cfg, key).field  # noqa: E731
    steps, now = [], s
    for key, change, applies, new in (
        ("zero_stage", "3", now.stage < 3, {"stage": 3}),
        ("deepspeed.offload_optimizer", "true", not now.offload_optimizer, {"offload_optimizer": True}),
        ("deepspeed.offload_params", "true", not now.offload_params, {"offload_params": True}),
    ):
        if applies and not now.quantized and estimate(now)["total"] > have:  # a 4-bit base: ZeRO 0-2, on the GPU
            now = replace(now, **new)
            steps.append((field(key), change, estimate(now)["total"]))
    if not now.checkpointing and estimate(now)["total"] > have:
        now = replace(now, checkpointing=True)
        steps.append((field("train.gradient_checkpointing"), "true", estimate(now)["total"]))
    if estimate(now)["total"] > have and now.batch > 1:
        fits = [b for b in range(now.batch - 1, 0, -1) if estimate(replace(now, batch=b))["total"] <= have]
        now = replace(now, batch=fits[0] if fits else 1)
        steps.append((field("batch_size"), f"{now.batch}", estimate(now)["total"]))
    more = next((n for n in range(s.gpus + 1, 4097) if estimate(replace(s, gpus=n))["total"] <= have), None)
    if more:
        steps.append(
            (
                "scaling.num_workers",
                f"{more} GPUs (at the trial's own settings)",
                estimate(replace(s, gpus=more))["total"],
            )
        )
    return steps


def _summary(s: Setup) -> str:
    offload = [n for n, on in (("optimizer", s.offload_optimizer), ("params", s.offload_params)) if on]
    return (
        f"{s.params / 1e9:.2f} B parameters, ZeRO {s.stage}, offload {'+'.join(offload) or 'none'}, {s.gpus} GPUs, "
        f"{'16-bit' if s.bits16 else 'fp32'}, micro-batch {s.batch} x {s.seq_len} tokens"
    )
