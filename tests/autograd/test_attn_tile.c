/* The attention tile classifier (autograd/kernels/attention_mask.h
 * qt_att_tile_make / qt_att_tile_class) against brute force with the
 * per-element rule qt_att_visible, over many random packed rows: documents as
 * contiguous runs of random lengths and as arbitrary id arrays, no window and
 * random windows, random tile sizes, tiles that run past the row's end and
 * tiles wholly past it. EMPTY must mean no visible pair, FULL all pairs
 * visible; and the classifier must not be trivially PARTIAL: for contiguous
 * documents most truly empty / full tile pairs must be recognised. Then the
 * tile walks of the CUDA kernels (autograd/kernels/attention_flash.h), replayed
 * on the host, must count every visible pair once and no other.
 *
 * Plain C, so it runs in every build; tests/autograd/test_attn_tile_host.cu
 * compiles this same file with nvcc (the helpers then are __host__ __device__,
 * as the CUDA kernels see them). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kernels/attention_flash.h"
#include "autograd/kernels/attention_mask.h"

static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int64_t rng_below(uint64_t *s, int64_t n) { return (int64_t)(rng_next(s) % (uint64_t)n); }

typedef struct {
  int64_t pairs;                         /* tile pairs checked */
  int64_t wrong;                         /* EMPTY with a visible pair, FULL with a hidden one */
  int64_t cls[3];                        /* EMPTY, PARTIAL, FULL */
  int64_t truly_empty, truly_full;       /* by brute force (non-empty tiles) */
  int64_t found_empty, found_full;       /* of those, classified EMPTY / FULL */
} tally;

/* Every (query tile, key tile) of one row, tiles of tq and tk positions from 0
 * to past the end. */
static void check_row(const int32_t *doc, int64_t T, int64_t window, int64_t tq, int64_t tk,
                      tally *t) {
  for (int64_t q0 = 0; q0 < T + tq; q0 += tq) {
    qt_att_tile qt = qt_att_tile_make(doc, T, q0, q0 + tq);
    for (int64_t k0 = 0; k0 < T + tk; k0 += tk) {
      qt_att_tile kt = qt_att_tile_make(doc, T, k0, k0 + tk);
      int c = qt_att_tile_class(&qt, &kt, window);
      int64_t vis = 0, all = 0;
      for (int64_t i = qt.lo; i < qt.hi; i++)
        for (int64_t j = kt.lo; j < kt.hi; j++) {
          vis += qt_att_visible(i, j, doc[i], doc[j], window);
          all++;
        }
      t->pairs++;
      t->cls[c]++;
      if ((c == QT_ATT_TILE_EMPTY && vis != 0) || (c == QT_ATT_TILE_FULL && vis != all)) {
        if (t->wrong++ < 10)
          fprintf(stderr, "FAIL: T %lld window %lld q [%lld, %lld) k [%lld, %lld): class %d, "
                  "%lld of %lld pairs visible\n", (long long)T, (long long)window,
                  (long long)qt.lo, (long long)qt.hi, (long long)kt.lo, (long long)kt.hi, c,
                  (long long)vis, (long long)all);
      }
      if (all > 0 && vis == 0) {
        t->truly_empty++;
        t->found_empty += c == QT_ATT_TILE_EMPTY;
      }
      if (all > 0 && vis == all) {
        t->truly_full++;
        t->found_full += c == QT_ATT_TILE_FULL;
      }
    }
  }
}

/* The walks of the tensor-core kernels (autograd/kernels/attention_flash.h),
 * on the host, for tiles of `tile` positions: a query tile [i0, i0 + tile)
 * visits the key tiles from qt_fl_first_key_tile to its last query (forward,
 * dq), a key tile [j0, j0 + tile) the query tiles from j0 to the window's end
 * (dk, dv); an EMPTY tile pair is skipped and inside the others a pair counts
 * when qt_fl_pair says so. Every visible pair must be counted exactly once by
 * each walk, and no other. Returns the number of wrong pairs; *skipped counts
 * the tile pairs skipped. */
static int64_t check_walks(const int32_t *doc, int64_t T, int64_t window, int tile,
                           int64_t *skipped) {
  enum { TM = 300 };
  static unsigned char seen_q[TM][TM], seen_k[TM][TM];
  memset(seen_q, 0, sizeof seen_q);
  memset(seen_k, 0, sizeof seen_k);
  for (int64_t i0 = 0; i0 < T; i0 += tile) { /* forward / dq */
    const qt_att_tile qt = qt_att_tile_make(doc, T, i0, i0 + tile);
    const int64_t ilast = (i0 + tile < T ? i0 + tile : T) - 1;
    for (int64_t j0 = qt_fl_first_key_tile(i0, window, tile); j0 <= ilast; j0 += tile) {
      const qt_att_tile kt = qt_att_tile_make(doc, T, j0, j0 + tile);
      const int c = qt_att_tile_class(&qt, &kt, window);
      *skipped += c == QT_ATT_TILE_EMPTY;
      if (c == QT_ATT_TILE_EMPTY) continue;
      for (int64_t i = i0; i < i0 + tile; i++)
        for (int64_t j = j0; j < j0 + tile; j++)
          if (qt_fl_pair(doc, T, i, j, c, window)) seen_q[i][j]++;
    }
  }
  for (int64_t j0 = 0; j0 < T; j0 += tile) { /* dk / dv */
    const qt_att_tile kt = qt_att_tile_make(doc, T, j0, j0 + tile);
    const int64_t jlast = (j0 + tile < T ? j0 + tile : T) - 1;
    const int64_t iend = window > 0 && jlast + window < T ? jlast + window : T;
    for (int64_t i0 = j0; i0 < iend; i0 += tile) {
      const qt_att_tile qt = qt_att_tile_make(doc, T, i0, i0 + tile);
      const int c = qt_att_tile_class(&qt, &kt, window);
      *skipped += c == QT_ATT_TILE_EMPTY;
      if (c == QT_ATT_TILE_EMPTY) continue;
      for (int64_t i = i0; i < i0 + tile; i++)
        for (int64_t j = j0; j < j0 + tile; j++)
          if (qt_fl_pair(doc, T, i, j, c, window)) seen_k[i][j]++;
    }
  }
  int64_t bad = 0;
  for (int64_t i = 0; i < T; i++)
    for (int64_t j = 0; j < T; j++) {
      const int vis = qt_att_visible(i, j, doc[i], doc[j], window);
      bad += seen_q[i][j] != vis;
      bad += seen_k[i][j] != vis;
    }
  return bad;
}

/* Rows of T positions: contiguous documents (ids increasing, or a padding-like
 * repeated id), or arbitrary ids from a small set. */
static void fill_docs(int32_t *doc, int64_t T, int contiguous, uint64_t *s) {
  if (contiguous) {
    int64_t at = 0;
    int32_t id = (int32_t)rng_below(s, 5);
    while (at < T) {
      int64_t len = 1 + rng_below(s, rng_below(s, 4) == 0 ? 8 : 96);
      for (int64_t p = at; p < T && p < at + len; p++) doc[p] = id;
      at += len;
      id += 1 + (int32_t)rng_below(s, 3);
    }
  } else {
    int32_t ids = 1 + (int32_t)rng_below(s, 4);
    for (int64_t p = 0; p < T; p++) doc[p] = (int32_t)rng_below(s, ids) - 1;
  }
}

static int64_t walk_bad, walk_skipped;

static int run(tally *contig_nowin, tally *contig_win, tally *arbitrary) {
  uint64_t s = 20261203;
  enum { TMAX = 300 };
  int32_t doc[TMAX];
  for (int row = 0; row < 1500; row++) {
    int64_t T = 1 + rng_below(&s, TMAX);
    int contiguous = row % 4 != 3;
    fill_docs(doc, T, contiguous, &s);
    int64_t window = row % 3 == 0 ? 0 : 1 + rng_below(&s, row % 3 == 1 ? 16 : T + 8);
    static const int64_t sizes[] = {1, 2, 3, 7, 16, 31, 32, 64, 100};
    int64_t tq = sizes[rng_below(&s, 9)], tk = sizes[rng_below(&s, 9)];
    tally *t = !contiguous ? arbitrary : window ? contig_win : contig_nowin;
    check_row(doc, T, window, tq, tk, t);
    static const int tiles[] = {16, 32, 64};
    walk_bad += check_walks(doc, T, window, tiles[row % 3], &walk_skipped);
  }
  return 0;
}

static void print_tally(const char *what, const tally *t) {
  printf("%-26s %8lld tile pairs: EMPTY %lld PARTIAL %lld FULL %lld; recognised %lld of %lld "
         "empty, %lld of %lld full\n", what, (long long)t->pairs, (long long)t->cls[0],
         (long long)t->cls[1], (long long)t->cls[2], (long long)t->found_empty,
         (long long)t->truly_empty, (long long)t->found_full, (long long)t->truly_full);
}

int main(void) {
  tally a = {0}, b = {0}, c = {0};
  run(&a, &b, &c);
  print_tally("contiguous, no window", &a);
  print_tally("contiguous, window", &b);
  print_tally("arbitrary ids", &c);
  int fail = 0;
  int64_t wrong = a.wrong + b.wrong + c.wrong;
  if (wrong) {
    fprintf(stderr, "FAIL: %lld tile pairs misclassified\n", (long long)wrong);
    fail = 1;
  }
  printf("kernel walks: %lld EMPTY tile pairs skipped, %lld pairs wrong\n", (long long)walk_skipped,
         (long long)walk_bad);
  if (walk_bad || walk_skipped == 0) {
    fprintf(stderr, "FAIL: the kernels' tile walks count other pairs than qt_att_visible allows\n");
    fail = 1;
  }
  /* not trivially PARTIAL: for contiguous documents the bounds are tight
   * except where a tile straddles a document boundary or the diagonal */
  const tally *ts[2] = {&a, &b};
  for (int k = 0; k < 2; k++) {
    const tally *t = ts[k];
    if (t->cls[0] == 0 || t->cls[2] == 0 || t->found_empty * 10 < t->truly_empty * 8 ||
        t->found_full * 10 < t->truly_full * 5) {
      fprintf(stderr, "FAIL: contiguous rows (%s): too few EMPTY / FULL classifications\n",
              k ? "window" : "no window");
      fail = 1;
    }
  }
  /* the rule itself, a few fixed cases */
  {
    static const int32_t d[8] = {0, 0, 0, 1, 1, 1, 1, 2};
    qt_att_tile q = qt_att_tile_make(d, 8, 4, 6), k1 = qt_att_tile_make(d, 8, 0, 3),
                k2 = qt_att_tile_make(d, 8, 3, 4), k3 = qt_att_tile_make(d, 8, 6, 8),
                past = qt_att_tile_make(d, 8, 8, 12);
    if (qt_att_tile_class(&q, &k1, 0) != QT_ATT_TILE_EMPTY ||   /* other document */
        qt_att_tile_class(&q, &k2, 0) != QT_ATT_TILE_FULL ||    /* same, all causal */
        qt_att_tile_class(&q, &k2, 2) != QT_ATT_TILE_PARTIAL || /* 5 - 3 = 2 not < 2 */
        qt_att_tile_class(&q, &k2, 3) != QT_ATT_TILE_FULL ||
        qt_att_tile_class(&q, &k3, 0) != QT_ATT_TILE_EMPTY ||   /* keys after queries */
        qt_att_tile_class(&q, &past, 0) != QT_ATT_TILE_EMPTY || past.lo < past.hi) {
      fprintf(stderr, "FAIL: fixed tile cases\n");
      fail = 1;
    }
  }
  if (!fail) printf("attention tiles: EMPTY and FULL agree with qt_att_visible everywhere\n");
  return fail;
}
