#!/usr/bin/env bash
# Create .venv (if needed) and install cola_fast into it, compiling cola_fast._C:
# the CPU kernels always, the CUDA kernels too when nvcc is found (no GPU needed).
# Re-running is cheap: the build is skipped while csrc/, setup.py and kernels/ are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${COLA_FAST_VENV:-.venv}
DEPS=("triton==3.8.0" ninja numpy tqdm scipy pandas matplotlib pytest pytest-xdist pytest-timeout hypothesis)
TORCH_CUDA=torch==2.14.1   # CUDA 13.0 build (~5.5 GB installed): compiles the CUDA kernels, runs on CPU too
TORCH_CPU=torch==2.13.0    # CPU build (~1 GB): CPU and Triton-interpreter paths only, no CUDA kernels
NEED_CUDA_GB=${COLA_FAST_NEED_CUDA_GB:-9}   # free space wanted before choosing the CUDA build
NEED_CPU_GB=3                               # below this even the CPU build will not fit

pip_q() { "$VENV/bin/python" -m pip install -q --no-cache-dir "$@" 2>&1 | { grep -v "is ignored" || true; }; }  # pip's status (pipefail)
free_gb() { df -Pk "$1" | awk 'NR==2 { printf "%d", $4 / 1048576 }'; }
make_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[install] creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  pip_q --upgrade pip setuptools wheel
}

make_venv
if "$VENV/bin/python" -c "import torch" 2>/dev/null && [ -z "${COLA_FAST_TORCH:-}" ]; then
  TORCH_SPEC=torch==$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
  echo "[install] keeping the installed $TORCH_SPEC"
else
  free=$(free_gb "$VENV")
  if [ -n "${COLA_FAST_TORCH:-}" ]; then
    TORCH_SPEC=$COLA_FAST_TORCH
  elif [ "$free" -ge "$NEED_CUDA_GB" ]; then
    TORCH_SPEC=$TORCH_CUDA
  else
    TORCH_SPEC=$TORCH_CPU
    echo "[install] only ${free} GB free where $VENV lives (the CUDA build of torch needs ${NEED_CUDA_GB} GB):"
    echo "[install] installing the CPU build; the CUDA kernels will not be compiled"
  fi
  if [ "$free" -lt "$NEED_CPU_GB" ]; then
    echo "[install] error: only ${free} GB free where $VENV lives; at least ${NEED_CPU_GB} GB are needed" >&2
    exit 1
  fi
  echo "[install] $TORCH_SPEC and dependencies (${free} GB free)"
  if ! pip_q "$TORCH_SPEC" "${DEPS[@]}"; then
    [ "$TORCH_SPEC" = "$TORCH_CUDA" ] && [ -z "${COLA_FAST_TORCH:-}" ] || exit 1
    # e.g. the disk filled up part-way: start again from an empty venv with the CPU build
    echo "[install] installing $TORCH_CUDA failed; removing $VENV and installing $TORCH_CPU instead"
    rm -rf "$VENV"
    TORCH_SPEC=$TORCH_CPU
    make_venv
    pip_q "$TORCH_SPEC" "${DEPS[@]}"
  fi
fi
pip_q "${DEPS[@]}"   # nothing to do when they are there; completes a venv made by an older install.sh

stamp="$VENV/.cola_fast_build"
want=$( (cat setup.py pyproject.toml; find csrc kernels -type f | sort | xargs cat) | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import torch, cola_fast._C" 2>/dev/null; then
  echo "[install] cola_fast already built from these sources"
else
  echo "[install] building cola_fast (pip install --no-build-isolation -e .)"
  t0=$(date +%s)
  "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | { grep -v "is ignored" || true; }
  "$VENV/bin/python" -c "import torch, cola_fast._C" || { echo "[install] the build failed"; exit 1; }
  echo "$want" > "$stamp"
  echo "[install] built in $(( $(date +%s) - t0 ))s"
fi
"$VENV/bin/python" -c "import cola_fast.ops as o; print('[install] backends:', o.describe())"
