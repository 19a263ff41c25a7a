/* tests/quant/test_quant_cpu.c — quant/ properties on fresh random inputs:
 * the OpenMP fast path equals the scalar reference bit for bit (odd sizes,
 * every blocksize, NaN/inf/zero blocks), the tie rules of the encoders, the
 * error figures of bitsandbytes' own test (reliability-anchors.md R13), bits
 * per parameter, and the checkpoint reader's error paths. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/half.h"
#include "quant/quant.h"
#include "quant_test_util.h"

/* Random values with the hazards mixed in: zeros, NaN, +-inf, denormals,
 * all-zero blocks, huge and tiny scales. */
static void fill_hazards(qtu_rng *r, float *x, int64_t n, int with_nonfinite) {
  float scale = (float)exp(qtu_rng_normal(r) * 3.0);
  for (int64_t i = 0; i < n; i++) {
    double u = qtu_rng_uniform(r);
    if (u < 0.01) x[i] = 0.0f;
    else if (u < 0.015) x[i] = -0.0f;
    else if (u < 0.02) x[i] = 1e-42f;
    else if (with_nonfinite && u < 0.022) x[i] = NAN;
    else if (with_nonfinite && u < 0.023) x[i] = u < 0.0225 ? INFINITY : -INFINITY;
    else x[i] = (float)qtu_rng_normal(r) * scale;
  }
  if (n > 300) memset(x + 128, 0, 100 * sizeof(float)); /* an all-zero block for bs <= 64 */
}

static void test_encoders_tie_rules(void **state) {
  (void)state;
  /* dQuantizeNF4 is "nearest code": two ulps beside each fp32 midpoint of
   * adjacent table values the code is decided. (At the midpoint itself the
   * kernel literals decide: 4 of the 15 literals, c = 0, 8, 12, 14, are one ulp
   * away from f32((t[c] + t[c+1]) / 2), against formats.md 1.1's claim.) */
  const float *nf4 = qt_quant_4bit_table(QT_QUANT_NF4);
  int off_by_ulp = 0;
  for (int c = 0; c < 15; c++) {
    float mid = (nf4[c] + nf4[c + 1]) / 2.0f;
    float above = nextafterf(nextafterf(mid, 2.0f), 2.0f);
    float below = nextafterf(nextafterf(mid, -2.0f), -2.0f);
    assert_int_equal(qt_quant_4bit_encode_ref(QT_QUANT_NF4, above), c + 1);
    assert_int_equal(qt_quant_4bit_encode_ref(QT_QUANT_NF4, below), c);
    off_by_ulp += qt_quant_4bit_encode_ref(QT_QUANT_NF4, mid) != c;
    assert_int_equal(qt_quant_4bit_encode_ref(QT_QUANT_NF4, nf4[c]), c);
  }
  printf("NF4 midpoints that encode upward (kernel literal one ulp below): %d of 15\n", off_by_ulp);
  assert_int_equal(qt_quant_4bit_encode_ref(QT_QUANT_NF4, NAN), 0);
  assert_int_equal(qt_quant_4bit_encode_ref(QT_QUANT_FP4, NAN), 0);
  assert_int_equal(qt_quant_4bit_encode_ref(QT_QUANT_FP4, -1e-9f), 8);
  /* FP4: every table value encodes to its own code (or the same value). */
  const float *fp4 = qt_quant_4bit_table(QT_QUANT_FP4);
  for (int c = 0; c < 16; c++)
    assert_true(fp4[qt_quant_4bit_encode_ref(QT_QUANT_FP4, fp4[c])] == fp4[c]);
  /* 8-bit: every map value encodes to itself; midpoints follow the kernel's
   * rule (x > mid -> upper on the way up). */
  float map[256];
  for (int s = 0; s < 2; s++) {
    qt_quant_dynamic_map(s == 0, map);
    for (int i = 0; i < 256; i++) {
      if (s == 1 && i == 0) continue;
      assert_int_equal(qt_quant_8bit_encode_ref(map, map[i]), i);
    }
    for (int i = 1; i < 255; i++) {
      float up = nextafterf((map[i] + map[i + 1]) * 0.5f, 2.0f);
      assert_int_equal(qt_quant_8bit_encode_ref(map, up), i + 1);
    }
  }
  qt_quant_dynamic_map(true, map);
  assert_int_equal(qt_quant_8bit_encode_ref(map, NAN), 0);
  assert_int_equal(qt_quant_8bit_encode_ref(map, -1.0f), 0);
  assert_int_equal(qt_quant_8bit_encode_ref(map, 1.0f), 255);
  assert_true(map[127] == 0.0f && map[255] == 1.0f);
}

static void test_bf16_matches_common_half(void **state) {
  (void)state;
  qtu_rng r;
  qtu_rng_seed(&r, 5);
  for (int i = 0; i < 200000; i++) {
    uint32_t u = (uint32_t)qtu_rng_u64(&r);
    float f;
    memcpy(&f, &u, 4);
    assert_int_equal(qt_quant_f32_to_bf16(f), qt_bf16_from_f32(f));
  }
}

static void test_fast_equals_ref_4bit(void **state) {
  (void)state;
  qtu_rng r;
  qtu_rng_seed(&r, 1234);
  const int64_t sizes[] = {1, 2, 3, 31, 63, 64, 65, 127, 129, 1000, 4097, 12345, 70001};
  for (int bs = 32; bs <= 4096; bs *= 2) {
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
      int64_t n = sizes[si], nb = qt_quant_nblocks(n, bs);
      size_t pk = (size_t)((n + 1) / 2);
      float *x = malloc(4 * (size_t)n);
      uint16_t *xb = malloc(2 * (size_t)n);
      fill_hazards(&r, x, n, 1);
      for (int t = 0; t < 2; t++) {
        uint8_t *p1 = malloc(pk), *p2 = malloc(pk);
        float *a1 = malloc(4 * (size_t)nb), *a2 = malloc(4 * (size_t)nb);
        qt_quant_4bit_quantize_ref((qt_quant_type)t, x, n, bs, p1, a1);
        qt_quant_4bit_quantize((qt_quant_type)t, x, n, bs, p2, a2, 2);
        assert_memory_equal(p1, p2, pk);
        assert_memory_equal(a1, a2, 4 * (size_t)nb);
        /* bf16 input == reference on the widened values */
        float *xw = malloc(4 * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
          xb[i] = qt_bf16_from_f32(x[i]);
          xw[i] = qtu_bf16_to_f32(xb[i]);
        }
        qt_quant_4bit_quantize_ref((qt_quant_type)t, xw, n, bs, p1, a1);
        qt_quant_4bit_quantize_bf16((qt_quant_type)t, xb, n, bs, p2, a2, 2);
        assert_memory_equal(p1, p2, pk);
        assert_memory_equal(a1, a2, 4 * (size_t)nb);
        /* dequantize fp32 and bf16 */
        float *d1 = malloc(4 * (size_t)n), *d2 = malloc(4 * (size_t)n);
        uint16_t *b1 = malloc(2 * (size_t)n), *b2 = malloc(2 * (size_t)n);
        qt_quant_4bit_dequantize_ref((qt_quant_type)t, p1, a1, n, bs, d1);
        qt_quant_4bit_dequantize((qt_quant_type)t, p1, a1, n, bs, d2, 2);
        assert_memory_equal(d1, d2, 4 * (size_t)n);
        qt_quant_4bit_dequantize_bf16_ref((qt_quant_type)t, p1, a1, n, bs, b1);
        qt_quant_4bit_dequantize_bf16((qt_quant_type)t, p1, a1, n, bs, b2, 2);
        assert_memory_equal(b1, b2, 2 * (size_t)n);
        for (int64_t i = 0; i < n; i++) assert_int_equal(b1[i], qt_bf16_from_f32(d1[i]));
        /* odd n: the pad nibble is the code of 0.0 * (1/absmax) */
        if (n & 1) {
          float inv = 1.0f / a1[nb - 1];
          assert_int_equal(p1[pk - 1] & 15, qt_quant_4bit_encode_ref((qt_quant_type)t, 0.0f * inv));
        }
        free(p1); free(p2); free(a1); free(a2); free(xw); free(d1); free(d2); free(b1); free(b2);
      }
      free(x);
      free(xb);
    }
  }
}

static void test_fast_equals_ref_8bit(void **state) {
  (void)state;
  qtu_rng r;
  qtu_rng_seed(&r, 99);
  const int64_t bss[] = {1, 7, 64, 256, 2048, 4096};
  const int64_t sizes[] = {1, 5, 255, 256, 257, 5000};
  float map[256];
  for (int s = 0; s < 2; s++) {
    qt_quant_dynamic_map(s == 0, map);
    for (size_t bi = 0; bi < 6; bi++)
      for (size_t si = 0; si < 6; si++) {
        int64_t n = sizes[si], bs = bss[bi], nb = (n + bs - 1) / bs;
        float *x = malloc(4 * (size_t)n);
        fill_hazards(&r, x, n, 1);
        if (s == 1)
          for (int64_t i = 0; i < n; i++) x[i] = fabsf(x[i]);
        uint8_t *q1 = malloc((size_t)n), *q2 = malloc((size_t)n);
        float *a1 = malloc(4 * (size_t)nb), *a2 = malloc(4 * (size_t)nb);
        qt_quant_8bit_quantize_ref(map, x, n, bs, q1, a1);
        qt_quant_8bit_quantize(map, x, n, bs, q2, a2, 2);
        assert_memory_equal(q1, q2, (size_t)n);
        assert_memory_equal(a1, a2, 4 * (size_t)nb);
        float *d1 = malloc(4 * (size_t)n), *d2 = malloc(4 * (size_t)n);
        qt_quant_8bit_dequantize_ref(map, q1, a1, n, bs, d1);
        qt_quant_8bit_dequantize(map, q1, a1, n, bs, d2, 2);
        assert_memory_equal(d1, d2, 4 * (size_t)n);
        /* Finite inputs in a block with a finite absmax come back within half
         * a code step (relative to absmax): the largest step of the map is
         * below 0.015 (the 0.1..1 decade, 2**6 or 2**7 means over 0.9). */
        for (int64_t i = 0; i < n; i++) {
          float am = a1[i / bs];
          if (!isfinite(x[i]) || !isfinite(am) || am == 0.0f) continue;
          assert_true(fabsf(d1[i] - x[i]) <= 0.0075f * am + 1e-30f);
        }
        free(x); free(q1); free(q2); free(a1); free(a2); free(d1); free(d2);
      }
  }
}

/* bitsandbytes tests/test_functional.py::test_4bit_quant on randn(1024, 1024):
 * err = mean |A - deq|, relerr = mean(|A - deq| / (|A| + 1e-8)); bounds from
 * reliability-anchors.md R13 (+1e-3). */
static void error_figures(qt_quant_type t, int bs, bool dq, double *err, double *rel) {
  const int64_t n = 1024 * 1024;
  float *x = malloc(4 * (size_t)n), *d = malloc(4 * (size_t)n);
  qtu_rng r;
  qtu_rng_seed(&r, 42);
  for (int64_t i = 0; i < n; i++) x[i] = (float)qtu_rng_normal(&r);
  qt_quant_weight w;
  int64_t shape[2] = {1024, 1024};
  assert_int_equal(qt_quant_weight_quantize(t, bs, dq, QT_F32, 2, shape, x, 2, &w), QT_OK);
  assert_int_equal(qt_quant_weight_dequantize_f32(&w, d, 2), QT_OK);
  double se = 0, sr = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)x[i] - (double)d[i]);
    se += e;
    sr += e / (fabs((double)x[i]) + 1e-8);
  }
  *err = se / (double)n;
  *rel = sr / (double)n;
  qt_quant_weight_free(&w);
  free(x);
  free(d);
}

static void test_error_bounds_r13(void **state) {
  (void)state;
  const struct { int bs; double err, rel; } nf4[] = {{64, 0.0728, 0.2033}, {128, 0.0768, 0.2153},
                                                     {4096, 0.0925, 0.2625}};
  for (int i = 0; i < 3; i++)
    for (int dq = 0; dq < 2; dq++) {
      double err, rel;
      error_figures(QT_QUANT_NF4, nf4[i].bs, dq, &err, &rel);
      printf("nf4 bs%-4d dq=%d: mean abs err %.6f (bound %.4f), rel err %.6f (bound %.4f)\n",
             nf4[i].bs, dq, err, nf4[i].err + 1e-3, rel, nf4[i].rel + 1e-3);
      assert_true(err <= nf4[i].err + 1e-3);
      assert_true(rel <= nf4[i].rel + 1e-3);
    }
  double err, rel, err_nf4, rel_nf4;
  error_figures(QT_QUANT_FP4, 64, false, &err, &rel);
  error_figures(QT_QUANT_NF4, 64, false, &err_nf4, &rel_nf4);
  printf("fp4 bs64: mean abs err %.6f, rel err %.6f\n", err, rel);
  /* NF4 is information-theoretically optimal for normal data (QLoRA paper
   * section 3); FP4 must be worse on randn. */
  assert_true(err > err_nf4);
}

static void test_identity_roundtrip(void **state) {
  (void)state;
  /* R13: dequant(quant(I)) . x == x. Blocks containing a one have absmax 1 and
   * encode it exactly; all-zero blocks give -0 (CUDA NaN path), still zero. */
  enum { N = 96 };
  float *eye = calloc(N * N, sizeof(float)), *d = malloc(sizeof(float) * N * N);
  for (int i = 0; i < N; i++) eye[i * N + i] = 1.0f;
  for (int t = 0; t < 2; t++) {
    qt_quant_weight w;
    int64_t shape[2] = {N, N};
    assert_int_equal(qt_quant_weight_quantize((qt_quant_type)t, 64, false, QT_F32, 2, shape, eye, 1, &w),
                     QT_OK);
    assert_int_equal(qt_quant_weight_dequantize_f32(&w, d, 1), QT_OK);
    for (int i = 0; i < N * N; i++) assert_true(d[i] == eye[i]);
    qt_quant_weight_free(&w);
  }
  free(eye);
  free(d);
}

static void test_double_quant_properties(void **state) {
  (void)state;
  qtu_rng r;
  qtu_rng_seed(&r, 77);
  int64_t n = 300 * 257, shape[2] = {300, 257};
  float *x = malloc(4 * (size_t)n);
  for (int64_t i = 0; i < n; i++) x[i] = (float)qtu_rng_normal(&r) * 0.02f;
  qt_quant_weight plain, dq;
  assert_int_equal(qt_quant_weight_quantize(QT_QUANT_NF4, 64, false, QT_BF16, 2, shape, x, 2, &plain), QT_OK);
  assert_int_equal(qt_quant_weight_quantize(QT_QUANT_NF4, 64, true, QT_BF16, 2, shape, x, 2, &dq), QT_OK);
  assert_memory_equal(plain.packed, dq.packed, (size_t)((n + 1) / 2));
  assert_int_equal(dq.nblocks, 1205);
  /* fast compress == reference compress (threads 2, a partial nested block) */
  uint8_t *q2 = malloc((size_t)dq.nblocks);
  float *n2 = malloc(4 * 5);
  qt_quant_dq_compress_ref(dq.nested_code, plain.absmax, dq.nblocks, dq.offset, q2, n2);
  assert_memory_equal(q2, dq.qabsmax, (size_t)dq.nblocks);
  assert_memory_equal(n2, dq.nested_absmax, 4 * 5);
  qt_quant_dq_compress(dq.nested_code, plain.absmax, dq.nblocks, 0.0f, q2, n2, 2);
  uint8_t *q3 = malloc((size_t)dq.nblocks);
  float *n3 = malloc(4 * 5);
  qt_quant_dq_compress_ref(dq.nested_code, plain.absmax, dq.nblocks, 0.0f, q3, n3);
  assert_memory_equal(q2, q3, (size_t)dq.nblocks);
  assert_memory_equal(n2, n3, 4 * 5);
  free(q2); free(n2); free(q3); free(n3);
  float *am = malloc(4 * (size_t)dq.nblocks);
  qt_quant_weight_absmax(&dq, am);
  /* The offset is the mean; DQ absmax within half a code step of the truth. */
  double s = 0;
  for (int64_t b = 0; b < dq.nblocks; b++) s += plain.absmax[b];
  assert_true(dq.offset == (float)(s / (double)dq.nblocks));
  for (int64_t b = 0; b < dq.nblocks; b++)
    assert_true(fabsf(am[b] - plain.absmax[b]) <= 0.0075f * dq.nested_absmax[b / 256] + 1e-7f);
  free(am);
  free(x);
  qt_quant_weight_free(&plain);
  qt_quant_weight_free(&dq);
}

static void test_bits_per_param(void **state) {
  (void)state;
  /* QLoRA paper section 3: 4 + 32/64 without DQ, 4 + 8/64 + 32/(64*256) with. */
  int64_t n = 4096LL * 4096LL;
  double plain = qt_quant_bits_per_param(n, 64, false), dq = qt_quant_bits_per_param(n, 64, true);
  printf("bits/param nf4 bs64 4096x4096: %.6f plain, %.6f double quant\n", plain, dq);
  assert_true(fabs(plain - 4.5) < 1e-9);
  assert_true(fabs(dq - (4.0 + 8.0 / 64 + 32.0 / (64 * 256))) < 1e-5); /* + 32/n offset */
}

/* Reader error paths on hand-built entries (inputs, not expected values). */
static qt_st_entry entry(const char *name, qt_dtype dt, int64_t numel, const void *data) {
  qt_st_entry e;
  memset(&e, 0, sizeof(e));
  e.name = (char *)name;
  e.dtype = dt;
  e.ndim = 1;
  e.shape[0] = numel;
  e.begin = 0;
  e.end = (uint64_t)numel * qt_dtype_size(dt);
  e.data = data;
  return e;
}

static void test_from_bnb_errors(void **state) {
  (void)state;
  /* A valid plain weight [3, 5] first, then break one thing at a time. */
  float x[15];
  for (int i = 0; i < 15; i++) x[i] = (float)(i - 7) * 0.1f;
  uint8_t packed[8];
  float absmax[1];
  qt_quant_4bit_quantize_ref(QT_QUANT_FP4, x, 15, 64, packed, absmax);
  const char *js = "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [3, 5]}";
  qt_st_entry w = entry("w", QT_U8, 8, packed), a = entry("a", QT_F32, 1, absmax);
  qt_st_entry m = entry("m", QT_F32, 16, qt_quant_4bit_table(QT_QUANT_FP4));
  qt_st_entry q = entry("q", QT_U8, (int64_t)strlen(js), js);
  qt_quant_weight out;
  assert_int_equal(qt_quant_weight_from_bnb("t", &w, &a, &m, NULL, NULL, &q, &out), QT_OK);
  assert_true(!out.nested && out.dtype == QT_F16 && out.n == 15 && out.ndim == 2);
  float d[15], dref[15];
  assert_int_equal(qt_quant_weight_dequantize_f32(&out, d, 1), QT_OK);
  qt_quant_4bit_dequantize_ref(QT_QUANT_FP4, packed, absmax, 15, 64, dref);
  assert_memory_equal(d, dref, sizeof(d));
  qt_quant_weight_free(&out);

  assert_int_equal(qt_quant_weight_from_bnb("t", &w, &a, &m, NULL, NULL, NULL, &out), QT_ERR_FORMAT);
  assert_non_null(strstr(qt_error_message(), "quant_state"));
  qt_st_entry wshort = entry("w", QT_U8, 7, packed);
  assert_int_equal(qt_quant_weight_from_bnb("t", &wshort, &a, &m, NULL, NULL, &q, &out), QT_ERR_FORMAT);
  qt_st_entry a8 = entry("a", QT_U8, 1, packed);
  assert_int_equal(qt_quant_weight_from_bnb("t", &w, &a8, &m, NULL, NULL, &q, &out), QT_ERR_FORMAT);
  qt_st_entry mnf4 = entry("m", QT_F32, 16, qt_quant_4bit_table(QT_QUANT_NF4));
  assert_int_equal(qt_quant_weight_from_bnb("t", &w, &a, &mnf4, NULL, NULL, &q, &out), QT_ERR_UNSUPPORTED);
  const char *bad[] = {
      "{\"quant_type\": \"int4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [3, 5]}",
      "{\"quant_type\": \"fp4\", \"blocksize\": 48, \"dtype\": \"float16\", \"shape\": [3, 5]}",
      "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"int8\", \"shape\": [3, 5]}",
      "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [3, -5]}",
      "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [3, 6]}",
      "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [3, 5], \"nested_offset\": 0.1}",
      /* one entry split over two lines; the parentheses tell clang's
       * -Wstring-concatenation that the missing comma is intended */
      ("{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [3, 5], "
       "\"nested_blocksize\": 128, \"nested_offset\": 0.1}"),
      "[1, 2]",
      "{\"quant_type\": ",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    qt_st_entry qb = entry("q", QT_U8, (int64_t)strlen(bad[i]), bad[i]);
    qt_status st = qt_quant_weight_from_bnb("t", &w, &a, &m, NULL, NULL, &qb, &out);
    if (st == QT_OK) fail_msg("accepted bad quant_state %s", bad[i]);
    assert_non_null(strstr(qt_error_message(), "t: "));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_encoders_tie_rules),
      cmocka_unit_test(test_bf16_matches_common_half),
      cmocka_unit_test(test_fast_equals_ref_4bit),
      cmocka_unit_test(test_fast_equals_ref_8bit),
      cmocka_unit_test(test_error_bounds_r13),
      cmocka_unit_test(test_identity_roundtrip),
      cmocka_unit_test(test_double_quant_properties),
      cmocka_unit_test(test_bits_per_param),
      cmocka_unit_test(test_from_bnb_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
