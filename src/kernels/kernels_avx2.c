// AVX2 + FMA + F16C kernels: gemv and decode of f16, bf16, q8 and q4 factors (f32 gemv stays
// cblas_sgemv). Compiled with -mavx2 -mfma -mf16c; only reached when cpuid reports them.
//
// gemv is written for N = 1 decode, which is memory-bound: every code byte is read once, a
// block of rows shares each load of x, and software prefetch runs ahead along every row (with
// several rows streamed at once the hardware prefetchers fall behind). f16/bf16 rows keep two
// 8-wide accumulators each; quantized rows sum a 64-column group in `part` and add s * part to
// `acc`, as the scalar reference does, with the group scales converted to f32 a chunk at a time
// so each is a broadcast from memory. q4 nibbles become floats without int->float conversions:
// (n ^ 8) placed in the mantissa of 2^23 gives 2^23 + 8 + q exactly, and one subtraction
// leaves q; the low nibbles are the even columns and the high ones the odd, so x is split into
// even and odd columns once per row block. Column tails (< 16 left) go through small
// zero-padded copies, so no load reads past a row.
#include "kernels.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>

#define NR 4         // f16/bf16 rows per block (8 accumulators of 16 registers)
#define NRQ 4        // q8/q4 rows per block (acc + part per row)
#define STEP 16      // columns per inner step
#define PF_PLAIN 512 // prefetch distances in bytes along each row
#define PF_QUANT 256
#define SCALE_CHUNK 8     // groups whose scales are converted to f32 at a time
#define PAR_MIN (1 << 18) // rows * cols below which threads cost more than they give
#define CHUNK_ALIGN 16    // rows per thread chunk are a multiple of every row block

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 bf16x8(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline __m256 i8x8(__m128i q) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
}

// 16 q4 codes (8 bytes, even column in the low nibble) -> 16 int8 in column order (decode).
static inline __m128i q4_unpack16(__m128i v) {
    const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    __m128i q = _mm_unpacklo_epi8(lo, hi);
    return _mm_sub_epi8(_mm_xor_si128(q, eight), eight); // 4-bit two's complement -> int8
}

// Bytes holding t columns of a row (from an even column for q4).
static inline size_t span_bytes(sm_store st, int64_t t) {
    switch (st) {
    case SM_STORE_F16:
    case SM_STORE_BF16:
        return (size_t)t * 2;
    case SM_STORE_Q8:
        return (size_t)t;
    default:
        return (size_t)(t + 1) / 2;
    }
}

// The codes of columns [c, c + min(t, 16)) of a row: the row itself when 16 columns are there,
// else a zero-padded copy in buf. For q4 with t odd the high nibble of the last byte is another
// column's code or padding; it is finite and meets a zero of x, so it adds nothing.
static inline const unsigned char *codes16(sm_store st, const unsigned char *row, int64_t c,
                                           int64_t t, unsigned char *buf) {
    const unsigned char *p = row + span_bytes(st, c);
    if (t >= STEP) return p;
    memset(buf, 0, 32);
    memcpy(buf, p, span_bytes(st, t));
    return buf;
}

// x[c .. c + min(t, 16)) as two vectors, zeros beyond t.
static inline void load_x(const float *x, int64_t t, __m256 *x0, __m256 *x1) {
    if (t >= STEP) {
        *x0 = _mm256_loadu_ps(x);
        *x1 = _mm256_loadu_ps(x + 8);
        return;
    }
    float buf[STEP] = {0};
    memcpy(buf, x, (size_t)t * sizeof(float));
    *x0 = _mm256_loadu_ps(buf);
    *x1 = _mm256_loadu_ps(buf + 8);
}

// x[c .. c + min(t, 16)) split into even columns (c, c+2, .., c+14) and odd ones.
static inline void load_x_split(const float *x, int64_t t, __m256 *xe, __m256 *xo) {
    __m256 x0, x1;
    load_x(x, t, &x0, &x1);
    // shuffle_ps works within 128-bit lanes: [0 2 8 10 | 4 6 12 14]; the 64-bit permute orders it
    *xe = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x0, x1, _MM_SHUFFLE(2, 0, 2, 0))),
                              _MM_SHUFFLE(3, 1, 2, 0)));
    *xo = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x0, x1, _MM_SHUFFLE(3, 1, 3, 1))),
                              _MM_SHUFFLE(3, 1, 2, 0)));
}

// 16 columns of codes at p as two 8-float vectors in column order (unscaled for q8/q4).
static inline __attribute__((always_inline)) void load16(sm_store st, const unsigned char *p,
                                                         __m256 *a, __m256 *b) {
    switch (st) {
    case SM_STORE_F16:
        *a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        *b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)));
        break;
    case SM_STORE_BF16:
        *a = bf16x8(_mm_loadu_si128((const __m128i *)p));
        *b = bf16x8(_mm_loadu_si128((const __m128i *)(p + 16)));
        break;
    case SM_STORE_Q8:
        *a = i8x8(_mm_loadl_epi64((const __m128i *)p));
        *b = i8x8(_mm_loadl_epi64((const __m128i *)(p + 8)));
        break;
    default: { // SM_STORE_Q4
        __m128i q = q4_unpack16(_mm_loadl_epi64((const __m128i *)p));
        *a = i8x8(q);
        *b = i8x8(_mm_srli_si128(q, 8));
        break;
    }
    }
}

// 16 q4 columns at p (8 bytes) as their even and odd columns, matching load_x_split.
static inline void q4_split(const unsigned char *p, __m256 *e, __m256 *o) {
    const __m256i low = _mm256_set1_epi32(15), magic_bits = _mm256_set1_epi32(0x4b000008);
    const __m256 magic = _mm256_set1_ps(8388616.0f);                       // 2^23 + 8
    __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); // a byte per lane
    // (n & 15) ^ 0x4b000008 = the float 2^23 + (n ^ 8); minus 2^23 + 8 gives q = (n ^ 8) - 8.
    *e = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_xor_si256(_mm256_and_si256(v, low), magic_bits)),
                       magic);
    *o = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_xor_si256(_mm256_srli_epi32(v, 4), magic_bits)),
                       magic);
}

// Unscaled sums over columns [c, cols) of code * x for nr rows, through zero-padded copies (c a
// multiple of 16). The partial step or group at the end of a row is rare, and kept out of line
// so that the hot loops make no calls (a memcpy call would push their accumulators to memory).
static __attribute__((noinline)) void tail_dots(sm_store st, int nr, int64_t c, int64_t cols,
                                                const unsigned char *w, size_t rb, const float *x,
                                                float *sums) {
    unsigned char buf[32];
    for (int i = 0; i < nr; i++) {
        __m256 acc = _mm256_setzero_ps(), x0, x1, a, b;
        for (int64_t cc = c; cc < cols; cc += STEP) {
            const unsigned char *p = codes16(st, w + i * rb, cc, cols - cc, buf);
            if (st == SM_STORE_Q4) {
                load_x_split(x + cc, cols - cc, &x0, &x1);
                q4_split(p, &a, &b);
            } else {
                load_x(x + cc, cols - cc, &x0, &x1);
                load16(st, p, &a, &b);
            }
            acc = _mm256_fmadd_ps(a, x0, acc);
            acc = _mm256_fmadd_ps(b, x1, acc);
        }
        sums[i] = hsum8(acc);
    }
}

// y[0..nr) for nr consecutive f16 or bf16 rows from codes w (row stride rb); nr is a compile-time
// constant at each call site, so the row loops unroll into registers.
static inline __attribute__((always_inline)) void
gemv_block_plain(sm_store st, int nr, int64_t cols, const unsigned char *w, size_t rb,
                 const float *x, float *y) {
    __m256 acc[NR][2];
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + STEP <= cols; c += STEP) {
        __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8), a, b;
#pragma GCC unroll 4
        for (int i = 0; i < nr; i++) {
            const unsigned char *row = w + i * rb;
            _mm_prefetch((const char *)row + 2 * c + PF_PLAIN, _MM_HINT_T0);
            load16(st, row + 2 * c, &a, &b);
            acc[i][0] = _mm256_fmadd_ps(a, x0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(b, x1, acc[i][1]);
        }
    }
    float tail[NR] = {0};
    if (c < cols) tail_dots(st, nr, c, cols, w, rb, x, tail);
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) y[i] = hsum8(_mm256_add_ps(acc[i][0], acc[i][1])) + tail[i];
}

// y[0..nr) for nr consecutive q8 or q4 rows. Full groups run in the hot loop; a partial last
// group goes through tail_dots.
static inline __attribute__((always_inline)) void
gemv_block_quant(sm_store st, int nr, int64_t cols, const unsigned char *w, size_t rb,
                 const uint16_t *sc, int64_t ng, const float *x, float *y) {
    __m256 acc[NRQ];
    float s32[NRQ][SCALE_CHUNK] __attribute__((aligned(32)));
    int64_t nfull = cols / SM_QGROUP;
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < nfull; g0 += SCALE_CHUNK) {
        int64_t gn = nfull - g0 < SCALE_CHUNK ? nfull - g0 : SCALE_CHUNK;
#pragma GCC unroll 4
        for (int i = 0; i < nr; i++) {
            if (gn == SCALE_CHUNK)
                _mm256_store_ps(
                    s32[i], _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + i * ng + g0))));
            else
                for (int64_t k = 0; k < gn; k++) s32[i][k] = _cvtsh_ss(sc[i * ng + g0 + k]);
        }
        for (int64_t g = g0; g < g0 + gn; g++) {
            int64_t c0 = g * SM_QGROUP;
            __m256 part[NRQ];
#pragma GCC unroll 4
            for (int i = 0; i < nr; i++) {
                part[i] = _mm256_setzero_ps();
                _mm_prefetch((const char *)(w + i * rb) + span_bytes(st, c0) + PF_QUANT,
                             _MM_HINT_T0);
            }
#pragma GCC unroll 4
            for (int64_t c = c0; c < c0 + SM_QGROUP; c += STEP) {
                __m256 x0, x1, a, b;
                if (st == SM_STORE_Q4) {
                    load_x_split(x + c, STEP, &x0, &x1);
                } else {
                    x0 = _mm256_loadu_ps(x + c);
                    x1 = _mm256_loadu_ps(x + c + 8);
                }
#pragma GCC unroll 4
                for (int i = 0; i < nr; i++) {
                    const unsigned char *p = w + i * rb + span_bytes(st, c);
                    if (st == SM_STORE_Q4)
                        q4_split(p, &a, &b);
                    else
                        load16(st, p, &a, &b);
                    part[i] = _mm256_fmadd_ps(a, x0, part[i]);
                    part[i] = _mm256_fmadd_ps(b, x1, part[i]);
                }
            }
#pragma GCC unroll 4
            for (int i = 0; i < nr; i++)
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(s32[i][g - g0]), part[i], acc[i]);
        }
    }
    float tail[NRQ] = {0};
    if (nfull * SM_QGROUP < cols) {
        tail_dots(st, nr, nfull * SM_QGROUP, cols, w, rb, x, tail);
        for (int i = 0; i < nr; i++) tail[i] *= _cvtsh_ss(sc[i * ng + nfull]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) y[i] = hsum8(acc[i]) + tail[i];
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
    const int nr = quant ? NRQ : NR;
    int64_t r = r0;
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

// Decode multiplies each code by its group's scale once (no FMA), so it is bit-exact with the
// scalar reference; F16C conversions are exact too.
static inline __attribute__((always_inline)) void decode_rows(sm_store st, const kargs *a,
                                                              int64_t r0, int64_t r1) {
    int64_t cols = a->cols, ng = a->ng;
    bool quant = st == SM_STORE_Q8 || st == SM_STORE_Q4;
    unsigned char buf[32];
    for (int64_t r = r0; r < r1; r++) {
        const unsigned char *row = a->w + (size_t)r * a->rb;
        float *o = a->out + r * cols;
        for (int64_t c = 0; c < cols; c += STEP) {
            __m256 u, v;
            load16(st, codes16(st, row, c, cols - c, buf), &u, &v);
            if (quant) { // a step of 16 never straddles a group of 64
                __m256 s = _mm256_set1_ps(_cvtsh_ss(a->sc[r * ng + c / SM_QGROUP]));
                u = _mm256_mul_ps(u, s);
                v = _mm256_mul_ps(v, s);
            }
            if (cols - c >= STEP) {
                _mm256_storeu_ps(o + c, u);
                _mm256_storeu_ps(o + c + 8, v);
            } else {
                float t[STEP];
                _mm256_storeu_ps(t, u);
                _mm256_storeu_ps(t + 8, v);
                memcpy(o + c, t, (size_t)(cols - c) * sizeof(float));
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
