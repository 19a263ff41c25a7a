/* train/cli.h — subcommand table of the qlora-train program.
 * Each subcommand lives in its own train/cmd_<name>.c and is listed in
 * train/cli.c. argv excludes the program and subcommand names. */
#ifndef QT_TRAIN_CLI_H
#define QT_TRAIN_CLI_H

#include "common/status.h"

typedef qt_status (*qt_cli_fn)(int argc, char **argv);

typedef struct {
  const char *name;
  const char *usage;
  qt_cli_fn run;
} qt_cli_command;

/* Terminated by {NULL, NULL, NULL}. */
extern const qt_cli_command qt_cli_commands[];
/* `qlora-train CONFIG.yaml ...` */
extern const qt_cli_fn qt_cli_train;

/* Subcommands (train/cmd_<name>.c). */
qt_status qt_cmd_inspect(int argc, char **argv); /* inspect PATH */
qt_status qt_cmd_tokenize(int argc, char **argv); /* tokenize DIR [--bos] [--eos] [--decode] */
qt_status qt_cmd_train(int argc, char **argv);    /* CONFIG.yaml [--set K=V]... */
qt_status qt_cmd_eval(int argc, char **argv);
qt_status qt_cmd_generate(int argc, char **argv);
qt_status qt_cmd_export(int argc, char **argv);

#endif
