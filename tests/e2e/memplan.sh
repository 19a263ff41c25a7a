#!/usr/bin/env bash
# The memory plan is honest (issue #18): the planned peak printed before step 0
# (process baseline, tokenizer, weights, datasets, adapters, masks, optimizer,
# tape arenas, checkpoint copies; the larger of the load and training phases)
# and the measured peak resident set of the whole run (VmHWM, printed at the
# end, and /usr/bin/time -v's maximum where that exists) differ by at most
# 10% on the demo (configs/demo.yaml: stories260K, evaluation and checkpoints
# included). Linux only (/proc/self/status): elsewhere it skips (77).
# bench/bench_memplan.sh checks the same at 134M and 1B shapes.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -r /proc/self/status ] || { echo "SKIP: no /proc/self/status"; exit 77; }
sed "s#\.\./shared#$SHARED#g; s#dir: out/demo#dir: $WORK/demo#" "$ROOT/configs/demo.yaml" > "$WORK/demo.yaml"
# a few steps with an evaluation and a checkpoint in the middle and at the end
args=("$WORK/demo.yaml" --set training.max_steps=6 --set training.eval_steps=3 --set output.save_steps=3)
TIME=()
[ -x /usr/bin/time ] && /usr/bin/time -v true > /dev/null 2>&1 && TIME=(/usr/bin/time -v -o "$WORK/time.txt")
"${TIME[@]}" "$QT" "${args[@]}" > "$WORK/run.log" 2>&1 || { cat "$WORK/run.log"; fail "demo training"; }
planned=$(sed -nE 's/^  planned peak +([0-9.]+)$/\1/p' "$WORK/run.log")
[ -n "$planned" ] || { cat "$WORK/run.log"; fail "no 'planned peak' line in the memory plan"; }
line=$(grep 'qlora-train: memory: planned peak' "$WORK/run.log") || fail "no end-of-run memory line"
measured=$(echo "$line" | sed -E 's/.*measured peak ([0-9.]+) MiB.*/\1/')
within() { awk -v p="$1" -v m="$2" 'BEGIN{d = m - p; if (d < 0) d = -d; exit !(p > 0 && d <= 0.10 * p)}'; }
within "$planned" "$measured" || fail "planned peak $planned MiB, measured peak (VmHWM) $measured MiB: more than 10% apart"
msg="planned peak $planned MiB, measured $measured MiB (VmHWM)"
if [ -f "$WORK/time.txt" ]; then
  kb=$(sed -nE 's/.*Maximum resident set size \(kbytes\): ([0-9]+).*/\1/p' "$WORK/time.txt")
  ext=$(awk -v k="$kb" 'BEGIN{printf "%.1f", k / 1024}')
  if "$QT" --version | grep -q '^cuda: yes'; then
    # A CUDA build links cuBLASLt, whose library destructors fault in some 30
    # MiB of its pages after the run has ended (perf: page faults in
    # libcublasLt.so at exit): the whole process's maximum is reported, the
    # run's own peak (VmHWM at its end, above) is what is checked.
    msg="$msg, $ext MiB (/usr/bin/time -v, including the CUDA libraries' exit)"
  else
    within "$planned" "$ext" || fail "planned peak $planned MiB, /usr/bin/time -v maximum $ext MiB: more than 10% apart"
    msg="$msg, $ext MiB (/usr/bin/time -v)"
  fi
fi
pass "memory plan: $msg"
