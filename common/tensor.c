/* common/tensor.c */
#include "common/tensor.h"

#include <stdio.h>
#include <string.h>

#include "common/status.h"

static const struct {
  const char *name;
  unsigned bits;
} qt_dtype_info[QT_DTYPE_COUNT] = {
    [QT_BOOL] = {"BOOL", 8},           [QT_U8] = {"U8", 8},
    [QT_I8] = {"I8", 8},               [QT_F8_E5M2] = {"F8_E5M2", 8},
    [QT_F8_E4M3] = {"F8_E4M3", 8},     [QT_F8_E8M0] = {"F8_E8M0", 8},
    [QT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8}, [QT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [QT_I16] = {"I16", 16},            [QT_U16] = {"U16", 16},
    [QT_F16] = {"F16", 16},            [QT_BF16] = {"BF16", 16},
    [QT_I32] = {"I32", 32},            [QT_U32] = {"U32", 32},
    [QT_F32] = {"F32", 32},            [QT_C64] = {"C64", 64},
    [QT_F64] = {"F64", 64},            [QT_I64] = {"I64", 64},
    [QT_U64] = {"U64", 64},            [QT_F4] = {"F4", 4},
    [QT_F6_E2M3] = {"F6_E2M3", 6},     [QT_F6_E3M2] = {"F6_E3M2", 6},
};

unsigned qt_dtype_bits(qt_dtype t) {
  QT_ASSERT((unsigned)t < QT_DTYPE_COUNT);
  return qt_dtype_info[t].bits;
}

size_t qt_dtype_size(qt_dtype t) {
  unsigned bits = qt_dtype_bits(t);
  QT_ASSERTF(bits % 8 == 0, "dtype %s has no whole-byte size", qt_dtype_info[t].name);
  return bits / 8;
}

const char *qt_dtype_name(qt_dtype t) {
  QT_ASSERT((unsigned)t < QT_DTYPE_COUNT);
  return qt_dtype_info[t].name;
}

bool qt_dtype_from_name(const char *name, qt_dtype *out) {
  for (int i = 0; i < QT_DTYPE_COUNT; i++) {
    if (strcmp(name, qt_dtype_info[i].name) == 0) {
      *out = (qt_dtype)i;
      return true;
    }
  }
  return false;
}

qt_tensor qt_tensor_make(qt_dtype dtype, qt_device device, int ndim, const int64_t *shape, void *data) {
  QT_ASSERT(ndim >= 0 && ndim <= QT_MAX_DIMS);
  qt_tensor t;
  memset(&t, 0, sizeof t);
  t.dtype = dtype;
  t.device = device;
  t.ndim = ndim;
  for (int i = 0; i < ndim; i++) {
    QT_ASSERT(shape[i] >= 0);
    t.shape[i] = shape[i];
  }
  t.data = data;
  return t;
}

int64_t qt_tensor_numel(const qt_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

size_t qt_tensor_nbytes(const qt_tensor *t) {
  return ((size_t)qt_tensor_numel(t) * qt_dtype_bits(t->dtype) + 7) / 8;
}

void qt_tensor_shape_str(const qt_tensor *t, char *buf, size_t cap) {
  size_t off = 0;
  off += (size_t)snprintf(buf + off, cap - off, "[");
  for (int i = 0; i < t->ndim && off < cap; i++)
    off += (size_t)snprintf(buf + off, cap - off, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (off < cap) snprintf(buf + off, cap - off, "]");
}
