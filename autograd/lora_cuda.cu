/* autograd/lora_cuda.cu — the LoRA branch y += scale * (dropout(x) A^T) B^T on
 * bf16 storage (ops_cuda.h; formulas and PEFT source in kernels/lora_cpu.inc).
 * The products are the cuBLASLt GEMM of linear_cuda.cu; dropout is an
 * elementwise kernel that draws its keep bits from the Philox stream of the
 * descriptor (common/philox_hd.h, the CPU's bijection) where it applies them:
 * forward when it writes xd, backward when it masks the input gradient. No
 * mask is stored or uploaded; the bits equal qt_philox_keep_mask's. */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/kernels/gemm_cuda.cuh"
#include "autograd/ops_cuda.h"
#include "common/philox_hd.h"

/* Each thread owns the four elements 4 t .. 4 t + 3 of the flat (N, In)
 * input: exactly the words of Philox counter block t, so one Philox
 * evaluation serves four elements (the last thread's group may be partial). */
static inline unsigned grid_for_groups(int64_t n) { return grid_for((n + 3) / 4); }

/* xd (n) = keep ? x * keep_scale : 0 (torch nn.Dropout: x * mask / (1 - p)) */
__global__ void lora_dropout_kernel(uint16_t *xd, const uint16_t *x, qt_dropout_cuda d,
                                    float keep_scale, int64_t n) {
  int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int64_t i0 = 4 * t;
  if (i0 >= n) return;
  unsigned keep = qt_dropout_keep4_hd((uint64_t)t, d.key, d.subsequence, d.threshold);
#pragma unroll
  for (int w = 0; w < 4; w++) {
    int64_t i = i0 + w;
    if (i < n) xd[i] = (keep >> w) & 1u ? to_bf16(ld_bf16(x, i) * keep_scale) : (uint16_t)0;
  }
}

/* dx (n) (+)= keep ? work * keep_scale : 0, keep recomputed as in the forward */
__global__ void lora_dropout_backward_kernel(uint16_t *dx, int acc, const uint16_t *work,
                                             qt_dropout_cuda d, float keep_scale, int64_t n) {
  int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int64_t i0 = 4 * t;
  if (i0 >= n) return;
  unsigned keep = qt_dropout_keep4_hd((uint64_t)t, d.key, d.subsequence, d.threshold);
#pragma unroll
  for (int w = 0; w < 4; w++) {
    int64_t i = i0 + w;
    if (i < n) st_grad(dx, i, acc, (keep >> w) & 1u ? ld_bf16(work, i) * keep_scale : 0.0f);
  }
}

/* A descriptor a kernel can use: threshold in [-1, UINT32_MAX], keep_scale > 0. */
static void check_drop(const qt_dropout_cuda *d) {
  QT_ASSERTF(d->threshold >= -1 && d->threshold <= (int64_t)UINT32_MAX && d->keep_scale > 0,
             "lora dropout: threshold %lld or keep_scale %g out of range",
             (long long)d->threshold, d->keep_scale);
}

extern "C" qt_status qt_op_lora_dropout_cuda(uint16_t *xd, const uint16_t *x,
                                             const qt_dropout_cuda *drop, int64_t N, int64_t In,
                                             void *stream) {
  QT_ASSERT(drop && N >= 0 && In > 0);
  if (N == 0) return QT_OK;
  check_drop(drop);
  lora_dropout_kernel<<<grid_for_groups(N * In), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(
      xd, x, *drop, (float)drop->keep_scale, N * In);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_lora_forward_cuda(uint16_t *y, uint16_t *u, uint16_t *xd_out,
                                             const uint16_t *x, const qt_dropout_cuda *drop,
                                             const uint16_t *A, const uint16_t *B, double scale,
                                             int64_t N, int64_t In, int64_t O, int64_t R,
                                             qt_gemm_cuda *g, void *stream) {
  QT_ASSERT(R > 0 && In > 0);
  if (N == 0) return QT_OK;
  const uint16_t *xd = x; /* (N, In) */
  if (drop) {
    QT_ASSERT(xd_out != NULL);
    QT_TRY(qt_op_lora_dropout_cuda(xd_out, x, drop, N, In, stream));
    xd = xd_out;
  }
  /* u (N, R) = xd A^T */
  QT_TRY(qt_gemm_cuda_run(g, 0, 1, N, R, In, 1.0f, xd, In, A, In, 0.0f, u, 0, R, stream));
  /* y (N, O) += scale u B^T */
  return qt_gemm_cuda_run(g, 0, 1, N, O, R, (float)scale, u, R, B, R, 1.0f, y, 0, O, stream);
}

extern "C" qt_status qt_op_lora_backward_cuda(uint16_t *dx, int acc, uint16_t *dA, uint16_t *dB,
                                              uint16_t *du, uint16_t *work, const uint16_t *dy,
                                              const uint16_t *xd, const uint16_t *u,
                                              const qt_dropout_cuda *drop, const uint16_t *A,
                                              const uint16_t *B, double scale, int64_t N,
                                              int64_t In, int64_t O, int64_t R, qt_gemm_cuda *g,
                                              void *stream) {
  QT_ASSERT(R > 0 && In > 0 && O > 0);
  if (N == 0) return QT_OK;
  if (dB) /* dB (O, R) += scale dy^T u */
    QT_TRY(qt_gemm_cuda_run(g, 1, 0, O, R, N, (float)scale, dy, O, u, R, 1.0f, dB, 0, R,
                            stream));
  /* du (N, R) = scale dy B */
  QT_TRY(qt_gemm_cuda_run(g, 0, 0, N, R, O, (float)scale, dy, O, B, R, 0.0f, du, 0, R,
                          stream));
  if (dA) /* dA (R, In) += du^T xd */
    QT_TRY(qt_gemm_cuda_run(g, 1, 0, R, In, N, 1.0f, du, R, xd, In, 1.0f, dA, 0, In,
                            stream));
  if (!dx) return QT_OK;
  if (!drop) /* dx (N, In) (+)= du A */
    return qt_gemm_cuda_run(g, 0, 0, N, In, R, 1.0f, du, R, A, In, acc ? 1.0f : 0.0f, dx, 0, In,
                            stream);
  QT_ASSERT(work != NULL);
  check_drop(drop);
  /* work (N, In) = du A, then dx (+)= work * keep * keep_scale */
  QT_TRY(qt_gemm_cuda_run(g, 0, 0, N, In, R, 1.0f, du, R, A, In, 0.0f, work, 0, In, stream));
  lora_dropout_backward_kernel<<<grid_for_groups(N * In), QT_AG_BLOCK, 0,
                                 (cudaStream_t)stream>>>(dx, acc, work, *drop,
                                                         (float)drop->keep_scale, N * In);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
