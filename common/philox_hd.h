/* common/philox_hd.h — the Philox4x32-10 bijection and the dropout keep test
 * as inline code for the host (C, C++) and for CUDA kernels, so that a kernel
 * draws the same dropout mask as the CPU (common/philox.h,
 * qt_philox_keep_mask) without a mask in memory.
 *
 * Why functions in a header (against STYLE's habit): a CUDA kernel can only
 * call a device function whose body its translation unit sees (the project
 * builds without relocatable device code), and the CPU must run the very same
 * arithmetic; one inline definition serves both. common/philox.c's scalar
 * bijection is this one (qt_philox4x32_10 calls qt_philox4x32_10_hd), and
 * common/philox_mask.c's vector versions take the round constants from here.
 *
 * The stream (philox.h, "cuRAND's stream"): word i of curand_init(key,
 * subsequence, 0) is word i % 4 of Philox(counter, key) with the 128-bit
 * counter {low 64 bits: i / 4, high 64 bits: subsequence} and the key
 * {low 32 bits of key, high 32 bits}. A dropout mask of n elements keeps
 * element i iff curand_uniform(word i) > p, i.e. iff word i > T with
 * T = qt_philox_keep_threshold(p) (philox.h; -1 keeps every element,
 * UINT32_MAX none). qt_dropout_keep4_hd gives the four elements of one counter
 * block from one Philox evaluation: a kernel computes one block per four
 * elements, not one per element.
 *
 * Exactness: integer arithmetic only (32x32 -> 64-bit products, xor, adds
 * modulo 2^32), so host and device results are equal bit for bit; checked
 * against cuRAND's own device code compiled for the host and against
 * qt_philox_keep_mask in tests/common/test_philox_hd_host.cu, and in plain C
 * in tests/common/test_philox.c. */
#ifndef QT_COMMON_PHILOX_HD_H
#define QT_COMMON_PHILOX_HD_H

#include <stdint.h>

#if defined(__CUDACC__)
#define QT_PHILOX_HD static __host__ __device__ __forceinline__
#else
#define QT_PHILOX_HD static inline
#endif

/* Round multipliers and Weyl key increments of Philox4x32 (Salmon, Moraes,
 * Dror, Shaw 2011, "Parallel Random Numbers: As Easy as 1, 2, 3", table 2;
 * the same constants as PHILOX_M4x32_0/1 and PHILOX_W32_0/1 in cuRAND's
 * curand_philox4x32_x.h). */
#define QT_PHILOX_M0 0xD2511F53u
#define QT_PHILOX_M1 0xCD9E8D57u
#define QT_PHILOX_W0 0x9E3779B9u /* golden ratio */
#define QT_PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

/* out = Philox4x32-10(ctr, key). Each round (Salmon et al. 2011, sec. 3.3):
 *   {hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0)},
 * the key bumped by (W0, W1) before every round but the first. */
QT_PHILOX_HD void qt_philox4x32_10_hd(const uint32_t ctr[4], const uint32_t key[2],
                                      uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += QT_PHILOX_W0;
      k1 += QT_PHILOX_W1;
    }
    uint64_t p0 = (uint64_t)QT_PHILOX_M0 * c0;
    uint64_t p1 = (uint64_t)QT_PHILOX_M1 * c2;
    uint32_t r0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t r2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = r0;
    c2 = r2;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* Words 4 block .. 4 block + 3 of the stream curand_init(key, subsequence, 0):
 * counter block `block` of that subsequence. */
QT_PHILOX_HD void qt_philox_block_hd(uint64_t block, uint64_t key, uint64_t subsequence,
                                     uint32_t out[4]) {
  const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)subsequence,
                           (uint32_t)(subsequence >> 32)};
  const uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
  qt_philox4x32_10_hd(ctr, k, out);
}

/* The keep bits of elements 4 block .. 4 block + 3 of the dropout mask of
 * stream (key, subsequence) at threshold T: bit w (0..3) set iff element
 * 4 block + w is kept (its word > T). One Philox evaluation. */
QT_PHILOX_HD unsigned qt_dropout_keep4_hd(uint64_t block, uint64_t key, uint64_t subsequence,
                                          int64_t threshold) {
  uint32_t w[4];
  qt_philox_block_hd(block, key, subsequence, w);
  unsigned bits = 0;
  for (unsigned j = 0; j < 4; j++) bits |= (unsigned)((int64_t)w[j] > threshold) << j;
  return bits;
}

/* Whether element i of the dropout mask of stream (key, subsequence) at
 * threshold T is kept: qt_philox_keep_mask(keep, n, p, key, subsequence)'s
 * keep[i] for any n > i, with T = qt_philox_keep_threshold(p). */
QT_PHILOX_HD int qt_dropout_keep_hd(uint64_t i, uint64_t key, uint64_t subsequence,
                                    int64_t threshold) {
  return (int)((qt_dropout_keep4_hd(i / 4, key, subsequence, threshold) >> (i % 4)) & 1u);
}

#endif
