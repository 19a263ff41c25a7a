/* GPU parity for optim/: every CUDA update kernel (32-bit and 8-bit state, F32
 * and BF16 params) against the CPU kernel on the same random inputs, odd sizes
 * and non-finite gradients: params, codes, absmax and fp32 states must be
 * bit-identical (both sides use IEEE division/sqrt, no FMA, host-computed step
 * scalars; optim.h). Then the whole optimizer on the GPU with paged state, and
 * paged state under a device-memory squeeze (most of the free memory taken by
 * another allocation, state larger than what is left). Exit 77 without a GPU. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "optim/optim.h"

static int failures = 0;

#define CHECK(cond, ...)                                 \
  do {                                                   \
    if (!(cond)) {                                       \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                      \
      fprintf(stderr, "\n");                             \
      failures++;                                        \
    }                                                    \
  } while (0)

#define CUDA_OK(call)                                                              \
  do {                                                                             \
    cudaError_t e_ = (call);                                                       \
    if (e_ != cudaSuccess) {                                                       \
      fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call,           \
              cudaGetErrorString(e_));                                             \
      exit(1);                                                                     \
    }                                                                              \
  } while (0)

#define QT_OK_OR_DIE(call)                                                          \
  do {                                                                             \
    qt_status s_ = (call);                                                         \
    if (s_ != QT_OK) {                                                             \
      fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call,           \
              qt_error_message());                                                 \
      exit(1);                                                                     \
    }                                                                              \
  } while (0)

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static float rnd(uint64_t *s) { return (float)((double)(splitmix64(s) >> 40) * 0x1p-24 - 0.5); }

static void *dev_copy(const void *h, size_t bytes) {
  void *d = NULL;
  CUDA_OK(cudaMalloc(&d, bytes ? bytes : 1));
  if (bytes) CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  return d;
}

static void host_copy(void *h, const void *d, size_t bytes) {
  if (bytes) CUDA_OK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

/* One kernel call on CPU and GPU from the same state; compares everything. */
static void parity_case(int64_t n, int bits, int bf16, uint64_t seed) {
  uint64_t s = seed;
  int64_t nb = (n + 255) / 256;
  float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
  uint16_t *pb = malloc(n * 2);
  uint8_t *c1 = malloc(n), *c2 = malloc(n);
  float *a1 = malloc(nb * 4), *a2 = malloc(nb * 4);
  qt_adamw_config cfg;
  qt_adamw_config_default(&cfg, bits);
  qt_adamw_qmap maps[2];
  {
    qt_adamw o;
    int64_t one = 1;
    QT_OK_OR_DIE(qt_adamw_init(&o, &cfg, 1, &one));
    maps[0] = o.qmap1;
    maps[1] = o.qmap2;
    qt_adamw_free(&o);
  }
  for (int64_t i = 0; i < n; i++) {
    p[i] = rnd(&s);
    pb[i] = qt_bf16_from_f32(p[i]);
    m[i] = rnd(&s) * 1e-2f;
    v[i] = fabsf(rnd(&s)) * 1e-4f;
    c1[i] = (uint8_t)splitmix64(&s);
    c2[i] = (uint8_t)splitmix64(&s);
    g[i] = rnd(&s) * ldexpf(1.0f, -(int)(i % 20));
    if (i % 97 == 5) g[i] = 0.0f;
  }
  if (n > 10 && bits == 8) { /* the 32-bit kernel has no non-finite rule (NaN payloads differ) */
    g[3] = NAN;
    g[n - 1] = INFINITY;
  }
  for (int64_t b = 0; b < nb; b++) {
    a1[b] = fabsf(rnd(&s)) * 1e-2f;
    a2[b] = fabsf(rnd(&s)) * 1e-4f;
  }
  if (nb > 2) a1[1] = a2[1] = 0.0f; /* a block whose state decodes to zero */
  qt_adamw_scalars k;
  qt_adamw_scalars_make(&cfg, 7, 3e-3f, 0.75f, &k);
  const uint64_t sr_seed = 1234;
  const uint32_t tensor = 5;

  float *dp = dev_copy(p, n * 4), *dg = dev_copy(g, n * 4), *dm = dev_copy(m, n * 4),
        *dv = dev_copy(v, n * 4), *da1 = dev_copy(a1, nb * 4), *da2 = dev_copy(a2, nb * 4);
  uint16_t *dpb = dev_copy(pb, n * 2);
  uint8_t *dc1 = dev_copy(c1, n), *dc2 = dev_copy(c2, n);
  qt_adamw_qmap *dmaps = dev_copy(maps, sizeof maps);

  if (bits == 32 && !bf16) {
    qt_adamw32_update_f32(p, g, m, v, n, &k);
    QT_OK_OR_DIE(qt_adamw32_update_f32_cuda(dp, dg, dm, dv, n, &k));
  } else if (bits == 32) {
    qt_adamw32_update_bf16(pb, g, m, v, n, &k, sr_seed, tensor);
    QT_OK_OR_DIE(qt_adamw32_update_bf16_cuda(dpb, dg, dm, dv, n, &k, sr_seed, tensor));
  } else if (!bf16) {
    qt_adamw8_update_f32(p, g, c1, c2, a1, a2, &maps[0], &maps[1], n, &k);
    QT_OK_OR_DIE(qt_adamw8_update_f32_cuda(dp, dg, dc1, dc2, da1, da2, &dmaps[0], &dmaps[1], n, &k));
  } else {
    qt_adamw8_update_bf16(pb, g, c1, c2, a1, a2, &maps[0], &maps[1], n, &k, sr_seed, tensor);
    QT_OK_OR_DIE(qt_adamw8_update_bf16_cuda(dpb, dg, dc1, dc2, da1, da2, &dmaps[0], &dmaps[1], n,
                                            &k, sr_seed, tensor));
  }
  QT_OK_OR_DIE(qt_adamw_cuda_sync());

  float *hp = malloc(n * 4), *hm = malloc(n * 4), *hv = malloc(n * 4), *ha = malloc(nb * 4);
  uint16_t *hpb = malloc(n * 2);
  uint8_t *hc = malloc(n);
  const char *what = bits == 8 ? (bf16 ? "8-bit bf16" : "8-bit f32") : (bf16 ? "32-bit bf16" : "32-bit f32");
  if (bf16) {
    host_copy(hpb, dpb, n * 2);
    CHECK(memcmp(hpb, pb, n * 2) == 0, "%s n=%lld: params differ", what, (long long)n);
  } else {
    host_copy(hp, dp, n * 4);
    CHECK(memcmp(hp, p, n * 4) == 0, "%s n=%lld: params differ", what, (long long)n);
  }
  if (bits == 32) {
    host_copy(hm, dm, n * 4);
    host_copy(hv, dv, n * 4);
    CHECK(memcmp(hm, m, n * 4) == 0 && memcmp(hv, v, n * 4) == 0, "%s n=%lld: states differ", what,
          (long long)n);
  } else {
    int64_t bad = 0;
    host_copy(hc, dc1, n);
    for (int64_t i = 0; i < n; i++) bad += hc[i] != c1[i];
    host_copy(hc, dc2, n);
    for (int64_t i = 0; i < n; i++) bad += hc[i] != c2[i];
    CHECK(bad == 0, "%s n=%lld: %lld codes differ", what, (long long)n, (long long)bad);
    host_copy(ha, da1, nb * 4);
    CHECK(memcmp(ha, a1, nb * 4) == 0, "%s n=%lld: absmax1 differs", what, (long long)n);
    host_copy(ha, da2, nb * 4);
    CHECK(memcmp(ha, a2, nb * 4) == 0, "%s n=%lld: absmax2 differs", what, (long long)n);
  }
  cudaFree(dp);
  cudaFree(dg);
  cudaFree(dm);
  cudaFree(dv);
  cudaFree(da1);
  cudaFree(da2);
  cudaFree(dpb);
  cudaFree(dc1);
  cudaFree(dc2);
  cudaFree(dmaps);
  free(p), free(g), free(m), free(v), free(pb), free(c1), free(c2), free(a1), free(a2);
  free(hp), free(hm), free(hv), free(ha), free(hpb), free(hc);
}

/* The optimizer object on the GPU (paged or not) against the CPU optimizer:
 * several steps, mixed 8/32-bit state, F32 and BF16 params. */
static void optimizer_case(int paged, int64_t scale) {
  int64_t numels[3] = {4096 * scale + 77, 1000, 300001};
  qt_adamw_config cc, gc;
  qt_adamw_config_default(&cc, 8);
  gc = cc;
  gc.device = QT_DEV_CUDA;
  gc.paged = paged != 0;
  qt_adamw co, go;
  QT_OK_OR_DIE(qt_adamw_init(&co, &cc, 3, numels));
  QT_OK_OR_DIE(qt_adamw_init(&go, &gc, 3, numels));
  void *hp[3], *dp[3], *dg[3];
  float *hg[3];
  qt_tensor tc[3], tgc[3], td[3], tgd[3];
  uint64_t s = 77;
  for (int i = 0; i < 3; i++) {
    int bf = i == 2;
    size_t es = bf ? 2 : 4;
    hp[i] = malloc(numels[i] * es);
    hg[i] = malloc(numels[i] * 4);
    for (int64_t j = 0; j < numels[i]; j++) {
      float x = rnd(&s);
      if (bf)
        ((uint16_t *)hp[i])[j] = qt_bf16_from_f32(x);
      else
        ((float *)hp[i])[j] = x;
    }
    dp[i] = dev_copy(hp[i], numels[i] * es);
    CUDA_OK(cudaMalloc(&dg[i], numels[i] * 4));
    tc[i] = qt_tensor_make(bf ? QT_BF16 : QT_F32, QT_DEV_CPU, 1, &numels[i], hp[i]);
    tgc[i] = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &numels[i], hg[i]);
    td[i] = qt_tensor_make(bf ? QT_BF16 : QT_F32, QT_DEV_CUDA, 1, &numels[i], dp[i]);
    tgd[i] = qt_tensor_make(QT_F32, QT_DEV_CUDA, 1, &numels[i], dg[i]);
  }
  for (int t = 1; t <= 3; t++) {
    for (int i = 0; i < 3; i++) {
      for (int64_t j = 0; j < numels[i]; j++) hg[i][j] = rnd(&s) * 1e-2f;
      CUDA_OK(cudaMemcpy(dg[i], hg[i], numels[i] * 4, cudaMemcpyHostToDevice));
    }
    QT_OK_OR_DIE(qt_adamw_step(&co, tc, tgc, 1e-3f, 1.0f, 99));
    QT_OK_OR_DIE(qt_adamw_step(&go, td, tgd, 1e-3f, 1.0f, 99));
  }
  for (int i = 0; i < 3; i++) {
    size_t bytes = qt_tensor_nbytes(&tc[i]);
    void *back = malloc(bytes);
    host_copy(back, dp[i], bytes);
    CHECK(memcmp(back, hp[i], bytes) == 0, "optimizer paged=%d: param %d differs", paged, i);
    free(back);
  }
  /* managed state is host-readable after the step */
  CHECK(memcmp(co.mem, go.mem, co.mem_bytes) == 0, "optimizer paged=%d: state differs", paged);
  for (int i = 0; i < 3; i++) {
    free(hp[i]);
    free(hg[i]);
    cudaFree(dp[i]);
    cudaFree(dg[i]);
  }
  qt_adamw_free(&co);
  qt_adamw_free(&go);
}

int main(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    printf("no CUDA device: skipped\n");
    return 77;
  }
  const int64_t sizes[] = {1, 255, 256, 257, 4096 + 13, 100003};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    for (int bits = 8; bits <= 32; bits += 24)
      for (int bf = 0; bf < 2; bf++) parity_case(sizes[i], bits, bf, 1000 + i);
  optimizer_case(0, 3);
  optimizer_case(1, 3);

  /* Squeeze: leave ~256 MiB free, then run a paged optimizer whose 8-bit state
   * (2 B/param) plus params and grads (8 B/param) exceed it; managed memory
   * pages state out instead of failing. */
  size_t free_b = 0, total_b = 0;
  CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
  size_t keep = (size_t)256 << 20;
  void *hog = NULL;
  if (free_b > keep + ((size_t)64 << 20)) CUDA_OK(cudaMalloc(&hog, free_b - keep));
  int64_t n = 40 * 1000 * 1000; /* 80 MB state + 320 MB params/grads > 256 MiB */
  qt_adamw_config pc;
  qt_adamw_config_default(&pc, 8);
  pc.device = QT_DEV_CUDA;
  pc.paged = true;
  qt_adamw po;
  QT_OK_OR_DIE(qt_adamw_init(&po, &pc, 1, &n));
  float *mp = NULL, *mg = NULL;
  /* params and grads in managed memory too, so the squeeze cannot fail them */
  CUDA_OK(cudaMallocManaged((void **)&mp, n * 4, cudaMemAttachGlobal));
  CUDA_OK(cudaMallocManaged((void **)&mg, n * 4, cudaMemAttachGlobal));
  for (int64_t j = 0; j < n; j++) {
    mp[j] = 1.0f;
    mg[j] = (j & 1) ? 1e-3f : -1e-3f;
  }
  qt_tensor tp = qt_tensor_make(QT_F32, QT_DEV_CUDA, 1, &n, mp);
  qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CUDA, 1, &n, mg);
  for (int t = 0; t < 2; t++) QT_OK_OR_DIE(qt_adamw_step(&po, &tp, &tg, 1e-3f, 1.0f, 1));
  CHECK(mp[0] > 1.0f && mp[1] < 1.0f && mp[n - 1] < 1.0f, "squeeze: params did not move");
  qt_adamw_free(&po);
  cudaFree(mp);
  cudaFree(mg);
  if (hog) cudaFree(hog);

  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("optim CUDA parity: all kernels bit-identical to the CPU; paged state OK\n");
  return 0;
}
