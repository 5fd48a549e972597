// AVX-512 (F, BW, VL, DQ) kernels: gemv and decode of f16, bf16, q8 and q4 factors; the same
// plan as the AVX2 ones (kernels_avx2.c) with 16-wide vectors, 32 columns per step, and masked
// loads and stores for column tails instead of padded copies.
//
// q4 is different: converting nibbles to floats with shifts, unpacks and int->float conversions
// made it compute-bound (~5 GB/s). Instead each byte is widened to a 32-bit lane and vpermps
// looks its low nibble up in a 16-entry table of the group's scaled values s * {0..7, -8..-1}
// (vpermps reads only the low 4 bits of an index): two lookups per 32 codes give the even and
// the odd columns, which meet x split the same way (even / odd columns, once per row block).
#include "kernels.h"

#include <immintrin.h>
#include <omp.h>

#define NR 8    // f16/bf16 rows per block: 16 accumulators of the 32 vector registers
#define NRQ 16  // q8/q4 rows per block: one accumulator each; more rows, fewer x loads
#define STEP 32 // columns per inner step
// Software prefetch distances in bytes along each row. With many rows streamed at once the
// hardware prefetchers fall behind; these were the best of 128..4096 on 4096x4096 (q4 went
// from 7 to 9.5 GB/s, f16 from 14.5 to 16).
#define PF_PLAIN 512
#define PF_QUANT 256
#define PAR_MIN (1 << 18) // rows * cols below which threads cost more than they give
#define CHUNK_ALIGN 16    // rows per thread chunk are a multiple of every row block

static inline __m512 bf16x16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __m512 i8x16(__m128i q) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
}

// Masks of the first t columns of a step, split over its two 16-wide halves.
static inline __mmask16 mask_lo(int64_t t) {
    return t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << t) - 1);
}
static inline __mmask16 mask_hi(int64_t t) {
    return t >= 32 ? (__mmask16)0xffff : t > 16 ? (__mmask16)((1u << (t - 16)) - 1) : 0;
}

// x[c .. c + min(t, 32)) as two vectors, zeros beyond t.
static inline void load_x(const float *x, int64_t t, __m512 *x0, __m512 *x1) {
    if (t >= STEP) {
        *x0 = _mm512_loadu_ps(x);
        *x1 = _mm512_loadu_ps(x + 16);
    } else {
        *x0 = _mm512_maskz_loadu_ps(mask_lo(t), x);
        *x1 = _mm512_maskz_loadu_ps(mask_hi(t), x + 16);
    }
}

// Columns [c, c + min(t, 32)) of an f16, bf16 or q8 row as two 16-float vectors (unscaled codes
// for q8), zeros beyond t. c is a multiple of 32; masked-off bytes are never touched.
static inline __attribute__((always_inline)) void load32(sm_store st, const void *p, int64_t c,
                                                         int64_t t, __m512 *a, __m512 *b) {
    bool full = t >= STEP;
    if (st == SM_STORE_Q8) {
        const int8_t *q = (const int8_t *)p + c;
        __m256i v = full ? _mm256_loadu_si256((const __m256i *)q)
                         : _mm256_maskz_loadu_epi8((__mmask32)((1ull << t) - 1), q);
        *a = i8x16(_mm256_castsi256_si128(v));
        *b = i8x16(_mm256_extracti128_si256(v, 1));
        return;
    }
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
}

// y[0..nr) for nr consecutive f16 or bf16 rows from codes w (row stride rb); nr is a compile-time
// constant at each call site, so the row loops unroll into registers. Two accumulators per row.
static inline __attribute__((always_inline)) void
gemv_block_plain(sm_store st, int nr, int64_t cols, const unsigned char *w, size_t rb,
                 const float *x, float *y) {
    __m512 acc[NR][2];
#pragma GCC unroll 16
    for (int i = 0; i < nr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; c += STEP) {
        __m512 x0, x1, a, b;
        load_x(x + c, cols - c, &x0, &x1);
#pragma GCC unroll 16
        for (int i = 0; i < nr; i++) {
            _mm_prefetch((const char *)(w + i * rb) + 2 * c + PF_PLAIN, _MM_HINT_T0);
            load32(st, w + i * rb, c, cols - c, &a, &b);
            acc[i][0] = _mm512_fmadd_ps(a, x0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(b, x1, acc[i][1]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < nr; i++) y[i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
}

// --- q8 and q4 ----------------------------------------------------------------------------------

// 16 q8 codes from columns [c, c + min(t, 16)) as floats, zeros beyond t.
static inline __m512 q8x16(const int8_t *row, int64_t c, int64_t t) {
    __m128i v = t >= 16 ? _mm_loadu_si128((const __m128i *)(row + c))
                        : _mm_maskz_loadu_epi8(t > 0 ? (__mmask16)((1u << t) - 1) : 0, row + c);
    return i8x16(v);
}

// The 16 q4 codes by nibble value: 0..7, then -8..-1 (4-bit two's complement).
static inline __m512 q4_table(void) {
    return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
}

// The bytes holding columns [c, c + min(t, 32)) of a q4 row, one per 32-bit lane (c even).
// Past t the lanes are zero or hold a pad nibble; they meet zeros of x.
static inline __m512i q4_bytes(const uint8_t *row, int64_t c, int64_t t) {
    const uint8_t *p = row + c / 2;
    __m128i v = t >= STEP ? _mm_loadu_si128((const __m128i *)p)
                          : _mm_maskz_loadu_epi8((__mmask16)((1u << ((t + 1) / 2)) - 1), p);
    return _mm512_cvtepu8_epi32(v);
}

// x[c .. c + min(t, 32)) split into even and odd columns, zeros beyond t.
static inline void load_x_split(const float *x, int64_t t, __m512 *xe, __m512 *xo) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    __m512 x0, x1;
    load_x(x, t, &x0, &x1);
    *xe = _mm512_permutex2var_ps(x0, even, x1);
    *xo = _mm512_permutex2var_ps(x0, odd, x1);
}

#define SCALE_CHUNK 16 // groups whose scales are converted to f32 at a time (one vcvtph2ps)

// y[0..nr) for nr consecutive q8 or q4 rows: each group's products sum in `part`, then
// acc += s * part, as in the scalar reference. The F16 scales of SCALE_CHUNK groups are first
// converted into a small f32 buffer, so each group's scale is a broadcast from memory rather
// than a shuffle (port 5 is what limits these loops).
static inline __attribute__((always_inline)) void
gemv_block_quant(sm_store st, int nr, int64_t cols, const unsigned char *w, size_t rb,
                 const uint16_t *sc, int64_t ng, const float *x, float *y) {
    const __m512 table = q4_table();
    __m512 acc[NRQ];
    float s32[NRQ][SCALE_CHUNK] __attribute__((aligned(64)));
#pragma GCC unroll 16
    for (int i = 0; i < nr; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t g0 = 0; g0 < ng; g0 += SCALE_CHUNK) {
        int64_t gn = ng - g0 < SCALE_CHUNK ? ng - g0 : SCALE_CHUNK;
        __mmask16 gm = gn == 16 ? (__mmask16)0xffff : (__mmask16)((1u << gn) - 1);
#pragma GCC unroll 16
        for (int i = 0; i < nr; i++)
            _mm512_store_ps(s32[i],
                            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc + i * ng + g0)));
        for (int64_t g = g0; g < g0 + gn; g++) {
            int64_t c0 = g * SM_QGROUP, t = cols - c0; // columns left; a group takes <= 64
            __m512 x0, x1, x2 = _mm512_setzero_ps(), x3 = _mm512_setzero_ps();
            if (st == SM_STORE_Q4) { // even / odd columns of each 32, as the lookups give them
                load_x_split(x + c0, t, &x0, &x1);
                if (t > STEP) load_x_split(x + c0 + STEP, t - STEP, &x2, &x3);
            } else {
                load_x(x + c0, t, &x0, &x1);
                if (t > STEP) load_x(x + c0 + STEP, t - STEP, &x2, &x3);
            }
#pragma GCC unroll 16
            for (int i = 0; i < nr; i++) {
                const unsigned char *row = w + i * rb;
                __m512 part;
                _mm_prefetch((const char *)row + (st == SM_STORE_Q4 ? c0 / 2 : c0) + PF_QUANT,
                             _MM_HINT_T0);
                if (st == SM_STORE_Q4) {
                    __m512i v = q4_bytes(row, c0, t);
                    part = _mm512_mul_ps(_mm512_permutexvar_ps(v, table), x0);
                    v = _mm512_srli_epi32(v, 4);
                    part = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, table), x1, part);
                    if (t > STEP) {
                        v = q4_bytes(row, c0 + STEP, t - STEP);
                        part = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, table), x2, part);
                        v = _mm512_srli_epi32(v, 4);
                        part = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, table), x3, part);
                    }
                } else {
                    const int8_t *q = (const int8_t *)row;
                    part = _mm512_mul_ps(q8x16(q, c0, t), x0);
                    part = _mm512_fmadd_ps(q8x16(q, c0 + 16, t - 16), x1, part);
                    if (t > STEP) {
                        part = _mm512_fmadd_ps(q8x16(q, c0 + 32, t - 32), x2, part);
                        part = _mm512_fmadd_ps(q8x16(q, c0 + 48, t - 48), x3, part);
                    }
                }
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(s32[i][g - g0]), part, acc[i]);
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < nr; i++) y[i] = _mm512_reduce_add_ps(acc[i]);
}

// --- entry points ---------------------------------------------------------------------------
// Each store gets its own functions so that the store is a constant inside the loops; the
// OpenMP region lives in one small driver (an `omp parallel` inside an inline template would be
// outlined once, before inlining, and lose that constant).

typedef struct kargs {
    int64_t cols, ng;
    size_t rb;
    const unsigned char *w; // (rows, rb) codes
    const uint16_t *sc;     // (rows, ng) scales or NULL
    const float *x;         // (cols)
    float *out;             // gemv: y (rows); decode: (rows, cols)
} kargs;

typedef void (*rows_fn)(const kargs *a, int64_t r0, int64_t r1);

// Runs fn over rows [0, rows), in chunks of whole row blocks handed out dynamically when the
// factor is large enough to pay for the fork. Dynamic, because the cores may be shared: with a
// static split, a thread that loses its core for a while holds up the whole call (measured: 2
// threads ran 2-3x slower than 1 while another process was busy).
static void run_rows(rows_fn fn, const kargs *a, int64_t rows) {
    if (rows * a->cols <= PAR_MIN || omp_get_max_threads() == 1) {
        fn(a, 0, rows);
        return;
    }
    // ~64 KiB of codes per chunk (at least one row block), so a chunk is tens of microseconds
    int64_t per = (int64_t)(65536 / (a->rb + 1)) / CHUNK_ALIGN * CHUNK_ALIGN;
    if (per < CHUNK_ALIGN) per = CHUNK_ALIGN;
    int64_t nchunk = (rows + per - 1) / per;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t k = 0; k < nchunk; k++) {
        int64_t r0 = k * per, r1 = r0 + per < rows ? r0 + per : rows;
        fn(a, r0, r1);
    }
}

static inline __attribute__((always_inline)) void gemv_rows(sm_store st, const kargs *a, int64_t r0,
                                                            int64_t r1) {
    bool quant = st == SM_STORE_Q8 || st == SM_STORE_Q4;
    int64_t r = r0;
    const int nr = quant ? NRQ : NR;
    for (; r + nr <= r1; r += nr) {
        const unsigned char *w = a->w + (size_t)r * a->rb;
        if (quant)
            gemv_block_quant(st, NRQ, a->cols, w, a->rb, a->sc + r * a->ng, a->ng, a->x,
                             a->out + r);
        else
            gemv_block_plain(st, NR, a->cols, w, a->rb, a->x, a->out + r);
    }
    for (; r < r1; r++) {
        const unsigned char *w = a->w + (size_t)r * a->rb;
        if (quant)
            gemv_block_quant(st, 1, a->cols, w, a->rb, a->sc + r * a->ng, a->ng, a->x, a->out + r);
        else
            gemv_block_plain(st, 1, a->cols, w, a->rb, a->x, a->out + r);
    }
}

// Decode multiplies each code by its group's scale once (the q4 table holds exactly those
// products), so it is bit-exact with the scalar reference.
static inline __attribute__((always_inline)) void decode_rows(sm_store st, const kargs *a,
                                                              int64_t r0, int64_t r1) {
    int64_t cols = a->cols, ng = a->ng;
    // Interleave even and odd columns back into order (q4).
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    for (int64_t r = r0; r < r1; r++) {
        const unsigned char *row = a->w + (size_t)r * a->rb;
        float *o = a->out + r * cols;
        for (int64_t c = 0; c < cols; c += STEP) {
            int64_t t = cols - c;
            __m512 u, v;
            if (st == SM_STORE_Q4) {
                __m512 ts = _mm512_mul_ps(q4_table(),
                                          _mm512_set1_ps(_cvtsh_ss(a->sc[r * ng + c / SM_QGROUP])));
                __m512i b = q4_bytes(row, c, t);
                __m512 e = _mm512_permutexvar_ps(b, ts);
                __m512 d = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), ts);
                u = _mm512_permutex2var_ps(e, lo, d);
                v = _mm512_permutex2var_ps(e, hi, d);
            } else {
                load32(st, row, c, t, &u, &v);
                if (st == SM_STORE_Q8) { // a step of 32 never straddles a group of 64
                    __m512 s = _mm512_set1_ps(_cvtsh_ss(a->sc[r * ng + c / SM_QGROUP]));
                    u = _mm512_mul_ps(u, s);
                    v = _mm512_mul_ps(v, s);
                }
            }
            if (t >= STEP) {
                _mm512_storeu_ps(o + c, u);
                _mm512_storeu_ps(o + c + 16, v);
            } else {
                _mm512_mask_storeu_ps(o + c, mask_lo(t), u);
                _mm512_mask_storeu_ps(o + c + 16, mask_hi(t), v);
            }
        }
    }
}

static kargs make_args(sm_store st, int64_t cols, const void *data, const uint16_t *scales,
                       const float *x, float *out) {
    return (kargs){.cols = cols,
                   .ng = (cols + SM_QGROUP - 1) / SM_QGROUP,
                   .rb = sm_store_row_bytes(st, cols),
                   .w = data,
                   .sc = scales,
                   .x = x,
                   .out = out};
}

#define KERNELS(name, ST)                                                                          \
    static void gemv_rows_##name(const kargs *a, int64_t r0, int64_t r1) {                         \
        gemv_rows(ST, a, r0, r1);                                                                  \
    }                                                                                              \
    static void decode_rows_##name(const kargs *a, int64_t r0, int64_t r1) {                       \
        decode_rows(ST, a, r0, r1);                                                                \
    }                                                                                              \
    static void gemv_##name(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,  \
                            const float *x, float *y) {                                            \
        kargs a = make_args(ST, cols, data, scales, x, y);                                         \
        run_rows(gemv_rows_##name, &a, rows);                                                      \
    }                                                                                              \
    static void decode_##name(int64_t rows, int64_t cols, const void *data,                        \
                              const uint16_t *scales, float *out) {                                \
        kargs a = make_args(ST, cols, data, scales, NULL, out);                                    \
        run_rows(decode_rows_##name, &a, rows);                                                    \
    }

KERNELS(f16, SM_STORE_F16)
KERNELS(bf16, SM_STORE_BF16)
KERNELS(q8, SM_STORE_Q8)
KERNELS(q4, SM_STORE_Q4)

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
