/* autograd/rope_freq.c — RoPE inverse frequencies with the scalings transformers
 * implements (modeling_rope_utils.py: _compute_default_rope_parameters,
 * _compute_linear_scaling_rope_parameters, _compute_llama3_parameters).
 * transformers computes these on float32 tensors, with Python scalars cast to
 * float32 by torch's scalar-tensor promotion, so every step here is a float
 * operation on float operands in the same order. */
#include <math.h>
#include <stddef.h>

#include "autograd/ops.h"
#include "common/status.h"

void qt_rope_inv_freq(float *inv_freq, const qt_rope_config *cfg, int64_t D) {
  QT_ASSERT(D > 0 && D % 2 == 0);
  const float two_pi = (float)(2.0 * 3.14159265358979323846);
  for (int64_t j = 0; j < D / 2; j++) {
    /* inv_freq = 1.0 / (base ** (arange(0, dim, 2, int64).float() / dim)) */
    float e = (float)(2 * j) / (float)D;
    float f = 1.0f / powf((float)cfg->theta, e);
    if (cfg->type == QT_ROPE_LINEAR) {
      f = f / (float)cfg->factor; /* inv_freq /= factor */
    } else if (cfg->type == QT_ROPE_LLAMA3) {
      float factor = (float)cfg->factor, lff = (float)cfg->low_freq_factor;
      float old_ctx = (float)cfg->original_max_position_embeddings;
      /* Python scalars: old_context_len / low_freq_factor etc. are double, then cast. */
      float low_wl = (float)(cfg->original_max_position_embeddings / cfg->low_freq_factor);
      float high_wl = (float)(cfg->original_max_position_embeddings / cfg->high_freq_factor);
      float wavelen = two_pi / f;
      float scaled = wavelen > low_wl ? f / factor : f; /* inv_freq_llama */
      float smooth = (old_ctx / wavelen - lff) / (float)(cfg->high_freq_factor - cfg->low_freq_factor);
      float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
      int medium = !(wavelen < high_wl) && !(wavelen > low_wl);
      f = medium ? smoothed : scaled;
    }
    inv_freq[j] = f;
  }
}
