// Monarch against independent references:
// - a random Monarch matrix, built here from random rank-T blocks in the block view (rows
//   i K + l, contiguous columns), is recovered to 1e-5 for several K, square and rectangular;
// - on a random dense matrix the fit error equals the root-sum-square of the per-block residuals
//   (LAPACK dgesdd of each block in double, sum of the discarded sigma^2);
// - apply equals a naive transcription of the reference forward (fly's
//   blockdiag_butterfly_multiply: bmm with f1 (K, K T, in/K), the (r l) -> (l r) permutation, bmm
//   with f2 (K, out/K, K T), the (l s) -> (s l) output order) read from the parts, including
//   q8 parts decoded here;
// - sizes, canonical specs and the errors for impossible specs.
#include "linalg/linalg.h"
#include "testutil.h"

// W (m, n) = a Monarch matrix with K blocks and rank T per block, from random factors.
static void random_monarch(float *W, int64_t m, int64_t n, int64_t K, int64_t T, unsigned seed) {
    int64_t s = m / K, p = n / K;
    float *U = malloc(sizeof(float) * (size_t)(s * T)),
          *V = malloc(sizeof(float) * (size_t)(T * p));
    for (int64_t k = 0; k < K; k++)
        for (int64_t l = 0; l < K; l++) {
            fill_random(U, s * T, seed + (unsigned)(k * K + l) * 2);
            fill_random(V, T * p, seed + (unsigned)(k * K + l) * 2 + 1);
            for (int64_t i = 0; i < s; i++)
                for (int64_t c = 0; c < p; c++) {
                    double acc = 0;
                    for (int64_t t = 0; t < T; t++) acc += (double)U[i * T + t] * V[t * p + c];
                    W[(i * K + l) * n + k * p + c] = (float)acc;
                }
        }
    free(U), free(V);
}

// sqrt(sum over the K x K blocks of the sigma_j^2, j >= T), blocks in the Monarch grouping.
static double monarch_optimal_error(const float *W, int64_t m, int64_t n, int64_t K, int64_t T) {
    int64_t s = m / K, p = n / K, k_ = s < p ? s : p;
    double *B = malloc(sizeof(double) * (size_t)(s * p)), *S = malloc(sizeof(double) * (size_t)k_);
    double sum = 0;
    for (int64_t k = 0; k < K; k++)
        for (int64_t l = 0; l < K; l++) {
            for (int64_t i = 0; i < s; i++)
                for (int64_t c = 0; c < p; c++) B[i * p + c] = W[(i * K + l) * n + k * p + c];
            CHECK_OK(sm_svd_f64(B, s, p, NULL, S, NULL));
            for (int64_t j = T; j < k_; j++) sum += S[j] * S[j];
        }
    free(B), free(S);
    return sqrt(sum);
}

static double fro_diff(const float *a, const float *b, int64_t count) {
    double sum = 0;
    for (int64_t i = 0; i < count; i++) sum += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(sum);
}

static void test_recovery(int64_t m, int64_t n, int64_t K, int64_t T, bool default_rank) {
    float *W = malloc(sizeof(float) * (size_t)(m * n)),
          *D = malloc(sizeof(float) * (size_t)(m * n));
    random_monarch(W, m, n, K, T, 7 + (unsigned)(m + n + K));
    char spec[64], want[64];
    if (default_rank)
        snprintf(spec, sizeof spec, "monarch:blocks=%lld", (long long)K);
    else
        snprintf(spec, sizeof spec, "monarch:blocks=%lld,rank=%lld", (long long)K, (long long)T);
    snprintf(want, sizeof want, "monarch:blocks=%lld,rank=%lld", (long long)K, (long long)T);
    sm_op *op = fit_op(W, m, n, spec);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        double e = rel_fro(D, W, m * n);
        if (!(e <= 1e-5)) {
            fprintf(stderr, "monarch recovery %lldx%lld K=%lld T=%lld: rel error %.3g\n",
                    (long long)m, (long long)n, (long long)K, (long long)T, e);
            g_failures++;
        }
        CHECK(strcmp(sm_op_spec(op), want) == 0);
        CHECK(sm_op_nparams(op) == K * T * (m + n));
        CHECK(sm_op_macs(op) == K * T * (m + n));
        CHECK(sm_op_nbytes(op) == 4 * K * T * (m + n));
        sm_op_free(op);
    }
    free(W), free(D);
}

static void test_optimal(int64_t m, int64_t n, int64_t K, int64_t T) {
    float *W = malloc(sizeof(float) * (size_t)(m * n)),
          *D = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 31 + (unsigned)(m * n));
    char spec[64];
    snprintf(spec, sizeof spec, "monarch:blocks=%lld,rank=%lld", (long long)K, (long long)T);
    sm_op *op = fit_op(W, m, n, spec);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        double got = fro_diff(D, W, m * n), want = monarch_optimal_error(W, m, n, K, T);
        if (!(fabs(got - want) <= 1e-5 * want)) {
            fprintf(stderr, "monarch %lldx%lld K=%lld T=%lld: error %.9g, optimal %.9g\n",
                    (long long)m, (long long)n, (long long)K, (long long)T, got, want);
            g_failures++;
        }
        sm_op_free(op);
    }
    free(W), free(D);
}

static const sm_part *find_part(const sm_part *parts, int np, const char *name) {
    for (int i = 0; i < np; i++)
        if (strcmp(parts[i].name, name) == 0) return &parts[i];
    fprintf(stderr, "part %s missing\n", name);
    g_failures++;
    return NULL;
}

// A (rows, cols) factor decoded from its parts: plain F32, or q8 codes with F16 scales per
// group of 64 columns (w = scale * code), decoded here without the library's kernels.
static double *decode_part(const sm_part *parts, int np, const char *name, int64_t rows,
                           int64_t cols, bool q8) {
    double *out = malloc(sizeof(double) * (size_t)(rows * cols));
    char nm[64];
    if (!q8) {
        const sm_part *p = find_part(parts, np, name);
        if (!p) return out;
        CHECK(p->dtype == SM_DTYPE_F32 && p->nbytes == sizeof(float) * (size_t)(rows * cols));
        for (int64_t i = 0; i < rows * cols; i++) out[i] = ((const float *)p->data)[i];
        return out;
    }
    snprintf(nm, sizeof nm, "%s.codes", name);
    const sm_part *c = find_part(parts, np, nm);
    snprintf(nm, sizeof nm, "%s.scales", name);
    const sm_part *s = find_part(parts, np, nm);
    if (!c || !s) return out;
    int64_t ng = (cols + 63) / 64;
    CHECK(c->dtype == SM_DTYPE_I8 && c->ndim == 2 && c->shape[0] == rows && c->shape[1] == cols);
    CHECK(s->dtype == SM_DTYPE_F16 && s->ndim == 2 && s->shape[0] == rows && s->shape[1] == ng);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++)
            out[r * cols + j] =
                (double)sm_f16_to_f32(((const uint16_t *)s->data)[r * ng + j / 64]) *
                ((const int8_t *)c->data)[r * cols + j];
    return out;
}

// The reference forward, written from fly's blockdiag_butterfly_multiply_reference (version 2):
//   out1[b, k, q] = sum_c w1[k, q, c] x[b, k p + c]          (einsum 'kqp,bkp->bkq')
//   out1 -> 'b (k q)' -> 'b (r l) -> b l r'                   g[b, l, r] = out1flat[b, r K + l]
//   out2[b, s, l] = sum_r w2[l, s, r] g[b, l, r]              (einsum 'lsr,blr->bsl')
//   y = out2 reshaped (b, s l): y[b, s K + l]
static void reference_forward(const double *w1, const double *w2, int64_t K, int64_t Qd, int64_t p,
                              int64_t sd, int64_t N, const float *x, double *y) {
    int64_t n = K * p, m = K * sd, KQ = K * Qd;
    double *out1 = malloc(sizeof(double) * (size_t)KQ), *g = malloc(sizeof(double) * (size_t)KQ);
    for (int64_t b = 0; b < N; b++) {
        for (int64_t k = 0; k < K; k++)
            for (int64_t q = 0; q < Qd; q++) {
                double acc = 0;
                for (int64_t c = 0; c < p; c++)
                    acc += w1[(k * Qd + q) * p + c] * x[b * n + k * p + c];
                out1[k * Qd + q] = acc;
            }
        int64_t R = KQ / K; // r runs over K q / l = Q
        for (int64_t r = 0; r < R; r++)
            for (int64_t l = 0; l < K; l++) g[l * R + r] = out1[r * K + l];
        for (int64_t l = 0; l < K; l++)
            for (int64_t s = 0; s < sd; s++) {
                double acc = 0;
                for (int64_t r = 0; r < R; r++) acc += w2[(l * sd + s) * R + r] * g[l * R + r];
                y[b * m + s * K + l] = acc;
            }
    }
    free(out1), free(g);
}

static void test_reference_layout(int64_t m, int64_t n, int64_t K, int64_t T, bool q8) {
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 57 + (unsigned)(m + 3 * n));
    char spec[80];
    snprintf(spec, sizeof spec, "monarch:blocks=%lld,rank=%lld%s", (long long)K, (long long)T,
             q8 ? ",dtype=q8" : "");
    sm_op *op = fit_op(W, m, n, spec);
    if (!op) {
        free(W);
        return;
    }
    int64_t p = n / K, s = m / K, Q = K * T, N = 3;
    sm_part *parts = NULL;
    int np = 0;
    CHECK_OK(sm_op_parts(op, &parts, &np));
    if (!q8) { // the reference shapes
        const sm_part *f1 = find_part(parts, np, "f1"), *f2 = find_part(parts, np, "f2");
        CHECK(np == 2);
        if (f1) CHECK(f1->ndim == 3 && f1->shape[0] == K && f1->shape[1] == Q && f1->shape[2] == p);
        if (f2) CHECK(f2->ndim == 3 && f2->shape[0] == K && f2->shape[1] == s && f2->shape[2] == Q);
    } else {
        CHECK(np == 4);
    }
    double *w1 = decode_part(parts, np, "f1", K * Q, p, q8);
    double *w2 = decode_part(parts, np, "f2", m, Q, q8);
    float *X = malloc(sizeof(float) * (size_t)(N * n)),
          *Y = malloc(sizeof(float) * (size_t)(N * m));
    float *Yref = malloc(sizeof(float) * (size_t)(N * m));
    double *yd = malloc(sizeof(double) * (size_t)(N * m));
    fill_random(X, N * n, 5);
    reference_forward(w1, w2, K, Q, p, s, N, X, yd);
    for (int64_t i = 0; i < N * m; i++) Yref[i] = (float)yd[i];
    CHECK_OK(sm_op_apply(op, N, X, Y, NULL));
    char what[128];
    snprintf(what, sizeof what, "monarch reference forward %s %lldx%lld", spec, (long long)m,
             (long long)n);
    check_close(what, Y, Yref, N * m, 1e-5);
    // N = 1 (the gemv path) as well
    CHECK_OK(sm_op_apply(op, 1, X + n, Y, NULL));
    check_close(what, Y, Yref + m, m, 1e-5);
    free(parts), free(w1), free(w2), free(X), free(Y), free(Yref), free(yd), free(W);
    sm_op_free(op);
}

// A quantized fit's reported matrix is the decoded one, and it is not better than the optimum.
static void test_quantized_error(void) {
    int64_t m = 64, n = 96, K = 4, T = 3;
    float *W = malloc(sizeof(float) * (size_t)(m * n)),
          *D = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 99);
    sm_op *op = fit_op(W, m, n, "monarch:blocks=4,rank=3,dtype=q4");
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        double got = fro_diff(D, W, m * n), opt = monarch_optimal_error(W, m, n, K, T);
        CHECK(got > opt * (1 + 1e-4)); // q4 rounding shows in the error
        CHECK(got < opt * 1.5);
        CHECK(strcmp(sm_op_spec(op), "monarch:blocks=4,rank=3,dtype=q4") == 0);
        sm_op_free(op);
    }
    free(W), free(D);
}

int main(void) {
    test_recovery(48, 48, 4, 3, true);
    test_recovery(45, 63, 3, 5, true); // default T = 45 / 9
    test_recovery(63, 45, 3, 2, false);
    test_recovery(40, 75, 5, 3, false);
    test_recovery(96, 32, 2, 7, false);
    test_recovery(70, 70, 7, 1, false);
    test_recovery(36, 24, 6, 4, false); // T = min(in, out)/K: full rank per block

    test_optimal(48, 48, 4, 6);
    test_optimal(45, 63, 3, 7);
    test_optimal(100, 60, 5, 5);
    test_optimal(66, 130, 2, 20);

    test_reference_layout(48, 48, 4, 3, false);
    test_reference_layout(45, 63, 3, 5, false);
    test_reference_layout(100, 60, 5, 2, false);
    test_reference_layout(36, 132, 2, 9, true);

    test_quantized_error();

    check_canonical("monarch:blocks=4", 48, 48, "monarch:blocks=4,rank=3");
    check_canonical("monarch:blocks=4", 64, 256, "monarch:blocks=4,rank=4");
    check_canonical("monarch:blocks=4,ratio=0.5", 64, 64, "monarch:blocks=4,rank=4");
    // ratio: 4 T (64 + 96) <= 0.3 * 64 * 96 = 1843.2 -> T = 2 (T = 3 needs 1920)
    check_canonical("monarch:blocks=4,ratio=0.3", 64, 96, "monarch:blocks=4,rank=2");
    check_canonical("monarch:blocks=2,rank=3,dtype=bf16", 8, 8, "monarch:blocks=2,rank=3,dtype=bf16");
    check_canonical("monarch:dtype=f16,blocks=2", 8, 8, "monarch:blocks=2,rank=2,dtype=f16");

    check_fit_fails("monarch:blocks=5", 48, 48, "blocks=5 does not divide the 48x48 matrix");
    check_fit_fails("monarch:blocks=4,rank=2", 48, 50, "blocks=4 does not divide");
    check_fit_fails("monarch:blocks=4", 40, 40, "min(in, out)/K^2 = 40/16 is not a whole number");
    check_fit_fails("monarch:blocks=4", 64, 40, "40/16 is not a whole number");
    check_fit_fails("monarch:blocks=4,rank=13", 48, 48, "rank=13 per block is too large");
    check_fit_fails("monarch:blocks=4,rank=7", 24, 48, "at most 6");
    check_fit_fails("monarch:blocks=4,ratio=0.001", 48, 48, "no room for rank 1 per block");
    check_fit_fails("monarch:blocks=4,rank=2,ratio=0.5", 48, 48, "not both");
    check_fit_fails("monarch:rank=2", 48, 48, "needs blocks=K");
    check_fit_fails("monarch:blocks=0", 48, 48, "out of range");
    check_fit_fails("monarch:blocks=4,terms=2", 48, 48, "unknown key \"terms\"");
    TEST_END();
}
