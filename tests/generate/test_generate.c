/* generate against transformers (tools/reference/make_generate_fixtures.py,
 * tests/golden/generate/):
 *
 *   processors  on fixture logits and histories, qt_sampler_process keeps
 *               exactly the ids transformers' logits processors keep
 *               (repetition penalty, temperature, top-k with ties, top-p,
 *               min-p, combined); the surviving values are one or two fp32
 *               operations per element (penalty, temperature) and equal
 *               bit for bit (tests/README.md rule 2)
 *   sampling    a fixed seed gives the same ids twice, another seed other
 *               ids; every sampled id is one the processors kept
 *   greedy      64 greedy ids from qt_model_decoder_generate equal
 *               transformers' generate (fp32) on stories260K and random
 *               llama / mistral / qwen2 configs, base and with the PEFT
 *               adapter (the fixture picked prompts whose every greedy
 *               decision has a top-2 margin >= 1e-3; our logits agree with
 *               transformers to ~1e-6 relative, test_model_lora)
 *   chat        qt_prompt_render_generation is byte-equal to
 *               apply_chat_template(add_generation_prompt=True) of the
 *               shipped llama3 and qwen3 tokenizers */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "common/fs.h"
#include "common/safetensors.h"
#include "data/prompt.h"
#include "data/tokenizer.h"
#include "lora/lora.h"
#include "model/model.h"
#include "model/sample.h"

#define GOLD QLORA_TEST_DIR "/golden/generate/"

static void ok(qt_status s) {
  if (s != QT_OK) fail_msg("%s: %s", qt_status_name(s), qt_error_message());
}

static cJSON *read_json(const char *path) {
  uint8_t *buf = NULL;
  size_t len = 0;
  ok(qt_fs_read_file(path, 1 << 24, &buf, &len));
  cJSON *j = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  if (!j) fail_msg("%s: not JSON", path);
  return j;
}

static const qt_st_entry *need(const qt_st_file *f, const char *name) {
  const qt_st_entry *e = qt_st_find(f, name);
  if (!e) fail_msg("fixture %s lacks %s", f->path, name);
  return e;
}

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!cJSON_IsNumber(v)) fail_msg("fixture: %s is not a number", k);
  return v->valuedouble;
}

static qt_sample_opts case_opts(const cJSON *c, uint64_t seed) {
  return (qt_sample_opts){.temperature = num(c, "temperature"), .top_k = (int64_t)num(c, "top_k"),
                          .top_p = num(c, "top_p"), .min_p = num(c, "min_p"),
                          .repetition_penalty = num(c, "repetition_penalty"), .seed = seed};
}

static void test_processors(void **st) {
  (void)st;
  cJSON *meta = read_json(GOLD "processors.json");
  qt_st_file f;
  ok(qt_st_open(GOLD "processors.safetensors", &f));
  int n_cases = cJSON_GetArraySize(meta);
  assert_true(n_cases >= 8);
  for (int i = 0; i < n_cases; i++) {
    char name[64];
    snprintf(name, sizeof name, "logits.%d", i);
    const qt_st_entry *le = need(&f, name);
    int64_t V = le->shape[0];
    snprintf(name, sizeof name, "hist.%d", i);
    const qt_st_entry *he = need(&f, name);
    snprintf(name, sizeof name, "kept.%d", i);
    const int32_t *kept = (const int32_t *)need(&f, name)->data;
    snprintf(name, sizeof name, "out.%d", i);
    const float *ref = (const float *)need(&f, name)->data;
    const float *logits = (const float *)le->data;
    const int32_t *hist = (const int32_t *)he->data;
    int64_t n_hist = he->shape[0];
    qt_sample_opts o = case_opts(cJSON_GetArrayItem(meta, i), 1);
    qt_sampler s;
    ok(qt_sampler_init(&s, &o, V));
    float *out = malloc((size_t)V * sizeof *out);
    qt_sampler_process(&s, hist, n_hist, logits, out);
    int64_t n_kept = 0;
    for (int64_t v = 0; v < V; v++) {
      bool k = isfinite(out[v]);
      n_kept += k;
      if (k != (kept[v] != 0))
        fail_msg("processor case %d: id %lld %s by us, %s by transformers", i, (long long)v,
                 k ? "kept" : "removed", kept[v] ? "kept" : "removed");
      if (k && out[v] != ref[v])
        fail_msg("processor case %d: id %lld processed to %.9g, transformers %.9g", i,
                 (long long)v, out[v], ref[v]);
    }
    /* sampling: deterministic per seed, only kept ids */
    if (o.temperature > 0) {
      int32_t a[64], b[64], c[64];
      int diff = 0;
      for (int r = 0; r < 3; r++) {
        o.seed = r == 2 ? 2 : 1;
        qt_sampler_free(&s);
        ok(qt_sampler_init(&s, &o, V));
        int32_t *dst = r == 0 ? a : r == 1 ? b : c;
        for (int t = 0; t < 64; t++) {
          dst[t] = qt_sampler_next(&s, hist, n_hist, logits);
          if (!kept[dst[t]]) fail_msg("processor case %d: sampled removed id %d", i, dst[t]);
        }
      }
      for (int t = 0; t < 64; t++) {
        if (a[t] != b[t]) fail_msg("processor case %d: seed 1 draw %d gave %d then %d", i, t, a[t], b[t]);
        diff += a[t] != c[t];
      }
      if (n_kept > 2 && diff == 0) fail_msg("processor case %d: seeds 1 and 2 drew the same 64 ids", i);
    } else {
      int32_t best = 0;
      for (int64_t v = 1; v < V; v++)
        if (ref[v] > ref[best]) best = (int32_t)v;
      assert_int_equal(qt_sampler_next(&s, hist, n_hist, logits), best);
    }
    fprintf(stderr, "processor case %d: %lld of %lld kept, equal to transformers\n", i,
            (long long)n_kept, (long long)V);
    free(out);
    qt_sampler_free(&s);
  }
  qt_st_close(&f);
  cJSON_Delete(meta);
}

/* Greedy ids of one model directory, base or with its adapter. */
static void greedy_case(const char *name, const char *dir, const char *adapter_dir,
                        const cJSON *fx) {
  qt_model_load_opts lo = {.quant = QT_MODEL_QUANT_NONE, .threads = 1};
  qt_model *m = NULL;
  ok(qt_model_load(dir, &lo, &m));
  const cJSON *pr = cJSON_GetObjectItemCaseSensitive(fx, "prompt");
  int n_prompt = cJSON_GetArraySize(pr);
  int32_t prompt[64];
  assert_true(n_prompt > 0 && n_prompt <= 64);
  for (int i = 0; i < n_prompt; i++) prompt[i] = (int32_t)cJSON_GetArrayItem(pr, i)->valuedouble;
  for (int with = 0; with < 2; with++) {
    qt_lora *l = NULL;
    if (with) ok(qt_lora_load_peft(m, adapter_dir, false, 7, &l));
    qt_model_tape_opts to = {.max_B = 1, .max_T = 1, .forward_only = true, .lora_no_dropout = true,
                             .max_lora_rank = l ? qt_lora_get_config(l)->r : 0};
    qt_model_tape *mt = NULL;
    ok(qt_model_tape_init(m, &to, &mt));
    qt_model_adapter ad = {0};
    if (l) {
      ok(qt_lora_attach(l, qt_model_tape_get(mt)));
      qt_lora_set_step(l, 0, false);
      ad = qt_lora_adapter(l);
    }
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(fx, with ? "lora" : "base");
    int n_exp = cJSON_GetArraySize(exp);
    qt_sample_opts so = qt_sample_opts_default();
    qt_sampler smp;
    ok(qt_sampler_init(&smp, &so, m->V));
    qt_model_decoder *d = NULL;
    /* prompt fed 3 rows at a time: chunked prefill is part of what is checked */
    ok(qt_model_decoder_init(mt, l ? &ad : NULL, n_prompt + n_exp, 3, &d));
    int32_t out[128];
    int64_t n_out = 0;
    qt_generate_opts g = {.max_new = n_exp}; /* no stop ids: as the fixture, no EOS stop */
    ok(qt_model_decoder_generate(d, &smp, prompt, n_prompt, &g, out, &n_out));
    assert_int_equal(n_out, n_exp);
    for (int i = 0; i < n_exp; i++) {
      int32_t e = (int32_t)cJSON_GetArrayItem(exp, i)->valuedouble;
      if (out[i] != e)
        fail_msg("%s%s: greedy token %d is %d, transformers %d", name, with ? " + LoRA" : "", i,
                 out[i], e);
    }
    fprintf(stderr, "%s%s: %d greedy ids equal transformers' generate\n", name,
            with ? " + LoRA" : "", n_exp);
    qt_model_decoder_free(&d);
    qt_sampler_free(&smp);
    qt_model_tape_free(&mt);
    qt_lora_free(&l);
  }
  qt_model_free(&m);
}

static void test_greedy(void **st) {
  (void)st;
  cJSON *fx = read_json(GOLD "greedy.json");
  static const char *cases[] = {"stories", "llama", "mistral", "qwen2"};
  for (int c = 0; c < 4; c++) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(fx, cases[c]);
    if (!x) fail_msg("greedy.json lacks %s", cases[c]);
    char dir[512], adir[512];
    if (c == 0) {
      snprintf(dir, sizeof dir, "%s/data/stories260K", QLORA_SHARED_DIR);
      snprintf(adir, sizeof adir, "%s/golden/model/stories/adapter", QLORA_TEST_DIR);
    } else {
      snprintf(dir, sizeof dir, GOLD "%s", cases[c]);
      snprintf(adir, sizeof adir, GOLD "%s/adapter", cases[c]);
    }
    greedy_case(cases[c], dir, adir, x);
  }
  cJSON_Delete(fx);
}

static void test_chat_render(void **st) {
  (void)st;
  cJSON *fx = read_json(GOLD "chat.json");
  static const char *toks[] = {"llama3", "qwen3"};
  for (int t = 0; t < 2; t++) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/data/tokenizers/%s", QLORA_SHARED_DIR, toks[t]);
    qt_tokenizer *tok = NULL;
    ok(qt_tokenizer_load(dir, &tok));
    qt_prompt p;
    ok(qt_prompt_init(&p, tok, dir, QT_DATA_FMT_CHAT, QT_CHAT_AUTO, 0));
    assert_true(qt_prompt_end_of_turn_id(&p) >= 0);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(fx, toks[t]), *c;
    int k = 0;
    cJSON_ArrayForEach(c, cases) {
      const cJSON *ms = cJSON_GetObjectItemCaseSensitive(c, "messages"), *m;
      qt_chat_msg msgs[16];
      size_t n = 0;
      cJSON_ArrayForEach(m, ms) {
        const char *role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
        const char *content = cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring;
        msgs[n++] = (qt_chat_msg){.role = {role, strlen(role)}, .content = {content, strlen(content)}};
      }
      const qt_text_buf *text = NULL;
      ok(qt_prompt_render_generation(&p, msgs, n, &text));
      const char *want = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
      if (text->n != strlen(want) || memcmp(text->s, want, text->n) != 0)
        fail_msg("%s conversation %d: rendered\n%s\ntransformers\n%s", toks[t], k, text->s, want);
      k++;
    }
    /* a conversation ending with the assistant has nothing to answer */
    qt_chat_msg bad[1] = {{.role = {"assistant", 9}, .content = {"x", 1}}};
    const qt_text_buf *text = NULL;
    assert_int_equal(qt_prompt_render_generation(&p, bad, 1, &text), QT_ERR_FORMAT);
    fprintf(stderr, "%s: %d generation prompts byte-equal to apply_chat_template\n", toks[t], k);
    qt_prompt_free(&p);
    qt_tokenizer_free(tok);
  }
  cJSON_Delete(fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_processors),
      cmocka_unit_test(test_greedy),
      cmocka_unit_test(test_chat_render),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
