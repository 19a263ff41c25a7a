/* train/export_gguf.c — GGUF export (see export_gguf.h).
 *
 * What is written follows llama.cpp's own converters, which are the
 * reference (../shared/docs/reference/gguf.md; tools/reference/make_gguf_fixtures.py
 * checks every file against them and against llama.cpp):
 *   - convert_hf_to_gguf.py (LlamaModel / Qwen2Model) for the model: KVs
 *     general.*, {arch}.* hyper-parameters, tokenizer.* (gguf/gguf_vocab.h);
 *     tensor names token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v,
 *     attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm, output
 *     (omitted when tied); rope_freqs for Llama-3.1 rope scaling; the Q/K row
 *     permutation for arch llama (HF rotate-half -> llama.cpp interleaved
 *     pairs); 1-D tensors in F32.
 *   - llama_model_quantize (src/llama-quant.cpp) for q8_0 and q4_k_m: which
 *     tensor gets which type and the fallbacks, so that our file equals
 *     llama.cpp's quantization of our own f32 export byte for byte.
 *   - convert_lora_to_gguf.py for adapters: general.type "adapter",
 *     adapter.type "lora", adapter.lora.alpha; tensors <name>.weight.lora_a
 *     (ne [in, r]) and .lora_b (ne [r, out]), lora_b of q/k permuted as the
 *     base weight is.
 * Streaming: one tensor at a time is formed in fp32, converted, written and
 * freed; the file is PATH.tmp.<pid> until it is complete, then fsynced and
 * renamed (gguf/gguf.h). Without an adapter no model is loaded: each tensor
 * is read from the checkpoint by its Hugging Face name (SRC_SOURCE); with one,
 * the loaded model's dense tensors are used and each base linear is read
 * from the checkpoint (merge_base original) or dequantized, then merged. */
#include "train/export_gguf.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "gguf/gguf.h"
#include "gguf/gguf_vocab.h"

/* One tensor of the output file and where its values come from. */
typedef enum { SRC_DENSE = 0, SRC_LINEAR, SRC_SOURCE, SRC_ROPE_FREQS, SRC_LORA_A, SRC_LORA_B } src_kind;

typedef struct {
  char name[64];
  char hf[160];              /* the Hugging Face name (SRC_SOURCE, SRC_LINEAR) */
  int64_t rows, cols;        /* HF (rows, cols); cols = 0 for a vector. ggml ne = [cols, rows] */
  src_kind kind;             /* SRC_SOURCE: read from the checkpoint (no model loaded) */
  const float *dense;        /* SRC_DENSE */
  int layer;                 /* SRC_LINEAR / SRC_LORA_*: layer and projection */
  qt_proj proj;
  const float *lora;         /* SRC_LORA_*: the (rows, cols) values */
  int64_t permute_heads;     /* > 0: permute rows for llama.cpp's RoPE with this many heads */
  qt_ggml_type type;
  size_t index;
} out_tensor;

typedef struct {
  out_tensor *t;
  size_t n, cap;
} tensor_list;

static qt_status push(tensor_list *l, out_tensor t) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    out_tensor *p = realloc(l->t, cap * sizeof *p);
    if (!p) return qt_fail(QT_ERR_NOMEM, "out of memory");
    l->t = p;
    l->cap = cap;
  }
  l->t[l->n++] = t;
  return QT_OK;
}

/* llama.cpp's names for our seven projections (gguf-py constants.py MODEL_TENSOR). */
static const char *const proj_gguf[QT_PROJ_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                      "ffn_gate", "ffn_up", "ffn_down"};

/* ---- type choice ------------------------------------------------------------- */

/* llama-quant.cpp use_more_bits: the first and last eighth of the layers and
 * every third one between get more bits. */
static bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* A type that cannot hold rows of ne0 values falls back as llama-quant.cpp's
 * tensor_type_fallback does: Q4_K -> Q5_0, Q6_K -> Q8_0, then F16. */
static qt_ggml_type fallback(qt_ggml_type t, int64_t ne0) {
  if (ne0 % qt_ggml_block_values(t) == 0) return t;
  if (t == QT_GGML_Q4_K) t = QT_GGML_Q5_0;
  else if (t == QT_GGML_Q6_K) t = QT_GGML_Q8_0;
  return ne0 % qt_ggml_block_values(t) == 0 ? t : QT_GGML_F16;
}

typedef struct {
  qt_cfg_gguf_type want;
  int n_layers;
  bool tied;              /* no output.weight: token_embd is treated as the output */
  int i_attn_v, i_ffn_down; /* counters in file order, as llama_model_quantize keeps them */
} type_state;

static qt_ggml_type choose_type(type_state *st, const out_tensor *t) {
  if (t->cols == 0 || t->kind == SRC_ROPE_FREQS) return QT_GGML_F32; /* 1-D: F32 (convert and quantize alike) */
  const int64_t ne0 = t->cols;
  switch (st->want) {
    case QT_GGUF_T_F32: return QT_GGML_F32;
    case QT_GGUF_T_F16: return QT_GGML_F16;
    case QT_GGUF_T_BF16: return QT_GGML_BF16;
    case QT_GGUF_T_Q8_0: return fallback(QT_GGML_Q8_0, ne0);
    default: break;
  }
  /* q4_k_m (llama_tensor_get_type_impl, LLAMA_FTYPE_MOSTLY_Q4_K_M) */
  const char *n = t->name;
  qt_ggml_type ty = QT_GGML_Q4_K;
  bool is_output = strcmp(n, "output.weight") == 0 || (st->tied && strcmp(n, "token_embd.weight") == 0);
  if (is_output) {
    ty = ne0 % 256 != 0 ? QT_GGML_Q8_0 : QT_GGML_Q6_K;
  } else if (strstr(n, "attn_v.weight")) {
    if (use_more_bits(st->i_attn_v, st->n_layers)) ty = QT_GGML_Q6_K;
    st->i_attn_v++;
  } else if (strstr(n, "ffn_down")) {
    if (use_more_bits(st->i_ffn_down, st->n_layers)) ty = QT_GGML_Q6_K;
    st->i_ffn_down++;
  }
  return fallback(ty, ne0);
}

static uint32_t file_type_of(qt_cfg_gguf_type t) {
  switch (t) {
    case QT_GGUF_T_F32: return QT_LLAMA_FTYPE_ALL_F32;
    case QT_GGUF_T_F16: return QT_LLAMA_FTYPE_MOSTLY_F16;
    case QT_GGUF_T_BF16: return QT_LLAMA_FTYPE_MOSTLY_BF16;
    case QT_GGUF_T_Q4_K_M: return QT_LLAMA_FTYPE_MOSTLY_Q4_K_M;
    default: return QT_LLAMA_FTYPE_MOSTLY_Q8_0;
  }
}

/* ---- values ------------------------------------------------------------------ */

/* HF stores q/k rows per head as [first halves | second halves] (rotate-half
 * RoPE); llama.cpp's LLAMA_ROPE_TYPE_NORM rotates interleaved pairs. As
 * convert_hf_to_gguf.py LlamaModel.permute: new row h*hd + 2i + j = old row
 * h*hd + j*hd/2 + i (hd = rows / heads, i < hd/2, j in {0, 1}). */
static qt_status permute_rows(float *w, int64_t rows, int64_t cols, int64_t heads) {
  int64_t c = cols ? cols : 1, hd = rows / heads;
  float *tmp = malloc((size_t)(rows * c) * sizeof *tmp);
  if (!tmp) return qt_fail(QT_ERR_NOMEM, "out of memory");
  for (int64_t h = 0; h < heads; h++)
    for (int64_t i = 0; i < hd / 2; i++)
      for (int64_t j = 0; j < 2; j++)
        memcpy(tmp + (h * hd + 2 * i + j) * c, w + (h * hd + j * (hd / 2) + i) * c, (size_t)c * sizeof *w);
  memcpy(w, tmp, (size_t)(rows * c) * sizeof *w);
  free(tmp);
  return QT_OK;
}

/* rope_freqs.weight for rope_type llama3: per frequency the factor llama.cpp
 * divides it by (convert_hf_to_gguf.py LlamaModel.generate_extra_tensors;
 * transformers _compute_llama3_parameters). Computed in float like the
 * converter's float32 torch tensors; its pow may differ from powf in the last
 * bit, so the tests compare this tensor with a tolerance. */
static void llama3_factors(const qt_hf_config *c, float *f) {
  const int64_t dim = c->head_dim;
  const float base = (float)c->rope.theta, factor = (float)c->rope.factor, lo = (float)c->rope.low_freq_factor,
              old = (float)c->rope.original_max_position_embeddings;
  const double lo_wavelen = c->rope.original_max_position_embeddings / c->rope.low_freq_factor;
  const double hi_wavelen = c->rope.original_max_position_embeddings / c->rope.high_freq_factor;
  const float span = (float)(c->rope.high_freq_factor - c->rope.low_freq_factor);
  for (int64_t i = 0; i < dim / 2; i++) {
    float freq = 1.0f / powf(base, (float)(2 * i) / (float)dim);
    float wavelen = (float)(2 * 3.14159265358979323846) / freq;
    if (wavelen < (float)hi_wavelen) {
      f[i] = 1.0f;
    } else if (wavelen > (float)lo_wavelen) {
      f[i] = factor;
    } else {
      float smooth = (old / wavelen - lo) / span;
      f[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
    }
  }
}

/* The model's dense weight `name` in the source checkpoint, when it has one
 * (merge_base original; not for bitsandbytes 4-bit sources). */
static qt_status source_weight(const qt_st_model *src, const char *name, int64_t n, float *w, bool *found) {
  const qt_st_entry *e = qt_st_model_find(src, name);
  *found = false;
  if (!e || (e->dtype != QT_F32 && e->dtype != QT_F16 && e->dtype != QT_BF16) || qt_st_entry_numel(e) != n) return QT_OK;
  qt_status r = qt_st_entry_to_f32(e, w);
  qt_st_model_release(src, e); /* read once: its mapped pages leave the resident set */
  QT_TRY(r);
  *found = true;
  return QT_OK;
}

typedef struct {
  qt_session *s;
  const qt_hf_config *c;
  qt_st_model *src;       /* NULL unless merge_base original or no model loaded */
  bool original_missing;
} value_ctx;

/* fp32 values (rows, cols) of t into w. */
static qt_status tensor_values(value_ctx *vc, const out_tensor *t, float *w) {
  const qt_model *m = vc->s->model;
  int64_t n = t->rows * (t->cols ? t->cols : 1);
  switch (t->kind) {
    case SRC_DENSE: memcpy(w, t->dense, (size_t)n * sizeof *w); break;
    case SRC_ROPE_FREQS: llama3_factors(vc->c, w); break;
    case SRC_SOURCE: {
      bool found = false;
      QT_TRY(source_weight(vc->src, t->hf, n, w, &found));
      if (!found)
        return qt_fail(QT_ERR_FORMAT, "%s: tensor %s missing, not F32/F16/BF16 or not %lld values", vc->c->path, t->hf,
                       (long long)n);
      break;
    }
    case SRC_LORA_A: case SRC_LORA_B: memcpy(w, t->lora, (size_t)n * sizeof *w); break;
    case SRC_LINEAR: {
      const qt_model_linear *lin = &m->layers[t->layer].proj[t->proj];
      bool found = false;
      if (vc->src) {
        QT_TRY(source_weight(vc->src, t->hf, n, w, &found));
        if (!found) vc->original_missing = true;
      }
      if (!found) QT_TRY(qt_model_linear_weight(m, lin, w));
      if (vc->s->lora) qt_lora_merge_weight(vc->s->lora, t->layer, t->proj, w);
      break;
    }
  }
  if (t->permute_heads > 0) QT_TRY(permute_rows(w, t->rows, t->cols, t->permute_heads));
  return QT_OK;
}

/* Rows converted in parallel: each row is independent in every type, so the
 * bytes do not depend on the thread count. */
static void convert_rows(qt_ggml_type ty, const float *w, int64_t rows, int64_t ne0, uint8_t *out) {
  const size_t rb = qt_ggml_row_bytes(ty, ne0);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = 0; r < rows; r++) qt_gguf_quantize(ty, w + r * ne0, out + (size_t)r * rb, ne0);
}

/* ---- tensor lists --------------------------------------------------------- */

static bool permuted_arch(const qt_hf_config *c) { return c->arch != QT_HF_QWEN2; }

/* Adds a tensor: from the loaded model (dense != NULL, or a base linear) or,
 * with m == NULL, read by its HF name from the checkpoint. */
static qt_status add(tensor_list *l, const char *name, const char *hf, int64_t rows, int64_t cols, const float *dense,
                     int layer, int proj, int64_t heads, bool from_model) {
  out_tensor t;
  memset(&t, 0, sizeof t);
  snprintf(t.name, sizeof t.name, "%s", name);
  snprintf(t.hf, sizeof t.hf, "%s", hf);
  t.rows = rows, t.cols = cols, t.permute_heads = heads;
  if (!from_model) t.kind = SRC_SOURCE;
  else if (layer >= 0) t.kind = SRC_LINEAR, t.layer = layer, t.proj = (qt_proj)proj;
  else t.kind = SRC_DENSE, t.dense = dense;
  return push(l, t);
}

/* The tensors of the model, in llama.cpp's names, from the config (m, when
 * loaded, provides the values). */
static qt_status model_tensors(const qt_hf_config *c, const qt_model *m, tensor_list *l) {
  const int64_t C = c->hidden_size, D = c->head_dim, H = c->num_attention_heads, K = c->num_key_value_heads;
  const int64_t F = c->intermediate_size, V = c->vocab_size;
  const bool mm = m != NULL;
  char nm[64], hf[160];
  QT_TRY(add(l, "token_embd.weight", "model.embed_tokens.weight", V, C, mm ? m->embed : NULL, -1, 0, 0, mm));
  if (c->rope.type == QT_ROPE_LLAMA3) {
    out_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "rope_freqs.weight");
    t.rows = D / 2, t.kind = SRC_ROPE_FREQS;
    QT_TRY(push(l, t));
  }
  const int64_t out_of[QT_PROJ_COUNT] = {H * D, K * D, K * D, C, F, F, C};
  const int64_t in_of[QT_PROJ_COUNT] = {C, C, C, H * D, C, C, F};
  const bool bias_of[QT_PROJ_COUNT] = {c->q_bias, c->k_bias, c->v_bias, c->o_bias, c->mlp_bias, c->mlp_bias, c->mlp_bias};
  for (int64_t i = 0; i < c->num_hidden_layers; i++) {
    const qt_model_layer *ly = mm ? &m->layers[i] : NULL;
    snprintf(nm, sizeof nm, "blk.%lld.attn_norm.weight", (long long)i);
    snprintf(hf, sizeof hf, "model.layers.%lld.input_layernorm.weight", (long long)i);
    QT_TRY(add(l, nm, hf, C, 0, mm ? ly->input_norm : NULL, -1, 0, 0, mm));
    for (int p = 0; p <= QT_PROJ_DOWN; p++) { /* the llama-style seven (families: see qt_export_gguf) */
      int64_t heads = 0;
      if (permuted_arch(c) && p == QT_PROJ_Q) heads = H;
      if (permuted_arch(c) && p == QT_PROJ_K) heads = K;
      snprintf(nm, sizeof nm, "blk.%lld.%s.weight", (long long)i, proj_gguf[p]);
      snprintf(hf, sizeof hf, "model.layers.%lld.%s.%s.weight", (long long)i, qt_proj_block((qt_proj)p),
               qt_proj_name((qt_proj)p));
      QT_TRY(add(l, nm, hf, out_of[p], in_of[p], NULL, (int)i, p, heads, mm));
      if (bias_of[p]) {
        snprintf(nm, sizeof nm, "blk.%lld.%s.bias", (long long)i, proj_gguf[p]);
        snprintf(hf, sizeof hf, "model.layers.%lld.%s.%s.bias", (long long)i, qt_proj_block((qt_proj)p),
                 qt_proj_name((qt_proj)p));
        QT_TRY(add(l, nm, hf, out_of[p], 0, mm ? ly->proj[p].bias : NULL, -1, 0, heads, mm));
      }
      if (p == QT_PROJ_O) {
        snprintf(nm, sizeof nm, "blk.%lld.ffn_norm.weight", (long long)i);
        snprintf(hf, sizeof hf, "model.layers.%lld.post_attention_layernorm.weight", (long long)i);
        QT_TRY(add(l, nm, hf, C, 0, mm ? ly->post_norm : NULL, -1, 0, 0, mm));
      }
    }
  }
  QT_TRY(add(l, "output_norm.weight", "model.norm.weight", C, 0, mm ? m->final_norm : NULL, -1, 0, 0, mm));
  if (!c->tie_word_embeddings) QT_TRY(add(l, "output.weight", "lm_head.weight", V, C, mm ? m->lm_head : NULL, -1, 0, 0, mm));
  return QT_OK;
}

static qt_status lora_tensors(const qt_model *m, qt_lora *lo, tensor_list *l) {
  size_t n;
  qt_lora_tensor *lt = qt_lora_tensors(lo, &n);
  for (size_t i = 0; i < n; i++) {
    out_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "blk.%d.%s.weight.lora_%s", lt[i].layer, proj_gguf[lt[i].proj],
             lt[i].is_B ? "b" : "a");
    t.rows = lt[i].rows, t.cols = lt[i].cols;
    t.kind = lt[i].is_B ? SRC_LORA_B : SRC_LORA_A;
    t.lora = lt[i].data;
    /* the base weight's row permutation acts on B's rows (out); A is untouched */
    if (lt[i].is_B && permuted_arch(&m->cfg) && lt[i].proj == QT_PROJ_Q) t.permute_heads = m->H;
    if (lt[i].is_B && permuted_arch(&m->cfg) && lt[i].proj == QT_PROJ_K) t.permute_heads = m->K;
    QT_TRY(push(l, t));
  }
  return QT_OK;
}

/* ---- metadata ---------------------------------------------------------------- */

static const char *arch_name(const qt_hf_config *c) { return c->arch == QT_HF_QWEN2 ? "qwen2" : "llama"; }

static const char *dir_basename(const char *path, char *buf, size_t n) {
  snprintf(buf, n, "%s", path);
  size_t len = strlen(buf);
  while (len > 1 && buf[len - 1] == '/') buf[--len] = '\0';
  const char *b = strrchr(buf, '/');
  return b ? b + 1 : buf;
}

/* Whether DIR/config.json has top-level KEY. */
static qt_status config_has_key(const char *dir, const char *key, bool *has) {
  char p[4200];
  snprintf(p, sizeof p, "%s/config.json", dir);
  uint8_t *buf;
  size_t len;
  QT_TRY(qt_fs_read_file(p, 1 << 24, &buf, &len));
  cJSON *o = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  if (!o) return qt_fail(QT_ERR_FORMAT, "%s: not valid JSON", p);
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  *has = v && !cJSON_IsNull(v);
  cJSON_Delete(o);
  return QT_OK;
}

static qt_status model_kvs(qt_session *s, const qt_hf_config *c, qt_gguf_writer *w, qt_cfg_gguf_type ty,
                           const qt_gguf_vocab *voc) {
  const char *a = arch_name(c);
  char k[128], nb[4200];
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", a, suffix), k)
  QT_TRY(qt_gguf_kv_str(w, "general.architecture", a));
  QT_TRY(qt_gguf_kv_str(w, "general.type", "model"));
  QT_TRY(qt_gguf_kv_str(w, "general.name", dir_basename(s->cfg.model.path, nb, sizeof nb)));
  QT_TRY(qt_gguf_kv_u32(w, KEY("block_count"), (uint32_t)c->num_hidden_layers));
  QT_TRY(qt_gguf_kv_u32(w, KEY("context_length"), (uint32_t)c->max_position_embeddings));
  QT_TRY(qt_gguf_kv_u32(w, KEY("embedding_length"), (uint32_t)c->hidden_size));
  QT_TRY(qt_gguf_kv_u32(w, KEY("feed_forward_length"), (uint32_t)c->intermediate_size));
  QT_TRY(qt_gguf_kv_u32(w, KEY("attention.head_count"), (uint32_t)c->num_attention_heads));
  QT_TRY(qt_gguf_kv_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->num_key_value_heads));
  QT_TRY(qt_gguf_kv_f32(w, KEY("rope.freq_base"), (float)c->rope.theta));
  QT_TRY(qt_gguf_kv_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float)c->rms_norm_eps));
  /* convert writes the head sizes when its hparams have head_dim: always for
   * llama/mistral (transformers' LlamaConfig and MistralConfig define it),
   * for qwen2 only when config.json names it */
  bool head_dim_key = c->arch != QT_HF_QWEN2;
  if (!head_dim_key) QT_TRY(config_has_key(s->cfg.model.path, "head_dim", &head_dim_key));
  if (head_dim_key) {
    QT_TRY(qt_gguf_kv_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim));
    QT_TRY(qt_gguf_kv_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim));
  }
  QT_TRY(qt_gguf_kv_u32(w, "general.file_type", file_type_of(ty)));
  if (c->arch != QT_HF_QWEN2) { /* LlamaModel.set_gguf_parameters adds these two */
    QT_TRY(qt_gguf_kv_u32(w, KEY("vocab_size"), (uint32_t)c->vocab_size));
    QT_TRY(qt_gguf_kv_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim));
  }
  if (c->rope.type == QT_ROPE_LINEAR) {
    QT_TRY(qt_gguf_kv_str(w, KEY("rope.scaling.type"), "linear"));
    QT_TRY(qt_gguf_kv_f32(w, KEY("rope.scaling.factor"), (float)c->rope.factor));
  }
#undef KEY
  QT_TRY(qt_gguf_kv_u32(w, "general.quantization_version", 2));
  return qt_gguf_vocab_write(voc, w);
}

static qt_status lora_kvs(qt_session *s, qt_gguf_writer *w) {
  const qt_lora_config *lc = qt_lora_get_config(s->lora);
  char nb[4200];
  QT_TRY(qt_gguf_kv_str(w, "general.architecture", arch_name(&s->model->cfg)));
  QT_TRY(qt_gguf_kv_str(w, "general.type", "adapter"));
  QT_TRY(qt_gguf_kv_str(w, "general.name", dir_basename(s->adapter_dir[0] ? s->adapter_dir : "adapter", nb, sizeof nb)));
  /* convert_lora_to_gguf.py writes no general.file_type for adapters */
  QT_TRY(qt_gguf_kv_u32(w, "general.quantization_version", 2));
  QT_TRY(qt_gguf_kv_str(w, "adapter.type", "lora"));
  /* llama.cpp scales by alpha / rank (llama-adapter.cpp); with rsLoRA the
   * scale is alpha / sqrt(r), written as the alpha that gives it. */
  QT_TRY(qt_gguf_kv_f32(w, "adapter.lora.alpha", (float)(qt_lora_scale(s->lora) * lc->r)));
  return QT_OK;
}

/* ---- the export ------------------------------------------------------------- */

static const char *gguf_type_name(qt_cfg_gguf_type t) {
  static const char *const names[] = {"auto", "f32", "f16", "bf16", "q8_0", "q4_k_m"};
  return names[t];
}

qt_status qt_export_gguf(qt_session *s, const qt_hf_config *c, const char *out, bool lora_only) {
  qt_model *m = s->model;
  QT_ASSERTF(m || !lora_only, "a LoRA export needs the model");
  /* llama.cpp names and hyperparameter keys are written for these three;
   * the newer families have their own (gemma2's soft-caps, phi3's fused
   * tensors, qwen3's q/k norms) that this writer does not know yet */
  if (c->arch != QT_HF_LLAMA && c->arch != QT_HF_MISTRAL && c->arch != QT_HF_QWEN2)
    return qt_fail(QT_ERR_UNSUPPORTED, "export --format %s: %s models are not written as GGUF yet "
                                       "(llama, mistral and qwen2 are); export --format merged and "
                                       "convert that directory with llama.cpp's convert_hf_to_gguf.py",
                   lora_only ? "gguf-lora" : "gguf", qt_hf_arch_name(c->arch));
  qt_cfg_gguf_type ty = s->cfg.export_.gguf_type;
  if (ty == QT_GGUF_T_AUTO) ty = lora_only ? QT_GGUF_T_F32 : QT_GGUF_T_Q8_0;
  if (lora_only && ty == QT_GGUF_T_Q4_K_M)
    return qt_fail(QT_ERR_CONFIG, "export.gguf_type q4_k_m is for models; a GGUF LoRA adapter is f32, f16, bf16 or q8_0");
  if (lora_only && !s->lora) return qt_fail(QT_ERR_INVALID, "--format gguf-lora needs an adapter (--checkpoint DIR)");
  tensor_list l = {0};
  qt_gguf_vocab voc;
  memset(&voc, 0, sizeof voc);
  qt_gguf_writer *w = NULL;
  qt_st_model src;
  value_ctx vc = {s, c, NULL, false};
  float *buf = NULL;
  uint8_t *obuf = NULL;
  qt_status r = lora_only ? lora_tensors(m, s->lora, &l) : model_tensors(c, m, &l);
  if (r == QT_OK && !lora_only) r = qt_gguf_vocab_load(s->cfg.model.path, c->vocab_size, &voc);
  /* tokenizer_config.json add_prefix_space is copied by LlamaModel.set_vocab only */
  if (r == QT_OK && c->arch == QT_HF_QWEN2) voc.add_space_prefix = -1;
  if (r == QT_OK) r = qt_gguf_writer_init(out, &w);
  if (r == QT_OK) r = lora_only ? lora_kvs(s, w) : model_kvs(s, c, w, ty, &voc);
  type_state st = {ty, (int)c->num_hidden_layers, c->tie_word_embeddings, 0, 0};
  size_t max_values = 0, max_bytes = 0;
  for (size_t i = 0; r == QT_OK && i < l.n; i++) {
    out_tensor *t = &l.t[i];
    t->type = choose_type(&st, t);
    int64_t ne[2] = {t->cols ? t->cols : t->rows, t->rows};
    r = qt_gguf_add_tensor(w, t->name, t->cols ? 2 : 1, ne, t->type, &t->index);
    size_t nv = (size_t)(t->rows * (t->cols ? t->cols : 1));
    if (nv > max_values) max_values = nv;
    if (r == QT_OK && qt_gguf_tensor_bytes(w, t->index) > max_bytes) max_bytes = qt_gguf_tensor_bytes(w, t->index);
  }
  if (r == QT_OK && !lora_only && (!m || s->cfg.export_.merge_base == QT_MERGE_ORIGINAL)) {
    r = qt_st_model_open(s->cfg.model.path, &src);
    if (r == QT_OK) vc.src = &src;
  }
  if (r == QT_OK) {
    buf = malloc(max_values * sizeof *buf);
    obuf = malloc(max_bytes ? max_bytes : 1);
    if (!buf || !obuf) r = qt_fail(QT_ERR_NOMEM, "out of memory for a %zu-value tensor", max_values);
  }
  bool tty = isatty(2);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (size_t i = 0; r == QT_OK && i < l.n; i++) {
    const out_tensor *t = &l.t[i];
    r = tensor_values(&vc, t, buf);
    if (r == QT_OK) {
      int64_t ne0 = t->cols ? t->cols : t->rows, rows = t->cols ? t->rows : 1;
      convert_rows(t->type, buf, rows, ne0, obuf);
      r = qt_gguf_write_tensor(w, t->index, obuf, qt_gguf_tensor_bytes(w, t->index));
    }
    if (r != QT_OK) {
      qt_error_context("%s: tensor %s", out, t->name);
      break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "%sqlora-train: gguf [%zu/%zu] %-32s %-5s %6.1fs%s", tty ? "\r" : "", i + 1, l.n, t->name,
            qt_ggml_type_name(t->type), el, tty && i + 1 < l.n ? "" : "\n");
  }
  if (r == QT_OK) r = qt_gguf_writer_finish(w);
  if (r == QT_OK && vc.original_missing)
    QT_LOGW("the source checkpoint holds 4-bit weights: merged onto their dequantized values");
  if (r == QT_OK)
    QT_LOGI("wrote %s: %s, %zu tensors, gguf_type %s", out, lora_only ? "LoRA adapter" : "model", l.n, gguf_type_name(ty));
  if (vc.src) qt_st_model_close(&src);
  qt_gguf_writer_free(&w);
  qt_gguf_vocab_free(&voc);
  free(buf);
  free(obuf);
  free(l.t);
  return r;
}
