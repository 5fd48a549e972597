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
#endif
