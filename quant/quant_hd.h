/* quant/quant_hd.h — the per-thread math of the vectorised 4-bit -> bf16
 * dequantization, written once for the GPU kernel (quant_cuda.cu) and its
 * host-compiled tests (tests/quant: plain C and nvcc host code against
 * qt_quant_4bit_dequantize_bf16_ref).
 *
 * One thread takes 8 packed bytes = 16 codes (high nibble first, as
 * bitsandbytes packs them) that lie in one quantization block (blocksizes are
 * multiples of 16 and the group starts at a multiple of 16), multiplies each
 * table value by the block's absmax (one IEEE fp32 multiply, no fused
 * multiply-add: the kernels are built with --fmad=false) and rounds to bf16
 * to nearest even (as __float2bfloat16_rn and common/half.h qt_bf16_from_f32;
 * a NaN becomes the canonical quiet NaN 0x7FC0, which the reference's
 * qt_quant_f32_to_bf16 would give as 0x7FFF: absmax is never NaN). */
#ifndef QT_QUANT_QUANT_HD_H
#define QT_QUANT_QUANT_HD_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define QT_QUANT_HD __host__ __device__
#else
#define QT_QUANT_HD
#endif

/* fp32 -> bf16 bits, round to nearest even. */
static inline QT_QUANT_HD uint16_t qt_quant_bf16_rne_hd(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)0x7FC0u;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* out[0..16) = bf16(table[code] * absmax) for the 16 codes of bytes[0..8):
 * out[2k] from the high nibble of bytes[k], out[2k + 1] from its low one. */
static inline QT_QUANT_HD void qt_quant_dequant16_bf16_hd(const uint8_t bytes[8], const float table[16],
                                                         float absmax, uint16_t out[16]) {
  for (int k = 0; k < 8; k++) {
    out[2 * k] = qt_quant_bf16_rne_hd(table[bytes[k] >> 4] * absmax);
    out[2 * k + 1] = qt_quant_bf16_rne_hd(table[bytes[k] & 15] * absmax);
  }
}

#endif
