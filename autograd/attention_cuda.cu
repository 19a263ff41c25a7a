/* autograd/attention_cuda.cu — causal grouped-query attention over packed rows
 * with per-document masking, on bf16 storage (ops_cuda.h; the formulas,
 * masking rule and transformers source are in kernels/attention_cpu.inc).
 *
 * Training (forward, backward): the tiled tensor-core kernels of
 * kernels/attention_flash.h (FlashAttention-2 without atomics: a forward with
 * the online softmax, a dq kernel per query tile and a dk/dv kernel per key
 * tile, so every gradient element has one writer and a fixed summation order;
 * EMPTY tile pairs of packed rows skipped whole). This file only launches
 * them: one block of QT_FL_THREADS threads per tile, the largest tile (64, 32,
 * 16) whose shared memory fits the device, and the delta pre-pass
 * delta_i = rowsum(dO_i * O_i) (a pass over D; FlashAttention-2's form).
 *
 * Decoding with a KV cache (a few query rows against a long cache): a plain
 * scalar kernel, one warp per (query, head), lanes over the head dimension
 * (D <= 256 in registers), the online softmax (Milakov & Gimelshein 2018).
 * Dot products: per-lane partial sums then a butterfly (__shfl_xor_sync),
 * which gives every lane the same, order-fixed result.
 * Options (ops.h qt_att_opts): scale; a sliding window; soft-capping
 * s -> c tanh(s / c) of the fp32 scaled score, in double (the same helper as
 * the CPU kernels, attention_mask.h), with the chain-rule factor 1 - tanh^2 on
 * dS in backward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kernels/attention_flash.h"
#include "autograd/kernels/attention_mask.h"
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

#define ATT_MAXD QT_FL_MAXD
#define ATT_PER_LANE (ATT_MAXD / 32)
#define ATT_WARPS 4

static __device__ __forceinline__ float warp_allsum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* Lane's share of a head vector: r[t] = p[lane + 32 t] (0 beyond D). */
static __device__ __forceinline__ void load_lane(float *r, const uint16_t *p, int lane, int64_t D) {
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) {
    int64_t d = lane + 32 * t;
    r[t] = d < D ? ld_bf16(p, d) : 0.0f;
  }
}
static __device__ __forceinline__ float dot_lane(const float *r, const uint16_t *p, int lane,
                                                 int64_t D) {
  float s = 0.0f;
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) {
    int64_t d = lane + 32 * t;
    if (d < D) s += r[t] * ld_bf16(p, d);
  }
  return warp_allsum(s);
}

/* The fp32 scaled score s after soft-capping (softcap > 0), tanh in double. */
static __device__ __forceinline__ float att_cap(float s, double softcap) {
  return softcap > 0 ? (float)qt_att_softcap((double)s, softcap) : s;
}
/* Decoding with a KV cache: one warp per (i, h); query row i, at absolute
 * position p = pos0 + i, attends to cache rows max(0, p - window + 1) .. p of
 * one sequence (one document), with the forward kernel's online softmax.
 * kc, vc (cap, K, D) hold the keys (after RoPE) and values of positions
 * 0 .. pos0 + n - 1. */
__global__ void attention_decode_kernel(uint16_t *out, const uint16_t *q, const uint16_t *kc,
                                        const uint16_t *vc, int64_t n, int64_t pos0, int64_t H,
                                        int64_t K, int64_t D, float scale, int64_t window,
                                        double softcap) {
  int lane = threadIdx.x & 31;
  int64_t w = (int64_t)blockIdx.x * ATT_WARPS + (threadIdx.x >> 5);
  if (w >= n * H) return; /* whole warps only */
  int64_t i = w / H, h = w % H, g = h / (H / K), p = pos0 + i;
  float qr[ATT_PER_LANE], acc[ATT_PER_LANE];
  load_lane(qr, q + (i * H + h) * D, lane, D);
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) acc[t] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int64_t j = qt_att_key_start(0, p, window); j <= p; j++) {
    const int64_t kv = (j * K + g) * D;
    float s = att_cap(scale * dot_lane(qr, kc + kv, lane, D), softcap);
    float mn = fmaxf(m, s), corr = expf(m - mn), e = expf(s - mn);
    l = l * corr + e;
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++) {
      int64_t d = lane + 32 * t;
      acc[t] = acc[t] * corr + (d < D ? e * ld_bf16(vc + kv, d) : 0.0f);
    }
    m = mn;
  }
  uint16_t *oi = out + (i * H + h) * D;
  float inv = 1.0f / l; /* j = p always attends, so l >= 1 */
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) {
    int64_t d = lane + 32 * t;
    if (d < D) oi[d] = to_bf16(acc[t] * inv);
  }
}

/* One warp per (b, h, i): delta_i = rowsum(dO_i * O_i) over the D values of
 * the forward's output (fp32 sum of the bf16 products' exact fp32 values, lanes
 * then a butterfly: a fixed order). */
__global__ void attention_delta_kernel(float *delta, const uint16_t *dout, const uint16_t *out,
                                       int64_t B, int64_t T, int64_t H, int64_t D) {
  int lane = threadIdx.x & 31;
  int64_t w = (int64_t)blockIdx.x * ATT_WARPS + (threadIdx.x >> 5);
  if (w >= B * H * T) return;
  int64_t i = w % T, bh = w / T, b = bh / H, h = bh % H;
  const int64_t qo = ((b * T + i) * H + h) * D;
  float sum = 0.0f;
  for (int64_t d = lane; d < D; d += 32) sum += ld_bf16(dout, qo + d) * ld_bf16(out, qo + d);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) delta[bh * T + i] = sum;
}

/* The flash kernels: one block per tile, blockIdx (tile, head, row). The
 * forward and dq take the query tiles last-first (the causal rows' later tiles
 * have the most key tiles: started first, they do not trail the grid). */
__global__ void __launch_bounds__(QT_FL_THREADS)
    attention_flash_forward_kernel(qt_fl_args a, qt_fl_plan pl) {
  extern __shared__ __align__(128) unsigned char fl_smem[];
  const int64_t nt = (a.T + pl.tile - 1) / pl.tile;
  qt_fl_forward_block(&a, &pl, fl_smem, blockIdx.z, blockIdx.y, nt - 1 - (int64_t)blockIdx.x,
                      (int)threadIdx.x, (int)blockDim.x);
}

__global__ void __launch_bounds__(QT_FL_THREADS)
    attention_flash_dq_kernel(qt_fl_args a, qt_fl_plan pl) {
  extern __shared__ __align__(128) unsigned char fl_smem[];
  const int64_t nt = (a.T + pl.tile - 1) / pl.tile;
  qt_fl_dq_block(&a, &pl, fl_smem, blockIdx.z, blockIdx.y, nt - 1 - (int64_t)blockIdx.x,
                 (int)threadIdx.x, (int)blockDim.x);
}

__global__ void __launch_bounds__(QT_FL_THREADS)
    attention_flash_dkv_kernel(qt_fl_args a, qt_fl_plan pl) {
  extern __shared__ __align__(128) unsigned char fl_smem[];
  qt_fl_dkv_block(&a, &pl, fl_smem, blockIdx.z, blockIdx.y, (int64_t)blockIdx.x, (int)threadIdx.x,
                  (int)blockDim.x);
}

static qt_status attention_check(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                                 const qt_att_opts *o) {
  QT_ASSERT(K > 0 && H > 0 && H % K == 0 && D > 0 && T >= 0 && B >= 0);
  QT_ASSERT(B <= 65535 && H <= 65535); /* grid y and z of the flash kernels */
  QT_ASSERT(!o || (o->scale >= 0 && isfinite(o->scale) && o->window >= 0 && o->softcap >= 0 &&
                   isfinite(o->softcap)));
  if (D > QT_FL_MAXD)
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "autograd/attention_cuda.cu: head_dim %lld > %d is not supported by the CUDA "
                   "attention kernel; use the CPU backend for this model",
                   (long long)D, QT_FL_MAXD);
  return QT_OK;
}

/* The score scale: opts->scale, or head_dim^-0.5. */
static float attention_scale(const qt_att_opts *o, int64_t D) {
  return qt_fl_scale(o ? o->scale : 0.0, D);
}

static unsigned attention_grid(int64_t warps) {
  int64_t g = (warps + ATT_WARPS - 1) / ATT_WARPS;
  return (unsigned)(g > 0 ? g : 1);
}

/* The largest tile (64, 32, 16; at most QLORA_ATT_TILE when that is 32 or 16:
 * a knob for measurements, README) whose shared memory for kind fits the
 * current device (its opt-in limit per block: 227 KiB on H100/H200, 163 KiB on
 * A100), with the kernel's dynamic shared memory limit raised to it. */
static qt_status flash_plan(int kind, int64_t D, const void *kernel, qt_fl_plan *out) {
  int dev = 0, max_smem = 0;
  QT_CUDA_CHECK(cudaGetDevice(&dev));
  QT_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const char *cap = getenv("QLORA_ATT_TILE");
  const int first = cap && !strcmp(cap, "16") ? 16 : cap && !strcmp(cap, "32") ? 32 : 64;
  for (int tile = first; tile >= 16; tile /= 2) {
    qt_fl_plan p = qt_fl_plan_make(kind, D, tile);
    if (p.bytes > (size_t)max_smem) continue;
    QT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)p.bytes));
    *out = p;
    return QT_OK;
  }
  return qt_fail(QT_ERR_UNSUPPORTED,
                 "autograd/attention_cuda.cu: the attention kernel needs %zu bytes of shared "
                 "memory per block for head_dim %lld, the device allows %d; use the CPU backend",
                 qt_fl_plan_make(kind, D, 16).bytes, (long long)D, max_smem);
}

static qt_fl_args flash_args(const uint16_t *q, const uint16_t *k, const uint16_t *v,
                             const int32_t *doc, int64_t B, int64_t T, int64_t H, int64_t K,
                             int64_t D, const qt_att_opts *opts) {
  return qt_fl_args_make(q, k, v, doc, B, T, H, K, D, opts ? opts->scale : 0.0,
                         opts ? opts->window : 0, opts ? opts->softcap : 0.0);
}

static dim3 flash_grid(int64_t T, int tile, int64_t heads, int64_t B) {
  return dim3((unsigned)((T + tile - 1) / tile), (unsigned)heads, (unsigned)B);
}

extern "C" qt_status qt_op_attention_forward_cuda(uint16_t *out, float *lse, const uint16_t *q,
                                                  const uint16_t *k, const uint16_t *v,
                                                  const int32_t *doc, int64_t B, int64_t T,
                                                  int64_t H, int64_t K, int64_t D, void *stream,
                                                  const qt_att_opts *opts) {
  QT_TRY(attention_check(B, T, H, K, D, opts));
  if (B * T == 0) return QT_OK;
  qt_fl_plan pl;
  QT_TRY(flash_plan(QT_FL_FWD, D, (const void *)attention_flash_forward_kernel, &pl));
  qt_fl_args a = flash_args(q, k, v, doc, B, T, H, K, D, opts);
  a.out = out;
  a.lse = lse;
  attention_flash_forward_kernel<<<flash_grid(T, pl.tile, H, B), QT_FL_THREADS, pl.bytes,
                                   (cudaStream_t)stream>>>(a, pl);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_attention_decode_cuda(uint16_t *out, const uint16_t *q,
                                                 const uint16_t *kc, const uint16_t *vc, int64_t n,
                                                 int64_t pos0, int64_t H, int64_t K, int64_t D,
                                                 void *stream, const qt_att_opts *opts) {
  QT_TRY(attention_check(1, pos0 + n, H, K, D, opts));
  if (n == 0) return QT_OK;
  float scale = attention_scale(opts, D);
  int64_t window = opts ? opts->window : 0;
  double softcap = opts ? opts->softcap : 0.0;
  attention_decode_kernel<<<attention_grid(n * H), 32 * ATT_WARPS, 0, (cudaStream_t)stream>>>(
      out, q, kc, vc, n, pos0, H, K, D, scale, window, softcap);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_attention_backward_cuda(uint16_t *dq, uint16_t *dk, uint16_t *dv,
                                                   int acc, float *delta, const uint16_t *dout,
                                                   const uint16_t *out, const float *lse,
                                                   const uint16_t *q, const uint16_t *k,
                                                   const uint16_t *v, const int32_t *doc, int64_t B,
                                                   int64_t T, int64_t H, int64_t K, int64_t D,
                                                   void *stream, const qt_att_opts *opts) {
  QT_TRY(attention_check(B, T, H, K, D, opts));
  QT_ASSERT(out || (!dq && !dk)); /* delta comes from the forward's output */
  if (B * T == 0 || (!dq && !dk && !dv)) return QT_OK;
  qt_fl_args a = flash_args(q, k, v, doc, B, T, H, K, D, opts);
  a.dout = dout;
  a.lse_in = lse;
  a.delta = delta;
  a.acc = acc;
  if (dq || dk) {
    attention_delta_kernel<<<attention_grid(B * H * T), 32 * ATT_WARPS, 0, (cudaStream_t)stream>>>(
        delta, dout, out, B, T, H, D);
    QT_CUDA_CHECK_LAUNCH();
  }
  if (dq) {
    qt_fl_plan pl;
    QT_TRY(flash_plan(QT_FL_DQ, D, (const void *)attention_flash_dq_kernel, &pl));
    a.dq = dq;
    attention_flash_dq_kernel<<<flash_grid(T, pl.tile, H, B), QT_FL_THREADS, pl.bytes,
                                (cudaStream_t)stream>>>(a, pl);
    QT_CUDA_CHECK_LAUNCH();
    a.dq = NULL;
  }
  if (dk || dv) {
    qt_fl_plan pl;
    QT_TRY(flash_plan(QT_FL_DKV, D, (const void *)attention_flash_dkv_kernel, &pl));
    a.dk = dk;
    a.dv = dv;
    attention_flash_dkv_kernel<<<flash_grid(T, pl.tile, K, B), QT_FL_THREADS, pl.bytes,
                                 (cudaStream_t)stream>>>(a, pl);
    QT_CUDA_CHECK_LAUNCH();
  }
  return QT_OK;
}
