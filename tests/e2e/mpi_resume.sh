#!/usr/bin/env bash
# Data-parallel stop and resume. (1) A 2-rank run stopped after steps 1, 2
# and 5 by a stop on rank 1 alone (the test hook, as if rank 1 had the
# signal: the ranks agree to stop after the same step), then by a real
# SIGTERM to mpirun (Open MPI forwards it to the ranks), and resumed with 2
# ranks each time, gives the same per-step losses and the same adapter and
# optimizer bytes as a 2-rank run that never stopped (packing, dropout,
# 8-bit paged AdamW, GA 4, epochs ending mid-step). (2) A 2-rank checkpoint
# resumed with 1 rank (GA 2: the same global batch) continues at the same
# example: its losses match the 2-rank run's within rel 1e-6 (the tolerance
# of mpi_equiv.sh; packing off, as a change of world size needs).
# Usage: mpi_resume.sh QT SHARED WORK MPIEXEC
set -euo pipefail
source "$(dirname "$0")/mpi_lib.sh" "$@"

# ---- (1) 2 ranks -> 2 ranks, bit-identical
long() { sed 's/max_steps: 8/max_steps: 30/'; }
base_config "$WORK/a" | long > "$WORK/a.yaml"
base_config "$WORK/b" | long > "$WORK/b.yaml"
mpi 2 "$WORK/a.yaml" > "$WORK/a.log" 2>&1 || { cat "$WORK/a.log"; fail "uninterrupted 2-rank run"; }
for k in 1 2 5; do
  rc=0
  "$MPIEXEC" --oversubscribe -np 1 "$QT" "$WORK/b.yaml" : -np 1 env QLORA_TEST_STOP_AFTER_STEP=$k "$QT" "$WORK/b.yaml" \
    > "$WORK/b$k.log" 2>&1 || rc=$?
  [ $rc -ne 0 ] || { cat "$WORK/b$k.log"; fail "stop on rank 1 after step $k: exit 0"; }
  [ "$(grep -c "stopped by signal 15 after step $k;" "$WORK/b$k.log")" -eq 1 ] \
    || { cat "$WORK/b$k.log"; fail "want one stop message (rank 0's) after step $k"; }
  [ -f "$WORK/b/checkpoint-$(printf %06d $k)/MANIFEST" ] || fail "no checkpoint at step $k"
  grep -q '"world_size":	2' "$WORK/b/checkpoint-$(printf %06d $k)/trainer_state.json" || fail "checkpoint lacks world_size 2"
done
# a real SIGTERM to the launcher, once a few more steps are logged
# (100 ms after each step: the test hook that keeps a tiny run going long enough on a fast machine)
QLORA_TEST_STEP_DELAY_MS=100 "$MPIEXEC" --oversubscribe -np 2 "$QT" "$WORK/b.yaml" > "$WORK/bterm.log" 2>&1 &
pid=$! # mpirun itself
for _ in $(seq 1 600); do
  [ "$(losses "$WORK/b/metrics.jsonl" | wc -l)" -ge 8 ] && break
  sleep 0.05
done
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc -ne 0 ] || fail "SIGTERM'd run exited 0"
grep -q "stopped by signal 15" "$WORK/bterm.log" || { cat "$WORK/bterm.log"; fail "SIGTERM: no clean stop"; }
stopped=$(losses "$WORK/b/metrics.jsonl" | tail -n 1 | cut -d' ' -f1)
[ "$stopped" -lt 30 ] || fail "the SIGTERM came after the end (step $stopped); the run is too short for this machine"
mpi 2 "$WORK/b.yaml" > "$WORK/b-end.log" 2>&1 || { cat "$WORK/b-end.log"; fail "final 2-rank resume"; }
grep -q "resuming from" "$WORK/b-end.log" || fail "did not resume"
diff <(losses "$WORK/a/metrics.jsonl") <(losses "$WORK/b/metrics.jsonl") > "$WORK/diff.txt" \
  || { head "$WORK/diff.txt"; fail "per-step losses differ after 2-rank stop/resume"; }
for f in adapter_model.safetensors optimizer.safetensors; do
  cmp -s "$WORK/a/checkpoint-000030/$f" "$WORK/b/checkpoint-000030/$f" || fail "$f differs at the end"
done
pass "2 ranks stopped after steps 1, 2, 5 (rank 1 alone) and $stopped (SIGTERM), resumed with 2: losses, adapter and optimizer identical"

# ---- (2) 2 ranks -> 1 rank at the same example
dp_config "$WORK/c" | sed 's/gradient_accumulation_steps: 4/gradient_accumulation_steps: 1/' > "$WORK/c.yaml"
dp_config "$WORK/d" | sed 's/gradient_accumulation_steps: 4/gradient_accumulation_steps: 1/' > "$WORK/d.yaml"
mpi 2 "$WORK/c.yaml" > "$WORK/c.log" 2>&1 || { cat "$WORK/c.log"; fail "uninterrupted 2-rank run (no packing)"; }
rc=0; QLORA_TEST_STOP_AFTER_STEP=2 mpi 2 "$WORK/d.yaml" > "$WORK/d2.log" 2>&1 || rc=$?
[ $rc -ne 0 ] && [ -f "$WORK/d/checkpoint-000002/MANIFEST" ] || { cat "$WORK/d2.log"; fail "2-rank stop after step 2"; }
# 2 ranks x 2 rows x 2 steps = 8 examples done; 1 rank x GA 2 keeps the global batch of 4
"$QT" "$WORK/d.yaml" --set training.gradient_accumulation_steps=2 > "$WORK/d-end.log" 2>&1 \
  || { cat "$WORK/d-end.log"; fail "resume with 1 rank"; }
grep -q "written by 2 rank(s), resumed with 1: training continues at example 8 of epoch 0" "$WORK/d-end.log" \
  || { cat "$WORK/d-end.log"; fail "no note of the world-size change at example 8"; }
grep -q '"world_size":	1' "$WORK/d/checkpoint-000008/trainer_state.json" || fail "the 1-rank checkpoint lacks world_size 1"
close_losses "$WORK/c/metrics.jsonl" "$WORK/d/metrics.jsonl" 1e-6 \
  || fail "resumed with 1 rank: losses differ from the 2-rank run (not the same examples)"
pass "2-rank checkpoint resumed with 1 rank x GA 2: continues at example 8, losses within rel 1e-6"
