#!/usr/bin/env bash
# kill -9 of one rank of a 2-rank run: the launcher takes the job down (exit
# non-zero within 60 s), every checkpoint-* directory left verifies against
# its MANIFEST (rank 0 may have been killed while writing one), and a 2-rank
# resume from the newest continues to the same losses as a run never killed.
# Rank 1 is killed in the first trial, rank 0 (the writer) in the second.
# First: an error on one rank alone (rank 1's data file is missing) ends the
# job through MPI_Abort with a message naming the rank, while rank 0 waits in
# a collective; and a rank that hangs while alive ends it through the
# watchdog.
# Usage: mpi_kill9.sh QT SHARED WORK MPIEXEC
set -euo pipefail
source "$(dirname "$0")/mpi_lib.sh" "$@"

cfg() {
  base_config "$1" | sed 's/dropout: 0.1/dropout: 0.0/; s/max_steps: 8/max_steps: 40/; s/gradient_accumulation_steps: 4/gradient_accumulation_steps: 1/'
}
cfg "$WORK/ref" > "$WORK/ref.yaml"

cfg "$WORK/e" > "$WORK/e0.yaml"
sed "s#train: .*#train: $WORK/missing.jsonl#" "$WORK/e0.yaml" > "$WORK/e1.yaml"
t0=$(date +%s); rc=0
timeout 120 "$MPIEXEC" --oversubscribe -np 1 "$QT" "$WORK/e0.yaml" : -np 1 "$QT" "$WORK/e1.yaml" > "$WORK/e.log" 2>&1 || rc=$?
dt=$(( $(date +%s) - t0 ))
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { cat "$WORK/e.log"; fail "error on rank 1: exit $rc (124: the job hung)"; }
grep -q "qlora-train (rank 1 of 2): .*missing.jsonl" "$WORK/e.log" || { cat "$WORK/e.log"; fail "the error does not name rank 1 and the file"; }
grep -q "rank 1 of 2 failed" "$WORK/e.log" || { cat "$WORK/e.log"; fail "no abort message naming rank 1"; }
[ $dt -le 60 ] || fail "error on rank 1: the job took $dt s to end"
pass "error on rank 1 alone: job aborted in $dt s (exit $rc), the message names rank 1 and the file"

# A rank that hangs while alive (rank 1 sleeps 10 minutes after its first
# step; the test hook): the watchdog (QLORA_DIST_TIMEOUT_S) ends it, and the
# launcher the job.
cfg "$WORK/h" > "$WORK/h.yaml"
t0=$(date +%s); rc=0
timeout 120 "$MPIEXEC" --oversubscribe -x QLORA_DIST_TIMEOUT_S=3 -np 1 "$QT" "$WORK/h.yaml" \
  : -np 1 env QLORA_TEST_STEP_DELAY_MS=600000 "$QT" "$WORK/h.yaml" > "$WORK/h.log" 2>&1 || rc=$?
dt=$(( $(date +%s) - t0 ))
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { cat "$WORK/h.log"; fail "hung rank 1: exit $rc (124: the job hung)"; }
grep -q "no training progress for [0-9]* s (QLORA_DIST_TIMEOUT_S=3)" "$WORK/h.log" || { cat "$WORK/h.log"; fail "no watchdog message"; }
[ $dt -le 60 ] || fail "hung rank 1: the job took $dt s to end"
pass "a rank that hangs: the watchdog ended the job in $dt s (exit $rc)"

mpi 2 "$WORK/ref.yaml" --set output.save_steps=1 > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "reference run"; }

# pid of rank $2 among the children of mpirun $1
rank_pid() {
  local c
  for c in $(pgrep -P "$1"); do
    if tr '\0' '\n' < "/proc/$c/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$c"; return; fi
  done
}

for victim in 1 0; do
  out="$WORK/t$victim"
  cfg "$out" > "$WORK/t.yaml"
  # 100 ms after each step (test hook): the kill lands mid-run on a fast machine too
  QLORA_TEST_STEP_DELAY_MS=100 "$MPIEXEC" --oversubscribe -np 2 "$QT" "$WORK/t.yaml" --set output.save_steps=1 \
    > "$WORK/t$victim.log" 2>&1 &
  mpid=$!
  for _ in $(seq 1 1200); do
    [ -f "$out/checkpoint-000003/MANIFEST" ] && break
    sleep 0.05
  done
  [ -f "$out/checkpoint-000003/MANIFEST" ] || { kill -9 $mpid; cat "$WORK/t$victim.log"; fail "no checkpoint 3 in 60 s"; }
  sleep 0.$((RANDOM % 10))
  rp=$(rank_pid $mpid $victim)
  [ -n "$rp" ] || { kill -9 $mpid; fail "rank $victim's process not found under mpirun $mpid"; }
  t0=$(date +%s)
  kill -9 "$rp"
  rc=0
  # bounded: give up (and fail) after 60 s
  for _ in $(seq 1 600); do kill -0 $mpid 2>/dev/null || break; sleep 0.1; done
  if kill -0 $mpid 2>/dev/null; then kill -9 $mpid; fail "rank $victim killed: the job still runs after 60 s"; fi
  wait $mpid || rc=$?
  dt=$(( $(date +%s) - t0 ))
  [ $rc -ne 0 ] || { cat "$WORK/t$victim.log"; fail "rank $victim killed: mpirun exited 0"; }
  for d in "$out"/checkpoint-*; do
    [ -d "$d" ] || continue
    [ -f "$d/MANIFEST" ] || fail "$d exists without MANIFEST"
    (cd "$d" && tail -n +3 MANIFEST | sha256sum -c --quiet) || fail "$d does not match its MANIFEST"
  done
  # the newest complete checkpoint (rank 0 may have died after sealing it but before replacing `latest`)
  last=$(cd "$out" && ls -d checkpoint-* | sort | tail -n 1)
  mpi 2 "$WORK/t.yaml" --set output.save_steps=1 > "$WORK/t$victim-end.log" 2>&1 || { cat "$WORK/t$victim-end.log"; fail "resume"; }
  grep -q "resuming from $out/$last" "$WORK/t$victim-end.log" || fail "did not resume from the newest checkpoint $last"
  cmp -s <(losses "$WORK/ref/metrics.jsonl") <(losses "$out/metrics.jsonl") || fail "losses differ after the kill and resume"
  pass "kill -9 of rank $victim: job down in ${dt} s (exit $rc), checkpoints verify, resumed from $last to the same 40 losses"
done
