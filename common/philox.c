/* common/philox.c — Philox4x32-10 with cuRAND's stream layout (contract and
 * sources in philox.h). */
#include "common/philox.h"
#include "common/philox_hd.h"

#include <math.h>

/* The bijection is common/philox_hd.h's, the one definition the CUDA kernels
 * that draw dropout masks compile too. */
void qt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  qt_philox4x32_10_hd(ctr, key, out);
}

static void refill(qt_philox *s) { qt_philox4x32_10(s->ctr, s->key, s->out); }

/* Adds n to the low 64 bits of the counter with carry into the high words,
 * exactly as cuRAND's Philox_State_Incr(state, n) does, including its one
 * quirk: when the carry out of ctr[0] makes the high half of n wrap to 0
 * (n >= 2^64 - 2^32), that carry is dropped. skipahead passes n / 4 < 2^62, so
 * the quirk cannot be reached through this API; the code mirrors cuRAND anyway. */
static void ctr_add_lo(qt_philox *s, uint64_t n) {
  uint32_t nlo = (uint32_t)n;
  uint32_t nhi = (uint32_t)(n >> 32);
  s->ctr[0] += nlo;
  if (s->ctr[0] < nlo) nhi++;
  s->ctr[1] += nhi;
  if (nhi <= s->ctr[1]) return;
  if (++s->ctr[2]) return;
  ++s->ctr[3];
}

/* Adds n to the high 64 bits of the counter (Philox_State_Incr_hi). */
static void ctr_add_hi(qt_philox *s, uint64_t n) {
  uint32_t nlo = (uint32_t)n;
  uint32_t nhi = (uint32_t)(n >> 32);
  s->ctr[2] += nlo;
  if (s->ctr[2] < nlo) nhi++;
  s->ctr[3] += nhi;
}

/* 128-bit counter increment by one (Philox_State_Incr(state)). */
static void ctr_inc(qt_philox *s) {
  for (int i = 0; i < 4; i++)
    if (++s->ctr[i]) return;
}

void qt_philox_skipahead(qt_philox *s, uint64_t n) {
  s->idx += (uint32_t)(n & 3u);
  n /= 4;
  if (s->idx > 3) {
    n += 1;
    s->idx -= 4;
  }
  ctr_add_lo(s, n);
  refill(s);
}

void qt_philox_skipahead_sequence(qt_philox *s, uint64_t n) {
  ctr_add_hi(s, n);
  refill(s);
}

void qt_philox_init(qt_philox *s, uint64_t seed, uint64_t subsequence, uint64_t offset) {
  for (int i = 0; i < 4; i++) s->ctr[i] = 0;
  s->key[0] = (uint32_t)seed;
  s->key[1] = (uint32_t)(seed >> 32);
  s->idx = 0;
  s->has_normal = 0;
  s->normal_extra = 0.0f;
  qt_philox_skipahead_sequence(s, subsequence);
  qt_philox_skipahead(s, offset);
}

uint32_t qt_philox_next_u32(qt_philox *s) {
  uint32_t r = s->out[s->idx++];
  if (s->idx == 4) { /* keep out[idx] always valid: move to the next block now */
    ctr_inc(s);
    refill(s);
    s->idx = 0;
  }
  return r;
}

void qt_philox_next_u32x4(qt_philox *s, uint32_t out[4]) {
  uint32_t old[4] = {s->out[0], s->out[1], s->out[2], s->out[3]};
  ctr_inc(s);
  refill(s);
  /* words idx..3 of the old block, then 0..idx-1 of the new; idx is unchanged */
  for (uint32_t i = 0; i < 4; i++) {
    uint32_t j = s->idx + i;
    out[i] = j < 4 ? old[j] : s->out[j - 4];
  }
}

/* 2^-32 and 2^-33 (CURAND_2POW32_INV is 2.3283064e-10f, which is 2^-32 exactly).
 * float(u) * 2^-32 is exact, so only the addition rounds, once, with or without
 * a fused multiply-add. */
float qt_philox_uniform_from_u32(uint32_t u) { return (float)u * 0x1p-32f + 0x1p-33f; }

float qt_philox_next_uniform(qt_philox *s) {
  return qt_philox_uniform_from_u32(qt_philox_next_u32(s));
}

float qt_philox_next_normal(qt_philox *s) {
  if (s->has_normal) {
    s->has_normal = 0;
    return s->normal_extra;
  }
  uint32_t x = qt_philox_next_u32(s);
  uint32_t y = qt_philox_next_u32(s);
  /* Box-Muller as the host branch of cuRAND's _curand_box_muller
   * (curand_normal.h): u as in curand_uniform, angle v = y * step + step / 2
   * with step = CURAND_2POW32_INV_2PI = 2^-32 * 6.2831855f (exact in float),
   * r = sqrtf(-2 logf(u)), sinf / cosf. The product and the sum are separate
   * statements so that no compiler fuses them into an fma (the host branch
   * rounds twice; nvcc's device code fuses and uses __sincosf, see philox.h). */
  const float step = 0x1p-32f * 6.2831855f;
  float u = qt_philox_uniform_from_u32(x);
  float vy = (float)y * step;
  float v = vy + step / 2.0f;
  float r = sqrtf(-2.0f * logf(u));
  s->normal_extra = cosf(v) * r;
  s->has_normal = 1;
  return sinf(v) * r;
}

void qt_philox_fill_u32(qt_philox *s, uint32_t *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = qt_philox_next_u32(s);
}

void qt_philox_fill_uniform(qt_philox *s, float *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = qt_philox_next_uniform(s);
}
