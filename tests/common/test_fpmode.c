/* common/fpmode: flush-to-zero and denormals-are-zero on the calling thread and
 * on every OpenMP thread (x86-64; elsewhere the call reports false and nothing
 * changes). A wrong implementation (mode set on one thread only, or only FTZ)
 * produces a subnormal below. */
#include <float.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/fpmode.h"

/* FLT_MIN / 4 (a subnormal result) and subnormal * 1 (a subnormal input), each
 * through volatile so the compiler cannot fold them. */
static int makes_subnormals(void) {
  volatile float m = FLT_MIN, four = 4.0f, one = 1.0f;
  uint32_t bits = 0x00000400u; /* a subnormal */
  float sub;
  memcpy(&sub, &bits, 4);
  volatile float vs = sub;
  float q = m / four, p = vs * one;
  return (q != 0.0f) + 2 * (p != 0.0f);
}

static void test_flush(void **st) {
  (void)st;
  assert_int_equal(makes_subnormals(), 3); /* IEEE by default */
  assert_false(qt_fp_flushing_subnormals());
  int before[4] = {0};
#pragma omp parallel num_threads(4)
  before[omp_get_thread_num()] = makes_subnormals(); /* the pool starts before the mode is set */
  for (int t = 0; t < 4; t++) assert_int_equal(before[t], 3);
  bool on = qt_fp_flush_subnormals(4);
#if defined(__x86_64__)
  assert_true(on);
  assert_true(qt_fp_flushing_subnormals());
  assert_int_equal(makes_subnormals(), 0); /* FTZ: result 0; DAZ: input read as 0 */
  int after[4] = {-1, -1, -1, -1}, flag[4] = {0};
#pragma omp parallel num_threads(4)
  {
    after[omp_get_thread_num()] = makes_subnormals();
    flag[omp_get_thread_num()] = qt_fp_flushing_subnormals();
  }
  for (int t = 0; t < 4; t++) {
    assert_int_equal(after[t], 0);
    assert_true(flag[t]);
  }
  qt_fp_keep_subnormals(4); /* and back: IEEE everywhere again */
  assert_false(qt_fp_flushing_subnormals());
  assert_int_equal(makes_subnormals(), 3);
  int back[4] = {0};
#pragma omp parallel num_threads(4)
  back[omp_get_thread_num()] = makes_subnormals();
  for (int t = 0; t < 4; t++) assert_int_equal(back[t], 3);
#else
  assert_false(on);
  assert_int_equal(makes_subnormals(), 3);
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_flush)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
