/* Tests for optim/ AdamW: analytic cases, golden trajectories
 * (tests/golden/optim/, made by tools/reference/make_optim_fixtures.py:
 * 32-bit against torch.optim.AdamW with bitsandbytes' decay order, 8-bit
 * against tools/reference/bnb_8bit_ref.py, the port of bitsandbytes' CUDA
 * kernel), the min_8bit_size rule, state memory, bf16 stochastic rounding,
 * thread-count independence and state save/load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <float.h>
#include <omp.h>

#include "common/half.h"
#include "optim/optim.h"
#include "quant/quant.h"

#define GOLDEN QLORA_TEST_DIR "/golden/optim/"

/* ---- inputs: splitmix64, as tools/reference/bnb_8bit_ref.py ---- */

static uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* sym_uniform(seed, t, n)[i] and its splitmix word. */
static float sym_uniform(uint64_t seed, uint64_t t, uint64_t i, uint64_t *word) {
  uint64_t z = splitmix64((seed << 48) | (t << 32) | i);
  if (word) *word = z;
  float u = (float)(z >> 40) * 0x1p-24f;
  return 2.0f * u - 1.0f;
}

/* ---- fixture reading ---- */

typedef struct {
  uint8_t *buf;
  size_t len, at;
} reader;

static void rd_open(reader *r, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s (run tools/reference/make_optim_fixtures.py)", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  r->buf = malloc((size_t)len);
  assert_non_null(r->buf);
  assert_int_equal(fread(r->buf, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  r->len = (size_t)len;
  r->at = 0;
}

static void rd(reader *r, void *dst, size_t bytes) {
  assert_true(r->at + bytes <= r->len);
  memcpy(dst, r->buf + r->at, bytes);
  r->at += bytes;
}

static uint32_t rd_u32(reader *r) {
  uint32_t v;
  rd(r, &v, 4);
  return v;
}

static float rd_f32(reader *r) {
  float v;
  rd(r, &v, 4);
  return v;
}

static uint32_t f2u(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static uint64_t fnv1a64(uint64_t h, const void *data, size_t n) {
  const uint8_t *b = data;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

/* 32-bit tolerance of the fixture script: |a-b| <= 1e-6|b| + 1e-7. */
static int close32(float a, float b) { return fabs((double)a - b) <= 1e-6 * fabs((double)b) + 1e-7; }

/* ---- analytic ---- */

static qt_adamw_config cfg_zero(int bits) {
  qt_adamw_config c;
  qt_adamw_config_default(&c, bits);
  c.beta1 = 0.0f;
  c.beta2 = 0.0f;
  c.eps = 0.0f;
  c.weight_decay = 0.0f;
  c.min_8bit_size = 0;
  return c;
}

/* beta1 = beta2 = eps = wd = 0, lr = 1: m = g, v = g², p -= g/|g| = sign(g). */
static void test_analytic_sign_step(void **st) {
  (void)st;
  for (int bits = 8; bits <= 32; bits += 24) {
    int64_t n = 1000;
    float *p = malloc(n * 4), *g = malloc(n * 4), *p0 = malloc(n * 4);
    for (int64_t i = 0; i < n; i++) {
      p0[i] = p[i] = sym_uniform(1, 0, (uint64_t)i, NULL);
      g[i] = sym_uniform(1, 1, (uint64_t)i, NULL) * 8.0f;
      if (g[i] == 0.0f) g[i] = 1.0f;
    }
    qt_adamw_config c = cfg_zero(bits);
    qt_adamw opt;
    assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
    assert_int_equal(opt.params[0].state8, bits == 8);
    qt_tensor tp = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p);
    qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
    for (int s = 1; s <= 3; s++) {
      assert_int_equal(qt_adamw_step(&opt, &tp, &tg, 1.0f, 1.0f, 0), QT_OK);
      for (int64_t i = 0; i < n; i++) {
        float want = p0[i] - (float)s * (g[i] > 0 ? 1.0f : -1.0f);
        if (p[i] != want) fail_msg("bits %d step %d elem %lld: %.9g != %.9g", bits, s, (long long)i, p[i], want);
      }
    }
    qt_adamw_free(&opt);
    free(p);
    free(g);
    free(p0);
  }
}

/* Decoupled decay AFTER the step: p = (p - lr*u) * (1 - lr*wd). With beta = eps
 * = 0, lr = wd = 0.5, p = 2, g = 1: (2 - 0.5) * 0.75 = 1.125; torch's order
 * would give 2*0.75 - 0.5 = 1.0. */
static void test_analytic_decay_order(void **st) {
  (void)st;
  for (int bits = 8; bits <= 32; bits += 24) {
    int64_t n = 300;
    float p[300], g[300];
    for (int i = 0; i < 300; i++) {
      p[i] = 2.0f;
      g[i] = 1.0f;
    }
    qt_adamw_config c = cfg_zero(bits);
    c.weight_decay = 0.5f;
    qt_adamw opt;
    assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
    qt_tensor tp = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p);
    qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
    assert_int_equal(qt_adamw_step(&opt, &tp, &tg, 0.5f, 1.0f, 0), QT_OK);
    float a = 2.0f - 0.5f, want = a * (1.0f - 0.5f * 0.5f);
    for (int i = 0; i < 300; i++) assert_true(p[i] == want);
    qt_adamw_free(&opt);
  }
}

/* Zero gradient, eps > 0: the step is 0 and only the decay acts. */
static void test_analytic_decay_only(void **st) {
  (void)st;
  for (int bits = 8; bits <= 32; bits += 24) {
    int64_t n = 5000;
    float *p = malloc(n * 4), *g = calloc((size_t)n, 4), *p0 = malloc(n * 4);
    for (int64_t i = 0; i < n; i++) p0[i] = p[i] = sym_uniform(2, 0, (uint64_t)i, NULL);
    qt_adamw_config c;
    qt_adamw_config_default(&c, bits);
    qt_adamw opt;
    assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
    qt_tensor tp = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p);
    qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
    float lr = 3e-3f;
    assert_int_equal(qt_adamw_step(&opt, &tp, &tg, lr, 1.0f, 0), QT_OK);
    for (int64_t i = 0; i < n; i++) assert_true(p[i] == p0[i] * (1.0f - lr * c.weight_decay));
    if (bits == 8) {
      /* all-zero blocks: absmax 0, m code 127 -> NaN search -> 0 -> sign fix-up -> 255 */
      for (int64_t b = 0; b < opt.params[0].nblocks; b++) {
        assert_true(opt.params[0].absmax1[b] == 0.0f && opt.params[0].absmax2[b] == 0.0f);
      }
      for (int64_t i = 0; i < n; i++) {
        assert_int_equal(opt.params[0].code1[i], 255);
        assert_int_equal(opt.params[0].code2[i], 0);
      }
    }
    qt_adamw_free(&opt);
    free(p);
    free(g);
    free(p0);
  }
}

/* First step from zero state, default betas: the 8-bit update sees the same
 * fp32 states as the 32-bit one (m exactly; v up to the rounding of
 * ((1-b2)g)g vs (1-b2)(g g)), absmax1 = max |m| per block exactly, codes keep
 * the sign of m, decoded states are within one code step. */
static void test_8bit_vs_32bit_first_step(void **st) {
  (void)st;
  int64_t n = 256 * 9 + 77;
  float *p8 = malloc(n * 4), *p32 = malloc(n * 4), *g = malloc(n * 4);
  for (int64_t i = 0; i < n; i++) {
    p8[i] = p32[i] = sym_uniform(3, 0, (uint64_t)i, NULL);
    g[i] = sym_uniform(3, 1, (uint64_t)i, NULL) * ldexpf(1.0f, -(int)(i / 256));
  }
  qt_adamw_config c8, c32;
  qt_adamw_config_default(&c8, 8);
  qt_adamw_config_default(&c32, 32);
  c8.min_8bit_size = 0;
  qt_adamw o8, o32;
  assert_int_equal(qt_adamw_init(&o8, &c8, 1, &n), QT_OK);
  assert_int_equal(qt_adamw_init(&o32, &c32, 1, &n), QT_OK);
  assert_true(o8.params[0].state8);
  qt_tensor t8 = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p8);
  qt_tensor t32 = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p32);
  qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
  assert_int_equal(qt_adamw_step(&o8, &t8, &tg, 1e-3f, 1.0f, 0), QT_OK);
  assert_int_equal(qt_adamw_step(&o32, &t32, &tg, 1e-3f, 1.0f, 0), QT_OK);
  const qt_adamw_param *q = &o8.params[0];
  const float *m = o32.params[0].state1, *v = o32.params[0].state2;
  for (int64_t b = 0; b < q->nblocks; b++) {
    float mx1 = 0, mx2 = 0;
    for (int64_t i = b * 256; i < n && i < (b + 1) * 256; i++) {
      mx1 = fmaxf(mx1, fabsf(m[i]));
      mx2 = fmaxf(mx2, fabsf(v[i]));
    }
    assert_true(q->absmax1[b] == mx1);
    assert_true(fabsf(q->absmax2[b] - mx2) <= 1e-6f * mx2);
  }
  for (int64_t i = 0; i < n; i++) {
    assert_true(close32(p8[i], p32[i]));
    float d1 = o8.qmap1.code[q->code1[i]] * q->absmax1[i / 256];
    float d2 = o8.qmap2.code[q->code2[i]] * q->absmax2[i / 256];
    if (m[i] != 0.0f) assert_int_equal(signbit(d1) != 0, signbit(m[i]) != 0);
    /* the dynamic map's largest gap is 1/64 of absmax (linspace(0.1, 1, 65) / 2 step) */
    assert_true(fabsf(d1 - m[i]) <= q->absmax1[i / 256] / 64.0f);
    assert_true(fabsf(d2 - v[i]) <= q->absmax2[i / 256] / 64.0f);
  }
  qt_adamw_free(&o8);
  qt_adamw_free(&o32);
  free(p8);
  free(p32);
  free(g);
}

/* A non-finite gradient element: the 8-bit kernel zeroes its states and leaves
 * its parameter unchanged; its neighbours are updated. */
static void test_8bit_nonfinite_element(void **st) {
  (void)st;
  int64_t n = 4096;
  float *p = malloc(n * 4), *g = malloc(n * 4), *p0 = malloc(n * 4);
  for (int64_t i = 0; i < n; i++) {
    p0[i] = p[i] = 1.0f;
    g[i] = 0.5f;
  }
  g[5] = NAN;
  g[600] = INFINITY;
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  qt_adamw opt;
  assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
  qt_tensor tp = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p);
  qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
  assert_int_equal(qt_adamw_step(&opt, &tp, &tg, 1e-2f, 1.0f, 0), QT_OK);
  const qt_adamw_param *q = &opt.params[0];
  assert_true(p[5] == 1.0f && p[600] == 1.0f && p[6] < 1.0f && p[601] < 1.0f);
  assert_true(opt.qmap1.code[q->code1[5]] == 0.0f && opt.qmap2.code[q->code2[5]] == 0.0f);
  assert_true(opt.qmap1.code[q->code1[600]] == 0.0f && opt.qmap2.code[q->code2[600]] == 0.0f);
  qt_adamw_free(&opt);
  free(p);
  free(g);
  free(p0);
}

/* The threshold encoder equals bitsandbytes' search (quant's _ref) for
 * random bit patterns, random values in [-1, 1], every code value, every
 * threshold and its predecessor, and the special values. */
static void test_qmap_encode_equals_ref(void **st) {
  (void)st;
  for (int sgn = 0; sgn < 2; sgn++) {
    float code[256];
    qt_quant_dynamic_map(sgn == 1, code);
    qt_adamw_qmap m;
    qt_adamw_qmap_make(&m, code);
    float special[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f,
                       FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX, 1.0000001f, -0.9999999f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
      assert_int_equal(qt_adamw_qmap_encode(&m, special[i]), qt_quant_8bit_encode_ref(code, special[i]));
    for (int k = 0; k < 256; k++) {
      float xs[3] = {code[k], nextafterf(code[k], -INFINITY), nextafterf(code[k], INFINITY)};
      for (int j = 0; j < 3; j++)
        assert_int_equal(qt_adamw_qmap_encode(&m, xs[j]), qt_quant_8bit_encode_ref(code, xs[j]));
      if (k == 0 || isnan(m.thr[k])) continue;
      assert_true(qt_quant_8bit_encode_ref(code, m.thr[k]) >= k);
      assert_true(qt_quant_8bit_encode_ref(code, nextafterf(m.thr[k], -INFINITY)) < k);
      assert_true(m.thr[k] >= m.thr[k - 1]);
    }
    uint64_t s = 99;
    for (int i = 0; i < 400000; i++) {
      uint64_t z = splitmix64(s++);
      uint32_t u = (uint32_t)z;
      float x;
      memcpy(&x, &u, 4);
      float y = (float)((double)(z >> 40) * 0x1p-23 - 1.0);
      assert_int_equal(qt_adamw_qmap_encode(&m, x), qt_quant_8bit_encode_ref(code, x));
      assert_int_equal(qt_adamw_qmap_encode(&m, y), qt_quant_8bit_encode_ref(code, y));
    }
  }
}

/* ---- golden trajectories ---- */

static void test_golden_32bit(void **st) {
  (void)st;
  reader r;
  rd_open(&r, GOLDEN "adamw32_traj.bin");
  char magic[8];
  rd(&r, magic, 8);
  assert_memory_equal(magic, "QTADAM32", 8);
  uint32_t nt = rd_u32(&r), steps = rd_u32(&r), seed = rd_u32(&r), nck = rd_u32(&r);
  qt_adamw_config c;
  qt_adamw_config_default(&c, 32);
  c.beta1 = rd_f32(&r);
  c.beta2 = rd_f32(&r);
  c.eps = rd_f32(&r);
  c.weight_decay = rd_f32(&r);
  int64_t numel[8];
  assert_true(nt <= 8);
  int64_t total = 0;
  for (uint32_t k = 0; k < nt; k++) total += numel[k] = rd_u32(&r);
  float *lr = malloc(steps * 4), *gs = malloc(steps * 4);
  rd(&r, lr, steps * 4);
  rd(&r, gs, steps * 4);
  uint32_t ck[64];
  assert_true(nck <= 64);
  rd(&r, ck, nck * 4);

  float *p = malloc(total * 4), *g = malloc(total * 4), *want = malloc(total * 4);
  qt_tensor tp[8], tg[8];
  for (uint32_t k = 0, o = 0; k < nt; o += (uint32_t)numel[k], k++) {
    for (int64_t i = 0; i < numel[k]; i++)
      p[o + i] = sym_uniform(seed + 16 * k, 0, (uint64_t)i, NULL) * 0.5f;
    tp[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &numel[k], p + o);
    tg[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &numel[k], g + o);
  }
  qt_adamw opt;
  assert_int_equal(qt_adamw_init(&opt, &c, nt, numel), QT_OK);
  uint32_t next = 0;
  double worst = 0;
  for (uint32_t t = 1; t <= steps; t++) {
    for (uint32_t k = 0, o = 0; k < nt; o += (uint32_t)numel[k], k++)
      for (int64_t i = 0; i < numel[k]; i++)
        g[o + i] = sym_uniform(seed + 16 * k, t, (uint64_t)i, NULL) * ldexpf(1.0f, -(int)(k + t % 3));
    assert_int_equal(qt_adamw_step(&opt, tp, tg, lr[t - 1], gs[t - 1], 0), QT_OK);
    if (next < nck && ck[next] == t) {
      rd(&r, want, total * 4);
      for (int64_t i = 0; i < total; i++) {
        double e = fabs((double)p[i] - want[i]) / (1e-6 * fabs((double)want[i]) + 1e-7);
        worst = e > worst ? e : worst;
        if (!close32(p[i], want[i])) fail_msg("step %u elem %lld: %.9g vs torch %.9g", t, (long long)i, p[i], want[i]);
      }
      next++;
    }
  }
  assert_int_equal(next, nck);
  for (int which = 0; which < 2; which++) {
    rd(&r, want, total * 4);
    for (uint32_t k = 0, o = 0; k < nt; o += (uint32_t)numel[k], k++) {
      const float *s = which ? opt.params[k].state2 : opt.params[k].state1;
      for (int64_t i = 0; i < numel[k]; i++) assert_true(close32(s[i], want[o + i]));
    }
  }
  assert_int_equal(r.at, r.len);
  printf("adamw32 vs torch: worst error %.3f of the tolerance\n", worst);
  qt_adamw_free(&opt);
  free(r.buf);
  free(lr);
  free(gs);
  free(p);
  free(g);
  free(want);
}

static void grads8(float *g, int64_t n, uint32_t seed, uint32_t t) {
  for (int64_t i = 0; i < n; i++) {
    uint64_t z;
    int64_t blk = i / 256;
    float v = sym_uniform(seed, t, (uint64_t)i, &z);
    int e = -(int)(blk % 13) + ((int)(t % 5) - 2);
    v = v * ldexpf(1.0f, e);
    if ((z & 0xFF) < 8) v = 0.0f;
    if (blk == 3) v = 0.0f;
    if (t >= 10 && t <= 20 && blk == 5) v = 0.0f;
    g[i] = v;
  }
  if (t == 30) {
    g[7] = NAN;
    g[300] = INFINITY;
    g[301] = -INFINITY;
  }
  if (t == 40)
    for (int64_t i = (n - 1) / 256 * 256; i < n; i++) g[i] = NAN;
}

static void test_golden_8bit(void **st) {
  (void)st;
  reader r;
  rd_open(&r, GOLDEN "adamw8_traj.bin");
  char magic[8];
  rd(&r, magic, 8);
  assert_memory_equal(magic, "QTADAM8\0", 8);
  uint32_t n32 = rd_u32(&r), steps = rd_u32(&r), seed = rd_u32(&r), ndump = rd_u32(&r);
  int64_t n = n32, nb = (n + 255) / 256;
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  c.beta1 = rd_f32(&r);
  c.beta2 = rd_f32(&r);
  c.eps = rd_f32(&r);
  c.weight_decay = rd_f32(&r);
  float qm1[256], qm2[256];
  rd(&r, qm1, sizeof qm1);
  rd(&r, qm2, sizeof qm2);
  float *lr = malloc(steps * 4), *gs = malloc(steps * 4);
  rd(&r, lr, steps * 4);
  rd(&r, gs, steps * 4);
  uint32_t dump[64];
  assert_true(ndump <= 64);
  rd(&r, dump, ndump * 4);
  size_t per_step_at = r.at, dump_at = r.at + steps * (8 + 8 * (size_t)nb);

  qt_adamw opt;
  assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
  /* quant's dynamic maps are bitsandbytes' create_dynamic_map, bit for bit */
  for (int j = 0; j < 256; j++) {
    if (f2u(opt.qmap1.code[j]) != f2u(qm1[j])) fail_msg("signed map [%d]: %a vs bnb %a", j, opt.qmap1.code[j], qm1[j]);
    if (f2u(opt.qmap2.code[j]) != f2u(qm2[j])) fail_msg("unsigned map [%d]: %a vs bnb %a", j, opt.qmap2.code[j], qm2[j]);
  }
  const qt_adamw_param *q = &opt.params[0];
  assert_true(q->state8 && q->nblocks == nb);
  float *p = malloc(n * 4), *g = malloc(n * 4), *a = malloc(nb * 4), *wp = malloc(n * 4);
  uint8_t *wc = malloc(n);
  for (int64_t i = 0; i < n; i++) p[i] = sym_uniform(seed, 0, (uint64_t)i, NULL) * 0.5f;
  qt_tensor tp = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p);
  qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
  uint32_t next = 0;
  for (uint32_t t = 1; t <= steps; t++) {
    grads8(g, n, seed, t);
    assert_int_equal(qt_adamw_step(&opt, &tp, &tg, lr[t - 1], gs[t - 1], 0), QT_OK);
    r.at = per_step_at + (t - 1) * (8 + 8 * (size_t)nb);
    uint64_t hwant;
    rd(&r, &hwant, 8);
    rd(&r, a, nb * 4);
    for (int64_t b = 0; b < nb; b++)
      if (f2u(a[b]) != f2u(q->absmax1[b])) fail_msg("step %u absmax1[%lld]: %a vs ref %a", t, (long long)b, q->absmax1[b], a[b]);
    rd(&r, a, nb * 4);
    for (int64_t b = 0; b < nb; b++)
      if (f2u(a[b]) != f2u(q->absmax2[b])) fail_msg("step %u absmax2[%lld]: %a vs ref %a", t, (long long)b, q->absmax2[b], a[b]);
    if (next < ndump && dump[next] == t) {
      r.at = dump_at + next * (size_t)n * 6;
      rd(&r, wc, n);
      for (int64_t i = 0; i < n; i++)
        if (wc[i] != q->code1[i]) fail_msg("step %u code1[%lld]: %u vs ref %u", t, (long long)i, q->code1[i], wc[i]);
      rd(&r, wc, n);
      for (int64_t i = 0; i < n; i++)
        if (wc[i] != q->code2[i]) fail_msg("step %u code2[%lld]: %u vs ref %u", t, (long long)i, q->code2[i], wc[i]);
      rd(&r, wp, n * 4);
      for (int64_t i = 0; i < n; i++)
        if (f2u(wp[i]) != f2u(p[i])) fail_msg("step %u p[%lld]: %a vs ref %a", t, (long long)i, p[i], wp[i]);
      next++;
    }
    uint64_t h = 0xCBF29CE484222325ull;
    h = fnv1a64(h, q->code1, (size_t)n);
    h = fnv1a64(h, q->code2, (size_t)n);
    h = fnv1a64(h, q->absmax1, (size_t)nb * 4);
    h = fnv1a64(h, q->absmax2, (size_t)nb * 4);
    h = fnv1a64(h, p, (size_t)n * 4);
    if (h != hwant) fail_msg("step %u: codes/absmax/params differ from the reference port", t);
  }
  assert_int_equal(next, ndump);
  assert_int_equal(dump_at + ndump * (size_t)n * 6, r.len);
  qt_adamw_free(&opt);
  free(r.buf);
  free(lr);
  free(gs);
  free(p);
  free(g);
  free(a);
  free(wp);
  free(wc);
}

/* ---- rules, memory, threads, bf16, save/load ---- */

static void test_min_8bit_size(void **st) {
  (void)st;
  int64_t numels[3] = {4095, 4096, 1};
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  qt_adamw opt;
  assert_int_equal(qt_adamw_init(&opt, &c, 3, numels), QT_OK);
  assert_false(opt.params[0].state8);
  assert_true(opt.params[1].state8);
  assert_false(opt.params[2].state8);
  assert_int_equal(opt.params[1].nblocks, 16);
  qt_adamw_free(&opt);
  qt_adamw_config_default(&c, 32);
  assert_int_equal(qt_adamw_init(&opt, &c, 3, numels), QT_OK);
  for (int i = 0; i < 3; i++) assert_false(opt.params[i].state8);
  qt_adamw_free(&opt);
  c.bits = 4;
  assert_int_equal(qt_adamw_init(&opt, &c, 3, numels), QT_ERR_CONFIG);
}

static void test_config_names(void **st) {
  (void)st;
  qt_adamw_config c;
  assert_true(qt_adamw_config_from_name("paged_adamw_8bit", &c));
  assert_true(c.bits == 8 && c.paged && c.min_8bit_size == 4096 && c.weight_decay == 1e-2f);
  assert_true(qt_adamw_config_from_name("adamw_32bit", &c));
  assert_true(c.bits == 32 && !c.paged);
  assert_false(qt_adamw_config_from_name("adamw_torch", &c));
#ifndef QLORA_HAVE_CUDA
  /* a CUDA optimizer in a build without the CUDA backend is a clear error */
  qt_adamw_config_default(&c, 8);
  c.device = QT_DEV_CUDA;
  int64_t n = 10;
  qt_adamw opt;
  assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_ERR_UNSUPPORTED);
  assert_null(opt.mem);
#endif
}

static void test_state_memory(void **st) {
  (void)st;
  int64_t n = 1 << 20;
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  qt_adamw opt;
  assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
  double bpp = (double)qt_adamw_state_bytes(&opt) / (double)n;
  double alloc = (double)opt.mem_bytes / (double)n;
  printf("8-bit state: %.5f bytes/param (allocated %.5f)\n", bpp, alloc);
  assert_true(bpp <= 2.04 && alloc <= 2.04);
  qt_adamw_free(&opt);
  qt_adamw_config_default(&c, 32);
  assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
  assert_true(qt_adamw_state_bytes(&opt) == 8u * (size_t)n);
  qt_adamw_free(&opt);
  /* qt_adamw_alloc_bytes (a plan's count) equals what init allocates, for
   * tensors below and above min_8bit_size, 8- and 32-bit */
  const int64_t mix[4] = {100, 4096, 65536 + 7, 1};
  for (int bits = 8; bits <= 32; bits += 24) {
    qt_adamw_config_default(&c, bits);
    assert_int_equal(qt_adamw_init(&opt, &c, 4, mix), QT_OK);
    assert_true(qt_adamw_alloc_bytes(&c, 4, mix) == opt.mem_bytes);
    qt_adamw_free(&opt);
  }
}

/* The same update with 1 and 2 threads is bit-identical. */
static void test_threads_identical(void **st) {
  (void)st;
  int64_t n = 256 * 300 + 5;
  float *p[2], *g = malloc(n * 4);
  uint8_t *codes[2];
  for (int r = 0; r < 2; r++) {
    p[r] = malloc(n * 4);
    for (int64_t i = 0; i < n; i++) p[r][i] = sym_uniform(9, 0, (uint64_t)i, NULL);
  }
  for (int r = 0; r < 2; r++) {
    omp_set_num_threads(r + 1);
    qt_adamw_config c;
    qt_adamw_config_default(&c, 8);
    qt_adamw opt;
    assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
    qt_tensor tp = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p[r]);
    qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
    for (uint32_t t = 1; t <= 3; t++) {
      for (int64_t i = 0; i < n; i++) g[i] = sym_uniform(9, t, (uint64_t)i, NULL) * 1e-2f;
      assert_int_equal(qt_adamw_step(&opt, &tp, &tg, 1e-3f, 1.0f, 0), QT_OK);
    }
    codes[r] = malloc(2 * n);
    memcpy(codes[r], opt.params[0].code1, n);
    memcpy(codes[r] + n, opt.params[0].code2, n);
    qt_adamw_free(&opt);
  }
  omp_set_num_threads(2);
  assert_memory_equal(p[0], p[1], n * 4);
  assert_memory_equal(codes[0], codes[1], 2 * n);
  for (int r = 0; r < 2; r++) {
    free(p[r]);
    free(codes[r]);
  }
  free(g);
}

/* bf16 params: stochastic rounding is reproducible for a seed, differs between
 * seeds, and is unbiased: 1.0 - 1e-3 is not representable in bf16 (spacing
 * 2^-8 below 1), rounding to nearest would leave every element at 1.0. */
static void test_bf16_stochastic_rounding(void **st) {
  (void)st;
  int64_t n = 1 << 16;
  uint16_t *p[3];
  float *g = malloc(n * 4);
  for (int64_t i = 0; i < n; i++) g[i] = 1.0f;
  for (int r = 0; r < 3; r++) {
    p[r] = malloc(n * 2);
    for (int64_t i = 0; i < n; i++) p[r][i] = qt_bf16_from_f32(1.0f);
    for (int bits = 32; bits >= 8; bits -= 24) {
      qt_adamw_config c = cfg_zero(bits);
      qt_adamw opt;
      assert_int_equal(qt_adamw_init(&opt, &c, 1, &n), QT_OK);
      qt_tensor tp = qt_tensor_make(QT_BF16, QT_DEV_CPU, 1, &n, p[r]);
      qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
      assert_int_equal(qt_adamw_step(&opt, &tp, &tg, 5e-4f, 1.0f, r == 2 ? 43 : 42), QT_OK);
      qt_adamw_free(&opt);
    }
  }
  assert_memory_equal(p[0], p[1], n * 2);
  assert_memory_not_equal(p[0], p[2], n * 2);
  double mean = 0;
  int moved = 0;
  for (int64_t i = 0; i < n; i++) {
    mean += qt_bf16_to_f32(p[0][i]);
    moved += p[0][i] != qt_bf16_from_f32(1.0f);
  }
  mean /= (double)n;
  printf("bf16 SR: mean %.6f (exact 0.999), %d of %lld moved\n", mean, moved, (long long)n);
  assert_true(fabs(mean - 0.999) < 2e-4);
  assert_true(moved > n / 20);
  for (int r = 0; r < 3; r++) free(p[r]);
  free(g);
}

/* State through named tensors: run 5 steps, copy the tensors out, load them
 * into a fresh optimizer; step 6 of both is bit-identical. A wrong shape is
 * refused and leaves the state unchanged. */
static void test_state_roundtrip(void **st) {
  (void)st;
  int64_t numels[3] = {5000, 100, 4096 * 2 + 1};
  int64_t total = numels[0] + numels[1] + numels[2];
  float *pa = malloc(total * 4), *pb = malloc(total * 4), *g = malloc(total * 4);
  for (int64_t i = 0; i < total; i++) pa[i] = sym_uniform(4, 0, (uint64_t)i, NULL);
  qt_tensor ta[3], tb[3], tg[3];
  for (int k = 0, o = 0; k < 3; o += (int)numels[k], k++) {
    ta[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &numels[k], pa + o);
    tb[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &numels[k], pb + o);
    tg[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &numels[k], g + o);
  }
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  qt_adamw a, b;
  assert_int_equal(qt_adamw_init(&a, &c, 3, numels), QT_OK);
  assert_int_equal(qt_adamw_init(&b, &c, 3, numels), QT_OK);
  for (uint32_t t = 1; t <= 5; t++) {
    for (int64_t i = 0; i < total; i++) g[i] = sym_uniform(4, t, (uint64_t)i, NULL) * 1e-2f;
    assert_int_equal(qt_adamw_step(&a, ta, tg, 1e-3f, 1.0f, 0), QT_OK);
  }
  size_t cnt = qt_adamw_state_count(&a);
  assert_int_equal(cnt, 3 + 4 + 2 + 4);
  qt_st_write_tensor *ts = malloc(cnt * sizeof *ts);
  qt_adamw_state_tensors(&a, ts);
  /* copies with 1 byte offset: loaded data may be unaligned */
  uint8_t **copies = malloc(cnt * sizeof *copies);
  for (size_t i = 0; i < cnt; i++) {
    size_t bytes = (size_t)ts[i].shape[0] * qt_dtype_size(ts[i].dtype);
    copies[i] = malloc(bytes + 1);
    memcpy(copies[i] + 1, ts[i].data, bytes);
    ts[i].data = copies[i] + 1;
  }
  ts[3].shape[0] += 1;
  assert_int_equal(qt_adamw_state_load(&b, ts, cnt, "test"), QT_ERR_FORMAT);
  assert_int_equal(b.step, 0);
  ts[3].shape[0] -= 1;
  assert_int_equal(qt_adamw_state_load(&b, ts, cnt - 1, "test"), QT_ERR_FORMAT);
  assert_int_equal(qt_adamw_state_load(&b, ts, cnt, "test"), QT_OK);
  assert_int_equal(b.step, 5);
  memcpy(pb, pa, total * 4);
  for (int64_t i = 0; i < total; i++) g[i] = sym_uniform(4, 6, (uint64_t)i, NULL) * 1e-2f;
  assert_int_equal(qt_adamw_step(&a, ta, tg, 1e-3f, 1.0f, 0), QT_OK);
  assert_int_equal(qt_adamw_step(&b, tb, tg, 1e-3f, 1.0f, 0), QT_OK);
  assert_memory_equal(pa, pb, total * 4);
  assert_memory_equal(a.mem, b.mem, a.mem_bytes);
  for (size_t i = 0; i < cnt; i++) free(copies[i]);
  free(copies);
  free(ts);
  qt_adamw_free(&a);
  qt_adamw_free(&b);
  free(pa);
  free(pb);
  free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_analytic_sign_step),
      cmocka_unit_test(test_analytic_decay_order),
      cmocka_unit_test(test_analytic_decay_only),
      cmocka_unit_test(test_8bit_vs_32bit_first_step),
      cmocka_unit_test(test_8bit_nonfinite_element),
      cmocka_unit_test(test_qmap_encode_equals_ref),
      cmocka_unit_test(test_golden_32bit),
      cmocka_unit_test(test_golden_8bit),
      cmocka_unit_test(test_min_8bit_size),
      cmocka_unit_test(test_config_names),
      cmocka_unit_test(test_state_memory),
      cmocka_unit_test(test_threads_identical),
      cmocka_unit_test(test_bf16_stochastic_rounding),
      cmocka_unit_test(test_state_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
