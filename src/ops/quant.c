// Packed group-quantized matrices, their grids and spec items, and sign-matrix helpers.
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sm_qgrid_fit(const float *w, int64_t len, int bits, bool sym, sm_qgrid *g) {
    g->maxq = (1 << bits) - 1;
    float lo = 0, hi = 0, s;
    for (int64_t i = 0; i < len; i++) {
        lo = fminf(lo, w[i]);
        hi = fmaxf(hi, w[i]);
    }
    if (sym) {
        float amax = fmaxf(-lo, hi);
        if (amax == 0) amax = 1;
        s = 2.0f * amax / (float)g->maxq;
    } else {
        if (lo == 0 && hi == 0) lo = -1, hi = 1;
        s = (hi - lo) / (float)g->maxq;
    }
    g->h = sm_f32_to_f16(s);
    if ((g->h & 0x7fff) == 0) g->h = 1; // below the smallest F16: the smallest positive one
    g->s = sm_f16_to_f32(g->h);
    if (sym) {
        g->z = 1 << (bits - 1);
    } else {
        float z = nearbyintf(-lo / g->s);
        g->z = z < 0 ? 0 : z > (float)g->maxq ? g->maxq : (int)z;
    }
}

sm_status sm_qmat_alloc(sm_qmat *q, int64_t rows, int64_t cols, int bits, int64_t group,
                        bool sym) {
    memset(q, 0, sizeof *q);
    SM_ASSERT(group > 0 && cols % group == 0);
    q->rows = rows;
    q->cols = cols;
    q->bits = bits;
    q->group = group;
    q->sym = sym;
    q->rb = sm_qbytes(cols, bits);
    q->zb = sym ? 0 : sm_qbytes(cols / group, bits);
    int64_t ng = cols / group;
    bool ok = true;
    size_t cb = sm_mul_size((size_t)rows, q->rb, &ok), sb = sm_mul_size((size_t)(rows * ng), 2, &ok);
    size_t zb = sm_mul_size((size_t)rows, q->zb, &ok);
    if (!ok) return sm_fail(SM_ERR_ALLOC, "a %lldx%lld quantized matrix is too large",
                            (long long)rows, (long long)cols);
    q->codes = sm_calloc(cb + SM_QPAD, 1);
    q->scales = sm_calloc(sb + SM_QPAD, 1);
    if (!sym) q->zeros = sm_calloc(zb + SM_QPAD, 1);
    if (!q->codes || !q->scales || (!sym && !q->zeros)) {
        sm_qmat_free(q);
        return sm_fail(SM_ERR_ALLOC, "out of memory for a %lldx%lld quantized matrix",
                       (long long)rows, (long long)cols);
    }
    return SM_OK;
}

void sm_qmat_free(sm_qmat *q) {
    sm_free(q->codes);
    sm_free(q->scales);
    sm_free(q->zeros);
    q->codes = NULL;
    q->scales = NULL;
    q->zeros = NULL;
}

sm_qview sm_qmat_view(const sm_qmat *q) {
    return (sm_qview){.rows = q->rows, .cols = q->cols, .bits = q->bits, .group = q->group,
                      .rb = q->rb, .zb = q->zb, .codes = q->codes, .scales = q->scales,
                      .zeros = q->zeros};
}

void sm_qmat_set_grid(sm_qmat *q, int64_t r, int64_t g, const sm_qgrid *grid) {
    q->scales[r * (q->cols / q->group) + g] = grid->h;
    if (q->zeros) sm_qput(q->zeros + (size_t)r * q->zb, g, q->bits, grid->z);
}

sm_qgrid sm_qmat_grid(const sm_qmat *q, int64_t r, int64_t g) {
    sm_qgrid grid;
    grid.h = q->scales[r * (q->cols / q->group) + g];
    grid.s = sm_f16_to_f32(grid.h);
    grid.maxq = (1 << q->bits) - 1;
    grid.z = q->zeros ? sm_qcode_at(q->zeros + (size_t)r * q->zb, g, q->bits)
                      : 1 << (q->bits - 1);
    return grid;
}

sm_status sm_qmat_check_scales(const sm_qmat *q, const char *what) {
    int64_t count = q->rows * (q->cols / q->group);
    for (int64_t i = 0; i < count; i++)
        if ((q->scales[i] & 0x7c00) == 0x7c00)
            return sm_fail(SM_ERR_NUMERIC,
                           "%s: the scale of group %lld of row %lld exceeds the F16 range "
                           "(65504)", what, (long long)(i % (q->cols / q->group)),
                           (long long)(i / (q->cols / q->group)));
    return SM_OK;
}

sm_status sm_qmat_quantize(sm_qmat *q, const float *W, const char *what) {
    int64_t ng = q->cols / q->group;
    for (int64_t r = 0; r < q->rows; r++) {
        const float *w = W + r * q->cols;
        uint8_t *row = q->codes + (size_t)r * q->rb;
        for (int64_t g = 0; g < ng; g++) {
            sm_qgrid grid;
            sm_qgrid_fit(w + g * q->group, q->group, q->bits, q->sym, &grid);
            sm_qmat_set_grid(q, r, g, &grid);
            for (int64_t c = g * q->group; c < (g + 1) * q->group; c++)
                sm_qput(row, c, q->bits, sm_qgrid_code(&grid, w[c]));
        }
    }
    return sm_qmat_check_scales(q, what);
}

int64_t sm_qmat_nbytes(const sm_qmat *q) {
    return q->rows * (int64_t)(q->rb + q->zb) + q->rows * (q->cols / q->group) * 2;
}

// --- spec items ------------------------------------------------------------------------------

sm_status sm_term_check_flag(const sm_term *t, const char *key) {
    const sm_item *it = sm_term_find(t, key);
    if (it && !it->flag)
        return sm_fail(SM_ERR_SPEC, "%s: %s is a flag and takes no value (got %s=%s)", t->name,
                       key, key, it->value);
    return SM_OK;
}

// The divisors of n as "1, 2, 4, ..." (the first 24, then "...").
static void divisors(int64_t n, char *buf, size_t cap) {
    size_t len = 0;
    int count = 0;
    buf[0] = 0;
    int64_t small[64], large[64];
    int ns = 0, nl = 0;
    for (int64_t d = 1; d * d <= n && ns < 64 && nl < 64; d++)
        if (n % d == 0) {
            small[ns++] = d;
            if (d != n / d) large[nl++] = n / d;
        }
    for (int i = 0; i < ns + nl; i++) {
        int64_t d = i < ns ? small[i] : large[nl - 1 - (i - ns)];
        if (count == 24) {
            len += (size_t)snprintf(buf + len, cap - len, ", ...");
            break;
        }
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", count ? ", " : "", (long long)d);
        count++;
        if (len >= cap) break;
    }
}

sm_status sm_qout_count(const sm_term *t, int64_t m, int64_t n, int64_t *count) {
    *count = 0;
    const sm_item *ko = sm_term_find(t, "keep-outliers");
    if (!ko) return SM_OK;
    char *end = NULL;
    long long v = ko->flag ? -1 : strtoll(ko->value, &end, 10);
    if (ko->flag || !end || *end || end == ko->value || v < 0)
        return sm_fail(SM_ERR_SPEC,
                       "%s: keep-outliers=%s: expected a whole number N >= 0 of weights to "
                       "keep in full precision", t->name, ko->flag ? "" : ko->value);
    if (v > m * n)
        return sm_fail(SM_ERR_SPEC,
                       "%s: keep-outliers=%lld is more than the %lld weights of a %lldx%lld "
                       "matrix", t->name, v, (long long)(m * n), (long long)m, (long long)n);
    if (v > 0 && m * n > INT32_MAX)
        return sm_fail(SM_ERR_SPEC,
                       "%s: keep-outliers: a %lldx%lld matrix has more weights than the "
                       "int32 outlier indices address (2^31 - 1)", t->name, (long long)m,
                       (long long)n);
    *count = v;
    return SM_OK;
}

sm_status sm_qspec_from_term(const sm_term *t, int64_t m, int64_t n, sm_qspec *out) {
    memset(out, 0, sizeof *out);
    int64_t bits;
    if (!sm_term_find(t, "bits"))
        return sm_fail(SM_ERR_SPEC, "%s: needs bits=B (2, 3, 4 or 8)", t->name);
    sm_status st = sm_term_int(t, "bits", 4, 1, 64, &bits);
    if (st != SM_OK) return st;
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return sm_fail(SM_ERR_SPEC, "%s: bits=%lld is not supported (choose 2, 3, 4 or 8)",
                       t->name, (long long)bits);
    out->bits = (int)bits;
    st = sm_term_int(t, "group", 64, 1, INT64_MAX, &out->group);
    if (st != SM_OK) return st;
    if (n % out->group != 0) {
        char list[512];
        divisors(n, list, sizeof list);
        return sm_fail(SM_ERR_SPEC,
                       "%s: group=%lld%s does not divide the row length %lld (in features) of "
                       "a %lldx%lld matrix; valid groups: %s",
                       t->name, (long long)out->group,
                       sm_term_find(t, "group") ? "" : " (the default)", (long long)n,
                       (long long)m, (long long)n, list);
    }
    if ((st = sm_term_check_flag(t, "sym")) != SM_OK) return st;
    if ((st = sm_term_check_flag(t, "asym")) != SM_OK) return st;
    out->sym = sm_term_flag(t, "sym");
    if (out->sym && sm_term_flag(t, "asym"))
        return sm_fail(SM_ERR_SPEC, "%s: give sym or asym, not both", t->name);
    int rot;
    st = sm_term_choice(t, "rotate", "none|hadamard", 0, &rot);
    if (st != SM_OK) return st;
    out->rotate = rot == 1;
    if (out->rotate) {
        char what[48];
        snprintf(what, sizeof what, "%s (in features)", t->name);
        if ((st = sm_rht_check(n, what)) != SM_OK) return st;
        snprintf(what, sizeof what, "%s (out features)", t->name);
        if ((st = sm_rht_check(m, what)) != SM_OK) return st;
    }
    if ((st = sm_qout_count(t, m, n, &out->keep)) != SM_OK) return st;
    return SM_OK;
}

void sm_qspec_canon(const sm_qspec *qs, sm_canon *c) {
    sm_canon_add(c, "bits", "%d", qs->bits);
    sm_canon_add(c, "group", "%lld", (long long)qs->group);
    if (qs->sym) sm_canon_flag(c, "sym");
}

void sm_qspec_canon_rot(const sm_qspec *qs, sm_canon *c) {
    if (qs->rotate) sm_canon_add(c, "rotate", "hadamard");
    if (qs->keep) sm_canon_add(c, "keep-outliers", "%lld", (long long)qs->keep);
}

// --- sign matrices and F16 vectors --------------------------------------------------------------

uint8_t *sm_sign_pack(const float *W, int64_t rows, int64_t cols) {
    size_t rb = sm_sign_row_bytes(cols);
    bool ok = true;
    size_t bytes = sm_mul_size((size_t)rows, rb, &ok);
    uint8_t *bits = ok ? sm_calloc(bytes + SM_QPAD, 1) : NULL;
    if (!bits) return NULL;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            if (W[r * cols + c] >= 0) bits[(size_t)r * rb + (c >> 3)] |= (uint8_t)(1u << (c & 7));
    return bits;
}

void sm_f16_decode(const uint16_t *h, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = sm_f16_to_f32(h[i]);
}

sm_status sm_f16_encode(const float *x, int64_t n, uint16_t *out, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        out[i] = sm_f32_to_f16(x[i]);
        if ((out[i] & 0x7c00) == 0x7c00)
            return sm_fail(SM_ERR_NUMERIC, "%s: value %g at %lld exceeds the F16 range (65504)",
                           what, (double)x[i], (long long)i);
    }
    return SM_OK;
}

sm_status sm_part_take(const sm_part *parts, int nparts, const char *name, sm_dtype dtype,
                       int ndim, int64_t d0, int64_t d1, void *dst, size_t nbytes) {
    const sm_part *p = sm_parts_find(parts, nparts, name);
    if (!p) return SM_ERR_FORMAT;
    if (p->dtype != dtype || p->ndim != ndim || p->shape[0] != d0 ||
        (ndim == 2 && p->shape[1] != d1) || p->nbytes != nbytes) {
        char got[64], want[64];
        if (p->ndim >= 2)
            snprintf(got, sizeof got, "[%lld, %lld%s]", (long long)p->shape[0],
                     (long long)p->shape[1], p->ndim > 2 ? ", ..." : "");
        else
            snprintf(got, sizeof got, "[%lld]", (long long)(p->ndim ? p->shape[0] : 0));
        if (ndim == 2)
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        else
            snprintf(want, sizeof want, "[%lld]", (long long)d0);
        return sm_fail(SM_ERR_FORMAT, "part \"%s\" is %s %s (%zu bytes), expected %s %s (%zu bytes)",
                       name, sm_dtype_name(p->dtype), got, p->nbytes, sm_dtype_name(dtype), want,
                       nbytes);
    }
    if (dst) memcpy(dst, p->data, nbytes);
    return SM_OK;
}

sm_status sm_f16_check(const uint16_t *h, int64_t n, const char *part) {
    for (int64_t i = 0; i < n; i++)
        if ((h[i] & 0x7c00) == 0x7c00)
            return sm_fail(SM_ERR_NUMERIC, "part \"%s\" has a non-finite value at %lld", part,
                           (long long)i);
    return SM_OK;
}
