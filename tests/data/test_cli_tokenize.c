/* Tests for `qlora-train tokenize`: its stdout equals the library's encode /
 * decode (which tests/data/test_tokenizer.c checks against HF tokenizers),
 * --bos/--eos add exactly the config's ids, errors name the input line and
 * use the documented exit statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "data/tokenizer.h"

#define EXE QLORA_BINARY_DIR "/train/qlora-train"
#define SHARED QLORA_SHARED_DIR "/data/"

static char tmpdir[256];

static int setup(void **s) {
  (void)s;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qt_cli_tokenize_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s) {
  (void)s;
  const char *names[] = {"in", "out", "err"};
  char p[512];
  for (size_t i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s/%s", tmpdir, names[i]);
    unlink(p);
  }
  rmdir(tmpdir);
  return 0;
}

static void write_file(const char *name, const char *text) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
  assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "rb");
  assert_non_null(f);
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  assert_non_null(b);
  size_t r;
  while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
    n += r;
    if (n + 1 == cap) {
      cap *= 2;
      b = realloc(b, cap);
      assert_non_null(b);
    }
  }
  b[n] = '\0';
  fclose(f);
  return b;
}

/* Runs `qlora-train tokenize ARGS < in > out 2> err`; returns the exit status. */
static int run(const char *args) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' tokenize %s < '%s/in' > '%s/out' 2> '%s/err'", EXE, args, tmpdir, tmpdir, tmpdir);
  int st = system(cmd);
  assert_true(st != -1 && WIFEXITED(st));
  return WEXITSTATUS(st);
}

static const char *texts[] = {
    "Hello world", "  leading spaces\tand tabs\n\nnewlines", "<|begin_of_text|>special in text",
    "emoji 😀👍🏽 and 日本語", "don't STOP 12345", "",
};

static void check_encode(const char *dir, const char *flags, unsigned qflags) {
  cJSON *arr = cJSON_CreateArray();
  char *in = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&in, &len);
  assert_non_null(m);
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "text", texts[i]);
    char *line = cJSON_PrintUnformatted(o);
    fprintf(m, "%s\n", line);
    free(line);
    cJSON_Delete(o);
  }
  fclose(m);
  cJSON_Delete(arr);
  write_file("in", in);
  free(in);
  char args[512];
  snprintf(args, sizeof args, "'%s' %s", dir, flags);
  assert_int_equal(run(args), 0);
  char *out = read_file("out");

  qt_tokenizer *t;
  assert_int_equal(qt_tokenizer_load(dir, &t), QT_OK);
  qt_token_ids ids = {0};
  char *save = NULL, *line = strtok_r(out, "\n", &save);
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++, line = strtok_r(NULL, "\n", &save)) {
    assert_non_null(line);
    assert_int_equal(qt_tokenizer_encode(t, texts[i], strlen(texts[i]), qflags, &ids), QT_OK);
    cJSON *j = cJSON_Parse(line);
    assert_true(cJSON_IsArray(j));
    assert_int_equal((size_t)cJSON_GetArraySize(j), ids.n);
    size_t k = 0;
    for (const cJSON *c = j->child; c; c = c->next, k++) assert_int_equal((int32_t)c->valuedouble, ids.ids[k]);
    if (qflags & QT_TOK_ADD_BOS) assert_int_equal(ids.ids[0], qt_tokenizer_bos_id(t));
    if (qflags & QT_TOK_ADD_EOS) assert_int_equal(ids.ids[ids.n - 1], qt_tokenizer_eos_id(t));
    cJSON_Delete(j);
  }
  assert_null(line);
  qt_token_ids_free(&ids);
  qt_tokenizer_free(t);
  free(out);
}

static void test_encode(void **s) {
  (void)s;
  check_encode(SHARED "tokenizers/llama3", "", 0);
  check_encode(SHARED "stories260K", "--bos --eos", QT_TOK_ADD_BOS | QT_TOK_ADD_EOS);
  check_encode(SHARED "tokenizers/qwen3", "--eos", QT_TOK_ADD_EOS);
}

/* --decode of encoded lines gives the library's decode, as JSON strings. */
static void test_decode(void **s) {
  (void)s;
  const char *dir = SHARED "tokenizers/llama2";
  qt_tokenizer *t;
  assert_int_equal(qt_tokenizer_load(dir, &t), QT_OK);
  qt_token_ids ids = {0};
  qt_text_buf want = {0};
  char *in = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&in, &len);
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    assert_int_equal(qt_tokenizer_encode(t, texts[i], strlen(texts[i]), QT_TOK_ADD_BOS, &ids), QT_OK);
    fputc('[', m);
    for (size_t k = 0; k < ids.n; k++) fprintf(m, k ? ", %d" : "%d", (int)ids.ids[k]);
    fputs("]\n", m);
  }
  fclose(m);
  write_file("in", in);
  for (int skip = 0; skip < 2; skip++) {
    char args[512];
    snprintf(args, sizeof args, "'%s' --decode%s", dir, skip ? " --skip-special" : "");
    assert_int_equal(run(args), 0);
    char *out = read_file("out");
    char *save = NULL, *line = strtok_r(out, "\n", &save);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++, line = strtok_r(NULL, "\n", &save)) {
      assert_non_null(line);
      assert_int_equal(qt_tokenizer_encode(t, texts[i], strlen(texts[i]), QT_TOK_ADD_BOS, &ids), QT_OK);
      assert_int_equal(qt_tokenizer_decode(t, ids.ids, ids.n, skip, &want), QT_OK);
      cJSON *j = cJSON_Parse(line);
      const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, "text");
      assert_true(cJSON_IsString(x));
      assert_string_equal(x->valuestring, want.s);
      cJSON_Delete(j);
    }
    free(out);
  }
  free(in);
  qt_token_ids_free(&ids);
  qt_text_buf_free(&want);
  qt_tokenizer_free(t);
}

static void expect_error(const char *input, const char *args, int code, const char *needle) {
  write_file("in", input);
  int rc = run(args);
  char *err = read_file("err");
  if (rc != code || !strstr(err, needle)) fprintf(stderr, "args '%s': exit %d, stderr '%s'\n", args, rc, err);
  assert_int_equal(rc, code);
  assert_non_null(strstr(err, needle));
  free(err);
}

static void test_errors(void **s) {
  (void)s;
  const char *d = "'" SHARED "stories260K'";
  char a[512];
  expect_error("{\"text\":\"ok\"}\n{\"text\":\"ok\"}\n{\"txt\":\"x\"}\n", d, 1, "stdin:3");
  expect_error("{\"text\":\"ok\"}\nnot json\n", d, 1, "stdin:2");
  expect_error("{\"text\":\"ok\", \"text\":\"again\"}\n", d, 1, "stdin:1");
  snprintf(a, sizeof a, "%s --decode", d);
  expect_error("[1,2]\n[1,-2]\n", a, 1, "stdin:2");
  expect_error("[1,2]\n[1,2]\n[99999]\n", a, 1, "stdin:3");
  snprintf(a, sizeof a, "%s --frobnicate", d);
  expect_error("", a, 2, "--frobnicate");
  expect_error("", "", 2, "DIR");
  expect_error("", "'" SHARED "no-such-model'", 1, "tokenizer.json");
  expect_error("{\"text\":\"ok\"}\n{\"text\":\"a\\u0000b\"}\n", d, 1, "stdin:2");
  snprintf(a, sizeof a, "'%s' --bos", SHARED "tokenizers/qwen3");
  expect_error("{\"text\":\"x\"}\n", a, 1, "BOS");
  /* invalid UTF-8 inside the JSON string is replaced, not fatal */
  write_file("in", "{\"text\":\"a\xff\xfe b\"}\n");
  assert_int_equal(run(d), 0);
  /* an escaped backslash followed by "u0000" is ordinary text */
  write_file("in", "{\"text\":\"a\\\\u0000b\"}\n");
  assert_int_equal(run(d), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_encode),
      cmocka_unit_test(test_decode),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
