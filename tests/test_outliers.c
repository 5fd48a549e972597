// keep-outliers=N of rtn, gptq and onebit (src/ops/outliers.c), against references written here:
// - the kept set is the N largest |w| (checked by brute force) and to_dense holds them exactly;
// - apply / apply_t equal a GEMM in double with the matrix decoded here from the stored parts
//   (codes, scales, zero points as docs/format.md lays them out) plus the kept values, for
//   N in {1, 64}, kept counts 1 and 64, with and without rotation (rotated: against to_dense);
// - with a diagonal Gram, GPTQ with kept weights is rtn with the same kept weights, bit for bit;
//   with a full Gram GPTQ's identity W0 - Q' = E U still holds (Q' with the kept values in
//   place, E = 0 there, U computed here by Cholesky in double);
// - onebit: apply equals the matrix decoded here from signs, a, b plus the kept values;
// - on heavy-tailed matrices keeping outliers lowers the error (rtn, onebit: Frobenius, gptq:
//   the calibration loss) at 2, 3 and 4 bits;
// - nbytes grows by exactly 8 bytes per kept weight and equals the parts' bytes; canonical specs;
//   parts and a saved file round-trip bit for bit;
// - invalid N (negative, not a number, more than m n) and broken parts give clear errors.
#include "ops/quant.h"
#include "testutil.h"

#include <unistd.h>

// W (m, n) with entries uniform in [-1, 1) and every 37th (pseudo-randomly) scaled by 10-40: a
// heavy-tailed matrix, as trained weights with outlier features are.
static float *heavy(int64_t m, int64_t n, unsigned seed) {
    float *W = malloc(sizeof(float) * (size_t)(m * n)), *u = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, seed);
    fill_random(u, m * n, seed + 1000);
    for (int64_t i = 0; i < m * n; i++)
        if ((i * 2654435761u >> 7) % 37 == 0) W[i] *= 10.0f + 30.0f * fabsf(u[i]);
    free(u);
    return W;
}

static sm_status fit_h(const float *W, int64_t m, int64_t n, const char *spec, const double *H,
                       sm_op **op) {
    sm_stats stats = {.gram = H, .sqsum = NULL, .tokens = 1000};
    sm_fit_opts o = {.seed = 7, .stats = H ? &stats : NULL};
    return sm_op_fit(W, m, n, spec, &o, op);
}

static const sm_part *find(const sm_part *p, int np, const char *name) {
    for (int i = 0; i < np; i++)
        if (strcmp(p[i].name, name) == 0) return &p[i];
    return NULL;
}

static unsigned code_at(const uint8_t *row, int64_t c, int bits) {
    unsigned v = 0;
    for (int b = 0; b < bits; b++) {
        int64_t bit = c * bits + b;
        v |= (unsigned)((row[bit / 8] >> (bit % 8)) & 1) << b;
    }
    return v;
}

// The matrix an unrotated rtn/gptq operator stores, decoded from its parts as docs/format.md
// describes them, with the kept values in place. Returns the kept indices (count *nk), malloc'd.
static float *decode_parts(const sm_op *op, int bits, int64_t G, bool sym, int32_t **kidx,
                           int64_t *nk) {
    int64_t m = sm_op_rows(op), n = sm_op_cols(op);
    sm_part *p;
    int np;
    CHECK_OK(sm_op_parts(op, &p, &np));
    const sm_part *codes = find(p, np, "codes"), *scales = find(p, np, "scales"),
                  *zeros = find(p, np, "zeros"), *oi = find(p, np, "outlier_index"),
                  *ov = find(p, np, "outlier_value");
    CHECK(codes && scales && (sym || zeros));
    float *D = calloc((size_t)(m * n), sizeof(float));
    size_t rb = (size_t)(n * bits + 7) / 8, zb = (size_t)((n / G) * bits + 7) / 8;
    for (int64_t r = 0; codes && scales && r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            const uint16_t *s = scales->data;
            unsigned q = code_at((const uint8_t *)codes->data + r * rb, c, bits);
            int z = sym ? 1 << (bits - 1)
                        : (int)code_at((const uint8_t *)zeros->data + r * zb, c / G, bits);
            D[r * n + c] = sm_f16_to_f32(s[r * (n / G) + c / G]) * (float)((int)q - z);
        }
    *nk = oi ? oi->shape[0] : 0;
    *kidx = malloc(sizeof(int32_t) * (size_t)(*nk + 1));
    if (oi && ov) {
        CHECK(oi->dtype == SM_DTYPE_I32 && ov->dtype == SM_DTYPE_F32 && ov->shape[0] == *nk);
        memcpy(*kidx, oi->data, sizeof(int32_t) * (size_t)*nk);
        for (int64_t k = 0; k < *nk; k++) D[(*kidx)[k]] = ((const float *)ov->data)[k];
    }
    free(p);
    return D;
}

static void gemm_ref(const float *W, int64_t m, int64_t n, int64_t N, const float *X, float *Y,
                     bool t) {
    int64_t in = t ? m : n, out = t ? n : m;
    for (int64_t i = 0; i < N; i++)
        for (int64_t o = 0; o < out; o++) {
            double acc = 0;
            for (int64_t k = 0; k < in; k++)
                acc += (double)X[i * in + k] * (double)(t ? W[k * n + o] : W[o * n + k]);
            Y[i * out + o] = (float)acc;
        }
}

static void check_apply(const sm_op *op, const float *D, const char *what) {
    int64_t m = sm_op_rows(op), n = sm_op_cols(op), big = m > n ? m : n;
    const int64_t Ns[] = {1, 64};
    for (int k = 0; k < 2; k++) {
        int64_t N = Ns[k];
        float *X = malloc(sizeof(float) * (size_t)(N * big)), *Y = malloc(sizeof(float) * (size_t)(N * big));
        float *R = malloc(sizeof(float) * (size_t)(N * big));
        char msg[200];
        fill_random(X, N * big, 50 + (unsigned)k);
        CHECK_OK(sm_op_apply(op, N, X, Y, NULL));
        gemm_ref(D, m, n, N, X, R, false);
        snprintf(msg, sizeof msg, "%s apply N=%lld", what, (long long)N);
        check_close(msg, Y, R, N * m, 2e-5);
        CHECK_OK(sm_op_apply_t(op, N, X, Y, NULL));
        gemm_ref(D, m, n, N, X, R, true);
        snprintf(msg, sizeof msg, "%s apply_t N=%lld", what, (long long)N);
        check_close(msg, Y, R, N * n, 2e-5);
        free(X), free(Y), free(R);
    }
}

// The kept set (idx, nk of them) is the `want` largest |w| of W, and D (to_dense) has W's
// values exactly there (rtn, and gptq when nothing propagates).
static void check_kept(const float *W, int64_t m, int64_t n, const int32_t *idx, int64_t nk,
                       int64_t want, const float *D, const char *what) {
    CHECK(nk == want);
    unsigned char *is = calloc((size_t)(m * n), 1);
    float kmin = INFINITY, rmax = 0;
    for (int64_t k = 0; k < nk; k++) {
        CHECK(idx[k] >= 0 && idx[k] < m * n && (k == 0 || idx[k] > idx[k - 1]));
        if (idx[k] < 0 || idx[k] >= m * n) continue;
        is[idx[k]] = 1;
        kmin = fminf(kmin, fabsf(W[idx[k]]));
        if (D[idx[k]] != W[idx[k]]) {
            fprintf(stderr, "%s: kept weight %d is %.9g in to_dense, %.9g in W\n", what, idx[k],
                    (double)D[idx[k]], (double)W[idx[k]]);
            g_failures++;
        }
    }
    for (int64_t i = 0; i < m * n; i++)
        if (!is[i]) rmax = fmaxf(rmax, fabsf(W[i]));
    if (nk && !(kmin >= rmax)) {
        fprintf(stderr, "%s: smallest kept |w| %.9g < largest other %.9g\n", what, (double)kmin,
                (double)rmax);
        g_failures++;
    }
    free(is);
}

static void test_rtn_apply_and_kept(void) {
    static const struct {
        const char *grid;
        int bits;
        int64_t G;
        bool sym;
    } grids[] = {{"bits=4,group=32", 4, 32, false}, {"bits=3,group=16,sym", 3, 16, true},
                 {"bits=2", 2, 64, false}, {"bits=8,group=24,sym", 8, 24, true}};
    const int64_t counts[] = {1, 64};
    int64_t m = 37, n = 192;
    float *W = heavy(m, n, 5);
    for (size_t g = 0; g < sizeof grids / sizeof *grids; g++)
        for (int c = 0; c < 2; c++) {
            char spec[96];
            snprintf(spec, sizeof spec, "rtn:%s,keep-outliers=%lld", grids[g].grid,
                     (long long)counts[c]);
            sm_op *op = NULL;
            CHECK_OK(sm_op_fit(W, m, n, spec, NULL, &op));
            if (!op) continue;
            int32_t *idx;
            int64_t nk;
            float *R = decode_parts(op, grids[g].bits, grids[g].G, grids[g].sym, &idx, &nk);
            float *D = malloc(sizeof(float) * (size_t)(m * n));
            CHECK_OK(sm_op_to_dense(op, D));
            check_close(spec, D, R, m * n, 1e-7); // to_dense = the parts' matrix
            check_kept(W, m, n, idx, nk, counts[c], D, spec);
            check_apply(op, R, spec);
            free(R), free(D), free(idx);
            sm_op_free(op);
        }
    // Rotated: the kept weights are exact in to_dense and apply agrees with it.
    for (int c = 0; c < 2; c++) {
        char spec[96];
        snprintf(spec, sizeof spec, "rtn:bits=3,group=32,rotate=hadamard,keep-outliers=%lld",
                 (long long)counts[c]);
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m - 5, n, spec, NULL, &op)); // 32 x 192: rows a power of two
        if (!op) continue;
        float *D = malloc(sizeof(float) * (size_t)((m - 5) * n));
        CHECK_OK(sm_op_to_dense(op, D));
        sm_part *p;
        int np;
        CHECK_OK(sm_op_parts(op, &p, &np));
        const sm_part *oi = find(p, np, "outlier_index");
        CHECK(oi != NULL);
        if (oi) check_kept(W, m - 5, n, oi->data, oi->shape[0], counts[c], D, spec);
        check_apply(op, D, spec);
        free(p), free(D);
        sm_op_free(op);
    }
    free(W);
}

// onebit: W[r][c] = (+-1) a[r] b[c] from the parts, kept values in place.
static float *decode_onebit(const sm_op *op, int32_t **kidx, int64_t *nk) {
    int64_t m = sm_op_rows(op), n = sm_op_cols(op);
    sm_part *p;
    int np;
    CHECK_OK(sm_op_parts(op, &p, &np));
    const sm_part *sg = find(p, np, "signs"), *a = find(p, np, "a"), *b = find(p, np, "b"),
                  *oi = find(p, np, "outlier_index"), *ov = find(p, np, "outlier_value");
    float *D = calloc((size_t)(m * n), sizeof(float));
    CHECK(sg && a && b && oi && ov);
    *nk = oi ? oi->shape[0] : 0;
    *kidx = malloc(sizeof(int32_t) * (size_t)(*nk + 1));
    if (sg && a && b && oi && ov) {
        size_t rb = (size_t)(n + 7) / 8;
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < n; c++) {
                float w = sm_f16_to_f32(((const uint16_t *)a->data)[r]) *
                          sm_f16_to_f32(((const uint16_t *)b->data)[c]);
                bool pos = (((const uint8_t *)sg->data)[r * rb + c / 8] >> (c % 8)) & 1;
                D[r * n + c] = pos ? w : -w;
            }
        memcpy(*kidx, oi->data, sizeof(int32_t) * (size_t)*nk);
        for (int64_t k = 0; k < *nk; k++) D[(*kidx)[k]] = ((const float *)ov->data)[k];
    }
    free(p);
    return D;
}

static void test_onebit(void) {
    int64_t m = 40, n = 96;
    float *W = heavy(m, n, 17), *D = malloc(sizeof(float) * (size_t)(m * n));
    double e0 = NAN;
    sm_op *plain = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "onebit", NULL, &plain));
    if (plain) {
        CHECK_OK(sm_op_to_dense(plain, D));
        e0 = rel_fro(D, W, m * n);
    }
    const int64_t counts[] = {1, 64};
    for (int c = 0; c < 2; c++) {
        char spec[64];
        snprintf(spec, sizeof spec, "onebit:keep-outliers=%lld", (long long)counts[c]);
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, spec, NULL, &op));
        if (!op) continue;
        CHECK(strcmp(sm_op_spec(op), spec) == 0);
        int32_t *idx;
        int64_t nk;
        float *R = decode_onebit(op, &idx, &nk);
        CHECK_OK(sm_op_to_dense(op, D));
        check_close(spec, D, R, m * n, 1e-7);
        check_kept(W, m, n, idx, nk, counts[c], D, spec);
        check_apply(op, R, spec);
        double e = rel_fro(D, W, m * n);
        if (!(e < e0)) {
            fprintf(stderr, "%s: error %.4g, without kept weights %.4g\n", spec, e, e0);
            g_failures++;
        }
        if (plain) CHECK(sm_op_nbytes(op) == sm_op_nbytes(plain) + 8 * counts[c]);
        sm_part *parts;
        int np;
        sm_op *re = NULL;
        CHECK_OK(sm_op_parts(op, &parts, &np));
        size_t total = 0;
        for (int i = 0; i < np; i++) total += parts[i].nbytes;
        CHECK((int64_t)total == sm_op_nbytes(op));
        CHECK_OK(sm_op_from_parts(sm_op_spec(op), m, n, parts, np, &re));
        if (re) {
            float *D2 = malloc(sizeof(float) * (size_t)(m * n));
            CHECK_OK(sm_op_to_dense(re, D2));
            CHECK(memcmp(D, D2, sizeof(float) * (size_t)(m * n)) == 0);
            free(D2);
        }
        free(parts), free(R), free(idx);
        sm_op_free(op), sm_op_free(re);
    }
    sm_op *bad = NULL;
    CHECK_FAIL(sm_op_fit(W, m, n, "onebit:keep-outliers=3841", NULL, &bad), SM_ERR_SPEC,
               "more than the 3840 weights");
    sm_op_free(plain);
    free(W), free(D);
}

// H = X^T X of inputs with channels of different scales and correlated neighbours.
static double *gram(int64_t n, unsigned seed) {
    int64_t N = 4 * n;
    float *X = malloc(sizeof(float) * (size_t)(N * n));
    fill_random(X, N * n, seed);
    for (int64_t t = 0; t < N; t++)
        for (int64_t i = n - 1; i > 0; i--)
            X[t * n + i] = X[t * n + i] * (float)(1 + i % 7) + 0.6f * X[t * n + i - 1];
    double *H = calloc((size_t)(n * n), sizeof(double));
    for (int64_t t = 0; t < N; t++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) H[i * n + j] += (double)X[t * n + i] * X[t * n + j];
    free(X);
    return H;
}

static void test_gptq_diag_equals_rtn(void) {
    int64_t m = 24, n = 128;
    float *W = heavy(m, n, 9);
    double *H = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < n; i++) H[i * n + i] = 1.0 + (double)(i % 5);
    const char *grids[] = {"bits=4,group=32", "bits=2,group=64,sym"};
    for (int g = 0; g < 2; g++)
        for (int act = 0; act < 2; act++) {
            char s1[128], s2[128];
            snprintf(s1, sizeof s1, "rtn:%s,keep-outliers=40", grids[g]);
            snprintf(s2, sizeof s2, "gptq:%s,damp=0%s,keep-outliers=40", grids[g],
                     act ? ",actorder" : "");
            sm_op *a = NULL, *b = NULL;
            CHECK_OK(sm_op_fit(W, m, n, s1, NULL, &a));
            CHECK_OK(fit_h(W, m, n, s2, H, &b));
            if (a && b) {
                float *Da = malloc(sizeof(float) * (size_t)(m * n));
                float *Db = malloc(sizeof(float) * (size_t)(m * n));
                CHECK_OK(sm_op_to_dense(a, Da));
                CHECK_OK(sm_op_to_dense(b, Db));
                CHECK(memcmp(Da, Db, sizeof(float) * (size_t)(m * n)) == 0);
                int32_t *idx;
                int64_t nk;
                float *R = decode_parts(b, g ? 2 : 4, g ? 64 : 32, g == 1, &idx, &nk);
                check_kept(W, m, n, idx, nk, 40, Db, s2); // no propagation: kept = original
                check_apply(b, R, s2);
                free(Da), free(Db), free(R), free(idx);
            }
            sm_op_free(a), sm_op_free(b);
        }
    free(W), free(H);
}

// Lower Cholesky A = L L^T in place (double); false when not positive definite.
static bool chol(double *A, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (int64_t k = 0; k < j; k++) d -= A[j * n + k] * A[j * n + k];
        if (!(d > 0)) return false;
        A[j * n + j] = sqrt(d);
        for (int64_t i = j + 1; i < n; i++) {
            double s = A[i * n + j];
            for (int64_t k = 0; k < j; k++) s -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = s / A[j * n + j];
        }
        for (int64_t k = j + 1; k < n; k++) A[j * n + k] = 0;
    }
    return true;
}

static void test_gptq_identity(void) {
    int64_t m = 20, n = 96;
    float *W = heavy(m, n, 13);
    double *H = gram(n, 21);
    sm_qspec qs = {.bits = 3, .group = 32};
    sm_qmat q;
    CHECK_OK(sm_qmat_alloc(&q, m, n, qs.bits, qs.group, qs.sym));
    // keep: the 30 largest |w| (chosen here by sorting a copy)
    uint8_t *keep = calloc((size_t)(m * n), 1);
    float *kept = malloc(sizeof(float) * (size_t)(m * n)), *E = malloc(sizeof(float) * (size_t)(m * n));
    for (int k = 0; k < 30; k++) {
        int64_t best = -1;
        for (int64_t i = 0; i < m * n; i++)
            if (!keep[i] && (best < 0 || fabsf(W[i]) > fabsf(W[best]))) best = i;
        keep[best] = 1;
    }
    sm_gptq_info info;
    int64_t perm[96];
    CHECK_OK(sm_gptq_quantize_keep(W, m, n, H, &qs, 0.01, false, keep, kept, &q, E, perm, &info));
    for (int64_t i = 0; i < n; i++) CHECK(perm[i] == i);
    // U: (H + lambda I) = L L^T, inv = L^-T L^-1; U upper with inv = U^T U, U = chol(inv)^T.
    double *A = malloc(sizeof(double) * (size_t)(n * n)), *Inv = calloc((size_t)(n * n), sizeof(double));
    memcpy(A, H, sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++) A[i * n + i] += info.lambda;
    CHECK(chol(A, n));
    for (int64_t c = 0; c < n; c++) { // column c of inv: solve L L^T x = e_c
        double *x = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            double s = i == c ? 1.0 : 0.0;
            for (int64_t k = 0; k < i; k++) s -= A[i * n + k] * x[k];
            x[i] = s / A[i * n + i];
        }
        for (int64_t i = n - 1; i >= 0; i--) {
            double s = x[i];
            for (int64_t k = i + 1; k < n; k++) s -= A[k * n + i] * x[k];
            x[i] = s / A[i * n + i];
        }
        for (int64_t i = 0; i < n; i++) Inv[i * n + c] = x[i];
        free(x);
    }
    CHECK(chol(Inv, n)); // Inv = L2 L2^T, U = L2^T: U[i][j] = Inv[j][i]
    double maxw = 0, maxd = 0;
    for (int64_t r = 0; r < m; r++)
        for (int64_t j = 0; j < n; j++) {
            sm_qgrid g = sm_qmat_grid(&q, r, j / qs.group);
            int code = (int)code_at(q.codes + r * q.rb, j, qs.bits);
            double qv = keep[r * n + j] ? kept[r * n + j] : g.s * (float)(code - g.z);
            double eu = 0;
            for (int64_t k = 0; k <= j; k++) eu += (double)E[r * n + k] * Inv[j * n + k];
            maxd = fmax(maxd, fabs((double)W[r * n + j] - qv - eu));
            maxw = fmax(maxw, fabs((double)W[r * n + j]));
            if (keep[r * n + j]) CHECK(E[r * n + j] == 0);
        }
    if (!(maxd <= 1e-4 * maxw)) {
        fprintf(stderr, "gptq keep: |W0 - Q' - E U| max %.3g (max |W0| %.3g)\n", maxd, maxw);
        g_failures++;
    }
    sm_qmat_free(&q);
    free(W), free(H), free(keep), free(kept), free(E), free(A), free(Inv);
}

static double calib_loss(const float *W, const float *D, int64_t m, int64_t n, const double *H) {
    double t = 0;
    double *d = malloc(sizeof(double) * (size_t)n);
    for (int64_t r = 0; r < m; r++) {
        for (int64_t j = 0; j < n; j++) d[j] = (double)W[r * n + j] - D[r * n + j];
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++) s += H[i * n + j] * d[j];
            t += d[i] * s;
        }
    }
    free(d);
    return t;
}

static void test_error_lower(void) {
    int64_t m = 48, n = 256;
    float *W = heavy(m, n, 31);
    double *H = gram(n, 41);
    float *D = malloc(sizeof(float) * (size_t)(m * n));
    const int bits[] = {2, 3, 4};
    for (int b = 0; b < 3; b++) {
        double e[2][2]; // [rtn, gptq][without, with]
        for (int g = 0; g < 2; g++)
            for (int k = 0; k < 2; k++) {
                char spec[96];
                snprintf(spec, sizeof spec, "%s:bits=%d%s", g ? "gptq" : "rtn", bits[b],
                         k ? ",keep-outliers=64" : "");
                sm_op *op = NULL;
                CHECK_OK(fit_h(W, m, n, spec, g ? H : NULL, &op));
                e[g][k] = NAN;
                if (!op) continue;
                CHECK_OK(sm_op_to_dense(op, D));
                e[g][k] = g ? calib_loss(W, D, m, n, H) : rel_fro(D, W, m * n);
                sm_op_free(op);
            }
        if (!(e[0][1] < e[0][0]) || !(e[1][1] < e[1][0])) {
            fprintf(stderr, "%d bits: rtn error %.4g -> %.4g, gptq loss %.4g -> %.4g with 64 "
                    "kept\n", bits[b], e[0][0], e[0][1], e[1][0], e[1][1]);
            g_failures++;
        }
    }
    free(W), free(H), free(D);
}

static void test_bytes_spec_roundtrip(void) {
    int64_t m = 32, n = 128;
    float *W = heavy(m, n, 77);
    double *H = gram(n, 3);
    static const struct {
        const char *spec, *canon;
    } cases[] = {
        {"rtn:keep-outliers=8,bits=4", "rtn:bits=4,group=64,keep-outliers=8"},
        {"rtn:bits=3,rotate=hadamard,keep-outliers=64,sym", "rtn:bits=3,group=64,sym,rotate=hadamard,keep-outliers=64"},
        {"gptq:bits=2,group=32,keep-outliers=5,actorder", "gptq:bits=2,group=32,actorder,keep-outliers=5"},
        {"rtn:bits=4,keep-outliers=0", "rtn:bits=4,group=64"},
        {"rtn:bits=4,group=32,keep-outliers=3+lowrank:rank=2", "rtn:bits=4,group=32,keep-outliers=3+lowrank:rank=2"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        sm_op *op = NULL, *base = NULL, *re = NULL;
        CHECK_OK(fit_h(W, m, n, cases[c].spec, H, &op));
        if (!op) continue;
        if (strcmp(sm_op_spec(op), cases[c].canon) != 0) {
            fprintf(stderr, "canonical %s, expected %s\n", sm_op_spec(op), cases[c].canon);
            g_failures++;
        }
        sm_spec *sp = NULL;
        CHECK_OK(sm_spec_parse(sm_op_spec(op), &sp));
        if (sp) {
            char *txt = sm_spec_print(sp);
            CHECK(strcmp(txt, cases[c].canon) == 0);
            free(txt);
            sm_spec_free(sp);
        }
        // nbytes: 8 more per kept weight than the same spec without them; the parts' bytes
        const char *ko = strstr(cases[c].spec, "keep-outliers=");
        long long N = ko ? atoll(ko + 14) : 0;
        char plain[128];
        snprintf(plain, sizeof plain, "%s", cases[c].canon);
        char *p = strstr(plain, ",keep-outliers=");
        if (p) {
            char *e = p + 15;
            while (*e >= '0' && *e <= '9') e++;
            memmove(p, e, strlen(e) + 1);
        }
        CHECK_OK(fit_h(W, m, n, plain, H, &base));
        if (base) {
            CHECK(sm_op_nbytes(op) == sm_op_nbytes(base) + 8 * N);
            CHECK(sm_op_nparams(op) == sm_op_nparams(base) + N);
        }
        sm_part *parts;
        int np;
        CHECK_OK(sm_op_parts(op, &parts, &np));
        size_t total = 0;
        for (int i = 0; i < np; i++) total += parts[i].nbytes;
        CHECK((int64_t)total == sm_op_nbytes(op));
        CHECK_OK(sm_op_from_parts(sm_op_spec(op), m, n, parts, np, &re));
        float *D1 = malloc(sizeof(float) * (size_t)(m * n)), *D2 = malloc(sizeof(float) * (size_t)(m * n));
        if (re) {
            CHECK_OK(sm_op_to_dense(op, D1));
            CHECK_OK(sm_op_to_dense(re, D2));
            CHECK(memcmp(D1, D2, sizeof(float) * (size_t)(m * n)) == 0);
            float X[128], Y1[32], Y2[32];
            fill_random(X, n, 5);
            CHECK_OK(sm_op_apply(op, 1, X, Y1, NULL));
            CHECK_OK(sm_op_apply(re, 1, X, Y2, NULL));
            CHECK(memcmp(Y1, Y2, sizeof Y1) == 0);
        }
        // Through a saved file.
        char path[64];
        snprintf(path, sizeof path, "/tmp/test_outliers_%d.safetensors", (int)getpid());
        const char *names[] = {"x.weight"};
        const sm_op *ops[] = {op};
        CHECK_OK(sm_ops_save(path, 1, names, ops, true));
        sm_st *st = NULL;
        sm_op *lo = NULL;
        CHECK_OK(sm_st_open(path, &st));
        if (st) CHECK_OK(sm_op_load(st, "x.weight", &lo));
        if (lo) {
            CHECK(strcmp(sm_op_spec(lo), cases[c].canon) == 0);
            CHECK_OK(sm_op_to_dense(lo, D2));
            CHECK(memcmp(D1, D2, sizeof(float) * (size_t)(m * n)) == 0);
        }
        sm_op_free(lo);
        sm_st_close(st);
        unlink(path);
        free(D1), free(D2), free(parts);
        sm_op_free(op), sm_op_free(base), sm_op_free(re);
    }
    free(W), free(H);
}

static void test_errors(void) {
    int64_t m = 8, n = 64;
    float W[8 * 64];
    fill_random(W, m * n, 1);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, m, n, "rtn:bits=4,keep-outliers=-1", NULL, &op), SM_ERR_SPEC,
               "keep-outliers=-1: expected a whole number N >= 0");
    CHECK_FAIL(sm_op_fit(W, m, n, "rtn:bits=4,keep-outliers=1.5", NULL, &op), SM_ERR_SPEC,
               "expected a whole number");
    CHECK_FAIL(sm_op_fit(W, m, n, "rtn:bits=4,keep-outliers", NULL, &op), SM_ERR_SPEC,
               "keep-outliers");
    CHECK_FAIL(sm_op_fit(W, m, n, "rtn:bits=4,keep-outliers=513", NULL, &op), SM_ERR_SPEC,
               "keep-outliers=513 is more than the 512 weights of a 8x64 matrix");
    double H[64 * 64] = {0};
    for (int i = 0; i < 64; i++) H[i * 64 + i] = 1;
    CHECK_FAIL(fit_h(W, m, n, "gptq:bits=4,keep-outliers=600", H, &op), SM_ERR_SPEC,
               "more than the 512 weights");
    // All of them kept: the matrix exactly.
    CHECK_OK(sm_op_fit(W, m, n, "rtn:bits=2,keep-outliers=512", NULL, &op));
    if (op) {
        float D[8 * 64];
        CHECK_OK(sm_op_to_dense(op, D));
        CHECK(memcmp(D, W, sizeof D) == 0);
        // Broken parts: missing, out of order, non-finite.
        sm_part *parts;
        int np;
        CHECK_OK(sm_op_parts(op, &parts, &np));
        sm_op *re = NULL;
        CHECK_FAIL(sm_op_from_parts(sm_op_spec(op), m, n, parts, np - 2, &re), SM_ERR_FORMAT,
                   "outlier_index");
        const sm_part *oi = find(parts, np, "outlier_index"), *ov = find(parts, np, "outlier_value");
        int32_t idx[512];
        float val[512];
        if (oi && ov) {
            memcpy(idx, oi->data, sizeof idx);
            memcpy(val, ov->data, sizeof val);
            for (int i = 0; i < np; i++)
                if (&parts[i] == oi) parts[i].data = idx;
                else if (&parts[i] == ov) parts[i].data = val;
            idx[3] = idx[2];
            CHECK_FAIL(sm_op_from_parts(sm_op_spec(op), m, n, parts, np, &re), SM_ERR_FORMAT,
                       "not above the one before it");
            idx[3] = 512;
            CHECK_FAIL(sm_op_from_parts(sm_op_spec(op), m, n, parts, np, &re), SM_ERR_FORMAT,
                       "out of range");
            idx[3] = 3;
            val[7] = NAN;
            CHECK_FAIL(sm_op_from_parts(sm_op_spec(op), m, n, parts, np, &re), SM_ERR_NUMERIC,
                       "outlier_value");
            val[7] = 0;
            // The spec's count must match the parts' length.
            CHECK_FAIL(sm_op_from_parts("rtn:bits=2,group=64,keep-outliers=511", m, n, parts, np,
                                        &re), SM_ERR_FORMAT, "outlier_index");
        }
        free(parts);
        sm_op_free(op);
    }
}

int main(void) {
    test_rtn_apply_and_kept();
    test_gptq_diag_equals_rtn();
    test_onebit();
    test_gptq_identity();
    test_error_lower();
    test_bytes_spec_roundtrip();
    test_errors();
    TEST_END();
}
