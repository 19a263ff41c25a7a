/* data/tokenizer.c — tokenizer.json (Hugging Face tokenizers) encode/decode.
 *
 * The pipeline mirrors tokenizers' TokenizerImpl::encode_single_sequence
 * (tokenizers/src/tokenizer/mod.rs): split the raw text on added tokens that
 * are not normalized, normalize the rest, split that on normalized added
 * tokens, pre-tokenize, run the model (BPE) on each pre-token. Decode mirrors
 * TokenizerImpl::decode: id -> token string (added tokens first), then the
 * decoder chain, joined with "". Each step cites the tokenizers file it
 * follows; behavior was checked against tokenizers 0.23.3 through the golden
 * fixtures in tests/golden/tokenizer/. */
#include "data/tokenizer.h"

#include "common/log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

/* ---------------------------------------------------------------- buffers */

static qt_status text_reserve(qt_text_buf *b, size_t need) {
  if (need + 1 <= b->cap) return QT_OK;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need + 1) cap *= 2;
  char *p = realloc(b->s, cap);
  if (!p) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", cap);
  b->s = p;
  b->cap = cap;
  return QT_OK;
}

static qt_status text_append(qt_text_buf *b, const char *s, size_t n) {
  QT_TRY(text_reserve(b, b->n + n));
  if (n) memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = '\0';
  return QT_OK;
}

void qt_text_buf_free(qt_text_buf *b) {
  free(b->s);
  b->s = NULL;
  b->n = b->cap = 0;
}

static qt_status ids_reserve(qt_token_ids *v, size_t need) {
  if (need <= v->cap) return QT_OK;
  size_t cap = v->cap ? v->cap : 64;
  while (cap < need) cap *= 2;
  int32_t *p = realloc(v->ids, cap * sizeof *p);
  if (!p) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (%zu ids)", cap);
  v->ids = p;
  v->cap = cap;
  return QT_OK;
}

static qt_status ids_push(qt_token_ids *v, int32_t id) {
  if (v->n == v->cap) QT_TRY(ids_reserve(v, v->n + 1));
  v->ids[v->n++] = id;
  return QT_OK;
}

void qt_token_ids_free(qt_token_ids *v) {
  free(v->ids);
  v->ids = NULL;
  v->n = v->cap = 0;
}

/* Generic growth for arrays of structs. */
static qt_status grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return QT_OK;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * elem);
  if (!q) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (%zu x %zu bytes)", c, elem);
  *p = q;
  *cap = c;
  return QT_OK;
}

/* First occurrence of needle[0..nn) (nn > 0) in h[0..hn), or NULL. */
static const char *find_bytes(const char *h, size_t hn, const char *needle, size_t nn) {
  if (nn == 0 || hn < nn) return NULL;
  const char *end = h + hn - nn;
  for (const char *p = h; p <= end; p++) {
    p = memchr(p, needle[0], (size_t)(end - p) + 1);
    if (!p) return NULL;
    if (memcmp(p, needle, nn) == 0) return p;
  }
  return NULL;
}

/* ------------------------------------------------------------------ UTF-8 */

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if ill-formed;
 * *bad receives the length of the maximal invalid subpart in that case
 * (Unicode 15 section 3.9, Table 3-7 "Well-Formed UTF-8 Byte Sequences";
 * "U+FFFD substitution of maximal subparts", the policy of Python's
 * "replace" error handler and Rust's from_utf8_lossy). */
static size_t utf8_valid_len(const unsigned char *s, size_t n, size_t *bad) {
  unsigned char b = s[0];
  if (b < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) need = 1;
  else if (b == 0xE0) { need = 2; lo = 0xA0; }
  else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) need = 2;
  else if (b == 0xED) { need = 2; hi = 0x9F; }
  else if (b == 0xF0) { need = 3; lo = 0x90; }
  else if (b >= 0xF1 && b <= 0xF3) need = 3;
  else if (b == 0xF4) { need = 3; hi = 0x8F; }
  else { *bad = 1; return 0; }
  if (n < 2 || s[1] < lo || s[1] > hi) { *bad = 1; return 0; }
  for (size_t k = 2; k <= need; k++) {
    if (k >= n || s[k] < 0x80 || s[k] > 0xBF) { *bad = k; return 0; }
  }
  return need + 1;
}

qt_status qt_utf8_sanitize(const char *s, size_t len, qt_text_buf *out, int *was_valid) {
  const unsigned char *u = (const unsigned char *)s;
  out->n = 0;
  QT_TRY(text_reserve(out, len));
  int valid = 1;
  size_t i = 0;
  while (i < len) {
    if (u[i] < 0x80) {
      size_t j = i + 1;
      while (j < len && u[j] < 0x80) j++;
      QT_TRY(text_append(out, s + i, j - i));
      i = j;
      continue;
    }
    size_t bad = 0, k = utf8_valid_len(u + i, len - i, &bad);
    if (k) {
      QT_TRY(text_append(out, s + i, k));
      i += k;
    } else {
      valid = 0;
      QT_TRY(text_append(out, "\xEF\xBF\xBD", 3));
      i += bad;
    }
  }
  if (out->s == NULL) QT_TRY(text_reserve(out, 0));
  out->s[out->n] = '\0';
  if (was_valid) *was_valid = valid;
  return QT_OK;
}

static int utf8_is_valid(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    if (u[i] < 0x80) { i++; continue; }
    size_t bad, k = utf8_valid_len(u + i, len - i, &bad);
    if (!k) return 0;
    i += k;
  }
  return 1;
}

/* Decodes the (valid) UTF-8 character at s; returns its length. */
static size_t utf8_decode(const unsigned char *s, int32_t *cp) {
  if (s[0] < 0x80) { *cp = s[0]; return 1; }
  if (s[0] < 0xE0) { *cp = ((s[0] & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
  if (s[0] < 0xF0) { *cp = ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F); return 3; }
  *cp = ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
  return 4;
}

static size_t utf8_char_len(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

static size_t utf8_encode(int32_t cp, char *o) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Rust char::is_whitespace == the Unicode White_Space property
 * (Unicode PropList.txt, White_Space). Used for added-token lstrip/rstrip. */
static int cp_is_white_space(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

/* Rust char::is_alphanumeric || '_' (tokenizers added_vocabulary.rs
 * ends_with_word / starts_with_word), via the general category. */
static int cp_is_word(int32_t c) {
  if (c == '_') return 1;
  utf8proc_category_t k = utf8proc_category(c);
  return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
         (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* ------------------------------------------------------------------ hashing */

static uint64_t hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xFF51AFD7ED558CCDull);
  while (n >= 8) {
    uint64_t k;
    memcpy(&k, s, 8);
    h ^= k * 0xBF58476D1CE4E5B9ull;
    h = ((h << 27) | (h >> 37)) * 0x94D049BB133111EBull;
    s += 8;
    n -= 8;
  }
  uint64_t k = 0;
  memcpy(&k, s, n);
  h ^= k * 0xBF58476D1CE4E5B9ull;
  h ^= h >> 31;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 29;
  return h;
}

/* String -> int32 map: open addressing over entries whose bytes live in one
 * pool. put() overwrites (serde's HashMap keeps the last duplicate key). */
typedef struct {
  uint64_t off;
  uint32_t len;
  int32_t val;
} strmap_entry;

typedef struct {
  char *pool;
  size_t pool_n, pool_cap;
  strmap_entry *e;
  size_t n, e_cap;
  /* (high 32 bits of the hash) << 32 | (entry index + 1); 0 = empty. The
   * tag spares a visit to the entry and its bytes for most probe misses. */
  uint64_t *slots;
  size_t nslots; /* power of two */
} strmap;

static void strmap_free(strmap *m) {
  free(m->pool);
  free(m->e);
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static void strmap_clear(strmap *m) {
  m->pool_n = 0;
  m->n = 0;
  if (m->slots) memset(m->slots, 0, m->nslots * sizeof *m->slots);
}

/* Entry index of s[0..n) or -1; *slot receives the probe end (the empty
 * slot where s would go) when not found. */
static int64_t strmap_find_h(const strmap *m, const char *s, size_t n, uint64_t h, size_t *slot) {
  size_t mask = m->nslots - 1, i = (size_t)h & mask;
  uint64_t tag = h >> 32;
  for (;;) {
    uint64_t x = m->slots[i];
    if (!x) {
      if (slot) *slot = i;
      return -1;
    }
    if ((x >> 32) == tag) {
      const strmap_entry *e = &m->e[(uint32_t)x - 1];
      if (e->len == n && memcmp(m->pool + e->off, s, n) == 0) return (int64_t)((uint32_t)x - 1);
    }
    i = (i + 1) & mask;
  }
}

static int64_t strmap_find(const strmap *m, const char *s, size_t n) {
  if (!m->nslots) return -1;
  return strmap_find_h(m, s, n, hash_bytes(s, n), NULL);
}

static int32_t strmap_get(const strmap *m, const char *s, size_t n) {
  int64_t k = strmap_find(m, s, n);
  return k < 0 ? -1 : m->e[k].val;
}

static qt_status strmap_rehash(strmap *m, size_t nslots) {
  uint64_t *sl = calloc(nslots, sizeof *sl);
  if (!sl) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (hash table)");
  for (size_t k = 0; k < m->n; k++) {
    uint64_t h = hash_bytes(m->pool + m->e[k].off, m->e[k].len);
    size_t i = (size_t)h & (nslots - 1);
    while (sl[i]) i = (i + 1) & (nslots - 1);
    sl[i] = ((h >> 32) << 32) | (uint64_t)(k + 1);
  }
  free(m->slots);
  m->slots = sl;
  m->nslots = nslots;
  return QT_OK;
}

static qt_status strmap_put(strmap *m, const char *s, size_t n, int32_t val) {
  if ((m->n + 1) * 2 > m->nslots) QT_TRY(strmap_rehash(m, m->nslots ? m->nslots * 2 : 1024));
  uint64_t h = hash_bytes(s, n);
  size_t slot = 0;
  int64_t k = strmap_find_h(m, s, n, h, &slot);
  if (k >= 0) {
    m->e[k].val = val;
    return QT_OK;
  }
  QT_TRY(grow((void **)&m->e, &m->e_cap, m->n + 1, sizeof *m->e));
  if (m->pool_n + n + 1 > m->pool_cap) {
    size_t c = m->pool_cap ? m->pool_cap : 4096;
    while (c < m->pool_n + n + 1) c *= 2;
    char *p = realloc(m->pool, c);
    if (!p) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (string pool)");
    m->pool = p;
    m->pool_cap = c;
  }
  if (n) memcpy(m->pool + m->pool_n, s, n);
  m->pool[m->pool_n + n] = '\0';
  m->e[m->n] = (strmap_entry){m->pool_n, (uint32_t)n, val};
  m->pool_n += n + 1;
  m->slots[slot] = ((h >> 32) << 32) | (uint64_t)(m->n + 1);
  m->n++;
  return QT_OK;
}

/* (left id, right id) -> (rank, merged id). */
typedef struct {
  uint64_t key;
  uint32_t rank;
  int32_t id;
} merge_slot;

typedef struct {
  merge_slot *s;
  size_t nslots, n;
} mergemap;

#define MERGE_EMPTY UINT64_MAX

static size_t merge_hash(uint64_t k, size_t mask) {
  k ^= k >> 33;
  k *= 0xFF51AFD7ED558CCDull;
  k ^= k >> 33;
  return (size_t)k & mask;
}

static const merge_slot *mergemap_get(const mergemap *m, int32_t a, int32_t b) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  size_t mask = m->nslots - 1, i = merge_hash(key, mask);
  for (;;) {
    const merge_slot *s = &m->s[i];
    if (s->key == key) return s;
    if (s->key == MERGE_EMPTY) return NULL;
    i = (i + 1) & mask;
  }
}

static qt_status mergemap_init(mergemap *m, size_t expected) {
  size_t n = 1024;
  while (n < expected * 2 + 2) n *= 2;
  m->s = malloc(n * sizeof *m->s);
  if (!m->s) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (merge table)");
  for (size_t i = 0; i < n; i++) m->s[i].key = MERGE_EMPTY;
  m->nslots = n;
  m->n = 0;
  return QT_OK;
}

/* A later duplicate overwrites (tokenizers bpe/model.rs builds merge_map with
 * HashMap::insert). Capacity was sized by mergemap_init. */
static void mergemap_put(mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  size_t mask = m->nslots - 1, i = merge_hash(key, mask);
  while (m->s[i].key != MERGE_EMPTY && m->s[i].key != key) i = (i + 1) & mask;
  if (m->s[i].key == MERGE_EMPTY) m->n++;
  m->s[i] = (merge_slot){key, rank, id};
}

/* ------------------------------------------------------------------ regex */

typedef struct {
  pcre2_code *code;
  pcre2_match_data *md;
} qt_regex;

static void regex_free(qt_regex *r) {
  if (r->md) pcre2_match_data_free(r->md);
  if (r->code) pcre2_code_free(r->code);
  r->md = NULL;
  r->code = NULL;
}

/* Compiles a tokenizers pattern. Regex patterns are Oniguruma syntax in
 * tokenizers (utils/onig.rs); PCRE2 (UTF + UCP) reads the same syntax for
 * everything these files use, except that Oniguruma's \s is the Unicode
 * White_Space property while PCRE2's also covers U+180E, so \s / \S become
 * \p{White_Space} / \P{White_Space}. String patterns are literal. */
static qt_status regex_compile(qt_regex *r, const char *pat, size_t n, int literal,
                               const char *file, const char *what) {
  qt_text_buf p = {0};
  qt_status st = QT_OK;
  if (literal) {
    st = text_append(&p, pat, n);
  } else {
    for (size_t i = 0; i < n && st == QT_OK; i++) {
      if (pat[i] == '\\' && i + 1 < n) {
        if (pat[i + 1] == 's') st = text_append(&p, "\\p{White_Space}", 15);
        else if (pat[i + 1] == 'S') st = text_append(&p, "\\P{White_Space}", 15);
        else st = text_append(&p, pat + i, 2);
        i++;
      } else {
        st = text_append(&p, pat + i, 1);
      }
    }
  }
  if (st != QT_OK) {
    qt_text_buf_free(&p);
    return st;
  }
  int err = 0;
  PCRE2_SIZE off = 0;
  uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL excludes UCP */
  r->code = pcre2_compile((PCRE2_SPTR)p.s, p.n, opts, &err, &off, NULL);
  qt_text_buf_free(&p);
  if (!r->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: %s regex cannot be compiled with PCRE2 at offset %zu: %s",
                   file, what, (size_t)off, (const char *)msg);
  }
  pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
  r->md = pcre2_match_data_create(1, NULL);
  if (!r->md) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (regex match data)");
  return QT_OK;
}

/* Finds the next match in s[0..n) at or after `from`. Returns 1 and sets
 * [*ms, *me) on a match, 0 when there is none. */
static qt_status regex_next(const qt_regex *r, const char *s, size_t n, size_t from, size_t *ms,
                            size_t *me, int *found) {
  int rc = pcre2_match(r->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, r->md, NULL);
  if (rc == PCRE2_ERROR_NOMATCH) {
    *found = 0;
    return QT_OK;
  }
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return qt_fail(QT_ERR_INVALID, "tokenizer: regex match failed: %s", (const char *)msg);
  }
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
  *ms = ov[0];
  *me = ov[1];
  *found = 1;
  return QT_OK;
}

/* ------------------------------------------------------------- structures */

enum { NORM_PREPEND, NORM_REPLACE, NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWERCASE, NORM_STRIP };
typedef struct {
  int kind;
  char *a; /* Prepend: prefix; Replace: literal pattern */
  size_t an;
  char *b; /* Replace: content */
  size_t bn;
  int is_regex;
  qt_regex re;
  int strip_left, strip_right; /* Strip */
} norm_step;

enum { PT_SPLIT, PT_BYTELEVEL, PT_METASPACE };
/* tokenizers pre_tokenizers/split.rs SplitDelimiterBehavior */
enum { BEH_REMOVED, BEH_ISOLATED, BEH_MERGED_PREV, BEH_MERGED_NEXT, BEH_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct {
  int kind;
  qt_regex re; /* Split pattern; ByteLevel: the GPT-2 regex when use_regex */
  int behavior, invert;
  int add_prefix_space, use_regex;
  char repl[8]; /* Metaspace replacement character (UTF-8) */
  size_t repl_n;
  int prepend_scheme, split;
} pt_step;

enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_BYTELEVEL, DEC_METASPACE };
typedef struct {
  int kind;
  char *a, *b; /* Replace: pattern, content */
  size_t an, bn;
  int32_t strip_char;
  size_t start, stop;
  char repl[8]; /* Metaspace */
  size_t repl_n;
  int prepend_scheme;
} dec_step;

typedef struct {
  char *content; /* NUL-terminated */
  size_t len;
  char *norm; /* normalized content (normalized tokens only): decoded as this */
  size_t norm_len;
  int32_t id;
  unsigned char special, lstrip, rstrip, normalized, single_word;
} added_token;

typedef struct {
  int32_t child, sibling; /* node indices, -1 = none */
  int32_t token;          /* index into t->added, -1 = not terminal */
  unsigned char byte;
} trie_node;

typedef struct {
  trie_node *n;
  size_t count, cap;
  unsigned char first[256]; /* bytes that start some pattern */
} trie;

typedef struct {
  uint64_t off;
  uint32_t len;
  unsigned char at_start; /* the piece begins at original offset 0 */
  unsigned char is_match; /* scratch for Split */
} piece;

typedef struct {
  uint32_t off, n;
} span;

struct qt_tokenizer {
  char *name; /* file name for messages */
  /* model (BPE) */
  strmap vocab;
  mergemap merges;
  /* Adjacent code-point pairs occurring inside any vocabulary token; built
   * only when there is no pre-tokenizer (see bpe_chunked). */
  uint64_t *pairs;
  size_t pairs_slots;
  int byte_fallback, fuse_unk, ignore_merges;
  int32_t unk_id;
  char *cont_prefix, *eow_suffix;
  size_t cont_prefix_n, eow_suffix_n;
  int32_t byte_ids[256]; /* "<0xXX>" ids for byte fallback, -1 if absent */
  int32_t ascii_ids[128]; /* vocab id of each ASCII char (no prefix/suffix), -1 */
  /* pipeline */
  norm_step *norms;
  size_t n_norms;
  pt_step *pts;
  size_t n_pts;
  dec_step *decs;
  size_t n_decs;
  int has_decoder;
  /* added tokens */
  added_token *added;
  size_t n_added;
  int32_t max_added_id; /* -1 before the first */
  strmap added_map; /* content -> index into added */
  trie raw_trie, norm_trie;
  /* id -> string, for decode */
  int32_t vocab_size;
  uint64_t *id_off; /* offset into id_pool, UINT64_MAX = no token */
  uint32_t *id_len;
  unsigned char *id_special;
  char *id_pool;
  int32_t bos_id, eos_id;
  /* byte-level alphabet (GPT-2 bytes_to_unicode) */
  char bl_enc[256][3];
  unsigned char bl_enc_n[256];
  int16_t bl_dec[324]; /* code point -> byte, -1 */
  /* scratch */
  qt_text_buf clean, norm_tmp[2], pt_buf[2], word_tmp, dec_buf[2];
  piece *pieces[2];
  size_t pieces_cap[2];
  piece *sub;
  size_t sub_cap;
  span *dspans[2];
  size_t dspans_cap[2];
  int32_t *sym_id, *sym_prev, *sym_next;
  unsigned char *sym_dead;
  size_t sym_cap;
  struct bpe_cand *heap;
  size_t heap_cap;
  /* word cache: word -> span of cache_ids */
  strmap cache;
  int32_t *cache_ids;
  size_t cache_n, cache_cap;
  span *cache_spans;
  size_t cache_spans_cap;
};

/* ------------------------------------------------------------ JSON access */

/* Looks a key up case-sensitively; a key present twice is a format error
 * (serde rejects duplicate struct fields). *out = NULL when absent. */
static qt_status jget(const cJSON *obj, const char *key, const char *file, const char *where,
                      const cJSON **out) {
  const cJSON *found = NULL;
  for (const cJSON *c = obj ? obj->child : NULL; c; c = c->next) {
    if (c->string && strcmp(c->string, key) == 0) {
      if (found)
        return qt_fail(QT_ERR_FORMAT, "%s: %s: key \"%s\" appears twice; remove one", file, where, key);
      found = c;
    }
  }
  *out = found;
  return QT_OK;
}

static qt_status jget_str(const cJSON *obj, const char *key, const char *file, const char *where,
                          int required, const char **out) {
  const cJSON *v = NULL;
  QT_TRY(jget(obj, key, file, where, &v));
  *out = NULL;
  if (!v || cJSON_IsNull(v)) {
    if (required)
      return qt_fail(QT_ERR_FORMAT, "%s: %s: missing string \"%s\"", file, where, key);
    return QT_OK;
  }
  if (!cJSON_IsString(v))
    return qt_fail(QT_ERR_FORMAT, "%s: %s: \"%s\" must be a string", file, where, key);
  *out = v->valuestring;
  return QT_OK;
}

static qt_status jget_bool(const cJSON *obj, const char *key, const char *file, const char *where,
                           int dflt, int *out) {
  const cJSON *v = NULL;
  QT_TRY(jget(obj, key, file, where, &v));
  if (!v || cJSON_IsNull(v)) {
    *out = dflt;
    return QT_OK;
  }
  if (!cJSON_IsBool(v))
    return qt_fail(QT_ERR_FORMAT, "%s: %s: \"%s\" must be true or false", file, where, key);
  *out = cJSON_IsTrue(v);
  return QT_OK;
}

static qt_status jget_uint(const cJSON *obj, const char *key, const char *file, const char *where,
                           size_t dflt, size_t *out) {
  const cJSON *v = NULL;
  QT_TRY(jget(obj, key, file, where, &v));
  if (!v || cJSON_IsNull(v)) {
    *out = dflt;
    return QT_OK;
  }
  if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e9 ||
      v->valuedouble != (double)(long long)v->valuedouble)
    return qt_fail(QT_ERR_FORMAT, "%s: %s: \"%s\" must be a non-negative integer", file, where, key);
  *out = (size_t)v->valuedouble;
  return QT_OK;
}

static qt_status dup_str(const char *s, size_t n, char **out) {
  *out = malloc(n + 1);
  if (!*out) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory");
  memcpy(*out, s, n);
  (*out)[n] = '\0';
  return QT_OK;
}

/* A {"String": s} or {"Regex": r} pattern object. */
static qt_status parse_pattern(const cJSON *obj, const char *file, const char *where,
                               const char **s, int *is_regex) {
  const cJSON *p = NULL;
  QT_TRY(jget(obj, "pattern", file, where, &p));
  if (!p || !cJSON_IsObject(p))
    return qt_fail(QT_ERR_FORMAT, "%s: %s: missing object \"pattern\"", file, where);
  const char *str, *re;
  QT_TRY(jget_str(p, "String", file, where, 0, &str));
  QT_TRY(jget_str(p, "Regex", file, where, 0, &re));
  if ((str == NULL) == (re == NULL))
    return qt_fail(QT_ERR_FORMAT, "%s: %s: \"pattern\" must hold exactly one of \"String\" or \"Regex\"",
                   file, where);
  *s = str ? str : re;
  *is_regex = re != NULL;
  return QT_OK;
}

static qt_status parse_prepend_scheme(const cJSON *obj, const char *file, const char *where,
                                      int *out) {
  const char *ps;
  QT_TRY(jget_str(obj, "prepend_scheme", file, where, 0, &ps));
  if (ps) {
    if (strcmp(ps, "always") == 0) *out = PREPEND_ALWAYS;
    else if (strcmp(ps, "first") == 0) *out = PREPEND_FIRST;
    else if (strcmp(ps, "never") == 0) *out = PREPEND_NEVER;
    else return qt_fail(QT_ERR_UNSUPPORTED, "%s: %s: prepend_scheme \"%s\" is not supported (always, first, never)", file, where, ps);
    return QT_OK;
  }
  /* Older files: add_prefix_space (true = always). */
  int aps;
  QT_TRY(jget_bool(obj, "add_prefix_space", file, where, 1, &aps));
  *out = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
  return QT_OK;
}

static qt_status parse_replacement(const cJSON *obj, const char *file, const char *where, char *repl,
                                   size_t *repl_n) {
  const char *r;
  QT_TRY(jget_str(obj, "replacement", file, where, 0, &r));
  if (!r) r = "\xE2\x96\x81"; /* U+2581, tokenizers' default */
  size_t n = strlen(r);
  if (n == 0 || n > 4 || utf8_char_len((unsigned char)r[0]) != n || !utf8_is_valid(r, n))
    return qt_fail(QT_ERR_FORMAT, "%s: %s: \"replacement\" must be one character", file, where);
  memcpy(repl, r, n);
  *repl_n = n;
  return QT_OK;
}

/* ----------------------------------------------------------- normalizers */

static qt_status add_norm(qt_tokenizer *t, const cJSON *o, size_t *cap) {
  const char *type, *where = "normalizer";
  if (!cJSON_IsObject(o)) return qt_fail(QT_ERR_FORMAT, "%s: normalizer must be an object", t->name);
  QT_TRY(jget_str(o, "type", t->name, where, 1, &type));
  if (strcmp(type, "Sequence") == 0) {
    const cJSON *list = NULL;
    QT_TRY(jget(o, "normalizers", t->name, where, &list));
    if (!cJSON_IsArray(list))
      return qt_fail(QT_ERR_FORMAT, "%s: normalizer Sequence needs an array \"normalizers\"", t->name);
    for (const cJSON *c = list->child; c; c = c->next) QT_TRY(add_norm(t, c, cap));
    return QT_OK;
  }
  QT_TRY(grow((void **)&t->norms, cap, t->n_norms + 1, sizeof *t->norms));
  norm_step *s = &t->norms[t->n_norms];
  memset(s, 0, sizeof *s);
  if (strcmp(type, "Prepend") == 0) {
    const char *p;
    QT_TRY(jget_str(o, "prepend", t->name, where, 1, &p));
    s->kind = NORM_PREPEND;
    s->an = strlen(p);
    if (!utf8_is_valid(p, s->an))
      return qt_fail(QT_ERR_FORMAT, "%s: normalizer Prepend: \"prepend\" is not valid UTF-8", t->name);
    QT_TRY(dup_str(p, s->an, &s->a));
  } else if (strcmp(type, "Replace") == 0) {
    const char *pat, *content;
    int is_regex;
    QT_TRY(parse_pattern(o, t->name, "normalizer Replace", &pat, &is_regex));
    QT_TRY(jget_str(o, "content", t->name, where, 1, &content));
    s->kind = NORM_REPLACE;
    s->an = strlen(pat);
    s->bn = strlen(content);
    if (!utf8_is_valid(content, s->bn) || !utf8_is_valid(pat, s->an))
      return qt_fail(QT_ERR_FORMAT, "%s: normalizer Replace: pattern or content is not valid UTF-8", t->name);
    s->is_regex = is_regex;
    t->n_norms++; /* owned from here on (freed by qt_tokenizer_free) */
    QT_TRY(dup_str(pat, s->an, &s->a));
    QT_TRY(dup_str(content, s->bn, &s->b));
    if (s->an == 0 && !is_regex)
      return qt_fail(QT_ERR_FORMAT, "%s: normalizer Replace has an empty pattern", t->name);
    if (is_regex) QT_TRY(regex_compile(&s->re, pat, s->an, 0, t->name, "normalizer Replace"));
    return QT_OK;
  } else if (strcmp(type, "Lowercase") == 0) {
    s->kind = NORM_LOWERCASE;
  } else if (strcmp(type, "Strip") == 0) {
    s->kind = NORM_STRIP;
    QT_TRY(jget_bool(o, "strip_left", t->name, where, 1, &s->strip_left));
    QT_TRY(jget_bool(o, "strip_right", t->name, where, 1, &s->strip_right));
  } else if (strcmp(type, "NFC") == 0) {
    s->kind = NORM_NFC;
  } else if (strcmp(type, "NFD") == 0) {
    s->kind = NORM_NFD;
  } else if (strcmp(type, "NFKC") == 0) {
    s->kind = NORM_NFKC;
  } else if (strcmp(type, "NFKD") == 0) {
    s->kind = NORM_NFKD;
  } else {
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "%s: normalizer type \"%s\" is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)",
                   t->name, type);
  }
  t->n_norms++;
  return QT_OK;
}

/* Applies one normalizer to in[0..n) (valid UTF-8) into out. */
static qt_status norm_apply(qt_tokenizer *t, const norm_step *s, const char *in, size_t n,
                            qt_text_buf *out) {
  out->n = 0;
  QT_TRY(text_reserve(out, n));
  switch (s->kind) {
    case NORM_PREPEND: /* normalizers/prepend.rs: only non-empty strings */
      if (n) QT_TRY(text_append(out, s->a, s->an));
      return text_append(out, in, n);
    case NORM_REPLACE: { /* normalizers/replace.rs: every non-overlapping match */
      size_t i = 0;
      if (!s->is_regex) {
        while (i < n) {
          const char *hit = find_bytes(in + i, n - i, s->a, s->an);
          if (!hit) break;
          size_t h = (size_t)(hit - in);
          QT_TRY(text_append(out, in + i, h - i));
          QT_TRY(text_append(out, s->b, s->bn));
          i = h + s->an;
        }
      } else {
        while (i <= n) {
          size_t ms = 0, me = 0;
          int found = 0;
          QT_TRY(regex_next(&s->re, in, n, i, &ms, &me, &found));
          if (!found) break;
          QT_TRY(text_append(out, in + i, ms - i));
          QT_TRY(text_append(out, s->b, s->bn));
          i = me;
          if (me == ms) { /* empty match: keep the next character and move on */
            if (me >= n) break;
            size_t cl = utf8_char_len((unsigned char)in[me]);
            QT_TRY(text_append(out, in + me, cl));
            i = me + cl;
          }
        }
      }
      if (i < n) QT_TRY(text_append(out, in + i, n - i));
      return QT_OK;
    }
    case NORM_LOWERCASE: { /* normalizer.rs lowercase: char::to_lowercase per character */
      for (size_t k = 0; k < n;) {
        int32_t cp;
        size_t cl = utf8_decode((const unsigned char *)in + k, &cp);
        char o[8];
        size_t on;
        if (cp == 0x130) { /* the one unconditional multi-character lowercase (SpecialCasing.txt) */
          memcpy(o, "i\xCC\x87", 3);
          on = 3;
        } else {
          on = utf8_encode(cp < 128 ? (cp >= 'A' && cp <= 'Z' ? cp + 32 : cp) : utf8proc_tolower(cp), o);
        }
        QT_TRY(text_append(out, o, on));
        k += cl;
      }
      return QT_OK;
    }
    case NORM_STRIP: { /* normalizers/strip.rs: char::is_whitespace at either end */
      size_t a = 0, b = n;
      while (s->strip_left && a < b) {
        int32_t cp;
        size_t cl = utf8_decode((const unsigned char *)in + a, &cp);
        if (!cp_is_white_space(cp)) break;
        a += cl;
      }
      while (s->strip_right && b > a) {
        size_t c0 = b - 1;
        while (c0 > a && ((unsigned char)in[c0] & 0xC0) == 0x80) c0--;
        int32_t cp;
        utf8_decode((const unsigned char *)in + c0, &cp);
        if (!cp_is_white_space(cp)) break;
        b = c0;
      }
      return text_append(out, in + a, b - a);
    }
    default: { /* Unicode normalization forms (utf8proc; ASCII is invariant) */
      size_t k = 0;
      while (k < n && (unsigned char)in[k] < 0x80) k++;
      if (k == n) return text_append(out, in, n);
      int opts = UTF8PROC_STABLE;
      if (s->kind == NORM_NFC || s->kind == NORM_NFKC) opts |= UTF8PROC_COMPOSE;
      else opts |= UTF8PROC_DECOMPOSE;
      if (s->kind == NORM_NFKC || s->kind == NORM_NFKD) opts |= UTF8PROC_COMPAT;
      utf8proc_uint8_t *dst = NULL;
      utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)in, (utf8proc_ssize_t)n, &dst,
                                        (utf8proc_option_t)opts);
      if (r < 0) {
        free(dst);
        return qt_fail(QT_ERR_INVALID, "%s: Unicode normalization failed: %s", t->name, utf8proc_errmsg(r));
      }
      qt_status st = text_append(out, (const char *)dst, (size_t)r);
      free(dst);
      return st;
    }
  }
}

/* Runs the whole normalizer chain; *res points at the result (in or a scratch buffer). */
static qt_status normalize(qt_tokenizer *t, const char *in, size_t n, const char **res, size_t *rn) {
  const char *cur = in;
  size_t cn = n;
  for (size_t k = 0; k < t->n_norms; k++) {
    qt_text_buf *o = &t->norm_tmp[k & 1];
    QT_TRY(norm_apply(t, &t->norms[k], cur, cn, o));
    cur = o->s;
    cn = o->n;
  }
  *res = cur;
  *rn = cn;
  return QT_OK;
}

/* --------------------------------------------------------- pre-tokenizers */

/* GPT-2's pattern, used by ByteLevel when use_regex is true
 * (tokenizers pre_tokenizers/byte_level.rs). */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static qt_status add_pt(qt_tokenizer *t, const cJSON *o, size_t *cap) {
  const char *type, *where = "pre_tokenizer";
  if (!cJSON_IsObject(o)) return qt_fail(QT_ERR_FORMAT, "%s: pre_tokenizer must be an object", t->name);
  QT_TRY(jget_str(o, "type", t->name, where, 1, &type));
  if (strcmp(type, "Sequence") == 0) {
    const cJSON *list = NULL;
    QT_TRY(jget(o, "pretokenizers", t->name, where, &list));
    if (!cJSON_IsArray(list))
      return qt_fail(QT_ERR_FORMAT, "%s: pre_tokenizer Sequence needs an array \"pretokenizers\"", t->name);
    for (const cJSON *c = list->child; c; c = c->next) QT_TRY(add_pt(t, c, cap));
    return QT_OK;
  }
  QT_TRY(grow((void **)&t->pts, cap, t->n_pts + 1, sizeof *t->pts));
  pt_step *s = &t->pts[t->n_pts];
  memset(s, 0, sizeof *s);
  if (strcmp(type, "Split") == 0) {
    const char *pat, *beh;
    int is_regex;
    QT_TRY(parse_pattern(o, t->name, "pre_tokenizer Split", &pat, &is_regex));
    QT_TRY(jget_str(o, "behavior", t->name, where, 1, &beh));
    QT_TRY(jget_bool(o, "invert", t->name, where, 0, &s->invert));
    s->kind = PT_SPLIT;
    if (strcmp(beh, "Removed") == 0) s->behavior = BEH_REMOVED;
    else if (strcmp(beh, "Isolated") == 0) s->behavior = BEH_ISOLATED;
    else if (strcmp(beh, "MergedWithPrevious") == 0) s->behavior = BEH_MERGED_PREV;
    else if (strcmp(beh, "MergedWithNext") == 0) s->behavior = BEH_MERGED_NEXT;
    else if (strcmp(beh, "Contiguous") == 0) s->behavior = BEH_CONTIGUOUS;
    else return qt_fail(QT_ERR_UNSUPPORTED, "%s: pre_tokenizer Split behavior \"%s\" is not supported", t->name, beh);
    t->n_pts++;
    if (!is_regex && pat[0] == '\0')
      return qt_fail(QT_ERR_FORMAT, "%s: pre_tokenizer Split has an empty pattern", t->name);
    return regex_compile(&s->re, pat, strlen(pat), !is_regex, t->name, "pre_tokenizer Split");
  }
  if (strcmp(type, "ByteLevel") == 0) {
    s->kind = PT_BYTELEVEL;
    QT_TRY(jget_bool(o, "add_prefix_space", t->name, where, 1, &s->add_prefix_space));
    QT_TRY(jget_bool(o, "use_regex", t->name, where, 1, &s->use_regex));
    t->n_pts++;
    if (s->use_regex)
      QT_TRY(regex_compile(&s->re, gpt2_pattern, strlen(gpt2_pattern), 0, t->name, "ByteLevel"));
    return QT_OK;
  }
  if (strcmp(type, "Metaspace") == 0) {
    s->kind = PT_METASPACE;
    QT_TRY(parse_replacement(o, t->name, "pre_tokenizer Metaspace", s->repl, &s->repl_n));
    QT_TRY(parse_prepend_scheme(o, t->name, "pre_tokenizer Metaspace", &s->prepend_scheme));
    QT_TRY(jget_bool(o, "split", t->name, where, 1, &s->split));
    t->n_pts++;
    return QT_OK;
  }
  /* Character-class splitters (tokenizers pre_tokenizers/digits.rs,
   * punctuation.rs, whitespace.rs) as one-character regex matches, which is
   * what their char-predicate patterns produce (utils/pattern.rs). */
  const char *pat = NULL;
  if (strcmp(type, "Digits") == 0) { /* char::is_numeric: Nd, Nl, No */
    int individual;
    QT_TRY(jget_bool(o, "individual_digits", t->name, where, 0, &individual));
    pat = "\\p{N}";
    s->behavior = individual ? BEH_ISOLATED : BEH_CONTIGUOUS;
  } else if (strcmp(type, "Punctuation") == 0) { /* is_ascii_punctuation || Unicode P* */
    const char *beh;
    QT_TRY(jget_str(o, "behavior", t->name, where, 0, &beh));
    s->behavior = BEH_ISOLATED;
    if (beh && strcmp(beh, "Isolated") != 0) {
      if (strcmp(beh, "Removed") == 0) s->behavior = BEH_REMOVED;
      else if (strcmp(beh, "MergedWithPrevious") == 0) s->behavior = BEH_MERGED_PREV;
      else if (strcmp(beh, "MergedWithNext") == 0) s->behavior = BEH_MERGED_NEXT;
      else if (strcmp(beh, "Contiguous") == 0) s->behavior = BEH_CONTIGUOUS;
      else return qt_fail(QT_ERR_UNSUPPORTED, "%s: pre_tokenizer Punctuation behavior \"%s\" is not supported", t->name, beh);
    }
    pat = "[\\p{P}!-/:-@\\[-`{-~]";
  } else if (strcmp(type, "WhitespaceSplit") == 0) { /* char::is_whitespace, removed */
    pat = "\\s";
    s->behavior = BEH_REMOVED;
  }
  if (pat) {
    s->kind = PT_SPLIT;
    t->n_pts++;
    return regex_compile(&s->re, pat, strlen(pat), 0, t->name, type);
  }
  return qt_fail(QT_ERR_UNSUPPORTED,
                 "%s: pre_tokenizer type \"%s\" is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Digits, Punctuation, WhitespaceSplit)",
                 t->name, type);
}

static qt_status sub_push(qt_tokenizer *t, size_t *n, uint64_t off, uint32_t len, int is_match) {
  QT_TRY(grow((void **)&t->sub, &t->sub_cap, *n + 1, sizeof *t->sub));
  t->sub[(*n)++] = (piece){off, len, 0, (unsigned char)is_match};
  return QT_OK;
}

/* Splits buf[p.off, p.off+p.len) by a regex into (span, is_match) runs
 * (tokenizers utils/pattern.rs find_matches), then applies the split
 * behavior (tokenizers/normalizer.rs NormalizedString::split) and appends
 * the non-empty results to out. */
static qt_status split_piece(qt_tokenizer *t, const qt_regex *re, int behavior, int invert,
                             const char *buf, piece p, piece **out, size_t *out_n, size_t *out_cap) {
  size_t m = 0, prev = 0, from = 0;
  const char *s = buf + p.off;
  size_t n = p.len;
  while (from <= n) {
    size_t ms = 0, me = 0;
    int found = 0;
    QT_TRY(regex_next(re, s, n, from, &ms, &me, &found));
    if (!found) break;
    if (ms != prev) QT_TRY(sub_push(t, &m, p.off + prev, (uint32_t)(ms - prev), 0));
    QT_TRY(sub_push(t, &m, p.off + ms, (uint32_t)(me - ms), 1));
    prev = me;
    if (me == ms) {
      if (me >= n) break;
      from = me + utf8_char_len((unsigned char)s[me]);
    } else {
      from = me;
    }
  }
  if (prev != n) QT_TRY(sub_push(t, &m, p.off + prev, (uint32_t)(n - prev), 0));
  if (invert)
    for (size_t i = 0; i < m; i++) t->sub[i].is_match = !t->sub[i].is_match;

  /* behavior -> a list of spans, reusing t->sub in place (j <= i always) */
  size_t k = 0;
  switch (behavior) {
    case BEH_REMOVED:
      for (size_t i = 0; i < m; i++)
        if (!t->sub[i].is_match) t->sub[k++] = t->sub[i];
      break;
    case BEH_ISOLATED:
      k = m;
      break;
    case BEH_MERGED_PREV: {
      int prev_match = 0;
      for (size_t i = 0; i < m; i++) {
        piece c = t->sub[i];
        if (c.is_match && !prev_match && k > 0) t->sub[k - 1].len = (uint32_t)(c.off + c.len - t->sub[k - 1].off);
        else t->sub[k++] = c;
        prev_match = c.is_match;
      }
      break;
    }
    case BEH_MERGED_NEXT: { /* fold from the right */
      int prev_match = 0;
      size_t w = m; /* write index from the right */
      for (size_t i = m; i-- > 0;) {
        piece c = t->sub[i];
        if (c.is_match && !prev_match && w < m) {
          t->sub[w].len += (uint32_t)(t->sub[w].off - c.off);
          t->sub[w].off = c.off;
        } else {
          t->sub[--w] = c;
        }
        prev_match = c.is_match;
      }
      memmove(t->sub, t->sub + w, (m - w) * sizeof *t->sub);
      k = m - w;
      break;
    }
    case BEH_CONTIGUOUS: {
      int prev_match = 0;
      for (size_t i = 0; i < m; i++) {
        piece c = t->sub[i];
        if (c.is_match == prev_match && k > 0) t->sub[k - 1].len = (uint32_t)(c.off + c.len - t->sub[k - 1].off);
        else t->sub[k++] = c;
        prev_match = c.is_match;
      }
      break;
    }
  }
  for (size_t i = 0; i < k; i++) {
    if (t->sub[i].len == 0) continue;
    QT_TRY(grow((void **)out, out_cap, *out_n + 1, sizeof **out));
    piece q = t->sub[i];
    q.at_start = p.at_start && q.off == p.off;
    (*out)[(*out_n)++] = q;
  }
  return QT_OK;
}

/* One pre-tokenizer step: pieces of `in` (over ib) -> pieces over ob. */
static qt_status pt_apply(qt_tokenizer *t, const pt_step *s, const qt_text_buf *ib, const piece *in,
                          size_t in_n, qt_text_buf *ob, piece **out, size_t *out_n, size_t *out_cap,
                          int *moved) {
  *out_n = 0;
  if (s->kind == PT_SPLIT) {
    *moved = 0; /* same bytes; only the boundaries change */
    for (size_t i = 0; i < in_n; i++)
      QT_TRY(split_piece(t, &s->re, s->behavior, s->invert, ib->s, in[i], out, out_n, out_cap));
    return QT_OK;
  }
  *moved = 1;
  ob->n = 0;
  QT_TRY(text_reserve(ob, ib->n * 2 + 16));
  for (size_t i = 0; i < in_n; i++) {
    const char *src = ib->s + in[i].off;
    size_t n = in[i].len, start = ob->n;
    if (s->kind == PT_METASPACE) {
      /* pre_tokenizers/metaspace.rs: ' ' -> replacement; prepend per scheme
       * unless the replaced piece already starts with the replacement;
       * split MergedWithNext. */
      int starts = (n > 0 && src[0] == ' ') || (n >= s->repl_n && memcmp(src, s->repl, s->repl_n) == 0);
      if (!starts && (s->prepend_scheme == PREPEND_ALWAYS ||
                      (s->prepend_scheme == PREPEND_FIRST && in[i].at_start)))
        QT_TRY(text_append(ob, s->repl, s->repl_n));
      for (size_t k = 0; k < n; k++) {
        if (src[k] == ' ') QT_TRY(text_append(ob, s->repl, s->repl_n));
        else QT_TRY(text_append(ob, src + k, 1));
      }
      piece p = {start, (uint32_t)(ob->n - start), in[i].at_start, 0};
      if (!s->split) {
        if (p.len) {
          QT_TRY(grow((void **)out, out_cap, *out_n + 1, sizeof **out));
          (*out)[(*out_n)++] = p;
        }
        continue;
      }
      /* split on each replacement char, merged with the next run */
      size_t e = ob->n, a = start;
      size_t k = start;
      while (k < e) {
        size_t b = k + utf8_char_len((unsigned char)ob->s[k]);
        if (b - k == s->repl_n && memcmp(ob->s + k, s->repl, s->repl_n) == 0 && k > a) {
          QT_TRY(grow((void **)out, out_cap, *out_n + 1, sizeof **out));
          (*out)[(*out_n)++] = (piece){a, (uint32_t)(k - a), (unsigned char)(in[i].at_start && a == start), 0};
          a = k;
        }
        k = b;
      }
      if (e > a) {
        QT_TRY(grow((void **)out, out_cap, *out_n + 1, sizeof **out));
        (*out)[(*out_n)++] = (piece){a, (uint32_t)(e - a), (unsigned char)(in[i].at_start && a == start), 0};
      }
      continue;
    }
    /* ByteLevel (pre_tokenizers/byte_level.rs): optional prefix space, the
     * GPT-2 split, then every byte -> its bytes_to_unicode character. */
    size_t raw0 = ob->n;
    if (s->add_prefix_space && !(n > 0 && src[0] == ' ')) QT_TRY(text_append(ob, " ", 1));
    QT_TRY(text_append(ob, src, n));
    size_t raw_n = ob->n - raw0;
    /* split the raw bytes first (the regex reads text, not the mapped form) */
    size_t m0 = *out_n;
    piece whole = {raw0, (uint32_t)raw_n, in[i].at_start, 0};
    if (s->use_regex) {
      QT_TRY(split_piece(t, &s->re, BEH_ISOLATED, 0, ob->s, whole, out, out_n, out_cap));
    } else if (raw_n) {
      QT_TRY(grow((void **)out, out_cap, *out_n + 1, sizeof **out));
      (*out)[(*out_n)++] = whole;
    }
    /* map: append the mapped form of each sub-piece after the raw copy */
    for (size_t j = m0; j < *out_n; j++) {
      piece *q = &(*out)[j];
      size_t ms = ob->n;
      QT_TRY(text_reserve(ob, ob->n + (size_t)q->len * 2));
      for (uint32_t k = 0; k < q->len; k++) {
        unsigned char b = (unsigned char)ob->s[q->off + k];
        memcpy(ob->s + ob->n, t->bl_enc[b], t->bl_enc_n[b]);
        ob->n += t->bl_enc_n[b];
      }
      ob->s[ob->n] = '\0';
      q->off = ms;
      q->len = (uint32_t)(ob->n - ms);
    }
  }
  return QT_OK;
}

/* -------------------------------------------------------------------- BPE */

typedef struct bpe_cand {
  uint32_t rank;
  uint32_t pos;
  int32_t new_id;
} bpe_cand;

/* Min-heap on (rank, pos): tokenizers bpe/word.rs `impl Ord for Merge`. */
static int cand_less(const bpe_cand *a, const bpe_cand *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static qt_status heap_push(qt_tokenizer *t, size_t *n, bpe_cand c) {
  QT_TRY(grow((void **)&t->heap, &t->heap_cap, *n + 1, sizeof *t->heap));
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!cand_less(&c, &t->heap[p])) break;
    t->heap[i] = t->heap[p];
    i = p;
  }
  t->heap[i] = c;
  return QT_OK;
}

static bpe_cand heap_pop(qt_tokenizer *t, size_t *n) {
  bpe_cand top = t->heap[0], last = t->heap[--(*n)];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1;
    if (l >= *n) break;
    size_t c = l + 1 < *n && cand_less(&t->heap[l + 1], &t->heap[l]) ? l + 1 : l;
    if (!cand_less(&t->heap[c], &last)) break;
    t->heap[i] = t->heap[c];
    i = c;
  }
  if (*n) t->heap[i] = last;
  return top;
}

/* Vocab id of one character of a word, with the continuing-subword prefix
 * and end-of-word suffix where they apply (bpe/model.rs merge_word). */
static qt_status char_id(qt_tokenizer *t, const char *c, size_t cl, int first, int last, int32_t *id) {
  int pre = !first && t->cont_prefix_n, suf = last && t->eow_suffix_n;
  if (!pre && !suf) {
    *id = cl == 1 && (unsigned char)c[0] < 128 ? t->ascii_ids[(unsigned char)c[0]] : strmap_get(&t->vocab, c, cl);
    return QT_OK;
  }
  qt_text_buf *w = &t->word_tmp;
  w->n = 0;
  if (pre) QT_TRY(text_append(w, t->cont_prefix, t->cont_prefix_n));
  QT_TRY(text_append(w, c, cl));
  if (suf) QT_TRY(text_append(w, t->eow_suffix, t->eow_suffix_n));
  *id = strmap_get(&t->vocab, w->s, w->n);
  return QT_OK;
}

enum { CACHE_MAX_WORD = 256, CACHE_MAX_ENTRIES = 1 << 16 };

/* BPE on one pre-token w[0..n) (bpe/model.rs tokenize + merge_word,
 * bpe/word.rs merge_all); appends its ids to out. */
static qt_status bpe_word(qt_tokenizer *t, const char *w, size_t n, qt_token_ids *out) {
  if (n == 0) return QT_OK;
  int cacheable = n <= CACHE_MAX_WORD;
  if (cacheable) {
    int32_t k = strmap_get(&t->cache, w, n);
    if (k >= 0) {
      span sp = t->cache_spans[k];
      QT_TRY(ids_reserve(out, out->n + sp.n));
      memcpy(out->ids + out->n, t->cache_ids + sp.off, sp.n * sizeof(int32_t));
      out->n += sp.n;
      return QT_OK;
    }
  }
  size_t out0 = out->n;
  if (t->ignore_merges) {
    int32_t id = strmap_get(&t->vocab, w, n);
    if (id >= 0) {
      QT_TRY(ids_push(out, id));
      goto store;
    }
  }
  {
    /* symbols */
    size_t m = 0;
    /* at most one symbol per byte of the (prefixed / suffixed) characters */
    size_t need = n * (1 + t->cont_prefix_n + t->eow_suffix_n) + 1;
    if (need > t->sym_cap) {
      size_t c = t->sym_cap ? t->sym_cap : 256;
      while (c < need) c *= 2;
      int32_t *a = realloc(t->sym_id, c * sizeof *a);
      if (a) t->sym_id = a;
      int32_t *b = realloc(t->sym_prev, c * sizeof *b);
      if (b) t->sym_prev = b;
      int32_t *d = realloc(t->sym_next, c * sizeof *d);
      if (d) t->sym_next = d;
      unsigned char *e = realloc(t->sym_dead, c);
      if (e) t->sym_dead = e;
      if (!a || !b || !d || !e) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (BPE word)");
      t->sym_cap = c;
    }
    int32_t unk = -1; /* pending (possibly fused) unknown */
    for (size_t i = 0; i < n;) {
      size_t cl = utf8_char_len((unsigned char)w[i]);
      if (i + cl > n) cl = n - i;
      int32_t id;
      QT_TRY(char_id(t, w + i, cl, i == 0, i + cl == n, &id));
      if (id >= 0) {
        if (unk >= 0) {
          t->sym_id[m++] = unk;
          unk = -1;
        }
        t->sym_id[m++] = id;
      } else {
        int done = 0;
        if (t->byte_fallback) {
          /* every byte of the (prefixed/suffixed) string must have <0xXX> */
          const char *bs = w + i;
          size_t bn = cl;
          int pre = i != 0 && t->cont_prefix_n, suf = i + cl == n && t->eow_suffix_n;
          if (pre || suf) {
            bs = t->word_tmp.s; /* char_id left the decorated string here */
            bn = t->word_tmp.n;
          }
          int ok = 1;
          for (size_t k = 0; k < bn; k++) ok &= t->byte_ids[(unsigned char)bs[k]] >= 0;
          if (ok) {
            for (size_t k = 0; k < bn; k++) t->sym_id[m++] = t->byte_ids[(unsigned char)bs[k]];
            done = 1;
          }
        }
        if (!done && t->unk_id >= 0) {
          if (unk >= 0 && !t->fuse_unk) t->sym_id[m++] = unk;
          unk = t->unk_id;
        }
      }
      i += cl;
    }
    if (unk >= 0) t->sym_id[m++] = unk;
    for (size_t i = 0; i < m; i++) {
      t->sym_prev[i] = (int32_t)i - 1;
      t->sym_next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
      t->sym_dead[i] = 0;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < m; i++) {
      const merge_slot *ms = mergemap_get(&t->merges, t->sym_id[i], t->sym_id[i + 1]);
      if (ms) QT_TRY(heap_push(t, &hn, (bpe_cand){ms->rank, (uint32_t)i, ms->id}));
    }
    while (hn) {
      bpe_cand top = heap_pop(t, &hn);
      uint32_t p = top.pos;
      if (t->sym_dead[p] || t->sym_next[p] < 0) continue;
      int32_t nx = t->sym_next[p];
      const merge_slot *ms = mergemap_get(&t->merges, t->sym_id[p], t->sym_id[nx]);
      if (!ms || ms->id != top.new_id) continue; /* stale entry */
      t->sym_id[p] = top.new_id;
      t->sym_next[p] = t->sym_next[nx];
      t->sym_dead[nx] = 1;
      if (t->sym_next[nx] >= 0) t->sym_prev[t->sym_next[nx]] = (int32_t)p;
      if (t->sym_prev[p] >= 0) {
        int32_t pv = t->sym_prev[p];
        const merge_slot *a = mergemap_get(&t->merges, t->sym_id[pv], t->sym_id[p]);
        if (a) QT_TRY(heap_push(t, &hn, (bpe_cand){a->rank, (uint32_t)pv, a->id}));
      }
      if (t->sym_next[p] >= 0) {
        const merge_slot *b = mergemap_get(&t->merges, t->sym_id[p], t->sym_id[t->sym_next[p]]);
        if (b) QT_TRY(heap_push(t, &hn, (bpe_cand){b->rank, p, b->id}));
      }
    }
    if (m) {
      QT_TRY(ids_reserve(out, out->n + m));
      for (int32_t i = 0; i >= 0; i = t->sym_next[i]) out->ids[out->n++] = t->sym_id[i];
    }
  }
store:
  if (cacheable) {
    if (t->cache.n >= CACHE_MAX_ENTRIES) {
      strmap_clear(&t->cache);
      t->cache_n = 0;
    }
    size_t cnt = out->n - out0;
    QT_TRY(grow((void **)&t->cache_ids, &t->cache_cap, t->cache_n + cnt, sizeof *t->cache_ids));
    QT_TRY(grow((void **)&t->cache_spans, &t->cache_spans_cap, t->cache.n + 1, sizeof *t->cache_spans));
    memcpy(t->cache_ids + t->cache_n, out->ids + out0, cnt * sizeof(int32_t));
    t->cache_spans[t->cache.n] = (span){(uint32_t)t->cache_n, (uint32_t)cnt};
    t->cache_n += cnt;
    QT_TRY(strmap_put(&t->cache, w, n, (int32_t)t->cache.n));
  }
  return QT_OK;
}

/* Without a pre-tokenizer (SentencePiece-style files) the whole text is one
 * BPE word. A boundary between characters a and b can never be crossed by a
 * merge when both are vocabulary tokens by themselves and no vocabulary
 * token contains "ab": every merge result is a vocabulary token, so no symbol
 * ever spans the boundary, and merges on either side neither see nor change
 * the other side (their relative order is unchanged by interleaving). The
 * word is therefore cut there and each chunk encoded alone (and cached) with
 * the same result; this is an exact speed-up, not an approximation. */
static size_t pair_slot(uint64_t key, size_t mask) { return merge_hash(key, mask); }

static int pair_present(const qt_tokenizer *t, int32_t a, int32_t b) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  size_t mask = t->pairs_slots - 1, i = pair_slot(key, mask);
  for (;;) {
    if (t->pairs[i] == key) return 1;
    if (t->pairs[i] == MERGE_EMPTY) return 0;
    i = (i + 1) & mask;
  }
}

static qt_status build_pairs(qt_tokenizer *t) {
  if (t->n_pts != 0 || t->cont_prefix_n || t->eow_suffix_n) return QT_OK;
  size_t total = 0;
  for (size_t i = 0; i < t->vocab.n; i++) {
    const char *s = t->vocab.pool + t->vocab.e[i].off;
    if (!utf8_is_valid(s, t->vocab.e[i].len)) return QT_OK; /* keep the plain path */
    total += t->vocab.e[i].len;
  }
  size_t slots = 1024;
  while (slots < total * 2 + 2) slots *= 2;
  t->pairs = malloc(slots * sizeof *t->pairs);
  if (!t->pairs) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (pair table)");
  for (size_t i = 0; i < slots; i++) t->pairs[i] = MERGE_EMPTY;
  t->pairs_slots = slots;
  for (size_t i = 0; i < t->vocab.n; i++) {
    const unsigned char *s = (const unsigned char *)t->vocab.pool + t->vocab.e[i].off;
    size_t n = t->vocab.e[i].len, k = 0;
    int32_t prev = -1, cp;
    while (k < n) {
      k += utf8_decode(s + k, &cp);
      if (prev >= 0) {
        uint64_t key = ((uint64_t)(uint32_t)prev << 32) | (uint32_t)cp;
        size_t j = pair_slot(key, slots - 1);
        while (t->pairs[j] != MERGE_EMPTY && t->pairs[j] != key) j = (j + 1) & (slots - 1);
        t->pairs[j] = key;
      }
      prev = cp;
    }
  }
  return QT_OK;
}

static qt_status bpe_chunked(qt_tokenizer *t, const char *s, size_t n, qt_token_ids *out) {
  size_t start = 0, i = 0;
  int32_t prev_cp = -1, prev_in_vocab = 0;
  while (i < n) {
    int32_t cp;
    size_t cl = utf8_decode((const unsigned char *)s + i, &cp);
    int in_vocab = cp < 128 ? t->ascii_ids[cp] >= 0 : strmap_get(&t->vocab, s + i, cl) >= 0;
    if (i > start && prev_in_vocab && in_vocab && !pair_present(t, prev_cp, cp)) {
      QT_TRY(bpe_word(t, s + start, i - start, out));
      start = i;
    }
    prev_cp = cp;
    prev_in_vocab = in_vocab;
    i += cl;
  }
  return bpe_word(t, s + start, n - start, out);
}

/* ----------------------------------------------------------- added tokens */

static qt_status trie_add(trie *tr, const char *s, size_t n, int32_t token) {
  if (tr->count == 0) {
    QT_TRY(grow((void **)&tr->n, &tr->cap, 1, sizeof *tr->n));
    tr->n[0] = (trie_node){-1, -1, -1, 0};
    tr->count = 1;
  }
  if (n == 0) return QT_OK;
  tr->first[(unsigned char)s[0]] = 1;
  int32_t cur = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)s[i];
    int32_t c = tr->n[cur].child;
    while (c >= 0 && tr->n[c].byte != b) c = tr->n[c].sibling;
    if (c < 0) {
      QT_TRY(grow((void **)&tr->n, &tr->cap, tr->count + 1, sizeof *tr->n));
      c = (int32_t)tr->count++;
      tr->n[c] = (trie_node){-1, tr->n[cur].child, -1, b};
      tr->n[cur].child = c;
    }
    cur = c;
  }
  if (tr->n[cur].token < 0) tr->n[cur].token = token; /* first of equal patterns wins */
  return QT_OK;
}

/* Longest pattern starting at s[0..n): returns its token index or -1. */
static int32_t trie_longest(const trie *tr, const char *s, size_t n, size_t *len) {
  int32_t best = -1, cur = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)s[i];
    int32_t c = tr->n[cur].child;
    while (c >= 0 && tr->n[c].byte != b) c = tr->n[c].sibling;
    if (c < 0) break;
    cur = c;
    if (tr->n[cur].token >= 0) {
      best = tr->n[cur].token;
      *len = i + 1;
    }
  }
  return best;
}

static int32_t prev_cp(const char *s, size_t end) {
  size_t k = end;
  while (k > 0 && ((unsigned char)s[k - 1] & 0xC0) == 0x80) k--;
  if (k == 0) return -1;
  int32_t cp;
  utf8_decode((const unsigned char *)s + k - 1, &cp);
  return cp;
}

/* Next added-token match in s[from..n) (tokenizers added_vocabulary.rs
 * find_matches, leftmost-longest). Sets [*ms, *me) including lstrip/rstrip
 * whitespace, never starting before `floor`; returns the token index or -1. */
static int32_t added_next(const qt_tokenizer *t, const trie *tr, const char *s, size_t n,
                          size_t from, size_t floor, size_t *ms, size_t *me) {
  if (tr->count == 0) return -1;
  for (size_t i = from; i < n; i++) {
    if (!tr->first[(unsigned char)s[i]]) continue;
    size_t len = 0;
    int32_t k = trie_longest(tr, s + i, n - i, &len);
    if (k < 0) continue;
    const added_token *a = &t->added[k];
    size_t st = i, en = i + len;
    if (a->single_word) {
      int32_t b = prev_cp(s, st), c = -1;
      if (en < n) utf8_decode((const unsigned char *)s + en, &c);
      if ((b >= 0 && cp_is_word(b)) || (c >= 0 && cp_is_word(c))) continue;
    }
    if (a->lstrip) {
      while (st > floor) {
        size_t k2 = st - 1;
        while (k2 > floor && ((unsigned char)s[k2] & 0xC0) == 0x80) k2--;
        int32_t cp;
        utf8_decode((const unsigned char *)s + k2, &cp);
        if (!cp_is_white_space(cp)) break;
        st = k2;
      }
    }
    if (a->rstrip) {
      while (en < n) {
        int32_t cp;
        size_t cl = utf8_decode((const unsigned char *)s + en, &cp);
        if (!cp_is_white_space(cp)) break;
        en += cl;
      }
    }
    *ms = st;
    *me = en;
    return k;
  }
  return -1;
}

/* Pre-tokenizes and BPE-encodes one text span (already normalized). */
static qt_status encode_pretok(qt_tokenizer *t, const char *s, size_t n, int at_start,
                               qt_token_ids *out) {
  if (n == 0) return QT_OK;
  if (t->n_pts == 0) return t->pairs ? bpe_chunked(t, s, n, out) : bpe_word(t, s, n, out);
  qt_text_buf *cur = &t->pt_buf[0];
  cur->n = 0;
  QT_TRY(text_append(cur, s, n));
  size_t np = 1;
  QT_TRY(grow((void **)&t->pieces[0], &t->pieces_cap[0], 1, sizeof(piece)));
  t->pieces[0][0] = (piece){0, (uint32_t)n, (unsigned char)at_start, 0};
  int pi = 0, bi = 0;
  for (size_t k = 0; k < t->n_pts; k++) {
    size_t on = 0;
    int moved = 0;
    QT_TRY(pt_apply(t, &t->pts[k], &t->pt_buf[bi], t->pieces[pi], np, &t->pt_buf[1 - bi],
                    &t->pieces[1 - pi], &on, &t->pieces_cap[1 - pi], &moved));
    pi = 1 - pi;
    np = on;
    if (moved) bi = 1 - bi;
  }
  const char *b = t->pt_buf[bi].s;
  for (size_t i = 0; i < np; i++) QT_TRY(bpe_word(t, b + t->pieces[pi][i].off, t->pieces[pi][i].len, out));
  return QT_OK;
}

/* Normalizes a raw span, splits it on normalized added tokens, encodes. */
static qt_status encode_span(qt_tokenizer *t, const char *s, size_t n, int at_start, qt_token_ids *out) {
  if (n == 0) return QT_OK;
  const char *ns = s;
  size_t nn = n;
  if (t->n_norms) QT_TRY(normalize(t, s, n, &ns, &nn)); /* into norm_tmp, untouched below */
  if (t->norm_trie.count == 0) return encode_pretok(t, ns, nn, at_start, out);
  size_t pos = 0, ms, me;
  int32_t k;
  while ((k = added_next(t, &t->norm_trie, ns, nn, pos, pos, &ms, &me)) >= 0) {
    if (ms > pos) QT_TRY(encode_pretok(t, ns + pos, ms - pos, at_start && pos == 0, out));
    QT_TRY(ids_push(out, t->added[k].id));
    pos = me;
  }
  if (pos < nn) QT_TRY(encode_pretok(t, ns + pos, nn - pos, at_start && pos == 0, out));
  return QT_OK;
}

qt_status qt_tokenizer_encode(qt_tokenizer *t, const char *text, size_t len, unsigned flags,
                              qt_token_ids *out) {
  QT_ASSERT(t && out && (text || len == 0));
  out->n = 0;
  if (len > (size_t)UINT32_MAX / 4)
    return qt_fail(QT_ERR_INVALID, "%s: text of %zu bytes is too long to encode at once (limit 1 GiB)", t->name, len);
  if ((flags & QT_TOK_ADD_BOS) && t->bos_id < 0)
    return qt_fail(QT_ERR_CONFIG, "%s: no BOS token id (config.json bos_token_id or tokenizer_config.json bos_token)", t->name);
  if ((flags & QT_TOK_ADD_EOS) && t->eos_id < 0)
    return qt_fail(QT_ERR_CONFIG, "%s: no EOS token id (config.json eos_token_id or tokenizer_config.json eos_token)", t->name);
  if (flags & QT_TOK_ADD_BOS) QT_TRY(ids_push(out, t->bos_id));
  const char *s = text;
  if (!utf8_is_valid(text, len)) {
    QT_TRY(qt_utf8_sanitize(text, len, &t->clean, NULL));
    s = t->clean.s;
    len = t->clean.n;
  }
  size_t pos = 0, ms, me;
  int32_t k;
  while ((k = added_next(t, &t->raw_trie, s, len, pos, pos, &ms, &me)) >= 0) {
    if (ms > pos) QT_TRY(encode_span(t, s + pos, ms - pos, pos == 0, out));
    QT_TRY(ids_push(out, t->added[k].id));
    pos = me;
  }
  if (pos < len) QT_TRY(encode_span(t, s + pos, len - pos, pos == 0, out));
  if (flags & QT_TOK_ADD_EOS) QT_TRY(ids_push(out, t->eos_id));
  return QT_OK;
}

/* ---------------------------------------------------------------- decode */

static qt_status add_dec(qt_tokenizer *t, const cJSON *o, size_t *cap) {
  const char *type, *where = "decoder";
  if (!cJSON_IsObject(o)) return qt_fail(QT_ERR_FORMAT, "%s: decoder must be an object", t->name);
  QT_TRY(jget_str(o, "type", t->name, where, 1, &type));
  if (strcmp(type, "Sequence") == 0) {
    const cJSON *list = NULL;
    QT_TRY(jget(o, "decoders", t->name, where, &list));
    if (!cJSON_IsArray(list))
      return qt_fail(QT_ERR_FORMAT, "%s: decoder Sequence needs an array \"decoders\"", t->name);
    for (const cJSON *c = list->child; c; c = c->next) QT_TRY(add_dec(t, c, cap));
    return QT_OK;
  }
  QT_TRY(grow((void **)&t->decs, cap, t->n_decs + 1, sizeof *t->decs));
  dec_step *s = &t->decs[t->n_decs];
  memset(s, 0, sizeof *s);
  if (strcmp(type, "Replace") == 0) {
    const char *pat, *content;
    int is_regex;
    QT_TRY(parse_pattern(o, t->name, "decoder Replace", &pat, &is_regex));
    if (is_regex) return qt_fail(QT_ERR_UNSUPPORTED, "%s: decoder Replace with a Regex pattern is not supported", t->name);
    QT_TRY(jget_str(o, "content", t->name, where, 1, &content));
    if (!pat[0]) return qt_fail(QT_ERR_FORMAT, "%s: decoder Replace has an empty pattern", t->name);
    s->kind = DEC_REPLACE;
    s->an = strlen(pat);
    s->bn = strlen(content);
    t->n_decs++;
    QT_TRY(dup_str(pat, s->an, &s->a));
    return dup_str(content, s->bn, &s->b);
  }
  if (strcmp(type, "ByteFallback") == 0) s->kind = DEC_BYTEFALLBACK;
  else if (strcmp(type, "Fuse") == 0) s->kind = DEC_FUSE;
  else if (strcmp(type, "ByteLevel") == 0) s->kind = DEC_BYTELEVEL;
  else if (strcmp(type, "Strip") == 0) {
    const char *c;
    s->kind = DEC_STRIP;
    QT_TRY(jget_str(o, "content", t->name, where, 1, &c));
    size_t cn = strlen(c);
    if (cn == 0 || cn > 4 || utf8_char_len((unsigned char)c[0]) != cn || !utf8_is_valid(c, cn))
      return qt_fail(QT_ERR_FORMAT, "%s: decoder Strip: \"content\" must be one character", t->name);
    utf8_decode((const unsigned char *)c, &s->strip_char);
    QT_TRY(jget_uint(o, "start", t->name, where, 0, &s->start));
    QT_TRY(jget_uint(o, "stop", t->name, where, 0, &s->stop));
  } else if (strcmp(type, "Metaspace") == 0) {
    s->kind = DEC_METASPACE;
    QT_TRY(parse_replacement(o, t->name, "decoder Metaspace", s->repl, &s->repl_n));
    QT_TRY(parse_prepend_scheme(o, t->name, "decoder Metaspace", &s->prepend_scheme));
  } else {
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "%s: decoder type \"%s\" is not supported (supported: Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace)",
                   t->name, type);
  }
  t->n_decs++;
  return QT_OK;
}

static qt_status dspan_push(qt_tokenizer *t, int which, size_t *n, size_t off, size_t len) {
  QT_TRY(grow((void **)&t->dspans[which], &t->dspans_cap[which], *n + 1, sizeof(span)));
  t->dspans[which][(*n)++] = (span){(uint32_t)off, (uint32_t)len};
  return QT_OK;
}

/* Parses "<0xXX>" like Rust's u8::from_str_radix(&token[3..5], 16)
 * (decoders/byte_fallback.rs), which also accepts a leading '+'. */
static int byte_token(const char *s, size_t n, unsigned *v) {
  if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
  unsigned r = 0;
  for (int i = 3; i < 5; i++) {
    char c = s[i];
    unsigned d;
    if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
    else if (c == '+' && i == 3) continue;
    else return 0;
    r = r * 16 + d;
  }
  *v = r;
  return 1;
}

/* One decoder over the token list (buffer ib, spans 0..in) -> ob, spans 1-..; */
static qt_status dec_apply(qt_tokenizer *t, const dec_step *d, const qt_text_buf *ib, const span *in,
                           size_t in_n, qt_text_buf *ob, int ow, size_t *out_n) {
  ob->n = 0;
  *out_n = 0;
  QT_TRY(text_reserve(ob, ib->n + 16));
  switch (d->kind) {
    case DEC_REPLACE: /* decoders: normalizers::Replace applied per token */
      for (size_t i = 0; i < in_n; i++) {
        size_t st = ob->n, k = 0;
        const char *s = ib->s + in[i].off;
        size_t n = in[i].n;
        while (k < n) {
          const char *hit = find_bytes(s + k, n - k, d->a, d->an);
          if (!hit) break;
          QT_TRY(text_append(ob, s + k, (size_t)(hit - s) - k));
          QT_TRY(text_append(ob, d->b, d->bn));
          k = (size_t)(hit - s) + d->an;
        }
        QT_TRY(text_append(ob, s + k, n - k));
        QT_TRY(dspan_push(t, ow, out_n, st, ob->n - st));
      }
      return QT_OK;
    case DEC_BYTEFALLBACK: { /* decoders/byte_fallback.rs */
      size_t run0 = 0, run = 0; /* pending bytes are staged at the end of ob */
      for (size_t i = 0; i <= in_n; i++) {
        unsigned v = 0;
        int isb = i < in_n && byte_token(ib->s + in[i].off, in[i].n, &v);
        if (isb) {
          if (run == 0) run0 = ob->n;
          char c = (char)v;
          QT_TRY(text_append(ob, &c, 1));
          run++;
          continue;
        }
        if (run) {
          if (utf8_is_valid(ob->s + run0, run)) {
            QT_TRY(dspan_push(t, ow, out_n, run0, run));
          } else { /* each byte becomes U+FFFD */
            ob->n = run0;
            for (size_t k = 0; k < run; k++) {
              size_t st = ob->n;
              QT_TRY(text_append(ob, "\xEF\xBF\xBD", 3));
              QT_TRY(dspan_push(t, ow, out_n, st, 3));
            }
          }
          run = 0;
        }
        if (i < in_n) {
          size_t st = ob->n;
          QT_TRY(text_append(ob, ib->s + in[i].off, in[i].n));
          QT_TRY(dspan_push(t, ow, out_n, st, in[i].n));
        }
      }
      return QT_OK;
    }
    case DEC_FUSE: /* decoders/fuse.rs */
      for (size_t i = 0; i < in_n; i++) QT_TRY(text_append(ob, ib->s + in[i].off, in[i].n));
      return dspan_push(t, ow, out_n, 0, ob->n);
    case DEC_STRIP: /* decoders/strip.rs: up to `start` leading, `stop` trailing chars */
      for (size_t i = 0; i < in_n; i++) {
        const char *s = ib->s + in[i].off;
        size_t n = in[i].n, a = 0, b = n;
        for (size_t k = 0; k < d->start && a < n; k++) {
          int32_t cp;
          size_t cl = utf8_decode((const unsigned char *)s + a, &cp);
          if (cp != d->strip_char) break;
          a += cl;
        }
        for (size_t k = 0; k < d->stop && b > a; k++) {
          size_t c0 = b - 1;
          while (c0 > a && ((unsigned char)s[c0] & 0xC0) == 0x80) c0--;
          int32_t cp;
          utf8_decode((const unsigned char *)s + c0, &cp);
          if (cp != d->strip_char) break;
          b = c0;
        }
        size_t st = ob->n;
        QT_TRY(text_append(ob, s + a, b - a));
        QT_TRY(dspan_push(t, ow, out_n, st, b - a));
      }
      return QT_OK;
    case DEC_METASPACE: /* decoders: pre_tokenizers/metaspace.rs decode_chain */
      for (size_t i = 0; i < in_n; i++) {
        const char *s = ib->s + in[i].off;
        size_t n = in[i].n, st = ob->n;
        for (size_t k = 0; k < n;) {
          size_t cl = utf8_char_len((unsigned char)s[k]);
          if (cl == d->repl_n && memcmp(s + k, d->repl, cl) == 0) {
            if (!(i == 0 && d->prepend_scheme != PREPEND_NEVER)) QT_TRY(text_append(ob, " ", 1));
          } else {
            QT_TRY(text_append(ob, s + k, cl));
          }
          k += cl;
        }
        QT_TRY(dspan_push(t, ow, out_n, st, ob->n - st));
      }
      return QT_OK;
    case DEC_BYTELEVEL: { /* pre_tokenizers/byte_level.rs decode_chain */
      qt_text_buf *raw = &t->word_tmp;
      raw->n = 0;
      for (size_t i = 0; i < in_n; i++) {
        const char *s = ib->s + in[i].off;
        size_t n = in[i].n, st = raw->n;
        int ok = 1;
        for (size_t k = 0; k < n && ok;) {
          int32_t cp;
          size_t cl = utf8_decode((const unsigned char *)s + k, &cp);
          if (cp < 324 && t->bl_dec[cp] >= 0) {
            char c = (char)t->bl_dec[cp];
            QT_TRY(text_append(raw, &c, 1));
          } else {
            ok = 0;
          }
          k += cl;
        }
        if (!ok) { /* not byte-level text: the token's own bytes */
          raw->n = st;
          QT_TRY(text_append(raw, s, n));
        }
      }
      QT_TRY(qt_utf8_sanitize(raw->s ? raw->s : "", raw->n, ob, NULL));
      return dspan_push(t, ow, out_n, 0, ob->n);
    }
  }
  return QT_OK;
}

qt_status qt_tokenizer_decode(qt_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                              qt_text_buf *out) {
  QT_ASSERT(t && out && (ids || n == 0));
  qt_text_buf *b0 = &t->dec_buf[0];
  b0->n = 0;
  QT_TRY(text_reserve(b0, 0));
  b0->s[0] = '\0';
  size_t ns = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= t->vocab_size || t->id_off[id] == UINT64_MAX)
      return qt_fail(QT_ERR_INVALID, "%s: token id %d is not in the vocabulary (size %d)", t->name,
                     (int)id, (int)t->vocab_size);
    if (skip_special && t->id_special[id]) continue;
    size_t st = b0->n;
    QT_TRY(text_append(b0, t->id_pool + t->id_off[id], t->id_len[id]));
    QT_TRY(dspan_push(t, 0, &ns, st, t->id_len[id]));
  }
  out->n = 0;
  if (!t->has_decoder) { /* tokenizers joins the tokens with " " */
    QT_TRY(text_reserve(out, b0->n + ns));
    for (size_t i = 0; i < ns; i++) {
      if (i) QT_TRY(text_append(out, " ", 1));
      QT_TRY(text_append(out, b0->s + t->dspans[0][i].off, t->dspans[0][i].n));
    }
    if (!out->s) QT_TRY(text_reserve(out, 0));
    out->s[out->n] = '\0';
    return QT_OK;
  }
  int w = 0;
  for (size_t k = 0; k < t->n_decs; k++) {
    size_t on = 0;
    QT_TRY(dec_apply(t, &t->decs[k], &t->dec_buf[w], t->dspans[w], ns, &t->dec_buf[1 - w], 1 - w, &on));
    w = 1 - w;
    ns = on;
  }
  QT_TRY(text_reserve(out, t->dec_buf[w].n));
  for (size_t i = 0; i < ns; i++) QT_TRY(text_append(out, t->dec_buf[w].s + t->dspans[w][i].off, t->dspans[w][i].n));
  out->s[out->n] = '\0';
  if (!utf8_is_valid(out->s, out->n)) { /* only when vocabulary strings are not UTF-8 */
    QT_TRY(qt_utf8_sanitize(out->s, out->n, &t->word_tmp, NULL));
    out->n = 0;
    QT_TRY(text_append(out, t->word_tmp.s, t->word_tmp.n));
  }
  return QT_OK;
}

/* ---------------------------------------------------------------- loading */

static qt_status load_model(qt_tokenizer *t, const cJSON *model) {
  const char *f = t->name, *type;
  if (!cJSON_IsObject(model)) return qt_fail(QT_ERR_FORMAT, "%s: missing object \"model\"", f);
  QT_TRY(jget_str(model, "type", f, "model", 0, &type));
  if (type && strcmp(type, "BPE") != 0)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (qlora-train reads BPE tokenizers only)", f, type);
  const cJSON *vocab = NULL, *merges = NULL, *dropout = NULL;
  QT_TRY(jget(model, "vocab", f, "model", &vocab));
  QT_TRY(jget(model, "merges", f, "model", &merges));
  QT_TRY(jget(model, "dropout", f, "model", &dropout));
  if (!type && !merges)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: model has no \"type\" and no \"merges\"; only BPE is supported", f);
  if (!cJSON_IsObject(vocab)) return qt_fail(QT_ERR_FORMAT, "%s: model.vocab must be an object", f);
  if (!cJSON_IsArray(merges)) return qt_fail(QT_ERR_FORMAT, "%s: model.merges must be an array", f);
  if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: model.dropout is not supported (set it to null for training data)", f);
  QT_TRY(jget_bool(model, "byte_fallback", f, "model", 0, &t->byte_fallback));
  QT_TRY(jget_bool(model, "fuse_unk", f, "model", 0, &t->fuse_unk));
  QT_TRY(jget_bool(model, "ignore_merges", f, "model", 0, &t->ignore_merges));
  const char *unk, *pre, *suf;
  QT_TRY(jget_str(model, "unk_token", f, "model", 0, &unk));
  QT_TRY(jget_str(model, "continuing_subword_prefix", f, "model", 0, &pre));
  QT_TRY(jget_str(model, "end_of_word_suffix", f, "model", 0, &suf));
  if (pre && pre[0]) {
    t->cont_prefix_n = strlen(pre);
    QT_TRY(dup_str(pre, t->cont_prefix_n, &t->cont_prefix));
  }
  if (suf && suf[0]) {
    t->eow_suffix_n = strlen(suf);
    QT_TRY(dup_str(suf, t->eow_suffix_n, &t->eow_suffix));
  }
  size_t nv = 0, slots = 1024;
  for (const cJSON *c = vocab->child; c; c = c->next) nv++;
  while (slots < nv * 2 + 2) slots *= 2;
  QT_TRY(strmap_rehash(&t->vocab, slots)); /* sized once: no rehash while filling */
  for (const cJSON *c = vocab->child; c; c = c->next) {
    if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble >= (double)(1 << 26) ||
        c->valuedouble != (double)(int32_t)c->valuedouble)
      return qt_fail(QT_ERR_FORMAT, "%s: model.vocab[\"%s\"] must be an id in [0, 2^26)", f, c->string);
    QT_TRY(strmap_put(&t->vocab, c->string, strlen(c->string), (int32_t)c->valuedouble));
  }
  int n_merges = cJSON_GetArraySize(merges);
  QT_TRY(mergemap_init(&t->merges, (size_t)n_merges));
  uint32_t rank = 0;
  for (const cJSON *c = merges->child; c; c = c->next, rank++) {
    const char *a, *b;
    size_t an, bn;
    if (cJSON_IsString(c)) { /* "a b": exactly one space (bpe/serialization.rs) */
      a = c->valuestring;
      const char *sp = strchr(a, ' ');
      if (!sp || strchr(sp + 1, ' '))
        return qt_fail(QT_ERR_FORMAT, "%s: model.merges[%u] \"%s\" must be two tokens separated by one space", f, rank, a);
      an = (size_t)(sp - a);
      b = sp + 1;
      bn = strlen(b);
    } else if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == 2 && cJSON_IsString(c->child) &&
               cJSON_IsString(c->child->next)) {
      a = c->child->valuestring;
      b = c->child->next->valuestring;
      an = strlen(a);
      bn = strlen(b);
    } else {
      return qt_fail(QT_ERR_FORMAT, "%s: model.merges[%u] must be \"a b\" or [\"a\", \"b\"]", f, rank);
    }
    int32_t ia = strmap_get(&t->vocab, a, an), ib = strmap_get(&t->vocab, b, bn);
    if (ia < 0 || ib < 0)
      return qt_fail(QT_ERR_FORMAT, "%s: model.merges[%u]: token \"%.*s\" is not in the vocabulary", f, rank,
                     (int)(ia < 0 ? an : bn), ia < 0 ? a : b);
    /* merged token = a + b without b's continuing prefix (bpe/model.rs) */
    size_t skip = t->cont_prefix_n && bn >= t->cont_prefix_n ? t->cont_prefix_n : 0;
    qt_text_buf *w = &t->word_tmp;
    w->n = 0;
    QT_TRY(text_append(w, a, an));
    QT_TRY(text_append(w, b + skip, bn - skip));
    int32_t im = strmap_get(&t->vocab, w->s, w->n);
    if (im < 0)
      return qt_fail(QT_ERR_FORMAT, "%s: model.merges[%u]: merged token \"%s\" is not in the vocabulary", f, rank, w->s);
    mergemap_put(&t->merges, ia, ib, rank, im);
  }
  t->unk_id = -1;
  if (unk) {
    t->unk_id = strmap_get(&t->vocab, unk, strlen(unk));
    if (t->unk_id < 0)
      return qt_fail(QT_ERR_FORMAT, "%s: model.unk_token \"%s\" is not in the vocabulary", f, unk);
  }
  for (int b = 0; b < 256; b++) {
    char s[8];
    snprintf(s, sizeof s, "<0x%02X>", b);
    t->byte_ids[b] = t->byte_fallback ? strmap_get(&t->vocab, s, 6) : -1;
  }
  for (int c = 0; c < 128; c++) {
    char s = (char)c;
    t->ascii_ids[c] = strmap_get(&t->vocab, &s, 1);
  }
  return QT_OK;
}

static qt_status load_added(qt_tokenizer *t, const cJSON *list) {
  const char *f = t->name;
  if (!list || cJSON_IsNull(list)) return QT_OK;
  if (!cJSON_IsArray(list)) return qt_fail(QT_ERR_FORMAT, "%s: added_tokens must be an array", f);
  size_t n = (size_t)cJSON_GetArraySize(list);
  t->added = calloc(n ? n : 1, sizeof *t->added);
  if (!t->added) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory");
  size_t i = 0;
  for (const cJSON *c = list->child; c; c = c->next, i++) {
    char where[64];
    snprintf(where, sizeof where, "added_tokens[%zu]", i);
    const char *content;
    size_t id;
    int sp, ls, rs, no, sw;
    QT_TRY(jget_str(c, "content", f, where, 1, &content));
    QT_TRY(jget_uint(c, "id", f, where, SIZE_MAX, &id));
    if (id == SIZE_MAX || id >= (1u << 26))
      return qt_fail(QT_ERR_FORMAT, "%s: %s: \"id\" must be an integer in [0, 2^26)", f, where);
    QT_TRY(jget_bool(c, "special", f, where, 0, &sp));
    QT_TRY(jget_bool(c, "lstrip", f, where, 0, &ls));
    QT_TRY(jget_bool(c, "rstrip", f, where, 0, &rs));
    QT_TRY(jget_bool(c, "normalized", f, where, !sp, &no));
    QT_TRY(jget_bool(c, "single_word", f, where, 0, &sw));
    size_t len = strlen(content);
    if (len == 0) continue;
    /* The "id" field is not trusted: tokenizers (added_vocabulary.rs
     * add_tokens) gives a token the id it already has (added before, or in
     * the model vocabulary), else the next id after max(vocab entries,
     * largest added id). Same content again only updates the flags. */
    int32_t k = strmap_get(&t->added_map, content, len);
    added_token *a;
    if (k >= 0) {
      a = &t->added[k];
    } else {
      int32_t nid = strmap_get(&t->vocab, content, len);
      if (nid < 0) {
        nid = (int32_t)t->vocab.n;
        if (t->max_added_id >= 0 && t->max_added_id >= (int32_t)t->vocab.n) nid = t->max_added_id + 1;
      }
      a = &t->added[t->n_added];
      QT_TRY(dup_str(content, len, &a->content));
      a->len = len;
      a->id = nid;
      QT_TRY(strmap_put(&t->added_map, content, len, (int32_t)t->n_added));
      t->n_added++;
      if (nid > t->max_added_id) t->max_added_id = nid;
    }
    if ((size_t)a->id != id)
      QT_LOGW("%s: %s: \"%s\" has id %zu in the file but id %d by tokenizers' rules (used)", f, where,
              content, id, (int)a->id);
    a->special = (unsigned char)sp;
    a->lstrip = (unsigned char)ls;
    a->rstrip = (unsigned char)rs;
    a->normalized = (unsigned char)no;
    a->single_word = (unsigned char)sw;
  }
  return QT_OK;
}

/* Tries over added tokens (added_vocabulary.rs refresh_added_tokens):
 * non-normalized contents as written; normalized ones after the normalizer. */
static qt_status build_tries(qt_tokenizer *t) {
  for (size_t i = 0; i < t->n_added; i++) {
    added_token *a = &t->added[i];
    if (a->len == 0) continue;
    if (!a->normalized) {
      QT_TRY(trie_add(&t->raw_trie, a->content, a->len, (int32_t)i));
    } else {
      const char *ns;
      size_t nn;
      QT_TRY(normalize(t, a->content, a->len, &ns, &nn));
      QT_TRY(trie_add(&t->norm_trie, ns, nn, (int32_t)i));
      /* tokenizers decodes such a token from its normalized form
       * (added_vocabulary.rs simple_id_to_token, normalized_cache) */
      QT_TRY(dup_str(ns, nn, &a->norm));
      a->norm_len = nn;
    }
  }
  return QT_OK;
}

static qt_status build_id_table(qt_tokenizer *t) {
  int32_t maxid = -1;
  for (size_t i = 0; i < t->vocab.n; i++)
    if (t->vocab.e[i].val > maxid) maxid = t->vocab.e[i].val;
  for (size_t i = 0; i < t->n_added; i++)
    if (t->added[i].id > maxid) maxid = t->added[i].id;
  t->vocab_size = maxid + 1;
  size_t vs = (size_t)t->vocab_size ? (size_t)t->vocab_size : 1;
  t->id_off = malloc(vs * sizeof *t->id_off);
  t->id_len = calloc(vs, sizeof *t->id_len);
  t->id_special = calloc(vs, 1);
  size_t pool = t->vocab.pool_n;
  for (size_t i = 0; i < t->n_added; i++) pool += (t->added[i].norm ? t->added[i].norm_len : t->added[i].len) + 1;
  t->id_pool = malloc(pool + 1);
  if (!t->id_off || !t->id_len || !t->id_special || !t->id_pool)
    return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory (id table)");
  for (size_t i = 0; i < vs; i++) t->id_off[i] = UINT64_MAX;
  memcpy(t->id_pool, t->vocab.pool, t->vocab.pool_n);
  for (size_t i = 0; i < t->vocab.n; i++) {
    /* a duplicated id keeps its first token (first entry in file order) */
    int32_t id = t->vocab.e[i].val;
    if (t->id_off[id] != UINT64_MAX) continue;
    t->id_off[id] = t->vocab.e[i].off;
    t->id_len[id] = t->vocab.e[i].len;
  }
  size_t p = t->vocab.pool_n;
  for (size_t i = 0; i < t->n_added; i++) { /* added tokens take precedence */
    added_token *a = &t->added[i];
    const char *c = a->norm ? a->norm : a->content;
    size_t cl = a->norm ? a->norm_len : a->len;
    memcpy(t->id_pool + p, c, cl + 1);
    t->id_off[a->id] = p;
    t->id_len[a->id] = (uint32_t)cl;
    t->id_special[a->id] = a->special;
    p += cl + 1;
  }
  return QT_OK;
}

/* GPT-2 bytes_to_unicode (openai/gpt-2 src/encoder.py): printable bytes map
 * to themselves, the other 68 to U+0100 onwards in byte order. */
static void build_byte_level(qt_tokenizer *t) {
  int next = 256;
  for (int i = 0; i < 324; i++) t->bl_dec[i] = -1;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = keep ? b : next++;
    char o[4];
    size_t n = utf8_encode(cp, o);
    memcpy(t->bl_enc[b], o, n);
    t->bl_enc_n[b] = (unsigned char)n;
    t->bl_dec[cp] = (int16_t)b;
  }
}

qt_status qt_tokenizer_load_json(const char *json, size_t len, const char *name, qt_tokenizer **out) {
  *out = NULL;
  qt_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory");
  t->bos_id = t->eos_id = -1;
  t->unk_id = -1;
  t->max_added_id = -1;
  build_byte_level(t);
  qt_status st = dup_str(name, strlen(name), &t->name);
  cJSON *root = NULL;
  if (st == QT_OK) {
    root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
      const char *e = cJSON_GetErrorPtr();
      st = qt_fail(QT_ERR_FORMAT, "%s: not a JSON object (parse error near byte %zu)", name,
                   e && e >= json && e <= json + len ? (size_t)(e - json) : (size_t)0);
    }
  }
  const cJSON *v = NULL;
  size_t cap = 0;
  if (st == QT_OK) st = jget(root, "model", name, "top level", &v);
  if (st == QT_OK) st = load_model(t, v);
  if (st == QT_OK) st = jget(root, "normalizer", name, "top level", &v);
  if (st == QT_OK && v && !cJSON_IsNull(v)) st = add_norm(t, v, &cap);
  cap = 0;
  if (st == QT_OK) st = jget(root, "pre_tokenizer", name, "top level", &v);
  if (st == QT_OK && v && !cJSON_IsNull(v)) st = add_pt(t, v, &cap);
  cap = 0;
  if (st == QT_OK) st = jget(root, "decoder", name, "top level", &v);
  if (st == QT_OK && v && !cJSON_IsNull(v)) {
    t->has_decoder = 1;
    st = add_dec(t, v, &cap);
  }
  if (st == QT_OK) st = jget(root, "added_tokens", name, "top level", &v);
  if (st == QT_OK) st = load_added(t, v);
  if (st == QT_OK) st = build_tries(t);
  if (st == QT_OK) st = build_id_table(t);
  if (st == QT_OK) st = build_pairs(t);
  cJSON_Delete(root);
  if (st != QT_OK) {
    qt_tokenizer_free(t);
    return st;
  }
  *out = t;
  return QT_OK;
}

static qt_status read_file(const char *path, char **buf, size_t *len, int *missing) {
  *buf = NULL;
  *len = 0;
  if (missing) *missing = 0;
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    if (missing && errno == ENOENT) {
      *missing = 1;
      return QT_OK;
    }
    return qt_fail(QT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  }
  qt_status st = QT_OK;
  if (fseek(fp, 0, SEEK_END) != 0) st = qt_fail(QT_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
  long sz = st == QT_OK ? ftell(fp) : -1;
  if (st == QT_OK && sz < 0) st = qt_fail(QT_ERR_IO, "%s: cannot tell size: %s", path, strerror(errno));
  if (st == QT_OK && fseek(fp, 0, SEEK_SET) != 0) st = qt_fail(QT_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
  if (st == QT_OK) {
    *buf = malloc((size_t)sz + 1);
    if (!*buf) st = qt_fail(QT_ERR_NOMEM, "%s: out of memory (%ld bytes)", path, sz);
  }
  if (st == QT_OK && fread(*buf, 1, (size_t)sz, fp) != (size_t)sz)
    st = qt_fail(QT_ERR_IO, "%s: read failed", path);
  fclose(fp);
  if (st != QT_OK) {
    free(*buf);
    *buf = NULL;
    return st;
  }
  (*buf)[sz] = '\0';
  *len = (size_t)sz;
  return QT_OK;
}

/* {"bos_token": "<s>"} or {"bos_token": {"content": "<s>", ...}} */
static qt_status special_from_tokcfg(qt_tokenizer *t, const cJSON *cfg, const char *file,
                                     const char *key, int32_t *id) {
  const cJSON *v = NULL;
  QT_TRY(jget(cfg, key, file, "top level", &v));
  if (!v || cJSON_IsNull(v)) return QT_OK;
  const char *s = NULL;
  if (cJSON_IsString(v)) s = v->valuestring;
  else if (cJSON_IsObject(v)) QT_TRY(jget_str(v, "content", file, key, 1, &s));
  else return qt_fail(QT_ERR_FORMAT, "%s: \"%s\" must be a string or an object with \"content\"", file, key);
  *id = qt_tokenizer_token_id(t, s);
  if (*id < 0)
    return qt_fail(QT_ERR_FORMAT, "%s: %s \"%s\" is not a token of %s", file, key, s, t->name);
  return QT_OK;
}

static qt_status id_from_config(qt_tokenizer *t, const cJSON *cfg, const char *file, const char *key,
                                int32_t *id) {
  const cJSON *v = NULL;
  QT_TRY(jget(cfg, key, file, "top level", &v));
  if (!v || cJSON_IsNull(v)) return QT_OK;
  if (cJSON_IsArray(v)) v = v->child; /* e.g. Llama-3-Instruct eos_token_id: [128001, 128009] */
  if (!v || !cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != (double)(int32_t)v->valuedouble)
    return qt_fail(QT_ERR_FORMAT, "%s: \"%s\" must be a token id (or a list of them)", file, key);
  *id = (int32_t)v->valuedouble;
  if (*id >= t->vocab_size)
    return qt_fail(QT_ERR_FORMAT, "%s: %s %d is outside the tokenizer's vocabulary (%d)", file, key, (int)*id,
                   (int)t->vocab_size);
  return QT_OK;
}

static qt_status load_bos_eos(qt_tokenizer *t, const char *dir) {
  size_t dn = strlen(dir);
  char *path = malloc(dn + 32);
  if (!path) return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory");
  qt_status st = QT_OK;
  const char *files[2] = {"config.json", "tokenizer_config.json"};
  for (int k = 0; k < 2 && st == QT_OK; k++) {
    snprintf(path, dn + 32, "%s/%s", dir, files[k]);
    char *buf;
    size_t len;
    int missing;
    st = read_file(path, &buf, &len, &missing);
    if (st != QT_OK || missing) continue;
    cJSON *cfg = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cfg || !cJSON_IsObject(cfg)) {
      cJSON_Delete(cfg);
      st = qt_fail(QT_ERR_FORMAT, "%s: not a JSON object", path);
      break;
    }
    int32_t bos = -1, eos = -1;
    if (k == 0) {
      st = id_from_config(t, cfg, path, "bos_token_id", &bos);
      if (st == QT_OK) st = id_from_config(t, cfg, path, "eos_token_id", &eos);
    } else {
      st = special_from_tokcfg(t, cfg, path, "bos_token", &bos);
      if (st == QT_OK) st = special_from_tokcfg(t, cfg, path, "eos_token", &eos);
    }
    cJSON_Delete(cfg);
    if (t->bos_id < 0) t->bos_id = bos;
    if (t->eos_id < 0) t->eos_id = eos;
  }
  free(path);
  return st;
}

qt_status qt_tokenizer_load(const char *path, qt_tokenizer **out) {
  *out = NULL;
  size_t pn = strlen(path);
  char *file = malloc(pn + 32), *dir = malloc(pn + 2);
  if (!file || !dir) {
    free(file);
    free(dir);
    return qt_fail(QT_ERR_NOMEM, "tokenizer: out of memory");
  }
  if (pn >= 5 && strcmp(path + pn - 5, ".json") == 0) {
    memcpy(file, path, pn + 1);
    memcpy(dir, path, pn + 1);
    char *sl = strrchr(dir, '/');
    if (sl) *sl = '\0';
    else strcpy(dir, ".");
  } else {
    snprintf(file, pn + 32, "%s/tokenizer.json", path);
    memcpy(dir, path, pn + 1);
  }
  char *buf;
  size_t len;
  int missing;
  qt_status st = read_file(file, &buf, &len, &missing);
  if (st == QT_OK && missing)
    st = qt_fail(QT_ERR_IO, "%s: no such file; the tokenizer directory must hold a Hugging Face tokenizer.json", file);
  qt_tokenizer *t = NULL;
  if (st == QT_OK) {
    st = qt_tokenizer_load_json(buf, len, file, &t);
    free(buf);
  }
  if (st == QT_OK) {
    st = load_bos_eos(t, dir);
    if (st != QT_OK) qt_tokenizer_free(t);
  }
  free(file);
  free(dir);
  if (st == QT_OK) *out = t;
  return st;
}

void qt_tokenizer_free(qt_tokenizer *t) {
  if (!t) return;
  free(t->name);
  strmap_free(&t->vocab);
  free(t->merges.s);
  free(t->pairs);
  free(t->cont_prefix);
  free(t->eow_suffix);
  for (size_t i = 0; i < t->n_norms; i++) {
    free(t->norms[i].a);
    free(t->norms[i].b);
    regex_free(&t->norms[i].re);
  }
  free(t->norms);
  for (size_t i = 0; i < t->n_pts; i++) regex_free(&t->pts[i].re);
  free(t->pts);
  for (size_t i = 0; i < t->n_decs; i++) {
    free(t->decs[i].a);
    free(t->decs[i].b);
  }
  free(t->decs);
  for (size_t i = 0; i < t->n_added; i++) {
    free(t->added[i].content);
    free(t->added[i].norm);
  }
  free(t->added);
  strmap_free(&t->added_map);
  free(t->raw_trie.n);
  free(t->norm_trie.n);
  free(t->id_off);
  free(t->id_len);
  free(t->id_special);
  free(t->id_pool);
  qt_text_buf_free(&t->clean);
  for (int i = 0; i < 2; i++) {
    qt_text_buf_free(&t->norm_tmp[i]);
    qt_text_buf_free(&t->pt_buf[i]);
    qt_text_buf_free(&t->dec_buf[i]);
    free(t->pieces[i]);
    free(t->dspans[i]);
  }
  qt_text_buf_free(&t->word_tmp);
  free(t->sub);
  free(t->sym_id);
  free(t->sym_prev);
  free(t->sym_next);
  free(t->sym_dead);
  free(t->heap);
  strmap_free(&t->cache);
  free(t->cache_ids);
  free(t->cache_spans);
  free(t);
}

int32_t qt_tokenizer_vocab_size(const qt_tokenizer *t) { return t->vocab_size; }
int32_t qt_tokenizer_bos_id(const qt_tokenizer *t) { return t->bos_id; }
int32_t qt_tokenizer_eos_id(const qt_tokenizer *t) { return t->eos_id; }

void qt_tokenizer_set_bos_eos(qt_tokenizer *t, int32_t bos, int32_t eos) {
  QT_ASSERT(bos < t->vocab_size && eos < t->vocab_size);
  t->bos_id = bos;
  t->eos_id = eos;
}

int32_t qt_tokenizer_token_id(const qt_tokenizer *t, const char *token) {
  size_t n = strlen(token);
  int32_t k = strmap_get(&t->added_map, token, n);
  return k >= 0 ? t->added[k].id : strmap_get(&t->vocab, token, n);
}

const char *qt_tokenizer_id_token(const qt_tokenizer *t, int32_t id) {
  if (id < 0 || id >= t->vocab_size || t->id_off[id] == UINT64_MAX) return NULL;
  return t->id_pool + t->id_off[id];
}
