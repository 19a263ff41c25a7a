/* Finite-difference gradient checks of every differentiable op in autograd/ops.h.
 *
 * The ops are compiled twice from one source (autograd/kernels/<family>_cpu.inc): in
 * float for training and in double. These checks run the double twin, so
 * central differences (h = 1e-6) are accurate to ~1e-9 and a relative error
 * bound of 1e-4 leaves no room for a wrong formula; since the float twin is the
 * same text with `real` = float, the algebra checked here is the one training
 * runs (test_tape_decoder compares the two twins numerically).
 *
 * For each op and each odd shape (1, 5, 7, 63, 65 along the dimensions): random
 * inputs, objective L = sum(out * r) with random r, analytic gradient from the
 * op's backward with dout = r, compared norm-wise with the central difference.
 * Each backward also runs with acc = 0 into a NaN-filled buffer (it must not read
 * it) and with acc = 1 into a random buffer (it must add). */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cblas.h>
#include <omp.h>

#include "ag_test_util.h"
#include "autograd/kernels/attention_mask.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "common/philox.h"

enum { MAXIN = 4 };
#define FD_H 1e-6
#define FD_TOL 1e-4 /* the bound; observed errors are ~1e-8 */

typedef struct op_case op_case;
struct op_case {
  const char *name;
  int n_in;
  double *in[MAXIN];
  int64_t in_n[MAXIN];
  int check[MAXIN];          /* inputs with a gradient */
  double *out, *r;
  int64_t out_n;
  void (*fwd)(op_case *c);
  /* grads[i] (+)= d(sum out*r)/d in[i] for checked inputs; NULL otherwise */
  void (*bwd)(op_case *c, double **grads, int acc);
  int64_t d[6];              /* shape parameters */
  void *aux;                 /* op-specific inputs (ints, masks) */
  void *aux2;
};

static double objective(op_case *c) {
  c->fwd(c);
  double s = 0;
  for (int64_t i = 0; i < c->out_n; i++) s += c->out[i] * c->r[i];
  return s;
}

static void run_case(op_case *c) {
  ag_rng rng = {0xC0FFEEull + (uint64_t)c->d[0] * 131 + (uint64_t)c->d[1] * 17};
  c->r = malloc((size_t)c->out_n * sizeof(double));
  ag_fill(&rng, c->r, c->out_n, -1, 1);
  double *g[MAXIN] = {0}, *g2[MAXIN] = {0}, *z[MAXIN] = {0};
  for (int i = 0; i < c->n_in; i++) {
    if (!c->check[i]) continue;
    g[i] = malloc((size_t)c->in_n[i] * sizeof(double));
    g2[i] = malloc((size_t)c->in_n[i] * sizeof(double));
    z[i] = malloc((size_t)c->in_n[i] * sizeof(double));
    for (int64_t j = 0; j < c->in_n[i]; j++) g[i][j] = NAN;
    ag_fill(&rng, z[i], c->in_n[i], -1, 1);
    memcpy(g2[i], z[i], (size_t)c->in_n[i] * sizeof(double));
  }
  c->fwd(c); /* saved tensors for backward */
  c->bwd(c, g, 0);
  c->fwd(c);
  c->bwd(c, g2, 1);
  for (int i = 0; i < c->n_in; i++) {
    if (!c->check[i]) continue;
    int64_t n = c->in_n[i];
    assert_true(ag_all_finite(g[i], n)); /* acc = 0 overwrote every element */
    double *fd = malloc((size_t)n * sizeof(double));
    for (int64_t j = 0; j < n; j++) {
      double x0 = c->in[i][j];
      c->in[i][j] = x0 + FD_H;
      double fp = objective(c);
      c->in[i][j] = x0 - FD_H;
      double fm = objective(c);
      c->in[i][j] = x0;
      fd[j] = (fp - fm) / (2 * FD_H);
    }
    double err = ag_rel_err(g[i], fd, n);
    for (int64_t j = 0; j < n; j++) g2[i][j] -= z[i][j];
    double err_acc = ag_rel_err(g2[i], g[i], n);
    if (err >= FD_TOL || err_acc >= 1e-10 || ag_norm(fd, n) == 0 || getenv("AG_VERBOSE"))
      fprintf(stderr, "%s d=[%lld %lld %lld %lld %lld %lld] input %d: rel err %.3g (acc %.3g), |fd| %.3g\n",
              c->name, (long long)c->d[0], (long long)c->d[1], (long long)c->d[2],
              (long long)c->d[3], (long long)c->d[4], (long long)c->d[5], i, err, err_acc,
              ag_norm(fd, n));
    assert_true(err < FD_TOL);
    assert_true(err_acc < 1e-10);
    assert_true(ag_norm(fd, n) > 0); /* a zero gradient would make the check vacuous */
    free(fd);
    free(g[i]);
    free(g2[i]);
    free(z[i]);
  }
  free(c->r);
}

static double *rnd(ag_rng *r, int64_t n, double lo, double hi) {
  double *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  ag_fill(r, x, n, lo, hi);
  return x;
}
static void free_case(op_case *c) {
  for (int i = 0; i < c->n_in; i++) free(c->in[i]);
  free(c->out);
}

/* ---- RMSNorm ---- */
static void rms_fwd(op_case *c) {
  qt_op_rmsnorm_forward_cpu_f64(c->out, c->aux, c->in[0], c->in[1], 1e-5, c->d[0], c->d[1]);
}
static void rms_bwd(op_case *c, double **g, int acc) {
  qt_op_rmsnorm_backward_cpu_f64(g[0], acc, c->r, c->in[0], c->in[1], c->aux, c->d[0], c->d[1]);
}
static void test_rmsnorm(void **st) {
  (void)st;
  const int64_t shapes[][2] = {{1, 1}, {5, 7}, {7, 63}, {3, 65}, {1, 5}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    ag_rng r = {s + 1};
    int64_t N = shapes[s][0], C = shapes[s][1];
    op_case c = {.name = "rmsnorm", .n_in = 2, .in = {rnd(&r, N * C, -2, 2), rnd(&r, C, 0.5, 1.5)},
                 .in_n = {N * C, C}, .check = {1, 0}, .out = malloc(N * C * 8), .out_n = N * C,
                 .fwd = rms_fwd, .bwd = rms_bwd, .d = {N, C}, .aux = malloc(N * 8)};
    run_case(&c);
    free(c.aux);
    free_case(&c);
  }
}

/* ---- residual add ---- */
static void add_fwd(op_case *c) { qt_op_add_forward_cpu_f64(c->out, c->in[0], c->in[1], c->d[0]); }
static void add_bwd(op_case *c, double **g, int acc) {
  for (int i = 0; i < 2; i++) qt_op_add_backward_cpu_f64(g[i], acc, c->r, c->d[0]);
}
static void test_add(void **st) {
  (void)st;
  const int64_t ns[] = {1, 5, 63, 65};
  for (size_t s = 0; s < 4; s++) {
    ag_rng r = {s + 11};
    int64_t n = ns[s];
    op_case c = {.name = "add", .n_in = 2, .in = {rnd(&r, n, -1, 1), rnd(&r, n, -1, 1)},
                 .in_n = {n, n}, .check = {1, 1}, .out = malloc(n * 8), .out_n = n,
                 .fwd = add_fwd, .bwd = add_bwd, .d = {n}};
    run_case(&c);
    free_case(&c);
  }
}

/* ---- dense linear (frozen W, optional bias) ---- */
static void lin_fwd(op_case *c) {
  qt_op_linear_forward_cpu_f64(c->out, c->in[0], c->in[1], c->d[3] ? c->in[2] : NULL, c->d[0],
                               c->d[1], c->d[2]);
}
static void lin_bwd(op_case *c, double **g, int acc) {
  qt_op_linear_backward_cpu_f64(g[0], acc, c->r, c->in[1], c->d[0], c->d[1], c->d[2]);
}
static void test_linear(void **st) {
  (void)st;
  const int64_t shapes[][4] = {{1, 1, 1, 0}, {5, 7, 63, 1}, {7, 65, 5, 0}, {63, 5, 7, 1}};
  for (size_t s = 0; s < 4; s++) {
    ag_rng r = {s + 21};
    int64_t N = shapes[s][0], In = shapes[s][1], O = shapes[s][2];
    op_case c = {.name = "linear", .n_in = 3,
                 .in = {rnd(&r, N * In, -1, 1), rnd(&r, O * In, -1, 1), rnd(&r, O, -1, 1)},
                 .in_n = {N * In, O * In, O}, .check = {1, 0, 0}, .out = malloc(N * O * 8),
                 .out_n = N * O, .fwd = lin_fwd, .bwd = lin_bwd,
                 .d = {N, In, O, shapes[s][3]}};
    run_case(&c);
    free_case(&c);
  }
}

/* ---- LoRA branch (dx, dA, dB; with and without a dropout mask) ---- */
static void lora_fwd(op_case *c) {
  int64_t N = c->d[0], In = c->d[1], O = c->d[2], R = c->d[3];
  memset(c->out, 0, (size_t)(N * O) * 8); /* the op adds into y */
  double *u = c->aux2, *xd = u + N * R;
  qt_op_lora_forward_cpu_f64(c->out, u, c->aux ? xd : NULL, c->in[0], c->aux, 1.0 / 0.7,
                             c->in[1], c->in[2], 1.75, N, In, O, R);
}
static void lora_bwd(op_case *c, double **g, int acc) {
  int64_t N = c->d[0], In = c->d[1], O = c->d[2], R = c->d[3];
  double *u = c->aux2, *xd = u + N * R;
  double *du = malloc((size_t)(N * R) * 8), *work = malloc((size_t)(N * In) * 8);
  /* dA and dB always accumulate (param gradients); emulate acc = 0 by zeroing. */
  if (!acc) {
    memset(g[1], 0, (size_t)(R * In) * 8);
    memset(g[2], 0, (size_t)(O * R) * 8);
  }
  qt_op_lora_backward_cpu_f64(g[0], acc, g[1], g[2], du, work, c->r, c->aux ? xd : c->in[0], u,
                              c->aux, 1.0 / 0.7, c->in[1], c->in[2], 1.75, N, In, O, R);
  free(du);
  free(work);
}
static void test_lora(void **st) {
  (void)st;
  const int64_t shapes[][4] = {{1, 1, 1, 1}, {5, 7, 63, 3}, {7, 65, 5, 2}, {65, 5, 7, 1}};
  for (size_t s = 0; s < 4; s++) {
    for (int masked = 0; masked < 2; masked++) {
      ag_rng r = {s + 31 + 100 * (uint64_t)masked};
      int64_t N = shapes[s][0], In = shapes[s][1], O = shapes[s][2], R = shapes[s][3];
      uint8_t *mask = NULL;
      if (masked) {
        mask = malloc((size_t)(N * In));
        for (int64_t i = 0; i < N * In; i++) mask[i] = ag_unif(&r, 0, 1) < 0.7 || i == 0;
      }
      op_case c = {.name = masked ? "lora+dropout" : "lora", .n_in = 3,
                   .in = {rnd(&r, N * In, -1, 1), rnd(&r, R * In, -1, 1), rnd(&r, O * R, -1, 1)},
                   .in_n = {N * In, R * In, O * R}, .check = {1, 1, 1}, .out = malloc(N * O * 8),
                   .out_n = N * O, .fwd = lora_fwd, .bwd = lora_bwd, .d = {N, In, O, R},
                   .aux = mask, .aux2 = malloc((size_t)(N * R + N * In) * 8)};
      run_case(&c);
      free(mask);
      free(c.aux2);
      free_case(&c);
    }
  }
}

/* ---- RoPE ---- */
typedef struct { int32_t *pos; float *inv_freq; } rope_aux;
static void rope_fwd(op_case *c) {
  rope_aux *a = c->aux;
  qt_op_rope_forward_cpu_f64(c->out, c->in[0], a->pos, a->inv_freq, c->d[0], c->d[1], c->d[2]);
}
static void rope_bwd(op_case *c, double **g, int acc) {
  rope_aux *a = c->aux;
  qt_op_rope_backward_cpu_f64(g[0], acc, c->r, a->pos, a->inv_freq, c->d[0], c->d[1], c->d[2]);
}
static void test_rope(void **st) {
  (void)st;
  const int64_t shapes[][3] = {{1, 1, 2}, {5, 3, 6}, {7, 2, 64}, {65, 1, 4}};
  const qt_rope_config cfgs[] = {{.type = QT_ROPE_DEFAULT, .theta = 10000.0},
                                 {.type = QT_ROPE_LINEAR, .theta = 10000.0, .factor = 4.0},
                                 {.type = QT_ROPE_LLAMA3, .theta = 500000.0, .factor = 8.0,
                                  .low_freq_factor = 1.0, .high_freq_factor = 4.0,
                                  .original_max_position_embeddings = 64}};
  for (size_t s = 0; s < 4; s++) {
    ag_rng r = {s + 41};
    int64_t N = shapes[s][0], H = shapes[s][1], D = shapes[s][2];
    rope_aux a = {malloc((size_t)N * 4), malloc((size_t)(D / 2) * 4)};
    for (int64_t n = 0; n < N; n++) a.pos[n] = (int32_t)(ag_next(&r) % 300);
    qt_rope_inv_freq(a.inv_freq, &cfgs[s % 3], D);
    op_case c = {.name = "rope", .n_in = 1, .in = {rnd(&r, N * H * D, -1, 1)},
                 .in_n = {N * H * D}, .check = {1}, .out = malloc(N * H * D * 8),
                 .out_n = N * H * D, .fwd = rope_fwd, .bwd = rope_bwd, .d = {N, H, D}, .aux = &a};
    run_case(&c);
    free(a.pos);
    free(a.inv_freq);
    free_case(&c);
  }
}

/* ---- attention (GQA, packed documents) ---- */
static void att_fwd(op_case *c) {
  qt_op_attention_forward_cpu_f64(c->out, c->aux2, c->in[0], c->in[1], c->in[2], c->aux, c->d[0],
                                  c->d[1], c->d[2], c->d[3], c->d[4], NULL);
}
static void att_bwd(op_case *c, double **g, int acc) {
  double *work = malloc((size_t)(c->d[1] * c->d[1]) * 8); /* (T, T) */
  qt_op_attention_backward_cpu_f64(g[0], g[1], g[2], acc, work, c->r, c->aux2, c->in[0], c->in[1],
                                   c->in[2], c->aux, c->d[0], c->d[1], c->d[2], c->d[3], c->d[4], NULL);
  free(work);
}
static void test_attention(void **st) {
  (void)st;
  /* B, T, H, K, D, documents per row */
  const int64_t shapes[][6] = {{1, 1, 1, 1, 1, 1}, {1, 7, 2, 1, 5, 2}, {2, 9, 4, 2, 3, 3},
                               {1, 65, 2, 1, 2, 2}, {3, 5, 3, 3, 7, 1}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    ag_rng r = {s + 51};
    int64_t B = shapes[s][0], T = shapes[s][1], H = shapes[s][2], K = shapes[s][3];
    int64_t D = shapes[s][4], ndoc = shapes[s][5];
    int32_t *doc = malloc((size_t)(B * T) * 4);
    for (int64_t b = 0; b < B; b++) /* ndoc contiguous documents at random boundaries */
      for (int64_t t = 0, d = 0; t < T; t++) {
        if (t > 0 && d < ndoc - 1 && ag_unif(&r, 0, 1) < (double)(ndoc - 1) / (double)T * 2) d++;
        doc[b * T + t] = (int32_t)(b * 10 + d);
      }
    op_case c = {.name = "attention", .n_in = 3,
                 .in = {rnd(&r, B * T * H * D, -1.5, 1.5), rnd(&r, B * T * K * D, -1.5, 1.5),
                        rnd(&r, B * T * K * D, -1, 1)},
                 .in_n = {B * T * H * D, B * T * K * D, B * T * K * D}, .check = {1, 1, 1},
                 .out = malloc(B * T * H * D * 8), .out_n = B * T * H * D, .fwd = att_fwd,
                 .bwd = att_bwd, .d = {B, T, H, K, D, ndoc}, .aux = doc,
                 .aux2 = malloc((size_t)(B * H * T * T) * 8)};
    if (T == 1) c.check[0] = c.check[1] = 0; /* one key: softmax is constant, dq = dk = 0 */
    run_case(&c);
    free(doc);
    free(c.aux2);
    free_case(&c);
  }
}

/* A token never attends across documents: changing document 2's keys/values
 * leaves document 1's outputs bit-identical, and vice versa for later queries. */
static void test_attention_doc_isolation(void **st) {
  (void)st;
  const int64_t B = 1, T = 11, H = 4, K = 2, D = 3, split = 5;
  ag_rng r = {77};
  int32_t doc[11];
  for (int t = 0; t < T; t++) doc[t] = t < split ? 0 : 1;
  double *q = rnd(&r, T * H * D, -1, 1), *k = rnd(&r, T * K * D, -1, 1), *v = rnd(&r, T * K * D, -1, 1);
  double *o1 = malloc(T * H * D * 8), *o2 = malloc(T * H * D * 8), *P = malloc(B * H * T * T * 8);
  qt_op_attention_forward_cpu_f64(o1, P, q, k, v, doc, B, T, H, K, D, NULL);
  for (int64_t i = 0; i < split * K * D; i++) {
    k[i] += 0.5;
    v[i] -= 0.25;
  }
  qt_op_attention_forward_cpu_f64(o2, P, q, k, v, doc, B, T, H, K, D, NULL);
  assert_memory_equal(o1 + split * H * D, o2 + split * H * D, (size_t)((T - split) * H * D) * 8);
  assert_memory_not_equal(o1, o2, (size_t)(split * H * D) * 8);
  /* The first token of document 2 attends only to itself: out = its own v. */
  for (int64_t h = 0; h < H; h++)
    for (int64_t d = 0; d < D; d++)
      assert_true(fabs(o2[(split * H + h) * D + d] - v[(split * K + h / (H / K)) * D + d]) < 1e-15);
  free(q); free(k); free(v); free(o1); free(o2); free(P);
}

/* ---- SwiGLU ---- */
static void swi_fwd(op_case *c) { qt_op_swiglu_forward_cpu_f64(c->out, c->in[0], c->in[1], c->d[0]); }
static void swi_bwd(op_case *c, double **g, int acc) {
  qt_op_swiglu_backward_cpu_f64(g[0], g[1], acc, c->r, c->in[0], c->in[1], c->d[0]);
}
static void test_swiglu(void **st) {
  (void)st;
  const int64_t ns[] = {1, 7, 63, 65};
  for (size_t s = 0; s < 4; s++) {
    ag_rng r = {s + 61};
    int64_t n = ns[s];
    op_case c = {.name = "swiglu", .n_in = 2, .in = {rnd(&r, n, -4, 4), rnd(&r, n, -1, 1)},
                 .in_n = {n, n}, .check = {1, 1}, .out = malloc(n * 8), .out_n = n,
                 .fwd = swi_fwd, .bwd = swi_bwd, .d = {n}};
    run_case(&c);
    free_case(&c);
  }
}

/* ---- fused lm_head + cross-entropy (the output is the scalar loss) ---- */
static void ce_fwd(op_case *c) {
  int64_t N = c->d[0], C = c->d[1], V = c->d[2], chunk = c->d[3], cnt;
  double *lse = c->aux2, *logits = lse + N;
  c->out[0] = qt_op_cross_entropy_forward_cpu_f64(lse, &cnt, logits, chunk, c->in[0], c->in[1],
                                                  c->aux, N, C, V, 0.0);
}
static void ce_bwd(op_case *c, double **g, int acc) {
  int64_t N = c->d[0], C = c->d[1], V = c->d[2], chunk = c->d[3];
  double *lse = c->aux2, *logits = lse + N;
  qt_op_cross_entropy_backward_cpu_f64(g[0], acc, logits, chunk, c->r[0], lse, c->in[0], c->in[1],
                                       c->aux, N, C, V, 0.0);
}
static void test_cross_entropy(void **st) {
  (void)st;
  /* N, C, V, chunk rows */
  const int64_t shapes[][4] = {{1, 1, 2, 1}, {5, 7, 63, 2}, {7, 5, 65, 7}, {63, 3, 5, 10}};
  for (size_t s = 0; s < 4; s++) {
    ag_rng r = {s + 71};
    int64_t N = shapes[s][0], C = shapes[s][1], V = shapes[s][2], chunk = shapes[s][3];
    int32_t *tg = malloc((size_t)N * 4);
    for (int64_t n = 0; n < N; n++)
      tg[n] = (n % 3 == 2) ? QT_IGNORE_INDEX : (int32_t)(ag_next(&r) % (uint64_t)V);
    op_case c = {.name = "cross_entropy", .n_in = 2, .in = {rnd(&r, N * C, -2, 2), rnd(&r, V * C, -2, 2)},
                 .in_n = {N * C, V * C}, .check = {1, 0}, .out = malloc(8), .out_n = 1,
                 .fwd = ce_fwd, .bwd = ce_bwd, .d = {N, C, V, chunk}, .aux = tg,
                 .aux2 = malloc((size_t)(N + chunk * V) * 8)};
    run_case(&c);
    free(tg);
    free(c.aux2);
    free_case(&c);
  }
}

/* The loss sum and count do not depend on the chunking, and ignored rows get
 * exactly zero gradient. The reference loss is computed here directly from the
 * definition (logsumexp - target logit) without the op. */
static void test_cross_entropy_chunks(void **st) {
  (void)st;
  const int64_t N = 13, C = 6, V = 17;
  ag_rng r = {99};
  double *x = rnd(&r, N * C, -2, 2), *W = rnd(&r, V * C, -2, 2);
  int32_t tg[13];
  int64_t want_cnt = 0;
  double want = 0;
  for (int64_t n = 0; n < N; n++) {
    tg[n] = (n == 0 || n == 6 || n == 12) ? QT_IGNORE_INDEX : (int32_t)(ag_next(&r) % V);
    if (tg[n] == QT_IGNORE_INDEX) continue;
    want_cnt++;
    double z[17], mx = -INFINITY, s = 0;
    for (int64_t v = 0; v < V; v++) {
      z[v] = 0;
      for (int64_t c = 0; c < C; c++) z[v] += x[n * C + c] * W[v * C + c];
      if (z[v] > mx) mx = z[v];
    }
    for (int64_t v = 0; v < V; v++) s += exp(z[v] - mx);
    want += mx + log(s) - z[tg[n]];
  }
  const int64_t chunks[] = {1, 4, 13, 64};
  for (size_t i = 0; i < 4; i++) {
    double *lse = malloc(N * 8), *logits = malloc((size_t)(chunks[i] * V) * 8), *dx = malloc(N * C * 8);
    int64_t cnt = -1;
    double got = qt_op_cross_entropy_forward_cpu_f64(lse, &cnt, logits, chunks[i], x, W, tg, N, C, V, 0.0);
    assert_int_equal(cnt, want_cnt);
    assert_true(fabs(got - want) <= 1e-12 * fabs(want));
    qt_op_cross_entropy_backward_cpu_f64(dx, 0, logits, chunks[i], 1.0, lse, x, W, tg, N, C, V, 0.0);
    for (int64_t c = 0; c < C; c++) assert_true(dx[6 * C + c] == 0.0);
    free(lse); free(logits); free(dx);
  }
  free(x);
  free(W);
}

/* qt_rope_inv_freq against transformers' LlamaRotaryEmbedding.inv_freq
 * (tests/golden/autograd/rope_inv_freq.txt, tools/reference/make_autograd_fixtures.py).
 * Both compute in fp32; powf and torch's pow may differ in the last bit, so each
 * value may be off by at most 1 ulp. */
static void test_rope_inv_freq_golden(void **st) {
  (void)st;
  char path[512];
  snprintf(path, sizeof path, "%s/golden/autograd/rope_inv_freq.txt", QLORA_TEST_DIR);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[8192];
  int cases = 0, exact = 0, total = 0;
  qt_rope_config cfg = {0};
  long long dim = 0;
  while (fgets(line, sizeof line, f)) {
    char typ[16];
    double theta, factor, lo, hi;
    long long orig;
    if (sscanf(line, "case %15s %lld %lf %lf %lf %lf %lld", typ, &dim, &theta, &factor, &lo, &hi, &orig) == 7) {
      cfg = (qt_rope_config){.type = !strcmp(typ, "default") ? QT_ROPE_DEFAULT
                                     : !strcmp(typ, "linear") ? QT_ROPE_LINEAR : QT_ROPE_LLAMA3,
                             .theta = theta, .factor = factor, .low_freq_factor = lo,
                             .high_freq_factor = hi, .original_max_position_embeddings = (double)orig};
      assert_true(!strcmp(typ, "default") || !strcmp(typ, "linear") || !strcmp(typ, "llama3"));
    } else if (!strncmp(line, "inv_freq", 8)) {
      float got[512];
      assert_true(dim > 0 && dim <= 1024);
      qt_rope_inv_freq(got, &cfg, dim);
      char *p = line + 8;
      for (long long j = 0; j < dim / 2; j++) {
        char *end;
        uint32_t want = (uint32_t)strtoul(p, &end, 16), have;
        assert_true(end != p);
        p = end;
        memcpy(&have, &got[j], 4);
        int64_t ulp = (int64_t)have - (int64_t)want;
        if (ulp != 0)
          fprintf(stderr, "rope case %d j=%lld: %08x vs transformers %08x\n", cases, j, have, want);
        assert_true(ulp >= -1 && ulp <= 1);
        exact += ulp == 0;
        total++;
      }
      cases++;
    }
  }
  fclose(f);
  fprintf(stderr, "rope inv_freq: %d cases, %d of %d values bit-exact\n", cases, exact, total);
  assert_int_equal(cases, 9);
}

/* The GEMM attention (training) against the plain-loop reference, forward and
 * backward, in both twins, with and without accumulation. */
static void test_attention_gemm_vs_ref(void **st) {
  (void)st;
  /* the last two cases have non-contiguous document ids (0 0 1 1 0 0 ...): the
   * GEMM version then falls back to whole-row blocks */
  const int64_t shapes[][5] = {{1, 1, 1, 1, 1}, {2, 9, 4, 2, 3}, {1, 65, 4, 2, 8}, {3, 7, 6, 3, 5},
                               {2, 13, 4, 2, 3}, {1, 64, 2, 1, 4}};
  for (size_t s = 0; s < 6; s++) {
    ag_rng r = {s + 500};
    int64_t B = shapes[s][0], T = shapes[s][1], H = shapes[s][2], K = shapes[s][3], D = shapes[s][4];
    int64_t nq = B * T * H * D, nk = B * T * K * D, nP = B * H * T * T;
    int32_t *doc = malloc((size_t)(B * T) * 4);
    for (int64_t n = 0; n < B * T; n++)
      doc[n] = s < 4 ? (int32_t)((n % T) * 3 / (T + 1) + 10 * (n / T))
                     : (int32_t)(((n % T) / 2) % 2 + 10 * (n / T));
    double *q = rnd(&r, nq, -2, 2), *k = rnd(&r, nk, -2, 2), *v = rnd(&r, nk, -1, 1);
    double *dout = rnd(&r, nq, -1, 1);
    double *o[2], *P[2], *dq[2], *dk[2], *dv[2];
    double *work = malloc((size_t)(T * T + B * K * T) * 8);
    for (int m = 0; m < 2; m++) {
      o[m] = malloc(nq * 8); P[m] = calloc((size_t)nP, 8); /* entries P leaves unwritten compare as 0 */
      dq[m] = rnd(&r, nq, 0, 0); dk[m] = rnd(&r, nk, 0, 0); dv[m] = rnd(&r, nk, 0, 0);
      for (int acc = 0; acc < 2; acc++) { /* acc pass adds the same again: 2x */
        if (m == 0) {
          qt_op_attention_forward_ref_cpu_f64(o[m], P[m], q, k, v, doc, B, T, H, K, D, NULL);
          qt_op_attention_backward_ref_cpu_f64(dq[m], dk[m], dv[m], acc, work, dout, P[m], q, k, v, doc, B, T, H, K, D, NULL);
        } else {
          qt_op_attention_forward_cpu_f64(o[m], P[m], q, k, v, doc, B, T, H, K, D, NULL);
          qt_op_attention_backward_cpu_f64(dq[m], dk[m], dv[m], acc, work, dout, P[m], q, k, v, doc, B, T, H, K, D, NULL);
        }
      }
    }
    assert_true(ag_rel_err(o[0], o[1], nq) < 1e-13);
    assert_true(ag_rel_err(P[0], P[1], nP) < 1e-13);
    assert_true(ag_rel_err(dq[0], dq[1], nq) < 1e-12);
    assert_true(ag_rel_err(dk[0], dk[1], nk) < 1e-12);
    assert_true(ag_rel_err(dv[0], dv[1], nk) < 1e-12);
    /* fp32 GEMM version against the fp64 reference */
    float *qf = malloc(nq * 4), *kf = malloc(nk * 4), *vf = malloc(nk * 4), *dof = malloc(nq * 4);
    float *of = malloc(nq * 4), *Pf = calloc((size_t)nP, 4), *dqf = malloc(nq * 4), *dkf = malloc(nk * 4);
    float *dvf = malloc(nk * 4), *wf = malloc((size_t)(T * T) * 4);
    for (int64_t i = 0; i < nq; i++) { qf[i] = (float)q[i]; dof[i] = (float)dout[i]; }
    for (int64_t i = 0; i < nk; i++) { kf[i] = (float)k[i]; vf[i] = (float)v[i]; }
    qt_op_attention_forward_cpu(of, Pf, qf, kf, vf, doc, B, T, H, K, D, NULL);
    qt_op_attention_backward_cpu(dqf, dkf, dvf, 0, wf, dof, Pf, qf, kf, vf, doc, B, T, H, K, D, NULL);
    double *tmp = malloc((size_t)(nq > nk ? nq : nk) * 8);
    for (int64_t i = 0; i < nq; i++) tmp[i] = of[i];
    assert_true(ag_rel_err(tmp, o[0], nq) < 1e-5);
    for (int64_t i = 0; i < nq; i++) tmp[i] = 2.0 * dqf[i];
    assert_true(ag_rel_err(tmp, dq[0], nq) < 1e-5);
    for (int64_t i = 0; i < nk; i++) tmp[i] = 2.0 * dkf[i];
    assert_true(ag_rel_err(tmp, dk[0], nk) < 1e-5);
    for (int64_t i = 0; i < nk; i++) tmp[i] = 2.0 * dvf[i];
    assert_true(ag_rel_err(tmp, dv[0], nk) < 1e-5);
    free(tmp); free(qf); free(kf); free(vf); free(dof); free(of); free(Pf); free(dqf); free(dkf); free(dvf); free(wf);
    for (int m = 0; m < 2; m++) { free(o[m]); free(P[m]); free(dq[m]); free(dk[m]); free(dv[m]); }
    free(work); free(q); free(k); free(v); free(dout); free(doc);
  }
}

/* ---- attention options: scale, sliding window, logit soft-capping ---- */

/* The per-element helpers (autograd/kernels/attention_mask.h) that the CPU and
 * CUDA kernels share, against their definitions: transformers masking_utils
 * (causal_mask_function: kv_idx <= q_idx; sliding_window_overlay: kv_idx >
 * q_idx - sliding_window; packed_sequence_mask_function: same sequence id) and
 * gemma2's c * tanh(s / c), whose derivative is checked by central differences. */
static void test_attention_mask_helpers(void **st) {
  (void)st;
  const int64_t windows[] = {0, 1, 2, 3, 7, 100};
  for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++) {
    int64_t win = windows[w];
    for (int64_t i = 0; i < 20; i++) {
      int64_t seen = 0;
      for (int64_t j = 0; j < 20; j++) {
        for (int32_t dj = 0; dj < 2; dj++) {
          int want = j <= i && dj == 0 && (win == 0 || j > i - win);
          assert_int_equal(qt_att_visible(i, j, 0, dj, win), want);
          seen += want;
        }
      }
      /* one document: min(i + 1, window) keys, the first at qt_att_key_start */
      assert_int_equal(seen, win == 0 || i + 1 < win ? i + 1 : win);
      assert_int_equal(qt_att_key_start(0, i, win), i + 1 - seen);
      assert_int_equal(qt_att_key_start(5, i, win), i + 1 - seen > 5 ? i + 1 - seen : 5);
    }
  }
  assert_true(qt_att_softcap(3.25, 0.0) == 3.25);
  assert_true(qt_att_softcap_grad(3.25, 0.0) == 1.0);
  const double caps[] = {0.5, 1.0, 2.5, 30.0, 50.0};
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++)
    for (double s = -60; s <= 60; s += 0.75) {
      double cap = caps[c];
      assert_true(qt_att_softcap(s, cap) == cap * tanh(s / cap));
      assert_true(fabs(qt_att_softcap(s, cap)) <= cap);
      double h = 1e-5 * cap;
      double fd = (qt_att_softcap(s + h, cap) - qt_att_softcap(s - h, cap)) / (2 * h);
      assert_true(fabs(fd - qt_att_softcap_grad(s, cap)) < 1e-8);
    }
}

/* ag_rel_err, except against a reference that is zero up to rounding (dq and
 * dk with window 1: a softmax over one key is constant), where the RMS of the
 * difference is returned: rounding noise over an exact zero has no relative size. */
static double att_err(const double *got, const double *want, int64_t n) {
  double rms = ag_norm(want, n) / sqrt((double)(n > 0 ? n : 1));
  if (rms < 1e-12) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d += (got[i] - want[i]) * (got[i] - want[i]);
    return sqrt(d / (double)n);
  }
  return ag_rel_err(got, want, n);
}

/* Options of one test case; doc modes: 0 contiguous documents of random
 * lengths (packing), 1 one document, 2 non-contiguous ids (0 0 1 1 0 0 ...). */
static void att_make_docs(int32_t *doc, int64_t B, int64_t T, int mode, ag_rng *r) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0, d = 0; t < T; t++) {
      if (mode == 0 && t > 0 && ag_unif(r, 0, 1) < 0.05) d++;
      doc[b * T + t] = (int32_t)(b * 100 + (mode == 2 ? (t / 2) % 2 : d));
    }
}

/* The GEMM version with options against the plain reference, forward and
 * backward, both twins, with windows 1, 2, < T, = 64 (a tile), >= T, soft-capping
 * and non-default scales, on odd T crossing 64-row tiles, GQA and packed rows.
 * Also: window 1 gives out_i = v_i exactly (each query sees only itself), and a
 * window >= T gives the same bits as no window. */
static void test_attention_opts_gemm_vs_ref(void **st) {
  (void)st;
  /* B, T, H, K, D, doc mode */
  const int64_t shapes[][6] = {{2, 67, 4, 2, 8, 0}, {1, 130, 2, 1, 4, 0}, {2, 13, 4, 2, 3, 2},
                               {1, 130, 2, 2, 5, 1}, {1, 1, 1, 1, 2, 1}};
  double worst32 = 0;
  int cases = 0;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    int64_t B = shapes[s][0], T = shapes[s][1], H = shapes[s][2], K = shapes[s][3];
    int64_t D = shapes[s][4];
    /* scale, window, softcap */
    const qt_att_opts optv[] = {{0, 1, 0},     {0, 2, 0},      {0.3, 5, 0},     {0, 64, 2.0},
                                {0, T - 1, 0}, {0, T, 1.5},    {0.2, T + 7, 0}, {0, 0, 1.0},
                                {0.4, 0, 0},   {0, 65, 0},     {0.3, 3, 2.5},   {0.7, 17, 0.8}};
    for (size_t o = 0; o < sizeof optv / sizeof optv[0]; o++) {
      const qt_att_opts *op = &optv[o];
      ag_rng r = {s * 100 + o + 900};
      int64_t nq = B * T * H * D, nk = B * T * K * D, nP = B * H * T * T;
      int32_t *doc = malloc((size_t)(B * T) * 4);
      att_make_docs(doc, B, T, (int)shapes[s][5], &r);
      double *q = rnd(&r, nq, -2, 2), *k = rnd(&r, nk, -2, 2), *v = rnd(&r, nk, -1, 1);
      double *dout = rnd(&r, nq, -1, 1);
      for (int64_t i = 0; i < nq; i++) { q[i] = (float)q[i]; dout[i] = (float)dout[i]; }
      for (int64_t i = 0; i < nk; i++) { k[i] = (float)k[i]; v[i] = (float)v[i]; }
      double *o2[2], *P[2], *dq[2], *dk[2], *dv[2];
      int64_t nw = qt_op_attention_work_elems(T, op) + B * K * T;
      double *work = malloc((size_t)nw * 8);
      for (int m = 0; m < 2; m++) {
        o2[m] = malloc(nq * 8); P[m] = calloc((size_t)nP, 8);
        dq[m] = rnd(&r, nq, 0, 0); dk[m] = rnd(&r, nk, 0, 0); dv[m] = rnd(&r, nk, 0, 0);
        for (int acc = 0; acc < 2; acc++) { /* acc pass adds the same again: 2x */
          if (m == 0) {
            qt_op_attention_forward_ref_cpu_f64(o2[m], P[m], q, k, v, doc, B, T, H, K, D, op);
            qt_op_attention_backward_ref_cpu_f64(dq[m], dk[m], dv[m], acc, work, dout, P[m], q, k,
                                                 v, doc, B, T, H, K, D, op);
          } else {
            qt_op_attention_forward_cpu_f64(o2[m], P[m], q, k, v, doc, B, T, H, K, D, op);
            qt_op_attention_backward_cpu_f64(dq[m], dk[m], dv[m], acc, work, dout, P[m], q, k, v,
                                             doc, B, T, H, K, D, op);
          }
        }
      }
      double e[5] = {ag_rel_err(o2[0], o2[1], nq), ag_rel_err(P[0], P[1], nP),
                     ag_rel_err(dq[0], dq[1], nq), ag_rel_err(dk[0], dk[1], nk),
                     ag_rel_err(dv[0], dv[1], nk)};
      if (e[0] >= 1e-13 || e[1] >= 1e-13 || e[2] >= 1e-12 || e[3] >= 1e-12 || e[4] >= 1e-12)
        fprintf(stderr, "shape %zu opts (%g, %lld, %g): f64 gemm vs ref %.3g %.3g %.3g %.3g %.3g\n",
                s, op->scale, (long long)op->window, op->softcap, e[0], e[1], e[2], e[3], e[4]);
      assert_true(e[0] < 1e-13 && e[1] < 1e-13);
      assert_true(e[2] < 1e-12 && e[3] < 1e-12 && e[4] < 1e-12);
      if (op->window == 1) /* each query sees only its own key: P = 1, out = v */
        for (int64_t n = 0; n < B * T; n++)
          for (int64_t h = 0; h < H; h++)
            for (int64_t d = 0; d < D; d++) {
              double want = v[(n * K + h / (H / K)) * D + d];
              assert_true(o2[0][(n * H + h) * D + d] == want);
              assert_true(o2[1][(n * H + h) * D + d] == want);
            }
      if (op->window >= T) { /* no effect: the bits of window 0 */
        qt_att_opts nw0 = *op;
        nw0.window = 0;
        double *o3 = malloc(nq * 8), *P3 = calloc((size_t)nP, 8);
        qt_op_attention_forward_cpu_f64(o3, P3, q, k, v, doc, B, T, H, K, D, &nw0);
        assert_memory_equal(o3, o2[1], (size_t)nq * 8);
        free(o3); free(P3);
      }
      /* fp32: the GEMM version and the reference against the fp64 reference */
      float *qf = malloc(nq * 4), *kf = malloc(nk * 4), *vf = malloc(nk * 4), *dof = malloc(nq * 4);
      float *of = malloc(nq * 4), *Pf = calloc((size_t)nP, 4), *dqf = malloc(nq * 4);
      float *dkf = malloc(nk * 4), *dvf = malloc(nk * 4), *wf = malloc((size_t)nw * 4);
      double *tmp = malloc((size_t)(nq > nk ? nq : nk) * 8);
      for (int64_t i = 0; i < nq; i++) { qf[i] = (float)q[i]; dof[i] = (float)dout[i]; }
      for (int64_t i = 0; i < nk; i++) { kf[i] = (float)k[i]; vf[i] = (float)v[i]; }
      for (int ref = 0; ref < 2; ref++) {
        if (ref) {
          qt_op_attention_forward_ref_cpu(of, Pf, qf, kf, vf, doc, B, T, H, K, D, op);
          qt_op_attention_backward_ref_cpu(dqf, dkf, dvf, 0, wf, dof, Pf, qf, kf, vf, doc, B, T, H,
                                           K, D, op);
        } else {
          qt_op_attention_forward_cpu(of, Pf, qf, kf, vf, doc, B, T, H, K, D, op);
          qt_op_attention_backward_cpu(dqf, dkf, dvf, 0, wf, dof, Pf, qf, kf, vf, doc, B, T, H, K,
                                       D, op);
        }
        double ef[4];
        for (int64_t i = 0; i < nq; i++) tmp[i] = of[i];
        ef[0] = att_err(tmp, o2[0], nq);
        for (int64_t i = 0; i < nq; i++) tmp[i] = 2.0 * dqf[i];
        ef[1] = att_err(tmp, dq[0], nq);
        for (int64_t i = 0; i < nk; i++) tmp[i] = 2.0 * dkf[i];
        ef[2] = att_err(tmp, dk[0], nk);
        for (int64_t i = 0; i < nk; i++) tmp[i] = 2.0 * dvf[i];
        ef[3] = att_err(tmp, dv[0], nk);
        for (int j = 0; j < 4; j++) {
          if (ef[j] >= 1e-5)
            fprintf(stderr, "shape %zu opts (%g, %lld, %g) fp32 %s: rel err %d %.3g\n", s,
                    op->scale, (long long)op->window, op->softcap, ref ? "ref" : "gemm", j, ef[j]);
          assert_true(ef[j] < 1e-5);
          if (ef[j] > worst32) worst32 = ef[j];
        }
      }
      cases++;
      free(tmp); free(qf); free(kf); free(vf); free(dof); free(of); free(Pf); free(dqf); free(dkf);
      free(dvf); free(wf);
      for (int m = 0; m < 2; m++) { free(o2[m]); free(P[m]); free(dq[m]); free(dk[m]); free(dv[m]); }
      free(work); free(q); free(k); free(v); free(dout); free(doc);
    }
  }
  fprintf(stderr, "attention options: %d cases, worst fp32 rel err vs fp64 ref %.3g\n", cases,
          worst32);
}

/* Finite differences through the options (f64): the reference and the GEMM version. */
typedef struct {
  const int32_t *doc;
  qt_att_opts o;
  int ref;
  double *P;
} att_opts_aux;
static void atto_fwd(op_case *c) {
  const att_opts_aux *a = c->aux;
  (a->ref ? qt_op_attention_forward_ref_cpu_f64 : qt_op_attention_forward_cpu_f64)(
      c->out, a->P, c->in[0], c->in[1], c->in[2], a->doc, c->d[0], c->d[1], c->d[2], c->d[3],
      c->d[4], &a->o);
}
static void atto_bwd(op_case *c, double **g, int acc) {
  const att_opts_aux *a = c->aux;
  int64_t T = c->d[1];
  double *work = malloc((size_t)(qt_op_attention_work_elems(T, &a->o) + c->d[0] * c->d[3] * T) * 8);
  (a->ref ? qt_op_attention_backward_ref_cpu_f64 : qt_op_attention_backward_cpu_f64)(
      g[0], g[1], g[2], acc, work, c->r, a->P, c->in[0], c->in[1], c->in[2], a->doc, c->d[0], T,
      c->d[2], c->d[3], c->d[4], &a->o);
  free(work);
}
static void test_attention_opts_grad(void **st) {
  (void)st;
  /* B, T, H, K, D, doc mode ; scale, window, softcap */
  const int64_t shapes[][6] = {{1, 9, 2, 1, 3, 0}, {2, 70, 2, 2, 2, 0}, {1, 11, 4, 2, 2, 2}};
  const qt_att_opts optv[] = {{0.4, 3, 1.5}, {0, 5, 2.0}, {0.9, 4, 0.7}};
  for (size_t s = 0; s < 3; s++)
    for (int ref = 0; ref < 2; ref++) {
      int64_t B = shapes[s][0], T = shapes[s][1], H = shapes[s][2], K = shapes[s][3];
      int64_t D = shapes[s][4];
      ag_rng r = {s + 4000};
      int32_t *doc = malloc((size_t)(B * T) * 4);
      att_make_docs(doc, B, T, (int)shapes[s][5], &r);
      att_opts_aux a = {.doc = doc, .o = optv[s], .ref = ref,
                        .P = malloc((size_t)(B * H * T * T) * 8)};
      op_case c = {.name = ref ? "attention_ref opts" : "attention opts", .n_in = 3,
                   .in = {rnd(&r, B * T * H * D, -1.5, 1.5), rnd(&r, B * T * K * D, -1.5, 1.5),
                          rnd(&r, B * T * K * D, -1, 1)},
                   .in_n = {B * T * H * D, B * T * K * D, B * T * K * D}, .check = {1, 1, 1},
                   .out = malloc(B * T * H * D * 8), .out_n = B * T * H * D, .fwd = atto_fwd,
                   .bwd = atto_bwd, .d = {B, T, H, K, D, (int64_t)s}, .aux = &a};
      run_case(&c);
      free(doc);
      free(a.P);
      free_case(&c);
    }
}

/* Against transformers itself (tests/golden/autograd/attention_opts.txt,
 * tools/reference/make_autograd_fixtures.py attention_opts_fixture): gemma2
 * eager_attention_forward with a masking_utils causal + sliding-window +
 * packed-sequence mask, on fp32-representable inputs. transformers runs the
 * softmax in fp32, so agreement is at fp32 level; the bounds are those of the
 * model golden test (test_tape_decoder.c): 1e-5 for the output, 1e-4 for the
 * gradients, relative; a wrong window, mask or cap is O(1). */
static double *att_read_vals(FILE *f, const char *name, int64_t n) {
  char w[16];
  long long m;
  assert_int_equal(fscanf(f, "%15s %lld", w, &m), 2);
  assert_string_equal(w, name);
  assert_int_equal(m, n);
  double *x = malloc((size_t)n * 8);
  for (int64_t i = 0; i < n; i++) assert_int_equal(fscanf(f, "%lf", &x[i]), 1);
  return x;
}
static void att_draw(double *x, int64_t n, uint64_t seed, double lo, double hi) {
  ag_rng r = {seed};
  for (int64_t i = 0; i < n; i++) x[i] = (float)ag_unif(&r, lo, hi);
}
static void test_attention_opts_golden(void **st) {
  (void)st;
  char path[512], line[512];
  snprintf(path, sizeof path, "%s/golden/autograd/attention_opts.txt", QLORA_TEST_DIR);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  assert_non_null(fgets(line, sizeof line, f)); /* '# ...' provenance */
  assert_true(line[0] == '#');
  long long B, T, H, K, D, window, seed;
  double scale, softcap, worst[2][4] = {{0}};
  int cases = 0;
  while (fscanf(f, " case %lld %lld %lld %lld %lld %lf %lld %lf %lld", &B, &T, &H, &K, &D, &scale,
                &window, &softcap, &seed) == 9) {
    qt_att_opts o = {.scale = scale, .window = window, .softcap = softcap};
    int64_t nq = B * T * H * D, nk = B * T * K * D;
    char w[8];
    assert_int_equal(fscanf(f, "%7s", w), 1);
    assert_string_equal(w, "doc");
    int32_t *doc = malloc((size_t)(B * T) * 4);
    for (int64_t n = 0; n < B * T; n++) assert_int_equal(fscanf(f, "%d", &doc[n]), 1);
    double *want[4];
    want[0] = att_read_vals(f, "out", nq);
    want[1] = att_read_vals(f, "dq", nq);
    want[2] = att_read_vals(f, "dk", nk);
    want[3] = att_read_vals(f, "dv", nk);
    double *q = malloc(nq * 8), *k = malloc(nk * 8), *v = malloc(nk * 8), *dout = malloc(nq * 8);
    att_draw(q, nq, (uint64_t)seed * 10 + 0, -2, 2);
    att_draw(k, nk, (uint64_t)seed * 10 + 1, -2, 2);
    att_draw(v, nk, (uint64_t)seed * 10 + 2, -1, 1);
    att_draw(dout, nq, (uint64_t)seed * 10 + 3, -1, 1);
    int64_t nw = qt_op_attention_work_elems(T, &o) + B * K * T;
    double *got[4] = {malloc(nq * 8), malloc(nq * 8), malloc(nk * 8), malloc(nk * 8)};
    double *P = malloc((size_t)(B * H * T * T) * 8), *work = malloc((size_t)nw * 8);
    float *qf = malloc(nq * 4), *kf = malloc(nk * 4), *vf = malloc(nk * 4), *dof = malloc(nq * 4);
    float *gf[4] = {malloc(nq * 4), malloc(nq * 4), malloc(nk * 4), malloc(nk * 4)};
    float *Pf = malloc((size_t)(B * H * T * T) * 4), *wf = malloc((size_t)nw * 4);
    for (int64_t i = 0; i < nq; i++) { qf[i] = (float)q[i]; dof[i] = (float)dout[i]; }
    for (int64_t i = 0; i < nk; i++) { kf[i] = (float)k[i]; vf[i] = (float)v[i]; }
    int64_t n4[4] = {nq, nq, nk, nk};
    /* versions: fp64 reference, fp64 GEMM, fp32 GEMM (training), fp32 reference */
    for (int ver = 0; ver < 4; ver++) {
      if (ver == 0) {
        qt_op_attention_forward_ref_cpu_f64(got[0], P, q, k, v, doc, B, T, H, K, D, &o);
        qt_op_attention_backward_ref_cpu_f64(got[1], got[2], got[3], 0, work, dout, P, q, k, v,
                                             doc, B, T, H, K, D, &o);
      } else if (ver == 1) {
        qt_op_attention_forward_cpu_f64(got[0], P, q, k, v, doc, B, T, H, K, D, &o);
        qt_op_attention_backward_cpu_f64(got[1], got[2], got[3], 0, work, dout, P, q, k, v, doc,
                                         B, T, H, K, D, &o);
      } else {
        (ver == 2 ? qt_op_attention_forward_cpu : qt_op_attention_forward_ref_cpu)(
            gf[0], Pf, qf, kf, vf, doc, B, T, H, K, D, &o);
        (ver == 2 ? qt_op_attention_backward_cpu : qt_op_attention_backward_ref_cpu)(
            gf[1], gf[2], gf[3], 0, wf, dof, Pf, qf, kf, vf, doc, B, T, H, K, D, &o);
        for (int j = 0; j < 4; j++)
          for (int64_t i = 0; i < n4[j]; i++) got[j][i] = gf[j][i];
      }
      for (int j = 0; j < 4; j++) {
        double e = att_err(got[j], want[j], n4[j]);
        double bound = j == 0 ? 1e-5 : 1e-4;
        if (e >= bound || getenv("AG_VERBOSE"))
          fprintf(stderr, "attention golden case %d version %d tensor %d: rel err %.3g\n", cases,
                  ver, j, e);
        assert_true(e < bound);
        if (e > worst[ver >= 2][j]) worst[ver >= 2][j] = e;
      }
    }
    cases++;
    for (int j = 0; j < 4; j++) { free(want[j]); free(got[j]); free(gf[j]); }
    free(q); free(k); free(v); free(dout); free(P); free(work); free(qf); free(kf); free(vf);
    free(dof); free(Pf); free(wf); free(doc);
  }
  fclose(f);
  fprintf(stderr, "attention options vs transformers (%d cases), worst rel err out/dq/dk/dv: "
          "fp64 %.3g %.3g %.3g %.3g, fp32 %.3g %.3g %.3g %.3g\n", cases, worst[0][0], worst[0][1],
          worst[0][2], worst[0][3], worst[1][0], worst[1][1], worst[1][2], worst[1][3]);
  assert_int_equal(cases, 5);
}

/* The tape records the options (qt_tape_attention_ex): its forward equals the
 * op with the same options bit for bit, a checkpointed layer replays them on
 * recompute (gradients bit-identical to the plain recording), the options do
 * change the gradients, and a measuring tape accounts for the softcap backward's
 * larger work buffer (a real tape of exactly the measured size runs). */
typedef struct {
  int32_t k, v;
  const int32_t *doc;
  const qt_att_opts *o;
  int64_t B, T, H, D;
} att_layer_ctx;
static qt_status att_layer_fn(qt_tape *t, void *ctx, int32_t in, int32_t *out) {
  const att_layer_ctx *c = ctx;
  return qt_tape_attention_ex(t, in, c->k, c->v, c->B, c->T, c->H, c->H, c->D, c->doc, c->o, out);
}
typedef struct {
  qt_tape_stats stats;
  double loss;
} att_tape_run;
static att_tape_run att_tape_step(bool measure, size_t act, size_t grad, bool ckpt,
                                  const qt_att_opts *o, const float *q, const float *k,
                                  const float *v, const float *W, float *gq, float *gk, float *gv,
                                  float *att_out) {
  enum { B = 2, T = 70, H = 2, D = 4, V = 5 };
  static int32_t doc[B * T], targets[B * T];
  for (int n = 0; n < B * T; n++) {
    doc[n] = n / T * 10 + (n % T >= 40);
    targets[n] = n % V;
  }
  static float zero[B * T * H * D];
  qt_tape *t;
  qt_tape_config cfg = {.act_bytes = act, .grad_bytes = grad, .max_tensors = 32, .max_nodes = 16,
                        .ce_chunk_rows = 16};
  assert_int_equal((measure ? qt_tape_init_measure : qt_tape_init)(&t, QT_F32, &cfg), QT_OK);
  int32_t iq, ik, iv, iw, iz, x, y, loss;
  memset(gq, 0, sizeof(float) * B * T * H * D);
  memset(gk, 0, sizeof(float) * B * T * H * D);
  memset(gv, 0, sizeof(float) * B * T * H * D);
  assert_int_equal(qt_tape_trainable(t, "q", (void *)q, gq, B * T, H * D, &iq), QT_OK);
  assert_int_equal(qt_tape_trainable(t, "k", (void *)k, gk, B * T, H * D, &ik), QT_OK);
  assert_int_equal(qt_tape_trainable(t, "v", (void *)v, gv, B * T, H * D, &iv), QT_OK);
  assert_int_equal(qt_tape_frozen(t, "W", W, V, H * D, &iw), QT_OK);
  assert_int_equal(qt_tape_constant(t, zero, B * T, H * D, &iz), QT_OK);
  assert_int_equal(qt_tape_add(t, iq, iz, &x), QT_OK); /* an activation for the layer input */
  att_layer_ctx c = {.k = ik, .v = iv, .doc = doc, .o = o, .B = B, .T = T, .H = H, .D = D};
  assert_int_equal(qt_tape_layer(t, att_layer_fn, &c, x, ckpt, &y), QT_OK);
  if (att_out && !measure) memcpy(att_out, qt_tape_data(t, y), sizeof(float) * B * T * H * D);
  double sum;
  int64_t cnt;
  assert_int_equal(qt_tape_cross_entropy(t, y, iw, targets, &loss, &sum, &cnt), QT_OK);
  assert_int_equal(qt_tape_backward(t, loss, 1.0 / (double)cnt), QT_OK);
  att_tape_run r = {qt_tape_get_stats(t), sum};
  qt_tape_free(&t);
  return r;
}
static void test_attention_opts_tape(void **st) {
  (void)st;
  enum { B = 2, T = 70, H = 2, D = 4, V = 5, N = B * T * H * D };
  ag_rng r = {31337};
  float *q = malloc(N * 4), *k = malloc(N * 4), *v = malloc(N * 4), *W = malloc(V * H * D * 4);
  for (int i = 0; i < N; i++) {
    q[i] = (float)ag_unif(&r, -2, 2);
    k[i] = (float)ag_unif(&r, -2, 2);
    v[i] = (float)ag_unif(&r, -1, 1);
  }
  for (int i = 0; i < V * H * D; i++) W[i] = (float)ag_unif(&r, -1, 1);
  const qt_att_opts opts = {.scale = 0.3, .window = 9, .softcap = 1.5};
  float *g[2][3], *att = malloc(N * 4), *att_op = malloc(N * 4), *P = malloc(B * H * T * T * 4);
  for (int c = 0; c < 2; c++)
    for (int j = 0; j < 3; j++) g[c][j] = malloc(N * 4);
  att_tape_run meas = att_tape_step(true, 0, 0, true, &opts, q, k, v, W, g[0][0], g[0][1], g[0][2], NULL);
  for (int ckpt = 0; ckpt < 2; ckpt++) { /* ckpt on: arenas of exactly the measured size */
    att_tape_run run = att_tape_step(false, ckpt ? meas.stats.act_peak : 1 << 22,
                                     ckpt ? meas.stats.grad_peak : 1 << 22, ckpt == 1, &opts, q, k,
                                     v, W, g[ckpt][0], g[ckpt][1], g[ckpt][2], att);
    assert_true(run.loss > 0);
    if (ckpt) assert_int_equal(run.stats.act_peak, meas.stats.act_peak);
  }
  int32_t doc[B * T];
  for (int n = 0; n < B * T; n++) doc[n] = n / T * 10 + (n % T >= 40);
  qt_op_attention_forward_cpu(att_op, P, q, k, v, doc, B, T, H, H, D, &opts);
  assert_memory_equal(att, att_op, N * 4);
  for (int j = 0; j < 3; j++) assert_memory_equal(g[0][j], g[1][j], N * 4);
  /* the defaults give other gradients */
  float *h[3] = {malloc(N * 4), malloc(N * 4), malloc(N * 4)};
  att_tape_step(false, 1 << 22, 1 << 22, false, NULL, q, k, v, W, h[0], h[1], h[2], NULL);
  assert_memory_not_equal(h[0], g[0][0], N * 4);
  for (int j = 0; j < 3; j++) free(h[j]);
  for (int c = 0; c < 2; c++)
    for (int j = 0; j < 3; j++) free(g[c][j]);
  free(q); free(k); free(v); free(W); free(att); free(att_op); free(P);
}

/* The tape's blocked dropout path (qt_op_lora_*_masked_cpu: no saved xd, rows
 * masked block by block through a small scratch, AVX-512 spans where the CPU
 * has them) against the plain ops with the same mask, fp32 and fp64, acc 0/1,
 * dA or dx absent. One block (N rows fit): the same GEMM calls on the same
 * values, so every output is bit-identical; several blocks (In large, N not a
 * multiple of the block): dA sums by block, so a norm-wise tolerance. Guard
 * elements after the scratch must stay untouched. */
static void lora_masked_case(int f64, int64_t N, int64_t In, int64_t O, int64_t R, int acc,
                             int with_dA, int with_dx, uint64_t seed) {
  ag_rng r = {seed};
  size_t es = f64 ? 8 : 4;
  int64_t nx = N * In, wk = qt_op_lora_masked_work_elems(N, In);
  assert_true(wk >= 0 && wk <= nx + In * 64);
  double *src[8];
  const int64_t len[8] = {nx, R * In, O * R, N * O, N * O, N * In, R * In, O * R};
  for (int i = 0; i < 8; i++) {
    src[i] = malloc((size_t)(len[i] ? len[i] : 1) * 8);
    ag_fill(&r, src[i], len[i], -1, 1);
  }
  uint8_t *mask = malloc((size_t)(nx ? nx : 1));
  for (int64_t i = 0; i < nx; i++) mask[i] = ag_unif(&r, 0, 1) >= 0.3;
  /* 0 x, 1 A, 2 B, 3 y0, 4 dy, 5 dx0, 6 dA0, 7 dB0; two copies of the outputs */
  void *b[2][8];
  for (int c = 0; c < 2; c++)
    for (int i = 0; i < 8; i++) {
      b[c][i] = malloc((size_t)(len[i] ? len[i] : 1) * es);
      for (int64_t j = 0; j < len[i]; j++) {
        if (f64) ((double *)b[c][i])[j] = src[i][j];
        else ((float *)b[c][i])[j] = (float)src[i][j];
      }
    }
  size_t big = (size_t)(nx + 1) * es, guard = 16;
  void *u[2] = {malloc((size_t)(N * R + 1) * es), malloc((size_t)(N * R + 1) * es)};
  void *du[2] = {malloc((size_t)(N * R + 1) * es), malloc((size_t)(N * R + 1) * es)};
  void *xd = malloc(big), *work = malloc(big);
  unsigned char *scratch = malloc((size_t)(wk + guard) * es);
  memset(scratch + (size_t)wk * es, 0xA5, guard * es);
  const double ks = 1.0 / 0.7, scale = 1.75;
  if (f64) {
    double **p = (double **)b[0], **q = (double **)b[1];
    qt_op_lora_forward_cpu_f64(p[3], u[0], xd, p[0], mask, ks, p[1], p[2], scale, N, In, O, R);
    qt_op_lora_backward_cpu_f64(with_dx ? p[5] : NULL, acc, with_dA ? p[6] : NULL, p[7], du[0],
                                work, p[4], xd, u[0], mask, ks, p[1], p[2], scale, N, In, O, R);
    qt_op_lora_forward_masked_cpu_f64(q[3], u[1], (double *)scratch, q[0], mask, ks, q[1], q[2],
                                      scale, N, In, O, R);
    qt_op_lora_backward_masked_cpu_f64(with_dx ? q[5] : NULL, acc, with_dA ? q[6] : NULL, q[7],
                                       du[1], (double *)scratch, q[4], q[0], u[1], mask, ks, q[1],
                                       q[2], scale, N, In, O, R);
  } else {
    float **p = (float **)b[0], **q = (float **)b[1];
    qt_op_lora_forward_cpu(p[3], u[0], xd, p[0], mask, ks, p[1], p[2], scale, N, In, O, R);
    qt_op_lora_backward_cpu(with_dx ? p[5] : NULL, acc, with_dA ? p[6] : NULL, p[7], du[0], work,
                            p[4], xd, u[0], mask, ks, p[1], p[2], scale, N, In, O, R);
    qt_op_lora_forward_masked_cpu(q[3], u[1], (float *)scratch, q[0], mask, ks, q[1], q[2], scale,
                                  N, In, O, R);
    qt_op_lora_backward_masked_cpu(with_dx ? q[5] : NULL, acc, with_dA ? q[6] : NULL, q[7], du[1],
                                   (float *)scratch, q[4], q[0], u[1], mask, ks, q[1], q[2], scale,
                                   N, In, O, R);
  }
  for (size_t j = 0; j < guard * es; j++) assert_int_equal(scratch[(size_t)wk * es + j], 0xA5);
  int one_block = wk == nx;
  /* outputs: y (3), dx (5), dA (6), dB (7), and u */
  const int outs[4] = {3, 5, 6, 7};
  for (int k = 0; k < 5; k++) {
    int64_t n = k < 4 ? len[outs[k]] : N * R;
    void *a = k < 4 ? b[0][outs[k]] : u[0], *c = k < 4 ? b[1][outs[k]] : u[1];
    if (one_block) {
      if (memcmp(a, c, (size_t)n * es) != 0)
        fail_msg("lora masked (%s, N %lld In %lld O %lld R %lld acc %d): output %d not bit-identical",
                 f64 ? "f64" : "f32", (long long)N, (long long)In, (long long)O, (long long)R, acc, k);
      continue;
    }
    double *da = malloc((size_t)(n ? n : 1) * 8), *dc = malloc((size_t)(n ? n : 1) * 8);
    for (int64_t j = 0; j < n; j++) {
      da[j] = f64 ? ((double *)a)[j] : ((float *)a)[j];
      dc[j] = f64 ? ((double *)c)[j] : ((float *)c)[j];
    }
    double e = ag_rel_err(da, dc, n);
    if (!(e <= (f64 ? 1e-13 : 2e-6)) || !ag_all_finite(dc, n))
      fail_msg("lora masked (%s, N %lld In %lld O %lld R %lld acc %d): output %d rel err %g",
               f64 ? "f64" : "f32", (long long)N, (long long)In, (long long)O, (long long)R, acc, k, e);
    free(da);
    free(dc);
  }
  for (int c = 0; c < 2; c++) {
    for (int i = 0; i < 8; i++) free(b[c][i]);
    free(u[c]);
    free(du[c]);
  }
  for (int i = 0; i < 8; i++) free(src[i]);
  free(mask);
  free(xd);
  free(work);
  free(scratch);
}

static void test_lora_masked_vs_plain(void **st) {
  (void)st;
  /* {N, In, O, R}: one block (tiny, odd, R 16); several blocks with a short last one */
  const int64_t shapes[][4] = {{1, 1, 1, 1},    {5, 7, 63, 3},   {300, 17, 5, 16},
                               {200, 1000, 9, 4}, {130, 2000, 3, 2}, {1024, 64, 64, 8}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int f64 = 0; f64 < 2; f64++)
      for (int acc = 0; acc < 2; acc++)
        lora_masked_case(f64, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], acc, 1, 1,
                         700 + 10 * s + 2 * (uint64_t)f64 + (uint64_t)acc);
  /* A frozen (no dA), x without gradient (no dx), neither */
  lora_masked_case(0, 200, 1000, 9, 4, 1, 0, 1, 801);
  lora_masked_case(0, 200, 1000, 9, 4, 1, 1, 0, 802);
  lora_masked_case(0, 200, 1000, 9, 4, 1, 0, 0, 803);
  lora_masked_case(1, 5, 7, 63, 3, 0, 0, 1, 804);
}

/* Dropout masks: word i of the Philox stream (seed, subsequence) decides
 * element i, so the parallel chunked generation equals one sequential stream;
 * the kept fraction is near 1 - p; another subsequence gives another mask. */
static void test_dropout_mask(void **st) {
  (void)st;
  const int64_t n = 100003;
  const double p = 0.1;
  uint8_t *m = malloc((size_t)n), *m2 = malloc((size_t)n);
  qt_op_dropout_mask_cpu(m, n, p, 1234, 77);
  qt_philox s;
  qt_philox_init(&s, 1234, 77, 0);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; i++) {
    assert_int_equal(m[i], qt_philox_next_uniform(&s) > (float)p);
    kept += m[i];
  }
  /* binomial: sd = sqrt(n p (1-p)) ~ 95; allow 6 sd */
  assert_true(fabs((double)kept - (double)n * (1 - p)) < 6 * sqrt((double)n * p * (1 - p)));
  qt_op_dropout_mask_cpu(m2, n, p, 1234, 78);
  assert_memory_not_equal(m, m2, (size_t)n);
  qt_op_dropout_mask_cpu(m2, n, p, 1234, 77);
  assert_memory_equal(m, m2, (size_t)n);
  free(m);
  free(m2);
}

/* The fp32 kernels' exp against the correctly rounded exp (double exp, then
 * rounded: exact for float results but in ties of ~1e-9 probability) over every
 * 127th float in [ln FLT_MIN, 88.72] (~17.6 million values; the whole range was
 * swept once by hand, bench/RESULTS.md): at most 1 ulp apart, nearly all equal;
 * and the ends: 0 below ln FLT_MIN (never a subnormal), +inf above ln FLT_MAX,
 * NaN in NaN out, exp(0) = 1 exactly. */
static void test_exp_accuracy(void **st) {
  (void)st;
  int64_t n = 0, off1 = 0;
  for (int sign = 0; sign < 2; sign++) { /* bit patterns of [0, 88.72] and of [-87.3365, -0] */
    float hi = sign ? 87.33654f : 88.72283f;
    uint32_t top;
    memcpy(&top, &hi, 4);
    for (uint32_t u = 0; u <= top; u += 127) {
      float x;
      memcpy(&x, &u, 4);
      x = sign ? -x : x;
      float got = qt_op_exp_cpu(x), want = (float)exp((double)x);
      int32_t a, b;
      memcpy(&a, &got, 4);
      memcpy(&b, &want, 4);
      if (sign) { /* the x <= 0 form: the same bits */
        float le0 = qt_op_exp_le0_cpu(x);
        assert_memory_equal(&le0, &got, 4);
      }
      if (a != b) {
        if (a - b > 1 || b - a > 1) fprintf(stderr, "exp(%.9g): %.9g vs %.9g\n", x, got, want);
        assert_true(a - b <= 1 && b - a <= 1);
        off1++;
      }
      n++;
    }
  }
  fprintf(stderr, "exp: %lld values, %lld one ulp off\n", (long long)n, (long long)off1);
  assert_true(n > 17000000 && off1 < n / 50);
  assert_true(qt_op_exp_cpu(0.0f) == 1.0f);
  assert_true(qt_op_exp_cpu(-87.4f) == 0.0f && qt_op_exp_cpu(-1000.0f) == 0.0f);
  assert_true(qt_op_exp_cpu(-INFINITY) == 0.0f);
  assert_true(isinf(qt_op_exp_cpu(88.8f)) && isinf(qt_op_exp_cpu(INFINITY)));
  assert_true(isnan(qt_op_exp_cpu(NAN)) && isnan(qt_op_exp_le0_cpu(NAN)));
  assert_true(qt_op_exp_le0_cpu(-INFINITY) == 0.0f && qt_op_exp_le0_cpu(-100.0f) == 0.0f);
  assert_true(qt_op_exp_le0_cpu(0.0f) == 1.0f && qt_op_exp_le0_cpu(-0.0f) == 1.0f);
  for (float x = -87.33654f; x < -87.0f; x = nextafterf(x, INFINITY)) { /* no subnormal results */
    float y = qt_op_exp_cpu(x);
    assert_true(y == 0.0f || y >= FLT_MIN);
  }
}

/* Determinism in the OpenMP thread count (fp32, the training path): shapes
 * large enough that the OpenMP loops split work; 1 and 2 threads must give
 * bit-identical outputs and gradients. OpenBLAS keeps 2 threads in both runs:
 * OpenBLAS 0.3.21 itself may sum in a different order with a different thread
 * count for some shapes (observed here for the 150x16x150 attention product),
 * so bit-identical runs need the same OpenBLAS thread count (DESIGN.md section 4
 * promises determinism for the same config, which fixes the threads). */
typedef struct {
  float *out, *rstd, *dx, *att, *P, *dq, *dk, *dv, *work, *sw, *dg, *du, *lse, *logits, *dxc;
  double loss;
} det_run;

static void det_step(det_run *o, const float *x, const float *w, const float *q, const float *k,
                     const float *v, const float *dy, const int32_t *doc, const int32_t *tg,
                     const float *W) {
  enum { N = 300, C = 257, T = 150, H = 4, K = 2, D = 16, V = 700, CH = 64 };
  qt_op_rmsnorm_forward_cpu(o->out, o->rstd, x, w, 1e-5, N, C);
  qt_op_rmsnorm_backward_cpu(o->dx, 0, dy, x, w, o->rstd, N, C);
  qt_op_attention_forward_cpu(o->att, o->P, q, k, v, doc, 2, T, H, K, D, NULL);
  qt_op_attention_backward_cpu(o->dq, o->dk, o->dv, 0, o->work, dy, o->P, q, k, v, doc, 2, T, H, K, D, NULL);
  qt_op_swiglu_forward_cpu(o->sw, x, dy, N * C);
  qt_op_swiglu_backward_cpu(o->dg, o->du, 0, dy, x, w, C);
  int64_t cnt;
  o->loss = qt_op_cross_entropy_forward_cpu(o->lse, &cnt, o->logits, CH, x, W, tg, N, C, V, 0.0);
  qt_op_cross_entropy_backward_cpu(o->dxc, 0, o->logits, CH, 1.0 / (double)cnt, o->lse, x, W, tg, N, C, V, 0.0);
}

static void test_thread_determinism(void **st) {
  (void)st;
  enum { N = 300, C = 257, T = 150, H = 4, K = 2, D = 16, V = 700, CH = 64 };
  ag_rng r = {4242};
  float *x = malloc(N * C * 4), *w = malloc(C * 4), *dy = malloc(N * C * 4), *W = malloc(V * C * 4);
  float *q = malloc(2 * T * H * D * 4), *k = malloc(2 * T * K * D * 4), *v = malloc(2 * T * K * D * 4);
  for (int i = 0; i < N * C; i++) { x[i] = (float)ag_unif(&r, -2, 2); dy[i] = (float)ag_unif(&r, -1, 1); }
  for (int i = 0; i < C; i++) w[i] = (float)ag_unif(&r, 0.5, 1.5);
  for (int i = 0; i < V * C; i++) W[i] = (float)ag_unif(&r, -0.2, 0.2);
  for (int i = 0; i < 2 * T * H * D; i++) q[i] = (float)ag_unif(&r, -1, 1);
  for (int i = 0; i < 2 * T * K * D; i++) { k[i] = (float)ag_unif(&r, -1, 1); v[i] = (float)ag_unif(&r, -1, 1); }
  int32_t doc[2 * T], tg[N];
  for (int i = 0; i < 2 * T; i++) doc[i] = (i % T) < 60 ? 2 * (i / T) : 2 * (i / T) + 1;
  for (int i = 0; i < N; i++) tg[i] = i % 5 == 0 ? QT_IGNORE_INDEX : (int32_t)(ag_next(&r) % V);
  det_run run[2];
  for (int th = 0; th < 2; th++) {
    det_run *o = &run[th];
    o->out = malloc(N * C * 4); o->rstd = malloc(N * 4); o->dx = malloc(N * C * 4);
    o->att = malloc(2 * T * H * D * 4); o->P = calloc(2 * H * T * T, 4); /* unwritten entries compare as 0 */
    o->dq = malloc(2 * T * H * D * 4); o->dk = malloc(2 * T * K * D * 4); o->dv = malloc(2 * T * K * D * 4);
    o->work = malloc(T * T * 4); o->sw = malloc(N * C * 4); o->dg = malloc(N * C * 4); o->du = malloc(N * C * 4);
    o->lse = malloc(N * 4); o->logits = malloc(CH * V * 4); o->dxc = malloc(N * C * 4);
    omp_set_num_threads(th + 1);
    openblas_set_num_threads(2); /* fixed: see above */
    det_step(o, x, w, q, k, v, dy, doc, tg, W);
  }
  omp_set_num_threads(2);
  assert_memory_equal(run[0].out, run[1].out, N * C * 4);
  assert_memory_equal(run[0].dx, run[1].dx, N * C * 4);
  assert_memory_equal(run[0].att, run[1].att, 2 * T * H * D * 4);
  assert_memory_equal(run[0].dq, run[1].dq, 2 * T * H * D * 4);
  assert_memory_equal(run[0].dk, run[1].dk, 2 * T * K * D * 4);
  assert_memory_equal(run[0].dv, run[1].dv, 2 * T * K * D * 4);
  assert_memory_equal(run[0].sw, run[1].sw, N * C * 4);
  assert_memory_equal(run[0].dg, run[1].dg, C * 4);
  assert_memory_equal(&run[0].loss, &run[1].loss, sizeof(double));
  assert_memory_equal(run[0].dxc, run[1].dxc, N * C * 4);
  for (int th = 0; th < 2; th++) {
    det_run *o = &run[th];
    free(o->out); free(o->rstd); free(o->dx); free(o->att); free(o->P); free(o->dq); free(o->dk);
    free(o->dv); free(o->work); free(o->sw); free(o->dg); free(o->du); free(o->lse); free(o->logits);
    free(o->dxc);
  }
  free(x); free(w); free(dy); free(W); free(q); free(k); free(v);
}

/* The linear forward against the definition y[n][o] = b[o] + sum_i x[n][i] W[o][i]
 * (the FD check above cannot see the bias: it does not change dx). */
static void test_linear_forward_definition(void **st) {
  (void)st;
  const int64_t N = 7, In = 65, O = 5;
  ag_rng r = {808};
  double *x = rnd(&r, N * In, -1, 1), *W = rnd(&r, O * In, -1, 1), *b = rnd(&r, O, -1, 1);
  double *y = malloc(N * O * 8), *y0 = malloc(N * O * 8);
  qt_op_linear_forward_cpu_f64(y, x, W, b, N, In, O);
  qt_op_linear_forward_cpu_f64(y0, x, W, NULL, N, In, O);
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < O; o++) {
      double want = 0;
      for (int64_t i = 0; i < In; i++) want += x[n * In + i] * W[o * In + i];
      assert_true(fabs(y0[n * O + o] - want) < 1e-12);
      assert_true(fabs(y[n * O + o] - (want + b[o])) < 1e-12);
    }
  free(x); free(W); free(b); free(y); free(y0);
}

/* ---- fused cross-entropy: loss as the forward op, dx1 = d(sum loss)/dx ---- */
static void cef_fwd(op_case *c) {
  int64_t N = c->d[0], C = c->d[1], V = c->d[2], chunk = c->d[3], cnt;
  double *dx1 = c->aux2, *logits = dx1 + N * C, *rowloss = logits + chunk * V;
  c->out[0] = qt_op_cross_entropy_fused_cpu_f64(dx1, &cnt, logits, rowloss, chunk, c->in[0],
                                                c->in[1], c->aux, N, C, V, 0.0);
}
static void cef_bwd(op_case *c, double **g, int acc) {
  qt_op_scaled_add_cpu_f64(g[0], acc, c->aux2, c->r[0], c->d[0] * c->d[1]);
}
static void test_cross_entropy_fused(void **st) {
  (void)st;
  const int64_t shapes[][4] = {{1, 1, 2, 1}, {5, 7, 63, 2}, {7, 5, 65, 7}, {63, 3, 5, 10}};
  for (size_t s = 0; s < 4; s++) {
    ag_rng r = {s + 171};
    int64_t N = shapes[s][0], C = shapes[s][1], V = shapes[s][2], chunk = shapes[s][3];
    int32_t *tg = malloc((size_t)N * 4);
    for (int64_t n = 0; n < N; n++)
      tg[n] = (n % 3 == 2) ? QT_IGNORE_INDEX : (int32_t)(ag_next(&r) % (uint64_t)V);
    op_case c = {.name = "cross_entropy_fused", .n_in = 2,
                 .in = {rnd(&r, N * C, -2, 2), rnd(&r, V * C, -2, 2)}, .in_n = {N * C, V * C},
                 .check = {1, 0}, .out = malloc(8), .out_n = 1, .fwd = cef_fwd, .bwd = cef_bwd,
                 .d = {N, C, V, chunk}, .aux = tg,
                 .aux2 = malloc((size_t)(N * C + chunk * V + chunk) * 8)};
    run_case(&c);
    /* the same loss as the plain forward */
    double *lse = malloc((size_t)N * 8), *logits = malloc((size_t)(chunk * V) * 8);
    int64_t cnt;
    double plain = qt_op_cross_entropy_forward_cpu_f64(lse, &cnt, logits, chunk, c.in[0], c.in[1], tg, N, C, V, 0.0);
    cef_fwd(&c);
    assert_true(fabs(plain - c.out[0]) <= 1e-13 * fabs(plain));
    free(lse); free(logits); free(tg); free(c.aux2);
    free_case(&c);
  }
}

/* Document ids / positions from segment starts, and malformed starts rejected. */
static void test_doc_ids_from_starts(void **st) {
  (void)st;
  const int64_t starts[] = {0, 4, 9, 15, 18};
  int32_t doc[18], pos[18];
  assert_int_equal(qt_op_doc_ids_from_starts(doc, pos, starts, 4, 18), QT_OK);
  const int32_t want_doc[18] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3};
  const int32_t want_pos[18] = {0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0, 1, 2};
  assert_memory_equal(doc, want_doc, sizeof doc);
  assert_memory_equal(pos, want_pos, sizeof pos);
  const int64_t bad_end[] = {0, 4, 17}, empty[] = {0, 4, 4, 18}, bad_first[] = {1, 18};
  assert_int_equal(qt_op_doc_ids_from_starts(doc, pos, bad_end, 2, 18), QT_ERR_INVALID);
  assert_int_equal(qt_op_doc_ids_from_starts(doc, pos, empty, 3, 18), QT_ERR_INVALID);
  assert_non_null(strstr(qt_error_message(), "document 1"));
  assert_int_equal(qt_op_doc_ids_from_starts(doc, pos, bad_first, 1, 18), QT_ERR_INVALID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rmsnorm),        cmocka_unit_test(test_add),
      cmocka_unit_test(test_linear),         cmocka_unit_test(test_linear_forward_definition),         cmocka_unit_test(test_lora),
      cmocka_unit_test(test_rope),           cmocka_unit_test(test_rope_inv_freq_golden),           cmocka_unit_test(test_attention),
      cmocka_unit_test(test_attention_doc_isolation),
      cmocka_unit_test(test_attention_gemm_vs_ref),
      cmocka_unit_test(test_attention_mask_helpers),
      cmocka_unit_test(test_attention_opts_gemm_vs_ref),
      cmocka_unit_test(test_attention_opts_grad),
      cmocka_unit_test(test_attention_opts_golden),
      cmocka_unit_test(test_attention_opts_tape),
      cmocka_unit_test(test_doc_ids_from_starts),
      cmocka_unit_test(test_swiglu),         cmocka_unit_test(test_cross_entropy),
      cmocka_unit_test(test_cross_entropy_chunks),
      cmocka_unit_test(test_cross_entropy_fused),
      cmocka_unit_test(test_dropout_mask),
      cmocka_unit_test(test_lora_masked_vs_plain),
      cmocka_unit_test(test_thread_determinism),
      cmocka_unit_test(test_exp_accuracy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
