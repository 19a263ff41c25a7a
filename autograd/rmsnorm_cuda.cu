/* autograd/rmsnorm_cuda.cu — RMSNorm forward/backward on bf16 storage
 * (ops_cuda.h; formulas in kernels/rmsnorm_cpu.inc). One block per row. */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

/* out (N, C) ; rstd (N) ; x (N, C) ; w (C) */
__global__ void rmsnorm_forward_kernel(uint16_t *out, float *rstd, const uint16_t *x,
                                       const uint16_t *w, float eps, int64_t C) {
  int64_t n = blockIdx.x;
  const uint16_t *xn = x + n * C;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float v = ld_bf16(xn, c);
    ss += v * v;
  }
  ss = block_sum(ss);
  float r = 1.0f / sqrtf(ss / (float)C + eps);
  if (threadIdx.x == 0) rstd[n] = r;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    out[n * C + c] = to_bf16(ld_bf16(w, c) * round_bf16(ld_bf16(xn, c) * r));
}

/* dx (N, C) (+)= r w dy - (r^3 / C) x sum_k w_k dy_k x_k */
__global__ void rmsnorm_backward_kernel(uint16_t *dx, int acc, const uint16_t *dout,
                                        const uint16_t *x, const uint16_t *w, const float *rstd,
                                        int64_t C) {
  int64_t n = blockIdx.x;
  const uint16_t *xn = x + n * C, *dn = dout + n * C;
  float dot = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dot += ld_bf16(w, c) * ld_bf16(dn, c) * ld_bf16(xn, c);
  dot = block_sum(dot);
  float r = rstd[n], k = r * r * r * dot / (float)C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    st_grad(dx, n * C + c, acc, r * ld_bf16(w, c) * ld_bf16(dn, c) - k * ld_bf16(xn, c));
}

extern "C" qt_status qt_op_rmsnorm_forward_cuda(uint16_t *out, float *rstd, const uint16_t *x,
                                                const uint16_t *w, double eps, int64_t N,
                                                int64_t C, void *stream) {
  if (N == 0) return QT_OK;
  rmsnorm_forward_kernel<<<(unsigned)N, QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(out, rstd, x, w,
                                                                               (float)eps, C);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_rmsnorm_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout,
                                                 const uint16_t *x, const uint16_t *w,
                                                 const float *rstd, int64_t N, int64_t C,
                                                 void *stream) {
  if (N == 0) return QT_OK;
  rmsnorm_backward_kernel<<<(unsigned)N, QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(dx, acc, dout, x,
                                                                                w, rstd, C);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
