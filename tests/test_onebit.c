// onebit (src/ops/onebit.c):
// - on a Gaussian W the per-tensor scaled sign alpha sign(W) (alpha = mean |w|, the least-squares
//   optimum, computed here) has relative squared error 1 - 2/pi to 1e-2, and SVID is lower,
//   also lower than the per-row scaled sign;
// - SVID's error equals that of the best rank-1 approximation of |W| (LAPACK's singular values:
//   ||W - S * (a b^T)|| = || |W| - a b^T || since W = S * |W|), on Gaussian and on the shared
//   model's matrices; a and b are non-negative and the signs are W's (sign(0) = +1);
// - apply and apply_t equal the dense products for N = 1 and 64 at every kernel level; parts and
//   nbytes are m ceil(n / 8) + 2 (m + n) bytes; a non-finite or mis-shaped part is refused.
#include "base/base.h"
#include "linalg/linalg.h"
#include "modelinputs.h"
#include "testutil.h"

static double rel_sq(const float *A, const float *W, int64_t count) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < count; i++) {
        num += ((double)A[i] - W[i]) * ((double)A[i] - W[i]);
        den += (double)W[i] * W[i];
    }
    return num / den;
}

// Squared error of the best rank-1 approximation of |W|: ||W||^2 - sigma_1(|W|)^2.
static double rank1_abs_error(const float *W, int64_t m, int64_t n) {
    int64_t k = m < n ? m : n;
    double *A = malloc(sizeof(double) * (size_t)(m * n)), *S = malloc(sizeof(double) * (size_t)k);
    for (int64_t i = 0; i < m * n; i++) A[i] = fabs((double)W[i]);
    CHECK_OK(sm_svd_f64(A, m, n, NULL, S, NULL));
    double e = 0;
    for (int64_t i = 1; i < k; i++) e += S[i] * S[i];
    free(A), free(S);
    return e;
}

static void check_svid(const char *what, const float *W, int64_t m, int64_t n) {
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "onebit", NULL, &op));
    if (!op) return;
    float *D = malloc(sizeof(float) * (size_t)(m * n));
    CHECK_OK(sm_op_to_dense(op, D));
    double err = 0, opt = rank1_abs_error(W, m, n);
    for (int64_t i = 0; i < m * n; i++) err += ((double)D[i] - W[i]) * ((double)D[i] - W[i]);
    if (!(fabs(err - opt) <= 1e-4 * opt)) {
        fprintf(stderr, "%s: onebit squared error %.9g, best rank-1 of |W| %.9g\n", what, err, opt);
        g_failures++;
    }
    int bad = 0;
    for (int64_t i = 0; i < m * n; i++) bad += (D[i] >= 0) != (W[i] >= 0) && D[i] != 0;
    CHECK(bad == 0);
    sm_part *parts;
    int np;
    CHECK_OK(sm_op_parts(op, &parts, &np));
    CHECK(np == 3);
    for (int i = 1; i < np; i++) // a and b are non-negative
        for (int64_t j = 0; j < parts[i].shape[0]; j++)
            CHECK(sm_f16_to_f32(((const uint16_t *)parts[i].data)[j]) >= 0);
    CHECK(sm_op_nbytes(op) == m * ((n + 7) / 8) + 2 * (m + n));
    free(parts), free(D);
    sm_op_free(op);
}

static void test_gaussian(void) {
    int64_t m = 300, n = 300;
    float *W = malloc(sizeof(float) * (size_t)(m * n)), *A = malloc(sizeof(float) * (size_t)(m * n));
    sm_rng rng;
    sm_rng_seed(&rng, 2024);
    for (int64_t i = 0; i < m * n; i++) W[i] = (float)sm_rng_normal(&rng);
    double mean = 0;
    for (int64_t i = 0; i < m * n; i++) mean += fabs(W[i]);
    mean /= (double)(m * n);
    for (int64_t i = 0; i < m * n; i++) A[i] = (float)(W[i] >= 0 ? mean : -mean);
    double tensor = rel_sq(A, W, m * n);
    if (!(fabs(tensor - (1 - 2 / M_PI)) <= 1e-2)) {
        fprintf(stderr, "per-tensor scaled sign: relative squared error %.4f, 1 - 2/pi = %.4f\n",
                tensor, 1 - 2 / M_PI);
        g_failures++;
    }
    for (int64_t r = 0; r < m; r++) { // per-row alpha
        double a = 0;
        for (int64_t c = 0; c < n; c++) a += fabs(W[r * n + c]);
        a /= (double)n;
        for (int64_t c = 0; c < n; c++) A[r * n + c] = (float)(W[r * n + c] >= 0 ? a : -a);
    }
    double row = rel_sq(A, W, m * n);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "onebit", NULL, &op));
    if (op) {
        CHECK_OK(sm_op_to_dense(op, A));
        double svid = rel_sq(A, W, m * n);
        if (!(svid < row && row <= tensor)) {
            fprintf(stderr, "relative squared errors: SVID %.5f, per-row %.5f, per-tensor %.5f\n",
                    svid, row, tensor);
            g_failures++;
        }
        sm_op_free(op);
    }
    check_svid("gaussian 300x300", W, m, n);
    free(W), free(A);
}

static void test_model(void) {
    for (int p = 0; p < NPROJ; p++) {
        float *W, *X;
        int64_t m, n, N;
        if (!model_layer(p % NLAYERS, p, &W, &m, &n, &X, &N)) return;
        char what[96];
        snprintf(what, sizeof what, "layer %d %s", p % NLAYERS, k_proj[p]);
        check_svid(what, W, m, n);
        free(W), free(X);
    }
}

static void test_apply(void) {
    static const int64_t shapes[][2] = {{33, 70}, {64, 256}, {17, 9}, {128, 1000}};
    for (int s = 0; s < 4; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1];
        float *W = malloc(sizeof(float) * (size_t)(m * n)), *D = malloc(sizeof(float) * (size_t)(m * n));
        fill_random(W, m * n, 3 + (unsigned)s);
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, "onebit", NULL, &op));
        if (!op) continue;
        CHECK_OK(sm_op_to_dense(op, D));
        for (int isa = 0; isa <= (int)sm_isa_detect(); isa++) {
            CHECK_OK(sm_isa_set((sm_isa)isa));
            for (int64_t N = 1; N <= 64; N += 63)
                for (int t = 0; t < 2; t++) {
                    int64_t in = t ? m : n, out = t ? n : m;
                    float *X = malloc(sizeof(float) * (size_t)(N * in)), *Y = malloc(sizeof(float) * (size_t)(N * out));
                    float *R = malloc(sizeof(float) * (size_t)(N * out));
                    fill_random(X, N * in, 70 + (unsigned)N);
                    if (t)
                        CHECK_OK(sm_op_apply_t(op, N, X, Y, NULL));
                    else
                        CHECK_OK(sm_op_apply(op, N, X, Y, NULL));
                    for (int64_t i = 0; i < N; i++)
                        for (int64_t o = 0; o < out; o++) {
                            double acc = 0;
                            for (int64_t k = 0; k < in; k++)
                                acc += (double)X[i * in + k] * (t ? D[k * n + o] : D[o * n + k]);
                            R[i * out + o] = (float)acc;
                        }
                    char what[96];
                    snprintf(what, sizeof what, "onebit %lldx%lld %s N=%lld isa %s", (long long)m,
                             (long long)n, t ? "apply_t" : "apply", (long long)N,
                             sm_isa_name((sm_isa)isa));
                    check_close(what, Y, R, N * out, 1e-5);
                    free(X), free(Y), free(R);
                }
        }
        CHECK_OK(sm_isa_set(sm_isa_detect()));
        // A non-finite vector entry or a mis-shaped part is refused.
        sm_part *parts;
        int np;
        CHECK_OK(sm_op_parts(op, &parts, &np));
        sm_op *back = NULL;
        uint16_t *a = malloc(sizeof(uint16_t) * (size_t)m);
        memcpy(a, parts[1].data, sizeof(uint16_t) * (size_t)m);
        a[m / 2] = 0x7e00; // NaN
        parts[1].data = a;
        CHECK_FAIL(sm_op_from_parts("onebit", m, n, parts, np, &back), SM_ERR_NUMERIC,
                   "part \"a\" has a non-finite value");
        parts[0].shape[1]++;
        CHECK_FAIL(sm_op_from_parts("onebit", m, n, parts, np, &back), SM_ERR_FORMAT,
                   "part \"signs\"");
        CHECK(back == NULL);
        free(a), free(parts), free(W), free(D);
        sm_op_free(op);
    }
    float W[4] = {1, 2, 3, 4};
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 2, 2, "onebit:k=1", NULL, &op), SM_ERR_SPEC, "k");
    W[1] = 1e6f; // a b^T with entries near 1e6: a and b about 1e3 each, fine
    CHECK_OK(sm_op_fit(W, 2, 2, "onebit", NULL, &op));
    sm_op_free(op);
    op = NULL;
    W[1] = 1e12f; // sqrt(sigma) ~ 1e6 exceeds F16
    CHECK_FAIL(sm_op_fit(W, 2, 2, "onebit", NULL, &op), SM_ERR_NUMERIC, "F16 range");
}

int main(void) {
    test_gaussian();
    test_model();
    test_apply();
    TEST_END();
}
