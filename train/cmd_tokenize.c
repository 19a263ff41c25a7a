/* train/cmd_tokenize.c — `qlora-train tokenize DIR [--bos] [--eos] [--decode] [--skip-special]`.
 *
 * Encode (default): stdin JSONL {"text": ...}, stdout one JSON id array per
 * line; no special tokens are added unless --bos / --eos (like
 * add_special_tokens=False). Decode (--decode): stdin one JSON id array per
 * line, stdout JSONL {"text": ...}; special tokens are kept unless
 * --skip-special. Blank input lines are skipped. Errors name stdin's line.
 * DIR needs only tokenizer.json (config.json / tokenizer_config.json give
 * BOS/EOS). A "\u0000" escape in the text is refused (cJSON strings end at NUL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "data/tokenizer.h"
#include "train/cli.h"

static int blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
  return 1;
}

/* JSON string body of valid UTF-8 s[0..n) (RFC 8259 section 7). */
static void put_json_string(const char *s, size_t n, FILE *out) {
  fputc('"', out);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
      case '"': fputs("\\\"", out); break;
      case '\\': fputs("\\\\", out); break;
      case '\n': fputs("\\n", out); break;
      case '\r': fputs("\\r", out); break;
      case '\t': fputs("\\t", out); break;
      case '\b': fputs("\\b", out); break;
      case '\f': fputs("\\f", out); break;
      default:
        if (c < 0x20 || c == 0x7F) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
  }
  fputc('"', out);
}

/* cJSON ends a string at an escaped U+0000, which would silently drop the
 * rest of the text; find such an escape (escape pairs are skipped whole). */
static int has_nul_escape(const char *s, size_t n) {
  for (size_t i = 0; i + 1 < n; i++) {
    if (s[i] != '\\') continue;
    if (s[i + 1] == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0) return 1;
    i++;
  }
  return 0;
}

static qt_status encode_line(qt_tokenizer *t, const char *line, size_t len, size_t lineno,
                             unsigned flags, qt_token_ids *ids, FILE *out) {
  cJSON *j = cJSON_ParseWithLength(line, len);
  if (!j || !cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return qt_fail(QT_ERR_FORMAT, "stdin:%zu: not a JSON object; expected {\"text\": \"...\"}", lineno);
  }
  const cJSON *text = NULL;
  for (const cJSON *c = j->child; c; c = c->next) {
    if (c->string && strcmp(c->string, "text") == 0) {
      if (text) {
        cJSON_Delete(j);
        return qt_fail(QT_ERR_FORMAT, "stdin:%zu: key \"text\" appears twice", lineno);
      }
      text = c;
    }
  }
  if (!cJSON_IsString(text)) {
    cJSON_Delete(j);
    return qt_fail(QT_ERR_FORMAT, "stdin:%zu: missing string field \"text\"", lineno);
  }
  if (has_nul_escape(line, len)) {
    cJSON_Delete(j);
    return qt_fail(QT_ERR_UNSUPPORTED, "stdin:%zu: the line contains a \\u0000 escape (NUL), which qlora-train cannot read; remove it", lineno);
  }
  qt_status st = qt_tokenizer_encode(t, text->valuestring, strlen(text->valuestring), flags, ids);
  cJSON_Delete(j);
  if (st != QT_OK) {
    qt_error_context("stdin:%zu", lineno);
    return st;
  }
  fputc('[', out);
  for (size_t i = 0; i < ids->n; i++) fprintf(out, i ? ",%d" : "%d", (int)ids->ids[i]);
  fputs("]\n", out);
  return QT_OK;
}

static qt_status decode_line(qt_tokenizer *t, const char *line, size_t len, size_t lineno,
                             int skip_special, qt_token_ids *ids, qt_text_buf *txt, FILE *out) {
  cJSON *j = cJSON_ParseWithLength(line, len);
  if (!j || !cJSON_IsArray(j)) {
    cJSON_Delete(j);
    return qt_fail(QT_ERR_FORMAT, "stdin:%zu: not a JSON array of token ids", lineno);
  }
  ids->n = 0;
  for (const cJSON *c = j->child; c; c = c->next) {
    if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble > (double)INT32_MAX ||
        c->valuedouble != (double)(int32_t)c->valuedouble) {
      cJSON_Delete(j);
      return qt_fail(QT_ERR_FORMAT, "stdin:%zu: element %zu is not a token id (a non-negative integer)",
                     lineno, ids->n);
    }
    if (ids->n == ids->cap) {
      size_t cap = ids->cap ? ids->cap * 2 : 256;
      int32_t *p = realloc(ids->ids, cap * sizeof *p);
      if (!p) {
        cJSON_Delete(j);
        return qt_fail(QT_ERR_NOMEM, "stdin:%zu: out of memory", lineno);
      }
      ids->ids = p;
      ids->cap = cap;
    }
    ids->ids[ids->n++] = (int32_t)c->valuedouble;
  }
  cJSON_Delete(j);
  qt_status st = qt_tokenizer_decode(t, ids->ids, ids->n, skip_special, txt);
  if (st != QT_OK) {
    qt_error_context("stdin:%zu", lineno);
    return st;
  }
  fputs("{\"text\":", out);
  put_json_string(txt->s, txt->n, out);
  fputs("}\n", out);
  return QT_OK;
}

qt_status qt_cmd_tokenize(int argc, char **argv) {
  const char *dir = NULL;
  unsigned flags = 0;
  int decode = 0, skip_special = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--bos") == 0) flags |= QT_TOK_ADD_BOS;
    else if (strcmp(argv[i], "--eos") == 0) flags |= QT_TOK_ADD_EOS;
    else if (strcmp(argv[i], "--decode") == 0) decode = 1;
    else if (strcmp(argv[i], "--skip-special") == 0) skip_special = 1;
    else if (argv[i][0] == '-' && argv[i][1] != '\0') return qt_fail(QT_ERR_USAGE, "unknown option '%s'", argv[i]);
    else if (dir) return qt_fail(QT_ERR_USAGE, "more than one DIR ('%s' and '%s')", dir, argv[i]);
    else dir = argv[i];
  }
  if (!dir) return qt_fail(QT_ERR_USAGE, "missing DIR (a directory with tokenizer.json)");
  if (decode && flags) return qt_fail(QT_ERR_USAGE, "--bos/--eos apply to encoding, not to --decode");
  if (!decode && skip_special) return qt_fail(QT_ERR_USAGE, "--skip-special applies to --decode only");

  qt_tokenizer *t;
  QT_TRY(qt_tokenizer_load(dir, &t));
  qt_status st = QT_OK;
  if ((flags & QT_TOK_ADD_BOS) && qt_tokenizer_bos_id(t) < 0)
    st = qt_fail(QT_ERR_CONFIG, "%s: no BOS token: neither config.json bos_token_id nor tokenizer_config.json bos_token is set", dir);
  if (st == QT_OK && (flags & QT_TOK_ADD_EOS) && qt_tokenizer_eos_id(t) < 0)
    st = qt_fail(QT_ERR_CONFIG, "%s: no EOS token: neither config.json eos_token_id nor tokenizer_config.json eos_token is set", dir);

  char *line = NULL;
  size_t cap = 0, lineno = 0;
  ssize_t len;
  qt_token_ids ids = {0};
  qt_text_buf txt = {0};
  while (st == QT_OK && (len = getline(&line, &cap, stdin)) >= 0) {
    lineno++;
    if (blank(line, (size_t)len)) continue;
    st = decode ? decode_line(t, line, (size_t)len, lineno, skip_special, &ids, &txt, stdout)
                : encode_line(t, line, (size_t)len, lineno, flags, &ids, stdout);
  }
  if (st == QT_OK && ferror(stdin)) st = qt_fail(QT_ERR_IO, "stdin: read error");
  if (fflush(stdout) != 0 || ferror(stdout)) {
    if (st == QT_OK) st = qt_fail(QT_ERR_IO, "stdout: write error");
  }
  free(line);
  qt_token_ids_free(&ids);
  qt_text_buf_free(&txt);
  qt_tokenizer_free(t);
  return st;
}
