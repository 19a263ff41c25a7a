/* common/safetensors.c — safetensors reader (mmap) and atomic writer.
 *
 * Format: 8-byte little-endian N, N bytes of UTF-8 JSON header, then the data
 * buffer (reliability-anchors.md 1.1). The reader reproduces the reference
 * reader's validation rules 1-10 (reliability-anchors.md 1.2, from
 * huggingface/safetensors src/tensor.rs read_metadata + Metadata::validate);
 * messages say "(rule K)" with the same numbering. The header is parsed by a
 * small strict RFC 8259 parser specialised to the header schema instead of a
 * general JSON library, so that duplicates, integer grammar (serde_json
 * rejects 16.0 and 1e3 for usize), whitespace and nesting are decided here and
 * not by the quirks of a library (cJSON keeps duplicates, matches keys
 * case-insensitively, saturates valueint, treats all bytes <= 0x20 as
 * whitespace and accepts raw control characters in strings). */
/* madvise(MADV_DONTNEED) in qt_st_model_release: Linux/BSD, not POSIX (glibc
 * makes posix_madvise(POSIX_MADV_DONTNEED) a no-op). */
#define _DEFAULT_SOURCE 1
#include "common/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/fs.h"

/* ---- small helpers ---------------------------------------------------------- */

static char *st_strndup(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* A tensor name made safe and short for an error message: non-printable
 * bytes as \xNN, truncated after 60 bytes. */
static const char *st_show(const char *name, char buf[128]) {
  size_t o = 0;
  for (size_t i = 0; name[i] != '\0'; i++) {
    if (o > 60) {
      memcpy(buf + o, "...", 4);
      return buf;
    }
    unsigned char c = (unsigned char)name[i];
    if (c < 0x20 || c == 0x7f) {
      o += (size_t)snprintf(buf + o, 128 - o, "\\x%02x", c);
    } else {
      buf[o++] = (char)c;
    }
  }
  buf[o] = '\0';
  return buf;
}

static void st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
  size_t o = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && o < cap; i++) {
    o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
  }
  if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Reference layout rank of each dtype: the declaration order of the Rust enum
 * `Dtype` in huggingface/safetensors src/tensor.rs (BOOL, F4, F6_E2M3, F6_E3M2,
 * U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16,
 * BF16, I32, U32, F32, C64, F64, I64, U64); `prepare()` sorts tensors by it,
 * descending, then by name. Checked against safetensors 0.8.0 output. */
static int st_dtype_rank(qt_dtype t) {
  static const int rank[QT_DTYPE_COUNT] = {
      [QT_BOOL] = 0,         [QT_F4] = 1,           [QT_F6_E2M3] = 2,  [QT_F6_E3M2] = 3,
      [QT_U8] = 4,           [QT_I8] = 5,           [QT_F8_E5M2] = 6,  [QT_F8_E4M3] = 7,
      [QT_F8_E8M0] = 8,      [QT_F8_E4M3FNUZ] = 9,  [QT_F8_E5M2FNUZ] = 10,
      [QT_I16] = 11,         [QT_U16] = 12,         [QT_F16] = 13,     [QT_BF16] = 14,
      [QT_I32] = 15,         [QT_U32] = 16,         [QT_F32] = 17,     [QT_C64] = 18,
      [QT_F64] = 19,         [QT_I64] = 20,         [QT_U64] = 21,
  };
  QT_ASSERT((unsigned)t < QT_DTYPE_COUNT);
  return rank[t];
}

/* Strict UTF-8 check (the Unicode "well-formed" table, as Rust's from_utf8):
 * no overlong forms, no surrogates, nothing above U+10FFFF. Returns the offset
 * of the first bad byte, or len if all is well. */
static size_t st_utf8_check(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return i;
    }
    if (len - i - 1 < need) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k <= need; k++) {
      if (s[i + k] < 0x80 || s[i + k] > 0xbf) return i;
    }
    i += need + 1;
  }
  return len;
}

/* ---- header parser ---------------------------------------------------------- */

typedef struct {
  const char *label;
  const uint8_t *h; /* header bytes */
  size_t n, i;      /* length, cursor */
  int depth;
  qt_st_entry *ents;
  size_t n_ents, cap_ents;
  char **mk, **mv;
  size_t n_meta, cap_meta;
  bool seen_meta;
} st_parser;

static qt_status st_err(const st_parser *p, qt_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static qt_status st_err(const st_parser *p, qt_status s, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return qt_fail(s, "%s: %s safetensors file: %s", p->label, s == QT_ERR_UNSUPPORTED ? "unsupported" : "invalid",
                 msg);
}

/* JSON syntax error at the cursor (rule 5). */
static qt_status st_syntax(const st_parser *p, const char *what) {
  return st_err(p, QT_ERR_FORMAT, "header is not valid JSON: %s at header byte %zu (rule 5)", what, p->i);
}

static void st_ws(st_parser *p) {
  while (p->i < p->n) {
    uint8_t c = p->h[p->i];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->i++;
  }
}

static bool st_peek(const st_parser *p, uint8_t c) { return p->i < p->n && p->h[p->i] == c; }

static qt_status st_expect(st_parser *p, uint8_t c, const char *what) {
  st_ws(p);
  if (p->i >= p->n) return st_syntax(p, "unexpected end of header");
  if (p->h[p->i] != c) return st_syntax(p, what);
  p->i++;
  return QT_OK;
}

static int st_hex4(const uint8_t *s, unsigned *out) {
  unsigned v = 0;
  for (int k = 0; k < 4; k++) {
    uint8_t c = s[k];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

/* Parses a JSON string at the cursor into a malloc'd, NUL-terminated buffer;
 * *len excludes the terminator (the string may contain U+0000). If out is
 * NULL the string is only validated. The header was checked to be UTF-8. */
static qt_status st_string(st_parser *p, char **out, size_t *len) {
  st_ws(p);
  if (p->i >= p->n) return st_syntax(p, "unexpected end of header");
  if (p->h[p->i] != '"') return st_syntax(p, "expected a string");
  p->i++;
  size_t start = p->i;
  /* The decoded string is never longer than the raw one. */
  size_t end = start;
  while (end < p->n && p->h[end] != '"') end += (p->h[end] == '\\') ? 2 : 1;
  char *d = NULL;
  if (out) {
    d = malloc((end > p->n ? p->n : end) - start + 1);
    if (!d) return qt_fail(QT_ERR_NOMEM, "%s: out of memory parsing the header", p->label);
  }
  size_t o = 0;
  for (;;) {
    if (p->i >= p->n) {
      free(d);
      return st_syntax(p, "unterminated string");
    }
    uint8_t c = p->h[p->i];
    if (c == '"') {
      p->i++;
      break;
    }
    if (c < 0x20) {
      free(d);
      return st_syntax(p, "control character in string");
    }
    if (c != '\\') {
      if (d) d[o] = (char)c;
      o++;
      p->i++;
      continue;
    }
    if (p->i + 1 >= p->n) {
      free(d);
      return st_syntax(p, "unterminated string");
    }
    uint8_t e = p->h[p->i + 1];
    p->i += 2;
    uint8_t simple = 0;
    switch (e) {
      case '"': simple = '"'; break;
      case '\\': simple = '\\'; break;
      case '/': simple = '/'; break;
      case 'b': simple = '\b'; break;
      case 'f': simple = '\f'; break;
      case 'n': simple = '\n'; break;
      case 'r': simple = '\r'; break;
      case 't': simple = '\t'; break;
      case 'u': break;
      default:
        free(d);
        p->i -= 2;
        return st_syntax(p, "invalid escape in string");
    }
    if (e != 'u') {
      if (d) d[o] = (char)simple;
      o++;
      continue;
    }
    unsigned cp;
    if (p->i + 4 > p->n || !st_hex4(p->h + p->i, &cp)) {
      free(d);
      return st_syntax(p, "invalid \\u escape in string");
    }
    p->i += 4;
    if (cp >= 0xdc00 && cp <= 0xdfff) {
      free(d);
      return st_syntax(p, "lone low surrogate in \\u escape");
    }
    if (cp >= 0xd800 && cp <= 0xdbff) {
      unsigned lo;
      if (p->i + 6 > p->n || p->h[p->i] != '\\' || p->h[p->i + 1] != 'u' ||
          !st_hex4(p->h + p->i + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) {
        free(d);
        return st_syntax(p, "lone high surrogate in \\u escape");
      }
      p->i += 6;
      cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    /* UTF-8 encode; an escape (6 or 12 raw bytes) never decodes longer. */
    uint8_t u[4];
    size_t k;
    if (cp < 0x80) {
      u[0] = (uint8_t)cp;
      k = 1;
    } else if (cp < 0x800) {
      u[0] = (uint8_t)(0xc0 | (cp >> 6));
      u[1] = (uint8_t)(0x80 | (cp & 0x3f));
      k = 2;
    } else if (cp < 0x10000) {
      u[0] = (uint8_t)(0xe0 | (cp >> 12));
      u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
      u[2] = (uint8_t)(0x80 | (cp & 0x3f));
      k = 3;
    } else {
      u[0] = (uint8_t)(0xf0 | (cp >> 18));
      u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
      u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
      u[3] = (uint8_t)(0x80 | (cp & 0x3f));
      k = 4;
    }
    if (d) memcpy(d + o, u, k);
    o += k;
  }
  if (d) {
    d[o] = '\0';
    *out = d;
  }
  if (len) *len = o;
  return QT_OK;
}

/* Scans a JSON number (RFC 8259 grammar) at the cursor without consuming it.
 * Returns its length, 0 if the bytes are not a number. */
static size_t st_number_span(const st_parser *p, bool *is_uint) {
  size_t i = p->i, n = p->n;
  const uint8_t *h = p->h;
  bool neg = false, frac = false;
  if (i < n && h[i] == '-') {
    neg = true;
    i++;
  }
  if (i >= n || h[i] < '0' || h[i] > '9') return 0;
  if (h[i] == '0') {
    i++;
  } else {
    while (i < n && h[i] >= '0' && h[i] <= '9') i++;
  }
  if (i < n && h[i] == '.') {
    frac = true;
    i++;
    if (i >= n || h[i] < '0' || h[i] > '9') return 0;
    while (i < n && h[i] >= '0' && h[i] <= '9') i++;
  }
  if (i < n && (h[i] == 'e' || h[i] == 'E')) {
    frac = true;
    i++;
    if (i < n && (h[i] == '+' || h[i] == '-')) i++;
    if (i >= n || h[i] < '0' || h[i] > '9') return 0;
    while (i < n && h[i] >= '0' && h[i] <= '9') i++;
  }
  *is_uint = !neg && !frac;
  return i - p->i;
}

/* A non-negative JSON integer (serde_json's rule for usize: no sign, no
 * fraction, no exponent), checked for u64 overflow. */
static qt_status st_uint(st_parser *p, const char *what, const char *tname, uint64_t *out) {
  char nb[128];
  st_ws(p);
  bool is_uint = false;
  size_t len = st_number_span(p, &is_uint);
  if (len == 0) {
    if (p->i < p->n && (p->h[p->i] == '"' || p->h[p->i] == '[' || p->h[p->i] == '{' ||
                        p->h[p->i] == 't' || p->h[p->i] == 'f' || p->h[p->i] == 'n')) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': %s entry is not an integer (rule 5)",
                    st_show(tname, nb), what);
    }
    return st_syntax(p, "invalid number");
  }
  const char *tok = (const char *)p->h + p->i;
  int show = len > 40 ? 40 : (int)len;
  if (!is_uint) {
    return st_err(p, QT_ERR_FORMAT, "tensor '%s': %s value %.*s is not a non-negative integer (rule 5)",
                  st_show(tname, nb), what, show, tok);
  }
  uint64_t v = 0;
  for (size_t k = 0; k < len; k++) {
    uint64_t dgt = (uint64_t)(tok[k] - '0');
    if (v > (UINT64_MAX - dgt) / 10) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': %s value %.*s does not fit in 64 bits (rule 5)",
                    st_show(tname, nb), what, show, tok);
    }
    v = v * 10 + dgt;
  }
  p->i += len;
  *out = v;
  return QT_OK;
}

/* Validates and skips any JSON value (used for fields the reference ignores). */
static qt_status st_skip_value(st_parser *p) {
  st_ws(p);
  if (p->i >= p->n) return st_syntax(p, "unexpected end of header");
  uint8_t c = p->h[p->i];
  if (c == '"') return st_string(p, NULL, NULL);
  if (c == '{' || c == '[') {
    if (++p->depth > QT_ST_MAX_DEPTH) {
      return st_err(p, QT_ERR_FORMAT, "header JSON nests deeper than %d levels at header byte %zu",
                    QT_ST_MAX_DEPTH, p->i);
    }
    uint8_t close = c == '{' ? '}' : ']';
    p->i++;
    st_ws(p);
    if (st_peek(p, close)) {
      p->i++;
      p->depth--;
      return QT_OK;
    }
    for (;;) {
      if (c == '{') {
        QT_TRY(st_string(p, NULL, NULL));
        QT_TRY(st_expect(p, ':', "expected ':' after an object key"));
      }
      QT_TRY(st_skip_value(p));
      st_ws(p);
      if (st_peek(p, ',')) {
        p->i++;
        continue;
      }
      QT_TRY(st_expect(p, close, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'"));
      p->depth--;
      return QT_OK;
    }
  }
  static const char *lits[3] = {"true", "false", "null"};
  for (int k = 0; k < 3; k++) {
    size_t l = strlen(lits[k]);
    if (p->n - p->i >= l && memcmp(p->h + p->i, lits[k], l) == 0) {
      p->i += l;
      return QT_OK;
    }
  }
  bool is_uint;
  size_t len = st_number_span(p, &is_uint);
  if (len == 0) return st_syntax(p, "invalid value");
  p->i += len;
  return QT_OK;
}

static bool st_lit(st_parser *p, const char *lit) {
  size_t l = strlen(lit);
  if (p->n - p->i >= l && memcmp(p->h + p->i, lit, l) == 0) {
    p->i += l;
    return true;
  }
  return false;
}

/* A JSON array of unsigned integers: the shape (max QT_MAX_DIMS entries) or
 * data_offsets (exactly 2). */
static qt_status st_uint_array(st_parser *p, const char *what, const char *tname, uint64_t *vals,
                               int max, int *count) {
  char nb[128];
  st_ws(p);
  if (!st_peek(p, '[')) {
    return st_err(p, QT_ERR_FORMAT, "tensor '%s': \"%s\" is not an array (rule 5)", st_show(tname, nb), what);
  }
  p->i++;
  p->depth++; /* depth 3 at most, below the limit */
  int k = 0;
  st_ws(p);
  if (st_peek(p, ']')) {
    p->i++;
  } else {
    for (;;) {
      if (k == max) {
        if (max == 2) {
          return st_err(p, QT_ERR_FORMAT, "tensor '%s': \"data_offsets\" has more than 2 entries (rule 5)",
                        st_show(tname, nb));
        }
        return st_err(p, QT_ERR_UNSUPPORTED, "tensor '%s': shape has more than %d dimensions; "
                      "qlora-train supports at most %d", st_show(tname, nb), QT_MAX_DIMS, QT_MAX_DIMS);
      }
      QT_TRY(st_uint(p, what, tname, &vals[k]));
      k++;
      st_ws(p);
      if (st_peek(p, ',')) {
        p->i++;
        continue;
      }
      QT_TRY(st_expect(p, ']', "expected ',' or ']'"));
      break;
    }
  }
  p->depth--;
  *count = k;
  return QT_OK;
}

static qt_status st_push_entry(st_parser *p, qt_st_entry *e) {
  if (p->n_ents == p->cap_ents) {
    size_t cap = p->cap_ents ? 2 * p->cap_ents : 16;
    qt_st_entry *ne = realloc(p->ents, cap * sizeof *ne);
    if (!ne) return qt_fail(QT_ERR_NOMEM, "%s: out of memory parsing the header", p->label);
    p->ents = ne;
    p->cap_ents = cap;
  }
  p->ents[p->n_ents++] = *e;
  return QT_OK;
}

/* One tensor entry: {"dtype": S, "shape": [..], "data_offsets": [b, e], ...}.
 * The name is owned by the caller until the entry is pushed. */
static qt_status st_tensor(st_parser *p, char *name) {
  char nb[128];
  qt_st_entry e;
  memset(&e, 0, sizeof e);
  e.name = name;
  st_ws(p);
  if (!st_peek(p, '{')) {
    return st_err(p, QT_ERR_FORMAT, "tensor '%s': entry is not a JSON object (rule 5)", st_show(name, nb));
  }
  p->i++;
  p->depth++;
  bool have_dtype = false, have_shape = false, have_offsets = false;
  uint64_t shape[QT_MAX_DIMS], offs[2];
  int ndim = 0, noffs = 0;
  st_ws(p);
  if (st_peek(p, '}')) {
    p->i++;
  } else {
    for (;;) {
      char *key = NULL;
      size_t klen;
      QT_TRY(st_string(p, &key, &klen));
      qt_status s = st_expect(p, ':', "expected ':' after an object key");
      bool dup = false;
      if (s == QT_OK && strcmp(key, "dtype") == 0 && klen == 5) {
        if (!(dup = have_dtype)) {
          have_dtype = true;
          char *dt = NULL;
          size_t dlen = 0;
          st_ws(p);
          if (!st_peek(p, '"')) {
            s = st_err(p, QT_ERR_FORMAT, "tensor '%s': \"dtype\" is not a string (rule 5)", st_show(name, nb));
          } else if ((s = st_string(p, &dt, &dlen)) == QT_OK) {
            if (strlen(dt) != dlen || !qt_dtype_from_name(dt, &e.dtype)) {
              char db[128];
              s = st_err(p, QT_ERR_FORMAT, "tensor '%s': unknown dtype '%s' (rule 5)", st_show(name, nb),
                         st_show(dt, db));
            }
            free(dt);
          }
        }
      } else if (s == QT_OK && strcmp(key, "shape") == 0 && klen == 5) {
        if (!(dup = have_shape)) {
          have_shape = true;
          s = st_uint_array(p, "shape", name, shape, QT_MAX_DIMS, &ndim);
        }
      } else if (s == QT_OK && strcmp(key, "data_offsets") == 0 && klen == 12) {
        if (!(dup = have_offsets)) {
          have_offsets = true;
          s = st_uint_array(p, "data_offsets", name, offs, 2, &noffs);
          if (s == QT_OK && noffs != 2) {
            s = st_err(p, QT_ERR_FORMAT, "tensor '%s': \"data_offsets\" has %d entries, needs 2 (rule 5)",
                       st_show(name, nb), noffs);
          }
        }
      } else if (s == QT_OK) {
        s = st_skip_value(p); /* the reference ignores unknown fields */
      }
      if (s == QT_OK && dup) {
        s = st_err(p, QT_ERR_FORMAT, "tensor '%s': duplicate field \"%s\" (rule 5)", st_show(name, nb), key);
      }
      free(key);
      QT_TRY(s);
      st_ws(p);
      if (st_peek(p, ',')) {
        p->i++;
        continue;
      }
      QT_TRY(st_expect(p, '}', "expected ',' or '}'"));
      break;
    }
  }
  p->depth--;
  const char *missing = !have_dtype ? "dtype" : !have_shape ? "shape" : !have_offsets ? "data_offsets" : NULL;
  if (missing) {
    return st_err(p, QT_ERR_FORMAT, "tensor '%s': missing field \"%s\" (rule 5)", st_show(name, nb), missing);
  }
  for (int k = 0; k < 2; k++) {
    if (offs[k] > QT_ST_MAX_OFFSET) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': data_offsets value %llu exceeds 2^53",
                    st_show(name, nb), (unsigned long long)offs[k]);
    }
  }
  /* Rule 7: element count and bit count with checked multiplication. */
  uint64_t numel = 1;
  for (int k = 0; k < ndim; k++) {
    if (shape[k] != 0 && numel > UINT64_MAX / shape[k]) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': shape element count overflows 64 bits (rule 7)",
                    st_show(name, nb));
    }
    numel *= shape[k];
  }
  unsigned bits = qt_dtype_bits(e.dtype);
  if (numel > UINT64_MAX / bits) {
    return st_err(p, QT_ERR_FORMAT, "tensor '%s': shape bit count overflows 64 bits (rule 7)", st_show(name, nb));
  }
  for (int k = 0; k < ndim; k++) {
    if (shape[k] > (uint64_t)INT64_MAX) {
      return st_err(p, QT_ERR_UNSUPPORTED, "tensor '%s': dimension %d is %llu, beyond 2^63-1", st_show(name, nb),
                    k, (unsigned long long)shape[k]);
    }
    e.shape[k] = (int64_t)shape[k];
  }
  e.ndim = ndim;
  e.begin = offs[0];
  e.end = offs[1];
  return st_push_entry(p, &e);
}

static qt_status st_metadata(st_parser *p) {
  char nb[128];
  if (p->seen_meta) return st_err(p, QT_ERR_FORMAT, "duplicate \"__metadata__\" entry (rule 5)");
  p->seen_meta = true;
  st_ws(p);
  if (st_lit(p, "null")) return QT_OK; /* Option<HashMap> in the reference: null is None */
  if (!st_peek(p, '{')) return st_err(p, QT_ERR_FORMAT, "\"__metadata__\" is not an object of strings (rule 5)");
  p->i++;
  p->depth++;
  st_ws(p);
  if (st_peek(p, '}')) {
    p->i++;
    p->depth--;
    return QT_OK;
  }
  for (;;) {
    char *k = NULL, *v = NULL;
    size_t klen, vlen;
    QT_TRY(st_string(p, &k, &klen));
    qt_status s = st_expect(p, ':', "expected ':' after an object key");
    if (s == QT_OK) {
      st_ws(p);
      if (!st_peek(p, '"')) {
        s = st_err(p, QT_ERR_FORMAT, "\"__metadata__\" value for key '%s' is not a string (rule 5)",
                   st_show(k, nb));
      } else {
        s = st_string(p, &v, &vlen);
      }
    }
    if (s == QT_OK && (strlen(k) != klen || strlen(v) != vlen)) {
      s = st_err(p, QT_ERR_UNSUPPORTED, "\"__metadata__\" key '%s' or its value contains U+0000", st_show(k, nb));
    }
    for (size_t j = 0; s == QT_OK && j < p->n_meta; j++) {
      if (strcmp(p->mk[j], k) == 0) {
        s = st_err(p, QT_ERR_FORMAT, "duplicate \"__metadata__\" key '%s' (rule 5)", st_show(k, nb));
      }
    }
    if (s == QT_OK && p->n_meta == p->cap_meta) {
      size_t cap = p->cap_meta ? 2 * p->cap_meta : 8;
      char **nk = realloc(p->mk, cap * sizeof *nk);
      if (nk) p->mk = nk;
      char **nv = nk ? realloc(p->mv, cap * sizeof *nv) : NULL;
      if (nv) p->mv = nv;
      if (!nk || !nv) s = qt_fail(QT_ERR_NOMEM, "%s: out of memory parsing the header", p->label);
      else p->cap_meta = cap;
    }
    if (s != QT_OK) {
      free(k);
      free(v);
      return s;
    }
    p->mk[p->n_meta] = k;
    p->mv[p->n_meta] = v;
    p->n_meta++;
    st_ws(p);
    if (st_peek(p, ',')) {
      p->i++;
      continue;
    }
    QT_TRY(st_expect(p, '}', "expected ',' or '}'"));
    p->depth--;
    return QT_OK;
  }
}

static qt_status st_header(st_parser *p) {
  char nb[128];
  st_ws(p); /* leading whitespace: accepted since safetensors PR #686 */
  if (p->i >= p->n) return st_err(p, QT_ERR_FORMAT, "header is empty or only whitespace (rule 5)");
  if (p->h[p->i] != '{') return st_syntax(p, "the header is not a JSON object");
  p->i++;
  p->depth = 1;
  st_ws(p);
  if (st_peek(p, '}')) {
    p->i++;
  } else {
    for (;;) {
      char *key = NULL;
      size_t klen;
      QT_TRY(st_string(p, &key, &klen));
      qt_status s = st_expect(p, ':', "expected ':' after an object key");
      if (s == QT_OK && strcmp(key, "__metadata__") == 0 && klen == 12) {
        s = st_metadata(p);
      } else if (s == QT_OK && strlen(key) != klen) {
        s = st_err(p, QT_ERR_UNSUPPORTED, "tensor name '%s' contains U+0000", st_show(key, nb));
      } else if (s == QT_OK) {
        s = st_tensor(p, key);
        if (s == QT_OK) key = NULL; /* owned by the entry now */
      }
      free(key);
      QT_TRY(s);
      st_ws(p);
      if (st_peek(p, ',')) {
        p->i++;
        continue;
      }
      QT_TRY(st_expect(p, '}', "expected ',' or '}'"));
      break;
    }
  }
  st_ws(p); /* trailing space padding (the reference writer pads with 0x20) */
  if (p->i != p->n) return st_syntax(p, "trailing characters after the JSON object");
  return QT_OK;
}

static int st_cmp_name(const void *a, const void *b) {
  const qt_st_entry *x = a, *y = b;
  return strcmp(x->name, y->name);
}

static int st_cmp_offsets(const void *a, const void *b) {
  const qt_st_entry *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

static void st_parser_free(st_parser *p) {
  for (size_t k = 0; k < p->n_ents; k++) free(p->ents[k].name);
  free(p->ents);
  for (size_t k = 0; k < p->n_meta; k++) {
    free(p->mk[k]);
    free(p->mv[k]);
  }
  free(p->mk);
  free(p->mv);
}

/* Rules 6-10 over the parsed entries (sorted by offsets here). */
static qt_status st_validate(st_parser *p, uint64_t data_len) {
  char nb[128], sb[160];
  if (p->n_ents > 1) {
    qsort(p->ents, p->n_ents, sizeof *p->ents, st_cmp_name);
    for (size_t k = 1; k < p->n_ents; k++) {
      if (strcmp(p->ents[k - 1].name, p->ents[k].name) == 0) {
        return st_err(p, QT_ERR_FORMAT, "duplicate tensor name '%s'", st_show(p->ents[k].name, nb));
      }
    }
    qsort(p->ents, p->n_ents, sizeof *p->ents, st_cmp_offsets);
  }
  uint64_t start = 0;
  for (size_t k = 0; k < p->n_ents; k++) {
    const qt_st_entry *e = &p->ents[k];
    const char *nm = st_show(e->name, nb);
    if (e->end < e->begin) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': data_offsets begin %llu is after end %llu (rule 6)", nm,
                    (unsigned long long)e->begin, (unsigned long long)e->end);
    }
    if (e->begin < start) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] overlap the previous tensor, "
                    "which ends at %llu (rule 6)", nm, (unsigned long long)e->begin,
                    (unsigned long long)e->end, (unsigned long long)start);
    }
    if (e->begin > start) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] leave a gap of %llu unindexed "
                    "bytes before the tensor (rule 6)", nm, (unsigned long long)e->begin,
                    (unsigned long long)e->end, (unsigned long long)(e->begin - start));
    }
    start = e->end;
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) numel *= (uint64_t)e->shape[d]; /* checked at parse time */
    uint64_t nbits = numel * qt_dtype_bits(e->dtype);
    st_shape_str(e->shape, e->ndim, sb, sizeof sb);
    if (nbits % 8 != 0) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': %llu elements of %s (%u bits each) do not fill whole "
                    "bytes (rule 8)", nm, (unsigned long long)numel, qt_dtype_name(e->dtype),
                    qt_dtype_bits(e->dtype));
    }
    if (e->end - e->begin != nbits / 8) {
      return st_err(p, QT_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] span %llu bytes but %s %s needs "
                    "%llu (rule 9)", nm, (unsigned long long)e->begin, (unsigned long long)e->end,
                    (unsigned long long)(e->end - e->begin), qt_dtype_name(e->dtype), sb,
                    (unsigned long long)(nbits / 8));
    }
  }
  if (start != data_len) {
    if (start < data_len) {
      return st_err(p, QT_ERR_FORMAT, "%llu trailing bytes after the last tensor (data buffer %llu bytes, "
                    "tensors cover %llu); the buffer must be fully indexed (rule 10)",
                    (unsigned long long)(data_len - start), (unsigned long long)data_len,
                    (unsigned long long)start);
    }
    return st_err(p, QT_ERR_FORMAT, "file is truncated: tensors need %llu data bytes but only %llu follow "
                  "the header (rule 10)", (unsigned long long)start, (unsigned long long)data_len);
  }
  return QT_OK;
}

qt_status qt_st_parse(const uint8_t *buf, size_t len, const char *label, qt_st_file *out) {
  memset(out, 0, sizeof *out);
  st_parser p;
  memset(&p, 0, sizeof p);
  p.label = label;
  if (len < 8) {
    return st_err(&p, QT_ERR_FORMAT, "file is %zu bytes, shorter than the 8-byte header length field "
                  "(rule 1)", len);
  }
  uint64_t n = 0;
  for (int k = 7; k >= 0; k--) n = (n << 8) | buf[k];
  if (n > QT_ST_MAX_HEADER) {
    return st_err(&p, QT_ERR_FORMAT, "header length %llu exceeds the %d-byte limit (rule 2)",
                  (unsigned long long)n, QT_ST_MAX_HEADER);
  }
  if (n > len - 8) {
    return st_err(&p, QT_ERR_FORMAT, "header length %llu runs past the end of the %zu-byte file (rule 3)",
                  (unsigned long long)n, len);
  }
  p.h = buf + 8;
  p.n = (size_t)n;
  size_t bad = st_utf8_check(p.h, p.n);
  if (bad != p.n) {
    return st_err(&p, QT_ERR_FORMAT, "header is not valid UTF-8 at header byte %zu (rule 4)", bad);
  }
  qt_status s = st_header(&p);
  if (s == QT_OK) s = st_validate(&p, (uint64_t)(len - 8 - p.n));
  if (s != QT_OK) {
    st_parser_free(&p);
    return s;
  }
  out->path = st_strndup(label, strlen(label));
  if (!out->path) {
    st_parser_free(&p);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", label);
  }
  out->header_len = n;
  out->data = buf + 8 + p.n;
  out->data_len = (uint64_t)(len - 8 - p.n);
  out->n_tensors = p.n_ents;
  out->tensors = p.ents;
  for (size_t k = 0; k < p.n_ents; k++) out->tensors[k].data = out->data + p.ents[k].begin;
  out->n_meta = p.n_meta;
  out->meta_keys = p.mk;
  out->meta_vals = p.mv;
  return QT_OK;
}

qt_status qt_st_open(const char *path, qt_st_file *out) {
  memset(out, 0, sizeof *out);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return qt_fail(QT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return qt_fail(QT_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return qt_fail(QT_ERR_IO, "%s: not a regular file", path);
  }
  size_t len = (size_t)st.st_size;
  void *map = NULL;
  if (len > 0) {
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      int e = errno;
      close(fd);
      return qt_fail(QT_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, len, strerror(e));
    }
  }
  close(fd); /* the mapping stays valid */
  static const uint8_t empty[1] = {0};
  qt_status s = qt_st_parse(map ? map : empty, len, path, out);
  if (s != QT_OK) {
    if (map) munmap(map, len);
    return s;
  }
  out->map = map;
  out->map_len = len;
  return QT_OK;
}

void qt_st_close(qt_st_file *f) {
  if (!f) return;
  for (size_t k = 0; k < f->n_tensors; k++) free(f->tensors[k].name);
  free(f->tensors);
  for (size_t k = 0; k < f->n_meta; k++) {
    free(f->meta_keys[k]);
    free(f->meta_vals[k]);
  }
  free(f->meta_keys);
  free(f->meta_vals);
  if (f->map) munmap(f->map, f->map_len);
  free(f->path);
  memset(f, 0, sizeof *f);
}

const qt_st_entry *qt_st_find(const qt_st_file *f, const char *name) {
  for (size_t k = 0; k < f->n_tensors; k++) {
    if (strcmp(f->tensors[k].name, name) == 0) return &f->tensors[k];
  }
  return NULL;
}

const char *qt_st_meta(const qt_st_file *f, const char *key) {
  for (size_t k = 0; k < f->n_meta; k++) {
    if (strcmp(f->meta_keys[k], key) == 0) return f->meta_vals[k];
  }
  return NULL;
}

int64_t qt_st_entry_numel(const qt_st_entry *e) {
  int64_t n = 1;
  for (int k = 0; k < e->ndim; k++) n *= e->shape[k];
  return n;
}

qt_tensor qt_st_entry_tensor(const qt_st_entry *e) {
  return qt_tensor_make(e->dtype, QT_DEV_CPU, e->ndim, e->shape, (void *)(uintptr_t)e->data);
}

/* IEEE 754 binary16 -> binary32, exact (every half is a float): normal,
 * subnormal (renormalised), zero, inf and NaN (payload kept). */
static float st_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {
      uint32_t e = 0;
      do {
        man <<= 1;
        e++;
      } while (!(man & 0x400u));
      bits = sign | ((127 - 15 + 1 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

qt_status qt_st_entry_to_f32(const qt_st_entry *e, float *dst) {
  int64_t n = qt_st_entry_numel(e);
  const uint8_t *s = e->data;
  switch (e->dtype) {
    case QT_F32:
      memcpy(dst, s, (size_t)n * 4);
      return QT_OK;
    case QT_F16:
    case QT_BF16:
      for (int64_t k = 0; k < n; k++) {
        uint16_t v = (uint16_t)(s[2 * k] | (s[2 * k + 1] << 8)); /* little-endian */
        if (e->dtype == QT_F16) {
          dst[k] = st_f16_to_f32(v);
        } else {
          uint32_t bits = (uint32_t)v << 16; /* bf16 is the top half of an f32 */
          memcpy(&dst[k], &bits, 4);
        }
      }
      return QT_OK;
    case QT_F64:
      for (int64_t k = 0; k < n; k++) {
        double d;
        memcpy(&d, s + 8 * k, 8);
        dst[k] = (float)d; /* round to nearest even */
      }
      return QT_OK;
    default:
      return qt_fail(QT_ERR_UNSUPPORTED, "tensor '%s': dtype %s cannot be converted to F32", e->name,
                     qt_dtype_name(e->dtype));
  }
}

/* ---- sharded model directories ------------------------------------------------ */

static char *st_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *s = malloc(a + b + 2);
  if (!s) return NULL;
  memcpy(s, dir, a);
  s[a] = '/';
  memcpy(s + a + 1, name, b + 1);
  return s;
}

typedef struct {
  const char *name;
  const char *shard;
} st_map_item;

static int st_cmp_map(const void *a, const void *b) {
  return strcmp(((const st_map_item *)a)->name, ((const st_map_item *)b)->name);
}
static int st_cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct {
  const qt_st_entry *e;
  size_t file;
} st_ref;

static int st_cmp_ref(const void *a, const void *b) {
  const st_ref *x = a, *y = b;
  int c = strcmp(x->e->name, y->e->name);
  if (c) return c;
  return x->file < y->file ? -1 : x->file > y->file;
}

/* Builds the by-name table over all files; rejects a name in two files. */
static qt_status st_model_index(qt_st_model *m, const char *label) {
  size_t total = 0;
  for (size_t f = 0; f < m->n_files; f++) total += m->files[f].n_tensors;
  st_ref *refs = malloc((total ? total : 1) * sizeof *refs);
  m->by_name = malloc((total ? total : 1) * sizeof *m->by_name);
  m->file_of = malloc((total ? total : 1) * sizeof *m->file_of);
  if (!refs || !m->by_name || !m->file_of) {
    free(refs);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", label);
  }
  size_t k = 0;
  for (size_t f = 0; f < m->n_files; f++) {
    for (size_t t = 0; t < m->files[f].n_tensors; t++) refs[k++] = (st_ref){&m->files[f].tensors[t], f};
  }
  qsort(refs, total, sizeof *refs, st_cmp_ref);
  for (k = 0; k < total; k++) {
    if (k > 0 && strcmp(refs[k - 1].e->name, refs[k].e->name) == 0) {
      char nb[128];
      qt_status s = qt_fail(QT_ERR_FORMAT, "%s: tensor '%s' appears in two shards, %s and %s; a sharded "
                            "model must store each tensor once", label, st_show(refs[k].e->name, nb),
                            m->files[refs[k - 1].file].path, m->files[refs[k].file].path);
      free(refs);
      return s;
    }
    m->by_name[k] = refs[k].e;
    m->file_of[k] = refs[k].file;
  }
  m->n_tensors = total;
  free(refs);
  return QT_OK;
}

static size_t st_model_lookup(const qt_st_model *m, const char *name) {
  size_t lo = 0, hi = m->n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(m->by_name[mid]->name, name);
    if (c == 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return SIZE_MAX;
}

/* A shard file name from weight_map: a plain file name inside the directory. */
static bool st_shard_name_ok(const char *s) {
  if (s[0] == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
  return strchr(s, '/') == NULL && strchr(s, '\\') == NULL;
}

static qt_status st_model_sharded(const char *dir, const char *index_path, qt_st_model *m) {
  char nb[128];
  uint8_t *text = NULL;
  size_t len = 0;
  QT_TRY(qt_fs_read_file(index_path, 64u << 20, &text, &len));
  if (memchr(text, 0, len) || st_utf8_check(text, len) != len) {
    free(text);
    return qt_fail(QT_ERR_FORMAT, "%s: not UTF-8 JSON text", index_path);
  }
  /* require_null_terminated=1: nothing but whitespace may follow the value. */
  cJSON *root = cJSON_ParseWithLengthOpts((const char *)text, len + 1, NULL, 1);
  free(text);
  if (!root) return qt_fail(QT_ERR_FORMAT, "%s: not valid JSON", index_path);
  qt_status s = QT_OK;
  const cJSON *wm = NULL;
  size_t nwm = 0, nshards = 0;
  st_map_item *items = NULL;
  const char **shards = NULL;
  if (!cJSON_IsObject(root)) {
    s = qt_fail(QT_ERR_FORMAT, "%s: not a JSON object", index_path);
    goto done;
  }
  /* Walk the list, case-sensitively, and refuse a second weight_map. */
  for (const cJSON *c = root->child; c; c = c->next) {
    if (c->string && strcmp(c->string, "weight_map") == 0) {
      if (wm) {
        s = qt_fail(QT_ERR_FORMAT, "%s: duplicate \"weight_map\"", index_path);
        goto done;
      }
      wm = c;
    }
  }
  if (!wm || !cJSON_IsObject(wm)) {
    s = qt_fail(QT_ERR_FORMAT, "%s: missing \"weight_map\" object", index_path);
    goto done;
  }
  for (const cJSON *c = wm->child; c; c = c->next) nwm++;
  items = malloc((nwm ? nwm : 1) * sizeof *items);
  shards = malloc((nwm ? nwm : 1) * sizeof *shards);
  if (!items || !shards) {
    s = qt_fail(QT_ERR_NOMEM, "%s: out of memory", index_path);
    goto done;
  }
  nwm = 0;
  for (const cJSON *c = wm->child; c; c = c->next) {
    if (!cJSON_IsString(c) || !c->valuestring) {
      s = qt_fail(QT_ERR_FORMAT, "%s: weight_map value for '%s' is not a string", index_path,
                  st_show(c->string, nb));
      goto done;
    }
    if (!st_shard_name_ok(c->valuestring)) {
      s = qt_fail(QT_ERR_FORMAT, "%s: weight_map maps '%s' to shard '%s', which is not a plain file name in "
                  "the model directory", index_path, st_show(c->string, nb), c->valuestring);
      goto done;
    }
    items[nwm++] = (st_map_item){c->string, c->valuestring};
    shards[nshards++] = c->valuestring;
  }
  if (nwm == 0) {
    s = qt_fail(QT_ERR_FORMAT, "%s: weight_map is empty", index_path);
    goto done;
  }
  qsort(items, nwm, sizeof *items, st_cmp_map);
  for (size_t k = 1; k < nwm; k++) {
    if (strcmp(items[k - 1].name, items[k].name) == 0) {
      s = qt_fail(QT_ERR_FORMAT, "%s: weight_map lists tensor '%s' twice", index_path,
                  st_show(items[k].name, nb));
      goto done;
    }
  }
  qsort(shards, nshards, sizeof *shards, st_cmp_str);
  size_t u = 0;
  for (size_t k = 0; k < nshards; k++) {
    if (u == 0 || strcmp(shards[u - 1], shards[k]) != 0) shards[u++] = shards[k];
  }
  nshards = u;
  m->files = calloc(nshards, sizeof *m->files);
  if (!m->files) {
    s = qt_fail(QT_ERR_NOMEM, "%s: out of memory", index_path);
    goto done;
  }
  for (size_t k = 0; k < nshards; k++) {
    char *sp = st_join(dir, shards[k]);
    if (!sp) {
      s = qt_fail(QT_ERR_NOMEM, "%s: out of memory", index_path);
      goto done;
    }
    s = qt_st_open(sp, &m->files[k]);
    free(sp);
    if (s != QT_OK) goto done;
    m->n_files = k + 1;
  }
  if ((s = st_model_index(m, index_path)) != QT_OK) goto done;
  for (size_t k = 0; k < nwm; k++) {
    size_t at = st_model_lookup(m, items[k].name);
    if (at == SIZE_MAX) {
      s = qt_fail(QT_ERR_FORMAT, "%s: weight_map maps tensor '%s' to %s, but no shard contains it", index_path,
                  st_show(items[k].name, nb), items[k].shard);
      goto done;
    }
    /* files[i] was opened from shards[i] */
    if (strcmp(shards[m->file_of[at]], items[k].shard) != 0) {
      s = qt_fail(QT_ERR_FORMAT, "%s: weight_map maps tensor '%s' to %s, but it is stored in %s", index_path,
                  st_show(items[k].name, nb), items[k].shard, shards[m->file_of[at]]);
      goto done;
    }
  }
  if (m->n_tensors != nwm) {
    /* Every map entry matched a distinct tensor, so some tensor is unlisted. */
    for (size_t k = 0; k < m->n_tensors; k++) {
      st_map_item key = {m->by_name[k]->name, NULL};
      if (!bsearch(&key, items, nwm, sizeof *items, st_cmp_map)) {
        s = qt_fail(QT_ERR_FORMAT, "%s: tensor '%s' in %s is not listed in weight_map", index_path,
                    st_show(key.name, nb), m->files[m->file_of[k]].path);
        goto done;
      }
    }
  }
done:
  free(items);
  free(shards);
  cJSON_Delete(root);
  return s;
}

qt_status qt_st_model_open(const char *path, qt_st_model *out) {
  memset(out, 0, sizeof *out);
  struct stat st;
  if (stat(path, &st) != 0) return qt_fail(QT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
  qt_status s;
  if (S_ISDIR(st.st_mode)) {
    char *index = st_join(path, "model.safetensors.index.json");
    char *single = st_join(path, "model.safetensors");
    if (!index || !single) {
      free(index);
      free(single);
      return qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
    }
    if (stat(index, &st) == 0) {
      s = st_model_sharded(path, index, out);
    } else if (stat(single, &st) == 0) {
      out->files = calloc(1, sizeof *out->files);
      s = out->files ? qt_st_open(single, &out->files[0]) : qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
      if (s == QT_OK) {
        out->n_files = 1;
        s = st_model_index(out, single);
      }
    } else {
      s = qt_fail(QT_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json is in this "
                  "directory", path);
    }
    free(index);
    free(single);
  } else {
    out->files = calloc(1, sizeof *out->files);
    s = out->files ? qt_st_open(path, &out->files[0]) : qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
    if (s == QT_OK) {
      out->n_files = 1;
      s = st_model_index(out, path);
    }
  }
  if (s != QT_OK) qt_st_model_close(out);
  return s;
}

void qt_st_model_close(qt_st_model *m) {
  if (!m) return;
  for (size_t k = 0; k < m->n_files; k++) qt_st_close(&m->files[k]);
  free(m->files);
  free(m->by_name);
  free(m->file_of);
  memset(m, 0, sizeof *m);
}

const qt_st_entry *qt_st_model_find(const qt_st_model *m, const char *name) {
  size_t at = st_model_lookup(m, name);
  return at == SIZE_MAX ? NULL : m->by_name[at];
}

/* ---- writer ------------------------------------------------------------------ */

typedef struct {
  char *p;
  size_t n, cap;
  bool oom;
} st_buf;

static void st_put(st_buf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void st_puts(st_buf *b, const char *s) { st_put(b, s, strlen(s)); }

/* A JSON string escaped as serde_json does (the reference writer): \" \\ \b
 * \f \n \r \t, other controls as \u00xx with lower-case hex, '/' and
 * non-ASCII bytes unescaped. */
static void st_put_json_str(st_buf *b, const char *s) {
  st_put(b, "\"", 1);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    char esc[8];
    switch (*c) {
      case '"': st_put(b, "\\\"", 2); break;
      case '\\': st_put(b, "\\\\", 2); break;
      case '\b': st_put(b, "\\b", 2); break;
      case '\f': st_put(b, "\\f", 2); break;
      case '\n': st_put(b, "\\n", 2); break;
      case '\r': st_put(b, "\\r", 2); break;
      case '\t': st_put(b, "\\t", 2); break;
      default:
        if (*c < 0x20) {
          snprintf(esc, sizeof esc, "\\u%04x", *c);
          st_put(b, esc, 6);
        } else {
          st_put(b, (const char *)c, 1);
        }
    }
  }
  st_put(b, "\"", 1);
}

typedef struct {
  const qt_st_write_tensor *t;
  uint64_t nbytes;
} st_wt;

static int st_cmp_layout(const void *a, const void *b) {
  const st_wt *x = a, *y = b;
  int rx = st_dtype_rank(x->t->dtype), ry = st_dtype_rank(y->t->dtype);
  if (rx != ry) return rx > ry ? -1 : 1; /* descending dtype */
  return strcmp(x->t->name, y->t->name);
}

/* Validates the arguments, sorts into the reference layout and builds the
 * padded header. On success *order (n entries, owned) and *hdr (owned). */
static qt_status st_prepare(const qt_st_write_tensor *tensors, size_t n, const char *const *mk,
                            const char *const *mv, size_t n_meta, st_wt **order, st_buf *hdr,
                            uint64_t *data_len) {
  char nb[128];
  *order = NULL;
  memset(hdr, 0, sizeof *hdr);
  st_wt *w = malloc((n ? n : 1) * sizeof *w);
  if (!w) return qt_fail(QT_ERR_NOMEM, "safetensors writer: out of memory");
  qt_status s = QT_OK;
  for (size_t k = 0; k < n && s == QT_OK; k++) {
    const qt_st_write_tensor *t = &tensors[k];
    w[k].t = t;
    if (!t->name || st_utf8_check((const uint8_t *)t->name, strlen(t->name)) != strlen(t->name) ||
        strcmp(t->name, "__metadata__") == 0) {
      s = qt_fail(QT_ERR_INVALID, "safetensors writer: tensor %zu has no name, a non-UTF-8 name or the "
                  "reserved name __metadata__", k);
      break;
    }
    if ((unsigned)t->dtype >= QT_DTYPE_COUNT || t->ndim < 0 || t->ndim > QT_MAX_DIMS) {
      s = qt_fail(QT_ERR_INVALID, "safetensors writer: tensor '%s': bad dtype or rank", st_show(t->name, nb));
      break;
    }
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim && s == QT_OK; d++) {
      if (t->shape[d] < 0 || (t->shape[d] != 0 && numel > UINT64_MAX / (uint64_t)t->shape[d])) {
        s = qt_fail(QT_ERR_INVALID, "safetensors writer: tensor '%s': negative or overflowing shape",
                    st_show(t->name, nb));
      }
      numel *= (uint64_t)t->shape[d];
    }
    if (s != QT_OK) break;
    unsigned bits = qt_dtype_bits(t->dtype);
    if (numel > UINT64_MAX / bits || (numel * bits) % 8 != 0) {
      s = qt_fail(QT_ERR_INVALID, "safetensors writer: tensor '%s': %llu elements of %s do not fill whole bytes",
                  st_show(t->name, nb), (unsigned long long)numel, qt_dtype_name(t->dtype));
      break;
    }
    w[k].nbytes = numel * bits / 8;
    if (w[k].nbytes > 0 && !t->data) {
      s = qt_fail(QT_ERR_INVALID, "safetensors writer: tensor '%s' has no data", st_show(t->name, nb));
    }
  }
  if (s == QT_OK && n > 1) {
    qsort(w, n, sizeof *w, st_cmp_layout);
    const char **names = malloc(n * sizeof *names);
    if (!names) {
      s = qt_fail(QT_ERR_NOMEM, "safetensors writer: out of memory");
    } else {
      for (size_t k = 0; k < n; k++) names[k] = tensors[k].name;
      qsort(names, n, sizeof *names, st_cmp_str);
      for (size_t k = 1; k < n && s == QT_OK; k++) {
        if (strcmp(names[k - 1], names[k]) == 0) {
          s = qt_fail(QT_ERR_INVALID, "safetensors writer: duplicate tensor name '%s'", st_show(names[k], nb));
        }
      }
      free(names);
    }
  }
  for (size_t a = 0; s == QT_OK && a < n_meta; a++) {
    if (!mk[a] || !mv[a] || st_utf8_check((const uint8_t *)mk[a], strlen(mk[a])) != strlen(mk[a]) ||
        st_utf8_check((const uint8_t *)mv[a], strlen(mv[a])) != strlen(mv[a])) {
      s = qt_fail(QT_ERR_INVALID, "safetensors writer: metadata entry %zu is missing or not UTF-8", a);
    }
    for (size_t b2 = a + 1; s == QT_OK && b2 < n_meta; b2++) {
      if (strcmp(mk[a], mk[b2]) == 0) {
        s = qt_fail(QT_ERR_INVALID, "safetensors writer: duplicate metadata key '%s'", st_show(mk[a], nb));
      }
    }
  }
  if (s != QT_OK) {
    free(w);
    return s;
  }
  /* Header as serde_json writes the reference Metadata: __metadata__ first,
   * then tensors in layout order, no spaces. */
  st_put(hdr, "{", 1);
  bool first = true;
  if (n_meta > 0) {
    st_puts(hdr, "\"__metadata__\":{");
    for (size_t a = 0; a < n_meta; a++) {
      if (a) st_put(hdr, ",", 1);
      st_put_json_str(hdr, mk[a]);
      st_put(hdr, ":", 1);
      st_put_json_str(hdr, mv[a]);
    }
    st_put(hdr, "}", 1);
    first = false;
  }
  uint64_t off = 0;
  char num[64];
  for (size_t k = 0; k < n; k++) {
    const qt_st_write_tensor *t = w[k].t;
    if (!first) st_put(hdr, ",", 1);
    first = false;
    st_put_json_str(hdr, t->name);
    st_puts(hdr, ":{\"dtype\":\"");
    st_puts(hdr, qt_dtype_name(t->dtype));
    st_puts(hdr, "\",\"shape\":[");
    for (int d = 0; d < t->ndim; d++) {
      snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
      st_puts(hdr, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
             (unsigned long long)(off + w[k].nbytes));
    st_puts(hdr, num);
    off += w[k].nbytes;
  }
  st_put(hdr, "}", 1);
  while (!hdr->oom && hdr->n % 8 != 0) st_put(hdr, " ", 1); /* reference pads with spaces to 8 */
  if (hdr->oom) {
    free(hdr->p);
    free(w);
    memset(hdr, 0, sizeof *hdr);
    return qt_fail(QT_ERR_NOMEM, "safetensors writer: out of memory building the header");
  }
  if (hdr->n > QT_ST_MAX_HEADER) {
    free(hdr->p);
    free(w);
    memset(hdr, 0, sizeof *hdr);
    return qt_fail(QT_ERR_INVALID, "safetensors writer: header would be larger than %d bytes", QT_ST_MAX_HEADER);
  }
  *order = w;
  *data_len = off;
  return QT_OK;
}

static void st_le64(uint64_t v, uint8_t out[8]) {
  for (int k = 0; k < 8; k++) out[k] = (uint8_t)(v >> (8 * k));
}

qt_status qt_st_serialize(const qt_st_write_tensor *tensors, size_t n_tensors, const char *const *meta_keys,
                          const char *const *meta_vals, size_t n_meta, uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  st_wt *w;
  st_buf hdr;
  uint64_t data_len;
  QT_TRY(st_prepare(tensors, n_tensors, meta_keys, meta_vals, n_meta, &w, &hdr, &data_len));
  if (data_len > SIZE_MAX - 8 - hdr.n) {
    free(w);
    free(hdr.p);
    return qt_fail(QT_ERR_NOMEM, "safetensors writer: %llu data bytes do not fit in memory",
                   (unsigned long long)data_len);
  }
  size_t total = 8 + hdr.n + (size_t)data_len;
  uint8_t *b = malloc(total);
  if (!b) {
    free(w);
    free(hdr.p);
    return qt_fail(QT_ERR_NOMEM, "safetensors writer: cannot allocate %zu bytes", total);
  }
  st_le64(hdr.n, b);
  memcpy(b + 8, hdr.p, hdr.n);
  size_t o = 8 + hdr.n;
  for (size_t k = 0; k < n_tensors; k++) {
    if (w[k].nbytes) memcpy(b + o, w[k].t->data, (size_t)w[k].nbytes);
    o += (size_t)w[k].nbytes;
  }
  free(w);
  free(hdr.p);
  *out = b;
  *out_len = total;
  return QT_OK;
}

qt_status qt_st_write(const char *path, const qt_st_write_tensor *tensors, size_t n_tensors,
                      const char *const *meta_keys, const char *const *meta_vals, size_t n_meta) {
  st_wt *w;
  st_buf hdr;
  uint64_t data_len;
  qt_status s = st_prepare(tensors, n_tensors, meta_keys, meta_vals, n_meta, &w, &hdr, &data_len);
  if (s != QT_OK) {
    qt_error_context("%s", path);
    return s;
  }
  qt_fs_atomic a;
  s = qt_fs_atomic_begin(&a, path);
  if (s == QT_OK) {
    uint8_t len8[8];
    st_le64(hdr.n, len8);
    s = qt_fs_atomic_write(&a, len8, 8);
    if (s == QT_OK) s = qt_fs_atomic_write(&a, hdr.p, hdr.n);
    for (size_t k = 0; k < n_tensors && s == QT_OK; k++) {
      if (w[k].nbytes) s = qt_fs_atomic_write(&a, w[k].t->data, (size_t)w[k].nbytes);
    }
    if (s == QT_OK) s = qt_fs_atomic_commit(&a);
    else qt_fs_atomic_abort(&a);
  }
  free(w);
  free(hdr.p);
  return s;
}

void qt_st_model_release(const qt_st_model *m, const qt_st_entry *e) {
  if (!m || !e || e->end <= e->begin) return;
  for (size_t k = 0; k < m->n_files; k++) {
    const qt_st_file *f = &m->files[k];
    const uint8_t *lo = f->map, *hi = lo ? lo + f->map_len : NULL;
    if (!lo || e->data < lo || e->data >= hi) continue;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return;
    uintptr_t a = (uintptr_t)e->data, b = a + (uintptr_t)(e->end - e->begin);
    uintptr_t start = (a + (uintptr_t)page - 1) & ~((uintptr_t)page - 1); /* whole pages inside */
    uintptr_t stop = b & ~((uintptr_t)page - 1);
    if (stop > start) (void)madvise((void *)start, stop - start, MADV_DONTNEED);
    return;
  }
}
