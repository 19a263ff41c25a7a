/* train/cmd_generate.c — `qlora-train generate` (DESIGN.md section 5): one
 * prompt, a chat (one turn, a terminal loop, or turns read from stdin), or a
 * file of prompts, decoded with the KV-cache decoder (model/model.h) and the
 * sampling controls of model/sample.h, tokens streamed to stdout as they
 * come.
 *
 * Streaming: after each token the generated ids are decoded again as a whole
 * (the tokenizer's decoder chain, special tokens skipped) and the bytes not
 * yet printed go out, flushed, except a tail that may still change: a
 * trailing U+FFFD (a byte-fallback character whose bytes have not all come)
 * and a tail that could begin a --stop string. A stop string ends the
 * generation; it and what follows are not printed (nor written to --out).
 *
 * Stops: --max-new-tokens, the EOS ids of config.json and
 * generation_config.json, in chat mode the template's end-of-turn token,
 * --stop strings, the end of the KV cache (--context). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/log.h"
#include "model/sample.h"
#include "train/backend.h"
#include "train/cli.h"
#include "train/session.h"

enum { GEN_MAX_STOPS = 16, GEN_MAX_STOP_IDS = 24 };

typedef struct {
  qt_args a;                  /* what the session reads: config, --set, --checkpoint */
  const char *prompt, *system, *prompts, *out;
  bool chat;
  int64_t max_new, context;   /* context 0: sized from the prompts */
  qt_sample_opts so;
  bool seed_given;
  const char *stops[GEN_MAX_STOPS];
  int n_stops;
} gen_args;

static bool parse_i64(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || errno) return false;
  *out = v;
  return true;
}

static qt_status parse_f64(const char *flag, const char *v, double *out) {
  char *end;
  double x = strtod(v, &end);
  if (end == v || *end || !isfinite(x)) return qt_fail(QT_ERR_USAGE, "%s needs a number, not '%s'", flag, v);
  *out = x;
  return QT_OK;
}

static qt_status parse_args(int argc, char **argv, gen_args *g) {
  memset(g, 0, sizeof *g);
  g->max_new = 64;
  g->so = qt_sample_opts_default();
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--chat") == 0) {
      g->chat = true;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0) {
      if (g->a.config_path)
        return qt_fail(QT_ERR_USAGE, "unexpected argument '%s' (the config is '%s')", arg, g->a.config_path);
      g->a.config_path = arg;
      continue;
    }
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    char flag[40];
    if (len >= sizeof flag) return qt_fail(QT_ERR_USAGE, "unknown option '%.*s'", (int)len, arg);
    memcpy(flag, arg, len);
    flag[len] = '\0';
    const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!v) return qt_fail(QT_ERR_USAGE, "%s needs a value", flag);
    int64_t iv;
    if (strcmp(flag, "--set") == 0) {
      if (g->a.n_sets == QT_MAX_SETS) return qt_fail(QT_ERR_USAGE, "more than %d --set options", QT_MAX_SETS);
      g->a.sets[g->a.n_sets++] = v;
    } else if (strcmp(flag, "--checkpoint") == 0) {
      g->a.checkpoint = v;
    } else if (strcmp(flag, "--prompt") == 0) {
      g->prompt = v;
    } else if (strcmp(flag, "--system") == 0) {
      g->system = v;
    } else if (strcmp(flag, "--prompts") == 0) {
      g->prompts = v;
    } else if (strcmp(flag, "--out") == 0) {
      g->out = v;
    } else if (strcmp(flag, "--max-new-tokens") == 0) {
      if (!parse_i64(v, &g->max_new) || g->max_new < 0 || g->max_new > 1000000)
        return qt_fail(QT_ERR_USAGE, "--max-new-tokens must be an integer in 0..1000000, not '%s'", v);
    } else if (strcmp(flag, "--context") == 0) {
      if (!parse_i64(v, &g->context) || g->context < 1)
        return qt_fail(QT_ERR_USAGE, "--context must be an integer >= 1, not '%s'", v);
    } else if (strcmp(flag, "--temperature") == 0) {
      QT_TRY(parse_f64(flag, v, &g->so.temperature));
    } else if (strcmp(flag, "--top-k") == 0) {
      if (!parse_i64(v, &g->so.top_k)) return qt_fail(QT_ERR_USAGE, "--top-k needs an integer, not '%s'", v);
    } else if (strcmp(flag, "--top-p") == 0) {
      QT_TRY(parse_f64(flag, v, &g->so.top_p));
    } else if (strcmp(flag, "--min-p") == 0) {
      QT_TRY(parse_f64(flag, v, &g->so.min_p));
    } else if (strcmp(flag, "--repetition-penalty") == 0) {
      QT_TRY(parse_f64(flag, v, &g->so.repetition_penalty));
    } else if (strcmp(flag, "--seed") == 0) {
      if (!parse_i64(v, &iv) || iv < 0) return qt_fail(QT_ERR_USAGE, "--seed must be an integer >= 0, not '%s'", v);
      g->so.seed = (uint64_t)iv;
      g->seed_given = true;
    } else if (strcmp(flag, "--stop") == 0) {
      if (!v[0]) return qt_fail(QT_ERR_USAGE, "--stop needs a non-empty string");
      if (g->n_stops == GEN_MAX_STOPS) return qt_fail(QT_ERR_USAGE, "more than %d --stop strings", GEN_MAX_STOPS);
      g->stops[g->n_stops++] = v;
    } else {
      return qt_fail(QT_ERR_USAGE, "unknown option '%s'", flag);
    }
  }
  if (!g->a.config_path) return qt_fail(QT_ERR_USAGE, "missing CONFIG.yaml");
  if (g->prompts && g->prompt) return qt_fail(QT_ERR_USAGE, "give --prompt TEXT or --prompts FILE, not both");
  if (!g->prompts && g->out) return qt_fail(QT_ERR_USAGE, "--out FILE goes with --prompts FILE");
  if (!g->prompt && !g->prompts && !g->chat)
    return qt_fail(QT_ERR_USAGE, "missing --prompt TEXT (or --prompts FILE.jsonl, or --chat)");
  if (g->system && !g->chat && !g->prompts) return qt_fail(QT_ERR_USAGE, "--system TEXT needs --chat");
  return qt_sample_opts_check(&g->so);
}

/* ---- stop ids ------------------------------------------------------------------- */

typedef struct {
  int32_t ids[GEN_MAX_STOP_IDS];
  int n;
} stop_ids;

static void stop_add(stop_ids *s, int64_t id) {
  for (int i = 0; i < s->n; i++)
    if (s->ids[i] == id) return;
  if (s->n < GEN_MAX_STOP_IDS && id >= 0) s->ids[s->n++] = (int32_t)id;
}

/* EOS ids of config.json (already in the model's config) and of
 * generation_config.json (eos_token_id: an integer or a list), as
 * transformers' generate stops on either. */
static qt_status eos_ids(const qt_session *s, stop_ids *out) {
  const qt_model *m = s->model;
  for (int e = 0; e < m->cfg.n_eos; e++) stop_add(out, m->cfg.eos_token_ids[e]);
  char path[4200];
  snprintf(path, sizeof path, "%s/generation_config.json", s->cfg.model.path);
  if (access(path, F_OK) != 0) return QT_OK;
  uint8_t *buf = NULL;
  size_t len = 0;
  QT_TRY(qt_fs_read_file(path, 1 << 20, &buf, &len));
  cJSON *j = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  if (!j) return qt_fail(QT_ERR_FORMAT, "%s: not valid JSON", path);
  qt_status r = QT_OK;
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "eos_token_id");
  if (cJSON_IsNumber(e)) {
    stop_add(out, (int64_t)e->valuedouble);
  } else if (cJSON_IsArray(e)) {
    const cJSON *x;
    cJSON_ArrayForEach(x, e) {
      if (!cJSON_IsNumber(x)) {
        r = qt_fail(QT_ERR_FORMAT, "%s: eos_token_id must hold integers", path);
        break;
      }
      stop_add(out, (int64_t)x->valuedouble);
    }
  } else if (e && !cJSON_IsNull(e)) {
    r = qt_fail(QT_ERR_FORMAT, "%s: eos_token_id must be an integer or a list of integers", path);
  }
  cJSON_Delete(j);
  return r;
}

/* ---- streaming ------------------------------------------------------------------ */

typedef struct {
  qt_tokenizer *tok;
  FILE *f;                  /* where text streams (NULL: nowhere) */
  const gen_args *g;
  qt_token_ids ids;         /* prefix (echoed prompt) + generated */
  size_t n_prefix;
  qt_text_buf text;         /* decode(ids) */
  size_t gen_start;         /* bytes of text that are the echoed prompt */
  size_t printed;           /* bytes of text printed */
  size_t end;               /* where the output ends (a stop string), or SIZE_MAX */
  qt_status err;
  double t0, t_first;       /* start; when the first token came */
  double *stamps;           /* (max_new) when each token came */
  int64_t n_stamps;
} streamer;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static qt_status ids_push(qt_token_ids *v, int32_t id) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? 2 * v->cap : 256;
    int32_t *p = realloc(v->ids, cap * sizeof *p);
    if (!p) return qt_fail(QT_ERR_NOMEM, "out of memory");
    v->ids = p;
    v->cap = cap;
  }
  v->ids[v->n++] = id;
  return QT_OK;
}

/* Starts a stream after the prompt ids: the generated text is what
 * decode(prompt + new) adds to decode(prompt) (a leading space survives the
 * decoders that strip one at the start); echo prints the prompt too. */
static qt_status stream_begin(streamer *st, const int32_t *prefix, size_t n_prefix, bool echo) {
  st->ids.n = 0;
  for (size_t i = 0; i < n_prefix; i++) QT_TRY(ids_push(&st->ids, prefix[i]));
  st->n_prefix = n_prefix;
  QT_TRY(qt_tokenizer_decode(st->tok, st->ids.ids, st->ids.n, 1, &st->text));
  st->gen_start = st->text.n;
  st->printed = echo ? 0 : st->text.n;
  st->end = SIZE_MAX;
  st->err = QT_OK;
  st->t0 = now_s();
  st->t_first = 0;
  st->n_stamps = 0;
  return QT_OK;
}

/* Prints text[printed .. upto). */
static void stream_print(streamer *st, size_t upto) {
  if (upto > st->printed && st->f) {
    fwrite(st->text.s + st->printed, 1, upto - st->printed, st->f);
    fflush(st->f);
  }
  if (upto > st->printed) st->printed = upto;
}

static qt_status on_token(void *ctx, int32_t id, bool *stop) {
  streamer *st = ctx;
  double t = now_s();
  if (st->t_first == 0) st->t_first = t;
  if (st->stamps && st->n_stamps < st->g->max_new) st->stamps[st->n_stamps++] = t;
  QT_TRY(ids_push(&st->ids, id));
  QT_TRY(qt_tokenizer_decode(st->tok, st->ids.ids, st->ids.n, 1, &st->text));
  const char *txt = st->text.s;
  size_t n = st->text.n, from = st->gen_start < n ? st->gen_start : n;
  /* a stop string anywhere in the generated text ends it there */
  size_t hit = SIZE_MAX;
  for (int k = 0; k < st->g->n_stops; k++) {
    const char *p = NULL;
    size_t sl = strlen(st->g->stops[k]);
    for (size_t i = from; i + sl <= n && !p; i++)
      if (memcmp(txt + i, st->g->stops[k], sl) == 0) p = txt + i;
    if (p && (size_t)(p - txt) < hit) hit = (size_t)(p - txt);
  }
  if (hit != SIZE_MAX) {
    st->end = hit;
    stream_print(st, hit);
    *stop = true;
    return QT_OK;
  }
  size_t upto = n;
  /* hold a trailing U+FFFD: the rest of a byte-fallback character may come */
  if (upto >= 3 && memcmp(txt + upto - 3, "\xEF\xBF\xBD", 3) == 0) upto -= 3;
  /* hold a tail that may begin a stop string */
  for (int k = 0; k < st->g->n_stops; k++) {
    size_t sl = strlen(st->g->stops[k]);
    for (size_t l = sl - 1; l > 0; l--)
      if (l <= n - from && memcmp(txt + n - l, st->g->stops[k], l) == 0) {
        if (n - l < upto) upto = n - l;
        break;
      }
  }
  if (upto < st->printed) upto = st->printed;
  stream_print(st, upto);
  return QT_OK;
}

/* Flushes what was held back; the generated text is text[gen_start .. end). */
static void stream_end(streamer *st) {
  if (st->end == SIZE_MAX) st->end = st->text.n;
  stream_print(st, st->end);
}

/* ---- the model ------------------------------------------------------------------ */

typedef struct {
  qt_session s;
  gen_args *g;
  qt_backend *be;           /* the decoder's backend (backend.h) */
  qt_prompt chatp;          /* the chat renderer (data/prompt.h) */
  bool have_chatp;
  qt_model_decoder *d;
  qt_sampler smp;
  bool have_smp;
  stop_ids stops;
  streamer st;
} gen_ctx;

static qt_chat_choice chat_choice(const qt_config *c) {
  switch (c->data.chat_template) {
    case QT_TPL_CHATML: return QT_CHAT_CHATML;
    case QT_TPL_LLAMA3: return QT_CHAT_LLAMA3;
    case QT_TPL_GEMMA: return QT_CHAT_GEMMA;
    case QT_TPL_PHI3: return QT_CHAT_PHI3;
    case QT_TPL_AUTO: break;
  }
  return QT_CHAT_AUTO;
}

static qt_status ctx_load(gen_ctx *c) {
  qt_session *s = &c->s;
  QT_TRY(qt_session_load_model(s));
  QT_TRY(qt_session_pick_adapter(s, c->g->a.checkpoint, true));
  /* the tape only carries the adapter's tensors: the decoder has its own memory */
  QT_TRY(qt_session_tape(s, 1, 1, false, true));
  if (s->lora) qt_lora_set_step(s->lora, 0, false);
  /* the backend training.device names (auto: the GPU after its self-check,
   * else the CPU); a GPU context holds the rows of one feed (prompts go in
   * at most 512 rows at a time, ctx_decoder) */
  QT_TRY(qt_session_resolve_device(s));
  qt_backend_opts bo = {.kind = qt_backend_kind_of(&s->cfg), .max_B = 1, .max_T = 1, .train = false};
  if (bo.kind == QT_BACKEND_CUDA) bo.max_T = 512;
  QT_TRY(qt_backend_open(s, &bo, &c->be));
  if (!c->g->seed_given) c->g->so.seed = (uint64_t)s->cfg.training.seed;
  QT_TRY(eos_ids(s, &c->stops));
  c->st.tok = s->tok;
  c->st.g = c->g;
  return QT_OK;
}

/* The chat renderer, on first use (a --prompts file may need it for a
 * {"messages"} line only). */
static qt_status ctx_chat(gen_ctx *c, const char *where) {
  if (c->have_chatp) return QT_OK;
  qt_status r = qt_prompt_init(&c->chatp, c->s.tok, c->s.cfg.model.path, QT_DATA_FMT_CHAT,
                               chat_choice(&c->s.cfg), 0);
  if (r != QT_OK)
    return qt_fail(r, "%s: chat needs a chat template: %s (or set data.chat_template)", where,
                   qt_error_message());
  c->have_chatp = true;
  stop_add(&c->stops, qt_prompt_end_of_turn_id(&c->chatp));
  return QT_OK;
}

/* Decoder (cap positions, prompts fed up to 512 rows at a time) and sampler;
 * prints the memory plan. */
static qt_status ctx_decoder(gen_ctx *c, int64_t cap, int64_t longest_prompt) {
  const qt_model *m = c->s.model;
  if (cap > m->cfg.max_position_embeddings) cap = m->cfg.max_position_embeddings;
  int64_t rows = longest_prompt < 512 ? longest_prompt : 512;
  if (rows < 1) rows = 1;
  if (rows > cap) rows = cap;
  QT_TRY(c->be->ops->decoder(c->be, cap, rows, &c->d));
  QT_TRY(qt_sampler_init(&c->smp, &c->g->so, m->V));
  c->have_smp = true;
  c->st.stamps = malloc((size_t)(c->g->max_new + 1) * sizeof(double));
  if (!c->st.stamps) return qt_fail(QT_ERR_NOMEM, "out of memory");
  double mib = 1.0 / 1048576.0;
  if (c->be->ops->device_bytes(c->be) > 0) { /* on the GPU */
    fprintf(stderr, "generate on the GPU: device memory %.1f MiB (weights and one feed's buffers) + KV cache "
            "and logits %.1f MiB (%lld positions x %lld layers x 2 x %lld x %lld bf16)\n",
            (double)c->be->ops->device_bytes(c->be) * mib, (double)qt_model_decoder_bytes(c->d) * mib,
            (long long)cap, (long long)m->L, (long long)m->K, (long long)m->D);
    return QT_OK;
  }
  size_t kv = (size_t)(2 * m->L * cap * m->K * m->D) * sizeof(float);
  size_t work = qt_model_decoder_bytes(c->d) - kv;
  size_t samp = (size_t)m->V * (3 * sizeof(float) + 8 + 1);
  fprintf(stderr,
          "generate memory plan: weights %.1f MiB (4-bit %.1f, dense %.1f) + KV cache %.1f MiB "
          "(%lld positions x %lld layers x 2 x %lld x %lld fp32) + work %.1f MiB (%lld prompt rows "
          "at once, one position's decode) + sampler %.1f MiB = %.1f MiB\n",
          (double)(m->bytes_quant + m->bytes_dense) * mib, (double)m->bytes_quant * mib,
          (double)m->bytes_dense * mib, (double)kv * mib, (long long)cap, (long long)m->L,
          (long long)m->K, (long long)m->D, (double)work * mib, (long long)rows, (double)samp * mib,
          (double)(m->bytes_quant + m->bytes_dense + qt_model_decoder_bytes(c->d) + samp) * mib);
  return QT_OK;
}

/* One generation of prompt ids; streams to c->st.f; *n_new tokens. */
static qt_status run_one(gen_ctx *c, const int32_t *ids, size_t n, bool echo, int64_t *n_new) {
  int64_t max_new = c->g->max_new;
  int32_t *out = malloc((size_t)(max_new + 1) * sizeof *out);
  if (!out) return qt_fail(QT_ERR_NOMEM, "out of memory");
  QT_TRY(stream_begin(&c->st, ids, n, echo));
  if (echo) stream_print(&c->st, c->st.text.n);
  qt_generate_opts go = {.max_new = max_new, .stop_ids = c->stops.ids, .n_stop_ids = c->stops.n,
                         .on_token = on_token, .ctx = &c->st};
  /* a fresh sampler per prompt: the same prompt and seed give the same ids */
  qt_sampler_free(&c->smp);
  qt_status r = qt_sampler_init(&c->smp, &c->g->so, c->s.model->V);
  *n_new = 0;
  if (r == QT_OK && max_new > 0 && (int64_t)n >= qt_model_decoder_cap(c->d))
    r = qt_fail(QT_ERR_INVALID, "the prompt has %zu tokens; the KV cache holds %lld positions "
                                "(raise --context, at most max_position_embeddings)",
                n, (long long)qt_model_decoder_cap(c->d));
  if (r == QT_OK && max_new > 0) r = qt_model_decoder_generate(c->d, &c->smp, ids, (int64_t)n, &go, out, n_new);
  free(out);
  if (r == QT_OK) stream_end(&c->st);
  return r;
}

static void ctx_free(gen_ctx *c) {
  qt_model_decoder_free(&c->d);
  qt_backend_close(&c->be);
  if (c->have_smp) qt_sampler_free(&c->smp);
  if (c->have_chatp) qt_prompt_free(&c->chatp);
  qt_token_ids_free(&c->st.ids);
  free(c->st.stamps);
  qt_text_buf_free(&c->st.text);
  qt_session_free(&c->s);
}

/* ---- one prompt ----------------------------------------------------------------- */

static qt_status gen_single(gen_ctx *c) {
  qt_token_ids ids = {0};
  unsigned flags = qt_tokenizer_bos_id(c->s.tok) >= 0 ? QT_TOK_ADD_BOS : 0;
  qt_status r = qt_tokenizer_encode(c->s.tok, c->g->prompt, strlen(c->g->prompt), flags, &ids);
  int64_t cap = (int64_t)ids.n + c->g->max_new;
  if (c->g->context) cap = c->g->context;
  if (r == QT_OK) r = ctx_decoder(c, cap, (int64_t)ids.n);
  int64_t n_new = 0;
  c->st.f = stdout;
  if (r == QT_OK) r = run_one(c, ids.ids, ids.n, true, &n_new);
  if (r == QT_OK) {
    fputc('\n', stdout);
    fflush(stdout);
    double t1 = now_s(), first = c->st.t_first ? c->st.t_first - c->st.t0 : 0;
    fprintf(stderr, "generate: %zu prompt tokens, %lld new tokens in %.3f s (first token %.3f s; "
                    "%.2f tokens/s after it)\n",
            ids.n, (long long)n_new, t1 - c->st.t0, first,
            n_new > 1 ? (double)(n_new - 1) / (t1 - c->st.t_first) : 0.0);
    /* per-token time early and late: flat when attention over the cache is
     * not what bounds a step (bench/bench_generate.sh) */
    const double *ts = c->st.stamps;
    int64_t k = c->st.n_stamps;
    if (k >= 65)
      fprintf(stderr, "generate: ms per token: tokens 1-32 %.1f, last 32 %.1f\n",
              1000.0 * (ts[32] - ts[0]) / 32.0, 1000.0 * (ts[k - 1] - ts[k - 33]) / 32.0);
  }
  qt_token_ids_free(&ids);
  return r;
}

/* ---- chat ------------------------------------------------------------------------- */

typedef struct {
  qt_chat_msg *m;
  char **owned;  /* (n) strings this conversation allocated */
  size_t n, cap;
} convo;

static qt_status convo_add(convo *cv, const char *role, const char *text, size_t len) {
  if (cv->n == cv->cap) {
    size_t cap = cv->cap ? 2 * cv->cap : 16;
    qt_chat_msg *m = realloc(cv->m, cap * sizeof *m);
    if (!m) return qt_fail(QT_ERR_NOMEM, "out of memory");
    cv->m = m;
    char **o = realloc(cv->owned, cap * sizeof *o);
    if (!o) return qt_fail(QT_ERR_NOMEM, "out of memory");
    cv->owned = o;
    cv->cap = cap;
  }
  char *s = malloc(len + 1);
  if (!s) return qt_fail(QT_ERR_NOMEM, "out of memory");
  memcpy(s, text, len);
  s[len] = '\0';
  cv->owned[cv->n] = s;
  cv->m[cv->n] = (qt_chat_msg){.role = {role, strlen(role)}, .content = {s, len}};
  cv->n++;
  return QT_OK;
}

static void convo_free(convo *cv) {
  for (size_t i = 0; i < cv->n; i++) free(cv->owned[i]);
  free(cv->owned);
  free(cv->m);
  memset(cv, 0, sizeof *cv);
}

/* One assistant turn for the conversation so far; the reply is printed
 * (not the prompt) and appended to the conversation. */
static qt_status chat_turn(gen_ctx *c, convo *cv, qt_token_ids *ids) {
  QT_TRY(qt_prompt_encode_generation(&c->chatp, cv->m, cv->n, ids));
  int64_t n_new = 0;
  c->st.f = stdout;
  QT_TRY(run_one(c, ids->ids, ids->n, false, &n_new));
  fputc('\n', stdout);
  fflush(stdout);
  streamer *st = &c->st;
  return convo_add(cv, "assistant", st->text.s + st->gen_start, st->end - st->gen_start);
}

static qt_status gen_chat(gen_ctx *c) {
  QT_TRY(ctx_chat(c, c->g->a.config_path));
  convo cv = {0};
  qt_token_ids ids = {0};
  char *line = NULL;
  size_t line_cap = 0;
  qt_status r = QT_OK;
  if (c->g->system) r = convo_add(&cv, "system", c->g->system, strlen(c->g->system));
  if (r == QT_OK && c->g->prompt) {
    r = convo_add(&cv, "user", c->g->prompt, strlen(c->g->prompt));
    if (r == QT_OK) r = qt_prompt_encode_generation(&c->chatp, cv.m, cv.n, &ids);
    int64_t cap = (int64_t)ids.n + c->g->max_new;
    if (c->g->context) cap = c->g->context;
    if (r == QT_OK) r = ctx_decoder(c, cap, (int64_t)ids.n);
    if (r == QT_OK) r = chat_turn(c, &cv, &ids);
  } else if (r == QT_OK) {
    /* a conversation: a terminal loop, or one user turn per stdin line */
    bool tty = isatty(0);
    int64_t cap = c->g->context ? c->g->context : 4096;
    r = ctx_decoder(c, cap, 512);
    if (r == QT_OK && tty)
      fprintf(stderr, "chat: one message per line; an empty line or end of input (Ctrl-D) ends\n");
    while (r == QT_OK) {
      if (tty) {
        fputs("> ", stderr);
        fflush(stderr);
      }
      ssize_t got = getline(&line, &line_cap, stdin);
      if (got < 0) break;
      while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) got--;
      if (got == 0) {
        if (tty) break;
        continue;
      }
      r = convo_add(&cv, "user", line, (size_t)got);
      if (r == QT_OK) r = chat_turn(c, &cv, &ids);
    }
  }
  free(line);
  qt_token_ids_free(&ids);
  convo_free(&cv);
  return r;
}

/* ---- a file of prompts ------------------------------------------------------------ */

typedef struct {
  char *prompt_text;   /* what "prompt" in the output says (owned) */
  qt_token_ids ids;
} file_prompt;

/* One line: {"prompt": TEXT} (plain, or a user turn with --chat) or
 * {"messages": [{"role","content"}...]} (the chat template). */
static qt_status parse_prompt_line(gen_ctx *c, const char *path, long lineno, const char *line,
                                   file_prompt *fp) {
  cJSON *j = cJSON_Parse(line);
  if (!j || !cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return qt_fail(QT_ERR_FORMAT, "%s:%ld: not a JSON object", path, lineno);
  }
  qt_status r = QT_OK;
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
  const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "messages");
  convo cv = {0};
  char where[4200];
  snprintf(where, sizeof where, "%s:%ld", path, lineno);
  if ((p != NULL) == (ms != NULL)) {
    r = qt_fail(QT_ERR_FORMAT, "%s: needs \"prompt\" (a string) or \"messages\" (a list), one of them", where);
  } else if (p) {
    if (!cJSON_IsString(p)) {
      r = qt_fail(QT_ERR_FORMAT, "%s: \"prompt\" must be a string", where);
    } else if (c->g->chat) {
      r = ctx_chat(c, where);
      if (r == QT_OK && c->g->system) r = convo_add(&cv, "system", c->g->system, strlen(c->g->system));
      if (r == QT_OK) r = convo_add(&cv, "user", p->valuestring, strlen(p->valuestring));
    } else {
      unsigned flags = qt_tokenizer_bos_id(c->s.tok) >= 0 ? QT_TOK_ADD_BOS : 0;
      r = qt_tokenizer_encode(c->s.tok, p->valuestring, strlen(p->valuestring), flags, &fp->ids);
      fp->prompt_text = strdup(p->valuestring);
      if (r == QT_OK && !fp->prompt_text) r = qt_fail(QT_ERR_NOMEM, "out of memory");
    }
  } else {
    if (!cJSON_IsArray(ms)) r = qt_fail(QT_ERR_FORMAT, "%s: \"messages\" must be a list", where);
    if (r == QT_OK) r = ctx_chat(c, where);
    /* --system goes first unless the conversation brings its own */
    const cJSON *r0 = cJSON_IsArray(ms) ? cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ms, 0), "role") : NULL;
    bool own_system = cJSON_IsString(r0) && strcmp(r0->valuestring, "system") == 0;
    if (r == QT_OK && c->g->system && !own_system)
      r = convo_add(&cv, "system", c->g->system, strlen(c->g->system));
    const cJSON *m;
    int k = 0;
    cJSON_ArrayForEach(m, ms) {
      if (r != QT_OK) break;
      const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
      const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
      if (!cJSON_IsString(role) || !cJSON_IsString(content))
        r = qt_fail(QT_ERR_FORMAT, "%s: messages[%d] needs string \"role\" and \"content\"", where, k);
      else
        r = convo_add(&cv, role->valuestring, content->valuestring, strlen(content->valuestring));
      k++;
    }
  }
  if (r == QT_OK && cv.n > 0) {
    r = qt_prompt_encode_generation(&c->chatp, cv.m, cv.n, &fp->ids);
    if (r != QT_OK) r = qt_fail(r, "%s: %s", where, qt_error_message());
    const qt_text_buf *t = NULL;
    if (r == QT_OK) r = qt_prompt_render_generation(&c->chatp, cv.m, cv.n, &t);
    if (r == QT_OK) fp->prompt_text = strdup(t->s);
    if (r == QT_OK && !fp->prompt_text) r = qt_fail(QT_ERR_NOMEM, "out of memory");
  }
  /* role strings borrowed from j: the conversation goes before j */
  convo_free(&cv);
  cJSON_Delete(j);
  return r;
}

static qt_status gen_file(gen_ctx *c) {
  const char *path = c->g->prompts;
  FILE *in = fopen(path, "rb");
  if (!in) return qt_fail(QT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  file_prompt *fps = NULL;
  size_t n = 0, cap = 0;
  char *line = NULL;
  size_t line_cap = 0;
  long lineno = 0;
  qt_status r = QT_OK;
  int64_t longest = 1;
  ssize_t got;
  while (r == QT_OK && (got = getline(&line, &line_cap, in)) >= 0) {
    lineno++;
    while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r' || line[got - 1] == ' ')) line[--got] = '\0';
    if (got == 0) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      file_prompt *p = realloc(fps, cap * sizeof *p);
      if (!p) {
        r = qt_fail(QT_ERR_NOMEM, "out of memory");
        break;
      }
      fps = p;
    }
    fps[n] = (file_prompt){0};
    r = parse_prompt_line(c, path, lineno, line, &fps[n]);
    n++;
    if (r == QT_OK && (int64_t)fps[n - 1].ids.n > longest) longest = (int64_t)fps[n - 1].ids.n;
  }
  if (r == QT_OK && ferror(in)) r = qt_fail(QT_ERR_IO, "%s: read error", path);
  fclose(in);
  if (r == QT_OK && n == 0) r = qt_fail(QT_ERR_FORMAT, "%s: no prompts", path);
  FILE *out = NULL;
  if (r == QT_OK) {
    out = c->g->out ? fopen(c->g->out, "wb") : stdout;
    if (!out) r = qt_fail(QT_ERR_IO, "%s: cannot write: %s", c->g->out, strerror(errno));
  }
  if (r == QT_OK) r = ctx_decoder(c, c->g->context ? c->g->context : longest + c->g->max_new, longest);
  c->st.f = NULL;
  for (size_t i = 0; i < n && r == QT_OK; i++) {
    int64_t n_new = 0;
    r = run_one(c, fps[i].ids.ids, fps[i].ids.n, false, &n_new);
    if (r != QT_OK) break;
    double secs = now_s() - c->st.t0;
    streamer *st = &c->st;
    cJSON *o = cJSON_CreateObject();
    char *comp = malloc(st->end - st->gen_start + 1);
    char *js = NULL;
    if (o && comp) {
      memcpy(comp, st->text.s + st->gen_start, st->end - st->gen_start);
      comp[st->end - st->gen_start] = '\0';
      cJSON_AddStringToObject(o, "prompt", fps[i].prompt_text);
      cJSON_AddStringToObject(o, "completion", comp);
      cJSON_AddNumberToObject(o, "tokens", (double)n_new);
      cJSON_AddNumberToObject(o, "seconds", round(secs * 1000.0) / 1000.0);
      js = cJSON_PrintUnformatted(o);
    }
    if (!js) r = qt_fail(QT_ERR_NOMEM, "out of memory");
    else if (fprintf(out, "%s\n", js) < 0 || fflush(out) != 0)
      r = qt_fail(QT_ERR_IO, "%s: write error", c->g->out ? c->g->out : "stdout");
    if (r == QT_OK) fprintf(stderr, "generate: prompt %zu of %zu: %lld tokens in %.3f s\n", i + 1, n, (long long)n_new, secs);
    free(js);
    free(comp);
    cJSON_Delete(o);
  }
  if (out && out != stdout && fclose(out) != 0 && r == QT_OK) r = qt_fail(QT_ERR_IO, "%s: write error", c->g->out);
  for (size_t i = 0; i < n; i++) {
    free(fps[i].prompt_text);
    qt_token_ids_free(&fps[i].ids);
  }
  free(fps);
  free(line);
  return r;
}

qt_status qt_cmd_generate(int argc, char **argv) {
  gen_ctx c;
  memset(&c, 0, sizeof c);
  gen_args g;
  QT_TRY(parse_args(argc, argv, &g));
  c.g = &g;
  qt_status r = qt_session_config(&c.s, &g.a);
  if (r == QT_OK) r = ctx_load(&c);
  if (r == QT_OK) {
    if (g.prompts) r = gen_file(&c);
    else if (g.chat) r = gen_chat(&c);
    else r = gen_single(&c);
  }
  ctx_free(&c);
  return r;
}
