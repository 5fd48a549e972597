// lowrank:rank=R|ratio=X[,dtype=..][,solver=exact|random[,oversample=P,power=Q]]
// W ~ L R with L = U sqrt(S) (m, r) and R = sqrt(S) V^T (r, n), the truncated SVD (optimal in
// Frobenius norm by Eckart-Young). Parts: "U" (m, r), "V" (r, n).
// With calibration statistics (sm_fit_opts.stats) the fit minimizes ||X (W - W_hat)^T||_F instead:
// whiten by the Cholesky factor of the damped Gram, truncate, un-whiten (sm_act_lowrank_factors).
#include "actaware.h"
#include "op_impl.h"

#include <stdlib.h>

// Randomized solver defaults, chosen so that solver=random stays within 1% of the optimal
// (Eckart-Young) Frobenius error on real weights. Measured with sm_rsvd on the 28 matrices
// q/k/v/o/gate/up/down of layers 0-3 of models/shakespeare-llama-3m (256x256, 128x256, 768x256,
// 256x768): worst err/opt over the matrices and seeds 1-5 (q=2: seeds 1-2), rank 128 only where it
// is below min(m, n). Error grows with the rank because these spectra are flat.
//     p   q    r=8     r=16    r=32    r=64    r=96    r=128
//     10  2   1.0058  1.0095  1.0163  1.0242  1.0307    -
//     10  3   1.0026  1.0054  1.0087  1.0131  1.0158  1.0182
//     10  4   1.0014  1.0033  1.0053  1.0078  1.0090  1.0101
//     10  5   1.0009  1.0021  1.0035  1.0050  1.0056  1.0062
//     20  3   1.0014  1.0030  1.0051  1.0086  1.0106  1.0112
//     20  4   1.0007  1.0016  1.0028  1.0047  1.0056  1.0054   <- defaults
//     20  5   1.0003  1.0009  1.0017  1.0027  1.0032  1.0029
// p=20 q=4 costs about what p=10 q=5 does (one thread: 256x256 r=64 5.0 vs 4.7 ms, 768x256 r=128
// 19 vs 21 ms, 2048x2048 r=128 143 vs 158 ms) and is more accurate; HMT and scikit-learn also
// advise oversampling before more power iterations. Decaying spectra (sigma_i = 1/i, 0.9^i) are far
// inside 1% with these (tests/test_lowrank.c).
#define LR_DEFAULT_OVERSAMPLE 20
#define LR_DEFAULT_POWER 4

typedef struct lowrank {
    int64_t r;
    sm_factor L, R; // (m, r), (r, n)
} lowrank;

#define LR(op) ((lowrank *)(op)->impl)

sm_status sm_resolve_rank(const sm_term *t, int64_t m, int64_t n, int64_t per_rank,
                          int64_t max_rank, const char *per, const char *context,
                          int64_t *rank) {
    bool has_rank = sm_term_find(t, "rank"), has_ratio = sm_term_find(t, "ratio");
    if (has_rank && has_ratio)
        return sm_fail(SM_ERR_SPEC, "%s: give rank= or ratio=, not both", t->name);
    if (!has_rank && !has_ratio)
        return sm_fail(SM_ERR_SPEC, "%s: needs rank=%s or ratio=X (0 < X <= 1)", t->name,
                       *per ? "T (per block)" : "R");
    if (has_rank) {
        sm_status st = sm_term_int(t, "rank", 0, 1, INT64_MAX, rank);
        if (st != SM_OK) return st;
        if (*rank > max_rank)
            return sm_fail(SM_ERR_SPEC, "%s: rank=%lld%s is too large (impossible %s: at most "
                           "%lld)", t->name, (long long)*rank, per, context, (long long)max_rank);
        return SM_OK;
    }
    double ratio;
    sm_status st = sm_term_real(t, "ratio", 0, 1e-12, 1.0, &ratio);
    if (st != SM_OK) return st;
    int64_t r = (int64_t)(ratio * (double)m * (double)n / (double)per_rank + 1e-9);
    if (r > max_rank) r = max_rank;
    if (r < 1)
        return sm_fail(SM_ERR_SPEC, "%s: ratio=%g leaves no room for rank 1%s %s (rank 1 needs "
                       "ratio >= %g)", t->name, ratio, per, context,
                       (double)per_rank / ((double)m * (double)n));
    *rank = r;
    return SM_OK;
}

static sm_status solver_from_term(const sm_term *t, const sm_fit_opts *o, sm_svd_solver *s) {
    sm_status st = sm_term_choice(t, "solver", "exact|random", 0, &s->kind);
    if (st == SM_OK) st = sm_term_int(t, "oversample", LR_DEFAULT_OVERSAMPLE, 0, 1 << 20, &s->p);
    int64_t q = LR_DEFAULT_POWER;
    if (st == SM_OK) st = sm_term_int(t, "power", LR_DEFAULT_POWER, 0, 100, &q);
    s->q = (int)q;
    s->seed = o ? o->seed : 0x5eed;
    if (st == SM_OK && s->kind == 0 && (sm_term_find(t, "oversample") || sm_term_find(t, "power")))
        return sm_fail(SM_ERR_SPEC, "%s: oversample= and power= need solver=random", t->name);
    return st;
}

static void lowrank_free(void *impl) {
    lowrank *lr = impl;
    sm_factor_free(&lr->L);
    sm_factor_free(&lr->R);
    free(lr);
}

static sm_status lowrank_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    int64_t m = op->m, n = op->n, r;
    sm_store store;
    sm_svd_solver solver;
    char context[96];
    snprintf(context, sizeof context, "for a %lldx%lld matrix", (long long)m, (long long)n);
    sm_status st = sm_resolve_rank(t, m, n, m + n, m < n ? m : n, "", context, &r);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st == SM_OK) st = solver_from_term(t, o, &solver);
    if (st != SM_OK) return st;
    lowrank *lr = calloc(1, sizeof *lr);
    float *L = sm_alloc((size_t)(m * r) * sizeof(float));
    float *R = sm_alloc((size_t)(r * n) * sizeof(float));
    if (!lr || !L || !R) {
        free(lr), sm_free(L), sm_free(R);
        return sm_fail(SM_ERR_ALLOC, "lowrank: out of memory");
    }
    lr->r = r;
    if (o && o->stats) // activation-aware: min tr(dW H dW^T) in closed form (actaware.h)
        st = sm_act_lowrank_factors(W, m, n, r, &solver, o->stats, L, R);
    else
        st = sm_lowrank_factors(W, m, n, n, r, &solver, L, r, R, n);
    if (st == SM_OK) st = sm_factor_init(&lr->L, m, r, store, L, r);
    if (st == SM_OK) st = sm_factor_init(&lr->R, r, n, store, R, n);
    sm_free(L), sm_free(R);
    if (st != SM_OK) {
        lowrank_free(lr);
        return st;
    }
    op->impl = lr;
    sm_canon c;
    sm_canon_init(&c, "lowrank");
    sm_canon_add(&c, "rank", "%lld", (long long)r);
    if (store != SM_STORE_F32) sm_canon_add(&c, "dtype", "%s", sm_store_name(store));
    if (solver.kind == 1) {
        sm_canon_add(&c, "solver", "random");
        if (solver.p != LR_DEFAULT_OVERSAMPLE) sm_canon_add(&c, "oversample", "%lld", (long long)solver.p);
        if (solver.q != LR_DEFAULT_POWER) sm_canon_add(&c, "power", "%d", solver.q);
    }
    return sm_op_set_spec(op, &c);
}

static sm_status lowrank_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t r;
    sm_store store;
    sm_status st = sm_term_int(t, "rank", 0, 1, op->m < op->n ? op->m : op->n, &r);
    if (st == SM_OK && (!sm_term_find(t, "rank") || sm_term_find(t, "ratio")))
        st = sm_fail(SM_ERR_SPEC, "lowrank: a stored spec needs rank= (and no ratio=)");
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    lowrank *lr = calloc(1, sizeof *lr);
    if (!lr) return sm_fail(SM_ERR_ALLOC, "out of memory");
    lr->r = r;
    st = sm_factor_load(&lr->L, op->m, r, store, "U", parts, nparts);
    if (st == SM_OK) st = sm_factor_load(&lr->R, r, op->n, store, "V", parts, nparts);
    if (st != SM_OK) {
        lowrank_free(lr);
        return st;
    }
    op->impl = lr;
    return SM_OK;
}

static size_t lowrank_workspace(const sm_op *op, int64_t N) {
    const lowrank *lr = LR(op);
    size_t a = sm_factor_workspace(&lr->L, N), b = sm_factor_workspace(&lr->R, N);
    return (size_t)(N * lr->r) + (a > b ? a : b);
}

static void lowrank_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const lowrank *lr = LR(op);
    float *T = work, *sub = work + N * lr->r; // T (N, r)
    sm_factor_mm(&lr->R, N, X, op->n, T, lr->r, 0.0f, sub);
    sm_factor_mm(&lr->L, N, T, lr->r, Y, op->m, 0.0f, sub);
}

static void lowrank_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const lowrank *lr = LR(op);
    float *T = work, *sub = work + N * lr->r; // T (N, r)
    sm_factor_mm_t(&lr->L, N, Y, op->m, T, lr->r, 0.0f, sub);
    sm_factor_mm_t(&lr->R, N, T, lr->r, X, op->n, 0.0f, sub);
}

static sm_status lowrank_to_dense(const sm_op *op, float *W) {
    // Row i of W is L[i,:] R: the transposed product of R with the rows of L.
    const lowrank *lr = LR(op);
    float *L = sm_alloc((size_t)(op->m * lr->r) * sizeof(float));
    float *work = sm_alloc((sm_factor_workspace(&lr->R, op->m) + 1) * sizeof(float));
    if (!L || !work) {
        sm_free(L), sm_free(work);
        return sm_fail(SM_ERR_ALLOC, "lowrank: out of memory in to_dense");
    }
    sm_factor_decode(&lr->L, L, lr->r);
    sm_factor_mm_t(&lr->R, op->m, L, lr->r, W, op->n, 0.0f, work);
    sm_free(L), sm_free(work);
    return SM_OK;
}

static int64_t lowrank_nparams(const sm_op *op) {
    return LR(op)->r * (op->m + op->n);
}

static int64_t lowrank_nbytes(const sm_op *op) {
    return sm_factor_nbytes(&LR(op)->L) + sm_factor_nbytes(&LR(op)->R);
}

static int lowrank_parts(const sm_op *op, sm_part *out, int cap) {
    const lowrank *lr = LR(op);
    int a = sm_factor_parts(&lr->L, "U", NULL), b = sm_factor_parts(&lr->R, "V", NULL);
    if (out && cap >= a + b) {
        sm_factor_parts(&lr->L, "U", out);
        sm_factor_parts(&lr->R, "V", out + a);
    }
    return a + b;
}

const sm_op_vtbl sm_vtbl_lowrank = {
    .name = "lowrank",
    .keys = "rank,ratio,dtype,solver,oversample,power",
    .help = "  rank=R       rank (1 <= R <= min(m, n)); or\n"
            "  ratio=X      the largest rank with R (m + n) <= X m n\n"
            "  dtype=f32    factor storage: f32, f16, bf16, q8, q4\n"
            "  solver=exact exact (LAPACK gesdd) or random (Halko-Martinsson-Tropp)\n"
            "  oversample=20, power=4   randomized solver: oversampling p, power iterations q",
    .fit = lowrank_fit,
    .load = lowrank_load,
    .apply = lowrank_apply,
    .apply_t = lowrank_apply_t,
    .workspace = lowrank_workspace,
    .to_dense = lowrank_to_dense,
    .nparams = lowrank_nparams,
    .nbytes = lowrank_nbytes,
    .macs = lowrank_nparams,
    .parts = lowrank_parts,
    .free_impl = lowrank_free,
    .projection = true,
};
