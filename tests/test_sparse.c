// sparse: which entries are kept (global magnitude top-K, Wanda per row, N:M per group) against
// selections made here by sorting; exactly N non-zeros per group of M; byte counts with indices
// and masks; the fixed-mask least-squares update against LAPACK dgels on the augmented system;
// every kernel level against the scalar one and a dense double reference on awkward shapes;
// hostile parts; spec errors; sparse+lowrank alternating fit vs the sequential one.
#include "ops/sparse_kernels.h"
#include "testutil.h"

#include <lapacke.h>

static float *dense_of(sm_op *op) {
    float *D = malloc(sizeof(float) * (size_t)(sm_op_rows(op) * sm_op_cols(op)));
    CHECK_OK(sm_op_to_dense(op, D));
    return D;
}

// Indices of x (len) sorted by decreasing score, ties to the lower index.
static const float *g_score;
static int cmp_desc(const void *a, const void *b) {
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (g_score[i] != g_score[j]) return g_score[i] > g_score[j] ? -1 : 1;
    return i < j ? -1 : 1;
}
static void top_k(const float *score, int64_t len, int64_t k, uint8_t *keep) {
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)len);
    for (int64_t i = 0; i < len; i++) idx[i] = i;
    g_score = score;
    qsort(idx, (size_t)len, sizeof *idx, cmp_desc);
    memset(keep, 0, (size_t)len);
    for (int64_t i = 0; i < k; i++) keep[idx[i]] = 1;
    free(idx);
}

// The fitted matrix must be W where keep is set and 0 elsewhere.
static void check_masked(const char *what, const float *D, const float *W, const uint8_t *keep,
                         int64_t len) {
    for (int64_t i = 0; i < len; i++)
        if (D[i] != (keep[i] ? W[i] : 0.0f)) {
            fprintf(stderr, "%s: entry %lld is %g, expected %g\n", what, (long long)i, D[i],
                    keep[i] ? W[i] : 0.0f);
            g_failures++;
            return;
        }
}

static void test_selection(void) {
    const int64_t m = 30, n = 44;
    float W[30 * 44], score[30 * 44];
    uint8_t keep[30 * 44];
    fill_random(W, m * n, 5);
    for (int64_t i = 0; i < m * n; i += 7) W[i] = (i % 2 ? 0.5f : -0.5f); // ties
    for (int64_t i = 0; i < m * n; i++) score[i] = fabsf(W[i]);
    // Global magnitude: floor(D m n) largest |W|.
    const double dens[] = {0.5, 0.1, 0.9};
    for (int k = 0; k < 3; k++) {
        char spec[64];
        snprintf(spec, sizeof spec, "sparse:density=%g", dens[k]);
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, spec, NULL, &op));
        if (!op) continue;
        int64_t K = (int64_t)floor(dens[k] * m * n + 1e-9);
        top_k(score, m * n, K, keep);
        float *D = dense_of(op);
        check_masked(spec, D, W, keep, m * n);
        CHECK(sm_op_nparams(op) == K && sm_op_macs(op) == K);
        free(D);
        sm_op_free(op);
    }
    // Wanda with sqsum: per row, floor(D n) largest |W_ij| sqrt(sqsum_j); values unchanged.
    double sq[44];
    for (int64_t j = 0; j < n; j++) sq[j] = 0.1 + (double)((j * 37) % 11);
    sm_stats st = {.sqsum = sq, .tokens = 3};
    sm_fit_opts o = {.seed = 1, .stats = &st};
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) score[i * n + j] = fabsf(W[i * n + j]) * (float)sqrt(sq[j]);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "sparse:density=0.3", &o, &op));
    if (op) {
        int64_t k = (int64_t)floor(0.3 * n + 1e-9);
        for (int64_t i = 0; i < m; i++) top_k(score + i * n, n, k, keep + i * n);
        float *D = dense_of(op);
        check_masked("wanda density=0.3", D, W, keep, m * n);
        CHECK(sm_op_nparams(op) == m * k);
        free(D);
        sm_op_free(op);
    }
    // N:M: the N largest of each group of M, exactly N per group (W has no zeros).
    const int64_t NM[][2] = {{2, 4}, {1, 4}, {3, 11}, {4, 4}};
    for (int k = 0; k < 4; k++) {
        int64_t N = NM[k][0], M = NM[k][1];
        char spec[64];
        snprintf(spec, sizeof spec, "sparse:nm=%lld:%lld", (long long)N, (long long)M);
        for (int wanda = 0; wanda < 2; wanda++) {
            CHECK_OK(sm_op_fit(W, m, n, spec, wanda ? &o : NULL, &op));
            if (!op) continue;
            for (int64_t i = 0; i < m * n; i++)
                score[i] = fabsf(W[i]) * (wanda ? (float)sqrt(sq[i % n]) : 1.0f);
            for (int64_t g = 0; g < m * n / M; g++) top_k(score + g * M, M, N, keep + g * M);
            float *D = dense_of(op);
            check_masked(spec, D, W, keep, m * n);
            for (int64_t g = 0; g < m * n / M; g++) {
                int64_t cnt = 0;
                for (int64_t j = 0; j < M; j++) cnt += D[g * M + j] != 0;
                if (cnt != N) {
                    fprintf(stderr, "%s: group %lld has %lld non-zeros\n", spec, (long long)g,
                            (long long)cnt);
                    g_failures++;
                    break;
                }
            }
            CHECK(strcmp(sm_op_spec(op), spec) == 0);
            CHECK(sm_op_nparams(op) == m * n / M * N);
            CHECK(sm_op_nbytes(op) == m * ((n + 7) / 8) + 4 * (m * n / M * N));
            free(D);
            sm_op_free(op);
        }
    }
}

static void test_bytes(void) {
    const int64_t m = 40, n = 100;
    float W[40 * 100];
    fill_random(W, m * n, 8);
    struct {
        const char *spec, *canon;
        int64_t bytes;
    } cases[] = {
        // nnz = 120: csr (u16) 4*41 + 6*120 = 884 < bitmap 40*13 + 480 = 1000
        {"sparse:density=0.03", "sparse:density=0.03,format=csr", 4 * 41 + 6 * 120},
        // nnz = 800: bitmap 520 + 3200 = 3720 < csr 164 + 4800
        {"sparse:density=0.2", "sparse:density=0.2,format=bitmap", 40 * 13 + 4 * 800},
        {"sparse:density=0.2,format=csr", "sparse:density=0.2,format=csr", 4 * 41 + 6 * 800},
        {"sparse:ratio=0.03,format=bitmap", "sparse:density=0.03,format=bitmap", 520 + 4 * 120},
    };
    for (int k = 0; k < 4; k++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, cases[k].spec, NULL, &op));
        if (!op) continue;
        CHECK(strcmp(sm_op_spec(op), cases[k].canon) == 0);
        if (sm_op_nbytes(op) != cases[k].bytes) {
            fprintf(stderr, "%s: nbytes %lld, expected %lld\n", cases[k].spec,
                    (long long)sm_op_nbytes(op), (long long)cases[k].bytes);
            g_failures++;
        }
        sm_op_free(op);
    }
    // More than 65536 columns: i32 indices.
    const int64_t wide = 70000;
    float *V = malloc(sizeof(float) * 2 * wide);
    fill_random(V, 2 * wide, 3);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(V, 2, wide, "sparse:density=0.01,format=csr", NULL, &op));
    if (op) {
        sm_part *parts;
        int np;
        CHECK_OK(sm_op_parts(op, &parts, &np));
        CHECK(np == 3 && parts[1].dtype == SM_DTYPE_I32 && strcmp(parts[1].name, "indices") == 0);
        CHECK(sm_op_nbytes(op) == 4 * 3 + 8 * 1400);
        float x[70000], y[2];
        fill_random(x, wide, 4);
        CHECK_OK(sm_op_apply(op, 1, x, y, NULL));
        float *D = dense_of(op);
        for (int i = 0; i < 2; i++) {
            double r = 0;
            for (int64_t j = 0; j < wide; j++) r += (double)D[i * wide + j] * x[j];
            CHECK(fabs(r - y[i]) < 1e-4 * (1 + fabs(r)));
        }
        free(D);
        free(parts);
        sm_op_free(op);
    }
    free(V);
}

// The kept values of each row solve min_v ||X_S v - X w||^2 + lambda ||v - w_S||^2 (dgels on the
// augmented system), lambda = 1% of the mean diagonal of H = X^T X.
static void test_ls_update(void) {
    const int64_t m = 12, n = 20, T = 60;
    double X[60 * 20], H[20 * 20];
    float W[12 * 20];
    fill_random(W, m * n, 21);
    float z[60 * 20];
    fill_random(z, T * n, 22);
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++)
            X[t * n + j] = (1 + j % 5) * (z[t * n + j] + (j ? 0.7 * z[t * n + j - 1] : 0));
    double tr = 0;
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = 0; b < n; b++) {
            double s = 0;
            for (int64_t t = 0; t < T; t++) s += X[t * n + a] * X[t * n + b];
            H[a * n + b] = s;
            if (a == b) tr += s;
        }
    double lambda = 0.01 * tr / n;
    sm_stats st = {.gram = H, .tokens = T};
    sm_fit_opts o = {.seed = 1, .stats = &st};
    const char *specs[] = {"sparse:density=0.4", "sparse:nm=2:4", "sparse:nm=1:5"};
    for (int k = 0; k < 3; k++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, specs[k], &o, &op));
        if (!op) continue;
        float *D = dense_of(op);
        double worst = 0;
        for (int64_t i = 0; i < m; i++) {
            int S[20], K = 0;
            for (int64_t j = 0; j < n; j++)
                if (D[i * n + j] != 0) S[K++] = (int)j;
            // [X_S; sqrt(lambda) I] v = [X w; sqrt(lambda) w_S]
            int64_t rows = T + K;
            double *A = calloc((size_t)(rows * K), sizeof(double)),
                   *b = calloc((size_t)rows, sizeof(double));
            for (int64_t t = 0; t < T; t++) {
                for (int c = 0; c < K; c++) A[t * K + c] = X[t * n + S[c]];
                for (int64_t j = 0; j < n; j++) b[t] += X[t * n + j] * W[i * n + j];
            }
            for (int c = 0; c < K; c++) {
                A[(T + c) * K + c] = sqrt(lambda);
                b[T + c] = sqrt(lambda) * W[i * n + S[c]];
            }
            CHECK(LAPACKE_dgels(LAPACK_ROW_MAJOR, 'N', (lapack_int)rows, K, 1, A, K, b, 1) == 0);
            double num = 0, den = 0;
            for (int c = 0; c < K; c++) {
                num += (D[i * n + S[c]] - b[c]) * (D[i * n + S[c]] - b[c]);
                den += b[c] * b[c];
            }
            if (sqrt(num / den) > worst) worst = sqrt(num / den);
            free(A), free(b);
        }
        if (!(worst < 1e-5)) {
            fprintf(stderr, "%s: least-squares update differs from dgels by %.3g\n", specs[k],
                    worst);
            g_failures++;
        }
        // And it lowers the activation-aware error against keeping W's values (same mask).
        double e_up = 0, e_keep = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < m; i++) {
                double a = 0, c = 0;
                for (int64_t j = 0; j < n; j++) {
                    a += X[t * n + j] * (W[i * n + j] - D[i * n + j]);
                    c += X[t * n + j] * (D[i * n + j] != 0 ? 0 : W[i * n + j]);
                }
                e_up += a * a, e_keep += c * c;
            }
        CHECK(e_up < e_keep);
        free(D);
        sm_op_free(op);
    }
}

// A random bitmap (density d) of (rows, n) with its values, plus the same as CSR and dense.
static void test_kernels(void) {
    const int64_t ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 130};
    const double ds[] = {0, 0.1, 0.5, 0.93, 1};
    const int64_t rows = 5;
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
        for (size_t b = 0; b < sizeof ds / sizeof *ds; b++) {
            int64_t n = ns[a], mb = (n + 7) / 8, nnz = 0;
            uint8_t mask[5 * 17] = {0};
            float Dn[5 * 130] = {0}, vals[5 * 130 + SM_SPARSE_PAD] = {0}, x[130], y[5];
            int32_t indptr[6];
            uint16_t i16[5 * 130];
            int32_t i32[5 * 130];
            float rnd[5 * 130], v[5 * 130];
            fill_random(rnd, rows * n, (unsigned)(a * 10 + b));
            fill_random(v, rows * n, (unsigned)(a * 10 + b + 500));
            fill_random(x, n, 7);
            fill_random(y, rows, 8);
            for (int64_t r = 0; r < rows; r++) {
                indptr[r] = (int32_t)nnz;
                for (int64_t c = 0; c < n; c++)
                    if ((rnd[r * n + c] + 1) / 2 < ds[b]) {
                        mask[r * mb + c / 8] |= (uint8_t)(1u << (c % 8));
                        Dn[r * n + c] = vals[nnz] = v[r * n + c];
                        i16[nnz] = (uint16_t)c, i32[nnz] = (int32_t)c;
                        nnz++;
                    }
            }
            indptr[rows] = (int32_t)nnz;
            double yr[5], xr[130];
            for (int64_t r = 0; r < rows; r++) {
                yr[r] = 0;
                for (int64_t c = 0; c < n; c++) yr[r] += (double)Dn[r * n + c] * x[c];
            }
            for (int64_t c = 0; c < n; c++) {
                xr[c] = 0.25; // gemv_t accumulates into x
                for (int64_t r = 0; r < rows; r++) xr[c] += (double)Dn[r * n + c] * y[r];
            }
            for (int isa = 0; isa <= (int)sm_isa_detect(); isa++) {
                const sm_sparse_kernels *k = sm_sparse_kernels_for((sm_isa)isa);
                float out[5 * 130], yo[5], xo[130];
                char what[96];
                snprintf(what, sizeof what, "%s n=%lld d=%g", sm_isa_name((sm_isa)isa),
                         (long long)n, ds[b]);
                k->bitmap_decode(rows, n, mask, vals, out);
                if (memcmp(out, Dn, sizeof(float) * (size_t)(rows * n)) != 0) {
                    fprintf(stderr, "%s: bitmap_decode differs\n", what);
                    g_failures++;
                }
                float yrf[5], xrf[130];
                for (int64_t r = 0; r < rows; r++) yrf[r] = (float)yr[r];
                for (int64_t c = 0; c < n; c++) xrf[c] = (float)xr[c];
                k->bitmap_gemv(rows, n, mask, vals, x, yo);
                check_close(what, yo, yrf, rows, 1e-5);
                k->csr16_gemv(rows, indptr, i16, vals, x, yo);
                check_close(what, yo, yrf, rows, 1e-5);
                k->csr32_gemv(rows, indptr, i32, vals, x, yo);
                check_close(what, yo, yrf, rows, 1e-5);
                for (int64_t c = 0; c < n; c++) xo[c] = 0.25f;
                k->bitmap_gemv_t(rows, n, mask, vals, y, xo);
                check_close(what, xo, xrf, n, 1e-5);
                for (int64_t c = 0; c < n; c++) xo[c] = 0.25f, xrf[c] = (float)(0.25 - 1.5 * x[c]);
                k->axpy(n, -1.5f, x, xo);
                check_close(what, xo, xrf, n, 1e-6);
            }
        }
}

static sm_part mkpart(const char *name, sm_dtype dt, int ndim, int64_t d0, int64_t d1,
                      const void *data, size_t esize) {
    sm_part p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.dtype = dt;
    p.ndim = ndim;
    p.shape[0] = d0;
    p.shape[1] = ndim > 1 ? d1 : 0;
    p.data = data;
    p.nbytes = (size_t)(d0 * (ndim > 1 ? d1 : 1)) * esize;
    return p;
}

static void test_hostile_parts(void) {
    sm_op *op = NULL;
    // 3x10 bitmap: 2 bytes per row.
    uint8_t mask[6] = {0x05, 0x01, 0x80, 0x00, 0x03, 0x02};
    float vals[8] = {1, 2, 3, 4, 5, 6, 7, 0};
    sm_part p[3] = {mkpart("mask", SM_DTYPE_U8, 2, 3, 2, mask, 1),
                    mkpart("values", SM_DTYPE_F32, 1, 7, 0, vals, 4)};
    CHECK_OK(sm_op_from_parts("sparse:density=0.2,format=bitmap", 3, 10, p, 2, &op));
    if (op) {
        float D[30] = {0};
        CHECK_OK(sm_op_to_dense(op, D));
        CHECK(D[0] == 1 && D[2] == 2 && D[8] == 3 && D[17] == 4 && D[20] == 5 && D[21] == 6 &&
              D[29] == 7);
        CHECK(sm_op_nparams(op) == 7 && sm_op_nbytes(op) == 6 + 28);
        sm_op_free(op);
    }
    mask[1] = 0x05; // a bit past column 9
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.2,format=bitmap", 3, 10, p, 2, &op),
               SM_ERR_FORMAT, "bits set past column 10");
    mask[1] = 0x03; // 8 set bits, 7 values
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.2,format=bitmap", 3, 10, p, 2, &op),
               SM_ERR_FORMAT, "part \"values\"");
    mask[1] = 0x01;
    vals[3] = INFINITY;
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.2,format=bitmap", 3, 10, p, 2, &op),
               SM_ERR_NUMERIC, "non-finite");
    vals[3] = 4;
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.2", 3, 10, p, 2, &op), SM_ERR_SPEC,
               "needs format=bitmap or format=csr");
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.2,format=bitmap", 3, 10, p, 1, &op),
               SM_ERR_FORMAT, "missing part \"values\"");
    // nm=1:2 on 2x4: exactly one bit per pair.
    uint8_t nm[2] = {0x09, 0x06};
    float nv[4] = {1, 2, 3, 4};
    sm_part q[2] = {mkpart("mask", SM_DTYPE_U8, 2, 2, 1, nm, 1),
                    mkpart("values", SM_DTYPE_F32, 2, 2, 2, nv, 4)};
    CHECK_OK(sm_op_from_parts("sparse:nm=1:2", 2, 4, q, 2, &op));
    sm_op_free(op);
    nm[1] = 0x0c;
    CHECK_FAIL(sm_op_from_parts("sparse:nm=1:2", 2, 4, q, 2, &op), SM_ERR_FORMAT,
               "row 1, group 0 has 0 entries");
    // CSR 2x5.
    int32_t ip[3] = {0, 2, 3};
    uint16_t ix[3] = {1, 4, 0};
    float cv[3] = {1, 2, 3};
    sm_part c[3] = {mkpart("indptr", SM_DTYPE_I32, 1, 3, 0, ip, 4),
                    mkpart("indices", SM_DTYPE_U16, 1, 3, 0, ix, 2),
                    mkpart("values", SM_DTYPE_F32, 1, 3, 0, cv, 4)};
    CHECK_OK(sm_op_from_parts("sparse:density=0.3,format=csr", 2, 5, c, 3, &op));
    sm_op_free(op);
    ix[1] = 5;
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.3,format=csr", 2, 5, c, 3, &op), SM_ERR_FORMAT,
               "row 0 has column 5");
    ix[1] = 1; // duplicate
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.3,format=csr", 2, 5, c, 3, &op), SM_ERR_FORMAT,
               "columns must increase");
    ix[1] = 4;
    ip[1] = 4; // decreasing
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.3,format=csr", 2, 5, c, 3, &op), SM_ERR_FORMAT,
               "indptr");
    ip[1] = 2, ip[0] = 1;
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.3,format=csr", 2, 5, c, 3, &op), SM_ERR_FORMAT,
               "does not start at 0");
    ip[0] = 0, ip[2] = 2; // indptr says 2 values, parts hold 3
    CHECK_FAIL(sm_op_from_parts("sparse:density=0.3,format=csr", 2, 5, c, 3, &op), SM_ERR_FORMAT,
               "part \"indices\"");
}

static void test_errors(void) {
    float W[8 * 12];
    fill_random(W, 96, 1);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse", NULL, &op), SM_ERR_SPEC, "needs density=D");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:density=0", NULL, &op), SM_ERR_SPEC, "density");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:density=1.5", NULL, &op), SM_ERR_SPEC, "density");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:density=0.5,ratio=0.5", NULL, &op), SM_ERR_SPEC,
               "not both");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:density=0.001", NULL, &op), SM_ERR_SPEC,
               "keeps no entry");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:nm=2:4,density=0.5", NULL, &op), SM_ERR_SPEC,
               "fixes the density");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:nm=3:2", NULL, &op), SM_ERR_SPEC, "1 <= N <= M");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:nm=0:2", NULL, &op), SM_ERR_SPEC, "1 <= N <= M");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:nm=2:5", NULL, &op), SM_ERR_SPEC,
               "M=5 to divide the 12 columns");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:nm=2", NULL, &op), SM_ERR_SPEC, "N:M");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:density=0.5,format=coo", NULL, &op), SM_ERR_SPEC,
               "format");
    CHECK_FAIL(sm_op_fit(W, 8, 12, "sparse:density=0.5,rank=3", NULL, &op), SM_ERR_SPEC, "rank");
}

// W = L0 (rank 3) + S0 (4% large spikes): the alternating fit of sparse+lowrank recovers it far
// better than the sequential fit (computed here from the separate structures), in either order.
static void test_sparse_plus_lowrank(void) {
    const int64_t m = 60, n = 50;
    float A[60 * 3], B[3 * 50], W[60 * 50], spikes[60 * 50];
    fill_random(A, m * 3, 31), fill_random(B, 3 * n, 32), fill_random(spikes, m * n, 33);
    matmul_ref(A, B, W, m, 3, n);
    for (int64_t i = 0; i < m * n; i++)
        if (fabsf(spikes[i]) > 0.96f) W[i] += 8 * spikes[i];
    // Sequential: S = top 4% of W, then L = rank 3 of W - S.
    sm_op *s = NULL, *l = NULL, *sum = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "sparse:density=0.04", NULL, &s));
    if (!s) return;
    float *S = dense_of(s), R[60 * 50], Seq[60 * 50];
    for (int64_t i = 0; i < m * n; i++) R[i] = W[i] - S[i];
    CHECK_OK(sm_op_fit(R, m, n, "lowrank:rank=3", NULL, &l));
    float *L = l ? dense_of(l) : NULL;
    for (int64_t i = 0; i < m * n && L; i++) Seq[i] = S[i] + L[i];
    double seq = rel_fro(Seq, W, m * n);
    const char *specs[] = {"sparse:density=0.04+lowrank:rank=3",
                           "lowrank:rank=3+sparse:density=0.04"};
    for (int k = 0; k < 2; k++) {
        CHECK_OK(sm_op_fit(W, m, n, specs[k], NULL, &sum));
        if (!sum) continue;
        float *D = dense_of(sum);
        double e = rel_fro(D, W, m * n);
        if (!(e < 0.01 && e < 0.1 * seq)) {
            fprintf(stderr, "%s: error %.4g, sequential sparse-then-lowrank %.4g\n", specs[k], e,
                    seq);
            g_failures++;
        }
        CHECK(strcmp(sm_op_spec(sum),
                     k == 0 ? "sparse:density=0.04,format=bitmap+lowrank:rank=3"
                            : "lowrank:rank=3+sparse:density=0.04,format=bitmap") == 0);
        free(D);
        sm_op_free(sum);
    }
    // On a matrix with no such structure the result is still never worse than sequential.
    fill_random(W, m * n, 40);
    CHECK_OK(sm_op_fit(W, m, n, "sparse:density=0.1+lowrank:rank=4", NULL, &sum));
    if (sum) {
        float *D = dense_of(sum);
        sm_op *s2 = NULL, *l2 = NULL;
        CHECK_OK(sm_op_fit(W, m, n, "sparse:density=0.1", NULL, &s2));
        float *S2 = dense_of(s2);
        for (int64_t i = 0; i < m * n; i++) R[i] = W[i] - S2[i];
        CHECK_OK(sm_op_fit(R, m, n, "lowrank:rank=4", NULL, &l2));
        float *L2 = dense_of(l2);
        for (int64_t i = 0; i < m * n; i++) Seq[i] = S2[i] + L2[i];
        CHECK(rel_fro(D, W, m * n) <= rel_fro(Seq, W, m * n) * (1 + 1e-6));
        free(D), free(S2), free(L2);
        sm_op_free(s2), sm_op_free(l2), sm_op_free(sum);
    }
    free(S), free(L);
    sm_op_free(s), sm_op_free(l);
}

int main(void) {
    test_selection();
    test_bytes();
    test_ls_update();
    test_kernels();
    test_hostile_parts();
    test_errors();
    test_sparse_plus_lowrank();
    TEST_END();
}
