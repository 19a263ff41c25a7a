/* bench/bench_quant.c — quant/ on CPU: quantize / dequantize throughput (GB/s
 * of input, total and per core), bits per parameter, and the issue-3 goal:
 * quantizing every linear layer of a Llama-3-8B-shaped model (random bf16
 * weights in memory; NF4, blocksize 64, double quant) in under 60 s.
 *
 *   bench_quant [--threads N] [--layers L] [--skip-llama]
 *
 * Llama-3-8B shapes (meta-llama/Meta-Llama-3-8B config.json: hidden 4096,
 * intermediate 14336, 32 layers, 32 heads, 8 KV heads, head_dim 128): per layer
 * q/o [4096, 4096], k/v [1024, 4096], gate/up [14336, 4096], down [4096, 14336];
 * lm_head is not quantized (formats.md section 2). Layers are generated and
 * quantized one at a time so memory stays at one layer; only quantization is
 * timed, generation is not. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/half.h"
#include "quant/quant.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Roughly normal values (sum of 4 uniforms, Irwin-Hall) scaled like weights. */
static void fill_f32(float *x, int64_t n, uint64_t seed, int threads) {
#pragma omp parallel num_threads(threads)
  {
    uint64_t s = seed * 0x100000001b3ull + (uint64_t)omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) {
      uint64_t r = splitmix(&s);
      double u = (double)(r & 0xffff) + (double)((r >> 16) & 0xffff) + (double)((r >> 32) & 0xffff) +
                 (double)(r >> 48);
      x[i] = (float)((u / 65536.0 - 2.0) * 1.7320508 * 0.02);
    }
  }
}

static void fill_bf16(uint16_t *x, int64_t n, uint64_t seed, int threads) {
#pragma omp parallel num_threads(threads)
  {
    uint64_t s = seed * 0x100000001b3ull + (uint64_t)omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) {
      uint64_t r = splitmix(&s);
      double u = (double)(r & 0xffff) + (double)((r >> 16) & 0xffff) + (double)((r >> 32) & 0xffff) +
                 (double)(r >> 48);
      x[i] = qt_bf16_from_f32((float)((u / 65536.0 - 2.0) * 1.7320508 * 0.02));
    }
  }
}

/* Best of `reps` runs, seconds. */
#define BEST_OF(reps, secs, stmt)                   \
  do {                                              \
    secs = 1e30;                                    \
    for (int r_ = 0; r_ < (reps); r_++) {           \
      double t0_ = now_s();                         \
      stmt;                                         \
      double t_ = now_s() - t0_;                    \
      if (t_ < secs) secs = t_;                     \
    }                                               \
  } while (0)

static void throughput(int threads) {
  const int64_t n = 16LL * 1024 * 1024; /* 16 Mi elements: 64 MiB fp32 */
  const int bs = 64;
  int64_t nb = qt_quant_nblocks(n, bs);
  float *x = malloc(4 * (size_t)n), *deq = malloc(4 * (size_t)n), *absmax = malloc(4 * (size_t)nb);
  uint16_t *xb = malloc(2 * (size_t)n), *deqb = malloc(2 * (size_t)n);
  uint8_t *packed = malloc((size_t)n / 2);
  if (!x || !deq || !absmax || !xb || !deqb || !packed) {
    fprintf(stderr, "bench_quant: out of memory\n");
    exit(1);
  }
  fill_f32(x, n, 1, threads);
  for (int64_t i = 0; i < n; i++) xb[i] = qt_bf16_from_f32(x[i]);
  printf("CPU throughput, %lld elements, blocksize %d, best of 3 (GB = 1e9 bytes)\n", (long long)n, bs);
  printf("%-34s %8s %10s %12s %14s\n", "operation", "threads", "time ms", "GB/s input", "GB/s/core");
  for (int t = 1; t <= threads; t = t == threads ? threads + 1 : threads) {
    for (int q = 0; q < 2; q++) {
      qt_quant_type qt = (qt_quant_type)q;
      double s;
      BEST_OF(3, s, qt_quant_4bit_quantize(qt, x, n, bs, packed, absmax, t));
      printf("%-34s %8d %10.2f %12.3f %14.3f\n", q ? "quantize fp4 (fp32 in)" : "quantize nf4 (fp32 in)",
             t, s * 1e3, 4.0 * n / s / 1e9, 4.0 * n / s / 1e9 / t);
      BEST_OF(3, s, qt_quant_4bit_quantize_bf16(qt, xb, n, bs, packed, absmax, t));
      printf("%-34s %8d %10.2f %12.3f %14.3f\n", q ? "quantize fp4 (bf16 in)" : "quantize nf4 (bf16 in)",
             t, s * 1e3, 2.0 * n / s / 1e9, 2.0 * n / s / 1e9 / t);
      /* dequant input = packed codes + fp32 absmax */
      double in_bytes = n / 2.0 + 4.0 * nb;
      BEST_OF(3, s, qt_quant_4bit_dequantize(qt, packed, absmax, n, bs, deq, t));
      printf("%-34s %8d %10.2f %12.3f %14.3f   (%.2f Gelem/s)\n",
             q ? "dequantize fp4 -> fp32" : "dequantize nf4 -> fp32", t, s * 1e3, in_bytes / s / 1e9,
             in_bytes / s / 1e9 / t, n / s / 1e9);
      BEST_OF(3, s, qt_quant_4bit_dequantize_bf16(qt, packed, absmax, n, bs, deqb, t));
      printf("%-34s %8d %10.2f %12.3f %14.3f   (%.2f Gelem/s)\n",
             q ? "dequantize fp4 -> bf16" : "dequantize nf4 -> bf16", t, s * 1e3, in_bytes / s / 1e9,
             in_bytes / s / 1e9 / t, n / s / 1e9);
    }
  }
  /* The scalar reference, for scale. */
  double s;
  BEST_OF(1, s, qt_quant_4bit_quantize_ref(QT_QUANT_NF4, x, n, bs, packed, absmax));
  printf("%-34s %8d %10.2f %12.3f %14.3f\n", "quantize nf4 _ref (scalar)", 1, s * 1e3, 4.0 * n / s / 1e9,
         4.0 * n / s / 1e9);
  BEST_OF(1, s, qt_quant_4bit_dequantize_ref(QT_QUANT_NF4, packed, absmax, n, bs, deq));
  printf("%-34s %8d %10.2f %12.3f %14.3f\n", "dequantize nf4 _ref (scalar)", 1, s * 1e3,
         (n / 2.0 + 4.0 * nb) / s / 1e9, (n / 2.0 + 4.0 * nb) / s / 1e9);
  /* 8-bit blockwise (the optimizer's state), blocksize 256, signed map. */
  float map[256];
  qt_quant_dynamic_map(true, map);
  uint8_t *q8 = malloc((size_t)n);
  float *a8 = malloc(4 * (size_t)(n / 256 + 1));
  BEST_OF(3, s, qt_quant_8bit_quantize(map, x, n, 256, q8, a8, threads));
  printf("%-34s %8d %10.2f %12.3f %14.3f\n", "8-bit quantize (bs 256)", threads, s * 1e3,
         4.0 * n / s / 1e9, 4.0 * n / s / 1e9 / threads);
  BEST_OF(3, s, qt_quant_8bit_dequantize(map, q8, a8, n, 256, deq, threads));
  printf("%-34s %8d %10.2f %12.3f %14.3f\n", "8-bit dequantize (bs 256)", threads, s * 1e3,
         (double)n / s / 1e9, (double)n / s / 1e9 / threads);
  free(q8); free(a8);
  free(x); free(deq); free(absmax); free(xb); free(deqb); free(packed);
}

typedef struct { const char *name; int64_t rows, cols; } lin_shape;

static void llama3_8b(int threads, int layers) {
  const lin_shape lin[7] = {{"q_proj", 4096, 4096},  {"k_proj", 1024, 4096},  {"v_proj", 1024, 4096},
                            {"o_proj", 4096, 4096},  {"gate_proj", 14336, 4096},
                            {"up_proj", 14336, 4096}, {"down_proj", 4096, 14336}};
  int64_t layer_params = 0, maxn = 0;
  for (int i = 0; i < 7; i++) {
    int64_t n = lin[i].rows * lin[i].cols;
    layer_params += n;
    if (n > maxn) maxn = n;
  }
  uint16_t *w = malloc(2 * (size_t)maxn);
  uint8_t *packed = malloc((size_t)maxn / 2);
  int64_t maxnb = qt_quant_nblocks(maxn, 64);
  float *absmax = malloc(4 * (size_t)maxnb), *nested = malloc(4 * (size_t)(maxnb / 256 + 1));
  uint8_t *qabsmax = malloc((size_t)maxnb);
  if (!w || !packed || !absmax || !nested || !qabsmax) {
    fprintf(stderr, "bench_quant: out of memory\n");
    exit(1);
  }
  float map[256];
  qt_quant_dynamic_map(true, map);
  double t_quant = 0.0, t_dq = 0.0, bits = 0.0, cpu = 0.0;
  int64_t total = 0;
  for (int l = 0; l < layers; l++) {
    for (int i = 0; i < 7; i++) {
      int64_t n = lin[i].rows * lin[i].cols, nb = qt_quant_nblocks(n, 64);
      fill_bf16(w, n, (uint64_t)(l * 7 + i + 1), threads); /* not timed */
      double c0 = cpu_s();
      double t0 = now_s();
      qt_quant_4bit_quantize_bf16(QT_QUANT_NF4, w, n, 64, packed, absmax, threads);
      double t1 = now_s();
      float offset = qt_quant_absmax_mean(absmax, nb);
      qt_quant_dq_compress(map, absmax, nb, offset, qabsmax, nested, threads);
      double t2 = now_s();
      cpu += cpu_s() - c0;
      t_quant += t1 - t0;
      t_dq += t2 - t1;
      bits += qt_quant_bits_per_param(n, 64, true) * (double)n;
      total += n;
    }
    if (l == 0 || l + 1 == layers)
      printf("  layer %2d done: %.2f s quantize + %.2f s double quant so far\n", l, t_quant, t_dq);
  }
  printf("Llama-3-8B-shaped linears: %d layers x %lld params = %lld params (%.3f GB bf16)\n", layers,
         (long long)layer_params, (long long)total, 2.0 * total / 1e9);
  printf("  NF4 bs64 + double quant, %d threads: %.2f s (4-bit %.2f s, DQ %.2f s), %.3f Gparam/s\n",
         threads, t_quant + t_dq, t_quant, t_dq, total / (t_quant + t_dq) / 1e9);
  printf("  CPU time of those sections: %.2f s (%.2f s per thread; wall above includes waiting "
         "for a shared CPU)\n", cpu, cpu / threads);
  if (layers < 32)
    printf("  extrapolated to 32 layers: %.1f s\n", (t_quant + t_dq) * 32.0 / layers);
  printf("  storage: %.4f bits/param, %.3f GB (bf16: %.3f GB)\n", bits / total, bits / 8 / 1e9,
         2.0 * total / 1e9);
  free(w); free(packed); free(absmax); free(nested); free(qabsmax);
}

int main(int argc, char **argv) {
  int threads = omp_get_max_threads(), layers = 32, skip_llama = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--layers") == 0 && i + 1 < argc) layers = atoi(argv[++i]);
    else if (strcmp(argv[i], "--skip-llama") == 0) skip_llama = 1;
    else {
      fprintf(stderr, "usage: bench_quant [--threads N] [--layers L] [--skip-llama]\n");
      return 2;
    }
  }
  if (threads < 1 || layers < 1 || layers > 32) {
    fprintf(stderr, "bench_quant: --threads >= 1, 1 <= --layers <= 32\n");
    return 2;
  }
  printf("bits/param, NF4 blocksize 64, 4096x4096: %.4f plain, %.4f double quant\n",
         qt_quant_bits_per_param(4096LL * 4096, 64, false), qt_quant_bits_per_param(4096LL * 4096, 64, true));
  throughput(threads);
  if (!skip_llama) llama3_8b(threads, layers);
  return 0;
}
