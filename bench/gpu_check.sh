#!/usr/bin/env bash
# One prepared GPU check, for the one call a lent GPU machine allows: build with CUDA, the CUDA
# and Triton tests, a one-minute end-to-end thumos14 run, every benchmark, then the other tests;
# one summary table. Meant for a lent GPU machine (torch with CUDA, nvcc, ninja, no network).
# It keeps itself under GPU_CHECK_BUDGET seconds (default 540; the device tool stops a command
# at 10 minutes), each step getting a share of what is left, so the summary is always written.
# Results go to $OUT (when set, e.g. by the device tool) or bench/results/: per-test results
# (pytest -v logs and JUnit XML, so a run stopped by the budget still says which tests passed),
# the build log, the benchmark logs and tables, gpu_check_summary.md.
#
#   bash bench/gpu_check.sh                 # on the GPU machine
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh # here, on a CPU: the same logic on cheap stand-ins
#                                           # (no compile, a few tests, --help of the benchmarks,
#                                           # the e2e run on the tiny preset), to catch typos
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=${GPU_CHECK_DRY:-0}
RES=${OUT:-bench/results}
[ "$DRY" = 1 ] && RES=${OUT:-$(mktemp -d /tmp/gpu_check_dry.XXXXXX)}
mkdir -p "$RES"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }
T_START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-540}
left() { echo $(( BUDGET - ($(date +%s) - T_START) )); }
# cap VALUE MAX MIN: VALUE limited to [MIN, MAX]
cap() { local v=$1; [ "$v" -gt "$2" ] && v=$2; [ "$v" -lt "$3" ] && v=$3; echo "$v"; }
SUMMARY=()   # lines of the summary, in order
note() { SUMMARY+=("$*"); log "$*"; }
[ "$DRY" = 1 ] && note "DRY RUN (GPU_CHECK_DRY=1): CPU stand-ins, nothing compiled; results in $RES"

# ---- 0. the machine and what is installed ----------------------------------------------------
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
log "GPU: ${GPU:-none}"
$PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"
missing=$($PY - <<'EOF'
import importlib.util
print(" ".join(m for m in ("pytest", "tqdm", "scipy", "numpy", "triton", "xdist") if importlib.util.find_spec(m) is None))
EOF
)
HAVE_PYTEST=1; HAVE_TQDM=1
for m in $missing; do
  case $m in
    pytest) HAVE_PYTEST=0; note "MISSING pytest: no tests will run (pip install pytest)";;
    tqdm) HAVE_TQDM=0; note "MISSING tqdm: the trainer cannot run, so no end-to-end run and no training tests";;
    scipy) note "MISSING scipy: tests and benchmarks that import it will fail";;
    xdist) log "pytest-xdist not installed: tests run in one process";;
    *) note "MISSING $m";;
  esac
done

# ---- 1. build -------------------------------------------------------------------------------------
arch=$($PY -c "import torch; c=torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>/dev/null || echo "9.0")
if [ "$DRY" = 1 ]; then  # pip "refused" (to go through the fallback), the "build" imports the extension
  PIP_BUILD=(false)
  SETUP_BUILD=("$PY" -c "import torch, cola_fast._C")
else
  PIP_BUILD=(env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=16
             "$PY" -m pip install -q --no-build-isolation --no-deps -e .)
  SETUP_BUILD=(env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=16 "$PY" setup.py build_ext --inplace)
fi
t0=$(date +%s)
log "build (CUDA kernels for compute capability $arch): ${PIP_BUILD[*]}"
build_how="pip install -e ."
if ! timeout "$(cap $(( $(left) - 240 )) 400 60)" "${PIP_BUILD[@]}" > "$RES/gpu_build.log" 2>&1; then
  # refused (PEP 668 "externally managed", an old setuptools without editable installs, ...)
  log "pip install -e . failed or was refused (tail below); falling back to setup.py build_ext --inplace"
  tail -5 "$RES/gpu_build.log"
  build_how="setup.py build_ext --inplace (pip refused)"
  if ! timeout "$(cap $(( $(left) - 200 )) 400 60)" "${SETUP_BUILD[@]}" >> "$RES/gpu_build.log" 2>&1; then
    tail -40 "$RES/gpu_build.log"
    note "BUILD FAILED (both ways); see gpu_build.log"
    printf '%s\n' "# GPU check $(date -u +%Y-%m-%dT%H:%MZ) on ${GPU:-no GPU}" "${SUMMARY[@]}" > "$RES/gpu_check_summary.md"
    exit 1
  fi
fi
note "build: $build_how in $(( $(date +%s) - t0 ))s"
$PY -c "import cola_fast.ops as o; print(o.describe())" 2>&1 | tee -a "$RES/gpu_build.log"
if [ "$DRY" != 1 ]; then
  export COLA_FAST_EXPECT_CUDA_BUILD=1   # tests/test_build.py then checks the CUDA kernels, not skips
  $PY -c "import cola_fast.ops as o, sys; sys.exit(0 if o.describe()['native_cuda'] else 1)" \
    || note "WARNING: the extension has no CUDA kernels (native CUDA tests will fail)"
fi

# ---- shares of what the build left: GPU tests 40%, end-to-end 25% (at most 150 s), benchmarks
# 25%, the other tests the rest (they also run in CPU CI). A step that ends early leaves its
# time to the later ones (each step takes its share of what is left then).
R=$(left)
share() { cap $(( R * $1 / 100 )) "$2" "$3"; }

# ---- 2. tests: the CUDA and Triton ones first ------------------------------------------------
GPU_TESTS="tests/test_build.py tests/test_temporal_conv_embed.py tests/test_snico_loss.py tests/test_mine_snippets.py tests/test_dropout.py tests/test_gpu_train.py tests/test_train.py tests/test_infer.py"
xdist=$($PY -c "import xdist" 2>/dev/null && echo "-n 8" || true)
if [ "$DRY" = 1 ]; then  # a few fast tests of each phase, one process
  SEL1=(-k "relu_backward_at_nan or empty_batch or torch_relu"); SEL2=(-k "test_bank_errors"); xdist=""
else
  SEL1=(); SEL2=()
fi
# run_tests NAME SECONDS ARGS...: pytest -v into NAME.log and NAME.xml; the status in the summary
run_tests() {
  local name=$1 secs=$2; shift 2
  if [ "$HAVE_PYTEST" != 1 ]; then note "tests $name: SKIPPED (no pytest)"; return; fi
  log "tests $name: pytest ${xdist:-(one process)}, at most ${secs}s"
  local t0=$(date +%s)
  # one Triton autotune config per kernel under pytest (tests/conftest.py sets it too): tuning
  # compiles every config for every shape; the benchmarks below tune for real
  COLA_FAST_TRITON_AUTOTUNE=0 timeout "$secs" $PY -m pytest -v -rfE $xdist -p no:cacheprovider \
    --junitxml="$RES/$name.xml" "$@" > "$RES/$name.log" 2>&1
  local rc=$? line
  if [ "$rc" = 124 ]; then
    line="STOPPED by the time budget after ${secs}s: $(grep -cE ' PASSED' "$RES/$name.log") passed, $(grep -cE ' FAILED' "$RES/$name.log") failed before that"
  else
    line=$(tail -1 "$RES/$name.log")
  fi
  note "tests $name (rc=$rc, $(( $(date +%s) - t0 ))s): $line"
  grep -E '^(FAILED|ERROR) ' "$RES/$name.log" | head -20 | while read -r f; do note "  $f"; done
}
# shellcheck disable=SC2086
run_tests gpu_tests "$(share 40 300 60)" $GPU_TESTS "${SEL1[@]}"

# ---- 3. a one-minute end-to-end run: thumos14 preset, synthetic data, D = 2048 -----------------
if [ "$HAVE_TQDM" = 1 ]; then
  t_e=$(cap "$(share 25 150 30)" $(( $(left) - 60 )) 20)
  secs=$(cap $(( t_e - 60 )) 60 10)  # training seconds; the rest for start-up (data synthesis) and exit
  if [ "$DRY" = 1 ]; then E2E=(--preset tiny --device cpu --seconds 5 --no-write)
  else E2E=(--device cuda --seconds "$secs" --out "$RES/e2e_thumos14_cuda.md"); fi
  log "end-to-end run: bench/e2e_train.py ${E2E[*]} (at most ${t_e}s)"
  timeout "$t_e" $PY bench/e2e_train.py "${E2E[@]}" > "$RES/e2e.log" 2>&1
  rc=$?
  note "end-to-end run rc=$rc: $(grep -E 'steps/s' "$RES/e2e.log" | sed 's/|//g' | xargs) ; $(grep -E 'projected' "$RES/e2e.log" | sed 's/|//g' | xargs)"
fi

# ---- 4. benchmarks ------------------------------------------------------------------------------
BENCHES="mining snico conv_embed train_step"
nb=$(echo $BENCHES | wc -w)
t_all=$(cap "$(share 25 400 0)" $(( $(left) - 30 )) 0)
t_end=$(( $(date +%s) + t_all ))
for b in $BENCHES; do
  t_b=$(cap $(( (t_end - $(date +%s)) / nb )) 150 0); nb=$(( nb - 1 ))
  if [ "$t_b" -lt 20 ]; then note "bench $b SKIPPED: time budget spent"; continue; fi
  if [ "$DRY" = 1 ]; then BARGS=(--help); else BARGS=(--device cuda); fi
  log "bench $b (at most ${t_b}s)"
  timeout "$t_b" $PY "bench/$b.py" "${BARGS[@]}" > "$RES/bench_$b.log" 2>&1
  rc=$?
  note "bench $b rc=$rc$([ "$rc" = 124 ] && echo ' (stopped by the time budget)')"
done
[ "$RES" != bench/results ] && [ "$DRY" != 1 ] && cp bench/results/*_cuda.md "$RES"/ 2>/dev/null

# ---- 5. the other tests, with what is left ---------------------------------------------------------
t_rest=$(( $(left) - 15 ))
if [ "$t_rest" -ge 30 ]; then
  ignores=(); for f in $GPU_TESTS; do ignores+=(--ignore="$f"); done
  run_tests other_tests "$t_rest" tests "${ignores[@]}" "${SEL2[@]}"
else
  note "tests other_tests SKIPPED: time budget spent (they run in CPU CI)"
fi

# ---- 6. summary --------------------------------------------------------------------------------------
log "summary"
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ) on ${GPU:-no GPU}"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(( $(date +%s) - T_START ))s in all"
  echo
  printf -- '- %s\n' "${SUMMARY[@]}"
  for f in "$RES"/e2e_*_cuda.md "$RES"/*_cuda.md; do
    case $f in "$RES"/e2e_*) [ -n "${e2e_done:-}" ] && continue; e2e_done=1;; esac
    [ -f "$f" ] && { echo; cat "$f"; }
  done
} | tee "$RES/gpu_check_summary.md"
grep -qE 'tests gpu_tests \(rc=0' "$RES/gpu_check_summary.md"
