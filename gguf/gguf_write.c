/* gguf/gguf_write.c — the streaming GGUF v3 writer (see gguf.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fs.h"
#include "gguf/gguf.h"

enum { ALIGN = 32 }; /* GGUF_DEFAULT_ALIGNMENT; we write no general.alignment */

typedef struct {
  char name[96];
  int n_dims;
  int64_t ne[4];
  qt_ggml_type type;
  uint64_t offset, bytes;
} wtensor;

struct qt_gguf_writer {
  char *path;
  uint8_t *kv;           /* the encoded KVs */
  size_t kv_len, kv_cap;
  size_t n_kv;
  char **keys;           /* for the duplicate check */
  wtensor *t;
  size_t n_t, cap_t;
  uint64_t data_size;
  bool started;
  size_t next;           /* next tensor to write */
  uint64_t pos;          /* bytes written of the data section */
  qt_fs_atomic out;
  bool out_open;
};

qt_status qt_gguf_writer_init(const char *path, qt_gguf_writer **out) {
  *out = NULL;
  qt_gguf_writer *w = calloc(1, sizeof *w);
  if (!w || !(w->path = strdup(path))) {
    free(w);
    return qt_fail(QT_ERR_NOMEM, "out of memory");
  }
  w->out.fd = -1;
  *out = w;
  return QT_OK;
}

void qt_gguf_writer_free(qt_gguf_writer **pw) {
  qt_gguf_writer *w = *pw;
  if (!w) return;
  if (w->out_open) qt_fs_atomic_abort(&w->out);
  for (size_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
  free(w->keys);
  free(w->kv);
  free(w->t);
  free(w->path);
  free(w);
  *pw = NULL;
}

static qt_status grow(qt_gguf_writer *w, size_t more) {
  if (w->kv_len + more <= w->kv_cap) return QT_OK;
  size_t cap = w->kv_cap ? w->kv_cap : 4096;
  while (cap < w->kv_len + more) cap *= 2;
  uint8_t *p = realloc(w->kv, cap);
  if (!p) return qt_fail(QT_ERR_NOMEM, "%s: out of memory for the GGUF header", w->path);
  w->kv = p;
  w->kv_cap = cap;
  return QT_OK;
}

static void put(qt_gguf_writer *w, const void *p, size_t n) {
  memcpy(w->kv + w->kv_len, p, n);
  w->kv_len += n;
}
static void put_u32(qt_gguf_writer *w, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  put(w, b, 4);
}
static void put_u64(qt_gguf_writer *w, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
  put(w, b, 8);
}
static void put_str(qt_gguf_writer *w, const char *s, size_t n) {
  put_u64(w, n);
  put(w, s, n);
}

/* key + type, after checks; reserves `more` bytes for the value */
static qt_status kv_begin(qt_gguf_writer *w, const char *key, qt_gguf_vtype type, size_t more) {
  QT_ASSERTF(!w->started, "%s: KV %s added after the tensor data began", w->path, key);
  for (size_t i = 0; i < w->n_kv; i++)
    if (strcmp(w->keys[i], key) == 0) return qt_fail(QT_ERR_INVALID, "%s: duplicate GGUF key %s", w->path, key);
  char **k = realloc(w->keys, (w->n_kv + 1) * sizeof *k);
  if (!k) return qt_fail(QT_ERR_NOMEM, "out of memory");
  w->keys = k;
  if (!(k[w->n_kv] = strdup(key))) return qt_fail(QT_ERR_NOMEM, "out of memory");
  w->n_kv++;
  size_t kl = strlen(key);
  QT_TRY(grow(w, 8 + kl + 4 + more));
  put_str(w, key, kl);
  put_u32(w, (uint32_t)type);
  return QT_OK;
}

qt_status qt_gguf_kv_str(qt_gguf_writer *w, const char *key, const char *v) {
  size_t n = strlen(v);
  QT_TRY(kv_begin(w, key, QT_GGUF_STRING, 8 + n));
  put_str(w, v, n);
  return QT_OK;
}

qt_status qt_gguf_kv_u32(qt_gguf_writer *w, const char *key, uint32_t v) {
  QT_TRY(kv_begin(w, key, QT_GGUF_U32, 4));
  put_u32(w, v);
  return QT_OK;
}

qt_status qt_gguf_kv_i32(qt_gguf_writer *w, const char *key, int32_t v) {
  QT_TRY(kv_begin(w, key, QT_GGUF_I32, 4));
  put_u32(w, (uint32_t)v);
  return QT_OK;
}

qt_status qt_gguf_kv_f32(qt_gguf_writer *w, const char *key, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  QT_TRY(kv_begin(w, key, QT_GGUF_F32, 4));
  put_u32(w, u);
  return QT_OK;
}

qt_status qt_gguf_kv_bool(qt_gguf_writer *w, const char *key, bool v) {
  QT_TRY(kv_begin(w, key, QT_GGUF_BOOL, 1));
  uint8_t b = v ? 1 : 0;
  put(w, &b, 1);
  return QT_OK;
}

qt_status qt_gguf_kv_arr_str(qt_gguf_writer *w, const char *key, const char *const *v, size_t n) {
  size_t total = 12;
  for (size_t i = 0; i < n; i++) total += 8 + strlen(v[i]);
  QT_TRY(kv_begin(w, key, QT_GGUF_ARRAY, total));
  put_u32(w, QT_GGUF_STRING);
  put_u64(w, n);
  for (size_t i = 0; i < n; i++) put_str(w, v[i], strlen(v[i]));
  return QT_OK;
}

static qt_status arr32(qt_gguf_writer *w, const char *key, qt_gguf_vtype et, const void *v, size_t n) {
  QT_TRY(kv_begin(w, key, QT_GGUF_ARRAY, 12 + 4 * n));
  put_u32(w, (uint32_t)et);
  put_u64(w, n);
  const uint8_t *p = v;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, p + 4 * i, 4);
    put_u32(w, u);
  }
  return QT_OK;
}

qt_status qt_gguf_kv_arr_f32(qt_gguf_writer *w, const char *key, const float *v, size_t n) {
  return arr32(w, key, QT_GGUF_F32, v, n);
}

qt_status qt_gguf_kv_arr_i32(qt_gguf_writer *w, const char *key, const int32_t *v, size_t n) {
  return arr32(w, key, QT_GGUF_I32, v, n);
}

static uint64_t align_up(uint64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

qt_status qt_gguf_add_tensor(qt_gguf_writer *w, const char *name, int n_dims, const int64_t *ne, qt_ggml_type type,
                             size_t *index) {
  QT_ASSERTF(!w->started, "%s: tensor %s added after the data began", w->path, name);
  QT_ASSERTF(n_dims >= 1 && n_dims <= 4, "n_dims %d", n_dims);
  if (strlen(name) >= 64) return qt_fail(QT_ERR_INVALID, "%s: tensor name '%s' is longer than GGUF's 63 bytes", w->path, name);
  for (size_t i = 0; i < w->n_t; i++)
    if (strcmp(w->t[i].name, name) == 0) return qt_fail(QT_ERR_INVALID, "%s: duplicate tensor %s", w->path, name);
  if (ne[0] % qt_ggml_block_values(type) != 0)
    return qt_fail(QT_ERR_INVALID, "%s: tensor %s: a row of %lld values is not whole %s blocks", w->path, name,
                   (long long)ne[0], qt_ggml_type_name(type));
  if (w->n_t == w->cap_t) {
    size_t cap = w->cap_t ? 2 * w->cap_t : 64;
    wtensor *t = realloc(w->t, cap * sizeof *t);
    if (!t) return qt_fail(QT_ERR_NOMEM, "out of memory");
    w->t = t;
    w->cap_t = cap;
  }
  wtensor *t = &w->t[w->n_t];
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->n_dims = n_dims;
  uint64_t rows = 1;
  for (int d = 0; d < n_dims; d++) {
    t->ne[d] = ne[d];
    if (d > 0) rows *= (uint64_t)ne[d];
  }
  t->type = type;
  t->bytes = rows * qt_ggml_row_bytes(type, ne[0]);
  t->offset = w->data_size;
  w->data_size = align_up(w->data_size + t->bytes);
  if (index) *index = w->n_t;
  w->n_t++;
  return QT_OK;
}

size_t qt_gguf_tensor_bytes(const qt_gguf_writer *w, size_t i) { return (size_t)w->t[i].bytes; }

static qt_status write_header(qt_gguf_writer *w) {
  /* the tensor infos go after the KVs in the same buffer */
  size_t info = 0;
  for (size_t i = 0; i < w->n_t; i++) info += 8 + strlen(w->t[i].name) + 4 + 8 * (size_t)w->t[i].n_dims + 4 + 8;
  QT_TRY(grow(w, 24 + info + ALIGN));
  /* header first: move the KVs up by 24 bytes */
  memmove(w->kv + 24, w->kv, w->kv_len);
  size_t kv_len = w->kv_len;
  w->kv_len = 0;
  put(w, "GGUF", 4);
  put_u32(w, 3);
  put_u64(w, w->n_t);
  put_u64(w, w->n_kv);
  w->kv_len = 24 + kv_len;
  for (size_t i = 0; i < w->n_t; i++) {
    const wtensor *t = &w->t[i];
    put_str(w, t->name, strlen(t->name));
    put_u32(w, (uint32_t)t->n_dims);
    for (int d = 0; d < t->n_dims; d++) put_u64(w, (uint64_t)t->ne[d]);
    put_u32(w, (uint32_t)t->type);
    put_u64(w, t->offset);
  }
  size_t pad = (size_t)(align_up(w->kv_len) - w->kv_len);
  memset(w->kv + w->kv_len, 0, pad);
  w->kv_len += pad;
  QT_TRY(qt_fs_atomic_begin(&w->out, w->path));
  w->out_open = true;
  qt_status r = qt_fs_atomic_write(&w->out, w->kv, w->kv_len);
  free(w->kv);
  w->kv = NULL;
  w->kv_cap = w->kv_len = 0;
  return r;
}

qt_status qt_gguf_write_tensor(qt_gguf_writer *w, size_t i, const void *data, size_t bytes) {
  QT_ASSERTF(i == w->next && i < w->n_t, "%s: tensor %zu written out of order (next %zu)", w->path, i, w->next);
  QT_ASSERTF(bytes == w->t[i].bytes, "%s: tensor %s: %zu bytes, expected %llu", w->path, w->t[i].name, bytes,
             (unsigned long long)w->t[i].bytes);
  if (!w->started) {
    w->started = true;
    QT_TRY(write_header(w));
  }
  QT_TRY(qt_fs_atomic_write(&w->out, data, bytes));
  static const uint8_t zeros[ALIGN] = {0};
  uint64_t end = w->t[i].offset + bytes;
  size_t pad = (size_t)(align_up(end) - end);
  if (pad) QT_TRY(qt_fs_atomic_write(&w->out, zeros, pad));
  w->pos = align_up(end);
  w->next++;
  return QT_OK;
}

qt_status qt_gguf_writer_finish(qt_gguf_writer *w) {
  if (!w->started) {
    w->started = true;
    QT_TRY(write_header(w));
  }
  QT_ASSERTF(w->next == w->n_t, "%s: %zu of %zu tensors written", w->path, w->next, w->n_t);
  w->out_open = false;
  return qt_fs_atomic_commit(&w->out);
}
