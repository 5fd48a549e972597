// Tiny test helpers: quiet on success, first mismatch printed with its index on failure.
#ifndef SM_TESTUTIL_H
#define SM_TESTUTIL_H

#include "structmat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);             \
            g_failures++;                                                                        \
        }                                                                                        \
    } while (0)

#define CHECK_OK(expr)                                                                           \
    do {                                                                                         \
        sm_status s_ = (expr);                                                                   \
        if (s_ != SM_OK) {                                                                       \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,                  \
                    sm_status_str(s_), sm_last_error());                                         \
            g_failures++;                                                                        \
        }                                                                                        \
    } while (0)

// Expects a failure with status st whose message contains `needle`.
#define CHECK_FAIL(expr, st, needle)                                                             \
    do {                                                                                         \
        sm_status s_ = (expr);                                                                   \
        if (s_ != (st) || !strstr(sm_last_error(), (needle))) {                                  \
            fprintf(stderr, "%s:%d: %s -> %s \"%s\", expected %s with \"%s\"\n", __FILE__,       \
                    __LINE__, #expr, sm_status_str(s_), sm_last_error(), sm_status_str(st),      \
                    (needle));                                                                   \
            g_failures++;                                                                        \
        }                                                                                        \
    } while (0)

// Max |a - b| / max(|b|_max, tiny) over n elements; prints the first element beyond tol.
static inline int check_close(const char *what, const float *a, const float *b, int64_t n,
                              double tol) {
    double scale = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
    if (scale == 0) scale = 1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / scale;
        if (!(d <= tol)) {
            fprintf(stderr, "%s: mismatch at %lld: %.9g vs %.9g (scaled diff %.3g > %.3g)\n",
                    what, (long long)i, (double)a[i], (double)b[i], d, tol);
            g_failures++;
            return 1;
        }
    }
    return 0;
}

// Deterministic pseudo-random floats in [-1, 1) (a tiny LCG so tests need no library RNG).
static inline void fill_random(float *x, int64_t n, unsigned seed) {
    unsigned long long s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    }
}

// Relative Frobenius distance ||a - b|| / ||b|| in double.
// Fits spec to W (m, n), counting a failure as a check failure; NULL then.
static inline sm_op *fit_op(const float *W, int64_t m, int64_t n, const char *spec) {
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, spec, NULL, &op));
    return op;
}

// spec fitted to a random m x n matrix reports the canonical spec `want`.
static inline void check_canonical(const char *spec, int64_t m, int64_t n, const char *want) {
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 4);
    sm_op *op = fit_op(W, m, n, spec);
    if (op && strcmp(sm_op_spec(op), want) != 0) {
        fprintf(stderr, "canonical(%s) on %lldx%lld = %s, expected %s\n", spec, (long long)m,
                (long long)n, sm_op_spec(op), want);
        g_failures++;
    }
    sm_op_free(op);
    free(W);
}

// spec on a random m x n matrix fails with SM_ERR_SPEC and a message containing needle.
static inline void check_fit_fails(const char *spec, int64_t m, int64_t n, const char *needle) {
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 3);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, m, n, spec, NULL, &op), SM_ERR_SPEC, needle);
    CHECK(op == NULL);
    sm_op_free(op);
    free(W);
}

// H (n, n) = X^T X for X (T, n): a calibration Gram in double, by the triple loop.
static inline void gram_ref(const double *X, int64_t T, int64_t n, double *H) {
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = 0; b < n; b++) {
            double s = 0;
            for (int64_t t = 0; t < T; t++) s += X[t * n + a] * X[t * n + b];
            H[a * n + b] = s;
        }
}

// ||X (W - W_hat)^T||_F^2 from X (T, n) directly: the activation-aware error, no Gram involved.
static inline double act_err2_ref(const double *X, int64_t T, const float *W, const float *Wh,
                                  int64_t m, int64_t n) {
    double e = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < m; i++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++)
                s += X[t * n + j] * ((double)W[i * n + j] - Wh[i * n + j]);
            e += s * s;
        }
    return e;
}

static inline double rel_fro(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// W (m, n) = A (m, k) B (k, n) in double, stored as float.
static inline void matmul_ref(const float *A, const float *B, float *C, int64_t m, int64_t k,
                              int64_t n) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t l = 0; l < k; l++) acc += (double)A[i * k + l] * (double)B[l * n + j];
            C[i * n + j] = (float)acc;
        }
}

// A 2-D tensor of a safetensors file or checkpoint as F32 (malloc'd); counts a failure and
// returns NULL when it cannot be read.
static inline float *read_matrix(const char *path, const char *name, int64_t *m, int64_t *n) {
    sm_st *st = NULL;
    float *w = NULL;
    int64_t count;
    const sm_tensor_info *t;
    if (sm_st_open(path, &st) != SM_OK || !(t = sm_st_find(st, name)) || t->ndim != 2 ||
        sm_st_read_f32(st, name, &w, &count) != SM_OK) {
        fprintf(stderr, "%s: cannot read %s as a matrix: %s\n", path, name, sm_last_error());
        g_failures++;
        sm_st_close(st);
        return NULL;
    }
    *m = t->shape[0];
    *n = t->shape[1];
    sm_st_close(st);
    return w;
}

#define TEST_END()                                                                               \
    do {                                                                                         \
        if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);                     \
        return g_failures ? 1 : 0;                                                               \
    } while (0)

#endif
