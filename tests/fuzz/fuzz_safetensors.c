/* libFuzzer harness for the safetensors header parser (reliability-anchors.md
 * 6, targets 1 and 7). Any input: qt_st_parse must not crash, leak or read out
 * of bounds (ASan+UBSan). Accepted input: every tensor lies inside the buffer,
 * lookups find each name, and the writer round-trips it: serialize -> parse
 * gives the same names, dtypes, shapes, bytes and metadata, and serializing
 * that again gives identical bytes. A violated property aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/safetensors.h"

#define CHECK(c)                                                        \
  do {                                                                  \
    if (!(c)) {                                                         \
      fprintf(stderr, "fuzz_safetensors: property failed: %s\n", #c);   \
      abort();                                                          \
    }                                                                   \
  } while (0)

static qt_st_write_tensor *to_write(const qt_st_file *f) {
  qt_st_write_tensor *w = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *w);
  CHECK(w != NULL);
  for (size_t k = 0; k < f->n_tensors; k++) {
    const qt_st_entry *e = &f->tensors[k];
    w[k].name = e->name;
    w[k].dtype = e->dtype;
    w[k].ndim = e->ndim;
    memcpy(w[k].shape, e->shape, sizeof e->shape);
    w[k].data = e->data;
  }
  return w;
}

static void same_file(const qt_st_file *a, const qt_st_file *b) {
  CHECK(a->n_tensors == b->n_tensors && a->n_meta == b->n_meta);
  for (size_t k = 0; k < a->n_tensors; k++) {
    const qt_st_entry *x = &a->tensors[k], *y = qt_st_find(b, x->name);
    CHECK(y != NULL && x->dtype == y->dtype && x->ndim == y->ndim);
    CHECK(memcmp(x->shape, y->shape, sizeof x->shape) == 0);
    CHECK(x->end - x->begin == y->end - y->begin);
    CHECK(memcmp(x->data, y->data, (size_t)(x->end - x->begin)) == 0);
  }
  for (size_t k = 0; k < a->n_meta; k++) {
    const char *v = qt_st_meta(b, a->meta_keys[k]);
    CHECK(v != NULL && strcmp(v, a->meta_vals[k]) == 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  qt_st_file f;
  if (qt_st_parse(data, size, "fuzz", &f) != QT_OK) {
    CHECK(f.tensors == NULL && f.n_tensors == 0);
    return 0;
  }
  uint64_t sum = 0;
  for (size_t k = 0; k < f.n_tensors; k++) {
    const qt_st_entry *e = &f.tensors[k];
    CHECK(e->data >= data && e->end <= f.data_len && e->data + (e->end - e->begin) <= data + size);
    if (e->end > e->begin) sum += e->data[0] + e->data[e->end - e->begin - 1]; /* touch both ends */
    CHECK(qt_st_find(&f, e->name) == e);
  }
  (void)sum;
  qt_st_write_tensor *w = to_write(&f);
  uint8_t *out = NULL, *out2 = NULL;
  size_t len = 0, len2 = 0;
  CHECK(qt_st_serialize(w, f.n_tensors, (const char *const *)f.meta_keys, (const char *const *)f.meta_vals,
                        f.n_meta, &out, &len) == QT_OK);
  qt_st_file g;
  CHECK(qt_st_parse(out, len, "roundtrip", &g) == QT_OK);
  CHECK(g.header_len % 8 == 0); /* the writer pads the header with spaces */
  same_file(&f, &g);
  qt_st_write_tensor *w2 = to_write(&g);
  CHECK(qt_st_serialize(w2, g.n_tensors, (const char *const *)g.meta_keys, (const char *const *)g.meta_vals,
                        g.n_meta, &out2, &len2) == QT_OK);
  CHECK(len2 == len && memcmp(out, out2, len) == 0);
  free(w2);
  free(out2);
  qt_st_close(&g);
  free(out);
  free(w);
  qt_st_close(&f);
  return 0;
}
