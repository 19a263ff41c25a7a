/* optim/optim_hd.h as nvcc compiles it (the __host__ __device__ functions the
 * CUDA kernels call, here in their host instantiation), with no GPU:
 *  - the 8-bit AdamW trajectory of tests/golden/optim/adamw8_traj.bin (the
 *    bitsandbytes port tools/reference/bnb_8bit_ref.py, bit for bit: absmax
 *    every step, codes and params at the dump steps, the hash of all every step)
 *    run through qt_adamw8_states / qt_adamw_param_step / qt_adamw8_encode_*
 *    in the k_adam8 block structure, and beside it the CPU optimizer (gcc);
 *  - the 32-bit trajectory of adamw32_traj.bin (torch.optim-checked fixture,
 *    within its tolerance) through qt_adamw32_elem, bit for bit against the
 *    CPU's qt_adamw32_update_f32 and against the formula of optim.h written out
 *    here;
 *  - bf16 load / stochastic-rounding store against common/half.c, both state
 *    widths' bf16 updates against the CPU's;
 *  - the encoder against qt_adamw_qmap_encode (and so bitsandbytes' search);
 *  - the chunked norm (NaN, Inf, zero, huge, empty and odd-sized tensors, fp32
 *    and bf16) against a long-double sum and qt_optim_global_norm, the clip
 *    coefficient against torch's formula, the skip decision.
 * Built when the CUDA backend is (tests/optim/CMakeLists.txt). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "optim/optim.h"
#include "optim/optim_hd.h"

static int failures;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      if (failures < 30) {                                 \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                      \
        fprintf(stderr, "\n");                             \
      }                                                    \
      failures++;                                          \
    }                                                      \
  } while (0)

#define GOLDEN QLORA_TEST_DIR "/golden/optim/"

static uint32_t f2u(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static uint64_t d2u(double x) {
  uint64_t u;
  memcpy(&u, &x, 8);
  return u;
}

/* ---- inputs: splitmix64, as tools/reference/bnb_8bit_ref.py (and test_adamw.c) ---- */

static uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static float sym_uniform(uint64_t seed, uint64_t t, uint64_t i, uint64_t *word) {
  uint64_t z = splitmix64((seed << 48) | (t << 32) | i);
  if (word) *word = z;
  float u = (float)(z >> 40) * 0x1p-24f;
  return 2.0f * u - 1.0f;
}

/* the gradients of the 8-bit fixture (make_optim_fixtures.py grads8) */
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

static uint64_t fnv1a64(uint64_t h, const void *data, size_t n) {
  const uint8_t *b = (const uint8_t *)data;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

typedef struct {
  uint8_t *buf;
  size_t len, at;
} reader;

static int rd_open(reader *r, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "FAIL: cannot open %s (run tools/reference/make_optim_fixtures.py)\n", path);
    failures++;
    return 0;
  }
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  r->buf = (uint8_t *)malloc((size_t)len);
  size_t got = r->buf ? fread(r->buf, 1, (size_t)len, f) : 0;
  fclose(f);
  r->len = (size_t)len;
  r->at = 0;
  if (got != (size_t)len) {
    fprintf(stderr, "FAIL: cannot read %s\n", path);
    failures++;
    return 0;
  }
  return 1;
}

static void rd(reader *r, void *dst, size_t bytes) {
  if (r->at + bytes > r->len) {
    fprintf(stderr, "FAIL: fixture too short\n");
    exit(1);
  }
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

/* ---- the 8-bit block as k_adam8 does it (adamw_cuda.cu), on the host ---- */

static void hd_adam8_block(float *p, const float *g, uint8_t *code1, uint8_t *code2, int valid,
                           float *absmax1, float *absmax2, const qt_adamw_qmap *m1,
                           const qt_adamw_qmap *m2, const qt_adamw_scalars *k) {
  float s1[QT_ADAMW_BLOCK], s2[QT_ADAMW_BLOCK];
  int fin[QT_ADAMW_BLOCK];
  float new1 = -3.402823466e38f, new2 = -3.402823466e38f;
  for (int t = 0; t < QT_ADAMW_BLOCK; t++) {
    float gj = t < valid ? g[t] : 0.0f;
    uint8_t c1 = t < valid ? code1[t] : 128, c2 = t < valid ? code2[t] : 0;
    fin[t] = qt_adamw8_states(gj, m1->code[c1] * *absmax1, m2->code[c2] * *absmax2, k, &s1[t],
                              &s2[t]);
    new1 = fmaxf(new1, fabsf(s1[t]));
    new2 = fmaxf(new2, fabsf(s2[t]));
  }
  *absmax1 = new1;
  *absmax2 = new2;
  for (int t = 0; t < valid; t++) {
    if (fin[t]) p[t] = qt_adamw_param_step(p[t], s1[t], s2[t], k);
    code1[t] = qt_adamw8_encode_m(m1->code, m1->thr, s1[t], new1);
    code2[t] = qt_adamw8_encode_v(m2->thr, s2[t], new2);
  }
}

static void hd_adam8(float *p, const float *g, uint8_t *c1, uint8_t *c2, float *a1, float *a2,
                     const qt_adamw_qmap *m1, const qt_adamw_qmap *m2, int64_t n,
                     const qt_adamw_scalars *k) {
  for (int64_t b = 0; b * QT_ADAMW_BLOCK < n; b++) {
    int64_t o = b * QT_ADAMW_BLOCK;
    int valid = (int)(n - o < QT_ADAMW_BLOCK ? n - o : QT_ADAMW_BLOCK);
    hd_adam8_block(p + o, g + o, c1 + o, c2 + o, valid, a1 + b, a2 + b, m1, m2, k);
  }
}

static void golden_8bit(void) {
  reader r;
  if (!rd_open(&r, GOLDEN "adamw8_traj.bin")) return;
  char magic[8];
  rd(&r, magic, 8);
  CHECK(memcmp(magic, "QTADAM8\0", 8) == 0, "adamw8_traj.bin: bad magic");
  uint32_t n32 = rd_u32(&r), steps = rd_u32(&r), seed = rd_u32(&r), ndump = rd_u32(&r);
  int64_t n = n32, nb = (n + 255) / 256;
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  c.beta1 = rd_f32(&r);
  c.beta2 = rd_f32(&r);
  c.eps = rd_f32(&r);
  c.weight_decay = rd_f32(&r);
  float qm[2][256];
  rd(&r, qm, sizeof qm);
  float *lr = (float *)malloc(steps * 4), *gs = (float *)malloc(steps * 4);
  rd(&r, lr, steps * 4);
  rd(&r, gs, steps * 4);
  uint32_t dump[64];
  if (ndump > 64) exit(1);
  rd(&r, dump, ndump * 4);
  size_t per_step_at = r.at, dump_at = r.at + steps * (8 + 8 * (size_t)nb);
  qt_adamw_qmap m1, m2;
  qt_adamw_qmap_make(&m1, qm[0]);
  qt_adamw_qmap_make(&m2, qm[1]);
  /* ours (optim_hd.h under nvcc) and the CPU kernel (gcc), from zero state */
  float *p = (float *)malloc(n * 4), *pc = (float *)malloc(n * 4), *g = (float *)malloc(n * 4);
  float *a = (float *)calloc(4 * nb, 4), *w = (float *)malloc(n * 4);
  uint8_t *c8 = (uint8_t *)calloc(4 * n, 1), *wc = (uint8_t *)malloc(n);
  float *a1 = a, *a2 = a + nb, *ac1 = a + 2 * nb, *ac2 = a + 3 * nb;
  uint8_t *c1 = c8, *c2 = c8 + n, *cc1 = c8 + 2 * n, *cc2 = c8 + 3 * n;
  for (int64_t i = 0; i < n; i++) p[i] = pc[i] = sym_uniform(seed, 0, (uint64_t)i, NULL) * 0.5f;
  uint32_t next = 0;
  int bad_steps = 0;
  for (uint32_t t = 1; t <= steps; t++) {
    grads8(g, n, seed, t);
    qt_adamw_scalars k;
    qt_adamw_scalars_make(&c, t, lr[t - 1], gs[t - 1], &k);
    hd_adam8(p, g, c1, c2, a1, a2, &m1, &m2, n, &k);
    qt_adamw8_update_f32(pc, g, cc1, cc2, ac1, ac2, &m1, &m2, n, &k);
    r.at = per_step_at + (t - 1) * (8 + 8 * (size_t)nb);
    uint64_t hwant;
    rd(&r, &hwant, 8);
    float *want_a = w; /* nb <= n */
    rd(&r, want_a, nb * 4);
    CHECK(memcmp(want_a, a1, nb * 4) == 0, "8-bit step %u: absmax1 differs from the port", t);
    rd(&r, want_a, nb * 4);
    CHECK(memcmp(want_a, a2, nb * 4) == 0, "8-bit step %u: absmax2 differs from the port", t);
    if (next < ndump && dump[next] == t) {
      r.at = dump_at + next * (size_t)n * 6;
      rd(&r, wc, n);
      CHECK(memcmp(wc, c1, n) == 0, "8-bit step %u: code1 differs from the port", t);
      rd(&r, wc, n);
      CHECK(memcmp(wc, c2, n) == 0, "8-bit step %u: code2 differs from the port", t);
      rd(&r, w, n * 4);
      CHECK(memcmp(w, p, n * 4) == 0, "8-bit step %u: params differ from the port", t);
      next++;
    }
    uint64_t h = 0xCBF29CE484222325ull;
    h = fnv1a64(h, c1, (size_t)n);
    h = fnv1a64(h, c2, (size_t)n);
    h = fnv1a64(h, a1, (size_t)nb * 4);
    h = fnv1a64(h, a2, (size_t)nb * 4);
    h = fnv1a64(h, p, (size_t)n * 4);
    bad_steps += h != hwant;
    CHECK(memcmp(p, pc, n * 4) == 0 && memcmp(c1, cc1, 2 * n) == 0 && memcmp(a1, ac1, 2 * nb * 4) == 0,
          "8-bit step %u: optim_hd (nvcc host) differs from the CPU optimizer", t);
  }
  CHECK(bad_steps == 0, "8-bit: %d of %u steps differ from the port's hash", bad_steps, steps);
  CHECK(next == ndump, "8-bit: %u of %u dumps checked", next, ndump);
  printf("8-bit golden: %u steps, %lld values, bit-identical to the bitsandbytes port\n", steps,
         (long long)n);
  free(r.buf), free(lr), free(gs), free(p), free(pc), free(g), free(a), free(w), free(c8), free(wc);
}

/* optim.h's 32-bit formula, written out (the order of kOptimizer32bit2State). */
static float formula32(float p, float g, float *m, float *v, const qt_adamw_scalars *k) {
  float gv = k->gnorm_scale * g;
  float mm = *m * k->beta1 + (1.0f - k->beta1) * gv;
  float vv = *v * k->beta2 + (1.0f - k->beta2) * (gv * gv);
  float step = mm / (sqrtf(vv) + k->eps * k->correction2);
  float pv = p + k->step_size * step;
  if (k->weight_decay > 0.0f) pv = pv * (1.0f - k->lr * k->weight_decay);
  *m = mm;
  *v = vv;
  return pv;
}

static void golden_32bit(void) {
  reader r;
  if (!rd_open(&r, GOLDEN "adamw32_traj.bin")) return;
  char magic[8];
  rd(&r, magic, 8);
  CHECK(memcmp(magic, "QTADAM32", 8) == 0, "adamw32_traj.bin: bad magic");
  uint32_t nt = rd_u32(&r), steps = rd_u32(&r), seed = rd_u32(&r), nck = rd_u32(&r);
  qt_adamw_config c;
  qt_adamw_config_default(&c, 32);
  c.beta1 = rd_f32(&r);
  c.beta2 = rd_f32(&r);
  c.eps = rd_f32(&r);
  c.weight_decay = rd_f32(&r);
  int64_t numel[8], total = 0;
  if (nt > 8 || nck > 64) exit(1);
  for (uint32_t k = 0; k < nt; k++) total += numel[k] = rd_u32(&r);
  float *lr = (float *)malloc(steps * 4), *gs = (float *)malloc(steps * 4);
  rd(&r, lr, steps * 4);
  rd(&r, gs, steps * 4);
  uint32_t ck[64];
  rd(&r, ck, nck * 4);
  float *buf = (float *)calloc(10 * (size_t)total, 4);
  float *p = buf, *m = buf + total, *v = buf + 2 * total;        /* optim_hd */
  float *pc = buf + 3 * total, *mc = buf + 4 * total, *vc = buf + 5 * total;  /* CPU */
  float *pf = buf + 6 * total, *mf = buf + 7 * total, *vf = buf + 8 * total;  /* formula */
  float *g = buf + 9 * total, *want = (float *)malloc(total * 4);
  for (uint32_t k = 0, o = 0; k < nt; o += (uint32_t)numel[k], k++)
    for (int64_t i = 0; i < numel[k]; i++)
      p[o + i] = pc[o + i] = pf[o + i] = sym_uniform(seed + 16 * k, 0, (uint64_t)i, NULL) * 0.5f;
  uint32_t next = 0;
  double worst = 0;
  int64_t off_bits = 0;
  for (uint32_t t = 1; t <= steps; t++) {
    for (uint32_t k = 0, o = 0; k < nt; o += (uint32_t)numel[k], k++)
      for (int64_t i = 0; i < numel[k]; i++)
        g[o + i] = sym_uniform(seed + 16 * k, t, (uint64_t)i, NULL) * ldexpf(1.0f, -(int)(k + t % 3));
    qt_adamw_scalars ks;
    qt_adamw_scalars_make(&c, t, lr[t - 1], gs[t - 1], &ks);
    for (int64_t i = 0; i < total; i++) {
      p[i] = qt_adamw32_elem(p[i], g[i], &m[i], &v[i], &ks);
      pf[i] = formula32(pf[i], g[i], &mf[i], &vf[i], &ks);
    }
    for (uint32_t k = 0, o = 0; k < nt; o += (uint32_t)numel[k], k++)
      qt_adamw32_update_f32(pc + o, g + o, mc + o, vc + o, numel[k], &ks);
    for (int64_t i = 0; i < total; i++)
      off_bits += (f2u(p[i]) != f2u(pc[i])) + (f2u(p[i]) != f2u(pf[i])) + (f2u(m[i]) != f2u(mc[i])) +
                  (f2u(v[i]) != f2u(vc[i]));
    if (next < nck && ck[next] == t) {
      rd(&r, want, total * 4);
      for (int64_t i = 0; i < total; i++) {
        double e = fabs((double)p[i] - want[i]) / (1e-6 * fabs((double)want[i]) + 1e-7);
        worst = e > worst ? e : worst;
      }
      next++;
    }
  }
  CHECK(off_bits == 0, "32-bit: %lld values differ between optim_hd, the CPU and the formula",
        (long long)off_bits);
  CHECK(worst <= 1.0, "32-bit: worst error %.3f of the torch tolerance", worst);
  CHECK(next == nck, "32-bit: %u of %u checkpoints", next, nck);
  printf("32-bit golden: worst error %.3f of the torch tolerance; optim_hd = CPU = formula\n", worst);
  free(r.buf), free(lr), free(gs), free(buf), free(want);
}

/* ---- bf16: the conversions and both bf16 updates ---- */

static void bf16_cases(void) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++)
    bad += f2u(qt_optim_bf16_to_f32((uint16_t)h)) != f2u(qt_bf16_to_f32((uint16_t)h));
  static const uint32_t special[8] = {0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x7F800001u,
                                      0x7F7FFFFFu, 0x00000001u, 0x80000000u, 0x3F80FFFFu};
  uint64_t s = 9;
  for (int i = 0; i < 4000000; i++) {
    uint64_t z = splitmix64(s++);
    uint32_t bits = (uint32_t)z, rnd = (uint32_t)(z >> 32);
    if (i < 64) bits = special[i % 8];
    float x;
    memcpy(&x, &bits, 4);
    bad += qt_optim_bf16_from_f32_sr(x, rnd) != qt_bf16_from_f32_sr(x, rnd);
  }
  CHECK(bad == 0, "bf16 conversions: %d differ from common/half.c", bad);

  const int64_t n = 4096 + 300 + 3;
  qt_adamw_config c8, c32;
  qt_adamw_config_default(&c8, 8);
  qt_adamw_config_default(&c32, 32);
  qt_adamw_qmap m[2];
  {
    qt_adamw o;
    int64_t one = 1;
    if (qt_adamw_init(&o, &c8, 1, &one) != QT_OK) exit(1);
    m[0] = o.qmap1;
    m[1] = o.qmap2;
    qt_adamw_free(&o);
  }
  int64_t nb = (n + 255) / 256;
  uint16_t *p = (uint16_t *)malloc(n * 2), *pc = (uint16_t *)malloc(n * 2);
  float *g = (float *)malloc(n * 4), *st = (float *)calloc(4 * n, 4), *a = (float *)calloc(4 * nb, 4);
  uint8_t *cd = (uint8_t *)calloc(4 * n, 1);
  float *pf = (float *)malloc(n * 4);
  for (int bits = 8; bits <= 32; bits += 24) {
    memset(st, 0, 4 * n * 4);
    memset(a, 0, 4 * nb * 4);
    memset(cd, 0, 4 * n);
    for (int64_t i = 0; i < n; i++) p[i] = pc[i] = qt_bf16_from_f32(sym_uniform(3, 0, i, NULL));
    for (uint32_t t = 1; t <= 4; t++) {
      for (int64_t i = 0; i < n; i++) g[i] = sym_uniform(4, t, i, NULL) * 1e-2f;
      if (bits == 8 && t == 3) g[17] = NAN;
      qt_adamw_scalars k;
      qt_adamw_scalars_make(bits == 8 ? &c8 : &c32, t, 1e-2f, 1.0f, &k);
      const uint64_t seed = 0x1234567890ull;
      const uint32_t tensor = 7;
      for (int64_t i = 0; i < n; i++) pf[i] = qt_optim_bf16_to_f32(p[i]);
      if (bits == 32) {
        for (int64_t i = 0; i < n; i++) pf[i] = qt_adamw32_elem(pf[i], g[i], &st[i], &st[n + i], &k);
        qt_adamw32_update_bf16(pc, g, st + 2 * n, st + 3 * n, n, &k, seed, tensor);
      } else {
        hd_adam8(pf, g, cd, cd + n, a, a + nb, &m[0], &m[1], n, &k);
        qt_adamw8_update_bf16(pc, g, cd + 2 * n, cd + 3 * n, a + 2 * nb, a + 3 * nb, &m[0], &m[1],
                              n, &k, seed, tensor);
      }
      /* params that did not move keep their bits: SR of an exact bf16 value is
       * that value for every random word */
      for (int64_t i = 0; i < n; i++)
        p[i] = qt_optim_bf16_from_f32_sr(pf[i], qt_adamw_sr_word(seed, t, tensor, i));
      CHECK(memcmp(p, pc, n * 2) == 0, "%d-bit bf16 step %u: optim_hd differs from the CPU", bits, t);
    }
  }
  free(p), free(pc), free(g), free(st), free(a), free(cd), free(pf);
}

/* ---- the encoder ---- */

static void encoder_cases(void) {
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  qt_adamw o;
  int64_t one = 1;
  if (qt_adamw_init(&o, &c, 1, &one) != QT_OK) exit(1);
  int bad = 0;
  uint64_t s = 77;
  for (int i = 0; i < 2000000; i++) {
    float x;
    if (i < 1024) {
      const qt_adamw_qmap *m = (i & 512) ? &o.qmap2 : &o.qmap1;
      int k = (i & 255);
      x = (i & 256) ? m->code[k] : (k ? m->thr[k] : 0.0f);
      if (i & 1) x = nextafterf(x, -INFINITY);
    } else {
      uint64_t z = splitmix64(s++);
      x = sym_uniform(1, 2, z & 0xFFFFFFFF, NULL) * ldexpf(1.0f, -(int)((z >> 32) % 30));
    }
    bad += qt_adamw_encode(o.qmap1.thr, x) != qt_adamw_qmap_encode(&o.qmap1, x);
    bad += qt_adamw_encode(o.qmap2.thr, fabsf(x)) != qt_adamw_qmap_encode(&o.qmap2, fabsf(x));
  }
  bad += qt_adamw_encode(o.qmap1.thr, NAN) != 0;
  /* the m code's sign fix-up, the all-zero block's 0/0 */
  bad += qt_adamw8_encode_m(o.qmap1.code, o.qmap1.thr, 0.0f, 0.0f) != 255;
  for (int k = 0; k < 256; k++) {
    float x = o.qmap1.code[k];
    uint8_t e = qt_adamw8_encode_m(o.qmap1.code, o.qmap1.thr, x, 1.0f);
    bad += signbit(o.qmap1.code[e]) != signbit(x) && x != 0.0f;
  }
  CHECK(bad == 0, "encoder: %d differ from qt_adamw_qmap_encode or the sign rule", bad);
  qt_adamw_free(&o);
}

/* ---- the chunked norm, clip coefficient, skip decision ---- */

static double norm_hd(const float *const *x, const int64_t *n, int nt) {
  /* optim_hd.h's order as clip_cuda.cu's kernels lay it out: a table of
   * first chunks, each chunk found from its flat index, then groups */
  int64_t first[16], chunks = 0;
  for (int k = 0; k < nt; k++) {
    first[k] = chunks;
    chunks += (n[k] + QT_OPTIM_NORM_CHUNK - 1) / QT_OPTIM_NORM_CHUNK;
  }
  first[nt] = chunks;
  double *part = (double *)malloc((chunks + 1) * sizeof(double));
  for (int64_t c = 0, k0 = 0; c < chunks; c++) {
    int64_t k = qt_optim_chunk_tensor(first, nt, c);
    if (k < k0 || n[k] == 0 || c < first[k] || c >= first[k + 1]) {
      CHECK(0, "chunk %lld: tensor %lld (first %lld, numel %lld)", (long long)c, (long long)k,
            (long long)first[k], (long long)n[k]);
      exit(1);
    }
    k0 = k;
    int64_t b = (c - first[k]) * QT_OPTIM_NORM_CHUNK;
    part[c] = qt_optim_sumsq_f32(x[k] + b, n[k] - b < QT_OPTIM_NORM_CHUNK ? n[k] - b
                                                                          : QT_OPTIM_NORM_CHUNK);
  }
  int64_t ng = (chunks + QT_OPTIM_NORM_GROUP - 1) / QT_OPTIM_NORM_GROUP;
  double *grp = (double *)malloc((ng + 1) * sizeof(double));
  for (int64_t gi = 0; gi < ng; gi++) {
    int64_t b = gi * QT_OPTIM_NORM_GROUP;
    grp[gi] = qt_optim_sum_ordered(part + b, chunks - b < QT_OPTIM_NORM_GROUP ? chunks - b
                                                                              : QT_OPTIM_NORM_GROUP);
  }
  double r = sqrt(qt_optim_sum_ordered(grp, ng));
  free(part);
  free(grp);
  return r;
}

static void norm_cases(void) {
  /* odd sizes, an empty tensor, more than one group (> 1M elements) */
  const int64_t sizes[] = {0, 3, 0, 0, 1023, 1025, 1100000, 7, 4096, 0};
  const int nt = 10;
  float *x[10];
  qt_tensor t[10];
  uint64_t s = 5;
  for (int k = 0; k < nt; k++) {
    x[k] = (float *)malloc((sizes[k] + 1) * 4);
    for (int64_t i = 0; i < sizes[k]; i++)
      x[k][i] = sym_uniform(11 + k, 0, i, NULL) * ldexpf(1.0f, (int)(splitmix64(s++) % 9) - 4);
    t[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &sizes[k], x[k]);
  }
  for (int round = 0; round < 6; round++) {
    const char *what[] = {"random", "zero", "huge", "NaN", "Inf", "-Inf"};
    if (round == 1)
      for (int k = 0; k < nt; k++) memset(x[k], 0, sizes[k] * 4);
    if (round == 2) x[6][123456] = 3.0e38f; /* its square overflows float, not double */
    if (round == 3) x[6][1048577] = NAN;
    if (round == 4) x[6][1048577] = INFINITY;
    if (round == 5) x[5][1024] = -INFINITY, x[6][1048577] = 0.0f;
    double ours = norm_hd(x, sizes, nt), cpu = qt_optim_global_norm(t, nt);
    long double ref = 0;
    for (int k = 0; k < nt; k++)
      for (int64_t i = 0; i < sizes[k]; i++) ref += (long double)x[k][i] * x[k][i];
    double want = (double)sqrtl(ref);
    CHECK(d2u(ours) == d2u(cpu) || (isnan(ours) && isnan(cpu)),
          "norm (%s): optim_hd %.17g, CPU %.17g", what[round], ours, cpu);
    if (isfinite(want))
      CHECK(fabs(ours - want) <= 1e-13 * want, "norm (%s): %.17g vs long double %.17g", what[round],
            ours, want);
    else
      CHECK(!isfinite(ours), "norm (%s): %.17g should not be finite", what[round], ours);
    CHECK(qt_optim_norm_skips(ours) == !isfinite(want), "skip decision (%s)", what[round]);
    if (round == 1) CHECK(ours == 0.0, "norm of zeros: %g", ours);
    if (round == 2) CHECK(isfinite(ours) && ours >= 3.0e38, "huge: %g", ours);
  }
  /* the empty list and all-empty tensors */
  CHECK(norm_hd(x, sizes, 1) == 0.0 && qt_optim_global_norm(t, 1) == 0.0, "empty norm");
  for (int k = 0; k < nt; k++) free(x[k]);

  /* clip coefficient: torch clamp(max / (norm + 1e-6), max=1), and the C API */
  const double norms[] = {0.0, 1e-9, 0.3, 1.0, 1.0 - 1e-6, 10.0, 1e30, INFINITY, NAN};
  const double maxes[] = {0.0, -1.0, 0.3, 1.0, 2.5};
  for (size_t i = 0; i < sizeof norms / sizeof *norms; i++)
    for (size_t j = 0; j < sizeof maxes / sizeof *maxes; j++) {
      double nn = norms[i], mx = maxes[j];
      float want = 1.0f;
      if (mx > 0) {
        double cc = mx / (nn + 1e-6);
        want = cc < 1.0 ? (float)cc : 1.0f;
      }
      float ours = qt_optim_clip_coef_of(nn, mx);
      CHECK(f2u(ours) == f2u(want) && f2u(ours) == f2u(qt_optim_clip_coef(nn, mx)),
            "clip coef (norm %g, max %g): %.9g, want %.9g", nn, mx, (double)ours, (double)want);
    }
  CHECK(qt_optim_clip_coef_of(10.0, 1.0) == (float)(1.0 / (10.0 + 1e-6)), "clip coef 10/1");
  CHECK(qt_optim_clip_coef_of(INFINITY, 1.0) == 0.0f && qt_optim_clip_coef_of(NAN, 1.0) == 1.0f,
        "clip coef of non-finite norms");
  CHECK(qt_optim_norm_skips(NAN) && qt_optim_norm_skips(INFINITY) && qt_optim_norm_skips(-INFINITY) &&
            !qt_optim_norm_skips(0.0) && !qt_optim_norm_skips(1e308),
        "skip decision");
}

int main(void) {
  golden_8bit();
  golden_32bit();
  bf16_cases();
  encoder_cases();
  norm_cases();
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("optim_hd (nvcc host): bitsandbytes trajectories, CPU parity, bf16, encoder, norm OK\n");
  return 0;
}
