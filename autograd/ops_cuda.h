/* autograd/ops_cuda.h — the CUDA backend of the simplest ops of ops.h: same
 * names with _cuda, same argument order, plus the stream (a cudaStream_t passed
 * as void *, NULL = default stream), so this header needs no CUDA include.
 *
 * Storage is bf16 (uint16_t bit patterns, common/half.h) for activations,
 * weights and gradients; saved statistics (rstd) are fp32; arithmetic and
 * reductions are fp32. Intermediate roundings follow transformers running in
 * bf16: RMSNorm rounds h = x * rstd to bf16 before multiplying by the weight
 * (LlamaRMSNorm: weight * hidden_states.to(input_dtype)), SwiGLU rounds silu(gate)
 * before multiplying by up (act_fn(gate) * up). RoPE keeps cos/sin in fp32.
 * Reductions use a fixed tree per row, so results do not depend on scheduling.
 *
 * All pointers are device pointers. Each function checks its launch and returns
 * QT_ERR_CUDA with the CUDA message on failure (common/cuda_check.h); errors
 * inside a kernel surface at the next synchronizing call. Shapes as in ops.h.
 * Only built with the CUDA backend (QLORA_HAVE_CUDA). The GEMM ops, attention,
 * LoRA and cross-entropy have no CUDA version yet. */
#ifndef QT_AUTOGRAD_OPS_CUDA_H
#define QT_AUTOGRAD_OPS_CUDA_H

#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out (N, C) = wte[ids] ; ids (N) device int32 in [0, V) (out of range traps:
 * a programmer bug, ids are validated by the data loader) ; wte (V, C) */
qt_status qt_op_embedding_forward_cuda(uint16_t *out, const int32_t *ids, const uint16_t *wte,
                                       int64_t N, int64_t C, int64_t V, void *stream);

/* out (N, C), rstd (N) fp32, x (N, C), w (C) */
qt_status qt_op_rmsnorm_forward_cuda(uint16_t *out, float *rstd, const uint16_t *x,
                                     const uint16_t *w, double eps, int64_t N, int64_t C,
                                     void *stream);
/* dx (N, C) (+)= ... */
qt_status qt_op_rmsnorm_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout,
                                      const uint16_t *x, const uint16_t *w, const float *rstd,
                                      int64_t N, int64_t C, void *stream);

/* out (n) = a + b ; dx (n) (+)= dout */
qt_status qt_op_add_forward_cuda(uint16_t *out, const uint16_t *a, const uint16_t *b, int64_t n,
                                 void *stream);
qt_status qt_op_add_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout, int64_t n,
                                  void *stream);

/* out (N, F) = silu(gate) * up ; dgate, dup (+)= ... (each may be NULL) */
qt_status qt_op_swiglu_forward_cuda(uint16_t *out, const uint16_t *gate, const uint16_t *up,
                                    int64_t n, void *stream);
qt_status qt_op_swiglu_backward_cuda(uint16_t *dgate, uint16_t *dup, int acc,
                                     const uint16_t *dout, const uint16_t *gate,
                                     const uint16_t *up, int64_t n, void *stream);

/* out (N, H, D) = RoPE(x) ; pos (N) device int32 ; inv_freq (D/2) device fp32 */
qt_status qt_op_rope_forward_cuda(uint16_t *out, const uint16_t *x, const int32_t *pos,
                                  const float *inv_freq, int64_t N, int64_t H, int64_t D,
                                  void *stream);
qt_status qt_op_rope_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout,
                                   const int32_t *pos, const float *inv_freq, int64_t N,
                                   int64_t H, int64_t D, void *stream);

#ifdef __cplusplus
}
#endif

#endif
