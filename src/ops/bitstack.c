// bitstack[:k=16][,levels=8][,aware][,solver=exact|random[,oversample=20,power=4]]
// BitStack's iterative absolute-value decomposition (Wang et al., ICLR 2025). From R_1 = W, each
// level t stores S_t = sign(R_t) (1 bit per weight, sign(0) = +1) and a rank-k approximation
// A_t B_t of |R_t| (the truncated SVD, F16 factors A_t = U sqrt(S), B_t = sqrt(S) V^T), and
// R_{t+1} = R_t - S_t * (A_t B_t) computed from the stored (F16-rounded) factors, so R_{t+1} is
// exactly the error of the stored model. Because R_t - S_t * L = S_t * (|R_t| - L), every level
// removes the top-k singular values' energy of |R_t|: ||R_{t+1}||^2 = ||R_t||^2 - sum_{i<=k}
// sigma_i(|R_t|)^2 (up to the F16 rounding), so the error never grows with more levels.
//
// Any prefix of levels is a valid, smaller model: an operator loaded with levels=l from the
// parts of one fitted with levels=L >= l uses levels 0 .. l-1 and ignores the others (so a reader
// may skip their tensors; sm_bitstack_prefix does this for an operator in memory). `compress` can
// thus choose a level count per matrix without refitting.
//
// aware: activation-aware scaling (BitStack's AWQ-like step, from calibration statistics
// stats->sqsum): the levels decompose W diag(s), s_j = rms_j + 1e-3 mean(rms), rms_j =
// sqrt(sqsum_j / tokens), and 1/s is folded into the stored B_t, so storage and apply are
// unchanged (the paper folds s into the previous layer instead).
//
// Parts, for each level t (in the order fitted):
//   "l<t>.signs"  U8 (m, ceil(n / 8))  sign bits (bit set = +1), as onebit's
//   "l<t>.A"      F16 (m, k)
//   "l<t>.B"      F16 (k, n)
// apply: per level, Y += sum_j A[:, j] * (S_t (B[j, :] * x)), one sign product of k vectors.
#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define MAX_LEVELS 64
#define DEFAULT_K 16
#define DEFAULT_LEVELS 8
#define DEFAULT_OVERSAMPLE 20 // as lowrank's randomized solver
#define DEFAULT_POWER 4

typedef struct bitstack {
    int64_t k, levels;
    uint8_t *bits[MAX_LEVELS]; // (m, rb) + padding
    uint16_t *A[MAX_LEVELS];   // (m, k) F16
    uint16_t *B[MAX_LEVELS];   // (k, n) F16
} bitstack;

#define BS(op) ((bitstack *)(op)->impl)

static void bitstack_free(void *impl) {
    bitstack *b = impl;
    if (!b) return;
    for (int t = 0; t < MAX_LEVELS; t++) sm_free(b->bits[t]), sm_free(b->A[t]), sm_free(b->B[t]);
    free(b);
}

static sm_status alloc_level(bitstack *b, int64_t t, int64_t m, int64_t n) {
    b->bits[t] = sm_calloc((size_t)m * sm_sign_row_bytes(n) + SM_QPAD, 1);
    b->A[t] = sm_alloc((size_t)(m * b->k) * 2);
    b->B[t] = sm_alloc((size_t)(b->k * n) * 2);
    if (!b->bits[t] || !b->A[t] || !b->B[t]) return sm_fail(SM_ERR_ALLOC, "bitstack: out of memory");
    return SM_OK;
}

static sm_status parse(const sm_term *t, int64_t m, int64_t n, int64_t *k, int64_t *levels) {
    int64_t kmax = m < n ? m : n;
    sm_status st = sm_term_int(t, "k", DEFAULT_K < kmax ? DEFAULT_K : kmax, 1, INT64_MAX, k);
    if (st == SM_OK && *k > kmax)
        st = sm_fail(SM_ERR_SPEC, "bitstack: k=%lld is larger than min(m, n) = %lld for a "
                     "%lldx%lld matrix", (long long)*k, (long long)kmax, (long long)m,
                     (long long)n);
    if (st == SM_OK) st = sm_term_int(t, "levels", DEFAULT_LEVELS, 1, MAX_LEVELS, levels);
    return st;
}

static sm_status solver_of(const sm_term *t, const sm_fit_opts *o, sm_svd_solver *s) {
    sm_status st = sm_term_choice(t, "solver", "exact|random", 0, &s->kind);
    int64_t q = DEFAULT_POWER;
    if (st == SM_OK) st = sm_term_int(t, "oversample", DEFAULT_OVERSAMPLE, 0, 1 << 20, &s->p);
    if (st == SM_OK) st = sm_term_int(t, "power", DEFAULT_POWER, 0, 100, &q);
    s->q = (int)q;
    s->seed = o->seed;
    if (st == SM_OK && s->kind == 0 && (sm_term_find(t, "oversample") || sm_term_find(t, "power")))
        return sm_fail(SM_ERR_SPEC, "bitstack: oversample= and power= need solver=random");
    return st;
}

// Per-column scales s (n) of the aware option from the calibration statistics.
static sm_status aware_scales(const sm_fit_opts *o, int64_t n, float *s) {
    if (!o->stats || !o->stats->sqsum)
        return sm_fail(SM_ERR_ARG, "bitstack: aware needs calibration statistics (per-channel "
                       "sums of squared inputs, sm_fit_opts.stats->sqsum, from `structmat "
                       "calibrate`)");
    double tokens = o->stats->tokens > 0 ? (double)o->stats->tokens : 1.0, mean = 0;
    for (int64_t j = 0; j < n; j++) {
        double v = o->stats->sqsum[j];
        if (!(v >= 0) || !isfinite(v))
            return sm_fail(SM_ERR_NUMERIC, "bitstack: sqsum[%lld] = %g is not a finite "
                           "non-negative value", (long long)j, v);
        s[j] = (float)sqrt(v / tokens);
        mean += s[j];
    }
    mean /= (double)n;
    if (mean == 0) mean = 1;
    for (int64_t j = 0; j < n; j++) s[j] += (float)(1e-3 * mean);
    return SM_OK;
}

static sm_status bitstack_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    int64_t m = op->m, n = op->n, k, levels;
    sm_svd_solver solver;
    sm_status st = parse(t, m, n, &k, &levels);
    if (st == SM_OK) st = sm_term_check_flag(t, "aware");
    if (st == SM_OK) st = solver_of(t, o, &solver);
    if (st != SM_OK) return st;
    bool aware = sm_term_flag(t, "aware");
    bitstack *b = calloc(1, sizeof *b);
    float *R = sm_alloc((size_t)(m * n) * sizeof(float)); // the residual W - levels so far
    float *Aabs = sm_alloc((size_t)(m * n) * sizeof(float));
    float *L = sm_alloc((size_t)(m * k) * sizeof(float)), *Rt = sm_alloc((size_t)(k * n) * sizeof(float));
    float *s = sm_alloc((size_t)n * sizeof(float));
    st = b && R && Aabs && L && Rt && s ? SM_OK : sm_fail(SM_ERR_ALLOC, "bitstack: out of memory");
    if (st == SM_OK) {
        b->k = k;
        memcpy(R, W, (size_t)(m * n) * sizeof(float));
        for (int64_t j = 0; j < n; j++) s[j] = 1;
        if (aware) st = aware_scales(o, n, s);
    }
    size_t rb = sm_sign_row_bytes(n);
    for (int64_t lv = 0; lv < levels && st == SM_OK; lv++) {
        st = alloc_level(b, lv, m, n);
        if (st != SM_OK) break;
        b->levels = lv + 1;
        uint8_t *bits = b->bits[lv];
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < n; c++) {
                float v = R[r * n + c];
                Aabs[r * n + c] = fabsf(v) * s[c];
                if (v >= 0) bits[(size_t)r * rb + (c >> 3)] |= (uint8_t)(1u << (c & 7));
            }
        st = sm_lowrank_factors(Aabs, m, n, n, k, &solver, L, k, Rt, n);
        if (st != SM_OK) break;
        for (int64_t j = 0; j < k; j++)
            for (int64_t c = 0; c < n; c++) Rt[j * n + c] /= s[c];
        st = sm_f16_encode(L, m * k, b->A[lv], "bitstack: a level's A factor");
        if (st == SM_OK) st = sm_f16_encode(Rt, k * n, b->B[lv], "bitstack: a level's B factor");
        if (st != SM_OK) break;
        // R -= S * (A B) with the stored factors.
        sm_f16_decode(b->A[lv], m * k, L);
        sm_f16_decode(b->B[lv], k * n, Rt);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, L,
                    (int)k, Rt, (int)n, 0.0f, Aabs, (int)n);
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < n; c++) {
                float v = Aabs[r * n + c];
                R[r * n + c] -= (bits[(size_t)r * rb + (c >> 3)] >> (c & 7)) & 1 ? v : -v;
            }
    }
    sm_free(R), sm_free(Aabs), sm_free(L), sm_free(Rt), sm_free(s);
    if (st != SM_OK) {
        bitstack_free(b);
        return st;
    }
    op->impl = b;
    sm_canon c;
    sm_canon_init(&c, "bitstack");
    sm_canon_add(&c, "k", "%lld", (long long)k);
    sm_canon_add(&c, "levels", "%lld", (long long)levels);
    // aware and the solver change how levels were fitted, not what is stored: the canonical
    // spec keeps them so that a refit from it reproduces the operator.
    if (aware) sm_canon_flag(&c, "aware");
    if (solver.kind == 1) {
        sm_canon_add(&c, "solver", "random");
        if (solver.p != DEFAULT_OVERSAMPLE) sm_canon_add(&c, "oversample", "%lld", (long long)solver.p);
        if (solver.q != DEFAULT_POWER) sm_canon_add(&c, "power", "%d", solver.q);
    }
    return sm_op_set_spec(op, &c);
}

static void level_name(char *buf, size_t cap, int64_t t, const char *what) {
    snprintf(buf, cap, "l%lld.%s", (long long)t, what);
}

static sm_status bitstack_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t m = op->m, n = op->n, k, levels;
    sm_status st = parse(t, m, n, &k, &levels);
    if (st == SM_OK) st = sm_term_check_flag(t, "aware");
    if (st != SM_OK) return st;
    bitstack *b = calloc(1, sizeof *b);
    if (!b) return sm_fail(SM_ERR_ALLOC, "out of memory");
    b->k = k;
    size_t rb = sm_sign_row_bytes(n);
    char name[48];
    for (int64_t lv = 0; lv < levels && st == SM_OK; lv++) {
        st = alloc_level(b, lv, m, n);
        b->levels = lv + 1;
        level_name(name, sizeof name, lv, "signs");
        if (st == SM_OK)
            st = sm_part_take(parts, nparts, name, SM_DTYPE_U8, 2, m, (int64_t)rb, b->bits[lv],
                              m * rb);
        level_name(name, sizeof name, lv, "A");
        if (st == SM_OK)
            st = sm_part_take(parts, nparts, name, SM_DTYPE_F16, 2, m, k, b->A[lv],
                              (size_t)(m * k) * 2);
        if (st == SM_OK) st = sm_f16_check(b->A[lv], m * k, name);
        level_name(name, sizeof name, lv, "B");
        if (st == SM_OK)
            st = sm_part_take(parts, nparts, name, SM_DTYPE_F16, 2, k, n, b->B[lv],
                              (size_t)(k * n) * 2);
        if (st == SM_OK) st = sm_f16_check(b->B[lv], k * n, name);
    }
    if (st != SM_OK) {
        bitstack_free(b);
        return st;
    }
    op->impl = b;
    return SM_OK;
}

static size_t bitstack_workspace(const sm_op *op, int64_t N) {
    const bitstack *b = BS(op);
    int64_t k = b->k, m = op->m, n = op->n;
    // decoded A (m, k) and B (k, n), then the k N scaled inputs and the k N sign products
    return (size_t)(k * (m + n) + N * k * (m + n));
}

// Y (N, m) = X (N, n) Ŵ^T, level by level: V[(i, j), c] = B[j, c] X[i, c]; Z = V S^T;
// Y[i, r] += sum_j A[r, j] Z[(i, j), r].
static void bitstack_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const bitstack *b = BS(op);
    int64_t k = b->k, m = op->m, n = op->n;
    float *A = work, *B = A + m * k, *V = B + k * n, *Z = V + N * k * n;
    const sm_qkernels *kern = sm_qkernels_get();
    memset(Y, 0, (size_t)(N * m) * sizeof(float));
    for (int64_t lv = 0; lv < b->levels; lv++) {
        sm_f16_decode(b->A[lv], m * k, A);
        sm_f16_decode(b->B[lv], k * n, B);
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < k; j++)
                for (int64_t c = 0; c < n; c++) V[(i * k + j) * n + c] = B[j * n + c] * X[i * n + c];
        kern->signmm(m, n, b->bits[lv], sm_sign_row_bytes(n), N * k, V, Z);
        for (int64_t i = 0; i < N; i++)
            for (int64_t r = 0; r < m; r++) {
                float acc = 0;
                for (int64_t j = 0; j < k; j++) acc += A[r * k + j] * Z[(i * k + j) * m + r];
                Y[i * m + r] += acc;
            }
    }
}

// X (N, n) = Y (N, m) Ŵ: V[(i, j), r] = A[r, j] Y[i, r]; Z = V S; X[i, c] += sum_j B[j, c] Z.
static void bitstack_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const bitstack *b = BS(op);
    int64_t k = b->k, m = op->m, n = op->n;
    float *A = work, *B = A + m * k, *V = B + k * n, *Z = V + N * k * m;
    const sm_qkernels *kern = sm_qkernels_get();
    memset(X, 0, (size_t)(N * n) * sizeof(float));
    for (int64_t lv = 0; lv < b->levels; lv++) {
        sm_f16_decode(b->A[lv], m * k, A);
        sm_f16_decode(b->B[lv], k * n, B);
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < k; j++)
                for (int64_t r = 0; r < m; r++) V[(i * k + j) * m + r] = A[r * k + j] * Y[i * m + r];
        kern->signmm_t(m, n, b->bits[lv], sm_sign_row_bytes(n), N * k, V, Z);
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < k; j++)
                for (int64_t c = 0; c < n; c++) X[i * n + c] += B[j * n + c] * Z[(i * k + j) * n + c];
    }
}

static sm_status bitstack_to_dense(const sm_op *op, float *W) {
    const bitstack *b = BS(op);
    int64_t k = b->k, m = op->m, n = op->n;
    size_t rb = sm_sign_row_bytes(n);
    float *A = sm_alloc((size_t)(m * k) * sizeof(float)), *B = sm_alloc((size_t)(k * n) * sizeof(float));
    float *L = sm_alloc((size_t)(m * n) * sizeof(float));
    if (!A || !B || !L) {
        sm_free(A), sm_free(B), sm_free(L);
        return sm_fail(SM_ERR_ALLOC, "bitstack: out of memory in to_dense");
    }
    memset(W, 0, (size_t)(m * n) * sizeof(float));
    for (int64_t lv = 0; lv < b->levels; lv++) {
        sm_f16_decode(b->A[lv], m * k, A);
        sm_f16_decode(b->B[lv], k * n, B);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, A,
                    (int)k, B, (int)n, 0.0f, L, (int)n);
        const uint8_t *bits = b->bits[lv];
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < n; c++) {
                float v = L[r * n + c];
                W[r * n + c] += (bits[(size_t)r * rb + (c >> 3)] >> (c & 7)) & 1 ? v : -v;
            }
    }
    sm_free(A), sm_free(B), sm_free(L);
    return SM_OK;
}

static int64_t bitstack_nparams(const sm_op *op) {
    const bitstack *b = BS(op);
    return b->levels * (op->m * op->n + b->k * (op->m + op->n));
}

static int64_t bitstack_nbytes(const sm_op *op) {
    const bitstack *b = BS(op);
    return b->levels * (op->m * (int64_t)sm_sign_row_bytes(op->n) + 2 * b->k * (op->m + op->n));
}

static int64_t bitstack_macs(const sm_op *op) {
    const bitstack *b = BS(op);
    return b->levels * b->k * (op->m * op->n + op->m + op->n);
}

static int bitstack_parts(const sm_op *op, sm_part *out, int cap) {
    const bitstack *b = BS(op);
    int np = (int)(3 * b->levels);
    if (!out || cap < np) return np;
    int64_t m = op->m, n = op->n, k = b->k;
    memset(out, 0, (size_t)np * sizeof *out);
    for (int64_t lv = 0; lv < b->levels; lv++) {
        sm_part *p = out + 3 * lv;
        level_name(p[0].name, sizeof p[0].name, lv, "signs");
        p[0].dtype = SM_DTYPE_U8;
        p[0].ndim = 2;
        p[0].shape[0] = m;
        p[0].shape[1] = (int64_t)sm_sign_row_bytes(n);
        p[0].data = b->bits[lv];
        p[0].nbytes = (size_t)m * sm_sign_row_bytes(n);
        level_name(p[1].name, sizeof p[1].name, lv, "A");
        p[1].dtype = SM_DTYPE_F16;
        p[1].ndim = 2;
        p[1].shape[0] = m;
        p[1].shape[1] = k;
        p[1].data = b->A[lv];
        p[1].nbytes = (size_t)(m * k) * 2;
        level_name(p[2].name, sizeof p[2].name, lv, "B");
        p[2].dtype = SM_DTYPE_F16;
        p[2].ndim = 2;
        p[2].shape[0] = k;
        p[2].shape[1] = n;
        p[2].data = b->B[lv];
        p[2].nbytes = (size_t)(k * n) * 2;
    }
    return np;
}

sm_status sm_bitstack_prefix(const sm_op *op, int64_t levels, sm_op **out) {
    *out = NULL;
    if (op->vt != &sm_vtbl_bitstack)
        return sm_fail(SM_ERR_ARG, "bitstack prefix: the operator is %s, not bitstack",
                       op->vt->name);
    const bitstack *b = BS(op);
    if (levels < 1 || levels > b->levels)
        return sm_fail(SM_ERR_ARG, "bitstack prefix: levels=%lld is outside 1..%lld",
                       (long long)levels, (long long)b->levels);
    sm_part *parts = NULL;
    int np = 0;
    sm_status st = sm_op_parts(op, &parts, &np);
    if (st != SM_OK) return st;
    char spec[64];
    snprintf(spec, sizeof spec, "bitstack:k=%lld,levels=%lld", (long long)b->k, (long long)levels);
    st = sm_op_from_parts(spec, op->m, op->n, parts, np, out);
    free(parts);
    return st;
}

const sm_op_vtbl sm_vtbl_bitstack = {
    .name = "bitstack",
    .keys = "k,levels,aware,solver,oversample,power",
    .help = "  k=16         rank of each level's approximation of |R_t| (at most min(m, n))\n"
            "  levels=8     levels fitted (1..64); any prefix of them is a valid smaller model\n"
            "  aware        scale columns by input RMS (calibration sqsum) before decomposing\n"
            "  solver=exact exact (LAPACK gesdd) or random (oversample=20, power=4)",
    .fit = bitstack_fit,
    .load = bitstack_load,
    .apply = bitstack_apply,
    .apply_t = bitstack_apply_t,
    .workspace = bitstack_workspace,
    .to_dense = bitstack_to_dense,
    .nparams = bitstack_nparams,
    .nbytes = bitstack_nbytes,
    .macs = bitstack_macs,
    .parts = bitstack_parts,
    .free_impl = bitstack_free,
};
