/* common/sha256.h — SHA-256 (FIPS 180-4, section 6.2), used to check tensor
 * bytes against golden fixtures and to hash checkpoint files (MANIFEST). */
#ifndef QT_COMMON_SHA256_H
#define QT_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint32_t h[8];
  uint64_t nbytes;     /* message length so far */
  uint8_t block[64];   /* pending partial block */
  size_t fill;
} qt_sha256;

void qt_sha256_init(qt_sha256 *c);
void qt_sha256_update(qt_sha256 *c, const void *data, size_t len);
void qt_sha256_final(qt_sha256 *c, uint8_t digest[32]);
/* One-shot digest. */
void qt_sha256_digest(const void *data, size_t len, uint8_t digest[32]);
/* Lower-case hex of a digest into hex[65] (NUL-terminated). */
void qt_sha256_hex(const uint8_t digest[32], char hex[65]);

#endif
