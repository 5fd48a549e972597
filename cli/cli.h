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
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_export(int argc, char **argv);
// inspect --super-weights (cli/inspect_super.c): prompt NULL is the default one; prints, returns
// the exit status.
int inspect_super_weights(const char *path, const char *prompt, double ratio, bool json);

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

// The matrices of a checkpoint (cli/matrices.c): a safetensors file, directory or index (2-D
// tensors and structmat operators), a GGUF file (its 2-D tensors), or a model the runtime loads
// (linear layers and the token embedding): llama2.c checkpoints always, any model (GGUF
// included) when need_model.
typedef struct cli_matrix {
    const char *name;
    const char *kind; // dtype name ("F32") of a plain matrix, or an operator's spec
    int64_t rows, cols;
    bool is_op;     // a structmat operator (not plain dense)
    bool embedding; // the token embedding (fit --all leaves it out)
    int64_t linear; // the model's linear layer (sm_model_linear), -1: none
} cli_matrix;

typedef struct cli_matrices {
    const char *path;
    cli_matrix *items; // (n)
    int n;
    sm_st *st;    // a safetensors source, or
    struct sm_model *model; // a model, or
    struct sm_gguf *gguf;   // a GGUF file's 2-D tensors (names and types as the file has them)
} cli_matrices;

// Prints "structmat <cmd>: ..." and returns 1 on failure.
int cli_matrices_open(const char *cmd, const char *path, bool need_model, cli_matrices *ms);
void cli_matrices_close(cli_matrices *ms);
int cli_matrices_find(const cli_matrices *ms, const char *name); // -1: absent
// For a name that is absent: "not a matrix:" (a tensor of another rank) or "no matrix named".
const char *cli_matrices_why_absent(const cli_matrices *ms, const char *name);
// *W (rows, cols) = matrix i as F32, malloc'd.
sm_status cli_matrices_read(const cli_matrices *ms, int i, float **W);

#endif
