#include "kernels.h"

#include <pthread.h>

size_t sm_store_row_bytes(sm_store s, int64_t cols) {
    switch (s) {
    case SM_STORE_F32: return (size_t)cols * 4;
    case SM_STORE_F16:
    case SM_STORE_BF16: return (size_t)cols * 2;
    case SM_STORE_Q8: return (size_t)cols;
    case SM_STORE_Q4: return (size_t)(cols + 1) / 2;
    default: return 0;
    }
}

static sm_kernels g_tables[3];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_tables(void) {
    sm_isa best = sm_isa_detect();
    sm_kernels_init_ref(&g_tables[SM_ISA_SCALAR]);
    g_tables[SM_ISA_AVX2] = g_tables[SM_ISA_SCALAR];
    if (best >= SM_ISA_AVX2) sm_kernels_init_avx2(&g_tables[SM_ISA_AVX2]);
    g_tables[SM_ISA_AVX512] = g_tables[SM_ISA_AVX2];
    if (best >= SM_ISA_AVX512) sm_kernels_init_avx512(&g_tables[SM_ISA_AVX512]);
}

const sm_kernels *sm_kernels_for(sm_isa isa) {
    pthread_once(&g_once, init_tables);
    if (isa > sm_isa_detect()) isa = sm_isa_detect();
    return &g_tables[isa];
}

const sm_kernels *sm_kernels_get(void) {
    return sm_kernels_for(sm_isa_active());
}
