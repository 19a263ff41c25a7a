/* data/dataset: the bad-data corpus (each case's exact file:line and what is
 * wrong), skip_bad_records, empty datasets, invalid UTF-8 and random bytes
 * (never a crash), truncation counts. Tokenizer: stories260K. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "data/dataset.h"
#include "data/prompt.h"
#include "data/tokenizer.h"

#define TOK_DIR QLORA_SHARED_DIR "/data/stories260K"

typedef struct {
  const char *name;   /* file name: decides .json / .jsonl */
  qt_data_format fmt;
  const char *data;
  const char *message; /* the whole expected error message */
} bad_case;

static const bad_case k_cases[] = {
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"text\":\"a\"}\n{\"text\": }\n",
     "d.jsonl:2: malformed JSON at column 10"},
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"text\":\"a\"}\n\n  \n{\"txt\":\"b\"}\n", "d.jsonl:4: missing \"text\""},
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"Text\":\"a\"}", "d.jsonl:1: missing \"text\""},
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"text\":null}", "d.jsonl:1: missing \"text\""},
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"text\": 5}", "d.jsonl:1: \"text\" is a number, expected a string"},
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"text\":\"a\",\"text\":\"b\"}", "d.jsonl:1: duplicate key \"text\""},
    {"d.jsonl", QT_DATA_FMT_TEXT, "[1, 2]", "d.jsonl:1: the record is an array, expected a JSON object"},
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"text\":\"a\"} x",
     "d.jsonl:1: unexpected text after the JSON value at column 14 (one record per line)"},
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"text\":\"a\"}{\"text\":\"b\"}",
     "d.jsonl:1: unexpected text after the JSON value at column 13 (one record per line)"},
    {"d.jsonl", QT_DATA_FMT_TEXT, "{\"text\":\"a\n\"}", "d.jsonl:1: malformed JSON at column 10"},
    {"d.json", QT_DATA_FMT_TEXT, "[\n  {\"text\": \"a\"},\n\n  {\"text\": 1}\n]",
     "d.json:4: \"text\" is a number, expected a string"},
    {"d.json", QT_DATA_FMT_TEXT, "[{\"text\": \"a\"},\n \"x\"]", "d.json:2: the record is a string, expected a JSON object"},
    {"d.json", QT_DATA_FMT_TEXT, "{\"text\": \"a\"}",
     "d.json:1: the file is an object, expected a JSON array of records (use .jsonl for one record per line)"},
    {"d.json", QT_DATA_FMT_TEXT, "[\n{\"text\": \"a\"}\n] x", "d.json:3: unexpected text after the JSON array"},
    {"d.completion", QT_DATA_FMT_COMPLETION, "{\"prompt\":\"a\"}", "d.completion:1: missing \"completion\""},
    {"d.jsonl", QT_DATA_FMT_COMPLETION, "{\"completion\":\"a\"}", "d.jsonl:1: missing \"prompt\""},
    {"d.jsonl", QT_DATA_FMT_ALPACA, "{\"instruction\":\"a\",\"input\":\"\"}", "d.jsonl:1: missing \"output\""},
    {"d.jsonl", QT_DATA_FMT_ALPACA, "{\"instruction\":\"a\",\"input\":[],\"output\":\"b\"}",
     "d.jsonl:1: \"input\" is an array, expected a string"},
    {"d.jsonl", QT_DATA_FMT_CHAT, "{\"messages\":\"hi\"}", "d.jsonl:1: \"messages\" is a string, expected an array"},
    {"d.jsonl", QT_DATA_FMT_CHAT, "{\"msgs\":[]}", "d.jsonl:1: missing \"messages\""},
    {"d.jsonl", QT_DATA_FMT_CHAT, "{\"messages\":[]}", "d.jsonl:1: \"messages\" is empty"},
    {"d.jsonl", QT_DATA_FMT_CHAT, "{\"messages\":[3]}", "d.jsonl:1: messages[0] is a number, expected an object"},
    {"d.jsonl", QT_DATA_FMT_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"role\":\"user\",\"content\":\"b\"}]}",
     "d.jsonl:1: duplicate key \"role\" in messages[1]"},
    {"d.jsonl", QT_DATA_FMT_CHAT,
     "{\"messages\":[{\"role\":\"tool\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}]}",
     "d.jsonl:1: messages[0].role \"tool\" is not system, user or assistant"},
    {"d.jsonl", QT_DATA_FMT_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}",
     "d.jsonl:1: no assistant message: nothing to train on"},
    {"d.jsonl", QT_DATA_FMT_CHAT, "{\"messages\":[{\"role\":\"user\"},{\"role\":\"assistant\",\"content\":\"b\"}]}",
     "d.jsonl:1: messages[0] has no \"content\""},
    {"d.jsonl", QT_DATA_FMT_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":7}]}",
     "d.jsonl:1: \"content\" in messages[1] is a number, expected a string"},
};

static const char k_hint[] = "; fix the record or set data.skip_bad_records: true";

typedef struct {
  qt_tokenizer *tok;
} state;

static int setup(void **vs) {
  state *s = calloc(1, sizeof *s);
  qt_log_set_level(QT_LOG_ERROR); /* skipped-record warnings are expected here */
  if (qt_tokenizer_load(TOK_DIR, &s->tok) != QT_OK) {
    fprintf(stderr, "%s\n", qt_error_message());
    return -1;
  }
  *vs = s;
  return 0;
}

static int teardown(void **vs) {
  state *s = *vs;
  qt_tokenizer_free(s->tok);
  free(s);
  return 0;
}

static void prompt_for(state *s, qt_data_format fmt, qt_prompt *p) {
  /* stories260K has no chat_template: force ChatML for the chat cases */
  if (qt_prompt_init(p, s->tok, TOK_DIR, fmt, QT_CHAT_CHATML, 0) != QT_OK)
    fail_msg("%s", qt_error_message());
}

static void test_corpus(void **vs) {
  state *s = *vs;
  for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
    const bad_case *c = &k_cases[i];
    qt_prompt p;
    prompt_for(s, c->fmt, &p);
    qt_dataset_opts o = {0};
    qt_dataset ds;
    qt_status st = qt_dataset_load_mem(c->name, c->data, strlen(c->data), &p, &o, &ds);
    if (st != QT_ERR_FORMAT) fail_msg("case %zu: status %d, want format error", i, (int)st);
    /* per-record problems carry the hint; whole-file ones do not */
    char want[512];
    int per_record = strstr(c->message, "expected a JSON array") == NULL &&
                     strstr(c->message, "after the JSON array") == NULL;
    snprintf(want, sizeof want, "%s%s", c->message, per_record ? k_hint : "");
    if (strcmp(qt_error_message(), want) != 0)
      fail_msg("case %zu:\n got  %s\n want %s", i, qt_error_message(), want);
    assert_null(ds.ids);
    assert_int_equal(ds.n, 0);

    /* With skip_bad_records a per-record problem is skipped and counted,
     * and the good records before it survive. */
    if (per_record) {
      o.skip_bad_records = 1;
      st = qt_dataset_load_mem(c->name, c->data, strlen(c->data), &p, &o, &ds);
      if (st == QT_OK) {
        assert_int_equal(ds.n_skipped, 1);
        assert_int_equal(ds.n, ds.n_records - 1);
        qt_dataset_free(&ds);
      } else {
        /* the only record was bad: an empty dataset */
        assert_int_equal(st, QT_ERR_FORMAT);
        /* (case 9's raw newline makes two bad lines) */
        char all_bad[64];
        int nrec = strstr(c->data, "\"a\n") ? 2 : 1;
        snprintf(all_bad, sizeof all_bad, "no examples (%d records, %d skipped as bad)", nrec, nrec);
        if (!strstr(qt_error_message(), all_bad)) fail_msg("case %zu skip: %s", i, qt_error_message());
      }
    }
    qt_prompt_free(&p);
  }
}

static void test_malformed_array(void **vs) {
  state *s = *vs;
  qt_prompt p;
  prompt_for(s, QT_DATA_FMT_TEXT, &p);
  const char *data = "[\n{\"text\": \"a\"},\n{\"text\": \"b\",\n]\n";
  qt_dataset_opts o = {.skip_bad_records = 1};
  qt_dataset ds;
  /* a broken array cannot be skipped record by record */
  assert_int_equal(qt_dataset_load_mem("x.json", data, strlen(data), &p, &o, &ds), QT_ERR_FORMAT);
  assert_string_equal(qt_error_message(),
                      "x.json:4: malformed JSON; a .json dataset is one JSON array of records "
                      "(use .jsonl for one record per line)");
  qt_prompt_free(&p);
}

static void test_skip_counts_and_lines(void **vs) {
  state *s = *vs;
  qt_prompt p;
  prompt_for(s, QT_DATA_FMT_TEXT, &p);
  const char *data =
      "{\"text\":\"one\"}\n"
      "{\"text\":\n"
      "\n"
      "{\"text\":\"three\"}\n"
      "{\"txt\":\"x\"}\n"
      "{\"text\":\"five\"}\n";
  qt_dataset_opts o = {.skip_bad_records = 1};
  qt_dataset ds;
  assert_int_equal(qt_dataset_load_mem("s.jsonl", data, strlen(data), &p, &o, &ds), QT_OK);
  assert_int_equal(ds.n, 3);
  assert_int_equal(ds.n_records, 5);
  assert_int_equal(ds.n_skipped, 2);
  assert_int_equal(ds.line[0], 1);
  assert_int_equal(ds.line[1], 4);
  assert_int_equal(ds.line[2], 6);
  qt_dataset_free(&ds);

  /* max_records counts bad records too */
  o.max_records = 2;
  assert_int_equal(qt_dataset_load_mem("s.jsonl", data, strlen(data), &p, &o, &ds), QT_OK);
  assert_int_equal(ds.n, 1);
  assert_int_equal(ds.n_records, 2);
  qt_dataset_free(&ds);

  /* all bad, or nothing at all: an empty dataset is an error */
  const char *empties[] = {"", "\n\n  \n", "{\"t\":1}\n{\"t\":2}\n"};
  for (int i = 0; i < 3; i++) {
    o = (qt_dataset_opts){.skip_bad_records = 1};
    assert_int_equal(qt_dataset_load_mem("e.jsonl", empties[i], strlen(empties[i]), &p, &o, &ds), QT_ERR_FORMAT);
    assert_non_null(strstr(qt_error_message(), "e.jsonl: no examples"));
  }
  assert_int_equal(qt_dataset_load_mem("e.json", "[]", 2, &p, &o, &ds), QT_ERR_FORMAT);
  assert_string_equal(qt_error_message(),
                      "e.json: no examples (0 records, 0 skipped as bad); a dataset needs at least one good record");
  qt_prompt_free(&p);
}

/* Invalid UTF-8 is replaced with U+FFFD (one per maximal invalid subpart):
 * the example equals the encoding of the replaced text. */
static void test_invalid_utf8(void **vs) {
  state *s = *vs;
  qt_prompt p;
  prompt_for(s, QT_DATA_FMT_TEXT, &p);
  const char data[] = "{\"text\":\"a\xff\xfe b\xe2\x82 c\xc3\"}\n";
  qt_dataset_opts o = {0};
  qt_dataset ds;
  assert_int_equal(qt_dataset_load_mem("u.jsonl", data, sizeof data - 1, &p, &o, &ds), QT_OK);
  assert_int_equal(ds.n, 1);
  const char fixed[] = "a\xef\xbf\xbd\xef\xbf\xbd b\xef\xbf\xbd c\xef\xbf\xbd";
  qt_token_ids want = {0};
  assert_int_equal(qt_tokenizer_encode(s->tok, fixed, sizeof fixed - 1, QT_TOK_ADD_BOS | QT_TOK_ADD_EOS, &want), QT_OK);
  assert_int_equal(qt_dataset_example_len(&ds, 0), (int64_t)want.n);
  assert_memory_equal(ds.ids, want.ids, want.n * sizeof *want.ids);
  qt_token_ids_free(&want);
  qt_dataset_free(&ds);

  /* a byte order mark before the first record is skipped, in both layouts */
  const char bom_lines[] = "\xEF\xBB\xBF{\"text\":\"hi\"}\n";
  const char bom_array[] = "\xEF\xBB\xBF[{\"text\":\"hi\"}]";
  qt_dataset b1, b2;
  assert_int_equal(qt_dataset_load_mem("b.jsonl", bom_lines, sizeof bom_lines - 1, &p, &o, &b1), QT_OK);
  assert_int_equal(qt_dataset_load_mem("b.json", bom_array, sizeof bom_array - 1, &p, &o, &b2), QT_OK);
  assert_int_equal(qt_dataset_example_len(&b1, 0), qt_dataset_example_len(&b2, 0));
  assert_memory_equal(b1.ids, b2.ids, (size_t)qt_dataset_example_len(&b1, 0) * sizeof *b1.ids);
  assert_int_equal(qt_tokenizer_encode(s->tok, "hi", 2, QT_TOK_ADD_BOS | QT_TOK_ADD_EOS, &want), QT_OK);
  assert_int_equal(qt_dataset_example_len(&b1, 0), (int64_t)want.n);
  assert_memory_equal(b1.ids, want.ids, want.n * sizeof *want.ids);
  qt_token_ids_free(&want);
  qt_dataset_free(&b1);
  qt_dataset_free(&b2);
  qt_prompt_free(&p);
}

/* Random bytes and mangled records in every format: a clean result or a
 * format error with a file:line message, never a crash (run under ASan). */
static void test_random_bytes(void **vs) {
  state *s = *vs;
  static const char *pieces[] = {
      "{", "}", "[", "]", "\"", ":", ",", "\n", "\\", "\\u00e9", "\\ud800", "\xff", "\xc3",
      "\"text\"", "\"prompt\"", "\"completion\"", "\"instruction\"", "\"output\"", "\"input\"",
      "\"messages\"", "\"role\"", "\"content\"", "\"assistant\"", "\"user\"", "\"system\"",
      "\"<|im_start|>\"", "\"</think>\"", "null", "1", "true", " ", "\"x\"", "\0"};
  uint64_t r = 0x853c49e6748fea9bULL;
  char buf[512];
  for (int fmt = 0; fmt < 4; fmt++) {
    qt_prompt p;
    prompt_for(s, (qt_data_format)fmt, &p);
    for (int it = 0; it < 400; it++) {
      size_t n = 0;
      int k = 1 + (int)(r % 40);
      for (int j = 0; j < k; j++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        const char *pc = pieces[(r >> 33) % (sizeof pieces / sizeof pieces[0])];
        size_t l = pc[0] ? strlen(pc) : 1;
        if (n + l >= sizeof buf) break;
        memcpy(buf + n, pc, l);
        n += l;
      }
      qt_dataset_opts o = {.skip_bad_records = it & 1, .seq_len = 16};
      qt_dataset ds;
      qt_status st = qt_dataset_load_mem(it & 2 ? "r.json" : "r.jsonl", buf, n, &p, &o, &ds);
      assert_true(st == QT_OK || st == QT_ERR_FORMAT);
      if (st == QT_OK) {
        assert_true(ds.n > 0);
        for (int64_t i = 0; i < ds.n; i++) assert_true(qt_dataset_example_len(&ds, i) <= 16);
        qt_dataset_free(&ds);
      } else {
        assert_non_null(strstr(qt_error_message(), it & 2 ? "r.json" : "r.jsonl"));
      }
    }
    qt_prompt_free(&p);
  }
}

static void test_truncation_and_file(void **vs) {
  state *s = *vs;
  qt_prompt p;
  prompt_for(s, QT_DATA_FMT_TEXT, &p);
  qt_dataset_opts o = {.seq_len = 32};
  qt_dataset ds;
  assert_int_equal(qt_dataset_load(QLORA_SHARED_DIR "/data/tinystories/valid.jsonl", &p, &o, &ds), QT_OK);
  assert_int_equal(ds.n, 50);
  /* every story of valid.jsonl is longer than 32 tokens */
  assert_int_equal(ds.n_truncated, 50);
  assert_int_equal(ds.n_no_target, 0);
  for (int64_t i = 0; i < ds.n; i++) assert_int_equal(qt_dataset_example_len(&ds, i), 32);
  qt_dataset_free(&ds);
  assert_int_equal(qt_dataset_load("/nonexistent/d.jsonl", &p, &o, &ds), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent/d.jsonl"));
  qt_prompt_free(&p);

  /* an Alpaca prompt longer than seq_len leaves no target: kept and counted */
  prompt_for(s, QT_DATA_FMT_ALPACA, &p);
  const char *rec = "{\"instruction\":\"Say hi.\",\"output\":\"hi\"}\n"
                    "{\"instruction\":\"Say hi.\",\"input\":\"\",\"output\":\"hi\"}\n";
  o.seq_len = 8;
  assert_int_equal(qt_dataset_load_mem("a.jsonl", rec, strlen(rec), &p, &o, &ds), QT_OK);
  assert_int_equal(ds.n, 2);
  assert_int_equal(ds.n_truncated, 2);
  assert_int_equal(ds.n_no_target, 2);
  assert_int_equal(ds.n_targets, 0);
  qt_dataset_free(&ds);
  o.seq_len = 0;
  assert_int_equal(qt_dataset_load_mem("a.jsonl", rec, strlen(rec), &p, &o, &ds), QT_OK);
  assert_int_equal(ds.n_no_target, 0);
  /* both records render the no-input prompt: identical examples */
  assert_int_equal(qt_dataset_example_len(&ds, 0), qt_dataset_example_len(&ds, 1));
  assert_memory_equal(ds.ids, ds.ids + ds.offset[1], (size_t)qt_dataset_example_len(&ds, 0) * sizeof *ds.ids);
  qt_dataset_free(&ds);
  qt_prompt_free(&p);

  /* chat without a template in tokenizer_config.json */
  assert_int_equal(qt_prompt_init(&p, s->tok, TOK_DIR, QT_DATA_FMT_CHAT, QT_CHAT_AUTO, 0), QT_ERR_CONFIG);
  assert_non_null(strstr(qt_error_message(), "no chat_template"));
}

/* Without add_bos_token, BOS comes from tokenizer.json's post_processor
 * (stories260K's is a TemplateProcessing "<s> $A"), as tokenizer(text) in
 * transformers adds it. */
static void test_bos_from_post_processor(void **vs) {
  (void)vs;
  const char *dir = QLORA_BINARY_DIR "/test_dataset_bad_tok";
  char path[4096];
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  unlink(path);
  assert_int_equal(symlink(TOK_DIR "/tokenizer.json", path), 0);
  snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}\n", f);
  fclose(f);
  qt_tokenizer *t;
  assert_int_equal(qt_tokenizer_load(dir, &t), QT_OK);
  qt_prompt p;
  assert_int_equal(qt_prompt_init(&p, t, dir, QT_DATA_FMT_TEXT, QT_CHAT_AUTO, 0), QT_OK);
  assert_int_equal(p.add_bos, 1);
  assert_int_equal(p.bos_id, 1);
  qt_prompt_free(&p);
  /* add_bos_token false wins over the post_processor */
  f = fopen(path, "w");
  assert_non_null(f);
  fputs("{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_bos_token\": false}\n", f);
  fclose(f);
  assert_int_equal(qt_prompt_init(&p, t, dir, QT_DATA_FMT_TEXT, QT_CHAT_AUTO, 0), QT_OK);
  assert_int_equal(p.add_bos, 0);
  qt_prompt_free(&p);
  qt_tokenizer_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_corpus),           cmocka_unit_test(test_malformed_array),
      cmocka_unit_test(test_skip_counts_and_lines), cmocka_unit_test(test_invalid_utf8),
      cmocka_unit_test(test_random_bytes),     cmocka_unit_test(test_truncation_and_file),
      cmocka_unit_test(test_bos_from_post_processor),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
