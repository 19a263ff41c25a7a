/* tests/common/cuda_test_util.h — what every `cuda`-labelled test shares
 * (compiled into each by qlora_cuda_test, tests/CMakeLists.txt):
 *
 * The skip policy (STYLE.md habit 6: skip honestly). A test exits 77, which
 * CTest shows as skipped, only when this machine has no GPU; a GPU that is
 * there but unusable is a failure, so a broken runtime cannot look green:
 *
 *   int main(void) {
 *     int rc = ctu_gpu_check("test_x");
 *     if (rc != 0) return rc;   // 77: no GPU, skipped; 1: broken CUDA setup
 *     ...
 *
 * Data paths. Tests that read data prefer the environment variables
 * QLORA_SHARED_DIR (the ../shared checkout: data/stories260K, data/tinystories)
 * and QLORA_TEST_DIR (tests/, for tests/golden) over the directories compiled
 * in as the macros of the same names, so that a bundle of test binaries can
 * run from another directory or machine. */
#ifndef QT_TESTS_COMMON_CUDA_TEST_UTIL_H
#define QT_TESTS_COMMON_CUDA_TEST_UTIL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 0 when a CUDA device is usable. 77 (after printing why) when there is none:
 * cudaGetDeviceCount returns cudaErrorNoDevice, or succeeds with 0 devices, or
 * returns cudaErrorInsufficientDriver on a machine with no NVIDIA driver at all
 * (see cuda_test_util.c). 1 (after printing the error's name and text and what
 * it likely means) for any other error: the test fails. `test` prefixes the
 * messages. */
int ctu_gpu_check(const char *test);

/* $QLORA_SHARED_DIR when set and not empty, else the compiled-in QLORA_SHARED_DIR. */
const char *ctu_shared_dir(void);
/* $QLORA_TEST_DIR when set and not empty, else the compiled-in QLORA_TEST_DIR. */
const char *ctu_test_dir(void);
/* dir "/" rel written into buf (cap bytes); returns buf. Exits 1 with a message
 * when the path does not fit. */
char *ctu_path(char *buf, size_t cap, const char *dir, const char *rel);

#ifdef __cplusplus
}
#endif

#endif
