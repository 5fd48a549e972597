// Randomized Hadamard transforms (QuIP#/QuaRot-style incoherence processing).
//
// For a length n = p2 b (p2 a power of two, b odd) the transform is the orthogonal matrix
//     T = (H_p2 (x) C_b) D / sqrt(p2)
// where D = diag(s) holds random signs, H_p2 is the Sylvester-Hadamard matrix (entries +-1) and
// C_b the orthonormal DCT-II of order b (C_1 = 1). A vector x is read as a (p2, b) row-major
// matrix X, and (H (x) C) x = H X C^T: the DCT acts on each row of b consecutive entries (one
// small GEMM), the Hadamard matrix across rows (the fast Walsh-Hadamard transform, in place).
// Sizes that are not a power of two are therefore handled by a Kronecker factor, not by padding:
// the stored matrix keeps its shape, and every entry of H (x) C is at most sqrt(2 / n) in
// magnitude, as incoherent as a Hadamard matrix of that size would be (up to sqrt(2)). The odd
// factor b is limited to SM_RHT_MAX_ODD so that the dense DCT stays a small part of the cost
// (11008 = 2^8 * 43, 14336 = 2^11 * 7, 768 = 2^8 * 3 are all fine).
#ifndef SM_HADAMARD_H
#define SM_HADAMARD_H

#include "../base/base.h"

#define SM_RHT_MAX_ODD 255

typedef struct sm_rht {
    int64_t n, p2, b;
    uint8_t *bits;  // (ceil(n / 8)) the signs, bit i set for s_i = +1 (sign-matrix convention)
    float *sign;    // (n) the signs as +-1.0f
    float *C;       // (b, b) row-major orthonormal DCT-II; NULL when b = 1
    double *Cd;     // the same in double (fitting)
    float scale;    // 1 / sqrt(p2)
} sm_rht;

// SM_ERR_SPEC naming `what` when n's odd factor exceeds SM_RHT_MAX_ODD.
sm_status sm_rht_check(int64_t n, const char *what);
// bits: the signs to use (ceil(n / 8) bytes), or NULL to draw them from seed.
sm_status sm_rht_init(sm_rht *r, int64_t n, const uint8_t *bits, uint64_t seed);
void sm_rht_free(sm_rht *r);
// Floats of scratch sm_rht_rows needs.
size_t sm_rht_workspace(const sm_rht *r);
// Each of the count rows x (count, n) in place: x <- T x, or x <- T^T x when transpose.
void sm_rht_rows(const sm_rht *r, float *x, int64_t count, bool transpose, float *work);
// The same in double with the scalar transform (fitting: weights and Gram matrices).
sm_status sm_rht_rows_f64(const sm_rht *r, double *x, int64_t count, bool transpose);

#endif
