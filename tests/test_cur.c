// cur: C and R are W's own columns and rows at the stored indices; U equals C^+ W R^+ computed
// here by the normal equations in double; DEIM and leverage indices equal selections recomputed
// here from a double SVD; a rank-R matrix is reproduced exactly; the error is no better than
// Eckart-Young and not far from it; sizes, ratio, errors, hostile parts.
#include "linalg/linalg.h"
#include "testutil.h"

#include <lapacke.h>

static const sm_part *part(const sm_part *p, int np, const char *name) {
    for (int i = 0; i < np; i++)
        if (strcmp(p[i].name, name) == 0) return &p[i];
    fprintf(stderr, "no part %s\n", name);
    g_failures++;
    return NULL;
}

// W = A diag(0.7^k) B + noise: a decaying spectrum, so singular vectors are well separated.
static void make_matrix(float *W, int64_t m, int64_t n, unsigned seed) {
    int64_t k = m < n ? m : n;
    float *A = malloc(sizeof(float) * (size_t)(m * k)),
          *B = malloc(sizeof(float) * (size_t)(k * n));
    fill_random(A, m * k, seed), fill_random(B, k * n, seed + 1);
    for (int64_t t = 0; t < k; t++)
        for (int64_t j = 0; j < n; j++) B[t * n + j] *= (float)pow(0.7, (double)t);
    matmul_ref(A, B, W, m, k, n);
    free(A), free(B);
}

static int cmp_int(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

// DEIM on the columns of V (len, r) in double, written independently of the library.
static void deim_ref(const double *V, int len, int r, int *out) {
    double *res = malloc(sizeof(double) * (size_t)len);
    for (int j = 0; j < r; j++) {
        double A[64 * 64], c[64];
        int piv[64];
        for (int a = 0; a < j; a++) {
            c[a] = V[out[a] * r + j];
            for (int b = 0; b < j; b++) A[a * j + b] = V[out[a] * r + b];
        }
        if (j) LAPACKE_dgesv(LAPACK_ROW_MAJOR, j, 1, A, j, piv, c, 1);
        int arg = 0;
        for (int i = 0; i < len; i++) {
            res[i] = V[i * r + j];
            for (int b = 0; b < j; b++) res[i] -= V[i * r + b] * c[b];
            if (fabs(res[i]) > fabs(res[arg])) arg = i;
        }
        out[j] = arg;
    }
    free(res);
    qsort(out, (size_t)r, sizeof(int), cmp_int);
}

static void lev_ref(const double *V, int len, int r, int *out) {
    double *s = malloc(sizeof(double) * (size_t)len);
    for (int i = 0; i < len; i++) {
        s[i] = 0;
        for (int t = 0; t < r; t++) s[i] += V[i * r + t] * V[i * r + t];
    }
    for (int j = 0; j < r; j++) {
        int arg = -1;
        for (int i = 0; i < len; i++)
            if (s[i] >= 0 && (arg < 0 || s[i] > s[arg])) arg = i;
        out[j] = arg;
        s[arg] = -1;
    }
    free(s);
    qsort(out, (size_t)r, sizeof(int), cmp_int);
}

static void test_parts_and_u(void) {
    const int m = 40, n = 30, r = 6;
    float W[40 * 30];
    make_matrix(W, m, n, 3);
    double Wd[40 * 30], U[40 * 30], S[30], Vt[30 * 30];
    for (int i = 0; i < m * n; i++) Wd[i] = W[i];
    CHECK_OK(sm_svd_f64(Wd, m, n, U, S, Vt));
    double Vr[30 * 6], Ur[40 * 6];
    for (int j = 0; j < n; j++)
        for (int t = 0; t < r; t++) Vr[j * r + t] = Vt[t * n + j];
    for (int i = 0; i < m; i++)
        for (int t = 0; t < r; t++) Ur[i * r + t] = U[i * n + t];
    for (int sel = 0; sel < 2; sel++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, sel ? "cur:rank=6,select=leverage" : "cur:rank=6", NULL, &op));
        if (!op) continue;
        sm_part *p;
        int np;
        CHECK_OK(sm_op_parts(op, &p, &np));
        const sm_part *pc = part(p, np, "cols"), *pr = part(p, np, "rows");
        const sm_part *C = part(p, np, "C"), *R = part(p, np, "R"), *Up = part(p, np, "U");
        if (!pc || !pr || !C || !R || !Up) continue;
        const int32_t *cols = pc->data, *rows = pr->data;
        int cref[6], rref[6];
        if (sel) {
            lev_ref(Vr, n, r, cref), lev_ref(Ur, m, r, rref);
        } else {
            deim_ref(Vr, n, r, cref), deim_ref(Ur, m, r, rref);
        }
        for (int k = 0; k < r; k++)
            if (cols[k] != cref[k] || rows[k] != rref[k]) {
                fprintf(stderr, "%s: index %d: cols %d rows %d, expected %d %d\n", sm_op_spec(op),
                        k, cols[k], rows[k], cref[k], rref[k]);
                g_failures++;
                break;
            }
        const float *c = C->data, *rr = R->data, *u = Up->data;
        for (int i = 0; i < m; i++)
            for (int k = 0; k < r; k++) CHECK(c[i * r + k] == W[i * n + cols[k]]);
        for (int k = 0; k < r; k++)
            for (int j = 0; j < n; j++) CHECK(rr[k * n + j] == W[rows[k] * n + j]);
        // (C^T C) U (R R^T) = C^T W R^T: G1 U G2 = B, by two Cholesky solves.
        double G1[36] = {0}, G2[36] = {0}, WRt[40 * 6] = {0}, B[36] = {0};
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++) {
                for (int i = 0; i < m; i++) G1[a * r + b] += (double)c[i * r + a] * c[i * r + b];
                for (int j = 0; j < n; j++) G2[a * r + b] += (double)rr[a * n + j] * rr[b * n + j];
            }
        for (int i = 0; i < m; i++)
            for (int b = 0; b < r; b++)
                for (int j = 0; j < n; j++) WRt[i * r + b] += Wd[i * n + j] * rr[b * n + j];
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++)
                for (int i = 0; i < m; i++) B[a * r + b] += c[i * r + a] * WRt[i * r + b];
        CHECK(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'L', r, r, G1, r, B, r) == 0); // B = G1^-1 B
        double Bt[36];
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++) Bt[a * r + b] = B[b * r + a];
        CHECK(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'L', r, r, G2, r, Bt, r) == 0); // U^T
        float Uref[36];
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++) Uref[a * r + b] = (float)Bt[b * r + a];
        check_close("cur U = C^+ W R^+", u, Uref, r * r, 1e-4);
        // Sizes.
        CHECK(sm_op_nparams(op) == r * (m + n) + r * r && sm_op_macs(op) == sm_op_nparams(op));
        CHECK(sm_op_nbytes(op) == 4 * (r * (m + n) + r * r) + 8 * r);
        // No better than the optimum, and not far from it on this spectrum.
        float D[40 * 30];
        CHECK_OK(sm_op_to_dense(op, D));
        double tail = 0, all = 0;
        for (int k = 0; k < n; k++) all += S[k] * S[k], tail += k >= r ? S[k] * S[k] : 0;
        double e = rel_fro(D, W, m * n), opt = sqrt(tail / all);
        CHECK(e >= opt * (1 - 1e-5) && e < 3 * opt);
        free(p);
        sm_op_free(op);
    }
}

static void test_exact_and_sizes(void) {
    const int m = 36, n = 28, r = 5;
    float A[36 * 5], B[5 * 28], W[36 * 28], D[36 * 28];
    fill_random(A, m * r, 11), fill_random(B, r * n, 12);
    matmul_ref(A, B, W, m, r, n);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "cur:rank=5", NULL, &op));
    if (op) {
        CHECK_OK(sm_op_to_dense(op, D));
        CHECK(rel_fro(D, W, m * n) < 1e-4);
        sm_op_free(op);
    }
    CHECK_OK(sm_op_fit(W, m, n, "cur:ratio=0.5,dtype=f16", NULL, &op));
    if (op) { // 64 r + r^2 <= 504: r = 7 (497)
        CHECK(strcmp(sm_op_spec(op), "cur:rank=7,dtype=f16") == 0);
        CHECK(sm_op_nbytes(op) == 2 * 7 * (36 + 28) + 4 * 49 + 8 * 7);
        sm_op_free(op);
    }
}

static sm_part mk(const char *name, sm_dtype dt, int ndim, int64_t a, int64_t b, const void *d,
                  size_t es) {
    sm_part p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.dtype = dt, p.ndim = ndim, p.shape[0] = a, p.shape[1] = ndim > 1 ? b : 0, p.data = d;
    p.nbytes = (size_t)(a * (ndim > 1 ? b : 1)) * es;
    return p;
}

static void test_errors(void) {
    float W[12 * 10];
    fill_random(W, 120, 2);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 12, 10, "cur", NULL, &op), SM_ERR_SPEC, "needs rank=R");
    CHECK_FAIL(sm_op_fit(W, 12, 10, "cur:rank=11", NULL, &op), SM_ERR_SPEC, "rank=11 is too large");
    CHECK_FAIL(sm_op_fit(W, 12, 10, "cur:rank=2,ratio=0.5", NULL, &op), SM_ERR_SPEC, "not both");
    CHECK_FAIL(sm_op_fit(W, 12, 10, "cur:ratio=0.1", NULL, &op), SM_ERR_SPEC, "no room for rank 1");
    CHECK_FAIL(sm_op_fit(W, 12, 10, "cur:rank=2,select=random", NULL, &op), SM_ERR_SPEC, "select");
    float C[12 * 2], U[4], R[2 * 10];
    int32_t cols[2] = {3, 7}, rows[2] = {0, 11};
    fill_random(C, 24, 1), fill_random(U, 4, 2), fill_random(R, 20, 3);
    sm_part p[5] = {mk("C", SM_DTYPE_F32, 2, 12, 2, C, 4), mk("U", SM_DTYPE_F32, 2, 2, 2, U, 4),
                    mk("R", SM_DTYPE_F32, 2, 2, 10, R, 4),
                    mk("cols", SM_DTYPE_I32, 1, 2, 0, cols, 4),
                    mk("rows", SM_DTYPE_I32, 1, 2, 0, rows, 4)};
    CHECK_OK(sm_op_from_parts("cur:rank=2", 12, 10, p, 5, &op));
    sm_op_free(op);
    cols[1] = 10;
    CHECK_FAIL(sm_op_from_parts("cur:rank=2", 12, 10, p, 5, &op), SM_ERR_FORMAT,
               "part \"cols\": index 1 is 10");
    cols[1] = 3;
    CHECK_FAIL(sm_op_from_parts("cur:rank=2", 12, 10, p, 5, &op), SM_ERR_FORMAT, "must increase");
    cols[1] = 7;
    CHECK_FAIL(sm_op_from_parts("cur:rank=2", 12, 10, p, 4, &op), SM_ERR_FORMAT,
               "missing part \"rows\"");
    CHECK_FAIL(sm_op_from_parts("cur:ratio=0.5", 12, 10, p, 5, &op), SM_ERR_SPEC, "needs rank=");
}

int main(void) {
    test_parts_and_u();
    test_exact_and_sizes();
    test_errors();
    TEST_END();
}
