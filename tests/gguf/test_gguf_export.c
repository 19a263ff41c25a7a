/* tests/gguf/test_gguf_export.c — `qlora-train export --format gguf|gguf-lora`
 * against llama.cpp (tests/golden/gguf/expected.json, written by
 * tools/reference/make_gguf_fixtures.py, which also checked llama.cpp's losses).
 *
 * For stories260K and the fixture's random models (regenerated here with the
 * script's integer formula, so the same float bits), every export.gguf_type is
 * exported in-process and read back with gguf/gguf.h; every KV and every tensor
 * (type, shape, SHA-256 of its bytes) must equal the reference file's:
 * convert_hf_to_gguf.py for f32/f16/bf16, llama_model_quantize of our f32 file
 * for q8_0/q4_k_m. Exact comparison is allowed (tests/README.md rule 2): the
 * values are copies, conversions and llama.cpp's reference quantizers, plain
 * float arithmetic in a fixed order with no contraction. Exceptions: the KV
 * general.name (convert guesses a display name) and rope_freqs.weight
 * (torch's float32 pow vs powf: within 1e-6 relative).
 * The GGUF LoRA adapter of tests/golden/model/stories/adapter equals
 * convert_lora_to_gguf.py's; the byte-level BPE tokenizers (Llama-3, Qwen3)
 * give convert's tokenizer.* KVs. */
#include <cjson/cJSON.h>
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

#include "common/fs.h"
#include "common/status.h"
#include "common/safetensors.h"
#include "common/sha256.h"
#include "gguf/gguf.h"
#include "gguf/gguf_vocab.h"
#include "train/cli.h"

static cJSON *g_fx;
static char g_tmp[256];

static char *path_join(char *buf, size_t n, const char *a, const char *b) {
  snprintf(buf, n, "%s/%s", a, b);
  return buf;
}

static void copy_file(const char *from, const char *to) {
  uint8_t *buf;
  size_t len;
  assert_int_equal(qt_fs_read_file(from, (size_t)1 << 30, &buf, &len), QT_OK);
  assert_int_equal(qt_fs_write_atomic(to, buf, len), QT_OK);
  free(buf);
}

/* ---- the fixture's random models (make_gguf_fixtures.py rand_values) ---------- */

static uint32_t fnv1a(const char *s) {
  uint32_t h = 0x811C9DC5u;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x01000193u;
  return h;
}

static void rand_values(const char *name, size_t n, int norm, float *out) {
  uint32_t k = (fnv1a(name) + 1u) * 0x9E3779B9u;
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)i * 2654435761u + k;
    u ^= u >> 16;
    u *= 0x85EBCA6Bu;
    u ^= u >> 13;
    float v = (float)((int32_t)(u >> 8) - 8388608) * 0x1p-23f;
    out[i] = norm ? 1.0f + v * 0.125f : v * 0.0625f;
  }
}

static int64_t cfg_int(const cJSON *c, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, k);
  assert_non_null(v);
  return (int64_t)v->valuedouble;
}

typedef struct {
  char name[128];
  int64_t rows, cols; /* cols 0: vector */
  int norm;
} hf_tensor;

static size_t hf_shapes(const cJSON *c, hf_tensor *t) {
  int64_t C = cfg_int(c, "hidden_size"), F = cfg_int(c, "intermediate_size"), L = cfg_int(c, "num_hidden_layers");
  int64_t V = cfg_int(c, "vocab_size"), H = cfg_int(c, "num_attention_heads"), K = cfg_int(c, "num_key_value_heads");
  int64_t D = C / H;
  bool qwen = !strcmp(cJSON_GetObjectItemCaseSensitive(c, "model_type")->valuestring, "qwen2");
  size_t n = 0;
#define T(nm, r, cc, nrm) (snprintf(t[n].name, sizeof t[n].name, "%s", nm), t[n].rows = (r), t[n].cols = (cc), t[n].norm = (nrm), n++)
  T("model.embed_tokens.weight", V, C, 0);
  for (int64_t l = 0; l < L; l++) {
    char nm[128];
    snprintf(nm, sizeof nm, "model.layers.%lld.input_layernorm.weight", (long long)l);
    T(nm, C, 0, 1);
    snprintf(nm, sizeof nm, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
    T(nm, C, 0, 1);
    const char *pn[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    int64_t pr[4] = {H * D, K * D, K * D, C}, pc[4] = {C, C, C, H * D};
    for (int p = 0; p < 4; p++) {
      snprintf(nm, sizeof nm, "model.layers.%lld.self_attn.%s.weight", (long long)l, pn[p]);
      T(nm, pr[p], pc[p], 0);
      if (qwen && p < 3) {
        snprintf(nm, sizeof nm, "model.layers.%lld.self_attn.%s.bias", (long long)l, pn[p]);
        T(nm, pr[p], 0, 0);
      }
    }
    const char *mn[3] = {"gate_proj", "up_proj", "down_proj"};
    int64_t mr[3] = {F, F, C}, mc[3] = {C, C, F};
    for (int p = 0; p < 3; p++) {
      snprintf(nm, sizeof nm, "model.layers.%lld.mlp.%s.weight", (long long)l, mn[p]);
      T(nm, mr[p], mc[p], 0);
    }
  }
  T("model.norm.weight", C, 0, 1);
  if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings"))) T("lm_head.weight", V, C, 0);
#undef T
  return n;
}

static void write_random_model(const char *dir, const cJSON *cfg) {
  assert_int_equal(qt_fs_mkdir_p(dir), QT_OK);
  hf_tensor *t = calloc(256, sizeof *t);
  qt_st_write_tensor *w = calloc(256, sizeof *w);
  float **bufs = calloc(256, sizeof *bufs);
  size_t n = hf_shapes(cfg, t);
  assert_true(n < 256);
  for (size_t i = 0; i < n; i++) {
    size_t cnt = (size_t)(t[i].rows * (t[i].cols ? t[i].cols : 1));
    bufs[i] = malloc(cnt * sizeof(float));
    rand_values(t[i].name, cnt, t[i].norm, bufs[i]);
    w[i].name = t[i].name;
    w[i].dtype = QT_F32;
    w[i].ndim = t[i].cols ? 2 : 1;
    w[i].shape[0] = t[i].rows;
    w[i].shape[1] = t[i].cols;
    w[i].data = bufs[i];
  }
  char p[512], q[512];
  const char *mk[] = {"format"}, *mv[] = {"pt"};
  assert_int_equal(qt_st_write(path_join(p, sizeof p, dir, "model.safetensors"), w, n, mk, mv, 1), QT_OK);
  cJSON *c = cJSON_Duplicate(cfg, 1);
  cJSON_AddStringToObject(c, "torch_dtype", "float32");
  char *text = cJSON_Print(c);
  assert_int_equal(qt_fs_write_atomic(path_join(p, sizeof p, dir, "config.json"), text, strlen(text)), QT_OK);
  free(text);
  cJSON_Delete(c);
  const char *tok[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"};
  for (int i = 0; i < 3; i++) {
    snprintf(q, sizeof q, "%s/data/stories260K/%s", QLORA_SHARED_DIR, tok[i]);
    copy_file(q, path_join(p, sizeof p, dir, tok[i]));
  }
  for (size_t i = 0; i < n; i++) free(bufs[i]);
  free(bufs);
  free(w);
  free(t);
}

/* ---- comparison with a fixture entry {"kv": {...}, "tensors": [...]} ------------ */

static const char *vtype_name(qt_gguf_vtype t) {
  static const char *const n[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                  "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  return (unsigned)t < QT_GGUF_TYPE_COUNT ? n[t] : "?";
}

static void hex_of(const void *p, size_t n, char hex[65]) {
  uint8_t d[32];
  qt_sha256_digest(p, n, d);
  qt_sha256_hex(d, hex);
}

/* One KV of ours against the fixture's digest of the reference's. */
static void check_kv(const char *file, const qt_gguf_kv *kv, const cJSON *ref) {
  const char *rt = cJSON_GetObjectItemCaseSensitive(ref, "type")->valuestring;
  char hex[65];
  if (!strcmp(rt, "array")) {
    const cJSON *elem = cJSON_GetObjectItemCaseSensitive(ref, "elem");
    if (kv->type != QT_GGUF_ARRAY || strcmp(vtype_name(kv->arr_type), elem->valuestring) != 0 ||
        (double)kv->n != cJSON_GetObjectItemCaseSensitive(ref, "n")->valuedouble)
      fail_msg("%s: %s: array type or length differs from llama.cpp's", file, kv->key);
    hex_of(kv->data, (size_t)kv->bytes, hex);
  } else if (!strcmp(rt, "STRING")) {
    if (kv->type != QT_GGUF_STRING) fail_msg("%s: %s is not a string", file, kv->key);
    hex_of(kv->data, (size_t)kv->bytes, hex);
  } else {
    if (strcmp(vtype_name(kv->type), rt) != 0) fail_msg("%s: %s: type %s, llama.cpp %s", file, kv->key, vtype_name(kv->type), rt);
    const cJSON *rv = cJSON_GetObjectItemCaseSensitive(ref, "value");
    double want = cJSON_IsBool(rv) ? (double)cJSON_IsTrue(rv) : rv->valuedouble;
    double got = NAN;
    if (kv->type == QT_GGUF_F32) {
      float f;
      memcpy(&f, kv->data, 4);
      if (f != (float)want) fail_msg("%s: %s = %.9g, llama.cpp %.9g", file, kv->key, f, want);
      return;
    }
    if (kv->type == QT_GGUF_BOOL) got = kv->data[0];
    else if (kv->type == QT_GGUF_U32) got = (double)((uint32_t)kv->data[0] | ((uint32_t)kv->data[1] << 8) | ((uint32_t)kv->data[2] << 16) | ((uint32_t)kv->data[3] << 24));
    else fail_msg("%s: %s: unexpected type", file, kv->key);
    if (got != want) fail_msg("%s: %s = %.17g, llama.cpp %.17g", file, kv->key, got, want);
    return;
  }
  const char *want = cJSON_GetObjectItemCaseSensitive(ref, "sha256")->valuestring;
  if (strcmp(hex, want) != 0) fail_msg("%s: %s differs from llama.cpp's (sha256 %s vs %s)", file, kv->key, hex, want);
}

/* prefix: only KVs starting with it ("" = all) */
static void check_kvs(const char *file, const qt_gguf_file *f, const cJSON *kvs, const char *prefix) {
  size_t np = strlen(prefix), ours = 0, refs = 0;
  for (size_t i = 0; i < f->n_kv; i++) {
    const char *k = f->kv[i].key;
    if (strncmp(k, prefix, np) != 0 || !strcmp(k, "general.name")) continue;
    ours++;
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(kvs, k);
    if (!ref) fail_msg("%s: KV %s is not in llama.cpp's file", file, k);
    check_kv(file, &f->kv[i], ref);
  }
  const cJSON *e;
  cJSON_ArrayForEach(e, kvs) {
    if (strncmp(e->string, prefix, np) != 0 || !strcmp(e->string, "general.name")) continue;
    refs++;
    if (!qt_gguf_find_kv(f, e->string)) fail_msg("%s: KV %s missing (llama.cpp's file has it)", file, e->string);
  }
  assert_int_equal(ours, refs);
}

static void check_tensors(const char *file, const qt_gguf_file *f, const cJSON *fx) {
  const cJSON *ts = cJSON_GetObjectItemCaseSensitive(fx, "tensors"), *e;
  assert_int_equal((size_t)cJSON_GetArraySize(ts), f->n_tensors);
  cJSON_ArrayForEach(e, ts) {
    const char *name = cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring;
    const qt_gguf_tensor *t = qt_gguf_find_tensor(f, name);
    if (!t) fail_msg("%s: tensor %s missing", file, name);
    const char *ty = cJSON_GetObjectItemCaseSensitive(e, "type")->valuestring;
    if (strcmp(ty, qt_ggml_type_name(t->type)) != 0) fail_msg("%s: %s is %s, llama.cpp %s", file, name, qt_ggml_type_name(t->type), ty);
    const cJSON *ne = cJSON_GetObjectItemCaseSensitive(e, "ne");
    assert_int_equal(cJSON_GetArraySize(ne), t->n_dims);
    for (int d = 0; d < t->n_dims; d++) assert_int_equal((int64_t)cJSON_GetArrayItem(ne, d)->valuedouble, t->ne[d]);
    if (!strcmp(name, "rope_freqs.weight")) {
      /* torch's float32 pow vs powf: a tolerance (see the file comment) */
      const cJSON *rf = cJSON_GetObjectItemCaseSensitive(fx, "rope_freqs");
      assert_int_equal(cJSON_GetArraySize(rf), t->ne[0]);
      for (int64_t i = 0; i < t->ne[0]; i++) {
        float v;
        memcpy(&v, t->data + 4 * i, 4);
        double w = cJSON_GetArrayItem(rf, (int)i)->valuedouble;
        if (fabs(v - w) > 1e-6 * fabs(w)) fail_msg("%s: rope_freqs[%lld] %.9g vs %.9g", file, (long long)i, v, w);
      }
      continue;
    }
    char hex[65];
    hex_of(t->data, t->bytes, hex);
    const char *want = cJSON_GetObjectItemCaseSensitive(e, "sha256")->valuestring;
    if (strcmp(hex, want) != 0) fail_msg("%s: tensor %s (%s) bytes differ from llama.cpp's", file, name, ty);
  }
}

static void write_config(const char *path, const char *model_dir) {
  char text[2048];
  snprintf(text, sizeof text,
           "model:\n  path: %s\n  quant: none\nlora:\n  r: 8\n  alpha: 16\ndata:\n  train: %s/data/tinystories/valid.jsonl\n"
           "output:\n  dir: %s/out\n",
           model_dir, QLORA_SHARED_DIR, g_tmp);
  assert_int_equal(qt_fs_write_atomic(path, text, strlen(text)), QT_OK);
}

static qt_status run_export(const char *cfg, const char *format, const char *type, const char *ckpt, const char *out) {
  char set[64];
  snprintf(set, sizeof set, "export.gguf_type=%s", type);
  char *argv[10] = {(char *)cfg, "--format", (char *)format, "--set", set, "--out", (char *)out};
  int argc = 7;
  if (ckpt) {
    argv[argc++] = "--checkpoint";
    argv[argc++] = (char *)ckpt;
  }
  qt_status r = qt_cmd_export(argc, argv);
  if (r != QT_OK) fprintf(stderr, "export %s %s: %s\n", format, type, qt_error_message());
  return r;
}

static void check_model_case(const char *name, const char *model_dir) {
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(g_fx, name);
  assert_non_null(c);
  char cfg[512], out[512];
  snprintf(cfg, sizeof cfg, "%s/%s.yaml", g_tmp, name);
  write_config(cfg, model_dir);
  const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_k_m"};
  for (int i = 0; i < 5; i++) {
    const cJSON *fx = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "exports"), types[i]);
    assert_non_null(fx);
    snprintf(out, sizeof out, "%s/%s-%s.gguf", g_tmp, name, types[i]);
    assert_int_equal(run_export(cfg, "gguf", types[i], NULL, out), QT_OK);
    qt_gguf_file f;
    assert_int_equal(qt_gguf_read(out, &f), QT_OK);
    check_kvs(out, &f, cJSON_GetObjectItemCaseSensitive(fx, "kv"), "");
    check_tensors(out, &f, fx);
    qt_gguf_file_free(&f);
    unlink(out);
  }
}

static void test_stories(void **state) {
  (void)state;
  char dir[512];
  snprintf(dir, sizeof dir, "%s/data/stories260K", QLORA_SHARED_DIR);
  check_model_case("stories260K", dir);
}

static void random_case(const char *name) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/%s", g_tmp, name);
  write_random_model(dir, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(g_fx, "random_models"), name));
  check_model_case(name, dir);
}

/* Q4_K and Q6_K really used (every row a multiple of 256), GQA q/k permutation */
static void test_rand256(void **state) { (void)state; random_case("rand256"); }
/* qwen2: no permutation, q/k/v biases, tied embeddings (token_embd as the output: Q6_K) */
static void test_qwen2(void **state) { (void)state; random_case("qwen2t"); }
/* Llama-3.1 rope scaling: rope_freqs.weight */
static void test_llama31(void **state) { (void)state; random_case("llama31"); }

static void test_lora(void **state) {
  (void)state;
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(g_fx, "stories_adapter"), "lora");
  char cfg[512], out[512], dir[512], ad[512];
  snprintf(dir, sizeof dir, "%s/data/stories260K", QLORA_SHARED_DIR);
  snprintf(ad, sizeof ad, "%s/golden/model/stories/adapter", QLORA_TEST_DIR);
  snprintf(cfg, sizeof cfg, "%s/lora.yaml", g_tmp);
  write_config(cfg, dir);
  const char *types[] = {"f32", "f16", "bf16", "q8_0"};
  for (int i = 0; i < 4; i++) {
    const cJSON *fx = cJSON_GetObjectItemCaseSensitive(c, types[i]);
    assert_non_null(fx);
    snprintf(out, sizeof out, "%s/lora-%s.gguf", g_tmp, types[i]);
    assert_int_equal(run_export(cfg, "gguf-lora", types[i], ad, out), QT_OK);
    qt_gguf_file f;
    assert_int_equal(qt_gguf_read(out, &f), QT_OK);
    check_kvs(out, &f, cJSON_GetObjectItemCaseSensitive(fx, "kv"), "");
    check_tensors(out, &f, fx);
    qt_gguf_file_free(&f);
    unlink(out);
  }
  /* q4_k_m is for models only: a usage error, no file */
  snprintf(out, sizeof out, "%s/lora-q4.gguf", g_tmp);
  assert_int_equal(run_export(cfg, "gguf-lora", "q4_k_m", ad, out), QT_ERR_CONFIG);
  assert_int_not_equal(access(out, F_OK), 0);
}

static const float *f32_of(const qt_gguf_file *f, const char *name, int64_t *ne0, int64_t *ne1) {
  const qt_gguf_tensor *t = qt_gguf_find_tensor(f, name);
  if (!t) return NULL;
  assert_int_equal(t->type, QT_GGML_F32);
  *ne0 = t->ne[0];
  *ne1 = t->n_dims > 1 ? t->ne[1] : 1;
  return (const float *)(const void *)t->data; /* the reader's image is malloc'd; offsets 32-aligned */
}

/* The merged model (f32) equals the base GGUF plus the GGUF LoRA applied as
 * llama.cpp applies it, W + alpha/r * B A on the stored (permuted) rows: the
 * merge and the Q/K permutation commute as they must. A tolerance: the merge
 * sums r products (rule 3 of tests/README.md would allow bits here, but the
 * reference sum below is in double). llama.cpp's loss on this very file was
 * checked by the fixture script. */
static void test_merged(void **state) {
  (void)state;
  char cfg[512], dir[512], ad[512], pb[512], pl[512], pm[512];
  snprintf(dir, sizeof dir, "%s/data/stories260K", QLORA_SHARED_DIR);
  snprintf(ad, sizeof ad, "%s/golden/model/stories/adapter", QLORA_TEST_DIR);
  snprintf(cfg, sizeof cfg, "%s/merged.yaml", g_tmp);
  write_config(cfg, dir);
  snprintf(pb, sizeof pb, "%s/m-base.gguf", g_tmp);
  snprintf(pl, sizeof pl, "%s/m-lora.gguf", g_tmp);
  snprintf(pm, sizeof pm, "%s/m-merged.gguf", g_tmp);
  assert_int_equal(run_export(cfg, "gguf", "f32", NULL, pb), QT_OK);
  assert_int_equal(run_export(cfg, "gguf-lora", "f32", ad, pl), QT_OK);
  assert_int_equal(run_export(cfg, "gguf", "f32", ad, pm), QT_OK);
  qt_gguf_file fb, fl, fm;
  assert_int_equal(qt_gguf_read(pb, &fb), QT_OK);
  assert_int_equal(qt_gguf_read(pl, &fl), QT_OK);
  assert_int_equal(qt_gguf_read(pm, &fm), QT_OK);
  float alpha;
  assert_true(qt_gguf_get_f32(&fl, "adapter.lora.alpha", &alpha));
  assert_int_equal(fm.n_tensors, fb.n_tensors);
  size_t merged_count = 0;
  for (size_t i = 0; i < fm.n_tensors; i++) {
    const char *name = fm.tensors[i].name;
    int64_t n0 = 0, n1 = 0, b0 = 0, b1 = 0, a0 = 0, a1 = 0, l0 = 0, l1 = 0;
    const float *m = f32_of(&fm, name, &n0, &n1), *b = f32_of(&fb, name, &b0, &b1);
    assert_non_null(b);
    assert_int_equal(n0, b0);
    assert_int_equal(n1, b1);
    char na[96], nb[96];
    snprintf(na, sizeof na, "%s.lora_a", name);
    snprintf(nb, sizeof nb, "%s.lora_b", name);
    const float *A = f32_of(&fl, na, &a0, &a1), *B = f32_of(&fl, nb, &l0, &l1);
    if (!A) {
      assert_memory_equal(m, b, (size_t)(n0 * n1) * sizeof *m); /* not adapted: the base bytes */
      continue;
    }
    /* A ne [in, r] = (r, in) rows; B ne [r, out] = (out, r) rows */
    assert_non_null(B);
    assert_int_equal(a0, n0);
    assert_int_equal(l1, n1);
    assert_int_equal(a1, l0);
    double scale = (double)alpha / (double)a1;
    for (int64_t o = 0; o < n1; o++)
      for (int64_t c = 0; c < n0; c++) {
        double d = 0;
        for (int64_t k = 0; k < a1; k++) d += (double)B[o * l0 + k] * A[k * a0 + c];
        double want = b[o * n0 + c] + scale * d, got = m[o * n0 + c];
        if (fabs(got - want) > 1e-5 * (1 + fabs(want))) fail_msg("%s[%lld,%lld] %.9g vs %.9g", name, (long long)o, (long long)c, got, want);
      }
    merged_count++;
  }
  assert_int_equal(merged_count, 7 * 5); /* all seven projections of the five layers */
  qt_gguf_file_free(&fb);
  qt_gguf_file_free(&fl);
  qt_gguf_file_free(&fm);
}

/* tokenizer.* KVs of a byte-level BPE tokenizer vs convert --vocab-only's */
static void bpe_case(const char *name) {
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(g_fx, name);
  const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(c, "config");
  char dir[512], p[512], q[512];
  snprintf(dir, sizeof dir, "%s/%s", g_tmp, name);
  assert_int_equal(qt_fs_mkdir_p(dir), QT_OK);
  const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
  for (int i = 0; i < 2; i++) {
    snprintf(q, sizeof q, "%s/data/%s/%s", QLORA_SHARED_DIR, cJSON_GetObjectItemCaseSensitive(c, "vocab_dir")->valuestring,
             files[i]);
    copy_file(q, path_join(p, sizeof p, dir, files[i]));
  }
  char *text = cJSON_Print(cfg);
  assert_int_equal(qt_fs_write_atomic(path_join(p, sizeof p, dir, "config.json"), text, strlen(text)), QT_OK);
  free(text);
  qt_gguf_vocab v;
  assert_int_equal(qt_gguf_vocab_load(dir, cfg_int(cfg, "vocab_size"), &v), QT_OK);
  /* as train/export_gguf.c: add_space_prefix is a llama-arch key */
  if (!strcmp(cJSON_GetObjectItemCaseSensitive(cfg, "model_type")->valuestring, "qwen2")) v.add_space_prefix = -1;
  snprintf(p, sizeof p, "%s/%s.gguf", g_tmp, name);
  qt_gguf_writer *w;
  assert_int_equal(qt_gguf_writer_init(p, &w), QT_OK);
  assert_int_equal(qt_gguf_vocab_write(&v, w), QT_OK);
  assert_int_equal(qt_gguf_writer_finish(w), QT_OK);
  qt_gguf_writer_free(&w);
  qt_gguf_vocab_free(&v);
  qt_gguf_file f;
  assert_int_equal(qt_gguf_read(p, &f), QT_OK);
  check_kvs(p, &f, cJSON_GetObjectItemCaseSensitive(c, "tokenizer_kv"), "tokenizer.");
  qt_gguf_file_free(&f);
  unlink(p);
}

static void test_bpe_llama3(void **state) { (void)state; bpe_case("llama3tok"); }
static void test_bpe_qwen3(void **state) { (void)state; bpe_case("qwen3tok"); }

static int setup(void **state) {
  (void)state;
  char p[512];
  snprintf(p, sizeof p, "%s/golden/gguf/expected.json", QLORA_TEST_DIR);
  uint8_t *buf;
  size_t len;
  if (qt_fs_read_file(p, (size_t)1 << 26, &buf, &len) != QT_OK) return -1;
  g_fx = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  snprintf(g_tmp, sizeof g_tmp, "/tmp/qt_gguf_XXXXXX");
  if (!g_fx || !mkdtemp(g_tmp)) return -1;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  cJSON_Delete(g_fx);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stories), cmocka_unit_test(test_rand256),    cmocka_unit_test(test_qwen2),
      cmocka_unit_test(test_llama31), cmocka_unit_test(test_lora),       cmocka_unit_test(test_merged),
      cmocka_unit_test(test_bpe_llama3),
      cmocka_unit_test(test_bpe_qwen3),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
