// Fitted operators saved in the checkpoint format (DESIGN.md "Files on disk") and loaded back:
// the stored tensors have the documented names, dtypes and shapes, a loaded operator is
// bit-identical to the saved one, and metadata that lies about the parts is refused.
#include "base/base.h"
#include "testutil.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void check_tensor(const sm_st *st, const char *name, sm_dtype dt, int64_t r, int64_t c) {
    const sm_tensor_info *t = sm_st_find(st, name);
    if (!t || t->dtype != dt || t->ndim != 2 || t->shape[0] != r || t->shape[1] != c) {
        fprintf(stderr, "tensor %s: %s, expected %s [%lld, %lld]\n", name,
                t ? sm_dtype_name(t->dtype) : "absent", sm_dtype_name(dt), (long long)r,
                (long long)c);
        g_failures++;
    }
}

static void check_meta(const sm_st *st, const char *key, const char *want) {
    const char *v = sm_st_meta(st, key);
    if (!v || strcmp(v, want) != 0) {
        fprintf(stderr, "metadata %s = %s, expected %s\n", key, v ? v : "(absent)", want);
        g_failures++;
    }
}

typedef struct fitted {
    const char *name, *spec;
    int64_t m, n;
    float *W;
    sm_op *op;
} fitted;

static void test_round_trip(void) {
    fitted f[] = {
        {"model.layers.0.mlp.up_proj.weight", "lowrank:rank=4", 16, 12, NULL, NULL},
        {"a.weight", "dense:dtype=q4", 8, 70, NULL, NULL},
        {"b.weight", "lowrank:rank=3+dense:dtype=bf16", 20, 9, NULL, NULL},
    };
    const int k = 3;
    const char *names[3];
    const sm_op *ops[3];
    for (int i = 0; i < k; i++) {
        f[i].W = malloc(sizeof(float) * (size_t)(f[i].m * f[i].n));
        fill_random(f[i].W, f[i].m * f[i].n, 40 + (unsigned)i);
        CHECK_OK(sm_op_fit(f[i].W, f[i].m, f[i].n, f[i].spec, NULL, &f[i].op));
        if (!f[i].op) return;
        names[i] = f[i].name;
        ops[i] = f[i].op;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/ops.safetensors", g_dir);
    CHECK_OK(sm_ops_save(path, k, names, ops, false));
    CHECK_FAIL(sm_ops_save(path, k, names, ops, false), SM_ERR_EXISTS, "exists");
    const char *twice[2] = {"x.weight", "x.weight"};
    const sm_op *two[2] = {ops[0], ops[1]};
    CHECK_FAIL(sm_ops_save(path, 2, twice, two, true), SM_ERR_ARG, "\"x.weight\" given twice");

    sm_st *st = NULL;
    CHECK_OK(sm_st_open(path, &st));
    if (!st) return;
    // The documented layout (docs/format.md), checked by name, dtype and shape.
    check_meta(st, "structmat.format_version", "1");
    check_meta(st, "structmat.spec.model.layers.0.mlp.up_proj.weight", "lowrank:rank=4");
    check_meta(st, "structmat.shape.model.layers.0.mlp.up_proj.weight", "16,12");
    check_meta(st, "structmat.spec.a.weight", "dense:dtype=q4");
    check_meta(st, "structmat.shape.a.weight", "8,70");
    check_meta(st, "structmat.spec.b.weight", "lowrank:rank=3+dense:dtype=bf16");
    check_meta(st, "structmat.shape.b.weight", "20,9");
    CHECK(sm_st_count(st) == 7);
    check_tensor(st, "model.layers.0.mlp.up_proj.weight.U", SM_DTYPE_F32, 16, 4);
    check_tensor(st, "model.layers.0.mlp.up_proj.weight.V", SM_DTYPE_F32, 4, 12);
    check_tensor(st, "a.weight.W.codes", SM_DTYPE_U8, 8, 35);  // two nibbles a byte
    check_tensor(st, "a.weight.W.scales", SM_DTYPE_F16, 8, 2); // ceil(70 / 64) groups
    check_tensor(st, "b.weight.0.U", SM_DTYPE_F32, 20, 3);
    check_tensor(st, "b.weight.0.V", SM_DTYPE_F32, 3, 9);
    check_tensor(st, "b.weight.1.W", SM_DTYPE_BF16, 20, 9);
    CHECK(sm_st_has_op(st, "a.weight") && sm_st_has_op(st, "b.weight"));
    CHECK(!sm_st_has_op(st, "a.weight.W.codes") && !sm_st_has_op(st, "nope"));

    for (int i = 0; i < k; i++) {
        sm_op *back = NULL;
        CHECK_OK(sm_op_load(st, f[i].name, &back));
        if (!back) continue;
        CHECK(strcmp(sm_op_spec(back), sm_op_spec(f[i].op)) == 0);
        CHECK(sm_op_rows(back) == f[i].m && sm_op_cols(back) == f[i].n);
        CHECK(sm_op_nbytes(back) == sm_op_nbytes(f[i].op));
        size_t mn = (size_t)(f[i].m * f[i].n);
        float *a = malloc(mn * sizeof(float)), *b = malloc(mn * sizeof(float));
        CHECK_OK(sm_op_to_dense(f[i].op, a));
        CHECK_OK(sm_op_to_dense(back, b));
        if (memcmp(a, b, mn * sizeof(float)) != 0) {
            fprintf(stderr, "%s: loaded operator differs from the saved one\n", f[i].name);
            g_failures++;
        }
        free(a);
        free(b);
        sm_op_free(back);
    }
    // Independently of the operator code: the low-rank matrix is U V, computed here in double
    // from the stored F32 tensors.
    float *U = NULL, *V = NULL;
    CHECK_OK(sm_st_read_f32(st, "model.layers.0.mlp.up_proj.weight.U", &U, NULL));
    CHECK_OK(sm_st_read_f32(st, "model.layers.0.mlp.up_proj.weight.V", &V, NULL));
    sm_op *lr = NULL;
    CHECK_OK(sm_op_load(st, "model.layers.0.mlp.up_proj.weight", &lr));
    if (U && V && lr) {
        float ref[16 * 12], got[16 * 12];
        matmul_ref(U, V, ref, 16, 4, 12);
        CHECK_OK(sm_op_to_dense(lr, got));
        check_close("U V", got, ref, 16 * 12, 1e-6);
    }
    sm_op_free(lr);
    free(U);
    free(V);
    sm_op *none = NULL;
    CHECK_FAIL(sm_op_load(st, "nope.weight", &none), SM_ERR_NOT_FOUND, "\"nope.weight\"");
    CHECK(none == NULL);
    sm_st_close(st);
    for (int i = 0; i < k; i++) {
        sm_op_free(f[i].op);
        free(f[i].W);
    }
}

// --- lying metadata ------------------------------------------------------------------------

typedef struct lie {
    const char *what;
    const char *version; // NULL: absent
    const char *spec, *shape;
    int rank;           // U (8, rank), V (rank, 8) when > 0; else W (8, 8)
    bool extra, drop_v; // an extra tensor x.weight.Z; V missing
    sm_dtype dtype;
    sm_status want;
    const char *needle;
} lie;

static const lie k_lies[] = {
    {"honest dense", "1", "dense", "8,8", 0, false, false, SM_DTYPE_F32, SM_OK, ""},
    {"honest lowrank", "1", "lowrank:rank=4", "8,8", 4, false, false, SM_DTYPE_F32, SM_OK, ""},
    {"shape 3,4 for 8x8 parts", "1", "dense", "3,4", 0, false, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "expected F32 [3, 4]"},
    {"rank 5 for rank-4 parts", "1", "lowrank:rank=5", "8,8", 4, false, false, SM_DTYPE_F32,
     SM_ERR_FORMAT, "expected F32 [8, 5]"},
    {"missing version", NULL, "dense", "8,8", 0, false, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "no structmat.format_version"},
    {"future version", "2", "dense", "8,8", 0, false, false, SM_DTYPE_F32, SM_ERR_UNSUPPORTED,
     "format version 2 is not supported"},
    {"version not a number", "one", "dense", "8,8", 0, false, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "is not a number"},
    {"unknown structure", "1", "frobnicate:rank=4", "8,8", 4, false, false, SM_DTYPE_F32,
     SM_ERR_SPEC, "unknown structure \"frobnicate\""},
    {"spec not parseable", "1", "lowrank:rank=", "8,8", 4, false, false, SM_DTYPE_F32, SM_ERR_SPEC,
     "operator \"x.weight\""},
    {"shape with junk", "1", "dense", "8,8x", 0, false, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "is not \"out,in\""},
    {"shape zero", "1", "dense", "0,8", 0, false, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "is not \"out,in\""},
    {"shape negative", "1", "dense", "-8,8", 0, false, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "is not \"out,in\""},
    {"shape 3-D", "1", "dense", "8,8,8", 0, false, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "is not \"out,in\""},
    {"shape huge", "1", "dense", "99999999999999999999,8", 0, false, false, SM_DTYPE_F32,
     SM_ERR_FORMAT, "is not \"out,in\""},
    {"shape absent", "1", "dense", NULL, 0, false, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "has no structmat.shape.x.weight"},
    {"part missing", "1", "lowrank:rank=4", "8,8", 4, false, true, SM_DTYPE_F32, SM_ERR_FORMAT,
     "missing part \"V\""},
    {"part of the wrong dtype", "1", "lowrank:rank=4", "8,8", 4, false, false, SM_DTYPE_F16,
     SM_ERR_FORMAT, "expected F32"},
    {"dtype the spec does not say", "1", "dense:dtype=bf16", "8,8", 0, false, false, SM_DTYPE_F32,
     SM_ERR_FORMAT, "expected BF16"},
    {"an extra part", "1", "dense", "8,8", 0, true, false, SM_DTYPE_F32, SM_ERR_FORMAT,
     "\"x.weight.Z\" is not a part of dense"},
    {"sum spec over plain parts", "1", "lowrank:rank=4+dense", "8,8", 4, false, false, SM_DTYPE_F32,
     SM_ERR_FORMAT, "missing part \"U\""},
};

static void test_lies(void) {
    float buf[64];
    fill_random(buf, 64, 7);
    for (size_t i = 0; i < sizeof k_lies / sizeof k_lies[0]; i++) {
        const lie *c = &k_lies[i];
        char path[256];
        snprintf(path, sizeof path, "%s/lie-%02zu.safetensors", g_dir, i);
        sm_st_writer *w = sm_st_writer_init();
        size_t es = sm_dtype_size(c->dtype);
        if (c->version) CHECK_OK(sm_st_writer_meta(w, "structmat.format_version", c->version));
        CHECK_OK(sm_st_writer_meta(w, "structmat.spec.x.weight", c->spec));
        if (c->shape) CHECK_OK(sm_st_writer_meta(w, "structmat.shape.x.weight", c->shape));
        if (c->rank > 0) {
            int64_t su[2] = {8, c->rank}, sv[2] = {c->rank, 8};
            CHECK_OK(sm_st_writer_add(w, "x.weight.U", c->dtype, 2, su, buf, 8 * c->rank * es));
            if (!c->drop_v)
                CHECK_OK(sm_st_writer_add(w, "x.weight.V", c->dtype, 2, sv, buf, 8 * c->rank * es));
        } else {
            int64_t sw[2] = {8, 8};
            CHECK_OK(sm_st_writer_add(w, "x.weight.W", c->dtype, 2, sw, buf, 64 * es));
        }
        if (c->extra)
            CHECK_OK(
                sm_st_writer_add(w, "x.weight.Z", SM_DTYPE_U8, 1, (const int64_t[]){4}, buf, 4));
        // An unrelated tensor sharing the prefix without the dot is not a part.
        CHECK_OK(sm_st_writer_add(w, "x.weightless", SM_DTYPE_U8, 1, (const int64_t[]){1}, buf, 1));
        CHECK_OK(sm_st_writer_write(w, path, false));
        sm_st_writer_free(w);
        sm_st *st = NULL;
        CHECK_OK(sm_st_open(path, &st));
        if (!st) continue;
        sm_op *op = NULL;
        sm_status s = sm_op_load(st, "x.weight", &op);
        bool names_file = c->want == SM_OK || strstr(sm_last_error(), path) != NULL;
        if (s != c->want || (c->want != SM_OK && !strstr(sm_last_error(), c->needle)) ||
            !names_file) {
            fprintf(stderr, "%s: %s \"%s\", expected %s with \"%s\" naming the file\n", c->what,
                    sm_status_str(s), s == SM_OK ? "" : sm_last_error(), sm_status_str(c->want),
                    c->needle);
            g_failures++;
        }
        CHECK((s == SM_OK) == (op != NULL));
        if (op) {
            // The honest cases decode to what was stored: W itself, or U V.
            float got[64], ref[64];
            CHECK_OK(sm_op_to_dense(op, got));
            if (c->rank > 0)
                matmul_ref(buf, buf, ref, 8, c->rank, 8);
            else
                memcpy(ref, buf, sizeof ref);
            check_close(c->what, got, ref, 64, 1e-6);
            sm_op_free(op);
        }
        sm_st_close(st);
    }
}

// A file of many small operators: loading each finds its parts by a binary search over the
// names, not by scanning every tensor (40000 operators took about 10 s that way, quadratic in
// the file's size), and each loads with its own values.
static void test_many_operators(void) {
    enum { NOPS = 40000 };
    char path[256];
    snprintf(path, sizeof path, "%s/many.safetensors", g_dir);
    size_t cap = (size_t)NOPS * 400 + 256, len = 0;
    char *h = malloc(cap);
    float *data = malloc(sizeof(float) * 2 * NOPS);
    len += (size_t)snprintf(h + len, cap - len,
                            "{\"__metadata__\":{\"structmat.format_version\":\"1\"");
    for (int i = 0; i < NOPS; i++)
        len +=
            (size_t)snprintf(h + len, cap - len,
                             ",\"structmat.spec.o%d\":\"lowrank:rank=1\",\"structmat.shape.o%d\":"
                             "\"1,1\"",
                             i, i);
    len += (size_t)snprintf(h + len, cap - len, "}");
    for (int i = 0; i < NOPS; i++) { // W of o<i> = U V = i * 0.5
        data[2 * i] = (float)i;
        data[2 * i + 1] = 0.5f;
        len += (size_t)snprintf(
            h + len, cap - len,
            ",\"o%d.U\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[%d,%d]},"
            "\"o%d.V\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[%d,%d]}",
            i, 8 * i, 8 * i + 4, i, 8 * i + 4, 8 * i + 8);
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    FILE *f = fopen(path, "wb");
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    CHECK(f && fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, len, f) == len &&
          fwrite(data, sizeof(float), 2 * NOPS, f) == 2 * NOPS);
    if (f) fclose(f);
    free(h);
    free(data);
    sm_st *st = NULL;
    CHECK_OK(sm_st_open(path, &st));
    if (!st) return;
    double t0 = sm_now();
    int bad = 0;
    for (int i = 0; i < NOPS; i++) {
        char name[32];
        snprintf(name, sizeof name, "o%d", i);
        sm_op *op = NULL;
        float w = -1;
        if (sm_op_load(st, name, &op) != SM_OK || sm_op_to_dense(op, &w) != SM_OK ||
            w != 0.5f * (float)i)
            bad++;
        sm_op_free(op);
    }
    double secs = sm_now() - t0;
    CHECK(bad == 0);
    if (!(secs < 5.0)) {
        fprintf(stderr, "loading %d operators took %.1f s\n", NOPS, secs);
        g_failures++;
    }
    sm_st_close(st);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/sm-test-opfile-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_lies();
    test_many_operators();
    remove_dir(g_dir);
    TEST_END();
}
