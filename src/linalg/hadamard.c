// Randomized Hadamard transforms; see hadamard.h for the construction.
#include "hadamard.h"

#include "../kernels/qkernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static int64_t odd_part(int64_t n, int64_t *p2) {
    int64_t p = 1;
    while (n % 2 == 0) n /= 2, p *= 2;
    *p2 = p;
    return n;
}

sm_status sm_rht_check(int64_t n, const char *what) {
    int64_t p2, b = odd_part(n, &p2);
    if (b > SM_RHT_MAX_ODD)
        return sm_fail(SM_ERR_SPEC,
                       "%s: rotate=hadamard needs a side n = 2^a * b with odd b <= %d (the "
                       "Kronecker factor is a dense b x b DCT); %lld = %lld * %lld",
                       what, SM_RHT_MAX_ODD, (long long)n, (long long)p2, (long long)b);
    return SM_OK;
}

void sm_rht_free(sm_rht *r) {
    sm_free(r->bits);
    sm_free(r->sign);
    sm_free(r->C);
    sm_free(r->Cd);
    memset(r, 0, sizeof *r);
}

sm_status sm_rht_init(sm_rht *r, int64_t n, const uint8_t *bits, uint64_t seed) {
    memset(r, 0, sizeof *r);
    sm_status st = sm_rht_check(n, "rotation");
    if (st != SM_OK) return st;
    r->n = n;
    r->b = odd_part(n, &r->p2);
    r->scale = (float)(1.0 / sqrt((double)r->p2));
    size_t nb = (size_t)(n + 7) / 8;
    r->bits = sm_calloc(nb + 8, 1);
    r->sign = sm_alloc((size_t)n * sizeof(float));
    if (r->b > 1) {
        r->C = sm_alloc((size_t)(r->b * r->b) * sizeof(float));
        r->Cd = sm_alloc((size_t)(r->b * r->b) * sizeof(double));
    }
    if (!r->bits || !r->sign || (r->b > 1 && (!r->C || !r->Cd))) {
        sm_rht_free(r);
        return sm_fail(SM_ERR_ALLOC, "rotation: out of memory");
    }
    if (bits) {
        memcpy(r->bits, bits, nb);
    } else {
        sm_rng rng;
        sm_rng_seed(&rng, seed);
        for (int64_t i = 0; i < n; i++)
            if (sm_rng_u64(&rng) >> 63) r->bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    }
    for (int64_t i = 0; i < n; i++) r->sign[i] = (r->bits[i >> 3] >> (i & 7)) & 1 ? 1.0f : -1.0f;
    const double pi = 3.14159265358979323846;
    for (int64_t k = 0; k < r->b && r->b > 1; k++)
        for (int64_t j = 0; j < r->b; j++) {
            double a = sqrt((k == 0 ? 1.0 : 2.0) / (double)r->b);
            double v = a * cos(pi * (double)((2 * j + 1) * k) / (double)(2 * r->b));
            r->Cd[k * r->b + j] = v;
            r->C[k * r->b + j] = (float)v;
        }
    return SM_OK;
}

size_t sm_rht_workspace(const sm_rht *r) {
    return r->b > 1 ? (size_t)r->n : 0;
}

// X (p2, b) <- X C^T (forward) or X C (transpose), through work (n floats).
static void dct_rows(const sm_rht *r, float *x, bool transpose, float *work) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transpose ? CblasNoTrans : CblasTrans, (int)r->p2,
                (int)r->b, (int)r->b, 1.0f, x, (int)r->b, r->C, (int)r->b, 0.0f, work, (int)r->b);
    memcpy(x, work, (size_t)r->n * sizeof(float));
}

void sm_rht_rows(const sm_rht *r, float *x, int64_t count, bool transpose, float *work) {
    const sm_qkernels *k = sm_qkernels_get();
    int64_t n = r->n;
    for (int64_t i = 0; i < count; i++) {
        float *v = x + i * n;
        if (!transpose)
            for (int64_t j = 0; j < n; j++) v[j] *= r->sign[j];
        if (r->b > 1) dct_rows(r, v, transpose, work);
        k->fwht(v, r->p2, r->b);
        if (transpose)
            for (int64_t j = 0; j < n; j++) v[j] *= r->sign[j] * r->scale;
        else
            for (int64_t j = 0; j < n; j++) v[j] *= r->scale;
    }
}

sm_status sm_rht_rows_f64(const sm_rht *r, double *x, int64_t count, bool transpose) {
    int64_t n = r->n, b = r->b, p2 = r->p2;
    double *t = b > 1 ? sm_alloc((size_t)b * sizeof(double)) : NULL;
    if (b > 1 && !t) return sm_fail(SM_ERR_ALLOC, "rotation: out of memory");
    double scale = 1.0 / sqrt((double)p2);
    for (int64_t i = 0; i < count; i++) {
        double *v = x + i * n;
        if (!transpose)
            for (int64_t j = 0; j < n; j++) v[j] *= r->sign[j];
        for (int64_t row = 0; row < p2 && b > 1; row++) { // each row of b: C v or C^T v
            double *u = v + row * b;
            for (int64_t k = 0; k < b; k++) {
                double acc = 0;
                for (int64_t j = 0; j < b; j++)
                    acc += (transpose ? r->Cd[j * b + k] : r->Cd[k * b + j]) * u[j];
                t[k] = acc;
            }
            memcpy(u, t, (size_t)b * sizeof(double));
        }
        for (int64_t h = 1; h < p2; h *= 2)
            for (int64_t s = 0; s < p2; s += 2 * h)
                for (int64_t k = s * b; k < (s + h) * b; k++) {
                    double a = v[k], c = v[k + h * b];
                    v[k] = a + c;
                    v[k + h * b] = a - c;
                }
        for (int64_t j = 0; j < n; j++) v[j] *= scale * (transpose ? r->sign[j] : 1.0);
    }
    sm_free(t);
    return SM_OK;
}
