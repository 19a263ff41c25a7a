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
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "common/fs.h"
#include "data/dataset.h"
#include "data/prompt.h"
#include "data/tokenizer.h"

typedef struct {
  cJSON *fixture;
  qt_tokenizer *tok[5];
} state;

/* phi3: the Llama-2 tokenizer with Phi-3's added tokens, written by the
 * fixture script (tests/golden/dataset/phi3). */
enum { N_TOK = 5, TOK_LLAMA2 = 3 };
static const char *k_tok_names[N_TOK] = {"stories260K", "qwen3", "llama3", "llama2", "phi3"};
static const char *k_tok_paths[N_TOK] = {QLORA_SHARED_DIR "/data/stories260K",
                                         QLORA_SHARED_DIR "/data/tokenizers/qwen3",
                                         QLORA_SHARED_DIR "/data/tokenizers/llama3",
                                         QLORA_SHARED_DIR "/data/tokenizers/llama2",
                                         QLORA_TEST_DIR "/golden/dataset/phi3"};

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
  if (tpl && strcmp(tpl, "gemma") == 0) choice = QT_CHAT_GEMMA;
  if (tpl && strcmp(tpl, "phi3") == 0) choice = QT_CHAT_PHI3;
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
CASE_TEST(test_chat_phi3_auto, "chat_phi3_auto")
CASE_TEST(test_chat_phi3_phi3, "chat_phi3_phi3")

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

/* ---- Gemma and Phi-3 templates: text, target byte spans, generation prompts --- */

/* A jsonl file's records, one cJSON per line (caller frees with cJSON_Delete). */
static int read_jsonl(const char *path, cJSON **recs, int max) {
  uint8_t *buf = NULL;
  size_t len = 0;
  if (qt_fs_read_file(path, 1 << 20, &buf, &len) != QT_OK) fail_msg("%s", qt_error_message());
  char *save = NULL;
  int n = 0;
  for (char *line = strtok_r((char *)buf, "\n", &save); line && n < max; line = strtok_r(NULL, "\n", &save)) {
    recs[n] = cJSON_Parse(line);
    if (!recs[n]) fail_msg("%s: record %d is not JSON", path, n);
    n++;
  }
  free(buf);
  return n;
}

static size_t record_msgs(const cJSON *rec, qt_chat_msg *msgs, size_t max) {
  size_t n = 0;
  const cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(rec, "messages")) {
    assert_true(n < max);
    const char *role = jstr(m, "role"), *content = jstr(m, "content");
    msgs[n++] = (qt_chat_msg){{role, strlen(role)}, {content, strlen(content)}, {NULL, 0}};
  }
  return n;
}

static int known_roles(const qt_chat_msg *msgs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const qt_str r = msgs[i].role;
    if (!((r.n == 4 && !memcmp(r.s, "user", 4)) || (r.n == 6 && !memcmp(r.s, "system", 6)) ||
          (r.n == 9 && !memcmp(r.s, "assistant", 9))))
      return 0;
  }
  return 1;
}

/* The fixture says the template raised `want` (transformers' message): the
 * C side must fail with QT_ERR_FORMAT and quote it. */
static void expect_error(qt_status st, const char *want, const char *cname, int i, const char *what) {
  if (st != QT_ERR_FORMAT) fail_msg("%s record %d %s: status %d, expected the error '%s'", cname, i, what, (int)st, want);
  if (!strstr(qt_error_message(), want))
    fail_msg("%s record %d %s: error '%s' does not quote '%s'", cname, i, what, qt_error_message(), want);
}

/* Renders every record of a render_* case with p and compares text, spans and
 * the generation prompts with the fixture. */
static void check_render_case(qt_prompt *p, const cJSON *c) {
  const char *cname = jstr(c, "name");
  char path[4096];
  data_path(jstr(c, "data"), path, sizeof path);
  cJSON *recs[32];
  int n = read_jsonl(path, recs, 32);
  const cJSON *examples = cJSON_GetObjectItemCaseSensitive(c, "examples");
  assert_int_equal(n, cJSON_GetArraySize(examples));
  for (int i = 0; i < n; i++) {
    const cJSON *e = cJSON_GetArrayItem(examples, i);
    qt_chat_msg msgs[16];
    size_t nm = record_msgs(recs[i], msgs, 16);
    qt_record r = {.msgs = msgs, .n_msgs = nm};
    const qt_text_buf *text;
    const size_t *spans;
    size_t n_spans;
    qt_status st = qt_prompt_render_chat(p, &r, &text, &spans, &n_spans);
    const char *err = jstr(e, "error");
    if (!known_roles(msgs, nm)) { /* the template raises, skips or renders it; we refuse it */
      expect_error(st, "is not system, user or assistant", cname, i, "render");
      continue;
    }
    if (err) {
      expect_error(st, err, cname, i, "render");
      continue;
    }
    if (st != QT_OK) fail_msg("%s record %d: %s", cname, i, qt_error_message());
    const char *want = jstr(e, "text");
    if (strcmp(text->s, want) != 0) fail_msg("%s record %d renders\n%s\nexpected\n%s", cname, i, text->s, want);
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(e, "spans");
    assert_int_equal(2 * n_spans, cJSON_GetArraySize(ws));
    for (size_t k = 0; k < 2 * n_spans; k++)
      if (spans[k] != (size_t)cJSON_GetArrayItem(ws, (int)k)->valuedouble)
        fail_msg("%s record %d: span bound %zu is %zu, expected %d", cname, i, k, spans[k],
                 (int)cJSON_GetArrayItem(ws, (int)k)->valuedouble);
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(e, "generation")) {
      size_t k = (size_t)cJSON_GetObjectItemCaseSensitive(g, "n")->valuedouble;
      const qt_text_buf *gt;
      qt_status gs = qt_prompt_render_generation(p, msgs, k, &gt);
      if (jstr(g, "error")) {
        expect_error(gs, jstr(g, "error"), cname, i, "generation");
      } else if (gs != QT_OK) {
        fail_msg("%s record %d generation after %zu messages: %s", cname, i, k, qt_error_message());
      } else if (strcmp(gt->s, jstr(g, "text")) != 0) {
        fail_msg("%s record %d generation after %zu messages renders\n%s\nexpected\n%s", cname, i, k, gt->s,
                 jstr(g, "text"));
      }
    }
  }
  for (int i = 0; i < n; i++) cJSON_Delete(recs[i]);
}

/* Auto-detection from each template's tokenizer_config.json (kind and
 * variant), then the renders; explicit data.chat_template gemma / phi3 render
 * Gemma-3's and Phi-3-mini-4k-instruct's templates. */
static void test_chat_gemma_phi3_render(void **vs) {
  state *s = *vs;
  static const struct {
    const char *tpl, *explicit_name;
    qt_chat_kind kind;
    unsigned flags;
    qt_chat_choice choice;
  } t[] = {{"gemma2", NULL, QT_CHAT_KIND_GEMMA, QT_CHAT_FLAG_NO_SYSTEM, QT_CHAT_AUTO},
           {"gemma3", "gemma", QT_CHAT_KIND_GEMMA, 0, QT_CHAT_GEMMA},
           {"phi3mini", "phi3", QT_CHAT_KIND_PHI3, 0, QT_CHAT_PHI3},
           {"phi35", NULL, QT_CHAT_KIND_PHI3, QT_CHAT_FLAG_SKIP_EMPTY_SYSTEM, QT_CHAT_AUTO}};
  qt_tokenizer *tok = s->tok[TOK_LLAMA2];
  for (size_t ti = 0; ti < sizeof t / sizeof t[0]; ti++) {
    char dir[4096], name[128];
    snprintf(dir, sizeof dir, "%s/golden/dataset/templates/%s", QLORA_TEST_DIR, t[ti].tpl);
    for (int pass = 0; pass < 2; pass++) {
      if (pass == 1 && !t[ti].explicit_name) break;
      qt_prompt p;
      /* pass 1: the explicit setting, with a tokenizer directory without a template */
      if (qt_prompt_init(&p, tok, pass ? k_tok_paths[TOK_LLAMA2] : dir, QT_DATA_FMT_CHAT,
                         pass ? t[ti].choice : QT_CHAT_AUTO, 0) != QT_OK)
        fail_msg("%s: %s", t[ti].tpl, qt_error_message());
      assert_int_equal(p.chat, t[ti].kind);
      assert_int_equal(p.chat_flags, t[ti].flags);
      assert_string_equal(qt_chat_kind_name(p.chat), t[ti].kind == QT_CHAT_KIND_GEMMA ? "gemma" : "phi3");
      snprintf(name, sizeof name, "render_%s_chat_turns", t[ti].tpl);
      check_render_case(&p, find_case(s, name));
      snprintf(name, sizeof name, "render_%s_chat_turns_bad", t[ti].tpl);
      check_render_case(&p, find_case(s, name));
      qt_prompt_free(&p);
    }
  }
}

/* A bad record in a dataset file is reported with file:line and the
 * template's reason (Gemma-2 and a system message: chat_turns.jsonl line 1). */
static void test_chat_gemma2_system_error(void **vs) {
  state *s = *vs;
  qt_prompt p;
  assert_int_equal(qt_prompt_init(&p, s->tok[TOK_LLAMA2], QLORA_TEST_DIR "/golden/dataset/templates/gemma2",
                                  QT_DATA_FMT_CHAT, QT_CHAT_AUTO, 0), QT_OK);
  qt_dataset ds;
  qt_dataset_opts o = {0};
  qt_status st = qt_dataset_load(QLORA_TEST_DIR "/golden/dataset/chat_turns.jsonl", &p, &o, &ds);
  assert_int_equal(st, QT_ERR_FORMAT);
  const char *msg = qt_error_message();
  if (!strstr(msg, "chat_turns.jsonl:1:") || !strstr(msg, "System role not supported"))
    fail_msg("unexpected error: %s", msg);
  qt_prompt_free(&p);
}

/* Templates that look like Phi-3 but render differently (the April 2024
 * Phi-3-mini / Phi-3-medium ones: no system role, "<|assistant|>\n" glued to
 * every user turn) are not taken for phi3. */
static void test_chat_phi3_old_template_unsupported(void **vs) {
  state *s = *vs;
  char dir[] = "/tmp/qt_phi3_oldXXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  /* microsoft/Phi-3-medium-4k-instruct, as quoted in guidance-ai/guidance guidance/chat.py */
  fputs("{\"add_bos_token\": true, \"chat_template\": \"{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + "
        "'\\\\n' + message['content'] + '<|end|>' + '\\\\n' + '<|assistant|>' + '\\\\n'}}{% elif (message['role'] "
        "== 'assistant') %}{{message['content'] + '<|end|>' + '\\\\n'}}{% endif %}{% endfor %}\"}\n", f);
  fclose(f);
  qt_prompt p;
  qt_status st = qt_prompt_init(&p, s->tok[TOK_LLAMA2], dir, QT_DATA_FMT_CHAT, QT_CHAT_AUTO, 0);
  if (st != QT_ERR_UNSUPPORTED) fail_msg("status %d: %s", (int)st, st ? qt_error_message() : "ok");
  assert_non_null(strstr(qt_error_message(), "phi3"));
  remove(path);
  rmdir(dir);
}

/* The end-of-turn ids of the Phi-3 tokenizer fixture (<|end|> 32007, Phi-3's
 * real id) and the EOS <|endoftext|> 32000. */
static void test_chat_phi3_ids(void **vs) {
  state *s = *vs;
  qt_prompt p;
  assert_int_equal(qt_prompt_init(&p, s->tok[4], k_tok_paths[4], QT_DATA_FMT_CHAT, QT_CHAT_AUTO, 0), QT_OK);
  assert_int_equal(p.chat, QT_CHAT_KIND_PHI3);
  assert_int_equal(qt_prompt_end_of_turn_id(&p), 32007);
  assert_int_equal(p.eos_id, 32000);
  qt_prompt_free(&p);
}

/* BOS rules: stories260K and Llama-2 add BOS (add_bos_token), the Llama-3
 * and Qwen3 files here add none (no add_bos_token / false; post_processor
 * ByteLevel). */
static void test_bos_rules(void **vs) {
  state *s = *vs;
  int want[N_TOK] = {1, 0, 0, 1, 1};
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
      cmocka_unit_test(test_chat_phi3_auto),
      cmocka_unit_test(test_chat_phi3_phi3),
      cmocka_unit_test(test_chat_phi3_ids),
      cmocka_unit_test(test_chat_gemma_phi3_render),
      cmocka_unit_test(test_chat_gemma2_system_error),
      cmocka_unit_test(test_chat_phi3_old_template_unsupported),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
