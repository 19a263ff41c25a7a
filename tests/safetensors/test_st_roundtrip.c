/* Writer tests (reliability-anchors.md 7, R3):
 * - property test: random tensors (all 22 dtypes, ranks 0-4, zero-sized ones,
 *   random names with escapes and non-ASCII, random __metadata__) -> writer ->
 *   reader, bit-exact; layout order and 8-byte header padding checked
 *   independently; file writer == in-memory serializer;
 * - byte identity with the reference writer: files written by the Python
 *   safetensors library and by transformers are re-serialized by the C writer
 *   and must come out identical, byte for byte;
 * - golden/safetensors/c_written.safetensors: the C writer's output for a fixed
 *   input (tools/reference/check_c_writer.py verifies that file with the
 *   Python reader; regenerate with QT_ST_WRITE_GOLDEN=1);
 * - argument errors and atomic replacement under a live mapping.
 * QT_ST_DUMP_DIR=dir writes every random case (+ a manifest) for
 * check_c_writer.py --dump dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/fs.h"
#include "common/safetensors.h"
#include "st_golden.h"

/* splitmix64 (Steele, Lea, Flood 2014): a small seeded generator for test inputs. */
static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static unsigned rng_below(uint64_t *s, unsigned n) { return (unsigned)(rng_next(s) % n); }

/* Layout rank, restated from the reference Rust enum order (tensor.rs Dtype). */
static int ref_rank(qt_dtype t) {
  static const char *order[] = {"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
                                "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32",
                                "U32", "F32", "C64", "F64", "I64", "U64"};
  for (int k = 0; k < 22; k++) {
    if (strcmp(order[k], qt_dtype_name(t)) == 0) return k;
  }
  fail_msg("dtype %s missing from the reference order", qt_dtype_name(t));
  return -1;
}

enum { MAXT = 9 };

typedef struct {
  size_t n;
  qt_st_write_tensor t[MAXT];
  char names[MAXT][64];
  uint8_t *data[MAXT];
  size_t nbytes[MAXT];
  size_t n_meta;
  char mk[3][32], mv[3][32];
  const char *mkp[3], *mvp[3];
} rcase;

static void rand_name(uint64_t *s, char *out, size_t k_index) {
  /* pieces: ASCII, escapes that the writer must encode, 2- and 4-byte UTF-8 */
  static const char *pieces[] = {"a", "b", "Z", ".", "_", "0", "9", "/", "\"", "\\", "\n", "\t", "\x01", "\x1f",
                                 " ", "\xc3\xa9", "\xf0\x9f\x98\x80", "layers", "weight", "__metadata_"};
  size_t o = (size_t)snprintf(out, 64, "%zu", k_index); /* unique prefix */
  unsigned n = rng_below(s, 5);
  for (unsigned k = 0; k < n; k++) {
    const char *p = pieces[rng_below(s, sizeof pieces / sizeof pieces[0])];
    size_t l = strlen(p);
    if (o + l >= 60) break;
    memcpy(out + o, p, l);
    o += l;
  }
  out[o] = '\0';
  /* half of the time drop the prefix to exercise sorting of arbitrary names */
  if (rng_below(s, 2) && o > 1 && out[1] != '\0') memmove(out, out + 1, o);
}

static void make_case(uint64_t *s, rcase *c) {
  memset(c, 0, sizeof *c);
  c->n = rng_below(s, MAXT);
  for (size_t k = 0; k < c->n; k++) {
    qt_st_write_tensor *t = &c->t[k];
    rand_name(s, c->names[k], k);
    /* the unique numeric prefix may have been dropped: re-add if duplicate */
    for (size_t j = 0; j < k; j++) {
      if (strcmp(c->names[j], c->names[k]) == 0) snprintf(c->names[k], 64, "dup%zu", k);
    }
    if (strcmp(c->names[k], "__metadata__") == 0) snprintf(c->names[k], 64, "meta%zu", k);
    t->name = c->names[k];
    t->dtype = (qt_dtype)rng_below(s, QT_DTYPE_COUNT);
    t->ndim = (int)rng_below(s, 5);
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      t->shape[d] = rng_below(s, 10) == 0 ? 0 : (int64_t)rng_below(s, 5) + 1;
      numel *= t->shape[d];
    }
    unsigned bits = qt_dtype_bits(t->dtype);
    if ((numel * bits) % 8 != 0) { /* sub-byte dtypes need whole bytes: make numel a multiple of 4 */
      if (t->ndim == 0) t->ndim = 1;
      t->shape[t->ndim - 1] = 4 * ((int64_t)rng_below(s, 3) + 1);
      numel = 1;
      for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
    }
    c->nbytes[k] = (size_t)(numel * bits / 8);
    c->data[k] = malloc(c->nbytes[k] + 1);
    for (size_t b = 0; b < c->nbytes[k]; b++) c->data[k][b] = (uint8_t)rng_next(s);
    t->data = c->nbytes[k] ? c->data[k] : (rng_below(s, 2) ? NULL : c->data[k]);
  }
  c->n_meta = rng_below(s, 4);
  for (size_t k = 0; k < c->n_meta; k++) {
    snprintf(c->mk[k], 32, "key%zu%s", k, rng_below(s, 2) ? "\"\xc3\xa9" : "");
    snprintf(c->mv[k], 32, "v%llu\n", (unsigned long long)(rng_next(s) % 1000));
    c->mkp[k] = c->mk[k];
    c->mvp[k] = c->mv[k];
  }
}

static void free_case(rcase *c) {
  for (size_t k = 0; k < c->n; k++) free(c->data[k]);
}

static void check_parsed(const rcase *c, const qt_st_file *f) {
  assert_int_equal(f->n_tensors, c->n);
  for (size_t k = 0; k < c->n; k++) {
    const qt_st_entry *e = qt_st_find(f, c->t[k].name);
    assert_non_null(e);
    assert_int_equal(e->dtype, c->t[k].dtype);
    assert_int_equal(e->ndim, c->t[k].ndim);
    for (int d = 0; d < e->ndim; d++) assert_int_equal(e->shape[d], c->t[k].shape[d]);
    assert_int_equal(e->end - e->begin, c->nbytes[k]);
    if (c->nbytes[k]) assert_memory_equal(e->data, c->data[k], c->nbytes[k]);
  }
  /* Layout: offsets ascending in entry order, dtype rank descending, then name. */
  for (size_t k = 1; k < f->n_tensors; k++) {
    const qt_st_entry *a = &f->tensors[k - 1], *b = &f->tensors[k];
    int ra = ref_rank(a->dtype), rb = ref_rank(b->dtype);
    if (a->begin == b->begin && a->end == b->end) continue; /* two empty tensors: order not observable here */
    assert_true(ra > rb || (ra == rb && strcmp(a->name, b->name) < 0));
  }
  assert_int_equal(f->n_meta, c->n_meta);
  for (size_t k = 0; k < c->n_meta; k++) {
    const char *v = qt_st_meta(f, c->mk[k]);
    assert_non_null(v);
    assert_string_equal(v, c->mv[k]);
  }
  assert_int_equal((8 + f->header_len) % 8, 0);
}

static void dump_case(const char *dir, int idx, const rcase *c, const uint8_t *buf, size_t len) {
  char p[4096];
  snprintf(p, sizeof p, "%s/case_%03d.safetensors", dir, idx);
  if (qt_fs_write_atomic(p, buf, len) != QT_OK) fail_msg("%s", qt_error_message());
  /* manifest: sha256 per tensor, in input order, names as hex (they hold controls) */
  char m[8192];
  size_t o = (size_t)snprintf(m, sizeof m, "{\"tensors\": [");
  for (size_t k = 0; k < c->n; k++) {
    char hex[65], nh[129];
    stg_sha_hex(c->data[k], c->nbytes[k], hex);
    size_t nl = strlen(c->t[k].name);
    for (size_t b = 0; b < nl; b++) snprintf(nh + 2 * b, 3, "%02x", (unsigned char)c->t[k].name[b]);
    nh[2 * nl] = '\0';
    o += (size_t)snprintf(m + o, sizeof m - o, "%s{\"name_hex\": \"%s\", \"dtype\": \"%s\", \"shape\": [", k ? ", " : "",
                          nh, qt_dtype_name(c->t[k].dtype));
    for (int d = 0; d < c->t[k].ndim; d++) o += (size_t)snprintf(m + o, sizeof m - o, "%s%lld", d ? ", " : "",
                                                                 (long long)c->t[k].shape[d]);
    o += (size_t)snprintf(m + o, sizeof m - o, "], \"sha256\": \"%s\"}", hex);
  }
  o += (size_t)snprintf(m + o, sizeof m - o, "], \"n_meta\": %zu}\n", c->n_meta);
  snprintf(p, sizeof p, "%s/case_%03d.json", dir, idx);
  if (qt_fs_write_atomic(p, m, o) != QT_OK) fail_msg("%s", qt_error_message());
}

static void test_property_roundtrip(void **state) {
  (void)state;
  const char *dump = getenv("QT_ST_DUMP_DIR");
  char *dir = stg_tmpdir("st_roundtrip");
  uint64_t seed = 0x5eed5afe7e450001ull;
  int n_cases = 400, n_sub = 0, n_zero = 0, n_rank0 = 0;
  int seen_dtype[QT_DTYPE_COUNT] = {0};
  for (int i = 0; i < n_cases; i++) {
    rcase c;
    make_case(&seed, &c);
    uint8_t *buf;
    size_t len;
    qt_status s = qt_st_serialize(c.t, c.n, c.mkp, c.mvp, c.n_meta, &buf, &len);
    if (s != QT_OK) fail_msg("case %d: %s", i, qt_error_message());
    qt_st_file f;
    s = qt_st_parse(buf, len, "roundtrip", &f);
    if (s != QT_OK) fail_msg("case %d: %s", i, qt_error_message());
    check_parsed(&c, &f);
    qt_st_close(&f);
    for (size_t k = 0; k < c.n; k++) {
      seen_dtype[c.t[k].dtype]++;
      n_sub += qt_dtype_bits(c.t[k].dtype) < 8;
      n_zero += c.nbytes[k] == 0 && c.t[k].ndim > 0;
      n_rank0 += c.t[k].ndim == 0;
    }
    if (i % 20 == 0) { /* the file writer produces the same bytes, atomically */
      char p[4096];
      snprintf(p, sizeof p, "%s/case.safetensors", dir);
      if (qt_st_write(p, c.t, c.n, c.mkp, c.mvp, c.n_meta) != QT_OK) fail_msg("%s", qt_error_message());
      size_t flen;
      uint8_t *fb = stg_read(p, &flen);
      assert_int_equal(flen, len);
      assert_memory_equal(fb, buf, len);
      free(fb);
      assert_int_equal(qt_st_open(p, &f), QT_OK);
      check_parsed(&c, &f);
      qt_st_close(&f);
    }
    if (dump) dump_case(dump, i, &c, buf, len);
    free(buf);
    free_case(&c);
  }
  for (int d = 0; d < QT_DTYPE_COUNT; d++) assert_true(seen_dtype[d] > 0);
  assert_true(n_sub > 0 && n_zero > 0 && n_rank0 > 0);
  print_message("%d random cases: %d sub-byte, %d zero-sized, %d rank-0 tensors\n", n_cases, n_sub, n_zero, n_rank0);
  stg_rmtree(dir);
}

/* Re-serializes a file read by the C reader and compares it byte for byte. */
static void reserialize_identical(const char *path) {
  qt_st_file f;
  if (qt_st_open(path, &f) != QT_OK) fail_msg("%s", qt_error_message());
  qt_st_write_tensor *w = calloc(f.n_tensors + 1, sizeof *w);
  for (size_t k = 0; k < f.n_tensors; k++) {
    w[k].name = f.tensors[k].name;
    w[k].dtype = f.tensors[k].dtype;
    w[k].ndim = f.tensors[k].ndim;
    memcpy(w[k].shape, f.tensors[k].shape, sizeof w[k].shape);
    w[k].data = f.tensors[k].data;
  }
  uint8_t *buf;
  size_t len;
  assert_int_equal(qt_st_serialize(w, f.n_tensors, (const char *const *)f.meta_keys,
                                   (const char *const *)f.meta_vals, f.n_meta, &buf, &len), QT_OK);
  if (len != f.map_len || memcmp(buf, f.map, len) != 0) {
    fail_msg("%s: C writer output (%zu bytes) differs from the reference writer's (%zu bytes)", path, len, f.map_len);
  }
  free(buf);
  free(w);
  qt_st_close(&f);
}

static void test_identical_to_reference_writer(void **state) {
  (void)state;
  const char *files[] = {"py_all_dtypes.safetensors", "py_floats.safetensors", "py_empty.safetensors"};
  for (int k = 0; k < 3; k++) {
    char *p = stg_path(files[k]);
    reserialize_identical(p);
    free(p);
  }
  cJSON *meta = stg_meta("tiny_llama");
  for (const cJSON *s = cJSON_GetObjectItemCaseSensitive(meta, "shards")->child; s; s = s->next) {
    char rel[512];
    snprintf(rel, sizeof rel, "tiny_llama/%s", s->valuestring);
    char *p = stg_path(rel);
    reserialize_identical(p);
    free(p);
  }
  cJSON_Delete(meta);
}

/* The fixed input of c_written.safetensors; tools/reference/check_c_writer.py
 * restates it: tensor j is named "tJJ_<...>" and byte k of its data is
 * (131 j + 29 k + 7) mod 256. Only dtypes the Python writer accepts (no F6),
 * so that the script can also re-serialize it with the reference writer. */
static void test_c_written_golden(void **state) {
  (void)state;
  static const struct {
    const char *name;
    qt_dtype dtype;
    int ndim;
    int64_t shape[4];
  } spec[] = {
      {"t00_bool", QT_BOOL, 1, {5}},          {"t01_u8", QT_U8, 2, {2, 3}},
      {"t02_i8", QT_I8, 0, {0}},              {"t03_f8e5m2", QT_F8_E5M2, 1, {3}},
      {"t04_f8e4m3", QT_F8_E4M3, 1, {4}},     {"t05_f8e8m0", QT_F8_E8M0, 1, {2}},
      {"t06_f8e4m3fnuz", QT_F8_E4M3FNUZ, 1, {1}}, {"t07_f8e5m2fnuz", QT_F8_E5M2FNUZ, 2, {1, 2}},
      {"t08_i16", QT_I16, 1, {3}},            {"t09_u16", QT_U16, 3, {1, 2, 1}},
      {"t10_f16", QT_F16, 2, {2, 2}},         {"t11_bf16", QT_BF16, 1, {0}},
      {"t12_i32", QT_I32, 1, {2}},            {"t13_u32", QT_U32, 0, {0}},
      {"t14_f32", QT_F32, 4, {1, 2, 1, 2}},   {"t15_c64", QT_C64, 1, {2}},
      {"t16_f64", QT_F64, 1, {1}},            {"t17_i64", QT_I64, 2, {0, 3}},
      {"t18_u64", QT_U64, 1, {2}},            {"t19_f4", QT_F4, 2, {2, 4}},
      {"t20_esc\"\\/\n\x01\xc3\xa9", QT_F32, 1, {1}}, {"t21_A", QT_F32, 1, {1}},
      {"t22_a", QT_F32, 1, {1}},
  };
  enum { NS = sizeof spec / sizeof spec[0] };
  qt_st_write_tensor w[NS];
  uint8_t *data[NS];
  for (int j = 0; j < NS; j++) {
    memset(&w[j], 0, sizeof w[j]);
    w[j].name = spec[j].name;
    w[j].dtype = spec[j].dtype;
    w[j].ndim = spec[j].ndim;
    int64_t numel = 1;
    for (int d = 0; d < spec[j].ndim; d++) numel *= (w[j].shape[d] = spec[j].shape[d]);
    size_t nb = (size_t)(numel * qt_dtype_bits(spec[j].dtype) / 8);
    data[j] = malloc(nb + 1);
    for (size_t k = 0; k < nb; k++) data[j][k] = (uint8_t)((131 * j + 29 * (int)k + 7) & 0xff);
    w[j].data = data[j];
  }
  const char *mk[1] = {"format"}, *mv[1] = {"pt"};
  char *golden = stg_path("c_written.safetensors");
  if (getenv("QT_ST_WRITE_GOLDEN")) {
    if (qt_st_write(golden, w, NS, mk, mv, 1) != QT_OK) fail_msg("%s", qt_error_message());
  }
  uint8_t *buf;
  size_t len;
  assert_int_equal(qt_st_serialize(w, NS, mk, mv, 1, &buf, &len), QT_OK);
  size_t glen;
  uint8_t *g = stg_read(golden, &glen);
  if (glen != len || memcmp(g, buf, len) != 0) fail_msg("C writer output differs from %s", golden);
  free(g);
  free(buf);
  free(golden);
  for (int j = 0; j < NS; j++) free(data[j]);
}

static void expect_invalid(const qt_st_write_tensor *t, size_t n, const char *const *mk, const char *const *mv,
                           size_t nm, const char *expect) {
  char *dir = stg_tmpdir("st_invalid");
  char p[4096];
  snprintf(p, sizeof p, "%s/out.safetensors", dir);
  qt_status s = qt_st_write(p, t, n, mk, mv, nm);
  if (s != QT_ERR_INVALID || !strstr(qt_error_message(), expect)) {
    fail_msg("got %s \"%s\", want invalid \"%s\"", qt_status_name(s), qt_error_message(), expect);
  }
  assert_non_null(strstr(qt_error_message(), p)); /* names the file */
  struct stat st;
  assert_int_not_equal(stat(p, &st), 0); /* nothing written */
  stg_rmtree(dir);
}

static void test_writer_errors(void **state) {
  (void)state;
  uint8_t d[8] = {0};
  qt_st_write_tensor t[2];
  memset(t, 0, sizeof t);
  t[0] = (qt_st_write_tensor){.name = "x", .dtype = QT_F32, .ndim = 1, .shape = {1}, .data = d};
  t[1] = (qt_st_write_tensor){.name = "x", .dtype = QT_U8, .ndim = 1, .shape = {1}, .data = d};
  expect_invalid(t, 2, NULL, NULL, 0, "duplicate tensor name 'x'");
  t[1] = (qt_st_write_tensor){.name = "y", .dtype = QT_F4, .ndim = 1, .shape = {3}, .data = d};
  expect_invalid(t, 2, NULL, NULL, 0, "do not fill whole bytes");
  t[1] = (qt_st_write_tensor){.name = "__metadata__", .dtype = QT_U8, .ndim = 1, .shape = {1}, .data = d};
  expect_invalid(t, 2, NULL, NULL, 0, "reserved name");
  t[1] = (qt_st_write_tensor){.name = "bad\xff", .dtype = QT_U8, .ndim = 1, .shape = {1}, .data = d};
  expect_invalid(t, 2, NULL, NULL, 0, "non-UTF-8 name");
  t[1] = (qt_st_write_tensor){.name = "y", .dtype = QT_U8, .ndim = 1, .shape = {4}, .data = NULL};
  expect_invalid(t, 2, NULL, NULL, 0, "has no data");
  t[1] = (qt_st_write_tensor){.name = "y", .dtype = QT_U8, .ndim = 1, .shape = {-1}, .data = d};
  expect_invalid(t, 2, NULL, NULL, 0, "negative or overflowing shape");
  const char *mk[2] = {"k", "k"}, *mv[2] = {"1", "2"};
  expect_invalid(t, 1, mk, mv, 2, "duplicate metadata key 'k'");
  /* A missing directory is an I/O error naming the temporary file. */
  qt_status s = qt_st_write("/nonexistent-dir/x.safetensors", t, 1, NULL, NULL, 0);
  assert_int_equal(s, QT_ERR_IO);
  assert_non_null(strstr(qt_error_message(), "/nonexistent-dir/x.safetensors.tmp."));
}

/* Replacing a file that is mapped by a reader must not change what the reader
 * sees (the reference's #762: truncating a mapped file zero-filled it). */
static void test_replace_while_mapped(void **state) {
  (void)state;
  char *dir = stg_tmpdir("st_replace");
  char p[4096];
  snprintf(p, sizeof p, "%s/m.safetensors", dir);
  uint8_t a[16], b[16];
  for (int k = 0; k < 16; k++) {
    a[k] = (uint8_t)k;
    b[k] = (uint8_t)(255 - k);
  }
  qt_st_write_tensor t = {.name = "w", .dtype = QT_F32, .ndim = 1, .shape = {4}, .data = a};
  assert_int_equal(qt_st_write(p, &t, 1, NULL, NULL, 0), QT_OK);
  qt_st_file f;
  assert_int_equal(qt_st_open(p, &f), QT_OK);
  t.data = b;
  assert_int_equal(qt_st_write(p, &t, 1, NULL, NULL, 0), QT_OK);
  assert_memory_equal(qt_st_find(&f, "w")->data, a, 16);
  qt_st_file g;
  assert_int_equal(qt_st_open(p, &g), QT_OK);
  assert_memory_equal(qt_st_find(&g, "w")->data, b, 16);
  qt_st_close(&g);
  qt_st_close(&f);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
  assert_int_not_equal(access(tmp, F_OK), 0); /* no temporary left behind */
  stg_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_property_roundtrip),   cmocka_unit_test(test_identical_to_reference_writer),
      cmocka_unit_test(test_c_written_golden),     cmocka_unit_test(test_writer_errors),
      cmocka_unit_test(test_replace_while_mapped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
