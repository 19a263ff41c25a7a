/* tests/quant/quant_test_util.c */
#include "quant_test_util.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

void *qtu_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  buf[n] = 0;
  if (len) *len = (size_t)n;
  return buf;
}

void *qtu_read_golden(const char *name, size_t *len) {
  char path[1024];
  snprintf(path, sizeof(path), "%s/golden/quant/%s", QLORA_TEST_DIR, name);
  return qtu_read_file(path, len);
}

void qtu_rng_seed(qtu_rng *r, uint64_t seed) {
  r->s = seed;
  r->have = 0;
  r->spare = 0;
}

/* splitmix64 (Steele, Lea, Flood 2014). */
uint64_t qtu_rng_u64(qtu_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double qtu_rng_uniform(qtu_rng *r) { return (double)(qtu_rng_u64(r) >> 11) * 0x1.0p-53; }

double qtu_rng_normal(qtu_rng *r) {
  if (r->have) {
    r->have = 0;
    return r->spare;
  }
  double u1 = qtu_rng_uniform(r), u2 = qtu_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
  r->spare = rad * sin(th);
  r->have = 1;
  return rad * cos(th);
}

float qtu_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint32_t qtu_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
