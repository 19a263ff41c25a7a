/* optim/optim_hd.h — the per-element and per-chunk math of the optimizer step,
 * written once for the CPU (adamw_cpu.c, clip.c), the CUDA kernels
 * (adamw_cuda.cu, clip_cuda.cu) and the host-compiled test
 * (tests/optim/test_optim_hd_host.cu, which runs these functions as nvcc
 * compiles them against the CPU code and bitsandbytes' golden trajectories).
 *
 * Small `static inline` helpers, `__host__ __device__` under nvcc; no state,
 * no allocation. Formulas and their sources: optim/optim.h. Bit-exactness: the
 * callers build with -ffp-contract=off (C) and --fmad=false (CUDA), so every
 * fp32 operation below rounds the same on both sides; sqrtf and division are
 * IEEE (nvcc -prec-sqrt=true -prec-div=true, the defaults).
 *
 * Global norm (qt_optim_global_norm, clip_cuda.cu): the gradients are cut into
 * chunks of QT_OPTIM_NORM_CHUNK elements, tensor by tensor (a tensor's last
 * chunk may be short; an empty tensor has none), numbered in that order across
 * all tensors. Each chunk's sum of squares is taken sequentially in double
 * (qt_optim_sumsq_*: the square of a float is exact in double, so a fused
 * multiply-add rounds the same); chunk sums are added sequentially in groups
 * of QT_OPTIM_NORM_GROUP consecutive chunks, the group sums sequentially, and
 * norm = sqrt(total). A fixed order, so the CPU (any thread count) and the GPU
 * give the same double bit for bit. */
#ifndef QT_OPTIM_OPTIM_HD_H
#define QT_OPTIM_OPTIM_HD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "optim/optim.h"

#ifdef __CUDACC__
#define QT_OPTIM_HD __host__ __device__
#else
#define QT_OPTIM_HD
#endif

enum {
  QT_OPTIM_NORM_CHUNK = 1024,  /* elements per partial sum of squares */
  QT_OPTIM_NORM_GROUP = 1024   /* chunk partials per group sum */
};

/* ---- AdamW, per element (kernels.cu kOptimizer32bit2State /
 * kOptimizerStatic8bit2StateBlockwise, ADAM; optim.h) ---- */

/* The parameter step shared by both state widths, from the new states s1 = m,
 * s2 = v: p + step_size * (m / (sqrt(v) + eps * c2)), then the decoupled decay
 * p * (1 - lr * wd) when wd > 0 (update_scale is 1: 1.0f * step_size is exact). */
static inline QT_OPTIM_HD float qt_adamw_param_step(float p, float s1, float s2,
                                                    const qt_adamw_scalars *k) {
  float pv = p + k->step_size * (s1 / (sqrtf(s2) + k->eps * k->correction2));
  if (k->weight_decay > 0.0f) pv = pv * (1.0f - k->lr * k->weight_decay);
  return pv;
}

/* 32-bit state: m, v updated in place, the new parameter returned. No
 * non-finite rule (bitsandbytes' 32-bit kernel has none). */
static inline QT_OPTIM_HD float qt_adamw32_elem(float p, float g, float *m, float *v,
                                                const qt_adamw_scalars *k) {
  float gv = k->gnorm_scale * g;
  float s1 = *m * k->beta1 + (1.0f - k->beta1) * gv;
  float s2 = *v * k->beta2 + (1.0f - k->beta2) * (gv * gv);
  *m = s1;
  *v = s2;
  return qt_adamw_param_step(p, s1, s2, k);
}

/* 8-bit state, first half: the new states of one element from its gradient and
 * its decoded old states m0 = qmap1[code1] * absmax1, v0 = qmap2[code2] *
 * absmax2. Returns 0 for a non-finite gradient, whose states become 0 and whose
 * parameter stays (the kernel's rule), else 1. v uses ((1-beta2)*g)*g. */
static inline QT_OPTIM_HD int qt_adamw8_states(float g, float m0, float v0,
                                               const qt_adamw_scalars *k, float *s1, float *s2) {
  if (!isfinite(g)) {
    *s1 = 0.0f;
    *s2 = 0.0f;
    return 0;
  }
  float gv = g * k->gnorm_scale;
  *s2 = v0 * k->beta2 + ((1.0f - k->beta2) * gv) * gv;
  *s1 = m0 * k->beta1 + (1.0f - k->beta1) * gv;
  return 1;
}

/* The threshold encoder of qt_adamw_qmap (optim.h): #{k : x >= thr[k]} by a
 * branch-free binary search; NaN -> 0. */
static inline QT_OPTIM_HD uint8_t qt_adamw_encode(const float *thr, float x) {
  unsigned idx = 0;
  for (unsigned step = 128; step > 0; step >>= 1) idx += (x >= thr[idx + step]) ? step : 0;
  return (uint8_t)idx;
}

/* The m code of state s1 in a block of absmax a1, with bitsandbytes' sign
 * fix-up: if signbit(code[c]) != signbit(s1), c += (s1 > 0) ? 1 : -1 (uint8).
 * 0/0 (an all-zero block) is NaN -> code 0 -> 255 after the fix-up, as on the
 * GPU. */
static inline QT_OPTIM_HD uint8_t qt_adamw8_encode_m(const float *code, const float *thr, float s1,
                                                     float a1) {
  uint8_t c = qt_adamw_encode(thr, s1 / a1);
  if (signbit(code[c]) != signbit(s1)) c = (uint8_t)(c + (s1 > 0.0f ? 1 : -1));
  return c;
}

/* The v code of state s2 in a block of absmax a2 (unsigned map, no fix-up). */
static inline QT_OPTIM_HD uint8_t qt_adamw8_encode_v(const float *thr, float s2, float a2) {
  return qt_adamw_encode(thr, s2 / a2);
}

/* bf16 <-> fp32 for the parameter load and the stochastic-rounding store: the
 * device twins of common/half.c qt_bf16_to_f32 and qt_bf16_from_f32_sr (add the
 * low 16 bits of the random word to the fp32 pattern, keep the high 16; NaN ->
 * 0x7FFF), checked against them by tests/optim/test_optim_hd_host.cu. */
static inline QT_OPTIM_HD float qt_optim_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

static inline QT_OPTIM_HD uint16_t qt_optim_bf16_from_f32_sr(float x, uint32_t rnd) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFFu;
  u += rnd & 0xFFFFu;
  return (uint16_t)(u >> 16);
}

/* ---- global norm, clipping, non-finite decision ---- */

/* Sequential double sum of squares of x[0..n) (one chunk). */
static inline QT_OPTIM_HD double qt_optim_sumsq_f32(const float *x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
  return s;
}

static inline QT_OPTIM_HD double qt_optim_sumsq_bf16(const uint16_t *x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) {
    double v = qt_optim_bf16_to_f32(x[i]);
    s += v * v;
  }
  return s;
}

/* The tensor holding flat chunk c (0 <= c < first[n]), first[k] being the
 * index of tensor k's first chunk (first[n] = the number of chunks): the last
 * k with first[k] <= c, which passes over empty tensors (they share their
 * successor's first chunk). */
static inline QT_OPTIM_HD int64_t qt_optim_chunk_tensor(const int64_t *first, int64_t n,
                                                        int64_t c) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo + 1) / 2;
    if (first[mid] <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

/* Sequential sum of x[0..n) in double, from 0 (the group and total combine). */
static inline QT_OPTIM_HD double qt_optim_sum_ordered(const double *x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  return s;
}

/* transformers / torch clip_grad_norm_: clamp(max_norm / (norm + 1e-6), max=1),
 * in double, returned as float; 1 when max_norm <= 0 (clipping off). A NaN
 * norm gives 1 and +Inf gives 0 (the step is skipped either way). */
static inline QT_OPTIM_HD float qt_optim_clip_coef_of(double norm, double max_norm) {
  if (!(max_norm > 0.0)) return 1.0f;
  double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? (float)c : 1.0f;
}

/* The non-finite policy's decision: a step whose global norm is NaN or Inf is
 * skipped (optimizer state and parameters untouched). */
static inline QT_OPTIM_HD int qt_optim_norm_skips(double norm) { return !isfinite(norm); }

#endif
