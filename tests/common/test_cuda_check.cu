/* Tests for common/cuda_check.h: the messages and statuses of QT_CUDA_CHECK,
 * QT_CUDA_CHECK_GOTO and QT_CUDA_CHECK_LAUNCH. The first two need no GPU (the
 * error codes are injected; cudaGetErrorString needs no device), so this is a
 * unit test built with the CUDA backend. The launch check needs a device and
 * runs only when one is present. */
#include <stdio.h>
#include <string.h>

#include "common/cuda_check.h"

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

int main(void) {
  qt_error_clear();
  EXPECT(fails_direct() == QT_ERR_CUDA);
  char want[256];
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

  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) == cudaSuccess && n_dev > 0) {
    qt_error_clear();
    EXPECT(bad_launch() == QT_ERR_CUDA);
    EXPECT(strstr(qt_error_message(), "kernel launch failed") != NULL);
    EXPECT(strstr(qt_error_message(), "cudaErrorInvalidConfiguration") != NULL);
    printf("launch check tested on the GPU\n");
  } else {
    (void)cudaGetLastError();
    printf("no GPU: launch check not exercised\n");
  }
  if (failures) return 1;
  printf("OK\n");
  return 0;
}
