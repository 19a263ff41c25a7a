/* bench/bench_ops_gpu.c — every CUDA op of one Llama-3-8B decoder layer, timed on
 * the kernels this repo runs (autograd/ops_cuda.h, quant/quant.h), called as
 * model/model_cuda.cu calls them, at one micro-batch of T tokens (B = 1, one
 * row); the ceilings they are compared with; and the step time they project
 * for one sequence (the per-component accounting of
 * ../shared/docs/reviews/cuda-2026-12-02.md section 2, measured instead of
 * estimated).
 *
 *   bench_ops_gpu [--tokens T] [--layers-only]
 *     --tokens T     tokens in the row, 1..65536 (default 2048; attention is
 *                    O(T^2), so large T runs long)
 *     --layers-only  skip the embedding, lm_head and cross-entropy (no 1 GB
 *                    lm_head); the projection then covers the 32 layers only
 *
 * Shapes (meta-llama/Meta-Llama-3-8B config.json): hidden C 4096, 32 query
 * heads and 8 KV heads of 128, MLP 14336, vocab 128256, 32 layers, RMSNorm eps
 * 1e-5, Llama-3 RoPE (theta 5e5, factor 8). LoRA r = 16, alpha 16 (scale 1) on
 * all seven projections; base weights NF4, blocksize 64, double-quantized
 * (8-bit absmax codes, block 256), quantized on the GPU with quant's own
 * kernels from random bf16 data (fixed seed).
 *
 * What is timed (each line one op, "fwd"/"bwd" where it has both):
 *  - ceilings: cudaMemcpy device-to-device of 1 GiB (GB/s counts bytes read +
 *    written, as bench_quant_gpu does), and an 8192^3 bf16 GEMM through
 *    qt_op_linear_forward_cuda (cuBLASLt, fp32 compute, bf16 out);
 *  - per projection: "dequant" = qt_quant_dq_decompress_cuda (absmax) +
 *    qt_quant_4bit_dequantize_bf16_cuda (what every use of a 4-bit weight
 *    pays, model_cuda.cu linear_absmax + linear4); "linear4" fwd / bwd = the
 *    decompress plus qt_op_linear4_forward/backward_cuda (dequantize into the
 *    scratch, then the GEMM; backward is dx only, the base is frozen), with
 *    model_cuda's accumulate flags; LoRA fwd / bwd without dropout, and again
 *    with dropout (p = 0.05) drawn in the kernels from the Philox stream, as
 *    info;
 *  - RMSNorm, RoPE (q: 32 heads, k: 8 heads), attention (causal, one document;
 *    four equal documents, and tiles capped at 32 and 16 by QLORA_ATT_TILE,
 *    as info), SwiGLU, residual add (its backward as info:
 *    model_cuda passes the residual gradient through), and the head: embedding
 *    forward, cross-entropy forward and backward (lm_head recomputed,
 *    256-row chunks as model_cuda), the fused CE + scaled_add as info.
 * Timing: cudaEvents around each call on the default stream; 3 warm-up calls,
 * then the median of up to 20 (at least 5, fewer only when one call is slow:
 * about 1 s of timed calls per op). L2 is flushed (a memset of twice its size)
 * before each timed call, outside the events, so operands come from HBM; the
 * host enqueues a call while that flush runs, so the times are GPU time and
 * host launch overhead (thousands of launches per step, no CUDA graphs) is
 * not in them.
 *
 * Counting: FLOPs are the useful multiply-adds x 2 (linear: 2 T In O per
 * pass; LoRA fwd 2 T r (In + O), bwd 4 T r (In + O); attention fwd 4 D H P,
 * bwd 10 D H P (FlashAttention-2's 2.5x), P = causal (query, key) pairs within
 * a document; CE fwd 2 T C V, bwd and fused 4 T C V). Bytes: each operand read
 * once and each output written once (read too when accumulated); "%copy" is
 * GB/s over the copy ceiling.
 *
 * Projection (GPU kernels only, serial, one stream; no host work, no mask
 * uploads): step = 32 x (layer forward + layer backward) + embedding + final
 * RMSNorm fwd/bwd + CE fwd + CE bwd, exactly the op sequence of model_cuda.cu
 * run(); tokens/s = T / step; MFU = (6 N + 12 L C T) FLOPs per token (PaLM
 * appendix B; N = 8.03e9) x tokens/s over 989 TFLOP/s (H100/H200 SXM dense
 * bf16 datasheet), and over the measured GEMM ceiling; the share of each op
 * family in the step (the base-GEMM family is the linear4 time less the
 * dequant measured on its own; the final RMSNorm counts with RMSNorm).
 * Variants printed beside it: fused CE + scaled_add, and LoRA with dropout
 * drawn on the device.
 *
 * Output: a readable table, plus one machine-readable line per op and one for
 * the projection, each starting with "result:" and made of key=value fields:
 *   result: op=linear4 proj=gate_proj pass=fwd shape=2048x4096x14336 ms=... iters=... tflops=...
 *   result: op=rmsnorm pass=fwd shape=2048x4096 ms=... iters=... gbps=... copy_pct=...
 *   result: op=projection tokens=2048 layers=32 step_ms=... tok_s=... mfu=... share_attention=...
 * (shape: tokens x in x out for linears and LoRA.)
 *
 * Device memory: about 2.5 GB at T = 2048, printed (the 2 GiB of the copy
 * ceiling and the GEMM ceiling's 384 MiB are freed before the rest is
 * allocated); plain cudaMalloc only, all freed at the end.
 * Exit status: 0 measured; 77 without a GPU (the cuda tests' rule, tests/common/cuda_test_util.h);
 * 1 on any other CUDA failure (named), a failed sanity check or a failed
 * call; 2 on usage errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "autograd/ops.h"
#include "autograd/ops_cuda.h"
#include "common/cuda_check.h"
#include "common/half.h"
#include "common/philox.h"
#include "common/status.h"
#include "quant/quant.h"
#include "tests/common/cuda_test_util.h"

/* Llama-3-8B */
enum {
  HID = 4096,    /* C */
  NH = 32,       /* query heads */
  NKV = 8,       /* key/value heads */
  HDIM = 128,    /* D */
  FF = 14336,    /* MLP width */
  VOCAB = 128256,
  NLAYER = 32,
  RANK = 16,     /* LoRA r */
  QBLOCK = 64    /* NF4 blocksize */
};
#define RMS_EPS 1e-5
#define LORA_SCALE 1.0       /* alpha 16 / r 16 */
#define DROP_P 0.05          /* the mask variant: lora.dropout default */
#define N_PARAMS 8.03e9      /* Llama-3-8B, embedding and lm_head included */
#define PEAK_FLOPS 989e12    /* H100/H200 SXM dense bf16, datasheet */

enum { WARMUP = 3, ITERS = 20, MIN_ITERS = 5, MAX_BUFS = 128 };
#define BUDGET_MS 1000.0     /* timed calls per op, about */
enum { GEMM_CEIL = 8192 };
#define COPY_BYTES ((size_t)1 << 30)
enum { PAT = 1 << 22, PAT_SMALL = 1 << 20 }; /* host random patterns, elements */

enum { P_Q, P_K, P_V, P_O, P_GATE, P_UP, P_DOWN, NPROJ };
/* (out, in) of each projection; bwd_acc: model_cuda.cu layer_backward's acc flag. */
static const struct {
  const char *name;
  int64_t out, in;
  int bwd_acc;
} PROJ[NPROJ] = {
    {"q_proj", NH * HDIM, HID, 0},  {"k_proj", NKV * HDIM, HID, 1},
    {"v_proj", NKV * HDIM, HID, 1}, {"o_proj", HID, NH * HDIM, 0},
    {"gate_proj", FF, HID, 0},      {"up_proj", FF, HID, 1},
    {"down_proj", HID, FF, 0},
};

typedef struct {
  double ms, flops, bytes;
  int iters;
} meas;

/* Everything the ops read and write: one struct, every device buffer in bufs[]
 * (freed together); the timed op functions read their operands from here. */
typedef struct {
  int64_t T, N; /* tokens of the row; N = B * T with B = 1 */
  int layers_only;
  qt_gemm_cuda *g;
  cudaEvent_t ev[2 * ITERS + 2];
  int n_ev;
  void *bufs[MAX_BUFS];
  size_t buf_bytes[MAX_BUFS];
  int n_bufs;
  size_t bytes, peak;
  double copy_gbps;
  int p; /* projection of the op being timed */
  /* L2 flush */
  void *flush;
  size_t flush_bytes;
  int flush_i;
  /* ceilings */
  void *csrc, *cdst;
  uint16_t *ga, *gb, *gc;
  /* 4-bit weights: codes, 8-bit absmax codes + nested absmax (+ offset) */
  uint8_t *packed[NPROJ], *qabsmax[NPROJ];
  float *nested[NPROJ];
  float offset[NPROJ];
  int64_t nb[NPROJ];
  float *code;    /* (256) signed dynamic map of the double quantization */
  float *absmax;  /* (max nb) decompressed absmax scratch */
  uint16_t *wq;   /* (max out*in) dequantized weight scratch */
  /* LoRA */
  uint16_t *A[NPROJ], *B[NPROJ], *dA[NPROJ], *dB[NPROJ]; /* (r, in), (out, r) */
  uint16_t *u, *du;          /* (N, r) */
  qt_dropout_cuda drop;      /* the dropout variant's stream (p = DROP_P) */
  uint16_t *xd, *work;       /* (N, max in) */
  /* linear operands */
  uint16_t *x, *dx;          /* (N, max in) */
  uint16_t *y, *dy;          /* (N, max out) */
  /* RMSNorm, add: (N, C); w (C); rstd (N) */
  uint16_t *nw, *h, *hn, *h2, *dn, *dh;
  float *rstd;
  /* SwiGLU: (N, F) */
  uint16_t *gate, *up, *sw, *dsw, *dgate, *dup;
  /* RoPE, attention */
  int32_t *pos, *doc1, *doc4, *doc; /* (N) */
  float *inv_freq;                  /* (D/2) */
  uint16_t *q, *qr, *dqr, *dq, *att, *datt; /* (N, H*D) */
  uint16_t *k, *kr, *dkr, *dk, *v, *dv;     /* (N, K*D) */
  float *lse, *delta;                       /* (H, T) */
  /* head */
  uint16_t *W;               /* (V, C) lm_head, also read as the embedding table */
  uint16_t *emb, *xf, *dxf, *dx1; /* (N, C) */
  uint16_t *dz;              /* (chunk, V) */
  float *ce_lse, *logits;    /* (N), (chunk, V) */
  double *rowloss, *loss;    /* (N), (1) */
  int64_t *count;            /* (1) */
  int32_t *ids, *targets;    /* (N) */
  int64_t chunk;
} bench;

/* ---- device buffers ------------------------------------------------------- */
static qt_status dev_alloc(bench *b, size_t bytes, void **out) {
  *out = NULL;
  if (b->n_bufs == MAX_BUFS)
    return qt_fail(QT_ERR_NOMEM, "bench_ops_gpu: more than %d device buffers", MAX_BUFS);
  void *d = NULL;
  cudaError_t e = cudaMalloc(&d, bytes ? bytes : 1);
  if (e != cudaSuccess)
    return qt_fail(QT_ERR_CUDA, "bench_ops_gpu: cudaMalloc of %.1f MiB failed with %.1f MiB held: "
                   "%s (%s)", (double)bytes / 1048576.0, (double)b->bytes / 1048576.0,
                   cudaGetErrorString(e), cudaGetErrorName(e));
  b->bufs[b->n_bufs] = d;
  b->buf_bytes[b->n_bufs++] = bytes;
  b->bytes += bytes;
  if (b->bytes > b->peak) b->peak = b->bytes;
  *out = d;
  return QT_OK;
}
#define DALLOC(b, ptr, count) \
  QT_TRY(dev_alloc((b), (size_t)(count) * sizeof *(ptr), (void **)&(ptr)))

/* Frees the buffers allocated after the first `keep` (last first). */
static qt_status dev_free_to(bench *b, int keep) {
  while (b->n_bufs > keep) {
    b->n_bufs--;
    b->bytes -= b->buf_bytes[b->n_bufs];
    QT_CUDA_CHECK(cudaFree(b->bufs[b->n_bufs]));
  }
  return QT_OK;
}

/* ---- inputs: deterministic random patterns (splitmix64), repeated --------- */
static uint64_t rng_state = 20261202u;
static double unif(double lo, double hi) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return lo + (hi - lo) * (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* bytes of device memory = the host pattern repeated (values do not change
 * the kernels' speed; the pattern keeps the fill cheap). */
static qt_status fill_repeat(void *d, size_t bytes, const void *pat, size_t pat_bytes) {
  for (size_t off = 0; off < bytes; off += pat_bytes) {
    size_t n = bytes - off < pat_bytes ? bytes - off : pat_bytes;
    QT_CUDA_CHECK(cudaMemcpy((char *)d + off, pat, n, cudaMemcpyHostToDevice));
  }
  return QT_OK;
}

typedef struct {
  uint16_t *big;   /* (PAT) uniform [-1, 1) bf16 */
  uint16_t *small; /* (PAT_SMALL) uniform [-0.02, 0.02) bf16 */
} patterns;

static qt_status fill_big(void *d, int64_t n, const patterns *pt) {
  return fill_repeat(d, (size_t)n * 2, pt->big, (size_t)PAT * 2);
}
static qt_status fill_small(void *d, int64_t n, const patterns *pt) {
  return fill_repeat(d, (size_t)n * 2, pt->small, (size_t)PAT_SMALL * 2);
}

/* ---- timing ---------------------------------------------------------------- */
typedef qt_status (*op_fn)(bench *b);

static int cmp_float(const void *a, const void *c) {
  float x = *(const float *)a, y = *(const float *)c;
  return (x > y) - (x < y);
}

static qt_status flush_l2(bench *b) {
  QT_CUDA_CHECK(cudaMemsetAsync(b->flush, b->flush_i++ & 0xFF, b->flush_bytes, 0));
  return QT_OK;
}

/* Median ms of the timed calls (see the header). */
static qt_status time_op(bench *b, op_fn fn, double *ms, int *iters_out) {
  float t0 = 0, t[ITERS];
  QT_TRY(flush_l2(b));
  QT_CUDA_CHECK(cudaEventRecord(b->ev[0], 0));
  QT_TRY(fn(b));
  QT_CUDA_CHECK(cudaEventRecord(b->ev[1], 0));
  QT_CUDA_CHECK(cudaEventSynchronize(b->ev[1]));
  QT_CUDA_CHECK(cudaEventElapsedTime(&t0, b->ev[0], b->ev[1]));
  for (int i = 1; i < WARMUP; i++) QT_TRY(fn(b));
  QT_CUDA_CHECK(cudaDeviceSynchronize()); /* a kernel fault shows here, named */
  int iters = ITERS;
  if ((double)t0 * ITERS > BUDGET_MS) {
    iters = (int)(BUDGET_MS / (double)t0);
    if (iters < MIN_ITERS) iters = MIN_ITERS;
  }
  for (int i = 0; i < iters; i++) {
    QT_TRY(flush_l2(b));
    QT_CUDA_CHECK(cudaEventRecord(b->ev[2 * i], 0));
    QT_TRY(fn(b));
    QT_CUDA_CHECK(cudaEventRecord(b->ev[2 * i + 1], 0));
  }
  QT_CUDA_CHECK(cudaEventSynchronize(b->ev[2 * iters - 1]));
  QT_CUDA_CHECK(cudaDeviceSynchronize());
  for (int i = 0; i < iters; i++)
    QT_CUDA_CHECK(cudaEventElapsedTime(&t[i], b->ev[2 * i], b->ev[2 * i + 1]));
  qsort(t, (size_t)iters, sizeof t[0], cmp_float);
  *ms = iters % 2 ? t[iters / 2] : 0.5 * ((double)t[iters / 2 - 1] + t[iters / 2]);
  *iters_out = iters;
  return QT_OK;
}

static void print_header(void) {
  printf("%-22s %-10s %-4s %-22s %10s %9s %9s %6s\n", "op", "proj", "pass", "shape", "ms",
         "TFLOP/s", "GB/s", "%copy");
}

/* Times fn, prints its table row and its result: line. */
static qt_status measure(bench *b, op_fn fn, double flops, double bytes, const char *op,
                         const char *proj, const char *pass, const char *shape, meas *m) {
  QT_TRY(time_op(b, fn, &m->ms, &m->iters));
  m->flops = flops;
  m->bytes = bytes;
  double s = m->ms * 1e-3;
  char tf[32] = "", gb[32] = "", pc[32] = "";
  if (flops > 0 && s > 0) snprintf(tf, sizeof tf, "%9.1f", flops / s / 1e12);
  if (bytes > 0 && s > 0) {
    snprintf(gb, sizeof gb, "%9.1f", bytes / s / 1e9);
    if (b->copy_gbps > 0) snprintf(pc, sizeof pc, "%5.1f%%", 100.0 * bytes / s / 1e9 / b->copy_gbps);
  }
  printf("%-22s %-10s %-4s %-22s %10.4f %9s %9s %6s\n", op, proj ? proj : "", pass ? pass : "",
         shape ? shape : "", m->ms, tf, gb, pc);
  printf("result: op=%s", op);
  if (proj) printf(" proj=%s", proj);
  if (pass) printf(" pass=%s", pass);
  if (shape) printf(" shape=%s", shape);
  printf(" ms=%.4f iters=%d", m->ms, m->iters);
  if (flops > 0 && s > 0) printf(" tflops=%.1f", flops / s / 1e12);
  if (bytes > 0 && s > 0) {
    printf(" gbps=%.1f", bytes / s / 1e9);
    if (b->copy_gbps > 0) printf(" copy_pct=%.1f", 100.0 * bytes / s / 1e9 / b->copy_gbps);
  }
  printf("\n");
  fflush(stdout);
  return QT_OK;
}

/* ---- the timed ops ----------------------------------------------------------- */
static qt_status op_copy(bench *b) {
  QT_CUDA_CHECK(cudaMemcpyAsync(b->cdst, b->csrc, COPY_BYTES, cudaMemcpyDeviceToDevice, 0));
  return QT_OK;
}
static qt_status op_gemm_ceiling(bench *b) { /* C (8192, 8192) = A . B^T */
  return qt_op_linear_forward_cuda(b->gc, b->ga, b->gb, NULL, GEMM_CEIL, GEMM_CEIL, GEMM_CEIL,
                                   b->g, NULL);
}

/* The fp32 absmax of projection p, decompressed from the double quantization
 * into the scratch (model_cuda.cu linear_absmax). */
static qt_status dq_absmax(bench *b) {
  int p = b->p;
  return qt_quant_dq_decompress_cuda(b->code, b->qabsmax[p], b->nested[p], b->offset[p], b->nb[p],
                                     b->absmax, NULL);
}
static qt_status op_dequant(bench *b) {
  int p = b->p;
  QT_TRY(dq_absmax(b));
  return qt_quant_4bit_dequantize_bf16_cuda(QT_QUANT_NF4, b->packed[p], b->absmax,
                                            PROJ[p].out * PROJ[p].in, QBLOCK, b->wq, NULL);
}
static qt_status op_linear4_fwd(bench *b) { /* y (N, out) = x (N, in) W^T */
  int p = b->p;
  QT_TRY(dq_absmax(b));
  return qt_op_linear4_forward_cuda(b->y, b->wq, b->x, QT_QUANT_NF4, b->packed[p], b->absmax,
                                    QBLOCK, NULL, b->N, PROJ[p].in, PROJ[p].out, b->g, NULL);
}
static qt_status op_linear4_bwd(bench *b) { /* dx (N, in) (+)= dy (N, out) W */
  int p = b->p;
  QT_TRY(dq_absmax(b));
  return qt_op_linear4_backward_cuda(b->dx, PROJ[p].bwd_acc, b->wq, b->dy, QT_QUANT_NF4,
                                     b->packed[p], b->absmax, QBLOCK, b->N, PROJ[p].in,
                                     PROJ[p].out, b->g, NULL);
}
static qt_status op_lora_fwd(bench *b) { /* y += scale (x A^T) B^T, u saved */
  int p = b->p;
  return qt_op_lora_forward_cuda(b->y, b->u, NULL, b->x, NULL, b->A[p], b->B[p], LORA_SCALE,
                                 b->N, PROJ[p].in, PROJ[p].out, RANK, b->g, NULL);
}
static qt_status op_lora_bwd(bench *b) { /* as model_cuda: dx accumulates, xd = x */
  int p = b->p;
  return qt_op_lora_backward_cuda(b->dx, 1, b->dA[p], b->dB[p], b->du, NULL, b->dy, b->x, b->u,
                                  NULL, b->A[p], b->B[p], LORA_SCALE, b->N, PROJ[p].in,
                                  PROJ[p].out, RANK, b->g, NULL);
}
static qt_status op_lora_mask_fwd(bench *b) {
  int p = b->p;
  return qt_op_lora_forward_cuda(b->y, b->u, b->xd, b->x, &b->drop, b->A[p], b->B[p],
                                 LORA_SCALE, b->N, PROJ[p].in, PROJ[p].out, RANK, b->g, NULL);
}
static qt_status op_lora_mask_bwd(bench *b) {
  int p = b->p;
  return qt_op_lora_backward_cuda(b->dx, 1, b->dA[p], b->dB[p], b->du, b->work, b->dy, b->xd,
                                  b->u, &b->drop, b->A[p], b->B[p], LORA_SCALE, b->N, PROJ[p].in,
                                  PROJ[p].out, RANK, b->g, NULL);
}
static qt_status op_rmsnorm_fwd(bench *b) {
  return qt_op_rmsnorm_forward_cuda(b->hn, b->rstd, b->h, b->nw, RMS_EPS, b->N, HID, NULL);
}
static qt_status op_rmsnorm_bwd(bench *b) { /* acc = 1 as both layer norms in model_cuda */
  return qt_op_rmsnorm_backward_cuda(b->dh, 1, b->dn, b->h, b->nw, b->rstd, b->N, HID, NULL);
}
static qt_status op_add_fwd(bench *b) {
  return qt_op_add_forward_cuda(b->h2, b->h, b->hn, b->N * HID, NULL);
}
static qt_status op_add_bwd(bench *b) {
  return qt_op_add_backward_cuda(b->dh, 1, b->dn, b->N * HID, NULL);
}
static qt_status op_swiglu_fwd(bench *b) {
  return qt_op_swiglu_forward_cuda(b->sw, b->gate, b->up, b->N * FF, NULL);
}
static qt_status op_swiglu_bwd(bench *b) {
  return qt_op_swiglu_backward_cuda(b->dgate, b->dup, 0, b->dsw, b->gate, b->up, b->N * FF, NULL);
}
static qt_status op_rope_q_fwd(bench *b) {
  return qt_op_rope_forward_cuda(b->qr, b->q, b->pos, b->inv_freq, b->N, NH, HDIM, NULL);
}
static qt_status op_rope_k_fwd(bench *b) {
  return qt_op_rope_forward_cuda(b->kr, b->k, b->pos, b->inv_freq, b->N, NKV, HDIM, NULL);
}
static qt_status op_rope_q_bwd(bench *b) {
  return qt_op_rope_backward_cuda(b->dq, 0, b->dqr, b->pos, b->inv_freq, b->N, NH, HDIM, NULL);
}
static qt_status op_rope_k_bwd(bench *b) {
  return qt_op_rope_backward_cuda(b->dk, 0, b->dkr, b->pos, b->inv_freq, b->N, NKV, HDIM, NULL);
}
static qt_status op_attention_fwd(bench *b) {
  return qt_op_attention_forward_cuda(b->att, b->lse, b->qr, b->kr, b->v, b->doc, 1, b->T, NH,
                                      NKV, HDIM, NULL, NULL);
}
static qt_status op_attention_bwd(bench *b) { /* lse from the forward with the same docs */
  return qt_op_attention_backward_cuda(b->dqr, b->dkr, b->dv, 0, b->delta, b->datt, b->att, b->lse, b->qr,
                                       b->kr, b->v, b->doc, 1, b->T, NH, NKV, HDIM, NULL, NULL);
}
static qt_status op_embedding(bench *b) {
  return qt_op_embedding_forward_cuda(b->emb, b->ids, b->W, b->N, HID, VOCAB, NULL);
}
static qt_status op_ce_fwd(bench *b) {
  return qt_op_cross_entropy_forward_cuda(b->loss, b->count, b->ce_lse, b->rowloss, b->logits,
                                          b->chunk, b->xf, b->W, b->targets, b->N, HID, VOCAB,
                                          0.0, b->g, NULL);
}
static qt_status op_ce_bwd(bench *b) { /* dloss = 1 / tokens (mean loss) */
  return qt_op_cross_entropy_backward_cuda(b->dxf, 0, b->logits, b->dz, b->chunk,
                                           1.0 / (double)b->N, b->ce_lse, b->xf, b->W, b->targets,
                                           b->N, HID, VOCAB, 0.0, b->g, NULL);
}
static qt_status op_ce_fused(bench *b) {
  return qt_op_cross_entropy_fused_cuda(b->dx1, b->loss, b->count, b->logits, b->dz, b->rowloss,
                                        b->chunk, b->xf, b->W, b->targets, b->N, HID, VOCAB, 0.0,
                                        b->g, NULL);
}
static qt_status op_scaled_add(bench *b) {
  return qt_op_scaled_add_cuda(b->dxf, 0, b->dx1, 1.0 / (double)b->N, b->N * HID, NULL);
}

/* ---- sanity checks (a wrong call on the first GPU run should not pass as a timing) ---- */
/* Every bf16 value of d (n) finite (exponent not all ones). */
static qt_status check_finite(const uint16_t *d, int64_t n, const char *what) {
  uint16_t *h = malloc((size_t)n * 2);
  if (!h) return qt_fail(QT_ERR_NOMEM, "bench_ops_gpu: no host memory to check %s", what);
  cudaError_t e = cudaMemcpy(h, d, (size_t)n * 2, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    free(h);
    return QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaMemcpy(check_finite)");
  }
  int64_t bad = -1;
  for (int64_t i = 0; i < n && bad < 0; i++)
    if ((h[i] & 0x7F80u) == 0x7F80u) bad = i;
  uint16_t v = bad >= 0 ? h[bad] : 0;
  free(h);
  if (bad >= 0)
    return qt_fail(QT_ERR_NUMERIC, "bench_ops_gpu: check failed: %s has a non-finite value "
                   "(bf16 0x%04x) at %lld", what, (unsigned)v, (long long)bad);
  return QT_OK;
}

/* q_proj dequantized on the GPU (decompress + dequantize) against the bf16 data it
 * was quantized from: NF4 + double quant of uniform data gives an NMSE near
 * 0.008 (measured with quant's CPU path); a wrong pointer, offset or blocksize
 * gives ~1 or NaN. */
static qt_status check_dequant(bench *b, const patterns *pt) {
  b->p = P_Q;
  QT_TRY(op_dequant(b));
  int64_t n = PROJ[P_Q].out * PROJ[P_Q].in;
  uint16_t *h = malloc((size_t)n * 2);
  if (!h) return qt_fail(QT_ERR_NOMEM, "bench_ops_gpu: no host memory for the dequant check");
  cudaError_t e = cudaMemcpy(h, b->wq, (size_t)n * 2, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    free(h);
    return QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaMemcpy(check_dequant)");
  }
  double se = 0, sr = 0;
  for (int64_t i = 0; i < n; i++) {
    double r = qt_bf16_to_f32(pt->big[i % PAT]), d = qt_bf16_to_f32(h[i]) - r;
    se += d * d;
    sr += r * r;
  }
  free(h);
  double nmse = se / sr;
  printf("check: q_proj NF4+DQ dequantized on the GPU vs its source: NMSE %.4f\n", nmse);
  if (!(nmse < 0.03))
    return qt_fail(QT_ERR_NUMERIC, "bench_ops_gpu: check failed: q_proj dequantization NMSE %g "
                   "(expected ~0.008): the 4-bit weights or the absmax decompression are wrong",
                   nmse);
  return QT_OK;
}

/* CE over small logits (|z| ~ 0.4): the mean loss is near ln V. */
static qt_status check_loss(bench *b) {
  double loss = 0;
  int64_t count = 0;
  QT_CUDA_CHECK(cudaMemcpy(&loss, b->loss, sizeof loss, cudaMemcpyDeviceToHost));
  QT_CUDA_CHECK(cudaMemcpy(&count, b->count, sizeof count, cudaMemcpyDeviceToHost));
  double mean = count ? loss / (double)count : NAN;
  printf("check: cross-entropy mean loss %.4f over %lld targets (ln V = %.4f)\n", mean,
         (long long)count, log((double)VOCAB));
  if (count != b->N || !(fabs(mean - log((double)VOCAB)) < 1.0))
    return qt_fail(QT_ERR_NUMERIC, "bench_ops_gpu: check failed: cross-entropy loss %g over %lld "
                   "targets, expected about %.3f over %lld", mean, (long long)count,
                   log((double)VOCAB), (long long)b->N);
  return QT_OK;
}

/* ---- setup ------------------------------------------------------------------ */
/* Quantizes random bf16 data to NF4 + double quant for every projection, on the
 * GPU with quant's kernels (the absmax mean for the offset on the host, as
 * qt_quant_weight_quantize does). */
static qt_status setup_weights(bench *b, const patterns *pt) {
  int64_t max_w = 0, max_nb = 0;
  for (int p = 0; p < NPROJ; p++) {
    int64_t n = PROJ[p].out * PROJ[p].in;
    b->nb[p] = qt_quant_nblocks(n, QBLOCK);
    if (n > max_w) max_w = n;
    if (b->nb[p] > max_nb) max_nb = b->nb[p];
  }
  DALLOC(b, b->wq, max_w);
  DALLOC(b, b->absmax, max_nb);
  DALLOC(b, b->code, 256);
  float code[256];
  qt_quant_dynamic_map(true, code);
  QT_CUDA_CHECK(cudaMemcpy(b->code, code, sizeof code, cudaMemcpyHostToDevice));
  float *h_absmax = malloc((size_t)max_nb * sizeof(float));
  if (!h_absmax) return qt_fail(QT_ERR_NOMEM, "bench_ops_gpu: no host memory for absmax");
  qt_status s = fill_big(b->wq, max_w, pt); /* the source data, in the dequant scratch */
  for (int p = 0; p < NPROJ && s == QT_OK; p++) {
    int64_t n = PROJ[p].out * PROJ[p].in, nb = b->nb[p];
    int64_t nnb = (nb + QT_QUANT_NESTED_BLOCKSIZE - 1) / QT_QUANT_NESTED_BLOCKSIZE;
    void *d;
    if ((s = dev_alloc(b, (size_t)(n + 1) / 2, &d)) != QT_OK) break;
    b->packed[p] = d;
    if ((s = dev_alloc(b, (size_t)nb, &d)) != QT_OK) break;
    b->qabsmax[p] = d;
    if ((s = dev_alloc(b, (size_t)nnb * sizeof(float), &d)) != QT_OK) break;
    b->nested[p] = d;
    s = qt_quant_4bit_quantize_bf16_cuda(QT_QUANT_NF4, b->wq, n, QBLOCK, b->packed[p], b->absmax,
                                         NULL);
    if (s != QT_OK) break;
    cudaError_t e = cudaMemcpy(h_absmax, b->absmax, (size_t)nb * sizeof(float),
                               cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
      s = QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaMemcpy(absmax)");
      break;
    }
    b->offset[p] = qt_quant_absmax_mean(h_absmax, nb);
    s = qt_quant_dq_compress_cuda(b->code, b->absmax, nb, b->offset[p], b->qabsmax[p],
                                  b->nested[p], NULL);
  }
  free(h_absmax);
  QT_TRY(s);
  QT_CUDA_CHECK(cudaDeviceSynchronize());
  return check_dequant(b, pt);
}

static qt_status setup_buffers(bench *b, const patterns *pt) {
  int64_t N = b->N, T = b->T, max_in = 0, max_out = 0;
  for (int p = 0; p < NPROJ; p++) {
    if (PROJ[p].in > max_in) max_in = PROJ[p].in;
    if (PROJ[p].out > max_out) max_out = PROJ[p].out;
  }
  /* LoRA: A, B small (|.| < 0.02) so repeated y += ... stays small */
  for (int p = 0; p < NPROJ; p++) {
    DALLOC(b, b->A[p], RANK * PROJ[p].in);
    DALLOC(b, b->B[p], PROJ[p].out * RANK);
    DALLOC(b, b->dA[p], RANK * PROJ[p].in);
    DALLOC(b, b->dB[p], PROJ[p].out * RANK);
    QT_TRY(fill_small(b->A[p], RANK * PROJ[p].in, pt));
    QT_TRY(fill_small(b->B[p], PROJ[p].out * RANK, pt));
    QT_CUDA_CHECK(cudaMemset(b->dA[p], 0, (size_t)(RANK * PROJ[p].in) * 2));
    QT_CUDA_CHECK(cudaMemset(b->dB[p], 0, (size_t)(PROJ[p].out * RANK) * 2));
  }
  DALLOC(b, b->u, N * RANK);
  DALLOC(b, b->du, N * RANK);
  DALLOC(b, b->xd, N * max_in);
  DALLOC(b, b->work, N * max_in);
  /* an arbitrary step's key; the subsequence of layer 0's q_proj (lora.c) */
  b->drop = (qt_dropout_cuda){.key = 0x243F6A8885A308D3ull, .subsequence = 0,
                              .threshold = qt_philox_keep_threshold((float)DROP_P),
                              .keep_scale = 1.0 / (1.0 - DROP_P)};
  DALLOC(b, b->x, N * max_in);
  DALLOC(b, b->dx, N * max_in);
  DALLOC(b, b->y, N * max_out);
  DALLOC(b, b->dy, N * max_out);
  QT_TRY(fill_big(b->x, N * max_in, pt));
  QT_TRY(fill_big(b->dx, N * max_in, pt));
  QT_TRY(fill_big(b->dy, N * max_out, pt));
  QT_CUDA_CHECK(cudaMemset(b->y, 0, (size_t)(N * max_out) * 2));
  /* RMSNorm, add */
  DALLOC(b, b->nw, HID);
  DALLOC(b, b->h, N * HID);
  DALLOC(b, b->hn, N * HID);
  DALLOC(b, b->h2, N * HID);
  DALLOC(b, b->dn, N * HID);
  DALLOC(b, b->dh, N * HID);
  DALLOC(b, b->rstd, N);
  uint16_t nw[HID];
  for (int i = 0; i < HID; i++) nw[i] = qt_bf16_from_f32((float)unif(0.5, 1.5));
  QT_CUDA_CHECK(cudaMemcpy(b->nw, nw, sizeof nw, cudaMemcpyHostToDevice));
  QT_TRY(fill_big(b->h, N * HID, pt));
  QT_TRY(fill_big(b->dn, N * HID, pt));
  QT_TRY(fill_big(b->dh, N * HID, pt));
  QT_CUDA_CHECK(cudaMemset(b->hn, 0, (size_t)(N * HID) * 2));
  /* SwiGLU */
  DALLOC(b, b->gate, N * FF);
  DALLOC(b, b->up, N * FF);
  DALLOC(b, b->sw, N * FF);
  DALLOC(b, b->dsw, N * FF);
  DALLOC(b, b->dgate, N * FF);
  DALLOC(b, b->dup, N * FF);
  QT_TRY(fill_big(b->gate, N * FF, pt));
  QT_TRY(fill_big(b->up, N * FF, pt));
  QT_TRY(fill_big(b->dsw, N * FF, pt));
  /* RoPE, attention: positions 0..T-1; documents: one, or four equal ones */
  DALLOC(b, b->pos, N);
  DALLOC(b, b->doc1, N);
  DALLOC(b, b->doc4, N);
  DALLOC(b, b->inv_freq, HDIM / 2);
  if (!b->layers_only) {
    DALLOC(b, b->ids, N);
    DALLOC(b, b->targets, N);
  }
  int32_t *hi = malloc((size_t)N * sizeof(int32_t));
  if (!hi) return qt_fail(QT_ERR_NOMEM, "bench_ops_gpu: no host memory for positions");
  qt_status s = QT_OK;
  cudaError_t e = cudaSuccess;
  for (int64_t t = 0; t < T; t++) hi[t] = (int32_t)t;
  e = cudaMemcpy(b->pos, hi, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemset(b->doc1, 0, (size_t)N * sizeof(int32_t));
  for (int64_t t = 0; t < T; t++) hi[t] = (int32_t)(t * 4 / T);
  if (e == cudaSuccess) e = cudaMemcpy(b->doc4, hi, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice);
  if (e != cudaSuccess) s = QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaMemcpy(positions, documents)");
  /* ids and targets uniform in [0, V) */
  if (s == QT_OK && !b->layers_only) {
    for (int64_t t = 0; t < N; t++) hi[t] = (int32_t)unif(0, VOCAB);
    e = cudaMemcpy(b->ids, hi, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice);
    for (int64_t t = 0; t < N; t++) hi[t] = (int32_t)unif(0, VOCAB);
    if (e == cudaSuccess)
      e = cudaMemcpy(b->targets, hi, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) s = QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaMemcpy(ids, targets)");
  }
  free(hi);
  QT_TRY(s);
  float inv[HDIM / 2];
  qt_rope_config rc = {.type = QT_ROPE_LLAMA3, .theta = 500000.0, .factor = 8.0,
                       .low_freq_factor = 1.0, .high_freq_factor = 4.0,
                       .original_max_position_embeddings = 8192};
  qt_rope_inv_freq(inv, &rc, HDIM);
  QT_CUDA_CHECK(cudaMemcpy(b->inv_freq, inv, sizeof inv, cudaMemcpyHostToDevice));
  int64_t nq = N * NH * HDIM, nk = N * NKV * HDIM;
  DALLOC(b, b->q, nq);
  DALLOC(b, b->qr, nq);
  DALLOC(b, b->dqr, nq);
  DALLOC(b, b->dq, nq);
  DALLOC(b, b->att, nq);
  DALLOC(b, b->datt, nq);
  DALLOC(b, b->k, nk);
  DALLOC(b, b->kr, nk);
  DALLOC(b, b->dkr, nk);
  DALLOC(b, b->dk, nk);
  DALLOC(b, b->v, nk);
  DALLOC(b, b->dv, nk);
  DALLOC(b, b->lse, NH * T);
  DALLOC(b, b->delta, NH * T);
  QT_TRY(fill_big(b->q, nq, pt));
  QT_TRY(fill_big(b->qr, nq, pt));
  QT_TRY(fill_big(b->dqr, nq, pt));
  QT_TRY(fill_big(b->datt, nq, pt));
  QT_TRY(fill_big(b->k, nk, pt));
  QT_TRY(fill_big(b->kr, nk, pt));
  QT_TRY(fill_big(b->dkr, nk, pt));
  QT_TRY(fill_big(b->v, nk, pt));
  b->doc = b->doc1;
  if (b->layers_only) return QT_OK;
  /* head: W (V, C) small so logits are small; x uniform [-1, 1) */
  b->chunk = N < 256 ? N : 256; /* model_cuda.cu */
  DALLOC(b, b->W, (int64_t)VOCAB * HID);
  QT_TRY(fill_small(b->W, (int64_t)VOCAB * HID, pt));
  DALLOC(b, b->emb, N * HID);
  DALLOC(b, b->xf, N * HID);
  DALLOC(b, b->dxf, N * HID);
  DALLOC(b, b->dx1, N * HID);
  QT_TRY(fill_big(b->xf, N * HID, pt));
  DALLOC(b, b->ce_lse, N);
  DALLOC(b, b->rowloss, N);
  DALLOC(b, b->logits, b->chunk * VOCAB);
  DALLOC(b, b->dz, b->chunk * VOCAB);
  DALLOC(b, b->loss, 1);
  DALLOC(b, b->count, 1);
  return QT_OK;
}

/* ---- the run ------------------------------------------------------------------- */
typedef struct {
  meas copy, gemm;
  meas deq[NPROJ], lf[NPROJ], lb[NPROJ], rf[NPROJ], rb[NPROJ], mf[NPROJ], mb[NPROJ];
  meas rms_f, rms_b, add_f, add_b, sw_f, sw_b, rq_f, rk_f, rq_b, rk_b;
  meas at_f, at_b, at4_f, at4_b;
  meas emb, ce_f, ce_b, ce_fu, sadd;
} results;

/* The copy and GEMM ceilings; their buffers are freed before the layer's are made. */
static qt_status run_ceilings(bench *b, results *r, const patterns *pt) {
  int keep = b->n_bufs;
  QT_TRY(dev_alloc(b, COPY_BYTES, &b->csrc));
  QT_TRY(dev_alloc(b, COPY_BYTES, &b->cdst));
  QT_CUDA_CHECK(cudaMemset(b->csrc, 0x3C, COPY_BYTES));
  printf("\n-- ceilings\n");
  print_header();
  QT_TRY(measure(b, op_copy, 0, 2.0 * (double)COPY_BYTES, "copy_d2d_1GiB", NULL, NULL, NULL,
                 &r->copy));
  b->copy_gbps = r->copy.bytes / (r->copy.ms * 1e-3) / 1e9;
  QT_TRY(dev_free_to(b, keep));
  int64_t n = (int64_t)GEMM_CEIL * GEMM_CEIL;
  double g3 = (double)GEMM_CEIL;
  DALLOC(b, b->ga, n);
  DALLOC(b, b->gb, n);
  DALLOC(b, b->gc, n);
  QT_TRY(fill_big(b->ga, n, pt));
  QT_TRY(fill_big(b->gb, n, pt));
  QT_TRY(measure(b, op_gemm_ceiling, 2.0 * g3 * g3 * g3, 0, "gemm_bf16_ceiling", NULL, NULL,
                 "8192x8192x8192", &r->gemm));
  QT_TRY(check_finite(b->gc, 1 << 20, "the GEMM ceiling's output"));
  return dev_free_to(b, keep);
}

static qt_status run_projections(bench *b, results *r) {
  double N = (double)b->N;
  printf("\n-- per projection (NF4 + double quant, LoRA r=%d; linear4 = absmax decompress + "
         "dequantize + cuBLASLt GEMM)\n", RANK);
  print_header();
  for (int p = 0; p < NPROJ; p++) {
    b->p = p;
    double in = (double)PROJ[p].in, out = (double)PROJ[p].out, n = in * out, R = RANK;
    double nb = (double)b->nb[p], nnb = ceil(nb / QT_QUANT_NESTED_BLOCKSIZE);
    char wshape[48], shape[48];
    snprintf(wshape, sizeof wshape, "%lldx%lld", (long long)PROJ[p].out, (long long)PROJ[p].in);
    snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)b->N, (long long)PROJ[p].in,
             (long long)PROJ[p].out);
    /* decompress: qabsmax + nested + map in, absmax out; dequantize: codes +
     * absmax in, bf16 out */
    double deq_bytes = nb + 4 * nnb + 1024 + 4 * nb + ceil(n / 2) + 4 * nb + 2 * n;
    QT_TRY(measure(b, op_dequant, 0, deq_bytes, "dequant_nf4_dq", PROJ[p].name, NULL, wshape,
                   &r->deq[p]));
    QT_TRY(measure(b, op_linear4_fwd, 2 * N * in * out, 0, "linear4", PROJ[p].name, "fwd", shape,
                   &r->lf[p]));
    QT_TRY(measure(b, op_linear4_bwd, 2 * N * in * out, 0, "linear4", PROJ[p].name, "bwd", shape,
                   &r->lb[p]));
    /* LoRA traffic: x, A, u (w+r), B, y (r+w); backward: dB GEMM (dy, u, dB r+w),
     * du GEMM (dy, B, du), dA GEMM (du, xd, dA r+w), dx GEMM (du, A, dx r+w). */
    double lf_bytes = 2 * (N * in + R * in + 2 * N * R + out * R + 2 * N * out);
    double lb_bytes = 2 * (N * out + N * R + 2 * out * R) + 2 * (N * out + out * R + N * R) +
                      2 * (N * R + N * in + 2 * R * in) + 2 * (N * R + R * in + 2 * N * in);
    QT_TRY(measure(b, op_lora_fwd, 2 * N * R * (in + out), lf_bytes, "lora", PROJ[p].name, "fwd",
                   shape, &r->rf[p]));
    QT_TRY(measure(b, op_lora_bwd, 4 * N * R * (in + out), lb_bytes, "lora", PROJ[p].name, "bwd",
                   shape, &r->rb[p]));
    /* with dropout (keep bits drawn in the kernels, no mask read): + x read,
     * xd written (forward); work written and read (backward) */
    QT_TRY(measure(b, op_lora_mask_fwd, 2 * N * R * (in + out), lf_bytes + 4 * N * in,
                   "lora_mask", PROJ[p].name, "fwd", shape, &r->mf[p]));
    QT_TRY(measure(b, op_lora_mask_bwd, 4 * N * R * (in + out), lb_bytes + 4 * N * in,
                   "lora_mask", PROJ[p].name, "bwd", shape, &r->mb[p]));
  }
  QT_TRY(check_finite(b->y, b->N * PROJ[P_DOWN].out, "the linear + LoRA output"));
  QT_TRY(check_finite(b->dx, b->N * PROJ[P_DOWN].in, "the linear + LoRA dx"));
  return QT_OK;
}

/* Causal (query, key) pairs within the documents doc[t] = t * docs / T (as
 * setup_buffers writes doc4; docs = 1 is one document). */
static double causal_pairs(int64_t T, int docs) {
  double s = 0, len = 0;
  for (int64_t t = 0; t < T; t++) {
    len = t > 0 && t * docs / T != (t - 1) * docs / T ? 1 : len + 1;
    s += len;
  }
  return s;
}

static qt_status run_layer_ops(bench *b, results *r) {
  double N = (double)b->N, C = HID, F = FF;
  char s_nc[32], s_nf[32], s_q[32], s_k[32], s_att[48];
  snprintf(s_nc, sizeof s_nc, "%lldx%d", (long long)b->N, HID);
  snprintf(s_nf, sizeof s_nf, "%lldx%d", (long long)b->N, FF);
  snprintf(s_q, sizeof s_q, "%lldx%dx%d", (long long)b->N, NH, HDIM);
  snprintf(s_k, sizeof s_k, "%lldx%dx%d", (long long)b->N, NKV, HDIM);
  snprintf(s_att, sizeof s_att, "T%lld_H%d_K%d_D%d", (long long)b->T, NH, NKV, HDIM);
  printf("\n-- layer ops (element-wise GB/s; attention TFLOP/s of causal pairs)\n");
  print_header();
  QT_TRY(measure(b, op_rmsnorm_fwd, 0, 2 * N * C * 2 + 2 * C + 4 * N, "rmsnorm", NULL, "fwd",
                 s_nc, &r->rms_f));
  QT_TRY(measure(b, op_rmsnorm_bwd, 0, 4 * N * C * 2 + 2 * C + 4 * N, "rmsnorm", NULL, "bwd",
                 s_nc, &r->rms_b));
  double hd = (double)HDIM, nq = N * NH * hd, nk = N * NKV * hd, rope_extra = 4 * N + 2 * hd;
  QT_TRY(measure(b, op_rope_q_fwd, 0, 2 * nq * 2 + rope_extra, "rope_q", NULL, "fwd", s_q,
                 &r->rq_f));
  QT_TRY(measure(b, op_rope_k_fwd, 0, 2 * nk * 2 + rope_extra, "rope_k", NULL, "fwd", s_k,
                 &r->rk_f));
  QT_TRY(measure(b, op_rope_q_bwd, 0, 2 * nq * 2 + rope_extra, "rope_q", NULL, "bwd", s_q,
                 &r->rq_b));
  QT_TRY(measure(b, op_rope_k_bwd, 0, 2 * nk * 2 + rope_extra, "rope_k", NULL, "bwd", s_k,
                 &r->rk_b));
  double p1 = causal_pairs(b->T, 1), p4 = causal_pairs(b->T, 4);
  b->doc = b->doc1; /* each backward right after the forward that wrote its lse */
  QT_TRY(measure(b, op_attention_fwd, 4 * hd * NH * p1, 0, "attention_1doc", NULL, "fwd", s_att,
                 &r->at_f));
  QT_TRY(check_finite(b->att, b->N * NH * HDIM, "the attention output"));
  QT_TRY(measure(b, op_attention_bwd, 10 * hd * NH * p1, 0, "attention_1doc", NULL, "bwd", s_att,
                 &r->at_b));
  QT_TRY(check_finite(b->dqr, b->N * NH * HDIM, "the attention dq"));
  QT_TRY(check_finite(b->dkr, b->N * NKV * HDIM, "the attention dk"));
  QT_TRY(check_finite(b->dv, b->N * NKV * HDIM, "the attention dv"));
  /* the same at smaller tile caps (QLORA_ATT_TILE), as info: more blocks per
   * SM against more passes over the keys; the default takes the largest */
  for (int cap = 32; cap >= 16; cap /= 2) {
    char name[40];
    meas m;
    snprintf(name, sizeof name, "attention_1doc_tile%d", cap);
    setenv("QLORA_ATT_TILE", cap == 32 ? "32" : "16", 1);
    qt_status st = measure(b, op_attention_fwd, 4 * hd * NH * p1, 0, name, NULL, "fwd", s_att, &m);
    if (st == QT_OK) st = measure(b, op_attention_bwd, 10 * hd * NH * p1, 0, name, NULL, "bwd", s_att, &m);
    unsetenv("QLORA_ATT_TILE");
    QT_TRY(st);
  }
  b->doc = b->doc4;
  QT_TRY(measure(b, op_attention_fwd, 4 * hd * NH * p4, 0, "attention_4docs", NULL, "fwd", s_att,
                 &r->at4_f));
  QT_TRY(measure(b, op_attention_bwd, 10 * hd * NH * p4, 0, "attention_4docs", NULL, "bwd", s_att,
                 &r->at4_b));
  b->doc = b->doc1;
  QT_TRY(measure(b, op_swiglu_fwd, 0, 3 * N * F * 2, "swiglu", NULL, "fwd", s_nf, &r->sw_f));
  QT_TRY(measure(b, op_swiglu_bwd, 0, 5 * N * F * 2, "swiglu", NULL, "bwd", s_nf, &r->sw_b));
  QT_TRY(measure(b, op_add_fwd, 0, 3 * N * C * 2, "residual_add", NULL, "fwd", s_nc, &r->add_f));
  QT_TRY(measure(b, op_add_bwd, 0, 3 * N * C * 2, "residual_add", NULL, "bwd", s_nc, &r->add_b));
  QT_TRY(check_finite(b->hn, b->N * HID, "the RMSNorm output"));
  QT_TRY(check_finite(b->dh, b->N * HID, "the RMSNorm dx"));
  QT_TRY(check_finite(b->sw, b->N * FF, "the SwiGLU output"));
  QT_TRY(check_finite(b->dgate, b->N * FF, "the SwiGLU dgate"));
  return QT_OK;
}

static qt_status run_head(bench *b, results *r) {
  double N = (double)b->N, C = HID, V = VOCAB;
  char s_e[32], s_ce[48];
  snprintf(s_e, sizeof s_e, "%lldx%d", (long long)b->N, HID);
  snprintf(s_ce, sizeof s_ce, "%lldx%dx%d_c%lld", (long long)b->N, HID, VOCAB, (long long)b->chunk);
  printf("\n-- head (embedding, lm_head + cross-entropy in %lld-row chunks)\n",
         (long long)b->chunk);
  print_header();
  QT_TRY(measure(b, op_embedding, 0, 2 * N * C * 2 + 4 * N, "embedding", NULL, "fwd", s_e,
                 &r->emb));
  QT_TRY(measure(b, op_ce_fwd, 2 * N * C * V, 0, "lm_head_ce", NULL, "fwd", s_ce, &r->ce_f));
  QT_TRY(check_loss(b));
  QT_TRY(measure(b, op_ce_bwd, 4 * N * C * V, 0, "lm_head_ce", NULL, "bwd", s_ce, &r->ce_b));
  QT_TRY(check_finite(b->dxf, b->N * HID, "the cross-entropy dx"));
  QT_TRY(measure(b, op_ce_fused, 4 * N * C * V, 0, "lm_head_ce_fused", NULL, NULL, s_ce,
                 &r->ce_fu));
  QT_TRY(check_loss(b));
  QT_TRY(measure(b, op_scaled_add, 0, 2 * N * C * 2, "scaled_add", NULL, NULL, s_e, &r->sadd));
  return QT_OK;
}

/* The projection (see the header): the op sequence of model_cuda.cu run(). */
static void project(const bench *b, const results *r) {
  double L = NLAYER, T = (double)b->T;
  double lin = 0, deq = 0, lora = 0, lora_mask = 0, lin_fl = 0, lora_fl = 0;
  for (int p = 0; p < NPROJ; p++) {
    lin += r->lf[p].ms + r->lb[p].ms;
    deq += 2 * r->deq[p].ms;
    lora += r->rf[p].ms + r->rb[p].ms;
    lora_mask += r->mf[p].ms + r->mb[p].ms;
    lin_fl += r->lf[p].flops + r->lb[p].flops;
    lora_fl += r->rf[p].flops + r->rb[p].flops;
  }
  double fwd = 2 * r->rms_f.ms + r->rq_f.ms + r->rk_f.ms + r->at_f.ms + 2 * r->add_f.ms +
               r->sw_f.ms;
  double bwd = r->sw_b.ms + 2 * r->rms_b.ms + r->at_b.ms + r->rq_b.ms + r->rk_b.ms;
  for (int p = 0; p < NPROJ; p++) {
    fwd += r->lf[p].ms + r->rf[p].ms;
    bwd += r->lb[p].ms + r->rb[p].ms;
  }
  double head = 0, head_fused = 0, ce = 0, ce_fl = 0;
  if (!b->layers_only) {
    ce = r->emb.ms + r->ce_f.ms + r->ce_b.ms;
    head = ce + r->rms_f.ms + r->rms_b.ms;
    head_fused = r->emb.ms + r->ce_fu.ms + r->sadd.ms + r->rms_f.ms + r->rms_b.ms;
    ce_fl = r->ce_f.flops + r->ce_b.flops;
  }
  double step = L * (fwd + bwd) + head;
  struct { const char *key, *name; double ms; } fam[] = {
      {"attention", "attention (fwd+bwd)", L * (r->at_f.ms + r->at_b.ms)},
      {"gemm", "base GEMM (fwd + dx)", L * (lin - deq)},
      {"dequant", "NF4 dequant (fwd + bwd)", L * deq},
      {"lora", "LoRA (fwd+bwd)", L * lora},
      {"rmsnorm", "RMSNorm (incl. final)",
       L * 2 * (r->rms_f.ms + r->rms_b.ms) + (b->layers_only ? 0 : r->rms_f.ms + r->rms_b.ms)},
      {"rope", "RoPE", L * (r->rq_f.ms + r->rk_f.ms + r->rq_b.ms + r->rk_b.ms)},
      {"swiglu", "SwiGLU", L * (r->sw_f.ms + r->sw_b.ms)},
      {"add", "residual add", L * 2 * r->add_f.ms},
      {"head", "embedding + lm_head/CE", ce},
  };
  enum { NFAM = sizeof fam / sizeof fam[0] };
  double tok_s = T / (step * 1e-3);
  double model_flops_tok = 6.0 * N_PARAMS + 12.0 * L * HID * T; /* PaLM, review section 2 */
  double model_tflops = model_flops_tok * tok_s / 1e12;
  double gemm_tflops = r->gemm.flops / (r->gemm.ms * 1e-3) / 1e12;
  double exec_fl = L * (lin_fl + lora_fl + r->at_f.flops + r->at_b.flops) + ce_fl;
  printf("\n-- projected step: one %lld-token sequence, %d layers (GPU kernels only, one "
         "stream, no host work, LoRA without dropout)\n", (long long)b->T, NLAYER);
  printf("per layer: forward %.3f ms + backward %.3f ms = %.3f ms; x %d = %.1f ms\n", fwd, bwd,
         fwd + bwd, NLAYER, L * (fwd + bwd));
  if (b->layers_only)
    printf("embedding / lm_head / CE: not measured (--layers-only); the step below excludes them\n");
  else
    printf("embedding + final RMSNorm + lm_head/CE fwd+bwd: %.3f ms\n", head);
  printf("step: %.1f ms -> %.0f tokens/s\n", step, tok_s);
  printf("model FLOPs %.2f GFLOP/token (6N + 12 L C T, N = %.3g) -> %.1f TFLOP/s = %.2f%% MFU "
         "of %.0f TFLOP/s (%.2f%% of the measured %.0f TFLOP/s GEMM ceiling)\n",
         model_flops_tok / 1e9, N_PARAMS, model_tflops, 100.0 * model_tflops * 1e12 / PEAK_FLOPS,
         PEAK_FLOPS / 1e12, 100.0 * model_tflops / gemm_tflops, gemm_tflops);
  printf("executed FLOPs (base fwd + dx, LoRA, attention, lm_head x3): %.1f TFLOP/step -> %.1f "
         "TFLOP/s\n", exec_fl / 1e12, exec_fl / (step * 1e-3) / 1e12);
  if (!b->layers_only)
    printf("variant, fused CE + scaled_add instead of CE fwd + bwd: step %.1f ms (%.0f tokens/s)\n",
           step - head + head_fused, T / ((step - head + head_fused) * 1e-3));
  printf("variant, LoRA with dropout drawn on the device: step %.1f ms (%.0f tokens/s)\n",
         step + L * (lora_mask - lora), T / ((step + L * (lora_mask - lora)) * 1e-3));
  printf("share of the projected step:\n");
  for (int i = 0; i < NFAM; i++)
    printf("  %-26s %10.1f ms %6.1f%%\n", fam[i].name, fam[i].ms, 100.0 * fam[i].ms / step);
  printf("result: op=projection tokens=%lld layers=%d layers_only=%d layer_fwd_ms=%.3f "
         "layer_bwd_ms=%.3f head_ms=%.3f step_ms=%.1f tok_s=%.0f model_tflops=%.1f mfu=%.4f "
         "mfu_vs_gemm_ceiling=%.4f exec_tflop_step=%.2f", (long long)b->T, NLAYER,
         b->layers_only, fwd, bwd, head, step, tok_s, model_tflops,
         model_tflops * 1e12 / PEAK_FLOPS, model_tflops / gemm_tflops, exec_fl / 1e12);
  for (int i = 0; i < NFAM; i++) printf(" share_%s=%.4f", fam[i].key, fam[i].ms / step);
  printf("\n");
}

static qt_status run(bench *b) {
  struct cudaDeviceProp prop;
  QT_CUDA_CHECK(cudaSetDevice(0));
  QT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int drv = 0, rt = 0, cma = 0;
  QT_CUDA_CHECK(cudaDriverGetVersion(&drv));
  QT_CUDA_CHECK(cudaRuntimeGetVersion(&rt));
  QT_CUDA_CHECK(cudaDeviceGetAttribute(&cma, cudaDevAttrConcurrentManagedAccess, 0));
  size_t free_b = 0, total_b = 0;
  QT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  printf("bench_ops_gpu: %s (sm_%d%d, %d SMs, %.1f GiB, %.1f GiB free, L2 %d MiB); CUDA driver %d, "
         "runtime %d; concurrentManagedAccess %d\n", prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, (double)total_b / 1073741824.0, (double)free_b / 1073741824.0,
         prop.l2CacheSize >> 20, drv, rt, cma);
  printf("Llama-3-8B layer: T=%lld tokens (B=1), hidden %d, heads %d/%d x %d, MLP %d, vocab %d, "
         "%d layers; LoRA r=%d (scale %.1f) on all 7 projections; NF4 blocksize %d + double "
         "quant\n", (long long)b->T, HID, NH, NKV, HDIM, FF, VOCAB, NLAYER, RANK, LORA_SCALE,
         QBLOCK);
  printf("timing: cudaEvents, median of up to %d calls after %d warm-ups, L2 flushed before each "
         "call\n", ITERS, WARMUP);
  for (int i = 0; i < 2 * ITERS + 2; i++) {
    QT_CUDA_CHECK(cudaEventCreate(&b->ev[i]));
    b->n_ev = i + 1;
  }
  QT_TRY(qt_gemm_cuda_create(&b->g, (size_t)32 << 20));
  b->flush_bytes = 2 * (size_t)(prop.l2CacheSize > 0 ? prop.l2CacheSize : 64 << 20);
  QT_TRY(dev_alloc(b, b->flush_bytes, &b->flush));

  patterns pt = {0};
  pt.big = malloc((size_t)PAT * 2);
  pt.small = malloc((size_t)PAT_SMALL * 2);
  if (!pt.big || !pt.small) {
    free(pt.big);
    free(pt.small);
    return qt_fail(QT_ERR_NOMEM, "bench_ops_gpu: no host memory for the input patterns");
  }
  for (int64_t i = 0; i < PAT; i++) pt.big[i] = qt_bf16_from_f32((float)unif(-1, 1));
  for (int64_t i = 0; i < PAT_SMALL; i++)
    pt.small[i] = qt_bf16_from_f32((float)unif(-0.02, 0.02));
  results *r = calloc(1, sizeof *r);
  qt_status s = r ? QT_OK : qt_fail(QT_ERR_NOMEM, "bench_ops_gpu: no host memory");
  if (s == QT_OK) s = run_ceilings(b, r, &pt);
  size_t ceiling_peak = b->peak;
  if (s == QT_OK) s = setup_weights(b, &pt);
  if (s == QT_OK) s = setup_buffers(b, &pt);
  if (s == QT_OK) {
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) s = QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaDeviceSynchronize(setup)");
  }
  if (s == QT_OK) {
    printf("device memory: %.1f MiB in %d buffers + 32 MiB GEMM workspace (ceilings: peak %.1f "
           "MiB, freed)\n", (double)b->bytes / 1048576.0, b->n_bufs,
           (double)ceiling_peak / 1048576.0);
  }
  if (s == QT_OK) s = run_projections(b, r);
  if (s == QT_OK) s = run_layer_ops(b, r);
  if (s == QT_OK && !b->layers_only) s = run_head(b, r);
  if (s == QT_OK) project(b, r);
  free(r);
  free(pt.big);
  free(pt.small);
  return s;
}

/* Frees everything, whatever fails on the way (after a sticky CUDA error every
 * call fails); returns the first failure. */
static qt_status cleanup(bench *b) {
  qt_status s = QT_OK;
  while (b->n_bufs > 0) {
    cudaError_t e = cudaFree(b->bufs[--b->n_bufs]);
    if (e != cudaSuccess && s == QT_OK) s = QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaFree");
  }
  b->bytes = 0;
  if (b->g) {
    qt_status s2 = qt_gemm_cuda_free(b->g);
    if (s == QT_OK) s = s2;
    b->g = NULL;
  }
  for (int i = 0; i < b->n_ev; i++) {
    cudaError_t e = cudaEventDestroy(b->ev[i]);
    if (e != cudaSuccess && s == QT_OK) s = QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaEventDestroy");
  }
  b->n_ev = 0;
  return s;
}

int main(int argc, char **argv) {
  bench b;
  memset(&b, 0, sizeof b);
  b.T = 2048;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
      char *end = NULL;
      long long t = strtoll(argv[++i], &end, 10);
      if (!end || *end || t < 1 || t > 65536) {
        fprintf(stderr, "bench_ops_gpu: --tokens needs an integer in [1, 65536], got '%s'\n",
                argv[i]);
        return 2;
      }
      b.T = t;
    } else if (strcmp(argv[i], "--layers-only") == 0) {
      b.layers_only = 1;
    } else {
      fprintf(stderr, "usage: bench_ops_gpu [--tokens T] [--layers-only]\n");
      return 2;
    }
  }
  b.N = b.T;

  /* No GPU: skip (77). Anything else wrong with the runtime is a failure, so
   * a broken driver cannot pass as "no device" (review 2026-12-02, item 6). */
  int rc = ctu_gpu_check("bench_ops_gpu");
  if (rc != 0) {
    if (rc == 77) printf("bench_ops_gpu: no CUDA device; nothing measured\n");
    return rc;
  }
  /* The first failure's message is kept: cleanup after a sticky error fails too. */
  char msg[2048] = "";
  qt_status s = run(&b);
  if (s != QT_OK) snprintf(msg, sizeof msg, "%s", qt_error_message());
  qt_status s2 = cleanup(&b);
  if (s == QT_OK && s2 != QT_OK) {
    s = s2;
    snprintf(msg, sizeof msg, "%s", qt_error_message());
  }
  fflush(stdout);
  if (s != QT_OK) {
    fprintf(stderr, "bench_ops_gpu: FAILED: %s\n", msg);
    return 1;
  }
  return 0;
}
