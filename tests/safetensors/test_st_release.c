/* qt_st_model_release (common/safetensors.h): after a mapped tensor has been
 * read, releasing it takes its pages out of the process's resident set (the
 * model loader does this tensor by tensor, so a checkpoint never adds up in
 * RAM), the bytes read again afterwards are the same, a tensor of another
 * model or of an in-memory parse is left alone. Label unit; Linux (reads
 * /proc/self/statm; the resident-set checks are skipped under an emulator). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/safetensors.h"

enum { BIG = 12 << 20 }; /* floats: 48 MiB */

/* Resident pages of this process, in bytes. */
static long long resident_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long long size = 0, res = -1;
  if (f) {
    if (fscanf(f, "%lld %lld", &size, &res) != 2) res = -1;
    fclose(f);
  }
  return res < 0 ? -1 : res * (long long)sysconf(_SC_PAGESIZE);
}

/* A sum that reads every byte of the entry (touches every page). */
static uint64_t checksum(const qt_st_entry *e) {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < e->end - e->begin; i += 64) h = (h ^ e->data[i]) * 1099511628211ull;
  return h;
}

static void test_release(void **state) {
  (void)state;
  char dir[] = "/tmp/qt_st_release_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  float *big = malloc((size_t)BIG * sizeof(float));
  assert_non_null(big);
  for (int64_t i = 0; i < BIG; i++) big[i] = (float)(i % 1000003);
  float small[5] = {1, 2, 3, 4, 5};
  qt_st_write_tensor w[2] = {{.name = "big", .dtype = QT_F32, .ndim = 1, .shape = {BIG}, .data = big},
                             {.name = "small", .dtype = QT_F32, .ndim = 1, .shape = {5}, .data = small}};
  assert_int_equal(qt_st_write(path, w, 2, NULL, NULL, 0), QT_OK);
  free(big);

  qt_st_model m;
  assert_int_equal(qt_st_model_open(path, &m), QT_OK);
  const qt_st_entry *e = qt_st_model_find(&m, "big");
  assert_non_null(e);
  long long r0 = resident_bytes();
  uint64_t h = checksum(e);
  long long r1 = resident_bytes();
  qt_st_model_release(&m, e);
  long long r2 = resident_bytes();
  printf("resident: %.1f MiB, after reading the 48 MiB tensor %.1f MiB, after releasing it %.1f MiB\n",
         (double)r0 / 1048576, (double)r1 / 1048576, (double)r2 / 1048576);
  /* under an emulator (tests/launch.sh) the resident set is the emulator's
   * and qemu-user ignores madvise hints: the bytes are still checked */
  const char *emu = getenv("QLORA_TEST_EMULATOR");
  if (!emu || !*emu) {
    assert_true(r0 > 0);
    assert_true(r1 - r0 > 40ll << 20); /* reading mapped it in */
    assert_true(r1 - r2 > 40ll << 20); /* releasing took it out again */
  }
  assert_true(checksum(e) == h);      /* and the bytes read back are the same */
  const qt_st_entry *s = qt_st_model_find(&m, "small");
  qt_st_model_release(&m, s); /* smaller than a page: nothing to drop, nothing breaks */
  float back[5];
  assert_int_equal(qt_st_entry_to_f32(s, back), QT_OK);
  assert_memory_equal(back, small, sizeof small);

  /* an entry of an in-memory parse is not another model's mapping: untouched */
  uint8_t *buf = NULL;
  size_t len = 0;
  assert_int_equal(qt_st_serialize(w + 1, 1, NULL, NULL, 0, &buf, &len), QT_OK);
  qt_st_file mem;
  assert_int_equal(qt_st_parse(buf, len, "mem", &mem), QT_OK);
  qt_st_model_release(&m, qt_st_find(&mem, "small"));
  assert_int_equal(qt_st_entry_to_f32(qt_st_find(&mem, "small"), back), QT_OK);
  assert_memory_equal(back, small, sizeof small);
  qt_st_close(&mem);
  free(buf);

  qt_st_model_close(&m);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_release)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
