#!/usr/bin/env bash
# The throughput suite on one GPU (issue 18): sampling (vLLM vs transformers), labelling (vLLM prompt
# log-probs vs batched transformers vs one sample at a time), an RLMEC training step vs an SFT step with
# training tokens/s and MFU, and the peak memory of each, for a randomly initialised Qwen2-0.5B-shaped
# model in bf16 (benchmarks/bench_throughput.py --size qwen2-0.5b; about 5 minutes on an H100-class GPU).
# Run from anywhere:
#   benchmarks/gpu_suite.sh                         # JSON + table in benchmarks/out/ (or $OUT)
#   benchmarks/gpu_suite.sh --docs docs/performance.md   # also replace the GPU table there
#   SIZE=tiny benchmarks/gpu_suite.sh               # the same suite at a tiny size (what the tests run on a CPU)
# It uses the project's .venv when there is one, else python3. Without vLLM installed the vLLM parts are
# reported as skipped, not failed. Wheels of pure-Python dependencies missing on a bare GPU image can be
# put in .whl/ (installed to /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
SIZE=${SIZE:-qwen2-0.5b}
GPU_MEM=${GPU_MEMORY_UTILIZATION:-0.5}
if [ "$SIZE" = tiny ] || ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  GPU_MEM=${GPU_MEMORY_UTILIZATION:-0.2}  # on a CPU vLLM reserves this share of RAM
fi
exec timeout "${SUITE_TIMEOUT:-480}" "$PY" benchmarks/bench_throughput.py --size "$SIZE" \
  --out "${OUT:-benchmarks/out}" --gpu-memory-utilization "$GPU_MEM" "$@"
