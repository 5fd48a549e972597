// structmat export --dense: a compressed checkpoint back to plain dense tensors, streamed one
// operator at a time (include/structmat_compress.h, sm_export_dense).
#include "compress_impl.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// Whether tensor is "<op>.<part>" for one of the n sorted operator names.
static bool is_part(const char *tensor, const char **ops, int n) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", tensor);
    for (char *dot = strchr(buf, '.'); dot; dot = strchr(dot + 1, '.')) {
        *dot = 0;
        const char *key = buf;
        bool hit = bsearch(&key, ops, (size_t)n, sizeof *ops, cmp_str) != NULL;
        *dot = '.';
        if (hit) return true;
    }
    return false;
}

static sm_status convert(const float *x, int64_t n, sm_dtype dt, void *out) {
    if (dt == SM_DTYPE_F32) {
        memcpy(out, x, sizeof(float) * (size_t)n);
        return SM_OK;
    }
    uint16_t *h = out;
    for (int64_t i = 0; i < n; i++)
        h[i] = dt == SM_DTYPE_F16 ? sm_f32_to_f16(x[i]) : sm_f32_to_bf16(x[i]);
    return SM_OK;
}

sm_status sm_export_dense(const char *model_dir, const char *out_dir, sm_dtype dtype, bool force) {
    if (dtype != SM_DTYPE_F32 && dtype != SM_DTYPE_F16 && dtype != SM_DTYPE_BF16)
        return sm_fail(SM_ERR_ARG, "export: dtype must be F32, F16 or BF16");
    struct stat sb;
    if (stat(model_dir, &sb) != 0)
        return sm_fail(SM_ERR_IO, "%s: no such file or directory", model_dir);
    char *copy = strdup(model_dir);
    char *dir = copy ? strdup(S_ISDIR(sb.st_mode) ? model_dir : dirname(copy)) : NULL;
    free(copy);
    if (!dir) return sm_fail(SM_ERR_ALLOC, "out of memory");
    sm_st *st = NULL;
    sm_status s = sm_st_open(model_dir, &st);
    int nops = 0, nm = s == SM_OK ? sm_st_meta_count(st) : 0;
    const char **ops = calloc((size_t)nm + 1, sizeof *ops);
    if (s == SM_OK && !ops) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    const char *pre = "structmat.spec.";
    for (int i = 0; i < nm && s == SM_OK; i++) {
        const char *k, *v;
        sm_st_meta_get(st, i, &k, &v);
        if (!strncmp(k, pre, strlen(pre))) ops[nops++] = k + strlen(pre);
    }
    if (ops) qsort(ops, (size_t)nops, sizeof *ops, cmp_str);
    int64_t room = 0;
    for (int i = 0; s == SM_OK && i < sm_st_count(st); i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        if (!is_part(t->name, ops, nops)) room += sm_swriter_entry_room(t->name);
    }
    for (int i = 0; i < nops; i++) room += sm_swriter_entry_room(ops[i]);
    sm_atomic_dir d = {0};
    if (s == SM_OK) s = sm_atomic_dir_open(&d, out_dir, force);
    bool opened = s == SM_OK;
    char *path = NULL;
    if (s == SM_OK && asprintf(&path, "%s/model.safetensors", d.tmp) < 0) {
        path = NULL;
        s = sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    sm_swriter *w = NULL;
    if (s == SM_OK) s = sm_copy_config(dir, d.tmp, true);
    if (s == SM_OK) s = sm_swriter_open(path, room, &w);
    for (int i = 0; s == SM_OK && i < sm_st_count(st); i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        if (!is_part(t->name, ops, nops))
            s = sm_swriter_add_mapped(w, t->name, t->dtype_name, t->ndim, t->shape, t->data,
                                      t->nbytes);
    }
    for (int i = 0; i < nops && s == SM_OK; i++) {
        sm_op *op = NULL;
        s = sm_op_load(st, ops[i], &op);
        if (s != SM_OK) break;
        int64_t shape[2] = {sm_op_rows(op), sm_op_cols(op)}, n = shape[0] * shape[1];
        float *W = malloc(sizeof(float) * (size_t)n);
        void *out = malloc(sm_dtype_size(dtype) * (size_t)n);
        if (!W || !out) s = sm_fail(SM_ERR_ALLOC, "out of memory for %s", ops[i]);
        if (s == SM_OK) s = sm_op_to_dense(op, W);
        if (s == SM_OK) s = convert(W, n, dtype, out);
        if (s == SM_OK)
            s = sm_swriter_add(w, ops[i], sm_dtype_name(dtype), 2, shape, out,
                               sm_dtype_size(dtype) * (size_t)n);
        free(W), free(out);
        sm_op_free(op);
    }
    if (s == SM_OK) {
        s = sm_swriter_finish(w);
        w = NULL;
    }
    if (s == SM_OK)
        s = sm_atomic_dir_commit(&d);
    else if (opened) {
        sm_swriter_abort(w);
        sm_atomic_dir_abort(&d);
    }
    free(path), free(ops), free(dir);
    sm_st_close(st);
    return s;
}
