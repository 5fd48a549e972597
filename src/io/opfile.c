// Fitted operators in safetensors files (DESIGN.md "Files on disk", docs/format.md): each matrix
// <name> is stored as its parts <name>.<part>, with its canonical spec and shape in __metadata__.
// Loading trusts nothing in the file: the version, the shape string and every part are checked,
// and sm_op_from_parts checks the parts against what the spec implies.
#include "io_impl.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define KEY_VERSION "structmat.format_version"

static char *key_for(const char *what, const char *name) {
    char *k = NULL;
    if (asprintf(&k, "structmat.%s.%s", what, name) < 0) return NULL;
    return k;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// Names must be distinct, and since every tensor "<name>.*" counts as a part of <name> when
// loading, no name may continue another with '.' (that other would be unloadable). By sorting
// and a binary search per '.', not by comparing every pair: a file may hold many operators.
static sm_status check_names(const char *path, int count, const char *const *names) {
    const char **sorted = malloc(((size_t)count + 1) * sizeof *sorted);
    if (!sorted) return sm_fail(SM_ERR_ALLOC, "out of memory");
    memcpy(sorted, names, (size_t)count * sizeof *sorted);
    qsort(sorted, (size_t)count, sizeof *sorted, cmp_name);
    sm_status s = SM_OK;
    for (int i = 1; i < count && s == SM_OK; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            s = sm_fail(SM_ERR_ARG, "%s: operator \"%s\" given twice", path, sorted[i]);
    char *buf = NULL;
    for (int i = 0; i < count && s == SM_OK; i++) {
        free(buf);
        if (!(buf = strdup(sorted[i]))) {
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
            break;
        }
        for (char *dot = strchr(buf, '.'); dot && s == SM_OK; dot = strchr(dot + 1, '.')) {
            *dot = 0;
            const char *key = buf;
            const char **hit = bsearch(&key, sorted, (size_t)count, sizeof *sorted, cmp_name);
            if (hit)
                s = sm_fail(SM_ERR_ARG,
                            "%s: operator \"%s\" would be read as a part of \"%s\" (no name "
                            "may continue another with '.')",
                            path, sorted[i], *hit);
            *dot = '.';
        }
    }
    free(buf);
    free(sorted);
    return s;
}

sm_status sm_ops_save(const char *path, int count, const char *const *names,
                      const sm_op *const *ops, bool force) {
    sm_st_writer *w = sm_st_writer_init();
    sm_part **parts = calloc((size_t)(count > 0 ? count : 1), sizeof *parts);
    if (!w || !parts) {
        sm_st_writer_free(w);
        free(parts);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    char ver[16];
    snprintf(ver, sizeof ver, "%d", SM_FORMAT_VERSION);
    sm_status s = sm_st_writer_meta(w, KEY_VERSION, ver);
    if (s == SM_OK) s = check_names(path, count, names);
    for (int i = 0; i < count && s == SM_OK; i++) {
        int np = 0;
        if (s == SM_OK) s = sm_op_parts(ops[i], &parts[i], &np);
        for (int j = 0; j < np && s == SM_OK; j++) {
            const sm_part *p = &parts[i][j];
            char *tn = NULL;
            if (asprintf(&tn, "%s.%s", names[i], p->name) < 0) {
                s = sm_fail(SM_ERR_ALLOC, "out of memory");
                break;
            }
            s = sm_st_writer_add(w, tn, p->dtype, p->ndim, p->shape, p->data, p->nbytes);
            free(tn);
        }
        char *ks = key_for("spec", names[i]), *kh = key_for("shape", names[i]);
        char shape[64];
        snprintf(shape, sizeof shape, "%lld,%lld", (long long)sm_op_rows(ops[i]),
                 (long long)sm_op_cols(ops[i]));
        if (s == SM_OK && (!ks || !kh)) s = sm_fail(SM_ERR_ALLOC, "out of memory");
        if (s == SM_OK) s = sm_st_writer_meta(w, ks, sm_op_spec(ops[i]));
        if (s == SM_OK) s = sm_st_writer_meta(w, kh, shape);
        free(ks);
        free(kh);
    }
    if (s == SM_OK) s = sm_st_writer_write(w, path, force);
    for (int i = 0; i < count; i++) free(parts[i]);
    free(parts);
    sm_st_writer_free(w);
    return s;
}

bool sm_st_has_op(const sm_st *st, const char *name) {
    char *k = key_for("spec", name);
    bool has = k && sm_st_meta(st, k) != NULL;
    free(k);
    return has;
}

// "out,in": two positive decimal integers, nothing else.
static bool parse_shape(const char *s, int64_t *m, int64_t *n) {
    int64_t v[2];
    for (int i = 0; i < 2; i++) {
        if (*s < '1' || *s > '9') return false;
        int64_t x = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
            x = x * 10 + (*s - '0');
            if (x > INT_MAX) return false; // BLAS's limit; no real matrix side is this long
        }
        v[i] = x;
        if (i == 0 && *s++ != ',') return false;
    }
    if (*s) return false;
    *m = v[0];
    *n = v[1];
    return true;
}

sm_status sm_op_load(const sm_st *st, const char *name, sm_op **out) {
    *out = NULL;
    const char *where = sm_st_count(st) ? sm_st_get(st, 0)->file : "checkpoint";
    const char *ver = sm_st_meta(st, KEY_VERSION);
    if (!ver)
        return sm_fail(SM_ERR_FORMAT, "%s: no %s metadata: not a structmat checkpoint", where,
                       KEY_VERSION);
    char *end = NULL;
    errno = 0;
    long v = strtol(ver, &end, 10);
    if (end == ver || *end || errno)
        return sm_fail(SM_ERR_FORMAT, "%s: %s \"%s\" is not a number", where, KEY_VERSION, ver);
    if (v != SM_FORMAT_VERSION)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: format version %ld is not supported (this build reads version %d)",
                       where, v, SM_FORMAT_VERSION);
    char *ks = key_for("spec", name), *kh = key_for("shape", name);
    if (!ks || !kh) {
        free(ks);
        free(kh);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    const char *spec = sm_st_meta(st, ks), *shape = sm_st_meta(st, kh);
    int64_t m = 0, n = 0;
    sm_status s = SM_OK;
    if (!spec)
        s = sm_fail(SM_ERR_NOT_FOUND, "%s: \"%s\" is not stored as an operator (no %s)", where,
                    name, ks);
    else if (!shape)
        s = sm_fail(SM_ERR_FORMAT, "%s: \"%s\" has no %s metadata", where, name, kh);
    else if (!parse_shape(shape, &m, &n))
        s = sm_fail(SM_ERR_FORMAT, "%s: %s = \"%s\" is not \"out,in\" (two positive integers)",
                    where, kh, shape);
    free(ks);
    free(kh);
    if (s != SM_OK) return s;

    // Parts are the tensors "<name>.<part>"; sm_op_from_parts picks those its spec expects.
    size_t pre = strlen(name);
    char *dotted = NULL;
    if (asprintf(&dotted, "%s.", name) < 0) return sm_fail(SM_ERR_ALLOC, "out of memory");
    int cap = 0, np = 0;
    const sm_tensor_info *const *run = sm_st_prefix_run(st, dotted, &cap);
    free(dotted);
    sm_part *parts = calloc((size_t)cap + 1, sizeof *parts);
    if (!parts) return sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < cap; i++) {
        const sm_tensor_info *t = run[i];
        const char *pn = t->name + pre + 1;
        if (strlen(pn) >= sizeof parts->name || t->ndim > 4) {
            s = sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\" cannot be a part of \"%s\"", t->file,
                        t->name, name);
            break;
        }
        sm_part *p = &parts[np++];
        snprintf(p->name, sizeof p->name, "%s", pn);
        p->dtype = t->dtype;
        p->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) p->shape[d] = t->shape[d];
        p->data = t->data;
        p->nbytes = t->nbytes;
        where = t->file;
    }
    if (s == SM_OK) s = sm_op_from_parts(spec, m, n, parts, np, out);
    if (s != SM_OK) {
        sm_error_prefix("%s: operator \"%s\" (%s, %lldx%lld): ", where, name, spec, (long long)m,
                        (long long)n);
        free(parts);
        return s;
    }
    // Every stored part must be one the spec uses; leftovers mean the metadata lies.
    sm_part *used = NULL;
    int nused = 0;
    s = sm_op_parts(*out, &used, &nused);
    for (int i = 0; i < np && s == SM_OK; i++) {
        bool found = false;
        for (int j = 0; j < nused && !found; j++) found = !strcmp(parts[i].name, used[j].name);
        if (!found)
            s = sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s.%s\" is not a part of %s", where, name,
                        parts[i].name, spec);
    }
    free(used);
    free(parts);
    if (s != SM_OK) {
        sm_op_free(*out);
        *out = NULL;
    }
    return s;
}
