#include "linalg.h"

#include <lapacke.h>
#include <math.h>
#include <string.h>

sm_status sm_svd(const float *A, int64_t m, int64_t n, int64_t lda, float *U, float *S,
                 float *Vt) {
    int64_t k = m < n ? m : n;
    if (k == 0) return SM_OK;
    float *a = sm_alloc((size_t)(m * n) * sizeof(float));
    if (!a) return sm_fail(SM_ERR_ALLOC, "svd: out of memory for a %lldx%lld copy",
                           (long long)m, (long long)n);
    for (int64_t i = 0; i < m; i++) memcpy(a + i * n, A + i * lda, (size_t)n * sizeof(float));
    bool vectors = U || Vt;
    float *u = U, *vt = Vt;
    float *tmp_u = NULL, *tmp_vt = NULL;
    if (vectors && !U) u = tmp_u = sm_alloc((size_t)(m * k) * sizeof(float));
    if (vectors && !Vt) vt = tmp_vt = sm_alloc((size_t)(k * n) * sizeof(float));
    if (vectors && (!u || !vt)) {
        sm_free(a), sm_free(tmp_u), sm_free(tmp_vt);
        return sm_fail(SM_ERR_ALLOC, "svd: out of memory");
    }
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, vectors ? 'S' : 'N', (lapack_int)m,
                                     (lapack_int)n, a, (lapack_int)n, S, u, (lapack_int)k, vt,
                                     (lapack_int)n);
    sm_free(a), sm_free(tmp_u), sm_free(tmp_vt);
    if (info != 0)
        return sm_fail(SM_ERR_NUMERIC, "svd: sgesdd failed (info %d) on a %lldx%lld matrix",
                       (int)info, (long long)m, (long long)n);
    return SM_OK;
}

sm_status sm_svd_f64(const double *A, int64_t m, int64_t n, double *U, double *S, double *Vt) {
    int64_t k = m < n ? m : n;
    if (k == 0) return SM_OK;
    double *a = sm_alloc((size_t)(m * n) * sizeof(double));
    if (!a) return sm_fail(SM_ERR_ALLOC, "svd: out of memory");
    memcpy(a, A, (size_t)(m * n) * sizeof(double));
    bool vectors = U && Vt;
    lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, vectors ? 'S' : 'N', (lapack_int)m,
                                     (lapack_int)n, a, (lapack_int)n, S, U, (lapack_int)k, Vt,
                                     (lapack_int)n);
    sm_free(a);
    if (info != 0) return sm_fail(SM_ERR_NUMERIC, "svd: dgesdd failed (info %d)", (int)info);
    return SM_OK;
}

sm_status sm_svd_top(const float *A, int64_t m, int64_t n, int64_t lda, int64_t r,
                     const sm_svd_solver *solver, float *U, float *S, float *Vt) {
    int64_t k = m < n ? m : n;
    if (r < 0 || r > k)
        return sm_fail(SM_ERR_ARG, "rank %lld is outside [0, %lld]", (long long)r, (long long)k);
    if (r == 0) return SM_OK;
    if (solver && solver->kind == 1)
        return sm_rsvd(A, m, n, lda, r, solver->p, solver->q, solver->seed, U, S, Vt);
    float *u = sm_alloc((size_t)(m * k) * sizeof(float));
    float *s = sm_alloc((size_t)k * sizeof(float));
    float *vt = sm_alloc((size_t)(k * n) * sizeof(float));
    sm_status st = (u && s && vt) ? sm_svd(A, m, n, lda, u, s, vt)
                                  : sm_fail(SM_ERR_ALLOC, "svd: out of memory");
    if (st == SM_OK) {
        for (int64_t i = 0; i < m; i++) memcpy(U + i * r, u + i * k, (size_t)r * sizeof(float));
        memcpy(S, s, (size_t)r * sizeof(float));
        memcpy(Vt, vt, (size_t)(r * n) * sizeof(float));
    }
    sm_free(u), sm_free(s), sm_free(vt);
    return st;
}

sm_status sm_lowrank_factors(const float *A, int64_t m, int64_t n, int64_t lda, int64_t r,
                             const sm_svd_solver *solver, float *L, int64_t ldl, float *R,
                             int64_t ldr) {
    if (r == 0) return SM_OK;
    float *U = sm_alloc((size_t)(m * r) * sizeof(float));
    float *S = sm_alloc((size_t)r * sizeof(float));
    float *Vt = sm_alloc((size_t)(r * n) * sizeof(float));
    sm_status st = (U && S && Vt) ? sm_svd_top(A, m, n, lda, r, solver, U, S, Vt)
                                  : sm_fail(SM_ERR_ALLOC, "svd: out of memory");
    if (st == SM_OK) {
        for (int64_t j = 0; j < r; j++) {
            float s = sqrtf(S[j] > 0 ? S[j] : 0);
            for (int64_t i = 0; i < m; i++) L[i * ldl + j] = U[i * r + j] * s;
            for (int64_t i = 0; i < n; i++) R[j * ldr + i] = Vt[j * n + i] * s;
        }
    }
    sm_free(U), sm_free(S), sm_free(Vt);
    return st;
}
