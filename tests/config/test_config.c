/* Tests for train/config: defaults, types, overrides, round trip, and a
 * corpus of bad configs, each with its specific message and position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "train/config.h"

#define MODEL "model:\n  path: m\n"
#define DATA "data:\n  train: t.jsonl\n"
#define BASE MODEL DATA

static qt_status load(const char *yaml, const char *const *sets, int n, qt_config *c) {
  return qt_config_load_string(yaml, strlen(yaml), "cfg.yaml", sets, n, c);
}

static void test_defaults_and_numbers(void **state) {
  (void)state;
  qt_config c;
  assert_int_equal(load(BASE "training:\n  learning_rate: 1e-4\n  max_grad_norm: 0.3\n", NULL, 0, &c), QT_OK);
  assert_string_equal(c.model.path, "m");
  assert_string_equal(c.data.train, "t.jsonl");
  assert_true(c.training.learning_rate == 1e-4); /* 1e-4 is a number, not a string */
  assert_true(c.training.max_grad_norm == 0.3);
  assert_int_equal(c.model.quant, QT_CFG_QUANT_NF4);
  assert_true(c.model.double_quant);
  assert_int_equal(c.model.blocksize, 64);
  assert_int_equal(c.lora.target_modules, QT_TGT_ALL);
  assert_int_equal(c.training.optimizer, QT_OPT_PAGED_ADAMW_8BIT);
  assert_string_equal(c.output.resume, "auto");
  assert_string_equal(c.data.eval, "");
  assert_true(c.training.gradient_checkpointing);
  assert_false(c.training.activation_offloading);
}

static void test_targets_and_sets(void **state) {
  (void)state;
  qt_config c;
  const char *sets[] = {"lora.target_modules=[q, v_proj]", "training.learning_rate=3e-5", "data.packing=true",
                        "output.dir=runs/a b"};
  assert_int_equal(load(BASE, sets, 4, &c), QT_OK);
  assert_int_equal(c.lora.target_modules, QT_TGT_Q | QT_TGT_V);
  assert_true(c.training.learning_rate == 3e-5);
  assert_true(c.data.packing);
  assert_string_equal(c.output.dir, "runs/a b");
  /* --set wins over the file */
  const char *s2[] = {"lora.r=8"};
  assert_int_equal(load(BASE "lora:\n  r: 64\n", s2, 1, &c), QT_OK);
  assert_int_equal(c.lora.r, 8);
  /* training.activation_offloading: from the file and from --set, no warning with checkpointing on */
  assert_int_equal(load(BASE "training:\n  device: cuda\n  activation_offloading: true\n", NULL, 0, &c), QT_OK);
  assert_true(c.training.activation_offloading);
  assert_string_equal(c.warnings, "");
  const char *s3[] = {"training.activation_offloading=true"};
  assert_int_equal(load(BASE, s3, 1, &c), QT_OK);
  assert_true(c.training.activation_offloading);
  const char *s4[] = {"training.activation_offloading=false"};
  assert_int_equal(load(BASE "training:\n  activation_offloading: true\n", s4, 1, &c), QT_OK);
  assert_false(c.training.activation_offloading);
}

static void test_roundtrip(void **state) {
  (void)state;
  qt_config a, b;
  const char *sets[] = {"lora.target_modules=[gate, up, down]", "training.learning_rate=0.000123456789",
                        "data.eval=\"v \\\"q\\\".jsonl\"", "training.lr_scheduler=linear", "export.dtype=fp32",
                        "training.activation_offloading=true"};
  assert_int_equal(load(BASE, sets, 6, &a), QT_OK);
  assert_true(a.training.activation_offloading);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  qt_config_write_yaml(&a, f);
  fclose(f);
  qt_status s = load(buf, NULL, 0, &b);
  if (s != QT_OK) fprintf(stderr, "%s\n%s\n", qt_error_message(), buf);
  assert_int_equal(s, QT_OK);
  assert_memory_equal(&a, &b, sizeof a);
  assert_string_equal(b.data.eval, "v \"q\".jsonl");
  assert_non_null(strstr(buf, "  activation_offloading: true\n"));
  free(buf);
}

static void test_all_errors_at_once(void **state) {
  (void)state;
  qt_config c;
  assert_int_equal(load(BASE "lora:\n  r: 0\n  alpah: 3\ntraining:\n  seed: x\n", NULL, 0, &c), QT_ERR_CONFIG);
  const char *m = qt_error_message();
  assert_non_null(strstr(m, "3 problems"));
  assert_non_null(strstr(m, "cfg.yaml:6:6: lora.r"));
  assert_non_null(strstr(m, "cfg.yaml:7:3: unknown key 'lora.alpah' (did you mean 'lora.alpha'?)"));
  assert_non_null(strstr(m, "cfg.yaml:9:9: training.seed: expected an integer"));
}

static void test_file_errors(void **state) {
  (void)state;
  qt_config c;
  assert_int_equal(qt_config_load("/nonexistent/dir/x.yaml", NULL, 0, &c), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent/dir/x.yaml: cannot open the config"));
  char path[] = "/tmp/qt_cfg_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs(BASE "training:\n  learning_rate: fast\n", f);
  fclose(f);
  assert_int_equal(qt_config_load(path, NULL, 0, &c), QT_ERR_CONFIG);
  char want[64];
  snprintf(want, sizeof want, "%s:6:18:", path);
  assert_non_null(strstr(qt_error_message(), want));
  remove(path);
}

/* The bad-config corpus: each case must fail with QT_ERR_CONFIG and a message
 * containing `want` (position included where the problem has one). */
static const struct {
  const char *yaml;
  const char *set;
  const char *want;
} bad[] = {
    {BASE "modle:\n  quant: nf4\n", NULL, "cfg.yaml:5:1: unknown section 'modle' (did you mean 'model'?)"},
    {BASE "lora:\n  rank: 8\n", NULL, "cfg.yaml:6:3: unknown key 'lora.rank'"},
    {BASE "training:\n  learning_rat: 1e-4\n", NULL, "did you mean 'training.learning_rate'?"},
    {BASE "training:\n  r: 8\n", NULL, "did you mean 'lora.r'? it belongs in section 'lora'"},
    {BASE "learning_rate: 1e-4\n", NULL, "unknown section 'learning_rate' (did you mean 'training.learning_rate'?"},
    {BASE "model:\n  quant: nf4\n", NULL, "cfg.yaml:5:1: duplicate key 'model' (first given at line 1)"},
    {"model:\n  path: a\n  path: b\ndata:\n  train: t\n", NULL, "cfg.yaml:3:3: duplicate key 'model.path'"},
    {BASE "training:\n  learning_rate: fast\n", NULL, "cfg.yaml:6:18: training.learning_rate: expected a finite number"},
    {BASE "training:\n  learning_rate: \"2e-4\"\n", NULL, "got the quoted string \"2e-4\" (remove the quotes)"},
    {BASE "training:\n  micro_batch_size: 2.5\n", NULL, "training.micro_batch_size: expected an integer, got '2.5'"},
    {BASE "training:\n  micro_batch_size: 0\n", NULL, "training.micro_batch_size: 0 is out of range"},
    {BASE "lora:\n  dropout: 1.0\n", NULL, "lora.dropout: 1.0 is out of range; allowed: [0, 1)"},
    {BASE "lora:\n  alpha: 0\n", NULL, "lora.alpha: 0 is out of range"},
    {BASE "training:\n  learning_rate: .nan\n", NULL, "expected a finite number"},
    {BASE "  packing: yes\n", NULL, "'yes' is a boolean only in YAML 1.1"},
    {BASE "  packing: 1\n", NULL, "data.packing: expected true or false, got '1'"},
    {MODEL "  blocksize: 100\n" DATA, NULL, "model.blocksize: 100 is not a power of two"},
    {MODEL "  blocksize: 8192\n" DATA, NULL, "model.blocksize: 8192 is out of range"},
    {MODEL "  quant: nf5\n" DATA, NULL, "model.quant: 'nf5' is not one of nf4|fp4|none (did you mean 'nf4'?)"},
    {BASE "training:\n  optimizer: adamw8bit\n", NULL, "(did you mean 'adamw_8bit'?)"},
    {BASE "training:\n  lr_scheduler: cosin\n", NULL, "(did you mean 'cosine'?)"},
    {BASE "lora:\n  target_modules: [q_proj, qkv_projection]\n", NULL, "cfg.yaml:6:28: lora.target_modules: unknown module 'qkv_projection'"},
    {BASE "lora:\n  target_modules: []\n", NULL, "lora.target_modules: the list is empty"},
    {BASE "lora:\n  target_modules: [q, q_proj]\n", NULL, "module 'q_proj' is listed twice"},
    {BASE "lora:\n  r: [8]\n", NULL, "lora.r: expected an integer, got a sequence"},
    {BASE "lora: 8\n", NULL, "cfg.yaml:5:7: section 'lora' must be a mapping"},
    {"model:\n  quant: nf4\n", NULL, "missing required key 'model.path'"},
    {"model:\n  path: m\n", NULL, "missing required key 'data.train'"},
    {"", NULL, "the config is empty"},
    {"- a\n- b\n", NULL, "the config must be a mapping of sections"},
    {BASE "training:\n  eval_steps: 10\n", NULL, "training.eval_steps is 10 but data.eval is not set"},
    {BASE "training:\n  lr_scheduler: linear\n  min_lr_ratio: 0.1\n", NULL, "min_lr_ratio applies only to lr_scheduler cosine"},
    {BASE "  chat_template: chatml\n", NULL, "data.chat_template applies only to data.format chat"},
    {MODEL "  quant: none\n" DATA "export:\n  merge_base: nf4_roundtrip\n", NULL, "nf4_roundtrip needs model.quant nf4 or fp4"},
    {"model:\n  path: [a\n" DATA, NULL, "YAML syntax error"},
    {BASE "\tlora: 3\n", NULL, "YAML syntax error"},
    {BASE "---\nmodel: {}\n", NULL, "a second YAML document"},
    {"model:\n  path: \"\"\n" DATA, NULL, "model.path: empty string"},
    {MODEL "data:\n  train:\n", NULL, "data.train: no value given"},
    {BASE, "training.learnig_rate=1e-4", "--set training.learnig_rate: unknown key 'training.learnig_rate' (did you mean 'training.learning_rate'?)"},
    {BASE, "lr=1e-4", "--set lr: KEY must be section.key"},
    {BASE, "training.seed", "expected KEY=VALUE"},
    {BASE, "traning.seed=1", "unknown section 'traning' (did you mean 'training'?)"},
    {BASE, "training.seed=-1", "--set training.seed: training.seed: -1 is out of range"},
    {BASE, "lora.target_modules=[q", "--set lora.target_modules:2:1: YAML syntax error: did not find expected ',' or ']'"},
    {BASE "training:\n  device: gpu\n", NULL, "training.device: 'gpu' is not one of auto|cpu|cuda"},
    {BASE "export:\n  format: gguf\n", NULL, "export.format: 'gguf' is not one of peft|merged"},
    {BASE "  format: sharegpt\n", NULL, "data.format: 'sharegpt' is not one of text|completion|alpaca|chat"},
    {BASE "training:\n  seed: 99999999999999999999999\n", NULL, "training.seed: expected an integer"},
    {BASE "output:\n  save_total_limit: -2\n", NULL, "output.save_total_limit: -2 is out of range"},
    {BASE "training:\n  activation_offloading: 1\n", NULL,
     "cfg.yaml:6:26: training.activation_offloading: expected true or false, got '1'"},
    {BASE "training:\n  activation_offloading: yes\n", NULL, "'yes' is a boolean only in YAML 1.1"},
    {BASE, "training.activation_offloading=maybe",
     "--set training.activation_offloading: training.activation_offloading: expected true or false, got 'maybe'"},
    {BASE "training:\n  activation_offload: true\n", NULL,
     "unknown key 'training.activation_offload' (did you mean 'training.activation_offloading'?)"},
};

/* Combinations the HF Trainer, axolotl or bitsandbytes accept load, with a
 * warning naming the keys (issue: a max_steps=1 smoke test must train). */
static void test_warnings_not_errors(void **state) {
  (void)state;
  const struct {
    const char *yaml, *warning;
  } cases[] = {
      {BASE "training:\n  max_steps: 1\n  warmup_steps: 5\n",
       "cfg.yaml: training.warmup_steps (5) is larger than training.max_steps (1): warmup never finishes"},
      {MODEL "  quant: none\n  double_quant: true\n" DATA, "model.double_quant: true has no effect with model.quant none"},
      {BASE "  format: text\n  train_on_prompt: true\n", "data.train_on_prompt has no effect with data.format text"},
      {BASE "training:\n  gradient_checkpointing: false\n  activation_offloading: true\n",
       "cfg.yaml: training.activation_offloading: true has no effect without training.gradient_checkpointing"},
      {BASE "training:\n  device: cpu\n  activation_offloading: true\n",
       "cfg.yaml: training.activation_offloading: true has no effect with training.device cpu"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    qt_config c;
    qt_status s = load(cases[i].yaml, NULL, 0, &c);
    if (s != QT_OK) fail_msg("case %zu refused: %s", i, qt_error_message());
    if (!strstr(c.warnings, cases[i].warning)) fail_msg("case %zu: warnings '%s', want '%s'", i, c.warnings, cases[i].warning);
  }
  qt_config c;
  assert_int_equal(load(BASE "training:\n  max_steps: 5\n  warmup_steps: 5\n", NULL, 0, &c), QT_OK);
  assert_string_equal(c.warnings, "");
  assert_int_equal(c.training.warmup_steps, 5);
}

static void test_bad_corpus(void **state) {
  (void)state;
  size_t n = sizeof bad / sizeof bad[0];
  assert_true(n >= 30);
  int failures = 0;
  for (size_t i = 0; i < n; i++) {
    qt_config c;
    const char *sets[1] = {bad[i].set};
    qt_status s = load(bad[i].yaml, sets, bad[i].set ? 1 : 0, &c);
    const char *m = qt_error_message();
    if (s != QT_ERR_CONFIG || !strstr(m, bad[i].want)) {
      fprintf(stderr, "case %zu: status %d, want substring:\n  %s\ngot:\n  %s\n", i, (int)s, bad[i].want, m);
      failures++;
    }
  }
  assert_int_equal(failures, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_and_numbers), cmocka_unit_test(test_targets_and_sets),
      cmocka_unit_test(test_roundtrip),            cmocka_unit_test(test_all_errors_at_once),
      cmocka_unit_test(test_file_errors),          cmocka_unit_test(test_bad_corpus),
      cmocka_unit_test(test_warnings_not_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
