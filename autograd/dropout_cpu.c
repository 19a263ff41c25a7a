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

void qt_op_dropout_mask_cpu(uint8_t *mask, int64_t n, double p, uint64_t seed,
                            uint64_t subsequence) {
  QT_ASSERT(p >= 0.0 && p < 1.0 && n >= 0);
  qt_philox_keep_mask(mask, n, (float)p, seed, subsequence);
}
