/* data/prompt.c — records to examples (contract and sources: data/prompt.h). */
#include "data/prompt.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fs.h"

/* axolotl src/axolotl/prompters.py (AlpacaPrompter, system_prompt /
 * system_no_input_prompt + turn formats), quoted in
 * ../shared/docs/reference/formats.md section 7.1. */
static const char k_alpaca_input_head[] =
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n";
static const char k_alpaca_input_mid[] = "\n\n### Input:\n";
static const char k_alpaca_noinput_head[] =
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n";
static const char k_alpaca_tail[] = "\n\n### Response:\n";

static const char k_im_start[] = "<|im_start|>";
static const char k_im_end[] = "<|im_end|>";
static const char k_l3_head[] = "<|start_header_id|>";
static const char k_l3_head_end[] = "<|end_header_id|>\n\n";
static const char k_l3_eot[] = "<|eot_id|>";
static const char k_gemma_start[] = "<start_of_turn>";
static const char k_gemma_end[] = "<end_of_turn>";
static const char k_phi3_end[] = "<|end|>";

enum { CONFIG_MAX_BYTES = 64 << 20, TOKENIZER_MAX_BYTES = 1 << 30 };

const char *qt_data_format_name(qt_data_format f) {
  switch (f) {
    case QT_DATA_FMT_TEXT: return "text";
    case QT_DATA_FMT_COMPLETION: return "completion";
    case QT_DATA_FMT_ALPACA: return "alpaca";
    case QT_DATA_FMT_CHAT: return "chat";
  }
  return "?";
}

const char *qt_chat_kind_name(qt_chat_kind k) {
  switch (k) {
    case QT_CHAT_KIND_NONE: return "none";
    case QT_CHAT_KIND_CHATML: return "chatml";
    case QT_CHAT_KIND_QWEN3: return "qwen3";
    case QT_CHAT_KIND_LLAMA3: return "llama3";
    case QT_CHAT_KIND_GEMMA: return "gemma";
    case QT_CHAT_KIND_PHI3: return "phi3";
  }
  return "?";
}

void qt_example_free(qt_example *e) {
  free(e->ids);
  free(e->labels);
  memset(e, 0, sizeof *e);
}

static qt_status example_reserve(qt_example *e, size_t n) {
  if (n <= e->cap) return QT_OK;
  size_t cap = e->cap ? e->cap : 256;
  while (cap < n) cap *= 2;
  int32_t *ids = realloc(e->ids, cap * sizeof *ids);
  if (!ids) return qt_fail(QT_ERR_NOMEM, "example: out of memory (%zu tokens)", n);
  e->ids = ids;
  int32_t *labels = realloc(e->labels, cap * sizeof *labels);
  if (!labels) return qt_fail(QT_ERR_NOMEM, "example: out of memory (%zu tokens)", n);
  e->labels = labels;
  e->cap = cap;
  return QT_OK;
}

/* ---- byte-string helpers (never read outside s[0..n)) ---------------------- */

static int str_eq(qt_str a, const char *b) {
  size_t n = strlen(b);
  return a.s && a.n == n && memcmp(a.s, b, n) == 0;
}

/* Offset of the first (last=0) or last (last=1) occurrence of needle in s, or -1. */
static long str_find(qt_str s, const char *needle, int last) {
  size_t m = strlen(needle);
  if (!s.s || m > s.n) return -1;
  long found = -1;
  for (size_t i = 0; i + m <= s.n; i++) {
    if (memcmp(s.s + i, needle, m) == 0) {
      found = (long)i;
      if (!last) break;
    }
  }
  return found;
}

static int str_starts(qt_str s, const char *p) {
  size_t m = strlen(p);
  return s.n >= m && memcmp(s.s, p, m) == 0;
}
static int str_ends(qt_str s, const char *p) {
  size_t m = strlen(p);
  return s.n >= m && memcmp(s.s + s.n - m, p, m) == 0;
}

static qt_str lstrip_nl(qt_str s) {
  while (s.n && s.s[0] == '\n') s.s++, s.n--;
  return s;
}
static qt_str rstrip_nl(qt_str s) {
  while (s.n && s.s[s.n - 1] == '\n') s.n--;
  return s;
}

/* Python's str.isspace() code points (Unicode White_Space plus the
 * separators U+001C..U+001F that CPython also counts), which Jinja's `trim`
 * filter (str.strip()) removes. */
static int py_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Decodes the well-formed UTF-8 sequence at s[i..n) (returns its length, 0
 * if malformed). */
static size_t utf8_at(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
  unsigned char c = s[i];
  size_t len;
  uint32_t v;
  if (c < 0x80) { *cp = c; return 1; }
  if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; }
  else return 0;
  if (i + len > n) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[i + k] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i + k] & 0x3F);
  }
  *cp = v;
  return len;
}

/* Python str.strip() on UTF-8 text. */
static qt_str py_strip(qt_str s) {
  const unsigned char *u = (const unsigned char *)s.s;
  size_t a = 0, b = s.n;
  while (a < b) {
    uint32_t cp;
    size_t l = utf8_at(u, b, a, &cp);
    if (!l || !py_isspace(cp)) break;
    a += l;
  }
  while (b > a) {
    /* the start of the last code point in [a, b) */
    size_t st = b - 1;
    while (st > a && (u[st] & 0xC0) == 0x80 && b - st < 4) st--;
    uint32_t cp;
    size_t l = utf8_at(u, b, st, &cp);
    if (!l || st + l != b || !py_isspace(cp)) break;
    b = st;
  }
  return (qt_str){s.s + a, b - a};
}

static qt_status buf_append(qt_text_buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p) return qt_fail(QT_ERR_NOMEM, "prompt: out of memory (%zu bytes)", b->n + n + 1);
    b->s = p;
    b->cap = cap;
  }
  if (n) memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = '\0';
  return QT_OK;
}
static qt_status buf_str(qt_text_buf *b, qt_str s) { return buf_append(b, s.s, s.n); }
static qt_status buf_cstr(qt_text_buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

static qt_status span_push(qt_prompt *p, size_t a, size_t b) {
  if (p->n_spans * 2 + 2 > p->cap_spans) {
    size_t cap = p->cap_spans ? p->cap_spans * 2 : 16;
    size_t *s = realloc(p->spans, cap * sizeof *s);
    if (!s) return qt_fail(QT_ERR_NOMEM, "prompt: out of memory");
    p->spans = s;
    p->cap_spans = cap;
  }
  p->spans[2 * p->n_spans] = a;
  p->spans[2 * p->n_spans + 1] = b;
  p->n_spans++;
  return QT_OK;
}

/* ---- init: tokenizer_config.json / tokenizer.json --------------------------- */

/* Reads dir/name into a cJSON tree; *out = NULL when the file does not exist. */
static qt_status read_json(const char *dir, const char *name, cJSON **out) {
  *out = NULL;
  size_t plen = strlen(dir) + strlen(name) + 2;
  char *path = malloc(plen);
  if (!path) return qt_fail(QT_ERR_NOMEM, "prompt: out of memory");
  snprintf(path, plen, "%s/%s", dir, name);
  struct stat st;
  if (stat(path, &st) != 0) {
    free(path);
    return QT_OK;
  }
  uint8_t *buf = NULL;
  size_t len = 0;
  qt_status s = qt_fs_read_file(path, CONFIG_MAX_BYTES, &buf, &len);
  if (s != QT_OK) {
    free(path);
    return s;
  }
  *out = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  if (!*out) {
    s = qt_fail(QT_ERR_FORMAT, "%s: not valid JSON", path);
    free(path);
    return s;
  }
  free(path);
  return QT_OK;
}

/* Does tokenizer.json's post_processor put the BOS token first in the
 * single-sequence template (TemplateProcessing, possibly inside a
 * Sequence)? Only the post_processor value is parsed: the file can be
 * tens of MB. */
static int template_starts_with(const cJSON *pp, const char *bos) {
  if (!cJSON_IsObject(pp)) return 0;
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(pp, "type");
  if (!cJSON_IsString(type)) return 0;
  if (strcmp(type->valuestring, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
    const cJSON *it;
    cJSON_ArrayForEach(it, list) if (template_starts_with(it, bos)) return 1;
    return 0;
  }
  if (strcmp(type->valuestring, "TemplateProcessing") != 0) return 0;
  const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
  const cJSON *first = cJSON_IsArray(single) ? cJSON_GetArrayItem(single, 0) : NULL;
  const cJSON *sp = first ? cJSON_GetObjectItemCaseSensitive(first, "SpecialToken") : NULL;
  const cJSON *id = sp ? cJSON_GetObjectItemCaseSensitive(sp, "id") : NULL;
  return cJSON_IsString(id) && strcmp(id->valuestring, bos) == 0;
}

static qt_status post_processor_adds_bos(const char *tokjson, const char *bos, int *adds) {
  *adds = 0;
  uint8_t *buf = NULL;
  size_t len = 0;
  QT_TRY(qt_fs_read_file(tokjson, TOKENIZER_MAX_BYTES, &buf, &len));
  /* tokenizers serializes the top-level keys in a fixed order (version,
   * truncation, padding, added_tokens, normalizer, pre_tokenizer,
   * post_processor, decoder, model), so the first "post_processor" key is
   * the top-level one. */
  const char *key = "\"post_processor\"";
  const char *hit = strstr((const char *)buf, key);
  if (hit) {
    const char *v = hit + strlen(key);
    while (*v == ' ' || *v == '\n' || *v == '\r' || *v == '\t') v++;
    if (*v == ':') {
      v++;
      const char *end = NULL;
      cJSON *pp = cJSON_ParseWithLengthOpts(v, len - (size_t)(v - (const char *)buf), &end, 0);
      if (pp) *adds = template_starts_with(pp, bos);
      cJSON_Delete(pp);
    }
  }
  free(buf);
  return QT_OK;
}

static qt_chat_kind detect_template(const char *tpl, unsigned *flags) {
  *flags = 0;
  if (strstr(tpl, "<|im_start|>")) {
    if (strstr(tpl, "</think>") && strstr(tpl, "reasoning_content")) return QT_CHAT_KIND_QWEN3;
    return QT_CHAT_KIND_CHATML;
  }
  if (strstr(tpl, "<|start_header_id|>")) return QT_CHAT_KIND_LLAMA3;
  if (strstr(tpl, "<start_of_turn>")) {
    /* google/gemma-2-2b-it raises on a leading system message; Gemma-3's
     * template prefixes it to the first user turn instead. */
    if (strstr(tpl, "System role not supported")) *flags = QT_CHAT_FLAG_NO_SYSTEM;
    return QT_CHAT_KIND_GEMMA;
  }
  /* Phi-3-mini-4k / Phi-3.5-mini-instruct. The April 2024 Phi-3-mini and
   * Phi-3-medium templates, which drop system messages and glue
   * "<|assistant|>\n" to every user turn, have no "<|system|>" and are not
   * recognized. */
  if (strstr(tpl, "<|user|>") && strstr(tpl, "<|end|>") && strstr(tpl, "<|system|>")) {
    if (strstr(tpl, "'system' and message['content']")) *flags = QT_CHAT_FLAG_SKIP_EMPTY_SYSTEM;
    return QT_CHAT_KIND_PHI3;
  }
  return QT_CHAT_KIND_NONE;
}

/* tokenizer_config.json "chat_template": a string or [{name, template}]. */
static const char *config_template(const cJSON *cfg) {
  const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
  if (cJSON_IsString(ct)) return ct->valuestring;
  const cJSON *it;
  if (cJSON_IsArray(ct)) {
    cJSON_ArrayForEach(it, ct) {
      const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "template");
      if (cJSON_IsString(n) && cJSON_IsString(t) && strcmp(n->valuestring, "default") == 0)
        return t->valuestring;
    }
  }
  return NULL;
}

qt_status qt_prompt_init(qt_prompt *p, qt_tokenizer *tok, const char *tokenizer_path,
                         qt_data_format format, qt_chat_choice choice, int train_on_prompt) {
  memset(p, 0, sizeof *p);
  p->tok = tok;
  p->format = format;
  p->train_on_prompt = train_on_prompt;
  p->bos_id = qt_tokenizer_bos_id(tok);
  p->eos_id = qt_tokenizer_eos_id(tok);
  if (p->eos_id < 0)
    return qt_fail(QT_ERR_FORMAT,
                   "%s: the tokenizer has no EOS token (config.json eos_token_id or "
                   "tokenizer_config.json eos_token); every example ends with EOS",
                   tokenizer_path);

  /* The directory holding the tokenizer files. */
  struct stat st;
  char *dir = NULL, *tokjson = NULL;
  size_t plen = strlen(tokenizer_path);
  if (stat(tokenizer_path, &st) == 0 && S_ISDIR(st.st_mode)) {
    dir = strdup(tokenizer_path);
    tokjson = malloc(plen + sizeof "/tokenizer.json");
    if (tokjson) snprintf(tokjson, plen + sizeof "/tokenizer.json", "%s/tokenizer.json", tokenizer_path);
  } else {
    dir = strdup(tokenizer_path);
    if (dir) {
      char *slash = strrchr(dir, '/');
      if (slash) *slash = '\0';
      else strcpy(dir, ".");
    }
    tokjson = strdup(tokenizer_path);
  }
  qt_status s = QT_OK;
  cJSON *cfg = NULL;
  if (!dir || !tokjson) {
    s = qt_fail(QT_ERR_NOMEM, "prompt: out of memory");
    goto done;
  }
  s = read_json(dir, "tokenizer_config.json", &cfg);
  if (s != QT_OK) goto done;

  const char *bos_tok = p->bos_id >= 0 ? qt_tokenizer_id_token(tok, p->bos_id) : NULL;
  const cJSON *abt = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token") : NULL;
  if (cJSON_IsBool(abt)) {
    p->add_bos = cJSON_IsTrue(abt);
  } else if (bos_tok) {
    s = post_processor_adds_bos(tokjson, bos_tok, &p->add_bos);
    if (s != QT_OK) goto done;
  }
  if (p->add_bos && p->bos_id < 0) {
    s = qt_fail(QT_ERR_FORMAT,
                "%s/tokenizer_config.json: add_bos_token is true but the tokenizer has no BOS "
                "token; set bos_token (or bos_token_id in config.json)", dir);
    goto done;
  }
  p->bos_text = strdup(bos_tok ? bos_tok : "");
  if (!p->bos_text) {
    s = qt_fail(QT_ERR_NOMEM, "prompt: out of memory");
    goto done;
  }

  if (format == QT_DATA_FMT_CHAT) {
    if (choice == QT_CHAT_CHATML) {
      p->chat = QT_CHAT_KIND_CHATML;
    } else if (choice == QT_CHAT_LLAMA3) {
      p->chat = QT_CHAT_KIND_LLAMA3;
    } else if (choice == QT_CHAT_GEMMA) {
      p->chat = QT_CHAT_KIND_GEMMA;
    } else if (choice == QT_CHAT_PHI3) {
      p->chat = QT_CHAT_KIND_PHI3;
    } else {
      const char *tpl = cfg ? config_template(cfg) : NULL;
      if (!tpl) {
        s = qt_fail(QT_ERR_CONFIG,
                    "%s/tokenizer_config.json: no chat_template; data.format chat needs one: set "
                    "data.chat_template to chatml, llama3, gemma or phi3", dir);
        goto done;
      }
      p->chat = detect_template(tpl, &p->chat_flags);
      if (p->chat == QT_CHAT_KIND_NONE) {
        s = qt_fail(QT_ERR_UNSUPPORTED,
                    "%s/tokenizer_config.json: chat_template is none of ChatML (<|im_start|>), "
                    "Llama-3 (<|start_header_id|>), Gemma (<start_of_turn>) or Phi-3 (<|system|>, "
                    "<|user|>, <|end|>); set data.chat_template to chatml, llama3, gemma or phi3 "
                    "to force one", dir);
        goto done;
      }
    }
  }
done:
  cJSON_Delete(cfg);
  free(dir);
  free(tokjson);
  if (s != QT_OK) qt_prompt_free(p);
  return s;
}

void qt_prompt_free(qt_prompt *p) {
  free(p->bos_text);
  qt_text_buf_free(&p->render);
  qt_token_ids_free(&p->enc);
  free(p->spans);
  qt_tokenizer *tok = p->tok;
  memset(p, 0, sizeof *p);
  p->tok = tok;
}

/* ---- chat rendering ---------------------------------------------------------- */

static qt_status check_messages(const qt_record *r) {
  if (!r->msgs || r->n_msgs == 0) return qt_fail(QT_ERR_FORMAT, "\"messages\" is empty");
  int any_assistant = 0;
  for (size_t i = 0; i < r->n_msgs; i++) {
    const qt_chat_msg *m = &r->msgs[i];
    if (!m->role.s) return qt_fail(QT_ERR_FORMAT, "messages[%zu] has no \"role\"", i);
    if (!m->content.s) return qt_fail(QT_ERR_FORMAT, "messages[%zu] has no \"content\"", i);
    if (str_eq(m->role, "assistant")) any_assistant = 1;
    else if (!str_eq(m->role, "user") && !str_eq(m->role, "system"))
      return qt_fail(QT_ERR_FORMAT,
                     "messages[%zu].role \"%.*s\" is not system, user or assistant", i,
                     (int)(m->role.n > 40 ? 40 : m->role.n), m->role.s);
  }
  if (!any_assistant) return qt_fail(QT_ERR_FORMAT, "no assistant message: nothing to train on");
  return QT_OK;
}

/* Render of the canonical ChatML template. */
static qt_status render_chatml(qt_prompt *p, const qt_record *r, size_t *end) {
  qt_text_buf *b = &p->render;
  for (size_t i = 0; i < r->n_msgs; i++) {
    const qt_chat_msg *m = &r->msgs[i];
    int asst = str_eq(m->role, "assistant");
    QT_TRY(buf_cstr(b, k_im_start));
    QT_TRY(buf_str(b, m->role));
    QT_TRY(buf_cstr(b, "\n"));
    size_t a = b->n;
    QT_TRY(buf_str(b, m->content));
    QT_TRY(buf_cstr(b, k_im_end));
    if (asst) QT_TRY(span_push(p, a, b->n));
    *end = b->n;
    QT_TRY(buf_cstr(b, "\n"));
  }
  return QT_OK;
}

/* Render of Qwen3's chat_template (tokenizers/qwen3/tokenizer_config.json),
 * the branch without tools, statement by statement. */
static qt_status render_qwen3(qt_prompt *p, const qt_record *r, size_t *end) {
  qt_text_buf *b = &p->render;
  const qt_chat_msg *ms = r->msgs;
  size_t n = r->n_msgs;
  if (str_eq(ms[0].role, "system")) {
    QT_TRY(buf_cstr(b, "<|im_start|>system\n"));
    QT_TRY(buf_str(b, ms[0].content));
    QT_TRY(buf_cstr(b, k_im_end));
    *end = b->n;
    QT_TRY(buf_cstr(b, "\n"));
  }
  /* last_query_index: the last user message that is not a tool response. */
  size_t last_query = n - 1;
  for (size_t k = n; k-- > 0;) {
    qt_str c = ms[k].content;
    if (str_eq(ms[k].role, "user") &&
        !(str_starts(c, "<tool_response>") && str_ends(c, "</tool_response>"))) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < n; i++) {
    const qt_chat_msg *m = &ms[i];
    if (str_eq(m->role, "user") || (str_eq(m->role, "system") && i > 0)) {
      QT_TRY(buf_cstr(b, k_im_start));
      QT_TRY(buf_str(b, m->role));
      QT_TRY(buf_cstr(b, "\n"));
      QT_TRY(buf_str(b, m->content));
      QT_TRY(buf_cstr(b, k_im_end));
      *end = b->n;
      QT_TRY(buf_cstr(b, "\n"));
    } else if (str_eq(m->role, "assistant")) {
      qt_str content = m->content;
      qt_str reasoning = {"", 0};
      if (m->reasoning.s) {
        reasoning = m->reasoning;
      } else if (str_find(content, "</think>", 0) >= 0) {
        /* content.split('</think>')[-1].lstrip('\n') */
        long last = str_find(content, "</think>", 1);
        size_t after = (size_t)last + strlen("</think>");
        qt_str c2 = lstrip_nl((qt_str){content.s + after, content.n - after});
        /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
        long first = str_find(content, "</think>", 0);
        qt_str before = rstrip_nl((qt_str){content.s, (size_t)first});
        long th = str_find(before, "<think>", 1);
        if (th >= 0) {
          size_t o = (size_t)th + strlen("<think>");
          before = (qt_str){before.s + o, before.n - o};
        }
        reasoning = lstrip_nl(before);
        content = c2;
      }
      QT_TRY(buf_cstr(b, "<|im_start|>assistant\n"));
      size_t a = b->n;
      if (i > last_query && (i == n - 1 || reasoning.n > 0)) {
        QT_TRY(buf_cstr(b, "<think>\n"));
        QT_TRY(buf_str(b, rstrip_nl(lstrip_nl(reasoning))));
        QT_TRY(buf_cstr(b, "\n</think>\n\n"));
        QT_TRY(buf_str(b, lstrip_nl(content)));
      } else {
        QT_TRY(buf_str(b, content));
      }
      QT_TRY(buf_cstr(b, k_im_end));
      QT_TRY(span_push(p, a, b->n));
      *end = b->n;
      QT_TRY(buf_cstr(b, "\n"));
    }
  }
  return QT_OK;
}

/* Render of the Llama-3 chat_template (tokenizers/llama3/tokenizer_config.json). */
static qt_status render_llama3(qt_prompt *p, const qt_record *r, size_t *end) {
  qt_text_buf *b = &p->render;
  for (size_t i = 0; i < r->n_msgs; i++) {
    const qt_chat_msg *m = &r->msgs[i];
    if (i == 0) QT_TRY(buf_cstr(b, p->bos_text));
    QT_TRY(buf_cstr(b, k_l3_head));
    QT_TRY(buf_str(b, m->role));
    QT_TRY(buf_cstr(b, k_l3_head_end));
    size_t a = b->n;
    QT_TRY(buf_str(b, py_strip(m->content)));
    QT_TRY(buf_cstr(b, k_l3_eot));
    if (str_eq(m->role, "assistant")) QT_TRY(span_push(p, a, b->n));
    *end = b->n;
  }
  return QT_OK;
}

/* Render of the Gemma chat templates: google/gemma-2-2b-it's and
 * google/gemma-3's (sources: tools/reference/make_dataset_fixtures.py), which
 * differ only in the leading system message. */
static qt_status render_gemma(qt_prompt *p, const qt_record *r, size_t *end) {
  qt_text_buf *b = &p->render;
  const qt_chat_msg *ms = r->msgs;
  size_t first = 0;
  QT_TRY(buf_cstr(b, p->bos_text));
  if (str_eq(ms[0].role, "system")) {
    if (p->chat_flags & QT_CHAT_FLAG_NO_SYSTEM)
      return qt_fail(QT_ERR_FORMAT,
                     "messages[0] is a system message, which the Gemma-2 chat template rejects "
                     "('System role not supported'); put it into the first user message, or set "
                     "data.chat_template: gemma for Gemma-3's template, which prefixes it");
    first = 1;
  }
  for (size_t i = first; i < r->n_msgs; i++) {
    const qt_chat_msg *m = &ms[i];
    size_t k = i - first; /* loop.index0 over loop_messages */
    int user = str_eq(m->role, "user");
    if (user != (k % 2 == 0))
      return qt_fail(QT_ERR_FORMAT,
                     "messages[%zu] is \"%.*s\" where the Gemma chat template expects %s "
                     "('Conversation roles must alternate user/assistant/user/assistant/...', "
                     "after an optional leading system message%s)",
                     i, (int)(m->role.n > 40 ? 40 : m->role.n), m->role.s,
                     k % 2 == 0 ? "user" : "a non-user turn",
                     (p->chat_flags & QT_CHAT_FLAG_NO_SYSTEM) ? ", which Gemma-2 rejects" : "");
    int asst = str_eq(m->role, "assistant");
    QT_TRY(buf_cstr(b, k_gemma_start));
    if (asst) QT_TRY(buf_cstr(b, "model"));
    else QT_TRY(buf_str(b, m->role));
    QT_TRY(buf_cstr(b, "\n"));
    if (k == 0 && first) { /* Gemma-3: first_user_prefix, untrimmed */
      QT_TRY(buf_str(b, ms[0].content));
      QT_TRY(buf_cstr(b, "\n\n"));
    }
    size_t a = b->n;
    QT_TRY(buf_str(b, py_strip(m->content)));
    QT_TRY(buf_cstr(b, k_gemma_end));
    if (asst) QT_TRY(span_push(p, a, b->n));
    *end = b->n;
    QT_TRY(buf_cstr(b, "\n"));
  }
  return QT_OK;
}

/* Render of microsoft/Phi-3-mini-4k-instruct's and Phi-3.5-mini-instruct's
 * templates (the latter skips a system message with empty content). */
static qt_status render_phi3(qt_prompt *p, const qt_record *r, size_t *end) {
  qt_text_buf *b = &p->render;
  for (size_t i = 0; i < r->n_msgs; i++) {
    const qt_chat_msg *m = &r->msgs[i];
    int asst = str_eq(m->role, "assistant");
    if (str_eq(m->role, "system") && m->content.n == 0 &&
        (p->chat_flags & QT_CHAT_FLAG_SKIP_EMPTY_SYSTEM))
      continue;
    QT_TRY(buf_cstr(b, "<|"));
    QT_TRY(buf_str(b, m->role));
    QT_TRY(buf_cstr(b, "|>\n"));
    size_t a = b->n;
    QT_TRY(buf_str(b, m->content));
    QT_TRY(buf_cstr(b, k_phi3_end));
    if (asst) QT_TRY(span_push(p, a, b->n));
    *end = b->n;
    QT_TRY(buf_cstr(b, "\n"));
  }
  return QT_OK;
}

qt_status qt_prompt_render_chat(qt_prompt *p, const qt_record *r, const qt_text_buf **text,
                                const size_t **spans, size_t *n_spans) {
  QT_ASSERT(p->format == QT_DATA_FMT_CHAT);
  QT_TRY(check_messages(r));
  p->render.n = 0;
  QT_TRY(buf_append(&p->render, "", 0));
  p->n_spans = 0;
  size_t end = 0;
  switch (p->chat) {
    case QT_CHAT_KIND_CHATML: QT_TRY(render_chatml(p, r, &end)); break;
    case QT_CHAT_KIND_QWEN3: QT_TRY(render_qwen3(p, r, &end)); break;
    case QT_CHAT_KIND_LLAMA3: QT_TRY(render_llama3(p, r, &end)); break;
    case QT_CHAT_KIND_GEMMA: QT_TRY(render_gemma(p, r, &end)); break;
    case QT_CHAT_KIND_PHI3: QT_TRY(render_phi3(p, r, &end)); break;
    case QT_CHAT_KIND_NONE: QT_ASSERTF(0, "chat format without a template kind");
  }
  /* Drop what follows the last message's end-of-turn token. */
  p->render.n = end;
  p->render.s[end] = '\0';
  if (text) *text = &p->render;
  if (spans) *spans = p->spans;
  if (n_spans) *n_spans = p->n_spans;
  return QT_OK;
}

/* ---- generation prompts ------------------------------------------------------ */

static qt_status check_generation_messages(const qt_chat_msg *msgs, size_t n) {
  if (!msgs || n == 0) return qt_fail(QT_ERR_FORMAT, "\"messages\" is empty");
  for (size_t i = 0; i < n; i++) {
    const qt_chat_msg *m = &msgs[i];
    if (!m->role.s) return qt_fail(QT_ERR_FORMAT, "messages[%zu] has no \"role\"", i);
    if (!m->content.s) return qt_fail(QT_ERR_FORMAT, "messages[%zu] has no \"content\"", i);
    if (!str_eq(m->role, "assistant") && !str_eq(m->role, "user") && !str_eq(m->role, "system"))
      return qt_fail(QT_ERR_FORMAT, "messages[%zu].role \"%.*s\" is not system, user or assistant",
                     i, (int)(m->role.n > 40 ? 40 : m->role.n), m->role.s);
  }
  if (str_eq(msgs[n - 1].role, "assistant"))
    return qt_fail(QT_ERR_FORMAT, "the last message is the assistant's: nothing to answer");
  return QT_OK;
}

qt_status qt_prompt_render_generation(qt_prompt *p, const qt_chat_msg *msgs, size_t n,
                                      const qt_text_buf **text) {
  QT_ASSERT(p->chat != QT_CHAT_KIND_NONE);
  QT_TRY(check_generation_messages(msgs, n));
  qt_record r = {.msgs = msgs, .n_msgs = n};
  p->render.n = 0;
  QT_TRY(buf_append(&p->render, "", 0));
  p->n_spans = 0;
  size_t end = 0;
  /* the whole render, separators after the last turn included, then the
   * template's add_generation_prompt block */
  switch (p->chat) {
    case QT_CHAT_KIND_CHATML:
      QT_TRY(render_chatml(p, &r, &end));
      QT_TRY(buf_cstr(&p->render, "<|im_start|>assistant\n"));
      break;
    case QT_CHAT_KIND_QWEN3: /* enable_thinking undefined: no empty think block */
      QT_TRY(render_qwen3(p, &r, &end));
      QT_TRY(buf_cstr(&p->render, "<|im_start|>assistant\n"));
      break;
    case QT_CHAT_KIND_LLAMA3:
      QT_TRY(render_llama3(p, &r, &end));
      QT_TRY(buf_cstr(&p->render, k_l3_head));
      QT_TRY(buf_cstr(&p->render, "assistant"));
      QT_TRY(buf_cstr(&p->render, k_l3_head_end));
      break;
    case QT_CHAT_KIND_GEMMA:
      QT_TRY(render_gemma(p, &r, &end));
      QT_TRY(buf_cstr(&p->render, "<start_of_turn>model\n"));
      break;
    case QT_CHAT_KIND_PHI3:
      QT_TRY(render_phi3(p, &r, &end));
      QT_TRY(buf_cstr(&p->render, "<|assistant|>\n"));
      break;
    case QT_CHAT_KIND_NONE: break;
  }
  *text = &p->render;
  return QT_OK;
}

qt_status qt_prompt_encode_generation(qt_prompt *p, const qt_chat_msg *msgs, size_t n,
                                      qt_token_ids *out) {
  const qt_text_buf *t;
  QT_TRY(qt_prompt_render_generation(p, msgs, n, &t));
  QT_TRY(qt_tokenizer_encode(p->tok, t->s, t->n, 0, &p->enc));
  size_t body = p->enc.n;
  int bos = p->add_bos && !(body > 0 && p->enc.ids[0] == p->bos_id);
  qt_token_ids tmp = *out;
  size_t need = (size_t)bos + body;
  if (tmp.cap < need) {
    int32_t *ids = realloc(tmp.ids, need * sizeof *ids);
    if (!ids) return qt_fail(QT_ERR_NOMEM, "out of memory for %zu prompt tokens", need);
    tmp.ids = ids;
    tmp.cap = need;
  }
  if (bos) tmp.ids[0] = p->bos_id;
  memcpy(tmp.ids + bos, p->enc.ids, body * sizeof *tmp.ids);
  tmp.n = need;
  *out = tmp;
  return QT_OK;
}

int32_t qt_prompt_end_of_turn_id(const qt_prompt *p) {
  switch (p->chat) {
    case QT_CHAT_KIND_CHATML:
    case QT_CHAT_KIND_QWEN3: return qt_tokenizer_token_id(p->tok, k_im_end);
    case QT_CHAT_KIND_LLAMA3: return qt_tokenizer_token_id(p->tok, k_l3_eot);
    case QT_CHAT_KIND_GEMMA: return qt_tokenizer_token_id(p->tok, k_gemma_end);
    case QT_CHAT_KIND_PHI3: return qt_tokenizer_token_id(p->tok, k_phi3_end);
    case QT_CHAT_KIND_NONE: break;
  }
  return -1;
}

/* ---- examples ---------------------------------------------------------------- */

static qt_status count_tokens(qt_prompt *p, const char *s, size_t n, unsigned flags, size_t *out) {
  QT_TRY(qt_tokenizer_encode(p->tok, s, n, flags, &p->enc));
  *out = p->enc.n;
  return QT_OK;
}

/* [BOS] prompt+completion EOS, the first len([BOS] prompt) labels masked. */
static qt_status build_joined(qt_prompt *p, qt_example *out, size_t prompt_bytes, int mask_prompt) {
  unsigned flags = p->add_bos ? QT_TOK_ADD_BOS : 0;
  size_t n_prompt = 0;
  if (mask_prompt) QT_TRY(count_tokens(p, p->render.s, prompt_bytes, flags, &n_prompt));
  QT_TRY(qt_tokenizer_encode(p->tok, p->render.s, p->render.n, flags, &p->enc));
  size_t n = p->enc.n + 1;
  QT_TRY(example_reserve(out, n));
  memcpy(out->ids, p->enc.ids, p->enc.n * sizeof *out->ids);
  out->ids[n - 1] = p->eos_id;
  for (size_t i = 0; i < n; i++)
    out->labels[i] = (i < n_prompt && i < n - 1) ? QT_LABEL_IGNORE : out->ids[i];
  out->n = n;
  return QT_OK;
}

static qt_status need(qt_str s, const char *field) {
  if (!s.s) return qt_fail(QT_ERR_FORMAT, "missing \"%s\"", field);
  return QT_OK;
}

static qt_status build_chat(qt_prompt *p, const qt_record *r, qt_example *out) {
  QT_TRY(qt_prompt_render_chat(p, r, NULL, NULL, NULL));
  size_t n_spans = p->n_spans;
  /* Token boundaries of the target spans: len(encode(text[:b])). */
  size_t *bounds = p->spans; /* rewritten in place: byte -> token offsets */
  for (size_t k = 0; k < 2 * n_spans; k++) {
    size_t c;
    QT_TRY(count_tokens(p, p->render.s, bounds[k], 0, &c));
    bounds[k] = c;
  }
  QT_TRY(qt_tokenizer_encode(p->tok, p->render.s, p->render.n, 0, &p->enc));
  size_t body = p->enc.n;
  int bos = p->add_bos && !(body > 0 && p->enc.ids[0] == p->bos_id);
  int eos = !(body > 0 && p->enc.ids[body - 1] == p->eos_id);
  size_t n = (size_t)bos + body + (size_t)eos;
  QT_TRY(example_reserve(out, n));
  size_t o = 0;
  if (bos) out->ids[o++] = p->bos_id;
  memcpy(out->ids + o, p->enc.ids, body * sizeof *out->ids);
  if (eos) out->ids[n - 1] = p->eos_id;
  out->n = n;
  if (p->train_on_prompt) {
    memcpy(out->labels, out->ids, n * sizeof *out->labels);
    return QT_OK;
  }
  for (size_t i = 0; i < n; i++) out->labels[i] = QT_LABEL_IGNORE;
  for (size_t k = 0; k < n_spans; k++) {
    size_t a = bounds[2 * k], b = bounds[2 * k + 1];
    for (size_t i = a; i < b && i < body; i++) out->labels[o + i] = out->ids[o + i];
  }
  if (eos && str_eq(r->msgs[r->n_msgs - 1].role, "assistant")) out->labels[n - 1] = p->eos_id;
  return QT_OK;
}

qt_status qt_prompt_build(qt_prompt *p, const qt_record *r, qt_example *out) {
  out->n = 0;
  p->render.n = 0;
  QT_TRY(buf_append(&p->render, "", 0));
  int mask = !p->train_on_prompt;
  switch (p->format) {
    case QT_DATA_FMT_TEXT:
      QT_TRY(need(r->text, "text"));
      QT_TRY(buf_str(&p->render, r->text));
      return build_joined(p, out, 0, 0);
    case QT_DATA_FMT_COMPLETION:
      QT_TRY(need(r->prompt, "prompt"));
      QT_TRY(need(r->completion, "completion"));
      QT_TRY(buf_str(&p->render, r->prompt));
      QT_TRY(buf_str(&p->render, r->completion));
      return build_joined(p, out, r->prompt.n, mask);
    case QT_DATA_FMT_ALPACA: {
      QT_TRY(need(r->instruction, "instruction"));
      QT_TRY(need(r->output, "output"));
      int has_input = r->input.s && r->input.n > 0;
      QT_TRY(buf_cstr(&p->render, has_input ? k_alpaca_input_head : k_alpaca_noinput_head));
      QT_TRY(buf_str(&p->render, r->instruction));
      if (has_input) {
        QT_TRY(buf_cstr(&p->render, k_alpaca_input_mid));
        QT_TRY(buf_str(&p->render, r->input));
      }
      QT_TRY(buf_cstr(&p->render, k_alpaca_tail));
      size_t prompt_bytes = p->render.n;
      QT_TRY(buf_str(&p->render, r->output));
      return build_joined(p, out, prompt_bytes, mask);
    }
    case QT_DATA_FMT_CHAT:
      return build_chat(p, r, out);
  }
  QT_ASSERTF(0, "unknown data format %d", (int)p->format);
  return QT_ERR_INVALID;
}
