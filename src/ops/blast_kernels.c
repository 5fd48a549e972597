// Scalar BLAST kernels (the reference the SIMD levels are tested against) and the table.
#include "blast_kernels.h"

#include <pthread.h>

static void mul_ref(int64_t n, const float *s, const float *z, float *t, bool accumulate) {
    if (accumulate)
        for (int64_t i = 0; i < n; i++) t[i] += s[i] * z[i];
    else
        for (int64_t i = 0; i < n; i++) t[i] = s[i] * z[i];
}

static sm_blast_kernels g_tables[3];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_tables(void) {
    sm_isa best = sm_isa_detect();
    g_tables[SM_ISA_SCALAR] = (sm_blast_kernels){.mul = mul_ref};
    g_tables[SM_ISA_AVX2] = g_tables[SM_ISA_SCALAR];
    if (best >= SM_ISA_AVX2) sm_blast_kernels_init_avx2(&g_tables[SM_ISA_AVX2]);
    g_tables[SM_ISA_AVX512] = g_tables[SM_ISA_AVX2];
    if (best >= SM_ISA_AVX512) sm_blast_kernels_init_avx512(&g_tables[SM_ISA_AVX512]);
}

const sm_blast_kernels *sm_blast_kernels_for(sm_isa isa) {
    pthread_once(&g_once, init_tables);
    if (isa > sm_isa_detect()) isa = sm_isa_detect();
    return &g_tables[isa];
}

const sm_blast_kernels *sm_blast_kernels_get(void) {
    return sm_blast_kernels_for(sm_isa_active());
}
