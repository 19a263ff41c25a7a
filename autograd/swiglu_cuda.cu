/* autograd/swiglu_cuda.cu — silu(gate) * up and its backward on bf16 storage
 * (ops_cuda.h; formulas in kernels/swiglu_cpu.inc). */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

__global__ void swiglu_forward_kernel(uint16_t *out, const uint16_t *gate, const uint16_t *up,
                                      int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float g = ld_bf16(gate, i);
  out[i] = to_bf16(round_bf16(g / (1.0f + expf(-g))) * ld_bf16(up, i));
}

__global__ void swiglu_backward_kernel(uint16_t *dgate, uint16_t *dup, int acc,
                                       const uint16_t *dout, const uint16_t *gate,
                                       const uint16_t *up, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float g = ld_bf16(gate, i), s = 1.0f / (1.0f + expf(-g)), d = ld_bf16(dout, i);
  if (dgate) st_grad(dgate, i, acc, d * ld_bf16(up, i) * (s + g * s * (1.0f - s)));
  if (dup) st_grad(dup, i, acc, d * g * s);
}

extern "C" qt_status qt_op_swiglu_forward_cuda(uint16_t *out, const uint16_t *gate,
                                               const uint16_t *up, int64_t n, void *stream) {
  if (n == 0) return QT_OK;
  swiglu_forward_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(out, gate, up, n);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_swiglu_backward_cuda(uint16_t *dgate, uint16_t *dup, int acc,
                                                const uint16_t *dout, const uint16_t *gate,
                                                const uint16_t *up, int64_t n, void *stream) {
  if (n == 0) return QT_OK;
  swiglu_backward_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(dgate, dup, acc,
                                                                               dout, gate, up, n);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
