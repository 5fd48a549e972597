// The operator front end: spec dispatch, sums of terms, argument checks, parts.
#include "actaware.h"
#include "op_impl.h"

#include <math.h>
#include <string.h>

extern const sm_op_vtbl sm_vtbl_sum;
extern const sm_op_vtbl sm_vtbl_ggml; // src/ops/ggml.c: GGUF block formats

static const sm_op_vtbl *const k_structures[] = {
    &sm_vtbl_dense,     &sm_vtbl_lowrank, &sm_vtbl_monarch, &sm_vtbl_blockdiag,
    &sm_vtbl_blocklowrank, &sm_vtbl_kron, &sm_vtbl_blast,   &sm_vtbl_sparse,
    &sm_vtbl_cur,       &sm_vtbl_rtn,     &sm_vtbl_gptq,    &sm_vtbl_onebit,
    &sm_vtbl_bitstack,  &sm_vtbl_ggml,
};
#define NSTRUCT (int)(sizeof k_structures / sizeof k_structures[0])

static const sm_op_vtbl *find_vtbl(const char *name) {
    for (int i = 0; i < NSTRUCT; i++)
        if (strcmp(k_structures[i]->name, name) == 0) return k_structures[i];
    return NULL;
}

static sm_status unknown_name(const char *name) {
    char list[512] = "";
    size_t len = 0;
    for (int i = 0; i < NSTRUCT && len < sizeof list; i++) // bounded as more structures come
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                k_structures[i]->name);
    return sm_fail(SM_ERR_SPEC, "unknown structure \"%s\" (known: %s)", name, list);
}

const char *sm_spec_help(void) {
    static char buf[8192];
    if (buf[0]) return buf;
    size_t len = 0;
    for (int i = 0; i < NSTRUCT && len < sizeof buf; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s\n%s\n", k_structures[i]->name,
                                k_structures[i]->help);
    if (len >= sizeof buf) return buf; // truncated (snprintf's count may pass the end)
    snprintf(buf + len, sizeof buf - len,
             "sums\n  a+b+...     each term is fitted to the residual of the terms before it;\n"
             "              sums of lowrank and sparse terms then alternate refits of each term\n");
    return buf;
}

sm_status sm_op_set_spec(sm_op *op, const sm_canon *c) {
    free(op->spec);
    op->spec = strdup(c->buf);
    return op->spec ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
}

static sm_op *new_op(const sm_op_vtbl *vt, int64_t m, int64_t n) {
    sm_op *op = calloc(1, sizeof *op);
    if (op) {
        op->vt = vt;
        op->m = m;
        op->n = n;
    }
    return op;
}

void sm_op_free(sm_op *op) {
    if (!op) return;
    if (op->impl && op->vt->free_impl) op->vt->free_impl(op->impl);
    free(op->spec);
    free(op);
}

static sm_status fit_term(const sm_term *t, const float *W, int64_t m, int64_t n,
                          const sm_fit_opts *o, sm_op **out) {
    const sm_op_vtbl *vt = find_vtbl(t->name);
    if (!vt) return unknown_name(t->name);
    if (!vt->fit) return sm_fail(SM_ERR_UNSUPPORTED, "%s: fitting is not built yet", t->name);
    sm_status st = sm_term_check_keys(t, vt->keys);
    if (st != SM_OK) return st;
    sm_op *op = new_op(vt, m, n);
    if (!op) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = vt->fit(op, t, W, o);
    if (st == SM_OK && !op->spec) {
        char buf[1024]; // a parsed term prints in at most 800 bytes
        sm_term_print(t, buf, sizeof buf);
        op->spec = strdup(buf);
    }
    if (st != SM_OK) {
        sm_op_free(op);
        return st;
    }
    *out = op;
    return SM_OK;
}

// --- sums: terms fitted left to right, each to the residual of those before -----------------

typedef struct sum_impl {
    int k;
    sm_op *terms[SM_SPEC_MAX_TERMS];
} sum_impl;

static sm_status build_sum_spec(sm_op *op) {
    sum_impl *s = op->impl;
    size_t len = 0;
    for (int i = 0; i < s->k; i++) len += strlen(s->terms[i]->spec) + 1;
    op->spec = malloc(len + 1);
    if (!op->spec) return sm_fail(SM_ERR_ALLOC, "out of memory");
    op->spec[0] = 0;
    for (int i = 0; i < s->k; i++) {
        if (i) strcat(op->spec, "+");
        strcat(op->spec, s->terms[i]->spec);
    }
    return SM_OK;
}

static void sum_free(void *impl) {
    sum_impl *s = impl;
    for (int i = 0; i < s->k; i++) sm_op_free(s->terms[i]);
    free(s);
}

static void sum_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const sum_impl *s = op->impl;
    float *tmp = work, *sub = work + N * op->m;
    s->terms[0]->vt->apply(s->terms[0], N, X, Y, sub);
    for (int i = 1; i < s->k; i++) {
        s->terms[i]->vt->apply(s->terms[i], N, X, tmp, sub);
        for (int64_t j = 0; j < N * op->m; j++) Y[j] += tmp[j];
    }
}

static void sum_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const sum_impl *s = op->impl;
    float *tmp = work, *sub = work + N * op->n;
    s->terms[0]->vt->apply_t(s->terms[0], N, Y, X, sub);
    for (int i = 1; i < s->k; i++) {
        s->terms[i]->vt->apply_t(s->terms[i], N, Y, tmp, sub);
        for (int64_t j = 0; j < N * op->n; j++) X[j] += tmp[j];
    }
}

static size_t sum_workspace(const sm_op *op, int64_t N) {
    const sum_impl *s = op->impl;
    size_t sub = 0;
    for (int i = 0; i < s->k; i++) {
        size_t w = s->terms[i]->vt->workspace(s->terms[i], N);
        if (w > sub) sub = w;
    }
    size_t big = (size_t)(N * (op->m > op->n ? op->m : op->n));
    return big + sub;
}

static sm_status sum_to_dense(const sm_op *op, float *W) {
    const sum_impl *s = op->impl;
    int64_t mn = op->m * op->n;
    float *tmp = sm_alloc((size_t)mn * sizeof(float)); // to_dense of a sum needs one extra matrix
    if (!tmp) return sm_fail(SM_ERR_ALLOC, "to_dense: out of memory for a %lldx%lld matrix",
                             (long long)op->m, (long long)op->n);
    sm_status st = s->terms[0]->vt->to_dense(s->terms[0], W);
    for (int i = 1; i < s->k && st == SM_OK; i++) {
        st = s->terms[i]->vt->to_dense(s->terms[i], tmp);
        if (st == SM_OK)
            for (int64_t j = 0; j < mn; j++) W[j] += tmp[j];
    }
    sm_free(tmp);
    return st;
}

#define SUM_TOTAL(fn)                                                                            \
    static int64_t sum_##fn(const sm_op *op) {                                                   \
        const sum_impl *s = op->impl;                                                            \
        int64_t t = 0;                                                                           \
        for (int i = 0; i < s->k; i++) t += s->terms[i]->vt->fn(s->terms[i]);                    \
        return t;                                                                                \
    }
SUM_TOTAL(nparams)
SUM_TOTAL(nbytes)
SUM_TOTAL(macs)

static int sum_parts(const sm_op *op, sm_part *out, int cap) {
    const sum_impl *s = op->impl;
    int total = 0;
    for (int i = 0; i < s->k; i++) {
        const sm_op *t = s->terms[i];
        int n = t->vt->parts(t, out ? out + total : NULL, out ? cap - total : 0);
        if (out)
            for (int j = 0; j < n && total + j < cap; j++) {
                char name[sizeof out->name];
                snprintf(name, sizeof name, "%d.%s", i, out[total + j].name);
                memcpy(out[total + j].name, name, sizeof name);
            }
        total += n;
    }
    return total;
}

const sm_op_vtbl sm_vtbl_sum = {
    .name = "sum",
    .apply = sum_apply,
    .apply_t = sum_apply_t,
    .workspace = sum_workspace,
    .to_dense = sum_to_dense,
    .nparams = sum_nparams,
    .nbytes = sum_nbytes,
    .macs = sum_macs,
    .parts = sum_parts,
    .free_impl = sum_free,
};

// --- public entry points --------------------------------------------------------------------

static sm_status check_finite(const float *W, int64_t m, int64_t n) {
    for (int64_t i = 0; i < m * n; i++)
        if (!isfinite(W[i]))
            return sm_fail(SM_ERR_NUMERIC,
                           "the matrix has a non-finite value (%g) at index %lld (row %lld, "
                           "column %lld)",
                           (double)W[i], (long long)i, (long long)(i / n), (long long)(i % n));
    return SM_OK;
}

// BLAS and LAPACK take 32-bit int dimensions: a longer side would be truncated there, so it is
// refused here, before anything is read or allocated. (With both sides <= INT_MAX, m n and the
// byte count m n 4 fit in int64_t and size_t.)
static sm_status check_sides(const char *what, int64_t m, int64_t n) {
    if (m > INT_MAX || n > INT_MAX)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: a %lldx%lld matrix has a side longer than %d, the most BLAS and LAPACK "
                       "take", what, (long long)m, (long long)n, INT_MAX);
    return SM_OK;
}

// Sums whose terms are all projections (sm_op_vtbl.projection: lowrank, sparse) are refined after
// the sequential fit by alternating passes, robust-PCA style for sparse+lowrank (S = P_sparse(W -
// L), L = P_rank(W - S), ...): each term in turn is refitted to W minus the others. A pass is kept
// only when it lowers the fit's objective (Frobenius, or activation-aware with stats), so the sum
// is never worse than the sequential fit; passes stop after SUM_PASSES or when one gains less
// than SUM_TOL of the objective.
#define SUM_PASSES 30
#define SUM_TOL 1e-4

static sm_status sum_alternate(const sm_spec *sp, sum_impl *s, const float *W, int64_t m,
                               int64_t n, const sm_fit_opts *o) {
    int k = s->k;
    for (int i = 0; i < k; i++)
        if (!s->terms[i]->vt->projection) return SM_OK;
    size_t mn = (size_t)(m * n);
    float *D = sm_alloc((size_t)k * mn * sizeof(float)); // (k, m, n) the terms' matrices
    float *R = sm_alloc(mn * sizeof(float)), *T = sm_alloc(mn * sizeof(float));
    sm_op *cur[SM_SPEC_MAX_TERMS];
    sm_status st = D && R && T ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < k; i++) cur[i] = s->terms[i];
    for (int i = 0; i < k && st == SM_OK; i++) st = cur[i]->vt->to_dense(cur[i], D + i * mn);
    double best = INFINITY;
    for (int pass = 0; pass <= SUM_PASSES && st == SM_OK; pass++) {
        for (int i = 0; i < k && pass > 0 && st == SM_OK; i++) {
            memcpy(R, W, mn * sizeof(float));
            for (int j = 0; j < k; j++)
                for (size_t x = 0; x < mn && j != i; x++) R[x] -= D[j * mn + x];
            sm_op *t = NULL;
            st = fit_term(&sp->terms[i], R, m, n, o, &t);
            if (st == SM_OK) st = t->vt->to_dense(t, D + i * mn);
            if (t) {
                if (cur[i] != s->terms[i]) sm_op_free(cur[i]);
                cur[i] = t;
            }
        }
        if (st != SM_OK) break;
        memcpy(T, D, mn * sizeof(float));
        for (int j = 1; j < k; j++)
            for (size_t x = 0; x < mn; x++) T[x] += D[j * mn + x];
        double e = sm_act_objective(W, T, m, n, o->stats);
        if (!(e < best)) break; // not better: keep the terms of the best pass
        for (int i = 0; i < k; i++) {
            if (s->terms[i] != cur[i]) sm_op_free(s->terms[i]);
            s->terms[i] = cur[i];
        }
        double gain = (best - e) / e;
        best = e;
        if (pass > 0 && !(gain >= SUM_TOL)) break;
    }
    for (int i = 0; i < k; i++)
        if (cur[i] != s->terms[i]) sm_op_free(cur[i]);
    sm_free(D), sm_free(R), sm_free(T);
    return st;
}

// A fit of a finite matrix can still overflow float arithmetic (values near FLT_MAX square to Inf
// inside an SVD) or divide by a vanished pivot: an operator holding a NaN or Inf would poison
// every output, so it is refused instead of returned. Every part in a floating-point dtype is
// scanned (codes are integers and cannot be non-finite).
static sm_status check_fitted(const sm_op *op, const float *W, int64_t m, int64_t n) {
    sm_part *parts = NULL;
    int np = 0;
    sm_status st = sm_op_parts(op, &parts, &np);
    for (int i = 0; i < np && st == SM_OK; i++) {
        const sm_part *p = &parts[i];
        const unsigned char *d = p->data;
        size_t esz = sm_dtype_size(p->dtype), count = esz ? p->nbytes / esz : 0;
        for (size_t k = 0; k < count && st == SM_OK; k++) {
            bool bad = false;
            uint16_t h;
            if (p->dtype == SM_DTYPE_F32) {
                float v;
                memcpy(&v, d + 4 * k, 4);
                bad = !isfinite(v);
            } else if (p->dtype == SM_DTYPE_F64) {
                double v;
                memcpy(&v, d + 8 * k, 8);
                bad = !isfinite(v);
            } else if (p->dtype == SM_DTYPE_F16 || p->dtype == SM_DTYPE_BF16) {
                memcpy(&h, d + 2 * k, 2);
                bad = p->dtype == SM_DTYPE_F16 ? (h & 0x7c00) == 0x7c00 : (h & 0x7f80) == 0x7f80;
            } else {
                break; // integer codes, indices, masks
            }
            if (bad) {
                float big = 0;
                for (int64_t j = 0; j < m * n; j++) big = fmaxf(big, fabsf(W[j]));
                st = sm_fail(SM_ERR_NUMERIC,
                             "fit: %s produced a non-finite value (part \"%s\", element %zu): "
                             "float arithmetic overflowed on a %lldx%lld matrix whose largest "
                             "magnitude is %g (values near FLT_MAX, or subnormal ones that get "
                             "inverted, leave float's range: rescale the matrix)",
                             op->spec, p->name, k, (long long)m, (long long)n, (double)big);
            }
        }
    }
    free(parts);
    return st;
}

static sm_status fit_unchecked(const float *W, int64_t m, int64_t n, const char *spec,
                             const sm_fit_opts *opts, sm_op **out);

sm_status sm_op_fit(const float *W, int64_t m, int64_t n, const char *spec,
                    const sm_fit_opts *opts, sm_op **out) {
    sm_status st = fit_unchecked(W, m, n, spec, opts, out);
    if (st == SM_OK && (st = check_fitted(*out, W, m, n)) != SM_OK) {
        sm_op_free(*out);
        *out = NULL;
    }
    return st;
}

// sm_op_fit before the check of the fitted values.
static sm_status fit_unchecked(const float *W, int64_t m, int64_t n, const char *spec,
                             const sm_fit_opts *opts, sm_op **out) {
    *out = NULL;
    if (!W || m <= 0 || n <= 0)
        return sm_fail(SM_ERR_ARG, "fit: need a matrix with m, n >= 1 (got %lldx%lld)",
                       (long long)m, (long long)n);
    sm_status st = check_sides("fit", m, n);
    if (st != SM_OK) return st;
    sm_fit_opts def = {.seed = 0x5eed};
    if (!opts) opts = &def;
    st = check_finite(W, m, n);
    if (st != SM_OK) return st;
    sm_spec *sp;
    st = sm_spec_parse(spec, &sp);
    if (st != SM_OK) return st;
    for (int i = 0; i < sp->nterms; i++)
        if (!find_vtbl(sp->terms[i].name)) {
            st = unknown_name(sp->terms[i].name);
            sm_spec_free(sp);
            return st;
        }
    if (sp->nterms == 1) {
        st = fit_term(&sp->terms[0], W, m, n, opts, out);
        sm_spec_free(sp);
        return st;
    }
    sm_op *op = new_op(&sm_vtbl_sum, m, n);
    sum_impl *s = calloc(1, sizeof *s);
    float *resid = sm_alloc((size_t)(m * n) * sizeof(float));
    float *dense = sm_alloc((size_t)(m * n) * sizeof(float));
    if (!op || !s || !resid || !dense) {
        st = sm_fail(SM_ERR_ALLOC, "out of memory");
    } else {
        op->impl = s;
        memcpy(resid, W, (size_t)(m * n) * sizeof(float));
        for (int i = 0; i < sp->nterms && st == SM_OK; i++) {
            st = fit_term(&sp->terms[i], resid, m, n, opts, &s->terms[i]);
            if (st != SM_OK) break;
            s->k++;
            if (i + 1 == sp->nterms) break; // the last residual is not needed
            st = s->terms[i]->vt->to_dense(s->terms[i], dense);
            for (int64_t j = 0; j < m * n && st == SM_OK; j++) resid[j] -= dense[j];
        }
        if (st == SM_OK) st = sum_alternate(sp, s, W, m, n, opts);
        if (st == SM_OK) st = build_sum_spec(op);
    }
    sm_free(resid);
    sm_free(dense);
    sm_spec_free(sp);
    if (st != SM_OK) {
        if (!op || !op->impl) free(s);
        sm_op_free(op);
        return st;
    }
    *out = op;
    return SM_OK;
}

int64_t sm_op_rows(const sm_op *op) {
    return op->m;
}
int64_t sm_op_cols(const sm_op *op) {
    return op->n;
}
const char *sm_op_spec(const sm_op *op) {
    return op->spec;
}
int64_t sm_op_nparams(const sm_op *op) {
    return op->vt->nparams(op);
}
int64_t sm_op_nbytes(const sm_op *op) {
    return op->vt->nbytes(op);
}
int64_t sm_op_macs(const sm_op *op) {
    return op->vt->macs(op);
}
size_t sm_op_workspace(const sm_op *op, int64_t N) {
    return op->vt->workspace(op, N);
}

int64_t sm_apply_chunk_rows = 0;

static sm_status run_apply(const sm_op *op, int64_t N, const float *in, float *out, float *work,
                           bool transposed) {
    SM_ASSERT(op);
    if (N < 0 || (N > 0 && (!in || !out)))
        return sm_fail(SM_ERR_ARG, "apply: bad arguments (N = %lld)", (long long)N);
    if (N == 0) return SM_OK;
    float *own = NULL;
    size_t need = op->vt->workspace(op, N);
    if (!work && need) {
        own = sm_alloc(need * sizeof(float));
        if (!own) return sm_fail(SM_ERR_ALLOC, "apply: out of memory for workspace");
        work = own;
    }
    // Rows are independent, so a batch too tall for BLAS's int dimensions (some structures pass
    // N times a side as a row count) runs as several shorter ones; work fits each chunk.
    int64_t side = op->m > op->n ? op->m : op->n, chunk = INT_MAX / side;
    if (sm_apply_chunk_rows > 0 && sm_apply_chunk_rows < chunk) chunk = sm_apply_chunk_rows;
    int64_t ld_in = transposed ? op->m : op->n, ld_out = transposed ? op->n : op->m;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        int64_t rows = N - r0 < chunk ? N - r0 : chunk;
        const float *x = in + r0 * ld_in;
        float *y = out + r0 * ld_out;
        if (transposed)
            op->vt->apply_t(op, rows, x, y, work);
        else
            op->vt->apply(op, rows, x, y, work);
    }
    sm_free(own);
    return SM_OK;
}

sm_status sm_op_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    return run_apply(op, N, X, Y, work, false);
}

sm_status sm_op_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    return run_apply(op, N, Y, X, work, true);
}

sm_status sm_op_to_dense(const sm_op *op, float *W) {
    SM_ASSERT(op && W);
    return op->vt->to_dense(op, W);
}

sm_status sm_op_parts(const sm_op *op, sm_part **parts, int *nparts) {
    int n = op->vt->parts(op, NULL, 0);
    *parts = calloc((size_t)(n > 0 ? n : 1), sizeof **parts);
    if (!*parts) return sm_fail(SM_ERR_ALLOC, "out of memory");
    *nparts = op->vt->parts(op, *parts, n);
    return SM_OK;
}

static sm_status load_term(const sm_term *t, int64_t m, int64_t n, const sm_part *parts,
                           int nparts, sm_op **out) {
    const sm_op_vtbl *vt = find_vtbl(t->name);
    if (!vt) return unknown_name(t->name);
    // A registered structure may not load yet (a placeholder): a stored spec naming it must
    // be an error, not a call through a NULL entry.
    if (!vt->load)
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: loading stored operators is not built yet",
                       t->name);
    sm_status st = sm_term_check_keys(t, vt->keys);
    if (st != SM_OK) return st;
    sm_op *op = new_op(vt, m, n);
    char buf[1024]; // a parsed term prints in at most 800 bytes
    sm_term_print(t, buf, sizeof buf);
    if (!op || !(op->spec = strdup(buf))) {
        sm_op_free(op);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    st = vt->load(op, t, parts, nparts);
    if (st != SM_OK) {
        sm_op_free(op);
        return st;
    }
    *out = op;
    return SM_OK;
}

sm_status sm_op_from_parts(const char *spec, int64_t m, int64_t n, const sm_part *parts,
                           int nparts, sm_op **out) {
    *out = NULL;
    if (m <= 0 || n <= 0)
        return sm_fail(SM_ERR_SHAPE, "operator shape %lldx%lld is not positive", (long long)m,
                       (long long)n);
    sm_status st = check_sides("operator", m, n);
    if (st != SM_OK) return st;
    sm_spec *sp;
    st = sm_spec_parse(spec, &sp);
    if (st != SM_OK) return st;
    if (sp->nterms == 1) {
        st = load_term(&sp->terms[0], m, n, parts, nparts, out);
        sm_spec_free(sp);
        return st;
    }
    sm_op *op = new_op(&sm_vtbl_sum, m, n);
    sum_impl *s = calloc(1, sizeof *s);
    sm_part *sub = calloc((size_t)(nparts > 0 ? nparts : 1), sizeof *sub);
    if (!op || !s || !sub) st = sm_fail(SM_ERR_ALLOC, "out of memory");
    if (op && s) op->impl = s;
    for (int i = 0; i < sp->nterms && st == SM_OK; i++) {
        // The parts of term i are those named "<i>.<part>"; pass them on without the prefix.
        char pre[16];
        int pl = snprintf(pre, sizeof pre, "%d.", i), ns = 0;
        for (int j = 0; j < nparts; j++)
            if (strncmp(parts[j].name, pre, (size_t)pl) == 0) {
                sub[ns] = parts[j];
                memmove(sub[ns].name, sub[ns].name + pl, sizeof sub[ns].name - (size_t)pl);
                ns++;
            }
        st = load_term(&sp->terms[i], m, n, sub, ns, &s->terms[i]);
        if (st == SM_OK)
            s->k++;
        else // the structure names parts without the prefix: say which term they belong to
            sm_error_prefix("term %d (parts \"%s*\"): ", i, pre);
    }
    if (st == SM_OK) st = build_sum_spec(op);
    free(sub);
    sm_spec_free(sp);
    if (st != SM_OK) {
        if (!op || !op->impl) free(s);
        sm_op_free(op);
        return st;
    }
    *out = op;
    return SM_OK;
}
