/* train/train_loop.c — `qlora-train CONFIG.yaml`: the training loop, with
 * evaluation, metrics, checkpoints and exact resume (DESIGN.md sections 1, 7).
 *
 * One optimizer step = gradient_accumulation_steps micro-batches. The loss is
 * normalized by the number of target tokens of the whole step (all its
 * micro-batches), as transformers does since the GA fix (PR #34191): the
 * target counts are read first (a pass over the loader that is then rewound),
 * so every micro-batch back-propagates with d/dloss_sum = 1 / step_targets.
 *
 * Exact resume: everything a step depends on is either in the checkpoint
 * (bf16 adapters and fp32 masters, optimizer state, data cursor, step,
 * non-finite counters) or a pure function of (seed, step): dropout masks and
 * stochastic rounding are Philox streams keyed by them. So a run stopped after
 * step k and resumed produces the same per-step losses as one that never
 * stopped (tests/e2e).
 *
 * Data parallel (dist/dist.h, DESIGN.md section 9): with N ranks each loads
 * the model and takes the strided shard `rank` of the one seeded order
 * (data/loader.h), so a global step of N x micro_batch_size x GA examples
 * covers the same examples for every N that divides it (without packing).
 * The step's target count is summed over the ranks before backward, so every
 * rank back-propagates with 1 / global_targets; after the last micro-batch
 * the LoRA gradients are summed over ranks once, in rank order (same bits on
 * every rank), and the norm, clipping, non-finite decision and optimizer step
 * then run identically on every rank: the optimizer state never diverges and
 * is not exchanged. Rank 0 alone evaluates and writes checkpoints,
 * metrics.jsonl, report.html and the progress display. A stop (signal, test
 * hook) on any rank is agreed by all at the end of the step. Dropout masks
 * are keyed by the global micro-batch index (step * GA + a) * N + rank. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/fs.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "common/sha256.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "optim/optim.h"
#include "train/backend.h"
#include "train/checkpoint.h"
#include "train/cli.h"
#include "train/report.h"
#include "train/session.h"


/* Set by SIGINT/SIGTERM; read between steps. A signal handler cannot be
 * given a context, so this one flag is process state. */
static volatile sig_atomic_t qt_stop_requested = 0;
static void on_signal(int sig) { qt_stop_requested = sig; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

static void hex_of(const uint8_t d[32], char hex[65]) { qt_sha256_hex(d, hex); }

/* sha256 of a whole file; "missing" when it cannot be read. */
static void file_hash(const char *path, qt_sha256 *c) {
  uint8_t *buf;
  size_t len;
  if (qt_fs_read_file(path, (size_t)1 << 34, &buf, &len) != QT_OK) {
    qt_sha256_update(c, "missing", 7);
    qt_error_clear();
    return;
  }
  qt_sha256_update(c, buf, len);
  free(buf);
}

/* Fingerprint of the base model: config.json and every *.safetensors file
 * (name, size, and the whole content for files up to 256 MiB; above that the
 * header and the first and last MiB, so that resuming a 70B run does not
 * read 140 GB first). */
static qt_status model_fingerprint(const char *dir, char hex[65]) {
  qt_sha256 c;
  qt_sha256_init(&c);
  char p[4200];
  snprintf(p, sizeof p, "%s/config.json", dir);
  file_hash(p, &c);
  qt_st_model m;
  QT_TRY(qt_st_model_open(dir, &m));
  for (size_t i = 0; i < m.n_files; i++) {
    const qt_st_file *f = &m.files[i];
    const char *base = strrchr(f->path, '/') ? strrchr(f->path, '/') + 1 : f->path;
    uint64_t sz = f->map_len;
    qt_sha256_update(&c, base, strlen(base));
    qt_sha256_update(&c, &sz, sizeof sz);
    const uint8_t *bytes = f->map;
    if (!bytes) continue;
    if (sz <= ((uint64_t)256 << 20)) {
      qt_sha256_update(&c, bytes, sz);
    } else {
      size_t head = (size_t)(8 + f->header_len) + (1u << 20);
      qt_sha256_update(&c, bytes, head < sz ? head : sz);
      qt_sha256_update(&c, bytes + sz - (1u << 20), 1u << 20);
    }
  }
  qt_st_model_close(&m);
  uint8_t d[32];
  qt_sha256_final(&c, d);
  hex_of(d, hex);
  return QT_OK;
}

/* Hash of the parts of the config a resumed run must share with the run that
 * wrote the checkpoint: output paths, logging/eval/save cadence, threads and
 * step counts may change; everything that shapes the math may not. */
static void config_fingerprint(const qt_config *cfg, int world_size, char hex[65]) {
  qt_config c = *cfg;
  /* the global batch is what shapes the math, not how it is split over the
   * ranks: 2 ranks x GA 1 hash like 1 rank x GA 2 (and 1 rank as before) */
  c.training.gradient_accumulation_steps *= world_size;
  qt_config d;
  qt_config_defaults(&d);
  c.output = d.output;
  c.export_ = d.export_;
  memcpy(c.data.eval, d.data.eval, sizeof c.data.eval);
  c.training.max_steps = 0;
  c.training.num_epochs = 1;
  c.training.eval_steps = 0;
  c.training.logging_steps = 1;
  c.training.threads = 0;
  c.training.max_nonfinite_steps = 3;
  c.training.device = d.training.device;
  c.training.activation_offloading = d.training.activation_offloading; /* moves bytes, same results */
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  uint8_t dg[32];
  if (f) {
    qt_config_write_yaml(&c, f);
    fclose(f);
  }
  /* Keys added later to a section reset above print their default here; they
   * are cut so that checkpoints written before them keep their fingerprint
   * (export.gguf_type, 2026-12-02; training.activation_offloading, 2026-12-03). */
  static const char *const later[] = {"  gguf_type: auto\n", "  activation_offloading: false\n"};
  for (size_t k = 0; text && k < sizeof later / sizeof later[0]; k++) {
    char *at = strstr(text, later[k]);
    if (at) {
      size_t n = strlen(later[k]);
      memmove(at, at + n, len - (size_t)(at - text) - n + 1);
      len -= n;
    }
  }
  qt_sha256_digest(text ? text : "", text ? len : 0, dg);
  free(text);
  hex_of(dg, hex);
}

typedef struct {
  char base[65], tokenizer[65], data[65], config[65];
} qt_hashes;

typedef struct {
  int64_t step;
  qt_loader_cursor cursor;  /* this rank's */
  int world_size;           /* of the run that wrote the state */
  qt_loader_cursor *cursors; /* (world_size) every rank's; owned; on rank 0 when writing, all ranks when read */
  int64_t tokens_seen;
  int nonfinite_consecutive;
  int64_t nonfinite_total;
  qt_hashes h;
} qt_train_state;

static cJSON *state_json(const qt_train_state *s, int64_t total_steps, double epoch, uint64_t seed) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "format", "qlora-train trainer_state v1");
  cJSON_AddNumberToObject(o, "step", (double)s->step);
  cJSON_AddNumberToObject(o, "total_steps", (double)total_steps);
  cJSON_AddNumberToObject(o, "epoch", epoch);
  cJSON *cur = cJSON_AddObjectToObject(o, "data_cursor");
  cJSON_AddNumberToObject(cur, "epoch", (double)s->cursors[0].epoch);
  cJSON_AddNumberToObject(cur, "pos", (double)s->cursors[0].pos);
  /* data parallel: one cursor per rank (rank 0's is also data_cursor) */
  cJSON_AddNumberToObject(o, "world_size", s->world_size);
  cJSON *curs = cJSON_AddArrayToObject(o, "data_cursors");
  for (int r = 0; r < s->world_size; r++) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "epoch", (double)s->cursors[r].epoch);
    cJSON_AddNumberToObject(e, "pos", (double)s->cursors[r].pos);
    cJSON_AddItemToArray(curs, e);
  }
  cJSON_AddNumberToObject(o, "tokens_seen", (double)s->tokens_seen);
  cJSON *rng = cJSON_AddObjectToObject(o, "rng");
  cJSON_AddNumberToObject(rng, "seed", (double)seed);
  cJSON_AddStringToObject(rng, "kind", "philox4x32-10 keyed by (seed, step); no other state");
  cJSON *nf = cJSON_AddObjectToObject(o, "nonfinite");
  cJSON_AddNumberToObject(nf, "consecutive", s->nonfinite_consecutive);
  cJSON_AddNumberToObject(nf, "skipped_total", (double)s->nonfinite_total);
  cJSON *h = cJSON_AddObjectToObject(o, "hashes");
  cJSON_AddStringToObject(h, "base_model", s->h.base);
  cJSON_AddStringToObject(h, "tokenizer", s->h.tokenizer);
  cJSON_AddStringToObject(h, "train_data", s->h.data);
  cJSON_AddStringToObject(h, "config", s->h.config);
  return o;
}

static bool get_i64(const cJSON *o, const char *k, int64_t *v) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble < 0 || x->valuedouble > 9e15 ||
      x->valuedouble != floor(x->valuedouble))
    return false;
  *v = (int64_t)x->valuedouble;
  return true;
}

static bool get_hash(const cJSON *o, const char *k, char out[65]) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!cJSON_IsString(x) || strlen(x->valuestring) != 64) return false;
  memcpy(out, x->valuestring, 65);
  return true;
}

static qt_status read_state(const char *dir, qt_train_state *s) {
  char p[4200];
  snprintf(p, sizeof p, "%s/trainer_state.json", dir);
  uint8_t *buf;
  size_t len;
  QT_TRY(qt_fs_read_file(p, 1 << 24, &buf, &len));
  cJSON *o = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  qt_status r = QT_OK;
  const cJSON *cur = o ? cJSON_GetObjectItemCaseSensitive(o, "data_cursor") : NULL;
  const cJSON *nf = o ? cJSON_GetObjectItemCaseSensitive(o, "nonfinite") : NULL;
  const cJSON *h = o ? cJSON_GetObjectItemCaseSensitive(o, "hashes") : NULL;
  int64_t cons = 0;
  memset(s, 0, sizeof *s);
  if (!o || !get_i64(o, "step", &s->step) || !cur || !get_i64(cur, "epoch", &s->cursor.epoch) ||
      !get_i64(cur, "pos", &s->cursor.pos) || !get_i64(o, "tokens_seen", &s->tokens_seen) || !nf ||
      !get_i64(nf, "consecutive", &cons) || !get_i64(nf, "skipped_total", &s->nonfinite_total) || !h ||
      !get_hash(h, "base_model", s->h.base) || !get_hash(h, "tokenizer", s->h.tokenizer) ||
      !get_hash(h, "train_data", s->h.data) || !get_hash(h, "config", s->h.config))
    r = qt_fail(QT_ERR_FORMAT, "%s: missing or malformed fields (step, data_cursor, tokens_seen, nonfinite, hashes)", p);
  s->nonfinite_consecutive = (int)cons;
  /* world_size and data_cursors: absent in checkpoints from before data parallel (one rank) */
  int64_t ws = 1;
  const cJSON *curs = o ? cJSON_GetObjectItemCaseSensitive(o, "data_cursors") : NULL;
  if (r == QT_OK && cJSON_GetObjectItemCaseSensitive(o, "world_size") &&
      (!get_i64(o, "world_size", &ws) || ws < 1 || ws > 1 << 20 || !cJSON_IsArray(curs) ||
       cJSON_GetArraySize(curs) != ws))
    r = qt_fail(QT_ERR_FORMAT, "%s: world_size must be a positive integer with one data_cursors entry per rank", p);
  if (r == QT_OK) {
    s->world_size = (int)ws;
    s->cursors = calloc((size_t)ws, sizeof *s->cursors);
    if (!s->cursors) r = qt_fail(QT_ERR_NOMEM, "out of memory");
  }
  for (int64_t i = 0; r == QT_OK && i < ws; i++) {
    const cJSON *e = curs ? cJSON_GetArrayItem(curs, (int)i) : NULL;
    if (!curs)
      s->cursors[i] = s->cursor;
    else if (!get_i64(e, "epoch", &s->cursors[i].epoch) || !get_i64(e, "pos", &s->cursors[i].pos))
      r = qt_fail(QT_ERR_FORMAT, "%s: data_cursors[%lld] needs integer epoch and pos", p, (long long)i);
  }
  cJSON_Delete(o);
  return r;
}

/* This rank's cursor from a checkpoint written by saved->world_size ranks.
 * Same world size: the rank's own cursor (bit-exact resume). Another world
 * size: the ranks' cursors must describe one global position P in one epoch
 * (rank r delivered exactly the positions r, r+N, ... below P, which holds
 * without packing, and with packing only when one rank wrote the
 * checkpoint); the new rank r' of N' then continues after P with
 * ceil((P - r') / N') examples of its shard done, so the next global step
 * starts at example position P of the same order. */
static qt_status resume_cursor(const qt_train_state *saved, const char *ckpt, int rank, int world,
                               qt_loader_cursor *out) {
  if (saved->world_size == world) {
    *out = saved->cursors[rank];
    return QT_OK;
  }
  int W = saved->world_size;
  int64_t e = saved->cursors[0].epoch, P = 0;
  for (int r = 0; r < W; r++) P += saved->cursors[r].pos;
  for (int r = 0; r < W; r++) {
    int64_t want = P > r ? (P - r + W - 1) / W : 0;
    if (saved->cursors[r].epoch != e || saved->cursors[r].pos != want)
      return qt_fail(QT_ERR_CONFIG, "%s: written by %d ranks whose data cursors are not one global position (rank %d "
                     "is at epoch %lld, example %lld of its shard; with data.packing the ranks advance at different "
                     "rates, and near an epoch's end they can be in different epochs): resume it with %d ranks",
                     ckpt, W, r, (long long)saved->cursors[r].epoch, (long long)saved->cursors[r].pos, W);
  }
  out->epoch = e;
  out->pos = P > rank ? (P - rank + world - 1) / world : 0;
  return QT_OK;
}

/* ---- checkpoint write --------------------------------------------------- */

typedef struct {
  qt_session *s;
  qt_adamw *opt;
  const char *base_model;
  int64_t total_steps;
  double epoch;
} qt_saver;

static qt_status write_checkpoint(const qt_saver *sv, const qt_train_state *st) {
  qt_ckpt_writer w;
  QT_TRY(qt_ckpt_begin(&w, sv->s->cfg.output.dir, st->step));
  char p[4200];
  qt_status r = qt_lora_save_peft(sv->s->lora, w.tmp_dir, sv->base_model, QT_BF16);
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(sv->s->lora, &n);
  if (r == QT_OK && ts[0].master) {
    qt_st_write_tensor *wt = calloc(n, sizeof *wt);
    if (!wt) r = qt_fail(QT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; wt && i < n; i++) {
      wt[i].name = ts[i].name;
      wt[i].dtype = QT_F32;
      wt[i].ndim = 2;
      wt[i].shape[0] = ts[i].rows;
      wt[i].shape[1] = ts[i].cols;
      wt[i].data = ts[i].master;
    }
    if (wt) {
      qt_ckpt_file_path(&w, "master_weights.safetensors", p, sizeof p);
      r = qt_st_write(p, wt, n, NULL, NULL, 0);
      free(wt);
    }
  }
  if (r == QT_OK) {
    size_t m = qt_adamw_state_count(sv->opt);
    qt_st_write_tensor *wt = calloc(m, sizeof *wt);
    if (!wt) {
      r = qt_fail(QT_ERR_NOMEM, "out of memory");
    } else {
      qt_adamw_state_tensors(sv->opt, wt);
      qt_ckpt_file_path(&w, "optimizer.safetensors", p, sizeof p);
      const char *mk[] = {"format"}, *mv[] = {"qlora-train adamw"};
      r = qt_st_write(p, wt, m, mk, mv, 1);
      free(wt);
    }
  }
  if (r == QT_OK) {
    cJSON *o = state_json(st, sv->total_steps, sv->epoch, (uint64_t)sv->s->cfg.training.seed);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    qt_ckpt_file_path(&w, "trainer_state.json", p, sizeof p);
    r = text ? qt_fs_write_atomic(p, text, strlen(text)) : qt_fail(QT_ERR_NOMEM, "out of memory");
    free(text);
  }
  if (r == QT_OK) {
    qt_ckpt_file_path(&w, "config.yaml", p, sizeof p);
    r = qt_fs_write_atomic(p, sv->s->config_text, strlen(sv->s->config_text));
  }
  if (r != QT_OK) {
    qt_ckpt_abort(&w);
    qt_error_context("writing checkpoint for step %lld (the previous checkpoints are intact)", (long long)st->step);
    return r;
  }
  r = qt_ckpt_commit(&w, sv->s->cfg.output.save_total_limit);
  if (r == QT_OK) QT_LOGI("saved %s", w.final_dir);
  return r;
}

/* ---- resume ----------------------------------------------------------------- */

static qt_status restore_optimizer(qt_adamw *opt, const char *dir) {
  char p[4200];
  snprintf(p, sizeof p, "%s/optimizer.safetensors", dir);
  qt_st_file f;
  QT_TRY(qt_st_open(p, &f));
  qt_st_write_tensor *in = calloc(f.n_tensors ? f.n_tensors : 1, sizeof *in);
  if (!in) {
    qt_st_close(&f);
    return qt_fail(QT_ERR_NOMEM, "out of memory");
  }
  for (size_t i = 0; i < f.n_tensors; i++) {
    in[i].name = f.tensors[i].name;
    in[i].dtype = f.tensors[i].dtype;
    in[i].ndim = f.tensors[i].ndim;
    memcpy(in[i].shape, f.tensors[i].shape, sizeof in[i].shape);
    in[i].data = f.tensors[i].data;
  }
  qt_status r = qt_adamw_state_load(opt, in, f.n_tensors, p);
  free(in);
  qt_st_close(&f);
  return r;
}

/* Keeps the metrics of steps <= step (a run killed after its last checkpoint
 * logged steps that the resumed run will log again). */
static qt_status trim_metrics(const char *out_dir, int64_t step) {
  char p[4200];
  snprintf(p, sizeof p, "%s/metrics.jsonl", out_dir);
  struct stat st;
  if (stat(p, &st) != 0) return QT_OK;
  uint8_t *buf;
  size_t len;
  QT_TRY(qt_fs_read_file(p, (size_t)1 << 32, &buf, &len));
  char *keep = malloc(len + 1);
  if (!keep) {
    free(buf);
    return qt_fail(QT_ERR_NOMEM, "out of memory");
  }
  size_t kl = 0, start = 0;
  for (size_t i = 0; i < len; i++) {
    if (buf[i] != '\n') continue;
    cJSON *o = cJSON_ParseWithLength((const char *)buf + start, i - start);
    const cJSON *sv = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
    if (cJSON_IsNumber(sv) && sv->valuedouble <= (double)step) {
      memcpy(keep + kl, buf + start, i - start + 1);
      kl += i - start + 1;
    }
    cJSON_Delete(o);
    start = i + 1;
  }
  free(buf);
  qt_status r = qt_fs_write_atomic(p, keep, kl);
  free(keep);
  return r;
}

/* ---- the loop ----------------------------------------------------------------- */

typedef struct {
  FILE *f;
  bool tty;
} qt_metrics;

static void metrics_line(qt_metrics *m, const char *line) {
  if (!m->f) return;
  fputs(line, m->f);
  fputc('\n', m->f);
  fflush(m->f);
}

/* A number for JSON: null when not finite (JSON has no NaN or Infinity). */
__attribute__((format(printf, 3, 0))) static void json_num(char *buf, size_t cap, const char *fmt, double v) {
  if (isfinite(v))
    snprintf(buf, cap, fmt, v);
  else
    snprintf(buf, cap, "null");
}

static void fmt_eta(double s, char *buf, size_t cap) {
  if (!isfinite(s) || s < 0) {
    snprintf(buf, cap, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
}

/* Rank 0's checkpoint write, then its status to every rank: the others wait
 * for the checkpoint to be complete (so that none exits, and makes the
 * launcher kill rank 0, while it writes) and fail with it. */
static qt_status checkpoint_all_ranks(const qt_saver *sv, qt_train_state *st, const qt_dist *d) {
  int64_t mine[2] = {st->cursor.epoch, st->cursor.pos};
  int64_t *all = d->rank == 0 ? calloc((size_t)d->world_size * 2, sizeof *all) : NULL;
  if (d->rank == 0 && !all) return qt_fail(QT_ERR_NOMEM, "out of memory");
  qt_status r = qt_dist_gather_i64(mine, 2, all, 0);
  int64_t ok = 1;
  if (r == QT_OK && d->rank == 0) {
    for (int i = 0; i < d->world_size; i++) st->cursors[i] = (qt_loader_cursor){all[2 * i], all[2 * i + 1]};
    r = write_checkpoint(sv, st);
    ok = r == QT_OK;
  }
  free(all);
  if (r != QT_OK && d->world_size == 1) return r;
  /* a failed gather on one rank fails them all in MPI; the broadcast carries
   * rank 0's write status */
  if (r != QT_OK && d->rank == 0) return r; /* main() aborts the job, naming rank 0 and the error */
  QT_TRY(qt_dist_bcast(&ok, sizeof ok, 0));
  if (!ok) return qt_fail(QT_ERR_IO, "rank 0 could not write the checkpoint of step %lld", (long long)st->step);
  return r;
}

static qt_status run_eval(qt_backend *be, const qt_dataset *ev, int64_t step, qt_metrics *m, double *loss) {
  qt_eval_result r;
  QT_TRY(qt_session_eval(be, ev, &r));
  *loss = r.tokens ? r.loss_sum / (double)r.tokens : NAN;
  char line[256];
  char ls[32], ps[32];
  json_num(ls, sizeof ls, "%.9g", *loss);
  json_num(ps, sizeof ps, "%.9g", exp(*loss));
  snprintf(line, sizeof line, "{\"step\":%lld,\"eval_loss\":%s,\"eval_ppl\":%s,\"eval_tokens\":%lld,\"eval_examples\":%lld}",
           (long long)step, ls, ps, (long long)r.tokens, (long long)r.examples);
  metrics_line(m, line);
  if (m->tty) fputc('\n', stderr);
  fprintf(stderr, "eval  step %lld: loss %.6f ppl %.4f over %lld tokens\n", (long long)step, *loss, exp(*loss),
          (long long)r.tokens);
  return QT_OK;
}

/* The widest batch this run will record: its remaining n_batches training
 * batches (the loader is rewound afterwards; rows are padded to the batch's
 * longest, data/loader.h) and every evaluation example (one per row, at most
 * seq_len). The tape arenas are sized for it rather than for seq_len: a short
 * run, or a dataset of short examples, never touches memory for rows it never
 * sees, and the plan stays what the run holds. */
static qt_status widest_batch(qt_loader *l, int64_t n_batches, const qt_dataset *eval, int64_t seq_len,
                              int64_t *T) {
  qt_loader_cursor at = qt_loader_get_cursor(l);
  int64_t t = 1;
  for (int64_t i = 0; i < n_batches && t < seq_len; i++) {
    const qt_batch *b = qt_loader_next(l);
    if (b->T > t) t = b->T;
  }
  for (int64_t i = 0; eval && i < eval->n; i++) {
    int64_t len = eval->offset[i + 1] - eval->offset[i];
    if (len > t) t = len;
  }
  *T = t < seq_len ? t : seq_len;
  return qt_loader_set_cursor(l, at);
}

/* What the memory plan needs beyond the session (train_main knows it). */
typedef struct {
  size_t rss_start;    /* resident set before anything was loaded (measured) */
  size_t lora_bytes;   /* adapters: bf16 + fp32 compute + fp32 grad (+ master, + reduction buffers) */
  int64_t lora_params;
  bool master;
  size_t opt_bytes;    /* optimizer state */
  int opt_bits;
  size_t mask_bytes;   /* LoRA dropout masks */
  size_t pinned_bytes; /* the backend's page-locked host memory (offloaded layer inputs) */
  const qt_dataset *train, *eval;
} run_plan;

/* Bytes a tokenized dataset holds (data/dataset.h): ids and labels per
 * token, offset and source line per example. The pages the arrays touch:
 * their realloc'd capacity beyond that is never written, so never resident
 * (qt_mem_heap_setup keeps arrays this large in mappings of their own). */
static size_t dataset_bytes(const qt_dataset *d) {
  int64_t tokens = d->n ? d->offset[d->n] : 0;
  return (size_t)tokens * 2 * sizeof(int32_t) + (size_t)(2 * d->n + 1) * sizeof(int64_t);
}

/* Bytes a loader of B rows of T tokens over n examples holds (data/loader.c
 * qt_loader_init): the epoch's permutation and the batch (ids, labels, pos,
 * doc, example: int32 per token; documents per row). */
static size_t loader_bytes(int64_t n, int64_t B, int64_t T) {
  return (size_t)n * sizeof(int64_t) + (size_t)(B * T) * 5 * sizeof(int32_t) + (size_t)B * sizeof(int32_t);
}

/* The memory plan of a training run (common/arena.h): everything the
 * process holds at its peak, from the sizes, beside two measurements that no
 * size formula gives: the resident set at start-up (libc, OpenBLAS, OpenMP,
 * the binary's pages) and what the tokenizer's tables added. */
static qt_status memory_plan(const qt_session *s, const run_plan *rp, qt_mem_plan *plan) {
  const qt_config *c = &s->cfg;
  int64_t B = c->training.micro_batch_size, T = c->data.seq_len;
  char name[QT_ARENA_NAME_CAP];
  QT_TRY(qt_mem_plan_add(plan, "process baseline (measured at start)", "cpu", rp->rss_start));
  QT_TRY(qt_mem_plan_add(plan, "tokenizer (measured as it loaded)", "cpu", s->tokenizer_rss));
  QT_TRY(qt_mem_plan_add(plan, "free heap kept for reuse (at most)", "cpu", QT_MEM_HEAP_KEEP));
  QT_TRY(qt_model_plan_add(s->model, s->mt, plan));
  size_t data = dataset_bytes(rp->train) + (rp->eval ? dataset_bytes(rp->eval) : 0);
  QT_TRY(qt_mem_plan_add_phase(plan, rp->eval ? "datasets (train + eval, tokenized)" : "dataset (tokenized)", "cpu",
                               data, QT_MEM_RUN));
  /* the training loader and its targets; evaluation builds a second loader
   * and targets for its rows (train/session.c qt_session_eval) */
  size_t batches = loader_bytes(rp->train->n, B, T) + (size_t)(B * T) * sizeof(int32_t);
  if (rp->eval) batches += loader_bytes(rp->eval->n, B, T) + (size_t)(B * T) * sizeof(int32_t);
  QT_TRY(qt_mem_plan_add_phase(plan, "batches (loaders, targets)", "cpu", batches, QT_MEM_RUN));
  snprintf(name, sizeof name, "LoRA adapters (bf16, fp32, grad%s)", rp->master ? ", master" : "");
  QT_TRY(qt_mem_plan_add_phase(plan, name, "cpu", rp->lora_bytes, QT_MEM_RUN));
  if (rp->mask_bytes) QT_TRY(qt_mem_plan_add_phase(plan, "LoRA dropout masks", "cpu", rp->mask_bytes, QT_MEM_RUN));
  if (rp->pinned_bytes)
    QT_TRY(qt_mem_plan_add_phase(plan, "offloaded layer inputs (pinned, for the GPU)", "cpu", rp->pinned_bytes,
                                 QT_MEM_RUN));
  snprintf(name, sizeof name, "optimizer state (%d-bit)", rp->opt_bits);
  QT_TRY(qt_mem_plan_add_phase(plan, name, "cpu", rp->opt_bytes, QT_MEM_RUN));
  /* a checkpoint converts every adapter to bf16 before writing (lora.c
   * qt_lora_save_peft); master weights and optimizer state are written in place */
  return qt_mem_plan_add_phase(plan, "checkpoint writing (bf16 copies)", "cpu",
                               (size_t)rp->lora_params * sizeof(uint16_t), QT_MEM_RUN);
}

static qt_status train_main(qt_session *s, const char *config_path) {
  qt_config *c = &s->cfg;
  const qt_dist *dist = qt_dist_world();
  const bool root = dist->rank == 0; /* the one writer */
  const int world = dist->world_size;
  qt_train_state st = {0};
  /* The plan's process baseline: the resident set before anything of ours is
   * loaded, with the OpenMP pool of training.threads started first (every
   * worker's stack and thread state is held from then on; the pool would
   * start at the first parallel loop anyway) */
#pragma omp parallel
  { (void)0; }
  size_t rss_start = qt_mem_rss();
  qt_mem_plan plan;
  qt_mem_plan_init(&plan);
  if (root) fprintf(stderr, "qlora-train: effective config (%s):\n%s", config_path, s->config_text);
  if (root && world > 1)
    fprintf(stderr, "qlora-train: %d ranks (%s); global batch = %d ranks x %lld rows x %lld accumulation steps\n",
            world, qt_dist_backend(), world, (long long)c->training.micro_batch_size,
            (long long)c->training.gradient_accumulation_steps);
  qt_mem_trace("start");
  QT_TRY(qt_session_load_model(s));
  qt_mem_trace("model loaded");
  QT_TRY(qt_session_resolve_device(s)); /* auto: the GPU when there is one and it passes the self-check */

  qt_dataset train = {0}, eval = {0};
  qt_status r = qt_session_dataset(s, c->data.train, &train, c->data.skip_bad_records);
  if (r != QT_OK) return r;
  bool have_eval = c->data.eval[0] != '\0';
  if (have_eval && (r = qt_session_dataset(s, c->data.eval, &eval, c->data.skip_bad_records)) != QT_OK) {
    qt_dataset_free(&train);
    return r;
  }

  qt_mem_trace("datasets");
  qt_loader loader;
  int32_t eos = qt_tokenizer_eos_id(s->tok);
  qt_loader_opts lo = {.seq_len = c->data.seq_len, .rows = c->training.micro_batch_size, .packing = c->data.packing,
                       .shuffle = c->data.shuffle, .seed = (uint64_t)c->training.seed, .rank = dist->rank, .world_size = world,
                       .pad_id = eos >= 0 ? eos : 0, .pad_to_longest = 1};
  if ((r = qt_loader_init(&loader, &train, &lo)) != QT_OK) goto out_data;

  /* total optimizer steps */
  int64_t accum = c->training.gradient_accumulation_steps, total_steps = c->training.max_steps;
  if (total_steps == 0) {
    double micro = 0;
    int64_t full = (int64_t)floor(c->training.num_epochs);
    for (int64_t e = 0; e <= full; e++) {
      int64_t nb;
      if ((r = qt_loader_epoch_batches(&loader, e, &nb)) != QT_OK) goto out_loader;
      micro += e < full ? (double)nb : (c->training.num_epochs - (double)full) * (double)nb;
    }
    total_steps = (int64_t)ceil(micro / (double)accum - 1e-9);
    if (total_steps < 1) total_steps = 1;
    /* shards differ by at most one example, so their batch counts by at most
     * one: every rank runs the largest count (rank 0's) */
    if ((r = qt_dist_max_i64(&total_steps, 1)) != QT_OK) goto out_loader;
  }
  int64_t epoch_batches;
  if ((r = qt_loader_epoch_batches(&loader, 0, &epoch_batches)) != QT_OK) goto out_loader;

  /* adapters: resume or fresh */
  char ckpt[4200] = "";
  bool resumed = false;
  if (strcmp(c->output.resume, "never") != 0) {
    bool found = false;
    if (!root) {
      /* rank 0 picks the checkpoint (below) and names it to the others */
    } else if (strcmp(c->output.resume, "auto") == 0) {
      if ((r = qt_ckpt_find_latest(c->output.dir, ckpt, sizeof ckpt, &found)) != QT_OK) goto out_loader;
    } else {
      snprintf(ckpt, sizeof ckpt, "%s", c->output.resume);
      if ((r = qt_ckpt_verify(ckpt)) != QT_OK) {
        qt_error_context("output.resume");
        goto out_loader;
      }
      found = true;
    }
    int64_t f = found;
    if ((r = qt_dist_bcast(&f, sizeof f, 0)) != QT_OK || (r = qt_dist_bcast(ckpt, sizeof ckpt, 0)) != QT_OK)
      goto out_loader;
    resumed = f != 0;
  }
  qt_hashes now;
  if ((r = model_fingerprint(c->model.path, now.base)) != QT_OK) goto out_loader;
  {
    qt_sha256 hc;
    qt_sha256_init(&hc);
    char p[4200];
    snprintf(p, sizeof p, "%s/tokenizer.json", c->model.path);
    file_hash(p, &hc);
    uint8_t d[32];
    qt_sha256_final(&hc, d);
    hex_of(d, now.tokenizer);
    qt_dataset_hash(&train, d);
    hex_of(d, now.data);
    config_fingerprint(c, world, now.config);
  }
  if (world > 1) { /* every rank must train the same model on the same data with the same settings */
    qt_hashes r0 = now;
    if ((r = qt_dist_bcast(&r0, sizeof r0, 0)) != QT_OK) goto out_loader;
    static const char *const what[4] = {"base model (model.path)", "tokenizer", "training data (data.train)",
                                        "config (lora, data, training settings)"};
    const char *a[4] = {r0.base, r0.tokenizer, r0.data, r0.config}, *b[4] = {now.base, now.tokenizer, now.data, now.config};
    for (int i = 0; i < 4; i++)
      if (strcmp(a[i], b[i]) != 0) {
        r = qt_fail(QT_ERR_CONFIG, "%s: this rank's %s differs from rank 0's: give every rank the same files and "
                    "config (on several nodes, the same paths with the same contents)", config_path, what[i]);
        goto out_loader;
      }
  }
  if (resumed) {
    QT_LOGI("resuming from %s", ckpt);
    if ((r = read_state(ckpt, &st)) != QT_OK) goto out_loader;
    static const char *const what[4] = {"base model (model.path)", "tokenizer", "training data (data.train)",
                                        "config (lora, data, training settings)"};
    const char *was[4] = {st.h.base, st.h.tokenizer, st.h.data, st.h.config};
    const char *is[4] = {now.base, now.tokenizer, now.data, now.config};
    for (int i = 0; i < 4; i++) {
      if (strcmp(was[i], is[i]) == 0) continue;
      if (!c->output.allow_resume_mismatch) {
        r = qt_fail(QT_ERR_CONFIG, "%s: the %s differs from the one this checkpoint was trained with; resuming "
                    "would mix two runs. Use a new output.dir, or set output.allow_resume_mismatch: true to resume anyway",
                    ckpt, what[i]);
        goto out_loader;
      }
      QT_LOGW("%s: the %s changed since this checkpoint; resuming anyway (output.allow_resume_mismatch)", ckpt, what[i]);
    }
    if ((r = qt_session_load_lora(s, ckpt)) != QT_OK) goto out_loader;
    if ((r = resume_cursor(&st, ckpt, dist->rank, world, &st.cursor)) != QT_OK) goto out_loader;
    int64_t at_example = 0;
    for (int i = 0; i < st.world_size; i++) at_example += st.cursors[i].pos;
    if (st.world_size != world && root)
      QT_LOGW("%s: written by %d rank(s), resumed with %d: training continues at example %lld of epoch %lld's order "
              "with a global batch of %d x %lld x %lld; the steps' losses are no longer bit-identical to a run "
              "that kept %d rank(s) (another summation order)", ckpt, st.world_size, world,
              (long long)at_example, (long long)st.cursor.epoch, world,
              (long long)c->training.micro_batch_size, (long long)c->training.gradient_accumulation_steps,
              st.world_size);
    if ((r = qt_loader_set_cursor(&loader, st.cursor)) != QT_OK) {
      qt_error_context("%s: data cursor of rank %d", ckpt, dist->rank);
      goto out_loader;
    }
  } else if (c->lora.init_adapter[0]) {
    if ((r = qt_session_load_lora(s, c->lora.init_adapter)) != QT_OK) {
      qt_error_context("lora.init_adapter");
      goto out_loader;
    }
    const qt_lora_config *lc = qt_lora_get_config(s->lora);
    unsigned want = qt_lora_resolve_targets(s->model, c->lora.target_modules);
    if (lc->r != c->lora.r || lc->alpha != c->lora.alpha || lc->targets != want ||
        lc->use_rslora != c->lora.use_rslora || lc->dropout != c->lora.dropout) {
      r = qt_fail(QT_ERR_CONFIG, "lora.init_adapter: %s has r=%d, alpha=%g, %s targets; the config says r=%lld, "
                  "alpha=%g; make lora.r, lora.alpha, lora.dropout, lora.target_modules and lora.use_rslora match the adapter",
                  c->lora.init_adapter, lc->r, lc->alpha, lc->targets == want ? "the same" : "other",
                  (long long)c->lora.r, c->lora.alpha);
      goto out_loader;
    }
  } else {
    if ((r = qt_session_fresh_lora(s)) != QT_OK) goto out_loader;
  }
  st.h = now;
  st.world_size = world;
  free(st.cursors);
  st.cursors = calloc((size_t)world, sizeof *st.cursors);
  if (!st.cursors) {
    r = qt_fail(QT_ERR_NOMEM, "out of memory");
    goto out_loader;
  }
  int64_t tape_T;
  if ((r = widest_batch(&loader, (total_steps - st.step) * accum, have_eval ? &eval : NULL, c->data.seq_len,
                        &tape_T)) != QT_OK)
    goto out_loader;
  /* the CPU backend records on the tape (on the GPU it only carries the
   * adapters' tensors: session.h) */
  bool use_cuda = qt_backend_kind_of(c) == QT_BACKEND_CUDA;
  if ((r = qt_session_tape(s, c->training.micro_batch_size, tape_T, c->training.gradient_checkpointing, false)) !=
      QT_OK)
    goto out_loader;
  if (root && tape_T < c->data.seq_len)
    fprintf(stderr, "qlora-train: the widest batch of this run has rows of %lld tokens (data.seq_len %lld): the %s "
            "is sized for %lld x %lld\n", (long long)tape_T, (long long)c->data.seq_len,
            use_cuda ? "GPU context" : "tape", (long long)c->training.micro_batch_size, (long long)tape_T);
  qt_mem_trace("tape");

  /* optimizer */
  size_t n_par;
  qt_lora_tensor *ts = qt_lora_tensors(s->lora, &n_par);
  int64_t *numels = calloc(n_par, sizeof *numels);
  int32_t *targets = malloc((size_t)(c->training.micro_batch_size * c->data.seq_len) * sizeof *targets);
  qt_adamw opt;
  bool opt_ok = false;
  qt_backend *be = NULL;         /* the micro-batches' forward and backward, and evaluation */
  qt_metrics met = {.f = NULL, .tty = root && isatty(2)};
  float *flat_grad = NULL;       /* (lora_params) world > 1: the step's gradients, reduced over ranks */
  qt_dist_reducer reducer = {0};
#ifdef QLORA_HAVE_CUDA
  qt_dist_nccl *nccl = NULL;     /* training.device cuda with NCCL: the reduction on the GPUs */
#endif
  if (!numels || !targets) {
    r = qt_fail(QT_ERR_NOMEM, "out of memory");
    goto out_all;
  }
  int64_t lora_params = 0;
  for (size_t i = 0; i < n_par; i++) {
    numels[i] = ts[i].rows * ts[i].cols;
    lora_params += numels[i];
  }
  /* The backend (backend.h): the CPU tape, or training.device: cuda's GPU
   * path (weights uploaded once; forward, backward, evaluation and the
   * optimizer update on the GPU, the adapters and their gradients kept there;
   * per step only the norm comes back, and the weights and optimizer state at
   * checkpoints). The step around it is this one loop for both. */
  qt_adamw_config oc;
  int bits = (c->training.optimizer == QT_OPT_PAGED_ADAMW_8BIT || c->training.optimizer == QT_OPT_ADAMW_8BIT) ? 8 : 32;
  qt_adamw_config_default(&oc, bits);
  oc.paged = c->training.optimizer == QT_OPT_PAGED_ADAMW_8BIT || c->training.optimizer == QT_OPT_PAGED_ADAMW_32BIT;
  oc.beta1 = (float)c->training.adam_beta1;
  oc.beta2 = (float)c->training.adam_beta2;
  oc.eps = (float)c->training.adam_epsilon;
  oc.weight_decay = (float)c->training.weight_decay;
  {
    qt_backend_opts bo = {.kind = qt_backend_kind_of(c), .max_B = c->training.micro_batch_size,
                          .max_T = tape_T, .train = true, .optimizer = &oc, .print_plan = root};
    if ((r = qt_backend_open(s, &bo, &be)) != QT_OK) goto out_all;
    if ((r = qt_backend_step_init(be)) != QT_OK) goto out_all;
    if (root && use_cuda)
      fprintf(stderr, "qlora-train: training.device cuda: forward, backward, evaluation and the optimizer update "
              "on the GPU (experimental path): %.1f MiB device memory (weights, activations, gradients)\n",
              (double)be->ops->device_bytes(be) / 1048576.0);
  }
  qt_tensor *params = be->params, *grads = be->grads;
  oc.device = be->device;
  if ((r = qt_adamw_init(&opt, &oc, n_par, numels)) != QT_OK) goto out_all;
  opt_ok = true;
  if (resumed && (r = restore_optimizer(&opt, ckpt)) != QT_OK) goto out_all;
  qt_lr_schedule sched = {.kind = c->training.lr_scheduler == QT_SCHED_CONSTANT ? QT_LR_CONSTANT
                                  : c->training.lr_scheduler == QT_SCHED_LINEAR ? QT_LR_LINEAR
                                                                               : QT_LR_COSINE,
                          .warmup_steps = c->training.warmup_steps, .total_steps = total_steps,
                          .min_ratio = c->training.min_lr_ratio};
  qt_optim_nonfinite nonfinite = {.max_consecutive = (int)c->training.max_nonfinite_steps,
                                  .consecutive = st.nonfinite_consecutive, .skipped_total = st.nonfinite_total};

  /* memory plan (rank 0 prints it; every rank checks its own memory) */
  if (root) fprintf(stderr, "qlora-train: %lld examples (%lld target tokens), %lld batches per epoch, %lld optimizer steps; "
          "LoRA: %zu tensors, %lld parameters\n", (long long)train.n, (long long)train.n_targets,
          (long long)epoch_batches, (long long)total_steps, n_par, (long long)lora_params);
  size_t lora_bytes = (size_t)lora_params * (2 + 8 + (ts[0].master ? 4 : 0));
  /* test hook for the GPU suite: the NCCL reduction with one rank too (it must
   * then change no bit: tools/gpu_run.sh compares with the plain GPU run) */
  bool nccl_one = world == 1 && c->training.device == QT_DEVICE_CUDA && getenv("QLORA_TEST_NCCL") != NULL;
  if (world > 1 || nccl_one) {
    /* the step's gradients in one flat buffer, and the reduction's scratch */
    if (!(flat_grad = malloc((size_t)(lora_params ? lora_params : 1) * sizeof *flat_grad))) {
      r = qt_fail(QT_ERR_NOMEM, "out of memory (%lld floats for the gradient reduction)", (long long)lora_params);
      goto out_all;
    }
    if ((r = qt_dist_reducer_init(&reducer, lora_params)) != QT_OK) goto out_all;
    lora_bytes += (size_t)lora_params * 8;
  }
  /* LoRA dropout on the CPU keeps one mask of (tokens x in) bytes per adapted
   * linear, grown to the widest batch (lora.c); the GPU draws its masks in
   * its kernels and keeps none */
  int64_t mask_bytes = 0;
  if (c->lora.dropout > 0 && !use_cuda)
    for (size_t i = 0; i < n_par; i++)
      if (!ts[i].is_B) mask_bytes += c->training.micro_batch_size * tape_T * ts[i].cols;
  {
    run_plan rp = {.rss_start = rss_start, .lora_bytes = lora_bytes, .lora_params = lora_params,
                   .master = ts[0].master != NULL, .opt_bytes = qt_adamw_state_bytes(&opt), .opt_bits = bits,
                   .mask_bytes = (size_t)mask_bytes, .pinned_bytes = be->ops->pinned_bytes(be), .train = &train,
                   .eval = have_eval ? &eval : NULL};
    if ((r = memory_plan(s, &rp, &plan)) != QT_OK) goto out_all;
  }
  if (root) qt_mem_plan_print(&plan, stderr);
  {
    /* the machine check takes the planned peak: weights and arenas it adds itself */
    size_t act = 0, grad = 0, peak = qt_mem_plan_peak(&plan, NULL);
    qt_model_tape_arena_bytes(s->mt, &act, &grad);
    size_t own = s->model->bytes_dense + s->model->bytes_quant + act + grad;
    if ((r = qt_session_check_memory(s, peak > own ? peak - own : 0)) != QT_OK) goto out_all;
  }

  if (root && (r = qt_fs_mkdir_p(c->output.dir)) != QT_OK) goto out_all;
  if (root && resumed && (r = trim_metrics(c->output.dir, st.step)) != QT_OK) goto out_all;
  if (root && !resumed) {
    char p[4200];
    snprintf(p, sizeof p, "%s/metrics.jsonl", c->output.dir);
    FILE *tf = fopen(p, "w");
    if (tf) fclose(tf);
  }
  if (root) {
    char p[4200];
    snprintf(p, sizeof p, "%s/metrics.jsonl", c->output.dir);
    met.f = fopen(p, "a");
    if (!met.f) {
      r = qt_fail(QT_ERR_IO, "%s: cannot open for appending", p);
      goto out_all;
    }
  }
  qt_saver saver = {.s = s, .opt = &opt, .base_model = c->model.path, .total_steps = total_steps};

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  const char *stop_env = getenv("QLORA_TEST_STOP_AFTER_STEP"); /* test hook: behave as if signalled */
  int64_t stop_after = stop_env ? atoll(stop_env) : -1;
  /* test hook: sleep this many ms after each step, so that tests can signal
   * or kill a run of a tiny model in the middle on any machine */
  const char *delay_env = getenv("QLORA_TEST_STEP_DELAY_MS");
  long step_delay_ms = delay_env ? atol(delay_env) : 0;
  /* test hook: a NaN in the first gradient at these steps ("3" or "3-5") */
  const char *nan_env = getenv("QLORA_TEST_NAN_STEPS");
  int64_t nan_from = -1, nan_to = -1;
  if (nan_env) {
    char *end;
    nan_from = strtoll(nan_env, &end, 10);
    nan_to = *end == '-' ? strtoll(end + 1, NULL, 10) : nan_from;
  }

  /* NCCL reduces the GPUs' gradients when libnccl.so.2 is there, else MPI on
   * the host (each rank's GPU was chosen by qt_session_resolve_device) */
#ifdef QLORA_HAVE_CUDA
  if (use_cuda) {
    if ((world > 1 || nccl_one) && qt_dist_have_nccl()) {
      if ((r = qt_dist_nccl_init(lora_params, &nccl)) != QT_OK) {
        qt_error_context("training.device cuda: NCCL communicator over %d rank(s)", world);
        goto out_all;
      }
      if (root) fprintf(stderr, "qlora-train: gradients reduced with NCCL over %d rank(s)\n", world);
    } else if (nccl_one) {
      r = qt_fail(QT_ERR_UNSUPPORTED, "QLORA_TEST_NCCL: NCCL is not available to this qlora-train (built without "
                  "nccl.h, or libnccl.so.2 not found)");
      goto out_all;
    } else if (world > 1 && root) {
      QT_LOGW("NCCL is not available (built without nccl.h, or libnccl.so.2 not found): the GPUs' gradients are "
              "reduced through MPI on the host");
    }
  }
#else
  QT_ASSERT(!use_cuda); /* refused by qt_session_config */
#endif
  /* a rank that hangs while alive ends the job after QLORA_DIST_TIMEOUT_S
   * (default 1800 s) without progress (dist.h, watchdog) */
  if (world > 1) {
    const char *tv = getenv("QLORA_DIST_TIMEOUT_S");
    char *end = NULL;
    double timeout_s = tv ? strtod(tv, &end) : 1800.0;
    if (tv && (end == tv || *end != '\0' || !(timeout_s >= 0))) {
      r = qt_fail(QT_ERR_CONFIG, "QLORA_DIST_TIMEOUT_S=%s: want seconds (a number >= 0; 0 turns the watchdog off)", tv);
      goto out_all;
    }
    if ((r = qt_dist_watchdog_start(timeout_s)) != QT_OK) goto out_all;
  }
  double t_start = now_s(), t_last = t_start, last_eval = NAN;
  int64_t tokens_window = 0, start_step = st.step;
  if (st.step >= total_steps) QT_LOGI("the checkpoint is already at step %lld of %lld: nothing to train",
                                      (long long)st.step, (long long)total_steps);
  while (st.step < total_steps) {
    /* target count of the whole step first, then rewind */
    qt_loader_cursor at = qt_loader_get_cursor(&loader);
    int64_t step_targets = 0;
    for (int64_t a = 0; a < accum; a++) {
      const qt_batch *b = qt_loader_next(&loader);
      qt_model_targets_from_labels(b->labels, b->doc, b->rows, b->T, targets);
      for (int64_t i = 0; i < b->rows * b->T; i++) step_targets += targets[i] != -100;
    }
    if ((r = qt_loader_set_cursor(&loader, at)) != QT_OK) goto out_all;
    int64_t rank_targets = step_targets;
    if ((r = qt_dist_sum_i64(&step_targets, 1)) != QT_OK) goto out_all; /* the global count, before backward */
    if ((r = be->ops->zero_grad(be)) != QT_OK) goto out_all;
    double loss_sum = 0;
    int64_t step_tokens = 0, count_all = 0;
    double dloss = step_targets ? 1.0 / (double)step_targets : 0.0;
    for (int64_t a = 0; a < accum; a++) {
      const qt_batch *b = qt_loader_next(&loader);
      qt_model_targets_from_labels(b->labels, b->doc, b->rows, b->T, targets);
      qt_lora_set_step(s->lora, (uint64_t)((st.step * accum + a) * world + dist->rank), c->lora.dropout > 0);
      qt_model_batch mb = {.ids = b->ids, .targets = targets, .pos = b->pos, .doc = b->doc, .B = b->rows, .T = b->T};
      double ls = 0;
      int64_t cnt = 0;
      if ((r = be->ops->train_micro(be, &mb, dloss, &ls, &cnt)) != QT_OK) goto out_all;
      loss_sum += ls;
      count_all += cnt;
      step_tokens += b->n_tokens;
    }
    QT_ASSERTF(count_all == rank_targets, "target count %lld != %lld", (long long)count_all, (long long)rank_targets);
    if (world > 1 || nccl_one) {
      /* once per optimizer step: the LoRA gradients and the loss summed over
       * the ranks in rank order (dist.h), the same bits on every rank */
      if ((r = be->ops->grads_to_host(be, flat_grad)) != QT_OK) goto out_all;
#ifdef QLORA_HAVE_CUDA
      if (nccl)
        r = qt_dist_nccl_sum(nccl, flat_grad);
      else
#endif
        r = qt_dist_reducer_sum(&reducer, flat_grad);
      if (r != QT_OK || (r = be->ops->grads_from_host(be, flat_grad)) != QT_OK) goto out_all;
      if ((r = qt_dist_sum_f64(&loss_sum, 1)) != QT_OK || (r = qt_dist_sum_i64(&step_tokens, 1)) != QT_OK)
        goto out_all;
    }
    double loss = step_targets ? loss_sum / (double)step_targets : NAN;
    if (st.step + 1 >= nan_from && st.step + 1 <= nan_to) { /* test hook: a NaN in the first gradient */
      float *g = malloc((size_t)(lora_params ? lora_params : 1) * sizeof *g);
      if (!g) {
        r = qt_fail(QT_ERR_NOMEM, "out of memory");
        goto out_all;
      }
      r = be->ops->grads_to_host(be, g);
      g[0] = NAN;
      if (r == QT_OK) r = be->ops->grads_from_host(be, g);
      free(g);
      if (r != QT_OK) goto out_all;
    }
    double gnorm = 0;
    if ((r = be->ops->grad_norm(be, &gnorm)) != QT_OK) goto out_all;
    bool skip = false;
    if (!isfinite(loss)) gnorm = NAN; /* a step without targets or with a non-finite loss is skipped too */
    /* gnorm and loss are the same bits on every rank, so is this decision */
    if ((r = qt_optim_nonfinite_observe(&nonfinite, gnorm, &skip)) != QT_OK) {
      qt_error_context("step %lld (loss %g, gradient norm %g)", (long long)st.step + 1, loss, gnorm);
      goto out_all;
    }
    /* a skipped step advances neither the optimizer nor the schedule (transformers
     * steps the scheduler only when the optimizer ran) */
    double lr = c->training.learning_rate * qt_lr_schedule_factor(&sched, opt.step);
    if (skip) {
      QT_LOGW("step %lld: non-finite loss or gradients (loss %g, norm %g): step skipped, state untouched (%d in a row)",
              (long long)st.step + 1, loss, gnorm, nonfinite.consecutive);
    } else {
      float coef = c->training.max_grad_norm > 0 ? qt_optim_clip_coef(gnorm, c->training.max_grad_norm) : 1.0f;
      if ((r = qt_adamw_step(&opt, params, grads, (float)lr, coef, (uint64_t)c->training.seed)) != QT_OK ||
          (r = be->ops->after_update(be)) != QT_OK)
        goto out_all;
    }
    st.step++;
    qt_mem_trace("step");
    st.tokens_seen += step_tokens;
    st.cursor = qt_loader_get_cursor(&loader);
    st.nonfinite_consecutive = nonfinite.consecutive;
    st.nonfinite_total = nonfinite.skipped_total;
    tokens_window += step_tokens;
    double t = now_s();
    double tps = step_tokens / fmax(t - t_last, 1e-9);
    t_last = t;
    double epoch_f = (double)st.cursor.epoch + (epoch_batches ? 0.0 : 0.0);
    saver.epoch = epoch_f;
    {
      char line[512], ls[32], gs[32];
      json_num(ls, sizeof ls, "%.17g", loss);
      json_num(gs, sizeof gs, "%.9g", gnorm);
      snprintf(line, sizeof line,
               "{\"step\":%lld,\"loss\":%s,\"lr\":%.9g,\"grad_norm\":%s,\"tokens\":%lld,\"targets\":%lld,"
               "\"tokens_per_s\":%.1f,\"epoch\":%lld,\"skipped\":%s,\"peak_rss_mib\":%.1f}",
               (long long)st.step, ls, lr, gs, (long long)step_tokens, (long long)step_targets, tps,
               (long long)st.cursor.epoch, skip ? "true" : "false", peak_rss_mib());
      metrics_line(&met, line);
    }
    double avg_tps = (double)tokens_window / fmax(t - t_start, 1e-9);
    double eta = (double)(total_steps - st.step) * (t - t_start) / (double)(st.step - start_step);
    char etas[32];
    fmt_eta(eta, etas, sizeof etas);
    if (met.tty) {
      int width = 30, done = (int)(width * st.step / total_steps);
      char bar[64];
      for (int i = 0; i < width; i++) bar[i] = i < done ? '#' : '.';
      bar[width] = '\0';
      fprintf(stderr, "\r[%s] %lld/%lld loss %.4f lr %.3g %.0f tok/s ETA %s mem %.0f MiB ", bar, (long long)st.step,
              (long long)total_steps, loss, lr, avg_tps, etas, peak_rss_mib());
    } else if (root && (st.step % c->training.logging_steps == 0 || st.step == total_steps)) {
      fprintf(stderr, "step %lld/%lld loss %.6f lr %.4g grad_norm %.4g %.0f tok/s ETA %s mem %.0f MiB\n",
              (long long)st.step, (long long)total_steps, loss, lr, gnorm, avg_tps, etas, peak_rss_mib());
    }
    bool last = st.step == total_steps;
    if (root && have_eval && c->training.eval_steps > 0 && st.step % c->training.eval_steps == 0 && !last) {
      if ((r = run_eval(be, &eval, st.step, &met, &last_eval)) != QT_OK) goto out_all;
      qt_mem_trace("eval");
    }
    qt_dist_progress();
    if (step_delay_ms > 0) nanosleep(&(struct timespec){step_delay_ms / 1000, (step_delay_ms % 1000) * 1000000L}, NULL);
    if (stop_after >= 0 && st.step >= stop_after) qt_stop_requested = SIGTERM;
    if (world > 1) { /* a signal on any rank stops them all after this same step */
      int64_t sig = qt_stop_requested;
      if ((r = qt_dist_max_i64(&sig, 1)) != QT_OK) goto out_all;
      qt_stop_requested = (sig_atomic_t)sig;
    }
    bool periodic = c->output.save_steps > 0 && st.step % c->output.save_steps == 0;
    if (periodic || last || qt_stop_requested) {
      if (met.tty) fputc('\n', stderr);
      /* the adapters and the optimizer state on the host, where the checkpoint reads them */
      if ((r = be->ops->sync_host(be, &opt)) != QT_OK) goto out_all;
      if ((r = checkpoint_all_ranks(&saver, &st, dist)) != QT_OK) goto out_all;
      qt_mem_trace("checkpoint");
      qt_dist_progress();
    }
    t_last = now_s(); /* evaluation and checkpoint time is not training throughput */
    if (qt_stop_requested && !last) {
      if (root)
        fprintf(stderr, "qlora-train: stopped by signal %d after step %lld; checkpoint saved. Run the same command "
              "to resume.\n", (int)qt_stop_requested, (long long)st.step);
      r = qt_fail(QT_ERR_INTERRUPTED, "stopped after step %lld (checkpoint saved; run again to resume)", (long long)st.step);
      goto out_all;
    }
  }
  qt_dist_watchdog_stop(); /* the steps are over: what follows is rank 0's alone */
  if (met.tty) fputc('\n', stderr);
  if (root && have_eval && (r = run_eval(be, &eval, st.step, &met, &last_eval)) != QT_OK) goto out_all;
  if (met.f) {
    fclose(met.f);
    met.f = NULL;
  }
  if (root && (r = qt_report_write(c->output.dir, world > 1 ? "qlora-train run (data parallel)" : "qlora-train run")) != QT_OK)
    goto out_all;
  if (root)
    fprintf(stderr, "qlora-train: done: %lld steps, %lld tokens, %.1f s; %s/report.html\n", (long long)st.step,
          (long long)st.tokens_seen, now_s() - t_start, c->output.dir);
  if (root && qt_mem_peak_rss() > 0) { /* the plan beside what the kernel saw (VmHWM; /usr/bin/time -v's maximum) */
    double planned = (double)qt_mem_plan_peak(&plan, NULL) / 1048576.0, peak = (double)qt_mem_peak_rss() / 1048576.0;
    fprintf(stderr, "qlora-train: memory: planned peak %.1f MiB, measured peak %.1f MiB (%+.1f%%)\n", planned, peak,
            100.0 * (peak - planned) / planned);
  }

out_all:
  qt_dist_watchdog_stop();
  free(flat_grad);
  qt_dist_reducer_free(&reducer);
#ifdef QLORA_HAVE_CUDA
  qt_dist_nccl_free(&nccl);
#endif
  qt_backend_close(&be);
  if (met.f) fclose(met.f);
  if (opt_ok) qt_adamw_free(&opt);
  free(numels);
  free(targets);
out_loader:
  free(st.cursors);
  qt_loader_free(&loader);
out_data:
  qt_dataset_free(&train);
  if (have_eval) qt_dataset_free(&eval);
  qt_mem_plan_free(&plan);
  return r;
}

qt_status qt_cmd_train(int argc, char **argv) {
  qt_mem_heap_setup(); /* before any large buffer: the plan below counts buffers, not heap holes */
  qt_args a;
  QT_TRY(qt_args_parse(argc, argv, 0, &a));
  qt_session s;
  qt_status r = qt_session_config(&s, &a);
  /* One writer per output directory, taken before anything is loaded so a
   * second run stops at once (two writers would prune each other's
   * checkpoints and interleave metrics.jsonl). */
  int lock = -1;
  if (r == QT_OK && qt_dist_world()->rank == 0) r = qt_fs_lock_dir(s.cfg.output.dir, &lock); /* rank 0 writes */
  if (r == QT_OK) r = train_main(&s, a.config_path);
  qt_fs_unlock_dir(&lock);
  qt_session_free(&s);
  return r;
}
