// structmat calibrate MODEL -f FILE [--tokens N] [-c CTX] [--no-bos] [-o OUT] [--force] [--json]
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "structmat_model.h"

#define DEFAULT_TOKENS 32768
#define DEFAULT_CTX 256
#define DEFAULT_OUT "stats.safetensors"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: structmat calibrate MODEL -f FILE [options]\n\n"
        "Runs the model on a calibration text and writes, for every distinct linear input (q/k/v\n"
        "share one, gate/up share one; o, down and lm_head each have their own), the Gram matrix\n"
        "H = sum of x x^T over the tokens, the per-channel sums of x^2 and the per-channel max\n"
        "|x|, accumulated in double (layout in docs/format.md). `fit --calib` reads the file to\n"
        "fit each matrix to ||X (W - W_hat)^T||_F instead of ||W - W_hat||_F.\n\n"
        "The text is tokenized with the model's tokenizer and run in consecutive chunks of CTX\n"
        "tokens, each from an empty cache, until N tokens have been run (the last chunk may be\n"
        "shorter). When the tokenizer has a BOS token, every chunk starts with it (it is "
        "prepended:\n"
        "a chunk holds BOS + CTX-1 text tokens, and the BOS positions count in N).\n\n"
        "  -f, --text FILE   calibration text\n"
        "  --tokens N        tokens to run (default %d, or the whole text when shorter)\n"
        "  -c, --ctx CTX     tokens per chunk (default %d, or the model's context if smaller)\n"
        "  --no-bos          no BOS at the start of each chunk\n"
        "  -o FILE           output (default %s)\n"
        "  --force           replace FILE if it exists\n"
        "  --json            one JSON object: output, model, text, text_bytes, tokens, chunks,\n"
        "                    ctx, bos, inputs, seconds, tokens_per_second, file_bytes\n"
        "  --threads N       threads (default: all cores)\n"
        "  --seed S          accepted for uniformity; calibration is deterministic\n\n"
        "examples:\n"
        "  structmat calibrate models/shakespeare-llama-3m -f data/tinyshakespeare.txt \\\n"
        "      --tokens 32768 -o shakespeare.calib.safetensors\n"
        "  structmat fit models/shakespeare-llama-3m --all --spec lowrank:ratio=0.5 \\\n"
        "      --calib shakespeare.calib.safetensors\n",
        DEFAULT_TOKENS, DEFAULT_CTX, DEFAULT_OUT);
}

static bool parse_count(const char *s, int64_t *out) {
    char *end;
    if (!s || !(*s >= '0' && *s <= '9')) return false;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno || v < 1) return false;
    *out = v;
    return true;
}

typedef struct calib_opts {
    cli_common c;
    const char *model, *text;
    int64_t tokens, ctx; // 0: default
    bool no_bos;
} calib_opts;

// Everything one run holds, freed in one place.
typedef struct run {
    sm_model *m;
    sm_tokenizer *tok;
    sm_calib *cal;
    char *text;
    int32_t *stream; // (n_stream) the text's tokens, no BOS
    int32_t *chunk;  // (ctx)
} run;

static void run_free(run *r) {
    sm_calib_free(r->cal);
    sm_tokenizer_free(r->tok);
    sm_model_free(r->m);
    free(r->text), free(r->stream), free(r->chunk);
}

// The bytes of the text that the first n tokens of the stream cover: what they decode to (the
// first piece's leading space is the tokenizer's own prefix when the vocabulary has a BOS, as
// decoding after BOS drops it). Byte-level: n.
static int64_t covered_bytes(const sm_tokenizer *tok, const int32_t *ids, int64_t n,
                             int64_t n_stream, size_t len) {
    if (n == n_stream) return (int64_t)len;
    int64_t bytes = 0;
    int32_t prev = sm_tokenizer_bos(tok);
    for (int64_t i = 0; i < n; i++) {
        size_t l;
        sm_tokenizer_decode(tok, prev, ids[i], &l);
        bytes += (int64_t)l;
        prev = ids[i];
    }
    return bytes < (int64_t)len ? bytes : (int64_t)len;
}

static int calibrate(const calib_opts *o) {
    const char *out = o->c.out ? o->c.out : DEFAULT_OUT;
    if (cli_check_output("calibrate", out, o->c.force)) return 1;
    run r = {0};
    int rc = 0;
    size_t len = 0;
    int64_t n_stream = 0;
    sm_model_info f;
    if (sm_model_load(o->model, &r.m) != SM_OK) {
        rc = cli_fail("calibrate", NULL);
        goto done;
    }
    sm_model_get_info(r.m, &f);
    if (sm_tokenizer_load_for_model(o->model, r.m, &r.tok) != SM_OK) {
        rc = cli_fail("calibrate", "-f needs the model's tokenizer");
        goto done;
    }
    int64_t ctx = o->ctx ? o->ctx : f.max_seq_len < DEFAULT_CTX ? f.max_seq_len : DEFAULT_CTX;
    if (ctx > f.max_seq_len) {
        fprintf(stderr, "structmat calibrate: -c %lld exceeds the model's context of %lld\n",
                (long long)ctx, (long long)f.max_seq_len);
        rc = 1;
        goto done;
    }
    int32_t bos = o->no_bos ? -1 : sm_tokenizer_bos(r.tok);
    int64_t per = ctx - (bos >= 0); // text tokens per chunk
    if (per < 1) {
        fprintf(stderr, "structmat calibrate: -c 1 leaves no room for text after BOS (use -c 2 "
                        "or more, or --no-bos)\n");
        rc = 1;
        goto done;
    }
    if (sm_read_file(o->text, &r.text, &len, (size_t)1 << 31) != SM_OK) {
        rc = cli_fail("calibrate", NULL);
        goto done;
    }
    if (len == 0) {
        fprintf(stderr, "structmat calibrate: %s: the text is empty\n", o->text);
        rc = 1;
        goto done;
    }
    if (sm_tokenizer_encode(r.tok, r.text, len, false, &r.stream, &n_stream) != SM_OK) {
        rc = cli_fail("calibrate", o->text);
        goto done;
    }
    // Positions the whole text would take: its tokens plus a BOS per chunk.
    int64_t whole = n_stream + (bos >= 0) * ((n_stream + per - 1) / per);
    int64_t N = o->tokens ? o->tokens : DEFAULT_TOKENS;
    if (N > whole) {
        if (o->tokens)
            fprintf(stderr, "calibrate: --tokens %lld, but %s gives %lld: using %lld\n",
                    (long long)o->tokens, o->text, (long long)whole, (long long)whole);
        N = whole;
    }
    if (!(r.chunk = malloc(sizeof(int32_t) * (size_t)ctx))) {
        rc = cli_fail("calibrate", "out of memory");
        goto done;
    }
    if (sm_calib_init(r.m, ctx, &r.cal) != SM_OK) {
        rc = cli_fail("calibrate", NULL);
        goto done;
    }
    sm_set_threads(o->c.threads);
    sm_progress pr;
    sm_progress_init(&pr, "calibrate", N);
    double t0 = sm_now();
    int64_t done = 0, used = 0, chunks = 0; // positions run, text tokens used, chunks
    char item[64];
    while (done < N) {
        int64_t take = N - done < ctx ? N - done : ctx;
        int64_t ntext = take - (bos >= 0);
        if (ntext > n_stream - used) ntext = n_stream - used;
        if (ntext < 1) break; // a chunk with nothing but BOS
        if (bos >= 0) r.chunk[0] = bos;
        memcpy(r.chunk + (bos >= 0), r.stream + used, sizeof(int32_t) * (size_t)ntext);
        snprintf(item, sizeof item, "chunk %lld", (long long)chunks + 1);
        sm_progress_step(&pr, done, item);
        if (sm_calib_run(r.cal, r.chunk, ntext + (bos >= 0)) != SM_OK) {
            sm_progress_end(&pr);
            rc = cli_fail("calibrate", NULL);
            goto done;
        }
        done += ntext + (bos >= 0), used += ntext, chunks++;
    }
    sm_progress_step(&pr, done, NULL);
    sm_progress_end(&pr);
    double secs = sm_now() - t0;
    int64_t end = covered_bytes(r.tok, r.stream, used, n_stream, len);
    sm_calib_source src = {.model = o->model,
                           .text = o->text,
                           .text_begin = 0,
                           .text_end = end,
                           .ctx = ctx,
                           .chunks = chunks,
                           .bos = bos};
    if (sm_calib_save(r.cal, out, &src, o->c.force) != SM_OK) {
        rc = cli_fail("calibrate", NULL);
        goto done;
    }
    struct stat sb;
    long long fbytes = stat(out, &sb) == 0 ? (long long)sb.st_size : -1;
    double tps = secs > 0 ? (double)done / secs : 0;
    if (o->c.json) {
        printf("{\"output\":");
        cli_json_str(stdout, out);
        printf(",\"model\":");
        cli_json_str(stdout, o->model);
        printf(",\"text\":");
        cli_json_str(stdout, o->text);
        printf(",\"text_bytes\":[0,%lld],\"tokens\":%lld,\"chunks\":%lld,\"ctx\":%lld,\"bos\":%d,"
               "\"inputs\":%d,\"seconds\":%.6g,\"tokens_per_second\":%.6g,\"file_bytes\":%lld}\n",
               (long long)end, (long long)done, (long long)chunks, (long long)ctx, (int)bos,
               sm_calib_count(r.cal), secs, tps, fbytes);
    } else {
        printf("calibrate: %lld tokens (%lld chunks of up to %lld, %s) from bytes 0-%lld of %s\n"
               "%d linear inputs, %.2f s (%.0f tokens/s); wrote %s (%.1f MB)\n",
               (long long)done, (long long)chunks, (long long)ctx,
               bos >= 0 ? "each starting with BOS" : "no BOS", (long long)end, o->text,
               sm_calib_count(r.cal), secs, tps, out, (double)fbytes / 1e6);
    }
done:
    run_free(&r);
    return rc;
}

int cmd_calibrate(int argc, char **argv) {
    calib_opts o = {0};
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&o.c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "-f") == 0 || strcmp(a, "--text") == 0) {
            if (!(o.text = cli_value(argc, argv, &i))) return 2;
        } else if (strcmp(a, "--tokens") == 0 || strcmp(a, "-c") == 0 || strcmp(a, "--ctx") == 0) {
            const char *v = cli_value(argc, argv, &i);
            if (!v) return 2;
            if (!parse_count(v, strcmp(a, "--tokens") == 0 ? &o.tokens : &o.ctx)) {
                fprintf(stderr, "structmat calibrate: %s needs a positive integer, not \"%s\"\n", a,
                        v);
                return 2;
            }
        } else if (strcmp(a, "--no-bos") == 0) {
            o.no_bos = true;
        } else if (a[0] == '-') {
            fprintf(stderr, "structmat calibrate: unknown option %s\n", a);
            return 2;
        } else if (!o.model) {
            o.model = a;
        } else {
            fprintf(stderr, "structmat calibrate: one MODEL only\n");
            return 2;
        }
    }
    if (!o.model || !o.text) {
        fprintf(stderr, "structmat calibrate: need MODEL and -f FILE\n\n");
        usage(stderr);
        return 2;
    }
    return calibrate(&o);
}
