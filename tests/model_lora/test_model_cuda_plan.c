/* qt_model_cuda_plan_bytes (model/model_cuda.h) without a GPU: the context's
 * setup run in its measuring mode sizes every buffer and allocates nothing, so
 * the trainer can print and check its device memory plan before touching the
 * GPU. Checked here on stories260K (NF4, double quantization): it runs with no
 * device at all; the dropout scratch adds exactly (tokens x widest input)
 * bf16; the activations grow linearly with the rows; the weights' part is at
 * least the 4-bit codes and bf16 copies of the dense tensors; activation
 * offloading keeps 2 layer inputs on the device instead of L (exactly
 * (L - 2) x tokens x C bf16 less) and plans the L inputs as pinned host
 * bytes; arguments are checked. tests/model_lora/test_model_cuda.c checks on
 * a GPU that the plan equals what a context then holds. */
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

/* Device bytes planned; *host (may be NULL): pinned host bytes. */
static size_t plan_opts(const qt_model *m, int64_t B, int64_t T, int64_t r, bool ckpt, bool offload, bool dropout,
                        size_t *host) {
  size_t bytes = 0, hb = 1;
  const qt_model_cuda_opts o = {.checkpoint = ckpt, .offload = offload};
  qt_status s = qt_model_cuda_plan_bytes(m, B, T, r, &o, dropout, &bytes, &hb);
  if (s != QT_OK) {
    fprintf(stderr, "plan %lld x %lld r %lld: %s\n", (long long)B, (long long)T, (long long)r, qt_error_message());
    exit(1);
  }
  if (host) *host = hb;
  return bytes;
}

static size_t plan_ck(const qt_model *m, int64_t B, int64_t T, int64_t r, bool ckpt, bool dropout) {
  size_t host = 1;
  size_t bytes = plan_opts(m, B, T, r, ckpt, false, dropout, &host);
  check(host == 0, "no pinned host bytes without offloading");
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
  /* activation offloading: the L layer inputs (tokens x C bf16 each) go to
   * pinned host memory and a ring of 2 stays on the device, with and without
   * dropout, at 2 x 64 tokens and at 1 token */
  check(m->L > 2, "stories260K has more layers than the ring");
  size_t input = (size_t)(N * Cm) * 2, host = 0, host_d = 0, host_1 = 0;
  size_t o1 = plan_opts(m, 2, 64, 4, true, true, false, &host);
  size_t o1d = plan_opts(m, 2, 64, 4, true, true, true, &host_d);
  size_t c1d = plan_ck(m, 2, 64, 4, true, true);
  size_t o11 = plan_opts(m, 1, 1, 4, true, true, false, &host_1), c11 = plan_ck(m, 1, 1, 4, true, false);
  printf("offloaded: %zu device bytes (%zu less than checkpointed), %zu pinned host bytes\n", o1, c1 - o1, host);
  check(c1 - o1 == (size_t)m->L * input - 2 * input, "offloading: the layer inputs less the ring of 2 off the device");
  check(c1d - o1d == c1 - o1 && host_d == host, "offloading: the same saving with dropout");
  check(host == (size_t)m->L * input, "offloading: every layer's input in pinned host memory");
  check(c11 - o11 == (size_t)(m->L - 2) * (size_t)Cm * 2 && host_1 == (size_t)(m->L * Cm) * 2,
        "offloading at 1 token: (L - 2) x C bf16 less");
  const qt_model_cuda_opts keep = {0}, off_only = {.checkpoint = false, .offload = true};
  size_t hb = 1;
  bytes = 1;
  check(qt_model_cuda_plan_bytes(m, 2, 64, 4, &off_only, false, &bytes, &hb) == QT_ERR_INVALID && bytes == 0 &&
            hb == 0, "offloading without checkpointing is refused");
  bytes = 1;
  check(qt_model_cuda_plan_bytes(m, 0, 64, 4, &keep, false, &bytes, NULL) == QT_ERR_INVALID && bytes == 0,
        "an empty batch is refused");
  qt_model_free(&m);
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
