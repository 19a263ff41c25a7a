/* autograd/attention_cuda.cu — causal grouped-query attention over packed rows
 * with per-document masking, on bf16 storage with fp32 math (ops_cuda.h; the
 * formulas, masking rule and transformers source are in kernels/attention_cpu.inc).
 *
 * A plain, exact kernel, not a tuned one: one warp per query (forward, dq) or
 * per key (dk, dv), blocks of ATT_WARPS warps, so a block covers a tile of
 * consecutive queries (keys) of one (row, head). Each lane holds head-dim
 * elements lane, lane + 32, ... in registers (D <= ATT_MAXD).
 *  - forward: online softmax (Milakov & Gimelshein 2018, "Online normalizer
 *    calculation for softmax"): running max m, sum l, output accumulator; out =
 *    acc / l, lse = m + log l saved.
 *  - backward (FlashAttention-2, Dao 2023, Algorithm 2, without tiling): P_ij =
 *    exp(s_ij - lse_i) recomputed; delta_i = sum_j P_ij dP_ij with dP_ij =
 *    do_i . v_j; dS = P (dP - delta); dq_i = scale sum_j dS_ij k_j;
 *    dk_j = scale sum_i dS_ij q_i; dv_j = sum_i P_ij do_i. dq and delta come
 *    from a pass over keys per query; dk and dv from a pass over queries (and
 *    the query heads of the kv group) per key, so every gradient element is
 *    written once by one warp: no atomics, fixed summation order.
 * Dot products: per-lane partial sums then a butterfly (__shfl_xor_sync), which
 * gives every lane the same, order-fixed result.
 * Tiles: each loop walks its keys (queries) 32 at a time; the warp reads the
 * 32 document ids (one per lane), and attention_mask.h qt_att_tile_class of
 * (the warp's query, that key tile) or (that query tile, the warp's key)
 * skips an EMPTY tile outright (packed rows: the other documents' keys cost
 * one load and two 5-step min/max shuffles per 32 keys instead of a test per
 * key) and drops the per-key test in a FULL one. Within a tile the keys run in
 * the same order under the same per-element rule qt_att_visible, so results
 * are unchanged by the skipping.
 * Options (ops.h qt_att_opts): scale; a sliding window bounds each key loop
 * (query i: keys max(0, i - window + 1) .. i; key j: queries j .. j + window - 1);
 * soft-capping s -> c tanh(s / c) of the fp32 scaled score, in double (the same
 * helper as the CPU kernels, attention_mask.h), with the chain-rule factor
 * 1 - tanh^2 on dS in backward. */
#include <math.h>

#include "autograd/kernels/attention_mask.h"
#include "autograd/kernels/cuda_common.cuh"
#include "autograd/ops_cuda.h"

#define ATT_MAXD 256
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

/* The tile of positions t0 .. min(t0 + 32, end) - 1 of a row, built by the
 * warp: lane p reads doc[t0 + p] (returned in *mine, for __shfl_sync by the
 * loops) and min/max butterflies give every lane the id range. */
static __device__ __forceinline__ qt_att_tile warp_tile(const int32_t *db, int64_t t0, int64_t end,
                                                        int lane, int32_t *mine) {
  int64_t p = t0 + lane;
  int32_t d = p < end ? db[p] : 0;
  int32_t mn = p < end ? d : INT32_MAX, mx = p < end ? d : INT32_MIN;
  for (int o = 16; o > 0; o >>= 1) {
    mn = min(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  *mine = d;
  qt_att_tile t;
  t.lo = t0;
  t.hi = t0 + 32 < end ? t0 + 32 : end;
  t.dmin = mn;
  t.dmax = mx;
  return t;
}

/* Document id of position t of the tile whose lanes hold *mine (warp_tile). */
static __device__ __forceinline__ int32_t tile_doc(int32_t mine, int64_t t, int64_t t0) {
  return __shfl_sync(0xffffffffu, mine, (int)(t - t0));
}

/* The fp32 scaled score s after soft-capping (softcap > 0), tanh in double. */
static __device__ __forceinline__ float att_cap(float s, double softcap) {
  return softcap > 0 ? (float)qt_att_softcap((double)s, softcap) : s;
}
/* d capped / d s at the fp32 scaled score s (1 without capping). */
static __device__ __forceinline__ float att_cap_grad(float s, double softcap) {
  return softcap > 0 ? (float)qt_att_softcap_grad((double)s, softcap) : 1.0f;
}

/* One warp per (b, h, i). out (B*T, H, D) ; lse (B, H, T) */
__global__ void attention_forward_kernel(uint16_t *out, float *lse, const uint16_t *q,
                                         const uint16_t *k, const uint16_t *v, const int32_t *doc,
                                         int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                                         float scale, int64_t window, double softcap) {
  int lane = threadIdx.x & 31;
  int64_t w = (int64_t)blockIdx.x * ATT_WARPS + (threadIdx.x >> 5);
  if (w >= B * H * T) return; /* whole warps only: blockDim is a multiple of 32 */
  int64_t i = w % T, bh = w / T, b = bh / H, h = bh % H, g = h / (H / K);
  const int32_t *db = doc + b * T; /* (T) */
  float qr[ATT_PER_LANE], acc[ATT_PER_LANE];
  load_lane(qr, q + ((b * T + i) * H + h) * D, lane, D);
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) acc[t] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  int32_t di = db[i];
  const qt_att_tile qt = {i, i + 1, di, di};
  for (int64_t j0 = qt_att_key_start(0, i, window); j0 <= i; j0 += 32) {
    int32_t dl;
    const qt_att_tile kt = warp_tile(db, j0, i + 1, lane, &dl);
    const int cls = qt_att_tile_class(&qt, &kt, window);
    if (cls == QT_ATT_TILE_EMPTY) continue;
    for (int64_t j = kt.lo; j < kt.hi; j++) {
      int32_t dj = tile_doc(dl, j, j0);
      if (cls != QT_ATT_TILE_FULL && !qt_att_visible(i, j, di, dj, window)) continue;
      const int64_t kv = ((b * T + j) * K + g) * D;
      float s = att_cap(scale * dot_lane(qr, k + kv, lane, D), softcap);
      float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn); /* expf(-inf) = 0 */
      l = l * corr + p;
#pragma unroll
      for (int t = 0; t < ATT_PER_LANE; t++) {
        int64_t d = lane + 32 * t;
        acc[t] = acc[t] * corr + (d < D ? p * ld_bf16(v + kv, d) : 0.0f);
      }
      m = mn;
    }
  }
  /* j = i always passes the mask, so l >= 1 */
  uint16_t *oi = out + ((b * T + i) * H + h) * D;
  float inv = 1.0f / l;
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) {
    int64_t d = lane + 32 * t;
    if (d < D) oi[d] = to_bf16(acc[t] * inv);
  }
  if (lane == 0) lse[bh * T + i] = m + logf(l);
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

/* One warp per (b, h, i): delta_i (unless have_delta: the pre-pass wrote it)
 * and (when dq) dq_i. */
__global__ void attention_dq_kernel(uint16_t *dq, int acc, float *delta, int have_delta,
                                    const uint16_t *dout, const float *lse, const uint16_t *q,
                                    const uint16_t *k, const uint16_t *v, const int32_t *doc,
                                    int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                                    float scale, int64_t window, double softcap) {
  int lane = threadIdx.x & 31;
  int64_t w = (int64_t)blockIdx.x * ATT_WARPS + (threadIdx.x >> 5);
  if (w >= B * H * T) return;
  int64_t i = w % T, bh = w / T, b = bh / H, h = bh % H, g = h / (H / K);
  const int32_t *db = doc + b * T; /* (T) */
  const int64_t qo = ((b * T + i) * H + h) * D;
  float qr[ATT_PER_LANE], dor[ATT_PER_LANE], a[ATT_PER_LANE];
  load_lane(qr, q + qo, lane, D);
  load_lane(dor, dout + qo, lane, D);
  float li = lse[bh * T + i], dsum = 0.0f;
  int32_t di = db[i];
  const qt_att_tile qt = {i, i + 1, di, di};
  const int64_t jstart = qt_att_key_start(0, i, window);
  if (have_delta) dsum = delta[bh * T + i];
  for (int64_t j0 = jstart; !have_delta && j0 <= i; j0 += 32) { /* delta_i = sum_j P_ij (do_i . v_j) */
    int32_t dl;
    const qt_att_tile kt = warp_tile(db, j0, i + 1, lane, &dl);
    const int cls = qt_att_tile_class(&qt, &kt, window);
    if (cls == QT_ATT_TILE_EMPTY) continue;
    for (int64_t j = kt.lo; j < kt.hi; j++) {
      int32_t dj = tile_doc(dl, j, j0);
      if (cls != QT_ATT_TILE_FULL && !qt_att_visible(i, j, di, dj, window)) continue;
      const int64_t kv = ((b * T + j) * K + g) * D;
      float p = expf(att_cap(scale * dot_lane(qr, k + kv, lane, D), softcap) - li);
      dsum += p * dot_lane(dor, v + kv, lane, D);
    }
  }
  if (lane == 0 && !have_delta) delta[bh * T + i] = dsum;
  if (!dq) return;
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) a[t] = 0.0f;
  /* dq_i = scale sum_j P_ij (dP_ij - delta_i) c'(s_ij) k_j */
  for (int64_t j0 = jstart; j0 <= i; j0 += 32) {
    int32_t dl;
    const qt_att_tile kt = warp_tile(db, j0, i + 1, lane, &dl);
    const int cls = qt_att_tile_class(&qt, &kt, window);
    if (cls == QT_ATT_TILE_EMPTY) continue;
    for (int64_t j = kt.lo; j < kt.hi; j++) {
      int32_t dj = tile_doc(dl, j, j0);
      if (cls != QT_ATT_TILE_FULL && !qt_att_visible(i, j, di, dj, window)) continue;
      const int64_t kv = ((b * T + j) * K + g) * D;
      float s = scale * dot_lane(qr, k + kv, lane, D);
      float p = expf(att_cap(s, softcap) - li);
      float ds = p * (dot_lane(dor, v + kv, lane, D) - dsum) * att_cap_grad(s, softcap);
#pragma unroll
      for (int t = 0; t < ATT_PER_LANE; t++) {
        int64_t d = lane + 32 * t;
        if (d < D) a[t] += ds * ld_bf16(k + kv, d);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) {
    int64_t d = lane + 32 * t;
    if (d < D) st_grad(dq, qo + d, acc, scale * a[t]);
  }
}

/* One warp per (b, g, j): dk_j and dv_j over the query heads of kv head g. */
__global__ void attention_dkv_kernel(uint16_t *dk, uint16_t *dv, int acc, const float *delta,
                                     const uint16_t *dout, const float *lse, const uint16_t *q,
                                     const uint16_t *k, const uint16_t *v, const int32_t *doc,
                                     int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                                     float scale, int64_t window, double softcap) {
  int lane = threadIdx.x & 31;
  int64_t w = (int64_t)blockIdx.x * ATT_WARPS + (threadIdx.x >> 5);
  if (w >= B * K * T) return;
  int64_t j = w % T, bg = w / T, b = bg / K, g = bg % K, rep = H / K;
  const int32_t *db = doc + b * T; /* (T) */
  const int64_t kv = ((b * T + j) * K + g) * D;
  float kr[ATT_PER_LANE], vr[ATT_PER_LANE], ak[ATT_PER_LANE], av[ATT_PER_LANE];
  load_lane(kr, k + kv, lane, D);
  load_lane(vr, v + kv, lane, D);
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) ak[t] = av[t] = 0.0f;
  int32_t dj = db[j];
  const qt_att_tile kt = {j, j + 1, dj, dj};
  int64_t i1 = window > 0 && j + window < T ? j + window : T; /* queries j .. i1-1 may see j */
  for (int64_t r = 0; r < rep; r++) {
    int64_t h = g * rep + r, bh = b * H + h;
    for (int64_t i0 = j; i0 < i1; i0 += 32) {
      int32_t dl;
      const qt_att_tile qt = warp_tile(db, i0, i1, lane, &dl);
      const int cls = qt_att_tile_class(&qt, &kt, window);
      if (cls == QT_ATT_TILE_EMPTY) continue;
      for (int64_t i = qt.lo; i < qt.hi; i++) {
        int32_t di = tile_doc(dl, i, i0);
        if (cls != QT_ATT_TILE_FULL && !qt_att_visible(i, j, di, dj, window)) continue;
        const int64_t qo = ((b * T + i) * H + h) * D;
        float s = scale * dot_lane(kr, q + qo, lane, D);
        float p = expf(att_cap(s, softcap) - lse[bh * T + i]);
        float ds = dk ? p * (dot_lane(vr, dout + qo, lane, D) - delta[bh * T + i]) *
                            att_cap_grad(s, softcap)
                      : 0.0f;
#pragma unroll
        for (int t = 0; t < ATT_PER_LANE; t++) {
          int64_t d = lane + 32 * t;
          if (d < D) {
            av[t] += p * ld_bf16(dout + qo, d);
            ak[t] += ds * ld_bf16(q + qo, d);
          }
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < ATT_PER_LANE; t++) {
    int64_t d = lane + 32 * t;
    if (d >= D) continue;
    if (dk) st_grad(dk, kv + d, acc, scale * ak[t]);
    if (dv) st_grad(dv, kv + d, acc, av[t]);
  }
}

static qt_status attention_check(int64_t T, int64_t H, int64_t K, int64_t D,
                                 const qt_att_opts *o) {
  QT_ASSERT(K > 0 && H > 0 && H % K == 0 && D > 0 && T >= 0);
  QT_ASSERT(!o || (o->scale >= 0 && isfinite(o->scale) && o->window >= 0 && o->softcap >= 0 &&
                   isfinite(o->softcap)));
  if (D > ATT_MAXD)
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "autograd/attention_cuda.cu: head_dim %lld > %d is not supported by the CUDA "
                   "attention kernel; use the CPU backend for this model",
                   (long long)D, ATT_MAXD);
  return QT_OK;
}

/* The score scale: opts->scale, or head_dim^-0.5. */
static float attention_scale(const qt_att_opts *o, int64_t D) {
  return (float)(o && o->scale > 0 ? o->scale : 1.0 / sqrt((double)D));
}

static unsigned attention_grid(int64_t warps) {
  int64_t g = (warps + ATT_WARPS - 1) / ATT_WARPS;
  return (unsigned)(g > 0 ? g : 1);
}

extern "C" qt_status qt_op_attention_forward_cuda(uint16_t *out, float *lse, const uint16_t *q,
                                                  const uint16_t *k, const uint16_t *v,
                                                  const int32_t *doc, int64_t B, int64_t T,
                                                  int64_t H, int64_t K, int64_t D, void *stream,
                                                  const qt_att_opts *opts) {
  QT_TRY(attention_check(T, H, K, D, opts));
  if (B * T == 0) return QT_OK;
  float scale = attention_scale(opts, D);
  int64_t window = opts ? opts->window : 0;
  double softcap = opts ? opts->softcap : 0.0;
  attention_forward_kernel<<<attention_grid(B * H * T), 32 * ATT_WARPS, 0, (cudaStream_t)stream>>>(
      out, lse, q, k, v, doc, B, T, H, K, D, scale, window, softcap);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

extern "C" qt_status qt_op_attention_decode_cuda(uint16_t *out, const uint16_t *q,
                                                 const uint16_t *kc, const uint16_t *vc, int64_t n,
                                                 int64_t pos0, int64_t H, int64_t K, int64_t D,
                                                 void *stream, const qt_att_opts *opts) {
  QT_TRY(attention_check(pos0 + n, H, K, D, opts));
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
                                                   const uint16_t *q,
                                                   const uint16_t *k, const uint16_t *v,
                                                   const int32_t *doc, int64_t B, int64_t T,
                                                   int64_t H, int64_t K, int64_t D,
                                                   void *stream, const qt_att_opts *opts) {
  QT_TRY(attention_check(T, H, K, D, opts));
  if (B * T == 0 || (!dq && !dk && !dv)) return QT_OK;
  float scale = attention_scale(opts, D);
  int64_t window = opts ? opts->window : 0;
  double softcap = opts ? opts->softcap : 0.0;
  if (out && (dq || dk)) { /* delta from the forward's output: one pass over D, not over the keys */
    attention_delta_kernel<<<attention_grid(B * H * T), 32 * ATT_WARPS, 0, (cudaStream_t)stream>>>(
        delta, dout, out, B, T, H, D);
    QT_CUDA_CHECK_LAUNCH();
  }
  if (dq || (dk && !out)) { /* delta is needed by dk; dq comes from the same pass */
    attention_dq_kernel<<<attention_grid(B * H * T), 32 * ATT_WARPS, 0, (cudaStream_t)stream>>>(
        dq, acc, delta, out != NULL, dout, lse, q, k, v, doc, B, T, H, K, D, scale, window, softcap);
    QT_CUDA_CHECK_LAUNCH();
  }
  if (dk || dv) {
    attention_dkv_kernel<<<attention_grid(B * K * T), 32 * ATT_WARPS, 0, (cudaStream_t)stream>>>(
        dk, dv, acc, delta, dout, lse, q, k, v, doc, B, T, H, K, D, scale, window, softcap);
    QT_CUDA_CHECK_LAUNCH();
  }
  return QT_OK;
}
