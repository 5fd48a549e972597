// A llama2.c tokenizer.bin and a text (tokenizer SEP text): sm_tokenizer_load reading tokens to
// the end of the file, then encode (with and without BOS) and decode. Invariants: ids inside the
// vocabulary, BOS first when asked, and the pieces decoded with no previous token concatenate to
// " " + text (the prefix only when the vocabulary has " "), provided the text has no '<' (a piece
// spelled "<0xNN>" decodes to one byte, so such text may not come back verbatim).
#include "fuzz.h"
#include "structmat_model.h"

#include <stdlib.h>
#include <string.h>

#define MAX_TEXT 4096

int sm_fuzz_tokenizer(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    const uint8_t *piece[2];
    size_t len[2];
    int k = sm_fuzz_split(data, size, piece, len, 2);
    char path[256];
    sm_fuzz_path(path, sizeof path, "tokenizer", "tokenizer.bin");
    sm_fuzz_write(path, piece[0], len[0]);
    const char *text = k > 1 ? (const char *)piece[1] : "";
    size_t tlen = k > 1 ? (len[1] < MAX_TEXT ? len[1] : MAX_TEXT) : 0;
    sm_tokenizer *t = (sm_tokenizer *)1;
    if (sm_tokenizer_load(path, 0, &t) != SM_OK) {
        SM_FUZZ_CHECK(t == NULL && sm_last_error()[0], "failed load");
        return 0;
    }
    int64_t V = sm_tokenizer_vocab_size(t);
    SM_FUZZ_CHECK(V >= 3 && sm_tokenizer_bos(t) == 1 && sm_tokenizer_eos(t) == 2, "vocab %lld",
                  (long long)V);
    for (int bos = 0; bos < 2; bos++) {
        int32_t *ids = NULL;
        int64_t n = -1;
        if (sm_tokenizer_encode(t, text, tlen, bos, &ids, &n) != SM_OK) {
            // Only a byte without a <0xNN> token may stop encoding.
            SM_FUZZ_CHECK(ids == NULL && strstr(sm_last_error(), "has no token"), "encode");
            continue;
        }
        SM_FUZZ_CHECK(n >= bos && n <= (int64_t)tlen + 1 + bos, "%lld ids for %zu bytes",
                      (long long)n, tlen);
        SM_FUZZ_CHECK(!bos || ids[0] == 1, "BOS missing");
        char *back = malloc(MAX_TEXT * 8 + 64);
        size_t blen = 0;
        bool room = true;
        for (int64_t i = bos; i < n; i++) {
            SM_FUZZ_CHECK(ids[i] >= 0 && ids[i] < V, "id %d outside [0, %lld)", ids[i],
                          (long long)V);
            size_t pl;
            const char *p = sm_tokenizer_decode(t, -1, ids[i], &pl);
            if (blen + pl > MAX_TEXT * 8 + 64) room = false;
            if (room) memcpy(back + blen, p, pl);
            blen += pl;
            // With BOS before it, a piece loses at most its leading space.
            size_t pl2;
            sm_tokenizer_decode(t, 1, ids[i], &pl2);
            SM_FUZZ_CHECK(pl2 == pl || (pl2 + 1 == pl && p[0] == ' '), "decode after BOS");
        }
        if (room && !memchr(text, '<', tlen)) {
            size_t pre = (tlen > 0 && blen == tlen + 1 && back[0] == ' ') ? 1 : 0;
            SM_FUZZ_CHECK(blen == tlen + pre && !memcmp(back + pre, text, tlen),
                          "the pieces of %lld ids (%zu bytes) are not the %zu-byte text",
                          (long long)n, blen, tlen);
        }
        free(back);
        free(ids);
    }
    size_t dl = 1;
    sm_tokenizer_decode(t, -1, (int32_t)V, &dl);
    SM_FUZZ_CHECK(dl == 0, "an id past the vocabulary decodes");
    sm_tokenizer_decode(t, -1, -1, &dl);
    SM_FUZZ_CHECK(dl == 0, "id -1 decodes");
    sm_tokenizer_free(t);
    return 1;
}

SM_FUZZ_MAIN(tokenizer)
