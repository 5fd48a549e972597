// Kernels of the BLAST structure (src/ops/blast.c), chosen by ISA like src/kernels.
#ifndef SM_BLAST_KERNELS_H
#define SM_BLAST_KERNELS_H

#include "structmat.h"

typedef struct sm_blast_kernels {
    // t (n) = s * z elementwise, or t += s * z when accumulate (the diagonal coupling of one
    // block: at -O2 without -mavx2 the compiler leaves this loop scalar).
    void (*mul)(int64_t n, const float *s, const float *z, float *t, bool accumulate);
} sm_blast_kernels;

const sm_blast_kernels *sm_blast_kernels_get(void);       // for sm_isa_active()
const sm_blast_kernels *sm_blast_kernels_for(sm_isa isa); // tests compare the levels
void sm_blast_kernels_init_avx2(sm_blast_kernels *k);
void sm_blast_kernels_init_avx512(sm_blast_kernels *k);

#endif
