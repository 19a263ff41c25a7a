/* quant/quant_ref.c — scalar reference quantizers: the single truth every fast
 * path (OpenMP, CUDA) is tested against. Semantics: quant/quant.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

/* NF4 values, functional.py::get_4bit_type("nf4") == kernels.cu
 * nf4_dequantization_lut (formats.md 1.1; all exactly representable). */
static const float nf4_table[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

/* FP4 values in bit-pattern order, get_4bit_type("fp4") = [0, 0.0625, 8, 12, 4,
 * 6, 2, 3, -0, ...] divided by 12 in fp32 (formats.md 1.2): each entry is the
 * correctly rounded f32(v / 12), the same as torch's division. */
static const float fp4_table[16] = {
    0.0f / 12.0f,  0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f,
    4.0f / 12.0f,  6.0f / 12.0f,     2.0f / 12.0f,  3.0f / 12.0f,
    -0.0f / 12.0f, -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,
    -4.0f / 12.0f, -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f};

const char *qt_quant_type_name(qt_quant_type t) { return t == QT_QUANT_NF4 ? "nf4" : "fp4"; }

bool qt_quant_type_from_name(const char *name, qt_quant_type *out) {
  if (strcmp(name, "nf4") == 0) { *out = QT_QUANT_NF4; return true; }
  if (strcmp(name, "fp4") == 0) { *out = QT_QUANT_FP4; return true; }
  return false;
}

bool qt_quant_blocksize_valid(int blocksize) {
  if (blocksize < QT_QUANT_MIN_BLOCKSIZE || blocksize > QT_QUANT_MAX_BLOCKSIZE) return false;
  return (blocksize & (blocksize - 1)) == 0;
}

int64_t qt_quant_nblocks(int64_t n, int blocksize) {
  QT_ASSERT(n >= 0 && blocksize > 0);
  return (n + blocksize - 1) / blocksize;
}

const float *qt_quant_4bit_table(qt_quant_type t) {
  return t == QT_QUANT_NF4 ? nf4_table : fp4_table;
}

/* ---- dynamic map (functional.py::create_dynamic_map, formats.md 3.2) ---- */

/* torch CPU linspace(start, end, steps) in float32 (aten RangeFactoriesKernel):
 * step = (end - start) / (steps - 1) in fp32; the first half is start + step*i,
 * the second half end - step*(steps-1-i), each with one rounding (the vectorized
 * kernel fuses the multiply-add; formats.md 3.2 "Reproduction hazard"). */
static void linspace_f32(float start, float end, int steps, float *out) {
  float step = (end - start) / (float)(steps - 1);
  int halfway = steps / 2;
  for (int i = 0; i < steps; i++)
    out[i] = i < halfway ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - 1 - i), end);
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

void qt_quant_dynamic_map(bool is_signed, float out[256]) {
  /* max_exponent_bits = 7, total_bits = 8 -> non_sign_bits = 7, no additional items. */
  int k = 0;
  float bounds[130];
  for (int i = 0; i < 7; i++) {
    int fraction_items = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
    linspace_f32(0.1f, 1.0f, fraction_items, bounds);
    /* Python 10**(-6+i) is a double scalar; torch multiplies a float32 tensor by
     * it in float32 (scalar cast to float). 10**0 is the int 1. */
    float scale = (float)pow(10.0, (double)(i - 6));
    for (int j = 0; j + 1 < fraction_items; j++) {
      float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
      out[k++] = scale * mean;
      if (is_signed) out[k++] = -(scale * mean);
    }
  }
  out[k++] = 0.0f;
  out[k++] = 1.0f;
  QT_ASSERT(k == 256);
  qsort(out, 256, sizeof(float), cmp_float);
}

/* ---- scalar encoders ---- */

/* kernels.cu dQuantizeNF4: a decision tree over the 15 midpoints with strict
 * `>` (formats.md 1.1); written as the tree so that NaN falls to code 0. */
static uint8_t encode_nf4(float x) {
  if (x > 0.03979014977812767f) {
    if (x > 0.3893125355243683f) {
      if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
      return x > 0.5016634166240692f ? 13 : 12;
    }
    if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
    return x > 0.1202552504837513f ? 9 : 8;
  }
  if (x > -0.33967943489551544f) {
    if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
    return x > -0.23460740596055984f ? 5 : 4;
  }
  if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
  return x > -0.8480964004993439f ? 1 : 0;
}

/* kernels.cu dQuantizeFP4: sign bit from x < 0, tree on |x| (formats.md 1.2). */
static uint8_t encode_fp4(float x) {
  uint8_t sign = x < 0 ? 8 : 0;
  x = fabsf(x);
  if (x > 0.29166667f) {
    if (x > 0.583333f) return (uint8_t)((x > 0.8333333f ? 3 : 2) + sign);
    return (uint8_t)((x > 0.4166667f ? 5 : 4) + sign);
  }
  if (x > 0.0859375f) return (uint8_t)((x > 0.20833333f ? 7 : 6) + sign);
  return (uint8_t)((x > 0.00260417f ? 1 : 0) + sign);
}

uint8_t qt_quant_4bit_encode_ref(qt_quant_type t, float x) {
  return t == QT_QUANT_NF4 ? encode_nf4(x) : encode_fp4(x);
}

/* kernels.cu dQuantize<0> (formats.md 1.4): binary search from pivot 127 with
 * steps 64..1, then the midpoint decision between pivot and its neighbour. */
uint8_t qt_quant_8bit_encode_ref(const float code[256], float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    float midpoint = (upper + val) * 0.5f;
    return (uint8_t)(x > midpoint ? upper_pivot : pivot);
  }
  float midpoint = (lower + val) * 0.5f;
  return (uint8_t)(x < midpoint ? lower_pivot : pivot);
}

uint16_t qt_quant_f32_to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff; /* cuda_bf16 __float2bfloat16: canonical NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* ---- 4-bit blockwise ---- */

/* max |x| ignoring NaN (fmaxf, as kQuantizeBlockwise); 0 for an empty/NaN block. */
static float block_absmax(const float *x, int64_t len) {
  float m = 0.0f;
  for (int64_t i = 0; i < len; i++) m = fmaxf(m, fabsf(x[i]));
  return m;
}

void qt_quant_4bit_quantize_ref(qt_quant_type t, const float *x, int64_t n, int blocksize,
                                uint8_t *packed, float *absmax) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  int64_t nb = qt_quant_nblocks(n, blocksize);
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    float am = block_absmax(x + start, len);
    absmax[b] = am;
    float inv = 1.0f / am; /* reciprocal-multiply, kernels.cu kQuantizeBlockwise */
    /* blocksize is even, so a byte never straddles two blocks. */
    for (int64_t i = 0; i < len; i += 2) {
      uint8_t hi = qt_quant_4bit_encode_ref(t, x[start + i] * inv);
      /* Past n the CUDA block load pads with 0.0, normalized like the rest. */
      float second = i + 1 < len ? x[start + i + 1] : 0.0f;
      uint8_t lo = qt_quant_4bit_encode_ref(t, second * inv);
      packed[(start + i) / 2] = (uint8_t)(hi << 4 | lo);
    }
  }
}

void qt_quant_4bit_dequantize_ref(qt_quant_type t, const uint8_t *packed, const float *absmax,
                                  int64_t n, int blocksize, float *out) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  const float *table = qt_quant_4bit_table(t);
  for (int64_t i = 0; i < n; i++) {
    uint8_t byte = packed[i / 2];
    uint8_t c = (i & 1) ? (byte & 0x0f) : (byte >> 4);
    out[i] = table[c] * absmax[i / blocksize];
  }
}

void qt_quant_4bit_dequantize_bf16_ref(qt_quant_type t, const uint8_t *packed,
                                       const float *absmax, int64_t n, int blocksize,
                                       uint16_t *out) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  const float *table = qt_quant_4bit_table(t);
  for (int64_t i = 0; i < n; i++) {
    uint8_t byte = packed[i / 2];
    uint8_t c = (i & 1) ? (byte & 0x0f) : (byte >> 4);
    out[i] = qt_quant_f32_to_bf16(table[c] * absmax[i / blocksize]);
  }
}

/* ---- 8-bit blockwise ---- */

void qt_quant_8bit_quantize_ref(const float code[256], const float *x, int64_t n,
                                int64_t blocksize, uint8_t *q, float *absmax) {
  QT_ASSERT(blocksize > 0 && n >= 0);
  int64_t nb = (n + blocksize - 1) / blocksize;
  for (int64_t b = 0; b < nb; b++) {
    int64_t start = b * blocksize;
    int64_t len = n - start < blocksize ? n - start : blocksize;
    float am = block_absmax(x + start, len);
    absmax[b] = am;
    float inv = 1.0f / am;
    for (int64_t i = 0; i < len; i++) q[start + i] = qt_quant_8bit_encode_ref(code, x[start + i] * inv);
  }
}

void qt_quant_8bit_dequantize_ref(const float code[256], const uint8_t *q, const float *absmax,
                                  int64_t n, int64_t blocksize, float *out) {
  QT_ASSERT(blocksize > 0 && n >= 0);
  for (int64_t i = 0; i < n; i++) out[i] = code[q[i]] * absmax[i / blocksize];
}

/* ---- double quantization ---- */

float qt_quant_absmax_mean(const float *absmax, int64_t nb) {
  if (nb <= 0) return 0.0f;
  double s = 0.0;
  for (int64_t i = 0; i < nb; i++) s += absmax[i];
  return (float)(s / (double)nb);
}

void qt_quant_dq_compress_ref(const float code[256], const float *absmax, int64_t nb,
                              float offset, uint8_t *qabsmax, float *nested_absmax) {
  /* functional.py::quantize_4bit: quantize_blockwise(absmax - offset, blocksize=256);
   * the subtraction is an fp32 torch op. */
  int64_t nnb = (nb + QT_QUANT_NESTED_BLOCKSIZE - 1) / QT_QUANT_NESTED_BLOCKSIZE;
  float centered[QT_QUANT_NESTED_BLOCKSIZE];
  for (int64_t b = 0; b < nnb; b++) {
    int64_t start = b * QT_QUANT_NESTED_BLOCKSIZE;
    int64_t len = nb - start < QT_QUANT_NESTED_BLOCKSIZE ? nb - start : QT_QUANT_NESTED_BLOCKSIZE;
    for (int64_t i = 0; i < len; i++) centered[i] = absmax[start + i] - offset;
    qt_quant_8bit_quantize_ref(code, centered, len, QT_QUANT_NESTED_BLOCKSIZE, qabsmax + start,
                               nested_absmax + b);
  }
}

void qt_quant_dq_decompress_ref(const float code[256], const uint8_t *qabsmax,
                                const float *nested_absmax, float offset, int64_t nb,
                                float *absmax) {
  for (int64_t b = 0; b < nb; b++) {
    float v = code[qabsmax[b]] * nested_absmax[b / QT_QUANT_NESTED_BLOCKSIZE];
    absmax[b] = v + offset;
  }
}

double qt_quant_bits_per_param(int64_t n, int blocksize, bool double_quant) {
  if (n <= 0) return 0.0;
  int64_t nb = qt_quant_nblocks(n, blocksize);
  double bits = 4.0 * (double)(2 * ((n + 1) / 2));
  if (double_quant) {
    int64_t nnb = (nb + QT_QUANT_NESTED_BLOCKSIZE - 1) / QT_QUANT_NESTED_BLOCKSIZE;
    bits += 8.0 * (double)nb + 32.0 * (double)nnb + 32.0;
  } else {
    bits += 32.0 * (double)nb;
  }
  return bits / (double)n;
}
