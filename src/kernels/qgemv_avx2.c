// AVX2 + FMA + F16C kernels of qkernels.h (the fallback below AVX-512).
//
// qgemv: per 16 columns, the codes are moved to the bottom of 32-bit lanes (4 bits: a byte per
// lane, then mask / shift for the even / odd columns; 2 bits: a broadcast 32-bit word and
// variable shifts; 3 bits: a byte shuffle of the two bytes holding each code and variable
// shifts; 8 bits: a byte per lane), converted, turned into weights by one FMA q s - s z, and
// multiplied into the accumulators. x is permuted once per call into the 4-bit lane order.
// Groups must be a multiple of 16 columns; other groups take the scalar rows. Decoding and the
// transposed sign product use the scalar kernels.
//
// signmm: per 8 columns and row, the mask of the sign byte's bits selects x (and, compare,
// and, add); y = 2 * sum over the +1 columns - sum of x.
#include "qkernels.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>

#define PAR_MIN (1 << 18)
#define GB 256

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Byte-shuffle controls and shifts for 3-bit codes 0..7 and 8..15 of a 16-byte window: lane j
// (in 128-bit half j / 4) gets the two bytes holding its code, then the shift to the bottom.
static uint8_t g_ctl3[2][32] __attribute__((aligned(32)));
static uint32_t g_sh3[2][8] __attribute__((aligned(32)));

static void init_controls(void) {
    for (int half = 0; half < 2; half++)
        for (int j = 0; j < 8; j++) {
            int bit = (8 * half + j) * 3, lo = bit >> 3;
            uint8_t *c = &g_ctl3[half][4 * j];
            c[0] = (uint8_t)lo;
            c[1] = (uint8_t)(lo + 1);
            c[2] = c[3] = 0x80;
            g_sh3[half][j] = (uint32_t)(bit & 7);
        }
}

// Codes of 16 columns at p as two vectors of integer codes: 4 bits in even / odd column order,
// the other widths in column order.
static inline __attribute__((always_inline)) void codes16(int B, const uint8_t *p, __m256i *a,
                                                          __m256i *b) {
    if (B == 4) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
        *a = _mm256_and_si256(v, _mm256_set1_epi32(15));
        *b = _mm256_srli_epi32(v, 4);
    } else if (B == 2) {
        uint32_t u;
        memcpy(&u, p, 4);
        __m256i q = _mm256_set1_epi32((int)u), m = _mm256_set1_epi32(3);
        *a = _mm256_and_si256(_mm256_srlv_epi32(q, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                              m);
        *b = _mm256_and_si256(
            _mm256_srlv_epi32(q, _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30)), m);
    } else if (B == 3) {
        __m256i w = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
        __m256i m = _mm256_set1_epi32(7);
        *a = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_shuffle_epi8(w, _mm256_load_si256((const void *)g_ctl3[0])),
                              _mm256_load_si256((const void *)g_sh3[0])),
            m);
        *b = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_shuffle_epi8(w, _mm256_load_si256((const void *)g_ctl3[1])),
                              _mm256_load_si256((const void *)g_sh3[1])),
            m);
    } else {
        *a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
        *b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
    }
}

static inline __attribute__((always_inline)) void qgemv_rows(int B, const sm_qview *q,
                                                             const float *xp, float *y,
                                                             int64_t r0, int64_t r1) {
    const int64_t G = q->group, ng = q->cols / G, nst = G / 16, sbytes = 2 * B;
    float sb[GB], szb[GB]; // a chunk of groups' scales and scale * zero (zero points read by
                           // the scalar definition: one per group, off the hot loop)
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = q->codes + (size_t)r * q->rb;
        const uint16_t *sc = q->scales + r * ng;
        const uint8_t *zr = q->zeros ? q->zeros + (size_t)r * q->zb : NULL;
        const float *xc = xp;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int64_t gb = 0; gb < ng; gb += GB) {
            int64_t gn = ng - gb < GB ? ng - gb : GB;
            for (int64_t g = 0; g < gn; g++) {
                float s = _cvtsh_ss(sc[gb + g]);
                int z = zr ? sm_qcode_at(zr, gb + g, B) : 1 << (B - 1);
                sb[g] = s;
                szb[g] = s * (float)z;
            }
            for (int64_t g = 0; g < gn; g++) {
                __m256 s = _mm256_set1_ps(sb[g]), sz = _mm256_set1_ps(szb[g]);
                for (int64_t k = 0; k < nst; k++) {
                    __m256i a, b;
                    codes16(B, p, &a, &b);
                    __m256 wa = _mm256_fmsub_ps(_mm256_cvtepi32_ps(a), s, sz);
                    __m256 wb = _mm256_fmsub_ps(_mm256_cvtepi32_ps(b), s, sz);
                    if (k & 1) {
                        acc2 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(xc), acc2);
                        acc3 = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xc + 8), acc3);
                    } else {
                        acc0 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(xc), acc0);
                        acc1 = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xc + 8), acc1);
                    }
                    p += sbytes;
                    xc += 16;
                }
            }
        }
        y[r] = hsum8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    }
}

typedef void (*rows_fn)(const sm_qview *q, const float *xp, float *y, int64_t r0, int64_t r1);

static void run_rows(rows_fn fn, const sm_qview *q, const float *xp, float *y) {
    if (q->rows * q->cols <= PAR_MIN || omp_get_max_threads() == 1) {
        fn(q, xp, y, 0, q->rows);
        return;
    }
#pragma omp parallel
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t r0 = q->rows * t / nt, r1 = q->rows * (t + 1) / nt;
        if (r0 < r1) fn(q, xp, y, r0, r1);
    }
}

#define ROWS(B)                                                                                  \
    static void qgemv_rows_##B(const sm_qview *q, const float *xp, float *y, int64_t r0,        \
                               int64_t r1) {                                                     \
        qgemv_rows(B, q, xp, y, r0, r1);                                                         \
    }
ROWS(2)
ROWS(3)
ROWS(4)
ROWS(8)

static void qgemv_avx2(const sm_qview *q, const float *x, float *y, float *work) {
    if (q->group % 16 != 0) {
        sm_qgemv_ref_rows(q, x, y, 0, q->rows);
        return;
    }
    const float *xp = x;
    if (q->bits == 4) { // even columns, then odd ones, of each 16
        for (int64_t c = 0; c < q->cols; c += 16) {
            __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
            // shuffle_ps works within 128-bit lanes: [0 2 8 10 | 4 6 12 14]; the 64-bit permute
            // puts the quarters in order.
            __m256 e = _mm256_shuffle_ps(x0, x1, _MM_SHUFFLE(2, 0, 2, 0));
            __m256 o = _mm256_shuffle_ps(x0, x1, _MM_SHUFFLE(3, 1, 3, 1));
            e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
            o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
            _mm256_storeu_ps(work + c, e);
            _mm256_storeu_ps(work + c + 8, o);
        }
        xp = work;
    }
    switch (q->bits) {
    case 2: run_rows(qgemv_rows_2, q, xp, y); break;
    case 3: run_rows(qgemv_rows_3, q, xp, y); break;
    case 4: run_rows(qgemv_rows_4, q, xp, y); break;
    default: run_rows(qgemv_rows_8, q, xp, y); break;
    }
}

// --- sign matrices ---------------------------------------------------------------------------

// Y[v, r] for RB consecutive rows and one vector.
static inline __attribute__((always_inline)) void sign_rows(int RB, int64_t cols,
                                                            const uint8_t *bits, size_t rb,
                                                            const float *x, float xsum, float *y) {
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256 acc[4];
    for (int i = 0; i < RB; i++) acc[i] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 xv = _mm256_loadu_ps(x + c);
        for (int i = 0; i < RB; i++) {
            __m256i v = _mm256_set1_epi32(bits[i * rb + (c >> 3)]);
            __m256i m = _mm256_cmpeq_epi32(_mm256_and_si256(v, sel), sel);
            acc[i] = _mm256_add_ps(acc[i], _mm256_and_ps(_mm256_castsi256_ps(m), xv));
        }
    }
    float tail[4] = {0, 0, 0, 0};
    for (; c < cols; c++)
        for (int i = 0; i < RB; i++)
            if ((bits[i * rb + (c >> 3)] >> (c & 7)) & 1) tail[i] += x[c];
    for (int i = 0; i < RB; i++) y[i] = 2.0f * (hsum8(acc[i]) + tail[i]) - xsum;
}

typedef struct sargs {
    int64_t rows, cols, nv;
    const uint8_t *bits;
    size_t rb;
    const float *X;
    float *Y;
} sargs;

static void sign_range(const sargs *a, int64_t r0, int64_t r1) {
    for (int64_t v = 0; v < a->nv; v++) {
        const float *x = a->X + v * a->cols;
        float *y = a->Y + v * a->rows;
        __m256 s = _mm256_setzero_ps();
        int64_t c = 0;
        for (; c + 8 <= a->cols; c += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(x + c));
        float xsum = hsum8(s);
        for (; c < a->cols; c++) xsum += x[c];
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4)
            sign_rows(4, a->cols, a->bits + (size_t)r * a->rb, a->rb, x, xsum, y + r);
        for (; r < r1; r++)
            sign_rows(1, a->cols, a->bits + (size_t)r * a->rb, a->rb, x, xsum, y + r);
    }
}

static void signmm_avx2(int64_t rows, int64_t cols, const uint8_t *bits, size_t rb, int64_t nv,
                        const float *X, float *Y) {
    sargs a = {rows, cols, nv, bits, rb, X, Y};
    if (rows * cols * nv <= PAR_MIN || omp_get_max_threads() == 1) {
        sign_range(&a, 0, rows);
        return;
    }
#pragma omp parallel
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
        if (r0 < r1) sign_range(&a, r0, r1);
    }
}

// --- fast Walsh-Hadamard transform -----------------------------------------------------------

static void fwht8_stages(float *x, int64_t p2) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i idx[3];
    __m256 sgn[3];
    for (int s = 0; s < 3; s++) {
        __m256i h = _mm256_set1_epi32(1 << s);
        idx[s] = _mm256_xor_si256(lanes, h);
        __m256i upper = _mm256_cmpeq_epi32(_mm256_and_si256(lanes, h), h);
        sgn[s] = _mm256_blendv_ps(_mm256_set1_ps(1.0f), _mm256_set1_ps(-1.0f),
                                  _mm256_castsi256_ps(upper));
    }
    for (int64_t i = 0; i < p2; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        for (int s = 0; s < 3; s++)
            v = _mm256_fmadd_ps(v, sgn[s], _mm256_permutevar8x32_ps(v, idx[s]));
        _mm256_storeu_ps(x + i, v);
    }
}

static void fwht_avx2(float *x, int64_t p2, int64_t b) {
    int64_t h = 1;
    if (b == 1 && p2 >= 8) {
        fwht8_stages(x, p2);
        h = 8;
    }
    for (; h < p2; h *= 2)
        for (int64_t i = 0; i < p2; i += 2 * h) {
            float *u = x + i * b, *v = x + (i + h) * b;
            int64_t len = h * b, k = 0;
            for (; k + 8 <= len; k += 8) {
                __m256 a = _mm256_loadu_ps(u + k), c = _mm256_loadu_ps(v + k);
                _mm256_storeu_ps(u + k, _mm256_add_ps(a, c));
                _mm256_storeu_ps(v + k, _mm256_sub_ps(a, c));
            }
            for (; k < len; k++) {
                float a = u[k], c = v[k];
                u[k] = a + c;
                v[k] = a - c;
            }
        }
}

void sm_qkernels_init_avx2(sm_qkernels *k) {
    init_controls();
    k->qgemv = qgemv_avx2;
    k->signmm = signmm_avx2;
    k->fwht = fwht_avx2;
}
