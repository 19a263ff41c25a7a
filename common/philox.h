/* common/philox.h — Philox4x32-10 counter-based RNG on the CPU, producing the
 * same stream as cuRAND's device API for curandStatePhilox4_32_10_t.
 *
 * The generator (Salmon, Moraes, Dror, Shaw 2011, "Parallel Random Numbers: As
 * Easy as 1, 2, 3", SC'11): a 128-bit counter ctr[0..3] and a 64-bit key
 * key[0..1] go through 10 rounds of the Philox S-box; each counter value gives
 * four 32-bit outputs. Checked against Random123's known-answer vectors.
 *
 * cuRAND's stream (facts read from the CUDA 13.0 headers curand_kernel.h,
 * curand_philox4x32_x.h, curand_uniform.h, curand_normal.h):
 *   - curand_init(seed, subsequence, offset): key = {low 32 bits of seed,
 *     high 32 bits of seed}; counter = 0; then skipahead_sequence(subsequence)
 *     adds subsequence to the HIGH 64 bits of the counter (ctr[2] + 2^32 ctr[3]),
 *     and skipahead(offset) moves by `offset` 32-bit outputs: offset / 4 is
 *     added to the LOW 64 bits of the counter (ctr[0] + 2^32 ctr[1], carrying
 *     into ctr[2..3]) and offset % 4 selects the starting word. So each
 *     subsequence is 2^66 outputs long and position p of subsequence s is word
 *     p % 4 of Philox(counter = (p / 4) + 2^64 s, key = seed).
 *   - curand() returns the words of one counter block in order out[0], out[1],
 *     out[2], out[3], then increments the counter by one.
 *   - curand4() returns the next four words of the same stream (they straddle
 *     two blocks when the position is not a multiple of 4).
 *   - curand_uniform() = u * 2^-32 + 2^-33 in float for the next word u: in
 *     (0, 1], never 0; 1.0f is possible after rounding.
 *   - curand_normal() = Box-Muller on two consecutive words x, y:
 *     r = sqrt(-2 log(uniform(x))), t = y * 2pi*2^-32 + pi*2^-32 (float,
 *     2pi as the float 6.2831855f), returns r sin(t) and keeps r cos(t) for
 *     the next call (the state remembers it; the next call consumes no words).
 *
 * Exactness: the counter, key, words and uniforms are bit-identical to cuRAND
 * on the GPU. Normals follow the host branch of cuRAND's Box-Muller (separate
 * multiply and add, libm logf / sinf / cosf) and equal it bit for bit with the
 * same libm (tests/common/test_philox_curand_host.cu). On the GPU, cuRAND fuses
 * the angle's multiply-add, uses CUDA's logf and the __sincosf approximation,
 * so GPU normals differ from these in the last bits: compare them with a
 * tolerance (tests/common/test_philox_cuda.cu). The word consumption is the
 * same, so the streams stay aligned.
 *
 * Not thread-safe per state; use one state per thread (different subsequences).
 */
#ifndef QT_COMMON_PHILOX_H
#define QT_COMMON_PHILOX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  uint32_t ctr[4];    /* counter of the current block */
  uint32_t key[2];    /* {seed low, seed high} */
  uint32_t out[4];    /* Philox(ctr, key): the current block's words */
  uint32_t idx;       /* next word of out[] to return, 0..3 */
  int has_normal;     /* a Box-Muller partner is waiting in normal_extra */
  float normal_extra;
} qt_philox;

/* The bijection itself: out = Philox4x32-10(ctr, key). */
void qt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* curand_init(seed, subsequence, offset, &state). */
void qt_philox_init(qt_philox *s, uint64_t seed, uint64_t subsequence, uint64_t offset);
/* skipahead(n, &state): advance by n 32-bit words. */
void qt_philox_skipahead(qt_philox *s, uint64_t n);
/* skipahead_sequence(n, &state): advance by n subsequences (n * 2^66 words). */
void qt_philox_skipahead_sequence(qt_philox *s, uint64_t n);

/* curand(&state). */
uint32_t qt_philox_next_u32(qt_philox *s);
/* curand4(&state): out[0..3] = its .x .y .z .w. */
void qt_philox_next_u32x4(qt_philox *s, uint32_t out[4]);
/* curand_uniform(&state). */
float qt_philox_next_uniform(qt_philox *s);
/* curand_normal(&state) (see Exactness above). */
float qt_philox_next_normal(qt_philox *s);

/* The word -> float transform of curand_uniform: u * 2^-32 + 2^-33. */
float qt_philox_uniform_from_u32(uint32_t u);

/* dst[i] = qt_philox_next_u32(s), i < n (the same as n calls). */
void qt_philox_fill_u32(qt_philox *s, uint32_t *dst, size_t n);
/* dst[i] = qt_philox_next_uniform(s), i < n. */
void qt_philox_fill_uniform(qt_philox *s, float *dst, size_t n);
/* Dropout keep mask: keep[i] = (curand_uniform of word i of the stream
 * curand_init(seed, subsequence, 0)) > p, as 0/1 bytes, for i < n — the same
 * bytes as n qt_philox_next_uniform calls, drawn many blocks at a time and
 * threaded (OpenMP) for large n (common/philox_mask.c). */
void qt_philox_keep_mask(uint8_t *keep, int64_t n, float p, uint64_t seed, uint64_t subsequence);
/* The integer form of that comparison: curand_uniform(word) > p iff
 * word > qt_philox_keep_threshold(p) (the map word -> uniform is monotone).
 * Returns the largest word whose uniform is <= p, in [0, UINT32_MAX], or -1
 * when even word 0's uniform (2^-33) is above p (p < 2^-33, p = 0, or NaN:
 * every element kept); p >= 1 gives UINT32_MAX (none kept). A bisection over
 * the 2^32 words (32 evaluations): compute it once per mask, not per element.
 * With common/philox_hd.h's qt_dropout_keep_hd it lets a kernel draw the mask
 * where it applies it (autograd/ops_cuda.h qt_dropout_cuda). */
int64_t qt_philox_keep_threshold(float p);

#ifdef __cplusplus
}
#endif

#endif
