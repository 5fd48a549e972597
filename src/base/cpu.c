#include "base.h"

#include <cblas.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int g_active = -1;

sm_isa sm_isa_detect(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return SM_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SM_ISA_AVX2;
#endif
    return SM_ISA_SCALAR;
}

const char *sm_isa_name(sm_isa isa) {
    switch (isa) {
    case SM_ISA_SCALAR: return "scalar";
    case SM_ISA_AVX2: return "avx2";
    case SM_ISA_AVX512: return "avx512";
    }
    return "?";
}

sm_isa sm_isa_active(void) {
    if (g_active < 0) {
        sm_isa best = sm_isa_detect();
        g_active = (int)best;
        const char *e = getenv("STRUCTMAT_ISA");
        if (e && *e) {
            for (int i = 0; i <= (int)best; i++)
                if (strcmp(e, sm_isa_name((sm_isa)i)) == 0) g_active = i;
        }
    }
    return (sm_isa)g_active;
}

sm_status sm_isa_set(sm_isa isa) {
    if ((int)isa < 0 || isa > sm_isa_detect())
        return sm_fail(SM_ERR_UNSUPPORTED, "this CPU does not support %s", sm_isa_name(isa));
    g_active = (int)isa;
    return SM_OK;
}

void sm_set_threads(int n) {
#ifdef _OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
#else
    if (n <= 0) n = 1;
#endif
    openblas_set_num_threads(n);
}
