// rtn:bits=B[,group=64][,sym|asym][,rotate=none|hadamard]
// Round to nearest onto a per-group grid: each run of `group` consecutive weights of a row has an
// F16 scale s and (asymmetric, the default) a zero point z, w = s (q - z) with B-bit codes q
// (quant.h, sm_qgrid). With rotate=hadamard the grid is that of T_m W T_n^T, T the randomized
// Hadamard transforms of hadamard.h, and Ŵ = T_m^T deq(Q) T_n; apply transforms x and y.
//
// Parts (rtn and gptq alike; docs in qkernels.h for the bit layout):
//   "codes"     U8 (m, ceil(n B / 8))      codes, one little-endian bit stream per row
//   "scales"    F16 (m, n / group)
//   "zeros"     U8 (m, ceil(n / group B / 8))  zero points as B-bit codes (asymmetric only)
//   "signs_in"  U8 (ceil(n / 8))           input-side signs, bit set = +1 (rotate=hadamard)
//   "signs_out" U8 (ceil(m / 8))           output-side signs (rotate=hadamard)
//   "outlier_index" I32 (N), "outlier_value" F32 (N)   keep-outliers=N (outliers.c)
//
// keep-outliers=N keeps the N largest-|w| weights of W exactly (F32) as a sparse term: they are
// set to 0 before the grids are fitted (0 is inside every grid's range, so it stretches none),
// and apply adds (kept value - quantized value) at their places. With rotate=hadamard they are
// taken out before the rotation, so the rotated part quantizes W without them.
//
// This file also holds the operator entries rtn and gptq share (they differ only in fitting).
#include "quant.h"

#include <cblas.h>
#include <string.h>

#define QOP(op) ((sm_qop *)(op)->impl)

// Rows decoded at a time for N > 1 and apply_t: a tile of about 1 MiB (L2-sized), at least 64
// rows, so that each GEMM call has enough work.
static int64_t tile_rows(int64_t m, int64_t n) {
    int64_t t = ((int64_t)1 << 18) / n;
    if (t < 64) t = 64;
    return t < m ? t : m;
}

void sm_qop_free(void *impl) {
    sm_qop *o = impl;
    if (!o) return;
    sm_qmat_free(&o->q);
    sm_rht_free(&o->rin);
    sm_rht_free(&o->rout);
    sm_qout_free(&o->out);
    free(o);
}

sm_status sm_qop_new(const sm_qspec *qs, int64_t m, int64_t n, uint64_t seed, sm_qop **out) {
    sm_qop *o = calloc(1, sizeof *o);
    if (!o) return sm_fail(SM_ERR_ALLOC, "out of memory");
    sm_status st = sm_qmat_alloc(&o->q, m, n, qs->bits, qs->group, qs->sym);
    o->rot = qs->rotate;
    if (st == SM_OK && o->rot) st = sm_rht_init(&o->rin, n, NULL, seed);
    if (st == SM_OK && o->rot) st = sm_rht_init(&o->rout, m, NULL, seed ^ 0x9e3779b97f4a7c15ull);
    if (st != SM_OK) {
        sm_qop_free(o);
        return st;
    }
    *out = o;
    return SM_OK;
}

static void transpose(const float *A, int64_t m, int64_t n, float *B) { // B (n, m) = A^T
    for (int64_t i0 = 0; i0 < m; i0 += 32)
        for (int64_t j0 = 0; j0 < n; j0 += 32)
            for (int64_t i = i0; i < m && i < i0 + 32; i++)
                for (int64_t j = j0; j < n && j < j0 + 32; j++) B[j * m + i] = A[i * n + j];
}

// W <- T_m W T_n^T (forward) or T_m^T W T_n (!forward), through one transposed copy.
static sm_status rotate_both(const sm_qop *o, float *W, int64_t m, int64_t n, bool forward) {
    size_t ws = sm_rht_workspace(&o->rin) > sm_rht_workspace(&o->rout) ? sm_rht_workspace(&o->rin)
                                                                       : sm_rht_workspace(&o->rout);
    float *tmp = sm_alloc((size_t)(m * n) * sizeof(float)), *rw = sm_alloc((ws + 1) * sizeof(float));
    if (!tmp || !rw) {
        sm_free(tmp), sm_free(rw);
        return sm_fail(SM_ERR_ALLOC, "rotation: out of memory for a %lldx%lld matrix",
                       (long long)m, (long long)n);
    }
    // Rows: w <- T_n w is a row of W T_n^T; w <- T_n^T w a row of W T_n.
    sm_rht_rows(&o->rin, W, m, !forward, rw);
    transpose(W, m, n, tmp);
    sm_rht_rows(&o->rout, tmp, n, !forward, rw); // columns: T_m c or T_m^T c
    transpose(tmp, n, m, W);
    sm_free(tmp), sm_free(rw);
    return SM_OK;
}

sm_status sm_qop_rotate_weights(const sm_qop *o, float *W, int64_t m, int64_t n) {
    return o->rot ? rotate_both(o, W, m, n, true) : SM_OK;
}

static size_t rht_ws(const sm_qop *o) {
    if (!o->rot) return 0;
    size_t a = sm_rht_workspace(&o->rin), b = sm_rht_workspace(&o->rout);
    return a > b ? a : b;
}

size_t sm_qop_workspace(const sm_op *op, int64_t N) {
    const sm_qop *o = QOP(op);
    int64_t m = op->m, n = op->n, big = m > n ? m : n;
    size_t kern = sm_qgemv_workspace(n, o->q.group), tile = (size_t)(tile_rows(m, n) * n);
    return (o->rot ? (size_t)(N * big) + rht_ws(o) : 0) + (kern > tile ? kern : tile);
}

void sm_qop_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const sm_qop *o = QOP(op);
    int64_t m = op->m, n = op->n, big = m > n ? m : n;
    const sm_qkernels *k = sm_qkernels_get();
    sm_qview v = sm_qmat_view(&o->q);
    float *xr = work, *rw = work + (o->rot ? N * big : 0), *kw = rw + rht_ws(o);
    const float *xin = X;
    if (o->rot) { // x <- T_n x
        memcpy(xr, X, (size_t)(N * n) * sizeof(float));
        sm_rht_rows(&o->rin, xr, N, false, rw);
        xin = xr;
    }
    if (N == 1) {
        k->qgemv(&v, xin, Y, kw);
    } else {
        for (int64_t r0 = 0, T = tile_rows(m, n); r0 < m; r0 += T) {
            int64_t r1 = r0 + T < m ? r0 + T : m;
            k->qdecode(&v, r0, r1, kw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)(r1 - r0), (int)n,
                        1.0f, xin, (int)n, kw, (int)n, 0.0f, Y + r0, (int)m);
        }
    }
    if (o->rot) sm_rht_rows(&o->rout, Y, N, true, rw); // y <- T_m^T y
    if (o->out.count) sm_qout_apply(&o->out, m, n, N, X, Y);
}

void sm_qop_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const sm_qop *o = QOP(op);
    int64_t m = op->m, n = op->n, big = m > n ? m : n;
    const sm_qkernels *k = sm_qkernels_get();
    sm_qview v = sm_qmat_view(&o->q);
    float *yr = work, *rw = work + (o->rot ? N * big : 0), *kw = rw + rht_ws(o);
    const float *yin = Y;
    if (o->rot) { // Ŵ^T y = T_n^T Q^T T_m y
        memcpy(yr, Y, (size_t)(N * m) * sizeof(float));
        sm_rht_rows(&o->rout, yr, N, false, rw);
        yin = yr;
    }
    for (int64_t r0 = 0, T = tile_rows(m, n); r0 < m; r0 += T) {
        int64_t r1 = r0 + T < m ? r0 + T : m;
        k->qdecode(&v, r0, r1, kw);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)n, (int)(r1 - r0),
                    1.0f, yin + r0, (int)m, kw, (int)n, r0 == 0 ? 0.0f : 1.0f, X, (int)n);
    }
    if (o->rot) sm_rht_rows(&o->rin, X, N, true, rw);
    if (o->out.count) sm_qout_apply_t(&o->out, m, n, N, Y, X);
}

// W (m, n) = the quantized part alone: decoded and unrotated.
static sm_status quant_dense(const sm_qop *o, int64_t m, int64_t n, float *W) {
    sm_qview v = sm_qmat_view(&o->q);
    sm_qkernels_get()->qdecode(&v, 0, m, W);
    return o->rot ? rotate_both(o, W, m, n, false) : SM_OK;
}

sm_status sm_qop_to_dense(const sm_op *op, float *W) {
    const sm_qop *o = QOP(op);
    sm_status st = quant_dense(o, op->m, op->n, W);
    if (st == SM_OK) sm_qout_place(&o->out, W);
    return st;
}

sm_status sm_qop_outliers_finish(sm_qop *o, int64_t m, int64_t n) {
    if (!o->out.count) return SM_OK;
    float *D = sm_alloc((size_t)(m * n) * sizeof(float));
    if (!D) return sm_fail(SM_ERR_ALLOC, "keep-outliers: out of memory for a %lldx%lld matrix",
                           (long long)m, (long long)n);
    sm_status st = quant_dense(o, m, n, D);
    if (st == SM_OK) sm_qout_set_corr(&o->out, D);
    sm_free(D);
    return st;
}

int64_t sm_qop_nparams(const sm_op *op) {
    return op->m * op->n + QOP(op)->out.count;
}

int64_t sm_qop_nbytes(const sm_op *op) {
    const sm_qop *o = QOP(op);
    int64_t b = sm_qmat_nbytes(&o->q);
    if (o->rot) b += (int64_t)sm_sign_row_bytes(op->n) + (int64_t)sm_sign_row_bytes(op->m);
    return b + sm_qout_nbytes(&o->out);
}

int64_t sm_qop_macs(const sm_op *op) {
    const sm_qop *o = QOP(op);
    int64_t macs = op->m * op->n;
    // The DCT factors of a rotation are small dense products (the Hadamard part only adds).
    if (o->rot) macs += op->n * o->rin.b + op->m * o->rout.b;
    return macs + o->out.count;
}

static sm_part part2(const char *name, sm_dtype dt, int64_t d0, int64_t d1, const void *data,
                     size_t nbytes) {
    sm_part p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.dtype = dt;
    p.ndim = d1 ? 2 : 1;
    p.shape[0] = d0;
    p.shape[1] = d1;
    p.data = data;
    p.nbytes = nbytes;
    return p;
}

int sm_qop_parts(const sm_op *op, sm_part *out, int cap) {
    const sm_qop *o = QOP(op);
    const sm_qmat *q = &o->q;
    int64_t m = op->m, ng = op->n / q->group;
    sm_part p[7];
    int np = 0;
    p[np++] = part2("codes", SM_DTYPE_U8, m, (int64_t)q->rb, q->codes, (size_t)m * q->rb);
    p[np++] = part2("scales", SM_DTYPE_F16, m, ng, q->scales, (size_t)(m * ng) * 2);
    if (q->zeros) p[np++] = part2("zeros", SM_DTYPE_U8, m, (int64_t)q->zb, q->zeros, (size_t)m * q->zb);
    if (o->rot) {
        p[np++] = part2("signs_in", SM_DTYPE_U8, (int64_t)sm_sign_row_bytes(op->n), 0,
                        o->rin.bits, sm_sign_row_bytes(op->n));
        p[np++] = part2("signs_out", SM_DTYPE_U8, (int64_t)sm_sign_row_bytes(m), 0, o->rout.bits,
                        sm_sign_row_bytes(m));
    }
    np += sm_qout_parts(&o->out, p + np);
    if (out && cap >= np) memcpy(out, p, (size_t)np * sizeof *p);
    return np;
}

sm_status sm_qop_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t m = op->m, n = op->n;
    sm_qspec qs;
    sm_status st = sm_qspec_from_term(t, m, n, &qs);
    if (st != SM_OK) return st;
    // The codes are checked before the matrix is allocated: a shape that lies (9 x 44444442 in a
    // file without parts, a fuzz finding) must not allocate hundreds of MB first.
    bool fits = true;
    size_t rb = sm_qbytes(n, qs.bits), cb = sm_mul_size((size_t)m, rb, &fits);
    if (!fits)
        return sm_fail(SM_ERR_FORMAT, "a %lldx%lld quantized matrix is too large", (long long)m,
                       (long long)n);
    st = sm_part_take(parts, nparts, "codes", SM_DTYPE_U8, 2, m, (int64_t)rb, NULL, cb);
    if (st != SM_OK) return st;
    sm_qop *o = calloc(1, sizeof *o);
    if (!o) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = sm_qmat_alloc(&o->q, m, n, qs.bits, qs.group, qs.sym);
    sm_qmat *q = &o->q;
    int64_t ng = n / qs.group;
    if (st == SM_OK)
        st = sm_part_take(parts, nparts, "codes", SM_DTYPE_U8, 2, m, (int64_t)q->rb, q->codes,
                          (size_t)m * q->rb);
    if (st == SM_OK)
        st = sm_part_take(parts, nparts, "scales", SM_DTYPE_F16, 2, m, ng, q->scales,
                          (size_t)(m * ng) * 2);
    if (st == SM_OK && !qs.sym)
        st = sm_part_take(parts, nparts, "zeros", SM_DTYPE_U8, 2, m, (int64_t)q->zb, q->zeros,
                          (size_t)m * q->zb);
    if (st == SM_OK) st = sm_qmat_check_scales(q, t->name);
    if (st == SM_OK && qs.rotate) {
        uint8_t *si = sm_calloc(sm_sign_row_bytes(n) + 8, 1), *so = sm_calloc(sm_sign_row_bytes(m) + 8, 1);
        st = si && so ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
        if (st == SM_OK)
            st = sm_part_take(parts, nparts, "signs_in", SM_DTYPE_U8, 1,
                              (int64_t)sm_sign_row_bytes(n), 0, si, sm_sign_row_bytes(n));
        if (st == SM_OK)
            st = sm_part_take(parts, nparts, "signs_out", SM_DTYPE_U8, 1,
                              (int64_t)sm_sign_row_bytes(m), 0, so, sm_sign_row_bytes(m));
        o->rot = true;
        if (st == SM_OK) st = sm_rht_init(&o->rin, n, si, 0);
        if (st == SM_OK) st = sm_rht_init(&o->rout, m, so, 0);
        sm_free(si), sm_free(so);
    }
    if (st == SM_OK) st = sm_qout_load(&o->out, qs.keep, m, n, parts, nparts);
    if (st == SM_OK) st = sm_qop_outliers_finish(o, m, n);
    if (st != SM_OK) {
        sm_qop_free(o);
        return st;
    }
    op->impl = o;
    return SM_OK;
}

// --- rtn ---------------------------------------------------------------------------------------

static sm_status rtn_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *opts) {
    int64_t m = op->m, n = op->n;
    sm_qspec qs;
    sm_status st = sm_qspec_from_term(t, m, n, &qs);
    if (st != SM_OK) return st;
    sm_qop *o;
    if ((st = sm_qop_new(&qs, m, n, opts->seed, &o)) != SM_OK) return st;
    float *rw = NULL;
    const float *src = W;
    st = sm_qout_select(W, m, n, qs.keep, &o->out);
    if (st == SM_OK && (qs.rotate || qs.keep)) { // a copy to rotate or to zero the outliers in
        rw = sm_alloc((size_t)(m * n) * sizeof(float));
        st = rw ? SM_OK : sm_fail(SM_ERR_ALLOC, "rtn: out of memory");
        if (st == SM_OK) memcpy(rw, W, (size_t)(m * n) * sizeof(float));
        for (int64_t k = 0; st == SM_OK && k < o->out.count; k++) rw[o->out.idx[k]] = 0;
        if (st == SM_OK) st = sm_qop_rotate_weights(o, rw, m, n);
        src = rw;
    }
    if (st == SM_OK) st = sm_qmat_quantize(&o->q, src, "rtn");
    if (st == SM_OK) st = sm_qop_outliers_finish(o, m, n);
    sm_free(rw);
    if (st != SM_OK) {
        sm_qop_free(o);
        return st;
    }
    op->impl = o;
    sm_canon c;
    sm_canon_init(&c, "rtn");
    sm_qspec_canon(&qs, &c);
    sm_qspec_canon_rot(&qs, &c);
    return sm_op_set_spec(op, &c);
}

const sm_op_vtbl sm_vtbl_rtn = {
    .name = "rtn",
.keys = "bits,group,sym,asym,rotate,keep-outliers",
    .help = "  bits=B       code width: 2, 3, 4 or 8 (required)\n"
            "  group=64     weights per F16 scale along a row (must divide the row length)\n"
            "  asym         zero point per group (default); sym: none, w = s (q - 2^(B-1))\n"
            "  rotate=none  hadamard: quantize T_m W T_n^T (randomized Hadamard, QuIP#-style)\n"
            "  keep-outliers=0  the N largest-|w| weights kept exactly (F32 + int32 index)",
    .fit = rtn_fit,
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
