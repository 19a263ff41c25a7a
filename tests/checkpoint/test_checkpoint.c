/* Tests for train/checkpoint: atomic directories, MANIFEST verification,
 * fallback to the newest complete checkpoint, pruning, and a write failure
 * (file-size limit standing in for a full disk) that keeps the previous
 * checkpoint intact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "train/checkpoint.h"

static char root[256];

static void write_text(const char *path, const char *text) {
  assert_int_equal(qt_fs_write_atomic(path, text, strlen(text)), QT_OK);
}

/* Writes a checkpoint with two files whose contents name the step. */
static qt_status save(int64_t step, int64_t keep) {
  qt_ckpt_writer w;
  QT_TRY(qt_ckpt_begin(&w, root, step));
  char p[4200], body[64];
  snprintf(body, sizeof body, "adapter of step %lld\n", (long long)step);
  qt_ckpt_file_path(&w, "adapter_model.safetensors", p, sizeof p);
  qt_status s = qt_fs_write_atomic(p, body, strlen(body));
  if (s == QT_OK) {
    qt_ckpt_file_path(&w, "trainer_state.json", p, sizeof p);
    s = qt_fs_write_atomic(p, "{}\n", 3);
  }
  if (s != QT_OK) {
    qt_ckpt_abort(&w);
    return s;
  }
  return qt_ckpt_commit(&w, keep);
}

static int count_entries(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
  closedir(d);
  return n;
}

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "/tmp/qt_ckpt_test_%ld", (long)getpid());
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", root);
  return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state) { return setup(state); }

static void test_save_verify_find(void **state) {
  (void)state;
  bool found = true;
  char path[4200];
  assert_int_equal(qt_ckpt_find_latest(root, path, sizeof path, &found), QT_OK);
  assert_false(found); /* no output dir yet */
  assert_int_equal(save(10, 0), QT_OK);
  assert_int_equal(save(20, 0), QT_OK);
  assert_int_equal(qt_ckpt_find_latest(root, path, sizeof path, &found), QT_OK);
  assert_true(found);
  char want[300];
  snprintf(want, sizeof want, "%s/checkpoint-000020", root);
  assert_string_equal(path, want);
  assert_int_equal(qt_ckpt_verify(path), QT_OK);
  char latest[300];
  snprintf(latest, sizeof latest, "%s/latest", root);
  uint8_t *buf;
  size_t len;
  assert_int_equal(qt_fs_read_file(latest, 1024, &buf, &len), QT_OK);
  assert_int_equal(len, strlen("checkpoint-000020\n"));
  assert_memory_equal(buf, "checkpoint-000020\n", len);
  free(buf);
  assert_int_equal(count_entries(root, ".tmp-"), 0);
}

static void test_corrupt_and_missing_fall_back(void **state) {
  (void)state;
  assert_int_equal(save(1, 0), QT_OK);
  assert_int_equal(save(2, 0), QT_OK);
  assert_int_equal(save(3, 0), QT_OK);
  char p[300], path[4200];
  bool found;
  /* flip one byte in the newest: it must not load */
  snprintf(p, sizeof p, "%s/checkpoint-000003/adapter_model.safetensors", root);
  write_text(p, "adapter of step 9\n");
  snprintf(p, sizeof p, "%s/checkpoint-000003", root);
  assert_int_equal(qt_ckpt_verify(p), QT_ERR_FORMAT);
  assert_non_null(strstr(qt_error_message(), "adapter_model.safetensors: corrupt"));
  assert_int_equal(qt_ckpt_find_latest(root, path, sizeof path, &found), QT_OK);
  assert_true(found);
  assert_non_null(strstr(path, "checkpoint-000002"));
  /* a missing file in the next one */
  snprintf(p, sizeof p, "%s/checkpoint-000002/trainer_state.json", root);
  assert_int_equal(unlink(p), 0);
  assert_int_equal(qt_ckpt_find_latest(root, path, sizeof path, &found), QT_OK);
  assert_true(found);
  assert_non_null(strstr(path, "checkpoint-000001"));
  snprintf(p, sizeof p, "%s/checkpoint-000002", root);
  assert_int_equal(qt_ckpt_verify(p), QT_ERR_FORMAT);
  assert_non_null(strstr(qt_error_message(), "trainer_state.json: missing"));
  /* an unlisted extra file */
  snprintf(p, sizeof p, "%s/checkpoint-000001/extra.bin", root);
  write_text(p, "x");
  assert_int_equal(qt_ckpt_find_latest(root, path, sizeof path, &found), QT_OK);
  assert_false(found);
  /* a directory without MANIFEST (as a crash could leave if renamed early) */
  snprintf(p, sizeof p, "%s/checkpoint-000050", root);
  assert_int_equal(mkdir(p, 0755), 0);
  assert_int_equal(qt_ckpt_verify(p), QT_ERR_FORMAT);
  assert_non_null(strstr(qt_error_message(), "incomplete checkpoint (no readable MANIFEST)"));
}

static void test_prune_and_resave(void **state) {
  (void)state;
  for (int s = 1; s <= 6; s++) assert_int_equal(save(s * 100, 3), QT_OK);
  assert_int_equal(count_entries(root, "checkpoint-"), 3);
  char p[300];
  snprintf(p, sizeof p, "%s/checkpoint-000400", root);
  assert_int_equal(qt_ckpt_verify(p), QT_OK);
  snprintf(p, sizeof p, "%s/checkpoint-000300", root);
  struct stat st;
  assert_int_not_equal(stat(p, &st), 0);
  /* saving the same step again replaces it */
  assert_int_equal(save(600, 3), QT_OK);
  assert_int_equal(count_entries(root, "checkpoint-"), 3);
  assert_int_equal(count_entries(root, ".trash-"), 0);
  /* a stale temporary directory of a dead writer is cleaned by prune */
  snprintf(p, sizeof p, "%s/.tmp-checkpoint-000700-999999999", root);
  assert_int_equal(mkdir(p, 0755), 0);
  assert_int_equal(qt_ckpt_prune(root, 3), QT_OK);
  assert_int_equal(count_entries(root, ".tmp-"), 0);
}

static void test_write_failure_keeps_previous(void **state) {
  (void)state;
  assert_int_equal(save(1, 2), QT_OK);
  /* A file-size limit makes write() fail with EFBIG the way a full disk
   * fails with ENOSPC: the writer must stop with a clear error, leave no
   * checkpoint-2, and keep checkpoint-1 loadable. */
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = 8;
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  qt_status s = save(2, 2);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  assert_int_equal(s, QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "write failed"));
  char path[4200];
  bool found;
  assert_int_equal(qt_ckpt_find_latest(root, path, sizeof path, &found), QT_OK);
  assert_true(found);
  assert_non_null(strstr(path, "checkpoint-000001"));
  assert_int_equal(count_entries(root, "checkpoint-"), 1);
  assert_int_equal(count_entries(root, ".tmp-"), 0);
}

static void test_step_names(void **state) {
  (void)state;
  assert_int_equal(qt_ckpt_step_of("checkpoint-000200"), 200);
  assert_int_equal(qt_ckpt_step_of("checkpoint-"), -1);
  assert_int_equal(qt_ckpt_step_of("checkpoint-12a"), -1);
  assert_int_equal(qt_ckpt_step_of("ckpt-1"), -1);
  assert_int_equal(qt_ckpt_step_of("checkpoint-99999999999999999999999"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_save_verify_find, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_and_missing_fall_back, setup, teardown),
      cmocka_unit_test_setup_teardown(test_prune_and_resave, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_failure_keeps_previous, setup, teardown),
      cmocka_unit_test(test_step_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
