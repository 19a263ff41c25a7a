/* data/dataset.c — .jsonl / .json records to examples (contract: data/dataset.h). */
#include "data/dataset.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fs.h"
#include "common/log.h"
#include "common/sha256.h"

enum { MAX_FILE_BYTES_SHIFT = 40, MAX_LOGGED_SKIPS = 10 };

/* Per-load state. */
typedef struct {
  const char *name;
  qt_prompt *p;
  const qt_dataset_opts *o;
  qt_dataset *ds;
  qt_example ex;
  qt_chat_msg *msgs;
  size_t cap_msgs;
} loader_state;

int64_t qt_dataset_example_len(const qt_dataset *ds, int64_t i) {
  QT_ASSERT(i >= 0 && i < ds->n);
  return ds->offset[i + 1] - ds->offset[i];
}

void qt_dataset_free(qt_dataset *ds) {
  free(ds->offset);
  free(ds->ids);
  free(ds->labels);
  free(ds->line);
  memset(ds, 0, sizeof *ds);
}

qt_status qt_dataset_add(qt_dataset *ds, const int32_t *ids, const int32_t *labels, int64_t n,
                         int64_t line, int64_t seq_len) {
  if (n < 1) return qt_fail(QT_ERR_INVALID, "dataset: an example needs at least one token");
  if (seq_len > 0 && n > seq_len) {
    n = seq_len;
    ds->n_truncated++;
  }
  if (ds->n + 1 >= ds->cap_examples) {
    int64_t cap = ds->cap_examples ? ds->cap_examples * 2 : 1024;
    int64_t *off = realloc(ds->offset, (size_t)(cap + 1) * sizeof *off);
    if (!off) return qt_fail(QT_ERR_NOMEM, "dataset: out of memory (%lld examples)", (long long)cap);
    ds->offset = off;
    int64_t *ln = realloc(ds->line, (size_t)cap * sizeof *ln);
    if (!ln) return qt_fail(QT_ERR_NOMEM, "dataset: out of memory (%lld examples)", (long long)cap);
    ds->line = ln;
    if (ds->cap_examples == 0) ds->offset[0] = 0;
    ds->cap_examples = cap;
  }
  int64_t base = ds->offset[ds->n];
  if (base + n > ds->cap_tokens) {
    int64_t cap = ds->cap_tokens ? ds->cap_tokens : 1 << 16;
    while (cap < base + n) cap *= 2;
    int32_t *a = realloc(ds->ids, (size_t)cap * sizeof *a);
    if (!a) return qt_fail(QT_ERR_NOMEM, "dataset: out of memory (%lld tokens)", (long long)cap);
    ds->ids = a;
    int32_t *b = realloc(ds->labels, (size_t)cap * sizeof *b);
    if (!b) return qt_fail(QT_ERR_NOMEM, "dataset: out of memory (%lld tokens)", (long long)cap);
    ds->labels = b;
    ds->cap_tokens = cap;
  }
  if (n) {
    memcpy(ds->ids + base, ids, (size_t)n * sizeof *ids);
    memcpy(ds->labels + base, labels, (size_t)n * sizeof *labels);
  }
  int64_t targets = 0;
  for (int64_t i = 0; i < n; i++) targets += labels[i] != QT_LABEL_IGNORE;
  ds->n_targets += targets;
  ds->n_no_target += targets == 0;
  ds->line[ds->n] = line;
  ds->offset[ds->n + 1] = base + n;
  ds->n++;
  return QT_OK;
}

static void hash_i64(qt_sha256 *c, int64_t v) {
  uint8_t b[8];
  for (int k = 0; k < 8; k++) b[k] = (uint8_t)((uint64_t)v >> (8 * k));
  qt_sha256_update(c, b, 8);
}

static void hash_i32s(qt_sha256 *c, const int32_t *v, int64_t n) {
  uint8_t b[4096];
  int64_t i = 0;
  while (i < n) {
    size_t m = 0;
    for (; i < n && m + 4 <= sizeof b; i++, m += 4)
      for (int k = 0; k < 4; k++) b[m + (size_t)k] = (uint8_t)((uint32_t)v[i] >> (8 * k));
    qt_sha256_update(c, b, m);
  }
}

void qt_dataset_hash(const qt_dataset *ds, uint8_t digest[32]) {
  qt_sha256 c;
  qt_sha256_init(&c);
  hash_i64(&c, ds->n);
  for (int64_t i = 0; i <= ds->n && ds->offset; i++) hash_i64(&c, ds->offset[i]);
  int64_t nt = ds->n ? ds->offset[ds->n] : 0;
  hash_i32s(&c, ds->ids, nt);
  hash_i32s(&c, ds->labels, nt);
  qt_sha256_final(&c, digest);
}

/* ---- record fields -------------------------------------------------------------- */

static const char *json_type_name(const cJSON *v) {
  if (cJSON_IsString(v)) return "a string";
  if (cJSON_IsNumber(v)) return "a number";
  if (cJSON_IsBool(v)) return "a boolean";
  if (cJSON_IsNull(v)) return "null";
  if (cJSON_IsArray(v)) return "an array";
  if (cJSON_IsObject(v)) return "an object";
  return "invalid";
}

static qt_status check_duplicates(const cJSON *obj, const char *where) {
  for (const cJSON *a = obj->child; a; a = a->next)
    for (const cJSON *b = a->next; b; b = b->next)
      if (a->string && b->string && strcmp(a->string, b->string) == 0)
        return qt_fail(QT_ERR_FORMAT, "duplicate key \"%s\"%s", a->string, where);
  return QT_OK;
}

/* A string field: absent or null leaves *out = {NULL, 0}. */
static qt_status get_str(const cJSON *obj, const char *key, const char *where, qt_str *out) {
  *out = (qt_str){NULL, 0};
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v || cJSON_IsNull(v)) return QT_OK;
  if (!cJSON_IsString(v))
    return qt_fail(QT_ERR_FORMAT, "\"%s\"%s is %s, expected a string", key, where, json_type_name(v));
  *out = (qt_str){v->valuestring, strlen(v->valuestring)};
  return QT_OK;
}

static qt_status record_fields(loader_state *st, const cJSON *obj, qt_record *r) {
  memset(r, 0, sizeof *r);
  if (!cJSON_IsObject(obj))
    return qt_fail(QT_ERR_FORMAT, "the record is %s, expected a JSON object", json_type_name(obj));
  QT_TRY(check_duplicates(obj, ""));
  switch (st->p->format) {
    case QT_DATA_FMT_TEXT:
      return get_str(obj, "text", "", &r->text);
    case QT_DATA_FMT_COMPLETION:
      QT_TRY(get_str(obj, "prompt", "", &r->prompt));
      return get_str(obj, "completion", "", &r->completion);
    case QT_DATA_FMT_ALPACA:
      QT_TRY(get_str(obj, "instruction", "", &r->instruction));
      QT_TRY(get_str(obj, "input", "", &r->input));
      return get_str(obj, "output", "", &r->output);
    case QT_DATA_FMT_CHAT: {
      const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "messages");
      if (!m || cJSON_IsNull(m)) return qt_fail(QT_ERR_FORMAT, "missing \"messages\"");
      if (!cJSON_IsArray(m))
        return qt_fail(QT_ERR_FORMAT, "\"messages\" is %s, expected an array", json_type_name(m));
      size_t n = (size_t)cJSON_GetArraySize(m);
      if (n > st->cap_msgs) {
        qt_chat_msg *a = realloc(st->msgs, n * sizeof *a);
        if (!a) return qt_fail(QT_ERR_NOMEM, "dataset: out of memory");
        st->msgs = a;
        st->cap_msgs = n;
      }
      size_t i = 0;
      const cJSON *it;
      cJSON_ArrayForEach(it, m) {
        char where[48];
        snprintf(where, sizeof where, " in messages[%zu]", i);
        if (!cJSON_IsObject(it))
          return qt_fail(QT_ERR_FORMAT, "messages[%zu] is %s, expected an object", i,
                         json_type_name(it));
        QT_TRY(check_duplicates(it, where));
        qt_chat_msg *cm = &st->msgs[i];
        QT_TRY(get_str(it, "role", where, &cm->role));
        QT_TRY(get_str(it, "content", where, &cm->content));
        QT_TRY(get_str(it, "reasoning_content", where, &cm->reasoning));
        i++;
      }
      r->msgs = st->msgs;
      r->n_msgs = n;
      return QT_OK;
    }
  }
  return QT_OK;
}

/* A bad record at `line`: skipped (returns QT_OK) or the load's error. */
static qt_status bad_record(loader_state *st, int64_t line, qt_status s) {
  const char *what = qt_error_message();
  if (s == QT_ERR_FORMAT && st->o->skip_bad_records) {
    if (st->ds->n_skipped < MAX_LOGGED_SKIPS)
      QT_LOGW("%s:%lld: skipped bad record: %s", st->name, (long long)line, what);
    st->ds->n_skipped++;
    qt_error_clear();
    return QT_OK;
  }
  if (s != QT_ERR_FORMAT) {
    qt_error_context("%s:%lld", st->name, (long long)line);
    return s;
  }
  /* Re-record with the position and what to do. */
  size_t len = strlen(what);
  char *copy = malloc(len + 1);
  if (!copy) return qt_fail(QT_ERR_NOMEM, "dataset: out of memory");
  memcpy(copy, what, len + 1);
  s = qt_fail(QT_ERR_FORMAT, "%s:%lld: %s; fix the record or set data.skip_bad_records: true",
              st->name, (long long)line, copy);
  free(copy);
  return s;
}

static qt_status handle_record(loader_state *st, const cJSON *obj, int64_t line) {
  st->ds->n_records++;
  qt_record r;
  qt_status s = record_fields(st, obj, &r);
  if (s == QT_OK) s = qt_prompt_build(st->p, &r, &st->ex);
  if (s != QT_OK) return bad_record(st, line, s);
  return qt_dataset_add(st->ds, st->ex.ids, st->ex.labels, (int64_t)st->ex.n, line, st->o->seq_len);
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int limit_reached(const loader_state *st) {
  return st->o->max_records > 0 && st->ds->n_records >= st->o->max_records;
}

static qt_status load_lines(loader_state *st, const char *buf, size_t len) {
  int64_t line = 0;
  size_t i = 0;
  while (i < len && !limit_reached(st)) {
    line++;
    size_t a = i;
    while (i < len && buf[i] != '\n') i++;
    size_t b = i;
    if (i < len) i++; /* the '\n' */
    while (a < b && is_ws(buf[a])) a++;
    while (b > a && is_ws(buf[b - 1])) b--;
    if (a == b) continue;
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(buf + a, b - a, &end, 0);
    qt_status s = QT_OK;
    if (!obj) {
      size_t col = end && end >= buf + a ? (size_t)(end - (buf + a)) + 1 : 1;
      st->ds->n_records++;
      s = bad_record(st, line, qt_fail(QT_ERR_FORMAT, "malformed JSON at column %zu", col));
    } else {
      size_t used = (size_t)(end - (buf + a));
      while (used < b - a && is_ws(buf[a + used])) used++;
      if (used < b - a) {
        st->ds->n_records++;
        s = bad_record(st, line,
                       qt_fail(QT_ERR_FORMAT, "unexpected text after the JSON value at column %zu "
                               "(one record per line)", used + 1));
      } else {
        s = handle_record(st, obj, line);
      }
    }
    cJSON_Delete(obj);
    QT_TRY(s);
  }
  return QT_OK;
}

static int64_t line_of(const char *buf, size_t off) {
  int64_t line = 1;
  for (size_t i = 0; i < off; i++) line += buf[i] == '\n';
  return line;
}

/* Start line of each element of the top-level array in buf (already known to
 * parse as an array of n elements). */
static qt_status element_lines(const char *buf, size_t len, int64_t n, int64_t *lines) {
  int64_t line = 1, k = 0;
  int depth = 0, in_str = 0, at_start = 0;
  for (size_t i = 0; i < len && k < n; i++) {
    char c = buf[i];
    if (c == '\n') line++;
    if (in_str) {
      if (c == '\\') {
        if (i + 1 < len && buf[i + 1] == '\n') line++;
        i++;
      } else if (c == '"') {
        in_str = 0;
      }
      continue;
    }
    if (is_ws(c)) continue;
    if (depth == 1 && at_start && c != ']') {
      lines[k++] = line;
      at_start = 0;
    }
    if (c == '"') {
      in_str = 1;
    } else if (c == '[' || c == '{') {
      depth++;
      if (depth == 1) at_start = 1;
    } else if (c == ']' || c == '}') {
      depth--;
    } else if (c == ',' && depth == 1) {
      at_start = 1;
    }
  }
  /* cJSON accepted the array, so the scan finds every element; should a
   * leniency of cJSON ever disagree, the remaining records get the last line. */
  for (; k < n; k++) lines[k] = line;
  return QT_OK;
}

static qt_status load_array(loader_state *st, const char *buf, size_t len) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
  if (!root) {
    size_t off = end && end >= buf ? (size_t)(end - buf) : 0;
    return qt_fail(QT_ERR_FORMAT, "%s:%lld: malformed JSON; a .json dataset is one JSON array "
                   "of records (use .jsonl for one record per line)",
                   st->name, (long long)line_of(buf, off));
  }
  size_t used = (size_t)(end - buf);
  while (used < len && is_ws(buf[used])) used++;
  qt_status s = QT_OK;
  if (used < len) {
    s = qt_fail(QT_ERR_FORMAT, "%s:%lld: unexpected text after the JSON array", st->name,
                (long long)line_of(buf, used));
  } else if (!cJSON_IsArray(root)) {
    s = qt_fail(QT_ERR_FORMAT, "%s:1: the file is %s, expected a JSON array of records "
                "(use .jsonl for one record per line)", st->name, json_type_name(root));
  }
  if (s != QT_OK) {
    cJSON_Delete(root);
    return s;
  }
  int64_t n = cJSON_GetArraySize(root);
  int64_t *lines = malloc((size_t)(n > 0 ? n : 1) * sizeof *lines);
  if (!lines) {
    cJSON_Delete(root);
    return qt_fail(QT_ERR_NOMEM, "dataset: out of memory");
  }
  s = element_lines(buf, len, n, lines);
  int64_t k = 0;
  const cJSON *it;
  cJSON_ArrayForEach(it, root) {
    if (s != QT_OK || limit_reached(st)) break;
    s = handle_record(st, it, lines[k++]);
  }
  free(lines);
  cJSON_Delete(root);
  return s;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

qt_status qt_dataset_load_mem(const char *name, const char *data, size_t len, qt_prompt *p,
                              const qt_dataset_opts *o, qt_dataset *ds) {
  memset(ds, 0, sizeof *ds);
  qt_text_buf clean = {0};
  int valid = 1;
  qt_status s = qt_utf8_sanitize(data, len, &clean, &valid);
  if (s != QT_OK) return s;
  if (!valid) QT_LOGW("%s: invalid UTF-8 replaced with U+FFFD", name);

  /* A leading UTF-8 byte order mark (Windows editors write one) is not JSON. */
  size_t skip = clean.n >= 3 && memcmp(clean.s, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
  const char *text = clean.s + skip;
  size_t text_len = clean.n - skip;
  int array;
  if (ends_with(name, ".jsonl")) {
    array = 0;
  } else if (ends_with(name, ".json")) {
    array = 1;
  } else {
    size_t i = 0;
    while (i < text_len && is_ws(text[i])) i++;
    array = i < text_len && text[i] == '[';
  }
  loader_state st = {.name = name, .p = p, .o = o, .ds = ds};
  s = array ? load_array(&st, text, text_len) : load_lines(&st, text, text_len);
  qt_example_free(&st.ex);
  free(st.msgs);
  qt_text_buf_free(&clean);
  if (s == QT_OK && ds->n == 0)
    s = qt_fail(QT_ERR_FORMAT, "%s: no examples (%lld records, %lld skipped as bad); a dataset "
                "needs at least one good record", name, (long long)ds->n_records,
                (long long)ds->n_skipped);
  if (s != QT_OK) {
    qt_dataset_free(ds);
    return s;
  }
  if (ds->n_skipped)
    QT_LOGW("%s: skipped %lld bad records of %lld", name, (long long)ds->n_skipped,
            (long long)ds->n_records);
  if (ds->n_truncated)
    QT_LOGW("%s: %lld of %lld examples were longer than seq_len %lld and truncated", name,
            (long long)ds->n_truncated, (long long)ds->n, (long long)o->seq_len);
  if (ds->n_no_target)
    QT_LOGW("%s: %lld of %lld examples have no target token (all labels -100) and add no loss",
            name, (long long)ds->n_no_target, (long long)ds->n);
  return QT_OK;
}

qt_status qt_dataset_load(const char *path, qt_prompt *p, const qt_dataset_opts *o, qt_dataset *ds) {
  memset(ds, 0, sizeof *ds);
  uint8_t *buf = NULL;
  size_t len = 0;
  QT_TRY(qt_fs_read_file(path, (size_t)1 << MAX_FILE_BYTES_SHIFT, &buf, &len));
  qt_status s = qt_dataset_load_mem(path, (const char *)buf, len, p, o, ds);
  free(buf);
  return s;
}
