/* fp32 bit patterns that exercise every rounding path of fp32 -> bf16 / fp16,
 * shared by the CUDA comparison tests of common/half. */
#ifndef QT_TESTS_HALF_CASES_H
#define QT_TESTS_HALF_CASES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of patterns half_cases_fill writes. */
size_t half_cases_count(void);
/* Fills dst[0 .. half_cases_count()) (deterministic). */
void half_cases_fill(uint32_t *dst);

#ifdef __cplusplus
}
#endif

#endif
