/* model/hf_config.c — config.json reader for llama / mistral / qwen2.
 *
 * Defaults and rules follow transformers 5.x (see hf_config.h):
 *   models/llama/configuration_llama.py, models/mistral/configuration_mistral.py,
 *   models/qwen2/configuration_qwen2.py (class fields and __post_init__),
 *   models/{llama,mistral,qwen2}/modeling_*.py (biases, head_dim, sliding window),
 *   modeling_rope_utils.py (rope_scaling / rope_parameters standardization),
 *   configuration_utils.py (torch_dtype -> dtype),
 *   utils/quantization_config.py BitsAndBytesConfig (quantization defaults).
 * Numbers are read from cJSON's valuedouble with explicit range and
 * integrality checks (valueint saturates silently); keys are looked up
 * case-sensitively, and duplicate keys anywhere are rejected (Python's json
 * keeps the last one, cJSON the first: neither is what the author meant). */
#include "model/hf_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { HF_CONFIG_MAX_BYTES = 16 << 20, HF_JSON_MAX_DEPTH = 64 };
/* Sizes are bounded so that any product of two of them fits in int64_t. */
#define HF_MAX_SIZE INT64_C(2147483647)
/* Token ids: anything a JSON number holds exactly (2^53). */
#define HF_MAX_TOKEN_ID INT64_C(9007199254740992)

typedef struct {
  const char *label; /* file name for messages */
} hf_ctx;

/* ---- JSON helpers ---------------------------------------------------------- */

static const char *json_type_name(const cJSON *v) {
  if (cJSON_IsNull(v)) return "null";
  if (cJSON_IsBool(v)) return "a boolean";
  if (cJSON_IsNumber(v)) return "a number";
  if (cJSON_IsString(v)) return "a string";
  if (cJSON_IsArray(v)) return "an array";
  if (cJSON_IsObject(v)) return "an object";
  return "an invalid value";
}

/* Absent or null: the key takes its default. */
static const cJSON *get(const cJSON *obj, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  return (v == NULL || cJSON_IsNull(v)) ? NULL : v;
}

static qt_status check_duplicates(const hf_ctx *cx, const cJSON *v, const char *where, int depth) {
  if (depth > HF_JSON_MAX_DEPTH)
    return qt_fail(QT_ERR_FORMAT, "%s: JSON nested deeper than %d levels", cx->label, HF_JSON_MAX_DEPTH);
  if (cJSON_IsObject(v)) {
    for (const cJSON *a = v->child; a; a = a->next) {
      for (const cJSON *b = a->next; b; b = b->next) {
        if (strcmp(a->string, b->string) == 0)
          return qt_fail(QT_ERR_FORMAT, "%s: duplicate key '%s'%s%s; keep only one", cx->label, a->string,
                         where[0] ? " in " : "", where);
      }
      QT_TRY(check_duplicates(cx, a, a->string, depth + 1));
    }
  } else if (cJSON_IsArray(v)) {
    for (const cJSON *a = v->child; a; a = a->next) QT_TRY(check_duplicates(cx, a, where, depth + 1));
  }
  return QT_OK;
}

/* An integer-valued JSON number in [lo, hi]. `key` is the full dotted name. */
static qt_status as_int(const hf_ctx *cx, const cJSON *v, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  if (!cJSON_IsNumber(v))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s' must be an integer, got %s", cx->label, key, json_type_name(v));
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s' must be an integer, got %g", cx->label, key, d);
  if (d < (double)lo || d > (double)hi)
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s' must be in [%lld, %lld], got %.0f", cx->label, key,
                   (long long)lo, (long long)hi, d);
  *out = (int64_t)d;
  return QT_OK;
}

/* Optional integer (absent/null -> *out = dflt); required when `required`. */
static qt_status get_int(const hf_ctx *cx, const cJSON *obj, const char *key, const char *prefix, bool required,
                         int64_t dflt, int64_t lo, int64_t hi, int64_t *out) {
  char full[128];
  snprintf(full, sizeof full, "%s%s", prefix, key);
  const cJSON *v = get(obj, key);
  if (v == NULL) {
    if (required) return qt_fail(QT_ERR_FORMAT, "%s: required key '%s' is missing", cx->label, full);
    *out = dflt;
    return QT_OK;
  }
  return as_int(cx, v, full, lo, hi, out);
}

/* Size keys: positive integers. */
static qt_status get_size(const hf_ctx *cx, const cJSON *obj, const char *key, bool required, int64_t dflt,
                          int64_t *out) {
  return get_int(cx, obj, key, "", required, dflt, 1, HF_MAX_SIZE, out);
}

/* A finite number > 0 (present: required_here decides the message when absent). */
static qt_status get_pos_double(const hf_ctx *cx, const cJSON *obj, const char *key, const char *prefix,
                                bool required, double dflt, double *out) {
  char full[128];
  snprintf(full, sizeof full, "%s%s", prefix, key);
  const cJSON *v = get(obj, key);
  if (v == NULL) {
    if (required) return qt_fail(QT_ERR_FORMAT, "%s: required key '%s' is missing", cx->label, full);
    *out = dflt;
    return QT_OK;
  }
  if (!cJSON_IsNumber(v))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s' must be a number, got %s", cx->label, full, json_type_name(v));
  if (!isfinite(v->valuedouble) || !(v->valuedouble > 0.0))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s' must be a finite number > 0, got %g", cx->label, full,
                   v->valuedouble);
  *out = v->valuedouble;
  return QT_OK;
}

static qt_status get_bool(const hf_ctx *cx, const cJSON *obj, const char *key, const char *prefix, bool dflt,
                          bool *out) {
  const cJSON *v = get(obj, key);
  *out = dflt; /* written on every path, like get_string */
  if (v == NULL) return QT_OK;
  if (!cJSON_IsBool(v))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s' must be true or false, got %s", cx->label, prefix, key,
                   json_type_name(v));
  *out = cJSON_IsTrue(v);
  return QT_OK;
}

/* Optional string; *out = NULL when absent/null. */
static qt_status get_string(const hf_ctx *cx, const cJSON *obj, const char *key, const char *prefix,
                            const char **out) {
  const cJSON *v = get(obj, key);
  *out = NULL;
  if (v == NULL) return QT_OK;
  if (!cJSON_IsString(v) || v->valuestring == NULL)
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s' must be a string, got %s", cx->label, prefix, key,
                   json_type_name(v));
  *out = v->valuestring;
  return QT_OK;
}

static qt_status get_object(const hf_ctx *cx, const cJSON *obj, const char *key, const cJSON **out) {
  const cJSON *v = get(obj, key);
  *out = NULL;
  if (v == NULL) return QT_OK;
  if (!cJSON_IsObject(v))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s' must be an object, got %s", cx->label, key, json_type_name(v));
  *out = v;
  return QT_OK;
}

/* ---- names ----------------------------------------------------------------- */

const char *qt_hf_arch_name(qt_hf_arch a) {
  switch (a) {
    case QT_HF_LLAMA: return "llama";
    case QT_HF_MISTRAL: return "mistral";
    case QT_HF_QWEN2: return "qwen2";
  }
  return "?";
}

const char *qt_rope_type_name(qt_rope_type t) {
  switch (t) {
    case QT_ROPE_DEFAULT: return "default";
    case QT_ROPE_LINEAR: return "linear";
    case QT_ROPE_LLAMA3: return "llama3";
  }
  return "?";
}

const char *qt_hf_quant_type_name(qt_hf_quant_type t) { return t == QT_HF_QUANT_NF4 ? "nf4" : "fp4"; }

/* torch dtype names as str(torch.dtype) without "torch." (torch/_tensor_str,
 * the spelling save_pretrained writes). */
static const struct {
  const char *name;
  qt_dtype dtype;
} torch_dtypes[] = {
    {"float32", QT_F32}, {"float16", QT_F16}, {"bfloat16", QT_BF16}, {"float64", QT_F64},
    {"uint8", QT_U8},    {"int8", QT_I8},     {"float", QT_F32},     {"half", QT_F16},
};

const char *qt_hf_torch_dtype_name(qt_dtype t) {
  for (size_t i = 0; i < sizeof torch_dtypes / sizeof torch_dtypes[0]; i++)
    if (torch_dtypes[i].dtype == t) return torch_dtypes[i].name;
  return "?";
}

/* Parses a torch dtype name into one of `allowed` (n entries). */
static qt_status get_torch_dtype(const hf_ctx *cx, const cJSON *obj, const char *key, const char *prefix,
                                 const qt_dtype *allowed, size_t n, bool *found, qt_dtype *out) {
  const char *s;
  QT_TRY(get_string(cx, obj, key, prefix, &s));
  *found = s != NULL;
  if (s == NULL) return QT_OK;
  for (size_t i = 0; i < sizeof torch_dtypes / sizeof torch_dtypes[0]; i++) {
    if (strcmp(s, torch_dtypes[i].name) != 0) continue;
    for (size_t j = 0; j < n; j++) {
      if (allowed[j] == torch_dtypes[i].dtype) {
        *out = allowed[j];
        return QT_OK;
      }
    }
  }
  char list[128] = "";
  for (size_t j = 0; j < n; j++) {
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, "%s%s", j ? ", " : "", qt_hf_torch_dtype_name(allowed[j]));
  }
  return qt_fail(QT_ERR_UNSUPPORTED, "%s: key '%s%s' = '%s' is not supported; supported: %s", cx->label, prefix, key,
                 s, list);
}

/* ---- sections -------------------------------------------------------------- */

/* RoPE, following modeling_rope_utils.py convert_rope_params_to_dict and
 * standardize_rope_params: rope_scaling (if non-empty) else rope_parameters;
 * rope_type else "type" else "default"; rope_theta from the dict, else the
 * top-level key, else 10000; llama3's original_max_position_embeddings
 * defaults to max_position_embeddings. */
static qt_status parse_rope(const hf_ctx *cx, const cJSON *root, qt_hf_config *c) {
  const cJSON *rs, *rp;
  QT_TRY(get_object(cx, root, "rope_scaling", &rs));
  QT_TRY(get_object(cx, root, "rope_parameters", &rp));
  const cJSON *d = (rs && rs->child) ? rs : rp;
  const char *dname = (d == rs) ? "rope_scaling" : "rope_parameters";
  char prefix[32];
  snprintf(prefix, sizeof prefix, "%s.", dname);

  double top_theta;
  QT_TRY(get_pos_double(cx, root, "rope_theta", "", false, 10000.0, &top_theta));
  qt_hf_rope *r = &c->rope;
  memset(r, 0, sizeof *r);
  r->type = QT_ROPE_DEFAULT;
  r->theta = top_theta;
  r->factor = 1.0;
  if (d == NULL) return QT_OK;

  /* A dict keyed by layer type (per-layer RoPE) is a v5 feature of other models. */
  if (get(d, "full_attention") || get(d, "sliding_attention"))
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: key '%s' holds per-layer-type RoPE parameters; only one set is supported",
                   cx->label, dname);
  QT_TRY(get_pos_double(cx, d, "rope_theta", prefix, false, top_theta, &r->theta));

  const char *type = NULL;
  const char *type_key = "rope_type";
  QT_TRY(get_string(cx, d, "rope_type", prefix, &type));
  if (type == NULL) {
    type_key = "type";
    QT_TRY(get_string(cx, d, "type", prefix, &type));
  }
  if (type == NULL || strcmp(type, "default") == 0) {
    r->type = QT_ROPE_DEFAULT;
    return QT_OK;
  }
  if (strcmp(type, "linear") == 0) {
    r->type = QT_ROPE_LINEAR;
    return get_pos_double(cx, d, "factor", prefix, true, 1.0, &r->factor);
  }
  if (strcmp(type, "llama3") == 0) {
    r->type = QT_ROPE_LLAMA3;
    QT_TRY(get_pos_double(cx, d, "factor", prefix, true, 1.0, &r->factor));
    QT_TRY(get_pos_double(cx, d, "low_freq_factor", prefix, true, 1.0, &r->low_freq_factor));
    QT_TRY(get_pos_double(cx, d, "high_freq_factor", prefix, true, 1.0, &r->high_freq_factor));
    /* _compute_llama3_parameters divides by (high_freq_factor - low_freq_factor). */
    if (!(r->high_freq_factor > r->low_freq_factor))
      return qt_fail(QT_ERR_FORMAT, "%s: key '%shigh_freq_factor' (%g) must be greater than low_freq_factor (%g)",
                     cx->label, prefix, r->high_freq_factor, r->low_freq_factor);
    return get_int(cx, d, "original_max_position_embeddings", prefix, false, c->max_position_embeddings, 1,
                   HF_MAX_SIZE, &r->original_max_position_embeddings);
  }
  return qt_fail(QT_ERR_UNSUPPORTED, "%s: key '%s%s': rope type '%s' is not supported; supported: default, linear, llama3",
                 cx->label, prefix, type_key, type);
}

static qt_status parse_token_ids(const hf_ctx *cx, const cJSON *root, qt_hf_config *c, int64_t dflt_bos,
                                 int64_t dflt_eos) {
  const cJSON *bos = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
  if (bos == NULL) {
    c->has_bos = dflt_bos >= 0;
    c->bos_token_id = dflt_bos;
  } else if (!cJSON_IsNull(bos)) {
    QT_TRY(as_int(cx, bos, "bos_token_id", 0, HF_MAX_TOKEN_ID, &c->bos_token_id));
    c->has_bos = true;
  }
  const cJSON *pad = get(root, "pad_token_id");
  if (pad) {
    QT_TRY(as_int(cx, pad, "pad_token_id", 0, HF_MAX_TOKEN_ID, &c->pad_token_id));
    c->has_pad = true;
  }
  const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
  if (eos == NULL) {
    if (dflt_eos >= 0) {
      c->n_eos = 1;
      c->eos_token_ids[0] = dflt_eos;
    }
  } else if (cJSON_IsArray(eos)) {
    int n = cJSON_GetArraySize(eos);
    if (n > QT_HF_MAX_EOS)
      return qt_fail(QT_ERR_UNSUPPORTED, "%s: key 'eos_token_id' lists %d ids; at most %d are supported", cx->label,
                     n, QT_HF_MAX_EOS);
    int i = 0;
    for (const cJSON *e = eos->child; e; e = e->next, i++) {
      char key[48];
      snprintf(key, sizeof key, "eos_token_id[%d]", i);
      QT_TRY(as_int(cx, e, key, 0, HF_MAX_TOKEN_ID, &c->eos_token_ids[i]));
    }
    c->n_eos = n;
  } else if (!cJSON_IsNull(eos)) {
    if (!cJSON_IsNumber(eos))
      return qt_fail(QT_ERR_FORMAT, "%s: key 'eos_token_id' must be an integer or a list of integers, got %s",
                     cx->label, json_type_name(eos));
    QT_TRY(as_int(cx, eos, "eos_token_id", 0, HF_MAX_TOKEN_ID, &c->eos_token_ids[0]));
    c->n_eos = 1;
  }
  return QT_OK;
}

/* Sliding window per layer (modeling_mistral.py: config.sliding_window on every
 * layer; configuration_qwen2.py __post_init__ + modeling_qwen2.py: window only
 * with use_sliding_window, on layers whose layer_types entry is
 * "sliding_attention", by default layers >= max_window_layers). */
static qt_status parse_sliding(const hf_ctx *cx, const cJSON *root, qt_hf_config *c) {
  size_t n = (size_t)c->num_hidden_layers;
  c->layer_window = calloc(n, sizeof *c->layer_window);
  if (c->layer_window == NULL)
    return qt_fail(QT_ERR_NOMEM, "%s: cannot allocate %zu layer entries", cx->label, n);
  if (c->arch == QT_HF_LLAMA) return QT_OK;

  /* Both classes default sliding_window to 4096; a JSON null means none. */
  const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
  int64_t window = 4096;
  if (sw != NULL && cJSON_IsNull(sw)) window = 0;
  else if (sw != NULL) QT_TRY(as_int(cx, sw, "sliding_window", 1, HF_MAX_SIZE, &window));

  if (c->arch == QT_HF_MISTRAL) {
    c->sliding_window = window;
    for (size_t i = 0; i < n; i++) c->layer_window[i] = window;
    return QT_OK;
  }
  bool use_sw;
  int64_t max_window_layers;
  QT_TRY(get_bool(cx, root, "use_sliding_window", "", false, &use_sw));
  QT_TRY(get_int(cx, root, "max_window_layers", "", false, 28, 0, HF_MAX_SIZE, &max_window_layers));
  c->sliding_window = use_sw ? window : 0;
  const cJSON *lt = get(root, "layer_types");
  if (lt != NULL) {
    if (!cJSON_IsArray(lt))
      return qt_fail(QT_ERR_FORMAT, "%s: key 'layer_types' must be a list of strings, got %s", cx->label,
                     json_type_name(lt));
    if ((int64_t)cJSON_GetArraySize(lt) != c->num_hidden_layers)
      return qt_fail(QT_ERR_FORMAT, "%s: key 'layer_types' has %d entries but num_hidden_layers is %lld", cx->label,
                     cJSON_GetArraySize(lt), (long long)c->num_hidden_layers);
    size_t i = 0;
    for (const cJSON *e = lt->child; e; e = e->next, i++) {
      if (!cJSON_IsString(e))
        return qt_fail(QT_ERR_FORMAT, "%s: key 'layer_types[%zu]' must be a string, got %s", cx->label, i,
                       json_type_name(e));
      /* "attention" is the legacy spelling of "full_attention"
       * (configuration_utils.py _LEGACY_LAYER_TYPE_REMAP). */
      bool sliding = strcmp(e->valuestring, "sliding_attention") == 0;
      if (!sliding && strcmp(e->valuestring, "full_attention") != 0 && strcmp(e->valuestring, "attention") != 0)
        return qt_fail(QT_ERR_UNSUPPORTED,
                       "%s: key 'layer_types[%zu]' = '%s' is not supported; supported: full_attention, sliding_attention",
                       cx->label, i, e->valuestring);
      c->layer_window[i] = sliding ? c->sliding_window : 0;
    }
  } else {
    for (size_t i = 0; i < n; i++)
      c->layer_window[i] = ((int64_t)i >= max_window_layers) ? c->sliding_window : 0;
  }
  return QT_OK;
}

/* quantization_config (BitsAndBytesConfig.from_dict; field defaults from its
 * __init__: quant type fp4, no double quant, compute float32, storage uint8). */
static qt_status parse_quant(const hf_ctx *cx, const cJSON *root, qt_hf_config *c) {
  const cJSON *q;
  QT_TRY(get_object(cx, root, "quantization_config", &q));
  if (q == NULL) return QT_OK;
  const char *P = "quantization_config.";
  qt_hf_quant_config *qc = &c->quant;
  const char *method;
  QT_TRY(get_string(cx, q, "quant_method", P, &method));
  if (method == NULL)
    return qt_fail(QT_ERR_FORMAT, "%s: required key 'quantization_config.quant_method' is missing", cx->label);
  if (strcmp(method, "bitsandbytes") != 0)
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "%s: key 'quantization_config.quant_method' = '%s' is not supported; supported: bitsandbytes "
                   "(4-bit); use the unquantized model instead",
                   cx->label, method);
  bool in4, in4_private, in8, in8_private;
  QT_TRY(get_bool(cx, q, "_load_in_4bit", P, false, &in4_private));
  QT_TRY(get_bool(cx, q, "load_in_4bit", P, in4_private, &in4));
  QT_TRY(get_bool(cx, q, "_load_in_8bit", P, false, &in8_private));
  QT_TRY(get_bool(cx, q, "load_in_8bit", P, in8_private, &in8));
  if (in8)
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "%s: key 'quantization_config.load_in_8bit' is true: bitsandbytes 8-bit checkpoints are not "
                   "supported; use the unquantized model or a 4-bit checkpoint",
                   cx->label);
  if (!in4)
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "%s: key 'quantization_config.load_in_4bit' is not true: only bitsandbytes 4-bit checkpoints are "
                   "supported",
                   cx->label);
  const char *qtype;
  QT_TRY(get_string(cx, q, "bnb_4bit_quant_type", P, &qtype));
  if (qtype == NULL || strcmp(qtype, "fp4") == 0) qc->quant_type = QT_HF_QUANT_FP4;
  else if (strcmp(qtype, "nf4") == 0) qc->quant_type = QT_HF_QUANT_NF4;
  else
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "%s: key 'quantization_config.bnb_4bit_quant_type' = '%s' is not supported; supported: nf4, fp4",
                   cx->label, qtype);
  QT_TRY(get_bool(cx, q, "bnb_4bit_use_double_quant", P, false, &qc->double_quant));
  static const qt_dtype compute[] = {QT_F32, QT_F16, QT_BF16};
  static const qt_dtype storage[] = {QT_U8, QT_I8, QT_F16, QT_BF16, QT_F32};
  bool found;
  QT_TRY(get_torch_dtype(cx, q, "bnb_4bit_compute_dtype", P, compute, 3, &found, &qc->compute_dtype));
  if (!found) qc->compute_dtype = QT_F32;
  QT_TRY(get_torch_dtype(cx, q, "bnb_4bit_quant_storage", P, storage, 5, &found, &qc->quant_storage));
  if (!found) qc->quant_storage = QT_U8;
  const cJSON *skip = get(q, "llm_int8_skip_modules");
  if (skip != NULL) {
    if (!cJSON_IsArray(skip))
      return qt_fail(QT_ERR_FORMAT, "%s: key 'quantization_config.llm_int8_skip_modules' must be a list of strings, got %s",
                     cx->label, json_type_name(skip));
    size_t n = (size_t)cJSON_GetArraySize(skip);
    if (n > 0) {
      qc->skip_modules = calloc(n, sizeof *qc->skip_modules);
      if (qc->skip_modules == NULL) return qt_fail(QT_ERR_NOMEM, "%s: out of memory", cx->label);
    }
    for (const cJSON *e = skip->child; e; e = e->next) {
      if (!cJSON_IsString(e))
        return qt_fail(QT_ERR_FORMAT,
                       "%s: key 'quantization_config.llm_int8_skip_modules[%zu]' must be a string, got %s", cx->label,
                       qc->n_skip_modules, json_type_name(e));
      qc->skip_modules[qc->n_skip_modules] = strdup(e->valuestring);
      if (qc->skip_modules[qc->n_skip_modules] == NULL) return qt_fail(QT_ERR_NOMEM, "%s: out of memory", cx->label);
      qc->n_skip_modules++;
    }
  }
  qc->present = true;
  return QT_OK;
}

static qt_status parse_root(const hf_ctx *cx, const cJSON *root, qt_hf_config *c) {
  if (!cJSON_IsObject(root))
    return qt_fail(QT_ERR_FORMAT, "%s: top level must be a JSON object, got %s", cx->label, json_type_name(root));
  QT_TRY(check_duplicates(cx, root, "", 0));

  const char *mt;
  QT_TRY(get_string(cx, root, "model_type", "", &mt));
  if (mt == NULL)
    return qt_fail(QT_ERR_FORMAT, "%s: required key 'model_type' is missing; is this a Hugging Face config.json?",
                   cx->label);
  if (strcmp(mt, "llama") == 0) c->arch = QT_HF_LLAMA;
  else if (strcmp(mt, "mistral") == 0) c->arch = QT_HF_MISTRAL;
  else if (strcmp(mt, "qwen2") == 0) c->arch = QT_HF_QWEN2;
  else
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported; supported: llama, mistral, qwen2",
                   cx->label, mt);

  const char *act;
  QT_TRY(get_string(cx, root, "hidden_act", "", &act));
  if (act != NULL && strcmp(act, "silu") != 0)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: key 'hidden_act' = '%s' is not supported; supported: silu", cx->label,
                   act);

  QT_TRY(get_size(cx, root, "hidden_size", true, 0, &c->hidden_size));
  QT_TRY(get_size(cx, root, "intermediate_size", true, 0, &c->intermediate_size));
  QT_TRY(get_size(cx, root, "num_hidden_layers", true, 0, &c->num_hidden_layers));
  QT_TRY(get_size(cx, root, "num_attention_heads", true, 0, &c->num_attention_heads));
  QT_TRY(get_size(cx, root, "vocab_size", true, 0, &c->vocab_size));

  /* Class defaults of num_key_value_heads: llama None -> heads, mistral 8,
   * qwen2 32 (a JSON null means "= heads" for all three, as __post_init__). */
  int64_t kv_default = c->arch == QT_HF_MISTRAL ? 8 : c->arch == QT_HF_QWEN2 ? 32 : c->num_attention_heads;
  if (cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads") != NULL) kv_default = c->num_attention_heads;
  QT_TRY(get_size(cx, root, "num_key_value_heads", false, kv_default, &c->num_key_value_heads));

  if (get(root, "head_dim") != NULL) {
    QT_TRY(get_size(cx, root, "head_dim", false, 0, &c->head_dim));
  } else {
    if (c->hidden_size % c->num_attention_heads != 0)
      return qt_fail(QT_ERR_FORMAT,
                     "%s: key 'hidden_size' (%lld) is not divisible by 'num_attention_heads' (%lld) and there is no "
                     "'head_dim'",
                     cx->label, (long long)c->hidden_size, (long long)c->num_attention_heads);
    c->head_dim = c->hidden_size / c->num_attention_heads;
  }
  /* RoPE rotates pairs (rotate_half in modeling_llama.py): head_dim must be even. */
  if (c->head_dim % 2 != 0)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: key 'head_dim' is %lld; rotary embeddings need an even head_dim",
                   cx->label, (long long)c->head_dim);
  if (c->num_key_value_heads > c->num_attention_heads || c->num_attention_heads % c->num_key_value_heads != 0)
    return qt_fail(QT_ERR_FORMAT,
                   "%s: key 'num_key_value_heads' (%lld) must divide 'num_attention_heads' (%lld)", cx->label,
                   (long long)c->num_key_value_heads, (long long)c->num_attention_heads);
  if (c->num_attention_heads * c->head_dim > HF_MAX_SIZE)
    return qt_fail(QT_ERR_FORMAT, "%s: num_attention_heads * head_dim = %lld is too large", cx->label,
                   (long long)(c->num_attention_heads * c->head_dim));

  int64_t max_pos_default = c->arch == QT_HF_MISTRAL ? 4096 * 32 : c->arch == QT_HF_QWEN2 ? 32768 : 2048;
  QT_TRY(get_size(cx, root, "max_position_embeddings", false, max_pos_default, &c->max_position_embeddings));
  QT_TRY(get_pos_double(cx, root, "rms_norm_eps", "", false, 1e-6, &c->rms_norm_eps));
  QT_TRY(get_bool(cx, root, "tie_word_embeddings", "", false, &c->tie_word_embeddings));

  switch (c->arch) {
    case QT_HF_LLAMA: {
      bool ab, mb;
      QT_TRY(get_bool(cx, root, "attention_bias", "", false, &ab));
      QT_TRY(get_bool(cx, root, "mlp_bias", "", false, &mb));
      c->q_bias = c->k_bias = c->v_bias = c->o_bias = ab;
      c->mlp_bias = mb;
      break;
    }
    case QT_HF_MISTRAL: break; /* modeling_mistral.py: bias=False everywhere */
    case QT_HF_QWEN2:          /* modeling_qwen2.py: q/k/v bias=True, o_proj and MLP bias=False */
      c->q_bias = c->k_bias = c->v_bias = true;
      break;
  }

  int64_t dflt_bos = c->arch == QT_HF_QWEN2 ? -1 : 1, dflt_eos = c->arch == QT_HF_QWEN2 ? -1 : 2;
  QT_TRY(parse_token_ids(cx, root, c, dflt_bos, dflt_eos));

  /* configuration_utils.py: "dtype" wins over the older "torch_dtype". */
  static const qt_dtype model_dtypes[] = {QT_F32, QT_F16, QT_BF16};
  bool found;
  QT_TRY(get_torch_dtype(cx, root, "dtype", "", model_dtypes, 3, &found, &c->dtype));
  if (!found) QT_TRY(get_torch_dtype(cx, root, "torch_dtype", "", model_dtypes, 3, &found, &c->dtype));
  c->has_dtype = found;

  QT_TRY(parse_rope(cx, root, c));
  QT_TRY(parse_sliding(cx, root, c));
  QT_TRY(parse_quant(cx, root, c));
  return QT_OK;
}

/* ---- entry points ---------------------------------------------------------- */

void qt_hf_config_free(qt_hf_config *c) {
  if (c == NULL) return;
  free(c->path);
  free(c->layer_window);
  for (size_t i = 0; i < c->quant.n_skip_modules; i++) free(c->quant.skip_modules[i]);
  free(c->quant.skip_modules);
  memset(c, 0, sizeof *c);
}

qt_status qt_hf_config_parse(const char *json, size_t len, const char *label, qt_hf_config *out) {
  QT_ASSERT(json != NULL && label != NULL && out != NULL);
  memset(out, 0, sizeof *out);
  hf_ctx cx = {label};
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
  if (root == NULL) {
    size_t off = (end != NULL && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
      if (json[i] == '\n') {
        line++;
        col = 1;
      } else {
        col++;
      }
    }
    return qt_fail(QT_ERR_FORMAT, "%s:%zu:%zu: not valid JSON", label, line, col);
  }
  /* Only whitespace may follow the value. */
  for (const char *p = end; p != NULL && p < json + len; p++) {
    if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
      cJSON_Delete(root);
      return qt_fail(QT_ERR_FORMAT, "%s: unexpected text after the JSON object at byte %zu", label,
                     (size_t)(p - json));
    }
  }
  qt_status s = parse_root(&cx, root, out);
  cJSON_Delete(root);
  if (s == QT_OK) {
    out->path = strdup(label);
    if (out->path == NULL) s = qt_fail(QT_ERR_NOMEM, "%s: out of memory", label);
  }
  if (s != QT_OK) qt_hf_config_free(out);
  return s;
}

qt_status qt_hf_config_load(const char *path, qt_hf_config *out) {
  QT_ASSERT(path != NULL && out != NULL);
  memset(out, 0, sizeof *out);
  struct stat st;
  if (stat(path, &st) != 0) return qt_fail(QT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  char file[4096];
  if (S_ISDIR(st.st_mode)) {
    size_t l = strlen(path);
    int n = snprintf(file, sizeof file, "%s%sconfig.json", path, (l > 0 && path[l - 1] == '/') ? "" : "/");
    if (n < 0 || (size_t)n >= sizeof file) return qt_fail(QT_ERR_IO, "%s: path too long", path);
  } else {
    if (strlen(path) >= sizeof file) return qt_fail(QT_ERR_IO, "%s: path too long", path);
    strcpy(file, path);
  }
  FILE *f = fopen(file, "rb");
  if (f == NULL) {
    if (errno == ENOENT && S_ISDIR(st.st_mode))
      return qt_fail(QT_ERR_IO, "%s: no config.json in this directory; a Hugging Face model directory needs one",
                     path);
    return qt_fail(QT_ERR_IO, "%s: cannot open: %s", file, strerror(errno));
  }
  char *buf = malloc(HF_CONFIG_MAX_BYTES + 1);
  if (buf == NULL) {
    fclose(f);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", file);
  }
  size_t n = fread(buf, 1, HF_CONFIG_MAX_BYTES + 1, f);
  int err = ferror(f);
  fclose(f);
  qt_status s;
  if (err) s = qt_fail(QT_ERR_IO, "%s: read error", file);
  else if (n > HF_CONFIG_MAX_BYTES)
    s = qt_fail(QT_ERR_FORMAT, "%s: larger than %d bytes; this is not a config.json", file, HF_CONFIG_MAX_BYTES);
  else s = qt_hf_config_parse(buf, n, file, out);
  free(buf);
  return s;
}
