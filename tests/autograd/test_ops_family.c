/* The ops the Qwen3 / Gemma 2/3 / Phi-3 families add (autograd/ops.h, tape.h):
 * GeGLU, per-head RMSNorm, column slice, scale, and cross-entropy with
 * final-logit soft-capping (plus qt_op_softcap_cpu).
 *
 *  - finite differences of the fp64 twins (h = 1e-6, norm-wise bound 1e-4 as
 *    test_ops_grad.c), each backward also run with acc = 0 into a NaN-filled
 *    buffer (must overwrite every element) and acc = 1 into random values
 *    (must add);
 *  - a tape graph (scale -> checkpointed layer with two overlapping slices of
 *    its input, GeGLU, a linear, optional residual -> per-head RMSNorm ->
 *    soft-capped cross-entropy), its gradient against finite differences of
 *    the loss, checkpointed vs not bit for bit, fp32 vs fp64, and on arenas of
 *    exactly the measured size;
 *  - golden values from torch / transformers (tests/golden/autograd/family_ops.txt,
 *    tools/reference/make_autograd_fixtures.py family_ops_fixture): GeGLU
 *    (ACT2FN["gelu_pytorch_tanh"]), Qwen3RMSNorm over heads, Gemma2's final
 *    soft-capping + cross_entropy, for both twins. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ag_test_util.h"
#include "autograd/ops.h"
#include "autograd/tape.h"

#define FD_H 1e-6
#define FD_TOL 1e-4

/* ---- finite-difference harness for the fp64 kernels ----------------------- */
typedef struct fd_op fd_op;
struct fd_op {
  const char *name;
  int n_in;
  double *in[2];
  int64_t in_n[2];
  int check[2];
  double *out, *r;
  int64_t out_n;
  void (*fwd)(fd_op *o);
  void (*bwd)(fd_op *o, double **g, int acc); /* g[i] (+)= d(sum out*r)/d in[i] */
  int64_t d[4];
  double s;       /* softcap */
  int32_t *tg;    /* targets */
  double *w1, *w2; /* scratch */
};

static double objective(fd_op *o) {
  o->fwd(o);
  double s = 0;
  for (int64_t i = 0; i < o->out_n; i++) s += o->out[i] * o->r[i];
  return s;
}

static void fd_run(fd_op *o) {
  ag_rng rng = {0xFA11ull + (uint64_t)o->d[0] * 131 + (uint64_t)o->d[1] * 17};
  o->r = malloc((size_t)o->out_n * sizeof(double));
  ag_fill(&rng, o->r, o->out_n, -1, 1);
  for (int i = 0; i < o->n_in; i++) {
    if (!o->check[i]) continue;
    int64_t n = o->in_n[i];
    double *g = malloc((size_t)n * 8), *g2 = malloc((size_t)n * 8), *z = malloc((size_t)n * 8);
    double *gg[2] = {NULL, NULL}, *gg2[2] = {NULL, NULL};
    for (int64_t j = 0; j < n; j++) g[j] = NAN;
    ag_fill(&rng, z, n, -1, 1);
    memcpy(g2, z, (size_t)n * 8);
    gg[i] = g;
    gg2[i] = g2;
    o->fwd(o);
    o->bwd(o, gg, 0);
    o->fwd(o);
    o->bwd(o, gg2, 1);
    assert_true(ag_all_finite(g, n));
    double *fd = malloc((size_t)n * 8);
    for (int64_t j = 0; j < n; j++) {
      double x0 = o->in[i][j];
      o->in[i][j] = x0 + FD_H;
      double fp = objective(o);
      o->in[i][j] = x0 - FD_H;
      double fm = objective(o);
      o->in[i][j] = x0;
      fd[j] = (fp - fm) / (2 * FD_H);
    }
    double err = ag_rel_err(g, fd, n);
    for (int64_t j = 0; j < n; j++) g2[j] -= z[j];
    double err_acc = ag_rel_err(g2, g, n);
    if (err >= FD_TOL || err_acc >= 1e-10 || getenv("AG_VERBOSE"))
      fprintf(stderr, "%s d=[%lld %lld %lld %lld] s=%g input %d: rel err %.3g (acc %.3g)\n",
              o->name, (long long)o->d[0], (long long)o->d[1], (long long)o->d[2],
              (long long)o->d[3], o->s, i, err, err_acc);
    assert_true(err < FD_TOL);
    assert_true(err_acc < 1e-10);
    assert_true(ag_norm(fd, n) > 0);
    free(fd); free(g); free(g2); free(z);
  }
  free(o->r);
}

static double *rnd(ag_rng *r, int64_t n, double lo, double hi) {
  double *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  ag_fill(r, x, n, lo, hi);
  return x;
}

/* ---- GeGLU ---- */
static void geglu_fwd(fd_op *o) { qt_op_geglu_forward_cpu_f64(o->out, o->in[0], o->in[1], o->d[0]); }
static void geglu_bwd(fd_op *o, double **g, int acc) {
  qt_op_geglu_backward_cpu_f64(g[0], g[1], acc, o->r, o->in[0], o->in[1], o->d[0]);
}
static void test_geglu_fd(void **st) {
  (void)st;
  const int64_t ns[] = {1, 7, 65, 4100}; /* 4100: two spans of 4096 */
  for (size_t s = 0; s < 4; s++) {
    ag_rng r = {s + 101};
    int64_t n = ns[s];
    fd_op o = {.name = "geglu", .n_in = 2, .in = {rnd(&r, n, -5, 5), rnd(&r, n, -2, 2)},
               .in_n = {n, n}, .check = {1, 1}, .out = malloc((size_t)n * 8), .out_n = n,
               .fwd = geglu_fwd, .bwd = geglu_bwd, .d = {n}};
    fd_run(&o);
    free(o.in[0]); free(o.in[1]); free(o.out);
  }
}

/* fp32 twin against fp64 at the extremes: finite, signed zeros far left, x far right */
static void test_geglu_extremes(void **st) {
  (void)st;
  const float g[] = {-FLT_MAX, -1e20f, -40.0f, -12.0f, -1e-30f, 0.0f, 1e-30f, 3.0f, 12.0f, 1e20f,
                     FLT_MAX};
  enum { n = sizeof g / sizeof g[0] };
  float up[n], out[n], dg[n], du[n], one[n];
  for (int i = 0; i < n; i++) up[i] = one[i] = 1.0f;
  qt_op_geglu_forward_cpu(out, g, up, n);
  qt_op_geglu_backward_cpu(dg, du, 0, one, g, up, n);
  for (int i = 0; i < n; i++) {
    assert_true(isfinite(out[i]) && isfinite(dg[i]) && isfinite(du[i]));
    assert_true(out[i] == du[i]); /* d out / d up = gelu(g) */
    if (g[i] <= -40.0f) assert_true(out[i] == 0.0f && dg[i] == 0.0f);
    if (g[i] >= 12.0f) assert_true(out[i] == g[i] && dg[i] == 1.0f);
  }
}

/* ---- column slice ---- */
static void slice_fwd(fd_op *o) {
  qt_op_slice_cols_forward_cpu_f64(o->out, o->in[0], o->d[0], o->d[1], o->d[2], o->d[3]);
}
static void slice_bwd(fd_op *o, double **g, int acc) {
  qt_op_slice_cols_backward_cpu_f64(g[0], acc, o->r, o->d[0], o->d[1], o->d[2], o->d[3]);
}
static void test_slice_fd(void **st) {
  (void)st;
  const int64_t shapes[][4] = {{1, 1, 0, 1}, {5, 7, 2, 3}, {3, 65, 60, 5}, {4, 9, 0, 9}, {7, 63, 0, 21}};
  for (size_t s = 0; s < 5; s++) {
    ag_rng r = {s + 201};
    int64_t N = shapes[s][0], C = shapes[s][1], W = shapes[s][3];
    fd_op o = {.name = "slice_cols", .n_in = 1, .in = {rnd(&r, N * C, -1, 1)}, .in_n = {N * C},
               .check = {1}, .out = malloc((size_t)(N * W) * 8), .out_n = N * W,
               .fwd = slice_fwd, .bwd = slice_bwd,
               .d = {N, C, shapes[s][2], W}};
    fd_run(&o);
    free(o.in[0]); free(o.out);
  }
  /* acc = 0 zeroes outside the slice; acc = 1 leaves it alone */
  float dx[12], dout[4] = {1, 2, 3, 4};
  for (int i = 0; i < 12; i++) dx[i] = NAN;
  qt_op_slice_cols_backward_cpu(dx, 0, dout, 2, 6, 1, 2); /* rows of 6, columns 1..2 */
  const float want0[12] = {0, 1, 2, 0, 0, 0, 0, 3, 4, 0, 0, 0};
  assert_memory_equal(dx, want0, sizeof dx);
  qt_op_slice_cols_backward_cpu(dx, 1, dout, 2, 6, 2, 2);
  const float want1[12] = {0, 1, 3, 2, 0, 0, 0, 3, 7, 4, 0, 0};
  assert_memory_equal(dx, want1, sizeof dx);
}

/* ---- cross-entropy with soft-capping (the output is the scalar loss) ---- */
static void ce_fwd(fd_op *o) {
  int64_t N = o->d[0], C = o->d[1], V = o->d[2], chunk = o->d[3], cnt;
  o->out[0] = qt_op_cross_entropy_forward_cpu_f64(o->w1, &cnt, o->w2, chunk, o->in[0], o->in[1],
                                                  o->tg, N, C, V, o->s);
}
static void ce_bwd(fd_op *o, double **g, int acc) {
  int64_t N = o->d[0], C = o->d[1], V = o->d[2], chunk = o->d[3];
  qt_op_cross_entropy_backward_cpu_f64(g[0], acc, o->w2, chunk, o->r[0], o->w1, o->in[0],
                                       o->in[1], o->tg, N, C, V, o->s);
}
/* fused: the forward keeps dx1 (in w1 after the logits scratch), backward scales it */
static void cef_fwd(fd_op *o) {
  int64_t N = o->d[0], C = o->d[1], V = o->d[2], chunk = o->d[3], cnt;
  double *dx1 = o->w1, *rowloss = o->w1 + N * C;
  o->out[0] = qt_op_cross_entropy_fused_cpu_f64(dx1, &cnt, o->w2, rowloss, chunk, o->in[0],
                                                o->in[1], o->tg, N, C, V, o->s);
}
static void cef_bwd(fd_op *o, double **g, int acc) {
  qt_op_scaled_add_cpu_f64(g[0], acc, o->w1, o->r[0], o->d[0] * o->d[1]);
}
static void test_ce_softcap_fd(void **st) {
  (void)st;
  /* N, C, V, chunk; caps from strong (0.5: most logits saturate) to gemma2's 30 */
  const int64_t shapes[][4] = {{5, 7, 11, 2}, {9, 12, 37, 4}, {7, 5, 13, 7}, {1, 3, 2, 1}};
  const double caps[] = {2.0, 0.5, 30.0, 1.0};
  for (size_t s = 0; s < 4; s++) {
    int64_t N = shapes[s][0], C = shapes[s][1], V = shapes[s][2], chunk = shapes[s][3];
    for (int fused = 0; fused < 2; fused++) {
      ag_rng r = {s + 301};
      int32_t *tg = malloc((size_t)N * 4);
      for (int64_t n = 0; n < N; n++) tg[n] = (int32_t)(ag_next(&r) % (uint64_t)V);
      if (N > 2) tg[1] = QT_IGNORE_INDEX;
      fd_op o = {.name = fused ? "ce_softcap_fused" : "ce_softcap", .n_in = 2,
                 .in = {rnd(&r, N * C, -2, 2), rnd(&r, V * C, -1, 1)}, .in_n = {N * C, V * C},
                 .check = {1, 0}, .out = malloc(8), .out_n = 1, .fwd = fused ? cef_fwd : ce_fwd,
                 .bwd = fused ? cef_bwd : ce_bwd, .d = {N, C, V, chunk}, .s = caps[s], .tg = tg,
                 .w1 = malloc((size_t)(N * C + N + chunk) * 8),
                 .w2 = malloc((size_t)(chunk * V) * 8)};
      fd_run(&o);
      /* the capped loss is another function than the uncapped one */
      double capped = o.out[0];
      int64_t cnt;
      double plain = qt_op_cross_entropy_forward_cpu_f64(o.w1, &cnt, o.w2, chunk, o.in[0], o.in[1],
                                                         tg, N, C, V, 0.0);
      assert_true(fabs(plain - capped) > 1e-6 * fabs(plain));
      free(o.in[0]); free(o.in[1]); free(o.out); free(o.w1); free(o.w2); free(tg);
    }
  }
}

/* fp32: fused and forward-only give the same loss bits with a cap too, and the
 * fused dx1 equals the recompute path's dx */
static void test_ce_softcap_paths_f32(void **st) {
  (void)st;
  enum { N = 11, C = 9, V = 41, CH = 4 };
  ag_rng r = {404};
  float x[N * C], W[V * C], lse[N], logits[CH * V], dx[N * C], dx1[N * C];
  double rowloss[CH];
  int32_t tg[N];
  for (int i = 0; i < N * C; i++) x[i] = (float)ag_unif(&r, -2, 2);
  for (int i = 0; i < V * C; i++) W[i] = (float)ag_unif(&r, -1, 1);
  for (int n = 0; n < N; n++) tg[n] = n == 3 ? QT_IGNORE_INDEX : (int32_t)(ag_next(&r) % V);
  int64_t c1, c2;
  double l1 = qt_op_cross_entropy_forward_cpu(lse, &c1, logits, CH, x, W, tg, N, C, V, 3.0);
  double l2 = qt_op_cross_entropy_fused_cpu(dx1, &c2, logits, rowloss, CH, x, W, tg, N, C, V, 3.0);
  /* the forward rounds each row loss to fp32 before the sum, the fused pass not */
  assert_true(fabs(l1 - l2) <= 1e-6 * fabs(l1));
  assert_int_equal(c1, c2);
  qt_op_cross_entropy_backward_cpu(dx, 0, logits, CH, 1.0, lse, x, W, tg, N, C, V, 3.0);
  double d[N * C], d1[N * C];
  for (int i = 0; i < N * C; i++) {
    d[i] = dx[i];
    d1[i] = dx1[i];
  }
  assert_true(ag_rel_err(d, d1, N * C) < 1e-6);
}

/* ---- the tape: scale -> layer(slices, GeGLU, linear, [+ residual]) ->
 * per-head RMSNorm -> soft-capped CE --------------------------------------- */
enum { TN = 5, TC = 12, TH = 3, TD = 4, TV = 7, TF = 6 };
typedef struct {
  int32_t wup;   /* (TC, TF) frozen */
  int residual;
} tlayer_ctx;
static qt_status tlayer(qt_tape *t, void *ctx, int32_t in, int32_t *out) {
  const tlayer_ctx *c = ctx;
  int32_t a, b, p, q;
  /* two overlapping slices: columns [0, 6) and [3, 9); 9..11 feed no slice */
  QT_TRY(qt_tape_slice_cols(t, in, 0, TF, &a));
  QT_TRY(qt_tape_slice_cols(t, in, 3, TF, &b));
  QT_TRY(qt_tape_geglu(t, a, b, &p));
  QT_TRY(qt_tape_linear(t, p, c->wup, -1, NULL, &q));
  if (!c->residual) {
    *out = q;
    return QT_OK;
  }
  return qt_tape_add(t, in, q, out);
}

typedef struct {
  bool f64, ckpt, fused, residual, measure;
  double softcap;
  size_t act, grad;
} tcfg;
typedef struct {
  double loss;
  qt_tape_stats stats;
} tres;

/* One step; grad (TN, TC) in the tape's dtype gets d loss_sum / dx (zeroed first). */
static tres tape_step(const tcfg *c, const void *x, void *grad, const void *wup, const void *wn,
                      const void *wlm) {
  static const int32_t targets[TN] = {3, QT_IGNORE_INDEX, 0, 6, 2};
  size_t es = c->f64 ? 8 : 4;
  qt_tape_config cfg = {.act_bytes = c->act, .grad_bytes = c->grad, .max_tensors = 64,
                        .max_nodes = 32, .ce_chunk_rows = 2, .ce_grad_in_forward = c->fused};
  qt_tape *t;
  assert_int_equal((c->measure ? qt_tape_init_measure : qt_tape_init)(&t, c->f64 ? QT_F64 : QT_F32,
                                                                      &cfg), QT_OK);
  memset(grad, 0, TN * TC * es);
  int32_t ix, iup, in, ilm, h, y, z, loss;
  assert_int_equal(qt_tape_trainable(t, "x", (void *)x, grad, TN, TC, &ix), QT_OK);
  assert_int_equal(qt_tape_frozen(t, "wup", wup, TC, TF, &iup), QT_OK);
  assert_int_equal(qt_tape_frozen(t, "q_norm", wn, 1, TD, &in), QT_OK);
  assert_int_equal(qt_tape_frozen(t, "lm_head", wlm, TV, TC, &ilm), QT_OK);
  tlayer_ctx lc = {.wup = iup, .residual = c->residual};
  assert_int_equal(qt_tape_scale(t, ix, 1.7, &h), QT_OK);
  assert_int_equal(qt_tape_layer(t, tlayer, &lc, h, c->ckpt, &y), QT_OK);
  assert_int_equal(qt_tape_rmsnorm_heads(t, y, in, 1e-5, TH, &z), QT_OK);
  double sum;
  int64_t cnt;
  assert_int_equal(qt_tape_cross_entropy_ex(t, z, ilm, targets, c->softcap, &loss, &sum, &cnt),
                   QT_OK);
  assert_int_equal(cnt, TN - 1);
  assert_int_equal(qt_tape_backward(t, loss, 1.0), QT_OK);
  tres r = {sum, qt_tape_get_stats(t)};
  qt_tape_free(&t);
  return r;
}

static void test_tape_family_graph(void **st) {
  (void)st;
  ag_rng r = {777};
  double x[TN * TC], wup[TC * TF], wn[TD], wlm[TV * TC];
  float xf[TN * TC], wupf[TC * TF], wnf[TD], wlmf[TV * TC];
  ag_fill(&r, x, TN * TC, -1.5, 1.5);
  ag_fill(&r, wup, TC * TF, -0.8, 0.8);
  ag_fill(&r, wn, TD, 0.5, 1.5);
  ag_fill(&r, wlm, TV * TC, -1, 1);
  for (int i = 0; i < TN * TC; i++) xf[i] = (float)x[i];
  for (int i = 0; i < TC * TF; i++) wupf[i] = (float)wup[i];
  for (int i = 0; i < TD; i++) wnf[i] = (float)wn[i];
  for (int i = 0; i < TV * TC; i++) wlmf[i] = (float)wlm[i];
  for (int residual = 0; residual < 2; residual++)
    for (int fused = 0; fused < 2; fused++)
      for (int capi = 0; capi < 2; capi++) {
        double cap = capi ? 1.5 : 0.0;
        double g[2][TN * TC];
        tcfg c = {.f64 = true, .fused = fused, .residual = residual, .softcap = cap,
                  .act = 1 << 20, .grad = 1 << 20};
        for (int ck = 0; ck < 2; ck++) {
          c.ckpt = ck;
          tape_step(&c, x, g[ck], wup, wn, wlm);
        }
        /* checkpointing re-records the layer: the same gradient, bit for bit */
        assert_memory_equal(g[0], g[1], sizeof g[0]);
        double fd[TN * TC];
        c.ckpt = true;
        double gtmp[TN * TC];
        for (int i = 0; i < TN * TC; i++) {
          double x0 = x[i];
          x[i] = x0 + FD_H;
          double fp = tape_step(&c, x, gtmp, wup, wn, wlm).loss;
          x[i] = x0 - FD_H;
          double fm = tape_step(&c, x, gtmp, wup, wn, wlm).loss;
          x[i] = x0;
          fd[i] = (fp - fm) / (2 * FD_H);
        }
        double err = ag_rel_err(g[0], fd, TN * TC);
        /* columns 9..11 reach the loss only through the residual */
        double side = 0;
        for (int n = 0; n < TN; n++)
          for (int j = 9; j < TC; j++) side += fabs(g[0][n * TC + j]);
        if (err >= FD_TOL || getenv("AG_VERBOSE"))
          fprintf(stderr, "tape graph residual %d fused %d cap %g: rel err %.3g\n", residual,
                  fused, cap, err);
        assert_true(err < FD_TOL);
        assert_true(residual ? side > 0 : side == 0);
        /* the fp32 tape: measured arenas, then the same graph on exactly that */
        tcfg cf = c;
        cf.f64 = false;
        cf.measure = true;
        float gf[TN * TC];
        tres m = tape_step(&cf, xf, gf, wupf, wnf, wlmf);
        cf.measure = false;
        cf.act = m.stats.act_peak;
        cf.grad = m.stats.grad_peak;
        tres rf = tape_step(&cf, xf, gf, wupf, wnf, wlmf);
        assert_int_equal(rf.stats.act_peak, m.stats.act_peak);
        double gd[TN * TC];
        for (int i = 0; i < TN * TC; i++) gd[i] = gf[i];
        double e32 = ag_rel_err(gd, g[0], TN * TC);
        if (e32 >= 1e-5 || getenv("AG_VERBOSE"))
          fprintf(stderr, "tape graph fp32 vs fp64: rel err %.3g\n", e32);
        assert_true(e32 < 1e-5);
      }
}

/* qt_tape_scale in fp32: the factor rounded to float, then one multiply */
static void test_tape_scale_f32(void **st) {
  (void)st;
  enum { N = 3, C = 5 };
  float x[N * C], gx[N * C], W[2 * C];
  for (int i = 0; i < N * C; i++) x[i] = (float)(0.1 * i - 0.7);
  for (int i = 0; i < 2 * C; i++) W[i] = (float)(0.05 * i);
  qt_tape_config cfg = {.act_bytes = 1 << 16, .grad_bytes = 1 << 16, .max_tensors = 8,
                        .max_nodes = 8, .ce_chunk_rows = 4};
  qt_tape *t;
  assert_int_equal(qt_tape_init(&t, QT_F32, &cfg), QT_OK);
  memset(gx, 0, sizeof gx);
  int32_t ix, iw, y, loss;
  assert_int_equal(qt_tape_trainable(t, "x", x, gx, N, C, &ix), QT_OK);
  assert_int_equal(qt_tape_frozen(t, "W", W, 2, C, &iw), QT_OK);
  double s = sqrt(2304.0 + 0.5); /* not representable: the rounding is visible */
  assert_int_equal(qt_tape_scale(t, ix, s, &y), QT_OK);
  const float *out = qt_tape_data(t, y);
  for (int i = 0; i < N * C; i++) assert_true(out[i] == (float)s * x[i]);
  const int32_t tg[N] = {0, 1, 0};
  double sum;
  int64_t cnt;
  assert_int_equal(qt_tape_cross_entropy(t, y, iw, tg, &loss, &sum, &cnt), QT_OK);
  assert_int_equal(qt_tape_backward(t, loss, 1.0), QT_OK);
  const float *gy = qt_tape_grad(t, y);
  for (int i = 0; i < N * C; i++) assert_true(gx[i] == (float)s * gy[i]);
  qt_tape_free(&t);
}

/* ---- golden values (tests/golden/autograd/family_ops.txt) ----------------- */
static FILE *golden_open(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/golden/autograd/family_ops.txt", QLORA_TEST_DIR);
  FILE *f = fopen(path, "r");
  if (!f) fprintf(stderr, "cannot open %s\n", path);
  assert_non_null(f);
  char line[512];
  assert_non_null(fgets(line, sizeof line, f)); /* the '#' header */
  assert_true(line[0] == '#');
  return f;
}
/* Skips to the next token equal to kw; 0 at the end of the file. */
static int golden_next(FILE *f, const char *kw) {
  char tok[64];
  while (fscanf(f, "%63s", tok) == 1)
    if (strcmp(tok, kw) == 0) return 1;
  return 0;
}
static double *golden_block(FILE *f, const char *name, int64_t n) {
  char tok[64];
  long long m;
  assert_int_equal(fscanf(f, "%63s %lld", tok, &m), 2);
  assert_string_equal(tok, name);
  assert_int_equal(m, n);
  double *v = malloc((size_t)n * 8);
  for (int64_t i = 0; i < n; i++) assert_int_equal(fscanf(f, "%lf", &v[i]), 1);
  return v;
}
/* the fixture's inputs: splitmix64 seed*10+off, rounded to fp32 */
static void draw(double *x, int64_t n, long long seed, int off, double lo, double hi) {
  ag_rng r = {(uint64_t)(seed * 10 + off)};
  for (int64_t i = 0; i < n; i++) x[i] = (float)ag_unif(&r, lo, hi);
}
static float *to_f32(const double *x, int64_t n) {
  float *y = malloc((size_t)(n > 0 ? n : 1) * 4);
  for (int64_t i = 0; i < n; i++) y[i] = (float)x[i];
  return y;
}
static double *to_f64(const float *x, int64_t n) {
  double *y = malloc((size_t)(n > 0 ? n : 1) * 8);
  for (int64_t i = 0; i < n; i++) y[i] = x[i];
  return y;
}
/* max_i |a - b| / (rtol |b| + atol): <= 1 is allclose(a, b, rtol, atol); NaN fails */
static double allclose_worst(const double *a, const double *b, int64_t n, double rtol,
                             double atol) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs(a[i] - b[i]) / (rtol * fabs(b[i]) + atol);
    if (!(e <= m)) m = e;
  }
  return m;
}
/* the worst relative error over the elements with |b| >= lo (for the report) */
static double max_rel(const double *a, const double *b, int64_t n, double lo) {
  double m = 0;
  for (int64_t i = 0; i < n; i++)
    if (fabs(b[i]) >= lo) {
      double e = fabs(a[i] - b[i]) / fabs(b[i]);
      if (!(e <= m)) m = e;
    }
  return m;
}

static void test_geglu_golden(void **st) {
  (void)st;
  FILE *f = golden_open();
  int cases = 0;
  while (golden_next(f, "geglu")) {
    long long n, seed;
    double gmax;
    assert_int_equal(fscanf(f, "%lld %lld", &n, &seed), 2);
    assert_true(golden_next(f, "range"));
    assert_int_equal(fscanf(f, "%lf", &gmax), 1);
    double *want[3];
    want[0] = golden_block(f, "out", n);
    want[1] = golden_block(f, "dgate", n);
    want[2] = golden_block(f, "dup", n);
    double *g = malloc(n * 8), *u = malloc(n * 8), *d = malloc(n * 8);
    draw(g, n, seed, 0, -gmax, gmax);
    draw(u, n, seed, 1, -2, 2);
    draw(d, n, seed, 2, -1, 1);
    double *got64[3] = {malloc(n * 8), malloc(n * 8), malloc(n * 8)};
    qt_op_geglu_forward_cpu_f64(got64[0], g, u, n);
    qt_op_geglu_backward_cpu_f64(got64[1], got64[2], 0, d, g, u, n);
    float *gf = to_f32(g, n), *uf = to_f32(u, n), *df = to_f32(d, n);
    float *got32[3] = {malloc(n * 4), malloc(n * 4), malloc(n * 4)};
    qt_op_geglu_forward_cpu(got32[0], gf, uf, n);
    qt_op_geglu_backward_cpu(got32[1], got32[2], 0, df, gf, uf, n);
    const char *names[3] = {"out", "dgate", "dup"};
    for (int j = 0; j < 3; j++) {
      double *g32 = to_f64(got32[j], n);
      /* The reference evaluates 1 + tanh(u), which cancels for g << 0: its
       * absolute error is ~ |g| 2^-53 (relative 1e-6 at g = -6; the sigmoid form
       * here does not cancel), hence atol 1e-14 for both twins. fp32: up to
       * three roundings of the double value (rtol 4e-7). */
      double w64 = allclose_worst(got64[j], want[j], n, 1e-13, 1e-14);
      double w32 = allclose_worst(g32, want[j], n, 4e-7, 1e-14);
      fprintf(stderr, "geglu golden n=%lld range %g %s: max rel err (|ref| >= 1e-3) fp64 %.3g, "
              "fp32 %.3g; allclose ratio fp64 %.3g fp32 %.3g\n", n, gmax, names[j],
              max_rel(got64[j], want[j], n, 1e-3), max_rel(g32, want[j], n, 1e-3), w64, w32);
      assert_true(w64 <= 1);
      assert_true(w32 <= 1);
      free(g32);
    }
    for (int j = 0; j < 3; j++) {
      free(want[j]); free(got64[j]); free(got32[j]);
    }
    free(g); free(u); free(d); free(gf); free(uf); free(df);
    cases++;
  }
  fclose(f);
  assert_int_equal(cases, 2);
}

static void test_rmsnorm_heads_golden(void **st) {
  (void)st;
  FILE *f = golden_open();
  int cases = 0;
  while (golden_next(f, "rmsnorm_heads")) {
    long long N, H, D, seed;
    double eps;
    assert_int_equal(fscanf(f, "%lld %lld %lld %lf %lld", &N, &H, &D, &eps, &seed), 5);
    int64_t n = N * H * D;
    double *want_out = golden_block(f, "out", n), *want_dx = golden_block(f, "dx", n);
    double *x = malloc(n * 8), *w = malloc(D * 8), *d = malloc(n * 8);
    draw(x, n, seed, 0, -2, 2);
    draw(w, D, seed, 1, 0.5, 1.5);
    draw(d, n, seed, 2, -1, 1);
    for (int f64 = 0; f64 < 2; f64++) {
      /* out through the tape op; dx through the kernels as the tape calls them
       * (N*H rows of D); the tape's backward is checked by the FD graph test */
      size_t es = f64 ? 8 : 4;
      qt_tape_config cfg = {.act_bytes = 1 << 20, .grad_bytes = 1 << 16, .max_tensors = 8,
                            .max_nodes = 8, .ce_chunk_rows = 4};
      qt_tape *t;
      assert_int_equal(qt_tape_init(&t, f64 ? QT_F64 : QT_F32, &cfg), QT_OK);
      void *xd = f64 ? (void *)x : (void *)to_f32(x, n), *wd = f64 ? (void *)w : (void *)to_f32(w, D);
      void *dd = f64 ? (void *)d : (void *)to_f32(d, n);
      int32_t ix, iw, y;
      assert_int_equal(qt_tape_frozen(t, "w", wd, 1, D, &iw), QT_OK);
      assert_int_equal(qt_tape_constant(t, xd, N, H * D, &ix), QT_OK);
      assert_int_equal(qt_tape_rmsnorm_heads(t, ix, iw, eps, H, &y), QT_OK);
      assert_int_equal(qt_tape_rows(t, y), N);
      assert_int_equal(qt_tape_cols(t, y), H * D);
      void *rstd = malloc((size_t)(N * H) * es), *dx = malloc((size_t)n * es);
      void *o2 = malloc((size_t)n * es);
      double *out, *gdx;
      if (f64) {
        out = malloc(n * 8);
        memcpy(out, qt_tape_data(t, y), n * 8);
        qt_op_rmsnorm_forward_cpu_f64(o2, rstd, x, w, eps, N * H, D);
        qt_op_rmsnorm_backward_cpu_f64(dx, 0, d, x, w, rstd, N * H, D);
        gdx = malloc(n * 8);
        memcpy(gdx, dx, n * 8);
      } else {
        out = to_f64(qt_tape_data(t, y), n);
        qt_op_rmsnorm_forward_cpu(o2, rstd, xd, wd, eps, N * H, D);
        qt_op_rmsnorm_backward_cpu(dx, 0, dd, xd, wd, rstd, N * H, D);
        gdx = to_f64(dx, n);
      }
      assert_memory_equal(o2, qt_tape_data(t, y), (size_t)n * es);
      double eo = max_rel(out, want_out, n, 0), ed = ag_rel_err(gdx, want_dx, n);
      fprintf(stderr, "rmsnorm_heads golden N=%lld H=%lld D=%lld %s: out max rel err %.3g, dx "
              "rel err %.3g\n", N, H, D, f64 ? "fp64" : "fp32", eo, ed);
      assert_true(eo < (f64 ? 1e-13 : 1e-6));
      assert_true(ed < (f64 ? 1e-12 : 1e-6));
      free(out); free(gdx); free(rstd); free(dx); free(o2);
      if (!f64) {
        free(xd); free(wd); free(dd);
      }
      qt_tape_free(&t);
    }
    free(want_out); free(want_dx); free(x); free(w); free(d);
    cases++;
  }
  fclose(f);
  assert_int_equal(cases, 2);
}

static void test_ce_softcap_golden(void **st) {
  (void)st;
  FILE *f = golden_open();
  int cases = 0;
  while (golden_next(f, "ce_softcap")) {
    long long N, C, V, seed;
    double cap, want_loss;
    long long want_count;
    assert_int_equal(fscanf(f, "%lld %lld %lld %lf %lld", &N, &C, &V, &cap, &seed), 5);
    assert_true(golden_next(f, "targets"));
    int32_t *tg = malloc(N * 4);
    for (int64_t n = 0; n < N; n++) assert_int_equal(fscanf(f, "%d", &tg[n]), 1);
    assert_true(golden_next(f, "loss_sum"));
    assert_int_equal(fscanf(f, "%lf", &want_loss), 1);
    assert_true(golden_next(f, "count"));
    assert_int_equal(fscanf(f, "%lld", &want_count), 1);
    double *want_zc = golden_block(f, "zc", N * V), *want_dx = golden_block(f, "dx", N * C);
    double *x = malloc(N * C * 8), *W = malloc(V * C * 8);
    draw(x, N * C, seed, 0, -1, 1);
    draw(W, V * C, seed, 1, -1, 1);
    int64_t chunk = 2;
    for (int f64 = 0; f64 < 2; f64++) {
      size_t es = f64 ? 8 : 4;
      void *xd = f64 ? (void *)x : (void *)to_f32(x, N * C);
      void *Wd = f64 ? (void *)W : (void *)to_f32(W, V * C);
      void *lse = malloc((size_t)N * es), *logits = malloc((size_t)(chunk * V) * es);
      void *dx = malloc((size_t)(N * C) * es), *dx1 = malloc((size_t)(N * C) * es);
      double *rowloss = malloc((size_t)chunk * 8);
      int64_t cnt, cnt2;
      double loss, loss2;
      if (f64) {
        loss = qt_op_cross_entropy_forward_cpu_f64(lse, &cnt, logits, chunk, xd, Wd, tg, N, C, V, cap);
        qt_op_cross_entropy_backward_cpu_f64(dx, 0, logits, chunk, 1.0, lse, xd, Wd, tg, N, C, V, cap);
        loss2 = qt_op_cross_entropy_fused_cpu_f64(dx1, &cnt2, logits, rowloss, chunk, xd, Wd, tg,
                                                  N, C, V, cap);
      } else {
        loss = qt_op_cross_entropy_forward_cpu(lse, &cnt, logits, chunk, xd, Wd, tg, N, C, V, cap);
        qt_op_cross_entropy_backward_cpu(dx, 0, logits, chunk, 1.0, lse, xd, Wd, tg, N, C, V, cap);
        loss2 = qt_op_cross_entropy_fused_cpu(dx1, &cnt2, logits, rowloss, chunk, xd, Wd, tg, N,
                                              C, V, cap);
      }
      assert_int_equal(cnt, want_count);
      assert_int_equal(cnt2, want_count);
      assert_true(fabs(loss - loss2) <= (f64 ? 1e-14 : 1e-6) * fabs(loss));
      double *g, *g1;
      if (f64) {
        g = malloc(N * C * 8);
        g1 = malloc(N * C * 8);
        memcpy(g, dx, N * C * 8);
        memcpy(g1, dx1, N * C * 8);
      } else {
        g = to_f64(dx, N * C);
        g1 = to_f64(dx1, N * C);
      }
      double el = fabs(loss - want_loss) / fabs(want_loss);
      double ed = ag_rel_err(g, want_dx, N * C), ed1 = ag_rel_err(g1, want_dx, N * C);
      /* qt_op_softcap_cpu (the eval / generate logits) on x W^T */
      double *zc = malloc(N * V * 8);
      if (f64) {
        double *z = malloc(N * V * 8);
        qt_op_linear_forward_cpu_f64(z, x, W, NULL, N, C, V);
        qt_op_softcap_cpu_f64(z, N * V, cap);
        memcpy(zc, z, N * V * 8);
        free(z);
      } else {
        float *z = malloc(N * V * 4);
        qt_op_linear_forward_cpu(z, xd, Wd, NULL, N, C, V);
        qt_op_softcap_cpu(z, N * V, cap);
        for (int64_t i = 0; i < N * V; i++) zc[i] = z[i];
        free(z);
      }
      /* z = x W^T is rounded to fp32 before the cap in the fp32 twin */
      double ez = allclose_worst(zc, want_zc, N * V, 0, 1) / (cap > 1 ? cap : 1);
      fprintf(stderr, "ce_softcap golden N=%lld C=%lld V=%lld cap %g %s: loss rel err %.3g, dx "
              "rel err %.3g (fused %.3g), capped logits max err / (|z| + cap) %.3g\n", N, C, V,
              cap, f64 ? "fp64" : "fp32", el, ed, ed1, ez);
      assert_true(el < (f64 ? 1e-13 : 1e-6));
      assert_true(ed < (f64 ? 1e-12 : 1e-5));
      assert_true(ed1 < (f64 ? 1e-12 : 1e-5));
      assert_true(ez < (f64 ? 1e-14 : 1e-6));
      /* the tape op (qt_tape_cross_entropy_ex), both gradient paths */
      for (int fused = 0; fused < 2; fused++) {
        qt_tape_config cfg = {.act_bytes = 1 << 20, .grad_bytes = 1 << 16, .max_tensors = 8,
                              .max_nodes = 8, .ce_chunk_rows = 3, .ce_grad_in_forward = fused};
        qt_tape *t;
        assert_int_equal(qt_tape_init(&t, f64 ? QT_F64 : QT_F32, &cfg), QT_OK);
        void *gx = calloc((size_t)(N * C), es);
        int32_t ix, iw, il;
        double tl;
        int64_t tc;
        assert_int_equal(qt_tape_trainable(t, "x", xd, gx, N, C, &ix), QT_OK);
        assert_int_equal(qt_tape_frozen(t, "lm_head", Wd, V, C, &iw), QT_OK);
        assert_int_equal(qt_tape_cross_entropy_ex(t, ix, iw, tg, cap, &il, &tl, &tc), QT_OK);
        assert_int_equal(qt_tape_backward(t, il, 1.0), QT_OK);
        double *tg64 = f64 ? malloc(N * C * 8) : to_f64(gx, N * C);
        if (f64) memcpy(tg64, gx, N * C * 8);
        double etl = fabs(tl - want_loss) / fabs(want_loss), etg = ag_rel_err(tg64, want_dx, N * C);
        if (getenv("AG_VERBOSE"))
          fprintf(stderr, "  tape %s: loss rel err %.3g, dx rel err %.3g\n",
                  fused ? "fused" : "recompute", etl, etg);
        assert_int_equal(tc, want_count);
        assert_true(etl < (f64 ? 1e-13 : 1e-6));
        assert_true(etg < (f64 ? 1e-12 : 1e-5));
        free(tg64);
        free(gx);
        qt_tape_free(&t);
      }
      free(g); free(g1); free(zc); free(lse); free(logits); free(dx); free(dx1); free(rowloss);
      if (!f64) {
        free(xd); free(Wd);
      }
    }
    free(want_zc); free(want_dx); free(x); free(W); free(tg);
    cases++;
  }
  fclose(f);
  assert_int_equal(cases, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_geglu_fd),          cmocka_unit_test(test_geglu_extremes),
      cmocka_unit_test(test_slice_fd),          cmocka_unit_test(test_ce_softcap_fd),
      cmocka_unit_test(test_ce_softcap_paths_f32), cmocka_unit_test(test_tape_family_graph),
      cmocka_unit_test(test_tape_scale_f32),    cmocka_unit_test(test_geglu_golden),
      cmocka_unit_test(test_rmsnorm_heads_golden), cmocka_unit_test(test_ce_softcap_golden),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
