/* autograd/ops_f32_cpu.c — the CPU op set in fp32 (the training path).
 * The kernels are written once, over `real`, in autograd/kernels/<family>_cpu.inc;
 * ops_f64_cpu.c compiles the same text in double for the gradient checks. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "autograd/ops.h"
#include "common/status.h"

typedef float real;
#define QT_OP(name) qt_op_##name##_cpu
#define QT_GEMM cblas_sgemm

/* The kernels run with floating-point exceptions untrapped (nothing here
 * enables traps), which lets GCC if-convert the compares in rexpf's range
 * selects and the kernels' selects so that `#pragma omp simd` loops vectorise
 * (GCC 12 -O2 does not otherwise); rounding is unchanged (-fno-trapping-math
 * does not license reassociation or contraction). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "autograd/kernels/common_cpu.inc"
#include "autograd/kernels/embedding_cpu.inc"
#include "autograd/kernels/rmsnorm_cpu.inc"
#include "autograd/kernels/add_cpu.inc"
#include "autograd/kernels/linear_cpu.inc"
#include "autograd/kernels/lora_cpu.inc"
#include "autograd/kernels/rope_cpu.inc"
#include "autograd/kernels/attention_cpu.inc"
#include "autograd/kernels/swiglu_cpu.inc"
#include "autograd/kernels/geglu_cpu.inc"
#include "autograd/kernels/slice_cpu.inc"
#include "autograd/kernels/cross_entropy_cpu.inc"

float qt_op_exp_cpu(float x) { return rexpf(x); }
float qt_op_exp_le0_cpu(float x) { return rexpf_le0(x); }

/* Defined once (here, not in the twins' shared text): both twins need the same count. */
int64_t qt_op_attention_work_elems(int64_t T, const qt_att_opts *opts) {
  return (opts && opts->softcap > 0 ? 2 : 1) * T * T;
}
