// blockdiag and blocklowrank against independent references:
// - blockdiag: a random block-diagonal matrix is recovered exactly; on a random matrix the fit
//   keeps the diagonal blocks bit for bit, is zero elsewhere, and its error is the norm of the
//   off-diagonal blocks; the "D" part is (K, m/K, n/K) with block i at [i].
// - blocklowrank: a random matrix of rank-T blocks is recovered to 1e-5; on a random matrix the
//   error equals the root-sum-square of the per-block residuals (LAPACK dgesdd in double); apply
//   equals a naive forward written from the documented "U" (K, m/K, K T) / "V" (K, K T, n/K)
//   layout read through the parts.
// - sizes, canonical specs and errors.
#include "linalg/linalg.h"
#include "testutil.h"

static double fro_diff(const float *a, const float *b, int64_t count) {
    double sum = 0;
    for (int64_t i = 0; i < count; i++) sum += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(sum);
}

static const sm_part *find_part(const sm_part *parts, int np, const char *name) {
    for (int i = 0; i < np; i++)
        if (strcmp(parts[i].name, name) == 0) return &parts[i];
    fprintf(stderr, "part %s missing\n", name);
    g_failures++;
    return NULL;
}

// --- blockdiag ----------------------------------------------------------------------------------

static void test_blockdiag(int64_t m, int64_t n, int64_t K) {
    int64_t mb = m / K, nb = n / K;
    float *W = malloc(sizeof(float) * (size_t)(m * n)),
          *D = malloc(sizeof(float) * (size_t)(m * n));
    char spec[64];
    snprintf(spec, sizeof spec, "blockdiag:blocks=%lld", (long long)K);
    // Random W: diagonal blocks kept exactly, zeros elsewhere, error = off-diagonal norm.
    fill_random(W, m * n, 17 + (unsigned)(m + n));
    sm_op *op = fit_op(W, m, n, spec);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        double off = 0;
        int bad = 0;
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < n; c++) {
                bool diag = r / mb == c / nb;
                if (!diag) off += (double)W[r * n + c] * W[r * n + c];
                if (D[r * n + c] != (diag ? W[r * n + c] : 0.0f)) bad++;
            }
        CHECK(bad == 0);
        double got = fro_diff(D, W, m * n);
        CHECK(fabs(got - sqrt(off)) <= 1e-6 * sqrt(off));
        CHECK(strcmp(sm_op_spec(op), spec) == 0);
        CHECK(sm_op_nparams(op) == m * n / K && sm_op_macs(op) == m * n / K);
        CHECK(sm_op_nbytes(op) == 4 * m * n / K);
        sm_part *parts = NULL;
        int np = 0;
        CHECK_OK(sm_op_parts(op, &parts, &np));
        const sm_part *p = np == 1 ? find_part(parts, np, "D") : NULL;
        CHECK(np == 1);
        if (p) {
            CHECK(p->ndim == 3 && p->shape[0] == K && p->shape[1] == mb && p->shape[2] == nb);
            const float *d = p->data;
            int wrong = 0;
            for (int64_t i = 0; i < K; i++)
                for (int64_t r = 0; r < mb; r++)
                    for (int64_t c = 0; c < nb; c++)
                        if (d[(i * mb + r) * nb + c] != W[(i * mb + r) * n + i * nb + c]) wrong++;
            CHECK(wrong == 0);
        }
        free(parts);
        sm_op_free(op);
    }
    // A block-diagonal W is recovered exactly.
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++)
            if (r / mb != c / nb) W[r * n + c] = 0;
    op = fit_op(W, m, n, spec);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        CHECK(memcmp(D, W, sizeof(float) * (size_t)(m * n)) == 0);
        sm_op_free(op);
    }
    free(W), free(D);
}

// --- blocklowrank -------------------------------------------------------------------------------

static void random_blr(float *W, int64_t m, int64_t n, int64_t K, int64_t T, unsigned seed) {
    int64_t mb = m / K, nb = n / K;
    float *U = malloc(sizeof(float) * (size_t)(mb * T)),
          *V = malloc(sizeof(float) * (size_t)(T * nb));
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < K; j++) {
            fill_random(U, mb * T, seed + (unsigned)(i * K + j) * 2);
            fill_random(V, T * nb, seed + (unsigned)(i * K + j) * 2 + 1);
            for (int64_t r = 0; r < mb; r++)
                for (int64_t c = 0; c < nb; c++) {
                    double acc = 0;
                    for (int64_t t = 0; t < T; t++) acc += (double)U[r * T + t] * V[t * nb + c];
                    W[(i * mb + r) * n + j * nb + c] = (float)acc;
                }
        }
    free(U), free(V);
}

static double blr_optimal_error(const float *W, int64_t m, int64_t n, int64_t K, int64_t T) {
    int64_t mb = m / K, nb = n / K, k_ = mb < nb ? mb : nb;
    double *B = malloc(sizeof(double) * (size_t)(mb * nb)),
           *S = malloc(sizeof(double) * (size_t)k_);
    double sum = 0;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < K; j++) {
            for (int64_t r = 0; r < mb; r++)
                for (int64_t c = 0; c < nb; c++) B[r * nb + c] = W[(i * mb + r) * n + j * nb + c];
            CHECK_OK(sm_svd_f64(B, mb, nb, NULL, S, NULL));
            for (int64_t t = T; t < k_; t++) sum += S[t] * S[t];
        }
    free(B), free(S);
    return sqrt(sum);
}

static void test_blr_recovery(int64_t m, int64_t n, int64_t K, int64_t T) {
    float *W = malloc(sizeof(float) * (size_t)(m * n)),
          *D = malloc(sizeof(float) * (size_t)(m * n));
    random_blr(W, m, n, K, T, 23 + (unsigned)(m + n));
    char spec[64];
    snprintf(spec, sizeof spec, "blocklowrank:blocks=%lld,rank=%lld", (long long)K, (long long)T);
    sm_op *op = fit_op(W, m, n, spec);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        double e = rel_fro(D, W, m * n);
        if (!(e <= 1e-5)) {
            fprintf(stderr, "%s on %lldx%lld: recovery error %.3g\n", spec, (long long)m,
                    (long long)n, e);
            g_failures++;
        }
        CHECK(strcmp(sm_op_spec(op), spec) == 0);
        CHECK(sm_op_nparams(op) == K * T * (m + n) && sm_op_macs(op) == K * T * (m + n));
        CHECK(sm_op_nbytes(op) == 4 * K * T * (m + n));
        sm_op_free(op);
    }
    free(W), free(D);
}

static void test_blr_optimal(int64_t m, int64_t n, int64_t K, int64_t T) {
    float *W = malloc(sizeof(float) * (size_t)(m * n)),
          *D = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 41 + (unsigned)(m * n));
    char spec[64];
    snprintf(spec, sizeof spec, "blocklowrank:blocks=%lld,rank=%lld", (long long)K, (long long)T);
    sm_op *op = fit_op(W, m, n, spec);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        double got = fro_diff(D, W, m * n), want = blr_optimal_error(W, m, n, K, T);
        if (!(fabs(got - want) <= 1e-5 * want)) {
            fprintf(stderr, "%s on %lldx%lld: error %.9g, optimal %.9g\n", spec, (long long)m,
                    (long long)n, got, want);
            g_failures++;
        }
        sm_op_free(op);
    }
    free(W), free(D);
}

// y_i = sum_j U_ij (V_ij x_j) from U (K, mb, K T) and V (K, K T, nb) as documented.
static void test_blr_layout(int64_t m, int64_t n, int64_t K, int64_t T) {
    int64_t mb = m / K, nb = n / K, KT = K * T, N = 2;
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 61);
    char spec[64];
    snprintf(spec, sizeof spec, "blocklowrank:blocks=%lld,rank=%lld", (long long)K, (long long)T);
    sm_op *op = fit_op(W, m, n, spec);
    if (!op) {
        free(W);
        return;
    }
    sm_part *parts = NULL;
    int np = 0;
    CHECK_OK(sm_op_parts(op, &parts, &np));
    const sm_part *pu = find_part(parts, np, "U"), *pv = find_part(parts, np, "V");
    if (pu && pv) {
        CHECK(pu->ndim == 3 && pu->shape[0] == K && pu->shape[1] == mb && pu->shape[2] == KT);
        CHECK(pv->ndim == 3 && pv->shape[0] == K && pv->shape[1] == KT && pv->shape[2] == nb);
        const float *U = pu->data, *V = pv->data;
        float *X = malloc(sizeof(float) * (size_t)(N * n)),
              *Y = malloc(sizeof(float) * (size_t)(N * m));
        float *R = malloc(sizeof(float) * (size_t)(N * m));
        fill_random(X, N * n, 8);
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < K; i++)
                for (int64_t r = 0; r < mb; r++) {
                    double acc = 0;
                    for (int64_t j = 0; j < K; j++)
                        for (int64_t t = 0; t < T; t++) {
                            double v = 0;
                            for (int64_t c = 0; c < nb; c++)
                                v += (double)V[(j * KT + i * T + t) * nb + c] *
                                     X[b * n + j * nb + c];
                            acc += (double)U[(i * mb + r) * KT + j * T + t] * v;
                        }
                    R[b * m + i * mb + r] = (float)acc;
                }
        CHECK_OK(sm_op_apply(op, N, X, Y, NULL));
        check_close("blocklowrank layout forward", Y, R, N * m, 1e-5);
        free(X), free(Y), free(R);
    }
    free(parts);
    sm_op_free(op);
    free(W);
}

int main(void) {
    test_blockdiag(48, 48, 4);
    test_blockdiag(39, 57, 3);
    test_blockdiag(35, 95, 5);
    test_blockdiag(20, 30, 1);

    test_blr_recovery(48, 48, 4, 3);
    test_blr_recovery(39, 57, 3, 2);
    test_blr_recovery(35, 95, 5, 7); // T = min(m, n)/K: full rank per block
    test_blr_recovery(120, 36, 2, 5);
    test_blr_optimal(48, 48, 4, 5);
    test_blr_optimal(63, 45, 3, 6);
    test_blr_optimal(66, 130, 2, 17);
    test_blr_layout(48, 48, 4, 3);
    test_blr_layout(30, 45, 3, 2);

    check_canonical("blockdiag:blocks=2,dtype=q4", 8, 8, "blockdiag:blocks=2,dtype=q4");
    check_canonical("blocklowrank:blocks=4,ratio=0.25", 64, 64, "blocklowrank:blocks=4,rank=2");
    // 3 T (60 + 90) <= 0.2 * 60 * 90 = 1080 -> T = 2 (T = 3 needs 1350)
    check_canonical("blocklowrank:ratio=0.2,blocks=3", 60, 90, "blocklowrank:blocks=3,rank=2");
    check_canonical("blocklowrank:blocks=3,rank=2,dtype=bf16", 60, 90,
              "blocklowrank:blocks=3,rank=2,dtype=bf16");

    check_fit_fails("blockdiag:blocks=5", 48, 48, "blocks=5 does not divide the 48x48 matrix");
    check_fit_fails("blockdiag:blocks=4", 48, 30, "blocks=4 does not divide");
    check_fit_fails("blockdiag", 48, 48, "needs blocks=K");
    check_fit_fails("blockdiag:blocks=2,rank=3", 48, 48, "unknown key \"rank\"");
    check_fit_fails("blocklowrank:blocks=5,rank=2", 48, 48, "blocks=5 does not divide the 48x48 matrix");
    check_fit_fails("blocklowrank:blocks=4,rank=2", 50, 48, "does not divide");
    check_fit_fails("blocklowrank:blocks=4,rank=13", 48, 48, "rank=13 per block is too large");
    check_fit_fails("blocklowrank:blocks=4,rank=7", 24, 48, "at most 6");
    check_fit_fails("blocklowrank:blocks=4", 48, 48, "needs rank=T");
    check_fit_fails("blocklowrank:blocks=4,ratio=0.01", 48, 48, "no room for rank 1 per block");
    check_fit_fails("blocklowrank:rank=2", 48, 48, "needs blocks=K");
    TEST_END();
}
