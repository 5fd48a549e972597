// structmat eval MODEL (-f FILE | --ids-file FILE) [-c N] [--chunks K] [--score second-half|all]
//                [--bos|--no-bos] [--kl-divergence-base BASE [--kl-divergence]] [--json]
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "structmat_model.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: structmat eval MODEL (-f FILE | --ids-file FILE) [options]\n"
        "       structmat eval MODEL -f FILE --kl-divergence-base BASE        (save base logits)\n"
        "       structmat eval MODEL --kl-divergence-base BASE --kl-divergence  (compare)\n\n"
        "Perplexity as llama.cpp's llama-perplexity computes it: the token stream is cut into\n"
        "non-overlapping chunks of N tokens (the rest is dropped), each run from an empty cache;\n"
        "the logits at positions first..N-2 of a chunk predict the tokens at first+1..N-1, with\n"
        "first = N/2 (second-half, N-1-N/2 tokens per chunk) or 0 (all, N-1 tokens per chunk).\n"
        "When BOS is used it replaces each chunk's first token, as in llama-perplexity, so it\n"
        "takes one of the N positions. Prints PPL (with llama-perplexity's +/-), the mean NLL\n"
        "in nats per token, bits per byte = total NLL / ln 2 / the bytes of the scored tokens\n"
        "(each predicted token's text, as the tokenizer decodes it: 1 per token for byte-level\n"
        "models) and tokens/s of the evaluation (prefill: every chunk one batch).\n\n"
        "  -f, --text FILE         text to evaluate, tokenized with the model's tokenizer\n"
        "  --ids-file FILE         token ids instead, separated by whitespace or commas\n"
        "  -c, --ctx N             tokens per chunk (default 512, or the model's context if\n"
        "                          smaller)\n"
        "  --chunks K              only the first K chunks (default: all)\n"
        "  --score MODE            second-half (default, llama-perplexity) or all\n"
        "  --bos, --no-bos         BOS at the start of each chunk (default: when the tokenizer\n"
        "                          or, with --ids-file and no tokenizer, the model defines one)\n"
        "  --kl-divergence-base BASE\n"
        "                          without --kl-divergence: write the log-probabilities of the\n"
        "                          scored positions and the tokens to BASE (refused if it exists,\n"
        "                          unless --force); with it: compare this model against BASE\n"
        "  --kl-divergence         mean KLD(base || model) +/- its standard error, median, 99th\n"
        "                          percentile and maximum, top-1 agreement, PPL ratio\n"
        "                          (this / base) and the NLL difference; the tokens come from\n"
        "                          BASE (a -f/--ids-file given as well must give the same ones)\n"
        "  --json                  one JSON object: ppl, ppl_err, nll, tokens_scored, bytes,\n"
        "                          bpb, tokens_per_second, seconds, ctx, chunks, score, bos;\n"
        "                          comparing also kld_mean, kld_stderr, kld_median, kld_q99,\n"
        "                          kld_max, top1_agreement, nll_base, ppl_base, ppl_ratio, dnll\n"
        "  --threads N             threads (default: all cores)\n"
        "  --max-memory SIZE       refuse, with an error, library allocations past SIZE in all\n"
        "                          (500MB, 2GB, 1.5GiB; memory-mapped checkpoints do not count)\n"
        "  --seed S                accepted for uniformity; eval is deterministic\n\n"
        "examples:\n"
        "  structmat eval models/shakespeare-llama-3m -f val.txt -c 256\n"
        "  structmat eval models/shakespeare-llama-3m -f val.txt -c 256 --kl-divergence-base "
        "b.kld\n"
        "  structmat eval q4-model --kl-divergence-base b.kld --kl-divergence --json\n");
}

typedef struct eval_opts {
    cli_common c;
    const char *model, *text, *ids_file, *base;
    int64_t ctx, chunks; // 0: default
    int score;           // -1: default, 0: second-half, 1: all
    int bos;             // -1: default, 0: --no-bos, 1: --bos
    bool kld;
} eval_opts;

static bool parse_i64(const char *s, int64_t lo, int64_t *out) {
    char *end;
    if (!s || !(*s >= '0' && *s <= '9')) return false;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno || v < lo) return false;
    *out = v;
    return true;
}

// Reads whitespace- or comma-separated token ids; each must be in [0, vocab).
static int read_ids(const char *path, int64_t vocab, int32_t **ids, int64_t *n) {
    char *text = NULL;
    size_t len;
    if (sm_read_file(path, &text, &len, (size_t)1 << 31) != SM_OK) return cli_fail("eval", NULL);
    int32_t *out = malloc(sizeof(int32_t) * (len / 2 + 1));
    int64_t k = 0;
    if (!out) {
        free(text);
        return cli_fail("eval", "out of memory");
    }
    for (char *p = text; *p;) {
        if (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long long v = *p >= '0' && *p <= '9' ? strtoll(p, &end, 10) : -1;
        if (v < 0 || errno || (*end && !strchr(", \t\r\n", *end))) {
            fprintf(stderr, "structmat eval: %s: \"%.12s\" at byte %lld is not a token id\n", path,
                    p, (long long)(p - text));
            free(text), free(out);
            return 1;
        }
        if (v >= vocab) {
            fprintf(stderr,
                    "structmat eval: %s: token id %lld (the %lld-th) is outside the vocabulary "
                    "(0..%lld)\n",
                    path, v, (long long)k + 1, (long long)vocab - 1);
            free(text), free(out);
            return 1;
        }
        out[k++] = (int32_t)v;
        p = end;
    }
    free(text);
    if (k == 0) {
        fprintf(stderr, "structmat eval: %s: no token ids\n", path);
        free(out);
        return 1;
    }
    *ids = out;
    *n = k;
    return 0;
}

// The token stream of the text or ids file (BOS first when used, as llama-perplexity tokenizes).
static int read_tokens(const eval_opts *o, const sm_model_info *info, const sm_tokenizer *tok,
                       bool use_bos, int32_t **ids, int64_t *n) {
    if (o->ids_file) return read_ids(o->ids_file, info->vocab_size, ids, n);
    if (!tok) return cli_fail("eval", "-f needs the model's tokenizer");
    char *text = NULL;
    size_t len;
    if (sm_read_file(o->text, &text, &len, (size_t)1 << 31) != SM_OK) return cli_fail("eval", NULL);
    if (len == 0) {
        fprintf(stderr, "structmat eval: %s: the text is empty\n", o->text);
        free(text);
        return 1;
    }
    double t0 = sm_now();
    sm_status s = sm_tokenizer_encode(tok, text, len, use_bos, ids, n);
    free(text);
    if (s != SM_OK) return cli_fail("eval", o->text);
    fprintf(stderr, "eval: %s: %zu bytes, %lld tokens (%.2f s to tokenize)\n", o->text, len,
            (long long)*n, sm_now() - t0);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Linear interpolation between the order statistics of sorted (n), as llama-perplexity's.
static double percentile(const double *sorted, int64_t n, double q) {
    if (n == 0) return NAN;
    double p = q * (double)(n - 1);
    int64_t i = (int64_t)p;
    if (i >= n - 1) return sorted[n - 1];
    return sorted[i] + (p - (double)i) * (sorted[i + 1] - sorted[i]);
}

static void json_num(const char *key, double v) {
    if (isfinite(v))
        printf(",\"%s\":%.10g", key, v);
    else
        printf(",\"%s\":null", key);
}

// Everything one run needs, freed in one place.
typedef struct run {
    sm_model *m;
    sm_model_info info;
    sm_tokenizer *tok;
    sm_context *ctx;
    sm_kld_base *base; // writing (save) or reading (compare)
    int32_t *stream;   // (n_stream) the text's tokens
    int64_t n_stream;
    int32_t *chunks;  // (n_chunks, N) as evaluated
    float *logp;      // (N, vocab)
    float *base_logp; // (N - 1 - first, vocab) when comparing
    double *klds;     // (n_chunks * rows) when comparing
} run;

static void run_free(run *r) {
    sm_kld_base_free(r->base);
    sm_context_free(r->ctx);
    sm_tokenizer_free(r->tok);
    sm_model_free(r->m);
    free(r->stream), free(r->chunks), free(r->klds);
    sm_free(r->logp), sm_free(r->base_logp);
}

typedef struct plan {
    int64_t N, n_chunks, first;
    int32_t bos; // -1: none
} plan;

// N, chunks, first and BOS from the options, the model and (comparing) the base file; the
// chunk tokens into r->chunks.
static int make_plan(const eval_opts *o, run *r, plan *p) {
    const sm_model_info *f = &r->info;
    int32_t bos_id = r->tok ? sm_tokenizer_bos(r->tok) : f->bos_id;
    if (o->bos == 1 && bos_id < 0) {
        fprintf(stderr, "structmat eval: --bos: the %s defines no BOS token\n",
                r->tok ? "tokenizer" : "model");
        return 1;
    }
    bool use_bos = bos_id >= 0 && o->bos != 0;
    sm_kld_base_info bi = {0};
    bool compare = o->base && o->kld;
    if (compare) {
        if (sm_kld_base_open(o->base, &r->base) != SM_OK) return cli_fail("eval", NULL);
        sm_kld_base_get_info(r->base, &bi);
        if (bi.vocab != f->vocab_size) {
            fprintf(stderr, "structmat eval: %s: a vocabulary of %lld tokens, the model has %lld\n",
                    o->base, (long long)bi.vocab, (long long)f->vocab_size);
            return 1;
        }
        if (o->ctx && o->ctx != bi.n_ctx) {
            fprintf(stderr, "structmat eval: -c %lld, but %s was made with -c %lld\n",
                    (long long)o->ctx, o->base, (long long)bi.n_ctx);
            return 1;
        }
        int64_t first = o->score == 1 ? 0 : bi.n_ctx / 2;
        if (o->score >= 0 && first != bi.first) {
            fprintf(stderr, "structmat eval: --score %s, but %s scores from position %lld\n",
                    o->score ? "all" : "second-half", o->base, (long long)bi.first);
            return 1;
        }
        if (o->bos >= 0 && (o->bos ? bi.bos < 0 : bi.bos >= 0)) {
            fprintf(stderr, "structmat eval: --%s, but %s was made %s BOS\n",
                    o->bos ? "bos" : "no-bos", o->base, bi.bos >= 0 ? "with" : "without");
            return 1;
        }
        p->N = bi.n_ctx, p->first = bi.first, p->bos = bi.bos;
        if (p->N > f->max_seq_len) {
            fprintf(stderr,
                    "structmat eval: %s has chunks of %lld tokens, more than the model's "
                    "context of %lld\n",
                    o->base, (long long)p->N, (long long)f->max_seq_len);
            return 1;
        }
        use_bos = bi.bos >= 0;
    } else {
        int64_t def = f->max_seq_len < 512 ? f->max_seq_len : 512;
        p->N = o->ctx ? o->ctx : def;
        p->first = o->score == 1 ? 0 : p->N / 2;
        p->bos = use_bos ? bos_id : -1;
        if (p->N > f->max_seq_len) {
            fprintf(stderr, "structmat eval: -c %lld exceeds the model's context of %lld\n",
                    (long long)p->N, (long long)f->max_seq_len);
            return 1;
        }
        if (p->N - 1 - p->first < 1) {
            fprintf(stderr, "structmat eval: -c %lld scores no token (need -c >= %d)\n",
                    (long long)p->N, o->score == 1 ? 2 : 3);
            return 1;
        }
    }
    if (o->text || o->ids_file) {
        int rc = read_tokens(o, f, r->tok, use_bos, &r->stream, &r->n_stream);
        if (rc) return rc;
    }
    int64_t avail = compare ? bi.n_chunks : r->n_stream / p->N;
    if (avail == 0) {
        fprintf(stderr,
                "structmat eval: %lld tokens are fewer than one chunk of %lld (-c); give a longer "
                "text or a smaller -c\n",
                (long long)r->n_stream, (long long)p->N);
        return 1;
    }
    if (o->chunks > avail)
        fprintf(stderr, "eval: --chunks %lld, but there are %lld chunks: using %lld\n",
                (long long)o->chunks, (long long)avail, (long long)avail);
    p->n_chunks = o->chunks && o->chunks < avail ? o->chunks : avail;
    r->chunks = malloc(sizeof(int32_t) * (size_t)(p->n_chunks * p->N));
    if (!r->chunks) return cli_fail("eval", "out of memory");
    if (compare) {
        memcpy(r->chunks, sm_kld_base_tokens(r->base),
               sizeof(int32_t) * (size_t)(p->n_chunks * p->N));
    } else {
        for (int64_t i = 0; i < p->n_chunks; i++) {
            memcpy(r->chunks + i * p->N, r->stream + i * p->N, sizeof(int32_t) * (size_t)p->N);
            if (use_bos) r->chunks[i * p->N] = p->bos;
        }
    }
    // Comparing with a text too: its chunks must be the base file's.
    if (compare && r->stream) {
        int64_t have = r->n_stream / p->N < p->n_chunks ? r->n_stream / p->N : p->n_chunks;
        for (int64_t i = 0; i < p->n_chunks; i++)
            for (int64_t j = 0; j < p->N; j++) {
                int32_t want = r->chunks[i * p->N + j];
                int32_t got = i >= have ? -1 : j == 0 && use_bos ? p->bos : r->stream[i * p->N + j];
                if (got == want) continue;
                fprintf(stderr,
                        "structmat eval: the tokens of %s differ from those of %s: chunk %lld, "
                        "position %lld: %d here, %d there%s\n",
                        o->text ? o->text : o->ids_file, o->base, (long long)i, (long long)j,
                        (int)got, (int)want, got < 0 ? " (the text is shorter)" : "");
                return 1;
            }
    }
    if (!compare && o->base) {
        sm_kld_base_info wi = {f->vocab_size, p->N, p->n_chunks, p->first, p->bos};
        if (sm_kld_base_create(o->base, &wi, r->chunks, o->c.force, &r->base) != SM_OK)
            return cli_fail("eval", NULL);
    }
    return 0;
}

static void print_summary(const eval_opts *o, const run *r, const plan *p, const sm_eval_summary *s,
                          int64_t bytes, double secs) {
    int64_t toks = p->n_chunks * p->N;
    double bpb = bytes > 0 ? s->nll * (double)s->count / log(2.0) / (double)bytes : NAN;
    double tps = secs > 0 ? (double)toks / secs : NAN;
    bool compare = o->base && o->kld;
    int64_t nk = compare ? s->count : 0;
    double med = NAN, q99 = NAN;
    if (nk) {
        qsort(r->klds, (size_t)nk, sizeof *r->klds, cmp_double);
        med = percentile(r->klds, nk, 0.5);
        q99 = percentile(r->klds, nk, 0.99);
    }
    const char *score = p->first == 0 ? "all" : "second-half";
    if (o->c.json) {
        printf("{\"model\":");
        cli_json_str(stdout, o->model);
        printf(",\"ctx\":%lld,\"chunks\":%lld,\"score\":\"%s\",\"bos\":%d", (long long)p->N,
               (long long)p->n_chunks, score, (int)p->bos);
        printf(",\"tokens_scored\":%lld", (long long)s->count);
        json_num("nll", s->nll);
        json_num("ppl", s->ppl);
        json_num("ppl_err", s->ppl_err);
        printf(",\"bytes\":%lld", (long long)bytes);
        json_num("bpb", bpb);
        json_num("tokens_per_second", tps);
        json_num("seconds", secs);
        if (compare) {
            json_num("kld_mean", s->kld_mean);
            json_num("kld_stderr", s->kld_stderr);
            json_num("kld_median", med);
            json_num("kld_q99", q99);
            json_num("kld_max", s->kld_max);
            json_num("top1_agreement", s->top1);
            json_num("nll_base", s->nll_base);
            json_num("ppl_base", s->ppl_base);
            json_num("ppl_ratio", s->ppl_ratio);
            json_num("dnll", s->dnll);
        } else if (o->base) {
            printf(",\"kl_divergence_base\":");
            cli_json_str(stdout, o->base);
        }
        printf("}\n");
        return;
    }
    printf("%s: %lld chunks of %lld tokens, scoring %s (%lld tokens), BOS %s\n", o->model,
           (long long)p->n_chunks, (long long)p->N, score, (long long)s->count,
           p->bos >= 0 ? "first in each chunk" : "none");
    printf("PPL = %.4f +/- %.5f\n", s->ppl, s->ppl_err);
    printf("mean NLL = %.6f nats per token", s->nll);
    if (bytes > 0)
        printf(", %.4f bits per byte (%lld bytes)\n", bpb, (long long)bytes);
    else
        printf(" (bits per byte: no tokenizer to count bytes)\n");
    if (compare) {
        printf("KL divergence vs %s: mean %.6f +/- %.6f, median %.6f, 99%% %.6f, max %.6f\n",
               o->base, s->kld_mean, s->kld_stderr, med, q99, s->kld_max);
        printf("top-1 agreement = %.3f%%\n", 100.0 * s->top1);
        printf("PPL(base) = %.4f, PPL ratio = %.6f, ln(PPL ratio) = dNLL = %+.6f\n", s->ppl_base,
               s->ppl_ratio, s->dnll);
    } else if (o->base) {
        printf("wrote %s\n", o->base);
    }
}

static int evaluate(const eval_opts *o) {
    run r = {0};
    int rc = 0;
    double t0 = sm_now();
    if (sm_model_load(o->model, &r.m) != SM_OK) return cli_fail("eval", NULL);
    sm_model_get_info(r.m, &r.info);
    fprintf(stderr, "eval: %s: %lld layers, vocabulary %lld, context %lld (%.2f s to load)\n",
            o->model, (long long)r.info.n_layers, (long long)r.info.vocab_size,
            (long long)r.info.max_seq_len, sm_now() - t0);
    if (sm_tokenizer_load_for_model(o->model, r.m, &r.tok) != SM_OK) {
        r.tok = NULL;
        if (o->text) rc = cli_fail("eval", "-f needs a tokenizer");
        sm_error_clear();
    }
    plan p = {0};
    if (!rc) rc = make_plan(o, &r, &p);
    int64_t V = r.info.vocab_size, rows = p.N - 1 - p.first;
    bool compare = o->base && o->kld;
    if (!rc) {
        r.logp = sm_alloc(sizeof(float) * (size_t)(p.N * V));
        if (compare) {
            r.base_logp = sm_alloc(sizeof(float) * (size_t)(rows * V));
            r.klds = malloc(sizeof(double) * (size_t)(p.n_chunks * rows));
        }
        if (!r.logp || (compare && (!r.base_logp || !r.klds)))
            rc = cli_fail("eval", "out of memory");
    }
    if (!rc && sm_context_init(r.m, p.N, p.N, &r.ctx) != SM_OK) rc = cli_fail("eval", NULL);
    sm_eval_stats st = {0};
    int64_t bytes = 0;
    double secs = 0;
    for (int64_t i = 0; i < p.n_chunks && !rc; i++) {
        const int32_t *chunk = r.chunks + i * p.N; // (N)
        double c0 = sm_now();
        if (sm_eval_logprobs(r.m, r.ctx, chunk, p.N, r.logp) != SM_OK) {
            rc = cli_fail("eval", NULL);
            break;
        }
        secs += sm_now() - c0;
        if (compare && sm_kld_base_read(r.base, i, r.base_logp) != SM_OK) {
            rc = cli_fail("eval", NULL);
            break;
        }
        for (int64_t j = p.first; j < p.N - 1; j++) {
            int32_t target = chunk[j + 1];
            const float *b = compare ? r.base_logp + (j - p.first) * V : NULL;
            double k = sm_eval_add(&st, r.logp + j * V, b, V, target);
            if (compare) r.klds[st.count - 1] = k;
            if (r.tok) {
                size_t len;
                sm_tokenizer_decode(r.tok, -1, target, &len);
                bytes += (int64_t)len;
            }
        }
        if (r.base && !compare && sm_kld_base_write(r.base, r.logp + p.first * V) != SM_OK) {
            rc = cli_fail("eval", NULL);
            break;
        }
        fprintf(stderr, "%s[%lld]%.4f", i ? "," : "", (long long)i + 1, exp(st.nll / st.count));
        if (i == p.n_chunks - 1) fprintf(stderr, "\n");
        fflush(stderr);
    }
    if (!rc && r.base && !compare) {
        sm_status s = sm_kld_base_commit(r.base);
        r.base = NULL;
        if (s != SM_OK) rc = cli_fail("eval", NULL);
    }
    if (!rc) {
        sm_eval_summary sum;
        sm_eval_summarize(&st, &sum);
        fprintf(stderr, "eval: %lld tokens in %.3f s: %.1f tokens/s\n",
                (long long)(p.n_chunks * p.N), secs, (double)(p.n_chunks * p.N) / secs);
        print_summary(o, &r, &p, &sum, bytes, secs);
    }
    run_free(&r);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    eval_opts o = {.score = -1, .bos = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_common_arg(&o.c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (cli_is_help(a)) {
            usage(stdout);
            return 0;
        }
        const char *v = NULL;
        if (!strcmp(a, "-f") || !strcmp(a, "--text")) {
            if (!(o.text = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--ids-file")) {
            if (!(o.ids_file = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx") || !strcmp(a, "--ctx-size")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            if (!parse_i64(v, 1, &o.ctx)) {
                fprintf(stderr, "structmat eval: %s needs a positive integer\n", a);
                return 2;
            }
        } else if (!strcmp(a, "--chunks")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            if (!parse_i64(v, 1, &o.chunks)) {
                fprintf(stderr, "structmat eval: --chunks needs a positive integer\n");
                return 2;
            }
        } else if (!strcmp(a, "--score")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            if (!strcmp(v, "all"))
                o.score = 1;
            else if (!strcmp(v, "second-half"))
                o.score = 0;
            else {
                fprintf(stderr, "structmat eval: --score %s: second-half or all expected\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--bos") || !strcmp(a, "--no-bos")) {
            int want = !strcmp(a, "--bos");
            if (o.bos >= 0 && o.bos != want) {
                fprintf(stderr, "structmat eval: --bos and --no-bos contradict each other\n");
                return 2;
            }
            o.bos = want;
        } else if (!strcmp(a, "--kl-divergence-base")) {
            if (!(o.base = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--kl-divergence")) {
            o.kld = true;
        } else if (!strcmp(a, "--max-memory")) {
            size_t limit;
            if (!(v = cli_value(argc, argv, &i))) return 2;
            if (sm_parse_bytes(v, &limit) != SM_OK) {
                fprintf(stderr, "structmat eval: --max-memory: %s\n", sm_last_error());
                return 2;
            }
            sm_set_alloc_limit(limit);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "structmat eval: unknown option %s\n", a);
            return 2;
        } else if (!o.model) {
            o.model = a;
        } else {
            fprintf(stderr, "structmat eval: one MODEL only (\"%s\" is extra)\n", a);
            return 2;
        }
    }
    if (!o.model) {
        usage(stderr);
        return 2;
    }
    if (o.c.out) {
        fprintf(stderr, "structmat eval: no -o output (--kl-divergence-base BASE writes logits)\n");
        return 2;
    }
    if (o.text && o.ids_file) {
        fprintf(stderr, "structmat eval: give -f or --ids-file, not both\n");
        return 2;
    }
    if (o.kld && !o.base) {
        fprintf(stderr, "structmat eval: --kl-divergence needs --kl-divergence-base BASE\n");
        return 2;
    }
    if (!o.text && !o.ids_file && !(o.base && o.kld)) {
        fprintf(stderr, "structmat eval: need -f FILE or --ids-file FILE\n\n");
        usage(stderr);
        return 2;
    }
    // Refuse a base that cannot be written now, not after the whole evaluation.
    if (o.base && !o.kld && cli_check_output("eval", o.base, o.c.force)) return 1;
    sm_set_threads(o.c.threads);
    return evaluate(&o);
}
