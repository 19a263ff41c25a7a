/* autograd/ops.h — the op set of the Llama + LoRA training graph, CPU backend.
 *
 * Plain functions, forward and backward, no tape: autograd/tape.h records them.
 * Every tensor op exists twice with the same code (autograd/kernels/<family>_cpu.inc,
 * compiled by ops_f32_cpu.c and ops_f64_cpu.c):
 *   qt_op_<name>_<forward|backward>_cpu      fp32 storage (the training path)
 *   qt_op_<name>_<forward|backward>_cpu_f64  fp64 storage (the finite-difference oracle)
 * The two differ only in `real` (float/double), the BLAS call (sgemm/dgemm) and
 * exp (expf/exp), so a double-precision gradient check of the _f64 twin checks
 * the algebra the fp32 path runs. The helpers qt_rope_inv_freq,
 * qt_op_dropout_mask_cpu and qt_op_doc_ids_from_starts exist once.
 *
 * Shape letters: N = tokens (B*T rows, packed), B = rows, T = row length,
 * C = hidden, In = in features, O = out features, R = LoRA rank, F = MLP width,
 * H = query heads, K = key/value heads, D = head dim, V = vocab.
 * All tensors are dense row-major; the rightmost dimension is contiguous.
 *
 * Gradients: every backward writes `d<in> (+)= ...` under one flag `acc`:
 * acc = 0 overwrites (the destination may hold garbage), acc = 1 adds into it.
 * This is the set-or-accumulate rule the tape applies (tape.c, grad_target).
 * Frozen weights (norm weights, base linear W, embeddings, lm_head) get no
 * gradient here at all; only LoRA A/B and activations do.
 *
 * Numerics (../shared/docs/STYLE.md habit 5): reductions accumulate in double
 * (norm statistics, softmax denominators, loss sums);
 * GEMMs are OpenBLAS. Loops are OpenMP-parallel over rows/heads only; no
 * reduction order depends on the OpenMP thread count (tested). OpenBLAS may
 * change its own summation order with its thread count for some shapes, so
 * bit-identical results need the same OpenBLAS thread count.
 * Work buffers are passed in by the caller (the tape carves them from its
 * arena); the ops never allocate. */
#ifndef QT_AUTOGRAD_OPS_H
#define QT_AUTOGRAD_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rope_type.h"
#include "common/status.h"

/* Label value that cross-entropy ignores (torch.nn.functional.cross_entropy
 * ignore_index default, used by transformers ForCausalLMLoss). */
#define QT_IGNORE_INDEX (-100)

/* ---- embedding (forward only: the table is frozen) ------------------------ */
/* out (N, C) = wte[ids[n]] ; ids (N) in [0, V) (asserted) ; wte (V, C) */
void qt_op_embedding_forward_cpu(float *out, const int32_t *ids, const float *wte,
                                 int64_t N, int64_t C, int64_t V);

/* ---- RMSNorm (transformers LlamaRMSNorm) ----------------------------------- */
/* out (N, C) = w * x * rstd ; rstd (N) = 1/sqrt(mean(x^2) + eps), saved for backward ;
 * x (N, C) ; w (C) frozen */
void qt_op_rmsnorm_forward_cpu(float *out, float *rstd, const float *x, const float *w,
                               double eps, int64_t N, int64_t C);
/* dx (N, C) (+)= d out/d x . dout ; w frozen, so no dw */
void qt_op_rmsnorm_backward_cpu(float *dx, int acc, const float *dout, const float *x,
                                const float *w, const float *rstd, int64_t N, int64_t C);

/* ---- residual add ---------------------------------------------------------- */
/* out (n) = a + b (out may alias a or b) */
void qt_op_add_forward_cpu(float *out, const float *a, const float *b, int64_t n);
/* dx (n) (+)= dout  (the backward of add, for each input that needs it) */
void qt_op_add_backward_cpu(float *dx, int acc, const float *dout, int64_t n);

/* ---- dense linear over a frozen weight ------------------------------------ */
/* y (N, O) = x (N, In) . W^T (W (O, In), frozen) + bias (O, or NULL) */
void qt_op_linear_forward_cpu(float *y, const float *x, const float *W, const float *bias,
                              int64_t N, int64_t In, int64_t O);
/* dx (N, In) (+)= dy (N, O) . W (O, In) */
void qt_op_linear_backward_cpu(float *dx, int acc, const float *dy, const float *W,
                               int64_t N, int64_t In, int64_t O);

/* ---- LoRA branch (PEFT tuners/lora/layer.py Linear.forward) --------------- */
/* y (N, O) += scale * (xd A^T) B^T, with xd = dropout(x):
 *   mask == NULL: xd = x (no dropout; xd_out is not written and may be NULL)
 *   else          xd (N, In) = x * mask * keep_scale, written to xd_out, where
 *                 mask (N, In) holds 0/1 and keep_scale = 1/(1-p) (inverted dropout).
 * u (N, R) = xd A^T is written (saved for backward).
 * x (N, In) ; A (R, In) ; B (O, R) */
void qt_op_lora_forward_cpu(float *y, float *u, float *xd_out, const float *x,
                            const uint8_t *mask, double keep_scale, const float *A,
                            const float *B, double scale, int64_t N, int64_t In, int64_t O,
                            int64_t R);
/* Given dy (N, O), xd (N, In) (x itself when no dropout), u (N, R):
 *   dB (O, R) += scale * dy^T u         (when dB != NULL; always accumulates)
 *   du (N, R)  = scale * dy B           (work buffer, always written)
 *   dA (R, In) += du^T xd                (when dA != NULL; always accumulates)
 *   dx (N, In) (+)= (du A) * mask * keep_scale   (when dx != NULL)
 * work (N, In) is needed only when mask != NULL and dx != NULL. */
void qt_op_lora_backward_cpu(float *dx, int acc, float *dA, float *dB, float *du, float *work,
                             const float *dy, const float *xd, const float *u,
                             const uint8_t *mask, double keep_scale, const float *A,
                             const float *B, double scale, int64_t N, int64_t In, int64_t O,
                             int64_t R);
/* The dropout path as the tape runs it (mask != NULL): the same results as
 * qt_op_lora_forward_cpu / qt_op_lora_backward_cpu with that mask, up to the
 * fp32 summation order of dA, without the (N, In) dropped-out input: rows go
 * through a scratch `work` of qt_op_lora_masked_work_elems(N, In) elements in
 * blocks that stay in cache, and the backward takes x itself (not xd) and masks
 * it again block by block. Those two functions stay as the plain reference.
 * Forward:  u (N, R) = (x * mask * keep_scale) A^T, y (N, O) += scale u B^T.
 * Backward: dB, du, dA, dx as qt_op_lora_backward_cpu (work is needed when dA
 *           or dx is not NULL). */
int64_t qt_op_lora_masked_work_elems(int64_t N, int64_t In);
void qt_op_lora_forward_masked_cpu(float *y, float *u, float *work, const float *x,
                                   const uint8_t *mask, double keep_scale, const float *A,
                                   const float *B, double scale, int64_t N, int64_t In, int64_t O,
                                   int64_t R);
void qt_op_lora_backward_masked_cpu(float *dx, int acc, float *dA, float *dB, float *du,
                                    float *work, const float *dy, const float *x, const float *u,
                                    const uint8_t *mask, double keep_scale, const float *A,
                                    const float *B, double scale, int64_t N, int64_t In,
                                    int64_t O, int64_t R);

/* Dropout keep mask for the LoRA input: mask (n) = 1 where the i-th uniform of
 * the Philox stream (seed, subsequence) — curand_init(seed, subsequence, 0),
 * curand_uniform — exceeds p, else 0; keep_scale is then 1/(1-p). The caller
 * picks a subsequence per (step, micro-batch, layer, projection) so masks never
 * repeat and a recomputation draws the same one. Deterministic in the thread count. */
void qt_op_dropout_mask_cpu(uint8_t *mask, int64_t n, double p, uint64_t seed,
                            uint64_t subsequence);

/* The fp32 kernels' exp (rexpf in autograd/kernels/common_cpu.inc: attention
 * softmax, cross-entropy), exposed for its accuracy test: within 1 ulp of the
 * correctly rounded exp on [ln FLT_MIN, ln FLT_MAX]; 0 below, +inf above. */
float qt_op_exp_cpu(float x);
/* Its form for x <= 0 (softmax rows, cross-entropy): the same bits there. */
float qt_op_exp_le0_cpu(float x);

/* ---- RoPE, HF rotate_half (half-split) layout ------------------------------ */
/* out (N, H, D) = x*cos + rotate_half(x)*sin, rotate_half(x) = cat(-x[D/2:], x[:D/2]);
 * angle for pair j at token n = pos[n] * inv_freq[j], and cos/sin, are computed
 * in fp32 in both twins, as transformers LlamaRotaryEmbedding.forward does
 * (inv_freq.float() @ position_ids.float(), autocast off, then .to(x.dtype)).
 * x (N, H, D), D even, pos (N), inv_freq (D/2) from qt_rope_inv_freq.
 * out may alias x. */
void qt_op_rope_forward_cpu(float *out, const float *x, const int32_t *pos,
                            const float *inv_freq, int64_t N, int64_t H, int64_t D);
/* dx (N, H, D) (+)= R^T dout (the rotation transposed). dx may alias dout only if acc == 0. */
void qt_op_rope_backward_cpu(float *dx, int acc, const float *dout, const int32_t *pos,
                             const float *inv_freq, int64_t N, int64_t H, int64_t D);

/* RoPE scaling of inv_freq, as transformers modeling_rope_utils computes it
 * (qt_rope_type: common/rope_type.h). */
typedef struct {
  qt_rope_type type;
  double theta;           /* rope_theta */
  double factor;          /* linear, llama3 */
  double low_freq_factor; /* llama3 */
  double high_freq_factor;/* llama3 */
  double original_max_position_embeddings; /* llama3 */
} qt_rope_config;
/* inv_freq (D/2), in fp32 arithmetic like transformers (torch float32 tensors). */
void qt_rope_inv_freq(float *inv_freq, const qt_rope_config *cfg, int64_t D);

/* ---- causal grouped-query attention over packed rows ---------------------- */
/* Options of the attention op; a NULL pointer, or all fields 0, is plain causal
 * GQA with scale head_dim^-1/2 (the Llama behaviour, bit for bit).
 *  - scale: gemma's query_pre_attn_scalar^-1/2, for instance.
 *  - window: sliding-window attention as transformers masking_utils
 *    sliding_window_overlay: key j is visible from query i iff j > i - window
 *    (on top of causal and the per-document mask). Positions are token indices
 *    within the packed row; documents are contiguous runs there, so this is the
 *    position difference within the document.
 *  - softcap: gemma2 attn_logit_softcapping (transformers
 *    models/gemma2/modeling_gemma2.py eager_attention_forward): the scaled
 *    scores become softcap * tanh(scores / softcap) before masking and softmax.
 * The per-element rule and the softcap formula are the inline helpers of
 * autograd/kernels/attention_mask.h, shared by the CPU and CUDA kernels. */
typedef struct {
  double scale;    /* score scale; 0 = head_dim^-1/2 */
  int64_t window;  /* sliding window: query i sees key j only if i - j < window; 0 = none */
  double softcap;  /* scores -> softcap * tanh(scores / softcap) before masking; 0 = none */
} qt_att_opts;

/* For row b, query head h (kv head h / (H/K), transformers repeat_kv), token i:
 *   s_j = scale * q_i . k_j (rounded to `real`), then when softcap > 0
 *   s_j = softcap * tanh(s_j / softcap) (tanh in double from the rounded score,
 *   the result rounded to `real`), for the visible keys j: j <= i,
 *   doc[b,j] == doc[b,i] and (window == 0 or i - j < window)
 *   P = softmax(s) (fp32 storage, double accumulation), out_i = sum_j P_j v_j
 * A token never attends across documents or rows.
 * q (B*T, H, D) ; k, v (B*T, K, D) ; doc (B*T) document ids, equal within a
 * document ; P (B, H, T, T) saved for backward: the probabilities, and 0 for the
 * masked keys that the block products read (rows whose documents are
 * contiguous runs: keys from the start of the query's 64-row tile's key range,
 * max(document start, tile start - window + 1), up to the end of the tile;
 * other rows: all); the rest is not written (the _ref version writes 0
 * everywhere) ; out (B*T, H, D). H % K == 0. opts: NULL = defaults (above).
 * With a window the products cover only the keys a tile can see, so a row
 * costs O(T (window + 64) D) instead of O(T^2 D). */
void qt_op_attention_forward_cpu(float *out, float *P, const float *q, const float *k,
                                 const float *v, const int32_t *doc, int64_t B, int64_t T,
                                 int64_t H, int64_t K, int64_t D, const qt_att_opts *opts);
/* dq (B*T, H, D), dk, dv (B*T, K, D) (+)= ... (each may be NULL when not needed) ;
 * work scratch of qt_op_attention_work_elems(T, opts) elements: (T, T), or
 * (2, T, T) with softcap (backward recomputes the raw scores of a tile for the
 * tanh derivative: d raw = d capped * (1 - tanh^2)). opts as given to forward. */
void qt_op_attention_backward_cpu(float *dq, float *dk, float *dv, int acc, float *work,
                                  const float *dout, const float *P, const float *q,
                                  const float *k, const float *v, const int32_t *doc,
                                  int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                                  const qt_att_opts *opts);
/* Elements of the GEMM backward's work buffer (either twin). */
int64_t qt_op_attention_work_elems(int64_t T, const qt_att_opts *opts);
/* The same in plain loops (double dot products, one OpenMP task per row and
 * head): the reference the GEMM version above is tested against. D <= 1024.
 * Backward work is (B*K, T). */
void qt_op_attention_forward_ref_cpu(float *out, float *P, const float *q, const float *k,
                                     const float *v, const int32_t *doc, int64_t B, int64_t T,
                                     int64_t H, int64_t K, int64_t D, const qt_att_opts *opts);
void qt_op_attention_backward_ref_cpu(float *dq, float *dk, float *dv, int acc, float *work,
                                      const float *dout, const float *P, const float *q,
                                      const float *k, const float *v, const int32_t *doc,
                                      int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                                      const qt_att_opts *opts);

/* Document ids and positions from segment starts (flash-attention cu_seqlens):
 * starts (n_docs + 1) with starts[0] = 0, strictly increasing, starts[n_docs] = N;
 * doc (N) = the document index of each token, pos (N) = its offset in the document
 * (positions restart per document). QT_ERR_INVALID names a malformed starts array.
 * Rows of B x T tokens: give each row its own documents (a document crossing a
 * row boundary is cut there by the attention op, which never looks across rows). */
qt_status qt_op_doc_ids_from_starts(int32_t *doc, int32_t *pos, const int64_t *starts,
                                    int64_t n_docs, int64_t N);

/* ---- SwiGLU ----------------------------------------------------------------- */
/* out (N, F) = silu(gate) * up, silu(g) = g / (1 + exp(-g)) */
void qt_op_swiglu_forward_cpu(float *out, const float *gate, const float *up, int64_t n);
/* dgate, dup (N, F) (+)= ... (each may be NULL) */
void qt_op_swiglu_backward_cpu(float *dgate, float *dup, int acc, const float *dout,
                               const float *gate, const float *up, int64_t n);

/* ---- GeGLU (gemma: gelu_pytorch_tanh) ------------------------------------- */
/* out (N, F) = gelu_tanh(gate) * up, gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
 * = torch.nn.functional.gelu(g, approximate="tanh"). gelu and its derivative
 * are evaluated in double in both twins (kernels/geglu_cpu.inc), then rounded. */
void qt_op_geglu_forward_cpu(float *out, const float *gate, const float *up, int64_t n);
/* dgate, dup (N, F) (+)= ... (each may be NULL) */
void qt_op_geglu_backward_cpu(float *dgate, float *dup, int acc, const float *dout,
                              const float *gate, const float *up, int64_t n);

/* ---- column slice (phi3's fused qkv_proj / gate_up_proj split) ------------ */
/* out (N, W) = x (N, C)[:, c0:c0+W] ; 0 <= c0, c0 + W <= C (asserted) */
void qt_op_slice_cols_forward_cpu(float *out, const float *x, int64_t N, int64_t C, int64_t c0,
                                  int64_t W);
/* acc = 1: dx (N, C)[:, c0:c0+W] += dout (N, W), the rest of dx untouched;
 * acc = 0: dx = dout inside the slice and 0 outside (the whole of dx is written,
 * so later contributions of other consumers of x may add to it). */
void qt_op_slice_cols_backward_cpu(float *dx, int acc, const float *dout, int64_t N, int64_t C,
                                   int64_t c0, int64_t W);

/* ---- final-logit soft-capping (gemma2 final_logit_softcapping) ----------- */
/* z (n) -> cap * tanh(z / cap) in place, as transformers Gemma2ForCausalLM.forward
 * (logits / cap, tanh, * cap in the logits' dtype; tanh in double here, rounded).
 * cap > 0 (asserted). The same per-element bits as the cross-entropy's cap, so
 * eval logits and training losses agree. */
void qt_op_softcap_cpu(float *z, int64_t n, double cap);

/* ---- fused lm_head + cross-entropy, chunked over rows ---------------------- */
/* For rows n with targets[n] != QT_IGNORE_INDEX: loss_n = logsumexp(z_n) - z_n[targets[n]],
 * z_n = x_n W^T (V). targets are already shifted (targets[n] is the token that
 * row n predicts; transformers ForCausalLMLoss pads labels with -100 and takes
 * labels[..., 1:]). Logits are formed chunk_rows rows at a time in
 * logits (chunk_rows, V) scratch, so (N, V) is never stored.
 * lse (N) saved for backward (0 for ignored rows). *count = number of targets.
 * Returns the summed loss (double accumulation, in row order).
 * x (N, C) ; W (V, C) frozen ; targets (N) in [0, V) or QT_IGNORE_INDEX (asserted).
 * softcap > 0: the logits are soft-capped first, z -> softcap * tanh(z / softcap)
 * (qt_op_softcap_cpu's bits; gemma2 final_logit_softcapping), and the gradients
 * below go through the tanh; softcap = 0: no cap (the uncapped code, bit for bit). */
double qt_op_cross_entropy_forward_cpu(float *lse, int64_t *count, float *logits,
                                       int64_t chunk_rows, const float *x, const float *W,
                                       const int32_t *targets, int64_t N, int64_t C,
                                       int64_t V, double softcap);
/* dx (N, C) (+)= dloss * d(sum loss)/dx: per chunk the logits are recomputed,
 * turned into (softmax - onehot) * dloss (0 for ignored rows) and multiplied by W. */
void qt_op_cross_entropy_backward_cpu(float *dx, int acc, float *logits, int64_t chunk_rows,
                                      double dloss, const float *lse, const float *x,
                                      const float *W, const int32_t *targets, int64_t N,
                                      int64_t C, int64_t V, double softcap);

/* The forward and the gradient in one pass: returns the summed loss and writes
 * dx1 (N, C) = d(sum loss)/dx (for dloss = 1), so backward needs no logits
 * recompute: dx (+)= dloss * dx1 (qt_op_scaled_add_cpu). rowloss (chunk_rows)
 * double scratch; the rest as above. Costs one GEMM less per step than forward
 * + backward, and one (N, C) buffer; wasted when no backward follows (eval). */
double qt_op_cross_entropy_fused_cpu(float *dx1, int64_t *count, float *logits, double *rowloss,
                                     int64_t chunk_rows, const float *x, const float *W,
                                     const int32_t *targets, int64_t N, int64_t C, int64_t V,
                                     double softcap);
/* dx (n) (+)= alpha * src */
void qt_op_scaled_add_cpu(float *dx, int acc, const float *src, double alpha, int64_t n);

/* ---- bf16 GEMMs on the CPU (model.compute_dtype bf16; gemm_bf16_cpu.c) -----
 * Where the CPU has bf16 units (AVX512-BF16 or AMX) and the build has oneDNN,
 * the tape runs the base linears and the lm_head GEMMs with both operands
 * rounded to bf16 (round to nearest even), fp32 products and accumulation, fp32
 * results; everything else (norms, attention, softmax, LoRA, the loss) stays
 * fp32. Like torch.autocast's bf16 on a CPU, minus its bf16 activations. */
/* true when the bf16 GEMM can run here; else *why (if why) says what is missing.
 * DNNL_MAX_CPU_ISA (oneDNN's cap, e.g. AVX512_CORE) turns the units off. */
bool qt_op_bf16_gemm_available(const char **why);
/* "AMX", "AVX512-BF16" or "none": the bf16 units oneDNN will use */
const char *qt_op_bf16_gemm_isa(void);
/* Bytes of oneDNN scratchpad the call below needs for this shape (0 for an
 * empty shape); the caller passes at least that many. */
size_t qt_op_gemm_bf16_pad_bytes(int transA, int transB, int64_t M, int64_t N, int64_t K,
                                 int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta);
/* Row-major C (M, N) = alpha op(A) op(B) + beta C, A and B bf16 (as uint16_t
 * bit patterns), C fp32; the shapes and strides of the fp32 gemm. */
void qt_op_gemm_bf16_cpu(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                         const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                         float beta, float *C, int64_t ldc, void *pad, size_t pad_bytes);
/* dst (n) = bf16(src), round to nearest even (common/half.h's bits) */
void qt_op_to_bf16_cpu(uint16_t *dst, const float *src, int64_t n);
/* dst (C, R) (+)= src (R, C)^T: dst[c][r] = src[r][c], added when acc */
void qt_op_transpose_add_cpu(float *dst, int acc, const float *src, int64_t R, int64_t C);

/* Work of the bf16 cross-entropy below: Wh the lm_head (V, C) already in bf16;
 * conv (chunk_rows * max(C, V)) bf16 scratch for the other operand; ct
 * (C * chunk_rows) fp32 scratch (the input gradient is formed transposed, as
 * in tape.c's linears); pad at least qt_op_cross_entropy_bf16_pad_bytes. */
typedef struct {
  const uint16_t *Wh;
  uint16_t *conv;
  float *ct;
  void *pad;
  size_t pad_bytes;
} qt_op_bf16_work;
size_t qt_op_cross_entropy_bf16_pad_bytes(int64_t chunk_rows, int64_t N, int64_t C, int64_t V);
/* qt_op_cross_entropy_{forward,backward,fused}_cpu with the two GEMMs in bf16 */
double qt_op_cross_entropy_forward_bf16_cpu(float *lse, int64_t *count, float *logits,
                                            int64_t chunk_rows, const float *x,
                                            const qt_op_bf16_work *bw, const int32_t *targets,
                                            int64_t N, int64_t C, int64_t V, double softcap);
void qt_op_cross_entropy_backward_bf16_cpu(float *dx, int acc, float *logits, int64_t chunk_rows,
                                           double dloss, const float *lse, const float *x,
                                           const qt_op_bf16_work *bw, const int32_t *targets,
                                           int64_t N, int64_t C, int64_t V, double softcap);
double qt_op_cross_entropy_fused_bf16_cpu(float *dx1, int64_t *count, float *logits,
                                          double *rowloss, int64_t chunk_rows, const float *x,
                                          const qt_op_bf16_work *bw, const int32_t *targets,
                                          int64_t N, int64_t C, int64_t V, double softcap);

/* ---- the same ops in double (the finite-difference oracle) ---------------- */
void qt_op_embedding_forward_cpu_f64(double *out, const int32_t *ids, const double *wte,
                                     int64_t N, int64_t C, int64_t V);
void qt_op_rmsnorm_forward_cpu_f64(double *out, double *rstd, const double *x, const double *w,
                                   double eps, int64_t N, int64_t C);
void qt_op_rmsnorm_backward_cpu_f64(double *dx, int acc, const double *dout, const double *x,
                                    const double *w, const double *rstd, int64_t N, int64_t C);
void qt_op_add_forward_cpu_f64(double *out, const double *a, const double *b, int64_t n);
void qt_op_add_backward_cpu_f64(double *dx, int acc, const double *dout, int64_t n);
void qt_op_linear_forward_cpu_f64(double *y, const double *x, const double *W,
                                  const double *bias, int64_t N, int64_t In, int64_t O);
void qt_op_linear_backward_cpu_f64(double *dx, int acc, const double *dy, const double *W,
                                   int64_t N, int64_t In, int64_t O);
void qt_op_lora_forward_cpu_f64(double *y, double *u, double *xd_out, const double *x,
                                const uint8_t *mask, double keep_scale, const double *A,
                                const double *B, double scale, int64_t N, int64_t In,
                                int64_t O, int64_t R);
void qt_op_lora_backward_cpu_f64(double *dx, int acc, double *dA, double *dB, double *du,
                                 double *work, const double *dy, const double *xd,
                                 const double *u, const uint8_t *mask, double keep_scale,
                                 const double *A, const double *B, double scale, int64_t N,
                                 int64_t In, int64_t O, int64_t R);
void qt_op_lora_forward_masked_cpu_f64(double *y, double *u, double *work, const double *x,
                                       const uint8_t *mask, double keep_scale, const double *A,
                                       const double *B, double scale, int64_t N, int64_t In,
                                       int64_t O, int64_t R);
void qt_op_lora_backward_masked_cpu_f64(double *dx, int acc, double *dA, double *dB, double *du,
                                        double *work, const double *dy, const double *x,
                                        const double *u, const uint8_t *mask, double keep_scale,
                                        const double *A, const double *B, double scale,
                                        int64_t N, int64_t In, int64_t O, int64_t R);
void qt_op_rope_forward_cpu_f64(double *out, const double *x, const int32_t *pos,
                                const float *inv_freq, int64_t N, int64_t H, int64_t D);
void qt_op_rope_backward_cpu_f64(double *dx, int acc, const double *dout, const int32_t *pos,
                                 const float *inv_freq, int64_t N, int64_t H, int64_t D);
void qt_op_attention_forward_cpu_f64(double *out, double *P, const double *q, const double *k,
                                     const double *v, const int32_t *doc, int64_t B,
                                     int64_t T, int64_t H, int64_t K, int64_t D,
                                     const qt_att_opts *opts);
void qt_op_attention_backward_cpu_f64(double *dq, double *dk, double *dv, int acc,
                                      double *work, const double *dout, const double *P,
                                      const double *q, const double *k, const double *v,
                                      const int32_t *doc, int64_t B, int64_t T, int64_t H,
                                      int64_t K, int64_t D, const qt_att_opts *opts);
void qt_op_attention_forward_ref_cpu_f64(double *out, double *P, const double *q,
                                         const double *k, const double *v, const int32_t *doc,
                                         int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                                         const qt_att_opts *opts);
void qt_op_attention_backward_ref_cpu_f64(double *dq, double *dk, double *dv, int acc,
                                          double *work, const double *dout, const double *P,
                                          const double *q, const double *k, const double *v,
                                          const int32_t *doc, int64_t B, int64_t T, int64_t H,
                                          int64_t K, int64_t D, const qt_att_opts *opts);
void qt_op_swiglu_forward_cpu_f64(double *out, const double *gate, const double *up, int64_t n);
void qt_op_swiglu_backward_cpu_f64(double *dgate, double *dup, int acc, const double *dout,
                                   const double *gate, const double *up, int64_t n);
void qt_op_geglu_forward_cpu_f64(double *out, const double *gate, const double *up, int64_t n);
void qt_op_geglu_backward_cpu_f64(double *dgate, double *dup, int acc, const double *dout,
                                  const double *gate, const double *up, int64_t n);
void qt_op_slice_cols_forward_cpu_f64(double *out, const double *x, int64_t N, int64_t C,
                                      int64_t c0, int64_t W);
void qt_op_slice_cols_backward_cpu_f64(double *dx, int acc, const double *dout, int64_t N,
                                       int64_t C, int64_t c0, int64_t W);
void qt_op_softcap_cpu_f64(double *z, int64_t n, double cap);
double qt_op_cross_entropy_forward_cpu_f64(double *lse, int64_t *count, double *logits,
                                           int64_t chunk_rows, const double *x,
                                           const double *W, const int32_t *targets,
                                           int64_t N, int64_t C, int64_t V, double softcap);
double qt_op_cross_entropy_fused_cpu_f64(double *dx1, int64_t *count, double *logits,
                                         double *rowloss, int64_t chunk_rows, const double *x,
                                         const double *W, const int32_t *targets, int64_t N,
                                         int64_t C, int64_t V, double softcap);
void qt_op_scaled_add_cpu_f64(double *dx, int acc, const double *src, double alpha, int64_t n);
void qt_op_cross_entropy_backward_cpu_f64(double *dx, int acc, double *logits,
                                          int64_t chunk_rows, double dloss, const double *lse,
                                          const double *x, const double *W,
                                          const int32_t *targets, int64_t N, int64_t C,
                                          int64_t V, double softcap);

#endif
