#!/usr/bin/env bash
# Builds the GPU check bundle on a machine with the CUDA toolkit (no GPU
# needed) and writes a self-contained folder for a machine that has a GPU but
# may have nothing else: no compiler, no CMake, no network.
#
#   bash tools/gpu_bundle.sh OUTDIR          then, on the GPU machine:
#   bash OUTDIR/run.sh RESULTS_DIR           (tools/gpu_run.sh, copied)
#
# OUTDIR holds run.sh, MANIFEST (what is inside, sizes, commit) and
# bundle.tar.gz: bin/ (qlora-train, every test labelled cuda, the GPU
# benchmarks; Release, sm_90 machine code + compute_90 PTX), lib/ (every shared
# library they load except the C library and the CUDA runtime / cuBLAS /
# cuBLASLt, which come from the GPU machine's own CUDA 13 toolkit), shared/data
# (stories260K, TinyStories, the Llama-3 tokenizer), tests/ (the end-to-end GPU
# script), bench/ (bench_gpu_train.sh and the two Python files it runs: the
# GPU training benchmark of issue 14 item 10, tools/gpu_run.sh step 6) and,
# with BNB_WHEEL, python/ (bitsandbytes for that benchmark's transformers +
# PEFT + bitsandbytes rows; the GPU machine's python3 has torch, transformers
# and peft but not bitsandbytes, and cannot download it). Paths inside
# are relative to the bundle. The folder must stay within 64 MiB (the device
# tool's carry limit, working tree included); the script fails if it does not.
#
# Environment: BUILD_DIR (default build-gpu-bundle), CUDA_ARCHS (default 90),
# BNB_WHEEL (a bitsandbytes manylinux x86_64 wheel, e.g. from
#   pip download bitsandbytes==0.50.2 --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_24_x86_64 -d DIR
# unpacked into python/ without the native libraries of other CUDA / ROCm /
# XPU versions: BNB_CUDA (default "130 132": libbitsandbytes_cuda130.so and
# _cuda132.so, for a torch built with CUDA 13.0 / 13.2; the CPU library is
# always kept). The 43 MiB wheel would take most of the 64 MiB; trimmed it is
# 8.3 MiB, ~7 MiB compressed. Without BNB_WHEEL the benchmark records bitsandbytes as not
# available.)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bash tools/gpu_bundle.sh OUTDIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$1
SHARED=$(cd "$ROOT/../shared" 2>/dev/null && pwd) || { echo "gpu_bundle: ../shared (the bundled data) not found beside $ROOT" >&2; exit 1; }
BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu-bundle}
[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
command -v nvcc > /dev/null || { echo "gpu_bundle: nvcc not found; the bundle needs the CUDA toolkit to build" >&2; exit 1; }

echo "gpu_bundle: building (Release, CUDA architectures ${CUDA_ARCHS:-90}) in $BUILD_DIR"
# Without oneDNN (the CPU's bf16 GEMMs, a 40 MiB library): the bundle must fit
# in 64 MiB, and its CPU references compute in fp32.
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DQLORA_CUDA=ON -DQLORA_DNNL=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" > "$BUILD_DIR.configure.log" 2>&1 \
  || { cat "$BUILD_DIR.configure.log"; exit 1; }
cmake --build "$BUILD_DIR" -j"$(nproc)" > "$BUILD_DIR.build.log" 2>&1 || { tail -40 "$BUILD_DIR.build.log"; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/shared/data" "$stage/tests/e2e"
# The tests labelled cuda, by name from CTest (so a new one is bundled too).
mapfile -t tests < <(ctest --test-dir "$BUILD_DIR" -N -L cuda | sed -n 's/^ *Test *#[0-9]*: //p')
for t in "${tests[@]}"; do
  case $t in e2e_*) continue ;; esac
  f=$(find "$BUILD_DIR/tests" -type f -name "$t" -perm -u+x | head -n 1)
  [ -n "$f" ] || { echo "gpu_bundle: test $t: executable not found" >&2; exit 1; }
  cp "$f" "$stage/bin/"
done
cp "$BUILD_DIR/train/qlora-train" "$stage/bin/"
for b in "$BUILD_DIR"/bench/*_gpu; do [ -x "$b" ] && cp "$b" "$stage/bin/"; done
strip --strip-debug "$stage"/bin/* 2>/dev/null || true
cp "$ROOT/tests/e2e/gpu_vs_cpu.sh" "$ROOT/tests/e2e/gpu_resume.sh" "$ROOT/tests/e2e/mpi_nccl1.sh" "$ROOT/tests/e2e/lib.sh" \
  "$stage/tests/e2e/"
cp -r "$SHARED/data/stories260K" "$SHARED/data/tinystories" "$stage/shared/data/"
# The GPU training benchmark (tools/gpu_run.sh step 6): its scripts and the
# Llama-3 tokenizer its random models use (9 MB, ~2 MB compressed).
mkdir -p "$stage/bench" "$stage/shared/data/tokenizers"
cp "$ROOT/bench/bench_gpu_train.sh" "$ROOT/bench/bench_train_hf.py" "$ROOT/bench/make_random_llama.py" "$stage/bench/"
cp -r "$SHARED/data/tokenizers/llama3" "$stage/shared/data/tokenizers/"
chmod -R u+w "$stage/shared"
if [ -n "${BNB_WHEEL:-}" ]; then
  [ -f "$BNB_WHEEL" ] || { echo "gpu_bundle: BNB_WHEEL=$BNB_WHEEL: no such file" >&2; exit 1; }
  command -v unzip > /dev/null || { echo "gpu_bundle: BNB_WHEEL needs unzip" >&2; exit 1; }
  mkdir -p "$stage/python"
  unzip -q "$BNB_WHEEL" -d "$stage/python" || { echo "gpu_bundle: cannot unpack $BNB_WHEEL" >&2; exit 1; }
  [ -d "$stage/python/bitsandbytes" ] || { echo "gpu_bundle: $BNB_WHEEL holds no bitsandbytes/ package" >&2; exit 1; }
  keep=" ${BNB_CUDA:-130 132} "
  for f in "$stage"/python/bitsandbytes/libbitsandbytes_*.so; do
    v=$(basename "$f" .so); v=${v#libbitsandbytes_}
    case $v in cpu) ;; cuda*) [[ $keep == *" ${v#cuda} "* ]] || rm -f "$f" ;; *) rm -f "$f" ;; esac
  done
  ls "$stage"/python/bitsandbytes/libbitsandbytes_cuda*.so > /dev/null 2>&1 ||
    { echo "gpu_bundle: $BNB_WHEEL has no libbitsandbytes_cuda{${BNB_CUDA:-130 132}}.so" >&2; exit 1; }
  echo "gpu_bundle: bitsandbytes from $(basename "$BNB_WHEEL"), native libraries kept:" \
    "$(cd "$stage/python/bitsandbytes" && ls libbitsandbytes_*.so | tr '\n' ' ')"
fi

# Shared libraries: everything ldd resolves, except glibc's own and CUDA's.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libcudart|libcublas|libcublasLt|libcuda\.so)'
for f in "$stage"/bin/*; do
  ldd "$f" | awk '/=> \// { print $1, $3 }'
done | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] && continue
  # The C++ runtime only as a fallback (run.sh adds lib/compat when the GPU
  # machine has none): the machine's CUDA libraries may need its newer one.
  case $name in libstdc++.so*|libgcc_s.so*) mkdir -p "$stage/lib/compat"; cp -L "$path" "$stage/lib/compat/$name" ;;
                *) cp -L "$path" "$stage/lib/$name" ;; esac
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/bundle.tar.gz" "$OUT/run.sh" "$OUT/MANIFEST"
commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit-dirty"
{
  echo "qlora-train GPU bundle, commit $commit, built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
  echo "CUDA architectures: ${CUDA_ARCHS:-90}; nvcc: $(nvcc --version | tail -n 1)"
  echo "needs on the GPU machine: bash, coreutils (timeout), tar, gzip, the NVIDIA driver, libcudart.so.13 + libcublasLt.so.13 + libcublas.so.13"
  echo "optional there: libnccl.so.2 (the 1-rank NCCL check; 200+ MiB, not bundled, opened at run time) and mpirun"
  echo "training benchmark (step 6): python3 with torch, transformers, peft, tokenizers, safetensors;" \
    "bitsandbytes: $( [ -d "$stage/python/bitsandbytes" ] && echo "bundled in python/ ($(basename "$BNB_WHEEL"))" || echo "not bundled (BNB_WHEEL unset)")"
  (cd "$stage" && find . -type f | sort | xargs du -k | awk '{ printf "%8d KiB  %s\n", $1, $2 }')
} > "$stage/MANIFEST"
tar -C "$stage" -czf "$OUT/bundle.tar.gz" .
cp "$stage/MANIFEST" "$OUT/MANIFEST"
cp "$ROOT/tools/gpu_run.sh" "$OUT/run.sh"
size=$(du -sk "$OUT" | cut -f1)
echo "gpu_bundle: $OUT: $(ls "$stage"/bin/test_* | wc -l) cuda tests, $(ls "$stage/bin" | wc -l) programs, $(ls "$stage/lib" | wc -l) libraries, $((size / 1024)) MiB"
[ "$size" -le $((64 * 1024)) ] || { echo "gpu_bundle: $OUT is $((size / 1024)) MiB, over the 64 MiB limit" >&2; exit 1; }
