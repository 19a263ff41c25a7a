#!/usr/bin/env bash
# GPU suite: the NCCL gradient reduction with one rank changes no bit. The
# same 6-step fine-tune on the GPU (training.device: cuda) as a plain single
# process and with the reduction forced through NCCL (QLORA_TEST_NCCL=1:
# upload, all-to-all with itself, the rank-order sum kernel, broadcast,
# download) gives identical per-step losses and adapter bytes; under mpirun
# -np 1 too when mpirun is installed (MPI init and the unique-id broadcast).
# NCCL refuses two ranks on one GPU, so one rank is what a one-GPU machine
# can check. Exits 77 without a GPU, or without libnccl.so.2 / NCCL support.
# Usage: mpi_nccl1.sh QT SHARED WORK [MPIEXEC]
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$1" "$2" "$3"
MPIEXEC=${4:-mpirun}
if ! ls /dev/nvidia[0-9]* > /dev/null 2>&1 && [ ! -e /proc/driver/nvidia ]; then
  echo "no NVIDIA device or driver: skipped"
  exit 77
fi
"$QT" --version | grep -q "^nccl: yes" || { "$QT" --version; echo "SKIP: no NCCL for this qlora-train"; exit 77; }
base_config "$WORK/g" > "$WORK/g.yaml"
sed -i 's/max_steps: 8/max_steps: 6/; s/gradient_accumulation_steps: 4/gradient_accumulation_steps: 2/' "$WORK/g.yaml"
sed "s#dir: $WORK/g#dir: $WORK/n#" "$WORK/g.yaml" > "$WORK/n.yaml"
sed "s#dir: $WORK/g#dir: $WORK/m#" "$WORK/g.yaml" > "$WORK/m.yaml"
"$QT" "$WORK/g.yaml" --set training.device=cuda > "$WORK/g.log" 2>&1 || { cat "$WORK/g.log"; fail "GPU run"; }
QLORA_TEST_NCCL=1 "$QT" "$WORK/n.yaml" --set training.device=cuda > "$WORK/n.log" 2>&1 || { cat "$WORK/n.log"; fail "GPU run with NCCL"; }
grep -q "gradients reduced with NCCL over 1 rank" "$WORK/n.log" || { cat "$WORK/n.log"; fail "the NCCL run did not use NCCL"; }
same() {
  diff <(losses "$WORK/g/metrics.jsonl") <(losses "$WORK/$1/metrics.jsonl") || fail "$2: losses differ from the plain GPU run"
  cmp -s "$WORK/g/checkpoint-000006/adapter_model.safetensors" "$WORK/$1/checkpoint-000006/adapter_model.safetensors" \
    || fail "$2: adapters differ from the plain GPU run"
}
same n "1 rank with NCCL"
pass "GPU: 1 rank with the NCCL reduction == single process (6 losses, adapter bytes)"
# the launcher must be the MPI qlora-train was built with (the GPU bundle carries its libmpi, not mpirun)
mpi_version=$("$QT" --version | sed -nE 's/^multi-process: MPI \(Open MPI v([0-9.]+)\).*/\1/p')
if command -v "$MPIEXEC" > /dev/null 2>&1 && [ -n "$mpi_version" ] && "$MPIEXEC" --version 2>&1 | head -n 1 | grep -qF "$mpi_version"; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive \
    "$MPIEXEC" -np 1 env QLORA_TEST_NCCL=1 "$QT" "$WORK/m.yaml" --set training.device=cuda > "$WORK/m.log" 2>&1 \
    || { cat "$WORK/m.log"; fail "mpirun -np 1 with NCCL"; }
  same m "mpirun -np 1 with NCCL"
  pass "GPU: mpirun -np 1 with NCCL == single process"
else
  echo "note: no $MPIEXEC of Open MPI ${mpi_version:-?} here: the launcher path (MPI_Bcast of the NCCL id) not run"
fi
