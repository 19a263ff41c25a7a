/* qt_model_cuda_plan_bytes (model/model_cuda.h) without a GPU: the context's
 * setup run in its measuring mode sizes every buffer and allocates nothing, so
 * the trainer can print and check its device memory plan before touching the
 * GPU. Checked here on stories260K (NF4, double quantization): it runs with no
 * device at all; the dropout scratch adds exactly (tokens x widest input)
 * bf16; the activations grow linearly with the rows; the weights' part is at
 * least the 4-bit codes and bf16 copies of the dense tensors; arguments are
 * checked. tests/model_lora/test_model_cuda.c checks on a GPU that the plan
 * equals what a context then holds. */
#include <stdio.h>
#include <stdlib.h>

#include "model/model.h"
#include "model/model_cuda.h"
#include "tests/common/cuda_test_util.h"

static int failures;

static void check(int cond, const char *what) {
  if (!cond) {
    fprintf(stderr, "FAIL: %s\n", what);
    failures++;
  }
}

static size_t plan_ck(const qt_model *m, int64_t B, int64_t T, int64_t r, bool ckpt, bool dropout) {
  size_t bytes = 0;
  qt_status s = qt_model_cuda_plan_bytes(m, B, T, r, ckpt, dropout, &bytes);
  if (s != QT_OK) {
    fprintf(stderr, "plan %lld x %lld r %lld: %s\n", (long long)B, (long long)T, (long long)r, qt_error_message());
    exit(1);
  }
  return bytes;
}

static size_t plan(const qt_model *m, int64_t B, int64_t T, int64_t r, bool dropout) {
  return plan_ck(m, B, T, r, false, dropout);
}

int main(void) {
  char stories[4096];
  ctu_path(stories, sizeof stories, ctu_shared_dir(), "data/stories260K");
  qt_model_load_opts lo = {.quant = QT_MODEL_QUANT_NF4, .double_quant = true, .blocksize = 64, .threads = 1};
  qt_model *m = NULL;
  if (qt_model_load(stories, &lo, &m) != QT_OK) {
    fprintf(stderr, "%s: %s\n", stories, qt_error_message());
    return 1;
  }
  int64_t max_in = m->C > m->F ? m->C : m->F;
  if (m->H * m->D > max_in) max_in = m->H * m->D;
  size_t p = plan(m, 2, 64, 4, false), pd = plan(m, 2, 64, 4, true);
  printf("stories260K, 2 x 64 tokens, r 4: %zu bytes planned, %zu with dropout\n", p, pd);
  check(pd - p == (size_t)(2 * 64 * max_in * 2), "dropout adds one (tokens x widest input) bf16 scratch");
  /* rows of 256 tokens: the cross-entropy chunk (256 rows) is the same for all */
  size_t a1 = plan(m, 1, 256, 4, false), a2 = plan(m, 2, 256, 4, false), a3 = plan(m, 3, 256, 4, false);
  check(a3 - a2 == a2 - a1 && a2 > a1, "the activations grow linearly with the rows");
  size_t fixed = plan(m, 1, 1, 4, false);
  check(fixed >= m->bytes_quant + m->bytes_dense / 2, "the weights' part holds the 4-bit codes and bf16 copies");
  check(plan(m, 1, 1, 8, false) > fixed, "a larger LoRA rank plans more");
  size_t bytes = 1;
  /* checkpointing keeps each layer's input and one layer's set: (L - 1)
   * layers' sets less, the inputs and the layer-0 set unchanged */
  size_t c1 = plan_ck(m, 2, 64, 4, true, false);
  int64_t N = 2 * 64, Cm = m->C, HD = m->H * m->D, KD = m->K * m->D;
  size_t set = (size_t)(N * (3 * Cm + 2 * HD + 2 * KD + 3 * m->F)) * 2 + (size_t)N * 2 * 4 +
               (size_t)(2 * m->H * 64) * 4 + (size_t)(7 * N * 4) * 2; /* all but x; u of 7 linears at r 4 */
  printf("checkpointed: %zu bytes (%zu less)\n", c1, p - c1);
  check(p - c1 == (size_t)(m->L - 1) * set, "checkpointing saves (L - 1) layers' activations");
  check(qt_model_cuda_plan_bytes(m, 0, 64, 4, false, false, &bytes) == QT_ERR_INVALID && bytes == 0,
        "an empty batch is refused");
  qt_model_free(&m);
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
