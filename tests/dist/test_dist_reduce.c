/* tests/dist/test_dist_reduce.c — the host collectives of dist/dist.h, run as
 * 3 ranks under mpirun (more than 2, where MPI_Allreduce's order of additions
 * is up to the library). Every rank can regenerate every rank's inputs, so
 * each computes the expected result itself: the rank-order sum in double,
 * rounded once to float. The reduction must give exactly those bits on every
 * rank, for sizes smaller than, equal to and not divisible by the world size.
 * The inputs span 2^-24..2^24 with both signs, so another order of additions
 * (or a float accumulator) changes the last bits of many elements: the test
 * checks that too, so it can tell a wrong order from the right one. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"

static uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* Rank r's element i of a buffer of n. */
static float input(int r, int64_t n, int64_t i) {
  uint64_t h = splitmix(((uint64_t)r << 48) ^ ((uint64_t)n << 24) ^ (uint64_t)i);
  float m = 1.0f + (float)(h & 0xffffff) / 16777216.0f;
  int e = (int)((h >> 24) % 49) - 24;
  return ((h >> 40) & 1 ? -1.0f : 1.0f) * ldexpf(m, e);
}

static int fails = 0;
#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "rank %d: FAIL %s:%d: ", qt_dist_world()->rank, __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                           \
      fputc('\n', stderr);                                                    \
      fails++;                                                                \
    }                                                                         \
  } while (0)

int main(int argc, char **argv) {
  if (qt_dist_init(&argc, &argv) != QT_OK) {
    fprintf(stderr, "FAIL: qt_dist_init: %s\n", qt_error_message());
    return 1;
  }
  const qt_dist *d = qt_dist_world();
  if (d->world_size < 3) {
    fprintf(stderr, "FAIL: run me with mpirun -np 3 (world size %d)\n", d->world_size);
    qt_dist_finalize();
    return 1;
  }
  int W = d->world_size, me = d->rank;
  static const int64_t sizes[] = {1, 2, 3, 7, 1001, 100003};
  int64_t order_sensitive = 0;
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    int64_t n = sizes[k];
    float *buf = malloc((size_t)n * sizeof *buf);
    qt_dist_reducer red;
    CHECK(buf && qt_dist_reducer_init(&red, n) == QT_OK, "init n=%lld", (long long)n);
    for (int64_t i = 0; i < n; i++) buf[i] = input(me, n, i);
    CHECK(qt_dist_reducer_sum(&red, buf) == QT_OK, "sum n=%lld: %s", (long long)n, qt_error_message());
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
      double s = 0;
      float f = 0, rev = 0;
      for (int r = 0; r < W; r++) {
        s += (double)input(r, n, i);
        f += input(r, n, i);
        rev += input(W - 1 - r, n, i);
      }
      float want = (float)s;
      if (memcmp(&want, &buf[i], sizeof want) != 0) bad++;
      if (f != want || rev != want) order_sensitive++;
    }
    CHECK(bad == 0, "n=%lld: %lld elements differ from the rank-order double sum", (long long)n, (long long)bad);
    qt_dist_reducer_free(&red);
    free(buf);
  }
  /* the inputs are such that float accumulation or another order changes bits */
  CHECK(order_sensitive > 1000, "only %lld elements depend on the order: the test could not see a wrong one",
        (long long)order_sensitive);

  /* small double sums: rank order, same bits everywhere */
  double v[3] = {input(me, 1, 0), input(me, 2, 0) * 1e-9, (double)me};
  CHECK(qt_dist_sum_f64(v, 3) == QT_OK, "sum_f64");
  double w0 = 0, w1 = 0;
  for (int r = 0; r < W; r++) {
    w0 += (double)input(r, 1, 0);
    w1 += (double)input(r, 2, 0) * 1e-9;
  }
  CHECK(v[0] == w0 && v[1] == w1 && v[2] == W * (W - 1) / 2.0, "sum_f64: %.17g %.17g %g", v[0], v[1], v[2]);
  int64_t iv[2] = {me + 1, 1000 * me};
  CHECK(qt_dist_sum_i64(iv, 2) == QT_OK && iv[0] == (int64_t)W * (W + 1) / 2 && iv[1] == 1000LL * W * (W - 1) / 2,
        "sum_i64");
  int64_t mx = 7 * me;
  CHECK(qt_dist_max_i64(&mx, 1) == QT_OK && mx == 7LL * (W - 1), "max_i64");
  int64_t b = me == 1 ? 42 : -1;
  CHECK(qt_dist_bcast(&b, sizeof b, 1) == QT_OK && b == 42, "bcast from rank 1");
  int64_t all[3 * 64];
  int64_t mine[2] = {me, -me};
  CHECK(qt_dist_gather_i64(mine, 2, all, 0) == QT_OK, "gather");
  if (me == 0)
    for (int r = 0; r < W; r++) CHECK(all[2 * r] == r && all[2 * r + 1] == -r, "gather: rank %d's entry", r);

  int64_t f = fails;
  qt_dist_sum_i64(&f, 1);
  if (me == 0) printf("%s: %d ranks, %lld failed checks in all\n", f ? "FAIL" : "PASS", W, (long long)f);
  qt_dist_finalize();
  return f ? 1 : 0;
}
