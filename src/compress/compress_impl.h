// Internals of structmat compress (include/structmat_compress.h): candidate recipes, the
// allocation, the streaming safetensors writer.
#ifndef SM_COMPRESS_IMPL_H
#define SM_COMPRESS_IMPL_H

#include "structmat_compress.h"

#include "../base/base.h"

// --- recipes: how one candidate is built ---------------------------------------------------------
//
// Candidates that share expensive work are built together in phase 1 (one SVD for every rank and
// factor precision of a low-rank ladder, one BitStack fit for all its level prefixes), and the
// same function rebuilds a single one in phase 3 with the same shared step, so the operator
// written is the one that was measured.
typedef enum sm_recipe_kind {
    SM_RECIPE_FIT = 0, // sm_op_fit(W, base)
    SM_RECIPE_PREFIX,  // the first `a` levels of sm_op_fit(W, base) (bitstack)
    SM_RECIPE_LOWRANK, // rank-a prefix of the rank-rmax (activation-aware) SVD, factors in store
    SM_RECIPE_LORC,    // sm_op_fit(W, base) + rank-a prefix of the residual's rank-rmax SVD
} sm_recipe_kind;

typedef struct sm_recipe {
    int kind;        // sm_recipe_kind
    int method;      // index into sm_method_names
    int group;       // recipes of one group share their base work and are contiguous
    int store;       // sm_store of the low-rank factors
    int64_t a, rmax; // prefix levels or rank; the shared SVD's rank
    char base[112];  // the spec fitted
} sm_recipe;

enum {
    SM_M_DENSE,
    SM_M_RTN,
    SM_M_GPTQ,
    SM_M_ONEBIT,
    SM_M_BITSTACK,
    SM_M_LOWRANK,
    SM_M_MONARCH,
    SM_M_BLAST,
    SM_M_BLOCKDIAG,
    SM_M_SPARSE,
    SM_M_LORC,
    SM_M_PIN, // a --tensor-spec or --uniform spec
    SM_M_COUNT
};
extern const char *const sm_method_names[SM_M_COUNT];

// The candidate ladder of an (m, n) matrix stored as dtype: *out (malloc'd, *n_out recipes).
// methods: a bit per method; calib: whether statistics are given (gptq, activation-aware).
sm_status sm_ladder(int64_t m, int64_t n, sm_dtype dtype, unsigned methods, bool calib, int solver,
                    sm_recipe **out, int *n_out);
// The spec that keeps a matrix stored as dtype exactly ("dense", "dense:dtype=bf16").
const char *sm_keep_spec(sm_dtype dtype);

// Called with each operator built (its recipe index); it is freed after the call returns unless
// the callee sets *op = NULL (taking it).
typedef sm_status (*sm_build_fn)(void *user, int idx, sm_op **op);

// Builds recipes [lo, hi) of one group for W (m, n), or only recipe `only` (lo <= only < hi)
// when only >= 0. Candidates that the shape makes impossible (SM_ERR_SPEC) or whose fit fails
// numerically are skipped (*skipped counts them); other failures are returned.
sm_status sm_build_group(const sm_recipe *rc, int lo, int hi, int only, const float *W, int64_t m,
                         int64_t n, const sm_stats *stats, int solver, uint64_t seed,
                         sm_build_fn fn, void *user, int *skipped);

// --- allocation -------------------------------------------------------------------------------

typedef struct sm_alloc_item {
    int n;                // candidates
    const int64_t *bytes; // (n)
    const double *err;    // (n)
} sm_alloc_item;

// One candidate per item with total bytes <= budget and the summed error as small as the method
// finds (allocate.c): choice (count). SM_ERR_ARG when even the smallest choice exceeds budget.
// *lagrangian_bytes: the total after the Lagrangian stage (optimal for that total), or NULL.
sm_status sm_allocate(const sm_alloc_item *items, int count, int64_t budget, int *choice,
                      int64_t *lagrangian_bytes);

// --- streaming safetensors writer ----------------------------------------------------------------
//
// The data of each tensor is written as it comes (nothing is kept); the header, whose size is
// bounded in advance, is written last into the room reserved for it at the start and padded
// with spaces (which the format allows), so one file is written in one pass.
typedef struct sm_swriter sm_swriter;

sm_status sm_swriter_open(const char *path, int64_t header_room, sm_swriter **out);
// dtype is the safetensors name ("F32", "BF16", ...).
sm_status sm_swriter_add(sm_swriter *w, const char *name, const char *dtype, int ndim,
                         const int64_t *shape, const void *data, size_t nbytes);
// The same for data in a read-only file mapping, written in pieces whose pages are released
// (sm_release_pages) as they are written.
sm_status sm_swriter_add_mapped(sm_swriter *w, const char *name, const char *dtype, int ndim,
                                const int64_t *shape, const void *data, size_t nbytes);
sm_status sm_swriter_meta(sm_swriter *w, const char *key, const char *value);
// Writes the header, fsyncs and closes; the writer is freed in any case.
sm_status sm_swriter_finish(sm_swriter *w);
// Closes and removes the file.
void sm_swriter_abort(sm_swriter *w);
// Header bytes a tensor entry named name takes at most, and a metadata pair.
int64_t sm_swriter_entry_room(const char *name);
int64_t sm_swriter_meta_room(const char *key, const char *value);
// Header bytes operator op stored under name takes at most (sm_swriter_add_op).
int64_t sm_swriter_op_room(const char *name, const sm_op *op);

// Adds operator op under name: a plain tensor for dense f32/f16/bf16, else its parts
// "<name>.<part>" and the metadata structmat.spec.<name>, structmat.shape.<name>.
sm_status sm_swriter_add_op(sm_swriter *w, const char *name, const sm_op *op);

// Drops the pages of a mapped range from the process (they are read again from the file if
// touched): what keeps a streaming pass's resident memory near one matrix.
void sm_release_pages(const void *p, size_t n);

// Writes dir/config.json from the source's config.json with the "structmat" object set
// (format_version) or removed (remove), and copies the tokenizer files next to it.
sm_status sm_copy_config(const char *src_dir, const char *dst_dir, bool remove);

// The budget of the last allocate (0 before).
int64_t sm_compress_budget(const sm_compress *c);

#endif
