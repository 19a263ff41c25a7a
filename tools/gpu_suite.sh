#!/usr/bin/env bash
# The whole GPU suite in one command, for a machine with an NVIDIA GPU:
#
#   tools/gpu_suite.sh OUTDIR
#
#  1. detects the GPU with nvidia-smi; without one it says so and exits 0
#     without building anything;
#  2. configures $BUILD_DIR (default build-gpu) with -DQLORA_CUDA=ON
#     -DCMAKE_CUDA_ARCHITECTURES=native and builds everything;
#  3. runs every test labelled `cuda` (ctest -L cuda);
#  4. runs the GPU benchmarks: by convention every executable in the build tree
#     under bench/ whose name ends in `_gpu` (e.g. build-gpu/bench/matmul_gpu),
#     one after another, each with no arguments. A benchmark prints whatever it
#     likes; lines starting with `result:` are copied into the summary (if it
#     prints none, its last line is).
#  5. writes everything (GPU description, commit, configure, build, test and
#     benchmark output) to OUTDIR/gpu_suite.log and prints a summary table last:
#     test name, result, seconds; then benchmark name, exit status, seconds and
#     its result lines. The summary is also saved as OUTDIR/gpu_suite_summary.txt.
#
# Exit status: 0 when every step passed (or there is no GPU), 1 when the build
# or a cuda test or a benchmark failed, 2 on usage errors. A test that skips
# (exit 77) on a machine with a GPU is listed as SKIPPED and warned about.
#
# Environment: BUILD_DIR (build-gpu), JOBS (nproc), CMAKE_ARGS (extra configure
# arguments), CTEST_ARGS (extra ctest arguments, e.g. "-R philox"),
# CUDA_HOME (/usr/local/cuda, added to PATH when nvcc is not on it).
set -uo pipefail

usage() { echo "usage: tools/gpu_suite.sh OUTDIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
case "$1" in -h|--help) echo "usage: tools/gpu_suite.sh OUTDIR  (see the comment at the top of this script)"; exit 0 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=$1
mkdir -p "$OUTDIR" || { echo "gpu_suite: cannot create $OUTDIR" >&2; exit 2; }
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/gpu_suite.log
SUMMARY=$OUTDIR/gpu_suite_summary.txt
BUILD_DIR=${BUILD_DIR:-build-gpu}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
: > "$LOG"

log() { echo "$@" | tee -a "$LOG"; }
section() { log ""; log "== $*  ($(date -u +%Y-%m-%dT%H:%M:%SZ))"; }

# ---- 1. GPU? ------------------------------------------------------------------
gpus=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>>"$LOG" | grep -E '^GPU [0-9]+' || true)
fi
if [ -z "$gpus" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    why="nvidia-smi found no GPU"
  else
    why="nvidia-smi is not installed"
  fi
  log "gpu_suite: no NVIDIA GPU on this machine ($why); nothing was built or run."
  log "gpu_suite: run this script on a machine with a GPU to execute the cuda tests and GPU benchmarks."
  exit 0
fi

section "GPU"
log "$gpus"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv >>"$LOG" 2>&1 || true
if commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (with local changes)"
else
  commit="unknown (not a git checkout)"
fi
log "commit: $commit"
log "host: $(uname -n), $(nproc) cores; build dir: $BUILD_DIR"

if ! command -v nvcc >/dev/null 2>&1; then
  export PATH=${CUDA_HOME:-/usr/local/cuda}/bin:$PATH
fi

status=0
declare -a rows=()

# ---- 2. configure + build -------------------------------------------------------
section "configure"
# shellcheck disable=SC2086
if ! cmake -S "$ROOT" -B "$BUILD_DIR" -DQLORA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native \
     -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-} >>"$LOG" 2>&1; then
  log "gpu_suite: configure FAILED (see $LOG)"
  tail -n 30 "$LOG"
  exit 1
fi
section "build (-j$JOBS)"
t0=$(date +%s)
if ! cmake --build "$BUILD_DIR" -j"$JOBS" >>"$LOG" 2>&1; then
  log "gpu_suite: build FAILED (see $LOG)"
  grep -E 'error' "$LOG" | head -n 30
  exit 1
fi
log "build: $(( $(date +%s) - t0 )) s"

# ---- 3. cuda tests ---------------------------------------------------------------
section "ctest -L cuda"
ctest_out=$OUTDIR/ctest_cuda.txt
# shellcheck disable=SC2086
ctest --test-dir "$BUILD_DIR" -L cuda --output-on-failure ${CTEST_ARGS:-} >"$ctest_out" 2>&1
ctest_rc=$?
cat "$ctest_out" >>"$LOG"
# ctest lines look like: "  3/12 Test  #7: test_philox_cuda ....   Passed    0.52 sec"
#                   or:  "  4/12 Test  #8: test_x ....***Failed    1.20 sec" / "***Skipped" / "***Timeout"
n_tests=0; n_fail=0; n_skip=0
while IFS= read -r line; do
  name=$(sed -E 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: ([^ ]+) .*/\1/' <<<"$line")
  secs=$(sed -E 's/.* ([0-9.]+) sec.*/\1/' <<<"$line")
  case "$line" in
    *Passed*) result=PASSED ;;
    *Skipped*|*"Not Run"*) result=SKIPPED; n_skip=$((n_skip + 1)) ;;
    *Timeout*) result=TIMEOUT; n_fail=$((n_fail + 1)) ;;
    *) result=FAILED; n_fail=$((n_fail + 1)) ;;
  esac
  n_tests=$((n_tests + 1))
  rows+=("$(printf '%-44s %-8s %9s' "$name" "$result" "$secs")")
done < <(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$ctest_out")
if [ "$ctest_rc" -ne 0 ] || [ "$n_fail" -ne 0 ]; then status=1; fi
if [ "$n_tests" -eq 0 ]; then
  log "gpu_suite: no test carries the label cuda (is the CUDA backend enabled?)"
  grep -q "No tests were found" "$ctest_out" || status=1
fi

# ---- 4. GPU benchmarks -------------------------------------------------------------
section "GPU benchmarks (executables bench/**/*_gpu)"
declare -a bench_rows=()
mapfile -t benches < <(find "$BUILD_DIR/bench" -type f -name '*_gpu' -perm -u+x 2>/dev/null | sort)
if [ "${#benches[@]}" -eq 0 ]; then
  log "no GPU benchmarks built (none named bench/*_gpu yet)"
fi
for b in "${benches[@]}"; do
  name=$(basename "$b")
  out=$OUTDIR/$name.txt
  log "-- $name"
  t0=$(date +%s.%N)
  (cd "$BUILD_DIR" && "$b") >"$out" 2>&1
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  cat "$out" >>"$LOG"
  if [ "$rc" -ne 0 ]; then status=1; result="FAILED($rc)"; else result=ok; fi
  bench_rows+=("$(printf '%-44s %-8s %9s' "$name" "$result" "$secs")")
  results=$(grep -E '^result:' "$out" || true)
  [ -n "$results" ] || results=$(tail -n 1 "$out")
  while IFS= read -r r; do [ -n "$r" ] && bench_rows+=("    $r"); done <<<"$results"
done

# ---- 5. summary ---------------------------------------------------------------------
{
  echo ""
  echo "==================== GPU suite summary ===================="
  echo "$gpus"
  printf '%-44s %-8s %9s\n' "test (ctest -L cuda)" "result" "seconds"
  for r in "${rows[@]}"; do echo "$r"; done
  echo "tests: $n_tests, failed: $n_fail, skipped: $n_skip"
  if [ "$n_skip" -gt 0 ]; then
    echo "WARNING: $n_skip cuda test(s) skipped although a GPU is present; see $LOG"
  fi
  if [ "${#benches[@]}" -gt 0 ]; then
    printf '%-44s %-8s %9s\n' "benchmark" "exit" "seconds"
    for r in "${bench_rows[@]}"; do echo "$r"; done
  else
    echo "benchmarks: none built (bench/*_gpu)"
  fi
  echo "full log: $LOG"
  if [ "$status" -eq 0 ]; then echo "GPU suite: PASSED"; else echo "GPU suite: FAILED"; fi
} > "$SUMMARY"
cat "$SUMMARY" >> "$LOG"
cat "$SUMMARY"
exit "$status"
