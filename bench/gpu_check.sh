#!/usr/bin/env bash
# One call, one verdict: the prepared check for a lent GPU machine (one GPU, no network, a
# results folder that brings back at most 8 files). Phases, each with a fixed time cap (seconds;
# the default budget is their sum, 300 s, so that two calls and their start-ups fit in 15 minutes):
#
#   build  100  pip install --no-build-isolation --no-deps -e . (nothing downloaded; falls back to
#               setup.py build_ext --inplace), while the e2e run's synthetic data is made in the background
#   tests   90  only the tests marked `gpu` (pytest -m gpu), xdist --dist loadfile, a per-test timeout
#   e2e     40  a short thumos14 training run on synthetic data, one Triton config: steps/s, projected run
#   bench   60  the paper's THUMOS'14 shape, fp32 and bf16: conv auto vs cuDNN (fwd+bwd), mining,
#               SniCo, the training step against the reference path
#   pack    10  gpu_check_summary.md (the table, failures, the benchmark tables) and gpu_check_logs.tgz
#
# Caps: GPU_CHECK_CAP_BUILD, _TESTS, _E2E, _BENCH. GPU_CHECK_PHASES=tests,bench (any subset, in any
# order) reruns only those; the build also runs when a selected phase needs the extension and it
# does not import. Every phase runs in its own process group (setsid), stopped within its cap
# (SIGTERM, then SIGKILL 5 s later, at the cap), so nothing it started outlives it. A stopped test
# phase still names its failures (bench/pytest_log.py reads the live -v log, [gwN] prefixes included).
# Python: $PYTHON, else the machine's python3, with whatever torch it has (the summary says which).
# Results: $OUT if set (the device tool's folder), else bench/results/; exactly two files.
#
#   bash bench/gpu_check.sh                   # on the GPU machine
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh   # on a CPU: the same phases and outputs on cheap stand-ins
#       (the extension imported, pip refused; a few CPU tests; the tiny preset; each benchmark's real
#       arguments then --help, side by side); tests/test_build.py::test_gpu_check_dry_run runs it
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=${GPU_CHECK_DRY:-0}
PY=${PYTHON:-python3}
PHASES=",${GPU_CHECK_PHASES:-build,tests,e2e,bench},"
for p in ${PHASES//,/ }; do
  case $p in build|tests|e2e|bench) ;; *) echo "GPU_CHECK_PHASES: unknown phase '$p' (build, tests, e2e, bench)" >&2; exit 2;; esac
done
CAP_BUILD=${GPU_CHECK_CAP_BUILD:-100}
CAP_TESTS=${GPU_CHECK_CAP_TESTS:-90}
CAP_E2E=${GPU_CHECK_CAP_E2E:-40}
CAP_BENCH=${GPU_CHECK_CAP_BENCH:-60}
CAP_PACK=10
GRACE=5   # seconds between SIGTERM and SIGKILL of a phase's process group (the last of its cap)
SLACK=0   # added to every cap in the dry run: its stand-ins run on a shared CPU, where caps measure nothing
[ "$DRY" = 1 ] && SLACK=60
BUDGET=$(( CAP_BUILD + CAP_TESTS + CAP_E2E + CAP_BENCH + CAP_PACK ))
if [ "$DRY" = 1 ]; then RES=${OUT:-$(mktemp -d /tmp/gpu_check_dry.XXXXXX)}; else RES=${OUT:-bench/results}; fi
mkdir -p "$RES"
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)   # every log, XML and table; packed into one .tgz at the end
LOGS=$WORK/gpu_check_logs
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
export COLA_FAST_CACHE=$WORK/cache        # synthetic data and auto's decisions of this check only
T_START=$(date +%s)
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOGS/gpu_check.log"; }
ROWS=()      # the summary table's rows: | phase | status | seconds | cap | result |
NOTES=()     # lines under the table (failures, warnings)
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); log "phase $1: $2 ($3 s of $4): $5"; }
note() { NOTES+=("$*"); log "$*"; }
want() { [[ $PHASES == *",$1,"* ]]; }

# run_group CAP LOGFILE CMD...: CMD in a process group of its own, stopped within CAP seconds (SIGTERM
# to the group GRACE seconds before the cap, SIGKILL at it). Returns CMD's status, or 124 when stopped.
run_group() {
  local cap=$(( $1 + SLACK )) logf=$2 pid t=0 rc; shift 2
  setsid "$@" >> "$logf" 2>&1 &
  pid=$!   # setsid execs in place (a background job is no group leader): pid = pgid
  while kill -0 "$pid" 2>/dev/null && [ "$t" -lt $(( cap - GRACE )) ]; do sleep 1; t=$(( t + 1 )); done
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null
    for _ in $(seq "$GRACE"); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 124
  fi
  wait "$pid"; rc=$?
  kill -KILL -- "-$pid" 2>/dev/null   # anything it left running in its group
  return "$rc"
}
secs_since() { echo $(( $(date +%s) - $1 )); }

# ---- the machine ------------------------------------------------------------------------------
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
SOFT=$($PY - <<'EOF' 2>&1
import sys, importlib.util
import torch
t = "not installed"
if importlib.util.find_spec("triton"):
    import importlib.metadata as md
    t = md.version("triton")
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}, device available: {torch.cuda.is_available()}), triton {t}")
EOF
)
log "GPU: ${GPU:-none}; $SOFT"
missing=$($PY -c "import importlib.util as u; print(' '.join(m for m in ('pytest', 'xdist', 'pytest_timeout', 'tqdm', 'scipy', 'triton') if u.find_spec(m) is None))" 2>&1)
[ -n "$missing" ] && note "MISSING Python packages: $missing (tests or benchmarks that need them fail)"
XDIST=(-n 8 --dist loadfile); [[ $missing == *xdist* ]] && XDIST=()
TIMEOUT=(--timeout 60); [[ $missing == *pytest_timeout* ]] && TIMEOUT=()
[ "$DRY" = 1 ] && note "DRY RUN (GPU_CHECK_DRY=1): cheap CPU stand-ins for every phase, nothing compiled; each cap + ${SLACK} s (a shared CPU)"

# ---- e2e data in the background (during the build) -----------------------------------------------
if [ "$DRY" = 1 ]; then E2E_PRESET=tiny; E2E_DEV=cpu; else E2E_PRESET=thumos14; E2E_DEV=cuda; fi
DATA_PID=""
if want e2e; then
  setsid $PY bench/e2e_train.py --preset "$E2E_PRESET" --prepare-data > "$LOGS/e2e_data.log" 2>&1 &
  DATA_PID=$!
fi

# ---- build ------------------------------------------------------------------------------------------
ext_ok() {
  if [ "$DRY" = 1 ]; then $PY -c "import torch, cola_fast._C" 2>/dev/null
  else $PY -c "import cola_fast.ops as o, sys; sys.exit(0 if o.describe()['native_cuda'] else 1)" 2>/dev/null; fi
}
BUILD_OK=1
if want build || { { want tests || want e2e || want bench; } && ! ext_ok; }; then
  t0=$(date +%s)
  arch=$($PY -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>/dev/null || echo 9.0)
  if [ "$DRY" = 1 ]; then  # pip "refused" (to go through the fallback); the "build" imports the extension
    arch="none (dry run: nothing compiled)"
    PIP_BUILD=(false); SETUP_BUILD=("$PY" -c "import torch, cola_fast._C")
  else
    PIP_BUILD=(env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=16
               "$PY" -m pip install -q --no-build-isolation --no-deps --no-index -e .)
    SETUP_BUILD=(env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=16 "$PY" setup.py build_ext --inplace)
  fi
  how="pip install -e ."
  run_group "$CAP_BUILD" "$LOGS/build.log" "${PIP_BUILD[@]}"; rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then  # refused (PEP 668, an old setuptools, ...): the other way
    how="setup.py build_ext --inplace (pip refused)"
    run_group $(( CAP_BUILD - $(secs_since "$t0") )) "$LOGS/build.log" "${SETUP_BUILD[@]}"; rc=$?
  fi
  dt=$(secs_since "$t0")
  if [ "$rc" = 0 ] && ext_ok; then
    row build ok "$dt" "$CAP_BUILD" "$how, compute capability $arch"
  else
    BUILD_OK=0
    [ "$rc" = 124 ] && st=STOPPED || st=FAILED
    row build "$st" "$dt" "$CAP_BUILD" "$how: rc=$rc, or the extension has no CUDA kernels; see build.log"
    tail -15 "$LOGS/build.log" > "$WORK/build_tail.txt"
    while read -r l; do note "    build.log: $l"; done < "$WORK/build_tail.txt"
  fi
  $PY -c "import cola_fast.ops as o; print(o.describe())" >> "$LOGS/build.log" 2>&1
else
  row build skipped 0 "$CAP_BUILD" "not in GPU_CHECK_PHASES; the extension imports"
fi
[ "$DRY" = 1 ] || export COLA_FAST_EXPECT_CUDA_BUILD=1  # test_build.py then checks the CUDA kernels

# ---- tests: only those marked gpu -----------------------------------------------------------------
if want tests; then
  t0=$(date +%s)
  if [ "$DRY" = 1 ]; then  # a few cheap CPU tests, through the same xdist / timeout / log path
    SEL=(tests/test_data_bank.py tests/test_mine_snippets.py -m "gpu or not gpu"
         -k "bank_errors or gather or empty_batch or on_cuda"); XDIST=(-n 2 --dist loadfile)
  else
    SEL=(-m gpu tests)
  fi
  # one Triton autotune config per kernel (tests/conftest.py sets it too): tuning would compile every
  # config for every shape; the benchmarks tune for real
  COLA_FAST_TRITON_AUTOTUNE=0 run_group "$CAP_TESTS" "$LOGS/gpu_tests.log" \
    "$PY" -m pytest -v -rfE -p no:cacheprovider "${XDIST[@]}" "${TIMEOUT[@]}" \
    --junitxml="$LOGS/gpu_tests.xml" "${SEL[@]}"
  rc=$?
  counts=$($PY bench/pytest_log.py "$LOGS/gpu_tests.log")
  case $rc in 0) st=ok;; 124) st=STOPPED;; *) st=FAILED;; esac
  row tests "$st" "$(secs_since "$t0")" "$CAP_TESTS" "$(echo "$counts" | head -1) (rc=$rc)"
  echo "$counts" | tail -n +2 > "$WORK/failures.txt"
  while read -r f; do note "tests: $f"; done < <(head -40 "$WORK/failures.txt")
  n=$(wc -l < "$WORK/failures.txt")
  [ "$n" -gt 40 ] && note "tests: ... and $(( n - 40 )) more (gpu_tests.log in the .tgz)"
fi

# ---- e2e: a short thumos14 run -----------------------------------------------------------------------
if want e2e; then
  t0=$(date +%s)
  if [ -n "$DATA_PID" ]; then  # the data, made in the background: wait for it within this phase's cap
    while kill -0 "$DATA_PID" 2>/dev/null && [ "$(secs_since "$t0")" -lt $(( CAP_E2E / 3 )) ]; do sleep 1; done
    kill -0 "$DATA_PID" 2>/dev/null && note "e2e: the synthetic data was not ready in time; the trainer goes on making it"
    kill -KILL -- "-$DATA_PID" 2>/dev/null; wait "$DATA_PID" 2>/dev/null
  fi
  left=$(( CAP_E2E + SLACK - $(secs_since "$t0") - GRACE ))
  # the trainer is stopped (SIGINT, it saves and exits) by e2e_train.py itself at --deadline; the group
  # kill at the cap is the backstop
  E2E=(--preset "$E2E_PRESET" --device "$E2E_DEV" --seconds $(( left / 2 )) --deadline $(( left - 8 ))
       --startup-limit $(( left - 8 )) --grace 5 --out "$LOGS/e2e_${E2E_PRESET}_${E2E_DEV}.md")
  COLA_FAST_TRITON_AUTOTUNE=0 run_group $(( CAP_E2E - $(secs_since "$t0") )) "$LOGS/e2e.log" \
    $PY bench/e2e_train.py "${E2E[@]}"
  rc=$?
  res=$(grep -E 'steps/s|projected' "$LOGS/e2e.log" | sed 's/|/ /g; s/  */ /g; s/^ //; s/ $//' | paste -sd';' -)
  case $rc in 0) st=ok;; 124) st=STOPPED;; *) st=FAILED;; esac
  row e2e "$st" "$(secs_since "$t0")" "$CAP_E2E" "${res:-no step logged (see e2e.log)} (rc=$rc)"
fi

# ---- bench: the paper's shape, fp32 and bf16 ---------------------------------------------------------------
if want bench; then
  t0=$(date +%s)
  P=(16,750,2048,150,37)  # THUMOS'14: B, T, D, k_easy = T/5, k_hard = T/20
  BENCHES=(
    "conv_embed 16 bench/conv_embed.py --device cuda --shapes thumos --repeats 10 --warmup 3 --out $LOGS/conv_embed_cuda.md"
    "mining 6 bench/mining.py --device cuda --shapes paper --repeats 50 --out $LOGS/mining_cuda.md"
    "snico_fp32 5 bench/snico.py --device cuda --dtype float32 --shapes ${P[0]} --repeats 10 --warmup 3 --out $LOGS/snico_cuda.md"
    "snico_bf16 5 bench/snico.py --device cuda --dtype bfloat16 --shapes ${P[0]} --repeats 10 --warmup 3 --out $LOGS/snico_cuda_bf16.md"
    "train_step_fp32 14 bench/train_step.py --device cuda --shape thumos --repeats 10 --out $LOGS/train_step_cuda_thumos.md"
    "train_step_bf16 14 bench/train_step.py --device cuda --shape thumos --repeats 10 --amp bf16 --out $LOGS/train_step_cuda_thumos_bf16.md"
  )
  names=(); pids=()
  for b in "${BENCHES[@]}"; do
    read -r name share script args <<< "$b"
    cap=$(( CAP_BENCH * share / 60 ))   # shares of the phase's cap (they add up to 60)
    # shellcheck disable=SC2086
    if [ "$DRY" = 1 ]; then  # --help after the real arguments
      set -- $args --help
    else
      set -- $args
    fi
    # one Triton config (tuning every config would take the whole cap); auto measures its candidates
    ( COLA_FAST_TRITON_AUTOTUNE=0 run_group "$cap" "$LOGS/bench_$name.log" $PY "$script" "$@"
      echo $? > "$WORK/rc_bench_$name" ) &
    names+=("$name"); pids+=($!)
    [ "$DRY" = 1 ] || wait "$!"  # on the GPU one at a time (they time things); the dry stand-ins side by side
  done
  wait "${pids[@]}" 2>/dev/null
  done_=(); failed_=()
  for name in "${names[@]}"; do
    rc=$(cat "$WORK/rc_bench_$name" 2>/dev/null || echo lost)
    if [ "$rc" = 0 ]; then done_+=("$name"); else failed_+=("$name(rc=$rc$([ "$rc" = 124 ] && echo ', stopped'))"); fi
  done
  if [ "${#failed_[@]}" = 0 ]; then st=ok; else st=FAILED; fi
  row bench "$st" "$(secs_since "$t0")" "$CAP_BENCH" "ok: ${done_[*]:-none}; failed: ${failed_[*]:-none}"
fi

# ---- pack: the summary and one .tgz -------------------------------------------------------------------
[ -n "$DATA_PID" ] && { kill -KILL -- "-$DATA_PID" 2>/dev/null; wait "$DATA_PID" 2>/dev/null; }
SUMMARY=$RES/gpu_check_summary.md
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ) on ${GPU:-no GPU}"
  echo
  echo "- commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $SOFT"
  echo "- phases: ${GPU_CHECK_PHASES:-build,tests,e2e,bench}; budget $BUDGET s (the sum of the caps); $(secs_since "$T_START") s in all"
  echo
  echo "| phase | status | seconds | cap | result |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  if [ "${#NOTES[@]}" -gt 0 ]; then echo; printf -- '- %s\n' "${NOTES[@]}"; fi
  for f in "$LOGS"/e2e_*.md "$LOGS"/conv_embed_cuda.md "$LOGS"/train_step_cuda_*.md "$LOGS"/snico_cuda*.md "$LOGS"/mining_cuda.md; do
    [ -f "$f" ] && { echo; cat "$f"; }
  done
  echo
  echo "Every log, the JUnit XML and the tables: gpu_check_logs.tgz."
} > "$SUMMARY"
cp "$SUMMARY" "$LOGS/"
tar czf "$RES/gpu_check_logs.tgz" -C "$WORK" gpu_check_logs
cat "$SUMMARY"
rm -rf "$WORK"
# the verdict: every selected phase ok
! printf '%s\n' "${ROWS[@]}" | grep -qE '^\| [a-z]+ \| (FAILED|STOPPED) '
