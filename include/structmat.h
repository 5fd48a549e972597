// structmat: structured, low-rank and low-bit weight matrices for neural networks.
//
// Every linear layer is an operator y = W x whose storage and arithmetic are chosen per matrix.
// W is (out, in) row-major, as PyTorch stores nn.Linear weights; a batch X is (N, in) and
// sm_op_apply computes Y (N, out) = X W^T.
//
// Usage:
//
//     float *W = ...;                               // (m, n) row-major
//     sm_op *op = NULL;
//     if (sm_op_fit(W, m, n, "lowrank:ratio=0.25", NULL, &op) != SM_OK) {
//         fprintf(stderr, "fit: %s\n", sm_last_error());
//         return 1;
//     }
//     printf("%s: %lld params\n", sm_op_spec(op), (long long)sm_op_nparams(op));
//     float *work = malloc(sm_op_workspace(op, N) * sizeof(float));
//     sm_op_apply(op, N, X, Y, work);               // X (N, n) -> Y (N, m)
//     free(work);
//     sm_op_free(op);
//
// Conventions: dimensions are int64_t; every pointer argument has its shape written next to it;
// recoverable failures return an sm_status and leave a message in sm_last_error(); misuse
// (NULL handles, impossible sizes in internal calls) trips SM_ASSERT. The library never exits.
#ifndef STRUCTMAT_H
#define STRUCTMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SM_VERSION "0.1.0"
#define SM_FORMAT_VERSION 1 // structmat.format_version in compressed checkpoints

// --- status and errors ------------------------------------------------------------------------

typedef enum sm_status {
    SM_OK = 0,
    SM_ERR_ALLOC = -1,       // out of memory
    SM_ERR_ARG = -2,         // invalid argument
    SM_ERR_SHAPE = -3,       // shapes do not fit together
    SM_ERR_SPEC = -4,        // malformed or impossible spec string
    SM_ERR_IO = -5,          // a system call on a file failed
    SM_ERR_FORMAT = -6,      // a file's content is malformed
    SM_ERR_UNSUPPORTED = -7, // valid but not handled (e.g. a dtype we do not read)
    SM_ERR_NUMERIC = -8,     // NaN/Inf, or a numerical routine failed to converge
    SM_ERR_NOT_FOUND = -9,   // a named tensor or key is absent
    SM_ERR_EXISTS = -10,     // output exists and overwriting was not asked for
} sm_status;

const char *sm_status_str(sm_status s);
// The message of the last failure on this thread ("" when none). Valid until the next call.
const char *sm_last_error(void);

// --- machine ----------------------------------------------------------------------------------

typedef enum sm_isa { SM_ISA_SCALAR = 0, SM_ISA_AVX2 = 1, SM_ISA_AVX512 = 2 } sm_isa;

sm_isa sm_isa_detect(void);          // best level this CPU supports
sm_isa sm_isa_active(void);          // level in use (STRUCTMAT_ISA overrides the detected one)
sm_status sm_isa_set(sm_isa isa);    // SM_ERR_UNSUPPORTED when the CPU lacks it
const char *sm_isa_name(sm_isa isa); // "scalar", "avx2", "avx512"
void sm_set_threads(int n);          // OpenMP and OpenBLAS threads (n <= 0: all cores)

// --- memory budget ------------------------------------------------------------------------------

// A process-wide bound on the bytes the library's own allocations (sm_alloc: weights it builds,
// activations, KV caches, fit workspaces) hold at once; memory-mapped checkpoint data does not
// count. An allocation that would take the live total past it fails with SM_ERR_ALLOC and the
// message "... would exceed --max-memory LIMIT (IN_USE in use)". 0 removes the bound.
void sm_set_alloc_limit(size_t bytes);
size_t sm_alloc_limit(void);  // 0: none
size_t sm_alloc_in_use(void); // live bytes allocated through the library's allocator
// "500MB", "2GB", "1.5GiB", "800kB", "123456" (bytes; kB/MB/GB/TB are powers of 10, KiB/MiB/GiB/
// TiB of 2) -> *bytes; SM_ERR_ARG on anything else, zero included.
sm_status sm_parse_bytes(const char *text, size_t *bytes);

// --- element types ------------------------------------------------------------------------------

// Tensor element types as files store them (safetensors names in sm_dtype_name).
typedef enum sm_dtype {
    SM_DTYPE_F32,
    SM_DTYPE_F16,
    SM_DTYPE_BF16,
    SM_DTYPE_F64,
    SM_DTYPE_I8,
    SM_DTYPE_U8,
    SM_DTYPE_I16,
    SM_DTYPE_U16,
    SM_DTYPE_I32,
    SM_DTYPE_U32,
    SM_DTYPE_I64,
    SM_DTYPE_U64,
    SM_DTYPE_BOOL,
    SM_DTYPE_F8_E4M3,
    SM_DTYPE_F8_E5M2,
    SM_DTYPE_COUNT,
    SM_DTYPE_UNKNOWN = -1,
} sm_dtype;

const char *sm_dtype_name(sm_dtype t);      // "F32", "BF16", ...
sm_dtype sm_dtype_from_name(const char *s); // SM_DTYPE_UNKNOWN when unknown
size_t sm_dtype_size(sm_dtype t);           // bytes per element

uint16_t sm_f32_to_f16(float x); // round to nearest even; overflow to Inf; NaN kept
float sm_f16_to_f32(uint16_t h);
uint16_t sm_f32_to_bf16(float x); // round to nearest even; NaN kept
float sm_bf16_to_f32(uint16_t h);
// Converts n elements of type t (F32, F16, BF16, F64) to F32. SM_ERR_UNSUPPORTED otherwise.
sm_status sm_convert_to_f32(sm_dtype t, const void *src, int64_t n, float *dst);

// --- spec strings ---------------------------------------------------------------------------------

// A parsed spec (grammar in docs/specs.md): "lowrank:rank=64", "monarch:blocks=4", "a+b".
typedef struct sm_spec sm_spec;

sm_status sm_spec_parse(const char *text, sm_spec **out);
char *sm_spec_print(const sm_spec *spec); // canonical text; caller frees with free()
bool sm_spec_equal(const sm_spec *a, const sm_spec *b);
void sm_spec_free(sm_spec *spec);
// The table of structures, their keys and defaults, as printed by `structmat specs`.
const char *sm_spec_help(void);

// --- operators --------------------------------------------------------------------------------

typedef struct sm_op sm_op;

// Optional calibration statistics for activation-aware fitting (later issues).
typedef struct sm_stats {
    const double *gram;  // (n, n) sum over tokens of x x^T, or NULL
    const double *sqsum; // (n) per-channel sum of x^2, or NULL
    int64_t tokens;
} sm_stats;

typedef struct sm_fit_opts {
    uint64_t seed;         // randomized solvers (default 0x5eed)
    int verbose;           // progress lines on stderr
    const sm_stats *stats; // NULL: plain Frobenius objective
} sm_fit_opts;

// Fits the structure named by spec to W (m, n) row-major. W must be finite (SM_ERR_NUMERIC
// names the first non-finite entry); m and n are at most INT_MAX, the most BLAS and LAPACK take
// (SM_ERR_UNSUPPORTED, checked before W is read).
sm_status sm_op_fit(const float *W, int64_t m, int64_t n, const char *spec,
                    const sm_fit_opts *opts, sm_op **out);
void sm_op_free(sm_op *op);

int64_t sm_op_rows(const sm_op *op);    // m = out features
int64_t sm_op_cols(const sm_op *op);    // n = in features
const char *sm_op_spec(const sm_op *op); // canonical spec, sizes resolved ("lowrank:rank=64")
int64_t sm_op_nparams(const sm_op *op); // stored parameters (factor entries)
int64_t sm_op_nbytes(const sm_op *op);  // stored bytes (codes, scales and factors), exact
int64_t sm_op_macs(const sm_op *op);    // multiply-adds per input row of apply

// Scratch floats apply/apply_t need for N rows. Pass a buffer of that many floats as work, or
// NULL to let the call allocate (convenient, but then apply allocates).
size_t sm_op_workspace(const sm_op *op, int64_t N);
// Y (N, m) = X (N, n) W^T
sm_status sm_op_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work);
// X (N, n) = Y (N, m) W
sm_status sm_op_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work);
// W (m, n) row-major, the matrix the operator applies (quantized factors decoded). Some
// structures need scratch for it: SM_ERR_ALLOC when that cannot be allocated.
sm_status sm_op_to_dense(const sm_op *op, float *W);

// Named parts of an operator's storage (docs/format.md lists them per structure).
typedef struct sm_part {
    char name[48]; // e.g. "U", "V", "f1.codes"; in sums prefixed by the term index: "0.U"
    sm_dtype dtype;
    int ndim;
    int64_t shape[4];
    const void *data; // views into the operator (sm_op_parts) or the caller's memory
    size_t nbytes;
} sm_part;

// Views of the operator's parts; *parts is malloc'd (free() it), the data stays owned by op.
sm_status sm_op_parts(const sm_op *op, sm_part **parts, int *nparts);
// Rebuilds an operator from its canonical spec, shape and parts (data copied). Parts must have
// exactly the names, dtypes, shapes and byte sizes the spec implies (SM_ERR_FORMAT) and finite
// values, scales included (SM_ERR_NUMERIC naming the part and position).
sm_status sm_op_from_parts(const char *spec, int64_t m, int64_t n, const sm_part *parts,
                           int nparts, sm_op **out);

// --- safetensors ----------------------------------------------------------------------------

typedef struct sm_tensor_info {
    const char *name;
    sm_dtype dtype; // SM_DTYPE_UNKNOWN for dtypes we list but do not know
    const char *dtype_name;
    int ndim;
    int64_t shape[8];
    const void *data; // into the mapped file; may be unaligned
    size_t nbytes;
    const char *file; // path of the file (shard) holding it
} sm_tensor_info;

// A safetensors file, a directory (model.safetensors or a sharded index), or an index file.
typedef struct sm_st sm_st;

sm_status sm_st_open(const char *path, sm_st **out);
void sm_st_close(sm_st *st);
int sm_st_count(const sm_st *st);
const sm_tensor_info *sm_st_get(const sm_st *st, int i); // in the order of the files' headers
const sm_tensor_info *sm_st_find(const sm_st *st, const char *name);
const char *sm_st_meta(const sm_st *st, const char *key); // __metadata__ value or NULL
int sm_st_meta_count(const sm_st *st);
void sm_st_meta_get(const sm_st *st, int i, const char **key, const char **value);
// The tensor as F32 (n elements), malloc'd into *out (F32, F16, BF16 and F64 sources).
sm_status sm_st_read_f32(const sm_st *st, const char *name, float **out, int64_t *n);

typedef struct sm_st_writer sm_st_writer;
sm_st_writer *sm_st_writer_init(void);
// Data is referenced, not copied: keep it alive until sm_st_writer_write returns.
sm_status sm_st_writer_add(sm_st_writer *w, const char *name, sm_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t nbytes);
sm_status sm_st_writer_meta(sm_st_writer *w, const char *key, const char *value);
// Written to a temporary sibling, fsynced and renamed into place; an existing path is refused
// with SM_ERR_EXISTS unless force.
sm_status sm_st_writer_write(sm_st_writer *w, const char *path, bool force);
void sm_st_writer_free(sm_st_writer *w);

// Fitted operators in the checkpoint format of DESIGN.md: for each name ("x.weight") the parts
// "<name>.<part>" and metadata structmat.spec.<name> / structmat.shape.<name> ("out,in").
sm_status sm_ops_save(const char *path, int count, const char *const *names,
                      const sm_op *const *ops, bool force);
sm_status sm_op_load(const sm_st *st, const char *name, sm_op **out);
// Whether name is stored as a structmat operator in st.
bool sm_st_has_op(const sm_st *st, const char *name);

// --- Hugging Face config.json ----------------------------------------------------------------

typedef struct sm_model_config {
    char model_type[32];
    int64_t hidden_size, intermediate_size, num_hidden_layers;
    int64_t num_attention_heads, num_key_value_heads, head_dim;
    int64_t vocab_size, max_position_embeddings;
    double rms_norm_eps, rope_theta;
    bool tie_word_embeddings;
    int64_t bos_token_id, eos_token_id; // -1 when null or absent
    char hidden_act[16];
    char torch_dtype[16];
} sm_model_config;

// path: a config.json file or a directory holding one.
sm_status sm_config_load(const char *path, sm_model_config *cfg);

// --- analysis -----------------------------------------------------------------------------------

typedef struct sm_matrix_stats {
    int64_t rows, cols;
    double fro_norm, spectral_norm;
    double stable_rank;    // ||W||_F^2 / ||W||_2^2
    double effective_rank; // Roy-Vetterli: exp(entropy of sigma_i / sum sigma)
    int64_t k90, k99;      // smallest k with sum_{i<k} sigma_i^2 >= 90% / 99% of the energy
    double max_over_rms;   // max |w| / rms(w)
    double kurtosis;       // population excess kurtosis of the entries
    double alpha;          // WeightWatcher power-law exponent of the eigenvalues of W^T W
    double alpha_xmin, alpha_ks; // its xmin and Kolmogorov-Smirnov distance
    int64_t alpha_n;             // eigenvalues in the fitted tail
} sm_matrix_stats;

// sigma: if non-NULL, receives the min(m, n) singular values in decreasing order.
sm_status sm_matrix_analyze(const float *W, int64_t m, int64_t n, sm_matrix_stats *st,
                            double *sigma);

#ifdef __cplusplus
}
#endif
#endif
