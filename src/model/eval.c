// Perplexity and KL divergence as llama.cpp's llama-perplexity computes them, and the file of
// base log-probabilities that a KL-divergence comparison reads.
#include "model.h"

#include <errno.h>
#include <math.h>
#include <string.h>

sm_status sm_eval_logprobs(const sm_model *m, sm_context *c, const int32_t *tokens, int64_t n,
                           float *logp) {
    const sm_model_info *f = &m->info;
    sm_status s = sm_context_rewind(c, 0);
    if (s == SM_OK) s = sm_context_forward(c, tokens, n, SM_LOGITS_ALL, logp);
    if (s != SM_OK) return s;
    int64_t V = f->vocab_size;
    for (int64_t t = 0; t < n; t++) {
        float *row = logp + t * V; // (vocab)
        double lse = sm_logsumexp(row, V);
        if (!isfinite(lse))
            return sm_fail(SM_ERR_NUMERIC, "eval: the logits of position %lld are not finite",
                           (long long)t);
        for (int64_t v = 0; v < V; v++) row[v] = (float)((double)row[v] - lse);
    }
    return SM_OK;
}

double sm_eval_add(sm_eval_stats *s, const float *logp, const float *base, int64_t vocab,
                   int32_t target) {
    SM_ASSERT(target >= 0 && target < vocab);
    // Renormalised in double: the F32 rows sum to 1 only to rounding.
    double lse = sm_logsumexp(logp, vocab), nll = lse - (double)logp[target];
    s->count++;
    s->nll += nll;
    s->nll2 += nll * nll;
    if (!base) return 0;
    double lse_b = sm_logsumexp(base, vocab), kld = 0;
    for (int64_t v = 0; v < vocab; v++) {
        double lb = (double)base[v] - lse_b, lm = (double)logp[v] - lse;
        double pb = exp(lb);
        if (pb > 0) kld += pb * (lb - lm); // p log p -> 0 as p -> 0
    }
    s->kld_count++;
    s->kld += kld;
    s->kld2 += kld * kld;
    if (s->kld_count == 1 || kld > s->kld_max) s->kld_max = kld;
    s->nll_base += lse_b - (double)base[target];
    s->top1_same += sm_argmax(logp, vocab) == sm_argmax(base, vocab);
    return kld;
}

void sm_eval_summarize(const sm_eval_stats *s, sm_eval_summary *o) {
    double n = (double)s->count;
    *o = (sm_eval_summary){.count = s->count};
    o->nll = s->count ? s->nll / n : NAN;
    o->ppl = exp(o->nll);
    // llama-perplexity: ppl * sqrt((E[x^2] - E[x]^2) / (count - 1)).
    double var = s->count ? s->nll2 / n - o->nll * o->nll : NAN;
    o->ppl_err = s->count > 1 && var > 0 ? o->ppl * sqrt(var / (n - 1)) : NAN;
    o->nll_base = o->ppl_base = o->dnll = o->ppl_ratio = NAN;
    o->kld_mean = o->kld_stderr = o->kld_max = o->top1 = NAN;
    if (!s->kld_count) return;
    double k = (double)s->kld_count;
    o->nll_base = s->nll_base / k;
    o->ppl_base = exp(o->nll_base);
    o->dnll = o->nll - o->nll_base;
    o->ppl_ratio = exp(o->dnll);
    o->kld_mean = s->kld / k;
    double kvar = s->kld2 / k - o->kld_mean * o->kld_mean;
    o->kld_stderr = s->kld_count > 1 ? sqrt(fmax(kvar, 0) / (k - 1)) : NAN;
    o->kld_max = s->kld_max;
    o->top1 = (double)s->top1_same / k;
}

// --- the base file
// ---------------------------------------------------------------------------------
//
// Little-endian: a 64-byte header, the tokens int32 (n_chunks, n_ctx), then per chunk the F32
// log-probabilities (n_ctx - 1 - first, vocab) of its scored positions.

#define KLD_MAGIC "SMKLDIV\0"
#define KLD_VERSION 1u
#define KLD_DTYPE_F32 0u

typedef struct kld_header {
    char magic[8];    // "SMKLDIV\0"
    uint32_t version; // 1
    uint32_t dtype;   // 0: F32 log-softmax
    int64_t vocab, n_ctx, n_chunks, first;
    int32_t bos; // -1: none
    uint32_t reserved[3];
} kld_header;
_Static_assert(sizeof(kld_header) == 64, "the header of a KL-divergence base file is 64 bytes");

struct sm_kld_base {
    sm_kld_base_info info;
    int32_t *tokens;    // (n_chunks, n_ctx)
    int64_t rows;       // n_ctx - 1 - first per chunk
    int64_t written;    // chunks appended so far (writing)
    sm_atomic_file out; // writing
    FILE *in;           // reading
    char *path;
};

static int64_t rows_of(const sm_kld_base_info *i) {
    return i->n_ctx - 1 - i->first;
}

// The sizes make sense and the file size they imply fits in 63 bits.
static sm_status check_info(const sm_kld_base_info *i, const char *path) {
    if (i->vocab <= 0 || i->vocab > INT32_MAX || i->n_ctx < 2 || i->n_ctx > INT32_MAX ||
        i->n_chunks <= 0 || i->first < 0 || i->first > i->n_ctx - 2 || i->bos < -1 ||
        i->bos >= i->vocab)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: impossible KL-divergence base: vocab %lld, n_ctx %lld, chunks %lld, "
                       "first %lld, bos %d",
                       path, (long long)i->vocab, (long long)i->n_ctx, (long long)i->n_chunks,
                       (long long)i->first, (int)i->bos);
    double bytes =
        (double)i->n_chunks * ((double)i->n_ctx * 4 + (double)rows_of(i) * (double)i->vocab * 4);
    if (bytes > 0x1p62)
        return sm_fail(SM_ERR_FORMAT, "%s: a KL-divergence base of %.3g bytes is impossible", path,
                       bytes);
    return SM_OK;
}

static sm_kld_base *base_new(const sm_kld_base_info *info, const char *path) {
    sm_kld_base *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->info = *info;
    b->rows = rows_of(info);
    b->path = strdup(path);
    b->tokens = malloc(sizeof(int32_t) * (size_t)(info->n_chunks * info->n_ctx));
    if (!b->path || !b->tokens) {
        free(b->path);
        free(b->tokens);
        free(b);
        return NULL;
    }
    return b;
}

void sm_kld_base_free(sm_kld_base *b) {
    if (!b) return;
    if (b->out.f) sm_atomic_abort(&b->out);
    if (b->in) fclose(b->in);
    free(b->tokens);
    free(b->path);
    free(b);
}

static sm_status write_all(sm_kld_base *b, const void *p, size_t bytes) {
    if (fwrite(p, 1, bytes, b->out.f) == bytes) return SM_OK;
    return sm_fail(SM_ERR_IO, "%s: write failed: %s", b->path, strerror(errno));
}

sm_status sm_kld_base_create(const char *path, const sm_kld_base_info *info, const int32_t *tokens,
                             bool force, sm_kld_base **out) {
    *out = NULL;
    sm_status s = check_info(info, path);
    if (s != SM_OK) return s;
    int64_t nt = info->n_chunks * info->n_ctx;
    for (int64_t i = 0; i < nt; i++)
        if (tokens[i] < 0 || tokens[i] >= info->vocab)
            return sm_fail(SM_ERR_ARG, "%s: token %d at index %lld is outside the vocabulary", path,
                           (int)tokens[i], (long long)i);
    sm_kld_base *b = base_new(info, path);
    if (!b) return sm_fail(SM_ERR_ALLOC, "%s: out of memory", path);
    memcpy(b->tokens, tokens, sizeof(int32_t) * (size_t)nt);
    if ((s = sm_atomic_open(&b->out, path, force)) != SM_OK) {
        sm_kld_base_free(b);
        return s;
    }
    kld_header h = {.version = KLD_VERSION,
                    .dtype = KLD_DTYPE_F32,
                    .vocab = info->vocab,
                    .n_ctx = info->n_ctx,
                    .n_chunks = info->n_chunks,
                    .first = info->first,
                    .bos = info->bos};
    memcpy(h.magic, KLD_MAGIC, 8);
    s = write_all(b, &h, sizeof h);
    if (s == SM_OK) s = write_all(b, tokens, sizeof(int32_t) * (size_t)nt);
    if (s != SM_OK) {
        sm_kld_base_free(b);
        return s;
    }
    *out = b;
    return SM_OK;
}

sm_status sm_kld_base_write(sm_kld_base *b, const float *logp) {
    if (!b->out.f) return sm_fail(SM_ERR_ARG, "%s: not open for writing", b->path);
    if (b->written >= b->info.n_chunks)
        return sm_fail(SM_ERR_ARG, "%s: all %lld chunks are written already", b->path,
                       (long long)b->info.n_chunks);
    sm_status s = write_all(b, logp, sizeof(float) * (size_t)(b->rows * b->info.vocab));
    if (s == SM_OK) b->written++;
    return s;
}

sm_status sm_kld_base_commit(sm_kld_base *b) {
    sm_status s;
    if (!b->out.f)
        s = sm_fail(SM_ERR_ARG, "%s: not open for writing", b->path);
    else if (b->written != b->info.n_chunks)
        s = sm_fail(SM_ERR_ARG, "%s: %lld of %lld chunks written", b->path, (long long)b->written,
                    (long long)b->info.n_chunks);
    else
        s = sm_atomic_commit(&b->out); // also on failure the temporary file is gone
    sm_kld_base_free(b);
    return s;
}

sm_status sm_kld_base_open(const char *path, sm_kld_base **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sm_fail(SM_ERR_IO, "%s: %s", path, strerror(errno));
    kld_header h;
    sm_status s = SM_OK;
    if (fread(&h, 1, sizeof h, f) != sizeof h || memcmp(h.magic, KLD_MAGIC, 8) != 0)
        s = sm_fail(SM_ERR_FORMAT, "%s: not a structmat KL-divergence base file", path);
    else if (h.version != KLD_VERSION || h.dtype != KLD_DTYPE_F32)
        s = sm_fail(SM_ERR_UNSUPPORTED, "%s: KL-divergence base version %u, dtype %u (1, 0 known)",
                    path, h.version, h.dtype);
    sm_kld_base_info info = {h.vocab, h.n_ctx, h.n_chunks, h.first, h.bos};
    if (s == SM_OK) s = check_info(&info, path);
    if (s == SM_OK) {
        // The size must be exactly what the header implies (a cut-off file is refused here,
        // not halfway through a comparison).
        long long want = (long long)sizeof h +
                         info.n_chunks * (info.n_ctx * 4 + rows_of(&info) * info.vocab * 4);
        off_t got;
        if (fseeko(f, 0, SEEK_END) != 0 || (got = ftello(f)) < 0)
            s = sm_fail(SM_ERR_IO, "%s: %s", path, strerror(errno));
        else if ((long long)got != want)
            s = sm_fail(SM_ERR_FORMAT, "%s: %lld bytes, the header implies %lld (truncated?)", path,
                        (long long)got, want);
    }
    sm_kld_base *b = NULL;
    if (s == SM_OK && !(b = base_new(&info, path)))
        s = sm_fail(SM_ERR_ALLOC, "%s: out of memory", path);
    if (s == SM_OK) {
        size_t nt = (size_t)(info.n_chunks * info.n_ctx);
        if (fseeko(f, (off_t)sizeof h, SEEK_SET) != 0 ||
            fread(b->tokens, sizeof(int32_t), nt, f) != nt)
            s = sm_fail(SM_ERR_IO, "%s: short read", path);
        for (size_t i = 0; i < nt && s == SM_OK; i++)
            if (b->tokens[i] < 0 || b->tokens[i] >= info.vocab)
                s = sm_fail(SM_ERR_FORMAT, "%s: token %d at index %zu is outside the vocabulary",
                            path, (int)b->tokens[i], i);
    }
    if (s != SM_OK) {
        sm_kld_base_free(b);
        fclose(f);
        return s;
    }
    b->in = f;
    *out = b;
    return SM_OK;
}

void sm_kld_base_get_info(const sm_kld_base *b, sm_kld_base_info *info) {
    *info = b->info;
}

const int32_t *sm_kld_base_tokens(const sm_kld_base *b) {
    return b->tokens;
}

sm_status sm_kld_base_read(sm_kld_base *b, int64_t chunk, float *logp) {
    if (!b->in) return sm_fail(SM_ERR_ARG, "%s: not open for reading", b->path);
    if (chunk < 0 || chunk >= b->info.n_chunks)
        return sm_fail(SM_ERR_ARG, "%s: no chunk %lld (0..%lld)", b->path, (long long)chunk,
                       (long long)b->info.n_chunks - 1);
    size_t n = (size_t)(b->rows * b->info.vocab);
    off_t off = (off_t)sizeof(kld_header) + (off_t)(b->info.n_chunks * b->info.n_ctx * 4) +
                (off_t)chunk * (off_t)(n * sizeof(float));
    if (fseeko(b->in, off, SEEK_SET) != 0 || fread(logp, sizeof(float), n, b->in) != n)
        return sm_fail(SM_ERR_IO, "%s: short read in chunk %lld", b->path, (long long)chunk);
    for (size_t i = 0; i < n; i++)
        if (isnan(logp[i]) || logp[i] > 0)
            return sm_fail(SM_ERR_FORMAT, "%s: chunk %lld holds %g, not a log-probability", b->path,
                           (long long)chunk, (double)logp[i]);
    return SM_OK;
}
