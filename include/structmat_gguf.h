// structmat GGUF reader: llama.cpp's model files (GGUF v2 and v3) and ggml's block formats.
//
// A GGUF file is a header, metadata key/value pairs, tensor infos and the tensor data, which is
// memory-mapped (never copied on open). Every count, size and offset is checked against the file
// before it is used, so a hostile or truncated file gives SM_ERR_FORMAT naming the file, never a
// crash. Tensor shapes are reported in PyTorch order (outermost first): GGUF stores dimensions
// innermost first, so a Linear weight [out, in] has GGUF dims {in, out} and sm_gguf_tensor shape
// {out, in}; the bytes are the same rows. Quantized blocks run along the rows.
//
// Usage:
//
//     sm_gguf *g;
//     if (sm_gguf_open("model.gguf", &g) != SM_OK) { puts(sm_last_error()); return 1; }
//     const char *arch;
//     size_t len;
//     sm_gguf_get_str(g, "general.architecture", &arch, &len);   // NUL-terminated copy
//     const sm_gguf_tensor *t = sm_gguf_find(g, "blk.0.attn_q.weight");
//     float *w;                                                  // (shape[0], shape[1])
//     int64_t n;
//     sm_gguf_read_f32(g, t->name, &w, &n);                      // any type with a decoder
//     free(w);
//     sm_gguf_close(g);
//
// The model runtime (structmat_model.h) loads GGUF files of the llama and qwen2 architectures
// through this reader; their quantized matrices become "ggml" operators that keep the blocks.
#ifndef STRUCTMAT_GGUF_H
#define STRUCTMAT_GGUF_H

#include "structmat.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- ggml tensor types ------------------------------------------------------------------------

// ggml type ids as GGUF stores them (llama.cpp's ggml_type). Ids not listed are refused.
enum {
    SM_GGML_F32 = 0,
    SM_GGML_F16 = 1,
    SM_GGML_Q4_0 = 2,
    SM_GGML_Q4_1 = 3,
    SM_GGML_Q5_0 = 6,
    SM_GGML_Q5_1 = 7,
    SM_GGML_Q8_0 = 8,
    SM_GGML_Q8_1 = 9,
    SM_GGML_Q2_K = 10,
    SM_GGML_Q3_K = 11,
    SM_GGML_Q4_K = 12,
    SM_GGML_Q5_K = 13,
    SM_GGML_Q6_K = 14,
    SM_GGML_Q8_K = 15,
    SM_GGML_IQ4_NL = 20,
    SM_GGML_F64 = 28,
    SM_GGML_BF16 = 30,
    SM_GGML_TQ1_0 = 34,
    SM_GGML_TQ2_0 = 35,
    SM_GGML_MXFP4 = 39,
};

// Name ("Q4_K"), or NULL for an id that is not a ggml type this reader knows.
const char *sm_ggml_type_name(uint32_t type);
// The type whose name is s (any case: "q4_k"), or -1.
int32_t sm_ggml_type_from_name(const char *s);
// Elements per block and bytes per block (F32: 1 and 4); false for an unknown id.
bool sm_ggml_type_size(uint32_t type, int64_t *block, int64_t *bytes);
// Whether sm_ggml_dequantize decodes the type: F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, TQ1_0, TQ2_0, MXFP4, IQ4_NL.
bool sm_ggml_can_decode(uint32_t type);
// dst (n) = the n values in the blocks at src (n a multiple of the block size), computed in F32
// in the order of ggml's reference dequantizers (so the values are theirs, bit for bit).
sm_status sm_ggml_dequantize(uint32_t type, const void *src, int64_t n, float *dst);

// --- GGUF files -------------------------------------------------------------------------------

typedef struct sm_gguf sm_gguf;

// Metadata value types (GGUF's gguf_type).
typedef enum sm_gguf_vtype {
    SM_GGUF_U8 = 0,
    SM_GGUF_I8 = 1,
    SM_GGUF_U16 = 2,
    SM_GGUF_I16 = 3,
    SM_GGUF_U32 = 4,
    SM_GGUF_I32 = 5,
    SM_GGUF_F32 = 6,
    SM_GGUF_BOOL = 7,
    SM_GGUF_STRING = 8,
    SM_GGUF_ARRAY = 9,
    SM_GGUF_U64 = 10,
    SM_GGUF_I64 = 11,
    SM_GGUF_F64 = 12,
} sm_gguf_vtype;

typedef struct sm_gguf_tensor {
    const char *name;      // NUL-terminated copy
    uint32_t type;         // ggml type id
    const char *type_name; // "Q4_K"
    int ndim;              // 1 .. 4
    int64_t shape[4];      // PyTorch order: shape[ndim - 1] is GGUF's dims[0], the rows' length
    int64_t nelem;
    uint64_t offset;  // from the start of the data section
    const void *data; // into the mapping (aligned to general.alignment within the file)
    size_t nbytes;
} sm_gguf_tensor;

// Opens and checks the whole file (version 2 or 3, little-endian): header, every key/value
// (all types, nested arrays), tensor infos (known type, dims[0] a multiple of the block size,
// byte size without overflow, offset aligned and inside the file), duplicate keys or tensor
// names. SM_ERR_FORMAT naming the file for any fault, SM_ERR_IO when it cannot be read.
sm_status sm_gguf_open(const char *path, sm_gguf **out);
void sm_gguf_close(sm_gguf *g);
const char *sm_gguf_path(const sm_gguf *g);
uint32_t sm_gguf_version(const sm_gguf *g);
uint64_t sm_gguf_alignment(const sm_gguf *g);

int64_t sm_gguf_tensor_count(const sm_gguf *g);
const sm_gguf_tensor *sm_gguf_tensor_get(const sm_gguf *g, int64_t i);  // in the file's order
const sm_gguf_tensor *sm_gguf_find(const sm_gguf *g, const char *name); // NULL when absent
// The tensor's values as F32 (n of them), malloc'd into *out; SM_ERR_UNSUPPORTED for a type
// without a decoder, SM_ERR_NOT_FOUND for an absent name.
sm_status sm_gguf_read_f32(const sm_gguf *g, const char *name, float **out, int64_t *n);

// Metadata, in the file's order.
int64_t sm_gguf_kv_count(const sm_gguf *g);
const char *sm_gguf_kv_key(const sm_gguf *g, int64_t i);
sm_gguf_vtype sm_gguf_kv_type(const sm_gguf *g, int64_t i);
int64_t sm_gguf_kv_find(const sm_gguf *g, const char *key); // -1 when absent
// The value of pair i as text (strings quoted, arrays as "[type; count] first items...") into buf.
void sm_gguf_kv_format(const sm_gguf *g, int64_t i, char *buf, size_t cap);

// Typed getters: SM_ERR_NOT_FOUND when the key is absent, SM_ERR_FORMAT (naming the key and the
// file) when its value has another type. get_int takes any integer type (a u64 above INT64_MAX is
// refused), get_float F32 or F64, get_str a string (*s is a NUL-terminated copy owned by g; the
// value may hold NUL bytes, len counts them).
sm_status sm_gguf_get_int(const sm_gguf *g, const char *key, int64_t *v);
sm_status sm_gguf_get_float(const sm_gguf *g, const char *key, double *v);
sm_status sm_gguf_get_bool(const sm_gguf *g, const char *key, bool *v);
sm_status sm_gguf_get_str(const sm_gguf *g, const char *key, const char **s, size_t *len);
// An array's element type and count (SM_GGUF_ARRAY elements: nested arrays).
sm_status sm_gguf_get_array(const sm_gguf *g, const char *key, sm_gguf_vtype *elem, int64_t *count);
// Element i of an array: a string (pointer into the mapping, not NUL-terminated), an integer
// (any integer element type, or bool) or a float (F32 or F64). i must be inside the array.
sm_status sm_gguf_array_str(const sm_gguf *g, const char *key, int64_t i, const char **s,
                            size_t *len);
sm_status sm_gguf_array_int(const sm_gguf *g, const char *key, int64_t i, int64_t *v);
sm_status sm_gguf_array_float(const sm_gguf *g, const char *key, int64_t i, double *v);

#ifdef __cplusplus
}
#endif
#endif
