/* Tests for optim/ schedules (against transformers' LambdaLR values in
 * tests/golden/optim/lr_schedules.txt, made by
 * tools/reference/make_optim_fixtures.py), the global gradient norm, the
 * clipping coefficient and the non-finite policy. */
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
#include "optim/optim.h"

#define GOLDEN QLORA_TEST_DIR "/golden/optim/"

static void test_schedules_vs_transformers(void **st) {
  (void)st;
  FILE *f = fopen(GOLDEN "lr_schedules.txt", "r");
  if (!f) fail_msg("cannot open %slr_schedules.txt", GOLDEN);
  char kind[32], mr[64], val[64];
  long long warm, total, step;
  int lines = 0, seen[3] = {0, 0, 0}, with_min = 0;
  double worst = 0;
  while (fscanf(f, "%31s %lld %lld %63s %lld %63s", kind, &warm, &total, mr, &step, val) == 6) {
    qt_lr_schedule s;
    assert_true(qt_lr_kind_from_name(kind, &s.kind));
    assert_string_equal(qt_lr_kind_name(s.kind), kind);
    s.warmup_steps = warm;
    s.total_steps = total;
    s.min_ratio = strtod(mr, NULL);
    double want = strtod(val, NULL), got = qt_lr_schedule_factor(&s, step);
    double err = fabs(got - want);
    worst = err > worst ? err : worst;
    /* same double formula: equal up to libm cos (4 ulp of the value) */
    if (err > 4 * 0x1p-52 * fmax(fabs(want), 0x1p-52))
      fail_msg("%s warmup %lld total %lld min %g step %lld: %.17g vs transformers %.17g", kind, warm,
               total, s.min_ratio, step, got, want);
    seen[s.kind]++;
    with_min += s.min_ratio > 0;
    lines++;
  }
  fclose(f);
  printf("%d schedule values, worst |diff| %.3g\n", lines, worst);
  assert_true(lines > 1000 && seen[0] && seen[1] && seen[2] && with_min);
  qt_lr_kind k;
  assert_false(qt_lr_kind_from_name("cosine_with_restarts", &k));
}

/* splitmix64 (Steele, Lea, Flood 2014): *s += golden, then the finalizer */
static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void test_global_norm(void **st) {
  (void)st;
  int64_t n0 = 3, n1 = 200001, n2 = 1000;
  float *a = malloc(n0 * 4), *b = malloc(n1 * 4);
  uint16_t *c = malloc(n2 * 2);
  uint64_t s = 1;
  long double ref = 0;
  for (int64_t i = 0; i < n0; i++) a[i] = (float)((double)(splitmix64(&s) >> 11) * 0x1p-53 - 0.5) * 1e3f;
  for (int64_t i = 0; i < n1; i++) b[i] = (float)((double)(splitmix64(&s) >> 11) * 0x1p-53 - 0.5);
  for (int64_t i = 0; i < n2; i++) c[i] = qt_bf16_from_f32((float)((double)(splitmix64(&s) >> 11) * 0x1p-53 - 0.5) * 1e-3f);
  for (int64_t i = 0; i < n0; i++) ref += (long double)a[i] * a[i];
  for (int64_t i = 0; i < n1; i++) ref += (long double)b[i] * b[i];
  for (int64_t i = 0; i < n2; i++) ref += (long double)qt_bf16_to_f32(c[i]) * qt_bf16_to_f32(c[i]);
  qt_tensor t[3] = {qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n0, a),
                    qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n1, b),
                    qt_tensor_make(QT_BF16, QT_DEV_CPU, 1, &n2, c)};
  double norm = qt_optim_global_norm(t, 3);
  assert_true(fabs(norm - (double)sqrtl(ref)) <= 1e-12 * norm);
  assert_true(qt_optim_global_norm(t, 3) == norm);   /* deterministic */
  b[123456] = NAN;
  assert_false(isfinite(qt_optim_global_norm(t, 3)));
  b[123456] = INFINITY;
  assert_false(isfinite(qt_optim_global_norm(t, 3)));
  b[123456] = 3.0e38f;  /* finite, its square overflows float but not double */
  assert_true(isfinite(qt_optim_global_norm(t, 3)));
  c[5] = 0x7FC0; /* bf16 NaN */
  b[123456] = 0.0f;
  assert_false(isfinite(qt_optim_global_norm(t, 3)));
  free(a);
  free(b);
  free(c);
}

static void test_clip_coef(void **st) {
  (void)st;
  /* torch clip_grad_norm_: clamp(max_norm / (norm + 1e-6), max=1) */
  assert_true(qt_optim_clip_coef(10.0, 1.0) == (float)(1.0 / (10.0 + 1e-6)));
  assert_true(qt_optim_clip_coef(0.3, 1.0) == 1.0f);
  assert_true(qt_optim_clip_coef(1.0, 1.0) < 1.0f); /* 1/(1+1e-6) */
  assert_true(qt_optim_clip_coef(0.0, 1.0) == 1.0f);
  assert_true(qt_optim_clip_coef(1e9, 0.0) == 1.0f); /* max_grad_norm 0: off */
}

/* torch.nn.utils.clip_grad_norm_ on the fixture's tensors (sym_uniform of
 * tools/reference/bnb_8bit_ref.py, seeds 21 + 16k, step 1, times 10^k): our
 * double-accumulated norm within 1e-6 of torch's float32 one, and so our
 * factor within 1e-6 of the one torch multiplied the gradients by (read back
 * as scaled/original, itself a rounded quotient). */
static float sym_uniform(uint64_t seed, uint64_t t, uint64_t i) {
  uint64_t x = (seed << 48) | (t << 32) | i;
  uint64_t z = splitmix64(&x);
  return 2.0f * ((float)(z >> 40) * 0x1p-24f) - 1.0f;
}

static void test_clip_vs_torch(void **st) {
  (void)st;
  int64_t numels[3] = {5, 1000, 70001};
  float *g[3];
  qt_tensor t[3];
  for (int k = 0; k < 3; k++) {
    g[k] = malloc((size_t)numels[k] * 4);
    for (int64_t i = 0; i < numels[k]; i++)
      g[k][i] = sym_uniform(21 + 16 * (uint64_t)k, 1, (uint64_t)i) * (k == 0 ? 1.0f : k == 1 ? 10.0f : 100.0f);
    t[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &numels[k], g[k]);
  }
  double norm = qt_optim_global_norm(t, 3);
  FILE *f = fopen(GOLDEN "clip.txt", "r");
  if (!f) fail_msg("cannot open %sclip.txt", GOLDEN);
  char a[64], b[64], c[64];
  int cases = 0, clamped = 0;
  while (fscanf(f, "%63s %63s %63s", a, b, c) == 3) {
    double max_norm = strtod(a, NULL), tnorm = strtod(b, NULL), tcoef = strtod(c, NULL);
    assert_true(fabs(norm - tnorm) <= 1e-6 * tnorm);
    float coef = qt_optim_clip_coef(norm, max_norm);
    if (fabs((double)coef - tcoef) > 1e-6 * tcoef)
      fail_msg("max_norm %g: coef %.9g vs torch %.9g", max_norm, (double)coef, tcoef);
    clamped += coef == 1.0f;
    cases++;
  }
  fclose(f);
  assert_true(cases >= 5 && clamped >= 1 && clamped < cases);
  for (int k = 0; k < 3; k++) free(g[k]);
}

static void test_nonfinite_policy(void **st) {
  (void)st;
  qt_optim_nonfinite g = {.max_consecutive = 2};
  bool skip;
  assert_int_equal(qt_optim_nonfinite_observe(&g, 1.5, &skip), QT_OK);
  assert_false(skip);
  assert_int_equal(qt_optim_nonfinite_observe(&g, NAN, &skip), QT_OK);
  assert_true(skip);
  assert_int_equal(qt_optim_nonfinite_observe(&g, INFINITY, &skip), QT_OK);
  assert_true(skip);
  assert_int_equal(qt_optim_nonfinite_observe(&g, 2.0, &skip), QT_OK);
  assert_false(skip);
  assert_int_equal(g.consecutive, 0);
  assert_int_equal(g.skipped_total, 2);
  assert_int_equal(qt_optim_nonfinite_observe(&g, NAN, &skip), QT_OK);
  assert_int_equal(qt_optim_nonfinite_observe(&g, NAN, &skip), QT_OK);
  assert_int_equal(qt_optim_nonfinite_observe(&g, NAN, &skip), QT_ERR_NUMERIC);
  assert_true(skip);
  assert_non_null(strstr(qt_error_message(), "3 optimizer steps in a row"));
  assert_int_equal(g.skipped_total, 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_schedules_vs_transformers),
      cmocka_unit_test(test_global_norm),
      cmocka_unit_test(test_clip_coef),
      cmocka_unit_test(test_clip_vs_torch),
      cmocka_unit_test(test_nonfinite_policy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
