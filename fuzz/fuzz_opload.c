// A stored operator whose metadata and parts come from the input, so the fuzzer can make the
// metadata lie about shapes, ranks, blocks, bit widths and dtypes while the file stays valid.
// Input (text header, blank line, then bytes):
//   <spec>                       structmat.spec.m
//   <shape>                      structmat.shape.m ("out,in" when honest)
//   <part> <dtype> <d0>x<d1>...  a tensor "m.<part>" ("-" for no dimensions); up to 16 lines
//   (blank line)
//   <bytes>                      the parts' data in order, zeros when it runs out
// The file is written with the library's writer, opened, and sm_op_load("m") must either refuse
// with a message or give an operator of that shape that sm_fuzz_exercise_op finds consistent.
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARTS 16
#define MAX_BYTES (1 << 20)

typedef struct part {
    char name[64];
    sm_dtype dtype;
    int ndim;
    int64_t shape[4];
    size_t nbytes;
    uint8_t *data;
} part;

// "AxBxC" (or "-") into shape; false when malformed or the bytes exceed the cap.
static bool parse_dims(const char *s, part *p) {
    p->ndim = 0;
    if (!strcmp(s, "-")) return true;
    while (*s) {
        if (p->ndim == 4 || *s < '0' || *s > '9') return false;
        int64_t v = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
            v = v * 10 + (*s - '0');
            if (v > MAX_BYTES) return false;
        }
        p->shape[p->ndim++] = v;
        if (*s == 'x')
            s++;
        else if (*s)
            return false;
    }
    return true;
}

// One header line "name dtype dims" (modified in place).
static bool parse_part(char *line, part *p) {
    char *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp2 || sp1 == line || (size_t)(sp1 - line) >= sizeof p->name - 2) return false;
    *sp1 = *sp2 = 0;
    snprintf(p->name, sizeof p->name, "m.%s", line);
    p->dtype = sm_dtype_from_name(sp1 + 1);
    if (p->dtype == SM_DTYPE_UNKNOWN || !parse_dims(sp2 + 1, p)) return false;
    size_t n = sm_dtype_size(p->dtype);
    for (int d = 0; d < p->ndim; d++) {
        n *= (size_t)p->shape[d];
        if (n > MAX_BYTES) return false;
    }
    p->nbytes = n;
    return true;
}

// "a,b" as the loader should read it (two positive integers up to INT_MAX), for the check.
static bool honest_shape(const char *s, int64_t *m, int64_t *n) {
    char *end;
    long long a = strtoll(s, &end, 10);
    if (end == s || *end != ',' || s[0] < '1' || s[0] > '9') return false;
    const char *t = end + 1;
    long long b = strtoll(t, &end, 10);
    if (end == t || *end || t[0] < '1' || t[0] > '9') return false;
    *m = a;
    *n = b;
    return true;
}

int sm_fuzz_opload(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    // Header: up to the first blank line (or the whole input).
    size_t hend = size, pool_at = size;
    for (size_t i = 0; i + 1 < size; i++)
        if (data[i] == '\n' && data[i + 1] == '\n') {
            hend = i;
            pool_at = i + 2;
            break;
        }
    char *hdr = malloc(hend + 1);
    memcpy(hdr, data, hend);
    hdr[hend] = 0;
    const uint8_t *pool = data + pool_at;
    size_t pool_len = size - pool_at, used = 0, total = 0;
    char *lines[2 + MAX_PARTS];
    int nl = 0;
    for (char *s = hdr; s && nl < 2 + MAX_PARTS;) {
        lines[nl++] = s;
        s = strchr(s, '\n');
        if (s) *s++ = 0;
    }
    if (nl < 2) {
        free(hdr);
        return 0;
    }
    part parts[MAX_PARTS];
    int np = 0;
    for (int i = 2; i < nl; i++) {
        part *p = &parts[np];
        memset(p, 0, sizeof *p);
        if (!parse_part(lines[i], p) || total + p->nbytes > MAX_BYTES) continue;
        total += p->nbytes;
        p->data = calloc(1, p->nbytes + 1);
        size_t take = pool_len - used < p->nbytes ? pool_len - used : p->nbytes;
        memcpy(p->data, pool + used, take);
        used += take;
        np++;
    }
    char path[256];
    sm_fuzz_path(path, sizeof path, "opload", "op.safetensors");
    sm_st_writer *w = sm_st_writer_init();
    bool ok = sm_st_writer_meta(w, "structmat.format_version", "1") == SM_OK &&
              sm_st_writer_meta(w, "structmat.spec.m", lines[0]) == SM_OK &&
              sm_st_writer_meta(w, "structmat.shape.m", lines[1]) == SM_OK;
    for (int i = 0; i < np && ok; i++)
        ok = sm_st_writer_add(w, parts[i].name, parts[i].dtype, parts[i].ndim, parts[i].shape,
                              parts[i].data, parts[i].nbytes) == SM_OK; // duplicates refused
    ok = ok && sm_st_writer_write(w, path, true) == SM_OK;
    sm_st_writer_free(w);
    int accepted = 0;
    sm_st *st = NULL;
    if (ok) SM_FUZZ_CHECK(sm_st_open(path, &st) == SM_OK, "the writer's own file is refused");
    if (st) {
        sm_op *op = (sm_op *)1;
        if (sm_op_load(st, "m", &op) == SM_OK) {
            int64_t m = 0, n = 0;
            SM_FUZZ_CHECK(honest_shape(lines[1], &m, &n) && m == sm_op_rows(op) &&
                              n == sm_op_cols(op),
                          "shape \"%s\" loaded as %lldx%lld", lines[1], (long long)sm_op_rows(op),
                          (long long)sm_op_cols(op));
            sm_fuzz_exercise_op(op, false);
            sm_op_free(op);
            accepted = 1;
        } else {
            SM_FUZZ_CHECK(op == NULL && sm_last_error()[0], "failed load");
        }
        sm_st_close(st);
    }
    for (int i = 0; i < np; i++) free(parts[i].data);
    free(hdr);
    return accepted;
}

SM_FUZZ_MAIN(opload)
