/* autograd/kernels/attention_flash.h — the tiled (flash) attention of the CUDA
 * backend, written once as __host__ __device__ code: the kernels of
 * autograd/attention_cuda.cu run these block bodies with one thread block per
 * tile, and the host tests (tests/autograd/test_attn_flash.c, plain C, and its
 * nvcc twin) run the very same bodies on the CPU, one "thread" per block,
 * against the CPU attention op. Only the 16 x 16 x 16 matrix product differs:
 * on the device (sm_80 and later) it is a tensor-core WMMA (bf16 operands,
 * fp32 accumulation), on the host a scalar loop in fp32.
 *
 * The algorithm is FlashAttention-2's (Dao 2023) without atomics:
 *  - forward, one block per (row b, head h, query tile): the query tile Q (bf16)
 *    stays in shared memory; for each key tile that is not EMPTY
 *    (attention_mask.h qt_att_tile_class; other documents and the future are
 *    skipped whole) S = Q K^T on tensor cores, then per query row the online
 *    softmax (Milakov & Gimelshein 2018): running max m, sum l, the output
 *    accumulator O (fp32) rescaled by exp(m_old - m_new), P = exp(s - m) rounded
 *    to bf16, O += P V on tensor cores; out = O / l, lse = m + log l saved.
 *  - backward: delta_i = rowsum(dO_i * O_i) (attention_cuda.cu's pre-pass), then
 *    two kernels so that each gradient element has one writer (no atomics,
 *    a fixed summation order, bit-reproducible):
 *      dq, one block per (b, h, query tile), walking the key tiles:
 *        S = Q K^T, dP = dO V^T, dS = P (dP - delta) c'(s) (bf16), dQ += dS K;
 *      dk/dv, one block per (b, kv head g, key tile), walking the query heads
 *        of g and their query tiles: P (bf16), dV += P^T dO, dK += dS^T Q.
 * Masking: a PARTIAL tile tests each pair with qt_att_visible, a FULL one only
 * the row end (positions past T are zero rows of the padded tile); scores are
 * scaled in fp32, soft-capped in double (qt_att_softcap) as the other kernels.
 * Tiles: tile x tile pairs (64, 32 or 16 queries and keys: the launcher takes
 * the largest whose shared memory fits the device), the head dimension padded
 * with zeros to dp, a multiple of 16 (D <= 256).
 *
 * Shared memory of a block (qt_fl_plan_make): bf16 tiles with leading
 * dimension dp + 8 and tile + 8, fp32 tiles with dp + 4 and tile + 4 (padding
 * against bank conflicts; every WMMA pointer stays 32-byte aligned), each
 * buffer at a 128-byte boundary.
 *
 * Work split inside a block of nth threads (thread tid, warp tid / 32): copies
 * and element-wise passes stride over tid; the forward's softmax gives each
 * query row nth / tile threads (strided columns; the row's sum l is then
 * added up by one thread in column order, so no result depends on nth); the
 * 16 x 16 output tiles of a product go to the warps round-robin; the document
 * id range of a tile is built by each warp with shuffles (qt_fl_tile).
 * QT_FL_SYNC() (a __syncthreads() on the device; on the host nothing, or a
 * test's barrier) separates the phases; every shared buffer a phase reads was
 * written before the last sync and is not written by any thread until the
 * next one. */
#ifndef QT_AUTOGRAD_KERNELS_ATTENTION_FLASH_H
#define QT_AUTOGRAD_KERNELS_ATTENTION_FLASH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "autograd/kernels/attention_mask.h"
#include "quant/quant_hd.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <mma.h>
#endif

#define QT_FL_HD QT_ATT_HD
#define QT_FL_MAXD 256   /* largest head dimension */
#define QT_FL_THREADS 256 /* threads of a block on the device: 8 warps */

/* On the host a block is one thread (nothing to wait for), unless a test
 * runs its threads concurrently and sets a barrier here
 * (tests/autograd/test_attn_flash.c: QT_FL_THREADS threads per block). */
static inline void (**qt_fl_host_sync_slot(void))(void) {
  static void (*sync)(void);
  return &sync;
}
#ifdef __CUDA_ARCH__
#define QT_FL_SYNC() __syncthreads()
#else
#define QT_FL_SYNC() (*qt_fl_host_sync_slot() ? (*qt_fl_host_sync_slot())() : (void)0)
#endif

enum { QT_FL_FWD = 0, QT_FL_DQ = 1, QT_FL_DKV = 2 };

/* Shared-memory layout of one block of a kernel: byte offsets (the buffers a
 * kind does not use have size 0) and leading dimensions in elements. */
typedef struct {
  int kind, tile, dp;
  int ldh;  /* bf16 (tile, dp): q, k, v, dout */
  int ldf;  /* fp32 (tile, dp): acc1 (O, dQ or dK), acc2 (dV) */
  int lds;  /* fp32 (tile, tile): s (scores), dpm (dP) */
  int ldp;  /* bf16 (tile, tile): p, ds */
  size_t q, k, v, dout, s, dpm, p, ds, acc1, acc2, r1, r2, part;
  size_t bytes;
} qt_fl_plan;

static inline QT_FL_HD size_t qt_fl_take(size_t *at, size_t bytes) {
  size_t o = *at;
  *at += (bytes + 127) / 128 * 128;
  return o;
}

/* The layout of kind (QT_FL_FWD, QT_FL_DQ, QT_FL_DKV) for head dimension D
 * (1 .. QT_FL_MAXD) and tiles of `tile` positions (a multiple of 16). */
static inline QT_FL_HD qt_fl_plan qt_fl_plan_make(int kind, int64_t D, int tile) {
  qt_fl_plan p;
  memset(&p, 0, sizeof p);
  p.kind = kind;
  p.tile = tile;
  p.dp = (int)((D + 15) / 16 * 16);
  p.ldh = p.dp + 8;
  p.ldf = p.dp + 4;
  p.lds = tile + 4;
  p.ldp = tile + 8;
  const size_t th = (size_t)tile * (size_t)p.ldh * 2, tf = (size_t)tile * (size_t)p.ldf * 4;
  const size_t ss = (size_t)tile * (size_t)p.lds * 4, sp = (size_t)tile * (size_t)p.ldp * 2;
  const size_t row = (size_t)tile * 4;
  size_t at = 0;
  p.q = qt_fl_take(&at, th);
  p.k = qt_fl_take(&at, th);
  p.v = qt_fl_take(&at, th);
  p.dout = qt_fl_take(&at, kind == QT_FL_FWD ? 0 : th);
  p.s = qt_fl_take(&at, ss);
  p.dpm = qt_fl_take(&at, kind == QT_FL_FWD ? 0 : ss);
  p.p = qt_fl_take(&at, kind == QT_FL_DQ ? 0 : sp);
  p.ds = qt_fl_take(&at, kind == QT_FL_FWD ? 0 : sp);
  p.acc1 = qt_fl_take(&at, tf);
  p.acc2 = qt_fl_take(&at, kind == QT_FL_DKV ? tf : 0);
  p.r1 = qt_fl_take(&at, row); /* forward: m; backward: lse */
  p.r2 = qt_fl_take(&at, row); /* forward: l; backward: delta */
  /* forward: each row's partial maxima, one per thread of the row (at most
   * max(tile, QT_FL_THREADS) threads in all) */
  p.part = qt_fl_take(&at, kind == QT_FL_FWD ? (size_t)(tile > QT_FL_THREADS ? tile : QT_FL_THREADS) * 4
                                             : 0);
  p.bytes = at;
  return p;
}

/* Inputs and outputs of the three kernels (device or host pointers, the
 * layouts of autograd/ops_cuda.h: q, out, dout, dq (B*T, H, D); k, v, dk, dv
 * (B*T, K, D); lse, delta (B, H, T); doc (B, T)). */
typedef struct {
  const uint16_t *q, *k, *v, *dout;
  const float *lse_in, *delta;
  const int32_t *doc;
  uint16_t *out;
  float *lse;
  uint16_t *dq, *dk, *dv; /* each may be NULL (not wanted) */
  int acc;                /* gradients: 1 add to what is there, 0 overwrite */
  int64_t B, T, H, K, D;
  float scale;
  int64_t window;
  double softcap;
} qt_fl_args;

/* The score scale: scale, or head_dim^-0.5 when it is 0 (ops.h qt_att_opts). */
static inline QT_FL_HD float qt_fl_scale(double scale, int64_t D) {
  return (float)(scale > 0 ? scale : 1.0 / sqrt((double)D));
}

/* The arguments every kernel reads: q, k, v, doc and the shape; scale = 0
 * means head_dim^-0.5 (ops.h qt_att_opts); outputs and gradients NULL. */
static inline QT_FL_HD qt_fl_args qt_fl_args_make(const uint16_t *q, const uint16_t *k,
                                                  const uint16_t *v, const int32_t *doc, int64_t B,
                                                  int64_t T, int64_t H, int64_t K, int64_t D,
                                                  double scale, int64_t window, double softcap) {
  qt_fl_args a;
  memset(&a, 0, sizeof a);
  a.q = q;
  a.k = k;
  a.v = v;
  a.doc = doc;
  a.B = B;
  a.T = T;
  a.H = H;
  a.K = K;
  a.D = D;
  a.scale = qt_fl_scale(scale, D);
  a.window = window;
  a.softcap = softcap;
  return a;
}

static inline QT_FL_HD float qt_fl_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* The fp32 scaled score s after soft-capping (softcap > 0), tanh in double. */
static inline QT_FL_HD float qt_fl_cap(float s, double softcap) {
  return softcap > 0 ? (float)qt_att_softcap((double)s, softcap) : s;
}
static inline QT_FL_HD float qt_fl_cap_grad(float s, double softcap) {
  return softcap > 0 ? (float)qt_att_softcap_grad((double)s, softcap) : 1.0f;
}

/* dst (+)= v for a bf16 gradient (one rounding of the fp32 sum). */
static inline QT_FL_HD void qt_fl_st_grad(uint16_t *dst, int64_t i, int acc, float v) {
  dst[i] = qt_quant_bf16_rne_hd(acc ? qt_fl_f32(dst[i]) + v : v);
}

#if defined(__CUDACC__)
/* One warp's share of C = [C +] A B with tensor cores (see qt_fl_mma). */
template <typename LA, typename LB>
static __device__ __forceinline__ void qt_fl_wmma(float *C, int ldc, const uint16_t *A, int lda,
                                                  int a_t, const uint16_t *B, int ldb, int b_t,
                                                  int m, int n, int kd, int acc, int warp,
                                                  int nwarps) {
  using namespace nvcuda;
  const int tn = n / 16, tiles = (m / 16) * tn;
  for (int t = warp; t < tiles; t += nwarps) {
    const int ti = t / tn, tj = t % tn;
    float *cp = C + (size_t)ti * 16 * ldc + tj * 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
    if (acc) wmma::load_matrix_sync(c, cp, (unsigned)ldc, wmma::mem_row_major);
    else wmma::fill_fragment(c, 0.0f);
    for (int x = 0; x < kd; x += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> fb;
      const uint16_t *ap = a_t ? A + (size_t)x * lda + ti * 16 : A + (size_t)ti * 16 * lda + x;
      const uint16_t *bp = b_t ? B + (size_t)tj * 16 * ldb + x : B + (size_t)x * ldb + tj * 16;
      wmma::load_matrix_sync(fa, (const __nv_bfloat16 *)ap, (unsigned)lda);
      wmma::load_matrix_sync(fb, (const __nv_bfloat16 *)bp, (unsigned)ldb);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(cp, c, (unsigned)ldc, wmma::mem_row_major);
  }
}
#endif

/* C (m x n fp32, row-major, leading dimension ldc) = [C +] A (m x kd) B (kd x n)
 * with bf16 operands and fp32 accumulation; m, n, kd multiples of 16.
 * A element (i, x) is A[i * lda + x] (a_t 0) or A[x * lda + i] (a_t 1, A
 * stored transposed); B element (x, j) is B[x * ldb + j] (b_t 0) or
 * B[j * ldb + x] (b_t 1). Output tile t (of the m/16 x n/16, row-major) belongs
 * to warp t % nwarps; on the host (one thread) nwarps is 1 and lane, nlanes
 * are 0, 1. The caller syncs before (inputs written) and after (C read). */
static inline QT_FL_HD void qt_fl_mma(float *C, int ldc, const uint16_t *A, int lda, int a_t,
                                      const uint16_t *B, int ldb, int b_t, int m, int n, int kd,
                                      int acc, int warp, int nwarps, int lane, int nlanes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  (void)lane;
  (void)nlanes;
  if (!a_t && !b_t)
    qt_fl_wmma<nvcuda::wmma::row_major, nvcuda::wmma::row_major>(C, ldc, A, lda, a_t, B, ldb, b_t,
                                                                 m, n, kd, acc, warp, nwarps);
  else if (!a_t)
    qt_fl_wmma<nvcuda::wmma::row_major, nvcuda::wmma::col_major>(C, ldc, A, lda, a_t, B, ldb, b_t,
                                                                 m, n, kd, acc, warp, nwarps);
  else if (!b_t)
    qt_fl_wmma<nvcuda::wmma::col_major, nvcuda::wmma::row_major>(C, ldc, A, lda, a_t, B, ldb, b_t,
                                                                 m, n, kd, acc, warp, nwarps);
  else
    qt_fl_wmma<nvcuda::wmma::col_major, nvcuda::wmma::col_major>(C, ldc, A, lda, a_t, B, ldb, b_t,
                                                                 m, n, kd, acc, warp, nwarps);
#else
  /* scalar: the host, and devices without bf16 tensor cores */
  const int tn = n / 16, tiles = (m / 16) * tn;
  for (int t = warp; t < tiles; t += nwarps)
    for (int e = lane; e < 256; e += nlanes) {
      const int i = (t / tn) * 16 + e / 16, j = (t % tn) * 16 + e % 16;
      float sum = 0.0f;
      for (int x = 0; x < kd; x++) {
        float a = qt_fl_f32(a_t ? A[(size_t)x * lda + i] : A[(size_t)i * lda + x]);
        float b = qt_fl_f32(b_t ? B[(size_t)j * ldb + x] : B[(size_t)x * ldb + j]);
        sum += a * b;
      }
      float *c = C + (size_t)i * ldc + j;
      *c = acc ? *c + sum : sum;
    }
#endif
}

/* dst (tile, ld) bf16 = rows 0 .. nrows-1 of src (row stride rs elements, D
 * values each), zeros in the rows past nrows and the columns D .. dp-1. */
static inline QT_FL_HD void qt_fl_load(uint16_t *dst, int ld, const uint16_t *src, int64_t rs,
                                       int64_t nrows, int64_t D, int tile, int dp, int tid,
                                       int nth) {
  if (D % 8 == 0 && rs % 8 == 0 && ld % 8 == 0 && (uintptr_t)src % 16 == 0) {
    /* 8 values (16 bytes) per step: rows of whole heads, as the model's q, k,
     * v, dO (D a multiple of 8, cudaMalloc'd and row offsets of whole heads) */
    const int c8 = dp / 8;
    for (int e = tid; e < tile * c8; e += nth) {
      const int r = e / c8, c = (e % c8) * 8;
      uint16_t *d = dst + (size_t)r * ld + c;
      if (r < nrows && c < D) {
#ifdef __CUDA_ARCH__
        *(uint4 *)d = *(const uint4 *)(src + (int64_t)r * rs + c);
#else
        memcpy(d, src + (int64_t)r * rs + c, 16);
#endif
      } else {
        for (int x = 0; x < 8; x++) d[x] = 0;
      }
    }
    return;
  }
  for (int e = tid; e < tile * dp; e += nth) {
    const int r = e / dp, c = e % dp;
    dst[(size_t)r * ld + c] = r < nrows && c < D ? src[(int64_t)r * rs + c] : (uint16_t)0;
  }
}

static inline QT_FL_HD void qt_fl_zero(float *dst, int ld, int rows, int cols, int tid, int nth) {
  for (int e = tid; e < rows * cols; e += nth) dst[(size_t)(e / cols) * ld + e % cols] = 0.0f;
}

static inline QT_FL_HD int64_t qt_fl_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* The tile [lo, lo + tile) of a row and its document id range
 * (attention_mask.h qt_att_tile_make). On the device each warp builds it at
 * once (a lane reads every 32nd position, then min/max butterflies: every
 * lane gets the range; all 32 lanes call it, as every thread of a block does
 * at the same point), instead of one thread reading all tile ids. */
static inline QT_FL_HD qt_att_tile qt_fl_tile(const int32_t *db, int64_t T, int64_t lo, int tile,
                                              int lane) {
#ifdef __CUDA_ARCH__
  int32_t mn = INT32_MAX, mx = INT32_MIN;
  for (int x = lane; x < tile; x += 32)
    if (lo + x < T) {
      const int32_t d = db[lo + x];
      mn = d < mn ? d : mn;
      mx = d > mx ? d : mx;
    }
  for (int o = 16; o > 0; o >>= 1) {
    const int32_t a = __shfl_xor_sync(0xffffffffu, mn, o), b = __shfl_xor_sync(0xffffffffu, mx, o);
    mn = a < mn ? a : mn;
    mx = b > mx ? b : mx;
  }
  qt_att_tile t;
  t.lo = lo < 0 ? 0 : lo;
  t.hi = lo + tile > T ? T : lo + tile;
  t.dmin = mn;
  t.dmax = mx;
  return t;
#else
  (void)lane;
  return qt_att_tile_make(db, T, lo, lo + tile);
#endif
}

/* Whether the pair (query i0 + r, key j0 + c) of a tile pair of class cls is
 * attended: inside the row and, in a PARTIAL pair, qt_att_visible. */
static inline QT_FL_HD int qt_fl_pair(const int32_t *db, int64_t T, int64_t i, int64_t j, int cls,
                                      int64_t window) {
  if (i >= T || j >= T) return 0;
  return cls == QT_ATT_TILE_FULL || qt_att_visible(i, j, db[i], db[j], window);
}

/* The first key tile (a multiple of tile) a query tile starting at i0 may see. */
static inline QT_FL_HD int64_t qt_fl_first_key_tile(int64_t i0, int64_t window, int tile) {
  int64_t js = qt_att_key_start(0, i0, window);
  return js - js % tile;
}

/* max(m, part[0 .. n-1]) */
static inline QT_FL_HD float qt_fl_row_max(float m, const float *part, int n) {
  for (int x = 0; x < n; x++) m = m > part[x] ? m : part[x];
  return m;
}

/* Forward of the query tile qi of (b, h): out rows, lse. */
static inline QT_FL_HD void qt_fl_forward_block(const qt_fl_args *a, const qt_fl_plan *pl,
                                                unsigned char *sm, int64_t b, int64_t h,
                                                int64_t qi, int tid, int nth) {
  const int tile = pl->tile, dp = pl->dp, nwarps = (nth + 31) / 32, warp = tid / 32;
  const int lane = tid % 32, nlanes = nth < 32 ? nth : 32;
  uint16_t *sq = (uint16_t *)(sm + pl->q), *sk = (uint16_t *)(sm + pl->k);
  uint16_t *sv = (uint16_t *)(sm + pl->v), *sp = (uint16_t *)(sm + pl->p);
  float *ss = (float *)(sm + pl->s), *so = (float *)(sm + pl->acc1);
  float *mrow = (float *)(sm + pl->r1), *lrow = (float *)(sm + pl->r2);
  float *part = (float *)(sm + pl->part);
  const int tpr = nth >= tile ? nth / tile : 1; /* threads per query row in the softmax */
  const int64_t T = a->T, H = a->H, K = a->K, D = a->D, g = h / (H / K);
  const int32_t *db = a->doc + b * T;
  const int64_t i0 = qi * tile, nq = qt_fl_min(tile, T - i0), ilast = i0 + nq - 1;
  qt_fl_load(sq, pl->ldh, a->q + ((b * T + i0) * H + h) * D, H * D, nq, D, tile, dp, tid, nth);
  qt_fl_zero(so, pl->ldf, tile, dp, tid, nth);
  for (int r = tid; r < tile; r += nth) {
    mrow[r] = -INFINITY;
    lrow[r] = 0.0f;
  }
  const qt_att_tile qt = qt_fl_tile(db, T, i0, tile, lane);
  for (int64_t j0 = qt_fl_first_key_tile(i0, a->window, tile); j0 <= ilast; j0 += tile) {
    const qt_att_tile kt = qt_fl_tile(db, T, j0, tile, lane);
    const int cls = qt_att_tile_class(&qt, &kt, a->window);
    if (cls == QT_ATT_TILE_EMPTY) continue; /* the same decision in every thread */
    const int64_t nk = qt_fl_min(tile, T - j0);
    QT_FL_SYNC(); /* the last tile's product has read sk, sv, sp */
    qt_fl_load(sk, pl->ldh, a->k + ((b * T + j0) * K + g) * D, K * D, nk, D, tile, dp, tid, nth);
    qt_fl_load(sv, pl->ldh, a->v + ((b * T + j0) * K + g) * D, K * D, nk, D, tile, dp, tid, nth);
    QT_FL_SYNC();
    qt_fl_mma(ss, pl->lds, sq, pl->ldh, 0, sk, pl->ldh, 1, tile, tile, dp, 0, warp, nwarps, lane,
              nlanes);
    QT_FL_SYNC();
    /* the online softmax, tpr threads per query row (thread sub of row r
     * takes columns sub, sub + tpr, ...): masked, capped scores and each
     * thread's maximum; then the row's new maximum, P and O's rescaling; the
     * row sum l in one thread, in column order, beside P V (so the results do
     * not depend on tpr: one thread per block on the host gives the bits of
     * 128 on the device) */
    for (int e = tid; e < tile * tpr; e += nth) {
      const int r = e / tpr, sub = e % tpr;
      const int64_t i = i0 + r;
      float *srow = ss + (size_t)r * pl->lds, mx = -INFINITY;
      for (int c = sub; c < tile; c += tpr) {
        const float s = qt_fl_pair(db, T, i, j0 + c, cls, a->window)
                            ? qt_fl_cap(a->scale * srow[c], a->softcap)
                            : -INFINITY;
        srow[c] = s;
        mx = mx > s ? mx : s;
      }
      part[e] = mx;
    }
    QT_FL_SYNC();
    for (int e = tid; e < tile * tpr; e += nth) {
      const int r = e / tpr, sub = e % tpr;
      float *srow = ss + (size_t)r * pl->lds;
      uint16_t *prow = sp + (size_t)r * pl->ldp;
      const float mo = mrow[r], mn = qt_fl_row_max(mo, part + r * tpr, tpr);
      if (mn == -INFINITY) { /* nothing visible yet (or a row past T) */
        for (int c = sub; c < tile; c += tpr) prow[c] = 0;
        continue;
      }
      const float corr = expf(mo - mn); /* mo = -inf: 0 */
      for (int c = sub; c < tile; c += tpr) {
        const float p = expf(srow[c] - mn); /* -inf: 0 */
        srow[c] = p;
        prow[c] = qt_quant_bf16_rne_hd(p);
      }
      if (corr != 1.0f)
        for (int d = sub; d < dp; d += tpr) so[(size_t)r * pl->ldf + d] *= corr;
    }
    QT_FL_SYNC();
    for (int r = tid; r < tile; r += nth) { /* m, l (read again only after the next syncs) */
      const float mo = mrow[r], mn = qt_fl_row_max(mo, part + r * tpr, tpr);
      if (mn == -INFINITY) continue;
      const float *srow = ss + (size_t)r * pl->lds;
      float sum = 0.0f;
      for (int c = 0; c < tile; c++) sum += srow[c];
      lrow[r] = lrow[r] * expf(mo - mn) + sum;
      mrow[r] = mn;
    }
    qt_fl_mma(so, pl->ldf, sp, pl->ldp, 0, sv, pl->ldh, 0, tile, dp, tile, 1, warp, nwarps, lane,
              nlanes);
  }
  QT_FL_SYNC();
  for (int64_t e = tid; e < nq * D; e += nth) { /* the key i = query always attends: l >= 1 */
    const int64_t r = e / D, d = e % D;
    a->out[((b * T + i0 + r) * H + h) * D + d] =
        qt_quant_bf16_rne_hd(so[(size_t)r * pl->ldf + d] / lrow[r]);
  }
  for (int64_t r = tid; r < nq; r += nth)
    a->lse[(b * H + h) * T + i0 + r] = mrow[r] + logf(lrow[r]);
}

/* dq of the query tile qi of (b, h) (a->dq set; a->delta from the pre-pass). */
static inline QT_FL_HD void qt_fl_dq_block(const qt_fl_args *a, const qt_fl_plan *pl,
                                           unsigned char *sm, int64_t b, int64_t h, int64_t qi,
                                           int tid, int nth) {
  const int tile = pl->tile, dp = pl->dp, nwarps = (nth + 31) / 32, warp = tid / 32;
  const int lane = tid % 32, nlanes = nth < 32 ? nth : 32;
  uint16_t *sq = (uint16_t *)(sm + pl->q), *sk = (uint16_t *)(sm + pl->k);
  uint16_t *sv = (uint16_t *)(sm + pl->v), *sdo = (uint16_t *)(sm + pl->dout);
  uint16_t *sds = (uint16_t *)(sm + pl->ds);
  float *ss = (float *)(sm + pl->s), *sdp = (float *)(sm + pl->dpm);
  float *sacc = (float *)(sm + pl->acc1);
  float *lse = (float *)(sm + pl->r1), *delta = (float *)(sm + pl->r2);
  const int64_t T = a->T, H = a->H, K = a->K, D = a->D, g = h / (H / K), bh = b * H + h;
  const int32_t *db = a->doc + b * T;
  const int64_t i0 = qi * tile, nq = qt_fl_min(tile, T - i0), ilast = i0 + nq - 1;
  qt_fl_load(sq, pl->ldh, a->q + ((b * T + i0) * H + h) * D, H * D, nq, D, tile, dp, tid, nth);
  qt_fl_load(sdo, pl->ldh, a->dout + ((b * T + i0) * H + h) * D, H * D, nq, D, tile, dp, tid, nth);
  qt_fl_zero(sacc, pl->ldf, tile, dp, tid, nth);
  for (int r = tid; r < tile; r += nth) {
    lse[r] = r < nq ? a->lse_in[bh * T + i0 + r] : 0.0f;
    delta[r] = r < nq ? a->delta[bh * T + i0 + r] : 0.0f;
  }
  const qt_att_tile qt = qt_fl_tile(db, T, i0, tile, lane);
  for (int64_t j0 = qt_fl_first_key_tile(i0, a->window, tile); j0 <= ilast; j0 += tile) {
    const qt_att_tile kt = qt_fl_tile(db, T, j0, tile, lane);
    const int cls = qt_att_tile_class(&qt, &kt, a->window);
    if (cls == QT_ATT_TILE_EMPTY) continue;
    const int64_t nk = qt_fl_min(tile, T - j0);
    QT_FL_SYNC(); /* the last tile's dQ product has read sk, sds */
    qt_fl_load(sk, pl->ldh, a->k + ((b * T + j0) * K + g) * D, K * D, nk, D, tile, dp, tid, nth);
    qt_fl_load(sv, pl->ldh, a->v + ((b * T + j0) * K + g) * D, K * D, nk, D, tile, dp, tid, nth);
    QT_FL_SYNC();
    qt_fl_mma(ss, pl->lds, sq, pl->ldh, 0, sk, pl->ldh, 1, tile, tile, dp, 0, warp, nwarps, lane,
              nlanes);
    qt_fl_mma(sdp, pl->lds, sdo, pl->ldh, 0, sv, pl->ldh, 1, tile, tile, dp, 0, warp, nwarps, lane,
              nlanes);
    QT_FL_SYNC();
    for (int e = tid; e < tile * tile; e += nth) {
      const int r = e / tile, c = e % tile;
      float ds = 0.0f;
      if (qt_fl_pair(db, T, i0 + r, j0 + c, cls, a->window)) {
        const float s = a->scale * ss[(size_t)r * pl->lds + c];
        const float p = expf(qt_fl_cap(s, a->softcap) - lse[r]);
        ds = p * (sdp[(size_t)r * pl->lds + c] - delta[r]) * qt_fl_cap_grad(s, a->softcap);
      }
      sds[(size_t)r * pl->ldp + c] = qt_quant_bf16_rne_hd(ds);
    }
    QT_FL_SYNC();
    qt_fl_mma(sacc, pl->ldf, sds, pl->ldp, 0, sk, pl->ldh, 0, tile, dp, tile, 1, warp, nwarps, lane,
              nlanes);
  }
  QT_FL_SYNC();
  for (int64_t e = tid; e < nq * D; e += nth) {
    const int64_t r = e / D, d = e % D;
    qt_fl_st_grad(a->dq, ((b * T + i0 + r) * H + h) * D + d, a->acc,
                  a->scale * sacc[(size_t)r * pl->ldf + d]);
  }
}

/* dk and dv (either may be NULL; dk needs a->delta) of the key tile kj of
 * (b, kv head g), over the H / K query heads of g. */
static inline QT_FL_HD void qt_fl_dkv_block(const qt_fl_args *a, const qt_fl_plan *pl,
                                            unsigned char *sm, int64_t b, int64_t g, int64_t kj,
                                            int tid, int nth) {
  const int tile = pl->tile, dp = pl->dp, nwarps = (nth + 31) / 32, warp = tid / 32;
  const int lane = tid % 32, nlanes = nth < 32 ? nth : 32;
  uint16_t *sq = (uint16_t *)(sm + pl->q), *sk = (uint16_t *)(sm + pl->k);
  uint16_t *sv = (uint16_t *)(sm + pl->v), *sdo = (uint16_t *)(sm + pl->dout);
  uint16_t *sp = (uint16_t *)(sm + pl->p), *sds = (uint16_t *)(sm + pl->ds);
  float *ss = (float *)(sm + pl->s), *sdp = (float *)(sm + pl->dpm);
  float *sdk = (float *)(sm + pl->acc1), *sdv = (float *)(sm + pl->acc2);
  float *lse = (float *)(sm + pl->r1), *delta = (float *)(sm + pl->r2);
  const int64_t T = a->T, H = a->H, K = a->K, D = a->D, rep = H / K;
  const int32_t *db = a->doc + b * T;
  const int64_t j0 = kj * tile, nk = qt_fl_min(tile, T - j0), jlast = j0 + nk - 1;
  const int want_ds = a->dk != NULL;
  /* queries that may see a key of the tile: j0 <= i < jlast + window */
  const int64_t iend = a->window > 0 ? qt_fl_min(T, jlast + a->window) : T;
  qt_fl_load(sk, pl->ldh, a->k + ((b * T + j0) * K + g) * D, K * D, nk, D, tile, dp, tid, nth);
  qt_fl_load(sv, pl->ldh, a->v + ((b * T + j0) * K + g) * D, K * D, nk, D, tile, dp, tid, nth);
  qt_fl_zero(sdk, pl->ldf, tile, dp, tid, nth);
  qt_fl_zero(sdv, pl->ldf, tile, dp, tid, nth);
  const qt_att_tile kt = qt_fl_tile(db, T, j0, tile, lane);
  for (int64_t rh = 0; rh < rep; rh++) {
    const int64_t h = g * rep + rh, bh = b * H + h;
    for (int64_t i0 = j0; i0 < iend; i0 += tile) {
      const qt_att_tile qt = qt_fl_tile(db, T, i0, tile, lane);
      const int cls = qt_att_tile_class(&qt, &kt, a->window);
      if (cls == QT_ATT_TILE_EMPTY) continue;
      const int64_t nq = qt_fl_min(tile, T - i0);
      QT_FL_SYNC(); /* the last tile's dV / dK products have read sq, sdo, sp, sds */
      qt_fl_load(sq, pl->ldh, a->q + ((b * T + i0) * H + h) * D, H * D, nq, D, tile, dp, tid, nth);
      qt_fl_load(sdo, pl->ldh, a->dout + ((b * T + i0) * H + h) * D, H * D, nq, D, tile, dp, tid,
                 nth);
      for (int r = tid; r < tile; r += nth) {
        lse[r] = r < nq ? a->lse_in[bh * T + i0 + r] : 0.0f;
        delta[r] = r < nq && want_ds ? a->delta[bh * T + i0 + r] : 0.0f;
      }
      QT_FL_SYNC();
      qt_fl_mma(ss, pl->lds, sq, pl->ldh, 0, sk, pl->ldh, 1, tile, tile, dp, 0, warp, nwarps, lane,
                nlanes);
      if (want_ds)
        qt_fl_mma(sdp, pl->lds, sdo, pl->ldh, 0, sv, pl->ldh, 1, tile, tile, dp, 0, warp, nwarps,
                  lane, nlanes);
      QT_FL_SYNC();
      for (int e = tid; e < tile * tile; e += nth) {
        const int r = e / tile, c = e % tile;
        float p = 0.0f, ds = 0.0f;
        if (qt_fl_pair(db, T, i0 + r, j0 + c, cls, a->window)) {
          const float s = a->scale * ss[(size_t)r * pl->lds + c];
          p = expf(qt_fl_cap(s, a->softcap) - lse[r]);
          if (want_ds)
            ds = p * (sdp[(size_t)r * pl->lds + c] - delta[r]) * qt_fl_cap_grad(s, a->softcap);
        }
        sp[(size_t)r * pl->ldp + c] = qt_quant_bf16_rne_hd(p);
        sds[(size_t)r * pl->ldp + c] = qt_quant_bf16_rne_hd(ds);
      }
      QT_FL_SYNC();
      /* dV (keys x dp) += P^T dO ; dK += dS^T Q: P, dS read transposed */
      qt_fl_mma(sdv, pl->ldf, sp, pl->ldp, 1, sdo, pl->ldh, 0, tile, dp, tile, 1, warp, nwarps,
                lane, nlanes);
      if (want_ds)
        qt_fl_mma(sdk, pl->ldf, sds, pl->ldp, 1, sq, pl->ldh, 0, tile, dp, tile, 1, warp, nwarps,
                  lane, nlanes);
    }
  }
  QT_FL_SYNC();
  for (int64_t e = tid; e < nk * D; e += nth) {
    const int64_t r = e / D, d = e % D, o = ((b * T + j0 + r) * K + g) * D + d;
    if (a->dk) qt_fl_st_grad(a->dk, o, a->acc, a->scale * sdk[(size_t)r * pl->ldf + d]);
    if (a->dv) qt_fl_st_grad(a->dv, o, a->acc, sdv[(size_t)r * pl->ldf + d]);
  }
}

#endif
