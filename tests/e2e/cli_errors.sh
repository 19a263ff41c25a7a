#!/usr/bin/env bash
# The CLI's exit statuses and messages on bad input.
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
expect() { # expect RC PATTERN -- command...
  local want=$1 pat=$2; shift 3
  local rc=0
  "$@" > "$WORK/out.txt" 2>&1 || rc=$?
  [ $rc -eq "$want" ] || { cat "$WORK/out.txt"; fail "exit $rc, want $want: $*"; }
  grep -q -- "$pat" "$WORK/out.txt" || { cat "$WORK/out.txt"; fail "no '$pat' from: $*"; }
}
base_config "$WORK/o" > "$WORK/ok.yaml"
printf 'model:\n  path: x\n  quantt: nf4\ndata:\n  train: t\n' > "$WORK/typo.yaml"
printf 'model:\n  path: %s\ndata:\n  train: %s\n' "$WORK/missing-model" "$WORK/train12.jsonl" > "$WORK/nomodel.yaml"
printf 'model:\n  path: %s\ndata:\n  train: %s\n' "$SHARED/data/stories260K" "$WORK/missing.jsonl" > "$WORK/nodata.yaml"
printf '{"text": "a"}\n{"text": 3}\n' > "$WORK/bad.jsonl"
printf 'model:\n  path: %s\ndata:\n  train: %s\n' "$SHARED/data/stories260K" "$WORK/bad.jsonl" > "$WORK/baddata.yaml"
expect 2 "usage" -- "$QT"
expect 2 "unknown option" -- "$QT" --frobnicate
expect 2 "missing CONFIG.yaml" -- "$QT" eval
expect 2 "missing --prompt" -- "$QT" generate "$WORK/ok.yaml"
expect 2 "unknown option '--bogus'" -- "$QT" eval "$WORK/ok.yaml" --bogus 1
expect 1 "cannot open the config" -- "$QT" "$WORK/none.yaml"
expect 1 "typo.yaml:3:3: unknown key 'model.quantt' (did you mean 'model.quant'?)" -- "$QT" "$WORK/typo.yaml"
expect 1 "did you mean 'training.learning_rate'" -- "$QT" "$WORK/ok.yaml" --set training.learnig_rate=1
expect 1 "missing-model: not a directory" -- "$QT" "$WORK/nomodel.yaml"
expect 1 "missing.jsonl" -- "$QT" "$WORK/nodata.yaml"
expect 1 "bad.jsonl:2" -- "$QT" "$WORK/baddata.yaml"
expect 1 "no checkpoint under output.dir" -- "$QT" export "$WORK/ok.yaml"
expect 1 "no adapter_config.json" -- "$QT" eval "$WORK/ok.yaml" --checkpoint "$WORK"
expect 1 "training.device: cuda, but" -- "$QT" "$WORK/ok.yaml" --set training.device=cuda
expect 1 "data.seq_len 8192 is longer than the model's max_position_embeddings 512" -- "$QT" "$WORK/ok.yaml" --set data.seq_len=8192
expect 1 "out of memory: arena 'autograd activations'" -- "$QT" "$WORK/ok.yaml" --set data.seq_len=512 --set training.micro_batch_size=4096
pass "CLI errors: 16 cases with their exit status and message"
