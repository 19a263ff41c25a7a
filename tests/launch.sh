#!/bin/sh
# Runs one test program, under $QLORA_TEST_EMULATOR when that is set (CI uses
# `qemu-x86_64 -cpu Nehalem` and `-cpu Haswell` to run the CPU tests as on
# older x86-64 CPUs: the baseline and AVX2 function clones, other OpenBLAS
# kernels). Word splitting of the variable is intended.
if [ -n "${QLORA_TEST_EMULATOR:-}" ]; then
  # shellcheck disable=SC2086
  exec $QLORA_TEST_EMULATOR "$@"
fi
exec "$@"
