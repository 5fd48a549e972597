// Dense linear algebra: thin wrappers over OpenBLAS/LAPACKE plus what LAPACK lacks.
#ifndef SM_LINALG_H
#define SM_LINALG_H

#include "../base/base.h"

// Thin SVD A (m, n) [lda] = U (m, k) diag(S) Vt (k, n), k = min(m, n), by LAPACK sgesdd.
// U or Vt may be NULL to skip them (values only when both are NULL). A is not modified.
sm_status sm_svd(const float *A, int64_t m, int64_t n, int64_t lda, float *U, float *S,
                 float *Vt);

// The same in double precision (dgesdd), for reference values in tests and analysis.
sm_status sm_svd_f64(const double *A, int64_t m, int64_t n, double *U, double *S, double *Vt);

// Randomized SVD (Halko-Martinsson-Tropp): rank r with oversampling p and q power iterations,
// re-orthonormalised by QR after every product. U (m, r), S (r), Vt (r, n).
sm_status sm_rsvd(const float *A, int64_t m, int64_t n, int64_t lda, int64_t r, int64_t p,
                  int q, uint64_t seed, float *U, float *S, float *Vt);

// Leading r singular triplets by the given solver: 0 = exact (sgesdd), 1 = randomized.
typedef struct sm_svd_solver {
    int kind;    // 0 exact, 1 random
    int64_t p;   // oversampling (random)
    int q;       // power iterations (random)
    uint64_t seed;
} sm_svd_solver;
sm_status sm_svd_top(const float *A, int64_t m, int64_t n, int64_t lda, int64_t r,
                     const sm_svd_solver *solver, float *U, float *S, float *Vt);

// Best rank-r approximation of A (m, n) [lda], written as factors:
// L (m, r) [ldl] = U sqrt(S) and R (r, n) [ldr] = sqrt(S) Vt.
sm_status sm_lowrank_factors(const float *A, int64_t m, int64_t n, int64_t lda, int64_t r,
                             const sm_svd_solver *solver, float *L, int64_t ldl, float *R,
                             int64_t ldr);

#endif
