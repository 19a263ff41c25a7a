#!/usr/bin/env bash
# The newer model families against the reference stack: for qwen3, gemma2,
# gemma3, phi3 and mistral (windows of 16 in 128-token rows), a 20-step
# fine-tune (fp32 dense base, 32-bit AdamW, no dropout, the same initial LoRA
# weights, the same batches) gives the per-step losses transformers + PEFT gave
# (tools/reference/make_family_train_fixture.py) within 1e-4 relative; then the
# merged export of the trained adapter evaluates like base + adapter (1e-5).
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
GOLD=$(cd "$(dirname "$0")/../golden/train" && pwd)
rel() { echo "$1 $2" | awk '{d=$1-$2; if (d<0) d=-d; print d/($2<0?-$2:$2)}'; }
loss_of() { sed -E 's/.*"loss":([^,]+),.*/\1/' <<< "$1"; }
for fam in qwen3 gemma2 gemma3 phi3 mistral; do
  # the fixture's base beside stories260K's tokenizer (the models use its 512 ids)
  M="$WORK/$fam-model"
  mkdir -p "$M"
  ln -s "$GOLD/fam_$fam/config.json" "$GOLD/fam_$fam/model.safetensors" "$M/"
  for f in tokenizer.json tokenizer_config.json tokenizer.model special_tokens_map.json; do
    [ -f "$SHARED/data/stories260K/$f" ] && ln -s "$SHARED/data/stories260K/$f" "$M/"
  done
  cat > "$WORK/$fam.yaml" <<YAML
model:
  path: $M
  quant: none
  double_quant: false
  compute_dtype: fp32
lora:
  r: 4
  alpha: 8
  dropout: 0.0
  target_modules: all-linear
  master_weights: fp32
  init_adapter: $GOLD/fam_$fam/init_adapter
data:
  train: $SHARED/data/tinystories/train.jsonl
  eval: $WORK/valid6.jsonl
  seq_len: 128
  packing: false
  shuffle: false
training:
  micro_batch_size: 2
  gradient_accumulation_steps: 1
  max_steps: 20
  learning_rate: 1e-3
  lr_scheduler: constant
  warmup_steps: 0
  weight_decay: 0.0
  max_grad_norm: 1.0
  optimizer: adamw_32bit
  gradient_checkpointing: true
  threads: 1
output:
  dir: $WORK/$fam-out
YAML
  tr -d ' \n' < "$GOLD/fam_$fam/losses.json" | sed -E 's/.*"loss":\[([^]]*)\].*/\1/' | tr ',' '\n' > "$WORK/$fam-ref.txt"
  "$QT" "$WORK/$fam.yaml" > "$WORK/$fam-train.log" 2>&1 || { cat "$WORK/$fam-train.log"; fail "$fam: training"; }
  losses "$WORK/$fam-out/metrics.jsonl" | awk '{print $2}' > "$WORK/$fam-ours.txt"
  [ "$(wc -l < "$WORK/$fam-ours.txt")" -eq 20 ] || fail "$fam: expected 20 steps"
  paste "$WORK/$fam-ours.txt" "$WORK/$fam-ref.txt" | awk -v fam="$fam" '
    { d = $1 - $2; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > worst) worst = r }
    END { printf "%s: 20 steps, worst relative loss difference vs transformers+PEFT %.3e\n", fam, worst; exit !(worst <= 1e-4) }' \
    || { paste "$WORK/$fam-ours.txt" "$WORK/$fam-ref.txt"; fail "$fam: per-step losses differ from transformers + PEFT by more than 1e-4"; }
  # merged export of the trained adapter == base + adapter
  ref=$("$QT" eval "$WORK/$fam.yaml" 2>/dev/null)
  "$QT" export "$WORK/$fam.yaml" --format merged --out "$WORK/$fam-merged" --set export.dtype=fp32 \
    --set export.merge_base=original 2> "$WORK/$fam-export.log" || { cat "$WORK/$fam-export.log"; fail "$fam: merged export"; }
  mer=$("$QT" eval "$WORK/$fam.yaml" --set model.path="$WORK/$fam-merged" --set output.dir="$WORK/none-such" 2>/dev/null)
  r=$(rel "$(loss_of "$mer")" "$(loss_of "$ref")")
  awk -v r="$r" 'BEGIN{exit !(r <= 1e-5)}' || fail "$fam: merged eval $mer vs base+adapter $ref: rel $r"
  echo "$fam: merged export eval $(loss_of "$mer") vs base+adapter $(loss_of "$ref") (rel $r)"
done
pass "qwen3, gemma2, gemma3, phi3, mistral (sliding windows): 20 steps match transformers + PEFT within 1e-4; merged exports evaluate as base + adapter"
