/* Optimizer state through a safetensors checkpoint file: the state tensors of
 * qt_adamw_state_tensors are written with qt_st_write, read back with
 * qt_st_open and loaded into a fresh optimizer; the next update of both
 * (8-bit and 32-bit state, F32 and BF16 params) is bit-identical. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/half.h"
#include "common/safetensors.h"
#include "optim/optim.h"

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static float rnd(uint64_t *s) { return (float)((double)(splitmix64(s) >> 40) * 0x1p-24 - 0.5); }

enum { NP = 4 };
static const int64_t kNumel[NP] = {4096 * 3 + 17, 333, 5000, 64};

typedef struct {
  float *f32[NP];
  uint16_t *bf16[NP];
  qt_tensor t[NP];
} params;

/* params 0, 1: F32; 2, 3: BF16 */
static void params_init(params *p, uint64_t seed) {
  for (int k = 0; k < NP; k++) {
    int64_t n = kNumel[k];
    p->f32[k] = NULL;
    p->bf16[k] = NULL;
    if (k < 2) {
      p->f32[k] = malloc((size_t)n * 4);
      for (int64_t i = 0; i < n; i++) p->f32[k][i] = rnd(&seed);
      p->t[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &kNumel[k], p->f32[k]);
    } else {
      p->bf16[k] = malloc((size_t)n * 2);
      for (int64_t i = 0; i < n; i++) p->bf16[k][i] = qt_bf16_from_f32(rnd(&seed));
      p->t[k] = qt_tensor_make(QT_BF16, QT_DEV_CPU, 1, &kNumel[k], p->bf16[k]);
    }
  }
}

static void params_free(params *p) {
  for (int k = 0; k < NP; k++) {
    free(p->f32[k]);
    free(p->bf16[k]);
  }
}

static void grads_fill(float **g, uint64_t seed) {
  for (int k = 0; k < NP; k++)
    for (int64_t i = 0; i < kNumel[k]; i++) g[k][i] = rnd(&seed) * 0.01f;
}

static void test_checkpoint_roundtrip(void **st) {
  (void)st;
  char path[512];
  snprintf(path, sizeof path, "%s/test_optim_checkpoint.%d.safetensors", QLORA_BINARY_DIR, (int)getpid());
  float *g[NP];
  qt_tensor tg[NP];
  for (int k = 0; k < NP; k++) {
    g[k] = malloc((size_t)kNumel[k] * 4);
    tg[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &kNumel[k], g[k]);
  }
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  params pa, pb;
  params_init(&pa, 1);
  params_init(&pb, 1);
  qt_adamw a, b;
  assert_int_equal(qt_adamw_init(&a, &c, NP, kNumel), QT_OK);
  assert_true(a.params[0].state8 && !a.params[1].state8 && a.params[2].state8 && !a.params[3].state8);
  for (int t = 1; t <= 7; t++) {
    grads_fill(g, 100 + (uint64_t)t);
    assert_int_equal(qt_adamw_step(&a, pa.t, tg, 2e-3f, 1.0f, 1234), QT_OK);
  }
  size_t cnt = qt_adamw_state_count(&a);
  qt_st_write_tensor *w = malloc(cnt * sizeof *w);
  qt_adamw_state_tensors(&a, w);
  assert_int_equal(qt_st_write(path, w, cnt, NULL, NULL, 0), QT_OK);

  qt_st_file f;
  assert_int_equal(qt_st_open(path, &f), QT_OK);
  assert_int_equal(f.n_tensors, cnt);
  qt_st_write_tensor *r = malloc(cnt * sizeof *r);
  for (size_t i = 0; i < cnt; i++) {
    const qt_st_entry *e = &f.tensors[i];
    memset(&r[i], 0, sizeof r[i]);
    r[i].name = e->name;
    r[i].dtype = e->dtype;
    r[i].ndim = e->ndim;
    memcpy(r[i].shape, e->shape, sizeof e->shape);
    r[i].data = e->data;
  }
  /* an optimizer for other tensors refuses the file */
  int64_t other[NP] = {kNumel[0], kNumel[1] + 1, kNumel[2], kNumel[3]};
  qt_adamw x;
  assert_int_equal(qt_adamw_init(&x, &c, NP, other), QT_OK);
  assert_int_equal(qt_adamw_state_load(&x, r, cnt, path), QT_ERR_FORMAT);
  assert_non_null(strstr(qt_error_message(), "state.1.state1"));
  qt_adamw_free(&x);

  assert_int_equal(qt_adamw_init(&b, &c, NP, kNumel), QT_OK);
  assert_int_equal(qt_adamw_state_load(&b, r, cnt, path), QT_OK);
  qt_st_close(&f);
  unlink(path);
  assert_int_equal(b.step, 7);
  assert_memory_equal(a.mem, b.mem, a.mem_bytes);
  assert_memory_equal(&a.qmap1, &b.qmap1, sizeof a.qmap1);
  assert_memory_equal(&a.qmap2, &b.qmap2, sizeof a.qmap2);

  /* pb := pa (the parameters are the trainer's part of a checkpoint) */
  for (int k = 0; k < NP; k++) memcpy(pb.t[k].data, pa.t[k].data, qt_tensor_nbytes(&pa.t[k]));
  for (int t = 8; t <= 9; t++) {
    grads_fill(g, 100 + (uint64_t)t);
    assert_int_equal(qt_adamw_step(&a, pa.t, tg, 2e-3f, 0.5f, 1234), QT_OK);
    assert_int_equal(qt_adamw_step(&b, pb.t, tg, 2e-3f, 0.5f, 1234), QT_OK);
    for (int k = 0; k < NP; k++)
      assert_memory_equal(pa.t[k].data, pb.t[k].data, qt_tensor_nbytes(&pa.t[k]));
    assert_memory_equal(a.mem, b.mem, a.mem_bytes);
  }
  free(w);
  free(r);
  qt_adamw_free(&a);
  qt_adamw_free(&b);
  params_free(&pa);
  params_free(&pb);
  for (int k = 0; k < NP; k++) free(g[k]);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_checkpoint_roundtrip)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
