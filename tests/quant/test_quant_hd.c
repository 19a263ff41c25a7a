/* quant/quant_hd.h, the per-thread math of the GPU's vectorised 4-bit -> bf16
 * dequantization, against the CPU reference qt_quant_4bit_dequantize_bf16_ref:
 * every group of 16 codes of random NF4 and FP4 tensors (quantized by the
 * reference from normal values, with all-zero and tiny blocks), for each
 * blocksize bitsandbytes accepts, bit for bit. test_quant_hd_host.cu compiles
 * this file with nvcc (the header as __host__ __device__ code). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/philox.h"
#ifdef __cplusplus /* quant.h has no C++ guards of its own (quant_cuda.cu wraps it too) */
extern "C" {
#endif
#include "quant/quant.h"
#ifdef __cplusplus
}
#endif
#include "quant/quant_hd.h"

int main(void) {
  const int64_t n = 4096;
  float *x = (float *)malloc((size_t)n * sizeof *x);
  uint8_t *packed = (uint8_t *)malloc((size_t)n / 2);
  float *absmax = (float *)malloc((size_t)n / 32 * sizeof *absmax);
  uint16_t *ref = (uint16_t *)malloc((size_t)n * sizeof *ref);
  if (!x || !packed || !absmax || !ref) return 1;
  qt_philox rng;
  qt_philox_init(&rng, 99, 0, 0);
  int64_t groups = 0, bad = 0;
  for (int t = 0; t < 2; t++) {
    qt_quant_type type = t == 0 ? QT_QUANT_NF4 : QT_QUANT_FP4;
    const float *table = qt_quant_4bit_table(type);
    for (int bs = 32; bs <= 4096; bs *= 2) {
      for (int64_t i = 0; i < n; i++) x[i] = qt_philox_next_normal(&rng) * (i < 2 * bs ? 1e-30f : 3.0f);
      for (int64_t i = 0; i < 32 && bs * 3 <= n; i++) x[bs * 2 + i] = 0.0f; /* part of a block all zero */
      qt_quant_4bit_quantize_ref(type, x, n, bs, packed, absmax);
      qt_quant_4bit_dequantize_bf16_ref(type, packed, absmax, n, bs, ref);
      for (int64_t g = 0; g < n / 16; g++, groups++) {
        uint16_t out[16];
        qt_quant_dequant16_bf16_hd(packed + 8 * g, table, absmax[(16 * g) / bs], out);
        for (int k = 0; k < 16; k++)
          if (out[k] != ref[16 * g + k]) {
            if (bad++ < 10)
              fprintf(stderr, "%s blocksize %d element %lld: 0x%04x, reference 0x%04x\n", qt_quant_type_name(type), bs,
                      (long long)(16 * g + k), out[k], ref[16 * g + k]);
          }
      }
    }
  }
  printf("%lld groups of 16 codes, %lld values differ\n", (long long)groups, (long long)bad);
  free(x);
  free(packed);
  free(absmax);
  free(ref);
  return bad ? 1 : 0;
}
