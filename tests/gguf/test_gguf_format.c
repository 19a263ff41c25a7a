/* tests/gguf/test_gguf_format.c — the GGUF writer and reader (gguf/gguf.h):
 * a file written with every KV kind and tensors of every type reads back with
 * the same keys, values, shapes and bytes at aligned offsets; every truncation
 * and a bad magic are format errors, never a crash; and dequantize(quantize(x))
 * stays within each block type's step. (Byte identity with llama.cpp is
 * tests/gguf/test_gguf_export.c.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/fs.h"
#include "gguf/gguf.h"

static float rnd(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return (float)((int32_t)(*s >> 8) - 8388608) * 0x1p-23f;
}

static void test_roundtrip(void **state) {
  (void)state;
  char path[] = "/tmp/qt_gguf_fmt_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  qt_gguf_writer *w;
  assert_int_equal(qt_gguf_writer_init(path, &w), QT_OK);
  assert_int_equal(qt_gguf_kv_str(w, "general.architecture", "llama"), QT_OK);
  assert_int_equal(qt_gguf_kv_u32(w, "a.u32", 7u), QT_OK);
  assert_int_equal(qt_gguf_kv_f32(w, "a.f32", 1.5f), QT_OK);
  assert_int_equal(qt_gguf_kv_bool(w, "a.bool", true), QT_OK);
  const char *strs[] = {"x", "", "h\xc3\xa9llo"};
  assert_int_equal(qt_gguf_kv_arr_str(w, "a.strs", strs, 3), QT_OK);
  assert_int_equal(qt_gguf_kv_u32(w, "a.u32", 8u), QT_ERR_INVALID); /* duplicate key */
  const qt_ggml_type types[] = {QT_GGML_F32, QT_GGML_F16, QT_GGML_BF16, QT_GGML_Q8_0, QT_GGML_Q5_0, QT_GGML_Q4_K, QT_GGML_Q6_K};
  enum { NT = 7, NE0 = 512, NE1 = 3 };
  float *x = malloc(NE0 * NE1 * sizeof *x), *y = malloc(NE0 * NE1 * sizeof *y);
  uint32_t s = 1;
  for (int i = 0; i < NE0 * NE1; i++) x[i] = rnd(&s) * (i % 97 == 0 ? 8.0f : 1.0f);
  uint8_t *q[NT];
  size_t idx[NT];
  for (int t = 0; t < NT; t++) {
    char name[32];
    snprintf(name, sizeof name, "t%d", t);
    int64_t ne[2] = {NE0, NE1};
    assert_int_equal(qt_gguf_add_tensor(w, name, 2, ne, types[t], &idx[t]), QT_OK);
    size_t b = qt_gguf_tensor_bytes(w, idx[t]);
    assert_int_equal(b, NE1 * qt_ggml_row_bytes(types[t], NE0));
    q[t] = malloc(b);
    for (int r = 0; r < NE1; r++) qt_gguf_quantize(types[t], x + r * NE0, q[t] + (size_t)r * qt_ggml_row_bytes(types[t], NE0), NE0);
  }
  int64_t bad[1] = {100};
  assert_int_equal(qt_gguf_add_tensor(w, "bad", 1, bad, QT_GGML_Q8_0, NULL), QT_ERR_INVALID);
  for (int t = 0; t < NT; t++) assert_int_equal(qt_gguf_write_tensor(w, idx[t], q[t], qt_gguf_tensor_bytes(w, idx[t])), QT_OK);
  assert_int_equal(qt_gguf_writer_finish(w), QT_OK);
  qt_gguf_writer_free(&w);

  qt_gguf_file f;
  assert_int_equal(qt_gguf_read(path, &f), QT_OK);
  assert_int_equal(f.n_kv, 5);
  assert_int_equal(f.n_tensors, NT);
  uint32_t u;
  float fl;
  bool bo;
  const char *str;
  size_t len;
  assert_true(qt_gguf_get_u32(&f, "a.u32", &u) && u == 7);
  assert_true(qt_gguf_get_f32(&f, "a.f32", &fl) && fl == 1.5f);
  assert_true(qt_gguf_get_bool(&f, "a.bool", &bo) && bo);
  assert_true(qt_gguf_get_str(&f, "general.architecture", &str, &len) && len == 5 && !memcmp(str, "llama", 5));
  const qt_gguf_kv *kv = qt_gguf_find_kv(&f, "a.strs");
  for (int i = 0; i < 3; i++) {
    assert_true(qt_gguf_get_arr_str(kv, (uint64_t)i, &str, &len));
    assert_int_equal(len, strlen(strs[i]));
    assert_memory_equal(str, strs[i], len);
  }
  /* the step of each type, relative to the row's largest value (8): loose bounds a wrong layout breaks */
  const double tol[NT] = {0, 1e-3, 8e-3, 1e-2, 4e-2, 1.5e-1, 4e-2};
  for (int t = 0; t < NT; t++) {
    const qt_gguf_tensor *ten = &f.tensors[t];
    assert_int_equal(ten->type, types[t]);
    assert_int_equal(ten->offset % 32, 0);
    assert_memory_equal(ten->data, q[t], ten->bytes);
    for (int r = 0; r < NE1; r++)
      qt_gguf_dequantize(types[t], ten->data + (size_t)r * qt_ggml_row_bytes(types[t], NE0), y + r * NE0, NE0);
    double worst = 0;
    for (int i = 0; i < NE0 * NE1; i++) worst = fmax(worst, fabs((double)y[i] - x[i]) / 8.0);
    if (worst > tol[t]) fail_msg("%s: dequantize(quantize(x)) error %g > %g", qt_ggml_type_name(types[t]), worst, tol[t]);
    free(q[t]);
  }
  /* every truncation is a format error */
  size_t size = f.size;
  uint8_t *img = malloc(size);
  memcpy(img, f.image, size);
  qt_gguf_file_free(&f);
  for (size_t cut = 0; cut < size; cut += (cut < 600 ? 1 : 997)) {
    assert_int_equal(qt_fs_write_atomic(path, img, cut), QT_OK);
    qt_gguf_file g;
    assert_int_not_equal(qt_gguf_read(path, &g), QT_OK);
  }
  img[0] = 'X';
  assert_int_equal(qt_fs_write_atomic(path, img, size), QT_OK);
  assert_int_equal(qt_gguf_read(path, &f), QT_ERR_FORMAT);
  free(img);
  free(x);
  free(y);
  unlink(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
