/* autograd/geglu_cuda.cu — gelu_tanh(gate) * up and its backward on bf16 storage
 * (ops_cuda.h; formulas in kernels/geglu_cpu.inc). fp32 arithmetic; gelu(gate)
 * is rounded to bf16 before the product with up, as transformers GemmaMLP runs
 * act_fn(gate_proj(x)) * up_proj(x) in bf16. */
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f

/* sigmoid(2u), u = sqrt(2/pi) (g + 0.044715 g^3): gelu_tanh(g) = g * this */
static __device__ __forceinline__ float gelu_tanh_s(float g) {
  float u = GELU_K0 * (g + GELU_K1 * g * g * g);
  return 1.0f / (1.0f + expf(-2.0f * u));
}

__global__ void geglu_forward_kernel(uint16_t *out, const uint16_t *gate, const uint16_t *up,
                                     int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float g = ld_bf16(gate, i);
  out[i] = to_bf16(round_bf16(g * gelu_tanh_s(g)) * ld_bf16(up, i));
}

__global__ void geglu_backward_kernel(uint16_t *dgate, uint16_t *dup, int acc,
                                      const uint16_t *dout, const uint16_t *gate,
                                      const uint16_t *up, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float g = ld_bf16(gate, i), s = gelu_tanh_s(g), d = ld_bf16(dout, i);
  /* s = 0 far on the negative side, where the g^2 factor may be inf: the
   * derivative is 0 there (kernels/geglu_cpu.inc) */
  float dg = s == 0.0f ? 0.0f
                       : s + 2.0f * g * s * (1.0f - s) * GELU_K0 * (1.0f + 3.0f * GELU_K1 * g * g);
  if (dgate) st_grad(dgate, i, acc, d * ld_bf16(up, i) * dg);
  if (dup) st_grad(dup, i, acc, d * g * s);
}

extern "C" qt_status qt_op_geglu_forward_cuda(uint16_t *out, const uint16_t *gate,
                                              const uint16_t *up, int64_t n, void *stream) {
  if (n == 0) return QT_OK;
  geglu_forward_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(out, gate, up, n);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_geglu_backward_cuda(uint16_t *dgate, uint16_t *dup, int acc,
                                               const uint16_t *dout, const uint16_t *gate,
                                               const uint16_t *up, int64_t n, void *stream) {
  if (n == 0) return QT_OK;
  geglu_backward_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(dgate, dup, acc,
                                                                              dout, gate, up, n);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
