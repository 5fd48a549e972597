// AVX-512 (F, BW, VL, DQ) kernels of qkernels.h.
//
// qgemv streams the codes row after row (one sequential stream the hardware prefetcher follows;
// x stays in L1). For each group it builds a 16-entry table of the group's values
// (i - z) * s and turns codes into weights with one vpermps per 16 codes (vpermps reads only the
// low 4 bits of each index lane, which also masks off the neighbouring code): the products are
// those of the decoded weights, with no per-group scale multiply or zero-point correction.
// Per 32 codes:
//   4 bits: vpmovzxbd (a byte per lane), vpermps of the low nibbles (even columns), a shift
//           and vpermps (odd columns);
//   2 bits: a broadcast 64-bit load and two vpsrlvq that leave codes i and i + 16 at the bottom
//           of the two halves of each 64-bit lane;
//   3 bits: a broadcast 16-byte load, vpshufb of the two bytes holding each code, vpsrlvd;
//   8 bits: vpmovzxbd and a conversion, (q - z) * s.
// x is permuted once per call into the lane order the unpacking gives (4 and 2 bits), so the
// codes need no shuffles back. Groups must be a multiple of 32 columns; other groups take the
// scalar rows. 4-bit codes take an integer path instead where the CPU has AVX512-VNNI (below,
// "4 bits with AVX512-VNNI"): 1.7x the table path's rate in cache.
//
// signmm adds x into one accumulator per row under a 16-bit mask loaded straight from the sign
// bits (y = 2 * sum over the +1 columns - sum of x): one vaddps per 16 weights.
#include "qkernels.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <omp.h>
#include <string.h>

#define PAR_MIN (1 << 18) // rows * cols below which threads cost more than they give
#ifndef QPF
#define QPF 2048
#endif
#ifndef QRB
#define QRB 2
#endif
#ifndef SPF
#define SPF 1
#endif
#define GB 256            // groups whose scales and zeros are converted at a time (stack)

// Byte-shuffle controls and shifts that put code j of a 16-byte window (bit j B) at the bottom
// of 32-bit lane j: [B][0] for codes 0..15, [B][1] for codes 16..31.
static uint8_t g_ctl[9][2][64] __attribute__((aligned(64)));
static uint32_t g_sh[9][2][16] __attribute__((aligned(64)));

static void init_controls(void) {
    static const int widths[] = {2, 3, 4, 8};
    for (int w = 0; w < 4; w++) {
        int B = widths[w];
        for (int half = 0; half < 2; half++)
            for (int j = 0; j < 16; j++) {
                int bit = (16 * half + j) * B, lo = bit >> 3;
                uint8_t *c = &g_ctl[B][half][4 * j];
                c[0] = (uint8_t)(lo & 15);
                c[1] = (uint8_t)((lo + 1) & 15);
                c[2] = c[3] = 0x80;
                g_sh[B][half][j] = (uint32_t)(bit & 7);
            }
    }
}

static inline __m512 iota_for(int B) {
    if (B == 2) return _mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    if (B == 3) return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
    return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// Lane orders of the two 16-lane halves of a 32-column chunk (column within the chunk).
static inline __m512i order_a(int B) {
    if (B == 4) return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23); // B == 2
}
static inline __m512i order_b(int B) {
    if (B == 4) return _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
}

// 16 zero points (codes g0 .. g0 + t of a B-bit stream, g0 a multiple of 16) as floats.
static inline __m512 zeros16(int B, const uint8_t *zrow, int64_t g0, int64_t t) {
    const uint8_t *p = zrow + (g0 * B) / 8;
    int nb = (int)((t * B + 7) / 8);
    __m128i w = _mm_maskz_loadu_epi8((__mmask16)(nb >= 16 ? 0xffff : (1u << nb) - 1), p);
    __m512i v = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(w),
                                    _mm512_load_si512((const void *)g_ctl[B][0]));
    v = _mm512_srlv_epi32(v, _mm512_load_si512((const void *)g_sh[B][0]));
    v = _mm512_and_si512(v, _mm512_set1_epi32((1 << B) - 1));
    return _mm512_cvtepi32_ps(v);
}

// Scales and zero points of groups [g0, g0 + n) of row r as floats into sb and zb.
static inline void group_params(int B, const sm_qview *q, int64_t r, int64_t g0, int64_t n,
                                float *sb, float *zb) {
    int64_t ng = q->cols / q->group;
    const uint16_t *sc = q->scales + r * ng;
    const uint8_t *zr = q->zeros ? q->zeros + (size_t)r * q->zb : NULL;
    for (int64_t k = 0; k < n; k += 16) {
        int64_t t = n - k < 16 ? n - k : 16;
        __mmask16 m = (__mmask16)(t == 16 ? 0xffff : (1u << t) - 1);
        __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sc + g0 + k));
        __m512 z = zr ? zeros16(B, zr, g0 + k, t) : _mm512_set1_ps((float)(1 << (B - 1)));
        _mm512_storeu_ps(sb + k, s);
        _mm512_storeu_ps(zb + k, z);
    }
}

// Codes of 32 columns at p as floats (i - z) * s, in the lane order of order_a / order_b (2 and
// 4 bits) or natural order (3 and 8 bits).
static inline __attribute__((always_inline)) void chunk32(int B, const uint8_t *p, __m512 tbl,
                                                          __m512 s, __m512 z, __m512 *a,
                                                          __m512 *b) {
    if (B == 4) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
        *a = _mm512_permutexvar_ps(v, tbl);
        *b = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tbl);
    } else if (B == 2) {
        uint64_t u;
        memcpy(&u, p, 8);
        __m512i q = _mm512_set1_epi64((long long)u);
        const __m512i sa = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        const __m512i sbv = _mm512_setr_epi64(16, 18, 20, 22, 24, 26, 28, 30);
        *a = _mm512_permutexvar_ps(_mm512_srlv_epi64(q, sa), tbl);
        *b = _mm512_permutexvar_ps(_mm512_srlv_epi64(q, sbv), tbl);
    } else if (B == 3) {
        __m512i w = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
        __m512i va = _mm512_srlv_epi32(
            _mm512_shuffle_epi8(w, _mm512_load_si512((const void *)g_ctl[3][0])),
            _mm512_load_si512((const void *)g_sh[3][0]));
        __m512i vb = _mm512_srlv_epi32(
            _mm512_shuffle_epi8(w, _mm512_load_si512((const void *)g_ctl[3][1])),
            _mm512_load_si512((const void *)g_sh[3][1]));
        *a = _mm512_permutexvar_ps(va, tbl);
        *b = _mm512_permutexvar_ps(vb, tbl);
    } else { // 8 bits
        __m512 qa = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
        __m512 qb =
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
        *a = _mm512_mul_ps(_mm512_sub_ps(qa, z), s);
        *b = _mm512_mul_ps(_mm512_sub_ps(qb, z), s);
    }
}

// y[r] for RB consecutive rows from r: the rows advance together, group by group, so that RB
// streams are in flight (one stream alone does not keep enough cache-line requests open to
// reach the memory bandwidth); each row prefetches QPF bytes ahead in its stream.
static inline __attribute__((always_inline)) void qgemv_block(int B, int RB, const sm_qview *q,
                                                              const float *xp, float *y,
                                                              int64_t r) {
    const int64_t G = q->group, ng = q->cols / G, nch = G / 32, cb = 4 * B; // bytes a chunk
    const __m512 iota = iota_for(B);
    float sb[RB][GB + 16], zb[RB][GB + 16];
    const uint8_t *p[RB];
    __m512 acc[RB][2];
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++) {
        p[i] = q->codes + (size_t)(r + i) * q->rb;
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    }
    const float *xc = xp;
    for (int64_t gb = 0; gb < ng; gb += GB) {
        int64_t gn = ng - gb < GB ? ng - gb : GB;
#pragma GCC unroll 8
        for (int i = 0; i < RB; i++) group_params(B, q, r + i, gb, gn, sb[i], zb[i]);
        for (int64_t g = 0; g < gn; g++) {
#pragma GCC unroll 8
            for (int i = 0; i < RB; i++) {
                __m512 s = _mm512_set1_ps(sb[i][g]), z = _mm512_set1_ps(zb[i][g]), a, b;
                __m512 tbl = _mm512_mul_ps(_mm512_sub_ps(iota, z), s);
                if (QPF) _mm_prefetch((const char *)p[i] + QPF, _MM_HINT_T0);
                const float *xk = xc;
                for (int64_t k = 0; k < nch; k++) {
                    chunk32(B, p[i], tbl, s, z, &a, &b);
                    acc[i][0] = _mm512_fmadd_ps(a, _mm512_loadu_ps(xk), acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(b, _mm512_loadu_ps(xk + 16), acc[i][1]);
                    p[i] += cb;
                    xk += 32;
                }
            }
            xc += G;
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++) y[r + i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
}

static inline __attribute__((always_inline)) void qgemv_rows(int B, const sm_qview *q,
                                                             const float *xp, float *y,
                                                             int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + QRB <= r1; r += QRB) qgemv_block(B, QRB, q, xp, y, r);
    for (; r < r1; r++) qgemv_block(B, 1, q, xp, y, r);
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

// --- 4 bits with AVX512-VNNI ---------------------------------------------------------------------
// x is split exactly into three signed 8-bit digit planes per group: xq = round(x / xs_g) with
// |xq| <= 127 * 65536 (xs_g = max |x| over the group / that), xq = d0 + 256 d1 + 65536 d2, each
// digit in [-128, 127] (x is then known to a relative 1.2e-7 of the group's largest entry, as
// fine as float rounding). vpdpbusd multiplies 64 unsigned code bytes by 64 digit bytes and sums
// them in fours: a row's 64 code bytes (128 codes) are one load, split into low nibbles (the
// even columns of each 8) and high nibbles (the odd ones), against digits laid out to match.
// Per block of 128 columns: P = ((P2 << 8) + P1 << 8) + P0 exactly in int32 (at most
// 8 * 15 * 127 * 65793 < 2^31), one conversion, and an FMA with each lane's s * xs_g; the zero
// points enter once per row as sum_g s z xs_g sum(xq over g). About 16 uops per 128 codes
// against 24 for the table path.
#define XQMAX 8323072.0f // 127 * 65536

// Only these functions may use VNNI (the rest of the file runs on any AVX-512 CPU); clang ignores
// GCC's target pragma, so it gets the equivalent attribute push.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512vnni")
#endif

// work: xd (cols / 128 blocks of 6 x 64 bytes), then xs (ng), then xsum (ng) = sum of xq.
// Block b holds, for plane p = 0, 1, 2, the 16 dwords of the even columns (64 bytes) and of the
// odd ones: dword j of the even part is the digits of columns 8j, 8j + 2, 8j + 4, 8j + 6.
static void vnni_prep(const sm_qview *q, const float *x, float *work) {
    const int64_t G = q->group, ng = q->cols / G, nb = q->cols / 128;
    uint8_t *xd = (uint8_t *)work;
    float *xs = work + nb * 96, *xsum = xs + ng;
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m512i qmax = _mm512_set1_epi32((int)XQMAX), qmin = _mm512_set1_epi32(-(int)XQMAX);
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    // Steps: the largest |x| of each group, then digits 16 columns at a time (a group of 8 is
    // half a vector: the two halves get their own scale).
    for (int64_t g = 0; g < ng; g++) {
        __m512 m = _mm512_setzero_ps();
        for (int64_t c = g * G; c < (g + 1) * G; c += 16) {
            __mmask16 k = (__mmask16)(G >= 16 ? 0xffff : 0xff);
            m = _mm512_max_ps(m, _mm512_and_ps(_mm512_maskz_loadu_ps(k, x + c), absmask));
        }
        float amax = _mm512_reduce_max_ps(m);
        xs[g] = amax > 0 ? amax / XQMAX : 1.0f;
        xsum[g] = 0;
    }
    for (int64_t c = 0; c < q->cols; c += 16) {
        int64_t g = c / G;
        __m512 inv = _mm512_set1_ps(1.0f / xs[g]);
        if (G == 8) inv = _mm512_mask_blend_ps(0xff00, inv, _mm512_set1_ps(1.0f / xs[g + 1]));
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + c), inv));
        v = _mm512_min_epi32(_mm512_max_epi32(v, qmin), qmax);
        __m512 vf = _mm512_cvtepi32_ps(v);
        if (G == 8) {
            xsum[g] += _mm512_mask_reduce_add_ps(0x00ff, vf);
            xsum[g + 1] += _mm512_mask_reduce_add_ps(0xff00, vf);
        } else {
            xsum[g] += _mm512_reduce_add_ps(vf);
        }
        __m512i d0 = _mm512_srai_epi32(_mm512_slli_epi32(v, 24), 24);
        __m512i t = _mm512_srai_epi32(_mm512_sub_epi32(v, d0), 8);
        __m512i d1 = _mm512_srai_epi32(_mm512_slli_epi32(t, 24), 24);
        __m512i d2 = _mm512_srai_epi32(_mm512_sub_epi32(t, d1), 8);
        const __m512i planes[3] = {d0, d1, d2};
        uint8_t *blk = xd + (c / 128) * 384 + ((c % 128) / 8) * 4;
        for (int p = 0; p < 3; p++) {
            // 16 digit bytes in column order -> the even columns' 8 bytes, then the odd ones'.
            __m128i b = _mm_shuffle_epi8(_mm512_cvtepi32_epi8(planes[p]), order);
            _mm_storel_epi64((__m128i *)(blk + p * 128), b);
            _mm_storel_epi64((__m128i *)(blk + p * 128 + 64), _mm_srli_si128(b, 8));
        }
    }
}

static inline __attribute__((always_inline)) void vnni_block(int RB, const sm_qview *q,
                                                             const float *work, float *y,
                                                             int64_t r) {
    const int64_t G = q->group, ng = q->cols / G, nb = q->cols / 128;
    const int8_t *xd = (const int8_t *)work;
    const float *xs = work + nb * 96, *xsum = xs + ng;
    const __m512i nib = _mm512_set1_epi8(0x0f);
    // Lane j of a block covers columns 8j .. 8j + 7: its group within the block's first group.
    const __m512i gsel = _mm512_srli_epi32(
        _mm512_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120),
        G >= 128 ? 7 : __builtin_ctzll((unsigned long long)G));
    float sxs[RB][GB + 16], zb[RB][GB + 16], corr[RB];
    const uint8_t *p[RB];
    __m512 acc[RB];
    for (int i = 0; i < RB; i++) {
        p[i] = q->codes + (size_t)(r + i) * q->rb;
        acc[i] = _mm512_setzero_ps();
        corr[i] = 0;
    }
    // Groups in chunks of GB: their blocks are [gb G / 128, (gb + gn) G / 128).
    for (int64_t gb = 0; gb < ng; gb += GB) {
        int64_t gn = ng - gb < GB ? ng - gb : GB;
        for (int i = 0; i < RB; i++) {
            group_params(4, q, r + i, gb, gn, sxs[i], zb[i]);
            __m512 cz = _mm512_setzero_ps();
            for (int64_t k = 0; k < gn; k += 16) {
                __mmask16 m = (__mmask16)(gn - k >= 16 ? 0xffff : (1u << (gn - k)) - 1);
                __m512 s = _mm512_mul_ps(_mm512_loadu_ps(sxs[i] + k),
                                         _mm512_maskz_loadu_ps(m, xs + gb + k));
                _mm512_storeu_ps(sxs[i] + k, s);
                cz = _mm512_fmadd_ps(_mm512_mul_ps(s, _mm512_loadu_ps(zb[i] + k)),
                                     _mm512_maskz_loadu_ps(m, xsum + gb + k), cz);
            }
            corr[i] += _mm512_reduce_add_ps(cz);
        }
        int64_t b0 = gb * G / 128, b1 = (gb + gn) * G / 128;
        for (int64_t b = b0; b < b1; b++) {
            const __m512i *d = (const __m512i *)(xd + b * 384);
            int64_t g0 = b * 128 / G - gb; // the block's first group, within the chunk
#pragma GCC unroll 8
            for (int i = 0; i < RB; i++) {
                _mm_prefetch((const char *)p[i] + b * 64 + QPF, _MM_HINT_T0);
                __m512i v = _mm512_loadu_si512((const void *)(p[i] + b * 64));
                __m512i lo = _mm512_and_si512(v, nib);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), nib);
                __m512i P = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(d + 4));
                P = _mm512_dpbusd_epi32(P, hi, _mm512_loadu_si512(d + 5));
                P = _mm512_slli_epi32(P, 8);
                P = _mm512_dpbusd_epi32(P, lo, _mm512_loadu_si512(d + 2));
                P = _mm512_dpbusd_epi32(P, hi, _mm512_loadu_si512(d + 3));
                P = _mm512_slli_epi32(P, 8);
                P = _mm512_dpbusd_epi32(P, lo, _mm512_loadu_si512(d + 0));
                P = _mm512_dpbusd_epi32(P, hi, _mm512_loadu_si512(d + 1));
                __m512 sc = G >= 128 ? _mm512_set1_ps(sxs[i][g0])
                                     : _mm512_permutexvar_ps(gsel, _mm512_loadu_ps(sxs[i] + g0));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(P), sc, acc[i]);
            }
        }
    }
    for (int i = 0; i < RB; i++) y[r + i] = _mm512_reduce_add_ps(acc[i]) - corr[i];
}

static void vnni_rows(const sm_qview *q, const float *work, float *y, int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + QRB <= r1; r += QRB) vnni_block(QRB, q, work, y, r);
    for (; r < r1; r++) vnni_block(1, q, work, y, r);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static bool g_vnni;

// The VNNI path: 4 bits, groups that are 8, 16, 32 or 64 columns or a multiple of 128, whole
// blocks of 128 columns, and a CPU with AVX512-VNNI.
static bool vnni_fits(const sm_qview *q) {
    int64_t G = q->group;
    return g_vnni && q->bits == 4 && q->cols % 128 == 0 &&
           (G == 8 || G == 16 || G == 32 || G == 64 || G % 128 == 0);
}

static void run_vnni(const sm_qview *q, const float *work, float *y) {
    if (q->rows * q->cols <= PAR_MIN || omp_get_max_threads() == 1) {
        vnni_rows(q, work, y, 0, q->rows);
        return;
    }
#pragma omp parallel
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t r0 = q->rows * t / nt, r1 = q->rows * (t + 1) / nt;
        if (r0 < r1) vnni_rows(q, work, y, r0, r1);
    }
}

static void qgemv_avx512(const sm_qview *q, const float *x, float *y, float *work) {
    if (vnni_fits(q)) {
        vnni_prep(q, x, work);
        run_vnni(q, work, y);
        return;
    }
    if (q->group % 32 != 0) {
        sm_qgemv_ref_rows(q, x, y, 0, q->rows);
        return;
    }
    const float *xp = x;
    if (q->bits == 2 || q->bits == 4) { // x in the lanes' column order
        __m512i ia = order_a(q->bits), ib = order_b(q->bits);
        for (int64_t c = 0; c < q->cols; c += 32) {
            __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
            _mm512_storeu_ps(work + c, _mm512_permutex2var_ps(x0, ia, x1));
            _mm512_storeu_ps(work + c + 16, _mm512_permutex2var_ps(x0, ib, x1));
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

// Decode: the same tables; the 2- and 4-bit lanes are put back in column order.
static inline __attribute__((always_inline)) void qdecode_rows(int B, const sm_qview *q,
                                                               int64_t r0, int64_t r1,
                                                               float *out) {
    const int64_t G = q->group, ng = q->cols / G, nch = G / 32, cb = 4 * B;
    const __m512 iota = iota_for(B);
    __m512i lo, hi; // interleave back to column order
    if (B == 4) {
        lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    } else {
        lo = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        hi = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    }
    float sb[GB + 16], zb[GB + 16];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = q->codes + (size_t)r * q->rb;
        float *o = out + (r - r0) * q->cols;
        for (int64_t gb = 0; gb < ng; gb += GB) {
            int64_t gn = ng - gb < GB ? ng - gb : GB;
            group_params(B, q, r, gb, gn, sb, zb);
            for (int64_t g = 0; g < gn; g++) {
                __m512 s = _mm512_set1_ps(sb[g]), z = _mm512_set1_ps(zb[g]);
                __m512 tbl = _mm512_mul_ps(_mm512_sub_ps(iota, z), s), a, b;
                for (int64_t k = 0; k < nch; k++) {
                    chunk32(B, p, tbl, s, z, &a, &b);
                    if (B == 2 || B == 4) {
                        __m512 t = _mm512_permutex2var_ps(a, lo, b);
                        b = _mm512_permutex2var_ps(a, hi, b);
                        a = t;
                    }
                    _mm512_storeu_ps(o, a);
                    _mm512_storeu_ps(o + 16, b);
                    p += cb;
                    o += 32;
                }
            }
        }
    }
}

#define DECODE(B)                                                                                \
    static void qdecode_rows_##B(const sm_qview *q, int64_t r0, int64_t r1, float *out) {       \
        qdecode_rows(B, q, r0, r1, out);                                                         \
    }
DECODE(2)
DECODE(3)
DECODE(4)
DECODE(8)

static void qdecode_avx512(const sm_qview *q, int64_t r0, int64_t r1, float *out) {
    if (q->group % 32 != 0) {
        sm_qdecode_ref_rows(q, r0, r1, out);
        return;
    }
    switch (q->bits) {
    case 2: qdecode_rows_2(q, r0, r1, out); break;
    case 3: qdecode_rows_3(q, r0, r1, out); break;
    case 4: qdecode_rows_4(q, r0, r1, out); break;
    default: qdecode_rows_8(q, r0, r1, out); break;
    }
}

// --- sign matrices ---------------------------------------------------------------------------

// kmovw k, m16: the mask straight from memory, a load only. (GCC otherwise goes through a
// general register, and the kmovd from it takes port 5, which the masked adds need.)
static inline __mmask16 kload(const uint8_t *p) {
    __mmask16 k;
    __asm__("kmovw %1, %0" : "=Yk"(k) : "m"(*(const uint16_t *)p));
    return k;
}

static inline __mmask16 tail_mask(int64_t t) {
    return t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << t) - 1);
}

// Y[v, r] for RB consecutive rows and one vector: accumulators of x under each row's mask.
// The partial chunk at the end of a row reads only the bytes the row has; past the last column
// x is zero (masked load), so the mask bits there add nothing.
static inline __attribute__((always_inline)) void sign_rows(int RB, int64_t cols,
                                                            const uint8_t *bits, size_t rb,
                                                            const float *x, float xsum, float *y) {
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < RB; i++) acc[i] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m512 xv = _mm512_loadu_ps(x + c);
        // The next block of RB rows (about 2 cols bytes for RB = 16) is fetched while this one
        // is summed: one line every 32 columns. (RB rows of 2-byte steps in RB streams keep too
        // few lines in flight for the hardware prefetchers.)
        if (RB > 1 && (c & 31) == 0) _mm_prefetch((const char *)bits + SPF * RB * rb + 2 * c, _MM_HINT_T0);
#pragma GCC unroll 16
        for (int i = 0; i < RB; i++)
            acc[i] = _mm512_mask_add_ps(acc[i], kload(bits + i * rb + (c >> 3)), acc[i], xv);
    }
    if (c < cols) {
        __m512 xv = _mm512_maskz_loadu_ps(tail_mask(cols - c), x + c);
        for (int i = 0; i < RB; i++) {
            const uint8_t *p = bits + i * rb + (c >> 3);
            unsigned m = p[0] | (cols - c > 8 ? (unsigned)p[1] << 8 : 0u);
            acc[i] = _mm512_mask_add_ps(acc[i], (__mmask16)m, acc[i], xv);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < RB; i++) y[i] = 2.0f * _mm512_reduce_add_ps(acc[i]) - xsum;
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
        __m512 s = _mm512_setzero_ps();
        for (int64_t c = 0; c < a->cols; c += 16)
            s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail_mask(a->cols - c), x + c));
        float xsum = _mm512_reduce_add_ps(s);
        int64_t r = r0;
        for (; r + 16 <= r1; r += 16)
            sign_rows(16, a->cols, a->bits + (size_t)r * a->rb, a->rb, x, xsum, y + r);
        for (; r < r1; r++)
            sign_rows(1, a->cols, a->bits + (size_t)r * a->rb, a->rb, x, xsum, y + r);
    }
}

static void signmm_avx512(int64_t rows, int64_t cols, const uint8_t *bits, size_t rb,
                          int64_t nv, const float *X, float *Y) {
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

// Butterflies u, v <- u + v, u - v over two spans of len floats.
static inline void butterfly(float *u, float *v, int64_t len) {
    int64_t k = 0;
    for (; k + 16 <= len; k += 16) {
        __m512 a = _mm512_loadu_ps(u + k), c = _mm512_loadu_ps(v + k);
        _mm512_storeu_ps(u + k, _mm512_add_ps(a, c));
        _mm512_storeu_ps(v + k, _mm512_sub_ps(a, c));
    }
    if (k < len) {
        __mmask16 m = tail_mask(len - k);
        __m512 a = _mm512_maskz_loadu_ps(m, u + k), c = _mm512_maskz_loadu_ps(m, v + k);
        _mm512_mask_storeu_ps(u + k, m, _mm512_add_ps(a, c));
        _mm512_mask_storeu_ps(v + k, m, _mm512_sub_ps(a, c));
    }
}

// The first four stages of a transform of single floats (b = 1) inside each 16-float vector:
// lane i takes x[i ^ h] + x[i] or x[i ^ h] - x[i] as bit h of i is 0 or 1.
static void fwht16_stages(float *x, int64_t p2) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i idx[4];
    __m512 sgn[4];
    for (int s = 0; s < 4; s++) {
        __m512i h = _mm512_set1_epi32(1 << s);
        idx[s] = _mm512_xor_si512(lanes, h);
        __mmask16 upper = _mm512_test_epi32_mask(lanes, h);
        sgn[s] = _mm512_mask_blend_ps(upper, _mm512_set1_ps(1.0f), _mm512_set1_ps(-1.0f));
    }
    for (int64_t i = 0; i < p2; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        for (int s = 0; s < 4; s++)
            v = _mm512_fmadd_ps(v, sgn[s], _mm512_permutexvar_ps(idx[s], v));
        _mm512_storeu_ps(x + i, v);
    }
}

static void fwht_avx512(float *x, int64_t p2, int64_t b) {
    int64_t h = 1;
    if (b == 1 && p2 >= 16) {
        fwht16_stages(x, p2);
        h = 16;
    }
    for (; h < p2; h *= 2)
        for (int64_t i = 0; i < p2; i += 2 * h) {
            float *u = x + i * b, *v = x + (i + h) * b;
            if (h * b >= 16) {
                butterfly(u, v, h * b);
            } else {
                for (int64_t k = 0; k < h * b; k++) {
                    float a = u[k], c = v[k];
                    u[k] = a + c;
                    v[k] = a - c;
                }
            }
        }
}

void sm_qkernels_init_avx512(sm_qkernels *k) {
    init_controls();
    __builtin_cpu_init();
    // STRUCTMAT_NO_VNNI=1 keeps 4-bit codes on the table path (to compare the two).
    const char *no = getenv("STRUCTMAT_NO_VNNI");
    g_vnni = __builtin_cpu_supports("avx512vnni") && !(no && *no && strcmp(no, "0") != 0);
    k->qgemv = qgemv_avx512;
    k->qdecode = qdecode_avx512;
    k->signmm = signmm_avx512;
    k->fwht = fwht_avx512;
}
