/* quant/gemv_4bit.c — the fused 4-bit matrix-vector product (quant/gemv.h). */
#include "quant/gemv.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>

#include "common/status.h"

/* The dequantized absmax of block b (quant.h: two fp32 roundings with DQ). */
static inline float block_absmax(const qt_quant_weight *w, int64_t b) {
  if (!w->nested) return w->absmax[b];
  float t = w->nested_code[w->qabsmax[b]] * w->nested_absmax[b / w->nested_blocksize];
  return t + w->offset;
}

static inline int code_at(const uint8_t *packed, int64_t i) {
  uint8_t byte = packed[i >> 1];
  return (i & 1) ? (byte & 0x0F) : (byte >> 4);
}

void qt_quant_4bit_gemv_ref(const qt_quant_weight *w, int64_t rows, int64_t cols, const float *x,
                            float *y) {
  QT_ASSERT(rows * cols == w->n);
  const float *table = qt_quant_4bit_table(w->type);
  for (int64_t r = 0; r < rows; r++) {
    double acc = 0.0;
    for (int64_t k = 0; k < cols; k++) {
      int64_t i = r * cols + k;
      float wv = table[code_at(w->packed, i)] * block_absmax(w, i / w->blocksize);
      acc += (double)(x[k] * wv);
    }
    y[r] = (float)acc;
  }
}

/* Any layout (blocks crossing rows, odd cols): element by element in fp32. */
static void gemv_rows_scalar(const qt_quant_weight *w, int64_t r0, int64_t r1, int64_t cols,
                             const float *x, float *y) {
  const float *table = qt_quant_4bit_table(w->type);
  for (int64_t r = r0; r < r1; r++) {
    float acc = 0.0f;
    int64_t k = 0;
    while (k < cols) {
      int64_t i = r * cols + k, b = i / w->blocksize;
      int64_t end = (b + 1) * w->blocksize - r * cols; /* the block's end within the row */
      if (end > cols) end = cols;
      float part = 0.0f;
      for (; k < end; k++) part += x[k] * table[code_at(w->packed, r * cols + k)];
      acc += part * block_absmax(w, b);
    }
    y[r] = acc;
  }
}

/* xs = x deinterleaved per 32-element chunk: the 16 even elements (high
 * nibbles of 16 bytes), then the 16 odd ones (low nibbles). */
static void deinterleave(const float *x, int64_t cols, float *xs) {
  for (int64_t c = 0; c < cols; c += 32)
    for (int j = 0; j < 16; j++) {
      xs[c + j] = x[c + 2 * j];
      xs[c + 16 + j] = x[c + 2 * j + 1];
    }
}

__attribute__((target("avx512f"))) static void gemv_rows_avx512(const qt_quant_weight *w,
                                                                 int64_t r0, int64_t r1,
                                                                 int64_t cols, const float *xs,
                                                                 float *y) {
  const __m512 table = _mm512_loadu_ps(qt_quant_4bit_table(w->type));
  const __m512i lo_mask = _mm512_set1_epi32(0x0F);
  int64_t bs = w->blocksize, nb_row = cols / bs;
  for (int64_t r = r0; r < r1; r++) {
    __m512 acc = _mm512_setzero_ps();
    const uint8_t *p = w->packed + (r * cols) / 2;
    for (int64_t bi = 0; bi < nb_row; bi++) {
      __m512 part = _mm512_setzero_ps();
      const float *xb = xs + bi * bs;
      const uint8_t *pb = p + bi * bs / 2;
      for (int64_t c = 0; c < bs; c += 32) {
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(pb + c / 2)));
        __m512 wh = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table);
        __m512 wl = _mm512_permutexvar_ps(_mm512_and_si512(q, lo_mask), table);
        part = _mm512_fmadd_ps(wh, _mm512_loadu_ps(xb + c), part);
        part = _mm512_fmadd_ps(wl, _mm512_loadu_ps(xb + c + 16), part);
      }
      acc = _mm512_fmadd_ps(part, _mm512_set1_ps(block_absmax(w, r * nb_row + bi)), acc);
    }
    y[r] = _mm512_reduce_add_ps(acc);
  }
}

/* The 16-entry lookup as two 8-entry permutes and a blend on bit 3. */
__attribute__((target("avx2,fma"))) static inline __m256 lookup16_avx2(__m256i idx, __m256 t0,
                                                                       __m256 t1) {
  __m256 a = _mm256_permutevar8x32_ps(t0, idx), b = _mm256_permutevar8x32_ps(t1, idx);
  __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
  return _mm256_blendv_ps(a, b, sel);
}

__attribute__((target("avx2,fma"))) static void gemv_rows_avx2(const qt_quant_weight *w,
                                                               int64_t r0, int64_t r1,
                                                               int64_t cols, const float *xs,
                                                               float *y) {
  const float *tb = qt_quant_4bit_table(w->type);
  const __m256 t0 = _mm256_loadu_ps(tb), t1 = _mm256_loadu_ps(tb + 8);
  const __m256i lo_mask = _mm256_set1_epi32(0x0F);
  int64_t bs = w->blocksize, nb_row = cols / bs;
  for (int64_t r = r0; r < r1; r++) {
    __m256 acc = _mm256_setzero_ps();
    const uint8_t *p = w->packed + (r * cols) / 2;
    for (int64_t bi = 0; bi < nb_row; bi++) {
      __m256 part = _mm256_setzero_ps();
      const float *xb = xs + bi * bs;
      const uint8_t *pb = p + bi * bs / 2;
      for (int64_t c = 0; c < bs; c += 32) {
        for (int h = 0; h < 2; h++) { /* bytes 0-7, 8-15 of the chunk's 16 */
          __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(pb + c / 2 + 8 * h)));
          __m256 wh = lookup16_avx2(_mm256_srli_epi32(q, 4), t0, t1);
          __m256 wl = lookup16_avx2(_mm256_and_si256(q, lo_mask), t0, t1);
          part = _mm256_fmadd_ps(wh, _mm256_loadu_ps(xb + c + 8 * h), part);
          part = _mm256_fmadd_ps(wl, _mm256_loadu_ps(xb + c + 16 + 8 * h), part);
        }
      }
      acc = _mm256_fmadd_ps(part, _mm256_set1_ps(block_absmax(w, r * nb_row + bi)), acc);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    y[r] = _mm_cvtss_f32(s);
  }
}

static qt_gemv_kernel cpu_kernel(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return QT_GEMV_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return QT_GEMV_AVX2;
  return QT_GEMV_SCALAR;
}

const char *qt_quant_4bit_gemv_kernel(void) {
  qt_gemv_kernel k = cpu_kernel();
  return k == QT_GEMV_AVX512 ? "avx512" : k == QT_GEMV_AVX2 ? "avx2" : "scalar";
}

bool qt_quant_4bit_gemv_as(qt_gemv_kernel k, const qt_quant_weight *w, int64_t rows, int64_t cols,
                           const float *x, float *y, float *xs, int threads) {
  QT_ASSERT(rows * cols == w->n);
  qt_gemv_kernel have = cpu_kernel();
  if (k == QT_GEMV_AUTO) k = have;
  if (k > have) return false; /* the enum orders the kernels by what they need */
  /* the vector kernels need whole blocks per row, 32-element chunks */
  if (cols % w->blocksize != 0 || w->blocksize % 32 != 0) k = QT_GEMV_SCALAR;
  if (k != QT_GEMV_SCALAR) deinterleave(x, cols, xs);
  int nt = threads > 0 ? threads : omp_get_max_threads();
  /* rows in runs of 16: each thread reads a contiguous part of the weight */
#pragma omp parallel for schedule(static) num_threads(nt) if (rows * cols >= 65536)
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    int64_t r1 = r0 + 16 < rows ? r0 + 16 : rows;
    if (k == QT_GEMV_AVX512) gemv_rows_avx512(w, r0, r1, cols, xs, y);
    else if (k == QT_GEMV_AVX2) gemv_rows_avx2(w, r0, r1, cols, xs, y);
    else gemv_rows_scalar(w, r0, r1, cols, x, y);
  }
  return true;
}

void qt_quant_4bit_gemv(const qt_quant_weight *w, int64_t rows, int64_t cols, const float *x,
                        float *y, float *xs, int threads) {
  qt_quant_4bit_gemv_as(QT_GEMV_AUTO, w, rows, cols, x, y, xs, threads);
}
