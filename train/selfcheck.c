/* train/selfcheck.c — the start-up self-check of a backend (backend.h
 * qt_backend_selfcheck): before a run trains on a backend other than the
 * CPU's, one micro-batch of a tiny built-in model goes through both and the
 * results are compared, so that kernels that are wrong on this machine stop
 * the run at once instead of training silently wrong adapters.
 *
 * The model: a llama-shaped decoder (hidden 64, 2 layers, 4 heads of 16 with
 * 2 KV heads, MLP 128, vocabulary 256, untied lm_head), weights drawn from
 * Philox (fixed seed), written as fp32 safetensors into a temporary directory,
 * loaded through qt_model_load with NF4 double quantization (blocksize 64), so
 * the check covers the 4-bit linears, and the directory is removed. LoRA r 4
 * on all seven projections, alpha 8, dropout 0.1 (the masks of both backends
 * must agree), B drawn in +-0.05 as the parity test (tests/model_lora/
 * test_model_cuda.c) does. The batch: two rows of 32 tokens, the first packing
 * two documents, the second with its first 5 labels masked.
 *
 * The checked backend runs with gradient checkpointing, the default users
 * train with (the GPU recomputes each layer's forward before its backward).
 * Compared: the training micro-batch's loss and target count, every LoRA
 * gradient (per tensor NMSE and cosine, and all tensors together), and the
 * evaluation loss, and the KV-cache decoders' logits (generate). The
 * reference is the CPU tape in fp32; the bounds are the
 * parity test's, set for bf16 storage on the GPU (loss relative 1e-2; per
 * tensor NMSE 3e-2 and cosine 0.985; all tensors NMSE 8e-3; every value
 * finite). */
#define _DEFAULT_SOURCE 1 /* mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/half.h"
#include "common/log.h"
#include "common/philox.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "lora/lora.h"
#include "model/model.h"
#include "optim/optim.h"
#include "train/backend.h"

enum { SC_C = 64, SC_L = 2, SC_H = 4, SC_K = 2, SC_D = 16, SC_F = 128, SC_V = 256, SC_B = 2, SC_T = 32, SC_R = 4 };

static const double TOL_LOSS_REL = 1e-2, TOL_NMSE = 3e-2, TOL_COS = 0.985, TOL_NMSE_ALL = 8e-3;
/* The optimizer step from identical gradients: the device's norm is meant to
 * be bit-equal (optim.h's fixed order) and its AdamW bit-identical
 * (tests/optim); a bf16 rounding that goes the other way moves one element
 * by one ulp (~5% of a 1e-3 update at 0.05), so the bound on the updates
 * leaves room for a few such elements, not for a wrong update. */
static const double TOL_NORM_REL = 1e-6, TOL_UPDATE_NMSE = 1e-3;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One tensor of the tiny model, filled from the Philox stream. */
typedef struct {
  char name[96];
  int64_t rows, cols; /* cols 0: a vector */
  float *data;
} sc_tensor;

static qt_status add_tensor(sc_tensor *t, size_t *n, const char *name, int64_t rows, int64_t cols, float std,
                            qt_philox *rng) {
  sc_tensor *e = &t[(*n)++];
  snprintf(e->name, sizeof e->name, "%s", name);
  e->rows = rows;
  e->cols = cols;
  int64_t numel = rows * (cols ? cols : 1);
  e->data = malloc((size_t)numel * sizeof(float));
  if (!e->data) return qt_fail(QT_ERR_NOMEM, "self-check: out of memory");
  for (int64_t i = 0; i < numel; i++) e->data[i] = std > 0 ? std * qt_philox_next_normal(rng) : 1.0f;
  return QT_OK;
}

/* Writes the tiny model into dir (config.json, model.safetensors). */
static qt_status write_model(const char *dir) {
  enum { MAX_T = 4 + SC_L * 9 };
  sc_tensor t[MAX_T];
  size_t n = 0;
  qt_philox rng;
  qt_philox_init(&rng, 0x5E1FC4Eull, 0, 0);
  qt_status r = add_tensor(t, &n, "model.embed_tokens.weight", SC_V, SC_C, 0.5f, &rng);
  static const char *const proj[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
  const int64_t out[7] = {SC_H * SC_D, SC_K * SC_D, SC_K * SC_D, SC_C, SC_F, SC_F, SC_C};
  const int64_t in[7] = {SC_C, SC_C, SC_C, SC_H * SC_D, SC_C, SC_C, SC_F};
  for (int l = 0; l < SC_L && r == QT_OK; l++) {
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    r = add_tensor(t, &n, name, SC_C, 0, 0, &rng);
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
    if (r == QT_OK) r = add_tensor(t, &n, name, SC_C, 0, 0, &rng);
    for (int p = 0; p < 7 && r == QT_OK; p++) {
      snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, proj[p]);
      r = add_tensor(t, &n, name, out[p], in[p], (float)(1.0 / sqrt((double)in[p])), &rng);
    }
  }
  if (r == QT_OK) r = add_tensor(t, &n, "model.norm.weight", SC_C, 0, 0, &rng);
  if (r == QT_OK) r = add_tensor(t, &n, "lm_head.weight", SC_V, SC_C, (float)(1.0 / sqrt((double)SC_C)), &rng);
  char path[4200];
  if (r == QT_OK) {
    qt_st_write_tensor w[MAX_T];
    for (size_t i = 0; i < n; i++) {
      w[i] = (qt_st_write_tensor){.name = t[i].name, .dtype = QT_F32, .ndim = t[i].cols ? 2 : 1,
                                  .shape = {t[i].rows, t[i].cols}, .data = t[i].data};
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    r = qt_st_write(path, w, n, NULL, NULL, 0);
  }
  for (size_t i = 0; i < n; i++) free(t[i].data);
  if (r != QT_OK) return r;
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *f = fopen(path, "w");
  if (!f) return qt_fail(QT_ERR_IO, "self-check: cannot write %s", path);
  fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, "
             "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
             "\"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, \"max_position_embeddings\": 256, "
             "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": false, "
             "\"hidden_act\": \"silu\", \"torch_dtype\": \"float32\", \"bos_token_id\": 1, \"eos_token_id\": 2}\n",
          SC_C, SC_F, SC_L, SC_H, SC_K, SC_D, SC_V);
  if (fclose(f) != 0) return qt_fail(QT_ERR_IO, "self-check: cannot write %s", path);
  return QT_OK;
}

/* The tiny model, loaded 4-bit from a temporary directory that is then removed. */
static qt_status load_model(qt_model **m) {
  const char *tmp = getenv("TMPDIR");
  char dir[4096], path[4200];
  snprintf(dir, sizeof dir, "%s/qlora-selfcheck-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
  if (!mkdtemp(dir))
    return qt_fail(QT_ERR_IO, "self-check: cannot make a temporary directory under %s (set TMPDIR)",
                   tmp && tmp[0] ? tmp : "/tmp");
  qt_status r = write_model(dir);
  qt_model_load_opts o = {.quant = QT_MODEL_QUANT_NF4, .double_quant = true, .blocksize = 64, .threads = 0};
  qt_log_level level = qt_log_get_level(); /* the loader's info line is about the user's model */
  if (level > QT_LOG_WARN) qt_log_set_level(QT_LOG_WARN);
  if (r == QT_OK) r = qt_model_load(dir, &o, m);
  qt_log_set_level(level);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/config.json", dir);
  unlink(path);
  rmdir(dir);
  return r;
}

/* Fresh LoRA (PEFT's init of A) with B in +-0.05, bf16-exact. */
static qt_status make_lora(const qt_model *m, qt_lora **l) {
  qt_lora_config c = {.r = SC_R, .alpha = 8, .dropout = 0.1, .use_rslora = false, .targets = QT_LORA_ALL_LINEAR,
                      .master_fp32 = false, .seed = 11};
  QT_TRY(qt_lora_init(m, &c, l));
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(*l, &n);
  qt_philox rng;
  qt_philox_init(&rng, 12, 0, 0);
  for (size_t i = 0; i < n; i++)
    if (ts[i].is_B)
      for (int64_t j = 0; j < ts[i].rows * ts[i].cols; j++)
        ts[i].bf16[j] = qt_bf16_from_f32(0.05f * (2 * qt_philox_next_uniform(&rng) - 1));
  qt_lora_sync(*l);
  return QT_OK;
}

/* The batch: row 0 packs documents of 20 and 12 tokens, row 1 one document
 * whose first 5 labels are masked. */
static void make_batch(int32_t *ids, int32_t *targets, int32_t *pos, int32_t *doc) {
  int32_t labels[SC_B * SC_T];
  qt_philox rng;
  qt_philox_init(&rng, 13, 0, 0);
  for (int n = 0; n < SC_B * SC_T; n++) {
    int row = n / SC_T, t = n % SC_T;
    ids[n] = (int32_t)(qt_philox_next_u32(&rng) % SC_V);
    labels[n] = row == 1 && t < 5 ? -100 : ids[n];
    doc[n] = row == 0 ? (t < 20 ? 0 : 1) : 2;
    pos[n] = row == 0 && t >= 20 ? t - 20 : t;
  }
  qt_model_targets_from_labels(labels, doc, SC_B, SC_T, targets);
}

/* |g - c|^2 / |c|^2 and the cosine, accumulating the sums for the total. */
static void compare(const float *g, const float *c, int64_t n, double *nmse, double *cosv, bool *finite,
                    double acc[2]) {
  double se = 0, cc = 0, gg = 0, gc = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(g[i])) *finite = false;
    double d = (double)g[i] - (double)c[i];
    se += d * d;
    cc += (double)c[i] * c[i];
    gg += (double)g[i] * g[i];
    gc += (double)g[i] * c[i];
  }
  acc[0] += se;
  acc[1] += cc;
  *nmse = cc > 0 ? se / cc : (se > 0 ? INFINITY : 0);
  *cosv = cc > 0 && gg > 0 ? gc / sqrt(cc * gg) : (cc == 0 && gg == 0 ? 1 : 0);
}

/* One training micro-batch and one eval micro-batch on backend b: loss,
 * count, eval loss and the gradients (through grads_to_host). */
static qt_status run_backend(qt_backend *b, qt_lora *l, const qt_model_batch *mb, double *loss, int64_t *count,
                             double *eval_loss, float *grads) {
  QT_TRY(b->ops->zero_grad(b));
  qt_lora_set_step(l, 3, true);
  QT_TRY(b->ops->train_micro(b, mb, 1.0 / SC_T, loss, count));
  QT_TRY(b->ops->grads_to_host(b, grads));
  qt_lora_set_step(l, 3, false);
  int64_t ecount = 0;
  return b->ops->eval_micro(b, mb, eval_loss, &ecount);
}

/* The adapters' bf16 weights, flat in qt_lora_tensors order: out = the
 * adapters' (to) or the adapters = in (from, then their compute copies). */
static void weights_out(qt_lora *l, uint16_t *out) {
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(l, &n);
  for (size_t i = 0; i < n; i++) {
    memcpy(out, ts[i].bf16, (size_t)(ts[i].rows * ts[i].cols) * sizeof *out);
    out += ts[i].rows * ts[i].cols;
  }
}

static void weights_in(qt_lora *l, const uint16_t *in) {
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(l, &n);
  for (size_t i = 0; i < n; i++) {
    memcpy(ts[i].bf16, in, (size_t)(ts[i].rows * ts[i].cols) * sizeof *in);
    in += ts[i].rows * ts[i].cols;
  }
  qt_lora_sync(l);
}

/* One optimizer step on backend b from the gradients g (the CPU's, so that
 * both backends update from the same values): the global norm (*norm), an
 * 8-bit AdamW (bitsandbytes defaults; the tiny tensors keep 32-bit state)
 * made for b's device, clipping at 1.0 as the trainer's default, rate lr
 * (1e-3), then the weights on the host (w). */
static qt_status step_backend(qt_backend *b, qt_lora *l, const float *g, float lr, double *norm, uint16_t *w) {
  QT_TRY(b->ops->grads_from_host(b, g));
  QT_TRY(b->ops->grad_norm(b, norm));
  qt_adamw_config oc;
  qt_adamw_config_default(&oc, 8);
  oc.device = b->device;
  int64_t *numels = malloc(b->n_params * sizeof *numels);
  if (!numels) return qt_fail(QT_ERR_NOMEM, "self-check: out of memory");
  for (size_t i = 0; i < b->n_params; i++) numels[i] = qt_tensor_numel(&b->params[i]);
  qt_adamw opt;
  qt_status r = qt_adamw_init(&opt, &oc, b->n_params, numels);
  free(numels);
  if (r != QT_OK) return r;
  r = qt_adamw_step(&opt, b->params, b->grads, lr, qt_optim_clip_coef(*norm, 1.0), 1234);
  if (r == QT_OK) r = b->ops->after_update(b);
  if (r == QT_OK) r = b->ops->sync_host(b, &opt);
  qt_adamw_free(&opt);
  if (r == QT_OK) weights_out(l, w);
  return r;
}

/* Feeds ids[0 .. 8) then ids[8], ids[9] to a decoder of each backend and
 * compares the logits of every feed (worst NMSE, worst cosine). */
static qt_status compare_decoders(qt_backend *ref, qt_backend *dev, qt_lora *l, const int32_t *ids, double *nmse,
                                  double *cosv) {
  qt_lora_set_step(l, 3, false);
  qt_model_decoder *dr = NULL, *dd = NULL;
  float *zr = malloc(SC_V * sizeof *zr), *zd = malloc(SC_V * sizeof *zd);
  qt_status r = zr && zd ? QT_OK : qt_fail(QT_ERR_NOMEM, "self-check: out of memory");
  if (r == QT_OK) r = ref->ops->decoder(ref, 16, 8, &dr);
  if (r == QT_OK) r = dev->ops->decoder(dev, 16, 8, &dd);
  static const int64_t at[3] = {0, 8, 9}, len[3] = {8, 1, 1};
  for (int f = 0; f < 3 && r == QT_OK; f++) {
    r = qt_model_decoder_feed(dr, ids + at[f], len[f], zr);
    if (r == QT_OK) r = qt_model_decoder_feed(dd, ids + at[f], len[f], zd);
    if (r != QT_OK) break;
    double nm, cs, acc[2] = {0, 0};
    bool finite = true;
    compare(zd, zr, SC_V, &nm, &cs, &finite, acc);
    if (!finite) nm = INFINITY;
    if (nm > *nmse || !isfinite(nm)) *nmse = nm;
    if (cs < *cosv) *cosv = cs;
  }
  qt_model_decoder_free(&dd);
  qt_model_decoder_free(&dr);
  free(zr);
  free(zd);
  return r;
}

qt_status qt_backend_selfcheck_ex(qt_backend_kind kind, const char *perturb, qt_selfcheck_result *res) {
  memset(res, 0, sizeof *res);
  double t0 = now_s();
  qt_session s = {0};
  s.cfg.training.gradient_checkpointing = true; /* the default users train with: the GPU recomputes layers */
  qt_backend *ref = NULL, *dev = NULL;
  float *g_ref = NULL, *g_dev = NULL;
  qt_status r = load_model(&s.model);
  if (r == QT_OK) r = make_lora(s.model, &s.lora);
  if (r == QT_OK) {
    qt_model_tape_opts o = {.max_B = SC_B, .max_T = SC_T, .checkpoint = false, .ce_chunk_rows = 0,
                            .max_lora_rank = SC_R, .forward_only = false, .lora_no_dropout = false,
                            .gemm_bf16 = false};
    r = qt_model_tape_init(s.model, &o, &s.mt);
  }
  if (r == QT_OK) r = qt_lora_attach(s.lora, qt_model_tape_get(s.mt));
  qt_backend_opts bo = {.kind = QT_BACKEND_CPU, .max_B = SC_B, .max_T = SC_T, .train = true};
  if (r == QT_OK) r = qt_backend_open(&s, &bo, &ref);
  if (r == QT_OK) r = qt_backend_step_init(ref);
  bo.kind = kind;
  if (r == QT_OK) r = qt_backend_open(&s, &bo, &dev);
  if (r == QT_OK) r = qt_backend_step_init(dev); /* the cuda backend: the adapters now on the device */
  size_t nt = 0;
  qt_lora_tensor *ts = r == QT_OK ? qt_lora_tensors(s.lora, &nt) : NULL;
  int64_t total = 0;
  for (size_t i = 0; i < nt; i++) total += ts[i].rows * ts[i].cols;
  uint16_t *w0 = NULL, *w_ref = NULL, *w_dev = NULL;
  if (r == QT_OK && (!(g_ref = malloc((size_t)total * sizeof(float))) || !(g_dev = malloc((size_t)total * sizeof(float))) ||
                     !(w0 = malloc((size_t)total * 2)) || !(w_ref = malloc((size_t)total * 2)) ||
                     !(w_dev = malloc((size_t)total * 2))))
    r = qt_fail(QT_ERR_NOMEM, "self-check: out of memory");
  if (r == QT_OK) weights_out(s.lora, w0);
  int32_t ids[SC_B * SC_T], targets[SC_B * SC_T], pos[SC_B * SC_T], doc[SC_B * SC_T];
  make_batch(ids, targets, pos, doc);
  qt_model_batch mb = {.ids = ids, .targets = targets, .pos = pos, .doc = doc, .B = SC_B, .T = SC_T};
  double loss_ref = 0, loss_dev = 0, ev_ref = 0, ev_dev = 0;
  int64_t cnt_ref = 0, cnt_dev = 0;
  if (r == QT_OK) r = run_backend(ref, s.lora, &mb, &loss_ref, &cnt_ref, &ev_ref, g_ref);
  if (r == QT_OK) {
    r = run_backend(dev, s.lora, &mb, &loss_dev, &cnt_dev, &ev_dev, g_dev);
    if (r != QT_OK) qt_error_context("self-check: the %s backend's forward and backward", dev->ops->name);
  }
  /* one optimizer step each from the CPU's gradients (the weights start
   * again from w0: the cpu backend updates the adapters in place) */
  double norm_ref = 0, norm_dev = 0;
  if (r == QT_OK) r = step_backend(ref, s.lora, g_ref, 1e-3f, &norm_ref, w_ref);
  if (r == QT_OK) {
    weights_in(s.lora, w0);
    /* perturb "optimizer": the comparison's own test, a step of twice the rate */
    float lr = perturb && strcmp(perturb, "optimizer") == 0 ? 2e-3f : 1e-3f;
    r = step_backend(dev, s.lora, g_ref, lr, &norm_dev, w_dev);
    if (r != QT_OK) qt_error_context("self-check: the %s backend's optimizer step", dev->ops->name);
  }
  /* the KV-cache decoders (generate): an 8-token prompt, then two tokens one
   * at a time, on the weights both now hold (the device's, synced) */
  double dec_nmse = 0, dec_cos = 1;
  if (r == QT_OK) {
    r = compare_decoders(ref, dev, s.lora, ids + SC_T, &dec_nmse, &dec_cos);
    if (r != QT_OK) qt_error_context("self-check: the %s backend's decoder", dev->ops->name);
  }
  res->decode_nmse = dec_nmse;
  if (r == QT_OK) {
    /* the comparison's own test (tests/train): one tensor's gradient off by half */
    const float *gr = g_ref;
    float *gd = g_dev;
    for (size_t i = 0; i < nt; i++) {
      int64_t n = ts[i].rows * ts[i].cols;
      if (perturb && strcmp(perturb, ts[i].name) == 0)
        for (int64_t k = 0; k < n; k++) gd[k] *= 1.5f;
      double nmse, cosv;
      bool finite = true;
      compare(gd, gr, n, &nmse, &cosv, &finite, res->acc);
      if (!finite || nmse > TOL_NMSE || cosv < TOL_COS) {
        if (!res->failed || nmse > res->worst_nmse)
          snprintf(res->what, sizeof res->what, "the LoRA gradient %s (%s: NMSE %.3g, cosine %.5f; allowed "
                   "%.0e, %.3f)", ts[i].name, finite ? "finite" : "NOT finite", nmse, cosv, TOL_NMSE, TOL_COS);
        res->failed = true;
      }
      if (nmse > res->worst_nmse || !isfinite(nmse)) res->worst_nmse = nmse;
      gr += n;
      gd += n;
    }
    res->all_nmse = res->acc[1] > 0 ? res->acc[0] / res->acc[1] : 0;
    res->loss_rel = fabs(loss_dev - loss_ref) / fabs(loss_ref);
    res->eval_rel = fabs(ev_dev - ev_ref) / fabs(ev_ref);
    if (!res->failed && res->all_nmse > TOL_NMSE_ALL) {
      snprintf(res->what, sizeof res->what, "the LoRA gradients together (NMSE %.3g; allowed %.0e)", res->all_nmse,
               TOL_NMSE_ALL);
      res->failed = true;
    }
    if (!res->failed && (cnt_dev != cnt_ref || !(res->loss_rel <= TOL_LOSS_REL))) {
      snprintf(res->what, sizeof res->what, "the training loss (%.9g vs the CPU's %.9g over %lld / %lld targets; "
               "allowed relative %.0e)", loss_dev, loss_ref, (long long)cnt_dev, (long long)cnt_ref, TOL_LOSS_REL);
      res->failed = true;
    }
    /* the optimizer step: from the same gradients the same norm and updates,
     * up to a bf16 rounding here and there (stochastic rounding draws the same
     * words on both) */
    res->norm_rel = fabs(norm_dev - norm_ref) / fabs(norm_ref);
    double se = 0, dd = 0;
    for (int64_t i = 0; i < total; i++) {
      double d0 = qt_bf16_to_f32(w0[i]), dr = qt_bf16_to_f32(w_ref[i]) - d0, dv = qt_bf16_to_f32(w_dev[i]) - d0;
      se += (dv - dr) * (dv - dr);
      dd += dr * dr;
    }
    res->update_nmse = dd > 0 ? se / dd : (se > 0 ? INFINITY : 0);
    if (!res->failed && !(res->norm_rel <= TOL_NORM_REL)) {
      snprintf(res->what, sizeof res->what, "the gradient norm of the same gradients (%.9g vs the CPU's %.9g; "
               "allowed relative %.0e)", norm_dev, norm_ref, TOL_NORM_REL);
      res->failed = true;
    }
    if (!res->failed && !(dd > 0 && res->update_nmse <= TOL_UPDATE_NMSE)) {
      snprintf(res->what, sizeof res->what, "the AdamW update of the same gradients (NMSE %.3g of the CPU's "
               "update; allowed %.0e)", res->update_nmse, TOL_UPDATE_NMSE);
      res->failed = true;
    }
    if (!res->failed && !(dec_nmse <= TOL_NMSE && dec_cos >= TOL_COS)) {
      snprintf(res->what, sizeof res->what, "the KV-cache decoder's logits (worst feed NMSE %.3g, cosine %.5f of "
               "the CPU decoder's; allowed %.0e, %.3f)", dec_nmse, dec_cos, TOL_NMSE, TOL_COS);
      res->failed = true;
    }
    if (!res->failed && !(res->eval_rel <= TOL_LOSS_REL)) {
      snprintf(res->what, sizeof res->what, "the evaluation loss (%.9g vs the CPU's %.9g; allowed relative %.0e)",
               ev_dev, ev_ref, TOL_LOSS_REL);
      res->failed = true;
    }
  }
  res->seconds = now_s() - t0;
  if (r == QT_OK && res->failed)
    r = qt_fail(QT_ERR_NUMERIC, "start-up self-check: the %s backend disagrees with the CPU on a tiny built-in "
                "model: %s. Its kernels compute wrong results on this machine: set training.device: cpu to train "
                "on the CPU (and please report this with `qlora-train --version`)", dev->ops->name, res->what);
  free(g_ref);
  free(g_dev);
  free(w0);
  free(w_ref);
  free(w_dev);
  qt_backend_close(&dev);
  qt_backend_close(&ref);
  if (s.mt) qt_model_tape_free(&s.mt);
  if (s.lora) qt_lora_free(&s.lora);
  if (s.model) qt_model_free(&s.model);
  return r;
}

qt_status qt_backend_selfcheck(qt_backend_kind kind, qt_selfcheck_result *res) {
  return qt_backend_selfcheck_ex(kind, NULL, res);
}
