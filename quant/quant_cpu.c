/* quant/quant_cpu.c — OpenMP fast paths, bit-identical to quant_ref.c (tests
 * check every function against its _ref twin). Only the loop structure differs:
 * blocks are spread over threads and the 4-bit decision trees are replaced by
 * branch-free threshold counts that compilers vectorize. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "quant/quant.h"

static int nthreads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

/* NF4: dQuantizeNF4 is a binary tree over these 15 increasing thresholds with
 * strict `>`, so code = number of thresholds x exceeds (NaN exceeds none -> 0). */
static const float nf4_thr[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,  0.2035212516784668f,  0.2920137718319893f,  0.3893125355243683f,
    0.5016634166240692f,  0.6427869200706482f,  0.8614784181118011f};
/* FP4: the dQuantizeFP4 thresholds on |x| sorted increasingly; the count is the
 * magnitude rank, mapped to the code's low 3 bits (0, 0.0625, 2, 3, 4, 6, 8, 12
 * are codes 0, 1, 6, 7, 4, 5, 2, 3). */
static const float fp4_thr[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                 0.4166667f,  0.583333f,  0.8333333f};

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Same rounding as qt_quant_f32_to_bf16, inlined into the hot loops. */
static inline uint16_t f32_to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)0x7fff : (uint16_t)r;
}

/* The loops below are written so that GCC vectorizes them (straight-line
 * compares and selects, no reductions across lanes); target_clones adds an
 * AVX2 version picked at load time. */
#define QT_CLONES __attribute__((target_clones("avx2", "default")))

/* max |x| with NaN ignored: 8 independent running maxima (max is exact and
 * order-free, so this equals the reference's sequential fmaxf). */
QT_CLONES static float absmax_of(const float *x, int64_t len) {
  float m8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= len; i += 8)
    for (int k = 0; k < 8; k++) {
      float a = fabsf(x[i + k]);
      m8[k] = a > m8[k] ? a : m8[k];
    }
  float m = 0.0f;
  for (; i < len; i++) {
    float a = fabsf(x[i]);
    m = a > m ? a : m;
  }
  for (int k = 0; k < 8; k++) m = m8[k] > m ? m8[k] : m;
  return m;
}

QT_CLONES static void encode_nf4_n(const float *x, int64_t len, float inv, uint8_t *codes) {
  for (int64_t i = 0; i < len; i++) {
    float v = x[i] * inv;
    int c = (v > nf4_thr[0]) + (v > nf4_thr[1]) + (v > nf4_thr[2]) + (v > nf4_thr[3]) +
            (v > nf4_thr[4]) + (v > nf4_thr[5]) + (v > nf4_thr[6]) + (v > nf4_thr[7]) +
            (v > nf4_thr[8]) + (v > nf4_thr[9]) + (v > nf4_thr[10]) + (v > nf4_thr[11]) +
            (v > nf4_thr[12]) + (v > nf4_thr[13]) + (v > nf4_thr[14]);
    codes[i] = (uint8_t)c;
  }
}

QT_CLONES static void encode_fp4_n(const float *x, int64_t len, float inv, uint8_t *codes) {
  for (int64_t i = 0; i < len; i++) {
    float v = x[i] * inv;
    float a = fabsf(v);
    int r = (a > fp4_thr[0]) + (a > fp4_thr[1]) + (a > fp4_thr[2]) + (a > fp4_thr[3]) +
            (a > fp4_thr[4]) + (a > fp4_thr[5]) + (a > fp4_thr[6]);
    /* magnitude rank 0..7 -> code bits 0, 1, 6, 7, 4, 5, 2, 3 (dQuantizeFP4's leaves) */
    int code = r + 4 * (r >= 2) - 4 * (r >= 4) - 4 * (r >= 6);
    codes[i] = (uint8_t)(code | (v < 0 ? 8 : 0));
  }
}

QT_CLONES static void pack_nibbles(const uint8_t *codes, int64_t pairs, uint8_t *packed) {
  for (int64_t j = 0; j < pairs; j++) packed[j] = (uint8_t)(codes[2 * j] << 4 | codes[2 * j + 1]);
}

QT_CLONES static void widen_bf16(const uint16_t *x, int64_t len, float *out) {
  for (int64_t i = 0; i < len; i++) out[i] = bf16_to_f32(x[i]);
}

/* One 4-bit block of len <= blocksize values already widened to fp32. */
static void quantize_block4(qt_quant_type t, const float *x, int64_t len, uint8_t *packed,
                            float *absmax_out) {
  float m = absmax_of(x, len);
  *absmax_out = m;
  float inv = 1.0f / m;
  uint8_t codes[QT_QUANT_MAX_BLOCKSIZE];
  if (t == QT_QUANT_NF4) encode_nf4_n(x, len, inv, codes);
  else encode_fp4_n(x, len, inv, codes);
  if (len & 1) { /* the CUDA block load pads with 0.0, normalized like the rest */
    float zero = 0.0f;
    if (t == QT_QUANT_NF4) encode_nf4_n(&zero, 1, inv, codes + len);
    else encode_fp4_n(&zero, 1, inv, codes + len);
  }
  pack_nibbles(codes, (len + 1) / 2, packed);
}

void qt_quant_4bit_quantize(qt_quant_type t, const float *x, int64_t n, int blocksize,
                            uint8_t *packed, float *absmax, int threads) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  int64_t nb = qt_quant_nblocks(n, blocksize);
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    quantize_block4(t, x + start, len, packed + start / 2, absmax + b);
  }
}

void qt_quant_4bit_quantize_bf16(qt_quant_type t, const uint16_t *x_bf16, int64_t n,
                                 int blocksize, uint8_t *packed, float *absmax, int threads) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  int64_t nb = qt_quant_nblocks(n, blocksize);
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    float buf[QT_QUANT_MAX_BLOCKSIZE];
    widen_bf16(x_bf16 + start, len, buf);
    quantize_block4(t, buf, len, packed + start / 2, absmax + b);
  }
}

/* One block's 4-bit codes to values: o[2j] = table[p[j] >> 4] * am,
 * o[2j+1] = table[p[j] & 15] * am, j < pairs (fp32, or rounded to bf16 as
 * f32_to_bf16). The portable loops index the table per value, which compilers
 * do not vectorize; the AVX-512 versions look 16 codes up at once in a
 * register (vpermps over the 16-entry table) and compute the same fp32
 * products (a multiply, no FMA) and the same rounding, so the bits equal the
 * portable loops' (the quant tests compare every path with quant_ref.c). On a
 * 1B model at 250 tokens a step these expansions were the largest cost of a
 * bf16 training step (three per weight: forward, recompute, backward). */
typedef void (*dq4_span_fn)(const float *table, const uint8_t *p, int64_t pairs, float am, void *o);

static void dq4_span_f32(const float *table, const uint8_t *p, int64_t pairs, float am, void *out) {
  float *o = out;
  for (int64_t j = 0; j < pairs; j++) {
    o[2 * j] = table[p[j] >> 4] * am;
    o[2 * j + 1] = table[p[j] & 0x0f] * am;
  }
}

static void dq4_span_bf16(const float *table, const uint8_t *p, int64_t pairs, float am, void *out) {
  uint16_t *o = out;
  for (int64_t j = 0; j < pairs; j++) {
    o[2 * j] = f32_to_bf16(table[p[j] >> 4] * am);
    o[2 * j + 1] = f32_to_bf16(table[p[j] & 0x0f] * am);
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

/* 16 packed bytes -> the 16 first (high nibble) and 16 second (low nibble) values */
QT_AVX512 static inline void dq4_16(__m512 tab, __m512 vam, const uint8_t *p, __m512 *hi,
                                    __m512 *lo) {
  __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
  *hi = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(w, 4), tab), vam);
  *lo = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(w, _mm512_set1_epi32(15)), tab), vam);
}

/* f32_to_bf16 on 16 lanes, the result in each lane's low 16 bits */
QT_AVX512 static inline __m512i bf16_16(__m512 x) {
  __m512i u = _mm512_castps_si512(x);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                          _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fff));
}

QT_AVX512 static void dq4_span_f32_avx512(const float *table, const uint8_t *p, int64_t pairs,
                                          float am, void *out) {
  float *o = out;
  __m512 tab = _mm512_loadu_ps(table), vam = _mm512_set1_ps(am);
  /* lanes 0..7 of hi and lo interleaved, then lanes 8..15 */
  const __m512i i0 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i i1 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  int64_t j = 0;
  for (; j + 16 <= pairs; j += 16) {
    __m512 hi, lo;
    dq4_16(tab, vam, p + j, &hi, &lo);
    _mm512_storeu_ps(o + 2 * j, _mm512_permutex2var_ps(hi, i0, lo));
    _mm512_storeu_ps(o + 2 * j + 16, _mm512_permutex2var_ps(hi, i1, lo));
  }
  dq4_span_f32(table, p + j, pairs - j, am, o + 2 * j);
}

QT_AVX512 static void dq4_span_bf16_avx512(const float *table, const uint8_t *p, int64_t pairs,
                                           float am, void *out) {
  uint16_t *o = out;
  __m512 tab = _mm512_loadu_ps(table), vam = _mm512_set1_ps(am);
  int64_t j = 0;
  for (; j + 16 <= pairs; j += 16) {
    __m512 hi, lo;
    dq4_16(tab, vam, p + j, &hi, &lo);
    /* value 2j in the low half of 32-bit word j, value 2j+1 in its high half */
    __m512i words = _mm512_or_si512(bf16_16(hi), _mm512_slli_epi32(bf16_16(lo), 16));
    _mm512_storeu_si512((void *)(o + 2 * j), words);
  }
  dq4_span_bf16(table, p + j, pairs - j, am, o + 2 * j);
}

static int have_avx512(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
static dq4_span_fn pick_f32(void) { return have_avx512() ? dq4_span_f32_avx512 : dq4_span_f32; }
static dq4_span_fn pick_bf16(void) { return have_avx512() ? dq4_span_bf16_avx512 : dq4_span_bf16; }
#else
static dq4_span_fn pick_f32(void) { return dq4_span_f32; }
static dq4_span_fn pick_bf16(void) { return dq4_span_bf16; }
#endif

static void dequantize_4bit(qt_quant_type t, const uint8_t *packed, const float *absmax, int64_t n,
                            int blocksize, void *out, size_t es, dq4_span_fn span, int threads) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  const float *table = qt_quant_4bit_table(t);
  int64_t nb = qt_quant_nblocks(n, blocksize);
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    const uint8_t *p = packed + start / 2;
    char *o = (char *)out + (size_t)start * es;
    span(table, p, len / 2, absmax[b], o);
    if (len & 1) { /* an odd last value: the high nibble of one more byte */
      float v = table[p[len / 2] >> 4] * absmax[b];
      if (es == sizeof(float))
        ((float *)(void *)o)[len - 1] = v;
      else
        ((uint16_t *)(void *)o)[len - 1] = f32_to_bf16(v);
    }
  }
}

void qt_quant_4bit_dequantize(qt_quant_type t, const uint8_t *packed, const float *absmax,
                              int64_t n, int blocksize, float *out, int threads) {
  static dq4_span_fn span;
  if (!span) span = pick_f32();
  dequantize_4bit(t, packed, absmax, n, blocksize, out, sizeof(float), span, threads);
}

void qt_quant_4bit_dequantize_bf16(qt_quant_type t, const uint8_t *packed, const float *absmax,
                                   int64_t n, int blocksize, uint16_t *out, int threads) {
  static dq4_span_fn span;
  if (!span) span = pick_bf16();
  dequantize_4bit(t, packed, absmax, n, blocksize, out, sizeof(uint16_t), span, threads);
}

/* dQuantize<0> (quant_ref.c qt_quant_8bit_encode_ref) with the branches of
 * the binary search turned into selects: same comparisons, same result. */
static inline uint8_t encode_8bit(const float *code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    int gt = x > val;
    lower_pivot = gt ? pivot : lower_pivot;
    lower = gt ? val : lower;
    upper_pivot = gt ? upper_pivot : pivot;
    upper = gt ? upper : val;
    pivot += gt ? i : -i;
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) return (uint8_t)(x > (upper + val) * 0.5f ? upper_pivot : pivot);
  return (uint8_t)(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}

static void quantize_block8(const float code[256], const float *x, int64_t len, float offset,
                            uint8_t *q, float *absmax_out) {
  float buf[QT_QUANT_NESTED_BLOCKSIZE] = {0};
  if (offset != 0.0f) { /* double quant: absmax - offset, an fp32 subtraction */
    QT_ASSERT(len <= QT_QUANT_NESTED_BLOCKSIZE);
    for (int64_t i = 0; i < len; i++) buf[i] = x[i] - offset;
    x = buf;
  }
  float m = absmax_of(x, len);
  *absmax_out = m;
  float inv = 1.0f / m;
  for (int64_t i = 0; i < len; i++) q[i] = encode_8bit(code, x[i] * inv);
}

void qt_quant_8bit_quantize(const float code[256], const float *x, int64_t n, int64_t blocksize,
                            uint8_t *q, float *absmax, int threads) {
  QT_ASSERT(blocksize > 0 && n >= 0);
  int64_t nb = (n + blocksize - 1) / blocksize;
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    quantize_block8(code, x + start, len, 0.0f, q + start, absmax + b);
  }
}

void qt_quant_dq_compress(const float code[256], const float *absmax, int64_t nb, float offset,
                          uint8_t *qabsmax, float *nested_absmax, int threads) {
  int64_t nnb = (nb + QT_QUANT_NESTED_BLOCKSIZE - 1) / QT_QUANT_NESTED_BLOCKSIZE;
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nnb; b++) {
    int64_t start = b * QT_QUANT_NESTED_BLOCKSIZE;
    int64_t len = nb - start < QT_QUANT_NESTED_BLOCKSIZE ? nb - start : QT_QUANT_NESTED_BLOCKSIZE;
    /* (x - 0.0f == x bit for bit, so offset 0 may skip the subtraction) */
    quantize_block8(code, absmax + start, len, offset, qabsmax + start, nested_absmax + b);
  }
}

void qt_quant_8bit_dequantize(const float code[256], const uint8_t *q, const float *absmax,
                              int64_t n, int64_t blocksize, float *out, int threads) {
  QT_ASSERT(blocksize > 0 && n >= 0);
  int64_t nb = (n + blocksize - 1) / blocksize;
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    float am = absmax[b];
    for (int64_t i = 0; i < len; i++) out[start + i] = code[q[start + i]] * am;
  }
}
