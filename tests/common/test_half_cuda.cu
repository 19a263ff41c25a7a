/* GPU parity of common/half: the device's conversions (__float2bfloat16_rn,
 * __float2half_rn, __bfloat162float, __half2float, i.e. the cvt instructions)
 * against the CPU functions, bit for bit, over all 65536 16-bit patterns and
 * the fp32 patterns of half_cases.c. Label `cuda`; exits 77 without a GPU. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cuda_check.h"
#include "common/half.h"
#include "cuda_test_util.h"
#include "half_cases.h"

/* in: (n,) fp32 patterns; out_b, out_h: (n,) bf16 / fp16 patterns */
__global__ void narrow(const float *in, size_t n, unsigned short *out_b, unsigned short *out_h) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out_b[i] = __bfloat16_as_ushort(__float2bfloat16_rn(in[i]));
  out_h[i] = __half_as_ushort(__float2half_rn(in[i]));
}

/* out_b, out_h: (65536,) fp32 patterns of every bf16 / fp16 pattern widened */
__global__ void widen(unsigned int *out_b, unsigned int *out_h) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= 65536) return;
  out_b[i] = __float_as_uint(__bfloat162float(__ushort_as_bfloat16((unsigned short)i)));
  out_h[i] = __float_as_uint(__half2float(__ushort_as_half((unsigned short)i)));
}

static int failures;

static void report(const char *what, uint32_t in, uint32_t cpu, uint32_t gpu) {
  if (failures++ < 20) fprintf(stderr, "%s(0x%08x): CPU 0x%08x, GPU 0x%08x\n", what, in, cpu, gpu);
}

static qt_status run(void) {
  size_t n = half_cases_count();
  uint32_t *cases = (uint32_t *)malloc(n * sizeof *cases);
  unsigned short *gb = (unsigned short *)malloc(n * sizeof *gb);
  unsigned short *gh = (unsigned short *)malloc(n * sizeof *gh);
  static unsigned int wb[65536], wh[65536];
  float *d_in = NULL;
  unsigned short *d_b = NULL, *d_h = NULL;
  unsigned int *d_wb = NULL, *d_wh = NULL;
  qt_status st = QT_OK;
  if (!cases || !gb || !gh) {
    st = qt_fail(QT_ERR_NOMEM, "test_half_cuda: cannot allocate %zu cases", n);
    goto done;
  }
  half_cases_fill(cases);
  QT_CUDA_CHECK_GOTO(st, done, cudaMalloc(&d_in, n * sizeof(float)));
  QT_CUDA_CHECK_GOTO(st, done, cudaMalloc(&d_b, n * sizeof *d_b));
  QT_CUDA_CHECK_GOTO(st, done, cudaMalloc(&d_h, n * sizeof *d_h));
  QT_CUDA_CHECK_GOTO(st, done, cudaMalloc(&d_wb, sizeof wb));
  QT_CUDA_CHECK_GOTO(st, done, cudaMalloc(&d_wh, sizeof wh));
  QT_CUDA_CHECK_GOTO(st, done, cudaMemcpy(d_in, cases, n * sizeof(float), cudaMemcpyHostToDevice));
  narrow<<<(unsigned)((n + 255) / 256), 256>>>(d_in, n, d_b, d_h);
  QT_CUDA_CHECK_LAUNCH_GOTO(st, done);
  widen<<<65536 / 256, 256>>>(d_wb, d_wh);
  QT_CUDA_CHECK_LAUNCH_GOTO(st, done);
  QT_CUDA_CHECK_GOTO(st, done, cudaMemcpy(gb, d_b, n * sizeof *gb, cudaMemcpyDeviceToHost));
  QT_CUDA_CHECK_GOTO(st, done, cudaMemcpy(gh, d_h, n * sizeof *gh, cudaMemcpyDeviceToHost));
  QT_CUDA_CHECK_GOTO(st, done, cudaMemcpy(wb, d_wb, sizeof wb, cudaMemcpyDeviceToHost));
  QT_CUDA_CHECK_GOTO(st, done, cudaMemcpy(wh, d_wh, sizeof wh, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; i++) {
    float x;
    memcpy(&x, &cases[i], sizeof x);
    uint16_t b = qt_bf16_from_f32(x), h = qt_f16_from_f32(x);
    if (b != gb[i]) report("f32->bf16", cases[i], b, gb[i]);
    if (h != gh[i]) report("f32->f16", cases[i], h, gh[i]);
  }
  for (uint32_t i = 0; i < 65536; i++) {
    float b = qt_bf16_to_f32((uint16_t)i), h = qt_f16_to_f32((uint16_t)i);
    uint32_t ub, uh;
    memcpy(&ub, &b, sizeof ub);
    memcpy(&uh, &h, sizeof uh);
    if (ub != wb[i]) report("bf16->f32", i, ub, wb[i]);
    if (uh != wh[i]) report("f16->f32", i, uh, wh[i]);
  }
  printf("compared 2 x %zu narrowing and 2 x 65536 widening conversions\n", n);
done:
  cudaFree(d_in);
  cudaFree(d_b);
  cudaFree(d_h);
  cudaFree(d_wb);
  cudaFree(d_wh);
  free(cases);
  free(gb);
  free(gh);
  return st;
}

int main(void) {
  int rc = ctu_gpu_check("test_half_cuda");
  if (rc != 0) return rc; /* 77: no GPU (skipped); 1: a GPU CUDA cannot use */
  qt_status st = run();
  if (st != QT_OK) {
    fprintf(stderr, "test_half_cuda: %s\n", qt_error_message());
    return 1;
  }
  if (failures) {
    fprintf(stderr, "FAILED: %d conversions differ between the GPU and common/half\n", failures);
    return 1;
  }
  printf("OK: GPU conversions equal common/half bit for bit\n");
  return 0;
}
