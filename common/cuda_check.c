/* common/cuda_check.c — the launch check behind QT_CUDA_CHECK_LAUNCH and its
 * QLORA_CUDA_SYNC=1 debug mode (contract: common/cuda_check.h). C, not CUDA,
 * so that linking qt_common does not make every program a CUDA link; the
 * whole file is empty without the CUDA backend (common/CMakeLists.txt compiles
 * every .c file of common/). */
#ifdef QLORA_HAVE_CUDA
#include "common/cuda_check.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

static pthread_once_t sync_once = PTHREAD_ONCE_INIT;
static bool sync_on;

static void sync_read_env(void) {
  const char *v = getenv("QLORA_CUDA_SYNC");
  if (!v || !*v || strcmp(v, "0") == 0) return;
  if (strcmp(v, "1") == 0) {
    sync_on = true;
    return;
  }
  QT_LOGW("QLORA_CUDA_SYNC=%s is ignored: set it to 1 to synchronize after every kernel launch "
          "(debugging), or leave it unset", v);
}

bool qt_cuda_launch_sync_enabled(void) {
  pthread_once(&sync_once, sync_read_env); /* read once per process, thread-safely */
  return sync_on;
}

cudaError_t qt_cuda_launch_error(const char **what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    *what = "kernel launch";
    return e;
  }
  if (qt_cuda_launch_sync_enabled()) {
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      *what = "kernel (cudaDeviceSynchronize after the launch, QLORA_CUDA_SYNC=1)";
      return e;
    }
  }
  return cudaSuccess;
}
#endif
