// A Hugging Face tokenizer.json (byte-level or SentencePiece-style BPE) and a text (json SEP
// text): sm_tokenizer_load_json, then encode with and without BOS and decode every id.
// Invariants: a refusal leaves a message; ids inside the vocabulary, BOS first when asked and
// the tokenizer has one, encoding is deterministic, every id (and ids past the vocabulary)
// decodes without fault. An id far past the number of entries (one of 2e9 in a small file:
// tests/regress/tokenizer_json) is refused before the tables are sized by it.
#include "fuzz.h"
#include "structmat_model.h"

#include <stdlib.h>
#include <string.h>

#define MAX_TEXT 4096

int sm_fuzz_tokenizer_json(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    const uint8_t *piece[2];
    size_t len[2];
    int k = sm_fuzz_split(data, size, piece, len, 2);
    char path[256];
    sm_fuzz_path(path, sizeof path, "tokenizer_json", "tokenizer.json");
    sm_fuzz_write(path, piece[0], len[0]);
    const char *text = k > 1 ? (const char *)piece[1] : "";
    size_t tlen = k > 1 ? (len[1] < MAX_TEXT ? len[1] : MAX_TEXT) : 0;
    sm_tokenizer *t = (sm_tokenizer *)1;
    if (sm_tokenizer_load_json(path, &t) != SM_OK) {
        SM_FUZZ_CHECK(t == NULL && sm_last_error()[0], "failed load");
        return 0;
    }
    int64_t V = sm_tokenizer_vocab_size(t);
    int32_t bos = sm_tokenizer_bos(t);
    SM_FUZZ_CHECK(V > 0 && bos >= -1 && bos < V, "vocab %lld, BOS %d", (long long)V, bos);
    for (int add = 0; add < 2; add++) {
        int32_t *ids = NULL, *again = NULL;
        int64_t n = -1, n2 = -1;
        sm_status s = sm_tokenizer_encode(t, text, tlen, add, &ids, &n);
        if (s != SM_OK) {
            SM_FUZZ_CHECK(ids == NULL && sm_last_error()[0], "failed encode");
            continue;
        }
        SM_FUZZ_CHECK(sm_tokenizer_encode(t, text, tlen, add, &again, &n2) == SM_OK && n2 == n &&
                          !memcmp(ids, again, (size_t)n * sizeof *ids),
                      "encoding the same text twice differs");
        SM_FUZZ_CHECK(!(add && bos >= 0) || (n >= 1 && ids[0] == bos), "BOS missing");
        for (int64_t i = 0; i < n; i++) {
            SM_FUZZ_CHECK(ids[i] >= 0 && ids[i] < V, "id %d outside [0, %lld)", ids[i],
                          (long long)V);
            size_t pl;
            const char *p = sm_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], &pl);
            SM_FUZZ_CHECK(p != NULL, "decode of %d", ids[i]);
            volatile char c = 0;
            for (size_t b = 0; b < pl; b++) c ^= p[b]; // every byte it claims is readable
            (void)c;
        }
        free(ids);
        free(again);
    }
    for (int32_t id = 0; id < V && id < 4096; id++) {
        size_t pl;
        const char *p = sm_tokenizer_decode(t, bos, id, &pl);
        volatile char c = 0;
        for (size_t b = 0; b < pl; b++) c ^= p[b];
        (void)c;
    }
    size_t dl = 1;
    sm_tokenizer_decode(t, -1, (int32_t)V, &dl);
    SM_FUZZ_CHECK(dl == 0, "an id past the vocabulary decodes");
    sm_tokenizer_free(t);
    return 1;
}

SM_FUZZ_MAIN(tokenizer_json)
