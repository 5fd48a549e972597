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
