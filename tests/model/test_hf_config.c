/* Tests for model/hf_config: config.json files written by transformers (and
 * the real stories260K config) against the values transformers resolves from
 * them (tests/golden/hf_config, made by tools/reference/make_hf_config_fixtures.py),
 * and a corpus of bad configs with the status and message each must produce. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <math.h>

#include <cjson/cJSON.h>

#include "model/hf_config.h"

#define GOLDEN QLORA_TEST_DIR "/golden/hf_config"

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) fail_msg("cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static cJSON *read_json(const char *path) {
  char *text = read_text(path);
  cJSON *j = cJSON_Parse(text);
  free(text);
  if (j == NULL) fail_msg("%s: not JSON", path);
  return j;
}

static const cJSON *item(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (v == NULL) fail_msg("expected.json lacks '%s'", key);
  return v;
}

static int64_t want_int(const cJSON *o, const char *key) {
  const cJSON *v = item(o, key);
  assert_true(cJSON_IsNumber(v));
  return (int64_t)v->valuedouble;
}

static void check_int(const char *cs, const char *key, int64_t got, int64_t want) {
  if (got != want) fail_msg("%s: %s = %lld, transformers says %lld", cs, key, (long long)got, (long long)want);
}

static void check_bool(const char *cs, const cJSON *exp, const char *key, bool got) {
  const cJSON *v = item(exp, key);
  assert_true(cJSON_IsBool(v));
  if (got != (bool)cJSON_IsTrue(v)) fail_msg("%s: %s = %d, transformers says %d", cs, key, got, cJSON_IsTrue(v));
}

static void check_double(const char *cs, const char *key, double got, const cJSON *v) {
  assert_true(cJSON_IsNumber(v));
  /* Both sides parse the same decimal text written by Python's repr: exact. */
  if (got != v->valuedouble) fail_msg("%s: %s = %.17g, transformers says %.17g", cs, key, got, v->valuedouble);
}

static void check_str(const char *cs, const char *key, const char *got, const cJSON *v) {
  assert_true(cJSON_IsString(v));
  if (strcmp(got, v->valuestring) != 0) fail_msg("%s: %s = '%s', transformers says '%s'", cs, key, got, v->valuestring);
}

static void check_rope(const char *cs, const char *what, const qt_hf_rope *r, const cJSON *rope) {
  char key[64];
  snprintf(key, sizeof key, "%s.type", what);
  check_str(cs, key, qt_rope_type_name(r->type), item(rope, "type"));
  snprintf(key, sizeof key, "%s.theta", what);
  check_double(cs, key, r->theta, item(rope, "theta"));
  snprintf(key, sizeof key, "%s.factor", what);
  if (r->type != QT_ROPE_DEFAULT) check_double(cs, key, r->factor, item(rope, "factor"));
  else assert_true(r->factor == 1.0);
  if (r->type == QT_ROPE_LLAMA3) {
    check_double(cs, "rope.low_freq_factor", r->low_freq_factor, item(rope, "low_freq_factor"));
    check_double(cs, "rope.high_freq_factor", r->high_freq_factor, item(rope, "high_freq_factor"));
    check_int(cs, "rope.original_max_position_embeddings", r->original_max_position_embeddings,
              want_int(rope, "original_max_position_embeddings"));
  }
}

/* A soft-cap: null in expected.json is none (0). */
static void check_cap(const char *cs, const char *key, double got, const cJSON *v) {
  if (cJSON_IsNull(v)) {
    if (got != 0.0) fail_msg("%s: %s = %g, transformers says none", cs, key, got);
  } else {
    check_double(cs, key, got, v);
  }
}

static void check_case(const char *cs, const char *config_path, const char *expected_path) {
  cJSON *exp = read_json(expected_path);
  qt_hf_config c;
  qt_error_clear();
  qt_status s = qt_hf_config_load(config_path, &c);
  const cJSON *want_err = cJSON_GetObjectItemCaseSensitive(exp, "expect_error");
  if (want_err != NULL) {
    /* transformers loads it (expected.json records what it resolves); we refuse. */
    assert_true(cJSON_IsString(want_err));
    if (s == QT_OK) fail_msg("%s: accepted, want %s", cs, want_err->valuestring);
    if (strcmp(want_err->valuestring, "unsupported") != 0 || s != QT_ERR_UNSUPPORTED)
      fail_msg("%s: status %s, want %s: %s", cs, qt_status_name(s), want_err->valuestring, qt_error_message());
    const char *msg = item(exp, "expect_message")->valuestring;
    if (strstr(qt_error_message(), msg) == NULL || strstr(qt_error_message(), config_path) == NULL)
      fail_msg("%s: message '%s' lacks '%s' or the file name", cs, qt_error_message(), msg);
    cJSON_Delete(exp);
    return;
  }
  if (s != QT_OK) fail_msg("%s: %s", cs, qt_error_message());

  check_str(cs, "model_type", qt_hf_arch_name(c.arch), item(exp, "model_type"));
  check_int(cs, "hidden_size", c.hidden_size, want_int(exp, "hidden_size"));
  check_int(cs, "num_attention_heads", c.num_attention_heads, want_int(exp, "num_attention_heads"));
  check_int(cs, "num_key_value_heads", c.num_key_value_heads, want_int(exp, "num_key_value_heads"));
  check_int(cs, "head_dim", c.head_dim, want_int(exp, "head_dim"));
  check_int(cs, "intermediate_size", c.intermediate_size, want_int(exp, "intermediate_size"));
  check_int(cs, "num_hidden_layers", c.num_hidden_layers, want_int(exp, "num_hidden_layers"));
  check_int(cs, "vocab_size", c.vocab_size, want_int(exp, "vocab_size"));
  check_int(cs, "max_position_embeddings", c.max_position_embeddings, want_int(exp, "max_position_embeddings"));
  check_double(cs, "rms_norm_eps", c.rms_norm_eps, item(exp, "rms_norm_eps"));
  check_str(cs, "hidden_act", c.act == QT_HF_ACT_SILU ? "silu" : "gelu_pytorch_tanh", item(exp, "hidden_act"));

  check_rope(cs, "rope", &c.rope, item(exp, "rope"));
  const cJSON *rl = item(exp, "rope_local");
  if (cJSON_IsNull(rl)) {
    if (c.has_rope_local) fail_msg("%s: has a rope of sliding layers, transformers has one rope", cs);
  } else {
    if (!c.has_rope_local) fail_msg("%s: no rope of sliding layers, transformers has one", cs);
    check_rope(cs, "rope_local", &c.rope_local, rl);
  }

  check_bool(cs, exp, "fused_qkv", c.fused_qkv);
  check_bool(cs, exp, "fused_gate_up", c.fused_gate_up);
  check_bool(cs, exp, "qk_norm", c.qk_norm);
  check_bool(cs, exp, "norm_plus_one", c.norm_plus_one);
  check_bool(cs, exp, "sandwich_norm", c.sandwich_norm);
  /* transformers' scalar_embed_scale: hidden_size**0.5 when the model scales, 1.0 otherwise. */
  const cJSON *es = item(exp, "embed_scale");
  assert_true(cJSON_IsNumber(es));
  if (c.embed_scale != (es->valuedouble != 1.0))
    fail_msg("%s: embed_scale = %d, transformers scales by %g", cs, c.embed_scale, es->valuedouble);
  if (c.embed_scale) check_double(cs, "embed_scale value", sqrt((double)c.hidden_size), es);
  check_double(cs, "attn_scale", c.attn_scale, item(exp, "attn_scale"));
  check_cap(cs, "attn_softcap", c.attn_softcap, item(exp, "attn_softcap"));
  check_cap(cs, "final_softcap", c.final_softcap, item(exp, "final_softcap"));
  /* The decoder's prefix in a checkpoint save_pretrained wrote, and lm_head.weight
   * written exactly when untied (when the case was small enough to save). */
  const cJSON *wp = cJSON_GetObjectItemCaseSensitive(exp, "weight_prefix");
  if (wp != NULL) {
    check_str(cs, "weight_prefix", c.weight_prefix, wp);
    const cJSON *lh = item(exp, "lm_head_saved");
    if ((bool)cJSON_IsTrue(lh) != !c.tie_word_embeddings)
      fail_msg("%s: tie_word_embeddings = %d but the saved checkpoint %s lm_head.weight", cs, c.tie_word_embeddings,
               cJSON_IsTrue(lh) ? "has" : "lacks");
  } else {
    assert_string_equal(c.weight_prefix, "model.");
  }

  check_bool(cs, exp, "tie_word_embeddings", c.tie_word_embeddings);
  check_bool(cs, exp, "q_bias", c.q_bias);
  check_bool(cs, exp, "k_bias", c.k_bias);
  check_bool(cs, exp, "v_bias", c.v_bias);
  check_bool(cs, exp, "o_bias", c.o_bias);
  check_bool(cs, exp, "mlp_bias", c.mlp_bias);

  const cJSON *bos = item(exp, "bos_token_id");
  if (cJSON_IsNull(bos)) {
    if (c.has_bos) fail_msg("%s: bos_token_id = %lld, transformers says none", cs, (long long)c.bos_token_id);
  } else {
    assert_true(c.has_bos);
    check_int(cs, "bos_token_id", c.bos_token_id, (int64_t)bos->valuedouble);
  }
  const cJSON *pad = item(exp, "pad_token_id");
  if (cJSON_IsNull(pad)) {
    if (c.has_pad) fail_msg("%s: pad_token_id = %lld, transformers says none", cs, (long long)c.pad_token_id);
  } else {
    if (!c.has_pad) fail_msg("%s: no pad_token_id, transformers says %g", cs, pad->valuedouble);
    check_int(cs, "pad_token_id", c.pad_token_id, (int64_t)pad->valuedouble);
  }
  const cJSON *eos = item(exp, "eos_token_ids");
  check_int(cs, "number of eos ids", c.n_eos, cJSON_GetArraySize(eos));
  for (int i = 0; i < c.n_eos; i++)
    check_int(cs, "eos_token_id[i]", c.eos_token_ids[i], (int64_t)cJSON_GetArrayItem(eos, i)->valuedouble);

  const cJSON *dt = item(exp, "dtype");
  if (cJSON_IsNull(dt)) assert_false(c.has_dtype);
  else {
    assert_true(c.has_dtype);
    check_str(cs, "dtype", qt_hf_torch_dtype_name(c.dtype), dt);
  }

  const cJSON *win = item(exp, "layer_sliding_window");
  check_int(cs, "layers in layer_sliding_window", cJSON_GetArraySize(win), c.num_hidden_layers);
  for (int i = 0; i < (int)c.num_hidden_layers; i++) {
    const cJSON *w = cJSON_GetArrayItem(win, i);
    check_int(cs, "layer window", c.layer_window[i], cJSON_IsNull(w) ? 0 : (int64_t)w->valuedouble);
  }

  const cJSON *q = item(exp, "quantization");
  if (cJSON_IsNull(q)) {
    assert_false(c.quant.present);
  } else {
    assert_true(c.quant.present);
    check_str(cs, "quant_method", "bitsandbytes", item(q, "quant_method"));
    check_bool(cs, q, "load_in_4bit", true);
    check_bool(cs, q, "load_in_8bit", false);
    check_str(cs, "bnb_4bit_quant_type", qt_hf_quant_type_name(c.quant.quant_type), item(q, "bnb_4bit_quant_type"));
    check_bool(cs, q, "bnb_4bit_use_double_quant", c.quant.double_quant);
    check_str(cs, "bnb_4bit_compute_dtype", qt_hf_torch_dtype_name(c.quant.compute_dtype),
              item(q, "bnb_4bit_compute_dtype"));
    check_str(cs, "bnb_4bit_quant_storage", qt_hf_torch_dtype_name(c.quant.quant_storage),
              item(q, "bnb_4bit_quant_storage"));
    const cJSON *skip = item(q, "llm_int8_skip_modules");
    size_t n = cJSON_IsNull(skip) ? 0 : (size_t)cJSON_GetArraySize(skip);
    check_int(cs, "number of llm_int8_skip_modules", (int64_t)c.quant.n_skip_modules, (int64_t)n);
    for (size_t i = 0; i < n; i++)
      check_str(cs, "llm_int8_skip_modules[i]", c.quant.skip_modules[i], cJSON_GetArrayItem(skip, (int)i));
  }
  cJSON_Delete(exp);
  qt_hf_config_free(&c);
}

static void test_golden_cases(void **state) {
  (void)state;
  cJSON *index = read_json(GOLDEN "/index.json");
  const cJSON *cases = item(index, "cases");
  assert_true(cJSON_GetArraySize(cases) >= 10);
  int n = 0;
  for (const cJSON *e = cases->child; e; e = e->next, n++) {
    char dir[1024], exp[1100];
    snprintf(dir, sizeof dir, "%s/%s", GOLDEN, e->valuestring);
    snprintf(exp, sizeof exp, "%s/expected.json", dir);
    check_case(e->valuestring, dir, exp); /* loads dir/config.json */
  }
  assert_int_equal(n, cJSON_GetArraySize(cases));
  cJSON_Delete(index);
}

/* The real stories260K config.json (shared data, not copied into the repo). */
static void test_stories260k(void **state) {
  (void)state;
  check_case("stories260K", QLORA_SHARED_DIR "/data/stories260K/config.json", GOLDEN "/stories260K/expected.json");
  qt_hf_config c;
  assert_int_equal(qt_hf_config_load(QLORA_SHARED_DIR "/data/stories260K", &c), QT_OK);
  assert_string_equal(c.path, QLORA_SHARED_DIR "/data/stories260K/config.json");
  qt_hf_config_free(&c);
}

/* ---- bad configs ---------------------------------------------------------- */

static const char *const BASE =
    "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"vocab_size\": 512, \"hidden_act\": \"silu\"}";

typedef struct {
  const char *raw;           /* whole text, or NULL: BASE with the edits below */
  const char *k1, *v1;       /* set key k1 to JSON text v1 (NULL: delete k1) */
  const char *k2, *v2;
  qt_status want;
  const char *msg;           /* must occur in the message */
} bad_case;

static const bad_case BAD[] = {
    {"{\"model_type\": \"llama\",,}", 0, 0, 0, 0, QT_ERR_FORMAT, "bad.json:1:"},
    {"{\"model_type\": \"llama\",\n \"hidden_size\": tru}", 0, 0, 0, 0, QT_ERR_FORMAT, "bad.json:2:17: not valid JSON"},
    {"[1, 2]", 0, 0, 0, 0, QT_ERR_FORMAT, "top level must be a JSON object, got an array"},
    {"{\"model_type\": \"llama\"} x", 0, 0, 0, 0, QT_ERR_FORMAT, "unexpected text after the JSON object"},
    {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"hidden_size\": 32}", 0, 0, 0, 0, QT_ERR_FORMAT,
     "duplicate key 'hidden_size'"},
    {0, "rope_scaling", "{\"type\": \"linear\", \"factor\": 2, \"factor\": 4}", 0, 0, QT_ERR_FORMAT,
     "duplicate key 'factor' in rope_scaling"},
    {0, "model_type", NULL, 0, 0, QT_ERR_FORMAT, "required key 'model_type' is missing"},
    {0, "model_type", NULL, "Model_Type", "\"llama\"", QT_ERR_FORMAT, "required key 'model_type' is missing"},
    {0, "model_type", "\"gpt2\"", 0, 0, QT_ERR_UNSUPPORTED,
     "bad.json: model_type 'gpt2' is not supported; supported: llama, mistral, qwen2"},
    {0, "model_type", "\"Llama\"", 0, 0, QT_ERR_UNSUPPORTED, "model_type 'Llama' is not supported"},
    {0, "model_type", "5", 0, 0, QT_ERR_FORMAT, "key 'model_type' must be a string, got a number"},
    {0, "hidden_size", NULL, 0, 0, QT_ERR_FORMAT, "bad.json: required key 'hidden_size' is missing"},
    {0, "vocab_size", "null", 0, 0, QT_ERR_FORMAT, "required key 'vocab_size' is missing"},
    {0, "intermediate_size", NULL, 0, 0, QT_ERR_FORMAT, "required key 'intermediate_size' is missing"},
    {0, "num_hidden_layers", NULL, 0, 0, QT_ERR_FORMAT, "required key 'num_hidden_layers' is missing"},
    {0, "num_attention_heads", NULL, 0, 0, QT_ERR_FORMAT, "required key 'num_attention_heads' is missing"},
    {0, "hidden_size", "\"64\"", 0, 0, QT_ERR_FORMAT, "key 'hidden_size' must be an integer, got a string"},
    {0, "hidden_size", "true", 0, 0, QT_ERR_FORMAT, "key 'hidden_size' must be an integer, got a boolean"},
    {0, "hidden_size", "64.5", 0, 0, QT_ERR_FORMAT, "key 'hidden_size' must be an integer, got 64.5"},
    {0, "hidden_size", "0", 0, 0, QT_ERR_FORMAT, "key 'hidden_size' must be in [1, 2147483647], got 0"},
    {0, "num_hidden_layers", "-2", 0, 0, QT_ERR_FORMAT, "key 'num_hidden_layers' must be in [1, 2147483647], got -2"},
    /* 2^32 would saturate cJSON's valueint; 1e30 too. */
    {0, "vocab_size", "4294967296", 0, 0, QT_ERR_FORMAT, "key 'vocab_size' must be in [1, 2147483647]"},
    {0, "intermediate_size", "1e30", 0, 0, QT_ERR_FORMAT, "key 'intermediate_size' must be in [1, 2147483647]"},
    {0, "num_attention_heads", "6", 0, 0, QT_ERR_FORMAT,
     "key 'hidden_size' (64) is not divisible by 'num_attention_heads' (6) and there is no 'head_dim'"},
    {0, "num_key_value_heads", "3", 0, 0, QT_ERR_FORMAT,
     "key 'num_key_value_heads' (3) must divide 'num_attention_heads' (8)"},
    {0, "num_key_value_heads", "16", 0, 0, QT_ERR_FORMAT,
     "key 'num_key_value_heads' (16) must divide 'num_attention_heads' (8)"},
    {0, "num_key_value_heads", "0", 0, 0, QT_ERR_FORMAT, "key 'num_key_value_heads' must be in [1,"},
    /* Mistral's class default of 8 kv heads does not divide 4 heads. */
    {"{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 2,"
     " \"num_attention_heads\": 4, \"vocab_size\": 512}",
     0, 0, 0, 0, QT_ERR_FORMAT, "key 'num_key_value_heads' (8) must divide 'num_attention_heads' (4)"},
    {0, "head_dim", "7", 0, 0, QT_ERR_UNSUPPORTED, "key 'head_dim' is 7; rotary embeddings need an even head_dim"},
    {0, "head_dim", "-8", 0, 0, QT_ERR_FORMAT, "key 'head_dim' must be in [1,"},
    {0, "hidden_act", "\"gelu\"", 0, 0, QT_ERR_UNSUPPORTED,
     "key 'hidden_act' = 'gelu' is not supported; supported: silu"},
    {0, "hidden_act", "[\"silu\"]", 0, 0, QT_ERR_FORMAT, "key 'hidden_act' must be a string, got an array"},
    {0, "rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}", 0, 0, QT_ERR_UNSUPPORTED,
     "key 'rope_scaling.type': rope type 'dynamic' is not supported; supported: default, linear, llama3"},
    {0, "rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": 4.0, \"rope_theta\": 10000.0}", 0, 0,
     QT_ERR_UNSUPPORTED, "key 'rope_parameters.rope_type': rope type 'yarn' is not supported"},
    {0, "rope_scaling", "{\"rope_type\": \"llama3\", \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}", 0, 0,
     QT_ERR_FORMAT, "required key 'rope_scaling.factor' is missing"},
    {0, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0, \"high_freq_factor\": 4.0}", 0, 0,
     QT_ERR_FORMAT, "key 'rope_scaling.high_freq_factor' (4) must be greater than low_freq_factor (4)"},
    {0, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
     " \"original_max_position_embeddings\": 8192.5}",
     0, 0, QT_ERR_FORMAT, "key 'rope_scaling.original_max_position_embeddings' must be an integer, got 8192.5"},
    {0, "rope_scaling", "{\"type\": \"linear\", \"factor\": \"2\"}", 0, 0, QT_ERR_FORMAT,
     "key 'rope_scaling.factor' must be a number, got a string"},
    {0, "rope_scaling", "{\"type\": \"linear\"}", 0, 0, QT_ERR_FORMAT, "required key 'rope_scaling.factor' is missing"},
    {0, "rope_scaling", "{\"type\": \"linear\", \"factor\": -1}", 0, 0, QT_ERR_FORMAT,
     "key 'rope_scaling.factor' must be a finite number > 0, got -1"},
    {0, "rope_scaling", "\"linear\"", 0, 0, QT_ERR_FORMAT, "key 'rope_scaling' must be an object, got a string"},
    {0, "rope_parameters", "{\"full_attention\": {\"rope_type\": \"default\"}}", 0, 0, QT_ERR_UNSUPPORTED,
     "per-layer-type RoPE parameters"},
    {0, "rope_theta", "0", 0, 0, QT_ERR_FORMAT, "key 'rope_theta' must be a finite number > 0, got 0"},
    {0, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": \"1e4\"}", 0, 0, QT_ERR_FORMAT,
     "key 'rope_parameters.rope_theta' must be a number, got a string"},
    {0, "rms_norm_eps", "-1e-6", 0, 0, QT_ERR_FORMAT, "key 'rms_norm_eps' must be a finite number > 0"},
    {0, "max_position_embeddings", "0", 0, 0, QT_ERR_FORMAT, "key 'max_position_embeddings' must be in [1,"},
    {0, "tie_word_embeddings", "\"true\"", 0, 0, QT_ERR_FORMAT,
     "key 'tie_word_embeddings' must be true or false, got a string"},
    {0, "attention_bias", "1", 0, 0, QT_ERR_FORMAT, "key 'attention_bias' must be true or false, got a number"},
    {0, "eos_token_id", "\"2\"", 0, 0, QT_ERR_FORMAT,
     "key 'eos_token_id' must be an integer or a list of integers, got a string"},
    {0, "eos_token_id", "[2, -1]", 0, 0, QT_ERR_FORMAT, "key 'eos_token_id[1]' must be in [0,"},
    {0, "eos_token_id", "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]", 0, 0, QT_ERR_UNSUPPORTED,
     "key 'eos_token_id' lists 17 ids; at most 16 are supported"},
    {0, "bos_token_id", "1.5", 0, 0, QT_ERR_FORMAT, "key 'bos_token_id' must be an integer, got 1.5"},
    {0, "pad_token_id", "{}", 0, 0, QT_ERR_FORMAT, "key 'pad_token_id' must be an integer, got an object"},
    {0, "torch_dtype", "\"int4\"", 0, 0, QT_ERR_UNSUPPORTED,
     "key 'torch_dtype' = 'int4' is not supported; supported: float32, float16, bfloat16"},
    {0, "dtype", "\"torch.bfloat16\"", 0, 0, QT_ERR_UNSUPPORTED, "key 'dtype' = 'torch.bfloat16' is not supported"},
    {0, "model_type", "\"mistral\"", "sliding_window", "0", QT_ERR_FORMAT, "key 'sliding_window' must be in [1,"},
    {0, "model_type", "\"qwen2\"", "layer_types", "[\"full_attention\"]", QT_ERR_FORMAT,
     "key 'layer_types' has 1 entries but num_hidden_layers is 2"},
    {0, "model_type", "\"qwen2\"", "layer_types", "[\"full_attention\", \"linear_attention\"]", QT_ERR_UNSUPPORTED,
     "key 'layer_types[1]' = 'linear_attention' is not supported"},
    {0, "model_type", "\"qwen2\"", "use_sliding_window", "\"yes\"", QT_ERR_FORMAT,
     "key 'use_sliding_window' must be true or false"},
    {0, "quantization_config", "[]", 0, 0, QT_ERR_FORMAT, "key 'quantization_config' must be an object, got an array"},
    {0, "quantization_config", "{\"load_in_4bit\": true}", 0, 0, QT_ERR_FORMAT,
     "required key 'quantization_config.quant_method' is missing"},
    {0, "quantization_config", "{\"quant_method\": \"gptq\", \"bits\": 4}", 0, 0, QT_ERR_UNSUPPORTED,
     "key 'quantization_config.quant_method' = 'gptq' is not supported; supported: bitsandbytes"},
    {0, "quantization_config", "{\"quant_method\": \"bitsandbytes\", \"load_in_8bit\": true}", 0, 0,
     QT_ERR_UNSUPPORTED, "bitsandbytes 8-bit checkpoints are not supported"},
    {0, "quantization_config", "{\"quant_method\": \"bitsandbytes\"}", 0, 0, QT_ERR_UNSUPPORTED,
     "key 'quantization_config.load_in_4bit' is not true"},
    {0, "quantization_config",
     "{\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"int4\"}", 0, 0,
     QT_ERR_UNSUPPORTED, "key 'quantization_config.bnb_4bit_quant_type' = 'int4' is not supported; supported: nf4, fp4"},
    {0, "quantization_config",
     "{\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, \"bnb_4bit_compute_dtype\": \"uint8\"}", 0, 0,
     QT_ERR_UNSUPPORTED, "key 'quantization_config.bnb_4bit_compute_dtype' = 'uint8' is not supported"},
    {0, "quantization_config",
     "{\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, \"llm_int8_skip_modules\": [\"lm_head\", 3]}", 0,
     0, QT_ERR_FORMAT, "key 'quantization_config.llm_int8_skip_modules[1]' must be a string, got a number"},
    {0, "quantization_config",
     "{\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, \"llm_int8_skip_modules\": \"lm_head\"}", 0, 0,
     QT_ERR_FORMAT, "key 'quantization_config.llm_int8_skip_modules' must be a list of strings, got a string"},
    /* ---- qwen3 / gemma2 / gemma3 / phi3 */
    {0, "model_type", "\"qwen3\"", "rope_parameters", "{\"full_attention\": {\"rope_type\": \"default\"}}",
     QT_ERR_UNSUPPORTED, "key 'rope_parameters' holds per-layer-type RoPE parameters; only one set is supported for qwen3"},
    {0, "model_type", "\"gemma2\"", "hidden_activation", "\"gelu\"", QT_ERR_UNSUPPORTED,
     "key 'hidden_activation' = 'gelu' is not supported; supported: silu, gelu_pytorch_tanh"},
    {0, "model_type", "\"gemma2\"", "use_bidirectional_attention", "true", QT_ERR_UNSUPPORTED,
     "key 'use_bidirectional_attention' is true: bidirectional attention is not supported"},
    {0, "model_type", "\"gemma2\"", "attn_logit_softcapping", "-50", QT_ERR_FORMAT,
     "key 'attn_logit_softcapping' must be a finite number > 0, got -50"},
    {0, "model_type", "\"gemma2\"", "query_pre_attn_scalar", "\"256\"", QT_ERR_FORMAT,
     "key 'query_pre_attn_scalar' must be a number, got a string"},
    /* validate_architecture: hidden % heads even when head_dim is given. */
    {"{\"model_type\": \"gemma2\", \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 2,"
     " \"num_attention_heads\": 6, \"num_key_value_heads\": 6, \"head_dim\": 16, \"vocab_size\": 512}",
     0, 0, 0, 0, QT_ERR_FORMAT, "key 'hidden_size' (64) is not a multiple of 'num_attention_heads' (6)"},
    {0, "model_type", "\"gemma3_text\"", "sliding_window_pattern", "0", QT_ERR_FORMAT,
     "key 'sliding_window_pattern' must be in [1,"},
    /* transformers 5.24 merges rope_scaling into {"rope_type": "default"}: "type" is ignored. */
    {0, "model_type", "\"gemma3_text\"", "rope_scaling", "{\"type\": \"linear\", \"factor\": 8.0}", QT_ERR_FORMAT,
     "key 'rope_scaling.type' = 'linear' is ignored by transformers here"},
    {0, "model_type", "\"gemma3_text\"", "rope_parameters", "{\"rope_type\": \"linear\", \"factor\": 8.0}",
     QT_ERR_FORMAT, "key 'rope_parameters.rope_type': gemma3 keeps one RoPE dict per layer type"},
    {0, "model_type", "\"gemma3_text\"", "rope_parameters", "{\"sliding_attention\": {\"rope_type\": \"yarn\"}}",
     QT_ERR_UNSUPPORTED, "key 'rope_parameters.sliding_attention.rope_type': rope type 'yarn' is not supported"},
    {0, "model_type", "\"gemma3_text\"", "rope_local_base_freq", "0", QT_ERR_FORMAT,
     "key 'rope_local_base_freq' must be a finite number > 0, got 0"},
    /* The text model of a multimodal gemma3 config: keys named with their prefix. */
    {"{\"model_type\": \"gemma3\", \"text_config\": {\"hidden_size\": \"64\"}}", 0, 0, 0, 0, QT_ERR_FORMAT,
     "key 'text_config.hidden_size' must be an integer, got a string"},
    {"{\"model_type\": \"gemma3\", \"text_config\": {\"model_type\": \"llama\"}}", 0, 0, 0, 0, QT_ERR_UNSUPPORTED,
     "key 'text_config.model_type' = 'llama' is not supported; supported: gemma3_text"},
    {"{\"model_type\": \"gemma3\", \"text_config\": [1]}", 0, 0, 0, 0, QT_ERR_FORMAT,
     "key 'text_config' must be an object, got an array"},
    {"{\"model_type\": \"gemma3\", \"text_config\": {\"sliding_window_pattern\": -1}}", 0, 0, 0, 0, QT_ERR_FORMAT,
     "key 'text_config.sliding_window_pattern' must be in [1,"},
    {"{\"model_type\": \"gemma3\", \"eos_token_id\": \"1\", \"text_config\": {}}", 0, 0, 0, 0, QT_ERR_FORMAT,
     "key 'eos_token_id' must be an integer or a list of integers, got a string"},
    {"{\"model_type\": \"gemma3\", \"text_config\": {\"eos_token_id\": \"1\"}}", 0, 0, 0, 0, QT_ERR_FORMAT,
     "key 'text_config.eos_token_id' must be an integer or a list of integers, got a string"},
    {0, "model_type", "\"phi3\"", "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", QT_ERR_UNSUPPORTED,
     "key 'rope_scaling.type': rope type 'linear' is not supported; supported: default"},
    {0, "model_type", "\"phi3\"", "rope_parameters",
     "{\"rope_type\": \"longrope\", \"partial_rotary_factor\": 0.75, \"rope_theta\": 10000.0}", QT_ERR_UNSUPPORTED,
     "key 'rope_parameters.partial_rotary_factor' is 0.75: partial rotary embeddings (phi-4-mini) are not supported"},
    {0, "model_type", "\"phi3\"", "partial_rotary_factor", "\"0.5\"", QT_ERR_FORMAT,
     "key 'partial_rotary_factor' must be a number, got a string"},
    {0, "model_type", "\"phi3\"", "sliding_window", "0", QT_ERR_FORMAT, "key 'sliding_window' must be in [1,"},
};

static void set_key(cJSON *root, const char *key, const char *value) {
  if (key == NULL) return;
  cJSON_DeleteItemFromObjectCaseSensitive(root, key);
  if (value == NULL) return;
  cJSON *v = cJSON_Parse(value);
  if (v == NULL) fail_msg("test bug: bad JSON value %s", value);
  cJSON_AddItemToObject(root, key, v);
}

static void test_bad_configs(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
    const bad_case *b = &BAD[i];
    char *text;
    if (b->raw) {
      text = strdup(b->raw);
    } else {
      cJSON *root = cJSON_Parse(BASE);
      set_key(root, b->k1, b->v1);
      set_key(root, b->k2, b->v2);
      text = cJSON_PrintUnformatted(root);
      cJSON_Delete(root);
    }
    assert_non_null(text);
    qt_hf_config c;
    qt_error_clear();
    qt_status s = qt_hf_config_parse(text, strlen(text), "bad.json", &c);
    if (s != b->want)
      fail_msg("case %zu (%s): status %s, want %s; message: %s\n  input: %s", i, b->msg, qt_status_name(s),
               qt_status_name(b->want), qt_error_message(), text);
    const char *m = qt_error_message();
    if (strstr(m, b->msg) == NULL || strncmp(m, "bad.json", 8) != 0)
      fail_msg("case %zu: message '%s' lacks '%s' or the file name", i, m, b->msg);
    /* A failed parse leaves nothing to free. */
    assert_null(c.path);
    assert_null(c.layer_window);
    assert_null(c.quant.skip_modules);
    free(text);
  }
}

/* The BASE of the bad corpus is itself valid, so each case fails for its own edit. */
static void test_base_is_valid(void **state) {
  (void)state;
  qt_hf_config c;
  assert_int_equal(qt_hf_config_parse(BASE, strlen(BASE), "base.json", &c), QT_OK);
  assert_int_equal(c.head_dim, 8);
  assert_int_equal(c.num_key_value_heads, 4);
  qt_hf_config_free(&c);
  qt_hf_config_free(&c); /* idempotent on a zeroed struct */
}

/* The length is the file size: a NUL byte after the object is trailing garbage,
 * not an end of string. */
static void test_trailing_nul(void **state) {
  (void)state;
  char buf[512];
  size_t n = strlen(BASE);
  memcpy(buf, BASE, n);
  buf[n] = '\0';
  buf[n + 1] = 'x';
  qt_hf_config c;
  assert_int_equal(qt_hf_config_parse(buf, n + 2, "nul.json", &c), QT_ERR_FORMAT);
  assert_non_null(strstr(qt_error_message(), "nul.json: unexpected text after the JSON object"));
  assert_int_equal(qt_hf_config_parse(buf, n, "nul.json", &c), QT_OK);
  qt_hf_config_free(&c);
}

/* A gemma3 config with no text_config: every Gemma3TextConfig default (the
 * sizes too), the outer tie flag, and the text_config's token ids. */
static void test_gemma3_defaults(void **state) {
  (void)state;
  const char *j = "{\"model_type\": \"gemma3\", \"tie_word_embeddings\": false}";
  qt_hf_config c;
  assert_int_equal(qt_hf_config_parse(j, strlen(j), "g3.json", &c), QT_OK);
  assert_int_equal(c.arch, QT_HF_GEMMA3);
  assert_int_equal(c.hidden_size, 2304);
  assert_int_equal(c.intermediate_size, 9216);
  assert_int_equal(c.num_hidden_layers, 26);
  assert_int_equal(c.num_attention_heads, 8);
  assert_int_equal(c.num_key_value_heads, 4);
  assert_int_equal(c.head_dim, 256);
  assert_int_equal(c.vocab_size, 262208);
  assert_int_equal(c.max_position_embeddings, 131072);
  assert_false(c.tie_word_embeddings);
  assert_true(c.has_bos && c.bos_token_id == 2 && c.n_eos == 1 && c.eos_token_ids[0] == 1);
  assert_true(c.has_pad && c.pad_token_id == 0);
  assert_true(c.attn_scale == 0.0625 && c.attn_softcap == 0.0 && c.final_softcap == 0.0);
  assert_true(c.rope.theta == 1e6 && c.rope_local.theta == 1e4 && c.has_rope_local);
  for (int i = 0; i < 26; i++) assert_int_equal(c.layer_window[i], (i + 1) % 6 ? 4096 : 0);
  assert_string_equal(c.weight_prefix, "language_model.model.");
  assert_int_equal(c.act, QT_HF_ACT_GELU_TANH);
  qt_hf_config_free(&c);
  /* gemma2: softcaps 50 / 30 by default, null switches them off. */
  j = "{\"model_type\": \"gemma2\", \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 3,"
      " \"num_attention_heads\": 4, \"vocab_size\": 512, \"final_logit_softcapping\": null}";
  assert_int_equal(qt_hf_config_parse(j, strlen(j), "g2.json", &c), QT_OK);
  assert_true(c.attn_softcap == 50.0 && c.final_softcap == 0.0);
  assert_true(c.layer_window[0] == 4096 && c.layer_window[1] == 0 && c.layer_window[2] == 4096);
  assert_true(c.tie_word_embeddings && c.num_key_value_heads == 4 && c.head_dim == 256);
  qt_hf_config_free(&c);
}

static void test_load_errors(void **state) {
  (void)state;
  qt_hf_config c;
  assert_int_equal(qt_hf_config_load("/nonexistent/dir/config.json", &c), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent/dir/config.json: cannot open"));
  assert_int_equal(qt_hf_config_load(QLORA_TEST_DIR "/model", &c), QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "no config.json in this directory"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_cases), cmocka_unit_test(test_stories260k), cmocka_unit_test(test_base_is_valid),
      cmocka_unit_test(test_bad_configs),  cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_trailing_nul), cmocka_unit_test(test_gemma3_defaults),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
