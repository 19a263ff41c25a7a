// optim/adamw_cuda.cu — AdamW update kernels on CUDA, same results as the CPU
// reference in optim/adamw_cpu.c (tests/optim/test_adamw_cuda.c compares them
// bit for bit), and the optimizer state's device memory.
//
// Semantics: optim/optim.h (bitsandbytes csrc/kernels.cu kOptimizer32bit2State,
// kOptimizerStatic8bit2StateBlockwise<T, ADAM, 256, 1>). The per-element math
// is optim/optim_hd.h, the same functions the CPU calls. As on the CPU and
// unlike bitsandbytes: IEEE division and sqrtf (nvcc defaults -prec-div=true,
// -prec-sqrt=true), no __powf/__fdividef (the per-step scalars come from the
// host, qt_adamw_scalars_make), no fused multiply-add (--fmad=false), so every
// fp32 operation rounds as on the CPU. The 8-bit encoder is the threshold
// table of qt_adamw_qmap (derived on the host from bitsandbytes' search).
//
// State memory (qt_adamw_cuda_state_alloc): not paged -> plain cudaMalloc, as
// bitsandbytes; the host reaches it only by copies (qt_adamw_state_fetch,
// qt_adamw_state_load). Paged -> bitsandbytes functional.get_paged / cprefetch
// (formats.md 3.5): cudaMallocManaged(..., cudaMemAttachHost) and
// cudaMemPrefetchAsync to the device before each update. Paged state is
// refused (QT_ERR_UNSUPPORTED) on a device without
// cudaDevAttrConcurrentManagedAccess, where kernels cannot touch host-attached
// managed memory (nothing here calls cudaStreamAttachMemAsync), and refused
// (QT_ERR_NOMEM) when it exceeds the device memory cudaMemGetInfo reports
// free: oversubscribed managed memory can hang the GPU, not only this process
// (review cuda-2026-12-02, section 1 items 1 and 5).
#include <cuda_runtime.h>
#include <curand_kernel.h>
#include <float.h>
#include <stdint.h>

#include "common/cuda_check.h"
#include "optim/optim.h"
#include "optim/optim_hd.h"

namespace {

constexpr int kBlock = QT_ADAMW_BLOCK;  // 256 threads, one per value of an 8-bit block
constexpr int kThreads32 = 256;

// The random word of element i (optim.h): curand_init(seed, (step<<32)|tensor, i).
__device__ __forceinline__ uint32_t sr_word(uint64_t seed, int64_t step, uint32_t tensor,
                                            int64_t i) {
  curandStatePhilox4_32_10_t st;
  curand_init(seed, ((uint64_t)(uint32_t)step << 32) | tensor, (uint64_t)i, &st);
  return curand(&st);
}

template <typename P>
__device__ __forceinline__ float load_p(const P *p, int64_t i);
template <>
__device__ __forceinline__ float load_p<float>(const float *p, int64_t i) { return p[i]; }
template <>
__device__ __forceinline__ float load_p<uint16_t>(const uint16_t *p, int64_t i) {
  return qt_optim_bf16_to_f32(p[i]);
}

__device__ __forceinline__ void store_p(float *p, int64_t i, float v, uint64_t, int64_t, uint32_t) {
  p[i] = v;
}
__device__ __forceinline__ void store_p(uint16_t *p, int64_t i, float v, uint64_t seed,
                                        int64_t step, uint32_t tensor) {
  p[i] = qt_optim_bf16_from_f32_sr(v, sr_word(seed, step, tensor, i));
}

// kOptimizer32bit2State, ADAM: optim_hd.h qt_adamw32_elem per element.
template <typename P>
__global__ void k_adam32(P *p, const float *g, float *m, float *v, int64_t n, qt_adamw_scalars k,
                         uint64_t seed, uint32_t tensor) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float s1 = m[i], s2 = v[i];
    float pv = qt_adamw32_elem(load_p(p, i), g[i], &s1, &s2, &k);
    m[i] = s1;
    v[i] = s2;
    store_p(p, i, pv, seed, k.step, tensor);
  }
}

// kOptimizerStatic8bit2StateBlockwise<T, ADAM, 256, 1>: block b of 256 values,
// thread t its value t; slots past n are the kernel's padding (g 0, code1 128,
// code2 0) and take part in the absmax (adam8_block in adamw_cpu.c). The
// per-element steps are optim_hd.h's; only the block max is this kernel's own.
template <typename P>
__global__ void __launch_bounds__(kBlock)
    k_adam8(P *p, const float *g, uint8_t *code1, uint8_t *code2, float *absmax1, float *absmax2,
            const qt_adamw_qmap *m1, const qt_adamw_qmap *m2, int64_t n, qt_adamw_scalars k,
            uint64_t seed, uint32_t tensor) {
  __shared__ float q1[256], q2[256], t1[256], t2[256];
  __shared__ float r1[kBlock], r2[kBlock];
  const int t = threadIdx.x;
  const int64_t b = blockIdx.x, i = b * kBlock + t;
  q1[t] = m1->code[t];
  q2[t] = m2->code[t];
  t1[t] = m1->thr[t];
  t2[t] = m2->thr[t];
  const bool valid = i < n;
  const float gj = valid ? g[i] : 0.0f;
  const uint8_t c1 = valid ? code1[i] : 128, c2 = valid ? code2[i] : 0;
  const float a1 = absmax1[b], a2 = absmax2[b];
  __syncthreads();
  float s1, s2;
  const bool fin = qt_adamw8_states(gj, q1[c1] * a1, q2[c2] * a2, &k, &s1, &s2) != 0;
  r1[t] = fmaxf(-FLT_MAX, fabsf(s1));
  r2[t] = fmaxf(-FLT_MAX, fabsf(s2));
  for (int s = kBlock / 2; s > 0; s >>= 1) {
    __syncthreads();
    if (t < s) {
      r1[t] = fmaxf(r1[t], r1[t + s]);
      r2[t] = fmaxf(r2[t], r2[t + s]);
    }
  }
  __syncthreads();
  const float new1 = r1[0], new2 = r2[0];
  if (t == 0) {
    absmax1[b] = new1;
    absmax2[b] = new2;
  }
  if (!valid) return;
  if (fin) store_p(p, i, qt_adamw_param_step(load_p(p, i), s1, s2, &k), seed, k.step, tensor);
  code1[i] = qt_adamw8_encode_m(q1, t1, s1, new1);
  code2[i] = qt_adamw8_encode_v(t2, s2, new2);
}

unsigned grid32(int64_t n) {
  int64_t blocks = (n + kThreads32 - 1) / kThreads32;
  return (unsigned)(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace

extern "C" {

qt_status qt_adamw32_update_f32_cuda(float *p, const float *g, float *m, float *v, int64_t n,
                                     const qt_adamw_scalars *k) {
  if (n == 0) return QT_OK;
  k_adam32<float><<<grid32(n), kThreads32>>>(p, g, m, v, n, *k, 0, 0);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_adamw32_update_bf16_cuda(uint16_t *p, const float *g, float *m, float *v, int64_t n,
                                      const qt_adamw_scalars *k, uint64_t seed, uint32_t tensor) {
  if (n == 0) return QT_OK;
  k_adam32<uint16_t><<<grid32(n), kThreads32>>>(p, g, m, v, n, *k, seed, tensor);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_adamw8_update_f32_cuda(float *p, const float *g, uint8_t *code1, uint8_t *code2,
                                    float *absmax1, float *absmax2, const qt_adamw_qmap *qmap1,
                                    const qt_adamw_qmap *qmap2, int64_t n,
                                    const qt_adamw_scalars *k) {
  if (n == 0) return QT_OK;
  int64_t nb = (n + kBlock - 1) / kBlock;
  k_adam8<float><<<(unsigned)nb, kBlock>>>(p, g, code1, code2, absmax1, absmax2, qmap1, qmap2, n,
                                           *k, 0, 0);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_adamw8_update_bf16_cuda(uint16_t *p, const float *g, uint8_t *code1, uint8_t *code2,
                                     float *absmax1, float *absmax2, const qt_adamw_qmap *qmap1,
                                     const qt_adamw_qmap *qmap2, int64_t n,
                                     const qt_adamw_scalars *k, uint64_t seed, uint32_t tensor) {
  if (n == 0) return QT_OK;
  int64_t nb = (n + kBlock - 1) / kBlock;
  k_adam8<uint16_t><<<(unsigned)nb, kBlock>>>(p, g, code1, code2, absmax1, absmax2, qmap1, qmap2,
                                              n, *k, seed, tensor);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_adamw_cuda_state_alloc(size_t bytes, bool paged, void **out) {
  *out = NULL;
  const size_t n = bytes ? bytes : 64;
  cudaError_t e;
  if (paged) {
    // Paged state is attached to the host (cudaMemAttachHost). Kernels may touch
    // host-attached managed memory only where the device has concurrent managed
    // access (Linux, Pascal and later); elsewhere (Windows, WSL, older GPUs) the
    // first update would fault with an illegal address, as nothing here attaches
    // the state to a stream (cudaStreamAttachMemAsync). So refuse up front.
    int dev = 0, concurrent = 0;
    QT_CUDA_CHECK(cudaGetDevice(&dev));
    QT_CUDA_CHECK(cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, dev));
    if (!concurrent)
      return qt_fail(QT_ERR_UNSUPPORTED,
                     "optim: paged optimizer state needs concurrent managed access, and CUDA "
                     "device %d reports cudaDevAttrConcurrentManagedAccess = 0 (Windows/WSL or "
                     "a pre-Pascal GPU); use a non-paged optimizer (adamw_8bit or adamw_32bit)",
                     dev);
    // Never more managed memory than the device has free: oversubscribing it
    // can hang the GPU (the lent machines' README), so paging here keeps state
    // off the device between updates but does not stretch device memory.
    size_t free_b = 0, total_b = 0;
    QT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (n > free_b)
      return qt_fail(QT_ERR_NOMEM,
                     "optim: %.1f MiB of paged optimizer state, but CUDA device %d has only "
                     "%.1f MiB free of %.1f MiB; managed memory beyond free device memory is "
                     "refused (it can hang the GPU). Use a smaller model, fewer LoRA targets "
                     "or rank, or the 8-bit optimizer",
                     (double)n / 1048576.0, dev, (double)free_b / 1048576.0,
                     (double)total_b / 1048576.0);
    e = cudaMallocManaged(out, n, cudaMemAttachHost);
  } else {
    e = cudaMalloc(out, n);
  }
  if (e != cudaSuccess) {
    *out = NULL;
    return qt_fail(QT_ERR_CUDA, "optim: cannot allocate %.1f MiB of %s optimizer state: %s (%s)",
                   (double)bytes / 1048576.0, paged ? "paged" : "device", cudaGetErrorString(e),
                   cudaGetErrorName(e));
  }
  e = cudaMemset(*out, 0, n);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    cudaFree(*out); /* already failing: the first error is the one reported */
    *out = NULL;
    return qt_fail(QT_ERR_CUDA, "optim: cannot clear optimizer state: %s (%s)",
                   cudaGetErrorString(e), cudaGetErrorName(e));
  }
  return QT_OK;
}

qt_status qt_adamw_cuda_copy(void *dst, const void *src, size_t bytes) {
  if (bytes == 0) return QT_OK;
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault);
  if (e != cudaSuccess)
    return qt_fail(QT_ERR_CUDA, "optim: copy of %.1f MiB of optimizer state failed: %s (%s)",
                   (double)bytes / 1048576.0, cudaGetErrorString(e), cudaGetErrorName(e));
  return QT_OK;
}

void qt_adamw_cuda_state_free(void *p) {
  if (p) cudaFree(p);
}

qt_status qt_adamw_cuda_prefetch(const void *p, size_t bytes) {
  int dev = 0, concurrent = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, dev);
  if (e != cudaSuccess)
    return qt_fail(QT_ERR_CUDA, "optim: cannot query the device: %s", cudaGetErrorString(e));
  if (!concurrent || bytes == 0) return QT_OK;  // bitsandbytes skips the prefetch too
  cudaMemLocation loc;
  loc.type = cudaMemLocationTypeDevice;
  loc.id = dev;
  e = cudaMemPrefetchAsync(p, bytes, loc, 0, 0);
  if (e != cudaSuccess)
    return qt_fail(QT_ERR_CUDA, "optim: prefetch of %.1f MiB of paged state failed: %s",
                   (double)bytes / 1048576.0, cudaGetErrorString(e));
  return QT_OK;
}

qt_status qt_adamw_cuda_sync(void) {
  cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess)
    return qt_fail(QT_ERR_CUDA, "optim: optimizer update failed on the GPU: %s (%s)",
                   cudaGetErrorString(e), cudaGetErrorName(e));
  return QT_OK;
}

}  // extern "C"
