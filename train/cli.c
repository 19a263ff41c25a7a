/* train/cli.c — the subcommand table. */
#include "train/cli.h"

#include <stddef.h>

const qt_cli_command qt_cli_commands[] = {
    {"inspect", "inspect PATH", qt_cmd_inspect},
    {"tokenize", "tokenize DIR [--bos] [--eos] [--decode] [--skip-special]", qt_cmd_tokenize},
    {NULL, NULL, NULL},
};

const qt_cli_fn qt_cli_train = NULL;
