/* lora/lora.h — LoRA adapters over a frozen (quantized) base model: init,
 * dropout, the branch the model records on the tape, merge, and PEFT adapter
 * directories (../shared/docs/reference/formats.md section 4).
 *
 * Math (PEFT tuners/lora/layer.py Linear.forward):
 *   y = base(x) + scale * B (A dropout(x)),  A (r, in), B (out, r),
 *   scale = alpha / r, or alpha / sqrt(r) with rsLoRA (update_layer).
 * Init (reset_lora_parameters, init_lora_weights=True): A by
 * kaiming_uniform_(a = sqrt(5)): gain = sqrt(2 / (1 + a^2)) = sqrt(1/3),
 * bound = sqrt(3) * gain / sqrt(fan_in) = 1 / sqrt(in) (torch.nn.init), so
 * A ~ U(-1/sqrt(in), 1/sqrt(in)); B = 0. The uniforms come from our own
 * Philox stream (common/philox.h) keyed by the seed and the tensor (subsequence
 * = layer * 8 + proj), so an init is reproducible from the seed alone; it is
 * NOT bit-equal to what torch's generator would draw (not required: the
 * distribution is the same).
 * Dropout (nn.Dropout(p) on the LoRA input only): keep mask with P(keep) =
 * 1 - p, kept values scaled by 1/(1-p); the mask of (step, layer, proj) comes
 * from Philox(seed ^ step hash, subsequence layer * 8 + proj), so a recompute
 * (gradient checkpointing) or a resumed run draws the same mask. Not torch's
 * masks (a different generator).
 *
 * Storage: parameters are stored bf16 (`bf16`), optionally with fp32 master
 * weights (`master`); `data` is the fp32 compute copy the tape reads, made by
 * qt_lora_sync from master (if any) else bf16. The optimizer updates master
 * (or bf16, e.g. with stochastic rounding) and then calls qt_lora_sync.
 * Gradients (`grad`) are fp32, accumulated (+=) by backward; zero them per
 * optimizer step with qt_lora_zero_grad.
 *
 * Ownership: a qt_lora owns its tensors; it borrows nothing from the model
 * after init/load (shapes are copied). */
#ifndef QT_LORA_LORA_H
#define QT_LORA_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/tape.h"
#include "common/status.h"
#include "common/tensor.h"
#include "model/model.h"

typedef struct {
  int r;                  /* rank >= 1 */
  double alpha;           /* lora_alpha */
  double dropout;         /* lora_dropout in [0, 1) */
  bool use_rslora;        /* scale alpha / sqrt(r) */
  unsigned targets;       /* bit (1u << qt_proj) per target module; QT_LORA_ALL_LINEAR = every
                           * projection the model has (qt_lora_get_config gives them resolved) */
  bool master_fp32;       /* keep fp32 master weights beside the bf16 storage */
  uint64_t seed;          /* init and dropout seed */
} qt_lora_config;

#define QT_LORA_ALL_LINEAR ((1u << QT_PROJ_COUNT) - 1u)

/* "q_proj" ... "down_proj", "qkv_proj", "gate_up_proj" -> bit; false when unknown. */
bool qt_lora_target_from_name(const char *name, unsigned *bit);
/* targets as a LoRA on m has them: QT_LORA_ALL_LINEAR -> the projections m
 * has; others unchanged (a module m lacks is refused by qt_lora_init). */
unsigned qt_lora_resolve_targets(const qt_model *m, unsigned targets);

/* One trainable tensor (lora_A or lora_B of one module). */
typedef struct {
  char name[160];         /* PEFT key: base_model.model.model.layers.{l}.{block}.{proj}.lora_{A|B}.weight */
  int layer;
  qt_proj proj;
  bool is_B;
  int64_t rows, cols;     /* A: (r, in); B: (out, r) */
  uint16_t *bf16;         /* (rows, cols) storage */
  float *master;          /* (rows, cols) fp32 master, or NULL */
  float *data;            /* (rows, cols) fp32 compute copy (what the tape reads) */
  float *grad;            /* (rows, cols) fp32 gradient */
} qt_lora_tensor;

typedef struct qt_lora qt_lora;

/* Fresh adapters for every target of every layer (PEFT init, see above). */
qt_status qt_lora_init(const qt_model *m, const qt_lora_config *cfg, qt_lora **out);
void qt_lora_free(qt_lora **l);

const qt_lora_config *qt_lora_get_config(const qt_lora *l);
double qt_lora_scale(const qt_lora *l);
/* The tensors in PEFT key order of layers / modules, A before B. */
qt_lora_tensor *qt_lora_tensors(qt_lora *l, size_t *n);
/* data = fp32(master or bf16), every tensor. */
void qt_lora_sync(qt_lora *l);
void qt_lora_zero_grad(qt_lora *l);

/* Registers every tensor on the tape as trainable (call after
 * qt_model_tape_init, before the first op). One tape per lora at a time. */
qt_status qt_lora_attach(qt_lora *l, qt_tape *t);
/* Dropout key for the next recordings: step (the optimizer step or micro-step
 * counter) and training (false: no dropout, as model.eval()). */
void qt_lora_set_step(qt_lora *l, uint64_t step, bool training);
/* The dropout keep mask (N, in) of module (layer, proj) for the current
 * qt_lora_set_step state, exactly the one the hook hands the tape for a
 * recording of N tokens (same Philox key and subsequence; for a GPU path that
 * must drop what the CPU path drops). When the module is adapted, training is
 * on and dropout > 0: mask (N * in bytes, caller-owned; in = the module's in
 * features) is filled with 0/1, *keep_scale = 1 / (1 - dropout), *has = true.
 * Otherwise mask is untouched, *keep_scale = 1, *has = false. Errors:
 * QT_ERR_INVALID (layer or proj out of range). */
qt_status qt_lora_dropout_mask(const qt_lora *l, int layer, qt_proj proj, int64_t N, uint8_t *mask,
                               double *keep_scale, bool *has);
/* The same mask as a stream, for a kernel that draws it where it applies it
 * (model/model_cuda.h, autograd/ops_cuda.h qt_dropout_cuda): element
 * e = n * in + i of module (layer, proj)'s (N, in) mask for the current
 * qt_lora_set_step state is kept iff word e of the Philox stream
 * curand_init(*key, *subsequence, 0) is > *threshold
 * (common/philox_hd.h qt_dropout_keep_hd(e, *key, *subsequence, *threshold)),
 * i.e. byte e of qt_lora_dropout_mask's mask for any N with N * in > e. The
 * key (seed and step mixed) and subsequence (layer * 8 + the projection's
 * slot) are the ones the hook's masks are drawn with (one derivation in
 * lora.c); *threshold = qt_philox_keep_threshold((float)dropout). When the
 * module is adapted, training is on and dropout > 0: *keep_scale =
 * 1 / (1 - dropout), *has = true. Otherwise *key = *subsequence = 0,
 * *threshold = -1 (keeps everything), *keep_scale = 1, *has = false. Errors:
 * QT_ERR_INVALID (layer or proj out of range). */
qt_status qt_lora_dropout_stream(const qt_lora *l, int layer, qt_proj proj, uint64_t *key,
                                 uint64_t *subsequence, int64_t *threshold, double *keep_scale,
                                 bool *has);
/* The hook qt_model_* calls; valid while l lives (after qt_lora_attach). */
qt_model_adapter qt_lora_adapter(qt_lora *l);

/* w (out, in) += scale * B A for module (layer, proj) if it is adapted
 * (PEFT get_delta_weight: fp32, fan_in_fan_out false). */
void qt_lora_merge_weight(const qt_lora *l, int layer, qt_proj proj, float *w);
/* Merges into the model: every adapted linear becomes dense fp32
 * dequant(W) + scale * B A (its 4-bit weight freed). The model must not be on
 * a tape while this runs (re-create tapes afterwards). */
qt_status qt_lora_merge_into_model(const qt_lora *l, qt_model *m);

/* Writes DIR/adapter_model.safetensors (keys as above, dtype F32, BF16 or F16,
 * metadata {"format": "pt"}) and DIR/adapter_config.json (the fields PEFT
 * 0.21.2 writes that matter for LoRA; PEFT fills the rest with defaults).
 * Values written are `data` (the compute copy). DIR is created if missing;
 * files are replaced atomically. base_model may be NULL (null in the json). */
qt_status qt_lora_save_peft(const qt_lora *l, const char *dir, const char *base_model,
                            qt_dtype dtype);
/* Reads a PEFT LoRA adapter directory (adapter_config.json +
 * adapter_model.safetensors with F32/BF16/F16 tensors) for model m. Adapter
 * features qlora-train does not implement (DoRA, bias != none, rank/alpha
 * patterns, layers_to_transform, fan_in_fan_out, modules other than the seven
 * projections) are QT_ERR_UNSUPPORTED; shape mismatches and missing tensors
 * QT_ERR_FORMAT. master_fp32 keeps the file's values exactly (bf16 storage
 * alone rounds F32/F16 values to bf16). seed: for dropout. */
qt_status qt_lora_load_peft(const qt_model *m, const char *dir, bool master_fp32,
                            uint64_t seed, qt_lora **out);

#endif
