/* model/model_ops.c — the autograd/ops.h calls model.c needs (model_internal.h
 * says why they live apart). */
#include <stddef.h>

#include "autograd/ops.h"
#include "common/status.h"
#include "model/model_internal.h"

void qt_model_internal_inv_freq(float *inv_freq, int rope_type, double theta, double factor,
                                double low, double high, double original_max, int64_t D) {
  QT_ASSERT(rope_type >= 0 && rope_type <= 2);
  qt_rope_config c = {.type = rope_type == 0   ? QT_ROPE_DEFAULT
                              : rope_type == 1 ? QT_ROPE_LINEAR
                                               : QT_ROPE_LLAMA3,
                      .theta = theta, .factor = factor, .low_freq_factor = low,
                      .high_freq_factor = high, .original_max_position_embeddings = original_max};
  qt_rope_inv_freq(inv_freq, &c, D);
}

void qt_model_internal_logits(float *logits, const float *x, const float *W, int64_t N,
                              int64_t C, int64_t V) {
  qt_op_linear_forward_cpu(logits, x, W, NULL, N, C, V);
}
