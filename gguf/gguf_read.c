/* gguf/gguf_read.c — reads a whole GGUF v3 file into memory and indexes it
 * (see gguf.h). Every length is checked against the bytes left before use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fs.h"
#include "gguf/gguf.h"

typedef struct {
  const uint8_t *p, *end;
  const char *path;
} cur;

static uint64_t rd_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static qt_status need(cur *c, uint64_t n, const char *what) {
  if ((uint64_t)(c->end - c->p) < n) return qt_fail(QT_ERR_FORMAT, "%s: truncated GGUF file (%s)", c->path, what);
  return QT_OK;
}

static qt_status get_u32(cur *c, uint32_t *v, const char *what) {
  QT_TRY(need(c, 4, what));
  *v = (uint32_t)rd_le(c->p, 4);
  c->p += 4;
  return QT_OK;
}

static qt_status get_u64(cur *c, uint64_t *v, const char *what) {
  QT_TRY(need(c, 8, what));
  *v = rd_le(c->p, 8);
  c->p += 8;
  return QT_OK;
}

static qt_status get_str(cur *c, const uint8_t **s, uint64_t *n, const char *what) {
  QT_TRY(get_u64(c, n, what));
  QT_TRY(need(c, *n, what));
  *s = c->p;
  c->p += *n;
  return QT_OK;
}

static size_t scalar_size(qt_gguf_vtype t) {
  static const size_t sz[QT_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return (unsigned)t < QT_GGUF_TYPE_COUNT ? sz[t] : 0;
}

static qt_status read_value(cur *c, qt_gguf_kv *kv) {
  const uint8_t *start = c->p;
  if (kv->type == QT_GGUF_STRING) {
    const uint8_t *s;
    uint64_t n;
    QT_TRY(get_str(c, &s, &n, kv->key));
    kv->data = s;
    kv->bytes = n;
    return QT_OK;
  }
  if (kv->type == QT_GGUF_ARRAY) {
    uint32_t et;
    QT_TRY(get_u32(c, &et, kv->key));
    QT_TRY(get_u64(c, &kv->n, kv->key));
    kv->arr_type = (qt_gguf_vtype)et;
    kv->data = c->p;
    if (et == QT_GGUF_STRING) {
      if (kv->n > (uint64_t)(c->end - c->p) / 8) return qt_fail(QT_ERR_FORMAT, "%s: %s: array too long", c->path, kv->key);
      kv->str_off = malloc((size_t)(kv->n ? kv->n : 1) * sizeof *kv->str_off);
      if (!kv->str_off) return qt_fail(QT_ERR_NOMEM, "out of memory");
      for (uint64_t i = 0; i < kv->n; i++) {
        kv->str_off[i] = (uint64_t)(c->p - kv->data);
        const uint8_t *s;
        uint64_t n;
        QT_TRY(get_str(c, &s, &n, kv->key));
      }
    } else {
      size_t es = scalar_size((qt_gguf_vtype)et);
      if (!es) return qt_fail(QT_ERR_FORMAT, "%s: %s: unsupported array element type %u", c->path, kv->key, et);
      if (kv->n > (uint64_t)(c->end - c->p) / es) return qt_fail(QT_ERR_FORMAT, "%s: %s: array too long", c->path, kv->key);
      c->p += kv->n * es;
    }
    kv->bytes = (uint64_t)(c->p - kv->data);
    return QT_OK;
  }
  size_t es = scalar_size(kv->type);
  if (!es) return qt_fail(QT_ERR_FORMAT, "%s: %s: unknown value type %u", c->path, kv->key, (unsigned)kv->type);
  QT_TRY(need(c, es, kv->key));
  kv->data = start;
  kv->bytes = es;
  c->p += es;
  return QT_OK;
}

static char *dup_n(const uint8_t *s, uint64_t n) {
  char *r = malloc((size_t)n + 1);
  if (r) {
    memcpy(r, s, (size_t)n);
    r[n] = '\0';
  }
  return r;
}

qt_status qt_gguf_read(const char *path, qt_gguf_file *f) {
  memset(f, 0, sizeof *f);
  QT_TRY(qt_fs_read_file(path, (size_t)1 << 40, &f->image, &f->size));
  cur c = {f->image, f->image + f->size, path};
  qt_status r = need(&c, 4, "magic");
  if (r == QT_OK && memcmp(c.p, "GGUF", 4) != 0) r = qt_fail(QT_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
  c.p += 4;
  uint64_t nt = 0, nkv = 0;
  if (r == QT_OK) r = get_u32(&c, &f->version, "version");
  if (r == QT_OK && f->version != 3) r = qt_fail(QT_ERR_FORMAT, "%s: GGUF version %u (only 3 is read)", path, f->version);
  if (r == QT_OK) r = get_u64(&c, &nt, "tensor count");
  if (r == QT_OK) r = get_u64(&c, &nkv, "kv count");
  if (r == QT_OK && (nkv > f->size / 13 || nt > f->size / 25)) r = qt_fail(QT_ERR_FORMAT, "%s: implausible counts", path);
  if (r == QT_OK) {
    f->kv = calloc(nkv ? nkv : 1, sizeof *f->kv);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) r = qt_fail(QT_ERR_NOMEM, "out of memory");
  }
  for (uint64_t i = 0; r == QT_OK && i < nkv; i++) {
    qt_gguf_kv *kv = &f->kv[i];
    const uint8_t *s;
    uint64_t n;
    uint32_t t = 0;
    r = get_str(&c, &s, &n, "key");
    if (r == QT_OK && !(kv->key = dup_n(s, n))) r = qt_fail(QT_ERR_NOMEM, "out of memory");
    if (r == QT_OK) f->n_kv = i + 1;
    if (r == QT_OK) r = get_u32(&c, &t, "value type");
    kv->type = (qt_gguf_vtype)t;
    if (r == QT_OK) r = read_value(&c, kv);
  }
  f->alignment = 32;
  uint32_t al;
  if (r == QT_OK && qt_gguf_get_u32(f, "general.alignment", &al)) {
    if (al == 0 || al % 8 != 0) r = qt_fail(QT_ERR_FORMAT, "%s: general.alignment %u is not a multiple of 8", path, al);
    f->alignment = al;
  }
  for (uint64_t i = 0; r == QT_OK && i < nt; i++) {
    qt_gguf_tensor *t = &f->tensors[i];
    const uint8_t *s;
    uint64_t n;
    uint32_t nd = 0, ty = 0;
    r = get_str(&c, &s, &n, "tensor name");
    if (r == QT_OK && !(t->name = dup_n(s, n))) r = qt_fail(QT_ERR_NOMEM, "out of memory");
    if (r == QT_OK) f->n_tensors = i + 1;
    if (r == QT_OK) r = get_u32(&c, &nd, "n_dims");
    if (r == QT_OK && (nd < 1 || nd > 4)) r = qt_fail(QT_ERR_FORMAT, "%s: tensor %s: %u dimensions", path, t->name, nd);
    t->n_dims = (int)nd;
    for (uint32_t d = 0; r == QT_OK && d < nd; d++) {
      uint64_t v = 0;
      r = get_u64(&c, &v, "ne");
      if (r == QT_OK && (v == 0 || v > ((uint64_t)1 << 40)))
        r = qt_fail(QT_ERR_FORMAT, "%s: tensor %s: bad dimension", path, t->name);
      t->ne[d] = (int64_t)v;
    }
    if (r == QT_OK) r = get_u32(&c, &ty, "type");
    if (r == QT_OK && !qt_ggml_type_known(ty))
      r = qt_fail(QT_ERR_UNSUPPORTED, "%s: tensor %s: ggml type %u not read here", path, t->name, ty);
    t->type = (qt_ggml_type)ty;
    if (r == QT_OK) r = get_u64(&c, &t->offset, "offset");
    if (r == QT_OK && t->ne[0] % qt_ggml_block_values(t->type) != 0)
      r = qt_fail(QT_ERR_FORMAT, "%s: tensor %s: row not whole blocks", path, t->name);
    if (r == QT_OK) {
      uint64_t rows = 1;
      for (int d = 1; d < t->n_dims; d++) rows *= (uint64_t)t->ne[d];
      t->bytes = (size_t)(rows * qt_ggml_row_bytes(t->type, t->ne[0]));
    }
  }
  if (r == QT_OK) {
    size_t off = (size_t)(c.p - f->image);
    size_t data = (off + f->alignment - 1) / f->alignment * f->alignment;
    for (size_t i = 0; r == QT_OK && i < f->n_tensors; i++) {
      qt_gguf_tensor *t = &f->tensors[i];
      if (t->offset % f->alignment != 0 || data > f->size || t->offset > f->size - data ||
          t->bytes > f->size - data - t->offset)
        r = qt_fail(QT_ERR_FORMAT, "%s: tensor %s: data outside the file or misaligned", path, t->name);
      else
        t->data = f->image + data + t->offset;
    }
  }
  if (r != QT_OK) qt_gguf_file_free(f);
  return r;
}

void qt_gguf_file_free(qt_gguf_file *f) {
  for (size_t i = 0; i < f->n_kv; i++) {
    free(f->kv[i].key);
    free(f->kv[i].str_off);
  }
  for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
  free(f->kv);
  free(f->tensors);
  free(f->image);
  memset(f, 0, sizeof *f);
}

const qt_gguf_kv *qt_gguf_find_kv(const qt_gguf_file *f, const char *key) {
  for (size_t i = 0; i < f->n_kv; i++)
    if (strcmp(f->kv[i].key, key) == 0) return &f->kv[i];
  return NULL;
}

const qt_gguf_tensor *qt_gguf_find_tensor(const qt_gguf_file *f, const char *name) {
  for (size_t i = 0; i < f->n_tensors; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

bool qt_gguf_get_u32(const qt_gguf_file *f, const char *key, uint32_t *v) {
  const qt_gguf_kv *kv = qt_gguf_find_kv(f, key);
  if (!kv || kv->type != QT_GGUF_U32) return false;
  *v = (uint32_t)rd_le(kv->data, 4);
  return true;
}

bool qt_gguf_get_f32(const qt_gguf_file *f, const char *key, float *v) {
  const qt_gguf_kv *kv = qt_gguf_find_kv(f, key);
  if (!kv || kv->type != QT_GGUF_F32) return false;
  uint32_t u = (uint32_t)rd_le(kv->data, 4);
  memcpy(v, &u, 4);
  return true;
}

bool qt_gguf_get_bool(const qt_gguf_file *f, const char *key, bool *v) {
  const qt_gguf_kv *kv = qt_gguf_find_kv(f, key);
  if (!kv || kv->type != QT_GGUF_BOOL) return false;
  *v = kv->data[0] != 0;
  return true;
}

bool qt_gguf_get_str(const qt_gguf_file *f, const char *key, const char **s, size_t *len) {
  const qt_gguf_kv *kv = qt_gguf_find_kv(f, key);
  if (!kv || kv->type != QT_GGUF_STRING) return false;
  *s = (const char *)kv->data;
  *len = (size_t)kv->bytes;
  return true;
}

bool qt_gguf_get_arr_str(const qt_gguf_kv *kv, uint64_t i, const char **s, size_t *len) {
  if (kv->type != QT_GGUF_ARRAY || kv->arr_type != QT_GGUF_STRING || i >= kv->n) return false;
  const uint8_t *p = kv->data + kv->str_off[i];
  *len = (size_t)rd_le(p, 8);
  *s = (const char *)p + 8;
  return true;
}
