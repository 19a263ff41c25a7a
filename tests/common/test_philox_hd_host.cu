/* common/philox_hd.h, compiled by nvcc (its __host__ __device__ branch, the
 * one the LoRA dropout kernels compile), run as host code against two
 * references: cuRAND's own device-API Philox compiled for the host (as in
 * test_philox_curand_host.cu: QUALIFIERS defined as __host__ __device__
 * before curand_kernel.h) and common/philox_mask.c's qt_philox_keep_mask.
 *
 * What must hold, bit for bit:
 *  - qt_philox_block_hd(b, key, sub) = the four words curand4 returns after
 *    curand_init(key, sub, 4 b);
 *  - qt_dropout_keep_hd(i, key, sub, qt_philox_keep_threshold(p)) =
 *    (curand_uniform after curand_init(key, sub, i)) > p, and = byte i of
 *    qt_philox_keep_mask(.., p, key, sub); qt_dropout_keep4_hd's bits = those
 *    of its four elements;
 * over p = 0.05, 0.1, 0.5, values below the smallest uniform, near 1 and 1,
 * and a p equal to a uniform; keys and subsequences with low and high bits;
 * mask lengths that are not multiples of 4; element indices past 2^32 (by
 * curand_init's offset, no mask that long is drawn). Needs no GPU: a unit
 * test, built whenever the CUDA backend is. */
#define QUALIFIERS static __host__ __device__ inline
#include <curand_kernel.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/philox.h"
#include "common/philox_hd.h"

static int failures;
static long compared;

#define EXPECT(cond, ...)                                   \
  do {                                                      \
    if (!(cond)) {                                          \
      if (failures < 20) {                                  \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);     \
        fprintf(stderr, __VA_ARGS__);                       \
        fputc('\n', stderr);                                \
      }                                                     \
      failures++;                                           \
    }                                                       \
  } while (0)

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static const unsigned long long KEYS[] = {0, 1, 0xFFFFFFFFull, 0x100000000ull,
                                          0xDEADBEEFCAFEF00Dull, ~0ull};
static const unsigned long long SUBS[] = {0, 1, 13, 0xFFFFFFFFull, 0x123456789ABCull, ~0ull};

/* A whole mask of n elements, three ways: cuRAND's stream drawn from offset 0
 * (n curand_uniform calls), qt_philox_keep_mask, and the header per element
 * and per block of four. */
static void compare_mask(float p, unsigned long long key, unsigned long long sub, int64_t n,
                         uint8_t *mask) {
  const int64_t T = qt_philox_keep_threshold(p);
  qt_philox_keep_mask(mask, n, p, key, sub);
  curandStatePhilox4_32_10_t st;
  curand_init(key, sub, 0, &st);
  for (int64_t i = 0; i < n; i++) {
    int ref = curand_uniform(&st) > p;
    int hd = qt_dropout_keep_hd((uint64_t)i, key, sub, T);
    int hd4 = (int)((qt_dropout_keep4_hd((uint64_t)i / 4, key, sub, T) >> (i % 4)) & 1u);
    EXPECT(hd == ref && hd4 == ref && mask[i] == ref,
           "p %.9g key %llx sub %llx n %lld element %lld: cuRAND keeps %d, keep_hd %d, keep4_hd "
           "%d, keep_mask %d", (double)p, key, sub, (long long)n, (long long)i, ref, hd, hd4,
           (int)mask[i]);
    compared++;
  }
}

/* Elements e .. e + 8 of a mask whose start is far away: cuRAND positioned by
 * curand_init's offset, the header by the index alone. */
static void compare_far(float p, unsigned long long key, unsigned long long sub, uint64_t e) {
  const int64_t T = qt_philox_keep_threshold(p);
  curandStatePhilox4_32_10_t st;
  curand_init(key, sub, e, &st);
  for (uint64_t k = 0; k < 9; k++) {
    int ref = curand_uniform(&st) > p;
    int hd = qt_dropout_keep_hd(e + k, key, sub, T);
    EXPECT(hd == ref, "p %.9g key %llx sub %llx element %llu: cuRAND keeps %d, keep_hd %d",
           (double)p, key, sub, (unsigned long long)(e + k), ref, hd);
    compared++;
  }
}

int main(void) {
  /* blocks against curand4 at block-aligned offsets */
  uint64_t rs = 77;
  for (unsigned long long key : KEYS)
    for (unsigned long long sub : SUBS)
      for (int t = 0; t < 8; t++) {
        uint64_t b = t < 4 ? (uint64_t)t : splitmix64(&rs) >> (2 + 8 * (t - 4));
        curandStatePhilox4_32_10_t st;
        curand_init(key, sub, 4 * b, &st);
        uint4 r = curand4(&st);
        uint32_t w[4];
        qt_philox_block_hd(b, key, sub, w);
        EXPECT(r.x == w[0] && r.y == w[1] && r.z == w[2] && r.w == w[3],
               "block %llu key %llx sub %llx: cuRAND %08x %08x %08x %08x, header %08x %08x %08x "
               "%08x", (unsigned long long)b, key, sub, r.x, r.y, r.z, r.w, w[0], w[1], w[2],
               w[3]);
      }

  const float ps[] = {0.05f, 0.1f, 0.5f, 0.25f, 1e-12f, 0x1p-33f, 0.0f, 0.9999f,
                      nextafterf(1.0f, 0.0f), 1.0f,
                      qt_philox_uniform_from_u32(0x0CCCCCCDu) /* exactly a uniform */};
  const int64_t ns[] = {1, 2, 3, 5, 7, 63, 65, 1027, 4096 * 3 + 1};
  enum { NMAX = 4096 * 3 + 1 };
  static uint8_t mask[NMAX];
  int k = 0;
  for (float p : ps)
    for (int64_t n : ns) {
      compare_mask(p, KEYS[k % 6], SUBS[(k / 6 + k) % 6], n, mask);
      k++;
    }
  /* far elements: around 2^32, 2^34 (past 2^32 blocks) and random positions */
  const uint64_t far[] = {0xFFFFFFFBull, 0x100000000ull, 0x3FFFFFFFDull, 0x400000002ull,
                          0x123456789ABull};
  for (float p : ps)
    for (uint64_t e : far) {
      compare_far(p, KEYS[k % 6], SUBS[(k / 6 + k) % 6], e);
      k++;
    }
  for (int t = 0; t < 200; t++) {
    uint64_t e = splitmix64(&rs) >> (splitmix64(&rs) % 62 + 2);
    compare_far(ps[t % 11], splitmix64(&rs), splitmix64(&rs) >> (t % 64), e);
  }

  printf("compared %ld keep bits\n", compared);
  if (failures) {
    fprintf(stderr, "FAILED: %d mismatches (common/philox_hd.h against cuRAND / "
                    "qt_philox_keep_mask)\n", failures);
    return 1;
  }
  printf("OK: philox_hd.h's keep bits match cuRAND's curand_uniform > p and "
         "qt_philox_keep_mask\n");
  return 0;
}
