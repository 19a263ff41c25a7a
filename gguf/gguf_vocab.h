/* gguf/gguf_vocab.h — a Hugging Face tokenizer as llama.cpp's GGUF
 * tokenizer.* keys, the way convert_hf_to_gguf.py derives them
 * (conversion/base.py _create_vocab_sentencepiece and get_vocab_base,
 * gguf-py vocab.py SpecialVocab; ../shared/docs/reference/gguf.md 2.2).
 *
 * Two layouts:
 *   "llama" (SentencePiece): tokenizer.model (a sentencepiece ModelProto) is
 *     read directly: pieces, scores and types; ids up to vocab_size not in it
 *     become "[PAD<i>]" (UNUSED, score -10000); tokenizer_config.json
 *     added_tokens_decoder entries replace theirs (CONTROL when special or
 *     "<|...|>", else USER_DEFINED with U+2581 turned into a space; score -1000).
 *   "gpt2" (byte-level BPE, tokenizer.json without tokenizer.model): the
 *     vocabulary and added tokens by id (added: CONTROL / USER_DEFINED as
 *     above; others NORMAL; gaps "[PAD<i>]" UNUSED), merges as "a b" (a space
 *     inside a pair element written as U+0120 + its code, as gguf-py does),
 *     and tokenizer.ggml.pre from the pre-tokenizer's split pattern:
 *     Llama-3's pattern is "llama-bpe" when the post-processor adds BOS (as
 *     Meta's Llama-3 does), else "smaug-bpe" (what convert's hash gives such
 *     a tokenizer); Qwen2's (also Qwen3) is "qwen2".
 *     convert_hf_to_gguf.py decides this by hashing a test tokenization; a
 *     pattern we do not know is QT_ERR_UNSUPPORTED rather than a guess.
 * Special token ids: tokenizer_config.json <type>_token looked up among the
 * added tokens, then config.json <type>_token_id (integers only); add_bos /
 * add_eos / add_sep from the tokenizer.json post-processor (TemplateProcessing,
 * ByteLevel), then tokenizer_config.json add_<type>_token; the chat template
 * from tokenizer_config.json chat_template, else chat_template.jinja.
 *
 * Ownership: qt_gguf_vocab owns all strings; qt_gguf_vocab_free. */
#ifndef QT_GGUF_GGUF_VOCAB_H
#define QT_GGUF_GGUF_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "gguf/gguf.h"

enum { QT_GGUF_SPECIAL_COUNT = 7 }; /* bos eos unk sep pad cls mask */

typedef struct {
  const char *model;            /* "llama" | "gpt2" (static) */
  const char *pre;              /* "default" | "llama-bpe" | "smaug-bpe" | "qwen2" (static) */
  size_t n;                     /* tokens (= vocab_size) */
  char **tokens;
  float *scores;                /* "llama" only, else NULL */
  int32_t *types;
  size_t n_merges;
  char **merges;
  int64_t special[QT_GGUF_SPECIAL_COUNT]; /* ids, -1 = unset */
  int add_special[QT_GGUF_SPECIAL_COUNT]; /* -1 unset, 0/1 */
  int add_space_prefix;         /* -1 unset, 0/1 */
  char *chat_template;          /* NULL when none */
} qt_gguf_vocab;

/* dir: the model directory; vocab_size: config.json vocab_size. */
qt_status qt_gguf_vocab_load(const char *dir, int64_t vocab_size, qt_gguf_vocab *v);
/* Adds the tokenizer.* KVs. */
qt_status qt_gguf_vocab_write(const qt_gguf_vocab *v, qt_gguf_writer *w);
void qt_gguf_vocab_free(qt_gguf_vocab *v);

#endif
