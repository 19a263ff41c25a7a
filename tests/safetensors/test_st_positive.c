/* Positive cases (reliability-anchors.md 7, R2): hand-built edge cases and
 * files written by the Python safetensors library / transformers
 * save_pretrained are read bit-exactly (SHA-256 recorded by
 * tools/reference/make_safetensors_fixtures.py); sharded model directories and
 * their index validation; a > 4 GiB sparse file (offsets beyond 2^32). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/fs.h"
#include "common/safetensors.h"
#include "st_golden.h"

static void check_file(const char *rel, const cJSON *tensors, const cJSON *metadata) {
  char *path = stg_path(rel);
  qt_st_file f;
  qt_status s = qt_st_open(path, &f);
  if (s != QT_OK) fail_msg("%s", qt_error_message());
  assert_int_equal(f.n_tensors, (size_t)cJSON_GetArraySize(tensors));
  for (const cJSON *t = tensors->child; t; t = t->next) {
    stg_check_entry(qt_st_find(&f, cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring), t);
  }
  /* Entries are sorted by offset and contiguous. */
  for (size_t k = 1; k < f.n_tensors; k++) assert_int_equal(f.tensors[k].begin, f.tensors[k - 1].end);
  if (metadata) {
    assert_int_equal(f.n_meta, (size_t)cJSON_GetArraySize(metadata));
    for (const cJSON *m = metadata->child; m; m = m->next) {
      const char *v = qt_st_meta(&f, m->string);
      assert_non_null(v);
      assert_string_equal(v, m->valuestring);
    }
  }
  qt_st_close(&f);
  free(path);
}

static void test_good_corpus(void **state) {
  (void)state;
  cJSON *meta = stg_meta("good");
  int n = 0;
  for (const cJSON *c = cJSON_GetObjectItemCaseSensitive(meta, "cases")->child; c; c = c->next, n++) {
    check_file(cJSON_GetObjectItemCaseSensitive(c, "file")->valuestring,
               cJSON_GetObjectItemCaseSensitive(c, "tensors"), cJSON_GetObjectItemCaseSensitive(c, "metadata"));
  }
  assert_true(n >= 10);
  cJSON_Delete(meta);
}

static void test_python_written(void **state) {
  (void)state;
  const char *names[] = {"py_all_dtypes", "py_floats", "py_empty"};
  for (int k = 0; k < 3; k++) {
    cJSON *meta = stg_meta(names[k]);
    const char *rel = cJSON_GetObjectItemCaseSensitive(meta, "file")->valuestring;
    check_file(rel, cJSON_GetObjectItemCaseSensitive(meta, "tensors"),
               cJSON_GetObjectItemCaseSensitive(meta, "metadata"));
    const cJSON *fsha = cJSON_GetObjectItemCaseSensitive(meta, "file_sha256");
    if (fsha) { /* hashlib's digest of the whole file against common/sha256 */
      char *path = stg_path(rel);
      size_t len;
      uint8_t *b = stg_read(path, &len);
      char hex[65];
      stg_sha_hex(b, len, hex);
      assert_string_equal(hex, fsha->valuestring);
      free(b);
      free(path);
    }
    cJSON_Delete(meta);
  }
}

/* qt_st_entry_to_f32 against torch's .float() (bit-exact, incl. inf, -0,
 * NaN, subnormals, F64 overflow to inf and underflow to 0). */
static void test_to_f32(void **state) {
  (void)state;
  cJSON *meta = stg_meta("py_floats");
  char *path = stg_path("py_floats.safetensors");
  qt_st_file f;
  assert_int_equal(qt_st_open(path, &f), QT_OK);
  for (const cJSON *t = cJSON_GetObjectItemCaseSensitive(meta, "tensors")->child; t; t = t->next) {
    const qt_st_entry *e = qt_st_find(&f, cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring);
    assert_non_null(e);
    int64_t n = qt_st_entry_numel(e);
    float *dst = malloc((size_t)n * sizeof *dst);
    assert_int_equal(qt_st_entry_to_f32(e, dst), QT_OK);
    char hex[65];
    stg_sha_hex(dst, (size_t)n * sizeof *dst, hex);
    if (strcmp(hex, cJSON_GetObjectItemCaseSensitive(t, "f32_sha256")->valuestring) != 0) {
      fail_msg("tensor '%s' (%s): fp32 conversion differs from torch .float()", e->name, qt_dtype_name(e->dtype));
    }
    qt_tensor v = qt_st_entry_tensor(e);
    assert_int_equal(v.ndim, e->ndim);
    assert_ptr_equal(v.data, e->data);
    free(dst);
  }
  qt_st_close(&f);
  free(path);
  cJSON_Delete(meta);
}

static void test_sharded_model(void **state) {
  (void)state;
  cJSON *meta = stg_meta("tiny_llama");
  char *dir = stg_path("tiny_llama");
  qt_st_model m;
  qt_status s = qt_st_model_open(dir, &m);
  if (s != QT_OK) fail_msg("%s", qt_error_message());
  assert_true(m.n_files >= 2);
  assert_int_equal(m.n_files, (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(meta, "shards")));
  assert_int_equal(m.n_tensors, (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(meta, "tensors")));
  for (const cJSON *t = cJSON_GetObjectItemCaseSensitive(meta, "tensors")->child; t; t = t->next) {
    const char *name = cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
    const qt_st_entry *e = qt_st_model_find(&m, name);
    stg_check_entry(e, t);
    /* ... and it is in the shard the index names */
    size_t at = 0;
    while (at < m.n_tensors && m.by_name[at] != e) at++;
    assert_true(at < m.n_tensors);
    const char *shard = cJSON_GetObjectItemCaseSensitive(t, "shard")->valuestring;
    const char *fp = m.files[m.file_of[at]].path;
    assert_string_equal(fp + strlen(fp) - strlen(shard), shard);
  }
  for (size_t k = 1; k < m.n_tensors; k++) assert_true(strcmp(m.by_name[k - 1]->name, m.by_name[k]->name) < 0);
  assert_null(qt_st_model_find(&m, "model.embed_tokens.WEIGHT")); /* case-sensitive */
  qt_st_model_close(&m);
  free(dir);
  cJSON_Delete(meta);
}

static void write_text(const char *dir, const char *name, const char *text) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  if (qt_fs_write_atomic(p, text, strlen(text)) != QT_OK) fail_msg("%s", qt_error_message());
}

static void copy_golden(const char *dir, const char *rel, const char *as) {
  char *src = stg_path(rel);
  size_t len;
  uint8_t *b = stg_read(src, &len);
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, as);
  if (qt_fs_write_atomic(p, b, len) != QT_OK) fail_msg("%s", qt_error_message());
  free(b);
  free(src);
}

/* Writes an index over the golden good/case_variants.safetensors ("a", "A")
 * and good/rank0.safetensors ("s") copied as shard1/shard2. */
static void expect_index_error(const char *dir, const char *weight_map, qt_status want, const char *expect) {
  char text[2048];
  snprintf(text, sizeof text, "{\"metadata\": {\"total_size\": 10}, \"weight_map\": %s}", weight_map);
  write_text(dir, "model.safetensors.index.json", text);
  qt_st_model m;
  qt_error_clear();
  qt_status s = qt_st_model_open(dir, &m);
  if (s != want || !strstr(qt_error_message(), expect)) {
    fail_msg("weight_map %s: got %s \"%s\", want %s \"%s\"", weight_map, qt_status_name(s), qt_error_message(),
             qt_status_name(want), expect);
  }
  assert_null(m.files);
  assert_int_equal(m.n_tensors, 0);
}

static void test_index_validation(void **state) {
  (void)state;
  char *dir = stg_tmpdir("st_index");
  copy_golden(dir, "good/case_variants.safetensors", "shard1.safetensors");
  copy_golden(dir, "good/rank0.safetensors", "shard2.safetensors");
  copy_golden(dir, "good/case_variants.safetensors", "shard3.safetensors");
  /* The valid index first. */
  write_text(dir, "model.safetensors.index.json",
             "{\"weight_map\": {\"a\": \"shard1.safetensors\", \"A\": \"shard1.safetensors\", "
             "\"s\": \"shard2.safetensors\"}}");
  qt_st_model m;
  assert_int_equal(qt_st_model_open(dir, &m), QT_OK);
  assert_int_equal(m.n_files, 2);
  assert_int_equal(m.n_tensors, 3);
  assert_non_null(qt_st_model_find(&m, "A"));
  assert_non_null(qt_st_model_find(&m, "s"));
  assert_null(qt_st_model_find(&m, "S"));
  qt_st_model_close(&m);

  expect_index_error(dir, "{\"a\": \"shard1.safetensors\", \"A\": \"shard1.safetensors\", \"s\": \"shard1.safetensors\"}",
                     QT_ERR_FORMAT, "maps tensor 's' to shard1.safetensors, but no shard contains it");
  expect_index_error(dir, "{\"a\": \"shard2.safetensors\", \"A\": \"shard1.safetensors\", \"s\": \"shard2.safetensors\"}",
                     QT_ERR_FORMAT, "maps tensor 'a' to shard2.safetensors, but it is stored in shard1.safetensors");
  expect_index_error(dir, "{\"a\": \"shard1.safetensors\", \"s\": \"shard2.safetensors\"}", QT_ERR_FORMAT,
                     "tensor 'A' in");
  expect_index_error(dir, "{\"a\": \"shard1.safetensors\", \"A\": \"shard3.safetensors\", \"s\": \"shard2.safetensors\"}",
                     QT_ERR_FORMAT, "appears in two shards");
  expect_index_error(dir, "{\"a\": \"shard1.safetensors\", \"a\": \"shard1.safetensors\", \"A\": \"shard1.safetensors\", "
                     "\"s\": \"shard2.safetensors\"}", QT_ERR_FORMAT, "lists tensor 'a' twice");
  expect_index_error(dir, "{\"a\": \"../shard1.safetensors\"}", QT_ERR_FORMAT, "not a plain file name");
  expect_index_error(dir, "{\"a\": \"/etc/passwd\"}", QT_ERR_FORMAT, "not a plain file name");
  expect_index_error(dir, "{\"a\": \"..\"}", QT_ERR_FORMAT, "not a plain file name");
  expect_index_error(dir, "{\"a\": 3}", QT_ERR_FORMAT, "weight_map value for 'a' is not a string");
  expect_index_error(dir, "[]", QT_ERR_FORMAT, "missing \"weight_map\" object");
  expect_index_error(dir, "{}", QT_ERR_FORMAT, "weight_map is empty");
  expect_index_error(dir, "{\"a\": \"missing.safetensors\"}", QT_ERR_IO, "missing.safetensors: cannot open");
  write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"shard1.safetensors\"}} x");
  assert_int_equal(qt_st_model_open(dir, &m), QT_ERR_FORMAT);
  assert_non_null(strstr(qt_error_message(), "not valid JSON"));
  /* A bad shard: its own message names the shard file. */
  copy_golden(dir, "bad/21_gap.safetensors", "shard1.safetensors");
  expect_index_error(dir, "{\"a\": \"shard1.safetensors\", \"b\": \"shard1.safetensors\"}", QT_ERR_FORMAT,
                     "shard1.safetensors: invalid safetensors file: tensor 'b'");
  stg_rmtree(dir);
}

static void test_model_dir_single_and_file(void **state) {
  (void)state;
  char *dir = stg_tmpdir("st_single");
  qt_st_model m;
  assert_int_equal(qt_st_model_open(dir, &m), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "neither model.safetensors nor"));
  copy_golden(dir, "py_all_dtypes.safetensors", "model.safetensors");
  assert_int_equal(qt_st_model_open(dir, &m), QT_OK);
  assert_int_equal(m.n_files, 1);
  cJSON *meta = stg_meta("py_all_dtypes");
  const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(meta, "tensors");
  assert_int_equal(m.n_tensors, (size_t)cJSON_GetArraySize(tensors));
  for (const cJSON *t = tensors->child; t; t = t->next) {
    stg_check_entry(qt_st_model_find(&m, cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring), t);
  }
  qt_st_model_close(&m);
  /* A plain file path works too; a missing path is an I/O error naming it. */
  char *one = stg_path("good/case_variants.safetensors");
  assert_int_equal(qt_st_model_open(one, &m), QT_OK);
  assert_int_equal(m.n_tensors, 2);
  qt_st_model_close(&m);
  assert_int_equal(qt_st_model_open("/nonexistent/model", &m), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent/model"));
  qt_st_file f;
  assert_int_equal(qt_st_open("/nonexistent/x.safetensors", &f), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent/x.safetensors: cannot open: No such file"));
  assert_int_equal(qt_st_open(dir, &f), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "not a regular file"));
  free(one);
  cJSON_Delete(meta);
  stg_rmtree(dir);
}

/* A file whose data buffer is larger than 4 GiB: offsets beyond 2^32 and
 * INT_MAX are read exactly. The file is sparse (ftruncate), so it costs no
 * disk space; skipped if the file system refuses the size. */
static void test_large_offsets(void **state) {
  (void)state;
  const uint64_t big = ((uint64_t)1 << 32) + 24; /* > 4 GiB */
  char hdr[256];
  int hn = snprintf(hdr, sizeof hdr,
                    "{\"head\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                    "\"huge\":{\"dtype\":\"F32\",\"shape\":[%llu],\"data_offsets\":[8,%llu]}}",
                    (unsigned long long)(big / 4), (unsigned long long)(8 + big));
  while (hn % 8) hdr[hn++] = ' ';
  char *dir = stg_tmpdir("st_large");
  char path[4096];
  snprintf(path, sizeof path, "%s/big.safetensors", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  uint8_t len8[8];
  for (int k = 0; k < 8; k++) len8[k] = (uint8_t)((uint64_t)hn >> (8 * k));
  assert_int_equal(write(fd, len8, 8), 8);
  assert_int_equal(write(fd, hdr, (size_t)hn), hn);
  const uint64_t total = 8 + (uint64_t)hn + 8 + big;
  uint8_t tail[4] = {0xde, 0xad, 0xbe, 0xef};
  if (ftruncate(fd, (off_t)total) != 0 || pwrite(fd, tail, 4, (off_t)(total - 4)) != 4) {
    close(fd);
    unlink(path);
    stg_rmtree(dir);
    skip();
  }
  close(fd);
  qt_st_file f;
  qt_status s = qt_st_open(path, &f);
  if (s != QT_OK) fail_msg("%s", qt_error_message());
  const qt_st_entry *e = qt_st_find(&f, "huge");
  assert_non_null(e);
  assert_int_equal(e->begin, 8);
  assert_int_equal(e->end, 8 + big);
  assert_int_equal(qt_st_entry_numel(e), (int64_t)(big / 4));
  assert_memory_equal(e->data + big - 4, tail, 4); /* last bytes of the tensor, beyond 4 GiB */
  qt_st_close(&f);
  unlink(path);
  stg_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_corpus),         cmocka_unit_test(test_python_written),
      cmocka_unit_test(test_to_f32),              cmocka_unit_test(test_sharded_model),
      cmocka_unit_test(test_index_validation),    cmocka_unit_test(test_model_dir_single_and_file),
      cmocka_unit_test(test_large_offsets),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
