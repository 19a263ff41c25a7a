#!/usr/bin/env bash
# A non-finite gradient skips the step (adapter and optimizer state untouched,
# schedule not advanced) and is counted; too many in a row stop the run with
# exit 1 and a message.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
base_config "$WORK/o" > "$WORK/n.yaml"
sed -i 's/max_steps: 8/max_steps: 5/; s/warmup_steps: 2/warmup_steps: 0/' "$WORK/n.yaml"
QLORA_TEST_NAN_STEPS=3 "$QT" "$WORK/n.yaml" --set output.save_steps=1 --set output.save_total_limit=0 > "$WORK/n.log" 2>&1 || { cat "$WORK/n.log"; fail "run with one NaN step"; }
grep -q "step 3: non-finite loss or gradients" "$WORK/n.log" || fail "no warning for step 3"
grep '"step":3,' "$WORK/o/metrics.jsonl" | grep -q '"skipped":true' || fail "step 3 not marked skipped"
[ "$(grep -c '"skipped":true' "$WORK/o/metrics.jsonl")" -eq 1 ] || fail "more than one skipped step"
for f in adapter_model.safetensors optimizer.safetensors; do
  cmp -s "$WORK/o/checkpoint-000002/$f" "$WORK/o/checkpoint-000003/$f" || fail "$f changed by the skipped step 3"
done
! cmp -s "$WORK/o/checkpoint-000003/adapter_model.safetensors" "$WORK/o/checkpoint-000004/adapter_model.safetensors" \
  || fail "step 4 did not update the adapter"
lr3=$(grep '"step":3,' "$WORK/o/metrics.jsonl" | sed -E 's/.*"lr":([^,]+),.*/\1/')
lr4=$(grep '"step":4,' "$WORK/o/metrics.jsonl" | sed -E 's/.*"lr":([^,]+),.*/\1/')
[ "$lr3" = "$lr4" ] || fail "the schedule advanced over the skipped step ($lr3 then $lr4)"
pass "a NaN step is skipped with state and schedule untouched"
rc=0
QLORA_TEST_NAN_STEPS=2-5 "$QT" "$WORK/n.yaml" --set output.dir="$WORK/p" > "$WORK/p.log" 2>&1 || rc=$?
[ $rc -eq 1 ] || { cat "$WORK/p.log"; fail "exit $rc after 4 NaN steps in a row, want 1"; }
grep -q "numeric error" "$WORK/p.log" || { cat "$WORK/p.log"; fail "no numeric error message"; }
pass "4 non-finite steps in a row (limit 3) stop the run: $(grep 'numeric error' "$WORK/p.log" | head -1)"
grep '"step":3,' "$WORK/o/metrics.jsonl" | grep -q '"grad_norm":null' || fail "a NaN norm must be written as null (JSON has no NaN)"
