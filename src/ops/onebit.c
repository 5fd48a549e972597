// onebit: OneBit's sign-value-independent decomposition (SVID), W ~ sign(W) * (a b^T) with
// a b^T the best rank-1 approximation of |W|. |W| is non-negative, so its leading singular
// vectors are too (Perron-Frobenius): power iteration from a positive start finds them. One bit
// per weight plus two F16 vectors; apply is y = a * (S (b * x)) with the sign-matrix kernel.
//
// Parts:
//   "signs"  U8 (m, ceil(n / 8))   bit c of row r (byte c / 8, bit c % 8) set where W >= 0
//   "a"      F16 (m)               a = sqrt(sigma) u
//   "b"      F16 (n)               b = sqrt(sigma) v
//   "outlier_index" I32 (N), "outlier_value" F32 (N)   keep-outliers=N (outliers.c)
//
// keep-outliers=N: the N largest-|w| weights are kept exactly as a sparse term and fitted as 0
// (so they neither pull a b^T up nor take a sign), as rtn does.
#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define POWER_MAX 500   // iterations at most
#define POWER_TOL 1e-7  // relative change of sigma between iterations that ends them

typedef struct onebit {
    uint8_t *bits; // (m, rb) + padding
    uint16_t *a, *b;
    sm_qout out;
} onebit;

#define OB(op) ((onebit *)(op)->impl)

static void onebit_free(void *impl) {
    onebit *o = impl;
    if (!o) return;
    sm_free(o->bits), sm_free(o->a), sm_free(o->b);
    sm_qout_free(&o->out);
    free(o);
}

static onebit *onebit_alloc(int64_t m, int64_t n) {
    onebit *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->bits = sm_calloc((size_t)m * sm_sign_row_bytes(n) + SM_QPAD, 1);
    o->a = sm_alloc((size_t)m * 2);
    o->b = sm_alloc((size_t)n * 2);
    if (!o->bits || !o->a || !o->b) {
        onebit_free(o);
        return NULL;
    }
    return o;
}

// Leading singular triplet of the non-negative A (m, n): u (m), v (n) unit and non-negative,
// returns sigma. Power iteration on A^T A from the column means of A.
static double rank1_nonneg(const float *A, int64_t m, int64_t n, float *u, float *v) {
    for (int64_t j = 0; j < n; j++) v[j] = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) v[j] += A[i * n + j];
    double sigma = 0, prev = -1;
    for (int it = 0; it < POWER_MAX; it++) {
        double nv = 0;
        for (int64_t j = 0; j < n; j++) nv += (double)v[j] * v[j];
        if (nv == 0) break; // A = 0
        for (int64_t j = 0; j < n; j++) v[j] = (float)(v[j] / sqrt(nv));
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m, (int)n, 1.0f, A, (int)n, v, 1, 0.0f, u, 1);
        double nu = 0;
        for (int64_t i = 0; i < m; i++) nu += (double)u[i] * u[i];
        sigma = sqrt(nu);
        if (sigma == 0) break;
        for (int64_t i = 0; i < m; i++) u[i] = (float)(u[i] / sigma);
        if (fabs(sigma - prev) <= POWER_TOL * sigma) break;
        prev = sigma;
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)m, (int)n, 1.0f, A, (int)n, u, 1, 0.0f, v, 1);
    }
    return sigma;
}

// The value of the sign part at (r, c).
static float onebit_at(const onebit *o, int64_t n, int64_t r, int64_t c) {
    float w = sm_f16_to_f32(o->a[r]) * sm_f16_to_f32(o->b[c]);
    return (o->bits[(size_t)r * sm_sign_row_bytes(n) + (c >> 3)] >> (c & 7)) & 1 ? w : -w;
}

static void onebit_set_corr(onebit *o, int64_t n) {
    for (int64_t k = 0; k < o->out.count; k++)
        o->out.corr[k] = o->out.val[k] - onebit_at(o, n, o->out.idx[k] / n, o->out.idx[k] % n);
}

static sm_status onebit_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *opts) {
    (void)opts;
    int64_t m = op->m, n = op->n, keep;
    sm_status st = sm_qout_count(t, m, n, &keep);
    if (st != SM_OK) return st;
    onebit *o = onebit_alloc(m, n);
    float *A = sm_alloc((size_t)(m * n) * sizeof(float));
    float *u = sm_alloc((size_t)m * sizeof(float)), *v = sm_alloc((size_t)n * sizeof(float));
    st = o && A && u && v ? SM_OK : sm_fail(SM_ERR_ALLOC, "onebit: out of memory");
    if (st == SM_OK) st = sm_qout_select(W, m, n, keep, &o->out);
    uint8_t *kept = st == SM_OK && keep ? sm_calloc((size_t)(m * n), 1) : NULL;
    if (st == SM_OK && keep && !kept) st = sm_fail(SM_ERR_ALLOC, "onebit: out of memory");
    for (int64_t k = 0; st == SM_OK && k < keep; k++) kept[o->out.idx[k]] = 1;
    if (st == SM_OK) {
        size_t rb = sm_sign_row_bytes(n);
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < n; c++) {
                float w = kept && kept[r * n + c] ? 0.0f : W[r * n + c];
                A[r * n + c] = fabsf(w);
                if (w >= 0) o->bits[(size_t)r * rb + (c >> 3)] |= (uint8_t)(1u << (c & 7));
            }
        double sigma = rank1_nonneg(A, m, n, u, v), rs = sqrt(sigma);
        for (int64_t i = 0; i < m; i++) u[i] = (float)(u[i] * rs);
        for (int64_t j = 0; j < n; j++) v[j] = (float)(v[j] * rs);
        st = sm_f16_encode(u, m, o->a, "onebit: a");
        if (st == SM_OK) st = sm_f16_encode(v, n, o->b, "onebit: b");
    }
    sm_free(A), sm_free(u), sm_free(v), sm_free(kept);
    if (st != SM_OK) {
        onebit_free(o);
        return st;
    }
    onebit_set_corr(o, n);
    op->impl = o;
    if (!keep) return SM_OK;
    sm_canon c;
    sm_canon_init(&c, "onebit");
    sm_canon_add(&c, "keep-outliers", "%lld", (long long)keep);
    return sm_op_set_spec(op, &c);
}

static sm_status onebit_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t m = op->m, n = op->n, keep;
    size_t rb = sm_sign_row_bytes(n);
    sm_status st = sm_qout_count(t, m, n, &keep);
    if (st != SM_OK) return st;
    onebit *o = onebit_alloc(m, n);
    st = o ? SM_OK : sm_fail(SM_ERR_ALLOC, "onebit: out of memory");
    if (st == SM_OK)
        st = sm_part_take(parts, nparts, "signs", SM_DTYPE_U8, 2, m, (int64_t)rb, o->bits, m * rb);
    if (st == SM_OK) st = sm_part_take(parts, nparts, "a", SM_DTYPE_F16, 1, m, 0, o->a, (size_t)m * 2);
    if (st == SM_OK) st = sm_part_take(parts, nparts, "b", SM_DTYPE_F16, 1, n, 0, o->b, (size_t)n * 2);
    if (st == SM_OK) st = sm_f16_check(o->a, m, "a");
    if (st == SM_OK) st = sm_f16_check(o->b, n, "b");
    if (st == SM_OK) st = sm_qout_load(&o->out, keep, m, n, parts, nparts);
    if (st != SM_OK) {
        onebit_free(o);
        return st;
    }
    onebit_set_corr(o, n);
    op->impl = o;
    return SM_OK;
}

static size_t onebit_workspace(const sm_op *op, int64_t N) {
    int64_t big = op->m > op->n ? op->m : op->n;
    return (size_t)(N * big + op->m + op->n);
}

// Y (N, m) = X (N, n) Ŵ^T: Y[i, r] = a_r sum_c S_rc (b_c X[i, c]).
static void onebit_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const onebit *o = OB(op);
    int64_t m = op->m, n = op->n;
    float *xb = work, *a = work + N * (m > n ? m : n), *b = a + m;
    sm_f16_decode(o->a, m, a);
    sm_f16_decode(o->b, n, b);
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < n; c++) xb[i * n + c] = X[i * n + c] * b[c];
    sm_qkernels_get()->signmm(m, n, o->bits, sm_sign_row_bytes(n), N, xb, Y);
    for (int64_t i = 0; i < N; i++)
        for (int64_t r = 0; r < m; r++) Y[i * m + r] *= a[r];
    if (o->out.count) sm_qout_apply(&o->out, m, n, N, X, Y);
}

// X (N, n) = Y (N, m) Ŵ: X[i, c] = b_c sum_r S_rc (a_r Y[i, r]).
static void onebit_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const onebit *o = OB(op);
    int64_t m = op->m, n = op->n;
    float *ya = work, *a = work + N * (m > n ? m : n), *b = a + m;
    sm_f16_decode(o->a, m, a);
    sm_f16_decode(o->b, n, b);
    for (int64_t i = 0; i < N; i++)
        for (int64_t r = 0; r < m; r++) ya[i * m + r] = Y[i * m + r] * a[r];
    sm_qkernels_get()->signmm_t(m, n, o->bits, sm_sign_row_bytes(n), N, ya, X);
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < n; c++) X[i * n + c] *= b[c];
    if (o->out.count) sm_qout_apply_t(&o->out, m, n, N, Y, X);
}

static sm_status onebit_to_dense(const sm_op *op, float *W) {
    const onebit *o = OB(op);
    int64_t m = op->m, n = op->n;
    size_t rb = sm_sign_row_bytes(n);
    for (int64_t r = 0; r < m; r++) {
        float a = sm_f16_to_f32(o->a[r]);
        for (int64_t c = 0; c < n; c++) {
            float w = a * sm_f16_to_f32(o->b[c]);
            W[r * n + c] = (o->bits[(size_t)r * rb + (c >> 3)] >> (c & 7)) & 1 ? w : -w;
        }
    }
    sm_qout_place(&o->out, W);
    return SM_OK;
}

static int64_t onebit_nparams(const sm_op *op) {
    return op->m * op->n + op->m + op->n + OB(op)->out.count;
}

static int64_t onebit_macs(const sm_op *op) {
    return op->m * op->n + op->m + op->n + OB(op)->out.count;
}

static int64_t onebit_nbytes(const sm_op *op) {
    return op->m * (int64_t)sm_sign_row_bytes(op->n) + 2 * (op->m + op->n) +
           sm_qout_nbytes(&OB(op)->out);
}

static int onebit_parts(const sm_op *op, sm_part *out, int cap) {
    const onebit *o = OB(op);
    int np = 3 + (o->out.count ? 2 : 0);
    if (!out || cap < np) return np;
    int64_t m = op->m, n = op->n;
    memset(out, 0, 3 * sizeof *out);
    snprintf(out[0].name, sizeof out[0].name, "signs");
    out[0].dtype = SM_DTYPE_U8;
    out[0].ndim = 2;
    out[0].shape[0] = m;
    out[0].shape[1] = (int64_t)sm_sign_row_bytes(n);
    out[0].data = o->bits;
    out[0].nbytes = (size_t)m * sm_sign_row_bytes(n);
    snprintf(out[1].name, sizeof out[1].name, "a");
    out[1].dtype = SM_DTYPE_F16;
    out[1].ndim = 1;
    out[1].shape[0] = m;
    out[1].data = o->a;
    out[1].nbytes = (size_t)m * 2;
    snprintf(out[2].name, sizeof out[2].name, "b");
    out[2].dtype = SM_DTYPE_F16;
    out[2].ndim = 1;
    out[2].shape[0] = n;
    out[2].data = o->b;
    out[2].nbytes = (size_t)n * 2;
    return 3 + sm_qout_parts(&o->out, out + 3);
}

const sm_op_vtbl sm_vtbl_onebit = {
    .name = "onebit",
    .keys = "keep-outliers",
    .help = "  W ~ sign(W) * (a b^T), a b^T the best rank-1 approximation of |W|; 1 bit per\n"
            "  weight plus two F16 vectors\n"
            "  keep-outliers=0  the N largest-|w| weights kept exactly (F32 + int32 index)",
    .fit = onebit_fit,
    .load = onebit_load,
    .apply = onebit_apply,
    .apply_t = onebit_apply_t,
    .workspace = onebit_workspace,
    .to_dense = onebit_to_dense,
    .nparams = onebit_nparams,
    .nbytes = onebit_nbytes,
    .macs = onebit_macs,
    .parts = onebit_parts,
    .free_impl = onebit_free,
};
