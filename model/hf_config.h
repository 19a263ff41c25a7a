/* model/hf_config.h — the Hugging Face config.json of a decoder-only model,
 * read and validated. Families (model_type): llama, mistral, qwen2, qwen3,
 * gemma2, gemma3_text, gemma3 (a multimodal config: its "text_config" is read as
 * gemma3_text, the vision tower is ignored), phi3.
 *
 * Values are resolved the way transformers 5.24 resolves them: class defaults
 * and __post_init__ of LlamaConfig / MistralConfig / Qwen2Config / Qwen3Config /
 * Gemma2Config / Gemma3TextConfig / Gemma3Config / Phi3Config, and
 * modeling_<family>.py for what the model builds from them (head_dim, biases,
 * fused projections, norms, score scale, soft-caps, sliding window per layer).
 * tests/golden/hf_config holds config.json files written by transformers and the
 * values it resolves (tools/reference/make_hf_config_fixtures.py).
 * Both layouts are read:
 *   v4 / Hub: top-level "rope_theta" + "rope_scaling" {"type"|"rope_type", ...},
 *             "torch_dtype" (gemma3: "rope_local_base_freq", "sliding_window_pattern");
 *   v5:       "rope_parameters" {"rope_type", "rope_theta", ...} (gemma3: one
 *             such dict per layer type, "full_attention" and "sliding_attention"),
 *             "dtype".
 * ("rope_scaling", when non-empty, wins over "rope_parameters" (gemma3: is
 * merged into its full_attention dict); a rope_theta inside the rope dict wins
 * over the top-level one — modeling_rope_utils.py convert_rope_params_to_dict /
 * standardize_rope_params.)
 *
 * Keys that are absent or null take the class default; present keys must have
 * the right JSON type. Required: model_type, and except for gemma3 (whose Hub
 * configs leave them to Gemma3TextConfig's defaults) hidden_size,
 * intermediate_size, num_hidden_layers, num_attention_heads, vocab_size. Every
 * error is a QT_ERR_FORMAT (malformed: missing key, wrong type, bad value,
 * inconsistent sizes) or QT_ERR_UNSUPPORTED (valid but not ours: model_type,
 * activation, rope type, partial rotary factor, bidirectional attention,
 * quantization method), and the message names the file and key (keys of a
 * gemma3 text_config as "text_config.<key>").
 *
 * Ownership: a qt_hf_config owns `path`, `layer_window` and the quantization
 * skip list; release with qt_hf_config_free (safe on a zeroed struct). */
#ifndef QT_MODEL_HF_CONFIG_H
#define QT_MODEL_HF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rope_type.h"
#include "common/status.h"
#include "common/tensor.h"

typedef enum {
  QT_HF_LLAMA = 0, QT_HF_MISTRAL, QT_HF_QWEN2, QT_HF_QWEN3, QT_HF_GEMMA2, QT_HF_GEMMA3, QT_HF_PHI3
} qt_hf_arch;

/* The MLP's activation: silu (SwiGLU: llama, mistral, qwen2/3, phi3) or the
 * tanh approximation of GELU (GeGLU: gemma's gelu_pytorch_tanh). */
typedef enum { QT_HF_ACT_SILU = 0, QT_HF_ACT_GELU_TANH } qt_hf_act;


/* RoPE parameters (modeling_rope_utils.py: _compute_default_rope_parameters,
 * _compute_linear_scaling_rope_parameters, _compute_llama3_parameters). */
typedef struct {
  qt_rope_type type;
  double theta;                              /* base; default 10000 */
  double factor;                             /* linear, llama3; 1 for default */
  double low_freq_factor, high_freq_factor;  /* llama3 only (high > low) */
  int64_t original_max_position_embeddings;  /* llama3 only; default max_position_embeddings */
} qt_hf_rope;

typedef enum { QT_HF_QUANT_FP4 = 0, QT_HF_QUANT_NF4 } qt_hf_quant_type;

/* quantization_config of a bitsandbytes pre-quantized checkpoint, with
 * BitsAndBytesConfig defaults (fp4, no double quant, fp32 compute, uint8
 * storage). Only 4-bit is accepted; 8-bit and other methods are unsupported. */
typedef struct {
  bool present;                /* false: no quantization_config in the file */
  qt_hf_quant_type quant_type; /* bnb_4bit_quant_type */
  bool double_quant;           /* bnb_4bit_use_double_quant */
  qt_dtype compute_dtype;      /* bnb_4bit_compute_dtype: F32, F16 or BF16 */
  qt_dtype quant_storage;      /* bnb_4bit_quant_storage: U8, I8, F16, BF16 or F32 */
  size_t n_skip_modules;       /* llm_int8_skip_modules (0 when null) */
  char **skip_modules;
} qt_hf_quant_config;

enum { QT_HF_MAX_EOS = 16 };

typedef struct {
  char *path;                       /* the config.json that was read (or the parse label) */
  qt_hf_arch arch;                  /* model_type */
  int64_t hidden_size;
  int64_t num_attention_heads;
  int64_t num_key_value_heads;      /* divides num_attention_heads (GQA when smaller) */
  int64_t head_dim;                 /* even; default hidden_size / num_attention_heads */
  int64_t intermediate_size;
  int64_t num_hidden_layers;
  int64_t vocab_size;
  int64_t max_position_embeddings;
  double rms_norm_eps;
  qt_hf_rope rope;
  bool tie_word_embeddings;         /* true: no lm_head.weight, lm_head = embed_tokens (gemma3
                                     * multimodal: the outer config's flag, default true) */
  /* Which Linear layers have a bias (llama: attention_bias for q/k/v/o and
   * mlp_bias for gate/up/down; mistral, phi3: none; qwen2: q/k/v always, o and
   * MLP never; qwen3, gemma2/3: attention_bias for q/k/v/o, MLP never). */
  bool q_bias, k_bias, v_bias, o_bias, mlp_bias;
  /* Token ids as written (defaults: llama/mistral bos 1, eos 2; qwen2/3 none;
   * gemma bos 2, eos 1, pad 0; phi3 bos 1, eos 32000, pad 32000; a gemma3
   * multimodal config's own keys win over its text_config's, as
   * GenerationConfig.from_model_config); not checked against vocab_size
   * (transformers only warns): callers that index embeddings with them must check. */
  bool has_bos;
  int64_t bos_token_id;
  int n_eos;                        /* 0..QT_HF_MAX_EOS; eos_token_id may be a list */
  int64_t eos_token_ids[QT_HF_MAX_EOS];
  bool has_pad;
  int64_t pad_token_id;
  bool has_dtype;                   /* "dtype" (v5) or "torch_dtype" (v4) */
  qt_dtype dtype;                   /* F32, F16 or BF16 */
  /* Sliding-window attention as the model applies it: the config value (0 =
   * none; for qwen2/3 only when use_sliding_window) and, per layer, the window
   * that layer's mask uses (0 = full causal). mistral, phi3: every layer;
   * qwen2/3: layers whose layer_types entry is "sliding_attention" (default:
   * layers >= max_window_layers); gemma2: layer_types, default even layers;
   * gemma3: layer_types, default every layer but each sliding_window_pattern-th
   * (6). Whether training may use a longer sequence than the window is for the
   * caller to decide. */
  int64_t sliding_window;
  int64_t *layer_window;            /* num_hidden_layers entries */
  qt_hf_quant_config quant;

  /* ---- what the family's modeling_*.py builds (the model is data: model.c
   * composes its layer from these; all false / 0 for llama, mistral, qwen2) */
  qt_hf_act act;                    /* hidden_act (hidden_activation for gemma) */
  bool fused_qkv;                   /* phi3: self_attn.qkv_proj, rows q | k | v */
  bool fused_gate_up;               /* phi3: mlp.gate_up_proj, rows gate | up */
  bool qk_norm;                     /* qwen3, gemma3: self_attn.q_norm / k_norm, RMSNorm over
                                     * head_dim of each head (one (head_dim) weight), before RoPE */
  bool norm_plus_one;               /* gemma: every RMSNorm multiplies by (1 + weight) */
  bool sandwich_norm;               /* gemma2/3: post_attention_layernorm normalises the attention
                                     * output before the residual add; pre_feedforward_layernorm
                                     * is the MLP's input norm, post_feedforward_layernorm its output's */
  bool embed_scale;                 /* gemma: embeddings times sqrt(hidden_size) rounded to the dtype */
  double attn_scale;                /* the score scale: head_dim^-1/2 (gemma: query_pre_attn_scalar^-1/2) */
  double attn_softcap;              /* gemma attn_logit_softcapping: s -> c tanh(s / c); 0 = none
                                     * (gemma2 default 50, gemma3 none) */
  double final_softcap;             /* gemma final_logit_softcapping on the logits; 0 = none
                                     * (gemma2 default 30, gemma3 none) */
  /* gemma3: sliding layers use their own RoPE (rope_parameters.sliding_attention,
   * or rope_local_base_freq); has_rope_local false: every layer uses `rope`. */
  bool has_rope_local;
  qt_hf_rope rope_local;
  /* The decoder's tensor names start with this: "model.", or for a gemma3
   * multimodal config "language_model.model." (what save_pretrained of a
   * Gemma3ForConditionalGeneration writes, as google/gemma-3-*-it on the Hub:
   * language_model.model.embed_tokens.weight, language_model.model.layers.N...,
   * language_model.model.norm.weight; lm_head.weight only when untied). A
   * zeroed struct's "" is read as "model.". */
  char weight_prefix[48];
} qt_hf_config;

/* Reads PATH, which is a config.json file or a directory containing one. */
qt_status qt_hf_config_load(const char *path, qt_hf_config *out);
/* Parses config.json text of len bytes; label names it in messages. */
qt_status qt_hf_config_parse(const char *json, size_t len, const char *label, qt_hf_config *out);
void qt_hf_config_free(qt_hf_config *c);

/* "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3" (gemma3_text and a gemma3
 * config's text part are both "gemma3"). */
const char *qt_hf_arch_name(qt_hf_arch a);
/* "default", "linear", "llama3". */
const char *qt_rope_type_name(qt_rope_type t);
/* "nf4", "fp4". */
const char *qt_hf_quant_type_name(qt_hf_quant_type t);
/* torch dtype name ("float32", "bfloat16", ...) of F32/F16/BF16/F64/U8/I8; "?" otherwise. */
const char *qt_hf_torch_dtype_name(qt_dtype t);

#endif
