// blast:blocks=B,rank=R|ratio=X[,perm=none|stride][,iters=300][,step=1][,delta=0.01][,dtype=..]
// BLAST (Lee et al., NeurIPS 2024): W (m, n) as a B x B grid of (p, q) = (m/B, n/B) blocks,
//   W_ij = U_i diag(s_ij) V_j^T,  U_i (p, R) shared along block-row i, V_j (q, R) along
//   block-column j, s_ij (R) per block.
// nparams = macs = R (m + n + B^2). apply never forms W:
//   z_j = V_j^T x_j (R),  t_i = sum_j s_ij * z_j (R),  y_i = U_i t_i (p).
// perm=stride puts Monarch's fixed output permutation in front: block-row i holds the rows
// {a B + i : a < p} (rows grouped by residue mod B) instead of [i p, (i+1) p). With it,
// monarch:blocks=B,rank=T is the special case R = B T with s_ij the indicator of coordinate group
// (i + j) mod B; without it the same s gives blocklowrank:blocks=B,rank=T. B = 1 is lowrank:rank=R,
// and R = min(p, q) with s_ij = [i = j] is blockdiag:blocks=B.
//
// Parts: "U" (B, p, R), "V" (B, R, q) holding V_j^T, "S" (B, B, R) F32 (S is not quantized:
// it is B^2 R numbers and scales everything). q8/q4: "U.codes"/"U.scales" over the (m, R) rows
// and "V.codes"/"V.scales" over the (B R, q) rows, as every 3-D factor.
//
// Fit (the paper's preconditioned alternating gradient descent, written from its description):
// A = W (rows permuted when perm=stride) / rms(W); the loss is f = sum_ij ||A_ij - U_i S_ij
// V_j^T||^2 without a 1/2, as in the paper's code, so its gradients carry a factor 2 and step=1 is
// twice a damped Gauss-Newton (alternating least-squares) block step: an over-relaxed step, which
// measured better than the plain one (BENCHMARKS.md). At iteration t of T, with
// eta = step (1 - t/T) and eps = delta ||E||_F (E = U S V^T - A at the start of the iteration):
//   U_i  -= eta 2 (sum_j E_ij V_j S_ij) (sum_j S_ij V_j^T V_j S_ij + eps I)^-1     every i, then
//   V_j  -= eta 2 (sum_i E_ij^T U_i S_ij) (sum_i S_ij U_i^T U_i S_ij + eps I)^-1   every j, then
//   s_ij -= eta 2 ((U_i^T U_i) o (V_j^T V_j) + eps I)^-1 diag(U_i^T E_ij V_j)    every (i, j),
// each with the residual of the parameters as they are at that moment (the V and S gradients are
// formed as products with A, e.g. V_j H_j - A_j^T U~_j, so each costs one m n R product). The paper
// recomputes eps before every sub-step; here it is one per iteration.
// Warm start: the best (lowest error) of the closed-form projections that fit in R coordinates:
// low-rank R (s = 1); block-low-rank T = floor(R/B) per block on the Latin square above, which is
// the Monarch projection when perm=stride; block-diagonal (rank min(R, p, q) per diagonal block).
// Coordinates a projection leaves unused carry the leading singular triplets of its residual
// (s = 1 there), so they start useful. The result is the iterate with the lowest error, the warm
// start included: never worse than the warm start.
//
// Activation-aware fit (sm_fit_opts.stats): the loss becomes f = tr(E Hn E^T) with
// Hn = (H + lambda I) / mean diag(H + lambda I) (lambda as in actaware.h; the scale of Hn leaves
// the minimiser alone and keeps the float products near 1). Its half-gradients and Gauss-Newton
// blocks, each used exactly as the Frobenius ones above (the same eta, eps = delta sqrt(f)):
//   U_i:  G = (E Hn)_i V~_i,            Gram V~_i^T Hn V~_i;
//   V_j:  G = (E Hn)[:, C_j]^T U~_j,    Gauss-Newton block (U~_j^T U~_j) kron Hn_jj, so the step
//         is Hn_jj^-1 G (U~_j^T U~_j + eps I)^-1 (V_j couple through Hn: updated in turn, E Hn
//         kept current after each);
//   s_ij: g = diag(U_i^T (E Hn)_ij V_j), Gram (U_i^T U_i) o (V_j^T Hn_jj V_j), in turn over j.
// Each iteration costs O(m n^2) (the products with Hn) instead of O(m n R). The warm starts add
// the activation-aware closed forms: low-rank (sm_act_lowrank_factors) and block-low-rank
// (sm_act_blockrow_fit on the Latin square), spare coordinates from the activation-aware
// low-rank of the residual; the Frobenius starts stay candidates. Every candidate and iterate is
// scored by f, so the result is never worse in f than the best warm start.
#include "actaware.h"
#include "blast_kernels.h"
#include "op_impl.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLAST_ITERS 300
#define BLAST_STEP 1.0
#define BLAST_DELTA 0.01

typedef struct blast {
    int64_t B, R, p, q; // grid, rank, block shape (m/B, n/B)
    bool stride;        // perm=stride
    sm_factor U;        // (m, R): U_i = rows [i p, (i+1) p)
    sm_factor V;        // (B R, q): V_j^T = rows [j R, (j+1) R)
    sm_factor S;        // (B B, R) f32: s_ij = row i B + j
} blast;

#define BL(op) ((blast *)(op)->impl)

static void blast_free(void *impl) {
    blast *b = impl;
    sm_factor_free(&b->U);
    sm_factor_free(&b->V);
    sm_factor_free(&b->S);
    free(b);
}

typedef struct blast_cfg {
    int64_t B, R;
    bool stride;
    int64_t iters;
    double step, delta;
    sm_store store;
} blast_cfg;

static sm_status blast_config(const sm_term *t, int64_t m, int64_t n, bool loading, blast_cfg *c) {
    if (!sm_term_find(t, "blocks"))
        return sm_fail(SM_ERR_SPEC, "blast: needs blocks=B (B dividing both dimensions)");
    sm_status st = sm_term_int(t, "blocks", 0, 1, INT64_MAX, &c->B);
    if (st != SM_OK) return st;
    if (m % c->B || n % c->B)
        return sm_fail(SM_ERR_SPEC,
                       "blast: blocks=%lld does not divide the %lldx%lld matrix (B must divide "
                       "both out=%lld and in=%lld)",
                       (long long)c->B, (long long)m, (long long)n, (long long)m, (long long)n);
    int perm = 0;
    st = sm_term_choice(t, "perm", "none|stride", 0, &perm);
    if (st != SM_OK) return st;
    c->stride = perm == 1;
    // perm=stride: block-row i's rows are B rows apart, so B n is a leading dimension for BLAS.
    if (c->stride && c->B * (m > n ? m : n) > INT_MAX)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "blast: perm=stride with blocks=%lld on a %lldx%lld "
                       "matrix needs strides over %d",
                       (long long)c->B, (long long)m, (long long)n, INT_MAX);
    if (loading && (!sm_term_find(t, "rank") || sm_term_find(t, "ratio")))
        return sm_fail(SM_ERR_SPEC, "blast: a stored spec needs rank= (and no ratio=)");
    char context[128];
    snprintf(context, sizeof context,
             "for a %lldx%lld matrix (rank R costs R (m + n + B^2) "
             "parameters)",
             (long long)m, (long long)n);
    // R = min(m, n) already represents every matrix (it holds block-low-rank with full-rank
    // blocks), so larger ranks are refused.
    st = sm_resolve_rank(t, m, n, m + n + c->B * c->B, m < n ? m : n, "", context, &c->R);
    if (st == SM_OK) st = sm_term_int(t, "iters", BLAST_ITERS, 0, 1000000, &c->iters);
    if (st == SM_OK) st = sm_term_real(t, "step", BLAST_STEP, 0.0, 2.0, &c->step);
    if (st == SM_OK) st = sm_term_real(t, "delta", BLAST_DELTA, 0.0, 1e6, &c->delta);
    if (st == SM_OK) st = sm_store_from_term(t, &c->store);
    return st;
}

static blast *blast_new(const blast_cfg *c, int64_t m, int64_t n) {
    blast *b = calloc(1, sizeof *b);
    if (b) {
        b->B = c->B;
        b->R = c->R;
        b->p = m / c->B;
        b->q = n / c->B;
        b->stride = c->stride;
    }
    return b;
}

// --- fitting -----------------------------------------------------------------------------------

// The fit's working state, in the permuted space (block-row i = rows [i p, (i+1) p) of A).
typedef struct fitw {
    int64_t m, n, B, R, p, q;
    const float *A; // (m, n) permuted and scaled
    float *U;       // (m, R)
    float *V;       // (n, R): V_j = rows [j q, (j+1) q)
    float *S;       // (B B, R)
    // scratch
    float *Xs;      // (max(m, n), R): V or U with one block's s applied
    float *G;       // (max(m, n), R): gradients
    float *P;       // (max(R, p), n): U_i^T A_i, or one block-row of the residual
    float *H, *H2;  // (R, R)
    float *Gu, *Gv; // (B, R, R): U_i^T U_i, V_j^T V_j
    float *d;       // (R)
    // activation-aware only (stats != NULL)
    const sm_stats *stats;
    float *Hn;      // (n, n) normalised damped Gram
    float *HC;      // (B, q, q) lower Cholesky factors of the diagonal blocks Hn_jj
    float *E, *EH;  // (m, n) residual U S V^T - A and E Hn
    float *Z;       // (n, R) Hn V~_i
    float *Y;       // (B, R, n) V_j^T Hn[C_j, :]
    float *Dc;      // (m, q) one column block's change
    float *Mv;      // (R, R)
} fitw;

static void fitw_free(fitw *w) {
    sm_free(w->U), sm_free(w->V), sm_free(w->S), sm_free(w->Xs), sm_free(w->G), sm_free(w->P);
    sm_free(w->H), sm_free(w->H2), sm_free(w->Gu), sm_free(w->Gv), sm_free(w->d);
    sm_free(w->Hn), sm_free(w->HC), sm_free(w->E), sm_free(w->EH), sm_free(w->Z), sm_free(w->Y);
    sm_free(w->Dc), sm_free(w->Mv);
}

static sm_status fitw_init(fitw *w, const float *A, int64_t m, int64_t n, int64_t B, int64_t R) {
    memset(w, 0, sizeof *w);
    w->m = m, w->n = n, w->B = B, w->R = R, w->p = m / B, w->q = n / B, w->A = A;
    int64_t big = m > n ? m : n, prow = R > w->p ? R : w->p;
    w->U = sm_alloc((size_t)(m * R) * sizeof(float));
    w->V = sm_alloc((size_t)(n * R) * sizeof(float));
    w->S = sm_alloc((size_t)(B * B * R) * sizeof(float));
    w->Xs = sm_alloc((size_t)(big * R) * sizeof(float));
    w->G = sm_alloc((size_t)(big * R) * sizeof(float));
    w->P = sm_alloc((size_t)(prow * n) * sizeof(float));
    w->H = sm_alloc((size_t)(R * R) * sizeof(float));
    w->H2 = sm_alloc((size_t)(R * R) * sizeof(float));
    w->Gu = sm_alloc((size_t)(B * R * R) * sizeof(float));
    w->Gv = sm_alloc((size_t)(B * R * R) * sizeof(float));
    w->d = sm_alloc((size_t)R * sizeof(float));
    if (!w->U || !w->V || !w->S || !w->Xs || !w->G || !w->P || !w->H || !w->H2 || !w->Gu ||
        !w->Gv || !w->d) {
        fitw_free(w);
        return sm_fail(SM_ERR_ALLOC,
                       "blast: out of memory for the fit of a %lldx%lld matrix "
                       "at rank %lld",
                       (long long)m, (long long)n, (long long)R);
    }
    return SM_OK;
}

// Xs (n, R) = V with block j's rows scaled by s_ij (the V~_i of the U-step).
static void scaled_v(const fitw *w, int64_t i, float *Xs) {
    int64_t R = w->R;
    for (int64_t j = 0; j < w->B; j++) {
        const float *s = w->S + (i * w->B + j) * R;
        for (int64_t c = j * w->q; c < (j + 1) * w->q; c++)
            for (int64_t r = 0; r < R; r++) Xs[c * R + r] = w->V[c * R + r] * s[r];
    }
}

// Xs (m, R) = U with block i's rows scaled by s_ij (the U~_j of the V-step).
static void scaled_u(const fitw *w, int64_t j, float *Xs) {
    int64_t R = w->R;
    for (int64_t i = 0; i < w->B; i++) {
        const float *s = w->S + (i * w->B + j) * R;
        for (int64_t a = i * w->p; a < (i + 1) * w->p; a++)
            for (int64_t r = 0; r < R; r++) Xs[a * R + r] = w->U[a * R + r] * s[r];
    }
}

// Gram matrices of the blocks of X (B blocks of rows rows each, R columns): out (B, R, R).
static void block_grams(const float *X, int64_t B, int64_t rows, int64_t R, float *out) {
    for (int64_t k = 0; k < B; k++)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)R, (int)rows, 1.0f,
                    X + k * rows * R, (int)R, X + k * rows * R, (int)R, 0.0f, out + k * R * R,
                    (int)R);
}

// Solves Y H = G (G (rows, R) row-major, overwritten by Y) for symmetric H (R, R) + eps I, by
// Cholesky on a copy (H2). When H + eps I is not numerically positive definite (eps = 0 and a
// rank-deficient Gram), the diagonal is raised step by step from 1e-7 of its mean.
static sm_status solve_damped(const float *H, float *H2, int64_t R, double eps, float *G,
                              int64_t rows) {
    double mean = 0;
    for (int64_t r = 0; r < R; r++) mean += H[r * R + r];
    mean = mean / (double)R;
    double jitter = 0;
    for (int attempt = 0; attempt < 12; attempt++) {
        memcpy(H2, H, (size_t)(R * R) * sizeof(float));
        for (int64_t r = 0; r < R; r++) H2[r * R + r] += (float)(eps + jitter);
        // Symmetric, so row- and column-major are the same matrix; G row-major (rows, R) is
        // G^T column-major with leading dimension R.
        lapack_int info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)R, H2, (lapack_int)R);
        if (info == 0) {
            LAPACKE_spotrs(LAPACK_COL_MAJOR, 'L', (lapack_int)R, (lapack_int)rows, H2,
                           (lapack_int)R, G, (lapack_int)R);
            return SM_OK;
        }
        jitter = jitter == 0 ? 1e-7 * (mean > 0 ? mean : 1.0) : jitter * 10;
    }
    return sm_fail(SM_ERR_NUMERIC,
                   "blast: a %lldx%lld Gram matrix stayed singular after "
                   "damping",
                   (long long)R, (long long)R);
}

// The activation-aware state: Hn, its diagonal blocks' Cholesky factors and the scratch.
static sm_status fitw_init_act(fitw *w, const sm_stats *s) {
    int64_t m = w->m, n = w->n, B = w->B, q = w->q, R = w->R;
    double lambda = 0, mean = 0;
    double *hd = sm_alloc((size_t)n * sizeof(double)); // the undamped diagonal
    sm_status st = hd ? SM_OK : sm_fail(SM_ERR_ALLOC, "blast: out of memory");
    if (st == SM_OK && s && s->gram) {
        st = sm_act_lambda(s, n, &lambda);
        for (int64_t j = 0; j < n && st == SM_OK; j++) hd[j] = s->gram[j * n + j];
    } else if (st == SM_OK) { // sqsum only: H = diag(sqsum), damped as sm_act_lowrank_factors does
        st = sm_act_norms(s, n, hd);
        for (int64_t j = 0; j < n && st == SM_OK; j++) hd[j] *= hd[j], lambda += hd[j] / (double)n;
        if (st == SM_OK && !(lambda > 0))
            st = sm_fail(SM_ERR_ARG, "calibration sqsum is zero (no input was seen)");
        lambda *= SM_ACT_DAMP;
    }
    for (int64_t j = 0; j < n && st == SM_OK; j++) mean += (hd[j] + lambda) / (double)n;
    w->stats = s;
    if (st == SM_OK) {
        w->Hn = sm_alloc((size_t)(n * n) * sizeof(float));
        w->HC = sm_alloc((size_t)(B * q * q) * sizeof(float));
        w->E = sm_alloc((size_t)(m * n) * sizeof(float));
        w->EH = sm_alloc((size_t)(m * n) * sizeof(float));
        w->Z = sm_alloc((size_t)(n * R) * sizeof(float));
        w->Y = sm_alloc((size_t)(B * R * n) * sizeof(float));
        w->Dc = sm_alloc((size_t)(m * q) * sizeof(float));
        w->Mv = sm_alloc((size_t)(R * R) * sizeof(float));
        if (!w->Hn || !w->HC || !w->E || !w->EH || !w->Z || !w->Y || !w->Dc || !w->Mv)
            st = sm_fail(SM_ERR_ALLOC,
                         "blast: out of memory for the activation-aware fit of a "
                         "%lldx%lld matrix",
                         (long long)m, (long long)n);
    }
    for (int64_t a = 0; a < n && st == SM_OK; a++)
        for (int64_t b = 0; b < n; b++) {
            double h = s->gram ? s->gram[a * n + b] : (a == b ? hd[a] : 0.0);
            w->Hn[a * n + b] = (float)((h + (a == b ? lambda : 0.0)) / mean);
        }
    for (int64_t j = 0; j < B && st == SM_OK; j++) {
        float *C = w->HC + j * q * q;
        for (int64_t a = 0; a < q; a++)
            memcpy(C + a * q, w->Hn + (j * q + a) * n + j * q, (size_t)q * sizeof(float));
        lapack_int info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)q, C, (lapack_int)q);
        if (info != 0)
            st = sm_fail(SM_ERR_NUMERIC,
                         "blast: calibration Gram block %lld + %g I is not positive "
                         "definite (spotrf info %d): not a Gram matrix?",
                         (long long)j, lambda, (int)info);
    }
    sm_free(hd);
    return st;
}

// f = tr(E Hn E^T), leaving E = U S V^T - A and EH = E Hn in w.
static double residual_h(fitw *w) {
    int64_t p = w->p, n = w->n, R = w->R, m = w->m;
    for (int64_t i = 0; i < w->B; i++) {
        scaled_v(w, i, w->Xs);
        float *E = w->E + i * p * n;
        memcpy(E, w->A + i * p * n, (size_t)(p * n) * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)p, (int)n, (int)R, 1.0f,
                    w->U + i * p * R, (int)R, w->Xs, (int)R, -1.0f, E, (int)n);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)n, 1.0f, w->E,
                (int)n, w->Hn, (int)n, 0.0f, w->EH, (int)n);
    double err = 0;
    for (int64_t k = 0; k < m * n; k++) err += (double)w->E[k] * w->EH[k];
    return err;
}

// One activation-aware iteration (U-step, V-step, S-step) from parameters whose loss is err
// (residual_h has just run); eta as in iterate().
static sm_status iterate_h(fitw *w, double eta, double delta, double err) {
    int64_t B = w->B, R = w->R, p = w->p, q = w->q, n = w->n, m = w->m;
    double eps = delta * sqrt(err);
    sm_status st = SM_OK;
    // U-step: rows of different U_i never couple, so all use the same E Hn.
    for (int64_t i = 0; i < B && st == SM_OK; i++) {
        scaled_v(w, i, w->Xs); // V~_i (n, R)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)R, (int)n, 1.0f,
                    w->Hn, (int)n, w->Xs, (int)R, 0.0f, w->Z, (int)R);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)R, (int)n, 1.0f, w->Xs,
                    (int)R, w->Z, (int)R, 0.0f, w->H, (int)R);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)p, (int)R, (int)n, 1.0f,
                    w->EH + i * p * n, (int)n, w->Xs, (int)R, 0.0f, w->G, (int)R);
        st = solve_damped(w->H, w->H2, R, eps, w->G, p);
        for (int64_t k = 0; k < p * R && st == SM_OK; k++) w->U[i * p * R + k] -= (float)eta * w->G[k];
    }
    if (st != SM_OK) return st;
    residual_h(w);
    // V-step, one column block at a time with E and E Hn kept current.
    block_grams(w->U, B, p, R, w->Gu);
    for (int64_t j = 0; j < B && st == SM_OK; j++) {
        memset(w->H, 0, (size_t)(R * R) * sizeof(float));
        for (int64_t i = 0; i < B; i++) {
            const float *s = w->S + (i * B + j) * R, *gu = w->Gu + i * R * R;
            for (int64_t a = 0; a < R; a++)
                for (int64_t b = 0; b < R; b++) w->H[a * R + b] += s[a] * s[b] * gu[a * R + b];
        }
        scaled_u(w, j, w->Xs); // U~_j (m, R)
        float *Vj = w->V + j * q * R, *G = w->G;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)R, (int)m, 1.0f,
                    w->EH + j * q, (int)n, w->Xs, (int)R, 0.0f, G, (int)R);
        st = solve_damped(w->H, w->H2, R, eps, G, q);
        if (st != SM_OK) break;
        LAPACKE_spotrs(LAPACK_ROW_MAJOR, 'L', (lapack_int)q, (lapack_int)R, w->HC + j * q * q,
                       (lapack_int)q, G, (lapack_int)R);
        for (int64_t k = 0; k < q * R; k++) Vj[k] -= (float)eta * G[k];
        // E[:, C_j] changes by Dc = -eta U~_j G^T, and E Hn by Dc Hn[C_j, :]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)q, (int)R, (float)-eta,
                    w->Xs, (int)R, G, (int)R, 0.0f, w->Dc, (int)q);
        for (int64_t a = 0; a < m; a++)
            for (int64_t c = 0; c < q; c++) w->E[a * n + j * q + c] += w->Dc[a * q + c];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)q, 1.0f, w->Dc,
                    (int)q, w->Hn + j * q * n, (int)n, 1.0f, w->EH, (int)n);
    }
    if (st != SM_OK) return st;
    // S-step: P = U_i^T (E Hn)_i, kept current as the s_ij of block-row i change in turn.
    for (int64_t j = 0; j < B; j++) // Y_j = V_j^T Hn[C_j, :]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)n, (int)q, 1.0f,
                    w->V + j * q * R, (int)R, w->Hn + j * q * n, (int)n, 0.0f, w->Y + j * R * n,
                    (int)n);
    for (int64_t i = 0; i < B && st == SM_OK; i++) {
        float *P = w->P, *gu = w->Gu + i * R * R; // P (R, n)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)n, (int)p, 1.0f,
                    w->U + i * p * R, (int)R, w->EH + i * p * n, (int)n, 0.0f, P, (int)n);
        for (int64_t j = 0; j < B && st == SM_OK; j++) {
            const float *Yj = w->Y + j * R * n, *Vj = w->V + j * q * R;
            float *s = w->S + (i * B + j) * R;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)R, (int)q, 1.0f,
                        Yj + j * q, (int)n, Vj, (int)R, 0.0f, w->Mv, (int)R); // V_j^T Hn_jj V_j
            for (int64_t k = 0; k < R * R; k++) w->H[k] = gu[k] * w->Mv[k];
            for (int64_t r = 0; r < R; r++) {
                double dr = 0;
                for (int64_t c = 0; c < q; c++) dr += (double)P[r * n + j * q + c] * Vj[c * R + r];
                w->d[r] = (float)dr;
            }
            st = solve_damped(w->H, w->H2, R, eps, w->d, 1);
            if (st != SM_OK) break;
            for (int64_t r = 0; r < R; r++) { // ds = -eta d;  P += Gu_i diag(ds) Y_j
                w->d[r] *= (float)-eta;
                s[r] += w->d[r];
            }
            for (int64_t a = 0; a < R; a++)
                for (int64_t b = 0; b < R; b++) w->H2[a * R + b] = gu[a * R + b] * w->d[b];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)n, (int)R, 1.0f,
                        w->H2, (int)R, Yj, (int)n, 1.0f, P, (int)n);
        }
    }
    return st;
}

// ||U_i diag(s_ij) V_j^T - A_ij||^2 summed over the grid; with G != NULL also the U-step
// gradient G (m, R): G_i = E_i V~_i.
static double residual(fitw *w, float *G) {
    int64_t p = w->p, n = w->n, R = w->R;
    double err = 0;
    for (int64_t i = 0; i < w->B; i++) {
        scaled_v(w, i, w->Xs);
        float *E = w->P; // (p, n) = U_i V~_i^T - A_i
        for (int64_t a = 0; a < p; a++)
            memcpy(E + a * n, w->A + (i * p + a) * n, (size_t)n * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)p, (int)n, (int)R, 1.0f,
                    w->U + i * p * R, (int)R, w->Xs, (int)R, -1.0f, E, (int)n);
        for (int64_t k = 0; k < p * n; k++) err += (double)E[k] * E[k];
        if (G)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)p, (int)R, (int)n, 1.0f, E,
                        (int)n, w->Xs, (int)R, 0.0f, G + i * p * R, (int)R);
    }
    return err;
}

// One iteration (U-step, V-step, S-step) from parameters whose squared error is err and whose
// U-step gradient residual() left in w->G; eta multiplies the Gauss-Newton step (2 step (1 - t/T)).
static sm_status iterate(fitw *w, double eta, double delta, double err) {
    int64_t B = w->B, R = w->R, p = w->p, q = w->q, n = w->n, m = w->m;
    double eps = delta * sqrt(err);
    sm_status st = SM_OK;
    // U-step: G_i = E_i V~_i, H_i = sum_j S_ij V_j^T V_j S_ij.
    block_grams(w->V, B, q, R, w->Gv);
    for (int64_t i = 0; i < B && st == SM_OK; i++) {
        memset(w->H, 0, (size_t)(R * R) * sizeof(float));
        for (int64_t j = 0; j < B; j++) {
            const float *s = w->S + (i * B + j) * R, *gv = w->Gv + j * R * R;
            for (int64_t a = 0; a < R; a++)
                for (int64_t b = 0; b < R; b++) w->H[a * R + b] += s[a] * s[b] * gv[a * R + b];
        }
        float *Gi = w->G + i * p * R;
        st = solve_damped(w->H, w->H2, R, eps, Gi, p);
        for (int64_t k = 0; k < p * R && st == SM_OK; k++)
            w->U[i * p * R + k] -= (float)eta * Gi[k];
    }
    // V-step: G_j = V_j H_j - A_j^T U~_j = sum_i E_ij^T U_i S_ij, H_j = sum_i S_ij U_i^T U_i S_ij.
    block_grams(w->U, B, p, R, w->Gu);
    for (int64_t j = 0; j < B && st == SM_OK; j++) {
        memset(w->H, 0, (size_t)(R * R) * sizeof(float));
        for (int64_t i = 0; i < B; i++) {
            const float *s = w->S + (i * B + j) * R, *gu = w->Gu + i * R * R;
            for (int64_t a = 0; a < R; a++)
                for (int64_t b = 0; b < R; b++) w->H[a * R + b] += s[a] * s[b] * gu[a * R + b];
        }
        scaled_u(w, j, w->Xs);
        float *Vj = w->V + j * q * R, *Gj = w->G;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)R, (int)m, -1.0f,
                    w->A + j * q, (int)n, w->Xs, (int)R, 0.0f, Gj, (int)R);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)q, (int)R, (int)R, 1.0f, Vj,
                    (int)R, w->H, (int)R, 1.0f, Gj, (int)R);
        st = solve_damped(w->H, w->H2, R, eps, Gj, q);
        for (int64_t k = 0; k < q * R && st == SM_OK; k++) Vj[k] -= (float)eta * Gj[k];
    }
    // S-step: g = (Gu_i o Gv_j) s_ij - diag(U_i^T A_ij V_j), preconditioned by Gu_i o Gv_j.
    block_grams(w->V, B, q, R, w->Gv);
    float *Vt = w->Xs; // (B R, q): V_j^T, so that the diagonal below reads both rows in order
    for (int64_t j = 0; j < B; j++)
        for (int64_t c = 0; c < q; c++)
            for (int64_t r = 0; r < R; r++) Vt[(j * R + r) * q + c] = w->V[(j * q + c) * R + r];
    for (int64_t i = 0; i < B && st == SM_OK; i++) {
        float *Pi = w->P; // (R, n) = U_i^T A_i
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)n, (int)p, 1.0f,
                    w->U + i * p * R, (int)R, w->A + i * p * n, (int)n, 0.0f, Pi, (int)n);
        for (int64_t j = 0; j < B && st == SM_OK; j++) {
            const float *gu = w->Gu + i * R * R, *gv = w->Gv + j * R * R;
            float *s = w->S + (i * B + j) * R;
            for (int64_t k = 0; k < R * R; k++) w->H[k] = gu[k] * gv[k];
            for (int64_t r = 0; r < R; r++) {
                const float *pr = Pi + r * n + j * q, *vr = Vt + (j * R + r) * q;
                double dr = 0;
                for (int64_t c = 0; c < q; c++) dr += (double)pr[c] * vr[c];
                w->d[r] = (float)-dr;
            }
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)R, (int)R, 1.0f, w->H, (int)R, s, 1, 1.0f,
                        w->d, 1);
            st = solve_damped(w->H, w->H2, R, eps, w->d, 1);
            for (int64_t r = 0; r < R && st == SM_OK; r++) s[r] -= (float)eta * w->d[r];
        }
    }
    return st;
}

// Fills coordinates [r0, R) with s = 1 and the leading R - r0 singular triplets of the residual
// of the current parameters (coordinates [0, r0) set, the rest zero on entry); with stats, the
// activation-aware low-rank fit of the residual.
static sm_status fill_spare(fitw *w, int64_t r0, uint64_t seed) {
    int64_t m = w->m, n = w->n, R = w->R, B = w->B, k = R - r0;
    if (k <= 0) return SM_OK;
    float *E = sm_alloc((size_t)(m * n) * sizeof(float));
    float *L = sm_alloc((size_t)(m * k) * sizeof(float));
    float *Rt = sm_alloc((size_t)(k * n) * sizeof(float));
    sm_status st = SM_OK;
    if (!E || !L || !Rt) st = sm_fail(SM_ERR_ALLOC, "blast: out of memory for the warm start");
    for (int64_t i = 0; i < B && st == SM_OK; i++) { // E = A - current
        scaled_v(w, i, w->Xs);
        memcpy(E + i * w->p * n, w->A + i * w->p * n, (size_t)(w->p * n) * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)w->p, (int)n, (int)R, -1.0f,
                    w->U + i * w->p * R, (int)R, w->Xs, (int)R, 1.0f, E + i * w->p * n, (int)n);
    }
    // A randomized SVD is plenty for a starting point, and k < B is small.
    sm_svd_solver rs = {.kind = 1, .p = 20, .q = 4, .seed = seed};
    if (st == SM_OK)
        st = w->stats ? sm_act_lowrank_factors(E, m, n, k, &rs, w->stats, L, Rt)
                      : sm_lowrank_factors(E, m, n, n, k, &rs, L, k, Rt, n);
    for (int64_t a = 0; a < m && st == SM_OK; a++)
        for (int64_t r = 0; r < k; r++) w->U[a * R + r0 + r] = L[a * k + r];
    for (int64_t c = 0; c < n && st == SM_OK; c++)
        for (int64_t r = 0; r < k; r++) w->V[c * R + r0 + r] = Rt[r * n + c];
    for (int64_t b = 0; b < B * B && st == SM_OK; b++)
        for (int64_t r = r0; r < R; r++) w->S[b * R + r] = 1.0f;
    sm_free(E), sm_free(L), sm_free(Rt);
    return st;
}

static void clear_params(fitw *w) {
    memset(w->U, 0, (size_t)(w->m * w->R) * sizeof(float));
    memset(w->V, 0, (size_t)(w->n * w->R) * sizeof(float));
    memset(w->S, 0, (size_t)(w->B * w->B * w->R) * sizeof(float));
}

// Warm start 0: low-rank R, s = 1 (act: the activation-aware closed form).
static sm_status start_lowrank(fitw *w, bool act) {
    int64_t m = w->m, n = w->n, R = w->R;
    clear_params(w);
    float *Rt = sm_alloc((size_t)(R * n) * sizeof(float));
    if (!Rt) return sm_fail(SM_ERR_ALLOC, "blast: out of memory for the warm start");
    sm_status st = act ? sm_act_lowrank_factors(w->A, m, n, R, NULL, w->stats, w->U, Rt)
                       : sm_lowrank_factors(w->A, m, n, n, R, NULL, w->U, R, Rt, n);
    for (int64_t c = 0; c < n && st == SM_OK; c++)
        for (int64_t r = 0; r < R; r++) w->V[c * R + r] = Rt[r * n + c];
    for (int64_t k = 0; k < w->B * w->B * R; k++) w->S[k] = 1.0f;
    sm_free(Rt);
    return st;
}

// Warm start 1: rank T = floor(R / B) per block; block (i, j) uses coordinates
// [g T, (g+1) T), g = (i + j) mod B (a Latin square: each U_i and V_j column is used once).
// act: each block row's blocks refined for the activation-aware objective (sm_act_blockrow_fit).
static sm_status start_blocklowrank(fitw *w, uint64_t seed, bool act) {
    int64_t B = w->B, R = w->R, p = w->p, q = w->q, n = w->n;
    int64_t T = R / B, mn = p < q ? p : q;
    if (T > mn) T = mn;
    clear_params(w);
    float *L = sm_alloc((size_t)(p * B * T) * sizeof(float));  // (p, B T): block j at columns j T
    float *Rt = sm_alloc((size_t)(B * T * q) * sizeof(float)); // (B T, q): block j at rows j T
    sm_status st = L && Rt ? SM_OK : sm_fail(SM_ERR_ALLOC, "blast: out of memory");
    sm_act_blocks ab = {0};
    if (st == SM_OK && act) st = sm_act_blocks_init(w->stats, n, B, &ab);
    for (int64_t i = 0; i < B && st == SM_OK; i++) {
        for (int64_t j = 0; j < B && st == SM_OK; j++)
            st = sm_lowrank_factors(w->A + i * p * n + j * q, p, q, n, T, NULL, L + j * T, B * T,
                                    Rt + j * T * q, q);
        if (st == SM_OK && act)
            st = sm_act_blockrow_fit(&ab, w->A + i * p * n, n, p, T, L, B * T, T, Rt, q, T * q,
                                     SM_ACT_SWEEPS, NULL, NULL);
        for (int64_t j = 0; j < B && st == SM_OK; j++) {
            int64_t g = (i + j) % B;
            for (int64_t a = 0; a < p; a++)
                for (int64_t t = 0; t < T; t++)
                    w->U[(i * p + a) * R + g * T + t] = L[a * B * T + j * T + t];
            for (int64_t c = 0; c < q; c++)
                for (int64_t t = 0; t < T; t++)
                    w->V[(j * q + c) * R + g * T + t] = Rt[(j * T + t) * q + c];
            for (int64_t t = 0; t < T; t++) w->S[(i * B + j) * R + g * T + t] = 1.0f;
        }
    }
    sm_act_blocks_free(&ab);
    sm_free(L), sm_free(Rt);
    if (st == SM_OK) st = fill_spare(w, B * T, seed);
    return st;
}

// Warm start 2: block-diagonal, rank min(R, p, q) per diagonal block, s_ij = [i = j].
static sm_status start_blockdiag(fitw *w, uint64_t seed) {
    int64_t B = w->B, R = w->R, p = w->p, q = w->q, n = w->n;
    int64_t T = R < p ? R : p;
    if (T > q) T = q;
    clear_params(w);
    float *L = sm_alloc((size_t)(p * T) * sizeof(float));
    float *Rt = sm_alloc((size_t)(T * q) * sizeof(float));
    sm_status st = L && Rt ? SM_OK : sm_fail(SM_ERR_ALLOC, "blast: out of memory");
    for (int64_t i = 0; i < B && st == SM_OK; i++) {
        st = sm_lowrank_factors(w->A + i * p * n + i * q, p, q, n, T, NULL, L, T, Rt, q);
        for (int64_t a = 0; a < p && st == SM_OK; a++)
            for (int64_t t = 0; t < T; t++) w->U[(i * p + a) * R + t] = L[a * T + t];
        for (int64_t c = 0; c < q && st == SM_OK; c++)
            for (int64_t t = 0; t < T; t++) w->V[(i * q + c) * R + t] = Rt[t * q + c];
        for (int64_t t = 0; t < T; t++) w->S[(i * B + i) * R + t] = 1.0f;
    }
    sm_free(L), sm_free(Rt);
    if (st == SM_OK) st = fill_spare(w, T, seed);
    return st;
}

typedef struct params {
    float *U, *V, *S;
} params;

static void params_save(const fitw *w, params *b) {
    memcpy(b->U, w->U, (size_t)(w->m * w->R) * sizeof(float));
    memcpy(b->V, w->V, (size_t)(w->n * w->R) * sizeof(float));
    memcpy(b->S, w->S, (size_t)(w->B * w->B * w->R) * sizeof(float));
}

static void params_load(fitw *w, const params *b) {
    memcpy(w->U, b->U, (size_t)(w->m * w->R) * sizeof(float));
    memcpy(w->V, b->V, (size_t)(w->n * w->R) * sizeof(float));
    memcpy(w->S, b->S, (size_t)(w->B * w->B * w->R) * sizeof(float));
}

// Runs the warm starts and the iterations on A (m, n) (permuted and scaled); leaves the best
// parameters in w.
static sm_status blast_solve(fitw *w, const blast_cfg *c, const sm_fit_opts *o) {
    params best = {sm_alloc((size_t)(w->m * w->R) * sizeof(float)),
                   sm_alloc((size_t)(w->n * w->R) * sizeof(float)),
                   sm_alloc((size_t)(w->B * w->B * w->R) * sizeof(float))};
    sm_status st =
        best.U && best.V && best.S ? SM_OK : sm_fail(SM_ERR_ALLOC, "blast: out of memory");
    bool act = w->stats != NULL;
    double a2 = 0, best_err = INFINITY;
    if (act) { // tr(A Hn A^T), for the relative errors printed
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)w->m, (int)w->n, (int)w->n,
                    1.0f, w->A, (int)w->n, w->Hn, (int)w->n, 0.0f, w->EH, (int)w->n);
        for (int64_t k = 0; k < w->m * w->n; k++) a2 += (double)w->A[k] * w->EH[k];
    } else {
        for (int64_t k = 0; k < w->m * w->n; k++) a2 += (double)w->A[k] * w->A[k];
    }
    static const char *names[] = {"low-rank", "block-low-rank", "block-diagonal",
                                  "act low-rank", "act block-low-rank"};
    int best_start = -1;
    for (int s = 0; s < (act ? 5 : 3) && st == SM_OK; s++) {
        // B = 1: the block starts are the same low-rank projection
        if ((s == 1 || s == 2 || s == 4) && w->B == 1) continue;
        if ((s == 1 || s == 4) && w->R < w->B) continue;
        st = s == 0   ? start_lowrank(w, false)
             : s == 1 ? start_blocklowrank(w, o->seed, false)
             : s == 2 ? start_blockdiag(w, o->seed)
             : s == 3 ? start_lowrank(w, true)
                      : start_blocklowrank(w, o->seed, true);
        if (st != SM_OK) break;
        double e = act ? residual_h(w) : residual(w, NULL);
        if (o->verbose)
            fprintf(stderr, "blast: warm start %-18s %s %.6f\n", names[s],
                    act ? "act_rel_error" : "rel_error",
                    sqrt(e / (a2 > 0 ? a2 : 1)));
        if (e < best_err) {
            best_err = e;
            best_start = s;
            params_save(w, &best);
        }
    }
    if (st == SM_OK) params_load(w, &best);
    for (int64_t t = 0; st == SM_OK; t++) {
        double e = act ? residual_h(w) : residual(w, t < c->iters ? w->G : NULL);
        if (o->verbose)
            fprintf(stderr, "blast: iter %lld/%lld %s %.6f\n", (long long)t, (long long)c->iters,
                    act ? "act_rel_error" : "rel_error", sqrt(e / (a2 > 0 ? a2 : 1)));
        if (e < best_err) {
            best_err = e;
            params_save(w, &best);
        }
        if (t == c->iters) break;
        double eta = 2.0 * c->step * (1.0 - (double)t / (double)c->iters);
        st = act ? iterate_h(w, eta, c->delta, e) : iterate(w, eta, c->delta, e);
    }
    if (st == SM_OK) params_load(w, &best);
    if (o->verbose && st == SM_OK)
        fprintf(stderr, "blast: kept %s %.6f (warm start: %s)\n",
                act ? "act_rel_error" : "rel_error", sqrt(best_err / (a2 > 0 ? a2 : 1)), best_start >= 0 ? names[best_start] : "-");
    sm_free(best.U), sm_free(best.V), sm_free(best.S);
    return st;
}

// Unit-norm columns of every U_i and V_j with the norms moved into s (as the paper does on
// load): quantized U and V then see entries of one scale, and s carries the magnitudes.
static void normalize(fitw *w, float scale) {
    int64_t B = w->B, R = w->R, p = w->p, q = w->q;
    for (int64_t r = 0; r < R; r++) {
        for (int64_t k = 0; k < B; k++) {
            double a = 0, b = 0;
            for (int64_t x = 0; x < p; x++)
                a += (double)w->U[(k * p + x) * R + r] * w->U[(k * p + x) * R + r];
            for (int64_t x = 0; x < q; x++)
                b += (double)w->V[(k * q + x) * R + r] * w->V[(k * q + x) * R + r];
            a = sqrt(a), b = sqrt(b);
            if (a > 0)
                for (int64_t x = 0; x < p; x++) w->U[(k * p + x) * R + r] /= (float)a;
            if (b > 0)
                for (int64_t x = 0; x < q; x++) w->V[(k * q + x) * R + r] /= (float)b;
            for (int64_t j = 0; j < B; j++) w->S[(k * B + j) * R + r] *= (float)a; // row k
            for (int64_t i = 0; i < B; i++) w->S[(i * B + k) * R + r] *= (float)b; // column k
        }
        for (int64_t b = 0; b < B * B; b++) w->S[b * R + r] *= scale;
    }
}

static sm_status blast_store(blast *b, const fitw *w, sm_store store) {
    int64_t B = w->B, R = w->R, q = w->q;
    float *Vt = sm_alloc((size_t)(B * R * q) * sizeof(float)); // (B R, q): V_j^T
    if (!Vt) return sm_fail(SM_ERR_ALLOC, "blast: out of memory");
    for (int64_t j = 0; j < B; j++)
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < q; c++) Vt[(j * R + r) * q + c] = w->V[(j * q + c) * R + r];
    sm_status st = sm_factor_init(&b->U, w->m, R, store, w->U, R);
    if (st == SM_OK) st = sm_factor_init(&b->V, B * R, q, store, Vt, q);
    if (st == SM_OK) st = sm_factor_init(&b->S, B * B, R, SM_STORE_F32, w->S, R);
    sm_free(Vt);
    return st;
}

static sm_status blast_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    int64_t m = op->m, n = op->n;
    blast_cfg c;
    sm_status st = blast_config(t, m, n, false, &c);
    if (st != SM_OK) return st;
    int64_t B = c.B, p = m / B;
    blast *b = blast_new(&c, m, n);
    float *A = sm_alloc((size_t)(m * n) * sizeof(float)); // (m, n) permuted, scaled
    if (!b || !A) {
        free(b), sm_free(A);
        return sm_fail(SM_ERR_ALLOC, "blast: out of memory");
    }
    double ss = 0;
    for (int64_t k = 0; k < m * n; k++) ss += (double)W[k] * W[k];
    float rms = (float)sqrt(ss / (double)(m * n)), inv = rms > 0 ? 1.0f / rms : 1.0f;
    for (int64_t i = 0; i < B; i++)
        for (int64_t a = 0; a < p; a++) {
            const float *src = W + (c.stride ? a * B + i : i * p + a) * n;
            float *dst = A + (i * p + a) * n;
            for (int64_t k = 0; k < n; k++) dst[k] = src[k] * inv;
        }
    fitw w;
    st = fitw_init(&w, A, m, n, B, c.R);
    if (st == SM_OK) {
        if (o && o->stats) st = fitw_init_act(&w, o->stats);
        if (st == SM_OK && rms > 0)
            st = blast_solve(&w, &c, o);
        else if (st == SM_OK) // W = 0: zero factors are exact
            clear_params(&w);
        if (st == SM_OK) normalize(&w, rms);
        if (st == SM_OK) st = blast_store(b, &w, c.store);
        fitw_free(&w);
    }
    sm_free(A);
    if (st != SM_OK) {
        blast_free(b);
        return st;
    }
    op->impl = b;
    sm_canon cn;
    sm_canon_init(&cn, "blast");
    sm_canon_add(&cn, "blocks", "%lld", (long long)B);
    sm_canon_add(&cn, "rank", "%lld", (long long)c.R);
    if (c.stride) sm_canon_add(&cn, "perm", "stride");
    if (c.iters != BLAST_ITERS) sm_canon_add(&cn, "iters", "%lld", (long long)c.iters);
    if (c.step != BLAST_STEP) sm_canon_add(&cn, "step", "%.17g", c.step);
    if (c.delta != BLAST_DELTA) sm_canon_add(&cn, "delta", "%.17g", c.delta);
    if (c.store != SM_STORE_F32) sm_canon_add(&cn, "dtype", "%s", sm_store_name(c.store));
    return sm_op_set_spec(op, &cn);
}

static sm_status blast_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    blast_cfg c;
    sm_status st = blast_config(t, op->m, op->n, true, &c);
    if (st != SM_OK) return st;
    blast *b = blast_new(&c, op->m, op->n);
    if (!b) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = sm_factor_load_3d(&b->U, c.B, b->p, c.R, c.store, "U", parts, nparts);
    if (st == SM_OK) st = sm_factor_load_3d(&b->V, c.B, c.R, b->q, c.store, "V", parts, nparts);
    if (st == SM_OK) st = sm_factor_load_3d(&b->S, c.B, c.B, c.R, SM_STORE_F32, "S", parts, nparts);
    if (st != SM_OK) {
        blast_free(b);
        return st;
    }
    op->impl = b;
    return SM_OK;
}

// --- apply ---------------------------------------------------------------------------------

static size_t factor_ws(const blast *b) {
    sm_factor u = sm_factor_rows(&b->U, 0, b->p), v = sm_factor_rows(&b->V, 0, b->R);
    size_t a = sm_factor_workspace(&u, 0), c = sm_factor_workspace(&v, 0);
    return a > c ? a : c;
}

// Z (N, B R), T (N, R), the permuted output/input (N, m) when perm=stride, factor scratch.
static size_t blast_workspace(const sm_op *op, int64_t N) {
    const blast *b = BL(op);
    return (size_t)(N * (2 * b->B * b->R + (b->stride ? op->m : 0))) + factor_ws(b);
}

// T (N, B R): T[x, o R + r] = sum_k c(o, k)[r] Z[x, k R + r] for every output block o, with
// c(o, k) = s_ok (apply: o = i, k = j) or s_ko (apply_t: o = j, k = i). Rows go in groups of 8, so
// each s vector is read once per group from L1 (S is B^2 R floats: 1 MB for B = 16, R = 1024).
static void couple(int64_t N, int64_t B, int64_t R, const float *Z, const float *S, bool trans,
                   float *T) {
    const sm_blast_kernels *kt = sm_blast_kernels_get();
    for (int64_t x0 = 0; x0 < N; x0 += 8) {
        int64_t x1 = x0 + 8 < N ? x0 + 8 : N;
        for (int64_t o = 0; o < B; o++)
            for (int64_t k = 0; k < B; k++) {
                const float *s = S + (trans ? k * B + o : o * B + k) * R;
                for (int64_t x = x0; x < x1; x++)
                    kt->mul(R, s, Z + x * B * R + k * R, T + x * B * R + o * R, k > 0);
            }
    }
}

static void blast_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const blast *b = BL(op);
    int64_t B = b->B, R = b->R, p = b->p, m = op->m, n = op->n;
    float *Z = work, *T = Z + N * B * R, *Yp = T + N * B * R; // Z, T (N, B R)
    float *sub = Yp + (b->stride ? N * m : 0);
    for (int64_t j = 0; j < B; j++) { // Z_j = X_j V_j
        sm_factor vj = sm_factor_rows(&b->V, j * R, (j + 1) * R);
        sm_factor_mm(&vj, N, X + j * b->q, n, Z + j * R, B * R, 0.0f, sub);
    }
    couple(N, B, R, Z, b->S.data, false, T); // T_i = sum_j s_ij Z_j
    float *out = b->stride ? Yp : Y;
    for (int64_t i = 0; i < B; i++) { // Y_i = T_i U_i^T
        sm_factor ui = sm_factor_rows(&b->U, i * p, (i + 1) * p);
        sm_factor_mm(&ui, N, T + i * R, B * R, out + i * p, m, 0.0f, sub);
    }
    if (b->stride) // Y[x, a B + i] = Yp[x, i p + a]
        for (int64_t x = 0; x < N; x++)
            for (int64_t i = 0; i < B; i++)
                for (int64_t a = 0; a < p; a++) Y[x * m + a * B + i] = Yp[x * m + i * p + a];
}

static void blast_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const blast *b = BL(op);
    int64_t B = b->B, R = b->R, p = b->p, q = b->q, m = op->m, n = op->n;
    float *Z = work, *T = Z + N * B * R, *Yp = T + N * B * R;
    float *sub = Yp + (b->stride ? N * m : 0);
    const float *in = Y;
    if (b->stride) {
        for (int64_t x = 0; x < N; x++)
            for (int64_t i = 0; i < B; i++)
                for (int64_t a = 0; a < p; a++) Yp[x * m + i * p + a] = Y[x * m + a * B + i];
        in = Yp;
    }
    for (int64_t i = 0; i < B; i++) { // Z_i = Y_i U_i
        sm_factor ui = sm_factor_rows(&b->U, i * p, (i + 1) * p);
        sm_factor_mm_t(&ui, N, in + i * p, m, Z + i * R, B * R, 0.0f, sub);
    }
    couple(N, B, R, Z, b->S.data, true, T); // T_j = sum_i s_ij Z_i
    for (int64_t j = 0; j < B; j++) {       // X_j = T_j V_j^T
        sm_factor vj = sm_factor_rows(&b->V, j * R, (j + 1) * R);
        sm_factor_mm_t(&vj, N, T + j * R, B * R, X + j * q, n, 0.0f, sub);
    }
}

static sm_status blast_to_dense(const sm_op *op, float *W) {
    const blast *b = BL(op);
    int64_t B = b->B, R = b->R, p = b->p, q = b->q, n = op->n;
    float *U = sm_alloc((size_t)(op->m * R) * sizeof(float));
    float *Vt = sm_alloc((size_t)(B * R * q) * sizeof(float));
    float *Us = sm_alloc((size_t)(p * R) * sizeof(float));
    if (!U || !Vt || !Us) {
        sm_free(U), sm_free(Vt), sm_free(Us);
        return sm_fail(SM_ERR_ALLOC, "blast: out of memory in to_dense");
    }
    sm_factor_decode(&b->U, U, R);
    sm_factor_decode(&b->V, Vt, q);
    const float *S = b->S.data;
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < B; j++) {
            const float *s = S + (i * B + j) * R;
            for (int64_t a = 0; a < p; a++)
                for (int64_t r = 0; r < R; r++) Us[a * R + r] = U[(i * p + a) * R + r] * s[r];
            // Block-row i: rows i p + a, or a B + i (stride B n) with perm=stride.
            float *dst = b->stride ? W + i * n + j * q : W + i * p * n + j * q;
            int ld = (int)(b->stride ? B * n : n);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)p, (int)q, (int)R, 1.0f, Us,
                        (int)R, Vt + j * R * q, (int)q, 0.0f, dst, ld);
        }
    sm_free(U), sm_free(Vt), sm_free(Us);
    return SM_OK;
}

static int64_t blast_nparams(const sm_op *op) {
    return BL(op)->R * (op->m + op->n + BL(op)->B * BL(op)->B);
}

static int64_t blast_nbytes(const sm_op *op) {
    return sm_factor_nbytes(&BL(op)->U) + sm_factor_nbytes(&BL(op)->V) +
           sm_factor_nbytes(&BL(op)->S);
}

static int blast_parts(const sm_op *op, sm_part *out, int cap) {
    const blast *b = BL(op);
    int nu = sm_factor_parts_3d(&b->U, "U", b->B, b->p, NULL);
    int nv = sm_factor_parts_3d(&b->V, "V", b->B, b->R, NULL);
    int ns = sm_factor_parts_3d(&b->S, "S", b->B, b->B, NULL);
    if (out && cap >= nu + nv + ns) {
        sm_factor_parts_3d(&b->U, "U", b->B, b->p, out);
        sm_factor_parts_3d(&b->V, "V", b->B, b->R, out + nu);
        sm_factor_parts_3d(&b->S, "S", b->B, b->B, out + nu + nv);
    }
    return nu + nv + ns;
}

const sm_op_vtbl sm_vtbl_blast = {
    .name = "blast",
    .keys = "blocks,rank,ratio,perm,iters,step,delta,dtype",
    .help = "  blocks=B     B x B grid of blocks (required; B | in, B | out)\n"
            "  rank=R       shared rank (1 <= R <= min(m, n)); nparams = R (m + n + B^2); or\n"
            "  ratio=X      the largest R with R (m + n + B^2) <= X m n\n"
            "  perm=none    none, or stride: rows grouped by residue mod B (Monarch's order)\n"
            "  iters=300    preconditioned gradient iterations after the warm start\n"
            "  step=1       first step, decaying linearly to 0 (1 = the paper's; 0.5 = plain "
            "damped ALS)\n"
            "  delta=0.01   damping of the Gram matrices: delta ||residual||_F\n"
            "  dtype=f32    U, V storage: f32, f16, bf16, q8, q4 (S stays f32)",
    .fit = blast_fit,
    .load = blast_load,
    .apply = blast_apply,
    .apply_t = blast_apply_t,
    .workspace = blast_workspace,
    .to_dense = blast_to_dense,
    .nparams = blast_nparams,
    .nbytes = blast_nbytes,
    .macs = blast_nparams,
    .parts = blast_parts,
    .free_impl = blast_free,
};
