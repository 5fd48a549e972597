// kron against independent references:
// - a random sum of S Kronecker products A_s (P, Q) kron B_s (m/P, n/Q), built here entry by
//   entry, is recovered to 1e-5;
// - on a random matrix the fit error equals the Eckart-Young residual of the Van Loan-Pitsianis
//   rearrangement R[(p, q)][(i, j)] = W[p Mb + i][q Nb + j] (built here, LAPACK dgesdd in double);
// - apply and apply_t equal a naive forward written from the parts "A" (S, P, Q), "B" (S, Mb, Nb),
//   for shapes that take either evaluation order; macs is the cheaper order's count;
// - canonical specs and errors.
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

static void kron_spec(char *buf, size_t cap, int64_t P, int64_t Q, int64_t S) {
    snprintf(buf, cap, "kron:a=%lldx%lld,terms=%lld", (long long)P, (long long)Q, (long long)S);
}

static void test_recovery(int64_t m, int64_t n, int64_t P, int64_t Q, int64_t S) {
    int64_t Mb = m / P, Nb = n / Q;
    float *W = calloc((size_t)(m * n), sizeof(float)), *D = malloc(sizeof(float) * (size_t)(m * n));
    float *A = malloc(sizeof(float) * (size_t)(P * Q)),
          *B = malloc(sizeof(float) * (size_t)(Mb * Nb));
    for (int64_t s = 0; s < S; s++) {
        fill_random(A, P * Q, 70 + (unsigned)s);
        fill_random(B, Mb * Nb, 90 + (unsigned)s);
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < n; c++)
                W[r * n + c] += A[(r / Mb) * Q + c / Nb] * B[(r % Mb) * Nb + c % Nb];
    }
    char spec[64];
    kron_spec(spec, sizeof spec, P, Q, S);
    sm_op *op = fit_op(W, m, n, spec);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        double e = rel_fro(D, W, m * n);
        if (!(e <= 1e-5)) {
            fprintf(stderr, "%s on %lldx%lld: recovery error %.3g\n", spec, (long long)m,
                    (long long)n, e);
            g_failures++;
        }
        CHECK(sm_op_nparams(op) == S * (P * Q + Mb * Nb));
        CHECK(sm_op_nbytes(op) == 4 * S * (P * Q + Mb * Nb));
        int64_t c1 = S * (n * Mb + m * Q), c2 = S * (n * P + m * Nb);
        CHECK(sm_op_macs(op) == (c1 < c2 ? c1 : c2));
        sm_op_free(op);
    }
    free(W), free(D), free(A), free(B);
}

static void test_optimal(int64_t m, int64_t n, int64_t P, int64_t Q, int64_t S) {
    int64_t Mb = m / P, Nb = n / Q, PQ = P * Q, MN = Mb * Nb, k = PQ < MN ? PQ : MN;
    float *W = malloc(sizeof(float) * (size_t)(m * n)),
          *D = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 13 + (unsigned)(m + n + S));
    double *R = malloc(sizeof(double) * (size_t)(m * n)), *sig = malloc(sizeof(double) * (size_t)k);
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++)
            R[((r / Mb) * Q + c / Nb) * MN + (r % Mb) * Nb + c % Nb] = W[r * n + c];
    CHECK_OK(sm_svd_f64(R, PQ, MN, NULL, sig, NULL));
    double tail = 0;
    for (int64_t j = S; j < k; j++) tail += sig[j] * sig[j];
    char spec[64];
    kron_spec(spec, sizeof spec, P, Q, S);
    sm_op *op = fit_op(W, m, n, spec);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        double got = fro_diff(D, W, m * n), want = sqrt(tail);
        if (!(fabs(got - want) <= 1e-5 * want)) {
            fprintf(stderr, "%s on %lldx%lld: error %.9g, Eckart-Young %.9g\n", spec, (long long)m,
                    (long long)n, got, want);
            g_failures++;
        }
        sm_op_free(op);
    }
    free(W), free(D), free(R), free(sig);
}

// y[p Mb + i] = sum_s sum_q sum_j A[s][p][q] B[s][i][j] x[q Nb + j], and x = y W likewise.
static void test_layout(int64_t m, int64_t n, int64_t P, int64_t Q, int64_t S) {
    int64_t Mb = m / P, Nb = n / Q, N = 3;
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 29);
    char spec[64];
    kron_spec(spec, sizeof spec, P, Q, S);
    sm_op *op = fit_op(W, m, n, spec);
    if (!op) {
        free(W);
        return;
    }
    sm_part *parts = NULL;
    int np = 0;
    CHECK_OK(sm_op_parts(op, &parts, &np));
    const sm_part *pa = find_part(parts, np, "A"), *pb = find_part(parts, np, "B");
    if (pa && pb) {
        CHECK(pa->ndim == 3 && pa->shape[0] == S && pa->shape[1] == P && pa->shape[2] == Q);
        CHECK(pb->ndim == 3 && pb->shape[0] == S && pb->shape[1] == Mb && pb->shape[2] == Nb);
        const float *A = pa->data, *B = pb->data;
        int64_t big = m > n ? m : n;
        float *X = malloc(sizeof(float) * (size_t)(N * big)),
              *Y = malloc(sizeof(float) * (size_t)(N * big));
        float *R = malloc(sizeof(float) * (size_t)(N * big));
        fill_random(X, N * big, 12);
        for (int64_t b = 0; b < N; b++)
            for (int64_t r = 0; r < m; r++) {
                double acc = 0;
                for (int64_t s = 0; s < S; s++)
                    for (int64_t c = 0; c < n; c++)
                        acc += (double)A[(s * P + r / Mb) * Q + c / Nb] *
                               B[(s * Mb + r % Mb) * Nb + c % Nb] * X[b * n + c];
                R[b * m + r] = (float)acc;
            }
        CHECK_OK(sm_op_apply(op, N, X, Y, NULL));
        check_close("kron layout forward", Y, R, N * m, 1e-5);
        for (int64_t b = 0; b < N; b++)
            for (int64_t c = 0; c < n; c++) {
                double acc = 0;
                for (int64_t s = 0; s < S; s++)
                    for (int64_t r = 0; r < m; r++)
                        acc += (double)A[(s * P + r / Mb) * Q + c / Nb] *
                               B[(s * Mb + r % Mb) * Nb + c % Nb] * X[b * m + r];
                R[b * n + c] = (float)acc;
            }
        CHECK_OK(sm_op_apply_t(op, N, X, Y, NULL));
        check_close("kron layout transposed", Y, R, N * n, 1e-5);
        free(X), free(Y), free(R);
    }
    free(parts);
    sm_op_free(op);
    free(W);
}

int main(void) {
    test_recovery(48, 48, 4, 4, 1);
    test_recovery(39, 55, 3, 5, 2);  // A first
    test_recovery(96, 51, 16, 3, 3); // B first
    test_recovery(66, 201, 2, 3, 4);
    test_recovery(30, 20, 1, 1, 1);   // A is a scalar
    test_recovery(12, 10, 12, 10, 1); // B is a scalar

    test_optimal(48, 48, 4, 4, 1);
    test_optimal(48, 48, 6, 8, 3);
    test_optimal(39, 55, 3, 5, 2);
    test_optimal(96, 51, 16, 3, 5);

    test_layout(48, 48, 4, 4, 1);
    test_layout(39, 55, 3, 5, 2);
    test_layout(96, 51, 16, 3, 3);
    test_layout(35, 94, 7, 2, 3);

    check_canonical("kron:a=4x4", 48, 48, "kron:a=4x4");
    check_canonical("kron:a=4x4,terms=1", 48, 48, "kron:a=4x4");
    check_canonical("kron:dtype=q8,terms=2,a=3x2", 6, 8, "kron:a=3x2,terms=2,dtype=q8");

    check_fit_fails("kron:a=5x4", 48, 48, "a=5x4 does not divide the 48x48 matrix");
    check_fit_fails("kron:a=4x5", 48, 48, "Q must divide in=48");
    check_fit_fails("kron:a=2x2,terms=5", 4, 4, "terms=5 is too many");
    check_fit_fails("kron:a=2x2,terms=5", 48, 48, "at most min(P Q, (m/P)(n/Q)) = 4");
    check_fit_fails("kron:terms=2", 48, 48, "needs a=PxQ");
    check_fit_fails("kron:a=4", 48, 48, "not of the form PxQ");
    check_fit_fails("kron:a=4x4,terms=0", 48, 48, "out of range");
    TEST_END();
}
