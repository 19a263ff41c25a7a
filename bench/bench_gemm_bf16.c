/* bench/bench_gemm_bf16.c — the CPU GEMM choice for a bf16 compute mode (issue
 * 18 item 3): y (M, N) = x (M, K) W^T, W (N, K), the shape of every linear of
 * the tape, timed as fp32 OpenBLAS sgemm (what the CPU path runs today) and as
 * a oneDNN matmul with bf16 inputs and fp32 output (Debian's libdnnl-dev; it
 * picks AMX or AVX512-BF16 kernels where the CPU has them and prints which).
 * Debian 12's OpenBLAS 0.3.21 is built without its bf16 GEMM (no
 * cblas_sbgemm symbol), so oneDNN is the maintained library to measure.
 *
 *   bench_gemm_bf16 [M N K ...]      (default: a set of Llama-3.2-1B shapes)
 *
 * Prints per shape: ms and GFLOP/s of both (median of 15 runs after a
 * warm-up), the speed ratio, oneDNN's kernel name and the relative difference
 * max|y_bf16 - y_fp32| / max|y_fp32| (inputs rounded to bf16, so ~1e-3). */
#include <cblas.h>
#include <dnnl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CK(x)                                                                   \
  do {                                                                          \
    dnnl_status_t s_ = (x);                                                     \
    if (s_ != dnnl_success) {                                                   \
      fprintf(stderr, "bench_gemm_bf16: %s failed (dnnl status %d)\n", #x, (int)s_); \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)

enum { RUNS = 15 };

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* fp32 -> bf16, round to nearest even (common/half.h's rule; finite inputs) */
static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  return t[n / 2];
}

static void shape(dnnl_engine_t eng, dnnl_stream_t st, int64_t M, int64_t N, int64_t K) {
  float *x = malloc((size_t)(M * K) * 4), *w = malloc((size_t)(N * K) * 4);
  float *y = malloc((size_t)(M * N) * 4), *yb = malloc((size_t)(M * N) * 4);
  uint16_t *xb = malloc((size_t)(M * K) * 2), *wb = malloc((size_t)(N * K) * 2);
  if (!x || !w || !y || !yb || !xb || !wb) {
    fprintf(stderr, "bench_gemm_bf16: out of memory for %lld x %lld x %lld\n", (long long)M,
            (long long)N, (long long)K);
    exit(1);
  }
  for (int64_t i = 0; i < M * K; i++) { /* deterministic values in [-0.5, 0.5) */
    x[i] = (float)((double)((i * 7919) % 1000) / 1000.0 - 0.5);
    xb[i] = to_bf16(x[i]);
  }
  for (int64_t i = 0; i < N * K; i++) {
    w[i] = (float)((double)((i * 104729) % 1000) / 1000.0 - 0.5);
    wb[i] = to_bf16(w[i]);
  }
  double t[RUNS];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)N, (blasint)K, 1.0f, x,
              (blasint)K, w, (blasint)K, 0.0f, y, (blasint)N);
  for (int r = 0; r < RUNS; r++) {
    double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)N, (blasint)K, 1.0f,
                x, (blasint)K, w, (blasint)K, 0.0f, y, (blasint)N);
    t[r] = now_s() - t0;
  }
  double ts = median(t, RUNS);
  /* oneDNN: src (M, K) bf16, weights (K, N) bf16 stored as W (N, K) (tag ba), dst (M, N) f32 */
  dnnl_memory_desc_t a, b, c;
  dnnl_dims_t da = {M, K}, db = {K, N}, dc = {M, N};
  CK(dnnl_memory_desc_init_by_tag(&a, 2, da, dnnl_bf16, dnnl_ab));
  CK(dnnl_memory_desc_init_by_tag(&b, 2, db, dnnl_bf16, dnnl_ba));
  CK(dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab));
  dnnl_matmul_desc_t md;
  CK(dnnl_matmul_desc_init(&md, &a, &b, NULL, &c));
  dnnl_primitive_desc_t pd;
  CK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
  const char *impl = "?";
  CK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
  dnnl_primitive_t p;
  CK(dnnl_primitive_create(&p, pd));
  dnnl_memory_t ma, mb, mc;
  CK(dnnl_memory_create(&ma, &a, eng, xb));
  CK(dnnl_memory_create(&mb, &b, eng, wb));
  CK(dnnl_memory_create(&mc, &c, eng, yb));
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  CK(dnnl_primitive_execute(p, st, 3, args));
  CK(dnnl_stream_wait(st));
  for (int r = 0; r < RUNS; r++) {
    double t0 = now_s();
    CK(dnnl_primitive_execute(p, st, 3, args));
    CK(dnnl_stream_wait(st));
    t[r] = now_s() - t0;
  }
  double tb = median(t, RUNS);
  double md_ = 0, mx = 0;
  for (int64_t i = 0; i < M * N; i++) {
    double d = (double)y[i] - (double)yb[i], v = (double)y[i];
    if (d < 0) d = -d;
    if (v < 0) v = -v;
    if (d > md_) md_ = d;
    if (v > mx) mx = v;
  }
  double fl = 2.0 * (double)M * (double)N * (double)K;
  printf("| %lld x %lld x %lld | %.2f | %.0f | %.2f | %.0f | %.2f | %s | %.1e |\n", (long long)M,
         (long long)N, (long long)K, ts * 1e3, fl / ts / 1e9, tb * 1e3, fl / tb / 1e9, ts / tb, impl,
         mx > 0 ? md_ / mx : md_);
  dnnl_memory_destroy(ma);
  dnnl_memory_destroy(mb);
  dnnl_memory_destroy(mc);
  dnnl_primitive_destroy(p);
  dnnl_primitive_desc_destroy(pd);
  free(x);
  free(w);
  free(y);
  free(yb);
  free(xb);
  free(wb);
}

int main(int argc, char **argv) {
  dnnl_engine_t eng;
  dnnl_stream_t st;
  CK(dnnl_engine_create(&eng, dnnl_cpu, 0));
  CK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
  printf("| M x N x K | sgemm ms | sgemm GFLOP/s | oneDNN bf16 ms | GFLOP/s | speed-up | kernel | rel diff |\n");
  printf("|---|---|---|---|---|---|---|---|\n");
  if (argc > 1) {
    if ((argc - 1) % 3 != 0) {
      fprintf(stderr, "usage: bench_gemm_bf16 [M N K ...]\n");
      return 1;
    }
    for (int i = 1; i + 2 < argc; i += 3) shape(eng, st, atoll(argv[i]), atoll(argv[i + 1]), atoll(argv[i + 2]));
  } else {
    /* Llama-3.2-1B: hidden 2048, q/o 2048, k/v 512, MLP 8192; 240 and 512 tokens; the LM head */
    static const int64_t s[][3] = {{240, 2048, 2048}, {512, 2048, 2048}, {512, 512, 2048},
                                   {512, 8192, 2048}, {512, 2048, 8192}, {512, 128256, 2048}};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) shape(eng, st, s[i][0], s[i][1], s[i][2]);
  }
  dnnl_stream_destroy(st);
  dnnl_engine_destroy(eng);
  return 0;
}
