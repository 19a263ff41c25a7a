/* bench/bench_quant_gpu.c — quant/ CUDA kernels as a fraction of the measured
 * device-to-device copy bandwidth (cudaMemcpy D2D, bytes read + written).
 *
 *   bench_quant_gpu [--rows R] [--cols C]     (default one Llama-3-8B MLP
 *                                              weight, 14336 x 4096)
 *
 * Bytes counted per kernel: 4-bit dequantize reads n/2 packed + 4 n/64 absmax
 * and writes 2 n (bf16) or 4 n (fp32); quantize reads 2 n (bf16) and writes
 * n/2 + 4 n/64. Exit 77 without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "quant/quant.h"
#include "tests/common/cuda_test_util.h"

#define CK(call)                                                                  \
  do {                                                                            \
    cudaError_t e_ = (call);                                                      \
    if (e_ != cudaSuccess) {                                                      \
      fprintf(stderr, "bench_quant_gpu: %s: %s\n", #call, cudaGetErrorString(e_)); \
      return 1;                                                                   \
    }                                                                             \
  } while (0)
#define QK(call)                                                                  \
  do {                                                                            \
    if ((call) != QT_OK) {                                                        \
      fprintf(stderr, "bench_quant_gpu: %s\n", qt_error_message());               \
      return 1;                                                                   \
    }                                                                             \
  } while (0)

enum { REPS = 20 };

int main(int argc, char **argv) {
  int64_t rows = 14336, cols = 4096;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) rows = atoll(argv[++i]);
    else if (strcmp(argv[i], "--cols") == 0 && i + 1 < argc) cols = atoll(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_quant_gpu [--rows R] [--cols C]\n");
      return 2;
    }
  }
  int rc = ctu_gpu_check("bench_quant_gpu"); /* 77 only without a GPU; a broken CUDA setup fails */
  if (rc != 0) return rc;
  struct cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  int64_t n = rows * cols, nb = qt_quant_nblocks(n, 64);
  printf("device: %s; weight %lld x %lld (%lld elements), NF4 blocksize 64\n", prop.name,
         (long long)rows, (long long)cols, (long long)n);

  uint16_t *hx = malloc(2 * (size_t)n);
  uint64_t s = 1;
  for (int64_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    float f = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.1f;
    uint32_t u;
    memcpy(&u, &f, 4);
    hx[i] = (uint16_t)(u >> 16);
  }
  uint16_t *x, *outb;
  uint8_t *packed;
  float *absmax, *outf;
  void *copy_dst;
  CK(cudaMalloc((void **)&x, 2 * (size_t)n));
  CK(cudaMalloc((void **)&outb, 2 * (size_t)n));
  CK(cudaMalloc((void **)&outf, 4 * (size_t)n));
  CK(cudaMalloc(&copy_dst, 4 * (size_t)n));
  CK(cudaMalloc((void **)&packed, (size_t)(n + 1) / 2));
  CK(cudaMalloc((void **)&absmax, 4 * (size_t)nb));
  CK(cudaMemcpy(x, hx, 2 * (size_t)n, cudaMemcpyHostToDevice));
  free(hx);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float ms;

  /* Copy bandwidth: 4n bytes copied, 8n bytes moved. */
  CK(cudaMemcpy(copy_dst, outf, 4 * (size_t)n, cudaMemcpyDeviceToDevice));
  CK(cudaEventRecord(e0, 0));
  for (int r = 0; r < REPS; r++) CK(cudaMemcpyAsync(copy_dst, outf, 4 * (size_t)n, cudaMemcpyDeviceToDevice, 0));
  CK(cudaEventRecord(e1, 0));
  CK(cudaEventSynchronize(e1));
  CK(cudaEventElapsedTime(&ms, e0, e1));
  double copy_bw = 8.0 * n * REPS / (ms * 1e-3) / 1e9;
  printf("%-28s %10.3f ms %10.1f GB/s\n", "D2D copy (read+write)", ms / REPS, copy_bw);

  struct { const char *name; int op; double bytes; } ops[] = {
      {"quantize nf4 (bf16 in)", 0, 2.0 * n + n / 2.0 + 4.0 * nb},
      {"dequantize nf4 -> bf16", 1, n / 2.0 + 4.0 * nb + 2.0 * n},
      {"dequantize nf4 -> fp32", 2, n / 2.0 + 4.0 * nb + 4.0 * n},
  };
  for (int k = 0; k < 3; k++) {
    for (int r = -1; r < REPS; r++) {
      if (r == 0) CK(cudaEventRecord(e0, 0));
      if (ops[k].op == 0) QK(qt_quant_4bit_quantize_bf16_cuda(QT_QUANT_NF4, x, n, 64, packed, absmax, NULL));
      else if (ops[k].op == 1) QK(qt_quant_4bit_dequantize_bf16_cuda(QT_QUANT_NF4, packed, absmax, n, 64, outb, NULL));
      else QK(qt_quant_4bit_dequantize_cuda(QT_QUANT_NF4, packed, absmax, n, 64, outf, NULL));
    }
    CK(cudaEventRecord(e1, 0));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&ms, e0, e1));
    double bw = ops[k].bytes * REPS / (ms * 1e-3) / 1e9;
    printf("%-28s %10.3f ms %10.1f GB/s  %5.1f%% of copy\n", ops[k].name, ms / REPS, bw, 100.0 * bw / copy_bw);
  }
  CK(cudaFree(x)); CK(cudaFree(outb)); CK(cudaFree(outf)); CK(cudaFree(copy_dst));
  CK(cudaFree(packed)); CK(cudaFree(absmax));
  return 0;
}
