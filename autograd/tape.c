/* autograd/tape.c — the Wengert list: records ops of ops.h, replays them in
 * reverse (tape.h documents the contract). Pattern after ggml's
 * ggml_build_backward_expand / ggml_compute_backward (src/ggml.c): mark which
 * nodes need gradients in forward order, walk in reverse, one add-or-set rule. */
#include "autograd/tape.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "common/arena.h"

typedef enum {
  KIND_ACTIVATION = 0,
  KIND_FROZEN,
  KIND_TRAINABLE,
  KIND_CONSTANT
} tensor_kind;

typedef struct {
  void *data;          /* (rows, cols) */
  void *grad;          /* (rows, cols) or NULL */
  int64_t rows, cols;
  tensor_kind kind;
  bool requires_grad;
  bool grad_set;       /* the gradient holds a first contribution (activations) */
  bool grad_buf;       /* a gradient buffer was allocated (grad may be NULL when measuring) */
  const char *name;
} tape_tensor;

typedef enum {
  OP_EMBEDDING, OP_RMSNORM, OP_ADD, OP_LINEAR, OP_ROPE, OP_ATTENTION, OP_SWIGLU,
  OP_CROSS_ENTROPY, OP_LAYER, OP_LINEAR_SRC, OP_GEGLU, OP_SCALE, OP_SLICE_COLS
} op_kind;

typedef struct {
  op_kind op;
  int32_t in[3];          /* input tensor ids (-1 unused) */
  int32_t out;
  void *saved0, *saved1;  /* rstd (N) | u (N, R), xd (N, In) | P (B, H, T, T) | lse (N) */
  qt_tape_lora lora;      /* OP_LINEAR with lora.A >= 0 */
  const int32_t *ints;    /* pos | doc | targets */
  const float *inv_freq;
  double eps;
  int64_t B, T, H, K, D;
  qt_att_opts att;        /* OP_ATTENTION options (a copy; zeros = defaults) */
  qt_tape_layer_fn fn;    /* OP_LAYER */
  void *ctx;
  qt_tape_weight_src wsrc; /* OP_LINEAR_SRC: the base weight, materialized on demand */
  double alpha;           /* OP_SCALE factor | OP_CROSS_ENTROPY softcap (0 = none) */
  int64_t c0;             /* OP_SLICE_COLS first column (the width is out's cols) */
} tape_node;

struct qt_tape {
  bool f64;
  bool measuring; /* qt_tape_init_measure: allocate and count only, compute nothing */
  size_t es; /* element size */
  qt_tape_config cfg;
  qt_arena act, grad; /* activations + saved + work; activation gradients */
  tape_tensor *tensors;
  int32_t n_tensors, n_persistent;
  tape_node *nodes;
  int32_t n_nodes;
  int in_checkpoint; /* recording inside a checkpointed layer (nesting unsupported) */
  size_t grad_tensor_bytes;
  int32_t grad_tensors;
};

/* Calls the fp32 or fp64 twin of an op; pointer arguments are void *.
 * KRUN: the same for ops returning nothing, skipped on a measuring tape. */
#define KCALL(t, fn, ...) ((t)->f64 ? fn##_f64(__VA_ARGS__) : fn(__VA_ARGS__))
#define KRUN(t, fn, ...)                        \
  do {                                          \
    if (!(t)->measuring) KCALL(t, fn, __VA_ARGS__); \
  } while (0)

/* ---- arenas (common/arena.h) ---------------------------------------------- */

static qt_status arena_alloc(qt_arena *a, const char *what, size_t bytes, void **out) {
  return qt_arena_alloc(a, bytes, what, out);
}

/* ---- tensors --------------------------------------------------------------- */

static tape_tensor *T_(qt_tape *t, int32_t id) {
  QT_ASSERTF(id >= 0 && id < t->n_tensors, "autograd: tensor id %d is not on the tape", (int)id);
  return &t->tensors[id];
}
static const tape_tensor *CT_(const qt_tape *t, int32_t id) {
  QT_ASSERTF(id >= 0 && id < t->n_tensors, "autograd: tensor id %d is not on the tape", (int)id);
  return &t->tensors[id];
}

static qt_status new_tensor(qt_tape *t, tensor_kind kind, void *data, int64_t rows, int64_t cols,
                            bool rg, const char *name, int32_t *id) {
  /* Out-parameters are written on every path (as qt_tape_init does): qt_fail's
   * result is opaque, so without this GCC -O3 sees QT_TRY(new_tensor(...))
   * fall through with *id unset (-Wmaybe-uninitialized at the callers). */
  *id = -1;
  QT_ASSERT(rows >= 0 && cols >= 0);
  if (t->n_tensors >= t->cfg.max_tensors)
    return qt_fail(QT_ERR_NOMEM, "autograd: more than %d tensors on the tape; raise "
                                 "qt_tape_config.max_tensors", (int)t->cfg.max_tensors);
  if (kind == KIND_ACTIVATION && !data)
    QT_TRY(arena_alloc(&t->act, name ? name : "activation", (size_t)(rows * cols) * t->es, &data));
  tape_tensor *x = &t->tensors[t->n_tensors];
  *x = (tape_tensor){.data = data, .rows = rows, .cols = cols, .kind = kind,
                     .requires_grad = rg, .name = name ? name : "activation"};
  *id = t->n_tensors++;
  return QT_OK;
}

static qt_status new_node(qt_tape *t, op_kind op, tape_node **out) {
  *out = NULL; /* written on every path, see new_tensor */
  if (t->n_nodes >= t->cfg.max_nodes)
    return qt_fail(QT_ERR_NOMEM, "autograd: more than %d ops on the tape; raise "
                                 "qt_tape_config.max_nodes", (int)t->cfg.max_nodes);
  tape_node *n = &t->nodes[t->n_nodes++];
  memset(n, 0, sizeof *n);
  n->op = op;
  n->in[0] = n->in[1] = n->in[2] = -1;
  n->out = -1;
  n->lora.A = n->lora.B = -1;
  *out = n;
  return QT_OK;
}

/* The one set-or-accumulate rule: returns where the next gradient contribution
 * to tensor id goes and whether it must be added (acc = 1) or may overwrite
 * (acc = 0, first contribution into a fresh buffer). Trainable params always
 * accumulate into the caller's buffer. */
static qt_status grad_target(qt_tape *t, int32_t id, void **g, int *acc) {
  tape_tensor *x = T_(t, id);
  QT_ASSERTF(x->kind != KIND_FROZEN && x->kind != KIND_CONSTANT,
             "autograd: %s is frozen/constant and must not receive a gradient", x->name);
  QT_ASSERTF(x->requires_grad, "autograd: gradient for %s, which does not require one", x->name);
  if (x->kind == KIND_TRAINABLE) {
    *g = x->grad;
    *acc = 1;
    return QT_OK;
  }
  if (!x->grad_buf) {
    x->grad_buf = true;
    size_t bytes = (size_t)(x->rows * x->cols) * t->es;
    QT_TRY(arena_alloc(&t->grad, "activation gradient", bytes, &x->grad));
    t->grad_tensor_bytes += bytes;
    t->grad_tensors++;
  }
  *acc = x->grad_set ? 1 : 0;
  x->grad_set = true;
  *g = x->grad;
  return QT_OK;
}

static bool needs(const qt_tape *t, int32_t id) { return id >= 0 && CT_(t, id)->requires_grad; }

/* ---- init / params / reset ------------------------------------------------- */

qt_status qt_tape_init(qt_tape **out, qt_dtype dtype, const qt_tape_config *cfg) {
  QT_ASSERT(out && cfg);
  QT_ASSERTF(dtype == QT_F32 || dtype == QT_F64, "autograd: tape dtype must be F32 or F64");
  QT_ASSERT(cfg->max_tensors > 0 && cfg->max_nodes > 0 && cfg->ce_chunk_rows > 0);
  *out = NULL;
  qt_tape *t = calloc(1, sizeof *t);
  if (!t) return qt_fail(QT_ERR_NOMEM, "autograd: cannot allocate the tape");
  t->f64 = dtype == QT_F64;
  QT_ASSERTF(!(t->f64 && cfg->gemm_bf16), "autograd: gemm_bf16 needs an fp32 tape");
  t->es = t->f64 ? sizeof(double) : sizeof(float);
  t->cfg = *cfg;
  t->tensors = calloc((size_t)cfg->max_tensors, sizeof *t->tensors);
  t->nodes = calloc((size_t)cfg->max_nodes, sizeof *t->nodes);
  qt_status s = QT_OK;
  if (!t->tensors || !t->nodes)
    s = qt_fail(QT_ERR_NOMEM, "autograd: cannot allocate %d tensors / %d nodes",
                (int)cfg->max_tensors, (int)cfg->max_nodes);
  if (s == QT_OK) s = qt_arena_init(&t->act, "autograd activations", cfg->act_bytes);
  if (s == QT_OK) s = qt_arena_init(&t->grad, "autograd gradients", cfg->grad_bytes);
  if (s != QT_OK) {
    qt_tape_free(&t);
    return s;
  }
  *out = t;
  return QT_OK;
}

qt_status qt_tape_init_measure(qt_tape **out, qt_dtype dtype, const qt_tape_config *cfg) {
  qt_tape_config c = *cfg;
  c.act_bytes = c.grad_bytes = 0;
  QT_TRY(qt_tape_init(out, dtype, &c));
  qt_tape *t = *out;
  t->measuring = true;
  qt_arena_init_measure(&t->act, "autograd activations (measuring)");
  qt_arena_init_measure(&t->grad, "autograd gradients (measuring)");
  return QT_OK;
}

void qt_tape_free(qt_tape **tp) {
  if (!tp || !*tp) return;
  qt_tape *t = *tp;
  qt_arena_free(&t->act);
  qt_arena_free(&t->grad);
  free(t->tensors);
  free(t->nodes);
  free(t);
  *tp = NULL;
}

static qt_status add_param(qt_tape *t, tensor_kind kind, const char *name, const void *data,
                           void *grad, int64_t rows, int64_t cols, int32_t *id) {
  QT_ASSERTF(t->n_tensors == t->n_persistent && t->n_nodes == 0,
             "autograd: register parameter %s before recording ops", name);
  QT_ASSERT(data != NULL);
  QT_TRY(new_tensor(t, kind, (void *)data, rows, cols, kind == KIND_TRAINABLE, name, id));
  t->tensors[*id].grad = grad;
  t->n_persistent = t->n_tensors;
  return QT_OK;
}

qt_status qt_tape_frozen(qt_tape *t, const char *name, const void *data, int64_t rows,
                         int64_t cols, int32_t *id) {
  return add_param(t, KIND_FROZEN, name, data, NULL, rows, cols, id);
}

qt_status qt_tape_trainable(qt_tape *t, const char *name, void *data, void *grad, int64_t rows,
                            int64_t cols, int32_t *id) {
  QT_ASSERT(grad != NULL);
  return add_param(t, KIND_TRAINABLE, name, data, grad, rows, cols, id);
}

qt_status qt_tape_constant(qt_tape *t, const void *data, int64_t rows, int64_t cols, int32_t *id) {
  QT_ASSERT(data != NULL);
  return new_tensor(t, KIND_CONSTANT, (void *)data, rows, cols, false, "constant", id);
}

void qt_tape_reset(qt_tape *t) {
  QT_ASSERT(!t->in_checkpoint);
  t->n_tensors = t->n_persistent;
  t->n_nodes = 0;
  qt_arena_reset(&t->act);
  qt_arena_reset(&t->grad);
  t->grad_tensor_bytes = 0;
  t->grad_tensors = 0;
}

/* ---- forward: one recorder per op ------------------------------------------ */

qt_status qt_tape_embedding(qt_tape *t, int32_t wte, const int32_t *ids, int64_t N, int32_t *out) {
  const tape_tensor *w = T_(t, wte);
  QT_ASSERTF(w->kind == KIND_FROZEN, "autograd: the embedding table %s must be frozen", w->name);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, N, w->cols, false, "embedding", &y));
  KRUN(t, qt_op_embedding_forward_cpu, T_(t, y)->data, ids, w->data, N, w->cols, w->rows);
  tape_node *n;
  QT_TRY(new_node(t, OP_EMBEDDING, &n));
  n->in[0] = wte;
  n->out = y;
  *out = y;
  return QT_OK;
}

/* RMSNorm over `heads` groups of D = cols / heads per row: the rmsnorm kernels
 * on (N * heads, D) rows (heads = 1: over the whole row). */
static qt_status rmsnorm_record(qt_tape *t, int32_t x, int32_t w, double eps, int64_t heads,
                                int32_t *out) {
  const tape_tensor *X = T_(t, x), *W = T_(t, w);
  QT_ASSERTF(W->kind == KIND_FROZEN, "autograd: norm weight %s must be frozen", W->name);
  QT_ASSERTF(heads >= 1 && X->cols % heads == 0 && W->rows * W->cols == X->cols / heads,
             "autograd: norm weight %s has %lld values, x has %lld columns in %lld heads",
             W->name, (long long)(W->rows * W->cols), (long long)X->cols, (long long)heads);
  int64_t N = X->rows * heads, C = X->cols / heads;
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, X->rows, X->cols, X->requires_grad, "rmsnorm", &y));
  void *rstd;
  QT_TRY(arena_alloc(&t->act, "rmsnorm rstd", (size_t)N * t->es, &rstd));
  X = T_(t, x);
  KRUN(t, qt_op_rmsnorm_forward_cpu, T_(t, y)->data, rstd, X->data, T_(t, w)->data, eps, N, C);
  tape_node *n;
  QT_TRY(new_node(t, OP_RMSNORM, &n));
  n->in[0] = x;
  n->in[1] = w;
  n->out = y;
  n->saved0 = rstd;
  n->eps = eps;
  n->H = heads;
  *out = y;
  return QT_OK;
}

qt_status qt_tape_rmsnorm(qt_tape *t, int32_t x, int32_t w, double eps, int32_t *out) {
  return rmsnorm_record(t, x, w, eps, 1, out);
}

qt_status qt_tape_rmsnorm_heads(qt_tape *t, int32_t x, int32_t w, double eps, int64_t heads,
                                int32_t *out) {
  return rmsnorm_record(t, x, w, eps, heads, out);
}

qt_status qt_tape_add(qt_tape *t, int32_t a, int32_t b, int32_t *out) {
  const tape_tensor *A = T_(t, a), *B = T_(t, b);
  QT_ASSERT(A->rows == B->rows && A->cols == B->cols);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, A->rows, A->cols,
                    A->requires_grad || B->requires_grad, "add", &y));
  KRUN(t, qt_op_add_forward_cpu, T_(t, y)->data, T_(t, a)->data, T_(t, b)->data,
        A->rows * A->cols);
  tape_node *n;
  QT_TRY(new_node(t, OP_ADD, &n));
  n->in[0] = a;
  n->in[1] = b;
  n->out = y;
  *out = y;
  return QT_OK;
}

/* The LoRA branch's forward, y += scale (dropout(x) A^T) B^T, u (N, R) kept for
 * backward. With a dropout mask the dropped-out x is formed block by block in a
 * scratch released here (qt_op_lora_forward_masked_cpu), not saved: backward
 * masks x again. */
static qt_status lora_forward(qt_tape *t, void *y, void *u, const void *x, const qt_tape_lora *lora,
                              int64_t N, int64_t In, int64_t O, int64_t R) {
  const void *A = T_(t, lora->A)->data, *B = T_(t, lora->B)->data;
  if (!lora->mask) {
    KRUN(t, qt_op_lora_forward_cpu, y, u, NULL, x, NULL, 1.0, A, B, lora->scale, N, In, O, R);
    return QT_OK;
  }
  size_t mark = qt_arena_mark(&t->act);
  void *work;
  QT_TRY(arena_alloc(&t->act, "lora dropout block",
                     (size_t)qt_op_lora_masked_work_elems(N, In) * t->es, &work));
  KRUN(t, qt_op_lora_forward_masked_cpu, y, u, work, x, lora->mask, lora->keep_scale, A, B,
       lora->scale, N, In, O, R);
  qt_arena_rewind(&t->act, mark);
  return QT_OK;
}

/* C (M, Nn) = A (M, K) op(Wh) (+ C when beta = 1) on a gemm_bf16 tape: A is
 * rounded to bf16 here, Wh is already bf16, (Nn, K) when transB, else (K, Nn).
 * Both directions are formed transposed, C^T (Nn, M) = op(Wh)^T A^T, with the
 * weight as oneDNN's source operand (read in place) and the activations as its
 * "weights" operand (repacked: M x K values, not Nn x K), then transposed into
 * C. The plain orientation repacked the weight on every call, and oneDNN 2.6's
 * AMX kernel had row counts it handled 3-4x slower (2 cores, 8192 x 2048 bf16
 * weight: y = x W^T at 290 / 345 / 354 rows took 29.4 / 14.2 / 41.2 ms, this
 * way 8.9 / 10.9 / 9.8 ms; dx = dy W at 181 / 361 rows 15.0 / 43.9 ms, this way
 * 9.9 / 27.8 ms; within 20% either way at the other row counts measured).
 * A's copy, C^T and oneDNN's scratchpad are work buffers of the activation
 * arena, released before return. */
static qt_status gemm_bf16_w(qt_tape *t, int transB, float *Cm, float beta, const float *A,
                             const void *Wh, int64_t M, int64_t Nn, int64_t K) {
  size_t mark = qt_arena_mark(&t->act);
  void *ah, *ct, *pad = NULL;
  /* op(Wh)^T (Nn, K): Wh as stored when transB (ld K), else Wh (K, Nn) transposed (ld Nn) */
  int ta = transB ? 0 : 1;
  int64_t ldw = transB ? K : Nn;
  size_t pad_bytes = qt_op_gemm_bf16_pad_bytes(ta, 1, Nn, M, K, ldw, K, M, 1.0f, 0.0f);
  QT_TRY(arena_alloc(&t->act, "bf16 GEMM operand", (size_t)(M * K) * 2, &ah));
  QT_TRY(arena_alloc(&t->act, "bf16 GEMM transposed result", (size_t)(Nn * M) * sizeof(float),
                     &ct));
  if (pad_bytes) QT_TRY(arena_alloc(&t->act, "oneDNN scratchpad", pad_bytes, &pad));
  if (!t->measuring) {
    qt_op_to_bf16_cpu(ah, A, M * K);
    qt_op_gemm_bf16_cpu(ta, 1, Nn, M, K, 1.0f, Wh, ldw, ah, K, 0.0f, ct, M, pad, pad_bytes);
    qt_op_transpose_add_cpu(Cm, beta != 0.0f, ct, Nn, M);
  }
  qt_arena_rewind(&t->act, mark);
  return QT_OK;
}

/* The same with an fp32 W, rounded to bf16 into a work buffer first. */
static qt_status gemm_bf16(qt_tape *t, int transB, float *Cm, float beta, const float *A,
                           const float *W, int64_t M, int64_t Nn, int64_t K) {
  size_t mark = qt_arena_mark(&t->act);
  void *wh;
  QT_TRY(arena_alloc(&t->act, "bf16 GEMM weight", (size_t)(Nn * K) * 2, &wh));
  if (!t->measuring) qt_op_to_bf16_cpu(wh, W, Nn * K);
  qt_status s = gemm_bf16_w(t, transB, Cm, beta, A, wh, M, Nn, K);
  qt_arena_rewind(&t->act, mark);
  return s;
}

/* A materialized weight in bf16, in a buffer of the activation arena (*wh;
 * the caller rewinds): W->fill_bf16 where given, else W->fill into an fp32
 * work buffer (released here) and rounded. */
static qt_status weight_src_bf16(qt_tape *t, const qt_tape_weight_src *W, void **wh) {
  size_t n = (size_t)(W->rows * W->cols);
  QT_TRY(arena_alloc(&t->act, "bf16 materialized weight", n * 2, wh));
  if (W->fill_bf16) return t->measuring ? QT_OK : W->fill_bf16(W->ctx, *wh);
  size_t mark = qt_arena_mark(&t->act);
  void *w;
  QT_TRY(arena_alloc(&t->act, "materialized weight", n * sizeof(float), &w));
  qt_status s = t->measuring ? QT_OK : W->fill(W->ctx, w);
  if (s == QT_OK && !t->measuring) qt_op_to_bf16_cpu(*wh, w, (int64_t)n);
  qt_arena_rewind(&t->act, mark);
  return s;
}

/* y (N, O) = bias in every row, before a bf16 GEMM adds x W^T (beta 1) */
static void bias_rows(const qt_tape *t, void *y, const void *bias, int64_t N, int64_t O) {
  if (!bias || t->measuring) return;
  for (int64_t n = 0; n < N; n++) memcpy((float *)y + n * O, bias, (size_t)O * sizeof(float));
}

/* The base linear's GEMMs: forward y (N, O) = x W^T (+ bias), backward
 * dx (N, In) (+)= dy W; fp32 (ops.h qt_op_linear_*_cpu) or bf16 operands. */
static qt_status linear_fwd(qt_tape *t, void *y, const void *x, const void *W, const void *bias,
                            int64_t N, int64_t In, int64_t O) {
  if (!t->cfg.gemm_bf16) {
    KRUN(t, qt_op_linear_forward_cpu, y, x, W, bias, N, In, O);
    return QT_OK;
  }
  bias_rows(t, y, bias, N, O);
  return gemm_bf16(t, 1, y, bias ? 1.0f : 0.0f, x, W, N, O, In);
}

static qt_status linear_bwd(qt_tape *t, void *dx, int acc, const void *dy, const void *W,
                            int64_t N, int64_t In, int64_t O) {
  if (!t->cfg.gemm_bf16) {
    KRUN(t, qt_op_linear_backward_cpu, dx, acc, dy, W, N, In, O);
    return QT_OK;
  }
  return gemm_bf16(t, 0, dx, acc ? 1.0f : 0.0f, dy, W, N, In, O);
}

qt_status qt_tape_linear(qt_tape *t, int32_t x, int32_t W, int32_t bias, const qt_tape_lora *lora,
                         int32_t *out) {
  const tape_tensor *X = T_(t, x), *Wt = T_(t, W);
  QT_ASSERTF(Wt->kind == KIND_FROZEN, "autograd: base weight %s must be frozen", Wt->name);
  QT_ASSERTF(Wt->cols == X->cols, "autograd: %s has %lld input features, x has %lld", Wt->name,
             (long long)Wt->cols, (long long)X->cols);
  int64_t N = X->rows, In = X->cols, O = Wt->rows, R = 0;
  bool rg = X->requires_grad;
  if (bias >= 0) {
    QT_ASSERTF(T_(t, bias)->kind == KIND_FROZEN, "autograd: bias must be frozen");
    QT_ASSERT(T_(t, bias)->rows * T_(t, bias)->cols == O);
  }
  if (lora) {
    const tape_tensor *A = T_(t, lora->A), *Bt = T_(t, lora->B);
    QT_ASSERT(A->kind == KIND_FROZEN || A->kind == KIND_TRAINABLE);
    QT_ASSERT(Bt->kind == KIND_FROZEN || Bt->kind == KIND_TRAINABLE);
    R = A->rows;
    QT_ASSERTF(A->cols == In && Bt->rows == O && Bt->cols == R,
               "autograd: LoRA shapes A (%lld, %lld), B (%lld, %lld) do not fit (%lld -> %lld)",
               (long long)A->rows, (long long)A->cols, (long long)Bt->rows, (long long)Bt->cols,
               (long long)In, (long long)O);
    rg = rg || A->requires_grad || Bt->requires_grad;
  }
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, N, O, rg, "linear", &y));
  void *u = NULL;
  if (lora) QT_TRY(arena_alloc(&t->act, "lora u", (size_t)(N * R) * t->es, &u));
  void *yd = T_(t, y)->data;
  QT_TRY(linear_fwd(t, yd, T_(t, x)->data, T_(t, W)->data,
                    bias >= 0 ? T_(t, bias)->data : NULL, N, In, O));
  if (lora) QT_TRY(lora_forward(t, yd, u, T_(t, x)->data, lora, N, In, O, R));
  tape_node *n;
  QT_TRY(new_node(t, OP_LINEAR, &n));
  n->in[0] = x;
  n->in[1] = W;
  n->in[2] = bias;
  n->out = y;
  if (lora) {
    n->lora = *lora;
    n->saved0 = u;
    n->saved1 = T_(t, x)->data; /* the dropout path masks x again in backward */
    n->D = R;
  }
  *out = y;
  return QT_OK;
}

/* qt_tape_linear over a weight materialized by W->fill into a scratch buffer
 * carved from the activation arena after the op's kept buffers (y, u), so
 * rewinding to the mark releases only the scratch. */
qt_status qt_tape_linear_src(qt_tape *t, int32_t x, const qt_tape_weight_src *W, int32_t bias,
                             const qt_tape_lora *lora, int32_t *out) {
  QT_ASSERT(W && W->fill && W->rows > 0 && W->cols > 0);
  const tape_tensor *X = T_(t, x);
  const char *wname = W->name ? W->name : "weight";
  QT_ASSERTF(W->cols == X->cols, "autograd: %s has %lld input features, x has %lld", wname,
             (long long)W->cols, (long long)X->cols);
  int64_t N = X->rows, In = X->cols, O = W->rows, R = 0;
  bool rg = X->requires_grad;
  if (bias >= 0) {
    QT_ASSERTF(T_(t, bias)->kind == KIND_FROZEN, "autograd: bias must be frozen");
    QT_ASSERT(T_(t, bias)->rows * T_(t, bias)->cols == O);
  }
  if (lora) {
    const tape_tensor *A = T_(t, lora->A), *Bt = T_(t, lora->B);
    QT_ASSERT(A->kind == KIND_FROZEN || A->kind == KIND_TRAINABLE);
    QT_ASSERT(Bt->kind == KIND_FROZEN || Bt->kind == KIND_TRAINABLE);
    R = A->rows;
    QT_ASSERTF(A->cols == In && Bt->rows == O && Bt->cols == R,
               "autograd: LoRA shapes A (%lld, %lld), B (%lld, %lld) do not fit (%lld -> %lld)",
               (long long)A->rows, (long long)A->cols, (long long)Bt->rows, (long long)Bt->cols,
               (long long)In, (long long)O);
    rg = rg || A->requires_grad || Bt->requires_grad;
  }
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, N, O, rg, "linear", &y));
  void *u = NULL, *w;
  if (lora) QT_TRY(arena_alloc(&t->act, "lora u", (size_t)(N * R) * t->es, &u));
  size_t mark = qt_arena_mark(&t->act);
  void *yd = T_(t, y)->data;
  const void *bd = bias >= 0 ? T_(t, bias)->data : NULL;
  qt_status s;
  if (t->cfg.gemm_bf16) { /* the weight straight to bf16 (no fp32 copy when fill_bf16) */
    s = weight_src_bf16(t, W, &w);
    if (s == QT_OK) bias_rows(t, yd, bd, N, O);
    if (s == QT_OK) s = gemm_bf16_w(t, 1, yd, bd ? 1.0f : 0.0f, T_(t, x)->data, w, N, O, In);
  } else {
    s = arena_alloc(&t->act, "materialized weight", (size_t)(O * In) * t->es, &w);
    if (s == QT_OK && !t->measuring) s = W->fill(W->ctx, w);
    if (s == QT_OK) s = linear_fwd(t, yd, T_(t, x)->data, w, bd, N, In, O);
  }
  qt_arena_rewind(&t->act, mark);
  if (s != QT_OK) return s;
  if (lora) QT_TRY(lora_forward(t, yd, u, T_(t, x)->data, lora, N, In, O, R));
  tape_node *n;
  QT_TRY(new_node(t, OP_LINEAR_SRC, &n));
  n->in[0] = x;
  n->in[2] = bias;
  n->out = y;
  n->wsrc = *W;
  if (lora) {
    n->lora = *lora;
    n->saved0 = u;
    n->saved1 = T_(t, x)->data; /* the dropout path masks x again in backward */
    n->D = R;
  }
  *out = y;
  return QT_OK;
}

qt_status qt_tape_rope(qt_tape *t, int32_t x, int64_t H, int64_t D, const int32_t *pos,
                       const float *inv_freq, int32_t *out) {
  const tape_tensor *X = T_(t, x);
  QT_ASSERTF(X->cols == H * D, "autograd: rope over %lld x %lld, tensor has %lld columns",
             (long long)H, (long long)D, (long long)X->cols);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, X->rows, X->cols, X->requires_grad, "rope", &y));
  KRUN(t, qt_op_rope_forward_cpu, T_(t, y)->data, T_(t, x)->data, pos, inv_freq, T_(t, x)->rows,
        H, D);
  tape_node *n;
  QT_TRY(new_node(t, OP_ROPE, &n));
  n->in[0] = x;
  n->out = y;
  n->ints = pos;
  n->inv_freq = inv_freq;
  n->H = H;
  n->D = D;
  *out = y;
  return QT_OK;
}

qt_status qt_tape_attention(qt_tape *t, int32_t q, int32_t k, int32_t v, int64_t B, int64_t T,
                            int64_t H, int64_t K, int64_t D, const int32_t *doc, int32_t *out) {
  return qt_tape_attention_ex(t, q, k, v, B, T, H, K, D, doc, NULL, out);
}

qt_status qt_tape_attention_ex(qt_tape *t, int32_t q, int32_t k, int32_t v, int64_t B, int64_t T,
                               int64_t H, int64_t K, int64_t D, const int32_t *doc,
                               const qt_att_opts *opts, int32_t *out) {
  qt_att_opts att = opts ? *opts : (qt_att_opts){0};
  const tape_tensor *Q = T_(t, q), *Kt = T_(t, k), *Vt = T_(t, v);
  QT_ASSERT(Q->rows == B * T && Kt->rows == B * T && Vt->rows == B * T);
  QT_ASSERT(Q->cols == H * D && Kt->cols == K * D && Vt->cols == K * D && K > 0 && H % K == 0);
  bool rg = Q->requires_grad || Kt->requires_grad || Vt->requires_grad;
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, B * T, H * D, rg, "attention", &y));
  void *P;
  QT_TRY(arena_alloc(&t->act, "attention probabilities", (size_t)(B * H * T * T) * t->es, &P));
  KRUN(t, qt_op_attention_forward_cpu, T_(t, y)->data, P, T_(t, q)->data, T_(t, k)->data,
        T_(t, v)->data, doc, B, T, H, K, D, &att);
  tape_node *n;
  QT_TRY(new_node(t, OP_ATTENTION, &n));
  n->in[0] = q;
  n->in[1] = k;
  n->in[2] = v;
  n->out = y;
  n->saved0 = P;
  n->ints = doc;
  n->B = B;
  n->T = T;
  n->H = H;
  n->K = K;
  n->D = D;
  n->att = att;
  *out = y;
  return QT_OK;
}

qt_status qt_tape_swiglu(qt_tape *t, int32_t gate, int32_t up, int32_t *out) {
  const tape_tensor *G = T_(t, gate), *U = T_(t, up);
  QT_ASSERT(G->rows == U->rows && G->cols == U->cols);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, G->rows, G->cols,
                    G->requires_grad || U->requires_grad, "swiglu", &y));
  KRUN(t, qt_op_swiglu_forward_cpu, T_(t, y)->data, T_(t, gate)->data, T_(t, up)->data,
        G->rows * G->cols);
  tape_node *n;
  QT_TRY(new_node(t, OP_SWIGLU, &n));
  n->in[0] = gate;
  n->in[1] = up;
  n->out = y;
  *out = y;
  return QT_OK;
}

qt_status qt_tape_geglu(qt_tape *t, int32_t gate, int32_t up, int32_t *out) {
  const tape_tensor *G = T_(t, gate), *U = T_(t, up);
  QT_ASSERT(G->rows == U->rows && G->cols == U->cols);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, G->rows, G->cols,
                    G->requires_grad || U->requires_grad, "geglu", &y));
  KRUN(t, qt_op_geglu_forward_cpu, T_(t, y)->data, T_(t, gate)->data, T_(t, up)->data,
        G->rows * G->cols);
  tape_node *n;
  QT_TRY(new_node(t, OP_GEGLU, &n));
  n->in[0] = gate;
  n->in[1] = up;
  n->out = y;
  *out = y;
  return QT_OK;
}

/* out = x * s, through qt_op_scaled_add_cpu with acc = 0 (the factor rounded to
 * the tape's dtype, then one multiply). */
qt_status qt_tape_scale(qt_tape *t, int32_t x, double s, int32_t *out) {
  const tape_tensor *X = T_(t, x);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, X->rows, X->cols, X->requires_grad, "scale", &y));
  X = T_(t, x);
  KRUN(t, qt_op_scaled_add_cpu, T_(t, y)->data, 0, X->data, s, X->rows * X->cols);
  tape_node *n;
  QT_TRY(new_node(t, OP_SCALE, &n));
  n->in[0] = x;
  n->out = y;
  n->alpha = s;
  *out = y;
  return QT_OK;
}

qt_status qt_tape_slice_cols(qt_tape *t, int32_t x, int64_t c0, int64_t width, int32_t *out) {
  const tape_tensor *X = T_(t, x);
  QT_ASSERTF(c0 >= 0 && width >= 1 && c0 + width <= X->cols,
             "autograd: columns [%lld, %lld) of %s outside its %lld", (long long)c0,
             (long long)(c0 + width), X->name, (long long)X->cols);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, X->rows, width, X->requires_grad, "slice", &y));
  X = T_(t, x);
  KRUN(t, qt_op_slice_cols_forward_cpu, T_(t, y)->data, X->data, X->rows, X->cols, c0, width);
  tape_node *n;
  QT_TRY(new_node(t, OP_SLICE_COLS, &n));
  n->in[0] = x;
  n->out = y;
  n->c0 = c0;
  *out = y;
  return QT_OK;
}

/* The bf16 cross-entropy's work (ops.h qt_op_bf16_work) from the activation
 * arena: the lm_head W (V, C) rounded to bf16 once per call (not kept between
 * steps: 2 bytes per weight for the op's duration only), the chunk operand's
 * bf16 copy and oneDNN's scratchpad; the caller rewinds. */
static qt_status ce_bf16_work(qt_tape *t, const void *W, int64_t N, int64_t C, int64_t V,
                              int64_t chunk, qt_op_bf16_work *bw) {
  void *wh, *conv, *ct, *pad = NULL;
  size_t pad_bytes = qt_op_cross_entropy_bf16_pad_bytes(chunk, N, C, V);
  QT_TRY(arena_alloc(&t->act, "bf16 lm_head", (size_t)(V * C) * 2, &wh));
  QT_TRY(arena_alloc(&t->act, "bf16 cross-entropy operand", (size_t)(chunk * (C > V ? C : V)) * 2,
                     &conv));
  QT_TRY(arena_alloc(&t->act, "cross-entropy transposed dx", (size_t)(chunk * C) * sizeof(float),
                     &ct));
  if (pad_bytes) QT_TRY(arena_alloc(&t->act, "oneDNN scratchpad", pad_bytes, &pad));
  if (!t->measuring) qt_op_to_bf16_cpu(wh, W, V * C);
  *bw = (qt_op_bf16_work){.Wh = wh, .conv = conv, .ct = ct, .pad = pad, .pad_bytes = pad_bytes};
  return QT_OK;
}

qt_status qt_tape_cross_entropy(qt_tape *t, int32_t x, int32_t W, const int32_t *targets,
                                int32_t *loss, double *loss_sum, int64_t *count) {
  return qt_tape_cross_entropy_ex(t, x, W, targets, 0.0, loss, loss_sum, count);
}

qt_status qt_tape_cross_entropy_ex(qt_tape *t, int32_t x, int32_t W, const int32_t *targets,
                                   double softcap, int32_t *loss, double *loss_sum,
                                   int64_t *count) {
  QT_ASSERTF(softcap >= 0, "autograd: cross-entropy softcap %g must be >= 0", softcap);
  const tape_tensor *X = T_(t, x), *Wt = T_(t, W);
  QT_ASSERTF(Wt->kind == KIND_FROZEN, "autograd: lm_head %s must be frozen", Wt->name);
  QT_ASSERT(Wt->cols == X->cols);
  int64_t N = X->rows, C = X->cols, V = Wt->rows;
  int64_t chunk = t->cfg.ce_chunk_rows < N ? t->cfg.ce_chunk_rows : (N > 0 ? N : 1);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, 1, 1, X->requires_grad, "loss", &y));
  /* fused: the gradient for a unit seed is formed now (saved dx1), else the
   * per-row logsumexp is saved and backward recomputes the logits */
  bool fused = t->cfg.ce_grad_in_forward && X->requires_grad;
  void *saved, *logits, *rowloss = NULL;
  if (fused)
    QT_TRY(arena_alloc(&t->act, "cross-entropy dx (unit seed)", (size_t)(N * C) * t->es, &saved));
  else
    QT_TRY(arena_alloc(&t->act, "cross-entropy logsumexp", (size_t)N * t->es, &saved));
  size_t mark = qt_arena_mark(&t->act);
  QT_TRY(arena_alloc(&t->act, "cross-entropy logits chunk", (size_t)(chunk * V) * t->es, &logits));
  if (fused)
    QT_TRY(arena_alloc(&t->act, "cross-entropy row losses", (size_t)chunk * sizeof(double), &rowloss));
  int64_t cnt = 0;
  double sum = 0.0;
  qt_op_bf16_work bw;
  if (t->cfg.gemm_bf16) QT_TRY(ce_bf16_work(t, T_(t, W)->data, N, C, V, chunk, &bw));
  if (t->measuring) {
    for (int64_t n = 0; n < N; n++) cnt += targets[n] != QT_IGNORE_INDEX;
  } else if (t->cfg.gemm_bf16 && fused) {
    sum = qt_op_cross_entropy_fused_bf16_cpu(saved, &cnt, logits, rowloss, chunk,
                                             T_(t, x)->data, &bw, targets, N, C, V, softcap);
  } else if (t->cfg.gemm_bf16) {
    sum = qt_op_cross_entropy_forward_bf16_cpu(saved, &cnt, logits, chunk, T_(t, x)->data, &bw,
                                               targets, N, C, V, softcap);
  } else if (fused) {
    sum = KCALL(t, qt_op_cross_entropy_fused_cpu, saved, &cnt, logits, rowloss, chunk,
                T_(t, x)->data, T_(t, W)->data, targets, N, C, V, softcap);
  } else {
    sum = KCALL(t, qt_op_cross_entropy_forward_cpu, saved, &cnt, logits, chunk, T_(t, x)->data,
                T_(t, W)->data, targets, N, C, V, softcap);
  }
  qt_arena_rewind(&t->act, mark); /* the logits chunk is work, not kept */
  if (t->measuring)
    ;
  else if (t->f64)
    *(double *)T_(t, y)->data = sum;
  else
    *(float *)T_(t, y)->data = (float)sum;
  tape_node *n;
  QT_TRY(new_node(t, OP_CROSS_ENTROPY, &n));
  n->in[0] = x;
  n->in[1] = W;
  n->out = y;
  n->saved0 = fused ? NULL : saved; /* lse (N) */
  n->saved1 = fused ? saved : NULL; /* dx1 (N, C) */
  n->ints = targets;
  n->T = chunk;
  n->alpha = softcap;
  *loss = y;
  *loss_sum = sum;
  *count = cnt;
  return QT_OK;
}

qt_status qt_tape_layer(qt_tape *t, qt_tape_layer_fn fn, void *ctx, int32_t in, bool checkpoint,
                        int32_t *out) {
  if (!checkpoint) return fn(t, ctx, in, out);
  QT_ASSERTF(!t->in_checkpoint, "autograd: checkpointed layers cannot nest");
  const tape_tensor *X = T_(t, in);
  /* backward gives the input a fresh gradient buffer that the recompute sets
   * (backward_layer): right for an op output, wrong for a trainable tensor,
   * whose gradient is the caller's buffer and is added to */
  QT_ASSERTF(X->kind == KIND_ACTIVATION || !X->requires_grad,
             "autograd: the input of a checkpointed layer must be an op output, not %s", X->name);
  int32_t y;
  QT_TRY(new_tensor(t, KIND_ACTIVATION, NULL, X->rows, X->cols, false, "layer", &y));
  int32_t mark_tensors = t->n_tensors, mark_nodes = t->n_nodes;
  size_t mark_act = qt_arena_mark(&t->act);
  int32_t inner;
  t->in_checkpoint = 1;
  qt_status s = fn(t, ctx, in, &inner);
  t->in_checkpoint = 0;
  if (s != QT_OK) return s;
  const tape_tensor *In = T_(t, inner);
  QT_ASSERTF(In->rows == X->rows && In->cols == X->cols,
             "autograd: a checkpointed layer must keep its input's shape");
  tape_tensor *Y = T_(t, y);
  if (!t->measuring) memcpy(Y->data, In->data, (size_t)(X->rows * X->cols) * t->es);
  Y->requires_grad = In->requires_grad;
  /* Forget the layer's inside: backward records it again from `in`. */
  t->n_tensors = mark_tensors;
  t->n_nodes = mark_nodes;
  qt_arena_rewind(&t->act, mark_act);
  tape_node *n;
  QT_TRY(new_node(t, OP_LAYER, &n));
  n->in[0] = in;
  n->out = y;
  n->fn = fn;
  n->ctx = ctx;
  *out = y;
  return QT_OK;
}

/* ---- backward ------------------------------------------------------------- */

static qt_status backward_range(qt_tape *t, int32_t first, int32_t end);

/* Work buffers for one node's backward, released when it is done. */
static qt_status work_alloc(qt_tape *t, size_t elems, void **p) {
  return arena_alloc(&t->act, "backward work buffer", elems * t->es, p);
}

static qt_status backward_layer(qt_tape *t, const tape_node *nd) {
  int32_t in = nd->in[0];
  tape_tensor *X = T_(t, in);
  /* The input's gradient buffer exists before the recompute, so that the
   * recording writes into it with the same set-or-accumulate state as without
   * checkpointing (bit-identical results). */
  if (X->requires_grad && !X->grad_buf) {
    X->grad_buf = true;
    size_t bytes = (size_t)(X->rows * X->cols) * t->es;
    QT_TRY(arena_alloc(&t->grad, "activation gradient", bytes, &X->grad));
    t->grad_tensor_bytes += bytes;
    t->grad_tensors++;
  }
  int32_t mark_tensors = t->n_tensors, mark_nodes = t->n_nodes;
  size_t mark_act = qt_arena_mark(&t->act), mark_grad = qt_arena_mark(&t->grad);
  size_t mark_gbytes = t->grad_tensor_bytes;
  int32_t mark_gtensors = t->grad_tensors;
  int32_t xin, yout;
  /* an alias of the saved input (created as CONSTANT so that nothing is
   * allocated, also on a measuring tape where data is NULL) */
  QT_TRY(new_tensor(t, KIND_CONSTANT, X->data, X->rows, X->cols, X->requires_grad, X->name,
                    &xin));
  tape_tensor *Xc = T_(t, xin);
  X = T_(t, in);
  Xc->kind = KIND_ACTIVATION;
  Xc->data = X->data;
  Xc->grad = X->grad;
  Xc->grad_buf = X->grad_buf;
  Xc->grad_set = X->grad_set;
  t->in_checkpoint = 1;
  qt_status s = nd->fn(t, nd->ctx, xin, &yout);
  t->in_checkpoint = 0;
  QT_TRY(s);
  tape_tensor *Yr = T_(t, yout);
  const tape_tensor *Y = T_(t, nd->out);
  QT_ASSERT(Yr->rows == Y->rows && Yr->cols == Y->cols && Yr->requires_grad == Y->requires_grad);
  Yr->grad = Y->grad;
  Yr->grad_buf = Y->grad_buf;
  Yr->grad_set = Y->grad_set;
  QT_TRY(backward_range(t, mark_nodes, t->n_nodes));
  T_(t, in)->grad_set = T_(t, xin)->grad_set;
  t->n_tensors = mark_tensors;
  t->n_nodes = mark_nodes;
  qt_arena_rewind(&t->act, mark_act);
  qt_arena_rewind(&t->grad, mark_grad);
  t->grad_tensor_bytes = mark_gbytes;
  t->grad_tensors = mark_gtensors;
  return QT_OK;
}

/* The LoRA branch of a linear node (OP_LINEAR, OP_LINEAR_SRC): dA, dB into the
 * trainable params, and dx (already set by the base linear when not NULL) += the
 * branch's share. Work buffers come from the activation arena (released by the
 * caller). */
static qt_status backward_lora(qt_tape *t, const tape_node *nd, void *dx, int64_t N, int64_t In,
                               int64_t O) {
  const tape_tensor *A = T_(t, nd->lora.A), *B = T_(t, nd->lora.B);
  const void *dy = T_(t, nd->out)->grad;
  int64_t R = nd->D;
  void *dA = NULL, *dB = NULL, *du, *work = NULL;
  int acc;
  if (A->requires_grad) QT_TRY(grad_target(t, nd->lora.A, &dA, &acc));
  if (B->requires_grad) QT_TRY(grad_target(t, nd->lora.B, &dB, &acc));
  QT_TRY(work_alloc(t, (size_t)(N * R), &du));
  if (!nd->lora.mask) {
    KRUN(t, qt_op_lora_backward_cpu, dx, 1, dA, dB, du, NULL, dy, nd->saved1, nd->saved0, NULL,
         1.0, A->data, B->data, nd->lora.scale, N, In, O, R);
    return QT_OK;
  }
  /* dropout: saved1 is x itself; the op masks it again block by block */
  if (dA || dx) QT_TRY(work_alloc(t, (size_t)qt_op_lora_masked_work_elems(N, In), &work));
  KRUN(t, qt_op_lora_backward_masked_cpu, dx, 1, dA, dB, du, work, dy, nd->saved1, nd->saved0,
       nd->lora.mask, nd->lora.keep_scale, A->data, B->data, nd->lora.scale, N, In, O, R);
  return QT_OK;
}

static qt_status backward_node(qt_tape *t, const tape_node *nd) {
  const tape_tensor *Y = T_(t, nd->out);
  if (!Y->grad_set) return QT_OK; /* nothing downstream needs this op */
  const void *dy = Y->grad;
  void *g;
  int acc;
  size_t mark = qt_arena_mark(&t->act);
  switch (nd->op) {
  case OP_EMBEDDING:
    break; /* the table is frozen; its output never requires a gradient */
  case OP_RMSNORM: { /* over nd->H heads per row (1: the whole row) */
    const tape_tensor *X = T_(t, nd->in[0]);
    if (!X->requires_grad) break;
    QT_TRY(grad_target(t, nd->in[0], &g, &acc));
    KRUN(t, qt_op_rmsnorm_backward_cpu, g, acc, dy, X->data, T_(t, nd->in[1])->data,
          nd->saved0, X->rows * nd->H, X->cols / nd->H);
    break;
  }
  case OP_ADD:
    for (int i = 0; i < 2; i++) {
      if (!needs(t, nd->in[i])) continue;
      QT_TRY(grad_target(t, nd->in[i], &g, &acc));
      KRUN(t, qt_op_add_backward_cpu, g, acc, dy, Y->rows * Y->cols);
    }
    break;
  case OP_LINEAR: {
    const tape_tensor *X = T_(t, nd->in[0]), *W = T_(t, nd->in[1]);
    int64_t N = X->rows, In = X->cols, O = W->rows;
    void *dx = NULL;
    if (X->requires_grad) {
      QT_TRY(grad_target(t, nd->in[0], &dx, &acc));
      QT_TRY(linear_bwd(t, dx, acc, dy, W->data, N, In, O));
    }
    if (nd->lora.A >= 0) QT_TRY(backward_lora(t, nd, dx, N, In, O));
    break;
  }
  case OP_ROPE: {
    const tape_tensor *X = T_(t, nd->in[0]);
    if (!X->requires_grad) break;
    QT_TRY(grad_target(t, nd->in[0], &g, &acc));
    KRUN(t, qt_op_rope_backward_cpu, g, acc, dy, nd->ints, nd->inv_freq, X->rows, nd->H, nd->D);
    break;
  }
  case OP_ATTENTION: {
    void *d[3] = {NULL, NULL, NULL};
    int a[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++)
      if (needs(t, nd->in[i])) QT_TRY(grad_target(t, nd->in[i], &d[i], &a[i]));
    void *work;
    QT_TRY(work_alloc(t, (size_t)qt_op_attention_work_elems(nd->T, &nd->att), &work));
    /* The kernel takes one flag for all three; give it per input when they differ. */
    int acc_all = a[0] || a[1] || a[2];
    if (acc_all && !(a[0] == (d[0] != NULL) && a[1] == (d[1] != NULL) && a[2] == (d[2] != NULL))) {
      for (int i = 0; i < 3; i++) {
        if (!d[i]) continue;
        void *dd[3] = {NULL, NULL, NULL};
        dd[i] = d[i];
        KRUN(t, qt_op_attention_backward_cpu, dd[0], dd[1], dd[2], a[i], work, dy, nd->saved0,
              T_(t, nd->in[0])->data, T_(t, nd->in[1])->data, T_(t, nd->in[2])->data, nd->ints,
              nd->B, nd->T, nd->H, nd->K, nd->D, &nd->att);
      }
    } else {
      KRUN(t, qt_op_attention_backward_cpu, d[0], d[1], d[2], acc_all, work, dy, nd->saved0,
            T_(t, nd->in[0])->data, T_(t, nd->in[1])->data, T_(t, nd->in[2])->data, nd->ints,
            nd->B, nd->T, nd->H, nd->K, nd->D, &nd->att);
    }
    break;
  }
  case OP_SWIGLU: {
    const tape_tensor *G = T_(t, nd->in[0]), *U = T_(t, nd->in[1]);
    void *dg = NULL, *du = NULL;
    int ag = 0, au = 0;
    if (G->requires_grad) QT_TRY(grad_target(t, nd->in[0], &dg, &ag));
    if (U->requires_grad) QT_TRY(grad_target(t, nd->in[1], &du, &au));
    if (dg && du && ag != au) {
      KRUN(t, qt_op_swiglu_backward_cpu, dg, NULL, ag, dy, G->data, U->data, G->rows * G->cols);
      KRUN(t, qt_op_swiglu_backward_cpu, NULL, du, au, dy, G->data, U->data, G->rows * G->cols);
    } else {
      KRUN(t, qt_op_swiglu_backward_cpu, dg, du, ag || au, dy, G->data, U->data,
            G->rows * G->cols);
    }
    break;
  }
  case OP_CROSS_ENTROPY: {
    const tape_tensor *X = T_(t, nd->in[0]), *W = T_(t, nd->in[1]);
    if (!X->requires_grad) break;
    double dloss = t->measuring ? 0.0 : t->f64 ? *(const double *)dy : *(const float *)dy;
    void *logits;
    QT_TRY(grad_target(t, nd->in[0], &g, &acc));
    if (nd->saved1) { /* fused forward: dx (+)= dloss * dx1 */
      KRUN(t, qt_op_scaled_add_cpu, g, acc, nd->saved1, dloss, X->rows * X->cols);
      break;
    }
    QT_TRY(work_alloc(t, (size_t)(nd->T * W->rows), &logits));
    if (t->cfg.gemm_bf16) {
      qt_op_bf16_work bw;
      QT_TRY(ce_bf16_work(t, W->data, X->rows, X->cols, W->rows, nd->T, &bw));
      if (!t->measuring)
        qt_op_cross_entropy_backward_bf16_cpu(g, acc, logits, nd->T, dloss, nd->saved0, X->data,
                                              &bw, nd->ints, X->rows, X->cols, W->rows, nd->alpha);
      break;
    }
    KRUN(t, qt_op_cross_entropy_backward_cpu, g, acc, logits, nd->T, dloss, nd->saved0, X->data,
          W->data, nd->ints, X->rows, X->cols, W->rows, nd->alpha);
    break;
  }
  case OP_GEGLU: {
    const tape_tensor *G = T_(t, nd->in[0]), *U = T_(t, nd->in[1]);
    void *dg = NULL, *du = NULL;
    int ag = 0, au = 0;
    if (G->requires_grad) QT_TRY(grad_target(t, nd->in[0], &dg, &ag));
    if (U->requires_grad) QT_TRY(grad_target(t, nd->in[1], &du, &au));
    if (dg && du && ag != au) {
      KRUN(t, qt_op_geglu_backward_cpu, dg, NULL, ag, dy, G->data, U->data, G->rows * G->cols);
      KRUN(t, qt_op_geglu_backward_cpu, NULL, du, au, dy, G->data, U->data, G->rows * G->cols);
    } else {
      KRUN(t, qt_op_geglu_backward_cpu, dg, du, ag || au, dy, G->data, U->data,
            G->rows * G->cols);
    }
    break;
  }
  case OP_SCALE: {
    const tape_tensor *X = T_(t, nd->in[0]);
    if (!X->requires_grad) break;
    QT_TRY(grad_target(t, nd->in[0], &g, &acc));
    KRUN(t, qt_op_scaled_add_cpu, g, acc, dy, nd->alpha, X->rows * X->cols);
    break;
  }
  case OP_SLICE_COLS: {
    /* The first contribution (acc = 0) writes all of dx, zeros outside the
     * slice, so the other consumers of x (the other slices of a fused qkv, or
     * any op) add to a defined buffer in whatever order backward visits them. */
    const tape_tensor *X = T_(t, nd->in[0]);
    if (!X->requires_grad) break;
    QT_TRY(grad_target(t, nd->in[0], &g, &acc));
    KRUN(t, qt_op_slice_cols_backward_cpu, g, acc, dy, X->rows, X->cols, nd->c0, Y->cols);
    break;
  }
  case OP_LAYER:
    QT_TRY(backward_layer(t, nd));
    break;
  case OP_LINEAR_SRC: {
    const tape_tensor *X = T_(t, nd->in[0]);
    int64_t N = X->rows, In = X->cols, O = nd->wsrc.rows;
    void *dx = NULL;
    if (X->requires_grad) {
      void *w;
      QT_TRY(grad_target(t, nd->in[0], &dx, &acc));
      if (t->cfg.gemm_bf16) {
        QT_TRY(weight_src_bf16(t, &nd->wsrc, &w));
        QT_TRY(gemm_bf16_w(t, 0, dx, acc ? 1.0f : 0.0f, dy, w, N, In, O));
      } else {
        QT_TRY(work_alloc(t, (size_t)(O * In), &w));
        if (!t->measuring) QT_TRY(nd->wsrc.fill(nd->wsrc.ctx, w));
        QT_TRY(linear_bwd(t, dx, acc, dy, w, N, In, O));
      }
    }
    if (nd->lora.A >= 0) QT_TRY(backward_lora(t, nd, dx, N, In, O));
    break;
  }
  }
  qt_arena_rewind(&t->act, mark);
  return QT_OK;
}

static qt_status backward_range(qt_tape *t, int32_t first, int32_t end) {
  for (int32_t i = end - 1; i >= first; i--) QT_TRY(backward_node(t, &t->nodes[i]));
  return QT_OK;
}

qt_status qt_tape_backward(qt_tape *t, int32_t loss, double dloss) {
  QT_ASSERT(!t->in_checkpoint);
  int32_t last = t->n_nodes - 1;
  QT_ASSERTF(last >= 0 && t->nodes[last].op == OP_CROSS_ENTROPY && t->nodes[last].out == loss,
             "autograd: backward must start from the loss, the last op recorded");
  if (!T_(t, loss)->requires_grad) return QT_OK; /* nothing trainable reaches the loss */
  void *g;
  int acc;
  QT_TRY(grad_target(t, loss, &g, &acc));
  if (t->measuring)
    ;
  else if (t->f64)
    *(double *)g = dloss;
  else
    *(float *)g = (float)dloss;
  return backward_range(t, 0, t->n_nodes);
}

/* ---- inspection ------------------------------------------------------------ */

int64_t qt_tape_rows(const qt_tape *t, int32_t id) { return CT_(t, id)->rows; }
int64_t qt_tape_cols(const qt_tape *t, int32_t id) { return CT_(t, id)->cols; }
const void *qt_tape_data(const qt_tape *t, int32_t id) { return CT_(t, id)->data; }
bool qt_tape_requires_grad(const qt_tape *t, int32_t id) { return CT_(t, id)->requires_grad; }

const void *qt_tape_grad(const qt_tape *t, int32_t id) {
  const tape_tensor *x = CT_(t, id);
  if (x->kind == KIND_TRAINABLE) return x->grad;
  return x->grad_set ? x->grad : NULL;
}

qt_tape_stats qt_tape_get_stats(const qt_tape *t) {
  return (qt_tape_stats){.act_used = qt_arena_used(&t->act), .act_peak = qt_arena_peak(&t->act),
                         .grad_used = qt_arena_used(&t->grad), .grad_peak = qt_arena_peak(&t->grad),
                         .grad_tensor_bytes = t->grad_tensor_bytes,
                         .grad_tensors = t->grad_tensors, .n_tensors = t->n_tensors,
                         .n_nodes = t->n_nodes};
}

qt_status qt_tape_add_to_plan(const qt_tape *t, qt_mem_plan *plan) {
  QT_TRY(qt_mem_plan_add_arena(plan, &t->act, "cpu"));
  return qt_mem_plan_add_arena(plan, &t->grad, "cpu");
}
