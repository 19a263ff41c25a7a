# Shared helpers for the multi-process tests (mpi_*.sh), on top of lib.sh.
# Usage: source mpi_lib.sh QT SHARED WORK MPIEXEC
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$1" "$2" "$3"
MPIEXEC=${4:-mpirun}
command -v "$MPIEXEC" > /dev/null || { echo "SKIP: $MPIEXEC not found"; exit 77; }
"$QT" --version | grep -q "multi-process: MPI" || { echo "SKIP: qlora-train built without MPI"; exit 77; }
# Open MPI: root in CI containers, 2 ranks on 2 cores (or fewer), and no
# single-copy shared-memory transport (fails in some containers,
# shared/docs/reference/multi-gpu.md).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMP_WAIT_POLICY=passive # no self-restart (main.c) under the launcher
mpi() { # mpi N ARGS...: N ranks of qlora-train ARGS
  local n=$1; shift
  "$MPIEXEC" --oversubscribe -np "$n" "$QT" "$@"
}
# dp_config OUTDIR: a tiny run without packing (so that a global step holds
# the same examples for any world size) and without dropout (masks are drawn
# per rank), fp32 masters for the comparison of adapters, fp32 compute (a
# bf16 GEMM's bits depend on its row count, which differs between world sizes).
dp_config() {
  base_config "$1" | sed -e 's/packing: true/packing: false/; s/dropout: 0.1/dropout: 0.0/; /^  eval: /d' \
                         -e 's/^  alpha: 8$/  alpha: 8\n  master_weights: fp32/' \
                         -e 's/^model:$/model:\n  compute_dtype: fp32/'
}
# close_losses A B REL: same steps, every |a - b| <= REL |a|
close_losses() {
  awk -v rel="$3" 'NR==FNR { a[$1] = $2; n++; next }
    { m++; if (!($1 in a)) { print "step " $1 " missing"; bad = 1; next }
      d = a[$1] - $2; if (d < 0) d = -d; s = a[$1] < 0 ? -a[$1] : a[$1]
      if (d > rel * s) { printf "step %d: %.17g vs %.17g (rel %.3g)\n", $1, a[$1], $2, d / s; bad = 1 }
      if (d / s > worst) worst = d / s }
    END { if (n != m || n == 0) { print "step counts " n " vs " m; bad = 1 }
          printf "worst relative loss difference %.3g over %d steps\n", worst, n; exit bad }' \
    <(losses "$1") <(losses "$2")
}
# f32_dump FILE: the fp32 payload of a safetensors file, one value a line
f32_dump() {
  local hl
  hl=$(od -An -tu8 -N8 "$1" | tr -d ' ')
  od -An -v -tf4 -w4 -j $((8 + hl)) "$1" | tr -d ' '
}
# close_f32 A B REL: the fp32 tensors of two safetensors files (same layout)
# agree in the max norm: max |a - b| <= REL max |a|
close_f32() {
  paste <(f32_dump "$1") <(f32_dump "$2") | awk -v rel="$3" '
    { d = $1 - $2; if (d < 0) d = -d; if (d > md) md = d; a = $1 < 0 ? -$1 : $1; if (a > ma) ma = a; n++ }
    END { if (n == 0 || ma == 0) { print "no values"; exit 1 }
          printf "%d values, max |a-b| = %.3g, max |a| = %.3g, relative %.3g\n", n, md, ma, md / ma
          exit !(md <= rel * ma) }'
}
