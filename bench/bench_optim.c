/* bench_optim: AdamW step time per million parameters on the CPU (and, in a
 * CUDA build with a GPU present, of the CUDA kernels), 8-bit blockwise and
 * 32-bit state, F32 and BF16 parameters.
 *   bench_optim [MILLIONS_OF_PARAMS (default 8)] [REPEATS (default 5)]
 * Prints one markdown table row per configuration: the best of REPEATS steps
 * (after one warm-up step), in ms per 1M parameters, with the OpenMP thread
 * count. Results: bench/RESULTS.md. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/half.h"
#include "optim/optim.h"
#ifdef QLORA_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

#ifdef QLORA_HAVE_CUDA
/* The CUDA kernels on device buffers (state in plain device memory), timed
 * with events; the first call is a warm-up. */
static int bench_gpu(int64_t n, int repeats, const float *g, const float *p) {
  struct cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  int64_t nb = (n + 255) / 256;
  float *dp = NULL, *dg = NULL, *dm = NULL, *dv = NULL, *da = NULL;
  uint16_t *dpb = NULL;
  uint8_t *dc = NULL;
  qt_adamw_qmap *dq = NULL;
  if (cudaMalloc((void **)&dp, n * 4) || cudaMalloc((void **)&dg, n * 4) ||
      cudaMalloc((void **)&dm, n * 4) || cudaMalloc((void **)&dv, n * 4) ||
      cudaMalloc((void **)&da, nb * 8) || cudaMalloc((void **)&dpb, n * 2) ||
      cudaMalloc((void **)&dc, n * 2) || cudaMalloc((void **)&dq, 2 * sizeof(qt_adamw_qmap))) {
    fprintf(stderr, "bench_optim: cannot allocate GPU buffers\n");
    return 1;
  }
  qt_adamw_config c;
  qt_adamw_config_default(&c, 8);
  qt_adamw o;
  int64_t one = 1;
  if (qt_adamw_init(&o, &c, 1, &one) != QT_OK) return 1;
  qt_adamw_qmap maps[2] = {o.qmap1, o.qmap2};
  qt_adamw_free(&o);
  cudaMemcpy(dq, maps, sizeof maps, cudaMemcpyHostToDevice);
  cudaMemcpy(dp, p, n * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dg, g, n * 4, cudaMemcpyHostToDevice);
  cudaMemset(dm, 0, n * 4);
  cudaMemset(dv, 0, n * 4);
  cudaMemset(da, 0, nb * 8);
  cudaMemset(dc, 0, n * 2);
  cudaMemset(dpb, 0, n * 2);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int kind = 0; kind < 4; kind++) {
    float best = 1e30f;
    for (int r = 0; r <= repeats; r++) {
      qt_adamw_scalars k;
      qt_adamw_scalars_make(&c, r + 1, 1e-4f, 1.0f, &k);
      cudaEventRecord(e0, 0);
      qt_status st;
      if (kind == 0)
        st = qt_adamw8_update_f32_cuda(dp, dg, dc, dc + n, da, da + nb, dq, dq + 1, n, &k);
      else if (kind == 1)
        st = qt_adamw8_update_bf16_cuda(dpb, dg, dc, dc + n, da, da + nb, dq, dq + 1, n, &k, 7, 0);
      else if (kind == 2)
        st = qt_adamw32_update_f32_cuda(dp, dg, dm, dv, n, &k);
      else
        st = qt_adamw32_update_bf16_cuda(dpb, dg, dm, dv, n, &k, 7, 0);
      cudaEventRecord(e1, 0);
      if (st != QT_OK || qt_adamw_cuda_sync() != QT_OK) {
        fprintf(stderr, "bench_optim: %s\n", qt_error_message());
        return 1;
      }
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      if (r > 0 && ms < best) best = ms;
    }
    printf("| %s | %s %.1fM | GPU %s | %.3f | %.4f | %.3f |\n", kind < 2 ? "8-bit" : "32-bit",
           kind % 2 ? "BF16" : "F32", (double)n / 1e6, prop.name, best, best / ((double)n / 1e6),
           kind < 2 ? (2.0 * n + 8.0 * nb) / n : 8.0);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(dp), cudaFree(dg), cudaFree(dm), cudaFree(dv), cudaFree(da), cudaFree(dpb), cudaFree(dc);
  cudaFree(dq);
  return 0;
}
#endif

int main(int argc, char **argv) {
  double millions = argc > 1 ? atof(argv[1]) : 8.0;
  int repeats = argc > 2 ? atoi(argv[2]) : 5;
  if (!(millions > 0) || repeats < 1) {
    fprintf(stderr, "usage: bench_optim [MILLIONS_OF_PARAMS] [REPEATS]\n");
    return 2;
  }
  int64_t n = (int64_t)(millions * 1e6);
  float *g = malloc((size_t)n * 4), *p = malloc((size_t)n * 4);
  uint16_t *pb = malloc((size_t)n * 2);
  if (!g || !p || !pb) {
    fprintf(stderr, "bench_optim: out of memory for %lld params\n", (long long)n);
    return 1;
  }
  uint64_t s = 1;
  for (int64_t i = 0; i < n; i++) {
    g[i] = (float)((double)(splitmix64(&s) >> 40) * 0x1p-24 - 0.5) * 1e-2f;
    p[i] = (float)((double)(splitmix64(&s) >> 40) * 0x1p-24 - 0.5);
    pb[i] = qt_bf16_from_f32(p[i]);
  }
  printf("| state | params | threads | ms per step | ms per 1M params | state bytes/param |\n");
  printf("|---|---|---|---|---|---|\n");
  int max_threads = omp_get_max_threads();
  for (int bits = 8; bits <= 32; bits += 24) {
    for (int bf = 0; bf < 2; bf++) {
      for (int th = 1; th <= max_threads; th *= 2) {
        omp_set_num_threads(th);
        qt_adamw_config c;
        qt_adamw_config_default(&c, bits);
        qt_adamw opt;
        qt_status st = qt_adamw_init(&opt, &c, 1, &n);
        if (st != QT_OK) {
          fprintf(stderr, "bench_optim: %s\n", qt_error_message());
          return 1;
        }
        qt_tensor tp = bf ? qt_tensor_make(QT_BF16, QT_DEV_CPU, 1, &n, pb)
                          : qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, p);
        qt_tensor tg = qt_tensor_make(QT_F32, QT_DEV_CPU, 1, &n, g);
        double best = 1e30;
        for (int r = 0; r <= repeats; r++) {
          double t0 = now_s();
          st = qt_adamw_step(&opt, &tp, &tg, 1e-4f, 1.0f, 7);
          double dt = now_s() - t0;
          if (st != QT_OK) {
            fprintf(stderr, "bench_optim: %s\n", qt_error_message());
            return 1;
          }
          if (r > 0 && dt < best) best = dt;
        }
        printf("| %d-bit | %s %.1fM | %d | %.1f | %.2f | %.3f |\n", bits, bf ? "BF16" : "F32",
               (double)n / 1e6, th, best * 1e3, best * 1e3 / ((double)n / 1e6),
               (double)qt_adamw_state_bytes(&opt) / (double)n);
        qt_adamw_free(&opt);
      }
    }
  }
#ifdef QLORA_HAVE_CUDA
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0 && bench_gpu(n, repeats, g, p) != 0)
    return 1;
#endif
  free(g);
  free(p);
  free(pb);
  return 0;
}
