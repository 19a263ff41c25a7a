/* train/backend.h — one step driver, two backends.
 *
 * The training loop (train_loop.c), evaluation (qt_session_eval: the `eval`
 * command and the loop's periodic eval) and generation (cmd_generate.c) call
 * the model through a qt_backend and nothing else: its operations are the
 * only places where the CPU and the GPU differ. Two implementations:
 *   - cpu  (backend.c): the autograd tape of model.h (qt_model_tape, which
 *     the session made with qt_session_tape) and the KV-cache decoder of
 *     model/decode.c;
 *   - cuda (backend_cuda.c, built with the CUDA backend): model/model_cuda.h,
 *     the decoder written op by op on the GPU with bf16 storage.
 * What stays in the driver, shared by both: batching and target counts, the
 * gradient reduction over ranks, the global norm, clipping and the non-finite
 * check, the optimizer, the schedule, checkpoints and metrics. The LoRA
 * gradients a backend produces land in the adapters' fp32 `grad` buffers on
 * the host (lora.h), added (+=) across the micro-batches of a step, so the
 * rest of the step is the same code for both.
 *
 * LoRA dropout: a backend draws the masks of the step set by qt_lora_set_step
 * (lora.h): the CPU tape through the adapter hook, the GPU inside its kernels
 * from the same Philox streams (qt_lora_dropout_stream), so both backends
 * drop the same inputs. */
#ifndef QT_TRAIN_BACKEND_H
#define QT_TRAIN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "model/model.h"
#include "optim/optim.h"
#include "train/session.h"

typedef struct qt_backend qt_backend;

typedef struct {
  const char *name; /* "cpu", "cuda" */
  /* Forward and backward of one micro-batch (targets required), with the
   * adapters' dropout of the current step; d(objective)/d(loss_sum) = dloss.
   * Adds the LoRA gradients into the adapters' grad buffers. *loss_sum: the
   * summed CE over the targets, *count: the number of targets. */
  qt_status (*train_micro)(qt_backend *b, const qt_model_batch *mb, double dloss, double *loss_sum,
                           int64_t *count);
  /* Forward only, adapters in eval mode (no dropout): *loss_sum, *count as above. */
  qt_status (*eval_micro)(qt_backend *b, const qt_model_batch *mb, double *loss_sum, int64_t *count);
  /* A KV-cache decoder (model.h qt_model_decoder_init's contract). */
  qt_status (*decoder)(qt_backend *b, int64_t cap, int64_t max_rows, qt_model_decoder **out);
  /* Bytes this backend holds on its device beyond the host's (0 for the cpu). */
  size_t (*device_bytes)(const qt_backend *b);
  /* Page-locked host bytes it holds (cuda with training.activation_offloading:
   * the offloaded layer inputs; 0 otherwise): part of the host memory plan. */
  size_t (*pinned_bytes)(const qt_backend *b);

  /* ---- the optimizer step's data (after qt_backend_step_init) ---- */
  /* Zeroes the LoRA gradients before a step's first micro-batch. */
  qt_status (*zero_grad)(qt_backend *b);
  /* The step's gradients to and from a flat host array in qt_lora_tensors
   * order (the reduction over ranks; a test hook): the cpu copies, the cuda
   * backend downloads / uploads. */
  qt_status (*grads_to_host)(qt_backend *b, float *flat);
  qt_status (*grads_from_host)(qt_backend *b, const float *flat);
  /* The global L2 norm of the step's gradients (optim.h's fixed order; NaN
   * or Inf when one is not finite); the cuda backend computes it on the
   * device and brings back only the norm. */
  qt_status (*grad_norm)(qt_backend *b, double *norm);
  /* After qt_adamw_step updated the parameter tensors: the adapters' other
   * copies follow (cpu: qt_lora_sync; cuda: bf16 weights from an fp32 master). */
  qt_status (*after_update)(qt_backend *b);
  /* Before anything reads the adapters or the optimizer state on the host (a
   * checkpoint, the end of the run): the cuda backend downloads the weights
   * into the adapters and fetches the optimizer state (qt_adamw_state_fetch). */
  qt_status (*sync_host)(qt_backend *b, qt_adamw *opt);
  void (*destroy)(qt_backend *b);
} qt_backend_ops;

struct qt_backend {
  const qt_backend_ops *ops;
  qt_session *s;               /* borrowed: model, adapters, the CPU tape */
  qt_model_adapter adapter;    /* s->lora's hook (cpu) */
  const qt_model_adapter *adp; /* &adapter, or NULL without adapters */
  void *impl;                  /* the implementation's own state */
  /* qt_backend_step_init: the tensors the optimizer updates, one per
   * qt_lora_tensors entry (F32 master or BF16 storage; F32 gradients), on
   * `device` (the optimizer is made for it: qt_adamw_config.device) */
  qt_tensor *params, *grads;
  size_t n_params;
  qt_device device;
};

typedef enum { QT_BACKEND_CPU = 0, QT_BACKEND_CUDA } qt_backend_kind;

typedef struct {
  qt_backend_kind kind;
  int64_t max_B, max_T; /* the largest micro-batch it will see */
  bool train;           /* train_micro will be called (gradient buffers) */
  const qt_adamw_config *optimizer; /* train: the optimizer the step will make (its state is planned) */
  bool print_plan;      /* cuda: print the device memory plan (rank 0) */
} qt_backend_opts;

/* Makes b->params / b->grads (training; after the adapters are final, before
 * the optimizer is made): the cpu's point at the adapters' host arrays; the
 * cuda backend's at device copies (weights uploaded now, gradients
 * accumulated there over the micro-batches), so the optimizer step runs on
 * the GPU and only the norm comes back per step. */
qt_status qt_backend_step_init(qt_backend *b);

/* Opens a backend over the session's model and adapters. cpu: the session's
 * tape must exist (qt_session_tape) and hold max_B x max_T. cuda: plans the
 * device memory first (the context's buffers, sized without allocating by
 * qt_model_cuda_plan_bytes, the adapters and their gradients, the optimizer
 * state, cuBLASLt's workspace), prints the plan (print_plan) and checks it
 * against cudaMemGetInfo's free memory: QT_ERR_NOMEM naming the config keys
 * that shrink it when it does not fit; then uploads the model
 * (qt_model_cuda_init). QT_ERR_UNSUPPORTED in a build without CUDA or for a
 * model family the CUDA path does not compose. *out is NULL on failure. */
qt_status qt_backend_open(qt_session *s, const qt_backend_opts *o, qt_backend **out);
/* NULL-safe; *b = NULL. */
void qt_backend_close(qt_backend **b);

/* The kind training.device asks for (auto: the CPU, see session.c). */
qt_backend_kind qt_backend_kind_of(const qt_config *c);
/* Whether the cuda backend composes a model of this config (model_cuda.h:
 * llama, mistral and qwen2 layers; false in a build without CUDA). */
bool qt_backend_cuda_composes(const qt_hf_config *c);

/* The start-up self-check (selfcheck.c): one training micro-batch (LoRA
 * dropout on) and one evaluation micro-batch of a tiny built-in 4-bit model
 * on the CPU backend (fp32, the reference) and on `kind`, compared within the
 * GPU parity test's bf16 bounds (loss relative 1e-2; per LoRA gradient NMSE
 * 3e-2 and cosine 0.985; all gradients NMSE 8e-3; finite); then one
 * optimizer step on each from the CPU's gradients (norm relative 1e-6,
 * update NMSE 1e-3), then the two KV-cache decoders on a short prompt
 * (logits NMSE 3e-2, cosine 0.985). About a second.
 * QT_ERR_NUMERIC naming what disagreed (and suggesting training.device: cpu)
 * when it fails; other errors when a backend could not run at all. */
typedef struct {
  bool failed;
  char what[512];      /* the first disagreement, when failed */
  double loss_rel, eval_rel, worst_nmse, all_nmse, seconds;
  double norm_rel, update_nmse; /* the optimizer step from the CPU's gradients */
  double decode_nmse;           /* the KV-cache decoders' logits, worst feed */
  double acc[2];       /* squared error and reference sums over all gradients */
} qt_selfcheck_result;
qt_status qt_backend_selfcheck(qt_backend_kind kind, qt_selfcheck_result *res);
/* The same, with the checked backend's gradient of the LoRA tensor named
 * `perturb` (qt_lora_tensor.name) scaled by 1.5 before the comparison, or
 * (perturb "optimizer") its step taken at twice the rate: the comparison's
 * own test. */
qt_status qt_backend_selfcheck_ex(qt_backend_kind kind, const char *perturb, qt_selfcheck_result *res);

#ifdef QLORA_HAVE_CUDA
/* The cuda backend's device memory plan (printed and checked by
 * qt_backend_open), computed without a GPU: the model context at one token
 * (weights, per-linear LoRA buffers) and the rest of it for max_B x max_T
 * (model_cuda.h qt_model_cuda_plan_bytes), the resident adapters and their
 * gradients (train), the optimizer state (train, optimizer non-NULL:
 * qt_adamw_alloc_bytes on the device), cuBLASLt's workspace. ts (n_ts): the
 * adapters' tensors (only their shapes and whether they have a master are read).
 * offload (with checkpoint): training.activation_offloading, the layer inputs
 * in pinned host memory: `pinned` bytes, not in `total` (host memory). */
typedef struct {
  size_t weights, activations, lora, optimizer, workspace, total;
  size_t pinned;
} qt_gpu_plan;
qt_status qt_backend_gpu_plan(const qt_model *m, const qt_lora_tensor *ts, size_t n_ts, int64_t max_B,
                              int64_t max_T, int64_t max_r, bool train, bool checkpoint, bool offload,
                              bool dropout, const qt_adamw_config *optimizer, qt_gpu_plan *out);
/* backend_cuda.c */
qt_status qt_backend_cuda_open(qt_backend *b, const qt_backend_opts *o);
qt_status qt_backend_cuda_step_init(qt_backend *b);
#endif

#endif
