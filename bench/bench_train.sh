#!/usr/bin/env bash
# bench/bench_train.sh — training throughput and peak memory of qlora-train on the
# CPU beside transformers + PEFT on the CPU, same shapes, measured in one run
# (issue 6, train: "A benchmark in bench/").
#
#   bash bench/bench_train.sh [QLORA_TRAIN]       (default build/train/qlora-train)
#
# Builds nothing. Environment knobs (defaults in brackets):
#   PY [/work/venv-ref/bin/python]   Python with torch, transformers, peft, tokenizers, numpy
#   CACHE [/tmp/qlora-bench-cache]   where the random ~100M Llama is written once (never in the repo)
#   MODELS ["stories260K random100m"]  THREADS ["2 1"]  BATCH [4]  SEQ [256]  R [16]  ALPHA [32]
#   STEPS_SMALL [30] WARMUP_SMALL [5]  (stories260K)   STEPS_BIG [6] WARMUP_BIG [2]  (random100m)
#   NF4 [1]       also a qlora-train row with the NF4 + double-quant base (the QLoRA cost)
#   APPEND [0]    1: append the table with date, machine, load and versions to bench/RESULTS.md
#
# Per model and thread count, in this order: sgemm rate (system OpenBLAS, which
# qlora-train links, and torch.mm) on the model's shapes; qlora-train with a dense
# fp32 base; qlora-train with an NF4 base; transformers + PEFT (bench_train_hf.py
# train; again with torch.set_flush_denormal(True), the subnormal mode qlora-train
# trains in by default; with more than one thread also with OMP_WAIT_POLICY=passive,
# as qlora-train runs by default); the sgemm rate again (the row keeps the better one). Both stacks: LoRA r
# R, alpha ALPHA, dropout 0, on q,k,v,o,gate,up,down; BATCH rows of SEQ tokens per
# step, no gradient accumulation, no gradient checkpointing, fp32 compute, fp32
# AdamW state, clipping at 1.0, constant lr. The data are TinyStories texts joined
# into texts longer than a row, so every row is exactly SEQ tokens of one document
# (qlora-train packs with data.packing: true and truncates; no padding on either
# side, and per-document attention is plain causal attention). qlora-train gets
# training.threads plus OPENBLAS_NUM_THREADS (training.threads sets OpenMP only);
# transformers gets torch.set_num_threads and OMP_NUM_THREADS.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
shared="$(cd "$repo/../shared" && pwd)"
QT="${1:-$repo/build/train/qlora-train}"
PY="${PY:-/work/venv-ref/bin/python}"
CACHE="${CACHE:-/tmp/qlora-bench-cache}"
MODELS="${MODELS:-stories260K random100m}"
THREADS="${THREADS:-2 1}"
BATCH="${BATCH:-4}" SEQ="${SEQ:-256}" R="${R:-16}" ALPHA="${ALPHA:-32}"
STEPS_SMALL="${STEPS_SMALL:-30}" WARMUP_SMALL="${WARMUP_SMALL:-5}"
STEPS_BIG="${STEPS_BIG:-6}" WARMUP_BIG="${WARMUP_BIG:-2}"
NF4="${NF4:-1}" APPEND="${APPEND:-0}"
HF="$here/bench_train_hf.py"

[ -x "$QT" ] || { echo "bench_train.sh: $QT is not an executable; build qlora-train first" >&2; exit 2; }
"$PY" -c "import torch, transformers, peft, tokenizers, numpy" 2>/dev/null ||
  { echo "bench_train.sh: $PY lacks torch/transformers/peft/tokenizers/numpy (see tools/reference/setup_venv.sh)" >&2; exit 2; }

tmp="$(mktemp -d /tmp/qlora-bench-train.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
rows="$tmp/rows.jsonl"
: > "$rows"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
t_start="$(date -u '+%Y-%m-%d %H:%M UTC')"

# TinyStories texts joined (blank line between stories) into texts of >= 3000
# characters: longer than SEQ tokens with either tokenizer used here.
"$PY" - "$shared/data/tinystories/train.jsonl" "$tmp/long.jsonl" <<'EOF'
import json, sys
cur, n = "", 0
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        cur = cur + ("\n\n" if cur else "") + json.loads(line)["text"]
        if len(cur) >= 3000:
            out.write(json.dumps({"text": cur}) + "\n")
            cur, n = "", n + 1
print(f"bench_train.sh: {n} texts of >= 3000 characters", file=sys.stderr)
EOF

model_dir() {
  case "$1" in
    stories260K) echo "$shared/data/stories260K" ;;
    random100m) echo "$CACHE/random-llama-100m" ;;
    *) echo "bench_train.sh: unknown model $1" >&2; exit 2 ;;
  esac
}

# the model's GEMM shapes (tokens x in -> out): "M,N,K;..." for bench_train_hf.py sgemm
shapes() {
  "$PY" - "$1" "$((BATCH * SEQ))" <<'EOF'
import json, os, sys
c = json.load(open(os.path.join(sys.argv[1], "config.json")))
C, F, V, H = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_attention_heads"]
D = c.get("head_dim") or C // H
M = int(sys.argv[2])
print(";".join(f"{M},{n},{k}" for n, k in ((F, C), (C, F), (H * D, C), (V, C))))
EOF
}

# The OpenBLAS kernel set qlora-train runs with (it restarts itself with
# OPENBLAS_CORETYPE when OpenBLAS does not know the CPU: train/main.c); the sgemm
# reference uses the same one.
core="$(OPENBLAS_VERBOSE=2 "$QT" --version 2>&1 | grep -o 'Core: [A-Za-z0-9]*' | tail -1 || true)"
core="${core#Core: }"
sgemm() { # threads shapes -> json
  OMP_NUM_THREADS="$1" OPENBLAS_NUM_THREADS="$1" OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-$core}" \
    "$PY" "$HF" sgemm --threads "$1" --shapes "$2"
}

write_config() { # model_dir quant threads steps out_dir -> yaml on stdout
  cat <<EOF
model:
  path: $1
  quant: $2
  double_quant: $([ "$2" = none ] && echo false || echo true)
  blocksize: 64
lora:
  r: $R
  alpha: $ALPHA
  dropout: 0.0
  target_modules: all-linear
  master_weights: fp32
data:
  train: $tmp/long.jsonl
  format: text
  seq_len: $SEQ
  packing: true
  shuffle: false
training:
  seed: 42
  micro_batch_size: $BATCH
  gradient_accumulation_steps: 1
  max_steps: $4
  learning_rate: 2e-4
  lr_scheduler: constant
  warmup_steps: 0
  max_grad_norm: 1.0
  optimizer: adamw_32bit
  gradient_checkpointing: false
  threads: $3
  logging_steps: 1
output:
  dir: $5
  save_total_limit: 1
  resume: never
EOF
}

add_row() { # json-with-results model stack base threads model_dir sgemm_before sgemm_after
  "$PY" - "$@" >> "$rows" <<'EOF'
import json, sys
res, model, stack, base, threads, mdir, s0, s1 = sys.argv[1:9]
r = json.loads(res)
s0, s1 = json.loads(s0), json.loads(s1)
r.update(model=model, stack=stack, base=base, threads=int(threads), model_dir=mdir,
         sgemm_openblas=max(s0["openblas_gflops"], s1["openblas_gflops"]),
         sgemm_torch=max(s0["torch_gflops"], s1["torch_gflops"]))
r.setdefault("seq", 0)
print(json.dumps(r))
EOF
}

for model in $MODELS; do
  mdir="$(model_dir "$model")"
  if [ "$model" = random100m ]; then
    "$PY" "$here/make_random_llama.py" "$mdir" >&2
    steps=$STEPS_BIG warm=$WARMUP_BIG
  else
    steps=$STEPS_SMALL warm=$WARMUP_SMALL
  fi
  shp="$(shapes "$mdir")"
  for th in $THREADS; do
    echo "bench_train.sh: $model, $th thread(s), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    s_before="$(sgemm "$th" "$shp")"
    results=()
    quants="none"
    [ "$NF4" = 1 ] && quants="none nf4"
    for q in $quants; do
      out="$tmp/out-$model-$q-$th"
      write_config "$mdir" "$q" "$th" "$steps" "$out" > "$tmp/cfg.yaml"
      OPENBLAS_NUM_THREADS="$th" "$QT" "$tmp/cfg.yaml" > "$tmp/qt.log" 2>&1 ||
        { cat "$tmp/qt.log" >&2; echo "bench_train.sh: qlora-train failed ($model, $q)" >&2; exit 1; }
      m="$("$PY" "$HF" metrics --metrics "$out/metrics.jsonl" --warmup "$warm")"
      base="fp32 dense"; [ "$q" = nf4 ] && base="NF4+DQ (fp32 compute)"
      results+=("$(echo "$m" | "$PY" -c "import json,sys; r=json.load(sys.stdin); r['seq']=$SEQ; print(json.dumps(r))")|qlora-train|$base")
      rm -rf "$out"
    done
    hf="$(OMP_NUM_THREADS="$th" "$PY" -W ignore "$HF" train --model "$mdir" --data "$tmp/long.jsonl" \
          --threads "$th" --steps "$steps" --warmup "$warm" --batch "$BATCH" --seq "$SEQ" --r "$R" \
          --alpha "$ALPHA" 2> "$tmp/hf.log")" || { cat "$tmp/hf.log" >&2; exit 1; }
    results+=("$hf|transformers+PEFT|fp32 dense")
    # qlora-train flushes subnormals to zero by default (training.flush_subnormals);
    # the same mode in torch, so the ratio is not the subnormal handling alone
    hf="$(OMP_NUM_THREADS="$th" "$PY" -W ignore "$HF" train --model "$mdir" --data "$tmp/long.jsonl" \
          --threads "$th" --steps "$steps" --warmup "$warm" --batch "$BATCH" --seq "$SEQ" --r "$R" \
          --alpha "$ALPHA" --flush-denormal 2> "$tmp/hf.log")" || { cat "$tmp/hf.log" >&2; exit 1; }
    results+=("$hf|transformers+PEFT, set_flush_denormal(True)|fp32 dense")
    if [ "$th" -gt 1 ]; then
      # torch's OpenMP threads spin while waiting (GNU OpenMP's default); on a
      # shared machine that collapses, so the same run with passive waiting too,
      # which qlora-train uses by default (train/main.c)
      hf="$(OMP_WAIT_POLICY=passive OMP_NUM_THREADS="$th" "$PY" -W ignore "$HF" train --model "$mdir" \
            --data "$tmp/long.jsonl" --threads "$th" --steps "$steps" --warmup "$warm" --batch "$BATCH" \
            --seq "$SEQ" --r "$R" --alpha "$ALPHA" 2> "$tmp/hf.log")" || { cat "$tmp/hf.log" >&2; exit 1; }
      results+=("$hf|transformers+PEFT, OMP_WAIT_POLICY=passive|fp32 dense")
    fi
    s_after="$(sgemm "$th" "$shp")"
    for x in "${results[@]}"; do
      IFS='|' read -r res stack base <<< "$x"
      add_row "$res" "$model" "$stack" "$base" "$th" "$mdir" "$s_before" "$s_after"
    done
  done
done

load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
table="$("$PY" "$HF" report --rows "$rows")"
versions="$("$PY" -c "import torch, transformers, peft, platform; print(f'Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')")"
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
{
  echo
  echo "### train: qlora-train vs transformers + PEFT, CPU fp32 (bench_train.sh), $t_start"
  echo
  echo "Machine: $cpu; load average (1/5/15 min) $load_start at the start, $load_end at the end."
  echo "Command: \`bash bench/bench_train.sh $QT\` (MODELS=\"$MODELS\" THREADS=\"$THREADS\" BATCH=$BATCH SEQ=$SEQ R=$R"
  echo "ALPHA=$ALPHA STEPS_SMALL=$STEPS_SMALL/$WARMUP_SMALL STEPS_BIG=$STEPS_BIG/$WARMUP_BIG: steps/untimed warm-up steps)."
  echo "Versions: $("$QT" --version), OpenBLAS kernels (qlora-train and the sgemm reference): $core; $versions."
  echo
  echo "$table"
} > "$tmp/section.md"
cat "$tmp/section.md"
if [ "$APPEND" = 1 ]; then
  cat "$tmp/section.md" >> "$here/RESULTS.md"
  echo "bench_train.sh: appended to $here/RESULTS.md" >&2
fi
cp "$rows" "${ROWS_OUT:-/dev/null}" 2>/dev/null || true
