/* common/safetensors.h — safetensors reader (mmap, single file and sharded
 * model directories) and atomic writer.
 *
 * Format and validation rules: ../shared/docs/reference/reliability-anchors.md
 * section 1 (the reference reader's rules 1-10, reproduced one for one, plus
 * duplicate names and a nesting limit), formats.md section 2.
 *
 * Ownership: a qt_st_file owns its mapping and its entry table; entry data
 * pointers point into the mapping and live until qt_st_close. Data pointers
 * may be unaligned: use memcpy or qt_st_entry_to_f32, never cast to float*. */
#ifndef QT_COMMON_SAFETENSORS_H
#define QT_COMMON_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { QT_ST_MAX_HEADER = 100000000 }; /* reference MAX_HEADER_SIZE (decimal bytes) */
/* Deepest JSON nesting accepted in a header. A valid header nests 3 levels
 * (object, tensor object, shape array); unknown fields of a tensor entry may
 * hold arbitrary JSON, which the reference ignores, so allow some room. */
enum { QT_ST_MAX_DEPTH = 16 };
/* Largest data_offsets value accepted: 2^53 (the reference accepts any u64, but
 * no real file reaches 8 PiB; anything larger is a corrupt or hostile header). */
#define QT_ST_MAX_OFFSET ((uint64_t)1 << 53)

typedef struct {
  char *name;
  qt_dtype dtype;
  int ndim;
  int64_t shape[QT_MAX_DIMS];
  uint64_t begin, end;   /* data_offsets, relative to the start of the data buffer */
  const uint8_t *data;   /* = file data buffer + begin (possibly unaligned) */
} qt_st_entry;

typedef struct {
  char *path;            /* as given (or a label for in-memory buffers) */
  void *map;             /* mmap of the whole file (NULL for in-memory parse) */
  size_t map_len;
  uint64_t header_len;   /* N */
  const uint8_t *data;   /* byte buffer after the header */
  uint64_t data_len;
  size_t n_tensors;
  qt_st_entry *tensors;  /* sorted by begin offset */
  size_t n_meta;
  char **meta_keys;      /* __metadata__ (string -> string) */
  char **meta_vals;
} qt_st_file;

/* Opens and validates a file; on error *out is left empty and the message
 * names the file and the violated rule (and the tensor, where there is one).
 * Malformed contents give QT_ERR_FORMAT; valid files that qlora-train cannot
 * represent (rank > QT_MAX_DIMS, a dimension > INT64_MAX, a name containing
 * U+0000) give QT_ERR_UNSUPPORTED; open/mmap failures give QT_ERR_IO.
 * Differences from the reference reader (reliability-anchors.md 1.2): duplicate
 * tensor or __metadata__ keys are rejected explicitly (even byte-identical
 * ones); duplicate fields inside a tensor entry are rejected; offsets above
 * QT_ST_MAX_OFFSET and nesting deeper than QT_ST_MAX_DEPTH are rejected. */
qt_status qt_st_open(const char *path, qt_st_file *out);
/* Validates a whole file image held in memory (used by tests and the fuzzer).
 * The entries point into buf, which must outlive *out. */
qt_status qt_st_parse(const uint8_t *buf, size_t len, const char *label, qt_st_file *out);
void qt_st_close(qt_st_file *f);

/* Exact, case-sensitive lookup; NULL if absent. */
const qt_st_entry *qt_st_find(const qt_st_file *f, const char *name);
const char *qt_st_meta(const qt_st_file *f, const char *key);
int64_t qt_st_entry_numel(const qt_st_entry *e);
/* The entry as a tensor view (device CPU, data = the mapped bytes). */
qt_tensor qt_st_entry_tensor(const qt_st_entry *e);
/* Converts an F32/F16/BF16/F64 entry to fp32 (dst has numel floats). */
qt_status qt_st_entry_to_f32(const qt_st_entry *e, float *dst);

/* A model directory: model.safetensors, or model.safetensors.index.json and its
 * shards (every weight_map name must exist in exactly the named shard, and no
 * tensor may appear in two shards), or a single *.safetensors path. */
typedef struct {
  size_t n_files;
  qt_st_file *files;
  size_t n_tensors;           /* all tensors, sorted by name */
  const qt_st_entry **by_name;
  size_t *file_of;            /* index into files, parallel to by_name */
} qt_st_model;

qt_status qt_st_model_open(const char *path, qt_st_model *out);
void qt_st_model_close(qt_st_model *m);
const qt_st_entry *qt_st_model_find(const qt_st_model *m, const char *name);
/* Drops the entry's bytes from this process's resident memory once the caller
 * has converted them (madvise MADV_DONTNEED on the whole pages inside the
 * entry, for entries of a mapped file only; the mapping is private and never
 * written, so reading the entry again faults the same bytes back in from the
 * file). Loading a model tensor by tensor this way keeps the mapped checkpoint
 * out of the peak RSS. A no-op for in-memory parses and on failure. */
void qt_st_model_release(const qt_st_model *m, const qt_st_entry *e);

/* Writer. Tensors are laid out like the reference writer (sorted by dtype
 * alignment, descending, then by name; header space-padded to a multiple of 8),
 * written to PATH.tmp.<pid>, fsynced, renamed over PATH, directory fsynced. */
typedef struct {
  const char *name;
  qt_dtype dtype;
  int ndim;
  int64_t shape[QT_MAX_DIMS];
  const void *data;           /* numel * dtype bytes, C order */
} qt_st_write_tensor;

/* Names must be valid UTF-8, unique, and not "__metadata__"; sub-byte dtypes
 * need numel * bits to be a multiple of 8; data may be NULL only when the
 * tensor has no bytes. Metadata keys must be unique; n_meta == 0 omits
 * __metadata__. Bad arguments give QT_ERR_INVALID, I/O errors QT_ERR_IO. */
qt_status qt_st_write(const char *path, const qt_st_write_tensor *tensors, size_t n_tensors,
                      const char *const *meta_keys, const char *const *meta_vals, size_t n_meta);
/* The same bytes as qt_st_write, into a malloc'd buffer (*out owned by the
 * caller, free()). */
qt_status qt_st_serialize(const qt_st_write_tensor *tensors, size_t n_tensors,
                          const char *const *meta_keys, const char *const *meta_vals, size_t n_meta,
                          uint8_t **out, size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif
