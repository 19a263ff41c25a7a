#!/usr/bin/env bash
# Stop-and-resume gives bit-identical per-step losses and final state.
# 12 examples, 2 rows per micro-batch, 4 micro-batches per step: epochs end in
# the middle of steps 2, 4 and 5 (mid-accumulation epoch boundaries); runs are
# stopped after steps 1, 2, 4 and 5 and resumed.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"

base_config "$WORK/a" > "$WORK/a.yaml"
"$QT" "$WORK/a.yaml" > "$WORK/a.log" 2>&1 || { cat "$WORK/a.log"; fail "uninterrupted run"; }
[ "$(losses "$WORK/a/metrics.jsonl" | wc -l)" -eq 8 ] || fail "expected 8 steps in run a"

base_config "$WORK/b" > "$WORK/b.yaml"
for k in 1 2 4 5; do
  rc=0
  QLORA_TEST_STOP_AFTER_STEP=$k "$QT" "$WORK/b.yaml" > "$WORK/b$k.log" 2>&1 || rc=$?
  [ $rc -eq 1 ] || { cat "$WORK/b$k.log"; fail "stop after step $k: exit $rc, want 1"; }
  grep -q "stopped by signal" "$WORK/b$k.log" || fail "no stop message after step $k"
  [ -d "$WORK/b/checkpoint-$(printf %06d $k)" ] || fail "no checkpoint at step $k"
done
"$QT" "$WORK/b.yaml" > "$WORK/b-end.log" 2>&1 || { cat "$WORK/b-end.log"; fail "final resume"; }
grep -q "resuming from" "$WORK/b-end.log" || fail "did not resume"

diff <(losses "$WORK/a/metrics.jsonl") <(losses "$WORK/b/metrics.jsonl") > "$WORK/diff.txt" \
  || { cat "$WORK/diff.txt"; fail "per-step losses differ after stop/resume"; }
for f in adapter_model.safetensors optimizer.safetensors; do
  cmp -s "$WORK/a/checkpoint-000008/$f" "$WORK/b/checkpoint-000008/$f" || fail "$f differs at the end"
done
pass "8 steps, stops after 1, 2, 4, 5: losses bit-identical, final adapter and optimizer identical"

# Resuming against changed data is refused, and allowed with the override.
head -n 11 "$SHARED/data/tinystories/train.jsonl" > "$WORK/train12.jsonl"
sed -i 's/max_steps: 8/max_steps: 9/' "$WORK/b.yaml"
rc=0; "$QT" "$WORK/b.yaml" > "$WORK/c.log" 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "training data (data.train) differs" "$WORK/c.log" || { cat "$WORK/c.log"; fail "changed data not refused"; }
"$QT" "$WORK/b.yaml" --set output.allow_resume_mismatch=true > "$WORK/d.log" 2>&1 || { cat "$WORK/d.log"; fail "override"; }
grep -q "resuming anyway" "$WORK/d.log" || fail "no warning with the override"
pass "changed training data refused; allowed with output.allow_resume_mismatch"
