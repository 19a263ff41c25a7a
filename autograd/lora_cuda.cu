/* autograd/lora_cuda.cu — the LoRA branch y += scale * (dropout(x) A^T) B^T on
 * bf16 storage (ops_cuda.h; formulas and PEFT source in kernels/lora_cpu.inc).
 * The products are the cuBLASLt GEMM of linear_cuda.cu; dropout is an
 * elementwise kernel over the caller's 0/1 keep mask (inverted dropout). */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/kernels/gemm_cuda.cuh"
#include "autograd/ops_cuda.h"

/* xd (n) = mask ? x * keep_scale : 0 (torch nn.Dropout: x * mask / (1 - p)) */
__global__ void lora_dropout_kernel(uint16_t *xd, const uint16_t *x, const uint8_t *mask,
                                    float keep_scale, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) xd[i] = mask[i] ? to_bf16(ld_bf16(x, i) * keep_scale) : (uint16_t)0;
}

/* dx (n) (+)= mask ? work * keep_scale : 0 */
__global__ void lora_dropout_backward_kernel(uint16_t *dx, int acc, const uint16_t *work,
                                             const uint8_t *mask, float keep_scale, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) st_grad(dx, i, acc, mask[i] ? ld_bf16(work, i) * keep_scale : 0.0f);
}

extern "C" qt_status qt_op_lora_forward_cuda(uint16_t *y, uint16_t *u, uint16_t *xd_out,
                                             const uint16_t *x, const uint8_t *mask,
                                             double keep_scale, const uint16_t *A,
                                             const uint16_t *B, double scale, int64_t N,
                                             int64_t In, int64_t O, int64_t R, qt_gemm_cuda *g,
                                             void *stream) {
  QT_ASSERT(R > 0 && In > 0);
  if (N == 0) return QT_OK;
  const uint16_t *xd = x; /* (N, In) */
  if (mask) {
    QT_ASSERT(xd_out != NULL);
    lora_dropout_kernel<<<grid_for(N * In), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(
        xd_out, x, mask, (float)keep_scale, N * In);
    QT_CUDA_CHECK_LAUNCH();
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
                                              const uint8_t *mask, double keep_scale,
                                              const uint16_t *A, const uint16_t *B, double scale,
                                              int64_t N, int64_t In, int64_t O, int64_t R,
                                              qt_gemm_cuda *g, void *stream) {
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
  if (!mask) /* dx (N, In) (+)= du A */
    return qt_gemm_cuda_run(g, 0, 0, N, In, R, 1.0f, du, R, A, In, acc ? 1.0f : 0.0f, dx, 0, In,
                            stream);
  QT_ASSERT(work != NULL);
  /* work (N, In) = du A, then dx (+)= work * mask * keep_scale */
  QT_TRY(qt_gemm_cuda_run(g, 0, 0, N, In, R, 1.0f, du, R, A, In, 0.0f, work, 0, In, stream));
  lora_dropout_backward_kernel<<<grid_for(N * In), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(
      dx, acc, work, mask, (float)keep_scale, N * In);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
