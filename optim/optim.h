/* optim/optim.h — AdamW with bitsandbytes semantics (8-bit blockwise and 32-bit
 * state), learning-rate schedules, global-norm clipping, non-finite policy.
 *
 * Facts: ../shared/docs/reference/formats.md section 3 (bitsandbytes >= 0.44,
 * HEAD 95f9af30: csrc/kernels.cu kOptimizer32bit2State and
 * kOptimizerStatic8bit2StateBlockwise, csrc/ops.cu, optim/optimizer.py).
 *
 * 32-bit update (kOptimizer32bit2State, ADAM), per element, fp32, in this order:
 *   c1 = 1 - powf(beta1, t);  c2 = sqrtf(1 - powf(beta2, t));  step_size = (-lr*c2) / c1
 *   g  = gnorm_scale * g
 *   m  = m*beta1 + (1-beta1)*g
 *   v  = v*beta2 + (1-beta2)*(g*g)
 *   p  = p + step_size * (m / (sqrtf(v) + eps*c2))
 *   if wd > 0: p = p * (1 - lr*wd)          decoupled decay AFTER the step
 * which equals lr*m̂/(sqrt(v̂)+eps) with the bias corrections folded in; the
 * decay order differs from torch.optim.AdamW (decay before) by O(lr²·wd·u).
 *
 * 8-bit update (kOptimizerStatic8bit2StateBlockwise, 256-value blocks): the
 * same formulas on states decoded as qmap[code] * absmax[block] (qmap1 = signed
 * dynamic map for m, qmap2 = unsigned for v; v uses ((1-beta2)*g)*g); a
 * non-finite g zeroes m and v of that element and leaves p unchanged; the new
 * absmax of a block is max |state| over the block AFTER the update (the slots
 * of a partial last block take part as g = 0, code1 = 128, code2 = 0, as the
 * kernel's BlockLoad defaults do); codes are re-encoded from state/absmax
 * with bitsandbytes' binary search (quant/quant.h qt_quant_8bit_encode_ref,
 * equal to the kernel's quantize_2D for these maps; evaluated through the
 * equivalent threshold table of qt_adamw_qmap below), and the m code gets the sign
 * fix-up: if signbit(qmap1[c]) != signbit(m), c += (m > 0) ? 1 : -1 (uint8).
 * Differences from the CUDA kernel, on purpose: IEEE powf and division instead
 * of the approximate intrinsics __powf/__fdividef (no bit-exact CPU
 * equivalent); the reference port tools/reference/bnb_8bit_ref.py makes the
 * same choice, and the CPU code matches it bit for bit.
 *
 * min_8bit_size: a tensor with fewer than min_8bit_size (4096) elements keeps
 * 32-bit state even in an 8-bit optimizer (Optimizer2State.init_state).
 *
 * Parameters: F32, or BF16 updated through fp32 and written back with
 * stochastic rounding (common/half.h qt_bf16_from_f32_sr; the random word of
 * element i of tensor k at step t is word i%4 of Philox4x32-10 with key =
 * seed and counter {i/4 (64 bit), k, t}, i.e. curand_init(seed, (t<<32)|k, i)),
 * once, after the decay (bitsandbytes rounds to nearest twice instead). For
 * fp32 master weights, pass the F32 master tensors and refresh the bf16 copies
 * with qt_bf16_from_f32_n. Gradients: F32.
 *
 * Threads: OpenMP over 256-value blocks (8-bit) or 4096-value chunks (32-bit);
 * results do not depend on the number of threads.
 *
 * The per-element math of both backends is one set of functions,
 * optim/optim_hd.h (host + device).
 *
 * CUDA (cfg.device = QT_DEV_CUDA): the same kernels on the GPU, bit-identical
 * to the CPU (tests/optim/test_adamw_cuda.c). All state lives in one
 * allocation: not paged -> plain device memory (cudaMalloc, as bitsandbytes),
 * with a host mirror that qt_adamw_state_fetch fills for checkpoints; paged ->
 * managed memory attached to the host and prefetched per tensor before its
 * update (bitsandbytes pages only tensors >= 1e5 elements; here paged means all
 * of them), refused where the device lacks concurrent managed access or when
 * it is larger than the free device memory (oversubscribed managed memory can
 * hang the GPU). */
#ifndef QT_OPTIM_OPTIM_H
#define QT_OPTIM_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/safetensors.h"
#include "common/status.h"
#include "common/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { QT_ADAMW_BLOCK = 256 };   /* 8-bit state block (bnb >= 0.44 BLOCKSIZE_2STATE) */

typedef struct {
  int bits;                /* 8 (adamw_8bit, paged_adamw_8bit) or 32 */
  qt_device device;        /* where params, grads and state live (CPU or CUDA) */
  bool paged;              /* CUDA: state paged (managed memory attached to the host,
                              prefetched to the GPU before each update); CPU: no effect */
  float beta1, beta2, eps, weight_decay;
  int64_t min_8bit_size;   /* tensors with fewer elements keep 32-bit state */
} qt_adamw_config;

/* bitsandbytes' AdamW defaults: betas (0.9, 0.999), eps 1e-8, weight_decay
 * 1e-2, min_8bit_size 4096, paged false. */
void qt_adamw_config_default(qt_adamw_config *c, int bits);

/* training.optimizer names (DESIGN.md section 6, transformers' `optim`
 * strings): adamw_8bit, paged_adamw_8bit, adamw_32bit, paged_adamw_32bit ->
 * bits and paged on top of qt_adamw_config_default. false if unknown. */
bool qt_adamw_config_from_name(const char *name, qt_adamw_config *c);

/* The per-step scalars every kernel uses (computed once, on the host, so that
 * the CPU and CUDA kernels see identical values). */
typedef struct {
  float beta1, beta2, eps, weight_decay, lr, gnorm_scale;
  float correction1, correction2, step_size;
  int64_t step;            /* 1-based: bnb increments state["step"] first */
} qt_adamw_scalars;

void qt_adamw_scalars_make(const qt_adamw_config *c, int64_t step, float lr, float gnorm_scale,
                           qt_adamw_scalars *out);

/* A dynamic map and the thresholds of its encoder. bitsandbytes' search
 * (quant/quant.h qt_quant_8bit_encode_ref; kernels.cu dQuantize/quantize_2D)
 * is a monotone step function of x: for the 255-node search tree over
 * code[0..254] the final pivot's bracketing pivots are its neighbours, so the
 * result is the nearest of three adjacent codes by float midpoints. thr[k]
 * (k = 1..255) is the smallest float x (in IEEE total order) with
 * encode_ref(x) >= k, found by bisection over float bit patterns with
 * encode_ref itself, so encode(x) = #{k : x >= thr[k]} (branch-free, NaN -> 0)
 * equals encode_ref(x) for every float; tests/optim check it. */
typedef struct {
  float code[256];
  float thr[256];          /* thr[0] unused */
} qt_adamw_qmap;

void qt_adamw_qmap_make(qt_adamw_qmap *m, const float code[256]);
uint8_t qt_adamw_qmap_encode(const qt_adamw_qmap *m, float x);

/* ---- kernels (CPU reference; n elements, all arrays of length n unless noted) ---- */

/* 32-bit update in place: p, m (state1), v (state2). */
void qt_adamw32_update_f32(float *p, const float *g, float *m, float *v, int64_t n,
                           const qt_adamw_scalars *k);
/* 8-bit update in place: code1/code2 (n), absmax1/absmax2 (ceil(n/256)). */
void qt_adamw8_update_f32(float *p, const float *g, uint8_t *code1, uint8_t *code2,
                          float *absmax1, float *absmax2, const qt_adamw_qmap *qmap1,
                          const qt_adamw_qmap *qmap2, int64_t n, const qt_adamw_scalars *k);
/* bf16 parameter variants (stochastic rounding keyed by seed, k->step, tensor). */
void qt_adamw32_update_bf16(uint16_t *p, const float *g, float *m, float *v, int64_t n,
                            const qt_adamw_scalars *k, uint64_t seed, uint32_t tensor);
void qt_adamw8_update_bf16(uint16_t *p, const float *g, uint8_t *code1, uint8_t *code2,
                           float *absmax1, float *absmax2, const qt_adamw_qmap *qmap1,
                           const qt_adamw_qmap *qmap2, int64_t n, const qt_adamw_scalars *k,
                           uint64_t seed, uint32_t tensor);
/* The stochastic-rounding random word of element i (see the header comment). */
uint32_t qt_adamw_sr_word(uint64_t seed, int64_t step, uint32_t tensor, int64_t i);

/* ---- CUDA kernels (built with the CUDA backend; device pointers, stream 0,
 * asynchronous: errors inside a kernel surface at qt_adamw_cuda_sync). Same
 * arguments and bit-identical results as the CPU kernels above; qmap1/qmap2
 * must be in device-accessible memory. ---- */
qt_status qt_adamw32_update_f32_cuda(float *p, const float *g, float *m, float *v, int64_t n,
                                     const qt_adamw_scalars *k);
qt_status qt_adamw32_update_bf16_cuda(uint16_t *p, const float *g, float *m, float *v, int64_t n,
                                      const qt_adamw_scalars *k, uint64_t seed, uint32_t tensor);
qt_status qt_adamw8_update_f32_cuda(float *p, const float *g, uint8_t *code1, uint8_t *code2,
                                    float *absmax1, float *absmax2, const qt_adamw_qmap *qmap1,
                                    const qt_adamw_qmap *qmap2, int64_t n,
                                    const qt_adamw_scalars *k);
qt_status qt_adamw8_update_bf16_cuda(uint16_t *p, const float *g, uint8_t *code1, uint8_t *code2,
                                     float *absmax1, float *absmax2, const qt_adamw_qmap *qmap1,
                                     const qt_adamw_qmap *qmap2, int64_t n,
                                     const qt_adamw_scalars *k, uint64_t seed, uint32_t tensor);
/* Optimizer state, zeroed: paged -> managed memory, cudaMemAttachHost
 * (bitsandbytes get_paged; host-readable after qt_adamw_cuda_sync), refused
 * with QT_ERR_UNSUPPORTED without concurrent managed access and QT_ERR_NOMEM
 * when bytes exceed cudaMemGetInfo's free memory; else plain cudaMalloc
 * (device-only). */
qt_status qt_adamw_cuda_state_alloc(size_t bytes, bool paged, void **out);
void qt_adamw_cuda_state_free(void *p);
/* cudaMemcpy(dst, src, bytes, cudaMemcpyDefault) (host, device or managed
 * pointers; synchronous). */
qt_status qt_adamw_cuda_copy(void *dst, const void *src, size_t bytes);
/* cudaMemPrefetchAsync to the current device; a no-op where the device lacks
 * concurrent managed access (as bitsandbytes' cprefetch). */
qt_status qt_adamw_cuda_prefetch(const void *p, size_t bytes);
qt_status qt_adamw_cuda_sync(void);

/* ---- the optimizer: state for a fixed list of parameter tensors ---- */

typedef struct {
  int64_t numel;
  bool state8;             /* 8-bit state (else fp32 state1/state2) */
  int64_t nblocks;         /* ceil(numel/256) when state8, else 0 */
  float *state1, *state2;  /* (numel) fp32 m, v; NULL when state8 */
  uint8_t *code1, *code2;  /* (numel) 8-bit codes; NULL unless state8 */
  float *absmax1, *absmax2;/* (nblocks) */
} qt_adamw_param;

typedef struct {
  qt_adamw_config cfg;
  size_t n_params;
  qt_adamw_param *params;  /* owned */
  int64_t step;            /* completed updates (0 before the first) */
  qt_adamw_qmap qmap1;     /* signed dynamic map (m codes) */
  qt_adamw_qmap qmap2;     /* unsigned dynamic map (v codes) */
  void *mem;               /* one allocation for all state, owned (CUDA: device
                              memory, or managed memory when paged) */
  qt_adamw_qmap *dev_qmaps;/* CUDA: copies of qmap1, qmap2 inside mem; else NULL */
  size_t mem_bytes;        /* bytes of state at mem (without the device maps) */
  void *host_mem;          /* CUDA, not paged: host mirror of the mem_bytes of
                              state, owned; else NULL */
  bool host_stale;         /* host_mem older than the device state */
  char *names;             /* state tensor names, owned */
} qt_adamw;

/* Allocates zeroed state (codes 0, absmax 0, as bitsandbytes) for n_params
 * tensors of numels[i] elements. *opt is empty on error. */
qt_status qt_adamw_init(qt_adamw *opt, const qt_adamw_config *cfg, size_t n_params,
                        const int64_t *numels);
void qt_adamw_free(qt_adamw *opt);
/* The bytes qt_adamw_init(cfg, n_params, numels) allocates for the state (on
 * cfg.device; with CUDA, the device copies of the maps too): what a memory
 * plan counts before the optimizer exists. */
size_t qt_adamw_alloc_bytes(const qt_adamw_config *cfg, size_t n_params, const int64_t *numels);
/* Bytes of optimizer state (states, codes, absmax; not the qmaps). */
size_t qt_adamw_state_bytes(const qt_adamw *opt);

/* One update of every parameter: params[i] F32 or BF16 with numels[i]
 * elements, grads[i] F32 of the same size, all on cfg.device; lr for this
 * step, gnorm_scale the clipping coefficient (1 for none), seed for bf16
 * stochastic rounding. Increments opt->step first (the update uses step =
 * opt->step). On CUDA it returns after the GPU has finished (bitsandbytes
 * synchronizes after every parameter). */
qt_status qt_adamw_step(qt_adamw *opt, qt_tensor *params, const qt_tensor *grads, float lr,
                        float gnorm_scale, uint64_t seed);

/* Makes the state readable from the host for qt_adamw_state_tensors: on CUDA
 * it waits for the GPU and copies device state into host_mem (not paged); a
 * no-op on the CPU. Call it after the last step before saving. */
qt_status qt_adamw_state_fetch(qt_adamw *opt);
/* State as named tensors, bitsandbytes' state-dict names: "state.<i>.state1",
 * "state.<i>.state2" (F32 [n] or U8 [n]), "state.<i>.absmax1",
 * "state.<i>.absmax2" (F32 [nblocks], 8-bit only), "qmap1", "qmap2"
 * (F32 [256]), "step" (I64 [1]). Views: names and data point into *opt (host
 * memory: the mirror for device state, which must be fetched first) and stay
 * valid until the next step or qt_adamw_free. out must hold
 * qt_adamw_state_count() entries. */
size_t qt_adamw_state_count(const qt_adamw *opt);
void qt_adamw_state_tensors(const qt_adamw *opt, qt_st_write_tensor *out);
/* Copies state from named tensors (e.g. entries read back from a checkpoint;
 * data may be unaligned). Every tensor of this optimizer's layout must be
 * present with its dtype and shape, and nothing else; qmaps must be 256
 * increasing finite values ending in 1.0. label names the source in errors. */
qt_status qt_adamw_state_load(qt_adamw *opt, const qt_st_write_tensor *in, size_t n,
                              const char *label);

/* ---- clipping and the non-finite policy ---- */

/* Global L2 norm of all elements of tensors (F32 or BF16), sum of squares in
 * double in the fixed order of optim_hd.h (1024-element chunks, chunk sums
 * added in groups of 1024, group sums in order: independent of the thread
 * count, and equal to qt_optim_clip_cuda_norm's). Non-finite if any element is
 * non-finite. */
double qt_optim_global_norm(const qt_tensor *tensors, size_t n);
/* transformers / torch clip_grad_norm_: max_norm / (norm + 1e-6), clamped to
 * at most 1 (computed in double, returned as float). 1 when max_norm <= 0. */
float qt_optim_clip_coef(double norm, double max_norm);

/* ---- the same on the GPU (clip_cuda.cu; built with the CUDA backend) ----
 * The global norm of a fixed list of fp32 device gradient tensors in the fixed
 * order of optim_hd.h, so it equals qt_optim_global_norm of the same values bit
 * for bit: one thread per 1024-element chunk (partials in double), then one
 * block adds the chunk partials group by group and the group sums in order (no
 * atomics). The clipping coefficient and the skip decision are made on the
 * device too; the caller copies the 16-byte result only when the host must
 * know (logging, the non-finite policy). Stream-ordered, asynchronous. */
typedef struct {
  double norm;             /* global L2 norm; NaN or Inf when any element is */
  float coef;              /* qt_optim_clip_coef(norm, max_norm) */
  int32_t skip;            /* 1: non-finite norm, the step must be skipped */
} qt_optim_clip_result;

typedef struct {
  size_t n_tensors;
  int64_t n_chunks, n_groups, max_numel;
  void *dev;               /* one cudaMalloc: the tables below, owned */
  float **ptrs;            /* (n_tensors) device: the gradient tensors */
  int64_t *first;          /* (n_tensors + 1) device: first chunk of each tensor, then n_chunks */
  int64_t *numel;          /* (n_tensors) device */
  double *partial;         /* (n_chunks) device: chunk sums of squares */
  double *group;           /* (n_groups) device: group sums */
  qt_optim_clip_result *result; /* device */
} qt_optim_clip_cuda;

/* Plans the reduction over grads[i] (device pointers, numels[i] fp32 elements,
 * fixed for the object's life) and allocates its tables (a few bytes per 1024
 * gradient elements). *c is empty on error. */
qt_status qt_optim_clip_cuda_init(qt_optim_clip_cuda *c, float *const *grads,
                                  const int64_t *numels, size_t n);
void qt_optim_clip_cuda_free(qt_optim_clip_cuda *c);
/* c->result = {norm, qt_optim_clip_coef(norm, max_norm), !isfinite(norm)}. */
qt_status qt_optim_clip_cuda_norm(qt_optim_clip_cuda *c, double max_norm, void *stream);
/* grads *= result->coef (fp32, as torch's clip_grad_norm_ mul_) unless the step
 * is skipped or coef is 1; reads the result on the device. */
qt_status qt_optim_clip_cuda_scale(const qt_optim_clip_cuda *c, void *stream);
/* Copies the result to the host (waits for the stream). */
qt_status qt_optim_clip_cuda_result(const qt_optim_clip_cuda *c, qt_optim_clip_result *out,
                                    void *stream);

typedef struct {
  int max_consecutive;     /* stop after this many skipped steps in a row */
  int consecutive;
  int64_t skipped_total;
} qt_optim_nonfinite;

/* Called once per optimizer step with the global gradient norm: a non-finite
 * norm means the step must be skipped (*skip = true; optimizer state and
 * parameters are left untouched by the caller, the schedule does not advance);
 * a finite one resets the run. Returns QT_ERR_NUMERIC when more than
 * max_consecutive steps in a row were non-finite. */
qt_status qt_optim_nonfinite_observe(qt_optim_nonfinite *s, double norm, bool *skip);

/* ---- learning-rate schedules ---- */

typedef enum { QT_LR_CONSTANT = 0, QT_LR_LINEAR, QT_LR_COSINE } qt_lr_kind;

typedef struct {
  qt_lr_kind kind;
  int64_t warmup_steps;
  int64_t total_steps;
  double min_ratio;        /* cosine only: floor as a fraction of the peak */
} qt_lr_schedule;

/* lr multiplier before optimizer step `step` (0-based: the number of steps
 * already taken), as transformers' LambdaLR lambdas (optimization.py):
 *   warmup (step < warmup): step / max(1, warmup)       (all kinds)
 *   constant: 1  (get_constant_schedule_with_warmup)
 *   linear:   max(0, (total - step) / max(1, total - warmup))
 *   cosine:   progress = (step - warmup) / max(1, total - warmup);
 *             f = 0.5 (1 + cos(pi * 0.5 * 2 * progress)); max(0, f (1 - min) + min)
 *             (get_cosine_with_min_lr_schedule_with_warmup; min 0 = plain cosine) */
double qt_lr_schedule_factor(const qt_lr_schedule *s, int64_t step);
const char *qt_lr_kind_name(qt_lr_kind k);
bool qt_lr_kind_from_name(const char *name, qt_lr_kind *out);

#ifdef __cplusplus
}
#endif

#endif
