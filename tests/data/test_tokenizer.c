/* Tests for data/tokenizer: ids and decodes equal Hugging Face tokenizers
 * (fixtures from tools/reference/make_tokenizer_fixtures.py, tokenizers
 * 0.23.3) for stories260K, Llama-2, Llama-3 and Qwen3; BOS/EOS from the
 * config files; clear errors for unsupported or malformed tokenizer.json;
 * arbitrary bytes never crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "data/tokenizer.h"

#define SHARED QLORA_SHARED_DIR "/data/"
#define GOLDEN QLORA_TEST_DIR "/golden/tokenizer/"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void print_escaped(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\n') fputs("\\n", stderr);
    else if (c == '\t') fputs("\\t", stderr);
    else if (c == '\r') fputs("\\r", stderr);
    else if (c < 0x20 || c == 0x7F) fprintf(stderr, "\\x%02x", c);
    else fputc(c, stderr);
  }
}

static void print_ids(const qt_tokenizer *t, const int32_t *ids, size_t n, size_t mark) {
  for (size_t i = 0; i < n; i++) {
    const char *s = qt_tokenizer_id_token(t, ids[i]);
    fprintf(stderr, "%s%s%d:'", i ? " " : "", i == mark ? ">>" : "", (int)ids[i]);
    if (s) print_escaped(s, strlen(s));
    fputc('\'', stderr);
  }
  fputc('\n', stderr);
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  assert_true(n >= 0);
  rewind(f);
  char *b = malloc((size_t)n + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
  b[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return b;
}

/* The tokenizer a fixture was made with: meta.source (under ../shared/data),
 * with meta.patch's top-level keys replaced when present. */
static qt_tokenizer *load_fixture_tokenizer(const cJSON *meta, const char *name) {
  const cJSON *src = cJSON_GetObjectItemCaseSensitive(meta, "source");
  const cJSON *patch = cJSON_GetObjectItemCaseSensitive(meta, "patch");
  assert_true(cJSON_IsString(src));
  const char *prefix = "../shared/data/";
  assert_int_equal(strncmp(src->valuestring, prefix, strlen(prefix)), 0);
  char path[512];
  snprintf(path, sizeof path, SHARED "%s", src->valuestring + strlen(prefix));
  qt_tokenizer *t = NULL;
  qt_status st;
  if (!patch) {
    st = qt_tokenizer_load(path, &t);
  } else {
    size_t len;
    char *text = slurp(path, &len);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    assert_non_null(root);
    for (const cJSON *c = patch->child; c; c = c->next) {
      cJSON *dup = cJSON_Duplicate(c, 1);
      assert_non_null(dup);
      if (cJSON_GetObjectItemCaseSensitive(root, c->string))
        assert_true(cJSON_ReplaceItemInObjectCaseSensitive(root, c->string, dup));
      else
        assert_true(cJSON_AddItemToObject(root, c->string, dup));
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    assert_non_null(json);
    st = qt_tokenizer_load_json(json, strlen(json), name, &t);
    free(json);
  }
  if (st != QT_OK) fprintf(stderr, "load %s (%s): %s\n", path, name, qt_error_message());
  assert_int_equal(st, QT_OK);
  return t;
}

/* Runs one fixture file, printing the first few failing cases with context. */
static void run_golden(const char *name, size_t min_cases) {
  char path[512];
  snprintf(path, sizeof path, GOLDEN "%s.jsonl", name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  size_t lineno = 0, cases = 0, bad_enc = 0, bad_dec = 0, roundtrip = 0;
  qt_tokenizer *t = NULL;
  qt_status st;
  double t0 = now_s(), t1 = t0;
  qt_token_ids got = {0};
  qt_text_buf dec = {0};
  char *raw = NULL;
  size_t raw_cap = 0;
  while ((len = getline(&line, &cap, f)) > 0) {
    lineno++;
    cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
    assert_non_null(j);
    if (lineno == 1) {
      const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "meta");
      assert_non_null(meta);
      const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, "tokenizers_version");
      assert_true(cJSON_IsString(v));
      t = load_fixture_tokenizer(meta, name);
      t1 = now_s();
      cJSON_Delete(j);
      continue;
    }
    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(j, "t");
    const cJSON *jh = cJSON_GetObjectItemCaseSensitive(j, "hex");
    const cJSON *ji = cJSON_GetObjectItemCaseSensitive(j, "ids");
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(j, "d");
    const cJSON *jds = cJSON_GetObjectItemCaseSensitive(j, "ds");
    assert_true(cJSON_IsArray(ji));
    const char *text;
    size_t tn;
    if (jt) {
      assert_true(cJSON_IsString(jt));
      text = jt->valuestring;
      tn = strlen(text);
    } else {
      assert_true(cJSON_IsString(jh));
      size_t hl = strlen(jh->valuestring);
      if (hl / 2 + 1 > raw_cap) {
        raw_cap = hl / 2 + 1;
        raw = realloc(raw, raw_cap);
        assert_non_null(raw);
      }
      for (size_t i = 0; i < hl / 2; i++)
        raw[i] = (char)(hexval(jh->valuestring[2 * i]) * 16 + hexval(jh->valuestring[2 * i + 1]));
      text = raw;
      tn = hl / 2;
    }
    size_t ne = (size_t)cJSON_GetArraySize(ji);
    int32_t *want = malloc((ne ? ne : 1) * sizeof *want);
    assert_non_null(want);
    size_t k = 0;
    for (const cJSON *c = ji->child; c; c = c->next) want[k++] = (int32_t)c->valuedouble;
    cases++;

    st = qt_tokenizer_encode(t, text, tn, 0, &got);
    if (st != QT_OK) fprintf(stderr, "%s line %zu: encode failed: %s\n", name, lineno, qt_error_message());
    assert_int_equal(st, QT_OK);
    size_t first = 0;
    while (first < ne && first < got.n && want[first] == got.ids[first]) first++;
    if (first < ne || ne != got.n) {
      if (bad_enc < 3) {
        fprintf(stderr, "%s line %zu: ids differ at index %zu\n  text: '", name, lineno, first);
        print_escaped(text, tn);
        fprintf(stderr, "'\n  want: ");
        print_ids(t, want, ne, first);
        fprintf(stderr, "  got:  ");
        print_ids(t, got.ids, got.n, first);
      }
      bad_enc++;
    }

    /* decode of the reference ids (skip_special_tokens=False, then True) */
    const char *wd = jd ? jd->valuestring : jt ? jt->valuestring : NULL;
    qt_text_buf san = {0};
    if (!wd) { /* hex case without "d": the replaced text */
      assert_int_equal(qt_utf8_sanitize(text, tn, &san, NULL), QT_OK);
      wd = san.s;
    }
    if (!jd) roundtrip++;
    for (int skip = 0; skip < 2; skip++) {
      const char *w = skip && jds ? jds->valuestring : wd;
      st = qt_tokenizer_decode(t, want, ne, skip, &dec);
      assert_int_equal(st, QT_OK);
      if (dec.n != strlen(w) || memcmp(dec.s, w, dec.n) != 0) {
        if (bad_dec < 3) {
          fprintf(stderr, "%s line %zu: decode(skip_special=%d) differs\n  want: '", name, lineno, skip);
          print_escaped(w, strlen(w));
          fprintf(stderr, "'\n  got:  '");
          print_escaped(dec.s, dec.n);
          fprintf(stderr, "'\n");
        }
        bad_dec++;
      }
    }
    qt_text_buf_free(&san);
    free(want);
    cJSON_Delete(j);
  }
  fclose(f);
  double t2 = now_s();
  fprintf(stderr, "%s: %zu cases, %zu encode mismatches, %zu decode mismatches, %zu exact round trips; "
                  "load %.2fs, cases %.2fs\n",
          name, cases, bad_enc, bad_dec, roundtrip, t1 - t0, t2 - t1);
  free(line);
  free(raw);
  qt_token_ids_free(&got);
  qt_text_buf_free(&dec);
  qt_tokenizer_free(t);
  assert_true(cases >= min_cases);
  assert_int_equal(bad_enc, 0);
  assert_int_equal(bad_dec, 0);
}

static void test_golden_stories260k(void **s) { (void)s; run_golden("stories260K", 5000); }
static void test_golden_llama2(void **s) { (void)s; run_golden("llama2", 5000); }
static void test_golden_llama3(void **s) { (void)s; run_golden("llama3", 5000); }
static void test_golden_qwen3(void **s) { (void)s; run_golden("qwen3", 5000); }
static void test_golden_variants(void **s) {
  (void)s;
  const char *names[] = {"llama2_metaspace_first", "stories_metaspace_always_split", "stories_split_behaviors",
                         "stories_bytelevel_nfkc", "stories_nfd_added", "stories_digits_punct_ws",
                         "stories_lowercase_strip"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) run_golden(names[i], 600);
}

/* BOS/EOS come from config.json (stories260K) or tokenizer_config.json, and
 * the flags add them around the plain encoding. */
static void test_bos_eos(void **s) {
  (void)s;
  struct {
    const char *dir, *bos, *eos;
  } cases[] = {
      {SHARED "stories260K", "<s>", "</s>"},
      {SHARED "tokenizers/llama2", "<s>", "</s>"},
      {SHARED "tokenizers/qwen3", NULL, "<|im_end|>"}, /* Qwen3 has no BOS */
  };
  qt_token_ids plain = {0}, with = {0};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    qt_tokenizer *t;
    assert_int_equal(qt_tokenizer_load(cases[c].dir, &t), QT_OK);
    int32_t bos = cases[c].bos ? qt_tokenizer_token_id(t, cases[c].bos) : -1;
    int32_t eos = qt_tokenizer_token_id(t, cases[c].eos);
    assert_true(eos >= 0);
    assert_int_equal(qt_tokenizer_bos_id(t), bos);
    assert_int_equal(qt_tokenizer_eos_id(t), eos);
    const char *text = "Once upon a time";
    assert_int_equal(qt_tokenizer_encode(t, text, strlen(text), 0, &plain), QT_OK);
    if (bos >= 0) {
      assert_int_equal(qt_tokenizer_encode(t, text, strlen(text), QT_TOK_ADD_BOS | QT_TOK_ADD_EOS, &with), QT_OK);
      assert_int_equal(with.n, plain.n + 2);
      assert_int_equal(with.ids[0], bos);
      assert_memory_equal(with.ids + 1, plain.ids, plain.n * sizeof(int32_t));
      assert_int_equal(with.ids[with.n - 1], eos);
    } else {
      assert_int_equal(qt_tokenizer_encode(t, text, strlen(text), QT_TOK_ADD_BOS, &with), QT_ERR_CONFIG);
      assert_int_equal(qt_tokenizer_encode(t, text, strlen(text), QT_TOK_ADD_EOS, &with), QT_OK);
      assert_int_equal(with.ids[with.n - 1], eos);
    }
    qt_tokenizer_free(t);
  }
  qt_token_ids_free(&plain);
  qt_token_ids_free(&with);
}

static qt_status load_str(const char *json, qt_tokenizer **t) {
  return qt_tokenizer_load_json(json, strlen(json), "mem/tokenizer.json", t);
}

#define MINI_MODEL \
  "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"<unk>\":3},\"merges\":[\"a b\"],\"unk_token\":\"<unk>\"}"

/* Unsupported types name the file and the type; malformed files are format errors. */
static void test_errors(void **s) {
  (void)s;
  struct {
    const char *json;
    qt_status want;
    const char *needle;
  } cases[] = {
      {"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", QT_ERR_UNSUPPORTED, "WordPiece"},
      {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", QT_ERR_UNSUPPORTED, "Unigram"},
      {"{" MINI_MODEL ",\"normalizer\":{\"type\":\"BertNormalizer\"}}", QT_ERR_UNSUPPORTED, "BertNormalizer"},
      {"{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Whitespace\"}}", QT_ERR_UNSUPPORTED, "Whitespace"},
      {"{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\"},{\"type\":\"BertPreTokenizer\"}]}}",
       QT_ERR_UNSUPPORTED, "BertPreTokenizer"},
      {"{" MINI_MODEL ",\"decoder\":{\"type\":\"WordPiece\"}}", QT_ERR_UNSUPPORTED, "WordPiece"},
      {"{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}",
       QT_ERR_UNSUPPORTED, "PCRE2"},
      {"{\"model\":{\"type\":\"BPE\",\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", QT_ERR_FORMAT, "twice"},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", QT_ERR_FORMAT, "not in the vocabulary"},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a a a\"]}}", QT_ERR_FORMAT, "one space"},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", QT_ERR_FORMAT, "vocab"},
      {"{\"model\":", QT_ERR_FORMAT, "JSON"},
      {"{\"model\":{\"Type\":\"BPE\",\"vocab\":{}}}", QT_ERR_UNSUPPORTED, "merges"}, /* keys are case-sensitive */
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    qt_tokenizer *t = NULL;
    qt_error_clear();
    qt_status st = load_str(cases[c].json, &t);
    if (st != cases[c].want || !strstr(qt_error_message(), cases[c].needle) ||
        !strstr(qt_error_message(), "mem/tokenizer.json"))
      fprintf(stderr, "case %zu: status %d, message '%s'\n", c, (int)st, qt_error_message());
    assert_int_equal(st, cases[c].want);
    assert_non_null(strstr(qt_error_message(), cases[c].needle));
    assert_non_null(strstr(qt_error_message(), "mem/tokenizer.json"));
    assert_null(t);
  }
  qt_tokenizer *t;
  assert_int_equal(qt_tokenizer_load(SHARED "no-such-dir", &t), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "tokenizer.json"));
}

/* A tiny hand-made model: merges in both forms, unk fusing, and decode of an
 * out-of-range id. The expected ids follow from the vocabulary itself. */
static void test_mini_model(void **s) {
  (void)s;
  const char *forms[] = {
      "{" MINI_MODEL "}",
      "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"<unk>\":3},\"merges\":[[\"a\",\"b\"]],"
      "\"unk_token\":\"<unk>\",\"fuse_unk\":true}}",
  };
  qt_token_ids ids = {0};
  qt_text_buf txt = {0};
  for (int k = 0; k < 2; k++) {
    qt_tokenizer *t;
    assert_int_equal(load_str(forms[k], &t), QT_OK);
    assert_int_equal(qt_tokenizer_vocab_size(t), 4);
    assert_int_equal(qt_tokenizer_encode(t, "abab", 4, 0, &ids), QT_OK);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.ids[0], qt_tokenizer_token_id(t, "ab"));
    assert_int_equal(qt_tokenizer_encode(t, "xyab", 4, 0, &ids), QT_OK);
    /* unfused: one <unk> per unknown char; fused: one for the run */
    assert_int_equal(ids.n, k == 0 ? 3 : 2);
    int32_t bad = 4;
    assert_int_equal(qt_tokenizer_decode(t, &bad, 1, 0, &txt), QT_ERR_INVALID);
    /* from memory there is no BOS/EOS until set */
    assert_int_equal(qt_tokenizer_bos_id(t), -1);
    assert_int_equal(qt_tokenizer_encode(t, "ab", 2, QT_TOK_ADD_BOS, &ids), QT_ERR_CONFIG);
    qt_tokenizer_set_bos_eos(t, qt_tokenizer_token_id(t, "a"), qt_tokenizer_token_id(t, "b"));
    assert_int_equal(qt_tokenizer_encode(t, "ab", 2, QT_TOK_ADD_BOS | QT_TOK_ADD_EOS, &ids), QT_OK);
    assert_int_equal(ids.n, 3);
    assert_int_equal(ids.ids[0], qt_tokenizer_token_id(t, "a"));
    assert_int_equal(ids.ids[1], qt_tokenizer_token_id(t, "ab"));
    assert_int_equal(ids.ids[2], qt_tokenizer_token_id(t, "b"));
    qt_tokenizer_free(t);
  }
  qt_token_ids_free(&ids);
  qt_text_buf_free(&txt);
}

/* Random bytes (mostly invalid UTF-8) never crash and encode exactly like
 * their U+FFFD-replaced text, for every pipeline kind. */
static void test_random_bytes(void **s) {
  (void)s;
  const char *dirs[] = {SHARED "stories260K", SHARED "tokenizers/llama2"};
  uint64_t x = 0x243F6A8885A308D3ull;
  qt_token_ids a = {0}, b = {0};
  qt_text_buf clean = {0}, dec = {0};
  char buf[256];
  for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
    qt_tokenizer *t;
    assert_int_equal(qt_tokenizer_load(dirs[d], &t), QT_OK);
    for (int it = 0; it < 2000; it++) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      size_t n = (size_t)(x % sizeof buf);
      for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        unsigned r = (unsigned)(x >> 32);
        /* bias towards bytes that form (broken) multi-byte sequences */
        buf[i] = (char)(r % 3 == 0 ? 0x80 + (r >> 8) % 64 : r % 3 == 1 ? 0xC0 + (r >> 8) % 64 : (r >> 8) % 128);
      }
      int valid;
      assert_int_equal(qt_utf8_sanitize(buf, n, &clean, &valid), QT_OK);
      assert_int_equal(qt_tokenizer_encode(t, buf, n, 0, &a), QT_OK);
      assert_int_equal(qt_tokenizer_encode(t, clean.s, clean.n, 0, &b), QT_OK);
      assert_int_equal(a.n, b.n);
      assert_memory_equal(a.ids, b.ids, a.n * sizeof(int32_t));
      assert_int_equal(qt_tokenizer_decode(t, a.ids, a.n, 0, &dec), QT_OK);
    }
    qt_tokenizer_free(t);
  }
  qt_token_ids_free(&a);
  qt_token_ids_free(&b);
  qt_text_buf_free(&clean);
  qt_text_buf_free(&dec);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_stories260k), cmocka_unit_test(test_golden_llama2),
      cmocka_unit_test(test_golden_llama3),      cmocka_unit_test(test_golden_qwen3),
      cmocka_unit_test(test_golden_variants),
      cmocka_unit_test(test_bos_eos),            cmocka_unit_test(test_errors),
      cmocka_unit_test(test_mini_model),         cmocka_unit_test(test_random_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
