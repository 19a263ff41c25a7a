/* model/model_cuda.h — one forward + backward of the decoder with LoRA on the
 * GPU, written out op by op (no tape) with the CUDA ops of autograd/ops_cuda.h.
 * Only built with the CUDA backend (QLORA_HAVE_CUDA; model_cuda.cu).
 *
 * The computation is the one model.h records on the CPU tape (transformers
 * LlamaDecoderLayer.forward, formats.md section 5):
 *   h = embed[ids]; per layer:
 *     n1 = rmsnorm(h, input_layernorm); q, k, v = lin(n1) (+ LoRA);
 *     a = attention(rope(q), rope(k), v)  (causal, per document, GQA);
 *     h = h + lin_o(a); n2 = rmsnorm(h, post_attention_layernorm);
 *     h = h + lin_down(silu(lin_gate(n2)) * lin_up(n2));
 *   loss = sum CE(rmsnorm(h, norm) lm_head^T, targets)  (chunked rows).
 * A LoRA linear is y = base(x) (+ bias) + scale * B (A x), PEFT's Linear.
 *
 * Precision (ops_cuda.h): bf16 storage of weights, activations and gradients
 * (every op output rounded once to bf16), fp32 arithmetic, saved statistics
 * (RMSNorm rstd, attention logsumexp, CE logsumexp) fp32, the loss summed in
 * double. Weights: embeddings, norms, biases, lm_head and dense linears are
 * uploaded rounded to bf16; 4-bit linears stay packed on the device (codes +
 * absmax, or codes + 8-bit absmax + nested absmax + map when double
 * quantized) and are dequantized to bf16 scratch for each use (forward, and
 * again for dx in backward), as the CPU tape does in fp32. LoRA A and B are
 * uploaded as bf16 (exact for lora.h `data` synced from bf16 storage; fp32
 * master values are rounded).
 *
 * Memory: this is the reference / test path, not the training path: every
 * buffer is its own cudaMalloc, made and freed within the call, and every
 * activation of every layer is kept for backward. The training loop will hold
 * weights once and take activations from arenas (common/arena.h) instead.
 *
 * LoRA comes in as plain host arrays (qt_model_cuda_lora), not as a qt_lora:
 * model/ sits below lora/ (arrows point downward), so the caller (a test, the
 * trainer) fills one entry per adapted (layer, projection) from
 * qt_lora_tensors (A, B `data`, qt_lora_scale). Dropout is not applied (as
 * qt_lora_set_step(l, step, false), or lora_dropout 0). */
#ifndef QT_MODEL_MODEL_CUDA_H
#define QT_MODEL_MODEL_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "model/model.h"

/* One adapted base linear (layer, proj) of shape (out, in) (model->layers[layer].proj[proj]). */
typedef struct {
  int layer;
  qt_proj proj;
  int64_t r;        /* rank >= 1 */
  const float *A;   /* (r, in) host fp32; uploaded rounded to bf16 */
  const float *B;   /* (out, r) host fp32; uploaded rounded to bf16 */
  float *dA;        /* (r, in) host fp32 out: overwritten with the gradient */
  float *dB;        /* (out, r) host fp32 out */
} qt_model_cuda_lora;

/* Forward, then (when n_lora > 0) backward with d(objective)/d(loss_sum) =
 * dloss, of one packed batch b (model.h; targets required). Returns
 * *loss_sum = summed CE over the targets and *count = number of targets, and
 * for every lora[i] its dA, dB = d(dloss * loss_sum)/d(A, B) (computed in bf16
 * on the device, widened to fp32; overwritten, not accumulated). scale: the
 * LoRA scale (alpha / r or alpha / sqrt(r)), the same for every entry. At most
 * one entry per (layer, proj). Uses the current CUDA device; synchronizes
 * before it returns; allocates and frees all its device memory. Errors:
 * QT_ERR_INVALID (ids/targets/positions out of range, a bad lora entry),
 * QT_ERR_UNSUPPORTED (a sliding window shorter than the row, head_dim > 256),
 * QT_ERR_NOMEM, QT_ERR_CUDA. */
qt_status qt_model_forward_backward_cuda(const qt_model *m, const qt_model_cuda_lora *lora,
                                         size_t n_lora, double scale, const qt_model_batch *b,
                                         double dloss, double *loss_sum, int64_t *count);

#ifdef __cplusplus
}
#endif

#endif
