/* bench/bench_gpu_plan.c — the GPU backend's device memory plan at real model
 * shapes, computed on any machine (no GPU, no weights): the trainer's own
 * planning code (train/backend.h qt_backend_gpu_plan: model_cuda's setup run
 * in its measuring mode, the resident adapters, the optimizer state, cuBLASLt's
 * workspace) over a model that has the shapes of a 4-bit NF4 checkpoint with
 * double quantization (blocksize 64) and no weight data, which the measuring
 * mode never reads.
 *
 *   bench_gpu_plan              Llama-3.2-1B and Llama-3-8B shapes, seq 2048,
 *                               micro-batch 1 and 2, LoRA r 16 on all seven
 *                               projections, dropout 0.05, paged 8-bit AdamW,
 *                               with and without gradient checkpointing, and
 *                               checkpointed with activation offloading
 *                               (training.activation_offloading: the layer
 *                               inputs in pinned host memory, a ring of 2 on
 *                               the device; the host bytes in their own
 *                               column, not in the planned total).
 *
 * Shapes: meta-llama/Llama-3.2-1B and Meta-Llama-3-8B config.json (hidden,
 * layers, heads, KV heads, MLP, vocabulary, tied embeddings). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora/lora.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "optim/optim.h"
#include "train/backend.h"

typedef struct {
  const char *name;
  int64_t C, L, H, K, F, V;
  bool tied;
} shape;

static const shape SHAPES[] = {
    {"Llama-3.2-1B", 2048, 16, 32, 8, 8192, 128256, true},
    {"Llama-3-8B", 4096, 32, 32, 8, 14336, 128256, false},
};

static float dummy[4]; /* the weights' pointers: never read while measuring */
static float dummy2[4];

/* A model with the shapes and 4-bit layout, no data. */
static qt_model *skeleton(const shape *s) {
  qt_model *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->cfg.arch = QT_HF_LLAMA;
  m->cfg.act = QT_HF_ACT_SILU;
  m->cfg.rms_norm_eps = 1e-5;
  m->cfg.tie_word_embeddings = s->tied;
  m->C = s->C;
  m->L = s->L;
  m->H = s->H;
  m->K = s->K;
  m->D = s->C / s->H;
  m->F = s->F;
  m->V = s->V;
  m->embed = dummy;
  m->lm_head = s->tied ? dummy : dummy2;
  m->final_norm = dummy;
  m->inv_freq = dummy;
  m->layers = calloc((size_t)s->L, sizeof *m->layers);
  if (!m->layers) return NULL;
  int64_t HD = m->H * m->D, KD = m->K * m->D;
  const int64_t out[7] = {HD, KD, KD, s->C, s->F, s->F, s->C}, in[7] = {s->C, s->C, s->C, HD, s->C, s->C, s->F};
  for (int64_t l = 0; l < s->L; l++) {
    m->layers[l].input_norm = dummy;
    m->layers[l].post_norm = dummy;
    for (int p = 0; p < 7; p++) {
      qt_model_linear *lin = &m->layers[l].proj[p];
      lin->out = out[p];
      lin->in = in[p];
      lin->quantized = true;
      lin->q.type = QT_QUANT_NF4;
      lin->q.blocksize = 64;
      lin->q.n = out[p] * in[p];
      lin->q.nblocks = (lin->q.n + 63) / 64;
      lin->q.nested = true;
      lin->q.nested_blocksize = 256;
    }
  }
  return m;
}

int main(void) {
  printf("| shape | micro-batch x seq | checkpointing | offloading | weights + LoRA buffers | activations | adapters + "
         "grads | optimizer | workspace | planned (GiB) | pinned host (GiB) |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t si = 0; si < sizeof SHAPES / sizeof SHAPES[0]; si++) {
    const shape *s = &SHAPES[si];
    qt_model *m = skeleton(s);
    if (!m) return 1;
    /* LoRA r 16 on all seven projections: A (r, in), B (out, r) per linear */
    size_t n_ts = (size_t)(s->L * 7 * 2);
    qt_lora_tensor *ts = calloc(n_ts, sizeof *ts);
    if (!ts) return 1;
    for (int64_t l = 0; l < s->L; l++)
      for (int p = 0; p < 7; p++) {
        const qt_model_linear *lin = &m->layers[l].proj[p];
        qt_lora_tensor *a = &ts[(l * 7 + p) * 2], *b = a + 1;
        a->rows = 16;
        a->cols = lin->in;
        b->rows = lin->out;
        b->cols = 16;
        b->is_B = true;
      }
    qt_adamw_config oc;
    qt_adamw_config_default(&oc, 8);
    oc.paged = true;
    for (int64_t B = 1; B <= 2; B++)
      for (int v = 0; v < 3; v++) { /* checkpointed, checkpointed + offloaded, all kept */
        bool ck = v < 2, off = v == 1;
        qt_gpu_plan pl;
        if (qt_backend_gpu_plan(m, ts, n_ts, B, 2048, 16, true, ck, off, true, &oc, &pl) != QT_OK) {
          fprintf(stderr, "%s: %s\n", s->name, qt_error_message());
          return 1;
        }
        double g = 1.0 / 1073741824.0;
        printf("| %s | %lld x 2048 | %s | %s | %.2f | %.2f | %.2f | %.2f | %.3f | **%.2f** | %.2f |\n", s->name,
               (long long)B, ck ? "yes" : "no", off ? "yes" : "no", (double)pl.weights * g,
               (double)pl.activations * g, (double)pl.lora * g, (double)pl.optimizer * g, (double)pl.workspace * g,
               (double)pl.total * g, (double)pl.pinned * g);
      }
    free(ts);
    free(m->layers);
    free(m);
  }
  return 0;
}
