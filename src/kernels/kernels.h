// Kernels on stored factors, chosen once from cpuid (STRUCTMAT_ISA overrides).
//
// A factor is a (rows, cols) row-major matrix stored as one of sm_store. Quantized rows are cut
// into groups of SM_QGROUP consecutive columns (the last group may be shorter), each with one F16
// scale: q8 codes are int8 in [-127, 127], w = s * q; q4 codes are 4-bit two's-complement values
// in [-8, 7], w = s * q, packed two per byte, even column in the low nibble, each row starting on
// a fresh byte. Scales are (rows, ceil(cols / SM_QGROUP)) F16.
#ifndef SM_KERNELS_H
#define SM_KERNELS_H

#include "structmat.h"

#define SM_QGROUP 64

typedef enum sm_store {
    SM_STORE_F32,
    SM_STORE_F16,
    SM_STORE_BF16,
    SM_STORE_Q8,
    SM_STORE_Q4,
    SM_STORE_COUNT
} sm_store;

// Bytes of one stored row of codes (without scales).
size_t sm_store_row_bytes(sm_store s, int64_t cols);

// y (rows) = F (rows, cols) x (cols). data: rows * row_bytes; scales: (rows, ngroups) or NULL.
typedef void (*sm_gemv_fn)(int64_t rows, int64_t cols, const void *data, const uint16_t *scales,
                           const float *x, float *y);
// out (rows, cols) f32 = F decoded.
typedef void (*sm_decode_fn)(int64_t rows, int64_t cols, const void *data,
                             const uint16_t *scales, float *out);

typedef struct sm_kernels {
    sm_gemv_fn gemv[SM_STORE_COUNT];
    sm_decode_fn decode[SM_STORE_COUNT];
} sm_kernels;

// The table for the active ISA (sm_isa_active()).
const sm_kernels *sm_kernels_get(void);
// The table for a given level (tests compare every level with the scalar one).
const sm_kernels *sm_kernels_for(sm_isa isa);

// Per-ISA fillers; each starts from the scalar table and overrides what it has.
void sm_kernels_init_ref(sm_kernels *k);
void sm_kernels_init_avx2(sm_kernels *k);
void sm_kernels_init_avx512(sm_kernels *k);

#endif
