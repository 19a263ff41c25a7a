#!/usr/bin/env bash
# The GPU check, run from a bundle made by tools/gpu_bundle.sh (copied there as
# run.sh). On a machine with an NVIDIA GPU it needs only bash, coreutils, tar,
# gzip, the driver and the CUDA 13 runtime + cuBLAS/cuBLASLt libraries:
#
#   bash run.sh RESULTS_DIR
#
# In this order, each step with its own time limit, a failure stopping nothing:
#   1. environment: GPU, driver, CUDA libraries found, libraries missing;
#   2. every test labelled cuda, cheapest first, with QLORA_CUDA_SYNC=1 (each
#      kernel checked where it is launched); exit 77 (skip) counts as FAILED:
#      a GPU is present, so a skip means the test could not use it;
#   3. the end-to-end comparison: 6 training steps on the GPU vs the CPU; stop
#      + resume on the GPU (bit-identical) and checkpoints resumed across
#      backends (tests/e2e/gpu_resume.sh); then
#      the same GPU run with the gradient reduction through NCCL, one rank
#      (tests/e2e/mpi_nccl1.sh: bit-identical; needs the machine's
#      libnccl.so.2, "not run" without it);
#   4. compute-sanitizer memcheck on each failed test (when installed);
#   5. the GPU benchmarks (bench/*_gpu): their `result:` lines;
#   6. the training benchmark (bench/bench_gpu_train.sh, issue 14 item 10):
#      qlora-train vs transformers + PEFT + bitsandbytes at the Llama-3.2-1B
#      shape, seq 2048, micro-batch 1 and 2, dropout 0.05 and 0: tokens/s,
#      MFU, peak device memory; its `result:` lines and table. Needs python3
#      with torch, transformers, peft (bitsandbytes from the bundle's python/
#      when it was built with BNB_WHEEL). Its own limit: TRAIN_BENCH_S (default
#      240 s; 0 skips it), cut so that the whole run ends TOTAL_S (default
#      570 s) after the start; TRAIN_BENCH_8B=1 adds the Llama-3-8B shape
#      (~9 minutes more: run it alone, TRAIN_BENCH_ONLY=1 skips steps 2-5:
#      TRAIN_BENCH_ONLY=1 TRAIN_BENCH_8B=1 SHAPES=llama3-8b TRAIN_BENCH_S=560).
# About 9.5 minutes at most (DEADLINE_S, default 450 s for steps 2-5; TOTAL_S
# for all). Writes at most 8 files, flat, into RESULTS_DIR: summary.md (the
# table of every step, first), env.txt, tests.log, e2e.log, sanitizer.log,
# bench.log (step 6's output appended), train_bench.jsonl (step 6's raw rows).
# Exit status 0 when everything passed, 1 otherwise.
#
# Without a GPU it is a dry run: it says so, checks that every file and
# library the run needs is present (the CUDA libraries only warn: they come
# from the GPU machine) and that each test program starts and skips, checks
# that python3 (PY) imports torch, transformers and peft and the bundled
# bitsandbytes, and with BENCH_DRY=1 (default) runs the training benchmark's
# --dry-run (a tiny model, training.device cpu, ~1 minute) when they do; exits
# 0 (1 when something is missing).
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: bash run.sh RESULTS_DIR" >&2; exit 2; }
B=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1" || exit 2
R=$(cd "$1" && pwd)
T0=$(date +%s)
DEADLINE=$((T0 + ${DEADLINE_S:-450}))
X=$(mktemp -d "${TMPDIR:-/tmp}/qlora-gpu.XXXXXX")
trap 'rm -rf "$X"' EXIT
tar -C "$X" -xzf "$B/bundle.tar.gz" || { echo "run.sh: cannot unpack $B/bundle.tar.gz" >&2; exit 1; }
: > "$R/env.txt"; : > "$R/tests.log"; : > "$R/e2e.log"; : > "$R/sanitizer.log"; : > "$R/bench.log"
rm -f "$R/train_bench.jsonl"
rows=()
status=0
row() { rows+=("| $1 | $2 | $3 | $4 |"); }
left() { echo $((DEADLINE - $(date +%s))); }
# limit WANT: a step's time limit, cut to what is left before the deadline
limit() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }

# ---- 1. environment and libraries ------------------------------------------------------
find_lib() { # NAME: the directory holding it, from the usual places of a CUDA 13 install
  local d p
  p=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n { print $NF; exit }')
  [ -n "$p" ] && { dirname "$p"; return 0; }
  for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib /usr/local/lib /usr/lib/x86_64-linux-gnu \
           /usr/local/cuda/lib; do
    [ -e "$d/$1" ] && { echo "$d"; return 0; }
  done
  # CUDA from PyPI wheels (nvidia-cublas, nvidia-cuda-runtime), e.g. in a torch virtualenv
  p=$(find / -xdev \( -path /proc -o -path /sys \) -prune -o -name "$1" -print 2>/dev/null | head -n 1)
  [ -n "$p" ] && { dirname "$p"; return 0; }
  return 1
}
libpath="$X/lib"
cuda_missing=()
for n in libcudart.so.13 libcublasLt.so.13 libcublas.so.13; do
  if d=$(find_lib "$n"); then
    case ":$libpath:" in *":$d:"*) ;; *) libpath="$libpath:$d" ;; esac
    echo "found $n in $d" >> "$R/env.txt"
  else
    cuda_missing+=("$n")
    echo "MISSING $n (the CUDA 13 runtime / cuBLAS of the GPU machine)" >> "$R/env.txt"
  fi
done
# NCCL (optional, opened by qlora-train at run time): the machine's own.
if d=$(find_lib libnccl.so.2); then
  case ":$libpath:" in *":$d:"*) ;; *) libpath="$libpath:$d" ;; esac
  echo "found libnccl.so.2 in $d" >> "$R/env.txt"
else
  echo "no libnccl.so.2 (optional: the 1-rank NCCL check is not run)" >> "$R/env.txt"
fi
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The bundle's libstdc++/libgcc_s only where the system has none.
for f in "$X"/bin/*; do ldd "$f" 2>/dev/null; done | grep -q 'libstdc++.so.6 => not found' \
  && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$X/lib/compat"
missing=$(for f in "$X"/bin/*; do ldd "$f" 2>/dev/null | awk -v f="$(basename "$f")" '/not found/ { print f ": " $1 }'; done | sort -u)
other_missing=$(grep -vE ': (libcudart|libcublas|libcublasLt)\.so' <<< "$missing" | grep . || true)
gpu=""
if command -v nvidia-smi > /dev/null 2>&1; then gpu=$(nvidia-smi -L 2>/dev/null | grep -E '^GPU [0-9]+' || true); fi
{
  echo "== bundle"; head -n 5 "$X/MANIFEST"
  echo "== host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(ldd --version 2>&1 | head -n 1)"
  echo "== GPU"; [ -n "$gpu" ] && echo "$gpu" || echo "none (nvidia-smi: $(command -v nvidia-smi || echo 'not installed'))"
  [ -n "$gpu" ] && nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap,clocks.sm,clocks.max.sm --format=csv 2>&1
  [ -n "$gpu" ] && nvidia-smi 2>&1 | head -n 12
  echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "== libraries not found"; [ -n "$missing" ] && echo "$missing" || echo "none"
  echo "== compute-sanitizer: $(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo 'not found')"
} >> "$R/env.txt" 2>&1
env_note="GPU: ${gpu:-none}; libraries missing: $( [ -n "$missing" ] && echo "$missing" | tr '\n' ' ' || echo none)"
row "environment" "$( [ -z "$other_missing" ] && echo ok || echo FAILED)" "$(( $(date +%s) - T0 ))" "$env_note"
[ -z "$other_missing" ] || status=1

# Every test program, cheapest first; any cuda test not in this list runs after them.
order=(test_cuda_check test_half_cuda test_philox_cuda test_dist_cuda test_quant_cuda test_optim_adamw_cuda
       test_ops_cuda_parity test_ops_cuda_more test_model_cuda)
tests=()
for t in "${order[@]}"; do [ -x "$X/bin/$t" ] && tests+=("$t"); done
for f in "$X"/bin/test_*; do
  t=$(basename "$f")
  [[ " ${tests[*]} " == *" $t "* ]] || tests+=("$t")
done
export QLORA_SHARED_DIR="$X/shared" QLORA_TEST_DIR="$X/tests" OMP_WAIT_POLICY=passive

# ---- python for step 6: torch, transformers, peft; bitsandbytes from the bundle -----------
PY=${PY:-python3}
[ -d "$X/python" ] && export PYTHONPATH="$X/python${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
py_ok=0
py_note=$("$PY" -c 'import sys, torch, transformers, peft, tokenizers, safetensors
print("%s: torch %s (CUDA %s), transformers %s, peft %s" % (sys.executable, torch.__version__, torch.version.cuda,
      transformers.__version__, peft.__version__))' 2> "$X/py.err" | tail -n 1) && py_ok=1
[ "$py_ok" = 1 ] || py_note="$PY cannot import torch, transformers, peft, tokenizers, safetensors: $(grep . "$X/py.err" | tail -n 1 | cut -c1-160)"
bnb_note=$("$PY" -c 'import os, bitsandbytes as b; print("bitsandbytes %s from %s" % (b.__version__, os.path.dirname(os.path.dirname(b.__file__))))' \
           2> "$X/bnb.err" | tail -n 1) ||
  bnb_note="bitsandbytes not importable: $(grep . "$X/bnb.err" | tail -n 1 | cut -c1-160)"
{ echo "== python (training benchmark)"; echo "$py_note"; echo "$bnb_note"; } >> "$R/env.txt"
# step 6, or its dry run: ARGS... for bench_gpu_train.sh; LIMIT; NAME
train_bench() {
  local lim=$1 name=$2 s rc nres
  shift 2
  s=$(date +%s)
  echo "===== bench_gpu_train.sh $* (limit $lim s)" >> "$R/bench.log"
  BUDGET_TOTAL_S=$((lim - 15)) PY="$PY" timeout "$lim" bash "$X/bench/bench_gpu_train.sh" "$@" "$X/bin/qlora-train" "$X/shared" "$X/train-bench" \
    > "$X/train-bench.out" 2>&1
  rc=$?
  cat "$X/train-bench.out" >> "$R/bench.log"
  [ -f "$X/train-bench/rows.jsonl" ] && cp "$X/train-bench/rows.jsonl" "$R/train_bench.jsonl"
  [ -f "$X/train-bench/table.md" ] && cp "$X/train-bench/table.md" "$X/train-table.md"
  nres=$(grep -c '^result: bench=train_gpu' "$X/train-bench.out")
  case $rc in 0) res=ok ;; 124) res="TIMEOUT ($lim s)" ;; *) res="FAILED (exit $rc)" ;; esac
  [ $rc -eq 0 ] || status=1
  row "$name" "$res" "$(( $(date +%s) - s ))" \
      "$([ "$nres" -gt 0 ] && echo "$nres result lines (below); $bnb_note" || grep . "$X/train-bench.out" | tail -n 1 | cut -c1-160)"
}

if [ -z "$gpu" ]; then
  # ---- dry run ------------------------------------------------------------------------
  # dry_start PROGRAM LOG ZERO_OK: PROGRAM must start and skip (77); exit 0 is
  # also fine when ZERO_OK is 1 (a test whose checks need no GPU).
  dry_start() {
    local name s rc
    name=$(basename "$1")
    s=$(date +%s)
    timeout 60 "$1" > "$X/$name.out" 2>&1
    rc=$?
    cat "$X/$name.out" >> "$2"
    if [ ${#cuda_missing[@]} -gt 0 ]; then
      row "$name" "not run" 0 "CUDA libraries missing here"
    elif [ $rc -eq 77 ]; then
      row "$name" "starts, skips (no GPU)" "$(( $(date +%s) - s ))" ""
    elif [ $rc -eq 0 ] && [ "$3" = 1 ]; then
      row "$name" "passes (its checks need no GPU)" "$(( $(date +%s) - s ))" ""
    else
      row "$name" "FAILED (exit $rc without a GPU, want 77)" "$(( $(date +%s) - s ))" "$(tail -n 1 "$X/$name.out")"
      status=1
    fi
  }
  for t in "${tests[@]}"; do dry_start "$X/bin/$t" "$R/tests.log" 1; done
  # the 1-rank NCCL check starts and skips (77: no GPU)
  s=$(date +%s)
  timeout 60 bash "$X/tests/e2e/mpi_nccl1.sh" "$X/bin/qlora-train" "$X/shared" "$X/e2e-nccl" > "$X/nccl.out" 2>&1
  rc=$?
  cat "$X/nccl.out" >> "$R/e2e.log"
  if [ $rc -eq 77 ]; then row "e2e_mpi_nccl1" "starts, skips (no GPU)" "$(( $(date +%s) - s ))" ""
  else row "e2e_mpi_nccl1" "FAILED (exit $rc without a GPU, want 77)" "$(( $(date +%s) - s ))" "$(tail -n 1 "$X/nccl.out")"; status=1; fi
  # the GPU resume check starts and skips (77: no GPU)
  s=$(date +%s)
  timeout 60 bash "$X/tests/e2e/gpu_resume.sh" "$X/bin/qlora-train" "$X/shared" "$X/e2e-resume" > "$X/resume.out" 2>&1
  rc=$?
  cat "$X/resume.out" >> "$R/e2e.log"
  if [ $rc -eq 77 ]; then row "e2e_gpu_resume" "starts, skips (no GPU)" "$(( $(date +%s) - s ))" ""
  else row "e2e_gpu_resume" "FAILED (exit $rc without a GPU, want 77)" "$(( $(date +%s) - s ))" "$(tail -n 1 "$X/resume.out")"; status=1; fi
  for f in tests/e2e/gpu_vs_cpu.sh tests/e2e/gpu_resume.sh tests/e2e/mpi_nccl1.sh tests/e2e/lib.sh shared/data/stories260K/config.json shared/data/tinystories/train.jsonl \
           bin/qlora-train; do
    [ -e "$X/$f" ] || { row "$f" "MISSING" 0 ""; status=1; }
  done
  n_bench=0
  for f in "$X"/bin/*_gpu; do
    [ -x "$f" ] || continue
    n_bench=$((n_bench + 1))
    dry_start "$f" "$R/bench.log" 0
  done
  [ "$n_bench" -gt 0 ] || { row "benchmarks" "MISSING" 0 "no bin/*_gpu in the bundle"; status=1; }
  # the training benchmark: its files; python3's packages (a CPU machine may lack them: a note, not a failure)
  for f in bench/bench_gpu_train.sh bench/bench_train_hf.py bench/make_random_llama.py \
           shared/data/tokenizers/llama3/tokenizer.json; do
    [ -e "$X/$f" ] || { row "$f" "MISSING" 0 ""; status=1; }
  done
  if [ "$py_ok" = 1 ] && [ "${BENCH_DRY:-1}" = 1 ] && [ ${#cuda_missing[@]} -eq 0 ]; then
    train_bench 240 "bench_gpu_train.sh --dry-run (CPU, tiny model)" --dry-run
  else
    row "bench_gpu_train.sh" "not run" 0 "$py_note; $bnb_note$( [ ${#cuda_missing[@]} -gt 0 ] && echo "; CUDA libraries missing here")"
  fi
  title="dry run: no GPU on this machine; files and libraries checked, nothing measured"
else
  if [ "${TRAIN_BENCH_ONLY:-0}" = 1 ]; then
  row "steps 2-5 (tests, e2e, memcheck, bench/*_gpu)" "not run" 0 "TRAIN_BENCH_ONLY=1"
  else
  # ---- 2. the cuda tests ----------------------------------------------------------------
  failed_tests=()
  for t in "${tests[@]}"; do
    want=60
    case $t in test_ops_cuda_more|test_model_cuda|test_optim_adamw_cuda) want=120 ;; esac
    lim=$(limit $want)
    if [ "$lim" -le 5 ]; then row "$t" "NOT RUN (out of time)" 0 ""; status=1; continue; fi
    s=$(date +%s)
    echo "===== $t (limit $lim s)" >> "$R/tests.log"
    QLORA_CUDA_SYNC=1 timeout "$lim" "$X/bin/$t" > "$X/$t.out" 2>&1
    rc=$?
    cat "$X/$t.out" >> "$R/tests.log"
    worst=$(grep -iE 'worst|max.*err|rel err|nmse' "$X/$t.out" | tail -n 1 | cut -c1-120)
    case $rc in
      0) res=PASSED ;;
      77) res="FAILED (skipped although a GPU is present)" ;;
      124) res="TIMEOUT ($lim s)" ;;
      *) res="FAILED (exit $rc)" ;;
    esac
    if [ $rc -ne 0 ]; then
      status=1
      # memcheck only where a kernel may have run wrong (not where CUDA did not start)
      [ $rc -ne 77 ] && failed_tests+=("$t")
      worst="$worst $(grep -m1 -E 'ERROR|FAIL|failed|skipped' "$X/$t.out" | cut -c1-160)"
    fi
    row "$t" "$res" "$(( $(date +%s) - s ))" "$worst"
  done
  # ---- 3. GPU vs CPU training --------------------------------------------------------------
  lim=$(limit 180)
  s=$(date +%s)
  timeout "$lim" bash "$X/tests/e2e/gpu_vs_cpu.sh" "$X/bin/qlora-train" "$X/shared" "$X/e2e" > "$R/e2e.log" 2>&1
  rc=$?
  case $rc in 0) res=PASSED ;; 77) res="FAILED (skipped)" ;; 124) res="TIMEOUT" ;; *) res="FAILED (exit $rc)" ;; esac
  [ $rc -eq 0 ] || status=1
  row "e2e_gpu_vs_cpu" "$res" "$(( $(date +%s) - s ))" "$(grep -E '^worst' "$R/e2e.log" | tail -n 1)"
  # stop + resume on the GPU (bit-identical) and checkpoints across backends
  lim=$(limit 120)
  s=$(date +%s)
  echo "===== gpu_resume.sh (limit $lim s)" >> "$R/e2e.log"
  timeout "$lim" bash "$X/tests/e2e/gpu_resume.sh" "$X/bin/qlora-train" "$X/shared" "$X/e2e-resume" > "$X/resume.out" 2>&1
  rc=$?
  cat "$X/resume.out" >> "$R/e2e.log"
  case $rc in 0) res=PASSED ;; 77) res="FAILED (skipped)" ;; 124) res="TIMEOUT" ;; *) res="FAILED (exit $rc)" ;; esac
  [ $rc -eq 0 ] || status=1
  row "e2e_gpu_resume" "$res" "$(( $(date +%s) - s ))" "$(grep -E '^(worst|FAIL)' "$X/resume.out" | tail -n 1)"
  # 1 rank with the NCCL reduction == the plain GPU run (bit for bit)
  lim=$(limit 120)
  s=$(date +%s)
  echo "===== mpi_nccl1.sh (limit $lim s)" >> "$R/e2e.log"
  timeout "$lim" bash "$X/tests/e2e/mpi_nccl1.sh" "$X/bin/qlora-train" "$X/shared" "$X/e2e-nccl" > "$X/nccl.out" 2>&1
  rc=$?
  cat "$X/nccl.out" >> "$R/e2e.log"
  case $rc in
    0) res=PASSED ;;
    77) res="not run" ;; # no libnccl.so.2 on this machine: said in the note, not a failure of ours
    124) res="TIMEOUT"; status=1 ;;
    *) res="FAILED (exit $rc)"; status=1 ;;
  esac
  row "e2e_mpi_nccl1" "$res" "$(( $(date +%s) - s ))" "$(grep -E '^(PASS|FAIL|SKIP|note)' "$X/nccl.out" | tr '\n' ' ' | cut -c1-200)"
  # ---- 4. compute-sanitizer on what failed -----------------------------------------------
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ ${#failed_tests[@]} -gt 0 ] && [ -z "$cs" ]; then
    row "memcheck" "not run" 0 "compute-sanitizer not installed; failed: ${failed_tests[*]}"
    failed_tests=()
  fi
  for t in "${failed_tests[@]}"; do
    lim=$(limit 90)
    [ "$lim" -gt 20 ] || { row "memcheck $t" "not run" 0 "out of time"; continue; }
    s=$(date +%s)
    echo "===== compute-sanitizer --tool memcheck $t" >> "$R/sanitizer.log"
    timeout "$lim" "$cs" --tool memcheck --print-limit 20 "$X/bin/$t" >> "$R/sanitizer.log" 2>&1
    row "memcheck $t" "exit $?" "$(( $(date +%s) - s ))" "$(grep -m1 -E 'Invalid|ERROR SUMMARY' "$R/sanitizer.log" | cut -c1-120)"
  done
  # ---- 5. benchmarks --------------------------------------------------------------------------
  for f in "$X"/bin/*_gpu; do
    [ -x "$f" ] || continue
    b=$(basename "$f")
    lim=$(limit 150)
    [ "$lim" -gt 10 ] || { row "$b" "NOT RUN (out of time)" 0 ""; status=1; continue; }
    s=$(date +%s)
    echo "===== $b (limit $lim s)" >> "$R/bench.log"
    (cd "$X" && timeout "$lim" "$f") > "$X/$b.out" 2>&1
    rc=$?
    cat "$X/$b.out" >> "$R/bench.log"
    [ $rc -eq 0 ] || status=1
    nres=$(grep -c '^result:' "$X/$b.out")
    row "$b" "$([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)")" "$(( $(date +%s) - s ))" \
        "$([ "$nres" -gt 0 ] && echo "$nres result lines (below)" || tail -n 1 "$X/$b.out" | cut -c1-160)"
  done
  fi # TRAIN_BENCH_ONLY
  # ---- 6. the training benchmark (issue 14 item 10) --------------------------------------
  want=${TRAIN_BENCH_S:-240}
  total_left=$((T0 + ${TOTAL_S:-570} - $(date +%s)))
  [ "$total_left" -lt "$want" ] && want=$total_left
  big=(); [ "${TRAIN_BENCH_8B:-0}" = 1 ] && big=(--8b)
  if [ "${TRAIN_BENCH_S:-240}" = 0 ]; then
    row "bench_gpu_train.sh" "not run" 0 "TRAIN_BENCH_S=0"
  elif [ "$py_ok" != 1 ]; then
    row "bench_gpu_train.sh" "NOT RUN" 0 "$py_note"; status=1
  elif [ "$want" -lt 60 ]; then
    row "bench_gpu_train.sh" "NOT RUN (out of time)" 0 "$want s left of TOTAL_S ${TOTAL_S:-570}"; status=1
  else
    train_bench "$want" "bench_gpu_train.sh${big:+ --8b}" ${big[@]+"${big[@]}"}
  fi
  title="GPU run: ${gpu%% (*}"
fi

{
  echo "# qlora-train GPU check: $( [ $status -eq 0 ] && echo PASSED || echo FAILED )"
  echo
  echo "$title; $(head -n 1 "$X/MANIFEST"); $(( $(date +%s) - T0 )) s in all"
  echo
  echo "| step | result | s | worst error / figures |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  if grep -q '^result:' "$R/bench.log"; then
    echo
    echo "## benchmark results"
    echo '```'
    grep -E '^result:' "$R/bench.log" || true
    echo '```'
  fi
  if [ -s "$X/train-table.md" ]; then
    echo
    echo "## training benchmark (bench_gpu_train.sh)"
    echo
    grep -E '^bench_gpu_train.sh: .*(DRY RUN|GPU|NVIDIA)' "$X/train-bench.out" | tail -n 1
    echo
    cat "$X/train-table.md"
  fi
  echo
  echo "files: env.txt (GPU, driver, libraries, python), tests.log, e2e.log, sanitizer.log, bench.log, train_bench.jsonl"
} > "$R/summary.md"
cat "$R/summary.md"
exit $status
