/* Examples (ids + labels) of every format equal what transformers-based tooling
 * builds for the same records: tests/golden/dataset/expected.json, written by
 * tools/reference/make_dataset_fixtures.py (rules: data/prompt.h). Each
 * tokenizer is loaded once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "common/fs.h"
#include "data/dataset.h"
#include "data/prompt.h"
#include "data/tokenizer.h"

typedef struct {
  cJSON *fixture;
  qt_tokenizer *tok[4];
} state;

enum { N_TOK = 4 };
static const char *k_tok_names[N_TOK] = {"stories260K", "qwen3", "llama3", "llama2"};
static const char *k_tok_paths[N_TOK] = {QLORA_SHARED_DIR "/data/stories260K",
                                         QLORA_SHARED_DIR "/data/tokenizers/qwen3",
                                         QLORA_SHARED_DIR "/data/tokenizers/llama3",
                                         QLORA_SHARED_DIR "/data/tokenizers/llama2"};

static int tok_index(const char *name) {
  for (int i = 0; i < N_TOK; i++)
    if (strcmp(name, k_tok_names[i]) == 0) return i;
  fail_msg("unknown tokenizer %s in the fixture", name);
  return -1;
}

static int setup(void **vs) {
  state *s = calloc(1, sizeof *s);
  uint8_t *buf = NULL;
  size_t len = 0;
  if (qt_fs_read_file(QLORA_TEST_DIR "/golden/dataset/expected.json", (size_t)1 << 30, &buf, &len) != QT_OK) {
    fprintf(stderr, "%s\n", qt_error_message());
    return -1;
  }
  s->fixture = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  if (!s->fixture) return -1;
  for (int i = 0; i < N_TOK; i++) {
    if (qt_tokenizer_load(k_tok_paths[i], &s->tok[i]) != QT_OK) {
      fprintf(stderr, "%s\n", qt_error_message());
      return -1;
    }
  }
  *vs = s;
  return 0;
}

static int teardown(void **vs) {
  state *s = *vs;
  for (int i = 0; i < N_TOK; i++) qt_tokenizer_free(s->tok[i]);
  cJSON_Delete(s->fixture);
  free(s);
  return 0;
}

static qt_data_format format_of(const char *f) {
  if (strcmp(f, "text") == 0) return QT_DATA_FMT_TEXT;
  if (strcmp(f, "completion") == 0) return QT_DATA_FMT_COMPLETION;
  if (strcmp(f, "alpaca") == 0) return QT_DATA_FMT_ALPACA;
  if (strcmp(f, "chat") == 0) return QT_DATA_FMT_CHAT;
  fail_msg("unknown format %s", f);
  return QT_DATA_FMT_TEXT;
}

static void data_path(const char *spec, char *out, size_t n) {
  if (strncmp(spec, "shared:", 7) == 0) snprintf(out, n, "%s/data/%s", QLORA_SHARED_DIR, spec + 7);
  else if (strncmp(spec, "golden:", 7) == 0) snprintf(out, n, "%s/golden/dataset/%s", QLORA_TEST_DIR, spec + 7);
  else fail_msg("bad data spec %s", spec);
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void check_ints(const char *what, const char *cname, int i, const int32_t *got, int64_t n,
                       const cJSON *want) {
  int64_t m = cJSON_GetArraySize(want);
  int64_t first_diff = -1;
  for (int64_t k = 0; k < (n < m ? n : m) && first_diff < 0; k++)
    if (got[k] != (int32_t)cJSON_GetArrayItem(want, (int)k)->valuedouble) first_diff = k;
  if (n != m || first_diff >= 0) {
    if (first_diff < 0) first_diff = n < m ? n : m;
    fail_msg("%s example %d %s: length %lld vs expected %lld, first difference at %lld (got %d, want %d)",
             cname, i, what, (long long)n, (long long)m, (long long)first_diff,
             first_diff < n ? got[first_diff] : -1,
             first_diff < m ? (int)cJSON_GetArrayItem(want, (int)first_diff)->valuedouble : -1);
  }
}

/* Runs one fixture case; train_on_prompt 1 checks labels == ids instead. */
static void run_case(state *s, const cJSON *c, int train_on_prompt) {
  const char *cname = jstr(c, "name");
  const char *tpl = jstr(c, "template");
  qt_chat_choice choice = QT_CHAT_AUTO;
  if (tpl && strcmp(tpl, "chatml") == 0) choice = QT_CHAT_CHATML;
  if (tpl && strcmp(tpl, "llama3") == 0) choice = QT_CHAT_LLAMA3;
  int ti = tok_index(jstr(c, "tokenizer"));
  qt_data_format fmt = format_of(jstr(c, "format"));
  qt_prompt p;
  if (qt_prompt_init(&p, s->tok[ti], k_tok_paths[ti], fmt, choice, train_on_prompt) != QT_OK)
    fail_msg("%s: %s", cname, qt_error_message());
  char path[4096];
  data_path(jstr(c, "data"), path, sizeof path);
  const cJSON *examples = cJSON_GetObjectItemCaseSensitive(c, "examples");
  int n = cJSON_GetArraySize(examples);
  qt_dataset_opts o = {.max_records = (int64_t)cJSON_GetObjectItemCaseSensitive(c, "first")->valuedouble};
  qt_dataset ds;
  if (qt_dataset_load(path, &p, &o, &ds) != QT_OK) fail_msg("%s: %s", cname, qt_error_message());
  assert_int_equal(ds.n, n);
  assert_int_equal(ds.n_skipped, 0);
  for (int i = 0; i < n; i++) {
    const cJSON *e = cJSON_GetArrayItem(examples, i);
    int64_t len = qt_dataset_example_len(&ds, i);
    const int32_t *ids = ds.ids + ds.offset[i], *labels = ds.labels + ds.offset[i];
    check_ints("ids", cname, i, ids, len, cJSON_GetObjectItemCaseSensitive(e, "ids"));
    if (train_on_prompt) {
      for (int64_t k = 0; k < len; k++)
        if (labels[k] != ids[k]) fail_msg("%s example %d: train_on_prompt label %lld masked", cname, i, (long long)k);
    } else {
      check_ints("labels", cname, i, labels, len, cJSON_GetObjectItemCaseSensitive(e, "labels"));
    }
  }
  qt_dataset_free(&ds);
  qt_prompt_free(&p);
}

static const cJSON *find_case(state *s, const char *name) {
  const cJSON *c;
  cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(s->fixture, "cases")) {
    if (strcmp(jstr(c, "name"), name) == 0) return c;
  }
  fail_msg("fixture has no case %s", name);
  return NULL;
}

#define CASE_TEST(fn, name)                                \
  static void fn(void **vs) {                              \
    run_case(*vs, find_case(*vs, name), 0);                \
    run_case(*vs, find_case(*vs, name), 1);                \
  }
CASE_TEST(test_text_stories, "text_stories")
CASE_TEST(test_completion_stories, "completion_stories")
CASE_TEST(test_alpaca_stories, "alpaca_stories")
CASE_TEST(test_alpaca_llama3, "alpaca_llama3")
CASE_TEST(test_chat_qwen3_auto, "chat_qwen3_auto")
CASE_TEST(test_chat_qwen3_chatml, "chat_qwen3_chatml")
CASE_TEST(test_chat_llama3_auto, "chat_llama3_auto")
CASE_TEST(test_chat_llama2_chatml, "chat_llama2_chatml")

/* The rendered chat text equals apply_chat_template's (cut as documented). */
static void test_chat_text(void **vs) {
  state *s = *vs;
  const char *names[] = {"chat_qwen3_auto", "chat_qwen3_chatml", "chat_llama3_auto", "chat_llama2_chatml"};
  const qt_chat_kind kinds[] = {QT_CHAT_KIND_QWEN3, QT_CHAT_KIND_CHATML, QT_CHAT_KIND_LLAMA3, QT_CHAT_KIND_CHATML};
  for (int ci = 0; ci < 4; ci++) {
    const cJSON *c = find_case(s, names[ci]);
    int ti = tok_index(jstr(c, "tokenizer"));
    qt_prompt p;
    qt_chat_choice choice = strcmp(jstr(c, "template"), "chatml") == 0 ? QT_CHAT_CHATML : QT_CHAT_AUTO;
    assert_int_equal(qt_prompt_init(&p, s->tok[ti], k_tok_paths[ti], QT_DATA_FMT_CHAT, choice, 0), QT_OK);
    assert_int_equal(p.chat, kinds[ci]);
    /* Records straight from the file, rendered one by one. */
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(qt_fs_read_file(QLORA_TEST_DIR "/golden/dataset/chat.jsonl", 1 << 20, &buf, &len), QT_OK);
    char *save = NULL;
    int i = 0;
    for (char *line = strtok_r((char *)buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save), i++) {
      cJSON *rec = cJSON_Parse(line);
      assert_non_null(rec);
      qt_chat_msg msgs[16];
      qt_record r = {0};
      const cJSON *m;
      cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(rec, "messages")) {
        const char *role = jstr(m, "role"), *content = jstr(m, "content");
        const char *reasoning = jstr(m, "reasoning_content");
        msgs[r.n_msgs++] = (qt_chat_msg){{role, strlen(role)}, {content, strlen(content)},
                                         {reasoning, reasoning ? strlen(reasoning) : 0}};
      }
      r.msgs = msgs;
      const qt_text_buf *text;
      assert_int_equal(qt_prompt_render_chat(&p, &r, &text, NULL, NULL), QT_OK);
      const char *want = jstr(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "examples"), i), "text");
      if (strcmp(text->s, want) != 0) fail_msg("%s conversation %d renders\n%s\nexpected\n%s", names[ci], i, text->s, want);
      cJSON_Delete(rec);
    }
    free(buf);
    qt_prompt_free(&p);
  }
}

/* BOS rules: stories260K and Llama-2 add BOS (add_bos_token), the Llama-3
 * and Qwen3 files here add none (no add_bos_token / false; post_processor
 * ByteLevel). */
static void test_bos_rules(void **vs) {
  state *s = *vs;
  int want[N_TOK] = {1, 0, 0, 1};
  for (int i = 0; i < N_TOK; i++) {
    qt_prompt p;
    assert_int_equal(qt_prompt_init(&p, s->tok[i], k_tok_paths[i], QT_DATA_FMT_TEXT, QT_CHAT_AUTO, 0), QT_OK);
    assert_int_equal(p.add_bos, want[i]);
    qt_prompt_free(&p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bos_rules),
      cmocka_unit_test(test_text_stories),
      cmocka_unit_test(test_completion_stories),
      cmocka_unit_test(test_alpaca_stories),
      cmocka_unit_test(test_alpaca_llama3),
      cmocka_unit_test(test_chat_text),
      cmocka_unit_test(test_chat_qwen3_auto),
      cmocka_unit_test(test_chat_qwen3_chatml),
      cmocka_unit_test(test_chat_llama3_auto),
      cmocka_unit_test(test_chat_llama2_chatml),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
