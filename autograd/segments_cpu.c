/* autograd/segments_cpu.c — per-token document ids and positions from segment
 * starts: the cu_seqlens convention of flash-attention's varlen kernels, which
 * transformers' DataCollatorWithFlattening feeds (positions restart at 0 in
 * every document). The attention op takes document ids; this converts. */
#include <stddef.h>

#include "autograd/ops.h"
#include "common/status.h"

qt_status qt_op_doc_ids_from_starts(int32_t *doc, int32_t *pos, const int64_t *starts,
                                    int64_t n_docs, int64_t N) {
  if (n_docs < 1 || starts[0] != 0 || starts[n_docs] != N)
    return qt_fail(QT_ERR_INVALID,
                   "document starts: need starts[0] = 0 and starts[%lld] = %lld tokens, got %lld and %lld",
                   (long long)n_docs, (long long)N, n_docs >= 1 ? (long long)starts[0] : -1LL,
                   n_docs >= 1 ? (long long)starts[n_docs] : -1LL);
  for (int64_t d = 0; d < n_docs; d++) {
    if (starts[d + 1] <= starts[d])
      return qt_fail(QT_ERR_INVALID, "document starts: document %lld is empty or starts go back (%lld, %lld)",
                     (long long)d, (long long)starts[d], (long long)starts[d + 1]);
    if (d > INT32_MAX || starts[d + 1] - starts[d] > INT32_MAX)
      return qt_fail(QT_ERR_INVALID, "document starts: document %lld too long for int32 positions",
                     (long long)d);
    for (int64_t n = starts[d]; n < starts[d + 1]; n++) {
      doc[n] = (int32_t)d;
      pos[n] = (int32_t)(n - starts[d]);
    }
  }
  return QT_OK;
}
