/* model/hf_config.c — config.json reader for llama / mistral / qwen2 / qwen3 /
 * gemma2 / gemma3 (text, and the text model of a multimodal config) / phi3.
 *
 * Defaults and rules follow transformers 5.24 (see hf_config.h):
 *   models/{llama,mistral,qwen2,qwen3,gemma2,gemma3,phi3}/configuration_*.py
 *   (class fields, __post_init__, Gemma3TextConfig / Phi3Config
 *   convert_rope_params_to_dict, Phi3Config.validate_rope),
 *   models/<family>/modeling_*.py (biases, head_dim, fused projections, q/k
 *   norms, (1 + weight) norms, embedding scale, score scale, soft-caps, sliding
 *   window per layer),
 *   modeling_rope_utils.py (rope_scaling / rope_parameters standardization),
 *   configuration_utils.py (torch_dtype -> dtype),
 *   generation/configuration_utils.py GenerationConfig.from_model_config
 *   (token ids of a multimodal config),
 *   conversion_mapping.py + save_pretrained (a gemma3 multimodal checkpoint's
 *   key names), utils/quantization_config.py BitsAndBytesConfig (quantization
 *   defaults).
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
  const char *kp;    /* prefix of every key in messages: "" or "text_config." */
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
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s' must be an integer, got %s", cx->label, cx->kp, key,
                   json_type_name(v));
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s' must be an integer, got %g", cx->label, cx->kp, key, d);
  if (d < (double)lo || d > (double)hi)
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s' must be in [%lld, %lld], got %.0f", cx->label, cx->kp, key,
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
    if (required) return qt_fail(QT_ERR_FORMAT, "%s: required key '%s%s' is missing", cx->label, cx->kp, full);
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
    if (required) return qt_fail(QT_ERR_FORMAT, "%s: required key '%s%s' is missing", cx->label, cx->kp, full);
    *out = dflt;
    return QT_OK;
  }
  if (!cJSON_IsNumber(v))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s' must be a number, got %s", cx->label, cx->kp, full,
                   json_type_name(v));
  if (!isfinite(v->valuedouble) || !(v->valuedouble > 0.0))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s' must be a finite number > 0, got %g", cx->label, cx->kp, full,
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
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s%s' must be true or false, got %s", cx->label, cx->kp, prefix,
                   key, json_type_name(v));
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
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s%s' must be a string, got %s", cx->label, cx->kp, prefix, key,
                   json_type_name(v));
  *out = v->valuestring;
  return QT_OK;
}

static qt_status get_object(const hf_ctx *cx, const cJSON *obj, const char *key, const cJSON **out) {
  const cJSON *v = get(obj, key);
  *out = NULL;
  if (v == NULL) return QT_OK;
  if (!cJSON_IsObject(v))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%s' must be an object, got %s", cx->label, cx->kp, key,
                   json_type_name(v));
  *out = v;
  return QT_OK;
}

/* ---- names ----------------------------------------------------------------- */

const char *qt_hf_arch_name(qt_hf_arch a) {
  switch (a) {
    case QT_HF_LLAMA: return "llama";
    case QT_HF_MISTRAL: return "mistral";
    case QT_HF_QWEN2: return "qwen2";
    case QT_HF_QWEN3: return "qwen3";
    case QT_HF_GEMMA2: return "gemma2";
    case QT_HF_GEMMA3: return "gemma3";
    case QT_HF_PHI3: return "phi3";
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
  return qt_fail(QT_ERR_UNSUPPORTED, "%s: key '%s%s%s' = '%s' is not supported; supported: %s", cx->label, cx->kp,
                 prefix, key, s, list);
}

/* ---- families -------------------------------------------------------------- */

/* Class defaults of each model_type (the fields of configuration_<family>.py
 * and what __post_init__ fills in). */
typedef struct {
  const char *model_type;
  qt_hf_arch arch;
  int64_t kv_heads;       /* num_key_value_heads; -1: = num_attention_heads */
  int64_t head_dim;       /* 0: hidden_size / num_attention_heads */
  int64_t max_pos;        /* max_position_embeddings */
  double rms_norm_eps;
  bool tie;               /* tie_word_embeddings */
  int64_t bos, eos, pad;  /* token ids; -1: None */
} hf_family;

static const hf_family FAMILIES[] = {
    /* LlamaConfig: num_key_value_heads None -> heads, head_dim None -> hidden / heads. */
    {"llama", QT_HF_LLAMA, -1, 0, 2048, 1e-6, false, 1, 2, -1},
    {"mistral", QT_HF_MISTRAL, 8, 0, 4096 * 32, 1e-6, false, 1, 2, -1},
    {"qwen2", QT_HF_QWEN2, 32, 0, 32768, 1e-6, false, -1, -1, -1},
    /* Qwen3Config: head_dim is a field defaulting to 128, not hidden / heads. */
    {"qwen3", QT_HF_QWEN3, 32, 128, 32768, 1e-6, false, -1, -1, -1},
    {"gemma2", QT_HF_GEMMA2, 4, 256, 8192, 1e-6, true, 2, 1, 0},
    {"gemma3_text", QT_HF_GEMMA3, 4, 256, 131072, 1e-6, true, 2, 1, 0},
    /* Phi3Config has no head_dim field: modeling_phi3.py takes getattr(config,
     * "head_dim", hidden / heads), so a head_dim in the file still counts. */
    {"phi3", QT_HF_PHI3, -1, 0, 4096, 1e-5, false, 1, 32000, 32000},
};

static bool is_gemma(qt_hf_arch a) { return a == QT_HF_GEMMA2 || a == QT_HF_GEMMA3; }

/* ---- sections -------------------------------------------------------------- */

/* One set of RoPE parameters (modeling_rope_utils.py standardize_rope_params):
 * rope_type, else "type", else "default" (implicit_default: the dict was made
 * by transformers with rope_type "default", so a "type" in it is ignored —
 * refused here when it says otherwise); rope_theta, else dflt_theta; llama3's
 * original_max_position_embeddings defaults to max_position_embeddings.
 * scaling_ok: linear and llama3 are accepted besides default. d may be NULL
 * (defaults). */
static qt_status parse_rope_dict(const hf_ctx *cx, const cJSON *d, const char *prefix, double dflt_theta,
                                 bool implicit_default, bool scaling_ok, int64_t max_pos, qt_hf_rope *r) {
  memset(r, 0, sizeof *r);
  r->type = QT_ROPE_DEFAULT;
  r->theta = dflt_theta;
  r->factor = 1.0;
  if (d == NULL) return QT_OK;
  QT_TRY(get_pos_double(cx, d, "rope_theta", prefix, false, dflt_theta, &r->theta));

  const char *type = NULL, *legacy = NULL;
  const char *type_key = "rope_type";
  QT_TRY(get_string(cx, d, "rope_type", prefix, &type));
  QT_TRY(get_string(cx, d, "type", prefix, &legacy));
  if (type == NULL && implicit_default) {
    if (legacy != NULL && strcmp(legacy, "default") != 0)
      return qt_fail(QT_ERR_FORMAT,
                     "%s: key '%s%stype' = '%s' is ignored by transformers here (the rope type stays 'default'); "
                     "write 'rope_type' instead",
                     cx->label, cx->kp, prefix, legacy);
    type = "default";
  }
  if (type == NULL) {
    type_key = "type";
    type = legacy;
  }
  if (type == NULL || strcmp(type, "default") == 0) {
    r->type = QT_ROPE_DEFAULT;
    return QT_OK;
  }
  if (scaling_ok && strcmp(type, "linear") == 0) {
    r->type = QT_ROPE_LINEAR;
    return get_pos_double(cx, d, "factor", prefix, true, 1.0, &r->factor);
  }
  if (scaling_ok && strcmp(type, "llama3") == 0) {
    r->type = QT_ROPE_LLAMA3;
    QT_TRY(get_pos_double(cx, d, "factor", prefix, true, 1.0, &r->factor));
    QT_TRY(get_pos_double(cx, d, "low_freq_factor", prefix, true, 1.0, &r->low_freq_factor));
    QT_TRY(get_pos_double(cx, d, "high_freq_factor", prefix, true, 1.0, &r->high_freq_factor));
    /* _compute_llama3_parameters divides by (high_freq_factor - low_freq_factor). */
    if (!(r->high_freq_factor > r->low_freq_factor))
      return qt_fail(QT_ERR_FORMAT, "%s: key '%s%shigh_freq_factor' (%g) must be greater than low_freq_factor (%g)",
                     cx->label, cx->kp, prefix, r->high_freq_factor, r->low_freq_factor);
    return get_int(cx, d, "original_max_position_embeddings", prefix, false, max_pos, 1, HF_MAX_SIZE,
                   &r->original_max_position_embeddings);
  }
  return qt_fail(QT_ERR_UNSUPPORTED, "%s: key '%s%s%s': rope type '%s' is not supported; supported: %s", cx->label,
                 cx->kp, prefix, type_key, type, scaling_ok ? "default, linear, llama3" : "default");
}

/* Phi3Config.convert_rope_params_to_dict: partial_rotary_factor from the rope
 * dict, else the top-level key, else 1.0; modeling_phi3.py then rotates only
 * int(head_dim * factor) dims of each head (Phi-4-mini: 0.75). */
static qt_status check_partial_rotary(const hf_ctx *cx, const cJSON *m, const cJSON *d, const char *prefix) {
  const char *where = prefix;
  const cJSON *v = d ? get(d, "partial_rotary_factor") : NULL;
  if (v == NULL) {
    where = "";
    v = get(m, "partial_rotary_factor");
  }
  if (v == NULL) return QT_OK;
  if (!cJSON_IsNumber(v))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s%spartial_rotary_factor' must be a number, got %s", cx->label, cx->kp,
                   where, json_type_name(v));
  if (v->valuedouble != 1.0)
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "%s: key '%s%spartial_rotary_factor' is %g: partial rotary embeddings (phi-4-mini) are not "
                   "supported",
                   cx->label, cx->kp, where, v->valuedouble);
  return QT_OK;
}

/* RoPE of llama / mistral / qwen2 / qwen3 / gemma2 / phi3, following
 * modeling_rope_utils.py convert_rope_params_to_dict: rope_scaling (if
 * non-empty) else rope_parameters; its rope_theta, else the top-level key, else
 * 10000. phi3 (Phi3Config.validate_rope) knows only default and longrope
 * ("su", "yarn" are renamed longrope): only default is supported. */
static qt_status parse_rope(const hf_ctx *cx, const cJSON *m, qt_hf_config *c) {
  const cJSON *rs, *rp;
  QT_TRY(get_object(cx, m, "rope_scaling", &rs));
  QT_TRY(get_object(cx, m, "rope_parameters", &rp));
  const cJSON *d = (rs && rs->child) ? rs : rp;
  const char *dname = (d == rs) ? "rope_scaling" : "rope_parameters";
  char prefix[32];
  snprintf(prefix, sizeof prefix, "%s.", dname);

  double top_theta;
  QT_TRY(get_pos_double(cx, m, "rope_theta", "", false, 10000.0, &top_theta));
  /* A dict keyed by layer type (per-layer RoPE) is gemma3's (parse_rope_gemma3). */
  if (d && (get(d, "full_attention") || get(d, "sliding_attention")))
    return qt_fail(QT_ERR_UNSUPPORTED,
                   "%s: key '%s%s' holds per-layer-type RoPE parameters; only one set is supported for %s",
                   cx->label, cx->kp, dname, qt_hf_arch_name(c->arch));
  if (c->arch == QT_HF_PHI3) QT_TRY(check_partial_rotary(cx, m, d, prefix));
  return parse_rope_dict(cx, d, prefix, top_theta, false, c->arch != QT_HF_PHI3, c->max_position_embeddings,
                         &c->rope);
}

/* gemma3 (Gemma3TextConfig.convert_rope_params_to_dict): rope_parameters holds
 * one dict per layer type; absent ones are {"rope_type": "default"}; a
 * rope_scaling (the v4 / Hub layout) is merged into full_attention; full
 * attention's theta defaults to rope_theta else 1e6, sliding attention's to
 * rope_local_base_freq else 1e4. */
static qt_status parse_rope_gemma3(const hf_ctx *cx, const cJSON *m, qt_hf_config *c) {
  const cJSON *rs, *rp, *full = NULL, *sliding = NULL;
  QT_TRY(get_object(cx, m, "rope_scaling", &rs));
  QT_TRY(get_object(cx, m, "rope_parameters", &rp));
  if (rp != NULL) {
    for (const cJSON *e = rp->child; e; e = e->next) {
      if (strcmp(e->string, "full_attention") != 0 && strcmp(e->string, "sliding_attention") != 0)
        return qt_fail(QT_ERR_FORMAT,
                       "%s: key '%srope_parameters.%s': gemma3 keeps one RoPE dict per layer type "
                       "(full_attention, sliding_attention)",
                       cx->label, cx->kp, e->string);
    }
    full = get(rp, "full_attention");
    sliding = get(rp, "sliding_attention");
    if (full && !cJSON_IsObject(full))
      return qt_fail(QT_ERR_FORMAT, "%s: key '%srope_parameters.full_attention' must be an object, got %s",
                     cx->label, cx->kp, json_type_name(full));
    if (sliding && !cJSON_IsObject(sliding))
      return qt_fail(QT_ERR_FORMAT, "%s: key '%srope_parameters.sliding_attention' must be an object, got %s",
                     cx->label, cx->kp, json_type_name(sliding));
  }
  double theta_full, theta_local;
  QT_TRY(get_pos_double(cx, m, "rope_theta", "", false, 1000000.0, &theta_full));
  QT_TRY(get_pos_double(cx, m, "rope_local_base_freq", "", false, 10000.0, &theta_local));

  cJSON *merged = NULL;
  const cJSON *fd = full;
  const char *fprefix = "rope_parameters.full_attention.";
  if (rs != NULL && rs->child != NULL) {
    merged = full ? cJSON_Duplicate(full, true) : cJSON_CreateObject();
    if (merged == NULL) return qt_fail(QT_ERR_NOMEM, "%s: out of memory", cx->label);
    for (const cJSON *e = rs->child; e; e = e->next) {
      cJSON *dup = cJSON_Duplicate(e, true);
      if (dup == NULL) {
        cJSON_Delete(merged);
        return qt_fail(QT_ERR_NOMEM, "%s: out of memory", cx->label);
      }
      cJSON_DeleteItemFromObjectCaseSensitive(merged, e->string);
      cJSON_AddItemToObject(merged, e->string, dup);
    }
    fd = merged;
    fprefix = "rope_scaling.";
  }
  qt_status s = parse_rope_dict(cx, fd, fprefix, theta_full, full == NULL, true, c->max_position_embeddings,
                                &c->rope);
  cJSON_Delete(merged);
  QT_TRY(s);
  c->has_rope_local = true;
  return parse_rope_dict(cx, sliding, "rope_parameters.sliding_attention.", theta_local, false, true,
                         c->max_position_embeddings, &c->rope_local);
}

/* One token id: absent -> dflt (-1: none), null -> none. */
static qt_status parse_token_id(const hf_ctx *cx, const cJSON *obj, const char *key, int64_t dflt, bool *has,
                                int64_t *id) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  *has = false;
  *id = 0;
  if (v == NULL) {
    *has = dflt >= 0;
    *id = *has ? dflt : 0;
  } else if (!cJSON_IsNull(v)) {
    QT_TRY(as_int(cx, v, key, 0, HF_MAX_TOKEN_ID, id));
    *has = true;
  }
  return QT_OK;
}

static qt_status parse_eos(const hf_ctx *cx, const cJSON *obj, int64_t dflt, qt_hf_config *c) {
  const cJSON *eos = cJSON_GetObjectItemCaseSensitive(obj, "eos_token_id");
  c->n_eos = 0;
  if (eos == NULL) {
    if (dflt >= 0) {
      c->n_eos = 1;
      c->eos_token_ids[0] = dflt;
    }
  } else if (cJSON_IsArray(eos)) {
    int n = cJSON_GetArraySize(eos);
    if (n > QT_HF_MAX_EOS)
      return qt_fail(QT_ERR_UNSUPPORTED, "%s: key '%seos_token_id' lists %d ids; at most %d are supported", cx->label,
                     cx->kp, n, QT_HF_MAX_EOS);
    int i = 0;
    for (const cJSON *e = eos->child; e; e = e->next, i++) {
      char key[48];
      snprintf(key, sizeof key, "eos_token_id[%d]", i);
      QT_TRY(as_int(cx, e, key, 0, HF_MAX_TOKEN_ID, &c->eos_token_ids[i]));
    }
    c->n_eos = n;
  } else if (!cJSON_IsNull(eos)) {
    if (!cJSON_IsNumber(eos))
      return qt_fail(QT_ERR_FORMAT, "%s: key '%seos_token_id' must be an integer or a list of integers, got %s",
                     cx->label, cx->kp, json_type_name(eos));
    QT_TRY(as_int(cx, eos, "eos_token_id", 0, HF_MAX_TOKEN_ID, &c->eos_token_ids[0]));
    c->n_eos = 1;
  }
  return QT_OK;
}

/* bos / eos / pad of the model object m with the family's defaults. For a
 * multimodal config (outer != NULL) a non-null outer key wins: the generation
 * defaults come from the outer config first, then its text_config
 * (generation/configuration_utils.py GenerationConfig.from_model_config). */
static qt_status parse_token_ids(const hf_ctx *cx, const hf_ctx *ocx, const cJSON *m, const cJSON *outer,
                                 const hf_family *f, qt_hf_config *c) {
#define FROM(key) (outer && get(outer, key) ? ocx : cx), (outer && get(outer, key) ? outer : m)
  QT_TRY(parse_token_id(FROM("bos_token_id"), "bos_token_id", f->bos, &c->has_bos, &c->bos_token_id));
  QT_TRY(parse_token_id(FROM("pad_token_id"), "pad_token_id", f->pad, &c->has_pad, &c->pad_token_id));
  QT_TRY(parse_eos(FROM("eos_token_id"), f->eos, c));
#undef FROM
  return QT_OK;
}

/* layer_types[i] -> sliding[i] (configuration_utils.py: "attention" is the
 * legacy spelling of "full_attention", _LEGACY_LAYER_TYPE_REMAP). Returns
 * false in *given when the key is absent. */
static qt_status parse_layer_types(const hf_ctx *cx, const cJSON *m, qt_hf_config *c, bool *given) {
  const cJSON *lt = get(m, "layer_types");
  *given = lt != NULL;
  if (lt == NULL) return QT_OK;
  if (!cJSON_IsArray(lt))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%slayer_types' must be a list of strings, got %s", cx->label, cx->kp,
                   json_type_name(lt));
  if ((int64_t)cJSON_GetArraySize(lt) != c->num_hidden_layers)
    return qt_fail(QT_ERR_FORMAT, "%s: key '%slayer_types' has %d entries but num_hidden_layers is %lld", cx->label,
                   cx->kp, cJSON_GetArraySize(lt), (long long)c->num_hidden_layers);
  size_t i = 0;
  for (const cJSON *e = lt->child; e; e = e->next, i++) {
    if (!cJSON_IsString(e))
      return qt_fail(QT_ERR_FORMAT, "%s: key '%slayer_types[%zu]' must be a string, got %s", cx->label, cx->kp, i,
                     json_type_name(e));
    bool sliding = strcmp(e->valuestring, "sliding_attention") == 0;
    if (!sliding && strcmp(e->valuestring, "full_attention") != 0 && strcmp(e->valuestring, "attention") != 0)
      return qt_fail(QT_ERR_UNSUPPORTED,
                     "%s: key '%slayer_types[%zu]' = '%s' is not supported; supported: full_attention, sliding_attention",
                     cx->label, cx->kp, i, e->valuestring);
    c->layer_window[i] = sliding ? 1 : 0; /* a flag here; parse_sliding puts the window in */
  }
  return QT_OK;
}

/* Sliding window per layer, as each modeling_*.py applies it:
 *   mistral, phi3: config.sliding_window on every layer (phi3 default None);
 *   qwen2, qwen3: only with use_sliding_window (__post_init__), on layers whose
 *     layer_types entry is "sliding_attention", by default layers >= max_window_layers;
 *   gemma2: layer_types, by default sliding where (i + 1) % 2 != 0 (even i);
 *   gemma3: layer_types, by default sliding where (i + 1) % sliding_window_pattern != 0
 *     (pattern default 6).
 * A JSON null sliding_window means none (0). */
static qt_status parse_sliding(const hf_ctx *cx, const cJSON *m, qt_hf_config *c) {
  size_t n = (size_t)c->num_hidden_layers;
  c->layer_window = calloc(n, sizeof *c->layer_window);
  if (c->layer_window == NULL)
    return qt_fail(QT_ERR_NOMEM, "%s: cannot allocate %zu layer entries", cx->label, n);
  if (c->arch == QT_HF_LLAMA) return QT_OK;

  const cJSON *sw = cJSON_GetObjectItemCaseSensitive(m, "sliding_window");
  int64_t window = c->arch == QT_HF_PHI3 ? 0 : 4096;
  if (sw != NULL && cJSON_IsNull(sw)) window = 0;
  else if (sw != NULL) QT_TRY(as_int(cx, sw, "sliding_window", 1, HF_MAX_SIZE, &window));

  if (c->arch == QT_HF_MISTRAL || c->arch == QT_HF_PHI3) {
    c->sliding_window = window;
    for (size_t i = 0; i < n; i++) c->layer_window[i] = window;
    return QT_OK;
  }
  bool given;
  if (is_gemma(c->arch)) {
    /* A bidirectional (non-causal) model is an encoder, not ours. */
    bool bidir;
    QT_TRY(get_bool(cx, m, "use_bidirectional_attention", "", false, &bidir));
    if (bidir)
      return qt_fail(QT_ERR_UNSUPPORTED,
                     "%s: key '%suse_bidirectional_attention' is true: bidirectional attention is not supported",
                     cx->label, cx->kp);
    int64_t pattern = 2;
    if (c->arch == QT_HF_GEMMA3)
      QT_TRY(get_int(cx, m, "sliding_window_pattern", "", false, 6, 1, HF_MAX_SIZE, &pattern));
    c->sliding_window = window;
    QT_TRY(parse_layer_types(cx, m, c, &given));
    for (size_t i = 0; i < n; i++) {
      bool sliding = given ? c->layer_window[i] != 0 : ((int64_t)i + 1) % pattern != 0;
      c->layer_window[i] = sliding ? window : 0;
    }
    return QT_OK;
  }
  bool use_sw;
  int64_t max_window_layers;
  QT_TRY(get_bool(cx, m, "use_sliding_window", "", false, &use_sw));
  QT_TRY(get_int(cx, m, "max_window_layers", "", false, 28, 0, HF_MAX_SIZE, &max_window_layers));
  c->sliding_window = use_sw ? window : 0;
  QT_TRY(parse_layer_types(cx, m, c, &given));
  for (size_t i = 0; i < n; i++) {
    bool sliding = given ? c->layer_window[i] != 0 : (int64_t)i >= max_window_layers;
    c->layer_window[i] = sliding ? c->sliding_window : 0;
  }
  return QT_OK;
}

/* A soft-cap: absent -> dflt, null -> 0 (none), else a number > 0. */
static qt_status get_softcap(const hf_ctx *cx, const cJSON *m, const char *key, double dflt, double *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
  *out = dflt;
  if (v == NULL) return QT_OK;
  *out = 0.0;
  if (cJSON_IsNull(v)) return QT_OK;
  return get_pos_double(cx, m, key, "", false, 0.0, out);
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

/* The text model's keys: m is the config.json object (or a gemma3 config's
 * text_config, then outer is the whole file and ocx its context). */
static qt_status parse_model(const hf_ctx *cx, const hf_ctx *ocx, const cJSON *m, const cJSON *outer,
                             const hf_family *f, qt_hf_config *c) {
  c->arch = f->arch;
  bool gemma = is_gemma(c->arch);

  /* The MLP's activation: ACT2FN[config.hidden_act], gemma's
   * ACT2FN[config.hidden_activation] (its hidden_act is not read). */
  const char *act_key = gemma ? "hidden_activation" : "hidden_act";
  const char *act;
  QT_TRY(get_string(cx, m, act_key, "", &act));
  if (act == NULL) act = gemma ? "gelu_pytorch_tanh" : "silu";
  if (strcmp(act, "silu") == 0) c->act = QT_HF_ACT_SILU;
  else if (strcmp(act, "gelu_pytorch_tanh") == 0) c->act = QT_HF_ACT_GELU_TANH;
  else
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: key '%s%s' = '%s' is not supported; supported: silu, gelu_pytorch_tanh",
                   cx->label, cx->kp, act_key, act);

  /* Sizes are required, except for gemma3, whose multimodal configs on the Hub
   * leave most of the text_config to Gemma3TextConfig's defaults. */
  bool req = c->arch != QT_HF_GEMMA3;
  QT_TRY(get_size(cx, m, "hidden_size", req, 2304, &c->hidden_size));
  QT_TRY(get_size(cx, m, "intermediate_size", req, 9216, &c->intermediate_size));
  QT_TRY(get_size(cx, m, "num_hidden_layers", req, 26, &c->num_hidden_layers));
  QT_TRY(get_size(cx, m, "num_attention_heads", req, 8, &c->num_attention_heads));
  QT_TRY(get_size(cx, m, "vocab_size", req, 262208, &c->vocab_size));

  /* A JSON null num_key_value_heads means "= heads" (__post_init__ of the
   * families whose field is Optional). */
  int64_t kv_default = f->kv_heads < 0 ? c->num_attention_heads : f->kv_heads;
  if (cJSON_GetObjectItemCaseSensitive(m, "num_key_value_heads") != NULL) kv_default = c->num_attention_heads;
  QT_TRY(get_size(cx, m, "num_key_value_heads", false, kv_default, &c->num_key_value_heads));

  /* Gemma2Config / Gemma3TextConfig.validate_architecture check this even
   * though head_dim is given. */
  if (gemma && c->hidden_size % c->num_attention_heads != 0)
    return qt_fail(QT_ERR_FORMAT, "%s: key '%shidden_size' (%lld) is not a multiple of 'num_attention_heads' (%lld)",
                   cx->label, cx->kp, (long long)c->hidden_size, (long long)c->num_attention_heads);
  if (get(m, "head_dim") != NULL) {
    QT_TRY(get_size(cx, m, "head_dim", false, 0, &c->head_dim));
  } else if (f->head_dim > 0) {
    c->head_dim = f->head_dim;
  } else {
    if (c->hidden_size % c->num_attention_heads != 0)
      return qt_fail(QT_ERR_FORMAT,
                     "%s: key '%shidden_size' (%lld) is not divisible by 'num_attention_heads' (%lld) and there is "
                     "no 'head_dim'",
                     cx->label, cx->kp, (long long)c->hidden_size, (long long)c->num_attention_heads);
    c->head_dim = c->hidden_size / c->num_attention_heads;
  }
  /* RoPE rotates pairs (rotate_half in modeling_llama.py): head_dim must be even. */
  if (c->head_dim % 2 != 0)
    return qt_fail(QT_ERR_UNSUPPORTED, "%s: key '%shead_dim' is %lld; rotary embeddings need an even head_dim",
                   cx->label, cx->kp, (long long)c->head_dim);
  if (c->num_key_value_heads > c->num_attention_heads || c->num_attention_heads % c->num_key_value_heads != 0)
    return qt_fail(QT_ERR_FORMAT, "%s: key '%snum_key_value_heads' (%lld) must divide 'num_attention_heads' (%lld)",
                   cx->label, cx->kp, (long long)c->num_key_value_heads, (long long)c->num_attention_heads);
  if (c->num_attention_heads * c->head_dim > HF_MAX_SIZE)
    return qt_fail(QT_ERR_FORMAT, "%s: num_attention_heads * head_dim = %lld is too large", cx->label,
                   (long long)(c->num_attention_heads * c->head_dim));

  QT_TRY(get_size(cx, m, "max_position_embeddings", false, f->max_pos, &c->max_position_embeddings));
  QT_TRY(get_pos_double(cx, m, "rms_norm_eps", "", false, f->rms_norm_eps, &c->rms_norm_eps));
  /* Gemma3ForConditionalGeneration ties lm_head by the outer config's flag
   * (Gemma3Config.tie_word_embeddings, default True). */
  if (outer) QT_TRY(get_bool(ocx, outer, "tie_word_embeddings", "", true, &c->tie_word_embeddings));
  else QT_TRY(get_bool(cx, m, "tie_word_embeddings", "", f->tie, &c->tie_word_embeddings));

  /* Which Linear has a bias (modeling_<family>.py). */
  switch (c->arch) {
    case QT_HF_LLAMA: {
      bool ab, mb;
      QT_TRY(get_bool(cx, m, "attention_bias", "", false, &ab));
      QT_TRY(get_bool(cx, m, "mlp_bias", "", false, &mb));
      c->q_bias = c->k_bias = c->v_bias = c->o_bias = ab;
      c->mlp_bias = mb;
      break;
    }
    case QT_HF_MISTRAL: /* bias=False everywhere */
    case QT_HF_PHI3:    /* qkv_proj, o_proj, gate_up_proj, down_proj: bias=False */
      break;
    case QT_HF_QWEN2: /* q/k/v bias=True, o_proj and MLP bias=False */
      c->q_bias = c->k_bias = c->v_bias = true;
      break;
    case QT_HF_QWEN3: /* q/k/v/o bias=config.attention_bias, MLP bias=False */
    case QT_HF_GEMMA2:
    case QT_HF_GEMMA3: {
      bool ab;
      QT_TRY(get_bool(cx, m, "attention_bias", "", false, &ab));
      c->q_bias = c->k_bias = c->v_bias = c->o_bias = ab;
      break;
    }
  }

  /* What the family's modeling_*.py builds around the common decoder. */
  c->fused_qkv = c->fused_gate_up = c->arch == QT_HF_PHI3;
  c->qk_norm = c->arch == QT_HF_QWEN3 || c->arch == QT_HF_GEMMA3;
  c->norm_plus_one = c->sandwich_norm = c->embed_scale = gemma;
  /* Score scale: self.scaling = head_dim**-0.5, gemma query_pre_attn_scalar**-0.5
   * (pow, as Python's float power). */
  if (gemma) {
    double qpas;
    QT_TRY(get_pos_double(cx, m, "query_pre_attn_scalar", "", false, 256.0, &qpas));
    c->attn_scale = pow(qpas, -0.5);
    QT_TRY(get_softcap(cx, m, "attn_logit_softcapping", c->arch == QT_HF_GEMMA2 ? 50.0 : 0.0, &c->attn_softcap));
    QT_TRY(get_softcap(cx, m, "final_logit_softcapping", c->arch == QT_HF_GEMMA2 ? 30.0 : 0.0, &c->final_softcap));
  } else {
    c->attn_scale = pow((double)c->head_dim, -0.5);
  }

  QT_TRY(parse_token_ids(cx, ocx, m, outer, f, c));

  /* configuration_utils.py: "dtype" wins over the older "torch_dtype"; a
   * multimodal config's own dtype over its text_config's. */
  static const qt_dtype model_dtypes[] = {QT_F32, QT_F16, QT_BF16};
  bool found = false;
  if (outer) {
    QT_TRY(get_torch_dtype(ocx, outer, "dtype", "", model_dtypes, 3, &found, &c->dtype));
    if (!found) QT_TRY(get_torch_dtype(ocx, outer, "torch_dtype", "", model_dtypes, 3, &found, &c->dtype));
  }
  if (!found) QT_TRY(get_torch_dtype(cx, m, "dtype", "", model_dtypes, 3, &found, &c->dtype));
  if (!found) QT_TRY(get_torch_dtype(cx, m, "torch_dtype", "", model_dtypes, 3, &found, &c->dtype));
  c->has_dtype = found;

  if (c->arch == QT_HF_GEMMA3) QT_TRY(parse_rope_gemma3(cx, m, c));
  else QT_TRY(parse_rope(cx, m, c));
  QT_TRY(parse_sliding(cx, m, c));
  /* save_pretrained writes a Gemma3ForConditionalGeneration's decoder as
   * language_model.model.* (the original checkpoint layout: transformers
   * reverts conversion_mapping.py's "llava" renaming on save), tied lm_head
   * not written; every other model here as model.*. */
  snprintf(c->weight_prefix, sizeof c->weight_prefix, "%s", outer ? "language_model.model." : "model.");
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
  const hf_family *gemma3_text = NULL;
  for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++)
    if (FAMILIES[i].arch == QT_HF_GEMMA3) gemma3_text = &FAMILIES[i];

  if (strcmp(mt, "gemma3") == 0) {
    /* Gemma3Config (multimodal): the decoder is its text_config, a
     * Gemma3TextConfig (class defaults when absent). */
    const cJSON *tc;
    QT_TRY(get_object(cx, root, "text_config", &tc));
    hf_ctx tcx = {cx->label, "text_config."};
    const char *tmt;
    QT_TRY(get_string(&tcx, tc, "model_type", "", &tmt));
    if (tmt != NULL && strcmp(tmt, "gemma3_text") != 0)
      return qt_fail(QT_ERR_UNSUPPORTED, "%s: key 'text_config.model_type' = '%s' is not supported; supported: gemma3_text",
                     cx->label, tmt);
    QT_TRY(parse_model(&tcx, cx, tc, root, gemma3_text, c));
  } else {
    const hf_family *f = NULL;
    for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++)
      if (strcmp(mt, FAMILIES[i].model_type) == 0) f = &FAMILIES[i];
    if (f == NULL)
      return qt_fail(QT_ERR_UNSUPPORTED,
                     "%s: model_type '%s' is not supported; supported: llama, mistral, qwen2, qwen3, gemma2, "
                     "gemma3_text, gemma3 (its text model), phi3",
                     cx->label, mt);
    QT_TRY(parse_model(cx, cx, root, NULL, f, c));
  }
  return parse_quant(cx, root, c);
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
  hf_ctx cx = {label, ""};
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
