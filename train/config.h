/* train/config.h — the YAML training config (contract: DESIGN.md section 6).
 *
 * One struct with documented defaults (README "Config keys"), filled from a
 * YAML file by libyaml and from `--set section.key=value` overrides. Every
 * problem (unknown key with a did-you-mean, wrong type, duplicate key, value
 * out of range, impossible combination, missing required key) is collected
 * with file:line:column and all of them are reported at once as one
 * QT_ERR_CONFIG message, one problem per line.
 *
 * Relative paths are taken relative to the current directory (as axolotl
 * and the HF Trainer do), not to the config file. */
#ifndef QT_TRAIN_CONFIG_H
#define QT_TRAIN_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

enum { QT_CFG_PATH_MAX = 4096, QT_CFG_NAME_MAX = 64 };

typedef enum { QT_CFG_QUANT_NF4 = 0, QT_CFG_QUANT_FP4, QT_CFG_QUANT_NONE } qt_cfg_quant;
typedef enum { QT_CDT_BF16 = 0, QT_CDT_FP16, QT_CDT_FP32 } qt_cfg_dtype;
typedef enum { QT_MASTER_NONE = 0, QT_MASTER_FP32 } qt_cfg_master;
typedef enum { QT_FMT_TEXT = 0, QT_FMT_COMPLETION, QT_FMT_ALPACA, QT_FMT_CHAT } qt_cfg_format;
typedef enum { QT_TPL_AUTO = 0, QT_TPL_CHATML, QT_TPL_LLAMA3, QT_TPL_GEMMA, QT_TPL_PHI3 } qt_cfg_chat_template;
typedef enum { QT_DEVICE_AUTO = 0, QT_DEVICE_CPU, QT_DEVICE_CUDA } qt_cfg_device;
typedef enum { QT_SCHED_CONSTANT = 0, QT_SCHED_LINEAR, QT_SCHED_COSINE } qt_cfg_sched;
typedef enum {
  QT_OPT_PAGED_ADAMW_8BIT = 0, QT_OPT_ADAMW_8BIT, QT_OPT_PAGED_ADAMW_32BIT, QT_OPT_ADAMW_32BIT
} qt_cfg_optimizer;
typedef enum { QT_EXPORT_PEFT = 0, QT_EXPORT_MERGED } qt_cfg_export_format;
typedef enum { QT_MERGE_ORIGINAL = 0, QT_MERGE_NF4_ROUNDTRIP } qt_cfg_merge_base;
/* export.gguf_type: tensor types of a GGUF export; auto = q8_0 for
 * --format gguf, f32 for --format gguf-lora */
typedef enum {
  QT_GGUF_T_AUTO = 0, QT_GGUF_T_F32, QT_GGUF_T_F16, QT_GGUF_T_BF16, QT_GGUF_T_Q8_0, QT_GGUF_T_Q4_K_M
} qt_cfg_gguf_type;

/* LoRA target projections, as a bit set. */
enum {
  QT_TGT_Q = 1 << 0, QT_TGT_K = 1 << 1, QT_TGT_V = 1 << 2, QT_TGT_O = 1 << 3,
  QT_TGT_GATE = 1 << 4, QT_TGT_UP = 1 << 5, QT_TGT_DOWN = 1 << 6,
  QT_TGT_QKV = 1 << 7, QT_TGT_GATE_UP = 1 << 8, /* phi3's fused projections */
  QT_TGT_ALL = (1 << 9) - 1 /* all-linear: every projection the model has */
};

typedef struct {
  struct {
    char path[QT_CFG_PATH_MAX];     /* required: HF model directory */
    qt_cfg_quant quant;             /* nf4 */
    bool double_quant;              /* true */
    int64_t blocksize;              /* 64; power of two in 32..4096 */
    qt_cfg_dtype compute_dtype;     /* bf16 (CPU: bf16 GEMM operands where it has bf16 units, train/session.c) */
  } model;
  struct {
    int64_t r;                      /* 16 */
    double alpha;                   /* 32 */
    double dropout;                 /* 0.05, in [0, 1) */
    unsigned target_modules;        /* QT_TGT_* bit set; all-linear */
    bool use_rslora;                /* false: scale alpha/r; true: alpha/sqrt(r) */
    qt_cfg_master master_weights;   /* none */
    char init_adapter[QT_CFG_PATH_MAX]; /* "" = fresh PEFT init; else start from this PEFT adapter dir */
  } lora;
  struct {
    char train[QT_CFG_PATH_MAX];    /* required: .jsonl or .json */
    char eval[QT_CFG_PATH_MAX];     /* "" = none */
    qt_cfg_format format;           /* text */
    int64_t seq_len;                /* 512 */
    bool packing;                   /* false */
    bool train_on_prompt;           /* false: prompt tokens get label -100 */
    qt_cfg_chat_template chat_template; /* auto: from tokenizer_config.json */
    bool skip_bad_records;          /* false: a bad record stops with file:line */
    bool shuffle;                   /* true: a seeded permutation per epoch; false: file order */
  } data;
  struct {
    qt_cfg_device device;           /* auto */
    int64_t seed;                   /* 42 */
    int64_t micro_batch_size;       /* 1 */
    int64_t gradient_accumulation_steps; /* 1 */
    double num_epochs;              /* 1 */
    int64_t max_steps;              /* 0 = from num_epochs */
    double learning_rate;           /* 2e-4 */
    qt_cfg_sched lr_scheduler;      /* cosine */
    double min_lr_ratio;            /* 0.0 (cosine floor as a fraction of learning_rate) */
    int64_t warmup_steps;           /* 0 */
    double weight_decay;            /* 0.0 */
    double adam_beta1, adam_beta2, adam_epsilon; /* 0.9, 0.999, 1e-8 */
    double max_grad_norm;           /* 1.0; 0 disables clipping */
    qt_cfg_optimizer optimizer;     /* paged_adamw_8bit */
    bool gradient_checkpointing;    /* true */
    bool activation_offloading;     /* false: with gradient_checkpointing on the GPU, the checkpointed layer
                                     * inputs in pinned host memory (model/model_cuda.h); no effect on the
                                     * CPU; results unchanged (not in the resume fingerprint) */
    int64_t eval_steps;             /* 0 = evaluate at the end only (when data.eval is set) */
    int64_t logging_steps;          /* 1 */
    int64_t max_nonfinite_steps;    /* 3: stop after this many skipped steps in a row */
    int64_t threads;                /* 0 = all cores */
    bool flush_subnormals;          /* true: CPU math flushes subnormals to zero (common/fpmode.h) */
  } training;
  struct {
    char dir[QT_CFG_PATH_MAX];      /* "out" */
    int64_t save_steps;             /* 0 = save at the end (and on SIGINT/SIGTERM) only */
    int64_t save_total_limit;       /* 3; 0 = keep all */
    char resume[QT_CFG_PATH_MAX];   /* "auto" | "never" | a checkpoint path */
    bool allow_resume_mismatch;     /* false: refuse a checkpoint whose hashes differ */
  } output;
  struct {
    qt_cfg_export_format format;    /* peft */
    qt_cfg_merge_base merge_base;   /* original */
    qt_cfg_dtype dtype;             /* bf16 */
    qt_cfg_gguf_type gguf_type;     /* auto */
  } export_;
  /* Combinations that are accepted but probably not meant (the HF Trainer,
   * axolotl and bitsandbytes accept them too), one per line: logged as
   * warnings by the loader; not part of the effective config. */
  char warnings[1024];
} qt_config;

/* Fills *cfg with the documented defaults (required paths empty). */
void qt_config_defaults(qt_config *cfg);

/* Loads PATH over the defaults, then applies the `KEY=VALUE` overrides in
 * sets[0..n_sets), then validates. On error returns QT_ERR_CONFIG (or
 * QT_ERR_IO when the file cannot be read) with every problem listed. On
 * success, accepted-but-odd combinations are logged as warnings and kept in
 * cfg->warnings. */
qt_status qt_config_load(const char *path, const char *const *sets, int n_sets, qt_config *cfg);

/* Same, from an in-memory YAML text; `label` stands for the file name in
 * messages. */
qt_status qt_config_load_string(const char *yaml, size_t len, const char *label,
                                const char *const *sets, int n_sets, qt_config *cfg);

/* Writes the effective config as YAML (every key, in contract order), which
 * qt_config_load reads back to an equal struct. */
void qt_config_write_yaml(const qt_config *cfg, FILE *f);

/* Name of a LoRA target bit ("q_proj", ...). */
const char *qt_config_target_name(unsigned bit);

#endif
