/* See half_cases.h. */
#include "half_cases.h"

enum { N_RANDOM = 1 << 20 };

static const uint32_t lo16[] = {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu};
static const uint32_t lo13[] = {0x0000u, 0x0001u, 0x0FFFu, 0x1000u, 0x1001u, 0x1FFFu};

size_t half_cases_count(void) {
  return (size_t)65536 * 6 + ((size_t)1 << 19) * 6 + 2 * (size_t)N_RANDOM;
}

/* splitmix64 (Steele, Lea, Flood 2014) */
static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void half_cases_fill(uint32_t *dst) {
  size_t k = 0;
  /* every bf16 kept part with the dropped half below, at, and above a tie */
  for (uint32_t hi = 0; hi < 65536; hi++)
    for (int j = 0; j < 6; j++) dst[k++] = hi << 16 | lo16[j];
  /* every fp16-normal kept part (19 high bits) likewise for the 13 dropped bits */
  for (uint32_t hi = 0; hi < (1u << 19); hi++)
    for (int j = 0; j < 6; j++) dst[k++] = hi << 13 | lo13[j];
  uint64_t s = 20261125;
  for (int i = 0; i < N_RANDOM; i++) dst[k++] = (uint32_t)splitmix64(&s);
  /* |x| < 2^-13: the fp16 subnormal range and its boundary, random mantissas */
  for (int i = 0; i < N_RANDOM; i++) {
    uint64_t r = splitmix64(&s);
    uint32_t exp = 100u + (uint32_t)(r >> 40) % 14u; /* 2^-27 .. 2^-14 */
    dst[k++] = (uint32_t)(r >> 63) << 31 | exp << 23 | ((uint32_t)r & 0x7FFFFFu);
  }
}
