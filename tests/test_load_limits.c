// Files that ask for absurd allocations are refused, before allocating, with a message that
// names the file and the value: the fuzzers' findings (tests/regress/<target>/, replayed through
// the harnesses by test_regress_fuzz) loaded here through the public API, their messages checked,
// under a 64 MB --max-memory budget so that a loader that allocated first would fail differently.
// (tests/regress/opload/bad-rtn-lying-shape-no-parts: a slow unit, 600 MB allocated for nothing.)
#include "structmat_model.h"
#include "testutil.h"

#include <unistd.h>

#define SEP "\n--sm-fuzz-split--\n"

static char g_dir[] = "/tmp/sm_load_limits_XXXXXX";

// The regression input's pieces (split at SEP) written to g_dir/name[k].
static void unpack(const char *input, const char *const *names, int count) {
    FILE *f = fopen(input, "rb");
    CHECK(f != NULL);
    if (!f) return;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t start = 0, sl = strlen(SEP);
    for (int k = 0; k < count; k++) {
        size_t end = n;
        for (size_t i = start; k + 1 < count && i + sl <= n; i++)
            if (!memcmp(buf + i, SEP, sl)) {
                end = i;
                break;
            }
        char path[256];
        snprintf(path, sizeof path, "%s/%s", g_dir, names[k]);
        FILE *o = fopen(path, "wb");
        CHECK(o != NULL && fwrite(buf + start, 1, end - start, o) == end - start);
        if (o) fclose(o);
        start = end + sl;
    }
}

static char *in_dir(const char *name) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return path;
}

static void test_model_hf(void) {
    static const char *const names[2] = {"config.json", "model.safetensors"};
    sm_model *m = (sm_model *)1;
    unpack("tests/regress/model_hf/bad-layers-2147483647", names, 2);
    CHECK_FAIL(sm_model_load(g_dir, &m), SM_ERR_SHAPE,
               "config.json: num_hidden_layers = 2147483647, but");
    CHECK(m == NULL);
    CHECK(strstr(sm_last_error(), "no tensor \"model.layers.2147483646.input_layernorm.weight\""));
    unpack("tests/regress/model_hf/bad-hidden-2147483647", names, 2);
    CHECK_FAIL(sm_model_load(g_dir, &m), SM_ERR_SHAPE,
               "config.json: hidden_size = 2147483647, but tensor \"model.norm.weight\"");
    CHECK(strstr(sm_last_error(), "has shape [8]"));
}

// A small tokenizer.json whose largest id is `top`, with 3 vocabulary entries and one added.
static void write_tokenizer(int64_t top) {
    FILE *f = fopen(in_dir("small.json"), "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f,
            "{\"added_tokens\": [{\"id\": %lld, \"content\": \"<s>\"}], \"model\": {\"type\": "
            "\"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}",
            (long long)top);
    fclose(f);
}

static void test_tokenizer_json(void) {
    static const char *const names[2] = {"tokenizer.json", "text"};
    sm_tokenizer *t = (sm_tokenizer *)1;
    unpack("tests/regress/tokenizer_json/bad-vocab-id-2e9", names, 2);
    CHECK_FAIL(sm_tokenizer_load_json(in_dir("tokenizer.json"), &t), SM_ERR_FORMAT,
               "tokenizer.json: token id 2000000000 but only");
    CHECK(t == NULL);
    // The bound: 4 entries allow ids below 2 * 4 + 256 = 264, holes included.
    write_tokenizer(263);
    CHECK_OK(sm_tokenizer_load_json(in_dir("small.json"), &t));
    if (t) {
        CHECK(sm_tokenizer_vocab_size(t) == 264);
        sm_tokenizer_free(t);
    }
    write_tokenizer(264);
    CHECK_FAIL(sm_tokenizer_load_json(in_dir("small.json"), &t), SM_ERR_FORMAT,
               "small.json: token id 264 but only 4 vocabulary entries and added tokens (ids "
               "below 264 accepted)");
}

static void test_gguf_merges(void) {
    static const char *const names[1] = {"merges.gguf"};
    sm_tokenizer *t = (sm_tokenizer *)1;
    unpack("tests/regress/gguf/merges-not-strings", names, 1);
    CHECK_FAIL(sm_tokenizer_load_gguf(in_dir("merges.gguf"), &t), SM_ERR_FORMAT,
               "merges.gguf: tokenizer.ggml.merges is not a string array");
    CHECK(t == NULL);
}

// A stored rtn operator whose shape says 9 x 44444442 (400M weights) in a file without parts:
// refused for the missing codes before its 200 MB of codes and scales are allocated (the budget
// would otherwise refuse the allocation: SM_ERR_ALLOC instead of SM_ERR_FORMAT).
static void test_op_lying_shape(void) {
    sm_st_writer *w = sm_st_writer_init();
    CHECK_OK(sm_st_writer_meta(w, "structmat.format_version", "1"));
    CHECK_OK(sm_st_writer_meta(w, "structmat.spec.m", "rtn:bits=4,group=6"));
    CHECK_OK(sm_st_writer_meta(w, "structmat.shape.m", "9,44444442"));
    CHECK_OK(sm_st_writer_write(w, in_dir("op.safetensors"), true));
    sm_st_writer_free(w);
    sm_st *st = NULL;
    sm_op *op = (sm_op *)1;
    CHECK_OK(sm_st_open(in_dir("op.safetensors"), &st));
    if (!st) return;
    CHECK_FAIL(sm_op_load(st, "m", &op), SM_ERR_FORMAT, "9x44444442): missing part \"codes\"");
    CHECK(op == NULL);
    sm_st_close(st);
}

int main(void) {
    CHECK(mkdtemp(g_dir) != NULL);
    sm_set_alloc_limit((size_t)64 << 20);
    test_model_hf();
    test_tokenizer_json();
    test_gguf_merges();
    test_op_lying_shape();
    sm_set_alloc_limit(0);
    static const char *const files[] = {"config.json",   "model.safetensors", "tokenizer.json",
                                        "text",          "small.json",        "merges.gguf",
                                        "op.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(in_dir(files[i]));
    rmdir(g_dir);
    TEST_END();
}
