#!/usr/bin/env bash
# Installs qlora-train's build and test dependencies from Debian packages.
# Used by the README and by .ci/run. The CUDA toolkit (nvcc, cuBLASLt, cuRAND,
# NCCL) is expected to be installed already; without it the CPU backend builds.
# OpenMPI: multi-process training (mpirun) and its tests (tests/e2e/mpi_*.sh).
# jq: the generate prompt-file test reads the JSONL it writes (tests/generate/generate_cli.sh).
# oneDNN (libdnnl-dev): the CPU's bf16 GEMMs (model.compute_dtype bf16 on AVX512-BF16 / AMX CPUs).
set -euo pipefail
# Extra package names as arguments are installed too (tools/test_cpus.sh: qemu-user).
pkgs=(build-essential cmake pkg-config libyaml-dev libcjson-dev libcmocka-dev
      libopenblas-dev libpcre2-dev libutf8proc-dev libomp-dev clang
      libopenmpi-dev openmpi-bin jq libdnnl-dev "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi
