/* common/half against CUDA's own conversion functions (cuda_bf16.h,
 * cuda_fp16.h) compiled for the host: __float2bfloat16_rn, __float2half_rn,
 * __bfloat162float, __half2float are __host__ __device__ and their host code is
 * NVIDIA's reference for what the GPU's cvt instructions produce. No GPU needed,
 * so this is a unit test, built whenever the CUDA backend is. Bit for bit over
 * all 65536 16-bit patterns and several million fp32 patterns around every
 * rounding boundary (half_cases.c). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "half_cases.h"

static int failures;

static void report(const char *what, uint32_t in, uint32_t ours, uint32_t cuda) {
  if (failures++ < 20) fprintf(stderr, "%s(0x%08x): ours 0x%08x, CUDA 0x%08x\n", what, in, ours, cuda);
}

static uint32_t f32bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

int main(void) {
  for (uint32_t h = 0; h < 65536; h++) {
    __nv_bfloat16_raw br;
    br.x = (unsigned short)h;
    __half_raw hr;
    hr.x = (unsigned short)h;
    uint32_t want_b = f32bits(__bfloat162float(__nv_bfloat16(br)));
    uint32_t want_h = f32bits(__half2float(__half(hr)));
    uint32_t got_b = f32bits(qt_bf16_to_f32((uint16_t)h));
    uint32_t got_h = f32bits(qt_f16_to_f32((uint16_t)h));
    if (got_b != want_b) report("bf16->f32", h, got_b, want_b);
    if (got_h != want_h) report("f16->f32", h, got_h, want_h);
  }
  size_t n = half_cases_count();
  uint32_t *cases = (uint32_t *)malloc(n * sizeof *cases);
  if (!cases) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  half_cases_fill(cases);
  for (size_t i = 0; i < n; i++) {
    float x;
    memcpy(&x, &cases[i], sizeof x);
    __nv_bfloat16_raw b = __nv_bfloat16_raw(__float2bfloat16_rn(x));
    __half_raw h = __half_raw(__float2half_rn(x));
    uint16_t got_b = qt_bf16_from_f32(x), got_h = qt_f16_from_f32(x);
    if (got_b != b.x) report("f32->bf16", cases[i], got_b, b.x);
    if (got_h != h.x) report("f32->f16", cases[i], got_h, h.x);
  }
  free(cases);
  if (failures) {
    fprintf(stderr, "FAILED: %d conversions differ from CUDA's host conversion functions\n", failures);
    return 1;
  }
  printf("OK: 2 x 65536 16->32 and 2 x %zu 32->16 conversions equal CUDA's bit for bit\n", n);
  return 0;
}
