// optim/clip_cuda.cu — the global gradient norm, the clipping coefficient and
// the non-finite decision on the GPU, equal to optim/clip.c bit for bit (the
// same chunks, groups and order: optim/optim_hd.h; API: optim/optim.h).
//
// Deterministic, no atomics: k_chunk_sumsq gives each 1024-element chunk to one
// thread (a sequential double sum, as the CPU's chunk_sumsq), k_finish adds the
// chunk partials in groups and the group sums in order in one block, then
// computes norm = sqrt(total), the coefficient and the skip flag there.
// Squares of floats are exact in double and double sqrt and division are IEEE,
// so fused multiply-adds cannot change the result.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/cuda_check.h"
#include "optim/optim.h"
#include "optim/optim_hd.h"

namespace {

constexpr int kChunkThreads = 128;
constexpr int kFinishThreads = 256;
constexpr int kScaleThreads = 256;

// One thread per chunk c of the flat numbering (optim_hd.h).
__global__ void k_chunk_sumsq(double *partial, float *const *ptrs, const int64_t *first,
                              const int64_t *numel, int64_t n_tensors, int64_t n_chunks) {
  int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n_chunks) return;
  const int64_t lo = qt_optim_chunk_tensor(first, n_tensors, c);
  const float *x = ptrs[lo];
  int64_t b = (c - first[lo]) * QT_OPTIM_NORM_CHUNK;
  int64_t len = numel[lo] - b < QT_OPTIM_NORM_CHUNK ? numel[lo] - b : QT_OPTIM_NORM_CHUNK;
  partial[c] = qt_optim_sumsq_f32(x + b, len);
}

__global__ void __launch_bounds__(kFinishThreads)
    k_finish(qt_optim_clip_result *res, double *group, const double *partial, int64_t n_chunks,
             int64_t n_groups, double max_norm) {
  for (int64_t g = threadIdx.x; g < n_groups; g += blockDim.x) {
    int64_t b = g * QT_OPTIM_NORM_GROUP;
    int64_t len = n_chunks - b < QT_OPTIM_NORM_GROUP ? n_chunks - b : QT_OPTIM_NORM_GROUP;
    group[g] = qt_optim_sum_ordered(partial + b, len);
  }
  __syncthreads();  // group[] is global memory written by this block: visible after the barrier
  if (threadIdx.x != 0) return;
  double norm = sqrt(qt_optim_sum_ordered(group, n_groups));
  res->norm = norm;
  res->coef = qt_optim_clip_coef_of(norm, max_norm);
  res->skip = qt_optim_norm_skips(norm);
}

// Tensors blockIdx.y, + gridDim.y, ...; grid-stride over each one's elements.
__global__ void k_scale(float *const *ptrs, const int64_t *numel, int64_t n_tensors,
                        const qt_optim_clip_result *res) {
  const float coef = res->coef;
  if (res->skip || !(coef < 1.0f)) return;
  for (int64_t k = blockIdx.y; k < n_tensors; k += gridDim.y) {
    float *x = ptrs[k];
    const int64_t n = numel[k];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
      x[i] = x[i] * coef;
  }
}

size_t align8(size_t x) { return (x + 7) / 8 * 8; }

}  // namespace

extern "C" {

qt_status qt_optim_clip_cuda_init(qt_optim_clip_cuda *c, float *const *grads,
                                  const int64_t *numels, size_t n) {
  memset(c, 0, sizeof *c);
  c->n_tensors = n;
  // Host tables: ptrs (n), first (n + 1), numel (n), copied in one go.
  size_t tab = align8(n * sizeof(float *)) + (2 * n + 1) * sizeof(int64_t);
  char *h = (char *)malloc(tab ? tab : 8);
  if (!h) return qt_fail(QT_ERR_NOMEM, "optim: out of memory for the norm tables of %zu tensors", n);
  float **hp = (float **)h;
  int64_t *hfirst = (int64_t *)(h + align8(n * sizeof(float *)));
  int64_t *hnumel = hfirst + n + 1;
  int64_t chunks = 0, maxn = 0;
  for (size_t k = 0; k < n; k++) {
    QT_ASSERT(numels[k] >= 0);
    hp[k] = grads[k];
    hfirst[k] = chunks;
    hnumel[k] = numels[k];
    chunks += (numels[k] + QT_OPTIM_NORM_CHUNK - 1) / QT_OPTIM_NORM_CHUNK;
    maxn = numels[k] > maxn ? numels[k] : maxn;
  }
  hfirst[n] = chunks;
  c->n_chunks = chunks;
  c->n_groups = (chunks + QT_OPTIM_NORM_GROUP - 1) / QT_OPTIM_NORM_GROUP;
  c->max_numel = maxn;
  size_t bytes = tab + align8((size_t)chunks * sizeof(double)) +
                 align8((size_t)c->n_groups * sizeof(double)) + sizeof(qt_optim_clip_result);
  cudaError_t e = cudaMalloc(&c->dev, bytes);
  if (e == cudaSuccess) e = cudaMemcpy(c->dev, h, tab, cudaMemcpyHostToDevice);
  free(h);
  if (e != cudaSuccess) {
    qt_optim_clip_cuda_free(c);
    return qt_fail(QT_ERR_CUDA, "optim: cannot set up the gradient norm of %zu tensors (%.1f KiB "
                   "of tables): %s (%s)", n, (double)bytes / 1024.0, cudaGetErrorString(e),
                   cudaGetErrorName(e));
  }
  char *d = (char *)c->dev;
  c->ptrs = (float **)d;
  c->first = (int64_t *)(d + align8(n * sizeof(float *)));
  c->numel = c->first + n + 1;
  c->partial = (double *)(d + tab);
  c->group = (double *)((char *)c->partial + align8((size_t)chunks * sizeof(double)));
  c->result = (qt_optim_clip_result *)((char *)c->group +
                                       align8((size_t)c->n_groups * sizeof(double)));
  return QT_OK;
}

void qt_optim_clip_cuda_free(qt_optim_clip_cuda *c) {
  if (c->dev) cudaFree(c->dev);
  memset(c, 0, sizeof *c);
}

qt_status qt_optim_clip_cuda_norm(qt_optim_clip_cuda *c, double max_norm, void *stream) {
  cudaStream_t s = (cudaStream_t)stream;
  if (c->n_chunks > 0) {
    int64_t blocks = (c->n_chunks + kChunkThreads - 1) / kChunkThreads;
    k_chunk_sumsq<<<(unsigned)blocks, kChunkThreads, 0, s>>>(
        c->partial, c->ptrs, c->first, c->numel, (int64_t)c->n_tensors, c->n_chunks);
    QT_CUDA_CHECK_LAUNCH();
  }
  k_finish<<<1, kFinishThreads, 0, s>>>(c->result, c->group, c->partial, c->n_chunks, c->n_groups,
                                        max_norm);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_optim_clip_cuda_scale(const qt_optim_clip_cuda *c, void *stream) {
  if (c->n_tensors == 0 || c->max_numel == 0) return QT_OK;
  int64_t bx = (c->max_numel + kScaleThreads - 1) / kScaleThreads;
  size_t gy = c->n_tensors < 65535 ? c->n_tensors : 65535;
  dim3 grid((unsigned)(bx < 1024 ? bx : 1024), (unsigned)gy);
  k_scale<<<grid, kScaleThreads, 0, (cudaStream_t)stream>>>(c->ptrs, c->numel,
                                                            (int64_t)c->n_tensors, c->result);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_optim_clip_cuda_result(const qt_optim_clip_cuda *c, qt_optim_clip_result *out,
                                    void *stream) {
  QT_CUDA_CHECK(cudaMemcpyAsync(out, c->result, sizeof *out, cudaMemcpyDeviceToHost,
                                (cudaStream_t)stream));
  QT_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream));
  return QT_OK;
}

}  // extern "C"
