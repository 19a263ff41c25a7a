/* tests/safetensors/st_golden.h — helpers shared by the safetensors tests:
 * golden paths, meta JSON loading, SHA-256 hex of a byte range. */
#ifndef QT_TESTS_ST_GOLDEN_H
#define QT_TESTS_ST_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/safetensors.h"

/* QLORA_TEST_DIR/golden/safetensors/<rel> into a static-lifetime-free buffer (caller frees). */
char *stg_path(const char *rel);
/* Parses golden/safetensors/<name>.meta.json; aborts the test on failure. */
cJSON *stg_meta(const char *name);
/* Lower-case hex SHA-256 of len bytes into hex[65]. */
void stg_sha_hex(const void *data, size_t len, char hex[65]);
/* Reads a whole file (aborts on failure); caller frees. */
uint8_t *stg_read(const char *path, size_t *len);
/* Checks one entry against a meta tensor record {name, dtype, shape, sha256
 * [, begin, end]}; fails the test on mismatch. */
void stg_check_entry(const qt_st_entry *e, const cJSON *rec);
/* A fresh empty directory under the build tree for this test (caller frees). */
char *stg_tmpdir(const char *tag);
/* Removes a directory made by stg_tmpdir and frees its path. */
void stg_rmtree(char *dir);

#endif
