"""GPU row of benchmarks/RESULTS.md: one MiniLM classification fold and one SmolLM2-135M causal-LM fold,
ZeRO-2, bf16, one Ray Train worker on one GPU; throughput and model FLOPs utilisation against the GPU's peak.

MFU = 6 x parameters x tokens per second / peak dense bf16 FLOP/s (the usual training estimate; padded
tokens are what the GPU computes, so both real- and padded-token MFU are reported).
"""

from __future__ import annotations

import json

# Dense bf16 tensor-core peaks (FLOP/s), by device-name fragment.
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "4090": 165e12,
}

RUNS = {
    "minilm-classification": (
        "examples/classification.vader-tweets.yaml",
        ["train.batch_size=64", "train.epochs=1", "train.learning_rate=1e-4"],
    ),
    "smollm2-causal-lm": (
        "examples/causal-lm.smollm2-dialogues.yaml",
        ["train.batch_size=16", "train.epochs=1", "data.max_rows=null", "data.dedupe=false"],
    ),
}


def peak_flops() -> tuple[str, float | None]:
    import torch

    name = torch.cuda.get_device_name(0)
    return name, next((v for k, v in PEAK_BF16.items() if k in name), None)


def gpu_fold(name: str) -> dict:
    from sweeps.config import load_config
    from sweeps.final.train import run_fit
    from sweeps.preflight.checks import count_parameters

    path, overrides = RUNS[name]
    cfg = load_config(
        path,
        [
            *overrides,
            f"name=bench-gpu-{name}",
            "storage.path=./results/bench",
            "scaling.use_gpu=true",
            "scaling.num_workers=1",
            "deepspeed.zero_stage=2",
            "deepspeed.precision=bf16",
        ],
    )
    summary = run_fit(cfg, export=False, worker_logs=False)
    last = summary["history"][-1]
    params = count_parameters(cfg)
    device, peak = peak_flops()
    out = {
        "bench": f"gpu_{name}",
        "device": device,
        "params": params,
        "samples_per_s": last["samples_per_s"],
        "tokens_per_s": last["tokens_per_s"],
        "padded_tokens_per_s": last["padded_tokens_per_s"],
        "step_s": last["step_s"],
        "metrics": {
            k: summary["metrics"].get(k)
            for k in ("f1_macro", "accuracy", "eval_loss", "perplexity")
            if k in summary["metrics"]
        },
        "fit_wall_s": summary["wall_s"],
    }
    if peak:
        out["mfu_real_tokens"] = round(6 * params * last["tokens_per_s"] / peak, 4)
        out["mfu_padded_tokens"] = round(6 * params * last["padded_tokens_per_s"] / peak, 4)
    return out


def main() -> None:
    for name in RUNS:
        print(json.dumps(gpu_fold(name)), flush=True)


if __name__ == "__main__":
    main()
