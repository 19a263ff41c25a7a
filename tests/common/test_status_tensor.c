/* Tests for common/status and common/tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/status.h"
#include "common/tensor.h"

static qt_status fails_io(void) { return qt_fail(QT_ERR_IO, "%s: cannot open", "a.bin"); }
static qt_status propagates(void) {
  QT_TRY(fails_io());
  return QT_OK;
}

static void test_fail_and_context(void **state) {
  (void)state;
  qt_error_clear();
  assert_int_equal(propagates(), QT_ERR_IO);
  qt_error_context("loading %s", "model");
  assert_string_equal(qt_error_message(), "loading model: a.bin: cannot open");
  assert_int_equal(qt_status_exit_code(QT_ERR_IO), 1);
  assert_int_equal(qt_status_exit_code(QT_ERR_USAGE), 2);
  assert_int_equal(qt_status_exit_code(QT_OK), 0);
}

static void test_dtype_table(void **state) {
  (void)state;
  /* Bit sizes of the safetensors dtypes (safetensors src/tensor.rs Dtype::bitsize). */
  const struct { const char *n; unsigned bits; } want[] = {
      {"BOOL", 8}, {"U8", 8}, {"I8", 8}, {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8},
      {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16},
      {"BF16", 16}, {"I32", 32}, {"U32", 32}, {"F32", 32}, {"C64", 64}, {"F64", 64},
      {"I64", 64}, {"U64", 64}, {"F4", 4}, {"F6_E2M3", 6}, {"F6_E3M2", 6}};
  assert_int_equal(sizeof want / sizeof want[0], QT_DTYPE_COUNT);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    qt_dtype t;
    assert_true(qt_dtype_from_name(want[i].n, &t));
    assert_int_equal(qt_dtype_bits(t), want[i].bits);
    assert_string_equal(qt_dtype_name(t), want[i].n);
  }
  qt_dtype t;
  assert_false(qt_dtype_from_name("f32", &t)); /* case-sensitive, like the reference */
  assert_false(qt_dtype_from_name("F128", &t));
}

static void test_tensor_numel(void **state) {
  (void)state;
  int64_t shape[3] = {2, 3, 5};
  qt_tensor t = qt_tensor_make(QT_BF16, QT_DEV_CPU, 3, shape, NULL);
  assert_int_equal(qt_tensor_numel(&t), 30);
  assert_int_equal(qt_tensor_nbytes(&t), 60);
  char buf[64];
  qt_tensor_shape_str(&t, buf, sizeof buf);
  assert_string_equal(buf, "[2, 3, 5]");
  qt_tensor s = qt_tensor_make(QT_F32, QT_DEV_CPU, 0, NULL, NULL);
  assert_int_equal(qt_tensor_numel(&s), 1);
  int64_t odd[1] = {7};
  qt_tensor f4 = qt_tensor_make(QT_F4, QT_DEV_CPU, 1, odd, NULL);
  assert_int_equal(qt_tensor_nbytes(&f4), 4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fail_and_context),
      cmocka_unit_test(test_dtype_table),
      cmocka_unit_test(test_tensor_numel),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
