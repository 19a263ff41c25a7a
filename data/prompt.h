/* data/prompt.h — dataset records to training examples: prompt formats,
 * chat templates, BOS/EOS and prompt masking.
 *
 * An example is a token sequence with aligned labels, as Hugging Face builds
 * them: labels[i] = ids[i] where position i is a target, -100 where it is
 * not (the loss shifts: the logits at i are scored against labels[i + 1]).
 *
 * Formats (the record fields; see data/dataset.h for how they are read):
 *   text        {"text"}:          [BOS] text EOS; every token a target.
 *   completion  {"prompt","completion"}: [BOS] prompt+completion EOS.
 *   alpaca      {"instruction","input","output"}: the Alpaca prompt of
 *               axolotl's prompters.py (../shared/docs/reference/formats.md
 *               section 7.1; the variant without input when "input" is
 *               missing, null or ""), then output as the completion.
 *   chat        {"messages":[{"role","content"}...]} rendered with a chat
 *               template (below); roles: system, user, assistant.
 *
 * Tokenization and the prompt boundary (completion, alpaca): the joined
 * string prompt+completion is tokenized once, and the first
 * len(encode([BOS] prompt)) tokens are the prompt — what TRL's SFTTrainer
 * (prompt-completion datasets), axolotl's instruct strategies and Stanford
 * Alpaca's train.py do, so ids equal HF tokenizer(prompt + completion).
 * With train_on_prompt false the prompt tokens get label -100; the EOS is
 * always a target.
 *
 * BOS: prepended when the tokenizer adds one: tokenizer_config.json
 * "add_bos_token" when present, otherwise when tokenizer.json's
 * post_processor is a TemplateProcessing whose single-sequence template
 * starts with the BOS token (what tokenizer(text) does in transformers; the
 * Llama-3 and Qwen3 files in ../shared/data add none). EOS (the tokenizer's,
 * see qt_tokenizer_load) ends every example.
 *
 * Chat templates. `auto` reads tokenizer_config.json "chat_template" (a
 * string, or a list of {name, template} whose "default" is used) and
 * recognizes its family: "<|im_start|>" = ChatML (Qwen3's variant when it
 * also handles "</think>" and reasoning_content), "<|start_header_id|>" =
 * Llama-3, "<start_of_turn>" = Gemma (Gemma-2's variant when the template
 * raises 'System role not supported', else Gemma-3's), "<|user|>" with
 * "<|end|>" and "<|system|>" = Phi-3 (Phi-3.5's variant when it tests
 * "'system' and message['content']"; the April 2024 Phi-3-mini and the
 * Phi-3-medium templates, without a system role and with "<|assistant|>\n"
 * after every user turn, are not recognized); anything else is
 * QT_ERR_UNSUPPORTED (set the template in the config; data.chat_template
 * gemma is Gemma-3's template, phi3 is Phi-3-mini-4k-instruct's). Known gap:
 * a ChatML template that inserts a default system message when there is none
 * (Qwen2.5's "You are Qwen, created by Alibaba Cloud...", SmolLM2's) is
 * rendered without it; give such records an explicit system message. Roles
 * other than system, user and assistant are refused with every template
 * (Gemma's would render a "tool" turn at an odd index, Phi-3's drop it).
 * Each renders what transformers' apply_chat_template renders with that
 * template (tools/reference/make_dataset_fixtures.py checks it):
 *   chatml  per message "<|im_start|>{role}\n{content}<|im_end|>\n".
 *   qwen3   the Qwen3 template without tools: a leading system message
 *           first; assistant turns after the last user query get
 *           "<think>\n{reasoning}\n</think>\n\n" before the content when
 *           they are the last message or have reasoning (from a
 *           "reasoning_content" field or a "<think>...</think>" prefix of
 *           the content, which is split off as the template does).
 *   llama3  "{bos}" once, then per message
 *           "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>"
 *           (trim = Python str.strip()).
 *   gemma   "{bos}", then the messages after a leading system message, which
 *           must alternate user, model, user... (a non-user role at an odd
 *           index passes the template's check and is rendered with its own
 *           name), each "<start_of_turn>{role}\n{content|trim}<end_of_turn>\n"
 *           with role assistant written "model". Gemma-3: a leading system
 *           message's content + "\n\n" (untrimmed) goes before the first
 *           turn's content; Gemma-2: a leading system message is an error,
 *           as the template raises. Records must hold string contents (the
 *           parser rejects Gemma-3's lists of {type, text} parts).
 *   phi3    per message "<|{role}|>\n{content}<|end|>\n" (Phi-3.5: a system
 *           message with empty content is skipped).
 * Sources of the template strings: tools/reference/make_dataset_fixtures.py.
 * The text ends right after the end-of-turn token of the last message:
 * whatever the template renders after it (Qwen's "\n" separator, the
 * generation prompt that this Llama-3 template appends unconditionally) is
 * dropped (Phi-3's eos_token after the last "<|end|>\n" too, then appended
 * as EOS below; Phi-3's <|end|> has rstrip, so its "\n" makes no token
 * anyway). The text is tokenized as one string (add_special_tokens=False, as
 * apply_chat_template(tokenize=True)); BOS is prepended only if the
 * tokenizer adds one and the text does not already start with it; EOS is
 * appended unless the last token already is EOS (Qwen3: <|im_end|> is EOS).
 *
 * Chat masking (train_on_prompt false), as TRL's assistant-only loss and
 * axolotl's chat_template strategy (roles_to_train assistant, train_on_eos
 * turn): the targets are, for every assistant message, what the model
 * produces after the generation prompt ("<|im_start|>assistant\n" /
 * "<|start_header_id|>assistant<|end_header_id|>\n\n" /
 * "<start_of_turn>model\n" / "<|assistant|>\n"): the content (with Qwen3's
 * think block) and the turn's end-of-turn token (<|im_end|> / <|eot_id|> /
 * <end_of_turn> / <|end|>); plus the appended EOS when the last message is the
 * assistant's. Everything else (system and user turns, role headers, the
 * separators) is -100. Span boundaries in tokens are len(encode(text[:b]))
 * for each boundary byte b (the fixture script checks that this equals the
 * boundaries TRL gets from the offset mapping). A conversation without an
 * assistant message is a bad record (nothing to train on), and so is one
 * the template raises on (Gemma: roles not alternating, a leading system
 * message in Gemma-2); the message quotes the template's exception.
 *
 * Fields may hold any bytes: data/dataset.c replaces invalid UTF-8 with
 * U+FFFD before parsing (Python's decode("utf-8", "replace")), the string
 * helpers here never read past a field, and the tokenizer sanitizes what it
 * encodes. */
#ifndef QT_DATA_PROMPT_H
#define QT_DATA_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "data/tokenizer.h"

typedef enum {
  QT_DATA_FMT_TEXT = 0,
  QT_DATA_FMT_COMPLETION,
  QT_DATA_FMT_ALPACA,
  QT_DATA_FMT_CHAT
} qt_data_format;

/* What the config asks for (data.chat_template). */
typedef enum { QT_CHAT_AUTO = 0, QT_CHAT_CHATML, QT_CHAT_LLAMA3, QT_CHAT_GEMMA, QT_CHAT_PHI3 } qt_chat_choice;
/* What is rendered. */
typedef enum {
  QT_CHAT_KIND_NONE = 0,
  QT_CHAT_KIND_CHATML,
  QT_CHAT_KIND_QWEN3,
  QT_CHAT_KIND_LLAMA3,
  QT_CHAT_KIND_GEMMA,
  QT_CHAT_KIND_PHI3
} qt_chat_kind;
/* Variants of a kind (qt_prompt.chat_flags), found in the template text. */
enum {
  QT_CHAT_FLAG_NO_SYSTEM = 1,         /* gemma: Gemma-2's template, a leading system message raises */
  QT_CHAT_FLAG_SKIP_EMPTY_SYSTEM = 2  /* phi3: Phi-3.5's template, an empty system message is dropped */
};

enum { QT_LABEL_IGNORE = -100 };

/* A string field of a record: s[0..n) (not necessarily NUL-terminated);
 * s == NULL means absent / null. */
typedef struct {
  const char *s;
  size_t n;
} qt_str;

typedef struct {
  qt_str role, content, reasoning; /* reasoning: "reasoning_content" (optional) */
} qt_chat_msg;

/* One record's fields, borrowed from the parsed JSON (data/dataset.c). */
typedef struct {
  qt_str text;                        /* text */
  qt_str prompt, completion;          /* completion */
  qt_str instruction, input, output;  /* alpaca (input may be absent) */
  const qt_chat_msg *msgs;            /* chat */
  size_t n_msgs;
} qt_record;

/* An example under construction (caller-owned, zero-initialize, reuse). */
typedef struct {
  int32_t *ids, *labels; /* (n) */
  size_t n, cap;
} qt_example;
void qt_example_free(qt_example *e);

typedef struct {
  qt_tokenizer *tok;      /* borrowed */
  qt_data_format format;
  qt_chat_kind chat;      /* QT_CHAT_KIND_NONE unless format is chat */
  unsigned chat_flags;    /* QT_CHAT_FLAG_* of the template (0 for explicit choices) */
  int train_on_prompt;
  int add_bos;            /* the tokenizer adds BOS (see above) */
  int32_t bos_id, eos_id; /* eos_id >= 0 always; bos_id -1 when none */
  char *bos_text;         /* the BOS token string rendered by llama3, gemma ("" if none; owned) */
  /* scratch (owned) */
  qt_text_buf render;
  qt_token_ids enc;
  size_t *spans;          /* byte spans [a, b) of targets in render, 2 per span */
  size_t n_spans, cap_spans;
} qt_prompt;

/* Sets up p for records of `format` tokenized by tok, which was loaded from
 * tokenizer_path (the directory or tokenizer.json path given to
 * qt_tokenizer_load; its tokenizer_config.json and tokenizer.json are read
 * for add_bos_token, the post_processor and chat_template). choice is used
 * for the chat format only. Errors: no EOS token (QT_ERR_FORMAT), chat
 * without a recognizable template (QT_ERR_UNSUPPORTED), unreadable files.
 * p borrows tok; free with qt_prompt_free. */
qt_status qt_prompt_init(qt_prompt *p, qt_tokenizer *tok, const char *tokenizer_path,
                         qt_data_format format, qt_chat_choice choice, int train_on_prompt);
void qt_prompt_free(qt_prompt *p);

/* Builds the example of one record into *out (overwritten). Errors
 * (QT_ERR_FORMAT: a missing field, an unknown role, no assistant message)
 * carry no file name; the caller adds file:line. */
qt_status qt_prompt_build(qt_prompt *p, const qt_record *r, qt_example *out);

/* Renders a chat record as text (the part that is tokenized) into out, for
 * inspection and tests; spans receives the target byte spans if non-NULL
 * (2 entries per span, valid until the next call). */
qt_status qt_prompt_render_chat(qt_prompt *p, const qt_record *r, const qt_text_buf **text,
                                const size_t **spans, size_t *n_spans);

/* Generation (`qlora-train generate --chat`): msgs rendered with p's chat
 * template as above but whole (the separator after the last turn kept), then
 * the template's add_generation_prompt block: "<|im_start|>assistant\n"
 * (chatml, qwen3 with enable_thinking unset),
 * "<|start_header_id|>assistant<|end_header_id|>\n\n" (llama3),
 * "<start_of_turn>model\n" (gemma) or "<|assistant|>\n" (phi3) — what
 * apply_chat_template(msgs, add_generation_prompt=True) renders
 * (tools/reference/make_generate_fixtures.py checks it). Any sequence of
 * system/user/assistant messages ending in a non-assistant one; p must have a
 * chat kind. text is valid until the next call on p. */
qt_status qt_prompt_render_generation(qt_prompt *p, const qt_chat_msg *msgs, size_t n,
                                      const qt_text_buf **text);
/* The rendered text tokenized as chat training data is (one string,
 * add_special_tokens=False, BOS prepended when the tokenizer adds one and
 * the text lacks it), into out (overwritten). */
qt_status qt_prompt_encode_generation(qt_prompt *p, const qt_chat_msg *msgs, size_t n,
                                      qt_token_ids *out);
/* The id of the template's end-of-turn token (<|im_end|>, <|eot_id|>,
 * <end_of_turn>, <|end|>), or -1. */
int32_t qt_prompt_end_of_turn_id(const qt_prompt *p);

/* Stable lower-case names ("text", "chatml", ...). */
const char *qt_data_format_name(qt_data_format f);
const char *qt_chat_kind_name(qt_chat_kind k);

#endif
