// Tokenizers: byte-level, and llama2.c's tokenizer.bin (sentencepiece pieces with scores).
//
// tokenizer.bin encoding follows llama2.c's run.c encode(): a " " prefix when the text is not
// empty, then each UTF-8 character (at most 4 bytes) becomes its piece's id, or one "<0xNN>" byte
// token per byte when it has none; then, while some adjacent pair concatenates to a piece, the
// pair whose piece scores highest (leftmost on ties; scores above -1e10) is merged. run.c rescans
// all pairs after each merge (quadratic); here the candidate pairs sit in a heap ordered by
// (score desc, left position asc) and stale entries are skipped, which merges in the same order
// in O(n log n) (merge.c, shared with tokenizer_bpe.c), so long texts (evaluation files) encode
// quickly.
#include "merge.h"
#include "model.h"
#include "structmat_gguf.h"
#include "tokenizer_bpe.h"

#include <ctype.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

struct sm_tokenizer {
    int64_t vocab;
    int32_t bos, eos;
    bool byte_level;
    char *blob;               // every piece's bytes back to back
    int64_t *off;             // (vocab + 1) piece i is blob[off[i] .. off[i+1])
    float *score;             // (vocab)
    int32_t *table;           // (cap) open-addressing hash of pieces -> lowest id, -1 empty
    int64_t cap;              // power of two
    int32_t byte_id[256];     // id of the piece "<0xNN>", or -1
    int32_t space_id;         // id of " ", or -1
    unsigned char bytes[256]; // bytes[i] = i: what byte tokens decode to
    sm_bpe *bpe;              // a BPE tokenizer (tokenizer_bpe.c) that encode/decode forward to
};

// --- pieces and their lookup ---------------------------------------------------------------------

static uint64_t fnv(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}
#define FNV0 0xcbf29ce484222325ull

static size_t piece_len(const sm_tokenizer *t, int32_t id) {
    return (size_t)(t->off[id + 1] - t->off[id]);
}
static const char *piece(const sm_tokenizer *t, int32_t id) {
    return t->blob + t->off[id];
}

// The lowest id whose piece is a (la bytes) followed by b (lb bytes), or -1.
static int32_t lookup2(const sm_tokenizer *t, const char *a, size_t la, const char *b, size_t lb) {
    uint64_t h = fnv(fnv(FNV0, a, la), b, lb);
    for (int64_t i = (int64_t)(h & (uint64_t)(t->cap - 1));; i = (i + 1) & (t->cap - 1)) {
        int32_t id = t->table[i];
        if (id < 0) return -1;
        const char *p = piece(t, id);
        if (piece_len(t, id) == la + lb && !memcmp(p, a, la) && !memcmp(p + la, b, lb)) return id;
    }
}

static sm_status build_table(sm_tokenizer *t) {
    t->cap = 16;
    while (t->cap < 2 * t->vocab) t->cap *= 2;
    t->table = malloc((size_t)t->cap * sizeof *t->table);
    if (!t->table) return sm_fail(SM_ERR_ALLOC, "out of memory");
    memset(t->table, 0xff, (size_t)t->cap * sizeof *t->table);
    for (int32_t id = 0; id < t->vocab; id++) {
        if (lookup2(t, piece(t, id), piece_len(t, id), "", 0) >= 0) continue; // keep the lowest
        uint64_t h = fnv(FNV0, piece(t, id), piece_len(t, id));
        int64_t i = (int64_t)(h & (uint64_t)(t->cap - 1));
        while (t->table[i] >= 0) i = (i + 1) & (t->cap - 1);
        t->table[i] = id;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = lookup2(t, name, 6, "", 0);
    }
    t->space_id = lookup2(t, " ", 1, "", 0);
    return SM_OK;
}

static sm_tokenizer *new_tokenizer(void) {
    sm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    for (int i = 0; i < 256; i++) t->bytes[i] = (unsigned char)i;
    return t;
}

sm_status sm_tokenizer_init_bytes(sm_tokenizer **out) {
    sm_tokenizer *t = new_tokenizer();
    if (!t) return sm_fail(SM_ERR_ALLOC, "out of memory");
    t->vocab = 256;
    t->bos = t->eos = -1;
    t->byte_level = true;
    *out = t;
    return SM_OK;
}

void sm_tokenizer_free(sm_tokenizer *t) {
    if (!t) return;
    free(t->blob);
    free(t->off);
    free(t->score);
    free(t->table);
    sm_bpe_free(t->bpe);
    free(t);
}

sm_status sm_tokenizer_wrap_bpe(sm_bpe *b, int32_t bos, int32_t eos, sm_tokenizer **out) {
    *out = NULL;
    sm_tokenizer *t = new_tokenizer();
    if (!t) {
        sm_bpe_free(b);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    t->bpe = b;
    t->vocab = sm_bpe_vocab(b);
    t->bos = bos;
    t->eos = eos;
    *out = t;
    return SM_OK;
}

sm_status sm_tokenizer_from_pieces(int64_t n, const char *const *pieces, const size_t *lens,
                                   const float *scores, int32_t bos, int32_t eos,
                                   sm_tokenizer **out) {
    *out = NULL;
    sm_tokenizer *t = new_tokenizer();
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) total += lens[i];
    if (t) {
        t->vocab = n;
        t->bos = bos;
        t->eos = eos;
        t->off = malloc((size_t)(n + 1) * sizeof *t->off);
        t->score = malloc((size_t)(n ? n : 1) * sizeof *t->score);
        t->blob = malloc(total + 1);
    }
    if (!t || !t->off || !t->score || !t->blob) {
        sm_tokenizer_free(t);
        return sm_fail(SM_ERR_ALLOC, "out of memory for %lld tokens", (long long)n);
    }
    int64_t used = 0;
    for (int64_t i = 0; i < n; i++) {
        t->off[i] = used;
        memcpy(t->blob + used, pieces[i], lens[i]);
        used += (int64_t)lens[i];
        t->score[i] = scores[i];
    }
    t->off[n] = used;
    sm_status s = build_table(t);
    if (s != SM_OK) {
        sm_tokenizer_free(t);
        return s;
    }
    *out = t;
    return SM_OK;
}

sm_status sm_tokenizer_load(const char *path, int64_t vocab_size, sm_tokenizer **out) {
    *out = NULL;
    if (vocab_size < 0 || vocab_size > INT32_MAX)
        return sm_fail(SM_ERR_ARG, "%s: vocab_size %lld is not a token count", path,
                       (long long)vocab_size);
    char *data = NULL;
    size_t size = 0;
    sm_status s = sm_read_file(path, &data, &size, (size_t)1 << 31);
    if (s != SM_OK) return s;
    sm_tokenizer *t = new_tokenizer();
    if (!t) {
        free(data);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    // First pass: count tokens and check every record lies inside the file.
    size_t pos = 4;
    int64_t n = 0;
    if (size < 4) s = sm_fail(SM_ERR_FORMAT, "%s: file too short for a tokenizer.bin header", path);
    while (s == SM_OK && (vocab_size ? n < vocab_size : pos < size)) {
        int32_t len;
        if (size - pos < 8) {
            s = sm_fail(SM_ERR_FORMAT, "%s: file too short: token %lld%s%s is cut off", path,
                        (long long)n, vocab_size ? " of " : "", vocab_size ? "the vocabulary" : "");
            break;
        }
        memcpy(&len, data + pos + 4, 4);
        if (len < 0 || (size_t)len > size - pos - 8) {
            s = sm_fail(SM_ERR_FORMAT, "%s: token %lld has length %d, past the end of the file",
                        path, (long long)n, len);
            break;
        }
        pos += 8 + (size_t)len;
        n++;
    }
    if (s == SM_OK && pos != size)
        s = sm_fail(SM_ERR_FORMAT,
                    "%s: %zu bytes left after %lld tokens (is the vocabulary "
                    "size right?)",
                    path, size - pos, (long long)n);
    if (s == SM_OK && n < 3)
        s = sm_fail(SM_ERR_FORMAT, "%s: %lld tokens; BOS (1) and EOS (2) need at least 3", path,
                    (long long)n);
    if (s == SM_OK) {
        t->vocab = n;
        t->bos = 1;
        t->eos = 2;
        t->off = malloc((size_t)(n + 1) * sizeof *t->off);
        t->score = malloc((size_t)n * sizeof *t->score);
        t->blob = malloc(size + 1);
        if (!t->off || !t->score || !t->blob) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    if (s == SM_OK) {
        pos = 4;
        int64_t used = 0;
        for (int64_t i = 0; i < n; i++) {
            int32_t len;
            memcpy(&t->score[i], data + pos, 4);
            memcpy(&len, data + pos + 4, 4);
            t->off[i] = used;
            memcpy(t->blob + used, data + pos + 8, (size_t)len);
            used += len;
            pos += 8 + (size_t)len;
        }
        t->off[n] = used;
        s = build_table(t);
    }
    free(data);
    if (s != SM_OK) {
        sm_tokenizer_free(t);
        return s;
    }
    *out = t;
    return SM_OK;
}

sm_status sm_tokenizer_load_for_model(const char *model_path, const sm_model *m,
                                      sm_tokenizer **out) {
    *out = NULL;
    struct stat sb;
    char *dir = NULL, *file = NULL;
    if (stat(model_path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        dir = strdup(model_path);
    } else {
        char *tmp = strdup(model_path);
        dir = tmp ? strdup(dirname(tmp)) : NULL;
        free(tmp);
    }
    if (!dir || asprintf(&file, "%s/tokenizer.bin", dir) < 0) {
        free(dir);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    sm_status s;
    int64_t vocab = m->info.vocab_size;
    char *json = NULL;
    if (asprintf(&json, "%s/tokenizer.json", dir) < 0) json = NULL;
    free(dir);
    if (!json) {
        free(file);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    bool gguf_vocab = false;
    if (sm_model_is_gguf(model_path)) { // a GGUF file's own vocabulary, when it has one
        sm_gguf *g = NULL;
        if (sm_gguf_open(model_path, &g) == SM_OK)
            gguf_vocab = sm_gguf_kv_find(g, "tokenizer.ggml.model") >= 0;
        sm_gguf_close(g);
        sm_error_clear();
    }
    if (gguf_vocab)
        s = sm_tokenizer_load_gguf(model_path, out);
    else if (stat(json, &sb) == 0)
        s = sm_tokenizer_load_json(json, out);
    else if (stat(file, &sb) == 0)
        s = sm_tokenizer_load(file, vocab, out);
    else if (vocab == 256)
        s = sm_tokenizer_init_bytes(out);
    else
        s = sm_fail(SM_ERR_NOT_FOUND,
                    "%s: no tokenizer.bin next to the model and its vocabulary "
                    "(%lld) is not byte-level: give token ids",
                    model_path, (long long)vocab);
    free(file);
    free(json);
    if (s == SM_OK && (*out)->bpe) {
        // tokenizer.json holds no EOS: the model's; ids the model cannot embed are refused.
        if ((*out)->eos < 0) (*out)->eos = m->info.eos_id;
        if ((*out)->vocab > vocab) {
            s = sm_fail(SM_ERR_FORMAT, "%s: the tokenizer has %lld tokens, the model embeds %lld",
                        model_path, (long long)(*out)->vocab, (long long)vocab);
            sm_tokenizer_free(*out);
            *out = NULL;
        }
    }
    return s;
}

int64_t sm_tokenizer_vocab_size(const sm_tokenizer *t) {
    return t->vocab;
}
int32_t sm_tokenizer_bos(const sm_tokenizer *t) {
    return t->bos;
}
int32_t sm_tokenizer_eos(const sm_tokenizer *t) {
    return t->eos;
}

const char *sm_tokenizer_decode(const sm_tokenizer *t, int32_t prev, int32_t id, size_t *len) {
    *len = 0;
    if (t->bpe) return sm_bpe_decode(t->bpe, prev < 0 || prev == t->bos, id, len);
    if (id < 0 || id >= t->vocab) return "";
    if (t->byte_level) {
        *len = 1;
        return (const char *)&t->bytes[id];
    }
    const char *p = piece(t, id);
    size_t n = piece_len(t, id);
    if (prev == t->bos && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    unsigned v;
    char tail;
    if (n == 6 && !memcmp(p, "<0x", 3) && p[5] == '>' && isxdigit((unsigned char)p[3]) &&
        isxdigit((unsigned char)p[4]) && sscanf(p + 3, "%2x%c", &v, &tail) == 2) {
        *len = 1;
        return (const char *)&t->bytes[v];
    }
    *len = n;
    return p;
}

// --- encoding ------------------------------------------------------------------------------------

// Whether pieces a, b concatenate to a piece that run.c would merge; the highest score first.
static bool sp_merge(const void *ctx, int32_t a, int32_t b, double *key, int32_t *res) {
    const sm_tokenizer *t = ctx;
    int32_t id = lookup2(t, piece(t, a), piece_len(t, a), piece(t, b), piece_len(t, b));
    if (id < 0 || !(t->score[id] > -1e10f)) return false;
    *key = -(double)t->score[id];
    *res = id;
    return true;
}

sm_status sm_tokenizer_encode(const sm_tokenizer *t, const char *text, size_t len, bool add_bos,
                              int32_t **ids_out, int64_t *n_out) {
    *ids_out = NULL;
    *n_out = 0;
    if (t->bpe) return sm_bpe_encode(t->bpe, add_bos ? t->bos : -1, text, len, ids_out, n_out);
    if (!text && len) return sm_fail(SM_ERR_ARG, "encode: no text");
    // Symbols: at most one per byte, the " " prefix and BOS.
    int64_t cap = (int64_t)len + 2;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return sm_fail(SM_ERR_ALLOC, "encode: out of memory for %zu bytes", len);
    int64_t n = 0;
    bool bos = add_bos && t->bos >= 0;
    if (t->byte_level) {
        if (bos) ids[n++] = t->bos;
        for (size_t i = 0; i < len; i++) ids[n++] = (unsigned char)text[i];
        *ids_out = ids;
        *n_out = n;
        return SM_OK;
    }
    // BOS goes first and takes no part in merges (no piece starts with "<s>").
    if (bos) ids[n++] = t->bos;
    int32_t *sym = ids + n; // (ns) the symbols being merged
    int64_t ns = 0;
    if (len && t->space_id >= 0) sym[ns++] = t->space_id;
    for (size_t i = 0; i < len;) {
        // One UTF-8 character: a lead byte and up to three continuation bytes, as run.c cuts.
        size_t k = 1;
        while (k < 4 && i + k < len && ((unsigned char)text[i + k] & 0xC0) == 0x80) k++;
        int32_t id = lookup2(t, text + i, k, "", 0);
        if (id >= 0) {
            sym[ns++] = id;
        } else {
            for (size_t b = 0; b < k; b++) {
                int32_t bid = t->byte_id[(unsigned char)text[i + b]];
                if (bid < 0) {
                    free(ids);
                    return sm_fail(SM_ERR_FORMAT,
                                   "encode: byte 0x%02X at offset %zu has no "
                                   "token (<0x%02X> is not in the vocabulary)",
                                   (unsigned char)text[i + b], i + b, (unsigned char)text[i + b]);
                }
                sym[ns++] = bid;
            }
        }
        i += k;
    }
    // Merges over a linked list of symbols; the first symbol is never absorbed, so the list
    // always starts at 0. Each merge pushes at most two pairs: 3 ns entries suffice.
    int64_t *next = malloc((size_t)(ns + 1) * sizeof *next);
    int64_t *prev = malloc((size_t)(ns + 1) * sizeof *prev);
    sm_merge_pair *heap = malloc((size_t)(3 * ns + 1) * sizeof *heap);
    if (!next || !prev || !heap) {
        free(next), free(prev), free(heap), free(ids);
        return sm_fail(SM_ERR_ALLOC, "encode: out of memory");
    }
    sm_merge_symbols(sym, ns, next, prev, heap, sp_merge, t);
    int64_t m = 0; // compact in place: the k-th live symbol sits at an index >= k
    for (int64_t i = ns ? 0 : -1; i >= 0; i = next[i]) sym[m++] = sym[i];
    n += m;
    free(next);
    free(prev);
    free(heap);
    *ids_out = ids;
    *n_out = n;
    return SM_OK;
}
