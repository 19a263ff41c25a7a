/* optim/clip.c — global gradient norm, clipping coefficient, non-finite policy. */
#include <math.h>
#include <string.h>

#include "common/half.h"
#include "optim/optim.h"

/* Chunk of the norm reduction: each chunk is summed sequentially in double and
 * the chunk sums are added in index order, so the result does not depend on
 * the number of threads. */
enum { NORM_CHUNK = 1 << 16 };

static double chunk_sumsq(const qt_tensor *t, int64_t begin, int64_t end) {
  double s = 0.0;
  if (t->dtype == QT_F32) {
    const float *x = (const float *)t->data;
    for (int64_t i = begin; i < end; i++) s += (double)x[i] * (double)x[i];
  } else {
    const uint16_t *x = (const uint16_t *)t->data;
    for (int64_t i = begin; i < end; i++) {
      double v = qt_bf16_to_f32(x[i]);
      s += v * v;
    }
  }
  return s;
}

double qt_optim_global_norm(const qt_tensor *tensors, size_t n) {
  double total = 0.0;
  for (size_t k = 0; k < n; k++) {
    const qt_tensor *t = &tensors[k];
    QT_ASSERTF(t->dtype == QT_F32 || t->dtype == QT_BF16, "gradient %zu: dtype %s", k,
               qt_dtype_name(t->dtype));
    QT_ASSERT(t->device == QT_DEV_CPU);
    int64_t numel = qt_tensor_numel(t);
    int64_t nchunks = (numel + NORM_CHUNK - 1) / NORM_CHUNK;
    double sum = 0.0;
    if (nchunks <= 1) {
      sum = chunk_sumsq(t, 0, numel);
    } else {
      double partial[64];
      /* At most 64 chunks per pass keeps the partial sums on the stack. */
      for (int64_t c0 = 0; c0 < nchunks; c0 += 64) {
        int64_t cn = nchunks - c0 < 64 ? nchunks - c0 : 64;
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < cn; c++) {
          int64_t b = (c0 + c) * NORM_CHUNK;
          int64_t e = b + NORM_CHUNK < numel ? b + NORM_CHUNK : numel;
          partial[c] = chunk_sumsq(t, b, e);
        }
        for (int64_t c = 0; c < cn; c++) sum += partial[c];
      }
    }
    total += sum;
  }
  return sqrt(total);
}

float qt_optim_clip_coef(double norm, double max_norm) {
  if (!(max_norm > 0.0)) return 1.0f;
  /* torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6),
   * clamped to max 1.0, then grads *= clip_coef_clamped. */
  double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? (float)c : 1.0f;
}

qt_status qt_optim_nonfinite_observe(qt_optim_nonfinite *s, double norm, bool *skip) {
  if (isfinite(norm)) {
    s->consecutive = 0;
    *skip = false;
    return QT_OK;
  }
  *skip = true;
  s->consecutive++;
  s->skipped_total++;
  if (s->consecutive > s->max_consecutive) {
    return qt_fail(QT_ERR_NUMERIC,
                   "non-finite gradients in %d optimizer steps in a row (%lld skipped in all); "
                   "lower training.learning_rate, set training.max_grad_norm, or check the data",
                   s->consecutive, (long long)s->skipped_total);
  }
  return QT_OK;
}
