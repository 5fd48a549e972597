// monarch:blocks=K[,rank=T|ratio=X][,dtype=..]
// The Monarch matrix of the paper's reference code (HazyResearch/fly MonarchLinear,
// blockdiag_butterfly_multiply): two block-diagonal factors of K blocks each with the interleaving
// permutation between them. For x (in) and y (out), with p = in/K, s = out/K, Q = K T:
//   h[k Q + q]  = sum_c f1[k][q][c] x[k p + c]          block-diagonal factor 1 (K, Q, p)
//   g[l][r]     = h[r K + l]                             the permutation
//   y[i K + l]  = sum_r f2[l][i][r] g[l][r]              block-diagonal factor 2 (K, s, Q)
// Equivalently W (out, in) is a K x K grid of rank-T blocks: block (k, l) holds the rows
// {i K + l} and the contiguous columns [k p, (k+1) p), and its rank components are the
// intermediate indices f = k Q + t K + l (t < T):
//   W[i K + l][k p + c] = sum_t f2[l][i][k T + t] f1[k][t K + l][c].
// The blocks are disjoint, so the per-block truncated SVD is the Frobenius-optimal fit.
// With calibration statistics (sm_fit_opts.stats) the fit minimises tr(dW (H + lambda I) dW^T):
// the rank-T blocks of block row l (rows {i K + l}) couple through H's off-diagonal blocks, and
// block rows do not couple at all (the objective sums over rows). So rather than alternating
// between f1 and f2 as wholes, each block row starts from the per-block SVDs and runs block
// coordinate descent, every step the exact whitened SVD of one block given the others
// (sm_act_blockrow_fit): each step is the exact optimum over all of that block's rank-T
// matrices, which no f1/f2 half-step is, and the objective never rises.
// Default T = min(in, out) / K^2 (the reference MonarchLinear); nparams = macs = K T (in + out).
// Parts: "f1" (K, K T, in/K), "f2" (K, out/K, K T) (q8/q4: "f1.codes"/"f1.scales" over the
// (K K T, in/K) rows and "f2.codes"/"f2.scales" over the (out, K T) rows).
#include "actaware.h"
#include "op_impl.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


typedef struct monarch {
    int64_t K, T;    // blocks, rank per block
    int64_t p, s, Q; // in/K, out/K, K T
    sm_factor f1;    // (K Q, p): block k = rows [k Q, (k+1) Q)
    sm_factor f2;    // (out, Q): block l = rows [l s, (l+1) s)
} monarch;

#define MO(op) ((monarch *)(op)->impl)

static void monarch_free(void *impl) {
    monarch *mo = impl;
    sm_factor_free(&mo->f1);
    sm_factor_free(&mo->f2);
    free(mo);
}

// Reads blocks= and the per-block rank (rank=, ratio= or the reference default) for an
// (m, n) = (out, in) matrix.
static sm_status monarch_sizes(const sm_term *t, int64_t m, int64_t n, int64_t *K, int64_t *T) {
    if (!sm_term_find(t, "blocks"))
        return sm_fail(SM_ERR_SPEC, "monarch: needs blocks=K (K dividing both in and out)");
    sm_status st = sm_term_int(t, "blocks", 0, 1, INT64_MAX, K);
    if (st != SM_OK) return st;
    if (m % *K || n % *K)
        return sm_fail(SM_ERR_SPEC,
                       "monarch: blocks=%lld does not divide the %lldx%lld matrix "
                       "(K must divide both out=%lld and in=%lld)",
                       (long long)*K, (long long)m, (long long)n, (long long)m, (long long)n);
    // The blocks' rows are K rows apart: K n and K m are leading dimensions handed to BLAS.
    if (*K * (m > n ? m : n) > INT_MAX)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "monarch: blocks=%lld on a %lldx%lld matrix needs strides over %d",
                       (long long)*K, (long long)m, (long long)n, INT_MAX);
    if (sm_term_find(t, "rank") || sm_term_find(t, "ratio"))
        return sm_resolve_block_rank(t, m, n, *K, T);
    int64_t mn = m < n ? m : n, KK = *K * *K;
    if (mn % KK)
        return sm_fail(SM_ERR_SPEC,
                       "monarch: the default rank per block min(in, out)/K^2 = "
                       "%lld/%lld is not a whole number for a %lldx%lld matrix with blocks=%lld; "
                       "give rank=T or ratio=X",
                       (long long)mn, (long long)KK, (long long)m, (long long)n, (long long)*K);
    *T = mn / KK;
    return SM_OK;
}

static monarch *monarch_new(int64_t K, int64_t T, int64_t m, int64_t n) {
    monarch *mo = calloc(1, sizeof *mo);
    if (mo) {
        mo->K = K;
        mo->T = T;
        mo->p = n / K;
        mo->s = m / K;
        mo->Q = K * T;
    }
    return mo;
}

static sm_status monarch_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    int64_t K, T, m = op->m, n = op->n;
    sm_store store;
    sm_status st = monarch_sizes(t, m, n, &K, &T);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    monarch *mo = monarch_new(K, T, m, n);
    int64_t p = n / K, s = m / K, Q = K * T;
    float *F1 = sm_alloc((size_t)(K * Q * p) * sizeof(float)); // (K Q, p)
    float *F2 = sm_alloc((size_t)(m * Q) * sizeof(float));     // (out, Q)
    if (!mo || !F1 || !F2) {
        free(mo), sm_free(F1), sm_free(F2);
        return sm_fail(SM_ERR_ALLOC, "monarch: out of memory");
    }
    // Block (k, l): rows l, l + K, ... (row stride K n), columns [k p, (k+1) p). Its left
    // factor goes to rows [l s, (l+1) s) of f2 at columns [k T, (k+1) T); its right factor to
    // rows k Q + t K + l of f1 (row stride K p).
    for (int64_t k = 0; k < K && st == SM_OK; k++)
        for (int64_t l = 0; l < K && st == SM_OK; l++)
            st = sm_lowrank_factors(W + l * n + k * p, s, p, K * n, T, NULL, F2 + l * s * Q + k * T,
                                    Q, F1 + (k * Q + l) * p, K * p);
    if (st == SM_OK && o && o->stats) { // block row l: rows l, l + K, ...; block (k, l) as above
        sm_act_blocks ab;
        st = sm_act_blocks_init(o->stats, n, K, &ab);
        double e0 = 0, e1 = 0, a0, a1;
        for (int64_t l = 0; l < K && st == SM_OK; l++) {
            st = sm_act_blockrow_fit(&ab, W + l * n, K * n, s, T, F2 + l * s * Q, Q, T,
                                     F1 + l * p, K * p, Q * p, SM_ACT_SWEEPS, &a0, &a1);
            e0 += a0, e1 += a1;
        }
        if (st == SM_OK && o->verbose)
            fprintf(stderr, "monarch: activation-aware objective %.6g -> %.6g\n", e0, e1);
        sm_act_blocks_free(&ab);
    }
    if (st == SM_OK) st = sm_factor_init(&mo->f1, K * Q, p, store, F1, p);
    if (st == SM_OK) st = sm_factor_init(&mo->f2, m, Q, store, F2, Q);
    sm_free(F1), sm_free(F2);
    if (st != SM_OK) {
        monarch_free(mo);
        return st;
    }
    op->impl = mo;
    sm_canon c;
    sm_canon_init(&c, "monarch");
    sm_canon_add(&c, "blocks", "%lld", (long long)K);
    sm_canon_add(&c, "rank", "%lld", (long long)T);
    if (store != SM_STORE_F32) sm_canon_add(&c, "dtype", "%s", sm_store_name(store));
    return sm_op_set_spec(op, &c);
}

static sm_status monarch_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t K, T;
    sm_store store;
    sm_status st = monarch_sizes(t, op->m, op->n, &K, &T);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    monarch *mo = monarch_new(K, T, op->m, op->n);
    if (!mo) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = sm_factor_load_3d(&mo->f1, K, mo->Q, mo->p, store, "f1", parts, nparts);
    if (st == SM_OK) st = sm_factor_load_3d(&mo->f2, K, mo->s, mo->Q, store, "f2", parts, nparts);
    if (st != SM_OK) {
        monarch_free(mo);
        return st;
    }
    op->impl = mo;
    return SM_OK;
}

// Intermediate buffers: H (N, max(K Q, out)) and G (N, K Q), then the factors' scratch.
static size_t monarch_workspace(const sm_op *op, int64_t N) {
    const monarch *mo = MO(op);
    int64_t KQ = mo->K * mo->Q, h = KQ > op->m ? KQ : op->m;
    size_t a = sm_factor_workspace(&mo->f1, N), b = sm_factor_workspace(&mo->f2, N);
    return (size_t)(N * (h + KQ)) + (a > b ? a : b);
}

static void monarch_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const monarch *mo = MO(op);
    int64_t K = mo->K, Q = mo->Q, KQ = K * Q, s = mo->s, m = op->m;
    int64_t h = KQ > m ? KQ : m;
    float *H = work, *G = work + N * h, *sub = G + N * KQ; // H (N, K Q), G (N, K, Q)
    for (int64_t k = 0; k < K; k++) {                      // H[:, k Q + q] = f1[k] x_k
        sm_factor f1k = sm_factor_rows(&mo->f1, k * Q, (k + 1) * Q);
        sm_factor_mm(&f1k, N, X + k * mo->p, op->n, H + k * Q, KQ, 0.0f, sub);
    }
    for (int64_t b = 0; b < N; b++) { // G[b, l, r] = H[b, r K + l]
        const float *hb = H + b * KQ;
        float *gb = G + b * KQ;
        for (int64_t r = 0; r < Q; r++)
            for (int64_t l = 0; l < K; l++) gb[l * Q + r] = hb[r * K + l];
    }
    for (int64_t l = 0; l < K; l++) { // H as (N, K, s): H[b, l, i] = f2[l] g_l
        sm_factor f2l = sm_factor_rows(&mo->f2, l * s, (l + 1) * s);
        sm_factor_mm(&f2l, N, G + l * Q, KQ, H + l * s, m, 0.0f, sub);
    }
    for (int64_t b = 0; b < N; b++) { // Y[b, i K + l] = H[b, l, i]
        const float *hb = H + b * m;
        float *yb = Y + b * m;
        for (int64_t l = 0; l < K; l++)
            for (int64_t i = 0; i < s; i++) yb[i * K + l] = hb[l * s + i];
    }
}

static void monarch_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const monarch *mo = MO(op);
    int64_t K = mo->K, Q = mo->Q, KQ = K * Q, s = mo->s, m = op->m;
    int64_t h = KQ > m ? KQ : m;
    float *H = work, *G = work + N * h, *sub = G + N * KQ;
    for (int64_t b = 0; b < N; b++) { // H[b, l, i] = Y[b, i K + l]
        const float *yb = Y + b * m;
        float *hb = H + b * m;
        for (int64_t i = 0; i < s; i++)
            for (int64_t l = 0; l < K; l++) hb[l * s + i] = yb[i * K + l];
    }
    for (int64_t l = 0; l < K; l++) { // G[b, l, :] = H[b, l, :] f2[l]
        sm_factor f2l = sm_factor_rows(&mo->f2, l * s, (l + 1) * s);
        sm_factor_mm_t(&f2l, N, H + l * s, m, G + l * Q, KQ, 0.0f, sub);
    }
    for (int64_t b = 0; b < N; b++) { // H[b, r K + l] = G[b, l, r]
        const float *gb = G + b * KQ;
        float *hb = H + b * KQ;
        for (int64_t l = 0; l < K; l++)
            for (int64_t r = 0; r < Q; r++) hb[r * K + l] = gb[l * Q + r];
    }
    for (int64_t k = 0; k < K; k++) {
        sm_factor f1k = sm_factor_rows(&mo->f1, k * Q, (k + 1) * Q);
        sm_factor_mm_t(&f1k, N, H + k * Q, KQ, X + k * mo->p, op->n, 0.0f, sub);
    }
}

static sm_status monarch_to_dense(const sm_op *op, float *W) {
    const monarch *mo = MO(op);
    int64_t K = mo->K, T = mo->T, Q = mo->Q, p = mo->p, s = mo->s, n = op->n;
    float *F1 = sm_alloc((size_t)(K * Q * p) * sizeof(float));
    float *F2 = sm_alloc((size_t)(op->m * Q) * sizeof(float));
    if (!F1 || !F2) {
        sm_free(F1), sm_free(F2);
        return sm_fail(SM_ERR_ALLOC, "monarch: out of memory in to_dense");
    }
    sm_factor_decode(&mo->f1, F1, p);
    sm_factor_decode(&mo->f2, F2, Q);
    // Block (k, l) (s, p) = f2[l][:, k T .. k T + T) (s, T) times rows k Q + t K + l of f1.
    for (int64_t k = 0; k < K; k++)
        for (int64_t l = 0; l < K; l++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s, (int)p, (int)T, 1.0f,
                        F2 + l * s * Q + k * T, (int)Q, F1 + (k * Q + l) * p, (int)(K * p), 0.0f,
                        W + l * n + k * p, (int)(K * n));
    sm_free(F1), sm_free(F2);
    return SM_OK;
}

static int64_t monarch_nparams(const sm_op *op) {
    return MO(op)->K * MO(op)->T * (op->m + op->n);
}

static int64_t monarch_nbytes(const sm_op *op) {
    return sm_factor_nbytes(&MO(op)->f1) + sm_factor_nbytes(&MO(op)->f2);
}

static int monarch_parts(const sm_op *op, sm_part *out, int cap) {
    const monarch *mo = MO(op);
    int a = sm_factor_parts_3d(&mo->f1, "f1", mo->K, mo->Q, NULL);
    int b = sm_factor_parts_3d(&mo->f2, "f2", mo->K, mo->s, NULL);
    if (out && cap >= a + b) {
        sm_factor_parts_3d(&mo->f1, "f1", mo->K, mo->Q, out);
        sm_factor_parts_3d(&mo->f2, "f2", mo->K, mo->s, out + a);
    }
    return a + b;
}

const sm_op_vtbl sm_vtbl_monarch = {
    .name = "monarch",
    .keys = "blocks,rank,ratio,dtype",
    .help =
        "  blocks=K     K blocks in each of the two block-diagonal factors (required; K | in,\n"
        "               K | out)\n"
        "  rank=T       rank of each of the K x K blocks (default min(in, out)/K^2, which must\n"
        "               be whole; 1 <= T <= min(in, out)/K); or\n"
        "  ratio=X      the largest T with K T (in + out) <= X m n\n"
        "  dtype=f32    factor storage: f32, f16, bf16, q8, q4",
    .fit = monarch_fit,
    .load = monarch_load,
    .apply = monarch_apply,
    .apply_t = monarch_apply_t,
    .workspace = monarch_workspace,
    .to_dense = monarch_to_dense,
    .nparams = monarch_nparams,
    .nbytes = monarch_nbytes,
    .macs = monarch_nparams,
    .parts = monarch_parts,
    .free_impl = monarch_free,
};
