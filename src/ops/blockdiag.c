// blockdiag:blocks=K[,dtype=..]
// W (m, n) ~ diag(D_0, ..., D_{K-1}) with contiguous blocks: block i maps input columns
// [i n/K, (i+1) n/K) to output rows [i m/K, (i+1) m/K). Copying the diagonal blocks is the exact
// Frobenius-optimal projection (the off-diagonal entries cannot be represented at all).
// With a calibration Gram (sm_fit_opts.stats) the fit minimises tr(dW (H + lambda I) dW^T)
// (actaware.h). Rows never couple and block row i has one free block B on columns J, so the
// optimum is the least-squares solution B = W_i H'[:, J] (H'_JJ)^-1, W_i the block row's full
// rows: the weights outside the diagonal block are folded into it through the input correlations.
// With only per-channel sums (a diagonal H) that is the plain copy.
// Part: "D" (K, m/K, n/K) (q8/q4: "D.codes", "D.scales" 2-D over the (m, n/K) rows).
#include "actaware.h"
#include "op_impl.h"

#include <cblas.h>
#include <lapacke.h>

#include <stdlib.h>
#include <string.h>

// --- blockdiag --------------------------------------------------------------------------------

typedef struct blockdiag {
    int64_t K, mb, nb; // blocks; block shape (m/K, n/K)
    sm_factor D;       // (m, n/K): block i = rows [i mb, (i+1) mb)
} blockdiag;

#define BD(op) ((blockdiag *)(op)->impl)

static void blockdiag_free(void *impl) {
    blockdiag *b = impl;
    sm_factor_free(&b->D);
    free(b);
}

static sm_status blockdiag_blocks(const sm_term *t, int64_t m, int64_t n, int64_t *K) {
    if (!sm_term_find(t, "blocks"))
        return sm_fail(SM_ERR_SPEC, "blockdiag: needs blocks=K (K dividing both dimensions)");
    sm_status st = sm_term_int(t, "blocks", 0, 1, INT64_MAX, K);
    if (st != SM_OK) return st;
    if (m % *K || n % *K)
        return sm_fail(SM_ERR_SPEC,
                       "blockdiag: blocks=%lld does not divide the %lldx%lld matrix "
                       "(K must divide both out=%lld and in=%lld)",
                       (long long)*K, (long long)m, (long long)n, (long long)m, (long long)n);
    return SM_OK;
}

static blockdiag *blockdiag_new(int64_t K, int64_t m, int64_t n) {
    blockdiag *b = calloc(1, sizeof *b);
    if (b) {
        b->K = K;
        b->mb = m / K;
        b->nb = n / K;
    }
    return b;
}

// D (m, nb) := the activation-aware blocks (see the top): per block i, with Y = W_i H'[:, J]
// (mb, nb), B^T = H'_JJ^-1 Y^T by the Cholesky factor of H'_JJ.
static sm_status blockdiag_fit_act(const float *W, int64_t m, int64_t n, int64_t K,
                                   const sm_stats *s, float *D) {
    sm_act_blocks ab;
    sm_status st = sm_act_blocks_init(s, n, K, &ab);
    if (st != SM_OK) return st;
    int64_t mb = m / K, nb = n / K;
    double *Wi = sm_alloc((size_t)(mb * n) * sizeof(double));  // (mb, n)
    double *Yt = sm_alloc((size_t)(nb * mb) * sizeof(double)); // (nb, mb)
    double *HJ = sm_alloc((size_t)(n * nb) * sizeof(double));  // (n, nb) = H'[:, J]
    if (!Wi || !Yt || !HJ) st = sm_fail(SM_ERR_ALLOC, "blockdiag: out of memory");
    for (int64_t i = 0; i < K && st == SM_OK; i++) {
        for (int64_t r = 0; r < mb * n; r++) Wi[r] = W[i * mb * n + r];
        for (int64_t a = 0; a < n; a++)
            for (int64_t c = 0; c < nb; c++)
                HJ[a * nb + c] = ab.gram[a * n + i * nb + c] + (a == i * nb + c ? ab.lambda : 0.0);
        // Y^T = (W_i HJ)^T = HJ^T W_i^T
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)nb, (int)mb, (int)n, 1.0, HJ,
                    (int)nb, Wi, (int)n, 0.0, Yt, (int)mb);
        lapack_int info = LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'L', (lapack_int)nb, (lapack_int)mb,
                                         ab.C + i * nb * nb, (lapack_int)nb, Yt, (lapack_int)mb);
        if (info != 0) st = sm_fail(SM_ERR_NUMERIC, "blockdiag: dpotrs info %d", (int)info);
        for (int64_t r = 0; r < mb && st == SM_OK; r++)
            for (int64_t c = 0; c < nb; c++) D[(i * mb + r) * nb + c] = (float)Yt[c * mb + r];
    }
    sm_free(Wi), sm_free(Yt), sm_free(HJ);
    sm_act_blocks_free(&ab);
    return st;
}

static sm_status blockdiag_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    int64_t K, m = op->m, n = op->n;
    sm_store store;
    sm_status st = blockdiag_blocks(t, m, n, &K);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    blockdiag *b = blockdiag_new(K, m, n);
    float *D = sm_alloc((size_t)(m * (n / K)) * sizeof(float)); // (m, nb)
    if (!b || !D) {
        free(b), sm_free(D);
        return sm_fail(SM_ERR_ALLOC, "blockdiag: out of memory");
    }
    if (o && o->stats && o->stats->gram) {
        st = blockdiag_fit_act(W, m, n, K, o->stats, D);
        if (st != SM_OK) {
            free(b), sm_free(D);
            return st;
        }
    } else {
        for (int64_t i = 0; i < K; i++)
            for (int64_t r = 0; r < b->mb; r++)
                memcpy(D + (i * b->mb + r) * b->nb, W + (i * b->mb + r) * n + i * b->nb,
                       (size_t)b->nb * sizeof(float));
    }
    st = sm_factor_init(&b->D, m, b->nb, store, D, b->nb);
    sm_free(D);
    if (st != SM_OK) {
        free(b);
        return st;
    }
    op->impl = b;
    sm_canon c;
    sm_canon_init(&c, "blockdiag");
    sm_canon_add(&c, "blocks", "%lld", (long long)K);
    if (store != SM_STORE_F32) sm_canon_add(&c, "dtype", "%s", sm_store_name(store));
    return sm_op_set_spec(op, &c);
}

static sm_status blockdiag_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t K;
    sm_store store;
    sm_status st = blockdiag_blocks(t, op->m, op->n, &K);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    blockdiag *b = blockdiag_new(K, op->m, op->n);
    if (!b) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = sm_factor_load_3d(&b->D, K, b->mb, b->nb, store, "D", parts, nparts);
    if (st != SM_OK) {
        free(b);
        return st;
    }
    op->impl = b;
    return SM_OK;
}

static size_t blockdiag_workspace(const sm_op *op, int64_t N) {
    return sm_factor_workspace(&BD(op)->D, N);
}

static void blockdiag_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const blockdiag *b = BD(op);
    for (int64_t i = 0; i < b->K; i++) {
        sm_factor Di = sm_factor_rows(&b->D, i * b->mb, (i + 1) * b->mb); // (mb, nb)
        sm_factor_mm(&Di, N, X + i * b->nb, op->n, Y + i * b->mb, op->m, 0.0f, work);
    }
}

static void blockdiag_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const blockdiag *b = BD(op);
    for (int64_t i = 0; i < b->K; i++) {
        sm_factor Di = sm_factor_rows(&b->D, i * b->mb, (i + 1) * b->mb);
        sm_factor_mm_t(&Di, N, Y + i * b->mb, op->m, X + i * b->nb, op->n, 0.0f, work);
    }
}

static sm_status blockdiag_to_dense(const sm_op *op, float *W) {
    const blockdiag *b = BD(op);
    memset(W, 0, (size_t)(op->m * op->n) * sizeof(float));
    for (int64_t i = 0; i < b->K; i++) {
        sm_factor Di = sm_factor_rows(&b->D, i * b->mb, (i + 1) * b->mb);
        sm_factor_decode(&Di, W + i * b->mb * op->n + i * b->nb, op->n);
    }
    return SM_OK;
}

static int64_t blockdiag_nparams(const sm_op *op) {
    return op->m * BD(op)->nb;
}

static int64_t blockdiag_nbytes(const sm_op *op) {
    return sm_factor_nbytes(&BD(op)->D);
}

static int blockdiag_parts(const sm_op *op, sm_part *out, int cap) {
    const blockdiag *b = BD(op);
    int n = sm_factor_parts_3d(&b->D, "D", b->K, b->mb, NULL);
    if (out && cap >= n) sm_factor_parts_3d(&b->D, "D", b->K, b->mb, out);
    return n;
}

const sm_op_vtbl sm_vtbl_blockdiag = {
    .name = "blockdiag",
    .keys = "blocks,dtype",
    .help = "  blocks=K     K contiguous diagonal blocks of (m/K, n/K) (required; K | m, K | n)\n"
            "  dtype=f32    factor storage: f32, f16, bf16, q8, q4",
    .fit = blockdiag_fit,
    .load = blockdiag_load,
    .apply = blockdiag_apply,
    .apply_t = blockdiag_apply_t,
    .workspace = blockdiag_workspace,
    .to_dense = blockdiag_to_dense,
    .nparams = blockdiag_nparams,
    .nbytes = blockdiag_nbytes,
    .macs = blockdiag_nparams,
    .parts = blockdiag_parts,
    .free_impl = blockdiag_free,
};
