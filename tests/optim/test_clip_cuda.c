/* GPU check of optim/clip_cuda.cu: the device global norm of many fp32
 * gradient tensors (odd sizes, empty ones, more than one 1024-chunk group)
 * equals qt_optim_global_norm bit for bit, the coefficient equals
 * qt_optim_clip_coef and the skip flag the non-finite rule, for random values,
 * zeros, a huge value, NaN and Inf; the scale kernel multiplies by the
 * coefficient exactly when it must; a repeat gives the same bits. Exit 77
 * without a GPU (tests/common/cuda_test_util.h). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "tests/common/cuda_test_util.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
      failures++;                                          \
    }                                                      \
  } while (0)

#define CUDA_OK(call)                                                         \
  do {                                                                        \
    cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) {                                                  \
      fprintf(stderr, "FAIL %s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call, \
              cudaGetErrorString(e_), cudaGetErrorName(e_));                  \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

#define QT_OK_OR_DIE(call)                                                                   \
  do {                                                                                      \
    qt_status s_ = (call);                                                                  \
    if (s_ != QT_OK) {                                                                      \
      fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, qt_error_message()); \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

enum { NT = 9 };

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static float rnd(uint64_t *s) { return (float)((double)(splitmix64(s) >> 40) * 0x1p-24 - 0.5); }

static uint64_t d2u(double x) {
  uint64_t u;
  memcpy(&u, &x, 8);
  return u;
}

static uint32_t f2u(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

int main(void) {
  int rc = ctu_gpu_check("test_optim_clip_cuda");
  if (rc != 0) return rc; /* 77: no GPU (skipped); 1: a GPU CUDA cannot use */
  const int64_t numel[NT] = {1, 0, 1023, 1024, 1025, 1500007, 77, 0, 262144};
  float *h[NT], *d[NT], *back[NT];
  qt_tensor t[NT];
  uint64_t s = 4242;
  for (int k = 0; k < NT; k++) {
    h[k] = malloc((size_t)(numel[k] + 1) * 4);
    back[k] = malloc((size_t)(numel[k] + 1) * 4);
    for (int64_t i = 0; i < numel[k]; i++) h[k][i] = rnd(&s) * ldexpf(1.0f, (int)(i % 11) - 3);
    CUDA_OK(cudaMalloc((void **)&d[k], (size_t)(numel[k] + 1) * 4));
    t[k] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &numel[k], h[k]);
  }
  qt_optim_clip_cuda c;
  QT_OK_OR_DIE(qt_optim_clip_cuda_init(&c, d, numel, NT));
  CHECK(c.n_groups == 2, "%lld chunks in %lld groups, expected 2 groups", (long long)c.n_chunks,
        (long long)c.n_groups);
  const char *what[] = {"random", "random, no clipping", "zeros", "huge", "NaN", "+Inf", "-Inf"};
  const double max_norm[] = {1.0, 1e9, 1.0, 1.0, 1.0, 1.0, 0.0};
  for (int round = 0; round < 7; round++) {
    if (round == 2)
      for (int k = 0; k < NT; k++) memset(h[k], 0, (size_t)numel[k] * 4);
    if (round == 3) {
      for (int k = 0; k < NT; k++)
        for (int64_t i = 0; i < numel[k]; i++) h[k][i] = rnd(&s);
      h[5][1400000] = 3.0e38f; /* its square overflows float, not double */
    }
    if (round == 4) h[5][1400000] = NAN;
    if (round == 5) h[5][1400000] = INFINITY;
    if (round == 6) h[5][1400000] = 1.0f, h[2][5] = -INFINITY;
    for (int k = 0; k < NT; k++)
      CUDA_OK(cudaMemcpy(d[k], h[k], (size_t)numel[k] * 4, cudaMemcpyHostToDevice));
    double want = qt_optim_global_norm(t, NT);
    float coef = qt_optim_clip_coef(want, max_norm[round]);
    int skip = !isfinite(want);
    qt_optim_clip_result r, r2;
    QT_OK_OR_DIE(qt_optim_clip_cuda_norm(&c, max_norm[round], NULL));
    QT_OK_OR_DIE(qt_optim_clip_cuda_result(&c, &r, NULL));
    QT_OK_OR_DIE(qt_optim_clip_cuda_norm(&c, max_norm[round], NULL));
    QT_OK_OR_DIE(qt_optim_clip_cuda_result(&c, &r2, NULL));
    CHECK(d2u(r.norm) == d2u(want) || (isnan(r.norm) && isnan(want)),
          "%s: device norm %.17g, CPU %.17g", what[round], r.norm, want);
    CHECK(d2u(r.norm) == d2u(r2.norm), "%s: repeat differs", what[round]);
    CHECK(f2u(r.coef) == f2u(coef), "%s: device coef %.9g, CPU %.9g", what[round], (double)r.coef,
          (double)coef);
    CHECK(r.skip == skip, "%s: skip %d, expected %d", what[round], (int)r.skip, skip);
    printf("%-20s norm %.17g coef %.9g skip %d\n", what[round], r.norm, (double)r.coef, (int)r.skip);
    /* scale: grads * coef when not skipped and coef < 1, else untouched */
    QT_OK_OR_DIE(qt_optim_clip_cuda_scale(&c, NULL));
    CUDA_OK(cudaDeviceSynchronize());
    int64_t bad = 0;
    for (int k = 0; k < NT; k++) {
      CUDA_OK(cudaMemcpy(back[k], d[k], (size_t)numel[k] * 4, cudaMemcpyDeviceToHost));
      for (int64_t i = 0; i < numel[k]; i++) {
        float e = !skip && coef < 1.0f ? h[k][i] * coef : h[k][i];
        bad += f2u(back[k][i]) != f2u(e) && !(isnan(e) && isnan(back[k][i]));
      }
    }
    CHECK(bad == 0, "%s: %lld scaled gradients differ", what[round], (long long)bad);
  }
  qt_optim_clip_cuda_free(&c);
  /* no tensors at all: norm 0, no skip */
  QT_OK_OR_DIE(qt_optim_clip_cuda_init(&c, d, numel, 0));
  qt_optim_clip_result r;
  QT_OK_OR_DIE(qt_optim_clip_cuda_norm(&c, 1.0, NULL));
  QT_OK_OR_DIE(qt_optim_clip_cuda_result(&c, &r, NULL));
  CHECK(r.norm == 0.0 && r.coef == 1.0f && r.skip == 0, "empty: norm %g coef %g skip %d", r.norm,
        (double)r.coef, (int)r.skip);
  QT_OK_OR_DIE(qt_optim_clip_cuda_scale(&c, NULL));
  qt_optim_clip_cuda_free(&c);
  for (int k = 0; k < NT; k++) {
    free(h[k]);
    free(back[k]);
    CUDA_OK(cudaFree(d[k]));
  }
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("clip CUDA: device norm, coefficient and skip flag equal the CPU's bit for bit\n");
  return 0;
}
