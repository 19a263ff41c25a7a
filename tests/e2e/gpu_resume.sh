#!/usr/bin/env bash
# GPU suite: checkpoints are backend-neutral and resume exactly on the GPU.
#   1. On one GPU, a run stopped after step 3 and resumed gives the per-step
#      losses of the uninterrupted run, bit for bit, and the same final adapter
#      and optimizer state (the GPU kernels are deterministic: no atomics in
#      reductions, fixed GEMM algorithms, dropout from counter-based streams).
#   2. The GPU's step-3 checkpoint resumes on the CPU, and the CPU's on the
#      GPU: steps 4-6 stay within 2e-2 relative of the uninterrupted run on the
#      other backend (bf16 storage on the GPU; see gpu_vs_cpu.sh).
#   3. training.activation_offloading: true (the checkpointed layer inputs in
#      pinned host memory, copied on a second stream) only moves bytes: the
#      per-step losses and the final state of the run without it, bit for bit.
# Exits 77 (skipped) only where no NVIDIA driver or device is visible at all.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
if ! ls /dev/nvidia[0-9]* > /dev/null 2>&1 && [ ! -e /proc/driver/nvidia ]; then
  echo "no NVIDIA device or driver: skipped"
  exit 77
fi
cfg() { # cfg NAME DEVICE: a 6-step run saving every 3 steps
  base_config "$WORK/$1" | sed 's/max_steps: 8/max_steps: 6/; s/gradient_accumulation_steps: 4/gradient_accumulation_steps: 2/' \
    > "$WORK/$1.yaml"
  printf '  save_steps: 3\n' >> "$WORK/$1.yaml"
  sed -i "s/^  threads: 1$/  threads: 1\n  device: $2/" "$WORK/$1.yaml"
}
run() { # run NAME [env...]: train, fail with the log on error
  local name=$1
  shift
  env "$@" "$QT" "$WORK/$name.yaml" > "$WORK/$name.$(date +%s%N).log" 2>&1
}
cfg gpu cuda
cfg gpu_b cuda
cfg cpu cpu
run gpu || { cat "$WORK"/gpu.*.log; fail "GPU run"; }
run cpu || { cat "$WORK"/cpu.*.log; fail "CPU run"; }
[ "$(losses "$WORK/gpu/metrics.jsonl" | wc -l)" -eq 6 ] || fail "expected 6 GPU steps"

# 1. stop + resume on the GPU
rc=0
run gpu_b QLORA_TEST_STOP_AFTER_STEP=3 || rc=$?
[ $rc -eq 1 ] || { cat "$WORK"/gpu_b.*.log; fail "stop after step 3: exit $rc, want 1"; }
run gpu_b || { cat "$WORK"/gpu_b.*.log; fail "GPU resume"; }
diff <(losses "$WORK/gpu/metrics.jsonl") <(losses "$WORK/gpu_b/metrics.jsonl") > "$WORK/diff.txt" \
  || { cat "$WORK/diff.txt"; fail "GPU per-step losses differ after stop/resume"; }
for f in adapter_model.safetensors optimizer.safetensors; do
  cmp -s "$WORK/gpu/checkpoint-000006/$f" "$WORK/gpu_b/checkpoint-000006/$f" || fail "GPU: $f differs at the end"
done
pass "GPU: stopped after step 3 and resumed, losses and final state bit-identical"

# 2. across backends: the other backend's step-3 checkpoint, steps 4-6
cross() { # cross FROM TO DEVICE
  cfg "$2" "$3"
  mkdir -p "$WORK/$2"
  cp -r "$WORK/$1/checkpoint-000003" "$WORK/$2/"
  run "$2" || { cat "$WORK/$2".*.log; fail "$1 checkpoint resumed on $3"; }
  grep -q "resuming from" "$WORK/$2".*.log || fail "$2 did not resume"
  paste <(losses "$WORK/$1/metrics.jsonl" | tail -n 3) <(losses "$WORK/$2/metrics.jsonl" | tail -n 3) | awk -v w="$2" '
    { d = $2 - $4; if (d < 0) d = -d; r = d / $2; if (r > worst) worst = r;
      printf "%s step %s: uninterrupted %.6f resumed %.6f rel %.2e\n", w, $1, $2, $4, r }
    END { printf "worst %.3e\n", worst; exit !(NR == 3 && worst <= 2e-2) }' || fail "$1 checkpoint on $3: losses"
}
cross gpu gpu_on_cpu cpu
cross cpu cpu_on_gpu cuda
pass "the GPU's checkpoint resumes on the CPU and the CPU's on the GPU within 2e-2"

# 3. activation offloading: the same run, bit for bit
cfg gpu_off cuda
sed -i "s/^  device: cuda$/  device: cuda\n  activation_offloading: true/" "$WORK/gpu_off.yaml"
grep -q "^  activation_offloading: true$" "$WORK/gpu_off.yaml" || fail "could not set activation_offloading"
run gpu_off || { cat "$WORK"/gpu_off.*.log; fail "GPU run with activation offloading"; }
grep -q "offloaded layer inputs" "$WORK"/gpu_off.*.log || { cat "$WORK"/gpu_off.*.log; fail "no pinned host line in the plan"; }
diff <(losses "$WORK/gpu/metrics.jsonl") <(losses "$WORK/gpu_off/metrics.jsonl") > "$WORK/diff_off.txt" \
  || { cat "$WORK/diff_off.txt"; fail "GPU per-step losses differ with activation offloading"; }
for f in adapter_model.safetensors optimizer.safetensors; do
  cmp -s "$WORK/gpu/checkpoint-000006/$f" "$WORK/gpu_off/checkpoint-000006/$f" || fail "offloading: $f differs at the end"
done
pass "GPU: activation offloading gives the same losses and final state, bit for bit"
