/* quant/gemv.h: the fused 4-bit matrix-vector product.
 *   reference   qt_quant_4bit_gemv_ref equals, bit for bit, the double sum of
 *               x[k] * w[k] over the matrix qt_quant_weight_dequantize_f32
 *               writes (the same fp32 products, the same order)
 *   kernels     scalar, AVX2 and AVX-512 (those this CPU has) within 4e-6
 *               relative (max|a-b| / max|ref|) of the reference: fp32 sums
 *               per block of at most 4096 terms (measured worst here 5e-7);
 *               1 and 2 threads give the same bits (rows are split, not sums)
 * over NF4/FP4, with and without double quantization, blocksizes 32..256,
 * blocks crossing rows and odd column counts (the scalar path). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/philox.h"
#include "quant/gemv.h"
#include "quant/quant.h"

static void ok(qt_status s) {
  if (s != QT_OK) fail_msg("%s: %s", qt_status_name(s), qt_error_message());
}

static void one_case(qt_quant_type t, bool dq, int bs, int64_t rows, int64_t cols) {
  int64_t n = rows * cols;
  float *w = malloc((size_t)n * sizeof *w), *wd = malloc((size_t)n * sizeof *wd);
  float *x = malloc((size_t)cols * sizeof *x), *xs = malloc((size_t)(cols + 32) * sizeof *xs);
  float *ref = malloc((size_t)rows * sizeof *ref), *y = malloc((size_t)rows * sizeof *y);
  float *y2 = malloc((size_t)rows * sizeof *y2);
  qt_philox rng;
  qt_philox_init(&rng, (uint64_t)(rows * 7919 + cols + bs + 2 * dq + t), 0, 0);
  for (int64_t i = 0; i < n; i++) w[i] = qt_philox_next_normal(&rng) * (i % 97 == 0 ? 4.0f : 0.05f);
  for (int64_t k = 0; k < cols; k++) x[k] = qt_philox_next_normal(&rng);
  int64_t shape[2] = {rows, cols};
  qt_quant_weight q;
  ok(qt_quant_weight_quantize(t, bs, dq, QT_F32, 2, shape, w, 1, &q));
  ok(qt_quant_weight_dequantize_f32(&q, wd, 1));
  qt_quant_4bit_gemv_ref(&q, rows, cols, x, ref);
  double mref = 0;
  for (int64_t r = 0; r < rows; r++) {
    double acc = 0;
    for (int64_t k = 0; k < cols; k++) acc += (double)(x[k] * wd[r * cols + k]);
    if ((float)acc != ref[r])
      fail_msg("%s dq %d bs %d %lldx%lld: reference row %lld %.9g, dequantize + dot %.9g",
               qt_quant_type_name(t), dq, bs, (long long)rows, (long long)cols, (long long)r,
               ref[r], (float)acc);
    if (fabs(ref[r]) > mref) mref = fabs(ref[r]);
  }
  static const char *names[] = {"auto", "scalar", "avx2", "avx512"};
  for (int k = QT_GEMV_SCALAR; k <= QT_GEMV_AVX512; k++) {
    if (!qt_quant_4bit_gemv_as((qt_gemv_kernel)k, &q, rows, cols, x, y, xs, 1)) {
      fprintf(stderr, "kernel %s: not on this CPU, skipped\n", names[k]);
      continue;
    }
    assert_true(qt_quant_4bit_gemv_as((qt_gemv_kernel)k, &q, rows, cols, x, y2, xs, 2));
    assert_memory_equal(y, y2, (size_t)rows * sizeof *y);
    double md = 0;
    for (int64_t r = 0; r < rows; r++) {
      double d = fabs((double)y[r] - ref[r]);
      if (!(d <= md)) md = d;
    }
    double rel = md / mref;
    if (!(rel <= 4e-6))
      fail_msg("%s dq %d bs %d %lldx%lld kernel %s: rel %.3g vs the reference",
               qt_quant_type_name(t), dq, bs, (long long)rows, (long long)cols, names[k], rel);
    fprintf(stderr, "%s dq %d bs %4d %5lld x %5lld %-6s rel %.2g\n", qt_quant_type_name(t), dq,
            bs, (long long)rows, (long long)cols, names[k], rel);
  }
  qt_quant_weight_free(&q);
  free(w);
  free(wd);
  free(x);
  free(xs);
  free(ref);
  free(y);
  free(y2);
}

static void test_gemv(void **st) {
  (void)st;
  for (int t = 0; t < 2; t++)
    for (int dq = 0; dq < 2; dq++) {
      one_case((qt_quant_type)t, dq, 64, 37, 256);
      one_case((qt_quant_type)t, dq, 32, 19, 96);
      one_case((qt_quant_type)t, dq, 128, 300, 1024); /* threaded */
      one_case((qt_quant_type)t, dq, 256, 8, 4096);
      one_case((qt_quant_type)t, dq, 64, 11, 172);    /* blocks cross rows */
      one_case((qt_quant_type)t, dq, 64, 9, 33);      /* odd cols: rows start mid-byte */
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_gemv)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
