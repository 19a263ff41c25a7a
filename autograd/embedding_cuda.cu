/* autograd/embedding_cuda.cu — token embedding lookup on bf16 storage (ops_cuda.h). */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

/* out (N, C) ; ids (N) ; wte (V, C) — one thread per output element */
__global__ void embedding_forward_kernel(uint16_t *out, const int32_t *ids, const uint16_t *wte,
                                         int64_t N, int64_t C, int64_t V) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * C) return;
  int64_t n = i / C, c = i % C;
  int32_t id = ids[n];
  if (id < 0 || id >= V) __trap(); /* programmer bug: ids are validated before upload */
  out[i] = wte[(int64_t)id * C + c];
}

extern "C" qt_status qt_op_embedding_forward_cuda(uint16_t *out, const int32_t *ids,
                                                  const uint16_t *wte, int64_t N, int64_t C,
                                                  int64_t V, void *stream) {
  if (N * C == 0) return QT_OK;
  embedding_forward_kernel<<<grid_for(N * C), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(out, ids, wte,
                                                                                      N, C, V);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
