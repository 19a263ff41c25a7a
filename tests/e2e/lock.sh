#!/usr/bin/env bash
# One writer per output directory: a second `qlora-train CONFIG` (or an export
# into the directory) while a run holds output.dir exits 1 at once with a
# message naming the holder's pid; the first run's checkpoints and metrics are
# intact; a run killed with SIGKILL leaves no stale lock; eval only reads and
# needs no lock.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
base_config "$WORK/o" > "$WORK/c.yaml"
# Long enough (200 steps) that the second start always meets the first running.
sed -i 's/max_steps: 8/max_steps: 200/; s/gradient_accumulation_steps: 4/gradient_accumulation_steps: 1/' "$WORK/c.yaml"
"$QT" "$WORK/c.yaml" --set output.save_steps=5 --set output.save_total_limit=2 > "$WORK/a.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do [ -s "$WORK/o/qlora-train.lock" ] && break; sleep 0.05; done
[ -s "$WORK/o/qlora-train.lock" ] || fail "the first run did not take the lock"
t0=$(date +%s)
rc=0
"$QT" "$WORK/c.yaml" --set output.save_steps=5 > "$WORK/b.log" 2>&1 || rc=$?
kill -0 $pid 2>/dev/null || { cat "$WORK/a.log"; fail "the first run ended before the second started; make it longer"; }
[ $rc -eq 1 ] || { cat "$WORK/b.log"; fail "second run on the same output.dir: exit $rc, want 1"; }
grep -q "output.dir $WORK/o is in use by another qlora-train (pid $pid); use another output.dir or wait" "$WORK/b.log" \
  || { cat "$WORK/b.log"; fail "second run: message"; }
[ $(( $(date +%s) - t0 )) -le 5 ] || fail "the second run was not refused at once"
pass "second run refused: $(grep 'in use' "$WORK/b.log")"
rc=0
"$QT" export "$WORK/c.yaml" > "$WORK/x.log" 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "is in use by another qlora-train (pid $pid)" "$WORK/x.log" \
  || { cat "$WORK/x.log"; fail "export into the busy output.dir: exit $rc, want 1 with the message"; }
pass "export into the busy output.dir refused"
wait $pid || { cat "$WORK/a.log"; fail "the first run failed"; }
n=$(grep -c '"loss"' "$WORK/o/metrics.jsonl")
[ "$n" -eq 200 ] || fail "metrics.jsonl has $n training lines for 200 steps"
[ "$(losses "$WORK/o/metrics.jsonl" | cut -d' ' -f1 | sort -n | uniq | wc -l)" -eq 200 ] || fail "duplicate steps in metrics.jsonl"
[ "$(cat "$WORK/o/latest")" = checkpoint-000200 ] || fail "latest is $(cat "$WORK/o/latest")"
for d in "$WORK"/o/checkpoint-*; do
  (cd "$d" && tail -n +3 MANIFEST | sha256sum -c --quiet) || fail "$d does not match its MANIFEST"
done
pass "the first run's 200 metrics lines and checkpoints are intact"
# eval and generate only read: they run beside a training run.
"$QT" "$WORK/c.yaml" --set output.dir="$WORK/k" --set training.max_steps=100000 > "$WORK/k.log" 2>&1 &
kpid=$!
for _ in $(seq 1 300); do [ -s "$WORK/k/qlora-train.lock" ] && break; sleep 0.05; done
"$QT" eval "$WORK/c.yaml" --set output.dir="$WORK/k" > "$WORK/e.json" 2> "$WORK/e.log" || { cat "$WORK/e.log"; fail "eval beside a run"; }
kill -9 $kpid
wait $kpid 2>/dev/null || true
# After kill -9 the lock file stays, but the kernel released the lock.
[ -e "$WORK/k/qlora-train.lock" ] || fail "lock file missing"
"$QT" "$WORK/c.yaml" --set output.dir="$WORK/k" --set output.resume=never --set training.max_steps=2 > "$WORK/k2.log" 2>&1 \
  || { cat "$WORK/k2.log"; fail "a run after kill -9 of the holder"; }
pass "eval runs beside a training run; kill -9 leaves no stale lock"
