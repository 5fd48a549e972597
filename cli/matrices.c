// The matrices inspect and fit work on, from either of two sources:
//   - a safetensors file, directory or index: its 2-D tensors and structmat operators (whose
//     stored parts are not listed on their own);
//   - a GGUF file: its 2-D tensors under the file's names (blk.0.attn_q.weight), shaped [out, in]
//     (GGUF's dimensions reversed), of any ggml type with a decoder (structmat_gguf.h);
//   - a model the runtime loads (sm_model_load): its linear layers (sm_model_linear) and token
//     embedding. Used for llama2.c checkpoints, which hold no named tensors, and for fit
//     --save-model, which puts the fitted operators back into the model.
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/model.h"
#include "structmat_gguf.h"

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// Whether tensor is "<op>.<part>" for one of the n operator names in sorted: a binary search per
// '.' of the name (a file may hold many operators and many tensors).
static bool is_part_of_op(const char *tensor, const char **sorted, int n) {
    size_t len = strlen(tensor);
    char *buf = malloc(len + 1);
    bool hit = false;
    if (!buf) return false;
    memcpy(buf, tensor, len + 1);
    for (char *dot = strchr(buf, '.'); dot && !hit; dot = strchr(dot + 1, '.')) {
        *dot = 0;
        const char *key = buf;
        hit = bsearch(&key, sorted, (size_t)n, sizeof *sorted, cmp_str) != NULL;
        *dot = '.';
    }
    free(buf);
    return hit;
}

static int list_st(cli_matrices *ms) {
    const sm_st *st = ms->st;
    int n = 0;
    for (int i = 0; i < sm_st_meta_count(st); i++) {
        const char *k, *v;
        sm_st_meta_get(st, i, &k, &v);
        const char *pre = "structmat.spec.";
        if (strncmp(k, pre, strlen(pre)) != 0) continue;
        // Listed even when its shape is missing or malformed: then sm_op_load says what is wrong
        // (skipping it would list its parts as plain tensors and hide the fault).
        char *key = NULL;
        long long r = 0, c = 0;
        const char *shape = NULL;
        if (asprintf(&key, "structmat.shape.%s", k + strlen(pre)) >= 0) shape = sm_st_meta(st, key);
        free(key);
        if (!shape || sscanf(shape, "%lld,%lld", &r, &c) != 2) r = c = 0;
        const char *name = k + strlen(pre);
        ms->items[n++] = (cli_matrix){name, v, r, c, true, sm_is_embedding_name(name), -1};
    }
    int nops = n;
    const char **ops = malloc(((size_t)nops + 1) * sizeof *ops);
    if (!ops) return -1;
    for (int i = 0; i < nops; i++) ops[i] = ms->items[i].name;
    qsort(ops, (size_t)nops, sizeof *ops, cmp_str);
    for (int i = 0; i < sm_st_count(st); i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        if (t->ndim == 2 && !is_part_of_op(t->name, ops, nops))
            ms->items[n++] = (cli_matrix){t->name, t->dtype_name,         t->shape[0], t->shape[1],
                                          false,   sm_is_embedding_name(t->name), -1};
    }
    free(ops);
    return n;
}

// Plain dense operators show their dtype, as the same matrix stored as a tensor would.
static const char *kind_of(const sm_op *op, bool *is_op) {
    const char *spec = sm_op_spec(op);
    *is_op = false;
    if (!strcmp(spec, "dense")) return "F32";
    if (!strcmp(spec, "dense:dtype=f16")) return "F16";
    if (!strcmp(spec, "dense:dtype=bf16")) return "BF16";
    *is_op = true;
    return spec;
}

static int list_model(cli_matrices *ms) {
    sm_model_info f;
    sm_model_get_info(ms->model, &f);
    int n = 0;
    bool is_op;
    // The embedding first, as checkpoints order it. Tied, it is the output head: one matrix.
    if (f.tied) {
        const sm_op *head = sm_model_linear(ms->model, f.n_linear - 1);
        const char *kind = kind_of(head, &is_op);
        ms->items[n++] = (cli_matrix){
            "model.embed_tokens.weight", kind, f.vocab_size, f.dim, is_op, true, f.n_linear - 1};
    } else {
        sm_dtype dt;
        sm_model_embedding(ms->model, &dt);
        ms->items[n++] = (cli_matrix){
            "model.embed_tokens.weight", sm_dtype_name(dt), f.vocab_size, f.dim, false, true, -1};
    }
    for (int64_t i = 0; i < f.n_linear - (f.tied ? 1 : 0); i++) {
        const sm_op *op = sm_model_linear(ms->model, i);
        const char *kind = kind_of(op, &is_op);
        ms->items[n++] = (cli_matrix){sm_model_linear_name(ms->model, i),
                                      kind,
                                      sm_op_rows(op),
                                      sm_op_cols(op),
                                      is_op,
                                      false,
                                      i};
    }
    return n;
}

static int list_gguf(cli_matrices *ms) {
    int n = 0;
    for (int64_t i = 0; i < sm_gguf_tensor_count(ms->gguf); i++) {
        const sm_gguf_tensor *t = sm_gguf_tensor_get(ms->gguf, i);
        if (t->ndim == 2)
            ms->items[n++] = (cli_matrix){t->name, t->type_name,          t->shape[0], t->shape[1],
                                          false,   sm_is_embedding_name(t->name), -1};
    }
    return n;
}

int cli_matrices_open(const char *cmd, const char *path, bool need_model, cli_matrices *ms) {
    memset(ms, 0, sizeof *ms);
    ms->path = path;
    int64_t cap;
    if (!need_model && sm_model_is_gguf(path)) {
        if (sm_gguf_open(path, &ms->gguf) != SM_OK) return cli_fail(cmd, NULL);
        cap = sm_gguf_tensor_count(ms->gguf) + 1;
    } else if (need_model || sm_model_is_llama2c(path)) {
        if (sm_model_load(path, &ms->model) != SM_OK) return cli_fail(cmd, NULL);
        sm_model_info f;
        sm_model_get_info(ms->model, &f);
        cap = f.n_linear + 1;
    } else {
        if (sm_st_open(path, &ms->st) != SM_OK) return cli_fail(cmd, NULL);
        cap = (int64_t)sm_st_count(ms->st) + sm_st_meta_count(ms->st) + 1;
    }
    ms->items = calloc((size_t)cap, sizeof *ms->items);
    ms->n = !ms->items ? -1 : ms->model ? list_model(ms) : ms->gguf ? list_gguf(ms) : list_st(ms);
    if (ms->n < 0) {
        cli_matrices_close(ms);
        return cli_fail(cmd, "out of memory");
    }
    return 0;
}

void cli_matrices_close(cli_matrices *ms) {
    free(ms->items);
    sm_st_close(ms->st);
    sm_gguf_close(ms->gguf);
    sm_model_free(ms->model);
    memset(ms, 0, sizeof *ms);
}

int cli_matrices_find(const cli_matrices *ms, const char *name) {
    for (int i = 0; i < ms->n; i++)
        if (!strcmp(ms->items[i].name, name)) return i;
    return -1;
}

const char *cli_matrices_why_absent(const cli_matrices *ms, const char *name) {
    bool tensor =
        (ms->st && sm_st_find(ms->st, name)) || (ms->gguf && sm_gguf_find(ms->gguf, name));
    return tensor ? "not a matrix:" : "no matrix named";
}

// W (rows, cols) of an operator, malloc'd.
static sm_status op_dense(const sm_op *op, float **W) {
    *W = malloc(sizeof(float) * (size_t)(sm_op_rows(op) * sm_op_cols(op)));
    if (!*W)
        return sm_fail(SM_ERR_ALLOC, "out of memory for a %lldx%lld matrix",
                       (long long)sm_op_rows(op), (long long)sm_op_cols(op));
    return sm_op_to_dense(op, *W);
}

sm_status cli_matrices_read(const cli_matrices *ms, int i, float **W) {
    const cli_matrix *it = &ms->items[i];
    *W = NULL;
    if (ms->model) {
        if (it->linear >= 0) return op_dense(sm_model_linear(ms->model, it->linear), W);
        sm_dtype dt;
        const void *e = sm_model_embedding(ms->model, &dt);
        *W = malloc(sizeof(float) * (size_t)(it->rows * it->cols));
        if (!*W) return sm_fail(SM_ERR_ALLOC, "out of memory for the embedding");
        return sm_convert_to_f32(dt, e, it->rows * it->cols, *W);
    }
    if (ms->gguf) {
        int64_t cnt;
        return sm_gguf_read_f32(ms->gguf, it->name, W, &cnt);
    }
    if (!it->is_op) {
        int64_t cnt;
        return sm_st_read_f32(ms->st, it->name, W, &cnt);
    }
    sm_op *op;
    sm_status s = sm_op_load(ms->st, it->name, &op);
    if (s != SM_OK) return s;
    // Sized from the loaded operator, whose shape sm_op_load has checked.
    s = op_dense(op, W);
    sm_op_free(op);
    return s;
}
