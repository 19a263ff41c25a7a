#!/usr/bin/env bash
# The main job of the README: installs dependencies, builds qlora-train and
# fine-tunes the bundled tiny Llama (../shared/data/stories260K) on TinyStories
# with configs/demo.yaml (CPU when there is no GPU), then shows the eval result
# and a generated sample.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
bash tools/setup.sh
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$BUILD_DIR.configure.log" 2>&1 \
  || { cat "$BUILD_DIR.configure.log"; exit 1; }
cmake --build "$BUILD_DIR" -j"$(nproc)" --target qlora-train
QT="$BUILD_DIR/train/qlora-train"
CFG=configs/demo.yaml
rm -rf out/demo
echo "== base model: qlora-train eval $CFG (no checkpoint yet)"
"$QT" eval "$CFG"
echo "== fine-tune: qlora-train $CFG"
"$QT" "$CFG"
echo "== after fine-tuning: qlora-train eval $CFG"
"$QT" eval "$CFG"
echo "== sample: qlora-train generate $CFG --prompt 'Once upon a time'"
"$QT" generate "$CFG" --prompt "Once upon a time" --max-new-tokens 80
echo "== metrics: out/demo/metrics.jsonl, curves: out/demo/report.html"
