// safetensors reader and writer. Every input is built here as bytes in a fresh temporary
// directory: a write/read round trip of every dtype with metadata, a misaligned tensor, sharded
// and multi-file checkpoints, every malformed-header fault (each must be refused naming the file
// and the fault), truncations and byte flips that must never crash, and the shared model file.
#include "base/base.h"
#include "testutil.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static void join(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

// A safetensors file from a header text and `dlen` data bytes (data NULL: bytes 0, 1, 2, ...).
// hlen_field overrides the length field when nonzero.
static void write_st(const char *path, const char *hdr, size_t hlen, const void *data, size_t dlen,
                     uint64_t hlen_field) {
    size_t n = 8 + hlen + dlen;
    unsigned char *b = malloc(n + 1);
    uint64_t field = hlen_field ? hlen_field : hlen;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(field >> (8 * i));
    memcpy(b + 8, hdr, hlen);
    for (size_t i = 0; i < dlen; i++)
        b[8 + hlen + i] = data ? ((const unsigned char *)data)[i] : (unsigned char)i;
    write_bytes(path, b, n);
    free(b);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

// --- round trip -------------------------------------------------------------------------------

static void test_round_trip(void) {
    char path[256];
    join(path, sizeof path, "rt.safetensors");
    // Values whose half/bfloat16 bit patterns are known by hand, so the conversions are checked
    // against an independent reference.
    const float f32[6] = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-3f};
    const uint16_t f16[4] = {0x3800, 0xC000, 0x3D00, 0x7BFF}; // 0.5, -2, 1.25, 65504
    const float f16_want[4] = {0.5f, -2.0f, 1.25f, 65504.0f};
    const uint16_t bf16[3] = {0x3F80, 0xC040, 0x4049}; // 1, -3, 3.140625
    const float bf16_want[3] = {1.0f, -3.0f, 3.140625f};
    const double f64[2] = {0.125, -1e10};
    const int8_t i8[5] = {-128, -1, 0, 1, 127};
    const uint8_t u8[3] = {0, 128, 255};
    const int64_t s23[2] = {2, 3}, s4[1] = {4}, s31[2] = {3, 1}, s5[1] = {5}, s2[1] = {2};
    const int64_t s0[1] = {0};

    sm_st_writer *w = sm_st_writer_init();
    CHECK_OK(sm_st_writer_add(w, "u8", SM_DTYPE_U8, 2, s31, u8, 3));
    CHECK_OK(sm_st_writer_add(w, "f32", SM_DTYPE_F32, 2, s23, f32, sizeof f32));
    CHECK_OK(sm_st_writer_add(w, "i8", SM_DTYPE_I8, 1, s5, i8, 5));
    CHECK_OK(sm_st_writer_add(w, "f16", SM_DTYPE_F16, 1, s4, f16, sizeof f16));
    CHECK_OK(sm_st_writer_add(w, "bf16", SM_DTYPE_BF16, 1, (const int64_t[]){3}, bf16, 6));
    CHECK_OK(sm_st_writer_add(w, "f64", SM_DTYPE_F64, 1, s2, f64, sizeof f64));
    CHECK_OK(sm_st_writer_add(w, "scalar", SM_DTYPE_F32, 0, NULL, &f32[2], 4));
    CHECK_OK(sm_st_writer_add(w, "empty", SM_DTYPE_F32, 1, s0, NULL, 0));
    CHECK_OK(sm_st_writer_meta(w, "format", "pt"));
    CHECK_OK(sm_st_writer_meta(w, "odd \"key\"\\", "line1\nline2\ttab \x01 \xc3\xa9"));
    CHECK_OK(sm_st_writer_meta(w, "replaced", "old"));
    CHECK_OK(sm_st_writer_meta(w, "replaced", "new"));
    // Misuse is refused up front.
    CHECK_FAIL(sm_st_writer_add(w, "bad", SM_DTYPE_F32, 1, s4, f32, 12), SM_ERR_ARG, "need 16");
    CHECK_FAIL(sm_st_writer_add(w, "__metadata__", SM_DTYPE_U8, 1, s4, u8, 4), SM_ERR_ARG,
               "invalid tensor name");
    CHECK_FAIL(sm_st_writer_add(w, "neg", SM_DTYPE_U8, 1, (const int64_t[]){-1}, u8, 0), SM_ERR_ARG,
               "shape[0]");
    CHECK_FAIL(sm_st_writer_add(w, "unk", SM_DTYPE_UNKNOWN, 1, s4, u8, 4), SM_ERR_ARG, "dtype");
    CHECK_OK(sm_st_writer_write(w, path, false));
    sm_st_writer_free(w);

    // The raw layout: header length a multiple of 8, "__metadata__" first, data aligned.
    size_t size = 0;
    unsigned char *raw = read_bytes(path, &size);
    CHECK(raw && size > 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | raw[i];
    CHECK(hlen % 8 == 0);
    CHECK(hlen + 8 <= size);
    CHECK(memcmp(raw + 8, "{\"__metadata__\":{", 17) == 0);
    CHECK(size == 8 + hlen + sizeof f32 + 3 + 5 + sizeof f16 + 6 + sizeof f64 + 4);

    sm_st *st = NULL;
    CHECK_OK(sm_st_open(path, &st));
    if (!st) return;
    CHECK(sm_st_count(st) == 8);
    // Descending element size, then name.
    const char *order[] = {"f64", "empty", "f32", "scalar", "bf16", "f16", "i8", "u8"};
    for (int i = 0; i < 8 && i < sm_st_count(st); i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        if (strcmp(t->name, order[i]) != 0)
            fprintf(stderr, "order %d: %s, expected %s\n", i, t->name, order[i]), g_failures++;
        // Aligned to its element size within the file (the mapping is page aligned).
        uintptr_t off = (uintptr_t)t->data;
        CHECK(sm_dtype_size(t->dtype) == 0 || off % sm_dtype_size(t->dtype) == 0);
        CHECK(strcmp(t->file, path) == 0);
    }
    CHECK(sm_st_get(st, 8) == NULL && sm_st_get(st, -1) == NULL);
    const struct {
        const char *name;
        sm_dtype dt;
        int ndim;
        int64_t d0, d1;
        const void *data;
        size_t nbytes;
    } want[] = {
        {"f32", SM_DTYPE_F32, 2, 2, 3, f32, sizeof f32},
        {"f16", SM_DTYPE_F16, 1, 4, 0, f16, sizeof f16},
        {"bf16", SM_DTYPE_BF16, 1, 3, 0, bf16, sizeof bf16},
        {"f64", SM_DTYPE_F64, 1, 2, 0, f64, sizeof f64},
        {"i8", SM_DTYPE_I8, 1, 5, 0, i8, 5},
        {"u8", SM_DTYPE_U8, 2, 3, 1, u8, 3},
        {"scalar", SM_DTYPE_F32, 0, 0, 0, &f32[2], 4},
        {"empty", SM_DTYPE_F32, 1, 0, 0, NULL, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const sm_tensor_info *t = sm_st_find(st, want[i].name);
        CHECK(t != NULL);
        if (!t) continue;
        CHECK(t->dtype == want[i].dt && strcmp(t->dtype_name, sm_dtype_name(want[i].dt)) == 0);
        CHECK(t->ndim == want[i].ndim && t->nbytes == want[i].nbytes);
        if (t->ndim > 0) CHECK(t->shape[0] == want[i].d0);
        if (t->ndim > 1) CHECK(t->shape[1] == want[i].d1);
        if (want[i].nbytes) CHECK(memcmp(t->data, want[i].data, want[i].nbytes) == 0);
    }
    CHECK(sm_st_find(st, "nope") == NULL);

    float *v = NULL;
    int64_t n = 0;
    CHECK_OK(sm_st_read_f32(st, "f32", &v, &n));
    CHECK(n == 6 && v && memcmp(v, f32, sizeof f32) == 0);
    free(v);
    CHECK_OK(sm_st_read_f32(st, "f16", &v, &n));
    CHECK(n == 4 && v && memcmp(v, f16_want, sizeof f16_want) == 0);
    free(v);
    CHECK_OK(sm_st_read_f32(st, "bf16", &v, &n));
    CHECK(n == 3 && v && memcmp(v, bf16_want, sizeof bf16_want) == 0);
    free(v);
    CHECK_OK(sm_st_read_f32(st, "f64", &v, &n));
    CHECK(n == 2 && v && v[0] == 0.125f && v[1] == -1e10f);
    free(v);
    CHECK_OK(sm_st_read_f32(st, "empty", &v, &n));
    CHECK(n == 0);
    free(v);
    CHECK_FAIL(sm_st_read_f32(st, "i8", &v, &n), SM_ERR_UNSUPPORTED, "\"i8\" has dtype I8");
    CHECK(strstr(sm_last_error(), path) != NULL);
    CHECK_FAIL(sm_st_read_f32(st, "missing", &v, &n), SM_ERR_NOT_FOUND, "\"missing\"");

    CHECK(sm_st_meta_count(st) == 3);
    CHECK(sm_st_meta(st, "format") && !strcmp(sm_st_meta(st, "format"), "pt"));
    const char *odd = sm_st_meta(st, "odd \"key\"\\");
    CHECK(odd && !strcmp(odd, "line1\nline2\ttab \x01 \xc3\xa9"));
    CHECK(sm_st_meta(st, "replaced") && !strcmp(sm_st_meta(st, "replaced"), "new"));
    CHECK(sm_st_meta(st, "absent") == NULL);
    const char *k, *val;
    sm_st_meta_get(st, 0, &k, &val);
    CHECK(!strcmp(k, "format") && !strcmp(val, "pt"));
    sm_st_close(st);

    // Writing over it without force is refused and leaves the file (and directory) untouched.
    int entries = count_entries(g_dir);
    w = sm_st_writer_init();
    CHECK_OK(sm_st_writer_add(w, "x", SM_DTYPE_U8, 1, s2, u8, 2));
    CHECK_FAIL(sm_st_writer_write(w, path, false), SM_ERR_EXISTS, "exists");
    size_t size2 = 0;
    unsigned char *raw2 = read_bytes(path, &size2);
    CHECK(raw2 && size2 == size && memcmp(raw, raw2, size) == 0);
    CHECK(count_entries(g_dir) == entries);
    free(raw2);
    CHECK_OK(sm_st_writer_write(w, path, true));
    CHECK(count_entries(g_dir) == entries);
    sm_st_writer_free(w);
    CHECK_OK(sm_st_open(path, &st));
    if (st) {
        CHECK(sm_st_count(st) == 1 && sm_st_find(st, "x") && sm_st_meta_count(st) == 0);
        sm_st_close(st);
    }
    free(raw);

    // The same name twice is refused at write time and writes nothing.
    join(path, sizeof path, "twice.safetensors");
    w = sm_st_writer_init();
    CHECK_OK(sm_st_writer_add(w, "x", SM_DTYPE_U8, 1, s2, u8, 2));
    CHECK_OK(sm_st_writer_add(w, "x", SM_DTYPE_F32, 1, s2, f32, 8));
    CHECK_FAIL(sm_st_writer_write(w, path, false), SM_ERR_ARG, "\"x\" added twice");
    CHECK(access(path, F_OK) != 0);
    sm_st_writer_free(w);

    // No tensors at all is still a valid file.
    join(path, sizeof path, "none.safetensors");
    w = sm_st_writer_init();
    CHECK_OK(sm_st_writer_write(w, path, false));
    sm_st_writer_free(w);
    CHECK_OK(sm_st_open(path, &st));
    if (st) CHECK(sm_st_count(st) == 0 && sm_st_meta_count(st) == 0);
    sm_st_close(st);
}

// --- hand-made files ------------------------------------------------------------------------

static void test_misaligned(void) {
    char path[256];
    join(path, sizeof path, "misaligned.safetensors");
    // Header padded to 112 bytes so the data starts 8-aligned; "b" then sits at an odd address.
    char hdr[113];
    snprintf(hdr, sizeof hdr, "%-112s",
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[3,11]}}");
    unsigned char data[11] = {7, 8, 9};
    const float bv[2] = {1.5f, -7.25f};
    memcpy(data + 3, bv, 8);
    write_st(path, hdr, 112, data, 11, 0);
    sm_st *st = NULL;
    CHECK_OK(sm_st_open(path, &st));
    if (!st) return;
    const sm_tensor_info *b = sm_st_find(st, "b");
    CHECK(b && ((uintptr_t)b->data & 3) != 0);
    float *v = NULL;
    int64_t n = 0;
    CHECK_OK(sm_st_read_f32(st, "b", &v, &n));
    CHECK(n == 2 && v && v[0] == 1.5f && v[1] == -7.25f);
    free(v);
    CHECK(strcmp(sm_st_get(st, 0)->name, "a") == 0);
    sm_st_close(st);
}

// Writes a one-file checkpoint with tensors named in `names` (F32, 2 values each: i+0.5, -i).
static void write_shard(const char *path, const char *const *names, int count) {
    sm_st_writer *w = sm_st_writer_init();
    float *vals = malloc(sizeof(float) * 2 * (size_t)count);
    for (int i = 0; i < count; i++) {
        vals[2 * i] = (float)names[i][0] + 0.5f;
        vals[2 * i + 1] = -(float)names[i][0];
        CHECK_OK(
            sm_st_writer_add(w, names[i], SM_DTYPE_F32, 1, (const int64_t[]){2}, &vals[2 * i], 8));
    }
    CHECK_OK(sm_st_writer_meta(w, "format", "pt"));
    CHECK_OK(sm_st_writer_write(w, path, true));
    sm_st_writer_free(w);
    free(vals);
}

static void check_value(const sm_st *st, const char *name, const char *shard_suffix) {
    const sm_tensor_info *t = sm_st_find(st, name);
    CHECK(t != NULL);
    if (!t) return;
    size_t a = strlen(t->file), b = strlen(shard_suffix);
    CHECK(a >= b && strcmp(t->file + a - b, shard_suffix) == 0);
    float v[2];
    memcpy(v, t->data, 8);
    CHECK(v[0] == (float)name[0] + 0.5f && v[1] == -(float)name[0]);
}

static void test_sharded(void) {
    char dir[256], p[300];
    join(dir, sizeof dir, "sharded");
    mkdir(dir, 0755);
    const char *s1 = "model-00001-of-00002.safetensors", *s2 = "model-00002-of-00002.safetensors";
    snprintf(p, sizeof p, "%s/%s", dir, s1);
    write_shard(p, (const char *[]){"b", "a", "x"}, 3); // "x" is not in the index: not listed
    snprintf(p, sizeof p, "%s/%s", dir, s2);
    write_shard(p, (const char *[]){"d", "c"}, 2);
    char index[1024];
    snprintf(index, sizeof index,
             "{\"metadata\":{\"total_size\":40},\"weight_map\":{\"a\":\"%s\",\"b\":\"%s\","
             "\"c\":\"%s\",\"d\":\"%s\"}}",
             s1, s1, s2, s2);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, index, strlen(index));

    for (int via_index = 0; via_index < 2; via_index++) {
        sm_st *st = NULL;
        CHECK_OK(sm_st_open(via_index ? p : dir, &st));
        if (!st) continue;
        CHECK(sm_st_count(st) == 4);
        check_value(st, "a", s1);
        check_value(st, "b", s1);
        check_value(st, "c", s2);
        check_value(st, "d", s2);
        CHECK(sm_st_find(st, "x") == NULL);
        // Header order within each shard (the writer sorts by name), shards in name order.
        const char *order[] = {"a", "b", "c", "d"};
        for (int i = 0; i < 4 && i < sm_st_count(st); i++)
            CHECK(strcmp(sm_st_get(st, i)->name, order[i]) == 0);
        CHECK(sm_st_meta(st, "format") && sm_st_meta_count(st) == 1);
        float *v = NULL;
        CHECK_OK(sm_st_read_f32(st, "d", &v, NULL));
        CHECK(v && v[0] == 'd' + 0.5f);
        free(v);
        sm_st_close(st);
    }

    // An index naming a tensor its shard lacks, or a shard that does not exist, is refused.
    sm_st *st = NULL;
    snprintf(index, sizeof index, "{\"weight_map\":{\"a\":\"%s\",\"e\":\"%s\"}}", s1, s2);
    write_bytes(p, index, strlen(index));
    CHECK_FAIL(sm_st_open(dir, &st), SM_ERR_FORMAT, "tensor \"e\" is not in its shard");
    CHECK(strstr(sm_last_error(), "index.json") != NULL);
    snprintf(index, sizeof index, "{\"weight_map\":{\"a\":\"%s\",\"c\":\"gone.safetensors\"}}", s1);
    write_bytes(p, index, strlen(index));
    CHECK_FAIL(sm_st_open(dir, &st), SM_ERR_IO, "gone.safetensors");
    snprintf(index, sizeof index, "{\"weight_map\":{\"a\":\"../%s\"}}", s1);
    write_bytes(p, index, strlen(index));
    CHECK_FAIL(sm_st_open(dir, &st), SM_ERR_FORMAT, "not a plain file name");
    const char *bad_index[][2] = {
        {"{\"weight_map\":{\"a\":1}}", "not a plain file name"},
        {"{\"weight_map\":[]}", "no \"weight_map\" object"},
        {"{\"weight_map\":{}}", "empty weight_map"},
        {"{\"weight_map\":{\"a\":\"x\"", "not valid JSON"},
        {"[]", "not a JSON object"},
        {"{\"weight_map\":{\"a\":\"s.safetensors\",\"a\":\"s.safetensors\"}}", "\"a\" twice"},
    };
    for (size_t i = 0; i < sizeof bad_index / sizeof bad_index[0]; i++) {
        write_bytes(p, bad_index[i][0], strlen(bad_index[i][0]));
        CHECK_FAIL(sm_st_open(p, &st), SM_ERR_FORMAT, bad_index[i][1]);
        CHECK(strstr(sm_last_error(), p) != NULL);
    }
    unlink(p);

    // No index and no model.safetensors: every *.safetensors of the directory, sorted.
    CHECK_OK(sm_st_open(dir, &st));
    if (st) {
        CHECK(sm_st_count(st) == 5 && sm_st_find(st, "x") != NULL);
        CHECK(strcmp(sm_st_get(st, 2)->name, "x") == 0 && strcmp(sm_st_get(st, 3)->name, "c") == 0);
        check_value(st, "c", s2);
        sm_st_close(st);
    }
    // ... where a name in two files is an error.
    snprintf(p, sizeof p, "%s/zz.safetensors", dir);
    write_shard(p, (const char *[]){"c"}, 1);
    CHECK_FAIL(sm_st_open(dir, &st), SM_ERR_FORMAT, "tensor \"c\" is in both");
    // model.safetensors, when present, is the checkpoint.
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_shard(p, (const char *[]){"m"}, 1);
    CHECK_OK(sm_st_open(dir, &st));
    if (st) CHECK(sm_st_count(st) == 1 && sm_st_find(st, "m"));
    sm_st_close(st);

    // A stale copy of a tensor in another shard is ignored: the index says where it lives.
    join(dir, sizeof dir, "sharded2");
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/%s", dir, s1);
    write_shard(p, (const char *[]){"a", "b"}, 2);
    snprintf(p, sizeof p, "%s/%s", dir, s2);
    write_shard(p, (const char *[]){"b", "c"}, 2);
    snprintf(index, sizeof index, "{\"weight_map\":{\"a\":\"%s\",\"b\":\"%s\",\"c\":\"%s\"}}", s1,
             s2, s2);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, index, strlen(index));
    CHECK_OK(sm_st_open(p, &st));
    if (st) {
        CHECK(sm_st_count(st) == 3);
        check_value(st, "a", s1);
        check_value(st, "b", s2);
        check_value(st, "c", s2);
        sm_st_close(st);
    }

    char empty[256];
    join(empty, sizeof empty, "empty-dir");
    mkdir(empty, 0755);
    CHECK_FAIL(sm_st_open(empty, &st), SM_ERR_NOT_FOUND, "no .safetensors file");
    CHECK_FAIL(sm_st_open("/nonexistent/structmat/x.safetensors", &st), SM_ERR_IO,
               "/nonexistent/structmat/x.safetensors");
}

// --- malformed files ------------------------------------------------------------------------

typedef struct bad_case {
    const char *header; // JSON text (may contain NUL: header_len then set)
    size_t dlen;        // data bytes after the header
    const char *needle;
    size_t header_len; // 0: strlen(header)
} bad_case;

#define T(dt, shape, off) "{\"dtype\":" dt ",\"shape\":" shape ",\"data_offsets\":" off "}"

static const bad_case k_bad[] = {
    {"{\"a\":", 0, "not valid JSON", 0},
    {"{} x", 0, "not valid JSON", 0},
    {"{}\0   ", 0, "not valid JSON", 6},
    {"{\"a\":{\"dtype\":\"F32\"", 0, "not valid JSON", 0},
    {"", 0, "not valid JSON", 0},
    {"[1,2]", 0, "not a JSON object", 0},
    {"\"str\"", 0, "not a JSON object", 0},
    {"{\"a\":5}", 0, "tensor \"a\": entry is not an object", 0},
    {"{\"a\":[]}", 0, "tensor \"a\": entry is not an object", 0},
    {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\"", 0},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing \"shape\"", 0},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\"", 0},
    {"{\"a\":" T("5", "[1]", "[0,4]") "}", 4, "\"dtype\" is not a string", 0},
    {"{\"a\":" T("\"F32\"", "\"1\"", "[0,4]") "}", 4, "\"shape\" is not an array", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "{}") "}", 4, "\"data_offsets\" is not an array", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[0]") "}", 4, "\"data_offsets\" is not an array", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[0,4,8]") "}", 4, "\"data_offsets\" is not an array", 0},
    {"{\"a\":" T("\"F32\"", "[1.5]", "[0,4]") "}", 4, "shape[0] is not a non-negative", 0},
    {"{\"a\":" T("\"F32\"", "[1,-1]", "[0,4]") "}", 4, "shape[1] is not a non-negative", 0},
    {"{\"a\":" T("\"F32\"", "[\"1\"]", "[0,4]") "}", 4, "shape[0] is not a non-negative", 0},
    {"{\"a\":" T("\"F32\"", "[1e300]", "[0,4]") "}", 4, "shape[0] is not a non-negative", 0},
    {"{\"a\":" T("\"F32\"", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, "9 dimensions", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[-4,0]") "}", 4, "not non-negative integers", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[0,4.5]") "}", 4, "not non-negative integers", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[0,null]") "}", 4, "not non-negative integers", 0},
    {"{\"a\":" T("\"F32\"", "[0]", "[4,0]") "}", 4, "end before they begin", 0},
    {"{\"a\":" T("\"F32\"", "[2]", "[0,8]") "}", 4, "out of range", 0},
    {"{\"a\":" T("\"U8\"", "[4]", "[1000000000000,1000000000004]") "}", 4, "out of range", 0},
    {"{\"a\":" T("\"F32\"", "[2]", "[0,8]") ",\"b\":" T("\"F32\"", "[2]", "[4,12]") "}", 12,
     "tensors \"a\" and \"b\" overlap", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[0,4]") ",\"b\":" T("\"F32\"", "[1]", "[8,12]") "}", 12,
     "gap of 4 unused bytes before tensor \"b\"", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[4,8]") "}", 8, "gap of 4 unused bytes before tensor \"a\"", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[0,4]") "}", 8, "4 unused bytes after the last tensor", 0},
    {"{}", 3, "3 unused bytes after the last tensor", 0},
    {"{\"a\":" T("\"F32\"", "[3]", "[0,8]") "}", 8, "needs 12 bytes but data_offsets span 8", 0},
    {"{\"a\":" T("\"BF16\"", "[2,2]", "[0,4]") "}", 4, "needs 8 bytes", 0},
    {"{\"a\":" T("\"F32\"", "[4294967296,4294967296,16]", "[0,4]") "}", 4, "overflows", 0},
    {"{\"a\":" T("\"F32\"", "[1]", "[0,4]") ",\"a\":" T("\"F32\"", "[1]", "[4,8]") "}", 8,
     "duplicate tensor name \"a\"", 0},
    {"{\"__metadata__\":\"x\"}", 0, "__metadata__ is not an object", 0},
    {"{\"__metadata__\":[\"x\"]}", 0, "__metadata__ is not an object", 0},
    {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of \"k\" is not a string", 0},
    {"{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, "value of \"k\" is not a string", 0},
    {"{\"__metadata__\":{\"k\":null}}", 0, "value of \"k\" is not a string", 0},
    {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "duplicate __metadata__ key \"k\"", 0},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__", 0},
};

static void test_malformed(void) {
    char path[256];
    sm_st *st = NULL;
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        const bad_case *c = &k_bad[i];
        char name[64];
        snprintf(name, sizeof name, "bad-%02zu.safetensors", i);
        join(path, sizeof path, name);
        write_st(path, c->header, c->header_len ? c->header_len : strlen(c->header), NULL, c->dlen,
                 0);
        sm_status s = sm_st_open(path, &st);
        if (s != SM_ERR_FORMAT || !strstr(sm_last_error(), c->needle) ||
            !strstr(sm_last_error(), path)) {
            fprintf(stderr, "case %zu (%s): %s \"%s\", expected \"%s\" naming the file\n", i,
                    c->header, sm_status_str(s), sm_last_error(), c->needle);
            g_failures++;
        }
        CHECK(st == NULL);
        sm_st_close(st);
        st = NULL;
    }

    // Faults of the 8-byte length prefix.
    join(path, sizeof path, "short.safetensors");
    write_bytes(path, "abc", 3);
    CHECK_FAIL(sm_st_open(path, &st), SM_ERR_FORMAT, "too short");
    CHECK(strstr(sm_last_error(), path) != NULL);
    write_bytes(path, "", 0);
    CHECK_FAIL(sm_st_open(path, &st), SM_ERR_FORMAT, "too short");
    join(path, sizeof path, "past-end.safetensors");
    write_st(path, "{}      ", 8, NULL, 0, 100);
    CHECK_FAIL(sm_st_open(path, &st), SM_ERR_FORMAT, "runs past the end of the file");
    CHECK(strstr(sm_last_error(), path) != NULL);
    join(path, sizeof path, "huge.safetensors");
    write_st(path, "{}      ", 8, NULL, 0, 100000001);
    CHECK_FAIL(sm_st_open(path, &st), SM_ERR_FORMAT, "exceeds the limit");
    CHECK(strstr(sm_last_error(), path) != NULL);
    write_st(path, "{}      ", 8, NULL, 0, UINT64_MAX);
    CHECK_FAIL(sm_st_open(path, &st), SM_ERR_FORMAT, "exceeds the limit");

    // An unknown dtype is listed, with its name, and refused only when read as numbers.
    join(path, sizeof path, "unknown-dtype.safetensors");
    const char *h =
        "{\"q\":" T("\"F4X\"", "[4]", "[0,2]") ",\"f\":" T("\"F32\"", "[1]", "[2,6]") "}";
    write_st(path, h, strlen(h), NULL, 6, 0);
    CHECK_OK(sm_st_open(path, &st));
    if (st) {
        const sm_tensor_info *q = sm_st_find(st, "q");
        CHECK(q && q->dtype == SM_DTYPE_UNKNOWN && !strcmp(q->dtype_name, "F4X") &&
              q->nbytes == 2 && q->shape[0] == 4);
        float *v = NULL;
        CHECK_FAIL(sm_st_read_f32(st, "q", &v, NULL), SM_ERR_UNSUPPORTED, "dtype F4X");
        CHECK(strstr(sm_last_error(), path) != NULL && v == NULL);
        CHECK_OK(sm_st_read_f32(st, "f", &v, NULL));
        free(v);
        sm_st_close(st);
    }
}

// Every prefix of a valid file, and every header byte flipped, must give an error or a valid
// checkpoint whose tensors lie inside the file.
static void test_fuzz(void) {
    char src[256], path[256];
    join(src, sizeof src, "fuzz-src.safetensors");
    join(path, sizeof path, "fuzz.safetensors");
    const float f[3] = {1, 2, 3};
    const uint8_t u[3] = {4, 5, 6};
    sm_st_writer *w = sm_st_writer_init();
    CHECK_OK(sm_st_writer_add(w, "w", SM_DTYPE_F32, 2, (const int64_t[]){1, 3}, f, 12));
    CHECK_OK(sm_st_writer_add(w, "b", SM_DTYPE_U8, 1, (const int64_t[]){3}, u, 3));
    CHECK_OK(sm_st_writer_add(w, "h", SM_DTYPE_F16, 1, (const int64_t[]){1}, u, 2));
    CHECK_OK(sm_st_writer_meta(w, "k", "v"));
    CHECK_OK(sm_st_writer_write(w, src, false));
    sm_st_writer_free(w);
    size_t size = 0;
    unsigned char *b = read_bytes(src, &size);
    if (!b) return;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    int ok = 0, failed = 0;
    for (size_t len = 0; len < size; len++) {
        write_bytes(path, b, len);
        sm_st *st = NULL;
        // Any prefix lacks data the header promises.
        CHECK(sm_st_open(path, &st) != SM_OK);
        sm_st_close(st);
    }
    const unsigned char flips[] = {0x01, 0x02, 0x20, 0x80, 0xff};
    for (size_t pos = 0; pos < 8 + hlen; pos++)
        for (size_t k = 0; k < sizeof flips; k++) {
            b[pos] ^= flips[k];
            write_bytes(path, b, size);
            sm_st *st = NULL;
            if (sm_st_open(path, &st) == SM_OK) {
                ok++;
                size_t total = 0;
                unsigned sum = 0;
                for (int i = 0; i < sm_st_count(st); i++) {
                    const sm_tensor_info *t = sm_st_get(st, i);
                    total += t->nbytes;
                    for (size_t j = 0; j < t->nbytes; j++) sum += ((const uint8_t *)t->data)[j];
                    float *v = NULL;
                    if (sm_st_read_f32(st, t->name, &v, NULL) == SM_OK) free(v);
                }
                CHECK(total <= size);
                (void)sum;
                sm_st_close(st);
            } else {
                failed++;
                CHECK(sm_last_error()[0] != 0);
            }
            b[pos] ^= flips[k];
        }
    // Flipping bits in names and padding keeps some files valid; flipping structure does not.
    CHECK(ok > 0 && failed > 0);
    free(b);
}

// --- the shared model -------------------------------------------------------------------------

static void test_shared_model(void) {
    const char *path = "models/shakespeare-llama-3m/model.safetensors";
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "%s missing: run from the repository root\n", path);
        g_failures++;
        return;
    }
    sm_st *st = NULL;
    CHECK_OK(sm_st_open("models/shakespeare-llama-3m", &st));
    if (!st) return;
    CHECK(sm_st_count(st) == 4 * 9 + 3);
    CHECK(sm_st_meta(st, "format") && !strcmp(sm_st_meta(st, "format"), "pt"));
    const struct {
        const char *name;
        int64_t r, c;
    } want[] = {
        {"model.embed_tokens.weight", 256, 256},
        {"model.layers.0.self_attn.q_proj.weight", 256, 256},
        {"model.layers.3.self_attn.k_proj.weight", 128, 256},
        {"model.layers.1.self_attn.v_proj.weight", 128, 256},
        {"model.layers.2.self_attn.o_proj.weight", 256, 256},
        {"model.layers.0.mlp.gate_proj.weight", 768, 256},
        {"model.layers.2.mlp.up_proj.weight", 768, 256},
        {"model.layers.1.mlp.down_proj.weight", 256, 768},
        {"lm_head.weight", 256, 256},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const sm_tensor_info *t = sm_st_find(st, want[i].name);
        CHECK(t && t->dtype == SM_DTYPE_F32 && t->ndim == 2 && t->shape[0] == want[i].r &&
              t->shape[1] == want[i].c && t->nbytes == (size_t)(want[i].r * want[i].c * 4));
    }
    int two_d = 0;
    for (int i = 0; i < sm_st_count(st); i++) two_d += sm_st_get(st, i)->ndim == 2;
    CHECK(two_d == 4 * 7 + 2);
    CHECK(strcmp(sm_st_get(st, 0)->name, "model.embed_tokens.weight") == 0);
    CHECK(strcmp(sm_st_get(st, sm_st_count(st) - 1)->name, "lm_head.weight") == 0);
    const sm_tensor_info *norm = sm_st_find(st, "model.norm.weight");
    CHECK(norm && norm->ndim == 1 && norm->shape[0] == 256);

    // lm_head, the last tensor, read with stdio from the end of the file as an independent check.
    float *v = NULL;
    int64_t n = 0;
    CHECK_OK(sm_st_read_f32(st, "lm_head.weight", &v, &n));
    FILE *f = fopen(path, "rb");
    float tail[4];
    CHECK(f && fseek(f, -(long)sizeof tail, SEEK_END) == 0 && fread(tail, 4, 4, f) == 4);
    if (f) fclose(f);
    CHECK(v && n == 65536 && memcmp(v + n - 4, tail, sizeof tail) == 0);
    free(v);
    sm_st_close(st);
}

// A header of many small metadata keys opens in near-linear time (duplicate checks and lookups
// by sorting, not by comparing every pair: 60000 keys took about 20 s that way, and a 100 MB
// header could hold millions), keeps the header's order, and still finds a duplicate.
static void test_many_metadata_keys(void) {
    enum { NKEYS = 60000 };
    char path[256];
    join(path, sizeof path, "meta.safetensors");
    size_t cap = (size_t)NKEYS * 32 + 256, len = 0;
    char *h = malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{");
    for (int i = 0; i < NKEYS; i++) // keys in an order unlike their sorted one
        len += (size_t)snprintf(h + len, cap - len, "%s\"k%d\":\"v%d\"", i ? "," : "",
                                (int)((i * 7919LL) % NKEYS), i);
    size_t open_end = len;
    len += (size_t)snprintf(h + len, cap - len, "}}");
    write_st(path, h, len, NULL, 0, 0);
    sm_st *st = NULL;
    double t0 = sm_now();
    CHECK_OK(sm_st_open(path, &st));
    double secs = sm_now() - t0;
    if (!(secs < 5.0)) {
        fprintf(stderr, "opening %d metadata keys took %.1f s\n", NKEYS, secs);
        g_failures++;
    }
    if (st) {
        CHECK(sm_st_meta_count(st) == NKEYS);
        const char *k, *v;
        sm_st_meta_get(st, 1, &k, &v);
        CHECK(!strcmp(k, "k7919") && !strcmp(v, "v1"));
        for (int i = 0; i < NKEYS; i += 997) {
            char key[32], want[32];
            snprintf(key, sizeof key, "k%d", (int)((i * 7919LL) % NKEYS));
            snprintf(want, sizeof want, "v%d", i);
            const char *got = sm_st_meta(st, key);
            CHECK(got && !strcmp(got, want));
        }
        CHECK(sm_st_meta(st, "k") == NULL && sm_st_meta(st, "k60000") == NULL);
    }
    sm_st_close(st);
    // The same keys plus a repeat of one in the middle of the sorted order.
    len = open_end + (size_t)snprintf(h + open_end, cap - open_end, ",\"k30000\":\"x\"}}");
    write_st(path, h, len, NULL, 0, 0);
    st = NULL;
    CHECK_FAIL(sm_st_open(path, &st), SM_ERR_FORMAT, "duplicate __metadata__ key \"k30000\"");
    CHECK(st == NULL);
    free(h);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/sm-test-st-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_misaligned();
    test_sharded();
    test_malformed();
    test_fuzz();
    test_shared_model();
    test_many_metadata_keys();
    remove_tree(g_dir);
    TEST_END();
}
