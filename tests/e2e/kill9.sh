#!/usr/bin/env bash
# kill -9 at random instants (also while checkpoints are written), then resume:
# never a checkpoint that loads but is wrong, always the newest complete one,
# and the resumed run's losses equal an uninterrupted run's.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
TRIALS=${KILL9_TRIALS:-20}

base_config "$WORK/ref" > "$WORK/ref.yaml"
sed -i 's/dropout: 0.1/dropout: 0.0/; s/max_steps: 8/max_steps: 12/; s/gradient_accumulation_steps: 4/gradient_accumulation_steps: 1/' "$WORK/ref.yaml"
start=$(date +%s.%N)
"$QT" "$WORK/ref.yaml" --set output.save_steps=1 > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "reference run"; }
dur=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN{print a-b}')
# the kill instants are drawn within the run's duration: time it once more and
# keep the shorter (a first run slowed by a busy machine would put the kills
# after the trials' ends)
start=$(date +%s.%N)
"$QT" "$WORK/ref.yaml" --set output.save_steps=1 --set output.dir="$WORK/ref2" > "$WORK/ref2.log" 2>&1 ||
  { cat "$WORK/ref2.log"; fail "second reference run"; }
dur=$(awk -v a="$(date +%s.%N)" -v b="$start" -v d="$dur" 'BEGIN{t = a - b; print (t < d ? t : d)}')
losses "$WORK/ref/metrics.jsonl" > "$WORK/ref.losses"

RANDOM=12345
total_kills=0
for t in $(seq 1 "$TRIALS"); do
  out="$WORK/t$t"
  sed "s#dir: $WORK/ref#dir: $out#" "$WORK/ref.yaml" > "$WORK/t.yaml"
  kills=0
  # up to 3 kills per trial at random instants within the run's duration
  for k in 1 2 3; do
    "$QT" "$WORK/t.yaml" --set output.save_steps=1 > "$WORK/t$t-$k.log" 2>&1 &
    pid=$!
    frac=$(( RANDOM % 800 ))
    sleep "$(awk -v d="$dur" -v f="$frac" 'BEGIN{printf "%.3f", d*f/1000}')"
    if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
    wait $pid 2>/dev/null || true
    # every checkpoint-* directory that exists must verify: a kill never leaves a partial one
    for d in "$out"/checkpoint-*; do
      [ -d "$d" ] || continue
      [ -f "$d/MANIFEST" ] || fail "trial $t: $d exists without MANIFEST"
      (cd "$d" && tail -n +3 MANIFEST | sha256sum -c --quiet) || fail "trial $t: $d does not match its MANIFEST"
    done
  done
  "$QT" "$WORK/t.yaml" --set output.save_steps=1 > "$WORK/t$t-end.log" 2>&1 || { cat "$WORK/t$t-end.log"; fail "trial $t: resume"; }
  losses "$out/metrics.jsonl" > "$WORK/t$t.losses"
  cmp -s "$WORK/ref.losses" "$WORK/t$t.losses" || { diff "$WORK/ref.losses" "$WORK/t$t.losses" | head; fail "trial $t: losses differ"; }
  total_kills=$((total_kills + kills))
  echo "trial $t: $kills kill(s), resumed to the same 12 losses"
  rm -rf "$out"
done
[ "$total_kills" -ge "$TRIALS" ] || fail "only $total_kills kills landed in $TRIALS trials (the runs ended first)"
pass "$TRIALS kill -9 trials, $total_kills kills, every resume continued from the newest complete checkpoint"
