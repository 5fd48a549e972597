// Scalar reference kernels: the definition every SIMD twin is tested against.
#include "kernels.h"

#include <cblas.h>
#include <string.h>

static int64_t ngroups(int64_t cols) {
    return (cols + SM_QGROUP - 1) / SM_QGROUP;
}

static void gemv_f32(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                     const float *x, float *y) {
    (void)scales;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)cols, 1.0f, data, (int)cols, x, 1,
                0.0f, y, 1);
}

static void gemv_f16(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                     const float *x, float *y) {
    (void)scales;
    const uint16_t *w = data;
    for (int64_t r = 0; r < rows; r++) {
        float acc = 0;
        for (int64_t c = 0; c < cols; c++) acc += sm_f16_to_f32(w[r * cols + c]) * x[c];
        y[r] = acc;
    }
}

static void gemv_bf16(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                      const float *x, float *y) {
    (void)scales;
    const uint16_t *w = data;
    for (int64_t r = 0; r < rows; r++) {
        float acc = 0;
        for (int64_t c = 0; c < cols; c++) acc += sm_bf16_to_f32(w[r * cols + c]) * x[c];
        y[r] = acc;
    }
}

static void gemv_q8(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                    const float *x, float *y) {
    const int8_t *q = data;
    int64_t ng = ngroups(cols);
    for (int64_t r = 0; r < rows; r++) {
        float acc = 0;
        for (int64_t g = 0; g < ng; g++) {
            int64_t c0 = g * SM_QGROUP, c1 = c0 + SM_QGROUP < cols ? c0 + SM_QGROUP : cols;
            float part = 0;
            for (int64_t c = c0; c < c1; c++) part += (float)q[r * cols + c] * x[c];
            acc += sm_f16_to_f32(scales[r * ng + g]) * part;
        }
        y[r] = acc;
    }
}

static int q4_at(const uint8_t *row, int64_t c) {
    int v = (c & 1) ? row[c >> 1] >> 4 : row[c >> 1] & 15;
    return v >= 8 ? v - 16 : v;
}

static void gemv_q4(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                    const float *x, float *y) {
    const uint8_t *q = data;
    size_t rb = (size_t)(cols + 1) / 2;
    int64_t ng = ngroups(cols);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = q + r * rb;
        float acc = 0;
        for (int64_t g = 0; g < ng; g++) {
            int64_t c0 = g * SM_QGROUP, c1 = c0 + SM_QGROUP < cols ? c0 + SM_QGROUP : cols;
            float part = 0;
            for (int64_t c = c0; c < c1; c++) part += (float)q4_at(row, c) * x[c];
            acc += sm_f16_to_f32(scales[r * ng + g]) * part;
        }
        y[r] = acc;
    }
}

static void decode_f32(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                       float *out) {
    (void)scales;
    memcpy(out, data, (size_t)(rows * cols) * 4);
}

static void decode_f16(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                       float *out) {
    (void)scales;
    const uint16_t *w = data;
    for (int64_t i = 0; i < rows * cols; i++) out[i] = sm_f16_to_f32(w[i]);
}

static void decode_bf16(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                        float *out) {
    (void)scales;
    const uint16_t *w = data;
    for (int64_t i = 0; i < rows * cols; i++) out[i] = sm_bf16_to_f32(w[i]);
}

static void decode_q8(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                      float *out) {
    const int8_t *q = data;
    int64_t ng = ngroups(cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            out[r * cols + c] =
                sm_f16_to_f32(scales[r * ng + c / SM_QGROUP]) * (float)q[r * cols + c];
}

static void decode_q4(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                      float *out) {
    const uint8_t *q = data;
    size_t rb = (size_t)(cols + 1) / 2;
    int64_t ng = ngroups(cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            out[r * cols + c] =
                sm_f16_to_f32(scales[r * ng + c / SM_QGROUP]) * (float)q4_at(q + r * rb, c);
}

void sm_kernels_init_ref(sm_kernels *k) {
    k->gemv[SM_STORE_F32] = gemv_f32;
    k->gemv[SM_STORE_F16] = gemv_f16;
    k->gemv[SM_STORE_BF16] = gemv_bf16;
    k->gemv[SM_STORE_Q8] = gemv_q8;
    k->gemv[SM_STORE_Q4] = gemv_q4;
    k->decode[SM_STORE_F32] = decode_f32;
    k->decode[SM_STORE_F16] = decode_f16;
    k->decode[SM_STORE_BF16] = decode_bf16;
    k->decode[SM_STORE_Q8] = decode_q8;
    k->decode[SM_STORE_Q4] = decode_q4;
}
