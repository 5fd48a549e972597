// Randomized SVD (Halko, Martinsson, Tropp, "Finding structure with randomness", SIAM Review 2011,
// algorithms 4.4 and 5.1): a Gaussian sketch of the range, sharpened by q power iterations with
// QR re-orthonormalisation after every product (powering without it loses the small directions
// to rounding), then an exact SVD of the small projected matrix.
#include "linalg.h"

#include <cblas.h>
#include <lapacke.h>
#include <string.h>

// LAPACKE reports its own allocation failures (work arrays, row-major transposes) as info codes.
static sm_status lapack_status(lapack_int info) {
    return info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR
               ? SM_ERR_ALLOC
               : SM_ERR_NUMERIC;
}

// Q (rows, l) row-major <- the orthonormal factor of its own QR. tau has l floats.
static sm_status orthonormalize(float *Q, int64_t rows, int64_t l, float *tau) {
    lapack_int info =
        LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)rows, (lapack_int)l, Q, (lapack_int)l, tau);
    if (info != 0)
        return sm_fail(lapack_status(info), "rsvd: sgeqrf failed (info %d) on a %lldx%lld block",
                       (int)info, (long long)rows, (long long)l);
    info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)rows, (lapack_int)l, (lapack_int)l, Q,
                          (lapack_int)l, tau);
    if (info != 0)
        return sm_fail(lapack_status(info), "rsvd: sorgqr failed (info %d) on a %lldx%lld block",
                       (int)info, (long long)rows, (long long)l);
    return SM_OK;
}

sm_status sm_rsvd(const float *A, int64_t m, int64_t n, int64_t lda, int64_t r, int64_t p, int q,
                  uint64_t seed, float *U, float *S, float *Vt) {
    int64_t k = m < n ? m : n;
    if (r < 0 || r > k)
        return sm_fail(SM_ERR_ARG, "rsvd: rank %lld is outside [0, %lld] for a %lldx%lld matrix",
                       (long long)r, (long long)k, (long long)m, (long long)n);
    if (p < 0 || q < 0)
        return sm_fail(SM_ERR_ARG, "rsvd: oversampling %lld and power iterations %d must be >= 0",
                       (long long)p, q);
    if (lda < n)
        return sm_fail(SM_ERR_ARG, "rsvd: lda %lld < n %lld", (long long)lda, (long long)n);
    if (r == 0) return SM_OK;

    // Work on M = A or A^T, whichever is (a, b) with a >= b: the sketches are then (a, l) and
    // (b, l), and the final exact SVD is of an (l, b) matrix, on the smaller side. A is never
    // copied; the transpose is only a flag to GEMM.
    bool tr = m < n;
    int64_t a = tr ? n : m, b = tr ? m : n;
    CBLAS_TRANSPOSE opM = tr ? CblasTrans : CblasNoTrans;  // M = op(A)
    CBLAS_TRANSPOSE opMt = tr ? CblasNoTrans : CblasTrans; // M^T
    int64_t l = r + p < k ? r + p : k;

    float *Y = sm_alloc(sizeof(float) * (size_t)(a * l));  // (a, l) range sketch, then Q
    float *Z = sm_alloc(sizeof(float) * (size_t)(b * l));  // (b, l) Omega, then co-range sketch
    float *B = sm_alloc(sizeof(float) * (size_t)(l * b));  // (l, b) Q^T M
    float *Ub = sm_alloc(sizeof(float) * (size_t)(l * l)); // (l, l) left vectors of B
    float *Vb = sm_alloc(sizeof(float) * (size_t)(l * b)); // (l, b) right vectors of B, V^T
    float *sb = sm_alloc(sizeof(float) * (size_t)l);       // (l) singular values of B
    float *tau = sm_alloc(sizeof(float) * (size_t)l);
    sm_status st = SM_OK;
    if (!Y || !Z || !B || !Ub || !Vb || !sb || !tau) {
        st = sm_fail(SM_ERR_ALLOC, "rsvd: out of memory for rank %lld of a %lldx%lld matrix",
                     (long long)r, (long long)m, (long long)n);
        goto done;
    }

    sm_rng rng;
    sm_rng_seed(&rng, seed);
    sm_rng_fill_normal(&rng, Z, b * l, 1.0f); // Omega (b, l)
    // Y = M Omega
    cblas_sgemm(CblasRowMajor, opM, CblasNoTrans, (int)a, (int)l, (int)b, 1.0f, A, (int)lda, Z,
                (int)l, 0.0f, Y, (int)l);
    st = orthonormalize(Y, a, l, tau);
    for (int it = 0; it < q && st == SM_OK; it++) {
        // Z = M^T Q, Y = M Z, each re-orthonormalised.
        cblas_sgemm(CblasRowMajor, opMt, CblasNoTrans, (int)b, (int)l, (int)a, 1.0f, A, (int)lda, Y,
                    (int)l, 0.0f, Z, (int)l);
        st = orthonormalize(Z, b, l, tau);
        if (st != SM_OK) break;
        cblas_sgemm(CblasRowMajor, opM, CblasNoTrans, (int)a, (int)l, (int)b, 1.0f, A, (int)lda, Z,
                    (int)l, 0.0f, Y, (int)l);
        st = orthonormalize(Y, a, l, tau);
    }
    if (st != SM_OK) goto done;

    // B = Q^T M (l, b) = Ub diag(sb) Vb, so M ~ (Q Ub) diag(sb) Vb.
    cblas_sgemm(CblasRowMajor, CblasTrans, opM, (int)l, (int)b, (int)a, 1.0f, Y, (int)l, A,
                (int)lda, 0.0f, B, (int)b);
    st = sm_svd(B, l, b, b, Ub, sb, Vb);
    if (st != SM_OK) goto done;

    if (S) memcpy(S, sb, sizeof(float) * (size_t)r);
    if (!tr) {
        // A = M: U = Q Ub[:, :r] (m, r), Vt = Vb[:r, :] (r, n).
        if (U)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)r, (int)l, 1.0f, Y,
                        (int)l, Ub, (int)l, 0.0f, U, (int)r);
        if (Vt) memcpy(Vt, Vb, sizeof(float) * (size_t)(r * n));
    } else {
        // A = M^T: U = Vb[:r, :]^T (m, r), Vt = (Q Ub[:, :r])^T = Ub[:, :r]^T Q^T (r, n).
        if (U)
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < r; j++) U[i * r + j] = Vb[j * b + i];
        if (Vt)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)r, (int)n, (int)l, 1.0f, Ub,
                        (int)l, Y, (int)l, 0.0f, Vt, (int)n);
    }

done:
    sm_free(Y), sm_free(Z), sm_free(B), sm_free(Ub), sm_free(Vb), sm_free(sb), sm_free(tau);
    return st;
}
