/* autograd/dropout_cpu.c — dropout keep masks from the counter-based Philox
 * stream of common/philox.h (the same words cuRAND's curand_init(seed,
 * subsequence, 0) + curand_uniform produce), so a mask is a pure function of
 * (seed, subsequence, element index): a checkpointed layer recomputes the same
 * mask, the thread count does not matter, and a GPU kernel can draw the same
 * bits. */
#include <stddef.h>

#include "autograd/ops.h"
#include "common/philox.h"
#include "common/status.h"

enum { DROPOUT_CHUNK = 4096 }; /* elements per OpenMP task; a multiple of 4 (one Philox block) */

void qt_op_dropout_mask_cpu(uint8_t *mask, int64_t n, double p, uint64_t seed,
                            uint64_t subsequence) {
  QT_ASSERT(p >= 0.0 && p < 1.0 && n >= 0);
  float pf = (float)p;
  int64_t chunks = (n + DROPOUT_CHUNK - 1) / DROPOUT_CHUNK;
#pragma omp parallel for if (n >= 8 * DROPOUT_CHUNK)
  for (int64_t c = 0; c < chunks; c++) {
    qt_philox s;
    qt_philox_init(&s, seed, subsequence, (uint64_t)c * DROPOUT_CHUNK);
    int64_t end = (c + 1) * DROPOUT_CHUNK < n ? (c + 1) * DROPOUT_CHUNK : n;
    /* keep with probability 1 - p: curand_uniform is in (0, 1] */
    for (int64_t i = c * DROPOUT_CHUNK; i < end; i++) mask[i] = qt_philox_next_uniform(&s) > pf;
  }
}
