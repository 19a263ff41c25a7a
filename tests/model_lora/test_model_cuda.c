/* End-to-end GPU step against the CPU tape: stories260K (NF4, blocksize 64,
 * double quantization), LoRA r 4 on all seven projections of every layer with
 * a nonzero B (Philox, in +-0.05, bf16-exact), no dropout, one packed batch of
 * 2 rows x 64 tokens holding 3 documents (row 0: two documents, positions restarting at the
 * second; row 1: one document whose first tokens are prompt, label -100).
 * qt_model_forward_backward_cuda (model/model_cuda.h) vs
 * qt_model_forward_backward (model.h, fp32 tape), same weights, LoRA, batch and
 * dloss = 1 / count. Then the same through one persistent context
 * (qt_model_cuda_init once: a forward-only call, the LoRA step, the
 * evaluation forward qt_model_cuda_loss with the LoRA against the tape's
 * loss in eval mode, refusals of a batch or rank beyond the context), and a
 * step with LoRA dropout 0.25 whose keep bits the GPU kernels draw from the
 * streams of qt_lora_dropout_stream, against the tape with the hook's masks
 * of the same step (same bounds), then row 1 alone (a smaller batch, step 8)
 * through the same context, and qt_model_cuda_loss with those dropout entries
 * (ignored: the eval loss). In the same CPU emulation (its LoRA stand-in
 * extended to masks: xd = bf16(x * keep_scale) where kept, dx masked) the
 * dropout steps give worst per-tensor NMSE 6.2e-3 / 6.6e-3, total 1.8e-3 /
 * 1.3e-3, while dropout itself moves the tape's gradients by NMSE 0.28; and
 * ignoring the masks on the GPU (NMSE 0.39), their keep_scale (0.14), the
 * saved xd in backward (0.24) or half of each mask (0.67) fails. Label `cuda`; exits 77 without a GPU (the GPU check, tools/gpu_run.sh,
 * runs it on a GPU machine).
 *
 * Tolerances. The GPU stores weights, activations and gradients in bf16 and
 * rounds every op output (and a few intermediates: RMSNorm's x * rstd, silu,
 * LoRA's u) once, <= 2^-9 relative each (autograd/ops_cuda.h); the CPU tape is
 * fp32 throughout and dequantizes the 4-bit weights to fp32, not bf16. Over 5
 * layers these roundings do not stay at the 2^-9 level: attention softmaxes
 * and the residual stream amplify them. The bounds were set from a CPU
 * emulation of this exact call sequence (model_cuda.cu linked against
 * ops_cuda.h stand-ins that run the CPU ops and round every output to bf16,
 * plus the roundings above; not part of the build):
 *  - without any bf16 rounding (fp32 stand-ins, dense bf16-exact weights) the
 *    sequence reproduces the tape: loss rel 2.7e-9, worst gradient NMSE 3.6e-6
 *    (the final bf16 rounding of the gradients): the call order is right; with
 *    the 4-bit weights dequantized to bf16 as the only rounding: worst NMSE
 *    9e-4;
 *  - with the roundings, this batch and LoRA: loss rel 1.9e-3, worst per-tensor
 *    NMSE 8.4e-3 (cosine 0.9958), all-tensor NMSE 2.0e-3. The error grows
 *    steeply with the LoRA's size: B uniform in +-0.3 (scale 2) drives the
 *    model to chaos (loss 6.9 nats/token, above uniform) and the same
 *    roundings give per-tensor NMSE 0.2, so B is drawn in +-0.05 (the branch
 *    ~7% of the base output, loss 1.44 nats/token: the regime of fine-tuning).
 * Bounds, about 4x the emulated values: loss relative 1e-2; per tensor NMSE
 * (|g - c|^2 / |c|^2) < 3e-2 and cosine > 0.985; all tensors together NMSE <
 * 8e-3; every value finite; the target count equal. What they catch (same
 * emulation, injected bugs): dropping LoRA's contribution to dx (worst NMSE
 * 0.13, total 0.03), swapping SwiGLU's dgate/dup (NMSE 31), dropping the
 * residual gradient at one norm (1.2), RoPE backward at the wrong positions
 * (3.7). A tighter bound (NMSE 1e-3, cosine 0.999) fails the emulated bf16
 * step itself. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/philox.h"
#include "data/tokenizer.h"
#include "lora/lora.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "tests/common/cuda_test_util.h"

/* stories260K: $QLORA_SHARED_DIR/data/stories260K, else the compiled-in
 * QLORA_SHARED_DIR's (cuda_test_util.h); set first thing in main. */
static char stories[4096];

enum { BATCH_B = 2, BATCH_T = 64, RANK = 4 };

static const double TOL_LOSS_REL = 1e-2;
static const double TOL_NMSE = 3e-2;
static const double TOL_COS = 0.985;
static const double TOL_NMSE_ALL = 8e-3;

static int failures;

#define OK(call)                                                                         \
  do {                                                                                   \
    qt_status s_ = (call);                                                               \
    if (s_ != QT_OK) {                                                                   \
      fprintf(stderr, "%s:%d: %s failed (status %d): %s\n", __FILE__, __LINE__, #call,   \
              (int)s_, qt_error_message());                                              \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

static void check(int cond, const char *what) {
  if (!cond) {
    fprintf(stderr, "FAIL: %s\n", what);
    failures++;
  }
}

/* Token ids of text (BOS first); exits when shorter than need. */
static void encode(qt_tokenizer *tok, const char *text, size_t need, qt_token_ids *v) {
  OK(qt_tokenizer_encode(tok, text, strlen(text), QT_TOK_ADD_BOS, v));
  if (v->n < need) {
    fprintf(stderr, "test text gives %zu tokens, need %zu\n", v->n, need);
    exit(1);
  }
}

/* The packed batch: row 0 = document 0 (40 tokens) + document 1 (24 tokens),
 * row 1 = document 2 (64 tokens, its first 10 labels -100 as a prompt). */
static void make_batch(int32_t *ids, int32_t *labels, int32_t *pos, int32_t *doc) {
  static const char *const text[3] = {
      "Once upon a time, there was a little girl named Lily. She loved to play outside in "
      "the park with her big red ball. One day, she saw a small dog under a tree. The dog "
      "was sad because it was lost.",
      "Tom had a toy car. He liked to drive it on the floor of his room. His mom said it "
      "was time for bed, so Tom put the car in the box and went to sleep.",
      "The sun was shining and the birds were singing. Ben and his sister went to the beach "
      "to build a big sand castle. They found shells and put them on the walls. Then a "
      "wave came and the castle fell down, but they laughed and built a new one."};
  static const int len[3] = {40, 24, 64}, row[3] = {0, 0, 1}, start[3] = {0, 40, 0};
  qt_tokenizer *tok = NULL;
  char tok_path[sizeof stories + 32];
  OK(qt_tokenizer_load(ctu_path(tok_path, sizeof tok_path, stories, "tokenizer.json"), &tok));
  qt_token_ids v = {0};
  for (int d = 0; d < 3; d++) {
    encode(tok, text[d], (size_t)len[d], &v);
    for (int i = 0; i < len[d]; i++) {
      int n = row[d] * BATCH_T + start[d] + i;
      ids[n] = v.ids[i];
      labels[n] = (d == 2 && i < 10) ? -100 : v.ids[i];
      pos[n] = i;
      doc[n] = d;
    }
  }
  qt_token_ids_free(&v);
  qt_tokenizer_free(tok);
}

/* Fresh LoRA (PEFT init of A, alpha 8: scale 2) with B uniform in +-0.05 from
 * Philox, bf16-exact (as test_model_lora.c fresh_lora; amplitude: see above). */
static qt_lora *make_lora(const qt_model *m, double dropout) {
  qt_lora_config c = {.r = RANK, .alpha = 8, .dropout = dropout, .use_rslora = false,
                      .targets = QT_LORA_ALL_LINEAR, .master_fp32 = false, .seed = 11};
  qt_lora *l = NULL;
  OK(qt_lora_init(m, &c, &l));
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(l, &n);
  qt_philox rng;
  qt_philox_init(&rng, 12, 0, 0);
  for (size_t i = 0; i < n; i++)
    if (ts[i].is_B)
      for (int64_t j = 0; j < ts[i].rows * ts[i].cols; j++)
        ts[i].bf16[j] = qt_bf16_from_f32(0.05f * (2 * qt_philox_next_uniform(&rng) - 1));
  qt_lora_sync(l);
  return l;
}

/* NMSE = |g - c|^2 / |c|^2 and cosine of g (GPU) against c (CPU); *finite
 * cleared on any non-finite g. Sums returned through acc (for the total). */
static void compare(const float *g, const float *c, int64_t n, double *nmse, double *cosv,
                    int *finite, double acc[3]) {
  double se = 0, cc = 0, gg = 0, gc = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(g[i])) *finite = 0;
    double d = (double)g[i] - (double)c[i];
    se += d * d;
    cc += (double)c[i] * c[i];
    gg += (double)g[i] * g[i];
    gc += (double)g[i] * c[i];
  }
  acc[0] += se;
  acc[1] += cc;
  acc[2] += gg;
  *nmse = cc > 0 ? se / cc : (se > 0 ? INFINITY : 0);
  *cosv = (cc > 0 && gg > 0) ? gc / sqrt(cc * gg) : 0;
}

/* Every GPU gradient against the tape's (ts[i].grad) with the bounds above. */
static void compare_grads(const char *what, float **gpu_grad, const qt_lora_tensor *ts, size_t nt) {
  double tot[3] = {0, 0, 0}, worst_nmse = 0, worst_cos = 1;
  int finite = 1;
  for (size_t i = 0; i < nt; i++) {
    double nmse, cosv;
    compare(gpu_grad[i], ts[i].grad, ts[i].rows * ts[i].cols, &nmse, &cosv, &finite, tot);
    if (!(nmse < TOL_NMSE) || !(cosv > TOL_COS)) {
      fprintf(stderr, "FAIL: %s: %s: NMSE %.3g, cosine %.6f\n", what, ts[i].name, nmse, cosv);
      failures++;
    }
    if (!(nmse <= worst_nmse)) worst_nmse = nmse;
    if (!(cosv >= worst_cos)) worst_cos = cosv;
  }
  double tot_nmse = tot[1] > 0 ? tot[0] / tot[1] : INFINITY;
  printf("%s: LoRA gradients (%zu tensors): worst NMSE %.3g, worst cosine %.6f, total NMSE %.3g, "
         "|grad| cpu %.4g gpu %.4g\n", what, nt, worst_nmse, worst_cos, tot_nmse, sqrt(tot[1]),
         sqrt(tot[2]));
  check(finite, "GPU gradients finite");
  check(tot[1] > 0, "CPU gradients nonzero");
  check(tot_nmse < TOL_NMSE_ALL, "all-tensor gradient NMSE < 8e-3");
}

/* qt_model_cuda_round_bf16 (fp32 masters -> the bf16 weights the model reads)
 * against common/half.h's qt_bf16_from_f32, bit for bit: ties to even, the
 * largest finite values, infinities, NaN, subnormals, and random values. */
static void round_bf16_case(void) {
  enum { N = 4096 };
  float h[N];
  uint16_t got[N];
  const float edge[] = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, 3.4028235e38f, -3.4028235e38f, INFINITY,
                        -INFINITY, NAN, 1e-40f, -1e-45f, 1.17549435e-38f, 65504.0f, 0.1f};
  size_t ne = sizeof edge / sizeof edge[0];
  qt_philox rng;
  qt_philox_init(&rng, 21, 0, 0);
  for (int i = 0; i < N; i++) {
    if ((size_t)i < ne) {
      h[i] = edge[i];
    } else {
      uint32_t u = qt_philox_next_u32(&rng);
      memcpy(&h[i], &u, sizeof u);
    }
  }
  float *dsrc = NULL;
  uint16_t *ddst = NULL;
  if (cudaMalloc((void **)&dsrc, sizeof h) != cudaSuccess || cudaMalloc((void **)&ddst, sizeof got) != cudaSuccess ||
      cudaMemcpy(dsrc, h, sizeof h, cudaMemcpyHostToDevice) != cudaSuccess) {
    check(0, "round_bf16: device buffers");
    return;
  }
  OK(qt_model_cuda_round_bf16(ddst, dsrc, N));
  check(cudaMemcpy(got, ddst, sizeof got, cudaMemcpyDeviceToHost) == cudaSuccess, "round_bf16: copy back");
  int bad = 0;
  for (int i = 0; i < N; i++) bad += got[i] != qt_bf16_from_f32(h[i]);
  printf("round_bf16: %d of %d values differ from qt_bf16_from_f32\n", bad, N);
  check(bad == 0, "round_bf16: bit-identical to qt_bf16_from_f32");
  cudaFree(dsrc);
  cudaFree(ddst);
}

int main(void) {
  int rc = ctu_gpu_check("test_model_cuda");
  if (rc != 0) return rc; /* 77: no GPU (skipped); 1: a GPU CUDA cannot use */
  round_bf16_case();
  ctu_path(stories, sizeof stories, ctu_shared_dir(), "data/stories260K");
  printf("model: %s\n", stories);
  qt_model_load_opts lo = {.quant = QT_MODEL_QUANT_NF4, .double_quant = true, .blocksize = 64,
                           .threads = 1};
  qt_model *m = NULL;
  OK(qt_model_load(stories, &lo, &m));
  qt_lora *l = make_lora(m, 0);

  enum { N = BATCH_B * BATCH_T };
  int32_t ids[N], labels[N], pos[N], doc[N], targets[N];
  make_batch(ids, labels, pos, doc);
  qt_model_targets_from_labels(labels, doc, BATCH_B, BATCH_T, targets);
  int64_t expect_count = 0;
  for (int n = 0; n < N; n++) expect_count += targets[n] != -100;
  qt_model_batch b = {.ids = ids, .targets = targets, .pos = pos, .doc = doc, .B = BATCH_B,
                      .T = BATCH_T};
  double dloss = 1.0 / (double)expect_count;

  /* CPU reference: the fp32 tape. */
  qt_model_tape_opts to = {.max_B = BATCH_B, .max_T = BATCH_T, .max_lora_rank = RANK,
                           .lora_no_dropout = true};
  qt_model_tape *mt = NULL;
  OK(qt_model_tape_init(m, &to, &mt));
  OK(qt_lora_attach(l, qt_model_tape_get(mt)));
  qt_lora_set_step(l, 0, false);
  qt_lora_zero_grad(l);
  qt_model_adapter ad = qt_lora_adapter(l);
  double cpu_loss = 0;
  int64_t cpu_count = 0;
  OK(qt_model_forward_backward(mt, &ad, &b, true, dloss, &cpu_loss, &cpu_count));

  /* GPU: one entry per adapted module (tensors come A, B per module). */
  size_t nt;
  qt_lora_tensor *ts = qt_lora_tensors(l, &nt);
  check(nt == (size_t)(2 * (QT_PROJ_DOWN + 1) * m->L), "LoRA on all seven projections of every layer");
  size_t ne = nt / 2;
  qt_model_cuda_lora *ent = calloc(ne, sizeof *ent);
  float **gpu_grad = calloc(nt, sizeof *gpu_grad);
  if (!ent || !gpu_grad) return 1;
  for (size_t e = 0; e < ne; e++) {
    const qt_lora_tensor *A = &ts[2 * e], *B = &ts[2 * e + 1];
    if (A->is_B || !B->is_B || A->layer != B->layer || A->proj != B->proj) {
      fprintf(stderr, "qt_lora_tensors order is not A, B per module at %zu\n", 2 * e);
      return 1;
    }
    gpu_grad[2 * e] = calloc((size_t)(A->rows * A->cols), sizeof(float));
    gpu_grad[2 * e + 1] = calloc((size_t)(B->rows * B->cols), sizeof(float));
    if (!gpu_grad[2 * e] || !gpu_grad[2 * e + 1]) return 1;
    ent[e] = (qt_model_cuda_lora){.layer = A->layer, .proj = A->proj, .r = A->rows,
                                  .A = A->data, .B = B->data, .dA = gpu_grad[2 * e],
                                  .dB = gpu_grad[2 * e + 1]};
  }
  double gpu_loss = 0;
  int64_t gpu_count = 0;
  OK(qt_model_forward_backward_cuda(m, ent, ne, qt_lora_scale(l), &b, dloss, &gpu_loss,
                                    &gpu_count));

  /* loss and count */
  double rel = fabs(gpu_loss - cpu_loss) / fabs(cpu_loss);
  printf("loss: cpu %.9g gpu %.9g (rel %.3g), count cpu %lld gpu %lld expected %lld\n", cpu_loss,
         gpu_loss, rel, (long long)cpu_count, (long long)gpu_count, (long long)expect_count);
  check(cpu_count == expect_count && gpu_count == cpu_count, "target count equal");
  check(isfinite(gpu_loss) && rel < TOL_LOSS_REL, "loss within relative 1e-2");

  /* gradients */
  compare_grads("one-call", gpu_grad, ts, nt);

  /* Forward only (no LoRA): the base model's loss against the tape's. */
  double cpu_base = 0, gpu_base = 0;
  int64_t cpu_bc = 0, gpu_bc = 0;
  OK(qt_model_forward_backward(mt, NULL, &b, false, dloss, &cpu_base, &cpu_bc));
  OK(qt_model_forward_backward_cuda(m, NULL, 0, 0.0, &b, dloss, &gpu_base, &gpu_bc));
  double rel_base = fabs(gpu_base - cpu_base) / fabs(cpu_base);
  printf("base model loss: cpu %.9g gpu %.9g (rel %.3g)\n", cpu_base, gpu_base, rel_base);
  check(gpu_bc == cpu_bc && cpu_bc == expect_count, "forward-only target count equal");
  check(isfinite(gpu_base) && rel_base < TOL_LOSS_REL, "forward-only loss within relative 1e-2");
  /* The LoRA moves the loss by ~10% here (150.7 -> 167.5 nats): well beyond
   * the loss tolerance, so a GPU step that ignored the LoRA would fail. */
  check(fabs(cpu_base - cpu_loss) > 3 * TOL_LOSS_REL * fabs(cpu_loss),
        "the LoRA changes the loss by more than 3x the tolerance");

  /* Refused inputs: a token outside the vocabulary, two entries for one linear. */
  int32_t bad_ids[N];
  memcpy(bad_ids, ids, sizeof bad_ids);
  bad_ids[N - 1] = (int32_t)m->V;
  qt_model_batch bad = b;
  bad.ids = bad_ids;
  double x_loss;
  int64_t x_count;
  check(qt_model_forward_backward_cuda(m, NULL, 0, 0.0, &bad, dloss, &x_loss, &x_count) ==
            QT_ERR_INVALID, "token id V refused");
  qt_model_cuda_lora dup[2] = {ent[0], ent[0]};
  check(qt_model_forward_backward_cuda(m, dup, 2, 1.0, &b, dloss, &x_loss, &x_count) ==
            QT_ERR_INVALID, "duplicate LoRA entry refused");

  /* Persistent context (qt_model_cuda_init once): a forward-only call, then
   * the LoRA step, on the same buffers, against the same tape results. */
  qt_model_cuda *ctx = NULL;
  const qt_model_cuda_opts keep_all = {0};
  OK(qt_model_cuda_init(m, BATCH_B, BATCH_T, RANK, &keep_all, &ctx));
  size_t bytes0 = qt_model_cuda_device_bytes(ctx);
  {
    size_t planned = 0, planned_drop = 0;
    OK(qt_model_cuda_plan_bytes(m, BATCH_B, BATCH_T, RANK, &keep_all, false, &planned, NULL));
    OK(qt_model_cuda_plan_bytes(m, BATCH_B, BATCH_T, RANK, &keep_all, true, &planned_drop, NULL));
    check(planned == bytes0, "the device plan equals the context's bytes");
    check(planned_drop - planned == (size_t)(BATCH_B * BATCH_T * (m->C > m->F ? m->C : m->F) * 2) ||
              m->H * m->D > m->C, "the plan's dropout scratch");
  }
  double c_base = 0, c_loss = 0;
  int64_t c_bc = 0, c_count = 0;
  OK(qt_model_cuda_forward_backward(ctx, NULL, 0, 0.0, &b, dloss, &c_base, &c_bc));
  check(c_bc == cpu_bc && fabs(c_base - cpu_base) < TOL_LOSS_REL * fabs(cpu_base),
        "context: forward-only loss within relative 1e-2");
  for (size_t i = 0; i < nt; i++)
    for (int64_t j = 0; j < ts[i].rows * ts[i].cols; j++) gpu_grad[i][j] = NAN;
  OK(qt_model_cuda_forward_backward(ctx, ent, ne, qt_lora_scale(l), &b, dloss, &c_loss,
                                    &c_count));
  printf("context: base loss %.9g, LoRA loss %.9g (cpu %.9g), %.2f MiB on the device\n", c_base,
         c_loss, cpu_loss, (double)bytes0 / 1048576.0);
  check(c_count == cpu_count && fabs(c_loss - cpu_loss) < TOL_LOSS_REL * fabs(cpu_loss),
        "context: LoRA loss within relative 1e-2");
  compare_grads("context", gpu_grad, ts, nt); /* overwritten: the NaNs are gone */
  check(qt_model_cuda_device_bytes(ctx) == bytes0, "context: no allocation without dropout");
  qt_model_cuda_lora big = ent[0];
  big.r = RANK + 1;
  check(qt_model_cuda_forward_backward(ctx, &big, 1, 1.0, &b, dloss, &x_loss, &x_count) ==
            QT_ERR_INVALID, "context: rank above max_r refused");
  qt_model_batch tall = b;
  tall.B = 1;
  tall.T = 2 * BATCH_T;
  check(qt_model_cuda_forward_backward(ctx, NULL, 0, 0.0, &tall, dloss, &x_loss, &x_count) ==
            QT_ERR_INVALID, "context: rows longer than max_T refused");

  /* Evaluation forward on the device (qt_model_cuda_loss): the LoRA applied,
   * no backward, the gradients untouched (NaN stays NaN; dA / dB may be NULL),
   * no allocation. Against the tape's loss with the LoRA, training off and no
   * backward (the bound above), and against this context's forward_backward
   * loss of the same entries: the same kernels on the same inputs (relative
   * 1e-6, far below what a missing branch or a dropout applied in eval would
   * move). */
  {
    qt_lora_set_step(l, 0, false);
    double cpu_eval = 0, g_eval = 0, g_eval2 = 0;
    int64_t cpu_ec = 0, g_ec = 0, g_ec2 = 0;
    OK(qt_model_forward_backward(mt, &ad, &b, false, dloss, &cpu_eval, &cpu_ec));
    for (size_t i = 0; i < nt; i++)
      for (int64_t j = 0; j < ts[i].rows * ts[i].cols; j++) gpu_grad[i][j] = NAN;
    OK(qt_model_cuda_loss(ctx, ent, ne, qt_lora_scale(l), &b, &g_eval, &g_ec));
    int untouched = 1;
    for (size_t i = 0; i < nt; i++)
      for (int64_t j = 0; j < ts[i].rows * ts[i].cols; j++) untouched &= isnan(gpu_grad[i][j]) != 0;
    qt_model_cuda_lora *nograd = calloc(ne, sizeof *nograd);
    if (!nograd) return 1;
    for (size_t e = 0; e < ne; e++) {
      nograd[e] = ent[e];
      nograd[e].dA = NULL;
      nograd[e].dB = NULL;
    }
    OK(qt_model_cuda_loss(ctx, nograd, ne, qt_lora_scale(l), &b, &g_eval2, &g_ec2));
    free(nograd);
    printf("qt_model_cuda_loss: cpu %.9g gpu %.9g (rel %.3g), forward_backward's %.9g\n",
           cpu_eval, g_eval, fabs(g_eval - cpu_eval) / fabs(cpu_eval), c_loss);
    check(g_ec == cpu_ec && cpu_ec == expect_count && g_ec2 == g_ec, "eval: target count equal");
    check(isfinite(g_eval) && fabs(g_eval - cpu_eval) < TOL_LOSS_REL * fabs(cpu_eval),
          "eval: loss within relative 1e-2 of the tape's forward-only eval loss");
    check(fabs(g_eval - c_loss) <= 1e-6 * fabs(c_loss) &&
              fabs(g_eval2 - g_eval) <= 1e-6 * fabs(g_eval),
          "eval: the forward_backward loss of the same entries");
    check(fabs(g_eval - c_base) > 3 * TOL_LOSS_REL * fabs(c_base), "eval: the LoRA is applied");
    check(untouched, "eval: gradients not written");
    check(qt_model_cuda_device_bytes(ctx) == bytes0, "eval: no allocation");
  }

  /* LoRA dropout: the tape with the hook's masks (step 7) against the GPU
   * drawing the keep bits in its kernels from qt_lora_dropout_stream's
   * streams (no mask leaves the host, none is made on the device). p = 0.25
   * changes the gradients far more than the tolerance (checked on the CPU
   * below), so a GPU path that ignored or misplaced the masks fails. */
  const double P_DROP = 0.25;
  float **nodrop = calloc(nt, sizeof *nodrop);
  if (!nodrop) return 1;
  for (size_t i = 0; i < nt; i++) {
    nodrop[i] = malloc((size_t)(ts[i].rows * ts[i].cols) * sizeof(float));
    if (!nodrop[i]) return 1;
    memcpy(nodrop[i], ts[i].grad, (size_t)(ts[i].rows * ts[i].cols) * sizeof(float));
  }
  qt_lora *ld = make_lora(m, P_DROP);
  qt_model_tape_opts tod = to;
  tod.lora_no_dropout = false;
  qt_model_tape *mtd = NULL;
  OK(qt_model_tape_init(m, &tod, &mtd));
  OK(qt_lora_attach(ld, qt_model_tape_get(mtd)));
  qt_lora_set_step(ld, 7, true);
  qt_lora_zero_grad(ld);
  qt_model_adapter add = qt_lora_adapter(ld);
  double cpu_dloss = 0;
  int64_t cpu_dcount = 0;
  OK(qt_model_forward_backward(mtd, &add, &b, true, dloss, &cpu_dloss, &cpu_dcount));
  size_t ntd;
  qt_lora_tensor *tsd = qt_lora_tensors(ld, &ntd);
  check(ntd == nt, "dropout LoRA has the same tensors");
  {
    double tot[3] = {0, 0, 0}, nm, cs;
    int fin = 1;
    for (size_t i = 0; i < nt; i++) compare(nodrop[i], tsd[i].grad, tsd[i].rows * tsd[i].cols,
                                            &nm, &cs, &fin, tot);
    double diff = tot[1] > 0 ? tot[0] / tot[1] : 0;
    printf("dropout %.2f: cpu loss %.9g (without %.9g), gradient NMSE without vs with %.3g\n",
           P_DROP, cpu_dloss, cpu_loss, diff);
    check(diff > 10 * TOL_NMSE_ALL, "dropout moves the gradients beyond 10x the tolerance");
  }
  for (size_t e = 0; e < ne; e++) {
    const qt_lora_tensor *A = &tsd[2 * e], *B = &tsd[2 * e + 1];
    ent[e] = (qt_model_cuda_lora){.layer = A->layer, .proj = A->proj, .r = A->rows,
                                  .A = A->data, .B = B->data, .dA = gpu_grad[2 * e],
                                  .dB = gpu_grad[2 * e + 1]};
    OK(qt_lora_dropout_stream(ld, A->layer, A->proj, &ent[e].dropout_key,
                              &ent[e].dropout_subsequence, &ent[e].dropout_threshold,
                              &ent[e].keep_scale, &ent[e].dropout));
    check(ent[e].dropout && ent[e].keep_scale == 1.0 / (1.0 - P_DROP),
          "a dropout stream for every module");
  }
  double gpu_dloss = 0;
  int64_t gpu_dcount = 0;
  OK(qt_model_cuda_forward_backward(ctx, ent, ne, qt_lora_scale(ld), &b, dloss, &gpu_dloss,
                                    &gpu_dcount));
  printf("dropout: loss cpu %.9g gpu %.9g; device %.2f MiB after the masked call\n", cpu_dloss,
         gpu_dloss, (double)qt_model_cuda_device_bytes(ctx) / 1048576.0);
  check(gpu_dcount == cpu_dcount && fabs(gpu_dloss - cpu_dloss) < TOL_LOSS_REL * fabs(cpu_dloss),
        "dropout: loss within relative 1e-2");
  compare_grads("dropout", gpu_grad, tsd, nt);
  {
    /* one shared scratch of (B*T, widest input) bf16, not one per linear */
    int64_t max_in = m->C > m->F ? m->C : m->F;
    if (m->H * m->D > max_in) max_in = m->H * m->D;
    check(qt_model_cuda_device_bytes(ctx) - bytes0 == (size_t)(BATCH_B * BATCH_T * max_in * 2),
          "dropout: one shared scratch allocated at the first use");
  }
  /* a refused stream: threshold outside the word range */
  {
    qt_model_cuda_lora badd = ent[0];
    badd.dropout_threshold = (int64_t)UINT32_MAX + 1;
    check(qt_model_cuda_forward_backward(ctx, &badd, 1, 1.0, &b, dloss, &x_loss, &x_count) ==
              QT_ERR_INVALID, "dropout threshold above 2^32 - 1 refused");
  }

  /* A smaller batch through the same context (row 1 alone, step 8): buffers
   * made for 2 x 64 tokens, masks of 64 tokens. */
  size_t bytes1 = qt_model_cuda_device_bytes(ctx);
  qt_model_batch row1 = {.ids = ids + BATCH_T, .targets = targets + BATCH_T, .pos = pos + BATCH_T,
                         .doc = doc + BATCH_T, .B = 1, .T = BATCH_T};
  qt_lora_set_step(ld, 8, true);
  qt_lora_zero_grad(ld);
  OK(qt_model_forward_backward(mtd, &add, &row1, true, dloss, &cpu_dloss, &cpu_dcount));
  for (size_t e = 0; e < ne; e++) {
    OK(qt_lora_dropout_stream(ld, ent[e].layer, ent[e].proj, &ent[e].dropout_key,
                              &ent[e].dropout_subsequence, &ent[e].dropout_threshold,
                              &ent[e].keep_scale, &ent[e].dropout));
    check(ent[e].dropout, "a dropout stream for every module (row 1)");
  }
  OK(qt_model_cuda_forward_backward(ctx, ent, ne, qt_lora_scale(ld), &row1, dloss, &gpu_dloss,
                                    &gpu_dcount));
  printf("row 1 alone, dropout: loss cpu %.9g gpu %.9g, count %lld\n", cpu_dloss, gpu_dloss,
         (long long)gpu_dcount);
  check(gpu_dcount == cpu_dcount && fabs(gpu_dloss - cpu_dloss) < TOL_LOSS_REL * fabs(cpu_dloss),
        "row 1, dropout: loss within relative 1e-2");
  compare_grads("row 1, dropout", gpu_grad, tsd, nt);
  check(qt_model_cuda_device_bytes(ctx) == bytes1, "no allocation on a later masked call");

  /* Checkpointing (layer inputs kept, each layer's forward again before its
   * backward, dropout drawn again from the same streams): the same loss and
   * gradients bit for bit, in the bytes its plan says. Then activation
   * offloading (the layer inputs through pinned host memory and a device ring
   * of 2, copied on a second stream): the same again, bit for bit, on the
   * full batch against the checkpointed context and on row 1 against the
   * context that keeps everything (two calls: the ring reused, a smaller
   * batch), with (L - 2) layer inputs fewer on the device than checkpointing
   * and the L inputs in pinned host memory, as planned. */
  {
    float **saved = calloc(nt, sizeof *saved);
    if (!saved) return 1;
    for (size_t i = 0; i < nt; i++) {
      size_t k = (size_t)(tsd[i].rows * tsd[i].cols);
      saved[i] = malloc(k * sizeof(float));
      if (!saved[i]) return 1;
      memcpy(saved[i], gpu_grad[i], k * sizeof(float));
    }
    qt_model_cuda *ck = NULL;
    const qt_model_cuda_opts ckpt = {.checkpoint = true, .offload = false};
    OK(qt_model_cuda_init(m, BATCH_B, BATCH_T, RANK, &ckpt, &ck));
    double ck_loss = 0;
    int64_t ck_count = 0;
    OK(qt_model_cuda_forward_backward(ck, ent, ne, qt_lora_scale(ld), &row1, dloss, &ck_loss, &ck_count));
    size_t same = 0, total = 0;
    for (size_t i = 0; i < nt; i++)
      for (int64_t j = 0; j < tsd[i].rows * tsd[i].cols; j++, total++)
        same += memcmp(&saved[i][j], &gpu_grad[i][j], sizeof(float)) == 0;
    printf("checkpointed context: loss %.9g (kept %.9g), %zu of %zu gradient values bit-identical, "
           "%.2f MiB on the device (kept: %.2f)\n", ck_loss, gpu_dloss, same, total,
           (double)qt_model_cuda_device_bytes(ck) / 1048576.0, (double)bytes1 / 1048576.0);
    check(ck_loss == gpu_dloss && ck_count == gpu_dcount, "checkpointing: the same loss");
    check(same == total, "checkpointing: the same gradients, bit for bit");
    size_t planned = 0;
    OK(qt_model_cuda_plan_bytes(m, BATCH_B, BATCH_T, RANK, &ckpt, true, &planned, NULL));
    check(planned == qt_model_cuda_device_bytes(ck), "checkpointing: the plan equals the context's bytes");
    check(qt_model_cuda_device_bytes(ck) < bytes1, "checkpointing holds less");
    check(qt_model_cuda_host_bytes(ck) == 0, "checkpointing: no pinned host bytes");

    /* offloading: the full batch through the checkpointed context first (its
     * gradients the reference), then through the offloading one */
    float **ck_full = calloc(nt, sizeof *ck_full);
    if (!ck_full) return 1;
    double ckf_loss = 0;
    int64_t ckf_count = 0;
    OK(qt_model_cuda_forward_backward(ck, ent, ne, qt_lora_scale(ld), &b, dloss, &ckf_loss, &ckf_count));
    for (size_t i = 0; i < nt; i++) {
      size_t k = (size_t)(tsd[i].rows * tsd[i].cols);
      ck_full[i] = malloc(k * sizeof(float));
      if (!ck_full[i]) return 1;
      memcpy(ck_full[i], gpu_grad[i], k * sizeof(float));
    }
    qt_model_cuda *of = NULL;
    const qt_model_cuda_opts offl = {.checkpoint = true, .offload = true};
    OK(qt_model_cuda_init(m, BATCH_B, BATCH_T, RANK, &offl, &of));
    for (size_t i = 0; i < nt; i++)
      for (int64_t j = 0; j < tsd[i].rows * tsd[i].cols; j++) gpu_grad[i][j] = NAN;
    double of_loss = 0;
    int64_t of_count = 0;
    OK(qt_model_cuda_forward_backward(of, ent, ne, qt_lora_scale(ld), &b, dloss, &of_loss, &of_count));
    size_t same_full = 0, total_full = 0;
    for (size_t i = 0; i < nt; i++)
      for (int64_t j = 0; j < tsd[i].rows * tsd[i].cols; j++, total_full++)
        same_full += memcmp(&ck_full[i][j], &gpu_grad[i][j], sizeof(float)) == 0;
    for (size_t i = 0; i < nt; i++)
      for (int64_t j = 0; j < tsd[i].rows * tsd[i].cols; j++) gpu_grad[i][j] = NAN;
    double of1_loss = 0;
    int64_t of1_count = 0;
    OK(qt_model_cuda_forward_backward(of, ent, ne, qt_lora_scale(ld), &row1, dloss, &of1_loss, &of1_count));
    size_t same1 = 0;
    for (size_t i = 0; i < nt; i++)
      for (int64_t j = 0; j < tsd[i].rows * tsd[i].cols; j++)
        same1 += memcmp(&saved[i][j], &gpu_grad[i][j], sizeof(float)) == 0;
    double ev_ck = 0, ev_of = 0;
    int64_t ev_ckc = 0, ev_ofc = 0;
    OK(qt_model_cuda_loss(ck, ent, ne, qt_lora_scale(ld), &b, &ev_ck, &ev_ckc));
    OK(qt_model_cuda_loss(of, ent, ne, qt_lora_scale(ld), &b, &ev_of, &ev_ofc));
    size_t of_planned = 0, of_host_planned = 0;
    OK(qt_model_cuda_plan_bytes(m, BATCH_B, BATCH_T, RANK, &offl, true, &of_planned, &of_host_planned));
    size_t input = (size_t)(BATCH_B * BATCH_T * m->C) * 2;
    printf("offloading context: loss %.9g (checkpointed %.9g), row 1 %.9g (kept %.9g); %zu and %zu of %zu "
           "gradient values bit-identical; %.2f MiB on the device (checkpointed %.2f), %.2f MiB pinned host\n",
           of_loss, ckf_loss, of1_loss, gpu_dloss, same_full, same1, total_full,
           (double)qt_model_cuda_device_bytes(of) / 1048576.0, (double)qt_model_cuda_device_bytes(ck) / 1048576.0,
           (double)qt_model_cuda_host_bytes(of) / 1048576.0);
    check(of_loss == ckf_loss && of_count == ckf_count, "offloading: the checkpointed loss (full batch)");
    check(same_full == total_full, "offloading: the checkpointed gradients, bit for bit (full batch)");
    check(of1_loss == gpu_dloss && of1_count == gpu_dcount, "offloading: the same loss (row 1, second call)");
    check(same1 == total, "offloading: the same gradients, bit for bit (row 1, second call)");
    check(ev_of == ev_ck && ev_ofc == ev_ckc, "offloading: the same evaluation loss (no copies)");
    check(of_planned == qt_model_cuda_device_bytes(of) && of_host_planned == qt_model_cuda_host_bytes(of),
          "offloading: the plan equals the context's device and host bytes");
    check(qt_model_cuda_device_bytes(ck) - qt_model_cuda_device_bytes(of) == (size_t)(m->L - 2) * input,
          "offloading: (L - 2) layer inputs fewer on the device");
    check(qt_model_cuda_host_bytes(of) == (size_t)m->L * input, "offloading: the L layer inputs on the host");
    qt_model_cuda *bad_ctx = NULL;
    const qt_model_cuda_opts off_only = {.checkpoint = false, .offload = true};
    check(qt_model_cuda_init(m, BATCH_B, BATCH_T, RANK, &off_only, &bad_ctx) == QT_ERR_INVALID && !bad_ctx,
          "offloading without checkpointing refused");
    qt_model_cuda_free(&of);
    for (size_t i = 0; i < nt; i++) free(ck_full[i]);
    free(ck_full);
    qt_model_cuda_free(&ck);
    for (size_t i = 0; i < nt; i++) free(saved[i]);
    free(saved);
  }

  /* qt_model_cuda_loss ignores the entries' dropout (model.eval()): with the
   * dropout entries of step 8 it gives the tape's forward-only eval loss of the
   * dropout LoRA. */
  {
    qt_lora_set_step(ld, 8, false);
    double cpu_eval = 0, g_eval = 0;
    int64_t cpu_ec = 0, g_ec = 0;
    OK(qt_model_forward_backward(mtd, &add, &b, false, dloss, &cpu_eval, &cpu_ec));
    OK(qt_model_cuda_loss(ctx, ent, ne, qt_lora_scale(ld), &b, &g_eval, &g_ec));
    printf("qt_model_cuda_loss with dropout entries: cpu eval %.9g gpu %.9g\n", cpu_eval, g_eval);
    check(g_ec == cpu_ec && isfinite(g_eval) &&
              fabs(g_eval - cpu_eval) < TOL_LOSS_REL * fabs(cpu_eval),
          "eval with dropout entries: the tape's eval loss");
  }
  /* The KV-cache decoder on the device (generate) against the CPU's over the
   * same adapter (dropout off): a 40-token prompt, then 6 tokens one at a time,
   * then both rolled back to 20 positions and fed 10 rows again (the cache's
   * stale rows overwritten). Every feed's logits within the gradient bounds. */
  {
    qt_lora_set_step(ld, 8, false);
    qt_model_decoder *dc = NULL, *dg = NULL;
    OK(qt_model_decoder_init(mtd, &add, 64, 40, &dc));
    OK(qt_model_cuda_decoder_init(ctx, ent, ne, qt_lora_scale(ld), 64, 40, &dg));
    float *zc = malloc((size_t)m->V * sizeof *zc), *zg = malloc((size_t)m->V * sizeof *zg);
    if (!zc || !zg) return 1;
    double worst = 0, worst_cos = 1;
    const int64_t at[9] = {0, 40, 41, 42, 43, 44, 45, -1, 20}, len[9] = {40, 1, 1, 1, 1, 1, 1, 0, 10};
    for (int f = 0; f < 9; f++) {
      if (len[f] == 0) {
        qt_model_decoder_truncate(dc, 20);
        qt_model_decoder_truncate(dg, 20);
        continue;
      }
      OK(qt_model_decoder_feed(dc, ids + at[f], len[f], zc));
      OK(qt_model_decoder_feed(dg, ids + at[f], len[f], zg));
      double nm, cs, acc[3] = {0, 0, 0};
      int fin = 1;
      compare(zg, zc, m->V, &nm, &cs, &fin, acc);
      if (!fin) nm = INFINITY;
      if (nm > worst || !isfinite(nm)) worst = nm;
      if (cs < worst_cos) worst_cos = cs;
    }
    printf("decoder on the GPU vs the CPU's: worst logits NMSE %.3g, cosine %.5f; %.2f MiB of cache\n", worst,
           worst_cos, (double)qt_model_decoder_bytes(dg) / 1048576.0);
    check(worst <= TOL_NMSE && worst_cos >= TOL_COS, "decoder: the CPU decoder's logits within the bounds");
    check(qt_model_decoder_len(dg) == 30, "decoder: 30 positions after the rollback and refeed");
    qt_model_decoder_free(&dg);
    qt_model_decoder_free(&dc);
    free(zc);
    free(zg);
  }
  for (size_t i = 0; i < nt; i++) free(nodrop[i]);
  free(nodrop);
  qt_model_tape_free(&mtd);
  qt_lora_free(&ld);
  qt_model_cuda_free(&ctx);
  check(ctx == NULL, "qt_model_cuda_free clears the pointer");

  for (size_t i = 0; i < nt; i++) free(gpu_grad[i]);
  free(gpu_grad);
  free(ent);
  qt_model_tape_free(&mt);
  qt_lora_free(&l);
  qt_model_free(&m);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
