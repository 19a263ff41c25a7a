/* Tests for common/half: exhaustive 16-bit round trips, an independent RNE
 * oracle, torch's conversions (tests/golden/half/f32_to_16.txt, made by
 * tools/reference/make_half_fixtures.py) and stochastic rounding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/half.h"

static uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* splitmix64 (Steele, Lea, Flood 2014): a test-local source of random words,
 * independent of common/philox. */
static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int f16_is_nan(uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu); }
static int bf16_is_nan(uint16_t h) { return (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu); }

/* IEEE binary16 decoded from its definition with ldexp (double, exact). */
static double f16_value(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 0x1F, m = h & 0x3FF;
  double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
  if (e == 0x1F) v = INFINITY;
  return s ? -v : v;
}

static double bf16_value(uint16_t h) {
  int s = h >> 15, e = (h >> 7) & 0xFF, m = h & 0x7F;
  double v = e == 0 ? ldexp(m, -133) : ldexp(128 + m, e - 134);
  if (e == 0xFF) v = INFINITY;
  return s ? -v : v;
}

static void test_bf16_exhaustive(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = qt_bf16_to_f32((uint16_t)h);
    uint16_t back = qt_bf16_from_f32(f);
    if (bf16_is_nan((uint16_t)h)) {
      assert_true(isnan(f));
      assert_int_equal(back, QT_HALF_CANONICAL_NAN);
      continue;
    }
    assert_true((double)f == bf16_value((uint16_t)h));
    assert_int_equal(back, h);
    /* An exactly representable value is never moved by stochastic rounding. */
    assert_int_equal(qt_bf16_from_f32_sr(f, 0xFFFFFFFFu), h);
  }
}

static void test_f16_exhaustive(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = qt_f16_to_f32((uint16_t)h);
    uint16_t back = qt_f16_from_f32(f);
    if (f16_is_nan((uint16_t)h)) {
      assert_true(isnan(f));
      assert_int_equal(bits(f), QT_F32_CANONICAL_NAN);
      assert_int_equal(back, QT_HALF_CANONICAL_NAN);
      continue;
    }
    assert_true((double)f == f16_value((uint16_t)h));
    assert_int_equal(back, h);
  }
}

/* Independent RNE oracle: the two representable neighbours of |x| (found by
 * binary search over the ordered positive bit patterns, decoded by the ldexp
 * definitions above), the nearer one wins, a tie goes to the even pattern.
 * Values at or above the midpoint past the largest finite value give inf. */
static uint16_t rne_oracle(float x, double (*value)(uint16_t), uint16_t max_finite) {
  double a = fabs((double)x);
  uint16_t sign = signbit(x) ? 0x8000 : 0;
  double top = value(max_finite);
  double next_top = top + (top - value((uint16_t)(max_finite - 1)));
  if (a >= (top + next_top) / 2) {
    if (a == (top + next_top) / 2 && !(max_finite & 1)) return sign | max_finite;
    return sign | (uint16_t)(max_finite + 1); /* the inf pattern follows max finite */
  }
  uint32_t lo = 0, hi = max_finite; /* largest pattern with value <= a */
  while (lo < hi) {
    uint32_t mid = (lo + hi + 1) / 2;
    if (value((uint16_t)mid) <= a) lo = mid; else hi = mid - 1;
  }
  if (value((uint16_t)lo) == a || lo == max_finite) return sign | (uint16_t)lo;
  double dlo = a - value((uint16_t)lo), dhi = value((uint16_t)(lo + 1)) - a;
  if (dlo < dhi || (dlo == dhi && !(lo & 1))) return sign | (uint16_t)lo;
  return sign | (uint16_t)(lo + 1);
}

static void check_against_oracle(float x) {
  if (isnan(x)) return;
  uint16_t want_bf = rne_oracle(x, bf16_value, 0x7F7F);
  uint16_t want_f16 = rne_oracle(x, f16_value, 0x7BFF);
  if (qt_bf16_from_f32(x) != want_bf || qt_f16_from_f32(x) != want_f16)
    fail_msg("x=%a (0x%08x): bf16 0x%04x want 0x%04x, fp16 0x%04x want 0x%04x", (double)x,
             bits(x), qt_bf16_from_f32(x), want_bf, qt_f16_from_f32(x), want_f16);
}

static void test_rne_ties(void **state) {
  (void)state;
  /* bf16: kept part k, dropped bits exactly 0x8000 (tie), 0x7FFF, 0x8001. */
  const uint16_t ks[] = {0x0000, 0x0001, 0x3F80, 0x3F81, 0x4049, 0x404A, 0x7F7E, 0x8001, 0xC2F6, 0xC2F7};
  for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
    uint32_t k = ks[i];
    assert_int_equal(qt_bf16_from_f32(from_bits(k << 16 | 0x8000u)), k + (k & 1));
    assert_int_equal(qt_bf16_from_f32(from_bits(k << 16 | 0x7FFFu)), k);
    assert_int_equal(qt_bf16_from_f32(from_bits(k << 16 | 0x8001u)), k + 1);
    check_against_oracle(from_bits(k << 16 | 0x8000u));
  }
  /* The bf16 tie just below inf rounds to even: 0x7F7F is odd, so inf. */
  assert_int_equal(qt_bf16_from_f32(from_bits(0x7F7F8000u)), 0x7F80);
  /* fp16 normals: 1 + j*2^-10 + 2^-11 is a tie between j and j+1. */
  for (int j = 0; j < 1023; j++) {
    float t = (float)(1.0 + j * 0x1p-10 + 0x1p-11);
    assert_int_equal(qt_f16_from_f32(t), 0x3C00 + j + (j & 1));
    assert_int_equal(qt_f16_from_f32(-t), 0x8000 | (0x3C00 + j + (j & 1)));
  }
  /* fp16 subnormal ties: (k + 1/2) * 2^-24. */
  for (int k = 0; k < 1024; k++) {
    float t = (float)((k + 0.5) * 0x1p-24);
    assert_int_equal(qt_f16_from_f32(t), k + (k & 1));
    check_against_oracle(t);
  }
  /* The fp16 overflow boundary: 65504 is the largest, 65520 ties to inf. */
  assert_int_equal(qt_f16_from_f32(65504.0f), 0x7BFF);
  assert_int_equal(qt_f16_from_f32(nextafterf(65520.0f, 0.0f)), 0x7BFF);
  assert_int_equal(qt_f16_from_f32(65520.0f), 0x7C00);
  assert_int_equal(qt_f16_from_f32(-65520.0f), 0xFC00);
  assert_int_equal(qt_f16_from_f32(0x1p-25f), 0x0000);
  assert_int_equal(qt_f16_from_f32(nextafterf(0x1p-25f, 1.0f)), 0x0001);
  assert_int_equal(qt_f16_from_f32(-0x1p-26f), 0x8000);
}

static void test_random_against_oracle(void **state) {
  (void)state;
  uint64_t s = 12345;
  for (int i = 0; i < 200000; i++) {
    uint64_t r = splitmix64(&s);
    check_against_oracle(from_bits((uint32_t)r));
    /* values in fp16's range, where its subnormal and normal paths live */
    float y = ldexpf((float)((r >> 32) & 0xFFFFFF) / 0x1p24f, (int)((r >> 56) % 48) - 30);
    check_against_oracle((r >> 31) & 1 ? -y : y);
  }
}

static void test_against_torch(void **state) {
  (void)state;
  const char *path = QLORA_TEST_DIR "/golden/half/f32_to_16.txt";
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("%s: cannot open (run tools/reference/make_half_fixtures.py)", path);
  char line[128];
  int rows = 0, nans = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    unsigned x, bf, hf;
    assert_int_equal(sscanf(line, "%x %x %x", &x, &bf, &hf), 3);
    float v = from_bits(x);
    if (isnan(v)) {
      /* torch writes 0x7FC0 or 0xFFFF (bf16) and keeps payloads (fp16); the
       * contract is NaN in, NaN out, ours canonical. */
      assert_true(bf16_is_nan((uint16_t)bf) && f16_is_nan((uint16_t)hf));
      assert_int_equal(qt_bf16_from_f32(v), QT_HALF_CANONICAL_NAN);
      assert_int_equal(qt_f16_from_f32(v), QT_HALF_CANONICAL_NAN);
      nans++;
    } else {
      if (qt_bf16_from_f32(v) != bf || qt_f16_from_f32(v) != hf)
        fail_msg("fp32 0x%08x: bf16 0x%04x torch 0x%04x; fp16 0x%04x torch 0x%04x", x,
                 qt_bf16_from_f32(v), bf, qt_f16_from_f32(v), hf);
      check_against_oracle(v);
    }
    rows++;
  }
  fclose(f);
  assert_true(rows > 3000);
  assert_true(nans >= 8);
}

static void test_stochastic_rounding(void **state) {
  (void)state;
  uint64_t s = 777;
  const uint32_t xs[] = {0x3F800001u, 0x3F804000u, 0x3F808000u, 0x3F80C000u, 0x3F80FFFFu,
                         0xBF812345u, 0x00012345u, 0x80008000u, 0x7F7FF000u, 0x4049ABCDu};
  for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
    float x = from_bits(xs[i]);
    uint16_t down = (uint16_t)(xs[i] >> 16), up = (uint16_t)(down + 1);
    uint32_t frac = xs[i] & 0xFFFFu;
    /* Exhaustive over the 2^16 values of the bits that decide: exactly `frac`
     * of them round up, so the mean over them is x exactly. */
    uint32_t ups = 0;
    double sum = 0;
    for (uint32_t r = 0; r < 65536; r++) {
      uint16_t h = qt_bf16_from_f32_sr(x, r | 0xABCD0000u);
      assert_true(h == down || h == up);
      ups += h == up;
      sum += bf16_value(h);
    }
    assert_int_equal(ups, frac);
    if (up != 0x7F80) assert_true(sum / 65536.0 == (double)x);
    /* Random draws: only the two neighbours, mean within 5 sigma of x. */
    const int n = 200000;
    int nup = 0;
    for (int k = 0; k < n; k++) {
      uint32_t r = (uint32_t)splitmix64(&s);
      uint16_t h = qt_bf16_from_f32_sr(x, r);
      assert_int_equal(h, qt_bf16_from_f32_sr(x, r & 0xFFFFu)); /* high bits ignored */
      assert_true(h == down || h == up);
      nup += h == up;
    }
    double p = frac / 65536.0;
    double sigma = sqrt(n * p * (1 - p));
    assert_true(fabs(nup - n * p) <= 5 * sigma + 1e-9);
  }
  assert_int_equal(qt_bf16_from_f32_sr(from_bits(0x7FC00001u), 0xFFFFu), QT_HALF_CANONICAL_NAN);
  assert_int_equal(qt_bf16_from_f32_sr(INFINITY, 0xFFFFu), 0x7F80);
  assert_int_equal(qt_bf16_from_f32_sr(-INFINITY, 0xFFFFu), 0xFF80);
}

static void test_bulk(void **state) {
  (void)state;
  enum { N = 1031 };
  float src[N], back[N];
  uint16_t b[N], h[N], sr[N];
  uint32_t rnd[N];
  uint64_t s = 99;
  for (int i = 0; i < N; i++) {
    uint64_t r = splitmix64(&s);
    src[i] = from_bits((uint32_t)r);
    rnd[i] = (uint32_t)(r >> 32);
  }
  qt_bf16_from_f32_n(b, src, N);
  qt_f16_from_f32_n(h, src, N);
  qt_bf16_from_f32_sr_n(sr, src, rnd, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(b[i], qt_bf16_from_f32(src[i]));
    assert_int_equal(h[i], qt_f16_from_f32(src[i]));
    assert_int_equal(sr[i], qt_bf16_from_f32_sr(src[i], rnd[i]));
  }
  qt_bf16_to_f32_n(back, b, N);
  for (int i = 0; i < N; i++) assert_int_equal(bits(back[i]), bits(qt_bf16_to_f32(b[i])));
  qt_f16_to_f32_n(back, h, N);
  for (int i = 0; i < N; i++) assert_int_equal(bits(back[i]), bits(qt_f16_to_f32(h[i])));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bf16_exhaustive),
      cmocka_unit_test(test_f16_exhaustive),
      cmocka_unit_test(test_rne_ties),
      cmocka_unit_test(test_random_against_oracle),
      cmocka_unit_test(test_against_torch),
      cmocka_unit_test(test_stochastic_rounding),
      cmocka_unit_test(test_bulk),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
