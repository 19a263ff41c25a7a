#!/usr/bin/env bash
# Equivalence with the reference stack: 20 steps (fp32 dense base, 32-bit
# AdamW, no dropout, the same initial LoRA weights, the same batches) give the
# per-step losses transformers + PEFT gave (tools/reference/make_train_fixture.py)
# within 1e-4 relative.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
GOLD=$(cd "$(dirname "$0")/../golden/train" && pwd)
cat > "$WORK/ref.yaml" <<YAML
model:
  path: $SHARED/data/stories260K
  quant: none
  double_quant: false
lora:
  r: 4
  alpha: 8
  dropout: 0.0
  target_modules: all-linear
  master_weights: fp32
  init_adapter: $GOLD/init_adapter
data:
  train: $SHARED/data/tinystories/train.jsonl
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
  gradient_checkpointing: false
  threads: 1
output:
  dir: $WORK/out
YAML
tr -d ' \n' < "$GOLD/losses.json" | sed -E 's/.*"loss":\[([^]]*)\].*/\1/' | tr ',' '\n' > "$WORK/ref.txt"
# both subnormal modes: flushed to zero (the default, training.flush_subnormals)
# and IEEE; transformers + PEFT ran in IEEE mode
for flush in true false; do
  rm -rf "$WORK/out"
  "$QT" "$WORK/ref.yaml" --set training.flush_subnormals=$flush > "$WORK/train.log" 2>&1 ||
    { cat "$WORK/train.log"; fail "training (flush_subnormals $flush)"; }
  losses "$WORK/out/metrics.jsonl" | awk '{print $2}' > "$WORK/ours.txt"
  [ "$(wc -l < "$WORK/ours.txt")" -eq 20 ] || fail "expected 20 steps"
  echo "training.flush_subnormals: $flush"
  paste "$WORK/ours.txt" "$WORK/ref.txt" | awk '
    { d = $1 - $2; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > worst) worst = r;
      printf "step %2d: qlora-train %.9f  transformers+PEFT %.9f  rel %.2e\n", NR, $1, $2, r }
    END { printf "worst relative difference %.3e\n", worst; exit !(worst <= 1e-4) }' \
    || fail "per-step losses differ from transformers + PEFT by more than 1e-4 (flush_subnormals $flush)"
done
pass "20 steps match transformers + PEFT within 1e-4, subnormals flushed and IEEE"
