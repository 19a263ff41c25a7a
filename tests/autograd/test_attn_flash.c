/* The tensor-core attention of the CUDA backend (autograd/kernels/
 * attention_flash.h: the forward, dq and dk/dv block bodies that
 * autograd/attention_cuda.cu launches), run on the host: every block of the
 * grid in turn, one thread per block (QT_FL_SYNC is then nothing and the
 * 16 x 16 x 16 products are the header's scalar fp32 loop instead of WMMA),
 * against the CPU attention op (autograd/ops.h, fp32 throughout) on bf16
 * inputs. What this proves without a GPU: the tiling, the online softmax, the
 * tile skipping and masking of packed rows (EMPTY / PARTIAL / FULL), GQA, the
 * sliding window, soft-capping, the padding of partial tiles and of the head
 * dimension, delta = rowsum(dO * O), the set / accumulate stores, and the
 * shared-memory layout (every buffer inside the block's bytes). Some shapes
 * run again with QT_FL_THREADS (256) concurrent threads per block (pthreads;
 * QT_FL_SYNC a barrier; tid, warp and the softmax's threads per row as on the
 * device),
 * which must give the one-thread bits: the phases and the work split have no
 * race and no thread reads shared memory no phase wrote (it starts as NaN).
 * What it cannot check: the WMMA fragments and the warp shuffles (the GPU
 * check's test_ops_cuda_more).
 *
 * Tolerances: those of test_ops_cuda_more's bf16 outputs (allclose
 * 2^-6 rel + 2^-7 max|ref|, NMSE < 2e-5): the kernels store the outputs and P,
 * dS in bf16 (<= 2^-9 relative each) and sum in fp32 in another order. dq and
 * dk: NMSE < 1e-4, because delta_i = rowsum(dO_i * O_i) is formed from the
 * forward's bf16 output (FlashAttention-2's form): O's rounding (2^-9
 * relative) shifts every dS of row i by the same amount, which does not average
 * out over a few keys (a window of 7: NMSE up to 2.8e-5 measured; with delta
 * from the fp32 output every case is below 2e-5).
 * Every shape runs with each tile size the launcher may pick (64, 32, 16):
 * results must agree with the reference at all three.
 *
 * Plain C; tests/autograd/test_attn_flash_host.cu compiles this file with nvcc
 * (the bodies then are the __host__ __device__ code the kernels run). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kernels/attention_flash.h"
#include "ag_test_util.h"
#ifdef __cplusplus /* the nvcc twin: these are C libraries */
extern "C" {
#endif
#include "autograd/ops.h"
#include "common/half.h"
#ifdef __cplusplus
}
#endif

static int failures;
static int tile_step = 2; /* tiles 64, 32, 16; 4 under emulation: 64, 16 */

#define NMSE_OUT 2e-5
#define NMSE_DQK 1e-4
static ag_rng rng = {20261203};

static double unif(double lo, double hi) { return ag_unif(&rng, lo, hi); }

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  return p;
}

/* n random bf16 values in [lo, hi) and the same values as fp32. */
static void rnd_bf16(int64_t n, double lo, double hi, uint16_t **h, float **f) {
  *h = (uint16_t *)xmalloc((size_t)n * 2);
  *f = (float *)xmalloc((size_t)n * 4);
  for (int64_t i = 0; i < n; i++) {
    (*h)[i] = qt_bf16_from_f32((float)unif(lo, hi));
    (*f)[i] = qt_bf16_to_f32((*h)[i]);
  }
}

/* Documents: contiguous runs (a new id with probability 0.1 per position) or
 * scattered ids (0 .. 2) per row. */
static void make_docs(int32_t *doc, int64_t B, int64_t T, int scattered) {
  for (int64_t b = 0; b < B; b++) {
    int32_t id = (int32_t)(b * 1000);
    for (int64_t t = 0; t < T; t++) {
      if (scattered) doc[b * T + t] = (int32_t)(b * 1000) + (int32_t)unif(0, 3);
      else {
        if (t > 0 && unif(0, 1) < 0.1) id++;
        doc[b * T + t] = id;
      }
    }
  }
}

static void compare(const char *what, const char *shape, const uint16_t *g, const float *ref,
                    int64_t n, double nmse_max) {
  double se = 0, sr = 0, mx = 0, worst_d = -1;
  int64_t bad = 0, worst = -1;
  for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
  for (int64_t i = 0; i < n; i++) {
    double a = qt_bf16_to_f32(g[i]), b = ref[i], d = fabs(a - b);
    if (isnan(a) || isnan(b)) {
      bad++;
      continue;
    }
    se += d * d;
    sr += b * b;
    if (!(d <= 0x1p-7 * mx + 0x1p-6 * fabs(b))) bad++;
    if (d > worst_d) {
      worst_d = d;
      worst = i;
    }
  }
  double nmse = sr > 0 ? se / sr : se;
  if (bad || nmse > nmse_max) {
    fprintf(stderr, "FAIL %s %s (n=%lld): %lld elements off, NMSE %.3g, worst at %lld: %g vs %g\n",
            what, shape, (long long)n, (long long)bad, nmse, (long long)worst,
            worst >= 0 ? qt_bf16_to_f32(g[worst]) : 0.0, worst >= 0 ? ref[worst] : 0.0);
    failures++;
  }
}

static void compare_bits(const char *what, const char *shape, const uint16_t *a, const uint16_t *b,
                         int64_t n) {
  if (n && memcmp(a, b, (size_t)n * 2)) {
    fprintf(stderr, "FAIL %s %s: not bit-identical\n", what, shape);
    failures++;
  }
}

/* One block's shared memory, with a guard zone after plan.bytes that no body
 * may write. */
enum { SM_GUARD = 4096 };
static unsigned char *sm_alloc(const qt_fl_plan *pl) {
  unsigned char *p = (unsigned char *)aligned_alloc(128, (pl->bytes + SM_GUARD + 127) / 128 * 128);
  if (!p) exit(1);
  memset(p, 0xA5, pl->bytes + SM_GUARD);
  return p;
}
static void sm_check(const unsigned char *p, const qt_fl_plan *pl, const char *what) {
  for (size_t i = pl->bytes; i < pl->bytes + SM_GUARD; i++)
    if (p[i] != 0xA5) {
      fprintf(stderr, "FAIL %s: shared memory written past the plan's %zu bytes\n", what,
              pl->bytes);
      failures++;
      return;
    }
}

/* A grid of blocks, one after the other, each as one thread (nth 1) or as
 * QT_FL_THREADS threads running concurrently (started once per grid) with a
 * barrier for QT_FL_SYNC (the header's host hook), tid and warp as on the
 * device. Shared memory is filled with NaN bytes before each block, so a read
 * of a value no phase of that block wrote shows up in the results.
 * Block n is (b, h or g, tile x) = (bx[3n], bx[3n + 1], bx[3n + 2]). */
typedef struct {
  int kind;
  const qt_fl_args *a;
  const qt_fl_plan *pl;
  unsigned char *sm;
  const int64_t *bx;
  int64_t n;
  int tid, nth;
} grid_job;

static pthread_barrier_t block_barrier;
static void block_sync(void) { pthread_barrier_wait(&block_barrier); }

static void *grid_thread(void *p) {
  const grid_job *j = (const grid_job *)p;
  for (int64_t n = 0; n < j->n; n++) {
    const int64_t b = j->bx[3 * n], h = j->bx[3 * n + 1], x = j->bx[3 * n + 2];
    if (j->tid == 0) memset(j->sm, 0xFF, j->pl->bytes);
    QT_FL_SYNC(); /* the fill before any thread of the block starts */
    if (j->kind == QT_FL_FWD) qt_fl_forward_block(j->a, j->pl, j->sm, b, h, x, j->tid, j->nth);
    else if (j->kind == QT_FL_DQ) qt_fl_dq_block(j->a, j->pl, j->sm, b, h, x, j->tid, j->nth);
    else qt_fl_dkv_block(j->a, j->pl, j->sm, b, h, x, j->tid, j->nth);
    QT_FL_SYNC(); /* the block is done before the next fill */
  }
  return NULL;
}

static void run_grid(int kind, const qt_fl_args *a, const qt_fl_plan *pl, unsigned char *sm,
                     const int64_t *bx, int64_t n, int nth) {
  grid_job j[QT_FL_THREADS];
  for (int t = 0; t < nth; t++) {
    grid_job one = {kind, a, pl, sm, bx, n, t, nth};
    j[t] = one;
  }
  if (nth == 1) {
    grid_thread(&j[0]);
    return;
  }
  pthread_t th[QT_FL_THREADS];
  *qt_fl_host_sync_slot() = block_sync;
  for (int t = 0; t < nth; t++)
    if (pthread_create(&th[t], NULL, grid_thread, &j[t])) {
      fprintf(stderr, "cannot start a thread\n");
      exit(1);
    }
  for (int t = 0; t < nth; t++) pthread_join(th[t], NULL);
  *qt_fl_host_sync_slot() = NULL;
}

/* The launcher's grids (the forward and dq take the query tiles in the
 * kernels' reversed order) over heads (forward, dq: H; dk/dv: K). */
static void run_kind(int kind, const qt_fl_args *a, int tile, int nth) {
  const qt_fl_plan pl = qt_fl_plan_make(kind, a->D, tile);
  const int64_t nt = (a->T + tile - 1) / tile, heads = kind == QT_FL_DKV ? a->K : a->H;
  const int64_t n = a->B * heads * nt;
  int64_t *bx = (int64_t *)xmalloc((size_t)n * 3 * sizeof *bx), at = 0;
  for (int64_t b = 0; b < a->B; b++)
    for (int64_t h = 0; h < heads; h++)
      for (int64_t x = 0; x < nt; x++) {
        bx[at++] = b;
        bx[at++] = h;
        bx[at++] = kind == QT_FL_DKV ? x : nt - 1 - x;
      }
  unsigned char *sm = sm_alloc(&pl);
  run_grid(kind, a, &pl, sm, bx, n, nth);
  sm_check(sm, &pl, kind == QT_FL_FWD ? "forward" : kind == QT_FL_DQ ? "dq" : "dk/dv");
  free(sm);
  free(bx);
}

static void run_forward(qt_fl_args *a, int tile, int nth) { run_kind(QT_FL_FWD, a, tile, nth); }

/* delta_i = rowsum(dO_i * O_i) in fp32, as attention_cuda.cu's pre-pass. */
static void run_delta(float *delta, const uint16_t *dout, const uint16_t *out, int64_t B, int64_t T,
                      int64_t H, int64_t D) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < T; i++) {
        const int64_t o = ((b * T + i) * H + h) * D;
        float s = 0.0f;
        for (int64_t d = 0; d < D; d++)
          s += qt_bf16_to_f32(dout[o + d]) * qt_bf16_to_f32(out[o + d]);
        delta[(b * H + h) * T + i] = s;
      }
}

static void run_backward(qt_fl_args *a, int tile, int nth) {
  if (a->dq) run_kind(QT_FL_DQ, a, tile, nth);
  if (a->dk || a->dv) run_kind(QT_FL_DKV, a, tile, nth);
}

/* threads: also run every block with QT_FL_THREADS concurrent threads; the
 * results must be the one-thread results, bit for bit. */
static void case_attention(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D, int scattered,
                           const qt_att_opts *o, int threads) {
  const int64_t nq = B * T * H * D, nk = B * T * K * D, nr = B * H * T;
  uint16_t *q16, *k16, *v16, *do16, *z16;
  float *q, *k, *v, *dout, *z;
  rnd_bf16(nq, -2, 2, &q16, &q);
  rnd_bf16(nk, -2, 2, &k16, &k);
  rnd_bf16(nk, -1, 1, &v16, &v);
  rnd_bf16(nq, -1, 1, &do16, &dout);
  rnd_bf16(nq > nk ? nq : nk, -1, 1, &z16, &z); /* what accumulation adds to */
  int32_t *doc = (int32_t *)xmalloc((size_t)(B * T) * 4);
  make_docs(doc, B, T, scattered);
  float *out = (float *)xmalloc((size_t)nq * 4), *P = (float *)xmalloc((size_t)(B * H * T * T) * 4);
  float *work = (float *)xmalloc((size_t)qt_op_attention_work_elems(T, o) * 4);
  float *dq = (float *)xmalloc((size_t)nq * 4), *dk = (float *)xmalloc((size_t)nk * 4);
  float *dv = (float *)xmalloc((size_t)nk * 4);
  qt_op_attention_forward_cpu(out, P, q, k, v, doc, B, T, H, K, D, o);
  float *dqa = (float *)xmalloc((size_t)nq * 4), *dka = (float *)xmalloc((size_t)nk * 4);
  float *dva = (float *)xmalloc((size_t)nk * 4);
  memcpy(dqa, z, (size_t)nq * 4);
  memcpy(dka, z, (size_t)nk * 4);
  memcpy(dva, z, (size_t)nk * 4);
  qt_op_attention_backward_cpu(dq, dk, dv, 0, work, dout, P, q, k, v, doc, B, T, H, K, D, o);
  qt_op_attention_backward_cpu(dqa, dka, dva, 1, work, dout, P, q, k, v, doc, B, T, H, K, D, o);

  char shape[160];
  snprintf(shape, sizeof shape,
           "B=%lld T=%lld H=%lld K=%lld D=%lld%s scale %g window %lld softcap %g",
           (long long)B, (long long)T, (long long)H, (long long)K, (long long)D,
           scattered ? " scattered" : "", o ? o->scale : 0.0, o ? (long long)o->window : 0LL,
           o ? o->softcap : 0.0);
  uint16_t *gout = (uint16_t *)xmalloc((size_t)nq * 2), *gq = (uint16_t *)xmalloc((size_t)nq * 2);
  uint16_t *gk = (uint16_t *)xmalloc((size_t)nk * 2), *gv = (uint16_t *)xmalloc((size_t)nk * 2);
  uint16_t *hv = (uint16_t *)xmalloc((size_t)nk * 2);
  float *lse = (float *)xmalloc((size_t)nr * 4), *delta = (float *)xmalloc((size_t)nr * 4);
  for (int tile = 64; tile >= 16; tile /= tile_step) {
    char sh[200];
    snprintf(sh, sizeof sh, "[%s, tile %d]", shape, tile);
    qt_fl_args a = qt_fl_args_make(q16, k16, v16, doc, B, T, H, K, D, o ? o->scale : 0.0,
                                   o ? o->window : 0, o ? o->softcap : 0.0);
    a.dout = do16;
    a.out = gout;
    a.lse = lse;
    run_forward(&a, tile, 1);
    compare("attention forward", sh, gout, out, nq, NMSE_OUT);
    run_delta(delta, do16, gout, B, T, H, D);
    a.lse_in = lse;
    a.delta = delta;
    a.dq = gq;
    a.dk = gk;
    a.dv = gv;
    run_backward(&a, tile, 1);
    compare("attention dq", sh, gq, dq, nq, NMSE_DQK);
    compare("attention dk", sh, gk, dk, nk, NMSE_DQK);
    compare("attention dv", sh, gv, dv, nk, NMSE_OUT);
    /* dv alone (dq, dk NULL, no delta read): the same bits */
    a.dq = a.dk = NULL;
    a.delta = NULL;
    a.dv = hv;
    run_backward(&a, tile, 1);
    compare_bits("attention dv alone", sh, gv, hv, nk);
    /* accumulate into existing gradients */
    for (int64_t i = 0; i < nq; i++) gq[i] = z16[i];
    for (int64_t i = 0; i < nk; i++) gk[i] = gv[i] = z16[i];
    a.dq = gq;
    a.dk = gk;
    a.dv = gv;
    a.delta = delta;
    a.acc = 1;
    run_backward(&a, tile, 1);
    compare("attention dq (acc)", sh, gq, dqa, nq, NMSE_DQK);
    compare("attention dk (acc)", sh, gk, dka, nk, NMSE_DQK);
    compare("attention dv (acc)", sh, gv, dva, nk, NMSE_OUT);
    if (threads) { /* the same set-mode results from concurrent threads */
      uint16_t *tout = (uint16_t *)xmalloc((size_t)nq * 2), *tq = (uint16_t *)xmalloc((size_t)nq * 2);
      uint16_t *tk = (uint16_t *)xmalloc((size_t)nk * 2), *tv = (uint16_t *)xmalloc((size_t)nk * 2);
      float *tlse = (float *)xmalloc((size_t)nr * 4);
      a.out = tout;
      a.lse = tlse;
      run_forward(&a, tile, QT_FL_THREADS);
      compare_bits("attention forward, all threads", sh, gout, tout, nq);
      if (memcmp(lse, tlse, (size_t)nr * 4)) {
        fprintf(stderr, "FAIL attention lse, all threads %s: not bit-identical\n", sh);
        failures++;
      }
      a.lse_in = tlse;
      a.dq = tq;
      a.dk = tk;
      a.dv = tv;
      a.acc = 0;
      run_backward(&a, tile, 1);
      memcpy(gq, tq, (size_t)nq * 2);
      memcpy(gk, tk, (size_t)nk * 2);
      memcpy(gv, tv, (size_t)nk * 2);
      run_backward(&a, tile, QT_FL_THREADS);
      compare_bits("attention dq, all threads", sh, gq, tq, nq);
      compare_bits("attention dk, all threads", sh, gk, tk, nk);
      compare_bits("attention dv, all threads", sh, gv, tv, nk);
      free(tout); free(tq); free(tk); free(tv); free(tlse);
    }
  }
  free(q16); free(k16); free(v16); free(do16); free(z16);
  free(q); free(k); free(v); free(dout); free(z);
  free(doc); free(out); free(P); free(work); free(dq); free(dk); free(dv);
  free(dqa); free(dka); free(dva); free(gout); free(gq); free(gk); free(gv); free(hv);
  free(lse); free(delta);
}

#if defined(__SANITIZE_ADDRESS__)
#define QT_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QT_TEST_SANITIZED 1
#endif
#endif

int main(void) {
  /* A lighter run where the full one would cost minutes, or repeats what
   * another build checks: under the CI's CPU emulation (tools/test_cpus.sh,
   * qemu-user 10-50x slower), and in the nvcc twin (the same code; its point
   * is nvcc's compile of the bodies): no concurrent runs (they check the
   * phases, not the CPU: the plain C build runs them), tiles 64 and 16, each
   * option set on one shape. Under ASan: tiles 64 and 16, each option set
   * once, one concurrent shape (the sanitizer's concern is what the threads
   * touch, which the options do not change). */
  int concurrent = getenv("QLORA_TEST_EMULATOR") == NULL, light = !concurrent;
#ifdef QT_ATTN_FLASH_TWIN
  concurrent = 0;
  light = 1;
#endif
#ifdef QT_TEST_SANITIZED
  tile_step = 4;
  const int sanitized = 1;
#else
  const int sanitized = 0;
#endif
  if (light) {
    printf("light run (CPU emulation or the nvcc twin): one thread per block, tiles 64 and 16, "
           "each option set once\n");
    tile_step = 4;
  }
  if (pthread_barrier_init(&block_barrier, NULL, QT_FL_THREADS)) {
    fprintf(stderr, "cannot make a barrier\n");
    return 1;
  }
  /* the layout: buffers inside the block, 128-byte aligned, the device limits
   * (227 KiB on H100/H200 per block) met by the tile the launcher picks */
  for (int kind = 0; kind < 3; kind++)
    for (int64_t D = 1; D <= QT_FL_MAXD; D++) {
      qt_fl_plan p = qt_fl_plan_make(kind, D, 64), p16 = qt_fl_plan_make(kind, D, 16);
      if (p.dp % 16 || p.dp < D || p.q % 128 || p.acc1 % 128 || p.r2 % 128 || p.bytes % 128 ||
          p16.bytes > 100 * 1024 || (D <= 128 && p.bytes > 227 * 1024)) {
        fprintf(stderr, "FAIL plan kind %d D %lld: dp %d, %zu bytes (tile 16: %zu)\n", kind,
                (long long)D, p.dp, p.bytes, p16.bytes);
        failures++;
      }
    }
  const int64_t att[][5] = {{1, 1, 1, 1, 1},   {1, 5, 2, 1, 7},    {2, 7, 4, 2, 64},
                            {1, 65, 6, 2, 63},  {3, 63, 2, 1, 128}, {1, 127, 8, 8, 32},
                            {2, 33, 4, 4, 256}, {1, 64, 3, 3, 65},  {2, 300, 4, 2, 16}};
  for (int i = 0; i < 9; i++)
    for (int sc = 0; sc < 2; sc++)
      case_attention(att[i][0], att[i][1], att[i][2], att[i][3], att[i][4], sc, NULL,
                     concurrent && sc == 0 && (i == 3 || (!sanitized && (i == 1 || i == 6))));
  /* options: scale, sliding window (2, < T, >= T), softcap, each alone and together */
  const qt_att_opts opts[] = {{0.3, 7, 0.0}, {0.0, 0, 2.0}, {0.0, 16, 5.0}, {0.2, 2, 1.0},
                              {0.0, 200, 0.0}, {0.0, 40, 0.0}};
  const int shapes[] = {1, 3, 4, 5, 6, 8};
  for (int i = 0; i < 6; i++)
    for (int j = 0; j < 6; j++) {
      if ((light || sanitized) && j != i) continue;
      const int64_t *a = att[shapes[i]];
      case_attention(a[0], a[1], a[2], a[3], a[4], (i + j) % 2, &opts[j],
                     concurrent && !sanitized && i == 3 && (j == 2 || j == 3));
    }
  if (failures) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("flash attention bodies on the host: forward, dq, dk, dv (set and accumulate) match the "
         "CPU op at tiles %s%s\n", tile_step == 2 ? "64, 32, 16" : "64, 16",
         concurrent ? "; all threads of a block give the one-thread bits" : "");
  return 0;
}
