// AVX2 + FMA + F16C kernels: gemv and decode of f16, bf16, q8 and q4 factors (f32 gemv stays
// cblas_sgemv). Compiled with -mavx2 -mfma -mf16c; only reached when cpuid reports them.
//
// gemv is written for N = 1 decode, which is memory-bound: every code byte is read once, four
// rows share each load of x, and each row keeps two 8-wide accumulators (dependency chains of
// FMAs would otherwise limit a single row). Quantized rows accumulate a 64-column group in
// `part` and fold it into `acc` with the group's scale, as the scalar reference does. Column
// tails (< 16 left) go through small zero-padded buffers so no load reads past a row.
#include "kernels.h"

#include <immintrin.h>
#include <string.h>

#define NR 4                // rows per block
#define STEP 16             // columns per inner step
#define PAR_MIN (1 << 18)   // rows * cols below which threads cost more than they give

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 bf16x8(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// 16 q4 codes (8 bytes, even column in the low nibble) -> 16 int8 in column order.
static inline __m128i q4_unpack16(__m128i v) {
    const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    __m128i q = _mm_unpacklo_epi8(lo, hi);
    return _mm_sub_epi8(_mm_xor_si128(q, eight), eight); // 4-bit two's complement -> int8
}

// Columns [c, c + 16) of a row as two 8-float vectors (unscaled codes for q8/q4). p points at
// the row's codes; c is a multiple of 16 (so q4 byte offsets are whole).
static inline __attribute__((always_inline)) void load16(sm_store st, const void *p, int64_t c,
                                                         __m256 *a, __m256 *b) {
    switch (st) {
    case SM_STORE_F16: {
        const uint16_t *h = (const uint16_t *)p + c;
        *a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
        *b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 8)));
        break;
    }
    case SM_STORE_BF16: {
        const uint16_t *h = (const uint16_t *)p + c;
        *a = bf16x8(_mm_loadu_si128((const __m128i *)h));
        *b = bf16x8(_mm_loadu_si128((const __m128i *)(h + 8)));
        break;
    }
    case SM_STORE_Q8: {
        __m128i q = _mm_loadu_si128((const __m128i *)((const int8_t *)p + c));
        *a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
        *b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
        break;
    }
    default: { // SM_STORE_Q4
        __m128i q = q4_unpack16(_mm_loadl_epi64((const __m128i *)((const uint8_t *)p + c / 2)));
        *a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
        *b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
        break;
    }
    }
}

// Bytes holding columns [c, c + t) of a row (c even for q4).
static inline size_t span_bytes(sm_store st, int64_t t) {
    switch (st) {
    case SM_STORE_F16:
    case SM_STORE_BF16: return (size_t)t * 2;
    case SM_STORE_Q8: return (size_t)t;
    default: return (size_t)(t + 1) / 2;
    }
}

static inline const unsigned char *col_ptr(sm_store st, const void *p, int64_t c) {
    return (const unsigned char *)p + span_bytes(st, c);
}

// The t < 16 columns from c as load16 would give them, zeros beyond t (read from a padded copy).
// For q4 with t odd the high nibble of the last byte is another column's code or padding; it is
// finite and meets a zero of x, so it adds nothing.
static inline __attribute__((always_inline)) void load16_tail(sm_store st, const void *p,
                                                              int64_t c, int64_t t, __m256 *a,
                                                              __m256 *b) {
    unsigned char buf[32] = {0};
    memcpy(buf, col_ptr(st, p, c), span_bytes(st, t));
    load16(st, buf, 0, a, b);
}

// y[0..nr) for nr consecutive rows starting at codes w (row stride rb) and scales sc (row stride
// ng). nr is a compile-time constant at each call site, so the row loops unroll into registers.
static inline __attribute__((always_inline)) void gemv_block(sm_store st, int nr, int64_t cols,
                                                             const unsigned char *w, size_t rb,
                                                             const uint16_t *sc, int64_t ng,
                                                             const float *x, float *y) {
    __m256 acc[NR][2];
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    bool quant = st == SM_STORE_Q8 || st == SM_STORE_Q4;
    int64_t glen = quant ? SM_QGROUP : cols; // plain stores: the whole row is one "group"
    for (int64_t c0 = 0; c0 < cols; c0 += glen) {
        int64_t c1 = c0 + glen < cols ? c0 + glen : cols, c = c0;
        __m256 part[NR];
        // Plain stores accumulate straight into acc; quantized ones into part, then scale.
#pragma GCC unroll 4
        for (int i = 0; i < nr; i++) part[i] = _mm256_setzero_ps();
        for (; c + STEP <= c1; c += STEP) {
            __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8), a, b;
#pragma GCC unroll 4
            for (int i = 0; i < nr; i++) {
                load16(st, w + i * rb, c, &a, &b);
                if (quant) {
                    part[i] = _mm256_fmadd_ps(a, x0, part[i]);
                    part[i] = _mm256_fmadd_ps(b, x1, part[i]);
                } else {
                    acc[i][0] = _mm256_fmadd_ps(a, x0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(b, x1, acc[i][1]);
                }
            }
        }
        if (c < c1) {
            float xt[STEP] = {0};
            memcpy(xt, x + c, (size_t)(c1 - c) * sizeof(float));
            __m256 x0 = _mm256_loadu_ps(xt), x1 = _mm256_loadu_ps(xt + 8), a, b;
#pragma GCC unroll 4
            for (int i = 0; i < nr; i++) {
                load16_tail(st, w + i * rb, c, c1 - c, &a, &b);
                if (quant) {
                    part[i] = _mm256_fmadd_ps(a, x0, part[i]);
                    part[i] = _mm256_fmadd_ps(b, x1, part[i]);
                } else {
                    acc[i][0] = _mm256_fmadd_ps(a, x0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(b, x1, acc[i][1]);
                }
            }
        }
        if (quant) {
            int64_t g = c0 / SM_QGROUP;
#pragma GCC unroll 4
            for (int i = 0; i < nr; i++)
                acc[i][0] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(sc[i * ng + g])), part[i],
                                            acc[i][0]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) y[i] = hsum8(_mm256_add_ps(acc[i][0], acc[i][1]));
}

static inline __attribute__((always_inline)) void gemv(sm_store st, int64_t rows, int64_t cols,
                                                       const void *data, const uint16_t *scales,
                                                       const float *x, float *y) {
    size_t rb = sm_store_row_bytes(st, cols);
    int64_t ng = (cols + SM_QGROUP - 1) / SM_QGROUP, nblk = rows / NR;
    const unsigned char *w = data;
#pragma omp parallel for schedule(static) if (rows * cols > PAR_MIN)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t r = blk * NR;
        gemv_block(st, NR, cols, w + (size_t)r * rb, rb, scales ? scales + r * ng : NULL, ng, x,
                   y + r);
    }
    for (int64_t r = nblk * NR; r < rows; r++)
        gemv_block(st, 1, cols, w + (size_t)r * rb, rb, scales ? scales + r * ng : NULL, ng, x,
                   y + r);
}

// Decode multiplies each code by its group's scale once (no FMA), so it is bit-exact with the
// scalar reference; F16C conversions are exact too.
static inline __attribute__((always_inline)) void decode(sm_store st, int64_t rows, int64_t cols,
                                                         const void *data,
                                                         const uint16_t *scales, float *out) {
    size_t rb = sm_store_row_bytes(st, cols);
    int64_t ng = (cols + SM_QGROUP - 1) / SM_QGROUP;
    bool quant = st == SM_STORE_Q8 || st == SM_STORE_Q4;
    const unsigned char *w = data;
#pragma omp parallel for schedule(static) if (rows * cols > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *row = w + (size_t)r * rb;
        float *o = out + r * cols;
        int64_t c = 0;
        __m256 a, b;
        for (; c < cols; c += STEP) {
            // A step of 16 never straddles a group of 64, so one scale covers it.
            bool tail = c + STEP > cols;
            if (tail)
                load16_tail(st, row, c, cols - c, &a, &b);
            else
                load16(st, row, c, &a, &b);
            if (quant) {
                __m256 s = _mm256_set1_ps(_cvtsh_ss(scales[r * ng + c / SM_QGROUP]));
                a = _mm256_mul_ps(a, s);
                b = _mm256_mul_ps(b, s);
            }
            if (tail) {
                float t[STEP];
                _mm256_storeu_ps(t, a);
                _mm256_storeu_ps(t + 8, b);
                memcpy(o + c, t, (size_t)(cols - c) * sizeof(float));
            } else {
                _mm256_storeu_ps(o + c, a);
                _mm256_storeu_ps(o + c + 8, b);
            }
        }
    }
}

static void gemv_f16(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                     const float *x, float *y) {
    gemv(SM_STORE_F16, rows, cols, data, scales, x, y);
}
static void gemv_bf16(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                      const float *x, float *y) {
    gemv(SM_STORE_BF16, rows, cols, data, scales, x, y);
}
static void gemv_q8(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                    const float *x, float *y) {
    gemv(SM_STORE_Q8, rows, cols, data, scales, x, y);
}
static void gemv_q4(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                    const float *x, float *y) {
    gemv(SM_STORE_Q4, rows, cols, data, scales, x, y);
}
static void decode_f16(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                       float *out) {
    decode(SM_STORE_F16, rows, cols, data, scales, out);
}
static void decode_bf16(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                        float *out) {
    decode(SM_STORE_BF16, rows, cols, data, scales, out);
}
static void decode_q8(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                      float *out) {
    decode(SM_STORE_Q8, rows, cols, data, scales, out);
}
static void decode_q4(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                      float *out) {
    decode(SM_STORE_Q4, rows, cols, data, scales, out);
}

void sm_kernels_init_avx2(sm_kernels *k) {
    k->gemv[SM_STORE_F16] = gemv_f16;
    k->gemv[SM_STORE_BF16] = gemv_bf16;
    k->gemv[SM_STORE_Q8] = gemv_q8;
    k->gemv[SM_STORE_Q4] = gemv_q4;
    k->decode[SM_STORE_F16] = decode_f16;
    k->decode[SM_STORE_BF16] = decode_bf16;
    k->decode[SM_STORE_Q8] = decode_q8;
    k->decode[SM_STORE_Q4] = decode_q4;
}
