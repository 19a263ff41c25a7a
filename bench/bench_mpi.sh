#!/usr/bin/env bash
# bench/bench_mpi.sh — CPU data-parallel scaling (issue 15): the same global
# batch trained by 1 rank x 2 threads (gradient accumulation) and by 2 ranks
# x 1 thread (mpirun), and 1 rank x 1 thread for the base line.
#
#   bash bench/bench_mpi.sh [QLORA_TRAIN]     (default build/train/qlora-train)
#
# Environment (defaults in brackets): MODEL [../shared/data/stories260K]
# (any Llama-family directory), SEQ [256], MICRO [8], STEPS [20], WARMUP [4]
# (steps left out of the rate), MPIEXEC [mpirun], APPEND [0] (1: append the
# table, with date, machine and load, to bench/RESULTS.md).
# Global batch 2 x MICRO rows of SEQ tokens: 1 rank runs GA 2, 2 ranks GA 1.
# LoRA r 16 on all linears, NF4 base, packing, no dropout, fp32 AdamW, no
# gradient checkpointing. The rate is the median of the per-step
# tokens_per_s of metrics.jsonl (rank 0's clock around a whole global step,
# the reduction included) over steps WARMUP+1..STEPS; the wall time is the
# whole command (model load, tokenization, final checkpoint).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
shared="$(cd "$repo/../shared" && pwd)"
QT="${1:-$repo/build/train/qlora-train}"
MODEL="${MODEL:-$shared/data/stories260K}"
SEQ="${SEQ:-256}" MICRO="${MICRO:-8}" STEPS="${STEPS:-20}" WARMUP="${WARMUP:-4}"
MPIEXEC="${MPIEXEC:-mpirun}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMP_WAIT_POLICY=passive
W=$(mktemp -d /tmp/bench-mpi.XXXXXX)
trap 'rm -rf "$W"' EXIT
# long enough rows: TinyStories texts joined in fours
awk 'NR <= 2000' "$shared/data/tinystories/train.jsonl" > "$W/train.jsonl"

config() { # OUTDIR THREADS GA
  cat <<YAML
model:
  path: $MODEL
  quant: nf4
lora:
  r: 16
  alpha: 32
  dropout: 0.0
data:
  train: $W/train.jsonl
  seq_len: $SEQ
  packing: true
training:
  seed: 1
  micro_batch_size: $MICRO
  gradient_accumulation_steps: $3
  max_steps: $STEPS
  learning_rate: 1e-3
  lr_scheduler: constant
  warmup_steps: 0
  optimizer: adamw_32bit
  gradient_checkpointing: false
  logging_steps: 1
  threads: $2
output:
  dir: $1
YAML
}
median_rate() { # metrics.jsonl
  sed -nE 's/.*"step":([0-9]+),.*"tokens_per_s":([0-9.]+).*/\1 \2/p' "$1" | awk -v w="$WARMUP" '$1 > w { print $2 }' \
    | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) { print "nan"; exit } print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
run() { # NAME RANKS THREADS GA
  config "$W/$1" "$3" "$4" > "$W/$1.yaml"
  local t0 t1
  t0=$(date +%s.%N)
  if [ "$2" -eq 1 ]; then
    OPENBLAS_NUM_THREADS=$3 "$QT" "$W/$1.yaml" > "$W/$1.log" 2>&1 || { cat "$W/$1.log"; exit 1; }
  else
    "$MPIEXEC" --oversubscribe -np "$2" -x OPENBLAS_NUM_THREADS="$3" "$QT" "$W/$1.yaml" > "$W/$1.log" 2>&1 \
      || { cat "$W/$1.log"; exit 1; }
  fi
  t1=$(date +%s.%N)
  printf '| %d rank(s) x %d thread(s), GA %d | %d x %d x %d | %s | %.1f | %s |\n' "$2" "$3" "$4" "$2" "$MICRO" "$4" \
    "$(median_rate "$W/$1/metrics.jsonl")" "$(awk -v a="$t1" -v b="$t0" 'BEGIN { print a - b }')" \
    "$(losses_tail "$W/$1/metrics.jsonl")"
}
losses_tail() { sed -nE 's/.*"step":([0-9]+),"loss":([^,]+),.*/\2/p' "$1" | tail -n 1 | cut -c1-10; }

table=$(
  echo "| run | global batch (ranks x rows x GA) | tokens/s (median) | wall s | last loss |"
  echo "|---|---|---|---|---|"
  run r1t1 1 1 2
  run r1t2 1 2 2
  run r2t1 2 1 1
)
head_line="bench_mpi.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -n), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); model $(basename "$MODEL"), seq $SEQ, $STEPS steps (rate over steps $((WARMUP + 1))-$STEPS); $("$QT" --version | grep multi-process)"
echo "$head_line"
echo "$table"
if [ "${APPEND:-0}" = 1 ]; then
  {
    echo
    echo "### train, CPU data parallel: 1 rank x 2 threads vs 2 ranks x 1 thread (bench_mpi.sh)"
    echo
    echo "$head_line"
    echo
    echo "$table"
  } >> "$repo/bench/RESULTS.md"
fi
