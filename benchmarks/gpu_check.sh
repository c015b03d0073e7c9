#!/usr/bin/env bash
# GPU check (issue 8): one RL and one GRM training run of the demo models in bf16 and transformers sampling
# on a CUDA machine, with throughput and peak GPU memory (benchmarks/gpu_check.py). Run from the repository root:
#   benchmarks/gpu_check.sh                 # uses the project's .venv if there is one, else python3
# Wheels of pure-Python dependencies missing on a bare GPU image can be put in .whl/ (installed to /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
exec "$PY" benchmarks/gpu_check.py --out "${OUT:-benchmarks/out}/gpu_check.json" "$@"
