#include "../base/base.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} k_dtypes[SM_DTYPE_COUNT] = {
    [SM_DTYPE_F32] = {"F32", 4},      [SM_DTYPE_F16] = {"F16", 2},
    [SM_DTYPE_BF16] = {"BF16", 2},    [SM_DTYPE_F64] = {"F64", 8},
    [SM_DTYPE_I8] = {"I8", 1},        [SM_DTYPE_U8] = {"U8", 1},
    [SM_DTYPE_I16] = {"I16", 2},      [SM_DTYPE_U16] = {"U16", 2},
    [SM_DTYPE_I32] = {"I32", 4},      [SM_DTYPE_U32] = {"U32", 4},
    [SM_DTYPE_I64] = {"I64", 8},      [SM_DTYPE_U64] = {"U64", 8},
    [SM_DTYPE_BOOL] = {"BOOL", 1},    [SM_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [SM_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};

const char *sm_dtype_name(sm_dtype t) {
    if ((int)t < 0 || t >= SM_DTYPE_COUNT) return "UNKNOWN";
    return k_dtypes[t].name;
}

sm_dtype sm_dtype_from_name(const char *s) {
    for (int i = 0; i < SM_DTYPE_COUNT; i++)
        if (strcmp(s, k_dtypes[i].name) == 0) return (sm_dtype)i;
    return SM_DTYPE_UNKNOWN;
}

size_t sm_dtype_size(sm_dtype t) {
    if ((int)t < 0 || t >= SM_DTYPE_COUNT) return 0;
    return k_dtypes[t].size;
}

static uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float u2f(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t sm_f32_to_f16(float x) {
    uint32_t u = f2u(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffff;
    if (a > 0x7f800000) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff)); // NaN
    if (a >= 0x477ff000) return (uint16_t)(sign | 0x7c00); // rounds to >= 65520: Inf
    if (a < 0x38800000) {
        // Subnormal half (or zero): value = m * 2^-24; add then subtract a magic number so the
        // FPU's round-to-nearest-even does the rounding.
        float f = u2f(a) + 0.5f;
        return (uint16_t)(sign | (uint16_t)(f2u(f) - f2u(0.5f)));
    }
    uint32_t mant_odd = (a >> 13) & 1;
    a += 0xc8000fff + mant_odd; // rebias exponent (-112 << 23) and round to nearest even
    return (uint16_t)(sign | (a >> 13));
}

float sm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {
        float f = (float)m * 0x1.0p-24f;
        return u2f(f2u(f) | sign);
    }
    // NaN: quieted (top mantissa bit set) as F16C's vcvtph2ps and IEEE 754 conversion do, so the
    // scalar and SIMD decoders agree bit for bit; the payload is kept.
    if (e == 31) return u2f(sign | 0x7f800000 | (m << 13) | (m ? 0x400000u : 0));
    return u2f(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t sm_f32_to_bf16(float x) {
    uint32_t u = f2u(x);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float sm_bf16_to_f32(uint16_t h) {
    return u2f((uint32_t)h << 16);
}

sm_status sm_convert_to_f32(sm_dtype t, const void *src, int64_t n, float *dst) {
    const unsigned char *p = src;
    switch (t) {
    case SM_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); return SM_OK;
    case SM_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = sm_f16_to_f32(h);
        }
        return SM_OK;
    case SM_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = sm_bf16_to_f32(h);
        }
        return SM_OK;
    case SM_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return SM_OK;
    default:
        return sm_fail(SM_ERR_UNSUPPORTED, "cannot convert %s to F32 (supported: F32, F16, BF16, F64)",
                       sm_dtype_name(t));
    }
}
