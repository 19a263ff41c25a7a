/* autograd/kernels/attention_mask.h — the per-element rules of the attention op
 * (autograd/ops.h qt_att_opts), written once for the CPU kernels
 * (attention_cpu.inc), the CUDA kernels (attention_cuda.cu) and a host test
 * (tests/autograd/test_ops_grad.c test_attention_mask_helpers,
 * tests/autograd/test_attn_tile.c): which key a query sees, which (query tile,
 * key tile) blocks of a row hold no / only visible pairs, and the logit
 * soft-capping with its derivative.
 *
 * Small `static inline` helpers (host + device under nvcc) so that every backend
 * runs literally the same predicate and formula; nothing else belongs here. */
#ifndef QT_AUTOGRAD_KERNELS_ATTENTION_MASK_H
#define QT_AUTOGRAD_KERNELS_ATTENTION_MASK_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define QT_ATT_HD __host__ __device__
#else
#define QT_ATT_HD
#endif

/* Key j visible from query i of the same packed row (di, dj their document
 * ids): causal (j <= i), same document, and inside the sliding window when
 * window > 0 — transformers masking_utils sliding_window_overlay keeps
 * kv_idx > q_idx - sliding_window, i.e. i - j < window. */
static inline QT_ATT_HD int qt_att_visible(int64_t i, int64_t j, int32_t di, int32_t dj,
                                           int64_t window) {
  return j <= i && dj == di && (window <= 0 || i - j < window);
}

/* First key a query (or a tile of queries starting at i) can see within a
 * document starting at s0: max(s0, i - window + 1), s0 without a window. */
static inline QT_ATT_HD int64_t qt_att_key_start(int64_t s0, int64_t i, int64_t window) {
  return window > 0 && i - window + 1 > s0 ? i - window + 1 : s0;
}

/* ---- tiles ----
 * A tile is a range [lo, hi) of positions of one packed row with the smallest
 * and largest document id in it. A (query tile, key tile) pair is EMPTY when
 * no pair (i, j) in it passes qt_att_visible, FULL when every pair does, and
 * PARTIAL otherwise (either may still hold, e.g. for non-contiguous document
 * ids: the test is conservative, exact only for the bounds it looks at). So a
 * kernel may skip an EMPTY tile and drop the per-element test in a FULL one
 * without changing a result. Document ids need not be contiguous runs: two
 * tiles whose [dmin, dmax] ranges are disjoint share no id, and a tile pair
 * whose ranges are one and the same single id has only that id. */
enum { QT_ATT_TILE_EMPTY = 0, QT_ATT_TILE_PARTIAL = 1, QT_ATT_TILE_FULL = 2 };

typedef struct {
  int64_t lo, hi;          /* positions lo .. hi-1 (lo >= hi: an empty tile) */
  int32_t dmin, dmax;      /* smallest and largest document id among them */
} qt_att_tile;

/* The tile [lo, hi) of a row of T positions (clipped to T; positions past the
 * end, e.g. of a row's last tile, are not part of it) and its id range. */
static inline QT_ATT_HD qt_att_tile qt_att_tile_make(const int32_t *doc, int64_t T, int64_t lo,
                                                     int64_t hi) {
  qt_att_tile t;
  t.lo = lo < 0 ? 0 : lo;
  t.hi = hi > T ? T : hi;
  t.dmin = INT32_MAX;
  t.dmax = INT32_MIN;
  for (int64_t p = t.lo; p < t.hi; p++) {
    t.dmin = doc[p] < t.dmin ? doc[p] : t.dmin;
    t.dmax = doc[p] > t.dmax ? doc[p] : t.dmax;
  }
  return t;
}

/* EMPTY / PARTIAL / FULL for queries q x keys k under qt_att_visible (causal,
 * same document, i - j < window when window > 0). */
static inline QT_ATT_HD int qt_att_tile_class(const qt_att_tile *q, const qt_att_tile *k,
                                              int64_t window) {
  if (q->lo >= q->hi || k->lo >= k->hi) return QT_ATT_TILE_EMPTY;
  const int64_t qlast = q->hi - 1, klast = k->hi - 1;
  /* causal: the earliest key after the last query; window: the closest pair
   * (first query, last key) already too far apart; documents: no common id */
  if (k->lo > qlast) return QT_ATT_TILE_EMPTY;
  if (window > 0 && q->lo - klast >= window) return QT_ATT_TILE_EMPTY;
  if (q->dmax < k->dmin || k->dmax < q->dmin) return QT_ATT_TILE_EMPTY;
  /* full: every key at or before every query, the farthest pair (last query,
   * first key) inside the window, one document id on both sides */
  if (klast <= q->lo && (window <= 0 || qlast - k->lo < window) && q->dmin == q->dmax &&
      k->dmin == k->dmax && q->dmin == k->dmin)
    return QT_ATT_TILE_FULL;
  return QT_ATT_TILE_PARTIAL;
}

/* gemma2 attn_logit_softcapping (transformers models/gemma2/modeling_gemma2.py
 * eager_attention_forward): s -> softcap * tanh(s / softcap); softcap <= 0
 * leaves s alone. In double: the kernels pass the score as they store it
 * (fp32-rounded in the fp32 paths) and round the result back. */
static inline QT_ATT_HD double qt_att_softcap(double s, double softcap) {
  return softcap > 0 ? softcap * tanh(s / softcap) : s;
}

/* d softcap(s) / d s = 1 - tanh^2(s / softcap) (1 without capping): the
 * backward multiplies the capped score's gradient by it. */
static inline QT_ATT_HD double qt_att_softcap_grad(double s, double softcap) {
  if (softcap <= 0) return 1.0;
  double t = tanh(s / softcap);
  return 1.0 - t * t;
}

#endif
