/* train/backend_cuda.c — the cuda implementation of the backend interface
 * (backend.h) over model/model_cuda.h: the weights are uploaded once into a
 * persistent context sized for the largest micro-batch; per micro-batch the
 * adapters' A and B go up, the dropout streams of the step are named (the GPU
 * draws the masks itself), and the LoRA gradients come back and are added
 * into the adapters' grad buffers. Evaluation runs the device's forward with
 * the adapters applied. There is no device decoder yet: generation uses the
 * cpu backend's (ops.decoder NULL). */
#ifdef QLORA_HAVE_CUDA

#include <stdlib.h>

#include "common/status.h"
#include "lora/lora.h"
#include "model/model_cuda.h"
#include "train/backend.h"

typedef struct {
  qt_model_cuda *ctx;      /* weights and buffers on the GPU */
  qt_model_cuda_lora *cl;  /* one entry per adapted linear (A, B pairs of qt_lora_tensors) */
  size_t n_cl;
  float *grad;             /* the entries' dA, dB of one micro-batch, packed */
  qt_lora_tensor *ts;      /* the adapters' tensors (A at 2i, B at 2i + 1) */
} cuda_impl;

/* The entries' current dropout streams (the step qt_lora_set_step named; none in eval mode). */
static qt_status bind_dropout(qt_backend *b, cuda_impl *c) {
  for (size_t i = 0; i < c->n_cl; i++) {
    qt_model_cuda_lora *e = &c->cl[i];
    QT_TRY(qt_lora_dropout_stream(b->s->lora, e->layer, e->proj, &e->dropout_key, &e->dropout_subsequence,
                                  &e->dropout_threshold, &e->keep_scale, &e->dropout));
  }
  return QT_OK;
}

static qt_status cuda_train_micro(qt_backend *b, const qt_model_batch *mb, double dloss, double *loss_sum,
                                  int64_t *count) {
  cuda_impl *c = b->impl;
  QT_TRY(bind_dropout(b, c));
  QT_TRY(qt_model_cuda_forward_backward(c->ctx, c->cl, c->n_cl, qt_lora_scale(b->s->lora), mb, dloss,
                                        loss_sum, count));
  for (size_t i = 0; i < c->n_cl; i++) { /* gradients accumulate over the micro-batches */
    qt_lora_tensor *A = &c->ts[2 * i], *B = &c->ts[2 * i + 1];
    const float *dA = c->cl[i].dA, *dB = c->cl[i].dB;
    for (int64_t k = 0; k < A->rows * A->cols; k++) A->grad[k] += dA[k];
    for (int64_t k = 0; k < B->rows * B->cols; k++) B->grad[k] += dB[k];
  }
  return QT_OK;
}

static qt_status cuda_eval_micro(qt_backend *b, const qt_model_batch *mb, double *loss_sum, int64_t *count) {
  cuda_impl *c = b->impl;
  QT_TRY(bind_dropout(b, c)); /* eval mode: every entry without dropout */
  return qt_model_cuda_loss(c->ctx, c->cl, c->n_cl, b->s->lora ? qt_lora_scale(b->s->lora) : 1.0, mb, loss_sum,
                            count);
}

static size_t cuda_device_bytes(const qt_backend *b) {
  const cuda_impl *c = b->impl;
  return qt_model_cuda_device_bytes(c->ctx);
}

static void cuda_destroy(qt_backend *b) {
  cuda_impl *c = b->impl;
  if (!c) return;
  qt_model_cuda_free(&c->ctx);
  free(c->cl);
  free(c->grad);
  free(c);
  b->impl = NULL;
}

static const qt_backend_ops CUDA_OPS = {
    .name = "cuda",
    .train_micro = cuda_train_micro,
    .eval_micro = cuda_eval_micro,
    .decoder = NULL,
    .device_bytes = cuda_device_bytes,
    .destroy = cuda_destroy,
};

bool qt_backend_cuda_composes(const qt_hf_config *c) { return qt_model_cuda_composes(c); }

qt_status qt_backend_cuda_open(qt_backend *b, const qt_backend_opts *o) {
  cuda_impl *c = calloc(1, sizeof *c);
  if (!c) return qt_fail(QT_ERR_NOMEM, "out of memory");
  b->impl = c;
  b->ops = &CUDA_OPS;
  qt_status r = QT_OK;
  int64_t max_r = 1, n_grad = 0;
  size_t n_par = 0;
  if (b->s->lora) c->ts = qt_lora_tensors(b->s->lora, &n_par);
  c->n_cl = n_par / 2;
  for (size_t i = 0; i < n_par; i++) n_grad += c->ts[i].rows * c->ts[i].cols;
  c->cl = calloc(c->n_cl ? c->n_cl : 1, sizeof *c->cl);
  c->grad = calloc((size_t)(n_grad ? n_grad : 1), sizeof *c->grad);
  if (!c->cl || !c->grad) {
    r = qt_fail(QT_ERR_NOMEM, "out of memory (%lld LoRA gradients for the GPU path)", (long long)n_grad);
    goto fail;
  }
  float *g = c->grad;
  for (size_t i = 0; i < c->n_cl; i++) {
    const qt_lora_tensor *A = &c->ts[2 * i], *B = &c->ts[2 * i + 1];
    QT_ASSERT(!A->is_B && B->is_B && A->layer == B->layer && A->proj == B->proj);
    c->cl[i] = (qt_model_cuda_lora){.layer = A->layer, .proj = A->proj, .r = A->rows, .A = A->data, .B = B->data,
                                    .dA = g, .dB = g + A->rows * A->cols, .keep_scale = 1.0};
    g += A->rows * A->cols + B->rows * B->cols;
    if (A->rows > max_r) max_r = A->rows;
  }
  (void)o->train;
  if ((r = qt_model_cuda_init(b->s->model, o->max_B, o->max_T, max_r, &c->ctx)) != QT_OK) {
    qt_error_context("training.device cuda: uploading the model for micro-batches of %lld x %lld tokens",
                     (long long)o->max_B, (long long)o->max_T);
    goto fail;
  }
  return QT_OK;
fail:
  cuda_destroy(b);
  b->ops = NULL;
  return r;
}

#endif
