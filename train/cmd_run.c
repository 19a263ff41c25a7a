/* train/cmd_run.c — `qlora-train eval` and `export` (DESIGN.md section 5;
 * generate: train/cmd_generate.c). Each uses --checkpoint DIR (a qlora-train checkpoint or a PEFT
 * adapter directory) when given, else the newest complete checkpoint under
 * output.dir, else (eval, generate) the base model alone. */
/* realpath(3) is XSI, outside the POSIX base the build selects. */
#define _DEFAULT_SOURCE 1
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fs.h"
#include "common/half.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "train/backend.h"
#include "train/checkpoint.h"
#include "train/cli.h"
#include "train/export_gguf.h"
#include "train/session.h"

/* ---- eval ---------------------------------------------------------------------- */

qt_status qt_cmd_eval(int argc, char **argv) {
  qt_args a;
  QT_TRY(qt_args_parse(argc, argv, QT_ARG_CHECKPOINT | QT_ARG_DATA, &a));
  qt_session s;
  qt_dataset ds = {0};
  bool have_ds = false;
  qt_status r = qt_session_config(&s, &a);
  const char *path = a.data ? a.data : s.cfg.data.eval;
  if (r == QT_OK && !path[0])
    r = qt_fail(QT_ERR_CONFIG, "%s: no evaluation data: set data.eval or pass --data FILE", a.config_path);
  if (r == QT_OK) r = qt_session_load_model(&s);
  if (r == QT_OK) r = qt_session_pick_adapter(&s, a.checkpoint, true);
  if (r == QT_OK) r = qt_session_resolve_device(&s);
  /* training.device picks the backend (backend.h): the CPU tape for batches
   * of micro_batch_size x seq_len, or the GPU */
  if (r == QT_OK) r = qt_session_tape(&s, s.cfg.training.micro_batch_size, s.cfg.data.seq_len, false, true);
  if (r == QT_OK) r = qt_session_dataset(&s, path, &ds, s.cfg.data.skip_bad_records);
  have_ds = r == QT_OK;
  qt_backend *be = NULL;
  qt_backend_opts bo = {.kind = qt_backend_kind_of(&s.cfg), .max_B = s.cfg.training.micro_batch_size,
                        .max_T = s.cfg.data.seq_len, .train = false, .print_plan = true};
  if (r == QT_OK) r = qt_backend_open(&s, &bo, &be);
  qt_eval_result er;
  if (r == QT_OK) r = qt_session_eval(be, &ds, &er);
  qt_backend_close(&be);
  if (r == QT_OK) {
    double loss = er.tokens ? er.loss_sum / (double)er.tokens : NAN;
    if (!isfinite(loss))
      r = qt_fail(QT_ERR_NUMERIC, "%s: the eval loss is not finite (%lld target tokens)", path, (long long)er.tokens);
    else
      printf("{\"loss\":%.9g,\"ppl\":%.9g,\"tokens\":%lld,\"examples\":%lld}\n", loss, exp(loss),
             (long long)er.tokens, (long long)er.examples);
  }
  if (have_ds) qt_dataset_free(&ds);
  qt_session_free(&s);
  return r;
}

/* ---- export ---------------------------------------------------------------------- */

static const char *dtype_hf_name(qt_cfg_dtype d) {
  return d == QT_CDT_BF16 ? "bfloat16" : d == QT_CDT_FP16 ? "float16" : "float32";
}

static qt_dtype dtype_st(qt_cfg_dtype d) { return d == QT_CDT_BF16 ? QT_BF16 : d == QT_CDT_FP16 ? QT_F16 : QT_F32; }

/* One output tensor of the merged model. */
typedef struct {
  char name[128];
  int64_t rows, cols;  /* cols = 0 for a vector */
  const float *src;    /* dense fp32 held by the model (norms, embeddings, biases) */
  int layer;           /* >= 0 with proj: a base linear to merge */
  qt_proj proj;
  int shard;
} merged_tensor;

static size_t mt_bytes(const merged_tensor *t, qt_cfg_dtype d) {
  size_t el = d == QT_CDT_FP32 ? 4 : 2;
  return (size_t)(t->rows * (t->cols ? t->cols : 1)) * el;
}

/* The source checkpoint's dense weight `name` as fp32, if it has one (not
 * for bitsandbytes 4-bit sources). */
static qt_status source_weight(const qt_st_model *src, const char *name, int64_t n, float *w, bool *found) {
  const qt_st_entry *e = qt_st_model_find(src, name);
  *found = false;
  if (!e || (e->dtype != QT_F32 && e->dtype != QT_F16 && e->dtype != QT_BF16) || qt_st_entry_numel(e) != n) return QT_OK;
  QT_TRY(qt_st_entry_to_f32(e, w));
  *found = true;
  return QT_OK;
}

static qt_status copy_if_exists(const char *from_dir, const char *to_dir, const char *name) {
  char a[4200], b[4200];
  snprintf(a, sizeof a, "%s/%s", from_dir, name);
  snprintf(b, sizeof b, "%s/%s", to_dir, name);
  struct stat st;
  if (stat(a, &st) != 0) return QT_OK;
  uint8_t *buf;
  size_t len;
  QT_TRY(qt_fs_read_file(a, (size_t)1 << 32, &buf, &len));
  qt_status r = qt_fs_write_atomic(b, buf, len);
  free(buf);
  return r;
}

/* The end of the JSON value that starts at j (after whitespace) in t[0, n):
 * strings, nesting and scalars; the text is valid JSON (cJSON parsed it). */
static size_t json_value_end(const char *t, size_t n, size_t j) {
  int depth = 0;
  for (; j < n; j++) {
    char ch = t[j];
    if (ch == '"') {
      for (j++; j < n && t[j] != '"'; j++)
        if (t[j] == '\\') j++;
      if (depth == 0) return j + 1;
    } else if (ch == '{' || ch == '[') {
      depth++;
    } else if (ch == '}' || ch == ']') {
      if (--depth == 0) return j + 1;
      if (depth < 0) return j;
    } else if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')) {
      return j;
    }
  }
  return n;
}

/* config.json of the merged model: the source's text with its top-level
 * quantization_config removed and dtype (or torch_dtype) set to the export
 * dtype; every other byte as written (re-printing through cJSON would turn
 * 4.0 into 4, which transformers' strict config classes refuse for float
 * fields such as final_logit_softcapping). */
static qt_status write_config(const qt_session *s, const char *out, qt_cfg_dtype dt) {
  char p[4200];
  snprintf(p, sizeof p, "%s/config.json", s->cfg.model.path);
  uint8_t *buf;
  size_t len;
  QT_TRY(qt_fs_read_file(p, 1 << 24, &buf, &len));
  cJSON *o = cJSON_ParseWithLength((const char *)buf, len);
  if (!o || !cJSON_IsObject(o)) {
    cJSON_Delete(o);
    free(buf);
    return qt_fail(QT_ERR_FORMAT, "%s: not a JSON object", p);
  }
  const char *key = cJSON_GetObjectItemCaseSensitive(o, "dtype") ? "dtype" : "torch_dtype";
  bool has_key = cJSON_GetObjectItemCaseSensitive(o, key) != NULL;
  cJSON_Delete(o);
  const char *t = (const char *)buf;
  char *res = malloc(len + 64);
  if (!res) {
    free(buf);
    return qt_fail(QT_ERR_NOMEM, "out of memory");
  }
  size_t n = 0, i = 0, last_end = 0, lead = 0;
  bool first = true;
  while (i < len && t[i] != '{') i++;
  memcpy(res, t, ++i); /* up to and including the opening brace */
  n = i;
  last_end = i;
  lead = i; /* the whitespace after the brace goes before the first kept member */
  for (;;) {
    size_t ks = i;
    while (ks < len && t[ks] != '"' && t[ks] != '}') ks++;
    if (ks >= len || t[ks] == '}') break;
    size_t ke = json_value_end(t, len, ks);   /* the key string */
    size_t vs = ke;
    while (vs < len && t[vs] != ':') vs++;
    vs++;
    while (vs < len && (t[vs] == ' ' || t[vs] == '\n' || t[vs] == '\r' || t[vs] == '\t')) vs++;
    size_t ve = json_value_end(t, len, vs);
    bool is_q = ke - ks == 21 && memcmp(t + ks, "\"quantization_config\"", 21) == 0;
    bool is_dt = ke - ks == strlen(key) + 2 && memcmp(t + ks + 1, key, strlen(key)) == 0;
    if (!is_q) {
      /* the separator and whitespace before this member, as written (the
       * first kept member takes the text after the brace) */
      size_t from = ks;
      if (first) {
        size_t w = lead;
        while (w < len && (t[w] == ' ' || t[w] == '\n' || t[w] == '\r' || t[w] == '\t')) w++;
        memcpy(res + n, t + lead, w - lead);
        n += w - lead;
      } else {
        size_t w = ks;
        while (w > last_end && t[w - 1] != ',') w--;
        res[n++] = ',';
        from = w;
      }
      memcpy(res + n, t + from, ks - from);
      n += ks - from;
      if (is_dt) {
        memcpy(res + n, t + ks, vs - ks);
        n += vs - ks;
        n += (size_t)sprintf(res + n, "\"%s\"", dtype_hf_name(dt));
      } else {
        memcpy(res + n, t + ks, ve - ks);
        n += ve - ks;
      }
      first = false;
    }
    last_end = ve;
    i = ve;
    while (i < len && t[i] != ',' && t[i] != '}') i++;
    if (i >= len || t[i] == '}') break;
    i++;
  }
  if (!has_key) n += (size_t)sprintf(res + n, "%s\n  \"%s\": \"%s\"", first ? "" : ",", key, dtype_hf_name(dt));
  /* whatever followed the last member (newline, closing brace) */
  size_t close = last_end;
  while (close < len && t[close] != '}') close++;
  size_t ws = last_end;
  while (ws < close && t[ws] != '\n' && t[ws] != ' ' && t[ws] != '\r' && t[ws] != '\t') ws++;
  memcpy(res + n, t + ws, len - ws);
  n += len - ws;
  free(buf);
  snprintf(p, sizeof p, "%s/config.json", out);
  /* the result must still be JSON with what was asked */
  cJSON *chk = cJSON_ParseWithLength(res, n);
  bool good = chk && !cJSON_GetObjectItemCaseSensitive(chk, "quantization_config") &&
              cJSON_IsString(cJSON_GetObjectItemCaseSensitive(chk, key));
  cJSON_Delete(chk);
  qt_status r = good ? qt_fs_write_atomic(p, res, n)
                     : qt_fail(QT_ERR_FORMAT, "%s/config.json: cannot rewrite it for the merged "
                                              "model", s->cfg.model.path);
  free(res);
  return r;
}

static qt_status export_merged(qt_session *s, const char *out, qt_cfg_dtype dt, qt_cfg_merge_base base) {
  qt_model *m = s->model;
  /* the tensor list, in the transformers state_dict order */
  size_t cap = 4 + (size_t)m->L * 24, n = 0;
  merged_tensor *ts = calloc(cap, sizeof *ts);
  if (!ts) return qt_fail(QT_ERR_NOMEM, "out of memory");
#define ADD(nm, r_, c_, src_, layer_, proj_)                                      \
  do {                                                                            \
    snprintf(ts[n].name, sizeof ts[n].name, "%s", nm);                            \
    ts[n].rows = (r_), ts[n].cols = (c_), ts[n].src = (src_), ts[n].layer = (layer_), ts[n].proj = (proj_); \
    n++;                                                                          \
  } while (0)
  const char *pre = m->cfg.weight_prefix[0] ? m->cfg.weight_prefix : "model.";
  char nm[128];
  snprintf(nm, sizeof nm, "%sembed_tokens.weight", pre);
  ADD(nm, m->V, m->C, m->embed, -1, QT_PROJ_Q);
  /* per layer: its linears (and biases), then its norms (as stored: gemma's
   * weight, not the 1 + weight it multiplies by); the final norm last */
  int64_t per = (m->n_norms - 1) / m->L; /* model.c: the layers' norms in order, then model.norm */
  for (int64_t l = 0; l < m->L; l++) {
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      const qt_model_linear *lin = &m->layers[l].proj[p];
      if (lin->out == 0) continue;
      snprintf(nm, sizeof nm, "%s.weight", lin->name);
      ADD(nm, lin->out, lin->in, NULL, (int)l, (qt_proj)p);
      if (lin->bias) {
        snprintf(nm, sizeof nm, "%s.bias", lin->name);
        ADD(nm, lin->out, 0, lin->bias, -1, QT_PROJ_Q);
      }
    }
    for (int64_t k = l * per; k < (l + 1) * per; k++)
      ADD(m->norms[k].name, m->norms[k].n, 0, m->norms[k].stored, -1, QT_PROJ_Q);
  }
  const qt_model_norm *fn = &m->norms[m->n_norms - 1];
  ADD(fn->name, fn->n, 0, fn->stored, -1, QT_PROJ_Q);
  if (m->lm_head != m->embed) ADD("lm_head.weight", m->V, m->C, m->lm_head, -1, QT_PROJ_Q);
#undef ADD
  /* shards of at most 2 GiB (transformers' default max_shard_size is 5 GB;
   * smaller shards keep peak memory of this writer low) */
  const size_t shard_max = (size_t)2 << 30;
  int n_shards = 1;
  size_t cur = 0, total = 0;
  for (size_t i = 0; i < n; i++) {
    size_t b = mt_bytes(&ts[i], dt);
    if (cur > 0 && cur + b > shard_max) {
      n_shards++;
      cur = 0;
    }
    ts[i].shard = n_shards - 1;
    cur += b;
    total += b;
  }
  qt_status r = qt_fs_mkdir_p(out);
  qt_st_model src;
  bool src_open = false;
  if (r == QT_OK) {
    r = qt_st_model_open(s->cfg.model.path, &src);
    src_open = r == QT_OK;
  }
  const char *base_name = base == QT_MERGE_ORIGINAL ? "original" : "nf4_roundtrip";
  bool original_missing = false;
  cJSON *wm = cJSON_CreateObject();
  for (int sh = 0; r == QT_OK && sh < n_shards; sh++) {
    char fname[64];
    snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", sh + 1, n_shards);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ts[i].shard == sh;
    qt_st_write_tensor *wt = calloc(k, sizeof *wt);
    void **bufs = calloc(k, sizeof *bufs);
    if (!wt || !bufs) r = qt_fail(QT_ERR_NOMEM, "out of memory");
    size_t j = 0;
    for (size_t i = 0; r == QT_OK && i < n; i++) {
      if (ts[i].shard != sh) continue;
      int64_t cnt = ts[i].rows * (ts[i].cols ? ts[i].cols : 1);
      float *w = malloc((size_t)cnt * sizeof *w);
      if (!w) {
        r = qt_fail(QT_ERR_NOMEM, "out of memory for %s", ts[i].name);
        break;
      }
      if (ts[i].layer < 0) {
        memcpy(w, ts[i].src, (size_t)cnt * sizeof *w);
      } else {
        const qt_model_linear *lin = &m->layers[ts[i].layer].proj[ts[i].proj];
        bool found = false;
        if (base == QT_MERGE_ORIGINAL) r = source_weight(&src, ts[i].name, cnt, w, &found);
        if (r == QT_OK && !found) {
          if (base == QT_MERGE_ORIGINAL) original_missing = true;
          r = qt_model_linear_weight(m, lin, w);
        }
        if (r == QT_OK && s->lora) qt_lora_merge_weight(s->lora, ts[i].layer, ts[i].proj, w);
      }
      if (r != QT_OK) {
        free(w);
        break;
      }
      void *outb = w;
      if (dt != QT_CDT_FP32) {
        uint16_t *h = malloc((size_t)cnt * sizeof *h);
        if (!h) {
          free(w);
          r = qt_fail(QT_ERR_NOMEM, "out of memory");
          break;
        }
        if (dt == QT_CDT_BF16)
          qt_bf16_from_f32_n(h, w, (size_t)cnt);
        else
          qt_f16_from_f32_n(h, w, (size_t)cnt);
        free(w);
        outb = h;
      }
      bufs[j] = outb;
      wt[j].name = ts[i].name;
      wt[j].dtype = dtype_st(dt);
      wt[j].ndim = ts[i].cols ? 2 : 1;
      wt[j].shape[0] = ts[i].rows;
      wt[j].shape[1] = ts[i].cols;
      wt[j].data = outb;
      cJSON_AddStringToObject(wm, ts[i].name, fname);
      j++;
    }
    if (r == QT_OK) {
      char p[4200];
      snprintf(p, sizeof p, "%s/%s", out, fname);
      const char *mk[] = {"format", "qlora_train_merge_base", "qlora_train_adapter"};
      const char *mv[] = {"pt", original_missing ? "dequantized_4bit_source" : base_name,
                          s->adapter_dir[0] ? s->adapter_dir : "none"};
      r = qt_st_write(p, wt, k, mk, mv, 3);
    }
    for (size_t q = 0; bufs && q < k; q++) free(bufs[q]);
    free(bufs);
    free(wt);
  }
  if (src_open) qt_st_model_close(&src);
  free(ts);
  if (r == QT_OK) {
    cJSON *idx = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(idx, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON_AddStringToObject(meta, "qlora_train_merge_base", original_missing ? "dequantized_4bit_source" : base_name);
    cJSON_AddItemToObject(idx, "weight_map", wm);
    wm = NULL;
    char *text = cJSON_Print(idx);
    cJSON_Delete(idx);
    char p[4200];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
    r = text ? qt_fs_write_atomic(p, text, strlen(text)) : qt_fail(QT_ERR_NOMEM, "out of memory");
    free(text);
  }
  cJSON_Delete(wm);
  if (r == QT_OK) r = write_config(s, out, dt);
  static const char *const tok_files[] = {"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                          "special_tokens_map.json", "generation_config.json"};
  for (size_t i = 0; r == QT_OK && i < sizeof tok_files / sizeof tok_files[0]; i++)
    r = copy_if_exists(s->cfg.model.path, out, tok_files[i]);
  if (r == QT_OK && original_missing)
    QT_LOGW("the source checkpoint holds 4-bit weights: merged onto their dequantized values (recorded in the metadata)");
  return r;
}

/* Whether PATH is DIR itself or lies below it, by real paths: PATH's nearest
 * existing ancestor is resolved (symlinks, "..") and the rest appended. False
 * when DIR does not exist (nothing to protect). */
static bool path_inside(const char *dir, const char *path) {
  char rd[PATH_MAX], cur[PATH_MAX], rp[PATH_MAX], tail[PATH_MAX] = "";
  if (!realpath(dir, rd)) return false;
  snprintf(cur, sizeof cur, "%s", path);
  while (!realpath(cur, rp)) {
    if (strcmp(cur, ".") == 0 || strcmp(cur, "/") == 0) return false; /* cwd gone */
    char *slash = strrchr(cur, '/');
    char t[PATH_MAX];
    snprintf(t, sizeof t, "/%s%s", slash ? slash + 1 : cur, tail);
    snprintf(tail, sizeof tail, "%s", t);
    if (!slash) {
      snprintf(cur, sizeof cur, ".");
    } else if (slash == cur) {
      snprintf(cur, sizeof cur, "/");
    } else {
      *slash = '\0';
    }
  }
  char full[2 * PATH_MAX + 2];
  snprintf(full, sizeof full, "%s%s", strcmp(rp, "/") == 0 ? "" : rp, tail);
  size_t n = strlen(rd);
  if (strcmp(rd, "/") == 0) return true;
  return strncmp(full, rd, n) == 0 && (full[n] == '\0' || full[n] == '/');
}

/* --format gguf|gguf-lora is taken out of argv here (qt_args_parse knows
 * peft|merged); *format is the value of the last --format, or NULL. */
static qt_status export_format_arg(int argc, char **argv, char **rest, int *n_rest, const char **format) {
  *format = NULL;
  *n_rest = 0;
  for (int i = 0; i < argc; i++) {
    const char *v = NULL;
    int skip = 0;
    if (strcmp(argv[i], "--format") == 0) {
      if (i + 1 == argc) return qt_fail(QT_ERR_USAGE, "--format needs a value");
      v = argv[i + 1];
      skip = 1;
    } else if (strncmp(argv[i], "--format=", 9) == 0) {
      v = argv[i] + 9;
    }
    if (!v) {
      rest[(*n_rest)++] = argv[i];
      continue;
    }
    if (strcmp(v, "peft") != 0 && strcmp(v, "merged") != 0 && strcmp(v, "gguf") != 0 && strcmp(v, "gguf-lora") != 0)
      return qt_fail(QT_ERR_USAGE, "--format must be peft, merged, gguf or gguf-lora, not '%s'", v);
    *format = v;
    i += skip;
  }
  return QT_OK;
}

qt_status qt_cmd_export(int argc, char **argv) {
  qt_args a;
  const char *format;
  int n_rest;
  char **rest = calloc((size_t)argc + 1, sizeof *rest);
  if (!rest) return qt_fail(QT_ERR_NOMEM, "out of memory");
  qt_status r = export_format_arg(argc, argv, rest, &n_rest, &format);
  if (r == QT_OK) r = qt_args_parse(n_rest, rest, QT_ARG_CHECKPOINT | QT_ARG_OUT, &a);
  free(rest);
  QT_TRY(r);
  a.format = format;
  bool gguf = format && strcmp(format, "gguf") == 0, gguf_lora = format && strcmp(format, "gguf-lora") == 0;
  qt_session s;
  r = qt_session_config(&s, &a);
  bool merged = false;
  char out[4200];
  if (r == QT_OK) {
    merged = a.format ? strcmp(a.format, "merged") == 0 : s.cfg.export_.format == QT_EXPORT_MERGED;
    if (a.out)
      snprintf(out, sizeof out, "%s", a.out);
    else if (gguf || gguf_lora)
      snprintf(out, sizeof out, "%s/export-%s.gguf", s.cfg.output.dir, gguf ? "model" : "lora");
    else
      snprintf(out, sizeof out, "%s/export-%s", s.cfg.output.dir, merged ? "merged" : "peft");
  }
  /* Writing inside an output directory: one writer at a time there, as for
   * training (a run in progress prunes and replaces what is under it). */
  int lock = -1;
  if (r == QT_OK && path_inside(s.cfg.output.dir, out)) r = qt_fs_lock_dir(s.cfg.output.dir, &lock);
  /* gguf without an adapter (no --checkpoint, none under output.dir) converts
   * the base model alone, straight from its dense checkpoint: no model load */
  bool base_only = false;
  qt_hf_config hc;
  memset(&hc, 0, sizeof hc);
  if (r == QT_OK && gguf && !a.checkpoint) {
    char latest[4200];
    bool found = false;
    r = qt_ckpt_find_latest(s.cfg.output.dir, latest, sizeof latest, &found);
    if (r == QT_OK) r = qt_hf_config_load(s.cfg.model.path, &hc);
    base_only = r == QT_OK && !found && !hc.quant.present;
    if (base_only) QT_LOGI("no checkpoint under '%s': converting the base model alone", s.cfg.output.dir);
  }
  if (r == QT_OK && base_only) {
    r = qt_export_gguf(&s, &hc, out, false);
  } else if (r == QT_OK) {
    /* GGUF keeps an F32 adapter's values as they are (not rounded to the
     * bf16 training storage), as convert_lora_to_gguf.py does */
    if (gguf || gguf_lora) s.cfg.lora.master_weights = QT_MASTER_FP32;
    /* a merge onto the original weights needs them dense: load without quantizing */
    r = qt_session_load_model(&s);
    if (r == QT_OK) r = qt_session_pick_adapter(&s, a.checkpoint, gguf);
    if (r == QT_OK && (gguf || gguf_lora)) {
      r = qt_export_gguf(&s, &s.model->cfg, out, gguf_lora);
    } else if (r == QT_OK && !merged) {
      qt_dtype dt = dtype_st(s.cfg.export_.dtype);
      r = qt_lora_save_peft(s.lora, out, s.cfg.model.path, dt);
    } else if (r == QT_OK) {
      r = export_merged(&s, out, s.cfg.export_.dtype, s.cfg.export_.merge_base);
    }
  }
  if (r == QT_OK)
    fprintf(stderr, "qlora-train: wrote %s (%s)\n", out,
            gguf ? "GGUF model" : gguf_lora ? "GGUF LoRA adapter" : merged ? "merged Hugging Face model" : "PEFT adapter");
  qt_hf_config_free(&hc);
  qt_fs_unlock_dir(&lock);
  qt_session_free(&s);
  return r;
}
