#!/usr/bin/env bash
# The config fingerprint a checkpoint records (trainer_state.json hashes.config)
# stays what earlier versions wrote for the same config, so their checkpoints
# resume: configs/demo.yaml hashes to the value qlora-train f976e17 recorded
# (tests/golden/train/config_fingerprint.json). A new config key changes it
# unless it is left out of the hash (train/train_loop.c config_fingerprint).
set -euo pipefail
source "$(dirname "$0")/lib.sh" "$@"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
want=$(sed -n 's/^ *"config": "\([0-9a-f]*\)".*/\1/p' "$SRC/tests/golden/train/config_fingerprint.json")
[ ${#want} -eq 64 ] || fail "no fingerprint in tests/golden/train/config_fingerprint.json"
# configs/demo.yaml names ../shared relative to the working directory: run
# where that resolves to the shared data (the repository root beside ../shared)
[ -d "$SRC/../shared/data/stories260K" ] || { echo "SKIP: no ../shared beside $SRC"; exit 77; }
(cd "$SRC" && "$QT" configs/demo.yaml --set output.dir="$WORK/o" --set training.max_steps=1 \
   --set output.save_steps=1 --set training.eval_steps=0 > "$WORK/run.log" 2>&1) \
  || { cat "$WORK/run.log"; fail "demo run"; }
got=$(sed -n 's/^[[:space:]]*"config":[[:space:]]*"\([0-9a-f]*\)".*/\1/p' "$WORK/o/checkpoint-000001/trainer_state.json")
[ "$got" = "$want" ] || fail "configs/demo.yaml fingerprints as $got; checkpoints of earlier versions recorded $want and would no longer resume"
pass "configs/demo.yaml fingerprint $got equals the one earlier versions recorded"
