/* quant/quant_weight.c — qt_quant_weight: quantize, dequantize, and read the
 * safetensors layout bitsandbytes/transformers write (formats.md section 2). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

void qt_quant_weight_free(qt_quant_weight *w) {
  free(w->packed);
  free(w->absmax);
  free(w->qabsmax);
  free(w->nested_absmax);
  memset(w, 0, sizeof(*w));
}

static int64_t nested_nblocks(const qt_quant_weight *w) {
  return (w->nblocks + w->nested_blocksize - 1) / w->nested_blocksize;
}

/* Allocates the buffers of a weight whose scalar fields are set. */
static qt_status weight_alloc(qt_quant_weight *w) {
  size_t nbytes = (size_t)((w->n + 1) / 2);
  w->packed = malloc(nbytes ? nbytes : 1);
  if (w->nested) {
    w->qabsmax = malloc((size_t)w->nblocks + 1);
    w->nested_absmax = malloc(sizeof(float) * (size_t)(nested_nblocks(w) + 1));
  } else {
    w->absmax = malloc(sizeof(float) * (size_t)(w->nblocks + 1));
  }
  if (!w->packed || (w->nested ? !w->qabsmax || !w->nested_absmax : !w->absmax)) {
    qt_quant_weight_free(w);
    return qt_fail(QT_ERR_NOMEM, "quant: cannot allocate a quantized weight of %lld elements",
                   (long long)w->n);
  }
  return QT_OK;
}

qt_status qt_quant_weight_quantize(qt_quant_type t, int blocksize, bool double_quant,
                                   qt_dtype dtype, int ndim, const int64_t *shape,
                                   const float *x, int threads, qt_quant_weight *out) {
  memset(out, 0, sizeof(*out));
  if (!qt_quant_blocksize_valid(blocksize))
    return qt_fail(QT_ERR_INVALID, "quant: blocksize %d is not one of 32, 64, ..., 4096",
                   blocksize);
  if (ndim < 0 || ndim > QT_MAX_DIMS)
    return qt_fail(QT_ERR_INVALID, "quant: %d dimensions (at most %d)", ndim, QT_MAX_DIMS);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return qt_fail(QT_ERR_INVALID, "quant: negative dimension");
    n *= shape[i];
    out->shape[i] = shape[i];
  }
  out->type = t;
  out->blocksize = blocksize;
  out->dtype = dtype;
  out->ndim = ndim;
  out->n = n;
  out->nblocks = qt_quant_nblocks(n, blocksize);
  out->nested = double_quant;
  out->nested_blocksize = QT_QUANT_NESTED_BLOCKSIZE;
  QT_TRY(weight_alloc(out));
  if (!double_quant) {
    qt_quant_4bit_quantize(t, x, n, blocksize, out->packed, out->absmax, threads);
    return QT_OK;
  }
  float *absmax = malloc(sizeof(float) * (size_t)(out->nblocks + 1));
  if (!absmax) {
    qt_quant_weight_free(out);
    return qt_fail(QT_ERR_NOMEM, "quant: cannot allocate %lld absmax values",
                   (long long)out->nblocks);
  }
  qt_quant_4bit_quantize(t, x, n, blocksize, out->packed, absmax, threads);
  qt_quant_dynamic_map(true, out->nested_code);
  out->offset = qt_quant_absmax_mean(absmax, out->nblocks);
  qt_quant_dq_compress(out->nested_code, absmax, out->nblocks, out->offset, out->qabsmax,
                       out->nested_absmax, threads);
  free(absmax);
  return QT_OK;
}

void qt_quant_weight_absmax(const qt_quant_weight *w, float *absmax) {
  if (w->nested)
    qt_quant_dq_decompress_ref(w->nested_code, w->qabsmax, w->nested_absmax, w->offset,
                               w->nblocks, absmax);
  else
    memcpy(absmax, w->absmax, sizeof(float) * (size_t)w->nblocks);
}

static qt_status weight_absmax_buffer(const qt_quant_weight *w, float **am, bool *owned) {
  *owned = false;
  if (!w->nested) {
    *am = w->absmax;
    return QT_OK;
  }
  *am = malloc(sizeof(float) * (size_t)(w->nblocks + 1));
  if (!*am) return qt_fail(QT_ERR_NOMEM, "quant: cannot allocate %lld absmax values",
                           (long long)w->nblocks);
  *owned = true;
  qt_quant_weight_absmax(w, *am);
  return QT_OK;
}

qt_status qt_quant_weight_dequantize_f32(const qt_quant_weight *w, float *out, int threads) {
  float *am;
  bool owned;
  QT_TRY(weight_absmax_buffer(w, &am, &owned));
  qt_quant_4bit_dequantize(w->type, w->packed, am, w->n, w->blocksize, out, threads);
  if (owned) free(am);
  return QT_OK;
}

qt_status qt_quant_weight_dequantize_bf16(const qt_quant_weight *w, uint16_t *out, int threads) {
  float *am;
  bool owned;
  QT_TRY(weight_absmax_buffer(w, &am, &owned));
  qt_quant_4bit_dequantize_bf16(w->type, w->packed, am, w->n, w->blocksize, out, threads);
  if (owned) free(am);
  return QT_OK;
}

/* ---- reading bitsandbytes checkpoints ---- */

static qt_status expect_entry(const char *label, const char *what, const qt_st_entry *e,
                              qt_dtype dtype, int64_t numel) {
  if (!e)
    return qt_fail(QT_ERR_FORMAT, "%s: missing tensor %s; re-save the model with "
                   "bitsandbytes >= 0.41.3 or load the unquantized checkpoint", label, what);
  if (e->dtype != dtype)
    return qt_fail(QT_ERR_FORMAT, "%s: tensor %s has dtype %s, expected %s", label, what,
                   qt_dtype_name(e->dtype), qt_dtype_name(dtype));
  int64_t have = 1;
  for (int i = 0; i < e->ndim; i++) have *= e->shape[i];
  if (have != numel || e->end - e->begin != (uint64_t)numel * qt_dtype_size(dtype))
    return qt_fail(QT_ERR_FORMAT, "%s: tensor %s has %lld elements, expected %lld", label, what,
                   (long long)have, (long long)numel);
  return QT_OK;
}

static void copy_f32(const qt_st_entry *e, float *dst, int64_t count) {
  memcpy(dst, e->data, sizeof(float) * (size_t)count); /* data may be unaligned */
}

static qt_status parse_quant_state(const char *label, const qt_st_entry *qs, qt_quant_weight *w,
                                   bool *has_nested) {
  if (!qs)
    return qt_fail(QT_ERR_FORMAT, "%s: missing tensor weight.quant_state.bitsandbytes__nf4 "
                   "(or __fp4); this is not a bitsandbytes 4-bit checkpoint", label);
  if (qs->dtype != QT_U8)
    return qt_fail(QT_ERR_FORMAT, "%s: quant_state must be U8 (UTF-8 JSON), found %s", label,
                   qt_dtype_name(qs->dtype));
  size_t len = (size_t)(qs->end - qs->begin);
  char *text = malloc(len + 1);
  if (!text) return qt_fail(QT_ERR_NOMEM, "%s: cannot allocate quant_state", label);
  memcpy(text, qs->data, len);
  text[len] = 0;
  cJSON *root = cJSON_Parse(text);
  free(text);
  if (!root || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return qt_fail(QT_ERR_FORMAT, "%s: quant_state is not a JSON object", label);
  }
  qt_status st = QT_OK;
  const cJSON *qt = cJSON_GetObjectItemCaseSensitive(root, "quant_type");
  const cJSON *bs = cJSON_GetObjectItemCaseSensitive(root, "blocksize");
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(root, "shape");
  const cJSON *nbs = cJSON_GetObjectItemCaseSensitive(root, "nested_blocksize");
  const cJSON *noff = cJSON_GetObjectItemCaseSensitive(root, "nested_offset");
  const cJSON *ndt = cJSON_GetObjectItemCaseSensitive(root, "nested_dtype");
  if (!cJSON_IsString(qt) || !qt_quant_type_from_name(qt->valuestring, &w->type)) {
    st = qt_fail(QT_ERR_UNSUPPORTED, "%s: quant_state.quant_type must be \"nf4\" or \"fp4\"", label);
  } else if (!cJSON_IsNumber(bs) || bs->valuedouble != (double)(int)bs->valuedouble ||
             !qt_quant_blocksize_valid((int)bs->valuedouble)) {
    st = qt_fail(QT_ERR_FORMAT, "%s: quant_state.blocksize must be one of 32, 64, ..., 4096",
                 label);
  } else if (!cJSON_IsString(dt)) {
    st = qt_fail(QT_ERR_FORMAT, "%s: quant_state.dtype missing", label);
  } else if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > QT_MAX_DIMS) {
    st = qt_fail(QT_ERR_FORMAT, "%s: quant_state.shape must be a list of at most %d integers",
                 label, QT_MAX_DIMS);
  }
  if (st == QT_OK) {
    w->blocksize = (int)bs->valuedouble;
    if (strcmp(dt->valuestring, "bfloat16") == 0) w->dtype = QT_BF16;
    else if (strcmp(dt->valuestring, "float16") == 0) w->dtype = QT_F16;
    else if (strcmp(dt->valuestring, "float32") == 0) w->dtype = QT_F32;
    else st = qt_fail(QT_ERR_UNSUPPORTED, "%s: quant_state.dtype \"%s\" (expected bfloat16, "
                      "float16 or float32)", label, dt->valuestring);
  }
  if (st == QT_OK) {
    w->ndim = cJSON_GetArraySize(shape);
    w->n = 1;
    for (int i = 0; i < w->ndim && st == QT_OK; i++) {
      const cJSON *d = cJSON_GetArrayItem(shape, i);
      if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 9.0e15 ||
          d->valuedouble != floor(d->valuedouble)) {
        st = qt_fail(QT_ERR_FORMAT, "%s: quant_state.shape[%d] is not a non-negative integer",
                     label, i);
      } else {
        w->shape[i] = (int64_t)d->valuedouble;
        if (w->shape[i] != 0 && w->n > INT64_MAX / 4 / w->shape[i])
          st = qt_fail(QT_ERR_FORMAT, "%s: quant_state.shape is too large", label);
        else
          w->n *= w->shape[i];
      }
    }
  }
  *has_nested = nbs || noff || ndt;
  if (st == QT_OK && *has_nested) {
    if (!cJSON_IsNumber(nbs) || !cJSON_IsNumber(noff)) {
      st = qt_fail(QT_ERR_FORMAT, "%s: quant_state has nested keys but nested_blocksize / "
                   "nested_offset are not numbers", label);
    } else if (nbs->valuedouble != QT_QUANT_NESTED_BLOCKSIZE) {
      st = qt_fail(QT_ERR_UNSUPPORTED, "%s: nested_blocksize %g (only 256, as bitsandbytes)",
                   label, nbs->valuedouble);
    } else if (ndt && (!cJSON_IsString(ndt) || strcmp(ndt->valuestring, "float32") != 0)) {
      st = qt_fail(QT_ERR_UNSUPPORTED, "%s: nested_dtype must be \"float32\"", label);
    } else {
      w->nested_blocksize = QT_QUANT_NESTED_BLOCKSIZE;
      /* QuantState.from_dict: torch.tensor(float(nested_offset)) -> fp32. */
      w->offset = (float)noff->valuedouble;
    }
  }
  cJSON_Delete(root);
  return st;
}

qt_status qt_quant_weight_from_bnb(const char *label, const qt_st_entry *weight,
                                   const qt_st_entry *absmax, const qt_st_entry *quant_map,
                                   const qt_st_entry *nested_absmax,
                                   const qt_st_entry *nested_quant_map,
                                   const qt_st_entry *quant_state, qt_quant_weight *out) {
  memset(out, 0, sizeof(*out));
  bool nested = false;
  QT_TRY(parse_quant_state(label, quant_state, out, &nested));
  out->nested = nested;
  out->nblocks = qt_quant_nblocks(out->n, out->blocksize);
  if (!weight) return qt_fail(QT_ERR_FORMAT, "%s: missing tensor weight", label);
  /* Any quant_storage dtype is a view of the same bytes (formats.md 1.3). */
  uint64_t have = weight->end - weight->begin, need = (uint64_t)((out->n + 1) / 2);
  unsigned item = qt_dtype_bits(weight->dtype) / 8;
  if (item == 0 || have < need || have - need >= item)
    return qt_fail(QT_ERR_FORMAT, "%s: weight holds %llu bytes but quant_state.shape needs %llu "
                   "packed 4-bit bytes", label, (unsigned long long)have,
                   (unsigned long long)need);
  QT_TRY(expect_entry(label, "weight.quant_map", quant_map, QT_F32, 16));
  float map[16];
  copy_f32(quant_map, map, 16);
  if (memcmp(map, qt_quant_4bit_table(out->type), sizeof(map)) != 0)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: weight.quant_map differs from the bitsandbytes %s "
                   "table; custom 4-bit code tables are not supported", label,
                   qt_quant_type_name(out->type));
  QT_TRY(expect_entry(label, "weight.absmax", absmax, nested ? QT_U8 : QT_F32, out->nblocks));
  if (nested) {
    out->nested_blocksize = QT_QUANT_NESTED_BLOCKSIZE;
    int64_t nnb = nested_nblocks(out);
    QT_TRY(expect_entry(label, "weight.nested_absmax", nested_absmax, QT_F32, nnb));
    QT_TRY(expect_entry(label, "weight.nested_quant_map", nested_quant_map, QT_F32, 256));
  }
  QT_TRY(weight_alloc(out));
  memcpy(out->packed, weight->data, (size_t)need);
  if (nested) {
    memcpy(out->qabsmax, absmax->data, (size_t)out->nblocks);
    copy_f32(nested_absmax, out->nested_absmax, nested_nblocks(out));
    copy_f32(nested_quant_map, out->nested_code, 256);
  } else {
    copy_f32(absmax, out->absmax, out->nblocks);
  }
  return QT_OK;
}
