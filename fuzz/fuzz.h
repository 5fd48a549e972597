// libFuzzer harnesses for every parser structmat has (fuzz/README.md).
//
// Each harness fuzz/fuzz_<target>.c is one function sm_fuzz_<target>(data, size) that feeds the
// input to a parser and, when the parser accepts it, exercises what it built and checks
// invariants against independent facts (sizes from the input, a double-precision reference, a
// round trip). It returns 1 when the input was accepted, 0 when it was refused with an error, and
// aborts (a finding) when an invariant fails. Compiled with SM_FUZZ_ENTRY (the SM_FUZZ build) a
// harness also defines LLVMFuzzerTestOneInput; tests/test_regress_fuzz.c links every harness
// without it and replays tests/regress/<target>/* and the seed corpus.
#ifndef SM_FUZZ_H
#define SM_FUZZ_H

#include "structmat.h"

#include <stddef.h>
#include <stdint.h>

#define SM_FUZZ_TARGETS(X)                                                                         \
    X(safetensors)                                                                                 \
    X(st_index) X(config) X(spec) X(opload) X(llama2c) X(tokenizer) X(model_hf) X(gguf)            \
        X(tokenizer_json)

#define SM_FUZZ_DECL(t) int sm_fuzz_##t(const uint8_t *data, size_t size);
SM_FUZZ_TARGETS(SM_FUZZ_DECL)
#undef SM_FUZZ_DECL

#ifdef SM_FUZZ_ENTRY
#define SM_FUZZ_MAIN(t)                                                                            \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                                  \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {                                 \
        sm_fuzz_##t(data, size);                                                                   \
        return 0;                                                                                  \
    }
#else
#define SM_FUZZ_MAIN(t)
#endif

// Inputs made of several files are the files joined by this line (seeds have it; a mutation
// that breaks it leaves fewer pieces, which the harnesses accept).
#define SM_FUZZ_SEP "\n--sm-fuzz-split--\n"

// An invariant: on failure prints the condition, the message and sm_last_error(), then aborts.
#define SM_FUZZ_CHECK(cond, ...)                                                                   \
    do {                                                                                           \
        if (!(cond)) sm_fuzz_die(__FILE__, __LINE__, #cond, __VA_ARGS__);                          \
    } while (0)
void sm_fuzz_die(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

// Once per process: one thread (deterministic, and the machine is shared).
void sm_fuzz_init(void);
// A private directory for this process's files (on /dev/shm when it exists), removed at exit,
// with one subdirectory per harness (created here), so harnesses in one process never meet.
const char *sm_fuzz_dir(const char *harness);
// sm_fuzz_dir(harness)/name in a buffer owned by the caller (cap bytes).
void sm_fuzz_path(char *buf, size_t cap, const char *harness, const char *name);
// Writes data to path (replacing it); aborts when the disk refuses.
void sm_fuzz_write(const char *path, const void *data, size_t size);
// Splits data at SM_FUZZ_SEP into at most max pieces (the last takes the rest); returns the count.
int sm_fuzz_split(const uint8_t *data, size_t size, const uint8_t **piece, size_t *len, int max);

// Exercises an operator the library built (fitted or loaded): sizes, parts -> from_parts ->
// identical to_dense, apply and apply_t against a double-precision product with to_dense.
// finite: the operator was fitted to a finite matrix, so every value must be finite.
void sm_fuzz_exercise_op(const sm_op *op, bool finite);

// Exercises a loaded model: its info against its operators, a context of a few positions, a
// prefill of two tokens (first and last id) with every token's logits, and one decode step.
typedef struct sm_model sm_model;
void sm_fuzz_exercise_model(const sm_model *m);

// Seeds: emit(ctx, name, data, size) once per seed of target. Names starting with "bad-" are
// inputs the parser must refuse; all others it must accept (tests/test_regress_fuzz.c checks).
typedef void (*sm_fuzz_emit_fn)(void *ctx, const char *name, const void *data, size_t size);
// Returns the number of seeds emitted, or -1 when target is unknown.
int sm_fuzz_seeds(const char *target, sm_fuzz_emit_fn emit, void *ctx);

#endif
