/* common/half.c — bf16/fp16 <-> fp32 conversions (contract in half.h).
 * Integer bit manipulation only: the result never depends on the FPU's rounding
 * mode, flush-to-zero settings or the compiler's floating-point contraction. */
#include "common/half.h"

#include <string.h>

static uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float f32_from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

uint16_t qt_bf16_from_f32(float x) {
  uint32_t u = f32_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return QT_HALF_CANONICAL_NAN;
  /* RNE on the 16 dropped bits: add 0x7FFF plus the lowest kept bit, so that an
   * exact tie (dropped bits 0x8000) carries only when the kept part is odd.
   * A carry out of the mantissa increments the exponent, which is the correct
   * next value (up to inf); it cannot overflow 32 bits since u <= 0xFF800000. */
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float qt_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t qt_bf16_from_f32_sr(float x, uint32_t rnd) {
  uint32_t u = f32_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return QT_HALF_CANONICAL_NAN;
  /* P(carry into bit 16) = P((rnd & 0xFFFF) >= 2^16 - low) = low / 2^16 when the
   * low 16 bits of rnd are uniform: round away from zero with probability equal
   * to the dropped fraction (half.h cites the definition). Inf has low bits 0 and
   * never carries. */
  u += rnd & 0xFFFFu;
  return (uint16_t)(u >> 16);
}

uint16_t qt_f16_from_f32(float x) {
  uint32_t u = f32_bits(x);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return QT_HALF_CANONICAL_NAN;
  /* 0x477FF000 = 65520 = 65504 + half an fp16 ulp (16): a tie whose even
   * neighbour is 2^16, i.e. inf; every larger value (and inf) is inf too. */
  if (u >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);
  if (u >= 0x38800000u) {
    /* Normal fp16 (|x| >= 2^-14): RNE on the 13 dropped mantissa bits, then
     * rebias the exponent from 127 to 15 (subtract 112 << 23). A mantissa carry
     * bumps the exponent, which is again the correct value. */
    u += 0xFFFu + ((u >> 13) & 1u);
    u -= 0x38000000u;
    return (uint16_t)(sign | (u >> 13));
  }
  /* |x| < 2^-14: the result is an fp16 subnormal k * 2^-24 (or the smallest
   * normal 2^-14 when k rounds up to 0x400, which encodes exactly that). */
  if (u < 0x33000000u) return sign; /* |x| < 2^-25: below half the smallest subnormal */
  uint32_t e = u >> 23;                             /* 102 .. 112 */
  uint32_t m = (u & 0x007FFFFFu) | 0x00800000u;     /* |x| = m * 2^(e - 150) */
  uint32_t shift = 126u - e;                        /* k = m * 2^(e - 126): 14 .. 24 */
  uint32_t k = m >> shift;
  uint32_t rem = m & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (k & 1u))) k++;
  return (uint16_t)(sign | k);
}

float qt_f16_to_f32(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
  uint32_t exp = ((uint32_t)h >> 10) & 0x1Fu;
  uint32_t man = (uint32_t)h & 0x3FFu;
  if (exp == 0x1Fu) {
    /* inf keeps its sign; any NaN becomes CUDA's canonical NaN (half.h) */
    if (man == 0) return f32_from_bits(sign | 0x7F800000u);
    return f32_from_bits(QT_F32_CANONICAL_NAN);
  }
  if (exp == 0) {
    if (man == 0) return f32_from_bits(sign);
    /* subnormal man * 2^-24: normalise so the leading 1 sits at bit 10 */
    uint32_t e = 113; /* fp32 biased exponent of 2^-14 */
    while (!(man & 0x400u)) {
      man <<= 1;
      e--;
    }
    return f32_from_bits(sign | (e << 23) | ((man & 0x3FFu) << 13));
  }
  return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

void qt_bf16_from_f32_n(uint16_t *dst, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = qt_bf16_from_f32(src[i]);
}

void qt_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = qt_bf16_to_f32(src[i]);
}

void qt_f16_from_f32_n(uint16_t *dst, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = qt_f16_from_f32(src[i]);
}

void qt_f16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = qt_f16_to_f32(src[i]);
}

void qt_bf16_from_f32_sr_n(uint16_t *dst, const float *src, const uint32_t *rnd, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = qt_bf16_from_f32_sr(src[i], rnd[i]);
}
