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
 * Only built with the CUDA backend (QLORA_HAVE_CUDA). */
#ifndef QT_AUTOGRAD_OPS_CUDA_H
#define QT_AUTOGRAD_OPS_CUDA_H

#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif
#include "quant/quant.h" /* no C++ guards of its own (quant_cuda.cu wraps it too) */
#include "autograd/ops.h"  /* qt_att_opts; no C++ guards of its own either */

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

/* out (N, F) = gelu_tanh(gate) * up (gelu rounded to bf16 before the product) ;
 * dgate, dup (+)= ... (each may be NULL). fp32 arithmetic. */
qt_status qt_op_geglu_forward_cuda(uint16_t *out, const uint16_t *gate, const uint16_t *up,
                                   int64_t n, void *stream);
qt_status qt_op_geglu_backward_cuda(uint16_t *dgate, uint16_t *dup, int acc,
                                    const uint16_t *dout, const uint16_t *gate,
                                    const uint16_t *up, int64_t n, void *stream);

/* out (N, W) = x (N, C)[:, c0:c0+W] ; backward as qt_op_slice_cols_backward_cpu
 * (acc = 0 writes all of dx, 0 outside the slice) */
qt_status qt_op_slice_cols_forward_cuda(uint16_t *out, const uint16_t *x, int64_t N, int64_t C,
                                        int64_t c0, int64_t W, void *stream);
qt_status qt_op_slice_cols_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout, int64_t N,
                                         int64_t C, int64_t c0, int64_t W, void *stream);

/* out (N, H, D) = RoPE(x) ; pos (N) device int32 ; inv_freq (D/2) device fp32 */
qt_status qt_op_rope_forward_cuda(uint16_t *out, const uint16_t *x, const int32_t *pos,
                                  const float *inv_freq, int64_t N, int64_t H, int64_t D,
                                  void *stream);
qt_status qt_op_rope_backward_cuda(uint16_t *dx, int acc, const uint16_t *dout,
                                   const int32_t *pos, const float *inv_freq, int64_t N,
                                   int64_t H, int64_t D, void *stream);

/* ==== GEMM ops, attention, LoRA, cross-entropy ==============================
 * (linear_cuda.cu, lora_cuda.cu, attention_cuda.cu, cross_entropy_cuda.cu)
 * GEMMs are cuBLASLt with bf16 A/B, fp32 compute (CUBLAS_COMPUTE_32F) and one
 * rounding of the result to bf16 (beta = 1 accumulates in fp32 before it). The
 * GEMM ops take a qt_gemm_cuda context before the stream. Nothing here
 * allocates device memory except qt_gemm_cuda_create; scratch is passed in.
 * No atomics: every reduction has a fixed order, so results are bit-identical
 * run to run on the same GPU model and library version (cuBLASLt's own
 * determinism: same algorithm for the same plan; the context caches it). A
 * plan depends on the shape and on the operands' pointer alignment (up to 256
 * bytes), so the same product on differently aligned buffers may pick another
 * algorithm and differ in the last bits. Split-K partial sums are fp32. */

/* cuBLASLt handle + workspace_bytes of device workspace (owned; 32 MiB is
 * plenty for these shapes, 0 restricts cuBLASLt to algorithms without one) +
 * a cache of matmul descriptors and chosen algorithms per GEMM shape and
 * pointer alignment. Create once, before the step loop; one context per
 * stream at a time (the workspace is shared by its GEMMs). */
typedef struct qt_gemm_cuda qt_gemm_cuda;
qt_status qt_gemm_cuda_create(qt_gemm_cuda **out, size_t workspace_bytes);
/* Frees every cached descriptor, the workspace and the handle (NULL allowed);
 * returns the first failure but frees everything it can. Call after the
 * stream's work is done. */
qt_status qt_gemm_cuda_free(qt_gemm_cuda *g);

/* y (N, O) = x (N, In) . W^T (+ bias (O) when not NULL) ; W (O, In) frozen.
 * y must not alias x or W. */
qt_status qt_op_linear_forward_cuda(uint16_t *y, const uint16_t *x, const uint16_t *W,
                                    const uint16_t *bias, int64_t N, int64_t In, int64_t O,
                                    qt_gemm_cuda *g, void *stream);
/* dx (N, In) (+)= dy (N, O) . W */
qt_status qt_op_linear_backward_cuda(uint16_t *dx, int acc, const uint16_t *dy,
                                     const uint16_t *W, int64_t N, int64_t In, int64_t O,
                                     qt_gemm_cuda *g, void *stream);
/* The same over a 4-bit weight: packed ((O*In+1)/2) and absmax (ceil(O*In /
 * blocksize)) fp32 as quant/quant.h qt_quant_4bit_dequantize_bf16_cuda takes
 * them (a double-quantized weight: decompress its absmax first with
 * qt_quant_dq_decompress_cuda); the weight is dequantized into
 * w_scratch (O, In) bf16, then the dense op runs. */
qt_status qt_op_linear4_forward_cuda(uint16_t *y, uint16_t *w_scratch, const uint16_t *x,
                                     qt_quant_type type, const uint8_t *packed,
                                     const float *absmax, int blocksize, const uint16_t *bias,
                                     int64_t N, int64_t In, int64_t O, qt_gemm_cuda *g,
                                     void *stream);
qt_status qt_op_linear4_backward_cuda(uint16_t *dx, int acc, uint16_t *w_scratch,
                                      const uint16_t *dy, qt_quant_type type,
                                      const uint8_t *packed, const float *absmax, int blocksize,
                                      int64_t N, int64_t In, int64_t O, qt_gemm_cuda *g,
                                      void *stream);

/* LoRA dropout drawn inside the kernels that apply it (no mask in memory):
 * element e of the LoRA input (N, In), e = n * In + i (the CPU mask layout),
 * is kept iff word e of the Philox stream curand_init(key, subsequence, 0) is
 * > threshold (common/philox_hd.h qt_dropout_keep_hd), so the mask is byte for
 * byte qt_philox_keep_mask(keep, N * In, p, key, subsequence) with threshold =
 * qt_philox_keep_threshold(p); lora/lora.h qt_lora_dropout_stream gives the
 * fields of a module's mask. Kept values are multiplied by keep_scale
 * (inverted dropout: 1 / (1 - p)). A host struct, passed by pointer; NULL
 * means no dropout. */
typedef struct {
  uint64_t key;          /* Philox key (curand_init's seed) */
  uint64_t subsequence;  /* Philox subsequence */
  int64_t threshold;     /* in [-1, UINT32_MAX]: keep iff word > threshold (-1: keep all) */
  double keep_scale;     /* > 0; applied in fp32 */
} qt_dropout_cuda;

/* xd (N, In) = bf16(x * keep_scale) where drop keeps the element, else 0:
 * the dropped-out input qt_op_lora_forward_cuda forms, formed again (the
 * model's backward recomputes it into a shared scratch instead of saving one
 * per linear). drop non-NULL. */
qt_status qt_op_lora_dropout_cuda(uint16_t *xd, const uint16_t *x, const qt_dropout_cuda *drop, int64_t N,
                                  int64_t In, void *stream);

/* LoRA branch, as qt_op_lora_forward_cpu: y (N, O) += scale * (xd A^T) B^T.
 * drop: dropout (above) or NULL (none; xd_out unused, xd = x); with drop,
 * xd_out (N, In) = bf16(x * keep_scale) where kept, else 0, the keep bits
 * drawn in the kernel (one Philox block per 4 elements); u (N, R) bf16
 * (rounded before the second GEMM, as PEFT's lora_A output is in bf16). */
qt_status qt_op_lora_forward_cuda(uint16_t *y, uint16_t *u, uint16_t *xd_out, const uint16_t *x,
                                  const qt_dropout_cuda *drop, const uint16_t *A,
                                  const uint16_t *B, double scale, int64_t N, int64_t In,
                                  int64_t O, int64_t R, qt_gemm_cuda *g, void *stream);
/* As qt_op_lora_backward_cpu: dB (O, R) += scale dy^T u, du (N, R) = scale dy B,
 * dA (R, In) += du^T xd, dx (N, In) (+)= (du A) * keep * keep_scale, keep
 * recomputed in the kernel from drop (the forward's descriptor; NULL: no
 * dropout, dx (+)= du A); dA, dB bf16 (always accumulate), each may be NULL;
 * work (N, In) scratch when drop and dx; it may be xd itself (work is
 * written only after the dA product has read xd, on the same stream). */
qt_status qt_op_lora_backward_cuda(uint16_t *dx, int acc, uint16_t *dA, uint16_t *dB,
                                   uint16_t *du, uint16_t *work, const uint16_t *dy,
                                   const uint16_t *xd, const uint16_t *u,
                                   const qt_dropout_cuda *drop, const uint16_t *A,
                                   const uint16_t *B, double scale, int64_t N, int64_t In,
                                   int64_t O, int64_t R, qt_gemm_cuda *g, void *stream);

/* Causal GQA attention over packed rows with per-document masking, as
 * qt_op_attention_forward_cpu (same q, k, v, doc, out layouts, the same
 * options: scale, sliding window, logit soft-capping; opts is a host pointer,
 * NULL = defaults), except that the probabilities are not stored: lse (B, H, T)
 * fp32 = logsumexp of each query's (capped) scaled scores is saved instead and
 * backward recomputes P from it. Tensor cores: the tiled kernels of
 * kernels/attention_flash.h (bf16 operands, fp32 accumulation, P rounded to
 * bf16 before P V; fully masked tiles of packed rows skipped). The mask rule
 * and the softcap formula are the helpers of autograd/kernels/attention_mask.h
 * (softcap: tanh in double from the fp32 score). D <= 256 (QT_ERR_UNSUPPORTED
 * beyond, or when the device's shared memory cannot hold a 16-position tile);
 * B, H <= 65535. */
qt_status qt_op_attention_forward_cuda(uint16_t *out, float *lse, const uint16_t *q,
                                       const uint16_t *k, const uint16_t *v, const int32_t *doc,
                                       int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                                       void *stream, const qt_att_opts *opts);
/* Decoding with a KV cache: out (n, H, D) = attention of query rows q (n, H,
 * D) at absolute positions pos0 .. pos0 + n - 1 over the cached keys and
 * values kc, vc (positions 0 .. pos0 + n - 1, (cap, K, D) each, keys after
 * RoPE) of one sequence: causal, the window of opts, no documents. */
qt_status qt_op_attention_decode_cuda(uint16_t *out, const uint16_t *q, const uint16_t *kc,
                                      const uint16_t *vc, int64_t n, int64_t pos0, int64_t H,
                                      int64_t K, int64_t D, void *stream, const qt_att_opts *opts);
/* dq (B*T, H, D), dk, dv (B*T, K, D) (+)= ... (each may be NULL) ;
 * delta (B, H, T) fp32 scratch = rowsum(dO_i * O_i) from out, the forward's
 * output (B*T, H, D) (FlashAttention-2's form; equal to the reference's
 * sum_j P_ij dP_ij up to O's bf16 rounding): out is required when dq or dk is
 * wanted (dv alone reads neither). dq from one kernel per query tile, dk and dv
 * from one per key tile over the query heads of its kv head: one writer per
 * element, no atomics, bit-reproducible; dS rounded to bf16 for the tensor
 * cores. opts as given to forward. */
qt_status qt_op_attention_backward_cuda(uint16_t *dq, uint16_t *dk, uint16_t *dv, int acc,
                                        float *delta, const uint16_t *dout, const uint16_t *out,
                                        const float *lse,
                                        const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                        const int32_t *doc, int64_t B, int64_t T, int64_t H,
                                        int64_t K, int64_t D, void *stream,
                                        const qt_att_opts *opts);

/* Fused lm_head + cross-entropy, chunked over rows, as
 * qt_op_cross_entropy_forward_cpu: logits (chunk_rows, V) fp32 scratch (the
 * GEMM writes fp32) ; lse (N) fp32 saved (0 for ignored rows) ; rowloss (N)
 * double scratch. Results stay on the device (no synchronization):
 * *loss (device double) = summed loss (double, a fixed order independent of
 * chunking), *count (device int64) =
 * number of targets. targets (N) device, in [0, V) or QT_IGNORE_INDEX (out of
 * range traps: a programmer bug, like the embedding's ids).
 * softcap > 0: the fp32 logits are soft-capped in place first (z -> softcap *
 * tanh(z / softcap), tanh in double as the CPU's qt_op_softcap_cpu) and the
 * gradients go through the tanh; 0 = none (the uncapped kernels' numerics). */
qt_status qt_op_cross_entropy_forward_cuda(double *loss, int64_t *count, float *lse,
                                           double *rowloss, float *logits, int64_t chunk_rows,
                                           const uint16_t *x, const uint16_t *W,
                                           const int32_t *targets, int64_t N, int64_t C,
                                           int64_t V, double softcap, qt_gemm_cuda *g,
                                           void *stream);
/* dx (N, C) (+)= dloss * d(sum loss)/dx (dloss on the host): logits recomputed
 * per chunk, dz (chunk_rows, V) bf16 scratch = dloss (softmax - onehot). */
qt_status qt_op_cross_entropy_backward_cuda(uint16_t *dx, int acc, float *logits, uint16_t *dz,
                                            int64_t chunk_rows, double dloss, const float *lse,
                                            const uint16_t *x, const uint16_t *W,
                                            const int32_t *targets, int64_t N, int64_t C,
                                            int64_t V, double softcap, qt_gemm_cuda *g,
                                            void *stream);
/* Forward and gradient in one pass, as qt_op_cross_entropy_fused_cpu:
 * dx1 (N, C) = d(sum loss)/dx, *loss and *count on the device as above. */
qt_status qt_op_cross_entropy_fused_cuda(uint16_t *dx1, double *loss, int64_t *count,
                                         float *logits, uint16_t *dz, double *rowloss,
                                         int64_t chunk_rows, const uint16_t *x,
                                         const uint16_t *W, const int32_t *targets, int64_t N,
                                         int64_t C, int64_t V, double softcap, qt_gemm_cuda *g,
                                         void *stream);
/* dx (n) (+)= alpha * src */
qt_status qt_op_scaled_add_cuda(uint16_t *dx, int acc, const uint16_t *src, double alpha,
                                int64_t n, void *stream);

#ifdef __cplusplus
}
#endif

#endif
