/* model/model.c — loading a Llama-family decoder and running it on the tape
 * (model.h documents the contract; formats.md section 5 the architecture). */
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "model/model_internal.h"

static const char *const PROJ_NAME[QT_PROJ_COUNT] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "qkv_proj", "gate_up_proj"};

const char *qt_proj_name(qt_proj p) {
  QT_ASSERT(p >= 0 && p < QT_PROJ_COUNT);
  return PROJ_NAME[p];
}

const char *qt_proj_block(qt_proj p) {
  return (p <= QT_PROJ_O || p == QT_PROJ_QKV) ? "self_attn" : "mlp";
}

qt_proj qt_proj_slot(qt_proj p) {
  return p == QT_PROJ_QKV ? QT_PROJ_Q : p == QT_PROJ_GATE_UP ? QT_PROJ_GATE : p;
}

bool qt_model_has_proj(const qt_model *m, qt_proj p) {
  return m->L > 0 && m->layers[0].proj[p].out > 0;
}

/* ---- loading ---------------------------------------------------------------- */

/* An fp32 copy of tensor `name`, which must have numel n and, when rows > 0,
 * shape (rows, cols) (1-D (cols) when rows == 0). */
static qt_status load_dense(const qt_st_model *st, const char *dir, const char *name,
                            int64_t rows, int64_t cols, float **out) {
  *out = NULL;
  const qt_st_entry *e = qt_st_model_find(st, name);
  if (!e)
    return qt_fail(QT_ERR_FORMAT, "%s: tensor %s is missing from the checkpoint; is this a "
                                  "complete Hugging Face model directory?", dir, name);
  bool ok = rows > 0 ? (e->ndim == 2 && e->shape[0] == rows && e->shape[1] == cols)
                     : (e->ndim == 1 && e->shape[0] == cols);
  if (!ok)
    return qt_fail(QT_ERR_FORMAT, "%s: tensor %s has shape [%lld%s%lld], config.json implies "
                                  "[%lld%s%lld]; the weights do not belong to this config",
                   dir, name, (long long)e->shape[0], e->ndim > 1 ? ", " : "",
                   e->ndim > 1 ? (long long)e->shape[1] : 0LL, (long long)(rows > 0 ? rows : cols),
                   rows > 0 ? ", " : "", rows > 0 ? (long long)cols : 0LL);
  if (e->dtype != QT_F32 && e->dtype != QT_F16 && e->dtype != QT_BF16)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: tensor %s is %s; weights must be F32, F16 or BF16 "
                                       "(or bitsandbytes 4-bit linears)",
                   dir, name, qt_dtype_name(e->dtype));
  int64_t n = (rows > 0 ? rows : 1) * cols;
  float *p = malloc((size_t)n * sizeof(float));
  if (!p) return qt_fail(QT_ERR_NOMEM, "%s: cannot allocate %lld floats for %s", dir, (long long)n, name);
  qt_status s = qt_st_entry_to_f32(e, p);
  /* the converted bytes leave the resident set: the mapped checkpoint never
   * adds up in RAM while the model is built one tensor at a time */
  qt_st_model_release(st, e);
  if (s != QT_OK) {
    free(p);
    return s;
  }
  *out = p;
  return QT_OK;
}

static qt_status load_linear(qt_model *m, const qt_st_model *st, const char *dir,
                             const qt_model_load_opts *o, qt_model_linear *lin, bool has_bias) {
  char key[160];
  snprintf(key, sizeof key, "%s.weight", lin->name);
  const qt_st_entry *e = qt_st_model_find(st, key);
  if (!e)
    return qt_fail(QT_ERR_FORMAT, "%s: tensor %s is missing from the checkpoint", dir, key);
  bool bnb = m->cfg.quant.present && e->dtype != QT_F32 && e->dtype != QT_F16 &&
             e->dtype != QT_BF16;
  char qs_key[200];
  snprintf(qs_key, sizeof qs_key, "%s.weight.quant_state.bitsandbytes__nf4", lin->name);
  if (m->cfg.quant.present && !bnb && qt_st_model_find(st, qs_key)) bnb = true;
  snprintf(qs_key, sizeof qs_key, "%s.weight.quant_state.bitsandbytes__fp4", lin->name);
  if (m->cfg.quant.present && !bnb && qt_st_model_find(st, qs_key)) bnb = true;
  if (bnb) {
    /* Pre-quantized: keep bitsandbytes' tensors as they are. */
    QT_TRY(qt_quant_weight_load_bnb(st, lin->name, &lin->q));
    if (lin->q.ndim != 2 || lin->q.shape[0] != lin->out || lin->q.shape[1] != lin->in) {
      qt_quant_weight_free(&lin->q);
      return qt_fail(QT_ERR_FORMAT, "%s: 4-bit weight %s does not have shape [%lld, %lld] "
                                    "(quant_state shape)", dir, lin->name,
                     (long long)lin->out, (long long)lin->in);
    }
    if (o->quant == QT_MODEL_QUANT_NONE) {
      lin->dense = malloc((size_t)(lin->out * lin->in) * sizeof(float));
      qt_status s = lin->dense ? qt_quant_weight_dequantize_f32(&lin->q, lin->dense, m->threads)
                               : qt_fail(QT_ERR_NOMEM, "%s: cannot allocate %s", dir, lin->name);
      qt_quant_weight_free(&lin->q);
      QT_TRY(s);
    } else {
      lin->quantized = true;
    }
  } else {
    float *w;
    QT_TRY(load_dense(st, dir, key, lin->out, lin->in, &w));
    if (o->quant == QT_MODEL_QUANT_NONE) {
      lin->dense = w;
    } else {
      /* One tensor at a time: this fp32 copy is freed before the next is read. */
      int64_t shape[2] = {lin->out, lin->in};
      qt_status s = qt_quant_weight_quantize(
          o->quant == QT_MODEL_QUANT_NF4 ? QT_QUANT_NF4 : QT_QUANT_FP4, o->blocksize,
          o->double_quant, e->dtype, 2, shape, w, m->threads, &lin->q);
      free(w);
      QT_TRY(s);
      lin->quantized = true;
    }
  }
  if (lin->quantized) {
    m->bytes_quant += (size_t)((lin->q.n + 1) / 2) +
                      (size_t)lin->q.nblocks * (lin->q.nested ? 1 : sizeof(float));
  } else {
    m->bytes_dense += (size_t)(lin->out * lin->in) * sizeof(float);
  }
  if (has_bias) {
    snprintf(key, sizeof key, "%s.bias", lin->name);
    QT_TRY(load_dense(st, dir, key, 0, lin->out, &lin->bias));
    m->bytes_dense += (size_t)lin->out * sizeof(float);
  }
  return QT_OK;
}

typedef struct {
  const char *name; /* after "layers.N." */
  int64_t n;
  float **dst;      /* the layer's pointer to the multiplier */
} norm_slot;

/* Norm nm->name (n): the stored weight, and the multiplier (gemma: 1 + w,
 * added in fp32 as Gemma2RMSNorm/Gemma3RMSNorm do: (1.0 + weight.float())). */
static qt_status load_norm(qt_model *m, const qt_st_model *st, const char *dir, qt_model_norm *nm,
                           int64_t n) {
  nm->n = n;
  QT_TRY(load_dense(st, dir, nm->name, 0, n, &nm->stored));
  m->n_norms++;
  m->bytes_dense += (size_t)n * sizeof(float);
  if (!m->cfg.norm_plus_one) {
    nm->w = nm->stored;
    return QT_OK;
  }
  nm->w = malloc((size_t)n * sizeof(float));
  if (!nm->w) return qt_fail(QT_ERR_NOMEM, "%s: cannot allocate %s", dir, nm->name);
  for (int64_t i = 0; i < n; i++) nm->w[i] = 1.0f + nm->stored[i];
  m->bytes_dense += (size_t)n * sizeof(float);
  return QT_OK;
}

qt_status qt_model_load(const char *dir, const qt_model_load_opts *opts, qt_model **out) {
  QT_ASSERT(dir && opts && out);
  *out = NULL;
  if (opts->quant != QT_MODEL_QUANT_NONE && !qt_quant_blocksize_valid(opts->blocksize))
    return qt_fail(QT_ERR_INVALID, "model.blocksize %d is not a power of two in 32..4096; use 64",
                   opts->blocksize);
  qt_model *m = calloc(1, sizeof *m);
  if (!m) return qt_fail(QT_ERR_NOMEM, "%s: cannot allocate the model", dir);
  m->threads = opts->threads;
  qt_st_model st;
  memset(&st, 0, sizeof st);
  bool st_open = false;
  qt_status s = qt_hf_config_load(dir, &m->cfg);
  if (s != QT_OK) goto fail;
  const qt_hf_config *c = &m->cfg;
  m->C = c->hidden_size;
  m->H = c->num_attention_heads;
  m->K = c->num_key_value_heads;
  m->D = c->head_dim;
  m->F = c->intermediate_size;
  m->V = c->vocab_size;
  m->L = c->num_hidden_layers;
  if ((s = qt_st_model_open(dir, &st)) != QT_OK) goto fail;
  st_open = true;
  m->layers = calloc((size_t)m->L, sizeof *m->layers);
  m->inv_freq = malloc((size_t)(m->D / 2) * sizeof(float));
  m->inv_freq_local = malloc((size_t)(m->D / 2) * sizeof(float));
  if (!m->layers || !m->inv_freq || !m->inv_freq_local) {
    s = qt_fail(QT_ERR_NOMEM, "%s: cannot allocate %lld layers", dir, (long long)m->L);
    goto fail;
  }
  const char *pre = c->weight_prefix[0] ? c->weight_prefix : "model.";
  char key[160];
  snprintf(key, sizeof key, "%sembed_tokens.weight", pre);
  if ((s = load_dense(&st, dir, key, m->V, m->C, &m->embed)) != QT_OK) goto fail;
  m->bytes_dense += (size_t)(m->V * m->C) * sizeof(float);
  if (c->tie_word_embeddings) {
    m->lm_head = m->embed;
  } else {
    if ((s = load_dense(&st, dir, "lm_head.weight", m->V, m->C, &m->lm_head)) != QT_OK) goto fail;
    m->bytes_dense += (size_t)(m->V * m->C) * sizeof(float);
  }
  /* every norm: input, [attn_out], mlp_in, [mlp_out], [q, k] per layer, then the final one */
  int per_layer_norms = 2 + (c->sandwich_norm ? 2 : 0) + (c->qk_norm ? 2 : 0);
  m->norms = calloc((size_t)(m->L * per_layer_norms + 1), sizeof *m->norms);
  if (!m->norms) {
    s = qt_fail(QT_ERR_NOMEM, "%s: cannot allocate the norms", dir);
    goto fail;
  }
  int64_t HD = m->H * m->D, KD = m->K * m->D;
  const int64_t outs[QT_PROJ_COUNT] = {HD, KD, KD, m->C, m->F, m->F, m->C, HD + 2 * KD, 2 * m->F};
  const int64_t ins[QT_PROJ_COUNT] = {m->C, m->C, m->C, HD, m->C, m->C, m->F, m->C, m->C};
  const bool bias[QT_PROJ_COUNT] = {c->q_bias, c->k_bias, c->v_bias, c->o_bias,
                                    c->mlp_bias, c->mlp_bias, c->mlp_bias, false, false};
  bool has[QT_PROJ_COUNT];
  for (int p = 0; p < QT_PROJ_COUNT; p++) has[p] = true;
  if (c->fused_qkv) has[QT_PROJ_Q] = has[QT_PROJ_K] = has[QT_PROJ_V] = false;
  else has[QT_PROJ_QKV] = false;
  if (c->fused_gate_up) has[QT_PROJ_GATE] = has[QT_PROJ_UP] = false;
  else has[QT_PROJ_GATE_UP] = false;
  for (int64_t l = 0; l < m->L; l++) {
    qt_model_layer *ly = &m->layers[l];
    norm_slot nl[6];
    int k = 0;
    nl[k++] = (norm_slot){"input_layernorm", m->C, &ly->input_norm};
    if (c->sandwich_norm) {
      nl[k++] = (norm_slot){"post_attention_layernorm", m->C, &ly->attn_out_norm};
      nl[k++] = (norm_slot){"pre_feedforward_layernorm", m->C, &ly->post_norm};
      nl[k++] = (norm_slot){"post_feedforward_layernorm", m->C, &ly->mlp_out_norm};
    } else {
      nl[k++] = (norm_slot){"post_attention_layernorm", m->C, &ly->post_norm};
    }
    if (c->qk_norm) {
      nl[k++] = (norm_slot){"self_attn.q_norm", m->D, &ly->q_norm};
      nl[k++] = (norm_slot){"self_attn.k_norm", m->D, &ly->k_norm};
    }
    for (int i = 0; i < k; i++) {
      qt_model_norm *nm = &m->norms[m->n_norms];
      snprintf(nm->name, sizeof nm->name, "%slayers.%lld.%s.weight", pre, (long long)l, nl[i].name);
      if ((s = load_norm(m, &st, dir, nm, nl[i].n)) != QT_OK) goto fail;
      *nl[i].dst = nm->w;
    }
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      if (!has[p]) continue;
      qt_model_linear *lin = &ly->proj[p];
      lin->out = outs[p];
      lin->in = ins[p];
      snprintf(lin->name, sizeof lin->name, "%slayers.%lld.%s.%s", pre, (long long)l,
               qt_proj_block((qt_proj)p), PROJ_NAME[p]);
      if ((s = load_linear(m, &st, dir, opts, lin, bias[p])) != QT_OK) goto fail;
    }
  }
  {
    qt_model_norm *nm = &m->norms[m->n_norms];
    snprintf(nm->name, sizeof nm->name, "%snorm.weight", pre);
    if ((s = load_norm(m, &st, dir, nm, m->C)) != QT_OK) goto fail;
    m->final_norm = nm->w;
  }
  qt_model_internal_inv_freq(m->inv_freq, (int)c->rope.type, c->rope.theta, c->rope.factor,
                             c->rope.low_freq_factor, c->rope.high_freq_factor,
                             (double)c->rope.original_max_position_embeddings, m->D);
  if (c->has_rope_local) {
    const qt_hf_rope *r = &c->rope_local;
    qt_model_internal_inv_freq(m->inv_freq_local, (int)r->type, r->theta, r->factor,
                               r->low_freq_factor, r->high_freq_factor,
                               (double)r->original_max_position_embeddings, m->D);
  } else {
    memcpy(m->inv_freq_local, m->inv_freq, (size_t)(m->D / 2) * sizeof(float));
  }
  qt_st_model_close(&st);
  const qt_model_linear *l0 = &m->layers[0].proj[QT_PROJ_O];
  if (c->quant.present && l0->quantized &&
      (l0->q.type != (opts->quant == QT_MODEL_QUANT_NF4 ? QT_QUANT_NF4 : QT_QUANT_FP4) ||
       l0->q.blocksize != opts->blocksize || l0->q.nested != opts->double_quant))
    QT_LOGW("model: %s is pre-quantized (%s, blocksize %d%s); its 4-bit weights are used as "
            "stored, not re-quantized to model.quant / blocksize / double_quant",
            dir, qt_quant_type_name(l0->q.type), l0->q.blocksize,
            l0->q.nested ? ", double quant" : "");
  QT_LOGI("model: %s %s, %lld layers, hidden %lld, heads %lld/%lld x %lld, mlp %lld, vocab %lld, "
          "base linears %s; weights %.2f MiB dense + %.2f MiB 4-bit",
          dir, qt_hf_arch_name(c->arch), (long long)m->L, (long long)m->C, (long long)m->H,
          (long long)m->K, (long long)m->D, (long long)m->F, (long long)m->V,
          m->layers[0].proj[QT_PROJ_O].quantized ? "4-bit" : "dense fp32",
          (double)m->bytes_dense / 1048576.0, (double)m->bytes_quant / 1048576.0);
  *out = m;
  return QT_OK;
fail:
  if (st_open) qt_st_model_close(&st);
  qt_model_free(&m);
  return s;
}

void qt_model_free(qt_model **mp) {
  if (!mp || !*mp) return;
  qt_model *m = *mp;
  if (m->layers) {
    for (int64_t l = 0; l < m->L; l++) {
      qt_model_layer *ly = &m->layers[l];
      for (int p = 0; p < QT_PROJ_COUNT; p++) {
        free(ly->proj[p].dense);
        free(ly->proj[p].bias);
        if (ly->proj[p].quantized) qt_quant_weight_free(&ly->proj[p].q);
      }
    }
  }
  free(m->layers);
  if (m->lm_head != m->embed) free(m->lm_head);
  free(m->embed);
  for (int64_t i = 0; i < m->n_norms; i++) {
    if (m->norms[i].w != m->norms[i].stored) free(m->norms[i].w);
    free(m->norms[i].stored);
  }
  free(m->norms);
  free(m->inv_freq);
  free(m->inv_freq_local);
  qt_hf_config_free(&m->cfg);
  free(m);
  *mp = NULL;
}

qt_status qt_model_linear_weight(const qt_model *m, const qt_model_linear *lin, float *w) {
  if (!lin->quantized) {
    memcpy(w, lin->dense, (size_t)(lin->out * lin->in) * sizeof(float));
    return QT_OK;
  }
  return qt_quant_weight_dequantize_f32(&lin->q, w, m->threads);
}

void qt_model_targets_from_labels(const int32_t *labels, const int32_t *doc, int64_t B,
                                  int64_t T, int32_t *targets) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      int64_t n = b * T + t;
      targets[n] = (t + 1 < T && doc[n + 1] == doc[n]) ? labels[n + 1] : -100;
    }
}

/* ---- the tape --------------------------------------------------------------- */

typedef struct {
  const qt_model *m;
  const qt_model_linear *lin;
  float *absmax;           /* the tape's scratch, (max nblocks) */
} fill_ctx;

typedef struct {
  qt_model_tape *mt;
  int layer;
} layer_ctx;

struct qt_model_tape {
  const qt_model *m;
  qt_tape *t;
  qt_model_tape_opts opts;
  qt_tape_config tcfg;
  size_t gemm_kernel_bytes;               /* resident set the bf16 GEMMs' kernels added (measured) */
  int32_t embed, lm_head, final_norm;
  int32_t *norm_in, *norm_post;           /* (L) */
  int32_t (*norm_x)[4];                   /* (L, {attn_out, mlp_out, q, k}) or -1 */
  int32_t (*w)[QT_PROJ_COUNT];            /* (L, 7) dense weight ids or -1 */
  int32_t (*bias)[QT_PROJ_COUNT];         /* (L, 7) bias ids or -1 */
  fill_ctx (*fill)[QT_PROJ_COUNT];        /* (L, 7) */
  float *absmax;                          /* (max nblocks + 1) DQ-decompressed absmax scratch */
  layer_ctx *lctx;                        /* (L) */
  /* the batch being recorded (borrowed for one call) */
  const qt_model_adapter *adapter;
  const qt_model_batch *batch;
};

qt_tape *qt_model_tape_get(qt_model_tape *mt) { return mt->t; }
const qt_model *qt_model_tape_model(const qt_model_tape *mt) { return mt->m; }

/* qt_quant_weight_dequantize_f32 without its per-call absmax allocation
 * (nothing is allocated inside the step loop): the double-quantized absmax is
 * decompressed into the tape's scratch, then the 4-bit codes are expanded. */
static qt_status fill_weight(void *ctx, void *dst) {
  const fill_ctx *f = ctx;
  qt_model_internal_dequant(&f->lin->q, f->absmax, dst, f->m->threads);
  return QT_OK;
}

/* The same values rounded to bf16 in one pass (quant.h
 * qt_quant_4bit_dequantize_bf16: code * absmax in fp32, then round to nearest
 * even, i.e. fill_weight's values converted): a gemm_bf16 tape's weight
 * without the fp32 copy. */
static qt_status fill_weight_bf16(void *ctx, void *dst) {
  const fill_ctx *f = ctx;
  const qt_quant_weight *w = &f->lin->q;
  const float *am = w->absmax;
  if (w->nested) {
    qt_quant_weight_absmax(w, f->absmax);
    am = f->absmax;
  }
  qt_quant_4bit_dequantize_bf16(w->type, w->packed, am, w->n, w->blocksize, dst, f->m->threads);
  return QT_OK;
}

static qt_status record_trunk(qt_model_tape *mt, const qt_model_adapter *adapter,
                              const qt_model_batch *b, int32_t *x);

/* Registers the model's frozen tensors on mt->t (the same ids on every tape). */
static qt_status register_frozen(qt_model_tape *mt) {
  const qt_model *m = mt->m;
  QT_TRY(qt_tape_frozen(mt->t, "embed_tokens", m->embed, m->V, m->C, &mt->embed));
  if (m->lm_head == m->embed)
    mt->lm_head = mt->embed;
  else
    QT_TRY(qt_tape_frozen(mt->t, "lm_head", m->lm_head, m->V, m->C, &mt->lm_head));
  QT_TRY(qt_tape_frozen(mt->t, "norm", m->final_norm, 1, m->C, &mt->final_norm));
  for (int64_t l = 0; l < m->L; l++) {
    const qt_model_layer *ly = &m->layers[l];
    mt->lctx[l] = (layer_ctx){mt, (int)l};
    QT_TRY(qt_tape_frozen(mt->t, "input_layernorm", ly->input_norm, 1, m->C, &mt->norm_in[l]));
    QT_TRY(qt_tape_frozen(mt->t, "post_attention_layernorm", ly->post_norm, 1, m->C,
                          &mt->norm_post[l]));
    const float *extra[4] = {ly->attn_out_norm, ly->mlp_out_norm, ly->q_norm, ly->k_norm};
    static const char *const extra_name[4] = {"attn_out_norm", "mlp_out_norm", "q_norm", "k_norm"};
    for (int i = 0; i < 4; i++) {
      mt->norm_x[l][i] = -1;
      if (extra[i])
        QT_TRY(qt_tape_frozen(mt->t, extra_name[i], extra[i], 1, i < 2 ? m->C : m->D,
                              &mt->norm_x[l][i]));
    }
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      const qt_model_linear *lin = &ly->proj[p];
      mt->w[l][p] = mt->bias[l][p] = -1;
      if (lin->out == 0) continue;
      mt->fill[l][p] = (fill_ctx){m, lin, mt->absmax};
      if (!lin->quantized)
        QT_TRY(qt_tape_frozen(mt->t, lin->name, lin->dense, lin->out, lin->in, &mt->w[l][p]));
      if (lin->bias)
        QT_TRY(qt_tape_frozen(mt->t, lin->name, lin->bias, 1, lin->out, &mt->bias[l][p]));
    }
  }
  return QT_OK;
}

/* The worst-case LoRA of the measuring step: rank max_lora_rank on all seven
 * projections, with dropout unless the caller rules it out. */
typedef struct {
  int32_t (*ids)[QT_PROJ_COUNT][2]; /* (L, 7, {A, B}) */
  bool dropout;
} measure_lora;

/* Never read: a measuring tape computes nothing (autograd/tape.h). */
static float measure_dummy[1];
static uint8_t measure_dummy_mask[1];

static qt_status measure_branch(void *ctx, qt_tape *t, int layer, qt_proj proj, int64_t N,
                                qt_tape_lora *br, bool *has) {
  (void)t;
  (void)N;
  const measure_lora *ml = ctx;
  *br = (qt_tape_lora){.A = ml->ids[layer][proj][0], .B = ml->ids[layer][proj][1],
                       .scale = 1.0, .mask = ml->dropout ? measure_dummy_mask : NULL,
                       .keep_scale = 1.0};
  *has = true;
  return QT_OK;
}

/* Arena sizes: one step of the largest batch (max_B rows of max_T tokens,
 * targets everywhere) recorded on a measuring tape (autograd/tape.h
 * qt_tape_init_measure) with the same checkpoint setting, forward + backward
 * (forward only: no backward, no gradient arena). Exact, before step 0. */
static qt_status measure_arenas(qt_model_tape *mt) {
  const qt_model *m = mt->m;
  int64_t N = mt->opts.max_B * mt->opts.max_T, R = mt->opts.max_lora_rank;
  measure_lora ml = {.ids = NULL, .dropout = !mt->opts.lora_no_dropout};
  int32_t *ints = calloc((size_t)(4 * N), sizeof(int32_t));
  if (R > 0) ml.ids = calloc((size_t)m->L, sizeof *ml.ids);
  if (!ints || (R > 0 && !ml.ids)) {
    free(ints);
    free(ml.ids);
    return qt_fail(QT_ERR_NOMEM, "model: cannot allocate the measuring batch");
  }
  qt_status s = qt_tape_init_measure(&mt->t, QT_F32, &mt->tcfg);
  if (s == QT_OK) s = register_frozen(mt);
  for (int64_t l = 0; l < m->L && R > 0 && s == QT_OK; l++)
    for (int p = 0; p < QT_PROJ_COUNT && s == QT_OK; p++) {
      const qt_model_linear *lin = &m->layers[l].proj[p];
      if (lin->out == 0) continue;
      s = qt_tape_trainable(mt->t, "lora_A", measure_dummy, measure_dummy, R, lin->in,
                            &ml.ids[l][p][0]);
      if (s == QT_OK)
        s = qt_tape_trainable(mt->t, "lora_B", measure_dummy, measure_dummy, lin->out, R,
                              &ml.ids[l][p][1]);
    }
  qt_model_adapter ad = {.ctx = &ml, .branch = measure_branch};
  qt_model_batch b = {.ids = ints, .targets = ints + N, .pos = ints + 2 * N, .doc = ints + 3 * N,
                      .B = mt->opts.max_B, .T = mt->opts.max_T};
  int32_t x, loss;
  double sum;
  int64_t cnt;
  if (s == QT_OK) s = record_trunk(mt, R > 0 ? &ad : NULL, &b, &x);
  if (s == QT_OK)
    s = qt_tape_cross_entropy_ex(mt->t, x, mt->lm_head, b.targets, m->cfg.final_softcap, &loss,
                                 &sum, &cnt);
  if (s == QT_OK && !mt->opts.forward_only) s = qt_tape_backward(mt->t, loss, 1.0);
  if (s == QT_OK) {
    qt_tape_stats st = qt_tape_get_stats(mt->t);
    mt->tcfg.act_bytes = st.act_peak;
    mt->tcfg.grad_bytes = mt->opts.forward_only ? QT_ARENA_ALIGN : st.grad_peak;
  }
  qt_tape_free(&mt->t);
  free(ints);
  free(ml.ids);
  return s;
}

qt_status qt_model_tape_init(const qt_model *m, const qt_model_tape_opts *opts,
                             qt_model_tape **out) {
  QT_ASSERT(m && opts && out && opts->max_B > 0 && opts->max_T > 0);
  *out = NULL;
  qt_model_tape *mt = calloc(1, sizeof *mt);
  if (!mt) return qt_fail(QT_ERR_NOMEM, "model: cannot allocate the tape context");
  mt->m = m;
  mt->opts = *opts;
  if (mt->opts.ce_chunk_rows <= 0) mt->opts.ce_chunk_rows = 256;
  int64_t L = m->L;
  /* Tensors and nodes per layer: ~20 ops; checkpoint recompute records one
   * layer again inside backward. */
  mt->tcfg.max_nodes = (int32_t)(64 * (L + 2) + 64);
  mt->tcfg.max_tensors = (int32_t)(3 + L * 24 + 2 * L * QT_PROJ_COUNT + 96 * (L + 2) + 64);
  mt->tcfg.ce_chunk_rows = mt->opts.ce_chunk_rows;
  /* Training tapes form the cross-entropy input gradient in forward (no logits
   * recompute in backward, autograd/tape.h); eval tapes skip that buffer. */
  mt->tcfg.ce_grad_in_forward = !mt->opts.forward_only;
  mt->tcfg.gemm_bf16 = mt->opts.gemm_bf16;
  mt->norm_in = calloc((size_t)L, sizeof *mt->norm_in);
  mt->norm_post = calloc((size_t)L, sizeof *mt->norm_post);
  mt->norm_x = calloc((size_t)L, sizeof *mt->norm_x);
  mt->w = calloc((size_t)L, sizeof *mt->w);
  mt->bias = calloc((size_t)L, sizeof *mt->bias);
  mt->fill = calloc((size_t)L, sizeof *mt->fill);
  mt->lctx = calloc((size_t)L, sizeof *mt->lctx);
  qt_status s = QT_OK;
  int64_t max_nb = 0;
  for (int64_t l = 0; l < L; l++)
    for (int p = 0; p < QT_PROJ_COUNT; p++)
      if (m->layers[l].proj[p].quantized && m->layers[l].proj[p].q.nblocks > max_nb)
        max_nb = m->layers[l].proj[p].q.nblocks;
  mt->absmax = malloc((size_t)(max_nb + 1) * sizeof(float));
  if (!mt->norm_in || !mt->norm_post || !mt->norm_x || !mt->w || !mt->bias || !mt->fill || !mt->lctx ||
      !mt->absmax)
    s = qt_fail(QT_ERR_NOMEM, "model: cannot allocate the tape context");
  /* The measuring step creates the bf16 GEMMs' oneDNN primitives (their
   * generated kernels, ~0.3 MiB a shape; autograd/gemm_bf16_cpu.c): no formula
   * gives their size, so the plan takes what the resident set grew by. */
  size_t rss0 = mt->opts.gemm_bf16 ? qt_mem_rss() : 0;
  if (s == QT_OK) s = measure_arenas(mt);
  if (mt->opts.gemm_bf16) {
    size_t rss1 = qt_mem_rss();
    mt->gemm_kernel_bytes = rss1 > rss0 ? rss1 - rss0 : 0;
  }
  if (s == QT_OK) s = qt_tape_init(&mt->t, QT_F32, &mt->tcfg);
  if (s == QT_OK) s = register_frozen(mt);
  if (s != QT_OK) {
    qt_model_tape_free(&mt);
    return s;
  }
  *out = mt;
  return QT_OK;
}

void qt_model_tape_free(qt_model_tape **p) {
  if (!p || !*p) return;
  qt_model_tape *mt = *p;
  qt_tape_free(&mt->t);
  free(mt->norm_in);
  free(mt->norm_post);
  free(mt->norm_x);
  free(mt->w);
  free(mt->bias);
  free(mt->fill);
  free(mt->lctx);
  free(mt->absmax);
  free(mt);
  *p = NULL;
}

void qt_model_tape_arena_bytes(const qt_model_tape *mt, size_t *act, size_t *grad) {
  *act = mt->tcfg.act_bytes;
  *grad = mt->tcfg.grad_bytes;
}

/* One tensor of the load sequence: while it is read the process holds what
 * came before (*held), its checkpoint pages (src) and its conversion buffers
 * (work); afterwards it keeps `keep` bytes. */
static void load_step(size_t *held, size_t *peak, size_t src, size_t work, size_t keep) {
  if (*held + src + work > *peak) *peak = *held + src + work;
  *held += keep;
}

/* The model's own transient while it loads (qt_model_load above, in its
 * order: embeddings, lm_head, then each layer's linears), in bytes over the
 * weights it finally holds: while tensor i is read, the process holds the
 * weights loaded before it, the checkpoint pages of tensor i (mapped and
 * faulted in by the copy; qt_st_model_release drops them right after) and
 * what it is converted into (a dense fp32 copy; for a 4-bit linear also the
 * fp32 copy it is quantized from and the fp32 absmax of the double
 * quantization, quant/quant_weight.c). The largest such sum minus the final
 * weights is the load phase's extra. The norms (a few KiB a layer) are
 * counted as held from the start; the checkpoint's element size comes from
 * config.json's dtype (4 bytes when absent: the larger case). */
static size_t load_extra_bytes(const qt_model *m) {
  size_t src_el = m->cfg.has_dtype ? qt_dtype_size(m->cfg.dtype) : 4;
  size_t final = m->bytes_dense + m->bytes_quant, held = 0, peak = 0;
  for (int64_t k = 0; k < m->n_norms; k++) /* stored, and 1 + stored where that is the multiplier */
    held += (size_t)m->norms[k].n * (m->norms[k].w != m->norms[k].stored ? 8 : 4);
  size_t vc = (size_t)(m->V * m->C);
  load_step(&held, &peak, vc * src_el, vc * 4, vc * 4); /* embed_tokens */
  if (m->lm_head != m->embed) load_step(&held, &peak, vc * src_el, vc * 4, vc * 4);
  for (int64_t l = 0; l < m->L; l++)
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      const qt_model_linear *lin = &m->layers[l].proj[p];
      if (lin->out == 0) continue;
      size_t n = (size_t)(lin->out * lin->in), bias = lin->bias ? (size_t)lin->out * 4 : 0;
      if (!lin->quantized) {
        load_step(&held, &peak, n * src_el, n * 4, n * 4 + bias);
        continue;
      }
      size_t q = (size_t)((lin->q.n + 1) / 2) + (size_t)lin->q.nblocks * (lin->q.nested ? 1 : sizeof(float));
      if (m->cfg.quant.present) /* pre-quantized: its 4-bit tensors are copied as stored */
        load_step(&held, &peak, q, q, q + bias);
      else
        load_step(&held, &peak, n * src_el, n * 4 + (size_t)lin->q.nblocks * 4 + q, q + bias);
    }
  return peak > final ? peak - final : 0;
}

qt_status qt_model_plan_add(const qt_model *m, const qt_model_tape *mt, qt_mem_plan *plan) {
  QT_TRY(qt_mem_plan_add(plan, "weights (dense fp32)", "cpu", m->bytes_dense));
  QT_TRY(qt_mem_plan_add(plan, "weights (4-bit)", "cpu", m->bytes_quant));
  QT_TRY(qt_mem_plan_add_phase(plan, "model load (checkpoint pages, copies)", "cpu", load_extra_bytes(m),
                               QT_MEM_LOAD));
  if (!mt) return QT_OK;
  if (mt->gemm_kernel_bytes)
    QT_TRY(qt_mem_plan_add_phase(plan, "bf16 GEMM kernels (oneDNN, measured)", "cpu",
                                 mt->gemm_kernel_bytes, QT_MEM_RUN));
  QT_TRY(qt_mem_plan_add_phase(plan, "tape activations", "cpu", mt->tcfg.act_bytes, QT_MEM_RUN));
  return qt_mem_plan_add_phase(plan, "tape gradients", "cpu", mt->tcfg.grad_bytes, QT_MEM_RUN);
}

qt_status qt_model_print_plan(const qt_model *m, const qt_model_tape *mt, FILE *f) {
  qt_mem_plan plan;
  qt_mem_plan_init(&plan);
  qt_status s = qt_model_plan_add(m, mt, &plan);
  if (s == QT_OK) qt_mem_plan_print(&plan, f);
  qt_mem_plan_free(&plan);
  return s;
}

/* ---- recording ---------------------------------------------------------------- */

static qt_status linear(qt_model_tape *mt, int layer, qt_proj p, int32_t x, int32_t *y) {
  const qt_model_linear *lin = &mt->m->layers[layer].proj[p];
  qt_tape_lora br;
  bool has = false;
  if (mt->adapter && mt->adapter->branch)
    QT_TRY(mt->adapter->branch(mt->adapter->ctx, mt->t, layer, p, qt_tape_rows(mt->t, x), &br,
                               &has));
  const qt_tape_lora *lp = has ? &br : NULL;
  if (!lin->quantized) return qt_tape_linear(mt->t, x, mt->w[layer][p], mt->bias[layer][p], lp, y);
  qt_tape_weight_src src = {.rows = lin->out, .cols = lin->in, .fill = fill_weight,
                            .ctx = &mt->fill[layer][p], .name = lin->name,
                            .fill_bf16 = fill_weight_bf16};
  return qt_tape_linear_src(mt->t, x, &src, mt->bias[layer][p], lp, y);
}

/* x -> RMSNorm(x) * w of norm_x slot i when the family has that norm (over
 * heads of D for q/k), else x itself. */
static qt_status opt_norm(qt_model_tape *mt, int l, int i, int32_t x, int64_t heads,
                          int32_t *out) {
  int32_t w = mt->norm_x[l][i];
  double eps = mt->m->cfg.rms_norm_eps;
  if (w < 0) {
    *out = x;
    return QT_OK;
  }
  if (heads > 0) return qt_tape_rmsnorm_heads(mt->t, x, w, eps, heads, out);
  return qt_tape_rmsnorm(mt->t, x, w, eps, out);
}

/* One decoder layer (transformers LlamaDecoderLayer.forward, with the family
 * variations of model.h: fused projections, q/k norms, window, soft-cap,
 * sandwich norms, GeGLU). */
static qt_status decoder_layer(qt_tape *t, void *ctx, int32_t in, int32_t *out) {
  const layer_ctx *lc = ctx;
  qt_model_tape *mt = lc->mt;
  const qt_model *m = mt->m;
  const qt_hf_config *c = &m->cfg;
  const qt_model_batch *b = mt->batch;
  int l = lc->layer;
  double eps = c->rms_norm_eps;
  int64_t HD = m->H * m->D, KD = m->K * m->D;
  int32_t n1, q, k, v, qr, kr, a, o, h, n2, g, u, sw, d;
  QT_TRY(qt_tape_rmsnorm(t, in, mt->norm_in[l], eps, &n1));
  if (c->fused_qkv) {
    /* modeling_phi3.py Phi3Attention: qkv = qkv_proj(x), split q | k | v */
    int32_t qkv;
    QT_TRY(linear(mt, l, QT_PROJ_QKV, n1, &qkv));
    QT_TRY(qt_tape_slice_cols(t, qkv, 0, HD, &q));
    QT_TRY(qt_tape_slice_cols(t, qkv, HD, KD, &k));
    QT_TRY(qt_tape_slice_cols(t, qkv, HD + KD, KD, &v));
  } else {
    QT_TRY(linear(mt, l, QT_PROJ_Q, n1, &q));
    QT_TRY(linear(mt, l, QT_PROJ_K, n1, &k));
    QT_TRY(linear(mt, l, QT_PROJ_V, n1, &v));
  }
  QT_TRY(opt_norm(mt, l, 2, q, m->H, &q));
  QT_TRY(opt_norm(mt, l, 3, k, m->K, &k));
  int64_t window = c->layer_window ? c->layer_window[l] : 0;
  const float *inv_freq = window > 0 ? m->inv_freq_local : m->inv_freq;
  QT_TRY(qt_tape_rope(t, q, m->H, m->D, b->pos, inv_freq, &qr));
  QT_TRY(qt_tape_rope(t, k, m->K, m->D, b->pos, inv_freq, &kr));
  qt_att_opts ao = {.scale = c->attn_scale, .window = window, .softcap = c->attn_softcap};
  QT_TRY(qt_tape_attention_ex(t, qr, kr, v, b->B, b->T, m->H, m->K, m->D, b->doc, &ao, &a));
  QT_TRY(linear(mt, l, QT_PROJ_O, a, &o));
  QT_TRY(opt_norm(mt, l, 0, o, 0, &o));
  QT_TRY(qt_tape_add(t, in, o, &h));
  QT_TRY(qt_tape_rmsnorm(t, h, mt->norm_post[l], eps, &n2));
  if (c->fused_gate_up) {
    /* modeling_phi3.py Phi3MLP: gate, up = gate_up_proj(x).chunk(2) */
    int32_t gu;
    QT_TRY(linear(mt, l, QT_PROJ_GATE_UP, n2, &gu));
    QT_TRY(qt_tape_slice_cols(t, gu, 0, m->F, &g));
    QT_TRY(qt_tape_slice_cols(t, gu, m->F, m->F, &u));
  } else {
    QT_TRY(linear(mt, l, QT_PROJ_GATE, n2, &g));
    QT_TRY(linear(mt, l, QT_PROJ_UP, n2, &u));
  }
  if (c->act == QT_HF_ACT_GELU_TANH)
    QT_TRY(qt_tape_geglu(t, g, u, &sw));
  else
    QT_TRY(qt_tape_swiglu(t, g, u, &sw));
  QT_TRY(linear(mt, l, QT_PROJ_DOWN, sw, &d));
  QT_TRY(opt_norm(mt, l, 1, d, 0, &d));
  return qt_tape_add(t, h, d, out);
}

static qt_status check_batch(const qt_model_tape *mt, const qt_model_batch *b) {
  const qt_model *m = mt->m;
  if (b->B < 1 || b->T < 1 || b->B * b->T > mt->opts.max_B * mt->opts.max_T ||
      b->T > mt->opts.max_T)
    return qt_fail(QT_ERR_INVALID, "model: batch %lld x %lld exceeds the tape's %lld x %lld",
                   (long long)b->B, (long long)b->T, (long long)mt->opts.max_B,
                   (long long)mt->opts.max_T);
  int64_t N = b->B * b->T;
  for (int64_t n = 0; n < N; n++) {
    if (b->ids[n] < 0 || b->ids[n] >= m->V)
      return qt_fail(QT_ERR_INVALID, "model: token id %d at %lld is outside the vocabulary "
                                     "(%lld); tokenizer and model do not match",
                     (int)b->ids[n], (long long)n, (long long)m->V);
    if (b->targets && b->targets[n] != -100 && (b->targets[n] < 0 || b->targets[n] >= m->V))
      return qt_fail(QT_ERR_INVALID, "model: target %d at %lld is outside the vocabulary",
                     (int)b->targets[n], (long long)n);
    if (b->pos[n] < 0 || b->pos[n] >= m->cfg.max_position_embeddings)
      return qt_fail(QT_ERR_INVALID, "model: position %d is beyond max_position_embeddings %lld",
                     (int)b->pos[n], (long long)m->cfg.max_position_embeddings);
  }
  return QT_OK;
}

/* Records embedding, layers and the final norm; *x = the normed hidden (N, C). */
static qt_status record_trunk(qt_model_tape *mt, const qt_model_adapter *adapter,
                              const qt_model_batch *b, int32_t *x) {
  mt->adapter = adapter;
  mt->batch = b;
  qt_tape *t = mt->t;
  qt_tape_reset(t);
  int32_t h;
  QT_TRY(qt_tape_embedding(t, mt->embed, b->ids, b->B * b->T, &h));
  /* modeling_gemma2.py: hidden * tensor(hidden_size ** 0.5, dtype) */
  if (mt->m->cfg.embed_scale) QT_TRY(qt_tape_scale(t, h, (double)(float)sqrt((double)mt->m->C), &h));
  for (int64_t l = 0; l < mt->m->L; l++)
    QT_TRY(qt_tape_layer(t, decoder_layer, &mt->lctx[l], h, mt->opts.checkpoint, &h));
  return qt_tape_rmsnorm(t, h, mt->final_norm, mt->m->cfg.rms_norm_eps, x);
}

qt_status qt_model_forward_backward(qt_model_tape *mt, const qt_model_adapter *adapter,
                                    const qt_model_batch *b, bool backward, double dloss,
                                    double *loss_sum, int64_t *count) {
  QT_ASSERT(b->targets != NULL);
  QT_ASSERTF(!(backward && mt->opts.forward_only),
             "model: backward on a tape made with forward_only");
  int32_t x, loss;
  QT_TRY(check_batch(mt, b));
  QT_TRY(record_trunk(mt, adapter, b, &x));
  QT_TRY(qt_tape_cross_entropy_ex(mt->t, x, mt->lm_head, b->targets, mt->m->cfg.final_softcap,
                                  &loss, loss_sum, count));
  if (backward) QT_TRY(qt_tape_backward(mt->t, loss, dloss));
  return QT_OK;
}

qt_status qt_model_logits(qt_model_tape *mt, const qt_model_adapter *adapter,
                          const qt_model_batch *b, float *logits) {
  int32_t x;
  QT_TRY(check_batch(mt, b));
  QT_TRY(record_trunk(mt, adapter, b, &x));
  qt_model_internal_logits(logits, qt_tape_data(mt->t, x), mt->m->lm_head, b->B * b->T,
                           mt->m->C, mt->m->V, mt->m->cfg.final_softcap);
  return QT_OK;
}
