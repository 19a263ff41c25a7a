# Shared helpers for the end-to-end tests. Usage: source lib.sh QT SHARED WORK
QT=$1
SHARED=$2
WORK=$3
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
rm -rf "$WORK"
mkdir -p "$WORK"
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }
# losses FILE: the "step loss" pairs of the training lines of a metrics.jsonl
losses() { grep '"loss"' "$1" | sed -E 's/.*"step":([0-9]+),"loss":([^,]+),.*/\1 \2/'; }
# A small training set: the first N TinyStories records.
head -n 12 "$SHARED/data/tinystories/train.jsonl" > "$WORK/train12.jsonl"
head -n 6 "$SHARED/data/tinystories/valid.jsonl" > "$WORK/valid6.jsonl"
# base_config OUTDIR [extra yaml lines]: a tiny run on stories260K
base_config() {
  cat <<YAML
model:
  path: $SHARED/data/stories260K
  quant: nf4
lora:
  r: 4
  alpha: 8
  dropout: 0.1
data:
  train: $WORK/train12.jsonl
  eval: $WORK/valid6.jsonl
  seq_len: 64
  packing: true
training:
  seed: 7
  micro_batch_size: 2
  gradient_accumulation_steps: 4
  max_steps: 8
  learning_rate: 2e-3
  warmup_steps: 2
  optimizer: paged_adamw_8bit
  logging_steps: 1
  threads: 1
output:
  dir: $1
YAML
}
