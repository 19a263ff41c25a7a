/* autograd/tape.h — a reverse-mode tape (Wengert list) over the ops of ops.h.
 *
 * Use, once per step:
 *   qt_tape_reset(t);                     activations of the last step are gone
 *   qt_tape_embedding / rmsnorm / linear / rope / attention / swiglu / add ...
 *   qt_tape_cross_entropy(..., &loss, &sum, &count);
 *   qt_tape_backward(t, loss, 1.0 / global_target_count);
 * Parameters are registered once, after qt_tape_init and before the first op,
 * and survive qt_tape_reset.
 *
 * Tensors are 2-D (rows, cols), dense row-major, all of the tape's dtype
 * (QT_F32 for training, QT_F64 for the finite-difference oracle). A tensor id
 * (int32_t) names a tensor until the next qt_tape_reset.
 *
 * Gradients:
 * - A tensor is FROZEN (weights: embeddings, norms, base linears, lm_head),
 *   TRAINABLE (LoRA A/B; its gradient buffer belongs to the caller and is
 *   accumulated into with +=, so micro-batches add up; the caller zeroes it per
 *   optimizer step), CONSTANT (caller data without gradient), or an ACTIVATION
 *   (an op output). An activation requires a gradient iff one of its inputs
 *   does; nothing else ever gets a gradient buffer, and an op's backward
 *   computes only the input gradients that are required. Giving a gradient to a
 *   frozen tensor is a programmer bug (QT_ASSERT).
 * - One set-or-accumulate rule (tape.c grad_target): the first contribution to
 *   an activation's gradient overwrites its (fresh) buffer, later ones add.
 * - Activation gradient buffers come from a gradient arena, allocated on first
 *   contribution; qt_tape_stats reports their bytes.
 *
 * Memory: two arenas (common/arena.h) sized at init (activations + saved
 * tensors + per-op work; activation gradients), reset by qt_tape_reset. Nothing
 * is allocated per step. The exact sizes come from recording one step on a
 * measuring tape (qt_tape_init_measure) before step 0; an op that does not fit
 * returns QT_ERR_NOMEM naming the arena and the buffer.
 *
 * Gradient checkpointing: qt_tape_layer(fn, ctx, in, checkpoint) runs a layer
 * (a function that records ops on the tape). With checkpoint set, only the
 * layer's input and output stay on the tape; backward re-records the layer from
 * its saved input (calling fn again), back-propagates through that recording and
 * discards it. fn must therefore be deterministic given (ctx, input values) —
 * e.g. dropout masks keyed by a counter, not drawn from a running RNG — and
 * must map its input to an output of the same shape (a decoder layer does).
 * The input of a checkpointed layer is an op output (or has no gradient).
 * Gradients are bit-identical with and without checkpointing.
 *
 * Int arrays (ids, positions, document ids, targets), dropout masks, inv_freq
 * and the data of params/constants are borrowed: they must stay valid and
 * unchanged until qt_tape_backward returns. */
#ifndef QT_AUTOGRAD_TAPE_H
#define QT_AUTOGRAD_TAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/ops.h" /* qt_att_opts */
#include "common/arena.h"
#include "common/status.h"
#include "common/tensor.h"

typedef struct qt_tape qt_tape;

typedef struct {
  size_t act_bytes;       /* arena for activations, saved tensors and op work buffers */
  size_t grad_bytes;      /* arena for activation gradients */
  int32_t max_tensors;    /* params + activations of one step (incl. recompute) */
  int32_t max_nodes;      /* ops of one step (incl. recompute) */
  int64_t ce_chunk_rows;  /* rows of logits formed at once by cross-entropy */
  bool ce_grad_in_forward;/* cross-entropy forms its input gradient during forward
                           * (qt_op_cross_entropy_fused_cpu): no logits recompute in
                           * backward, one (N, C) buffer more; off for eval-only use */
  bool gemm_bf16;         /* fp32 tapes: the base linears' and the lm_head's GEMMs
                           * take bf16 operands (ops.h qt_op_gemm_bf16_cpu; the caller
                           * checks qt_op_bf16_gemm_available); the operands' bf16
                           * copies and oneDNN's scratchpad are work buffers of the
                           * activation arena, so a measuring step counts them */
} qt_tape_config;

typedef struct {
  size_t act_used, act_peak;   /* bytes in the activation arena (peak includes work) */
  size_t grad_used, grad_peak; /* bytes in the gradient arena (with alignment) */
  size_t grad_tensor_bytes;    /* exact bytes of activation gradients now allocated */
  int32_t grad_tensors;        /* how many activations now hold a gradient buffer */
  int32_t n_tensors, n_nodes;
} qt_tape_stats;

/* dtype: QT_F32 or QT_F64. *out is NULL on failure. */
qt_status qt_tape_init(qt_tape **out, qt_dtype dtype, const qt_tape_config *cfg);
/* A measuring tape (common/arena.h qt_arena_init_measure): every recorder and
 * qt_tape_backward allocate and count exactly as on a real tape but compute
 * nothing (no kernel, no weight fill; data pointers are NULL, losses 0). Record
 * one step on it with the real shapes (and checkpoint setting), then
 * qt_tape_get_stats gives act_peak / grad_peak: the arena sizes for
 * qt_tape_init, known before step 0. cfg's byte sizes are ignored. */
qt_status qt_tape_init_measure(qt_tape **out, qt_dtype dtype, const qt_tape_config *cfg);
void qt_tape_free(qt_tape **t);

/* Parameters (persistent across qt_tape_reset; register before the first op).
 * data (rows, cols) borrowed. trainable: grad (rows, cols), caller-owned, += into. */
qt_status qt_tape_frozen(qt_tape *t, const char *name, const void *data, int64_t rows,
                         int64_t cols, int32_t *id);
qt_status qt_tape_trainable(qt_tape *t, const char *name, void *data, void *grad, int64_t rows,
                            int64_t cols, int32_t *id);
/* Per-step constant tensor (no gradient), data (rows, cols) borrowed. */
qt_status qt_tape_constant(qt_tape *t, const void *data, int64_t rows, int64_t cols, int32_t *id);

/* Drops every activation, node and activation gradient (params stay). */
void qt_tape_reset(qt_tape *t);

/* ---- ops (shapes as in ops.h; every output is a new activation) ---------- */
/* out (N, C) = wte[ids]; wte (V, C) frozen; ids (N) borrowed */
qt_status qt_tape_embedding(qt_tape *t, int32_t wte, const int32_t *ids, int64_t N, int32_t *out);
/* out = RMSNorm(x) * w; x (N, C); w (1, C) frozen */
qt_status qt_tape_rmsnorm(qt_tape *t, int32_t x, int32_t w, double eps, int32_t *out);
/* Per-head RMSNorm (qwen3 / gemma3 q_norm, k_norm: over head_dim, one weight
 * shared by all heads): x (N, heads*D) normed over each head's D values,
 * out = RMSNorm(x[:, h*D:(h+1)*D]) * w; w (1, D) frozen (no gradient, as
 * qt_tape_rmsnorm). The rmsnorm kernels over N*heads rows of D. */
qt_status qt_tape_rmsnorm_heads(qt_tape *t, int32_t x, int32_t w, double eps, int64_t heads,
                                int32_t *out);
/* out = a + b (same shape) */
qt_status qt_tape_add(qt_tape *t, int32_t a, int32_t b, int32_t *out);

/* LoRA branch of a linear: A (R, I), B (O, R) params (trainable or frozen);
 * mask (N, I) of 0/1 or NULL for no dropout, keep_scale = 1/(1-p). */
typedef struct {
  int32_t A, B;
  double scale;          /* lora_alpha / r (or / sqrt(r) with rsLoRA) */
  const uint8_t *mask;   /* borrowed */
  double keep_scale;
} qt_tape_lora;
/* out (N, O) = x W^T (+ bias) (+ LoRA); x (N, I); W (O, I) frozen; bias (1, O)
 * frozen or -1; lora NULL for none. */
qt_status qt_tape_linear(qt_tape *t, int32_t x, int32_t W, int32_t bias, const qt_tape_lora *lora,
                         int32_t *out);
/* A frozen weight that is not stored on the tape but materialized on demand:
 * fill(ctx, dst) writes its (rows, cols) values, in the tape's dtype, into dst
 * (e.g. dequantizes a 4-bit weight). The tape calls it into a scratch buffer of
 * its activation arena in forward, and again in backward when dx is needed
 * (re-dequantize rather than keep the weight), then releases the scratch. So
 * fill must give the same values every time; ctx is borrowed until
 * qt_tape_backward returns. */
typedef qt_status (*qt_tape_weight_fill)(void *ctx, void *dst);
typedef struct {
  int64_t rows, cols;       /* (O, In) */
  qt_tape_weight_fill fill;
  void *ctx;
  const char *name;         /* for messages; borrowed */
  /* optional, for gemm_bf16 tapes: writes the same values rounded to bf16
   * (uint16_t bit patterns, round to nearest even: exactly fill's values
   * converted), skipping the fp32 copy; NULL: fill, then convert */
  qt_tape_weight_fill fill_bf16;
} qt_tape_weight_src;
/* qt_tape_linear with the base weight given by W (see above) instead of a
 * registered frozen tensor; bias and lora as for qt_tape_linear. */
qt_status qt_tape_linear_src(qt_tape *t, int32_t x, const qt_tape_weight_src *W, int32_t bias,
                             const qt_tape_lora *lora, int32_t *out);
/* out (N, H*D) = RoPE(x) over H heads of size D; pos (N), inv_freq (D/2) borrowed */
qt_status qt_tape_rope(qt_tape *t, int32_t x, int64_t H, int64_t D, const int32_t *pos,
                       const float *inv_freq, int32_t *out);
/* out (B*T, H*D) = causal GQA with per-document mask; q (B*T, H*D); k, v (B*T, K*D);
 * doc (B*T) document ids, borrowed */
qt_status qt_tape_attention(qt_tape *t, int32_t q, int32_t k, int32_t v, int64_t B, int64_t T,
                            int64_t H, int64_t K, int64_t D, const int32_t *doc, int32_t *out);
/* The same with attention options (scale, sliding window, logit soft-capping;
 * ops.h qt_att_opts), copied into the node (NULL = defaults, i.e.
 * qt_tape_attention). A checkpointed layer replays its ops on recompute, so the
 * layer function passes the same opts again. */
qt_status qt_tape_attention_ex(qt_tape *t, int32_t q, int32_t k, int32_t v, int64_t B, int64_t T,
                               int64_t H, int64_t K, int64_t D, const int32_t *doc,
                               const qt_att_opts *opts, int32_t *out);
/* out = silu(gate) * up */
qt_status qt_tape_swiglu(qt_tape *t, int32_t gate, int32_t up, int32_t *out);
/* out = gelu_tanh(gate) * up (gemma's gelu_pytorch_tanh; ops.h qt_op_geglu_forward_cpu) */
qt_status qt_tape_geglu(qt_tape *t, int32_t gate, int32_t up, int32_t *out);
/* out = x * s, s rounded to the tape's dtype first (gemma's embedding scale:
 * pass (double)(float)sqrt(C) for transformers' tensor(C ** 0.5, dtype)) ;
 * dx = s * dout */
qt_status qt_tape_scale(qt_tape *t, int32_t x, double s, int32_t *out);
/* out (N, width) = x (N, C)[:, c0:c0+width] (phi3's fused qkv / gate_up split).
 * Backward adds dout into those columns of dx; x may feed any number of slices
 * and other ops (the first contribution to dx writes zeros outside its slice). */
qt_status qt_tape_slice_cols(qt_tape *t, int32_t x, int64_t c0, int64_t width, int32_t *out);
/* loss (1, 1) = sum over targets != -100 of CE(x W^T); x (N, C); W (V, C) frozen
 * (lm_head, or the embedding table when tied); targets (N) shifted, borrowed.
 * *loss_sum gets the summed loss, *count the number of targets. */
qt_status qt_tape_cross_entropy(qt_tape *t, int32_t x, int32_t W, const int32_t *targets,
                                int32_t *loss, double *loss_sum, int64_t *count);
/* The same with final-logit soft-capping (gemma2 final_logit_softcapping):
 * logits -> softcap * tanh(logits / softcap) before the loss, the gradient
 * through the tanh; softcap = 0 is qt_tape_cross_entropy exactly. */
qt_status qt_tape_cross_entropy_ex(qt_tape *t, int32_t x, int32_t W, const int32_t *targets,
                                   double softcap, int32_t *loss, double *loss_sum,
                                   int64_t *count);

/* A layer: records ops on t mapping `in` to *out (same shape). */
typedef qt_status (*qt_tape_layer_fn)(qt_tape *t, void *ctx, int32_t in, int32_t *out);
qt_status qt_tape_layer(qt_tape *t, qt_tape_layer_fn fn, void *ctx, int32_t in, bool checkpoint,
                        int32_t *out);

/* Back-propagates from loss (the output of qt_tape_cross_entropy) with
 * d(objective)/d(loss sum) = dloss (1 / the normalizing target count). */
qt_status qt_tape_backward(qt_tape *t, int32_t loss, double dloss);

/* ---- inspection ----------------------------------------------------------- */
int64_t qt_tape_rows(const qt_tape *t, int32_t id);
int64_t qt_tape_cols(const qt_tape *t, int32_t id);
const void *qt_tape_data(const qt_tape *t, int32_t id);
/* The gradient of id, or NULL when it has none (frozen, constant, not needed,
 * or not reached yet). For trainable params: the caller's buffer. */
const void *qt_tape_grad(const qt_tape *t, int32_t id);
bool qt_tape_requires_grad(const qt_tape *t, int32_t id);
qt_tape_stats qt_tape_get_stats(const qt_tape *t);
/* Adds the tape's two arenas to a memory plan (capacity and peak), where = "cpu". */
qt_status qt_tape_add_to_plan(const qt_tape *t, qt_mem_plan *plan);

#endif
