/* autograd/gemm_bf16_cpu.c — the CPU's bf16 GEMM (model.compute_dtype bf16 on
 * a CPU with bf16 units): C (M, N) = alpha op(A) op(B) + beta C with A and B in
 * bf16, products and sums in fp32, C in fp32. It is a oneDNN matmul (Debian's
 * libdnnl, issue 18): oneDNN picks AMX tiles or AVX512-BF16 dot products where
 * the CPU has them. bench/bench_gemm_bf16.c measured it at 3.4-5.4x OpenBLAS's
 * fp32 sgemm on the tape's linear shapes (Debian's OpenBLAS has no bf16 GEMM).
 *
 * State: one oneDNN CPU engine and stream, and a cache of matmul primitives
 * keyed by the whole call shape (created on a shape's first call; a packed run
 * has a few dozen shapes that repeat every step). A primitive holds ~0.3 MiB of
 * generated kernels, so the cache is bounded: when a run with many row counts
 * (unpacked batches padded to their longest row) fills it, it is emptied and
 * refilled, and oneDNN's own primitive cache is turned off (capacity 0) so that
 * an emptied entry's kernels are freed. A fixed shape with the row count given
 * at run time would avoid this, but oneDNN 2.6 then leaves its AMX kernels for
 * a generic one at half the speed (measured: 1.2 vs 2.7 TFLOP/s at 512 x 2048 x
 * 2048 on 2 cores). oneDNN's scratchpad is the caller's (scratchpad mode "user"): its size
 * comes from qt_op_gemm_bf16_pad_bytes before the call, so the tape's measuring
 * step counts it like any other work buffer. Not thread-safe: the tape calls it
 * from one thread (oneDNN parallelises inside with OpenMP). */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "autograd/ops.h"
#include "common/half.h"
#include "common/status.h"

#ifdef QT_HAVE_DNNL
#include <dnnl.h>

typedef struct {
  int transA, transB;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
} gemm_key;

typedef struct {
  gemm_key key;
  dnnl_primitive_desc_t pd;
  dnnl_primitive_t prim;
  dnnl_memory_desc_t a, b, c, pad;
  size_t pad_bytes;
  bool used;
} gemm_entry;

enum { CACHE_SLOTS = 128, CACHE_FILL = 96 }; /* slots; entries before it is emptied */

static struct {
  bool init, ok;
  dnnl_engine_t eng;
  dnnl_stream_t st;
  gemm_entry cache[CACHE_SLOTS];
  int entries;
} g_dnnl;

#define DNNL_CHECK(x)                                                                      \
  do {                                                                                     \
    dnnl_status_t s_ = (x);                                                                \
    QT_ASSERTF(s_ == dnnl_success, "oneDNN: %s failed (dnnl status %d)", #x, (int)s_);       \
  } while (0)

static bool dnnl_ready(void) {
  if (!g_dnnl.init) {
    g_dnnl.init = true;
    dnnl_set_primitive_cache_capacity(0);
    g_dnnl.ok = dnnl_engine_create(&g_dnnl.eng, dnnl_cpu, 0) == dnnl_success &&
                dnnl_stream_create(&g_dnnl.st, g_dnnl.eng, dnnl_stream_default_flags) ==
                    dnnl_success;
  }
  return g_dnnl.ok;
}

static uint64_t key_hash(const gemm_key *k) {
  uint64_t h = 1469598103934665603ull;
  uint32_t ab[2];
  memcpy(&ab[0], &k->alpha, 4);
  memcpy(&ab[1], &k->beta, 4);
  const int64_t v[8] = {k->transA * 2 + k->transB, k->M, k->N, k->K, k->lda, k->ldb, k->ldc,
                        (int64_t)(((uint64_t)ab[0] << 32) | ab[1])};
  for (int i = 0; i < 8; i++) {
    h ^= (uint64_t)v[i];
    h *= 1099511628211ull;
  }
  return h;
}

static bool key_eq(const gemm_key *a, const gemm_key *b) {
  return a->transA == b->transA && a->transB == b->transB && a->M == b->M && a->N == b->N &&
         a->K == b->K && a->lda == b->lda && a->ldb == b->ldb && a->ldc == b->ldc &&
         memcmp(&a->alpha, &b->alpha, sizeof a->alpha) == 0 &&
         memcmp(&a->beta, &b->beta, sizeof a->beta) == 0;
}

static void cache_empty(void) {
  for (int i = 0; i < CACHE_SLOTS; i++) {
    gemm_entry *e = &g_dnnl.cache[i];
    if (!e->used) continue;
    dnnl_primitive_destroy(e->prim);
    dnnl_primitive_desc_destroy(e->pd);
    e->used = false;
  }
  g_dnnl.entries = 0;
}

/* The primitive for a call shape: from the cache (open addressing, linear
 * probing; never more than CACHE_FILL of CACHE_SLOTS used), or created. */
static const gemm_entry *entry_for(const gemm_key *k) {
  QT_ASSERTF(dnnl_ready(), "oneDNN: no CPU engine (qt_op_bf16_gemm_available said yes)");
  uint64_t h = key_hash(k);
  gemm_entry *e = NULL;
  for (int i = 0; i < CACHE_SLOTS; i++) {
    gemm_entry *s = &g_dnnl.cache[(h + (uint64_t)i) % CACHE_SLOTS];
    if (!s->used) {
      e = s;
      break;
    }
    if (key_eq(&s->key, k)) return s;
  }
  if (g_dnnl.entries >= CACHE_FILL) {
    cache_empty();
    e = &g_dnnl.cache[h % CACHE_SLOTS];
  }
  QT_ASSERT(e);
  g_dnnl.entries++;
  /* op(A) (M, K): A stored (M, K) row-major with stride lda, or (K, M) when transposed */
  dnnl_dims_t da = {k->M, k->K}, db = {k->K, k->N}, dc = {k->M, k->N};
  dnnl_dims_t sa = {k->transA ? 1 : k->lda, k->transA ? k->lda : 1};
  dnnl_dims_t sb = {k->transB ? 1 : k->ldb, k->transB ? k->ldb : 1};
  dnnl_dims_t sc = {k->ldc, 1};
  DNNL_CHECK(dnnl_memory_desc_init_by_strides(&e->a, 2, da, dnnl_bf16, sa));
  DNNL_CHECK(dnnl_memory_desc_init_by_strides(&e->b, 2, db, dnnl_bf16, sb));
  DNNL_CHECK(dnnl_memory_desc_init_by_strides(&e->c, 2, dc, dnnl_f32, sc));
  dnnl_matmul_desc_t md;
  DNNL_CHECK(dnnl_matmul_desc_init(&md, &e->a, &e->b, NULL, &e->c));
  dnnl_primitive_attr_t attr;
  DNNL_CHECK(dnnl_primitive_attr_create(&attr));
  DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
  if (k->alpha != 1.0f) DNNL_CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha));
  if (k->beta != 0.0f) {
    dnnl_post_ops_t po;
    DNNL_CHECK(dnnl_post_ops_create(&po));
    DNNL_CHECK(dnnl_post_ops_append_sum(po, k->beta));
    DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    DNNL_CHECK(dnnl_post_ops_destroy(po));
  }
  DNNL_CHECK(dnnl_primitive_desc_create(&e->pd, &md, attr, g_dnnl.eng, NULL));
  DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
  DNNL_CHECK(dnnl_primitive_create(&e->prim, e->pd));
  const dnnl_memory_desc_t *pad = dnnl_primitive_desc_query_md(e->pd, dnnl_query_scratchpad_md, 0);
  e->pad = *pad;
  e->pad_bytes = dnnl_memory_desc_get_size(pad);
  e->key = *k;
  e->used = true;
  return e;
}

bool qt_op_bf16_gemm_available(const char **why) {
  const char *w = NULL;
  if (!dnnl_ready()) {
    w = "oneDNN could not create its CPU engine";
  } else {
    /* oneDNN's ISA levels are cumulative bit sets; AVX512-BF16 and AMX both
     * contain avx512_core_bf16's bits. DNNL_MAX_CPU_ISA caps the answer. */
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if (((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) !=
        (unsigned)dnnl_cpu_isa_avx512_core_bf16)
      w = "this CPU has no bf16 units (AVX512-BF16 or AMX)";
  }
  if (why) *why = w;
  return w == NULL;
}

const char *qt_op_bf16_gemm_isa(void) {
  if (!dnnl_ready()) return "none";
  dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  if (((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_amx) ==
      (unsigned)dnnl_cpu_isa_avx512_core_amx)
    return "AMX";
  if (((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
      (unsigned)dnnl_cpu_isa_avx512_core_bf16)
    return "AVX512-BF16";
  return "none";
}

size_t qt_op_gemm_bf16_pad_bytes(int transA, int transB, int64_t M, int64_t N, int64_t K,
                                 int64_t lda, int64_t ldb, int64_t ldc, float alpha,
                                 float beta) {
  if (M <= 0 || N <= 0 || K <= 0) return 0;
  gemm_key k = {transA != 0, transB != 0, M, N, K, lda, ldb, ldc, alpha, beta};
  return entry_for(&k)->pad_bytes;
}

void qt_op_gemm_bf16_cpu(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                         const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                         float beta, float *C, int64_t ldc, void *pad, size_t pad_bytes) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) { /* as the fp32 gemm: C = beta C */
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  gemm_key k = {transA != 0, transB != 0, M, N, K, lda, ldb, ldc, alpha, beta};
  const gemm_entry *e = entry_for(&k);
  QT_ASSERTF(pad_bytes >= e->pad_bytes, "oneDNN: scratchpad of %zu bytes, the matmul needs %zu",
             pad_bytes, e->pad_bytes);
  dnnl_memory_t ma, mb, mc, mp = NULL;
  DNNL_CHECK(dnnl_memory_create(&ma, &e->a, g_dnnl.eng, (void *)A));
  DNNL_CHECK(dnnl_memory_create(&mb, &e->b, g_dnnl.eng, (void *)B));
  DNNL_CHECK(dnnl_memory_create(&mc, &e->c, g_dnnl.eng, C));
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  int nargs = 3;
  if (e->pad_bytes) {
    DNNL_CHECK(dnnl_memory_create(&mp, &e->pad, g_dnnl.eng, pad));
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mp};
  }
  DNNL_CHECK(dnnl_primitive_execute(e->prim, g_dnnl.st, nargs, args));
  DNNL_CHECK(dnnl_stream_wait(g_dnnl.st));
  dnnl_memory_destroy(ma);
  dnnl_memory_destroy(mb);
  dnnl_memory_destroy(mc);
  if (mp) dnnl_memory_destroy(mp);
}

#else /* built without oneDNN: the bf16 GEMM is never available */

bool qt_op_bf16_gemm_available(const char **why) {
  if (why) *why = "this qlora-train was built without oneDNN (install libdnnl-dev and rebuild)";
  return false;
}

const char *qt_op_bf16_gemm_isa(void) { return "none"; }

size_t qt_op_gemm_bf16_pad_bytes(int transA, int transB, int64_t M, int64_t N, int64_t K,
                                 int64_t lda, int64_t ldb, int64_t ldc, float alpha,
                                 float beta) {
  (void)transA, (void)transB, (void)M, (void)N, (void)K, (void)lda, (void)ldb, (void)ldc;
  (void)alpha, (void)beta;
  return 0;
}

void qt_op_gemm_bf16_cpu(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                         const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                         float beta, float *C, int64_t ldc, void *pad, size_t pad_bytes) {
  (void)transA, (void)transB, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda;
  (void)B, (void)ldb, (void)beta, (void)C, (void)ldc, (void)pad, (void)pad_bytes;
  QT_ASSERTF(0, "the bf16 GEMM was called in a build without oneDNN");
}

#endif

void qt_op_to_bf16_cpu(uint16_t *dst, const float *src, int64_t n) {
  /* common/half.h qt_bf16_from_f32's bits (round to nearest even, any NaN ->
   * the canonical 0x7FFF), written branch-free so the loop vectorises;
   * elementwise, so the same bits for any thread count (tests compare the two). */
#pragma omp parallel for if (n >= (1 << 16))
  for (int64_t i0 = 0; i0 < n; i0 += 4096) {
    int64_t m = n - i0 < 4096 ? n - i0 : 4096;
    const float *s = src + i0;
    uint16_t *d = dst + i0;
#pragma omp simd
    for (int64_t i = 0; i < m; i++) {
      uint32_t u;
      memcpy(&u, &s[i], sizeof u);
      uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
      d[i] = (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? QT_HALF_CANONICAL_NAN : r);
    }
  }
}

void qt_op_transpose_add_cpu(float *dst, int acc, const float *src, int64_t R, int64_t C) {
  /* 32 x 32 tiles: both sides touch whole cache lines; each element is
   * written once (the same bits for any thread count) */
  enum { TB = 32 };
#pragma omp parallel for if (R * C >= (1 << 16))
  for (int64_t c0 = 0; c0 < C; c0 += TB)
    for (int64_t r0 = 0; r0 < R; r0 += TB) {
      int64_t c1 = c0 + TB < C ? c0 + TB : C, r1 = r0 + TB < R ? r0 + TB : R;
      for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++) {
          float v = src[r * C + c];
          dst[c * R + r] = acc ? dst[c * R + r] + v : v;
        }
    }
}
