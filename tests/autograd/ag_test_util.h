/* tests/autograd/ag_test_util.h — helpers shared by the autograd tests:
 * a seeded RNG and norm-wise comparisons (static: each test is one TU). */
#ifndef QT_TESTS_AG_TEST_UTIL_H
#define QT_TESTS_AG_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

/* splitmix64 (Steele, Lea, Flood 2014): small, seeded, platform-independent. */
typedef struct { uint64_t s; } ag_rng;
static inline uint64_t ag_next(ag_rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
/* uniform in [lo, hi) */
static inline double ag_unif(ag_rng *r, double lo, double hi) {
  return lo + (hi - lo) * (double)(ag_next(r) >> 11) * (1.0 / 9007199254740992.0);
}
static inline void ag_fill(ag_rng *r, double *x, int64_t n, double lo, double hi) {
  for (int64_t i = 0; i < n; i++) x[i] = ag_unif(r, lo, hi);
}

/* ||a - b|| / max(||a||, ||b||); 0 when both are exactly zero. */
static inline double ag_rel_err(const double *a, const double *b, int64_t n) {
  double d = 0, na = 0, nb = 0;
  for (int64_t i = 0; i < n; i++) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  double den = sqrt(na > nb ? na : nb);
  return den == 0 ? sqrt(d) : sqrt(d) / den;
}
static inline double ag_norm(const double *a, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += a[i] * a[i];
  return sqrt(s);
}
static inline int ag_all_finite(const double *a, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(a[i])) return 0;
  return 1;
}

#endif
