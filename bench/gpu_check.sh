#!/usr/bin/env bash
# One prepared GPU check: build with CUDA, run the whole test suite (the CUDA and
# Triton-GPU tests run for real there), run every benchmark on the GPU, print one table.
# Meant for a lent GPU machine (torch with CUDA, nvcc, ninja, no network); under 8 minutes
# on one H200. Results go to $OUT (when set, e.g. by the device tool) or bench/results/.
#
#   bash bench/gpu_check.sh            # everything
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${OUT:-bench/results}
mkdir -p "$RES"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

log "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none)"
$PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"
$PY -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton: not installed"

log "build (CUDA kernels for this GPU only)"
arch=$($PY -c "import torch; c=torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>/dev/null || echo "9.0")
t0=$(date +%s)
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=16 $PY -m pip install -q --no-build-isolation --no-deps -e . \
  > "$RES/gpu_build.log" 2>&1 || { tail -50 "$RES/gpu_build.log"; log "BUILD FAILED"; exit 1; }
log "built in $(( $(date +%s) - t0 ))s"
$PY -c "import cola_fast.ops as o; print(o.describe())"

log "tests (all; CUDA and Triton-GPU tests included)"
t0=$(date +%s)
timeout 420 $PY -m pytest -q tests -p no:cacheprovider > "$RES/gpu_tests.log" 2>&1
tests_rc=$?
tail -15 "$RES/gpu_tests.log"
log "tests rc=$tests_rc in $(( $(date +%s) - t0 ))s"

for b in mining snico conv_embed train_step; do
  if [ -f "bench/$b.py" ]; then
    log "bench $b"
    timeout 240 $PY "bench/$b.py" --device cuda > "$RES/bench_$b.log" 2>&1 \
      || echo "bench $b failed (rc=$?); see $RES/bench_$b.log"
  fi
done
[ "$RES" != bench/results ] && cp bench/results/*_cuda.md "$RES"/ 2>/dev/null

log "summary"
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); tests rc=$tests_rc: $(tail -1 "$RES/gpu_tests.log")"
  for f in "$RES"/*_cuda.md; do [ -f "$f" ] && { echo; cat "$f"; }; done
} | tee "$RES/gpu_check_summary.md"
exit $tests_rc
