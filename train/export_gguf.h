/* train/export_gguf.h — `qlora-train export --format gguf|gguf-lora`
 * (DESIGN.md section 5): the merged model (or the base alone) as one GGUF
 * file for llama.cpp / Ollama, or the adapter alone in llama.cpp's LoRA
 * adapter layout. See train/export_gguf.c for what is written. */
#ifndef QT_TRAIN_EXPORT_GGUF_H
#define QT_TRAIN_EXPORT_GGUF_H

#include <stdbool.h>

#include "common/status.h"
#include "model/hf_config.h"
#include "train/session.h"

/* s: the session's config loaded; c: the model's config.json. Either the
 * model is loaded (s->model, with s->lora or without), or, for a base model
 * without adapter, s->model is NULL and every tensor is read from the
 * checkpoint one at a time (F32/F16/BF16 sources; no model in memory).
 * out: the .gguf path (replaced atomically). lora_only: the adapter layout
 * (needs s->model and s->lora). */
qt_status qt_export_gguf(qt_session *s, const qt_hf_config *c, const char *out, bool lora_only);

#endif
