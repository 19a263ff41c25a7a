/* train/cli.c — the subcommand table. */
#include "train/cli.h"

#include <stddef.h>

const qt_cli_command qt_cli_commands[] = {
    {"inspect", "inspect PATH", qt_cmd_inspect},
    {"tokenize", "tokenize DIR [--bos] [--eos] [--decode] [--skip-special]", qt_cmd_tokenize},
    {"eval", "eval CONFIG.yaml [--checkpoint DIR] [--data FILE] [--set KEY=VALUE]...", qt_cmd_eval},
    {"generate",
     "generate CONFIG.yaml [--checkpoint DIR] (--prompt TEXT | --chat [--prompt TEXT] [--system TEXT] | "
     "--prompts FILE.jsonl [--out FILE.jsonl]) [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] "
     "[--min-p P] [--repetition-penalty R] [--seed N] [--stop STRING]... [--context N] [--set KEY=VALUE]...",
     qt_cmd_generate},
    {"export", "export CONFIG.yaml [--checkpoint DIR] [--format peft|merged|gguf|gguf-lora] [--out DIR|FILE.gguf] "
               "[--set KEY=VALUE]...",
     qt_cmd_export},
    {NULL, NULL, NULL},
};

const qt_cli_fn qt_cli_train = qt_cmd_train;
