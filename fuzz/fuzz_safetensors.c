// A safetensors file (header JSON, offsets, dtypes, metadata) and the structmat operators it may
// store: sm_st_open, every accessor, sm_st_read_f32, sm_op_load of every stored operator.
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

// At most this many operators per input are loaded and exercised (keeps each run short).
#define MAX_OPS 16
#define OP_PREFIX "structmat.spec."

static uint64_t byte_sum(const uint8_t *p, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s;
}

// Every operator the metadata names is loaded; a loaded one is exercised.
static void load_ops(const sm_st *st) {
    int tried = 0;
    for (int i = 0; i < sm_st_meta_count(st) && tried < MAX_OPS; i++) {
        const char *key, *value;
        sm_st_meta_get(st, i, &key, &value);
        if (strncmp(key, OP_PREFIX, strlen(OP_PREFIX)) != 0) continue;
        const char *name = key + strlen(OP_PREFIX);
        SM_FUZZ_CHECK(sm_st_has_op(st, name), "\"%s\" is in the metadata but not an operator",
                      name);
        sm_op *op = (sm_op *)1;
        sm_status s = sm_op_load(st, name, &op);
        tried++;
        if (s != SM_OK) {
            SM_FUZZ_CHECK(op == NULL && sm_last_error()[0], "failed load of \"%s\": out %p", name,
                          (void *)op);
            continue;
        }
        sm_fuzz_exercise_op(op, false);
        sm_op_free(op);
    }
}

int sm_fuzz_safetensors(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    char path[256];
    sm_fuzz_path(path, sizeof path, "safetensors", "x.safetensors");
    sm_fuzz_write(path, data, size);
    sm_st *st = (sm_st *)1;
    if (sm_st_open(path, &st) != SM_OK) {
        SM_FUZZ_CHECK(st == NULL, "failed open left a handle");
        SM_FUZZ_CHECK(sm_last_error()[0] != 0, "failed open without a message");
        return 0;
    }
    // Accepted: the header length is the input's first 8 bytes, and the tensors tile the data
    // buffer after it exactly, so their bytes are the data buffer's bytes.
    SM_FUZZ_CHECK(size >= 8, "a %zu-byte file opened", size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | data[i];
    SM_FUZZ_CHECK(hlen <= size - 8, "header length %llu past the end", (unsigned long long)hlen);
    const uint8_t *buf = data + 8 + hlen;
    size_t buf_len = size - 8 - hlen, total = 0;
    uint64_t sum = 0;
    int n = sm_st_count(st);
    SM_FUZZ_CHECK(n >= 0 && sm_st_get(st, n) == NULL && sm_st_get(st, -1) == NULL, "count %d", n);
    for (int i = 0; i < n; i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        SM_FUZZ_CHECK(t && t->name && t->dtype_name && t->file, "tensor %d", i);
        SM_FUZZ_CHECK(t->ndim >= 0 && t->ndim <= 8, "\"%s\": ndim %d", t->name, t->ndim);
        SM_FUZZ_CHECK(sm_st_find(st, t->name) == t, "find(\"%s\") is another tensor", t->name);
        SM_FUZZ_CHECK(t->nbytes <= buf_len, "\"%s\": %zu bytes in a %zu-byte buffer", t->name,
                      t->nbytes, buf_len);
        if (t->dtype != SM_DTYPE_UNKNOWN) {
            SM_FUZZ_CHECK(t->dtype >= 0 && t->dtype < SM_DTYPE_COUNT &&
                              !strcmp(sm_dtype_name(t->dtype), t->dtype_name),
                          "\"%s\": dtype %d named %s", t->name, (int)t->dtype, t->dtype_name);
            __uint128_t need = sm_dtype_size(t->dtype);
            for (int d = 0; d < t->ndim; d++) {
                SM_FUZZ_CHECK(t->shape[d] >= 0, "\"%s\": shape[%d] < 0", t->name, d);
                need *= (uint64_t)t->shape[d];
                if (need > size) need = (__uint128_t)size + 1; // stays comparable
            }
            SM_FUZZ_CHECK(need == t->nbytes, "\"%s\": shape and dtype disagree with %zu bytes",
                          t->name, t->nbytes);
        }
        total += t->nbytes;
        sum += byte_sum(t->data, t->nbytes); // reads every byte (faults if outside the file)
        bool floats = t->dtype == SM_DTYPE_F32 || t->dtype == SM_DTYPE_F16 ||
                      t->dtype == SM_DTYPE_BF16 || t->dtype == SM_DTYPE_F64;
        if (floats && t->nbytes <= (1u << 20)) {
            float *f = NULL;
            int64_t count = -1;
            SM_FUZZ_CHECK(sm_st_read_f32(st, t->name, &f, &count) == SM_OK, "read \"%s\"", t->name);
            SM_FUZZ_CHECK((size_t)count * sm_dtype_size(t->dtype) == t->nbytes,
                          "\"%s\": %lld "
                          "values from %zu bytes",
                          t->name, (long long)count, t->nbytes);
            free(f);
        }
    }
    SM_FUZZ_CHECK(total == buf_len && sum == byte_sum(buf, buf_len),
                  "tensors hold %zu bytes (sum %llu), the data buffer %zu (sum %llu)", total,
                  (unsigned long long)sum, buf_len, (unsigned long long)byte_sum(buf, buf_len));
    // One file: keys are distinct (duplicates are refused), so each finds its own value.
    for (int i = 0; i < sm_st_meta_count(st); i++) {
        const char *k, *v;
        sm_st_meta_get(st, i, &k, &v);
        SM_FUZZ_CHECK(k && v && sm_st_meta(st, k) == v, "metadata key %d \"%s\"", i, k ? k : "");
    }
    load_ops(st);
    sm_st_close(st);
    return 1;
}

SM_FUZZ_MAIN(safetensors)
