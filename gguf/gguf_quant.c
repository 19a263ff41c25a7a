/* gguf/gguf_quant.c — ggml block types and llama.cpp's reference quantizers.
 *
 * Byte identity with llama.cpp is the contract (gguf.h): every routine below
 * follows ggml/src/ggml-quants.c (quantize_row_q8_0_ref, _q5_0_ref, _q4_K_ref,
 * _q6_K_ref and their helpers make_qkx2_quants, make_qx_quants, nearest_int)
 * operation for operation, in float, in the same order. That file is built as
 * plain C in ggml-base, without -march flags, so the compiler cannot contract
 * a*b+c into an FMA there; this repository compiles with -ffp-contract=off for
 * the same reason. Nothing here may be reassociated or vectorized by hand.
 *
 * Block layouts (ggml-common.h):
 *   Q8_0  32 values, 34 B: f16 d, i8 qs[32];            x = d * q
 *   Q5_0  32 values, 22 B: f16 d, u8 qh[4], u8 qs[16];  x = d * (q - 16)
 *   Q4_K 256 values, 144 B: f16 d, f16 dmin, u8 scales[12] (8 x 6-bit scale
 *        and 6-bit min), u8 qs[128];                    x = d*sc*q - dmin*m
 *   Q6_K 256 values, 210 B: u8 ql[128], u8 qh[64], i8 scales[16], f16 d;
 *                                                       x = d*sc*(q - 32) */
#include <math.h>
#include <string.h>

#include "common/half.h"
#include "common/status.h"
#include "gguf/gguf.h"

enum { QK_K = 256 };

int64_t qt_ggml_block_values(qt_ggml_type t) {
  switch (t) {
    case QT_GGML_Q8_0: case QT_GGML_Q5_0: return 32;
    case QT_GGML_Q4_K: case QT_GGML_Q6_K: return QK_K;
    default: return 1;
  }
}

size_t qt_ggml_block_bytes(qt_ggml_type t) {
  switch (t) {
    case QT_GGML_F32: return 4;
    case QT_GGML_F16: case QT_GGML_BF16: return 2;
    case QT_GGML_Q8_0: return 34;
    case QT_GGML_Q5_0: return 22;
    case QT_GGML_Q4_K: return 144;
    case QT_GGML_Q6_K: return 210;
  }
  return 0;
}

size_t qt_ggml_row_bytes(qt_ggml_type t, int64_t ne0) {
  return (size_t)(ne0 / qt_ggml_block_values(t)) * qt_ggml_block_bytes(t);
}

const char *qt_ggml_type_name(qt_ggml_type t) {
  switch (t) {
    case QT_GGML_F32: return "F32";
    case QT_GGML_F16: return "F16";
    case QT_GGML_BF16: return "BF16";
    case QT_GGML_Q8_0: return "Q8_0";
    case QT_GGML_Q5_0: return "Q5_0";
    case QT_GGML_Q4_K: return "Q4_K";
    case QT_GGML_Q6_K: return "Q6_K";
  }
  return "?";
}

bool qt_ggml_type_known(uint32_t t) {
  return t == QT_GGML_F32 || t == QT_GGML_F16 || t == QT_GGML_BF16 || t == QT_GGML_Q8_0 || t == QT_GGML_Q5_0 ||
         t == QT_GGML_Q4_K || t == QT_GGML_Q6_K;
}

static void put_f16(uint8_t *p, float x) {
  uint16_t h = qt_f16_from_f32(x);
  p[0] = (uint8_t)(h & 0xff);
  p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p) { return qt_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/* Round to nearest by the 1.5 * 2^23 trick (ggml-quants.c nearest_int): ties
 * go to even, unlike roundf. Valid for |x| <= 2^22 - 1. */
static int nearest_int(float x) {
  float v = x + 12582912.f;
  int32_t i;
  memcpy(&i, &v, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* ---- Q8_0 ---------------------------------------------------------------- */

static void q8_0_block(const float *x, uint8_t *y) {
  float amax = 0.0f;
  for (int j = 0; j < 32; j++) {
    float a = fabsf(x[j]);
    amax = amax > a ? amax : a; /* MAX(amax, |v|): keeps amax on ties and NaN-free input */
  }
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(y, d);
  for (int j = 0; j < 32; j++) y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* ---- Q5_0 (the Q4_K fallback for rows not a multiple of 256) --------------- */

static void q5_0_block(const float *x, uint8_t *y) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; j++) {
    if (amax < fabsf(x[j])) {
      amax = fabsf(x[j]);
      max = x[j];
    }
  }
  const float d = max / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(y, d);
  uint32_t qh = 0;
  uint8_t *qs = y + 6;
  for (int j = 0; j < 16; j++) {
    const float x0 = x[j] * id, x1 = x[16 + j] * id;
    /* (int8_t)(x + 16.5f) truncates toward zero; then capped at 31 */
    const uint8_t a = (uint8_t)imin(31, (int8_t)(x0 + 16.5f));
    const uint8_t b = (uint8_t)imin(31, (int8_t)(x1 + 16.5f));
    qs[j] = (uint8_t)((a & 0x0f) | ((b & 0x0f) << 4));
    qh |= (uint32_t)((a & 0x10u) >> 4) << j;
    qh |= (uint32_t)((b & 0x10u) >> 4) << (j + 16);
  }
  for (int k = 0; k < 4; k++) y[2 + k] = (uint8_t)(qh >> (8 * k));
}

/* ---- Q4_K ---------------------------------------------------------------- */

/* Weighted asymmetric fit of n values to levels 0..nmax (make_qkx2_quants):
 * a first guess from min/max, then nstep+1 trial scales, each refined by
 * weighted least squares; keeps the fit with the least weighted squared
 * error. Returns the scale; *the_min = -(offset). */
static float fit_qkx2(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min, uint8_t *Laux,
                      float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; i++) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    float wi = w[i];
    sum_w += wi;
    sum_x += wi * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; i++) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; i++) {
    int l = nearest_int(iscale * (x[i] - min));
    L[i] = (uint8_t)imax(0, imin(nmax, l));
    float diff = scale * L[i] + min - x[i];
    diff = diff * diff;
    best_error += w[i] * diff;
  }
  for (int is = 0; is <= nstep; is++) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; i++) {
      int l = nearest_int(iscale * (x[i] - min));
      l = imax(0, imin(nmax, l));
      Laux[i] = (uint8_t)l;
      float wi = w[i];
      sum_l += wi * l;
      sum_l2 += wi * l * l;
      sum_xl += wi * l * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; i++) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = diff * diff;
        cur_error += w[i] * diff;
      }
      if (cur_error < best_error) {
        memcpy(L, Laux, (size_t)n);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

/* 6-bit scale and min of sub-block j from the packed 12 bytes (get_scale_min_k4). */
static void k4_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

static void q4_k_block(const float *x, uint8_t *y) {
  uint8_t L[QK_K], Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; j++) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
    float av_x = sqrtf(sum_x2 / 32);
    for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
    scales[j] = fit_qkx2(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  uint8_t *sc = y + 4, *qs = y + 16;
  memset(sc, 0, 12);
  float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; j++) {
    /* ggml stores nearest_int's result in a uint8_t before capping at 63 */
    uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
    uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
    ls = ls < 63 ? ls : 63;
    lm = lm < 63 ? lm : 63;
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
      sc[j] |= (uint8_t)((lm >> 4) << 6);
    }
  }
  put_f16(y, max_scale / 63.f);
  put_f16(y + 2, max_min / 63.f);
  for (int j = 0; j < 8; j++) {
    uint8_t s, m;
    k4_scale_min(j, sc, &s, &m);
    const float d = get_f16(y) * s;
    if (d == 0.0f) continue;
    const float dm = get_f16(y + 2) * m;
    for (int ii = 0; ii < 32; ii++) {
      int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = (uint8_t)imax(0, imin(15, l));
    }
  }
  for (int j = 0; j < QK_K; j += 64) {
    for (int l = 0; l < 32; l++) qs[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    qs += 32;
  }
}

/* ---- Q6_K ---------------------------------------------------------------- */

/* Symmetric fit of n values to -nmax..nmax-1 weighted by x^2
 * (make_qx_quants with rmse_type 1 and no importance weights): 19 trial
 * scales around nmax/max, keeping the best least-squares scale. L gets
 * level + nmax. */
static float fit_qx(int n, int nmax, const float *x, int8_t *L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; i++) {
    float ax = fabsf(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) { /* GROUP_MAX_EPS */
    for (int i = 0; i < n; i++) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; i++) {
    int l = nearest_int(iscale * x[i]);
    l = imax(-nmax, imin(nmax - 1, l));
    L[i] = (int8_t)(l + nmax);
    float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; is++) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; i++) {
      int l = nearest_int(iscale * x[i]);
      l = imax(-nmax, imin(nmax - 1, l));
      float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

static void q6_k_block(const float *x, uint8_t *y) {
  int8_t L[QK_K];
  float scales[16];
  uint8_t *ql = y, *qh = y + 128;
  int8_t *sc = (int8_t *)(y + 192);
  uint8_t *dp = y + 208;
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ib++) {
    const float scale = fit_qx(16, 32, x + 16 * ib, L + 16 * ib);
    scales[ib] = scale;
    const float abs_scale = fabsf(scale);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scale;
    }
  }
  if (max_abs_scale < 1e-15f) {
    memset(y, 0, 210);
    put_f16(dp, 0.f);
    return;
  }
  float iscale = -128.f / max_scale;
  put_f16(dp, 1 / iscale);
  for (int ib = 0; ib < 16; ib++) sc[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
  for (int j = 0; j < 16; j++) {
    float d = get_f16(dp) * sc[j];
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ii++) {
      int l = nearest_int(x[16 * j + ii] / d);
      l = imax(-32, imin(31, l));
      L[16 * j + ii] = (int8_t)(l + 32);
    }
  }
  for (int j = 0; j < QK_K; j += 128) {
    for (int l = 0; l < 32; l++) {
      const uint8_t q1 = (uint8_t)(L[j + l] & 0xF), q2 = (uint8_t)(L[j + l + 32] & 0xF);
      const uint8_t q3 = (uint8_t)(L[j + l + 64] & 0xF), q4 = (uint8_t)(L[j + l + 96] & 0xF);
      ql[l] = (uint8_t)(q1 | (q3 << 4));
      ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
      qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                        ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

void qt_gguf_quantize(qt_ggml_type t, const float *x, void *out, int64_t n) {
  uint8_t *y = out;
  const int64_t bv = qt_ggml_block_values(t);
  const size_t bb = qt_ggml_block_bytes(t);
  QT_ASSERTF(n % bv == 0, "%lld values are not whole %s blocks", (long long)n, qt_ggml_type_name(t));
  switch (t) {
    case QT_GGML_F32: memcpy(out, x, (size_t)n * 4); return;
    case QT_GGML_F16: qt_f16_from_f32_n(out, x, (size_t)n); return;
    case QT_GGML_BF16: qt_bf16_from_f32_n(out, x, (size_t)n); return;
    default: break;
  }
  for (int64_t b = 0; b < n / bv; b++) {
    const float *xb = x + b * bv;
    uint8_t *yb = y + (size_t)b * bb;
    switch (t) {
      case QT_GGML_Q8_0: q8_0_block(xb, yb); break;
      case QT_GGML_Q5_0: q5_0_block(xb, yb); break;
      case QT_GGML_Q4_K: q4_k_block(xb, yb); break;
      case QT_GGML_Q6_K: q6_k_block(xb, yb); break;
      default: QT_ASSERTF(0, "type %d", (int)t);
    }
  }
}

void qt_gguf_dequantize(qt_ggml_type t, const void *in, float *y, int64_t n) {
  const uint8_t *p = in;
  const int64_t bv = qt_ggml_block_values(t);
  const size_t bb = qt_ggml_block_bytes(t);
  switch (t) {
    case QT_GGML_F32: memcpy(y, in, (size_t)n * 4); return;
    case QT_GGML_F16: qt_f16_to_f32_n(y, in, (size_t)n); return;
    case QT_GGML_BF16: qt_bf16_to_f32_n(y, in, (size_t)n); return;
    default: break;
  }
  for (int64_t b = 0; b < n / bv; b++, p += bb, y += bv) {
    if (t == QT_GGML_Q8_0) {
      const float d = get_f16(p);
      for (int j = 0; j < 32; j++) y[j] = (int8_t)p[2 + j] * d;
    } else if (t == QT_GGML_Q5_0) {
      const float d = get_f16(p);
      uint32_t qh = (uint32_t)p[2] | ((uint32_t)p[3] << 8) | ((uint32_t)p[4] << 16) | ((uint32_t)p[5] << 24);
      for (int j = 0; j < 16; j++) {
        const int x0 = (int)((p[6 + j] & 0x0f) | (((qh >> j) & 1u) << 4)) - 16;
        const int x1 = (int)((p[6 + j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - 16;
        y[j] = x0 * d;
        y[j + 16] = x1 * d;
      }
    } else if (t == QT_GGML_Q4_K) {
      const float d = get_f16(p), dmin = get_f16(p + 2);
      const uint8_t *sc = p + 4, *q = p + 16;
      float *o = y;
      for (int j = 0, is = 0; j < QK_K; j += 64, is += 2) {
        uint8_t s, m;
        k4_scale_min(is, sc, &s, &m);
        const float d1 = d * s, m1 = dmin * m;
        k4_scale_min(is + 1, sc, &s, &m);
        const float d2 = d * s, m2 = dmin * m;
        for (int l = 0; l < 32; l++) *o++ = d1 * (q[l] & 0xF) - m1;
        for (int l = 0; l < 32; l++) *o++ = d2 * (q[l] >> 4) - m2;
        q += 32;
      }
    } else if (t == QT_GGML_Q6_K) {
      const float d = get_f16(p + 208);
      const uint8_t *ql = p, *qh = p + 128;
      const int8_t *sc = (const int8_t *)(p + 192);
      float *o = y;
      for (int n128 = 0; n128 < QK_K / 128; n128++) {
        for (int l = 0; l < 32; l++) {
          int is = l / 16;
          const int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          o[l] = d * sc[is] * q1;
          o[l + 32] = d * sc[is + 2] * q2;
          o[l + 64] = d * sc[is + 4] * q3;
          o[l + 96] = d * sc[is + 6] * q4;
        }
        o += 128;
        ql += 64;
        qh += 32;
        sc += 8;
      }
    }
  }
}
