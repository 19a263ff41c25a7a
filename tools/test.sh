#!/usr/bin/env bash
# The test command of the README: installs dependencies, configures, builds
# (the CUDA backend too when nvcc is found) and runs every test with CTest.
# Tests labelled `cuda` are skipped (exit 77) on a machine without a GPU.
#   BUILD_DIR (default build)   CMAKE_ARGS (extra configure arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
bash tools/setup.sh
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-} > "$BUILD_DIR.configure.log" 2>&1 \
  || { cat "$BUILD_DIR.configure.log"; exit 1; }
grep -E "CUDA backend" "$BUILD_DIR.configure.log" || true
cmake --build "$BUILD_DIR" -j"$(nproc)"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)" ${CTEST_ARGS:-}
