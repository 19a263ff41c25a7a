#!/usr/bin/env bash
# The main job of the README: installs dependencies, builds qlora-train and runs
# the demo on the bundled tiny model (../shared/data/stories260K), on CPU when
# there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
bash tools/setup.sh
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$BUILD_DIR.configure.log" 2>&1 \
  || { cat "$BUILD_DIR.configure.log"; exit 1; }
cmake --build "$BUILD_DIR" -j"$(nproc)" --target qlora-train
QT="$BUILD_DIR/train/qlora-train"
MODEL=../shared/data/stories260K
echo "== qlora-train inspect $MODEL"
"$QT" inspect "$MODEL"
