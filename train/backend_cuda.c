/* train/backend_cuda.c — the cuda implementation of the backend interface
 * (backend.h) over model/model_cuda.h: the weights are uploaded once into a
 * persistent context sized for the largest micro-batch (after the device
 * memory plan is printed and checked); qt_backend_cuda_step_init puts the
 * adapters (bf16 weights, fp32 masters, fp32 gradient accumulators) on the
 * device, where the model reads them in place and adds each micro-batch's
 * gradients, the norm is reduced and the optimizer updates them; per
 * micro-batch only the batch goes up (the dropout streams are named: the GPU
 * draws the masks itself) and the loss comes back. Evaluation runs the
 * device's forward with the adapters applied (the host's weights in an
 * eval-only backend). Generation decodes on the device with a KV cache
 * (qt_model_cuda_decoder_init over the context). */
#ifdef QLORA_HAVE_CUDA

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cuda_check.h"
#include "common/status.h"
#include "lora/lora.h"
#include "model/model_cuda.h"
#include "train/backend.h"

typedef struct {
  qt_model_cuda *ctx;      /* weights and buffers on the GPU */
  qt_model_cuda_lora *cl;  /* one entry per adapted linear (A, B pairs of qt_lora_tensors) */
  size_t n_cl;
  qt_lora_tensor *ts;      /* the adapters' tensors (A at 2i, B at 2i + 1) */
  size_t n_ts;
  /* qt_backend_cuda_step_init: the adapters on the device */
  bool resident;
  void *dmem;              /* one cudaMalloc holding all of the below */
  size_t dmem_bytes;
  uint16_t **dw;           /* (n_ts) bf16 weights (what the model reads) */
  float **dmaster;         /* (n_ts) fp32 master weights, or NULL each (bf16 storage) */
  float **dgrad;           /* (n_ts) fp32 gradients, accumulated over a step's micro-batches */
  int64_t *numel;          /* (n_ts) */
  qt_optim_clip_cuda clip; /* the global norm on the device */
  bool clip_ok;
} cuda_impl;

static size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Device bytes of one adapter tensor when resident: bf16 weights, the fp32
 * master when there is one, fp32 gradients (each 256-byte aligned). */
static size_t resident_bytes(const qt_lora_tensor *t) {
  size_t k = (size_t)(t->rows * t->cols);
  return round256(k * 2) + (t->master ? round256(k * 4) : 0) + round256(k * 4);
}

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
  QT_ASSERT(c->resident); /* the gradients are added into the device accumulators */
  return qt_model_cuda_forward_backward(c->ctx, c->cl, c->n_cl, qt_lora_scale(b->s->lora), mb, dloss, loss_sum,
                                        count);
}

static qt_status cuda_eval_micro(qt_backend *b, const qt_model_batch *mb, double *loss_sum, int64_t *count) {
  cuda_impl *c = b->impl;
  QT_TRY(bind_dropout(b, c)); /* eval mode: every entry without dropout */
  return qt_model_cuda_loss(c->ctx, c->cl, c->n_cl, b->s->lora ? qt_lora_scale(b->s->lora) : 1.0, mb, loss_sum,
                            count);
}

static size_t cuda_pinned_bytes(const qt_backend *b) {
  const cuda_impl *c = b->impl;
  return qt_model_cuda_host_bytes(c->ctx);
}

static size_t cuda_device_bytes(const qt_backend *b) {
  const cuda_impl *c = b->impl;
  return qt_model_cuda_device_bytes(c->ctx) + c->dmem_bytes;
}

/* ---- the optimizer step's data (resident after qt_backend_cuda_step_init) ---- */

static qt_status copy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
  cudaError_t e = cudaMemcpy(dst, src, bytes, kind);
  if (e != cudaSuccess) return QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaMemcpy");
  return QT_OK;
}

/* The step's operations run after qt_backend_cuda_step_init (the driver
 * calls it before making the optimizer): the adapters are resident. */
static qt_status cuda_zero_grad(qt_backend *b) {
  cuda_impl *c = b->impl;
  QT_ASSERT(c->resident);
  for (size_t i = 0; i < c->n_ts; i++) {
    cudaError_t e = cudaMemset(c->dgrad[i], 0, (size_t)c->numel[i] * sizeof(float));
    if (e != cudaSuccess) return QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaMemset");
  }
  return QT_OK;
}

static qt_status cuda_grads_to_host(qt_backend *b, float *flat) {
  cuda_impl *c = b->impl;
  QT_ASSERT(c->resident);
  for (size_t i = 0; i < c->n_ts; i++) {
    QT_TRY(copy(flat, c->dgrad[i], (size_t)c->numel[i] * sizeof(float), cudaMemcpyDeviceToHost));
    flat += c->numel[i];
  }
  return QT_OK;
}

static qt_status cuda_grads_from_host(qt_backend *b, const float *flat) {
  cuda_impl *c = b->impl;
  QT_ASSERT(c->resident);
  for (size_t i = 0; i < c->n_ts; i++) {
    QT_TRY(copy(c->dgrad[i], flat, (size_t)c->numel[i] * sizeof(float), cudaMemcpyHostToDevice));
    flat += c->numel[i];
  }
  return QT_OK;
}

static qt_status cuda_grad_norm(qt_backend *b, double *norm) {
  cuda_impl *c = b->impl;
  QT_ASSERT(c->resident);
  qt_optim_clip_result res;
  QT_TRY(qt_optim_clip_cuda_norm(&c->clip, 0.0, NULL)); /* the coefficient is made on the host */
  QT_TRY(qt_optim_clip_cuda_result(&c->clip, &res, NULL));
  *norm = res.norm;
  return QT_OK;
}

static qt_status cuda_after_update(qt_backend *b) {
  cuda_impl *c = b->impl;
  QT_ASSERT(c->resident);
  for (size_t i = 0; i < c->n_ts; i++) /* the model reads bf16: round the masters */
    if (c->dmaster[i]) QT_TRY(qt_model_cuda_round_bf16(c->dw[i], c->dmaster[i], c->numel[i]));
  return QT_OK;
}

static qt_status cuda_sync_host(qt_backend *b, qt_adamw *opt) {
  cuda_impl *c = b->impl;
  if (!c->resident) return QT_OK;
  for (size_t i = 0; i < c->n_ts; i++) {
    qt_lora_tensor *t = &c->ts[i];
    QT_TRY(copy(t->bf16, c->dw[i], (size_t)c->numel[i] * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    if (t->master) QT_TRY(copy(t->master, c->dmaster[i], (size_t)c->numel[i] * sizeof(float), cudaMemcpyDeviceToHost));
  }
  qt_lora_sync(b->s->lora);
  return opt ? qt_adamw_state_fetch(opt) : QT_OK;
}

static void cuda_destroy(qt_backend *b) {
  cuda_impl *c = b->impl;
  if (!c) return;
  if (c->clip_ok) qt_optim_clip_cuda_free(&c->clip);
  if (c->dmem) (void)cudaFree(c->dmem);
  free(c->dw);
  free(c->dmaster);
  free(c->dgrad);
  free(c->numel);
  qt_model_cuda_free(&c->ctx);
  free(c->cl);
  free(c);
  b->impl = NULL;
}

static qt_status cuda_decoder(qt_backend *b, int64_t cap, int64_t max_rows, qt_model_decoder **out) {
  cuda_impl *c = b->impl;
  return qt_model_cuda_decoder_init(c->ctx, c->cl, c->n_cl, b->s->lora ? qt_lora_scale(b->s->lora) : 1.0, cap,
                                    max_rows, out);
}

static const qt_backend_ops CUDA_OPS = {
    .name = "cuda",
    .train_micro = cuda_train_micro,
    .eval_micro = cuda_eval_micro,
    .decoder = cuda_decoder,
    .device_bytes = cuda_device_bytes,
    .pinned_bytes = cuda_pinned_bytes,
    .destroy = cuda_destroy,
    .zero_grad = cuda_zero_grad,
    .grads_to_host = cuda_grads_to_host,
    .grads_from_host = cuda_grads_from_host,
    .grad_norm = cuda_grad_norm,
    .after_update = cuda_after_update,
    .sync_host = cuda_sync_host,
};

qt_status qt_backend_cuda_step_init(qt_backend *b) {
  cuda_impl *c = b->impl;
  size_t n = c->n_ts;
  c->dw = calloc(n ? n : 1, sizeof *c->dw);
  c->dmaster = calloc(n ? n : 1, sizeof *c->dmaster);
  c->dgrad = calloc(n ? n : 1, sizeof *c->dgrad);
  c->numel = calloc(n ? n : 1, sizeof *c->numel);
  b->params = calloc(n ? n : 1, sizeof *b->params);
  b->grads = calloc(n ? n : 1, sizeof *b->grads);
  if (!c->dw || !c->dmaster || !c->dgrad || !c->numel || !b->params || !b->grads)
    return qt_fail(QT_ERR_NOMEM, "out of memory");
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    c->numel[i] = c->ts[i].rows * c->ts[i].cols;
    total += resident_bytes(&c->ts[i]);
  }
  cudaError_t e = cudaMalloc(&c->dmem, total ? total : 1);
  if (e != cudaSuccess)
    return qt_fail(QT_ERR_CUDA, "training.device cuda: cannot allocate %.1f MiB of device memory for the LoRA "
                   "weights and gradients (%s)", (double)total / 1048576.0, cudaGetErrorString(e));
  c->dmem_bytes = total;
  uint8_t *p = c->dmem;
  for (size_t i = 0; i < n; i++) {
    const qt_lora_tensor *t = &c->ts[i];
    size_t k = (size_t)c->numel[i];
    int64_t shp[2] = {t->rows, t->cols};
    c->dw[i] = (uint16_t *)p;
    p += round256(k * 2);
    QT_TRY(copy(c->dw[i], t->bf16, k * 2, cudaMemcpyHostToDevice));
    if (t->master) {
      c->dmaster[i] = (float *)p;
      p += round256(k * 4);
      QT_TRY(copy(c->dmaster[i], t->master, k * 4, cudaMemcpyHostToDevice));
    }
    c->dgrad[i] = (float *)p;
    p += round256(k * 4);
    b->params[i] = t->master ? qt_tensor_make(QT_F32, QT_DEV_CUDA, 2, shp, c->dmaster[i])
                             : qt_tensor_make(QT_BF16, QT_DEV_CUDA, 2, shp, c->dw[i]);
    b->grads[i] = qt_tensor_make(QT_F32, QT_DEV_CUDA, 2, shp, c->dgrad[i]);
  }
  for (size_t i = 0; i < c->n_cl; i++) { /* the model reads and accumulates in place */
    c->cl[i].dev_A = c->dw[2 * i];
    c->cl[i].dev_B = c->dw[2 * i + 1];
    c->cl[i].dev_dA = c->dgrad[2 * i];
    c->cl[i].dev_dB = c->dgrad[2 * i + 1];
  }
  QT_TRY(qt_optim_clip_cuda_init(&c->clip, c->dgrad, c->numel, n));
  c->clip_ok = true;
  c->resident = true;
  b->n_params = n;
  b->device = QT_DEV_CUDA;
  return cuda_zero_grad(b);
}

bool qt_backend_cuda_composes(const qt_hf_config *c) { return qt_model_cuda_composes(c); }

qt_status qt_backend_gpu_plan(const qt_model *m, const qt_lora_tensor *ts, size_t n_ts, int64_t max_B,
                              int64_t max_T, int64_t max_r, bool train, bool checkpoint, bool offload,
                              bool dropout, const qt_adamw_config *optimizer, qt_gpu_plan *out) {
  const qt_model_cuda_opts mo = {.checkpoint = checkpoint, .offload = offload};
  memset(out, 0, sizeof *out);
  size_t ctx = 0;
  QT_TRY(qt_model_cuda_plan_bytes(m, max_B, max_T, max_r, &mo, dropout, &ctx, &out->pinned));
  QT_TRY(qt_model_cuda_plan_bytes(m, 1, 1, max_r, &mo, false, &out->weights, NULL));
  out->activations = ctx - out->weights;
  out->workspace = QT_MODEL_CUDA_GEMM_WORKSPACE;
  if (train && n_ts > 0) {
    int64_t *numels = calloc(n_ts, sizeof *numels);
    if (!numels) return qt_fail(QT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n_ts; i++) {
      numels[i] = ts[i].rows * ts[i].cols;
      out->lora += resident_bytes(&ts[i]);
    }
    if (optimizer) {
      qt_adamw_config oc = *optimizer;
      oc.device = QT_DEV_CUDA;
      out->optimizer = qt_adamw_alloc_bytes(&oc, n_ts, numels);
    }
    free(numels);
  }
  out->total = ctx + out->lora + out->optimizer + out->workspace;
  return QT_OK;
}

/* One shared set of layer activations: training with
 * training.gradient_checkpointing, and every forward-only context
 * (evaluation, generation: nothing is kept for a backward). The layer inputs
 * in pinned host memory: training with checkpointing and
 * training.activation_offloading (a forward-only context keeps no inputs). */
static qt_model_cuda_opts model_opts(const qt_backend *b, const qt_backend_opts *o) {
  const qt_config *cfg = &b->s->cfg;
  bool ckpt = !o->train || cfg->training.gradient_checkpointing;
  return (qt_model_cuda_opts){.checkpoint = ckpt,
                              .offload = o->train && ckpt && cfg->training.activation_offloading};
}

/* The device memory plan (backend.h qt_backend_open), printed and checked. */
static qt_status device_plan(qt_backend *b, const qt_backend_opts *o, int64_t max_r) {
  const cuda_impl *c = b->impl;
  bool dropout = o->train && b->s->lora && b->s->cfg.lora.dropout > 0;
  qt_gpu_plan pl;
  qt_model_cuda_opts mo = model_opts(b, o);
  QT_TRY(qt_backend_gpu_plan(b->s->model, c->ts, c->n_ts, o->max_B, o->max_T, max_r, o->train, mo.checkpoint,
                             mo.offload, dropout, o->optimizer, &pl));
  size_t fixed = pl.weights, lora = pl.lora, opt = pl.optimizer, ws = pl.workspace, total = pl.total;
  size_t ctx = pl.weights + pl.activations;
  size_t free_b = 0, total_b = 0;
  cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
  if (e != cudaSuccess) return QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaMemGetInfo");
  double mib = 1.0 / 1048576.0;
  if (o->print_plan) {
    fprintf(stderr,
            "device memory plan (GPU):\n"
            "  weights and per-linear LoRA buffers  %10.1f MiB\n"
            "  activations                          %10.1f MiB  (%lld x %lld tokens, %s%s)\n"
            "  LoRA weights and fp32 gradients      %10.1f MiB\n"
            "  optimizer state                      %10.1f MiB\n"
            "  cuBLASLt workspace                   %10.1f MiB\n"
            "  planned                              %10.1f MiB  (free now %.1f of %.1f MiB)\n",
            (double)fixed * mib, (double)(ctx - fixed) * mib, (long long)o->max_B, (long long)o->max_T,
            !o->train      ? "forward only: one layer's set"
            : mo.offload   ? "checkpointed, inputs offloaded: 2 staging inputs + one layer"
            : mo.checkpoint ? "checkpointed: layer inputs + one layer"
                           : "all kept",
            dropout ? ", dropout scratches" : "", (double)lora * mib, (double)opt * mib, (double)ws * mib,
            (double)total * mib, (double)free_b * mib, (double)total_b * mib);
    if (mo.offload)
      fprintf(stderr, "  host (pinned, not on the GPU): offloaded layer inputs %.1f MiB\n", (double)pl.pinned * mib);
  }
  /* beyond the plan: cuBLASLt's and the CUDA runtime's own allocations, the
   * rounding of some thousand cudaMallocs, the norm's tables, NCCL's buffers */
  size_t margin = total / 50 > ((size_t)256 << 20) ? total / 50 : ((size_t)256 << 20);
  if (total + margin > free_b)
    return qt_fail(QT_ERR_NOMEM,
                   "training.device cuda: the GPU plan needs %.0f MiB (weights and LoRA buffers %.0f, activations "
                   "for %lld x %lld tokens %.0f, LoRA weights and gradients %.0f, optimizer state %.0f, cuBLASLt "
                   "workspace %.0f; and a margin of %.0f) but the GPU has %.0f MiB free of %.0f. Lower data.seq_len or "
                   "training.micro_batch_size (activations grow with both; raise "
                   "training.gradient_accumulation_steps to keep the batch), lower lora.r, or set "
                   "training.device: cpu%s",
                   (double)total * mib, (double)fixed * mib, (long long)o->max_B, (long long)o->max_T,
                   (double)(ctx - fixed) * mib, (double)lora * mib, (double)opt * mib, (double)ws * mib,
                   (double)margin * mib, (double)free_b * mib, (double)total_b * mib,
                   !mo.checkpoint ? "; training.gradient_checkpointing: true keeps only each layer's input"
                   : !mo.offload  ? "; training.activation_offloading: true moves the layer inputs to host memory"
                                  : "");
  return QT_OK;
}

qt_status qt_backend_cuda_open(qt_backend *b, const qt_backend_opts *o) {
  cuda_impl *c = calloc(1, sizeof *c);
  if (!c) return qt_fail(QT_ERR_NOMEM, "out of memory");
  b->impl = c;
  b->ops = &CUDA_OPS;
  qt_status r = QT_OK;
  int64_t max_r = 1;
  size_t n_par = 0;
  if (b->s->lora) c->ts = qt_lora_tensors(b->s->lora, &n_par);
  c->n_ts = n_par;
  c->n_cl = n_par / 2;
  c->cl = calloc(c->n_cl ? c->n_cl : 1, sizeof *c->cl);
  if (!c->cl) {
    r = qt_fail(QT_ERR_NOMEM, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < c->n_cl; i++) {
    const qt_lora_tensor *A = &c->ts[2 * i], *B = &c->ts[2 * i + 1];
    QT_ASSERT(!A->is_B && B->is_B && A->layer == B->layer && A->proj == B->proj);
    /* the host weights until qt_backend_cuda_step_init makes them resident */
    c->cl[i] = (qt_model_cuda_lora){.layer = A->layer, .proj = A->proj, .r = A->rows, .A = A->data, .B = B->data,
                                    .keep_scale = 1.0};
    if (A->rows > max_r) max_r = A->rows;
  }
  if ((r = device_plan(b, o, max_r)) != QT_OK) goto fail;
  qt_model_cuda_opts mo = model_opts(b, o);
  if ((r = qt_model_cuda_init(b->s->model, o->max_B, o->max_T, max_r, &mo, &c->ctx)) != QT_OK) {
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
