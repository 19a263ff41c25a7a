/* autograd/kernels/attention_mask.h — the per-element rules of the attention op
 * (autograd/ops.h qt_att_opts), written once for the CPU kernels
 * (attention_cpu.inc), the CUDA kernels (attention_cuda.cu) and a host test
 * (tests/autograd/test_ops_grad.c test_attention_mask_helpers): which key a
 * query sees, and the logit soft-capping with its derivative.
 *
 * Small `static inline` helpers (host + device under nvcc) so that every backend
 * runs literally the same predicate and formula; nothing else belongs here. */
#ifndef QT_AUTOGRAD_KERNELS_ATTENTION_MASK_H
#define QT_AUTOGRAD_KERNELS_ATTENTION_MASK_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define QT_ATT_HD __host__ __device__
#else
#define QT_ATT_HD
#endif

/* Key j visible from query i of the same packed row (di, dj their document
 * ids): causal (j <= i), same document, and inside the sliding window when
 * window > 0 — transformers masking_utils sliding_window_overlay keeps
 * kv_idx > q_idx - sliding_window, i.e. i - j < window. */
static inline QT_ATT_HD int qt_att_visible(int64_t i, int64_t j, int32_t di, int32_t dj,
                                           int64_t window) {
  return j <= i && dj == di && (window <= 0 || i - j < window);
}

/* First key a query (or a tile of queries starting at i) can see within a
 * document starting at s0: max(s0, i - window + 1), s0 without a window. */
static inline QT_ATT_HD int64_t qt_att_key_start(int64_t s0, int64_t i, int64_t window) {
  return window > 0 && i - window + 1 > s0 ? i - window + 1 : s0;
}

/* gemma2 attn_logit_softcapping (transformers models/gemma2/modeling_gemma2.py
 * eager_attention_forward): s -> softcap * tanh(s / softcap); softcap <= 0
 * leaves s alone. In double: the kernels pass the score as they store it
 * (fp32-rounded in the fp32 paths) and round the result back. */
static inline QT_ATT_HD double qt_att_softcap(double s, double softcap) {
  return softcap > 0 ? softcap * tanh(s / softcap) : s;
}

/* d softcap(s) / d s = 1 - tanh^2(s / softcap) (1 without capping): the
 * backward multiplies the capped score's gradient by it. */
static inline QT_ATT_HD double qt_att_softcap_grad(double s, double softcap) {
  if (softcap <= 0) return 1.0;
  double t = tanh(s / softcap);
  return 1.0 - t * t;
}

#endif
