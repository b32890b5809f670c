#!/usr/bin/env bash
# One prepared GPU check: build with CUDA, run the whole test suite (the CUDA and
# Triton-GPU tests run for real there), run every benchmark on the GPU, print one table.
# Meant for a lent GPU machine (torch with CUDA, nvcc, ninja, no network). It keeps itself
# under GPU_CHECK_BUDGET seconds (default 540; the device tool stops a command at 10 minutes).
# Results go to $OUT (when set, e.g. by the device tool) or bench/results/.
#
#   bash bench/gpu_check.sh            # everything
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${OUT:-bench/results}
mkdir -p "$RES"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }
# The device tool stops a command after 10 minutes: keep the whole check under BUDGET seconds,
# so that the summary is always written (later steps get what earlier ones left).
T_START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-540}
left() { echo $(( BUDGET - ($(date +%s) - T_START) )); }

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
t_tests=$(( $(left) - 150 )); [ "$t_tests" -gt 360 ] && t_tests=360; [ "$t_tests" -lt 60 ] && t_tests=60
# 8 worker processes when pytest-xdist is there: the Triton-GPU tests spend most of their time
# compiling kernels (up to a minute each at T=5000), which parallelises over the CPU cores
xdist=$($PY -c "import xdist" 2>/dev/null && echo "-n 8" || true)
log "pytest ${xdist:-(one process)}, at most ${t_tests}s"
timeout "$t_tests" $PY -m pytest -q $xdist tests -p no:cacheprovider > "$RES/gpu_tests.log" 2>&1
tests_rc=$?
[ "$tests_rc" = 124 ] && log "tests STOPPED after ${t_tests}s (time budget); see gpu_tests.log"
tail -15 "$RES/gpu_tests.log"
log "tests rc=$tests_rc in $(( $(date +%s) - t0 ))s"

for b in mining snico conv_embed train_step; do
  if [ -f "bench/$b.py" ]; then
    t_b=$(( $(left) - 20 )); [ "$t_b" -gt 240 ] && t_b=240
    if [ "$t_b" -lt 20 ]; then log "bench $b SKIPPED: time budget spent"; continue; fi
    log "bench $b (at most ${t_b}s)"
    timeout "$t_b" $PY "bench/$b.py" --device cuda > "$RES/bench_$b.log" 2>&1 \
      || echo "bench $b failed or stopped (rc=$?); see $RES/bench_$b.log"
  fi
done
[ "$RES" != bench/results ] && cp bench/results/*_cuda.md "$RES"/ 2>/dev/null

log "summary"
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  if [ "$tests_rc" = 124 ]; then tests_line="stopped by the time budget after ${t_tests}s"; else tests_line=$(tail -1 "$RES/gpu_tests.log"); fi
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); tests rc=$tests_rc: $tests_line"
  for f in "$RES"/*_cuda.md; do [ -f "$f" ] && { echo; cat "$f"; }; done
} | tee "$RES/gpu_check_summary.md"
exit $tests_rc
