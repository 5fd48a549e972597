// Scalar reference kernels of qkernels.h (the definitions the SIMD twins are tested against),
// and the per-ISA table.
#include "qkernels.h"

#include <pthread.h>
#include <string.h>

size_t sm_qgemv_workspace(int64_t cols, int64_t group) {
    // The SIMD kernels keep x in the lane order of their unpacking (cols floats) and each row's
    // scales and scale * zero products (2 * cols / group floats), plus room to round up.
    // (The AVX512-VNNI 4-bit path keeps three byte planes of x, 0.75 cols floats, and two floats
    // per group.)
    return (size_t)(cols + 4 * (cols / group) + 64);
}

void sm_qgemv_ref_rows(const sm_qview *q, const float *x, float *y, int64_t r0, int64_t r1) {
    int64_t ng = q->cols / q->group;
    int zsym = 1 << (q->bits - 1);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = q->codes + (size_t)r * q->rb;
        const uint8_t *zr = q->zeros ? q->zeros + (size_t)r * q->zb : NULL;
        float acc = 0;
        for (int64_t g = 0; g < ng; g++) {
            int z = zr ? sm_qcode_at(zr, g, q->bits) : zsym;
            float part = 0;
            for (int64_t c = g * q->group; c < (g + 1) * q->group; c++)
                part += (float)(sm_qcode_at(row, c, q->bits) - z) * x[c];
            acc += sm_f16_to_f32(q->scales[r * ng + g]) * part;
        }
        y[r] = acc;
    }
}

static void qgemv_ref(const sm_qview *q, const float *x, float *y, float *work) {
    (void)work;
    sm_qgemv_ref_rows(q, x, y, 0, q->rows);
}

void sm_qdecode_ref_rows(const sm_qview *q, int64_t r0, int64_t r1, float *out) {
    int64_t ng = q->cols / q->group;
    int zsym = 1 << (q->bits - 1);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = q->codes + (size_t)r * q->rb;
        const uint8_t *zr = q->zeros ? q->zeros + (size_t)r * q->zb : NULL;
        float *o = out + (r - r0) * q->cols;
        for (int64_t g = 0; g < ng; g++) {
            int z = zr ? sm_qcode_at(zr, g, q->bits) : zsym;
            float s = sm_f16_to_f32(q->scales[r * ng + g]);
            // A table of the group's 2^B values when that is cheaper than decoding each code.
            if (q->bits <= 4) {
                float t[16];
                for (int i = 0; i < (1 << q->bits); i++) t[i] = s * (float)(i - z);
                for (int64_t c = g * q->group; c < (g + 1) * q->group; c++)
                    o[c] = t[sm_qcode_at(row, c, q->bits)];
            } else {
                for (int64_t c = g * q->group; c < (g + 1) * q->group; c++)
                    o[c] = s * (float)(sm_qcode_at(row, c, q->bits) - z);
            }
        }
    }
}

static inline bool bit_at(const uint8_t *row, int64_t c) {
    return (row[c >> 3] >> (c & 7)) & 1;
}

static void signmm_ref(int64_t rows, int64_t cols, const uint8_t *bits, size_t rb, int64_t nv,
                       const float *X, float *Y) {
    for (int64_t v = 0; v < nv; v++)
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *row = bits + (size_t)r * rb;
            const float *x = X + v * cols;
            float acc = 0;
            for (int64_t c = 0; c < cols; c++) acc += bit_at(row, c) ? x[c] : -x[c];
            Y[v * rows + r] = acc;
        }
}

static void signmm_t_ref(int64_t rows, int64_t cols, const uint8_t *bits, size_t rb, int64_t nv,
                         const float *Y, float *X) {
    memset(X, 0, (size_t)(nv * cols) * sizeof(float));
    for (int64_t v = 0; v < nv; v++)
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *row = bits + (size_t)r * rb;
            float y = Y[v * rows + r], *x = X + v * cols;
            for (int64_t c = 0; c < cols; c++) x[c] += bit_at(row, c) ? y : -y;
        }
}

static void fwht_ref(float *x, int64_t p2, int64_t b) {
    for (int64_t h = 1; h < p2; h *= 2)
        for (int64_t i = 0; i < p2; i += 2 * h) {
            float *u = x + i * b, *v = x + (i + h) * b;
            for (int64_t k = 0; k < h * b; k++) {
                float a = u[k], c = v[k];
                u[k] = a + c;
                v[k] = a - c;
            }
        }
}

void sm_qkernels_init_ref(sm_qkernels *k) {
    k->qgemv = qgemv_ref;
    k->qdecode = sm_qdecode_ref_rows;
    k->signmm = signmm_ref;
    k->signmm_t = signmm_t_ref;
    k->fwht = fwht_ref;
}

static sm_qkernels g_tables[3];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_tables(void) {
    sm_isa best = sm_isa_detect();
    sm_qkernels_init_ref(&g_tables[SM_ISA_SCALAR]);
    g_tables[SM_ISA_AVX2] = g_tables[SM_ISA_SCALAR];
    if (best >= SM_ISA_AVX2) sm_qkernels_init_avx2(&g_tables[SM_ISA_AVX2]);
    g_tables[SM_ISA_AVX512] = g_tables[SM_ISA_AVX2];
    if (best >= SM_ISA_AVX512) sm_qkernels_init_avx512(&g_tables[SM_ISA_AVX512]);
}

const sm_qkernels *sm_qkernels_for(sm_isa isa) {
    pthread_once(&g_once, init_tables);
    if (isa > sm_isa_detect()) isa = sm_isa_detect();
    return &g_tables[isa];
}

const sm_qkernels *sm_qkernels_get(void) {
    return sm_qkernels_for(sm_isa_active());
}
