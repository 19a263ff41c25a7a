#!/usr/bin/env bash
# export --format merged, then eval of the merged model equals eval of base +
# adapter (fp32 compute, same base); export --format peft round-trips.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
rel() { echo "$1 $2" | awk '{d=$1-$2; if (d<0) d=-d; print d/($2<0?-$2:$2)}'; }
loss_of() { sed -E 's/.*"loss":([^,]+),.*/\1/' <<< "$1"; }

for quant in none nf4; do
  base_config "$WORK/$quant" > "$WORK/$quant.yaml"
  # fp32 compute: the merged model and base + adapter must agree to 1e-5
  sed -i "s/quant: nf4/quant: $quant/; s/max_steps: 8/max_steps: 4/; s/^model:\$/model:\n  compute_dtype: fp32/" "$WORK/$quant.yaml"
  [ $quant = none ] && sed -i 's/^  quant: none/  quant: none\n  double_quant: false/' "$WORK/$quant.yaml"
  "$QT" "$WORK/$quant.yaml" > "$WORK/$quant.log" 2>&1 || { cat "$WORK/$quant.log"; fail "train ($quant)"; }
  ref=$("$QT" eval "$WORK/$quant.yaml" 2>/dev/null)
  base=$("$QT" eval "$WORK/$quant.yaml" --set output.dir="$WORK/none-such" 2>/dev/null)
  [ "$(loss_of "$ref")" != "$(loss_of "$base")" ] || fail "the adapter changes nothing ($quant)"
  mb=original; [ $quant = nf4 ] && mb=nf4_roundtrip
  "$QT" export "$WORK/$quant.yaml" --format merged --out "$WORK/$quant-merged" \
    --set export.dtype=fp32 --set export.merge_base=$mb 2> "$WORK/$quant-export.log" || { cat "$WORK/$quant-export.log"; fail "export ($quant)"; }
  for f in config.json model.safetensors.index.json model-00001-of-00001.safetensors tokenizer.json; do
    [ -f "$WORK/$quant-merged/$f" ] || fail "merged export lacks $f"
  done
  ! grep -q quantization_config "$WORK/$quant-merged/config.json" || fail "quantization_config left in config.json"
  merged=$("$QT" eval "$WORK/$quant.yaml" --set model.path="$WORK/$quant-merged" --set model.quant=none \
           --set model.double_quant=false --set export.merge_base=original --set output.dir="$WORK/none-such" 2>/dev/null)
  r=$(rel "$(loss_of "$merged")" "$(loss_of "$ref")")
  awk -v r="$r" 'BEGIN{exit !(r <= 1e-5)}' || fail "merged eval $merged vs base+adapter $ref ($quant): rel $r"
  pass "merged ($quant base, merge_base $mb, fp32): eval $(loss_of "$merged") vs base+adapter $(loss_of "$ref"), rel $r"
  "$QT" export "$WORK/$quant.yaml" --format peft --out "$WORK/$quant-peft" --set export.dtype=bf16 2>/dev/null || fail "peft export"
  peft=$("$QT" eval "$WORK/$quant.yaml" --checkpoint "$WORK/$quant-peft" 2>/dev/null)
  [ "$(loss_of "$peft")" = "$(loss_of "$ref")" ] || fail "PEFT export eval $peft != $ref"
  pass "PEFT export ($quant): eval identical ($(loss_of "$peft"))"
done
