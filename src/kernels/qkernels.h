// Kernels of the low-bit quantizers (rtn, gptq, onebit, bitstack), chosen once from cpuid like
// the factor kernels of kernels.h (STRUCTMAT_ISA overrides): products with B-bit group-quantized
// matrices, products with sign (1-bit) matrices, and the fast Walsh-Hadamard transform.
//
// B-bit codes (B in 2, 3, 4, 8): each row is one little-endian bit stream, the code of column c
// in bits [c B, c B + B), a row starting on a fresh byte (ceil(cols B / 8) bytes). Columns are cut
// into groups of `group` consecutive columns (group divides cols); group g of row r has an F16
// scale s and an integer zero point z, and w = s (q - z). Zero points are B-bit codes packed the
// same way, one stream of cols / group codes per row; symmetric matrices store none and use
// z = 2^(B-1).
//
// Sign matrices: bit c of a row (byte c / 8, bit c % 8, rows on fresh bytes) is 1 for +1 and 0
// for -1 (sign(0) = +1, DESIGN.md).
//
// The vector kernels may read up to 16 bytes past the last code of a matrix (a whole vector of
// codes): buffers of codes and zero points must be readable that far (sm_qmat over-allocates
// them by SM_QPAD = 64 zeroed bytes). Sign matrices are read only within their rows.
#ifndef SM_QKERNELS_H
#define SM_QKERNELS_H

#include "structmat.h"

#include <stddef.h>

// A read-only view of a group-quantized matrix.
typedef struct sm_qview {
    int64_t rows, cols;
    int bits;               // 2, 3, 4 or 8
    int64_t group;          // divides cols
    size_t rb, zb;          // bytes of a row of codes / of zero points
    const uint8_t *codes;   // (rows, rb)
    const uint16_t *scales; // (rows, cols / group) F16
    const uint8_t *zeros;   // (rows, zb), or NULL: symmetric, z = 2^(bits - 1)
} sm_qview;

// Bytes of a stream of count codes of `bits` bits.
static inline size_t sm_qbytes(int64_t count, int bits) {
    return (size_t)((count * bits + 7) / 8);
}

// Code c of a bit stream (the scalar definition every kernel is tested against).
static inline int sm_qcode_at(const uint8_t *row, int64_t c, int bits) {
    int64_t bit = c * bits;
    const uint8_t *p = row + (bit >> 3);
    unsigned v = p[0];
    if ((bit & 7) + bits > 8) v |= (unsigned)p[1] << 8;
    return (int)((v >> (bit & 7)) & ((1u << bits) - 1));
}

// Floats of scratch qgemv needs for a matrix with `cols` columns and groups of `group`.
size_t sm_qgemv_workspace(int64_t cols, int64_t group);

typedef struct sm_qkernels {
    // y (rows) = deq(Q) x (cols); work: sm_qgemv_workspace floats.
    void (*qgemv)(const sm_qview *q, const float *x, float *y, float *work);
    // out (r1 - r0, cols) = rows [r0, r1) of deq(Q), each s * (q - z) rounded once.
    void (*qdecode)(const sm_qview *q, int64_t r0, int64_t r1, float *out);
    // Y (nv, rows) = X (nv, cols) S^T for the sign matrix S (rows, cols) with rb bytes a row.
    void (*signmm)(int64_t rows, int64_t cols, const uint8_t *bits, size_t rb, int64_t nv,
                   const float *X, float *Y);
    // X (nv, cols) = Y (nv, rows) S: the transposed product.
    void (*signmm_t)(int64_t rows, int64_t cols, const uint8_t *bits, size_t rb, int64_t nv,
                     const float *Y, float *X);
    // In place, x (p2, b) row-major <- H_p2 x, H the unnormalised Sylvester-Hadamard matrix of
    // order p2 (a power of two) acting on rows of b consecutive floats.
    void (*fwht)(float *x, int64_t p2, int64_t b);
} sm_qkernels;

// Rows [r0, r1) of qgemv by the scalar definition: the SIMD kernels' path for groups that are not
// a multiple of 32 columns.
void sm_qgemv_ref_rows(const sm_qview *q, const float *x, float *y, int64_t r0, int64_t r1);
void sm_qdecode_ref_rows(const sm_qview *q, int64_t r0, int64_t r1, float *out);

const sm_qkernels *sm_qkernels_get(void);          // for sm_isa_active()
const sm_qkernels *sm_qkernels_for(sm_isa isa);    // a given level (falls back to what the CPU has)

void sm_qkernels_init_ref(sm_qkernels *k);
void sm_qkernels_init_avx2(sm_qkernels *k);
void sm_qkernels_init_avx512(sm_qkernels *k);

#endif
