// ggml's block formats: the type table, decoders for every type a GGUF model commonly holds, and
// ggml's reference quantizers for the legacy 32-element types.
//
// Decoders compute in F32 in the same order as ggml's dequantize_row_* (scale times scale first,
// then times the code, minus the min term), so their values are ggml's and the gguf package's bit
// for bit. This file is compiled without -mfma, so no product is fused into an addition.
#include "ggml_quants.h"

#include "../base/base.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

typedef struct type_info {
    uint32_t id;
    const char *name;
    int32_t block, bytes;
    bool decode;
} type_info;

// Ids 4, 5 and 31..33, 36..38 were removed from ggml; ids past MXFP4 are still moving.
static const type_info k_types[] = {
    {SM_GGML_F32, "F32", 1, 4, true},
    {SM_GGML_F16, "F16", 1, 2, true},
    {SM_GGML_Q4_0, "Q4_0", 32, 18, true},
    {SM_GGML_Q4_1, "Q4_1", 32, 20, true},
    {SM_GGML_Q5_0, "Q5_0", 32, 22, true},
    {SM_GGML_Q5_1, "Q5_1", 32, 24, true},
    {SM_GGML_Q8_0, "Q8_0", 32, 34, true},
    {SM_GGML_Q8_1, "Q8_1", 32, 36, false},
    {SM_GGML_Q2_K, "Q2_K", 256, 84, true},
    {SM_GGML_Q3_K, "Q3_K", 256, 110, true},
    {SM_GGML_Q4_K, "Q4_K", 256, 144, true},
    {SM_GGML_Q5_K, "Q5_K", 256, 176, true},
    {SM_GGML_Q6_K, "Q6_K", 256, 210, true},
    {SM_GGML_Q8_K, "Q8_K", 256, 292, false},
    {16, "IQ2_XXS", 256, 66, false},
    {17, "IQ2_XS", 256, 74, false},
    {18, "IQ3_XXS", 256, 98, false},
    {19, "IQ1_S", 256, 50, false},
    {SM_GGML_IQ4_NL, "IQ4_NL", 32, 18, true},
    {21, "IQ3_S", 256, 110, false},
    {22, "IQ2_S", 256, 82, false},
    {23, "IQ4_XS", 256, 136, false},
    {24, "I8", 1, 1, false},
    {25, "I16", 1, 2, false},
    {26, "I32", 1, 4, false},
    {27, "I64", 1, 8, false},
    {SM_GGML_F64, "F64", 1, 8, true},
    {29, "IQ1_M", 256, 56, false},
    {SM_GGML_BF16, "BF16", 1, 2, true},
    {SM_GGML_TQ1_0, "TQ1_0", 256, 54, true},
    {SM_GGML_TQ2_0, "TQ2_0", 256, 66, true},
    {SM_GGML_MXFP4, "MXFP4", 32, 17, true},
};
#define NTYPES (int)(sizeof k_types / sizeof k_types[0])

static const type_info *find_type(uint32_t id) {
    for (int i = 0; i < NTYPES; i++)
        if (k_types[i].id == id) return &k_types[i];
    return NULL;
}

const char *sm_ggml_type_name(uint32_t type) {
    const type_info *t = find_type(type);
    return t ? t->name : NULL;
}

int32_t sm_ggml_type_from_name(const char *s) {
    for (int i = 0; i < NTYPES; i++) {
        const char *a = k_types[i].name, *b = s;
        while (*a && *b && toupper((unsigned char)*b) == *a) a++, b++;
        if (!*a && !*b) return (int32_t)k_types[i].id;
    }
    return -1;
}

bool sm_ggml_type_size(uint32_t type, int64_t *block, int64_t *bytes) {
    const type_info *t = find_type(type);
    if (!t) return false;
    *block = t->block;
    *bytes = t->bytes;
    return true;
}

bool sm_ggml_can_decode(uint32_t type) {
    const type_info *t = find_type(type);
    return t && t->decode;
}

// --- decoders: one block of each type -----------------------------------------------------------

static inline float h2f(uint16_t h) {
    return sm_f16_to_f32(h);
}

static void dec_q4_0(const void *src, float *y) {
    sm_block_q4_0 b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d);
    for (int j = 0; j < SM_QK / 2; j++) {
        y[j] = d * (float)((b.qs[j] & 15) - 8);
        y[j + SM_QK / 2] = d * (float)((b.qs[j] >> 4) - 8);
    }
}

static void dec_q4_1(const void *src, float *y) {
    sm_block_q4_1 b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d), m = h2f(b.m);
    for (int j = 0; j < SM_QK / 2; j++) {
        y[j] = d * (float)(b.qs[j] & 15) + m;
        y[j + SM_QK / 2] = d * (float)(b.qs[j] >> 4) + m;
    }
}

static void dec_q5_0(const void *src, float *y) {
    sm_block_q5_0 b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d);
    uint32_t qh;
    memcpy(&qh, b.qh, 4);
    for (int j = 0; j < SM_QK / 2; j++) {
        int lo = (b.qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
        int hi = (b.qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(lo - 16);
        y[j + SM_QK / 2] = d * (float)(hi - 16);
    }
}

static void dec_q5_1(const void *src, float *y) {
    sm_block_q5_1 b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d), m = h2f(b.m);
    uint32_t qh;
    memcpy(&qh, b.qh, 4);
    for (int j = 0; j < SM_QK / 2; j++) {
        int lo = (b.qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
        int hi = (b.qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)lo + m;
        y[j + SM_QK / 2] = d * (float)hi + m;
    }
}

static void dec_q8_0(const void *src, float *y) {
    sm_block_q8_0 b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d);
    for (int j = 0; j < SM_QK; j++) y[j] = (float)b.qs[j] * d;
}

// Element e = 128 c + 32 j + l (c < 2 halves, j < 4 shifts, l < 32) is bits 2j of qs[32 c + l];
// group e / 16.
static void dec_q2_K(const void *src, float *y) {
    sm_block_q2_K b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d), dmin = h2f(b.dmin);
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                int e = 128 * c + 32 * j + l;
                uint8_t sc = b.scales[e / 16];
                float dl = d * (float)(sc & 15), ml = dmin * (float)(sc >> 4);
                y[e] = dl * (float)((b.qs[32 * c + l] >> (2 * j)) & 3) - ml;
            }
}

// The 16 6-bit scales: low 4 bits are nibbles of bytes 0..7 (group g < 8: low nibble of g, else
// high nibble of g - 8); the high 2 bits are in bytes 8..11 (group g: byte 8 + g % 4, bits
// 2 (g / 4)).
static void q3_scales(const uint8_t *s, int *out) {
    for (int g = 0; g < 16; g++) {
        int lo = g < 8 ? s[g] & 15 : s[g - 8] >> 4;
        int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        out[g] = (lo | hi << 4) - 32;
    }
}

// Element e = 128 c + 32 j + l: low 2 bits from bits 2j of qs[32 c + l], the high bit is bit
// 4 c + j of hmask[l]; q = low - 4 when that bit is clear.
static void dec_q3_K(const void *src, float *y) {
    sm_block_q3_K b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d);
    int sc[16];
    q3_scales(b.scales, sc);
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                int e = 128 * c + 32 * j + l;
                float dl = d * (float)sc[e / 16];
                int q = (b.qs[32 * c + l] >> (2 * j)) & 3;
                if (!((b.hmask[l] >> (4 * c + j)) & 1)) q -= 4;
                y[e] = dl * (float)q;
            }
}

// Q4_K/Q5_K's eight 6-bit scales and mins in 12 bytes: group g < 4: scale = s[g] & 63, min =
// s[g + 4] & 63; g >= 4: scale = (s[g + 4] & 15) | (s[g - 4] >> 6) << 4, min = (s[g + 4] >> 4) |
// (s[g] >> 6) << 4.
static void k_scale_min(const uint8_t *s, int g, int *sc, int *m) {
    if (g < 4) {
        *sc = s[g] & 63;
        *m = s[g + 4] & 63;
    } else {
        *sc = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4);
        *m = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
    }
}

// Group g = 2 c + h (c < 4 chunks of 32 bytes, h the nibble): element 32 g + l is nibble h of
// qs[32 c + l].
static void dec_q4_K(const void *src, float *y) {
    sm_block_q4_K b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d), dmin = h2f(b.dmin);
    for (int g = 0; g < 8; g++) {
        int sc, m;
        k_scale_min(b.scales, g, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int q = (b.qs[32 * (g / 2) + l] >> (4 * (g % 2))) & 15;
            y[32 * g + l] = d1 * (float)q - m1;
        }
    }
}

// As Q4_K, plus bit g of qh[l] as the code's fifth bit.
static void dec_q5_K(const void *src, float *y) {
    sm_block_q5_K b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d), dmin = h2f(b.dmin);
    for (int g = 0; g < 8; g++) {
        int sc, m;
        k_scale_min(b.scales, g, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int q = ((b.qs[32 * (g / 2) + l] >> (4 * (g % 2))) & 15) | (((b.qh[l] >> g) & 1) << 4);
            y[32 * g + l] = d1 * (float)q - m1;
        }
    }
}

// Element e = 128 c + r (c < 2, r < 128): low 4 bits are nibble r / 64 of ql[64 c + r % 64], high
// 2 bits are bits 2 (r / 32) of qh[32 c + r % 32]; group e / 16.
static void dec_q6_K(const void *src, float *y) {
    sm_block_q6_K b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d);
    for (int c = 0; c < 2; c++)
        for (int r = 0; r < 128; r++) {
            int e = 128 * c + r;
            int lo = (b.ql[64 * c + r % 64] >> (4 * (r / 64))) & 15;
            int hi = (b.qh[32 * c + r % 32] >> (2 * (r / 32))) & 3;
            float dl = d * (float)b.scales[e / 16];
            y[e] = dl * (float)((lo | hi << 4) - 32);
        }
}

// A stored byte v holds trits as the base-3 digits of ceil(v' 256 / 243); trit k (k = 0 the most
// significant) is recovered as ((uint8_t)(v 3^k) 3) >> 8 (the multiplication wraps at 256).
static int trit(uint8_t v, int k) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t x = (uint8_t)(v * pow3[k]);
    return (int)(((uint16_t)x * 3) >> 8) - 1;
}

// Elements 0..159: trit k of qs[l] (l < 32) at 32 k + l; 160..239: trit k of qs[32 + l] (l < 16)
// at 160 + 16 k + l; 240..255: trit k (k < 4) of qh[l] (l < 4) at 240 + 4 k + l.
static void dec_tq1_0(const void *src, float *y) {
    sm_block_tq1_0 b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d);
    for (int k = 0; k < 5; k++)
        for (int l = 0; l < 32; l++) y[32 * k + l] = d * (float)trit(b.qs[l], k);
    for (int k = 0; k < 5; k++)
        for (int l = 0; l < 16; l++) y[160 + 16 * k + l] = d * (float)trit(b.qs[32 + l], k);
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 4; l++) y[240 + 4 * k + l] = d * (float)trit(b.qh[l], k);
}

// Element 128 c + 32 j + l is bits 2j of qs[32 c + l], minus 1.
static void dec_tq2_0(const void *src, float *y) {
    sm_block_tq2_0 b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d);
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                y[128 * c + 32 * j + l] = d * (float)(((b.qs[32 * c + l] >> (2 * j)) & 3) - 1);
}

// E2M1 values times 2; the shared exponent is halved to match (ggml_e8m0_to_fp32_half).
static const int8_t k_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static float e8m0_half(uint8_t e) {
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void dec_mxfp4(const void *src, float *y) {
    sm_block_mxfp4 b;
    memcpy(&b, src, sizeof b);
    float d = e8m0_half(b.e);
    for (int j = 0; j < SM_QK / 2; j++) {
        y[j] = d * (float)k_mxfp4[b.qs[j] & 15];
        y[j + SM_QK / 2] = d * (float)k_mxfp4[b.qs[j] >> 4];
    }
}

static const int8_t k_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

static void dec_iq4_nl(const void *src, float *y) {
    sm_block_iq4_nl b;
    memcpy(&b, src, sizeof b);
    float d = h2f(b.d);
    for (int j = 0; j < SM_QK / 2; j++) {
        y[j] = d * (float)k_iq4nl[b.qs[j] & 15];
        y[j + SM_QK / 2] = d * (float)k_iq4nl[b.qs[j] >> 4];
    }
}

void sm_ggml_decode_blocks(uint32_t type, const void *src, int64_t nblocks, float *dst) {
    const uint8_t *p = src;
    void (*fn)(const void *, float *) = NULL;
    int64_t bs = 0, qk = 0;
    switch (type) {
    case SM_GGML_F32:
        memcpy(dst, src, (size_t)nblocks * 4);
        return;
    case SM_GGML_F16:
        for (int64_t i = 0; i < nblocks; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = h2f(h);
        }
        return;
    case SM_GGML_BF16:
        for (int64_t i = 0; i < nblocks; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = sm_bf16_to_f32(h);
        }
        return;
    case SM_GGML_F64:
        for (int64_t i = 0; i < nblocks; i++) {
            double v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = (float)v;
        }
        return;
#define CASE(T, f, size, k)                                                                        \
    case T:                                                                                        \
        fn = f, bs = size, qk = k;                                                                 \
        break;
        CASE(SM_GGML_Q4_0, dec_q4_0, 18, 32)
        CASE(SM_GGML_Q4_1, dec_q4_1, 20, 32)
        CASE(SM_GGML_Q5_0, dec_q5_0, 22, 32)
        CASE(SM_GGML_Q5_1, dec_q5_1, 24, 32)
        CASE(SM_GGML_Q8_0, dec_q8_0, 34, 32)
        CASE(SM_GGML_Q2_K, dec_q2_K, 84, 256)
        CASE(SM_GGML_Q3_K, dec_q3_K, 110, 256)
        CASE(SM_GGML_Q4_K, dec_q4_K, 144, 256)
        CASE(SM_GGML_Q5_K, dec_q5_K, 176, 256)
        CASE(SM_GGML_Q6_K, dec_q6_K, 210, 256)
        CASE(SM_GGML_TQ1_0, dec_tq1_0, 54, 256)
        CASE(SM_GGML_TQ2_0, dec_tq2_0, 66, 256)
        CASE(SM_GGML_MXFP4, dec_mxfp4, 17, 32)
        CASE(SM_GGML_IQ4_NL, dec_iq4_nl, 18, 32)
#undef CASE
    default:
        SM_ASSERT(!"sm_ggml_decode_blocks: a type without a decoder");
    }
    for (int64_t i = 0; i < nblocks; i++) fn(p + i * bs, dst + i * qk);
}

sm_status sm_ggml_dequantize(uint32_t type, const void *src, int64_t n, float *dst) {
    const type_info *t = find_type(type);
    if (!t) return sm_fail(SM_ERR_UNSUPPORTED, "ggml type %u is unknown", type);
    if (!t->decode) return sm_fail(SM_ERR_UNSUPPORTED, "ggml type %s has no decoder here", t->name);
    if (n < 0 || n % t->block)
        return sm_fail(SM_ERR_ARG, "%s: %lld values are not whole blocks of %d", t->name,
                       (long long)n, t->block);
    if (n) sm_ggml_decode_blocks(type, src, n / t->block, dst);
    return SM_OK;
}

// --- ggml's reference quantizers (quantize_row_*_ref) for the legacy types -----------------------

// The value of largest magnitude (the first one on ties), sign kept.
static float signed_absmax(const float *x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void min_max(const float *x, int n, float *mn, float *mx) {
    *mn = INFINITY;
    *mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (x[j] < *mn) *mn = x[j];
        if (x[j] > *mx) *mx = x[j];
    }
}

static void enc_q8_0(const float *x, void *dst) {
    sm_block_q8_0 b;
    float amax = 0;
    for (int j = 0; j < SM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127, id = d != 0 ? 1.0f / d : 0.0f;
    b.d = sm_f32_to_f16(d);
    for (int j = 0; j < SM_QK; j++) b.qs[j] = (int8_t)roundf(x[j] * id);
    memcpy(dst, &b, sizeof b);
}

static void enc_q4_0(const float *x, void *dst) {
    sm_block_q4_0 b;
    float d = signed_absmax(x, SM_QK) / -8, id = d != 0 ? 1.0f / d : 0.0f;
    b.d = sm_f32_to_f16(d);
    for (int j = 0; j < SM_QK / 2; j++) {
        int lo = (int)(int8_t)(x[j] * id + 8.5f), hi = (int)(int8_t)(x[j + 16] * id + 8.5f);
        b.qs[j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
    memcpy(dst, &b, sizeof b);
}

static void enc_q4_1(const float *x, void *dst) {
    sm_block_q4_1 b;
    float mn, mx;
    min_max(x, SM_QK, &mn, &mx);
    float d = (mx - mn) / 15, id = d != 0 ? 1.0f / d : 0.0f;
    b.d = sm_f32_to_f16(d);
    b.m = sm_f32_to_f16(mn);
    for (int j = 0; j < SM_QK / 2; j++) {
        int lo = (int)(int8_t)((x[j] - mn) * id + 0.5f);
        int hi = (int)(int8_t)((x[j + 16] - mn) * id + 0.5f);
        b.qs[j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
    memcpy(dst, &b, sizeof b);
}

static void enc_q5_0(const float *x, void *dst) {
    sm_block_q5_0 b;
    float d = signed_absmax(x, SM_QK) / -16, id = d != 0 ? 1.0f / d : 0.0f;
    b.d = sm_f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < SM_QK / 2; j++) {
        int lo = (int)(int8_t)(x[j] * id + 16.5f), hi = (int)(int8_t)(x[j + 16] * id + 16.5f);
        lo = lo < 31 ? lo : 31;
        hi = hi < 31 ? hi : 31;
        b.qs[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
        qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
    }
    memcpy(b.qh, &qh, 4);
    memcpy(dst, &b, sizeof b);
}

static void enc_q5_1(const float *x, void *dst) {
    sm_block_q5_1 b;
    float mn, mx;
    min_max(x, SM_QK, &mn, &mx);
    float d = (mx - mn) / 31, id = d != 0 ? 1.0f / d : 0.0f;
    b.d = sm_f32_to_f16(d);
    b.m = sm_f32_to_f16(mn);
    uint32_t qh = 0;
    for (int j = 0; j < SM_QK / 2; j++) {
        int lo = (int)(uint8_t)((x[j] - mn) * id + 0.5f);
        int hi = (int)(uint8_t)((x[j + 16] - mn) * id + 0.5f);
        lo = lo < 31 ? lo : 31;
        hi = hi < 31 ? hi : 31;
        b.qs[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
        qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
    }
    memcpy(b.qh, &qh, 4);
    memcpy(dst, &b, sizeof b);
}

bool sm_ggml_can_encode(uint32_t type) {
    return type == SM_GGML_Q8_0 || type == SM_GGML_Q4_0 || type == SM_GGML_Q4_1 ||
           type == SM_GGML_Q5_0 || type == SM_GGML_Q5_1;
}

bool sm_ggml_quantize_row(uint32_t type, const float *x, int64_t n, void *dst) {
    void (*fn)(const float *, void *);
    size_t bs;
    switch (type) {
    case SM_GGML_Q8_0:
        fn = enc_q8_0, bs = sizeof(sm_block_q8_0);
        break;
    case SM_GGML_Q4_0:
        fn = enc_q4_0, bs = sizeof(sm_block_q4_0);
        break;
    case SM_GGML_Q4_1:
        fn = enc_q4_1, bs = sizeof(sm_block_q4_1);
        break;
    case SM_GGML_Q5_0:
        fn = enc_q5_0, bs = sizeof(sm_block_q5_0);
        break;
    case SM_GGML_Q5_1:
        fn = enc_q5_1, bs = sizeof(sm_block_q5_1);
        break;
    default:
        return false;
    }
    SM_ASSERT(n % SM_QK == 0);
    for (int64_t i = 0; i < n / SM_QK; i++) fn(x + i * SM_QK, (uint8_t *)dst + (size_t)i * bs);
    return true;
}
