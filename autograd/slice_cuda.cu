/* autograd/slice_cuda.cu — column slice and its backward on bf16 storage
 * (ops_cuda.h; semantics in kernels/slice_cpu.inc): a strided copy, and a
 * strided add (acc = 1) or a full write with zeros outside the slice (acc = 0). */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

/* out (N, W) = x (N, C)[:, c0:c0+W]; one thread per output element */
__global__ void slice_cols_forward_kernel(uint16_t *out, const uint16_t *x, int64_t N, int64_t C,
                                          int64_t c0, int64_t W) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * W) return;
  int64_t n = i / W, j = i - n * W;
  out[i] = x[n * C + c0 + j];
}

/* acc = 1: one thread per slice element, dx[:, c0 + j] += dout (fp32 add, one
 * rounding); acc = 0: one thread per element of dx, dout inside, 0 outside. */
__global__ void slice_cols_backward_kernel(uint16_t *dx, int acc, const uint16_t *dout, int64_t N,
                                           int64_t C, int64_t c0, int64_t W) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (acc) {
    if (i >= N * W) return;
    int64_t n = i / W, j = i - n * W;
    st_grad(dx, n * C + c0 + j, 1, ld_bf16(dout, i));
  } else {
    if (i >= N * C) return;
    int64_t n = i / C, c = i - n * C;
    dx[i] = c >= c0 && c < c0 + W ? dout[n * W + c - c0] : (uint16_t)0;
  }
}

extern "C" qt_status qt_op_slice_cols_forward_cuda(uint16_t *out, const uint16_t *x, int64_t N,
                                                   int64_t C, int64_t c0, int64_t W,
                                                   void *stream) {
  QT_ASSERT(c0 >= 0 && W >= 0 && c0 + W <= C && N >= 0);
  if (N * W == 0) return QT_OK;
  slice_cols_forward_kernel<<<grid_for(N * W), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(
      out, x, N, C, c0, W);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_slice_cols_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout,
                                                    int64_t N, int64_t C, int64_t c0, int64_t W,
                                                    void *stream) {
  QT_ASSERT(c0 >= 0 && W >= 0 && c0 + W <= C && N >= 0);
  int64_t n = acc ? N * W : N * C;
  if (n == 0) return QT_OK;
  slice_cols_backward_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(
      dx, acc, dout, N, C, c0, W);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
