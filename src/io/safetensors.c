// safetensors reader: one file (mmapped), a sharded index, or a directory of files.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON, then the data buffer. Every
// fault in a file is reported as SM_ERR_FORMAT naming the file; nothing is read outside the
// mapping, so a hostile or truncated file yields an error, never a crash. Data need not be
// aligned: tensor data are plain byte pointers into the mapping, read with memcpy.
#include "io_impl.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_file {
    char *path;
    const uint8_t *map; // (size) the whole file, read-only
    size_t size;
    cJSON *root; // parsed header; tensor names and dtype names point into it
    int n;
    sm_tensor_info *t; // in data-offset order
    int nmeta;
    const char **mkey, **mval;
} st_file;

// Metadata keys are looked up and checked for duplicates through sorted arrays: a header may
// hold millions of keys, and pairwise comparison would take hours.
typedef struct meta_ref {
    const char *key, *value;
    size_t seq; // position in the files' order
} meta_ref;

struct sm_st {
    int nfiles;
    st_file *files;
    int count;
    sm_tensor_info *t;              // in header order, file by file
    const sm_tensor_info **by_name; // (count) into t, sorted by name, for sm_st_find
    int nmeta;
    const char **mkey, **mval; // merged __metadata__, first file wins, in the files' order
    meta_ref *by_key;          // (nmeta) the same, sorted by key, for sm_st_meta
};

static int cmp_meta_ref(const void *a, const void *b) {
    const meta_ref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static int cmp_meta_seq(const void *a, const void *b) {
    const meta_ref *x = a, *y = b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

// Larger headers are refused as corrupt (the same limit as the reference implementation).
#define SM_ST_MAX_HEADER 100000000

// Integers in JSON are doubles to cJSON; 2^53 is the largest range where that is exact.
#define MAX_JSON_INT 9007199254740992.0

static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d) || d > MAX_JSON_INT) return false;
    *out = (uint64_t)d;
    return true;
}

static void file_close(st_file *f) {
    if (f->map) munmap((void *)f->map, f->size);
    cJSON_Delete(f->root);
    free(f->t);
    free(f->mkey);
    free(f->mval);
    free(f->path);
    memset(f, 0, sizeof *f);
}

typedef struct span {
    uint64_t begin, end;
    int idx; // into f->t as first collected
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

static sm_status parse_metadata(st_file *f, const cJSON *m) {
    const char *p = f->path;
    if (!cJSON_IsObject(m)) return sm_fail(SM_ERR_FORMAT, "%s: __metadata__ is not an object", p);
    int n = cJSON_GetArraySize(m);
    f->mkey = calloc((size_t)n + 1, sizeof *f->mkey);
    f->mval = calloc((size_t)n + 1, sizeof *f->mval);
    if (!f->mkey || !f->mval) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", p);
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring)
            return sm_fail(SM_ERR_FORMAT, "%s: __metadata__ value of \"%s\" is not a string", p,
                           e->string ? e->string : "");
        f->mkey[f->nmeta] = e->string;
        f->mval[f->nmeta++] = e->valuestring;
    }
    meta_ref *r = malloc(((size_t)f->nmeta + 1) * sizeof *r);
    if (!r) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", p);
    for (int i = 0; i < f->nmeta; i++) r[i] = (meta_ref){f->mkey[i], f->mval[i], (size_t)i};
    qsort(r, (size_t)f->nmeta, sizeof *r, cmp_meta_ref);
    sm_status s = SM_OK;
    for (int i = 1; i < f->nmeta && s == SM_OK; i++)
        if (strcmp(r[i - 1].key, r[i].key) == 0)
            s = sm_fail(SM_ERR_FORMAT, "%s: duplicate __metadata__ key \"%s\"", p, r[i].key);
    free(r);
    return s;
}

// Fills t (and its byte span) from one header entry.
static sm_status parse_entry(st_file *f, const cJSON *e, sm_tensor_info *t, span *sp) {
    const char *p = f->path, *name = e->string;
    if (!cJSON_IsObject(e))
        return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\": entry is not an object", p, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    const char *missing = !dt ? "dtype" : !sh ? "shape" : !off ? "data_offsets" : NULL;
    if (missing)
        return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\": missing \"%s\"", p, name, missing);
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\": \"dtype\" is not a string", p, name);
    if (!cJSON_IsArray(sh))
        return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\": \"shape\" is not an array", p, name);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: tensor \"%s\": \"data_offsets\" is not an array of two integers", p,
                       name);
    t->name = name;
    t->dtype_name = dt->valuestring;
    t->dtype = sm_dtype_from_name(dt->valuestring);
    t->file = f->path;
    int nd = cJSON_GetArraySize(sh);
    if (nd > 8)
        return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\": %d dimensions (at most 8 supported)", p,
                       name, nd);
    t->ndim = nd;
    uint64_t count = 1;
    bool ok = true;
    int d = 0;
    for (const cJSON *v = sh->child; v; v = v->next, d++) {
        uint64_t x;
        if (!json_uint(v, &x))
            return sm_fail(SM_ERR_FORMAT,
                           "%s: tensor \"%s\": shape[%d] is not a non-negative integer", p, name,
                           d);
        t->shape[d] = (int64_t)x;
        count = sm_mul_size(count, x, &ok);
    }
    uint64_t b, en;
    if (!json_uint(off->child, &b) || !json_uint(off->child->next, &en))
        return sm_fail(SM_ERR_FORMAT,
                       "%s: tensor \"%s\": data_offsets are not non-negative integers", p, name);
    if (b > en)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: tensor \"%s\": data_offsets [%llu, %llu] end before they begin", p,
                       name, (unsigned long long)b, (unsigned long long)en);
    if (t->dtype != SM_DTYPE_UNKNOWN) {
        uint64_t need = sm_mul_size(count, sm_dtype_size(t->dtype), &ok);
        if (!ok)
            return sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\": shape overflows the byte size", p,
                           name);
        if (need != en - b)
            return sm_fail(SM_ERR_FORMAT,
                           "%s: tensor \"%s\": shape of %s needs %llu bytes but data_offsets "
                           "span %llu",
                           p, name, t->dtype_name, (unsigned long long)need,
                           (unsigned long long)(en - b));
    }
    t->nbytes = (size_t)(en - b);
    sp->begin = b;
    sp->end = en;
    return SM_OK;
}

static sm_status parse_header(st_file *f, const char *hdr, size_t len) {
    const char *p = f->path;
    // cJSON needs a NUL-terminated copy; an embedded NUL then shows up as trailing garbage.
    char *buf = malloc(len + 1);
    if (!buf) return sm_fail(SM_ERR_ALLOC, "%s: out of memory for a %zu-byte header", p, len);
    memcpy(buf, hdr, len);
    buf[len] = 0;
    const char *end = NULL;
    f->root = cJSON_ParseWithOpts(buf, &end, false);
    // On failure cJSON points end at the fault (its global error pointer is not thread-safe).
    size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
    if (f->root)
        while (at < len &&
               (buf[at] == ' ' || buf[at] == '\t' || buf[at] == '\n' || buf[at] == '\r'))
            at++;
    free(buf);
    if (!f->root || at != len)
        return sm_fail(SM_ERR_FORMAT, "%s: header is not valid JSON (at byte %zu of %zu)", p, at,
                       len);
    if (!cJSON_IsObject(f->root))
        return sm_fail(SM_ERR_FORMAT, "%s: header is not a JSON object", p);

    int n = cJSON_GetArraySize(f->root);
    f->t = calloc((size_t)n + 1, sizeof *f->t);
    span *sp = calloc((size_t)n + 1, sizeof *sp);
    if (!f->t || !sp) {
        free(sp);
        return sm_fail(SM_ERR_ALLOC, "%s: out of memory", p);
    }
    sm_status st = SM_OK;
    bool have_meta = false;
    for (const cJSON *e = f->root->child; e && st == SM_OK; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (have_meta) st = sm_fail(SM_ERR_FORMAT, "%s: duplicate __metadata__", p);
            have_meta = true;
            if (st == SM_OK) st = parse_metadata(f, e);
            continue;
        }
        st = parse_entry(f, e, &f->t[f->n], &sp[f->n]);
        sp[f->n].idx = f->n;
        f->n++;
    }
    if (st != SM_OK) {
        free(sp);
        return st;
    }
    // The spans, sorted, must tile the data buffer exactly: no overlap, no gap, nothing after.
    size_t data_size = f->size - 8 - len;
    const uint8_t *data = f->map + 8 + len;
    qsort(sp, (size_t)f->n, sizeof *sp, cmp_span);
    uint64_t pos = 0;
    for (int i = 0; i < f->n && st == SM_OK; i++) {
        const char *name = f->t[sp[i].idx].name;
        if (sp[i].end > data_size)
            st = sm_fail(SM_ERR_FORMAT,
                         "%s: tensor \"%s\": data_offsets [%llu, %llu] out of range (the data "
                         "buffer has %zu bytes)",
                         p, name, (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end,
                         data_size);
        else if (sp[i].begin < pos)
            st = sm_fail(SM_ERR_FORMAT, "%s: tensors \"%s\" and \"%s\" overlap", p,
                         f->t[sp[i - 1].idx].name, name);
        else if (sp[i].begin > pos)
            st = sm_fail(SM_ERR_FORMAT, "%s: gap of %llu unused bytes before tensor \"%s\"", p,
                         (unsigned long long)(sp[i].begin - pos), name);
        pos = sp[i].end;
    }
    if (st == SM_OK && pos != data_size)
        st = sm_fail(SM_ERR_FORMAT, "%s: %llu unused bytes after the last tensor", p,
                     (unsigned long long)(data_size - pos));
    if (st == SM_OK) {
        // Reorder the tensors into data order (the order the file was written in).
        sm_tensor_info *sorted = calloc((size_t)f->n + 1, sizeof *sorted);
        if (!sorted) {
            st = sm_fail(SM_ERR_ALLOC, "%s: out of memory", p);
        } else {
            for (int i = 0; i < f->n; i++) {
                sorted[i] = f->t[sp[i].idx];
                sorted[i].data = data + sp[i].begin;
            }
            free(f->t);
            f->t = sorted;
        }
    }
    free(sp);
    return st;
}

static sm_status file_open(const char *path, st_file *f) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return sm_fail(SM_ERR_ALLOC, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sm_fail(SM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sm_fail(SM_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return sm_fail(SM_ERR_FORMAT,
                       "%s: %zu bytes, too short for a safetensors file (at least 8 needed)", path,
                       size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return sm_fail(SM_ERR_IO, "%s: mmap: %s", path, strerror(errno));
    f->map = map;
    f->size = size;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->map[i];
    if (hlen > SM_ST_MAX_HEADER)
        return sm_fail(SM_ERR_FORMAT, "%s: header length %llu exceeds the limit of %d bytes", path,
                       (unsigned long long)hlen, SM_ST_MAX_HEADER);
    if (hlen > size - 8)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                       (unsigned long long)hlen, size);
    return parse_header(f, (const char *)f->map + 8, (size_t)hlen);
}

// --- the set of files -----------------------------------------------------------------------

void sm_st_close(sm_st *st) {
    if (!st) return;
    for (int i = 0; i < st->nfiles; i++) file_close(&st->files[i]);
    free(st->files);
    free(st->t);
    free(st->by_name);
    free(st->mkey);
    free(st->mval);
    free(st->by_key);
    free(st);
}

static int cmp_by_name(const void *a, const void *b) {
    const sm_tensor_info *x = *(const sm_tensor_info *const *)a;
    const sm_tensor_info *y = *(const sm_tensor_info *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x > y) - (x < y); // equal names stay in listing order
}

// Builds the name index and the merged metadata once st->t is complete.
static sm_status finish(sm_st *st) {
    st->by_name = malloc(((size_t)st->count + 1) * sizeof *st->by_name);
    if (!st->by_name) return sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < st->count; i++) st->by_name[i] = &st->t[i];
    qsort(st->by_name, (size_t)st->count, sizeof *st->by_name, cmp_by_name);
    for (int i = 1; i < st->count; i++) {
        const sm_tensor_info *a = st->by_name[i - 1], *b = st->by_name[i];
        if (strcmp(a->name, b->name) != 0) continue;
        if (a->file == b->file)
            return sm_fail(SM_ERR_FORMAT, "%s: duplicate tensor name \"%s\"", a->file, a->name);
        return sm_fail(SM_ERR_FORMAT, "tensor \"%s\" is in both %s and %s", a->name, a->file,
                       b->file);
    }
    size_t total = 0;
    for (int i = 0; i < st->nfiles; i++) total += (size_t)st->files[i].nmeta;
    if (total > INT32_MAX) return sm_fail(SM_ERR_FORMAT, "too many metadata keys (%zu)", total);
    // Sorted by key, then by position: the first of each run is the first file's value.
    meta_ref *r = malloc((total + 1) * sizeof *r);
    st->mkey = calloc(total + 1, sizeof *st->mkey);
    st->mval = calloc(total + 1, sizeof *st->mval);
    st->by_key = malloc((total + 1) * sizeof *st->by_key);
    if (!r || !st->mkey || !st->mval || !st->by_key) {
        free(r);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    size_t n = 0;
    for (int i = 0; i < st->nfiles; i++)
        for (int j = 0; j < st->files[i].nmeta; j++, n++)
            r[n] = (meta_ref){st->files[i].mkey[j], st->files[i].mval[j], n};
    qsort(r, total, sizeof *r, cmp_meta_ref);
    size_t kept = 0;
    for (size_t i = 0; i < total; i++)
        if (i == 0 || strcmp(r[i].key, r[kept - 1].key) != 0) r[kept++] = r[i];
    memcpy(st->by_key, r, kept * sizeof *r);
    qsort(r, kept, sizeof *r, cmp_meta_seq);
    for (size_t i = 0; i < kept; i++) {
        st->mkey[i] = r[i].key;
        st->mval[i] = r[i].value;
    }
    st->nmeta = (int)kept;
    free(r);
    return SM_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Opens every path (taking ownership of the strings); all tensors of all files are listed.
static sm_status open_files(sm_st *st, char **paths, int n) {
    st->files = calloc((size_t)n + 1, sizeof *st->files);
    sm_status s = st->files ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < n && s == SM_OK; i++) {
        s = file_open(paths[i], &st->files[i]);
        st->nfiles = i + 1;
    }
    for (int i = 0; i < n; i++) free(paths[i]);
    if (s != SM_OK) return s;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)st->files[i].n;
    if (total > INT32_MAX) return sm_fail(SM_ERR_FORMAT, "too many tensors (%zu)", total);
    st->t = calloc(total + 1, sizeof *st->t);
    if (!st->t) return sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < st->files[i].n; j++) st->t[st->count++] = st->files[i].t[j];
    return SM_OK;
}

static char *join_path(const char *dir, const char *name) {
    char *s = NULL;
    if (asprintf(&s, "%s/%s", dir, name) < 0) return NULL;
    return s;
}

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

// Every *.safetensors file of dir, sorted by name.
static sm_status open_dir_files(sm_st *st, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return sm_fail(SM_ERR_IO, "%s: %s", dir, strerror(errno));
    char **paths = NULL;
    int n = 0, cap = 0;
    sm_status s = SM_OK;
    for (struct dirent *e; (e = readdir(d)) != NULL && s == SM_OK;) {
        if (!ends_with(e->d_name, ".safetensors") || e->d_name[0] == '.') continue;
        char *p = join_path(dir, e->d_name);
        if (!p) {
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
            break;
        }
        if (!is_file(p)) {
            free(p);
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            char **np = realloc(paths, (size_t)cap * sizeof *paths);
            if (!np) {
                free(p);
                s = sm_fail(SM_ERR_ALLOC, "out of memory");
                break;
            }
            paths = np;
        }
        paths[n++] = p;
    }
    closedir(d);
    if (s == SM_OK && n == 0)
        s = sm_fail(SM_ERR_NOT_FOUND, "%s: no .safetensors file in this directory", dir);
    if (s != SM_OK) {
        for (int i = 0; i < n; i++) free(paths[i]);
        free(paths);
        return s;
    }
    qsort(paths, (size_t)n, sizeof *paths, cmp_str);
    s = open_files(st, paths, n);
    free(paths);
    return s;
}

typedef struct map_entry {
    const char *tensor, *shard;
    int file;   // index into st->files
    bool found; // seen in its shard
} map_entry;

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const map_entry *)a)->tensor, ((const map_entry *)b)->tensor);
}

// A shard name must stay inside the index's directory.
static bool safe_shard_name(const char *s) {
    return s[0] && s[0] != '.' && !strchr(s, '/') && !strchr(s, '\\');
}

// Sharded checkpoint: the index's weight_map decides which tensors exist and where.
static sm_status open_index(sm_st *st, const char *index) {
    char *text = NULL;
    size_t len = 0;
    sm_status s = sm_read_file(index, &text, &len, SM_ST_MAX_HEADER);
    if (s != SM_OK) return s;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, true);
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!root)
        s = sm_fail(SM_ERR_FORMAT, "%s: not valid JSON", index);
    else if (!cJSON_IsObject(root))
        s = sm_fail(SM_ERR_FORMAT, "%s: not a JSON object", index);
    else if (!cJSON_IsObject(wm))
        s = sm_fail(SM_ERR_FORMAT, "%s: no \"weight_map\" object", index);
    int n = s == SM_OK ? cJSON_GetArraySize(wm) : 0;
    map_entry *map = calloc((size_t)n + 1, sizeof *map);
    char **shards = calloc((size_t)n + 1, sizeof *shards);
    char *dir = strdup(index);
    if (s == SM_OK && (!map || !shards || !dir)) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    int i = 0, nshards = 0;
    for (const cJSON *e = s == SM_OK ? wm->child : NULL; e && s == SM_OK; e = e->next, i++) {
        if (!cJSON_IsString(e) || !e->valuestring || !safe_shard_name(e->valuestring))
            s = sm_fail(SM_ERR_FORMAT, "%s: weight_map entry \"%s\" is not a plain file name",
                        index, e->string);
        map[i].tensor = e->string;
        map[i].shard = e->valuestring;
    }
    if (s == SM_OK) {
        qsort(map, (size_t)n, sizeof *map, cmp_entry);
        for (i = 1; i < n && s == SM_OK; i++)
            if (strcmp(map[i - 1].tensor, map[i].tensor) == 0)
                s = sm_fail(SM_ERR_FORMAT, "%s: weight_map lists \"%s\" twice", index,
                            map[i].tensor);
    }
    // Each distinct shard is opened once, in name order.
    for (i = 0; i < n && s == SM_OK; i++) shards[i] = (char *)map[i].shard;
    if (s == SM_OK) qsort(shards, (size_t)n, sizeof *shards, cmp_str);
    for (i = 0; i < n && s == SM_OK; i++)
        if (i == 0 || strcmp(shards[i], shards[nshards - 1]) != 0) shards[nshards++] = shards[i];
    if (s == SM_OK && nshards == 0) s = sm_fail(SM_ERR_FORMAT, "%s: empty weight_map", index);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    const char *base = slash ? dir : ".";
    if (slash) *slash = 0;
    for (i = 0; i < n && s == SM_OK; i++) {
        const char **hit = bsearch(&map[i].shard, shards, (size_t)nshards, sizeof *shards, cmp_str);
        map[i].file = (int)(hit - (const char **)shards);
    }
    if (s == SM_OK) {
        char **paths = calloc((size_t)nshards, sizeof *paths);
        if (!paths) s = sm_fail(SM_ERR_ALLOC, "out of memory");
        for (i = 0; i < nshards && s == SM_OK; i++)
            if (!(paths[i] = join_path(base, shards[i])))
                s = sm_fail(SM_ERR_ALLOC, "out of memory");
        if (s == SM_OK) {
            s = open_files(st, paths, nshards);
        } else if (paths) {
            for (i = 0; i < nshards; i++) free(paths[i]);
        }
        free(paths);
    }
    if (s == SM_OK) {
        // Keep only the tensors the index maps to the shard holding them, in header order.
        int kept = 0;
        for (int k = 0; k < st->count; k++) {
            map_entry key = {.tensor = st->t[k].name};
            map_entry *m = bsearch(&key, map, (size_t)n, sizeof *map, cmp_entry);
            if (!m || st->files[m->file].path != st->t[k].file) continue;
            m->found = true;
            st->t[kept++] = st->t[k];
        }
        st->count = kept;
        for (i = 0; i < n && s == SM_OK; i++)
            if (!map[i].found)
                s = sm_fail(SM_ERR_FORMAT, "%s: tensor \"%s\" is not in its shard %s", index,
                            map[i].tensor, map[i].shard);
    }
    free(map);
    free(shards);
    free(dir);
    cJSON_Delete(root);
    return s;
}

sm_status sm_st_open(const char *path, sm_st **out) {
    *out = NULL;
    sm_st *st = calloc(1, sizeof *st);
    if (!st) return sm_fail(SM_ERR_ALLOC, "out of memory");
    struct stat sb;
    sm_status s;
    if (stat(path, &sb) != 0) {
        s = sm_fail(SM_ERR_IO, "%s: %s", path, strerror(errno));
    } else if (S_ISDIR(sb.st_mode)) {
        char *single = join_path(path, "model.safetensors");
        char *index = join_path(path, "model.safetensors.index.json");
        if (!single || !index)
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
        else if (is_file(single)) {
            s = open_files(st, &single, 1);
            single = NULL;
        } else if (is_file(index))
            s = open_index(st, index);
        else
            s = open_dir_files(st, path);
        free(single);
        free(index);
    } else if (ends_with(path, ".json")) {
        s = open_index(st, path);
    } else {
        char *p = strdup(path);
        s = p ? open_files(st, &p, 1) : sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    if (s == SM_OK) s = finish(st);
    if (s != SM_OK) {
        sm_st_close(st);
        return s;
    }
    *out = st;
    return SM_OK;
}

int sm_st_count(const sm_st *st) {
    return st->count;
}

const sm_tensor_info *sm_st_get(const sm_st *st, int i) {
    return i >= 0 && i < st->count ? &st->t[i] : NULL;
}

const sm_tensor_info *sm_st_find(const sm_st *st, const char *name) {
    int lo = 0, hi = st->count;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_name[mid]->name, name);
        if (c == 0) return st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const sm_tensor_info *const *sm_st_prefix_run(const sm_st *st, const char *prefix, int *count) {
    size_t pl = strlen(prefix);
    int lo = 0, hi = st->count;
    while (lo < hi) { // the first name >= prefix
        int mid = lo + (hi - lo) / 2;
        if (strcmp(st->by_name[mid]->name, prefix) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    int end = lo;
    while (end < st->count && strncmp(st->by_name[end]->name, prefix, pl) == 0) end++;
    *count = end - lo;
    return st->by_name + lo;
}

const char *sm_st_meta(const sm_st *st, const char *key) {
    size_t lo = 0, hi = (size_t)st->nmeta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_key[mid].key, key);
        if (c == 0) return st->by_key[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int sm_st_meta_count(const sm_st *st) {
    return st->nmeta;
}

void sm_st_meta_get(const sm_st *st, int i, const char **key, const char **value) {
    SM_ASSERT(i >= 0 && i < st->nmeta);
    *key = st->mkey[i];
    *value = st->mval[i];
}

sm_status sm_st_read_f32(const sm_st *st, const char *name, float **out, int64_t *n) {
    *out = NULL;
    const sm_tensor_info *t = sm_st_find(st, name);
    if (!t) return sm_fail(SM_ERR_NOT_FOUND, "no tensor \"%s\" in the checkpoint", name);
    sm_dtype d = t->dtype;
    if (d != SM_DTYPE_F32 && d != SM_DTYPE_F16 && d != SM_DTYPE_BF16 && d != SM_DTYPE_F64)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: tensor \"%s\" has dtype %s, which cannot be read as F32 (F32, F16, "
                       "BF16 and F64 can)",
                       t->file, t->name, t->dtype_name);
    int64_t count = (int64_t)(t->nbytes / sm_dtype_size(d));
    float *buf = sm_alloc((size_t)count * sizeof(float));
    if (!buf) return sm_fail(SM_ERR_ALLOC, "%s: out of memory reading \"%s\"", t->file, t->name);
    sm_status s = sm_convert_to_f32(d, t->data, count, buf);
    if (s != SM_OK) {
        sm_free(buf);
        return s;
    }
    *out = buf;
    if (n) *n = count;
    return SM_OK;
}
