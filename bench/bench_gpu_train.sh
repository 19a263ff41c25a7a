#!/usr/bin/env bash
# bench/bench_gpu_train.sh — GPU QLoRA training throughput, MFU and peak device
# memory at the Llama-3.2-1B shape (and, opt-in, the Llama-3-8B shape), random
# NF4 bases written locally: qlora-train (training.device: cuda) beside
# transformers + PEFT + bitsandbytes on the same GPU, the same rows, in one run
# (issue 14 item 10). Runs in the first-run GPU bundle (tools/gpu_run.sh step 6).
#
#   bash bench/bench_gpu_train.sh [--dry-run] [--8b] QLORA_TRAIN SHARED_DIR WORK_DIR
#
# QLORA_TRAIN: a qlora-train built with the CUDA backend (copied into WORK_DIR
# first, so a rebuild meanwhile changes nothing); SHARED_DIR: the bundle's (or
# ../shared's) folder holding data/tinystories/train.jsonl and
# data/tokenizers/llama3/; WORK_DIR: models, rows, logs (models are kept there
# and reused on a second run: a model is written once).
#
# Per shape (llama3.2-1b; llama3-8b with --8b; tiny with --dry-run):
#   1. bench/make_random_llama.py writes a random model in bf16 (on the GPU when
#      torch sees one);
#   2. bench/bench_train_hf.py rows builds, with qlora-train's rules, the rows
#      both stacks train on: TinyStories text, data.format text, packing (whole
#      stories appended while they fit in SEQ tokens, ~10 stories per 2048-token
#      row, per-document causal attention), data.shuffle false;
#   3. qlora-train once per micro-batch in MBS x LoRA dropout in DROPOUTS:
#      model.quant nf4 + double quant (blocksize 64), compute_dtype bf16, LoRA r R
#      alpha ALPHA on all linear layers, STEPS steps of one micro-batch
#      (gradient accumulation 1), constant lr, clipping 1.0, its default
#      optimizer (paged_adamw_8bit, on the host), no gradient checkpointing (the
#      CUDA path keeps every activation and recomputes nothing;
#      model/model_cuda.h), training.device cuda;
#   4. transformers + PEFT + bitsandbytes in one Python process (the base
#      loaded once, fresh adapters per pair): BitsAndBytesConfig(load_in_4bit,
#      nf4, double quant, bf16 compute), the same LoRA, torch.optim.AdamW, no
#      gradient checkpointing (HF_CKPT=1: with it, as the QLoRA recipe runs),
#      packed rows given as position_ids (transformers builds the same
#      block-diagonal causal mask), micro-batch 2 padded to the longer row as
#      qlora-train's loader pads. Without an importable bitsandbytes the row
#      says "transformers+PEFT+bitsandbytes: not available (...)" and the
#      bf16-base transformers + PEFT rows run instead (HF_BF16=1: always).
# tokens/s: the tokens of the steps after WARMUP over their time (qlora-train:
# metrics.jsonl, the time between step ends; transformers: forward, backward,
# clip, optimizer step, synchronised). MFU = (4 N_base + attention FLOPs,
# forward and backward) x tokens/s / PEAK_TFLOPS (989: H100/H200 SXM dense
# bf16); N_base = decoder linears + lm_head; attention = 12 L H D k with k the
# per-document causal keys per query of the timed rows. Executed FLOPs add
# LoRA's 6 r (in + out) per adapted linear and, with gradient checkpointing,
# the recomputed forward (bench_train_hf.py gpu_flops). Peak device memory:
# qlora-train's own count of its device buffers (its "training.device cuda:
# ... MiB device memory" line), and nvidia-smi memory.used sampled every 100 ms
# over the run minus the reading before it (the process's CUDA context and
# cuBLAS included); transformers: torch.cuda.max_memory_reserved (what its
# allocator took from cudaMalloc; max_memory_allocated beside it), reset per
# pair. The memory ratio is qlora-train's own count over transformers' reserved.
#
# Output: progress on stderr; on stdout a `result: bench=train_gpu ...` line
# per run (the lines tools/gpu_run.sh collects into summary.md) and the
# markdown table (also WORK_DIR/table.md; the raw JSON rows in
# WORK_DIR/rows.jsonl). Exit 0 when every qlora-train run gave numbers, 1
# otherwise (transformers' failures are rows, not failures of ours), 2 on a
# usage or setup error.
#
# --dry-run: the plumbing on a CPU machine, nothing measured worth keeping: the
# tiny shape (the Llama-3 vocabulary, hidden 64, 2 layers), SEQ 512, 3 steps,
# training.device cpu, transformers + PEFT on the CPU in fp32 without
# bitsandbytes.
#
# Environment knobs (defaults in brackets):
#   PY [python3; dry run: the reference venv's python when it exists]
#   BUDGET_S [230]     wall seconds for the whole 1B benchmark: each run's time limit is cut to
#                      what is left (10 s kept for the report); runs that do not fit are rows
#                      "not run (out of time)". BUDGET_8B_S [540] is added with --8b.
#   RUN_S [75]         one qlora-train run's limit; HF_S [150] one transformers process's (all pairs);
#                      the 8B shape: RUN_S_8B [150], HF_S_8B [300]
#   BUDGET_TOTAL_S [unset]  the whole run's budget, overriding both (tools/gpu_run.sh sets it
#                      from its own limit for this step)
#   STEPS [20] WARMUP [5] (the 8B shape: STEPS_8B [8] WARMUP_8B [3])
#   SEQ [2048] MBS ["1 2"] DROPOUTS ["0.05 0"] R [16] ALPHA [32] LR [2e-4]
#   HF_CKPT [0]        1: transformers with gradient checkpointing (non-reentrant)
#   HF_BF16 [auto]     auto: the bf16-base transformers rows only when bitsandbytes is not
#                      available; 1: always; 0: never
#   PEAK_TFLOPS [989]
#   SHAPES [llama3.2-1b, + llama3-8b with --8b; tiny in the dry run]  make_random_llama.py shapes
#   MIN_FREE_GB_8B [40] the 8B leg needs this much free disk in WORK_DIR (16 GB model + room)
set -uo pipefail

dry=0 big=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --8b) big=1; shift ;;
    --) shift; break ;;
    -*) echo "bench_gpu_train.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 3 ] || { echo "usage: bash bench/bench_gpu_train.sh [--dry-run] [--8b] QLORA_TRAIN SHARED_DIR WORK_DIR" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
QT_SRC="$1"
SHARED="$(cd "$2" 2> /dev/null && pwd)" || { echo "bench_gpu_train.sh: $2: no such folder" >&2; exit 2; }
mkdir -p "$3" || exit 2
WORK="$(cd "$3" && pwd)"
T0=$(date +%s)

if [ "$dry" = 1 ]; then
  ref="$HOME/.cache/qlora-train/venv-ref/bin/python"
  [ -x "$ref" ] && PY="${PY:-$ref}"
  STEPS="${STEPS:-3}" WARMUP="${WARMUP:-1}" SEQ="${SEQ:-512}"
  shapes="tiny" device=cpu
else
  shapes="llama3.2-1b"
  [ "$big" = 1 ] && shapes="$shapes llama3-8b"
  device=cuda
fi
shapes="${SHAPES:-$shapes}"
PY="${PY:-python3}"
BUDGET_S="${BUDGET_S:-230}" BUDGET_8B_S="${BUDGET_8B_S:-540}" RUN_S="${RUN_S:-75}" HF_S="${HF_S:-150}"
RUN_S_8B="${RUN_S_8B:-150}" HF_S_8B="${HF_S_8B:-300}"
STEPS="${STEPS:-20}" WARMUP="${WARMUP:-5}" SEQ="${SEQ:-2048}" STEPS_8B="${STEPS_8B:-8}" WARMUP_8B="${WARMUP_8B:-3}"
MBS="${MBS:-1 2}" DROPOUTS="${DROPOUTS:-0.05 0}" R="${R:-16}" ALPHA="${ALPHA:-32}" LR="${LR:-2e-4}"
HF_CKPT="${HF_CKPT:-0}" HF_BF16="${HF_BF16:-auto}" PEAK_TFLOPS="${PEAK_TFLOPS:-989}" MIN_FREE_GB_8B="${MIN_FREE_GB_8B:-40}"
HF="$here/bench_train_hf.py"
DATA="$SHARED/data/tinystories/train.jsonl"
TOKS="$SHARED/data/tokenizers"
budget=$BUDGET_S
[ "$big" = 1 ] && budget=$((budget + BUDGET_8B_S))
budget=${BUDGET_TOTAL_S:-$budget}
DEADLINE=$((T0 + budget))

log() { echo "bench_gpu_train.sh: $(date -u +%H:%M:%S) $*" >&2; }
left() { echo $((DEADLINE - $(date +%s) - 10)); }
limit() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }

[ -x "$QT_SRC" ] || { echo "bench_gpu_train.sh: $QT_SRC is not an executable" >&2; exit 2; }
for f in "$DATA" "$TOKS/llama3/tokenizer.json" "$TOKS/llama3/tokenizer_config.json" "$HF" "$here/make_random_llama.py"; do
  [ -f "$f" ] || { echo "bench_gpu_train.sh: $f not found" >&2; exit 2; }
done
pyv="$("$PY" -c 'import torch, transformers, peft, tokenizers, safetensors; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, cuda {torch.cuda.is_available()}")' 2> "$WORK/python-check.log" | tail -n 1)"
[ -n "$pyv" ] || { echo "bench_gpu_train.sh: $PY cannot import torch, transformers, peft, tokenizers, safetensors: $(tail -n 1 "$WORK/python-check.log")" >&2; exit 2; }
# bitsandbytes: its version, or the last line of why it does not import
if bnb="$("$PY" -c 'import bitsandbytes; print(bitsandbytes.__version__)' 2> "$WORK/bnb-check.log" | tail -n 1)" && [ -n "$bnb" ]; then
  have_bnb=1
else
  have_bnb=0 bnb="$(grep -vE '^\s*$' "$WORK/bnb-check.log" | tail -n 1 | cut -c1-160)"
fi
[ "$dry" = 1 ] && have_bnb=0 bnb="not used in the dry run"
gpu=""
if [ "$device" = cuda ]; then
  command -v nvidia-smi > /dev/null 2>&1 && gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
  [ -n "$gpu" ] || { echo "bench_gpu_train.sh: no GPU (nvidia-smi); use --dry-run on a CPU machine" >&2; exit 2; }
fi
mkdir -p "$WORK/bin"
cp "$QT_SRC" "$WORK/bin/qlora-train"
QT="$WORK/bin/qlora-train"
rows="$WORK/rows.jsonl"
: > "$rows"
failed=0
log "$( [ "$dry" = 1 ] && echo "DRY RUN (CPU, tiny shape)" || echo "GPU: $gpu" ); $pyv; bitsandbytes: $( [ "$have_bnb" = 1 ] && echo "$bnb" || echo "not available ($bnb)" )"
log "shapes: $shapes; seq $SEQ, steps $STEPS (warm-up $WARMUP; 8B $STEPS_8B, $WARMUP_8B), micro-batches $MBS, dropouts $DROPOUTS, r $R; budget ${budget} s"

# one JSON row for a run that did not happen
skip_row() { # model stack mb dropout why
  "$PY" -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "stack": sys.argv[2], "micro_batch": int(sys.argv[3]),
    "dropout": float(sys.argv[4]), "failed": sys.argv[5]}))' "$@" >> "$rows"
}

write_config() { # model_dir mb dropout out_dir steps
  cat <<EOF
model:
  path: $1
  quant: nf4
  double_quant: true
  compute_dtype: bf16
lora:
  r: $R
  alpha: $ALPHA
  dropout: $3
  target_modules: all-linear
data:
  train: $DATA
  format: text
  seq_len: $SEQ
  packing: true
  shuffle: false
training:
  device: $device
  micro_batch_size: $2
  gradient_accumulation_steps: 1
  max_steps: $5
  learning_rate: $LR
  lr_scheduler: constant
  warmup_steps: 0
  max_grad_norm: 1.0
  gradient_checkpointing: false
  threads: 0
  logging_steps: 1
  eval_steps: 0
output:
  dir: $4
  save_steps: 0
  resume: never
EOF
}

smi_pid="" smi_base=0
smi_start() { # FILE: samples memory.used (MiB) every 100 ms into FILE; smi_base = the reading before
  smi_base=0
  [ "$device" = cuda ] || return 0
  smi_base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1)
  case $smi_base in '' | *[!0-9.]*) smi_base=0 ;; esac
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 > "$1" 2>/dev/null &
  smi_pid=$!
}
smi_stop() { [ -n "$smi_pid" ] && { kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null; }; smi_pid=""; }
trap 'smi_stop' EXIT

for shape in $shapes; do
  mdir="$WORK/model-$shape"
  st=$STEPS wu=$WARMUP run_s=$RUN_S hf_s=$HF_S
  [ "$shape" = llama3-8b ] && st=$STEPS_8B wu=$WARMUP_8B run_s=$RUN_S_8B hf_s=$HF_S_8B
  [ "$st" -gt "$wu" ] || { echo "bench_gpu_train.sh: $shape: steps ($st) must exceed the warm-up ($wu)" >&2; exit 2; }
  if [ "$shape" = llama3-8b ]; then
    free_gb=$(df -Pk "$WORK" | awk 'NR == 2 { printf "%d", $4 / 1048576 }')
    if [ ! -f "$mdir/model.safetensors" ] && [ ! -f "$mdir/model.safetensors.index.json" ] && [ "$free_gb" -lt "$MIN_FREE_GB_8B" ]; then
      log "$shape: only $free_gb GB free in $WORK (want $MIN_FREE_GB_8B): not run"
      skip_row "$shape" qlora-train 0 0 "not run: $free_gb GB free disk, want $MIN_FREE_GB_8B"
      continue
    fi
  fi
  if [ "$(left)" -lt 30 ]; then
    skip_row "$shape" qlora-train 0 0 "not run (out of time)"
    continue
  fi
  log "$shape: writing the random model ($mdir)"
  s=$(date +%s)
  if ! timeout "$(limit 240)" "$PY" -W ignore "$here/make_random_llama.py" "$mdir" --shape "$shape" --dtype bf16 \
       --tokenizers "$TOKS" > "$WORK/make-$shape.log" 2>&1; then
    tail -n 5 "$WORK/make-$shape.log" >&2
    skip_row "$shape" qlora-train 0 0 "not run: the random model could not be written (make-$shape.log)"
    failed=1
    continue
  fi
  log "$shape: model ready in $(( $(date +%s) - s )) s: $(tail -n 1 "$WORK/make-$shape.log")"
  maxmb=1
  for mb in $MBS; do [ "$mb" -gt "$maxmb" ] && maxmb=$mb; done
  rs="$("$PY" "$HF" rows --model "$mdir" --data "$DATA" --format text --seq "$SEQ" --packing --steps $((st * maxmb)) 2> "$WORK/rows-$shape.log")" ||
    { cat "$WORK/rows-$shape.log" >&2; echo "bench_gpu_train.sh: could not build the rows" >&2; exit 2; }
  log "$shape: rows: $(echo "$rs" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); t=r["step_tokens"]; d=r["docs"];
print(f"{len(t)} rows of {min(t)}-{max(t)} tokens, {min(d)}-{max(d)} documents each")')"

  # ---- qlora-train ------------------------------------------------------------------------
  for mb in $MBS; do
    for p in $DROPOUTS; do
      tag="$shape-mb$mb-d$p"
      lim=$(limit "$run_s")
      if [ "$lim" -lt 15 ]; then skip_row "$shape" qlora-train "$mb" "$p" "not run (out of time)"; failed=1; continue; fi
      out="$WORK/out-$tag"
      rm -rf "$out"
      write_config "$mdir" "$mb" "$p" "$out" "$st" > "$WORK/cfg-$tag.yaml"
      smi_start "$WORK/smi-$tag.txt"
      log "$tag: qlora-train (limit $lim s)"
      s=$(date +%s)
      OMP_WAIT_POLICY=passive timeout "$lim" "$QT" "$WORK/cfg-$tag.yaml" > "$WORK/qt-$tag.log" 2>&1
      rc=$?
      smi_stop
      if [ $rc -ne 0 ]; then
        why="exit $rc"; [ $rc -eq 124 ] && why="timeout ($lim s)"
        tail -n 5 "$WORK/qt-$tag.log" >&2
        skip_row "$shape" qlora-train "$mb" "$p" "$why: $(grep . "$WORK/qt-$tag.log" | tail -n 1 | cut -c1-200)"
        failed=1
        continue
      fi
      line="$("$PY" "$HF" ours-row --metrics "$out/metrics.jsonl" --log "$WORK/qt-$tag.log" --rows "$rs" \
              --model-name "$shape" --model-dir "$mdir" --micro-batch "$mb" --dropout "$p" --r "$R" --warmup "$wu" \
              --device "$device" --smi "$WORK/smi-$tag.txt" --smi-base "$smi_base")" ||
        { skip_row "$shape" qlora-train "$mb" "$p" "no metrics (qt-$tag.log)"; failed=1; continue; }
      echo "$line" >> "$rows"
      log "$tag: $(( $(date +%s) - s )) s, $(echo "$line" | "$PY" -c '
import json, sys
r = json.load(sys.stdin)
print(r.get("failed") or "%.0f tokens/s, device %s MiB, losses %.3f -> %.3f" % (r["tokens_per_s"], r.get("dev_mib"), r["losses"][0], r["losses"][-1]))')"
      rm -rf "$out"
    done
  done

  # ---- transformers + PEFT (+ bitsandbytes) -------------------------------------------------
  quants=()
  [ "$dry" = 0 ] && quants+=(nf4)
  if [ "$dry" = 1 ] || [ "$HF_BF16" = 1 ] || { [ "$HF_BF16" = auto ] && [ "$have_bnb" = 0 ]; }; then quants+=(none); fi
  for q in "${quants[@]}"; do
    lim=$(limit "$hf_s")
    stack="transformers+PEFT"; [ "$q" = nf4 ] && stack="transformers+PEFT+bitsandbytes"
    if [ "$lim" -lt 20 ]; then
      skip_row "$shape" "$stack" 0 0 "not run (out of time)"
      continue
    fi
    if [ "$q" = nf4 ] && [ "$have_bnb" = 0 ]; then
      skip_row "$shape" "$stack" 0 0 "$stack: not available (bitsandbytes not importable: $bnb)"
      log "$shape: $stack: not available (bitsandbytes not importable)"
      continue
    fi
    dt=bf16; [ "$dry" = 1 ] && dt=fp32
    ck=(--no-grad-ckpt); [ "$HF_CKPT" = 1 ] && ck=()
    log "$shape: $stack, base $q/$dt, micro-batches $MBS x dropouts $DROPOUTS (limit $lim s)"
    s=$(date +%s)
    timeout "$lim" "$PY" -W ignore "$HF" train-lora --model "$mdir" --data "$DATA" --format text --seq "$SEQ" --packing \
      --steps "$st" --warmup "$wu" --device "$device" --quant "$q" --dtype "$dt" --threads "$(nproc)" \
      --micro-batch "$(echo $MBS | tr ' ' ,)" --dropout "$(echo $DROPOUTS | tr ' ' ,)" --r "$R" --alpha "$ALPHA" \
      --lr "$LR" "${ck[@]}" > "$WORK/hf-$shape-$q.jsonl" 2> "$WORK/hf-$shape-$q.log"
    rc=$?
    n=$(grep -c . "$WORK/hf-$shape-$q.jsonl")
    "$PY" -c '
import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line); r.update(model=sys.argv[2], model_dir=sys.argv[3], r=int(sys.argv[4])); print(json.dumps(r))
' "$WORK/hf-$shape-$q.jsonl" "$shape" "$mdir" "$R" >> "$rows"
    # a row without micro_batch is the whole stack's failure (no CUDA, no bitsandbytes): no per-pair rows then
    stack_failed=$("$PY" -c 'import json,sys; print(int(any("micro_batch" not in json.loads(l) for l in open(sys.argv[1]) if l.strip())))' \
                   "$WORK/hf-$shape-$q.jsonl")
    if [ $rc -ne 0 ] && [ "$stack_failed" = 0 ]; then
      why="exit $rc"; [ $rc -eq 124 ] && why="timeout ($lim s)"
      log "$shape: $stack: $why after $n row(s); $(grep -vE '^\s*$' "$WORK/hf-$shape-$q.log" | tail -n 1 | cut -c1-200)"
      for mb in $MBS; do for p in $DROPOUTS; do
        "$PY" -c 'import json,sys; sys.exit(0 if any(json.loads(l).get("micro_batch") == int(sys.argv[2]) and float(json.loads(l).get("dropout", -1)) == float(sys.argv[3]) for l in open(sys.argv[1]) if l.strip()) else 1)' \
          "$WORK/hf-$shape-$q.jsonl" "$mb" "$p" || skip_row "$shape" "$stack" "$mb" "$p" "$why"
      done; done
    fi
    log "$shape: $stack: $n row(s) in $(( $(date +%s) - s )) s"
  done
done

log "done in $(( $(date +%s) - T0 )) s"
"$PY" "$HF" report-gpu --rows "$rows" --seq "$SEQ" --peak-tflops "$PEAK_TFLOPS" --table "$WORK/table.md" || failed=1
echo
echo "bench_gpu_train.sh: $( [ "$dry" = 1 ] && echo "DRY RUN on the CPU (tiny shape; numbers are plumbing, not measurements)" || echo "$gpu" );" \
  "$pyv; bitsandbytes $( [ "$have_bnb" = 1 ] && echo "$bnb" || echo "not available" ); seq $SEQ, $STEPS steps ($WARMUP warm-up; 8B: $STEPS_8B, $WARMUP_8B)," \
  "r $R alpha $ALPHA all-linear; $(( $(date +%s) - T0 )) s"
echo
cat "$WORK/table.md" 2>/dev/null
exit $failed
