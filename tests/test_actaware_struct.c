// Activation-aware fitting of the block structures (blocklowrank, monarch, blast, blockdiag) with a
// calibration Gram H = X^T X whose channels span 1e-2 .. 1e2 in scale:
// - with the statistics, ||X (W - W_hat)^T||_F (evaluated on X itself, in double) is well below
//   the plain fit's, and the damped objective tr(dW (H + lambda I) dW^T) is no higher;
// - blocklowrank:blocks=1 and monarch:blocks=1 equal the closed-form optimum (whitened SVD,
//   computed here in double with LAPACK), as does lowrank with the statistics;
// - with a block-diagonal H the blocks decouple, so the fit must equal the sum of the per-block
//   closed-form optima (computed here block by block) for blocklowrank and monarch;
// - with only per-channel sqsum (diagonal H) the same holds for blocklowrank and monarch, and
//   BLAST beats its plain fit;
// - with H = c I the fit is the plain one (same W_hat for the closed forms, same error for BLAST);
// - BLAST with the statistics is never worse than its activation-aware warm starts (lowrank and
//   blocklowrank or monarch fitted with the same statistics at BLAST's coordinates), and its
//   iterations improve on them;
// - blockdiag with the statistics is, block row by block row, the least-squares optimum of the
//   damped objective, computed here by LAPACK's QR (dgels) on the stacked system [X; sqrt(lambda)
//   I]; with only sqsum it is the plain copy of the diagonal blocks;
// - CUR with the statistics keeps its columns and rows, and its U is the least-squares optimum of
//   the damped objective for them (normal equations in double here).
#include "testutil.h"

#include <lapacke.h>

#define DAMP 0.01 // lambda = 1% of the mean diagonal of H, as documented in src/ops/actaware.h

// X (T, n): channel j scaled by 10^(-2 + 4 j / (n - 1)) in a shuffled order, neighbours mixed.
static void make_inputs(double *X, int64_t T, int64_t n, unsigned seed) {
    float *z = malloc(sizeof(float) * (size_t)(T * n));
    fill_random(z, T * n, seed);
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++) {
            int64_t k = (j * 7) % n; // a permutation of the scales (7 and n = 32 are coprime)
            double scale = pow(10.0, -2.0 + 4.0 * (double)k / (double)(n - 1));
            double mix = j > 0 ? 0.6 * z[t * n + j - 1] : 0;
            X[t * n + j] = scale * (z[t * n + j] + mix);
        }
    free(z);
}

// tr(dW Hd dW^T) by the triple sum.
static double quad(const float *W, const float *Wh, int64_t m, int64_t n, const double *Hd) {
    double e = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t a = 0; a < n; a++) {
            double da = (double)W[i * n + a] - Wh[i * n + a];
            for (int64_t b = 0; b < n; b++)
                e += da * Hd[a * n + b] * ((double)W[i * n + b] - Wh[i * n + b]);
        }
    return e;
}

static double *damped(const double *H, int64_t n) {
    double *Hd = malloc(sizeof(double) * (size_t)(n * n)), tr = 0;
    memcpy(Hd, H, sizeof(double) * (size_t)(n * n));
    for (int64_t j = 0; j < n; j++) tr += H[j * n + j];
    for (int64_t j = 0; j < n; j++) Hd[j * n + j] += DAMP * tr / (double)n;
    return Hd;
}

// The optimum of tr((A - B) G (A - B)^T) over rank-r B, A (s, p) with row stride lda, G (p, p) SPD
// with row stride ldg: Cholesky G = C C^T, B C = [A C]_r. Returns the value (the tail of the
// singular values squared); B (s, p) receives the optimum when not NULL.
static double block_optimum(const float *A, int64_t lda, int64_t s, int64_t p, const double *G,
                            int64_t ldg, int64_t r, double *B) {
    double *C = calloc((size_t)(p * p), sizeof(double)),
           *M = calloc((size_t)(s * p), sizeof(double));
    for (int64_t a = 0; a < p; a++)
        for (int64_t b = 0; b <= a; b++) C[a * p + b] = G[a * ldg + b];
    CHECK(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)p, C, (lapack_int)p) == 0);
    for (int64_t a = 0; a < p; a++)
        for (int64_t b = a + 1; b < p; b++) C[a * p + b] = 0;
    for (int64_t i = 0; i < s; i++)
        for (int64_t b = 0; b < p; b++)
            for (int64_t a = 0; a < p; a++) M[i * p + b] += A[i * lda + a] * C[a * p + b];
    int64_t k = s < p ? s : p;
    double *U = malloc(sizeof(double) * (size_t)(s * k)), *sv = malloc(sizeof(double) * (size_t)k);
    double *Vt = malloc(sizeof(double) * (size_t)(k * p));
    CHECK(LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)s, (lapack_int)p, M, (lapack_int)p, sv,
                         U, (lapack_int)k, Vt, (lapack_int)p) == 0);
    double tail = 0;
    for (int64_t t = r; t < k; t++) tail += sv[t] * sv[t];
    if (B) { // B = [A C]_r C^-1: solve B C = Mr row by row (C lower: back substitution)
        for (int64_t i = 0; i < s; i++) {
            double *row = B + i * p;
            for (int64_t b = 0; b < p; b++) {
                double v = 0;
                for (int64_t t = 0; t < r; t++) v += U[i * k + t] * sv[t] * Vt[t * p + b];
                row[b] = v;
            }
            for (int64_t b = p - 1; b >= 0; b--) { // row C = v  =>  sum_a row[a] C[a][b] = v[b]
                double v = row[b];
                for (int64_t a = b + 1; a < p; a++) v -= row[a] * C[a * p + b];
                row[b] = v / C[b * p + b];
            }
        }
    }
    free(C), free(M), free(U), free(sv), free(Vt);
    return tail;
}

static float *fit_dense(const float *W, int64_t m, int64_t n, const char *spec, const sm_stats *s) {
    sm_op *op = NULL;
    sm_fit_opts o = {.seed = 1, .stats = s};
    CHECK_OK(sm_op_fit(W, m, n, spec, &o, &op));
    if (!op) return NULL;
    float *D = malloc(sizeof(float) * (size_t)(m * n));
    CHECK_OK(sm_op_to_dense(op, D));
    sm_op_free(op);
    return D;
}

static bool verbose;

enum { M = 24, N = 32, TOK = 400 };

// With statistics vs without on a general anisotropic H.
static void test_below_plain(const double *X, const double *H, const float *W) {
    double *Hd = damped(H, N);
    sm_stats st = {.gram = H, .tokens = TOK};
    const char *specs[] = {
        "blocklowrank:blocks=4,rank=2",    "monarch:blocks=4,rank=2",
        "blast:blocks=4,rank=6,iters=100", "blocklowrank:blocks=2,rank=3",
        "monarch:blocks=2,rank=4",         "blast:blocks=2,rank=5,perm=stride,iters=60"};
    for (int k = 0; k < 6; k++) {
        float *Wp = fit_dense(W, M, N, specs[k], NULL), *Wa = fit_dense(W, M, N, specs[k], &st);
        if (!Wp || !Wa) {
            free(Wp), free(Wa);
            continue;
        }
        double ep = act_err2_ref(X, TOK, W, Wp, M, N), ea = act_err2_ref(X, TOK, W, Wa, M, N);
        double qp = quad(W, Wp, M, N, Hd), qa = quad(W, Wa, M, N, Hd);
        if (verbose)
            printf("%-45s ||X dW^T||^2 plain %.6g, with stats %.6g (ratio %.4f)\n", specs[k], ep,
                   ea, ea / ep);
        if (!(ea < 0.5 * ep)) {
            fprintf(stderr, "%s: with statistics %.6g, not well below plain %.6g\n", specs[k], ea,
                    ep);
            g_failures++;
        }
        CHECK(qa <= qp);
        CHECK(rel_fro(Wp, W, M * N) < rel_fro(Wa, W, M * N)); // the plain fit wins on ||dW||_F
        free(Wp), free(Wa);
    }
    free(Hd);
}

// blocks=1 is low rank: the activation-aware closed form, here in double.
static void test_one_block(const double *H, const float *W) {
    double *Hd = damped(H, N), *Bopt = malloc(sizeof(double) * M * N);
    sm_stats st = {.gram = H, .tokens = TOK};
    double opt = block_optimum(W, N, M, N, Hd, N, 5, Bopt);
    float *Bf = malloc(sizeof(float) * M * N);
    for (int64_t i = 0; i < M * N; i++) Bf[i] = (float)Bopt[i];
    const char *specs[] = {"blocklowrank:blocks=1,rank=5", "monarch:blocks=1,rank=5",
                           "lowrank:rank=5"};
    for (int k = 0; k < 3; k++) {
        float *Wa = fit_dense(W, M, N, specs[k], &st);
        if (!Wa) continue;
        double got = quad(W, Wa, M, N, Hd);
        if (!(fabs(got - opt) <= 1e-4 * opt)) {
            fprintf(stderr, "%s: objective %.9g, closed-form optimum %.9g\n", specs[k], got, opt);
            g_failures++;
        }
        if (!(rel_fro(Wa, Bf, M * N) < 1e-3)) {
            fprintf(stderr, "%s: W_hat is %.3g from the optimum\n", specs[k],
                    rel_fro(Wa, Bf, M * N));
            g_failures++;
        }
        free(Wa);
    }
    free(Hd), free(Bopt), free(Bf);
}

// With a damped Gram G (N, N) that is block-diagonal in blocks of N / 4, the blocks of
// blocklowrank:blocks=4 and monarch:blocks=4 (rank 2) decouple: the fit with statistics st must
// reach the sum of the per-block closed-form optima (block_optimum).
static void check_blockwise_optimum(const float *W, const sm_stats *st, const double *G,
                                    const char *what) {
    const int64_t K = 4, T = 2, p = N / K, s = M / K;
    for (int mon = 0; mon < 2; mon++) {
        double opt = 0;
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) {
                const float *A = mon ? W + i * N + j * p : W + i * s * N + j * p;
                opt += block_optimum(A, mon ? K * N : N, s, p, G + j * p * N + j * p, N, T, NULL);
            }
        const char *spec = mon ? "monarch:blocks=4,rank=2" : "blocklowrank:blocks=4,rank=2";
        float *Wa = fit_dense(W, M, N, spec, st);
        if (!Wa) continue;
        double got = quad(W, Wa, M, N, G);
        if (!(fabs(got - opt) <= 1e-4 * opt)) {
            fprintf(stderr, "%s, %s: objective %.9g, optimum %.9g\n", spec, what, got, opt);
            g_failures++;
        }
        free(Wa);
    }
}

// Block-diagonal H (cross-block Gram entries zeroed): the blocks decouple, and the optimum is the
// sum of the per-block optima. Block row i of blocklowrank: rows [i M/K, (i+1) M/K); of monarch:
// rows {a K + i}. Column block j: [j N/K, (j+1) N/K).
static void test_block_diagonal_gram(const double *H, const float *W) {
    const int64_t p = N / 4;
    double *Hb = malloc(sizeof(double) * N * N);
    for (int64_t a = 0; a < N; a++)
        for (int64_t b = 0; b < N; b++) Hb[a * N + b] = a / p == b / p ? H[a * N + b] : 0;
    double *Hd = damped(Hb, N);
    sm_stats st = {.gram = Hb, .tokens = TOK};
    check_blockwise_optimum(W, &st, Hd, "block-diagonal H");
    free(Hb), free(Hd);
}

// H = c I: the objective is c' ||dW||_F^2, so the fit is the plain one.
static void test_identity_gram(const float *W) {
    double *H = calloc(N * N, sizeof(double));
    for (int64_t j = 0; j < N; j++) H[j * N + j] = 37.5;
    sm_stats st = {.gram = H, .tokens = TOK};
    const char *specs[] = {"blocklowrank:blocks=4,rank=2", "monarch:blocks=4,rank=2",
                           "blast:blocks=4,rank=6,iters=100",
                           "blast:blocks=2,rank=5,perm=stride,iters=60"};
    for (int k = 0; k < 4; k++) {
        float *Wp = fit_dense(W, M, N, specs[k], NULL), *Wa = fit_dense(W, M, N, specs[k], &st);
        if (Wp && Wa) {
            double ep = rel_fro(Wp, W, M * N), ea = rel_fro(Wa, W, M * N);
            if (verbose)
                printf("%-45s H = c I: error plain %.7f, with stats %.7f\n", specs[k], ep, ea);
            if (k < 2) check_close(specs[k], Wa, Wp, M * N, 1e-4);
            // BLAST's iterations differ in rounding only, but 100 over-relaxed steps amplify it
            if (!(fabs(ea - ep) <= 1e-3 * ep)) {
                fprintf(stderr, "%s, H = c I: error %.7f, plain %.7f\n", specs[k], ea, ep);
                g_failures++;
            }
        }
        free(Wp), free(Wa);
    }
    free(H);
}

// BLAST with the statistics: no worse than the activation-aware closed forms it starts from
// (lowrank at its rank R, blocklowrank at T = R / B), and its iterations improve on them.
static void test_blast_starts(const double *H, const float *W) {
    double *Hd = damped(H, N);
    sm_stats st = {.gram = H, .tokens = TOK};
    const char *blast[] = {"blast:blocks=4,rank=8,iters=100", "blast:blocks=4,rank=8,iters=0",
                           "blast:blocks=2,rank=6,perm=stride,iters=60"};
    const char *starts[3][2] = {{"lowrank:rank=8", "blocklowrank:blocks=4,rank=2"},
                                {"lowrank:rank=8", "blocklowrank:blocks=4,rank=2"},
                                {"lowrank:rank=6", "monarch:blocks=2,rank=3"}};
    double q[3];
    for (int k = 0; k < 3; k++) {
        float *Wb = fit_dense(W, M, N, blast[k], &st);
        if (!Wb) return;
        q[k] = quad(W, Wb, M, N, Hd);
        for (int a = 0; a < 2; a++) {
            float *Ws = fit_dense(W, M, N, starts[k][a], &st);
            if (!Ws) continue;
            double qs = quad(W, Ws, M, N, Hd);
            if (verbose)
                printf("%-45s damped objective %.6g, %s %.6g\n", blast[k], q[k], starts[k][a], qs);
            if (!(q[k] <= qs * (1 + 1e-5))) {
                fprintf(stderr, "%s: %.9g above the warm start %s: %.9g\n", blast[k], q[k],
                        starts[k][a], qs);
                g_failures++;
            }
            free(Ws);
        }
        free(Wb);
    }
    CHECK(q[0] < 0.95 * q[1]); // the iterations do move it
    free(Hd);
}

static const sm_part *find_part(const sm_part *p, int np, const char *name) {
    for (int k = 0; k < np; k++)
        if (strcmp(p[k].name, name) == 0) return &p[k];
    return NULL;
}

// CUR with the statistics: the same columns and rows as without, and U the least-squares optimum
// of the damped objective for them, here from the normal equations
// (C^T C) U (R Hd R^T) = C^T W Hd R^T in double.
static void test_cur(const double *X, const double *H, const float *W) {
    const int64_t r = 6;
    double *Hd = damped(H, N);
    sm_stats st = {.gram = H, .tokens = TOK};
    sm_op *op[2] = {NULL, NULL};
    sm_fit_opts o0 = {.seed = 1}, o1 = {.seed = 1, .stats = &st};
    CHECK_OK(sm_op_fit(W, M, N, "cur:rank=6", &o0, &op[0]));
    CHECK_OK(sm_op_fit(W, M, N, "cur:rank=6", &o1, &op[1]));
    if (!op[0] || !op[1]) return;
    sm_part *p[2];
    int np[2];
    const int32_t *cols[2], *rows[2];
    for (int k = 0; k < 2; k++) {
        CHECK_OK(sm_op_parts(op[k], &p[k], &np[k]));
        cols[k] = find_part(p[k], np[k], "cols")->data;
        rows[k] = find_part(p[k], np[k], "rows")->data;
    }
    CHECK(memcmp(cols[0], cols[1], r * 4) == 0 && memcmp(rows[0], rows[1], r * 4) == 0);
    double C[M * 6], R[6 * N], CtC[36], RHR[36], WHRt[M * 6], Rhs[36], U[36];
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < r; k++) C[i * r + k] = W[i * N + cols[1][k]];
    for (int64_t k = 0; k < r; k++)
        for (int64_t j = 0; j < N; j++) R[k * N + j] = W[rows[1][k] * N + j];
    // RH = R Hd (r, N); WHRt = W Hd R^T = W (RH)^T (M, r)
    double *RH = calloc(r * N, sizeof(double));
    for (int64_t k = 0; k < r; k++)
        for (int64_t b = 0; b < N; b++)
            for (int64_t a = 0; a < N; a++) RH[k * N + b] += R[k * N + a] * Hd[a * N + b];
    for (int64_t a = 0; a < r; a++)
        for (int64_t b = 0; b < r; b++) {
            double x = 0, y = 0;
            for (int64_t i = 0; i < M; i++) x += C[i * r + a] * C[i * r + b];
            for (int64_t j = 0; j < N; j++) y += RH[a * N + j] * R[b * N + j];
            CtC[a * r + b] = x, RHR[a * r + b] = y;
        }
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < r; k++) {
            double x = 0;
            for (int64_t j = 0; j < N; j++) x += W[i * N + j] * RH[k * N + j];
            WHRt[i * r + k] = x;
        }
    for (int64_t a = 0; a < r; a++) // Rhs = C^T W Hd R^T (r, r)
        for (int64_t k = 0; k < r; k++) {
            double x = 0;
            for (int64_t i = 0; i < M; i++) x += C[i * r + a] * WHRt[i * r + k];
            Rhs[a * r + k] = x;
        }
    // U = CtC^-1 Rhs RHR^-1: solve CtC Y = Rhs, then U RHR = Y (RHR symmetric: RHR U^T = Y^T)
    CHECK(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (lapack_int)r, (lapack_int)r, CtC, (lapack_int)r,
                        Rhs, (lapack_int)r) == 0);
    for (int64_t a = 0; a < r; a++)
        for (int64_t b = 0; b < r; b++) U[a * r + b] = Rhs[b * r + a];
    CHECK(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (lapack_int)r, (lapack_int)r, RHR, (lapack_int)r, U,
                        (lapack_int)r) == 0); // U now holds U^T
    float *Wopt = malloc(sizeof(float) * M * N), *Wa = malloc(sizeof(float) * M * N);
    float *Wp = malloc(sizeof(float) * M * N);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double x = 0;
            for (int64_t a = 0; a < r; a++)
                for (int64_t b = 0; b < r; b++) x += C[i * r + a] * U[b * r + a] * R[b * N + j];
            Wopt[i * N + j] = (float)x;
        }
    CHECK_OK(sm_op_to_dense(op[0], Wp));
    CHECK_OK(sm_op_to_dense(op[1], Wa));
    double opt = quad(W, Wopt, M, N, Hd), got = quad(W, Wa, M, N, Hd);
    double ep = act_err2_ref(X, TOK, W, Wp, M, N), ea = act_err2_ref(X, TOK, W, Wa, M, N);
    if (verbose)
        printf("cur:rank=6 damped objective %.6g, optimum for its C, R %.6g; ||X dW^T||^2 plain "
               "%.6g, with stats %.6g\n",
               got, opt, ep, ea);
    if (!(fabs(got - opt) <= 1e-4 * opt)) {
        fprintf(stderr, "cur with statistics: objective %.9g, least-squares optimum %.9g\n", got,
                opt);
        g_failures++;
    }
    CHECK(ea < ep);
    for (int k = 0; k < 2; k++) free(p[k]), sm_op_free(op[k]);
    free(RH), free(Hd), free(Wopt), free(Wa), free(Wp);
}

// Only per-channel sqsum (no Gram): H = diag(sqsum), damped by 1% of its mean. The blocks
// decouple, so blocklowrank and monarch must reach the sum of the per-block optima; BLAST must
// beat its plain fit in that objective.
static void test_sqsum_only(const double *H, const float *W) {
    double sq[N], mean = 0, *G = calloc(N * N, sizeof(double));
    for (int64_t j = 0; j < N; j++) sq[j] = H[j * N + j], mean += sq[j] / N;
    for (int64_t j = 0; j < N; j++) G[j * N + j] = sq[j] + DAMP * mean;
    sm_stats st = {.sqsum = sq, .tokens = TOK};
    check_blockwise_optimum(W, &st, G, "sqsum only");
    float *Wp = fit_dense(W, M, N, "blast:blocks=4,rank=6,iters=50", NULL);
    float *Wa = fit_dense(W, M, N, "blast:blocks=4,rank=6,iters=50", &st);
    if (Wp && Wa) {
        double qp = quad(W, Wp, M, N, G), qa = quad(W, Wa, M, N, G);
        if (verbose)
            printf("blast sqsum only: damped objective plain %.6g, with stats %.6g\n", qp, qa);
        CHECK(qa < 0.5 * qp);
    }
    free(Wp), free(Wa), free(G);
}

// blockdiag:blocks=K: block row i minimises ||X (W_i - E_J B)^T||^2 + lambda ||W_i - E_J B||^2
// over B (mb, nb), E_J placing B's columns at J: the least-squares problem A B^T = Rhs with
// A = [X_J; sqrt(lambda) I_{:, J}] (T + n, nb) and Rhs = [X W_i^T; sqrt(lambda) W_i^T] (T + n, mb).
static void test_blockdiag(const double *X, const double *H, const float *W) {
    const int64_t K = 4, mb = M / K, nb = N / K, rows = TOK + N;
    sm_stats st = {.gram = H, .tokens = TOK};
    float *D = fit_dense(W, M, N, "blockdiag:blocks=4", &st);
    float *P = fit_dense(W, M, N, "blockdiag:blocks=4", NULL);
    double tr = 0;
    for (int64_t j = 0; j < N; j++) tr += H[j * N + j];
    double sl = sqrt(DAMP * tr / (double)N), worst = 0, scale = 0;
    double *A = malloc(sizeof(double) * (size_t)(rows * nb));
    double *R = malloc(sizeof(double) * (size_t)(rows * mb));
    for (int64_t i = 0; D && P && i < K; i++) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < nb; c++)
                A[r * nb + c] = r < TOK ? X[r * N + i * nb + c] : (r - TOK == i * nb + c ? sl : 0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t q = 0; q < mb; q++) {
                const float *w = W + (i * mb + q) * N;
                double v = 0;
                if (r < TOK)
                    for (int64_t j = 0; j < N; j++) v += X[r * N + j] * w[j];
                else
                    v = sl * w[r - TOK];
                R[r * mb + q] = v;
            }
        CHECK(LAPACKE_dgels(LAPACK_ROW_MAJOR, 'N', (lapack_int)rows, (lapack_int)nb, (lapack_int)mb,
                            A, (lapack_int)nb, R, (lapack_int)mb) == 0);
        for (int64_t q = 0; q < mb; q++)
            for (int64_t j = 0; j < N; j++) {
                double want = (j / nb == i) ? R[(j - i * nb) * mb + q] : 0.0;
                double got = D[(i * mb + q) * N + j];
                worst = fmax(worst, fabs(got - want));
                scale = fmax(scale, fabs(want));
            }
    }
    if (verbose) printf("blockdiag: max |fit - dgels| %.3g of max %.3g\n", worst, scale);
    CHECK(worst <= 1e-4 * scale);
    if (D && P) {
        double a = act_err2_ref(X, TOK, W, D, M, N), b = act_err2_ref(X, TOK, W, P, M, N);
        if (verbose) printf("blockdiag: activation error with %.4g, without %.4g\n", a, b);
        CHECK(a < b);
    }
    // Only per-channel sums (a diagonal H): the plain copy.
    double sq[N];
    for (int64_t j = 0; j < N; j++) sq[j] = H[j * N + j];
    sm_stats diag = {.sqsum = sq, .tokens = TOK};
    float *Q = fit_dense(W, M, N, "blockdiag:blocks=4", &diag);
    if (Q && P) CHECK(memcmp(Q, P, sizeof(float) * M * N) == 0);
    free(A), free(R), free(D), free(P), free(Q);
}

int main(int argc, char **argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    double *X = malloc(sizeof(double) * TOK * N), *H = malloc(sizeof(double) * N * N);
    float *W = malloc(sizeof(float) * M * N);
    make_inputs(X, TOK, N, 3);
    gram_ref(X, TOK, N, H);
    fill_random(W, M * N, 4);
    test_below_plain(X, H, W);
    test_one_block(H, W);
    test_block_diagonal_gram(H, W);
    test_identity_gram(W);
    test_blast_starts(H, W);
    test_blockdiag(X, H, W);
    test_cur(X, H, W);
    test_sqsum_only(H, W);
    free(X), free(H), free(W);
    TEST_END();
}
