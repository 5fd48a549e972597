// The GGUF reader on files built byte by byte here: every metadata value type (nested arrays
// included) read back through the typed getters, tensor shapes reversed into PyTorch order, data
// offsets from the aligned data section, Q8_0 / Q4_0 / Q4_K blocks decoded to values worked out by
// hand from ggml's layouts; and hostile files (absurd counts and sizes, strings longer than the
// file, unknown types, bad dimensions, offsets outside the file or unaligned, bad alignment,
// duplicates, deep nesting, every truncation and thousands of byte flips of a valid file): each
// refused with SM_ERR_FORMAT / SM_ERR_UNSUPPORTED and a message naming the file, never a crash.
#include "structmat_gguf.h"
#include "structmat_model.h"
#include "testutil.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_path[64];

// --- a GGUF byte builder ------------------------------------------------------------------------

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = 2 * (b->n + n) + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u8(buf *b, uint8_t v) {
    put(b, &v, 1);
}
static void u16(buf *b, uint16_t v) {
    put(b, &v, 2);
}
static void u32(buf *b, uint32_t v) {
    put(b, &v, 4);
}
static void u64(buf *b, uint64_t v) {
    put(b, &v, 8);
}
static void f32(buf *b, float v) {
    put(b, &v, 4);
}
static void str(buf *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void key(buf *b, const char *k, uint32_t type) {
    str(b, k);
    u32(b, type);
}
static void header(buf *b, uint32_t version, uint64_t nt, uint64_t nkv) {
    put(b, "GGUF", 4);
    u32(b, version);
    u64(b, nt);
    u64(b, nkv);
}
static void pad(buf *b, size_t align) {
    while (b->n % align) u8(b, 0);
}

static void write_file(const buf *b) {
    FILE *f = fopen(g_path, "wb");
    if (b->n) fwrite(b->p, 1, b->n, f);
    fclose(f);
}

// Opens b as a file; returns the status, closing any handle.
static sm_status open_bytes(const buf *b) {
    write_file(b);
    sm_gguf *g = (sm_gguf *)1;
    sm_status s = sm_gguf_open(g_path, &g);
    if (s == SM_OK)
        sm_gguf_close(g);
    else
        CHECK(g == NULL);
    return s;
}

// --- a valid file with every value type and three tensors ---------------------------------------

static uint16_t h(float x) {
    return sm_f32_to_f16(x);
}

static void valid_file(buf *b, uint32_t version) {
    header(b, version, 4, 17);
    key(b, "general.architecture", SM_GGUF_STRING), str(b, "test");
    key(b, "a.u8", SM_GGUF_U8), u8(b, 200);
    key(b, "a.i8", SM_GGUF_I8), u8(b, (uint8_t)-5);
    key(b, "a.u16", SM_GGUF_U16), u16(b, 65000);
    key(b, "a.i16", SM_GGUF_I16), u16(b, (uint16_t)-300);
    key(b, "a.u32", SM_GGUF_U32), u32(b, 4000000000u);
    key(b, "a.i32", SM_GGUF_I32), u32(b, (uint32_t)-70000);
    key(b, "a.f32", SM_GGUF_F32), f32(b, 0.25f);
    key(b, "a.bool", SM_GGUF_BOOL), u8(b, 1);
    key(b, "a.u64", SM_GGUF_U64), u64(b, (uint64_t)1 << 40);
    key(b, "a.i64", SM_GGUF_I64), u64(b, (uint64_t) - (int64_t)1e12);
    key(b, "a.f64", SM_GGUF_F64);
    double d = -1.5e-300;
    put(b, &d, 8);
    key(b, "a.arr_i32", SM_GGUF_ARRAY), u32(b, SM_GGUF_I32), u64(b, 3);
    u32(b, 7), u32(b, (uint32_t)-8), u32(b, 9);
    key(b, "a.arr_str", SM_GGUF_ARRAY), u32(b, SM_GGUF_STRING), u64(b, 3);
    str(b, "<s>"), str(b, ""), str(b, "\xc4\xa0the");
    // An array of two arrays of strings.
    key(b, "a.nested", SM_GGUF_ARRAY), u32(b, SM_GGUF_ARRAY), u64(b, 2);
    u32(b, SM_GGUF_STRING), u64(b, 1), str(b, "x");
    u32(b, SM_GGUF_STRING), u64(b, 2), str(b, "y"), str(b, "zz");
    key(b, "a.arr_f32", SM_GGUF_ARRAY), u32(b, SM_GGUF_F32), u64(b, 2), f32(b, 1.5f), f32(b, -2);
    key(b, "general.alignment", SM_GGUF_U32), u32(b, 64);
    // Tensors: w (F32, PyTorch [3, 2]: GGUF dims {2, 3}), q (Q8_0 [2, 32]), f (Q4_0 [1, 32]),
    // k (Q4_K [1, 256]).
    str(b, "w"), u32(b, 2), u64(b, 2), u64(b, 3), u32(b, SM_GGML_F32), u64(b, 0);
    str(b, "q"), u32(b, 2), u64(b, 32), u64(b, 2), u32(b, SM_GGML_Q8_0), u64(b, 64);
    str(b, "f"), u32(b, 1), u64(b, 32), u32(b, SM_GGML_Q4_0), u64(b, 192);
    str(b, "k"), u32(b, 2), u64(b, 256), u64(b, 1), u32(b, SM_GGML_Q4_K), u64(b, 256);
    pad(b, 64);
    for (int i = 0; i < 6; i++) f32(b, (float)(i + 1)); // w = [[1, 2], [3, 4], [5, 6]]
    pad(b, 64);
    // q: row 0 block d = 0.5, q_j = j - 16; row 1 block d = 2, q_j = (j % 3) - 1.
    u16(b, h(0.5f));
    for (int j = 0; j < 32; j++) u8(b, (uint8_t)(int8_t)(j - 16));
    u16(b, h(2.0f));
    for (int j = 0; j < 32; j++) u8(b, (uint8_t)(int8_t)(j % 3 - 1));
    pad(b, 64);
    // f: d = 0.25; byte j holds element j (low nibble j % 16) and element j + 16 (high nibble 15).
    u16(b, h(0.25f));
    for (int j = 0; j < 16; j++) u8(b, (uint8_t)(j | 15 << 4));
    pad(b, 64);
    // k: d = 1, dmin = 0.5; sub-block scales sc_g = 7 g + 5 and mins m_g = 8 g + 3 (6 bits each,
    // so sub-blocks 4..7 use the high-bit packing);
    // every nibble of the chunk c byte l = (l + c) % 16, low nibble of sub-block 2c, high 2c+1.
    u16(b, h(1.0f)), u16(b, h(0.5f));
    uint8_t sc[8], mn[8], s12[12] = {0};
    for (int g = 0; g < 8; g++) sc[g] = (uint8_t)(7 * g + 5), mn[g] = (uint8_t)(8 * g + 3);
    for (int g = 0; g < 4; g++) {
        s12[g] = (uint8_t)(sc[g] | (sc[g + 4] >> 4) << 6);
        s12[g + 4] = (uint8_t)(mn[g] | (mn[g + 4] >> 4) << 6);
        s12[g + 8] = (uint8_t)((sc[g + 4] & 15) | (mn[g + 4] & 15) << 4);
    }
    put(b, s12, 12);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            uint8_t v = (uint8_t)((l + c) % 16);
            u8(b, (uint8_t)(v | v << 4));
        }
}

static void test_valid(uint32_t version) {
    buf b = {0};
    valid_file(&b, version);
    write_file(&b);
    sm_gguf *g = NULL;
    CHECK_OK(sm_gguf_open(g_path, &g));
    if (!g) return;
    CHECK(sm_gguf_version(g) == version && sm_gguf_alignment(g) == 64);
    CHECK(sm_gguf_kv_count(g) == 17 && sm_gguf_tensor_count(g) == 4);
    int64_t i;
    double f;
    bool bo;
    const char *s;
    size_t len;
    struct {
        const char *k;
        int64_t v;
    } ints[] = {{"a.u8", 200},           {"a.i8", -5},
                {"a.u16", 65000},        {"a.i16", -300},
                {"a.u32", 4000000000LL}, {"a.i32", -70000},
                {"a.u64", 1LL << 40},    {"a.i64", -1000000000000LL}};
    for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
        CHECK_OK(sm_gguf_get_int(g, ints[k].k, &i));
        CHECK(i == ints[k].v);
    }
    CHECK_OK(sm_gguf_get_float(g, "a.f32", &f));
    CHECK(f == 0.25);
    CHECK_OK(sm_gguf_get_float(g, "a.f64", &f));
    CHECK(f == -1.5e-300);
    CHECK_OK(sm_gguf_get_bool(g, "a.bool", &bo));
    CHECK(bo);
    CHECK_OK(sm_gguf_get_str(g, "general.architecture", &s, &len));
    CHECK(len == 4 && !strcmp(s, "test"));
    CHECK_FAIL(sm_gguf_get_int(g, "a.f32", &i), SM_ERR_FORMAT, "\"a.f32\" is F32");
    CHECK_FAIL(sm_gguf_get_str(g, "a.u8", &s, &len), SM_ERR_FORMAT, "STRING expected");
    CHECK_FAIL(sm_gguf_get_int(g, "a.none", &i), SM_ERR_NOT_FOUND, "no key \"a.none\"");
    sm_gguf_vtype et;
    int64_t cnt;
    CHECK_OK(sm_gguf_get_array(g, "a.arr_i32", &et, &cnt));
    CHECK(et == SM_GGUF_I32 && cnt == 3);
    CHECK_OK(sm_gguf_array_int(g, "a.arr_i32", 1, &i));
    CHECK(i == -8);
    CHECK_FAIL(sm_gguf_array_int(g, "a.arr_i32", 3, &i), SM_ERR_ARG, "index 3");
    CHECK_OK(sm_gguf_array_str(g, "a.arr_str", 2, &s, &len));
    CHECK(len == 5 && !memcmp(s, "\xc4\xa0the", 5));
    CHECK_OK(sm_gguf_array_str(g, "a.arr_str", 1, &s, &len));
    CHECK(len == 0);
    CHECK_OK(sm_gguf_array_float(g, "a.arr_f32", 1, &f));
    CHECK(f == -2);
    CHECK_OK(sm_gguf_get_array(g, "a.nested", &et, &cnt));
    CHECK(et == SM_GGUF_ARRAY && cnt == 2);
    char text[256];
    sm_gguf_kv_format(g, sm_gguf_kv_find(g, "a.nested"), text, sizeof text);
    CHECK(!strcmp(text, "[ARRAY x 2] [STRING x 1] \"x\", [STRING x 2] \"y\", \"zz\""));
    sm_gguf_kv_format(g, sm_gguf_kv_find(g, "a.arr_str"), text, sizeof text);
    CHECK(!strcmp(text, "[STRING x 3] \"<s>\", \"\", \"\xc4\xa0the\""));
    // Tensors: shapes reversed, data at the aligned offsets.
    const sm_gguf_tensor *w = sm_gguf_find(g, "w"), *q = sm_gguf_find(g, "q");
    const sm_gguf_tensor *fq = sm_gguf_find(g, "f"), *k = sm_gguf_find(g, "k");
    CHECK(w && q && fq && k && !sm_gguf_find(g, "x"));
    if (w && q && fq && k) {
        CHECK(w->ndim == 2 && w->shape[0] == 3 && w->shape[1] == 2 && w->nbytes == 24);
        CHECK(q->ndim == 2 && q->shape[0] == 2 && q->shape[1] == 32 && q->nbytes == 68);
        CHECK(!strcmp(q->type_name, "Q8_0") && !strcmp(k->type_name, "Q4_K"));
        CHECK((((const uint8_t *)q->data - (const uint8_t *)w->data)) == 64);
        float *v;
        int64_t n;
        CHECK_OK(sm_gguf_read_f32(g, "w", &v, &n));
        CHECK(n == 6 && v[0] == 1 && v[1] == 2 && v[5] == 6);
        free(v);
        CHECK_OK(sm_gguf_read_f32(g, "q", &v, &n));
        int bad = 0;
        for (int j = 0; j < 32; j++)
            bad += v[j] != 0.5f * (float)(j - 16) || v[32 + j] != 2.0f * (float)(j % 3 - 1);
        CHECK(n == 64 && !bad);
        free(v);
        CHECK_OK(sm_gguf_read_f32(g, "f", &v, &n));
        bad = 0;
        for (int j = 0; j < 16; j++)
            bad += v[j] != 0.25f * (float)(j - 8) || v[16 + j] != 0.25f * 7;
        CHECK(n == 32 && !bad);
        free(v);
        CHECK_OK(sm_gguf_read_f32(g, "k", &v, &n));
        bad = 0; // element 32 g + l = d sc_g q - dmin m_g, q = (l + g / 2) % 16
        for (int e = 0; e < 256; e++) {
            int gi = e / 32, l = e % 32;
            float want =
                (float)(7 * gi + 5) * (float)((l + gi / 2) % 16) - 0.5f * (float)(8 * gi + 3);
            bad += v[e] != want;
        }
        CHECK(n == 256 && !bad);
        free(v);
    }
    CHECK_FAIL(sm_gguf_read_f32(g, "none", &(float *){0}, &(int64_t){0}), SM_ERR_NOT_FOUND,
               "no tensor \"none\"");
    sm_gguf_close(g);
    // Every proper prefix of the file is refused (the data section is needed too).
    int accepted = 0;
    for (size_t n = 0; n < b.n; n++) {
        buf c = {b.p, n, n};
        sm_status st = open_bytes(&c);
        if (st == SM_OK)
            accepted++;
        else if (!strstr(sm_last_error(), g_path)) {
            fprintf(stderr, "prefix %zu: \"%s\" does not name the file\n", n, sm_last_error());
            g_failures++;
            break;
        }
    }
    CHECK(accepted == 0);
    // Byte flips: refused with a message naming the file, or accepted and fully readable.
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int t = 0; t < 3000; t++) {
        buf c = {malloc(b.n), b.n, b.n};
        memcpy(c.p, b.p, b.n);
        for (int k2 = 0; k2 < 1 + t % 3; k2++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % 700; // the header and infos, where the parser is
            if (at < c.n) c.p[at] = (uint8_t)(rng >> 20);
        }
        write_file(&c);
        sm_gguf *m = NULL;
        sm_status st = sm_gguf_open(g_path, &m);
        if (st == SM_OK) {
            for (int64_t j = 0; j < sm_gguf_tensor_count(m); j++) {
                const sm_gguf_tensor *tt = sm_gguf_tensor_get(m, j);
                float *v = NULL;
                int64_t n;
                if (sm_ggml_can_decode(tt->type) && tt->nelem < (1 << 20) &&
                    sm_gguf_read_f32(m, tt->name, &v, &n) == SM_OK)
                    CHECK(n == tt->nelem);
                free(v);
            }
            for (int64_t j = 0; j < sm_gguf_kv_count(m); j++)
                sm_gguf_kv_format(m, j, text, sizeof text);
            sm_gguf_close(m);
        } else if (!strstr(sm_last_error(), g_path)) {
            fprintf(stderr, "flip %d: \"%s\" does not name the file\n", t, sm_last_error());
            g_failures++;
        }
        free(c.p);
    }
    free(b.p);
}

// --- hostile files ------------------------------------------------------------------------------

// A header with one key "k" of the given type whose value the caller appends, no tensors.
static void one_key(buf *b, uint32_t type) {
    header(b, 3, 0, 1);
    key(b, "k", type);
}

static void expect(buf *b, sm_status st, const char *needle) {
    sm_status got = open_bytes(b);
    if (got != st || !strstr(sm_last_error(), needle) || !strstr(sm_last_error(), g_path)) {
        fprintf(stderr, "expected %s with \"%s\", got %s \"%s\"\n", sm_status_str(st), needle,
                sm_status_str(got), sm_last_error());
        g_failures++;
    }
    free(b->p);
    memset(b, 0, sizeof *b);
}

// One tensor info (the rest of a file with no keys): name t, dims, type, offset; 96 data bytes.
static void one_tensor(buf *b, uint32_t nd, const uint64_t *dims, uint32_t type, uint64_t offset) {
    header(b, 3, 1, 0);
    str(b, "t");
    u32(b, nd);
    for (uint32_t d = 0; d < nd; d++) u64(b, dims[d]);
    u32(b, type);
    u64(b, offset);
    pad(b, 32);
    for (int i = 0; i < 96; i++) u8(b, 0);
}

static void test_hostile(void) {
    buf b = {0};
    expect(&b, SM_ERR_FORMAT, "empty file");
    put(&b, "GGU", 3);
    expect(&b, SM_ERR_FORMAT, "too short");
    put(&b, "GGML", 4), u32(&b, 3);
    expect(&b, SM_ERR_FORMAT, "not a GGUF file");
    header(&b, 1, 0, 0);
    expect(&b, SM_ERR_UNSUPPORTED, "version 1");
    header(&b, 7, 0, 0);
    expect(&b, SM_ERR_FORMAT, "version 7");
    header(&b, 3u << 24, 0, 0);
    expect(&b, SM_ERR_UNSUPPORTED, "big-endian");
    header(&b, 3, 0, (uint64_t)1 << 62);
    expect(&b, SM_ERR_FORMAT, "key/value pairs cannot fit");
    header(&b, 3, UINT64_MAX, 0);
    expect(&b, SM_ERR_FORMAT, "tensor infos cannot fit");
    header(&b, 3, 0, 1), u64(&b, 1000), put(&b, "abcdefghijklmnopqrstuvwxyz", 26);
    expect(&b, SM_ERR_FORMAT, "longer than the");
    header(&b, 3, 0, 1), str(&b, ""), u32(&b, SM_GGUF_U8), u8(&b, 0);
    expect(&b, SM_ERR_FORMAT, "has length 0");
    one_key(&b, 13), u32(&b, 0);
    expect(&b, SM_ERR_FORMAT, "unknown value type 13");
    one_key(&b, SM_GGUF_BOOL), u8(&b, 2);
    expect(&b, SM_ERR_FORMAT, "bool value 2");
    one_key(&b, SM_GGUF_U32), u16(&b, 1);
    expect(&b, SM_ERR_FORMAT, "too short");
    one_key(&b, SM_GGUF_STRING), u64(&b, UINT64_MAX);
    expect(&b, SM_ERR_FORMAT, "longer than the");
    one_key(&b, SM_GGUF_ARRAY), u32(&b, SM_GGUF_U32), u64(&b, (uint64_t)1 << 61);
    expect(&b, SM_ERR_FORMAT, "more than the");
    one_key(&b, SM_GGUF_ARRAY), u32(&b, SM_GGUF_STRING), u64(&b, UINT64_MAX / 2);
    expect(&b, SM_ERR_FORMAT, "more than the");
    one_key(&b, SM_GGUF_ARRAY), u32(&b, SM_GGUF_STRING), u64(&b, 2), str(&b, "a"), u64(&b, 99);
    expect(&b, SM_ERR_FORMAT, "element 1");
    one_key(&b, SM_GGUF_ARRAY), u32(&b, 42), u64(&b, 0);
    expect(&b, SM_ERR_FORMAT, "array of unknown value type 42");
    one_key(&b, SM_GGUF_ARRAY), u32(&b, SM_GGUF_BOOL), u64(&b, 2), u8(&b, 1), u8(&b, 7);
    expect(&b, SM_ERR_FORMAT, "element 1 is bool value 7");
    one_key(&b, SM_GGUF_ARRAY); // arrays of arrays, 20 deep
    for (int d = 0; d < 20; d++) u32(&b, SM_GGUF_ARRAY), u64(&b, 1);
    u32(&b, SM_GGUF_U8), u64(&b, 0);
    expect(&b, SM_ERR_FORMAT, "nested deeper than 8");
    header(&b, 3, 0, 2);
    key(&b, "k", SM_GGUF_U8), u8(&b, 1), key(&b, "k", SM_GGUF_U8), u8(&b, 2);
    expect(&b, SM_ERR_FORMAT, "\"k\" appears twice");
    header(&b, 3, 0, 1), key(&b, "general.alignment", SM_GGUF_U32), u32(&b, 48);
    expect(&b, SM_ERR_FORMAT, "power of two");
    header(&b, 3, 0, 1), key(&b, "general.alignment", SM_GGUF_STRING), str(&b, "32");
    expect(&b, SM_ERR_FORMAT, "general.alignment");
    header(&b, 3, 0, 1), key(&b, "general.alignment", SM_GGUF_U32), u32(&b, 0);
    expect(&b, SM_ERR_FORMAT, "power of two");
    // Tensor infos.
    uint64_t d2[2] = {32, 2}, d5[5] = {1, 1, 1, 1, 1};
    one_tensor(&b, 0, d2, SM_GGML_F32, 0);
    expect(&b, SM_ERR_FORMAT, "0 dimensions");
    one_tensor(&b, 5, d5, SM_GGML_F32, 0);
    expect(&b, SM_ERR_FORMAT, "5 dimensions");
    one_tensor(&b, 2, d2, 99, 0);
    expect(&b, SM_ERR_FORMAT, "unknown ggml type 99");
    one_tensor(&b, 2, (uint64_t[]){33, 1}, SM_GGML_Q8_0, 0);
    expect(&b, SM_ERR_FORMAT, "not whole Q8_0 blocks of 32");
    one_tensor(&b, 2, (uint64_t[]){(uint64_t)1 << 40, (uint64_t)1 << 40}, SM_GGML_F32, 0);
    expect(&b, SM_ERR_FORMAT, "dimensions too large");
    one_tensor(&b, 1, (uint64_t[]){UINT64_MAX}, SM_GGML_F32, 0);
    expect(&b, SM_ERR_FORMAT, "dimensions too large");
    one_tensor(&b, 1, (uint64_t[]){4}, SM_GGML_F32, 16);
    expect(&b, SM_ERR_FORMAT, "not a multiple of the alignment 32");
    one_tensor(&b, 1, (uint64_t[]){4}, SM_GGML_F32, (uint64_t)1 << 40);
    expect(&b, SM_ERR_FORMAT, "run past the end");
    one_tensor(&b, 1, (uint64_t[]){25}, SM_GGML_F32, 0); // 100 bytes, 96 there
    expect(&b, SM_ERR_FORMAT, "run past the end");
    one_tensor(&b, 2, (uint64_t[]){(uint64_t)1 << 31, (uint64_t)1 << 30}, SM_GGML_Q4_0, 0);
    expect(&b, SM_ERR_FORMAT, "run past the end");
    header(&b, 3, 2, 0);
    for (int k = 0; k < 2; k++) str(&b, "t"), u32(&b, 1), u64(&b, 1), u32(&b, 0), u64(&b, 0);
    pad(&b, 32), u32(&b, 0);
    expect(&b, SM_ERR_FORMAT, "\"t\" appears twice");
    header(&b, 3, 1, 0), u64(&b, 3), put(&b, "a\0b", 3), u32(&b, 1), u64(&b, 1), u32(&b, 0),
        u64(&b, 0);
    expect(&b, SM_ERR_FORMAT, "no NUL bytes");
    // A file without tensors need not have a data section; one type without a decoder opens.
    header(&b, 3, 0, 0);
    CHECK_OK(open_bytes(&b));
    free(b.p);
    memset(&b, 0, sizeof b);
    one_tensor(&b, 1, (uint64_t[]){256}, 16 /* IQ2_XXS */, 0);
    write_file(&b);
    sm_gguf *g = NULL;
    CHECK_OK(sm_gguf_open(g_path, &g));
    if (g) {
        CHECK(!strcmp(sm_gguf_find(g, "t")->type_name, "IQ2_XXS"));
        CHECK_FAIL(sm_gguf_read_f32(g, "t", &(float *){0}, &(int64_t){0}), SM_ERR_UNSUPPORTED,
                   "IQ2_XXS, which has no decoder");
        sm_gguf_close(g);
    }
    free(b.p);
}

// A GGUF that is not a model the runtime runs is refused by sm_model_load with the reason.
static void test_model_refusals(void) {
    buf b = {0};
    header(&b, 3, 0, 1), key(&b, "general.architecture", SM_GGUF_STRING), str(&b, "gpt2");
    write_file(&b);
    sm_model *m = NULL;
    CHECK_FAIL(sm_model_load(g_path, &m), SM_ERR_UNSUPPORTED, "general.architecture \"gpt2\"");
    free(b.p);
    memset(&b, 0, sizeof b);
    header(&b, 3, 0, 2), key(&b, "general.architecture", SM_GGUF_STRING), str(&b, "llama");
    key(&b, "llama.embedding_length", SM_GGUF_U32), u32(&b, 64);
    write_file(&b);
    CHECK_FAIL(sm_model_load(g_path, &m), SM_ERR_NOT_FOUND, "no key \"llama.block_count\"");
    CHECK(m == NULL);
    free(b.p);
}

// --- a tiny model both as a Hugging Face directory and as GGUF: the same logits ---------------

// Rows of w (rows, cols) in llama.cpp's order for heads of hd rows: GGUF row h hd + 2i + a is
// Hugging Face row h hd + a hd/2 + i (convert_hf_to_gguf.py's permute).
static void permute_rows(const float *w, float *out, int64_t rows, int64_t cols, int64_t hd) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t h = r / hd, k = r % hd, i = k / 2, a = k % 2;
        memcpy(out + r * cols, w + (h * hd + a * hd / 2 + i) * cols, (size_t)cols * sizeof *w);
    }
}

// arch "llama" (q/k rows and biases permuted in the GGUF) or "qwen2"; tied embeddings; q/k/v
// biases; one layer, dim 32, 2 heads of 16, 1 KV head, hidden 64, vocab 40.
static void test_tiny_model(const char *arch) {
    enum { D = 32, HD = 16, NH = 2, NKV = 1, FF = 64, V = 40 };
    char dir[128], file[160];
    snprintf(dir, sizeof dir, "%s.d", g_path);
    mkdir(dir, 0755);
    struct {
        const char *hf, *gg;
        int64_t r, c, perm; // perm: heads' row count to permute in the GGUF (0: none)
    } t[] = {
        {"model.embed_tokens.weight", "token_embd.weight", V, D, 0},
        {"model.norm.weight", "output_norm.weight", 0, D, 0},
        {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight", 0, D, 0},
        {"model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight", 0, D, 0},
        {"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", NH * HD, D, HD},
        {"model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", NKV * HD, D, HD},
        {"model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight", NKV * HD, D, 0},
        {"model.layers.0.self_attn.o_proj.weight", "blk.0.attn_output.weight", D, NH * HD, 0},
        {"model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight", FF, D, 0},
        {"model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight", FF, D, 0},
        {"model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight", D, FF, 0},
        {"model.layers.0.self_attn.q_proj.bias", "blk.0.attn_q.bias", 0, NH * HD, HD},
        {"model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias", 0, NKV * HD, HD},
        {"model.layers.0.self_attn.v_proj.bias", "blk.0.attn_v.bias", 0, NKV * HD, 0},
    };
    enum { NT = sizeof t / sizeof t[0] };
    bool llama = !strcmp(arch, "llama");
    float *w[NT];
    sm_st_writer *sw = sm_st_writer_init();
    buf b = {0};
    header(&b, 3, NT, 9);
    key(&b, "general.architecture", SM_GGUF_STRING), str(&b, arch);
    char k[64];
#define ARCH_U32(name, v)                                                                          \
    (snprintf(k, sizeof k, "%s." name, arch), key(&b, k, SM_GGUF_U32), u32(&b, v))
    ARCH_U32("embedding_length", D);
    ARCH_U32("block_count", 1);
    ARCH_U32("feed_forward_length", FF);
    ARCH_U32("attention.head_count", NH);
    ARCH_U32("attention.head_count_kv", NKV);
    ARCH_U32("context_length", 64);
#undef ARCH_U32
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", arch);
    key(&b, k, SM_GGUF_F32), f32(&b, 1e-6f);
    snprintf(k, sizeof k, "%s.rope.freq_base", arch);
    key(&b, k, SM_GGUF_F32), f32(&b, 5000.0f);
    uint64_t off = 0;
    for (int i = 0; i < NT; i++) {
        int64_t n = (t[i].r ? t[i].r : 1) * t[i].c;
        w[i] = malloc((size_t)n * sizeof(float));
        fill_random(w[i], n, 100u + (unsigned)i);
        bool norm = strstr(t[i].hf, "norm") != NULL;
        for (int64_t j = 0; j < n && !t[i].r; j++) // norms near 1, biases small
            w[i][j] = norm ? 1.0f + 0.3f * w[i][j] : 0.2f * w[i][j];
        int64_t shape[2] = {t[i].r ? t[i].r : t[i].c, t[i].c};
        sm_st_writer_add(sw, t[i].hf, SM_DTYPE_F32, t[i].r ? 2 : 1, shape, w[i],
                         (size_t)n * sizeof(float));
        str(&b, t[i].gg);
        u32(&b, t[i].r ? 2 : 1);
        u64(&b, (uint64_t)t[i].c);
        if (t[i].r) u64(&b, (uint64_t)t[i].r);
        u32(&b, SM_GGML_F32);
        u64(&b, off);
        off += ((uint64_t)n * 4 + 31) / 32 * 32;
    }
    pad(&b, 32);
    for (int i = 0; i < NT; i++) {
        int64_t rows = t[i].r ? t[i].r : t[i].c, cols = t[i].r ? t[i].c : 1;
        float *p = malloc((size_t)(rows * cols) * sizeof *p);
        if (llama && t[i].perm)
            permute_rows(w[i], p, rows, cols, t[i].perm);
        else
            memcpy(p, w[i], (size_t)(rows * cols) * sizeof *p);
        put(&b, p, (size_t)(rows * cols) * sizeof *p);
        pad(&b, 32);
        free(p);
    }
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    CHECK_OK(sm_st_writer_write(sw, file, true));
    sm_st_writer_free(sw);
    snprintf(file, sizeof file, "%s/config.json", dir);
    FILE *f = fopen(file, "w");
    fprintf(f,
            "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"%s\", "
            "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": 1, "
            "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"hidden_act\": \"silu\", "
            "\"rms_norm_eps\": 1e-6, \"rope_theta\": 5000.0, \"max_position_embeddings\": 64, "
            "\"vocab_size\": %d, \"tie_word_embeddings\": true}",
            arch, D, FF, NH, NKV, V);
    fclose(f);
    write_file(&b);
    free(b.p);
    sm_model *mh = NULL, *mg = NULL;
    CHECK_OK(sm_model_load(dir, &mh));
    CHECK_OK(sm_model_load(g_path, &mg));
    if (mh && mg) {
        sm_model_info a, c;
        sm_model_get_info(mh, &a);
        sm_model_get_info(mg, &c);
        CHECK(c.tied && c.qkv_bias && !strcmp(c.format, "gguf") && c.rope_layout == SM_ROPE_HALF);
        CHECK(a.rope_theta == c.rope_theta && fabs(c.rms_eps - 1e-6) < 1e-12);
        int32_t ids[6] = {3, 17, 39, 0, 22, 5};
        float *la = malloc(6 * V * sizeof *la), *lc = malloc(6 * V * sizeof *lc);
        sm_context *ca = NULL, *cc = NULL;
        CHECK_OK(sm_context_init(mh, 16, 0, &ca));
        CHECK_OK(sm_context_init(mg, 16, 0, &cc));
        if (ca && cc) {
            CHECK_OK(sm_context_forward(ca, ids, 6, SM_LOGITS_ALL, la));
            CHECK_OK(sm_context_forward(cc, ids, 6, SM_LOGITS_ALL, lc));
            CHECK(check_close(arch, lc, la, 6 * V, 1e-4) == 0);
        }
        sm_context_free(ca);
        sm_context_free(cc);
        free(la);
        free(lc);
    }
    sm_model_free(mh);
    sm_model_free(mg);
    for (int i = 0; i < NT; i++) free(w[i]);
    snprintf(file, sizeof file, "rm -rf %s", dir);
    if (system(file)) {
    }
}

// --- the ggml operator: apply and apply_t against its own dense matrix in double -------------

static void check_apply(const sm_op *op, const char *what) {
    int64_t m = sm_op_rows(op), n = sm_op_cols(op);
    float *W = malloc((size_t)(m * n) * sizeof *W);
    CHECK_OK(sm_op_to_dense(op, W));
    for (int64_t N = 1; N <= 5; N += 4) {
        float *X = malloc((size_t)(N * n) * sizeof *X), *Y = malloc((size_t)(N * m) * sizeof *Y);
        float *Yr = malloc((size_t)(N * m) * sizeof *Yr), *Xt = malloc((size_t)(N * n) * 4);
        float *Xr = malloc((size_t)(N * n) * sizeof *Xr), *Yin = malloc((size_t)(N * m) * 4);
        fill_random(X, N * n, 5);
        fill_random(Yin, N * m, 6);
        for (int64_t r = 0; r < N; r++) {
            for (int64_t i = 0; i < m; i++) {
                double acc = 0;
                for (int64_t j = 0; j < n; j++) acc += (double)X[r * n + j] * W[i * n + j];
                Yr[r * m + i] = (float)acc;
            }
            for (int64_t j = 0; j < n; j++) {
                double acc = 0;
                for (int64_t i = 0; i < m; i++) acc += (double)Yin[r * m + i] * W[i * n + j];
                Xr[r * n + j] = (float)acc;
            }
        }
        CHECK_OK(sm_op_apply(op, N, X, Y, NULL));
        CHECK_OK(sm_op_apply_t(op, N, Yin, Xt, NULL));
        CHECK(check_close(what, Y, Yr, N * m, 1e-5) == 0);
        CHECK(check_close(what, Xt, Xr, N * n, 1e-5) == 0);
        free(X), free(Y), free(Yr), free(Xt), free(Xr), free(Yin);
    }
    free(W);
}

static void test_ggml_op(void) {
    // 300 rows of 256: two tiles of decoded rows.
    int64_t m = 300, n = 256;
    float *W = malloc((size_t)(m * n) * sizeof *W);
    fill_random(W, m * n, 11);
    const char *specs[] = {"ggml:type=q8_0", "ggml:type=q4_0", "ggml:type=q5_1"};
    for (int k = 0; k < 3; k++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, specs[k], NULL, &op));
        if (!op) continue;
        check_apply(op, specs[k]);
        // Its parts rebuild it exactly.
        sm_part *parts;
        int np;
        CHECK_OK(sm_op_parts(op, &parts, &np));
        sm_op *back = NULL;
        CHECK_OK(sm_op_from_parts(specs[k], m, n, parts, np, &back));
        if (back) {
            sm_part *p2;
            int n2;
            CHECK_OK(sm_op_parts(back, &p2, &n2));
            CHECK(n2 == 1 && !memcmp(p2[0].data, parts[0].data, parts[0].nbytes));
            free(p2);
            sm_op_free(back);
        }
        free(parts);
        sm_op_free(op);
    }
    // K quants are loaded, not fitted: random Q4_K and Q6_K blocks with finite scales.
    const struct {
        const char *spec;
        int bytes, scale_at;
    } kq[] = {{"ggml:type=q4_k", 144, 0}, {"ggml:type=q6_k", 210, 208}};
    for (int k = 0; k < 2; k++) {
        size_t nb = (size_t)(m * (n / 256) * kq[k].bytes);
        uint8_t *blocks = malloc(nb);
        uint64_t r = 12345;
        for (size_t i = 0; i < nb; i++)
            r = r * 6364136223846793005ull + 1, blocks[i] = (uint8_t)(r >> 56);
        for (int64_t blk = 0; blk < m * (n / 256); blk++) {
            uint16_t d = h(0.01f), dm = h(0.002f);
            memcpy(blocks + blk * kq[k].bytes + kq[k].scale_at, &d, 2);
            if (kq[k].scale_at == 0) memcpy(blocks + blk * kq[k].bytes + 2, &dm, 2);
        }
        sm_part p = {.name = "blocks",
                     .dtype = SM_DTYPE_U8,
                     .ndim = 2,
                     .shape = {m, n / 256 * kq[k].bytes},
                     .data = blocks,
                     .nbytes = nb};
        sm_op *op = NULL;
        CHECK_OK(sm_op_from_parts(kq[k].spec, m, n, &p, 1, &op));
        if (op) {
            CHECK(sm_op_nbytes(op) == (int64_t)nb && sm_op_nparams(op) == m * n);
            check_apply(op, kq[k].spec);
            sm_op_free(op);
        }
        // A NaN scale is refused, naming the block; so are wrong sizes and fitting K quants.
        uint16_t nan = 0x7e00;
        memcpy(blocks + 5 * kq[k].bytes + kq[k].scale_at, &nan, 2);
        CHECK_FAIL(sm_op_from_parts(kq[k].spec, m, n, &p, 1, &op), SM_ERR_NUMERIC, "block 5");
        p.nbytes--;
        CHECK_FAIL(sm_op_from_parts(kq[k].spec, m, n, &p, 1, &op), SM_ERR_FORMAT,
                   "part \"blocks\"");
        free(blocks);
        CHECK_FAIL(sm_op_fit(W, m, n, kq[k].spec, NULL, &op), SM_ERR_UNSUPPORTED,
                   "only loaded from GGUF");
    }
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 10, 33, "ggml:type=q8_0", NULL, &op), SM_ERR_SHAPE, "whole 32");
    CHECK_FAIL(sm_op_fit(W, 10, 32, "ggml:type=f16", NULL, &op), SM_ERR_SPEC, "not a block type");
    CHECK_FAIL(sm_op_fit(W, 10, 32, "ggml", NULL, &op), SM_ERR_SPEC, "type=T is required");
    free(W);
}

int main(void) {
    // Thousands of small files are written: on /dev/shm when there is one.
    snprintf(g_path, sizeof g_path, "%s/sm_test_gguf_%d.gguf",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    test_valid(3);
    test_valid(2);
    test_hostile();
    test_model_refusals();
    test_tiny_model("llama");
    test_tiny_model("qwen2");
    test_ggml_op();
    unlink(g_path);
    TEST_END();
}
