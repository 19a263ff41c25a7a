/* common/philox against cuRAND's own device-API code, compiled for the host.
 *
 * curand_kernel.h declares its functions with QUALIFIERS, which defaults to
 * `static __forceinline__ __device__` only when not already defined; defining it
 * as __host__ __device__ lets nvcc compile NVIDIA's Philox state machine
 * (curand_init, skipahead, skipahead_sequence, curand, curand4,
 * curand_uniform, curand_normal) into this host program. That is an outside
 * reference for everything but the device math: it needs no GPU, so this is a
 * unit test, built whenever the CUDA backend is.
 *
 * Everything must match bit for bit: words, curand4, uniforms, and normals too,
 * because the header's host branch of Box-Muller calls the same libm logf,
 * sinf, cosf as common/philox.c and this file is compiled with
 * -ffp-contract=off (tests/common/CMakeLists.txt), so the angle's multiply and
 * add round separately on both sides. */
#define QUALIFIERS static __host__ __device__ inline
#include <curand_kernel.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/philox.h"

static int failures;
static int normals_total;

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

static uint32_t fbits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Draws the same mixed sequence of calls from both generators and compares. */
static void compare_streams(curandStatePhilox4_32_10_t *ref, qt_philox *ours, const char *what) {
  for (int i = 0; i < 37; i++) {
    uint32_t a = curand(ref), b = qt_philox_next_u32(ours);
    EXPECT(a == b, "%s: curand word %d: cuRAND %08x ours %08x", what, i, a, b);
  }
  for (int i = 0; i < 3; i++) {
    uint4 a = curand4(ref);
    uint32_t b[4];
    qt_philox_next_u32x4(ours, b);
    EXPECT(a.x == b[0] && a.y == b[1] && a.z == b[2] && a.w == b[3], "%s: curand4 #%d", what, i);
  }
  for (int i = 0; i < 11; i++) {
    float a = curand_uniform(ref), b = qt_philox_next_uniform(ours);
    EXPECT(fbits(a) == fbits(b), "%s: uniform %d: cuRAND %.9g ours %.9g", what, i, a, b);
  }
  for (int i = 0; i < 9; i++) { /* odd: leaves a cached Box-Muller partner behind */
    float a = curand_normal(ref), b = qt_philox_next_normal(ours);
    EXPECT(fbits(a) == fbits(b), "%s: normal %d: cuRAND %.9g ours %.9g", what, i, a, b);
    normals_total++;
  }
  float a = curand_normal(ref), b = qt_philox_next_normal(ours); /* the cached one */
  EXPECT(fbits(a) == fbits(b), "%s: cached normal: cuRAND %.9g ours %.9g", what, a, b);
  for (int i = 0; i < 5; i++) {
    uint32_t x = curand(ref), y = qt_philox_next_u32(ours);
    EXPECT(x == y, "%s: word %d after normals: cuRAND %08x ours %08x", what, i, x, y);
  }
}

static void check_state(const curandStatePhilox4_32_10_t *ref, const qt_philox *ours, const char *what) {
  EXPECT(ref->ctr.x == ours->ctr[0] && ref->ctr.y == ours->ctr[1] && ref->ctr.z == ours->ctr[2] &&
             ref->ctr.w == ours->ctr[3] && ref->key.x == ours->key[0] && ref->key.y == ours->key[1] &&
             ref->STATE == ours->idx,
         "%s: state differs: cuRAND ctr %08x %08x %08x %08x idx %u, ours %08x %08x %08x %08x idx %u",
         what, ref->ctr.x, ref->ctr.y, ref->ctr.z, ref->ctr.w, ref->STATE, ours->ctr[0],
         ours->ctr[1], ours->ctr[2], ours->ctr[3], ours->idx);
}

int main(void) {
  const unsigned long long seeds[] = {0, 1, 42, 0xFFFFFFFFull, 0x100000000ull, 0xDEADBEEFCAFEF00Dull, ~0ull};
  const unsigned long long subs[] = {0, 1, 3, 0xFFFFFFFFull, 0x123456789ABCull, ~0ull};
  const unsigned long long offs[] = {0, 1, 2, 3, 5, 1023, 0xFFFFFFFFull, 0x400000003ull, ~0ull - 3, ~0ull};
  char what[160];
  for (unsigned long long seed : seeds)
    for (unsigned long long sub : subs)
      for (unsigned long long off : offs) {
        curandStatePhilox4_32_10_t ref;
        qt_philox ours;
        curand_init(seed, sub, off, &ref);
        qt_philox_init(&ours, seed, sub, off);
        snprintf(what, sizeof what, "seed %llx sub %llx off %llx", seed, sub, off);
        check_state(&ref, &ours, what);
        compare_streams(&ref, &ours, what);
      }

  /* Random positions: counters near every carry boundary, random skips. */
  uint64_t rs = 2026;
  for (int t = 0; t < 2000; t++) {
    curandStatePhilox4_32_10_t ref;
    qt_philox ours;
    uint64_t seed = splitmix64(&rs);
    curand_init(seed, 0, 0, &ref);
    qt_philox_init(&ours, seed, 0, 0);
    uint64_t r = splitmix64(&rs);
    for (int w = 0; w < 4; w++) { /* each counter word: random, 0, or all ones */
      uint32_t v = (r >> (2 * w)) & 3 ? ((r >> (8 * w)) & 1 ? 0xFFFFFFFFu : 0u) : (uint32_t)splitmix64(&rs);
      (&ref.ctr.x)[w] = v;
      ours.ctr[w] = v;
    }
    uint64_t n = splitmix64(&rs) >> (splitmix64(&rs) % 64);
    uint64_t m = splitmix64(&rs) >> (splitmix64(&rs) % 64);
    (void)curand(&ref); /* move off the block start; out[] still from the init counter */
    (void)qt_philox_next_u32(&ours);
    skipahead(n, &ref);
    qt_philox_skipahead(&ours, n);
    skipahead_sequence(m, &ref);
    qt_philox_skipahead_sequence(&ours, m);
    snprintf(what, sizeof what, "random position %d (skip %llx, seq %llx)", t,
             (unsigned long long)n, (unsigned long long)m);
    check_state(&ref, &ours, what);
    compare_streams(&ref, &ours, what);
  }

  printf("compared %d normals bit for bit\n", normals_total);
  if (failures) {
    fprintf(stderr, "FAILED: %d mismatches against cuRAND's host-compiled Philox\n", failures);
    return 1;
  }
  printf("OK: common/philox matches cuRAND's Philox4_32_10 stream (host-compiled curand_kernel.h)\n");
  return 0;
}
