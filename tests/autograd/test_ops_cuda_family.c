/* GPU parity of the family ops of autograd/ops_cuda.h (GeGLU, column slice)
 * against the CPU ops of autograd/ops.h, in the pattern of test_ops_cuda_parity.c
 * (STYLE.md G8): fresh random inputs per run, odd shapes, bf16 inputs fed to
 * both sides (the CPU op gets the same values widened to fp32), outputs
 * compared by NMSE and allclose, NaN fails, and guard bytes around every
 * device output buffer must be untouched. Label `cuda`; exits 77 without a GPU.
 *
 * (The soft-capped cross-entropy's parity is in test_ops_cuda_more.c, with the
 * uncapped one.)
 *
 * Tolerances (one reason each):
 *  - the slice: bit-identical; the kernels copy bf16 words, and the
 *    accumulating backward does one fp32 add and one rounding, as the CPU op on
 *    the widened values rounded once.
 *  - GeGLU: the GPU stores bf16 (relative rounding <= 2^-9 per rounding, and it
 *    rounds gelu(gate) to bf16 as transformers does in bf16), the CPU keeps fp32:
 *    allclose with rtol 2^-6 and atol 2^-7 * max|ref| and NMSE < 2e-5, as in
 *    test_ops_cuda_parity.c. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/ops.h"
#include "autograd/ops_cuda.h"
#include "common/half.h"
#include "common/status.h"
#include "tests/common/cuda_test_util.h"

enum { GUARD = 256 };
#define GUARD_BYTE 0xA5

static int failures;
static uint64_t rng_state;

static double unif(double lo, double hi) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return lo + (hi - lo) * (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

#define CK(call)                                                                          \
  do {                                                                                    \
    cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)
#define OK(call)                                                                          \
  do {                                                                                    \
    if ((call) != QT_OK) {                                                                \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, qt_error_message());  \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

/* A device buffer with GUARD bytes of GUARD_BYTE on both sides. */
typedef struct { unsigned char *base; void *d; size_t bytes; } dbuf;
static dbuf dalloc(size_t bytes) {
  dbuf b = {NULL, NULL, bytes};
  CK(cudaMalloc((void **)&b.base, bytes + 2 * GUARD));
  CK(cudaMemset(b.base, GUARD_BYTE, bytes + 2 * GUARD));
  b.d = b.base + GUARD;
  return b;
}
static void dcheck_free(dbuf *b, const char *what) {
  unsigned char g[2 * GUARD];
  CK(cudaMemcpy(g, b->base, GUARD, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(g + GUARD, b->base + GUARD + b->bytes, GUARD, cudaMemcpyDeviceToHost));
  for (int i = 0; i < 2 * GUARD; i++)
    if (g[i] != GUARD_BYTE) {
      fprintf(stderr, "%s: guard byte %d overwritten\n", what, i);
      failures++;
      break;
    }
  CK(cudaFree(b->base));
}

/* n random values in [lo, hi), rounded to bf16: bits in *h16, widened in *h32. */
static void rnd_bf16(int64_t n, double lo, double hi, uint16_t **h16, float **h32) {
  *h16 = malloc((size_t)(n > 0 ? n : 1) * 2);
  *h32 = malloc((size_t)(n > 0 ? n : 1) * 4);
  for (int64_t i = 0; i < n; i++) {
    (*h16)[i] = qt_bf16_from_f32((float)unif(lo, hi));
    (*h32)[i] = qt_bf16_to_f32((*h16)[i]);
  }
}
static dbuf upload(const void *h, size_t bytes) {
  dbuf b = dalloc(bytes);
  CK(cudaMemcpy(b.d, h, bytes, cudaMemcpyHostToDevice));
  return b;
}

/* GPU bf16 output (device) against the CPU fp32 reference. */
static void compare(const char *what, const dbuf *gpu, const float *ref, int64_t n, int exact) {
  uint16_t *g = malloc((size_t)(n > 0 ? n : 1) * 2);
  CK(cudaMemcpy(g, gpu->d, (size_t)n * 2, cudaMemcpyDeviceToHost));
  double se = 0, sr = 0, mx = 0;
  for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
  int64_t bad = 0, worst = -1;
  double worst_d = -1;
  for (int64_t i = 0; i < n; i++) {
    double a = qt_bf16_to_f32(g[i]), b = ref[i], d = fabs(a - b);
    if (isnan(a) || isnan(b)) { bad++; continue; }
    se += d * d;
    sr += b * b;
    int ok = exact ? g[i] == qt_bf16_from_f32(ref[i]) : d <= 0x1p-7 * mx + 0x1p-6 * fabs(b);
    if (!ok) bad++;
    if (d > worst_d) { worst_d = d; worst = i; }
  }
  double nmse = sr > 0 ? se / sr : se;
  if (bad || nmse > 2e-5) {
    fprintf(stderr, "FAIL %s (n=%lld): %lld elements off, NMSE %.3g, worst at %lld: gpu %g ref %g\n",
            what, (long long)n, (long long)bad, nmse, (long long)worst,
            worst >= 0 ? qt_bf16_to_f32(g[worst]) : 0.0, worst >= 0 ? ref[worst] : 0.0);
    failures++;
  }
  free(g);
}

/* GeGLU: the GPU rounds gelu(gate) to bf16 before the product (as transformers
 * in bf16), the CPU does not: the general tolerance. Gate in [-8, 8) reaches
 * the flat tails on both sides. */
static void case_geglu(int64_t n) {
  uint16_t *a16, *b16, *d16, *z16, *z2_16;
  float *a, *b, *d, *z, *z2;
  rnd_bf16(n, -8, 8, &a16, &a);
  rnd_bf16(n, -2, 2, &b16, &b);
  rnd_bf16(n, -1, 1, &d16, &d);
  rnd_bf16(n, -1, 1, &z16, &z);
  rnd_bf16(n, -1, 1, &z2_16, &z2);
  dbuf dA = upload(a16, (size_t)n * 2), dB = upload(b16, (size_t)n * 2), dD = upload(d16, (size_t)n * 2);
  float *ref = malloc((size_t)n * 4), *ref2 = malloc((size_t)n * 4);
  dbuf dO = dalloc((size_t)n * 2);
  qt_op_geglu_forward_cpu(ref, a, b, n);
  OK(qt_op_geglu_forward_cuda(dO.d, dA.d, dB.d, n, NULL));
  CK(cudaDeviceSynchronize());
  compare("geglu forward", &dO, ref, n, 0);
  for (int acc = 0; acc < 2; acc++) {
    dbuf g1 = upload(z16, (size_t)n * 2), g2 = upload(z2_16, (size_t)n * 2);
    memcpy(ref, z, (size_t)n * 4);
    memcpy(ref2, z2, (size_t)n * 4);
    qt_op_geglu_backward_cpu(ref, ref2, acc, d, a, b, n);
    OK(qt_op_geglu_backward_cuda(g1.d, g2.d, acc, dD.d, dA.d, dB.d, n, NULL));
    CK(cudaDeviceSynchronize());
    compare(acc ? "geglu backward dgate (acc)" : "geglu backward dgate", &g1, ref, n, 0);
    compare(acc ? "geglu backward dup (acc)" : "geglu backward dup", &g2, ref2, n, 0);
    dcheck_free(&g1, "geglu dgate");
    dcheck_free(&g2, "geglu dup");
  }
  /* one input gradient at a time (the tape asks for them separately when their
   * set-or-accumulate flags differ) */
  dbuf g1 = upload(z16, (size_t)n * 2);
  memcpy(ref, z, (size_t)n * 4);
  qt_op_geglu_backward_cpu(NULL, ref, 1, d, a, b, n);
  OK(qt_op_geglu_backward_cuda(NULL, g1.d, 1, dD.d, dA.d, dB.d, n, NULL));
  CK(cudaDeviceSynchronize());
  compare("geglu backward dup only (acc)", &g1, ref, n, 0);
  dcheck_free(&g1, "geglu dup only");
  dcheck_free(&dO, "geglu out");
  dcheck_free(&dA, "gate"); dcheck_free(&dB, "up"); dcheck_free(&dD, "dout");
  free(a16); free(b16); free(d16); free(z16); free(z2_16); free(a); free(b); free(d); free(z);
  free(z2); free(ref); free(ref2);
}

/* Column slice: copies and one fp32 add per element, so bit-identical to the
 * CPU op on the widened values rounded to bf16. */
static void case_slice(int64_t N, int64_t C, int64_t c0, int64_t W) {
  uint16_t *x16, *d16, *z16;
  float *x, *d, *z;
  rnd_bf16(N * C, -2, 2, &x16, &x);
  rnd_bf16(N * W, -1, 1, &d16, &d);
  rnd_bf16(N * C, -1, 1, &z16, &z);
  float *ref = malloc((size_t)(N * C) * 4);
  dbuf dX = upload(x16, (size_t)(N * C) * 2), dD = upload(d16, (size_t)(N * W) * 2);
  dbuf dO = dalloc((size_t)(N * W) * 2);
  qt_op_slice_cols_forward_cpu(ref, x, N, C, c0, W);
  OK(qt_op_slice_cols_forward_cuda(dO.d, dX.d, N, C, c0, W, NULL));
  CK(cudaDeviceSynchronize());
  compare("slice forward", &dO, ref, N * W, 1);
  for (int acc = 0; acc < 2; acc++) {
    dbuf g = upload(z16, (size_t)(N * C) * 2);
    memcpy(ref, z, (size_t)(N * C) * 4);
    qt_op_slice_cols_backward_cpu(ref, acc, d, N, C, c0, W);
    OK(qt_op_slice_cols_backward_cuda(g.d, acc, dD.d, N, C, c0, W, NULL));
    CK(cudaDeviceSynchronize());
    compare(acc ? "slice backward (acc)" : "slice backward", &g, ref, N * C, 1);
    dcheck_free(&g, "slice dx");
  }
  /* two overlapping slices into one dx: the first sets (zeros outside), the
   * second adds, in either order */
  for (int order = 0; order < 2; order++) {
    int64_t w2 = W < C ? W : C, a0 = 0, b0 = C - w2;
    dbuf g = upload(z16, (size_t)(N * C) * 2);
    memcpy(ref, z, (size_t)(N * C) * 4);
    for (int k = 0; k < 2; k++) {
      int64_t s0 = (k ^ order) ? b0 : a0;
      qt_op_slice_cols_backward_cpu(ref, k, d, N, C, s0, w2);
      OK(qt_op_slice_cols_backward_cuda(g.d, k, dD.d, N, C, s0, w2, NULL));
    }
    CK(cudaDeviceSynchronize());
    compare("slice backward, two slices", &g, ref, N * C, 1);
    dcheck_free(&g, "slice dx (two)");
  }
  dcheck_free(&dO, "slice out");
  dcheck_free(&dX, "x"); dcheck_free(&dD, "dout");
  free(x16); free(d16); free(z16); free(x); free(d); free(z); free(ref);
}

int main(void) {
  int rc = ctu_gpu_check("test_ops_cuda_family");
  if (rc != 0) return rc; /* 77: no GPU (skipped); 1: a GPU CUDA cannot use */
  rng_state = (uint64_t)time(NULL); /* fresh inputs each run; the seed is printed */
  fprintf(stderr, "test_ops_cuda_family: seed %llu\n", (unsigned long long)rng_state);
  const int64_t sizes[] = {1, 5, 7, 63, 65, 127};
  for (int i = 0; i < 6; i++) case_geglu(sizes[i] * 37);
  case_geglu(1 << 20);
  /* N, C, c0, W: phi3-like q | k | v and gate | up splits, odd shapes */
  const int64_t sl[][4] = {{1, 1, 0, 1},   {5, 7, 2, 3},      {7, 96, 64, 16}, {65, 96, 80, 16},
                           {127, 63, 0, 63}, {33, 130, 65, 65}, {4, 2048, 1024, 1024}};
  for (int i = 0; i < 7; i++) case_slice(sl[i][0], sl[i][1], sl[i][2], sl[i][3]);
  if (failures) {
    fprintf(stderr, "test_ops_cuda_family: %d failures\n", failures);
    return 1;
  }
  fprintf(stderr, "test_ops_cuda_family: all cases passed\n");
  return 0;
}
