// ggml's block formats (llama.cpp's ggml-common.h), decoded and (for the legacy types) encoded.
//
// Every block is a packed little-endian struct; fp16 fields are IEEE half floats. The structs
// below document the layouts and carry a static_assert on their size; decoders read a block by
// copying it into such a struct, so the source may sit at any address.
#ifndef SM_GGML_QUANTS_H
#define SM_GGML_QUANTS_H

#include "structmat_gguf.h"

#include <assert.h>
#include <stdint.h>

#define SM_QK 32    // elements per block of the legacy types, IQ4_NL and MXFP4
#define SM_QK_K 256 // elements per super-block of the K and ternary types

// x = d (q - 8); element j < 16: low nibble of qs[j], element j + 16: its high nibble.
typedef struct sm_block_q4_0 {
    uint16_t d;
    uint8_t qs[SM_QK / 2];
} sm_block_q4_0;
static_assert(sizeof(sm_block_q4_0) == 18, "Q4_0 block");

// x = d q + m, nibbles as Q4_0.
typedef struct sm_block_q4_1 {
    uint16_t d, m;
    uint8_t qs[SM_QK / 2];
} sm_block_q4_1;
static_assert(sizeof(sm_block_q4_1) == 20, "Q4_1 block");

// x = d (q - 16), q = nibble | bit j of qh (little-endian u32) << 4.
typedef struct sm_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[SM_QK / 2];
} sm_block_q5_0;
static_assert(sizeof(sm_block_q5_0) == 22, "Q5_0 block");

// x = d q + m, q as Q5_0.
typedef struct sm_block_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[SM_QK / 2];
} sm_block_q5_1;
static_assert(sizeof(sm_block_q5_1) == 24, "Q5_1 block");

// x = d q.
typedef struct sm_block_q8_0 {
    uint16_t d;
    int8_t qs[SM_QK];
} sm_block_q8_0;
static_assert(sizeof(sm_block_q8_0) == 34, "Q8_0 block");

// 16 groups of 16: x = d (scales[g] & 15) q - dmin (scales[g] >> 4), q 2-bit.
typedef struct sm_block_q2_K {
    uint8_t scales[SM_QK_K / 16];
    uint8_t qs[SM_QK_K / 4];
    uint16_t d, dmin;
} sm_block_q2_K;
static_assert(sizeof(sm_block_q2_K) == 84, "Q2_K block");

// 16 groups of 16: x = d (s - 32) (q - 4 [hmask bit clear]), 6-bit scales s packed in 12 bytes.
typedef struct sm_block_q3_K {
    uint8_t hmask[SM_QK_K / 8];
    uint8_t qs[SM_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} sm_block_q3_K;
static_assert(sizeof(sm_block_q3_K) == 110, "Q3_K block");

// 8 groups of 32: x = d sc q - dmin m, 6-bit sc and m packed in 12 bytes, q 4-bit.
typedef struct sm_block_q4_K {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[SM_QK_K / 2];
} sm_block_q4_K;
static_assert(sizeof(sm_block_q4_K) == 144, "Q4_K block");

// As Q4_K with a fifth bit per element in qh.
typedef struct sm_block_q5_K {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[SM_QK_K / 8];
    uint8_t qs[SM_QK_K / 2];
} sm_block_q5_K;
static_assert(sizeof(sm_block_q5_K) == 176, "Q5_K block");

// 16 groups of 16: x = d scales[g] (q - 32), q 6-bit (4 low bits in ql, 2 high in qh).
typedef struct sm_block_q6_K {
    uint8_t ql[SM_QK_K / 2];
    uint8_t qh[SM_QK_K / 4];
    int8_t scales[SM_QK_K / 16];
    uint16_t d;
} sm_block_q6_K;
static_assert(sizeof(sm_block_q6_K) == 210, "Q6_K block");

// Ternary: x = d t, t in {-1, 0, 1}, five trits per byte (qs) and four per byte (qh) in base 3,
// stored as ceil(v 256 / 243).
typedef struct sm_block_tq1_0 {
    uint8_t qs[(SM_QK_K - 4 * SM_QK_K / 64) / 5];
    uint8_t qh[SM_QK_K / 64];
    uint16_t d;
} sm_block_tq1_0;
static_assert(sizeof(sm_block_tq1_0) == 54, "TQ1_0 block");

// Ternary: x = d (q - 1), q 2-bit.
typedef struct sm_block_tq2_0 {
    uint8_t qs[SM_QK_K / 4];
    uint16_t d;
} sm_block_tq2_0;
static_assert(sizeof(sm_block_tq2_0) == 66, "TQ2_0 block");

// OCP microscaling FP4: x = 2^(e - 128) v, v an E2M1 value (doubled in the table), nibbles as Q4_0.
typedef struct sm_block_mxfp4 {
    uint8_t e;
    uint8_t qs[SM_QK / 2];
} sm_block_mxfp4;
static_assert(sizeof(sm_block_mxfp4) == 17, "MXFP4 block");

// Non-linear 4-bit: x = d table[nibble], nibbles as Q4_0.
typedef struct sm_block_iq4_nl {
    uint16_t d;
    uint8_t qs[SM_QK / 2];
} sm_block_iq4_nl;
static_assert(sizeof(sm_block_iq4_nl) == 18, "IQ4_NL block");

// Decodes nblocks blocks of type at src into dst (nblocks * block elements). The type must
// have a decoder (sm_ggml_can_decode).
void sm_ggml_decode_blocks(uint32_t type, const void *src, int64_t nblocks, float *dst);

// Encodes x (n, a multiple of 32) into blocks of Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 with ggml's
// reference quantizers (quantize_row_*_ref), so the bytes equal llama.cpp's and the gguf
// package's. Returns false for any other type.
bool sm_ggml_quantize_row(uint32_t type, const float *x, int64_t n, void *dst);
bool sm_ggml_can_encode(uint32_t type);

#endif
