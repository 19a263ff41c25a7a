/* model/model_cuda.h — one forward + backward (or a forward alone, for
 * evaluation) of the decoder with LoRA on the GPU, written out op by op (no
 * tape) with the CUDA ops of autograd/ops_cuda.h.
 * Only built with the CUDA backend (QLORA_HAVE_CUDA; model_cuda.cu).
 *
 * The computation is the one model.h records on the CPU tape (transformers
 * LlamaDecoderLayer.forward, formats.md section 5):
 *   h = embed[ids]; per layer:
 *     n1 = rmsnorm(h, input_layernorm); q, k, v = lin(n1) (+ LoRA);
 *     a = attention(rope(q), rope(k), v)  (causal, per document, GQA);
 *     h = h + lin_o(a); n2 = rmsnorm(h, post_attention_layernorm);
 *     h = h + lin_down(silu(lin_gate(n2)) * lin_up(n2));
 *   loss = sum CE(rmsnorm(h, norm) lm_head^T, targets)  (chunked rows; with
 *   backward the loss and its gradient in one pass over the logits,
 *   qt_op_cross_entropy_fused_cuda, as the CPU tape's grad-in-forward).
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
 * Persistent context (qt_model_cuda): qt_model_cuda_init uploads the weights
 * once, creates the cuBLASLt context (32 MiB workspace) once and allocates
 * every activation, gradient and scratch buffer for the largest batch
 * (max_B x max_T tokens) and LoRA rank (max_r) once;
 * qt_model_cuda_forward_backward reuses them for any batch with B <= max_B,
 * T <= max_T. Per call it copies in the batch (ids, targets, positions,
 * documents) and each entry's A and B (host fp32 -> bf16 through a host
 * staging buffer made at init), and copies the gradients out (qt_model_cuda_loss:
 * only the loss and count); it allocates nothing, except that the first call
 * with dropout allocates one shared dropout scratch (below), kept for every
 * later call.
 * Dropout masks are never stored or uploaded: the LoRA kernels draw each
 * keep bit from the entry's Philox stream (key, subsequence, threshold) where
 * they apply it, in the forward (xd) and again in the backward (dx), bit for
 * bit the mask the CPU tape's hook draws (autograd/ops_cuda.h
 * qt_dropout_cuda, common/philox_hd.h).
 * Device memory (bytes; Nm = max_B * max_T, W = 2 for bf16; every buffer its
 * own cudaMalloc):
 *   weights: embed V*C*W when tied (the lm_head reads it); untied, the
 *     lm_head V*C*W only: the embedding table stays on the host and each
 *     batch's rows go up (a host staging of Nm*C*W); + norms; per linear
 *     dense out*in*W, or 4-bit (out*in)/2 + absmax (4 or 1 + 4/256 per block)
 *     + bias out*W;
 *   LoRA, per linear of every layer (adapted or not): A, B
 *     max_r*(in + out)*W and u Nm*max_r*W; one dA, dB pair for all,
 *     max_r*(max in + max out)*W (each linear's gradients leave it right
 *     after that linear's backward);
 *   batch: Nm*4*4 (ids, targets, positions, documents);
 *   saved activations, per layer: Nm*(4C + 2HD + 2KD + 3F)*W
 *     + Nm*2*4 (rstd) + max_B*H*max_T*4 (lse); with checkpointing only the
 *     layer inputs Nm*C*W per layer (with offload: 2 of them, a ring; the
 *     rest in pinned host memory, below), plus one layer's set above (and
 *     one u per projection instead of one per linear), shared by all layers;
 *   scratch: dequantized weight max(out*in)*W, absmax max(nblocks)*4,
 *     Nm*(HD + KD + 3C)*W (incl. the last layer's output) + Nm*(4 + 4 + 8),
 *     logits and dlogits
 *     min(Nm, 256)*V*(4 + W); backward Nm*(3C + 3F + 3HD + 3KD + max_r)*W
 *     + max_B*H*max_T*4;
 *   with dropout (lazily, once): xd Nm*max(in)*W (a linear's dropped-out
 *     input, formed in its forward and formed again in its backward for dA:
 *     not saved per linear; then the backward's du A in the same buffer); no
 *     mask bytes.
 * qt_model_cuda_device_bytes reports the total held. Without checkpointing
 * every activation of every layer is kept for backward; with it (the trainer's
 * training.gradient_checkpointing) each layer keeps its input and its forward
 * runs again, from that input, just before its backward (the same kernels and
 * dropout streams, so the same values: the gradients are bit-identical to the
 * run without).
 * Activation offloading (qt_model_cuda_opts.offload, with checkpointing; the
 * trainer's training.activation_offloading; torchtune's
 * enable_activation_offloading, Unsloth's offloaded gradient checkpointing):
 * the layer inputs live in pinned host memory, L*Nm*C*W bytes in one
 * cudaHostAlloc (qt_model_cuda_host_bytes; not device bytes), and the device
 * keeps a ring of 2 inputs, 2*Nm*C*W, instead of L*Nm*C*W (1 GiB less at
 * Llama-3-8B x 4096 tokens). A training call's forward copies each layer's
 * input to its host slot on a second stream while the layer computes; the
 * backward fetches layer l - 1's input while layer l's backward runs. Only
 * bytes move: the losses and gradients are bit-identical to checkpointing
 * without it. Forward-only calls (qt_model_cuda_loss, a call without LoRA,
 * the decoder) copy nothing. The context prints nothing.
 *
 * LoRA comes in as plain host arrays (qt_model_cuda_lora), not as a qt_lora:
 * model/ sits below lora/ (arrows point downward), so the caller (a test, the
 * trainer) fills one entry per adapted (layer, projection) from
 * qt_lora_tensors (A, B `data`, qt_lora_scale) and, for dropout, the stream
 * fields from qt_lora_dropout_stream (the stream of the CPU tape's mask of the
 * same step, so both paths drop the same inputs):
 *   qt_lora_dropout_stream(l, e.layer, e.proj, &e.dropout_key,
 *                          &e.dropout_subsequence, &e.dropout_threshold,
 *                          &e.keep_scale, &e.dropout);
 * (after qt_lora_set_step for the micro-step, as the tape's hook sees it). */
#ifndef QT_MODEL_MODEL_CUDA_H
#define QT_MODEL_MODEL_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "model/model.h"

/* One adapted base linear (layer, proj) of shape (out, in) (model->layers[layer].proj[proj]). */
typedef struct {
  int layer;
  qt_proj proj;
  int64_t r;        /* rank >= 1 (<= the context's max_r) */
  const float *A;   /* (r, in) host fp32; uploaded rounded to bf16 */
  const float *B;   /* (out, r) host fp32; uploaded rounded to bf16 */
  float *dA;        /* (r, in) host fp32 out: overwritten with the gradient
                     * (unused by qt_model_cuda_loss: may be NULL there) */
  float *dB;        /* (out, r) host fp32 out (likewise) */
  /* Device-resident adapters (the trainer's GPU optimizer, train/backend_cuda.c):
   * with dev_A and dev_B set, the weights are read from these device bf16
   * arrays (A (r, in), B (out, r)) and the host A, B are ignored; with
   * dev_dA and dev_dB set, the gradients are ADDED into these device fp32
   * arrays (accumulated over micro-batches) and the host dA, dB are ignored
   * (nothing is downloaded). Either pair NULL: the host path above. */
  const uint16_t *dev_A, *dev_B;
  float *dev_dA, *dev_dB;
  /* Dropout of this linear's LoRA input (qt_lora_dropout_stream fills all
   * five): with dropout true, element e = n * in + i of the (B*T, in) input is
   * kept iff word e of the Philox stream curand_init(dropout_key,
   * dropout_subsequence, 0) is > dropout_threshold, and kept values are
   * multiplied by keep_scale. dropout false (a zeroed entry): no dropout, the
   * other four ignored. qt_model_cuda_loss ignores all five (model.eval()). */
  bool dropout;
  uint64_t dropout_key;
  uint64_t dropout_subsequence;
  int64_t dropout_threshold; /* in [-1, UINT32_MAX] (common/philox.h qt_philox_keep_threshold) */
  double keep_scale;         /* > 0 with dropout (1 / (1 - p)) */
} qt_model_cuda_lora;

/* Whether this explicit CUDA model composes the layers of config c: the
 * llama-style layer (llama / mistral / qwen2: separate q, k, v and gate, up,
 * pre-norms without +1, SiLU, no qk-norm, sandwich norms, embedding scale,
 * soft-capping or local RoPE). Other families train on the CPU tape;
 * qt_model_cuda_init refuses them (QT_ERR_UNSUPPORTED). */
bool qt_model_cuda_composes(const qt_hf_config *c);

/* Weights and buffers on the current CUDA device (see above). */
typedef struct qt_model_cuda qt_model_cuda;

/* How a context keeps what the backward reads (above). A zeroed struct: every
 * activation of every layer kept on the device. */
typedef struct {
  bool checkpoint; /* each layer keeps its input only; its forward runs again before its backward */
  bool offload;    /* (needs checkpoint) the layer inputs in pinned host memory, a ring of 2 on the device */
} qt_model_cuda_opts;

/* Uploads m's weights and allocates the buffers for batches up to max_B rows
 * of max_T tokens and LoRA ranks up to max_r (>= 1), keeping activations as
 * opts says (above). m is borrowed: it must
 * outlive the context (its config and shapes are read per call), and later
 * changes to its weights are not seen. *out is NULL on failure. Errors:
 * QT_ERR_INVALID (a size < 1, offload without checkpoint, a 4-bit weight of
 * the wrong size), QT_ERR_NOMEM, QT_ERR_CUDA (also when the pinned host
 * memory cannot be allocated). */
qt_status qt_model_cuda_init(const qt_model *m, int64_t max_B, int64_t max_T, int64_t max_r,
                             const qt_model_cuda_opts *opts, qt_model_cuda **out);
/* The workspace of the context's cuBLASLt handle (not in the device bytes below). */
#define QT_MODEL_CUDA_GEMM_WORKSPACE (32u << 20)
/* The device bytes qt_model_cuda_init(m, max_B, max_T, max_r, opts) would allocate,
 * plus (dropout) the dropout scratch of a first call with dropout, and
 * (host_bytes, may be NULL) the pinned host bytes it would allocate (0
 * without offload): the same code sizes every buffer without allocating (no
 * GPU needed), so these equal qt_model_cuda_device_bytes and
 * qt_model_cuda_host_bytes of such a context. Errors as qt_model_cuda_init's
 * argument checks. */
qt_status qt_model_cuda_plan_bytes(const qt_model *m, int64_t max_B, int64_t max_T, int64_t max_r,
                                   const qt_model_cuda_opts *opts, bool dropout, size_t *bytes,
                                   size_t *host_bytes);
/* Device bytes the context holds now (grows only by the lazy dropout
 * scratch). */
size_t qt_model_cuda_device_bytes(const qt_model_cuda *ctx);
/* Pinned host bytes the context holds (the offloaded layer inputs; 0 without
 * offload). */
size_t qt_model_cuda_host_bytes(const qt_model_cuda *ctx);
/* Forward, then (when n_lora > 0) backward with d(objective)/d(loss_sum) =
 * dloss, of one packed batch b (model.h; targets required; b->B <= max_B,
 * b->T <= max_T). Returns *loss_sum = summed CE over the targets and *count =
 * number of targets, and for every lora[i] its dA, dB = d(dloss *
 * loss_sum)/d(A, B) (computed in bf16 on the device, widened to fp32;
 * overwritten, not accumulated). With lora[i].dropout, that linear's LoRA
 * input is x * keep * keep_scale (PEFT's nn.Dropout in training), rounded to
 * bf16, keep drawn on the device from the entry's stream (see above).
 * scale: the LoRA scale (alpha / r or alpha / sqrt(r)), the same for every
 * entry. At most one entry per (layer, proj). Synchronizes before it returns.
 * Errors: QT_ERR_INVALID (ids/targets/positions out of range, a batch or rank
 * larger than the context, a bad lora entry), QT_ERR_UNSUPPORTED (head_dim >
 * 256; a family other than llama/mistral/qwen2, at init), QT_ERR_NOMEM, QT_ERR_CUDA
 * (after which the context should be freed). */
qt_status qt_model_cuda_forward_backward(qt_model_cuda *ctx, const qt_model_cuda_lora *lora,
                                         size_t n_lora, double scale, const qt_model_batch *b,
                                         double dloss, double *loss_sum, int64_t *count);
/* Forward only, for evaluation: *loss_sum and *count of batch b as
 * qt_model_cuda_forward_backward computes them, with every lora[i]'s branch
 * applied (A, B, r; dA, dB may be NULL and are not written) and no dropout
 * (the entries' dropout fields are ignored, as model.eval(): the CPU's
 * qt_model_forward_backward with training off in qt_lora_set_step and no
 * backward). n_lora = 0: the base model.
 * No backward; nothing but the loss and the count is copied back. Same
 * limits, errors and synchronization as qt_model_cuda_forward_backward. */
qt_status qt_model_cuda_loss(qt_model_cuda *ctx, const qt_model_cuda_lora *lora, size_t n_lora,
                             double scale, const qt_model_batch *b, double *loss_sum,
                             int64_t *count);
/* A KV-cache decoder on the device over context ctx (borrowed: it must
 * outlive the decoder, and it serves only this decoder meanwhile), behind
 * model.h's qt_model_decoder calls (qt_model_decoder_wrap): each feed runs
 * the rows (at most max_rows <= the context's max_B x max_T tokens) through
 * the layers with ctx's kernels, appends their keys (after RoPE) and values
 * to a per-layer bf16 cache of cap positions (allocated now, 2 x L x cap x
 * K x D x 2 bytes, freed with the decoder), attends over the cache
 * (causal, the layer's window; ops_cuda.h qt_op_attention_decode_cuda) and
 * returns the last row's logits (bf16, widened). The LoRA entries' host A
 * and B (rank <= ctx's max_r) are applied without dropout; scale as for
 * training. The same computation as model.h's CPU decoder in bf16 storage.
 * Errors: QT_ERR_INVALID (sizes, entries), QT_ERR_NOMEM, QT_ERR_CUDA. */
qt_status qt_model_cuda_decoder_init(qt_model_cuda *ctx, const qt_model_cuda_lora *lora, size_t n_lora,
                                     double scale, int64_t cap, int64_t max_rows, qt_model_decoder **out);
/* dst (n) = bf16(src) (round to nearest even) on the device: a device fp32
 * master copy's bf16 weights for dev_A / dev_B. Asynchronous (default stream). */
qt_status qt_model_cuda_round_bf16(uint16_t *dst, const float *src, int64_t n);
/* Frees every device and host buffer; *ctx = NULL. NULL-safe. */
void qt_model_cuda_free(qt_model_cuda **ctx);

/* One call with a context of its own: qt_model_cuda_init(m, b->B, b->T,
 * largest entry rank, no checkpointing), qt_model_cuda_forward_backward, qt_model_cuda_free
 * (uploads the weights every call: for tests, not for training loops). */
qt_status qt_model_forward_backward_cuda(const qt_model *m, const qt_model_cuda_lora *lora,
                                         size_t n_lora, double scale, const qt_model_batch *b,
                                         double dloss, double *loss_sum, int64_t *count);

#ifdef __cplusplus
}
#endif

#endif
