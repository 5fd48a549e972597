// Numeric edge cases, each with its defined behaviour (README "Reliability"), checked against
// closed forms: rank-deficient matrices (exact where the structure has the capacity, never NaN
// from zero singular values), subnormal values (f32 storage keeps them; f16 and q8/q4 store
// values below F16's range as 0; bf16 rounds them to its grid), magnitudes near FLT_MAX (a fit
// either succeeds with finite values or is refused with SM_ERR_NUMERIC: never a NaN operator),
// 1 x 1 matrices, sizes at their limits, GPTQ on singular Gram matrices, and apply writing every
// output whatever the output and work buffers held before (NaN-filled), with a NaN input row
// poisoning only its own output row. tests/test_hostile.c has the all-zero, 1 x n / n x 1 and
// non-finite-input cases.
#include "testutil.h"

#include <float.h>

// Specs that can hold any 8x8 matrix exactly (full capacity) and a rank-2 one exactly.
static const char *const k_full[] = {
    "lowrank:rank=8",          "lowrank:rank=8,solver=random",
    "monarch:blocks=2,rank=4", "blocklowrank:blocks=2,rank=4",
    "kron:a=2x2,terms=4",      "kron:a=8x8",
    "monarch:blocks=8,rank=1", "blocklowrank:blocks=8,rank=1",
    "blockdiag:blocks=1",
};
#define NFULL (int)(sizeof k_full / sizeof *k_full)

static const char *const k_rank2[] = {
    "lowrank:rank=2",
    "lowrank:rank=5",
    "lowrank:rank=2,solver=random",
    "lowrank:rank=6,solver=random,oversample=0,power=0",
    "monarch:blocks=2,rank=2",
    "blocklowrank:blocks=2,rank=2",
    "blocklowrank:blocks=4,rank=2",
    "lowrank:rank=1+lowrank:rank=1",
    "blast:blocks=2,rank=4",
};
#define NRANK2 (int)(sizeof k_rank2 / sizeof *k_rank2)

static bool all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

// Fits spec to W (m, n); returns the status and fills D (m, n) with to_dense on success.
static sm_status fit_dense(const float *W, int64_t m, int64_t n, const char *spec, float *D) {
    sm_op *op = NULL;
    sm_status s = sm_op_fit(W, m, n, spec, NULL, &op);
    if (s == SM_OK) {
        sm_status t = sm_op_to_dense(op, D);
        if (t != SM_OK) {
            fprintf(stderr, "%s: to_dense: %s\n", spec, sm_last_error());
            g_failures++;
        }
    } else if (op) {
        fprintf(stderr, "%s: failed fit returned an operator\n", spec);
        g_failures++;
    }
    sm_op_free(op);
    return s;
}

static void expect_close(const char *what, const char *spec, const float *D, const float *W,
                         int64_t n, double tol) {
    double e = rel_fro(D, W, n);
    if (!all_finite(D, n) || !(e <= tol)) {
        fprintf(stderr, "%s %s: relative error %g (tolerance %g)%s\n", what, spec, e, tol,
                all_finite(D, n) ? "" : ", non-finite values");
        g_failures++;
    }
}

// --- rank-deficient matrices
// ----------------------------------------------------------------------

// W = A B in double with A (m, k), B (k, n): rank k exactly. Structures with the capacity give it
// back to float rounding; zero singular values leave zero factor columns, never NaN.
static void test_rank_deficient(void) {
    float A[8 * 2], B[2 * 8], W[64], D[64];
    fill_random(A, 16, 1);
    fill_random(B, 16, 2);
    matmul_ref(A, B, W, 8, 2, 8);
    for (int i = 0; i < NRANK2; i++) {
        sm_status s = fit_dense(W, 8, 8, k_rank2[i], D);
        CHECK_OK(s);
        if (s == SM_OK) expect_close("rank 2", k_rank2[i], D, W, 64, 2e-5);
    }
    for (int i = 0; i < NFULL; i++) {
        sm_status s = fit_dense(W, 8, 8, k_full[i], D);
        CHECK_OK(s);
        if (s == SM_OK) expect_close("rank 2", k_full[i], D, W, 64, 2e-5);
    }
    // A rank-1 matrix in a tall shape, with rank 3 asked for: exact, finite.
    float a[12], b[5], T[60], E[60];
    fill_random(a, 12, 3);
    fill_random(b, 5, 4);
    matmul_ref(a, b, T, 12, 1, 5);
    const char *tall[] = {"lowrank:rank=3", "lowrank:rank=5,solver=random", "kron:a=3x1,terms=3",
                          "lowrank:rank=1+dense"};
    for (int i = 0; i < 4; i++) {
        sm_status s = fit_dense(T, 12, 5, tall[i], E);
        CHECK_OK(s);
        if (s == SM_OK) expect_close("rank 1", tall[i], E, T, 60, 2e-5);
    }
}

// --- subnormal values
// ---------------------------------------------------------------------------------

static void test_subnormal(void) {
    float W[64], D[64];
    fill_random(W, 64, 5);
    for (int i = 0; i < 64; i++) W[i] *= 1e-40f; // every value subnormal (FLT_MIN is 1.2e-38)
    CHECK(fabsf(W[0]) < FLT_MIN);
    // f32 storage keeps them: dense bit for bit, the SVD structures (LAPACK scales tiny
    // matrices before it works) to the precision subnormals have (~2^-149 / 1e-40 = 1.4e-5).
    CHECK_OK(fit_dense(W, 8, 8, "dense", D));
    CHECK(memcmp(D, W, sizeof W) == 0);
    for (int i = 0; i < NFULL; i++) {
        sm_status s = fit_dense(W, 8, 8, k_full[i], D);
        CHECK_OK(s);
        if (s == SM_OK) expect_close("subnormal", k_full[i], D, W, 64, 1e-3);
    }
    // f16 values and q8/q4 scales (F16) have no room for them: stored as 0, a documented result.
    const char *f16[] = {"dense:dtype=f16", "dense:dtype=q8", "dense:dtype=q4",
                         "lowrank:rank=8,dtype=q8"};
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < 64; k++) D[k] = 1;
        CHECK_OK(fit_dense(W, 8, 8, f16[i], D));
        for (int k = 0; k < 64; k++)
            if (D[k] != 0) {
                fprintf(stderr, "%s: subnormal W[%d] = %g stored as %g, not 0\n", f16[i], k,
                        (double)W[k], (double)D[k]);
                g_failures++;
                break;
            }
    }
    // bf16 has float's exponent range: a subnormal rounds to the nearest multiple of 2^-133
    // (7 fraction bits below the smallest exponent).
    CHECK_OK(fit_dense(W, 8, 8, "dense:dtype=bf16", D));
    for (int k = 0; k < 64; k++)
        if (!(fabs((double)D[k] - (double)W[k]) <= ldexp(1.0, -134))) {
            fprintf(stderr, "bf16: %g stored as %g\n", (double)W[k], (double)D[k]);
            g_failures++;
            break;
        }
    // One subnormal row among normal ones: q8 gives that row zeros and keeps every other value
    // within half a step of its group's scale amax/127 (rounded to F16, relative 2^-11).
    float M[8 * 64], Q[8 * 64];
    fill_random(M, 8 * 64, 6);
    for (int j = 0; j < 64; j++) M[3 * 64 + j] *= 1e-40f;
    CHECK_OK(fit_dense(M, 8, 64, "dense:dtype=q8", Q));
    for (int i = 0; i < 8; i++) {
        float amax = 0;
        for (int j = 0; j < 64; j++) amax = fmaxf(amax, fabsf(M[i * 64 + j]));
        double step = amax / 127.0 * (1 + ldexp(1.0, -10));
        for (int j = 0; j < 64; j++) {
            double err = fabs((double)Q[i * 64 + j] - (double)M[i * 64 + j]);
            bool ok = i == 3 ? Q[i * 64 + j] == 0 : err <= 0.5 * step + 127 * step * 1e-3;
            if (!ok) {
                fprintf(stderr, "q8 row %d col %d: %g stored as %g\n", i, j, (double)M[i * 64 + j],
                        (double)Q[i * 64 + j]);
                g_failures++;
                i = 8;
                break;
            }
        }
    }
}

// --- magnitudes near FLT_MAX
// ----------------------------------------------------------------------------

// Whatever the structure, a fit of a finite matrix ends in a finite operator or SM_ERR_NUMERIC.
static void test_huge(void) {
    const char *specs[] = {"dense",
                           "dense:dtype=bf16",
                           "dense:dtype=f16",
                           "dense:dtype=q8",
                           "lowrank:rank=3",
                           "lowrank:rank=8",
                           "lowrank:rank=6,solver=random",
                           "monarch:blocks=2,rank=2",
                           "blockdiag:blocks=2",
                           "blocklowrank:blocks=2,rank=2",
                           "kron:a=2x2,terms=4",
                           "blast:blocks=2,rank=3",
                           "lowrank:rank=1+dense",
                           "dense:dtype=bf16+lowrank:rank=2"};
    const float scales[] = {1e19f, 1e37f, 3e38f};
    float W[64], D[64];
    int refused = 0;
    for (int sc = 0; sc < 3; sc++) {
        fill_random(W, 64, 7);
        for (int i = 0; i < 64; i++) W[i] *= scales[sc];
        for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
            sm_status s = fit_dense(W, 8, 8, specs[i], D);
            if (s == SM_OK) {
                if (!all_finite(D, 64)) {
                    fprintf(stderr, "%s at scale %g: fitted with non-finite values\n", specs[i],
                            (double)scales[sc]);
                    g_failures++;
                }
            } else if (s == SM_ERR_NUMERIC) {
                refused++;
            } else {
                fprintf(stderr, "%s at scale %g: %s: %s (SM_OK or SM_ERR_NUMERIC expected)\n",
                        specs[i], (double)scales[sc], sm_status_str(s), sm_last_error());
                g_failures++;
            }
        }
    }
    CHECK(refused > 0); // f16 at least cannot hold 1e19
    // dense f32 holds anything finite, bit for bit.
    CHECK_OK(fit_dense(W, 8, 8, "dense", D));
    CHECK(memcmp(D, W, sizeof W) == 0);
    // An SVD in float squares 3e38: refused, naming the overflow and the largest magnitude.
    sm_op *op = NULL;
    sm_status s = sm_op_fit(W, 8, 8, "lowrank:rank=3", NULL, &op);
    if (s != SM_OK) CHECK_FAIL(s, SM_ERR_NUMERIC, "largest magnitude is 2.9");
    sm_op_free(op);
}

// --- one element; limits
// -----------------------------------------------------------------------------

static void test_one_by_one(void) {
    const char *exact[] = {"dense",
                           "dense:dtype=bf16",
                           "dense:dtype=f16",
                           "lowrank:rank=1",
                           "monarch:blocks=1,rank=1",
                           "blockdiag:blocks=1",
                           "blocklowrank:blocks=1,rank=1",
                           "kron:a=1x1",
                           "lowrank:rank=1,solver=random",
                           "lowrank:rank=1+dense"};
    const float vals[] = {2.5f, -0.375f, 0.0f};
    for (int v = 0; v < 3; v++)
        for (size_t i = 0; i < sizeof exact / sizeof *exact; i++) {
            float w = vals[v], d = NAN;
            sm_status s = fit_dense(&w, 1, 1, exact[i], &d);
            CHECK_OK(s);
            if (s == SM_OK && !(fabsf(d - w) <= 1e-6f * fabsf(w))) {
                fprintf(stderr, "1x1 %s: %g stored as %g\n", exact[i], (double)w, (double)d);
                g_failures++;
            }
        }
    // q8 / q4 of one value: the code is +-qmax, the scale |w|/qmax in F16.
    const char *q[] = {"dense:dtype=q8", "dense:dtype=q4"};
    const double qmax[] = {127, 7};
    for (int i = 0; i < 2; i++) {
        float w = -0.3f, d = NAN;
        CHECK_OK(fit_dense(&w, 1, 1, q[i], &d));
        double want = -qmax[i] * sm_f16_to_f32(sm_f32_to_f16(0.3f / (float)qmax[i]));
        CHECK(fabs(d - want) <= 1e-7);
    }
}

static void test_limits(void) {
    float W[8 * 12], D[8 * 12];
    fill_random(W, 96, 8);
    sm_op *op = NULL;
    // One past each limit is refused with SM_ERR_SPEC and nothing built.
    const char *over[] = {"lowrank:rank=9",
                          "monarch:blocks=3",
                          "monarch:blocks=4,rank=3",
                          "blockdiag:blocks=16",
                          "blocklowrank:blocks=4,rank=3",
                          "kron:a=16x1",
                          "kron:a=2x2,terms=25",
                          "lowrank:ratio=1e-12",
                          "lowrank:rank=0"};
    for (size_t i = 0; i < sizeof over / sizeof *over; i++) {
        sm_status s = sm_op_fit(W, 8, 12, over[i], NULL, &op);
        if (s != SM_ERR_SPEC || op) {
            fprintf(stderr, "%s on 8x12: %s (SM_ERR_SPEC expected): %s\n", over[i],
                    sm_status_str(s), sm_last_error());
            g_failures++;
        }
        sm_op_free(op);
        op = NULL;
    }
    // At each limit: the whole matrix.
    const char *at[] = {"lowrank:rank=8", "monarch:blocks=4,rank=2", "blocklowrank:blocks=4,rank=2",
                        "kron:a=8x12", "kron:a=2x2,terms=4"};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
        sm_status s = fit_dense(W, 8, 12, at[i], D);
        CHECK_OK(s);
        if (s == SM_OK) expect_close("limit", at[i], D, W, 96, 2e-5);
    }
}

// --- GPTQ on a singular Gram matrix
// ---------------------------------------------------------------

// H = x x^T (rank 1) is singular; damping makes it definite: a finite operator. H = 0 cannot be
// damped (lambda is relative to its diagonal): a clear SM_ERR_NUMERIC, never a NaN operator.
static void test_gptq_singular(void) {
    const int64_t m = 4, n = 64;
    float W[4 * 64], D[4 * 64], x[64];
    double H[64 * 64];
    fill_random(W, m * n, 11);
    fill_random(x, n, 12);
    for (int kind = 0; kind < 2; kind++) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) H[i * n + j] = kind ? 0.0 : (double)x[i] * x[j];
        sm_stats st = {.gram = H, .tokens = 1};
        sm_fit_opts o = {.seed = 1, .stats = &st};
        const char *specs[] = {"gptq:bits=4", "gptq:bits=3,actorder", "gptq:bits=2,damp=0"};
        for (int s = 0; s < 3; s++) {
            sm_op *op = NULL;
            sm_status r = sm_op_fit(W, m, n, specs[s], &o, &op);
            if (r == SM_OK && sm_op_to_dense(op, D) == SM_OK && all_finite(D, m * n)) {
                // Only X (W - Q)^T counts, here (W - Q) x: GPTQ keeps it below W x (the error
                // in directions H does not see is unconstrained, so no bound on ||W - Q||).
                double e = 0, w = 0;
                for (int64_t i = 0; kind == 0 && i < m; i++) {
                    double de = 0, dw = 0;
                    for (int64_t j = 0; j < n; j++) {
                        de += ((double)W[i * n + j] - D[i * n + j]) * x[j];
                        dw += (double)W[i * n + j] * x[j];
                    }
                    e += de * de, w += dw * dw;
                }
                if (kind == 0 && !(sqrt(e / w) < 0.5)) {
                    fprintf(stderr, "%s, rank-1 Gram: activation error %g\n", specs[s],
                            sqrt(e / w));
                    g_failures++;
                }
            } else if (r != SM_ERR_NUMERIC || op) {
                fprintf(stderr, "%s with a %s Gram: %s: %s\n", specs[s], kind ? "zero" : "rank-1",
                        sm_status_str(r), sm_last_error());
                g_failures++;
            }
            sm_op_free(op);
        }
    }
}

// --- apply writes its outputs
// ------------------------------------------------------------------------

// Y and the workspace filled with NaN before apply must not show through (an output computed
// with "beta = 0" but read, or a row of work used before it is written, would); a NaN in input
// row 1 poisons output row 1 only.
static void test_apply_overwrites(void) {
    const char *specs[] = {"dense",
                           "dense:dtype=q4",
                           "lowrank:rank=3,dtype=q8",
                           "monarch:blocks=2,rank=2",
                           "blockdiag:blocks=2,dtype=bf16",
                           "blocklowrank:blocks=2,rank=1,dtype=f16",
                           "kron:a=2x3,terms=2",
                           "blast:blocks=2,rank=2",
                           "lowrank:rank=1+dense:dtype=q8+kron:a=2x2"};
    const int64_t m = 8, n = 12, N = 3;
    float W[8 * 12];
    fill_random(W, m * n, 9);
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, specs[s], NULL, &op));
        if (!op) continue;
        for (int t = 0; t < 2; t++) {
            int64_t in = t ? m : n, out = t ? n : m;
            size_t ws = sm_op_workspace(op, N);
            float X[3 * 12], Y[3 * 12], *work = malloc((ws + 1) * sizeof(float));
            fill_random(X, N * in, 10);
            for (int bad = 0; bad < 2; bad++) {
                if (bad) X[1 * in + 2] = NAN;
                for (int64_t i = 0; i < N * out; i++) Y[i] = NAN;
                for (size_t i = 0; i <= ws; i++) work[i] = NAN;
                CHECK_OK(t ? sm_op_apply_t(op, N, X, Y, work) : sm_op_apply(op, N, X, Y, work));
                for (int64_t b = 0; b < N; b++)
                    if (all_finite(Y + b * out, out) != !(bad && b == 1)) {
                        fprintf(stderr, "%s %s: row %lld of the output %s\n", specs[s],
                                t ? "apply_t" : "apply", (long long)b,
                                bad && b == 1 ? "is finite despite a NaN input" : "is not finite");
                        g_failures++;
                    }
            }
            free(work);
        }
        sm_op_free(op);
    }
}

int main(void) {
    test_rank_deficient();
    test_subnormal();
    test_huge();
    test_one_by_one();
    test_limits();
    test_gptq_singular();
    test_apply_overwrites();
    TEST_END();
}
