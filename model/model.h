/* model/model.h — a decoder-only transformer built from a Hugging Face model
 * directory, run through the autograd tape on CPU. Families: llama, mistral,
 * qwen2, qwen3, gemma2, gemma3 (text), phi3.
 *
 * One layer, composed from the config's family fields (model/hf_config.h;
 * transformers' modeling_<family>.py for each):
 *   n1 = norm(h); q, k, v = q/k/v_proj(n1)  (phi3: one qkv_proj, split);
 *   [qwen3, gemma3: q, k = per-head q_norm/k_norm]; rope (gemma3: local base on
 *   sliding layers); a = attention(scale, sliding window of the layer, logit
 *   soft-cap); o = o_proj(a) [gemma: post_attention_layernorm(o)]; h += o;
 *   n2 = norm(h) (post_attention_layernorm, gemma: pre_feedforward_layernorm);
 *   m = down(act(gate(n2)) * up(n2))  (phi3: one gate_up_proj, split; act silu,
 *   gemma: gelu tanh) [gemma: post_feedforward_layernorm(m)]; h += m.
 *   h0 = embed[ids] (gemma: x sqrt(hidden)); logits = norm(h) lm_head^T (tied:
 *   the embedding), gemma2: soft-capped.
 * Gemma's RMSNorm multiplies by (1 + weight): the model keeps both the stored
 * weight (for export) and the multiplier (for compute), see qt_model_norm.
 * Attention is causal and block-diagonal per document (packed rows), RoPE
 * positions restart per document (given by the batch); a layer's sliding
 * window (mistral, qwen2/3 with use_sliding_window, gemma, phi3) limits each
 * query to the window's last keys of its own document.
 *
 * Weights: embeddings, norms, biases and lm_head are kept dense fp32 (frozen).
 * The base linears of each layer are quantized at load, one tensor at a time
 * (the whole model is never held in fp32): QT_MODEL_QUANT_NF4/FP4 with the
 * given blocksize and double quantization (quant/quant.h, bitsandbytes-exact),
 * or kept dense fp32 with QT_MODEL_QUANT_NONE. A bitsandbytes pre-quantized
 * checkpoint (config.json quantization_config) keeps its stored 4-bit tensors
 * as they are (bit-identical weights) unless QT_MODEL_QUANT_NONE asks for a
 * dense dequantized base. A quantized linear is dequantized into tape scratch
 * for each use (forward, and again for dx in backward: qt_tape_linear_src).
 *
 * LoRA (lora/lora.h) plugs in through qt_model_adapter: the model asks it for
 * the branch of every (layer, projection) while recording.
 *
 * Generation (qt_model_generate) does not use the tape's recording: a
 * qt_model_decoder (model/decode.c) runs the same per-row math with a KV
 * cache, one new position per token.
 *
 * Ownership: qt_model owns everything it points to; qt_model_free releases it.
 * A qt_model is read-only after load (several tapes may use it, one thread each). */
#ifndef QT_MODEL_MODEL_H
#define QT_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "autograd/tape.h"
#include "common/status.h"
#include "model/hf_config.h"
#include "model/sample.h"
#include "quant/quant.h"

typedef enum { QT_MODEL_QUANT_NONE = 0, QT_MODEL_QUANT_NF4, QT_MODEL_QUANT_FP4 } qt_model_quant;

typedef struct {
  qt_model_quant quant;  /* config model.quant */
  bool double_quant;     /* config model.double_quant */
  int blocksize;         /* config model.blocksize (32..4096, power of two) */
  int threads;           /* OpenMP threads for quantization; <= 0 default */
} qt_model_load_opts;

/* The projections, in PEFT target-module order: the seven of llama-style
 * layers, then phi3's fused two (a model has either q/k/v or qkv, either
 * gate/up or gate_up: qt_model_has_proj). */
typedef enum {
  QT_PROJ_Q = 0, QT_PROJ_K, QT_PROJ_V, QT_PROJ_O, QT_PROJ_GATE, QT_PROJ_UP, QT_PROJ_DOWN,
  QT_PROJ_QKV, QT_PROJ_GATE_UP,
  QT_PROJ_COUNT
} qt_proj;
/* "q_proj", ..., "down_proj", "qkv_proj", "gate_up_proj" */
const char *qt_proj_name(qt_proj p);
/* "self_attn" for q, k, v, o, qkv; "mlp" for gate, up, down, gate_up */
const char *qt_proj_block(qt_proj p);
/* The projection whose place a fused one takes (qkv: q, gate_up: gate; the
 * others: themselves): the LoRA Philox streams are keyed by it, so a
 * llama-style model's streams are what they always were. */
qt_proj qt_proj_slot(qt_proj p);

typedef struct {
  int64_t out, in;         /* W is (out, in) */
  bool quantized;
  float *dense;            /* (out, in) fp32 when !quantized */
  qt_quant_weight q;       /* when quantized */
  float *bias;             /* (out) or NULL */
  char name[96];           /* "model.layers.3.self_attn.q_proj" */
} qt_model_linear;

/* An RMSNorm weight: w is what the normalised input is multiplied by,
 * stored the tensor as the checkpoint holds it (gemma: w = 1 + stored in
 * fp32, as Gemma*RMSNorm computes it; other families: stored == w). */
typedef struct {
  char name[96];           /* "model.layers.3.input_layernorm.weight" */
  int64_t n;               /* C, or head_dim for q_norm / k_norm */
  float *w, *stored;
} qt_model_norm;

typedef struct {
  /* the multipliers (qt_model_norm.w) of this layer's norms; NULL = absent */
  float *input_norm;       /* (C) input_layernorm */
  float *post_norm;        /* (C) the MLP's input norm: post_attention_layernorm
                            * (gemma: pre_feedforward_layernorm) */
  float *attn_out_norm;    /* (C) gemma: post_attention_layernorm on the attention output */
  float *mlp_out_norm;     /* (C) gemma: post_feedforward_layernorm on the MLP output */
  float *q_norm, *k_norm;  /* (D) qwen3, gemma3 */
  qt_model_linear proj[QT_PROJ_COUNT]; /* absent projections have out == 0 */
} qt_model_layer;

typedef struct {
  qt_hf_config cfg;
  int64_t C, H, K, D, F, V, L;   /* hidden, heads, kv heads, head dim, mlp, vocab, layers */
  float *embed;                  /* (V, C) */
  float *lm_head;                /* (V, C); == embed when tied */
  float *final_norm;             /* (C) the multiplier of model.norm */
  qt_model_layer *layers;        /* (L) */
  qt_model_norm *norms;          /* (n_norms) every norm in checkpoint order, the layers'
                                  * pointers point into these */
  int64_t n_norms;
  float *inv_freq;               /* (D/2) RoPE inverse frequencies (rope scaling applied) */
  float *inv_freq_local;         /* (D/2) gemma3's sliding layers; == inv_freq otherwise */
  int threads;
  size_t bytes_dense, bytes_quant; /* weight memory, for the plan */
} qt_model;

/* Loads DIR (config.json + model.safetensors or a sharded index). F32, F16,
 * BF16 and bitsandbytes 4-bit checkpoints. */
qt_status qt_model_load(const char *dir, const qt_model_load_opts *opts, qt_model **out);
void qt_model_free(qt_model **m);

/* ---- running on a tape ------------------------------------------------------ */

/* A packed batch: B rows of T tokens, N = B*T. All arrays (N), borrowed.
 * targets[n] = the token row position n predicts (already shifted; -100 = no
 * target, e.g. the last token of each document and prompt tokens); pos[n] =
 * position within its document (restarts at 0); doc[n] = document id (equal
 * within a document, different between neighbouring documents of a row). */
typedef struct {
  const int32_t *ids, *targets, *pos, *doc;
  int64_t B, T;
} qt_model_batch;

/* targets (N) from unshifted labels (N) (transformers convention: labels[n] is
 * token n itself, -100 ignored): targets[n] = labels[n+1] when n+1 is in the
 * same row and document, else -100. */
void qt_model_targets_from_labels(const int32_t *labels, const int32_t *doc, int64_t B,
                                  int64_t T, int32_t *targets);

/* The LoRA hook: for (layer, proj) with N tokens, fill *br with tape ids of A
 * (R, In) and B (Out, R), scale and dropout mask, and return has = true; or
 * has = false for a plain linear. Called for every base linear while
 * recording (again during checkpoint recompute: must be deterministic). */
typedef struct {
  void *ctx;
  qt_status (*branch)(void *ctx, qt_tape *t, int layer, qt_proj proj, int64_t N,
                      qt_tape_lora *br, bool *has);
} qt_model_adapter;

typedef struct {
  int64_t max_B, max_T;     /* largest batch the tape must hold */
  bool checkpoint;          /* gradient checkpointing per layer */
  int64_t ce_chunk_rows;    /* rows of logits formed at once (0: 256) */
  int64_t max_lora_rank;    /* for sizing (0 if no LoRA) */
  bool forward_only;        /* eval / generate: no gradient arena (backward refused) */
  bool lora_no_dropout;     /* the LoRA will run without dropout: size without its buffers */
  bool gemm_bf16;           /* base linears and lm_head GEMMs with bf16 operands
                             * (autograd/tape.h qt_tape_config.gemm_bf16) */
} qt_model_tape_opts;

/* Creates a fp32 tape for opts and registers the model's frozen tensors on
 * it. The arenas get their exact size from one step of the largest batch
 * (max_B x max_T, LoRA of rank max_lora_rank on all seven projections, with
 * dropout unless lora_no_dropout) recorded on a measuring tape first
 * (autograd/tape.h qt_tape_init_measure): nothing is allocated per step. The caller then registers LoRA params (qt_lora_attach) and
 * runs qt_model_forward_backward / qt_model_loss / qt_model_logits; free with
 * qt_model_tape_free. */
typedef struct qt_model_tape qt_model_tape;
qt_status qt_model_tape_init(const qt_model *m, const qt_model_tape_opts *opts,
                             qt_model_tape **out);
void qt_model_tape_free(qt_model_tape **mt);
qt_tape *qt_model_tape_get(qt_model_tape *mt);
/* The model the tape was made for. */
const qt_model *qt_model_tape_model(const qt_model_tape *mt);

/* The arena sizes the tape was given (bytes): activations, gradients. */
void qt_model_tape_arena_bytes(const qt_model_tape *mt, size_t *act, size_t *grad);

/* The model's entries of a memory plan (common/arena.h): the weights (held
 * throughout), the load phase's transient over them (checkpoint pages and
 * conversion copies of the tensor being read) and, with mt, the tape arenas
 * (held while training). */
qt_status qt_model_plan_add(const qt_model *m, const qt_model_tape *mt, qt_mem_plan *plan);
/* Those entries alone, printed to f (common/arena.h table). */
qt_status qt_model_print_plan(const qt_model *m, const qt_model_tape *mt, FILE *f);

/* Records the forward (adapter may be NULL) and the loss; with backward, back
 * propagates with d(objective)/d(loss_sum) = dloss (1 / the global target
 * count): LoRA gradients are added (+=) into their buffers. *loss_sum = summed
 * CE over the targets, *count = number of targets. */
qt_status qt_model_forward_backward(qt_model_tape *mt, const qt_model_adapter *adapter,
                                    const qt_model_batch *b, bool backward, double dloss,
                                    double *loss_sum, int64_t *count);
/* logits (B*T, V) of a batch (forward only; targets ignored). */
qt_status qt_model_logits(qt_model_tape *mt, const qt_model_adapter *adapter,
                          const qt_model_batch *b, float *logits);

/* ---- decoding with a KV cache (model/decode.c) ----------------------------- */

/* An incremental forward for one sequence (batch of 1, positions 0, 1, ...,
 * one document): each fed token's keys and values (after RoPE) stay in a
 * per-layer cache, so a token costs one position's forward, not the whole
 * sequence's. Per fed row it runs what decoder_layer records (rmsnorm, q/k/v
 * (or fused qkv) with biases and the LoRA branch unmerged, q/k norms, RoPE at
 * the absolute position, causal GQA over the cache within the layer's window,
 * scaled and soft-capped as configured, o, [norm], residual, rmsnorm,
 * gate/up (or fused), SwiGLU or GeGLU, down, [norm], residual), with the same
 * CPU kernels; then the final norm, lm_head and logit soft-cap for the LAST
 * fed row only. Equal to qt_model_logits' last
 * row of the whole sequence up to summation order (tested at 1e-5).
 *
 * The adapter's branches are resolved once at init through mt's tape (the
 * LoRA must be attached to mt's tape and must not change while the decoder
 * lives); dropout must be off (qt_lora_set_step(l, step, false)), else
 * QT_ERR_UNSUPPORTED. The tape itself records nothing here: any size will do.
 *
 * Memory, planned at init, one allocation: K and V caches (L, cap, K, D) fp32
 * each, row buffers for max_rows rows fed at once (the prompt), one
 * dequantized base weight when the base is 4-bit (dequantized per use), the
 * scores (H, cap). Nothing is allocated while feeding. */
typedef struct qt_model_decoder qt_model_decoder;
/* cap: positions the cache holds (<= max_position_embeddings); max_rows: the
 * most tokens one feed may carry (1 <= max_rows <= cap). Borrows mt, the
 * model and the adapter's tensors. */
qt_status qt_model_decoder_init(qt_model_tape *mt, const qt_model_adapter *adapter, int64_t cap,
                                int64_t max_rows, qt_model_decoder **out);
void qt_model_decoder_free(qt_model_decoder **d);
/* Appends ids (n, 1 <= n <= max_rows) at positions len .. len+n-1 and writes
 * logits (V) of the last of them. QT_ERR_INVALID: an id outside the
 * vocabulary or the cache full. A layer with a sliding window reads only its
 * window's last keys (the cache keeps every position). */
qt_status qt_model_decoder_feed(qt_model_decoder *d, const int32_t *ids, int64_t n,
                                float *logits);
/* A decoder computed elsewhere (the GPU's, model/model_cuda.h) behind the
 * same calls: feed computes the logits (V) of the last of n rows at
 * positions pos0 .. pos0 + n - 1, given that positions 0 .. pos0 - 1 were fed
 * before (its cache may hold more: a truncate made them stale); bytes reports
 * what it holds; free releases ctx. qt_model_decoder_wrap takes ctx over
 * (freed with the decoder, or at once on failure); cap and max_rows as for
 * qt_model_decoder_init; feed's checks, the ids record (prefix reuse) and
 * truncate are the wrapper's. */
typedef struct {
  qt_status (*feed)(void *ctx, const int32_t *ids, int64_t n, int64_t pos0, float *logits);
  size_t (*bytes)(const void *ctx);
  void (*free)(void *ctx);
} qt_model_decoder_ext;
qt_status qt_model_decoder_wrap(const qt_model *m, int64_t cap, int64_t max_rows,
                                const qt_model_decoder_ext *ext, void *ctx, qt_model_decoder **out);
/* Positions fed so far. */
int64_t qt_model_decoder_len(const qt_model_decoder *d);
/* Bytes of the decoder's one allocation (caches + buffers), for the plan. */
size_t qt_model_decoder_bytes(const qt_model_decoder *d);

/* Rolls the cache back to its first len positions (len <= the current length). */
void qt_model_decoder_truncate(qt_model_decoder *d, int64_t len);
/* Positions the cache holds. */
int64_t qt_model_decoder_cap(const qt_model_decoder *d);

/* ---- generation (decode.c; token selection in model/sample.h) -------------- */

typedef struct {
  int64_t max_new;         /* at most this many new tokens */
  const int32_t *stop_ids; /* ids that end generation (kept as the last token): EOS, end of turn */
  int n_stop_ids;
  /* Called after each new token (may be NULL); setting *stop ends generation
   * with that token kept (stop strings, the caller's streaming). */
  qt_status (*on_token)(void *ctx, int32_t id, bool *stop);
  void *ctx;
} qt_generate_opts;

/* Generates with the decoder: the prompt (n_prompt >= 1 ids, BOS included
 * when wanted) is fed in chunks of max_rows, reusing the longest prefix the
 * cache already holds from an earlier call (a chat's previous turns), then
 * one position per new token; each token is chosen by smp from the last
 * row's logits and the whole sequence so far (repetition penalty). Stops at
 * max_new, a stop id, the callback, or the cache's end. out (max_new) gets
 * the new ids, *n_out how many. */
qt_status qt_model_decoder_generate(qt_model_decoder *d, qt_sampler *smp, const int32_t *prompt,
                                    int64_t n_prompt, const qt_generate_opts *g, int32_t *out,
                                    int64_t *n_out);

/* Plain generation (tests, simple callers): prompt (n_prompt ids, e.g. BOS +
 * prompt tokens), up to max_new tokens appended to out (max_new entries);
 * stops after an EOS of the config (which is kept) or at
 * max_position_embeddings. temperature 0 = greedy (argmax, lowest id on
 * ties); else softmax(logits / temperature) sampled with Philox(seed)
 * (model/sample.h). A decoder sized for the prompt plus max_new: the prompt
 * is fed in one forward, then one position per new token. mt carries the
 * adapter's tensors only (its arena size does not matter). *n_out = tokens
 * written. */
qt_status qt_model_generate(qt_model_tape *mt, const qt_model_adapter *adapter,
                            const int32_t *prompt, int64_t n_prompt, int64_t max_new,
                            double temperature, uint64_t seed, int32_t *out, int64_t *n_out);
/* The test oracle of the decoder's generation, not for callers: the same
 * selection (so: every processor), EOS stops, but every step recomputes the
 * whole sequence with qt_model_logits (no cache; O(n^2) per token). The tape
 * must hold max_T >= n_prompt + max_new. */
qt_status qt_model_generate_recompute(qt_model_tape *mt, const qt_model_adapter *adapter,
                                      const int32_t *prompt, int64_t n_prompt, int64_t max_new,
                                      const qt_sample_opts *so, int32_t *out, int64_t *n_out);

/* Whether layers have projection p (llama-style or fused, per family). */
bool qt_model_has_proj(const qt_model *m, qt_proj p);

/* Dequantizes (or copies) a base linear into w (out, in) fp32. */
qt_status qt_model_linear_weight(const qt_model *m, const qt_model_linear *lin, float *w);

#endif
