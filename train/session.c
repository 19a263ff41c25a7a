/* train/session.c — see session.h. */
#include "train/session.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "common/arena.h"
#include "common/fpmode.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "train/backend.h"
#include "train/checkpoint.h"

#ifdef QLORA_HAVE_CUDA
#include <cuda_runtime.h>
#endif

static bool parse_i64(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || errno) return false;
  *out = v;
  return true;
}

qt_status qt_args_parse(int argc, char **argv, unsigned allowed, qt_args *a) {
  memset(a, 0, sizeof *a);
  a->max_new_tokens = 64;
  a->temperature = 0.0;
  static const struct {
    const char *flag;
    unsigned bit;
  } flags[] = {{"--checkpoint", QT_ARG_CHECKPOINT}, {"--data", QT_ARG_DATA},
               {"--format", QT_ARG_FORMAT},         {"--out", QT_ARG_OUT},
               {"--prompt", QT_ARG_PROMPT},         {"--max-new-tokens", QT_ARG_MAX_NEW},
               {"--temperature", QT_ARG_TEMPERATURE}, {"--seed", QT_ARG_SEED}};
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--set") == 0 || strncmp(arg, "--set=", 6) == 0) {
      const char *v = arg[5] == '=' ? arg + 6 : (i + 1 < argc ? argv[++i] : NULL);
      if (!v) return qt_fail(QT_ERR_USAGE, "--set needs KEY=VALUE");
      if (a->n_sets == QT_MAX_SETS) return qt_fail(QT_ERR_USAGE, "more than %d --set options", QT_MAX_SETS);
      a->sets[a->n_sets++] = v;
      continue;
    }
    if (strncmp(arg, "--", 2) == 0) {
      size_t k = 0, nf = sizeof flags / sizeof flags[0];
      const char *eq = strchr(arg, '=');
      size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
      for (; k < nf; k++)
        if (strlen(flags[k].flag) == len && strncmp(arg, flags[k].flag, len) == 0) break;
      if (k == nf || !(allowed & flags[k].bit)) return qt_fail(QT_ERR_USAGE, "unknown option '%.*s'", (int)len, arg);
      const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
      if (!v) return qt_fail(QT_ERR_USAGE, "%s needs a value", flags[k].flag);
      switch (flags[k].bit) {
        case QT_ARG_CHECKPOINT: a->checkpoint = v; break;
        case QT_ARG_DATA: a->data = v; break;
        case QT_ARG_FORMAT:
          if (strcmp(v, "peft") != 0 && strcmp(v, "merged") != 0)
            return qt_fail(QT_ERR_USAGE, "--format must be peft or merged, not '%s'", v);
          a->format = v;
          break;
        case QT_ARG_OUT: a->out = v; break;
        case QT_ARG_PROMPT: a->prompt = v; break;
        case QT_ARG_MAX_NEW:
          if (!parse_i64(v, &a->max_new_tokens) || a->max_new_tokens < 0 || a->max_new_tokens > 1000000)
            return qt_fail(QT_ERR_USAGE, "--max-new-tokens must be an integer in 0..1000000, not '%s'", v);
          break;
        case QT_ARG_TEMPERATURE: {
          char *end;
          a->temperature = strtod(v, &end);
          if (end == v || *end || !isfinite(a->temperature) || a->temperature < 0)
            return qt_fail(QT_ERR_USAGE, "--temperature must be a number >= 0, not '%s'", v);
          break;
        }
        case QT_ARG_SEED: {
          int64_t sd;
          if (!parse_i64(v, &sd) || sd < 0) return qt_fail(QT_ERR_USAGE, "--seed must be an integer >= 0, not '%s'", v);
          a->seed = (uint64_t)sd;
          a->seed_given = true;
          break;
        }
      }
      continue;
    }
    if (a->config_path) return qt_fail(QT_ERR_USAGE, "unexpected argument '%s' (the config is '%s')", arg, a->config_path);
    a->config_path = arg;
  }
  if (!a->config_path) return qt_fail(QT_ERR_USAGE, "missing CONFIG.yaml");
  if ((allowed & QT_ARG_PROMPT) && !a->prompt) return qt_fail(QT_ERR_USAGE, "missing --prompt TEXT");
  return QT_OK;
}

qt_model_quant qt_session_model_quant(const qt_config *c) {
  switch (c->model.quant) {
    case QT_CFG_QUANT_NF4: return QT_MODEL_QUANT_NF4;
    case QT_CFG_QUANT_FP4: return QT_MODEL_QUANT_FP4;
    case QT_CFG_QUANT_NONE: return QT_MODEL_QUANT_NONE;
  }
  return QT_MODEL_QUANT_NF4;
}

qt_status qt_session_config(qt_session *s, const qt_args *a) {
  memset(s, 0, sizeof *s);
  QT_TRY(qt_config_load(a->config_path, a->sets, a->n_sets, &s->cfg));
  size_t len = 0;
  FILE *f = open_memstream(&s->config_text, &len);
  if (!f) return qt_fail(QT_ERR_NOMEM, "out of memory");
  qt_config_write_yaml(&s->cfg, f);
  fclose(f);
  if (s->cfg.training.device == QT_DEVICE_CUDA) {
#ifdef QLORA_HAVE_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
      return qt_fail(QT_ERR_UNSUPPORTED, "%s: training.device: cuda, but no CUDA device is usable here; use auto or cpu",
                     a->config_path);
#else
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: training.device: cuda, but this qlora-train was built without the CUDA "
                   "backend (configure with -DQLORA_CUDA=ON where nvcc exists); use auto or cpu", a->config_path);
#endif
  }
  /* OpenBLAS (pthreads build) keeps its own pool: without this, threads: 1 still ran
   * GEMMs on every core (bench/RESULTS.md, training benchmark) */
  if (s->cfg.training.threads > 0) {
    omp_set_num_threads((int)s->cfg.training.threads);
    openblas_set_num_threads((int)s->cfg.training.threads);
  }
  return QT_OK;
}

static qt_data_format data_format(const qt_config *c) {
  switch (c->data.format) {
    case QT_FMT_TEXT: return QT_DATA_FMT_TEXT;
    case QT_FMT_COMPLETION: return QT_DATA_FMT_COMPLETION;
    case QT_FMT_ALPACA: return QT_DATA_FMT_ALPACA;
    case QT_FMT_CHAT: return QT_DATA_FMT_CHAT;
  }
  return QT_DATA_FMT_TEXT;
}

static qt_chat_choice chat_choice(const qt_config *c) {
  switch (c->data.chat_template) {
    case QT_TPL_AUTO: return QT_CHAT_AUTO;
    case QT_TPL_CHATML: return QT_CHAT_CHATML;
    case QT_TPL_LLAMA3: return QT_CHAT_LLAMA3;
    case QT_TPL_GEMMA: return QT_CHAT_GEMMA;
    case QT_TPL_PHI3: return QT_CHAT_PHI3;
  }
  return QT_CHAT_AUTO;
}

qt_status qt_session_load_model(qt_session *s) {
  const qt_config *c = &s->cfg;
  struct stat st;
  if (stat(c->model.path, &st) != 0 || !S_ISDIR(st.st_mode))
    return qt_fail(QT_ERR_IO, "model.path: %s: not a directory; give a Hugging Face model directory "
                   "(config.json, *.safetensors, tokenizer.json)", c->model.path);
  size_t rss0 = qt_mem_rss();
  qt_status r = qt_tokenizer_load(c->model.path, &s->tok);
  if (r != QT_OK) {
    qt_error_context("model.path");
    return r;
  }
  r = qt_prompt_init(&s->prompt, s->tok, c->model.path, data_format(c), chat_choice(c), c->data.train_on_prompt);
  if (r != QT_OK) return r;
  s->have_prompt = true;
  qt_mem_trim(); /* the tokenizer.json parse is freed: what stays is the tokenizer's */
  size_t rss1 = qt_mem_rss();
  s->tokenizer_rss = rss1 > rss0 ? rss1 - rss0 : 0;
  qt_model_load_opts o = {.quant = qt_session_model_quant(c), .double_quant = c->model.double_quant,
                          .blocksize = (int)c->model.blocksize, .threads = (int)c->training.threads};
  r = qt_model_load(c->model.path, &o, &s->model);
  if (r != QT_OK) {
    qt_error_context("model.path");
    return r;
  }
  if (c->data.seq_len > s->model->cfg.max_position_embeddings)
    return qt_fail(QT_ERR_CONFIG, "data.seq_len %lld is longer than the model's max_position_embeddings %lld "
                   "(%s/config.json); lower data.seq_len", (long long)c->data.seq_len,
                   (long long)s->model->cfg.max_position_embeddings, c->model.path);
  return QT_OK;
}

static qt_lora_config lora_config(const qt_config *c) {
  qt_lora_config lc = {.r = (int)c->lora.r, .alpha = c->lora.alpha, .dropout = c->lora.dropout,
                       .use_rslora = c->lora.use_rslora, .targets = c->lora.target_modules,
                       .master_fp32 = c->lora.master_weights == QT_MASTER_FP32,
                       .seed = (uint64_t)c->training.seed};
  return lc;
}

qt_status qt_session_fresh_lora(qt_session *s) {
  qt_lora_config lc = lora_config(&s->cfg);
  s->adapter_dir[0] = '\0';
  return qt_lora_init(s->model, &lc, &s->lora);
}

/* A qlora-train checkpoint also holds fp32 master weights when they were
 * configured; they replace the bf16 values. */
static qt_status load_master(qt_lora *l, const char *dir) {
  char p[4200];
  snprintf(p, sizeof p, "%s/master_weights.safetensors", dir);
  struct stat st;
  if (stat(p, &st) != 0) return QT_OK;
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(l, &n);
  if (!ts[0].master) return QT_OK; /* not configured now: the bf16 values stand */
  qt_st_file f;
  QT_TRY(qt_st_open(p, &f));
  qt_status r = QT_OK;
  for (size_t i = 0; i < n && r == QT_OK; i++) {
    const qt_st_entry *e = qt_st_find(&f, ts[i].name);
    if (!e || e->dtype != QT_F32 || qt_st_entry_numel(e) != ts[i].rows * ts[i].cols)
      r = qt_fail(QT_ERR_FORMAT, "%s: tensor '%s' missing or not F32 [%lld, %lld]", p, ts[i].name,
                  (long long)ts[i].rows, (long long)ts[i].cols);
    else
      memcpy(ts[i].master, e->data, (size_t)(ts[i].rows * ts[i].cols) * sizeof(float));
  }
  qt_st_close(&f);
  if (r == QT_OK) qt_lora_sync(l);
  return r;
}

qt_status qt_session_load_lora(qt_session *s, const char *dir) {
  char p[4200];
  snprintf(p, sizeof p, "%s/adapter_config.json", dir);
  struct stat st;
  if (stat(p, &st) != 0)
    return qt_fail(QT_ERR_IO, "%s: no adapter_config.json: give a qlora-train checkpoint or a PEFT adapter directory", dir);
  QT_TRY(qt_lora_load_peft(s->model, dir, s->cfg.lora.master_weights == QT_MASTER_FP32,
                           (uint64_t)s->cfg.training.seed, &s->lora));
  snprintf(s->adapter_dir, sizeof s->adapter_dir, "%s", dir);
  return load_master(s->lora, dir);
}

qt_status qt_session_pick_adapter(qt_session *s, const char *checkpoint, bool base_ok) {
  if (checkpoint) return qt_session_load_lora(s, checkpoint);
  char path[4200];
  bool found = false;
  QT_TRY(qt_ckpt_find_latest(s->cfg.output.dir, path, sizeof path, &found));
  if (found) {
    QT_LOGI("using checkpoint %s", path);
    return qt_session_load_lora(s, path);
  }
  if (!base_ok)
    return qt_fail(QT_ERR_IO, "no checkpoint under output.dir '%s' and no --checkpoint DIR given: train first or "
                   "name an adapter directory", s->cfg.output.dir);
  QT_LOGI("no checkpoint under '%s': using the base model alone", s->cfg.output.dir);
  return QT_OK;
}

/* OpenBLAS (pthreads build) internal, exported by the library for its fork
 * handler: stops its worker pool, which the next call restarts from the calling
 * thread. Declared weak: where a build lacks it the workers keep their mode. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

/* training.flush_subnormals (common/fpmode.h): this thread and the OpenMP pool,
 * which OpenBLAS's OpenMP build shares. A pthreads OpenBLAS keeps its own
 * workers, which started when the library loaded and copied the mode of that
 * moment (a new thread copies its creator's); restarting them from here gives
 * them this one. */
static void restart_openblas_pool(void) {
  int nb = openblas_get_num_threads();
  if (nb > 1 && openblas_get_parallel() == 1 && blas_thread_shutdown_) { /* 1: pthreads build */
    blas_thread_shutdown_();
    openblas_set_num_threads(nb);
  }
}

static void session_fp_mode(qt_session *s) {
  if (!s->cfg.training.flush_subnormals || qt_fp_flushing_subnormals()) return;
  if (!qt_fp_flush_subnormals(omp_get_max_threads())) {
    QT_LOGW("training.flush_subnormals: this CPU target has no flush-to-zero mode here; subnormals stay IEEE");
    return;
  }
  restart_openblas_pool();
  s->fp_flushing = true;
}

/* model.compute_dtype on the CPU: bf16 runs the tape's big GEMMs (base linears,
 * lm_head) with bf16 operands where the CPU has bf16 units and the build has
 * oneDNN (autograd/ops.h); fp32 otherwise, and always for fp32 (the oracle).
 * fp16 has no CPU kernels here: fp32. Said once per session. */
static void session_cpu_dtype(qt_session *s) {
  const char *why = NULL;
  qt_cfg_dtype d = s->cfg.model.compute_dtype;
  s->cpu_bf16 = d == QT_CDT_BF16 && qt_op_bf16_gemm_available(&why);
  if (s->cpu_dtype_said) return;
  s->cpu_dtype_said = true;
  if (s->cpu_bf16)
    QT_LOGI("model.compute_dtype bf16: the CPU runs the base linears' and lm_head's GEMMs with bf16 "
            "operands (oneDNN, %s), fp32 elsewhere; model.compute_dtype: fp32 for fp32 throughout",
            qt_op_bf16_gemm_isa());
  else if (d == QT_CDT_BF16)
    QT_LOGI("model.compute_dtype bf16: the CPU computes in fp32 (%s)", why);
  else if (d == QT_CDT_FP16)
    QT_LOGI("model.compute_dtype fp16: the CPU computes in fp32 (fp16 is a GPU compute dtype)");
}

qt_status qt_session_resolve_device(qt_session *s) {
  qt_config *c = &s->cfg;
  if (c->training.device == QT_DEVICE_CPU) return QT_OK;
  bool gpu = false;
#ifdef QLORA_HAVE_CUDA
  int n = 0;
  gpu = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#endif
  if (!gpu) { /* auto without a GPU: the CPU, silently (cuda was refused by qt_session_config) */
    c->training.device = QT_DEVICE_CPU;
    return QT_OK;
  }
#ifdef QLORA_HAVE_CUDA
  /* one GPU per rank, the node-local rank's, chosen before anything touches one */
  if (qt_dist_world()->mpi) QT_TRY(qt_dist_cuda_select_device());
#endif
  if (c->training.device == QT_DEVICE_AUTO && !qt_backend_cuda_composes(&s->model->cfg)) {
    QT_LOGI("training.device: auto: the GPU path composes llama, mistral and qwen2 layers; %s trains on the CPU",
            qt_hf_arch_name(s->model->cfg.arch));
    c->training.device = QT_DEVICE_CPU;
    return QT_OK;
  }
  qt_selfcheck_result res;
  qt_status r = qt_backend_selfcheck(QT_BACKEND_CUDA, &res);
  if (r != QT_OK) {
    if (r != QT_ERR_NUMERIC)
      qt_error_context("start-up self-check of the GPU (training.device: %s); set training.device: cpu to train on "
                       "the CPU", c->training.device == QT_DEVICE_AUTO ? "auto" : "cuda");
    return r;
  }
  QT_LOGI("training.device: %s: the GPU passed the start-up self-check in %.2f s (loss within %.1e, LoRA gradients "
          "NMSE %.1e of the CPU's): training on the GPU", c->training.device == QT_DEVICE_AUTO ? "auto" : "cuda",
          res.seconds, res.loss_rel, res.all_nmse);
  c->training.device = QT_DEVICE_CUDA;
  return QT_OK;
}

qt_status qt_session_tape(qt_session *s, int64_t B, int64_t T, bool checkpointing, bool forward_only) {
  if (s->cfg.training.device == QT_DEVICE_CUDA) { /* the GPU backend records nothing here */
    B = T = 1;
    checkpointing = false;
    forward_only = true;
  }
  session_fp_mode(s);
  session_cpu_dtype(s);
  /* With the big GEMMs on oneDNN (OpenMP threads), OpenBLAS keeps the LoRA and
   * attention GEMMs: small ones, some called from inside OpenMP loops, where
   * its own worker pool only competes with OpenMP's for the cores. One
   * OpenBLAS thread: 1B shape, bf16, 2 cores, 42-44 -> 58 tok/s. */
  if (s->cpu_bf16 && !forward_only) openblas_set_num_threads(1);
  qt_model_tape_opts o = {.max_B = B, .max_T = T, .checkpoint = checkpointing, .ce_chunk_rows = 0,
                          .max_lora_rank = s->lora ? qt_lora_get_config(s->lora)->r : 0,
                          .forward_only = forward_only,
                          .lora_no_dropout = forward_only || !s->lora || s->cfg.lora.dropout == 0.0,
                          .gemm_bf16 = s->cpu_bf16};
  QT_TRY(qt_model_tape_init(s->model, &o, &s->mt));
  if (s->lora) QT_TRY(qt_lora_attach(s->lora, qt_model_tape_get(s->mt)));
  return QT_OK;
}

qt_status qt_session_check_memory(const qt_session *s, size_t extra) {
  size_t act = 0, grad = 0;
  if (s->mt) qt_model_tape_arena_bytes(s->mt, &act, &grad);
  double need = (double)s->model->bytes_dense + (double)s->model->bytes_quant + (double)act + (double)grad + (double)extra;
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || psz <= 0) return QT_OK; /* unknown: nothing to check against */
  double have = (double)pages * (double)psz;
  if (need <= 0.9 * have) return QT_OK;
  return qt_fail(QT_ERR_NOMEM,
                 "the run needs %.0f MiB (weights %.0f, activations %.0f, gradients %.0f, the rest of the memory plan %.0f) "
                 "but this machine has %.0f MiB. Reduce data.seq_len or training.micro_batch_size (activations "
                 "grow with both; raise gradient_accumulation_steps to keep the batch), set "
                 "training.gradient_checkpointing: true, lower lora.r, or use model.quant: nf4",
                 need / 1048576.0, (double)(s->model->bytes_dense + s->model->bytes_quant) / 1048576.0,
                 act / 1048576.0, grad / 1048576.0, extra / 1048576.0, have / 1048576.0);
}

qt_status qt_session_dataset(qt_session *s, const char *path, qt_dataset *ds, bool skip_bad) {
  qt_dataset_opts o = {.seq_len = s->cfg.data.seq_len, .skip_bad_records = skip_bad, .max_records = 0};
  QT_TRY(qt_dataset_load(path, &s->prompt, &o, ds));
  if (ds->n_skipped) QT_LOGW("%s: %lld bad records skipped", path, (long long)ds->n_skipped);
  return QT_OK;
}

qt_status qt_session_eval(qt_backend *be, const qt_dataset *ds, qt_eval_result *r) {
  qt_session *s = be->s;
  memset(r, 0, sizeof *r);
  qt_loader l;
  qt_loader_opts o = {.seq_len = s->cfg.data.seq_len, .rows = s->cfg.training.micro_batch_size, .packing = 0,
                      .shuffle = 0, .seed = 0, .rank = 0, .world_size = 1,
                      .pad_id = qt_tokenizer_eos_id(s->tok) >= 0 ? qt_tokenizer_eos_id(s->tok) : 0,
                      .pad_to_longest = 1};
  QT_TRY(qt_loader_init(&l, ds, &o));
  int64_t N = o.rows * o.seq_len;
  int32_t *targets = malloc((size_t)N * sizeof *targets);
  if (!targets) {
    qt_loader_free(&l);
    return qt_fail(QT_ERR_NOMEM, "out of memory");
  }
  if (s->lora) qt_lora_set_step(s->lora, 0, false);
  qt_status st = QT_OK;
  for (;;) {
    const qt_batch *b = qt_loader_next(&l);
    qt_model_targets_from_labels(b->labels, b->doc, b->rows, b->T, targets);
    qt_model_batch mb = {.ids = b->ids, .targets = targets, .pos = b->pos, .doc = b->doc, .B = b->rows, .T = b->T};
    double ls = 0;
    int64_t cnt = 0;
    st = be->ops->eval_micro(be, &mb, &ls, &cnt);
    if (st != QT_OK) break;
    r->loss_sum += ls;
    r->tokens += cnt;
    r->examples += b->n_rows;
    if (b->epoch_end) break;
  }
  free(targets);
  qt_loader_free(&l);
  return st;
}

void qt_session_free(qt_session *s) {
  if (s->fp_flushing) { /* the threads leave in the mode they had */
    qt_fp_keep_subnormals(omp_get_max_threads());
    restart_openblas_pool();
  }
  if (s->mt) qt_model_tape_free(&s->mt);
  if (s->lora) qt_lora_free(&s->lora);
  if (s->model) qt_model_free(&s->model);
  if (s->have_prompt) qt_prompt_free(&s->prompt);
  if (s->tok) qt_tokenizer_free(s->tok);
  free(s->config_text);
  memset(s, 0, sizeof *s);
}
