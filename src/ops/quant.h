// Shared pieces of the low-bit quantizers: the packed group-quantized matrix (rtn, gptq), its
// grid, the rtn/gptq operator state with its optional Hadamard rotation, the GPTQ core, and
// helpers of the sign-matrix structures (onebit, bitstack).
#ifndef SM_QUANT_H
#define SM_QUANT_H

#include "../kernels/qkernels.h"
#include "../linalg/hadamard.h"
#include "op_impl.h"

#include <math.h>

// Bytes every packed buffer is over-allocated by (zeroed), so that kernels may read a whole
// vector past the last code of a matrix.
#define SM_QPAD 64

// --- the grid of one group -------------------------------------------------------------------

// w = s (q - z), q in [0, 2^bits - 1]. Asymmetric: the range [min(w, 0), max(w, 0)] is cut into
// 2^bits - 1 steps, z = round(-min / s) (GPTQ's quantizer); symmetric: s = 2 max|w| /
// (2^bits - 1) and z = 2^(bits-1). The scale is rounded to F16 before the codes are chosen, so
// codes and stored scale agree; an all-zero group gets the range [-1, 1].
typedef struct sm_qgrid {
    float s;    // the F16 scale as a float
    uint16_t h; // the F16 scale
    int z, maxq;
} sm_qgrid;

void sm_qgrid_fit(const float *w, int64_t len, int bits, bool sym, sm_qgrid *g);
static inline int sm_qgrid_code(const sm_qgrid *g, float w) {
    float q = nearbyintf(w / g->s) + (float)g->z;
    return q < 0 ? 0 : q > (float)g->maxq ? g->maxq : (int)q;
}
static inline float sm_qgrid_value(const sm_qgrid *g, int q) {
    return g->s * (float)(q - g->z);
}

// --- the packed matrix ---------------------------------------------------------------------------

typedef struct sm_qmat {
    int64_t rows, cols, group;
    int bits;
    bool sym;
    size_t rb, zb;     // bytes of a row of codes / zero points
    uint8_t *codes;    // (rows, rb)
    uint16_t *scales;  // (rows, cols / group) F16
    uint8_t *zeros;    // (rows, zb), NULL when symmetric
} sm_qmat;

sm_status sm_qmat_alloc(sm_qmat *q, int64_t rows, int64_t cols, int bits, int64_t group,
                        bool sym);
void sm_qmat_free(sm_qmat *q);
sm_qview sm_qmat_view(const sm_qmat *q);
// Writes code v of column c into a zeroed bit stream.
static inline void sm_qput(uint8_t *row, int64_t c, int bits, int v) {
    int64_t bit = c * bits;
    uint8_t *p = row + (bit >> 3);
    unsigned x = (unsigned)v << (bit & 7);
    p[0] |= (uint8_t)x;
    if ((bit & 7) + bits > 8) p[1] |= (uint8_t)(x >> 8);
}
// Stores the grid of group g of row r.
void sm_qmat_set_grid(sm_qmat *q, int64_t r, int64_t g, const sm_qgrid *grid);
sm_qgrid sm_qmat_grid(const sm_qmat *q, int64_t r, int64_t g);
// Round to nearest of W (rows, cols) onto per-group grids of its own values.
// Errors name `what`.
sm_status sm_qmat_quantize(sm_qmat *q, const float *W, const char *what);
// SM_ERR_NUMERIC when a scale is Inf or NaN (loaded files, overflowing fits).
sm_status sm_qmat_check_scales(const sm_qmat *q, const char *what);
int64_t sm_qmat_nbytes(const sm_qmat *q);

// --- spec items shared by rtn and gptq ----------------------------------------------------------

typedef struct sm_qspec {
    int bits;
    int64_t group;
    bool sym, rotate;
    int64_t keep; // keep-outliers=N: weights kept in full precision (0: none)
} sm_qspec;

// bits=B (2, 3, 4, 8; required), group=G (divides n; default 64), sym | asym (default asym),
// rotate=none|hadamard, keep-outliers=N (0 <= N <= m n, m n < 2^31 when N > 0), for an (m, n)
// matrix.
sm_status sm_qspec_from_term(const sm_term *t, int64_t m, int64_t n, sm_qspec *out);
// Errors for a key given a value when it is a flag (sym, asym, actorder, aware).
sm_status sm_term_check_flag(const sm_term *t, const char *key);

// --- the rtn / gptq operator ---------------------------------------------------------------------

// --- outliers kept in full precision (keep-outliers=N) ----------------------------------------

// A sparse term S added to a quantized matrix: the N largest-|w| weights of W keep their value
// (F32) and are excluded from quantization (outliers.c). S holds corr = val - (the quantized
// part's value at the same place), so Ŵ = quantized part + S has exactly val there.
typedef struct sm_qout {
    int64_t count;
    int32_t *idx; // (count) flat indices r n + c, ascending
    float *val;   // (count) the kept weights (stored)
    float *corr;  // (count) val - the quantized part there (derived at fit and load, not stored)
} sm_qout;

// keep-outliers=N of term t for an (m, n) matrix (0 when absent): SM_ERR_SPEC for a negative or
// malformed N, N > m n, or N > 0 with m n >= 2^31.
sm_status sm_qout_count(const sm_term *t, int64_t m, int64_t n, int64_t *count);
sm_status sm_qout_alloc(sm_qout *o, int64_t count);
void sm_qout_free(sm_qout *o);
// The count largest |W| of W (m, n) (ties: the lower flat index), idx ascending, val = W there.
sm_status sm_qout_select(const float *W, int64_t m, int64_t n, int64_t count, sm_qout *o);
// corr = val - D[idx] for D (m, n) the quantized part alone.
void sm_qout_set_corr(sm_qout *o, const float *D);
// Y (N, m) += X (N, n) S^T.
void sm_qout_apply(const sm_qout *o, int64_t m, int64_t n, int64_t N, const float *X, float *Y);
// X (N, n) += Y (N, m) S.
void sm_qout_apply_t(const sm_qout *o, int64_t m, int64_t n, int64_t N, const float *Y,
                     float *X);
// W[idx] = val: the kept weights exactly.
void sm_qout_place(const sm_qout *o, float *W);
int64_t sm_qout_nbytes(const sm_qout *o); // 4 + 4 bytes per kept weight
// Parts "outlier_index" I32 (count) and "outlier_value" F32 (count); none when count is 0.
int sm_qout_parts(const sm_qout *o, sm_part *out);
// Loads count outliers of an (m, n) matrix from parts, checking that the indices are in range
// and strictly ascending and the values finite.
sm_status sm_qout_load(sm_qout *o, int64_t count, int64_t m, int64_t n, const sm_part *parts,
                       int nparts);

// Ŵ = T_m^T deq(Q) T_n + S with the rotations of hadamard.h (identity when not rotated) and S
// the kept outliers (none when out.count is 0).
typedef struct sm_qop {
    sm_qmat q;
    bool rot;
    sm_rht rin, rout; // (n) input side, (m) output side
    sm_qout out;
} sm_qop;

// A new state for spec qs on an (m, n) matrix: packed storage allocated and, when rotated,
// rotations with signs drawn from seed.
sm_status sm_qop_new(const sm_qspec *qs, int64_t m, int64_t n, uint64_t seed, sm_qop **out);
// W (m, n) <- T_m W T_n^T in place (identity when not rotated).
sm_status sm_qop_rotate_weights(const sm_qop *o, float *W, int64_t m, int64_t n);
// Canonical items bits, group[, sym] of qs (the caller adds its own, then sm_qspec_canon_rot,
// which adds rotate= and keep-outliers= when they are not the defaults).
void sm_qspec_canon(const sm_qspec *qs, sm_canon *c);
void sm_qspec_canon_rot(const sm_qspec *qs, sm_canon *c);
// The vtable entries rtn and gptq share (everything but fit).
sm_status sm_qop_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts);
void sm_qop_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work);
void sm_qop_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work);
size_t sm_qop_workspace(const sm_op *op, int64_t N);
sm_status sm_qop_to_dense(const sm_op *op, float *W);
int64_t sm_qop_nparams(const sm_op *op);
int64_t sm_qop_nbytes(const sm_op *op);
int64_t sm_qop_macs(const sm_op *op);
int sm_qop_parts(const sm_op *op, sm_part *out, int cap);
void sm_qop_free(void *impl);
// Sets o->out.corr from the quantized part of o (decoded and unrotated: one (m, n) scratch).
sm_status sm_qop_outliers_finish(sm_qop *o, int64_t m, int64_t n);

// --- GPTQ ------------------------------------------------------------------------------------------

typedef struct sm_gptq_info {
    double percdamp; // relative damping that succeeded (the requested one times 10^retries)
    double lambda;   // the absolute value added to the Gram's diagonal: percdamp mean(diag H)
    int retries;     // Cholesky failures before it succeeded
} sm_gptq_info;

#define SM_GPTQ_RETRIES 4 // damping is raised 10x up to this many times
#define SM_GPTQ_BLOCK 128 // lazy-batch block (a multiple of the group when groups are smaller)

// GPTQ of W (m, n) with input Gram H (n, n) (both already rotated if they are to be) into q
// (allocated for qs). With actorder the columns go in order of decreasing diag(H) and each
// group's grid is fixed up front from the original weights (GPTQ's static groups), so groups
// stay contiguous in storage; without it a group's grid is chosen when its first column comes
// up, from the weights as updated so far. Columns whose diag(H) is 0 (inputs that never fire)
// are zeroed, as GPTQ does. Optional outputs for tests: E (m, n) the scaled errors in processing
// order (W0 - Q = E U there, U = chol(inv(H + lambda I)) upper), perm (n) the processing order.
sm_status sm_gptq_quantize(const float *W, int64_t m, int64_t n, const double *H,
                           const sm_qspec *qs, double percdamp, bool actorder, sm_qmat *q,
                           float *E, int64_t *perm, sm_gptq_info *info);
// The same with weights fixed in full precision: keep (m, n) in column order (nonzero = kept;
// NULL: none). A kept weight is treated as exact: it is left out of its group's grid, its
// error is 0 (nothing propagates from it; E is 0 there) and its final value, the weight as
// updated by the errors of the columns before it, is written to kept (m, n) at its place (other
// entries of kept are left alone); its code is that of 0. W0 - Q' = E U still holds, Q' the
// dequantized codes with the kept values in their places.
sm_status sm_gptq_quantize_keep(const float *W, int64_t m, int64_t n, const double *H,
                                const sm_qspec *qs, double percdamp, bool actorder,
                                const uint8_t *keep, float *kept, sm_qmat *q, float *E,
                                int64_t *perm, sm_gptq_info *info);

// Copies part `name` into dst after checking its dtype, shape (ndim 1: [d0]; 2: [d0, d1]) and
// byte size (SM_ERR_FORMAT naming what was expected). dst NULL: only checks.
sm_status sm_part_take(const sm_part *parts, int nparts, const char *name, sm_dtype dtype,
                       int ndim, int64_t d0, int64_t d1, void *dst, size_t nbytes);
// SM_ERR_NUMERIC naming the part when an F16 value is Inf or NaN.
sm_status sm_f16_check(const uint16_t *h, int64_t n, const char *part);

// --- sign matrices -----------------------------------------------------------------------------------

static inline size_t sm_sign_row_bytes(int64_t cols) {
    return (size_t)(cols + 7) / 8;
}
// bits (rows, sm_sign_row_bytes(cols)) zeroed + padded, set where W >= 0 (sign(0) = +1).
uint8_t *sm_sign_pack(const float *W, int64_t rows, int64_t cols);
// Copies an F16 vector into floats (F16 factors of onebit / bitstack).
void sm_f16_decode(const uint16_t *h, int64_t n, float *out);
// F16 copies of n floats; SM_ERR_NUMERIC naming what when one exceeds the F16 range.
sm_status sm_f16_encode(const float *x, int64_t n, uint16_t *out, const char *what);

// A bitstack operator with only its first `levels` levels (a valid, smaller model).
sm_status sm_bitstack_prefix(const sm_op *op, int64_t levels, sm_op **out);

#endif
