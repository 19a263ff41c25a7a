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
static const uint8_t fp4_rank_code[8] = {0, 1, 6, 7, 4, 5, 2, 3};

static inline uint8_t fast_nf4(float v) {
  int c = 0;
  for (int k = 0; k < 15; k++) c += v > nf4_thr[k];
  return (uint8_t)c;
}

static inline uint8_t fast_fp4(float v) {
  int sign = v < 0 ? 8 : 0;
  float a = fabsf(v);
  int r = 0;
  for (int k = 0; k < 7; k++) r += a > fp4_thr[k];
  return (uint8_t)(fp4_rank_code[r] | sign);
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* One 4-bit block of len <= blocksize values already widened to fp32. */
static void quantize_block4(qt_quant_type t, const float *x, int64_t len, uint8_t *packed,
                            float *absmax_out) {
  float m = 0.0f;
  for (int64_t i = 0; i < len; i++) {
    float a = fabsf(x[i]);
    m = a > m ? a : m; /* NaN never wins, like fmaxf */
  }
  *absmax_out = m;
  float inv = 1.0f / m;
  uint8_t codes[QT_QUANT_MAX_BLOCKSIZE];
  if (t == QT_QUANT_NF4) {
    for (int64_t i = 0; i < len; i++) codes[i] = fast_nf4(x[i] * inv);
    if (len & 1) codes[len] = fast_nf4(0.0f * inv);
  } else {
    for (int64_t i = 0; i < len; i++) codes[i] = fast_fp4(x[i] * inv);
    if (len & 1) codes[len] = fast_fp4(0.0f * inv);
  }
  for (int64_t j = 0; j < (len + 1) / 2; j++)
    packed[j] = (uint8_t)(codes[2 * j] << 4 | codes[2 * j + 1]);
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
    for (int64_t i = 0; i < len; i++) buf[i] = bf16_to_f32(x_bf16[start + i]);
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
      o[2 * j] = qt_quant_f32_to_bf16(table[p[j] >> 4] * am);
      o[2 * j + 1] = qt_quant_f32_to_bf16(table[p[j] & 0x0f] * am);
    }
    if (len & 1) o[len - 1] = qt_quant_f32_to_bf16(table[p[pairs] >> 4] * am);
  }
}

void qt_quant_8bit_quantize(const float code[256], const float *x, int64_t n, int64_t blocksize,
                            uint8_t *q, float *absmax, int threads) {
  QT_ASSERT(blocksize > 0 && n >= 0);
  int64_t nb = (n + blocksize - 1) / blocksize;
#pragma omp parallel for schedule(static) num_threads(nthreads(threads))
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    /* The per-block work is the reference's: one block at a time. */
    qt_quant_8bit_quantize_ref(code, x + start, len, blocksize, q + start, absmax + b);
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
