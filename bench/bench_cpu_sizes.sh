#!/usr/bin/env bash
# bench/bench_cpu_sizes.sh — CPU LoRA training throughput and peak memory at real
# sizes (a 134M Llama-2 shape and the Llama-3.2-1B shape, random weights):
# qlora-train beside transformers + PEFT on the same rows, in one run (issue 18
# item 4).
#
#   bash bench/bench_cpu_sizes.sh [QLORA_TRAIN]      (default build/train/qlora-train)
#
# Builds nothing. At the start the qlora-train binary and bench_gemm_bf16 are
# copied into a temporary directory and only the copies run, so a rebuild meanwhile
# does not change what is measured. Environment knobs (defaults in brackets):
#   PY [~/.cache/qlora-train/venv-ref/bin/python]  Python with torch, transformers, peft, tokenizers, numpy
#   CACHE [/tmp/qlora-bench-cache]   a model NAME resolves to CACHE/random-llama-NAME (bench_memplan.sh's
#                                    layout); missing ones are written with
#                                    `PY bench/make_random_llama.py DIR --shape NAME`
#   MODELS ["134m llama3.2-1b"]      names (shapes of make_random_llama.py) or model directories
#   GEMM_BF16 [build/bench/bench_gemm_bf16]  the oneDNN bf16 GEMM benchmark (its rate is the bf16 MFU base)
#   STEPS [8] WARMUP [2]             steps per run; the first WARMUP are not timed
#   WORKLOADS ["alpaca packed"]      alpaca: ../shared/data/alpaca/alpaca_en_demo.json, data.format alpaca,
#                                    packing false (one example per row, 56-465 tokens, no padding at
#                                    micro-batch 1). packed: ../shared/data/tinystories/train.jsonl,
#                                    data.format text, packing true (whole stories appended while they
#                                    fit, never split, so rows hold 2-3 stories, ~340-500 tokens, not 512)
#   OURS ["nf4:fp32 nf4:bf16 none:fp32 none:bf16"]   qlora-train runs, model.quant:model.compute_dtype
#                                    (nf4 = NF4 + double quant, blocksize 64; none = dense fp32 base,
#                                    double_quant false; bf16 = the base linears' and lm_head's GEMMs with
#                                    bf16 operands through oneDNN, AMX here; the run must log "bf16 operands")
#   HF_DTYPES ["fp32 bf16"]          transformers + PEFT runs: the base loaded with dtype float32 / bfloat16
#   SEQ [512] R [16] ALPHA [32] DROPOUT [0.05] LR [2e-4]
#   THREADS [nproc]                  qlora-train: training.threads (OpenBLAS/oneDNN/OpenMP use all cores by
#                                    default); transformers: torch.set_num_threads + OMP_NUM_THREADS
#   WAIT_IDLE [600]                  before each measurement wait up to this many seconds until the CPUs
#                                    are idle (other processes' use under 10% of all cores over 3 s); the
#                                    idle share seen just before each run is in the notes (0: do not wait)
#   RETRY [1]                        runs during which other processes used more than 10% of the machine
#                                    (/proc/stat busy time minus the run's own CPU time) are repeated up to
#                                    RETRY times; the last attempt is kept, and marked in the table if it
#                                    was still contended
#   APPEND [0]                       1: append the section to bench/RESULTS.md under
#                                    "## CPU training at 134M and 1B shapes (issue 18)"; default prints only
#   ROWS_OUT [unset]                 also copy the raw per-run JSON lines there
#
# Both stacks, every run: seq_len SEQ, micro-batch 1, gradient accumulation 1,
# gradient checkpointing on, LoRA r R / alpha ALPHA / dropout DROPOUT on
# q,k,v,o,gate,up,down, lr LR constant, clipping at 1.0, STEPS steps of one row
# each. qlora-train: config defaults otherwise, so the optimizer is its default
# paged_adamw_8bit (8-bit AdamW state) and LoRA master weights are its default;
# data.shuffle false (file order, so both stacks see the same rows in the same
# order), output.save_steps 0 (it still writes the adapter after the last step,
# outside the timed steps), output.resume never, logging_steps 1, no eval data.
# transformers + PEFT: bench_train_hf.py train-lora (its docstring has the
# details): gradient_checkpointing_enable(use_reentrant False), PEFT LoraConfig on
# the same seven modules (adapters in the dtype PEFT gives them), torch.optim.AdamW
# with fp32 state. The same token ids and labels: `qlora-train tokenize` only
# encodes text (no dump of a config's training rows), so bench_train_hf.py rows
# rebuilds the rows in Python with the `tokenizers` library on the model's
# tokenizer.json and qlora-train's rules (data/prompt.c: axolotl's alpaca prompt,
# BOS as the tokenizer adds it, EOS appended, prompt labels -100; data/loader.c:
# truncation to SEQ, greedy packing of whole examples, -100 at each document's
# first token, positions restarting per document). Every qlora-train run's
# per-step token counts (metrics.jsonl "tokens") are compared with the Python
# rows; the header says whether they matched. Packed rows go to transformers with
# position_ids restarting per document and no attention_mask, from which it builds
# the same block-diagonal causal mask (masking_utils.find_packed_sequence_indices).
#
# Measurement: tokens/s = tokens of the steps after WARMUP / their summed wall
# time; qlora-train's step time is tokens / tokens_per_s of that step's
# metrics.jsonl line (the time between step ends), transformers' is forward +
# backward + clip + optimizer step + zero_grad. Peak memory: qlora-train's own
# "memory: planned peak X MiB, measured peak Y MiB" line (Y = VmHWM; the table
# shows Y and, in brackets, /usr/bin/time -f %M of the whole process) and its
# planned peak X (plan MiB); transformers: ru_maxrss of the Python process
# (interpreter, torch and the load of the fp32 safetensors file included).
# Ratios: qlora-train / transformers at the same compute precision and workload,
# tokens/s and peak memory (>1 tokens/s is faster, <1 memory is leaner).
#
# MFU = model FLOPs per token x tokens/s / the machine's measured GEMM rate of
# that precision, both rates measured once per model in this run on the model's
# largest decoder linear shape, the MLP's F x C weight with M = 512 rows, in both
# orientations: y (512, F) = x (512, C) W^T (gate/up) and y (512, C) = x (512, F) W^T
# (down); the better of the two is the rate (oneDNN's bf16 rate differs several
# fold between them on this CPU; both are in the notes). fp32: OpenBLAS
# cblas_sgemm (bench_train_hf.py sgemm, the kernel set qlora-train runs with;
# torch.mm's rate is in the notes too); bf16: oneDNN's bf16 matmul
# (bench_gemm_bf16 512 F C 512 C F, median of 15). Model FLOPs per token
# (bench_train_hf.py lora_flops), gradient checkpointing's recompute and LoRA's own
# FLOPs NOT counted:
#   4 x P_lin + 4 x V x C + 12 x L x (H x D) x k
# P_lin = decoder linear parameters (forward 2 + input-gradient backward 2 FLOPs per
# parameter; the frozen base gets no weight gradient), V x C the lm_head, and
# attention: forward QK^T + PV 4 H D k, backward 8 H D k per layer, k = keys per
# query averaged over the timed tokens under per-document causal attention
# (sum over documents of n (n + 1) / 2 / tokens, about T_avg / 2; so the attention
# term is about 6 x L x C x T_avg for H x D = C).
#
# Runs are sequential (never two at once). At the 1B shape a run takes minutes
# (model load, NF4 quantization, ~15-60 tokens/s); trim with the knobs, e.g.
#   MODELS=llama3.2-1b STEPS=6 OURS="nf4:fp32 nf4:bf16 none:bf16" bash bench/bench_cpu_sizes.sh
# A failed run is reported as a table row and the rest still run (exit 1 at the end).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
shared="$(cd "$repo/../shared" && pwd)"
QT_SRC="${1:-$repo/build/train/qlora-train}"
PY="${PY:-$HOME/.cache/qlora-train/venv-ref/bin/python}"
CACHE="${CACHE:-/tmp/qlora-bench-cache}"
MODELS="${MODELS:-134m llama3.2-1b}"
GEMM_SRC="${GEMM_BF16:-$repo/build/bench/bench_gemm_bf16}"
STEPS="${STEPS:-8}" WARMUP="${WARMUP:-2}"
WORKLOADS="${WORKLOADS:-alpaca packed}"
OURS="${OURS:-nf4:fp32 nf4:bf16 none:fp32 none:bf16}"
HF_DTYPES="${HF_DTYPES:-fp32 bf16}"
SEQ="${SEQ:-512}" R="${R:-16}" ALPHA="${ALPHA:-32}" DROPOUT="${DROPOUT:-0.05}" LR="${LR:-2e-4}"
THREADS="${THREADS:-$(nproc)}"
APPEND="${APPEND:-0}" WAIT_IDLE="${WAIT_IDLE:-600}" RETRY="${RETRY:-1}"
HF="$here/bench_train_hf.py"

[ -x "$QT_SRC" ] || { echo "bench_cpu_sizes.sh: $QT_SRC is not an executable; build qlora-train first" >&2; exit 2; }
[ -x "$GEMM_SRC" ] || { echo "bench_cpu_sizes.sh: $GEMM_SRC is not an executable; build bench_gemm_bf16 (oneDNN) first" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench_cpu_sizes.sh: needs /usr/bin/time (GNU time)" >&2; exit 2; }
"$PY" -c "import torch, transformers, peft, tokenizers, numpy" 2>/dev/null ||
  { echo "bench_cpu_sizes.sh: $PY lacks torch/transformers/peft/tokenizers/numpy (see tools/reference/setup_venv.sh)" >&2; exit 2; }
[ "$STEPS" -gt "$WARMUP" ] || { echo "bench_cpu_sizes.sh: STEPS ($STEPS) must exceed WARMUP ($WARMUP)" >&2; exit 2; }
for wl in $WORKLOADS; do
  case "$wl" in alpaca | packed) ;; *) echo "bench_cpu_sizes.sh: WORKLOADS: unknown workload '$wl' (alpaca, packed)" >&2; exit 2 ;; esac
done
for pair in $OURS; do
  case "$pair" in nf4:fp32 | nf4:bf16 | none:fp32 | none:bf16) ;;
    *) echo "bench_cpu_sizes.sh: OURS: '$pair' is not QUANT:DTYPE with QUANT nf4|none and DTYPE fp32|bf16" >&2; exit 2 ;;
  esac
done
for dt in $HF_DTYPES; do
  case "$dt" in fp32 | bf16) ;; *) echo "bench_cpu_sizes.sh: HF_DTYPES: '$dt' is not fp32 or bf16" >&2; exit 2 ;; esac
done

tmp="$(mktemp -d /tmp/qlora-bench-cpu-sizes.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
cp "$QT_SRC" "$tmp/bin/qlora-train"
cp "$GEMM_SRC" "$tmp/bin/bench_gemm_bf16"
QT="$tmp/bin/qlora-train" GEMM="$tmp/bin/bench_gemm_bf16"
rows="$tmp/rows.jsonl"
: > "$rows"
notes="$tmp/notes.txt"
: > "$notes"
failed=0
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
t_start="$(date -u '+%Y-%m-%d %H:%M UTC')"
log() { echo "bench_cpu_sizes.sh: $(date -u +%H:%M:%S) $*" >&2; }

# idle share of all CPUs over 3 s (/proc/stat: idle + iowait over the total), in percent
idle_pct() {
  local a b
  a=($(head -1 /proc/stat)); sleep 3; b=($(head -1 /proc/stat))
  awk -v a="${a[*]}" -v b="${b[*]}" 'BEGIN{n = split(a, x, " "); split(b, y, " "); t = 0;
    for (i = 2; i <= n; i++) t += y[i] - x[i]; printf "%.0f", 100 * ((y[5] - x[5]) + (y[6] - x[6])) / (t > 0 ? t : 1)}'
}
# true when the JSON row $1 says other processes used > 10% of the machine during the run
contended() {
  [ -n "$1" ] && echo "$1" | "$PY" -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["other_pct"] > 10 else 1)'
}
# waits (at most WAIT_IDLE s) until the CPUs are idle; sets $idle to the last reading
wait_idle() {
  local waited=0
  idle="$(idle_pct)"
  while [ "$idle" -lt 90 ] && [ "$waited" -lt "$WAIT_IDLE" ]; do
    [ "$waited" = 0 ] && log "CPUs busy ($idle% idle), waiting up to ${WAIT_IDLE} s"
    sleep 7; waited=$((waited + 10))
    idle="$(idle_pct)"
  done
}

# The OpenBLAS kernel set qlora-train runs with (it restarts itself with
# OPENBLAS_CORETYPE when OpenBLAS does not know the CPU: train/main.c); the sgemm
# reference uses the same one.
core="$(OPENBLAS_VERBOSE=2 "$QT" --version 2>&1 | grep -o 'Core: [A-Za-z0-9]*' | tail -1 || true)"
core="${core#Core: }"

model_dir() {
  case "$1" in
    */*) echo "$1" ;;
    *) if [ -d "$1" ]; then echo "$1"; else echo "$CACHE/random-llama-$1"; fi ;;
  esac
}

workload_args() { # name -> "data format packing(0/1)"
  case "$1" in
    alpaca) echo "$shared/data/alpaca/alpaca_en_demo.json alpaca 0" ;;
    packed) echo "$shared/data/tinystories/train.jsonl text 1" ;;
    *) echo "bench_cpu_sizes.sh: unknown workload $1 (alpaca, packed)" >&2; exit 2 ;;
  esac
}

write_config() { # model_dir quant dtype data format packing out_dir
  cat <<EOF
model:
  path: $1
  quant: $2
  double_quant: $([ "$2" = none ] && echo false || echo true)
  compute_dtype: $3
lora:
  r: $R
  alpha: $ALPHA
  dropout: $DROPOUT
  target_modules: all-linear
data:
  train: $4
  format: $5
  seq_len: $SEQ
  packing: $([ "$6" = 1 ] && echo true || echo false)
  shuffle: false
training:
  micro_batch_size: 1
  gradient_accumulation_steps: 1
  max_steps: $STEPS
  learning_rate: $LR
  lr_scheduler: constant
  warmup_steps: 0
  max_grad_norm: 1.0
  gradient_checkpointing: true
  threads: $THREADS
  logging_steps: 1
  eval_steps: 0
output:
  dir: $7
  save_steps: 0
  resume: never
EOF
}

for model in $MODELS; do
  mdir="$(model_dir "$model")"
  name="$(basename "$model")"
  if [ ! -f "$mdir/config.json" ] || [ ! -f "$mdir/model.safetensors" ]; then
    case "$model" in
      */*) echo "bench_cpu_sizes.sh: $mdir has no config.json + model.safetensors" >&2; exit 2 ;;
    esac
    log "writing $mdir"
    "$PY" "$here/make_random_llama.py" "$mdir" --shape "$model" >&2 ||
      { echo "bench_cpu_sizes.sh: could not write $mdir" >&2; exit 2; }
  fi
  read -r C F < <("$PY" -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['hidden_size'], c['intermediate_size'])" "$mdir/config.json")
  shape="512 x $F x $C / 512 x $C x $F"
  wait_idle
  log "$name: GEMM rates on $shape ($idle% idle before)"
  sg_up="$(OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-$core}" \
           "$PY" "$HF" sgemm --threads "$THREADS" --shapes "512,$F,$C")"
  sg_dn="$(OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-$core}" \
           "$PY" "$HF" sgemm --threads "$THREADS" --shapes "512,$C,$F")"
  bfs="$("$GEMM" 512 "$F" "$C" 512 "$C" "$F" | awk -F'|' '$2 ~ /[0-9] x [0-9]/ {gsub(/ /, "", $6); printf "%s ", $6}')"
  gemm_json="$("$PY" - "$sg_up" "$sg_dn" "$bfs" "$shape" "$name" "$idle" 3>> "$notes" <<'EOF'
import json, os, sys
up, dn = json.loads(sys.argv[1]), json.loads(sys.argv[2])
bf = [float(v) for v in sys.argv[3].split()]
with os.fdopen(3, "w") as notes:
    notes.write(f"- {sys.argv[5]}: GEMM GFLOP/s on {sys.argv[4]} (M x N x K; {sys.argv[6]}% idle before): OpenBLAS sgemm "
                f"{up['openblas_gflops']:.0f} / {dn['openblas_gflops']:.0f}, torch.mm fp32 {up['torch_gflops']:.0f} / "
                f"{dn['torch_gflops']:.0f}, oneDNN bf16 {bf[0]:.0f} / {bf[1]:.0f}; MFU uses the better of each pair.\n")
print(json.dumps({"gemm_fp32": max(up["openblas_gflops"], dn["openblas_gflops"]),
                  "gemm_torch_fp32": max(up["torch_gflops"], dn["torch_gflops"]), "gemm_bf16": max(bf),
                  "gemm_shape": sys.argv[4]}))
EOF
)"

  for wl in $WORKLOADS; do
    read -r data fmt pack < <(workload_args "$wl")
    packflag=(); [ "$pack" = 1 ] && packflag=(--packing)
    rs="$("$PY" "$HF" rows --model "$mdir" --data "$data" --format "$fmt" --seq "$SEQ" --steps "$STEPS" "${packflag[@]}")"
    base_json="$(echo "$rs" | "$PY" -c '
import json, sys
r = json.load(sys.stdin); w = int(sys.argv[1]); g = json.loads(sys.argv[2])
g.update(model=sys.argv[3], model_dir=sys.argv[4], workload=sys.argv[5], rows_step_tokens=r["step_tokens"],
         timed_tokens=sum(r["step_tokens"][w:]), timed_attn_keys=sum(r["attn_keys"][w:]))
print(json.dumps(g))' "$WARMUP" "$gemm_json" "$name" "$mdir" "$wl")"
    echo "- $name $wl: tokens per step $(echo "$rs" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); print(r["step_tokens"], "documents per row", r["docs"])')." >> "$notes"

    for pair in $OURS; do
      q="${pair%%:*}" dt="${pair##*:}"
      out="$tmp/out-$name-$wl-$q-$dt"
      cfg="$tmp/cfg-$name-$wl-$q-$dt.yaml"
      qlog="$tmp/qt-$name-$wl-$q-$dt.log"
      write_config "$mdir" "$q" "$dt" "$data" "$fmt" "$pack" "$out" > "$cfg"
      base="NF4+DQ"; [ "$q" = none ] && base="dense fp32"
      for attempt in $(seq 0 "$RETRY"); do
        wait_idle
        log "$name $wl qlora-train $q $dt ($idle% idle before$( [ "$attempt" = 0 ] || echo ", retry $attempt"))"
        rm -rf "$out"
        s0="$(head -1 /proc/stat)"
        if /usr/bin/time -f "%M %e %U %S" -o "$tmp/time.txt" "$QT" "$cfg" > "$qlog" 2>&1; then
          s1="$(head -1 /proc/stat)"
          line="$("$PY" - "$base_json" "$out/metrics.jsonl" "$qlog" "$tmp/time.txt" "$base" "$dt" "$WARMUP" "$idle" "$s0" "$s1" "$attempt" <<'EOF'
import json, os, re, sys
row = json.loads(sys.argv[1])
steps = [json.loads(l) for l in open(sys.argv[2]) if l.strip() and '"step"' in l]
steps = [s for s in steps if "tokens_per_s" in s]
logtxt = open(sys.argv[3]).read()
w = int(sys.argv[7])
tm = [float(v) for v in open(sys.argv[4]).read().split()[-4:]]
a, b = [int(v) for v in sys.argv[9].split()[1:]], [int(v) for v in sys.argv[10].split()[1:]]
d = [y - x for x, y in zip(a, b)]
busy = (sum(d) - d[3] - d[4]) / os.sysconf("SC_CLK_TCK")
secs = [s["tokens"] / s["tokens_per_s"] for s in steps]
toks = [s["tokens"] for s in steps]
m = re.search(r"memory: planned peak ([0-9.]+) MiB, measured peak ([0-9.]+) MiB", logtxt)
if not m or len(steps) <= w:
    raise SystemExit("bench_cpu_sizes.sh: no memory line or too few steps in " + sys.argv[3])
row.update(stack="qlora-train", base=sys.argv[5], compute=sys.argv[6],
           tokens_per_s=round(sum(toks[w:]) / sum(secs[w:]), 2),
           plan_mib=float(m.group(1)), peak_rss_mib=float(m.group(2)), time_rss_mib=tm[0] / 1024.0,
           wall_s=round(tm[1]), cpu_pct=round(100 * (tm[2] + tm[3]) / max(tm[1], 1e-9)),
           other_pct=round(max(0.0, busy - tm[2] - tm[3]) / max(tm[1], 1e-9) / os.cpu_count() * 100),
           idle_before=int(sys.argv[8]), attempt=int(sys.argv[11]),
           step_s=[round(t, 3) for t in secs], step_tokens=toks, losses=[round(s["loss"], 4) for s in steps],
           bf16_operands="bf16 operands" in logtxt, tokens_match=toks == row["rows_step_tokens"])
if sys.argv[6] == "bf16" and not row["bf16_operands"]:
    row["note"] = "no 'bf16 operands' line: the run did not use bf16 GEMMs"
print(json.dumps(row))
EOF
)" || { line=""; tail -5 "$qlog" >&2; }
        else
          line=""
          tail -5 "$qlog" >&2
        fi
        contended "$line" || break
      done
      if [ -n "$line" ]; then
        echo "$line" >> "$rows"
      else
        failed=1
        echo "$base_json" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); r.update(stack="qlora-train", base=sys.argv[1], compute=sys.argv[2], failed="exit status, see log"); print(json.dumps(r))' "$base" "$dt" >> "$rows"
      fi
      rm -rf "$out"
    done

    for dt in $HF_DTYPES; do
      hlog="$tmp/hf-$name-$wl-$dt.log"
      for attempt in $(seq 0 "$RETRY"); do
        wait_idle
        log "$name $wl transformers+PEFT $dt ($idle% idle before$( [ "$attempt" = 0 ] || echo ", retry $attempt"))"
        s0="$(head -1 /proc/stat)"
        if hf="$(OMP_NUM_THREADS="$THREADS" /usr/bin/time -f "%M %e %U %S" -o "$tmp/time.txt" "$PY" -W ignore "$HF" train-lora \
                --model "$mdir" --data "$data" --format "$fmt" --seq "$SEQ" "${packflag[@]}" --steps "$STEPS" \
                --warmup "$WARMUP" --threads "$THREADS" --dtype "$dt" --r "$R" --alpha "$ALPHA" --dropout "$DROPOUT" \
                --lr "$LR" 2> "$hlog")"; then
          s1="$(head -1 /proc/stat)"
          line="$("$PY" -c '
import json, os, sys
row = json.loads(sys.argv[1]); h = json.loads(sys.argv[2])
tm = [float(v) for v in open(sys.argv[4]).read().split()[-4:]]
a, b = [int(v) for v in sys.argv[6].split()[1:]], [int(v) for v in sys.argv[7].split()[1:]]
d = [y - x for x, y in zip(a, b)]
busy = (sum(d) - d[3] - d[4]) / os.sysconf("SC_CLK_TCK")
row.update(stack="transformers+PEFT", base="dense " + sys.argv[3], compute=sys.argv[3], tokens_per_s=h["tokens_per_s"],
           peak_rss_mib=h["peak_rss_mib"], rss_after_load_mib=h["rss_after_load_mib"], load_s=h["load_s"],
           step_s=h["step_s"], step_tokens=h["step_tokens"], losses=[round(v, 4) for v in h["losses"]],
           lora_dtypes=h["lora_dtypes"], attn_implementation=h["attn_implementation"], versions=h["versions"],
           tokens_match=h["step_tokens"] == row["rows_step_tokens"], time_rss_mib=tm[0] / 1024.0,
           wall_s=round(tm[1]), cpu_pct=round(100 * (tm[2] + tm[3]) / max(tm[1], 1e-9)),
           other_pct=round(max(0.0, busy - tm[2] - tm[3]) / max(tm[1], 1e-9) / os.cpu_count() * 100),
           idle_before=int(sys.argv[5]), attempt=int(sys.argv[8]))
print(json.dumps(row))' "$base_json" "$hf" "$dt" "$tmp/time.txt" "$idle" "$s0" "$s1" "$attempt")" || line=""
        else
          line=""
          tail -5 "$hlog" >&2
        fi
        contended "$line" || break
      done
      if [ -n "$line" ]; then
        echo "$line" >> "$rows"
      else
        failed=1
        echo "$base_json" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); r.update(stack="transformers+PEFT", base="dense "+sys.argv[1], compute=sys.argv[1], failed="exit status, see log"); print(json.dumps(r))' "$dt" >> "$rows"
      fi
    done
  done
done

load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
tables="$("$PY" "$HF" report-lora --rows "$rows")"
checks="$("$PY" - "$rows" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in rows if not r.get("failed")]
bad = [f"{r['model']} {r['workload']} {r['stack']} {r['base']} {r['compute']}" for r in ok if not r.get("tokens_match")]
print("- Rows: qlora-train's per-step token counts " + ("equal the Python-built rows in every run"
      if not bad else "DIFFER from the Python-built rows in: " + "; ".join(bad)) + ".")
for r in ok:
    if r.get("note"):
        print(f"- {r['model']} {r['workload']} {r['stack']} {r['base']} {r['compute']}: {r['note']}.")
hf = [r for r in ok if r["stack"] == "transformers+PEFT"]
if hf:
    print("- transformers + PEFT: attention " + ", ".join(sorted({str(r.get('attn_implementation')) for r in hf}))
          + "; LoRA parameter dtypes " + "; ".join(sorted({f"{r['compute']} base: {'/'.join(r['lora_dtypes'])}" for r in hf}))
          + "; peak RSS after load + PEFT wrap: " + ", ".join(f"{r['model']} {r['workload']} {r['compute']} {r['rss_after_load_mib']:.0f} MiB" for r in hf) + ".")
q = [r for r in ok if r["stack"] == "qlora-train"]
if q:
    print("- qlora-train bf16 runs logged 'bf16 operands': " + ", ".join(
          f"{r['model']} {r['workload']} {r['base']}: {'yes' if r['bf16_operands'] else 'NO'}" for r in q if r["compute"] == "bf16") + ".")
print("- Per run: wall s (load + steps + exit) / CPU use of the process (% of one core, " + str(len(__import__("os").sched_getaffinity(0)) * 100)
      + " = all busy) / other processes' share of the machine during the run / idle % just before / attempt: " + "; ".join(
      f"{r['model']} {r['workload']} {r['stack']} {r['base']} {r['compute']} {r['wall_s']} s / {r['cpu_pct']}% / {r['other_pct']}%"
      f" / {r['idle_before']}% / {r['attempt']}" for r in ok) + ".")
print("- Step times (s), warm-up included: " + "; ".join(
      f"{r['model']} {r['workload']} {r['stack']} {r['base']} {r['compute']} " + " ".join(f"{t:.2f}" for t in r["step_s"])
      for r in ok) + ".")
EOF
)"
versions="$("$PY" -c "import torch, transformers, peft, platform; print(f'Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')")"
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
qtv="$("$QT" --version | head -1); $("$QT" --version | grep -i 'cpu bf16 GEMMs' || echo 'cpu bf16 GEMMs: (no line)')"
{
  echo
  echo "### CPU LoRA training, qlora-train vs transformers + PEFT, 134M and 1B shapes (bench_cpu_sizes.sh), $t_start"
  echo
  echo "Machine: $cpu; load average (1/5/15 min) $load_start at the start, $load_end at the end."
  echo "Command: \`bash bench/bench_cpu_sizes.sh $QT_SRC\` (MODELS=\"$MODELS\" STEPS=$STEPS WARMUP=$WARMUP"
  echo "WORKLOADS=\"$WORKLOADS\" OURS=\"$OURS\" HF_DTYPES=\"$HF_DTYPES\" SEQ=$SEQ R=$R ALPHA=$ALPHA DROPOUT=$DROPOUT THREADS=$THREADS)."
  echo "Versions: $qtv; OpenBLAS kernels $core; $versions."
  echo "Setup: seq $SEQ, micro-batch 1, GA 1, gradient checkpointing on, LoRA r $R alpha $ALPHA dropout $DROPOUT on q,k,v,o,gate,up,down,"
  echo "constant lr $LR, clip 1.0; qlora-train with its default optimizer paged_adamw_8bit, transformers with torch.optim.AdamW (fp32 state);"
  echo "the same rows in the same order (rebuilt in Python with qlora-train's rules, checked below). tokens/s over the last $((STEPS - WARMUP))"
  echo "of $STEPS steps. MFU = (4 x decoder linear params + 4 x V x C + 12 x L x H x D x k_avg) x tokens/s / GEMM rate of that precision"
  echo "(fp32: OpenBLAS sgemm, bf16: oneDNN bf16 matmul; the better of 512 x F x C and 512 x C x F); recompute and LoRA FLOPs not counted."
  echo "qlora-train peak RSS ="
  echo "its measured VmHWM (in brackets /usr/bin/time %M), plan = its planned peak; transformers = ru_maxrss. Ratio = qlora-train /"
  echo "transformers at the same compute precision: tokens/s, peak memory."
  echo
  cat "$notes"
  echo "$checks"
  echo
  echo "$tables"
} > "$tmp/section.md"
cat "$tmp/section.md"
if [ "$APPEND" = 1 ]; then
  {
    grep -q '^## CPU training at 134M and 1B shapes (issue 18)' "$here/RESULTS.md" ||
      printf '\n## CPU training at 134M and 1B shapes (issue 18)\n'
    cat "$tmp/section.md"
  } >> "$here/RESULTS.md"
  echo "bench_cpu_sizes.sh: appended to $here/RESULTS.md" >&2
fi
[ -n "${ROWS_OUT:-}" ] && cp "$rows" "$ROWS_OUT"
[ "$failed" = 0 ] || { echo "bench_cpu_sizes.sh: a run failed (see its table row)" >&2; exit 1; }
