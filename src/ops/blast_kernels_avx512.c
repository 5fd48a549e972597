// AVX-512 BLAST kernels (masked tails).
#include "blast_kernels.h"

#include <immintrin.h>

static void mul(int64_t n, const float *s, const float *z, float *t, bool accumulate) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 p = _mm512_mul_ps(_mm512_loadu_ps(s + i), _mm512_loadu_ps(z + i));
        _mm512_storeu_ps(t + i, accumulate ? _mm512_add_ps(p, _mm512_loadu_ps(t + i)) : p);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), _mm512_maskz_loadu_ps(k, z + i));
        if (accumulate) p = _mm512_add_ps(p, _mm512_maskz_loadu_ps(k, t + i));
        _mm512_mask_storeu_ps(t + i, k, p);
    }
}

void sm_blast_kernels_init_avx512(sm_blast_kernels *k) {
    k->mul = mul;
}
