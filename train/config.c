/* train/config.c — YAML config loading and validation (see config.h).
 *
 * Table-driven: every key of DESIGN.md section 6 has one row in qt_cfg_keys
 * (type, place in the struct, range, allowed values); the YAML walker, the
 * `--set` overrides, the did-you-mean and the YAML writer all read that table. */
#include "train/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include "common/log.h"

typedef enum { K_STR, K_PATH_OPT, K_INT, K_FLOAT, K_BOOL, K_ENUM, K_TARGETS } qt_cfg_kind;

typedef struct {
  const char *section;
  const char *key;
  qt_cfg_kind kind;
  size_t offset;             /* into qt_config */
  double min, max;           /* K_INT / K_FLOAT inclusive bounds */
  bool min_open, max_open;   /* exclusive bound */
  const char *const *names;  /* K_ENUM: value names in enum order, NULL-terminated */
  bool required;
} qt_cfg_key;

static const char *const quant_names[] = {"nf4", "fp4", "none", NULL};
static const char *const dtype_names[] = {"bf16", "fp16", "fp32", NULL};
static const char *const master_names[] = {"none", "fp32", NULL};
static const char *const format_names[] = {"text", "completion", "alpaca", "chat", NULL};
static const char *const template_names[] = {"auto", "chatml", "llama3", "gemma", "phi3", NULL};
static const char *const device_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const sched_names[] = {"constant", "linear", "cosine", NULL};
static const char *const optim_names[] = {"paged_adamw_8bit", "adamw_8bit", "paged_adamw_32bit",
                                          "adamw_32bit", NULL};
static const char *const export_names[] = {"peft", "merged", NULL};
static const char *const merge_names[] = {"original", "nf4_roundtrip", NULL};
static const char *const gguf_type_names[] = {"auto", "f32", "f16", "bf16", "q8_0", "q4_k_m", NULL};

#define OFF(field) offsetof(qt_config, field)
#define BIG 9.0e15 /* integers stay exact in a double up to 2^53 */

static const qt_cfg_key qt_cfg_keys[] = {
    {"model", "path", K_STR, OFF(model.path), 0, 0, 0, 0, NULL, true},
    {"model", "quant", K_ENUM, OFF(model.quant), 0, 0, 0, 0, quant_names, false},
    {"model", "double_quant", K_BOOL, OFF(model.double_quant), 0, 0, 0, 0, NULL, false},
    {"model", "blocksize", K_INT, OFF(model.blocksize), 32, 4096, 0, 0, NULL, false},
    {"model", "compute_dtype", K_ENUM, OFF(model.compute_dtype), 0, 0, 0, 0, dtype_names, false},
    {"lora", "r", K_INT, OFF(lora.r), 1, 4096, 0, 0, NULL, false},
    {"lora", "alpha", K_FLOAT, OFF(lora.alpha), 0, 1e6, 1, 0, NULL, false},
    {"lora", "dropout", K_FLOAT, OFF(lora.dropout), 0, 1, 0, 1, NULL, false},
    {"lora", "target_modules", K_TARGETS, OFF(lora.target_modules), 0, 0, 0, 0, NULL, false},
    {"lora", "use_rslora", K_BOOL, OFF(lora.use_rslora), 0, 0, 0, 0, NULL, false},
    {"lora", "master_weights", K_ENUM, OFF(lora.master_weights), 0, 0, 0, 0, master_names, false},
    {"lora", "init_adapter", K_PATH_OPT, OFF(lora.init_adapter), 0, 0, 0, 0, NULL, false},
    {"data", "train", K_STR, OFF(data.train), 0, 0, 0, 0, NULL, true},
    {"data", "eval", K_PATH_OPT, OFF(data.eval), 0, 0, 0, 0, NULL, false},
    {"data", "format", K_ENUM, OFF(data.format), 0, 0, 0, 0, format_names, false},
    {"data", "seq_len", K_INT, OFF(data.seq_len), 2, 1 << 20, 0, 0, NULL, false},
    {"data", "packing", K_BOOL, OFF(data.packing), 0, 0, 0, 0, NULL, false},
    {"data", "train_on_prompt", K_BOOL, OFF(data.train_on_prompt), 0, 0, 0, 0, NULL, false},
    {"data", "chat_template", K_ENUM, OFF(data.chat_template), 0, 0, 0, 0, template_names, false},
    {"data", "skip_bad_records", K_BOOL, OFF(data.skip_bad_records), 0, 0, 0, 0, NULL, false},
    {"data", "shuffle", K_BOOL, OFF(data.shuffle), 0, 0, 0, 0, NULL, false},
    {"training", "device", K_ENUM, OFF(training.device), 0, 0, 0, 0, device_names, false},
    {"training", "seed", K_INT, OFF(training.seed), 0, BIG, 0, 0, NULL, false},
    {"training", "micro_batch_size", K_INT, OFF(training.micro_batch_size), 1, 65536, 0, 0, NULL, false},
    {"training", "gradient_accumulation_steps", K_INT, OFF(training.gradient_accumulation_steps), 1, 1 << 20, 0, 0, NULL, false},
    {"training", "num_epochs", K_FLOAT, OFF(training.num_epochs), 0, 1e6, 1, 0, NULL, false},
    {"training", "max_steps", K_INT, OFF(training.max_steps), 0, BIG, 0, 0, NULL, false},
    {"training", "learning_rate", K_FLOAT, OFF(training.learning_rate), 0, 10, 1, 0, NULL, false},
    {"training", "lr_scheduler", K_ENUM, OFF(training.lr_scheduler), 0, 0, 0, 0, sched_names, false},
    {"training", "min_lr_ratio", K_FLOAT, OFF(training.min_lr_ratio), 0, 1, 0, 0, NULL, false},
    {"training", "warmup_steps", K_INT, OFF(training.warmup_steps), 0, BIG, 0, 0, NULL, false},
    {"training", "weight_decay", K_FLOAT, OFF(training.weight_decay), 0, 10, 0, 0, NULL, false},
    {"training", "adam_beta1", K_FLOAT, OFF(training.adam_beta1), 0, 1, 0, 1, NULL, false},
    {"training", "adam_beta2", K_FLOAT, OFF(training.adam_beta2), 0, 1, 0, 1, NULL, false},
    {"training", "adam_epsilon", K_FLOAT, OFF(training.adam_epsilon), 0, 1, 0, 0, NULL, false},
    {"training", "max_grad_norm", K_FLOAT, OFF(training.max_grad_norm), 0, 1e9, 0, 0, NULL, false},
    {"training", "optimizer", K_ENUM, OFF(training.optimizer), 0, 0, 0, 0, optim_names, false},
    {"training", "gradient_checkpointing", K_BOOL, OFF(training.gradient_checkpointing), 0, 0, 0, 0, NULL, false},
    {"training", "activation_offloading", K_BOOL, OFF(training.activation_offloading), 0, 0, 0, 0, NULL, false},
    {"training", "eval_steps", K_INT, OFF(training.eval_steps), 0, BIG, 0, 0, NULL, false},
    {"training", "logging_steps", K_INT, OFF(training.logging_steps), 1, BIG, 0, 0, NULL, false},
    {"training", "max_nonfinite_steps", K_INT, OFF(training.max_nonfinite_steps), 1, 1e6, 0, 0, NULL, false},
    {"training", "threads", K_INT, OFF(training.threads), 0, 4096, 0, 0, NULL, false},
    {"training", "flush_subnormals", K_BOOL, OFF(training.flush_subnormals), 0, 0, 0, 0, NULL, false},
    {"output", "dir", K_STR, OFF(output.dir), 0, 0, 0, 0, NULL, false},
    {"output", "save_steps", K_INT, OFF(output.save_steps), 0, BIG, 0, 0, NULL, false},
    {"output", "save_total_limit", K_INT, OFF(output.save_total_limit), 0, 1e6, 0, 0, NULL, false},
    {"output", "resume", K_STR, OFF(output.resume), 0, 0, 0, 0, NULL, false},
    {"output", "allow_resume_mismatch", K_BOOL, OFF(output.allow_resume_mismatch), 0, 0, 0, 0, NULL, false},
    {"export", "format", K_ENUM, OFF(export_.format), 0, 0, 0, 0, export_names, false},
    {"export", "merge_base", K_ENUM, OFF(export_.merge_base), 0, 0, 0, 0, merge_names, false},
    {"export", "dtype", K_ENUM, OFF(export_.dtype), 0, 0, 0, 0, dtype_names, false},
    {"export", "gguf_type", K_ENUM, OFF(export_.gguf_type), 0, 0, 0, 0, gguf_type_names, false},
};
enum { N_KEYS = sizeof qt_cfg_keys / sizeof qt_cfg_keys[0] };
static const char *const qt_cfg_sections[] = {"model", "lora", "data", "training", "output", "export", NULL};

/* LoRA targets: PEFT module names; the short forms are accepted on input. */
static const char *const target_long[] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                          "gate_proj", "up_proj", "down_proj",
                                          "qkv_proj", "gate_up_proj", NULL};
static const char *const target_short[] = {"q", "k", "v", "o", "gate", "up", "down",
                                           "qkv", "gate_up", NULL};

const char *qt_config_target_name(unsigned bit) {
  for (int i = 0; target_long[i]; i++)
    if (bit == (1u << i)) return target_long[i];
  return "?";
}

void qt_config_defaults(qt_config *c) {
  memset(c, 0, sizeof *c);
  c->model.quant = QT_CFG_QUANT_NF4;
  c->model.double_quant = true;
  c->model.blocksize = 64;
  c->model.compute_dtype = QT_CDT_BF16;
  c->lora.r = 16;
  c->lora.alpha = 32;
  c->lora.dropout = 0.05;
  c->lora.target_modules = QT_TGT_ALL;
  c->lora.use_rslora = false;
  c->lora.master_weights = QT_MASTER_NONE;
  c->data.format = QT_FMT_TEXT;
  c->data.seq_len = 512;
  c->data.packing = false;
  c->data.train_on_prompt = false;
  c->data.chat_template = QT_TPL_AUTO;
  c->data.shuffle = true;
  c->training.device = QT_DEVICE_AUTO;
  c->training.seed = 42;
  c->training.micro_batch_size = 1;
  c->training.gradient_accumulation_steps = 1;
  c->training.num_epochs = 1;
  c->training.max_steps = 0;
  c->training.learning_rate = 2e-4;
  c->training.lr_scheduler = QT_SCHED_COSINE;
  c->training.min_lr_ratio = 0.0;
  c->training.warmup_steps = 0;
  c->training.weight_decay = 0.0;
  c->training.adam_beta1 = 0.9;
  c->training.adam_beta2 = 0.999;
  c->training.adam_epsilon = 1e-8;
  c->training.max_grad_norm = 1.0;
  c->training.optimizer = QT_OPT_PAGED_ADAMW_8BIT;
  c->training.gradient_checkpointing = true;
  c->training.activation_offloading = false;
  c->training.eval_steps = 0;
  c->training.logging_steps = 1;
  c->training.max_nonfinite_steps = 3;
  c->training.threads = 0;
  c->training.flush_subnormals = true;
  snprintf(c->output.dir, sizeof c->output.dir, "out");
  c->output.save_steps = 0;
  c->output.save_total_limit = 3;
  snprintf(c->output.resume, sizeof c->output.resume, "auto");
  c->export_.format = QT_EXPORT_PEFT;
  c->export_.merge_base = QT_MERGE_ORIGINAL;
  c->export_.dtype = QT_CDT_BF16;
  c->export_.gguf_type = QT_GGUF_T_AUTO;
}

/* ---- error collection ------------------------------------------------------ */

typedef struct {
  char *buf;
  size_t len, cap;
  int count;
} qt_cfg_errors;

__attribute__((format(printf, 2, 3))) static void err_add(qt_cfg_errors *e, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  e->count++;
  if (e->count > 50) return; /* the first 50 are enough to act on */
  size_t need = strlen(line) + 2;
  if (e->len + need + 1 > e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 1024;
    while (cap < e->len + need + 1) cap *= 2;
    char *nb = realloc(e->buf, cap);
    if (!nb) return;
    e->buf = nb;
    e->cap = cap;
  }
  memcpy(e->buf + e->len, line, need - 2);
  e->len += need - 2;
  e->buf[e->len++] = '\n';
  e->buf[e->len] = '\0';
}

/* ---- did you mean ---------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return 99;
  size_t row[65];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
      size_t best = diag + cost;
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/* Closest candidate within a typo's distance, or NULL. */
static const char *closest(const char *word, const char *const *cands, size_t n) {
  const char *best = NULL;
  size_t bestd = 99;
  for (size_t i = 0; i < n && cands[i]; i++) {
    size_t d = edit_distance(word, cands[i]);
    if (d < bestd) {
      bestd = d;
      best = cands[i];
    }
  }
  size_t limit = strlen(word) / 3 + 1;
  if (limit < 2) limit = 2;
  return bestd <= limit ? best : NULL;
}

/* ---- values ---------------------------------------------------------------- */

typedef struct {
  const char *where;           /* "file:line:col" or "--set a.b" */
  const char *text;            /* scalar text (NULL for a non-scalar) */
  size_t len;
  bool quoted;                 /* quoted or block scalar: a string, never a number */
  bool is_null;
  const char *node_kind;       /* "mapping" / "sequence" for non-scalars */
  yaml_document_t *doc;        /* for sequences */
  yaml_node_t *node;
} qt_cfg_value;

static bool scalar_is_null(const char *s, size_t len, bool quoted) {
  if (quoted) return false;
  return len == 0 || (len == 1 && s[0] == '~') || (len == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

static void value_from_node(yaml_document_t *doc, yaml_node_t *n, const char *where, qt_cfg_value *v) {
  memset(v, 0, sizeof *v);
  v->where = where;
  v->doc = doc;
  v->node = n;
  if (n->type == YAML_SCALAR_NODE) {
    v->text = (const char *)n->data.scalar.value;
    v->len = n->data.scalar.length;
    v->quoted = n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    v->is_null = scalar_is_null(v->text, v->len, v->quoted);
  } else {
    v->node_kind = n->type == YAML_MAPPING_NODE ? "mapping" : "sequence";
  }
}

static const char *kind_name(qt_cfg_kind k) {
  switch (k) {
    case K_STR: case K_PATH_OPT: return "a string";
    case K_INT: return "an integer";
    case K_FLOAT: return "a number";
    case K_BOOL: return "true or false";
    case K_ENUM: return "one of the listed names";
    case K_TARGETS: return "all-linear or a list of module names";
  }
  return "?";
}

static void join_names(const char *const *names, char *buf, size_t cap) {
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; names[i] && off < cap; i++)
    off += (size_t)snprintf(buf + off, cap - off, "%s%s", i ? "|" : "", names[i]);
}

static int find_name(const char *const *names, const char *s) {
  for (int i = 0; names[i]; i++)
    if (strcmp(names[i], s) == 0) return i;
  return -1;
}

static size_t count_names(const char *const *names) {
  size_t n = 0;
  while (names[n]) n++;
  return n;
}

/* Applies one value to key k. Returns false (after recording why) on error. */
static bool apply_value(qt_config *cfg, const qt_cfg_key *k, const qt_cfg_value *v, qt_cfg_errors *e) {
  char *field = (char *)cfg + k->offset;
  const char *sec = k->section, *key = k->key;
  if (k->kind == K_TARGETS && v->node_kind && v->node->type == YAML_SEQUENCE_NODE) {
    unsigned bits = 0;
    bool ok = true;
    yaml_node_item_t *it = v->node->data.sequence.items.start;
    if (it == v->node->data.sequence.items.top) {
      err_add(e, "%s: %s.%s: the list is empty; name at least one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (phi3: qkv_proj, o_proj, gate_up_proj, down_proj), or write all-linear", v->where, sec, key);
      return false;
    }
    for (; it < v->node->data.sequence.items.top; it++) {
      yaml_node_t *n = yaml_document_get_node(v->doc, *it);
      char where[256];
      snprintf(where, sizeof where, "%s", v->where);
      if (v->doc && n && v->where[0] != '-') {
        /* items carry their own position */
        const char *colon = strchr(v->where, ':');
        size_t flen = colon ? (size_t)(colon - v->where) : strlen(v->where);
        snprintf(where, sizeof where, "%.*s:%zu:%zu", (int)flen, v->where, n->start_mark.line + 1,
                 n->start_mark.column + 1);
      }
      if (!n || n->type != YAML_SCALAR_NODE) {
        err_add(e, "%s: %s.%s: list items must be module names", where, sec, key);
        ok = false;
        continue;
      }
      const char *name = (const char *)n->data.scalar.value;
      int i = find_name(target_long, name);
      if (i < 0) i = find_name(target_short, name);
      if (i < 0) {
        const char *hint = closest(name, target_long, count_names(target_long));
        err_add(e, "%s: %s.%s: unknown module '%s'%s%s%s; known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, qkv_proj, gate_up_proj",
                where, sec, key, name, hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
        ok = false;
        continue;
      }
      if (bits & (1u << i)) {
        err_add(e, "%s: %s.%s: module '%s' is listed twice", where, sec, key, target_long[i]);
        ok = false;
      }
      bits |= 1u << i;
    }
    if (ok) *(unsigned *)field = bits;
    return ok;
  }
  if (v->node_kind) {
    err_add(e, "%s: %s.%s: expected %s, got a %s", v->where, sec, key, kind_name(k->kind), v->node_kind);
    return false;
  }
  if (v->is_null) {
    if (k->kind == K_PATH_OPT) {
      ((char *)field)[0] = '\0';
      return true;
    }
    err_add(e, "%s: %s.%s: no value given; expected %s", v->where, sec, key, kind_name(k->kind));
    return false;
  }
  if (memchr(v->text, '\0', v->len)) {
    err_add(e, "%s: %s.%s: the value contains a NUL character", v->where, sec, key);
    return false;
  }
  const char *s = v->text;
  switch (k->kind) {
    case K_STR:
    case K_PATH_OPT:
      if (v->len == 0) {
        err_add(e, "%s: %s.%s: empty string", v->where, sec, key);
        return false;
      }
      if (v->len >= QT_CFG_PATH_MAX) {
        err_add(e, "%s: %s.%s: longer than %d bytes", v->where, sec, key, QT_CFG_PATH_MAX - 1);
        return false;
      }
      memcpy(field, s, v->len);
      field[v->len] = '\0';
      return true;
    case K_BOOL: {
      static const char *const t[] = {"true", "True", "TRUE", NULL};
      static const char *const f[] = {"false", "False", "FALSE", NULL};
      static const char *const yaml11[] = {"yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON",
                                           "off", "Off", "OFF", "y", "Y", "n", "N", NULL};
      if (!v->quoted && find_name(t, s) >= 0) {
        *(bool *)field = true;
        return true;
      }
      if (!v->quoted && find_name(f, s) >= 0) {
        *(bool *)field = false;
        return true;
      }
      if (!v->quoted && find_name(yaml11, s) >= 0) {
        err_add(e, "%s: %s.%s: '%s' is a boolean only in YAML 1.1 and a string in YAML 1.2; write true or false", v->where, sec, key, s);
        return false;
      }
      err_add(e, "%s: %s.%s: expected true or false, got '%s'", v->where, sec, key, s);
      return false;
    }
    case K_INT:
    case K_FLOAT: {
      if (v->quoted) {
        err_add(e, "%s: %s.%s: expected %s, got the quoted string \"%s\" (remove the quotes)", v->where, sec, key,
                kind_name(k->kind), s);
        return false;
      }
      char *end = NULL;
      errno = 0;
      double d;
      if (k->kind == K_INT) {
        long long ll = strtoll(s, &end, 10);
        if (end == s || *end != '\0' || errno == ERANGE) {
          err_add(e, "%s: %s.%s: expected an integer, got '%s'", v->where, sec, key, s);
          return false;
        }
        d = (double)ll;
      } else {
        d = strtod(s, &end);
        if (end == s || *end != '\0' || errno == ERANGE || !isfinite(d)) {
          err_add(e, "%s: %s.%s: expected a finite number (like 2e-4 or 0.001), got '%s'", v->where, sec, key, s);
          return false;
        }
      }
      bool below = k->min_open ? !(d > k->min) : !(d >= k->min);
      bool above = k->max_open ? !(d < k->max) : !(d <= k->max);
      if (below || above) {
        err_add(e, "%s: %s.%s: %s is out of range; allowed: %s%.17g, %.17g%s", v->where, sec, key, s,
                k->min_open ? "(" : "[", k->min, k->max, k->max_open ? ")" : "]");
        return false;
      }
      if (k->kind == K_INT) {
        if (strcmp(key, "blocksize") == 0 && (((int64_t)d) & ((int64_t)d - 1)) != 0) {
          err_add(e, "%s: %s.%s: %s is not a power of two; allowed: 32, 64, 128, 256, 512, 1024, 2048, 4096",
                  v->where, sec, key, s);
          return false;
        }
        *(int64_t *)field = (int64_t)d;
      } else {
        *(double *)field = d;
      }
      return true;
    }
    case K_ENUM: {
      int i = find_name(k->names, s);
      if (i < 0) {
        char all[256];
        join_names(k->names, all, sizeof all);
        const char *hint = closest(s, k->names, count_names(k->names));
        err_add(e, "%s: %s.%s: '%s' is not one of %s%s%s%s", v->where, sec, key, s, all,
                hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
        return false;
      }
      *(int *)field = i;
      return true;
    }
    case K_TARGETS: {
      if (strcmp(s, "all-linear") == 0 || strcmp(s, "all") == 0) {
        *(unsigned *)field = QT_TGT_ALL;
        return true;
      }
      int i = find_name(target_long, s);
      if (i < 0) i = find_name(target_short, s);
      if (i >= 0) {
        *(unsigned *)field = 1u << i;
        return true;
      }
      err_add(e, "%s: %s.%s: '%s' is not all-linear or a module name; write all-linear or a list like [q_proj, v_proj]",
              v->where, sec, key, s);
      return false;
    }
  }
  return false;
}

/* ---- lookup ---------------------------------------------------------------- */

static const qt_cfg_key *find_key(const char *section, const char *key) {
  for (int i = 0; i < N_KEYS; i++)
    if (strcmp(qt_cfg_keys[i].section, section) == 0 && strcmp(qt_cfg_keys[i].key, key) == 0) return &qt_cfg_keys[i];
  return NULL;
}

/* Explains an unknown key: a typo of a key in this section, or a key that
 * lives in another section. */
static void unknown_key(qt_cfg_errors *e, const char *where, const char *section, const char *key) {
  const char *cands[N_KEYS];
  size_t n = 0;
  for (int i = 0; i < N_KEYS; i++)
    if (strcmp(qt_cfg_keys[i].section, section) == 0) cands[n++] = qt_cfg_keys[i].key;
  const char *hint = closest(key, cands, n);
  if (hint) {
    err_add(e, "%s: unknown key '%s.%s' (did you mean '%s.%s'?)", where, section, key, section, hint);
    return;
  }
  for (int i = 0; i < N_KEYS; i++) {
    if (strcmp(qt_cfg_keys[i].key, key) == 0) {
      err_add(e, "%s: unknown key '%s.%s' (did you mean '%s.%s'? it belongs in section '%s')", where, section, key,
              qt_cfg_keys[i].section, key, qt_cfg_keys[i].section);
      return;
    }
  }
  err_add(e, "%s: unknown key '%s.%s'; the keys of '%s' are listed in the README (Config keys)", where, section,
          key, section);
}

/* ---- YAML walking ---------------------------------------------------------- */

static void mark_str(char *buf, size_t cap, const char *label, yaml_mark_t m) {
  snprintf(buf, cap, "%s:%zu:%zu", label, m.line + 1, m.column + 1);
}

static bool scalar_eq(yaml_node_t *a, yaml_node_t *b) {
  return a->type == YAML_SCALAR_NODE && b->type == YAML_SCALAR_NODE && a->data.scalar.length == b->data.scalar.length &&
         memcmp(a->data.scalar.value, b->data.scalar.value, a->data.scalar.length) == 0;
}

/* Checks that key node k at pair index i is a scalar and not a repeat of an
 * earlier key of the same mapping. */
static bool check_key(yaml_document_t *doc, yaml_node_t *map, yaml_node_pair_t *p, const char *label,
                      const char *prefix, qt_cfg_errors *e) {
  yaml_node_t *k = yaml_document_get_node(doc, p->key);
  char where[512];
  mark_str(where, sizeof where, label, k->start_mark);
  if (k->type != YAML_SCALAR_NODE) {
    err_add(e, "%s: a key must be a plain name, not a %s", where, k->type == YAML_MAPPING_NODE ? "mapping" : "sequence");
    return false;
  }
  for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
    yaml_node_t *prev = yaml_document_get_node(doc, q->key);
    if (scalar_eq(prev, k)) {
      err_add(e, "%s: duplicate key '%s%s' (first given at line %zu); remove one of them", where, prefix,
              (const char *)k->data.scalar.value, prev->start_mark.line + 1);
      return false;
    }
  }
  return true;
}

static void walk_document(yaml_document_t *doc, const char *label, qt_config *cfg, bool *set, qt_cfg_errors *e) {
  yaml_node_t *root = yaml_document_get_root_node(doc);
  if (!root || (root->type == YAML_SCALAR_NODE && scalar_is_null((const char *)root->data.scalar.value,
                                                                root->data.scalar.length, false))) {
    err_add(e, "%s: the config is empty; it needs at least model.path and data.train", label);
    return;
  }
  char where[512];
  if (root->type != YAML_MAPPING_NODE) {
    mark_str(where, sizeof where, label, root->start_mark);
    err_add(e, "%s: the config must be a mapping of sections (model:, lora:, data:, training:, output:, export:)", where);
    return;
  }
  for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
    if (!check_key(doc, root, p, label, "", e)) continue;
    yaml_node_t *k = yaml_document_get_node(doc, p->key);
    yaml_node_t *v = yaml_document_get_node(doc, p->value);
    const char *section = (const char *)k->data.scalar.value;
    mark_str(where, sizeof where, label, k->start_mark);
    if (find_name(qt_cfg_sections, section) < 0) {
      const char *hint = closest(section, qt_cfg_sections, count_names(qt_cfg_sections));
      bool is_key = false;
      for (int i = 0; i < N_KEYS && !hint; i++) {
        if (strcmp(qt_cfg_keys[i].key, section) == 0) {
          err_add(e, "%s: unknown section '%s' (did you mean '%s.%s'? keys go inside their section)", where, section,
                  qt_cfg_keys[i].section, section);
          is_key = true;
          break;
        }
      }
      if (!is_key)
        err_add(e, "%s: unknown section '%s'%s%s%s; sections: model, lora, data, training, output, export", where,
                section, hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
      continue;
    }
    if (v->type == YAML_SCALAR_NODE && scalar_is_null((const char *)v->data.scalar.value, v->data.scalar.length,
                                                      v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE))
      continue; /* "lora:" with nothing under it: all defaults */
    if (v->type != YAML_MAPPING_NODE) {
      mark_str(where, sizeof where, label, v->start_mark);
      err_add(e, "%s: section '%s' must be a mapping of keys", where, section);
      continue;
    }
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%s.", section);
    for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
      if (!check_key(doc, v, q, label, prefix, e)) continue;
      yaml_node_t *kk = yaml_document_get_node(doc, q->key);
      yaml_node_t *vv = yaml_document_get_node(doc, q->value);
      const char *key = (const char *)kk->data.scalar.value;
      mark_str(where, sizeof where, label, kk->start_mark);
      const qt_cfg_key *desc = find_key(section, key);
      if (!desc) {
        unknown_key(e, where, section, key);
        continue;
      }
      char vwhere[512];
      mark_str(vwhere, sizeof vwhere, label, vv->start_mark);
      qt_cfg_value val;
      value_from_node(doc, vv, vwhere, &val);
      if (apply_value(cfg, desc, &val, e)) set[desc - qt_cfg_keys] = true;
    }
  }
}

static bool parse_yaml(yaml_parser_t *parser, yaml_document_t *doc, const char *label, qt_cfg_errors *e) {
  if (yaml_parser_load(parser, doc)) return true;
  const char *ctx = parser->context ? parser->context : "";
  yaml_mark_t m = parser->problem ? parser->problem_mark : parser->context_mark;
  err_add(e, "%s:%zu:%zu: YAML syntax error: %s%s%s", label, m.line + 1, m.column + 1,
          parser->problem ? parser->problem : "malformed YAML", ctx[0] ? " " : "", ctx);
  return false;
}

static void apply_set(const char *arg, qt_config *cfg, bool *set, qt_cfg_errors *e) {
  const char *eq = strchr(arg, '=');
  if (!eq) {
    err_add(e, "--set %s: expected KEY=VALUE, e.g. --set training.learning_rate=1e-4", arg);
    return;
  }
  char path[160];
  size_t plen = (size_t)(eq - arg);
  if (plen >= sizeof path) plen = sizeof path - 1;
  memcpy(path, arg, plen);
  path[plen] = '\0';
  char where[200];
  snprintf(where, sizeof where, "--set %s", path);
  char *dot = strchr(path, '.');
  if (!dot || strchr(dot + 1, '.')) {
    err_add(e, "%s: KEY must be section.key, e.g. training.learning_rate", where);
    return;
  }
  *dot = '\0';
  const char *section = path, *key = dot + 1;
  if (find_name(qt_cfg_sections, section) < 0) {
    const char *hint = closest(section, qt_cfg_sections, count_names(qt_cfg_sections));
    err_add(e, "%s: unknown section '%s'%s%s%s", where, section, hint ? " (did you mean '" : "", hint ? hint : "",
            hint ? "'?)" : "");
    return;
  }
  const qt_cfg_key *desc = find_key(section, key);
  if (!desc) {
    unknown_key(e, where, section, key);
    return;
  }
  /* The value is read as YAML, so that `1e-4`, `true`, `[q_proj, v_proj]` and
   * quoting behave exactly as in the file. */
  const char *text = eq + 1;
  yaml_parser_t parser;
  yaml_document_t doc;
  if (!yaml_parser_initialize(&parser)) {
    err_add(e, "%s: out of memory", where);
    return;
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
  if (!parse_yaml(&parser, &doc, where, e)) {
    yaml_parser_delete(&parser);
    return;
  }
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  qt_cfg_value val;
  if (!root) {
    memset(&val, 0, sizeof val);
    val.where = where;
    val.text = "";
    val.is_null = true;
  } else {
    value_from_node(&doc, root, where, &val);
  }
  if (apply_value(cfg, desc, &val, e)) set[desc - qt_cfg_keys] = true;
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
}

static bool was_set(const bool *set, const char *section, const char *key) {
  const qt_cfg_key *k = find_key(section, key);
  return k && set[k - qt_cfg_keys];
}

/* e: errors (the load fails); w: warnings (accepted, logged). */
static void validate(const qt_config *c, const bool *set, const char *label, qt_cfg_errors *e,
                     qt_cfg_errors *w) {
  for (int i = 0; i < N_KEYS; i++)
    if (qt_cfg_keys[i].required && !set[i])
      err_add(e, "%s: missing required key '%s.%s'", label, qt_cfg_keys[i].section, qt_cfg_keys[i].key);
  if (c->model.quant == QT_CFG_QUANT_NONE && c->model.double_quant && was_set(set, "model", "double_quant"))
    err_add(w, "%s: model.double_quant: true has no effect with model.quant none (bitsandbytes ignores "
               "bnb_4bit_use_double_quant without 4-bit loading too)", label);
  if (c->training.eval_steps > 0 && c->data.eval[0] == '\0')
    err_add(e, "%s: training.eval_steps is %lld but data.eval is not set; give an eval file or set eval_steps to 0",
            label, (long long)c->training.eval_steps);
  /* The HF Trainer accepts this: the learning rate is still rising when
   * training ends (a common smoke test is max_steps=1). */
  if (c->training.max_steps > 0 && c->training.warmup_steps > c->training.max_steps)
    err_add(w, "%s: training.warmup_steps (%lld) is larger than training.max_steps (%lld): "
               "warmup never finishes, the learning rate never reaches training.learning_rate", label,
            (long long)c->training.warmup_steps, (long long)c->training.max_steps);
  if (c->training.min_lr_ratio > 0 && c->training.lr_scheduler != QT_SCHED_COSINE)
    err_add(e, "%s: training.min_lr_ratio applies only to lr_scheduler cosine", label);
  if (c->data.chat_template != QT_TPL_AUTO && c->data.format != QT_FMT_CHAT)
    err_add(e, "%s: data.chat_template applies only to data.format chat", label);
  if (c->data.train_on_prompt && c->data.format == QT_FMT_TEXT && was_set(set, "data", "train_on_prompt"))
    err_add(w, "%s: data.train_on_prompt has no effect with data.format text (every token is trained on; "
               "axolotl accepts train_on_inputs with any type too)", label);
  /* torchtune accepts enable_activation_offloading without activation
   * checkpointing (it then offloads every saved activation); ours moves only
   * the checkpointed layer inputs, so alone it does nothing */
  if (c->training.activation_offloading && !c->training.gradient_checkpointing)
    err_add(w, "%s: training.activation_offloading: true has no effect without training.gradient_checkpointing "
               "(it moves the checkpointed layer inputs to host memory)", label);
  if (c->training.activation_offloading && c->training.device == QT_DEVICE_CPU)
    err_add(w, "%s: training.activation_offloading: true has no effect with training.device cpu (the layer "
               "inputs are in host memory already)", label);
  if (c->export_.merge_base == QT_MERGE_NF4_ROUNDTRIP && c->model.quant == QT_CFG_QUANT_NONE)
    err_add(e, "%s: export.merge_base nf4_roundtrip needs model.quant nf4 or fp4", label);
}

qt_status qt_config_load_string(const char *yaml, size_t len, const char *label, const char *const *sets, int n_sets,
                                qt_config *cfg) {
  qt_config_defaults(cfg);
  bool set[N_KEYS] = {false};
  qt_cfg_errors e = {0}, w = {0};
  yaml_parser_t parser;
  yaml_document_t doc;
  if (!yaml_parser_initialize(&parser)) return qt_fail(QT_ERR_NOMEM, "%s: cannot create a YAML parser", label);
  yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
  if (parse_yaml(&parser, &doc, label, &e)) {
    walk_document(&doc, label, cfg, set, &e);
    /* a second document in the stream is a mistake, not something to ignore */
    yaml_document_t doc2;
    if (yaml_parser_load(&parser, &doc2)) {
      if (yaml_document_get_root_node(&doc2)) {
        yaml_node_t *r2 = yaml_document_get_root_node(&doc2);
        err_add(&e, "%s:%zu:%zu: a second YAML document ('---') is not allowed in a config", label,
                r2->start_mark.line + 1, r2->start_mark.column + 1);
      }
      yaml_document_delete(&doc2);
    }
    yaml_document_delete(&doc);
    for (int i = 0; i < n_sets; i++) apply_set(sets[i], cfg, set, &e);
    if (e.count == 0) validate(cfg, set, label, &e, &w);
  }
  yaml_parser_delete(&parser);
  if (e.count == 0) {
    free(e.buf);
    if (w.buf) {
      snprintf(cfg->warnings, sizeof cfg->warnings, "%s", w.buf);
      for (char *line = w.buf, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        *nl = '\0';
        QT_LOGW("%s", line);
      }
    }
    free(w.buf);
    return QT_OK;
  }
  free(w.buf);
  if (e.len && e.buf[e.len - 1] == '\n') e.buf[--e.len] = '\0';
  qt_status s = qt_fail(QT_ERR_CONFIG, "%d problem%s in the config:\n%s%s", e.count, e.count == 1 ? "" : "s",
                        e.buf ? e.buf : "", e.count > 50 ? "\n(more not shown)" : "");
  free(e.buf);
  return s;
}

qt_status qt_config_load(const char *path, const char *const *sets, int n_sets, qt_config *cfg) {
  FILE *f = fopen(path, "rb");
  if (!f) return qt_fail(QT_ERR_IO, "%s: cannot open the config: %s", path, strerror(errno));
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
  }
  for (;;) {
    if (len == cap) {
      if (cap >= (size_t)16 << 20) {
        free(buf);
        fclose(f);
        return qt_fail(QT_ERR_CONFIG, "%s: larger than 16 MiB; this is not a config file", path);
      }
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        fclose(f);
        return qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + len, 1, cap - len, f);
    len += r;
    if (r == 0) break;
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return qt_fail(QT_ERR_IO, "%s: read error", path);
  }
  qt_status s = qt_config_load_string(buf, len, path, sets, n_sets, cfg);
  free(buf);
  return s;
}

/* ---- writer ---------------------------------------------------------------- */

static void write_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      fprintf(f, "\\%c", ch);
    else if (ch < 0x20)
      fprintf(f, "\\x%02x", ch);
    else
      fputc(ch, f);
  }
  fputc('"', f);
}

void qt_config_write_yaml(const qt_config *cfg, FILE *f) {
  const char *cur = NULL;
  for (int i = 0; i < N_KEYS; i++) {
    const qt_cfg_key *k = &qt_cfg_keys[i];
    const char *field = (const char *)cfg + k->offset;
    if (!cur || strcmp(cur, k->section) != 0) {
      fprintf(f, "%s:\n", k->section);
      cur = k->section;
    }
    fprintf(f, "  %s: ", k->key);
    switch (k->kind) {
      case K_STR:
      case K_PATH_OPT:
        if (k->kind == K_PATH_OPT && field[0] == '\0')
          fputs("null", f);
        else
          write_string(f, field);
        break;
      case K_INT: fprintf(f, "%lld", (long long)*(const int64_t *)field); break;
      case K_FLOAT: {
        /* the shortest form that reads back to the same double */
        double v = *(const double *)field;
        char num[40];
        for (int prec = 1; prec <= 17; prec++) {
          snprintf(num, sizeof num, "%.*g", prec, v);
          if (strtod(num, NULL) == v) break;
        }
        fputs(num, f);
        break;
      }
      case K_BOOL: fputs(*(const bool *)field ? "true" : "false", f); break;
      case K_ENUM: fputs(k->names[*(const int *)field], f); break;
      case K_TARGETS: {
        unsigned bits = *(const unsigned *)field;
        if (bits == QT_TGT_ALL) {
          fputs("all-linear", f);
          break;
        }
        fputc('[', f);
        bool first = true;
        for (int b = 0; target_long[b]; b++) {
          if (!(bits & (1u << b))) continue;
          fprintf(f, "%s%s", first ? "" : ", ", target_long[b]);
          first = false;
        }
        fputc(']', f);
        break;
      }
    }
    fputc('\n', f);
  }
}
