/* tests/quant/test_quant_golden.c — quant/ against fixtures written by the real
 * bitsandbytes 0.50.2 on CPU (tools/reference/make_quant_fixtures.py).
 *
 * What must be bit-exact, always: dynamic maps; 4-bit tables; absmax; nested
 * absmax (with the fixture's offset); dequantization from the fixture's codes
 * (fp32 and bf16, plain and double quant, also through qt_quant_weight and the
 * transformers-saved checkpoint).
 *
 * Where codes may differ: bitsandbytes' CPU backend is not its CUDA kernel,
 * whose semantics quant/ implements (formats.md 1.3-1.4):
 *  - quantize_4bit runs backends/default/ops.py: torch.bucketize over fp32
 *    midpoints of the sorted table (same tie rule as the CUDA tree), but it
 *    divides (x / absmax) in the partial last block, clamps absmax >= 1e-38
 *    (an all-zero block encodes 0.0, not NaN -> code 0) and orders FP4's -0/+0
 *    by argsort;
 *  - 8-bit quantize_blockwise (the nested absmax) runs csrc/cpu_ops.cpp, which
 *    looks the normalized value up in a 65536-bin table over [-1, 1] instead of
 *    the dQuantize<0> binary search.
 * Every differing code must be reproduced by an emulation of that CPU rule
 * below (else the test fails); the counts are printed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <cmocka.h>

#include "common/safetensors.h"
#include "quant/quant.h"
#include "quant_test_util.h"

static cJSON *manifest;

static int setup(void **state) {
  (void)state;
  char *text = qtu_read_golden("manifest.json", NULL);
  manifest = cJSON_Parse(text);
  free(text);
  return manifest ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  cJSON_Delete(manifest);
  return 0;
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  assert_true(cJSON_IsString(v));
  return v->valuestring;
}

static int64_t jint(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  assert_true(cJSON_IsNumber(v));
  return (int64_t)v->valuedouble;
}

static void *golden_sized(const char *name, size_t expect) {
  size_t len;
  void *p = qtu_read_golden(name, &len);
  assert_int_equal(len, expect);
  return p;
}

/* ---- emulations of bitsandbytes' CPU backend (to explain, never to produce) ---- */

/* backends/default/ops.py quantize_4bit for one normalized value: bucketize
 * over midpoints of the sorted table (right=False: count of bounds < v); the
 * result is a sorted position, returned as its value (FP4's -0/+0 order is
 * argsort's choice, so a code is accepted by value). */
static float cpu4_value(qt_quant_type t, float scaled) {
  const float *table = qt_quant_4bit_table(t);
  float s[16];
  memcpy(s, table, sizeof(s));
  for (int i = 1; i < 16; i++) /* insertion sort, 16 values */
    for (int j = i; j > 0 && s[j - 1] > s[j]; j--) {
      float tmp = s[j]; s[j] = s[j - 1]; s[j - 1] = tmp;
    }
  int idx = 0;
  for (int i = 0; i < 15; i++) idx += (s[i] + s[i + 1]) / 2 < scaled;
  return s[idx];
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The code bnb's CPU backend gives element i, checked against `got`. */
static bool cpu4_explains(qt_quant_type t, const float *x, int64_t n, int bs, const float *absmax,
                          int64_t i, uint8_t got) {
  int64_t b = i / bs, full = n - n % bs;
  float am = absmax[b] < 1e-38f ? 1e-38f : absmax[b];
  float v = i >= n ? 0.0f : i < full ? x[i] * (1.0f / am) : x[i] / am;
  float want = cpu4_value(t, clampf(v, -1.0f, 1.0f));
  return qt_quant_4bit_table(t)[got] == want;
}

/* csrc/cpu_ops.cpp: 65536-entry table over [-1, 1], nearest code by midpoints
 * (the code advances while midpoint < bin value). */
typedef struct { uint8_t lut[65536]; } cpu8_lut;

static void cpu8_build(const float code[256], cpu8_lut *l) {
  float mid[255];
  for (int i = 0; i < 255; i++) mid[i] = 0.5f * (code[i] + code[i + 1]);
  int c = 0;
  for (int i = 0; i < 65536; i++) {
    float q = (2.0f * (float)i) / (float)65535;
    float val = -1.0f + q;
    while (c < 255 && mid[c] < val) c++;
    l->lut[i] = (uint8_t)c;
  }
}

static uint8_t cpu8_code(const cpu8_lut *l, float absmax, float x) {
  if (absmax == 0.0f) return 0;
  float v = clampf(x * (1.0f / absmax), -1.0f, 1.0f);
  float a = (v + 1.0f) * 0.5f;
  a = a * (float)65535;
  a = a + 0.5f;
  return l->lut[(uint16_t)a];
}

/* The only dequantization difference allowed: FP4 code 8 gives -0 here (the
 * CUDA kernel's lut[0] * -1) where bnb's torch backend multiplies its
 * quant_map[8] = +0. bits: fp32 bit patterns (bf16 shifted up). */
static bool zero_sign_explained(qt_quant_type t, const uint8_t *packed, int64_t i, uint32_t mine,
                                uint32_t gold) {
  uint8_t code = (i & 1) ? packed[i / 2] & 15 : packed[i / 2] >> 4;
  return t == QT_QUANT_FP4 && code == 8 && (mine & 0x7fffffffu) == 0 && (gold & 0x7fffffffu) == 0;
}

/* ---- tests ---- */

static void test_dynamic_maps(void **state) {
  (void)state;
  for (int s = 0; s < 2; s++) {
    float mine[256];
    qt_quant_dynamic_map(s == 0, mine);
    float *gold = golden_sized(jstr(manifest, s == 0 ? "dynmap_signed" : "dynmap_unsigned"), 1024);
    int diff = 0;
    for (int i = 0; i < 256; i++) diff += qtu_f32_bits(mine[i]) != qtu_f32_bits(gold[i]);
    printf("dynamic map %s: %d/256 entries differ from create_dynamic_map\n",
           s == 0 ? "signed" : "unsigned", diff);
    assert_int_equal(diff, 0);
    free(gold);
  }
}

static float hexf(const char *h) {
  uint32_t u = (uint32_t)strtoul(h, NULL, 16);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static void test_four_bit_cases(void **state) {
  (void)state;
  const cJSON *cases = cJSON_GetObjectItemCaseSensitive(manifest, "four_bit");
  assert_true(cJSON_GetArraySize(cases) >= 30);
  float smap[256];
  qt_quant_dynamic_map(true, smap);
  cpu8_lut *lut = malloc(sizeof(*lut));
  assert_non_null(lut);
  cpu8_build(smap, lut);
  long scratch_code_diff = 0, scratch_nested_diff = 0, scratch_nested_tot = 0;
  long why_zero_block = 0, why_signed_zero = 0, why_other = 0;
  long tot_zero_sign = 0, tot_codes = 0, tot_code_diff = 0, tot_q8 = 0, tot_q8_diff = 0, n_dq = 0, offset_diff = 0;
  const cJSON *c;
  cJSON_ArrayForEach(c, cases) {
    qt_quant_type t;
    assert_true(qt_quant_type_from_name(jstr(c, "quant_type"), &t));
    int bs = (int)jint(c, "blocksize");
    int64_t n = jint(c, "n"), nb = qt_quant_nblocks(n, bs);
    bool dq = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "double_quant"));
    bool bf16 = strcmp(jstr(c, "dtype"), "bf16") == 0;
    assert_int_equal(jint(c, "n_blocks"), nb);
    size_t pk = (size_t)((n + 1) / 2);

    float *x = malloc(sizeof(float) * (size_t)n);
    uint16_t *xb = NULL;
    if (bf16) {
      xb = golden_sized(jstr(c, "input"), 2 * (size_t)n);
      for (int64_t i = 0; i < n; i++) x[i] = qtu_bf16_to_f32(xb[i]);
    } else {
      free(x);
      x = golden_sized(jstr(c, "input"), 4 * (size_t)n);
    }
    float *qmap = golden_sized(jstr(c, "quant_map"), 64);
    /* Numerically equal; FP4 index 8 is +0 in bnb's quant_map (the Python
     * literal -0 is the int 0) but -0 in the CUDA kernel (lut[0] * -1). */
    for (int k = 0; k < 16; k++) assert_true(qmap[k] == qt_quant_4bit_table(t)[k]);
    uint8_t *gpacked = golden_sized(jstr(c, "packed"), pk);

    /* Quantize with the reference and the fast path. */
    uint8_t *packed = malloc(pk + 1), *packed2 = malloc(pk + 1);
    float *absmax = malloc(sizeof(float) * (size_t)nb), *absmax2 = malloc(sizeof(float) * (size_t)nb);
    qt_quant_4bit_quantize_ref(t, x, n, bs, packed, absmax);
    if (bf16) qt_quant_4bit_quantize_bf16(t, xb, n, bs, packed2, absmax2, 2);
    else qt_quant_4bit_quantize(t, x, n, bs, packed2, absmax2, 2);
    assert_memory_equal(packed, packed2, pk);
    assert_memory_equal(absmax, absmax2, sizeof(float) * (size_t)nb);

    /* absmax (used for the codes): plain -> stored; DQ -> via nested values. */
    float *gabsmax; /* the absmax bnb dequantizes with */
    if (!dq) {
      gabsmax = golden_sized(jstr(c, "absmax"), 4 * (size_t)nb);
      assert_memory_equal(gabsmax, absmax, 4 * (size_t)nb);
    } else {
      n_dq++;
      int64_t nnb = (nb + 255) / 256;
      assert_int_equal(jint(c, "nested_blocksize"), 256);
      float offset = hexf(jstr(c, "offset_hex"));
      offset_diff += qtu_f32_bits(offset) != qtu_f32_bits(qt_quant_absmax_mean(absmax, nb));
      float *ncode = golden_sized(jstr(c, "nested_code"), 1024);
      assert_memory_equal(ncode, smap, 1024);
      uint8_t *gq = golden_sized(jstr(c, "absmax_codes"), (size_t)nb);
      float *gnested = golden_sized(jstr(c, "nested_absmax"), 4 * (size_t)nnb);
      uint8_t *q = malloc((size_t)nb);
      float *nested = malloc(4 * (size_t)nnb);
      qt_quant_dq_compress_ref(smap, absmax, nb, offset, q, nested);
      assert_memory_equal(nested, gnested, 4 * (size_t)nnb);
      for (int64_t b = 0; b < nb; b++) {
        tot_q8++;
        if (q[b] == gq[b]) continue;
        tot_q8_diff++;
        uint8_t want = cpu8_code(lut, nested[b / 256], absmax[b] - offset);
        if (want != gq[b])
          fail_msg("%s: nested code %lld: mine %u, bnb %u, bnb-CPU emulation %u", jstr(c, "name"),
                   (long long)b, q[b], gq[b], want);
      }
      /* From scratch (own offset = double mean): how much of bnb's output differs. */
      float own = qt_quant_absmax_mean(absmax, nb);
      uint8_t *q_own = malloc((size_t)nb);
      float *n_own = malloc(4 * (size_t)nnb), *am_own = malloc(4 * (size_t)nb);
      qt_quant_dq_compress_ref(smap, absmax, nb, own, q_own, n_own);
      qt_quant_dq_decompress_ref(smap, q_own, n_own, own, nb, am_own);
      for (int64_t b = 0; b < nb; b++) scratch_code_diff += q_own[b] != gq[b];
      for (int64_t b = 0; b < nnb; b++) scratch_nested_diff += qtu_f32_bits(n_own[b]) != qtu_f32_bits(gnested[b]);
      scratch_nested_tot += nnb;
      free(q_own); free(n_own); free(am_own);

      /* Dequantized absmax from bnb's codes: bit-exact. */
      gabsmax = malloc(4 * (size_t)nb);
      qt_quant_dq_decompress_ref(smap, gq, gnested, offset, nb, gabsmax);
      float *gam = golden_sized(jstr(c, "absmax_dequant"), 4 * (size_t)nb);
      assert_memory_equal(gam, gabsmax, 4 * (size_t)nb);

      /* The same through qt_quant_weight (the loading path). */
      qt_quant_weight w = {0};
      w.type = t; w.blocksize = bs; w.n = n; w.nblocks = nb; w.nested = true;
      w.nested_blocksize = 256; w.offset = offset;
      w.packed = gpacked; w.qabsmax = gq; w.nested_absmax = gnested;
      memcpy(w.nested_code, ncode, 1024);
      float *am2 = malloc(4 * (size_t)nb);
      qt_quant_weight_absmax(&w, am2);
      assert_memory_equal(am2, gam, 4 * (size_t)nb);
      free(am2);
      free(gam);
      free(ncode);
      free(gq);
      free(gnested);
      free(q);
      free(nested);
    }

    /* Codes: equal, or the bnb-CPU rule explains the difference. */
    for (int64_t i = 0; i < 2 * (int64_t)pk; i++) {
      uint8_t mine = (i & 1) ? packed[i / 2] & 15 : packed[i / 2] >> 4;
      uint8_t gold = (i & 1) ? gpacked[i / 2] & 15 : gpacked[i / 2] >> 4;
      tot_codes++;
      if (mine == gold) continue;
      tot_code_diff++;
      if (absmax[i / bs] == 0.0f) why_zero_block++;
      else if (qt_quant_4bit_table(t)[mine] == qt_quant_4bit_table(t)[gold]) why_signed_zero++;
      else why_other++;
      if (!cpu4_explains(t, x, n, bs, absmax, i, gold))
        fail_msg("%s: element %lld: mine %u, bnb %u, not the bnb-CPU rule either (x=%a am=%a)",
                 jstr(c, "name"), (long long)i, mine, gold, i < n ? x[i] : 0.0, absmax[i / bs]);
    }

    /* Dequantization of bnb's codes: bit-exact, ref and fast. */
    if (bf16) {
      uint16_t *gdeq = golden_sized(jstr(c, "dequant"), 2 * (size_t)n);
      uint16_t *o = malloc(2 * (size_t)n), *o2 = malloc(2 * (size_t)n);
      qt_quant_4bit_dequantize_bf16_ref(t, gpacked, gabsmax, n, bs, o);
      qt_quant_4bit_dequantize_bf16(t, gpacked, gabsmax, n, bs, o2, 2);
      assert_memory_equal(o, o2, 2 * (size_t)n);
      for (int64_t i = 0; i < n; i++)
        if (o[i] != gdeq[i]) {
          assert_true(zero_sign_explained(t, gpacked, i, (uint32_t)o[i] << 16,
                                          (uint32_t)gdeq[i] << 16));
          tot_zero_sign++;
        }
      free(gdeq); free(o); free(o2);
    } else {
      float *gdeq = golden_sized(jstr(c, "dequant"), 4 * (size_t)n);
      float *o = malloc(4 * (size_t)n), *o2 = malloc(4 * (size_t)n);
      qt_quant_4bit_dequantize_ref(t, gpacked, gabsmax, n, bs, o);
      qt_quant_4bit_dequantize(t, gpacked, gabsmax, n, bs, o2, 2);
      assert_memory_equal(o, o2, 4 * (size_t)n);
      for (int64_t i = 0; i < n; i++)
        if (qtu_f32_bits(o[i]) != qtu_f32_bits(gdeq[i])) {
          assert_true(zero_sign_explained(t, gpacked, i, qtu_f32_bits(o[i]),
                                          qtu_f32_bits(gdeq[i])));
          tot_zero_sign++;
        }
      free(gdeq); free(o); free(o2);
    }
    free(x); free(xb); free(qmap); free(gpacked); free(packed); free(packed2);
    free(absmax); free(absmax2); free(gabsmax);
  }
  printf("4-bit: %ld/%ld codes differ from bnb-CPU, all explained by its backend rule: %ld in "
         "all-zero blocks (CUDA: NaN -> code 0), %ld FP4 -0/+0 codes of equal value, %ld other "
         "(partial-block division / rounding)\n",
         tot_code_diff, tot_codes, why_zero_block, why_signed_zero, why_other);
  printf("4-bit dequant: bit-exact except %ld FP4 code-8 elements: -0 here (CUDA lut[0] * -1), "
         "+0 in bnb's torch backend (quant_map[8] = +0)\n", tot_zero_sign);
  printf("double quant: %ld/%ld nested codes differ (bnb-CPU 65536-bin lookup), all explained; "
         "own offset (double mean) != bnb offset in %ld/%ld cases\n",
         tot_q8_diff, tot_q8, offset_diff, n_dq);
  printf("from scratch (own offset): %ld/%ld nested codes and %ld/%ld nested absmax values differ "
         "from bnb\n", scratch_code_diff, tot_q8, scratch_nested_diff, scratch_nested_tot);
  free(lut);
}

static void test_eight_bit_cases(void **state) {
  (void)state;
  const cJSON *cases = cJSON_GetObjectItemCaseSensitive(manifest, "eight_bit");
  assert_true(cJSON_GetArraySize(cases) >= 3);
  const cJSON *c;
  cpu8_lut *lut = malloc(sizeof(*lut));
  long tot = 0, diff = 0;
  cJSON_ArrayForEach(c, cases) {
    bool is_signed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "signed"));
    int64_t bs = jint(c, "blocksize"), n = jint(c, "n"), nb = (n + bs - 1) / bs;
    float code[256];
    qt_quant_dynamic_map(is_signed, code);
    cpu8_build(code, lut);
    float *x = golden_sized(jstr(c, "input"), 4 * (size_t)n);
    uint8_t *gq = golden_sized(jstr(c, "codes"), (size_t)n);
    float *gam = golden_sized(jstr(c, "absmax"), 4 * (size_t)nb);
    float *gdeq = golden_sized(jstr(c, "dequant"), 4 * (size_t)n);
    uint8_t *q = malloc((size_t)n), *q2 = malloc((size_t)n);
    float *am = malloc(4 * (size_t)nb), *am2 = malloc(4 * (size_t)nb);
    qt_quant_8bit_quantize_ref(code, x, n, bs, q, am);
    qt_quant_8bit_quantize(code, x, n, bs, q2, am2, 2);
    assert_memory_equal(q, q2, (size_t)n);
    assert_memory_equal(am, am2, 4 * (size_t)nb);
    assert_memory_equal(am, gam, 4 * (size_t)nb);
    for (int64_t i = 0; i < n; i++) {
      tot++;
      if (q[i] == gq[i]) continue;
      diff++;
      uint8_t want = cpu8_code(lut, am[i / bs], x[i]);
      if (want != gq[i])
        fail_msg("%s: element %lld: mine %u, bnb %u, bnb-CPU emulation %u", jstr(c, "name"),
                 (long long)i, q[i], gq[i], want);
    }
    float *o = malloc(4 * (size_t)n), *o2 = malloc(4 * (size_t)n);
    qt_quant_8bit_dequantize_ref(code, gq, gam, n, bs, o);
    qt_quant_8bit_dequantize(code, gq, gam, n, bs, o2, 2);
    assert_memory_equal(o, gdeq, 4 * (size_t)n);
    assert_memory_equal(o2, gdeq, 4 * (size_t)n);
    free(x); free(gq); free(gam); free(gdeq); free(q); free(q2); free(am); free(am2);
    free(o); free(o2);
  }
  printf("8-bit blockwise: %ld/%ld codes differ from bnb-CPU (65536-bin lookup), all explained\n",
         diff, tot);
  free(lut);
}

/* The transformers-saved checkpoint: load every quantized Linear through
 * safetensors and compare the bf16 dequantization with bitsandbytes'. */
static void test_llama_checkpoint(void **state) {
  (void)state;
  char path[1024];
  snprintf(path, sizeof(path), "%s/golden/quant/llama_nf4/model.safetensors", QLORA_TEST_DIR);
  qt_st_model m;
  qt_status st = qt_st_model_open(path, &m);
  if (st != QT_OK) fail_msg("%s", qt_error_message());
  snprintf(path, sizeof(path), "%s/golden/quant/llama_nf4/dequant.safetensors", QLORA_TEST_DIR);
  qt_st_file deq;
  st = qt_st_open(path, &deq);
  if (st != QT_OK) fail_msg("%s", qt_error_message());
  const cJSON *mods = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(manifest, "llama_nf4"), "modules");
  assert_true(cJSON_GetArraySize(mods) == 14);
  const cJSON *mod;
  cJSON_ArrayForEach(mod, mods) {
    qt_quant_weight w;
    st = qt_quant_weight_load_bnb(&m, mod->valuestring, &w);
    if (st != QT_OK) fail_msg("%s", qt_error_message());
    assert_true(w.nested && w.type == QT_QUANT_NF4 && w.blocksize == 64 && w.dtype == QT_BF16);
    char name[512];
    snprintf(name, sizeof(name), "%s.weight", mod->valuestring);
    const qt_st_entry *e = qt_st_find(&deq, name);
    assert_non_null(e);
    assert_int_equal(e->dtype, QT_BF16);
    assert_int_equal(qt_st_entry_numel(e), w.n);
    assert_int_equal(e->ndim, w.ndim);
    for (int i = 0; i < w.ndim; i++) assert_int_equal(e->shape[i], w.shape[i]);
    uint16_t *o = malloc(2 * (size_t)w.n);
    assert_int_equal(qt_quant_weight_dequantize_bf16(&w, o, 2), QT_OK);
    assert_memory_equal(o, e->data, 2 * (size_t)w.n);

    /* quant_storage other than uint8: the same bytes under a BF16 header. */
    char wname[512];
    snprintf(wname, sizeof(wname), "%s.weight", mod->valuestring);
    const qt_st_entry *we = qt_st_model_find(&m, wname);
    if ((we->end - we->begin) % 2 == 0) {
      qt_st_entry as_bf16 = *we;
      as_bf16.dtype = QT_BF16;
      as_bf16.ndim = 2;
      as_bf16.shape[0] = (int64_t)(we->end - we->begin) / 2;
      as_bf16.shape[1] = 1;
      snprintf(wname, sizeof(wname), "%s.weight.", mod->valuestring);
      char k[5][600];
      const char *sfx[5] = {"absmax", "quant_map", "nested_absmax", "nested_quant_map",
                            "quant_state.bitsandbytes__nf4"};
      for (int i = 0; i < 5; i++) snprintf(k[i], sizeof(k[i]), "%s%s", wname, sfx[i]);
      qt_quant_weight w2;
      st = qt_quant_weight_from_bnb(mod->valuestring, &as_bf16, qt_st_model_find(&m, k[0]),
                                    qt_st_model_find(&m, k[1]), qt_st_model_find(&m, k[2]),
                                    qt_st_model_find(&m, k[3]), qt_st_model_find(&m, k[4]), &w2);
      if (st != QT_OK) fail_msg("%s", qt_error_message());
      uint16_t *o2 = malloc(2 * (size_t)w.n);
      assert_int_equal(qt_quant_weight_dequantize_bf16(&w2, o2, 1), QT_OK);
      assert_memory_equal(o2, e->data, 2 * (size_t)w.n);
      free(o2);
      qt_quant_weight_free(&w2);
    }
    free(o);
    qt_quant_weight_free(&w);
  }
  /* Not quantized: lm_head and embeddings stay plain. */
  qt_quant_weight w;
  st = qt_quant_weight_load_bnb(&m, "lm_head", &w);
  assert_int_equal(st, QT_ERR_FORMAT);
  qt_st_close(&deq);
  qt_st_model_close(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dynamic_maps),
      cmocka_unit_test(test_four_bit_cases),
      cmocka_unit_test(test_eight_bit_cases),
      cmocka_unit_test(test_llama_checkpoint),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
