/* train/cli.c — the subcommand table. */
#include "train/cli.h"

#include <stddef.h>

const qt_cli_command qt_cli_commands[] = {
    {"inspect", "inspect PATH", qt_cmd_inspect},
    {"tokenize", "tokenize DIR [--bos] [--eos] [--decode] [--skip-special]", qt_cmd_tokenize},
    {"eval", "eval CONFIG.yaml [--checkpoint DIR] [--data FILE] [--set KEY=VALUE]...", qt_cmd_eval},
    {"generate",
     "generate CONFIG.yaml [--checkpoint DIR] --prompt TEXT [--max-new-tokens N] [--temperature T] [--seed N] "
     "[--set KEY=VALUE]...",
     qt_cmd_generate},
    {"export", "export CONFIG.yaml [--checkpoint DIR] [--format peft|merged] [--out DIR] [--set KEY=VALUE]...",
     qt_cmd_export},
    {NULL, NULL, NULL},
};

const qt_cli_fn qt_cli_train = qt_cmd_train;
