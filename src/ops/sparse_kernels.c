// Scalar sparse kernels (the reference every SIMD level is tested against) and the table.
#include "sparse_kernels.h"

#include <pthread.h>

static void bitmap_gemv_ref(int64_t rows, int64_t n, const uint8_t *mask, const float *vals,
                            const float *x, float *y) {
    int64_t mb = (n + 7) / 8;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *mr = mask + r * mb;
        float acc = 0;
        for (int64_t k = 0; k < mb; k++)
            for (unsigned b = mr[k]; b; b &= b - 1) acc += *vals++ * x[8 * k + __builtin_ctz(b)];
        y[r] = acc;
    }
}

static void bitmap_gemv_t_ref(int64_t rows, int64_t n, const uint8_t *mask, const float *vals,
                              const float *y, float *x) {
    int64_t mb = (n + 7) / 8;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *mr = mask + r * mb;
        float yr = y[r];
        for (int64_t k = 0; k < mb; k++)
            for (unsigned b = mr[k]; b; b &= b - 1) x[8 * k + __builtin_ctz(b)] += *vals++ * yr;
    }
}

static void bitmap_decode_ref(int64_t rows, int64_t n, const uint8_t *mask, const float *vals,
                              float *out) {
    int64_t mb = (n + 7) / 8;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *mr = mask + r * mb;
        float *o = out + r * n;
        for (int64_t c = 0; c < n; c++) o[c] = (mr[c / 8] >> (c % 8)) & 1 ? *vals++ : 0.0f;
    }
}

static void csr16_gemv_ref(int64_t rows, const int32_t *indptr, const uint16_t *idx,
                           const float *vals, const float *x, float *y) {
    for (int64_t r = 0; r < rows; r++) {
        float acc = 0;
        for (int32_t k = indptr[r]; k < indptr[r + 1]; k++) acc += vals[k] * x[idx[k]];
        y[r] = acc;
    }
}

static void csr32_gemv_ref(int64_t rows, const int32_t *indptr, const int32_t *idx,
                           const float *vals, const float *x, float *y) {
    for (int64_t r = 0; r < rows; r++) {
        float acc = 0;
        for (int32_t k = indptr[r]; k < indptr[r + 1]; k++) acc += vals[k] * x[idx[k]];
        y[r] = acc;
    }
}

static void axpy_ref(int64_t n, float a, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static sm_sparse_kernels g_tables[3];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_tables(void) {
    sm_isa best = sm_isa_detect();
    g_tables[SM_ISA_SCALAR] = (sm_sparse_kernels){
        .bitmap_gemv = bitmap_gemv_ref,
        .bitmap_gemv_t = bitmap_gemv_t_ref,
        .bitmap_decode = bitmap_decode_ref,
        .csr16_gemv = csr16_gemv_ref,
        .csr32_gemv = csr32_gemv_ref,
        .axpy = axpy_ref,
    };
    g_tables[SM_ISA_AVX2] = g_tables[SM_ISA_SCALAR];
    if (best >= SM_ISA_AVX2) sm_sparse_kernels_init_avx2(&g_tables[SM_ISA_AVX2]);
    g_tables[SM_ISA_AVX512] = g_tables[SM_ISA_AVX2];
    if (best >= SM_ISA_AVX512) sm_sparse_kernels_init_avx512(&g_tables[SM_ISA_AVX512]);
}

const sm_sparse_kernels *sm_sparse_kernels_for(sm_isa isa) {
    pthread_once(&g_once, init_tables);
    if (isa > sm_isa_detect()) isa = sm_isa_detect();
    return &g_tables[isa];
}

const sm_sparse_kernels *sm_sparse_kernels_get(void) {
    return sm_sparse_kernels_for(sm_isa_active());
}
