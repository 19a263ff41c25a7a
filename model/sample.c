/* model/sample.c — logits processors and sampling (model/sample.h). */
#include "model/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

qt_sample_opts qt_sample_opts_default(void) {
  return (qt_sample_opts){.temperature = 0.0, .top_k = 0, .top_p = 1.0, .min_p = 0.0,
                          .repetition_penalty = 1.0, .seed = 0};
}

qt_status qt_sample_opts_check(const qt_sample_opts *o) {
  if (!isfinite(o->temperature) || o->temperature < 0)
    return qt_fail(QT_ERR_USAGE, "--temperature must be a number >= 0 (0 = greedy), not %g",
                   o->temperature);
  if (o->top_k < 0) return qt_fail(QT_ERR_USAGE, "--top-k must be >= 0 (0 = off), not %lld", (long long)o->top_k);
  if (!(o->top_p > 0 && o->top_p <= 1))
    return qt_fail(QT_ERR_USAGE, "--top-p must be in (0, 1] (1 = off), not %g", o->top_p);
  if (!(o->min_p >= 0 && o->min_p <= 1))
    return qt_fail(QT_ERR_USAGE, "--min-p must be in [0, 1] (0 = off), not %g", o->min_p);
  if (!(o->repetition_penalty > 0) || !isfinite(o->repetition_penalty))
    return qt_fail(QT_ERR_USAGE, "--repetition-penalty must be a number > 0 (1 = off), not %g",
                   o->repetition_penalty);
  return QT_OK;
}

/* Sorting scratch: (value, id) pairs live in idx/z side by side. */
typedef struct {
  float v;
  int32_t i;
} vi_pair;

qt_status qt_sampler_init(qt_sampler *s, const qt_sample_opts *o, int64_t V) {
  memset(s, 0, sizeof *s);
  QT_TRY(qt_sample_opts_check(o));
  QT_ASSERT(V > 0);
  s->o = *o;
  s->V = V;
  s->z = malloc((size_t)V * sizeof(float));
  s->w = malloc((size_t)V * sizeof(float));
  s->idx = malloc((size_t)V * sizeof(vi_pair));
  s->seen = calloc((size_t)V, 1);
  if (!s->z || !s->w || !s->idx || !s->seen) {
    qt_sampler_free(s);
    return qt_fail(QT_ERR_NOMEM, "sample: cannot allocate scratch for %lld logits", (long long)V);
  }
  qt_philox_init(&s->rng, o->seed, 0, 0);
  return QT_OK;
}

void qt_sampler_free(qt_sampler *s) {
  free(s->z);
  free(s->w);
  free(s->idx);
  free(s->seen);
  memset(s, 0, sizeof *s);
}

/* The k-th largest of a[0..n) (1 <= k <= n), reordering a (Hoare quickselect). */
static float kth_largest(float *a, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1, want = k - 1; /* index in descending order */
  while (lo < hi) {
    float piv = a[lo + (hi - lo) / 2];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (a[i] > piv) i++;
      while (a[j] < piv) j--;
      if (i <= j) {
        float t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else return a[want];
  }
  return a[want];
}

static int cmp_pair_asc(const void *pa, const void *pb) {
  const vi_pair *a = pa, *b = pb;
  if (a->v < b->v) return -1;
  if (a->v > b->v) return 1;
  return (a->i > b->i) - (a->i < b->i);
}

void qt_sampler_process(qt_sampler *s, const int32_t *hist, int64_t n_hist, const float *logits,
                        float *out) {
  const qt_sample_opts *o = &s->o;
  int64_t V = s->V;
  if (out != logits) memcpy(out, logits, (size_t)V * sizeof(float));
  /* 1. RepetitionPenaltyLogitsProcessor: each distinct id once, fp32 as torch */
  if (o->repetition_penalty != 1.0) {
    float p = (float)o->repetition_penalty;
    for (int64_t t = 0; t < n_hist; t++) {
      int32_t id = hist[t];
      if (id < 0 || id >= V || s->seen[id]) continue;
      s->seen[id] = 1;
      out[id] = out[id] < 0 ? out[id] * p : out[id] / p;
    }
    for (int64_t t = 0; t < n_hist; t++)
      if (hist[t] >= 0 && hist[t] < V) s->seen[hist[t]] = 0;
  }
  if (o->temperature <= 0) return; /* greedy: no warpers */
  /* 2. TemperatureLogitsWarper */
  if (o->temperature != 1.0) {
    float T = (float)o->temperature;
    for (int64_t v = 0; v < V; v++) out[v] = out[v] / T;
  }
  /* 3. TopKLogitsWarper: scores < topk(scores, k)[-1] removed */
  if (o->top_k > 0 && o->top_k < V) {
    memcpy(s->z, out, (size_t)V * sizeof(float));
    float kth = kth_largest(s->z, V, o->top_k);
    for (int64_t v = 0; v < V; v++)
      if (out[v] < kth) out[v] = -INFINITY;
  }
  /* 4. TopPLogitsWarper: ascending sort, cumulative softmax <= 1 - top_p removed */
  if (o->top_p < 1.0) {
    vi_pair *pr = (vi_pair *)s->idx;
    int64_t n = 0;
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; v++)
      if (out[v] > -INFINITY) {
        pr[n++] = (vi_pair){out[v], (int32_t)v};
        if (out[v] > mx) mx = out[v];
      }
    qsort(pr, (size_t)n, sizeof *pr, cmp_pair_asc);
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += exp((double)pr[j].v - mx);
    double cum = 0, cut = 1.0 - o->top_p;
    for (int64_t j = 0; j < n - 1; j++) { /* the last (largest) is always kept */
      cum += exp((double)pr[j].v - mx) / sum;
      if (cum > cut) break;
      out[pr[j].i] = -INFINITY;
    }
  }
  /* 5. MinPLogitsWarper: p < min_p * max p  <=>  exp(z - max z) < min_p */
  if (o->min_p > 0) {
    double mx = -INFINITY;
    int64_t arg = 0;
    for (int64_t v = 0; v < V; v++)
      if (out[v] > mx) {
        mx = out[v];
        arg = v;
      }
    for (int64_t v = 0; v < V; v++)
      if (v != arg && exp((double)out[v] - mx) < o->min_p) out[v] = -INFINITY;
  }
}

int32_t qt_sampler_next(qt_sampler *s, const int32_t *hist, int64_t n_hist, const float *logits) {
  float *z = s->w;
  int64_t V = s->V;
  qt_sampler_process(s, hist, n_hist, logits, z);
  int32_t best = 0;
  for (int64_t v = 1; v < V; v++)
    if (z[v] > z[best]) best = (int32_t)v;
  if (s->o.temperature <= 0) return best;
  double mx = z[best], sum = 0;
  for (int64_t v = 0; v < V; v++) sum += exp((double)z[v] - mx);
  double r = (double)qt_philox_next_uniform(&s->rng) * sum, acc = 0;
  int32_t last = best;
  for (int64_t v = 0; v < V; v++) {
    if (z[v] == -INFINITY) continue;
    acc += exp((double)z[v] - mx);
    last = (int32_t)v;
    if (r <= acc) return (int32_t)v; /* u in (0, 1]: r > 0 */
  }
  return last; /* rounding: acc ended a hair below r */
}
