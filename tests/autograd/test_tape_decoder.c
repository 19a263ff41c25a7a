/* The tape on a whole two-layer Llama decoder with LoRA on all seven
 * projections (q, k, v, o, gate, up, down), GQA ratio 2, packed rows of two
 * documents each, tied and untied lm_head (architecture: transformers
 * LlamaDecoderLayer; reference/formats.md section 5):
 * - finite-difference check, in double, of every element of every LoRA gradient;
 * - frozen weights receive no gradient, and gradient memory goes only to LoRA
 *   params and to the activations that need a gradient (bytes counted);
 * - gradient checkpointing on and off give bit-identical gradients (fp32 and fp64);
 * - the fp32 tape agrees with the fp64 tape;
 * - loss and LoRA gradients match transformers + PEFT (golden fixtures from
 *   tools/reference/make_autograd_fixtures.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ag_test_util.h"
#include "autograd/ops.h"
#include "autograd/tape.h"

/* B rows of T tokens; C hidden; H query heads, K kv heads (GQA 2), D head dim
 * (H*D != C on purpose); F MLP width; V vocab; R LoRA rank; L layers. */
enum { B = 2, T = 9, N = B * T, C = 20, H = 4, K = 2, D = 6, F = 28, V = 37, R = 3, L = 2 };
enum { P_INNORM, P_Q, P_K, P_V, P_O, P_POSTNORM, P_GATE, P_UP, P_DOWN, P_LAYER };
enum { NPROJ = 7 }; /* LoRA targets: q k v o gate up down */
static const int proj_param[NPROJ] = {P_Q, P_K, P_V, P_O, P_GATE, P_UP, P_DOWN};
static const int64_t proj_out[NPROJ] = {H * D, K * D, K * D, C, F, F, C};
static const int64_t proj_in[NPROJ] = {C, C, C, H * D, C, C, F};
#define EPS 1e-5
#define LORA_SCALE 2.0
#define KEEP_SCALE (1.0 / 0.9)

/* Master weights in double; the fp32 tape gets float copies. */
typedef struct {
  double *emb, *lm_head, *final_norm;          /* (V, C), (V, C), (C) */
  double *w[L][P_LAYER];                        /* base weights and norms */
  double *A[L][NPROJ], *Bm[L][NPROJ];           /* LoRA (R, In), (O, R) */
  uint8_t *mask[L][NPROJ];                      /* dropout keep masks (N, In) or NULL */
  double *bias[L][NPROJ];                       /* q/k/v biases (O) as in Qwen2, or NULL */
  int32_t ids[N], pos[N], doc[N], targets[N];
  float inv_freq[D / 2];
  bool tied;
} model;

static int64_t wsize(int p) {
  switch (p) {
  case P_INNORM: case P_POSTNORM: return C;
  case P_Q: return H * D * C;
  case P_K: case P_V: return K * D * C;
  case P_O: return C * H * D;
  case P_GATE: case P_UP: return F * C;
  default: return C * F; /* P_DOWN */
  }
}

/* in_features of a base weight (O, In) */
static int64_t wfan_in(int p) { return p == P_O ? H * D : (p == P_DOWN ? F : C); }

static double *rnd(ag_rng *r, int64_t n, double lo, double hi) {
  double *x = malloc((size_t)n * sizeof(double));
  ag_fill(r, x, n, lo, hi);
  return x;
}

static void model_init(model *m, bool tied, bool dropout, uint64_t seed);
/* model_init plus q/k/v biases (Qwen2's attention_bias layout). */
static void model_init_bias(model *m, bool tied, bool dropout, uint64_t seed) {
  model_init(m, tied, dropout, seed);
  ag_rng r = {seed ^ 0xB1A5ull};
  for (int l = 0; l < L; l++)
    for (int j = 0; j < 3; j++) m->bias[l][j] = rnd(&r, proj_out[j], -0.5, 0.5);
}
static void model_init(model *m, bool tied, bool dropout, uint64_t seed) {
  memset(m, 0, sizeof *m);
  ag_rng r = {seed};
  m->tied = tied;
  m->emb = rnd(&r, V * C, -1, 1);
  m->lm_head = tied ? NULL : rnd(&r, V * C, -1, 1);
  m->final_norm = rnd(&r, C, 0.8, 1.2);
  for (int l = 0; l < L; l++) {
    for (int p = 0; p < P_LAYER; p++) {
      bool norm = p == P_INNORM || p == P_POSTNORM;
      double b = norm ? 0 : 1.0 / sqrt((double)wfan_in(p));
      m->w[l][p] = norm ? rnd(&r, C, 0.8, 1.2) : rnd(&r, wsize(p), -b, b);
    }
    for (int j = 0; j < NPROJ; j++) {
      int64_t in = proj_in[j], out = proj_out[j];
      m->A[l][j] = rnd(&r, R * in, -1.0 / sqrt((double)in), 1.0 / sqrt((double)in));
      m->Bm[l][j] = rnd(&r, out * R, -0.5, 0.5); /* nonzero, unlike PEFT's init, so dA != 0 */
      if (dropout) { /* p = 0.1, keyed by (seed, layer, projection) */
        m->mask[l][j] = malloc((size_t)(N * in));
        qt_op_dropout_mask_cpu(m->mask[l][j], N * in, 0.1, seed, (uint64_t)(l * NPROJ + j));
      }
    }
  }
  /* Two documents per row: row 0 splits at 4, row 1 at 6. Positions restart per
   * document; a document's last token predicts nothing (-100), and one more
   * target is masked as a prompt token would be. */
  const int split[B] = {4, 6};
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      int n = b * T + t;
      m->ids[n] = (int32_t)(ag_next(&r) % V);
      m->doc[n] = b * 2 + (t >= split[b]);
      m->pos[n] = t < split[b] ? t : t - split[b];
    }
  for (int n = 0; n < N; n++) {
    bool last = n % T == T - 1 || m->doc[n + 1] != m->doc[n];
    m->targets[n] = last ? QT_IGNORE_INDEX : m->ids[n + 1];
  }
  m->targets[1] = QT_IGNORE_INDEX;
  qt_rope_config rc = {.type = QT_ROPE_LLAMA3, .theta = 10000.0, .factor = 8.0,
                       .low_freq_factor = 1.0, .high_freq_factor = 4.0,
                       .original_max_position_embeddings = 16};
  qt_rope_inv_freq(m->inv_freq, &rc, D);
}

static void model_free(model *m) {
  free(m->emb); free(m->lm_head); free(m->final_norm);
  for (int l = 0; l < L; l++) {
    for (int p = 0; p < P_LAYER; p++) free(m->w[l][p]);
    for (int j = 0; j < NPROJ; j++) {
      free(m->A[l][j]); free(m->Bm[l][j]); free(m->mask[l][j]); free(m->bias[l][j]);
    }
  }
}

/* A model registered on one tape (fp32 or fp64): tensor ids and, for fp32,
 * the float copies the tape borrows. */
typedef struct {
  qt_tape *t;
  bool f64;
  int32_t emb, lm_head, final_norm, w[L][P_LAYER], A[L][NPROJ], Bm[L][NPROJ], bias[L][NPROJ];
  void *gA[L][NPROJ], *gB[L][NPROJ];  /* LoRA gradients (caller-owned, +=) */
  void *copies[64];
  int n_copies;
  /* base weights given by a fill callback (as the 4-bit dequantizer provides them) */
  struct mat_ctx { const double *src; int64_t n; int *calls; bool f64; } mat[L][P_LAYER];
  qt_tape_weight_src wsrc[L][P_LAYER];
  bool use_src[L][P_LAYER];
  int mat_calls;
  const model *m;
  /* per-layer recording context */
  struct layer_ctx { void *self; int l; int32_t x_norm, h_in; } lctx[L];
  int32_t embed_out, final_out, loss;
} bound;

static const void *as_dtype(bound *bd, const double *x, int64_t n) {
  if (bd->f64) return x;
  float *f = malloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) f[i] = (float)x[i];
  bd->copies[bd->n_copies++] = f;
  return f;
}

/* qt_tape_weight_fill: writes the master weight in the tape's dtype. */
static qt_status fill_weight(void *vctx, void *dst) {
  struct mat_ctx *c = vctx;
  (*c->calls)++;
  for (int64_t i = 0; i < c->n; i++) {
    if (c->f64) ((double *)dst)[i] = c->src[i];
    else ((float *)dst)[i] = (float)c->src[i];
  }
  return QT_OK;
}

/* mat_mask: bit p set = base weight p (P_Q..P_DOWN) goes through qt_tape_linear_src. */
static void bind_mat(bound *bd, const model *m, bool f64, bool freeze_layer0, unsigned mat_mask);
static void bind(bound *bd, const model *m, bool f64, bool freeze_layer0) {
  bind_mat(bd, m, f64, freeze_layer0, 0);
}
/* measure: a measuring tape; else act/grad bytes (0: the defaults, 4 and 2 MiB). */
static void bind_cfg(bound *bd, const model *m, bool f64, bool freeze_layer0, unsigned mat_mask,
                     bool measure, size_t act_bytes, size_t grad_bytes, bool ce_fused);
static void bind_mat(bound *bd, const model *m, bool f64, bool freeze_layer0, unsigned mat_mask) {
  bind_cfg(bd, m, f64, freeze_layer0, mat_mask, false, 0, 0, false);
}
/* bind with the cross-entropy gradient formed in forward (ce_grad_in_forward) */
static void bind_fused(bound *bd, const model *m, bool f64) {
  bind_cfg(bd, m, f64, false, 0, false, 0, 0, true);
}
static void bind_cfg(bound *bd, const model *m, bool f64, bool freeze_layer0, unsigned mat_mask,
                     bool measure, size_t act_bytes, size_t grad_bytes, bool ce_fused) {
  memset(bd, 0, sizeof *bd);
  bd->f64 = f64;
  bd->m = m;
  qt_tape_config cfg = {.act_bytes = act_bytes ? act_bytes : 4 << 20,
                        .grad_bytes = grad_bytes ? grad_bytes : 2 << 20, .max_tensors = 512,
                        .max_nodes = 256, .ce_chunk_rows = 5, .ce_grad_in_forward = ce_fused};
  if (measure)
    assert_int_equal(qt_tape_init_measure(&bd->t, f64 ? QT_F64 : QT_F32, &cfg), QT_OK);
  else
    assert_int_equal(qt_tape_init(&bd->t, f64 ? QT_F64 : QT_F32, &cfg), QT_OK);
  qt_tape *t = bd->t;
  size_t es = f64 ? 8 : 4;
  assert_int_equal(qt_tape_frozen(t, "embed_tokens", as_dtype(bd, m->emb, V * C), V, C, &bd->emb), QT_OK);
  if (!m->tied)
    assert_int_equal(qt_tape_frozen(t, "lm_head", as_dtype(bd, m->lm_head, V * C), V, C, &bd->lm_head), QT_OK);
  else
    bd->lm_head = bd->emb;
  assert_int_equal(qt_tape_frozen(t, "norm", as_dtype(bd, m->final_norm, C), 1, C, &bd->final_norm), QT_OK);
  for (int l = 0; l < L; l++) {
    for (int p = 0; p < P_LAYER; p++) {
      int64_t rows = (p == P_INNORM || p == P_POSTNORM) ? 1 : wsize(p) / wfan_in(p);
      if (mat_mask & (1u << p)) {
        bd->mat[l][p] = (struct mat_ctx){m->w[l][p], wsize(p), &bd->mat_calls, f64};
        bd->wsrc[l][p] = (qt_tape_weight_src){.rows = rows, .cols = wsize(p) / rows,
                                              .fill = fill_weight, .ctx = &bd->mat[l][p],
                                              .name = "base (filled)"};
        bd->use_src[l][p] = true;
        bd->w[l][p] = -1;
        continue;
      }
      assert_int_equal(qt_tape_frozen(t, "base", as_dtype(bd, m->w[l][p], wsize(p)), rows,
                                      wsize(p) / rows, &bd->w[l][p]), QT_OK);
    }
    for (int j = 0; j < NPROJ; j++) {
      int64_t in = proj_in[j], out = proj_out[j];
      bd->bias[l][j] = -1;
      if (m->bias[l][j])
        assert_int_equal(qt_tape_frozen(t, "bias", as_dtype(bd, m->bias[l][j], out), 1, out,
                                        &bd->bias[l][j]), QT_OK);
      /* The fp64 tape borrows the master LoRA arrays, so the FD check can perturb them. */
      void *a = (void *)as_dtype(bd, m->A[l][j], R * in), *b = (void *)as_dtype(bd, m->Bm[l][j], out * R);
      if (freeze_layer0 && l == 0) {
        assert_int_equal(qt_tape_frozen(t, "lora_A", a, R, in, &bd->A[l][j]), QT_OK);
        assert_int_equal(qt_tape_frozen(t, "lora_B", b, out, R, &bd->Bm[l][j]), QT_OK);
        continue;
      }
      bd->gA[l][j] = calloc((size_t)(R * in), es);
      bd->gB[l][j] = calloc((size_t)(out * R), es);
      assert_int_equal(qt_tape_trainable(t, "lora_A", a, bd->gA[l][j], R, in, &bd->A[l][j]), QT_OK);
      assert_int_equal(qt_tape_trainable(t, "lora_B", b, bd->gB[l][j], out, R, &bd->Bm[l][j]), QT_OK);
    }
  }
}

static void unbind(bound *bd) {
  qt_tape_free(&bd->t);
  for (int i = 0; i < bd->n_copies; i++) free(bd->copies[i]);
  for (int l = 0; l < L; l++)
    for (int j = 0; j < NPROJ; j++) { free(bd->gA[l][j]); free(bd->gB[l][j]); }
}

static qt_status lin(bound *bd, int l, int j, int32_t x, int32_t *y) {
  qt_tape_lora lo = {.A = bd->A[l][j], .B = bd->Bm[l][j], .scale = LORA_SCALE,
                     .mask = bd->m->mask[l][j], .keep_scale = KEEP_SCALE};
  if (bd->use_src[l][proj_param[j]])
    return qt_tape_linear_src(bd->t, x, &bd->wsrc[l][proj_param[j]], bd->bias[l][j], &lo, y);
  return qt_tape_linear(bd->t, x, bd->w[l][proj_param[j]], bd->bias[l][j], &lo, y);
}

/* transformers LlamaDecoderLayer.forward: h = x + attn(norm(x)); out = h + mlp(norm(h)). */
static qt_status layer_fn(qt_tape *t, void *vctx, int32_t h, int32_t *out) {
  struct layer_ctx *lc = vctx;
  bound *bd = lc->self;
  const model *m = bd->m;
  int l = lc->l;
  int32_t x, q, k, v, qr, kr, a, o, h1, x2, g, u, s, d;
  lc->h_in = h;
  QT_TRY(qt_tape_rmsnorm(t, h, bd->w[l][P_INNORM], EPS, &x));
  lc->x_norm = x;
  QT_TRY(lin(bd, l, 0, x, &q));
  QT_TRY(lin(bd, l, 1, x, &k));
  QT_TRY(lin(bd, l, 2, x, &v));
  QT_TRY(qt_tape_rope(t, q, H, D, m->pos, m->inv_freq, &qr));
  QT_TRY(qt_tape_rope(t, k, K, D, m->pos, m->inv_freq, &kr));
  QT_TRY(qt_tape_attention(t, qr, kr, v, B, T, H, K, D, m->doc, &a));
  QT_TRY(lin(bd, l, 3, a, &o));
  QT_TRY(qt_tape_add(t, h, o, &h1));
  QT_TRY(qt_tape_rmsnorm(t, h1, bd->w[l][P_POSTNORM], EPS, &x2));
  QT_TRY(lin(bd, l, 4, x2, &g));
  QT_TRY(lin(bd, l, 5, x2, &u));
  QT_TRY(qt_tape_swiglu(t, g, u, &s));
  QT_TRY(lin(bd, l, 6, s, &d));
  return qt_tape_add(t, h1, d, out);
}

/* Records the model and returns the summed loss and target count. */
static double forward(bound *bd, bool ckpt, int64_t *count) {
  qt_tape *t = bd->t;
  qt_tape_reset(t);
  int32_t h, xf, loss;
  assert_int_equal(qt_tape_embedding(t, bd->emb, bd->m->ids, N, &h), QT_OK);
  bd->embed_out = h;
  for (int l = 0; l < L; l++) {
    bd->lctx[l] = (struct layer_ctx){.self = bd, .l = l};
    assert_int_equal(qt_tape_layer(t, layer_fn, &bd->lctx[l], h, ckpt, &h), QT_OK);
  }
  assert_int_equal(qt_tape_rmsnorm(t, h, bd->final_norm, EPS, &xf), QT_OK);
  bd->final_out = xf;
  double sum;
  assert_int_equal(qt_tape_cross_entropy(t, xf, bd->lm_head, bd->m->targets, &loss, &sum, count), QT_OK);
  bd->loss = loss;
  return sum;
}

static void zero_grads(bound *bd) {
  size_t es = bd->f64 ? 8 : 4;
  for (int l = 0; l < L; l++)
    for (int j = 0; j < NPROJ; j++) {
      if (bd->gA[l][j]) memset(bd->gA[l][j], 0, (size_t)(R * proj_in[j]) * es);
      if (bd->gB[l][j]) memset(bd->gB[l][j], 0, (size_t)(proj_out[j] * R) * es);
    }
}

/* loss / count, and LoRA gradients of it (zeroed first). */
static double forward_backward(bound *bd, bool ckpt) {
  int64_t cnt;
  zero_grads(bd);
  double sum = forward(bd, ckpt, &cnt);
  assert_true(cnt > 0);
  qt_status s = qt_tape_backward(bd->t, bd->loss, 1.0 / (double)cnt);
  if (s != QT_OK) fprintf(stderr, "backward: %s\n", qt_error_message());
  assert_int_equal(s, QT_OK);
  return sum / (double)cnt;
}

/* ---- finite differences over every LoRA element ---- */
static void check_fd(bool tied, bool dropout) {
  model m;
  if (tied)
    model_init(&m, tied, dropout, 1234);
  else
    model_init_bias(&m, tied, dropout, 4321); /* also covers the bias path of the linear */
  bound bd;
  if (tied)
    bind_fused(&bd, &m, true); /* the tied case also covers the fused cross-entropy */
  else
    bind(&bd, &m, true, false);
  forward_backward(&bd, false);
  const double h = 1e-6;
  double worst = 0;
  for (int l = 0; l < L; l++)
    for (int j = 0; j < NPROJ; j++)
      for (int which = 0; which < 2; which++) {
        double *p = which ? m.Bm[l][j] : m.A[l][j];
        const double *g = which ? bd.gB[l][j] : bd.gA[l][j];
        int64_t n = which ? proj_out[j] * R : R * proj_in[j];
        double *fd = malloc((size_t)n * sizeof(double));
        for (int64_t i = 0; i < n; i++) {
          double x0 = p[i];
          int64_t cnt;
          p[i] = x0 + h;
          double fp = forward(&bd, false, &cnt) / (double)cnt;
          p[i] = x0 - h;
          double fm = forward(&bd, false, &cnt) / (double)cnt;
          p[i] = x0;
          fd[i] = (fp - fm) / (2 * h);
        }
        double err = ag_rel_err(g, fd, n);
        if (err > worst) worst = err;
        if (err >= 1e-4 || ag_norm(fd, n) == 0)
          fprintf(stderr, "layer %d proj %d %s: rel err %.3g |fd| %.3g\n", l, j, which ? "B" : "A",
                  err, ag_norm(fd, n));
        assert_true(err < 1e-4);
        assert_true(ag_norm(fd, n) > 0);
        free(fd);
      }
  fprintf(stderr, "decoder FD (%s, dropout %s, q/k/v bias %s, CE grad in forward %s): worst LoRA relative error %.3g\n",
          tied ? "tied" : "untied", dropout ? "on" : "off", tied ? "off" : "on", tied ? "on" : "off", worst);
  unbind(&bd);
  model_free(&m);
}
static void test_fd_untied_dropout(void **st) { (void)st; check_fd(false, true); }
static void test_fd_tied(void **st) { (void)st; check_fd(true, false); }

/* ---- frozen weights and gradient memory ---- */
static void check_memory(bool freeze_layer0) {
  model m;
  model_init(&m, false, true, 99);
  bound bd;
  bind(&bd, &m, false, freeze_layer0);
  forward_backward(&bd, false);
  qt_tape *t = bd.t;
  /* Frozen weights: no gradient. */
  assert_null(qt_tape_grad(t, bd.emb));
  assert_null(qt_tape_grad(t, bd.lm_head));
  assert_null(qt_tape_grad(t, bd.final_norm));
  for (int l = 0; l < L; l++)
    for (int p = 0; p < P_LAYER; p++) assert_null(qt_tape_grad(t, bd.w[l][p]));
  /* Nothing upstream of the first trainable op gets a gradient. */
  assert_null(qt_tape_grad(t, bd.embed_out));
  assert_false(qt_tape_requires_grad(t, bd.embed_out));
  assert_null(qt_tape_grad(t, bd.lctx[0].x_norm));
  /* Every trainable LoRA tensor got a nonzero gradient. */
  for (int l = freeze_layer0 ? 1 : 0; l < L; l++)
    for (int j = 0; j < NPROJ; j++) {
      const float *ga = qt_tape_grad(t, bd.A[l][j]), *gb = qt_tape_grad(t, bd.Bm[l][j]);
      assert_ptr_equal(ga, bd.gA[l][j]);
      assert_ptr_equal(gb, bd.gB[l][j]);
      double na = 0, nb = 0;
      for (int64_t i = 0; i < R * proj_in[j]; i++) na += fabs(ga[i]);
      for (int64_t i = 0; i < proj_out[j] * R; i++) nb += fabs(gb[i]);
      assert_true(na > 0 && nb > 0);
    }
  /* Activation gradients, counted from the architecture: per layer whose input
   * or LoRA needs a gradient, q/rope(q)/attn (H*D), k/rope(k)/v (K*D), o, h1,
   * norm2, down, h2 (C), gate/up/swiglu (F), plus norm1 (C) when the layer input
   * needs a gradient; then the final norm (C) and the loss (1). The embedding
   * output and layer 0's norm1 need none. A layer whose LoRAs are frozen and
   * whose input needs no gradient needs none at all. */
  int64_t elems = 0, tensors = 0;
  for (int l = 0; l < L; l++) {
    bool input_needs = l > (freeze_layer0 ? 1 : 0);
    bool lora_trainable = !(freeze_layer0 && l == 0);
    if (!input_needs && !lora_trainable) continue;
    elems += N * (3 * H * D + 3 * K * D + 5 * C + 3 * F);
    tensors += 14;
    if (input_needs) { elems += N * C; tensors += 1; }
  }
  elems += N * C + 1;
  tensors += 2;
  qt_tape_stats s = qt_tape_get_stats(t);
  assert_int_equal(s.grad_tensors, tensors);
  assert_int_equal(s.grad_tensor_bytes, (size_t)elems * sizeof(float));
  fprintf(stderr, "gradient memory (layer 0 LoRA %s): %d activation gradients, %zu bytes (expected %lld)\n",
          freeze_layer0 ? "frozen" : "trainable", (int)s.grad_tensors, s.grad_tensor_bytes,
          (long long)elems * 4);
  unbind(&bd);
  model_free(&m);
}
static void test_frozen_and_grad_memory(void **st) { (void)st; check_memory(false); }
static void test_grad_memory_layer0_frozen(void **st) { (void)st; check_memory(true); }

/* ---- gradient checkpointing: bit-identical ---- */
static void check_ckpt(bool f64) {
  model m;
  model_init(&m, false, true, 7);
  bound off, on;
  bind(&off, &m, f64, false);
  bind(&on, &m, f64, false);
  double l_off = forward_backward(&off, false);
  double l_on = forward_backward(&on, true);
  assert_memory_equal(&l_off, &l_on, sizeof l_off);
  size_t es = f64 ? 8 : 4;
  for (int l = 0; l < L; l++)
    for (int j = 0; j < NPROJ; j++) {
      assert_memory_equal(off.gA[l][j], on.gA[l][j], (size_t)(R * proj_in[j]) * es);
      assert_memory_equal(off.gB[l][j], on.gB[l][j], (size_t)(proj_out[j] * R) * es);
    }
  qt_tape_stats so = qt_tape_get_stats(off.t), sc = qt_tape_get_stats(on.t);
  fprintf(stderr, "checkpointing (%s): activation arena peak %zu -> %zu bytes, gradient peak %zu -> %zu\n",
          f64 ? "fp64" : "fp32", so.act_peak, sc.act_peak, so.grad_peak, sc.grad_peak);
  assert_true(sc.act_peak < so.act_peak);
  assert_true(sc.grad_peak < so.grad_peak);
  unbind(&off);
  unbind(&on);
  model_free(&m);
}
static void test_checkpoint_bit_identical(void **st) {
  (void)st;
  check_ckpt(false);
  check_ckpt(true);
}

/* ---- fp32 tape vs fp64 tape; repeated steps; accumulation ---- */
static void test_f32_vs_f64_and_reuse(void **st) {
  (void)st;
  model m;
  model_init(&m, true, true, 11);
  bound b32, b64;
  bind(&b32, &m, false, false);
  bind(&b64, &m, true, false);
  double l32 = forward_backward(&b32, false), l64 = forward_backward(&b64, false);
  assert_true(fabs(l32 - l64) <= 1e-5 * fabs(l64));
  double worst = 0;
  for (int l = 0; l < L; l++)
    for (int j = 0; j < NPROJ; j++)
      for (int which = 0; which < 2; which++) {
        int64_t n = which ? proj_out[j] * R : R * proj_in[j];
        const float *g32 = which ? b32.gB[l][j] : b32.gA[l][j];
        const double *g64 = which ? b64.gB[l][j] : b64.gA[l][j];
        double *g = malloc((size_t)n * sizeof(double));
        for (int64_t i = 0; i < n; i++) g[i] = g32[i];
        double e = ag_rel_err(g, g64, n);
        if (e > worst) worst = e;
        free(g);
      }
  fprintf(stderr, "fp32 vs fp64 tape: loss rel diff %.3g, worst LoRA grad rel diff %.3g\n",
          fabs(l32 - l64) / fabs(l64), worst);
  assert_true(worst < 1e-4); /* fp32 rounding through ~30 ops; observed ~1e-6 */

  /* A second step on the reset tape gives bit-identical results, and a backward
   * without zeroing accumulates (micro-batches add up). */
  size_t bytes = (size_t)(R * proj_in[0]) * sizeof(float);
  float *first = malloc(bytes);
  memcpy(first, b32.gA[1][0], bytes);
  double again = forward_backward(&b32, false);
  assert_memory_equal(&again, &l32, sizeof again);
  assert_memory_equal(first, b32.gA[1][0], bytes);
  int64_t cnt;
  forward(&b32, false, &cnt);
  assert_int_equal(qt_tape_backward(b32.t, b32.loss, 1.0 / (double)cnt), QT_OK);
  const float *acc = b32.gA[1][0];
  for (size_t i = 0; i < bytes / sizeof(float); i++) assert_true(acc[i] == 2.0f * first[i]);
  free(first);
  unbind(&b32);
  unbind(&b64);
  model_free(&m);
}

/* An arena too small is a status, not a crash. */
static void test_arena_exhausted(void **st) {
  (void)st;
  qt_tape *t;
  qt_tape_config cfg = {.act_bytes = 1024, .grad_bytes = 1024, .max_tensors = 8, .max_nodes = 8,
                        .ce_chunk_rows = 4};
  assert_int_equal(qt_tape_init(&t, QT_F32, &cfg), QT_OK);
  static float wte[V * C];
  int32_t emb, h;
  int32_t ids[N] = {0};
  assert_int_equal(qt_tape_frozen(t, "embed_tokens", wte, V, C, &emb), QT_OK);
  assert_int_equal(qt_tape_embedding(t, emb, ids, N, &h), QT_ERR_NOMEM);
  assert_non_null(strstr(qt_error_message(), "arena"));
  qt_tape_free(&t);
  assert_null(t);
  /* too many tensors / ops for the configured tables */
  cfg = (qt_tape_config){.act_bytes = 1 << 20, .grad_bytes = 1 << 20, .max_tensors = 3,
                         .max_nodes = 1, .ce_chunk_rows = 4};
  assert_int_equal(qt_tape_init(&t, QT_F32, &cfg), QT_OK);
  assert_int_equal(qt_tape_frozen(t, "embed_tokens", wte, V, C, &emb), QT_OK);
  assert_int_equal(qt_tape_embedding(t, emb, ids, N, &h), QT_OK);
  int32_t h2;
  assert_int_equal(qt_tape_add(t, h, h, &h2), QT_ERR_NOMEM); /* tensor fits, the node does not */
  assert_non_null(strstr(qt_error_message(), "max_nodes"));
  assert_int_equal(qt_tape_add(t, h, h, &h2), QT_ERR_NOMEM); /* now the tensor table is full */
  assert_non_null(strstr(qt_error_message(), "max_tensors"));
  qt_tape_free(&t);
}

/* ---- transformers + PEFT golden values ---- */
static const char *const proj_name[NPROJ] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};

typedef struct {
  double loss_sum;
  int64_t count;
  double *gA[L][NPROJ], *gB[L][NPROJ];
} golden;

/* Reads tests/golden/autograd/llama_lora_<tied|untied>.txt (format in
 * tools/reference/make_autograd_fixtures.py): draws every weight from its
 * splitmix64 recipe, sets ids, documents, positions (restarting per document)
 * and targets (labels shifted by one within each document, -100 at a
 * document's last token, as transformers does per sequence). */
static void model_init_golden(model *m, golden *g, bool tied) {
  char path[512];
  snprintf(path, sizeof path, "%s/golden/autograd/llama_lora_%s.txt", QLORA_TEST_DIR,
           tied ? "tied" : "untied");
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  memset(m, 0, sizeof *m);
  memset(g, 0, sizeof *g);
  m->tied = tied;
  int32_t labels[N];
  char key[64], name[96];
  while (fscanf(f, "%63s", key) == 1) {
    if (key[0] == '#') {
      int c;
      while ((c = fgetc(f)) != '\n' && c != EOF) {}
    } else if (!strcmp(key, "config")) {
      char k[16];
      double v;
      assert_int_equal(fscanf(f, "%15s %lf", k, &v), 2);
      const struct { const char *k; double v; } want[] = {
          {"B", B}, {"T", T}, {"C", C}, {"H", H}, {"K", K}, {"D", D}, {"F", F}, {"V", V},
          {"R", R}, {"L", L}, {"tied", tied}, {"lora_alpha", LORA_SCALE * R}};
      for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strcmp(k, want[i].k)) assert_true(v == want[i].v);
    } else if (!strcmp(key, "tensor")) {
      long long rows, cols;
      unsigned long long seed;
      double lo, hi;
      assert_int_equal(fscanf(f, "%95s %lld %lld %llu %lf %lf", name, &rows, &cols, &seed, &lo, &hi), 6);
      ag_rng r = {seed};
      double *x = rnd(&r, rows * cols, lo, hi), **dst = NULL;
      int l = -1, j;
      char rest[96];
      if (!strcmp(name, "embed")) dst = &m->emb;
      else if (!strcmp(name, "lm_head")) dst = &m->lm_head;
      else if (!strcmp(name, "norm")) dst = &m->final_norm;
      else if (sscanf(name, "L%d.%95s", &l, rest) == 2) {
        if (!strcmp(rest, "input_layernorm")) dst = &m->w[l][P_INNORM];
        if (!strcmp(rest, "post_attention_layernorm")) dst = &m->w[l][P_POSTNORM];
        for (j = 0; j < NPROJ; j++) {
          size_t pl = strlen(proj_name[j]);
          if (strncmp(rest, proj_name[j], pl)) continue;
          if (!rest[pl]) dst = &m->w[l][proj_param[j]];
          else if (!strcmp(rest + pl, ".lora_A")) { dst = &m->A[l][j]; assert_int_equal(cols, proj_in[j]); }
          else if (!strcmp(rest + pl, ".lora_B")) { dst = &m->Bm[l][j]; assert_int_equal(rows, proj_out[j]); }
        }
      }
      assert_non_null(dst);
      assert_null(*dst);
      *dst = x;
    } else if (!strcmp(key, "ids") || !strcmp(key, "labels") || !strcmp(key, "doc")) {
      int32_t *dst = key[0] == 'i' ? m->ids : key[0] == 'l' ? labels : m->doc;
      for (int n = 0; n < N; n++) assert_int_equal(fscanf(f, "%d", &dst[n]), 1);
    } else if (!strcmp(key, "loss_sum")) {
      assert_int_equal(fscanf(f, "%lf", &g->loss_sum), 1);
    } else if (!strcmp(key, "count")) {
      long long c;
      assert_int_equal(fscanf(f, "%lld", &c), 1);
      g->count = c;
    } else if (!strcmp(key, "grad")) {
      long long n;
      int l, j;
      assert_int_equal(fscanf(f, "%95s %lld", name, &n), 2);
      assert_int_equal(sscanf(name, "L%d.", &l), 1);
      for (j = 0; j < NPROJ; j++)
        if (strstr(name, proj_name[j]) == strchr(name, '.') + 1) break;
      assert_true(l >= 0 && l < L && j < NPROJ);
      bool isB = strstr(name, ".lora_B") != NULL;
      double **dst = isB ? &g->gB[l][j] : &g->gA[l][j];
      assert_int_equal(n, isB ? proj_out[j] * R : R * proj_in[j]);
      *dst = malloc((size_t)n * sizeof(double));
      for (long long i = 0; i < n; i++) assert_int_equal(fscanf(f, "%lf", &(*dst)[i]), 1);
    } else {
      fail_msg("%s: unknown key %s", path, key);
    }
  }
  fclose(f);
  for (int n = 0; n < N; n++) {
    bool first = n % T == 0 || m->doc[n - 1] != m->doc[n];
    m->pos[n] = first ? 0 : m->pos[n - 1] + 1;
    bool last = n % T == T - 1 || m->doc[n + 1] != m->doc[n];
    m->targets[n] = last ? QT_IGNORE_INDEX : labels[n + 1];
  }
  qt_rope_config rc = {.type = QT_ROPE_LLAMA3, .theta = 10000.0, .factor = 8.0,
                       .low_freq_factor = 1.0, .high_freq_factor = 4.0,
                       .original_max_position_embeddings = 16};
  qt_rope_inv_freq(m->inv_freq, &rc, D);
}

/* Loss and every LoRA gradient against transformers + PEFT. The reference runs
 * in float64 but transformers itself rounds to fp32 in RMSNorm
 * (hidden_states.to(torch.float32)), the softmax (dtype=torch.float32) and the
 * loss (logits.float()), so agreement is at fp32 level: the bounds are 1e-5
 * (loss) and 1e-4 (gradients), relative. A layout or masking error (rotate_half
 * vs interleaved, kv-head mapping, a token seeing another document) is O(1). */
static void check_golden(bool tied) {
  model m;
  golden g;
  model_init_golden(&m, &g, tied);
  for (int f64 = 0; f64 < 2; f64++) {
    bound bd;
    if (f64)
      bind(&bd, &m, true, false);
    else
      bind_fused(&bd, &m, false);
    int64_t cnt;
    zero_grads(&bd);
    double sum = forward(&bd, f64 == 1, &cnt);
    assert_int_equal(cnt, g.count);
    assert_int_equal(qt_tape_backward(bd.t, bd.loss, 1.0 / (double)cnt), QT_OK);
    double lerr = fabs(sum - g.loss_sum) / fabs(g.loss_sum), worst = 0;
    for (int l = 0; l < L; l++)
      for (int j = 0; j < NPROJ; j++)
        for (int which = 0; which < 2; which++) {
          int64_t n = which ? proj_out[j] * R : R * proj_in[j];
          const void *got = which ? bd.gB[l][j] : bd.gA[l][j];
          double *gd = malloc((size_t)n * sizeof(double));
          for (int64_t i = 0; i < n; i++)
            gd[i] = f64 ? ((const double *)got)[i] : ((const float *)got)[i];
          double e = ag_rel_err(gd, which ? g.gB[l][j] : g.gA[l][j], n);
          if (e > worst) worst = e;
          if (e >= 1e-4) fprintf(stderr, "layer %d %s %s: rel err %.3g\n", l, proj_name[j], which ? "B" : "A", e);
          free(gd);
        }
    fprintf(stderr, "vs transformers+PEFT (%s, %s tape%s): loss rel err %.3g, worst LoRA grad rel err %.3g\n",
            tied ? "tied" : "untied", f64 ? "fp64" : "fp32", f64 ? ", checkpointed" : ", CE grad in forward", lerr, worst);
    assert_true(lerr < 1e-5);
    assert_true(worst < 1e-4);
    unbind(&bd);
  }
  for (int l = 0; l < L; l++)
    for (int j = 0; j < NPROJ; j++) { free(g.gA[l][j]); free(g.gB[l][j]); }
  model_free(&m);
}
static void test_golden_untied(void **st) { (void)st; check_golden(false); }
static void test_golden_tied(void **st) { (void)st; check_golden(true); }

/* Base weights given by a fill callback (qt_tape_linear_src, the hook the NF4
 * dequantizer plugs into) give bit-identical gradients, and are filled only
 * where needed: once per forward (and per recompute), and in backward only when
 * the input of the linear needs a gradient (layer 0's q_proj input does not). */
static void test_materialized_weights(void **st) {
  (void)st;
  model m;
  model_init(&m, false, true, 5);
  const unsigned mask = (1u << P_Q) | (1u << P_GATE) | (1u << P_DOWN);
  for (int ckpt = 0; ckpt < 2; ckpt++) {
    bound ref, mat;
    bind(&ref, &m, false, false);
    bind_mat(&mat, &m, false, false, mask);
    double a = forward_backward(&ref, ckpt), b = forward_backward(&mat, ckpt);
    assert_memory_equal(&a, &b, sizeof a);
    for (int l = 0; l < L; l++)
      for (int j = 0; j < NPROJ; j++) {
        assert_memory_equal(ref.gA[l][j], mat.gA[l][j], (size_t)(R * proj_in[j]) * 4);
        assert_memory_equal(ref.gB[l][j], mat.gB[l][j], (size_t)(proj_out[j] * R) * 4);
      }
    /* forward 3 per layer (+3 per layer recomputed); backward 3 per layer minus layer 0's q_proj */
    assert_int_equal(mat.mat_calls, 3 * L + (ckpt ? 3 * L : 0) + 3 * L - 1);
    unbind(&ref);
    unbind(&mat);
  }
  model_free(&m);
}

/* A measuring tape records a step without computing and reports the exact
 * arena sizes; a real tape of exactly that size runs the same step (with a
 * filled base weight too), and one allocation unit (64 bytes) less of either
 * arena fails with QT_ERR_NOMEM. */
static void test_measure_then_allocate(void **st) {
  (void)st;
  model m;
  model_init(&m, false, true, 21);
  const unsigned mask = 1u << P_UP;
  for (int ckpt = 0; ckpt < 2; ckpt++) {
    bound meas;
    bind_cfg(&meas, &m, false, false, mask, true, 0, 0, ckpt == 1);
    forward_backward(&meas, ckpt);
    qt_tape_stats ms = qt_tape_get_stats(meas.t);
    assert_int_equal(meas.mat_calls, 0); /* nothing computed, nothing filled */
    unbind(&meas);
    bound real;
    bind_cfg(&real, &m, false, false, mask, false, ms.act_peak, ms.grad_peak, ckpt == 1);
    double loss = forward_backward(&real, ckpt);
    assert_true(loss > 0);
    qt_tape_stats rs = qt_tape_get_stats(real.t);
    assert_int_equal(rs.act_peak, ms.act_peak);
    assert_int_equal(rs.grad_peak, ms.grad_peak);
    assert_int_equal(rs.grad_tensor_bytes, ms.grad_tensor_bytes);
    fprintf(stderr, "measured plan (ckpt %s): activations %zu bytes, gradients %zu bytes\n",
            ckpt ? "on" : "off", ms.act_peak, ms.grad_peak);
    unbind(&real);
    for (int which = 0; which < 2; which++) {
      bound small;
      bind_cfg(&small, &m, false, false, mask, false, ms.act_peak - (which ? 0 : 64),
               ms.grad_peak - (which ? 64 : 0), ckpt == 1);
      int64_t cnt;
      qt_tape_reset(small.t);
      int32_t h, xf, loss_id;
      qt_status s = qt_tape_embedding(small.t, small.emb, m.ids, N, &h);
      for (int l = 0; l < L && s == QT_OK; l++) {
        small.lctx[l] = (struct layer_ctx){.self = &small, .l = l};
        s = qt_tape_layer(small.t, layer_fn, &small.lctx[l], h, ckpt, &h);
      }
      double sum;
      if (s == QT_OK) s = qt_tape_rmsnorm(small.t, h, small.final_norm, EPS, &xf);
      if (s == QT_OK) s = qt_tape_cross_entropy(small.t, xf, small.lm_head, m.targets, &loss_id, &sum, &cnt);
      if (s == QT_OK) s = qt_tape_backward(small.t, loss_id, 1.0 / (double)cnt);
      assert_int_equal(s, QT_ERR_NOMEM);
      unbind(&small);
    }
  }
  model_free(&m);
}

/* Cross-entropy gradient formed in forward vs recomputed in backward: loss and
 * gradients equal to rounding (fp64 1e-12, fp32 1e-5). */
static void test_ce_fused_vs_recompute(void **st) {
  (void)st;
  model m;
  model_init(&m, false, true, 31);
  for (int f64 = 0; f64 < 2; f64++) {
    bound a, b;
    bind(&a, &m, f64, false);
    bind_fused(&b, &m, f64);
    double la = forward_backward(&a, false), lb = forward_backward(&b, false);
    /* the fused pass sums row losses kept in double; the plain one rounds each
     * row loss to the storage type first */
    assert_true(fabs(la - lb) <= (f64 ? 1e-14 : 1e-6) * fabs(la));
    double worst = 0;
    for (int l = 0; l < L; l++)
      for (int j = 0; j < NPROJ; j++)
        for (int which = 0; which < 2; which++) {
          int64_t n = which ? proj_out[j] * R : R * proj_in[j];
          const void *ga = which ? a.gB[l][j] : a.gA[l][j], *gb = which ? b.gB[l][j] : b.gA[l][j];
          double *x = malloc((size_t)n * 8), *y = malloc((size_t)n * 8);
          for (int64_t i = 0; i < n; i++) {
            x[i] = f64 ? ((const double *)ga)[i] : ((const float *)ga)[i];
            y[i] = f64 ? ((const double *)gb)[i] : ((const float *)gb)[i];
          }
          double e = ag_rel_err(x, y, n);
          if (e > worst) worst = e;
          free(x);
          free(y);
        }
    fprintf(stderr, "CE grad in forward vs recompute (%s): worst LoRA grad rel diff %.3g\n",
            f64 ? "fp64" : "fp32", worst);
    assert_true(worst < (f64 ? 1e-12 : 1e-5));
    unbind(&a);
    unbind(&b);
  }
  model_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fd_untied_dropout),
      cmocka_unit_test(test_fd_tied),
      cmocka_unit_test(test_frozen_and_grad_memory),
      cmocka_unit_test(test_grad_memory_layer0_frozen),
      cmocka_unit_test(test_checkpoint_bit_identical),
      cmocka_unit_test(test_f32_vs_f64_and_reuse),
      cmocka_unit_test(test_arena_exhausted),
      cmocka_unit_test(test_materialized_weights),
      cmocka_unit_test(test_measure_then_allocate),
      cmocka_unit_test(test_ce_fused_vs_recompute),
      cmocka_unit_test(test_golden_untied),
      cmocka_unit_test(test_golden_tied),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
