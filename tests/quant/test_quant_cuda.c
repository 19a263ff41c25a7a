/* tests/quant/test_quant_cuda.c — every CUDA kernel of quant/ against the CPU
 * reference, bit for bit, on fresh random inputs with odd sizes, every 4-bit
 * blocksize, NaN/inf/zero blocks. Exit 77 (skipped) without a GPU. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cuda_runtime_api.h>

#include "quant/quant.h"
#include "quant_test_util.h"
#include "tests/common/cuda_test_util.h"

#define CK(call)                                                                       \
  do {                                                                                 \
    cudaError_t e_ = (call);                                                           \
    if (e_ != cudaSuccess) fail_msg("%s: %s", #call, cudaGetErrorString(e_));          \
  } while (0)

static void *dev_copy(const void *h, size_t bytes) {
  void *d = NULL;
  CK(cudaMalloc(&d, bytes ? bytes : 1));
  if (h && bytes) CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  return d;
}

static void *host_from(const void *d, size_t bytes) {
  void *h = malloc(bytes ? bytes : 1);
  if (bytes) CK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
  return h;
}

static void fill(qtu_rng *r, float *x, int64_t n) {
  float scale = (float)exp(qtu_rng_normal(r) * 2.0);
  for (int64_t i = 0; i < n; i++) {
    double u = qtu_rng_uniform(r);
    x[i] = u < 0.01 ? 0.0f : u < 0.012 ? NAN : u < 0.013 ? -INFINITY : (float)qtu_rng_normal(r) * scale;
  }
  if (n > 400) memset(x + 256, 0, 128 * sizeof(float));
}

static void test_4bit(void **state) {
  (void)state;
  qtu_rng r;
  qtu_rng_seed(&r, 2024);
  const int64_t sizes[] = {1, 3, 64, 65, 1001, 4097, 100003};
  for (int bs = 32; bs <= 4096; bs *= 2)
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
      for (int t = 0; t < 2; t++) {
        int64_t n = sizes[si], nb = qt_quant_nblocks(n, bs);
        size_t pk = (size_t)((n + 1) / 2);
        float *x = malloc(4 * (size_t)n);
        fill(&r, x, n);
        uint16_t *xb = malloc(2 * (size_t)n);
        float *xw = malloc(4 * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
          xb[i] = qt_quant_f32_to_bf16(x[i]);
          xw[i] = qtu_bf16_to_f32(xb[i]);
        }
        uint8_t *p = malloc(pk);
        float *a = malloc(4 * (size_t)nb);
        float *dx = dev_copy(x, 4 * (size_t)n);
        uint16_t *dxb = dev_copy(xb, 2 * (size_t)n);
        uint8_t *dp = dev_copy(NULL, pk);
        float *da = dev_copy(NULL, 4 * (size_t)nb);
        /* quantize fp32 */
        qt_quant_4bit_quantize_ref((qt_quant_type)t, x, n, bs, p, a);
        assert_int_equal(qt_quant_4bit_quantize_cuda((qt_quant_type)t, dx, n, bs, dp, da, NULL), QT_OK);
        uint8_t *gp = host_from(dp, pk);
        float *ga = host_from(da, 4 * (size_t)nb);
        assert_memory_equal(gp, p, pk);
        assert_memory_equal(ga, a, 4 * (size_t)nb);
        free(gp); free(ga);
        /* dequantize fp32 and bf16 */
        float *d = malloc(4 * (size_t)n);
        uint16_t *db = malloc(2 * (size_t)n);
        qt_quant_4bit_dequantize_ref((qt_quant_type)t, p, a, n, bs, d);
        qt_quant_4bit_dequantize_bf16_ref((qt_quant_type)t, p, a, n, bs, db);
        float *dout = dev_copy(NULL, 4 * (size_t)n);
        uint16_t *doutb = dev_copy(NULL, 2 * (size_t)n);
        assert_int_equal(qt_quant_4bit_dequantize_cuda((qt_quant_type)t, dp, da, n, bs, dout, NULL), QT_OK);
        assert_int_equal(qt_quant_4bit_dequantize_bf16_cuda((qt_quant_type)t, dp, da, n, bs, doutb, NULL), QT_OK);
        float *gd = host_from(dout, 4 * (size_t)n);
        uint16_t *gdb = host_from(doutb, 2 * (size_t)n);
        assert_memory_equal(gd, d, 4 * (size_t)n);
        assert_memory_equal(gdb, db, 2 * (size_t)n);
        /* quantize bf16 input */
        qt_quant_4bit_quantize_ref((qt_quant_type)t, xw, n, bs, p, a);
        assert_int_equal(qt_quant_4bit_quantize_bf16_cuda((qt_quant_type)t, dxb, n, bs, dp, da, NULL), QT_OK);
        gp = host_from(dp, pk);
        ga = host_from(da, 4 * (size_t)nb);
        assert_memory_equal(gp, p, pk);
        assert_memory_equal(ga, a, 4 * (size_t)nb);
        free(gp); free(ga); free(gd); free(gdb);
        CK(cudaFree(dx)); CK(cudaFree(dxb)); CK(cudaFree(dp)); CK(cudaFree(da));
        CK(cudaFree(dout)); CK(cudaFree(doutb));
        free(x); free(xb); free(xw); free(p); free(a); free(d); free(db);
      }
}

static void test_8bit_and_double_quant(void **state) {
  (void)state;
  qtu_rng r;
  qtu_rng_seed(&r, 7);
  float map[256];
  const int64_t bss[] = {1, 7, 256, 2048, 4096};
  const int64_t sizes[] = {1, 255, 257, 9000};
  for (int s = 0; s < 2; s++) {
    qt_quant_dynamic_map(s == 0, map);
    float *dmap = dev_copy(map, 1024);
    for (size_t bi = 0; bi < 5; bi++)
      for (size_t si = 0; si < 4; si++) {
        int64_t n = sizes[si], bs = bss[bi], nb = (n + bs - 1) / bs;
        float *x = malloc(4 * (size_t)n);
        fill(&r, x, n);
        uint8_t *q = malloc((size_t)n);
        float *a = malloc(4 * (size_t)nb), *d = malloc(4 * (size_t)n);
        qt_quant_8bit_quantize_ref(map, x, n, bs, q, a);
        qt_quant_8bit_dequantize_ref(map, q, a, n, bs, d);
        float *dx = dev_copy(x, 4 * (size_t)n), *da = dev_copy(NULL, 4 * (size_t)nb);
        float *dd = dev_copy(NULL, 4 * (size_t)n);
        uint8_t *dq = dev_copy(NULL, (size_t)n);
        assert_int_equal(qt_quant_8bit_quantize_cuda(dmap, dx, n, bs, dq, da, NULL), QT_OK);
        assert_int_equal(qt_quant_8bit_dequantize_cuda(dmap, dq, da, n, bs, dd, NULL), QT_OK);
        uint8_t *gq = host_from(dq, (size_t)n);
        float *ga = host_from(da, 4 * (size_t)nb), *gd = host_from(dd, 4 * (size_t)n);
        assert_memory_equal(gq, q, (size_t)n);
        assert_memory_equal(ga, a, 4 * (size_t)nb);
        assert_memory_equal(gd, d, 4 * (size_t)n);
        free(gq); free(ga); free(gd); free(x); free(q); free(a); free(d);
        CK(cudaFree(dx)); CK(cudaFree(da)); CK(cudaFree(dd)); CK(cudaFree(dq));
      }
    CK(cudaFree(dmap));
  }
  /* Double quantization of an absmax vector with a partial nested block. */
  qt_quant_dynamic_map(true, map);
  float *dmap = dev_copy(map, 1024);
  int64_t nb = 1205, nnb = 5;
  float *am = malloc(4 * (size_t)nb);
  for (int64_t i = 0; i < nb; i++) am[i] = fabsf((float)qtu_rng_normal(&r)) * 0.05f + 0.01f;
  float off = qt_quant_absmax_mean(am, nb);
  uint8_t *q = malloc((size_t)nb);
  float *nested = malloc(4 * (size_t)nnb), *back = malloc(4 * (size_t)nb);
  qt_quant_dq_compress_ref(map, am, nb, off, q, nested);
  qt_quant_dq_decompress_ref(map, q, nested, off, nb, back);
  float *dam = dev_copy(am, 4 * (size_t)nb), *dn = dev_copy(NULL, 4 * (size_t)nnb);
  float *dback = dev_copy(NULL, 4 * (size_t)nb);
  uint8_t *dq = dev_copy(NULL, (size_t)nb);
  assert_int_equal(qt_quant_dq_compress_cuda(dmap, dam, nb, off, dq, dn, NULL), QT_OK);
  assert_int_equal(qt_quant_dq_decompress_cuda(dmap, dq, dn, off, nb, dback, NULL), QT_OK);
  uint8_t *gq = host_from(dq, (size_t)nb);
  float *gn = host_from(dn, 4 * (size_t)nnb), *gb = host_from(dback, 4 * (size_t)nb);
  assert_memory_equal(gq, q, (size_t)nb);
  assert_memory_equal(gn, nested, 4 * (size_t)nnb);
  assert_memory_equal(gb, back, 4 * (size_t)nb);
  free(gq); free(gn); free(gb); free(am); free(q); free(nested); free(back);
  CK(cudaFree(dmap)); CK(cudaFree(dam)); CK(cudaFree(dn)); CK(cudaFree(dback)); CK(cudaFree(dq));
}

int main(void) {
  int rc = ctu_gpu_check("test_quant_cuda");
  if (rc != 0) return rc; /* 77: no GPU (skipped); 1: a GPU CUDA cannot use */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_4bit),
      cmocka_unit_test(test_8bit_and_double_quant),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
