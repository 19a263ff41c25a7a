/* common/tensor.h — dtypes and the tensor descriptor used by every module.
 *
 * A qt_tensor is a view: it does not own `data` (arenas and files own memory).
 * Shapes are row-major (C order), outermost dimension first, as in safetensors
 * and PyTorch. */
#ifndef QT_COMMON_TENSOR_H
#define QT_COMMON_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every dtype the safetensors format defines (reference: safetensors
 * src/tensor.rs `Dtype`), so that the reader can validate any file; compute
 * code uses F32, F16, BF16, U8, I32, I64. */
typedef enum {
  QT_BOOL = 0,
  QT_U8, QT_I8, QT_F8_E5M2, QT_F8_E4M3, QT_F8_E8M0, QT_F8_E4M3FNUZ, QT_F8_E5M2FNUZ,
  QT_I16, QT_U16, QT_F16, QT_BF16,
  QT_I32, QT_U32, QT_F32,
  QT_C64, QT_F64, QT_I64, QT_U64,
  QT_F4, QT_F6_E2M3, QT_F6_E3M2,
  QT_DTYPE_COUNT
} qt_dtype;

/* Size in bits (4 for F4, 6 for F6_*, 8 for BOOL). */
unsigned qt_dtype_bits(qt_dtype t);
/* Size in bytes for whole-byte dtypes; asserts on sub-byte ones. */
size_t qt_dtype_size(qt_dtype t);
/* The safetensors name ("F32", "BF16", ...). */
const char *qt_dtype_name(qt_dtype t);
/* Parses a safetensors dtype name (case-sensitive); false if unknown. */
bool qt_dtype_from_name(const char *name, qt_dtype *out);

typedef enum { QT_DEV_CPU = 0, QT_DEV_CUDA = 1 } qt_device;

enum { QT_MAX_DIMS = 8 };

typedef struct {
  qt_dtype dtype;
  qt_device device;
  int ndim;                     /* 0 for a scalar */
  int64_t shape[QT_MAX_DIMS];   /* shape[0] outermost */
  void *data;                   /* not owned */
} qt_tensor;

/* Builds a descriptor; asserts ndim <= QT_MAX_DIMS and dims >= 0. */
qt_tensor qt_tensor_make(qt_dtype dtype, qt_device device, int ndim, const int64_t *shape, void *data);
int64_t qt_tensor_numel(const qt_tensor *t);
size_t qt_tensor_nbytes(const qt_tensor *t);
/* Writes "[2, 3, 4]" into buf. */
void qt_tensor_shape_str(const qt_tensor *t, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
