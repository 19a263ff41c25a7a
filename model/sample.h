/* model/sample.h — next-token selection for `generate`: transformers' logits
 * processors and warpers, then greedy or Philox sampling.
 *
 * The processors are those transformers' generate applies
 * (generation/utils.py _get_logits_processor, transformers 5.24), in its
 * order, each with its semantics (generation/logits_process.py):
 *   1. repetition_penalty p != 1 (RepetitionPenaltyLogitsProcessor): every
 *      id present in the sequence so far (prompt included), once:
 *      z < 0 ? z * p : z / p;
 *   greedy (temperature 0) stops here: argmax, lowest id on ties (do_sample
 *   false applies no warper). Sampling continues:
 *   2. temperature T != 1 (TemperatureLogitsWarper): z / T;
 *   3. top_k > 0 (TopKLogitsWarper, min_tokens_to_keep 1): k = min(top_k, V);
 *      remove every z < the k-th largest z (ties with it are kept);
 *   4. top_p < 1 (TopPLogitsWarper): sort ascending, cumulative softmax;
 *      remove the sorted prefix whose cumulative probability <= 1 - top_p;
 *      the largest is always kept;
 *   5. min_p > 0 (MinPLogitsWarper): remove p < min_p * max p (p = softmax
 *      of the warped z); the largest is always kept.
 * A removed token gets -inf. Softmaxes and the cumulative sums run in double
 * (torch runs fp32): on a top-p or min-p threshold within rounding of a
 * probability the kept sets may differ; the fixture test avoids such cases.
 *
 * Sampling draws one Philox uniform u in (0, 1] per token (common/philox.h,
 * key seed, stream 0) and returns the first id (in id order) whose
 * cumulative exp(z - max) reaches u * sum: same seed, same ids (torch's
 * multinomial stream is not reproduced).
 *
 * Memory: qt_sampler_init allocates the (V) scratch once; nothing while
 * sampling. */
#ifndef QT_MODEL_SAMPLE_H
#define QT_MODEL_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/philox.h"
#include "common/status.h"

typedef struct {
  double temperature;        /* 0: greedy; else > 0 */
  int64_t top_k;             /* 0: off */
  double top_p;              /* 1: off; (0, 1] */
  double min_p;              /* 0: off; [0, 1] */
  double repetition_penalty; /* 1: off; > 0 */
  uint64_t seed;
} qt_sample_opts;

/* The defaults: greedy, every processor off, seed 0. */
qt_sample_opts qt_sample_opts_default(void);
/* QT_ERR_USAGE naming the flag (--temperature, --top-k, ...) when out of range. */
qt_status qt_sample_opts_check(const qt_sample_opts *o);

typedef struct {
  qt_sample_opts o;
  int64_t V;
  qt_philox rng;
  /* scratch (owned) */
  float *z;       /* (V) top-k selection scratch */
  float *w;       /* (V) qt_sampler_next's processed logits */
  int32_t *idx;   /* (V) candidate ids */
  uint8_t *seen;  /* (V) repetition marks */
} qt_sampler;

qt_status qt_sampler_init(qt_sampler *s, const qt_sample_opts *o, int64_t V);
void qt_sampler_free(qt_sampler *s);

/* Applies the processors (1-5 above; only 1 when greedy) to logits (V) into
 * out (V; may equal logits): removed tokens -inf. hist: the ids so far. */
void qt_sampler_process(qt_sampler *s, const int32_t *hist, int64_t n_hist, const float *logits,
                        float *out);
/* The next id: processors, then argmax (greedy) or one Philox draw. */
int32_t qt_sampler_next(qt_sampler *s, const int32_t *hist, int64_t n_hist, const float *logits);

#endif
