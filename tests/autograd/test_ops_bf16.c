/* tests/autograd/test_ops_bf16.c — the CPU's bf16 GEMMs (model.compute_dtype
 * bf16; autograd/gemm_bf16_cpu.c, tape.h qt_tape_config.gemm_bf16).
 *
 * - The bulk fp32 -> bf16 conversion gives common/half.h's bits (which are
 *   checked against CUDA's own conversions) for every class of input.
 * - The oneDNN GEMM, over odd shapes, every transpose, alpha and beta, strided
 *   operands: equal to a double-precision product of the bf16-rounded operands
 *   within fp32 accumulation error, nothing written outside C.
 * - A tape (linear, 4-bit-style materialized linear, LoRA, fused and unfused
 *   cross-entropy, checkpointing) on a gemm_bf16 tape: the loss and the LoRA
 *   gradients within bf16 rounding of the fp32 tape and not equal to it (the
 *   bf16 path ran), the same bits on a rerun, and arenas sized by the
 *   measuring step hold the real step.
 * The GEMM and tape cases skip (cmocka skip, named in the output) where the
 * CPU or the build has no bf16 GEMM; the conversion case always runs. */
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
#include "common/half.h"

static void test_to_bf16_bits(void **st) {
  (void)st;
  enum { N = 200003 }; /* above the parallel threshold, not a multiple of the slice */
  float *x = malloc(N * sizeof(float));
  uint16_t *h = malloc(N * sizeof(uint16_t));
  assert_non_null(x);
  assert_non_null(h);
  ag_rng r = {4242};
  static const uint32_t special[] = {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u,
                                     0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x00000001u,
                                     0x807FFFFFu, 0x3F808000u, 0x3F818000u, 0x7F7FFFFFu,
                                     0x7F7F8000u, 0xFF7F7FFFu, 0x3F807FFFu, 0x00018000u};
  for (int64_t i = 0; i < N; i++) {
    uint32_t u = (uint32_t)ag_next(&r);
    if (i < (int64_t)(sizeof special / sizeof special[0])) u = special[i];
    else if (i % 3 == 0) u = (u & 0xFFFF0000u) | 0x8000u; /* exact ties */
    memcpy(&x[i], &u, sizeof u);
  }
  qt_op_to_bf16_cpu(h, x, N);
  for (int64_t i = 0; i < N; i++)
    if (h[i] != qt_bf16_from_f32(x[i])) {
      uint32_t u;
      memcpy(&u, &x[i], sizeof u);
      fail_msg("element %lld (fp32 0x%08x): 0x%04x, half.h gives 0x%04x", (long long)i, u, h[i],
               qt_bf16_from_f32(x[i]));
    }
  free(x);
  free(h);
}

/* One GEMM case against double over the bf16 operands. Matrices are stored
 * with a leading dimension 3 larger than needed; C's extra columns are guards. */
static void gemm_case(int64_t M, int64_t N, int64_t K, int ta, int tb, float alpha, float beta,
                      uint64_t seed) {
  int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
  int64_t lda = ac + 3, ldb = bc + 3, ldc = N + 3;
  uint16_t *A = malloc((size_t)(ar * lda) * 2), *B = malloc((size_t)(br * ldb) * 2);
  float *C = malloc((size_t)(M * ldc) * 4), *C0 = malloc((size_t)(M * ldc) * 4);
  assert_true(A && B && C && C0);
  ag_rng r = {seed};
  for (int64_t i = 0; i < ar * lda; i++) A[i] = qt_bf16_from_f32((float)ag_unif(&r, -2, 2));
  for (int64_t i = 0; i < br * ldb; i++) B[i] = qt_bf16_from_f32((float)ag_unif(&r, -2, 2));
  for (int64_t i = 0; i < M * ldc; i++) C[i] = C0[i] = (float)ag_unif(&r, -1, 1);
  size_t pb = qt_op_gemm_bf16_pad_bytes(ta, tb, M, N, K, lda, ldb, ldc, alpha, beta);
  void *pad = pb ? malloc(pb) : NULL;
  qt_op_gemm_bf16_cpu(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, pad, pb);
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < K; k++) {
        double a = qt_bf16_to_f32(ta ? A[k * lda + i] : A[i * lda + k]);
        double b = qt_bf16_to_f32(tb ? B[j * ldb + k] : B[k * ldb + j]);
        s += a * b;
        sa += fabs(a * b);
      }
      double ref = alpha * s + beta * (double)C0[i * ldc + j];
      /* fp32 products of bf16 values are exact; the sums round: K steps of
       * 2^-24 relative each, bounded by the absolute sum (plus the epilogue) */
      double tol = (double)(K + 4) * 0x1p-24 * (fabs(alpha) * sa + fabs(beta * C0[i * ldc + j])) +
                   1e-30;
      double got = C[i * ldc + j];
      if (!(fabs(got - ref) <= tol))
        fail_msg("%lldx%lldx%lld ta %d tb %d alpha %g beta %g: C[%lld,%lld] = %.9g, expected "
                 "%.9g (tolerance %.3g)", (long long)M, (long long)N, (long long)K, ta, tb, alpha,
                 beta, (long long)i, (long long)j, got, ref, tol);
    }
    for (int64_t j = N; j < ldc; j++) assert_true(C[i * ldc + j] == C0[i * ldc + j]);
  }
  free(A);
  free(B);
  free(C);
  free(C0);
  free(pad);
}

static void test_gemm_bf16_shapes(void **st) {
  (void)st;
  const char *why = NULL;
  if (!qt_op_bf16_gemm_available(&why)) {
    print_message("skipped: %s\n", why);
    skip();
  }
  static const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {33, 65, 129}, {70, 300, 257},
                                      {256, 64, 96}, {5, 1000, 64}};
  uint64_t seed = 1;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        gemm_case(shapes[s][0], shapes[s][1], shapes[s][2], ta, tb, 1.0f, 0.0f, seed++);
        gemm_case(shapes[s][0], shapes[s][1], shapes[s][2], ta, tb, 0.5f, 1.0f, seed++);
      }
}

/* More shapes than the primitive cache holds: it is emptied and refilled, and
 * the answers stay right (autograd/gemm_bf16_cpu.c). */
static void test_gemm_bf16_many_shapes(void **st) {
  (void)st;
  if (!qt_op_bf16_gemm_available(NULL)) skip();
  for (int64_t m = 1; m <= 260; m++) gemm_case(m, 24, 40, 0, 1, 1.0f, m % 2 ? 1.0f : 0.0f, 100 + (uint64_t)m);
}

/* ---- a tape: linear -> LoRA linear over a materialized weight (in a
 * checkpointed layer) -> cross-entropy --------------------------------------- */
enum { TN = 37, TC = 48, TI = 80, TV = 300, TR = 4 };

typedef struct {
  const float *w2;   /* (TC, TI) the materialized weight's values */
  int32_t w1, bias1; /* (TI, TC), (1, TI) */
  int32_t A, B;
} tctx;

static qt_status fill_w2(void *ctx, void *dst) {
  memcpy(dst, ((const tctx *)ctx)->w2, sizeof(float) * TC * TI);
  return QT_OK;
}

static qt_status layer(qt_tape *t, void *ctx, int32_t in, int32_t *out) {
  tctx *c = ctx;
  int32_t h1, h2, h;
  /* in feeds two linears: its gradient is set by one and added to by the other */
  QT_TRY(qt_tape_linear(t, in, c->w1, c->bias1, NULL, &h1));
  QT_TRY(qt_tape_linear(t, in, c->w1, -1, NULL, &h2));
  QT_TRY(qt_tape_add(t, h1, h2, &h));
  qt_tape_weight_src src = {.rows = TC, .cols = TI, .fill = fill_w2, .ctx = c, .name = "w2"};
  qt_tape_lora lo = {.A = c->A, .B = c->B, .scale = 2.0, .mask = NULL, .keep_scale = 1.0};
  return qt_tape_linear_src(t, h, &src, -1, &lo, out);
}

typedef struct {
  double loss;
  float gA[TR * TI], gB[TC * TR], gx[TN * TC];
} tape_out;

static void tape_run(bool bf16, bool fused, bool ckpt, tape_out *o) {
  ag_rng r = {99};
  static float x[TN * TC], w1[TI * TC], b1[TI], w2[TC * TI], A[TR * TI], B[TC * TR], lm[TV * TC];
  float *arrs[] = {x, w1, b1, w2, A, B, lm};
  int64_t ns[] = {TN * TC, TI * TC, TI, TC * TI, TR * TI, TC * TR, TV * TC};
  for (int a = 0; a < 7; a++)
    for (int64_t i = 0; i < ns[a]; i++) arrs[a][i] = (float)ag_unif(&r, -0.5, 0.5);
  int32_t targets[TN];
  for (int n = 0; n < TN; n++) targets[n] = n % 5 == 4 ? QT_IGNORE_INDEX : (int32_t)((n * 37) % TV);
  qt_tape_config cfg = {.max_tensors = 64, .max_nodes = 32, .ce_chunk_rows = 16,
                        .ce_grad_in_forward = fused, .gemm_bf16 = bf16};
  for (int pass = 0; pass < 2; pass++) { /* measure, then the real step in exact arenas */
    qt_tape *t;
    assert_int_equal((pass ? qt_tape_init : qt_tape_init_measure)(&t, QT_F32, &cfg), QT_OK);
    memset(o->gA, 0, sizeof o->gA);
    memset(o->gB, 0, sizeof o->gB);
    memset(o->gx, 0, sizeof o->gx);
    tctx c = {.w2 = w2};
    int32_t ix, ilm, y, loss;
    assert_int_equal(qt_tape_frozen(t, "w1", w1, TI, TC, &c.w1), QT_OK);
    assert_int_equal(qt_tape_frozen(t, "b1", b1, 1, TI, &c.bias1), QT_OK);
    assert_int_equal(qt_tape_frozen(t, "lm_head", lm, TV, TC, &ilm), QT_OK);
    assert_int_equal(qt_tape_trainable(t, "A", A, o->gA, TR, TI, &c.A), QT_OK);
    assert_int_equal(qt_tape_trainable(t, "B", B, o->gB, TC, TR, &c.B), QT_OK);
    /* x trainable: its gradient runs through every backward GEMM (dx of both
     * linear kinds, set and accumulated) */
    assert_int_equal(qt_tape_trainable(t, "x", x, o->gx, TN, TC, &ix), QT_OK);
    int32_t xs; /* a checkpointed layer's input is an op output (tape.h) */
    assert_int_equal(qt_tape_scale(t, ix, 1.0, &xs), QT_OK);
    assert_int_equal(qt_tape_layer(t, layer, &c, xs, ckpt, &y), QT_OK);
    double sum;
    int64_t cnt;
    assert_int_equal(qt_tape_cross_entropy(t, y, ilm, targets, &loss, &sum, &cnt), QT_OK);
    assert_int_equal(qt_tape_backward(t, loss, 1.0 / (double)cnt), QT_OK);
    if (!pass) {
      qt_tape_stats s = qt_tape_get_stats(t);
      cfg.act_bytes = s.act_peak;
      cfg.grad_bytes = s.grad_peak;
    }
    o->loss = sum;
    qt_tape_free(&t);
  }
}

static double rel(const float *a, const float *b, int n) {
  double d = 0, s = 0;
  for (int i = 0; i < n; i++) {
    d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    s += (double)b[i] * b[i];
  }
  return sqrt(d / s);
}

static void test_tape_bf16(void **st) {
  (void)st;
  if (!qt_op_bf16_gemm_available(NULL)) skip();
  for (int v = 0; v < 4; v++) {
    bool fused = v & 1, ckpt = v & 2;
    tape_out f32, b1, b2;
    tape_run(false, fused, ckpt, &f32);
    tape_run(true, fused, ckpt, &b1);
    tape_run(true, fused, ckpt, &b2);
    double dl = fabs(b1.loss - f32.loss) / fabs(f32.loss);
    double ea = rel(b1.gA, f32.gA, TR * TI), eb = rel(b1.gB, f32.gB, TC * TR),
           ex = rel(b1.gx, f32.gx, TN * TC);
    print_message("fused %d ckpt %d: loss fp32 %.9g bf16 %.9g (rel %.2e), grad A rel %.2e, "
                  "grad B rel %.2e, grad x rel %.2e\n", fused, ckpt, f32.loss, b1.loss, dl, ea, eb, ex);
    /* bf16 operands: 8 significant bits, ~2e-3 relative per operand; sums of
     * many products average it down. Above 1e-2 something other than the
     * operand rounding differs; exactly equal means the bf16 path did not run. */
    assert_true(dl < 1e-2 && ea < 3e-2 && eb < 3e-2 && ex < 3e-2);
    assert_true(ex > 0);
    assert_true(dl > 0 || ea > 0);
    assert_true(b1.loss == b2.loss);
    assert_memory_equal(b1.gA, b2.gA, sizeof b1.gA);
    assert_memory_equal(b1.gB, b2.gB, sizeof b1.gB);
    assert_memory_equal(b1.gx, b2.gx, sizeof b1.gx);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_to_bf16_bits),
      cmocka_unit_test(test_gemm_bf16_shapes),
      cmocka_unit_test(test_gemm_bf16_many_shapes),
      cmocka_unit_test(test_tape_bf16),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
