// Activation-aware fitting with calibration statistics (sm_fit_opts.stats):
// - lowrank with a Gram H = X^T X equals the closed-form optimum of tr(dW (H + lambda I) dW^T),
//   computed here another way (symmetric square root of H + lambda I by dsyevd, then dgesdd), and
//   has a lower ||(W - W_hat) X^T||_F (evaluated on X itself) than the plain SVD at the same rank;
// - lowrank with only per-channel sqsum equals the diagonal-whitening optimum;
// - bad statistics are refused.
#include "testutil.h"

#include <lapacke.h>

#define DAMP 0.01 // lambda = 1% of the mean diagonal of H, as documented in src/ops/actaware.h

// X (T, n): correlated channels of very different scales.
static void make_inputs(double *X, int64_t T, int64_t n, unsigned seed) {
    float *z = malloc(sizeof(float) * (size_t)(T * n));
    fill_random(z, T * n, seed);
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++) {
            double scale = exp(3.0 * sin(0.7 * (double)j)); // 0.05 .. 20
            double mix = j > 0 ? 0.5 * z[t * n + j - 1] : 0;
            X[t * n + j] = scale * (z[t * n + j] + mix);
        }
    free(z);
}

static double quad(const float *W, const double *Wh, int64_t m, int64_t n, const double *H) {
    double e = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t a = 0; a < n; a++)
            for (int64_t b = 0; b < n; b++)
                e += ((double)W[i * n + a] - Wh[i * n + a]) * H[a * n + b] *
                     ((double)W[i * n + b] - Wh[i * n + b]);
    return e;
}

// W_opt = [W Hh]_r Hh^-1 with Hh the symmetric square root of Hd; returns the optimal value.
static double optimum_sqrt(const float *W, int64_t m, int64_t n, int64_t r, const double *Hd,
                           double *Wopt) {
    double *Q = malloc(sizeof(double) * (size_t)(n * n)), *ev = malloc(sizeof(double) * (size_t)n);
    memcpy(Q, Hd, sizeof(double) * (size_t)(n * n));
    CHECK(LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)n, Q, (lapack_int)n, ev) == 0);
    double *Hh = calloc((size_t)(n * n), sizeof(double)),
           *Hi = calloc((size_t)(n * n), sizeof(double));
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = 0; b < n; b++)
            for (int64_t k = 0; k < n; k++) {
                Hh[a * n + b] += Q[a * n + k] * sqrt(ev[k]) * Q[b * n + k];
                Hi[a * n + b] += Q[a * n + k] / sqrt(ev[k]) * Q[b * n + k];
            }
    double *M = calloc((size_t)(m * n), sizeof(double));
    for (int64_t i = 0; i < m; i++)
        for (int64_t b = 0; b < n; b++)
            for (int64_t a = 0; a < n; a++) M[i * n + b] += W[i * n + a] * Hh[a * n + b];
    int64_t k = m < n ? m : n;
    double *U = malloc(sizeof(double) * (size_t)(m * k)), *s = malloc(sizeof(double) * (size_t)k);
    double *Vt = malloc(sizeof(double) * (size_t)(k * n));
    CHECK(LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, M, (lapack_int)n, s,
                         U, (lapack_int)k, Vt, (lapack_int)n) == 0);
    double tail = 0;
    for (int64_t i = r; i < k; i++) tail += s[i] * s[i];
    double *Mr = calloc((size_t)(m * n), sizeof(double));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t t = 0; t < r; t++) Mr[i * n + j] += U[i * k + t] * s[t] * Vt[t * n + j];
    memset(Wopt, 0, sizeof(double) * (size_t)(m * n));
    for (int64_t i = 0; i < m; i++)
        for (int64_t b = 0; b < n; b++)
            for (int64_t a = 0; a < n; a++) Wopt[i * n + b] += Mr[i * n + a] * Hi[a * n + b];
    free(Q), free(ev), free(Hh), free(Hi), free(M), free(U), free(s), free(Vt), free(Mr);
    return tail;
}

static void test_lowrank_gram(void) {
    const int64_t m = 24, n = 32, T = 200, r = 5;
    double *X = malloc(sizeof(double) * (size_t)(T * n)),
           *H = malloc(sizeof(double) * (size_t)(n * n));
    double *Hd = malloc(sizeof(double) * (size_t)(n * n)),
           *Wopt = malloc(sizeof(double) * (size_t)(m * n));
    float W[24 * 32], Wa[24 * 32], Wp[24 * 32];
    make_inputs(X, T, n, 3);
    gram_ref(X, T, n, H);
    fill_random(W, m * n, 4);
    double tr = 0;
    for (int64_t j = 0; j < n; j++) tr += H[j * n + j];
    memcpy(Hd, H, sizeof(double) * (size_t)(n * n));
    for (int64_t j = 0; j < n; j++) Hd[j * n + j] += DAMP * tr / (double)n;

    sm_stats stats = {.gram = H, .tokens = T};
    sm_fit_opts o = {.seed = 1, .stats = &stats};
    const char *specs[] = {"lowrank:rank=5", "lowrank:rank=5,solver=random"};
    for (int k = 0; k < 2; k++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, specs[k], &o, &op));
        if (!op) continue;
        CHECK_OK(sm_op_to_dense(op, Wa));
        sm_op_free(op);
        double opt = optimum_sqrt(W, m, n, r, Hd, Wopt);
        double *Wad = malloc(sizeof(double) * (size_t)(m * n));
        for (int64_t i = 0; i < m * n; i++) Wad[i] = Wa[i];
        double got = quad(W, Wad, m, n, Hd);
        double diff = 0, norm = 0;
        for (int64_t i = 0; i < m * n; i++) {
            diff += (Wad[i] - Wopt[i]) * (Wad[i] - Wopt[i]);
            norm += Wopt[i] * Wopt[i];
        }
        free(Wad);
        double tol = k == 0 ? 1e-4 : 2e-2; // the randomized solver is near-optimal, not exact
        if (!(fabs(got - opt) <= tol * opt)) {
            fprintf(stderr, "%s: objective %.9g, closed-form optimum %.9g\n", specs[k], got, opt);
            g_failures++;
        }
        if (k == 0 && !(sqrt(diff / norm) < 1e-3)) {
            fprintf(stderr, "%s: W_hat differs from the optimum by %.3g\n", specs[k],
                    sqrt(diff / norm));
            g_failures++;
        }
    }
    // Against the plain SVD at the same rank, on X itself.
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "lowrank:rank=5", NULL, &op));
    if (op) {
        CHECK_OK(sm_op_to_dense(op, Wp));
        sm_op_free(op);
        double ea = act_err2_ref(X, T, W, Wa, m, n), ep = act_err2_ref(X, T, W, Wp, m, n);
        if (!(ea < 0.7 * ep)) {
            fprintf(stderr, "activation-aware %.6g is not well below plain SVD %.6g\n", ea, ep);
            g_failures++;
        }
        CHECK(rel_fro(Wp, W, m * n) < rel_fro(Wa, W, m * n)); // and the plain one wins on ||dW||
    }
    free(X), free(H), free(Hd), free(Wopt);
}

// sqsum only: H = diag(sqsum), damped the same way; W_opt = [W D]_r D^-1, D = diag(sqrt(.)).
static void test_lowrank_sqsum(void) {
    const int64_t m = 20, n = 16, r = 3;
    double sq[16], Hd[16 * 16] = {0}, Wopt[20 * 16];
    float W[20 * 16], Wa[20 * 16];
    fill_random(W, m * n, 9);
    double mean = 0;
    for (int64_t j = 0; j < n; j++) sq[j] = exp(0.6 * (double)j), mean += sq[j] / (double)n;
    for (int64_t j = 0; j < n; j++) Hd[j * n + j] = sq[j] + DAMP * mean;
    sm_stats stats = {.sqsum = sq, .tokens = 10};
    sm_fit_opts o = {.seed = 1, .stats = &stats};
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "lowrank:rank=3", &o, &op));
    if (!op) return;
    CHECK_OK(sm_op_to_dense(op, Wa));
    sm_op_free(op);
    double opt = optimum_sqrt(W, m, n, r, Hd, Wopt);
    double *Wad = malloc(sizeof(double) * (size_t)(m * n));
    for (int64_t i = 0; i < m * n; i++) Wad[i] = Wa[i];
    double got = quad(W, Wad, m, n, Hd);
    if (!(fabs(got - opt) <= 1e-4 * opt)) {
        fprintf(stderr, "lowrank with sqsum: objective %.9g, optimum %.9g\n", got, opt);
        g_failures++;
    }
    free(Wad);
}

static void test_bad_stats(void) {
    float W[8 * 6];
    fill_random(W, 48, 1);
    double H[36] = {0};
    sm_stats stats = {.gram = H, .tokens = 1};
    sm_fit_opts o = {.seed = 1, .stats = &stats};
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 8, 6, "lowrank:rank=2", &o, &op), SM_ERR_ARG, "Gram is zero");
    for (int j = 0; j < 6; j++) H[j * 6 + j] = 1;
    H[7] = NAN;
    CHECK_FAIL(sm_op_fit(W, 8, 6, "lowrank:rank=2", &o, &op), SM_ERR_ARG, "non-finite");
    H[7] = 1;
    H[14] = -2;
    CHECK_FAIL(sm_op_fit(W, 8, 6, "lowrank:rank=2", &o, &op), SM_ERR_ARG, "negative diagonal");
    H[14] = 1;
    H[1] = H[6] = 5; // not positive semi-definite: Cholesky fails even after damping
    CHECK_FAIL(sm_op_fit(W, 8, 6, "lowrank:rank=2", &o, &op), SM_ERR_NUMERIC,
               "not positive definite");
    double sq[6] = {1, 2, 3, -1, 1, 1};
    sm_stats s2 = {.sqsum = sq, .tokens = 1};
    o.stats = &s2;
    CHECK_FAIL(sm_op_fit(W, 8, 6, "lowrank:rank=2", &o, &op), SM_ERR_ARG, "sqsum has a bad entry");
}

int main(void) {
    test_lowrank_gram();
    test_lowrank_sqsum();
    test_bad_stats();
    TEST_END();
}
