// blocklowrank:blocks=K,rank=T|ratio=X[,dtype=..]
// W (m, n) as a K x K grid of contiguous (m/K, n/K) blocks, each of rank T:
//   W_ij = U_ij V_ij,  U_ij (m/K, T), V_ij (T, n/K).
// The blocks are disjoint, so a truncated SVD of each block is the Frobenius-optimal fit
// (Eckart-Young per block). nparams = K T (m + n).
// With calibration statistics (sm_fit_opts.stats) the fit minimises tr(dW (H + lambda I) dW^T)
// instead: block rows are independent, and within one the blocks couple through H's off-diagonal
// blocks, so each block row starts from the per-block SVDs and runs block coordinate descent,
// every step the exact whitened SVD of one block given the others (sm_act_blockrow_fit).
// With blocks=1 that is lowrank's activation-aware closed form.
// Storage (chosen so apply is 2K matrix products, not 2K^2):
//   "U" (K, m/K, K T): U[i][r][j T + t] = U_ij[r][t]   (block row i holds [U_i0 ... U_i,K-1])
//   "V" (K, K T, n/K): V[j][i T + t][c] = V_ij[t][c]   (block column j holds the V_ij stacked)
// (q8/q4: "U.codes"/"U.scales" over (m, K T) rows and "V.codes"/"V.scales" over (K K T, n/K).)
//
// This file also holds sm_resolve_block_rank, shared with monarch.c.
#include "actaware.h"
#include "op_impl.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

sm_status sm_resolve_block_rank(const sm_term *t, int64_t m, int64_t n, int64_t K,
                                int64_t *rank) {
    int64_t mb = m / K, nb = n / K;
    char context[128];
    snprintf(context, sizeof context, "when blocks=%lld cuts the %lldx%lld matrix into %lldx%lld "
             "blocks", (long long)K, (long long)m, (long long)n, (long long)mb, (long long)nb);
    return sm_resolve_rank(t, m, n, K * (m + n), mb < nb ? mb : nb, " per block", context, rank);
}

typedef struct blr {
    int64_t K, T, mb, nb; // grid size, rank per block, block shape (m/K, n/K)
    sm_factor U;          // (m, K T): block row i = rows [i mb, (i+1) mb)
    sm_factor V;          // (K K T, nb): block column j = rows [j K T, (j+1) K T)
} blr;

#define BLR(op) ((blr *)(op)->impl)

static void blr_free(void *impl) {
    blr *b = impl;
    sm_factor_free(&b->U);
    sm_factor_free(&b->V);
    free(b);
}

static sm_status blr_blocks(const sm_term *t, int64_t m, int64_t n, int64_t *K) {
    if (!sm_term_find(t, "blocks"))
        return sm_fail(SM_ERR_SPEC, "blocklowrank: needs blocks=K (K dividing both dimensions)");
    sm_status st = sm_term_int(t, "blocks", 0, 1, INT64_MAX, K);
    if (st != SM_OK) return st;
    if (m % *K || n % *K)
        return sm_fail(SM_ERR_SPEC,
                       "blocklowrank: blocks=%lld does not divide the %lldx%lld "
                       "matrix (K must divide both out=%lld and in=%lld)",
                       (long long)*K, (long long)m, (long long)n, (long long)m, (long long)n);
    return SM_OK;
}

static blr *blr_new(int64_t K, int64_t T, int64_t m, int64_t n) {
    blr *b = calloc(1, sizeof *b);
    if (b) {
        b->K = K;
        b->T = T;
        b->mb = m / K;
        b->nb = n / K;
    }
    return b;
}

static sm_status blr_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    int64_t K, T, m = op->m, n = op->n;
    sm_store store;
    sm_status st = blr_blocks(t, m, n, &K);
    if (st == SM_OK) st = sm_resolve_block_rank(t, m, n, K, &T);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    blr *b = blr_new(K, T, m, n);
    int64_t KT = K * T, mb = m / K, nb = n / K;
    float *U = sm_alloc((size_t)(m * KT) * sizeof(float));      // (m, K T)
    float *V = sm_alloc((size_t)(K * KT * nb) * sizeof(float)); // (K K T, nb)
    if (!b || !U || !V) {
        free(b), sm_free(U), sm_free(V);
        return sm_fail(SM_ERR_ALLOC, "blocklowrank: out of memory");
    }
    for (int64_t i = 0; i < K && st == SM_OK; i++)
        for (int64_t j = 0; j < K && st == SM_OK; j++)
            st = sm_lowrank_factors(W + i * mb * n + j * nb, mb, nb, n, T, NULL,
                                    U + i * mb * KT + j * T, KT, V + (j * KT + i * T) * nb, nb);
    if (st == SM_OK && o && o->stats) { // block row i: rows [i mb, (i+1) mb)
        sm_act_blocks ab;
        st = sm_act_blocks_init(o->stats, n, K, &ab);
        double e0 = 0, e1 = 0, a0, a1;
        for (int64_t i = 0; i < K && st == SM_OK; i++) {
            st = sm_act_blockrow_fit(&ab, W + i * mb * n, n, mb, T, U + i * mb * KT, KT, T,
                                     V + i * T * nb, nb, KT * nb, SM_ACT_SWEEPS, &a0, &a1);
            e0 += a0, e1 += a1;
        }
        if (st == SM_OK && o->verbose)
            fprintf(stderr, "blocklowrank: activation-aware objective %.6g -> %.6g\n", e0, e1);
        sm_act_blocks_free(&ab);
    }
    if (st == SM_OK) st = sm_factor_init(&b->U, m, KT, store, U, KT);
    if (st == SM_OK) st = sm_factor_init(&b->V, K * KT, nb, store, V, nb);
    sm_free(U), sm_free(V);
    if (st != SM_OK) {
        blr_free(b);
        return st;
    }
    op->impl = b;
    sm_canon c;
    sm_canon_init(&c, "blocklowrank");
    sm_canon_add(&c, "blocks", "%lld", (long long)K);
    sm_canon_add(&c, "rank", "%lld", (long long)T);
    if (store != SM_STORE_F32) sm_canon_add(&c, "dtype", "%s", sm_store_name(store));
    return sm_op_set_spec(op, &c);
}

static sm_status blr_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t K, T;
    sm_store store;
    sm_status st = blr_blocks(t, op->m, op->n, &K);
    if (st == SM_OK && !sm_term_find(t, "rank"))
        st = sm_fail(SM_ERR_SPEC, "blocklowrank: a stored spec needs rank=");
    if (st == SM_OK) st = sm_resolve_block_rank(t, op->m, op->n, K, &T);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    blr *b = blr_new(K, T, op->m, op->n);
    if (!b) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = sm_factor_load_3d(&b->U, K, b->mb, K * T, store, "U", parts, nparts);
    if (st == SM_OK) st = sm_factor_load_3d(&b->V, K, K * T, b->nb, store, "V", parts, nparts);
    if (st != SM_OK) {
        blr_free(b);
        return st;
    }
    op->impl = b;
    return SM_OK;
}

static size_t blr_workspace(const sm_op *op, int64_t N) {
    const blr *b = BLR(op);
    size_t u = sm_factor_workspace(&b->U, N), v = sm_factor_workspace(&b->V, N);
    return (size_t)(2 * N * b->K * b->K * b->T) + (u > v ? u : v);
}

// dst[r, i K T + j T + t] = src[r, j K T + i T + t] for N rows (the transpose of the K x K grid
// of length-T pieces); applying it twice is the identity.
static void blr_swap_grid(int64_t N, int64_t K, int64_t T, const float *src, float *dst) {
    int64_t KT = K * T, row = K * KT;
    for (int64_t r = 0; r < N; r++)
        for (int64_t j = 0; j < K; j++)
            for (int64_t i = 0; i < K; i++)
                memcpy(dst + r * row + i * KT + j * T, src + r * row + j * KT + i * T,
                       (size_t)T * sizeof(float));
}

static void blr_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const blr *b = BLR(op);
    int64_t K = b->K, KT = K * b->T, row = K * KT;
    float *Z = work, *Z2 = work + N * row, *sub = Z2 + N * row; // Z, Z2 (N, K K T)
    for (int64_t j = 0; j < K; j++) { // Z[:, j K T + i T + t] = (V_ij X_j)[t]
        sm_factor Vj = sm_factor_rows(&b->V, j * KT, (j + 1) * KT);
        sm_factor_mm(&Vj, N, X + j * b->nb, op->n, Z + j * KT, row, 0.0f, sub);
    }
    blr_swap_grid(N, K, b->T, Z, Z2); // Z2[:, i K T + j T + t]
    for (int64_t i = 0; i < K; i++) { // Y_i = sum_j U_ij (V_ij X_j)
        sm_factor Ui = sm_factor_rows(&b->U, i * b->mb, (i + 1) * b->mb);
        sm_factor_mm(&Ui, N, Z2 + i * KT, row, Y + i * b->mb, op->m, 0.0f, sub);
    }
}

static void blr_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const blr *b = BLR(op);
    int64_t K = b->K, KT = K * b->T, row = K * KT;
    float *Z = work, *Z2 = work + N * row, *sub = Z2 + N * row;
    for (int64_t i = 0; i < K; i++) {
        sm_factor Ui = sm_factor_rows(&b->U, i * b->mb, (i + 1) * b->mb);
        sm_factor_mm_t(&Ui, N, Y + i * b->mb, op->m, Z2 + i * KT, row, 0.0f, sub);
    }
    blr_swap_grid(N, K, b->T, Z2, Z);
    for (int64_t j = 0; j < K; j++) {
        sm_factor Vj = sm_factor_rows(&b->V, j * KT, (j + 1) * KT);
        sm_factor_mm_t(&Vj, N, Z + j * KT, row, X + j * b->nb, op->n, 0.0f, sub);
    }
}

static sm_status blr_to_dense(const sm_op *op, float *W) {
    const blr *b = BLR(op);
    int64_t K = b->K, T = b->T, KT = K * T;
    float *U = sm_alloc((size_t)(op->m * KT) * sizeof(float));
    float *V = sm_alloc((size_t)(K * KT * b->nb) * sizeof(float));
    if (!U || !V) {
        sm_free(U), sm_free(V);
        return sm_fail(SM_ERR_ALLOC, "blocklowrank: out of memory in to_dense");
    }
    sm_factor_decode(&b->U, U, KT);
    sm_factor_decode(&b->V, V, b->nb);
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < K; j++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b->mb, (int)b->nb, (int)T,
                        1.0f, U + i * b->mb * KT + j * T, (int)KT, V + (j * KT + i * T) * b->nb,
                        (int)b->nb, 0.0f, W + i * b->mb * op->n + j * b->nb, (int)op->n);
    sm_free(U), sm_free(V);
    return SM_OK;
}

static int64_t blr_nparams(const sm_op *op) {
    return BLR(op)->K * BLR(op)->T * (op->m + op->n);
}

static int64_t blr_nbytes(const sm_op *op) {
    return sm_factor_nbytes(&BLR(op)->U) + sm_factor_nbytes(&BLR(op)->V);
}

static int blr_parts(const sm_op *op, sm_part *out, int cap) {
    const blr *b = BLR(op);
    int64_t K = b->K, KT = K * b->T;
    int nu = sm_factor_parts_3d(&b->U, "U", K, b->mb, NULL);
    int nv = sm_factor_parts_3d(&b->V, "V", K, KT, NULL);
    if (out && cap >= nu + nv) {
        sm_factor_parts_3d(&b->U, "U", K, b->mb, out);
        sm_factor_parts_3d(&b->V, "V", K, KT, out + nu);
    }
    return nu + nv;
}

const sm_op_vtbl sm_vtbl_blocklowrank = {
    .name = "blocklowrank",
    .keys = "blocks,rank,ratio,dtype",
    .help = "  blocks=K     a K x K grid of contiguous (m/K, n/K) blocks (required; K | m, K | n)\n"
            "  rank=T       rank of every block (1 <= T <= min(m, n)/K); or\n"
            "  ratio=X      the largest T with K T (m + n) <= X m n\n"
            "  dtype=f32    factor storage: f32, f16, bf16, q8, q4",
    .fit = blr_fit,
    .load = blr_load,
    .apply = blr_apply,
    .apply_t = blr_apply_t,
    .workspace = blr_workspace,
    .to_dense = blr_to_dense,
    .nparams = blr_nparams,
    .nbytes = blr_nbytes,
    .macs = blr_nparams,
    .parts = blr_parts,
    .free_impl = blr_free,
};
