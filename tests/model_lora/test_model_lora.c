/* model/ + lora/ against transformers + PEFT (+ bitsandbytes) golden fixtures
 * (tools/reference/make_model_fixtures.py, tests/golden/model/README in its
 * docstring). Error measure everywhere: rel(a, b) = max|a - b| / max|b| over a
 * tensor, b the reference. Limits: logits 1e-5, gradients 1e-4 (fp32 CPU);
 * the NF4 base 1e-4 for both.
 *
 *   golden_*        logits, loss and every LoRA gradient of a packed batch
 *                   after loading the PEFT adapter dir PEFT wrote (stories260K;
 *                   random llama, qwen2 and mistral configs; an NF4 + double
 *                   quant base saved by transformers + bitsandbytes)
 *   stories_eval    mean next-token loss over valid.jsonl (1e-4) and greedy
 *                   generation of 64 tokens from BOS (equal)
 *   peft_roundtrip  our writer -> our reader is exact; the adapter we wrote
 *                   for the committed PEFT check (ours_tiny_a/) still gives
 *                   the logits PEFT was compared with
 *   merge           merged weights reproduce base + adapter logits (1e-5)
 *   linear_src      a 4-bit base via qt_tape_linear_src is bit-identical to
 *                   the same weights dequantized and used densely
 *   decode_cache    KV-cache decoding: every step's last-row logits equal the
 *                   full forward's (3e-5), generate equals the recompute oracle
 *   init, dropout, checkpointing, adapter_errors: see each test.
 *
 * `test_model_lora --write-peft-check DIR [BASE]` writes DIR/adapter
 * (qlora-train's PEFT writer, fresh init with a nonzero B) for the fixture
 * base BASE (tiny_a; fam_phi3: the fused modules) and DIR/ours.safetensors
 * (ids and our logits) for `make_model_fixtures.py --check-ours DIR [BASE]`. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "common/fs.h"
#include "common/half.h"
#include "common/philox.h"
#include "common/safetensors.h"
#include "data/tokenizer.h"
#include "lora/lora.h"
#include "model/model.h"

#define GOLD QLORA_TEST_DIR "/golden/model/"
#define STORIES QLORA_SHARED_DIR "/data/stories260K"

static double rel_err(const float *a, const float *b, int64_t n) {
  double md = 0, mb = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= md)) md = d; /* NaN propagates */
    if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
  }
  return mb > 0 ? md / mb : md;
}

static void ok(qt_status s) {
  if (s != QT_OK) fail_msg("%s: %s", qt_status_name(s), qt_error_message());
}

/* ---- fixture access ------------------------------------------------------- */

typedef struct {
  qt_st_file f;
  int32_t *ids, *labels, *pos, *doc, *targets;
  float *logits;
  double loss_sum;
  int32_t count;
  int64_t N, V;
} expected;

static const qt_st_entry *need(const qt_st_file *f, const char *name) {
  const qt_st_entry *e = qt_st_find(f, name);
  if (!e) fail_msg("fixture %s lacks %s", f->path, name);
  return e;
}

static int32_t *i32_copy(const qt_st_entry *e) {
  assert_int_equal(e->dtype, QT_I32);
  int64_t n = qt_st_entry_numel(e);
  int32_t *p = malloc((size_t)n * sizeof *p);
  memcpy(p, e->data, (size_t)n * sizeof *p);
  return p;
}

static float *f32_copy(const qt_st_entry *e) {
  int64_t n = qt_st_entry_numel(e);
  float *p = malloc((size_t)n * sizeof *p);
  ok(qt_st_entry_to_f32(e, p));
  return p;
}

static void expected_open(const char *cs, expected *x) {
  char path[512];
  snprintf(path, sizeof path, GOLD "%s/expected.safetensors", cs);
  memset(x, 0, sizeof *x);
  ok(qt_st_open(path, &x->f));
  x->ids = i32_copy(need(&x->f, "ids"));
  x->labels = i32_copy(need(&x->f, "labels"));
  x->pos = i32_copy(need(&x->f, "pos"));
  x->doc = i32_copy(need(&x->f, "doc"));
  const qt_st_entry *lg = need(&x->f, "logits");
  x->N = lg->shape[0];
  x->V = lg->shape[1];
  x->logits = f32_copy(lg);
  memcpy(&x->loss_sum, need(&x->f, "loss_sum")->data, sizeof(double));
  memcpy(&x->count, need(&x->f, "count")->data, sizeof(int32_t));
  x->targets = malloc((size_t)x->N * sizeof(int32_t));
}

static void expected_close(expected *x) {
  free(x->ids);
  free(x->labels);
  free(x->pos);
  free(x->doc);
  free(x->targets);
  free(x->logits);
  qt_st_close(&x->f);
}

/* Every fixture batch has FIX_B rows; T = N / FIX_B (12 for tiny_*, more for
 * the fam_* cases whose documents outgrow their windows). */
enum { FIX_B = 2 };
#define FIX_T(x) ((x)->N / FIX_B)

static qt_model *load_model(const char *dir, qt_model_quant q) {
  qt_model_load_opts o = {.quant = q, .double_quant = true, .blocksize = 64, .threads = 1};
  qt_model *m = NULL;
  ok(qt_model_load(dir, &o, &m));
  return m;
}

static qt_model_tape *make_tape(const qt_model *m, int64_t B, int64_t T, bool ckpt, int r) {
  qt_model_tape_opts to = {.max_B = B, .max_T = T, .checkpoint = ckpt, .ce_chunk_rows = 7,
                           .max_lora_rank = r};
  qt_model_tape *mt = NULL;
  ok(qt_model_tape_init(m, &to, &mt));
  return mt;
}

/* Loads case cs (model dir md), the PEFT adapter, checks logits, loss, grads. */
static void golden_case(const char *cs, const char *md, qt_model_quant q, double tol_logits,
                        double tol_grad) {
  expected x;
  expected_open(cs, &x);
  qt_model *m = load_model(md, q);
  char adir[512];
  snprintf(adir, sizeof adir, GOLD "%s/adapter", cs);
  qt_lora *l = NULL;
  ok(qt_lora_load_peft(m, adir, false, 7, &l));
  assert_int_equal(x.V, m->V);
  qt_model_targets_from_labels(x.labels, x.doc, FIX_B, FIX_T(&x), x.targets);
  qt_model_batch b = {.ids = x.ids, .targets = x.targets, .pos = x.pos, .doc = x.doc,
                      .B = FIX_B, .T = FIX_T(&x)};
  for (int ck = 0; ck < 2; ck++) {
    qt_model_tape *mt = make_tape(m, FIX_B, FIX_T(&x), ck == 1, qt_lora_get_config(l)->r);
    if (ck == 0) ok(qt_model_print_plan(m, mt, stderr));
    ok(qt_lora_attach(l, qt_model_tape_get(mt)));
    qt_lora_set_step(l, 0, true);
    qt_model_adapter ad = qt_lora_adapter(l);
    float *logits = malloc((size_t)(x.N * x.V) * sizeof(float));
    ok(qt_model_logits(mt, &ad, &b, logits));
    double e = rel_err(logits, x.logits, x.N * x.V);
    fprintf(stderr, "%s%s: logits rel %.3g\n", cs, ck ? " (checkpointed)" : "", e);
    assert_true(e <= tol_logits);
    free(logits);
    qt_lora_zero_grad(l);
    double loss;
    int64_t count;
    ok(qt_model_forward_backward(mt, &ad, &b, true, 1.0 / x.count, &loss, &count));
    assert_int_equal(count, x.count);
    fprintf(stderr, "%s: loss_sum %.9g ref %.9g\n", cs, loss, x.loss_sum);
    assert_true(fabs(loss - x.loss_sum) <= tol_logits * fabs(x.loss_sum));
    size_t n;
    qt_lora_tensor *ts = qt_lora_tensors(l, &n);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
      char key[200];
      snprintf(key, sizeof key, "grad.%s", ts[i].name);
      const qt_st_entry *g = need(&x.f, key);
      assert_int_equal(qt_st_entry_numel(g), ts[i].rows * ts[i].cols);
      float *ref = f32_copy(g);
      double ge = rel_err(ts[i].grad, ref, ts[i].rows * ts[i].cols);
      if (ge > worst) worst = ge;
      if (!(ge <= tol_grad)) fail_msg("%s: gradient %s rel %.3g", cs, ts[i].name, ge);
      free(ref);
    }
    fprintf(stderr, "%s: %zu LoRA gradients, worst rel %.3g\n", cs, n, worst);
    /* every gradient of the fixture is one of ours */
    size_t ngrad = 0;
    for (size_t i = 0; i < x.f.n_tensors; i++) ngrad += strncmp(x.f.tensors[i].name, "grad.", 5) == 0;
    assert_int_equal(ngrad, n);
    qt_model_tape_free(&mt);
  }
  qt_lora_free(&l);
  qt_model_free(&m);
  expected_close(&x);
}

static void test_golden_tiny_a(void **st) {
  (void)st;
  golden_case("tiny_a", GOLD "tiny_a", QT_MODEL_QUANT_NONE, 1e-5, 1e-4);
}
static void test_golden_tiny_b(void **st) {
  (void)st;
  golden_case("tiny_b", GOLD "tiny_b", QT_MODEL_QUANT_NONE, 1e-5, 1e-4);
}
static void test_golden_tiny_c(void **st) {
  (void)st;
  golden_case("tiny_c", GOLD "tiny_c", QT_MODEL_QUANT_NONE, 1e-5, 1e-4);
}

/* The newer families (tools/reference/make_family_fixtures.py): each layer
 * variation of model.h against transformers + PEFT, windows shorter than the
 * documents. */
static const struct {
  const char *name;
  qt_model_quant q;
} FAMILIES[] = {
    {"fam_qwen3", QT_MODEL_QUANT_NONE},  {"fam_qwen3_sw", QT_MODEL_QUANT_NONE},
    {"fam_mistral_sw", QT_MODEL_QUANT_NONE}, {"fam_gemma2", QT_MODEL_QUANT_NONE},
    {"fam_gemma3", QT_MODEL_QUANT_NONE}, {"fam_phi3", QT_MODEL_QUANT_NONE},
    {"fam_phi3_sw", QT_MODEL_QUANT_NONE}, {"fam_phi3_nf4", QT_MODEL_QUANT_NF4},
};
enum { N_FAMILIES = sizeof FAMILIES / sizeof FAMILIES[0] };

static void test_golden_families(void **st) {
  (void)st;
  for (int i = 0; i < N_FAMILIES; i++) {
    char dir[256];
    snprintf(dir, sizeof dir, GOLD "%s", FAMILIES[i].name);
    double tol = FAMILIES[i].q == QT_MODEL_QUANT_NONE ? 1e-5 : 1e-4;
    golden_case(FAMILIES[i].name, dir, FAMILIES[i].q, tol, 1e-4);
  }
}
static void test_golden_stories(void **st) {
  (void)st;
  golden_case("stories", STORIES, QT_MODEL_QUANT_NONE, 1e-5, 1e-4);
}
static void test_golden_nf4(void **st) {
  (void)st;
  golden_case("tiny_nf4", GOLD "tiny_nf4", QT_MODEL_QUANT_NF4, 1e-4, 1e-4);
}

/* ---- stories260K eval loss and greedy generation ---------------------------- */

/* Reads key "float32" of stories_eval.json: loss_sum, count, greedy[64]. */
static void read_eval(double *loss_sum, int64_t *count, int32_t *greedy, int *n_greedy) {
  uint8_t *buf;
  size_t len;
  ok(qt_fs_read_file(GOLD "stories_eval.json", 1 << 20, &buf, &len));
  /* minimal scan of the known layout (json.dump with indent=1, sorted keys) */
  const char *f32 = strstr((const char *)buf, "\"float32\"");
  assert_non_null(f32);
  const char *p = strstr(f32, "\"count\":");
  assert_non_null(p);
  *count = strtoll(p + 8, NULL, 10);
  p = strstr(f32, "\"greedy\":");
  assert_non_null(p);
  p = strchr(p, '[') + 1;
  *n_greedy = 0;
  while (*p && *p != ']') {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p) {
      p++;
      continue;
    }
    greedy[(*n_greedy)++] = (int32_t)v;
    p = end;
  }
  p = strstr(f32, "\"loss_sum\":");
  assert_non_null(p);
  *loss_sum = strtod(p + 11, NULL);
  free(buf);
}

static void test_stories_eval(void **st) {
  (void)st;
  double ref_sum;
  int64_t ref_count;
  int32_t ref_greedy[128];
  int n_greedy;
  read_eval(&ref_sum, &ref_count, ref_greedy, &n_greedy);
  assert_int_equal(n_greedy, 64);
  qt_model *m = load_model(STORIES, QT_MODEL_QUANT_NONE);
  qt_tokenizer *tok = NULL;
  ok(qt_tokenizer_load(STORIES "/tokenizer.json", &tok));
  enum { MAXT = 512 };
  qt_model_tape_opts to = {.max_B = 1, .max_T = MAXT, .forward_only = true};
  qt_model_tape *mt = NULL;
  ok(qt_model_tape_init(m, &to, &mt));
  uint8_t *buf;
  size_t len;
  ok(qt_fs_read_file(QLORA_SHARED_DIR "/data/tinystories/valid.jsonl", 1 << 24, &buf, &len));
  int32_t ids[MAXT], tg[MAXT], pos[MAXT], doc[MAXT];
  double total = 0;
  int64_t count = 0;
  int stories = 0;
  char *save = NULL;
  for (char *line = strtok_r((char *)buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    cJSON *j = cJSON_Parse(line);
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
    assert_true(cJSON_IsString(text));
    qt_token_ids v = {0};
    ok(qt_tokenizer_encode(tok, text->valuestring, strlen(text->valuestring), 0, &v));
    cJSON_Delete(j);
    assert_true(v.n + 2 <= MAXT);
    int64_t T = (int64_t)v.n + 2;
    ids[0] = 1;
    memcpy(ids + 1, v.ids, v.n * sizeof(int32_t));
    ids[T - 1] = 2;
    qt_token_ids_free(&v);
    for (int64_t i = 0; i < T; i++) {
      pos[i] = (int32_t)i;
      doc[i] = 0;
      tg[i] = i + 1 < T ? ids[i + 1] : -100;
    }
    qt_model_batch b = {.ids = ids, .targets = tg, .pos = pos, .doc = doc, .B = 1, .T = T};
    double s;
    int64_t c;
    ok(qt_model_forward_backward(mt, NULL, &b, false, 0, &s, &c));
    total += s;
    count += c;
    stories++;
  }
  free(buf);
  assert_int_equal(stories, 50);
  assert_int_equal(count, ref_count);
  double mean = total / (double)count, ref = ref_sum / (double)ref_count;
  fprintf(stderr, "stories260K valid loss %.7f (transformers fp32 %.7f)\n", mean, ref);
  assert_true(fabs(mean - ref) <= 1e-4);
  int32_t bos = 1, out[64];
  int64_t n_out;
  ok(qt_model_generate(mt, NULL, &bos, 1, 64, 0.0, 0, out, &n_out));
  assert_int_equal(n_out, 64);
  for (int i = 0; i < 64; i++)
    if (out[i] != ref_greedy[i]) fail_msg("greedy token %d: %d, transformers %d", i, out[i], ref_greedy[i]);
  /* temperature sampling: reproducible from the seed, a valid token sequence */
  int32_t s1[16], s2[16];
  int64_t n1, n2;
  ok(qt_model_generate(mt, NULL, &bos, 1, 16, 0.8, 42, s1, &n1));
  ok(qt_model_generate(mt, NULL, &bos, 1, 16, 0.8, 42, s2, &n2));
  assert_int_equal(n1, n2);
  assert_memory_equal(s1, s2, (size_t)n1 * sizeof(int32_t));
  qt_model_tape_free(&mt);
  qt_tokenizer_free(tok);
  qt_model_free(&m);
}

/* ---- PEFT round trip ---------------------------------------------------------- */

static void tmpdir(char *buf, size_t cap, const char *tag) {
  snprintf(buf, cap, "%s/mdl_%s_%ld", QLORA_BINARY_DIR, tag, (long)getpid());
}

static void rm_adapter(const char *dir) {
  char p[600];
  snprintf(p, sizeof p, "%s/adapter_config.json", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
  unlink(p);
  rmdir(dir);
}

/* Fresh init, then a nonzero B (from Philox), bf16-exact. */
static qt_lora *fresh_lora(const qt_model *m, unsigned targets, int r, bool rs, uint64_t seed) {
  qt_lora_config c = {.r = r, .alpha = 6, .dropout = 0, .use_rslora = rs, .targets = targets,
                      .seed = seed};
  qt_lora *l = NULL;
  ok(qt_lora_init(m, &c, &l));
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(l, &n);
  qt_philox rng;
  qt_philox_init(&rng, seed + 1, 0, 0);
  for (size_t i = 0; i < n; i++)
    if (ts[i].is_B)
      for (int64_t j = 0; j < ts[i].rows * ts[i].cols; j++)
        ts[i].bf16[j] = qt_bf16_from_f32(0.3f * (2 * qt_philox_next_uniform(&rng) - 1));
  qt_lora_sync(l);
  return l;
}

static void batch_from(expected *x, qt_model_batch *b) {
  qt_model_targets_from_labels(x->labels, x->doc, FIX_B, FIX_T(x), x->targets);
  *b = (qt_model_batch){.ids = x->ids, .targets = x->targets, .pos = x->pos, .doc = x->doc,
                        .B = FIX_B, .T = FIX_T(x)};
}

static float *logits_with(const qt_model *m, qt_lora *l, const qt_model_batch *b) {
  qt_model_tape *mt = make_tape(m, b->B, b->T, false, l ? qt_lora_get_config(l)->r : 0);
  qt_model_adapter ad = {0};
  if (l) {
    ok(qt_lora_attach(l, qt_model_tape_get(mt)));
    qt_lora_set_step(l, 0, false);
    ad = qt_lora_adapter(l);
  }
  float *lg = malloc((size_t)(b->B * b->T * m->V) * sizeof(float));
  ok(qt_model_logits(mt, l ? &ad : NULL, b, lg));
  qt_model_tape_free(&mt);
  return lg;
}

/* The adapter qlora-train wrote for the PEFT check of base (ours_<base>/,
 * checked by make_model_fixtures.py --check-ours: peft_check.json) still
 * loads and gives the logits PEFT was compared with. Those logits were
 * computed on another machine (its OpenBLAS kernels), so they are compared
 * with a tolerance (PEFT itself agreed to < 1e-6); the F32 and the BF16 copy
 * of the adapter hold the same values, so on this machine they give the same
 * bits. */
static void ours_check(const char *base) {
  char mdir[512];
  char path[512], ad[2][512];
  snprintf(path, sizeof path, GOLD "ours_%s/ours.safetensors", base);
  snprintf(ad[0], sizeof ad[0], GOLD "ours_%s/adapter", base);
  snprintf(ad[1], sizeof ad[1], GOLD "ours_%s/adapter_bf16", base);
  snprintf(mdir, sizeof mdir, GOLD "%s", base);
  qt_model *m = load_model(mdir, QT_MODEL_QUANT_NONE);
  qt_st_file f;
  ok(qt_st_open(path, &f));
  const qt_st_entry *ids = need(&f, "ids"), *lg = need(&f, "logits");
  int64_t N = qt_st_entry_numel(ids);
  int32_t *id = i32_copy(ids), *pos = malloc((size_t)N * 4), *doc = calloc((size_t)N, 4);
  for (int64_t i = 0; i < N; i++) pos[i] = (int32_t)i;
  float *ref = f32_copy(lg);
  qt_lora *o = NULL;
  qt_model_batch b = {.ids = id, .targets = NULL, .pos = pos, .doc = doc, .B = 1, .T = N};
  float *mine[2];
  for (int k = 0; k < 2; k++) {
    ok(qt_lora_load_peft(m, ad[k], false, 0, &o));
    mine[k] = logits_with(m, o, &b);
    double e = rel_err(mine[k], ref, N * m->V);
    printf("ours_%s adapter%s: logits vs the fixture rel %.3g\n", base, k ? "_bf16" : "", e);
    assert_true(e <= 1e-5);
    qt_lora_free(&o);
  }
  assert_memory_equal(mine[0], mine[1], (size_t)(N * m->V) * sizeof(float));
  free(mine[0]);
  free(mine[1]);
  uint8_t *js;
  size_t len;
  snprintf(path, sizeof path, GOLD "ours_%s/peft_check.json", base);
  ok(qt_fs_read_file(path, 1 << 20, &js, &len));
  assert_non_null(strstr((const char *)js, "\"ok\": true"));
  free(js);
  free(ref);
  free(id);
  free(pos);
  free(doc);
  qt_st_close(&f);
  qt_model_free(&m);
}

static void test_peft_roundtrip(void **st) {
  (void)st;
  qt_model *m = load_model(GOLD "tiny_a", QT_MODEL_QUANT_NONE);
  unsigned tg = (1u << QT_PROJ_Q) | (1u << QT_PROJ_O) | (1u << QT_PROJ_UP);
  qt_lora *l = fresh_lora(m, tg, 3, true, 5);
  char dir[512];
  tmpdir(dir, sizeof dir, "peft");
  const qt_dtype dts[3] = {QT_F32, QT_BF16, QT_F16};
  for (int d = 0; d < 3; d++) {
    ok(qt_lora_save_peft(l, dir, "tiny_a", dts[d]));
    {
      char p[600];
      snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
      qt_st_file sf;
      ok(qt_st_open(p, &sf));
      assert_non_null(qt_st_meta(&sf, "format"));
      assert_string_equal(qt_st_meta(&sf, "format"), "pt"); /* as PEFT writes it */
      assert_int_equal(sf.tensors[0].dtype, dts[d]);
      qt_st_close(&sf);
    }
    qt_lora *r = NULL;
    ok(qt_lora_load_peft(m, dir, false, 0, &r));
    assert_int_equal(qt_lora_get_config(r)->targets, tg);
    assert_int_equal(qt_lora_get_config(r)->r, 3);
    assert_true(qt_lora_get_config(r)->use_rslora);
    size_t n1, n2;
    qt_lora_tensor *a = qt_lora_tensors(l, &n1), *b = qt_lora_tensors(r, &n2);
    assert_int_equal(n1, n2);
    for (size_t i = 0; i < n1; i++) {
      assert_string_equal(a[i].name, b[i].name);
      int64_t n = a[i].rows * a[i].cols;
      if (dts[d] != QT_F16) {
        assert_memory_equal(a[i].data, b[i].data, (size_t)n * sizeof(float));
      } else {
        assert_true(rel_err(b[i].data, a[i].data, n) <= 1e-2); /* fp16 then bf16 rounding */
      }
    }
    qt_lora_free(&r);
  }
  rm_adapter(dir);
  qt_lora_free(&l);
  qt_model_free(&m);
  ours_check("tiny_a");
  ours_check("fam_phi3"); /* fused qkv_proj / gate_up_proj: PEFT's module names */
}

/* ---- merge ------------------------------------------------------------------- */

static void merge_case(const char *cs, const char *md, qt_model_quant q) {
  expected x;
  expected_open(cs, &x);
  qt_model_batch b;
  batch_from(&x, &b);
  qt_model *m = load_model(md, q);
  char adir[512];
  snprintf(adir, sizeof adir, GOLD "%s/adapter", cs);
  qt_lora *l = NULL;
  ok(qt_lora_load_peft(m, adir, false, 0, &l));
  float *with = logits_with(m, l, &b);
  ok(qt_lora_merge_into_model(l, m));
  float *merged = logits_with(m, NULL, &b);
  double e = rel_err(merged, with, x.N * x.V);
  fprintf(stderr, "%s: merged vs base+adapter logits rel %.3g\n", cs, e);
  assert_true(e <= 1e-5);
  free(with);
  free(merged);
  qt_lora_free(&l);
  qt_model_free(&m);
  expected_close(&x);
}

static void test_merge(void **st) {
  (void)st;
  merge_case("tiny_a", GOLD "tiny_a", QT_MODEL_QUANT_NONE);
  merge_case("tiny_b", GOLD "tiny_b", QT_MODEL_QUANT_NONE);
  merge_case("tiny_nf4", GOLD "tiny_nf4", QT_MODEL_QUANT_NF4);
  for (int i = 0; i < N_FAMILIES; i++) {
    char dir[256];
    snprintf(dir, sizeof dir, GOLD "%s", FAMILIES[i].name);
    merge_case(FAMILIES[i].name, dir, FAMILIES[i].q);
  }
}

/* ---- 4-bit base through qt_tape_linear_src ---------------------------------- */

static void run_grads(const qt_model *m, qt_lora *l, const qt_model_batch *b, bool ckpt,
                      float *logits, double *loss) {
  qt_model_tape *mt = make_tape(m, b->B, b->T, ckpt, qt_lora_get_config(l)->r);
  ok(qt_lora_attach(l, qt_model_tape_get(mt)));
  qt_model_adapter ad = qt_lora_adapter(l);
  if (logits) ok(qt_model_logits(mt, &ad, b, logits));
  qt_lora_zero_grad(l);
  int64_t c;
  ok(qt_model_forward_backward(mt, &ad, b, true, 0.25, loss, &c));
  qt_model_tape_free(&mt);
}

static void assert_same_grads(qt_lora *a, qt_lora *b) {
  size_t n1, n2;
  qt_lora_tensor *x = qt_lora_tensors(a, &n1), *y = qt_lora_tensors(b, &n2);
  assert_int_equal(n1, n2);
  for (size_t i = 0; i < n1; i++)
    assert_memory_equal(x[i].grad, y[i].grad, (size_t)(x[i].rows * x[i].cols) * sizeof(float));
}

static void test_linear_src(void **st) {
  (void)st;
  expected x;
  expected_open("tiny_nf4", &x);
  qt_model_batch b;
  batch_from(&x, &b);
  qt_model *q = load_model(GOLD "tiny_nf4", QT_MODEL_QUANT_NF4);
  qt_model *d = load_model(GOLD "tiny_nf4", QT_MODEL_QUANT_NONE);
  assert_true(q->layers[0].proj[0].quantized);
  assert_false(d->layers[0].proj[0].quantized);
  qt_lora *lq = NULL, *ld = NULL;
  ok(qt_lora_load_peft(q, GOLD "tiny_nf4/adapter", false, 0, &lq));
  ok(qt_lora_load_peft(d, GOLD "tiny_nf4/adapter", false, 0, &ld));
  qt_lora_set_step(lq, 3, true);
  qt_lora_set_step(ld, 3, true);
  float *l1 = malloc((size_t)(x.N * x.V) * 4), *l2 = malloc((size_t)(x.N * x.V) * 4);
  double s1, s2;
  run_grads(q, lq, &b, false, l1, &s1);
  run_grads(d, ld, &b, false, l2, &s2);
  assert_memory_equal(l1, l2, (size_t)(x.N * x.V) * 4);
  assert_true(s1 == s2);
  assert_same_grads(lq, ld);
  free(l1);
  free(l2);
  qt_lora_free(&lq);
  qt_lora_free(&ld);
  qt_model_free(&q);
  qt_model_free(&d);
  expected_close(&x);
}

/* ---- sharded checkpoints ------------------------------------------------------ */

/* tiny_b saved in three shards loads to the same model: bit-identical logits
 * and gradients, dense and quantized at load. */
static void test_sharded(void **st) {
  (void)st;
  expected x;
  expected_open("tiny_b", &x);
  qt_model_batch b;
  batch_from(&x, &b);
  for (int q = 0; q < 2; q++) {
    qt_model_quant mq = q ? QT_MODEL_QUANT_NF4 : QT_MODEL_QUANT_NONE;
    qt_model *one = load_model(GOLD "tiny_b", mq), *sh = load_model(GOLD "tiny_b_sharded", mq);
    qt_lora *l1 = NULL, *l2 = NULL;
    ok(qt_lora_load_peft(one, GOLD "tiny_b/adapter", false, 0, &l1));
    ok(qt_lora_load_peft(sh, GOLD "tiny_b/adapter", false, 0, &l2));
    float *a = malloc((size_t)(x.N * x.V) * 4), *c = malloc((size_t)(x.N * x.V) * 4);
    double s1, s2;
    run_grads(one, l1, &b, false, a, &s1);
    run_grads(sh, l2, &b, false, c, &s2);
    assert_memory_equal(a, c, (size_t)(x.N * x.V) * 4);
    assert_true(s1 == s2);
    assert_same_grads(l1, l2);
    if (q) { /* quantized at load: close to, but not equal to, the fp32 reference */
      double e = rel_err(a, x.logits, x.N * x.V);
      fprintf(stderr, "tiny_b quantized NF4 at load: logits rel %.3g vs fp32 transformers\n", e);
      assert_true(e > 0 && e < 0.5); /* random tiny weights: NF4 noise is large */
    }
    free(a);
    free(c);
    qt_lora_free(&l1);
    qt_lora_free(&l2);
    qt_model_free(&one);
    qt_model_free(&sh);
  }
  expected_close(&x);
}

/* ---- half-precision checkpoints and bad batches --------------------------------- */

static void copy_file(const char *from, const char *to) {
  uint8_t *buf;
  size_t len;
  ok(qt_fs_read_file(from, 1 << 24, &buf, &len));
  ok(qt_fs_write_atomic(to, buf, len));
  free(buf);
}

/* tiny_b rewritten as BF16 and as F16 by our writer loads to exactly the
 * rounded weights, dense and 4-bit (quantized from the widened values). */
static void test_half_checkpoint(void **st) {
  (void)st;
  qt_model *ref = load_model(GOLD "tiny_b", QT_MODEL_QUANT_NONE);
  qt_st_file f;
  ok(qt_st_open(GOLD "tiny_b/model.safetensors", &f));
  const qt_dtype dts[2] = {QT_BF16, QT_F16};
  for (int d = 0; d < 2; d++) {
    char dir[512], p[600];
    tmpdir(dir, sizeof dir, d ? "f16" : "bf16");
    ok(qt_fs_mkdir_p(dir));
    snprintf(p, sizeof p, "%s/config.json", dir);
    copy_file(GOLD "tiny_b/config.json", p);
    qt_st_write_tensor *wt = calloc(f.n_tensors, sizeof *wt);
    uint16_t **bufs = calloc(f.n_tensors, sizeof *bufs);
    for (size_t i = 0; i < f.n_tensors; i++) {
      const qt_st_entry *e = &f.tensors[i];
      int64_t n = qt_st_entry_numel(e);
      float *x = f32_copy(e);
      bufs[i] = malloc((size_t)n * 2);
      if (d == 0)
        qt_bf16_from_f32_n(bufs[i], x, (size_t)n);
      else
        qt_f16_from_f32_n(bufs[i], x, (size_t)n);
      free(x);
      wt[i] = (qt_st_write_tensor){.name = e->name, .dtype = dts[d], .ndim = e->ndim,
                                   .data = bufs[i]};
      memcpy(wt[i].shape, e->shape, sizeof e->shape);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    ok(qt_st_write(p, wt, f.n_tensors, NULL, NULL, 0));
    for (size_t i = 0; i < f.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(wt);
    qt_model *m = load_model(dir, QT_MODEL_QUANT_NONE);
    qt_model *q = load_model(dir, QT_MODEL_QUANT_NF4);
    for (int64_t l = 0; l < m->L; l++)
      for (int pj = 0; pj < QT_PROJ_COUNT; pj++) {
        const qt_model_linear *a = &m->layers[l].proj[pj], *r = &ref->layers[l].proj[pj];
        if (a->out == 0) continue; /* the family has no such projection */
        int64_t n = a->out * a->in;
        for (int64_t i = 0; i < n; i++) {
          float want = d == 0 ? qt_bf16_to_f32(qt_bf16_from_f32(r->dense[i]))
                              : qt_f16_to_f32(qt_f16_from_f32(r->dense[i]));
          if (a->dense[i] != want) fail_msg("%s[%lld]: %g, want %g", a->name, (long long)i,
                                            (double)a->dense[i], (double)want);
        }
        const qt_quant_weight *w = &q->layers[l].proj[pj].q;
        assert_int_equal(w->dtype, dts[d]);
        assert_true(w->nested);
        qt_quant_weight want;
        int64_t shape[2] = {a->out, a->in};
        ok(qt_quant_weight_quantize(QT_QUANT_NF4, 64, true, dts[d], 2, shape, a->dense, 1, &want));
        assert_memory_equal(w->packed, want.packed, (size_t)((n + 1) / 2));
        assert_memory_equal(w->qabsmax, want.qabsmax, (size_t)want.nblocks);
        qt_quant_weight_free(&want);
      }
    qt_model_free(&m);
    qt_model_free(&q);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    rmdir(dir);
  }
  qt_st_close(&f);
  qt_model_free(&ref);
}

static void test_bad_batch(void **st) {
  (void)st;
  qt_model *m = load_model(GOLD "tiny_b", QT_MODEL_QUANT_NONE);
  qt_model_tape *mt = make_tape(m, 1, 4, false, 0);
  int32_t ids[4] = {1, 2, 3, 4}, tg[4] = {2, 3, 4, -100}, pos[4] = {0, 1, 2, 3}, doc[4] = {0};
  qt_model_batch b = {.ids = ids, .targets = tg, .pos = pos, .doc = doc, .B = 1, .T = 4};
  double s;
  int64_t c;
  ok(qt_model_forward_backward(mt, NULL, &b, false, 0, &s, &c));
  assert_int_equal(c, 3);
  ids[2] = (int32_t)m->V;
  assert_int_equal(qt_model_forward_backward(mt, NULL, &b, false, 0, &s, &c), QT_ERR_INVALID);
  ids[2] = 3;
  tg[0] = -5;
  assert_int_equal(qt_model_forward_backward(mt, NULL, &b, false, 0, &s, &c), QT_ERR_INVALID);
  tg[0] = 2;
  pos[3] = (int32_t)m->cfg.max_position_embeddings;
  assert_int_equal(qt_model_forward_backward(mt, NULL, &b, false, 0, &s, &c), QT_ERR_INVALID);
  pos[3] = 3;
  b.T = 5; /* larger than the tape */
  assert_int_equal(qt_model_forward_backward(mt, NULL, &b, false, 0, &s, &c), QT_ERR_INVALID);
  qt_error_clear();
  qt_model_tape_free(&mt);
  /* mistral's sliding window (16 in tiny_c) applies to longer rows: 17 tokens
   * train (the window's effect is checked against transformers in the fam_*
   * golden cases) */
  qt_model *mc = load_model(GOLD "tiny_c", QT_MODEL_QUANT_NONE);
  qt_model_tape *mct = make_tape(mc, 1, 17, false, 0);
  int32_t z[17] = {0}, zt[17], zp[17];
  for (int i = 0; i < 17; i++) {
    zt[i] = i < 16 ? 3 : -100;
    zp[i] = i;
  }
  qt_model_batch zb = {.ids = z, .targets = zt, .pos = zp, .doc = z, .B = 1, .T = 16};
  ok(qt_model_forward_backward(mct, NULL, &zb, false, 0, &s, &c));
  zb.T = 17;
  ok(qt_model_forward_backward(mct, NULL, &zb, false, 0, &s, &c));
  qt_model_tape_free(&mct);
  qt_model_free(&mc);
  /* a blocksize bitsandbytes does not accept; a directory without config.json */
  qt_model_load_opts o = {.quant = QT_MODEL_QUANT_NF4, .double_quant = true, .blocksize = 48};
  qt_model *bad = NULL;
  assert_int_equal(qt_model_load(GOLD "tiny_b", &o, &bad), QT_ERR_INVALID);
  assert_null(bad);
  o.blocksize = 64;
  assert_int_equal(qt_model_load(GOLD "tiny_b/adapter", &o, &bad), QT_ERR_IO);
  qt_error_clear();
  qt_model_free(&m);
}

/* ---- tape sizing ---------------------------------------------------------------- */

/* qt_model_tape_init's measured arenas hold a real step exactly: stories260K
 * NF4, LoRA r 16 on all seven projections with dropout, packed rows, with and
 * without checkpointing, several shapes (a step that did not fit would fail
 * with NOMEM; peak == plan shows nothing is over-reserved). */
static void test_tape_sizing(void **st) {
  (void)st;
  qt_model *m = load_model(STORIES, QT_MODEL_QUANT_NF4);
  qt_lora_config c = {.r = 16, .alpha = 16, .dropout = 0.1, .targets = QT_LORA_ALL_LINEAR,
                      .seed = 1};
  const int64_t shapes[3][2] = {{1, 200}, {3, 64}, {2, 7}};
  for (int k = 0; k < 3; k++)
    for (int ck = 0; ck < 2; ck++) {
      int64_t B = shapes[k][0], T = shapes[k][1], N = B * T;
      qt_lora *l = NULL;
      ok(qt_lora_init(m, &c, &l));
      qt_model_tape *mt = make_tape(m, B, T, ck == 1, c.r);
      ok(qt_lora_attach(l, qt_model_tape_get(mt)));
      int32_t *ids = malloc((size_t)N * 16), *tg = ids + N, *pos = ids + 2 * N, *doc = ids + 3 * N;
      for (int64_t n = 0; n < N; n++) {
        int64_t t = n % T;
        ids[n] = (int32_t)((n * 37 + 11) % m->V);
        doc[n] = (int32_t)(n / T * 2 + (t >= T / 3));
        pos[n] = (int32_t)(t >= T / 3 ? t - T / 3 : t);
      }
      qt_model_targets_from_labels(ids, doc, B, T, tg);
      qt_model_batch b = {.ids = ids, .targets = tg, .pos = pos, .doc = doc, .B = B, .T = T};
      qt_lora_set_step(l, 1, true);
      qt_model_adapter ad = qt_lora_adapter(l);
      double loss;
      int64_t cnt;
      ok(qt_model_forward_backward(mt, &ad, &b, true, 1.0, &loss, &cnt));
      assert_true(isfinite(loss) && cnt > 0);
      qt_tape_stats ts = qt_tape_get_stats(qt_model_tape_get(mt));
      size_t plan_act, plan_grad;
      qt_model_tape_arena_bytes(mt, &plan_act, &plan_grad);
      fprintf(stderr, "B %lld T %lld ckpt %d: act peak %.2f MiB, grad peak %.2f MiB\n",
              (long long)B, (long long)T, ck, ts.act_peak / 1048576.0, ts.grad_peak / 1048576.0);
      /* this step is the worst case the tape was measured for: the plan is exact */
      assert_int_equal(ts.act_peak, plan_act);
      assert_int_equal(ts.grad_peak, plan_grad);
      free(ids);
      qt_model_tape_free(&mt);
      qt_lora_free(&l);
    }
  qt_model_free(&m);
}

/* ---- bitsandbytes checkpoints of other fixtures ------------------------------- */

/* tests/golden/quant/llama_nf4 (transformers + bitsandbytes, bf16, nf4 + DQ):
 * every base linear of the loaded model dequantizes to the bf16 weights
 * bitsandbytes computes (dequant.safetensors), and the sharded bnb checkpoint
 * of tests/golden/hf_config loads and runs. */
static void test_bnb_checkpoints(void **st) {
  (void)st;
  qt_model *m = load_model(QLORA_TEST_DIR "/golden/quant/llama_nf4", QT_MODEL_QUANT_NF4);
  qt_st_file f;
  ok(qt_st_open(QLORA_TEST_DIR "/golden/quant/llama_nf4/dequant.safetensors", &f));
  int checked = 0;
  for (int64_t l = 0; l < m->L; l++)
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      const qt_model_linear *lin = &m->layers[l].proj[p];
      if (lin->out == 0) continue; /* the family has no such projection */
      assert_true(lin->quantized && lin->q.nested && lin->q.dtype == QT_BF16);
      char key[160];
      snprintf(key, sizeof key, "%s.weight", lin->name);
      const qt_st_entry *e = need(&f, key);
      assert_int_equal(e->dtype, QT_BF16);
      int64_t n = lin->out * lin->in;
      float *w = malloc((size_t)n * sizeof(float));
      ok(qt_model_linear_weight(m, lin, w));
      for (int64_t i = 0; i < n; i++) {
        uint16_t ref;
        memcpy(&ref, e->data + 2 * i, 2);
        if (qt_bf16_from_f32(w[i]) != ref) fail_msg("%s[%lld] differs from bitsandbytes", key, (long long)i);
      }
      free(w);
      checked++;
    }
  assert_int_equal(checked, 7 * m->L);
  qt_st_close(&f);
  qt_model_free(&m);
  qt_model *sh = load_model(QLORA_TEST_DIR "/golden/hf_config/models/llama_nf4_sharded", QT_MODEL_QUANT_NF4);
  assert_true(sh->layers[0].proj[0].quantized);
  qt_model_tape *mt = make_tape(sh, 1, 5, false, 0);
  int32_t ids[5] = {1, 5, 9, 2, 7}, tg[5] = {5, 9, 2, 7, -100}, pos[5] = {0, 1, 2, 3, 4}, doc[5] = {0};
  qt_model_batch b = {.ids = ids, .targets = tg, .pos = pos, .doc = doc, .B = 1, .T = 5};
  double loss;
  int64_t cnt;
  ok(qt_model_forward_backward(mt, NULL, &b, false, 0, &loss, &cnt));
  assert_true(isfinite(loss) && cnt == 4);
  qt_model_tape_free(&mt);
  qt_model_free(&sh);
}

/* ---- init, dropout, checkpointing ------------------------------------------ */

static void test_init(void **st) {
  (void)st;
  expected x;
  expected_open("tiny_a", &x);
  qt_model_batch b;
  batch_from(&x, &b);
  qt_model *m = load_model(GOLD "tiny_a", QT_MODEL_QUANT_NONE);
  qt_lora_config c = {.r = 8, .alpha = 16, .targets = QT_LORA_ALL_LINEAR, .seed = 11};
  qt_lora *l1 = NULL, *l2 = NULL, *l3 = NULL;
  ok(qt_lora_init(m, &c, &l1));
  ok(qt_lora_init(m, &c, &l2));
  c.seed = 12;
  ok(qt_lora_init(m, &c, &l3));
  assert_true(qt_lora_scale(l1) == 2.0);
  size_t n;
  qt_lora_tensor *t1 = qt_lora_tensors(l1, &n), *t2 = qt_lora_tensors(l2, &n),
                 *t3 = qt_lora_tensors(l3, &n);
  assert_int_equal(n, 2 * 7 * (size_t)m->L);
  bool differs = false;
  for (size_t i = 0; i < n; i++) {
    int64_t k = t1[i].rows * t1[i].cols;
    assert_memory_equal(t1[i].bf16, t2[i].bf16, (size_t)k * 2);
    if (t1[i].is_B) {
      for (int64_t j = 0; j < k; j++) assert_true(t1[i].data[j] == 0.0f);
      continue;
    }
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT kaiming_uniform_(a=sqrt(5))) */
    double bound = 1.0 / sqrt((double)t1[i].cols), s2 = 0, mx = 0;
    for (int64_t j = 0; j < k; j++) {
      double v = t1[i].data[j];
      s2 += v * v;
      if (fabs(v) > mx) mx = fabs(v);
      differs = differs || t1[i].bf16[j] != t3[i].bf16[j];
    }
    assert_true(mx <= bound * (1 + 1.0 / 128));          /* bf16 rounding */
    assert_true(mx > 0.5 * bound);
    double var = s2 / (double)k, want = bound * bound / 3;   /* variance of U(-b, b) */
    assert_true(fabs(var - want) <= 0.5 * want);
  }
  assert_true(differs);
  /* B = 0: the adapted model is the base model */
  float *base = logits_with(m, NULL, &b), *with = logits_with(m, l1, &b);
  assert_memory_equal(base, with, (size_t)(x.N * x.V) * 4);
  free(base);
  free(with);
  qt_lora_free(&l1);
  qt_lora_free(&l2);
  qt_lora_free(&l3);
  qt_model_free(&m);
  expected_close(&x);
}

static void test_dropout_checkpoint(void **st) {
  (void)st;
  expected x;
  expected_open("tiny_b", &x);
  qt_model_batch b;
  batch_from(&x, &b);
  qt_model *m = load_model(GOLD "tiny_b", QT_MODEL_QUANT_FP4);
  qt_lora_config c = {.r = 4, .alpha = 8, .dropout = 0.3, .targets = QT_LORA_ALL_LINEAR,
                      .seed = 3, .master_fp32 = true};
  qt_lora *l = NULL, *l2 = NULL;
  ok(qt_lora_init(m, &c, &l));
  ok(qt_lora_init(m, &c, &l2));
  size_t n;
  qt_lora_tensor *ts = qt_lora_tensors(l, &n), *ts2 = qt_lora_tensors(l2, &n);
  for (size_t i = 0; i < n; i++)
    if (ts[i].is_B)
      for (int64_t j = 0; j < ts[i].rows * ts[i].cols; j++)
        ts[i].master[j] = ts2[i].master[j] = 0.01f * (float)((j * 7 + (int64_t)i) % 13 - 6);
  qt_lora_sync(l);
  qt_lora_sync(l2);
  double a, bb, cc, dd;
  /* same step: checkpointed and plain runs are bit-identical */
  qt_lora_set_step(l, 5, true);
  qt_lora_set_step(l2, 5, true);
  run_grads(m, l, &b, false, NULL, &a);
  run_grads(m, l2, &b, true, NULL, &bb);
  assert_true(a == bb);
  assert_same_grads(l, l2);
  /* another step draws other masks; eval (no dropout) differs from both */
  qt_lora_set_step(l, 6, true);
  run_grads(m, l, &b, false, NULL, &cc);
  assert_true(cc != a);
  qt_lora_set_step(l, 6, false);
  run_grads(m, l, &b, false, NULL, &dd);
  assert_true(dd != a && dd != cc);
  qt_lora_free(&l);
  qt_lora_free(&l2);
  qt_model_free(&m);
  expected_close(&x);
}

/* ---- adapter directories qlora-train must refuse ----------------------------- */

static void write_file(const char *dir, const char *name, const char *text) {
  char p[600];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  ok(qt_fs_write_atomic(p, text, strlen(text)));
}

static void test_adapter_errors(void **st) {
  (void)st;
  qt_model *m = load_model(GOLD "tiny_b", QT_MODEL_QUANT_NONE);
  qt_lora *l = fresh_lora(m, 1u << QT_PROJ_V, 2, false, 1);
  char dir[512];
  tmpdir(dir, sizeof dir, "bad");
  ok(qt_lora_save_peft(l, dir, NULL, QT_BF16));
  qt_lora *r = NULL;
  ok(qt_lora_load_peft(m, dir, false, 0, &r));
  qt_lora_free(&r);
  struct { const char *json; qt_status want; } cases[] = {
      {"{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 6, \"target_modules\": [\"v_proj\"], \"use_dora\": true}", QT_ERR_UNSUPPORTED},
      {"{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 6, \"target_modules\": [\"v_proj\", \"lm_head\"]}", QT_ERR_UNSUPPORTED},
      {"{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 6, \"target_modules\": \".*proj\"}", QT_ERR_UNSUPPORTED},
      {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 6, \"target_modules\": [\"v_proj\"]}", QT_ERR_FORMAT},
      {"{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 6, \"target_modules\": [\"v_proj\", \"q_proj\"]}", QT_ERR_FORMAT},
      {"{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 6, \"target_modules\": [\"v_proj\"], \"bias\": \"all\"}", QT_ERR_UNSUPPORTED},
      {"{\"peft_type\": \"IA3\", \"r\": 2, \"target_modules\": [\"v_proj\"]}", QT_ERR_UNSUPPORTED},
      {"{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 6, \"target_modules\": [\"v_proj\"], \"rank_pattern\": {\"v_proj\": 4}}", QT_ERR_UNSUPPORTED},
      {"[1, 2]", QT_ERR_FORMAT},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_file(dir, "adapter_config.json", cases[i].json);
    qt_status s = qt_lora_load_peft(m, dir, false, 0, &r);
    if (s != cases[i].want)
      fail_msg("case %zu: got %s (%s), want %s", i, qt_status_name(s), qt_error_message(),
               qt_status_name(cases[i].want));
    assert_null(r);
    qt_error_clear();
  }
  /* an adapter with a tensor of a module it does not target */
  write_file(dir, "adapter_config.json",
             "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 6, \"target_modules\": [\"v_proj\"]}");
  qt_lora *k = fresh_lora(m, (1u << QT_PROJ_V) | (1u << QT_PROJ_K), 2, false, 1);
  char dir2[600];
  snprintf(dir2, sizeof dir2, "%s_k", dir);
  ok(qt_lora_save_peft(k, dir2, NULL, QT_F32));
  char from[700], to[700];
  snprintf(from, sizeof from, "%s/adapter_model.safetensors", dir2);
  snprintf(to, sizeof to, "%s/adapter_model.safetensors", dir);
  assert_int_equal(rename(from, to), 0);
  assert_int_equal(qt_lora_load_peft(m, dir, false, 0, &r), QT_ERR_UNSUPPORTED);
  qt_error_clear();
  rm_adapter(dir2);
  rm_adapter(dir);
  qt_lora_free(&k);
  qt_lora_free(&l);
  qt_model_free(&m);
}

/* ---- KV-cache decoding (model.h qt_model_decoder) ------------------------------ */

enum { DEC_STEPS = 48 };

/* A forward-only tape for 1 x T with room for a rank-r LoRA (attached when l). */
static qt_model_tape *decode_tape(const qt_model *m, qt_lora *l, int64_t T) {
  qt_model_tape_opts to = {.max_B = 1, .max_T = T, .forward_only = true, .lora_no_dropout = true,
                           .max_lora_rank = l ? qt_lora_get_config(l)->r : 0};
  qt_model_tape *mt = NULL;
  ok(qt_model_tape_init(m, &to, &mt));
  if (l) {
    ok(qt_lora_attach(l, qt_model_tape_get(mt)));
    qt_lora_set_step(l, 0, false);
  }
  return mt;
}

/* For one prompt of n_prompt random ids: at every one of DEC_STEPS decode
 * steps the cached last-row logits equal the last row of qt_model_logits over
 * the whole sequence (3e-5 relative); then greedy and sampled generation
 * equal the recompute oracle's ids. */
static void decode_case(const char *name, const qt_model *m, qt_lora *l, int64_t n_prompt) {
  int64_t cap = n_prompt + DEC_STEPS;
  qt_model_tape *mt = decode_tape(m, l, cap);
  qt_model_adapter ad = l ? qt_lora_adapter(l) : (qt_model_adapter){0};
  const qt_model_adapter *adp = l ? &ad : NULL;
  int32_t *seq = malloc((size_t)cap * 3 * sizeof(int32_t)), *pos = seq + cap, *doc = seq + 2 * cap;
  float *full = malloc((size_t)(cap * m->V) * sizeof(float)), *z = malloc((size_t)m->V * sizeof(float));
  qt_philox rng;
  qt_philox_init(&rng, 99 + (uint64_t)n_prompt, 0, 0);
  for (int64_t i = 0; i < cap; i++) {
    seq[i] = (int32_t)(qt_philox_next_uniform(&rng) * (float)(m->V - 1));
    pos[i] = (int32_t)i;
    doc[i] = 0;
  }
  qt_model_decoder *d = NULL;
  ok(qt_model_decoder_init(mt, adp, cap, n_prompt, &d));
  double worst = 0;
  int64_t n = n_prompt;
  ok(qt_model_decoder_feed(d, seq, n_prompt, z));
  for (int step = 0;; step++) {
    assert_int_equal(qt_model_decoder_len(d), n);
    qt_model_batch b = {.ids = seq, .targets = NULL, .pos = pos, .doc = doc, .B = 1, .T = n};
    ok(qt_model_logits(mt, adp, &b, full));
    double e = rel_err(z, full + (n - 1) * m->V, m->V);
    /* One row through OpenBLAS's gemv-shaped paths against many rows through
     * its gemm kernels: two fp32 summation orders through every layer. Worst
     * seen 3.6e-6 with the SkylakeX kernels and 1.0e-5 with Prescott's
     * (stories260K NF4 + LoRA); a wrong cache, position or mask is off by
     * 1e-2 or more. */
    if (!(e <= 3e-5))
      fail_msg("%s%s prompt %lld: decode step %d (position %lld): cached logits rel %.3g vs the "
               "full forward", name, l ? " + LoRA" : "", (long long)n_prompt, step,
               (long long)(n - 1), e);
    if (e > worst) worst = e;
    if (n == cap) break;
    int32_t next = 0; /* greedy continuation (EOS is just a token here) */
    for (int64_t v = 1; v < m->V; v++)
      if (z[v] > z[next]) next = (int32_t)v;
    seq[n++] = next;
    ok(qt_model_decoder_feed(d, &next, 1, z));
  }
  /* the cache is full: one more token is refused */
  assert_int_equal(qt_model_decoder_feed(d, seq, 1, z), QT_ERR_INVALID);
  qt_error_clear();
  qt_model_decoder_free(&d);
  int32_t a[DEC_STEPS], r[DEC_STEPS];
  int64_t na, nr, n_greedy = 0;
  /* greedy, plain sampling, and every processor at once (model/sample.h);
   * the last through qt_model_decoder_generate with a decoder fed 5 rows at
   * a time and reused for a second prompt sharing a prefix */
  qt_sample_opts so[3] = {qt_sample_opts_default(), qt_sample_opts_default(),
                          qt_sample_opts_default()};
  so[1].temperature = 1.0;
  so[2] = (qt_sample_opts){.temperature = 0.8, .top_k = 40, .top_p = 0.9, .min_p = 0.02,
                           .repetition_penalty = 1.3, .seed = 42};
  so[0].seed = so[1].seed = 42;
  for (int t = 0; t < 3; t++) {
    if (t < 2) {
      ok(qt_model_generate(mt, adp, seq, n_prompt, DEC_STEPS, so[t].temperature, 42, a, &na));
    } else {
      qt_sampler smp;
      ok(qt_sampler_init(&smp, &so[t], m->V));
      ok(qt_model_decoder_init(mt, adp, cap, 5, &d));
      int32_t eos[QT_HF_MAX_EOS];
      for (int e = 0; e < m->cfg.n_eos; e++) eos[e] = (int32_t)m->cfg.eos_token_ids[e];
      qt_generate_opts g = {.max_new = DEC_STEPS, .stop_ids = eos, .n_stop_ids = m->cfg.n_eos};
      /* a first prompt diverging after one token leaves a cache to roll back */
      int32_t other[3] = {seq[0], (seq[1 % n_prompt] + 1) % (int32_t)m->V, 7};
      ok(qt_model_decoder_generate(d, &smp, other, 3, &g, a, &na));
      qt_sampler_free(&smp);
      ok(qt_sampler_init(&smp, &so[t], m->V));
      ok(qt_model_decoder_generate(d, &smp, seq, n_prompt, &g, a, &na));
      qt_sampler_free(&smp);
      qt_model_decoder_free(&d);
    }
    ok(qt_model_generate_recompute(mt, adp, seq, n_prompt, DEC_STEPS, &so[t], r, &nr));
    if (na != nr) fail_msg("%s: generate (case %d) wrote %lld tokens, the recompute oracle %lld",
                           name, t, (long long)na, (long long)nr);
    for (int64_t i = 0; i < na; i++)
      if (a[i] != r[i]) fail_msg("%s%s prompt %lld: generate (case %d) token %lld: %d, oracle %d",
                                 name, l ? " + LoRA" : "", (long long)n_prompt, t,
                                 (long long)i, a[i], r[i]);
    if (t == 0) n_greedy = na;
  }
  fprintf(stderr, "%s%s prompt %lld: %d decode steps, worst logits rel %.3g; generate == "
                  "oracle (%lld greedy tokens, %lld sampled)\n", name, l ? " + LoRA" : "",
          (long long)n_prompt, DEC_STEPS, worst, (long long)n_greedy, (long long)na);
  free(seq);
  free(full);
  free(z);
  qt_model_tape_free(&mt);
}

static void test_decode_cache(void **st) {
  (void)st;
  const struct {
    const char *name, *dir;
    qt_model_quant q;
  } cs[] = {
      {"tiny_a (llama, biases, GQA)", GOLD "tiny_a", QT_MODEL_QUANT_NONE},
      {"tiny_b (qwen2, tied)", GOLD "tiny_b", QT_MODEL_QUANT_NONE},
      {"tiny_nf4 (4-bit)", GOLD "tiny_nf4", QT_MODEL_QUANT_NF4},
      {"stories260K", STORIES, QT_MODEL_QUANT_NONE},
      {"stories260K nf4", STORIES, QT_MODEL_QUANT_NF4},
  };
  for (size_t c = 0; c < sizeof cs / sizeof cs[0] + N_FAMILIES; c++) {
    const char *name = c < sizeof cs / sizeof cs[0] ? cs[c].name : FAMILIES[c - sizeof cs / sizeof cs[0]].name;
    char dir[256];
    qt_model_quant q;
    if (c < sizeof cs / sizeof cs[0]) {
      snprintf(dir, sizeof dir, "%s", cs[c].dir);
      q = cs[c].q;
    } else {
      snprintf(dir, sizeof dir, GOLD "%s", name);
      q = FAMILIES[c - sizeof cs / sizeof cs[0]].q;
    }
    qt_model *m = load_model(dir, q);
    qt_lora *l = fresh_lora(m, QT_LORA_ALL_LINEAR, 4, false, 11 + c);
    if (c >= sizeof cs / sizeof cs[0]) {
      /* the families: a 13-token prompt and 48 steps outgrow every window (4-5);
       * with the LoRA on all the family's projections (fused ones too) */
      decode_case(name, m, l, 13);
    } else {
      for (int with = 0; with < 2; with++) {
        decode_case(name, m, with ? l : NULL, 1);
        decode_case(name, m, with ? l : NULL, 13);
      }
    }
    qt_lora_free(&l);
    qt_model_free(&m);
  }
}

/* What the decoder refuses: LoRA dropout on, ids outside the vocabulary,
 * oversize feeds, a full cache (tiny_c, mistral, window 16: a sequence past
 * the window is decoded). */
static void test_decode_errors(void **st) {
  (void)st;
  qt_model *m = load_model(GOLD "tiny_c", QT_MODEL_QUANT_NONE);
  qt_lora_config c = {.r = 2, .alpha = 4, .dropout = 0.1, .targets = QT_LORA_ALL_LINEAR, .seed = 3};
  qt_lora *l = NULL;
  ok(qt_lora_init(m, &c, &l));
  qt_model_tape *mt = decode_tape(m, l, 20);
  qt_model_adapter ad = qt_lora_adapter(l);
  qt_model_decoder *d = NULL;
  qt_lora_set_step(l, 0, true);
  assert_int_equal(qt_model_decoder_init(mt, &ad, 20, 4, &d), QT_ERR_UNSUPPORTED);
  assert_null(d);
  int32_t out[20];
  int64_t n_out;
  int32_t ids[17] = {1};
  assert_int_equal(qt_model_generate(mt, &ad, ids, 1, 4, 0.0, 0, out, &n_out), QT_ERR_UNSUPPORTED);
  qt_lora_set_step(l, 0, false);
  assert_int_equal(qt_model_decoder_init(mt, &ad, m->cfg.max_position_embeddings + 1, 1, &d),
                   QT_ERR_INVALID);
  assert_int_equal(qt_model_decoder_init(mt, &ad, 8, 9, &d), QT_ERR_INVALID);
  ok(qt_model_decoder_init(mt, &ad, 20, 4, &d));
  float *z = malloc((size_t)m->V * sizeof(float));
  ids[1] = (int32_t)m->V;
  assert_int_equal(qt_model_decoder_feed(d, ids, 2, z), QT_ERR_INVALID);
  assert_int_equal(qt_model_decoder_feed(d, ids, 5, z), QT_ERR_INVALID); /* > max_rows */
  ids[1] = 3;
  assert_int_equal(qt_model_decoder_len(d), 0);
  /* past tiny_c's window of 16 the cache keeps going (only the window's keys are read) */
  for (int i = 0; i < 17; i++) ok(qt_model_decoder_feed(d, ids + 1, 1, z));
  assert_int_equal(qt_model_decoder_len(d), 17);
  /* the cache's end is the limit */
  for (int i = 0; i < 3; i++) ok(qt_model_decoder_feed(d, ids + 1, 1, z));
  assert_int_equal(qt_model_decoder_feed(d, ids + 1, 1, z), QT_ERR_INVALID);
  qt_error_clear();
  free(z);
  qt_model_decoder_free(&d);
  qt_model_tape_free(&mt);
  qt_lora_free(&l);
  qt_model_free(&m);
}

/* ---- writer for the PEFT check (not a test) -------------------------------- */

static int write_peft_check(const char *dir, const char *base) {
  char mdir[512];
  snprintf(mdir, sizeof mdir, GOLD "%s", base);
  qt_model *m = load_model(mdir, QT_MODEL_QUANT_NONE);
  unsigned tg = (1u << QT_PROJ_K) | (1u << QT_PROJ_V) | (1u << QT_PROJ_GATE) | (1u << QT_PROJ_DOWN);
  if (m->cfg.fused_qkv) tg = (1u << QT_PROJ_QKV) | (1u << QT_PROJ_GATE_UP) | (1u << QT_PROJ_DOWN);
  qt_lora *l = fresh_lora(m, tg, 3, false, 77);
  char adir[600];
  snprintf(adir, sizeof adir, "%s/adapter", dir);
  ok(qt_lora_save_peft(l, adir, base, QT_F32));
  char bdir[600]; /* the same adapter in BF16, the dtype checkpoints use */
  snprintf(bdir, sizeof bdir, "%s/adapter_bf16", dir);
  ok(qt_lora_save_peft(l, bdir, base, QT_BF16));
  enum { NT = 10 };
  int32_t ids[NT], pos[NT], doc[NT] = {0};
  for (int i = 0; i < NT; i++) {
    ids[i] = (int32_t)((i * 13 + 5) % m->V);
    pos[i] = i;
  }
  qt_lora *r = NULL;
  ok(qt_lora_load_peft(m, adir, false, 0, &r));
  qt_model_batch b = {.ids = ids, .targets = NULL, .pos = pos, .doc = doc, .B = 1, .T = NT};
  float *lg = logits_with(m, r, &b);
  qt_st_write_tensor wt[2] = {
      {.name = "ids", .dtype = QT_I32, .ndim = 1, .shape = {NT}, .data = ids},
      {.name = "logits", .dtype = QT_F32, .ndim = 2, .shape = {NT, m->V}, .data = lg}};
  char p[600];
  snprintf(p, sizeof p, "%s/ours.safetensors", dir);
  ok(qt_st_write(p, wt, 2, NULL, NULL, 0));
  free(lg);
  qt_lora_free(&r);
  qt_lora_free(&l);
  qt_model_free(&m);
  return 0;
}

/* Three groups, three CTest entries (each stays well under 20 s with ASan):
 * no argument = the transformers/PEFT golden checks, "--decode" = the KV-cache
 * decoder against the full forward, "--units" = the rest. */
int main(int argc, char **argv) {
  if ((argc == 3 || argc == 4) && strcmp(argv[1], "--write-peft-check") == 0)
    return write_peft_check(argv[2], argc == 4 ? argv[3] : "tiny_a");
  const struct CMUnitTest golden[] = {
      cmocka_unit_test(test_golden_tiny_a),  cmocka_unit_test(test_golden_tiny_b),
      cmocka_unit_test(test_golden_tiny_c),
      cmocka_unit_test(test_golden_families),
      cmocka_unit_test(test_golden_stories), cmocka_unit_test(test_golden_nf4),
      cmocka_unit_test(test_stories_eval),
  };
  const struct CMUnitTest units[] = {
      cmocka_unit_test(test_peft_roundtrip), cmocka_unit_test(test_merge),
      cmocka_unit_test(test_linear_src),     cmocka_unit_test(test_sharded),
      cmocka_unit_test(test_init),           cmocka_unit_test(test_dropout_checkpoint),
      cmocka_unit_test(test_adapter_errors), cmocka_unit_test(test_half_checkpoint),
      cmocka_unit_test(test_bad_batch),      cmocka_unit_test(test_tape_sizing),
      cmocka_unit_test(test_bnb_checkpoints),
  };
  const struct CMUnitTest decode[] = {
      cmocka_unit_test(test_decode_cache), cmocka_unit_test(test_decode_errors),
  };
  if (argc == 2 && strcmp(argv[1], "--units") == 0) return cmocka_run_group_tests(units, NULL, NULL);
  if (argc == 2 && strcmp(argv[1], "--decode") == 0) return cmocka_run_group_tests(decode, NULL, NULL);
  if (argc != 1) {
    fprintf(stderr, "usage: test_model_lora [--units | --decode | --write-peft-check DIR [BASE]]\n");
    return 2;
  }
  return cmocka_run_group_tests(golden, NULL, NULL);
}
