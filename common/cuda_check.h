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
 * qt_error_context(). QT_CUDA_CHECK_GOTO and QT_CUDA_CHECK_LAUNCH_GOTO record
 * the same messages but store the status in a variable and jump to a cleanup
 * label instead of returning.
 *
 * Every kernel launch is followed by QT_CUDA_CHECK_LAUNCH (or _GOTO) on the
 * next line. By default it reports only launch-configuration errors (too many
 * threads, bad grid): launches are asynchronous, so a fault inside the kernel
 * (illegal address, misaligned access, device assert) surfaces later, at the
 * next synchronizing call (often a cudaMemcpy far away), and names that call.
 *
 * Environment: QLORA_CUDA_SYNC=1 turns on a debug mode in which
 * QT_CUDA_CHECK_LAUNCH also calls cudaDeviceSynchronize() after the launch, so
 * a fault inside the kernel is reported right there, with the file:line of the
 * check that follows the launch:
 *   "autograd/rope_cuda.cu:35: kernel (cudaDeviceSynchronize after the launch,
 *    QLORA_CUDA_SYNC=1) failed: an illegal memory access was encountered
 *    (cudaErrorIllegalAddress)"
 * It serialises the GPU with the host (slow: for localising a fault, not for
 * training runs). The variable is read once, at the first launch check of the
 * process (qt_cuda_launch_sync_enabled); set it before the program starts.
 * "1" turns the mode on; unset, empty or "0" leave it off; any other value is
 * ignored with a warning. (CUDA_LAUNCH_BLOCKING=1 makes launches synchronous
 * too, but the error then still surfaces at whichever call reads it next.)
 *
 * Sticky errors (an illegal address in a kernel) poison the context: every later
 * call fails too; the first message is the one to read. */
#ifndef QT_COMMON_CUDA_CHECK_H
#define QT_COMMON_CUDA_CHECK_H

#include <cuda_runtime_api.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "common/status.h"

/* Whether QLORA_CUDA_SYNC=1 was set when first asked (cached for the process). */
bool qt_cuda_launch_sync_enabled(void);

/* The error of the kernel launch just made: cudaGetLastError(), then, in
 * QLORA_CUDA_SYNC=1 mode, cudaDeviceSynchronize(). cudaSuccess, or the error
 * with *what set to the step that failed ("kernel launch" or "kernel
 * (cudaDeviceSynchronize after the launch, QLORA_CUDA_SYNC=1)"). */
cudaError_t qt_cuda_launch_error(const char **what);
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

/* Right after a kernel launch: launch-configuration errors, and in
 * QLORA_CUDA_SYNC=1 mode errors inside the kernel too (see above). */
#define QT_CUDA_CHECK_LAUNCH()                                                         \
  do {                                                                                 \
    const char *qt_cuda_what_ = "kernel launch";                                       \
    cudaError_t qt_cuda_err_ = qt_cuda_launch_error(&qt_cuda_what_);                   \
    if (qt_cuda_err_ != cudaSuccess)                                                   \
      return QT_CUDA_FAIL(qt_cuda_err_, __FILE__, __LINE__, qt_cuda_what_);            \
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

/* QT_CUDA_CHECK_LAUNCH for functions with a cleanup label. */
#define QT_CUDA_CHECK_LAUNCH_GOTO(status_var, label)                                   \
  do {                                                                                 \
    const char *qt_cuda_what_ = "kernel launch";                                       \
    cudaError_t qt_cuda_err_ = qt_cuda_launch_error(&qt_cuda_what_);                   \
    if (qt_cuda_err_ != cudaSuccess) {                                                 \
      (status_var) = QT_CUDA_FAIL(qt_cuda_err_, __FILE__, __LINE__, qt_cuda_what_);    \
      goto label;                                                                      \
    }                                                                                  \
  } while (0)

#endif
