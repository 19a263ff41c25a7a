/* GPU parity of common/philox: a kernel draws from cuRAND's device API
 * (curand_init, skipahead, skipahead_sequence, curand, curand4, curand_uniform,
 * curand_normal) for many (seed, subsequence, offset) and the CPU stream must
 * give the same words and uniforms bit for bit. Normals are compared within
 * 5e-5: the device fuses the angle's multiply-add and uses __sincosf and CUDA's
 * logf (philox.h, Exactness); any error in the stream layout shows up as O(1)
 * differences. Label `cuda`; exits 77 without a GPU. */
#include <curand_kernel.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/cuda_check.h"
#include "common/philox.h"
#include "cuda_test_util.h"

enum { N_WORDS = 37, N_QUADS = 3, N_UNI = 11, N_NORM = 10, N_AFTER = 5 };
enum { N_OUT = N_WORDS + 4 * N_QUADS + N_UNI + N_NORM + N_AFTER };

struct config {
  unsigned long long seed, sub, off, skip, skipseq;
};

/* One thread per config; out: (n_cfg, N_OUT) words (floats stored as bits). */
__global__ void draw(const config *cfg, int n_cfg, uint32_t *out) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_cfg) return;
  curandStatePhilox4_32_10_t s;
  curand_init(cfg[i].seed, cfg[i].sub, cfg[i].off, &s);
  if (cfg[i].skip) skipahead(cfg[i].skip, &s);
  if (cfg[i].skipseq) skipahead_sequence(cfg[i].skipseq, &s);
  uint32_t *o = out + (size_t)i * N_OUT;
  int k = 0;
  for (int j = 0; j < N_WORDS; j++) o[k++] = curand(&s);
  for (int j = 0; j < N_QUADS; j++) {
    uint4 q = curand4(&s);
    o[k++] = q.x;
    o[k++] = q.y;
    o[k++] = q.z;
    o[k++] = q.w;
  }
  for (int j = 0; j < N_UNI; j++) o[k++] = __float_as_uint(curand_uniform(&s));
  for (int j = 0; j < N_NORM; j++) o[k++] = __float_as_uint(curand_normal(&s));
  for (int j = 0; j < N_AFTER; j++) o[k++] = curand(&s);
}

static void cpu_draw(const config *c, uint32_t *o) {
  qt_philox s;
  qt_philox_init(&s, c->seed, c->sub, c->off);
  if (c->skip) qt_philox_skipahead(&s, c->skip);
  if (c->skipseq) qt_philox_skipahead_sequence(&s, c->skipseq);
  int k = 0;
  for (int j = 0; j < N_WORDS; j++) o[k++] = qt_philox_next_u32(&s);
  for (int j = 0; j < N_QUADS; j++) {
    qt_philox_next_u32x4(&s, o + k);
    k += 4;
  }
  for (int j = 0; j < N_UNI; j++) {
    float u = qt_philox_next_uniform(&s);
    memcpy(o + k++, &u, sizeof u);
  }
  for (int j = 0; j < N_NORM; j++) {
    float z = qt_philox_next_normal(&s);
    memcpy(o + k++, &z, sizeof z);
  }
  for (int j = 0; j < N_AFTER; j++) o[k++] = qt_philox_next_u32(&s);
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

enum { N_CFG = 4096 };

static qt_status run(int *failures) {
  static config cfg[N_CFG];
  static uint32_t gpu[N_CFG * N_OUT], cpu[N_OUT];
  const unsigned long long seeds[] = {0, 1, 42, 0xFFFFFFFFull, 0xDEADBEEFCAFEF00Dull, ~0ull};
  const unsigned long long subs[] = {0, 1, 3, 0xFFFFFFFFull, 0x123456789ABCull, ~0ull};
  const unsigned long long offs[] = {0, 1, 2, 3, 5, 0xFFFFFFFFull, 0x400000003ull, ~0ull};
  int n = 0;
  for (unsigned long long a : seeds)
    for (unsigned long long b : subs)
      for (unsigned long long c : offs) cfg[n++] = config{a, b, c, 0, 0};
  for (int i = 0; n < 2048; i++) /* the usual pattern: one subsequence per thread */
    cfg[n++] = config{20261125ull, (unsigned long long)i, (unsigned long long)(7 * i), 0, 0};
  uint64_t rs = 99;
  while (n < N_CFG) {
    uint64_t r = splitmix64(&rs);
    cfg[n++] = config{splitmix64(&rs), r & 1 ? splitmix64(&rs) : r % 1000, splitmix64(&rs) >> (r % 64),
                      splitmix64(&rs) >> ((r >> 8) % 64), (r >> 16) & 1 ? splitmix64(&rs) : 0};
  }

  config *d_cfg = NULL;
  uint32_t *d_out = NULL;
  qt_status st = QT_OK;
  QT_CUDA_CHECK_GOTO(st, done, cudaMalloc(&d_cfg, sizeof cfg));
  QT_CUDA_CHECK_GOTO(st, done, cudaMalloc(&d_out, sizeof gpu));
  QT_CUDA_CHECK_GOTO(st, done, cudaMemcpy(d_cfg, cfg, sizeof cfg, cudaMemcpyHostToDevice));
  draw<<<(N_CFG + 127) / 128, 128>>>(d_cfg, N_CFG, d_out);
  QT_CUDA_CHECK_LAUNCH_GOTO(st, done);
  QT_CUDA_CHECK_GOTO(st, done, cudaMemcpy(gpu, d_out, sizeof gpu, cudaMemcpyDeviceToHost));

  {
    double max_normal_diff = 0;
    long normals_exact = 0;
    for (int i = 0; i < N_CFG; i++) {
      cpu_draw(&cfg[i], cpu);
      const uint32_t *g = gpu + (size_t)i * N_OUT;
      for (int k = 0; k < N_OUT; k++) {
        int is_normal = k >= N_WORDS + 4 * N_QUADS + N_UNI && k < N_OUT - N_AFTER;
        int bad;
        if (is_normal) {
          float a, b;
          memcpy(&a, g + k, sizeof a);
          memcpy(&b, cpu + k, sizeof b);
          double d = fabs((double)a - b);
          if (d > max_normal_diff) max_normal_diff = d;
          normals_exact += g[k] == cpu[k];
          bad = !(d <= 5e-5);
        } else {
          bad = g[k] != cpu[k];
        }
        if (bad && (*failures)++ < 20)
          fprintf(stderr, "config %d (seed %llx sub %llx off %llx skip %llx seq %llx) output %d: GPU %08x CPU %08x\n",
                  i, cfg[i].seed, cfg[i].sub, cfg[i].off, cfg[i].skip, cfg[i].skipseq, k, g[k], cpu[k]);
      }
    }
    printf("%d configs x %d outputs; normals: max |GPU - CPU| = %.3g, %ld of %d bit-identical\n", N_CFG,
           N_OUT, max_normal_diff, normals_exact, N_CFG * N_NORM);
  }
done:
  cudaFree(d_cfg);
  cudaFree(d_out);
  return st;
}

int main(void) {
  int rc = ctu_gpu_check("test_philox_cuda");
  if (rc != 0) return rc; /* 77: no GPU (skipped); 1: a GPU CUDA cannot use */
  int failures = 0;
  qt_status st = run(&failures);
  if (st != QT_OK) {
    fprintf(stderr, "test_philox_cuda: %s\n", qt_error_message());
    return 1;
  }
  if (failures) {
    fprintf(stderr, "FAILED: %d outputs differ between cuRAND on the GPU and common/philox\n", failures);
    return 1;
  }
  printf("OK: cuRAND Philox4_32_10 on the GPU matches common/philox\n");
  return 0;
}
