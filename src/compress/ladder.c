// The candidates of one matrix (the "ladder" of sizes per method) and how each is built.
//
// Per (m, n) matrix, from the methods asked for:
//   dense     the matrix as stored; F16 when stored as F32
//   rtn       2, 3, 4 bits x groups 32, 64, 128 (those dividing n) x with/without Hadamard
//             rotation, and 8 bits (group 128); from 4M weights on, groups 64 and 128 only
//   gptq      the same grid (with calibration statistics only), actorder
//   onebit    sign bits + rank-1 magnitudes
//   bitstack  k = m n / (64 (m + n)) (a level costs about 1.25 bpw), 6 levels: every prefix
//   lowrank   ranks whose parameters are 1/64 .. 3/4 of m n, factors in F16, Q8, Q4, all from
//             one SVD (activation-aware with statistics); from 4M weights on 1/16, 1/8, 1/4
//             in Q8 and Q4 (the SVD of a larger rank costs more than all the rest of the
//             matrix's ladder, and such low-rank forms are not chosen below 4 bpw)
//   monarch   4 blocks, ratio 1/4 and 1/2, factors Q8 and Q4
//   blast     4 blocks, ratio 1/4 and 1/2, factors Q8 and Q4 (100 iterations)
//   blockdiag 2 and 4 blocks, Q8 and Q4
//   sparse    density 0.1, and density 0.03 + a Q8 low-rank term of ratio 0.03
//   lorc      2- and 3-bit quantizers (gptq with statistics, else rtn; groups 64 and 128, with
//             and without rotation) + a rank 1/128 .. 1/32 low-rank residual in Q8 and Q4, the
//             ranks from one SVD of the residual
// The grid is dense where the budgets of interest are (2 to 4.5 bpw) so the allocation has
// fine steps; the wide structured forms are few because at these sizes they rarely win and
// their fits (BLAST's gradient iterations, sparse+lowrank's alternation) are the slow ones.
#include "compress_impl.h"

#include "../ops/actaware.h"
#include "../ops/op_impl.h"
#include "../ops/quant.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *const sm_method_names[SM_M_COUNT] = {"dense",     "rtn",     "gptq",    "onebit",
                                                 "bitstack",  "lowrank", "monarch", "blast",
                                                 "blockdiag", "sparse",  "lorc",    "pinned"};

const char *sm_keep_spec(sm_dtype dtype) {
    return dtype == SM_DTYPE_BF16  ? "dense:dtype=bf16"
           : dtype == SM_DTYPE_F16 ? "dense:dtype=f16"
                                   : "dense";
}

typedef struct ladder {
    sm_recipe *r;
    int n, cap, group;
    sm_status st;
} ladder;

static sm_recipe *push(ladder *l, int kind, int method, const char *base) {
    if (l->st != SM_OK) return NULL;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        sm_recipe *r = realloc(l->r, sizeof *r * (size_t)cap);
        if (!r) {
            l->st = sm_fail(SM_ERR_ALLOC, "out of memory");
            return NULL;
        }
        l->r = r, l->cap = cap;
    }
    sm_recipe *r = &l->r[l->n++];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->method = method;
    r->group = l->group;
    snprintf(r->base, sizeof r->base, "%s", base);
    return r;
}

static void fit(ladder *l, int method, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fit(ladder *l, int method, const char *fmt, ...) {
    char spec[112];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(spec, sizeof spec, fmt, ap);
    va_end(ap);
    push(l, SM_RECIPE_FIT, method, spec);
    l->group++;
}

// Ranks whose parameter share r (m + n) / (m n) is each of ratios, without repeats, ascending.
static int ranks_of(int64_t m, int64_t n, const double *ratios, int nr, int64_t *out) {
    int k = 0;
    int64_t full = m < n ? m : n;
    for (int i = 0; i < nr; i++) {
        int64_t r = (int64_t)(ratios[i] * (double)m * (double)n / (double)(m + n));
        if (r < 1) r = 1;
        if (r > full) r = full;
        if (k == 0 || r > out[k - 1]) out[k++] = r;
    }
    return k;
}

static const char *const k_stores[] = {"f32", "f16", "bf16", "q8", "q4"};

// Quantizer specs of the ladder: bits x groups x rotation.
static void quantizers(ladder *l, int method, int64_t n, const int *bits, int nb, const int *groups,
                       int ng, bool lorc, const int64_t *ranks, int nr) {
    const char *name = method == SM_M_GPTQ ? "gptq" : "rtn";
    for (int b = 0; b < nb; b++)
        for (int g = 0; g < ng; g++) {
            if (n % groups[g]) continue;
            for (int rot = 0; rot < 2; rot++) {
                if (bits[b] == 8 && rot) continue;
                char spec[112];
                snprintf(spec, sizeof spec, "%s:bits=%d,group=%d%s%s", name, bits[b], groups[g],
                         strcmp(name, "gptq") ? "" : ",actorder", rot ? ",rotate=hadamard" : "");
                if (!lorc) {
                    push(l, SM_RECIPE_FIT, method, spec);
                } else {
                    static const int st[] = {SM_STORE_Q8, SM_STORE_Q4};
                    for (int r = 0; r < nr; r++)
                        for (int s = 0; s < 2; s++) {
                            sm_recipe *rc = push(l, SM_RECIPE_LORC, SM_M_LORC, spec);
                            if (rc) rc->a = ranks[r], rc->rmax = ranks[nr - 1], rc->store = st[s];
                        }
                }
                l->group++;
            }
        }
}

sm_status sm_ladder(int64_t m, int64_t n, sm_dtype dtype, unsigned methods, bool calib, int solver,
                    sm_recipe **out, int *n_out) {
    ladder l = {0};
    const char *rnd = solver ? ",solver=random" : "";
#define ON(M) (methods & (1u << (M)))
    if (ON(SM_M_DENSE)) {
        fit(&l, SM_M_DENSE, "%s", sm_keep_spec(dtype));
        if (dtype == SM_DTYPE_F32) fit(&l, SM_M_DENSE, "dense:dtype=f16");
    }
    static const int bits[] = {2, 3, 4, 8}, groups[] = {32, 64, 128};
    static const int bits8[] = {8}, g128[] = {128};
    // Matrices of 4M weights and more (a 1B model's) get a coarser grid: their fits and error
    // evaluations cost in proportion, and groups of 32 or ranks in between are rarely chosen.
    bool big = m * n >= ((int64_t)1 << 22);
    const int *gq = big ? groups + 1 : groups, ngq = big ? 2 : 3;
    if (ON(SM_M_RTN)) {
        quantizers(&l, SM_M_RTN, n, bits, 3, gq, ngq, false, NULL, 0);
        if (n % 128 == 0)
            quantizers(&l, SM_M_RTN, n, bits8, 1, g128, 1, false, NULL, 0);
        else
            quantizers(&l, SM_M_RTN, n, bits8, 1, groups, 2, false, NULL, 0);
    }
    if (ON(SM_M_GPTQ) && calib) quantizers(&l, SM_M_GPTQ, n, bits, 3, gq, ngq, false, NULL, 0);
    if (ON(SM_M_ONEBIT)) fit(&l, SM_M_ONEBIT, "onebit");
    if (ON(SM_M_BITSTACK)) {
        int64_t k = m * n / (64 * (m + n)), full = m < n ? m : n;
        if (k < 1) k = 1;
        if (k > full) k = full;
        char base[112];
        snprintf(base, sizeof base, "bitstack:k=%lld,levels=6%s%s", (long long)k,
                 calib ? ",aware" : "", rnd);
        for (int lv = 1; lv <= 6; lv++) {
            sm_recipe *r = push(&l, SM_RECIPE_PREFIX, SM_M_BITSTACK, base);
            if (r) r->a = lv;
        }
        l.group++;
    }
    if (ON(SM_M_LOWRANK)) {
        static const double ratios[] = {1.0 / 64, 1.0 / 32, 1.0 / 16, 1.0 / 8, 3.0 / 16,
                                        1.0 / 4,  3.0 / 8,  1.0 / 2,  3.0 / 4};
        static const double big_ratios[] = {1.0 / 16, 1.0 / 8, 1.0 / 4};
        int64_t ranks[16];
        int nr = big ? ranks_of(m, n, big_ratios, 3, ranks) : ranks_of(m, n, ratios, 9, ranks);
        static const int st[] = {SM_STORE_F16, SM_STORE_Q8, SM_STORE_Q4};
        for (int r = 0; r < nr; r++)
            for (int s = big ? 1 : 0; s < 3; s++) {
                sm_recipe *rc = push(&l, SM_RECIPE_LOWRANK, SM_M_LOWRANK, "");
                if (rc) rc->a = ranks[r], rc->rmax = ranks[nr - 1], rc->store = st[s];
            }
        l.group++;
    }
    static const char *const q[] = {"q8", "q4"};
    for (int s = 0; s < 2; s++) {
        if (ON(SM_M_MONARCH) && m % 4 == 0 && n % 4 == 0) {
            fit(&l, SM_M_MONARCH, "monarch:blocks=4,ratio=0.25,dtype=%s", q[s]);
            fit(&l, SM_M_MONARCH, "monarch:blocks=4,ratio=0.5,dtype=%s", q[s]);
        }
        if (ON(SM_M_BLAST) && m % 4 == 0 && n % 4 == 0) {
            fit(&l, SM_M_BLAST, "blast:blocks=4,ratio=0.25,iters=100,dtype=%s", q[s]);
            fit(&l, SM_M_BLAST, "blast:blocks=4,ratio=0.5,iters=100,dtype=%s", q[s]);
        }
        if (ON(SM_M_BLOCKDIAG)) {
            if (m % 2 == 0 && n % 2 == 0)
                fit(&l, SM_M_BLOCKDIAG, "blockdiag:blocks=2,dtype=%s", q[s]);
            if (m % 4 == 0 && n % 4 == 0)
                fit(&l, SM_M_BLOCKDIAG, "blockdiag:blocks=4,dtype=%s", q[s]);
        }
    }
    if (ON(SM_M_SPARSE)) {
        fit(&l, SM_M_SPARSE, "sparse:density=0.1");
        fit(&l, SM_M_SPARSE, "sparse:density=0.03+lowrank:ratio=0.03,dtype=q8");
    }
    if (ON(SM_M_LORC)) {
        static const double ratios[] = {1.0 / 128, 1.0 / 64, 1.0 / 32};
        int64_t ranks[4];
        int nr = ranks_of(m, n, ratios, 3, ranks);
        static const int b23[] = {2, 3}, g[] = {64, 128};
        quantizers(&l, calib && ON(SM_M_GPTQ) ? SM_M_GPTQ : SM_M_RTN, n, b23, 2, g, 2, true, ranks,
                   nr);
    }
#undef ON
    (void)k_stores;
    if (l.st != SM_OK) {
        free(l.r);
        return l.st;
    }
    *out = l.r;
    *n_out = l.n;
    return SM_OK;
}

// --- building ---------------------------------------------------------------------------------

// Skippable failures: the spec is impossible for this shape, or the fit broke down numerically.
static bool skippable(sm_status s) {
    return s == SM_ERR_SPEC || s == SM_ERR_NUMERIC || s == SM_ERR_SHAPE;
}

// A lowrank operator from the first r columns of L (m, rmax) and rows of R (rmax, n), factors in
// store; prefix "1." (a sum's second term) when as_term.
static sm_status lowrank_from(const float *L, const float *R, int64_t m, int64_t n, int64_t rmax,
                              int64_t r, int store, const char *first_spec, const sm_op *first,
                              sm_op **out) {
    sm_factor fu = {0}, fv = {0};
    sm_status st = sm_factor_init(&fu, m, r, (sm_store)store, L, rmax);
    if (st == SM_OK) st = sm_factor_init(&fv, r, n, (sm_store)store, R, n);
    sm_part *fp = NULL;
    int nfp = 0;
    if (st == SM_OK && first) st = sm_op_parts(first, &fp, &nfp);
    sm_part *parts = st == SM_OK ? calloc((size_t)nfp + 4, sizeof *parts) : NULL;
    if (st == SM_OK && !parts) st = sm_fail(SM_ERR_ALLOC, "out of memory");
    char spec[256];
    if (st == SM_OK) {
        int np = 0;
        for (int j = 0; j < nfp; j++) {
            parts[np] = fp[j];
            snprintf(parts[np].name, sizeof parts[np].name, "0.%s", fp[j].name);
            np++;
        }
        int a = sm_factor_parts(&fu, "U", parts + np);
        int b = sm_factor_parts(&fv, "V", parts + np + a);
        if (first)
            for (int j = np; j < np + a + b; j++) {
                char tmp[48];
                snprintf(tmp, sizeof tmp, "1.%s", parts[j].name);
                memcpy(parts[j].name, tmp, sizeof tmp);
            }
        np += a + b;
        char lr[64];
        if (store == SM_STORE_F32)
            snprintf(lr, sizeof lr, "lowrank:rank=%lld", (long long)r);
        else
            snprintf(lr, sizeof lr, "lowrank:rank=%lld,dtype=%s", (long long)r, k_stores[store]);
        snprintf(spec, sizeof spec, "%s%s%s", first ? first_spec : "", first ? "+" : "", lr);
        st = sm_op_from_parts(spec, m, n, parts, np, out);
    }
    free(parts), free(fp);
    sm_factor_free(&fu), sm_factor_free(&fv);
    return st;
}

// L (m, rmax), R (rmax, n): the rank-rmax factors of A, activation-aware with a Gram.
static sm_status svd_factors(const float *A, int64_t m, int64_t n, int64_t rmax,
                             const sm_stats *stats, int solver, uint64_t seed, float *L, float *R) {
    sm_svd_solver sv = {.kind = solver, .p = 20, .q = 4, .seed = seed};
    if (stats && stats->gram) return sm_act_lowrank_factors(A, m, n, rmax, &sv, stats, L, R);
    return sm_lowrank_factors(A, m, n, n, rmax, &sv, L, rmax, R, n);
}

static sm_status emit(sm_build_fn fn, void *user, int idx, sm_op *op) {
    sm_status st = fn(user, idx, &op);
    sm_op_free(op);
    return st;
}

sm_status sm_build_group(const sm_recipe *rc, int lo, int hi, int only, const float *W, int64_t m,
                         int64_t n, const sm_stats *stats, int solver, uint64_t seed,
                         sm_build_fn fn, void *user, int *skipped) {
    sm_fit_opts fo = {.seed = seed, .stats = stats};
    const sm_recipe *r0 = &rc[lo];
    sm_status st = SM_OK;
    int first = only >= 0 ? only : lo, last = only >= 0 ? only + 1 : hi;
    if (r0->kind == SM_RECIPE_FIT) {
        for (int i = first; i < last && st == SM_OK; i++) {
            sm_op *op = NULL;
            st = sm_op_fit(W, m, n, rc[i].base, &fo, &op);
            if (skippable(st) && rc[i].method != SM_M_PIN) { // a pinned spec must fit
                (*skipped)++;
                st = SM_OK;
                continue;
            }
            if (st == SM_OK) st = emit(fn, user, i, op);
        }
        return st;
    }
    if (r0->kind == SM_RECIPE_PREFIX) {
        sm_op *full = NULL;
        st = sm_op_fit(W, m, n, r0->base, &fo, &full);
        if (skippable(st)) {
            *skipped += last - first;
            return SM_OK;
        }
        for (int i = first; i < last && st == SM_OK; i++) {
            sm_op *op = NULL;
            st = sm_bitstack_prefix(full, rc[i].a, &op);
            if (st == SM_OK) st = emit(fn, user, i, op);
        }
        sm_op_free(full);
        return st;
    }
    // Low-rank ladders: one SVD of W (lowrank) or of the quantizer's residual (lorc).
    int64_t rmax = r0->rmax;
    float *L = sm_alloc((size_t)(m * rmax) * sizeof(float));
    float *R = sm_alloc((size_t)(rmax * n) * sizeof(float));
    float *res = r0->kind == SM_RECIPE_LORC ? sm_alloc((size_t)(m * n) * sizeof(float)) : NULL;
    sm_op *q = NULL;
    if (!L || !R || (r0->kind == SM_RECIPE_LORC && !res))
        st = sm_fail(SM_ERR_ALLOC, "out of memory for a rank-%lld ladder of a %lldx%lld matrix",
                     (long long)rmax, (long long)m, (long long)n);
    if (st == SM_OK && r0->kind == SM_RECIPE_LORC) {
        st = sm_op_fit(W, m, n, r0->base, &fo, &q);
        if (st == SM_OK) st = sm_op_to_dense(q, res);
        for (int64_t i = 0; st == SM_OK && i < m * n; i++) res[i] = W[i] - res[i];
    }
    if (st == SM_OK) st = svd_factors(res ? res : W, m, n, rmax, stats, solver, seed, L, R);
    if (skippable(st)) {
        *skipped += last - first;
        st = SM_OK;
    } else {
        for (int i = first; i < last && st == SM_OK; i++) {
            sm_op *op = NULL;
            st = lowrank_from(L, R, m, n, rmax, rc[i].a, rc[i].store, q ? sm_op_spec(q) : NULL, q,
                              &op);
            if (skippable(st)) {
                (*skipped)++;
                st = SM_OK;
                continue;
            }
            if (st == SM_OK) st = emit(fn, user, i, op);
        }
    }
    sm_op_free(q);
    sm_free(L), sm_free(R), sm_free(res);
    return st;
}
