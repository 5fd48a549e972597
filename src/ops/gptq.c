// gptq:bits=B[,group=64][,sym|asym][,damp=0.01][,actorder][,rotate=none|hadamard]
// GPTQ (Frantar et al., ICLR 2023): columns are quantized one at a time onto the same grids as
// rtn, and each column's rounding error is spread over the columns not yet quantized so as to
// minimise the calibration loss tr(dW H dW^T), H = X^T X the input Gram matrix
// (sm_fit_opts.stats->gram, from `structmat calibrate`). With U the upper Cholesky factor of
// (H + lambda I)^-1, lambda = damp * mean(diag H): e_i = (w_i - q_i) / U_ii and
// W[:, i+1:] -= e_i U[i, i+1:]; updates are applied lazily in blocks of 128 columns (one GEMM
// per block). The result satisfies W0 - Q = E U exactly (up to float rounding).
//
// When a Cholesky factorization fails (H not positive definite even with damping) damp is
// multiplied by 10 and the factorization retried, up to SM_GPTQ_RETRIES times; the canonical
// spec then records the damping that succeeded (e.g. damp=0.1 where 0.01 was asked), which is
// how the retry is reported (the library does not print). Storage, apply and parts are rtn's
// (rtn.c); with rotate=hadamard, W and H are rotated (H' = T_n H T_n^T) before quantizing.
//
// keep-outliers=N: the N largest-|w| weights of W are fixed, i.e. treated as exact. Without
// rotation each keeps its value as GPTQ has updated it when its column comes up (so it absorbs
// the errors of earlier columns, as the rest of its column does), is left out of its group's
// grid, and propagates nothing (its error is 0); the kept value stored is that updated one. With
// rotation single weights do not survive the transform, so they are set to 0 before rotating and
// their original values are kept (as rtn does).
#include "quant.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#define DEFAULT_DAMP 0.01

// Upper Cholesky factor of (A + lambda I)^-1 for A (n, n) double, into U (n, n) float (lower
// part zero). Returns false when A + lambda I or its inverse is not positive definite.
static bool inverse_chol(const double *A, int64_t n, double lambda, double *work, float *U) {
    memcpy(work, A, (size_t)(n * n) * sizeof(double));
    for (int64_t i = 0; i < n; i++) work[i * n + i] += lambda;
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, work, (lapack_int)n) != 0)
        return false;
    if (LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, work, (lapack_int)n) != 0)
        return false;
    for (int64_t i = 0; i < n; i++) // the inverse is in the lower triangle: mirror it
        for (int64_t j = i + 1; j < n; j++) work[i * n + j] = work[j * n + i];
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)n, work, (lapack_int)n) != 0)
        return false;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) U[i * n + j] = j >= i ? (float)work[i * n + j] : 0.0f;
    return true;
}

typedef struct diag_key {
    double d;
    int64_t i;
} diag_key;

static int by_diag_desc(const void *a, const void *b) { // ties keep the lower index first
    const diag_key *x = a, *y = b;
    if (x->d != y->d) return x->d > y->d ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

sm_status sm_gptq_quantize(const float *W0, int64_t m, int64_t n, const double *H0,
                           const sm_qspec *qs, double percdamp, bool actorder, sm_qmat *q,
                           float *Eout, int64_t *perm_out, sm_gptq_info *info) {
    return sm_gptq_quantize_keep(W0, m, n, H0, qs, percdamp, actorder, NULL, NULL, q, Eout,
                                 perm_out, info);
}

// A group's grid, fitted from w (len) without its kept entries (keep in the same order; NULL:
// none), which are replaced by 0 (inside every grid's range) in tmp.
static void grid_fit(const float *w, const uint8_t *keep, int64_t len, const sm_qspec *qs,
                     float *tmp, sm_qgrid *g) {
    if (keep) {
        for (int64_t i = 0; i < len; i++) tmp[i] = keep[i] ? 0.0f : w[i];
        w = tmp;
    }
    sm_qgrid_fit(w, len, qs->bits, qs->sym, g);
}

sm_status sm_gptq_quantize_keep(const float *W0, int64_t m, int64_t n, const double *H0,
                                const sm_qspec *qs, double percdamp, bool actorder,
                                const uint8_t *keep0, float *kept, sm_qmat *q, float *Eout,
                                int64_t *perm_out, sm_gptq_info *info) {
    const int64_t G = qs->group, ng = n / G;
    // Blocks hold whole groups, so a group's grid is chosen from weights that have every
    // earlier column's update applied (GPTQ's own code reads them before the in-block updates).
    int64_t bs = G >= SM_GPTQ_BLOCK ? G : G * (SM_GPTQ_BLOCK / G);
    if (actorder) bs = SM_GPTQ_BLOCK; // static grids: any block size
    double *H = sm_alloc((size_t)(n * n) * sizeof(double));
    double *work = sm_alloc((size_t)(n * n) * sizeof(double));
    float *U = sm_alloc((size_t)(n * n) * sizeof(float));
    float *W = sm_alloc((size_t)(m * n) * sizeof(float));  // (m, n) in processing order
    float *W1 = sm_alloc((size_t)(m * bs) * sizeof(float)); // (m, bs) the current block
    float *E1 = sm_alloc((size_t)(m * bs) * sizeof(float)); // (m, bs) its scaled errors
    uint8_t *codes = sm_alloc((size_t)(m * n));             // (m, n) in processing order
    int64_t *perm = sm_alloc((size_t)n * sizeof(int64_t));
    diag_key *keys = sm_alloc((size_t)n * sizeof(diag_key));
    sm_qgrid *grids = sm_alloc((size_t)(m * (actorder ? ng : 1)) * sizeof(sm_qgrid));
    // keep in processing order, and the current block's part of it (m, bs); a group's scratch
    uint8_t *keep = keep0 ? sm_alloc((size_t)(m * n)) : NULL;
    uint8_t *K1 = keep0 ? sm_alloc((size_t)(m * bs)) : NULL;
    float *gtmp = sm_alloc((size_t)G * sizeof(float));
    sm_status st = SM_OK;
    if (!H || !work || !U || !W || !W1 || !E1 || !codes || !perm || !keys || !grids || !gtmp ||
        (keep0 && (!keep || !K1))) {
        st = sm_fail(SM_ERR_ALLOC, "gptq: out of memory for a %lldx%lld matrix",
                     (long long)m, (long long)n);
        goto done;
    }
    memcpy(H, H0, (size_t)(n * n) * sizeof(double));
    float *Wd = sm_alloc((size_t)(m * n) * sizeof(float)); // dead columns zeroed, column order
    if (!Wd) {
        st = sm_fail(SM_ERR_ALLOC, "gptq: out of memory");
        goto done;
    }
    memcpy(Wd, W0, (size_t)(m * n) * sizeof(float));
    double trace = 0;
    for (int64_t i = 0; i < n; i++) {
        if (H[i * n + i] == 0) { // an input that never fires: GPTQ zeroes its weights
            H[i * n + i] = 1;
            for (int64_t r = 0; r < m; r++) Wd[r * n + i] = 0;
        }
        trace += H[i * n + i];
    }
    for (int64_t i = 0; i < n; i++) keys[i] = (diag_key){H[i * n + i], i};
    if (actorder) {
        qsort(keys, (size_t)n, sizeof *keys, by_diag_desc);
        for (int64_t r = 0; r < m; r++) // static groups: grids of the original weights
            for (int64_t g = 0; g < ng; g++)
                grid_fit(Wd + r * n + g * G, keep0 ? keep0 + r * n + g * G : NULL, G, qs, gtmp,
                         &grids[r * ng + g]);
    }
    for (int64_t i = 0; i < n; i++) perm[i] = keys[i].i;
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < n; i++) W[r * n + i] = Wd[r * n + perm[i]];
    if (keep0)
        for (int64_t r = 0; r < m; r++)
            for (int64_t i = 0; i < n; i++) keep[r * n + i] = keep0[r * n + perm[i]] != 0;
    sm_free(Wd);
    for (int64_t i = 0; i < n; i++) // H in processing order (work as scratch)
        for (int64_t j = 0; j < n; j++) work[i * n + j] = H[perm[i] * n + perm[j]];
    memcpy(H, work, (size_t)(n * n) * sizeof(double));

    double mean = trace / (double)n, pd = percdamp;
    int retries = 0;
    while (!inverse_chol(H, n, pd * mean, work, U)) {
        if (retries == SM_GPTQ_RETRIES) {
            st = sm_fail(SM_ERR_NUMERIC,
                         "gptq: the Gram matrix is not positive definite even with damp=%g "
                         "(raised 10x %d times from damp=%g); check the calibration statistics",
                         pd, retries, percdamp);
            goto done;
        }
        retries++;
        pd = pd > 0 ? pd * 10 : 1e-4; // damp=0 asked: start from a small damping
    }
    info->percdamp = pd;
    info->lambda = pd * mean;
    info->retries = retries;

    for (int64_t i1 = 0; i1 < n; i1 += bs) {
        int64_t i2 = i1 + bs < n ? i1 + bs : n, cnt = i2 - i1;
        for (int64_t r = 0; r < m; r++)
            memcpy(W1 + r * cnt, W + r * n + i1, (size_t)cnt * sizeof(float));
        if (keep)
            for (int64_t r = 0; r < m; r++) memcpy(K1 + r * cnt, keep + r * n + i1, (size_t)cnt);
        for (int64_t i = 0; i < cnt; i++) {
            int64_t col = i1 + i;
            if (!actorder && col % G == 0) // a fresh grid from the weights as updated so far
                for (int64_t r = 0; r < m; r++) {
                    grid_fit(W1 + r * cnt + i, keep ? K1 + r * cnt + i : NULL, G, qs, gtmp,
                             &grids[r]);
                    sm_qmat_set_grid(q, r, col / G, &grids[r]);
                }
            float d = U[col * n + col];
            const float *urow = U + col * n + i1; // U[col, i1 .. i2)
            for (int64_t r = 0; r < m; r++) {
                const sm_qgrid *gr = actorder ? &grids[r * ng + perm[col] / G] : &grids[r];
                float *w = W1 + r * cnt;
                if (keep && K1[r * cnt + i]) { // fixed: exact, nothing to propagate
                    codes[r * n + col] = (uint8_t)sm_qgrid_code(gr, 0.0f);
                    kept[r * n + perm[col]] = w[i];
                    E1[r * cnt + i] = 0;
                    continue;
                }
                int c = sm_qgrid_code(gr, w[i]);
                codes[r * n + col] = (uint8_t)c;
                float e = (w[i] - sm_qgrid_value(gr, c)) / d;
                E1[r * cnt + i] = e;
                for (int64_t j = i + 1; j < cnt; j++) w[j] -= e * urow[j];
            }
        }
        if (Eout)
            for (int64_t r = 0; r < m; r++)
                memcpy(Eout + r * n + i1, E1 + r * cnt, (size_t)cnt * sizeof(float));
        if (i2 < n) // the lazy update of every later column: W[:, i2:] -= E1 U[i1:i2, i2:]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)(n - i2),
                        (int)cnt, -1.0f, E1, (int)cnt, U + i1 * n + i2, (int)n, 1.0f, W + i2,
                        (int)n);
    }
    if (actorder)
        for (int64_t r = 0; r < m; r++)
            for (int64_t g = 0; g < ng; g++) sm_qmat_set_grid(q, r, g, &grids[r * ng + g]);
    for (int64_t r = 0; r < m; r++) { // codes back in column order
        uint8_t *row = q->codes + (size_t)r * q->rb;
        memset(row, 0, q->rb);
        for (int64_t i = 0; i < n; i++) sm_qput(row, perm[i], qs->bits, codes[r * n + i]);
    }
    st = sm_qmat_check_scales(q, "gptq");
    if (perm_out) memcpy(perm_out, perm, (size_t)n * sizeof(int64_t));
done:
    sm_free(H), sm_free(work), sm_free(U), sm_free(W), sm_free(W1), sm_free(E1);
    sm_free(codes), sm_free(perm), sm_free(keys), sm_free(grids);
    sm_free(keep), sm_free(K1), sm_free(gtmp);
    return st;
}

static sm_status gptq_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *opts) {
    int64_t m = op->m, n = op->n;
    sm_qspec qs;
    double damp;
    sm_status st = sm_qspec_from_term(t, m, n, &qs);
    if (st == SM_OK) st = sm_term_real(t, "damp", DEFAULT_DAMP, 0.0, 1e6, &damp);
    if (st == SM_OK) st = sm_term_check_flag(t, "actorder");
    if (st != SM_OK) return st;
    bool actorder = sm_term_flag(t, "actorder");
    const sm_stats *stats = opts->stats;
    if (!stats || !stats->gram)
        return sm_fail(SM_ERR_ARG,
                       "gptq: needs calibration statistics: the input Gram matrix X^T X "
                       "(sm_fit_opts.stats->gram, %lldx%lld, from `structmat calibrate`)",
                       (long long)n, (long long)n);
    for (int64_t i = 0; i < n * n; i++)
        if (!isfinite(stats->gram[i]))
            return sm_fail(SM_ERR_NUMERIC, "gptq: the Gram matrix has a non-finite value at "
                           "[%lld, %lld]", (long long)(i / n), (long long)(i % n));
    sm_qop *o;
    if ((st = sm_qop_new(&qs, m, n, opts->seed, &o)) != SM_OK) return st;
    const float *src = W;
    const double *H = stats->gram;
    float *rw = NULL, *kept = NULL;
    double *rh = NULL;
    uint8_t *keep = NULL;
    st = sm_qout_select(W, m, n, qs.keep, &o->out);
    if (st == SM_OK && qs.keep && !qs.rotate) { // fixed inside GPTQ (sm_gptq_quantize_keep)
        keep = sm_calloc((size_t)(m * n), 1);
        kept = sm_alloc((size_t)(m * n) * sizeof(float));
        st = keep && kept ? SM_OK : sm_fail(SM_ERR_ALLOC, "gptq: out of memory");
        for (int64_t k = 0; st == SM_OK && k < o->out.count; k++) keep[o->out.idx[k]] = 1;
    }
    // W' = T_m W T_n^T, H' = T_n H T_n^T (rows, then the columns as rows)
    if (st == SM_OK && qs.rotate) {
        rw = sm_alloc((size_t)(m * n) * sizeof(float));
        rh = sm_alloc((size_t)(n * n) * sizeof(double));
        double *tmp = sm_alloc((size_t)(n * n) * sizeof(double));
        st = rw && rh && tmp ? SM_OK : sm_fail(SM_ERR_ALLOC, "gptq: out of memory");
        if (st == SM_OK) {
            memcpy(rw, W, (size_t)(m * n) * sizeof(float));
            for (int64_t k = 0; k < o->out.count; k++) rw[o->out.idx[k]] = 0; // kept as they are
            st = sm_qop_rotate_weights(o, rw, m, n);
        }
        if (st == SM_OK) {
            memcpy(tmp, H, (size_t)(n * n) * sizeof(double));
            st = sm_rht_rows_f64(&o->rin, tmp, n, false); // H T^T
        }
        if (st == SM_OK) {
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < n; j++) rh[j * n + i] = tmp[i * n + j]; // T H
            st = sm_rht_rows_f64(&o->rin, rh, n, false); // (T H) T^T
        }
        sm_free(tmp);
        src = rw;
        H = rh;
    }
    sm_gptq_info info = {0};
    if (st == SM_OK)
        st = sm_gptq_quantize_keep(src, m, n, H, &qs, damp, actorder, keep, kept, &o->q, NULL,
                                   NULL, &info);
    for (int64_t k = 0; st == SM_OK && keep && k < o->out.count; k++)
        o->out.val[k] = kept[o->out.idx[k]]; // the value GPTQ's updates left it at
    if (st == SM_OK) st = sm_qop_outliers_finish(o, m, n);
    sm_free(rw), sm_free(rh), sm_free(keep), sm_free(kept);
    if (st != SM_OK) {
        sm_qop_free(o);
        return st;
    }
    op->impl = o;
    sm_canon c;
    sm_canon_init(&c, "gptq");
    sm_qspec_canon(&qs, &c);
    if (info.percdamp != DEFAULT_DAMP) sm_canon_add(&c, "damp", "%.6g", info.percdamp);
    if (actorder) sm_canon_flag(&c, "actorder");
    sm_qspec_canon_rot(&qs, &c);
    return sm_op_set_spec(op, &c);
}

const sm_op_vtbl sm_vtbl_gptq = {
    .name = "gptq",
    .keys = "bits,group,sym,asym,damp,actorder,rotate,keep-outliers",
    .help = "  bits=B       code width: 2, 3, 4 or 8 (required); needs calibration statistics\n"
            "  group=64     weights per F16 scale along a row (must divide the row length)\n"
            "  asym         zero point per group (default); sym: none, w = s (q - 2^(B-1))\n"
            "  damp=0.01    lambda = damp * mean(diag H); raised 10x (up to 4 times) while the\n"
            "               Cholesky fails, the canonical spec recording the damp that worked\n"
            "  actorder     columns by decreasing diag(H), grids fixed from the original W\n"
            "  rotate=none  hadamard: quantize T_m W T_n^T against T_n H T_n^T\n"
            "  keep-outliers=0  the N largest-|w| weights fixed (exact, no error propagated)\n"
            "               and kept in F32 with an int32 index",
    .fit = gptq_fit,
    .load = sm_qop_load,
    .apply = sm_qop_apply,
    .apply_t = sm_qop_apply_t,
    .workspace = sm_qop_workspace,
    .to_dense = sm_qop_to_dense,
    .nparams = sm_qop_nparams,
    .nbytes = sm_qop_nbytes,
    .macs = sm_qop_macs,
    .parts = sm_qop_parts,
    .free_impl = sm_qop_free,
};
