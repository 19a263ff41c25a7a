/* optim/schedule.c — learning-rate multipliers, transcribed from transformers
 * optimization.py (v5.24): _get_constant_schedule_with_warmup_lr_lambda,
 * _get_linear_schedule_with_warmup_lr_lambda and
 * _get_cosine_schedule_with_warmup_lr_lambda (the min_lr_rate form used by
 * get_cosine_with_min_lr_schedule_with_warmup and, with min_lr_rate = 0, by
 * get_cosine_schedule_with_warmup), num_cycles = 0.5. Same double operations
 * in the same order, so the values agree with Python's bit for bit. */
#include <math.h>
#include <string.h>

#include "optim/optim.h"

/* math.pi */
static const double kPi = 3.141592653589793;

double qt_lr_schedule_factor(const qt_lr_schedule *s, int64_t step) {
  QT_ASSERT(s && step >= 0 && s->warmup_steps >= 0);
  const int64_t warm = s->warmup_steps, total = s->total_steps;
  if (step < warm) {
    /* constant: float(step) / float(max(1.0, warm)); linear/cosine: max(1, warm) */
    return (double)step / (double)(warm > 1 ? warm : 1);
  }
  switch (s->kind) {
  case QT_LR_CONSTANT:
    return 1.0;
  case QT_LR_LINEAR: {
    int64_t den = total - warm;
    double f = (double)(total - step) / (double)(den > 1 ? den : 1);
    return f > 0.0 ? f : 0.0;
  }
  case QT_LR_COSINE: {
    int64_t den = total - warm;
    double progress = (double)(step - warm) / (double)(den > 1 ? den : 1);
    double factor = 0.5 * (1.0 + cos(kPi * 0.5 * 2.0 * progress));
    factor = factor * (1.0 - s->min_ratio) + s->min_ratio;
    return factor > 0.0 ? factor : 0.0;
  }
  }
  QT_ASSERTF(0, "unknown lr schedule kind %d", (int)s->kind);
  return 0.0;
}

static const char *const kNames[] = {"constant", "linear", "cosine"};

const char *qt_lr_kind_name(qt_lr_kind k) {
  QT_ASSERT((int)k >= 0 && (int)k < 3);
  return kNames[k];
}

bool qt_lr_kind_from_name(const char *name, qt_lr_kind *out) {
  for (int i = 0; i < 3; i++) {
    if (strcmp(name, kNames[i]) == 0) {
      *out = (qt_lr_kind)i;
      return true;
    }
  }
  return false;
}
