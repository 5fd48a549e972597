// The operator interface every structure implements (DESIGN.md, "The operator").
#ifndef SM_OP_IMPL_H
#define SM_OP_IMPL_H

#include "../base/base.h"
#include "../kernels/kernels.h"
#include "spec.h"

#include <limits.h>

struct sm_op {
    const struct sm_op_vtbl *vt;
    int64_t m, n; // rows = out features, cols = in features
    char *spec;   // canonical, malloc'd
    void *impl;   // the structure's own state
};

typedef struct sm_op_vtbl {
    const char *name;
    const char *keys; // allowed spec keys, comma-separated
    const char *help; // one line per key with its default, for `structmat specs`
    // Fills op->impl and op->spec (canonical) for W (m, n); op->m, op->n are set.
    sm_status (*fit)(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o);
    // Rebuilds op->impl from parts (names without any sum prefix); op->spec is set.
    sm_status (*load)(sm_op *op, const sm_term *t, const sm_part *parts, int nparts);
    // Y (N, m) = X (N, n) W^T; work has workspace(N) floats. N * max(m, n) <= INT_MAX (larger
    // batches are cut into chunks by sm_op_apply), so N times a side may be passed to BLAS.
    void (*apply)(const sm_op *op, int64_t N, const float *X, float *Y, float *work);
    // X (N, n) = Y (N, m) W
    void (*apply_t)(const sm_op *op, int64_t N, const float *Y, float *X, float *work);
    size_t (*workspace)(const sm_op *op, int64_t N);
    // SM_ERR_ALLOC (never an abort) when its scratch cannot be allocated.
    sm_status (*to_dense)(const sm_op *op, float *W);
    int64_t (*nparams)(const sm_op *op);
    int64_t (*nbytes)(const sm_op *op);
    int64_t (*macs)(const sm_op *op);
    // Writes up to cap parts into out (views into impl) and returns how many there are.
    int (*parts)(const sm_op *op, sm_part *out, int cap);
    void (*free_impl)(void *impl);
    // fit is a projection: it returns the best operator of the structure for the matrix it is
    // given (in the fit's objective). Sums whose terms all are get alternating refits after the
    // sequential fit (sm_op_fit in op.c).
    bool projection;
} sm_op_vtbl;

extern const sm_op_vtbl sm_vtbl_dense, sm_vtbl_lowrank, sm_vtbl_monarch, sm_vtbl_blockdiag,
    sm_vtbl_blocklowrank, sm_vtbl_kron, sm_vtbl_blast, sm_vtbl_sparse, sm_vtbl_cur, sm_vtbl_rtn,
    sm_vtbl_gptq, sm_vtbl_onebit, sm_vtbl_bitstack;

// --- factors: a (rows, cols) row-major matrix in one of the sm_store formats ---------------------

typedef struct sm_factor {
    int64_t rows, cols;
    sm_store store;
    void *data;       // rows * sm_store_row_bytes(store, cols) bytes
    uint16_t *scales; // q8/q4: (rows, ceil(cols / SM_QGROUP)) F16; NULL otherwise
} sm_factor;

// Parses dtype=f32|f16|bf16|q8|q4 (default f32) of a term.
sm_status sm_store_from_term(const sm_term *t, sm_store *out);
const char *sm_store_name(sm_store s);

// Encodes src (rows, cols) with leading dimension ld into a new factor.
sm_status sm_factor_init(sm_factor *f, int64_t rows, int64_t cols, sm_store store,
                         const float *src, int64_t ld);
void sm_factor_free(sm_factor *f);
// A view of rows [r0, r1) (shares data; do not free).
sm_factor sm_factor_rows(const sm_factor *f, int64_t r0, int64_t r1);
int64_t sm_factor_nbytes(const sm_factor *f);
// out (rows, cols) with leading dimension ldo = the decoded values.
void sm_factor_decode(const sm_factor *f, float *out, int64_t ldo);
// Y (N, rows) [ldy] = X (N, cols) [ldx] F^T  (+ beta * Y)
void sm_factor_mm(const sm_factor *f, int64_t N, const float *X, int64_t ldx, float *Y,
                  int64_t ldy, float beta, float *work);
// X (N, cols) [ldx] = Y (N, rows) [ldy] F  (+ beta * X)
void sm_factor_mm_t(const sm_factor *f, int64_t N, const float *Y, int64_t ldy, float *X,
                    int64_t ldx, float beta, float *work);
// Scratch floats sm_factor_mm / _mm_t need.
size_t sm_factor_workspace(const sm_factor *f, int64_t N);
// Parts named "<name>" (f32/f16/bf16) or "<name>.codes" + "<name>.scales" (q8/q4), 2-D with the
// factor's shape (q4 codes: (rows, ceil(cols/2)) U8). Returns the count written (<= 2).
int sm_factor_parts(const sm_factor *f, const char *name, sm_part *out);
// Loads a factor of the given shape and store from parts (copying), checking names, dtypes and
// byte sizes.
sm_status sm_factor_load(sm_factor *f, int64_t rows, int64_t cols, sm_store store,
                         const char *name, const sm_part *parts, int nparts);

// The factor's parts with a plain (f32/f16/bf16) part reshaped to (d0, d1, cols), d0 d1 = rows;
// quantized factors keep their 2-D ".codes" and ".scales" parts. Returns the count.
int sm_factor_parts_3d(const sm_factor *f, const char *name, int64_t d0, int64_t d1, sm_part *out);
// Loads a factor of (d0 d1, cols) from parts written by sm_factor_parts_3d.
sm_status sm_factor_load_3d(sm_factor *f, int64_t d0, int64_t d1, int64_t cols, sm_store store,
                            const char *name, const sm_part *parts, int nparts);
bool sm_store_quantized(sm_store s);

// Resolves rank= or ratio= (exactly one) into a rank for an (m, n) matrix whose nparams grow by
// per_rank per unit of rank (ratio means nparams / (m n)); per (" per block" or "") and context
// ("for a 30x20 matrix") make the messages say what the limit max_rank comes from.
sm_status sm_resolve_rank(const sm_term *t, int64_t m, int64_t n, int64_t per_rank,
                          int64_t max_rank, const char *per, const char *context, int64_t *rank);
// Per-block rank T of a K x K grid of (m/K, n/K) blocks, nparams = K T (m + n).
sm_status sm_resolve_block_rank(const sm_term *t, int64_t m, int64_t n, int64_t K,
                                int64_t *rank);

// Finds a part by name; SM_ERR_FORMAT naming it when absent.
const sm_part *sm_parts_find(const sm_part *parts, int nparts, const char *name);

// Rows per call that sm_op_apply / _apply_t hand to a structure: 0 means the BLAS limit
// INT_MAX / max(m, n); tests set a small value to exercise the chunked path.
extern int64_t sm_apply_chunk_rows;

// Sets op->spec from a canonical builder.
sm_status sm_op_set_spec(sm_op *op, const sm_canon *c);

// Truncated SVD helpers from linalg, used by several structures.
#include "../linalg/linalg.h"

#endif
