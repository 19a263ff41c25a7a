/* data/dataset.h — a dataset file read into tokenized training examples.
 *
 * Files: ".jsonl" (one JSON object per line; blank lines skipped) or
 * ".json" (one JSON array of objects); any other name is sniffed: '[' as the
 * first non-blank byte means an array. Parsed with cJSON; keys are
 * case-sensitive, a key repeated in a record (or in one of its messages) is
 * an error, keys a format does not use are ignored. Fields per format
 * (data/prompt.h): text {"text"}; completion {"prompt","completion"};
 * alpaca {"instruction","input","output"} ("input" may be missing or null);
 * chat {"messages":[{"role","content"[,"reasoning_content"]}...]}. Fields are
 * strings (null counts as missing).
 *
 * A leading UTF-8 byte order mark is skipped. Invalid UTF-8 anywhere in the file is replaced with U+FFFD before parsing
 * (qt_utf8_sanitize, Python's decode("utf-8", "replace")); line numbers do
 * not change.
 *
 * Bad records: a malformed JSON line, a record that is not an object, a
 * missing or mistyped field, a duplicate key, an unknown chat role stop the
 * load with QT_ERR_FORMAT "FILE:LINE: what is wrong; what to do" (for a
 * .json array, LINE is where the record starts). With skip_bad_records they
 * are skipped instead, counted in n_skipped, and the first few are logged as
 * warnings. A malformed .json array as a whole is always an error. A file
 * with no examples left is an error (QT_ERR_FORMAT).
 *
 * Examples longer than seq_len (> 0) are truncated to their first seq_len
 * tokens (counted in n_truncated; the loader never sees longer ones).
 *
 * Storage: all examples in two flat arrays, example i is
 * ids[offset[i] .. offset[i+1]) with labels aligned (data/prompt.h). */
#ifndef QT_DATA_DATASET_H
#define QT_DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "data/prompt.h"

typedef struct {
  int64_t seq_len;      /* truncate examples to this many tokens; 0 = never */
  int skip_bad_records; /* skip and count bad records instead of failing */
  int64_t max_records;  /* read only the first N records (good or bad); 0 = all */
} qt_dataset_opts;

typedef struct {
  int64_t n;              /* examples */
  int64_t *offset;        /* (n + 1) token offsets */
  int32_t *ids, *labels;  /* (offset[n]) */
  int64_t *line;          /* (n) source line of each example (1-based) */
  int64_t n_records;      /* records read (good + bad) */
  int64_t n_skipped;      /* bad records skipped */
  int64_t n_truncated;    /* examples cut to seq_len */
  int64_t n_no_target;    /* examples without any target (e.g. a prompt that
                             fills seq_len); kept, they add no loss */
  int64_t n_targets;      /* labels != -100 over all examples */
  int64_t cap_examples, cap_tokens; /* allocation (private) */
} qt_dataset;

/* Reads and tokenizes PATH with p (whose format decides the fields). On
 * success *ds owns its arrays (qt_dataset_free); on error *ds is empty. */
qt_status qt_dataset_load(const char *path, qt_prompt *p, const qt_dataset_opts *o, qt_dataset *ds);

/* Same from memory: data[0..len); `name` stands for the file name in
 * messages and decides .json vs .jsonl as above. */
qt_status qt_dataset_load_mem(const char *name, const char *data, size_t len, qt_prompt *p,
                              const qt_dataset_opts *o, qt_dataset *ds);

/* Appends one example of n >= 1 tokens (copied; truncated to seq_len > 0
 * and counted).
 * For building datasets in code (tests, synthetic data). *ds must be
 * zero-initialized before the first call. */
qt_status qt_dataset_add(qt_dataset *ds, const int32_t *ids, const int32_t *labels, int64_t n,
                         int64_t line, int64_t seq_len);

/* Number of tokens of example i. */
int64_t qt_dataset_example_len(const qt_dataset *ds, int64_t i);

/* SHA-256 of the tokenized dataset (n, offsets, ids, labels, each value
 * as little-endian int64 / int32), for a checkpoint to refuse resuming on
 * different data: it changes with the file, the tokenizer, the format, the
 * template, train_on_prompt and seq_len, i.e. everything the loader sees. */
void qt_dataset_hash(const qt_dataset *ds, uint8_t digest[32]);

void qt_dataset_free(qt_dataset *ds);

#endif
