/* Tests for common/arena: alignment, disjointness, reset / rewind / peak, the
 * QT_ERR_NOMEM messages, external and measuring arenas, carving named slots,
 * and the memory plan table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/arena.h"

static const size_t MiB = 1024 * 1024;

static void test_alloc_aligned_disjoint(void **state) {
  (void)state;
  qt_arena a;
  assert_int_equal(qt_arena_init(&a, "scratch", 100000), QT_OK);
  assert_int_equal(qt_arena_capacity(&a), 100032); /* rounded up to 64 */
  const size_t sizes[] = {1, 63, 64, 65, 0, 1000, 7, 4096, 129};
  enum { K = sizeof sizes / sizeof sizes[0] };
  unsigned char *p[K];
  size_t expect_used = 0;
  for (int i = 0; i < K; i++) {
    void *q;
    assert_int_equal(qt_arena_alloc(&a, sizes[i], "buf", &q), QT_OK);
    p[i] = q;
    assert_int_equal((uintptr_t)p[i] % QT_ARENA_ALIGN, 0);
    assert_ptr_equal(p[i], (unsigned char *)a.base + expect_used);
    expect_used += (sizes[i] + 63) / 64 * 64;
    assert_int_equal(qt_arena_used(&a), expect_used);
    memset(p[i], 0xA0 + i, sizes[i]);
  }
  /* Writing each buffer in full left every other buffer intact. */
  for (int i = 0; i < K; i++)
    for (size_t j = 0; j < sizes[i]; j++) assert_int_equal(p[i][j], 0xA0 + i);
  qt_arena_free(&a);
  assert_int_equal(qt_arena_capacity(&a), 0);
}

static void test_reset_peak_rewind(void **state) {
  (void)state;
  qt_arena a;
  void *q, *first;
  assert_int_equal(qt_arena_init(&a, "act", 4096), QT_OK);
  assert_int_equal(qt_arena_alloc(&a, 1000, "x", &first), QT_OK);
  assert_int_equal(qt_arena_alloc(&a, 2000, "y", &q), QT_OK);
  assert_int_equal(qt_arena_used(&a), 1024 + 2048);
  assert_int_equal(qt_arena_peak(&a), 3072);
  qt_arena_reset(&a);
  assert_int_equal(qt_arena_used(&a), 0);
  assert_int_equal(qt_arena_alloc(&a, 10, "z", &q), QT_OK);
  assert_ptr_equal(q, first); /* the same bytes again */
  assert_int_equal(qt_arena_peak(&a), 3072);
  size_t m = qt_arena_mark(&a);
  assert_int_equal(qt_arena_alloc(&a, 3000, "layer scratch", &q), QT_OK);
  assert_int_equal(qt_arena_peak(&a), 64 + 3008);
  qt_arena_rewind(&a, m);
  assert_int_equal(qt_arena_used(&a), 64);
  assert_int_equal(qt_arena_alloc(&a, 4096 - 64, "fills it", &q), QT_OK);
  assert_int_equal(qt_arena_used(&a), 4096);
  assert_int_equal(qt_arena_peak(&a), 4096);
  qt_arena_free(&a);
}

static void test_nomem_messages(void **state) {
  (void)state;
  qt_arena a;
  void *q = (void *)&a;
  assert_int_equal(qt_arena_init(&a, "activations", 2 * MiB), QT_OK);
  assert_int_equal(qt_arena_alloc(&a, MiB, "logits", &q), QT_OK);
  qt_error_clear();
  void *keep = q;
  assert_int_equal(qt_arena_alloc(&a, 3 * MiB / 2, "attn_scores", &q), QT_ERR_NOMEM);
  assert_ptr_equal(q, keep); /* untouched */
  assert_int_equal(qt_arena_used(&a), MiB);
  assert_int_equal(qt_arena_peak(&a), MiB);
  const char *msg = qt_error_message();
  assert_non_null(strstr(msg, "arena 'activations'"));
  assert_non_null(strstr(msg, "'attn_scores' of 1.50 MiB"));
  assert_non_null(strstr(msg, "1.00 of 2.00 MiB in use"));
  /* A size that overflows when rounded is refused, not wrapped. */
  assert_int_equal(qt_arena_alloc(&a, SIZE_MAX, "huge", &q), QT_ERR_NOMEM);
  assert_int_equal(qt_arena_alloc(&a, SIZE_MAX - 10, "huge", &q), QT_ERR_NOMEM);
  assert_int_equal(qt_arena_used(&a), MiB);
  /* The exact remainder still fits. */
  assert_int_equal(qt_arena_alloc(&a, MiB, "rest", &q), QT_OK);
  assert_int_equal(qt_arena_alloc(&a, 1, "one more byte", &q), QT_ERR_NOMEM);
  qt_arena_free(&a);

  /* The heap refusing the block itself. */
  qt_error_clear();
  assert_int_equal(qt_arena_init(&a, "base weights", SIZE_MAX / 2 + 12345), QT_ERR_NOMEM);
  assert_non_null(strstr(qt_error_message(), "arena 'base weights'"));
  assert_non_null(strstr(qt_error_message(), "MiB of host memory"));
  qt_arena_free(&a);
}

static void test_external_and_measure(void **state) {
  (void)state;
  /* Plan with a measuring arena, then carve a real one of exactly that size. */
  const size_t sizes[] = {4000, 1, 12345, 64};
  qt_arena m;
  qt_arena_init_measure(&m, "plan");
  void *q = (void *)&m;
  for (int i = 0; i < 4; i++) {
    assert_int_equal(qt_arena_alloc(&m, sizes[i], "b", &q), QT_OK);
    assert_null(q);
  }
  size_t need = qt_arena_peak(&m);
  assert_int_equal(need, 4032 + 64 + 12352 + 64);
  void *block = NULL;
  assert_int_equal(posix_memalign(&block, 64, need), 0);
  qt_arena e;
  qt_arena_init_external(&e, "device-like", block, need);
  for (int i = 0; i < 4; i++) assert_int_equal(qt_arena_alloc(&e, sizes[i], "b", &q), QT_OK);
  assert_int_equal(qt_arena_used(&e), need);
  assert_int_equal(qt_arena_alloc(&e, 1, "b", &q), QT_ERR_NOMEM);
  qt_arena_free(&e); /* does not free the caller's block */
  free(block);
}

static void test_carve(void **state) {
  (void)state;
  float *wte = NULL, *ln = NULL;
  int *ids = NULL;
  qt_arena_slot slots[] = {
      {"wte", 1000 * sizeof(float), (void **)&wte},
      {"ln", 3 * sizeof(float), (void **)&ln},
      {"ids", 17 * sizeof(int), (void **)&ids},
  };
  size_t need = qt_arena_slots_bytes(slots, 3);
  assert_int_equal(need, 4032 + 64 + 128);
  qt_arena a;
  assert_int_equal(qt_arena_init(&a, "params", need - 64), QT_OK);
  qt_error_clear();
  assert_int_equal(qt_arena_carve(&a, slots, 3), QT_ERR_NOMEM);
  assert_null(wte); /* all or nothing */
  assert_int_equal(qt_arena_used(&a), 0);
  assert_int_equal(qt_arena_peak(&a), 0);
  assert_non_null(strstr(qt_error_message(), "arena 'params'"));
  assert_non_null(strstr(qt_error_message(), "'ids'"));
  qt_arena_free(&a);

  assert_int_equal(qt_arena_init(&a, "params", need), QT_OK);
  assert_int_equal(qt_arena_carve(&a, slots, 3), QT_OK);
  assert_ptr_equal(wte, a.base);
  assert_ptr_equal(ln, (unsigned char *)a.base + 4032);
  assert_ptr_equal(ids, (unsigned char *)a.base + 4096);
  assert_int_equal(qt_arena_used(&a), need);
  qt_arena_free(&a);
}

static void test_plan_table(void **state) {
  (void)state;
  qt_mem_plan p;
  qt_mem_plan_init(&p);
  qt_arena act;
  qt_arena_init_measure(&act, "activations");
  void *q;
  assert_int_equal(qt_arena_alloc(&act, 3 * MiB, "x", &q), QT_OK);
  qt_arena_reset(&act);
  assert_int_equal(qt_arena_alloc(&act, MiB / 2, "y", &q), QT_OK);
  assert_int_equal(qt_mem_plan_add(&p, "base weights (nf4)", "cuda:0", 100 * MiB + MiB / 4), QT_OK);
  assert_int_equal(qt_mem_plan_add_arena(&p, &act, "cuda:0"), QT_OK);
  assert_int_equal(qt_mem_plan_add(&p, "optimizer state (paged)", "managed", 5 * MiB), QT_OK);
  assert_int_equal(qt_mem_plan_add(&p, "batch", "cpu", MiB / 8), QT_OK);
  for (int i = 0; i < 40; i++) /* grows past the first chunk */
    assert_int_equal(qt_mem_plan_add(&p, "lora", "cuda:0", 1024), QT_OK);
  assert_int_equal(qt_mem_plan_total(&p, "cuda:0"), 100 * MiB + MiB / 4 + 3 * MiB + 40 * 1024);
  assert_int_equal(qt_mem_plan_total(&p, "cpu"), MiB / 8);
  assert_int_equal(qt_mem_plan_total(&p, NULL), 108 * MiB + MiB / 4 + MiB / 8 + 40 * 1024);

  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  assert_non_null(f);
  qt_mem_plan_print(&p, f);
  fclose(f);
  /* Each entry and total on its own line, in MiB with two decimals. */
  char want[256];
  snprintf(want, sizeof want, "  %-40s %-10s %12.2f\n", "base weights (nf4)", "cuda:0", 100.25);
  assert_non_null(strstr(text, want));
  snprintf(want, sizeof want, "  %-40s %-10s %12.2f %12.2f\n", "activations", "cuda:0", 3.0, 3.0);
  assert_non_null(strstr(text, want));
  snprintf(want, sizeof want, "  %-40s %-10s %12.2f\n", "total cuda:0", "", 103.25 + 40 / 1024.0);
  assert_non_null(strstr(text, want));
  snprintf(want, sizeof want, "  %-40s %-10s %12.2f\n", "total managed", "", 5.0);
  assert_non_null(strstr(text, want));
  snprintf(want, sizeof want, "  %-40s %-10s %12.2f\n", "total cpu", "", 0.125);
  assert_non_null(strstr(text, want));
  snprintf(want, sizeof want, "  %-40s %-10s %12.2f\n", "total", "", 108.375 + 40 / 1024.0);
  assert_non_null(strstr(text, want));
  /* totals come after the entries, grand total last */
  assert_true(strstr(text, "total cuda:0") > strstr(text, "batch"));
  assert_true(strstr(text, "total cpu") < strstr(text, "  total  "));
  free(text);
  qt_mem_plan_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alloc_aligned_disjoint),
      cmocka_unit_test(test_reset_peak_rewind),
      cmocka_unit_test(test_nomem_messages),
      cmocka_unit_test(test_external_and_measure),
      cmocka_unit_test(test_carve),
      cmocka_unit_test(test_plan_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
