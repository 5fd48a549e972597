// sparse:density=D|ratio=X[,format=auto|bitmap|csr]   or   sparse:nm=N:M
// W with most entries zero, stored compressed; nparams = macs = the stored values (nnz).
//
// Which entries are kept:
// - density=D (ratio=X means the same: nparams <= X m n): without calibration statistics, the
//   floor(D m n) entries of largest |W_ij| over the whole matrix (the exact Frobenius projection
//   onto matrices with that many non-zeros, as Wanda's magnitude baseline prunes a whole layer);
//   with stats (sm_fit_opts.stats), Wanda's score |W_ij| ||x_j|| (||x_j|| = sqrt(sqsum_j), or
//   sqrt(H_jj) with only a Gram) compared within each output row, floor(D n) kept per row.
// - nm=N:M: exactly N entries of every group of M consecutive columns of every row (M | n), the
//   N of largest |W_ij| (or Wanda score); e.g. 2:4.
// Ties go to the lower column (row-major index). With a calibration Gram H, the kept values of
// each row are then the exact least-squares update for the fixed mask S (what ADMM pruning
// converges to): w_S = (H_SS + lambda I)^-1 ((H + lambda I) w)_S, minimizing
// ||X (w - w')||^2 + lambda ||w - w'||^2 with lambda = 1% of H's mean diagonal (actaware.h).
//
// Storage (values F32, in row-major order of the kept entries), bytes counted in full:
// - format=bitmap: "mask" U8 (m, ceil(n/8)): bit c % 8 of byte c / 8 of row i is set when W_ij
//   is stored (bits past n are 0); "values" F32 (nnz). m ceil(n/8) + 4 nnz bytes.
// - format=csr: "indptr" I32 (m + 1), "indices" U16 when n <= 65536 else I32 (nnz), increasing
//   within a row, "values" F32 (nnz). 4 (m + 1) + 2 or 4 nnz + 4 nnz bytes.
// - nm=N:M: "mask" as for bitmap (exactly N bits per group) and "values" F32 (m, N n / M).
// format=auto (the default) takes the smaller of the two: with u16 indices, csr below density
// ~1/16 and bitmap above. The canonical spec names the format chosen.
#include "actaware.h"
#include "op_impl.h"
#include "sparse_kernels.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SP_BITMAP = 0, SP_CSR = 1 };
#define SP_TILE 64 // rows decoded at a time for N > 1 products of bitmap storage

typedef struct sparse {
    int fmt;         // SP_BITMAP (also nm) or SP_CSR
    int64_t N, M;    // nm=N:M, or 0 and 0
    int64_t nnz, mb; // stored values; mask bytes per row, ceil(n/8)
    uint8_t *mask;   // bitmap: (m, mb)
    int32_t *indptr; // csr: (m + 1)
    uint16_t *idx16; // csr, n <= 65536: (nnz)
    int32_t *idx32;  // csr, n > 65536: (nnz)
    float *values;   // (nnz + SM_SPARSE_PAD)
} sparse;

#define SP(op) ((sparse *)(op)->impl)

static void sparse_free(void *impl) {
    sparse *s = impl;
    sm_free(s->mask), sm_free(s->indptr), sm_free(s->idx16), sm_free(s->idx32);
    sm_free(s->values);
    free(s);
}

typedef struct sparse_cfg {
    int64_t N, M; // nm mode when M > 0
    double density;
    int format; // 0 auto, 1 bitmap, 2 csr
} sparse_cfg;

// "N:M" with 1 <= N <= M.
static sm_status parse_nm(const char *v, int64_t *N, int64_t *M) {
    char *end;
    const char *p = v;
    if (*p < '0' || *p > '9') goto bad;
    long long a = strtoll(p, &end, 10);
    if (*end != ':' || end[1] < '0' || end[1] > '9') goto bad;
    long long b = strtoll(end + 1, &end, 10);
    if (*end || a < 1 || b < 1 || a > b || b > INT32_MAX) goto bad;
    *N = a, *M = b;
    return SM_OK;
bad:
    return sm_fail(SM_ERR_SPEC, "sparse: nm=%s is not N:M with 1 <= N <= M (e.g. nm=2:4)", v);
}

static sm_status sparse_config(const sm_term *t, int64_t m, int64_t n, bool loading,
                               sparse_cfg *c) {
    memset(c, 0, sizeof *c);
    const sm_item *nm = sm_term_find(t, "nm");
    bool has_d = sm_term_find(t, "density"), has_r = sm_term_find(t, "ratio");
    if (nm) {
        if (has_d || has_r || sm_term_find(t, "format"))
            return sm_fail(SM_ERR_SPEC, "sparse: nm=N:M fixes the density and the storage; give "
                                        "no density=, ratio= or format= with it");
        sm_status st = parse_nm(nm->value, &c->N, &c->M);
        if (st != SM_OK) return st;
        if (n % c->M)
            return sm_fail(SM_ERR_SPEC,
                           "sparse: nm=%s needs M=%lld to divide the %lld columns "
                           "(in) of the %lldx%lld matrix",
                           nm->value, (long long)c->M, (long long)n, (long long)m, (long long)n);
        c->density = (double)c->N / (double)c->M;
        return SM_OK;
    }
    if (has_d && has_r) return sm_fail(SM_ERR_SPEC, "sparse: give density= or ratio=, not both");
    if (!has_d && !has_r)
        return sm_fail(SM_ERR_SPEC, "sparse: needs density=D or ratio=X (0 < D <= 1) or nm=N:M");
    sm_status st = sm_term_real(t, has_d ? "density" : "ratio", 0, 1e-12, 1.0, &c->density);
    if (st == SM_OK) st = sm_term_choice(t, "format", "auto|bitmap|csr", 0, &c->format);
    if (st == SM_OK && loading && c->format == 0)
        st = sm_fail(SM_ERR_SPEC, "sparse: a stored spec needs format=bitmap or format=csr");
    return st;
}

// --- selection ---------------------------------------------------------------------------------

// The k-th largest of x (len), k >= 1; x is reordered.
static float kth_largest(float *x, int64_t len, int64_t k) {
    int64_t lo = 0, hi = len - 1, want = k - 1;
    while (lo < hi) {
        float pivot = x[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (x[i] > pivot) i++;
            while (x[j] < pivot) j--;
            if (i <= j) {
                float t = x[i];
                x[i] = x[j], x[j] = t;
                i++, j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    return x[want];
}

// keep[i] = 1 for the k largest of score (len), ties to the lower index; tmp (len) scratch.
static void select_top(const float *score, int64_t len, int64_t k, float *tmp, uint8_t *keep) {
    memset(keep, 0, (size_t)len);
    if (k <= 0) return;
    if (k >= len) {
        memset(keep, 1, (size_t)len);
        return;
    }
    memcpy(tmp, score, (size_t)len * sizeof(float));
    float thr = kth_largest(tmp, len, k);
    int64_t above = 0;
    for (int64_t i = 0; i < len; i++) above += score[i] > thr;
    int64_t ties = k - above;
    for (int64_t i = 0; i < len; i++)
        if (score[i] > thr || (score[i] == thr && ties-- > 0)) keep[i] = 1;
}

// The mask keep (m, n) for the configuration; scores (m n) and tmp are scratch.
static sm_status select_mask(const float *W, int64_t m, int64_t n, const sparse_cfg *c,
                             const sm_fit_opts *o, uint8_t *keep, int64_t *nnz) {
    float *score = sm_alloc((size_t)(m * n) * sizeof(float));
    float *tmp = sm_alloc((size_t)(m * n) * sizeof(float));
    double *norms = sm_alloc((size_t)n * sizeof(double));
    sm_status st = score && tmp && norms ? SM_OK : sm_fail(SM_ERR_ALLOC, "sparse: out of memory");
    bool wanda = o && o->stats;
    if (st == SM_OK && wanda) st = sm_act_norms(o->stats, n, norms);
    if (st == SM_OK)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                score[i * n + j] = fabsf(W[i * n + j]) * (wanda ? (float)norms[j] : 1.0f);
    if (st == SM_OK && c->M > 0) {
        for (int64_t g = 0; g < m * n / c->M; g++)
            select_top(score + g * c->M, c->M, c->N, tmp, keep + g * c->M);
    } else if (st == SM_OK && wanda) { // per output row, as Wanda compares
        int64_t k = (int64_t)floor(c->density * (double)n + 1e-9);
        if (k < 1)
            st = sm_fail(SM_ERR_SPEC,
                         "sparse: density=%g keeps no entry of a row of %lld (with "
                         "calibration, each row keeps floor(D n))",
                         c->density, (long long)n);
        for (int64_t i = 0; i < m && st == SM_OK; i++)
            select_top(score + i * n, n, k, tmp, keep + i * n);
    } else if (st == SM_OK) {
        int64_t k = (int64_t)floor(c->density * (double)m * (double)n + 1e-9);
        if (k < 1)
            st = sm_fail(SM_ERR_SPEC, "sparse: density=%g keeps no entry of a %lldx%lld matrix",
                         c->density, (long long)m, (long long)n);
        else
            select_top(score, m * n, k, tmp, keep);
    }
    *nnz = 0;
    for (int64_t i = 0; i < m * n && st == SM_OK; i++) *nnz += keep[i];
    if (st == SM_OK && *nnz > INT32_MAX - SM_SPARSE_PAD)
        st = sm_fail(SM_ERR_UNSUPPORTED,
                     "sparse: %lld stored values are more than the 32-bit "
                     "offsets hold",
                     (long long)*nnz);
    sm_free(score), sm_free(tmp), sm_free(norms);
    return st;
}

// Row i's kept values vals (k) = the least-squares update for the fixed mask keep (n) under the
// damped Gram: (H_SS + lambda I) v = (H w)_S + lambda w_S. A (k, k) and b (k) scratch.
static sm_status ls_update_row(const float *w, const uint8_t *keep, int64_t n, const double *H,
                               double lambda, int *S, double *A, double *b, float *vals) {
    int64_t k = 0;
    for (int64_t j = 0; j < n; j++)
        if (keep[j]) S[k++] = (int)j;
    if (k == 0) return SM_OK;
    for (int64_t a = 0; a < k; a++) {
        const double *h = H + (int64_t)S[a] * n;
        double s = lambda * w[S[a]];
        for (int64_t j = 0; j < n; j++) s += h[j] * w[j];
        b[a] = s;
        for (int64_t c = 0; c < k; c++) A[a * k + c] = h[S[c]];
        A[a * k + a] += lambda;
    }
    lapack_int info =
        LAPACKE_dposv(LAPACK_ROW_MAJOR, 'L', (lapack_int)k, 1, A, (lapack_int)k, b, 1);
    if (info != 0)
        return sm_fail(SM_ERR_NUMERIC,
                       "sparse: the damped Gram restricted to a row's mask is not "
                       "positive definite (dposv info %d)",
                       (int)info);
    for (int64_t a = 0; a < k; a++) vals[a] = (float)b[a];
    return SM_OK;
}

// --- storage -------------------------------------------------------------------------------------

static int64_t bytes_of(int fmt, int64_t m, int64_t n, int64_t nnz) {
    if (fmt == SP_BITMAP) return m * ((n + 7) / 8) + 4 * nnz;
    return 4 * (m + 1) + (n <= 65536 ? 2 : 4) * nnz + 4 * nnz;
}

static sm_status alloc_storage(sparse *s, int64_t m, int64_t n) {
    s->mb = (n + 7) / 8;
    s->values = sm_calloc((size_t)(s->nnz + SM_SPARSE_PAD), sizeof(float));
    if (s->fmt == SP_BITMAP) {
        s->mask = sm_calloc((size_t)(m * s->mb), 1);
    } else {
        s->indptr = sm_alloc((size_t)(m + 1) * sizeof(int32_t));
        if (n <= 65536)
            s->idx16 = sm_alloc((size_t)(s->nnz > 0 ? s->nnz : 1) * sizeof(uint16_t));
        else
            s->idx32 = sm_alloc((size_t)(s->nnz > 0 ? s->nnz : 1) * sizeof(int32_t));
    }
    if (!s->values || (s->fmt == SP_BITMAP ? !s->mask : !s->indptr || (!s->idx16 && !s->idx32)))
        return sm_fail(SM_ERR_ALLOC, "sparse: out of memory for %lld values", (long long)s->nnz);
    return SM_OK;
}

static sm_status sparse_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    int64_t m = op->m, n = op->n;
    sparse_cfg c;
    sm_status st = sparse_config(t, m, n, false, &c);
    if (st != SM_OK) return st;
    sparse *s = calloc(1, sizeof *s);
    uint8_t *keep = sm_alloc((size_t)(m * n));
    if (!s || !keep) {
        free(s), sm_free(keep);
        return sm_fail(SM_ERR_ALLOC, "sparse: out of memory");
    }
    s->N = c.N, s->M = c.M;
    st = select_mask(W, m, n, &c, o, keep, &s->nnz);
    if (st == SM_OK) {
        if (c.M > 0 || c.format == 1)
            s->fmt = SP_BITMAP;
        else if (c.format == 2)
            s->fmt = SP_CSR;
        else
            s->fmt = bytes_of(SP_CSR, m, n, s->nnz) < bytes_of(SP_BITMAP, m, n, s->nnz) ? SP_CSR
                                                                                        : SP_BITMAP;
        st = alloc_storage(s, m, n);
    }
    int64_t pos = 0;
    for (int64_t i = 0; i < m && st == SM_OK; i++) {
        if (s->fmt == SP_CSR) s->indptr[i] = (int32_t)pos;
        for (int64_t j = 0; j < n; j++) {
            if (!keep[i * n + j]) continue;
            if (s->fmt == SP_BITMAP)
                s->mask[i * s->mb + j / 8] |= (uint8_t)(1u << (j % 8));
            else if (s->idx16)
                s->idx16[pos] = (uint16_t)j;
            else
                s->idx32[pos] = (int32_t)j;
            s->values[pos++] = W[i * n + j];
        }
    }
    if (st == SM_OK && s->fmt == SP_CSR) s->indptr[m] = (int32_t)pos;
    if (st == SM_OK && o && o->stats && o->stats->gram) { // least-squares update per row
        double lambda;
        int *S = sm_alloc((size_t)n * sizeof(int));
        double *A = NULL, *b = sm_alloc((size_t)n * sizeof(double));
        int64_t kmax = 0;
        for (int64_t i = 0; i < m; i++) {
            int64_t k = 0;
            for (int64_t j = 0; j < n; j++) k += keep[i * n + j];
            if (k > kmax) kmax = k;
        }
        A = sm_alloc((size_t)(kmax * kmax + 1) * sizeof(double));
        st = S && A && b ? sm_act_lambda(o->stats, n, &lambda)
                         : sm_fail(SM_ERR_ALLOC, "sparse: out of memory for the update");
        float *vals = s->values;
        for (int64_t i = 0; i < m && st == SM_OK; i++) {
            st = ls_update_row(W + i * n, keep + i * n, n, o->stats->gram, lambda, S, A, b, vals);
            for (int64_t j = 0; j < n; j++) vals += keep[i * n + j];
        }
        sm_free(S), sm_free(A), sm_free(b);
    }
    sm_free(keep);
    if (st != SM_OK) {
        sparse_free(s);
        return st;
    }
    op->impl = s;
    sm_canon cn;
    sm_canon_init(&cn, "sparse");
    if (c.M > 0) {
        sm_canon_add(&cn, "nm", "%lld:%lld", (long long)c.N, (long long)c.M);
    } else {
        sm_canon_add(&cn, "density", "%g", c.density);
        sm_canon_add(&cn, "format", "%s", s->fmt == SP_CSR ? "csr" : "bitmap");
    }
    return sm_op_set_spec(op, &cn);
}

// --- load ----------------------------------------------------------------------------------------

static const sm_part *find_part(const sm_part *parts, int nparts, const char *name, sm_dtype dt,
                                int ndim, int64_t d0, int64_t d1, size_t esize) {
    const sm_part *p = sm_parts_find(parts, nparts, name);
    if (!p) return NULL;
    bool ok = p->dtype == dt && p->ndim == ndim && p->shape[0] == d0 &&
              (ndim == 1 || p->shape[1] == d1) &&
              p->nbytes == (size_t)(d0 * (ndim == 1 ? 1 : d1)) * esize;
    if (!ok) {
        if (ndim == 1)
            sm_fail(SM_ERR_FORMAT,
                    "part \"%s\" is %s with %d dims [%lld, ...] (%zu bytes), "
                    "expected %s [%lld]",
                    name, sm_dtype_name(p->dtype), p->ndim, (long long)p->shape[0], p->nbytes,
                    sm_dtype_name(dt), (long long)d0);
        else
            sm_fail(SM_ERR_FORMAT,
                    "part \"%s\" is %s with %d dims [%lld, %lld] (%zu bytes), "
                    "expected %s [%lld, %lld]",
                    name, sm_dtype_name(p->dtype), p->ndim, (long long)p->shape[0],
                    (long long)(p->ndim > 1 ? p->shape[1] : 0), p->nbytes, sm_dtype_name(dt),
                    (long long)d0, (long long)d1);
        return NULL;
    }
    return p;
}

// Checks a loaded mask: no bits past n, and exactly N per group of M when nm.
static sm_status check_mask(const sparse *s, int64_t m, int64_t n, int64_t *nnz) {
    *nnz = 0;
    for (int64_t i = 0; i < m; i++) {
        const uint8_t *mr = s->mask + i * s->mb;
        if (n % 8 && mr[s->mb - 1] >> (n % 8))
            return sm_fail(SM_ERR_FORMAT, "part \"mask\": row %lld has bits set past column %lld",
                           (long long)i, (long long)n);
        for (int64_t k = 0; k < s->mb; k++) *nnz += __builtin_popcount(mr[k]);
        if (s->M > 0)
            for (int64_t g = 0; g < n / s->M; g++) {
                int64_t cnt = 0;
                for (int64_t j = g * s->M; j < (g + 1) * s->M; j++)
                    cnt += (mr[j / 8] >> (j % 8)) & 1;
                if (cnt != s->N)
                    return sm_fail(SM_ERR_FORMAT,
                                   "part \"mask\": row %lld, group %lld has %lld "
                                   "entries, nm=%lld:%lld needs exactly %lld",
                                   (long long)i, (long long)g, (long long)cnt, (long long)s->N,
                                   (long long)s->M, (long long)s->N);
            }
    }
    return SM_OK;
}

static sm_status sparse_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t m = op->m, n = op->n;
    sparse_cfg c;
    sm_status st = sparse_config(t, m, n, true, &c);
    if (st != SM_OK) return st;
    sparse *s = calloc(1, sizeof *s);
    if (!s) return sm_fail(SM_ERR_ALLOC, "out of memory");
    s->N = c.N, s->M = c.M, s->mb = (n + 7) / 8;
    s->fmt = c.M > 0 || c.format == 1 ? SP_BITMAP : SP_CSR;
    const sm_part *pm = NULL, *pp = NULL, *pi = NULL, *pv = NULL;
    if (s->fmt == SP_BITMAP) {
        pm = find_part(parts, nparts, "mask", SM_DTYPE_U8, 2, m, s->mb, 1);
        st = pm ? SM_OK : SM_ERR_FORMAT;
        if (st == SM_OK) {
            s->mask = sm_alloc((size_t)(m * s->mb));
            if (!s->mask) st = sm_fail(SM_ERR_ALLOC, "out of memory");
        }
        if (st == SM_OK) {
            memcpy(s->mask, pm->data, (size_t)(m * s->mb));
            st = check_mask(s, m, n, &s->nnz);
        }
        if (st == SM_OK)
            pv = c.M > 0 ? find_part(parts, nparts, "values", SM_DTYPE_F32, 2, m, n / c.M * c.N, 4)
                         : find_part(parts, nparts, "values", SM_DTYPE_F32, 1, s->nnz, 0, 4);
    } else {
        pp = find_part(parts, nparts, "indptr", SM_DTYPE_I32, 1, m + 1, 0, 4);
        st = pp ? SM_OK : SM_ERR_FORMAT;
        if (st == SM_OK) {
            s->indptr = sm_alloc((size_t)(m + 1) * sizeof(int32_t));
            if (!s->indptr) st = sm_fail(SM_ERR_ALLOC, "out of memory");
        }
        if (st == SM_OK) {
            memcpy(s->indptr, pp->data, (size_t)(m + 1) * sizeof(int32_t));
            if (s->indptr[0] != 0)
                st = sm_fail(SM_ERR_FORMAT, "part \"indptr\" does not start at 0");
            for (int64_t i = 0; i < m && st == SM_OK; i++)
                if (s->indptr[i + 1] < s->indptr[i] || s->indptr[i + 1] - s->indptr[i] > n)
                    st = sm_fail(SM_ERR_FORMAT,
                                 "part \"indptr\": row %lld has %lld entries "
                                 "(must be 0 .. %lld)",
                                 (long long)i, (long long)s->indptr[i + 1] - s->indptr[i],
                                 (long long)n);
            s->nnz = s->indptr[m];
            if (st == SM_OK && s->nnz > INT32_MAX - SM_SPARSE_PAD)
                st = sm_fail(SM_ERR_FORMAT, "part \"indptr\": too many values");
        }
        bool i16 = n <= 65536;
        if (st == SM_OK) {
            pi = find_part(parts, nparts, "indices", i16 ? SM_DTYPE_U16 : SM_DTYPE_I32, 1, s->nnz,
                           0, i16 ? 2 : 4);
            if (!pi) st = SM_ERR_FORMAT;
        }
        if (st == SM_OK) {
            size_t cnt = (size_t)(s->nnz > 0 ? s->nnz : 1);
            if (i16)
                s->idx16 = sm_alloc(cnt * sizeof(uint16_t));
            else
                s->idx32 = sm_alloc(cnt * sizeof(int32_t));
            if (!s->idx16 && !s->idx32) st = sm_fail(SM_ERR_ALLOC, "out of memory");
        }
        if (st == SM_OK) {
            memcpy(i16 ? (void *)s->idx16 : (void *)s->idx32, pi->data, pi->nbytes);
            for (int64_t i = 0; i < m && st == SM_OK; i++)
                for (int32_t k = s->indptr[i]; k < s->indptr[i + 1]; k++) {
                    int64_t col = i16 ? s->idx16[k] : s->idx32[k];
                    int64_t prev =
                        k > s->indptr[i] ? (i16 ? s->idx16[k - 1] : s->idx32[k - 1]) : -1;
                    if (col < 0 || col >= n || col <= prev) {
                        st = sm_fail(SM_ERR_FORMAT,
                                     "part \"indices\": row %lld has column %lld "
                                     "(columns must increase within a row and be < %lld)",
                                     (long long)i, (long long)col, (long long)n);
                        break;
                    }
                }
        }
        if (st == SM_OK) pv = find_part(parts, nparts, "values", SM_DTYPE_F32, 1, s->nnz, 0, 4);
    }
    if (st == SM_OK && !pv) st = SM_ERR_FORMAT;
    if (st == SM_OK) {
        s->values = sm_calloc((size_t)(s->nnz + SM_SPARSE_PAD), sizeof(float));
        if (!s->values) st = sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    if (st == SM_OK) {
        memcpy(s->values, pv->data, (size_t)s->nnz * sizeof(float));
        for (int64_t k = 0; k < s->nnz && st == SM_OK; k++)
            if (!isfinite(s->values[k]))
                st = sm_fail(SM_ERR_NUMERIC,
                             "part \"values\" has a non-finite value at "
                             "element %lld",
                             (long long)k);
    }
    if (st != SM_OK) {
        sparse_free(s);
        return st;
    }
    op->impl = s;
    return SM_OK;
}

// --- apply ---------------------------------------------------------------------------------------

static size_t sparse_workspace(const sm_op *op, int64_t N) {
    const sparse *s = SP(op);
    if (N <= 1) return 0;
    if (s->fmt == SP_BITMAP) return (size_t)((op->m < SP_TILE ? op->m : SP_TILE) * op->n);
    return (size_t)((op->m + op->n) * N + N);
}

// Y (N, m) = X (N, n) W^T
static void sparse_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const sparse *s = SP(op);
    const sm_sparse_kernels *k = sm_sparse_kernels_get();
    int64_t m = op->m, n = op->n;
    if (s->fmt == SP_BITMAP) {
        if (N == 1) {
            k->bitmap_gemv(m, n, s->mask, s->values, X, Y);
            return;
        }
        // Decoded tiles of rows and a GEMM: at the densities bitmaps are chosen for, a sparse
        // batch product cannot beat BLAS on the dense tile.
        const float *vals = s->values;
        for (int64_t r0 = 0; r0 < m; r0 += SP_TILE) {
            int64_t r1 = r0 + SP_TILE < m ? r0 + SP_TILE : m;
            k->bitmap_decode(r1 - r0, n, s->mask + r0 * s->mb, vals, work);
            for (int64_t b = r0 * s->mb; b < r1 * s->mb; b++)
                vals += __builtin_popcount(s->mask[b]);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)(r1 - r0), (int)n,
                        1.0f, X, (int)n, work, (int)n, 0.0f, Y + r0, (int)m);
        }
        return;
    }
    if (N == 1) {
        if (s->idx16)
            k->csr16_gemv(m, s->indptr, s->idx16, s->values, X, Y);
        else
            k->csr32_gemv(m, s->indptr, s->idx32, s->values, X, Y);
        return;
    }
    // CSR batch: Xt (n, N) so that each stored value scales one contiguous row of N.
    float *Xt = work, *acc = work + n * N;
    for (int64_t b = 0; b < N; b++)
        for (int64_t j = 0; j < n; j++) Xt[j * N + b] = X[b * n + j];
    for (int64_t i = 0; i < m; i++) {
        memset(acc, 0, (size_t)N * sizeof(float));
        for (int32_t q = s->indptr[i]; q < s->indptr[i + 1]; q++)
            k->axpy(N, s->values[q], Xt + (int64_t)(s->idx16 ? s->idx16[q] : s->idx32[q]) * N, acc);
        for (int64_t b = 0; b < N; b++) Y[b * m + i] = acc[b];
    }
}

// X (N, n) = Y (N, m) W
static void sparse_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const sparse *s = SP(op);
    const sm_sparse_kernels *k = sm_sparse_kernels_get();
    int64_t m = op->m, n = op->n;
    if (s->fmt == SP_BITMAP && N == 1) {
        memset(X, 0, (size_t)n * sizeof(float));
        k->bitmap_gemv_t(m, n, s->mask, s->values, Y, X);
        return;
    }
    if (s->fmt == SP_BITMAP) {
        const float *vals = s->values;
        for (int64_t r0 = 0; r0 < m; r0 += SP_TILE) {
            int64_t r1 = r0 + SP_TILE < m ? r0 + SP_TILE : m;
            k->bitmap_decode(r1 - r0, n, s->mask + r0 * s->mb, vals, work);
            for (int64_t b = r0 * s->mb; b < r1 * s->mb; b++)
                vals += __builtin_popcount(s->mask[b]);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)n, (int)(r1 - r0),
                        1.0f, Y + r0, (int)m, work, (int)n, r0 == 0 ? 0.0f : 1.0f, X, (int)n);
        }
        return;
    }
    if (N == 1) {
        memset(X, 0, (size_t)n * sizeof(float));
        for (int64_t i = 0; i < m; i++)
            for (int32_t q = s->indptr[i]; q < s->indptr[i + 1]; q++)
                X[s->idx16 ? s->idx16[q] : s->idx32[q]] += s->values[q] * Y[i];
        return;
    }
    float *Yt = work, *Xt = work + m * N; // (m, N), (n, N)
    for (int64_t b = 0; b < N; b++)
        for (int64_t i = 0; i < m; i++) Yt[i * N + b] = Y[b * m + i];
    memset(Xt, 0, (size_t)(n * N) * sizeof(float));
    for (int64_t i = 0; i < m; i++) {
        const float *yr = Yt + i * N;
        for (int32_t q = s->indptr[i]; q < s->indptr[i + 1]; q++)
            k->axpy(N, s->values[q], yr, Xt + (int64_t)(s->idx16 ? s->idx16[q] : s->idx32[q]) * N);
    }
    for (int64_t b = 0; b < N; b++)
        for (int64_t j = 0; j < n; j++) X[b * n + j] = Xt[j * N + b];
}

static sm_status sparse_to_dense(const sm_op *op, float *W) {
    const sparse *s = SP(op);
    if (s->fmt == SP_BITMAP) {
        sm_sparse_kernels_get()->bitmap_decode(op->m, op->n, s->mask, s->values, W);
        return SM_OK;
    }
    memset(W, 0, (size_t)(op->m * op->n) * sizeof(float));
    for (int64_t i = 0; i < op->m; i++)
        for (int32_t q = s->indptr[i]; q < s->indptr[i + 1]; q++)
            W[i * op->n + (s->idx16 ? s->idx16[q] : s->idx32[q])] = s->values[q];
    return SM_OK;
}

static int64_t sparse_nparams(const sm_op *op) {
    return SP(op)->nnz;
}

static int64_t sparse_nbytes(const sm_op *op) {
    return bytes_of(SP(op)->fmt, op->m, op->n, SP(op)->nnz);
}

static void set_part(sm_part *p, const char *name, sm_dtype dt, int ndim, int64_t d0, int64_t d1,
                     const void *data, size_t esize) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->dtype = dt;
    p->ndim = ndim;
    p->shape[0] = d0;
    if (ndim > 1) p->shape[1] = d1;
    p->data = data;
    p->nbytes = (size_t)(d0 * (ndim > 1 ? d1 : 1)) * esize;
}

static int sparse_parts(const sm_op *op, sm_part *out, int cap) {
    const sparse *s = SP(op);
    int count = s->fmt == SP_BITMAP ? 2 : 3;
    if (!out || cap < count) return count;
    if (s->fmt == SP_BITMAP) {
        set_part(&out[0], "mask", SM_DTYPE_U8, 2, op->m, s->mb, s->mask, 1);
        if (s->M > 0)
            set_part(&out[1], "values", SM_DTYPE_F32, 2, op->m, op->n / s->M * s->N, s->values, 4);
        else
            set_part(&out[1], "values", SM_DTYPE_F32, 1, s->nnz, 0, s->values, 4);
    } else {
        set_part(&out[0], "indptr", SM_DTYPE_I32, 1, op->m + 1, 0, s->indptr, 4);
        if (s->idx16)
            set_part(&out[1], "indices", SM_DTYPE_U16, 1, s->nnz, 0, s->idx16, 2);
        else
            set_part(&out[1], "indices", SM_DTYPE_I32, 1, s->nnz, 0, s->idx32, 4);
        set_part(&out[2], "values", SM_DTYPE_F32, 1, s->nnz, 0, s->values, 4);
    }
    return count;
}

const sm_op_vtbl sm_vtbl_sparse = {
    .name = "sparse",
    .keys = "density,ratio,nm,format",
    .help = "  density=D    keep floor(D m n) entries of largest |W| (with calibration: Wanda's\n"
            "               |W| ||x||, floor(D n) per row; a Gram adds the least-squares update)\n"
            "  ratio=X      the same as density=X (nparams = stored values <= X m n)\n"
            "  nm=N:M       exactly N of every M consecutive entries of each row (M | in)\n"
            "  format=auto  bitmap (1 bit per entry) or csr (u16/i32 indices); auto: the smaller",
    .fit = sparse_fit,
    .load = sparse_load,
    .apply = sparse_apply,
    .apply_t = sparse_apply_t,
    .workspace = sparse_workspace,
    .to_dense = sparse_to_dense,
    .nparams = sparse_nparams,
    .nbytes = sparse_nbytes,
    .macs = sparse_nparams,
    .parts = sparse_parts,
    .free_impl = sparse_free,
    .projection = true,
};
