// Outliers kept in full precision (keep-outliers=N of rtn and gptq): the N largest-|w| weights of
// a matrix stay as F32 values with int32 flat indices, outside the quantization grid, and are
// added back as a sparse term. Weights far larger than the rest of their group stretch its grid
// (a min-max grid spends all its steps on one value); taking them out lets the rest of the group
// use the grid, and the Super Weight paper (Yu et al., 2024) shows that a handful of such weights
// can carry a model's quality. Costs 8 bytes per kept weight, counted in nbytes.
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sm_status sm_qout_alloc(sm_qout *o, int64_t count) {
    memset(o, 0, sizeof *o);
    if (count == 0) return SM_OK;
    o->count = count;
    o->idx = sm_alloc((size_t)count * sizeof(int32_t));
    o->val = sm_alloc((size_t)count * sizeof(float));
    o->corr = sm_alloc((size_t)count * sizeof(float));
    if (!o->idx || !o->val || !o->corr) {
        sm_qout_free(o);
        return sm_fail(SM_ERR_ALLOC, "keep-outliers: out of memory for %lld outliers",
                       (long long)count);
    }
    return SM_OK;
}

void sm_qout_free(sm_qout *o) {
    sm_free(o->idx), sm_free(o->val), sm_free(o->corr);
    memset(o, 0, sizeof *o);
}

// The heap keeps the `count` largest so far with the smallest on top; "smaller" is a smaller
// |w|, or an equal |w| at a higher index (so ties keep the lower index).
typedef struct hent {
    float a;
    int32_t i;
} hent;

static bool hless(hent x, hent y) {
    return x.a < y.a || (x.a == y.a && x.i > y.i);
}

static void sift_down(hent *h, int64_t len, int64_t k) {
    for (;;) {
        int64_t l = 2 * k + 1, r = l + 1, s = k;
        if (l < len && hless(h[l], h[s])) s = l;
        if (r < len && hless(h[r], h[s])) s = r;
        if (s == k) return;
        hent t = h[k];
        h[k] = h[s];
        h[s] = t;
        k = s;
    }
}

static int by_index(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

sm_status sm_qout_select(const float *W, int64_t m, int64_t n, int64_t count, sm_qout *o) {
    sm_status st = sm_qout_alloc(o, count);
    if (st != SM_OK || count == 0) return st;
    int64_t total = m * n;
    hent *h = sm_alloc((size_t)count * sizeof(hent));
    if (!h) {
        sm_qout_free(o);
        return sm_fail(SM_ERR_ALLOC, "keep-outliers: out of memory");
    }
    for (int64_t i = 0; i < count; i++) h[i] = (hent){fabsf(W[i]), (int32_t)i};
    for (int64_t k = count / 2 - 1; k >= 0; k--) sift_down(h, count, k);
    for (int64_t i = count; i < total; i++) {
        hent e = {fabsf(W[i]), (int32_t)i};
        if (hless(h[0], e)) {
            h[0] = e;
            sift_down(h, count, 0);
        }
    }
    for (int64_t k = 0; k < count; k++) o->idx[k] = h[k].i;
    sm_free(h);
    qsort(o->idx, (size_t)count, sizeof(int32_t), by_index);
    for (int64_t k = 0; k < count; k++) o->val[k] = W[o->idx[k]];
    return SM_OK;
}

void sm_qout_set_corr(sm_qout *o, const float *D) {
    for (int64_t k = 0; k < o->count; k++) o->corr[k] = o->val[k] - D[o->idx[k]];
}

void sm_qout_apply(const sm_qout *o, int64_t m, int64_t n, int64_t N, const float *X, float *Y) {
    for (int64_t k = 0; k < o->count; k++) {
        int64_t r = o->idx[k] / n, c = o->idx[k] % n;
        float v = o->corr[k];
        for (int64_t b = 0; b < N; b++) Y[b * m + r] += v * X[b * n + c];
    }
}

void sm_qout_apply_t(const sm_qout *o, int64_t m, int64_t n, int64_t N, const float *Y,
                     float *X) {
    for (int64_t k = 0; k < o->count; k++) {
        int64_t r = o->idx[k] / n, c = o->idx[k] % n;
        float v = o->corr[k];
        for (int64_t b = 0; b < N; b++) X[b * n + c] += v * Y[b * m + r];
    }
}

void sm_qout_place(const sm_qout *o, float *W) {
    for (int64_t k = 0; k < o->count; k++) W[o->idx[k]] = o->val[k];
}

int64_t sm_qout_nbytes(const sm_qout *o) {
    return o->count * (int64_t)(sizeof(int32_t) + sizeof(float));
}

static sm_part part1(const char *name, sm_dtype dt, int64_t d0, const void *data, size_t bytes) {
    sm_part p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.dtype = dt;
    p.ndim = 1;
    p.shape[0] = d0;
    p.data = data;
    p.nbytes = bytes;
    return p;
}

int sm_qout_parts(const sm_qout *o, sm_part *out) {
    if (!o->count) return 0;
    out[0] = part1("outlier_index", SM_DTYPE_I32, o->count, o->idx,
                   (size_t)o->count * sizeof(int32_t));
    out[1] = part1("outlier_value", SM_DTYPE_F32, o->count, o->val,
                   (size_t)o->count * sizeof(float));
    return 2;
}

sm_status sm_qout_load(sm_qout *o, int64_t count, int64_t m, int64_t n, const sm_part *parts,
                       int nparts) {
    sm_status st = sm_qout_alloc(o, count);
    if (st != SM_OK || count == 0) return st;
    st = sm_part_take(parts, nparts, "outlier_index", SM_DTYPE_I32, 1, count, 0, o->idx,
                      (size_t)count * sizeof(int32_t));
    if (st == SM_OK)
        st = sm_part_take(parts, nparts, "outlier_value", SM_DTYPE_F32, 1, count, 0, o->val,
                          (size_t)count * sizeof(float));
    for (int64_t k = 0; st == SM_OK && k < count; k++) {
        if (o->idx[k] < 0 || o->idx[k] >= m * n || (k && o->idx[k] <= o->idx[k - 1]))
            st = sm_fail(SM_ERR_FORMAT,
                         "part \"outlier_index\": entry %lld (%lld) is out of range [0, %lld) "
                         "or not above the one before it", (long long)k, (long long)o->idx[k],
                         (long long)(m * n));
        else if (!isfinite(o->val[k]))
            st = sm_fail(SM_ERR_NUMERIC, "part \"outlier_value\" has a non-finite value at %lld",
                         (long long)k);
    }
    if (st != SM_OK) sm_qout_free(o);
    return st;
}
