// A GGUF file: sm_gguf_open on the input as a file. An accepted file is read whole: every
// key/value formatted and fetched through the getters, every tensor's data decoded when its type
// has a decoder, then sm_model_load (a runnable model runs a short prefill and decode) and the
// GGUF tokenizer (encode and decode). Invariants: each tensor lies inside the file with the size
// its shape and type imply, decoded values come back in the tensor's count, the tokenizer's ids
// are inside its vocabulary, and a refusal always leaves a message.
#include "fuzz.h"
#include "structmat_gguf.h"
#include "structmat_model.h"

#include <stdlib.h>
#include <string.h>

static void exercise_tokenizer(const char *path) {
    sm_tokenizer *t = NULL;
    if (sm_tokenizer_load_gguf(path, &t) != SM_OK) {
        SM_FUZZ_CHECK(t == NULL && sm_last_error()[0], "failed tokenizer load");
        return;
    }
    static const char text[] = "Hello, world! 12 3456 \xc3\xa9t\xc3\xa9 <s> \xe2\x96\x81 \xff end";
    int64_t V = sm_tokenizer_vocab_size(t);
    for (int bos = 0; bos < 2; bos++) {
        int32_t *ids = NULL;
        int64_t n = 0;
        if (sm_tokenizer_encode(t, text, sizeof text - 1, bos, &ids, &n) != SM_OK) {
            SM_FUZZ_CHECK(ids == NULL && sm_last_error()[0], "failed encode");
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            SM_FUZZ_CHECK(ids[i] >= 0 && ids[i] < V, "id %d outside [0, %lld)", ids[i],
                          (long long)V);
            size_t len;
            sm_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], &len);
        }
        free(ids);
    }
    sm_tokenizer_free(t);
}

int sm_fuzz_gguf(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    char path[256];
    sm_fuzz_path(path, sizeof path, "gguf", "model.gguf");
    sm_fuzz_write(path, data, size);
    sm_gguf *g = (sm_gguf *)1;
    if (sm_gguf_open(path, &g) != SM_OK) {
        SM_FUZZ_CHECK(g == NULL && sm_last_error()[0], "failed open");
        return 0;
    }
    char text[512];
    for (int64_t i = 0; i < sm_gguf_kv_count(g); i++) {
        const char *key = sm_gguf_kv_key(g, i);
        sm_gguf_kv_format(g, i, text, sizeof text);
        SM_FUZZ_CHECK(strlen(text) < sizeof text, "format overran");
        int64_t v, cnt;
        double f;
        const char *s;
        size_t len;
        sm_gguf_vtype et;
        sm_gguf_get_int(g, key, &v);
        sm_gguf_get_float(g, key, &f);
        if (sm_gguf_get_str(g, key, &s, &len) == SM_OK)
            SM_FUZZ_CHECK(strlen(s) <= len, "string copy longer than its value");
        if (sm_gguf_get_array(g, key, &et, &cnt) == SM_OK && cnt > 0) {
            int64_t last = cnt - 1;
            sm_gguf_array_int(g, key, last, &v);
            sm_gguf_array_float(g, key, last, &f);
            sm_gguf_array_str(g, key, last, &s, &len);
        }
    }
    for (int64_t i = 0; i < sm_gguf_tensor_count(g); i++) {
        const sm_gguf_tensor *t = sm_gguf_tensor_get(g, i);
        int64_t block, bytes;
        SM_FUZZ_CHECK(sm_ggml_type_size(t->type, &block, &bytes), "unknown type %u", t->type);
        SM_FUZZ_CHECK(t->nelem % block == 0 && (uint64_t)(t->nelem / block * bytes) == t->nbytes,
                      "tensor %s: %zu bytes for %lld elements", t->name, t->nbytes,
                      (long long)t->nelem);
        SM_FUZZ_CHECK(t->nbytes <= size && t->offset <= size - t->nbytes,
                      "tensor %s outside the file", t->name);
        SM_FUZZ_CHECK(sm_gguf_find(g, t->name) == t, "find %s", t->name);
        float *w = NULL;
        int64_t n = -1;
        if (sm_ggml_can_decode(t->type) && t->nelem <= (1 << 22)) {
            if (sm_gguf_read_f32(g, t->name, &w, &n) == SM_OK)
                SM_FUZZ_CHECK(n == t->nelem, "read %lld of %lld", (long long)n,
                              (long long)t->nelem);
            free(w);
        }
    }
    sm_gguf_close(g);
    sm_model *m = (sm_model *)1;
    if (sm_model_load(path, &m) == SM_OK) {
        sm_fuzz_exercise_model(m);
        sm_model_free(m);
    } else {
        SM_FUZZ_CHECK(m == NULL && sm_last_error()[0], "failed model load");
    }
    exercise_tokenizer(path);
    return 1;
}

SM_FUZZ_MAIN(gguf)
