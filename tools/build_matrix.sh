#!/usr/bin/env bash
# Builds qlora-train (program, tests, benchmarks) in every build type with
# every compiler, CPU-only and (when nvcc is found) with CUDA, warnings as
# errors. CI runs it; it proves a user's `-DCMAKE_BUILD_TYPE=Release` or a
# packager's clang build compiles.
#   bash tools/build_matrix.sh [WORK_DIR]    (default /tmp/qlora-matrix; removed at the end)
# Environment: BUILD_TYPES (default "Debug RelWithDebInfo Release MinSizeRel"),
# COMPILERS (default "gcc clang").
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/qlora-matrix}
[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
backends=(OFF)
command -v nvcc > /dev/null 2>&1 && backends+=(ON)
ok=0
failed=()
mkdir -p "$W"
for cc in ${COMPILERS:-gcc clang}; do
  for be in "${backends[@]}"; do
    for bt in ${BUILD_TYPES:-Debug RelWithDebInfo Release MinSizeRel}; do
      name="$cc-cuda$be-$bt"
      d="$W/$name"
      rm -rf "$d"
      start=$(date +%s)
      # sm_90 only for the CUDA cells (the default 80;90 is built by tools/test.sh in CI)
      if CC=$cc cmake -S . -B "$d" -DCMAKE_BUILD_TYPE="$bt" -DQLORA_CUDA="$be" -DQLORA_WERROR=ON \
           -DCMAKE_CUDA_ARCHITECTURES=90 > "$d.log" 2>&1 \
         && cmake --build "$d" -j"$(nproc)" >> "$d.log" 2>&1; then
        ok=$((ok + 1))
        echo "build_matrix: $name ok ($(( $(date +%s) - start )) s)"
      else
        failed+=("$name")
        echo "build_matrix: $name FAILED; the end of its log:"
        grep -E "error|warning" "$d.log" | head -20 || tail -20 "$d.log"
      fi
      rm -rf "$d"
    done
  done
done
echo "build_matrix: $ok passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
