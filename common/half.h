/* common/half.h — bf16 and fp16 <-> fp32 conversions on the CPU.
 *
 * 16-bit values travel as their raw bit patterns (uint16_t), the way they lie in
 * a safetensors file or a device buffer; nothing here depends on a compiler's
 * _Float16 or __bf16 support.
 *
 * Rounding: fp32 -> bf16 and fp32 -> fp16 round to nearest, ties to even (RNE),
 * like torch's tensor.to(torch.bfloat16 / torch.float16) on CPU and CUDA's
 * __float2bfloat16_rn / __float2half_rn. Checked bit for bit against torch in
 * tests/common/test_half.c (fixture tests/golden/half/, made by
 * tools/reference/make_half_fixtures.py).
 *   - Overflow: bf16 has fp32's exponent range, so only values that round past
 *     FLT_MAX's bf16 neighbour become inf; fp16 values with |x| >= 65520 (the
 *     midpoint between 65504 and 2^16, a tie that rounds to the even side, inf)
 *     become +-inf.
 *   - Subnormals: fp16 subnormals (2^-24 .. 2^-14) are produced and read
 *     exactly; |x| <= 2^-25 rounds to +-0. bf16 subnormals are fp32 subnormals
 *     with the low 16 bits removed and round like any other value.
 *   - NaN: every fp32 NaN becomes the canonical quiet NaN 0x7FFF, for bf16 and
 *     for fp16 — what CUDA produces (cuda_bf16.hpp __internal_float2bfloat16,
 *     cuda_fp16.hpp __internal_float2half, CUDA 13.0), so CPU and GPU results
 *     agree bit for bit. (torch writes 0x7FC0 or 0xFFFF for bf16 depending on
 *     its code path; both are NaN, which is all the tests require of it.)
 *   - 16 -> 32 bit is exact. bf16 -> fp32 is a shift (NaN payloads kept as
 *     they are, like CUDA's __bfloat162float); fp16 -> fp32 turns every NaN into
 *     the canonical fp32 NaN 0x7FFFFFFF, like CUDA's __half2float
 *     (cuda_fp16.hpp __internal_half2float).
 *   All four conversions are compared bit for bit with CUDA's own host
 *   conversion functions in tests/common/test_half_cuda_host.cu and with the
 *   GPU in tests/common/test_half_cuda.cu.
 *
 * Stochastic rounding (qt_bf16_from_f32_sr): rounds |x| up to the next bf16
 * with probability (low 16 bits of x's fp32 pattern) / 2^16, else down (towards
 * zero), so E[result] = x exactly for finite x (Gupta et al. 2015, "Deep
 * Learning with Limited Numerical Precision", arXiv:1502.02551, eq. 2; used
 * for bf16 weights in Zamirai et al. 2020, "Revisiting BFloat16 Training",
 * arXiv:2010.06192). It is done the usual way: add the LOW 16 BITS of the
 * random word (rnd & 0xFFFF) to the fp32 bit pattern, then drop its low 16 bits
 * — the `(x_f32_bits + rand_16bit) & 0xFFFF0000` form noted in torchao's
 * torchao/optim/quant_utils.py _fp32_to_bf16_sr. Bits 16..31 of rnd are
 * ignored. The equally unbiased compare form (`rand16 < low16` rounds away,
 * torchao's main line) gives other bits for the same random word, so a CUDA
 * kernel that must match this function bit for bit uses this add form and the
 * same random word.
 *
 * Bulk variants (_n) convert n elements; src and dst must not overlap. */
#ifndef QT_COMMON_HALF_H
#define QT_COMMON_HALF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The canonical quiet NaN written for any NaN input (bf16 and fp16). */
#define QT_HALF_CANONICAL_NAN 0x7FFFu
/* The fp32 pattern qt_f16_to_f32 returns for any fp16 NaN. */
#define QT_F32_CANONICAL_NAN 0x7FFFFFFFu

uint16_t qt_bf16_from_f32(float x);
float qt_bf16_to_f32(uint16_t h);
uint16_t qt_f16_from_f32(float x);
float qt_f16_to_f32(uint16_t h);

/* Stochastic rounding; rnd: a uniformly random 32-bit word, only its low 16
 * bits are used (see above). NaN -> QT_HALF_CANONICAL_NAN, +-inf stays +-inf; a
 * finite x within one bf16 step of the largest finite value can round to inf. */
uint16_t qt_bf16_from_f32_sr(float x, uint32_t rnd);

/* dst[i] = conversion of src[i], i < n. */
void qt_bf16_from_f32_n(uint16_t *dst, const float *src, size_t n);
void qt_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void qt_f16_from_f32_n(uint16_t *dst, const float *src, size_t n);
void qt_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);
/* dst[i] = qt_bf16_from_f32_sr(src[i], rnd[i]). */
void qt_bf16_from_f32_sr_n(uint16_t *dst, const float *src, const uint32_t *rnd, size_t n);

#ifdef __cplusplus
}
#endif

#endif
