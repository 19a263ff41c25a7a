/* tests/quant/quant_test_util.h — shared helpers of the quant tests. */
#ifndef QT_TESTS_QUANT_UTIL_H
#define QT_TESTS_QUANT_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Whole file into a malloc'd buffer (NUL-terminated); fails the test if absent. */
void *qtu_read_file(const char *path, size_t *len);
/* QLORA_TEST_DIR "/golden/quant/" name. */
void *qtu_read_golden(const char *name, size_t *len);

/* Seeded generator: splitmix64 uniform and Box-Muller normal (double). */
typedef struct { uint64_t s; int have; double spare; } qtu_rng;
void qtu_rng_seed(qtu_rng *r, uint64_t seed);
uint64_t qtu_rng_u64(qtu_rng *r);
double qtu_rng_uniform(qtu_rng *r); /* [0, 1) */
double qtu_rng_normal(qtu_rng *r);

float qtu_bf16_to_f32(uint16_t h);
uint32_t qtu_f32_bits(float f);

#endif
