// GGUF reader (ggml's docs/gguf.md): the file is mmapped and checked as a whole on open.
//
// Layout, little-endian: u32 magic "GGUF", u32 version (2 or 3; version 1 had 32-bit counts),
// u64 tensor count, u64 key/value count; the key/value pairs (key: u64 length + bytes; u32 value
// type; value); the tensor infos (name; u32 n_dims; u64 dims[n_dims], innermost first; u32 ggml
// type; u64 offset into the data section); zero padding to general.alignment (default 32); the
// data section. Strings are u64 length + bytes, no terminator; arrays are u32 element type +
// u64 count + elements, and may nest.
//
// Nothing is trusted: a count is compared with the bytes left before anything is allocated for
// it (every record has a least size), each string and array must fit in what is left of the
// file, nesting is bounded, and each tensor's byte size (overflow-checked) must fit between its
// aligned offset and the end of the file.
#include "../base/base.h"
#include "../kernels/ggml_quants.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u // "GGUF" read as a little-endian u32
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DEPTH 8   // nested arrays
#define GGUF_MAX_NAME 4096 // tensor names (llama.cpp allows 63 bytes)
#define GGUF_MAX_ALIGNMENT (1u << 30)

typedef struct gval {
    uint32_t type;
    uint32_t elem;      // arrays: element type
    int64_t count;      // arrays: elements; strings: bytes
    const uint8_t *p;   // scalars and fixed-size array elements: their bytes; strings: the bytes
    uint64_t *offs;     // arrays of strings: (count) file offsets of each string's length field
    struct gval *items; // arrays of arrays: (count) the element arrays
    char *str;          // strings: a NUL-terminated copy
} gval;

typedef struct gkv {
    char *key;
    gval v;
} gkv;

struct sm_gguf {
    char *path;
    const uint8_t *map; // (size) the whole file
    size_t size;
    uint32_t version;
    uint64_t alignment;
    int64_t nkv;
    gkv *kv;
    int64_t nt;
    sm_gguf_tensor *t;
    const sm_gguf_tensor **by_name; // (nt) sorted by name
    char *names;                    // the tensors' names back to back, NUL-terminated
};

static const int k_scalar_size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const k_vtype_name[13] = {"U8",   "I8",     "U16",   "I16", "U32", "I32", "F32",
                                             "BOOL", "STRING", "ARRAY", "U64", "I64", "F64"};

static bool known_vtype(uint32_t t) {
    return t <= SM_GGUF_F64;
}

// --- a cursor over the mapping ----------------------------------------------------------------

typedef struct rd {
    const uint8_t *base;
    size_t size, pos;
    const char *path;
} rd;

static size_t left(const rd *r) {
    return r->size - r->pos;
}

static sm_status short_file(const rd *r, const char *what) {
    return sm_fail(SM_ERR_FORMAT,
                   "%s: file too short: %s at byte %zu runs past the end (%zu bytes)", r->path,
                   what, r->pos, r->size);
}

static sm_status get_u32(rd *r, uint32_t *v, const char *what) {
    if (left(r) < 4) return short_file(r, what);
    memcpy(v, r->base + r->pos, 4);
    r->pos += 4;
    return SM_OK;
}

static sm_status get_u64(rd *r, uint64_t *v, const char *what) {
    if (left(r) < 8) return short_file(r, what);
    memcpy(v, r->base + r->pos, 8);
    r->pos += 8;
    return SM_OK;
}

// A string: *s points into the mapping, *len bytes.
static sm_status get_str(rd *r, const uint8_t **s, uint64_t *len, const char *what) {
    size_t at = r->pos;
    sm_status st = get_u64(r, len, what);
    if (st != SM_OK) return st;
    if (*len > left(r))
        return sm_fail(SM_ERR_FORMAT,
                       "%s: %s at byte %zu has length %" PRIu64 ", longer than the %zu bytes left "
                       "in the file",
                       r->path, what, at, *len, left(r));
    *s = r->base + r->pos;
    r->pos += *len;
    return SM_OK;
}

static char *dup_bytes(const uint8_t *s, uint64_t len) {
    char *c = malloc((size_t)len + 1);
    if (c) {
        if (len) memcpy(c, s, (size_t)len);
        c[len] = 0;
    }
    return c;
}

static void free_val(gval *v) {
    if (v->items)
        for (int64_t i = 0; i < v->count; i++) free_val(&v->items[i]);
    free(v->items);
    free(v->offs);
    free(v->str);
    memset(v, 0, sizeof *v);
}

// The value of type `type` at the cursor into v. key names it in messages.
static sm_status get_val(rd *r, uint32_t type, gval *v, const char *key, int depth) {
    memset(v, 0, sizeof *v);
    v->type = type;
    if (!known_vtype(type))
        return sm_fail(SM_ERR_FORMAT, "%s: key \"%s\": unknown value type %u (0..12 expected)",
                       r->path, key, type);
    sm_status st;
    if (type == SM_GGUF_STRING) {
        uint64_t len;
        if ((st = get_str(r, &v->p, &len, "a string value")) != SM_OK) {
            sm_error_prefix("key \"%s\": ", key);
            return st;
        }
        v->count = (int64_t)len;
        v->str = dup_bytes(v->p, len);
        return v->str ? SM_OK : sm_fail(SM_ERR_ALLOC, "%s: out of memory", r->path);
    }
    if (type != SM_GGUF_ARRAY) {
        size_t n = (size_t)k_scalar_size[type];
        if (left(r) < n) return short_file(r, "a value");
        v->p = r->base + r->pos;
        if (type == SM_GGUF_BOOL && *v->p > 1)
            return sm_fail(SM_ERR_FORMAT, "%s: key \"%s\": bool value %u (0 or 1 expected)",
                           r->path, key, *v->p);
        r->pos += n;
        return SM_OK;
    }
    if (depth >= GGUF_MAX_DEPTH)
        return sm_fail(SM_ERR_FORMAT, "%s: key \"%s\": arrays nested deeper than %d", r->path, key,
                       GGUF_MAX_DEPTH);
    uint64_t count = 0;
    if ((st = get_u32(r, &v->elem, "an array's element type")) != SM_OK ||
        (st = get_u64(r, &count, "an array's count")) != SM_OK)
        return st;
    if (!known_vtype(v->elem))
        return sm_fail(SM_ERR_FORMAT, "%s: key \"%s\": array of unknown value type %u", r->path,
                       key, v->elem);
    // Each element takes at least this many bytes: a count beyond the file is refused here,
    // before anything is allocated for it.
    size_t least = v->elem == SM_GGUF_STRING  ? 8
                   : v->elem == SM_GGUF_ARRAY ? 12
                                              : (size_t)k_scalar_size[v->elem];
    if (count > left(r) / least)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: key \"%s\": an array of %" PRIu64 " %s elements needs at least %" PRIu64
                       " bytes, more than the %zu left in the file",
                       r->path, key, count, k_vtype_name[v->elem],
                       count > UINT64_MAX / least ? UINT64_MAX : count * least, left(r));
    v->count = (int64_t)count;
    v->p = r->base + r->pos;
    if (v->elem == SM_GGUF_STRING) {
        v->offs = malloc((size_t)(count ? count : 1) * sizeof *v->offs);
        if (!v->offs) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", r->path);
        for (uint64_t i = 0; i < count; i++) {
            v->offs[i] = r->pos;
            const uint8_t *s;
            uint64_t len;
            if ((st = get_str(r, &s, &len, "a string in an array")) != SM_OK) {
                sm_error_prefix("key \"%s\": element %" PRIu64 ": ", key, i);
                return st;
            }
        }
        return SM_OK;
    }
    if (v->elem == SM_GGUF_ARRAY) {
        v->items = calloc((size_t)(count ? count : 1), sizeof *v->items);
        if (!v->items) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", r->path);
        for (uint64_t i = 0; i < count; i++)
            if ((st = get_val(r, SM_GGUF_ARRAY, &v->items[i], key, depth + 1)) != SM_OK) return st;
        return SM_OK;
    }
    if (v->elem == SM_GGUF_BOOL)
        for (uint64_t i = 0; i < count; i++)
            if (v->p[i] > 1)
                return sm_fail(SM_ERR_FORMAT,
                               "%s: key \"%s\": element %" PRIu64 " is bool value %u (0 or 1)",
                               r->path, key, i, v->p[i]);
    r->pos += (size_t)count * least;
    return SM_OK;
}

// --- open -------------------------------------------------------------------------------------

void sm_gguf_close(sm_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; g->kv && i < g->nkv; i++) {
        free(g->kv[i].key);
        free_val(&g->kv[i].v);
    }
    free(g->kv);
    free(g->t);
    free(g->by_name);
    free(g->names);
    if (g->map) munmap((void *)g->map, g->size);
    free(g->path);
    free(g);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const sm_gguf_tensor *const *)a)->name,
                  (*(const sm_gguf_tensor *const *)b)->name);
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static sm_status read_kvs(sm_gguf *g, rd *r, uint64_t nkv) {
    // A pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    if (nkv > left(r) / 13)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: %" PRIu64
                       " key/value pairs cannot fit in the %zu bytes after the header",
                       r->path, nkv, left(r));
    g->kv = calloc((size_t)(nkv ? nkv : 1), sizeof *g->kv);
    if (!g->kv) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", r->path);
    sm_status st;
    for (uint64_t i = 0; i < nkv; i++) {
        const uint8_t *k;
        uint64_t klen;
        uint32_t type = 0;
        if ((st = get_str(r, &k, &klen, "a key")) != SM_OK) return st;
        if (klen == 0 || klen > 65535)
            return sm_fail(SM_ERR_FORMAT, "%s: key %" PRIu64 " has length %" PRIu64 " (1..65535)",
                           r->path, i, klen);
        if (memchr(k, 0, (size_t)klen))
            return sm_fail(SM_ERR_FORMAT, "%s: key %" PRIu64 " holds a NUL byte", r->path, i);
        g->kv[i].key = dup_bytes(k, klen);
        if (!g->kv[i].key) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", r->path);
        g->nkv = (int64_t)i + 1;
        if ((st = get_u32(r, &type, "a value type")) != SM_OK) return st;
        if ((st = get_val(r, type, &g->kv[i].v, g->kv[i].key, 0)) != SM_OK) return st;
    }
    // Duplicate keys would make lookups ambiguous.
    const char **keys = malloc((size_t)(g->nkv ? g->nkv : 1) * sizeof *keys);
    if (!keys) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", r->path);
    for (int64_t i = 0; i < g->nkv; i++) keys[i] = g->kv[i].key;
    qsort(keys, (size_t)g->nkv, sizeof *keys, cmp_cstr);
    st = SM_OK;
    for (int64_t i = 1; i < g->nkv && st == SM_OK; i++)
        if (!strcmp(keys[i - 1], keys[i]))
            st = sm_fail(SM_ERR_FORMAT, "%s: key \"%s\" appears twice", r->path, keys[i]);
    free(keys);
    return st;
}

static const gval *find_val(const sm_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->nkv; i++)
        if (!strcmp(g->kv[i].key, key)) return &g->kv[i].v;
    return NULL;
}

// An integer value of any integer type (bool excluded) into *v; false for other types and for a
// U64 beyond INT64_MAX.
static bool val_int(uint32_t type, const uint8_t *p, int64_t *v) {
    switch (type) {
    case SM_GGUF_U8:
        *v = *p;
        return true;
    case SM_GGUF_I8:
        *v = (int8_t)*p;
        return true;
    case SM_GGUF_U16: {
        uint16_t x;
        memcpy(&x, p, 2);
        *v = x;
        return true;
    }
    case SM_GGUF_I16: {
        int16_t x;
        memcpy(&x, p, 2);
        *v = x;
        return true;
    }
    case SM_GGUF_U32: {
        uint32_t x;
        memcpy(&x, p, 4);
        *v = x;
        return true;
    }
    case SM_GGUF_I32: {
        int32_t x;
        memcpy(&x, p, 4);
        *v = x;
        return true;
    }
    case SM_GGUF_U64: {
        uint64_t x;
        memcpy(&x, p, 8);
        if (x > INT64_MAX) return false;
        *v = (int64_t)x;
        return true;
    }
    case SM_GGUF_I64:
        memcpy(v, p, 8);
        return true;
    default:
        return false;
    }
}

static bool val_float(uint32_t type, const uint8_t *p, double *v) {
    if (type == SM_GGUF_F32) {
        float f;
        memcpy(&f, p, 4);
        *v = f;
        return true;
    }
    if (type == SM_GGUF_F64) {
        memcpy(v, p, 8);
        return true;
    }
    return false;
}

static sm_status read_tensors(sm_gguf *g, rd *r, uint64_t nt) {
    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8
    // (offset) bytes.
    if (nt > left(r) / 32)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: %" PRIu64
                       " tensor infos cannot fit in the %zu bytes after the metadata",
                       r->path, nt, left(r));
    g->t = calloc((size_t)(nt ? nt : 1), sizeof *g->t);
    g->by_name = malloc((size_t)(nt ? nt : 1) * sizeof *g->by_name);
    // The names fit in what is left of the file, plus one terminator each.
    g->names = malloc(left(r) + (size_t)nt + 1);
    if (!g->t || !g->by_name || !g->names)
        return sm_fail(SM_ERR_ALLOC, "%s: out of memory", r->path);
    size_t used = 0;
    sm_status st;
    for (uint64_t i = 0; i < nt; i++) {
        sm_gguf_tensor *t = &g->t[i];
        const uint8_t *name;
        uint64_t nlen;
        uint32_t nd = 0, type = 0;
        if ((st = get_str(r, &name, &nlen, "a tensor name")) != SM_OK) return st;
        if (nlen == 0 || nlen > GGUF_MAX_NAME || memchr(name, 0, (size_t)nlen))
            return sm_fail(SM_ERR_FORMAT,
                           "%s: tensor %" PRIu64 ": name of %" PRIu64
                           " bytes (1..%d, no NUL bytes expected)",
                           r->path, i, nlen, GGUF_MAX_NAME);
        memcpy(g->names + used, name, (size_t)nlen);
        g->names[used + nlen] = 0;
        t->name = g->names + used;
        used += (size_t)nlen + 1;
        g->nt = (int64_t)i + 1;
        if ((st = get_u32(r, &nd, "a tensor's dimension count")) != SM_OK) return st;
        if (nd < 1 || nd > 4)
            return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\" has %u dimensions (1..4 expected)",
                           r->path, t->name, nd);
        t->ndim = (int)nd;
        uint64_t dims[4];
        for (uint32_t d = 0; d < nd; d++)
            if ((st = get_u64(r, &dims[d], "a tensor dimension")) != SM_OK) return st;
        if ((st = get_u32(r, &type, "a tensor type")) != SM_OK ||
            (st = get_u64(r, &t->offset, "a tensor offset")) != SM_OK)
            return st;
        int64_t block, bytes;
        if (!sm_ggml_type_size(type, &block, &bytes))
            return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\" has unknown ggml type %u", r->path,
                           t->name, type);
        t->type = type;
        t->type_name = sm_ggml_type_name(type);
        // Element count without overflow: every dimension and the product stay below 2^62.
        uint64_t ne = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if (dims[d] > ((uint64_t)1 << 62) || (dims[d] && ne > ((uint64_t)1 << 62) / dims[d]))
                return sm_fail(SM_ERR_FORMAT,
                               "%s: tensor \"%s\": dimensions too large (dim %u = %" PRIu64 ")",
                               r->path, t->name, d, dims[d]);
            ne *= dims[d];
            t->shape[nd - 1 - d] = (int64_t)dims[d]; // PyTorch order
        }
        if (dims[0] % (uint64_t)block)
            return sm_fail(SM_ERR_FORMAT,
                           "%s: tensor \"%s\": rows of %" PRIu64 " elements are not whole %s "
                           "blocks of %lld",
                           r->path, t->name, dims[0], t->type_name, (long long)block);
        t->nelem = (int64_t)ne;
        uint64_t nb = ne / (uint64_t)block;
        if (nb > UINT64_MAX / (uint64_t)bytes || nb * (uint64_t)bytes > SIZE_MAX)
            return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\": byte size overflows", r->path,
                           t->name);
        t->nbytes = (size_t)(nb * (uint64_t)bytes);
        g->by_name[i] = t;
    }
    qsort(g->by_name, (size_t)g->nt, sizeof *g->by_name, cmp_tensor_name);
    for (int64_t i = 1; i < g->nt; i++)
        if (!strcmp(g->by_name[i - 1]->name, g->by_name[i]->name))
            return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\" appears twice", r->path,
                           g->by_name[i]->name);
    return SM_OK;
}

static sm_status parse(sm_gguf *g) {
    rd r = {g->map, g->size, 0, g->path};
    uint32_t magic;
    uint64_t nt = 0, nkv = 0;
    sm_status st;
    if (g->size < 4) return short_file(&r, "the magic");
    memcpy(&magic, g->map, 4);
    if (magic != GGUF_MAGIC)
        return sm_fail(SM_ERR_FORMAT, "%s: not a GGUF file (magic %02x %02x %02x %02x)", g->path,
                       g->map[0], g->map[1], g->map[2], g->map[3]);
    r.pos = 4;
    if ((st = get_u32(&r, &g->version, "the version")) != SM_OK) return st;
    if (g->version == 1)
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: GGUF version 1 (32-bit counts) is not supported",
                       g->path);
    if (g->version != 2 && g->version != 3) {
        uint32_t swapped = __builtin_bswap32(g->version);
        if (swapped == 2 || swapped == 3)
            return sm_fail(SM_ERR_UNSUPPORTED, "%s: a big-endian GGUF file is not supported",
                           g->path);
        return sm_fail(SM_ERR_FORMAT, "%s: GGUF version %u (2 or 3 expected)", g->path, g->version);
    }
    if ((st = get_u64(&r, &nt, "the tensor count")) != SM_OK ||
        (st = get_u64(&r, &nkv, "the key/value count")) != SM_OK ||
        (st = read_kvs(g, &r, nkv)) != SM_OK || (st = read_tensors(g, &r, nt)) != SM_OK)
        return st;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gval *al = find_val(g, "general.alignment");
    if (al) {
        int64_t a;
        if (al->type == SM_GGUF_ARRAY || !val_int(al->type, al->p, &a) || a < 1 ||
            a > GGUF_MAX_ALIGNMENT || (a & (a - 1)))
            return sm_fail(SM_ERR_FORMAT,
                           "%s: general.alignment must be an integer power of two up to 2^30",
                           g->path);
        g->alignment = (uint64_t)a;
    }
    size_t data = r.pos + (size_t)((g->alignment - r.pos % g->alignment) % g->alignment);
    if (g->nt && data > g->size)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: file too short: the data section would start at byte %zu of %zu",
                       g->path, data, g->size);
    for (int64_t i = 0; i < g->nt; i++) {
        sm_gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment)
            return sm_fail(SM_ERR_FORMAT,
                           "%s: tensor \"%s\": offset %" PRIu64 " is not a multiple of the "
                           "alignment %" PRIu64,
                           g->path, t->name, t->offset, g->alignment);
        size_t room = g->size - data;
        if (t->offset > room || t->nbytes > room - t->offset)
            return sm_fail(SM_ERR_FORMAT,
                           "%s: tensor \"%s\": %zu bytes at offset %" PRIu64
                           " run past the end of the file (%zu bytes of data)",
                           g->path, t->name, t->nbytes, t->offset, room);
        t->data = g->map + data + t->offset;
    }
    return SM_OK;
}

sm_status sm_gguf_open(const char *path, sm_gguf **out) {
    *out = NULL;
    sm_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sm_status s = sm_fail(SM_ERR_IO, "%s: %s", path, strerror(errno));
        sm_gguf_close(g);
        return s;
    }
    struct stat sb;
    sm_status st = SM_OK;
    if (fstat(fd, &sb) != 0)
        st = sm_fail(SM_ERR_IO, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = sm_fail(SM_ERR_IO, "%s: not a regular file", path);
    else if (sb.st_size == 0)
        st = sm_fail(SM_ERR_FORMAT, "%s: empty file (not GGUF)", path);
    if (st == SM_OK) {
        g->size = (size_t)sb.st_size;
        void *map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED)
            st = sm_fail(SM_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        else
            g->map = map;
    }
    close(fd);
    if (st == SM_OK) st = parse(g);
    if (st != SM_OK) {
        sm_gguf_close(g);
        return st;
    }
    *out = g;
    return SM_OK;
}

// --- accessors ----------------------------------------------------------------------------------

const char *sm_gguf_path(const sm_gguf *g) {
    return g->path;
}
uint32_t sm_gguf_version(const sm_gguf *g) {
    return g->version;
}
uint64_t sm_gguf_alignment(const sm_gguf *g) {
    return g->alignment;
}
int64_t sm_gguf_tensor_count(const sm_gguf *g) {
    return g->nt;
}

const sm_gguf_tensor *sm_gguf_tensor_get(const sm_gguf *g, int64_t i) {
    SM_ASSERT(i >= 0 && i < g->nt);
    return &g->t[i];
}

const sm_gguf_tensor *sm_gguf_find(const sm_gguf *g, const char *name) {
    sm_gguf_tensor key = {.name = name};
    const sm_gguf_tensor *kp = &key;
    const sm_gguf_tensor **hit =
        bsearch(&kp, g->by_name, (size_t)g->nt, sizeof *g->by_name, cmp_tensor_name);
    return hit ? *hit : NULL;
}

sm_status sm_gguf_read_f32(const sm_gguf *g, const char *name, float **out, int64_t *n) {
    *out = NULL;
    *n = 0;
    const sm_gguf_tensor *t = sm_gguf_find(g, name);
    if (!t) return sm_fail(SM_ERR_NOT_FOUND, "%s: no tensor \"%s\"", g->path, name);
    if (!sm_ggml_can_decode(t->type))
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: tensor \"%s\" is %s, which has no decoder here",
                       g->path, name, t->type_name);
    if ((uint64_t)t->nelem > SIZE_MAX / sizeof(float))
        return sm_fail(SM_ERR_ALLOC, "%s: tensor \"%s\" is too large", g->path, name);
    float *w = malloc((size_t)(t->nelem ? t->nelem : 1) * sizeof(float));
    if (!w)
        return sm_fail(SM_ERR_ALLOC, "%s: out of memory for tensor \"%s\" (%lld values)", g->path,
                       name, (long long)t->nelem);
    sm_status st = sm_ggml_dequantize(t->type, t->data, t->nelem, w);
    if (st != SM_OK) {
        free(w);
        return st;
    }
    *out = w;
    *n = t->nelem;
    return SM_OK;
}

int64_t sm_gguf_kv_count(const sm_gguf *g) {
    return g->nkv;
}

const char *sm_gguf_kv_key(const sm_gguf *g, int64_t i) {
    SM_ASSERT(i >= 0 && i < g->nkv);
    return g->kv[i].key;
}

sm_gguf_vtype sm_gguf_kv_type(const sm_gguf *g, int64_t i) {
    SM_ASSERT(i >= 0 && i < g->nkv);
    return (sm_gguf_vtype)g->kv[i].v.type;
}

int64_t sm_gguf_kv_find(const sm_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->nkv; i++)
        if (!strcmp(g->kv[i].key, key)) return i;
    return -1;
}

// Appends printf-style text to buf (cap) at *len, never past the end.
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    *len = n < 0 ? cap : *len + (size_t)n;
}

// A string, quoted, with control bytes escaped, at most 64 bytes of it.
static void put_str(char *buf, size_t cap, size_t *len, const uint8_t *s, uint64_t n) {
    put(buf, cap, len, "\"");
    for (uint64_t i = 0; i < n && i < 64; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\')
            put(buf, cap, len, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            put(buf, cap, len, "\\x%02x", c);
        else
            put(buf, cap, len, "%c", c);
    }
    put(buf, cap, len, n > 64 ? "\"..." : "\"");
}

static void put_scalar(char *buf, size_t cap, size_t *len, uint32_t type, const uint8_t *p) {
    int64_t i;
    double f;
    if (type == SM_GGUF_BOOL)
        put(buf, cap, len, "%s", *p ? "true" : "false");
    else if (val_int(type, p, &i))
        put(buf, cap, len, "%lld", (long long)i);
    else if (val_float(type, p, &f))
        put(buf, cap, len, "%.9g", f);
    else { // a U64 past INT64_MAX
        uint64_t u;
        memcpy(&u, p, 8);
        put(buf, cap, len, "%" PRIu64, u);
    }
}

static void put_val(const gval *v, const uint8_t *map, char *buf, size_t cap, size_t *len) {
    if (v->type == SM_GGUF_STRING) {
        put_str(buf, cap, len, v->p, (uint64_t)v->count);
    } else if (v->type != SM_GGUF_ARRAY) {
        put_scalar(buf, cap, len, v->type, v->p);
    } else {
        put(buf, cap, len, "[%s x %lld]", k_vtype_name[v->elem], (long long)v->count);
        for (int64_t i = 0; i < v->count && i < 8 && *len < cap; i++) {
            put(buf, cap, len, i ? ", " : " ");
            if (v->elem == SM_GGUF_STRING) {
                uint64_t n;
                memcpy(&n, map + v->offs[i], 8);
                put_str(buf, cap, len, map + v->offs[i] + 8, n);
            } else if (v->elem == SM_GGUF_ARRAY) {
                put_val(&v->items[i], map, buf, cap, len);
            } else {
                put_scalar(buf, cap, len, v->elem, v->p + i * k_scalar_size[v->elem]);
            }
        }
        if (v->count > 8) put(buf, cap, len, ", ...");
    }
}

void sm_gguf_kv_format(const sm_gguf *g, int64_t i, char *buf, size_t cap) {
    SM_ASSERT(i >= 0 && i < g->nkv && cap > 0);
    size_t len = 0;
    buf[0] = 0;
    put_val(&g->kv[i].v, g->map, buf, cap, &len);
}

static sm_status lookup(const sm_gguf *g, const char *key, const gval **v) {
    *v = find_val(g, key);
    return *v ? SM_OK : sm_fail(SM_ERR_NOT_FOUND, "%s: no key \"%s\"", g->path, key);
}

static sm_status wrong_type(const sm_gguf *g, const char *key, const gval *v, const char *want) {
    return sm_fail(SM_ERR_FORMAT, "%s: key \"%s\" is %s, %s expected", g->path, key,
                   k_vtype_name[v->type], want);
}

sm_status sm_gguf_get_int(const sm_gguf *g, const char *key, int64_t *out) {
    const gval *v;
    sm_status st = lookup(g, key, &v);
    if (st != SM_OK) return st;
    if (v->type == SM_GGUF_ARRAY || v->type == SM_GGUF_STRING || !val_int(v->type, v->p, out))
        return wrong_type(g, key, v, "an integer (up to INT64_MAX)");
    return SM_OK;
}

sm_status sm_gguf_get_float(const sm_gguf *g, const char *key, double *out) {
    const gval *v;
    sm_status st = lookup(g, key, &v);
    if (st != SM_OK) return st;
    if (v->type == SM_GGUF_ARRAY || v->type == SM_GGUF_STRING || !val_float(v->type, v->p, out))
        return wrong_type(g, key, v, "F32 or F64");
    return SM_OK;
}

sm_status sm_gguf_get_bool(const sm_gguf *g, const char *key, bool *out) {
    const gval *v;
    sm_status st = lookup(g, key, &v);
    if (st != SM_OK) return st;
    if (v->type != SM_GGUF_BOOL) return wrong_type(g, key, v, "BOOL");
    *out = *v->p != 0;
    return SM_OK;
}

sm_status sm_gguf_get_str(const sm_gguf *g, const char *key, const char **s, size_t *len) {
    const gval *v;
    sm_status st = lookup(g, key, &v);
    if (st != SM_OK) return st;
    if (v->type != SM_GGUF_STRING) return wrong_type(g, key, v, "STRING");
    *s = v->str;
    if (len) *len = (size_t)v->count;
    return SM_OK;
}

sm_status sm_gguf_get_array(const sm_gguf *g, const char *key, sm_gguf_vtype *elem,
                            int64_t *count) {
    const gval *v;
    sm_status st = lookup(g, key, &v);
    if (st != SM_OK) return st;
    if (v->type != SM_GGUF_ARRAY) return wrong_type(g, key, v, "ARRAY");
    if (elem) *elem = (sm_gguf_vtype)v->elem;
    *count = v->count;
    return SM_OK;
}

static sm_status array_elem(const sm_gguf *g, const char *key, int64_t i, const gval **v) {
    sm_status st = lookup(g, key, v);
    if (st != SM_OK) return st;
    if ((*v)->type != SM_GGUF_ARRAY) return wrong_type(g, key, *v, "ARRAY");
    if (i < 0 || i >= (*v)->count)
        return sm_fail(SM_ERR_ARG, "%s: key \"%s\": index %lld outside the %lld elements", g->path,
                       key, (long long)i, (long long)(*v)->count);
    return SM_OK;
}

sm_status sm_gguf_array_str(const sm_gguf *g, const char *key, int64_t i, const char **s,
                            size_t *len) {
    const gval *v;
    sm_status st = array_elem(g, key, i, &v);
    if (st != SM_OK) return st;
    if (v->elem != SM_GGUF_STRING)
        return sm_fail(SM_ERR_FORMAT, "%s: key \"%s\" is an array of %s, STRING expected", g->path,
                       key, k_vtype_name[v->elem]);
    uint64_t n;
    memcpy(&n, g->map + v->offs[i], 8);
    *s = (const char *)g->map + v->offs[i] + 8;
    *len = (size_t)n;
    return SM_OK;
}

sm_status sm_gguf_array_int(const sm_gguf *g, const char *key, int64_t i, int64_t *out) {
    const gval *v;
    sm_status st = array_elem(g, key, i, &v);
    if (st != SM_OK) return st;
    const uint8_t *p =
        v->elem <= SM_GGUF_F64 && k_scalar_size[v->elem] ? v->p + i * k_scalar_size[v->elem] : NULL;
    if (p && v->elem == SM_GGUF_BOOL) {
        *out = *p;
        return SM_OK;
    }
    if (!p || !val_int(v->elem, p, out))
        return sm_fail(SM_ERR_FORMAT,
                       "%s: key \"%s\": element %lld of an array of %s is not an integer", g->path,
                       key, (long long)i, k_vtype_name[v->elem]);
    return SM_OK;
}

sm_status sm_gguf_array_float(const sm_gguf *g, const char *key, int64_t i, double *out) {
    const gval *v;
    sm_status st = array_elem(g, key, i, &v);
    if (st != SM_OK) return st;
    if (v->elem != SM_GGUF_F32 && v->elem != SM_GGUF_F64)
        return sm_fail(SM_ERR_FORMAT, "%s: key \"%s\" is an array of %s, F32 or F64 expected",
                       g->path, key, k_vtype_name[v->elem]);
    val_float(v->elem, v->p + i * k_scalar_size[v->elem], out);
    return SM_OK;
}
