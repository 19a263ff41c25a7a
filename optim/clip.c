/* optim/clip.c — global gradient norm, clipping coefficient, non-finite policy. */
#include <math.h>

#include "optim/optim.h"
#include "optim/optim_hd.h"

/* One chunk of the norm (optim_hd.h): elements b..e-1 of tensor t. */
typedef struct {
  const qt_tensor *t;
  int64_t b, e;
} norm_chunk;

static double chunk_sumsq(const norm_chunk *c) {
  if (c->t->dtype == QT_F32)
    return qt_optim_sumsq_f32((const float *)c->t->data + c->b, c->e - c->b);
  return qt_optim_sumsq_bf16((const uint16_t *)c->t->data + c->b, c->e - c->b);
}

/* The sum of one group of chunks: partials in parallel, added in chunk order. */
static double group_sum(const norm_chunk *chunks, double *partial, int n) {
#pragma omp parallel for schedule(static) if (n >= 32)
  for (int c = 0; c < n; c++) partial[c] = chunk_sumsq(&chunks[c]);
  return qt_optim_sum_ordered(partial, n);
}

double qt_optim_global_norm(const qt_tensor *tensors, size_t n) {
  /* The fixed order of optim_hd.h (chunks of QT_OPTIM_NORM_CHUNK across all
   * tensors, groups of QT_OPTIM_NORM_GROUP chunks), which clip_cuda.cu follows
   * too: the result does not depend on the thread count or the backend. */
  norm_chunk chunks[QT_OPTIM_NORM_GROUP]; /* 24 KiB */
  double partial[QT_OPTIM_NORM_GROUP];
  double total = 0.0;
  int have = 0;
  for (size_t k = 0; k < n; k++) {
    const qt_tensor *t = &tensors[k];
    QT_ASSERTF(t->dtype == QT_F32 || t->dtype == QT_BF16, "gradient %zu: dtype %s", k,
               qt_dtype_name(t->dtype));
    QT_ASSERT(t->device == QT_DEV_CPU);
    int64_t numel = qt_tensor_numel(t);
    for (int64_t b = 0; b < numel; b += QT_OPTIM_NORM_CHUNK) {
      chunks[have].t = t;
      chunks[have].b = b;
      chunks[have].e = numel - b < QT_OPTIM_NORM_CHUNK ? numel : b + QT_OPTIM_NORM_CHUNK;
      if (++have == QT_OPTIM_NORM_GROUP) {
        total += group_sum(chunks, partial, have);
        have = 0;
      }
    }
  }
  if (have) total += group_sum(chunks, partial, have);
  return sqrt(total);
}

float qt_optim_clip_coef(double norm, double max_norm) {
  /* torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6),
   * clamped to max 1.0, then grads *= clip_coef_clamped. */
  return qt_optim_clip_coef_of(norm, max_norm);
}

qt_status qt_optim_nonfinite_observe(qt_optim_nonfinite *s, double norm, bool *skip) {
  if (!qt_optim_norm_skips(norm)) {
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
