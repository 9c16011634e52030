#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): the ResNet-18 reference job trained with training.device cuda and
# cpu, their optimize-stage times and promoted candidates' ratios compared, and the CUDA execution-
# provider profile measured here. Without a GPU: the tiny CPU-only version. Within 8 minutes on one GPU.
#
#   bench/gpu_check.sh [--dry-run] [--tiny] [gpu_check.py options...]
#
# Environment: the project's .venv when it imports squeezeflow (on a GPU machine: and its torch sees the
# GPU; `make venv` pins a CPU build); else
# bench/.venv-gpu, made on top of the machine's own Python (--system-site-packages, so a CUDA build of
# PyTorch already installed there is used, never replaced by the CPU wheel `make venv` pins) with the
# project installed into it. Offline machines: WHEELHOUSE=/path/to/wheels installs from that folder only
# (pip --no-index --find-links). ORT_GPU=1 also installs onnxruntime-gpu, which the CUDA profile needs.
# PYTHON_GPU=/path/to/python skips the setup and uses that interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

gpu_on_machine() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }
imports_squeezeflow() { "$1" -c 'import squeezeflow' 2>/dev/null; }
torch_sees_gpu() { "$1" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; }

PY="${PYTHON_GPU:-}"
if [ -z "$PY" ]; then
  # the project's venv: always without a GPU (the tiny CPU check), with one only if its torch sees it
  if [ -x .venv/bin/python ] && imports_squeezeflow .venv/bin/python \
    && { ! gpu_on_machine || torch_sees_gpu .venv/bin/python; }; then
    PY=.venv/bin/python
  else
    VENV=bench/.venv-gpu
    BASE="${PYTHON:-python3}"
    if [ ! -x "$VENV/bin/python" ]; then
      "$BASE" -m venv --system-site-packages "$VENV"
    fi
    PY="$VENV/bin/python"
    if ! "$PY" -c 'import squeezeflow' 2>/dev/null; then
      # keep whatever torch the machine has (a CUDA build): pin it to its own version for this install
      TORCH_HAVE=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
      PIP=("$PY" -m pip install -q --disable-pip-version-check)
      if [ -n "${WHEELHOUSE:-}" ]; then PIP+=(--no-index --find-links "$WHEELHOUSE"); fi
      echo "installing squeezeflow into $VENV (torch ${TORCH_HAVE:-from the index})"
      if ! "${PIP[@]}" -e . ${TORCH_HAVE:+"torch==$TORCH_HAVE"}; then
        echo "could not install squeezeflow's dependencies (no package index here? set WHEELHOUSE)" >&2
        exit 2
      fi
      if [ "${ORT_GPU:-0}" = 1 ]; then
        "${PIP[@]}" onnxruntime-gpu || echo "onnxruntime-gpu not installed: the CUDA profile is reported, not measured" >&2
      fi
    fi
  fi
fi
echo "python: $PY"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" bench/gpu_check.py "$@"
