// sm_matrix_analyze against closed forms: matrices built with known singular values, entries with
// known moments, and eigenvalues drawn from a Pareto law with a known exponent.
#include "testutil.h"

#include "base/base.h"

// Applies a random Householder reflection (I - 2 v v^T) from the left to A (m, n), k times.
static void random_orthogonal_left(double *A, int64_t m, int64_t n, int k, sm_rng *rng) {
    double *v = malloc(sizeof(double) * (size_t)m);
    for (int t = 0; t < k; t++) {
        double nv = 0;
        for (int64_t i = 0; i < m; i++) {
            v[i] = sm_rng_normal(rng);
            nv += v[i] * v[i];
        }
        nv = sqrt(nv);
        for (int64_t i = 0; i < m; i++) v[i] /= nv;
        for (int64_t j = 0; j < n; j++) {
            double d = 0;
            for (int64_t i = 0; i < m; i++) d += v[i] * A[i * n + j];
            for (int64_t i = 0; i < m; i++) A[i * n + j] -= 2 * d * v[i];
        }
    }
    free(v);
}

// W (m, n) = Q1 diag(s) Q2^T with random orthogonal Q1, Q2.
static float *with_singular_values(const double *s, int64_t m, int64_t n, uint64_t seed) {
    int64_t k = m < n ? m : n;
    double *A = calloc((size_t)(m * n), sizeof(double));
    for (int64_t i = 0; i < k; i++) A[i * n + i] = s[i];
    sm_rng rng;
    sm_rng_seed(&rng, seed);
    random_orthogonal_left(A, m, n, 6, &rng);
    // Right side: transpose, reflect, transpose back.
    double *T = malloc(sizeof(double) * (size_t)(m * n));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) T[j * m + i] = A[i * n + j];
    random_orthogonal_left(T, n, m, 6, &rng);
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) W[i * n + j] = (float)T[j * m + i];
    free(A), free(T);
    return W;
}

static void close_rel(const char *what, double got, double want, double tol) {
    if (!(fabs(got - want) <= tol * fabs(want))) {
        fprintf(stderr, "%s: got %.9g, expected %.9g (rel tol %g)\n", what, got, want, tol);
        g_failures++;
    }
}

static void known_spectrum(int64_t m, int64_t n) {
    int64_t k = m < n ? m : n;
    double *s = malloc(sizeof(double) * (size_t)k);
    double sum = 0, e = 0;
    for (int64_t i = 0; i < k; i++) {
        s[i] = 3.0 * pow(0.93, (double)i) + 0.01;
        sum += s[i];
        e += s[i] * s[i];
    }
    float *W = with_singular_values(s, m, n, 42 + (uint64_t)m);
    sm_matrix_stats st;
    double *sig = malloc(sizeof(double) * (size_t)k);
    CHECK_OK(sm_matrix_analyze(W, m, n, &st, sig));
    close_rel("spectral norm", st.spectral_norm, s[0], 1e-5);
    close_rel("frobenius norm", st.fro_norm, sqrt(e), 1e-5);
    close_rel("stable rank", st.stable_rank, e / (s[0] * s[0]), 1e-4);
    double h = 0;
    for (int64_t i = 0; i < k; i++) h -= s[i] / sum * log(s[i] / sum);
    close_rel("effective rank", st.effective_rank, exp(h), 1e-5);
    int64_t k90 = 0, k99 = 0;
    double acc = 0;
    for (int64_t i = 0; i < k; i++) {
        acc += s[i] * s[i];
        if (!k90 && acc >= 0.9 * e) k90 = i + 1;
        if (!k99 && acc >= 0.99 * e) k99 = i + 1;
    }
    CHECK(st.k90 == k90);
    CHECK(st.k99 == k99);
    for (int64_t i = 0; i < k; i++) close_rel("sigma", sig[i], s[i], 2e-4);
    free(s), free(W), free(sig);
}

static void entry_moments(void) {
    // 100 entries: 99 of +-1 alternating... plus one 10: mean, moments in closed form.
    enum { M = 10, N = 10 };
    float W[M * N];
    for (int i = 0; i < M * N; i++) W[i] = (i % 2) ? 1.0f : -1.0f;
    W[37] = 10.0f; // an odd index: replaces a +1
    double mean = (49 * 1.0 + 50 * -1.0 + 10.0) / 100.0, m2 = 0, m4 = 0, sq = 0;
    for (int i = 0; i < M * N; i++) {
        double d = W[i] - mean;
        m2 += d * d / 100.0;
        m4 += d * d * d * d / 100.0;
        sq += (double)W[i] * W[i];
    }
    sm_matrix_stats st;
    CHECK_OK(sm_matrix_analyze(W, M, N, &st, NULL));
    close_rel("kurtosis", st.kurtosis, m4 / (m2 * m2) - 3.0, 1e-9);
    close_rel("max/rms", st.max_over_rms, 10.0 / sqrt(sq / 100.0), 1e-9);
}

static void pareto_alpha(double alpha_true) {
    // Eigenvalues x = xmin u^(-1/(alpha-1)) follow a power law of exponent alpha exactly; the
    // fitted alpha must come out near it.
    int64_t k = 1500, m = k, n = k;
    double *s = malloc(sizeof(double) * (size_t)k);
    sm_rng rng;
    sm_rng_seed(&rng, 7);
    for (int64_t i = 0; i < k; i++) {
        double u = 1.0 - sm_rng_uniform(&rng);
        s[i] = sqrt(0.5 * pow(u, -1.0 / (alpha_true - 1.0)));
    }
    // Sort decreasing.
    for (int64_t i = 1; i < k; i++)
        for (int64_t j = i; j > 0 && s[j] > s[j - 1]; j--) {
            double t = s[j];
            s[j] = s[j - 1];
            s[j - 1] = t;
        }
    // Build a diagonal matrix directly: the spectrum is the point here, not the rotation.
    float *W = calloc((size_t)(m * n), sizeof(float));
    for (int64_t i = 0; i < k; i++) W[i * n + i] = (float)s[i];
    sm_matrix_stats st;
    CHECK_OK(sm_matrix_analyze(W, m, n, &st, NULL));
    if (!(fabs(st.alpha - alpha_true) < 0.15 * alpha_true)) {
        fprintf(stderr, "alpha: fitted %.4f for a Pareto law of exponent %.2f\n", st.alpha,
                alpha_true);
        g_failures++;
    }
    CHECK(st.alpha_ks >= 0 && st.alpha_ks < 0.1);
    CHECK(st.alpha_n >= 10 && st.alpha_n <= k);
    free(s), free(W);
}

int main(void) {
    known_spectrum(60, 60);
    known_spectrum(80, 50);
    known_spectrum(37, 90);
    entry_moments();
    pareto_alpha(2.5);
    pareto_alpha(4.0);
    float bad[4] = {1, NAN, 0, 1};
    sm_matrix_stats st;
    CHECK_FAIL(sm_matrix_analyze(bad, 2, 2, &st, NULL), SM_ERR_NUMERIC, "non-finite");
    TEST_END();
}
