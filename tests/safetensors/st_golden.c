/* tests/safetensors/st_golden.c */
#include "st_golden.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/fs.h"
#include "common/sha256.h"

char *stg_path(const char *rel) {
  size_t n = strlen(QLORA_TEST_DIR) + strlen(rel) + 32;
  char *p = malloc(n);
  assert_non_null(p);
  snprintf(p, n, "%s/golden/safetensors/%s", QLORA_TEST_DIR, rel);
  return p;
}

uint8_t *stg_read(const char *path, size_t *len) {
  uint8_t *b = NULL;
  qt_status s = qt_fs_read_file(path, (size_t)1 << 30, &b, len);
  if (s != QT_OK) fail_msg("%s", qt_error_message());
  return b;
}

cJSON *stg_meta(const char *name) {
  char rel[256];
  snprintf(rel, sizeof rel, "%s.meta.json", name);
  char *p = stg_path(rel);
  size_t len;
  uint8_t *b = stg_read(p, &len);
  cJSON *j = cJSON_ParseWithLength((const char *)b, len);
  if (!j) fail_msg("%s: cannot parse", p);
  free(b);
  free(p);
  return j;
}

void stg_sha_hex(const void *data, size_t len, char hex[65]) {
  uint8_t d[32];
  qt_sha256_digest(data, len, d);
  qt_sha256_hex(d, hex);
}

void stg_check_entry(const qt_st_entry *e, const cJSON *rec) {
  const char *name = cJSON_GetObjectItemCaseSensitive(rec, "name")->valuestring;
  assert_non_null(e);
  assert_string_equal(e->name, name);
  assert_string_equal(qt_dtype_name(e->dtype), cJSON_GetObjectItemCaseSensitive(rec, "dtype")->valuestring);
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(rec, "shape");
  assert_int_equal(e->ndim, cJSON_GetArraySize(shape));
  int k = 0;
  for (const cJSON *d = shape->child; d; d = d->next, k++) assert_int_equal(e->shape[k], (int64_t)d->valuedouble);
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(rec, "begin");
  if (b) {
    assert_int_equal(e->begin, (uint64_t)b->valuedouble);
    assert_int_equal(e->end, (uint64_t)cJSON_GetObjectItemCaseSensitive(rec, "end")->valuedouble);
  }
  char hex[65];
  stg_sha_hex(e->data, (size_t)(e->end - e->begin), hex);
  if (strcmp(hex, cJSON_GetObjectItemCaseSensitive(rec, "sha256")->valuestring) != 0) {
    fail_msg("tensor '%s': bytes differ from the golden SHA-256", name);
  }
}

char *stg_tmpdir(const char *tag) {
  size_t n = strlen(QLORA_BINARY_DIR) + strlen(tag) + 64;
  char *p = malloc(n);
  assert_non_null(p);
  snprintf(p, n, "%s/test-tmp/%s.%ld", QLORA_BINARY_DIR, tag, (long)getpid());
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
  assert_int_equal(system(cmd), 0);
  if (qt_fs_mkdir_p(p) != QT_OK) fail_msg("%s", qt_error_message());
  return p;
}

void stg_rmtree(char *dir) {
  /* only ever a directory made by stg_tmpdir */
  const char *root = QLORA_BINARY_DIR "/test-tmp/";
  assert_int_equal(strncmp(dir, root, strlen(root)), 0);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  free(dir);
}
