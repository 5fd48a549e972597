// BLAST: the parameterization against a formula evaluated here in double (both permutations);
// the special cases of DESIGN.md built as BLAST parts from their own factors and reproduced
// exactly, and refitted exactly by blast settings; random BLAST matrices recovered at the true
// rank; never worse than the closed-form warm starts (whose errors are computed here from dgesdd);
// better than low-rank, block-low-rank and Monarch on two of the shared model's matrices at no more
// parameters (all 28 in test_slow_blast_model); sizes; errors.
#include "linalg/linalg.h"
#include "ops/blast_kernels.h"
#include "testutil.h"

static sm_part part3(const char *name, int64_t a, int64_t b, int64_t c, const float *data) {
    sm_part p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.dtype = SM_DTYPE_F32;
    p.ndim = 3;
    p.shape[0] = a, p.shape[1] = b, p.shape[2] = c;
    p.data = data;
    p.nbytes = (size_t)(a * b * c) * sizeof(float);
    return p;
}

// W (m, n) of BLAST parts, in double: W[row(i, a)][j q + c] = sum_r U[i][a][r] S[i][j][r]
// Vt[j][r][c], row(i, a) = i p + a, or a B + i when stride.
static void blast_ref(const float *U, const float *Vt, const float *S, int64_t m, int64_t n,
                      int64_t B, int64_t R, bool stride, float *W) {
    int64_t p = m / B, q = n / B;
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < B; j++)
            for (int64_t a = 0; a < p; a++)
                for (int64_t c = 0; c < q; c++) {
                    double acc = 0;
                    for (int64_t r = 0; r < R; r++)
                        acc += (double)U[(i * p + a) * R + r] * S[(i * B + j) * R + r] *
                               Vt[(j * R + r) * q + c];
                    W[(stride ? a * B + i : i * p + a) * n + j * q + c] = (float)acc;
                }
}

static sm_op *blast_from(const float *U, const float *Vt, const float *S, int64_t m, int64_t n,
                         int64_t B, int64_t R, bool stride) {
    sm_part parts[3] = {part3("U", B, m / B, R, U), part3("V", B, R, n / B, Vt),
                        part3("S", B, B, R, S)};
    char spec[96];
    snprintf(spec, sizeof spec, "blast:blocks=%lld,rank=%lld%s", (long long)B, (long long)R,
             stride ? ",perm=stride" : "");
    sm_op *op = NULL;
    CHECK_OK(sm_op_from_parts(spec, m, n, parts, 3, &op));
    return op;
}

static double fit_error(const float *W, int64_t m, int64_t n, const char *spec, sm_op **keep) {
    sm_op *op = NULL;
    sm_fit_opts o = {.seed = 1};
    CHECK_OK(sm_op_fit(W, m, n, spec, &o, &op));
    if (!op) return INFINITY;
    float *D = malloc(sizeof(float) * (size_t)(m * n));
    CHECK_OK(sm_op_to_dense(op, D));
    double e = rel_fro(D, W, m * n);
    free(D);
    if (keep)
        *keep = op;
    else
        sm_op_free(op);
    return e;
}

// A random BLAST matrix (entries of U, V, S uniform in [-1, 1)).
static void random_blast(float *W, int64_t m, int64_t n, int64_t B, int64_t R, bool stride,
                         unsigned seed) {
    float *U = malloc(sizeof(float) * (size_t)(m * R)),
          *Vt = malloc(sizeof(float) * (size_t)(n * R));
    float *S = malloc(sizeof(float) * (size_t)(B * B * R));
    fill_random(U, m * R, seed), fill_random(Vt, n * R, seed + 1),
        fill_random(S, B * B * R, seed + 2);
    blast_ref(U, Vt, S, m, n, B, R, stride, W);
    free(U), free(Vt), free(S);
}

static void test_parameterization(void) {
    const struct {
        int64_t m, n, B, R;
        bool stride;
    } cases[] = {
        {24, 36, 3, 5, false}, {24, 36, 3, 5, true}, {40, 16, 4, 7, true}, {9, 7, 1, 3, false}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int64_t m = cases[k].m, n = cases[k].n, B = cases[k].B, R = cases[k].R;
        float *U = malloc(sizeof(float) * (size_t)(m * R)),
              *Vt = malloc(sizeof(float) * (size_t)(n * R));
        float *S = malloc(sizeof(float) * (size_t)(B * B * R));
        float *W = malloc(sizeof(float) * (size_t)(m * n)),
              *D = malloc(sizeof(float) * (size_t)(m * n));
        fill_random(U, m * R, 1), fill_random(Vt, n * R, 2), fill_random(S, B * B * R, 3);
        blast_ref(U, Vt, S, m, n, B, R, cases[k].stride, W);
        sm_op *op = blast_from(U, Vt, S, m, n, B, R, cases[k].stride);
        if (op) {
            CHECK_OK(sm_op_to_dense(op, D));
            check_close("blast parameterization", D, W, m * n, 1e-6);
            CHECK(sm_op_nparams(op) == R * (m + n + B * B));
            CHECK(sm_op_macs(op) == R * (m + n + B * B));
            CHECK(sm_op_nbytes(op) == 4 * R * (m + n + B * B));
            sm_op_free(op);
        }
        free(U), free(Vt), free(S), free(W), free(D);
    }
    // dtype=f16 stores U and V in 2 bytes, S in 4.
    float W[32 * 48];
    fill_random(W, 32 * 48, 5);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, 32, 48, "blast:blocks=4,rank=6,iters=5,dtype=f16", NULL, &op));
    if (op) {
        CHECK(sm_op_nbytes(op) == 2 * 6 * (32 + 48) + 4 * 16 * 6);
        CHECK(strcmp(sm_op_spec(op), "blast:blocks=4,rank=6,iters=5,dtype=f16") == 0);
        sm_op_free(op);
    }
}

// Block-diagonal, block-low-rank and Monarch matrices written as BLAST parts from their own
// factors (DESIGN.md's table) reproduce the matrix; and a BLAST fit with those settings finds it.
static void test_special_cases(void) {
    const int64_t B = 4, p = 8, q = 6, m = B * p, n = B * q, T = 2, R = B * T;
    float *W = malloc(sizeof(float) * (size_t)(m * n)),
          *D = malloc(sizeof(float) * (size_t)(m * n));
    float U[m * R], Vt[n * R], S[B * B * R];

    // Block-low-rank, rank T per block: W_ij = L_ij Q_ij; coordinates of group (i + j) mod B.
    float L[B][B][p * T], Q[B][B][T * q];
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < B; j++) {
            fill_random(L[i][j], p * T, (unsigned)(10 + i * B + j));
            fill_random(Q[i][j], T * q, (unsigned)(50 + i * B + j));
            for (int64_t a = 0; a < p; a++)
                for (int64_t c = 0; c < q; c++) {
                    double acc = 0;
                    for (int64_t t = 0; t < T; t++)
                        acc += (double)L[i][j][a * T + t] * Q[i][j][t * q + c];
                    W[(i * p + a) * n + j * q + c] = (float)acc;
                }
        }
    memset(S, 0, sizeof S);
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < B; j++) {
            int64_t g = (i + j) % B;
            for (int64_t t = 0; t < T; t++) {
                S[(i * B + j) * R + g * T + t] = 1;
                for (int64_t a = 0; a < p; a++) U[(i * p + a) * R + g * T + t] = L[i][j][a * T + t];
                for (int64_t c = 0; c < q; c++)
                    Vt[(j * R + g * T + t) * q + c] = Q[i][j][t * q + c];
            }
        }
    sm_op *op = blast_from(U, Vt, S, m, n, B, R, false);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        check_close("blast as block-low-rank", D, W, m * n, 1e-6);
        sm_op_free(op);
    }
    CHECK(fit_error(W, m, n, "blast:blocks=4,rank=8", NULL) < 1e-5);

    // Monarch (monarch.c's layout): W[i K + l][k p + c] = sum_t f2[l][i][k T + t] f1[k][t K +
    // l][c], checked first against the monarch structure itself. Block-row l of perm=stride,
    // block-column k: U_l[a][g T + t] = f2[l][a][k T + t] and V_k[c][g T + t] = f1[k][t K + l][c],
    // g = (l + k) mod K.
    const int64_t K = B, s = m / K, pin = n / K, Qm = K * T;
    float f1[K * Qm * pin], f2[K * s * Qm];
    fill_random(f1, K * Qm * pin, 91), fill_random(f2, K * s * Qm, 92);
    for (int64_t l = 0; l < K; l++)
        for (int64_t i = 0; i < s; i++)
            for (int64_t k = 0; k < K; k++)
                for (int64_t c = 0; c < pin; c++) {
                    double acc = 0;
                    for (int64_t t = 0; t < T; t++)
                        acc += (double)f2[(l * s + i) * Qm + k * T + t] *
                               f1[(k * Qm + t * K + l) * pin + c];
                    W[(i * K + l) * n + k * pin + c] = (float)acc;
                }
    sm_part mp[2] = {part3("f1", K, Qm, pin, f1), part3("f2", K, s, Qm, f2)};
    CHECK_OK(sm_op_from_parts("monarch:blocks=4,rank=2", m, n, mp, 2, &op));
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        check_close("monarch layout as documented", D, W, m * n, 1e-6);
        sm_op_free(op);
    }
    memset(S, 0, sizeof S);
    for (int64_t l = 0; l < K; l++)
        for (int64_t k = 0; k < K; k++) {
            int64_t g = (l + k) % K;
            for (int64_t t = 0; t < T; t++) {
                S[(l * K + k) * R + g * T + t] = 1;
                for (int64_t a = 0; a < s; a++)
                    U[(l * s + a) * R + g * T + t] = f2[(l * s + a) * Qm + k * T + t];
                for (int64_t c = 0; c < pin; c++)
                    Vt[(k * R + g * T + t) * pin + c] = f1[(k * Qm + t * K + l) * pin + c];
            }
        }
    op = blast_from(U, Vt, S, m, n, B, R, true);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        check_close("blast as monarch", D, W, m * n, 1e-6);
        sm_op_free(op);
    }
    CHECK(fit_error(W, m, n, "blast:blocks=4,rank=8,perm=stride", NULL) < 1e-5);

    // Block-diagonal with full-rank (p, q) = (8, 6) blocks: R = min(p, q) = 6, s_ij = [i = j],
    // U_i, V_i from the block's SVD. The fit finds it from its block-diagonal warm start.
    memset(W, 0, sizeof(float) * (size_t)(m * n));
    for (int64_t i = 0; i < B; i++)
        for (int64_t a = 0; a < p; a++)
            fill_random(W + (i * p + a) * n + i * q, q, (unsigned)(200 + i * p + a));
    const int64_t Rd = q;
    float Ud[m * Rd], Vd[n * Rd], Sd[B * B * Rd], sv[q], u[p * q], vt[q * q];
    memset(Sd, 0, sizeof Sd);
    for (int64_t i = 0; i < B; i++) {
        CHECK_OK(sm_svd(W + i * p * n + i * q, p, q, n, u, sv, vt));
        for (int64_t r = 0; r < Rd; r++) {
            Sd[(i * B + i) * Rd + r] = sv[r];
            for (int64_t a = 0; a < p; a++) Ud[(i * p + a) * Rd + r] = u[a * q + r];
            for (int64_t c = 0; c < q; c++) Vd[(i * Rd + r) * q + c] = vt[r * q + c];
        }
    }
    op = blast_from(Ud, Vd, Sd, m, n, B, Rd, false);
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        check_close("blast as block-diagonal", D, W, m * n, 1e-5);
        sm_op_free(op);
    }
    CHECK(fit_error(W, m, n, "blast:blocks=4,rank=6", NULL) < 1e-5);

    // Low-rank: B = 1 is the truncated SVD (Eckart-Young optimum from dgesdd in double) on a
    // general matrix, and exact on a rank-5 one.
    fill_random(W, m * n, 300);
    double Wd[m * n], sd[n];
    for (int64_t k = 0; k < m * n; k++) Wd[k] = W[k];
    CHECK_OK(sm_svd_f64(Wd, m, n, NULL, sd, NULL));
    double tail = 0, all = 0;
    for (int64_t k = 0; k < n; k++) all += sd[k] * sd[k], tail += k >= 5 ? sd[k] * sd[k] : 0;
    double opt = sqrt(tail / all), e = fit_error(W, m, n, "blast:blocks=1,rank=5", NULL);
    if (!(e <= opt * (1 + 1e-5) && e >= opt * (1 - 1e-5))) {
        fprintf(stderr, "blast:blocks=1,rank=5: error %.9g, Eckart-Young %.9g\n", e, opt);
        g_failures++;
    }
    float A5[m * 5], B5[5 * n];
    fill_random(A5, m * 5, 301), fill_random(B5, 5 * n, 302);
    matmul_ref(A5, B5, W, m, 5, n);
    CHECK(fit_error(W, m, n, "blast:blocks=1,rank=5", NULL) < 1e-5);
    free(W), free(D);
}

// Random BLAST matrices at the true rank, default settings, on configurations with B >= 4,
// R <= 2 B, R <= min(p, q). (The fit is non-convex: with B = 2, R = 8 B or R > min(p, q) it often
// stalls around 1e-2 to 1e-1 in 300 iterations; test_slow_blast_recovery and BENCHMARKS.md count.)
static void test_recovery(void) {
    const struct {
        int64_t m, n, B, R;
        bool stride;
    } cases[] = {{96, 96, 4, 8, false},
                 {128, 128, 8, 12, false},
                 {256, 128, 8, 16, false},
                 {96, 96, 4, 8, true},
                 {128, 128, 8, 12, true}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        for (unsigned seed = 1; seed <= 3; seed++) {
            int64_t m = cases[k].m, n = cases[k].n;
            float *W = malloc(sizeof(float) * (size_t)(m * n));
            random_blast(W, m, n, cases[k].B, cases[k].R, cases[k].stride, seed * 10);
            char spec[96];
            snprintf(spec, sizeof spec, "blast:blocks=%lld,rank=%lld%s", (long long)cases[k].B,
                     (long long)cases[k].R, cases[k].stride ? ",perm=stride" : "");
            double e = fit_error(W, m, n, spec, NULL);
            if (!(e < 1e-3)) {
                fprintf(stderr, "%s on a random %lldx%lld BLAST matrix (seed %u): error %.3g\n",
                        spec, (long long)m, (long long)n, seed, e);
                g_failures++;
            }
            free(W);
        }
}

// Squared Frobenius norm of what the best rank-r approximation of the (rows, cols) block at A
// (leading dimension ld) leaves, by dgesdd.
static double block_tail(const float *A, int64_t rows, int64_t cols, int64_t ld, int64_t r) {
    double *a = malloc(sizeof(double) * (size_t)(rows * cols));
    int64_t k = rows < cols ? rows : cols;
    double *sv = malloc(sizeof(double) * (size_t)k);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) a[i * cols + j] = A[i * ld + j];
    CHECK_OK(sm_svd_f64(a, rows, cols, NULL, sv, NULL));
    double t = 0;
    for (int64_t i = r; i < k; i++) t += sv[i] * sv[i];
    free(a), free(sv);
    return t;
}

// The fit is never worse than the low-rank and block-low-rank projections it starts from.
static void test_warm_start_bound(void) {
    const int64_t m = 64, n = 48, B = 4, p = m / B, q = n / B;
    float W[64 * 48];
    fill_random(W, m * n, 77);
    for (int64_t k = 0; k < m * n; k++) W[k] *= (float)(1 + (k % n) / 8); // uneven columns
    double all = 0;
    for (int64_t k = 0; k < m * n; k++) all += (double)W[k] * W[k];
    const int64_t ranks[] = {4, 9, 20};
    for (int k = 0; k < 3; k++) {
        int64_t R = ranks[k], T = R / B;
        double lr = block_tail(W, m, n, n, R), blr = 0;
        for (int64_t i = 0; i < B; i++)
            for (int64_t j = 0; j < B; j++) blr += block_tail(W + i * p * n + j * q, p, q, n, T);
        double bound = sqrt((lr < blr ? lr : blr) / all);
        char spec[64];
        for (int iters = 0; iters <= 300; iters += 300) {
            snprintf(spec, sizeof spec, "blast:blocks=4,rank=%lld,iters=%d", (long long)R, iters);
            double e = fit_error(W, m, n, spec, NULL);
            if (!(e <= bound * (1 + 1e-5))) {
                fprintf(stderr, "%s: error %.9g above its warm start %.9g\n", spec, e, bound);
                g_failures++;
            }
            if (iters == 300 && !(e < 0.99 * bound)) {
                fprintf(stderr, "%s: error %.9g, no better than its warm start %.9g\n", spec, e,
                        bound);
                g_failures++;
            }
        }
    }
}

// Two matrices of the shared model at half the parameters: BLAST below low-rank, block-low-rank
// and Monarch (blocks 2, 4, 8) with no more parameters than any of them.
static void test_model_matrices(void) {
    const char *names[] = {"model.layers.0.self_attn.q_proj.weight",
                           "model.layers.1.mlp.down_proj.weight"};
    for (int k = 0; k < 2; k++) {
        int64_t m, n;
        float *W = read_matrix("models/shakespeare-llama-3m", names[k], &m, &n);
        if (!W) continue;
        sm_op *bl = NULL;
        double eb = fit_error(W, m, n, "blast:blocks=4,ratio=0.5", &bl);
        const char *rivals[] = {"lowrank:ratio=0.5",
                                "blocklowrank:blocks=2,ratio=0.5",
                                "blocklowrank:blocks=4,ratio=0.5",
                                "blocklowrank:blocks=8,ratio=0.5",
                                "monarch:blocks=2,ratio=0.5",
                                "monarch:blocks=4,ratio=0.5",
                                "monarch:blocks=8,ratio=0.5"};
        for (int r = 0; r < 7 && bl; r++) {
            sm_op *op = NULL;
            double e = fit_error(W, m, n, rivals[r], &op);
            if (!op) continue;
            if (!(eb < e) || sm_op_nparams(bl) > sm_op_nparams(op)) {
                fprintf(stderr, "%s: blast %.5f (%lld params) vs %s %.5f (%lld params)\n", names[k],
                        eb, (long long)sm_op_nparams(bl), rivals[r], e,
                        (long long)sm_op_nparams(op));
                g_failures++;
            }
            sm_op_free(op);
        }
        sm_op_free(bl);
        free(W);
    }
}

static void test_errors(void) {
    float W[64 * 48];
    fill_random(W, 64 * 48, 1);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:rank=4", NULL, &op), SM_ERR_SPEC, "needs blocks=B");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=5,rank=4", NULL, &op), SM_ERR_SPEC,
               "blocks=5 does not divide the 64x48 matrix");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4", NULL, &op), SM_ERR_SPEC,
               "needs rank=R or ratio=X");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,rank=49", NULL, &op), SM_ERR_SPEC,
               "rank=49 is too large");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,rank=4,ratio=0.5", NULL, &op), SM_ERR_SPEC,
               "not both");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,ratio=0.001", NULL, &op), SM_ERR_SPEC,
               "leaves no room for rank 1");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,rank=4,perm=random", NULL, &op), SM_ERR_SPEC,
               "perm");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,rank=4,iters=-1", NULL, &op), SM_ERR_SPEC,
               "iters");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,rank=4,step=3", NULL, &op), SM_ERR_SPEC,
               "step");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,rank=4,delta=-1", NULL, &op), SM_ERR_SPEC,
               "delta");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,rank=4,dtype=q3", NULL, &op), SM_ERR_SPEC,
               "dtype");
    CHECK_FAIL(sm_op_fit(W, 64, 48, "blast:blocks=4,rank=4,bits=3", NULL, &op), SM_ERR_SPEC,
               "bits");
    CHECK_FAIL(sm_op_from_parts("blast:blocks=4,ratio=0.5", 64, 48, NULL, 0, &op), SM_ERR_SPEC,
               "needs rank=");
    // A zero matrix fits exactly with zero factors; ratio resolves to the largest rank that fits.
    float Z[64 * 48] = {0}, D[64 * 48];
    CHECK_OK(sm_op_fit(Z, 64, 48, "blast:blocks=4,ratio=0.5", NULL, &op));
    if (op) {
        CHECK(strcmp(sm_op_spec(op), "blast:blocks=4,rank=12") == 0); // 12 (64 + 48 + 16) = 1536
        CHECK_OK(sm_op_to_dense(op, D));
        for (int k = 0; k < 64 * 48; k++) CHECK(D[k] == 0);
        sm_op_free(op);
    }
}

// The coupling kernel at every level the CPU has, on lengths around the vector widths.
static void test_kernels(void) {
    float s[70], z[70], t[70], ref[70];
    fill_random(s, 70, 1), fill_random(z, 70, 2);
    for (int64_t n = 0; n <= 70; n += n < 20 ? 1 : 17)
        for (int acc = 0; acc < 2; acc++)
            for (int isa = 0; isa <= (int)sm_isa_detect(); isa++) {
                fill_random(t, 70, 3), fill_random(ref, 70, 3);
                for (int64_t i = 0; i < n; i++)
                    ref[i] = (float)((acc ? (double)ref[i] : 0.0) + (double)s[i] * z[i]);
                sm_blast_kernels_for((sm_isa)isa)->mul(n, s, z, t, acc);
                char what[64];
                snprintf(what, sizeof what, "blast mul %s n=%lld acc=%d", sm_isa_name((sm_isa)isa),
                         (long long)n, acc);
                check_close(what, t, ref, 70, 1e-6); // entries past n untouched
            }
}

int main(void) {
    test_kernels();
    test_parameterization();
    test_special_cases();
    test_recovery();
    test_warm_start_bound();
    test_model_matrices();
    test_errors();
    TEST_END();
}
