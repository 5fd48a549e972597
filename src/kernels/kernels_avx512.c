// AVX-512 (F, BW, VL, DQ) kernels: gemv and decode of f16, bf16, q8 and q4 factors; the same
// shape as the AVX2 ones (kernels_avx2.c explains the layout) with 16-wide vectors, 32 columns
// per step, and masked loads and stores for column tails instead of padded copies.
#include "kernels.h"

#include <immintrin.h>

#define NR 4              // rows per block
#define STEP 32           // columns per inner step
#define PAR_MIN (1 << 18) // rows * cols below which threads cost more than they give

static inline __m512 bf16x16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __m512 i8x16(__m128i q) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
}

// 32 q4 codes (16 bytes, even column in the low nibble) -> two vectors of 16 in column order.
static inline void q4x32(__m128i v, __m512 *a, __m512 *b) {
    const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    __m128i q0 = _mm_unpacklo_epi8(lo, hi), q1 = _mm_unpackhi_epi8(lo, hi);
    // 4-bit two's complement -> int8
    q0 = _mm_sub_epi8(_mm_xor_si128(q0, eight), eight);
    q1 = _mm_sub_epi8(_mm_xor_si128(q1, eight), eight);
    *a = i8x16(q0);
    *b = i8x16(q1);
}

// Masks of the first t (< 32) columns of a step, split over its two 16-wide halves.
static inline __mmask16 mask_lo(int64_t t) {
    return t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << t) - 1);
}
static inline __mmask16 mask_hi(int64_t t) {
    return t > 16 ? (__mmask16)((1u << (t - 16)) - 1) : (__mmask16)0;
}

// Columns [c, c + min(t, 32)) of a row as two 16-float vectors (unscaled codes for q8/q4), zeros
// beyond t. c is a multiple of 32. Masked-off bytes are never touched, so tails cannot fault.
// For q4 with t odd the high nibble of the last byte is loaded; it meets a masked-off (zero) x.
static inline __attribute__((always_inline)) void load32(sm_store st, const void *p, int64_t c,
                                                         int64_t t, __m512 *a, __m512 *b) {
    bool full = t >= STEP;
    switch (st) {
    case SM_STORE_F16:
    case SM_STORE_BF16: {
        const uint16_t *h = (const uint16_t *)p + c;
        __m256i u0, u1;
        if (full) {
            u0 = _mm256_loadu_si256((const __m256i *)h);
            u1 = _mm256_loadu_si256((const __m256i *)(h + 16));
        } else {
            u0 = _mm256_maskz_loadu_epi16(mask_lo(t), h);
            u1 = _mm256_maskz_loadu_epi16(mask_hi(t), h + 16);
        }
        if (st == SM_STORE_F16) {
            *a = _mm512_cvtph_ps(u0);
            *b = _mm512_cvtph_ps(u1);
        } else {
            *a = bf16x16(u0);
            *b = bf16x16(u1);
        }
        break;
    }
    case SM_STORE_Q8: {
        const int8_t *q = (const int8_t *)p + c;
        __m256i v = full ? _mm256_loadu_si256((const __m256i *)q)
                         : _mm256_maskz_loadu_epi8((__mmask32)((1ull << t) - 1), q);
        *a = i8x16(_mm256_castsi256_si128(v));
        *b = i8x16(_mm256_extracti128_si256(v, 1));
        break;
    }
    default: { // SM_STORE_Q4
        const uint8_t *q = (const uint8_t *)p + c / 2;
        __m128i v = full ? _mm_loadu_si128((const __m128i *)q)
                         : _mm_maskz_loadu_epi8((__mmask16)((1u << ((t + 1) / 2)) - 1), q);
        q4x32(v, a, b);
        break;
    }
    }
}

// y[0..nr) for nr consecutive rows from codes w (row stride rb) and scales sc (row stride ng);
// nr is a compile-time constant at each call site so the row loops unroll into registers.
static inline __attribute__((always_inline)) void gemv_block(sm_store st, int nr, int64_t cols,
                                                             const unsigned char *w, size_t rb,
                                                             const uint16_t *sc, int64_t ng,
                                                             const float *x, float *y) {
    __m512 acc[NR][2];
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    bool quant = st == SM_STORE_Q8 || st == SM_STORE_Q4;
    int64_t glen = quant ? SM_QGROUP : cols; // plain stores: the whole row is one "group"
    for (int64_t c0 = 0; c0 < cols; c0 += glen) {
        int64_t c1 = c0 + glen < cols ? c0 + glen : cols;
        __m512 part[NR][2];
#pragma GCC unroll 4
        for (int i = 0; i < nr; i++) part[i][0] = part[i][1] = _mm512_setzero_ps();
        for (int64_t c = c0; c < c1; c += STEP) {
            int64_t t = c1 - c;
            __m512 x0, x1, a, b;
            if (t >= STEP) {
                x0 = _mm512_loadu_ps(x + c);
                x1 = _mm512_loadu_ps(x + c + 16);
            } else {
                x0 = _mm512_maskz_loadu_ps(mask_lo(t), x + c);
                x1 = _mm512_maskz_loadu_ps(mask_hi(t), x + c + 16);
            }
#pragma GCC unroll 4
            for (int i = 0; i < nr; i++) {
                load32(st, w + i * rb, c, t, &a, &b);
                // Plain stores accumulate straight into acc; quantized ones into part, then scale.
                if (quant) {
                    part[i][0] = _mm512_fmadd_ps(a, x0, part[i][0]);
                    part[i][1] = _mm512_fmadd_ps(b, x1, part[i][1]);
                } else {
                    acc[i][0] = _mm512_fmadd_ps(a, x0, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(b, x1, acc[i][1]);
                }
            }
        }
        if (quant) {
            int64_t g = c0 / SM_QGROUP;
#pragma GCC unroll 4
            for (int i = 0; i < nr; i++) {
                __m512 s = _mm512_set1_ps(_cvtsh_ss(sc[i * ng + g]));
                acc[i][0] = _mm512_fmadd_ps(s, part[i][0], acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(s, part[i][1], acc[i][1]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) y[i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
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

// One multiply per code by its group's scale (no FMA): bit-exact with the scalar reference.
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
        for (int64_t c = 0; c < cols; c += STEP) {
            int64_t t = cols - c;
            __m512 a, b;
            load32(st, row, c, t, &a, &b);
            if (quant) { // a step of 32 never straddles a group of 64
                __m512 s = _mm512_set1_ps(_cvtsh_ss(scales[r * ng + c / SM_QGROUP]));
                a = _mm512_mul_ps(a, s);
                b = _mm512_mul_ps(b, s);
            }
            if (t >= STEP) {
                _mm512_storeu_ps(o + c, a);
                _mm512_storeu_ps(o + c + 16, b);
            } else {
                _mm512_mask_storeu_ps(o + c, mask_lo(t), a);
                _mm512_mask_storeu_ps(o + c + 16, mask_hi(t), b);
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

void sm_kernels_init_avx512(sm_kernels *k) {
    k->gemv[SM_STORE_F16] = gemv_f16;
    k->gemv[SM_STORE_BF16] = gemv_bf16;
    k->gemv[SM_STORE_Q8] = gemv_q8;
    k->gemv[SM_STORE_Q4] = gemv_q4;
    k->decode[SM_STORE_F16] = decode_f16;
    k->decode[SM_STORE_BF16] = decode_bf16;
    k->decode[SM_STORE_Q8] = decode_q8;
    k->decode[SM_STORE_Q4] = decode_q4;
}
