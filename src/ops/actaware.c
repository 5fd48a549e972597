// Calibration statistics: checks, damping, Cholesky factor, and the activation-aware error.
#include "actaware.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

sm_status sm_act_lambda(const sm_stats *s, int64_t n, double *lambda) {
    if (!s || !s->gram)
        return sm_fail(SM_ERR_ARG, "calibration statistics without an input Gram matrix");
    double tr = 0;
    for (int64_t i = 0; i < n * n; i++)
        if (!isfinite(s->gram[i]))
            return sm_fail(SM_ERR_ARG, "calibration Gram has a non-finite entry at [%lld, %lld]",
                           (long long)(i / n), (long long)(i % n));
    for (int64_t i = 0; i < n; i++) {
        double d = s->gram[i * n + i];
        if (d < 0)
            return sm_fail(SM_ERR_ARG, "calibration Gram has a negative diagonal entry %g at %lld",
                           d, (long long)i);
        tr += d;
    }
    if (!(tr > 0)) return sm_fail(SM_ERR_ARG, "calibration Gram is zero (no input was seen)");
    *lambda = SM_ACT_DAMP * tr / (double)n;
    return SM_OK;
}

sm_status sm_act_cholesky(const sm_stats *s, int64_t n, double **L, double *lambda) {
    *L = NULL;
    sm_status st = sm_act_lambda(s, n, lambda);
    if (st != SM_OK) return st;
    double *H = sm_alloc((size_t)(n * n) * sizeof(double));
    if (!H)
        return sm_fail(SM_ERR_ALLOC, "out of memory for a %lldx%lld Gram", (long long)n,
                       (long long)n);
    memcpy(H, s->gram, (size_t)(n * n) * sizeof(double));
    for (int64_t i = 0; i < n; i++) H[i * n + i] += *lambda;
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, H, (lapack_int)n);
    if (info != 0) {
        sm_free(H);
        return sm_fail(SM_ERR_NUMERIC,
                       "calibration Gram + %g I is not positive definite "
                       "(dpotrf info %d): not a Gram matrix?",
                       *lambda, (int)info);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) H[i * n + j] = 0;
    *L = H;
    return SM_OK;
}

sm_status sm_act_norms(const sm_stats *s, int64_t n, double *norms) {
    if (!s || (!s->sqsum && !s->gram))
        return sm_fail(SM_ERR_ARG, "calibration statistics have neither sqsum nor gram");
    for (int64_t j = 0; j < n; j++) {
        double v = s->sqsum ? s->sqsum[j] : s->gram[j * n + j];
        if (!(v >= 0) || !isfinite(v))
            return sm_fail(SM_ERR_ARG, "calibration %s has a bad entry %g at channel %lld",
                           s->sqsum ? "sqsum" : "Gram diagonal", v, (long long)j);
        norms[j] = sqrt(v);
    }
    return SM_OK;
}

double sm_act_error2(const float *W, const float *W_hat, int64_t m, int64_t n, const double *H) {
    double *D = sm_alloc((size_t)(m * n) * sizeof(double));
    double *DH = sm_alloc((size_t)(m * n) * sizeof(double));
    double e = NAN;
    if (D && DH) {
        for (int64_t i = 0; i < m * n; i++) D[i] = (double)W[i] - (double)W_hat[i];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)n, 1.0, D,
                    (int)n, H, (int)n, 0.0, DH, (int)n);
        e = 0;
        for (int64_t i = 0; i < m * n; i++) e += D[i] * DH[i];
    }
    sm_free(D), sm_free(DH);
    return e;
}

sm_status sm_act_lowrank_factors(const float *W, int64_t m, int64_t n, int64_t r,
                                 const sm_svd_solver *solver, const sm_stats *s, float *L,
                                 float *R) {
    double *C = NULL, lambda = 0;
    double *dg = NULL; // the diagonal C when only sqsum is given
    sm_status st;
    if (s && s->gram) {
        st = sm_act_cholesky(s, n, &C, &lambda);
    } else {
        dg = sm_alloc((size_t)n * sizeof(double));
        st = dg ? sm_act_norms(s, n, dg) : sm_fail(SM_ERR_ALLOC, "out of memory");
        double mean = 0;
        for (int64_t j = 0; j < n && st == SM_OK; j++) mean += dg[j] * dg[j] / (double)n;
        if (st == SM_OK && !(mean > 0))
            st = sm_fail(SM_ERR_ARG, "calibration sqsum is zero (no input was seen)");
        for (int64_t j = 0; j < n && st == SM_OK; j++)
            dg[j] = sqrt(dg[j] * dg[j] + SM_ACT_DAMP * mean);
    }
    float *Aw = st == SM_OK ? sm_alloc((size_t)(m * n) * sizeof(float)) : NULL;
    double *Wd = st == SM_OK && C ? sm_alloc((size_t)(m * n) * sizeof(double)) : NULL;
    double *Rd = st == SM_OK ? sm_alloc((size_t)(r * n) * sizeof(double)) : NULL;
    if (st == SM_OK && (!Aw || !Rd || (C && !Wd)))
        st = sm_fail(SM_ERR_ALLOC, "lowrank: out of memory for the activation-aware fit");
    if (st == SM_OK) { // Aw = W C
        if (C) {
            for (int64_t i = 0; i < m * n; i++) Wd[i] = W[i];
            cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, (int)m,
                        (int)n, 1.0, C, (int)n, Wd, (int)n);
            for (int64_t i = 0; i < m * n; i++) Aw[i] = (float)Wd[i];
        } else {
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++) Aw[i * n + j] = (float)(W[i * n + j] * dg[j]);
        }
        st = sm_lowrank_factors(Aw, m, n, n, r, solver, L, r, R, n);
    }
    if (st == SM_OK) { // R = Rw C^-1
        for (int64_t i = 0; i < r * n; i++) Rd[i] = R[i];
        if (C)
            cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, (int)r,
                        (int)n, 1.0, C, (int)n, Rd, (int)n);
        else
            for (int64_t i = 0; i < r; i++)
                for (int64_t j = 0; j < n; j++) Rd[i * n + j] /= dg[j];
        for (int64_t i = 0; i < r * n; i++) R[i] = (float)Rd[i];
    }
    sm_free(C), sm_free(dg), sm_free(Aw), sm_free(Wd), sm_free(Rd);
    return st;
}

double sm_act_objective(const float *W, const float *W_hat, int64_t m, int64_t n,
                        const sm_stats *s) {
    if (s && s->gram) return sm_act_error2(W, W_hat, m, n, s->gram);
    double e = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double d = (double)W[i * n + j] - (double)W_hat[i * n + j];
            e += d * d * (s && s->sqsum ? s->sqsum[j] : 1.0);
        }
    return e;
}

sm_status sm_act_whiten(const sm_stats *s, int64_t n, double *A, int64_t rows, double *A2,
                        int64_t rows2) {
    double *C = NULL, lambda = 0;
    if (s && s->gram) {
        sm_status st = sm_act_cholesky(s, n, &C, &lambda);
        if (st != SM_OK) return st;
        cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, (int)rows,
                    (int)n, 1.0, C, (int)n, A, (int)n);
        if (A2)
            cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit,
                        (int)rows2, (int)n, 1.0, C, (int)n, A2, (int)n);
        sm_free(C);
        return SM_OK;
    }
    double *d = sm_alloc((size_t)n * sizeof(double)), mean = 0;
    sm_status st = d ? sm_act_norms(s, n, d) : sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int64_t j = 0; j < n && st == SM_OK; j++) mean += d[j] * d[j] / (double)n;
    if (st == SM_OK && !(mean > 0))
        st = sm_fail(SM_ERR_ARG, "calibration sqsum is zero (no input was seen)");
    for (int64_t j = 0; j < n && st == SM_OK; j++) d[j] = sqrt(d[j] * d[j] + SM_ACT_DAMP * mean);
    for (int64_t i = 0; i < rows && st == SM_OK; i++)
        for (int64_t j = 0; j < n; j++) A[i * n + j] *= d[j];
    for (int64_t i = 0; A2 && i < rows2 && st == SM_OK; i++)
        for (int64_t j = 0; j < n; j++) A2[i * n + j] *= d[j];
    sm_free(d);
    return st;
}

// --- grids of rank-T blocks ----------------------------------------------------------------------

void sm_act_blocks_free(sm_act_blocks *b) {
    sm_free(b->hd), sm_free(b->C);
    b->hd = b->C = NULL;
}

sm_status sm_act_blocks_init(const sm_stats *s, int64_t n, int64_t K, sm_act_blocks *b) {
    memset(b, 0, sizeof *b);
    b->n = n, b->K = K, b->p = n / K;
    int64_t p = b->p;
    sm_status st;
    if (s && s->gram) {
        st = sm_act_lambda(s, n, &b->lambda);
        b->gram = s->gram;
    } else {
        b->hd = sm_alloc((size_t)n * sizeof(double));
        st = b->hd ? sm_act_norms(s, n, b->hd) : sm_fail(SM_ERR_ALLOC, "out of memory");
        double mean = 0;
        for (int64_t j = 0; j < n && st == SM_OK; j++) {
            b->hd[j] *= b->hd[j];
            mean += b->hd[j] / (double)n;
        }
        if (st == SM_OK && !(mean > 0))
            st = sm_fail(SM_ERR_ARG, "calibration sqsum is zero (no input was seen)");
        b->lambda = SM_ACT_DAMP * mean; // as sm_act_lowrank_factors damps the diagonal
    }
    if (st == SM_OK) {
        b->C = sm_alloc((size_t)(K * p * p) * sizeof(double));
        if (!b->C) st = sm_fail(SM_ERR_ALLOC, "out of memory for %lld Gram blocks", (long long)K);
    }
    for (int64_t j = 0; j < K && st == SM_OK; j++) {
        double *Cj = b->C + j * p * p;
        for (int64_t a = 0; a < p; a++)
            for (int64_t c = 0; c < p; c++)
                Cj[a * p + c] = b->gram ? b->gram[(j * p + a) * n + j * p + c]
                                        : (a == c ? b->hd[j * p + a] : 0.0);
        for (int64_t a = 0; a < p; a++) Cj[a * p + a] += b->lambda;
        lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)p, Cj, (lapack_int)p);
        if (info != 0)
            st = sm_fail(SM_ERR_NUMERIC,
                         "calibration Gram block %lld + %g I is not positive definite "
                         "(dpotrf info %d): not a Gram matrix?",
                         (long long)j, b->lambda, (int)info);
        for (int64_t a = 0; a < p; a++)
            for (int64_t c = a + 1; c < p; c++) Cj[a * p + c] = 0;
    }
    if (st != SM_OK) sm_act_blocks_free(b);
    return st;
}

// M (s, p) = D H'[:, C_j] for D (s, n), H' = H + lambda I (H's column block is read in place).
static void blocks_dh(const sm_act_blocks *b, const double *D, int64_t s, int64_t j, double *M) {
    int64_t n = b->n, p = b->p;
    if (b->gram) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s, (int)p, (int)n, 1.0, D,
                    (int)n, b->gram + j * p, (int)n, 0.0, M, (int)p);
        for (int64_t i = 0; i < s; i++)
            for (int64_t c = 0; c < p; c++) M[i * p + c] += b->lambda * D[i * n + j * p + c];
    } else {
        for (int64_t i = 0; i < s; i++)
            for (int64_t c = 0; c < p; c++)
                M[i * p + c] = (b->hd[j * p + c] + b->lambda) * D[i * n + j * p + c];
    }
}

// tr(D H' D^T) for D (s, n); DH (s, n) is scratch (unused without a Gram).
static double blocks_obj(const sm_act_blocks *b, const double *D, int64_t s, double *DH) {
    int64_t n = b->n;
    double e = 0;
    if (b->gram) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s, (int)n, (int)n, 1.0, D,
                    (int)n, b->gram, (int)n, 0.0, DH, (int)n);
        for (int64_t k = 0; k < s * n; k++) e += D[k] * (DH[k] + b->lambda * D[k]);
    } else {
        for (int64_t i = 0; i < s; i++)
            for (int64_t c = 0; c < n; c++) e += D[i * n + c] * D[i * n + c] * (b->hd[c] + b->lambda);
    }
    return e;
}

// Bj (s, p) = L_j R_j in double, from the stored float factors.
static void blocks_product(const float *Lj, int64_t ldl, const float *Rj, int64_t ldr, int64_t s,
                           int64_t T, int64_t p, double *Bj) {
    for (int64_t i = 0; i < s; i++)
        for (int64_t c = 0; c < p; c++) {
            double v = 0;
            for (int64_t t = 0; t < T; t++) v += (double)Lj[i * ldl + t] * Rj[t * ldr + c];
            Bj[i * p + c] = v;
        }
}

// Copies the K blocks' factors to (save) or from (!save) bestL (K, s, T), bestR (K, T, p).
static void blocks_copy(float *L, int64_t ldl, int64_t lstep, float *R, int64_t ldr, int64_t rstep,
                        int64_t K, int64_t s, int64_t T, int64_t p, float *bestL, float *bestR,
                        bool save) {
    size_t lb = (size_t)T * sizeof(float), rb = (size_t)p * sizeof(float);
    for (int64_t j = 0; j < K; j++) {
        for (int64_t i = 0; i < s; i++) {
            float *a = L + j * lstep + i * ldl, *c = bestL + (j * s + i) * T;
            memcpy(save ? c : a, save ? a : c, lb);
        }
        for (int64_t t = 0; t < T; t++) {
            float *a = R + j * rstep + t * ldr, *c = bestR + (j * T + t) * p;
            memcpy(save ? c : a, save ? a : c, rb);
        }
    }
}

sm_status sm_act_blockrow_fit(const sm_act_blocks *b, const float *Wr, int64_t ldw, int64_t s,
                              int64_t T, float *L, int64_t ldl, int64_t lstep, float *R,
                              int64_t ldr, int64_t rstep, int max_sweeps, double *obj0,
                              double *obj) {
    int64_t n = b->n, K = b->K, p = b->p;
    double *D = sm_alloc((size_t)(s * n) * sizeof(double));  // (s, n) residual W - fit
    double *DH = sm_alloc((size_t)(s * n) * sizeof(double)); // (s, n) scratch
    double *Bj = sm_alloc((size_t)(s * p) * sizeof(double)); // (s, p)
    double *M = sm_alloc((size_t)(s * p) * sizeof(double));  // (s, p)
    double *Rd = sm_alloc((size_t)(T * p) * sizeof(double)); // (T, p)
    float *Zf = sm_alloc((size_t)(s * p) * sizeof(float));   // (s, p)
    float *Lf = sm_alloc((size_t)(s * T) * sizeof(float));   // (s, T)
    float *Rf = sm_alloc((size_t)(T * p) * sizeof(float));   // (T, p)
    float *bestL = sm_alloc((size_t)(K * s * T) * sizeof(float)); // (K, s, T)
    float *bestR = sm_alloc((size_t)(K * T * p) * sizeof(float)); // (K, T, p)
    sm_status st = SM_OK;
    if (!D || !DH || !Bj || !M || !Rd || !Zf || !Lf || !Rf || !bestL || !bestR)
        st = sm_fail(SM_ERR_ALLOC, "out of memory for an activation-aware block fit");
    for (int64_t i = 0; i < s && st == SM_OK; i++)
        for (int64_t c = 0; c < n; c++) D[i * n + c] = Wr[i * ldw + c];
    for (int64_t j = 0; j < K && st == SM_OK; j++) {
        blocks_product(L + j * lstep, ldl, R + j * rstep, ldr, s, T, p, Bj);
        for (int64_t i = 0; i < s; i++)
            for (int64_t c = 0; c < p; c++) D[i * n + j * p + c] -= Bj[i * p + c];
    }
    double best = st == SM_OK ? blocks_obj(b, D, s, DH) : 0;
    if (obj0) *obj0 = best;
    if (st == SM_OK) blocks_copy(L, ldl, lstep, R, ldr, rstep, K, s, T, p, bestL, bestR, true);
    for (int sweep = 0; sweep < max_sweeps && st == SM_OK && best > 0; sweep++) {
        for (int64_t j = 0; j < K && st == SM_OK; j++) {
            float *Lj = L + j * lstep, *Rj = R + j * rstep;
            const double *Cj = b->C + j * p * p;
            blocks_product(Lj, ldl, Rj, ldr, s, T, p, Bj);
            blocks_dh(b, D, s, j, M); // M = D H'[:, C_j]
            // Z C_j = B_j C_j + M C_j^-T
            cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, (int)s,
                        (int)p, 1.0, Cj, (int)p, M, (int)p);
            cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, (int)s,
                        (int)p, 1.0, Cj, (int)p, Bj, (int)p);
            for (int64_t k = 0; k < s * p; k++) Zf[k] = (float)(Bj[k] + M[k]);
            st = sm_lowrank_factors(Zf, s, p, p, T, NULL, Lf, T, Rf, p);
            if (st != SM_OK) break;
            for (int64_t k = 0; k < T * p; k++) Rd[k] = Rf[k]; // R_j = Rw C_j^-1
            cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, (int)T,
                        (int)p, 1.0, Cj, (int)p, Rd, (int)p);
            // D_j += B_j(old) - B_j(new), both as products of the stored floats
            blocks_product(Lj, ldl, Rj, ldr, s, T, p, Bj);
            for (int64_t i = 0; i < s; i++)
                for (int64_t c = 0; c < p; c++) D[i * n + j * p + c] += Bj[i * p + c];
            for (int64_t i = 0; i < s; i++)
                for (int64_t t = 0; t < T; t++) Lj[i * ldl + t] = Lf[i * T + t];
            for (int64_t t = 0; t < T; t++)
                for (int64_t c = 0; c < p; c++) Rj[t * ldr + c] = (float)Rd[t * p + c];
            blocks_product(Lj, ldl, Rj, ldr, s, T, p, Bj);
            for (int64_t i = 0; i < s; i++)
                for (int64_t c = 0; c < p; c++) D[i * n + j * p + c] -= Bj[i * p + c];
        }
        if (st != SM_OK) break;
        double e = blocks_obj(b, D, s, DH);
        if (!(e < best)) break; // rounding has stalled it: the saved iterate stands
        bool settled = e > best * (1 - 1e-4);
        best = e;
        blocks_copy(L, ldl, lstep, R, ldr, rstep, K, s, T, p, bestL, bestR, true);
        if (settled) break;
    }
    // The factors hold the last iterate: put the best back.
    if (st == SM_OK) blocks_copy(L, ldl, lstep, R, ldr, rstep, K, s, T, p, bestL, bestR, false);
    if (obj) *obj = best;
    sm_free(D), sm_free(DH), sm_free(Bj), sm_free(M), sm_free(Rd), sm_free(Zf), sm_free(Lf);
    sm_free(Rf), sm_free(bestL), sm_free(bestR);
    return st;
}
