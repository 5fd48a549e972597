// Internal base layer: errors, allocation, assertions, RNG, timing, progress, files.
#ifndef SM_BASE_H
#define SM_BASE_H

#include "structmat.h"

#include <stdio.h>
#include <stdlib.h>

// Records a formatted message for sm_last_error() and returns the status, so callers can write
// `return sm_fail(SM_ERR_SHAPE, "rank %lld > min(m, n) = %lld", ...)`.
sm_status sm_fail(sm_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prefixes the current error message with a context ("file.safetensors: ").
void sm_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void sm_error_clear(void);
// Keeps the current message (an allocation refused by the --max-memory budget) to be appended to
// the next SM_ERR_ALLOC failure on this thread, which would otherwise replace it.
void sm_error_note_budget(void);

// Programmer errors: prints file and line, then aborts (never for bad input).
#define SM_ASSERT(x)                                                                             \
    do {                                                                                         \
        if (!(x)) sm_assert_fail(__FILE__, __LINE__, #x);                                        \
    } while (0)
void sm_assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));

// 64-byte aligned allocation; NULL on failure (or when the size overflows). Free with sm_free.
// All library allocations go through here, so failures can be injected in tests
// (STRUCTMAT_FAIL_ALLOC_AFTER=k makes the k-th and later allocations fail).
void *sm_alloc(size_t bytes);
void *sm_calloc(size_t count, size_t size);
void sm_free(void *p);
// count * size with overflow check; returns 0 and sets *ok = false on overflow.
size_t sm_mul_size(size_t a, size_t b, bool *ok);

// Deterministic RNG (xoshiro256**), seeded by splitmix64.
typedef struct sm_rng {
    uint64_t s[4];
} sm_rng;
void sm_rng_seed(sm_rng *r, uint64_t seed);
uint64_t sm_rng_u64(sm_rng *r);
double sm_rng_uniform(sm_rng *r); // [0, 1)
double sm_rng_normal(sm_rng *r);  // standard normal
void sm_rng_fill_normal(sm_rng *r, float *x, int64_t n, float scale);

double sm_now(void); // monotonic seconds

// Progress line with ETA on a terminal (stderr), silent when stderr is not a tty.
typedef struct sm_progress {
    const char *what;
    int64_t total, done;
    double t0, last;
    bool tty;
} sm_progress;
void sm_progress_init(sm_progress *p, const char *what, int64_t total);
void sm_progress_step(sm_progress *p, int64_t done, const char *item);
void sm_progress_end(sm_progress *p);

// Atomic output: write to a temporary sibling, fsync, rename, fsync the directory.
typedef struct sm_atomic_file {
    FILE *f;
    char *path, *tmp;
} sm_atomic_file;
// SM_ERR_EXISTS if path exists and !force.
sm_status sm_atomic_open(sm_atomic_file *a, const char *path, bool force);
sm_status sm_atomic_commit(sm_atomic_file *a); // closes; on failure the temp file is removed
void sm_atomic_abort(sm_atomic_file *a);       // removes the temp file

// Atomic directory output (a checkpoint of several files): the caller writes its files into
// tmp, a new sibling directory "PATH.tmp-XXXXXX"; commit fsyncs them and tmp, then renames tmp
// into place. An existing PATH (SM_ERR_EXISTS unless force; it must be a directory) is swapped
// with tmp in one step (renameat2 RENAME_EXCHANGE) and then removed, so PATH is at every moment
// the old directory or the new one. A process killed after the swap leaves the old directory
// behind as PATH.tmp-XXXXXX; one killed before leaves the unfinished new one there.
typedef struct sm_atomic_dir {
    char *path, *tmp;
} sm_atomic_dir;
sm_status sm_atomic_dir_open(sm_atomic_dir *d, const char *path, bool force);
sm_status sm_atomic_dir_commit(sm_atomic_dir *d); // on failure tmp is removed, PATH unchanged
void sm_atomic_dir_abort(sm_atomic_dir *d);       // removes tmp and what was written there

// Whole-file read (for small text files such as config.json); NUL-terminated.
sm_status sm_read_file(const char *path, char **data, size_t *size, size_t max_size);

#endif
