// safetensors writer: collects tensors (by reference) and metadata, then writes the file
// atomically. Tensors are laid out by descending element size, then by name, after a header padded
// with spaces to a multiple of 8, so every tensor is aligned to its element size in the file.
#include "../base/base.h"

#include <string.h>

#define SM_ST_MAX_HEADER 100000000

typedef struct wt {
    char *name;
    sm_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t nbytes;
} wt;

struct sm_st_writer {
    int n, cap;
    wt *t;
    int nmeta, mcap;
    char **mkey, **mval;
};

sm_st_writer *sm_st_writer_init(void) {
    return calloc(1, sizeof(sm_st_writer));
}

void sm_st_writer_free(sm_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->mkey[i]);
        free(w->mval[i]);
    }
    free(w->t);
    free(w->mkey);
    free(w->mval);
    free(w);
}

sm_status sm_st_writer_add(sm_st_writer *w, const char *name, sm_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t nbytes) {
    if (!name || !name[0] || strcmp(name, "__metadata__") == 0)
        return sm_fail(SM_ERR_ARG, "safetensors writer: invalid tensor name \"%s\"",
                       name ? name : "(null)");
    if ((int)dtype < 0 || dtype >= SM_DTYPE_COUNT)
        return sm_fail(SM_ERR_ARG, "safetensors writer: tensor \"%s\" has no known dtype", name);
    if (ndim < 0 || ndim > 8 || (ndim > 0 && !shape))
        return sm_fail(SM_ERR_ARG, "safetensors writer: tensor \"%s\" has %d dimensions", name,
                       ndim);
    bool ok = true;
    size_t need = sm_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return sm_fail(SM_ERR_ARG, "safetensors writer: tensor \"%s\" has shape[%d] = %lld",
                           name, i, (long long)shape[i]);
        need = sm_mul_size(need, (size_t)shape[i], &ok);
    }
    if (!ok || need != nbytes || (nbytes && !data))
        return sm_fail(SM_ERR_ARG,
                       "safetensors writer: tensor \"%s\" is given %zu bytes, its shape and "
                       "dtype need %zu",
                       name, nbytes, need);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        wt *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return sm_fail(SM_ERR_ALLOC, "out of memory");
        w->t = t;
        w->cap = cap;
    }
    wt *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return sm_fail(SM_ERR_ALLOC, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    return SM_OK;
}

// A later value for the same key replaces the earlier one.
sm_status sm_st_writer_meta(sm_st_writer *w, const char *key, const char *value) {
    if (!key || !value) return sm_fail(SM_ERR_ARG, "safetensors writer: NULL metadata");
    char *v = strdup(value);
    if (!v) return sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->mkey[i], key) == 0) {
            free(w->mval[i]);
            w->mval[i] = v;
            return SM_OK;
        }
    if (w->nmeta == w->mcap) {
        int cap = w->mcap ? 2 * w->mcap : 16;
        char **k = realloc(w->mkey, (size_t)cap * sizeof *k);
        if (k) w->mkey = k;
        char **vv = k ? realloc(w->mval, (size_t)cap * sizeof *vv) : NULL;
        if (vv) w->mval = vv;
        if (!k || !vv) {
            free(v);
            return sm_fail(SM_ERR_ALLOC, "out of memory");
        }
        w->mcap = cap;
    }
    if (!(w->mkey[w->nmeta] = strdup(key))) {
        free(v);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    w->mval[w->nmeta++] = v;
    return SM_OK;
}

// --- header text --------------------------------------------------------------------------

typedef struct strbuf {
    char *s;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_cat(strbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

// A JSON string literal; control characters escaped, other bytes (UTF-8) passed through.
static void sb_json_str(strbuf *b, const char *s) {
    sb_cat(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_cat(b, esc);
        } else {
            sb_put(b, s, 1);
        }
    }
    sb_cat(b, "\"");
}

static int cmp_layout(const void *a, const void *b) {
    const wt *x = *(wt *const *)a, *y = *(wt *const *)b;
    size_t ax = sm_dtype_size(x->dtype), ay = sm_dtype_size(y->dtype);
    if (ax != ay) return ax > ay ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(wt *const *)a)->name, (*(wt *const *)b)->name);
}

static sm_status build_header(const sm_st_writer *w, wt **order, strbuf *h) {
    char num[64];
    sb_cat(h, "{");
    if (w->nmeta) {
        sb_cat(h, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_cat(h, ",");
            sb_json_str(h, w->mkey[i]);
            sb_cat(h, ":");
            sb_json_str(h, w->mval[i]);
        }
        sb_cat(h, "}");
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const wt *t = order[i];
        if (i || w->nmeta) sb_cat(h, ",");
        sb_json_str(h, t->name);
        sb_cat(h, ":{\"dtype\":\"");
        sb_cat(h, sm_dtype_name(t->dtype));
        sb_cat(h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_cat(h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        sb_cat(h, num);
        off += t->nbytes;
    }
    sb_cat(h, "}");
    while (h->len % 8) sb_cat(h, " ");
    if (h->oom) return sm_fail(SM_ERR_ALLOC, "out of memory for the safetensors header");
    if (h->len > SM_ST_MAX_HEADER)
        return sm_fail(SM_ERR_ARG, "safetensors header of %zu bytes exceeds the %d-byte limit",
                       h->len, SM_ST_MAX_HEADER);
    return SM_OK;
}

sm_status sm_st_writer_write(sm_st_writer *w, const char *path, bool force) {
    wt **order = malloc(((size_t)w->n + 1) * sizeof *order);
    if (!order) return sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < w->n; i++) order[i] = &w->t[i];
    qsort(order, (size_t)w->n, sizeof *order, cmp_name);
    for (int i = 1; i < w->n; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
            sm_status s =
                sm_fail(SM_ERR_ARG, "%s: tensor \"%s\" added twice", path, order[i]->name);
            free(order);
            return s;
        }
    qsort(order, (size_t)w->n, sizeof *order, cmp_layout);
    strbuf h = {0};
    sm_status s = build_header(w, order, &h);
    sm_atomic_file a;
    if (s == SM_OK) s = sm_atomic_open(&a, path, force);
    if (s == SM_OK) {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
        bool ok = fwrite(len8, 1, 8, a.f) == 8 && fwrite(h.s, 1, h.len, a.f) == h.len;
        for (int i = 0; i < w->n && ok; i++)
            ok = !order[i]->nbytes ||
                 fwrite(order[i]->data, 1, order[i]->nbytes, a.f) == order[i]->nbytes;
        if (!ok) {
            s = sm_fail(SM_ERR_IO, "%s: write failed", path);
            sm_atomic_abort(&a);
        } else {
            s = sm_atomic_commit(&a);
        }
    }
    free(h.s);
    free(order);
    return s;
}
