/* gguf/gguf_vocab.c — tokenizer.* GGUF keys from Hugging Face tokenizer files
 * (see gguf_vocab.h for what convert_hf_to_gguf.py does and we follow). */
#include "gguf/gguf_vocab.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fs.h"

static const char *const special_names[QT_GGUF_SPECIAL_COUNT] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
enum { SP_BOS = 0, SP_EOS, SP_UNK, SP_SEP, SP_PAD, SP_CLS, SP_MASK };

/* The split patterns of the pre-tokenizers we know, and llama.cpp's name for
 * each (llama-vocab.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3 / _QWEN2). */
static const struct {
  const char *pattern, *pre;
} known_pre[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+",
     "llama-bpe"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+",
     "qwen2"},
};

static bool file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* *out = parsed JSON of DIR/NAME, or NULL when the file does not exist. */
static qt_status load_json(const char *dir, const char *name, cJSON **out) {
  char p[4200];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  *out = NULL;
  if (!file_exists(p)) return QT_OK;
  uint8_t *buf;
  size_t len;
  QT_TRY(qt_fs_read_file(p, (size_t)1 << 30, &buf, &len));
  *out = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  if (!*out) return qt_fail(QT_ERR_FORMAT, "%s: not valid JSON", p);
  return QT_OK;
}

static qt_status alloc_tokens(qt_gguf_vocab *v, size_t n, bool scores) {
  v->n = n;
  v->tokens = calloc(n ? n : 1, sizeof *v->tokens);
  v->types = calloc(n ? n : 1, sizeof *v->types);
  if (scores) v->scores = calloc(n ? n : 1, sizeof *v->scores);
  if (!v->tokens || !v->types || (scores && !v->scores)) return qt_fail(QT_ERR_NOMEM, "out of memory");
  return QT_OK;
}

static qt_status set_token(qt_gguf_vocab *v, size_t i, const char *s, size_t len) {
  char *t = malloc(len + 1);
  if (!t) return qt_fail(QT_ERR_NOMEM, "out of memory");
  memcpy(t, s, len);
  t[len] = '\0';
  free(v->tokens[i]);
  v->tokens[i] = t;
  return QT_OK;
}

static qt_status set_pad(qt_gguf_vocab *v, size_t i) {
  char b[32];
  snprintf(b, sizeof b, "[PAD%zu]", i);
  v->types[i] = QT_GGUF_TOK_UNUSED;
  if (v->scores) v->scores[i] = -10000.0f;
  return set_token(v, i, b, strlen(b));
}

/* convert_hf_to_gguf.py does_token_look_special */
static bool looks_special(const char *t) {
  size_t n = strlen(t);
  if (!strcmp(t, "<pad>") || !strcmp(t, "<mask>") || !strcmp(t, "<2mass>") || !strcmp(t, "[@BOS@]")) return true;
  if (n >= 4 && !strncmp(t, "<|", 2) && !strcmp(t + n - 2, "|>")) return true;
  /* fullwidth bars U+FF5C (ef bd 9c): "<｜" ... "｜>" */
  if (n >= 8 && !strncmp(t, "<\xef\xbd\x9c", 4) && !strcmp(t + n - 4, "\xef\xbd\x9c>")) return true;
  return false;
}

/* An added token that is not special: U+2581 -> ' ' (pre-normalized, as convert does). */
static qt_status set_user_defined(qt_gguf_vocab *v, size_t i, const char *s) {
  size_t n = strlen(s);
  char *t = malloc(n + 1);
  if (!t) return qt_fail(QT_ERR_NOMEM, "out of memory");
  size_t k = 0;
  for (size_t j = 0; j < n;) {
    if (j + 3 <= n && !memcmp(s + j, "\xe2\x96\x81", 3)) {
      t[k++] = ' ';
      j += 3;
    } else {
      t[k++] = s[j++];
    }
  }
  t[k] = '\0';
  free(v->tokens[i]);
  v->tokens[i] = t;
  v->types[i] = QT_GGUF_TOK_USER_DEFINED;
  return QT_OK;
}

/* ---- sentencepiece tokenizer.model (protobuf) -------------------------------- */

typedef struct {
  const uint8_t *p, *end;
} pb;

static bool pb_varint(pb *b, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && b->p < b->end; shift += 7) {
    uint8_t c = *b->p++;
    *v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return true;
  }
  return false;
}

/* Skips a field of wire type wt; false when malformed. */
static bool pb_skip(pb *b, unsigned wt) {
  uint64_t n;
  switch (wt) {
    case 0: return pb_varint(b, &n);
    case 1: if (b->end - b->p < 8) return false; b->p += 8; return true;
    case 5: if (b->end - b->p < 4) return false; b->p += 4; return true;
    case 2:
      if (!pb_varint(b, &n) || n > (uint64_t)(b->end - b->p)) return false;
      b->p += n;
      return true;
    default: return false;
  }
}

static qt_status load_spm(const char *dir, int64_t vocab_size, qt_gguf_vocab *v) {
  char path[4200];
  snprintf(path, sizeof path, "%s/tokenizer.model", dir);
  uint8_t *buf;
  size_t len;
  QT_TRY(qt_fs_read_file(path, (size_t)1 << 30, &buf, &len));
  qt_status r = alloc_tokens(v, (size_t)vocab_size, true);
  for (size_t i = 0; r == QT_OK && i < v->n; i++) r = set_pad(v, i);
  pb b = {buf, buf + len};
  size_t id = 0;
  while (r == QT_OK && b.p < b.end) {
    uint64_t key;
    if (!pb_varint(&b, &key)) {
      r = qt_fail(QT_ERR_FORMAT, "%s: malformed sentencepiece model", path);
      break;
    }
    if ((key >> 3) != 1 || (key & 7) != 2) { /* not ModelProto.pieces */
      if (!pb_skip(&b, (unsigned)(key & 7))) r = qt_fail(QT_ERR_FORMAT, "%s: malformed sentencepiece model", path);
      continue;
    }
    uint64_t n;
    if (!pb_varint(&b, &n) || n > (uint64_t)(b.end - b.p)) {
      r = qt_fail(QT_ERR_FORMAT, "%s: malformed sentencepiece piece %zu", path, id);
      break;
    }
    pb m = {b.p, b.p + n};
    b.p += n;
    const uint8_t *piece = NULL;
    uint64_t piece_len = 0;
    float score = 0.0f;
    uint64_t type = QT_GGUF_TOK_NORMAL; /* SentencePiece.Type default NORMAL = 1 */
    while (m.p < m.end) {
      uint64_t k;
      if (!pb_varint(&m, &k)) break;
      unsigned f = (unsigned)(k >> 3), wt = (unsigned)(k & 7);
      if (f == 1 && wt == 2) {
        if (!pb_varint(&m, &piece_len) || piece_len > (uint64_t)(m.end - m.p)) break;
        piece = m.p;
        m.p += piece_len;
      } else if (f == 2 && wt == 5 && m.end - m.p >= 4) {
        uint32_t u = (uint32_t)m.p[0] | ((uint32_t)m.p[1] << 8) | ((uint32_t)m.p[2] << 16) | ((uint32_t)m.p[3] << 24);
        memcpy(&score, &u, 4);
        m.p += 4;
      } else if (f == 3 && wt == 0) {
        if (!pb_varint(&m, &type)) break;
      } else if (!pb_skip(&m, wt)) {
        break;
      }
    }
    if (m.p != m.end || !piece || type < 1 || type > 6) {
      r = qt_fail(QT_ERR_FORMAT, "%s: malformed sentencepiece piece %zu", path, id);
      break;
    }
    if (id < v->n) {
      r = set_token(v, id, (const char *)piece, (size_t)piece_len);
      v->scores[id] = score;
      v->types[id] = (int32_t)type; /* sentencepiece's type numbers are llama.cpp's */
    }
    id++;
  }
  free(buf);
  if (r == QT_OK && id == 0) r = qt_fail(QT_ERR_FORMAT, "%s: no pieces", path);
  return r;
}

/* tokenizer_config.json added_tokens_decoder over a sentencepiece vocabulary */
static qt_status spm_added(const cJSON *tc, qt_gguf_vocab *v) {
  const cJSON *dec = tc ? cJSON_GetObjectItemCaseSensitive(tc, "added_tokens_decoder") : NULL;
  const cJSON *e;
  cJSON_ArrayForEach(e, dec) {
    char *end;
    long id = strtol(e->string, &end, 10);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
    if (*end || id < 0 || !cJSON_IsString(c)) continue;
    if ((size_t)id >= v->n) continue;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) || looks_special(c->valuestring)) {
      QT_TRY(set_token(v, (size_t)id, c->valuestring, strlen(c->valuestring)));
      v->types[id] = QT_GGUF_TOK_CONTROL;
    } else {
      QT_TRY(set_user_defined(v, (size_t)id, c->valuestring));
    }
    v->scores[id] = -1000.0f;
  }
  return QT_OK;
}

/* ---- byte-level BPE from tokenizer.json ----------------------------------- */

static qt_status load_bpe(const char *dir, const cJSON *tj, int64_t vocab_size, qt_gguf_vocab *v) {
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0 || !cJSON_IsObject(vocab))
    return qt_fail(QT_ERR_UNSUPPORTED, "%s/tokenizer.json: model.type is not BPE: GGUF export supports SentencePiece "
                   "(tokenizer.model) and byte-level BPE tokenizers", dir);
  /* the pre-tokenizer's split pattern names llama.cpp's pre-tokenizer */
  const cJSON *pt = cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer");
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
  const char *pattern = NULL;
  bool byte_level = false;
  int n_pt = list ? cJSON_GetArraySize(list) : (pt && !cJSON_IsNull(pt) ? 1 : 0);
  for (int i = 0; i < n_pt; i++) {
    const cJSON *one = list ? cJSON_GetArrayItem(list, i) : pt;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(one, "type");
    if (!cJSON_IsString(ty)) continue;
    if (!strcmp(ty->valuestring, "ByteLevel")) byte_level = true;
    if (!strcmp(ty->valuestring, "Split")) {
      const cJSON *rx = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(one, "pattern"), "Regex");
      if (cJSON_IsString(rx)) pattern = rx->valuestring;
    }
  }
  if (!byte_level)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s/tokenizer.json: a BPE tokenizer without tokenizer.model that is not "
                   "byte-level: GGUF export needs tokenizer.model for SentencePiece vocabularies", dir);
  v->pre = NULL;
  for (size_t i = 0; pattern && i < sizeof known_pre / sizeof known_pre[0]; i++)
    if (!strcmp(pattern, known_pre[i].pattern)) v->pre = known_pre[i].pre;
  if (!v->pre)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s/tokenizer.json: pre-tokenizer pattern not known to the GGUF exporter "
                   "(known: Llama-3 'llama-bpe', Qwen2/Qwen3 'qwen2'); llama.cpp needs its name", dir);
  QT_TRY(alloc_tokens(v, (size_t)vocab_size, false));
  const cJSON *e;
  cJSON_ArrayForEach(e, vocab) {
    if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (double)vocab_size)
      return qt_fail(QT_ERR_FORMAT, "%s/tokenizer.json: token '%s' has id outside config.json vocab_size %lld", dir,
                     e->string, (long long)vocab_size);
    size_t id = (size_t)e->valuedouble;
    QT_TRY(set_token(v, id, e->string, strlen(e->string)));
    v->types[id] = QT_GGUF_TOK_NORMAL;
  }
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
  cJSON_ArrayForEach(e, added) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id"), *c = cJSON_GetObjectItemCaseSensitive(e, "content");
    if (!cJSON_IsNumber(id) || !cJSON_IsString(c) || id->valuedouble < 0 || id->valuedouble >= (double)vocab_size)
      return qt_fail(QT_ERR_FORMAT, "%s/tokenizer.json: added token with a bad id or content", dir);
    size_t i = (size_t)id->valuedouble;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) || looks_special(c->valuestring)) {
      QT_TRY(set_token(v, i, c->valuestring, strlen(c->valuestring)));
      v->types[i] = QT_GGUF_TOK_CONTROL;
    } else {
      QT_TRY(set_user_defined(v, i, c->valuestring));
    }
  }
  for (size_t i = 0; i < v->n; i++)
    if (!v->tokens[i]) QT_TRY(set_pad(v, i));
  /* merges: "a b" strings, or [a, b] pairs joined with a space (a space
   * inside a part becomes U+0120, as gguf-py writes it) */
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  size_t nm = (size_t)cJSON_GetArraySize(merges);
  v->merges = calloc(nm ? nm : 1, sizeof *v->merges);
  if (!v->merges) return qt_fail(QT_ERR_NOMEM, "out of memory");
  cJSON_ArrayForEach(e, merges) {
    char *m = NULL;
    if (cJSON_IsString(e)) {
      m = strdup(e->valuestring);
    } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
               cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
      const char *a = cJSON_GetArrayItem(e, 0)->valuestring, *b = cJSON_GetArrayItem(e, 1)->valuestring;
      size_t la = strlen(a), lb = strlen(b);
      m = malloc(2 * (la + lb) + 2);
      if (m) {
        size_t k = 0;
        for (int part = 0; part < 2; part++) {
          const char *s = part ? b : a;
          if (part) m[k++] = ' ';
          for (; *s; s++) {
            if (*s == ' ') { /* U+0120 in UTF-8 */
              m[k++] = (char)0xc4;
              m[k++] = (char)0xa0;
            } else {
              m[k++] = *s;
            }
          }
        }
        m[k] = '\0';
      }
    } else {
      return qt_fail(QT_ERR_FORMAT, "%s/tokenizer.json: merge %zu is neither \"a b\" nor [a, b]", dir, v->n_merges);
    }
    if (!m) return qt_fail(QT_ERR_NOMEM, "out of memory");
    v->merges[v->n_merges++] = m;
  }
  return QT_OK;
}

/* ---- special tokens (gguf-py SpecialVocab) ----------------------------------- */

static const char *token_content(const cJSON *e) {
  if (cJSON_IsString(e)) return e->valuestring;
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
  return cJSON_IsString(c) ? c->valuestring : NULL;
}

static const char *special_token_of(const cJSON *template_item) {
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(template_item, "SpecialToken");
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(st, "id");
  return cJSON_IsString(id) ? id->valuestring : NULL;
}

static const char *seq_of(const cJSON *template_item) {
  const cJSON *sq = cJSON_GetObjectItemCaseSensitive(template_item, "Sequence");
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(sq, "id");
  return cJSON_IsString(id) ? id->valuestring : NULL;
}

static bool eq(const char *a, const char *b) { return a && b && !strcmp(a, b); }

/* TemplateProcessing: BOS/EOS added by `single`, SEP between `pair` halves
 * (vocab.py _try_load_from_tokenizer_json; the EOT/EOM renaming it does for
 * a trailing token other than EOS is not needed by the families we export
 * and is refused below). */
static qt_status template_flags(const char *dir, const cJSON *proc, const char *bos, const char *eos, const char *sep,
                                qt_gguf_vocab *v) {
  const cJSON *single = cJSON_GetObjectItemCaseSensitive(proc, "single");
  const cJSON *pair = cJSON_GetObjectItemCaseSensitive(proc, "pair");
  int ns = cJSON_GetArraySize(single);
  const char *first = NULL, *last = NULL;
  if (ns > 1) {
    first = special_token_of(cJSON_GetArrayItem(single, 0));
    if (first) v->add_special[SP_BOS] = eq(first, bos);
    last = special_token_of(cJSON_GetArrayItem(single, ns - 1));
    if (last) {
      if (!eq(last, eos))
        return qt_fail(QT_ERR_UNSUPPORTED, "%s/tokenizer.json: the post-processor appends '%s', which is not the EOS "
                       "token: not supported by the GGUF exporter", dir, last);
      v->add_special[SP_EOS] = 1;
    }
  }
  int np = cJSON_GetArraySize(pair);
  if (np == 0) return QT_OK;
  int start = first && eq(special_token_of(cJSON_GetArrayItem(pair, 0)), first) ? 1 : 0;
  int stop = last && eq(special_token_of(cJSON_GetArrayItem(pair, np - 1)), last) ? np - 1 : np;
  if (stop - start <= 0) return QT_OK;
  const char *a = seq_of(cJSON_GetArrayItem(pair, start)), *b = seq_of(cJSON_GetArrayItem(pair, stop - 1));
  if (!eq(a, "A") || !eq(b, "B") || stop - start - 2 <= 0) return QT_OK;
  bool add_sep = false;
  const char *mid = special_token_of(cJSON_GetArrayItem(pair, start + 1));
  if (mid && (eq(mid, sep) || eq(mid, eos)) && !last) add_sep = true;
  if (stop - start - 2 == 2) {
    const char *mid2 = special_token_of(cJSON_GetArrayItem(pair, start + 2));
    if (mid2 && (eq(mid2, sep) || eq(mid2, eos))) add_sep = true;
  }
  v->add_special[SP_SEP] = add_sep;
  return QT_OK;
}

static qt_status load_specials(const char *dir, const cJSON *tj, const cJSON *tc, const cJSON *cfg, qt_gguf_vocab *v) {
  const char *names[QT_GGUF_SPECIAL_COUNT] = {0};
  for (int t = 0; t < QT_GGUF_SPECIAL_COUNT; t++) {
    char k[32];
    snprintf(k, sizeof k, "%s_token", special_names[t]);
    names[t] = tc ? token_content(cJSON_GetObjectItemCaseSensitive(tc, k)) : NULL;
  }
  if (tj) {
    if (tc && !names[SP_BOS] && names[SP_CLS]) names[SP_BOS] = names[SP_CLS];
    if (tc && !names[SP_EOS] && names[SP_SEP]) names[SP_EOS] = names[SP_SEP];
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(tj, "post_processor");
    const cJSON *procs = cJSON_GetObjectItemCaseSensitive(pp, "processors");
    const cJSON *p;
    if (pp && !cJSON_IsNull(pp)) {
      int n = procs ? cJSON_GetArraySize(procs) : 1;
      for (int i = 0; i < n; i++) {
        p = procs ? cJSON_GetArrayItem(procs, i) : pp;
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        if (!cJSON_IsString(ty)) continue;
        if (!strcmp(ty->valuestring, "ByteLevel")) {
          if (v->add_special[SP_BOS] < 0) v->add_special[SP_BOS] = 0;
          if (v->add_special[SP_EOS] < 0) v->add_special[SP_EOS] = 0;
        } else if (!strcmp(ty->valuestring, "TemplateProcessing")) {
          if (!tc) return qt_fail(QT_ERR_UNSUPPORTED, "%s: tokenizer_config.json missing (needed for special tokens)", dir);
          QT_TRY(template_flags(dir, p, names[SP_BOS], names[SP_EOS], names[SP_SEP], v));
        }
      }
    }
  }
  if (tc) {
    for (int t = 0; t < QT_GGUF_SPECIAL_COUNT; t++) {
      char k[32];
      snprintf(k, sizeof k, "add_%s_token", special_names[t]);
      const cJSON *a = cJSON_GetObjectItemCaseSensitive(tc, k);
      if (cJSON_IsBool(a) && v->add_special[t] < 0) v->add_special[t] = cJSON_IsTrue(a);
      if (!names[t]) continue;
      const cJSON *added = tj ? cJSON_GetObjectItemCaseSensitive(tj, "added_tokens") : NULL, *e;
      cJSON_ArrayForEach(e, added) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content"), *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (cJSON_IsString(c) && !strcmp(c->valuestring, names[t]) && cJSON_IsNumber(id)) {
          if (id->valuedouble >= 0 && id->valuedouble < (double)v->n && v->special[t] < 0)
            v->special[t] = (int64_t)id->valuedouble;
          break;
        }
      }
    }
  }
  for (int t = 0; cfg && t < QT_GGUF_SPECIAL_COUNT; t++) {
    char k[32];
    snprintf(k, sizeof k, "%s_token_id", special_names[t]);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(cfg, k);
    /* integers only: a list (Llama-3.1 eos_token_id) is skipped, as gguf-py does */
    if (cJSON_IsNumber(id) && id->valuedouble == (double)(int64_t)id->valuedouble && v->special[t] < 0 &&
        id->valuedouble >= 0 && id->valuedouble < (double)v->n)
      v->special[t] = (int64_t)id->valuedouble;
  }
  return QT_OK;
}

qt_status qt_gguf_vocab_load(const char *dir, int64_t vocab_size, qt_gguf_vocab *v) {
  memset(v, 0, sizeof *v);
  for (int t = 0; t < QT_GGUF_SPECIAL_COUNT; t++) v->special[t] = v->add_special[t] = -1;
  v->add_space_prefix = -1;
  cJSON *tj = NULL, *tc = NULL, *cfg = NULL;
  qt_status r = load_json(dir, "tokenizer.json", &tj);
  if (r == QT_OK) r = load_json(dir, "tokenizer_config.json", &tc);
  if (r == QT_OK) r = load_json(dir, "config.json", &cfg);
  char p[4200];
  snprintf(p, sizeof p, "%s/tokenizer.model", dir);
  bool spm = file_exists(p);
  if (r == QT_OK && tc) {
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(tc, "add_prefix_space");
    if (cJSON_IsBool(aps)) v->add_space_prefix = cJSON_IsTrue(aps);
  }
  if (r == QT_OK && spm) {
    v->model = "llama";
    v->pre = "default";
    r = load_spm(dir, vocab_size, v);
    if (r == QT_OK) r = spm_added(tc, v);
  } else if (r == QT_OK) {
    if (!tj)
      r = qt_fail(QT_ERR_IO, "%s: neither tokenizer.model nor tokenizer.json: GGUF export needs the tokenizer", dir);
    v->model = "gpt2";
    if (r == QT_OK) r = load_bpe(dir, tj, vocab_size, v);
  }
  if (r == QT_OK) r = load_specials(dir, tj, tc, cfg, v);
  /* convert_hf_to_gguf.py names the pre-tokenizer by hashing the ids of a
   * test text encoded with special tokens: a Llama-3 pattern whose
   * post-processor does not add BOS hashes as Smaug's ("smaug-bpe": the same
   * split regex in llama.cpp, without Llama-3's BOS and ignore_merges) */
  if (r == QT_OK && v->pre && !strcmp(v->pre, "llama-bpe") && v->add_special[SP_BOS] != 1) v->pre = "smaug-bpe";
  if (r == QT_OK) {
    const cJSON *ct = tc ? cJSON_GetObjectItemCaseSensitive(tc, "chat_template") : NULL;
    if (cJSON_IsString(ct)) {
      if (!(v->chat_template = strdup(ct->valuestring))) r = qt_fail(QT_ERR_NOMEM, "out of memory");
    } else {
      snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
      if (file_exists(p)) {
        uint8_t *buf;
        size_t len;
        r = qt_fs_read_file(p, (size_t)1 << 26, &buf, &len);
        if (r == QT_OK) v->chat_template = (char *)buf;
      }
    }
  }
  cJSON_Delete(tj);
  cJSON_Delete(tc);
  cJSON_Delete(cfg);
  if (r != QT_OK) qt_gguf_vocab_free(v);
  return r;
}

qt_status qt_gguf_vocab_write(const qt_gguf_vocab *v, qt_gguf_writer *w) {
  if (v->add_space_prefix >= 0) QT_TRY(qt_gguf_kv_bool(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix));
  QT_TRY(qt_gguf_kv_str(w, "tokenizer.ggml.model", v->model));
  QT_TRY(qt_gguf_kv_str(w, "tokenizer.ggml.pre", v->pre));
  QT_TRY(qt_gguf_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, v->n));
  if (v->scores) QT_TRY(qt_gguf_kv_arr_f32(w, "tokenizer.ggml.scores", v->scores, v->n));
  QT_TRY(qt_gguf_kv_arr_i32(w, "tokenizer.ggml.token_type", v->types, v->n));
  if (v->n_merges) QT_TRY(qt_gguf_kv_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, v->n_merges));
  static const char *const id_keys[QT_GGUF_SPECIAL_COUNT] = {
      "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
      "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
      "tokenizer.ggml.mask_token_id"};
  for (int t = 0; t < QT_GGUF_SPECIAL_COUNT; t++)
    if (v->special[t] >= 0) QT_TRY(qt_gguf_kv_u32(w, id_keys[t], (uint32_t)v->special[t]));
  for (int t = 0; t < QT_GGUF_SPECIAL_COUNT; t++) {
    if (v->add_special[t] < 0) continue;
    char k[64];
    snprintf(k, sizeof k, "tokenizer.ggml.add_%s_token", special_names[t]);
    QT_TRY(qt_gguf_kv_bool(w, k, v->add_special[t]));
  }
  if (v->chat_template) QT_TRY(qt_gguf_kv_str(w, "tokenizer.chat_template", v->chat_template));
  return QT_OK;
}

void qt_gguf_vocab_free(qt_gguf_vocab *v) {
  for (size_t i = 0; v->tokens && i < v->n; i++) free(v->tokens[i]);
  for (size_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
  free(v->tokens);
  free(v->merges);
  free(v->scores);
  free(v->types);
  free(v->chat_template);
  memset(v, 0, sizeof *v);
}
