/* data/tokenizer.h — Hugging Face tokenizer.json, encode and decode.
 *
 * Supported (everything else is QT_ERR_UNSUPPORTED naming the file and type):
 *   model         BPE: vocab + merges ("a b" strings or ["a","b"] pairs),
 *                 byte_fallback, unk_token + fuse_unk, ignore_merges,
 *                 continuing_subword_prefix, end_of_word_suffix (no dropout).
 *   normalizer    Sequence, Prepend, Replace (String or Regex), NFC, NFD, NFKC,
 *                 NFKD (utf8proc), Lowercase, Strip.
 *   pre_tokenizer Sequence, Split (String or Regex pattern; behaviors Removed,
 *                 Isolated, MergedWithPrevious, MergedWithNext, Contiguous;
 *                 invert), ByteLevel (add_prefix_space, use_regex), Metaspace
 *                 (replacement, prepend_scheme always|first|never, split),
 *                 Digits, Punctuation, WhitespaceSplit.
 *   decoder       Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel,
 *                 Metaspace.
 *   added_tokens  matched leftmost-longest in the raw text (normalized=false)
 *                 or in the normalized text (normalized=true), honoring
 *                 lstrip, rstrip and single_word, as tokenizers'
 *                 AddedVocabulary does; special and non-special alike.
 * Families this covers: Llama-2 / Mistral / TinyLlama / stories260K
 * (SentencePiece-style BPE with byte fallback) and Llama-3 / Qwen2 / Qwen3 /
 * GPT-2 (byte-level BPE with a regex pre-tokenizer).
 *
 * Regex patterns carried by tokenizer.json are compiled with PCRE2 (UTF, UCP,
 * JIT). tokenizers compiles them with Oniguruma, whose \s is the Unicode
 * White_Space property; PCRE2's \s also matches U+180E, so \s and \S are
 * rewritten to \p{White_Space} / \P{White_Space} before compiling.
 *
 * Unicode versions: tokenizers 0.23.3 classifies and normalizes with Unicode
 * 16 tables (Oniguruma, unicode-normalization); Debian 12's PCRE2 10.42
 * knows Unicode 14 and utf8proc 2.6 Unicode 13. Characters assigned after
 * those versions count as unassigned here, so text containing them can
 * pre-tokenize (\p{L}, \p{N}) or NFC-normalize differently. Measured: a sweep
 * of every code point U+0001..U+31FFF (17,043 strings) gives identical ids
 * for stories260K and Llama-2, and differs in 12 (Llama-3) and 11 (Qwen3)
 * strings, each containing such recent characters (e.g. Garay, Kawi, Kirat
 * Rai, Unicode 14 Arabic marks). Newer PCRE2 / utf8proc builds close the gap.
 *
 * JSON keys are matched case-sensitively. A key repeated within one object of
 * the pipeline (e.g. two "type" or "merges") is a format error; tokenizers
 * rejects some of these and silently keeps the last of others. Inside
 * model.vocab the last duplicate wins, and a repeated merge takes the later
 * rank, as in tokenizers. Added-token ids follow tokenizers' rules (an id
 * already in the vocabulary, else the next free one, in file order); a
 * different "id" in the file is logged as a warning.
 *
 * Invalid UTF-8: tokenizers takes Rust strings, which cannot hold invalid
 * UTF-8, so its Python binding never sees such bytes. qlora-train replaces
 * each maximal invalid subsequence with U+FFFD before encoding — exactly what
 * Python's bytes.decode("utf-8", "replace") does — so encode(raw bytes) ==
 * HF encode(raw.decode("utf-8", "replace")).
 *
 * The post_processor is not applied: encode adds BOS/EOS only when asked
 * (QT_TOK_ADD_BOS / QT_TOK_ADD_EOS), like add_special_tokens=False plus an
 * explicit BOS/EOS.
 *
 * Thread safety: a qt_tokenizer holds scratch buffers and a word cache, so
 * encode/decode on one object must not run concurrently; load one per thread
 * (or serialize calls).
 */
#ifndef QT_DATA_TOKENIZER_H
#define QT_DATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct qt_tokenizer qt_tokenizer;

/* A growable id array owned by the caller; zero-initialize, reuse across
 * calls, release with qt_token_ids_free. */
typedef struct {
  int32_t *ids;
  size_t n, cap;
} qt_token_ids;
void qt_token_ids_free(qt_token_ids *v);

/* A growable byte string (NUL-terminated after each decode). */
typedef struct {
  char *s;
  size_t n, cap;
} qt_text_buf;
void qt_text_buf_free(qt_text_buf *b);

enum {
  QT_TOK_ADD_BOS = 1 << 0, /* prepend bos_id (error if the tokenizer has none) */
  QT_TOK_ADD_EOS = 1 << 1, /* append eos_id (error if the tokenizer has none) */
};

/* Loads PATH: a directory holding tokenizer.json (and optionally config.json
 * and tokenizer_config.json for BOS/EOS), or a path to a tokenizer.json file
 * (its directory is searched for the config files). BOS/EOS ids: config.json
 * bos_token_id / eos_token_id (the first one when a list), else
 * tokenizer_config.json bos_token / eos_token (string or {"content":..})
 * looked up in the added tokens and vocabulary; -1 when neither says.
 * On success *out owns everything; free with qt_tokenizer_free. */
qt_status qt_tokenizer_load(const char *path, qt_tokenizer **out);

/* Same from an in-memory tokenizer.json (json[0..len)); `name` is used in
 * error messages. BOS/EOS are -1 (set them with qt_tokenizer_set_bos_eos). */
qt_status qt_tokenizer_load_json(const char *json, size_t len, const char *name,
                                 qt_tokenizer **out);
void qt_tokenizer_free(qt_tokenizer *t);

/* 1 + the largest id of the vocabulary and added tokens. */
int32_t qt_tokenizer_vocab_size(const qt_tokenizer *t);
int32_t qt_tokenizer_bos_id(const qt_tokenizer *t); /* -1 if unknown */
int32_t qt_tokenizer_eos_id(const qt_tokenizer *t); /* -1 if unknown */
void qt_tokenizer_set_bos_eos(qt_tokenizer *t, int32_t bos, int32_t eos);
/* The id of a token string (added tokens first, then the vocabulary), or -1. */
int32_t qt_tokenizer_token_id(const qt_tokenizer *t, const char *token);
/* The token string of an id (NUL-terminated, owned by t), or NULL. */
const char *qt_tokenizer_id_token(const qt_tokenizer *t, int32_t id);

/* Encodes text[0..len) (any bytes; invalid UTF-8 replaced, see above) into
 * out (overwritten: out->n = number of ids). flags: QT_TOK_ADD_BOS|_EOS. */
qt_status qt_tokenizer_encode(qt_tokenizer *t, const char *text, size_t len, unsigned flags,
                              qt_token_ids *out);

/* Decodes ids[0..n) into out (overwritten, NUL-terminated, valid UTF-8), with
 * the tokenizer.json decoder chain like tokenizers' Tokenizer.decode;
 * skip_special drops added tokens marked special. An id outside the
 * vocabulary is QT_ERR_INVALID (tokenizers silently drops it). */
qt_status qt_tokenizer_decode(qt_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                              qt_text_buf *out);

/* Replaces invalid UTF-8 in s[0..len) with U+FFFD (one per maximal invalid
 * subpart, as Python's bytes.decode("utf-8", "replace") and Rust's
 * String::from_utf8_lossy do) into out (overwritten, NUL-terminated).
 * *was_valid (may be NULL) is set to 1 if s was already valid UTF-8. */
qt_status qt_utf8_sanitize(const char *s, size_t len, qt_text_buf *out, int *was_valid);

#endif
