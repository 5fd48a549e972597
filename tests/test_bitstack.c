// bitstack (src/ops/bitstack.c):
// - energy identity: with R_t = W - (first t levels), each level removes exactly the top-k
//   squared singular values of |R_t| (LAPACK, in double): ||R_{t+1}||^2 = ||R_t||^2 -
//   sum_{i<=k} sigma_i(|R_t|)^2, up to the F16 rounding of the factors; so the error never grows
//   with more levels (Gaussian and shared-model matrices, several k);
// - aware: the same identity for W diag(s), s from the calibration sqsum as documented; without
//   statistics it is an error;
// - prefixes: the parts of a levels=L fit loaded with levels=l (and sm_bitstack_prefix) give
//   exactly the levels=l fit; a level's parts missing is an error naming them;
// - one level of rank 1 is SVID (onebit) and a level of rank k >= 1 is no worse;
// - apply and apply_t equal the dense products for N = 1 and 64 at every kernel level;
// - sizes: nbytes = levels (m ceil(n/8) + 2 k (m + n)); invalid k and levels are refused.
#include "base/base.h"
#include "modelinputs.h"
#include "ops/quant.h"
#include "testutil.h"

static float *dense(const sm_op *op) {
    float *D = malloc(sizeof(float) * (size_t)(sm_op_rows(op) * sm_op_cols(op)));
    CHECK_OK(sm_op_to_dense(op, D));
    return D;
}

static double sq(const double *A, int64_t count) {
    double e = 0;
    for (int64_t i = 0; i < count; i++) e += A[i] * A[i];
    return e;
}

// Checks the energy identity level by level for a fit of `levels` levels with rank k; s (n)
// scales the columns (NULL: none).
static void check_energy(const char *what, const float *W, int64_t m, int64_t n, int64_t k,
                         int64_t levels, const float *s, const sm_fit_opts *o) {
    char spec[96];
    snprintf(spec, sizeof spec, "bitstack:k=%lld,levels=%lld%s", (long long)k, (long long)levels,
             s ? ",aware" : "");
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, spec, o, &op));
    if (!op) return;
    int64_t mn = m < n ? m : n;
    double *R = malloc(sizeof(double) * (size_t)(m * n)), *A = malloc(sizeof(double) * (size_t)(m * n));
    double *S = malloc(sizeof(double) * (size_t)mn), prev = INFINITY;
    for (int64_t t = 0; t <= levels; t++) {
        // R_t = (W - first t levels) diag(s)
        float *D = NULL;
        if (t > 0) {
            sm_op *pre = NULL;
            CHECK_OK(sm_bitstack_prefix(op, t, &pre));
            if (!pre) break;
            D = dense(pre);
            sm_op_free(pre);
        }
        for (int64_t i = 0; i < m * n; i++)
            R[i] = ((double)W[i] - (D ? D[i] : 0.0)) * (s ? s[i % n] : 1.0);
        free(D);
        double e = sq(R, m * n);
        if (t > 0 && !(fabs(e - prev) <= 2e-5 * fmax(e, 1e-300) + 2e-5 * prev)) {
            fprintf(stderr, "%s k=%lld level %lld: ||R||^2 = %.9g, predicted %.9g\n", what,
                    (long long)k, (long long)t, e, prev);
            g_failures++;
        }
        if (t == levels) break;
        for (int64_t i = 0; i < m * n; i++) A[i] = fabs(R[i]);
        CHECK_OK(sm_svd_f64(A, m, n, NULL, S, NULL));
        double removed = 0;
        for (int64_t i = 0; i < k; i++) removed += S[i] * S[i];
        prev = e - removed; // what level t + 1 must leave
        if (getenv("SM_TEST_VERBOSE"))
            printf("%s k=%lld level %lld: %.6g -> %.6g (%.1f%% removed)\n", what, (long long)k,
                   (long long)t, e, prev, 100 * removed / e);
    }
    free(R), free(A), free(S);
    sm_op_free(op);
}

static void test_energy(void) {
    int64_t m = 40, n = 56;
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    sm_rng rng;
    sm_rng_seed(&rng, 5);
    for (int64_t i = 0; i < m * n; i++) W[i] = (float)sm_rng_normal(&rng);
    sm_fit_opts o = {.seed = 1};
    check_energy("gaussian", W, m, n, 1, 4, NULL, &o);
    check_energy("gaussian", W, m, n, 5, 3, NULL, &o);
    free(W);
    float *X;
    int64_t N;
    if (!model_layer(1, 6, &W, &m, &n, &X, &N)) return; // down_proj, 256x768
    check_energy("layer 1 down_proj", W, m, n, 16, 3, NULL, &o);
    // aware: s_j = sqrt(sqsum_j / tokens) + 1e-3 mean
    double *sqsum = calloc((size_t)n, sizeof(double));
    for (int64_t t = 0; t < N; t++)
        for (int64_t j = 0; j < n; j++) sqsum[j] += (double)X[t * n + j] * X[t * n + j];
    float *s = malloc(sizeof(float) * (size_t)n);
    double mean = 0;
    for (int64_t j = 0; j < n; j++) mean += (s[j] = (float)sqrt(sqsum[j] / (double)N));
    mean /= (double)n;
    for (int64_t j = 0; j < n; j++) s[j] += (float)(1e-3 * mean);
    sm_stats st = {.gram = NULL, .sqsum = sqsum, .tokens = N};
    sm_fit_opts oa = {.seed = 1, .stats = &st};
    check_energy("layer 1 down_proj aware", W, m, n, 16, 3, s, &oa);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, m, n, "bitstack:k=4,levels=1,aware", NULL, &op), SM_ERR_ARG,
               "aware needs calibration statistics");
    free(W), free(X), free(sqsum), free(s);
}

static void test_prefix(void) {
    int64_t m = 30, n = 44;
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 8);
    sm_op *full = NULL, *two = NULL, *back = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "bitstack:k=3,levels=5", NULL, &full));
    CHECK_OK(sm_op_fit(W, m, n, "bitstack:k=3,levels=2", NULL, &two));
    if (!full || !two) return;
    sm_part *parts;
    int np;
    CHECK_OK(sm_op_parts(full, &parts, &np));
    CHECK(np == 15);
    CHECK_OK(sm_op_from_parts("bitstack:k=3,levels=2", m, n, parts, np, &back));
    float *D2 = dense(two);
    if (back) {
        float *Db = dense(back);
        CHECK(memcmp(D2, Db, sizeof(float) * (size_t)(m * n)) == 0);
        CHECK(strcmp(sm_op_spec(back), "bitstack:k=3,levels=2") == 0);
        CHECK(sm_op_nbytes(back) == 2 * (m * ((n + 7) / 8) + 2 * 3 * (m + n)));
        free(Db);
        sm_op_free(back);
    }
    sm_op *pre = NULL;
    CHECK_OK(sm_bitstack_prefix(full, 2, &pre));
    if (pre) {
        float *Dp = dense(pre);
        CHECK(memcmp(D2, Dp, sizeof(float) * (size_t)(m * n)) == 0);
        free(Dp);
        sm_op_free(pre);
    }
    CHECK_FAIL(sm_bitstack_prefix(full, 6, &pre), SM_ERR_ARG, "outside 1..5");
    CHECK_FAIL(sm_bitstack_prefix(two, 0, &pre), SM_ERR_ARG, "outside 1..2");
    // More levels than stored: the missing level's parts are named.
    CHECK_FAIL(sm_op_from_parts("bitstack:k=3,levels=6", m, n, parts, np, &back), SM_ERR_FORMAT,
               "missing part \"l5.signs\"");
    CHECK(sm_op_nbytes(full) == 5 * (m * ((n + 7) / 8) + 2 * 3 * (m + n)));
    CHECK(sm_op_nparams(full) == 5 * (m * n + 3 * (m + n)));
    free(parts), free(D2), free(W);
    sm_op_free(full), sm_op_free(two);
}

static void test_vs_onebit(void) {
    int64_t m = 50, n = 60;
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 13);
    sm_op *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "onebit", NULL, &a));
    CHECK_OK(sm_op_fit(W, m, n, "bitstack:k=1,levels=1", NULL, &b));
    CHECK_OK(sm_op_fit(W, m, n, "bitstack:k=4,levels=1", NULL, &c));
    if (a && b && c) {
        float *Da = dense(a), *Db = dense(b), *Dc = dense(c);
        double ea = rel_fro(Da, W, m * n), eb = rel_fro(Db, W, m * n), ec = rel_fro(Dc, W, m * n);
        if (!(fabs(ea - eb) <= 1e-4 * ea && ec <= eb)) {
            fprintf(stderr, "relative errors: onebit %.7f, bitstack k=1 %.7f, k=4 %.7f\n", ea, eb, ec);
            g_failures++;
        }
        free(Da), free(Db), free(Dc);
    }
    sm_op_free(a), sm_op_free(b), sm_op_free(c);
    free(W);
}

static void test_apply(void) {
    static const struct {
        const char *spec;
        int64_t m, n;
    } cases[] = {{"bitstack:k=3,levels=2", 33, 70}, {"bitstack:k=16,levels=2", 64, 256},
                 {"bitstack:k=2,levels=3,solver=random", 100, 40}};
    for (int s = 0; s < 3; s++) {
        int64_t m = cases[s].m, n = cases[s].n;
        float *W = malloc(sizeof(float) * (size_t)(m * n));
        fill_random(W, m * n, 21 + (unsigned)s);
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, cases[s].spec, NULL, &op));
        if (!op) continue;
        float *D = dense(op);
        for (int isa = 0; isa <= (int)sm_isa_detect(); isa++) {
            CHECK_OK(sm_isa_set((sm_isa)isa));
            for (int64_t N = 1; N <= 64; N += 63)
                for (int t = 0; t < 2; t++) {
                    int64_t in = t ? m : n, out = t ? n : m;
                    float *X = malloc(sizeof(float) * (size_t)(N * in)), *Y = malloc(sizeof(float) * (size_t)(N * out));
                    float *R = malloc(sizeof(float) * (size_t)(N * out));
                    fill_random(X, N * in, 90 + (unsigned)N);
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
                    char what[128];
                    snprintf(what, sizeof what, "%s %s N=%lld isa %s", cases[s].spec,
                             t ? "apply_t" : "apply", (long long)N, sm_isa_name((sm_isa)isa));
                    check_close(what, Y, R, N * out, 2e-5);
                    free(X), free(Y), free(R);
                }
        }
        CHECK_OK(sm_isa_set(sm_isa_detect()));
        free(D), free(W);
        sm_op_free(op);
    }
}

static void test_errors(void) {
    float W[6 * 8];
    fill_random(W, 48, 1);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 6, 8, "bitstack:k=7", NULL, &op), SM_ERR_SPEC,
               "k=7 is larger than min(m, n) = 6");
    CHECK_FAIL(sm_op_fit(W, 6, 8, "bitstack:levels=0", NULL, &op), SM_ERR_SPEC, "levels");
    CHECK_FAIL(sm_op_fit(W, 6, 8, "bitstack:levels=65", NULL, &op), SM_ERR_SPEC, "levels");
    CHECK_FAIL(sm_op_fit(W, 6, 8, "bitstack:power=2", NULL, &op), SM_ERR_SPEC,
               "need solver=random");
    CHECK_OK(sm_op_fit(W, 6, 8, "bitstack", NULL, &op)); // defaults: k = min(16, 6), 8 levels
    if (op) CHECK(strcmp(sm_op_spec(op), "bitstack:k=6,levels=8") == 0);
    sm_op_free(op);
}

int main(void) {
    test_energy();
    test_prefix();
    test_vs_onebit();
    test_apply();
    test_errors();
    TEST_END();
}
