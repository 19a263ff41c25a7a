/* common/fs: atomic replace, mkdir -p, directory fsync, whole-file read, and
 * failure paths (messages name the path and the errno text; a failed write
 * leaves the previous file intact and no temporary behind). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/fs.h"
#include "st_golden.h"

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  closedir(d);
  return n;
}

static void expect_contents(const char *path, const char *want) {
  uint8_t *b;
  size_t len;
  assert_int_equal(qt_fs_read_file(path, 1 << 20, &b, &len), QT_OK);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(b, want, len);
  assert_int_equal(b[len], 0); /* NUL after the contents */
  free(b);
}

static void test_write_atomic(void **state) {
  (void)state;
  char *dir = stg_tmpdir("fs_atomic");
  char p[4096];
  snprintf(p, sizeof p, "%s/f.bin", dir);
  assert_int_equal(qt_fs_write_atomic(p, "first", 5), QT_OK);
  expect_contents(p, "first");
  assert_int_equal(qt_fs_write_atomic(p, "second!", 7), QT_OK);
  expect_contents(p, "second!");
  assert_int_equal(qt_fs_write_atomic(p, "", 0), QT_OK);
  expect_contents(p, "");
  assert_int_equal(count_entries(dir), 1); /* no PATH.tmp.<pid> left */
  /* streaming API + abort leaves the old file */
  qt_fs_atomic a;
  assert_int_equal(qt_fs_atomic_begin(&a, p), QT_OK);
  assert_int_equal(qt_fs_atomic_write(&a, "xyz", 3), QT_OK);
  assert_int_equal(count_entries(dir), 2);
  qt_fs_atomic_abort(&a);
  expect_contents(p, "");
  assert_int_equal(count_entries(dir), 1);
  qt_fs_atomic_abort(&a); /* no-op on a released handle */
  stg_rmtree(dir);
}

static void test_errors_name_path(void **state) {
  (void)state;
  qt_status s = qt_fs_write_atomic("/nonexistent-qt-dir/f.bin", "x", 1);
  assert_int_equal(s, QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent-qt-dir/f.bin.tmp."));
  assert_non_null(strstr(qt_error_message(), "No such file or directory"));
  uint8_t *b;
  size_t len;
  assert_int_equal(qt_fs_read_file("/nonexistent-qt-dir/f.bin", 10, &b, &len), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent-qt-dir/f.bin: cannot open: No such file"));
  assert_int_equal(qt_fs_fsync_dir("/nonexistent-qt-dir"), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent-qt-dir"));
  char *dir = stg_tmpdir("fs_errors");
  char p[4096];
  snprintf(p, sizeof p, "%s/ten", dir);
  assert_int_equal(qt_fs_write_atomic(p, "0123456789", 10), QT_OK);
  assert_int_equal(qt_fs_read_file(p, 9, &b, &len), QT_ERR_FORMAT); /* over max_len */
  assert_int_equal(qt_fs_read_file(dir, 100, &b, &len), QT_ERR_IO); /* a directory */
  assert_int_equal(qt_fs_fsync_dir(p), QT_ERR_IO);                   /* a file, not a directory */
  assert_non_null(strstr(qt_error_message(), p));
  stg_rmtree(dir);
}

/* A write that fails half-way (file size limit -> EFBIG, standing in for a full
 * disk) must leave the previous file intact and remove the temporary. Run in a
 * child so the limit does not leak into the test process. */
static void test_failed_write_keeps_old(void **state) {
  (void)state;
  char *dir = stg_tmpdir("fs_efbig");
  char p[4096];
  snprintf(p, sizeof p, "%s/keep.bin", dir);
  assert_int_equal(qt_fs_write_atomic(p, "old contents", 12), QT_OK);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {4096, 4096};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(3);
    static char big[65536];
    memset(big, 'n', sizeof big);
    qt_status s = qt_fs_write_atomic(p, big, sizeof big);
    if (s != QT_ERR_IO) _exit(1);
    if (!strstr(qt_error_message(), ".tmp.") || !strstr(qt_error_message(), "File too large")) _exit(2);
    _exit(0);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  expect_contents(p, "old contents");
  assert_int_equal(count_entries(dir), 1);
  stg_rmtree(dir);
}

static void test_mkdir_p(void **state) {
  (void)state;
  char *dir = stg_tmpdir("fs_mkdir");
  char p[4096];
  snprintf(p, sizeof p, "%s/a/b//c/", dir);
  assert_int_equal(qt_fs_mkdir_p(p), QT_OK);
  assert_int_equal(qt_fs_mkdir_p(p), QT_OK); /* existing is fine */
  snprintf(p, sizeof p, "%s/a/b/c", dir);
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(qt_fs_fsync_dir(p), QT_OK);
  snprintf(p, sizeof p, "%s/a/b/c/file", dir);
  assert_int_equal(qt_fs_fsync_parent(p), QT_OK);
  assert_int_equal(qt_fs_write_atomic(p, "x", 1), QT_OK);
  snprintf(p, sizeof p, "%s/a/b/c/file/sub", dir);
  assert_int_equal(qt_fs_mkdir_p(p), QT_ERR_IO); /* a component is a file */
  assert_non_null(strstr(qt_error_message(), "/a/b/c/file"));
  assert_int_equal(qt_fs_mkdir_p(""), QT_ERR_INVALID);
  stg_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write_atomic),
      cmocka_unit_test(test_errors_name_path),
      cmocka_unit_test(test_failed_write_keeps_old),
      cmocka_unit_test(test_mkdir_p),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
