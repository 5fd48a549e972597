// A sharded checkpoint: model.safetensors.index.json and two shards, each from the input
// (index SEP shard1 SEP shard2; a missing shard is left out of the directory), opened both as a
// directory and through the index file's path.
#include "fuzz.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const k_files[3] = {"model.safetensors.index.json",
                                       "model-00001-of-00002.safetensors",
                                       "model-00002-of-00002.safetensors"};

// What an accepted checkpoint must satisfy: every listed tensor found under its own name and
// lying in one of the shards, metadata keys finding values.
static void check(const sm_st *st, const char *const *paths) {
    for (int i = 0; i < sm_st_count(st); i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        SM_FUZZ_CHECK(t && sm_st_find(st, t->name) == t, "tensor %d", i);
        SM_FUZZ_CHECK(!strcmp(t->file, paths[1]) || !strcmp(t->file, paths[2]),
                      "\"%s\" is in %s, not a shard", t->name, t->file);
        volatile uint8_t x = 0;
        for (size_t b = 0; b < t->nbytes; b++) x ^= ((const uint8_t *)t->data)[b];
        (void)x;
    }
    for (int i = 0; i < sm_st_meta_count(st); i++) {
        const char *k, *v;
        sm_st_meta_get(st, i, &k, &v);
        SM_FUZZ_CHECK(sm_st_meta(st, k) != NULL, "metadata key \"%s\" not found", k);
    }
}

int sm_fuzz_st_index(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    const uint8_t *piece[3];
    size_t len[3];
    int k = sm_fuzz_split(data, size, piece, len, 3);
    char paths[3][256];
    for (int i = 0; i < 3; i++) {
        sm_fuzz_path(paths[i], sizeof paths[i], "st_index", k_files[i]);
        if (i < k)
            sm_fuzz_write(paths[i], piece[i], len[i]);
        else
            unlink(paths[i]);
    }
    const char *const ps[3] = {paths[0], paths[1], paths[2]};
    int accepted = 0;
    for (int how = 0; how < 2; how++) {
        sm_st *st = (sm_st *)1;
        sm_status s = sm_st_open(how ? paths[0] : sm_fuzz_dir("st_index"), &st);
        if (s != SM_OK) {
            SM_FUZZ_CHECK(st == NULL && sm_last_error()[0], "failed open (%d)", how);
            continue;
        }
        accepted++;
        check(st, ps);
        sm_st_close(st);
    }
    // The directory holds no model.safetensors, so both ways read the index: same verdict.
    SM_FUZZ_CHECK(accepted != 1, "the index opened one way and not the other");
    return accepted == 2;
}

SM_FUZZ_MAIN(st_index)
