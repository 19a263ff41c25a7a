/* GPU parity of the GEMM ops, LoRA, attention and cross-entropy of
 * autograd/ops_cuda.h against the CPU ops of autograd/ops.h — the same harness
 * rules as test_ops_cuda_parity.c (STYLE.md G8): fresh random inputs per run
 * (the seed is printed), odd shapes (1, 5, 7, 63, 65, 127), bf16 inputs fed to
 * both sides (the CPU op gets the same values widened to fp32), NMSE plus
 * allclose, NaN fails, guard bytes around every device buffer an op writes.
 * Label `cuda`; exits 77 without a GPU. No benchmark here: the GPU check (tools/gpu_run.sh)
 * runs every `cuda`-labelled test (this one included) on a GPU machine.
 *
 * Tolerances (one reason each):
 *  - bf16 outputs (linear, LoRA, attention out and gradients, cross-entropy dx):
 *    as test_ops_cuda_parity.c, allclose rtol 2^-6 + atol 2^-7 * max|ref| and
 *    NMSE < 2e-5: both sides accumulate in >= fp32 from identical bf16 inputs,
 *    so the difference is the GPU's bf16 roundings (<= 2^-9 relative each: the
 *    output, and the intermediates it stores in bf16 — LoRA's u, du and xd,
 *    attention's P and dS, cross-entropy's dz); the atol covers elements where
 *    a sum cancels. Attention dq and dk: NMSE < 1e-4, since delta_i =
 *    rowsum(dO_i * O_i) comes from the forward's bf16 output (FlashAttention-2's
 *    form) and O's rounding shifts every dS of a row alike (no averaging over a
 *    short window; tests/autograd/test_attn_flash.c measures up to 2.8e-5).
 *  - the 4-bit weight the GPU dequantizes into its scratch: bit-identical to
 *    quant's CPU dequantize (both are bitsandbytes-exact, quant/quant.h).
 *  - cross-entropy loss (double) and lse (fp32): relative 1e-5 (loss: of
 *    sum |row loss| + count): both sides form fp32 logits from the same bf16
 *    values and differ only in fp32 summation order (GEMM, sum of exp: ~1e-6);
 *    rounding the logits to bf16 or dropping one row would miss it by > 100x.
 *    The target count is exact.
 *  - determinism: the attention backward and the cross-entropy loss run twice
 *    are bit-identical (no atomics anywhere). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/ops.h"
#include "autograd/ops_cuda.h"
#include "common/half.h"
#include "common/philox.h"
#include "common/status.h"
#include "quant/quant.h"
#include "tests/common/cuda_test_util.h"

enum { GUARD = 256 };
#define GUARD_BYTE 0xA5

static int failures;
static uint64_t rng_state;
static qt_gemm_cuda *gemm;

static double unif(double lo, double hi) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return lo + (hi - lo) * (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

#define CK(call)                                                                          \
  do {                                                                                    \
    cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)
#define OK(call)                                                                          \
  do {                                                                                    \
    if ((call) != QT_OK) {                                                                \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, qt_error_message());  \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

static void *xmalloc(size_t bytes) {
  void *p = malloc(bytes > 0 ? bytes : 1);
  if (!p) {
    fprintf(stderr, "out of host memory\n");
    exit(1);
  }
  return p;
}

/* A device buffer with GUARD bytes of GUARD_BYTE on both sides. */
typedef struct { unsigned char *base; void *d; size_t bytes; } dbuf;
static dbuf dalloc(size_t bytes) {
  dbuf b = {NULL, NULL, bytes};
  CK(cudaMalloc((void **)&b.base, bytes + 2 * GUARD));
  CK(cudaMemset(b.base, GUARD_BYTE, bytes + 2 * GUARD));
  b.d = b.base + GUARD;
  return b;
}
static void dcheck_free(dbuf *b, const char *what) {
  unsigned char g[2 * GUARD];
  CK(cudaMemcpy(g, b->base, GUARD, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(g + GUARD, b->base + GUARD + b->bytes, GUARD, cudaMemcpyDeviceToHost));
  for (int i = 0; i < 2 * GUARD; i++)
    if (g[i] != GUARD_BYTE) {
      fprintf(stderr, "%s: guard byte %d overwritten\n", what, i);
      failures++;
      break;
    }
  CK(cudaFree(b->base));
}
static dbuf upload(const void *h, size_t bytes) {
  dbuf b = dalloc(bytes);
  if (bytes) CK(cudaMemcpy(b.d, h, bytes, cudaMemcpyHostToDevice));
  return b;
}

/* n random values in [lo, hi), rounded to bf16: bits in *h16, widened in *h32. */
static void rnd_bf16(int64_t n, double lo, double hi, uint16_t **h16, float **h32) {
  *h16 = xmalloc((size_t)n * 2);
  *h32 = xmalloc((size_t)n * 4);
  for (int64_t i = 0; i < n; i++) {
    (*h16)[i] = qt_bf16_from_f32((float)unif(lo, hi));
    (*h32)[i] = qt_bf16_to_f32((*h16)[i]);
  }
}

/* GPU bf16 output (device) against the CPU fp32 reference (rule in the header). */
static void compare_nmse(const char *what, const dbuf *gpu, const float *ref, int64_t n,
                         double nmse_max) {
  uint16_t *g = xmalloc((size_t)n * 2);
  if (n) CK(cudaMemcpy(g, gpu->d, (size_t)n * 2, cudaMemcpyDeviceToHost));
  double se = 0, sr = 0, mx = 0;
  for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
  int64_t bad = 0, worst = -1;
  double worst_d = -1;
  for (int64_t i = 0; i < n; i++) {
    double a = qt_bf16_to_f32(g[i]), b = ref[i], d = fabs(a - b);
    if (isnan(a) || isnan(b)) { bad++; continue; }
    se += d * d;
    sr += b * b;
    if (!(d <= 0x1p-7 * mx + 0x1p-6 * fabs(b))) bad++;
    if (d > worst_d) { worst_d = d; worst = i; }
  }
  double nmse = sr > 0 ? se / sr : se;
  if (bad || nmse > nmse_max) {
    fprintf(stderr, "FAIL %s (n=%lld): %lld elements off, NMSE %.3g, worst at %lld: gpu %g ref %g\n",
            what, (long long)n, (long long)bad, nmse, (long long)worst,
            worst >= 0 ? qt_bf16_to_f32(g[worst]) : 0.0, worst >= 0 ? ref[worst] : 0.0);
    failures++;
  }
  free(g);
}

static void compare(const char *what, const dbuf *gpu, const float *ref, int64_t n) {
  compare_nmse(what, gpu, ref, n, 2e-5);
}

/* GPU fp32 output against an fp32 reference, |d| <= rtol * max(|ref|, 1). */
static void compare_f32(const char *what, const dbuf *gpu, const float *ref, int64_t n,
                        double rtol) {
  float *g = xmalloc((size_t)n * 4);
  if (n) CK(cudaMemcpy(g, gpu->d, (size_t)n * 4, cudaMemcpyDeviceToHost));
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)g[i] - ref[i]);
    if (isnan(g[i]) || isnan(ref[i]) || !(d <= rtol * fmax(fabs(ref[i]), 1.0))) {
      fprintf(stderr, "FAIL %s (n=%lld): at %lld gpu %.9g ref %.9g\n", what, (long long)n,
              (long long)i, g[i], ref[i]);
      failures++;
      break;
    }
  }
  free(g);
}

/* Both device buffers hold the same bytes. */
static void compare_bits(const char *what, const dbuf *a, const dbuf *b) {
  unsigned char *x = xmalloc(a->bytes), *y = xmalloc(b->bytes);
  if (a->bytes) CK(cudaMemcpy(x, a->d, a->bytes, cudaMemcpyDeviceToHost));
  if (b->bytes) CK(cudaMemcpy(y, b->d, b->bytes, cudaMemcpyDeviceToHost));
  if (a->bytes != b->bytes || memcmp(x, y, a->bytes) != 0) {
    fprintf(stderr, "FAIL %s: not bit-identical\n", what);
    failures++;
  }
  free(x);
  free(y);
}

static const int64_t SIZES[] = {1, 5, 7, 63, 65, 127};
enum { NS = sizeof SIZES / sizeof SIZES[0] };

/* ---- dense and 4-bit linear ------------------------------------------------ */
static void case_linear(int64_t N, int64_t In, int64_t O, int with_bias, int four_bit) {
  uint16_t *x16, *w16, *b16, *dy16, *z16;
  float *x, *w, *b, *dy, *z;
  rnd_bf16(N * In, -1, 1, &x16, &x);
  rnd_bf16(O * In, -1, 1, &w16, &w);
  rnd_bf16(O, -1, 1, &b16, &b);
  rnd_bf16(N * O, -1, 1, &dy16, &dy);
  rnd_bf16(N * In, -1, 1, &z16, &z);
  const int blocksize = 64;
  int64_t nw = O * In, nb = qt_quant_nblocks(nw, blocksize);
  uint8_t *packed = xmalloc((size_t)(nw + 1) / 2);
  float *absmax = xmalloc((size_t)nb * 4);
  dbuf dPk = {0}, dAm = {0}, dWs = {0};
  if (four_bit) { /* the CPU side uses quant's CPU dequantize of the same codes */
    qt_quant_4bit_quantize(QT_QUANT_NF4, w, nw, blocksize, packed, absmax, 1);
    qt_quant_4bit_dequantize_bf16(QT_QUANT_NF4, packed, absmax, nw, blocksize, w16, 1);
    for (int64_t i = 0; i < nw; i++) w[i] = qt_bf16_to_f32(w16[i]);
    dPk = upload(packed, (size_t)(nw + 1) / 2);
    dAm = upload(absmax, (size_t)nb * 4);
    dWs = dalloc((size_t)nw * 2);
  }
  char what[96];
  snprintf(what, sizeof what, "%slinear N=%lld In=%lld O=%lld%s", four_bit ? "4-bit " : "",
           (long long)N, (long long)In, (long long)O, with_bias ? " bias" : "");
  float *y = xmalloc((size_t)(N * O) * 4), *dx = xmalloc((size_t)(N * In) * 4);
  qt_op_linear_forward_cpu(y, x, w, with_bias ? b : NULL, N, In, O);
  dbuf dX = upload(x16, (size_t)(N * In) * 2), dW = upload(w16, (size_t)nw * 2);
  dbuf dB = upload(b16, (size_t)O * 2), dDY = upload(dy16, (size_t)(N * O) * 2);
  dbuf dY = dalloc((size_t)(N * O) * 2);
  if (four_bit)
    OK(qt_op_linear4_forward_cuda(dY.d, dWs.d, dX.d, QT_QUANT_NF4, dPk.d, dAm.d, blocksize,
                                  with_bias ? dB.d : NULL, N, In, O, gemm, NULL));
  else
    OK(qt_op_linear_forward_cuda(dY.d, dX.d, dW.d, with_bias ? dB.d : NULL, N, In, O, gemm, NULL));
  CK(cudaDeviceSynchronize());
  compare(what, &dY, y, N * O);
  if (four_bit) compare_bits("4-bit linear: dequantized scratch vs quant CPU", &dWs, &dW);
  for (int acc = 0; acc < 2; acc++) {
    dbuf dDX = upload(z16, (size_t)(N * In) * 2);
    memcpy(dx, z, (size_t)(N * In) * 4);
    qt_op_linear_backward_cpu(dx, acc, dy, w, N, In, O);
    if (four_bit)
      OK(qt_op_linear4_backward_cuda(dDX.d, acc, dWs.d, dDY.d, QT_QUANT_NF4, dPk.d, dAm.d,
                                     blocksize, N, In, O, gemm, NULL));
    else
      OK(qt_op_linear_backward_cuda(dDX.d, acc, dDY.d, dW.d, N, In, O, gemm, NULL));
    CK(cudaDeviceSynchronize());
    compare(acc ? "linear backward dx (acc)" : "linear backward dx", &dDX, dx, N * In);
    dcheck_free(&dDX, "linear dx");
  }
  dcheck_free(&dY, "linear y");
  if (four_bit) {
    dcheck_free(&dWs, "4-bit scratch");
    dcheck_free(&dPk, "packed");
    dcheck_free(&dAm, "absmax");
  }
  dcheck_free(&dX, "x"); dcheck_free(&dW, "W"); dcheck_free(&dB, "bias"); dcheck_free(&dDY, "dy");
  free(x16); free(w16); free(b16); free(dy16); free(z16);
  free(x); free(w); free(b); free(dy); free(z); free(y); free(dx); free(packed); free(absmax);
}

/* ---- LoRA ------------------------------------------------------------------- */
/* dropout: 0 none; 1 p = 0.1, 2 p = 0.5 (keys and subsequences with high bits
 * set). The GPU draws its keep bits in the kernels from the descriptor; the
 * CPU reference gets qt_philox_keep_mask's bytes for the same key,
 * subsequence and p, so xd and dx agree only if every bit does. */
static void case_lora(int64_t N, int64_t In, int64_t O, int64_t R, int dropout) {
  uint16_t *x16, *a16, *b16, *y16, *dy16, *dA16, *dB16, *z16;
  float *x, *a, *b, *y, *dy, *dA, *dB, *z;
  rnd_bf16(N * In, -1, 1, &x16, &x);
  rnd_bf16(R * In, -0.5, 0.5, &a16, &a);
  rnd_bf16(O * R, -0.5, 0.5, &b16, &b);
  rnd_bf16(N * O, -1, 1, &y16, &y);
  rnd_bf16(N * O, -1, 1, &dy16, &dy);
  rnd_bf16(R * In, -1, 1, &dA16, &dA);
  rnd_bf16(O * R, -1, 1, &dB16, &dB);
  rnd_bf16(N * In, -1, 1, &z16, &z);
  double p = dropout == 2 ? 0.5 : 0.1, keep = 1.0 / (1.0 - p);
  double scale = 16.0 / (double)R; /* lora_alpha 16 / r */
  uint8_t *mask = NULL;
  qt_dropout_cuda drop = {0};
  if (dropout) {
    uint64_t hi = dropout == 2 ? 0xFEDC000000000000ull : 0;
    drop.key = hi | (uint64_t)unif(0, 1e15);
    drop.subsequence = hi | (uint64_t)unif(0, 1e6);
    drop.threshold = qt_philox_keep_threshold((float)p);
    drop.keep_scale = keep;
    mask = xmalloc((size_t)(N * In));
    qt_philox_keep_mask(mask, N * In, (float)p, drop.key, drop.subsequence);
  }
  float *u = xmalloc((size_t)(N * R) * 4), *xd = xmalloc((size_t)(N * In) * 4);
  float *du = xmalloc((size_t)(N * R) * 4), *work = xmalloc((size_t)(N * In) * 4);
  float *dx = xmalloc((size_t)(N * In) * 4);
  dbuf dX = upload(x16, (size_t)(N * In) * 2), dA_ = upload(a16, (size_t)(R * In) * 2);
  dbuf dB_ = upload(b16, (size_t)(O * R) * 2), dY = upload(y16, (size_t)(N * O) * 2);
  dbuf dDY = upload(dy16, (size_t)(N * O) * 2);
  dbuf dU = dalloc((size_t)(N * R) * 2), dXD = dalloc((size_t)(N * In) * 2);
  dbuf dDU = dalloc((size_t)(N * R) * 2), dWk = dalloc((size_t)(N * In) * 2);
  char what[96];
  snprintf(what, sizeof what, "lora N=%lld In=%lld O=%lld R=%lld%s", (long long)N, (long long)In,
           (long long)O, (long long)R,
           dropout == 2 ? " dropout 0.5" : dropout ? " dropout 0.1" : "");
  qt_op_lora_forward_cpu(y, u, dropout ? xd : NULL, x, mask, keep, a, b, scale, N, In, O, R);
  OK(qt_op_lora_forward_cuda(dY.d, dU.d, dropout ? dXD.d : NULL, dX.d, dropout ? &drop : NULL,
                             dA_.d, dB_.d, scale, N, In, O, R, gemm, NULL));
  CK(cudaDeviceSynchronize());
  fprintf(stderr, "  %s\n", what);
  compare("lora forward y", &dY, y, N * O);
  compare("lora forward u", &dU, u, N * R);
  if (dropout) {
    compare("lora forward xd", &dXD, xd, N * In);
    /* Bit for bit: xd = bf16(x * (float)keep_scale) where the CPU mask keeps,
     * +0 where it drops (one fp32 product, one rounding on both sides), so
     * every keep bit the kernel drew is checked, not only the ones a
     * tolerance would see. */
    uint16_t *g = xmalloc((size_t)(N * In) * 2);
    CK(cudaMemcpy(g, dXD.d, (size_t)(N * In) * 2, cudaMemcpyDeviceToHost));
    int64_t off = 0;
    for (int64_t i = 0; i < N * In; i++) {
      uint16_t want = mask[i] ? qt_bf16_from_f32(x[i] * (float)keep) : (uint16_t)0;
      off += g[i] != want;
    }
    if (off) {
      fprintf(stderr, "FAIL %s: %lld of %lld xd values not bit-identical to the CPU mask's\n",
              what, (long long)off, (long long)(N * In));
      failures++;
    }
    free(g);
  }
  for (int acc = 0; acc < 2; acc++) {
    dbuf gA = upload(dA16, (size_t)(R * In) * 2), gB = upload(dB16, (size_t)(O * R) * 2);
    dbuf gX = upload(z16, (size_t)(N * In) * 2);
    float *rA = xmalloc((size_t)(R * In) * 4), *rB = xmalloc((size_t)(O * R) * 4);
    memcpy(rA, dA, (size_t)(R * In) * 4);
    memcpy(rB, dB, (size_t)(O * R) * 4);
    memcpy(dx, z, (size_t)(N * In) * 4);
    qt_op_lora_backward_cpu(dx, acc, rA, rB, du, work, dy, dropout ? xd : x, u, mask, keep, a, b,
                            scale, N, In, O, R);
    OK(qt_op_lora_backward_cuda(gX.d, acc, gA.d, gB.d, dDU.d, dWk.d, dDY.d,
                                dropout ? dXD.d : dX.d, dU.d, dropout ? &drop : NULL, dA_.d,
                                dB_.d, scale, N, In, O, R, gemm, NULL));
    CK(cudaDeviceSynchronize());
    compare("lora backward dA", &gA, rA, R * In);
    compare("lora backward dB", &gB, rB, O * R);
    compare("lora backward du", &dDU, du, N * R);
    compare(acc ? "lora backward dx (acc)" : "lora backward dx", &gX, dx, N * In);
    dcheck_free(&gA, "lora dA"); dcheck_free(&gB, "lora dB"); dcheck_free(&gX, "lora dx");
    free(rA); free(rB);
  }
  dcheck_free(&dY, "lora y"); dcheck_free(&dU, "lora u"); dcheck_free(&dXD, "lora xd");
  dcheck_free(&dDU, "lora du"); dcheck_free(&dWk, "lora work");
  dcheck_free(&dX, "x"); dcheck_free(&dA_, "A"); dcheck_free(&dB_, "B"); dcheck_free(&dDY, "dy");
  free(x16); free(a16); free(b16); free(y16); free(dy16); free(dA16); free(dB16); free(z16);
  free(x); free(a); free(b); free(y); free(dy); free(dA); free(dB); free(z);
  free(mask); free(u); free(xd); free(du); free(work); free(dx);
}

/* ---- attention -------------------------------------------------------------- */
/* doc ids per row: contiguous documents of random lengths (what packing
 * produces), or (scattered) ids drawn from {0, 1, 2} per token. */
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

/* o: attention options (scale, sliding window, softcap), NULL = defaults; the
 * CPU GEMM version with the same options is the reference. */
static void case_attention(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D, int scattered,
                           const qt_att_opts *o) {
  int64_t nq = B * T * H * D, nk = B * T * K * D;
  uint16_t *q16, *k16, *v16, *do16, *zq16, *zk16, *zv16;
  float *q, *k, *v, *dout, *zq, *zk, *zv;
  rnd_bf16(nq, -2, 2, &q16, &q);
  rnd_bf16(nk, -2, 2, &k16, &k);
  rnd_bf16(nk, -1, 1, &v16, &v);
  rnd_bf16(nq, -1, 1, &do16, &dout);
  rnd_bf16(nq, -1, 1, &zq16, &zq);
  rnd_bf16(nk, -1, 1, &zk16, &zk);
  rnd_bf16(nk, -1, 1, &zv16, &zv);
  int32_t *doc = xmalloc((size_t)(B * T) * 4);
  make_docs(doc, B, T, scattered);
  float *out = xmalloc((size_t)nq * 4), *P = xmalloc((size_t)(B * H * T * T) * 4);
  float *work = xmalloc((size_t)qt_op_attention_work_elems(T, o) * 4);
  float *dq = xmalloc((size_t)nq * 4), *dk = xmalloc((size_t)nk * 4), *dv = xmalloc((size_t)nk * 4);
  qt_op_attention_forward_cpu(out, P, q, k, v, doc, B, T, H, K, D, o);
  dbuf dQ = upload(q16, (size_t)nq * 2), dK = upload(k16, (size_t)nk * 2);
  dbuf dV = upload(v16, (size_t)nk * 2), dDO = upload(do16, (size_t)nq * 2);
  dbuf dDoc = upload(doc, (size_t)(B * T) * 4);
  dbuf dO = dalloc((size_t)nq * 2), dL = dalloc((size_t)(B * H * T) * 4);
  dbuf dDelta = dalloc((size_t)(B * H * T) * 4);
  fprintf(stderr, "  attention B=%lld T=%lld H=%lld K=%lld D=%lld%s", (long long)B, (long long)T,
          (long long)H, (long long)K, (long long)D, scattered ? " scattered docs" : "");
  if (o)
    fprintf(stderr, " scale %g window %lld softcap %g", o->scale, (long long)o->window, o->softcap);
  fprintf(stderr, "\n");
  OK(qt_op_attention_forward_cuda(dO.d, dL.d, dQ.d, dK.d, dV.d, dDoc.d, B, T, H, K, D, NULL, o));
  CK(cudaDeviceSynchronize());
  compare("attention forward", &dO, out, nq);
  for (int acc = 0; acc < 2; acc++) {
    dbuf gq = upload(zq16, (size_t)nq * 2), gk = upload(zk16, (size_t)nk * 2);
    dbuf gv = upload(zv16, (size_t)nk * 2);
    memcpy(dq, zq, (size_t)nq * 4);
    memcpy(dk, zk, (size_t)nk * 4);
    memcpy(dv, zv, (size_t)nk * 4);
    qt_op_attention_backward_cpu(dq, dk, dv, acc, work, dout, P, q, k, v, doc, B, T, H, K, D, o);
    OK(qt_op_attention_backward_cuda(gq.d, gk.d, gv.d, acc, dDelta.d, dDO.d, dO.d, dL.d, dQ.d, dK.d,
                                     dV.d, dDoc.d, B, T, H, K, D, NULL, o));
    CK(cudaDeviceSynchronize());
    compare_nmse(acc ? "attention dq (acc)" : "attention dq", &gq, dq, nq, 1e-4);
    compare_nmse(acc ? "attention dk (acc)" : "attention dk", &gk, dk, nk, 1e-4);
    compare(acc ? "attention dv (acc)" : "attention dv", &gv, dv, nk);
    if (!acc) { /* determinism: the same call again gives the same bits */
      dbuf hq = dalloc((size_t)nq * 2), hk = dalloc((size_t)nk * 2), hv = dalloc((size_t)nk * 2);
      OK(qt_op_attention_backward_cuda(hq.d, hk.d, hv.d, 0, dDelta.d, dDO.d, dO.d, dL.d, dQ.d, dK.d,
                                       dV.d, dDoc.d, B, T, H, K, D, NULL, o));
      CK(cudaDeviceSynchronize());
      compare_bits("attention dq twice", &gq, &hq);
      compare_bits("attention dk twice", &gk, &hk);
      compare_bits("attention dv twice", &gv, &hv);
      /* only dv requested (dq, dk NULL; neither the output nor delta read): the same dv */
      OK(qt_op_attention_backward_cuda(NULL, NULL, hv.d, 0, dDelta.d, dDO.d, NULL, dL.d, dQ.d, dK.d,
                                       dV.d, dDoc.d, B, T, H, K, D, NULL, o));
      CK(cudaDeviceSynchronize());
      compare_bits("attention dv alone", &gv, &hv);
      dcheck_free(&hq, "dq 2"); dcheck_free(&hk, "dk 2"); dcheck_free(&hv, "dv 2");
    }
    dcheck_free(&gq, "attention dq"); dcheck_free(&gk, "attention dk"); dcheck_free(&gv, "attention dv");
  }
  dcheck_free(&dO, "attention out"); dcheck_free(&dL, "attention lse");
  dcheck_free(&dDelta, "attention delta");
  dcheck_free(&dQ, "q"); dcheck_free(&dK, "k"); dcheck_free(&dV, "v"); dcheck_free(&dDO, "dout");
  dcheck_free(&dDoc, "doc");
  free(q16); free(k16); free(v16); free(do16); free(zq16); free(zk16); free(zv16);
  free(q); free(k); free(v); free(dout); free(zq); free(zk); free(zv);
  free(doc); free(out); free(P); free(work); free(dq); free(dk); free(dv);
}

/* ---- cross-entropy ---------------------------------------------------------- */
static double read_loss(const dbuf *l, int64_t *count, const dbuf *c) {
  double loss;
  CK(cudaMemcpy(&loss, l->d, sizeof loss, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(count, c->d, sizeof *count, cudaMemcpyDeviceToHost));
  return loss;
}

static void check_loss(const char *what, double gpu, int64_t gcount, double ref, int64_t rcount,
                       double abs_rows) {
  if (isnan(gpu) || gcount != rcount || !(fabs(gpu - ref) <= 1e-5 * (abs_rows + (double)rcount))) {
    fprintf(stderr, "FAIL %s: loss gpu %.10g ref %.10g, count gpu %lld ref %lld\n", what, gpu,
            ref, (long long)gcount, (long long)rcount);
    failures++;
  }
}

static void case_cross_entropy(int64_t N, int64_t C, int64_t V, int64_t chunk, double p_ignore,
                               double softcap) {
  uint16_t *x16, *w16, *z16;
  float *x, *w, *z;
  rnd_bf16(N * C, -1, 1, &x16, &x);
  rnd_bf16(V * C, -1, 1, &w16, &w);
  rnd_bf16(N * C, -1, 1, &z16, &z);
  int32_t *tg = xmalloc((size_t)N * 4);
  for (int64_t n = 0; n < N; n++)
    tg[n] = unif(0, 1) < p_ignore ? QT_IGNORE_INDEX : (int32_t)unif(0, (double)V);
  float *lse = xmalloc((size_t)N * 4), *logits = xmalloc((size_t)(chunk * V) * 4);
  float *dx = xmalloc((size_t)(N * C) * 4), *dx1 = xmalloc((size_t)(N * C) * 4);
  double *rowloss = xmalloc((size_t)chunk * 8);
  int64_t count = 0;
  double loss = qt_op_cross_entropy_forward_cpu(lse, &count, logits, chunk, x, w, tg, N, C, V,
                                                softcap);
  /* sum of |row loss| from the per-row values the fused op leaves (for the tolerance) */
  double abs_rows = 0;
  for (int64_t n = 0; n < N; n++) {
    if (tg[n] == QT_IGNORE_INDEX) continue;
    double zt = 0;
    for (int64_t c = 0; c < C; c++) zt += (double)x[n * C + c] * w[(int64_t)tg[n] * C + c];
    abs_rows += fabs((double)lse[n] - zt);
  }
  fprintf(stderr, "  cross-entropy N=%lld C=%lld V=%lld chunk=%lld targets=%lld softcap=%g\n",
          (long long)N, (long long)C, (long long)V, (long long)chunk, (long long)count, softcap);
  dbuf dX = upload(x16, (size_t)(N * C) * 2), dW = upload(w16, (size_t)(V * C) * 2);
  dbuf dT = upload(tg, (size_t)N * 4), dLse = dalloc((size_t)N * 4);
  dbuf dRow = dalloc((size_t)N * 8), dLog = dalloc((size_t)(chunk * V) * 4);
  dbuf dDz = dalloc((size_t)(chunk * V) * 2), dLoss = dalloc(8), dCnt = dalloc(8);
  OK(qt_op_cross_entropy_forward_cuda(dLoss.d, dCnt.d, dLse.d, dRow.d, dLog.d, chunk, dX.d, dW.d,
                                      dT.d, N, C, V, softcap, gemm, NULL));
  CK(cudaDeviceSynchronize());
  int64_t gcount;
  double gloss = read_loss(&dLoss, &gcount, &dCnt);
  check_loss("cross-entropy forward", gloss, gcount, loss, count, abs_rows);
  compare_f32("cross-entropy lse", &dLse, lse, N, 1e-5);
  /* determinism: a second forward gives the same bits */
  OK(qt_op_cross_entropy_forward_cuda(dLoss.d, dCnt.d, dLse.d, dRow.d, dLog.d, chunk, dX.d, dW.d,
                                      dT.d, N, C, V, softcap, gemm, NULL));
  CK(cudaDeviceSynchronize());
  int64_t gcount2;
  double gloss2 = read_loss(&dLoss, &gcount2, &dCnt);
  if (memcmp(&gloss, &gloss2, sizeof gloss) != 0 || gcount != gcount2) {
    fprintf(stderr, "FAIL cross-entropy forward twice: %.17g vs %.17g\n", gloss, gloss2);
    failures++;
  }
  double dloss = count ? 1.0 / (double)count : 0.37;
  for (int acc = 0; acc < 2; acc++) {
    dbuf gX = upload(z16, (size_t)(N * C) * 2);
    memcpy(dx, z, (size_t)(N * C) * 4);
    qt_op_cross_entropy_backward_cpu(dx, acc, logits, chunk, dloss, lse, x, w, tg, N, C, V,
                                     softcap);
    OK(qt_op_cross_entropy_backward_cuda(gX.d, acc, dLog.d, dDz.d, chunk, dloss, dLse.d, dX.d,
                                         dW.d, dT.d, N, C, V, softcap, gemm, NULL));
    CK(cudaDeviceSynchronize());
    compare(acc ? "cross-entropy backward dx (acc)" : "cross-entropy backward dx", &gX, dx, N * C);
    dcheck_free(&gX, "cross-entropy dx");
  }
  /* fused: loss + dx1, then dx (+)= dloss dx1 */
  int64_t fcount = 0;
  double floss = qt_op_cross_entropy_fused_cpu(dx1, &fcount, logits, rowloss, chunk, x, w, tg, N,
                                               C, V, softcap);
  dbuf gX1 = dalloc((size_t)(N * C) * 2);
  OK(qt_op_cross_entropy_fused_cuda(gX1.d, dLoss.d, dCnt.d, dLog.d, dDz.d, dRow.d, chunk, dX.d,
                                    dW.d, dT.d, N, C, V, softcap, gemm, NULL));
  CK(cudaDeviceSynchronize());
  gloss = read_loss(&dLoss, &gcount, &dCnt);
  check_loss("cross-entropy fused loss", gloss, gcount, floss, fcount, abs_rows);
  compare("cross-entropy fused dx1", &gX1, dx1, N * C);
  for (int acc = 0; acc < 2; acc++) {
    dbuf gX = upload(z16, (size_t)(N * C) * 2);
    memcpy(dx, z, (size_t)(N * C) * 4);
    /* the CPU side scales the GPU's own dx1 (widened), so this checks scaled_add alone */
    uint16_t *h1 = xmalloc((size_t)(N * C) * 2);
    float *f1 = xmalloc((size_t)(N * C) * 4);
    CK(cudaMemcpy(h1, gX1.d, (size_t)(N * C) * 2, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < N * C; i++) f1[i] = qt_bf16_to_f32(h1[i]);
    qt_op_scaled_add_cpu(dx, acc, f1, dloss, N * C);
    OK(qt_op_scaled_add_cuda(gX.d, acc, gX1.d, dloss, N * C, NULL));
    CK(cudaDeviceSynchronize());
    compare(acc ? "scaled_add (acc)" : "scaled_add", &gX, dx, N * C);
    dcheck_free(&gX, "scaled_add dx");
    free(h1); free(f1);
  }
  dcheck_free(&gX1, "cross-entropy dx1");
  dcheck_free(&dLse, "lse"); dcheck_free(&dRow, "rowloss"); dcheck_free(&dLog, "logits");
  dcheck_free(&dDz, "dz"); dcheck_free(&dLoss, "loss"); dcheck_free(&dCnt, "count");
  dcheck_free(&dX, "x"); dcheck_free(&dW, "W"); dcheck_free(&dT, "targets");
  free(x16); free(w16); free(z16); free(x); free(w); free(z); free(tg);
  free(lse); free(logits); free(dx); free(dx1); free(rowloss);
}

int main(void) {
  int rc = ctu_gpu_check("test_ops_cuda_more");
  if (rc != 0) return rc; /* 77: no GPU (skipped); 1: a GPU CUDA cannot use */
  rng_state = (uint64_t)time(NULL); /* fresh inputs each run; the seed is printed */
  fprintf(stderr, "test_ops_cuda_more: seed %llu\n", (unsigned long long)rng_state);
  OK(qt_gemm_cuda_create(&gemm, (size_t)32 << 20));

  /* 6 x 6 x 6 shapes, both bias settings: more distinct GEMM shapes than the
   * context caches, so plan replacement runs too. */
  for (int i = 0; i < NS; i++)
    for (int j = 0; j < NS; j++)
      for (int l = 0; l < NS; l++) case_linear(SIZES[i], SIZES[j], SIZES[l], (i + j + l) % 2, 0);
  case_linear(65, 4096, 11, 1, 0);
  for (int i = 0; i < NS; i++) case_linear(SIZES[i], SIZES[(i + 3) % NS], SIZES[(i + 1) % NS], i % 2, 1);
  case_linear(63, 128, 127, 0, 1);

  const int64_t lora[][4] = {{1, 1, 1, 1}, {5, 7, 63, 5}, {65, 127, 7, 8}, {127, 65, 65, 16},
                             {7, 5, 1, 1}, {63, 256, 128, 64}};
  for (int i = 0; i < 6; i++)
    for (int dr = 0; dr < 3; dr++) case_lora(lora[i][0], lora[i][1], lora[i][2], lora[i][3], dr);

  const int64_t att[][5] = {{1, 1, 1, 1, 1},  {1, 5, 2, 1, 7},    {2, 7, 4, 2, 64},
                            {1, 65, 6, 2, 63}, {3, 63, 2, 1, 128}, {1, 127, 8, 8, 32},
                            {2, 33, 4, 4, 256}, {1, 64, 3, 3, 65}, {2, 300, 4, 2, 16}};
  for (int i = 0; i < 9; i++)
    for (int sc = 0; sc < 2; sc++)
      case_attention(att[i][0], att[i][1], att[i][2], att[i][3], att[i][4], sc, NULL);
  /* options: scale, sliding window (2, < T, >= T), softcap, each alone and together */
  const qt_att_opts att_opts[] = {{0.3, 7, 0.0}, {0.0, 0, 2.0}, {0.0, 16, 5.0}, {0.2, 2, 1.0},
                                  {0.0, 200, 0.0}};
  const int att_opt_shapes[] = {1, 3, 4, 5, 6};
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 5; j++) {
      const int64_t *a = att[att_opt_shapes[i]];
      case_attention(a[0], a[1], a[2], a[3], a[4], (i + j) % 2, &att_opts[j]);
    }
  if (qt_op_attention_forward_cuda(NULL, NULL, NULL, NULL, NULL, NULL, 1, 1, 1, 1, 257, NULL, NULL) !=
      QT_ERR_UNSUPPORTED) {
    fprintf(stderr, "FAIL attention: head_dim 257 not refused\n");
    failures++;
  }

  const int64_t ce[][4] = {{1, 1, 1, 1}, {5, 7, 63, 2}, {7, 63, 1000, 7}, {63, 65, 127, 5},
                           {65, 5, 1000, 64}, {127, 65, 1000, 13}, {7, 64, 50257, 3}};
  for (int i = 0; i < 7; i++) case_cross_entropy(ce[i][0], ce[i][1], ce[i][2], ce[i][3], 0.25, 0.0);
  case_cross_entropy(5, 7, 11, 2, 1.0, 0.0); /* every row ignored: loss 0, count 0, dx 0 */
  /* gemma2 final-logit soft-capping (cap 30 as gemma2; cap 0.5 with logits beyond it) */
  case_cross_entropy(37, 64, 1000, 16, 0.25, 30.0);
  case_cross_entropy(19, 96, 517, 7, 0.1, 0.5);

  OK(qt_gemm_cuda_free(gemm));
  if (failures) {
    fprintf(stderr, "test_ops_cuda_more: %d failures\n", failures);
    return 1;
  }
  fprintf(stderr, "test_ops_cuda_more: all cases passed\n");
  return 0;
}
