// Activation-aware fitting: calibration statistics (sm_stats: H = X^T X over the layer's inputs,
// per-channel sums of x^2) and the objective ||X (W - W_hat)^T||_F^2 = tr(dW H dW^T).
#ifndef SM_ACTAWARE_H
#define SM_ACTAWARE_H

#include "op_impl.h"

// Every Cholesky or solve with a calibration Gram uses H + lambda I with
// lambda = SM_ACT_DAMP * mean(diag H): 1%, as GPTQ and SparseGPT damp. It keeps channels that
// calibration never excites (zero rows/columns of H) solvable, and moves the optimum little.
#define SM_ACT_DAMP 0.01

// The damping lambda for stats of an n-channel input; SM_ERR_ARG when the Gram is missing, has a
// non-finite entry or a negative diagonal entry, or is zero.
sm_status sm_act_lambda(const sm_stats *s, int64_t n, double *lambda);

// *L (n, n) row-major = the lower Cholesky factor of H + lambda I (upper triangle zero), malloc'd
// with sm_alloc. SM_ERR_NUMERIC when it is not positive definite.
sm_status sm_act_cholesky(const sm_stats *s, int64_t n, double **L, double *lambda);

// Per-channel input norms ||x_j|| = sqrt(sqsum_j), or sqrt(H_jj) when only the Gram is given:
// norms (n). SM_ERR_ARG when neither is given or a value is negative or not finite.
sm_status sm_act_norms(const sm_stats *s, int64_t n, double *norms);

// tr(D H D^T) for D = W - W_hat (m, n) and the undamped H (n, n): the squared activation-aware
// error. Returns NAN when out of memory.
double sm_act_error2(const float *W, const float *W_hat, int64_t m, int64_t n, const double *H);

// The fit objective for stats (NULL: none): ||W - W_hat||_F^2, or tr(dW H dW^T) with a Gram, or
// sum_ij dW_ij^2 sqsum_j with only sqsum. NAN when out of memory.
double sm_act_objective(const float *W, const float *W_hat, int64_t m, int64_t n,
                        const sm_stats *s);

// Best rank-r W_hat = L R for the damped objective tr(dW (H + lambda I) dW^T): with H + lambda I =
// C C^T (Cholesky), W_hat C is the truncated SVD of W C (the solver computes it), so
// L = U sqrt(S) (m, r) [r] and R = sqrt(S) V^T C^-1 (r, n) [n]. Without a Gram, sqsum gives the
// diagonal H = diag(sqsum) (damped the same way) and C = diag(sqrt(sqsum + lambda)).
sm_status sm_act_lowrank_factors(const float *W, int64_t m, int64_t n, int64_t r,
                                 const sm_svd_solver *solver, const sm_stats *s, float *L,
                                 float *R);

// A (rows, n) := A C and, when A2 is not NULL, A2 (rows2, n) := A2 C, with C the lower Cholesky
// factor of H + lambda I (or, with only sqsum, the diagonal sqrt(sqsum + lambda)): then
// ||A C||_F^2 = tr(A (H + lambda I) A^T), and least squares in the activation objective become
// plain ones on whitened matrices.
sm_status sm_act_whiten(const sm_stats *s, int64_t n, double *A, int64_t rows, double *A2,
                        int64_t rows2);

// --- grids of rank-T blocks (blocklowrank, monarch, BLAST's warm start) -------------------------
// The objective tr(dW H dW^T) is a sum over the rows of dW, so rows never couple: a structure whose
// rows fall into groups ("block rows"), each approximated by K column blocks [B_0 ... B_K-1] of
// width p = n/K and rank T, is fitted one block row at a time. Within a block row the column
// blocks do couple, through the off-diagonal blocks H_jk. With the others fixed, the best B_j
// minimises (with D = W_row - [B_0 ... B_K-1] and H' = H + lambda I)
//   tr(D H' D^T) = (Z - B_j) H'_jj (Z - B_j)^T + const,  Z = B_j + (D H'[:, C_j]) H'_jj^-1,
// so it is the whitened truncated SVD of Z: with H'_jj = C_j C_j^T, B_j C_j = [Z C_j]_T. Block
// coordinate descent over j is exact per step, hence monotone in the damped objective (up to
// rounding; iterates are kept only while the objective falls). Without a Gram, sqsum gives a
// diagonal H: the blocks decouple and one sweep is the optimum.
typedef struct sm_act_blocks {
    int64_t n, K, p;    // channels, column blocks, block width n / K
    double lambda;      // the damping (SM_ACT_DAMP of the mean diagonal)
    const double *gram; // (n, n) undamped H, or NULL: diagonal H = hd
    double *hd;         // (n) sqsum when gram is NULL
    double *C;          // (K, p, p) lower Cholesky factors of H_jj + lambda I
} sm_act_blocks;

sm_status sm_act_blocks_init(const sm_stats *s, int64_t n, int64_t K, sm_act_blocks *b);
void sm_act_blocks_free(sm_act_blocks *b);

// Refines one block row: Wr (s, n) with row stride ldw. Block j's factors are L_j (s, T) at
// L + j lstep (row stride ldl) and R_j (T, p) at R + j rstep (row stride ldr); on entry they hold
// a starting fit (e.g. the per-block truncated SVDs), on return the lowest-objective iterate of at
// most max_sweeps sweeps over j. *obj0 and *obj (either may be NULL) receive the damped objective
// tr(D H' D^T) of the block row before and after.
sm_status sm_act_blockrow_fit(const sm_act_blocks *b, const float *Wr, int64_t ldw, int64_t s,
                              int64_t T, float *L, int64_t ldl, int64_t lstep, float *R,
                              int64_t ldr, int64_t rstep, int max_sweeps, double *obj0,
                              double *obj);

// At most this many sweeps per block row (blocklowrank, monarch, BLAST's warm start); a block row
// stops earlier once a sweep gains less than 1e-4 of its objective.
#define SM_ACT_SWEEPS 30
#endif
