/* common/philox_mask.c — dropout keep masks drawn from cuRAND's Philox stream,
 * many blocks at a time (contract in philox.h, qt_philox_keep_mask).
 *
 * keep[i] = curand_uniform(word i) > p. The word -> uniform map
 * (qt_philox_uniform_from_u32) is monotone non-decreasing in the word (float
 * conversion and one rounded addition, both monotone), so the comparison is
 * the integer test word > T with T the largest word whose uniform is <= p,
 * found once by bisection over the exact scalar map. The Philox rounds then run
 * on 16 independent counter blocks at once: in the 32-bit lanes of AVX-512
 * (with BW and BMI2, for the byte output) or AVX2 registers (32x32 -> 64-bit
 * products by vpmuludq on even and shifted odd lanes), chosen at run time by
 * the CPU's features, or one block at a time
 * through the scalar bijection elsewhere. Every word is the scalar
 * generator's word, so the mask is bit-identical to drawing it one uniform at a
 * time (tests/common/test_philox.c checks each version across thresholds and
 * lengths). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/philox.h"
#include "common/philox_hd.h"
#include "common/status.h"

enum {
  LANES = 16,                 /* counter blocks per group: 64 words */
  GROUP = 4 * LANES,
  MASK_CHUNK = 64 * GROUP,    /* words per OpenMP iteration (a multiple of GROUP) */
};

/* The round constants of the one bijection (common/philox_hd.h; Salmon et al.
 * 2011, table 2), for the vector versions below. */
#define M0 QT_PHILOX_M0
#define M1 QT_PHILOX_M1
#define W0 QT_PHILOX_W0
#define W1 QT_PHILOX_W1

/* Largest word whose uniform is <= p, or -1 when even word 0's is above p
 * (philox.h). */
int64_t qt_philox_keep_threshold(float p) {
  if (!(qt_philox_uniform_from_u32(0) <= p)) return -1;
  uint64_t lo = 0, hi = UINT32_MAX; /* invariant: uniform(lo) <= p */
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo + 1) / 2;
    if (qt_philox_uniform_from_u32((uint32_t)mid) <= p) lo = mid;
    else hi = mid - 1;
  }
  return (int64_t)lo;
}

/* keep[0 .. 4 LANES) for the counter blocks b0 .. b0 + LANES of subsequence
 * (s_lo, s_hi) under key (k0, k1): word w of block b0 + j goes to keep[4 j + w].
 * The portable version, one block at a time through the scalar bijection. */
static void group_mask_scalar(uint8_t *keep, uint64_t b0, uint32_t s_lo, uint32_t s_hi,
                              uint32_t k0, uint32_t k1, uint32_t T) {
  const uint32_t key[2] = {k0, k1};
  for (int j = 0; j < LANES; j++) {
    uint64_t b = b0 + (uint64_t)j;
    uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), s_lo, s_hi}, out[4];
    qt_philox4x32_10_hd(ctr, key, out);
    for (int w = 0; w < 4; w++) keep[4 * j + w] = out[w] > T;
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_X86_GROUPS 1

/* Interleaves four byte vectors b0..b3 (n = 8 or 16 valid bytes each) into
 * keep[4 j + w] = b_w[j]. */
__attribute__((target("avx2"))) static void interleave4(uint8_t *keep, __m128i b0, __m128i b1,
                                                        __m128i b2, __m128i b3, int n) {
  __m128i t0 = _mm_unpacklo_epi8(b0, b1), t2 = _mm_unpacklo_epi8(b2, b3);
  _mm_storeu_si128((__m128i *)(void *)keep, _mm_unpacklo_epi16(t0, t2));
  _mm_storeu_si128((__m128i *)(void *)(keep + 16), _mm_unpackhi_epi16(t0, t2));
  if (n == 16) {
    __m128i t1 = _mm_unpackhi_epi8(b0, b1), t3 = _mm_unpackhi_epi8(b2, b3);
    _mm_storeu_si128((__m128i *)(void *)(keep + 32), _mm_unpacklo_epi16(t1, t3));
    _mm_storeu_si128((__m128i *)(void *)(keep + 48), _mm_unpackhi_epi16(t1, t3));
  }
}

/* G groups of 16 blocks per call (G = 1, or 2 for the main loop: two
 * independent chains keep the multiplier busy while each round's products
 * wait on the previous round), in the 32-bit lanes of zmm registers; group g
 * covers blocks b0 + 16 g .. b0 + 16 g + 15. mul_epu32 multiplies the even
 * lanes (pe: 64-bit products of lanes 0, 2, ..); the odd lanes go through a
 * 32-bit right shift first (po: products of lanes 1, 3, ..). One two-source
 * permute per half then gathers the high (low) words back into lane order:
 * lane 2i from pe's dword 2i+1 (2i), lane 2i+1 from po's dword 2i+1 (2i); it
 * replaces a shift and a blend per half, and runs on the port the multiplies
 * and shifts leave free. */
#define PHILOX_AVX512_GROUPS(G)                                                                    \
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); \
  const __m512i m0 = _mm512_set1_epi32((int)M0), m1 = _mm512_set1_epi32((int)M1);              \
  const __m512i take_hi = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29,  \
                                            15, 31);                                           \
  const __m512i take_lo = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28,  \
                                            14, 30);                                           \
  __m512i c0[G], c1[G], c2[G], c3[G];                                                          \
  for (int g = 0; g < G; g++) {                                                                \
    /* b0 + 16 g is a multiple of 16, so + j does not carry out of the low word */             \
    uint64_t bg = b0 + 16u * (uint64_t)g;                                                      \
    c0[g] = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)bg), lanes);                     \
    c1[g] = _mm512_set1_epi32((int)(uint32_t)(bg >> 32));                                      \
    c2[g] = _mm512_set1_epi32((int)s_lo);                                                      \
    c3[g] = _mm512_set1_epi32((int)s_hi);                                                      \
  }                                                                                            \
  uint32_t ka = k0, kb = k1;                                                                   \
  for (int round = 0; round < 10; round++) {                                                   \
    if (round > 0) {                                                                           \
      ka += W0;                                                                                \
      kb += W1;                                                                                \
    }                                                                                          \
    const __m512i va = _mm512_set1_epi32((int)ka), vb = _mm512_set1_epi32((int)kb);            \
    for (int g = 0; g < G; g++) {                                                              \
      __m512i pe0 = _mm512_mul_epu32(c0[g], m0);                                               \
      __m512i po0 = _mm512_mul_epu32(_mm512_srli_epi64(c0[g], 32), m0);                        \
      __m512i pe1 = _mm512_mul_epu32(c2[g], m1);                                               \
      __m512i po1 = _mm512_mul_epu32(_mm512_srli_epi64(c2[g], 32), m1);                        \
      __m512i hi0 = _mm512_permutex2var_epi32(pe0, take_hi, po0);                              \
      __m512i lo0 = _mm512_permutex2var_epi32(pe0, take_lo, po0);                              \
      __m512i hi1 = _mm512_permutex2var_epi32(pe1, take_hi, po1);                              \
      __m512i lo1 = _mm512_permutex2var_epi32(pe1, take_lo, po1);                              \
      c0[g] = _mm512_xor_si512(_mm512_xor_si512(hi1, c1[g]), va);                              \
      c2[g] = _mm512_xor_si512(_mm512_xor_si512(hi0, c3[g]), vb);                              \
      c1[g] = lo1;                                                                             \
      c3[g] = lo0;                                                                             \
    }                                                                                          \
  }                                                                                            \
  const __m512i t = _mm512_set1_epi32((int)T);                                                 \
  const __m512i one = _mm512_set1_epi8(1);                                                     \
  for (int g = 0; g < G; g++) {                                                                \
    /* bit j of word w's compare mask is keep[4 j + w]: deposit the four masks      \
     * into every fourth bit of one 64-bit byte mask (pdep) and store 64 bytes */ \
    const __m512i cw[4] = {c0[g], c1[g], c2[g], c3[g]};                                        \
    uint64_t bits = 0;                                                                         \
    for (int w = 0; w < 4; w++)                                                                \
      bits |= _pdep_u64((uint64_t)_mm512_cmpgt_epu32_mask(cw[w], t),                           \
                        0x1111111111111111ull << w);                                           \
    _mm512_storeu_si512((void *)(keep + GROUP * g), _mm512_maskz_mov_epi8(bits, one));         \
  }

__attribute__((target("avx512f,avx512bw,avx2,bmi2"))) static void group_mask_avx512(
    uint8_t *keep, uint64_t b0, uint32_t s_lo, uint32_t s_hi, uint32_t k0, uint32_t k1,
    uint32_t T) {
  PHILOX_AVX512_GROUPS(1)
}

/* Two groups: keep[0 .. 2 GROUP) for blocks b0 .. b0 + 2 LANES. */
__attribute__((target("avx512f,avx512bw,avx2,bmi2"))) static void group2_mask_avx512(
    uint8_t *keep, uint64_t b0, uint32_t s_lo, uint32_t s_hi, uint32_t k0, uint32_t k1,
    uint32_t T) {
  PHILOX_AVX512_GROUPS(2)
}
#undef PHILOX_AVX512_GROUPS

/* The same in ymm registers, 8 blocks per half, two halves per group. */
__attribute__((target("avx2"))) static void group_mask_avx2(uint8_t *keep, uint64_t b0,
                                                            uint32_t s_lo, uint32_t s_hi,
                                                            uint32_t k0, uint32_t k1,
                                                            uint32_t T) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_set1_epi32((int)M0), m1 = _mm256_set1_epi32((int)M1);
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  const __m256i t = _mm256_xor_si256(_mm256_set1_epi32((int)T), sign);
  const __m256i one = _mm256_set1_epi32(1);
  /* byte 0 of each dword to the low 4 bytes of each 128-bit half, then both halves low */
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                        -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                        -1, -1);
  const __m256i join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
  for (int half = 0; half < 2; half++) {
    uint64_t bh = b0 + 8u * (uint64_t)half;
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)bh), lanes);
    __m256i c1 = _mm256_set1_epi32((int)(uint32_t)(bh >> 32));
    __m256i c2 = _mm256_set1_epi32((int)s_lo), c3 = _mm256_set1_epi32((int)s_hi);
    uint32_t ka = k0, kb = k1;
    for (int round = 0; round < 10; round++) {
      if (round > 0) {
        ka += W0;
        kb += W1;
      }
      __m256i pe0 = _mm256_mul_epu32(c0, m0), po0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
      __m256i pe1 = _mm256_mul_epu32(c2, m1), po1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
      __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(pe0, 32), po0, 0xAA);
      __m256i lo0 = _mm256_blend_epi32(pe0, _mm256_slli_epi64(po0, 32), 0xAA);
      __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(pe1, 32), po1, 0xAA);
      __m256i lo1 = _mm256_blend_epi32(pe1, _mm256_slli_epi64(po1, 32), 0xAA);
      __m256i r0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)ka));
      __m256i r2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)kb));
      c0 = r0;
      c1 = lo1;
      c2 = r2;
      c3 = lo0;
    }
    const __m256i cw[4] = {c0, c1, c2, c3};
    __m128i b[4];
    for (int w = 0; w < 4; w++) {
      /* unsigned c > T as signed compare after flipping the sign bits */
      __m256i k = _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_xor_si256(cw[w], sign), t), one);
      b[w] = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(k, pick), join));
    }
    interleave4(keep + 32 * half, b[0], b[1], b[2], b[3], 8);
  }
}
#endif

typedef void (*group_fn)(uint8_t *, uint64_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t);

/* The widest version this CPU runs (*pair: the same for two groups at once, or
 * NULL); QT_PHILOX_MASK=scalar|avx2 forces a narrower one (the tests compare
 * them all). */
static group_fn pick_group(group_fn *pair) {
  *pair = NULL;
#ifdef HAVE_X86_GROUPS
  const char *force = getenv("QT_PHILOX_MASK");
  if (force && strcmp(force, "scalar") == 0) return group_mask_scalar;
  __builtin_cpu_init();
  bool avx2 = __builtin_cpu_supports("avx2");
  if (force && strcmp(force, "avx2") == 0) return avx2 ? group_mask_avx2 : group_mask_scalar;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("bmi2")) {
    *pair = group2_mask_avx512;
    return group_mask_avx512;
  }
  if (avx2) return group_mask_avx2;
#endif
  return group_mask_scalar;
}

void qt_philox_keep_mask(uint8_t *keep, int64_t n, float p, uint64_t seed, uint64_t subsequence) {
  QT_ASSERT(n >= 0 && (keep || n == 0));
  int64_t T = qt_philox_keep_threshold(p);
  if (T < 0) {
    memset(keep, 1, (size_t)n);
    return;
  }
  uint32_t s_lo = (uint32_t)subsequence, s_hi = (uint32_t)(subsequence >> 32);
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  group_fn group_pair, group_mask = pick_group(&group_pair);
  int64_t chunks = (n + MASK_CHUNK - 1) / MASK_CHUNK;
#pragma omp parallel for schedule(static) if (n >= 4 * MASK_CHUNK)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t start = c * MASK_CHUNK;
    int64_t end = start + MASK_CHUNK < n ? start + MASK_CHUNK : n;
    int64_t i = start;
    if (group_pair)
      for (; i + 2 * GROUP <= end; i += 2 * GROUP)
        group_pair(keep + i, (uint64_t)i / 4, s_lo, s_hi, k0, k1, (uint32_t)T);
    for (; i + GROUP <= end; i += GROUP)
      group_mask(keep + i, (uint64_t)i / 4, s_lo, s_hi, k0, k1, (uint32_t)T);
    if (i < end) { /* the tail: a whole group into a scratch buffer */
      uint8_t tail[GROUP];
      group_mask(tail, (uint64_t)i / 4, s_lo, s_hi, k0, k1, (uint32_t)T);
      memcpy(keep + i, tail, (size_t)(end - i));
    }
  }
}
