/* model/model_internal.h — the autograd/ops.h kernels model/ calls outside the
 * tape (decode.c, logits), wrapped in model_ops.c so the decoder names what it
 * runs in the model's terms. Not a public API. */
#ifndef QT_MODEL_MODEL_INTERNAL_H
#define QT_MODEL_MODEL_INTERNAL_H

#include <stdint.h>

#include "quant/quant.h"

/* rope_type: 0 default, 1 linear, 2 llama3 (the order both enums share).
 * inv_freq (D/2) as autograd's qt_rope_inv_freq computes it. */
void qt_model_internal_inv_freq(float *inv_freq, int rope_type, double theta, double factor,
                                double low, double high, double original_max, int64_t D);
/* logits (N, V) = x (N, C) W^T, W (V, C) (autograd's linear forward), then
 * soft-capped when softcap > 0 (gemma2 final_logit_softcapping: c tanh(z / c),
 * as the tape's cross entropy computes it). */
void qt_model_internal_logits(float *logits, const float *x, const float *W, int64_t N,
                              int64_t C, int64_t V, double softcap);


/* w (out, in) fp32 = the 4-bit weight w dequantized without allocating: a
 * double-quantized absmax is first decompressed into absmax (nblocks + 1
 * floats). The tape's weight fill (model.c) and the decoder (decode.c). */
void qt_model_internal_dequant(const qt_quant_weight *w, float *absmax, float *dst, int threads);

/* The forward kernels the KV-cache decoder (decode.c) runs, one-to-one the
 * autograd/ops.h calls the tape records, so decoding computes what the
 * training forward computes (shapes as there). */
void qt_model_internal_rmsnorm(float *out, float *rstd, const float *x, const float *w,
                               double eps, int64_t N, int64_t C);
void qt_model_internal_linear(float *y, const float *x, const float *W, const float *bias,
                              int64_t N, int64_t In, int64_t O);
/* y (N, O) += scale * (x A^T) B^T, no dropout; u (N, R) scratch. */
void qt_model_internal_lora(float *y, float *u, const float *x, const float *A, const float *B,
                            double scale, int64_t N, int64_t In, int64_t O, int64_t R);
void qt_model_internal_rope(float *out, const float *x, const int32_t *pos,
                            const float *inv_freq, int64_t N, int64_t H, int64_t D);
void qt_model_internal_swiglu(float *out, const float *gate, const float *up, int64_t n);
/* z (n) = c tanh(z / c) (the logits' soft-cap, as qt_model_internal_logits) */
void qt_model_internal_softcap(float *z, int64_t n, double cap);
void qt_model_internal_geglu(float *out, const float *gate, const float *up, int64_t n);
void qt_model_internal_add(float *out, const float *a, const float *b, int64_t n);

#endif
