/* Tests for common/cuda_check.h: the messages and statuses of QT_CUDA_CHECK,
 * QT_CUDA_CHECK_GOTO and QT_CUDA_CHECK_LAUNCH, and its QLORA_CUDA_SYNC=1 mode.
 * The message checks need no GPU (the error codes are injected;
 * cudaGetErrorString needs no device), nor does reading QLORA_CUDA_SYNC. The
 * launch checks need a device: a launch with too many threads per block must
 * fail at its check, and, as the mode is on, a kernel that writes to an address
 * no allocation has must be reported at the check right after its launch, not
 * at the next copy. That fault poisons the CUDA context, so it runs last.
 * Without a GPU the test exits 77 after the rest passed (cuda_test_util.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cuda_check.h"
#include "cuda_test_util.h"

static int failures;
#define EXPECT(cond)                                                            \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: expected %s; message: \"%s\"\n", __FILE__, __LINE__, #cond, \
              qt_error_message());                                              \
      failures++;                                                               \
    }                                                                           \
  } while (0)

static cudaError_t inject(cudaError_t e) { return e; }

static int check_line;
static qt_status fails_direct(void) {
  QT_CUDA_CHECK(inject(cudaSuccess));
  check_line = __LINE__ + 1;
  QT_CUDA_CHECK(inject(cudaErrorMemoryAllocation));
  return QT_OK;
}

static int cleaned;
static qt_status fails_goto(void) {
  qt_status st = QT_OK;
  QT_CUDA_CHECK_GOTO(st, cleanup, inject(cudaErrorInvalidValue));
  st = QT_ERR_INVALID; /* not reached */
cleanup:
  cleaned = 1;
  return st;
}

__global__ void noop(int *p) {
  if (p) *p = 1;
}

static qt_status bad_launch(void) {
  noop<<<1, 4096>>>(NULL); /* more threads per block than any GPU allows */
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

static qt_status good_launch(void) {
  noop<<<1, 32>>>(NULL);
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

static qt_status bad_launch_goto(void) {
  qt_status st = QT_OK;
  cleaned = 0;
  noop<<<1, 4096>>>(NULL);
  QT_CUDA_CHECK_LAUNCH_GOTO(st, cleanup);
  st = QT_ERR_INVALID; /* not reached */
cleanup:
  cleaned = 1;
  return st;
}

__global__ void store_to(int *p) { *(volatile int *)p = 1; }

static int fault_line;
static qt_status faulting_launch(void) {
  fault_line = __LINE__ + 2; /* the check's line, right after the launch */
  store_to<<<1, 1>>>((int *)(uintptr_t)16); /* the null page: no allocation is there */
  QT_CUDA_CHECK_LAUNCH();
  return QT_OK;
}

int main(void) {
  /* Before the first launch check: the mode is read once per process. */
  setenv("QLORA_CUDA_SYNC", "1", 1);

  qt_error_clear();
  EXPECT(fails_direct() == QT_ERR_CUDA);
  char want[512];
  snprintf(want, sizeof want, "%s:%d: inject(cudaErrorMemoryAllocation) failed: ", __FILE__, check_line);
  EXPECT(strncmp(qt_error_message(), want, strlen(want)) == 0);
  EXPECT(strstr(qt_error_message(), cudaGetErrorString(cudaErrorMemoryAllocation)) != NULL);
  EXPECT(strstr(qt_error_message(), "(cudaErrorMemoryAllocation)") != NULL);

  qt_error_clear();
  cleaned = 0;
  EXPECT(fails_goto() == QT_ERR_CUDA);
  EXPECT(cleaned == 1);
  EXPECT(strstr(qt_error_message(), "inject(cudaErrorInvalidValue) failed") != NULL);
  EXPECT(strstr(qt_error_message(), "cudaErrorInvalidValue") != NULL);

  EXPECT(qt_cuda_launch_sync_enabled());
  setenv("QLORA_CUDA_SYNC", "0", 1);
  EXPECT(qt_cuda_launch_sync_enabled()); /* cached: a later change does not count */

  int rc = ctu_gpu_check("test_cuda_check");
  if (rc == 1 || failures) return 1;
  if (rc == 77) {
    printf("message checks passed; the launch checks need a GPU: skipped\n");
    return 77;
  }

  qt_error_clear();
  EXPECT(bad_launch() == QT_ERR_CUDA);
  EXPECT(strstr(qt_error_message(), "kernel launch failed") != NULL);
  EXPECT(strstr(qt_error_message(), "cudaErrorInvalidConfiguration") != NULL);
  qt_error_clear();
  EXPECT(bad_launch_goto() == QT_ERR_CUDA);
  EXPECT(cleaned == 1);
  EXPECT(strstr(qt_error_message(), "kernel launch failed") != NULL);
  qt_error_clear();
  EXPECT(good_launch() == QT_OK);

  /* Last: the fault leaves the context unusable for the rest of the process. */
  qt_error_clear();
  EXPECT(faulting_launch() == QT_ERR_CUDA);
  snprintf(want, sizeof want,
           "%s:%d: kernel (cudaDeviceSynchronize after the launch, QLORA_CUDA_SYNC=1) failed: ",
           __FILE__, fault_line);
  EXPECT(strncmp(qt_error_message(), want, strlen(want)) == 0);
  /* A wild store is reported as an illegal address; some drivers say launch failure. */
  EXPECT(strstr(qt_error_message(), "(cudaErrorIllegalAddress)") != NULL ||
         strstr(qt_error_message(), "(cudaErrorLaunchFailure)") != NULL);
  printf("fault reported at the launch: %s\n", qt_error_message());
  if (failures) return 1;
  printf("OK: launch checks tested on the GPU\n");
  return 0;
}
