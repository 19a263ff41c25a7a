/* The GPU kernel of the NCCL gradient reduction (dist_cuda.cu
 * ordered_sum_kernel, through qt_dist_cuda_ordered_sum) against its CPU twin
 * qt_dist_ordered_sum: the same additions in double in rank order, rounded
 * once, so the bits must be equal; world sizes 1-8, slice lengths around the
 * 256-thread blocks, values of mixed signs and magnitudes where the order of
 * the additions matters (checked: a reversed order changes some sums). Label
 * cuda; exits 77 without a GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/philox.h"
#include "dist/dist.h"
#include "tests/common/cuda_test_util.h"

int main(void) {
  int rc = ctu_gpu_check("test_dist_cuda");
  if (rc != 0) return rc;
  const int worlds[] = {1, 2, 3, 8};
  const int64_t ms[] = {1, 255, 256, 257, 100003};
  qt_philox g;
  qt_philox_init(&g, 2026, 12, 0);
  int failures = 0;
  long long order_matters = 0;
  for (size_t a = 0; a < sizeof worlds / sizeof worlds[0]; a++)
    for (size_t b = 0; b < sizeof ms / sizeof ms[0]; b++) {
      int W = worlds[a];
      int64_t m = ms[b];
      size_t nin = (size_t)W * (size_t)m;
      float *recv = malloc(nin * sizeof *recv), *cpu = malloc((size_t)m * sizeof *cpu),
            *gpu = malloc((size_t)m * sizeof *gpu);
      if (!recv || !cpu || !gpu) return 1;
      for (size_t i = 0; i < nin; i++) /* sign and a magnitude of 2^-20 .. 2^20 */
        recv[i] = (qt_philox_next_uniform(&g) - 0.5f) * ldexpf(1.0f, (int)(qt_philox_next_u32(&g) % 41) - 20);
      qt_dist_ordered_sum(recv, W, m, cpu);
      memset(gpu, 0xFF, (size_t)m * sizeof *gpu);
      qt_status s = qt_dist_cuda_ordered_sum(recv, W, m, gpu);
      if (s != QT_OK) {
        fprintf(stderr, "FAIL: world %d m %lld: %s\n", W, (long long)m, qt_error_message());
        return 1;
      }
      if (memcmp(cpu, gpu, (size_t)m * sizeof *cpu) != 0) {
        fprintf(stderr, "FAIL: world %d m %lld: GPU sums differ from the CPU's\n", W, (long long)m);
        failures++;
      }
      for (int64_t k = 0; k < m && W > 2; k++) { /* float sums in reverse order, for the record */
        float rev = 0;
        for (int j = W - 1; j >= 0; j--) rev += recv[(size_t)j * (size_t)m + (size_t)k];
        if (rev != cpu[k]) order_matters++;
      }
      free(recv);
      free(cpu);
      free(gpu);
    }
  printf("%lld sums where a float reverse-order sum would differ\n", order_matters);
  if (order_matters == 0) {
    fprintf(stderr, "FAIL: the data never exercise the summation order\n");
    failures++;
  }
  if (failures) return 1;
  printf("test_dist_cuda: GPU ordered sums equal the CPU's bit for bit\n");
  return 0;
}
