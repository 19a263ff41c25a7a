/* autograd/kernels/gemm_cuda.cuh — private: the cuBLASLt GEMM the CUDA ops share
 * (linear_cuda.cu defines it; lora_cuda.cu and cross_entropy_cuda.cu call it).
 *
 * Row-major convention, the same as the CPU ops' gemm() (kernels/common_cpu.inc):
 *   C (M, N) = alpha op(A) op(B) + beta C
 * op(A) = A (M, K) stored with leading dimension lda, or A^T when ta (A stored (K, M));
 * op(B) = B (K, N) with ldb, or B^T when tb (B stored (N, K)).
 * A and B are bf16; C is bf16 (c_f32 = 0) or fp32 (c_f32 = 1); compute and
 * alpha/beta are fp32 (CUBLAS_COMPUTE_32F), split-K partial sums fp32.
 * C is read only when beta != 0 (cuBLASLt in place, C == D). */
#ifndef QT_AUTOGRAD_GEMM_CUDA_CUH
#define QT_AUTOGRAD_GEMM_CUDA_CUH

#include <stdint.h>

#include "autograd/ops_cuda.h"
#include "common/status.h"

qt_status qt_gemm_cuda_run(qt_gemm_cuda *g, int ta, int tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const uint16_t *A, int64_t lda, const uint16_t *B,
                           int64_t ldb, float beta, void *C, int c_f32, int64_t ldc,
                           void *stream);

#endif
