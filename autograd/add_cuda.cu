/* autograd/add_cuda.cu — residual add and its backward on bf16 storage (ops_cuda.h). */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

__global__ void add_forward_kernel(uint16_t *out, const uint16_t *a, const uint16_t *b, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = to_bf16(ld_bf16(a, i) + ld_bf16(b, i));
}

__global__ void add_backward_kernel(uint16_t *dx, int acc, const uint16_t *dout, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) st_grad(dx, i, acc, ld_bf16(dout, i));
}

extern "C" qt_status qt_op_add_forward_cuda(uint16_t *out, const uint16_t *a, const uint16_t *b,
                                            int64_t n, void *stream) {
  if (n == 0) return QT_OK;
  add_forward_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(out, a, b, n);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_add_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout,
                                             int64_t n, void *stream) {
  if (n == 0) return QT_OK;
  add_backward_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(dx, acc, dout, n);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
