/* quant/gemv.h — y = W x straight from a 4-bit (NF4/FP4, optionally double
 * quantized) weight, without writing the dequantized matrix: what one
 * decoding position needs (model/decode.c), bound by reading the 4-bit codes.
 *
 * W is the (rows, cols) row-major matrix the weight holds (quant/quant.h
 * layout: flattened, blocks of `blocksize` consecutive elements, two codes
 * per byte, high nibble first); its element i dequantizes to
 * table[code_i] * absmax[i / blocksize], absmax decompressed as
 * qt_quant_dq_decompress_ref does (f32(f32(code8 * nested) + offset)) one
 * block at a time, inline.
 *
 * qt_quant_4bit_gemv_ref is the plain truth: each product
 * x[k] * (table[code] * absmax) formed in fp32 as dequantization rounds it,
 * summed in double. qt_quant_4bit_gemv is the fast path: OpenMP over rows;
 * for cols % blocksize == 0 (every real model) AVX-512 or AVX2 kernels chosen
 * at run time (a 16-entry table lookup per code, fp32 sums of
 * x * table[code] per block, scaled by the block's absmax), else the scalar
 * loop. Its sums round differently from the reference: agreement is
 * tolerance-level (tests/generate/test_gemv.c), not bit-level.
 *
 * Scratch: xs (cols floats), the fast path's deinterleaved x. Nothing
 * allocates. */
#ifndef QT_QUANT_GEMV_H
#define QT_QUANT_GEMV_H

#include <stdbool.h>
#include <stdint.h>

#include "quant/quant.h"

/* y (rows) = W (rows, cols) x (cols); rows * cols == w->n. */
void qt_quant_4bit_gemv_ref(const qt_quant_weight *w, int64_t rows, int64_t cols, const float *x,
                            float *y);
void qt_quant_4bit_gemv(const qt_quant_weight *w, int64_t rows, int64_t cols, const float *x,
                        float *y, float *xs, int threads);
/* The kernels, for tests: qt_quant_4bit_gemv_as runs the given one (AUTO:
 * what qt_quant_4bit_gemv picks) and returns false, computing nothing, when
 * this CPU lacks it. A vector kernel on a layout it cannot take (cols not a
 * multiple of blocksize) runs the scalar loop. */
typedef enum { QT_GEMV_AUTO = 0, QT_GEMV_SCALAR, QT_GEMV_AVX2, QT_GEMV_AVX512 } qt_gemv_kernel;
bool qt_quant_4bit_gemv_as(qt_gemv_kernel k, const qt_quant_weight *w, int64_t rows, int64_t cols,
                           const float *x, float *y, float *xs, int threads);
/* The kernel qt_quant_4bit_gemv runs here: "avx512", "avx2" or "scalar". */
const char *qt_quant_4bit_gemv_kernel(void);

#endif
