/* Tests for common/philox: Random123 known answers, cuRAND's seed / subsequence /
 * offset mapping onto counter and key, the word order of curand / curand4, the
 * uniform and normal transforms, the dropout keep masks and their threshold,
 * and the host+device header common/philox_hd.h compiled as plain C (the
 * per-element keep test the CUDA kernels use, against the masks). The stream
 * is compared with cuRAND itself in test_philox_curand_host.cu and
 * test_philox_hd_host.cu (header code on the host) and test_philox_cuda.cu
 * (on a GPU). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/philox.h"
#include "common/philox_hd.h"

/* Random123 known-answer vectors for philox4x32-10: counter words, key words,
 * expected output. Source: Random123's tests/kat_vectors, as reproduced in
 * DEShawResearch/Random123-Boost libs/random/test/test_philox.cpp
 * (test_kat_philox4x32, the three philox<4, uint32_t, 10> lines). */
static const struct {
  uint32_t ctr[4], key[2], out[4];
} kat[] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u}, {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

static void test_known_answers(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
    uint32_t out[4];
    qt_philox4x32_10(kat[i].ctr, kat[i].key, out);
    for (int j = 0; j < 4; j++) assert_int_equal(out[j], kat[i].out[j]);
  }
}

/* Word p of subsequence `sub` for `seed`, straight from the mapping documented
 * in philox.h: block counter (p / 4) + 2^64 * sub, key = seed, word p % 4. */
static uint32_t word_at(uint64_t seed, uint64_t sub, uint64_t p) {
  uint32_t ctr[4] = {(uint32_t)(p / 4), (uint32_t)((p / 4) >> 32), (uint32_t)sub,
                     (uint32_t)(sub >> 32)};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t out[4];
  qt_philox4x32_10(ctr, key, out);
  return out[p % 4];
}

static void test_init_mapping(void **state) {
  (void)state;
  const uint64_t seeds[] = {0, 1, 42, 0xFFFFFFFFull, 0x100000000ull, 0xDEADBEEFCAFEF00Dull, UINT64_MAX};
  const uint64_t subs[] = {0, 1, 7, 0xFFFFFFFFull, 0x123456789ABCull, UINT64_MAX};
  const uint64_t offs[] = {0, 1, 2, 3, 4, 5, 1023, 0xFFFFFFFFull, 0x400000003ull, UINT64_MAX - 3, UINT64_MAX};
  for (size_t a = 0; a < sizeof seeds / sizeof seeds[0]; a++)
    for (size_t b = 0; b < sizeof subs / sizeof subs[0]; b++)
      for (size_t c = 0; c < sizeof offs / sizeof offs[0]; c++) {
        qt_philox s;
        qt_philox_init(&s, seeds[a], subs[b], offs[c]);
        for (uint64_t k = 0; k < 9; k++) {
          uint64_t p = offs[c] + k;
          if (p < offs[c]) break; /* past 2^64 words the counter's third word moves */
          assert_int_equal(qt_philox_next_u32(&s), word_at(seeds[a], subs[b], p));
        }
      }
}

static void test_skipahead(void **state) {
  (void)state;
  /* An offset in curand_init is the same as drawing that many words. */
  qt_philox seq;
  qt_philox_init(&seq, 1234, 5, 0);
  for (uint64_t k = 0; k < 40; k++) {
    qt_philox s;
    qt_philox_init(&s, 1234, 5, k);
    qt_philox copy = seq;
    for (int j = 0; j < 6; j++) assert_int_equal(qt_philox_next_u32(&s), qt_philox_next_u32(&copy));
    (void)qt_philox_next_u32(&seq);
  }
  /* skipahead composes from any position within a block. */
  for (uint64_t a = 0; a < 8; a++)
    for (uint64_t b = 0; b < 8; b++) {
      qt_philox s, t;
      qt_philox_init(&s, 99, 3, a);
      qt_philox_skipahead(&s, b + 0x10000000000ull);
      qt_philox_init(&t, 99, 3, a + b + 0x10000000000ull);
      for (int j = 0; j < 6; j++) assert_int_equal(qt_philox_next_u32(&s), qt_philox_next_u32(&t));
    }
  /* skipahead_sequence adds to the high 64 counter bits, with carry from ctr[2]. */
  qt_philox s;
  qt_philox_init(&s, 7, 0xFFFFFFFFull, 10);
  qt_philox_skipahead_sequence(&s, 1);
  assert_int_equal(s.ctr[2], 0);
  assert_int_equal(s.ctr[3], 1);
  assert_int_equal(qt_philox_next_u32(&s), word_at(7, 0x100000000ull, 10));
  /* Low-half carry: ctr[0..1] = 2^64 - 1, one more block carries into ctr[2]. */
  qt_philox_init(&s, 7, 2, 0);
  s.ctr[0] = s.ctr[1] = 0xFFFFFFFFu;
  qt_philox_skipahead(&s, 4);
  assert_int_equal(s.ctr[0], 0);
  assert_int_equal(s.ctr[1], 0);
  assert_int_equal(s.ctr[2], 3);
  assert_int_equal(qt_philox_next_u32(&s), word_at(7, 3, 0));
}

static void test_next4_order(void **state) {
  (void)state;
  for (uint64_t off = 0; off < 8; off++) {
    qt_philox a, b;
    qt_philox_init(&a, 555, 9, off);
    qt_philox_init(&b, 555, 9, off);
    for (int rep = 0; rep < 3; rep++) {
      uint32_t w[4];
      qt_philox_next_u32x4(&a, w);
      for (int j = 0; j < 4; j++) assert_int_equal(w[j], qt_philox_next_u32(&b));
    }
    assert_int_equal(qt_philox_next_u32(&a), qt_philox_next_u32(&b));
  }
  uint32_t buf[37];
  qt_philox a, b;
  qt_philox_init(&a, 1, 2, 3);
  qt_philox_init(&b, 1, 2, 3);
  qt_philox_fill_u32(&a, buf, 37);
  for (int i = 0; i < 37; i++) assert_int_equal(buf[i], qt_philox_next_u32(&b));
}

static void test_uniform(void **state) {
  (void)state;
  assert_true(qt_philox_uniform_from_u32(0) == 0x1p-33f);
  assert_true(qt_philox_uniform_from_u32(1) == 0x1.8p-32f);
  assert_true(qt_philox_uniform_from_u32(UINT32_MAX) == 1.0f);
  /* 2^31 + 1 is not a float: (float) rounds it to 2^31 first, then + 2^-33. */
  assert_true(qt_philox_uniform_from_u32(0x80000001u) == 0.5f);
  qt_philox a, b;
  qt_philox_init(&a, 2024, 1, 0);
  qt_philox_init(&b, 2024, 1, 0);
  enum { N = 200000 };
  static float u[N];
  qt_philox_fill_uniform(&a, u, N);
  double sum = 0, sum2 = 0;
  for (int i = 0; i < N; i++) {
    assert_true(u[i] > 0.0f && u[i] <= 1.0f);
    assert_true(u[i] == qt_philox_uniform_from_u32(qt_philox_next_u32(&b)));
    sum += u[i];
    sum2 += (double)u[i] * u[i];
  }
  double mean = sum / N, var = sum2 / N - mean * mean;
  assert_true(fabs(mean - 0.5) < 5 * sqrt(1.0 / 12 / N));
  assert_true(fabs(var - 1.0 / 12) < 0.002);
}

static void test_normal(void **state) {
  (void)state;
  qt_philox s, w;
  qt_philox_init(&s, 31337, 4, 6);
  qt_philox_init(&w, 31337, 4, 6);
  /* Each pair of normals consumes exactly two words: x for the radius, y for
   * the angle, sin first, cos kept. */
  for (int i = 0; i < 50; i++) {
    uint32_t x = qt_philox_next_u32(&w), y = qt_philox_next_u32(&w);
    double r = sqrt(-2.0 * log((double)qt_philox_uniform_from_u32(x)));
    double t = ((double)y + 0.5) * 0x1p-32 * 6.2831855f;
    float n0 = qt_philox_next_normal(&s), n1 = qt_philox_next_normal(&s);
    assert_true(fabs(n0 - r * sin(t)) < 1e-5);
    assert_true(fabs(n1 - r * cos(t)) < 1e-5);
  }
  enum { N = 200000 };
  double sum = 0, sum2 = 0, sum4 = 0;
  for (int i = 0; i < N; i++) {
    double z = qt_philox_next_normal(&s);
    assert_true(isfinite(z));
    sum += z;
    sum2 += z * z;
    sum4 += z * z * z * z;
  }
  double mean = sum / N, var = sum2 / N - mean * mean;
  assert_true(fabs(mean) < 5 / sqrt(N));
  assert_true(fabs(var - 1) < 5 * sqrt(2.0 / N));
  assert_true(fabs(sum4 / N - 3) < 0.1); /* kurtosis of a normal */
}

/* qt_philox_keep_mask equals drawing one uniform at a time, for thresholds on
 * both sides of the map's steps (p equal to a uniform value: equal is dropped),
 * below the smallest uniform (keep all), lengths around the 64-word groups and
 * the threaded chunks, and counters with high subsequence and seed bits; in the
 * version QT_PHILOX_MASK selects (NULL: the CPU's widest). Returns the kept
 * fraction of the 2^20-word masks at p = 0.05. */
static double check_keep_mask(const char *version) {
  if (version) setenv("QT_PHILOX_MASK", version, 1);
  const float ps[] = {0.0f, 0.05f, 0.1f, 0.5f, 0.9999f, 1e-12f,
                      qt_philox_uniform_from_u32(0x0CCCCCCDu), /* exactly a uniform */
                      qt_philox_uniform_from_u32(0x80000001u), /* 0.5: a step of the map */
                      nextafterf(qt_philox_uniform_from_u32(0x40000000u), 0.0f)};
  const int64_t ns[] = {0, 1, 3, 63, 64, 65, 1000, 4096 + 7, 5 * 4096 * 4 + 13, 1 << 20};
  const uint64_t seeds[] = {0, 2024, 0xFEDCBA9876543210ull};
  const uint64_t subs[] = {0, 7, 0x123456789ABCull};
  enum { NMAX = 1 << 20 };
  static uint8_t fast[NMAX + 1], slow[NMAX];
  long kept = 0, total = 0;
  for (size_t a = 0; a < sizeof ps / sizeof ps[0]; a++)
    for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
      for (size_t c = 0; c < sizeof seeds / sizeof seeds[0]; c++) {
        uint64_t sub = subs[(a + b + c) % 3];
        int64_t n = ns[b];
        memset(fast, 0xAA, sizeof fast);
        qt_philox_keep_mask(fast, n, ps[a], seeds[c], sub);
        qt_philox s;
        qt_philox_init(&s, seeds[c], sub, 0);
        for (int64_t i = 0; i < n; i++) slow[i] = qt_philox_next_uniform(&s) > ps[a];
        assert_memory_equal(fast, slow, (size_t)n);
        assert_int_equal(fast[n], 0xAA); /* nothing written past n */
        if (ps[a] == 0.05f && n == NMAX) {
          for (int64_t i = 0; i < n; i++) kept += fast[i];
          total += n;
        }
      }
  /* words exactly at the threshold: p = uniform(w) for a word w that is the
   * last of its float's words, so w itself is the largest dropped word */
  qt_philox s;
  qt_philox_init(&s, 2024, 7, 0);
  int at = 0;
  for (int64_t i = 0; i < 1 << 16 && at < 16; i++) {
    uint32_t w = qt_philox_next_u32(&s);
    if (w == UINT32_MAX || qt_philox_uniform_from_u32(w) == qt_philox_uniform_from_u32(w + 1))
      continue;
    float p = qt_philox_uniform_from_u32(w);
    qt_philox_keep_mask(fast, i + 1, p, 2024, 7);
    qt_philox r;
    qt_philox_init(&r, 2024, 7, 0);
    for (int64_t j = 0; j <= i; j++) slow[j] = qt_philox_next_uniform(&r) > p;
    assert_int_equal(slow[i], 0);
    assert_memory_equal(fast, slow, (size_t)(i + 1));
    at++;
  }
  assert_int_equal(at, 16);
  unsetenv("QT_PHILOX_MASK");
  return (double)kept / (double)total;
}

static void test_keep_mask(void **state) {
  (void)state;
  const char *versions[] = {NULL, "avx2", "scalar"};
  for (size_t v = 0; v < 3; v++) {
    double rate = check_keep_mask(versions[v]);
    assert_true(fabs(rate - 0.95) < 5 * sqrt(0.05 * 0.95 / (3.0 * (1 << 20))));
  }
}

/* qt_philox_keep_threshold: the largest word whose uniform is <= p, found
 * here by its defining property (uniform(T) <= p < uniform(T + 1)), and its
 * ends: -1 below the smallest uniform, UINT32_MAX at 1. */
static void test_keep_threshold(void **state) {
  (void)state;
  assert_true(qt_philox_keep_threshold(0.0f) == -1);
  assert_true(qt_philox_keep_threshold(1e-12f) == -1); /* < 2^-33 */
  assert_true(qt_philox_keep_threshold(NAN) == -1);
  assert_true(qt_philox_keep_threshold(0x1p-33f) == 0);
  assert_true(qt_philox_keep_threshold(1.0f) == (int64_t)UINT32_MAX);
  assert_true(qt_philox_keep_threshold(2.0f) == (int64_t)UINT32_MAX);
  const float ps[] = {0.05f, 0.1f, 0.25f, 0.3f, 0.5f, 0.9999f, 1e-9f, 0x1p-32f,
                      nextafterf(1.0f, 0.0f), qt_philox_uniform_from_u32(0x0CCCCCCDu)};
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
    int64_t T = qt_philox_keep_threshold(ps[i]);
    assert_true(T >= 0 && T < (int64_t)UINT32_MAX);
    assert_true(qt_philox_uniform_from_u32((uint32_t)T) <= ps[i]);
    assert_true(qt_philox_uniform_from_u32((uint32_t)T + 1) > ps[i]);
  }
}

/* philox_hd.h in C: the bijection against the known answers, the block
 * layout against the scalar stream, and qt_dropout_keep_hd / keep4 against
 * qt_philox_keep_mask's bytes (keys, subsequences, thresholds, lengths that
 * are not multiples of 4), and at indices past 2^32 against the stream drawn
 * from there with curand_init's offset (no mask that long needed). */
static void test_philox_hd(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
    uint32_t out[4];
    qt_philox4x32_10_hd(kat[i].ctr, kat[i].key, out);
    for (int j = 0; j < 4; j++) assert_int_equal(out[j], kat[i].out[j]);
  }
  const uint64_t keys[] = {0, 2024, 0xFEDCBA9876543210ull, UINT64_MAX};
  const uint64_t subs[] = {0, 7, 0x123456789ABCull, UINT64_MAX};
  for (size_t a = 0; a < 4; a++)
    for (size_t b = 0; b < 4; b++) {
      uint32_t w[4];
      qt_philox_block_hd(5, keys[a], subs[b], w);
      for (int j = 0; j < 4; j++) assert_int_equal(w[j], word_at(keys[a], subs[b], 20 + j));
    }
  const float ps[] = {0.0f, 0.05f, 0.1f, 0.5f, 0.9999f, 1e-12f, 1.0f,
                      qt_philox_uniform_from_u32(0x80000001u)};
  const int64_t ns[] = {1, 3, 5, 63, 65, 1001, 4096 + 7};
  enum { NMAX = 4096 + 7 };
  static uint8_t mask[NMAX];
  for (size_t a = 0; a < sizeof ps / sizeof ps[0]; a++)
    for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++) {
      uint64_t key = keys[(a + b) % 4], sub = subs[(a + 2 * b) % 4];
      int64_t n = ns[b], T = qt_philox_keep_threshold(ps[a]);
      qt_philox_keep_mask(mask, n, ps[a], key, sub);
      for (int64_t i = 0; i < n; i++) {
        assert_int_equal(qt_dropout_keep_hd((uint64_t)i, key, sub, T), mask[i]);
        unsigned k4 = qt_dropout_keep4_hd((uint64_t)i / 4, key, sub, T);
        assert_int_equal((k4 >> (i % 4)) & 1u, mask[i]);
      }
    }
  /* large element indices: offset e of curand_init is word e of the stream */
  const uint64_t big[] = {0xFFFFFFFFull, 0x100000000ull, 0x100000003ull, 0x2345678901ull,
                          (1ull << 62) + 5};
  for (size_t a = 0; a < sizeof big / sizeof big[0]; a++)
    for (size_t c = 0; c < 4; c++) {
      const float p = c % 2 ? 0.5f : 0.05f;
      int64_t T = qt_philox_keep_threshold(p);
      qt_philox s;
      qt_philox_init(&s, keys[c], subs[c], big[a]);
      for (uint64_t k = 0; k < 9; k++)
        assert_int_equal(qt_dropout_keep_hd(big[a] + k, keys[c], subs[c], T),
                         qt_philox_next_uniform(&s) > p);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known_answers),
      cmocka_unit_test(test_init_mapping),
      cmocka_unit_test(test_skipahead),
      cmocka_unit_test(test_next4_order),
      cmocka_unit_test(test_uniform),
      cmocka_unit_test(test_normal),
      cmocka_unit_test(test_keep_mask),
      cmocka_unit_test(test_keep_threshold),
      cmocka_unit_test(test_philox_hd),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
