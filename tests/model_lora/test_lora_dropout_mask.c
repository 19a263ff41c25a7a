/* qt_lora_dropout_mask (lora/lora.h) hands out exactly the dropout mask the
 * tape hook uses for the CPU recording: for every adapted (layer, proj) of
 * stories260K, several steps and token counts, the mask the hook
 * (qt_lora_adapter(l).branch, what qt_model_* calls while recording) gives
 * the tape is compared byte for byte with the function's, and keep_scale
 * with the hook's. It also checks what a wrong key would get wrong: masks of
 * different steps and of different modules differ, the kept fraction is
 * 1 - p within 5 standard deviations, and with training off or dropout 0
 * there is no mask. The same for qt_lora_dropout_stream (what the GPU path
 * hands its kernels): its key, subsequence and threshold through
 * common/philox_hd.h's qt_dropout_keep_hd (the kernels' per-element test,
 * here compiled as C) give every byte of the function's mask, and its
 * has / keep_scale agree with it. Label unit; CPU only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/philox.h"
#include "common/philox_hd.h"
#include "lora/lora.h"
#include "model/model.h"

#define STORIES QLORA_SHARED_DIR "/data/stories260K"

static int failures;

#define OK(call)                                                                         \
  do {                                                                                   \
    qt_status s_ = (call);                                                               \
    if (s_ != QT_OK) {                                                                   \
      fprintf(stderr, "%s:%d: %s failed (status %d)\n", __FILE__, __LINE__, #call, (int)s_); \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

static void check(int cond, const char *what) {
  if (!cond) {
    fprintf(stderr, "FAIL: %s\n", what);
    failures++;
  }
}

/* qt_lora_dropout_stream of (layer, proj) agrees with qt_lora_dropout_mask's
 * has / keep_scale and, through qt_dropout_keep_hd, with its n mask bytes. */
static int64_t stream_mismatches;
static void check_stream(const qt_lora *l, int layer, qt_proj p, const uint8_t *mask, int64_t n,
                         bool has_mask, double ks_mask) {
  uint64_t key = 1, sub = 1;
  int64_t T = 0;
  double ks = 0;
  bool has = !has_mask;
  OK(qt_lora_dropout_stream(l, layer, p, &key, &sub, &T, &ks, &has));
  check(has == has_mask && ks == ks_mask,
        "qt_lora_dropout_stream: has and keep_scale as the mask's");
  if (!has) {
    check(key == 0 && sub == 0 && T == -1 && ks == 1.0, "no stream: zero key, threshold -1");
    return;
  }
  check(T >= 0 && T < (int64_t)UINT32_MAX, "threshold inside the word range for 0 < p < 1");
  for (int64_t i = 0; i < n; i++)
    if (qt_dropout_keep_hd((uint64_t)i, key, sub, T) != mask[i]) stream_mismatches++;
}

/* in features of (layer, proj) */
static int64_t in_features(const qt_model *m, int layer, qt_proj p) {
  return m->layers[layer].proj[p].in;
}

int main(void) {
  qt_model_load_opts lo = {.quant = QT_MODEL_QUANT_NONE, .threads = 1};
  qt_model *m = NULL;
  OK(qt_model_load(STORIES, &lo, &m));
  const double p = 0.3;
  /* all but k_proj adapted, so an unadapted module is covered too */
  qt_lora_config c = {.r = 4, .alpha = 8, .dropout = p, .targets = qt_lora_resolve_targets(m, QT_LORA_ALL_LINEAR) &
                      ~(1u << QT_PROJ_K), .seed = 1234};
  qt_lora *l = NULL;
  OK(qt_lora_init(m, &c, &l));
  enum { MAX_N = 2 * 64 };
  qt_model_tape_opts to = {.max_B = 2, .max_T = 64, .max_lora_rank = 4};
  qt_model_tape *mt = NULL;
  OK(qt_model_tape_init(m, &to, &mt));
  OK(qt_lora_attach(l, qt_model_tape_get(mt)));
  qt_tape *tape = qt_model_tape_get(mt);
  qt_model_adapter ad = qt_lora_adapter(l);

  int64_t max_in = 0;
  for (int64_t y = 0; y < m->L; y++)
    for (int q = 0; q < QT_PROJ_COUNT; q++)
      if (in_features(m, (int)y, (qt_proj)q) > max_in) max_in = in_features(m, (int)y, (qt_proj)q);
  uint8_t *mine = malloc((size_t)(MAX_N * max_in));
  uint8_t *first = malloc((size_t)(MAX_N * max_in)); /* step 0's mask of (0, q_proj) */
  uint8_t *prev = malloc((size_t)(MAX_N * max_in));  /* the previous module's mask */
  if (!mine || !first || !prev) return 1;

  static const uint64_t steps[3] = {0, 1, 977};
  static const int64_t ns[3] = {MAX_N, 37, 1};
  int64_t compared = 0, kept = 0, drawn = 0, first_n = 0, prev_n = 0;
  for (int si = 0; si < 3; si++) {
    qt_lora_set_step(l, steps[si], true);
    for (int64_t y = 0; y < m->L; y++)
      for (int q = 0; q < QT_PROJ_COUNT; q++) {
        if (!qt_model_has_proj(m, (qt_proj)q)) continue; /* llama has no fused qkv / gate_up */
        int64_t N = ns[(si + (int)y + q) % 3], In = in_features(m, (int)y, (qt_proj)q);
        qt_tape_lora br;
        bool has_hook = false, has = false;
        double ks = 0;
        OK(ad.branch(ad.ctx, tape, (int)y, (qt_proj)q, N, &br, &has_hook));
        OK(qt_lora_dropout_mask(l, (int)y, (qt_proj)q, N, mine, &ks, &has));
        check_stream(l, (int)y, (qt_proj)q, mine, N * In, has, ks);
        if (q == QT_PROJ_K) {
          check(!has_hook && !has, "no mask for an unadapted module");
          check(ks == 1.0, "keep_scale 1 without a mask");
          continue;
        }
        check(has_hook && has && br.mask, "a mask for an adapted module while training");
        if (!has || !br.mask) continue;
        check(ks == br.keep_scale && fabs(ks - 1.0 / (1.0 - p)) < 1e-15,
              "keep_scale equals the hook's, 1 / (1 - p)");
        if (memcmp(mine, br.mask, (size_t)(N * In)) != 0) {
          fprintf(stderr, "FAIL: step %llu layer %lld proj %d N %lld: mask differs from the "
                  "hook's\n", (unsigned long long)steps[si], (long long)y, q, (long long)N);
          failures++;
        }
        compared++;
        for (int64_t i = 0; i < N * In; i++) {
          check(mine[i] <= 1, "mask values are 0/1");
          kept += mine[i];
        }
        drawn += N * In;
        /* a module's mask differs from the previous module's (same step) */
        int64_t cmp = N * In < prev_n ? N * In : prev_n;
        if (cmp >= 64) check(memcmp(mine, prev, (size_t)cmp) != 0, "modules draw different masks");
        memcpy(prev, mine, (size_t)(N * In));
        prev_n = N * In;
        if (si == 0 && y == 0 && q == QT_PROJ_Q) {
          memcpy(first, mine, (size_t)(N * In));
          first_n = N * In;
        }
        if (si > 0 && y == 0 && q == QT_PROJ_Q) {
          int64_t n2 = N * In < first_n ? N * In : first_n;
          check(n2 < 64 || memcmp(mine, first, (size_t)n2) != 0, "steps draw different masks");
        }
      }
    prev_n = 0;
  }
  double frac = (double)kept / (double)drawn, sd = sqrt(p * (1 - p) / (double)drawn);
  printf("%lld masks compared with the hook's; kept %.5f of %lld (expected %.5f +- %.5f)\n",
         (long long)compared, frac, (long long)drawn, 1 - p, sd);
  check(compared == 3 * m->L * QT_PROJ_DOWN, "every adapted module compared"); /* seven, k_proj not */
  check(fabs(frac - (1 - p)) < 5 * sd, "kept fraction 1 - p within 5 sigma");

  /* The hook keeps a module's mask while the step and N stay (a checkpointed
   * layer recorded again in backward): asked again it hands the same bytes; a
   * new step, a new N, and a return to the old step each draw the right mask. */
  {
    const int64_t In = in_features(m, 1, QT_PROJ_UP);
    const uint64_t seq[5] = {41, 41, 42, 41, 41};
    const int64_t nseq[5] = {MAX_N, MAX_N, MAX_N, MAX_N, 37};
    for (int k = 0; k < 5; k++) {
      qt_lora_set_step(l, seq[k], true);
      qt_tape_lora br;
      bool has_hook = false, has = false;
      double ks = 0;
      OK(ad.branch(ad.ctx, tape, 1, QT_PROJ_UP, nseq[k], &br, &has_hook));
      OK(qt_lora_dropout_mask(l, 1, QT_PROJ_UP, nseq[k], mine, &ks, &has));
      check(has_hook && has && br.mask, "a mask while training");
      check_stream(l, 1, QT_PROJ_UP, mine, nseq[k] * In, has, ks);
      if (has && br.mask && memcmp(mine, br.mask, (size_t)(nseq[k] * In)) != 0) {
        fprintf(stderr, "FAIL: repeated ask %d (step %llu, N %lld): the hook's mask is stale\n", k,
                (unsigned long long)seq[k], (long long)nseq[k]);
        failures++;
      }
    }
  }

  /* training off (model.eval()): no mask from either */
  qt_lora_set_step(l, 5, false);
  {
    qt_tape_lora br;
    bool has_hook = true, has = true;
    double ks = 0;
    OK(ad.branch(ad.ctx, tape, 0, QT_PROJ_Q, 8, &br, &has_hook));
    OK(qt_lora_dropout_mask(l, 0, QT_PROJ_Q, 8, mine, &ks, &has));
    check(has_hook && br.mask == NULL && !has && ks == 1.0, "no mask with training off");
    check_stream(l, 0, QT_PROJ_Q, mine, 0, false, 1.0);
  }
  /* out-of-range module refused */
  {
    bool has = true;
    double ks = 0;
    check(qt_lora_dropout_mask(l, (int)m->L, QT_PROJ_Q, 8, mine, &ks, &has) == QT_ERR_INVALID,
          "layer out of range refused");
    uint64_t key, sub;
    int64_t T;
    check(qt_lora_dropout_stream(l, -1, QT_PROJ_Q, &key, &sub, &T, &ks, &has) == QT_ERR_INVALID,
          "stream: layer out of range refused");
  }
  free(mine);
  free(first);
  free(prev);
  qt_model_tape_free(&mt);
  qt_lora_free(&l);

  /* dropout 0: no mask even while training */
  qt_lora_config c0 = c;
  c0.dropout = 0;
  OK(qt_lora_init(m, &c0, &l));
  qt_lora_set_step(l, 3, true);
  {
    uint8_t b[8];
    bool has = true;
    double ks = 0;
    OK(qt_lora_dropout_mask(l, 0, QT_PROJ_Q, 1, b, &ks, &has));
    check(!has && ks == 1.0, "no mask with dropout 0");
    check_stream(l, 0, QT_PROJ_Q, b, 0, false, 1.0);
  }
  qt_lora_free(&l);
  qt_model_free(&m);
  printf("qt_lora_dropout_stream + qt_dropout_keep_hd: %lld bytes differ from the masks\n",
         (long long)stream_mismatches);
  check(stream_mismatches == 0, "the stream reproduces every mask byte");
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
