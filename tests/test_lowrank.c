// lowrank and the randomized SVD, against independent references:
// - Eckart-Young: the exact fit's error equals sqrt(sum of the discarded sigma_i^2) with sigma from
//   a double-precision LAPACK SVD (dgesdd) of W, on square, tall, wide and odd shapes;
// - ratio= resolves to floor(ratio m n / (m + n)); canonical specs; U^T U = V V^T = diag(sigma);
// - sm_rsvd: orthonormal factors, exact when l = min(m, n), leading singular values, argument
//   errors, allocation failures (injected in a child process) and leading dimensions;
// - solver=random within 1% of optimal with the default p, q on decaying spectra and on the real
//   weights of models/shakespeare-llama-3m; deterministic per seed, different across seeds;
// - dtype=f16/bf16/q8 within a rounding bound derived from the factors.
#include "linalg/linalg.h"
#include "testutil.h"

#include <lapacke.h>
#include <sys/wait.h>
#include <unistd.h>

#define MODEL "models/shakespeare-llama-3m/model.safetensors"

static double *to_f64(const float *W, int64_t n) {
    double *d = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) d[i] = W[i];
    return d;
}

// All min(m, n) singular values of W in double (dgesdd), decreasing.
static double *sigma_ref(const float *W, int64_t m, int64_t n) {
    int64_t k = m < n ? m : n;
    double *Wd = to_f64(W, m * n), *s = malloc(sizeof(double) * (size_t)k);
    CHECK_OK(sm_svd_f64(Wd, m, n, NULL, s, NULL));
    free(Wd);
    return s;
}

static double fro(const float *W, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)W[i] * (double)W[i];
    return sqrt(s);
}

// Optimal rank-r error ||W - W_r||_F by Eckart-Young.
static double opt_err(const double *sigma, int64_t k, int64_t r) {
    double s = 0;
    for (int64_t i = r; i < k; i++) s += sigma[i] * sigma[i];
    return sqrt(s);
}

// ||W - dense(op)||_F in double; dense written to D (m, n) if D is not NULL.
static double fit_err(const sm_op *op, const float *W, int64_t m, int64_t n, float *D) {
    float *d = D ? D : malloc(sizeof(float) * (size_t)(m * n));
    CHECK_OK(sm_op_to_dense(op, d));
    double e = 0;
    for (int64_t i = 0; i < m * n; i++) {
        double t = (double)W[i] - (double)d[i];
        e += t * t;
    }
    if (!D) free(d);
    return sqrt(e);
}

// Q (rows, k) with orthonormal columns: QR of a Gaussian matrix, in double.
static double *random_orthonormal(int64_t rows, int64_t k, uint64_t seed) {
    double *Q = malloc(sizeof(double) * (size_t)(rows * k)), *tau = malloc(sizeof(double) * k);
    sm_rng g;
    sm_rng_seed(&g, seed);
    for (int64_t i = 0; i < rows * k; i++) Q[i] = sm_rng_normal(&g);
    CHECK(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (int)rows, (int)k, Q, (int)k, tau) == 0);
    CHECK(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (int)rows, (int)k, (int)k, Q, (int)k, tau) == 0);
    free(tau);
    return Q;
}

// W (m, n) = Q1 diag(sigma) Q2^T with random orthonormal Q1 (m, k), Q2 (n, k), k = min(m, n).
static float *spectrum_matrix(int64_t m, int64_t n, const double *sigma, uint64_t seed) {
    int64_t k = m < n ? m : n;
    double *Q1 = random_orthonormal(m, k, seed), *Q2 = random_orthonormal(n, k, seed + 1);
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t l = 0; l < k; l++) acc += Q1[i * k + l] * sigma[l] * Q2[j * k + l];
            W[i * n + j] = (float)acc;
        }
    free(Q1), free(Q2);
    return W;
}

static sm_op *fit(const float *W, int64_t m, int64_t n, const char *spec, uint64_t seed) {
    sm_fit_opts o = {.seed = seed};
    sm_op *op = NULL;
    sm_status st = sm_op_fit(W, m, n, spec, &o, &op);
    if (st != SM_OK) {
        fprintf(stderr, "fit %s on %lldx%lld: %s: %s\n", spec, (long long)m, (long long)n,
                sm_status_str(st), sm_last_error());
        g_failures++;
    }
    return op;
}

// --- exact solver: Eckart-Young, ratio=, canonical spec, factor storage -------------------------

static void test_eckart_young(void) {
    static const int64_t shapes[][2] = {{64, 64}, {96, 40}, {40, 96}, {67, 45},
                                        {45, 67}, {1, 9},   {9, 1},   {130, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = m < n ? m : n;
        float *W = malloc(sizeof(float) * (size_t)(m * n));
        fill_random(W, m * n, 7 + (unsigned)s);
        double *sig = sigma_ref(W, m, n), norm = fro(W, m * n);
        int64_t ranks[] = {1, 2, k / 3, k / 2, k - 1, k};
        for (int ri = 0; ri < 6; ri++) {
            int64_t r = ranks[ri];
            if (r < 1 || r > k || (ri > 0 && r == ranks[ri - 1])) continue;
            char spec[64];
            snprintf(spec, sizeof spec, "lowrank:rank=%lld", (long long)r);
            sm_op *op = fit(W, m, n, spec, 1);
            if (!op) continue;
            double got = fit_err(op, W, m, n, NULL) / norm, want = opt_err(sig, k, r) / norm;
            // At full rank the optimum is 0 and what remains is f32 rounding of the factors and
            // their product, about 1e-6 relative; below it that noise adds in quadrature to the
            // discarded part and vanishes.
            if (!(fabs(got - want) <= (r < k ? 1e-6 : 1e-5))) {
                fprintf(stderr, "%lldx%lld rank %lld: rel error %.9g, Eckart-Young says %.9g\n",
                        (long long)m, (long long)n, (long long)r, got, want);
                g_failures++;
            }
            CHECK(strcmp(sm_op_spec(op), spec) == 0);
            CHECK(sm_op_nparams(op) == r * (m + n));
            CHECK(sm_op_nbytes(op) == 4 * r * (m + n));
            sm_op_free(op);
        }
        free(W), free(sig);
    }
}

static void test_ratio(void) {
    static const int64_t shapes[][2] = {{67, 45}, {256, 256}, {128, 256}, {768, 256}, {5, 300}};
    static const double ratios[] = {0.05, 0.1, 0.25, 0.3, 0.5, 0.999, 1.0};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1];
        float *W = malloc(sizeof(float) * (size_t)(m * n));
        fill_random(W, m * n, 3);
        for (size_t i = 0; i < sizeof ratios / sizeof ratios[0]; i++) {
            // Documented: the largest rank with R (m + n) <= ratio m n, in exact integers where
            // the ratio is a round decimal (ratio = num / 1000).
            int64_t num = (int64_t)llround(ratios[i] * 1000);
            int64_t want = num * m * n / (1000 * (m + n));
            char spec[64], canon[64];
            snprintf(spec, sizeof spec, "lowrank:ratio=%g", ratios[i]);
            if (want < 1) {
                sm_op *op = NULL;
                CHECK_FAIL(sm_op_fit(W, m, n, spec, NULL, &op), SM_ERR_SPEC, "no room");
                CHECK(op == NULL);
                continue;
            }
            sm_op *op = fit(W, m, n, spec, 1);
            if (!op) continue;
            snprintf(canon, sizeof canon, "lowrank:rank=%lld", (long long)want);
            if (strcmp(sm_op_spec(op), canon) != 0) {
                fprintf(stderr, "%s on %lldx%lld -> %s, expected %s\n", spec, (long long)m,
                        (long long)n, sm_op_spec(op), canon);
                g_failures++;
            }
            CHECK(sm_op_nparams(op) <= (int64_t)(ratios[i] * (double)(m * n)) + 1e-9);
            sm_op_free(op);
        }
        free(W);
    }
    // Canonical forms of the other keys, and keys that need solver=random.
    float W[30 * 20];
    fill_random(W, 30 * 20, 5);
    static const char *const pairs[][2] = {
        {"lowrank:rank=4,dtype=bf16", "lowrank:rank=4,dtype=bf16"},
        {"lowrank:rank=4,dtype=f32", "lowrank:rank=4"},
        {"lowrank:rank=4,solver=exact", "lowrank:rank=4"},
        {"lowrank:rank=4,solver=random", "lowrank:rank=4,solver=random"},
        {"lowrank:rank=4,solver=random,oversample=20,power=4", "lowrank:rank=4,solver=random"},
        {"lowrank:rank=4,solver=random,power=1", "lowrank:rank=4,solver=random,power=1"},
        {"lowrank:ratio=0.2,dtype=q8", "lowrank:rank=2,dtype=q8"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        sm_op *op = fit(W, 30, 20, pairs[i][0], 1);
        if (!op) continue;
        if (strcmp(sm_op_spec(op), pairs[i][1]) != 0) {
            fprintf(stderr, "%s -> %s, expected %s\n", pairs[i][0], sm_op_spec(op), pairs[i][1]);
            g_failures++;
        }
        sm_op_free(op);
    }
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 30, 20, "lowrank:rank=4,power=2", NULL, &op), SM_ERR_SPEC,
               "solver=random");
    CHECK_FAIL(sm_op_fit(W, 30, 20, "lowrank:rank=21", NULL, &op), SM_ERR_SPEC, "impossible");
    CHECK_FAIL(sm_op_fit(W, 30, 20, "lowrank:rank=4,ratio=0.5", NULL, &op), SM_ERR_SPEC,
               "not both");
    CHECK(op == NULL);
}

// Parts U (m, r) = U_svd sqrt(S) and V (r, n) = sqrt(S) V_svd^T: U^T U = V V^T = diag(sigma).
static void test_factor_storage(void) {
    static const int64_t cases[][3] = {{67, 45, 12}, {40, 96, 40}, {128, 128, 16}};
    for (int c = 0; c < 3; c++) {
        int64_t m = cases[c][0], n = cases[c][1], r = cases[c][2], k = m < n ? m : n;
        float *W = malloc(sizeof(float) * (size_t)(m * n));
        fill_random(W, m * n, 21 + (unsigned)c);
        double *sig = sigma_ref(W, m, n);
        char spec[64];
        snprintf(spec, sizeof spec, "lowrank:rank=%lld", (long long)r);
        sm_op *op = fit(W, m, n, spec, 1);
        sm_part *parts = NULL;
        int np = 0;
        if (op) CHECK_OK(sm_op_parts(op, &parts, &np));
        CHECK(np == 2);
        if (np == 2) {
            const sm_part *U = &parts[0], *V = &parts[1];
            CHECK(strcmp(U->name, "U") == 0 && strcmp(V->name, "V") == 0);
            CHECK(U->dtype == SM_DTYPE_F32 && V->dtype == SM_DTYPE_F32);
            CHECK(U->ndim == 2 && U->shape[0] == m && U->shape[1] == r);
            CHECK(V->ndim == 2 && V->shape[0] == r && V->shape[1] == n);
            const float *u = U->data, *v = V->data;
            double tol = 1e-5 * sig[0];
            for (int64_t i = 0; i < r; i++)
                for (int64_t j = 0; j < r; j++) {
                    double uu = 0, vv = 0;
                    for (int64_t t = 0; t < m; t++) uu += (double)u[t * r + i] * u[t * r + j];
                    for (int64_t t = 0; t < n; t++) vv += (double)v[i * n + t] * v[j * n + t];
                    double want = i == j ? sig[i] : 0;
                    if (!(fabs(uu - want) <= tol && fabs(vv - want) <= tol)) {
                        fprintf(stderr,
                                "%lldx%lld r=%lld: (U^T U)[%lld,%lld] = %.7g, "
                                "(V V^T) = %.7g, expected %.7g\n",
                                (long long)m, (long long)n, (long long)r, (long long)i,
                                (long long)j, uu, vv, want);
                        g_failures++;
                        i = j = r;
                    }
                }
        }
        (void)k;
        free(parts), sm_op_free(op), free(W), free(sig);
    }
}

// --- sm_rsvd directly -----------------------------------------------------------------------

static void test_rsvd_direct(void) {
    // A 0.9^i spectrum, tall and wide: orthonormal U and Vt, leading singular values, and the
    // reconstruction error.
    for (int wide = 0; wide < 2; wide++) {
        int64_t m = wide ? 90 : 150, n = wide ? 150 : 90, k = 90, r = 20;
        double sig[90];
        for (int i = 0; i < k; i++) sig[i] = pow(0.9, i);
        float *W = spectrum_matrix(m, n, sig, 100 + (uint64_t)wide);
        float *U = malloc(sizeof(float) * (size_t)(m * r)), S[20];
        float *Vt = malloc(sizeof(float) * (size_t)(r * n));
        CHECK_OK(sm_rsvd(W, m, n, n, r, 10, 2, 9, U, S, Vt));
        double worst_orth = 0, worst_s = 0, e = 0;
        for (int64_t i = 0; i < r; i++) {
            for (int64_t j = 0; j < r; j++) {
                double uu = 0, vv = 0;
                for (int64_t t = 0; t < m; t++) uu += (double)U[t * r + i] * U[t * r + j];
                for (int64_t t = 0; t < n; t++) vv += (double)Vt[i * n + t] * Vt[j * n + t];
                worst_orth = fmax(worst_orth, fabs(uu - (i == j)));
                worst_orth = fmax(worst_orth, fabs(vv - (i == j)));
            }
            worst_s = fmax(worst_s, fabs(S[i] - sig[i]) / sig[i]);
            if (i > 0) CHECK(S[i] <= S[i - 1]);
        }
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0;
                for (int64_t l = 0; l < r; l++) acc += (double)U[i * r + l] * S[l] * Vt[l * n + j];
                e += (acc - W[i * n + j]) * (acc - W[i * n + j]);
            }
        double ratio = sqrt(e) / opt_err(sig, k, r);
        if (!(worst_orth < 1e-5 && worst_s < 1e-3 && ratio <= 1.01)) {
            fprintf(stderr,
                    "rsvd %lldx%lld r=%lld: orthonormality %.3g, sigma rel %.3g, "
                    "err/opt %.5f\n",
                    (long long)m, (long long)n, (long long)r, worst_orth, worst_s, ratio);
            g_failures++;
        }
        // Values only (U, Vt NULL) are the same values.
        float S2[20];
        CHECK_OK(sm_rsvd(W, m, n, n, r, 10, 2, 9, NULL, S2, NULL));
        CHECK(memcmp(S, S2, sizeof S) == 0);
        free(W), free(U), free(Vt);
    }

    // l = r + p clipped to min(m, n): the sketch spans the whole range, so the result is the
    // exact SVD, even with no power iterations; rank 0 is a no-op.
    static const int64_t shapes[][2] = {{67, 45}, {45, 67}, {30, 30}};
    for (int s = 0; s < 3; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = m < n ? m : n, r = k - 3;
        float *W = malloc(sizeof(float) * (size_t)(m * n));
        fill_random(W, m * n, 40 + (unsigned)s);
        double *sig = sigma_ref(W, m, n);
        float *U = malloc(sizeof(float) * (size_t)(m * k)), *S = malloc(sizeof(float) * k);
        float *Vt = malloc(sizeof(float) * (size_t)(k * n));
        CHECK_OK(sm_rsvd(W, m, n, n, r, 5, 0, 1, U, S, Vt));
        double e = 0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0;
                for (int64_t l = 0; l < r; l++) acc += (double)U[i * r + l] * S[l] * Vt[l * n + j];
                e += (acc - W[i * n + j]) * (acc - W[i * n + j]);
            }
        double norm = fro(W, m * n);
        CHECK(fabs(sqrt(e) - opt_err(sig, k, r)) / norm < 1e-5);
        for (int64_t i = 0; i < r; i++) CHECK(fabs(S[i] - sig[i]) <= 1e-5 * sig[0]);
        CHECK_OK(sm_rsvd(W, m, n, n, 0, 5, 2, 1, U, S, Vt));
        free(W), free(sig), free(U), free(S), free(Vt);
    }

    // A leading dimension larger than n reads the same matrix.
    {
        int64_t m = 50, n = 33, lda = 41, r = 6;
        float *A = malloc(sizeof(float) * (size_t)(m * lda)), *W = malloc(sizeof(float) * m * n);
        fill_random(A, m * lda, 77);
        for (int64_t i = 0; i < m; i++) memcpy(W + i * n, A + i * lda, sizeof(float) * n);
        float U1[50 * 6], S1[6], V1[6 * 33], U2[50 * 6], S2[6], V2[6 * 33];
        CHECK_OK(sm_rsvd(W, m, n, n, r, 4, 1, 3, U1, S1, V1));
        CHECK_OK(sm_rsvd(A, m, n, lda, r, 4, 1, 3, U2, S2, V2));
        check_close("rsvd lda S", S2, S1, r, 1e-5);
        check_close("rsvd lda U", U2, U1, m * r, 1e-4);
        check_close("rsvd lda Vt", V2, V1, r * n, 1e-4);
        free(A), free(W);
    }

    // Argument errors.
    float W[12 * 8], U[12 * 9], S[9], Vt[9 * 8];
    fill_random(W, 96, 1);
    CHECK_FAIL(sm_rsvd(W, 12, 8, 8, 9, 2, 1, 1, U, S, Vt), SM_ERR_ARG, "outside");
    CHECK_FAIL(sm_rsvd(W, 12, 8, 8, -1, 2, 1, 1, U, S, Vt), SM_ERR_ARG, "outside");
    CHECK_FAIL(sm_rsvd(W, 12, 8, 8, 3, -1, 1, 1, U, S, Vt), SM_ERR_ARG, "oversampling");
    CHECK_FAIL(sm_rsvd(W, 12, 8, 8, 3, 2, -1, 1, U, S, Vt), SM_ERR_ARG, "power");
    CHECK_FAIL(sm_rsvd(W, 12, 8, 7, 3, 2, 1, 1, U, S, Vt), SM_ERR_ARG, "lda");
}

// Child process: the k-th allocation fails (STRUCTMAT_FAIL_ALLOC_AFTER is read at the first one).
static int alloc_fail_child(void) {
    float W[40 * 25], U[40 * 5], S[5], Vt[5 * 25];
    fill_random(W, 40 * 25, 2);
    sm_status st = sm_rsvd(W, 40, 25, 25, 5, 3, 2, 1, U, S, Vt);
    if (st == SM_OK) return 2;
    return st == SM_ERR_ALLOC && strstr(sm_last_error(), "out of memory") ? 0 : 1;
}

static void test_rsvd_alloc_failures(void) {
    // sm_rsvd allocates 7 buffers, then sm_svd of B copies B once (its U and Vt are ours): failing
    // any of the 8 must return SM_ERR_ALLOC (and, under the sanitizer build, leak nothing); a 9th
    // is never reached.
    for (int k = 1; k <= 9; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            char v[16];
            snprintf(v, sizeof v, "%d", k);
            setenv("STRUCTMAT_FAIL_ALLOC_AFTER", v, 1);
            execl("/proc/self/exe", "test_lowrank", "--alloc-fail-child", (char *)NULL);
            _exit(127);
        }
        int status = 0;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        int want = k <= 8 ? 0 : 2;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != want) {
            fprintf(stderr, "rsvd with allocation %d failing: child status %d, expected exit %d\n",
                    k, status, want);
            g_failures++;
        }
    }
}

// --- randomized solver through lowrank ------------------------------------------------------

static void check_random_fits(const char *what, const float *W, int64_t m, int64_t n,
                              const int64_t *ranks, int nranks, bool seeds) {
    int64_t k = m < n ? m : n;
    double *sig = sigma_ref(W, m, n);
    float *D1 = malloc(sizeof(float) * (size_t)(m * n)), *D2 = malloc(sizeof(float) * m * n);
    for (int ri = 0; ri < nranks; ri++) {
        int64_t r = ranks[ri];
        char spec[80];
        snprintf(spec, sizeof spec, "lowrank:rank=%lld,solver=random", (long long)r);
        double opt = opt_err(sig, k, r);
        sm_op *op = fit(W, m, n, spec, 11);
        if (!op) continue;
        double ratio = fit_err(op, W, m, n, D1) / opt;
        if (!(ratio <= 1.01)) {
            fprintf(stderr, "%s %lldx%lld rank %lld: random err/opt = %.5f > 1.01\n", what,
                    (long long)m, (long long)n, (long long)r, ratio);
            g_failures++;
        }
        sm_op_free(op);
        if (!seeds) continue;
        // Same seed: the same operator, bit for bit. Another seed: different, still within 1%.
        op = fit(W, m, n, spec, 11);
        if (op) fit_err(op, W, m, n, D2);
        CHECK(op && memcmp(D1, D2, sizeof(float) * (size_t)(m * n)) == 0);
        sm_op_free(op);
        op = fit(W, m, n, spec, 12345);
        if (!op) continue;
        double ratio2 = fit_err(op, W, m, n, D2) / opt;
        CHECK(memcmp(D1, D2, sizeof(float) * (size_t)(m * n)) != 0);
        if (!(ratio2 <= 1.01)) {
            fprintf(stderr, "%s %lldx%lld rank %lld seed 12345: random err/opt = %.5f > 1.01\n",
                    what, (long long)m, (long long)n, (long long)r, ratio2);
            g_failures++;
        }
        sm_op_free(op);
    }
    free(sig), free(D1), free(D2);
}

static void test_random_decaying(void) {
    static const int64_t shapes[][2] = {{300, 200}, {200, 300}, {257, 129}};
    static const int64_t ranks[] = {5, 20, 50};
    for (int kind = 0; kind < 2; kind++)
        for (int s = 0; s < 3; s++) {
            int64_t m = shapes[s][0], n = shapes[s][1], k = m < n ? m : n;
            double *sig = malloc(sizeof(double) * (size_t)k);
            for (int64_t i = 0; i < k; i++)
                sig[i] = kind == 0 ? 1.0 / (double)(i + 1) : pow(0.9, (double)(i + 1));
            float *W = spectrum_matrix(m, n, sig, 500 + (uint64_t)(s + 3 * kind));
            check_random_fits(kind == 0 ? "sigma=1/i" : "sigma=0.9^i", W, m, n, ranks, 3, true);
            free(sig), free(W);
        }
}

// --- the shared model's real weights ----------------------------------------------------------

static float *read_model_tensor(const char *name, int64_t *m, int64_t *n) {
    return read_matrix(MODEL, name, m, n);
}

static const char *const k_proj[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                     "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                     "mlp.down_proj"};

static void test_random_model(void) {
    static const int layers[] = {0, 3};
    static const int64_t ranks[] = {16, 32, 64};
    for (int li = 0; li < 2; li++)
        for (int p = 0; p < 7; p++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", layers[li], k_proj[p]);
            int64_t m, n;
            float *W = read_model_tensor(name, &m, &n);
            if (!W) continue;
            // Seeds are checked on one matrix of each shape; the rest check the default seed.
            check_random_fits(name, W, m, n, ranks, 3, li == 0 && (p == 0 || p >= 5));
            free(W);
        }
}

// --- factor dtypes --------------------------------------------------------------------------

// ||W - (L + dL)(R + dR)||_F <= opt + ||dL||_F ||R||_2 + ||L||_2 ||dR||_F + ||dL||_F ||dR||_F,
// with ||L||_2 = ||R||_2 = sqrt(sigma_1) and ||dL||_F bounded per element from the f32 factors:
// f16/bf16 round to nearest (relative error u = 2^-11 / 2^-8 for normal numbers, plus half the
// smallest f16 subnormal); q8 rounds to a step s = f16(amax / 127) per group of 64 along a row, so
// an element is off by at most s / 2 <= amax (1/254 + 2^-12), or, when s rounded down and the code
// clips at 127, by amax - 127 s <= amax 2^-11; amax (1/254 + 2^-10) covers both.
static double factor_bound(const float *F, int64_t rows, int64_t cols, const char *dtype) {
    double s = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t g = 0; g < cols; g += 64) {
            int64_t g1 = g + 64 < cols ? g + 64 : cols;
            double amax = 0;
            for (int64_t j = g; j < g1; j++) amax = fmax(amax, fabs((double)F[i * cols + j]));
            for (int64_t j = g; j < g1; j++) {
                double x = fabs((double)F[i * cols + j]), d;
                if (!strcmp(dtype, "q8"))
                    d = amax * (1.0 / 254 + 0x1p-10);
                else if (!strcmp(dtype, "f16"))
                    d = x * 0x1p-11 + 0x1p-25;
                else
                    d = x * 0x1p-8;
                s += d * d;
            }
        }
    return sqrt(s);
}

static void test_dtypes(void) {
    static const char *const dtypes[] = {"f16", "bf16", "q8"};
    int64_t m, n;
    float *W = read_model_tensor("model.layers.1.mlp.down_proj.weight", &m, &n);
    if (!W) return;
    double *sig = sigma_ref(W, m, n), norm = fro(W, m * n);
    int64_t k = m < n ? m : n;
    static const int64_t ranks[] = {8, 64, 200};
    for (int ri = 0; ri < 3; ri++) {
        int64_t r = ranks[ri];
        char spec[80];
        snprintf(spec, sizeof spec, "lowrank:rank=%lld", (long long)r);
        sm_op *base = fit(W, m, n, spec, 1);
        sm_part *parts = NULL;
        int np = 0;
        if (base) CHECK_OK(sm_op_parts(base, &parts, &np));
        if (np != 2) {
            free(parts), sm_op_free(base);
            continue;
        }
        double opt = opt_err(sig, k, r), l2 = sqrt(sig[0]);
        for (int d = 0; d < 3; d++) {
            snprintf(spec, sizeof spec, "lowrank:rank=%lld,dtype=%s", (long long)r, dtypes[d]);
            sm_op *op = fit(W, m, n, spec, 1);
            if (!op) continue;
            double dl = factor_bound(parts[0].data, m, r, dtypes[d]);
            double dr = factor_bound(parts[1].data, r, n, dtypes[d]);
            double bound = (opt + dl * l2 + l2 * dr + dl * dr) / norm + 1e-6;
            double got = fit_err(op, W, m, n, NULL) / norm;
            // Never better than the optimum (Eckart-Young holds for any rank-r matrix).
            if (!(got <= bound && got >= opt / norm - 1e-6)) {
                fprintf(stderr, "%s on %lldx%lld: rel error %.7f outside [%.7f, %.7f]\n", spec,
                        (long long)m, (long long)n, got, opt / norm, bound);
                g_failures++;
            }
            sm_op_free(op);
        }
        free(parts), sm_op_free(base);
    }
    free(W), free(sig);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--alloc-fail-child")) return alloc_fail_child();
    test_eckart_young();
    test_ratio();
    test_factor_storage();
    test_rsvd_direct();
    test_rsvd_alloc_failures();
    test_random_decaying();
    test_random_model();
    test_dtypes();
    TEST_END();
}
