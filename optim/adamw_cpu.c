/* optim/adamw_cpu.c — AdamW updates (32-bit and 8-bit blockwise state) on the
 * CPU, the optimizer object and its state tensors. Formulas and their sources:
 * optim/optim.h. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/philox.h"
#include "optim/optim.h"
#include "optim/optim_hd.h"
#include "quant/quant.h"

enum {
  CHUNK32 = 4096,          /* elements per OpenMP work item of the 32-bit update */
  PAR_MIN = 1 << 15,       /* below this many elements, no threads */
  NAME_CAP = 48,           /* bytes per state tensor name */
  ALIGN = 64
};

void qt_adamw_config_default(qt_adamw_config *c, int bits) {
  QT_ASSERT(bits == 8 || bits == 32);
  memset(c, 0, sizeof *c);
  c->bits = bits;
  c->beta1 = 0.9f;
  c->beta2 = 0.999f;
  c->eps = 1e-8f;
  c->weight_decay = 1e-2f;
  c->min_8bit_size = 4096;
}

bool qt_adamw_config_from_name(const char *name, qt_adamw_config *c) {
  /* transformers trainer: optim_bits = 8 if "8bit" in name else 32,
   * is_paged = "paged" in name (formats.md 3.1) */
  static const struct { const char *name; int bits; bool paged; } kNames[] = {
      {"adamw_8bit", 8, false}, {"paged_adamw_8bit", 8, true},
      {"adamw_32bit", 32, false}, {"paged_adamw_32bit", 32, true}};
  for (size_t i = 0; i < sizeof kNames / sizeof *kNames; i++) {
    if (strcmp(name, kNames[i].name) == 0) {
      qt_adamw_config_default(c, kNames[i].bits);
      c->paged = kNames[i].paged;
      return true;
    }
  }
  return false;
}

void qt_adamw_scalars_make(const qt_adamw_config *c, int64_t step, float lr, float gnorm_scale,
                           qt_adamw_scalars *k) {
  QT_ASSERT(step >= 1);
  memset(k, 0, sizeof *k);
  k->beta1 = c->beta1;
  k->beta2 = c->beta2;
  k->eps = c->eps;
  k->weight_decay = c->weight_decay;
  k->lr = lr;
  k->gnorm_scale = gnorm_scale;
  k->step = step;
  /* kernels.cu: correction1 = 1.0f - powf(beta1, step); correction2 =
   * sqrtf(1.0f - powf(beta2, step)); step_size = -lr * correction2 / correction1
   * (the 8-bit kernel uses __powf and __fdividef; see optim.h). */
  k->correction1 = 1.0f - powf(c->beta1, (float)step);
  k->correction2 = sqrtf(1.0f - powf(c->beta2, (float)step));
  k->step_size = (-lr * k->correction2) / k->correction1;
}

uint32_t qt_adamw_sr_word(uint64_t seed, int64_t step, uint32_t tensor, int64_t i) {
  uint64_t q = (uint64_t)i >> 2;
  uint32_t ctr[4] = {(uint32_t)q, (uint32_t)(q >> 32), tensor, (uint32_t)step};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t out[4];
  qt_philox4x32_10(ctr, key, out);
  return out[i & 3];
}

/* ---- the encoder (see qt_adamw_qmap in optim.h) ---- */

/* float <-> uint32 key that orders non-NaN floats as their values, -0 < +0 */
static uint32_t order_key(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static float from_key(uint32_t k) {
  uint32_t u = (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

void qt_adamw_qmap_make(qt_adamw_qmap *m, const float code[256]) {
  memcpy(m->code, code, sizeof m->code);
  m->thr[0] = -INFINITY;
  const uint32_t lo0 = order_key(-INFINITY), hi0 = order_key(INFINITY);
  for (int k = 1; k < 256; k++) {
    if (qt_quant_8bit_encode_ref(code, INFINITY) < k) {
      m->thr[k] = NAN; /* never produced: x >= NaN is false */
      continue;
    }
    uint32_t lo = lo0, hi = hi0; /* invariant: encode(from_key(hi)) >= k */
    while (lo < hi) {
      uint32_t mid = lo + (hi - lo) / 2;
      if (qt_quant_8bit_encode_ref(code, from_key(mid)) >= k)
        hi = mid;
      else
        lo = mid + 1;
    }
    m->thr[k] = from_key(lo);
  }
}

uint8_t qt_adamw_qmap_encode(const qt_adamw_qmap *m, float x) { return qt_adamw_encode(m->thr, x); }

/* p[0..len) = SR(pf[0..len)) for elements first.. of the tensor (first is a
 * multiple of 4): one Philox block gives the words of four elements. */
static void sr_store(uint16_t *p, const float *pf, int64_t len, uint64_t seed, int64_t step,
                     uint32_t tensor, int64_t first) {
  QT_ASSERT(first % 4 == 0);
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  for (int64_t i = 0; i < len; i += 4) {
    uint64_t q = (uint64_t)(first + i) >> 2;
    uint32_t ctr[4] = {(uint32_t)q, (uint32_t)(q >> 32), tensor, (uint32_t)step};
    uint32_t w[4];
    qt_philox4x32_10(ctr, key, w);
    for (int64_t j = 0; j < 4 && i + j < len; j++) p[i + j] = qt_bf16_from_f32_sr(pf[i + j], w[j]);
  }
}

/* ---- 32-bit ---- */

/* kOptimizer32bit2State, ADAM branch, on p[0..n) held as fp32 (the element
 * update is optim_hd.h qt_adamw32_elem, shared with the CUDA kernel). */
static void adam32_span(float *p, const float *g, float *m, float *v, int64_t n,
                        const qt_adamw_scalars *k) {
  for (int64_t i = 0; i < n; i++) p[i] = qt_adamw32_elem(p[i], g[i], &m[i], &v[i], k);
}

void qt_adamw32_update_f32(float *p, const float *g, float *m, float *v, int64_t n,
                           const qt_adamw_scalars *k) {
  int64_t nchunks = (n + CHUNK32 - 1) / CHUNK32;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (int64_t c = 0; c < nchunks; c++) {
    int64_t b = c * CHUNK32, len = n - b < CHUNK32 ? n - b : CHUNK32;
    adam32_span(p + b, g + b, m + b, v + b, len, k);
  }
}

void qt_adamw32_update_bf16(uint16_t *p, const float *g, float *m, float *v, int64_t n,
                            const qt_adamw_scalars *k, uint64_t seed, uint32_t tensor) {
  int64_t nchunks = (n + CHUNK32 - 1) / CHUNK32;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (int64_t c = 0; c < nchunks; c++) {
    int64_t b = c * CHUNK32, len = n - b < CHUNK32 ? n - b : CHUNK32;
    float pf[CHUNK32];
    for (int64_t i = 0; i < len; i++) pf[i] = qt_bf16_to_f32(p[b + i]);
    adam32_span(pf, g + b, m + b, v + b, len, k);
    sr_store(p + b, pf, len, seed, k->step, tensor, b);
  }
}

/* ---- 8-bit blockwise ---- */

/* One 256-slot block of kOptimizerStatic8bit2StateBlockwise<T, ADAM, 256, 1>:
 * pf[0..valid) params as fp32 (in/out), g/code1/code2 of the valid slots,
 * absmax1[0] and absmax2[0] of this block (in/out). Slots valid..255 are the kernel's
 * padding (g = 0, code1 = 128, code2 = 0): they take part in the new absmax. */
static void adam8_block(float *pf, const float *g, uint8_t *code1, uint8_t *code2, int valid,
                        float *absmax1, float *absmax2, const qt_adamw_qmap *m1,
                        const qt_adamw_qmap *m2, const qt_adamw_scalars *k) {
  const float *q1 = m1->code, *q2 = m2->code;
  float s1[QT_ADAMW_BLOCK], s2[QT_ADAMW_BLOCK];
  unsigned char fin[QT_ADAMW_BLOCK];
  const float a1 = *absmax1, a2 = *absmax2;
  float new1 = -FLT_MAX, new2 = -FLT_MAX;
  for (int j = 0; j < QT_ADAMW_BLOCK; j++) {
    float gj = j < valid ? g[j] : 0.0f;
    uint8_t c1 = j < valid ? code1[j] : 128, c2 = j < valid ? code2[j] : 0;
    fin[j] = (unsigned char)qt_adamw8_states(gj, q1[c1] * a1, q2[c2] * a2, k, &s1[j], &s2[j]);
    new1 = fmaxf(new1, fabsf(s1[j]));
    new2 = fmaxf(new2, fabsf(s2[j]));
  }
  *absmax1 = new1;
  *absmax2 = new2;
  for (int j = 0; j < valid; j++)
    if (fin[j]) pf[j] = qt_adamw_param_step(pf[j], s1[j], s2[j], k);
  for (int j = 0; j < valid; j++) {
    code1[j] = qt_adamw8_encode_m(q1, m1->thr, s1[j], new1);
    code2[j] = qt_adamw8_encode_v(m2->thr, s2[j], new2);
  }
}

void qt_adamw8_update_f32(float *p, const float *g, uint8_t *code1, uint8_t *code2,
                          float *absmax1, float *absmax2, const qt_adamw_qmap *qmap1,
                          const qt_adamw_qmap *qmap2, int64_t n, const qt_adamw_scalars *k) {
  int64_t nb = (n + QT_ADAMW_BLOCK - 1) / QT_ADAMW_BLOCK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (int64_t b = 0; b < nb; b++) {
    int64_t o = b * QT_ADAMW_BLOCK;
    int valid = (int)(n - o < QT_ADAMW_BLOCK ? n - o : QT_ADAMW_BLOCK);
    adam8_block(p + o, g + o, code1 + o, code2 + o, valid, absmax1 + b, absmax2 + b, qmap1, qmap2,
                k);
  }
}

void qt_adamw8_update_bf16(uint16_t *p, const float *g, uint8_t *code1, uint8_t *code2,
                           float *absmax1, float *absmax2, const qt_adamw_qmap *qmap1,
                           const qt_adamw_qmap *qmap2, int64_t n, const qt_adamw_scalars *k,
                           uint64_t seed, uint32_t tensor) {
  int64_t nb = (n + QT_ADAMW_BLOCK - 1) / QT_ADAMW_BLOCK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (int64_t b = 0; b < nb; b++) {
    int64_t o = b * QT_ADAMW_BLOCK;
    int valid = (int)(n - o < QT_ADAMW_BLOCK ? n - o : QT_ADAMW_BLOCK);
    float pf[QT_ADAMW_BLOCK];
    for (int j = 0; j < valid; j++) pf[j] = qt_bf16_to_f32(p[o + j]);
    adam8_block(pf, g + o, code1 + o, code2 + o, valid, absmax1 + b, absmax2 + b, qmap1, qmap2, k);
    sr_store(p + o, pf, valid, seed, k->step, tensor, o);
  }
}

/* ---- the optimizer ---- */

static size_t round_up(size_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

static size_t param_bytes(const qt_adamw_param *q) {
  if (q->state8)
    return 2 * round_up((size_t)q->numel) + 2 * round_up((size_t)q->nblocks * sizeof(float));
  return 2 * round_up((size_t)q->numel * sizeof(float));
}

/* The device copies of the maps (in device or managed memory), copied while no
 * kernel runs. */
static qt_status sync_dev_qmaps(qt_adamw *opt) {
#ifdef QLORA_HAVE_CUDA
  if (!opt->dev_qmaps) return QT_OK;
  QT_TRY(qt_adamw_cuda_copy(&opt->dev_qmaps[0], &opt->qmap1, sizeof opt->qmap1));
  return qt_adamw_cuda_copy(&opt->dev_qmaps[1], &opt->qmap2, sizeof opt->qmap2);
#else
  (void)opt;
  return QT_OK;
#endif
}

/* Where the host reads and writes state element p (a pointer into mem): the
 * mirror for device state, else p itself. */
static void *host_view(const qt_adamw *opt, const void *p) {
  if (!opt->host_mem) return (void *)p;
  return (char *)opt->host_mem + ((const char *)p - (const char *)opt->mem);
}

size_t qt_adamw_alloc_bytes(const qt_adamw_config *cfg, size_t n_params, const int64_t *numels) {
  size_t total = 0;
  for (size_t i = 0; i < n_params; i++) {
    qt_adamw_param q = {.numel = numels[i], .state8 = cfg->bits == 8 && numels[i] >= cfg->min_8bit_size};
    q.nblocks = q.state8 ? (numels[i] + QT_ADAMW_BLOCK - 1) / QT_ADAMW_BLOCK : 0;
    total += param_bytes(&q);
  }
  if (cfg->device == QT_DEV_CUDA) total += round_up(2 * sizeof(qt_adamw_qmap));
  return total;
}

qt_status qt_adamw_init(qt_adamw *opt, const qt_adamw_config *cfg, size_t n_params,
                        const int64_t *numels) {
  memset(opt, 0, sizeof *opt);
  if (cfg->bits != 8 && cfg->bits != 32)
    return qt_fail(QT_ERR_CONFIG, "optimizer: %d-bit state is not supported; use 8 or 32",
                   cfg->bits);
  if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f && cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
    return qt_fail(QT_ERR_CONFIG, "optimizer: betas (%g, %g) must lie in [0, 1)",
                   (double)cfg->beta1, (double)cfg->beta2);
  if (!(cfg->eps >= 0.0f) || !(cfg->weight_decay >= 0.0f))
    return qt_fail(QT_ERR_CONFIG, "optimizer: eps %g and weight_decay %g must be >= 0",
                   (double)cfg->eps, (double)cfg->weight_decay);
  opt->cfg = *cfg;
  opt->n_params = n_params;
  opt->params = calloc(n_params ? n_params : 1, sizeof *opt->params);
  opt->names = calloc((4 * n_params + 3) * NAME_CAP, 1);
  if (!opt->params || !opt->names) {
    qt_adamw_free(opt);
    return qt_fail(QT_ERR_NOMEM, "optimizer: out of memory for %zu parameter records", n_params);
  }
  size_t total = 0;
  for (size_t i = 0; i < n_params; i++) {
    qt_adamw_param *q = &opt->params[i];
    QT_ASSERT(numels[i] >= 0);
    q->numel = numels[i];
    q->state8 = cfg->bits == 8 && numels[i] >= cfg->min_8bit_size;
    q->nblocks = q->state8 ? (numels[i] + QT_ADAMW_BLOCK - 1) / QT_ADAMW_BLOCK : 0;
    total += param_bytes(q);
  }
  size_t state_total = total;
  if (cfg->device == QT_DEV_CUDA) {
#ifdef QLORA_HAVE_CUDA
    total += round_up(2 * sizeof(qt_adamw_qmap));
    qt_status st = qt_adamw_cuda_state_alloc(total, cfg->paged, &opt->mem);
    if (st != QT_OK) {
      qt_adamw_free(opt);
      return st;
    }
    opt->dev_qmaps = (qt_adamw_qmap *)((char *)opt->mem + state_total);
    if (!cfg->paged) {
      opt->host_mem = aligned_alloc(ALIGN, state_total ? round_up(state_total) : ALIGN);
      if (!opt->host_mem) {
        qt_adamw_free(opt);
        return qt_fail(QT_ERR_NOMEM, "optimizer: cannot allocate the %.1f MiB host mirror of "
                       "the device state", (double)state_total / 1048576.0);
      }
      memset(opt->host_mem, 0, state_total);
    }
#else
    qt_adamw_free(opt);
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "optimizer: training.device is cuda but this build has no CUDA backend; "
                   "rebuild with -DQLORA_CUDA=ON or use device: cpu");
#endif
  } else {
    opt->mem = aligned_alloc(ALIGN, total ? total : ALIGN);
    if (!opt->mem) {
      qt_adamw_free(opt);
      return qt_fail(QT_ERR_NOMEM, "optimizer: cannot allocate %.1f MiB of state",
                     (double)total / 1048576.0);
    }
    memset(opt->mem, 0, total);
  }
  opt->mem_bytes = state_total;
  char *at = opt->mem;
  for (size_t i = 0; i < n_params; i++) {
    qt_adamw_param *q = &opt->params[i];
    if (q->state8) {
      q->code1 = (uint8_t *)at;
      at += round_up((size_t)q->numel);
      q->code2 = (uint8_t *)at;
      at += round_up((size_t)q->numel);
      q->absmax1 = (float *)at;
      at += round_up((size_t)q->nblocks * sizeof(float));
      q->absmax2 = (float *)at;
      at += round_up((size_t)q->nblocks * sizeof(float));
    } else {
      q->state1 = (float *)at;
      at += round_up((size_t)q->numel * sizeof(float));
      q->state2 = (float *)at;
      at += round_up((size_t)q->numel * sizeof(float));
    }
  }
  float code[256];
  qt_quant_dynamic_map(true, code);
  qt_adamw_qmap_make(&opt->qmap1, code);
  qt_quant_dynamic_map(false, code);
  qt_adamw_qmap_make(&opt->qmap2, code);
  qt_status st = sync_dev_qmaps(opt);
  if (st != QT_OK) qt_adamw_free(opt);
  return st;
}

void qt_adamw_free(qt_adamw *opt) {
#ifdef QLORA_HAVE_CUDA
  if (opt->cfg.device == QT_DEV_CUDA)
    qt_adamw_cuda_state_free(opt->mem);
  else
#endif
    free(opt->mem);
  free(opt->host_mem);
  free(opt->params);
  free(opt->names);
  memset(opt, 0, sizeof *opt);
}

size_t qt_adamw_state_bytes(const qt_adamw *opt) {
  size_t b = 0;
  for (size_t i = 0; i < opt->n_params; i++) {
    const qt_adamw_param *q = &opt->params[i];
    b += q->state8 ? 2 * (size_t)q->numel + 2 * (size_t)q->nblocks * sizeof(float)
                   : 2 * (size_t)q->numel * sizeof(float);
  }
  return b;
}

static qt_status step_cuda(qt_adamw *opt, qt_tensor *params, const qt_tensor *grads,
                           const qt_adamw_scalars *k, uint64_t seed) {
#ifdef QLORA_HAVE_CUDA
  const qt_adamw_qmap *m1 = &opt->dev_qmaps[0], *m2 = &opt->dev_qmaps[1];
  opt->host_stale = opt->host_mem != NULL; /* from the first launch on */
  for (size_t i = 0; i < opt->n_params; i++) {
    const qt_adamw_param *q = &opt->params[i];
    const float *g = grads[i].data;
    const void *first = q->state8 ? (const void *)q->code1 : (const void *)q->state1;
    if (opt->cfg.paged) QT_TRY(qt_adamw_cuda_prefetch(first, param_bytes(q)));
    bool bf = params[i].dtype == QT_BF16;
    if (q->state8 && !bf)
      QT_TRY(qt_adamw8_update_f32_cuda(params[i].data, g, q->code1, q->code2, q->absmax1,
                                       q->absmax2, m1, m2, q->numel, k));
    else if (q->state8)
      QT_TRY(qt_adamw8_update_bf16_cuda(params[i].data, g, q->code1, q->code2, q->absmax1,
                                        q->absmax2, m1, m2, q->numel, k, seed, (uint32_t)i));
    else if (!bf)
      QT_TRY(qt_adamw32_update_f32_cuda(params[i].data, g, q->state1, q->state2, q->numel, k));
    else
      QT_TRY(qt_adamw32_update_bf16_cuda(params[i].data, g, q->state1, q->state2, q->numel, k,
                                         seed, (uint32_t)i));
  }
  return qt_adamw_cuda_sync();
#else
  (void)opt, (void)params, (void)grads, (void)k, (void)seed;
  QT_ASSERTF(0, "CUDA optimizer without the CUDA backend");
  return QT_ERR_UNSUPPORTED;
#endif
}

qt_status qt_adamw_step(qt_adamw *opt, qt_tensor *params, const qt_tensor *grads, float lr,
                        float gnorm_scale, uint64_t seed) {
  for (size_t i = 0; i < opt->n_params; i++) {
    const qt_adamw_param *q = &opt->params[i];
    QT_ASSERTF(qt_tensor_numel(&params[i]) == q->numel && qt_tensor_numel(&grads[i]) == q->numel,
               "parameter %zu: %lld elements, optimizer state has %lld", i,
               (long long)qt_tensor_numel(&params[i]), (long long)q->numel);
    if (params[i].device != opt->cfg.device || grads[i].device != opt->cfg.device)
      return qt_fail(QT_ERR_INVALID, "optimizer: parameter or gradient %zu is not on the %s",
                     i, opt->cfg.device == QT_DEV_CUDA ? "GPU" : "CPU");
    if (grads[i].dtype != QT_F32)
      return qt_fail(QT_ERR_UNSUPPORTED, "optimizer: gradient %zu has dtype %s; F32 expected", i,
                     qt_dtype_name(grads[i].dtype));
    if (params[i].dtype != QT_F32 && params[i].dtype != QT_BF16)
      return qt_fail(QT_ERR_UNSUPPORTED, "optimizer: parameter %zu has dtype %s; F32 or BF16 expected",
                     i, qt_dtype_name(params[i].dtype));
  }
  opt->step++;
  qt_adamw_scalars k;
  qt_adamw_scalars_make(&opt->cfg, opt->step, lr, gnorm_scale, &k);
  if (opt->cfg.device == QT_DEV_CUDA) return step_cuda(opt, params, grads, &k, seed);
  for (size_t i = 0; i < opt->n_params; i++) {
    const qt_adamw_param *q = &opt->params[i];
    const float *g = grads[i].data;
    if (params[i].dtype == QT_F32) {
      float *p = params[i].data;
      if (q->state8)
        qt_adamw8_update_f32(p, g, q->code1, q->code2, q->absmax1, q->absmax2, &opt->qmap1,
                             &opt->qmap2, q->numel, &k);
      else
        qt_adamw32_update_f32(p, g, q->state1, q->state2, q->numel, &k);
    } else {
      uint16_t *p = params[i].data;
      if (q->state8)
        qt_adamw8_update_bf16(p, g, q->code1, q->code2, q->absmax1, q->absmax2, &opt->qmap1,
                              &opt->qmap2, q->numel, &k, seed, (uint32_t)i);
      else
        qt_adamw32_update_bf16(p, g, q->state1, q->state2, q->numel, &k, seed, (uint32_t)i);
    }
  }
  return QT_OK;
}

/* ---- state tensors ---- */

size_t qt_adamw_state_count(const qt_adamw *opt) {
  size_t c = 3;
  for (size_t i = 0; i < opt->n_params; i++) c += opt->params[i].state8 ? 4 : 2;
  return c;
}

static qt_st_write_tensor view(char *name, qt_dtype dt, int64_t len, const void *data) {
  qt_st_write_tensor t;
  memset(&t, 0, sizeof t);
  t.name = name;
  t.dtype = dt;
  t.ndim = 1;
  t.shape[0] = len;
  t.data = data;
  return t;
}

qt_status qt_adamw_state_fetch(qt_adamw *opt) {
#ifdef QLORA_HAVE_CUDA
  if (opt->cfg.device != QT_DEV_CUDA) return QT_OK;
  QT_TRY(qt_adamw_cuda_sync());
  if (opt->host_mem && opt->host_stale) {
    QT_TRY(qt_adamw_cuda_copy(opt->host_mem, opt->mem, opt->mem_bytes));
    opt->host_stale = false;
  }
#else
  (void)opt;
#endif
  return QT_OK;
}

void qt_adamw_state_tensors(const qt_adamw *opt, qt_st_write_tensor *out) {
  QT_ASSERTF(!opt->host_stale, "optimizer: device state not fetched; call qt_adamw_state_fetch "
             "before qt_adamw_state_tensors");
  char *nm = opt->names;
  size_t o = 0;
#define QT_NAME(...) (snprintf(nm, NAME_CAP, __VA_ARGS__), nm += NAME_CAP, nm - NAME_CAP)
  for (size_t i = 0; i < opt->n_params; i++) {
    const qt_adamw_param *q = &opt->params[i];
    if (q->state8) {
      out[o++] = view(QT_NAME("state.%zu.state1", i), QT_U8, q->numel, host_view(opt, q->code1));
      out[o++] = view(QT_NAME("state.%zu.state2", i), QT_U8, q->numel, host_view(opt, q->code2));
      out[o++] = view(QT_NAME("state.%zu.absmax1", i), QT_F32, q->nblocks,
                      host_view(opt, q->absmax1));
      out[o++] = view(QT_NAME("state.%zu.absmax2", i), QT_F32, q->nblocks,
                      host_view(opt, q->absmax2));
    } else {
      out[o++] = view(QT_NAME("state.%zu.state1", i), QT_F32, q->numel, host_view(opt, q->state1));
      out[o++] = view(QT_NAME("state.%zu.state2", i), QT_F32, q->numel, host_view(opt, q->state2));
    }
  }
  out[o++] = view(QT_NAME("qmap1"), QT_F32, 256, opt->qmap1.code);
  out[o++] = view(QT_NAME("qmap2"), QT_F32, 256, opt->qmap2.code);
  out[o++] = view(QT_NAME("step"), QT_I64, 1, &opt->step);
#undef QT_NAME
}

static const qt_st_write_tensor *find(const qt_st_write_tensor *in, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(in[i].name, name) == 0) return &in[i];
  return NULL;
}

qt_status qt_adamw_state_load(qt_adamw *opt, const qt_st_write_tensor *in, size_t n,
                              const char *label) {
  size_t count = qt_adamw_state_count(opt);
  if (n != count)
    return qt_fail(QT_ERR_FORMAT,
                   "%s: %zu optimizer tensors, this run's optimizer has %zu (different LoRA "
                   "targets, rank or optimizer?); resume from a matching checkpoint",
                   label, n, count);
  /* Device state: the views below are the host mirror, brought up to date
   * first so that a rejected file leaves device and mirror as they were. */
  QT_TRY(qt_adamw_state_fetch(opt));
  qt_st_write_tensor *want = malloc(count * sizeof *want);
  if (!want) return qt_fail(QT_ERR_NOMEM, "%s: out of memory", label);
  qt_adamw_state_tensors(opt, want);
  /* Validate everything before copying anything, so a bad file leaves the
   * optimizer as it was. */
  qt_status st = QT_OK;
  for (size_t i = 0; i < count && st == QT_OK; i++) {
    const qt_st_write_tensor *t = find(in, n, want[i].name);
    if (!t) {
      st = qt_fail(QT_ERR_FORMAT, "%s: optimizer tensor %s is missing", label, want[i].name);
    } else if (t->dtype != want[i].dtype || t->ndim != 1 || t->shape[0] != want[i].shape[0]) {
      st = qt_fail(QT_ERR_FORMAT, "%s: optimizer tensor %s is %s [%lld], expected %s [%lld]",
                   label, want[i].name, qt_dtype_name(t->dtype),
                   (long long)(t->ndim == 1 ? t->shape[0] : -1), qt_dtype_name(want[i].dtype),
                   (long long)want[i].shape[0]);
    } else if (strncmp(want[i].name, "qmap", 4) == 0) {
      float m[256];
      memcpy(m, t->data, sizeof m);
      bool ok = m[255] == 1.0f;
      for (int j = 0; j < 256 && ok; j++) ok = isfinite(m[j]) && (j == 0 || m[j] > m[j - 1]);
      if (!ok)
        st = qt_fail(QT_ERR_FORMAT,
                     "%s: %s is not 256 increasing finite values ending in 1.0; the checkpoint "
                     "is damaged", label, want[i].name);
    } else if (strcmp(want[i].name, "step") == 0) {
      int64_t s;
      memcpy(&s, t->data, sizeof s);
      if (s < 0) st = qt_fail(QT_ERR_FORMAT, "%s: optimizer step %lld < 0", label, (long long)s);
    }
  }
  if (st == QT_OK) {
    for (size_t i = 0; i < count; i++) {
      const qt_st_write_tensor *t = find(in, n, want[i].name);
      memcpy((void *)want[i].data, t->data, (size_t)want[i].shape[0] * qt_dtype_size(want[i].dtype));
    }
    float code[256];
    memcpy(code, opt->qmap1.code, sizeof code);
    qt_adamw_qmap_make(&opt->qmap1, code);
    memcpy(code, opt->qmap2.code, sizeof code);
    qt_adamw_qmap_make(&opt->qmap2, code);
#ifdef QLORA_HAVE_CUDA
    if (opt->host_mem) st = qt_adamw_cuda_copy(opt->mem, opt->host_mem, opt->mem_bytes);
#endif
    if (st == QT_OK) st = sync_dev_qmaps(opt);
  }
  free(want);
  return st;
}
