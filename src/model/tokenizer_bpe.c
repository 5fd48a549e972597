// BPE tokenizers: Hugging Face tokenizer.json (byte-level BPE as in GPT-2, Llama-3, Qwen2 and
// SmolLM; SentencePiece-style BPE as in Llama-2's tokenizer.json) and the vocabulary of a GGUF
// file (tokenizer.ggml.model "gpt2": the same byte-level BPE; "llama": SentencePiece with scores,
// encoded by tokenizer.c's score-greedy merges as llama.cpp does).
//
// Encoding, as the tokenizers library does it:
//  1. Added tokens (tokenizer.json's added_tokens; GGUF control and user-defined tokens) are cut
//     out of the text first, leftmost and then longest, and become their ids; the rest is split
//     into segments between them.
//  2. Each segment is normalized (SentencePiece style: "▁" prepended, spaces replaced by "▁") and
//     pre-tokenized: byte-level models split it with the pre-tokenizer's regular expression
//     (GPT-2's, or a Split pattern such as Llama-3's or Qwen2's) through PCRE2 in UTF mode with
//     Unicode properties (PCRE2_UCP, so \p{L}, \p{N} and \s are Unicode's classes), then map every
//     byte to GPT-2's printable alphabet (bytes_to_unicode), one symbol per byte.
//     SentencePiece-style models take the segment as one word whose symbols are its UTF-8
//     characters, a character outside the vocabulary falling back to its "<0xNN>" byte tokens
//     (or the unknown token, consecutive unknowns fused).
//  3. In each word the adjacent pair with the lowest merge rank is merged (leftmost on ties) until
//     no pair has a merge; a heap of candidate pairs with stale entries skipped keeps this
//     O(n log n). With ignore_merges (Llama-3) a word that is itself a token is emitted whole.
// Decoding maps a token back to bytes: the byte-level alphabet to its bytes, or "▁" to a space
// and "<0xNN>" to byte NN (the first token of a text loses the prepended space).
// Text given as bytes need not be valid UTF-8: PCRE2_MATCH_INVALID_UTF never matches across a
// bad sequence, whose bytes become a word of their own (the tokenizers library only ever sees
// valid strings, so valid text is where the two are compared).
#include "tokenizer_bpe.h"

#include "merge.h"
#include "structmat_gguf.h"

#include <cJSON.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

// Pre-tokenizer patterns: GPT-2's (ByteLevel use_regex), Llama-3's and Qwen2's (Split).
static const char k_re_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char k_re_llama3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_re_qwen2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

#define SPM_SPACE "\xe2\x96\x81" // U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space

enum { BPE_BYTE = 0, BPE_SPM = 1 };

typedef struct added {
    int32_t id;
    size_t off, len; // content in the string blob
} added;

struct sm_bpe {
    int kind;
    int64_t n;     // ids 0 .. n - 1 (missing ids are empty strings)
    char *blob;    // token strings (vocabulary alphabet) back to back
    int64_t *off;  // (n + 1)
    char *dblob;   // decoded bytes per id back to back
    int64_t *doff; // (n + 1)
    int32_t *tab;  // (cap) open addressing: string -> lowest id, -1 empty
    int64_t cap;
    uint64_t *mkey; // (mcap) merges: (left << 32 | right) + 1, 0 empty
    int32_t *mrank, *mres;
    int64_t mcap;
    int32_t byte_sym[256]; // byte-level: id of byte b's character; SPM: id of "<0xNN>" or -1
    pcre2_code *re;        // byte-level pre-tokenizer, or NULL: a segment is one word
    bool add_prefix_space; // byte-level: a space before a segment that lacks one
    bool ignore_merges;
    bool byte_fallback;
    bool fuse_unk;
    bool spm_prepend; // SPM: "▁" before every segment
    int32_t unk;
    added *add; // (nadd) sorted by content length, longest first
    int64_t nadd;
    char *addblob;
    bool add_first[256]; // whether some added token starts with this byte
};

// --- strings and tables --------------------------------------------------------------------------

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static const char *tok_str(const sm_bpe *b, int32_t id, size_t *len) {
    *len = (size_t)(b->off[id + 1] - b->off[id]);
    return b->blob + b->off[id];
}

static int32_t lookup(const sm_bpe *b, const char *s, size_t n) {
    for (int64_t i = (int64_t)(fnv(s, n) & (uint64_t)(b->cap - 1));; i = (i + 1) & (b->cap - 1)) {
        int32_t id = b->tab[i];
        if (id < 0) return -1;
        size_t l;
        const char *t = tok_str(b, id, &l);
        if (l == n && !memcmp(t, s, n)) return id;
    }
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

// The merge of (l, r): its rank and result, or false.
static bool merge_of(const sm_bpe *b, int32_t l, int32_t r, int32_t *rank, int32_t *res) {
    if (!b->mcap) return false;
    uint64_t k = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    for (int64_t i = (int64_t)(mix(k) & (uint64_t)(b->mcap - 1));; i = (i + 1) & (b->mcap - 1)) {
        if (!b->mkey[i]) return false;
        if (b->mkey[i] == k) {
            *rank = b->mrank[i];
            *res = b->mres[i];
            return true;
        }
    }
}

void sm_bpe_free(sm_bpe *b) {
    if (!b) return;
    free(b->blob), free(b->off), free(b->dblob), free(b->doff), free(b->tab);
    free(b->mkey), free(b->mrank), free(b->mres), free(b->add), free(b->addblob);
    if (b->re) pcre2_code_free(b->re);
    free(b);
}

int64_t sm_bpe_vocab(const sm_bpe *b) {
    return b->n;
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 in order to U+0100..
static void byte_map(uint32_t cp[256]) {
    int extra = 0;
    for (int c = 0; c < 256; c++) {
        bool keep = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
        cp[c] = keep ? (uint32_t)c : 256u + (uint32_t)extra++;
    }
}

static size_t utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 63));
    out[2] = (char)(0x80 | (cp & 63));
    return 3;
}

// Length of the UTF-8 character at s (n bytes left): 1 for a byte that does not start a valid one.
static size_t utf8_len(const unsigned char *s, size_t n) {
    size_t k = s[0] < 0x80                   ? 1
               : s[0] >= 0xF0 && s[0] < 0xF5 ? 4
               : s[0] >= 0xE0                ? 3
               : s[0] >= 0xC2                ? 2
                                             : 1;
    if (k > n) return 1;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 1;
    return k;
}

// A growing byte buffer.
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool fail;
} sbuf;

static void sb_put(sbuf *s, const void *d, size_t n) {
    if (s->fail) return;
    if (s->n + n + 1 > s->cap) {
        size_t cap = 2 * (s->n + n) + 64;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->fail = true;
            return;
        }
        s->p = p, s->cap = cap;
    }
    if (n) memcpy(s->p + s->n, d, n);
    s->n += n;
}

// --- building: token strings, decoded bytes, tables -------------------------------------------

typedef struct builder {
    int64_t n;
    char **str; // (n) malloc'd NUL-free strings or NULL (missing id)
    size_t *len;
    bool *special; // added token
    const char *where;
} builder;

static sm_status bld_init(builder *g, int64_t n, const char *where) {
    g->n = n;
    g->where = where;
    g->str = calloc((size_t)(n ? n : 1), sizeof *g->str);
    g->len = calloc((size_t)(n ? n : 1), sizeof *g->len);
    g->special = calloc((size_t)(n ? n : 1), sizeof *g->special);
    if (!g->str || !g->len || !g->special) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", where);
    return SM_OK;
}

static void bld_free(builder *g) {
    for (int64_t i = 0; g->str && i < g->n; i++) free(g->str[i]);
    free(g->str), free(g->len), free(g->special);
}

static sm_status bld_set(builder *g, int64_t id, const char *s, size_t len) {
    if (id < 0 || id >= g->n)
        return sm_fail(SM_ERR_FORMAT, "%s: token id %lld outside the vocabulary (%lld)", g->where,
                       (long long)id, (long long)g->n);
    free(g->str[id]);
    g->str[id] = malloc(len + 1);
    if (!g->str[id]) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", g->where);
    memcpy(g->str[id], s, len);
    g->str[id][len] = 0;
    g->len[id] = len;
    return SM_OK;
}

// Decoded bytes of token string s: the byte-level alphabet back to bytes (characters outside
// it as they are), or SentencePiece's "▁" -> " " and "<0xNN>" -> byte NN.
static void decode_str(int kind, const uint32_t *u2b_cp, const char *s, size_t n, bool special,
                       sbuf *out) {
    if (special) {
        sb_put(out, s, n);
        return;
    }
    if (kind == BPE_SPM) {
        unsigned v;
        if (n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && sscanf(s + 3, "%2x", &v) == 1) {
            unsigned char c = (unsigned char)v;
            sb_put(out, &c, 1);
            return;
        }
        for (size_t i = 0; i < n;) {
            if (n - i >= 3 && !memcmp(s + i, SPM_SPACE, 3)) {
                sb_put(out, " ", 1);
                i += 3;
            } else {
                sb_put(out, s + i, 1);
                i++;
            }
        }
        return;
    }
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len((const unsigned char *)s + i, n - i);
        uint32_t cp = 0;
        if (k == 1)
            cp = (unsigned char)s[i];
        else if (k == 2)
            cp = (uint32_t)(s[i] & 0x1F) << 6 | (uint32_t)(s[i + 1] & 0x3F);
        else if (k == 3)
            cp = (uint32_t)(s[i] & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 |
                 (uint32_t)(s[i + 2] & 0x3F);
        else
            cp = 0xFFFFFFFF;
        if (cp < 512 && u2b_cp[cp] < 256) {
            unsigned char c = (unsigned char)u2b_cp[cp];
            sb_put(out, &c, 1);
        } else {
            sb_put(out, s + i, k);
        }
        i += k;
    }
}

static int cmp_added(const void *a, const void *b) {
    const added *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

// Fills b's strings, decoded strings, lookup table, byte symbols and added tokens from g.
static sm_status bld_finish(builder *g, sm_bpe *b) {
    b->n = g->n;
    sbuf s = {0}, d = {0}, a = {0};
    b->off = malloc((size_t)(g->n + 1) * sizeof *b->off);
    b->doff = malloc((size_t)(g->n + 1) * sizeof *b->doff);
    if (!b->off || !b->doff) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", g->where);
    uint32_t cp[256], u2b[512];
    byte_map(cp);
    for (int i = 0; i < 512; i++) u2b[i] = 0xFFFF;
    for (int c = 0; c < 256; c++) u2b[cp[c]] = (uint32_t)c;
    int64_t nadd = 0;
    for (int64_t i = 0; i < g->n; i++) {
        b->off[i] = (int64_t)s.n;
        b->doff[i] = (int64_t)d.n;
        if (!g->str[i]) continue;
        sb_put(&s, g->str[i], g->len[i]);
        decode_str(b->kind, u2b, g->str[i], g->len[i], g->special[i], &d);
        nadd += g->special[i] && g->len[i] > 0;
    }
    b->off[g->n] = (int64_t)s.n;
    b->doff[g->n] = (int64_t)d.n;
    b->blob = s.p ? s.p : calloc(1, 1);
    b->dblob = d.p ? d.p : calloc(1, 1);
    b->add = calloc((size_t)(nadd ? nadd : 1), sizeof *b->add);
    b->cap = 16;
    while (b->cap < 2 * g->n) b->cap *= 2;
    b->tab = malloc((size_t)b->cap * sizeof *b->tab);
    if (s.fail || d.fail || !b->blob || !b->dblob || !b->add || !b->tab)
        return sm_fail(SM_ERR_ALLOC, "%s: out of memory", g->where);
    memset(b->tab, 0xff, (size_t)b->cap * sizeof *b->tab);
    for (int32_t id = 0; id < g->n; id++) {
        size_t l;
        const char *t = tok_str(b, id, &l);
        if (!g->str[id] || lookup(b, t, l) >= 0) continue; // the lowest id keeps the string
        int64_t i = (int64_t)(fnv(t, l) & (uint64_t)(b->cap - 1));
        while (b->tab[i] >= 0) i = (i + 1) & (b->cap - 1);
        b->tab[i] = id;
    }
    for (int32_t id = 0; id < g->n; id++)
        if (g->special[id] && g->len[id] > 0) {
            b->add[b->nadd++] = (added){id, a.n, g->len[id]};
            sb_put(&a, g->str[id], g->len[id]);
            b->add_first[(unsigned char)g->str[id][0]] = true;
        }
    b->addblob = a.p ? a.p : calloc(1, 1);
    if (a.fail || !b->addblob) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", g->where);
    qsort(b->add, (size_t)b->nadd, sizeof *b->add, cmp_added);
    for (int c = 0; c < 256; c++) {
        if (b->kind == BPE_BYTE) {
            char u[4];
            b->byte_sym[c] = lookup(b, u, utf8_put(cp[c], u));
        } else {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", c);
            b->byte_sym[c] = lookup(b, name, 6);
        }
    }
    return SM_OK;
}

// Adds merge (left string, right string) of the given rank; merges whose parts or result are
// not tokens are skipped, as the tokenizers library cannot apply them either (it refuses them).
static sm_status add_merge(sm_bpe *b, const char *l, size_t ll, const char *r, size_t rl,
                           int32_t rank, const char *where) {
    int32_t a = lookup(b, l, ll), c = lookup(b, r, rl);
    char *cat = malloc(ll + rl + 1);
    if (!cat) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", where);
    memcpy(cat, l, ll);
    memcpy(cat + ll, r, rl);
    int32_t res = lookup(b, cat, ll + rl);
    free(cat);
    if (a < 0 || c < 0 || res < 0)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: merge %d (\"%.*s\" \"%.*s\") has a part or result that "
                       "is not in the vocabulary",
                       where, rank, (int)ll, l, (int)rl, r);
    uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)c) + 1;
    for (int64_t i = (int64_t)(mix(k) & (uint64_t)(b->mcap - 1));; i = (i + 1) & (b->mcap - 1)) {
        if (b->mkey[i] == k) return SM_OK; // a repeated merge keeps its first (lower) rank
        if (!b->mkey[i]) {
            b->mkey[i] = k;
            b->mrank[i] = rank;
            b->mres[i] = res;
            return SM_OK;
        }
    }
}

static sm_status alloc_merges(sm_bpe *b, int64_t count, const char *where) {
    b->mcap = 16;
    while (b->mcap < 2 * count) b->mcap *= 2;
    b->mkey = calloc((size_t)b->mcap, sizeof *b->mkey);
    b->mrank = malloc((size_t)b->mcap * sizeof *b->mrank);
    b->mres = malloc((size_t)b->mcap * sizeof *b->mres);
    if (!b->mkey || !b->mrank || !b->mres) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", where);
    return SM_OK;
}

static sm_status compile_re(sm_bpe *b, const char *pattern, const char *where) {
    int err;
    PCRE2_SIZE at;
    b->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, NULL);
    if (!b->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: pre-tokenizer pattern at offset %zu: %s", where,
                       (size_t)at, (const char *)msg);
    }
    return SM_OK;
}

// --- encoding ------------------------------------------------------------------------------------

// Scratch reused across the words of one encode call.
typedef struct work {
    int32_t *sym;
    int64_t *next, *prev;
    sm_merge_pair *heap;
    int64_t cap;
    int32_t *out; // the ids so far
    int64_t n, outcap;
    bool fail;
} work;

static bool grow(work *w, int64_t ns) {
    if (ns <= w->cap) return true;
    int64_t cap = 2 * ns + 16;
    int32_t *sym = realloc(w->sym, (size_t)cap * sizeof *sym);
    if (sym) w->sym = sym;
    int64_t *next = realloc(w->next, (size_t)cap * sizeof *next);
    if (next) w->next = next;
    int64_t *prev = realloc(w->prev, (size_t)cap * sizeof *prev);
    if (prev) w->prev = prev;
    sm_merge_pair *hp = realloc(w->heap, (size_t)(3 * cap) * sizeof *hp);
    if (hp) w->heap = hp;
    if (!sym || !next || !prev || !hp) return false;
    w->cap = cap;
    return true;
}

static void emit(work *w, int32_t id) {
    if (w->fail) return;
    if (w->n == w->outcap) {
        int64_t cap = 2 * w->outcap + 64;
        int32_t *o = realloc(w->out, (size_t)cap * sizeof *o);
        if (!o) {
            w->fail = true;
            return;
        }
        w->out = o, w->outcap = cap;
    }
    w->out[w->n++] = id;
}

static bool bpe_merge(const void *ctx, int32_t a, int32_t b, double *key, int32_t *res) {
    int32_t rank;
    if (!merge_of(ctx, a, b, &rank, res)) return false;
    *key = rank;
    return true;
}

// Merges the ns symbols in w->sym by rank and emits the result.
static void merge_word(const sm_bpe *b, work *w, int64_t ns) {
    sm_merge_symbols(w->sym, ns, w->next, w->prev, w->heap, bpe_merge, b);
    for (int64_t i = ns ? 0 : -1; i >= 0; i = w->next[i]) emit(w, w->sym[i]);
}

// One byte-level word: text bytes [s, s + n).
static void byte_word(const sm_bpe *b, work *w, const char *s, size_t n) {
    if (!n) return;
    if (b->ignore_merges) {
        // The word spelled in the byte alphabet is itself a token: emitted whole.
        char *u = malloc(3 * n + 1);
        if (u) {
            size_t k = 0;
            uint32_t cp[256];
            byte_map(cp);
            for (size_t i = 0; i < n; i++) k += utf8_put(cp[(unsigned char)s[i]], u + k);
            int32_t id = lookup(b, u, k);
            free(u);
            if (id >= 0) {
                emit(w, id);
                return;
            }
        }
    }
    if (!grow(w, (int64_t)n)) {
        w->fail = true;
        return;
    }
    int64_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = b->byte_sym[(unsigned char)s[i]];
        if (id >= 0)
            w->sym[ns++] = id;
        else if (b->unk >= 0)
            w->sym[ns++] = b->unk; // a byte outside the alphabet (tokenizers drops it without unk)
    }
    merge_word(b, w, ns);
}

// One SentencePiece-style word (already normalized): characters, byte fallback, merges.
static void spm_word(const sm_bpe *b, work *w, const char *s, size_t n) {
    if (!n) return;
    if (!grow(w, (int64_t)n)) {
        w->fail = true;
        return;
    }
    int64_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len((const unsigned char *)s + i, n - i);
        int32_t id = lookup(b, s + i, k);
        if (id >= 0) {
            w->sym[ns++] = id;
        } else {
            bool bytes = b->byte_fallback;
            for (size_t j = 0; j < k && bytes; j++)
                bytes = b->byte_sym[(unsigned char)s[i + j]] >= 0;
            if (bytes) {
                for (size_t j = 0; j < k; j++) w->sym[ns++] = b->byte_sym[(unsigned char)s[i + j]];
            } else if (b->unk >= 0 && !(b->fuse_unk && ns && w->sym[ns - 1] == b->unk)) {
                w->sym[ns++] = b->unk;
            }
        }
        i += k;
    }
    merge_word(b, w, ns);
}

// A segment of text between added tokens.
static void segment(const sm_bpe *b, work *w, const char *s, size_t n, pcre2_match_data *md) {
    if (!n) return;
    if (b->kind == BPE_SPM) {
        // Normalized: "▁" prepended, every space -> "▁".
        sbuf t = {0};
        if (b->spm_prepend) sb_put(&t, SPM_SPACE, 3);
        for (size_t i = 0; i < n; i++)
            if (s[i] == ' ')
                sb_put(&t, SPM_SPACE, 3);
            else
                sb_put(&t, s + i, 1);
        if (t.fail)
            w->fail = true;
        else
            spm_word(b, w, t.p, t.n);
        free(t.p);
        return;
    }
    char *own = NULL;
    if (b->add_prefix_space && s[0] != ' ') {
        own = malloc(n + 1);
        if (!own) {
            w->fail = true;
            return;
        }
        own[0] = ' ';
        memcpy(own + 1, s, n);
        s = own, n++;
    }
    if (!b->re) {
        byte_word(b, w, s, n);
        free(own);
        return;
    }
    size_t pos = 0;
    while (pos < n && !w->fail) {
        int rc = pcre2_match(b->re, (PCRE2_SPTR)s, n, pos, 0, md, NULL);
        size_t ms = n, me = n;
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            ms = ov[0], me = ov[1];
        }
        if (ms > pos) byte_word(b, w, s + pos, ms - pos); // bytes no match covers
        if (ms >= n) break;
        if (me == ms) { // an empty match: take one character as a word of its own
            me = ms + utf8_len((const unsigned char *)s + ms, n - ms);
        }
        byte_word(b, w, s + ms, me - ms);
        pos = me;
    }
    free(own);
}

sm_status sm_bpe_encode(const sm_bpe *b, int32_t bos, const char *text, size_t len, int32_t **ids,
                        int64_t *n) {
    *ids = NULL;
    *n = 0;
    if (!text && len) return sm_fail(SM_ERR_ARG, "encode: no text");
    work w = {0};
    pcre2_match_data *md = b->re ? pcre2_match_data_create_from_pattern(b->re, NULL) : NULL;
    if (b->re && !md) return sm_fail(SM_ERR_ALLOC, "encode: out of memory");
    if (bos >= 0) emit(&w, bos);
    size_t start = 0;
    for (size_t i = 0; i < len && !w.fail;) {
        const added *hit = NULL;
        if (b->add_first[(unsigned char)text[i]])
            for (int64_t k = 0; k < b->nadd && !hit; k++) // longest first
                if (b->add[k].len <= len - i &&
                    !memcmp(text + i, b->addblob + b->add[k].off, b->add[k].len))
                    hit = &b->add[k];
        if (!hit) {
            i++;
            continue;
        }
        segment(b, &w, text + start, i - start, md);
        emit(&w, hit->id);
        i += hit->len;
        start = i;
    }
    if (!w.fail) segment(b, &w, text + start, len - start, md);
    if (md) pcre2_match_data_free(md);
    free(w.sym), free(w.next), free(w.prev), free(w.heap);
    if (w.fail) {
        free(w.out);
        return sm_fail(SM_ERR_ALLOC, "encode: out of memory for %zu bytes", len);
    }
    *ids = w.out ? w.out : malloc(sizeof(int32_t));
    *n = w.n;
    return *ids ? SM_OK : sm_fail(SM_ERR_ALLOC, "encode: out of memory");
}

const char *sm_bpe_decode(const sm_bpe *b, bool first, int32_t id, size_t *len) {
    *len = 0;
    if (id < 0 || id >= b->n) return "";
    const char *p = b->dblob + b->doff[id];
    size_t n = (size_t)(b->doff[id + 1] - b->doff[id]);
    if (first && b->kind == BPE_SPM && b->spm_prepend && n && p[0] == ' ') p++, n--;
    *len = n;
    return p;
}

// --- tokenizer.json ---------------------------------------------------------------------------

static const cJSON *item(const cJSON *o, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static bool is_type(const cJSON *o, const char *type) {
    const cJSON *t = item(o, "type");
    return cJSON_IsString(t) && !strcmp(t->valuestring, type);
}

static const char *type_of(const cJSON *o) {
    const cJSON *t = item(o, "type");
    return cJSON_IsString(t) ? t->valuestring : "?";
}

// The pre-tokenizer: ByteLevel (GPT-2 regex unless use_regex is false), Split with a Regex
// pattern and behavior Isolated, a Sequence of those, or none.
static sm_status json_pretok(sm_bpe *b, const cJSON *pt, const char *where) {
    if (!pt || cJSON_IsNull(pt)) return SM_OK;
    if (is_type(pt, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, item(pt, "pretokenizers")) {
            sm_status s = json_pretok(b, e, where);
            if (s != SM_OK) return s;
        }
        return SM_OK;
    }
    if (is_type(pt, "ByteLevel")) {
        b->add_prefix_space = cJSON_IsTrue(item(pt, "add_prefix_space"));
        const cJSON *ur = item(pt, "use_regex");
        if (ur && !cJSON_IsTrue(ur)) return SM_OK;
        if (b->re) return sm_fail(SM_ERR_UNSUPPORTED, "%s: two pre-tokenizer patterns", where);
        return compile_re(b, k_re_gpt2, where);
    }
    if (is_type(pt, "Split")) {
        const cJSON *pat = item(pt, "pattern"), *re = pat ? item(pat, "Regex") : NULL;
        const cJSON *beh = item(pt, "behavior");
        if (!cJSON_IsString(re) || !cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") ||
            cJSON_IsTrue(item(pt, "invert")))
            return sm_fail(SM_ERR_UNSUPPORTED,
                           "%s: only Split pre-tokenizers with a Regex pattern and behavior "
                           "Isolated are supported",
                           where);
        if (b->re) return sm_fail(SM_ERR_UNSUPPORTED, "%s: two pre-tokenizer patterns", where);
        return compile_re(b, re->valuestring, where);
    }
    return sm_fail(SM_ERR_UNSUPPORTED, "%s: pre-tokenizer \"%s\" is not supported", where,
                   type_of(pt));
}

// Normalizers: none, NFC (accepted as the identity: text is taken to be NFC already), or
// SentencePiece's Prepend("▁") + Replace(" ", "▁").
static sm_status json_normalizer(sm_bpe *b, const cJSON *nm, const char *where) {
    if (!nm || cJSON_IsNull(nm) || is_type(nm, "NFC")) return SM_OK;
    if (is_type(nm, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, item(nm, "normalizers")) {
            sm_status s = json_normalizer(b, e, where);
            if (s != SM_OK) return s;
        }
        return SM_OK;
    }
    if (is_type(nm, "Prepend")) {
        const cJSON *p = item(nm, "prepend");
        if (cJSON_IsString(p) && !strcmp(p->valuestring, SPM_SPACE)) {
            b->spm_prepend = true;
            return SM_OK;
        }
    }
    if (is_type(nm, "Replace")) {
        const cJSON *pat = item(nm, "pattern"), *s = pat ? item(pat, "String") : NULL;
        const cJSON *c = item(nm, "content");
        if (cJSON_IsString(s) && !strcmp(s->valuestring, " ") && cJSON_IsString(c) &&
            !strcmp(c->valuestring, SPM_SPACE))
            return SM_OK; // what BPE_SPM does to spaces
    }
    return sm_fail(SM_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported", where,
                   type_of(nm));
}

// BOS from a TemplateProcessing post-processor whose single template starts with a special token.
static int32_t json_bos(const cJSON *root, const sm_bpe *b) {
    const cJSON *pp = item(root, "post_processor");
    if (pp && is_type(pp, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, item(pp, "processors")) if (is_type(e, "TemplateProcessing")) pp = e;
    }
    if (!pp || !is_type(pp, "TemplateProcessing")) return -1;
    const cJSON *single = item(pp, "single"), *first = cJSON_GetArrayItem(single, 0);
    const cJSON *sp = first ? item(first, "SpecialToken") : NULL, *id = sp ? item(sp, "id") : NULL;
    if (!cJSON_IsString(id)) return -1;
    return lookup(b, id->valuestring, strlen(id->valuestring));
}

sm_status sm_tokenizer_load_json(const char *path, sm_tokenizer **out) {
    *out = NULL;
    char *text = NULL;
    sm_status s = sm_read_file(path, &text, NULL, (size_t)1 << 30);
    if (s != SM_OK) return s;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return sm_fail(SM_ERR_FORMAT, "%s: not valid JSON", path);
    sm_bpe *b = calloc(1, sizeof *b);
    builder g = {0};
    const cJSON *model = item(root, "model"), *vocab = model ? item(model, "vocab") : NULL;
    const cJSON *merges = model ? item(model, "merges") : NULL, *adds = item(root, "added_tokens");
    if (!b)
        s = sm_fail(SM_ERR_ALLOC, "out of memory");
    else if (!model || !is_type(model, "BPE"))
        s = sm_fail(SM_ERR_UNSUPPORTED, "%s: model type \"%s\" (BPE expected)", path,
                    model ? type_of(model) : "none");
    else if (!cJSON_IsObject(vocab) || (merges && !cJSON_IsArray(merges)))
        s = sm_fail(SM_ERR_FORMAT, "%s: model.vocab must be an object, model.merges a list", path);
    // Ids: the vocabulary's and the added tokens'; the largest sets the size.
    int64_t n = 0;
    const cJSON *e;
    if (s == SM_OK) {
        cJSON_ArrayForEach(e, vocab) {
            if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX - 1) {
                s = sm_fail(SM_ERR_FORMAT, "%s: vocabulary entry \"%s\" has no valid id", path,
                            e->string);
                break;
            }
            if (e->valueint + 1 > n) n = e->valueint + 1;
        }
        cJSON_ArrayForEach(e, adds) {
            const cJSON *id = item(e, "id");
            if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > INT32_MAX - 1 ||
                !cJSON_IsString(item(e, "content"))) {
                s = sm_fail(SM_ERR_FORMAT, "%s: an added token without a valid id and content",
                            path);
                break;
            }
            if (id->valueint + 1 > n) n = id->valueint + 1;
        }
    }
    if (s == SM_OK && n == 0) s = sm_fail(SM_ERR_FORMAT, "%s: empty vocabulary", path);
    // The tables are sized by the largest id, so one id of 2e9 in a small file would allocate
    // gigabytes. Real files number their tokens densely (a few holes at most): refuse ids far
    // past the number of entries before allocating.
    int64_t entries =
        s == SM_OK ? (int64_t)cJSON_GetArraySize(vocab) + cJSON_GetArraySize(adds) : 0;
    int64_t max_ids = 2 * entries + 256;
    if (s == SM_OK && n > max_ids)
        s = sm_fail(SM_ERR_FORMAT,
                    "%s: token id %lld but only %lld vocabulary entries and added tokens (ids "
                    "below %lld accepted)",
                    path, (long long)(n - 1), (long long)entries, (long long)max_ids);
    if (s == SM_OK) s = bld_init(&g, n, path);
    if (s == SM_OK) {
        b->byte_fallback = cJSON_IsTrue(item(model, "byte_fallback"));
        b->fuse_unk = cJSON_IsTrue(item(model, "fuse_unk"));
        b->ignore_merges = cJSON_IsTrue(item(model, "ignore_merges"));
        s = json_normalizer(b, item(root, "normalizer"), path);
    }
    if (s == SM_OK) {
        // SentencePiece-style: byte fallback or a "▁" normalizer; else byte-level.
        b->kind = b->byte_fallback || b->spm_prepend ? BPE_SPM : BPE_BYTE;
        s = json_pretok(b, item(root, "pre_tokenizer"), path);
        if (s == SM_OK && b->kind == BPE_SPM && b->re)
            s = sm_fail(SM_ERR_UNSUPPORTED,
                        "%s: a SentencePiece-style model with a regex pre-tokenizer", path);
    }
    cJSON_ArrayForEach(e, (s == SM_OK ? vocab : NULL)) {
        if ((s = bld_set(&g, e->valueint, e->string, strlen(e->string))) != SM_OK) break;
    }
    cJSON_ArrayForEach(e, (s == SM_OK ? adds : NULL)) {
        const char *c = item(e, "content")->valuestring;
        int64_t id = item(e, "id")->valueint;
        if ((s = bld_set(&g, id, c, strlen(c))) != SM_OK) break;
        g.special[id] = true;
    }
    if (s == SM_OK) s = bld_finish(&g, b);
    if (s == SM_OK) {
        const cJSON *unk = item(model, "unk_token");
        b->unk = cJSON_IsString(unk) ? lookup(b, unk->valuestring, strlen(unk->valuestring)) : -1;
        s = alloc_merges(b, merges ? cJSON_GetArraySize(merges) : 0, path);
    }
    int32_t rank = 0;
    cJSON_ArrayForEach(e, (s == SM_OK ? merges : NULL)) {
        // "a b" (older files) or ["a", "b"].
        const char *l = NULL, *r = NULL;
        size_t ll = 0, rl = 0;
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (sp) l = e->valuestring, ll = (size_t)(sp - l), r = sp + 1, rl = strlen(r);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            l = cJSON_GetArrayItem(e, 0)->valuestring, ll = strlen(l);
            r = cJSON_GetArrayItem(e, 1)->valuestring, rl = strlen(r);
        }
        if (!l) {
            s = sm_fail(SM_ERR_FORMAT, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path,
                        rank);
            break;
        }
        if ((s = add_merge(b, l, ll, r, rl, rank++, path)) != SM_OK) break;
    }
    int32_t bos = s == SM_OK ? json_bos(root, b) : -1;
    bld_free(&g);
    cJSON_Delete(root);
    if (s != SM_OK) {
        sm_bpe_free(b);
        return s;
    }
    return sm_tokenizer_wrap_bpe(b, bos, -1, out);
}

// --- GGUF vocabularies
// ----------------------------------------------------------------------------

static sm_status load_gguf_vocab(const sm_gguf *g, sm_tokenizer **out) {
    *out = NULL;
    const char *path = sm_gguf_path(g), *model;
    sm_status s = sm_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL);
    if (s != SM_OK) return s;
    int64_t n, ntypes = 0, nscores = 0;
    sm_gguf_vtype et;
    if ((s = sm_gguf_get_array(g, "tokenizer.ggml.tokens", &et, &n)) != SM_OK) return s;
    if (et != SM_GGUF_STRING || n <= 0 || n > INT32_MAX)
        return sm_fail(SM_ERR_FORMAT, "%s: tokenizer.ggml.tokens must be a non-empty string array",
                       path);
    bool types = sm_gguf_get_array(g, "tokenizer.ggml.token_type", NULL, &ntypes) == SM_OK;
    bool scores = sm_gguf_get_array(g, "tokenizer.ggml.scores", NULL, &nscores) == SM_OK;
    sm_error_clear();
    if ((types && ntypes != n) || (scores && nscores != n))
        return sm_fail(SM_ERR_FORMAT, "%s: %lld tokens but %lld token types and %lld scores", path,
                       (long long)n, (long long)ntypes, (long long)nscores);
    int64_t v;
    bool spm = !strcmp(model, "llama");
    bool add_bos = spm;
    bool ab;
    if (sm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &ab) == SM_OK) add_bos = ab;
    int32_t bos = -1, eos = -1;
    if (sm_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) == SM_OK && v >= 0 && v < n &&
        add_bos)
        bos = (int32_t)v;
    if (sm_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) == SM_OK && v >= 0 && v < n)
        eos = (int32_t)v;
    sm_error_clear();
    if (spm) {
        // SentencePiece: "▁" -> " " and tokenizer.c's score-greedy merges (llama.cpp's SPM).
        char **pieces = calloc((size_t)n, sizeof *pieces);
        size_t *lens = calloc((size_t)n, sizeof *lens);
        float *sc = calloc((size_t)n, sizeof *sc);
        s = pieces && lens && sc ? SM_OK : sm_fail(SM_ERR_ALLOC, "%s: out of memory", path);
        for (int64_t i = 0; i < n && s == SM_OK; i++) {
            const char *t;
            size_t l, k = 0;
            double f = 0;
            if ((s = sm_gguf_array_str(g, "tokenizer.ggml.tokens", i, &t, &l)) != SM_OK) break;
            if (scores && (s = sm_gguf_array_float(g, "tokenizer.ggml.scores", i, &f)) != SM_OK)
                break;
            sc[i] = (float)f;
            pieces[i] = malloc(l + 1);
            if (!pieces[i]) {
                s = sm_fail(SM_ERR_ALLOC, "%s: out of memory", path);
                break;
            }
            for (size_t j = 0; j < l;)
                if (l - j >= 3 && !memcmp(t + j, SPM_SPACE, 3))
                    pieces[i][k++] = ' ', j += 3;
                else
                    pieces[i][k++] = t[j++];
            lens[i] = k;
        }
        if (s == SM_OK)
            s = sm_tokenizer_from_pieces(n, (const char *const *)pieces, lens, sc, bos, eos, out);
        for (int64_t i = 0; pieces && i < n; i++) free(pieces[i]);
        free(pieces), free(lens), free(sc);
        if (s != SM_OK) sm_error_prefix("%s: ", path);
        return s;
    }
    if (strcmp(model, "gpt2"))
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: tokenizer.ggml.model \"%s\" is not supported (gpt2 or llama)", path,
                       model);
    const char *pre = "default";
    if (sm_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL) != SM_OK) pre = "default";
    sm_error_clear();
    const char *re =
        !strcmp(pre, "default") || !strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2") ? k_re_gpt2
        : !strcmp(pre, "llama3") || !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama-v3") ||
                !strcmp(pre, "smaug-bpe") || !strcmp(pre, "dbrx")
            ? k_re_llama3
        : !strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen") ? k_re_qwen2
                                                                    : NULL;
    if (!re)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: tokenizer.ggml.pre \"%s\" is not supported (default, gpt2, llama-bpe, "
                       "llama3, qwen2)",
                       path, pre);
    sm_bpe *b = calloc(1, sizeof *b);
    builder bl = {0};
    s = b ? bld_init(&bl, n, path) : sm_fail(SM_ERR_ALLOC, "out of memory");
    if (s == SM_OK) {
        b->kind = BPE_BYTE;
        b->unk = -1;
        b->ignore_merges = re == k_re_llama3;
        s = compile_re(b, re, path);
    }
    for (int64_t i = 0; i < n && s == SM_OK; i++) {
        const char *t;
        size_t l;
        int64_t ty = 1;
        if ((s = sm_gguf_array_str(g, "tokenizer.ggml.tokens", i, &t, &l)) != SM_OK) break;
        if (memchr(t, 0, l)) {
            s = sm_fail(SM_ERR_FORMAT, "%s: token %lld holds a NUL byte", path, (long long)i);
            break;
        }
        if (types && (s = sm_gguf_array_int(g, "tokenizer.ggml.token_type", i, &ty)) != SM_OK)
            break;
        if ((s = bld_set(&bl, i, t, l)) != SM_OK) break;
        bl.special[i] = ty == 3 || ty == 4; // control and user-defined tokens match in text
    }
    if (s == SM_OK) s = bld_finish(&bl, b);
    int64_t nm = 0;
    if (s == SM_OK) {
        // A missing key is no merges; clear only that lookup's message, not the refusal's.
        if (sm_gguf_get_array(g, "tokenizer.ggml.merges", &et, &nm) != SM_OK) {
            nm = 0;
            sm_error_clear();
        } else if (et != SM_GGUF_STRING) {
            s = sm_fail(SM_ERR_FORMAT, "%s: tokenizer.ggml.merges is not a string array", path);
        }
    }
    if (s == SM_OK) s = alloc_merges(b, nm, path);
    for (int64_t i = 0; i < nm && s == SM_OK; i++) {
        const char *t, *sp;
        size_t l;
        if ((s = sm_gguf_array_str(g, "tokenizer.ggml.merges", i, &t, &l)) != SM_OK) break;
        sp = memchr(t, ' ', l);
        if (!sp) {
            s = sm_fail(SM_ERR_FORMAT, "%s: merge %lld is not \"a b\"", path, (long long)i);
            break;
        }
        s = add_merge(b, t, (size_t)(sp - t), sp + 1, l - (size_t)(sp - t) - 1, (int32_t)i, path);
    }
    bld_free(&bl);
    if (s != SM_OK) {
        sm_bpe_free(b);
        return s;
    }
    return sm_tokenizer_wrap_bpe(b, bos, eos, out);
}

sm_status sm_tokenizer_load_gguf(const char *path, sm_tokenizer **out) {
    *out = NULL;
    sm_gguf *g;
    sm_status s = sm_gguf_open(path, &g);
    if (s != SM_OK) return s;
    s = load_gguf_vocab(g, out);
    sm_gguf_close(g);
    return s;
}
