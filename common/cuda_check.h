/* common/cuda_check.h — CUDA runtime error checks that return a qt_status
 * (STYLE.md habit 3: every CUDA call and launch checked). For .cu files and for
 * C files that call the CUDA runtime API; needs <cuda_runtime_api.h>.
 *
 *   qt_status upload(float *d, const float *h, size_t n) {
 *     QT_CUDA_CHECK(cudaMemcpy(d, h, n * sizeof *h, cudaMemcpyHostToDevice));
 *     my_kernel<<<grid, block>>>(d, n);
 *     QT_CUDA_CHECK_LAUNCH();
 *     return QT_OK;
 *   }
 *
 * On failure the message recorded with qt_fail reads
 *   "common/x.cu:42: cudaMemcpy(...) failed: out of memory (cudaErrorMemoryAllocation)"
 * and the function returns QT_ERR_CUDA. Callers add context with
 * qt_error_context(). QT_CUDA_CHECK_GOTO records the same message but stores
 * the status in a variable and jumps to a cleanup label instead of returning.
 *
 * Sticky errors (an illegal address in a kernel) poison the context: every later
 * call fails too; the first message is the one to read. */
#ifndef QT_COMMON_CUDA_CHECK_H
#define QT_COMMON_CUDA_CHECK_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "common/status.h"
#ifdef __cplusplus
}
#endif

/* Records "file:line: what failed: reason (name)" and yields QT_ERR_CUDA. */
#define QT_CUDA_FAIL(err, file, line, what)                                            \
  qt_fail(QT_ERR_CUDA, "%s:%d: %s failed: %s (%s)", (file), (line), (what),            \
          cudaGetErrorString(err), cudaGetErrorName(err))

#define QT_CUDA_CHECK(call)                                                            \
  do {                                                                                 \
    cudaError_t qt_cuda_err_ = (call);                                                 \
    if (qt_cuda_err_ != cudaSuccess)                                                   \
      return QT_CUDA_FAIL(qt_cuda_err_, __FILE__, __LINE__, #call);                    \
  } while (0)

/* After a kernel launch: launch-configuration errors (cudaGetLastError). Errors
 * inside the kernel surface at the next synchronizing call, checked as usual. */
#define QT_CUDA_CHECK_LAUNCH()                                                         \
  do {                                                                                 \
    cudaError_t qt_cuda_err_ = cudaGetLastError();                                     \
    if (qt_cuda_err_ != cudaSuccess)                                                   \
      return QT_CUDA_FAIL(qt_cuda_err_, __FILE__, __LINE__, "kernel launch");          \
  } while (0)

/* status_var = QT_ERR_CUDA and goto label on failure (for cleanup paths). */
#define QT_CUDA_CHECK_GOTO(status_var, label, call)                                    \
  do {                                                                                 \
    cudaError_t qt_cuda_err_ = (call);                                                 \
    if (qt_cuda_err_ != cudaSuccess) {                                                 \
      (status_var) = QT_CUDA_FAIL(qt_cuda_err_, __FILE__, __LINE__, #call);            \
      goto label;                                                                      \
    }                                                                                  \
  } while (0)

#endif
