// dense[:dtype=f32|f16|bf16|q8|q4]: the matrix itself; apply through OpenBLAS (f32) or the
// factor kernels. Part: "W" (m, n).
#include "op_impl.h"

#include <stdlib.h>

#define D(op) ((sm_factor *)(op)->impl)

static sm_status dense_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    (void)o;
    sm_store store;
    sm_status st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    sm_factor *f = calloc(1, sizeof *f);
    if (!f) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = sm_factor_init(f, op->m, op->n, store, W, op->n);
    if (st != SM_OK) {
        free(f);
        return st;
    }
    op->impl = f;
    sm_canon c;
    sm_canon_init(&c, "dense");
    if (store != SM_STORE_F32) sm_canon_add(&c, "dtype", "%s", sm_store_name(store));
    return sm_op_set_spec(op, &c);
}

static sm_status dense_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    sm_store store;
    sm_status st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    sm_factor *f = calloc(1, sizeof *f);
    if (!f) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = sm_factor_load(f, op->m, op->n, store, "W", parts, nparts);
    if (st != SM_OK) {
        free(f);
        return st;
    }
    op->impl = f;
    return SM_OK;
}

static void dense_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    sm_factor_mm(D(op), N, X, op->n, Y, op->m, 0.0f, work);
}

static void dense_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    sm_factor_mm_t(D(op), N, Y, op->m, X, op->n, 0.0f, work);
}

static size_t dense_workspace(const sm_op *op, int64_t N) {
    return sm_factor_workspace(D(op), N);
}

static sm_status dense_to_dense(const sm_op *op, float *W) {
    sm_factor_decode(D(op), W, op->n);
    return SM_OK;
}

static int64_t dense_nparams(const sm_op *op) {
    return op->m * op->n;
}

static int64_t dense_nbytes(const sm_op *op) {
    return sm_factor_nbytes(D(op));
}

static int dense_parts(const sm_op *op, sm_part *out, int cap) {
    int n = sm_factor_parts(D(op), "W", NULL);
    if (out && cap >= n) sm_factor_parts(D(op), "W", out);
    return n;
}

static void dense_free(void *impl) {
    sm_factor_free(impl);
    free(impl);
}

const sm_op_vtbl sm_vtbl_dense = {
    .name = "dense",
    .keys = "dtype",
    .help = "  dtype=f32    storage: f32, f16, bf16, q8, q4 (q8/q4: groups of 64, F16 scales)",
    .fit = dense_fit,
    .load = dense_load,
    .apply = dense_apply,
    .apply_t = dense_apply_t,
    .workspace = dense_workspace,
    .to_dense = dense_to_dense,
    .nparams = dense_nparams,
    .nbytes = dense_nbytes,
    .macs = dense_nparams,
    .parts = dense_parts,
    .free_impl = dense_free,
};
