// structmat generate MODEL (--prompt TEXT | --prompt-file FILE | --ids 1,2,3) [-n N] [--temp T]
//                    [--top-p P] [--seed S] [--ignore-eos] [--n-probs K] [--print-ids] [--json]
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "structmat_model.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: structmat generate MODEL (--prompt TEXT | --prompt-file FILE | --ids LIST)\n"
        "                          [options]\n\n"
        "Runs the prompt through the model in one batch (prefill), then samples new tokens one\n"
        "at a time (decode). The new text goes to stdout (the prompt is not repeated); prefill\n"
        "and decode tokens/s go to stderr. Generation stops after -n tokens, at the model's EOS\n"
        "(unless --ignore-eos) and when prompt + new tokens fill the context.\n\n"
        "  --prompt TEXT       the prompt, tokenized with the model's tokenizer (BOS first when\n"
        "                      the tokenizer has one)\n"
        "  --prompt-file FILE  the prompt from a file\n"
        "  --ids LIST          token ids, separated by commas or spaces, used exactly as given\n"
        "                      (no BOS added); models without a tokenizer take only these\n"
        "  -n, --n-predict N   new tokens at most (default -1: until EOS or the context is full)\n"
        "  --temp T            temperature (default 0.8); 0: greedy, ties to the lowest id\n"
        "  --top-p P           nucleus sampling mass in (0, 1) (default 0.95; 1: off)\n"
        "  --seed S            sampler seed (default 24301): the same seed, the same text\n"
        "  --ignore-eos        do not stop at EOS\n"
        "  -c, --ctx N         context length (default: the model's, at most 4096)\n"
        "  --n-probs K         the K most likely next tokens after the prompt, with their\n"
        "                      natural-log probabilities (stderr, or in the JSON)\n"
        "  --print-ids         the new token ids, separated by spaces, instead of text\n"
        "  --json              one JSON object: prompt_tokens, tokens, text, stop (eos, length\n"
        "                      or context), n_probs [{id, logprob}], prefill_tokens_per_second,\n"
        "                      decode_tokens_per_second\n"
        "  --threads N         threads (default: all cores)\n\n"
        "examples:\n"
        "  structmat generate models/shakespeare-llama-3m --prompt \"ROMEO:\" -n 200\n"
        "  structmat generate models/stories260K.bin --ids 1 -n 200 --temp 0 --print-ids\n"
        "  structmat generate models/shakespeare-llama-3m --prompt \"ROMEO:\" -n 0 --n-probs 5 "
        "--json\n");
}

typedef struct gen_opts {
    cli_common c;
    const char *model, *prompt, *prompt_file, *ids;
    int64_t n, ctx, n_probs;
    double temp, top_p;
    bool ignore_eos, print_ids;
} gen_opts;

static bool parse_i64(const char *s, int64_t lo, int64_t *out) {
    char *end;
    if (!s || !*s) return false;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno || v < lo || s[0] == ' ') return false;
    *out = v;
    return true;
}

static bool parse_real(const char *s, double *out) {
    char *end;
    if (!s || !*s || s[0] == ' ') return false;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v)) return false;
    *out = v;
    return true;
}

// "1,2, 3" -> ids (n), each in [0, vocab).
static int parse_ids(const char *list, int64_t vocab, int32_t **ids, int64_t *n) {
    size_t len = strlen(list);
    int32_t *out = malloc(sizeof(int32_t) * (len / 2 + 1));
    int64_t k = 0;
    if (!out) return cli_fail("generate", "out of memory");
    for (const char *p = list; *p;) {
        if (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n') {
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long long v = *p >= '0' && *p <= '9' ? strtoll(p, &end, 10) : -1;
        if (v < 0 || errno || (*end && !strchr(", \t\n", *end))) {
            fprintf(stderr, "structmat generate: --ids: \"%s\" is not a token id\n", p);
            free(out);
            return 1;
        }
        if (v >= vocab) {
            fprintf(
                stderr,
                "structmat generate: --ids: token id %lld is outside the vocabulary (0..%lld)\n", v,
                (long long)vocab - 1);
            free(out);
            return 1;
        }
        out[k++] = (int32_t)v;
        p = end;
    }
    if (k == 0) {
        fprintf(stderr, "structmat generate: --ids: no token ids\n");
        free(out);
        return 1;
    }
    *ids = out;
    *n = k;
    return 0;
}

// A byte string as a JSON string: control characters escaped, valid UTF-8 kept, any other byte
// as U+FFFD (a byte-level model may emit half a character).
static void json_bytes(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
            i++;
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            fputc(c, f);
            i++;
        } else {
            size_t k = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
            bool ok = k && i + k <= n;
            for (size_t j = 1; ok && j < k; j++) ok = ((unsigned char)s[i + j] & 0xC0) == 0x80;
            if (ok) {
                fwrite(s + i, 1, k, f);
                i += k;
            } else {
                fputs("\\ufffd", f);
                i++;
            }
        }
    }
    fputc('"', f);
}

typedef struct gen_state {
    sm_model *m;
    sm_model_info info;
    sm_tokenizer *tok;
    sm_context *ctx;
    sm_sampler *smp;
    int32_t *prompt; // (n_prompt)
    int64_t n_prompt;
    int32_t *out; // (cap) new ids
    char *text;   // the new text (text_len bytes)
    size_t text_len, text_cap;
    float *logits; // (vocab)
} gen_state;

static void state_free(gen_state *g) {
    sm_sampler_free(g->smp);
    sm_context_free(g->ctx);
    sm_tokenizer_free(g->tok);
    sm_model_free(g->m);
    free(g->prompt), free(g->out), free(g->text), free(g->logits);
}

static int append_text(gen_state *g, const char *p, size_t n) {
    if (g->text_len + n + 1 > g->text_cap) {
        size_t cap = 2 * (g->text_len + n + 1) + 64;
        char *t = realloc(g->text, cap);
        if (!t) return 1;
        g->text = t, g->text_cap = cap;
    }
    memcpy(g->text + g->text_len, p, n);
    g->text_len += n;
    g->text[g->text_len] = 0;
    return 0;
}

static int read_prompt(const gen_opts *o, gen_state *g) {
    if (o->ids) return parse_ids(o->ids, g->info.vocab_size, &g->prompt, &g->n_prompt);
    if (!g->tok) return cli_fail("generate", "a text prompt needs a tokenizer (or give --ids)");
    char *file = NULL;
    size_t len;
    const char *text = o->prompt;
    if (o->prompt_file) {
        if (sm_read_file(o->prompt_file, &file, &len, (size_t)1 << 30) != SM_OK)
            return cli_fail("generate", NULL);
        text = file;
    } else {
        len = strlen(text);
    }
    if (len == 0) {
        fprintf(stderr, "structmat generate: the prompt%s%s is empty\n",
                o->prompt_file ? " in " : "", o->prompt_file ? o->prompt_file : "");
        free(file);
        return 1;
    }
    sm_status s = sm_tokenizer_encode(g->tok, text, len, true, &g->prompt, &g->n_prompt);
    free(file);
    return s == SM_OK ? 0 : cli_fail("generate", "prompt");
}

static void print_json(const gen_opts *o, const gen_state *g, int64_t n_out, const char *stop,
                       const int32_t *top, int64_t k, double lse, double pre_tps, double dec_tps) {
    printf("{\"model\":");
    cli_json_str(stdout, o->model);
    printf(",\"prompt_tokens\":%lld,\"tokens\":[", (long long)g->n_prompt);
    for (int64_t i = 0; i < n_out; i++) printf("%s%d", i ? "," : "", (int)g->out[i]);
    printf("],\"text\":");
    if (g->tok)
        json_bytes(stdout, g->text ? g->text : "", g->text_len);
    else
        printf("null");
    printf(",\"stop\":\"%s\",\"n_probs\":[", stop);
    for (int64_t i = 0; i < k; i++)
        printf("%s{\"id\":%d,\"logprob\":%.9g}", i ? "," : "", (int)top[i],
               (double)g->logits[top[i]] - lse);
    printf("]");
    if (isfinite(pre_tps))
        printf(",\"prefill_tokens_per_second\":%.6g", pre_tps);
    else
        printf(",\"prefill_tokens_per_second\":null");
    if (isfinite(dec_tps))
        printf(",\"decode_tokens_per_second\":%.6g", dec_tps);
    else
        printf(",\"decode_tokens_per_second\":null");
    printf("}\n");
}

static int generate(const gen_opts *o) {
    gen_state g = {0};
    int rc = 0;
    double t0 = sm_now();
    if (sm_model_load(o->model, &g.m) != SM_OK) return cli_fail("generate", NULL);
    sm_model_get_info(g.m, &g.info);
    fprintf(stderr, "generate: %s: %lld layers, vocabulary %lld, context %lld (%.2f s to load)\n",
            o->model, (long long)g.info.n_layers, (long long)g.info.vocab_size,
            (long long)g.info.max_seq_len, sm_now() - t0);
    if (sm_tokenizer_load_for_model(o->model, g.m, &g.tok) != SM_OK) {
        g.tok = NULL;
        if (!o->ids) rc = cli_fail("generate", NULL);
        sm_error_clear();
    }
    bool print_ids = o->print_ids;
    if (!rc && !g.tok && !print_ids && !o->c.json) {
        fprintf(stderr, "generate: no tokenizer for this model: printing token ids\n");
        print_ids = true;
    }
    if (!rc) rc = read_prompt(o, &g);
    if (!rc && o->ctx > g.info.max_seq_len) {
        fprintf(stderr, "structmat generate: -c %lld exceeds the model's context of %lld\n",
                (long long)o->ctx, (long long)g.info.max_seq_len);
        rc = 1;
    }
    if (!rc && sm_context_init(g.m, o->ctx, 0, &g.ctx) != SM_OK) rc = cli_fail("generate", NULL);
    int64_t n_ctx = rc ? 0 : sm_context_size(g.ctx);
    if (!rc && g.n_prompt > n_ctx) {
        fprintf(stderr,
                "structmat generate: the prompt has %lld tokens, more than the context of %lld\n",
                (long long)g.n_prompt, (long long)n_ctx);
        rc = 1;
    }
    if (!rc && o->n_probs > g.info.vocab_size) {
        fprintf(stderr, "structmat generate: --n-probs %lld exceeds the vocabulary of %lld\n",
                (long long)o->n_probs, (long long)g.info.vocab_size);
        rc = 1;
    }
    sm_sampler_params sp = {
        .temperature = (float)o->temp, .top_p = (float)o->top_p, .seed = o->c.seed};
    if (!rc && sm_sampler_init(&sp, g.info.vocab_size, &g.smp) != SM_OK)
        rc = cli_fail("generate", NULL);
    int64_t room = n_ctx - g.n_prompt, max_new = o->n < 0 ? room : o->n < room ? o->n : room;
    if (!rc) {
        g.logits = malloc(sizeof(float) * (size_t)g.info.vocab_size);
        g.out = malloc(sizeof(int32_t) * (size_t)(max_new > 0 ? max_new : 1));
        if (!g.logits || !g.out) rc = cli_fail("generate", "out of memory");
    }
    if (rc) {
        state_free(&g);
        return rc;
    }

    double p0 = sm_now();
    if (sm_context_forward(g.ctx, g.prompt, g.n_prompt, SM_LOGITS_LAST, g.logits) != SM_OK) {
        state_free(&g);
        return cli_fail("generate", NULL);
    }
    double pre_s = sm_now() - p0;
    int32_t top[64], *topk = o->n_probs <= 64 ? top : malloc(sizeof(int32_t) * (size_t)o->n_probs);
    double lse = sm_logsumexp(g.logits, g.info.vocab_size);
    if (topk) sm_topk(g.logits, g.info.vocab_size, (int)o->n_probs, topk);
    if (!o->c.json && o->n_probs > 0 && topk) {
        fprintf(stderr, "top %lld next tokens after the prompt (id, ln p, piece):\n",
                (long long)o->n_probs);
        for (int64_t i = 0; i < o->n_probs; i++) {
            size_t len = 0;
            const char *piece =
                g.tok ? sm_tokenizer_decode(g.tok, g.prompt[g.n_prompt - 1], topk[i], &len) : "";
            fprintf(stderr, "  %6d %10.6f  \"", (int)topk[i], (double)g.logits[topk[i]] - lse);
            for (size_t j = 0; j < len; j++)
                fprintf(stderr, (unsigned char)piece[j] < 0x20 ? "\\x%02x" : "%c",
                        (unsigned char)piece[j]);
            fprintf(stderr, "\"\n");
        }
    }

    int32_t eos = g.info.eos_id >= 0 ? g.info.eos_id : g.tok ? sm_tokenizer_eos(g.tok) : -1;
    const char *stop = max_new == room && (o->n < 0 || o->n > room) ? "context" : "length";
    int64_t n_out = 0, n_dec = 0;
    double dec_s = 0;
    int32_t prev = g.prompt[g.n_prompt - 1];
    while (n_out < max_new && !rc) {
        int32_t next = sm_sampler_sample(g.smp, g.logits);
        if (next == eos && !o->ignore_eos) {
            stop = "eos";
            break;
        }
        g.out[n_out++] = next;
        if (print_ids && !o->c.json) {
            printf("%s%d", n_out > 1 ? " " : "", (int)next);
        } else if (g.tok) {
            size_t len;
            const char *piece = sm_tokenizer_decode(g.tok, prev, next, &len);
            if (o->c.json) {
                if (append_text(&g, piece, len)) rc = cli_fail("generate", "out of memory");
            } else {
                fwrite(piece, 1, len, stdout);
            }
        }
        if (!o->c.json) fflush(stdout);
        prev = next;
        if (n_out == max_new) break; // the last token needs no forward pass
        double d0 = sm_now();
        if (sm_context_forward(g.ctx, &next, 1, SM_LOGITS_LAST, g.logits) != SM_OK)
            rc = cli_fail("generate", NULL);
        dec_s += sm_now() - d0;
        n_dec++;
    }
    if (!rc && !o->c.json && (print_ids || isatty(1))) printf("\n");
    double pre_tps = pre_s > 0 ? (double)g.n_prompt / pre_s : NAN;
    double dec_tps = dec_s > 0 ? (double)n_dec / dec_s : NAN;
    fprintf(stderr,
            "generate: stop: %s; prefill %lld tokens in %.4f s (%.1f tokens/s); decode %lld "
            "tokens in %.4f s (%.1f tokens/s)\n",
            stop, (long long)g.n_prompt, pre_s, pre_tps, (long long)n_dec, dec_s, dec_tps);
    if (!rc && o->c.json)
        print_json(o, &g, n_out, stop, topk, topk ? o->n_probs : 0, lse, pre_tps, dec_tps);
    if (topk != top) free(topk);
    state_free(&g);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o = {.c = {.seed = 24301}, .n = -1, .temp = 0.8, .top_p = 0.95};
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
        bool bad = false;
        if (!strcmp(a, "--prompt") || !strcmp(a, "-p")) {
            if (!(o.prompt = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--prompt-file")) {
            if (!(o.prompt_file = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--ids")) {
            if (!(o.ids = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            bad = !parse_i64(v, -1, &o.n);
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx") || !strcmp(a, "--ctx-size")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            bad = !parse_i64(v, 1, &o.ctx);
        } else if (!strcmp(a, "--n-probs")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            bad = !parse_i64(v, 0, &o.n_probs) || o.n_probs > INT32_MAX;
        } else if (!strcmp(a, "--temp")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            bad = !parse_real(v, &o.temp) || o.temp < 0;
        } else if (!strcmp(a, "--top-p")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            bad = !parse_real(v, &o.top_p) || o.top_p < 0 || o.top_p > 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            o.ignore_eos = true;
        } else if (!strcmp(a, "--print-ids")) {
            o.print_ids = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "structmat generate: unknown option %s\n", a);
            return 2;
        } else if (!o.model) {
            o.model = a;
        } else {
            fprintf(stderr, "structmat generate: one MODEL only (\"%s\" is extra)\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "structmat generate: %s %s: expected %s\n", a, v,
                    !strcmp(a, "-n") || !strcmp(a, "--n-predict") ? "an integer >= -1"
                    : !strcmp(a, "--temp")                        ? "a number >= 0"
                    : !strcmp(a, "--top-p")                       ? "a number in [0, 1]"
                    : !strcmp(a, "--n-probs")                     ? "a non-negative integer"
                                                                  : "a positive integer");
            return 2;
        }
    }
    if (!o.model) {
        usage(stderr);
        return 2;
    }
    int sources = !!o.prompt + !!o.prompt_file + !!o.ids;
    if (sources != 1) {
        fprintf(stderr,
                "structmat generate: give exactly one of --prompt, --prompt-file and --ids "
                "(%s)\n",
                sources ? "not several" : "none given");
        return 2;
    }
    if (o.c.out) {
        fprintf(stderr, "structmat generate: no -o output (the text goes to stdout)\n");
        return 2;
    }
    sm_set_threads(o.c.threads);
    return generate(&o);
}
