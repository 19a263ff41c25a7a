/* lora/lora.c — LoRA adapters (lora.h documents the contract; facts in
 * ../shared/docs/reference/formats.md section 4). */
#include "lora/lora.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fs.h"
#include "common/half.h"
#include "common/philox.h"
#include "common/safetensors.h"

struct qt_lora {
  qt_lora_config cfg;
  double scale;
  int64_t L;
  qt_lora_tensor *t;       /* n tensors: per adapted module A then B */
  size_t n;
  int32_t (*idx)[QT_PROJ_COUNT]; /* (L, 7): index of the module's A in t, or -1 */
  int32_t *tape_id;        /* (n) after attach, else -1 */
  /* dropout */
  uint64_t step;
  bool training;
  uint8_t *(*mask)[QT_PROJ_COUNT]; /* (L, 7) buffers of mask_cap[l][p] bytes */
  int64_t (*mask_cap)[QT_PROJ_COUNT];
  /* what mask[l][p] holds: the first mask_len bytes of step mask_step's mask
   * (0: nothing). A checkpointed layer records its forward again in backward
   * with the same step and N: the mask is reused, not drawn twice. */
  int64_t (*mask_len)[QT_PROJ_COUNT];
  uint64_t (*mask_step)[QT_PROJ_COUNT];
};

static const char *const TARGET[QT_PROJ_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                  "gate_proj", "up_proj", "down_proj",
                                                  "qkv_proj", "gate_up_proj"};

bool qt_lora_target_from_name(const char *name, unsigned *bit) {
  for (int p = 0; p < QT_PROJ_COUNT; p++)
    if (strcmp(name, TARGET[p]) == 0) {
      *bit = 1u << p;
      return true;
    }
  return false;
}

/* The Philox subsequence of a module's tensor (and of its dropout masks); a
 * fused projection uses the stream of the one whose place it takes. */
static uint64_t module_stream(int layer, qt_proj p) {
  return (uint64_t)layer * 8u + (uint64_t)qt_proj_slot(p);
}

/* splitmix64 finalizer: mixes (seed, step) into one Philox key. */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

unsigned qt_lora_resolve_targets(const qt_model *m, unsigned targets) {
  if (targets != QT_LORA_ALL_LINEAR) return targets;
  unsigned present = 0;
  for (int p = 0; p < QT_PROJ_COUNT; p++)
    if (qt_model_has_proj(m, (qt_proj)p)) present |= 1u << p;
  return present;
}

static qt_status lora_alloc(const qt_model *m, const qt_lora_config *cfg, qt_lora **out) {
  *out = NULL;
  if (cfg->r < 1) return qt_fail(QT_ERR_INVALID, "lora.r must be >= 1 (got %d)", cfg->r);
  if (!(cfg->dropout >= 0 && cfg->dropout < 1))
    return qt_fail(QT_ERR_INVALID, "lora.dropout must be in [0, 1) (got %g)", cfg->dropout);
  if (!(cfg->alpha > 0 && isfinite(cfg->alpha)))
    return qt_fail(QT_ERR_INVALID, "lora.alpha must be a positive number (got %g)", cfg->alpha);
  if ((cfg->targets & QT_LORA_ALL_LINEAR) == 0 || (cfg->targets & ~QT_LORA_ALL_LINEAR))
    return qt_fail(QT_ERR_INVALID, "lora.target_modules selects no projection");
  /* all-linear: the projections this family has; a named module it lacks is
   * an error, as PEFT's "Target modules {...} not found in the base model" */
  unsigned present = qt_lora_resolve_targets(m, QT_LORA_ALL_LINEAR);
  unsigned targets = qt_lora_resolve_targets(m, cfg->targets);
  for (int p = 0; p < QT_PROJ_COUNT; p++)
    if (((targets & ~present) >> p) & 1u) {
      char have[160] = "";
      for (int q = 0; q < QT_PROJ_COUNT; q++)
        if ((present >> q) & 1u) {
          size_t n = strlen(have);
          snprintf(have + n, sizeof have - n, "%s%s", n ? ", " : "", TARGET[q]);
        }
      return qt_fail(QT_ERR_CONFIG, "lora.target_modules: %s is not a module of this %s model; "
                                    "its linears are %s (or write all-linear)",
                     TARGET[p], qt_hf_arch_name(m->cfg.arch), have);
    }
  qt_lora *l = calloc(1, sizeof *l);
  if (!l) return qt_fail(QT_ERR_NOMEM, "lora: cannot allocate");
  l->cfg = *cfg;
  l->cfg.targets = targets;
  /* PEFT layer.py update_layer: scaling = lora_alpha / r, or / sqrt(r) with use_rslora. */
  l->scale = cfg->use_rslora ? cfg->alpha / sqrt((double)cfg->r) : cfg->alpha / (double)cfg->r;
  l->L = m->L;
  int per_layer = 0;
  for (int p = 0; p < QT_PROJ_COUNT; p++) per_layer += (targets >> p) & 1u;
  l->n = (size_t)(2 * per_layer * m->L);
  l->t = calloc(l->n, sizeof *l->t);
  l->tape_id = calloc(l->n, sizeof *l->tape_id);
  l->idx = calloc((size_t)m->L, sizeof *l->idx);
  l->mask = calloc((size_t)m->L, sizeof *l->mask);
  l->mask_cap = calloc((size_t)m->L, sizeof *l->mask_cap);
  l->mask_len = calloc((size_t)m->L, sizeof *l->mask_len);
  l->mask_step = calloc((size_t)m->L, sizeof *l->mask_step);
  if (!l->t || !l->tape_id || !l->idx || !l->mask || !l->mask_cap || !l->mask_len || !l->mask_step) {
    size_t n = l->n;
    qt_lora_free(&l);
    return qt_fail(QT_ERR_NOMEM, "lora: cannot allocate %zu adapter tensors", n);
  }
  size_t k = 0;
  for (int64_t layer = 0; layer < m->L; layer++)
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      l->idx[layer][p] = -1;
      if (!((targets >> p) & 1u)) continue;
      const qt_model_linear *lin = &m->layers[layer].proj[p];
      l->idx[layer][p] = (int32_t)k;
      for (int isB = 0; isB < 2; isB++, k++) {
        qt_lora_tensor *t = &l->t[k];
        t->layer = (int)layer;
        t->proj = (qt_proj)p;
        t->is_B = isB;
        t->rows = isB ? lin->out : cfg->r;
        t->cols = isB ? cfg->r : lin->in;
        /* PEFT's key: base_model.model. + the module's name in the base model */
        snprintf(t->name, sizeof t->name, "base_model.model.%s.lora_%c.weight", lin->name,
                 isB ? 'B' : 'A');
        size_t n = (size_t)(t->rows * t->cols);
        t->bf16 = calloc(n, sizeof *t->bf16);
        t->data = calloc(n, sizeof *t->data);
        t->grad = calloc(n, sizeof *t->grad);
        t->master = cfg->master_fp32 ? calloc(n, sizeof *t->master) : NULL;
        if (!t->bf16 || !t->data || !t->grad || (cfg->master_fp32 && !t->master)) {
          qt_lora_free(&l);
          return qt_fail(QT_ERR_NOMEM, "lora: cannot allocate %s", "adapter tensors");
        }
      }
    }
  for (size_t i = 0; i < l->n; i++) l->tape_id[i] = -1;
  *out = l;
  return QT_OK;
}

qt_status qt_lora_init(const qt_model *m, const qt_lora_config *cfg, qt_lora **out) {
  qt_lora *l;
  QT_TRY(lora_alloc(m, cfg, &l));
  for (size_t i = 0; i < l->n; i++) {
    qt_lora_tensor *t = &l->t[i];
    int64_t n = t->rows * t->cols;
    if (t->is_B) continue; /* nn.init.zeros_(lora_B.weight): calloc'd */
    /* kaiming_uniform_(A, a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in. */
    double bound = 1.0 / sqrt((double)t->cols);
    qt_philox rng;
    qt_philox_init(&rng, cfg->seed, module_stream(t->layer, t->proj), 0);
    for (int64_t j = 0; j < n; j++) {
      float u = qt_philox_next_uniform(&rng); /* (0, 1] */
      float a = (float)(bound * (2.0 * (double)u - 1.0));
      t->bf16[j] = qt_bf16_from_f32(a);
      if (t->master) t->master[j] = a;
    }
  }
  qt_lora_sync(l);
  *out = l;
  return QT_OK;
}

void qt_lora_free(qt_lora **lp) {
  if (!lp || !*lp) return;
  qt_lora *l = *lp;
  if (l->t)
    for (size_t i = 0; i < l->n; i++) {
      free(l->t[i].bf16);
      free(l->t[i].data);
      free(l->t[i].grad);
      free(l->t[i].master);
    }
  if (l->mask)
    for (int64_t layer = 0; layer < l->L; layer++)
      for (int p = 0; p < QT_PROJ_COUNT; p++) free(l->mask[layer][p]);
  free(l->t);
  free(l->tape_id);
  free(l->idx);
  free(l->mask);
  free(l->mask_cap);
  free(l->mask_len);
  free(l->mask_step);
  free(l);
  *lp = NULL;
}

const qt_lora_config *qt_lora_get_config(const qt_lora *l) { return &l->cfg; }
double qt_lora_scale(const qt_lora *l) { return l->scale; }

qt_lora_tensor *qt_lora_tensors(qt_lora *l, size_t *n) {
  *n = l->n;
  return l->t;
}

void qt_lora_sync(qt_lora *l) {
  for (size_t i = 0; i < l->n; i++) {
    qt_lora_tensor *t = &l->t[i];
    size_t n = (size_t)(t->rows * t->cols);
    if (t->master)
      memcpy(t->data, t->master, n * sizeof(float));
    else
      qt_bf16_to_f32_n(t->data, t->bf16, n);
  }
}

void qt_lora_zero_grad(qt_lora *l) {
  for (size_t i = 0; i < l->n; i++)
    memset(l->t[i].grad, 0, (size_t)(l->t[i].rows * l->t[i].cols) * sizeof(float));
}

qt_status qt_lora_attach(qt_lora *l, qt_tape *tape) {
  for (size_t i = 0; i < l->n; i++) {
    qt_lora_tensor *t = &l->t[i];
    QT_TRY(qt_tape_trainable(tape, t->name, t->data, t->grad, t->rows, t->cols, &l->tape_id[i]));
  }
  return QT_OK;
}

void qt_lora_set_step(qt_lora *l, uint64_t step, bool training) {
  l->step = step;
  l->training = training;
}

/* The Philox stream of the dropout mask of (step, layer, proj): the key mixes
 * the seed with the step (so every step draws new masks, and a recompute or a
 * resumed run of the same step the same ones), the subsequence is the
 * module's. The one definition: the hook's masks (fill_mask), and
 * qt_lora_dropout_mask / qt_lora_dropout_stream (the GPU path) derive it here. */
static void mask_stream(const qt_lora *l, int layer, qt_proj p, uint64_t *key,
                        uint64_t *subsequence) {
  *key = mix64(l->cfg.seed ^ mix64(l->step + 0x9E3779B97F4A7C15ull));
  *subsequence = module_stream(layer, p);
}

/* The keep mask (n = N * In bytes) of (step, layer, proj): 1 with probability
 * 1 - p; the bytes are qt_philox_keep_mask's (word i of mask_stream's Philox
 * stream compared with the threshold of (float)p). */
static void fill_mask(const qt_lora *l, int layer, qt_proj p, int64_t n, uint8_t *m) {
  uint64_t key, sub;
  mask_stream(l, layer, p, &key, &sub);
  qt_philox_keep_mask(m, n, (float)l->cfg.dropout, key, sub);
}

/* The hook's mask buffer of (layer, proj), grown to N * In, filled (unless it
 * already holds this step's mask of that length). */
static qt_status dropout_mask(qt_lora *l, int layer, qt_proj p, int64_t N, int64_t In,
                              const uint8_t **mask) {
  int64_t n = N * In;
  if (n > 0 && l->mask_len[layer][p] == n && l->mask_step[layer][p] == l->step) {
    *mask = l->mask[layer][p];
    return QT_OK;
  }
  l->mask_len[layer][p] = 0;
  if (l->mask_cap[layer][p] < n) {
    uint8_t *b = realloc(l->mask[layer][p], (size_t)n);
    if (!b) return qt_fail(QT_ERR_NOMEM, "lora: cannot allocate a dropout mask of %lld bytes",
                           (long long)n);
    l->mask[layer][p] = b;
    l->mask_cap[layer][p] = n;
  }
  uint8_t *m = l->mask[layer][p];
  fill_mask(l, layer, p, n, m);
  l->mask_len[layer][p] = n;
  l->mask_step[layer][p] = l->step;
  *mask = m;
  return QT_OK;
}

qt_status qt_lora_dropout_mask(const qt_lora *l, int layer, qt_proj proj, int64_t N, uint8_t *mask,
                               double *keep_scale, bool *has) {
  QT_ASSERT(l && keep_scale && has && N >= 0 && (mask || N == 0));
  *has = false;
  *keep_scale = 1.0;
  if (layer < 0 || layer >= l->L || (int)proj < 0 || (int)proj >= QT_PROJ_COUNT)
    return qt_fail(QT_ERR_INVALID, "lora: no module (layer %d, proj %d) in a %lld-layer model",
                   layer, (int)proj, (long long)l->L);
  int32_t k = l->idx[layer][proj];
  if (k < 0 || !l->training || !(l->cfg.dropout > 0)) return QT_OK;
  fill_mask(l, layer, proj, N * l->t[k].cols, mask);
  *keep_scale = 1.0 / (1.0 - l->cfg.dropout);
  *has = true;
  return QT_OK;
}

qt_status qt_lora_dropout_stream(const qt_lora *l, int layer, qt_proj proj, uint64_t *key,
                                 uint64_t *subsequence, int64_t *threshold, double *keep_scale,
                                 bool *has) {
  QT_ASSERT(l && key && subsequence && threshold && keep_scale && has);
  *key = 0;
  *subsequence = 0;
  *threshold = -1;
  *keep_scale = 1.0;
  *has = false;
  if (layer < 0 || layer >= l->L || (int)proj < 0 || (int)proj >= QT_PROJ_COUNT)
    return qt_fail(QT_ERR_INVALID, "lora: no module (layer %d, proj %d) in a %lld-layer model",
                   layer, (int)proj, (long long)l->L);
  int32_t k = l->idx[layer][proj];
  if (k < 0 || !l->training || !(l->cfg.dropout > 0)) return QT_OK;
  mask_stream(l, layer, proj, key, subsequence);
  /* the float p fill_mask hands qt_philox_keep_mask, so the bits agree */
  *threshold = qt_philox_keep_threshold((float)l->cfg.dropout);
  *keep_scale = 1.0 / (1.0 - l->cfg.dropout);
  *has = true;
  return QT_OK;
}

static qt_status branch(void *ctx, qt_tape *t, int layer, qt_proj p, int64_t N, qt_tape_lora *br,
                        bool *has) {
  (void)t;
  qt_lora *l = ctx;
  *has = false;
  if (layer < 0 || layer >= l->L) return QT_OK;
  int32_t k = l->idx[layer][p];
  if (k < 0) return QT_OK;
  QT_ASSERTF(l->tape_id[k] >= 0, "lora: qt_lora_attach was not called before recording");
  *br = (qt_tape_lora){.A = l->tape_id[k], .B = l->tape_id[k + 1], .scale = l->scale,
                       .mask = NULL, .keep_scale = 1.0};
  if (l->training && l->cfg.dropout > 0) {
    QT_TRY(dropout_mask(l, layer, p, N, l->t[k].cols, &br->mask));
    br->keep_scale = 1.0 / (1.0 - l->cfg.dropout);
  }
  *has = true;
  return QT_OK;
}

qt_model_adapter qt_lora_adapter(qt_lora *l) {
  return (qt_model_adapter){.ctx = l, .branch = branch};
}

void qt_lora_merge_weight(const qt_lora *l, int layer, qt_proj p, float *w) {
  QT_ASSERT(layer >= 0 && layer < l->L);
  int32_t k = l->idx[layer][p];
  if (k < 0) return;
  const qt_lora_tensor *A = &l->t[k], *B = &l->t[k + 1];
  int64_t O = B->rows, I = A->cols, R = A->rows;
  /* PEFT get_delta_weight: (B @ A) * scaling in fp32, then W += delta. */
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      float acc = 0;
      for (int64_t r = 0; r < R; r++) acc += B->data[o * R + r] * A->data[r * I + i];
      w[o * I + i] += acc * (float)l->scale;
    }
}

qt_status qt_lora_merge_into_model(const qt_lora *l, qt_model *m) {
  QT_ASSERT(l->L == m->L);
  for (int64_t layer = 0; layer < m->L; layer++)
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      if (l->idx[layer][p] < 0) continue;
      qt_model_linear *lin = &m->layers[layer].proj[p];
      if (lin->quantized) {
        float *w = malloc((size_t)(lin->out * lin->in) * sizeof(float));
        if (!w) return qt_fail(QT_ERR_NOMEM, "lora merge: cannot allocate %s", lin->name);
        qt_status s = qt_model_linear_weight(m, lin, w);
        if (s != QT_OK) {
          free(w);
          return s;
        }
        qt_quant_weight_free(&lin->q);
        lin->quantized = false;
        lin->dense = w;
      }
      qt_lora_merge_weight(l, (int)layer, (qt_proj)p, lin->dense);
    }
  return QT_OK;
}

/* ---- PEFT adapter directories ---------------------------------------------- */

static qt_status path_join(char *buf, size_t cap, const char *dir, const char *file) {
  int n = snprintf(buf, cap, "%s/%s", dir, file);
  if (n < 0 || (size_t)n >= cap) return qt_fail(QT_ERR_INVALID, "%s: path too long", dir);
  return QT_OK;
}

qt_status qt_lora_save_peft(const qt_lora *l, const char *dir, const char *base_model,
                            qt_dtype dtype) {
  if (dtype != QT_F32 && dtype != QT_BF16 && dtype != QT_F16)
    return qt_fail(QT_ERR_INVALID, "lora save: adapter dtype must be F32, BF16 or F16");
  QT_TRY(qt_fs_mkdir_p(dir));
  char path[4096];
  /* adapter_config.json: keys sorted as PEFT's json.dumps(sort_keys=True). */
  cJSON *j = cJSON_CreateObject();
  cJSON *tm = cJSON_CreateArray();
  if (!j || !tm) {
    cJSON_Delete(j);
    cJSON_Delete(tm);
    return qt_fail(QT_ERR_NOMEM, "lora save: cannot build adapter_config.json");
  }
  for (int p = 0; p < QT_PROJ_COUNT; p++)
    if ((l->cfg.targets >> p) & 1u) cJSON_AddItemToArray(tm, cJSON_CreateString(TARGET[p]));
  cJSON_AddItemToObject(j, "alpha_pattern", cJSON_CreateObject());
  cJSON_AddNullToObject(j, "auto_mapping");
  if (base_model)
    cJSON_AddStringToObject(j, "base_model_name_or_path", base_model);
  else
    cJSON_AddNullToObject(j, "base_model_name_or_path");
  cJSON_AddStringToObject(j, "bias", "none");
  cJSON_AddNullToObject(j, "exclude_modules");
  cJSON_AddFalseToObject(j, "fan_in_fan_out");
  cJSON_AddTrueToObject(j, "inference_mode");
  cJSON_AddTrueToObject(j, "init_lora_weights");
  cJSON_AddNullToObject(j, "layers_pattern");
  cJSON_AddNullToObject(j, "layers_to_transform");
  cJSON_AddNumberToObject(j, "lora_alpha", l->cfg.alpha);
  cJSON_AddFalseToObject(j, "lora_bias");
  cJSON_AddNumberToObject(j, "lora_dropout", l->cfg.dropout);
  cJSON_AddNullToObject(j, "modules_to_save");
  cJSON_AddStringToObject(j, "peft_type", "LORA");
  cJSON_AddNumberToObject(j, "r", l->cfg.r);
  cJSON_AddItemToObject(j, "rank_pattern", cJSON_CreateObject());
  cJSON_AddNullToObject(j, "revision");
  cJSON_AddItemToObject(j, "target_modules", tm);
  cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
  cJSON_AddFalseToObject(j, "use_dora");
  cJSON_AddBoolToObject(j, "use_rslora", l->cfg.use_rslora);
  char *txt = cJSON_Print(j);
  cJSON_Delete(j);
  size_t tl = txt ? strlen(txt) : 0;
  char *txt_nl = txt ? realloc(txt, tl + 2) : NULL;
  if (!txt_nl) {
    free(txt);
    return qt_fail(QT_ERR_NOMEM, "lora save: cannot print adapter_config.json");
  }
  txt_nl[tl] = '\n';
  txt_nl[tl + 1] = '\0';
  qt_status s = path_join(path, sizeof path, dir, "adapter_config.json");
  if (s == QT_OK) s = qt_fs_write_atomic(path, txt_nl, tl + 1);
  free(txt_nl);
  QT_TRY(s);
  /* adapter_model.safetensors */
  qt_st_write_tensor *wt = calloc(l->n, sizeof *wt);
  void **bufs = calloc(l->n, sizeof *bufs);
  s = (wt && bufs) ? QT_OK : qt_fail(QT_ERR_NOMEM, "lora save: cannot allocate");
  for (size_t i = 0; i < l->n && s == QT_OK; i++) {
    const qt_lora_tensor *t = &l->t[i];
    size_t n = (size_t)(t->rows * t->cols);
    wt[i] = (qt_st_write_tensor){.name = t->name, .dtype = dtype, .ndim = 2,
                                 .shape = {t->rows, t->cols}};
    if (dtype == QT_F32) {
      wt[i].data = t->data;
      continue;
    }
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) {
      s = qt_fail(QT_ERR_NOMEM, "lora save: cannot allocate");
      break;
    }
    bufs[i] = h;
    if (dtype == QT_BF16)
      qt_bf16_from_f32_n(h, t->data, n);
    else
      qt_f16_from_f32_n(h, t->data, n);
    wt[i].data = h;
  }
  const char *mk[1] = {"format"}, *mv[1] = {"pt"};
  if (s == QT_OK) s = path_join(path, sizeof path, dir, "adapter_model.safetensors");
  if (s == QT_OK) s = qt_st_write(path, wt, l->n, mk, mv, 1);
  if (bufs)
    for (size_t i = 0; i < l->n; i++) free(bufs[i]);
  free(bufs);
  free(wt);
  return s;
}

/* adapter_config.json field checks */
static bool json_is_empty(const cJSON *v) {
  return !v || cJSON_IsNull(v) || (cJSON_IsObject(v) && v->child == NULL) ||
         (cJSON_IsArray(v) && v->child == NULL);
}

static qt_status read_adapter_config(const char *path, const char *json, qt_lora_config *c) {
  cJSON *j = cJSON_Parse(json);
  if (!j || !cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return qt_fail(QT_ERR_FORMAT, "%s: not a JSON object", path);
  }
  qt_status s = QT_OK;
  const cJSON *v;
#define BAD(code, ...) do { s = qt_fail(code, __VA_ARGS__); goto done; } while (0)
  v = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
  if (v && !(cJSON_IsString(v) && strcmp(v->valuestring, "LORA") == 0))
    BAD(QT_ERR_UNSUPPORTED, "%s: peft_type is not \"LORA\"; only LoRA adapters are supported", path);
  v = cJSON_GetObjectItemCaseSensitive(j, "r");
  if (!v) c->r = 8; /* PEFT LoraConfig default */
  else if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < 1)
    BAD(QT_ERR_FORMAT, "%s: key r must be a positive integer", path);
  else c->r = (int)v->valuedouble;
  v = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
  if (!v) c->alpha = 8;
  else if (!cJSON_IsNumber(v) || !(v->valuedouble > 0))
    BAD(QT_ERR_FORMAT, "%s: key lora_alpha must be a positive number", path);
  else c->alpha = v->valuedouble;
  v = cJSON_GetObjectItemCaseSensitive(j, "lora_dropout");
  if (!v || cJSON_IsNull(v)) c->dropout = 0;
  else if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 1))
    BAD(QT_ERR_FORMAT, "%s: key lora_dropout must be a number in [0, 1)", path);
  else c->dropout = v->valuedouble;
  v = cJSON_GetObjectItemCaseSensitive(j, "use_rslora");
  if (v && !cJSON_IsBool(v)) BAD(QT_ERR_FORMAT, "%s: key use_rslora must be true or false", path);
  c->use_rslora = v && cJSON_IsTrue(v);
  v = cJSON_GetObjectItemCaseSensitive(j, "bias");
  if (v && !(cJSON_IsString(v) && strcmp(v->valuestring, "none") == 0))
    BAD(QT_ERR_UNSUPPORTED, "%s: bias must be \"none\" (LoRA bias training is not supported)", path);
  const char *off[] = {"use_dora", "fan_in_fan_out", "lora_bias"};
  for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
    v = cJSON_GetObjectItemCaseSensitive(j, off[i]);
    if (v && !cJSON_IsFalse(v) && !cJSON_IsNull(v))
      BAD(QT_ERR_UNSUPPORTED, "%s: %s is set; qlora-train supports plain LoRA only", path, off[i]);
  }
  const char *empty[] = {"rank_pattern", "alpha_pattern", "layers_to_transform",
                         "modules_to_save", "layer_replication", "target_parameters"};
  for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++)
    if (!json_is_empty(cJSON_GetObjectItemCaseSensitive(j, empty[i])))
      BAD(QT_ERR_UNSUPPORTED, "%s: %s is not supported (must be empty or null)", path, empty[i]);
  v = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
  c->targets = 0;
  if (cJSON_IsString(v) && strcmp(v->valuestring, "all-linear") == 0) {
    c->targets = QT_LORA_ALL_LINEAR;
  } else if (cJSON_IsString(v) && qt_lora_target_from_name(v->valuestring, &c->targets)) {
    /* a single module name (PEFT matches it as a suffix) */
  } else if (cJSON_IsArray(v)) {
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
      unsigned bit;
      if (!cJSON_IsString(e) || !qt_lora_target_from_name(e->valuestring, &bit))
        BAD(QT_ERR_UNSUPPORTED, "%s: target_modules entry %s%s%s is not one of q_proj, k_proj, "
                                "v_proj, o_proj, gate_proj, up_proj, down_proj", path,
            cJSON_IsString(e) ? "\"" : "", cJSON_IsString(e) ? e->valuestring : "(not a string)",
            cJSON_IsString(e) ? "\"" : "");
      c->targets |= bit;
    }
  } else {
    BAD(QT_ERR_UNSUPPORTED, "%s: target_modules must be a list of projection names or "
                            "\"all-linear\" (regular expressions are not supported)", path);
  }
  if (!c->targets) BAD(QT_ERR_FORMAT, "%s: target_modules is empty", path);
#undef BAD
done:
  cJSON_Delete(j);
  return s;
}

qt_status qt_lora_load_peft(const qt_model *m, const char *dir, bool master_fp32,
                            uint64_t seed, qt_lora **out) {
  *out = NULL;
  char path[4096];
  QT_TRY(path_join(path, sizeof path, dir, "adapter_config.json"));
  uint8_t *buf;
  size_t len;
  QT_TRY(qt_fs_read_file(path, (size_t)1 << 24, &buf, &len));
  qt_lora_config c = {.master_fp32 = master_fp32, .seed = seed};
  qt_status s = read_adapter_config(path, (const char *)buf, &c);
  free(buf);
  QT_TRY(s);
  qt_lora *l;
  QT_TRY(lora_alloc(m, &c, &l));
  QT_TRY(path_join(path, sizeof path, dir, "adapter_model.safetensors"));
  qt_st_file f;
  s = qt_st_open(path, &f);
  if (s != QT_OK) {
    qt_lora_free(&l);
    return s;
  }
  size_t used = 0;
  float *tmp = NULL;
  for (size_t i = 0; i < l->n && s == QT_OK; i++) {
    qt_lora_tensor *t = &l->t[i];
    const qt_st_entry *e = qt_st_find(&f, t->name);
    if (!e) {
      s = qt_fail(QT_ERR_FORMAT, "%s: tensor %s is missing (adapter_config.json targets it)",
                  path, t->name);
      break;
    }
    used++;
    if (e->ndim != 2 || e->shape[0] != t->rows || e->shape[1] != t->cols) {
      s = qt_fail(QT_ERR_FORMAT, "%s: %s has shape [%lld, %lld], the model needs [%lld, %lld] "
                                 "(r = %d); was the adapter trained on this base model?",
                  path, t->name, (long long)e->shape[0], (long long)(e->ndim > 1 ? e->shape[1] : 0),
                  (long long)t->rows, (long long)t->cols, c.r);
      break;
    }
    if (e->dtype != QT_F32 && e->dtype != QT_BF16 && e->dtype != QT_F16) {
      s = qt_fail(QT_ERR_UNSUPPORTED, "%s: %s is %s; adapters must be F32, BF16 or F16", path,
                  t->name, qt_dtype_name(e->dtype));
      break;
    }
    size_t n = (size_t)(t->rows * t->cols);
    float *nt = realloc(tmp, n * sizeof(float));
    if (!nt) {
      s = qt_fail(QT_ERR_NOMEM, "lora load: cannot allocate");
      break;
    }
    tmp = nt;
    s = qt_st_entry_to_f32(e, tmp);
    if (s != QT_OK) break;
    qt_bf16_from_f32_n(t->bf16, tmp, n);
    if (t->master) memcpy(t->master, tmp, n * sizeof(float));
  }
  free(tmp);
  if (s == QT_OK && used != f.n_tensors) {
    for (size_t i = 0; i < f.n_tensors; i++) {
      bool known = false;
      for (size_t k = 0; k < l->n && !known; k++) known = strcmp(f.tensors[i].name, l->t[k].name) == 0;
      if (!known) {
        s = qt_fail(QT_ERR_UNSUPPORTED, "%s: tensor %s is not a LoRA A/B of a targeted "
                                        "projection of this model", path, f.tensors[i].name);
        break;
      }
    }
  }
  qt_st_close(&f);
  if (s != QT_OK) {
    qt_lora_free(&l);
    return s;
  }
  qt_lora_sync(l);
  *out = l;
  return QT_OK;
}
