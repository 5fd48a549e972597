// ggml:type=T -- a matrix kept in one of ggml's block formats (a GGUF file's quantized weight),
// applied without expanding it to F32: tiles of rows are decoded into the workspace and
// multiplied there (OpenBLAS), so memory holds the blocks plus one tile.
//
// T is a ggml type with a decoder, in lower case: q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k,
// q5_k, q6_k, tq1_0, tq2_0, mxfp4, iq4_nl. Each row of W (m, n) is n / block blocks, so n must be
// a multiple of the type's block size (32 or 256). Part: "blocks" U8 (m, n / block * bytes), the
// rows' blocks as GGUF stores them.
//
// Fitting quantizes W with ggml's reference quantizers, which exist for q8_0, q4_0, q4_1, q5_0 and
// q5_1 (the bytes are llama.cpp's); the K and other types are only loaded.
#include "../kernels/ggml_quants.h"
#include "op_impl.h"

#include <cblas.h>
#include <ctype.h>
#include <math.h>
#include <string.h>

#define TILE_FLOATS 65536 // a decoded tile: 256 KiB

typedef struct ggml_impl {
    uint32_t type;
    int64_t block, bytes; // elements and bytes per block
    size_t row_bytes;
    uint8_t *data; // (m, row_bytes)
} ggml_impl;

#define G(op) ((const ggml_impl *)(op)->impl)

// The quantized types this operator holds (dense ones are "dense:dtype=...").
static const uint32_t k_types[] = {SM_GGML_Q4_0,  SM_GGML_Q4_1,  SM_GGML_Q5_0,  SM_GGML_Q5_1,
                                   SM_GGML_Q8_0,  SM_GGML_Q2_K,  SM_GGML_Q3_K,  SM_GGML_Q4_K,
                                   SM_GGML_Q5_K,  SM_GGML_Q6_K,  SM_GGML_TQ1_0, SM_GGML_TQ2_0,
                                   SM_GGML_MXFP4, SM_GGML_IQ4_NL};

static sm_status parse_type(const sm_term *t, uint32_t *type) {
    const sm_item *it = sm_term_find(t, "type");
    if (!it || it->flag)
        return sm_fail(SM_ERR_SPEC, "ggml: type=T is required (q4_0, q8_0, q4_k, ...)");
    int32_t id = sm_ggml_type_from_name(it->value);
    for (size_t i = 0; id >= 0 && i < sizeof k_types / sizeof *k_types; i++)
        if (k_types[i] == (uint32_t)id) {
            *type = (uint32_t)id;
            return SM_OK;
        }
    return sm_fail(SM_ERR_SPEC,
                   "ggml: type=%s is not a block type (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, "
                   "q4_k, q5_k, q6_k, tq1_0, tq2_0, mxfp4, iq4_nl)",
                   it->value);
}

static sm_status set_spec(sm_op *op, uint32_t type) {
    char name[16];
    const char *s = sm_ggml_type_name(type);
    size_t i = 0;
    for (; s[i] && i + 1 < sizeof name; i++) name[i] = (char)tolower((unsigned char)s[i]);
    name[i] = 0;
    sm_canon c;
    sm_canon_init(&c, "ggml");
    sm_canon_add(&c, "type", "%s", name);
    return sm_op_set_spec(op, &c);
}

// A new impl for op (m, n) of type, with room for the blocks.
static sm_status new_impl(sm_op *op, uint32_t type, ggml_impl **out) {
    *out = NULL;
    ggml_impl *g = calloc(1, sizeof *g);
    if (!g) return sm_fail(SM_ERR_ALLOC, "out of memory");
    g->type = type;
    sm_ggml_type_size(type, &g->block, &g->bytes);
    if (op->n % g->block) {
        long long block = g->block;
        free(g);
        return sm_fail(SM_ERR_SHAPE,
                       "ggml:type=%s needs rows of whole %lld-element blocks; a %lldx%lld matrix "
                       "has rows of %lld",
                       sm_ggml_type_name(type), block, (long long)op->m, (long long)op->n,
                       (long long)op->n);
    }
    g->row_bytes = (size_t)(op->n / g->block * g->bytes);
    bool ok = true;
    size_t total = sm_mul_size((size_t)op->m, g->row_bytes, &ok);
    g->data = ok ? sm_alloc(total) : NULL;
    if (!g->data) {
        free(g);
        return sm_fail(SM_ERR_ALLOC, "out of memory for a %lldx%lld %s matrix", (long long)op->m,
                       (long long)op->n, sm_ggml_type_name(type));
    }
    *out = g;
    return SM_OK;
}

static void ggml_free(void *impl) {
    ggml_impl *g = impl;
    if (!g) return;
    sm_free(g->data);
    free(g);
}

static sm_status ggml_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    (void)o;
    uint32_t type;
    sm_status st = parse_type(t, &type);
    if (st != SM_OK) return st;
    if (!sm_ggml_can_encode(type))
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "ggml:type=%s is only loaded from GGUF files; fitting quantizes to q8_0, "
                       "q4_0, q4_1, q5_0 or q5_1",
                       sm_ggml_type_name(type));
    ggml_impl *g;
    if ((st = new_impl(op, type, &g)) != SM_OK) return st;
    for (int64_t r = 0; r < op->m; r++)
        sm_ggml_quantize_row(type, W + r * op->n, op->n, g->data + (size_t)r * g->row_bytes);
    op->impl = g;
    return set_spec(op, type);
}

// Offsets of a block's F16 scale fields (-1: none); a NaN or Inf there poisons every output.
static void scale_fields(uint32_t type, int *a, int *b) {
    *a = *b = -1;
    switch (type) {
    case SM_GGML_Q4_0:
    case SM_GGML_Q5_0:
    case SM_GGML_Q8_0:
    case SM_GGML_IQ4_NL:
        *a = 0;
        break;
    case SM_GGML_Q4_1:
    case SM_GGML_Q5_1:
    case SM_GGML_Q4_K:
    case SM_GGML_Q5_K:
        *a = 0, *b = 2;
        break;
    case SM_GGML_Q2_K:
        *a = 80, *b = 82;
        break;
    case SM_GGML_Q3_K:
        *a = 108;
        break;
    case SM_GGML_Q6_K:
        *a = 208;
        break;
    case SM_GGML_TQ1_0:
        *a = 52;
        break;
    case SM_GGML_TQ2_0:
        *a = 64;
        break;
    default:
        break;
    }
}

static sm_status check_blocks(const ggml_impl *g, int64_t m) {
    int fa, fb;
    scale_fields(g->type, &fa, &fb);
    int64_t nblocks = (int64_t)(g->row_bytes / (size_t)g->bytes) * m;
    for (int64_t i = 0; i < nblocks; i++) {
        const uint8_t *blk = g->data + (size_t)i * (size_t)g->bytes;
        for (int f = 0; f < 2; f++) {
            int at = f ? fb : fa;
            uint16_t h;
            if (at < 0) continue;
            memcpy(&h, blk + at, 2);
            if ((h & 0x7c00) == 0x7c00)
                return sm_fail(SM_ERR_NUMERIC,
                               "part \"blocks\": block %lld (row %lld) has a non-finite F16 scale "
                               "(0x%04x)",
                               (long long)i, (long long)(i / (nblocks / m)), h);
        }
        // MXFP4's shared exponent: past 252 the largest code (12 x 2^(e - 129)) overflows F32.
        if (g->type == SM_GGML_MXFP4 && blk[0] > 252)
            return sm_fail(SM_ERR_NUMERIC,
                           "part \"blocks\": block %lld has exponent %u, whose values overflow F32",
                           (long long)i, blk[0]);
    }
    return SM_OK;
}

static sm_status ggml_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    uint32_t type;
    sm_status st = parse_type(t, &type);
    if (st != SM_OK) return st;
    ggml_impl *g;
    if ((st = new_impl(op, type, &g)) != SM_OK) return st;
    const sm_part *p = sm_parts_find(parts, nparts, "blocks");
    size_t want = (size_t)op->m * g->row_bytes;
    if (!p)
        st = SM_ERR_FORMAT;
    else if (p->dtype != SM_DTYPE_U8 || p->ndim != 2 || p->shape[0] != op->m ||
             p->shape[1] != (int64_t)g->row_bytes || p->nbytes != want)
        st = sm_fail(SM_ERR_FORMAT,
                     "part \"blocks\" is %s with %d dims [%lld, %lld] (%zu bytes), expected U8 "
                     "[%lld, %zu]",
                     sm_dtype_name(p->dtype), p->ndim, (long long)p->shape[0],
                     (long long)(p->ndim > 1 ? p->shape[1] : 0), p->nbytes, (long long)op->m,
                     g->row_bytes);
    if (st == SM_OK) {
        memcpy(g->data, p->data, want);
        st = check_blocks(g, op->m);
    }
    if (st != SM_OK) {
        ggml_free(g);
        return st;
    }
    op->impl = g;
    return SM_OK;
}

// Rows of W decoded per tile: the tile (rows, n) fits TILE_FLOATS, at least one row.
static int64_t tile_rows(const sm_op *op) {
    int64_t r = TILE_FLOATS / op->n;
    if (r < 1) r = 1;
    return r < op->m ? r : op->m;
}

static void decode_rows(const ggml_impl *g, int64_t r0, int64_t rows, int64_t n, float *out) {
    sm_ggml_decode_blocks(g->type, g->data + (size_t)r0 * g->row_bytes, rows * (n / g->block), out);
}

static void ggml_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const ggml_impl *g = G(op);
    int64_t T = tile_rows(op), n = op->n, m = op->m;
    for (int64_t r0 = 0; r0 < m; r0 += T) {
        int64_t rows = m - r0 < T ? m - r0 : T;
        decode_rows(g, r0, rows, n, work); // (rows, n)
        if (N == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)n, 1.0f, work, (int)n, X, 1,
                        0.0f, Y + r0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)rows, (int)n, 1.0f, X,
                        (int)n, work, (int)n, 0.0f, Y + r0, (int)m);
    }
}

static void ggml_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const ggml_impl *g = G(op);
    int64_t T = tile_rows(op), n = op->n, m = op->m;
    for (int64_t r0 = 0; r0 < m; r0 += T) {
        int64_t rows = m - r0 < T ? m - r0 : T;
        decode_rows(g, r0, rows, n, work);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)n, (int)rows, 1.0f,
                    Y + r0, (int)m, work, (int)n, r0 ? 1.0f : 0.0f, X, (int)n);
    }
}

static size_t ggml_workspace(const sm_op *op, int64_t N) {
    (void)N;
    return (size_t)(tile_rows(op) * op->n);
}

static sm_status ggml_to_dense(const sm_op *op, float *W) {
    decode_rows(G(op), 0, op->m, op->n, W);
    return SM_OK;
}

static int64_t ggml_nparams(const sm_op *op) {
    return op->m * op->n;
}

static int64_t ggml_nbytes(const sm_op *op) {
    return op->m * (int64_t)G(op)->row_bytes;
}

static int ggml_parts(const sm_op *op, sm_part *out, int cap) {
    if (out && cap >= 1)
        out[0] = (sm_part){.name = "blocks",
                           .dtype = SM_DTYPE_U8,
                           .ndim = 2,
                           .shape = {op->m, (int64_t)G(op)->row_bytes},
                           .data = G(op)->data,
                           .nbytes = (size_t)op->m * G(op)->row_bytes};
    return 1;
}

const sm_op_vtbl sm_vtbl_ggml = {
    .name = "ggml",
    .keys = "type",
    .help = "  type=        ggml block type of a GGUF weight: q4_0, q4_1, q5_0, q5_1, q8_0, q2_k,\n"
            "               q3_k, q4_k, q5_k, q6_k, tq1_0, tq2_0, mxfp4, iq4_nl (fit: q8_0, q4_0,\n"
            "               q4_1, q5_0, q5_1 with llama.cpp's reference quantizers)",
    .fit = ggml_fit,
    .load = ggml_load,
    .apply = ggml_apply,
    .apply_t = ggml_apply_t,
    .workspace = ggml_workspace,
    .to_dense = ggml_to_dense,
    .nparams = ggml_nparams,
    .nbytes = ggml_nbytes,
    .macs = ggml_nparams,
    .parts = ggml_parts,
    .free_impl = ggml_free,
};
