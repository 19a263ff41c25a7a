#!/usr/bin/env bash
# bench/bench_generate.sh — decoding speed of `qlora-train generate` (NF4 +
# double quant base, KV cache, fused 4-bit matvec) against transformers' fp32
# greedy generate on the same model, measured in one run, interleaved
# (ours, theirs, ours, theirs, ...) so that load from other processes falls
# on both alike.
#
#   bench/bench_generate.sh QLORA_TRAIN MODEL_DIR [NEW_TOKENS=256] [THREADS=2] [ROUNDS=2]
#
# MODEL_DIR: e.g. the Llama-3.2-1B-shaped model of
#   bench/make_random_llama.py MODEL_DIR --shape llama3.2-1b
# PY (default ~/.cache/qlora-train/venv-ref/bin/python) runs bench_generate_hf.py.
# Prints one line per run and a summary: tokens/s after the first token (the
# decode rate), and mean ms per token over tokens 1-32 and the last 32.
set -euo pipefail
QT=$1 MODEL=$2 NEW=${3:-256} THREADS=${4:-2} ROUNDS=${5:-2}
PY=${PY:-$HOME/.cache/qlora-train/venv-ref/bin/python}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PROMPT="Once upon a time, in a small village by the sea, there lived an old fisherman who"
echo '{"text": "unused"}' > "$WORK/train.jsonl"
cat > "$WORK/gen.yaml" <<YAML
model:
  path: $MODEL
  quant: nf4
  double_quant: true
  blocksize: 64
data:
  train: $WORK/train.jsonl
training:
  threads: $THREADS
output:
  dir: $WORK/out
YAML
echo "# $(date -u +%FT%TZ) $(uname -n) $(nproc) cores; $NEW new tokens, $THREADS threads, $ROUNDS rounds"
echo "# $("$QT" --version | tr '\n' ' ')"
ours=() theirs=()
for r in $(seq 1 "$ROUNDS"); do
  OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS /usr/bin/time -f "%M" -o "$WORK/rss" \
    "$QT" generate "$WORK/gen.yaml" --prompt "$PROMPT" --max-new-tokens "$NEW" > /dev/null 2> "$WORK/ours.err"
  line=$(grep '^generate: [0-9]* prompt tokens' "$WORK/ours.err")
  rate=$(sed -E 's/.*; ([0-9.]+) tokens\/s after it.*/\1/' <<< "$line")
  per=$(grep '^generate: ms per token' "$WORK/ours.err" | sed 's/^generate: //')
  plan=$(grep '^generate memory plan' "$WORK/ours.err" | sed -E 's/.*= ([0-9.]+ MiB)$/\1/')
  echo "round $r ours:   $line; $per; plan $plan; max RSS $(( $(cat "$WORK/rss") / 1024 )) MiB"
  ours+=("$rate")
  hf=$("$PY" "$HERE/bench_generate_hf.py" "$MODEL" "$PROMPT" "$NEW" "$THREADS" 2> "$WORK/hf.err" | tail -n1) ||
    { cat "$WORK/hf.err"; exit 1; }
  echo "round $r theirs: $hf"
  theirs+=("$(sed -E 's/.*"tok_s": ([0-9.]+).*/\1/' <<< "$hf")")
done
mean() { printf '%s\n' "$@" | awk '{s += $1} END {printf "%.3f", s / NR}'; }
mo=$(mean "${ours[@]}") mt=$(mean "${theirs[@]}")
echo "summary: ours $mo tokens/s, transformers fp32 $mt tokens/s, ratio $(awk -v a="$mo" -v b="$mt" 'BEGIN {printf "%.2f", a / b}')x"
