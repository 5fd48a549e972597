// A safetensors file written in one streaming pass (compress_impl.h): tensors are written as they
// come, at increasing offsets with no gaps (as readers require), and the header goes last into
// room reserved before the data, padded with spaces. Also: config.json and tokenizer files of a
// written checkpoint, and releasing mapped pages.
#include "compress_impl.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t len) {
    if (b->oom) return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k >= 0) sb_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

static void sb_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            sb_fmt(b, "\\u%04x", c);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

struct sm_swriter {
    int fd;
    char *path;
    int64_t room; // header bytes reserved (a multiple of 8 less the 8-byte length)
    uint64_t pos; // data bytes written
    sbuf entries, meta;
    int nentries, nmeta;
};

int64_t sm_swriter_entry_room(const char *name) {
    // "name":{"dtype":"XXXX","shape":[4 x 20 digits],"data_offsets":[2 x 20 digits]},
    return 6 * (int64_t)strlen(name) + 200;
}

int64_t sm_swriter_meta_room(const char *key, const char *value) {
    return 6 * (int64_t)(strlen(key) + strlen(value)) + 8;
}

sm_status sm_swriter_open(const char *path, int64_t header_room, sm_swriter **out) {
    *out = NULL;
    sm_swriter *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    // The length prefix plus the header end on a multiple of 8, as the format recommends.
    header_room += 64;
    w->room = ((8 + header_room + 7) / 8) * 8 - 8;
    w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        sm_status s = sm_fail(SM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free(w->path), free(w);
        return s;
    }
    if (lseek(w->fd, 8 + w->room, SEEK_SET) < 0) {
        sm_status s = sm_fail(SM_ERR_IO, "%s: seek: %s", path, strerror(errno));
        sm_swriter_abort(w);
        return s;
    }
    *out = w;
    return SM_OK;
}

static sm_status write_all(sm_swriter *w, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t k = write(w->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            return sm_fail(SM_ERR_IO, "%s: write failed: %s", w->path,
                           k < 0 ? strerror(errno) : "no progress");
        p += k, n -= (size_t)k;
    }
    return SM_OK;
}

static sm_status add_entry(sm_swriter *w, const char *name, const char *dtype, int ndim,
                           const int64_t *shape, size_t nbytes) {
    sbuf *b = &w->entries;
    if (w->nentries++) sb_put(b, ",", 1);
    sb_str(b, name);
    sb_fmt(b, ":{\"dtype\":");
    sb_str(b, dtype);
    sb_put(b, ",\"shape\":[", 10);
    for (int i = 0; i < ndim; i++) sb_fmt(b, "%s%lld", i ? "," : "", (long long)shape[i]);
    sb_fmt(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)w->pos,
           (unsigned long long)(w->pos + nbytes));
    w->pos += nbytes;
    return b->oom ? sm_fail(SM_ERR_ALLOC, "out of memory") : SM_OK;
}

sm_status sm_swriter_add(sm_swriter *w, const char *name, const char *dtype, int ndim,
                         const int64_t *shape, const void *data, size_t nbytes) {
    sm_status s = write_all(w, data, nbytes);
    return s == SM_OK ? add_entry(w, name, dtype, ndim, shape, nbytes) : s;
}

sm_status sm_swriter_add_mapped(sm_swriter *w, const char *name, const char *dtype, int ndim,
                                const int64_t *shape, const void *data, size_t nbytes) {
    const size_t piece = (size_t)64 << 20;
    const char *p = data;
    for (size_t off = 0; off < nbytes; off += piece) {
        size_t k = nbytes - off < piece ? nbytes - off : piece;
        sm_status s = write_all(w, p + off, k);
        if (s != SM_OK) return s;
        sm_release_pages(p + off, k);
    }
    return add_entry(w, name, dtype, ndim, shape, nbytes);
}

sm_status sm_swriter_meta(sm_swriter *w, const char *key, const char *value) {
    sbuf *b = &w->meta;
    if (w->nmeta++) sb_put(b, ",", 1);
    sb_str(b, key);
    sb_put(b, ":", 1);
    sb_str(b, value);
    return b->oom ? sm_fail(SM_ERR_ALLOC, "out of memory") : SM_OK;
}

static void swriter_free(sm_swriter *w) {
    if (w->fd >= 0) close(w->fd);
    free(w->entries.p), free(w->meta.p), free(w->path), free(w);
}

void sm_swriter_abort(sm_swriter *w) {
    if (!w) return;
    unlink(w->path);
    swriter_free(w);
}

sm_status sm_swriter_finish(sm_swriter *w) {
    sbuf h = {0};
    sb_put(&h, "{", 1);
    if (w->nmeta) {
        sb_put(&h, "\"__metadata__\":{", 16);
        sb_put(&h, w->meta.p, w->meta.n);
        sb_put(&h, "}", 1);
        if (w->nentries) sb_put(&h, ",", 1);
    }
    if (w->nentries) sb_put(&h, w->entries.p, w->entries.n);
    sb_put(&h, "}", 1);
    sm_status s = SM_OK;
    if (h.oom)
        s = sm_fail(SM_ERR_ALLOC, "out of memory");
    else if ((int64_t)h.n > w->room)
        s = sm_fail(SM_ERR_FORMAT, "%s: the header needs %zu bytes, %lld were reserved (a bug)",
                    w->path, h.n, (long long)w->room);
    if (s == SM_OK) {
        uint8_t *buf = malloc((size_t)(8 + w->room));
        if (!buf) {
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
        } else {
            uint64_t len = (uint64_t)w->room;
            for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(len >> (8 * i));
            memcpy(buf + 8, h.p, h.n);
            memset(buf + 8 + h.n, ' ', (size_t)w->room - h.n);
            if (lseek(w->fd, 0, SEEK_SET) < 0)
                s = sm_fail(SM_ERR_IO, "%s: seek: %s", w->path, strerror(errno));
            if (s == SM_OK) s = write_all(w, buf, (size_t)(8 + w->room));
            free(buf);
        }
    }
    if (s == SM_OK && fsync(w->fd) != 0)
        s = sm_fail(SM_ERR_IO, "%s: fsync failed: %s", w->path, strerror(errno));
    free(h.p);
    if (s != SM_OK) {
        sm_swriter_abort(w);
        return s;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) s = sm_fail(SM_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    if (s != SM_OK) unlink(w->path);
    swriter_free(w);
    return s;
}

// --- operators
// ------------------------------------------------------------------------------------

// A plain dense operator (f32, f16, bf16) is written as an ordinary tensor.
static bool is_plain(const sm_op *op) {
    const char *s = sm_op_spec(op);
    return !strcmp(s, "dense") || !strcmp(s, "dense:dtype=f16") || !strcmp(s, "dense:dtype=bf16");
}

int64_t sm_swriter_op_room(const char *name, const sm_op *op) {
    if (is_plain(op)) return sm_swriter_entry_room(name);
    sm_part *parts = NULL;
    int np = 0;
    if (sm_op_parts(op, &parts, &np) != SM_OK) return -1;
    int64_t room = 0;
    for (int j = 0; j < np; j++)
        room += sm_swriter_entry_room(name) + 6 * (int64_t)strlen(parts[j].name) + 6;
    free(parts);
    // structmat.spec.<name> = spec, structmat.shape.<name> = "out,in"
    return room + 6 * (int64_t)(2 * strlen(name) + strlen(sm_op_spec(op))) + 128;
}

sm_status sm_swriter_add_op(sm_swriter *w, const char *name, const sm_op *op) {
    sm_part *parts = NULL;
    int np = 0;
    sm_status s = sm_op_parts(op, &parts, &np);
    if (s != SM_OK) return s;
    if (is_plain(op) && np == 1) {
        s = sm_swriter_add(w, name, sm_dtype_name(parts[0].dtype), 2, parts[0].shape, parts[0].data,
                           parts[0].nbytes);
        free(parts);
        return s;
    }
    char *key = NULL;
    for (int j = 0; j < np && s == SM_OK; j++) {
        if (asprintf(&key, "%s.%s", name, parts[j].name) < 0) {
            key = NULL;
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
            break;
        }
        s = sm_swriter_add(w, key, sm_dtype_name(parts[j].dtype), parts[j].ndim, parts[j].shape,
                           parts[j].data, parts[j].nbytes);
        free(key);
        key = NULL;
    }
    free(parts);
    char shape[64];
    snprintf(shape, sizeof shape, "%lld,%lld", (long long)sm_op_rows(op),
             (long long)sm_op_cols(op));
    if (s == SM_OK && asprintf(&key, "structmat.spec.%s", name) >= 0) {
        s = sm_swriter_meta(w, key, sm_op_spec(op));
        free(key);
        key = NULL;
        if (s == SM_OK && asprintf(&key, "structmat.shape.%s", name) >= 0) {
            s = sm_swriter_meta(w, key, shape);
            free(key);
        } else if (s == SM_OK) {
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
        }
    } else if (s == SM_OK) {
        s = sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    return s;
}

void sm_release_pages(const void *p, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || n == 0) return;
    // Whole pages inside the range only (a page shared with a neighbour is left alone).
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~((uintptr_t)pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

// --- config.json and tokenizer files
// ---------------------------------------------------------------

static sm_status write_text(const char *path, const char *text, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return sm_fail(SM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    sm_status s = SM_OK;
    while (len > 0 && s == SM_OK) {
        ssize_t k = write(fd, text, len);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            s = sm_fail(SM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        else
            text += k, len -= (size_t)k;
    }
    if (close(fd) != 0 && s == SM_OK)
        s = sm_fail(SM_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    return s;
}

sm_status sm_copy_config(const char *src_dir, const char *dst_dir, bool remove) {
    char *src = NULL, *dst = NULL, *text = NULL;
    size_t size;
    sm_status s = SM_OK;
    if (asprintf(&src, "%s/config.json", src_dir) < 0) src = NULL;
    if (asprintf(&dst, "%s/config.json", dst_dir) < 0) dst = NULL;
    if (!src || !dst) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    if (s == SM_OK) s = sm_read_file(src, &text, &size, 1 << 24);
    cJSON *c = s == SM_OK ? cJSON_Parse(text) : NULL;
    if (s == SM_OK && !cJSON_IsObject(c)) s = sm_fail(SM_ERR_FORMAT, "%s: not a JSON object", src);
    if (s == SM_OK) {
        cJSON_DeleteItemFromObject(c, "structmat");
        if (!remove) {
            cJSON *sm = cJSON_AddObjectToObject(c, "structmat");
            cJSON_AddNumberToObject(sm, "format_version", SM_FORMAT_VERSION);
        }
        char *out = cJSON_Print(c);
        if (!out)
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
        else {
            size_t len = strlen(out);
            out[len] = 0;
            char *nl = NULL;
            if (asprintf(&nl, "%s\n", out) < 0)
                s = sm_fail(SM_ERR_ALLOC, "out of memory");
            else
                s = write_text(dst, nl, len + 1);
            free(nl);
            cJSON_free(out);
        }
    }
    cJSON_Delete(c);
    free(text);
    // Tokenizer files travel with the model (small files, copied whole).
    static const char *const extra[] = {"tokenizer.bin",           "tokenizer.json",
                                        "tokenizer.model",         "tokenizer_config.json",
                                        "special_tokens_map.json", "generation_config.json"};
    for (size_t i = 0; i < sizeof extra / sizeof *extra && s == SM_OK; i++) {
        char *a = NULL, *b = NULL, *data = NULL;
        struct stat sb;
        if (asprintf(&a, "%s/%s", src_dir, extra[i]) < 0) a = NULL;
        if (asprintf(&b, "%s/%s", dst_dir, extra[i]) < 0) b = NULL;
        if (!a || !b)
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
        else if (stat(a, &sb) == 0 && S_ISREG(sb.st_mode)) {
            s = sm_read_file(a, &data, &size, (size_t)1 << 30);
            if (s == SM_OK) s = write_text(b, data, size);
        }
        free(a), free(b), free(data);
    }
    free(src), free(dst);
    return s;
}
