/* train/backend.c — the backend interface (backend.h) and its cpu
 * implementation: the autograd tape (model.h) and the KV-cache decoder. */
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "train/backend.h"

static qt_status cpu_train_micro(qt_backend *b, const qt_model_batch *mb, double dloss, double *loss_sum,
                                 int64_t *count) {
  return qt_model_forward_backward(b->s->mt, b->adp, mb, true, dloss, loss_sum, count);
}

static qt_status cpu_eval_micro(qt_backend *b, const qt_model_batch *mb, double *loss_sum, int64_t *count) {
  return qt_model_forward_backward(b->s->mt, b->adp, mb, false, 0.0, loss_sum, count);
}

static qt_status cpu_decoder(qt_backend *b, int64_t cap, int64_t max_rows, qt_model_decoder **out) {
  return qt_model_decoder_init(b->s->mt, b->adp, cap, max_rows, out);
}

static size_t cpu_device_bytes(const qt_backend *b) {
  (void)b;
  return 0;
}

static size_t cpu_pinned_bytes(const qt_backend *b) {
  (void)b;
  return 0;
}

static void cpu_destroy(qt_backend *b) { (void)b; }

static qt_status cpu_zero_grad(qt_backend *b) {
  qt_lora_zero_grad(b->s->lora);
  return QT_OK;
}

static qt_status cpu_grads_to_host(qt_backend *b, float *flat) {
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(b->s->lora, &n);
  for (size_t i = 0; i < n; i++) {
    size_t k = (size_t)(ts[i].rows * ts[i].cols);
    memcpy(flat, ts[i].grad, k * sizeof *flat);
    flat += k;
  }
  return QT_OK;
}

static qt_status cpu_grads_from_host(qt_backend *b, const float *flat) {
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(b->s->lora, &n);
  for (size_t i = 0; i < n; i++) {
    size_t k = (size_t)(ts[i].rows * ts[i].cols);
    memcpy(ts[i].grad, flat, k * sizeof *flat);
    flat += k;
  }
  return QT_OK;
}

static qt_status cpu_grad_norm(qt_backend *b, double *norm) {
  *norm = qt_optim_global_norm(b->grads, b->n_params);
  return QT_OK;
}

static qt_status cpu_after_update(qt_backend *b) {
  qt_lora_sync(b->s->lora);
  return QT_OK;
}

static qt_status cpu_sync_host(qt_backend *b, qt_adamw *opt) {
  (void)b;
  (void)opt;
  return QT_OK;
}

static const qt_backend_ops CPU_OPS = {
    .name = "cpu",
    .train_micro = cpu_train_micro,
    .eval_micro = cpu_eval_micro,
    .decoder = cpu_decoder,
    .device_bytes = cpu_device_bytes,
    .pinned_bytes = cpu_pinned_bytes,
    .destroy = cpu_destroy,
    .zero_grad = cpu_zero_grad,
    .grads_to_host = cpu_grads_to_host,
    .grads_from_host = cpu_grads_from_host,
    .grad_norm = cpu_grad_norm,
    .after_update = cpu_after_update,
    .sync_host = cpu_sync_host,
};

qt_status qt_backend_step_init(qt_backend *b) {
  QT_ASSERT(b->s->lora && !b->params);
#ifdef QLORA_HAVE_CUDA
  if (b->ops != &CPU_OPS) return qt_backend_cuda_step_init(b);
#endif
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(b->s->lora, &n);
  b->params = calloc(n ? n : 1, sizeof *b->params);
  b->grads = calloc(n ? n : 1, sizeof *b->grads);
  if (!b->params || !b->grads) return qt_fail(QT_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    int64_t shp[2] = {ts[i].rows, ts[i].cols};
    b->params[i] = ts[i].master ? qt_tensor_make(QT_F32, QT_DEV_CPU, 2, shp, ts[i].master)
                                : qt_tensor_make(QT_BF16, QT_DEV_CPU, 2, shp, ts[i].bf16);
    b->grads[i] = qt_tensor_make(QT_F32, QT_DEV_CPU, 2, shp, ts[i].grad);
  }
  b->n_params = n;
  b->device = QT_DEV_CPU;
  return QT_OK;
}

qt_backend_kind qt_backend_kind_of(const qt_config *c) {
  return c->training.device == QT_DEVICE_CUDA ? QT_BACKEND_CUDA : QT_BACKEND_CPU;
}

#ifndef QLORA_HAVE_CUDA
bool qt_backend_cuda_composes(const qt_hf_config *c) {
  (void)c;
  return false;
}
#endif

qt_status qt_backend_open(qt_session *s, const qt_backend_opts *o, qt_backend **out) {
  QT_ASSERT(s && o && out && o->max_B >= 1 && o->max_T >= 1);
  *out = NULL;
  qt_backend *b = calloc(1, sizeof *b);
  if (!b) return qt_fail(QT_ERR_NOMEM, "out of memory");
  b->s = s;
  if (s->lora) {
    b->adapter = qt_lora_adapter(s->lora);
    b->adp = &b->adapter;
  }
  qt_status r = QT_OK;
  if (o->kind == QT_BACKEND_CPU) {
    QT_ASSERTF(s->mt, "backend cpu: the session has no tape (qt_session_tape first)");
    b->ops = &CPU_OPS;
  } else {
#ifdef QLORA_HAVE_CUDA
    r = qt_backend_cuda_open(b, o);
#else
    r = qt_fail(QT_ERR_UNSUPPORTED, "training.device: cuda, but this qlora-train was built without the CUDA backend");
#endif
  }
  if (r != QT_OK) {
    free(b);
    return r;
  }
  *out = b;
  return QT_OK;
}

void qt_backend_close(qt_backend **pb) {
  if (!pb || !*pb) return;
  qt_backend *b = *pb;
  if (b->ops) b->ops->destroy(b);
  free(b->params);
  free(b->grads);
  free(b);
  *pb = NULL;
}
