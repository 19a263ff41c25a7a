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

void qt_quant_4bit_dequantize(qt_quant_type t, const uint8_t *packed, const float *absmax,
                              int64_t n, int blocksize, float *out, int threads) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  const float *table = qt_quant_4bit_table(t);
  int64_t nb = qt_quant_nblocks(n, blocksize);
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    float am = absmax[b];
    const uint8_t *p = packed + start / 2;
    float *o = out + start;
    int64_t pairs = len / 2;
    for (int64_t j = 0; j < pairs; j++) {
      o[2 * j] = table[p[j] >> 4] * am;
      o[2 * j + 1] = table[p[j] & 0x0f] * am;
    }
    if (len & 1) o[len - 1] = table[p[pairs] >> 4] * am;
  }
}

void qt_quant_4bit_dequantize_bf16(qt_quant_type t, const uint8_t *packed, const float *absmax,
                                   int64_t n, int blocksize, uint16_t *out, int threads) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  const float *table = qt_quant_4bit_table(t);
  int64_t nb = qt_quant_nblocks(n, blocksize);
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    float am = absmax[b];
    const uint8_t *p = packed + start / 2;
    uint16_t *o = out + start;
    int64_t pairs = len / 2;
    for (int64_t j = 0; j < pairs; j++) {
      o[2 * j] = f32_to_bf16(table[p[j] >> 4] * am);
      o[2 * j + 1] = f32_to_bf16(table[p[j] & 0x0f] * am);
    }
    if (len & 1) o[len - 1] = f32_to_bf16(table[p[pairs] >> 4] * am);
  }
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
