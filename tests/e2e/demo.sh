#!/usr/bin/env bash
# The README demo (configs/demo.yaml): trains, and the eval loss falls below the
# base model's.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sed "s#\.\./shared#$SHARED#g; s#dir: out/demo#dir: $WORK/demo#" "$ROOT/configs/demo.yaml" > "$WORK/demo.yaml"
base=$("$QT" eval "$WORK/demo.yaml" 2>/dev/null | sed -E 's/.*"loss":([^,]+),.*/\1/')
"$QT" "$WORK/demo.yaml" > "$WORK/demo.log" 2>&1 || { cat "$WORK/demo.log"; fail "demo training"; }
evals=$(grep eval_loss "$WORK/demo/metrics.jsonl" | sed -E 's/.*"eval_loss":([^,]+),.*/\1/' | tr '\n' ' ')
last=$(echo "$evals" | awk '{print $NF}')
awk -v a="$last" -v b="$base" 'BEGIN{exit !(a < b)}' || fail "eval loss did not fall: base $base, evals $evals"
[ -f "$WORK/demo/report.html" ] || fail "no report.html"
pass "demo: eval loss $base (base) -> $evals"
