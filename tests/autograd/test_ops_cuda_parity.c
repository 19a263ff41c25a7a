/* GPU parity of autograd/ops_cuda.h against the CPU ops of autograd/ops.h
 * (STYLE.md G8): fresh random inputs per run, odd shapes, bf16 inputs fed to
 * both sides (the CPU op gets the same values widened to fp32), outputs
 * compared by NMSE and allclose, NaN fails, and guard bytes around every
 * device output buffer must be untouched. Label `cuda`; exits 77 without a GPU.
 *
 * Tolerances (one reason each):
 *  - exact ops (embedding): bit-identical; the kernel copies bf16 words.
 *  - everything else: the GPU stores bf16 (relative rounding <= 2^-9 per
 *    rounding, and RMSNorm / SwiGLU round an intermediate as transformers does
 *    in bf16), the CPU keeps fp32: allclose with rtol 2^-6 and atol 2^-7 * max|ref|
 *    (the atol covers elements where a difference cancels, e.g. RMSNorm's dx),
 *    and NMSE < 2e-5 (~ 10x the NMSE of two independent bf16 roundings). */
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

static const int64_t SIZES[] = {1, 5, 7, 63, 65, 127};
enum { NS = sizeof SIZES / sizeof SIZES[0] };

static void case_rmsnorm(int64_t N, int64_t C) {
  uint16_t *x16, *w16, *dy16, *z16;
  float *x, *w, *dy, *z;
  rnd_bf16(N * C, -2, 2, &x16, &x);
  rnd_bf16(C, 0.5, 1.5, &w16, &w);
  rnd_bf16(N * C, -1, 1, &dy16, &dy);
  rnd_bf16(N * C, -1, 1, &z16, &z);
  float *out = malloc((size_t)(N * C) * 4), *rstd = malloc((size_t)N * 4), *dx = malloc((size_t)(N * C) * 4);
  qt_op_rmsnorm_forward_cpu(out, rstd, x, w, 1e-5, N, C);
  dbuf dX = upload(x16, (size_t)(N * C) * 2), dW = upload(w16, (size_t)C * 2), dDY = upload(dy16, (size_t)(N * C) * 2);
  dbuf dO = dalloc((size_t)(N * C) * 2), dR = dalloc((size_t)N * 4);
  OK(qt_op_rmsnorm_forward_cuda(dO.d, dR.d, dX.d, dW.d, 1e-5, N, C, NULL));
  CK(cudaDeviceSynchronize());
  compare("rmsnorm forward", &dO, out, N * C, 0);
  for (int acc = 0; acc < 2; acc++) {
    dbuf dDX = upload(z16, (size_t)(N * C) * 2);
    memcpy(dx, z, (size_t)(N * C) * 4);
    qt_op_rmsnorm_backward_cpu(dx, acc, dy, x, w, rstd, N, C);
    OK(qt_op_rmsnorm_backward_cuda(dDX.d, acc, dDY.d, dX.d, dW.d, dR.d, N, C, NULL));
    CK(cudaDeviceSynchronize());
    compare(acc ? "rmsnorm backward (acc)" : "rmsnorm backward", &dDX, dx, N * C, 0);
    dcheck_free(&dDX, "rmsnorm dx");
  }
  dcheck_free(&dO, "rmsnorm out");
  dcheck_free(&dR, "rmsnorm rstd");
  dcheck_free(&dX, "x"); dcheck_free(&dW, "w"); dcheck_free(&dDY, "dy");
  free(x16); free(w16); free(dy16); free(z16); free(x); free(w); free(dy); free(z);
  free(out); free(rstd); free(dx);
}

static void case_elementwise(int64_t n) {
  uint16_t *a16, *b16, *d16, *z16, *z2_16;
  float *a, *b, *d, *z, *z2;
  rnd_bf16(n, -4, 4, &a16, &a);
  rnd_bf16(n, -1, 1, &b16, &b);
  rnd_bf16(n, -1, 1, &d16, &d);
  rnd_bf16(n, -1, 1, &z16, &z);
  rnd_bf16(n, -1, 1, &z2_16, &z2);
  dbuf dA = upload(a16, (size_t)n * 2), dB = upload(b16, (size_t)n * 2), dD = upload(d16, (size_t)n * 2);
  float *ref = malloc((size_t)n * 4), *ref2 = malloc((size_t)n * 4);
  dbuf dO = dalloc((size_t)n * 2);
  qt_op_add_forward_cpu(ref, a, b, n);
  OK(qt_op_add_forward_cuda(dO.d, dA.d, dB.d, n, NULL));
  CK(cudaDeviceSynchronize());
  compare("add forward", &dO, ref, n, 0);
  qt_op_swiglu_forward_cpu(ref, a, b, n);
  OK(qt_op_swiglu_forward_cuda(dO.d, dA.d, dB.d, n, NULL));
  CK(cudaDeviceSynchronize());
  compare("swiglu forward", &dO, ref, n, 0);
  for (int acc = 0; acc < 2; acc++) {
    dbuf g1 = upload(z16, (size_t)n * 2), g2 = upload(z2_16, (size_t)n * 2);
    memcpy(ref, z, (size_t)n * 4);
    qt_op_add_backward_cpu(ref, acc, d, n);
    OK(qt_op_add_backward_cuda(g1.d, acc, dD.d, n, NULL));
    CK(cudaDeviceSynchronize());
    compare("add backward", &g1, ref, n, 0);
    CK(cudaMemcpy(g1.d, z16, (size_t)n * 2, cudaMemcpyHostToDevice));
    memcpy(ref, z, (size_t)n * 4);
    memcpy(ref2, z2, (size_t)n * 4);
    qt_op_swiglu_backward_cpu(ref, ref2, acc, d, a, b, n);
    OK(qt_op_swiglu_backward_cuda(g1.d, g2.d, acc, dD.d, dA.d, dB.d, n, NULL));
    CK(cudaDeviceSynchronize());
    compare("swiglu backward dgate", &g1, ref, n, 0);
    compare("swiglu backward dup", &g2, ref2, n, 0);
    dcheck_free(&g1, "grad 1");
    dcheck_free(&g2, "grad 2");
  }
  dcheck_free(&dO, "out");
  dcheck_free(&dA, "a"); dcheck_free(&dB, "b"); dcheck_free(&dD, "dout");
  free(a16); free(b16); free(d16); free(z16); free(z2_16); free(a); free(b); free(d); free(z); free(z2);
  free(ref); free(ref2);
}

static void case_rope(int64_t N, int64_t H, int64_t D) {
  uint16_t *x16, *z16;
  float *x, *z;
  rnd_bf16(N * H * D, -1, 1, &x16, &x);
  rnd_bf16(N * H * D, -1, 1, &z16, &z);
  int32_t *pos = malloc((size_t)N * 4);
  for (int64_t n = 0; n < N; n++) pos[n] = (int32_t)unif(0, 4096);
  float inv[512];
  qt_rope_config rc = {.type = QT_ROPE_LLAMA3, .theta = 500000.0, .factor = 8.0, .low_freq_factor = 1.0,
                       .high_freq_factor = 4.0, .original_max_position_embeddings = 8192};
  qt_rope_inv_freq(inv, &rc, D);
  dbuf dX = upload(x16, (size_t)(N * H * D) * 2), dP = upload(pos, (size_t)N * 4);
  dbuf dI = upload(inv, (size_t)(D / 2) * 4), dO = dalloc((size_t)(N * H * D) * 2);
  float *ref = malloc((size_t)(N * H * D) * 4);
  qt_op_rope_forward_cpu(ref, x, pos, inv, N, H, D);
  OK(qt_op_rope_forward_cuda(dO.d, dX.d, dP.d, dI.d, N, H, D, NULL));
  CK(cudaDeviceSynchronize());
  compare("rope forward", &dO, ref, N * H * D, 0);
  for (int acc = 0; acc < 2; acc++) {
    dbuf g = upload(z16, (size_t)(N * H * D) * 2);
    memcpy(ref, z, (size_t)(N * H * D) * 4);
    qt_op_rope_backward_cpu(ref, acc, x, pos, inv, N, H, D);
    OK(qt_op_rope_backward_cuda(g.d, acc, dX.d, dP.d, dI.d, N, H, D, NULL));
    CK(cudaDeviceSynchronize());
    compare("rope backward", &g, ref, N * H * D, 0);
    dcheck_free(&g, "rope dx");
  }
  dcheck_free(&dO, "rope out");
  dcheck_free(&dX, "x"); dcheck_free(&dP, "pos"); dcheck_free(&dI, "inv_freq");
  free(x16); free(z16); free(x); free(z); free(pos); free(ref);
}

static void case_embedding(int64_t N, int64_t C, int64_t V) {
  uint16_t *w16;
  float *w;
  rnd_bf16(V * C, -1, 1, &w16, &w);
  int32_t *ids = malloc((size_t)N * 4);
  for (int64_t n = 0; n < N; n++) ids[n] = (int32_t)unif(0, (double)V);
  float *ref = malloc((size_t)(N * C) * 4);
  qt_op_embedding_forward_cpu(ref, ids, w, N, C, V);
  dbuf dW = upload(w16, (size_t)(V * C) * 2), dI = upload(ids, (size_t)N * 4), dO = dalloc((size_t)(N * C) * 2);
  OK(qt_op_embedding_forward_cuda(dO.d, dI.d, dW.d, N, C, V, NULL));
  CK(cudaDeviceSynchronize());
  compare("embedding forward", &dO, ref, N * C, 1);
  dcheck_free(&dO, "embedding out");
  dcheck_free(&dW, "wte"); dcheck_free(&dI, "ids");
  free(w16); free(w); free(ids); free(ref);
}

int main(void) {
  int rc = ctu_gpu_check("test_ops_cuda_parity");
  if (rc != 0) return rc; /* 77: no GPU (skipped); 1: a GPU CUDA cannot use */
  rng_state = (uint64_t)time(NULL); /* fresh inputs each run; the seed is printed */
  fprintf(stderr, "test_ops_cuda_parity: seed %llu\n", (unsigned long long)rng_state);
  for (int i = 0; i < NS; i++)
    for (int j = 0; j < NS; j++) case_rmsnorm(SIZES[i], SIZES[j]);
  case_rmsnorm(3, 4096);
  for (int i = 0; i < NS; i++) case_elementwise(SIZES[i] * 37);
  case_elementwise(1 << 20);
  const int64_t rope[][3] = {{1, 1, 2}, {5, 3, 64}, {65, 4, 128}, {127, 7, 6}};
  for (int i = 0; i < 4; i++) case_rope(rope[i][0], rope[i][1], rope[i][2]);
  for (int i = 0; i < NS; i++) case_embedding(SIZES[i], SIZES[(i + 2) % NS], 1000);
  if (failures) {
    fprintf(stderr, "test_ops_cuda_parity: %d failures\n", failures);
    return 1;
  }
  fprintf(stderr, "test_ops_cuda_parity: all cases passed\n");
  return 0;
}
