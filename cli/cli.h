// Shared pieces of the command-line program: each command is cmd_<name>(argc, argv).
#ifndef SM_CLI_H
#define SM_CLI_H

#include "structmat.h"

#include <stdbool.h>
#include <stdio.h>

int cmd_inspect(int argc, char **argv);
int cmd_fit(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_specs(int argc, char **argv);

// Common options every command takes.
typedef struct cli_common {
    int threads;   // --threads N (0: all cores)
    uint64_t seed; // --seed S
    bool json;     // --json
    bool force;    // --force
    const char *out; // -o OUT
} cli_common;

// If argv[*i] is a common option, consumes it (and its value) and returns 1; returns -1 on a
// malformed value (message printed), 0 when the option is not a common one.
int cli_common_arg(cli_common *c, int argc, char **argv, int *i);
// The value of option argv[*i]; advances *i; prints an error and returns NULL when missing.
const char *cli_value(int argc, char **argv, int *i);
bool cli_is_help(const char *a);
// Prints "structmat <cmd>: <msg>" with the library's last error and returns 1.
int cli_fail(const char *cmd, const char *what);
// Refuses, before any work, an output path that could not be written at the end: empty, a
// directory, an existing file without --force, or in a directory that does not exist or cannot
// be written. Prints and returns 1.
int cli_check_output(const char *cmd, const char *path, bool force);
// JSON string escaping into f.
void cli_json_str(FILE *f, const char *s);

#endif
