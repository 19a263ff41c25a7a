/* autograd/cross_entropy_cuda.cu — lm_head GEMM fused with causal-LM
 * cross-entropy, chunked over rows, on bf16 storage (ops_cuda.h; formulas and
 * the transformers source in kernels/cross_entropy_cpu.inc):
 *   loss_n = logsumexp(z_n) - z_n[t_n], d loss_n / d z_n = softmax(z_n) - onehot(t_n).
 * Per chunk: z (nc, V) fp32 = x W^T (cuBLASLt, fp32 output so the softmax sees
 * unrounded logits, like transformers' logits.float() of an fp32 product), one
 * block per row for max / sum-exp (fixed-order block reductions), then for the
 * gradient dz (nc, V) bf16 and dx = dz W (cuBLASLt). The summed loss is a
 * separate single-block kernel over the per-row losses in a fixed order (double),
 * so it does not depend on chunking or scheduling. No atomics.
 * Soft-capping (softcap > 0, gemma2 final_logit_softcapping): each row's fp32
 * logits are capped in place, z -> cap tanh(z / cap) (softcap_1: the CPU's
 * formula, tanh in double), before max / sum-exp, and the gradient is multiplied
 * by 1 - (zc / cap)^2 = d tanh. */
#include <math.h>

#include "autograd/kernels/cuda_common.cuh"
#include "autograd/kernels/gemm_cuda.cuh"
#include "autograd/ops.h"
#include "autograd/ops_cuda.h"

#define CE_SUM_THREADS 256

/* Max over the block, same fixed pattern as block_sum (cuda_common.cuh). */
static __device__ float block_max(float v) {
  __shared__ float warp_max[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int nw = (int)(blockDim.x >> 5);
    float s = lane < nw ? warp_max[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) s = fmaxf(s, __shfl_down_sync(0xffffffffu, s, o));
    if (lane == 0) total = s;
  }
  __syncthreads();
  float t = total;
  __syncthreads();
  return t;
}

/* One logit capped as kernels/cross_entropy_cpu.inc softcap_1 does it. */
static __device__ __forceinline__ float softcap_1(float z, float cap) {
  return (float)tanh((double)(z / cap)) * cap;
}

/* One block per row r of the chunk: lse[r] (when lse), rowloss[r]; with dz, also
 * dz = softmax - onehot (the gradient for dloss = 1, fused path).
 * z (nc, V) fp32 ; dz (nc, V) bf16 or NULL. */
__global__ void ce_forward_rows_kernel(float *lse, double *rowloss, uint16_t *dz, float *z,
                                       const int32_t *targets, int64_t V, float cap) {
  int64_t r = blockIdx.x;
  float *zr = z + r * V;
  int32_t t = targets[r];
  if (t == QT_IGNORE_INDEX) { /* uniform over the block */
    if (threadIdx.x == 0) {
      if (lse) lse[r] = 0.0f;
      rowloss[r] = 0.0;
    }
    if (dz)
      for (int64_t c = threadIdx.x; c < V; c += blockDim.x) dz[r * V + c] = 0;
    return;
  }
  if (t < 0 || t >= V) __trap(); /* programmer bug: targets are validated upstream */
  if (cap > 0.0f) {
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) zr[c] = softcap_1(zr[c], cap);
    __syncthreads(); /* zr[t] is read by thread 0 below */
  }
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) mx = fmaxf(mx, zr[c]);
  mx = block_max(mx);
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) s += expf(zr[c] - mx);
  s = block_sum(s);
  float l = mx + logf(s);
  if (threadIdx.x == 0) {
    if (lse) lse[r] = l;
    rowloss[r] = (double)l - (double)zr[t];
  }
  if (dz && cap > 0.0f) {
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
      float th = zr[c] / cap;
      dz[r * V + c] = to_bf16((expf(zr[c] - l) - (c == t ? 1.0f : 0.0f)) * (1.0f - th * th));
    }
  } else if (dz) {
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x)
      dz[r * V + c] = to_bf16(expf(zr[c] - l) - (c == t ? 1.0f : 0.0f));
  }
}

/* One block per row: dz = dloss (exp(z - lse) - onehot), 0 for ignored rows;
 * with cap > 0 of the capped z, times 1 - (zc / cap)^2. */
__global__ void ce_backward_rows_kernel(uint16_t *dz, float dloss, const float *z,
                                        const float *lse, const int32_t *targets, int64_t V,
                                        float cap) {
  int64_t r = blockIdx.x;
  const float *zr = z + r * V;
  int32_t t = targets[r];
  if (t != QT_IGNORE_INDEX && (t < 0 || t >= V)) __trap();
  float l = lse[r];
  if (cap > 0.0f) {
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
      float zc = softcap_1(zr[c], cap), th = zc / cap;
      float g = t == QT_IGNORE_INDEX
                    ? 0.0f
                    : (dloss * expf(zc - l) - (c == t ? dloss : 0.0f)) * (1.0f - th * th);
      dz[r * V + c] = to_bf16(g);
    }
    return;
  }
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
    float g = t == QT_IGNORE_INDEX ? 0.0f : dloss * expf(zr[c] - l) - (c == t ? dloss : 0.0f);
    dz[r * V + c] = to_bf16(g);
  }
}

/* One block: *loss = sum of rowloss over rows with a target (each thread a
 * fixed strided slice in order, then a fixed tree), *count = number of targets. */
__global__ void ce_total_kernel(double *loss, int64_t *count, const double *rowloss,
                                const int32_t *targets, int64_t N) {
  __shared__ double ls[CE_SUM_THREADS];
  __shared__ long long cs[CE_SUM_THREADS];
  double s = 0.0;
  long long c = 0;
  for (int64_t n = threadIdx.x; n < N; n += CE_SUM_THREADS)
    if (targets[n] != QT_IGNORE_INDEX) {
      s += rowloss[n];
      c++;
    }
  ls[threadIdx.x] = s;
  cs[threadIdx.x] = c;
  __syncthreads();
  for (int o = CE_SUM_THREADS / 2; o > 0; o >>= 1) {
    if ((int)threadIdx.x < o) {
      ls[threadIdx.x] += ls[threadIdx.x + o];
      cs[threadIdx.x] += cs[threadIdx.x + o];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *loss = ls[0];
    *count = (int64_t)cs[0];
  }
}

__global__ void scaled_add_kernel(uint16_t *dx, int acc, const uint16_t *src, float alpha,
                                  int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) st_grad(dx, i, acc, alpha * ld_bf16(src, i));
}

/* Forward over all chunks: lse, rowloss, and (fused) dz + dx1 = dz W. */
static qt_status ce_forward(uint16_t *dx1, double *loss, int64_t *count, float *lse,
                            double *rowloss, float *logits, uint16_t *dz, int64_t chunk_rows,
                            const uint16_t *x, const uint16_t *W, const int32_t *targets,
                            int64_t N, int64_t C, int64_t V, double softcap, qt_gemm_cuda *g,
                            void *stream) {
  QT_ASSERT(chunk_rows > 0 && V > 0 && C > 0 && N >= 0 && softcap >= 0);
  QT_ASSERT(!dx1 || dz);
  cudaStream_t s = (cudaStream_t)stream;
  for (int64_t n0 = 0; n0 < N; n0 += chunk_rows) {
    int64_t nc = N - n0 < chunk_rows ? N - n0 : chunk_rows;
    /* logits (nc, V) fp32 = x[n0:] (nc, C) W^T */
    QT_TRY(qt_gemm_cuda_run(g, 0, 1, nc, V, C, 1.0f, x + n0 * C, C, W, C, 0.0f, logits, 1, V,
                            stream));
    ce_forward_rows_kernel<<<(unsigned)nc, QT_AG_BLOCK, 0, s>>>(lse ? lse + n0 : NULL, rowloss + n0,
                                                                 dx1 ? dz : NULL, logits,
                                                                 targets + n0, V,
                                                                 (float)softcap);
    QT_CUDA_CHECK_LAUNCH();
    if (dx1) /* dx1 (nc, C) = dz (nc, V) W (V, C) */
      QT_TRY(qt_gemm_cuda_run(g, 0, 0, nc, C, V, 1.0f, dz, V, W, C, 0.0f, dx1 + n0 * C, 0, C,
                              stream));
  }
  ce_total_kernel<<<1, CE_SUM_THREADS, 0, s>>>(loss, count, rowloss, targets, N);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_cross_entropy_forward_cuda(double *loss, int64_t *count, float *lse,
                                                      double *rowloss, float *logits,
                                                      int64_t chunk_rows, const uint16_t *x,
                                                      const uint16_t *W, const int32_t *targets,
                                                      int64_t N, int64_t C, int64_t V,
                                                      double softcap, qt_gemm_cuda *g,
                                                      void *stream) {
  return ce_forward(NULL, loss, count, lse, rowloss, logits, NULL, chunk_rows, x, W, targets, N, C,
                    V, softcap, g, stream);
}

extern "C" qt_status qt_op_cross_entropy_fused_cuda(uint16_t *dx1, double *loss, int64_t *count,
                                                    float *logits, uint16_t *dz, double *rowloss,
                                                    int64_t chunk_rows, const uint16_t *x,
                                                    const uint16_t *W, const int32_t *targets,
                                                    int64_t N, int64_t C, int64_t V,
                                                    double softcap, qt_gemm_cuda *g,
                                                    void *stream) {
  QT_ASSERT(dx1 != NULL && dz != NULL && chunk_rows > 0);
  /* lse is not saved on the fused path: backward needs no logits recompute. */
  return ce_forward(dx1, loss, count, NULL, rowloss, logits, dz, chunk_rows, x, W, targets, N, C,
                    V, softcap, g, stream);
}

extern "C" qt_status qt_op_cross_entropy_backward_cuda(uint16_t *dx, int acc, float *logits,
                                                       uint16_t *dz, int64_t chunk_rows,
                                                       double dloss, const float *lse,
                                                       const uint16_t *x, const uint16_t *W,
                                                       const int32_t *targets, int64_t N,
                                                       int64_t C, int64_t V, double softcap,
                                                       qt_gemm_cuda *g, void *stream) {
  QT_ASSERT(chunk_rows > 0 && V > 0 && C > 0 && N >= 0 && softcap >= 0);
  cudaStream_t s = (cudaStream_t)stream;
  for (int64_t n0 = 0; n0 < N; n0 += chunk_rows) {
    int64_t nc = N - n0 < chunk_rows ? N - n0 : chunk_rows;
    QT_TRY(qt_gemm_cuda_run(g, 0, 1, nc, V, C, 1.0f, x + n0 * C, C, W, C, 0.0f, logits, 1, V,
                            stream));
    ce_backward_rows_kernel<<<(unsigned)nc, QT_AG_BLOCK, 0, s>>>(dz, (float)dloss, logits,
                                                                  lse + n0, targets + n0, V,
                                                                  (float)softcap);
    QT_CUDA_CHECK_LAUNCH();
    /* dx (nc, C) (+)= dz (nc, V) W (V, C) */
    QT_TRY(qt_gemm_cuda_run(g, 0, 0, nc, C, V, 1.0f, dz, V, W, C, acc ? 1.0f : 0.0f, dx + n0 * C,
                            0, C, stream));
  }
  return QT_OK;
}

extern "C" qt_status qt_op_scaled_add_cuda(uint16_t *dx, int acc, const uint16_t *src,
                                           double alpha, int64_t n, void *stream) {
  if (n == 0) return QT_OK;
  scaled_add_kernel<<<grid_for(n), QT_AG_BLOCK, 0, (cudaStream_t)stream>>>(dx, acc, src,
                                                                          (float)alpha, n);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}
