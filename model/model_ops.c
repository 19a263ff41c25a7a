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
                              int64_t C, int64_t V, double softcap) {
  qt_op_linear_forward_cpu(logits, x, W, NULL, N, C, V);
  if (softcap > 0) qt_op_softcap_cpu(logits, N * V, softcap);
}

void qt_model_internal_dequant(const qt_quant_weight *w, float *absmax, float *dst, int threads) {
  const float *am = w->absmax;
  if (w->nested) {
    qt_quant_weight_absmax(w, absmax);
    am = absmax;
  }
  qt_quant_4bit_dequantize(w->type, w->packed, am, w->n, w->blocksize, dst, threads);
}

void qt_model_internal_rmsnorm(float *out, float *rstd, const float *x, const float *w,
                               double eps, int64_t N, int64_t C) {
  qt_op_rmsnorm_forward_cpu(out, rstd, x, w, eps, N, C);
}

void qt_model_internal_linear(float *y, const float *x, const float *W, const float *bias,
                              int64_t N, int64_t In, int64_t O) {
  qt_op_linear_forward_cpu(y, x, W, bias, N, In, O);
}

void qt_model_internal_lora(float *y, float *u, const float *x, const float *A, const float *B,
                            double scale, int64_t N, int64_t In, int64_t O, int64_t R) {
  qt_op_lora_forward_cpu(y, u, NULL, x, NULL, 1.0, A, B, scale, N, In, O, R);
}

void qt_model_internal_rope(float *out, const float *x, const int32_t *pos,
                            const float *inv_freq, int64_t N, int64_t H, int64_t D) {
  qt_op_rope_forward_cpu(out, x, pos, inv_freq, N, H, D);
}

void qt_model_internal_swiglu(float *out, const float *gate, const float *up, int64_t n) {
  qt_op_swiglu_forward_cpu(out, gate, up, n);
}

void qt_model_internal_softcap(float *z, int64_t n, double cap) { qt_op_softcap_cpu(z, n, cap); }

void qt_model_internal_geglu(float *out, const float *gate, const float *up, int64_t n) {
  qt_op_geglu_forward_cpu(out, gate, up, n);
}

void qt_model_internal_add(float *out, const float *a, const float *b, int64_t n) {
  qt_op_add_forward_cpu(out, a, b, n);
}
