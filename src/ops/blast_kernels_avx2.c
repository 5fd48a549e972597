// AVX2 BLAST kernels.
#include "blast_kernels.h"

#include <immintrin.h>

static void mul(int64_t n, const float *s, const float *z, float *t, bool accumulate) {
    int64_t i = 0;
    if (accumulate) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(t + i, _mm256_fmadd_ps(_mm256_loadu_ps(s + i), _mm256_loadu_ps(z + i),
                                                    _mm256_loadu_ps(t + i)));
        for (; i < n; i++) t[i] += s[i] * z[i];
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(t + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), _mm256_loadu_ps(z + i)));
        for (; i < n; i++) t[i] = s[i] * z[i];
    }
}

void sm_blast_kernels_init_avx2(sm_blast_kernels *k) {
    k->mul = mul;
}
