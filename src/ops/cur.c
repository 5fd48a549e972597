// cur:rank=R|ratio=X[,select=deim|leverage][,dtype=..]
// W ~ C U R with C = W[:, J] (m, R) actual columns of W, R = W[I, :] (R, n) actual rows, and the
// linking matrix U = C^+ W R^+ (R, R), the Frobenius-optimal U for those C and R.
// The indices come from the leading R singular vectors of W (exact SVD):
// - select=deim (default): discrete empirical interpolation (Sorensen & Embree 2016) on the right
//   singular vectors for J and on the left ones for I: each next index is where the residual of
//   the next vector, interpolated at the indices so far, is largest;
// - select=leverage: the R largest leverage scores sum_{t<R} V[j][t]^2 (columns) and
//   sum_{t<R} U[i][t]^2 (rows), deterministic top-R (ties to the lower index).
// Pseudo-inverses drop singular values below 1e-6 of the largest.
// nparams = macs = R (m + n) + R^2; apply is y = C (U (R x)).
// Parts: "C" (m, R), "U" (R, R) F32, "R" (R, n), "cols" I32 (R) = J, "rows" I32 (R) = I, both
// increasing (C's columns and R's rows in that order). dtype (f32, f16, bf16, q8, q4) stores C and
// R; U stays F32 (pseudo-inverse entries have a wide range). nbytes counts all five parts.
// With calibration statistics (sm_fit_opts.stats) the indices are still chosen from the plain
// SVD of W (the columns of C must be columns of W, and a whitened SVD's right vectors live in
// whitened coordinates, not W's columns), but U minimises the activation objective
// tr(dW (H + lambda I) dW^T) for those C and R: with H + lambda I = L L^T,
// U = C^+ (W L) (R L)^+, the least-squares solution on whitened rows (sm_act_whiten).
#include "actaware.h"
#include "op_impl.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cur {
    int64_t r;
    sm_factor C, U, R;    // (m, r), (r, r) f32, (r, n)
    int32_t *cols, *rows; // (r) each
} cur;

#define CU(op) ((cur *)(op)->impl)

static void cur_free(void *impl) {
    cur *c = impl;
    sm_factor_free(&c->C), sm_factor_free(&c->U), sm_factor_free(&c->R);
    sm_free(c->cols), sm_free(c->rows);
    free(c);
}

// rank= or ratio= (the largest R with R (m + n) + R^2 <= X m n), 1 <= R <= min(m, n).
static sm_status cur_rank(const sm_term *t, int64_t m, int64_t n, bool loading, int64_t *r) {
    int64_t k = m < n ? m : n;
    bool has_rank = sm_term_find(t, "rank"), has_ratio = sm_term_find(t, "ratio");
    if (has_rank && has_ratio) return sm_fail(SM_ERR_SPEC, "cur: give rank= or ratio=, not both");
    if (loading && !has_rank) return sm_fail(SM_ERR_SPEC, "cur: a stored spec needs rank=");
    if (!has_rank && !has_ratio)
        return sm_fail(SM_ERR_SPEC, "cur: needs rank=R or ratio=X (0 < X <= 1)");
    if (has_rank) {
        sm_status st = sm_term_int(t, "rank", 0, 1, INT64_MAX, r);
        if (st == SM_OK && *r > k)
            st = sm_fail(SM_ERR_SPEC,
                         "cur: rank=%lld is too large for a %lldx%lld matrix (at "
                         "most %lld)",
                         (long long)*r, (long long)m, (long long)n, (long long)k);
        return st;
    }
    double x;
    sm_status st = sm_term_real(t, "ratio", 0, 1e-12, 1.0, &x);
    if (st != SM_OK) return st;
    double budget = x * (double)m * (double)n + 1e-9, s = (double)(m + n);
    int64_t v = (int64_t)floor((-s + sqrt(s * s + 4 * budget)) / 2);
    while (v > 0 && (double)v * s + (double)v * v > budget) v--;
    while ((double)(v + 1) * s + (double)(v + 1) * (v + 1) <= budget) v++;
    if (v > k) v = k;
    if (v < 1)
        return sm_fail(SM_ERR_SPEC,
                       "cur: ratio=%g leaves no room for rank 1 for a %lldx%lld "
                       "matrix (rank 1 needs ratio >= %g)",
                       x, (long long)m, (long long)n,
                       (double)(m + n + 1) / ((double)m * (double)n));
    *r = v;
    return SM_OK;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

// DEIM indices of the r vectors stored as columns of V (len, r) [ld]: out (r).
static sm_status deim(const float *V, int64_t len, int64_t r, int64_t ld, int32_t *out) {
    double *A = sm_alloc((size_t)(r * r) * sizeof(double)),
           *c = sm_alloc((size_t)r * sizeof(double));
    lapack_int *piv = sm_alloc((size_t)r * sizeof(lapack_int));
    if (!A || !c || !piv) {
        sm_free(A), sm_free(c), sm_free(piv);
        return sm_fail(SM_ERR_ALLOC, "cur: out of memory");
    }
    sm_status st = SM_OK;
    for (int64_t j = 0; j < r && st == SM_OK; j++) {
        // c solves V[p, :j] c = V[p, j]; the residual is V[:, j] - V[:, :j] c.
        for (int64_t a = 0; a < j; a++) {
            c[a] = V[(int64_t)out[a] * ld + j];
            for (int64_t b = 0; b < j; b++) A[a * j + b] = V[(int64_t)out[a] * ld + b];
        }
        if (j > 0 &&
            LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)j, 1, A, (lapack_int)j, piv, c, 1) != 0) {
            st = sm_fail(SM_ERR_NUMERIC, "cur: DEIM interpolation matrix is singular at %lld",
                         (long long)j);
            break;
        }
        double best = -1;
        int64_t arg = 0;
        for (int64_t i = 0; i < len; i++) {
            double res = V[i * ld + j];
            for (int64_t b = 0; b < j; b++) res -= V[i * ld + b] * c[b];
            bool taken = false;
            for (int64_t b = 0; b < j; b++) taken |= out[b] == i;
            if (!taken && fabs(res) > best) best = fabs(res), arg = i;
        }
        out[j] = (int32_t)arg;
    }
    sm_free(A), sm_free(c), sm_free(piv);
    return st;
}

// The r largest leverage scores of the rows of V (len, r) [ld], ties to the lower index.
static sm_status leverage(const float *V, int64_t len, int64_t r, int64_t ld, int32_t *out) {
    double *score = sm_alloc((size_t)len * sizeof(double));
    uint8_t *used = sm_calloc((size_t)len, 1);
    if (!score || !used) {
        sm_free(score), sm_free(used);
        return sm_fail(SM_ERR_ALLOC, "cur: out of memory");
    }
    for (int64_t i = 0; i < len; i++) {
        double s = 0;
        for (int64_t t = 0; t < r; t++) s += (double)V[i * ld + t] * V[i * ld + t];
        score[i] = s;
    }
    for (int64_t j = 0; j < r; j++) { // r passes: r <= min(m, n) and selection is not the cost
        int64_t arg = -1;
        for (int64_t i = 0; i < len; i++)
            if (!used[i] && (arg < 0 || score[i] > score[arg])) arg = i;
        used[arg] = 1;
        out[j] = (int32_t)arg;
    }
    sm_free(score), sm_free(used);
    return SM_OK;
}

// P (k, cols) = pinv(A) B for A (rows, k) and B (rows, cols), in double, through the SVD of A.
static sm_status pinv_apply(const double *A, int64_t rows, int64_t k, const double *B, int64_t cols,
                            double *P) {
    int64_t s = rows < k ? rows : k;
    double *u = sm_alloc((size_t)(rows * s) * sizeof(double)),
           *sv = sm_alloc((size_t)s * sizeof(double));
    double *vt = sm_alloc((size_t)(s * k) * sizeof(double));
    double *T = sm_alloc((size_t)(s * cols) * sizeof(double));
    sm_status st = u && sv && vt && T ? sm_svd_f64(A, rows, k, u, sv, vt)
                                      : sm_fail(SM_ERR_ALLOC, "cur: out of memory");
    if (st == SM_OK) {
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)s, (int)cols, (int)rows, 1.0, u,
                    (int)s, B, (int)cols, 0.0, T, (int)cols); // T = u^T B
        for (int64_t i = 0; i < s; i++) {
            double inv = sv[i] > 1e-6 * sv[0] ? 1.0 / sv[i] : 0.0;
            for (int64_t j = 0; j < cols; j++) T[i * cols + j] *= inv;
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)cols, (int)s, 1.0, vt,
                    (int)k, T, (int)cols, 0.0, P, (int)cols); // P = vt^T T
    }
    sm_free(u), sm_free(sv), sm_free(vt), sm_free(T);
    return st;
}

static sm_status cur_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    int64_t m = op->m, n = op->n, r;
    sm_store store;
    int sel = 0;
    sm_status st = cur_rank(t, m, n, false, &r);
    if (st == SM_OK) st = sm_term_choice(t, "select", "deim|leverage", 0, &sel);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    cur *c = calloc(1, sizeof *c);
    float *Uk = sm_alloc((size_t)(m * r) * sizeof(float)), *S = sm_alloc((size_t)r * sizeof(float));
    float *Vt = sm_alloc((size_t)(r * n) * sizeof(float)),
          *V = sm_alloc((size_t)(n * r) * sizeof(float));
    double *Cd = sm_alloc((size_t)(m * r) * sizeof(double)),
           *Rd = sm_alloc((size_t)(r * n) * sizeof(double));
    double *Wd = sm_alloc((size_t)(m * n) * sizeof(double)),
           *M = sm_alloc((size_t)(r * n) * sizeof(double));
    double *Ut = sm_alloc((size_t)(r * r) * sizeof(double));
    float *Cf = sm_alloc((size_t)(m * r) * sizeof(float)),
          *Rf = sm_alloc((size_t)(r * n) * sizeof(float));
    float *Uf = sm_alloc((size_t)(r * r) * sizeof(float));
    if (c)
        c->r = r, c->cols = sm_alloc((size_t)r * sizeof(int32_t)),
        c->rows = sm_alloc((size_t)r * sizeof(int32_t));
    if (!c || !c->cols || !c->rows || !Uk || !S || !Vt || !V || !Cd || !Rd || !Wd || !M || !Ut ||
        !Cf || !Rf || !Uf)
        st = sm_fail(SM_ERR_ALLOC, "cur: out of memory");
    if (st == SM_OK) st = sm_svd_top(W, m, n, n, r, NULL, Uk, S, Vt);
    if (st == SM_OK) {
        for (int64_t j = 0; j < n; j++)
            for (int64_t k = 0; k < r; k++) V[j * r + k] = Vt[k * n + j];
        st = sel == 0 ? deim(V, n, r, r, c->cols) : leverage(V, n, r, r, c->cols);
    }
    if (st == SM_OK) st = sel == 0 ? deim(Uk, m, r, r, c->rows) : leverage(Uk, m, r, r, c->rows);
    if (st == SM_OK) {
        qsort(c->cols, (size_t)r, sizeof(int32_t), cmp_i32);
        qsort(c->rows, (size_t)r, sizeof(int32_t), cmp_i32);
        for (int64_t i = 0; i < m * n; i++) Wd[i] = W[i];
        for (int64_t i = 0; i < m; i++)
            for (int64_t k = 0; k < r; k++) Cd[i * r + k] = Cf[i * r + k] = W[i * n + c->cols[k]];
        for (int64_t k = 0; k < r; k++)
            for (int64_t j = 0; j < n; j++)
                Rd[k * n + j] = Rf[k * n + j] = W[(int64_t)c->rows[k] * n + j];
        if (o && o->stats) st = sm_act_whiten(o->stats, n, Wd, m, Rd, r); // W L, R L
        if (st == SM_OK) st = pinv_apply(Cd, m, r, Wd, n, M);             // M (r, n) = C^+ W
    }
    if (st == SM_OK) { // U = M R^+ = (R^+^T M^T)^T = (pinv(R^T) M^T)^T
        double *Rt = Wd, *Mt = sm_alloc((size_t)(n * r) * sizeof(double)); // (n, r) each
        if (!Mt) st = sm_fail(SM_ERR_ALLOC, "cur: out of memory");
        for (int64_t k = 0; k < r && st == SM_OK; k++)
            for (int64_t j = 0; j < n; j++)
                Rt[j * r + k] = Rd[k * n + j], Mt[j * r + k] = M[k * n + j];
        if (st == SM_OK) st = pinv_apply(Rt, n, r, Mt, r, Ut); // Ut = U^T
        sm_free(Mt);
        for (int64_t a = 0; a < r && st == SM_OK; a++)
            for (int64_t b = 0; b < r; b++) Uf[a * r + b] = (float)Ut[b * r + a];
    }
    if (st == SM_OK) st = sm_factor_init(&c->C, m, r, store, Cf, r);
    if (st == SM_OK) st = sm_factor_init(&c->U, r, r, SM_STORE_F32, Uf, r);
    if (st == SM_OK) st = sm_factor_init(&c->R, r, n, store, Rf, n);
    sm_free(Uk), sm_free(S), sm_free(Vt), sm_free(V), sm_free(Cd), sm_free(Rd), sm_free(Wd);
    sm_free(M), sm_free(Ut), sm_free(Cf), sm_free(Rf), sm_free(Uf);
    if (st != SM_OK) {
        if (c) cur_free(c);
        return st;
    }
    op->impl = c;
    sm_canon cn;
    sm_canon_init(&cn, "cur");
    sm_canon_add(&cn, "rank", "%lld", (long long)r);
    if (sel == 1) sm_canon_add(&cn, "select", "leverage");
    if (store != SM_STORE_F32) sm_canon_add(&cn, "dtype", "%s", sm_store_name(store));
    return sm_op_set_spec(op, &cn);
}

static sm_status load_indices(const sm_part *parts, int nparts, const char *name, int64_t r,
                              int64_t limit, int32_t **out) {
    const sm_part *p = sm_parts_find(parts, nparts, name);
    if (!p) return SM_ERR_FORMAT;
    if (p->dtype != SM_DTYPE_I32 || p->ndim != 1 || p->shape[0] != r || p->nbytes != (size_t)r * 4)
        return sm_fail(SM_ERR_FORMAT,
                       "part \"%s\" is %s with %d dims [%lld] (%zu bytes), "
                       "expected I32 [%lld]",
                       name, sm_dtype_name(p->dtype), p->ndim, (long long)p->shape[0], p->nbytes,
                       (long long)r);
    *out = sm_alloc((size_t)r * sizeof(int32_t));
    if (!*out) return sm_fail(SM_ERR_ALLOC, "out of memory");
    memcpy(*out, p->data, (size_t)r * sizeof(int32_t));
    for (int64_t k = 0; k < r; k++)
        if ((*out)[k] < 0 || (*out)[k] >= limit || (k > 0 && (*out)[k] <= (*out)[k - 1]))
            return sm_fail(SM_ERR_FORMAT,
                           "part \"%s\": index %lld is %d (indices must increase "
                           "and be < %lld)",
                           name, (long long)k, (int)(*out)[k], (long long)limit);
    return SM_OK;
}

static sm_status cur_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t r;
    sm_store store;
    int sel;
    sm_status st = cur_rank(t, op->m, op->n, true, &r);
    if (st == SM_OK) st = sm_term_choice(t, "select", "deim|leverage", 0, &sel);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    cur *c = calloc(1, sizeof *c);
    if (!c) return sm_fail(SM_ERR_ALLOC, "out of memory");
    c->r = r;
    st = sm_factor_load(&c->C, op->m, r, store, "C", parts, nparts);
    if (st == SM_OK) st = sm_factor_load(&c->U, r, r, SM_STORE_F32, "U", parts, nparts);
    if (st == SM_OK) st = sm_factor_load(&c->R, r, op->n, store, "R", parts, nparts);
    if (st == SM_OK) st = load_indices(parts, nparts, "cols", r, op->n, &c->cols);
    if (st == SM_OK) st = load_indices(parts, nparts, "rows", r, op->m, &c->rows);
    if (st != SM_OK) {
        cur_free(c);
        return st;
    }
    op->impl = c;
    return SM_OK;
}

static size_t cur_workspace(const sm_op *op, int64_t N) {
    const cur *c = CU(op);
    size_t a = sm_factor_workspace(&c->C, N), b = sm_factor_workspace(&c->R, N);
    return (size_t)(2 * N * c->r) + (a > b ? a : b);
}

static void cur_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const cur *c = CU(op);
    int64_t r = c->r;
    float *T1 = work, *T2 = work + N * r, *sub = T2 + N * r; // (N, r) each
    sm_factor_mm(&c->R, N, X, op->n, T1, r, 0.0f, sub);
    sm_factor_mm(&c->U, N, T1, r, T2, r, 0.0f, sub);
    sm_factor_mm(&c->C, N, T2, r, Y, op->m, 0.0f, sub);
}

static void cur_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const cur *c = CU(op);
    int64_t r = c->r;
    float *T1 = work, *T2 = work + N * r, *sub = T2 + N * r;
    sm_factor_mm_t(&c->C, N, Y, op->m, T1, r, 0.0f, sub);
    sm_factor_mm_t(&c->U, N, T1, r, T2, r, 0.0f, sub);
    sm_factor_mm_t(&c->R, N, T2, r, X, op->n, 0.0f, sub);
}

static sm_status cur_to_dense(const sm_op *op, float *W) {
    const cur *c = CU(op);
    int64_t r = c->r, m = op->m, n = op->n;
    float *C = sm_alloc((size_t)(m * r) * sizeof(float)),
          *R = sm_alloc((size_t)(r * n) * sizeof(float));
    float *CU = sm_alloc((size_t)(m * r) * sizeof(float));
    if (!C || !R || !CU) {
        sm_free(C), sm_free(R), sm_free(CU);
        return sm_fail(SM_ERR_ALLOC, "cur: out of memory in to_dense");
    }
    sm_factor_decode(&c->C, C, r);
    sm_factor_decode(&c->R, R, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)r, (int)r, 1.0f, C, (int)r,
                c->U.data, (int)r, 0.0f, CU, (int)r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)r, 1.0f, CU, (int)r,
                R, (int)n, 0.0f, W, (int)n);
    sm_free(C), sm_free(R), sm_free(CU);
    return SM_OK;
}

static int64_t cur_nparams(const sm_op *op) {
    int64_t r = CU(op)->r;
    return r * (op->m + op->n) + r * r;
}

static int64_t cur_nbytes(const sm_op *op) {
    const cur *c = CU(op);
    return sm_factor_nbytes(&c->C) + sm_factor_nbytes(&c->U) + sm_factor_nbytes(&c->R) + 8 * c->r;
}

static void index_part(sm_part *p, const char *name, const int32_t *data, int64_t r) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->dtype = SM_DTYPE_I32;
    p->ndim = 1;
    p->shape[0] = r;
    p->data = data;
    p->nbytes = (size_t)r * 4;
}

static int cur_parts(const sm_op *op, sm_part *out, int cap) {
    const cur *c = CU(op);
    int a = sm_factor_parts(&c->C, "C", NULL), b = sm_factor_parts(&c->U, "U", NULL);
    int d = sm_factor_parts(&c->R, "R", NULL);
    if (out && cap >= a + b + d + 2) {
        sm_factor_parts(&c->C, "C", out);
        sm_factor_parts(&c->U, "U", out + a);
        sm_factor_parts(&c->R, "R", out + a + b);
        index_part(&out[a + b + d], "cols", c->cols, c->r);
        index_part(&out[a + b + d + 1], "rows", c->rows, c->r);
    }
    return a + b + d + 2;
}

const sm_op_vtbl sm_vtbl_cur = {
    .name = "cur",
    .keys = "rank,ratio,select,dtype",
    .help = "  rank=R       columns and rows kept (1 <= R <= min(m, n)); or\n"
            "  ratio=X      the largest R with R (m + n) + R^2 <= X m n\n"
            "  select=deim  index selection from the top-R singular vectors: deim or leverage\n"
            "  dtype=f32    storage of C and R: f32, f16, bf16, q8, q4 (U stays f32)",
    .fit = cur_fit,
    .load = cur_load,
    .apply = cur_apply,
    .apply_t = cur_apply_t,
    .workspace = cur_workspace,
    .to_dense = cur_to_dense,
    .nparams = cur_nparams,
    .nbytes = cur_nbytes,
    .macs = cur_nparams,
    .parts = cur_parts,
    .free_impl = cur_free,
};
