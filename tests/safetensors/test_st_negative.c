/* Negative corpus (reliability-anchors.md 7, R1): every file under
 * golden/safetensors/bad/ (written by tools/reference/make_safetensors_fixtures.py,
 * which also records the reference reader's verdict) must be rejected by
 * qt_st_open and qt_st_parse with the recorded status and a message that names
 * the file and contains the recorded rule-specific substring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/safetensors.h"
#include "st_golden.h"

static void check_rejected(const char *file, qt_status want, const char *expect, qt_status got, const char *label,
                           const qt_st_file *f) {
  const char *msg = qt_error_message();
  if (got != want) fail_msg("%s: status %s, want %s (%s)", file, qt_status_name(got), qt_status_name(want), msg);
  if (!strstr(msg, expect)) fail_msg("%s: message \"%s\" lacks \"%s\"", file, msg, expect);
  if (strncmp(msg, label, strlen(label)) != 0) fail_msg("%s: message \"%s\" does not start with the file", file, msg);
  /* On error the output is left empty. */
  assert_null(f->tensors);
  assert_null(f->map);
  assert_int_equal(f->n_tensors, 0);
}

static void test_bad_corpus(void **state) {
  (void)state;
  cJSON *meta = stg_meta("bad");
  const cJSON *cases = cJSON_GetObjectItemCaseSensitive(meta, "cases");
  int n = 0, n_format = 0;
  const char *distinct[128];
  int n_distinct = 0;
  for (const cJSON *c = cases->child; c; c = c->next) {
    const char *rel = cJSON_GetObjectItemCaseSensitive(c, "file")->valuestring;
    const char *expect = cJSON_GetObjectItemCaseSensitive(c, "expect")->valuestring;
    const char *st = cJSON_GetObjectItemCaseSensitive(c, "status")->valuestring;
    qt_status want = strcmp(st, "format") == 0 ? QT_ERR_FORMAT : QT_ERR_UNSUPPORTED;
    char *path = stg_path(rel);
    qt_st_file f;
    qt_error_clear();
    qt_status s = qt_st_open(path, &f);
    check_rejected(rel, want, expect, s, path, &f);
    /* The in-memory parser gives the same verdict and message (other label). */
    size_t len;
    uint8_t *buf = stg_read(path, &len);
    qt_error_clear();
    s = qt_st_parse(buf, len, "mem", &f);
    check_rejected(rel, want, expect, s, "mem: ", &f);
    free(buf);
    free(path);
    n++;
    n_format += want == QT_ERR_FORMAT;
    int seen = 0;
    for (int k = 0; k < n_distinct; k++) seen |= strcmp(distinct[k], expect) == 0;
    if (!seen && n_distinct < 128) distinct[n_distinct++] = expect;
  }
  print_message("bad corpus: %d files rejected (%d format, %d unsupported), %d distinct messages\n", n, n_format,
                n - n_format, n_distinct);
  assert_true(n >= 25);
  assert_true(n_distinct >= 25);
  cJSON_Delete(meta);
}

/* Every proper prefix of a valid file is rejected (truncation at any byte),
 * and every single-byte change of its 8-byte length field too. */
static void test_truncations(void **state) {
  (void)state;
  char *path = stg_path("py_all_dtypes.safetensors");
  size_t len;
  uint8_t *buf = stg_read(path, &len);
  qt_st_file f;
  assert_int_equal(qt_st_parse(buf, len, "whole", &f), QT_OK);
  qt_st_close(&f);
  for (size_t k = 0; k < len; k++) {
    qt_status s = qt_st_parse(buf, k, "prefix", &f);
    if (s != QT_ERR_FORMAT) fail_msg("prefix of %zu bytes: %s", k, qt_status_name(s));
  }
  for (int b = 0; b < 8; b++) {
    uint8_t save = buf[b];
    buf[b] = (uint8_t)(save + 1);
    assert_int_equal(qt_st_parse(buf, len, "n", &f), QT_ERR_FORMAT);
    buf[b] = save;
  }
  free(buf);
  free(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_corpus),
      cmocka_unit_test(test_truncations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
