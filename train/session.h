/* train/session.h — what the train, eval, generate and export commands share:
 * argument parsing, the config, and loading tokenizer, model and adapters.
 *
 * A session owns everything it loads; qt_session_free releases it. */
#ifndef QT_TRAIN_SESSION_H
#define QT_TRAIN_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "data/dataset.h"
#include "data/prompt.h"
#include "data/tokenizer.h"
#include "lora/lora.h"
#include "model/model.h"
#include "train/config.h"

enum { QT_MAX_SETS = 256 };

/* Flags a command accepts (bit set). */
enum {
  QT_ARG_CHECKPOINT = 1 << 0, QT_ARG_DATA = 1 << 1, QT_ARG_FORMAT = 1 << 2, QT_ARG_OUT = 1 << 3,
  QT_ARG_PROMPT = 1 << 4, QT_ARG_MAX_NEW = 1 << 5, QT_ARG_TEMPERATURE = 1 << 6, QT_ARG_SEED = 1 << 7
};

typedef struct {
  const char *config_path;
  const char *sets[QT_MAX_SETS];
  int n_sets;
  const char *checkpoint, *data, *format, *out, *prompt;
  int64_t max_new_tokens; /* default 64 */
  double temperature;     /* default 0 (greedy) */
  uint64_t seed;          /* default: training.seed */
  bool seed_given;
} qt_args;

/* Parses `CONFIG.yaml [flags]` (argv excludes program and subcommand).
 * QT_ERR_USAGE with a message on anything unexpected. */
qt_status qt_args_parse(int argc, char **argv, unsigned allowed, qt_args *a);

typedef struct {
  qt_config cfg;
  char *config_text;        /* effective config as YAML (owned) */
  qt_tokenizer *tok;
  qt_model *model;
  qt_lora *lora;            /* NULL: base model alone */
  char adapter_dir[4096];   /* where the adapter came from ("" when fresh/none) */
  qt_model_tape *mt;
  qt_prompt prompt;
  bool have_prompt;
  bool fp_flushing;         /* this session turned on training.flush_subnormals */
  bool cpu_bf16;            /* the CPU tape's GEMMs take bf16 operands (model.compute_dtype bf16) */
  bool cpu_dtype_said;      /* the CPU compute dtype was logged */
  size_t tokenizer_rss;     /* bytes the tokenizer and prompt builder added to the
                             * resident set as they loaded (measured: their many
                             * small tables have no size formula; the memory plan) */
} qt_session;

/* Loads the config (with --set overrides) and prints nothing. */
qt_status qt_session_config(qt_session *s, const qt_args *a);
/* Tokenizer (+ prompt builder for data.format), then the model. */
qt_status qt_session_load_model(qt_session *s);
/* Fresh adapters from the config (train), or from an adapter directory
 * (a qlora-train checkpoint or a PEFT directory). */
qt_status qt_session_fresh_lora(qt_session *s);
qt_status qt_session_load_lora(qt_session *s, const char *dir);
/* For eval/generate/export: --checkpoint DIR, else the newest complete
 * checkpoint under output.dir, else none (base model alone) when
 * base_ok; export requires an adapter. */
qt_status qt_session_pick_adapter(qt_session *s, const char *checkpoint, bool base_ok);
/* training.device made concrete, after the model is loaded: cpu stays; auto
 * without a CUDA device (or a build without the CUDA backend) becomes cpu;
 * auto with one becomes cuda when the GPU path composes the model's family
 * (else cpu, with an info line) and cuda stays cuda, each only after the
 * start-up self-check passed (train/backend.h qt_backend_selfcheck), whose
 * error, naming what disagreed, is returned otherwise. */
qt_status qt_session_resolve_device(qt_session *s);
/* A tape for batches of up to B x T tokens, with the adapters attached;
 * forward_only for eval and generate (no gradient memory). When
 * training.device has resolved to cuda the tape only carries the adapters'
 * tensors (1 x 1, forward only): the GPU backend has buffers of its own. */
qt_status qt_session_tape(qt_session *s, int64_t B, int64_t T, bool checkpointing, bool forward_only);
/* Checks that the weights, the tape arenas and `extra` bytes (adapters,
 * optimizer state) fit in this machine's memory; if not, QT_ERR_NOMEM saying
 * how much is needed and which config keys reduce it. */
qt_status qt_session_check_memory(const qt_session *s, size_t extra);
/* Reads and tokenizes a data file in data.format. */
qt_status qt_session_dataset(qt_session *s, const char *path, qt_dataset *ds, bool skip_bad);

/* Eval loss over a dataset through a backend (train/backend.h) opened on this
 * session: one example per row, file order, no cross-example attention,
 * loss = sum NLL / targets over the whole file. */
typedef struct {
  double loss_sum;
  int64_t tokens;   /* targets */
  int64_t examples;
} qt_eval_result;
typedef struct qt_backend qt_backend;
qt_status qt_session_eval(qt_backend *be, const qt_dataset *ds, qt_eval_result *r);

void qt_session_free(qt_session *s);

/* Maps config enums onto module enums. */
qt_model_quant qt_session_model_quant(const qt_config *c);

#endif
