/* autograd/kernels/cuda_common.cuh — helpers for the autograd .cu files:
 * bf16 <-> fp32 on uint16_t storage, grid sizing, a fixed-order block sum. */
#ifndef QT_AUTOGRAD_CUDA_COMMON_CUH
#define QT_AUTOGRAD_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "common/cuda_check.h"

#define QT_AG_BLOCK 256

static __device__ __forceinline__ float ld_bf16(const uint16_t *p, int64_t i) {
  return __bfloat162float(__ushort_as_bfloat16(p[i]));
}
static __device__ __forceinline__ uint16_t to_bf16(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
static __device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}
/* dst[i] (+)= v under the set-or-accumulate flag (accumulation in fp32, one rounding). */
static __device__ __forceinline__ void st_grad(uint16_t *dst, int64_t i, int acc, float v) {
  dst[i] = to_bf16(acc ? ld_bf16(dst, i) + v : v);
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024): warp shuffles then
 * one warp over the warp sums; the order is fixed, so the result is too.
 * Every thread gets the total. */
static __device__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int nw = (int)(blockDim.x >> 5);
    float s = lane < nw ? warp_sums[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if (lane == 0) total = s;
  }
  __syncthreads();
  float t = total;
  __syncthreads(); /* warp_sums/total may be reused by a second call */
  return t;
}

static inline unsigned grid_for(int64_t n) {
  int64_t g = (n + QT_AG_BLOCK - 1) / QT_AG_BLOCK;
  return (unsigned)(g > 0 ? g : 1);
}

#endif
