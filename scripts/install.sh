#!/usr/bin/env bash
# Create .venv (if needed) and install cola_fast into it, compiling cola_fast._C:
# the CPU kernels always, the CUDA kernels too when nvcc is found (no GPU needed).
# Re-running is cheap: the build is skipped while csrc/, setup.py and kernels/ are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${COLA_FAST_VENV:-.venv}
TORCH_SPEC=${COLA_FAST_TORCH:-torch==2.14.1}   # the CUDA 13.0 build: compiles the CUDA kernels, runs on CPU too

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel 2>&1 | { grep -v "is ignored" || true; }
echo "[install] $TORCH_SPEC and dependencies"
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC" "triton==3.8.0" ninja numpy tqdm scipy pandas \
    matplotlib pytest 2>&1 | { grep -v "is ignored" || true; }

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
