// Calibration statistics: per distinct linear input of a model, H = sum x x^T, sum x^2 and max |x|
// over the tokens of a calibration text, collected through the forward pass's observer, written
// to and read back from a safetensors file (layout in docs/format.md, "Calibration statistics").
#include "model.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

// Rows of X converted to double per dsyrk call: big enough for BLAS to run near its peak, small
// enough that the buffer stays in the caches for the models we run.
#define CALIB_ROWS 128

typedef struct calib_input {
    char *name;    // "model.layers.0.self_attn.q_proj"
    int64_t n;     // channels
    int64_t rows;  // tokens added (collecting)
    double *gram;  // (n, n) collecting: upper triangle until symmetrized; opened: NULL
    double *sqsum; // (n)
    float *absmax; // (n)
    const sm_tensor_info *t_gram, *t_sqsum, *t_absmax; // opened: the file's tensors
} calib_input;

struct sm_calib {
    int ninputs;
    calib_input *inputs; // (ninputs)
    int nlayers;
    char **layer_names; // (nlayers) "model.layers.0.self_attn.k_proj.weight"
    int *layer_input;   // (nlayers) index into inputs
    int64_t tokens;
    bool symmetric; // the collected Grams' lower triangles are filled in
    bool broken;    // a failed run added part of a sequence: not to be saved
    // Collecting:
    const sm_model *model;
    sm_context *ctx;
    bool *first;   // (n_linear) linear layer i is the first reading its input
    double *xd;    // (CALIB_ROWS, max n) rows of X in double
    float *logits; // (n_ctx, vocab): the output head runs on every row so that it sees them all
    // Opened:
    sm_st *st;
    char *path;
    double *scratch; // (n, n + 2) the last input got, when its tensors are unaligned, or NULL
};

// --- names -----------------------------------------------------------------------------------

// The input of linear layer i of a model: the first layer of its group (q for q/k/v, gate for
// gate/up), without ".weight".
static int64_t first_of_group(const sm_model *m, int64_t i) {
    if (i == m->info.n_linear - 1) return i;
    int64_t w = i % SM_LIN_PER_LAYER, base = i - w;
    if (w == SM_LIN_K || w == SM_LIN_V) return base + SM_LIN_Q;
    if (w == SM_LIN_UP) return base + SM_LIN_GATE;
    return i;
}

static char *strip_weight(const char *name) {
    size_t len = strlen(name), suf = strlen(".weight");
    if (len > suf && strcmp(name + len - suf, ".weight") == 0) len -= suf;
    return strndup(name, len);
}

// --- lifetime ----------------------------------------------------------------------------------

void sm_calib_free(sm_calib *cal) {
    if (!cal) return;
    for (int i = 0; i < cal->ninputs; i++) {
        calib_input *in = &cal->inputs[i];
        free(in->name);
        sm_free(in->gram), sm_free(in->sqsum), sm_free(in->absmax);
    }
    for (int i = 0; i < cal->nlayers; i++) free(cal->layer_names[i]);
    free(cal->inputs), free(cal->layer_names), free(cal->layer_input), free(cal->first);
    sm_free(cal->xd), sm_free(cal->logits), sm_free(cal->scratch);
    sm_context_free(cal->ctx);
    sm_st_close(cal->st);
    free(cal->path);
    free(cal);
}

sm_status sm_calib_init(const sm_model *m, int64_t n_ctx, sm_calib **out) {
    *out = NULL;
    const sm_model_info *f = &m->info;
    sm_calib *cal = calloc(1, sizeof *cal);
    if (!cal) return sm_fail(SM_ERR_ALLOC, "calibration: out of memory");
    int64_t nlin = f->n_linear;
    cal->model = m;
    cal->inputs = calloc((size_t)nlin, sizeof *cal->inputs);
    cal->layer_names = calloc((size_t)nlin, sizeof *cal->layer_names);
    cal->layer_input = calloc((size_t)nlin, sizeof *cal->layer_input);
    cal->first = calloc((size_t)nlin, sizeof *cal->first);
    bool ok = cal->inputs && cal->layer_names && cal->layer_input && cal->first;
    int64_t max_n = 0;
    cal->nlayers = ok ? (int)nlin : 0;
    for (int64_t i = 0; i < nlin && ok; i++) {
        ok = (cal->layer_names[i] = strdup(m->names[i])) != NULL;
        int64_t g = first_of_group(m, i);
        cal->first[i] = g == i;
        if (!ok || g != i) {
            cal->layer_input[i] = cal->layer_input[g]; // g < i: already numbered
            continue;
        }
        calib_input *in = &cal->inputs[cal->ninputs];
        in->n = sm_op_cols(m->ops[i]);
        in->name = strip_weight(m->names[i]);
        in->gram = sm_calloc((size_t)(in->n * in->n), sizeof(double));
        in->sqsum = sm_calloc((size_t)in->n, sizeof(double));
        in->absmax = sm_calloc((size_t)in->n, sizeof(float));
        ok = in->name && in->gram && in->sqsum && in->absmax;
        cal->layer_input[i] = cal->ninputs++;
        if (in->n > max_n) max_n = in->n;
    }
    if (ok) ok = (cal->xd = sm_alloc((size_t)(CALIB_ROWS * max_n) * sizeof(double))) != NULL;
    if (!ok) {
        sm_calib_free(cal);
        return sm_fail(SM_ERR_ALLOC,
                       "calibration: out of memory for the statistics of %lld "
                       "linear layers",
                       (long long)nlin);
    }
    sm_status st = sm_context_init(m, n_ctx, 0, &cal->ctx);
    if (st == SM_OK) {
        size_t nl = (size_t)(sm_context_size(cal->ctx) * f->vocab_size);
        if (!(cal->logits = sm_alloc(nl * sizeof(float))))
            st = sm_fail(SM_ERR_ALLOC, "calibration: out of memory for %zu logits", nl);
    }
    if (st != SM_OK) {
        sm_calib_free(cal);
        return st;
    }
    cal->symmetric = true; // nothing added yet
    *out = cal;
    return SM_OK;
}

int64_t sm_calib_ctx_size(const sm_calib *cal) {
    return cal->ctx ? sm_context_size(cal->ctx) : 0;
}

// --- collecting --------------------------------------------------------------------------------

// The forward pass's observer: adds X (T, n) to the statistics of linear layer i's input once
// per group (q/k/v and gate/up see the same X).
static sm_status observe(void *user, int64_t i, int64_t T, const float *X) {
    sm_calib *cal = user;
    if (!cal->first[i]) return SM_OK;
    calib_input *in = &cal->inputs[cal->layer_input[i]];
    int64_t n = in->n;
    for (int64_t r0 = 0; r0 < T; r0 += CALIB_ROWS) {
        int64_t rows = T - r0 < CALIB_ROWS ? T - r0 : CALIB_ROWS;
        const float *x = X + r0 * n; // (rows, n)
        for (int64_t t = 0; t < rows; t++)
            for (int64_t j = 0; j < n; j++) {
                double v = (double)x[t * n + j];
                float a = fabsf(x[t * n + j]);
                cal->xd[t * n + j] = v;
                in->sqsum[j] += v * v;
                if (a > in->absmax[j] || isnan(a)) in->absmax[j] = a;
            }
        // upper triangle of gram (n, n) += Xd^T Xd, Xd (rows, n): products of F32 values are
        // exact in double, so only the summation rounds.
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)rows, 1.0, cal->xd, (int)n,
                    1.0, in->gram, (int)n);
    }
    in->rows += T;
    cal->symmetric = false;
    return SM_OK;
}

sm_status sm_calib_run(sm_calib *cal, const int32_t *tokens, int64_t n) {
    if (!cal->ctx)
        return sm_fail(SM_ERR_ARG, "calibration: statistics read from a file cannot be added to");
    if (n <= 0 || n > sm_context_size(cal->ctx))
        return sm_fail(SM_ERR_ARG, "calibration: %lld tokens in a sequence (1 to %lld)",
                       (long long)n, (long long)sm_context_size(cal->ctx));
    sm_status st = sm_context_rewind(cal->ctx, 0);
    if (st != SM_OK) return st;
    sm_context_set_observer(cal->ctx, observe, cal);
    st = sm_context_forward(cal->ctx, tokens, n, SM_LOGITS_ALL, cal->logits);
    sm_context_set_observer(cal->ctx, NULL, NULL);
    // The forward pass checks the ids before it computes anything, so a failure normally adds
    // nothing; one part way through would leave some inputs with more tokens than others.
    int64_t expect = cal->tokens + (st == SM_OK ? n : 0);
    for (int i = 0; i < cal->ninputs; i++)
        if (cal->inputs[i].rows != expect) cal->broken = true;
    if (st != SM_OK) return st;
    cal->tokens += n;
    return SM_OK;
}

int64_t sm_calib_tokens(const sm_calib *cal) {
    return cal->tokens;
}

// Fills the lower triangles of the collected Grams from the upper ones.
static void symmetrize(sm_calib *cal) {
    if (cal->symmetric) return;
    for (int k = 0; k < cal->ninputs; k++) {
        calib_input *in = &cal->inputs[k];
        for (int64_t i = 0; i < in->n; i++)
            for (int64_t j = 0; j < i; j++) in->gram[i * in->n + j] = in->gram[j * in->n + i];
    }
    cal->symmetric = true;
}

// --- the file ----------------------------------------------------------------------------------

#define META_PREFIX "structmat.calib."
#define META_INPUT META_PREFIX "input."

sm_status sm_calib_save(sm_calib *cal, const char *path, const sm_calib_source *src, bool force) {
    if (!cal->ctx)
        return sm_fail(SM_ERR_ARG, "calibration: %s: only collected statistics are saved", path);
    if (cal->tokens == 0) return sm_fail(SM_ERR_ARG, "calibration: %s: no tokens were run", path);
    if (cal->broken)
        return sm_fail(SM_ERR_ARG, "calibration: %s: a failed run left partial sums", path);
    symmetrize(cal);
    sm_st_writer *w = sm_st_writer_init();
    if (!w) return sm_fail(SM_ERR_ALLOC, "out of memory");
    sm_status st = SM_OK;
    char key[512], val[64];
#define META(k, ...)                                                                               \
    do {                                                                                           \
        snprintf(val, sizeof val, __VA_ARGS__);                                                    \
        if (st == SM_OK) st = sm_st_writer_meta(w, META_PREFIX k, val);                            \
    } while (0)
    META("format_version", "%d", SM_CALIB_FORMAT_VERSION);
    META("tokens", "%lld", (long long)cal->tokens);
    if (src) {
        if (src->model && st == SM_OK) st = sm_st_writer_meta(w, META_PREFIX "model", src->model);
        if (src->text && st == SM_OK) st = sm_st_writer_meta(w, META_PREFIX "text", src->text);
        if (src->text)
            META("text_bytes", "%lld:%lld", (long long)src->text_begin, (long long)src->text_end);
        META("ctx", "%lld", (long long)src->ctx);
        META("chunks", "%lld", (long long)src->chunks);
        META("bos", "%d", (int)src->bos);
    }
#undef META
    for (int i = 0; i < cal->nlayers && st == SM_OK; i++) {
        snprintf(key, sizeof key, META_INPUT "%s", cal->layer_names[i]);
        st = sm_st_writer_meta(w, key, cal->inputs[cal->layer_input[i]].name);
    }
    for (int i = 0; i < cal->ninputs && st == SM_OK; i++) {
        calib_input *in = &cal->inputs[i];
        int64_t nn[2] = {in->n, in->n};
        size_t n = (size_t)in->n;
        snprintf(key, sizeof key, "%s.gram", in->name);
        st = sm_st_writer_add(w, key, SM_DTYPE_F64, 2, nn, in->gram, n * n * sizeof(double));
        snprintf(key, sizeof key, "%s.sqsum", in->name);
        if (st == SM_OK)
            st = sm_st_writer_add(w, key, SM_DTYPE_F64, 1, nn, in->sqsum, n * sizeof(double));
        snprintf(key, sizeof key, "%s.absmax", in->name);
        if (st == SM_OK)
            st = sm_st_writer_add(w, key, SM_DTYPE_F32, 1, nn, in->absmax, n * sizeof(float));
    }
    if (st == SM_OK) st = sm_st_writer_write(w, path, force);
    sm_st_writer_free(w);
    return st;
}

// A non-negative decimal integer of metadata key, or -1 when absent or malformed.
static int64_t meta_int(const sm_st *st, const char *key) {
    const char *s = sm_st_meta(st, key);
    if (!s || !(*s >= '0' && *s <= '9')) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    return *end || errno ? -1 : v;
}

// Checks one stored tensor of an input: present, dtype, shape (n) or (n, n).
static sm_status check_tensor(const sm_calib *cal, const char *input, const char *part,
                              sm_dtype dtype, int ndim, int64_t n, const sm_tensor_info **out) {
    char name[512];
    snprintf(name, sizeof name, "%s.%s", input, part);
    const sm_tensor_info *t = sm_st_find(cal->st, name);
    if (!t)
        return sm_fail(SM_ERR_FORMAT, "%s: missing tensor \"%s\" (input of a linear layer)",
                       cal->path, name);
    bool shape_ok = t->ndim == ndim && t->shape[0] == n && (ndim == 1 || t->shape[1] == n);
    if (t->dtype != dtype || !shape_ok)
        return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\" is %s with %d dimensions, expected %s %s",
                       cal->path, name, t->dtype_name, t->ndim, sm_dtype_name(dtype),
                       ndim == 1 ? "(n)" : "(n, n)");
    *out = t;
    return SM_OK;
}

// The inputs an opened file names, and their tensors.
static sm_status open_inputs(sm_calib *cal) {
    int nmeta = sm_st_meta_count(cal->st);
    size_t plen = strlen(META_INPUT);
    cal->layer_names = calloc((size_t)nmeta + 1, sizeof *cal->layer_names);
    cal->layer_input = calloc((size_t)nmeta + 1, sizeof *cal->layer_input);
    cal->inputs = calloc((size_t)nmeta + 1, sizeof *cal->inputs);
    if (!cal->layer_names || !cal->layer_input || !cal->inputs)
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int k = 0; k < nmeta; k++) {
        const char *key, *value;
        sm_st_meta_get(cal->st, k, &key, &value);
        if (strncmp(key, META_INPUT, plen) != 0) continue;
        int i = 0;
        while (i < cal->ninputs && strcmp(cal->inputs[i].name, value) != 0) i++;
        if (i == cal->ninputs) {
            calib_input *in = &cal->inputs[cal->ninputs];
            if (!(in->name = strdup(value))) return sm_fail(SM_ERR_ALLOC, "out of memory");
            cal->ninputs++;
            char name[512];
            snprintf(name, sizeof name, "%s.gram", value);
            const sm_tensor_info *g = sm_st_find(cal->st, name);
            if (!g)
                return sm_fail(SM_ERR_FORMAT, "%s: missing tensor \"%s\" (the input of %s)",
                               cal->path, name, key + plen);
            in->n = g->ndim >= 1 ? g->shape[0] : 0;
            if (in->n <= 0 || in->n > INT32_MAX)
                return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\" has no size in [1, 2^31)",
                               cal->path, name);
            sm_status st = check_tensor(cal, value, "gram", SM_DTYPE_F64, 2, in->n, &in->t_gram);
            if (st == SM_OK)
                st = check_tensor(cal, value, "sqsum", SM_DTYPE_F64, 1, in->n, &in->t_sqsum);
            if (st == SM_OK)
                st = check_tensor(cal, value, "absmax", SM_DTYPE_F32, 1, in->n, &in->t_absmax);
            if (st != SM_OK) return st;
        }
        if (!(cal->layer_names[cal->nlayers] = strdup(key + plen)))
            return sm_fail(SM_ERR_ALLOC, "out of memory");
        cal->layer_input[cal->nlayers++] = i;
    }
    if (cal->nlayers == 0)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: no \"" META_INPUT "<layer>\" metadata: not a "
                       "calibration statistics file?",
                       cal->path);
    return SM_OK;
}

sm_status sm_calib_open(const char *path, sm_calib **out) {
    *out = NULL;
    sm_calib *cal = calloc(1, sizeof *cal);
    if (!cal || !(cal->path = strdup(path))) {
        free(cal);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    cal->symmetric = true;
    sm_status st = sm_st_open(path, &cal->st);
    if (st == SM_OK) {
        const char *v = sm_st_meta(cal->st, META_PREFIX "format_version");
        int64_t tokens = meta_int(cal->st, META_PREFIX "tokens");
        if (!v)
            st = sm_fail(SM_ERR_FORMAT,
                         "%s: no " META_PREFIX "format_version in the metadata: "
                         "not a calibration statistics file",
                         path);
        else if (meta_int(cal->st, META_PREFIX "format_version") != SM_CALIB_FORMAT_VERSION)
            st = sm_fail(SM_ERR_UNSUPPORTED,
                         "%s: calibration statistics format version \"%s\" (this build reads "
                         "%d)",
                         path, v, SM_CALIB_FORMAT_VERSION);
        else if (tokens <= 0)
            st = sm_fail(SM_ERR_FORMAT,
                         "%s: " META_PREFIX "tokens is missing or not a positive "
                         "integer",
                         path);
        else
            cal->tokens = tokens;
    }
    if (st == SM_OK) st = open_inputs(cal);
    if (st != SM_OK) {
        sm_calib_free(cal);
        return st;
    }
    *out = cal;
    return SM_OK;
}

const char *sm_calib_meta(const sm_calib *cal, const char *key) {
    return cal->st ? sm_st_meta(cal->st, key) : NULL;
}

// --- reading -----------------------------------------------------------------------------------

int sm_calib_count(const sm_calib *cal) {
    return cal->ninputs;
}

// A view of t's data when it is aligned to align bytes, else a copy at offset in cal->scratch.
static const void *tensor_data(sm_calib *cal, const sm_tensor_info *t, size_t align,
                               size_t offset) {
    if ((uintptr_t)t->data % align == 0) return t->data;
    memcpy((char *)cal->scratch + offset, t->data, t->nbytes);
    return (char *)cal->scratch + offset;
}

// Every value finite, sums non-negative where they must be (a Gram's diagonal, sqsum, absmax).
static sm_status check_values(const sm_calib *cal, const calib_input *in, const double *g,
                              const double *sq, const float *am) {
    int64_t n = in->n;
    for (int64_t i = 0; i < n * n; i++)
        if (!isfinite(g[i]) || (i % (n + 1) == 0 && g[i] < 0))
            return sm_fail(SM_ERR_FORMAT, "%s: %s.gram[%lld, %lld] = %g", cal->path, in->name,
                           (long long)(i / n), (long long)(i % n), g[i]);
    for (int64_t j = 0; j < n; j++) {
        if (!isfinite(sq[j]) || sq[j] < 0)
            return sm_fail(SM_ERR_FORMAT, "%s: %s.sqsum[%lld] = %g", cal->path, in->name,
                           (long long)j, sq[j]);
        if (!isfinite(am[j]) || am[j] < 0)
            return sm_fail(SM_ERR_FORMAT, "%s: %s.absmax[%lld] = %g", cal->path, in->name,
                           (long long)j, (double)am[j]);
    }
    return SM_OK;
}

sm_status sm_calib_input_get(sm_calib *cal, int i, sm_calib_input *out) {
    SM_ASSERT(i >= 0 && i < cal->ninputs);
    calib_input *in = &cal->inputs[i];
    *out = (sm_calib_input){.name = in->name, .n = in->n};
    if (!cal->st) {
        symmetrize(cal);
        out->gram = in->gram, out->sqsum = in->sqsum, out->absmax = in->absmax;
        return SM_OK;
    }
    bool aligned = (uintptr_t)in->t_gram->data % sizeof(double) == 0 &&
                   (uintptr_t)in->t_sqsum->data % sizeof(double) == 0 &&
                   (uintptr_t)in->t_absmax->data % sizeof(float) == 0;
    if (!aligned) {
        // The writer aligns every tensor, so this is rare: room for this input's tensors.
        sm_free(cal->scratch);
        size_t n = (size_t)in->n;
        if (!(cal->scratch = sm_alloc((n * n + 2 * n) * sizeof(double))))
            return sm_fail(SM_ERR_ALLOC, "out of memory for a %zux%zu Gram", n, n);
    }
    size_t n = (size_t)in->n;
    out->gram = tensor_data(cal, in->t_gram, sizeof(double), 0);
    out->sqsum = tensor_data(cal, in->t_sqsum, sizeof(double), n * n * sizeof(double));
    out->absmax = tensor_data(cal, in->t_absmax, sizeof(float), (n * n + n) * sizeof(double));
    return check_values(cal, in, out->gram, out->sqsum, out->absmax);
}

sm_status sm_calib_find(const sm_calib *cal, const char *layer, int *index) {
    size_t len = strlen(layer);
    for (int i = 0; i < cal->nlayers; i++) {
        const char *s = cal->layer_names[i];
        // exactly, or without ".weight"
        if (strcmp(s, layer) == 0 ||
            (strncmp(s, layer, len) == 0 && strcmp(s + len, ".weight") == 0)) {
            *index = cal->layer_input[i];
            return SM_OK;
        }
    }
    return sm_fail(SM_ERR_NOT_FOUND,
                   "%s: no calibration statistics for \"%s\" (they cover %d linear layers, "
                   "\"%s\" to \"%s\")",
                   cal->path ? cal->path : "calibration", layer, cal->nlayers, cal->layer_names[0],
                   cal->layer_names[cal->nlayers - 1]);
}

sm_status sm_calib_get(sm_calib *cal, const char *layer, int64_t n, sm_stats *stats) {
    int i;
    sm_status st = sm_calib_find(cal, layer, &i);
    if (st != SM_OK) return st;
    if (cal->inputs[i].n != n)
        return sm_fail(SM_ERR_SHAPE,
                       "%s: the statistics for \"%s\" (input %s) have %lld channels, the layer "
                       "takes %lld: statistics of another model?",
                       cal->path ? cal->path : "calibration", layer, cal->inputs[i].name,
                       (long long)cal->inputs[i].n, (long long)n);
    sm_calib_input in;
    if ((st = sm_calib_input_get(cal, i, &in)) != SM_OK) return st;
    *stats = (sm_stats){.gram = in.gram, .sqsum = in.sqsum, .tokens = cal->tokens};
    return SM_OK;
}

// --- the activation-aware error -------------------------------------------------------------

sm_status sm_act_rel_error(const float *W, const float *W_hat, int64_t m, int64_t n,
                           const double *H, double *rel) {
    // Row blocks of D = W - W_hat and of W, both (rows, n), times H (n, n): the traces
    // sum_i d_i^T H d_i and sum_i w_i^T H w_i without an (m, n) double copy of either.
    enum { B = 64 };
    double *A = sm_alloc((size_t)(2 * B * n) * sizeof(double));  // (2 rows, n): D block, W block
    double *AH = sm_alloc((size_t)(2 * B * n) * sizeof(double)); // (2 rows, n)
    if (!A || !AH) {
        sm_free(A), sm_free(AH);
        return sm_fail(SM_ERR_ALLOC, "out of memory for the activation-aware error");
    }
    double num = 0, den = 0;
    for (int64_t r0 = 0; r0 < m; r0 += B) {
        int64_t rows = m - r0 < B ? m - r0 : B;
        for (int64_t t = 0; t < rows; t++)
            for (int64_t j = 0; j < n; j++) {
                double w = W[(r0 + t) * n + j];
                A[t * n + j] = w - (double)W_hat[(r0 + t) * n + j];
                A[(rows + t) * n + j] = w;
            }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(2 * rows), (int)n, (int)n, 1.0,
                    A, (int)n, H, (int)n, 0.0, AH, (int)n);
        for (int64_t k = 0; k < rows * n; k++) num += A[k] * AH[k];
        for (int64_t k = rows * n; k < 2 * rows * n; k++) den += A[k] * AH[k];
    }
    sm_free(A), sm_free(AH);
    if (!isfinite(num) || !isfinite(den))
        return sm_fail(SM_ERR_NUMERIC, "activation-aware error is not finite");
    // H is positive semidefinite: negative traces are rounding of zero.
    num = num > 0 ? num : 0;
    *rel = den > 0 ? sqrt(num / den) : sqrt(num);
    return SM_OK;
}
