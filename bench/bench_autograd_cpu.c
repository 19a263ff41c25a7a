/* bench/bench_autograd_cpu.c — forward + backward throughput of the CPU
 * autograd on a Llama-shaped decoder with LoRA on all seven projections,
 * random weights (nothing is loaded), and how much of the machine's measured
 * sgemm rate it reaches.
 *
 *   bench_autograd_cpu [--layers 8] [--hidden 1024] [--seq 512] [--steps 3] [--ckpt]
 *                      [--ce-recompute] [--dropout P] [--vocab 32000]
 *
 * --ce-recompute: the cross-entropy recomputes its logits in backward instead of
 * forming its input gradient during forward (qt_tape_config.ce_grad_in_forward).
 * --dropout P: LoRA dropout on every adapted input, as the trainer runs it: each
 * step draws a keep mask per (layer, projection) (qt_op_dropout_mask_cpu, in the
 * timed step), which a checkpointed layer's recompute reuses.
 *
 * Model: hidden C, H = C/64 heads of D = 64, K = H/2 kv heads (GQA 2),
 * MLP F = 2.75 C rounded to 64, vocab 32000 (--vocab) tied to the embedding, LoRA r = 16,
 * one packed row of `seq` tokens holding two documents.
 * Model FLOPs per token (issue 4): 4 x linear params (forward 2, backward dX 2;
 * frozen weights get no dW) over q,k,v,o,gate,up,down and the lm_head, plus
 * attention: forward 4 H D k_avg (q.k and p.v), backward 8 H D k_avg, where
 * k_avg = mean number of keys a query sees under the causal per-document mask.
 * LoRA FLOPs (6 x LoRA params) are left out of the model FLOPs (< 3% here).
 * The sgemm rate is the best of a few cblas_sgemm calls of the model's own
 * shapes (tokens x in -> out), on the same threads, measured before and after
 * the timed steps. Set OMP_WAIT_POLICY=passive: OpenBLAS (pthreads build) and
 * OpenMP threads otherwise spin against each other between parallel regions. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "common/status.h"

typedef struct { uint64_t s; } rng;
static uint64_t rng_next(rng *r) { /* splitmix64 */
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static float *rnd(rng *r, int64_t n, float scale) {
  float *x = malloc((size_t)n * sizeof(float));
  if (!x) {
    fprintf(stderr, "bench_autograd_cpu: out of memory (%lld floats)\n", (long long)n);
    exit(1);
  }
  for (int64_t i = 0; i < n; i++)
    x[i] = scale * (float)((double)(rng_next(r) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
  return x;
}
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { NPROJ = 7, MAXL = 64 };
typedef struct {
  int64_t L, C, H, K, D, F, V, R, T;
  int32_t emb, norm, in_norm[MAXL], post_norm[MAXL], W[MAXL][NPROJ], A[MAXL][NPROJ], Bm[MAXL][NPROJ];
  int32_t *ids, *pos, *doc, *targets;
  float inv_freq[512];
  float *wemb, *ones, *w[MAXL][NPROJ], *a[MAXL][NPROJ], *ga[MAXL][NPROJ], *b[MAXL][NPROJ],
      *gb[MAXL][NPROJ]; /* weights (owned), registered on each tape */
  int64_t pin[NPROJ], pout[NPROJ];
  double p;                    /* LoRA dropout (0: none) */
  uint64_t step;               /* keys the masks */
  uint8_t *mask[MAXL][NPROJ];  /* (T, pin[j]) keep masks when p > 0 */
  qt_tape *t;
} bench_model;
typedef struct { bench_model *m; int l; } layer_ctx;

static qt_status lin(bench_model *m, int l, int j, int32_t x, int32_t *y) {
  qt_tape_lora lo = {.A = m->A[l][j], .B = m->Bm[l][j], .scale = 2.0, .mask = NULL, .keep_scale = 1.0};
  if (m->p > 0) {
    lo.mask = m->mask[l][j];
    lo.keep_scale = 1.0 / (1.0 - m->p);
  }
  return qt_tape_linear(m->t, x, m->W[l][j], -1, &lo, y);
}

static qt_status layer_fn(qt_tape *t, void *vctx, int32_t h, int32_t *out) {
  layer_ctx *c = vctx;
  bench_model *m = c->m;
  int l = c->l;
  int32_t x, q, k, v, qr, kr, a, o, h1, x2, g, u, s, d;
  QT_TRY(qt_tape_rmsnorm(t, h, m->in_norm[l], 1e-5, &x));
  QT_TRY(lin(m, l, 0, x, &q));
  QT_TRY(lin(m, l, 1, x, &k));
  QT_TRY(lin(m, l, 2, x, &v));
  QT_TRY(qt_tape_rope(t, q, m->H, m->D, m->pos, m->inv_freq, &qr));
  QT_TRY(qt_tape_rope(t, k, m->K, m->D, m->pos, m->inv_freq, &kr));
  QT_TRY(qt_tape_attention(t, qr, kr, v, 1, m->T, m->H, m->K, m->D, m->doc, &a));
  QT_TRY(lin(m, l, 3, a, &o));
  QT_TRY(qt_tape_add(t, h, o, &h1));
  QT_TRY(qt_tape_rmsnorm(t, h1, m->post_norm[l], 1e-5, &x2));
  QT_TRY(lin(m, l, 4, x2, &g));
  QT_TRY(lin(m, l, 5, x2, &u));
  QT_TRY(qt_tape_swiglu(t, g, u, &s));
  QT_TRY(lin(m, l, 6, s, &d));
  return qt_tape_add(t, h1, d, out);
}

static qt_status register_params(bench_model *m) {
  qt_tape *t = m->t;
  QT_TRY(qt_tape_frozen(t, "embed_tokens", m->wemb, m->V, m->C, &m->emb));
  QT_TRY(qt_tape_frozen(t, "norm", m->ones, 1, m->C, &m->norm));
  for (int l = 0; l < m->L; l++) {
    QT_TRY(qt_tape_frozen(t, "input_layernorm", m->ones, 1, m->C, &m->in_norm[l]));
    QT_TRY(qt_tape_frozen(t, "post_attention_layernorm", m->ones, 1, m->C, &m->post_norm[l]));
    for (int j = 0; j < NPROJ; j++) {
      QT_TRY(qt_tape_frozen(t, "base", m->w[l][j], m->pout[j], m->pin[j], &m->W[l][j]));
      QT_TRY(qt_tape_trainable(t, "lora_A", m->a[l][j], m->ga[l][j], m->R, m->pin[j], &m->A[l][j]));
      QT_TRY(qt_tape_trainable(t, "lora_B", m->b[l][j], m->gb[l][j], m->pout[j], m->R, &m->Bm[l][j]));
    }
  }
  return QT_OK;
}

/* One training step's forward and backward on m->t. */
static qt_status record_step(bench_model *m, int ckpt, double *loss) {
  layer_ctx lc[MAXL];
  qt_tape_reset(m->t);
  if (m->p > 0) { /* this step's masks, drawn once (the recompute reuses them) */
    m->step++;
    for (int l = 0; l < m->L; l++)
      for (int j = 0; j < NPROJ; j++)
        qt_op_dropout_mask_cpu(m->mask[l][j], m->T * m->pin[j], m->p, m->step,
                               (uint64_t)(l * NPROJ + j));
  }
  int32_t h, xf, lid;
  int64_t cnt;
  double sum;
  QT_TRY(qt_tape_embedding(m->t, m->emb, m->ids, m->T, &h));
  for (int l = 0; l < m->L; l++) {
    lc[l] = (layer_ctx){m, l};
    QT_TRY(qt_tape_layer(m->t, layer_fn, &lc[l], h, ckpt, &h));
  }
  QT_TRY(qt_tape_rmsnorm(m->t, h, m->norm, 1e-5, &xf));
  QT_TRY(qt_tape_cross_entropy(m->t, xf, m->emb, m->targets, &lid, &sum, &cnt));
  QT_TRY(qt_tape_backward(m->t, lid, 1.0 / (double)cnt));
  *loss = sum / (double)cnt;
  return QT_OK;
}

static double sgemm_gflops(int64_t M, int64_t N, int64_t Kd) {
  rng r = {42};
  float *a = rnd(&r, M * Kd, 1), *b = rnd(&r, N * Kd, 1), *c = rnd(&r, M * N, 1);
  double best = 0;
  for (int i = 0; i < 4; i++) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)Kd, 1.0f, a, (int)Kd,
                b, (int)Kd, 0.0f, c, (int)N);
    double dt = now() - t0, g = 2.0 * (double)M * (double)N * (double)Kd / dt / 1e9;
    if (i > 0 && g > best) best = g; /* the first call warms up */
  }
  free(a); free(b); free(c);
  return best;
}

int main(int argc, char **argv) {
  bench_model m = {.L = 8, .C = 1024, .V = 32000, .R = 16, .T = 512, .D = 64};
  int steps = 3, ckpt = 0, ce_recompute = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--layers") && i + 1 < argc) m.L = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--hidden") && i + 1 < argc) m.C = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--seq") && i + 1 < argc) m.T = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ckpt")) ckpt = 1;
    else if (!strcmp(argv[i], "--ce-recompute")) ce_recompute = 1;
    else if (!strcmp(argv[i], "--dropout") && i + 1 < argc) m.p = atof(argv[++i]);
    else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) m.V = atoll(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--layers N] [--hidden C] [--seq T] [--steps S] [--ckpt] [--ce-recompute] "
              "[--dropout P] [--vocab V]\n", argv[0]);
      return 2;
    }
  }
  if (m.L < 1 || m.L > MAXL || m.C < 128 || m.C % 128 || m.T < 2 || steps < 1 || !(m.p >= 0 && m.p < 1) ||
      m.V < 2) {
    fprintf(stderr, "bench_autograd_cpu: need 1 <= layers <= %d, hidden a multiple of 128, seq >= 2, "
            "0 <= dropout < 1, vocab >= 2\n", MAXL);
    return 2;
  }
  m.H = m.C / m.D;
  m.K = m.H / 2;
  m.F = (m.C * 11 / 4 + 63) / 64 * 64;
  const int64_t N = m.T, C = m.C, HD = m.H * m.D, KD = m.K * m.D, F = m.F, R = m.R;
  const int64_t pout[NPROJ] = {HD, KD, KD, C, F, F, C}, pin[NPROJ] = {C, C, C, HD, C, C, F};

  /* ---- sgemm reference rate ---- */
  double peak = 0;
  const int64_t shapes[][3] = {{N, F, C}, {N, C, F}, {N, HD, C}, {N, 4096, C}};
  for (size_t i = 0; i < 4; i++) {
    double g = sgemm_gflops(shapes[i][0], shapes[i][1], shapes[i][2]);
    if (g > peak) peak = g;
  }

  /* ---- model ---- */
  rng r = {2024};
  int64_t lin_params = m.V * C, lora_params = 0;
  for (int j = 0; j < NPROJ; j++) {
    m.pin[j] = pin[j];
    m.pout[j] = pout[j];
    lin_params += m.L * pout[j] * pin[j];
    lora_params += m.L * R * (pout[j] + pin[j]);
  }
  m.wemb = rnd(&r, m.V * C, 0.05f);
  m.ones = malloc((size_t)C * sizeof(float));
  for (int64_t c = 0; c < C; c++) m.ones[c] = 1.0f;
  for (int l = 0; l < m.L; l++)
    for (int j = 0; j < NPROJ; j++) {
      float sc = 1.0f / sqrtf((float)pin[j]);
      m.w[l][j] = rnd(&r, pout[j] * pin[j], sc);
      m.a[l][j] = rnd(&r, R * pin[j], sc);
      m.ga[l][j] = calloc((size_t)(R * pin[j]), 4);
      m.b[l][j] = rnd(&r, pout[j] * R, 0.01f);
      m.gb[l][j] = calloc((size_t)(pout[j] * R), 4);
      if (m.p > 0) m.mask[l][j] = malloc((size_t)(N * pin[j]));
      if (!m.ga[l][j] || !m.gb[l][j] || (m.p > 0 && !m.mask[l][j])) {
        fprintf(stderr, "bench_autograd_cpu: out of memory\n");
        return 1;
      }
    }
  m.ids = malloc((size_t)N * 4);
  m.pos = malloc((size_t)N * 4);
  m.doc = malloc((size_t)N * 4);
  m.targets = malloc((size_t)N * 4);
  int64_t split = N * 3 / 5; /* two documents */
  for (int64_t n = 0; n < N; n++) {
    m.ids[n] = (int32_t)(rng_next(&r) % (uint64_t)m.V);
    m.doc[n] = n >= split;
    m.pos[n] = (int32_t)(n < split ? n : n - split);
  }
  for (int64_t n = 0; n < N; n++)
    m.targets[n] = (n + 1 == N || n + 1 == split) ? QT_IGNORE_INDEX : m.ids[n + 1];
  qt_rope_config rc = {.type = QT_ROPE_DEFAULT, .theta = 10000.0};
  qt_rope_inv_freq(m.inv_freq, &rc, m.D);
  double k_avg = ((double)split * (double)(split + 1) / 2 + (double)(N - split) * (double)(N - split + 1) / 2) /
                 (double)N;
  double flops_tok = 4.0 * (double)lin_params + 12.0 * (double)(m.H * m.D) * k_avg;

  /* ---- memory plan: one step on a measuring tape, then arenas of exactly that size ---- */
  qt_tape_config cfg = {.max_tensors = 64 * (int32_t)m.L + 256, .max_nodes = 32 * (int32_t)m.L + 64,
                        .ce_chunk_rows = 64, .ce_grad_in_forward = !ce_recompute};
  double loss = 0;
  qt_status s = qt_tape_init_measure(&m.t, QT_F32, &cfg);
  if (s == QT_OK) s = register_params(&m);
  if (s == QT_OK) s = record_step(&m, ckpt, &loss);
  if (s == QT_OK) {
    qt_tape_stats ms = qt_tape_get_stats(m.t);
    cfg.act_bytes = ms.act_peak;
    cfg.grad_bytes = ms.grad_peak;
    qt_tape_free(&m.t);
    s = qt_tape_init(&m.t, QT_F32, &cfg);
  }
  if (s == QT_OK) s = register_params(&m);
  if (s == QT_OK) {
    qt_mem_plan plan;
    qt_mem_plan_init(&plan);
    s = qt_tape_add_to_plan(m.t, &plan);
    if (s == QT_OK) qt_mem_plan_print(&plan, stdout);
    qt_mem_plan_free(&plan);
  }
  double t_total = 0, t_min = 0;
  for (int step = 0; step <= steps && s == QT_OK; step++) {
    double t0 = now();
    s = record_step(&m, ckpt, &loss);
    double dt = now() - t0;
    if (step > 0) t_total += dt; /* step 0 warms up */
    if (step == 1 || (step > 1 && dt < t_min)) t_min = dt;
  }
  if (s != QT_OK) {
    fprintf(stderr, "bench_autograd_cpu: %s\n", qt_error_message());
    return 1;
  }
  double tok_s = (double)(N * steps) / t_total;
  /* Measure sgemm again: on a shared machine the load changes during the run;
   * the fraction uses the better of the two (a conservative fraction). */
  double peak_before = peak;
  for (size_t i = 0; i < 4; i++) {
    double g = sgemm_gflops(shapes[i][0], shapes[i][1], shapes[i][2]);
    if (g > peak) peak = g;
  }
  qt_tape_stats st = qt_tape_get_stats(m.t);
  printf("bench_autograd_cpu: layers %lld hidden %lld heads %lld/%lld head_dim %lld mlp %lld vocab %lld "
         "lora_r %lld seq %lld ckpt %d ce %s dropout %g steps %d\n",
         (long long)m.L, (long long)C, (long long)m.H, (long long)m.K, (long long)m.D, (long long)F,
         (long long)m.V, (long long)R, (long long)N, ckpt, ce_recompute ? "recompute" : "grad-in-forward",
         m.p, steps);
  printf("linear params %.1fM (incl. lm_head), lora params %.2fM, model GFLOP/token %.3f\n",
         (double)lin_params / 1e6, (double)lora_params / 1e6, flops_tok / 1e9);
  /* FNV-1a over every LoRA gradient: equal across runs and thread counts iff
   * the step is deterministic (compare with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS). */
  uint64_t hash = 1469598103934665603ull;
  for (int l = 0; l < m.L; l++)
    for (int j = 0; j < NPROJ; j++)
      for (int w = 0; w < 2; w++) {
        int32_t id = w ? m.Bm[l][j] : m.A[l][j];
        const unsigned char *g = qt_tape_grad(m.t, id);
        size_t bytes = (size_t)(qt_tape_rows(m.t, id) * qt_tape_cols(m.t, id)) * sizeof(float);
        for (size_t i = 0; i < bytes; i++) hash = (hash ^ g[i]) * 1099511628211ull;
      }
  printf("loss %.9g (random weights), LoRA gradient hash %016llx (accumulated over %d steps)\n", loss,
         (unsigned long long)hash, steps + 1);
  printf("fwd+bwd: %.3f s/step, %.1f tokens/s, %.1f GFLOP/s (fastest step %.5f s)\n", t_total / steps,
         tok_s, tok_s * flops_tok / 1e9, t_min);
  printf("sgemm measured: %.1f GFLOP/s (%.1f before the steps) -> fraction %.3f\n", peak, peak_before,
         tok_s * flops_tok / 1e9 / peak);
  printf("arenas (sized by the measuring tape): activations peak %.1f MiB, activation gradients peak %.1f MiB\n",
         (double)st.act_peak / 1048576.0, (double)st.grad_peak / 1048576.0);
  qt_tape_free(&m.t);
  free(m.wemb);
  free(m.ones);
  for (int l = 0; l < m.L; l++)
    for (int j = 0; j < NPROJ; j++) {
      free(m.w[l][j]); free(m.a[l][j]); free(m.ga[l][j]); free(m.b[l][j]); free(m.gb[l][j]);
      free(m.mask[l][j]);
    }
  free(m.ids); free(m.pos); free(m.doc); free(m.targets);
  return 0;
}
