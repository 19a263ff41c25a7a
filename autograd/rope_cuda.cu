/* autograd/rope_cuda.cu — RoPE (HF half-split layout) on bf16 storage
 * (ops_cuda.h; formulas in kernels/rope_cpu.inc). One thread per rotated pair. */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

/* x, out (N, H, D) ; pos (N) ; inv_freq (D/2). backward: the transposed rotation. */
__global__ void rope_kernel(uint16_t *out, int acc, const uint16_t *x, const int32_t *pos,
                            const float *inv_freq, int64_t N, int64_t H, int64_t D, int backward) {
  int64_t half = D / 2, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * H * half) return;
  int64_t j = i % half, nh = i / half, n = nh / H;
  float a = (float)pos[n] * inv_freq[j];
  float c = cosf(a), s = sinf(a);
  if (backward) s = -s;
  int64_t base = nh * D;
  float x1 = ld_bf16(x, base + j), x2 = ld_bf16(x, base + j + half);
  float o1 = x1 * c - x2 * s, o2 = x2 * c + x1 * s;
  if (backward) {
    st_grad(out, base + j, acc, o1);
    st_grad(out, base + j + half, acc, o2);
  } else {
    out[base + j] = to_bf16(o1);
    out[base + j + half] = to_bf16(o2);
  }
}

extern "C" qt_status qt_op_rope_forward_cuda(uint16_t *out, const uint16_t *x, const int32_t *pos,
                                             const float *inv_freq, int64_t N, int64_t H,
                                             int64_t D, void *stream) {
  QT_ASSERT(D % 2 == 0);
  int64_t n = N * H * (D / 2);
  if (n == 0) return QT_OK;
  rope_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(out, 0, x, pos, inv_freq, N, H,
                                                                    D, 0);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_rope_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout,
                                              const int32_t *pos, const float *inv_freq,
                                              int64_t N, int64_t H, int64_t D, void *stream) {
  QT_ASSERT(D % 2 == 0);
  QT_ASSERT(!(acc && dx == dout));
  int64_t n = N * H * (D / 2);
  if (n == 0) return QT_OK;
  rope_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(dx, acc, dout, pos, inv_freq, N,
                                                                    H, D, 1);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
