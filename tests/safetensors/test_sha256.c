/* common/sha256 against the FIPS 180-4 example vectors (NIST CSRC "SHA256.pdf"
 * examples: "abc", the 448-bit two-block message, one million 'a'), plus the
 * incremental API against the one-shot one at every split point; the digests
 * that hashlib recorded for the golden files are checked in test_st_positive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/sha256.h"

static void hex_of(const void *m, size_t n, char hex[65]) {
  uint8_t d[32];
  qt_sha256_digest(m, n, d);
  qt_sha256_hex(d, hex);
}

static void test_nist_vectors(void **state) {
  (void)state;
  char hex[65];
  hex_of("abc", 3, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  assert_int_equal(strlen(m448) * 8, 448);
  hex_of(m448, strlen(m448), hex);
  assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  hex_of("", 0, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  char *a = malloc(1000000);
  memset(a, 'a', 1000000);
  hex_of(a, 1000000, hex);
  assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  free(a);
}

static void test_incremental(void **state) {
  (void)state;
  uint8_t msg[300];
  for (int k = 0; k < 300; k++) msg[k] = (uint8_t)(k * 7 + 3);
  for (size_t len = 0; len <= 300; len += 1 + len / 8) {
    uint8_t want[32];
    qt_sha256_digest(msg, len, want);
    for (size_t cut = 0; cut <= len; cut += 1 + cut / 4) {
      qt_sha256 c;
      qt_sha256_init(&c);
      qt_sha256_update(&c, msg, cut);
      qt_sha256_update(&c, msg + cut, len - cut);
      uint8_t got[32];
      qt_sha256_final(&c, got);
      assert_memory_equal(got, want, 32);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nist_vectors),
      cmocka_unit_test(test_incremental),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
