// Factors: the stored matrices every structure is made of, in f32, f16, bf16, q8 or q4.
#include "op_impl.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define TILE_ROWS 64 // rows decoded at a time for N > 1 products on non-f32 factors

static const char *k_store_names[SM_STORE_COUNT] = {"f32", "f16", "bf16", "q8", "q4"};

const char *sm_store_name(sm_store s) {
    return (unsigned)s < SM_STORE_COUNT ? k_store_names[s] : "?";
}

sm_status sm_store_from_term(const sm_term *t, sm_store *out) {
    int v;
    sm_status st = sm_term_choice(t, "dtype", "f32|f16|bf16|q8|q4", 0, &v);
    *out = (sm_store)v;
    return st;
}

static int64_t ngroups(int64_t cols) {
    return (cols + SM_QGROUP - 1) / SM_QGROUP;
}

bool sm_store_quantized(sm_store s) {
    return s == SM_STORE_Q8 || s == SM_STORE_Q4;
}

static sm_status alloc_factor(sm_factor *f, int64_t rows, int64_t cols, sm_store store) {
    memset(f, 0, sizeof *f);
    f->rows = rows;
    f->cols = cols;
    f->store = store;
    // Factor sides reach BLAS as ints (rows, cols and leading dimensions).
    if (rows > INT_MAX || cols > INT_MAX)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "a %lldx%lld factor has a side longer than %d, the most BLAS takes",
                       (long long)rows, (long long)cols, INT_MAX);
    bool ok = true;
    size_t bytes = sm_mul_size((size_t)rows, sm_store_row_bytes(store, cols), &ok);
    if (!ok) return sm_fail(SM_ERR_ALLOC, "factor %lldx%lld is too large", (long long)rows,
                            (long long)cols);
    f->data = sm_alloc(bytes);
    if (sm_store_quantized(store)) f->scales = sm_alloc((size_t)(rows * ngroups(cols)) * 2);
    if (!f->data || (sm_store_quantized(store) && !f->scales)) {
        sm_factor_free(f);
        return sm_fail(SM_ERR_ALLOC, "out of memory for a %lldx%lld factor", (long long)rows,
                       (long long)cols);
    }
    return SM_OK;
}

static void quantize_row(const float *w, int64_t cols, sm_store store, void *codes,
                         uint16_t *scales) {
    int qmax = store == SM_STORE_Q8 ? 127 : 7;
    for (int64_t g = 0; g < ngroups(cols); g++) {
        int64_t c0 = g * SM_QGROUP, c1 = c0 + SM_QGROUP < cols ? c0 + SM_QGROUP : cols;
        float amax = 0;
        for (int64_t c = c0; c < c1; c++) amax = fmaxf(amax, fabsf(w[c]));
        uint16_t sh = sm_f32_to_f16(amax / (float)qmax);
        scales[g] = sh;
        float s = sm_f16_to_f32(sh), inv = s > 0 ? 1.0f / s : 0.0f;
        for (int64_t c = c0; c < c1; c++) {
            float q = nearbyintf(w[c] * inv);
            if (store == SM_STORE_Q8) {
                q = fminf(fmaxf(q, -127.0f), 127.0f);
                ((int8_t *)codes)[c] = (int8_t)q;
            } else {
                q = fminf(fmaxf(q, -8.0f), 7.0f);
                uint8_t nib = (uint8_t)((int)q & 15), *b = (uint8_t *)codes + (c >> 1);
                *b = (c & 1) ? (uint8_t)((*b & 0x0f) | (nib << 4)) : (uint8_t)((*b & 0xf0) | nib);
            }
        }
    }
}

sm_status sm_factor_init(sm_factor *f, int64_t rows, int64_t cols, sm_store store,
                         const float *src, int64_t ld) {
    sm_status st = alloc_factor(f, rows, cols, store);
    if (st != SM_OK) return st;
    size_t rb = sm_store_row_bytes(store, cols);
    int64_t ng = ngroups(cols);
    for (int64_t r = 0; r < rows; r++) {
        const float *w = src + r * ld;
        unsigned char *dst = (unsigned char *)f->data + (size_t)r * rb;
        switch (store) {
        case SM_STORE_F32: memcpy(dst, w, (size_t)cols * 4); break;
        case SM_STORE_F16:
            for (int64_t c = 0; c < cols; c++) ((uint16_t *)dst)[c] = sm_f32_to_f16(w[c]);
            break;
        case SM_STORE_BF16:
            for (int64_t c = 0; c < cols; c++) ((uint16_t *)dst)[c] = sm_f32_to_bf16(w[c]);
            break;
        case SM_STORE_Q8:
        case SM_STORE_Q4:
            memset(dst, 0, rb);
            quantize_row(w, cols, store, dst, f->scales + r * ng);
            break;
        default: SM_ASSERT(0);
        }
    }
    // f16 factors and f16 scales overflow past 65504: refuse rather than store Inf.
    if (store == SM_STORE_F16 || sm_store_quantized(store)) {
        const uint16_t *h = sm_store_quantized(store) ? f->scales : f->data;
        int64_t count = sm_store_quantized(store) ? rows * ng : rows * cols;
        for (int64_t i = 0; i < count; i++)
            if ((h[i] & 0x7c00) == 0x7c00) {
                sm_factor_free(f);
                return sm_fail(SM_ERR_NUMERIC,
                               "dtype=%s: a value of the factor exceeds the F16 range (65504)",
                               sm_store_name(store));
            }
    }
    return SM_OK;
}

void sm_factor_free(sm_factor *f) {
    sm_free(f->data);
    sm_free(f->scales);
    f->data = NULL;
    f->scales = NULL;
}

sm_factor sm_factor_rows(const sm_factor *f, int64_t r0, int64_t r1) {
    SM_ASSERT(0 <= r0 && r0 <= r1 && r1 <= f->rows);
    sm_factor v = *f;
    v.rows = r1 - r0;
    v.data = (unsigned char *)f->data + (size_t)r0 * sm_store_row_bytes(f->store, f->cols);
    if (f->scales) v.scales = f->scales + r0 * ngroups(f->cols);
    return v;
}

int64_t sm_factor_nbytes(const sm_factor *f) {
    int64_t b = f->rows * (int64_t)sm_store_row_bytes(f->store, f->cols);
    if (sm_store_quantized(f->store)) b += f->rows * ngroups(f->cols) * 2;
    return b;
}

void sm_factor_decode(const sm_factor *f, float *out, int64_t ldo) {
    const sm_kernels *k = sm_kernels_get();
    if (ldo == f->cols) {
        k->decode[f->store](f->rows, f->cols, f->data, f->scales, out);
        return;
    }
    for (int64_t r = 0; r < f->rows; r++) {
        sm_factor row = sm_factor_rows(f, r, r + 1);
        k->decode[f->store](1, f->cols, row.data, row.scales, out + r * ldo);
    }
}

size_t sm_factor_workspace(const sm_factor *f, int64_t N) {
    (void)N;
    if (f->store == SM_STORE_F32) return 0;
    // gemv output (N = 1, before beta-accumulation) or one decoded tile of rows (N > 1, and _t).
    int64_t t = f->rows < TILE_ROWS ? f->rows : TILE_ROWS;
    return (size_t)(f->rows > t * f->cols ? f->rows : t * f->cols);
}

void sm_factor_mm(const sm_factor *f, int64_t N, const float *X, int64_t ldx, float *Y,
                  int64_t ldy, float beta, float *work) {
    int64_t R = f->rows, C = f->cols;
    if (N == 0 || R == 0) return;
    if (f->store == SM_STORE_F32) {
        if (N == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)R, (int)C, 1.0f, f->data, (int)C, X, 1,
                        beta, Y, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)R, (int)C, 1.0f, X,
                        (int)ldx, f->data, (int)C, beta, Y, (int)ldy);
        return;
    }
    const sm_kernels *k = sm_kernels_get();
    if (N == 1) {
        k->gemv[f->store](R, C, f->data, f->scales, X, work);
        for (int64_t r = 0; r < R; r++) Y[r] = work[r] + (beta != 0 ? beta * Y[r] : 0.0f);
        return;
    }
    for (int64_t r0 = 0; r0 < R; r0 += TILE_ROWS) {
        int64_t r1 = r0 + TILE_ROWS < R ? r0 + TILE_ROWS : R;
        sm_factor t = sm_factor_rows(f, r0, r1);
        k->decode[f->store](r1 - r0, C, t.data, t.scales, work);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)(r1 - r0), (int)C, 1.0f,
                    X, (int)ldx, work, (int)C, beta, Y + r0, (int)ldy);
    }
}

void sm_factor_mm_t(const sm_factor *f, int64_t N, const float *Y, int64_t ldy, float *X,
                    int64_t ldx, float beta, float *work) {
    int64_t R = f->rows, C = f->cols;
    if (N == 0 || C == 0) return;
    if (f->store == SM_STORE_F32) {
        if (N == 1)
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)R, (int)C, 1.0f, f->data, (int)C, Y, 1,
                        beta, X, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)C, (int)R, 1.0f,
                        Y, (int)ldy, f->data, (int)C, beta, X, (int)ldx);
        return;
    }
    const sm_kernels *k = sm_kernels_get();
    if (R == 0) {
        for (int64_t i = 0; i < N; i++)
            for (int64_t c = 0; c < C; c++) X[i * ldx + c] = beta != 0 ? beta * X[i * ldx + c] : 0;
        return;
    }
    for (int64_t r0 = 0; r0 < R; r0 += TILE_ROWS) {
        int64_t r1 = r0 + TILE_ROWS < R ? r0 + TILE_ROWS : R;
        sm_factor t = sm_factor_rows(f, r0, r1);
        k->decode[f->store](r1 - r0, C, t.data, t.scales, work);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)C, (int)(r1 - r0),
                    1.0f, Y + r0, (int)ldy, work, (int)C, r0 == 0 ? beta : 1.0f, X, (int)ldx);
    }
}

int sm_factor_parts(const sm_factor *f, const char *name, sm_part *out) {
    static const sm_dtype plain[] = {SM_DTYPE_F32, SM_DTYPE_F16, SM_DTYPE_BF16};
    if (!sm_store_quantized(f->store)) {
        if (out) {
            memset(out, 0, sizeof *out);
            snprintf(out->name, sizeof out->name, "%s", name);
            out->dtype = plain[f->store];
            out->ndim = 2;
            out->shape[0] = f->rows;
            out->shape[1] = f->cols;
            out->data = f->data;
            out->nbytes = (size_t)sm_factor_nbytes(f);
        }
        return 1;
    }
    if (out) {
        memset(out, 0, 2 * sizeof *out);
        snprintf(out[0].name, sizeof out[0].name, "%s.codes", name);
        out[0].dtype = f->store == SM_STORE_Q8 ? SM_DTYPE_I8 : SM_DTYPE_U8;
        out[0].ndim = 2;
        out[0].shape[0] = f->rows;
        out[0].shape[1] = (int64_t)sm_store_row_bytes(f->store, f->cols);
        out[0].data = f->data;
        out[0].nbytes = (size_t)(f->rows * out[0].shape[1]);
        snprintf(out[1].name, sizeof out[1].name, "%s.scales", name);
        out[1].dtype = SM_DTYPE_F16;
        out[1].ndim = 2;
        out[1].shape[0] = f->rows;
        out[1].shape[1] = ngroups(f->cols);
        out[1].data = f->scales;
        out[1].nbytes = (size_t)(f->rows * ngroups(f->cols) * 2);
    }
    return 2;
}

const sm_part *sm_parts_find(const sm_part *parts, int nparts, const char *name) {
    for (int i = 0; i < nparts; i++)
        if (strcmp(parts[i].name, name) == 0) return &parts[i];
    sm_fail(SM_ERR_FORMAT, "missing part \"%s\"", name);
    return NULL;
}

// A file can hold any bits: a NaN or Inf in a plain factor or in a quantized factor's scales
// would make every output it touches non-finite, so loading refuses it, naming the part.
static sm_status check_finite_factor(const sm_factor *f, const char *part) {
    int64_t cols = sm_store_quantized(f->store) ? ngroups(f->cols) : f->cols;
    int64_t count = f->rows * cols;
    const uint16_t *h = sm_store_quantized(f->store) ? f->scales : f->data;
    for (int64_t i = 0; i < count; i++) {
        bool bad;
        switch (f->store) {
        case SM_STORE_F32: bad = !isfinite(((const float *)f->data)[i]); break;
        case SM_STORE_BF16: bad = (h[i] & 0x7f80) == 0x7f80; break;
        default: bad = (h[i] & 0x7c00) == 0x7c00; break; // f16 values, q8/q4 F16 scales
        }
        if (bad)
            return sm_fail(SM_ERR_NUMERIC,
                           "part \"%s\" has a non-finite value at [%lld, %lld] (element %lld)",
                           part, (long long)(i / cols), (long long)(i % cols), (long long)i);
    }
    return SM_OK;
}

sm_status sm_factor_load(sm_factor *f, int64_t rows, int64_t cols, sm_store store,
                         const char *name, const sm_part *parts, int nparts) {
    sm_factor want = {.rows = rows, .cols = cols, .store = store};
    sm_part exp[2];
    int ne = sm_factor_parts(&want, name, exp);
    for (int i = 0; i < ne; i++) {
        const sm_part *p = sm_parts_find(parts, nparts, exp[i].name);
        if (!p) return SM_ERR_FORMAT;
        size_t nbytes = exp[i].dtype == SM_DTYPE_F16 && i == 1
                            ? (size_t)(rows * ngroups(cols) * 2)
                            : (size_t)(rows * (int64_t)sm_store_row_bytes(store, cols));
        if (p->dtype != exp[i].dtype || p->ndim != 2 || p->shape[0] != exp[i].shape[0] ||
            p->shape[1] != exp[i].shape[1] || p->nbytes != nbytes)
            return sm_fail(SM_ERR_FORMAT,
                           "part \"%s\" is %s [%lld, %lld] (%zu bytes), expected %s [%lld, %lld]",
                           p->name, sm_dtype_name(p->dtype), (long long)p->shape[0],
                           (long long)(p->ndim > 1 ? p->shape[1] : 0), p->nbytes,
                           sm_dtype_name(exp[i].dtype), (long long)exp[i].shape[0],
                           (long long)exp[i].shape[1]);
    }
    sm_status st = alloc_factor(f, rows, cols, store);
    if (st != SM_OK) return st;
    memcpy(f->data, sm_parts_find(parts, nparts, exp[0].name)->data,
           rows * sm_store_row_bytes(store, cols));
    if (ne == 2)
        memcpy(f->scales, sm_parts_find(parts, nparts, exp[1].name)->data,
               (size_t)(rows * ngroups(cols) * 2));
    st = check_finite_factor(f, exp[ne - 1].name);
    if (st != SM_OK) sm_factor_free(f);
    return st;
}

// --- 3-D parts over one factor ---------------------------------------------------------------

// The factor's parts, with the plain (f32/f16/bf16) part reshaped to (d0, d1, cols), d0 d1 =
// rows. Quantized factors keep their 2-D ".codes" and ".scales" parts.
int sm_factor_parts_3d(const sm_factor *f, const char *name, int64_t d0, int64_t d1, sm_part *out) {
    SM_ASSERT(d0 * d1 == f->rows);
    int n = sm_factor_parts(f, name, out);
    if (out && !sm_store_quantized(f->store)) {
        out->ndim = 3;
        out->shape[0] = d0;
        out->shape[1] = d1;
        out->shape[2] = f->cols;
    }
    return n;
}

// Loads a factor of (d0 d1, cols) rows from parts written by sm_factor_parts_3d.
sm_status sm_factor_load_3d(sm_factor *f, int64_t d0, int64_t d1, int64_t cols, sm_store store,
                            const char *name, const sm_part *parts, int nparts) {
    int64_t rows = d0 * d1;
    if (sm_store_quantized(store)) return sm_factor_load(f, rows, cols, store, name, parts, nparts);
    const sm_part *p = sm_parts_find(parts, nparts, name);
    if (!p) return SM_ERR_FORMAT;
    if (p->ndim != 3 || p->shape[0] != d0 || p->shape[1] != d1 || p->shape[2] != cols)
        return sm_fail(SM_ERR_FORMAT,
                       "part \"%s\" has %d dimensions [%lld, %lld, %lld], expected [%lld, %lld, "
                       "%lld]",
                       name, p->ndim, (long long)p->shape[0], (long long)p->shape[1],
                       (long long)p->shape[2], (long long)d0, (long long)d1, (long long)cols);
    sm_part flat = *p;
    flat.ndim = 2;
    flat.shape[0] = rows;
    flat.shape[1] = cols;
    flat.shape[2] = 0;
    return sm_factor_load(f, rows, cols, store, name, &flat, 1);
}
