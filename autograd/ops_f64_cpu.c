/* autograd/ops_f64_cpu.c — the CPU op set in fp64 (the finite-difference oracle).
 * The kernels are written once, over `real`, in autograd/kernels/<family>_cpu.inc;
 * ops_f32_cpu.c compiles the same text in float for training. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "autograd/ops.h"
#include "common/status.h"

typedef double real;
#define QT_REAL_F64 1 /* exact libm exp in every kernel (common_cpu.inc rexp_real) */
#define QT_OP(name) qt_op_##name##_cpu_f64
#define QT_GEMM cblas_dgemm

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
