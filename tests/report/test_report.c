/* Tests for train/report: report.html from metrics.jsonl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "train/report.h"

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

static void test_report_from_metrics(void **state) {
  (void)state;
  char dir[128];
  snprintf(dir, sizeof dir, "/tmp/qt_report_%ld", (long)getpid());
  assert_int_equal(qt_fs_mkdir_p(dir), QT_OK);
  char path[256];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  for (int s = 1; s <= 10; s++) {
    fprintf(f, "{\"step\":%d,\"loss\":%.3f,\"lr\":%g,\"grad_norm\":1.5,\"tokens_per_s\":%d}\n", s, 3.0 - 0.1 * s,
            1e-4 * s, 1000 + s);
    if (s % 5 == 0) fprintf(f, "{\"step\":%d,\"eval_loss\":%.3f}\n", s, 2.9 - 0.05 * s);
  }
  fputs("{\"step\":11,\"loss\":", f); /* a line cut by a kill */
  fclose(f);
  assert_int_equal(qt_report_write(dir, "run <demo>"), QT_OK);
  snprintf(path, sizeof path, "%s/report.html", dir);
  uint8_t *html;
  size_t len;
  assert_int_equal(qt_fs_read_file(path, 1 << 20, &html, &len), QT_OK);
  char *s = malloc(len + 1);
  memcpy(s, html, len);
  s[len] = '\0';
  free(html);
  assert_int_equal(count(s, "<svg"), 3);
  assert_int_equal(count(s, "<polyline class=\"series\""), 4); /* train, eval, lr, throughput */
  assert_non_null(strstr(s, "train (10 points)"));
  assert_non_null(strstr(s, "eval (2 points)"));
  assert_non_null(strstr(s, "run &lt;demo&gt;"));             /* escaped title */
  assert_non_null(strstr(s, "last train loss: 2"));
  assert_null(strstr(s, "<script"));                            /* self-contained */
  assert_null(strstr(s, "src="));
  assert_null(strstr(s, "href="));
  free(s);
  snprintf(path, sizeof path, "rm -rf %s", dir);
  assert_int_equal(system(path), 0);
}

static void test_missing_metrics(void **state) {
  (void)state;
  assert_int_equal(qt_report_write("/nonexistent/run", "x"), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent/run/metrics.jsonl"));
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_report_from_metrics), cmocka_unit_test(test_missing_metrics)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
