// quant/quant_cuda.cu — CUDA kernels of quant/, bit-exact with quant_ref.c
// (tests/quant/test_quant_cuda.c checks every one against the CPU reference).
// Semantics: quant/quant.h (bitsandbytes csrc/kernels.cu kQuantizeBlockwise,
// kDequantizeBlockwise, dQuantizeNF4/FP4, dQuantize<0>). Built with
// --fmad=false and explicit _rn intrinsics so that no multiply-add is fused.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "common/cuda_check.h"
#include "quant/quant_hd.h"

extern "C" {
#include "quant/quant.h"
}

namespace {

// The 4-bit value tables, the same literals as quant_ref.c (NF4: formats.md
// 1.1; FP4: bit-pattern table / 12, code 8 = -0 as the kernel's lut[0] * -1).
__constant__ float c_nf4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
__constant__ float c_fp4[16] = {
    0.0f / 12.0f,  0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f,
    4.0f / 12.0f,  6.0f / 12.0f,     2.0f / 12.0f,  3.0f / 12.0f,
    -0.0f / 12.0f, -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,
    -4.0f / 12.0f, -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f};

// kernels.cu dQuantizeNF4 (same tree as quant_ref.c encode_nf4).
__device__ __forceinline__ uint8_t enc_nf4(float x) {
  if (x > 0.03979014977812767f) {
    if (x > 0.3893125355243683f) {
      if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
      return x > 0.5016634166240692f ? 13 : 12;
    }
    if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
    return x > 0.1202552504837513f ? 9 : 8;
  }
  if (x > -0.33967943489551544f) {
    if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
    return x > -0.23460740596055984f ? 5 : 4;
  }
  if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
  return x > -0.8480964004993439f ? 1 : 0;
}

// kernels.cu dQuantizeFP4.
__device__ __forceinline__ uint8_t enc_fp4(float x) {
  uint8_t sign = x < 0 ? 8 : 0;
  x = fabsf(x);
  if (x > 0.29166667f) {
    if (x > 0.583333f) return (uint8_t)((x > 0.8333333f ? 3 : 2) + sign);
    return (uint8_t)((x > 0.4166667f ? 5 : 4) + sign);
  }
  if (x > 0.0859375f) return (uint8_t)((x > 0.20833333f ? 7 : 6) + sign);
  return (uint8_t)((x > 0.00260417f ? 1 : 0) + sign);
}

// kernels.cu dQuantize<0> over a 256-entry sorted code in shared memory.
__device__ __forceinline__ uint8_t enc_8bit(const float *code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    float midpoint = __fmul_rn(__fadd_rn(upper, val), 0.5f);
    return (uint8_t)(x > midpoint ? upper_pivot : pivot);
  }
  float midpoint = __fmul_rn(__fadd_rn(lower, val), 0.5f);
  return (uint8_t)(x < midpoint ? lower_pivot : pivot);
}

__device__ __forceinline__ float load_f(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f(const uint16_t *p, int64_t i) {
  return __uint_as_float((uint32_t)p[i] << 16);
}

constexpr int kThreads = 256;

// Block max of |x| ignoring NaN (fmaxf), over a thread block.
__device__ float block_absmax(float m, float *red) {
  red[threadIdx.x] = m;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
    __syncthreads();
  }
  float r = red[0];
  __syncthreads();
  return r;
}

// One thread block per 4-bit quantization block (grid-stride over blocks);
// each thread writes whole bytes (two elements).
template <typename T>
__global__ void k_quant4(int type, const T *x, int64_t n, int bs, uint8_t *packed, float *absmax,
                         int64_t nb) {
  __shared__ float red[kThreads];
  for (int64_t b = blockIdx.x; b < nb; b += gridDim.x) {
    int64_t start = b * bs;
    int64_t len = n - start < bs ? n - start : bs;
    float m = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) m = fmaxf(m, fabsf(load_f(x, start + i)));
    float am = block_absmax(m, red);
    if (threadIdx.x == 0) absmax[b] = am;
    float inv = __frcp_rn(am);  // 1.0f / absmax, IEEE
    for (int64_t j = threadIdx.x; 2 * j < len; j += blockDim.x) {
      float a = load_f(x, start + 2 * j);
      float c = 2 * j + 1 < len ? load_f(x, start + 2 * j + 1) : 0.0f;
      a = __fmul_rn(a, inv);
      c = __fmul_rn(c, inv);
      uint8_t hi = type == QT_QUANT_NF4 ? enc_nf4(a) : enc_fp4(a);
      uint8_t lo = type == QT_QUANT_NF4 ? enc_nf4(c) : enc_fp4(c);
      packed[start / 2 + j] = (uint8_t)(hi << 4 | lo);
    }
  }
}

// One thread per byte (two outputs).
template <typename T>
__global__ void k_dequant4(int type, const uint8_t *packed, const float *absmax, int64_t n,
                           int log2bs, T *out) {
  const float *table = type == QT_QUANT_NF4 ? c_nf4 : c_fp4;
  int64_t nbytes = (n + 1) / 2;
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < nbytes;
       j += (int64_t)gridDim.x * blockDim.x) {
    uint8_t byte = packed[j];
    int64_t i = 2 * j;
    float v0 = __fmul_rn(table[byte >> 4], absmax[i >> log2bs]);
    if constexpr (sizeof(T) == 4) out[i] = v0;
    else out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v0));
    if (i + 1 < n) {
      float v1 = __fmul_rn(table[byte & 15], absmax[(i + 1) >> log2bs]);
      if constexpr (sizeof(T) == 4) out[i + 1] = v1;
      else out[i + 1] = __bfloat16_as_ushort(__float2bfloat16_rn(v1));
    }
  }
}

// bf16 output, vectorised: one thread per 16 codes (8 packed bytes in one
// 8-byte load, 16 bf16 in two 16-byte stores; quant_hd.h does the math). For
// n a multiple of 16 and 8- / 16-byte aligned packed / out (every model buffer
// is its own cudaMalloc); the other cases take k_dequant4.
__global__ void k_dequant4_bf16_x16(int type, const uint8_t *packed, const float *absmax,
                                    int64_t groups, int log2bs, uint16_t *out) {
  const float *table = type == QT_QUANT_NF4 ? c_nf4 : c_fp4;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < groups;
       t += (int64_t)gridDim.x * blockDim.x) {
    uint2 raw = reinterpret_cast<const uint2 *>(packed)[t];
    uint8_t bytes[8];
    memcpy(bytes, &raw, sizeof bytes);
    uint16_t v[16];
    qt_quant_dequant16_bf16_hd(bytes, table, absmax[(16 * t) >> log2bs], v);
    uint4 lo, hi;
    memcpy(&lo, v, sizeof lo);
    memcpy(&hi, v + 8, sizeof hi);
    reinterpret_cast<uint4 *>(out)[2 * t] = lo;
    reinterpret_cast<uint4 *>(out)[2 * t + 1] = hi;
  }
}

// 8-bit blockwise quantization of x - offset (offset 0 for plain use; x - 0
// is x bit for bit), one thread block per quantization block.
__global__ void k_quant8(const float *code, const float *x, int64_t n, int64_t bs, float offset,
                         uint8_t *q, float *absmax, int64_t nb) {
  __shared__ float red[kThreads];
  __shared__ float smem_code[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) smem_code[i] = code[i];
  __syncthreads();
  for (int64_t b = blockIdx.x; b < nb; b += gridDim.x) {
    int64_t start = b * bs;
    int64_t len = n - start < bs ? n - start : bs;
    float m = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
      m = fmaxf(m, fabsf(__fsub_rn(x[start + i], offset)));
    float am = block_absmax(m, red);
    if (threadIdx.x == 0) absmax[b] = am;
    float inv = __frcp_rn(am);
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
      q[start + i] = enc_8bit(smem_code, __fmul_rn(__fsub_rn(x[start + i], offset), inv));
  }
}

// out[i] = f32(code[q[i]] * absmax[i / bs]) (+ offset, a second rounding).
__global__ void k_dequant8(const float *code, const uint8_t *q, const float *absmax, int64_t n,
                           int64_t bs, float offset, int add_offset, float *out) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float v = __fmul_rn(code[q[i]], absmax[i / bs]);
    out[i] = add_offset ? __fadd_rn(v, offset) : v;
  }
}

unsigned grid_for(int64_t work, int per_block) {
  int64_t g = (work + per_block - 1) / per_block;
  if (g < 1) g = 1;
  if (g > (1 << 30)) g = 1 << 30;
  return (unsigned)g;
}

int log2i(int v) {
  int l = 0;
  while ((1 << l) < v) l++;
  return l;
}

template <typename T>
qt_status quant4(qt_quant_type t, const T *x, int64_t n, int blocksize, uint8_t *packed,
                 float *absmax, void *stream) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  if (n == 0) return QT_OK;
  int64_t nb = qt_quant_nblocks(n, blocksize);
  int threads = blocksize / 2 < kThreads ? blocksize / 2 : kThreads;
  k_quant4<T><<<grid_for(nb, 1), threads, 0, (cudaStream_t)stream>>>((int)t, x, n, blocksize,
                                                                     packed, absmax, nb);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

template <typename T>
qt_status dequant4(qt_quant_type t, const uint8_t *packed, const float *absmax, int64_t n,
                   int blocksize, T *out, void *stream) {
  QT_ASSERT(qt_quant_blocksize_valid(blocksize) && n >= 0);
  if (n == 0) return QT_OK;
  if (sizeof(T) == 2 && n % 16 == 0 && (uintptr_t)packed % 8 == 0 && (uintptr_t)out % 16 == 0) {
    k_dequant4_bf16_x16<<<grid_for(n / 16, kThreads), kThreads, 0, (cudaStream_t)stream>>>(
        (int)t, packed, absmax, n / 16, log2i(blocksize), (uint16_t *)out);
    QT_CUDA_CHECK_LAUNCH();
    return QT_OK;
  }
  k_dequant4<T><<<grid_for((n + 1) / 2, kThreads), kThreads, 0, (cudaStream_t)stream>>>(
      (int)t, packed, absmax, n, log2i(blocksize), out);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

}  // namespace

extern "C" {

qt_status qt_quant_4bit_quantize_cuda(qt_quant_type t, const float *x, int64_t n, int blocksize,
                                      uint8_t *packed, float *absmax, void *stream) {
  return quant4<float>(t, x, n, blocksize, packed, absmax, stream);
}

qt_status qt_quant_4bit_quantize_bf16_cuda(qt_quant_type t, const uint16_t *x, int64_t n,
                                           int blocksize, uint8_t *packed, float *absmax,
                                           void *stream) {
  return quant4<uint16_t>(t, x, n, blocksize, packed, absmax, stream);
}

qt_status qt_quant_4bit_dequantize_cuda(qt_quant_type t, const uint8_t *packed,
                                        const float *absmax, int64_t n, int blocksize,
                                        float *out, void *stream) {
  return dequant4<float>(t, packed, absmax, n, blocksize, out, stream);
}

qt_status qt_quant_4bit_dequantize_bf16_cuda(qt_quant_type t, const uint8_t *packed,
                                             const float *absmax, int64_t n, int blocksize,
                                             uint16_t *out, void *stream) {
  return dequant4<uint16_t>(t, packed, absmax, n, blocksize, out, stream);
}

qt_status qt_quant_8bit_quantize_cuda(const float *code, const float *x, int64_t n,
                                      int64_t blocksize, uint8_t *q, float *absmax,
                                      void *stream) {
  QT_ASSERT(blocksize > 0 && n >= 0);
  if (n == 0) return QT_OK;
  int64_t nb = (n + blocksize - 1) / blocksize;
  int threads = blocksize < kThreads ? 32 : kThreads;
  k_quant8<<<grid_for(nb, 1), threads, 0, (cudaStream_t)stream>>>(code, x, n, blocksize, 0.0f, q,
                                                                   absmax, nb);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_quant_8bit_dequantize_cuda(const float *code, const uint8_t *q, const float *absmax,
                                        int64_t n, int64_t blocksize, float *out, void *stream) {
  QT_ASSERT(blocksize > 0 && n >= 0);
  if (n == 0) return QT_OK;
  k_dequant8<<<grid_for(n, kThreads), kThreads, 0, (cudaStream_t)stream>>>(code, q, absmax, n,
                                                                            blocksize, 0.0f, 0, out);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_quant_dq_compress_cuda(const float *code, const float *absmax, int64_t nb,
                                    float offset, uint8_t *qabsmax, float *nested_absmax,
                                    void *stream) {
  QT_ASSERT(nb >= 0);
  if (nb == 0) return QT_OK;
  int64_t nnb = (nb + QT_QUANT_NESTED_BLOCKSIZE - 1) / QT_QUANT_NESTED_BLOCKSIZE;
  k_quant8<<<grid_for(nnb, 1), kThreads, 0, (cudaStream_t)stream>>>(
      code, absmax, nb, QT_QUANT_NESTED_BLOCKSIZE, offset, qabsmax, nested_absmax, nnb);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

qt_status qt_quant_dq_decompress_cuda(const float *code, const uint8_t *qabsmax,
                                      const float *nested_absmax, float offset, int64_t nb,
                                      float *absmax, void *stream) {
  QT_ASSERT(nb >= 0);
  if (nb == 0) return QT_OK;
  k_dequant8<<<grid_for(nb, kThreads), kThreads, 0, (cudaStream_t)stream>>>(
      code, qabsmax, nested_absmax, nb, QT_QUANT_NESTED_BLOCKSIZE, offset, 1, absmax);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

}  // extern "C"
