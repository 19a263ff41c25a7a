/* gguf/gguf.h — GGUF v3 files as llama.cpp reads them: ggml tensor types and
 * their block layouts, a streaming writer, a small reader (tests, inspect)
 * and llama.cpp's reference quantizers (gguf/gguf_quant.c).
 *
 * Format (ggml docs/gguf.md; ../shared/docs/reference/gguf.md 2.1): little
 * endian; header u32 magic "GGUF", u32 version 3, u64 n_tensors, u64 n_kv;
 * then each KV (string key, u32 value type, value), each tensor info (string
 * name, u32 n_dims, u64 ne[n_dims] with ne[0] the innermost = contiguous
 * dimension, u32 ggml type, u64 offset from the data start), zero padding to
 * the alignment (general.alignment, default 32), then the tensor data, each
 * tensor aligned and zero-padded. A string is u64 length + bytes (no NUL).
 *
 * Writer: KVs and tensor infos are declared first (the header holds every
 * tensor's offset, so the types and shapes must be known up front), then the
 * tensor bytes are streamed in declaration order, one tensor at a time, into
 * PATH.tmp.<pid>, which qt_gguf_writer_finish fsyncs and renames over PATH
 * (common/fs.h). Peak memory: the header plus the caller's one tensor.
 *
 * Ownership: a writer or reader owns all it holds; free with the _free call
 * (safe on NULL). Errors name the file (and key or tensor). */
#ifndef QT_GGUF_GGUF_H
#define QT_GGUF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* ggml_type values (ggml.h enum ggml_type) of the types we write. */
typedef enum {
  QT_GGML_F32 = 0,
  QT_GGML_F16 = 1,
  QT_GGML_Q5_0 = 6,
  QT_GGML_Q8_0 = 8,
  QT_GGML_Q4_K = 12,
  QT_GGML_Q6_K = 14,
  QT_GGML_BF16 = 30,
} qt_ggml_type;

/* GGUF metadata value types (gguf.h enum gguf_type). */
typedef enum {
  QT_GGUF_U8 = 0, QT_GGUF_I8, QT_GGUF_U16, QT_GGUF_I16, QT_GGUF_U32, QT_GGUF_I32, QT_GGUF_F32,
  QT_GGUF_BOOL, QT_GGUF_STRING, QT_GGUF_ARRAY, QT_GGUF_U64, QT_GGUF_I64, QT_GGUF_F64,
  QT_GGUF_TYPE_COUNT
} qt_gguf_vtype;

/* general.file_type values (llama.h enum llama_ftype). */
enum {
  QT_LLAMA_FTYPE_ALL_F32 = 0, QT_LLAMA_FTYPE_MOSTLY_F16 = 1, QT_LLAMA_FTYPE_MOSTLY_Q8_0 = 7,
  QT_LLAMA_FTYPE_MOSTLY_Q4_K_M = 15, QT_LLAMA_FTYPE_MOSTLY_BF16 = 32
};

/* tokenizer.ggml.token_type values (llama_token_type; sentencepiece's own
 * ModelProto.SentencePiece.Type uses the same numbers). */
enum {
  QT_GGUF_TOK_NORMAL = 1, QT_GGUF_TOK_UNKNOWN = 2, QT_GGUF_TOK_CONTROL = 3,
  QT_GGUF_TOK_USER_DEFINED = 4, QT_GGUF_TOK_UNUSED = 5, QT_GGUF_TOK_BYTE = 6
};

/* Values per block (1 for F32/F16/BF16; 32 Q8_0/Q5_0; 256 Q4_K/Q6_K). */
int64_t qt_ggml_block_values(qt_ggml_type t);
/* Bytes per block (4, 2, 2, 34, 22, 144, 210). */
size_t qt_ggml_block_bytes(qt_ggml_type t);
/* Bytes of a row of ne0 values (ne0 a multiple of the block size). */
size_t qt_ggml_row_bytes(qt_ggml_type t, int64_t ne0);
/* "F32", "F16", "BF16", "Q8_0", "Q5_0", "Q4_K", "Q6_K"; "?" otherwise. */
const char *qt_ggml_type_name(qt_ggml_type t);
bool qt_ggml_type_known(uint32_t t);

/* ---- quantizers (gguf/gguf_quant.c) -------------------------------------- */

/* Converts n values x (n a multiple of the block size) into out
 * (qt_ggml_row_bytes(t, n) bytes) the way llama.cpp's deterministic reference
 * path does (ggml-quants.c quantize_row_*_ref, used by llama_model_quantize
 * when no importance matrix is given; ggml_fp32_to_fp16/bf16 round to
 * nearest even): same arithmetic in the same order, so the same bytes. */
void qt_gguf_quantize(qt_ggml_type t, const float *x, void *out, int64_t n);
/* The inverse (ggml dequantize_row_*): n values from in. */
void qt_gguf_dequantize(qt_ggml_type t, const void *in, float *y, int64_t n);

/* ---- writer (gguf/gguf_write.c) ----------------------------------------- */

typedef struct qt_gguf_writer qt_gguf_writer;

/* path: the final file (written as PATH.tmp.<pid> until finish). */
qt_status qt_gguf_writer_init(const char *path, qt_gguf_writer **out);
void qt_gguf_writer_free(qt_gguf_writer **w);

/* KVs, in file order. Keys must be unique (QT_ERR_INVALID otherwise). */
qt_status qt_gguf_kv_str(qt_gguf_writer *w, const char *key, const char *v);
qt_status qt_gguf_kv_u32(qt_gguf_writer *w, const char *key, uint32_t v);
qt_status qt_gguf_kv_i32(qt_gguf_writer *w, const char *key, int32_t v);
qt_status qt_gguf_kv_f32(qt_gguf_writer *w, const char *key, float v);
qt_status qt_gguf_kv_bool(qt_gguf_writer *w, const char *key, bool v);
qt_status qt_gguf_kv_arr_str(qt_gguf_writer *w, const char *key, const char *const *v, size_t n);
qt_status qt_gguf_kv_arr_f32(qt_gguf_writer *w, const char *key, const float *v, size_t n);
qt_status qt_gguf_kv_arr_i32(qt_gguf_writer *w, const char *key, const int32_t *v, size_t n);

/* Declares a tensor (n_dims 1..4, ne[0] innermost). ne[0] must be a
 * multiple of the type's block size. Returns its index. */
qt_status qt_gguf_add_tensor(qt_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                             qt_ggml_type type, size_t *index);
/* Bytes of tensor i's data. */
size_t qt_gguf_tensor_bytes(const qt_gguf_writer *w, size_t i);
/* The first call writes the header (no KV or tensor may be added after).
 * Tensors must come in declaration order, each with exactly its bytes. */
qt_status qt_gguf_write_tensor(qt_gguf_writer *w, size_t i, const void *data, size_t bytes);
/* After the last tensor: fsync, rename over PATH, fsync the directory. On
 * error (and from free without finish) the temporary file is removed. */
qt_status qt_gguf_writer_finish(qt_gguf_writer *w);

/* ---- reader (gguf/gguf_read.c) ------------------------------------------ */

typedef struct {
  char *key;
  qt_gguf_vtype type;       /* QT_GGUF_ARRAY: arr_type, n */
  qt_gguf_vtype arr_type;
  uint64_t n;               /* array length */
  const uint8_t *data;      /* the value's bytes in the file image (scalar, or first array element) */
  uint64_t bytes;           /* bytes of the value (whole array) */
  uint64_t *str_off;        /* string arrays: offset of element i from data (owned) */
} qt_gguf_kv;

typedef struct {
  char *name;
  int n_dims;
  int64_t ne[4];
  qt_ggml_type type;
  uint64_t offset;          /* from the data start */
  const uint8_t *data;      /* in the file image */
  size_t bytes;
} qt_gguf_tensor;

typedef struct {
  uint8_t *image;           /* the whole file (owned) */
  size_t size;
  uint32_t version;
  size_t n_kv, n_tensors;
  qt_gguf_kv *kv;
  qt_gguf_tensor *tensors;
  size_t alignment;
} qt_gguf_file;

/* Reads and validates a whole GGUF file (bounds of every string, array and
 * tensor; known types; aligned offsets). QT_ERR_FORMAT naming the file. */
qt_status qt_gguf_read(const char *path, qt_gguf_file *f);
void qt_gguf_file_free(qt_gguf_file *f);
const qt_gguf_kv *qt_gguf_find_kv(const qt_gguf_file *f, const char *key);
const qt_gguf_tensor *qt_gguf_find_tensor(const qt_gguf_file *f, const char *name);
/* Scalar accessors: false when missing or of another type. */
bool qt_gguf_get_u32(const qt_gguf_file *f, const char *key, uint32_t *v);
bool qt_gguf_get_f32(const qt_gguf_file *f, const char *key, float *v);
bool qt_gguf_get_bool(const qt_gguf_file *f, const char *key, bool *v);
/* A string value (not NUL-terminated): *s, *len. */
bool qt_gguf_get_str(const qt_gguf_file *f, const char *key, const char **s, size_t *len);
/* Element i of a string array. */
bool qt_gguf_get_arr_str(const qt_gguf_kv *kv, uint64_t i, const char **s, size_t *len);

#endif
