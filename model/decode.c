/* model/decode.c — incremental decoding with a KV cache, and `generate`
 * (model.h documents the contract). The per-row math is decoder_layer's
 * (model.c), through the same CPU kernels (model_internal.h); only attention
 * differs in form: one query row against the cached keys, in plain loops with
 * the numerics of the reference kernel (autograd/kernels/attention_cpu.inc
 * attention_forward_ref: scores in fp32, max, exp and sum in double). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "quant/gemv.h"
#include "model/model.h"
#include "model/model_internal.h"
#include "model/sample.h"

/* One adapted linear, resolved from the adapter once. */
typedef struct {
  const float *A, *B; /* (R, In), (Out, R), the tape's fp32 compute copies */
  int64_t R;
  double scale;
} decode_lora;

struct qt_model_decoder {
  const qt_model *m;
  int64_t cap, max_rows, len;
  decode_lora (*lora)[QT_PROJ_COUNT]; /* (L, 7); A == NULL: no branch */
  int64_t max_rank;
  /* carved from `block` */
  float *kcache, *vcache; /* (L, cap, K, D) each, keys after RoPE */
  float *h;               /* (max_rows, C) residual stream */
  float *xn;              /* (max_rows, C) normed input of a block */
  float *q;               /* (max_rows, H*D) queries after RoPE */
  float *att;             /* (max_rows, H*D) attention output */
  float *y;               /* (max_rows, C) o_proj / down_proj output */
  float *g, *u, *sw;      /* (max_rows, F) gate, up, silu(gate) * up */
  float *rstd;            /* (max_rows * H) */
  float *fz;              /* (max_rows, max(H*D + 2*K*D, 2*F)) a fused qkv / gate_up output
                           * (phi3), else NULL */
  float *lu;              /* (max_rows, max_rank) LoRA x A^T */
  float *w;               /* (max out * in) a dequantized 4-bit base weight, or NULL */
  float *xs;              /* (max(C, H*D, F) + 32) the fused 4-bit matvec's scratch */
  float *absmax;          /* (max nblocks + 1) its decompressed absmax */
  float *scores;          /* (H, cap) one query row's probabilities per head */
  double *acc;            /* (H, D) the P.V accumulators per head */
  int32_t *pos;           /* (max_rows) absolute positions of the fed rows */
  int32_t *ids;           /* (cap) the ids fed so far (prefix reuse in generate) */
  void *block;
  size_t bytes;
  const qt_model_decoder_ext *ext; /* qt_model_decoder_wrap: feeds go there (and only ids is set above) */
  void *ext_ctx;
};

/* Bump-carves n bytes (64-byte aligned) from *at; with base NULL only counts. */
static void *carve(char *base, size_t *at, size_t n) {
  size_t off = (*at + 63) & ~(size_t)63;
  *at = off + n;
  return base ? base + off : NULL;
}

/* Lays the buffers out over base (NULL: measure); returns the bytes needed. */
static size_t layout(qt_model_decoder *d, char *base, int64_t max_w, int64_t max_nb) {
  const qt_model *m = d->m;
  size_t at = 0, f = sizeof(float), R = (size_t)d->max_rows;
  size_t kv = (size_t)(m->L * d->cap * m->K * m->D) * f;
  d->kcache = carve(base, &at, kv);
  d->vcache = carve(base, &at, kv);
  d->h = carve(base, &at, R * (size_t)m->C * f);
  d->xn = carve(base, &at, R * (size_t)m->C * f);
  d->q = carve(base, &at, R * (size_t)(m->H * m->D) * f);
  d->att = carve(base, &at, R * (size_t)(m->H * m->D) * f);
  d->y = carve(base, &at, R * (size_t)m->C * f);
  d->g = carve(base, &at, R * (size_t)m->F * f);
  d->u = carve(base, &at, R * (size_t)m->F * f);
  d->sw = carve(base, &at, R * (size_t)m->F * f);
  d->rstd = carve(base, &at, R * (size_t)m->H * f);
  int64_t fw = 0;
  if (m->cfg.fused_qkv) fw = m->H * m->D + 2 * m->K * m->D;
  if (m->cfg.fused_gate_up && 2 * m->F > fw) fw = 2 * m->F;
  d->fz = fw > 0 ? carve(base, &at, R * (size_t)fw * f) : NULL;
  d->lu = carve(base, &at, R * (size_t)d->max_rank * f);
  d->w = max_w > 0 ? carve(base, &at, (size_t)max_w * f) : NULL;
  d->absmax = max_w > 0 ? carve(base, &at, (size_t)(max_nb + 1) * f) : NULL;
  int64_t max_in = m->C > m->F ? m->C : m->F;
  if (m->H * m->D > max_in) max_in = m->H * m->D; /* o_proj's input */
  d->xs = carve(base, &at, (size_t)(max_in + 32) * f);
  d->scores = carve(base, &at, (size_t)(m->H * d->cap) * f);
  d->acc = carve(base, &at, (size_t)(m->H * m->D) * sizeof(double));
  d->pos = carve(base, &at, R * sizeof(int32_t));
  d->ids = carve(base, &at, (size_t)d->cap * sizeof(int32_t));
  return at;
}

/* The adapter's branch of every (layer, proj), read through mt's tape. */
static qt_status resolve_lora(qt_model_decoder *d, qt_model_tape *mt,
                              const qt_model_adapter *adapter) {
  const qt_model *m = d->m;
  qt_tape *t = qt_model_tape_get(mt);
  for (int64_t l = 0; l < m->L; l++)
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      d->lora[l][p] = (decode_lora){0};
      if (!adapter || !adapter->branch || m->layers[l].proj[p].out == 0) continue;
      qt_tape_lora br;
      bool has = false;
      QT_TRY(adapter->branch(adapter->ctx, t, (int)l, (qt_proj)p, 1, &br, &has));
      if (!has) continue;
      if (br.mask)
        return qt_fail(QT_ERR_UNSUPPORTED, "generate: the LoRA adapter has dropout on "
                                           "(training mode); decoding runs it as model.eval() "
                                           "does: call qt_lora_set_step(l, step, false) first");
      const qt_model_linear *lin = &m->layers[l].proj[p];
      int64_t R = qt_tape_rows(t, br.A);
      QT_ASSERTF(qt_tape_cols(t, br.A) == lin->in && qt_tape_rows(t, br.B) == lin->out &&
                     qt_tape_cols(t, br.B) == R,
                 "decode: LoRA of %s does not match the linear's shape", lin->name);
      d->lora[l][p] = (decode_lora){.A = qt_tape_data(t, br.A), .B = qt_tape_data(t, br.B),
                                    .R = R, .scale = br.scale};
      if (R > d->max_rank) d->max_rank = R;
    }
  return QT_OK;
}

qt_status qt_model_decoder_init(qt_model_tape *mt, const qt_model_adapter *adapter, int64_t cap,
                                int64_t max_rows, qt_model_decoder **out) {
  QT_ASSERT(mt && out);
  *out = NULL;
  const qt_model *m = qt_model_tape_model(mt);
  if (cap < 1 || cap > m->cfg.max_position_embeddings || max_rows < 1 || max_rows > cap)
    return qt_fail(QT_ERR_INVALID, "decode: a cache of %lld positions fed %lld at a time does "
                                   "not fit 1 .. max_position_embeddings (%lld)",
                   (long long)cap, (long long)max_rows,
                   (long long)m->cfg.max_position_embeddings);
  qt_model_decoder *d = calloc(1, sizeof *d);
  if (!d) return qt_fail(QT_ERR_NOMEM, "decode: cannot allocate the decoder");
  d->m = m;
  d->cap = cap;
  d->max_rows = max_rows;
  d->lora = calloc((size_t)m->L, sizeof *d->lora);
  qt_status s = d->lora ? resolve_lora(d, mt, adapter)
                        : qt_fail(QT_ERR_NOMEM, "decode: cannot allocate the LoRA table");
  int64_t max_w = 0, max_nb = 0;
  for (int64_t l = 0; l < m->L; l++)
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      const qt_model_linear *lin = &m->layers[l].proj[p];
      if (!lin->quantized) continue;
      if (lin->out * lin->in > max_w) max_w = lin->out * lin->in;
      if (lin->q.nblocks > max_nb) max_nb = lin->q.nblocks;
    }
  if (s == QT_OK) {
    d->bytes = layout(d, NULL, max_w, max_nb);
    d->block = malloc(d->bytes + 64);
    if (!d->block)
      s = qt_fail(QT_ERR_NOMEM, "decode: cannot allocate %.2f MiB for the KV cache (%lld "
                                "positions) and buffers; lower --max-new-tokens",
                  (double)d->bytes / 1048576.0, (long long)cap);
  }
  if (s != QT_OK) {
    qt_model_decoder_free(&d);
    return s;
  }
  /* 64-byte aligned base: the offsets carve() computed stay aligned */
  char *base = (char *)d->block + ((64 - ((uintptr_t)d->block & 63)) & 63);
  layout(d, base, max_w, max_nb);
  *out = d;
  return QT_OK;
}

qt_status qt_model_decoder_wrap(const qt_model *m, int64_t cap, int64_t max_rows,
                                const qt_model_decoder_ext *ext, void *ctx, qt_model_decoder **out) {
  QT_ASSERT(m && ext && ext->feed && ext->bytes && ext->free && out);
  *out = NULL;
  qt_model_decoder *d = calloc(1, sizeof *d);
  int32_t *ids = cap >= 1 ? malloc((size_t)cap * sizeof *ids) : NULL;
  if (!d || !ids || max_rows < 1 || max_rows > cap) {
    free(d);
    free(ids);
    ext->free(ctx);
    return max_rows < 1 || max_rows > cap
               ? qt_fail(QT_ERR_INVALID, "decode: %lld rows per feed with a cache of %lld positions",
                         (long long)max_rows, (long long)cap)
               : qt_fail(QT_ERR_NOMEM, "decode: out of memory");
  }
  *d = (qt_model_decoder){.m = m, .cap = cap, .max_rows = max_rows, .ids = ids, .ext = ext, .ext_ctx = ctx};
  *out = d;
  return QT_OK;
}

void qt_model_decoder_free(qt_model_decoder **dp) {
  if (!dp || !*dp) return;
  if ((*dp)->ext) {
    (*dp)->ext->free((*dp)->ext_ctx);
    free((*dp)->ids);
  }
  free((*dp)->lora);
  free((*dp)->block);
  free(*dp);
  *dp = NULL;
}

int64_t qt_model_decoder_len(const qt_model_decoder *d) { return d->len; }
size_t qt_model_decoder_bytes(const qt_model_decoder *d) {
  return d->ext ? d->ext->bytes(d->ext_ctx) + (size_t)d->cap * sizeof(int32_t) : d->bytes;
}

/* y (n, O) = x (n, In) W^T (+ bias) for a dense fp32 W (O, In): one row as a
 * matrix-vector product (OpenBLAS sgemv streams W once; its sgemm with one
 * row packs the whole matrix first, twice the memory traffic, which at a
 * 128K vocabulary is most of a token's time), several as the tape's linear. */
static void dense_rows(float *y, const float *x, const float *W, const float *bias, int64_t n,
                       int64_t In, int64_t O) {
  if (n > 1) {
    qt_model_internal_linear(y, x, W, bias, n, In, O);
    return;
  }
  if (bias) memcpy(y, bias, (size_t)O * sizeof(float));
  cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)O, (blasint)In, 1.0f, W, (blasint)In, x, 1,
              bias ? 1.0f : 0.0f, y, 1);
}

/* y (n, out) = x (n, in) W^T + bias + LoRA, as model.c linear() records it:
 * the base first, then the LoRA branch added (unmerged). A 4-bit base is
 * dequantized into d->w for a prompt's rows; one row (each decoding step)
 * reads the 4-bit codes directly (quant/gemv.h: no dequantized matrix, the
 * sums rounded in another order, so equal to the rows path within fp32
 * rounding, tested at 3e-5 against the full forward). */
static void linear(qt_model_decoder *d, int64_t l, qt_proj p, const float *x, int64_t n,
                   float *y) {
  const qt_model_linear *lin = &d->m->layers[l].proj[p];
  if (lin->quantized && n == 1) {
    qt_quant_4bit_gemv(&lin->q, lin->out, lin->in, x, y, d->xs, d->m->threads);
    if (lin->bias)
      for (int64_t o = 0; o < lin->out; o++) y[o] += lin->bias[o];
  } else {
    const float *W = lin->dense;
    if (lin->quantized) {
      qt_model_internal_dequant(&lin->q, d->absmax, d->w, d->m->threads);
      W = d->w;
    }
    dense_rows(y, x, W, lin->bias, n, lin->in, lin->out);
  }
  const decode_lora *lo = &d->lora[l][p];
  if (lo->A) qt_model_internal_lora(y, d->lu, x, lo->A, lo->B, lo->scale, n, lin->in, lin->out, lo->R);
}

/* att (n, H, D) for the fed rows i (positions len + i) of layer l: causal GQA
 * over the cached keys and values first .. len + i (query head h reads kv
 * head h / (H/K), transformers repeat_kv), first = 0, or the start of the
 * layer's sliding window (i - j < window); scores scaled by the config's
 * attn_scale and soft-capped when it has attn_softcap. The numerics of
 * attention_forward_ref (attention_cpu.inc): each score rounded to fp32
 * (capped: c tanh(s / c) of that, rounded again), max, exp(s - max) rounded to
 * fp32, double sum, P rounded to fp32, double P.V. */
static void attend(qt_model_decoder *d, int64_t l, int64_t n) {
  const qt_model *m = d->m;
  int64_t H = m->H, K = m->K, D = m->D, rep = H / K;
  const float *kc = d->kcache + l * d->cap * K * D; /* (cap, K, D) */
  const float *vc = d->vcache + l * d->cap * K * D; /* (cap, K, D) */
  double scale = m->cfg.attn_scale, cap = m->cfg.attn_softcap;
  int64_t window = m->cfg.layer_window ? m->cfg.layer_window[l] : 0;
#pragma omp parallel for if (H * n * (d->len + n) * D >= 65536)
  for (int64_t h = 0; h < H; h++) {
    int64_t g = h / rep;
    float *P = d->scores + h * d->cap; /* (cap) */
    double *acc = d->acc + h * D;      /* (D) */
    for (int64_t i = 0; i < n; i++) {
      int64_t last = d->len + i;
      int64_t first = (window > 0 && last - window + 1 > 0) ? last - window + 1 : 0;
      const float *qi = d->q + (i * H + h) * D; /* (D) */
      double mx = -INFINITY;
      for (int64_t j = first; j <= last; j++) {
        const float *kj = kc + (j * K + g) * D; /* (D) */
        double s = 0.0;
        for (int64_t e = 0; e < D; e++) s += (double)qi[e] * kj[e];
        P[j] = (float)(s * scale);
        if (cap > 0) P[j] = (float)(cap * tanh((double)P[j] / cap));
        if (P[j] > mx) mx = P[j];
      }
      double sum = 0.0;
      for (int64_t j = first; j <= last; j++) {
        P[j] = (float)exp((double)P[j] - mx);
        sum += P[j];
      }
      for (int64_t e = 0; e < D; e++) acc[e] = 0.0;
      for (int64_t j = first; j <= last; j++) {
        P[j] = (float)(P[j] / sum);
        const float *vj = vc + (j * K + g) * D; /* (D) */
        for (int64_t e = 0; e < D; e++) acc[e] += (double)P[j] * vj[e];
      }
      float *oi = d->att + (i * H + h) * D; /* (D) */
      for (int64_t e = 0; e < D; e++) oi[e] = (float)acc[e];
    }
  }
}

qt_status qt_model_decoder_feed(qt_model_decoder *d, const int32_t *ids, int64_t n,
                                float *logits) {
  const qt_model *m = d->m;
  if (n < 1 || n > d->max_rows || d->len + n > d->cap)
    return qt_fail(QT_ERR_INVALID, "decode: %lld tokens do not fit (%lld of %lld positions "
                                   "used, at most %lld per feed)",
                   (long long)n, (long long)d->len, (long long)d->cap, (long long)d->max_rows);
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= m->V)
      return qt_fail(QT_ERR_INVALID, "decode: token id %d is outside the vocabulary (%lld); "
                                     "tokenizer and model do not match",
                     (int)ids[i], (long long)m->V);
  if (d->ext) { /* computed elsewhere (the GPU's decoder) */
    QT_TRY(d->ext->feed(d->ext_ctx, ids, n, d->len, logits));
    memcpy(d->ids + d->len, ids, (size_t)n * sizeof *ids);
    d->len += n;
    return QT_OK;
  }
  const qt_hf_config *c = &m->cfg;
  int64_t C = m->C, HD = m->H * m->D, KD = m->K * m->D, F = m->F;
  double eps = c->rms_norm_eps;
  /* modeling_gemma2.py: embeddings times tensor(hidden_size ** 0.5, dtype) */
  float escale = (float)sqrt((double)C);
  for (int64_t i = 0; i < n; i++) {
    memcpy(d->h + i * C, m->embed + (int64_t)ids[i] * C, (size_t)C * sizeof(float));
    if (c->embed_scale)
      for (int64_t e = 0; e < C; e++) d->h[i * C + e] *= escale;
    d->pos[i] = (int32_t)(d->len + i);
    d->ids[d->len + i] = ids[i];
  }
  /* decoder_layer (model.c), rows len .. len+n-1 */
  for (int64_t l = 0; l < m->L; l++) {
    const qt_model_layer *ly = &m->layers[l];
    float *kc = d->kcache + (l * d->cap + d->len) * KD; /* (n, K, D) the new rows' cache slots */
    float *vc = d->vcache + (l * d->cap + d->len) * KD; /* (n, K, D) */
    qt_model_internal_rmsnorm(d->xn, d->rstd, d->h, ly->input_norm, eps, n, C);
    if (c->fused_qkv) {
      int64_t W = HD + 2 * KD;
      linear(d, l, QT_PROJ_QKV, d->xn, n, d->fz);
      for (int64_t i = 0; i < n; i++) {
        memcpy(d->q + i * HD, d->fz + i * W, (size_t)HD * sizeof(float));
        memcpy(kc + i * KD, d->fz + i * W + HD, (size_t)KD * sizeof(float));
        memcpy(vc + i * KD, d->fz + i * W + HD + KD, (size_t)KD * sizeof(float));
      }
    } else {
      linear(d, l, QT_PROJ_Q, d->xn, n, d->q);
      linear(d, l, QT_PROJ_K, d->xn, n, kc);
      linear(d, l, QT_PROJ_V, d->xn, n, vc);
    }
    if (ly->q_norm) { /* per head over D: rows n * heads */
      qt_model_internal_rmsnorm(d->q, d->rstd, d->q, ly->q_norm, eps, n * m->H, m->D);
      qt_model_internal_rmsnorm(kc, d->rstd, kc, ly->k_norm, eps, n * m->K, m->D);
    }
    int64_t window = c->layer_window ? c->layer_window[l] : 0;
    const float *inv_freq = window > 0 ? m->inv_freq_local : m->inv_freq;
    qt_model_internal_rope(d->q, d->q, d->pos, inv_freq, n, m->H, m->D);
    qt_model_internal_rope(kc, kc, d->pos, inv_freq, n, m->K, m->D);
    attend(d, l, n);
    linear(d, l, QT_PROJ_O, d->att, n, d->y);
    if (ly->attn_out_norm)
      qt_model_internal_rmsnorm(d->y, d->rstd, d->y, ly->attn_out_norm, eps, n, C);
    qt_model_internal_add(d->h, d->h, d->y, n * C);
    qt_model_internal_rmsnorm(d->xn, d->rstd, d->h, ly->post_norm, eps, n, C);
    if (c->fused_gate_up) {
      linear(d, l, QT_PROJ_GATE_UP, d->xn, n, d->fz);
      for (int64_t i = 0; i < n; i++) {
        memcpy(d->g + i * F, d->fz + i * 2 * F, (size_t)F * sizeof(float));
        memcpy(d->u + i * F, d->fz + i * 2 * F + F, (size_t)F * sizeof(float));
      }
    } else {
      linear(d, l, QT_PROJ_GATE, d->xn, n, d->g);
      linear(d, l, QT_PROJ_UP, d->xn, n, d->u);
    }
    if (c->act == QT_HF_ACT_GELU_TANH)
      qt_model_internal_geglu(d->sw, d->g, d->u, n * F);
    else
      qt_model_internal_swiglu(d->sw, d->g, d->u, n * F);
    linear(d, l, QT_PROJ_DOWN, d->sw, n, d->y);
    if (ly->mlp_out_norm)
      qt_model_internal_rmsnorm(d->y, d->rstd, d->y, ly->mlp_out_norm, eps, n, C);
    qt_model_internal_add(d->h, d->h, d->y, n * C);
  }
  d->len += n;
  /* final norm and lm_head (the embedding when tied) for the last row only */
  qt_model_internal_rmsnorm(d->xn, d->rstd, d->h + (n - 1) * C, m->final_norm, eps, 1, C);
  dense_rows(logits, d->xn, m->lm_head, NULL, 1, C, m->V);
  if (c->final_softcap > 0) qt_model_internal_softcap(logits, m->V, c->final_softcap);
  return QT_OK;
}

void qt_model_decoder_truncate(qt_model_decoder *d, int64_t len) {
  QT_ASSERT(len >= 0 && len <= d->len);
  d->len = len;
}

int64_t qt_model_decoder_cap(const qt_model_decoder *d) { return d->cap; }

/* ---- generate ----------------------------------------------------------------- */

static bool is_stop(const qt_generate_opts *g, int32_t id) {
  for (int i = 0; i < g->n_stop_ids; i++)
    if (g->stop_ids[i] == id) return true;
  return false;
}

/* The next-token logits z (V) of seq[0 .. n). */
typedef qt_status (*next_logits_fn)(void *ctx, const int32_t *seq, int64_t n, float *z);

/* The loop both generate paths share: seq (cap) holds the prompt; tokens are
 * appended until max_new, cap, a stop id (kept) or the callback's stop. */
static qt_status sample_loop(qt_sampler *smp, int32_t *seq, int64_t n_prompt, int64_t cap,
                             const qt_generate_opts *g, next_logits_fn next_logits, void *ctx,
                             float *z, int32_t *out, int64_t *n_out) {
  int64_t n = n_prompt;
  *n_out = 0;
  while (n < cap && *n_out < g->max_new) {
    QT_TRY(next_logits(ctx, seq, n, z));
    int32_t next = qt_sampler_next(smp, seq, n, z);
    seq[n++] = next;
    out[(*n_out)++] = next;
    bool stop = is_stop(g, next);
    if (g->on_token) QT_TRY(g->on_token(g->ctx, next, &stop));
    if (stop) break;
  }
  return QT_OK;
}

/* Feeds the tokens of seq the cache has not seen, at most max_rows at a time. */
static qt_status cached_logits(void *ctx, const int32_t *seq, int64_t n, float *z) {
  qt_model_decoder *d = ctx;
  while (d->len < n) {
    int64_t k = n - d->len < d->max_rows ? n - d->len : d->max_rows;
    QT_TRY(qt_model_decoder_feed(d, seq + d->len, k, z));
  }
  return QT_OK;
}

qt_status qt_model_decoder_generate(qt_model_decoder *d, qt_sampler *smp, const int32_t *prompt,
                                    int64_t n_prompt, const qt_generate_opts *g, int32_t *out,
                                    int64_t *n_out) {
  *n_out = 0;
  if (n_prompt < 1) return qt_fail(QT_ERR_INVALID, "generate: the prompt is empty (give at least BOS)");
  if (n_prompt > d->cap)
    return qt_fail(QT_ERR_INVALID, "generate: the prompt has %lld tokens; the cache holds %lld "
                                   "positions", (long long)n_prompt, (long long)d->cap);
  /* keep the cached prefix the prompt shares (a chat's earlier turns); at
   * least the prompt's last token is fed again for its logits */
  int64_t keep = 0;
  while (keep < d->len && keep < n_prompt - 1 && d->ids[keep] == prompt[keep]) keep++;
  d->len = keep;
  int64_t cap = n_prompt + g->max_new < d->cap ? n_prompt + g->max_new : d->cap;
  int32_t *seq = malloc((size_t)d->cap * sizeof(int32_t));
  float *z = malloc((size_t)d->m->V * sizeof(float));
  qt_status s = QT_OK;
  if (!seq || !z) s = qt_fail(QT_ERR_NOMEM, "generate: cannot allocate %lld tokens", (long long)cap);
  if (s == QT_OK) {
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int32_t));
    s = sample_loop(smp, seq, n_prompt, cap, g, cached_logits, d, z, out, n_out);
  }
  free(seq);
  free(z);
  return s;
}

/* Positions a generation may use: prompt + max_new, at most max_position_embeddings. */
static qt_status generate_cap(const qt_model *m, int64_t n_prompt, int64_t max_new,
                              int64_t *cap) {
  if (n_prompt < 1) return qt_fail(QT_ERR_INVALID, "generate: the prompt is empty (give at least BOS)");
  *cap = n_prompt + max_new;
  if (*cap > m->cfg.max_position_embeddings) *cap = m->cfg.max_position_embeddings;
  if (n_prompt > *cap)
    return qt_fail(QT_ERR_INVALID, "generate: prompt of %lld tokens exceeds %lld "
                                   "(max_position_embeddings)", (long long)n_prompt, (long long)*cap);
  return QT_OK;
}

/* The config's EOS ids as stop ids. */
static void eos_opts(const qt_model *m, int64_t max_new, int32_t *ids, qt_generate_opts *g) {
  for (int e = 0; e < m->cfg.n_eos; e++) ids[e] = (int32_t)m->cfg.eos_token_ids[e];
  *g = (qt_generate_opts){.max_new = max_new, .stop_ids = ids, .n_stop_ids = m->cfg.n_eos};
}

qt_status qt_model_generate(qt_model_tape *mt, const qt_model_adapter *adapter,
                            const int32_t *prompt, int64_t n_prompt, int64_t max_new,
                            double temperature, uint64_t seed, int32_t *out, int64_t *n_out) {
  const qt_model *m = qt_model_tape_model(mt);
  *n_out = 0;
  int64_t cap = 0;
  QT_TRY(generate_cap(m, n_prompt, max_new, &cap));
  if (cap == n_prompt) return QT_OK; /* nothing to generate */
  qt_sample_opts so = qt_sample_opts_default();
  so.temperature = temperature;
  so.seed = seed;
  qt_sampler smp;
  QT_TRY(qt_sampler_init(&smp, &so, m->V));
  qt_model_decoder *d = NULL;
  qt_status s = qt_model_decoder_init(mt, adapter, cap, n_prompt, &d);
  if (s == QT_OK) {
    int32_t eos[QT_HF_MAX_EOS];
    qt_generate_opts g;
    eos_opts(m, max_new, eos, &g);
    s = qt_model_decoder_generate(d, &smp, prompt, n_prompt, &g, out, n_out);
  }
  qt_model_decoder_free(&d);
  qt_sampler_free(&smp);
  return s;
}

/* ---- the oracle: the whole sequence through the tape at every step ---------- */

typedef struct {
  qt_model_tape *mt;
  const qt_model_adapter *adapter;
  int32_t *pos, *doc; /* (cap) */
  float *logits;      /* (cap, V) */
} recompute_ctx;

static qt_status recompute_logits(void *ctx, const int32_t *seq, int64_t n, float *z) {
  recompute_ctx *c = ctx;
  int64_t V = qt_model_tape_model(c->mt)->V;
  qt_model_batch b = {.ids = seq, .targets = NULL, .pos = c->pos, .doc = c->doc, .B = 1, .T = n};
  QT_TRY(qt_model_logits(c->mt, c->adapter, &b, c->logits));
  memcpy(z, c->logits + (n - 1) * V, (size_t)V * sizeof(float));
  return QT_OK;
}

qt_status qt_model_generate_recompute(qt_model_tape *mt, const qt_model_adapter *adapter,
                                      const int32_t *prompt, int64_t n_prompt, int64_t max_new,
                                      const qt_sample_opts *so, int32_t *out, int64_t *n_out) {
  const qt_model *m = qt_model_tape_model(mt);
  *n_out = 0;
  int64_t cap = 0;
  QT_TRY(generate_cap(m, n_prompt, max_new, &cap));
  qt_sampler smp;
  QT_TRY(qt_sampler_init(&smp, so, m->V));
  int32_t *ints = malloc((size_t)cap * 3 * sizeof(int32_t));
  float *logits = malloc((size_t)((cap + 1) * m->V) * sizeof(float));
  if (!ints || !logits) {
    free(ints);
    free(logits);
    qt_sampler_free(&smp);
    return qt_fail(QT_ERR_NOMEM, "generate: cannot allocate %lld tokens of logits", (long long)cap);
  }
  recompute_ctx c = {.mt = mt, .adapter = adapter, .pos = ints + cap, .doc = ints + 2 * cap,
                     .logits = logits + m->V};
  for (int64_t i = 0; i < cap; i++) {
    c.pos[i] = (int32_t)i;
    c.doc[i] = 0;
  }
  memcpy(ints, prompt, (size_t)n_prompt * sizeof(int32_t));
  int32_t eos[QT_HF_MAX_EOS];
  qt_generate_opts g;
  eos_opts(m, max_new, eos, &g);
  qt_status s = sample_loop(&smp, ints, n_prompt, cap, &g, recompute_logits, &c, logits, out, n_out);
  free(ints);
  free(logits);
  qt_sampler_free(&smp);
  return s;
}
