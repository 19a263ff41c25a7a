/* bench/bench_tokenizer.c — tokenizer encode throughput, one thread.
 *
 *   bench_tokenizer [--passes N] [--text FILE.jsonl] [TOKENIZER_DIR...]
 *
 * Encodes every {"text": ...} of FILE (default: ../shared/data/tinystories/
 * train.jsonl) with add_special_tokens=False semantics, once with a fresh
 * tokenizer ("cold": empty word cache) and then N-1 more times ("warm").
 * Prints MB/s of UTF-8 input and an FNV-1a 64 checksum of all ids (little-
 * endian u32), which bench/bench_tokenizer_hf.py prints for Hugging Face
 * tokenizers on the same text: equal checksums = identical ids. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "data/tokenizer.h"

#ifndef QLORA_SHARED_DIR
#define QLORA_SHARED_DIR "../shared"
#endif

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
  char **s;
  size_t *n;
  size_t count, bytes;
} texts;

static int load_texts(const char *path, texts *t) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "bench_tokenizer: cannot open %s\n", path);
    return 0;
  }
  char *line = NULL;
  size_t cap = 0, lcap = 0;
  ssize_t len;
  memset(t, 0, sizeof *t);
  while ((len = getline(&line, &cap, f)) > 0) {
    cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, "text");
    if (cJSON_IsString(x)) {
      if (t->count == lcap) {
        lcap = lcap ? lcap * 2 : 1024;
        t->s = realloc(t->s, lcap * sizeof *t->s);
        t->n = realloc(t->n, lcap * sizeof *t->n);
        if (!t->s || !t->n) abort();
      }
      t->n[t->count] = strlen(x->valuestring);
      t->s[t->count] = strdup(x->valuestring);
      if (!t->s[t->count]) abort();
      t->bytes += t->n[t->count++];
    }
    cJSON_Delete(j);
  }
  free(line);
  fclose(f);
  return t->count > 0;
}

int main(int argc, char **argv) {
  const char *text_path = QLORA_SHARED_DIR "/data/tinystories/train.jsonl";
  const char *defaults[] = {QLORA_SHARED_DIR "/data/stories260K", QLORA_SHARED_DIR "/data/tokenizers/llama2",
                            QLORA_SHARED_DIR "/data/tokenizers/llama3", QLORA_SHARED_DIR "/data/tokenizers/qwen3"};
  const char *dirs[16];
  int nd = 0, passes = 5;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--passes") == 0 && i + 1 < argc) passes = atoi(argv[++i]);
    else if (strcmp(argv[i], "--text") == 0 && i + 1 < argc) text_path = argv[++i];
    else if (nd < 16) dirs[nd++] = argv[i];
  }
  if (passes < 1) passes = 1;
  if (nd == 0)
    for (; nd < 4; nd++) dirs[nd] = defaults[nd];
  texts tx;
  if (!load_texts(text_path, &tx)) return 1;
  printf("text: %s (%zu documents, %.3f MB)\n", text_path, tx.count, (double)tx.bytes / 1e6);
  printf("%-40s %8s %10s %10s %10s %18s\n", "tokenizer", "load_s", "tokens", "cold_MB/s", "warm_MB/s",
         "ids_fnv1a64");
  qt_token_ids ids = {0};
  for (int d = 0; d < nd; d++) {
    double t0 = now_s();
    qt_tokenizer *tok;
    qt_status st = qt_tokenizer_load(dirs[d], &tok);
    if (st != QT_OK) {
      fprintf(stderr, "bench_tokenizer: %s\n", qt_error_message());
      return 1;
    }
    double load = now_s() - t0, cold = 0, warm = 1e30;
    uint64_t h = 0;
    size_t tokens = 0;
    for (int p = 0; p < passes; p++) {
      uint64_t hp = 0xcbf29ce484222325ull;
      size_t tp = 0;
      double a = now_s();
      for (size_t i = 0; i < tx.count; i++) {
        if (qt_tokenizer_encode(tok, tx.s[i], tx.n[i], 0, &ids) != QT_OK) {
          fprintf(stderr, "bench_tokenizer: %s\n", qt_error_message());
          return 1;
        }
        tp += ids.n;
        for (size_t k = 0; k < ids.n; k++) {
          uint32_t v = (uint32_t)ids.ids[k];
          for (int b = 0; b < 4; b++) {
            hp ^= (v >> (8 * b)) & 0xFF;
            hp *= 0x100000001b3ull;
          }
        }
      }
      double el = now_s() - a;
      if (p == 0) {
        cold = el;
        h = hp;
        tokens = tp;
      } else if (el < warm) {
        warm = el;
      }
    }
    printf("%-40s %8.3f %10zu %10.2f %10.2f %018llx\n", dirs[d], load, tokens, (double)tx.bytes / 1e6 / cold,
           passes > 1 ? (double)tx.bytes / 1e6 / warm : 0.0, (unsigned long long)h);
    qt_tokenizer_free(tok);
  }
  qt_token_ids_free(&ids);
  for (size_t i = 0; i < tx.count; i++) free(tx.s[i]);
  free(tx.s);
  free(tx.n);
  return 0;
}
