/* train/cmd_inspect.c — `qlora-train inspect PATH`: what is in a safetensors
 * file, a Hugging Face model directory (single file or sharded) or a directory
 * of safetensors files such as a checkpoint.
 *
 * Prints, on stdout: for a model directory the config.json summary
 * (model/hf_config.h); one line per tensor (name, dtype, shape, bytes) sorted
 * by name, with bitsandbytes 4-bit weights recognized from their
 * `weight.quant_state.bitsandbytes__nf4|fp4` JSON (formats.md section 2);
 * totals (tensors, bytes, parameters); and each file's __metadata__.
 * A file that does not validate fails with the reader's message (exit 1). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/safetensors.h"
#include "common/status.h"
#include "model/hf_config.h"
#include "train/cli.h"

/* What a bitsandbytes quant_state JSON says about its weight. */
typedef struct {
  bool present;
  char quant_type[8];  /* "nf4" / "fp4" */
  int64_t blocksize;
  char dtype[16];      /* dtype the weight had before quantization */
  int ndim;
  int64_t shape[QT_MAX_DIMS];
  bool nested;         /* double quantization */
  int64_t nested_blocksize;
} bnb_state;

typedef struct {
  const char *file_label;      /* the file the tensors come from, for messages */
  size_t n;
  const qt_st_entry **by_name; /* sorted by name */
} tensor_list;

static int cmp_entry_name(const void *a, const void *b) {
  const qt_st_entry *x = *(const qt_st_entry *const *)a, *y = *(const qt_st_entry *const *)b;
  return strcmp(x->name, y->name);
}

static const qt_st_entry *list_find(const tensor_list *l, const char *name) {
  size_t lo = 0, hi = l->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(l->by_name[mid]->name, name);
    if (c == 0) return l->by_name[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t ls = strlen(s), lx = strlen(suffix);
  return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* Tensors that belong to a 4-bit weight's quantization state
 * (QuantState.as_dict(packed=True) keys, bitsandbytes functional.py). */
static bool is_quant_aux(const char *name) {
  static const char *const suffixes[] = {".weight.absmax", ".weight.quant_map", ".weight.nested_absmax",
                                         ".weight.nested_quant_map", ".weight.quant_state.bitsandbytes__nf4",
                                         ".weight.quant_state.bitsandbytes__fp4"};
  for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++)
    if (ends_with(name, suffixes[i])) return true;
  return false;
}

/* A JSON number that is an integer in [1, 2^53]. */
static bool json_pos_int(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1.0 && v->valuedouble <= 9007199254740992.0)) return false;
  if (v->valuedouble != (double)(int64_t)v->valuedouble) return false;
  *out = (int64_t)v->valuedouble;
  return true;
}

static qt_status json_int(const cJSON *o, const char *key, const char *where, int64_t *out) {
  if (!json_pos_int(cJSON_GetObjectItemCaseSensitive(o, key), out))
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s' must be a positive integer", where, key);
  return QT_OK;
}

static qt_status json_str(const cJSON *o, const char *key, const char *where, char *out, size_t cap) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap)
    return qt_fail(QT_ERR_FORMAT, "%s: key '%s' must be a short string", where, key);
  strcpy(out, v->valuestring);
  return QT_OK;
}

/* Reads the quant_state JSON of weight `w` if there is one. */
static qt_status bnb_state_of(const tensor_list *l, const qt_st_entry *w, bnb_state *st) {
  memset(st, 0, sizeof *st);
  if (!ends_with(w->name, ".weight")) return QT_OK;
  const char *kinds[2] = {"nf4", "fp4"};
  const qt_st_entry *qs = NULL;
  char name[1024];
  for (int k = 0; k < 2 && qs == NULL; k++) {
    snprintf(name, sizeof name, "%s.quant_state.bitsandbytes__%s", w->name, kinds[k]);
    qs = list_find(l, name);
  }
  if (qs == NULL) return QT_OK;
  char where[1200];
  snprintf(where, sizeof where, "%s: tensor '%s'", l->file_label, qs->name);
  if (qs->dtype != QT_U8 || qs->ndim != 1)
    return qt_fail(QT_ERR_FORMAT, "%s: must be a 1-D U8 tensor of UTF-8 JSON", where);
  cJSON *j = cJSON_ParseWithLength((const char *)qs->data, (size_t)(qs->end - qs->begin));
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return qt_fail(QT_ERR_FORMAT, "%s: not a JSON object", where);
  }
  qt_status s = json_str(j, "quant_type", where, st->quant_type, sizeof st->quant_type);
  if (s == QT_OK) s = json_int(j, "blocksize", where, &st->blocksize);
  if (s == QT_OK) s = json_str(j, "dtype", where, st->dtype, sizeof st->dtype);
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
  if (s == QT_OK && (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > QT_MAX_DIMS))
    s = qt_fail(QT_ERR_FORMAT, "%s: key 'shape' must be a list of at most %d sizes", where, QT_MAX_DIMS);
  for (const cJSON *d = s == QT_OK ? shape->child : NULL; d && s == QT_OK; d = d->next) {
    if (!json_pos_int(d, &st->shape[st->ndim]))
      s = qt_fail(QT_ERR_FORMAT, "%s: key 'shape' must be a list of positive integers", where);
    st->ndim++;
  }
  if (s == QT_OK && cJSON_GetObjectItemCaseSensitive(j, "nested_blocksize") != NULL) {
    st->nested = true;
    s = json_int(j, "nested_blocksize", where, &st->nested_blocksize);
  }
  cJSON_Delete(j);
  if (s == QT_OK) st->present = true;
  return s;
}

static int64_t shape_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, cap - o, "[");
  for (int i = 0; i < ndim && o < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%" PRId64, i ? ", " : "", shape[i]);
  if (o < cap) snprintf(buf + o, cap - o, "]");
}

static void human(double v, const char *const *units, int nunits, double step, char *buf, size_t cap) {
  int u = 0;
  while (v >= step && u < nunits - 1) {
    v /= step;
    u++;
  }
  if (u == 0) snprintf(buf, cap, "%.0f%s", v, units[0]);
  else snprintf(buf, cap, "%.2f %s", v, units[u]);
}

/* Prints the tensor table and totals of one set of tensors. */
static qt_status print_tensors(const tensor_list *l) {
  size_t wname = 4;
  for (size_t i = 0; i < l->n; i++) {
    size_t n = strlen(l->by_name[i]->name);
    if (n > wname) wname = n;
  }
  uint64_t bytes = 0, qbytes = 0;
  int64_t params = 0;
  size_t n_quant = 0, n_aux = 0;
  printf("  %-*s  %-6s  %-20s  %12s\n", (int)wname, "name", "dtype", "shape", "bytes");
  for (size_t i = 0; i < l->n; i++) {
    const qt_st_entry *e = l->by_name[i];
    char shp[256];
    shape_str(e->ndim, e->shape, shp, sizeof shp);
    uint64_t nb = e->end - e->begin;
    bytes += nb;
    bnb_state st;
    QT_TRY(bnb_state_of(l, e, &st));
    printf("  %-*s  %-6s  %-20s  %12" PRIu64, (int)wname, e->name, qt_dtype_name(e->dtype), shp, nb);
    if (st.present) {
      char orig[256];
      shape_str(st.ndim, st.shape, orig, sizeof orig);
      printf("  %s (4-bit), %s, blocksize %" PRId64 ", %s %s", st.quant_type,
             st.nested ? "double quant" : "no double quant", st.blocksize, st.dtype, orig);
      if (st.nested) printf(", nested blocksize %" PRId64, st.nested_blocksize);
      params += shape_numel(st.ndim, st.shape);
      n_quant++;
    } else if (is_quant_aux(e->name)) {
      qbytes += nb;
      n_aux++;
    } else {
      params += qt_st_entry_numel(e);
    }
    printf("\n");
  }
  char hb[32], hp[32];
  static const char *const bunits[] = {" B", "KiB", "MiB", "GiB", "TiB"};
  static const char *const punits[] = {"", "K", "M", "B", "T"};
  human((double)bytes, bunits, 5, 1024.0, hb, sizeof hb);
  human((double)params, punits, 5, 1000.0, hp, sizeof hp);
  printf("total: %zu tensors, %" PRIu64 " bytes (%s), %" PRId64 " parameters (%s)\n", l->n, bytes, hb, params, hp);
  if (n_quant > 0)
    printf("       %zu 4-bit weights (counted unpacked); %zu quantization-state tensors, %" PRIu64
           " bytes (not parameters)\n",
           n_quant, n_aux, qbytes);
  return QT_OK;
}

static void print_metadata(const qt_st_file *f) {
  printf("metadata (%s):", f->path);
  if (f->n_meta == 0) printf(" none");
  printf("\n");
  for (size_t i = 0; i < f->n_meta; i++) printf("  %s = %s\n", f->meta_keys[i], f->meta_vals[i]);
}

static void print_config(const qt_hf_config *c) {
  printf("config: %s\n", c->path);
  printf("  model_type %s, %" PRId64 " layers, hidden %" PRId64 ", intermediate %" PRId64 ", vocab %" PRId64 "\n",
         qt_hf_arch_name(c->arch), c->num_hidden_layers, c->hidden_size, c->intermediate_size, c->vocab_size);
  printf("  heads %" PRId64 ", kv heads %" PRId64 ", head_dim %" PRId64 "%s\n", c->num_attention_heads,
         c->num_key_value_heads, c->head_dim, c->num_key_value_heads < c->num_attention_heads ? " (GQA)" : "");
  printf("  max positions %" PRId64 ", rms_norm_eps %g, rope %s theta %g", c->max_position_embeddings,
         c->rms_norm_eps, qt_rope_type_name(c->rope.type), c->rope.theta);
  if (c->rope.type == QT_ROPE_LINEAR) printf(" factor %g", c->rope.factor);
  if (c->rope.type == QT_ROPE_LLAMA3)
    printf(" factor %g low_freq_factor %g high_freq_factor %g original_max_position_embeddings %" PRId64,
           c->rope.factor, c->rope.low_freq_factor, c->rope.high_freq_factor,
           c->rope.original_max_position_embeddings);
  printf("\n");
  /* the family's layer (model/model.h) */
  printf("  layer: %s%s, %s MLP%s%s%s%s, attention scale %g", c->fused_qkv ? "fused qkv_proj" : "q/k/v_proj",
         c->qk_norm ? " + q/k norms" : "", c->act == QT_HF_ACT_GELU_TANH ? "GeGLU (gelu tanh)" : "SwiGLU",
         c->fused_gate_up ? " (fused gate_up_proj)" : "", c->sandwich_norm ? ", pre+post norms" : "",
         c->norm_plus_one ? ", RMSNorm (1 + weight)" : "", c->embed_scale ? ", embeddings x sqrt(hidden)" : "",
         c->attn_scale);
  if (c->attn_softcap > 0) printf(", attention soft-cap %g", c->attn_softcap);
  if (c->final_softcap > 0) printf(", logit soft-cap %g", c->final_softcap);
  printf("\n");
  if (c->has_rope_local) printf("  rope of sliding layers: %s theta %g\n", qt_rope_type_name(c->rope_local.type), c->rope_local.theta);
  printf("  embeddings %s, bias q/k/v/o %d/%d/%d/%d, mlp bias %d, dtype %s\n",
         c->tie_word_embeddings ? "tied" : "untied", c->q_bias, c->k_bias, c->v_bias, c->o_bias, c->mlp_bias,
         c->has_dtype ? qt_hf_torch_dtype_name(c->dtype) : "unspecified");
  printf("  bos ");
  if (c->has_bos) printf("%" PRId64, c->bos_token_id);
  else printf("none");
  printf(", eos ");
  if (c->n_eos == 0) printf("none");
  for (int i = 0; i < c->n_eos; i++) printf("%s%" PRId64, i ? "," : "", c->eos_token_ids[i]);
  printf(", sliding window ");
  if (c->sliding_window == 0) printf("none");
  else {
    int64_t n = 0;
    for (int64_t i = 0; i < c->num_hidden_layers; i++) n += c->layer_window[i] != 0;
    printf("%" PRId64 " (%" PRId64 " of %" PRId64 " layers)", c->sliding_window, n, c->num_hidden_layers);
  }
  printf("\n");
  if (c->quant.present) {
    printf("  quantization: bitsandbytes %s (4-bit), %s, compute %s, storage %s", qt_hf_quant_type_name(c->quant.quant_type),
           c->quant.double_quant ? "double quant" : "no double quant", qt_hf_torch_dtype_name(c->quant.compute_dtype),
           qt_hf_torch_dtype_name(c->quant.quant_storage));
    if (c->quant.n_skip_modules > 0) {
      printf(", skip");
      for (size_t i = 0; i < c->quant.n_skip_modules; i++) printf(" %s", c->quant.skip_modules[i]);
    }
    printf("\n");
  }
}

static qt_status inspect_file(const char *path) {
  qt_st_file f;
  QT_TRY(qt_st_open(path, &f));
  tensor_list l = {path, f.n_tensors, NULL};
  l.by_name = malloc((f.n_tensors ? f.n_tensors : 1) * sizeof *l.by_name);
  if (l.by_name == NULL) {
    qt_st_close(&f);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
  }
  for (size_t i = 0; i < f.n_tensors; i++) l.by_name[i] = &f.tensors[i];
  qsort(l.by_name, l.n, sizeof *l.by_name, cmp_entry_name);
  printf("safetensors file: %s\n", path);
  qt_status s = print_tensors(&l);
  if (s == QT_OK) print_metadata(&f);
  free(l.by_name);
  qt_st_close(&f);
  return s;
}

static bool exists_in(const char *dir, const char *name) {
  char p[4096];
  struct stat st;
  int n = snprintf(p, sizeof p, "%s/%s", dir, name);
  return n > 0 && (size_t)n < sizeof p && stat(p, &st) == 0;
}

static qt_status inspect_model_dir(const char *dir) {
  qt_hf_config cfg;
  bool have_cfg = exists_in(dir, "config.json");
  if (have_cfg) QT_TRY(qt_hf_config_load(dir, &cfg));
  qt_st_model m;
  qt_status s = qt_st_model_open(dir, &m);
  if (s != QT_OK) {
    if (have_cfg) qt_hf_config_free(&cfg);
    return s;
  }
  printf("model directory: %s (%zu safetensors file%s)\n", dir, m.n_files, m.n_files == 1 ? "" : "s");
  if (have_cfg) print_config(&cfg);
  else printf("config: no config.json\n");
  tensor_list l = {dir, m.n_tensors, m.by_name};
  s = print_tensors(&l);
  for (size_t i = 0; s == QT_OK && i < m.n_files; i++) print_metadata(&m.files[i]);
  qt_st_model_close(&m);
  if (have_cfg) qt_hf_config_free(&cfg);
  return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A directory of safetensors files that is not a model (a checkpoint:
 * adapter_model.safetensors, optimizer.safetensors): each file in turn. */
static qt_status inspect_plain_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) return qt_fail(QT_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
  char **names = NULL;
  size_t n = 0, cap = 0;
  qt_status s = QT_OK;
  for (struct dirent *de; (de = readdir(d)) != NULL;) {
    if (!ends_with(de->d_name, ".safetensors")) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 8;
      char **nn = realloc(names, cap * sizeof *names);
      if (nn == NULL) {
        s = qt_fail(QT_ERR_NOMEM, "%s: out of memory", dir);
        break;
      }
      names = nn;
    }
    if ((names[n] = strdup(de->d_name)) == NULL) {
      s = qt_fail(QT_ERR_NOMEM, "%s: out of memory", dir);
      break;
    }
    n++;
  }
  closedir(d);
  if (s == QT_OK && n == 0)
    s = qt_fail(QT_ERR_IO,
                "%s: no config.json and no *.safetensors files here; give a safetensors file, a model directory or "
                "a checkpoint directory",
                dir);
  if (s == QT_OK) qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; s == QT_OK && i < n; i++) {
    char p[4096];
    int k = snprintf(p, sizeof p, "%s/%s", dir, names[i]);
    if (k < 0 || (size_t)k >= sizeof p) s = qt_fail(QT_ERR_IO, "%s/%s: path too long", dir, names[i]);
    else {
      if (i > 0) printf("\n");
      s = inspect_file(p);
    }
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return s;
}

qt_status qt_cmd_inspect(int argc, char **argv) {
  if (argc == 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
    printf("usage: qlora-train inspect PATH\n"
           "  PATH: a .safetensors file, a Hugging Face model directory (config.json + model.safetensors or\n"
           "  model.safetensors.index.json and shards), or a directory of .safetensors files (a checkpoint)\n");
    return QT_OK;
  }
  if (argc == 0) return qt_fail(QT_ERR_USAGE, "missing PATH");
  if (argc != 1) return qt_fail(QT_ERR_USAGE, "expected one PATH, got %d arguments", argc);
  const char *path = argv[0];
  if (path[0] == '-') return qt_fail(QT_ERR_USAGE, "unknown option '%s'", path);
  struct stat st;
  if (stat(path, &st) != 0) return qt_fail(QT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode)) return inspect_file(path);
  if (exists_in(path, "config.json") || exists_in(path, "model.safetensors") ||
      exists_in(path, "model.safetensors.index.json"))
    return inspect_model_dir(path);
  return inspect_plain_dir(path);
}
