// Kernels of the sparse structure (src/ops/sparse.c), chosen by ISA like src/kernels.
//
// Bitmap rows: each row of W (rows, n) is a bit mask of ceil(n/8) bytes (bit c % 8 of byte c / 8
// set when column c is stored; bits past n are 0) and the stored values of the row in column
// order; the values of consecutive rows follow each other. CSR rows: indptr (rows + 1), column
// indices (u16 or i32, increasing within a row) and values.
#ifndef SM_SPARSE_KERNELS_H
#define SM_SPARSE_KERNELS_H

#include "structmat.h"

// Values arrays are allocated with this many readable floats past the last value (AVX2 loads 8
// values at a time before expanding them into place).
#define SM_SPARSE_PAD 16

typedef struct sm_sparse_kernels {
    // y (rows) = W x (n); vals: the first value of the first row.
    void (*bitmap_gemv)(int64_t rows, int64_t n, const uint8_t *mask, const float *vals,
                        const float *x, float *y);
    // x (n) += W^T y (rows)
    void (*bitmap_gemv_t)(int64_t rows, int64_t n, const uint8_t *mask, const float *vals,
                          const float *y, float *x);
    // out (rows, n) = W
    void (*bitmap_decode)(int64_t rows, int64_t n, const uint8_t *mask, const float *vals,
                          float *out);
    // y (rows) = W x for CSR rows with u16 / i32 column indices (indptr[0] may be non-zero:
    // indices and vals are indexed by indptr's values).
    void (*csr16_gemv)(int64_t rows, const int32_t *indptr, const uint16_t *idx, const float *vals,
                       const float *x, float *y);
    void (*csr32_gemv)(int64_t rows, const int32_t *indptr, const int32_t *idx, const float *vals,
                       const float *x, float *y);
    // y (n) += a x: the CSR batch paths scale rows of N (the plain loop stays scalar at -O2).
    void (*axpy)(int64_t n, float a, const float *x, float *y);
} sm_sparse_kernels;

const sm_sparse_kernels *sm_sparse_kernels_get(void);       // for sm_isa_active()
const sm_sparse_kernels *sm_sparse_kernels_for(sm_isa isa); // tests compare the levels
void sm_sparse_kernels_init_avx2(sm_sparse_kernels *k);
void sm_sparse_kernels_init_avx512(sm_sparse_kernels *k);

#endif
