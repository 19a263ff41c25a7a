#!/usr/bin/env bash
# The CPU tests as other x86-64 CPUs would run them (test policy: tests/README.md).
#   bash tools/test_cpus.sh [BUILD_DIR]     (default build; built by tools/test.sh)
# 1. The whole CPU suite (every test but label cuda) under OpenBLAS kernel sets
#    other than the one this CPU picks: Prescott (SSE3), Haswell (AVX2, when
#    the CPU has AVX2+FMA) and SkylakeX (AVX-512, when it has AVX-512).
# 2. The unit tests under qemu-x86_64 user-mode emulation of a Nehalem
#    (x86-64-v2, no AVX: the baseline function clones, OpenBLAS's Nehalem
#    kernels) and a Haswell (the AVX2 clones), so a result that depends on the
#    CPU fails here and not on the next machine. qemu-user is installed from
#    Debian's packages when missing (tools/setup.sh qemu-user).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
[ -x "$B/train/qlora-train" ] || { echo "test_cpus: build $B first (bash tools/test.sh)" >&2; exit 1; }
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
own=$(OMP_WAIT_POLICY=passive "$B/train/qlora-train" --version | sed -n 's/^blas: core \([^ ]*\).*/\1/p')
echo "test_cpus: this CPU's OpenBLAS core: ${own:-unknown}"
cores=(Prescott)
has avx2 fma && cores+=(Haswell)
has avx512f avx512bw avx512vl avx512dq && cores+=(SkylakeX)
runs=0
failed=()
for c in "${cores[@]}"; do
  echo "== test_cpus: OPENBLAS_CORETYPE=$c, every CPU test"
  if OPENBLAS_CORETYPE=$c ctest --test-dir "$B" --output-on-failure -j"$(nproc)" -LE cuda; then
    runs=$((runs + 1))
  else
    failed+=("OPENBLAS_CORETYPE=$c")
  fi
done
command -v qemu-x86_64 > /dev/null 2>&1 || bash tools/setup.sh qemu-user
for cpu in Nehalem Haswell; do
  echo "== test_cpus: qemu-x86_64 -cpu $cpu, unit tests"
  # qemu runs AVX2 code ~10x slower than SSE code: under the Haswell model the
  # stories260K golden checks and the decoder checks (test_model_lora and
  # test_model_lora_decode, each past 10 min there) are left out; their kernels
  # are the ones test_tape_decoder and test_model_lora_units run. So are the
  # GPU attention's host-run block bodies (test_attn_flash and its nvcc twin:
  # past 7 min there, glibc's FMA expf per score); the Nehalem model and the
  # OpenBLAS core runs above still run them.
  skip='^$'
  [ "$cpu" = Haswell ] && skip='^(test_model_lora(_decode)?|test_attn_flash(_host)?)$'
  # OMP_WAIT_POLICY set: qlora-train would otherwise restart itself natively.
  # OPENBLAS_CORETYPE names the emulated CPU's kernels: a value preset for the
  # host CPU (some machines set one) could name instructions qemu's model lacks.
  if QLORA_TEST_EMULATOR="qemu-x86_64 -cpu $cpu" OMP_WAIT_POLICY=passive OPENBLAS_CORETYPE=$cpu \
     ctest --test-dir "$B" --output-on-failure -j"$(nproc)" -L unit -LE "cuda|slow|e2e" -E "$skip"; then
    runs=$((runs + 1))
  else
    failed+=("qemu -cpu $cpu")
  fi
done
[ ${#failed[@]} -eq 0 ] || echo "test_cpus: failed under: ${failed[*]}"
echo "test_cpus: $runs passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
