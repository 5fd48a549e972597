// avx512 kernels (compiled with per-file ISA flags). Placeholder: scalar table kept until the
// SIMD twins land.
#include "kernels.h"

void sm_kernels_init_avx512(sm_kernels *k) {
    (void)k;
}
