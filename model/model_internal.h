/* model/model_internal.h — helpers of model/ that need autograd/ops.h, kept in
 * model_ops.c: ops.h and hf_config.h both declare qt_rope_type, so no
 * translation unit includes both. Not a public API. */
#ifndef QT_MODEL_MODEL_INTERNAL_H
#define QT_MODEL_MODEL_INTERNAL_H

#include <stdint.h>

/* rope_type: 0 default, 1 linear, 2 llama3 (the order both enums share).
 * inv_freq (D/2) as autograd's qt_rope_inv_freq computes it. */
void qt_model_internal_inv_freq(float *inv_freq, int rope_type, double theta, double factor,
                                double low, double high, double original_max, int64_t D);
/* logits (N, V) = x (N, C) W^T, W (V, C) (autograd's linear forward). */
void qt_model_internal_logits(float *logits, const float *x, const float *W, int64_t N,
                              int64_t C, int64_t V);

#endif
