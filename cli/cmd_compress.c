// structmat compress MODEL -o OUT --target SIZE [--methods NAMES] [--calib STATS]
//                    [--objective weight|activation] [--tensor-spec REGEX=SPEC]... [--keep
//                    REGEX]...
//                    [--uniform SPEC] [--json] [--report FILE.html] [--force]
#include "cli.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "structmat_compress.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: structmat compress MODEL -o OUT --target SIZE [options]\n\n"
        "Compresses every 2-D weight of a Hugging Face checkpoint but the token embedding\n"
        "(lm_head included) to at most SIZE, choosing per matrix the structure and precision\n"
        "that lose least: (1) every candidate of the methods is fitted and its error and exact\n"
        "bytes measured, (2) one candidate per matrix is chosen to minimise the summed error\n"
        "under SIZE (a Lagrangian sweep, then the slack filled greedily), (3) the chosen ones\n"
        "are fitted again and streamed into OUT, a checkpoint directory that eval and\n"
        "generate run (written atomically: an existing OUT is the old or the new one).\n"
        "Embeddings, norms and biases are copied as they are. Memory stays near a few\n"
        "matrices whatever the model's size.\n\n"
        "  --target SIZE        3.5bpw (bits per weight of the compressed matrices), 120MB\n"
        "                       (10^6 bytes), 800kB, 1.5GB or bytes; a ceiling: the result\n"
        "                       is within [0.99, 1] of it\n"
        "  --methods NAMES      comma-separated: rtn, gptq, onebit, bitstack, lowrank,\n"
        "                       monarch, blast, blockdiag, sparse, lorc (a 2- or 3-bit\n"
        "                       quantizer + low-rank residual), dense (default: all; gptq\n"
        "                       needs --calib). The matrix as stored (and F16) is always one\n"
        "  --calib STATS        calibration statistics (structmat calibrate): gptq, the\n"
        "                       activation-aware fits and the activation objective\n"
        "  --objective OBJ      activation (default with --calib): ||X (W - W_hat)^T||_F^2;\n"
        "                       weight: ||W - W_hat||_F^2\n"
        "  --tensor-spec RE=SPEC  matrices whose name matches the extended regex RE\n"
        "                       (anywhere; anchor with ^ $) get SPEC (repeatable)\n"
        "  --keep RE            matrices matching RE stay as stored (repeatable)\n"
        "  --uniform SPEC       SPEC for every matrix, no choice (the baseline); --target\n"
        "                       is then optional and only checked\n"
        "  --solver exact|random  SVD of the low-rank ladders (default exact)\n"
        "  --save-curves FILE   write the measured candidates (error-versus-bytes curves)\n"
        "  --curves FILE        reuse them instead of measuring (same model and options):\n"
        "                       one ladder for several targets\n"
        "  --report FILE.html   a self-contained HTML report: per matrix the curves with the\n"
        "                       choice and the spectrum, and the per-layer allocation\n"
        "  --probe TEXT         after writing, run TEXT through the compressed model as it\n"
        "                       was built and print the 5 most likely next tokens with\n"
        "                       their log-probabilities (generate --n-probs 5 on OUT must\n"
        "                       print the same)\n"
        "  --force              replace OUT (and FILE outputs) if they exist\n"
        "  --json               one JSON object per matrix (tensor, layer_type, method, spec,\n"
        "                       shape, bytes, bpw, rel_error), then {\"summary\": {...}}: "
        "target_bytes,\n"
        "                       bytes, bpw, weights, ratio, matrices, measure_seconds,\n"
        "                       write_seconds, objective, by_layer_type, probe\n"
        "  --seed S             seed of rotations and randomized solvers (default 24301)\n"
        "  --threads N          threads (default: all cores)\n"
        "  --max-memory SIZE    refuse, with an error, library allocations past SIZE in all\n"
        "                       (500MB, 2GB, 1.5GiB; memory-mapped checkpoints do not count)\n\n"
        "examples:\n"
        "  structmat calibrate models/shakespeare-llama-3m -f train.txt -o s.calib\n"
        "  structmat compress models/shakespeare-llama-3m --calib s.calib --target 3bpw -o m3\n"
        "  structmat compress models/shakespeare-llama-3m --target 1MB --methods rtn,lowrank \\\n"
        "      --keep lm_head -o m1 --report m1.html\n"
        "  structmat compress models/shakespeare-llama-3m --uniform rtn:bits=4,group=64 -o u4\n");
}

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
    g_interrupted = 1;
    signal(sig, SIG_DFL); // a second one ends the process at once
}

typedef struct run {
    cli_common c;
    sm_progress pr;
    const sm_compress *cz;
    sm_op **kept; // (count) operators kept for --probe
} run;

static void layer_type(const char *name, char *out, size_t cap);

// The row of matrix i, as it is written: text or one JSON object.
static void print_row(const run *r, int i) {
    sm_compress_matrix mx;
    sm_compress_get_matrix(r->cz, i, &mx);
    sm_compress_candidate cd;
    sm_compress_get_candidate(r->cz, i, mx.chosen, &cd);
    double bpw = 8.0 * (double)mx.final_bytes / (double)(mx.rows * mx.cols);
    double rel = mx.energy > 0 ? sqrt(mx.final_error / mx.energy) : 0;
    char t[48];
    layer_type(mx.name, t, sizeof t);
    if (r->pr.tty) fprintf(stderr, "\r\033[K"); // the bar's line, redrawn after the row
    if (r->c.json) {
        printf("{\"tensor\":");
        cli_json_str(stdout, mx.name);
        printf(",\"layer_type\":\"%s\",\"method\":\"%s\",\"spec\":", t, cd.method);
        cli_json_str(stdout, mx.final_spec);
        printf(",\"shape\":[%lld,%lld],\"bytes\":%lld,\"bpw\":%.6g,\"rel_error\":%.6g}\n",
               (long long)mx.rows, (long long)mx.cols, (long long)mx.final_bytes, bpw, rel);
    } else {
        printf("%-44s %-52s %10lld %7.3f %10.5f\n", mx.name, mx.final_spec,
               (long long)mx.final_bytes, bpw, rel);
    }
    fflush(stdout);
}

static bool progress(void *user, const sm_compress_event *ev) {
    run *r = user;
    if (ev->phase == 1 && !r->pr.tty && !r->c.json)
        fprintf(stderr, "measure [%d/%d] %s: %d candidates, %.2f s\n", ev->index + 1, ev->count,
                ev->name, ev->candidates, ev->seconds);
    if (ev->phase == 3) print_row(r, ev->index);
    sm_progress_step(&r->pr, ev->index + 1, ev->name);
    return !g_interrupted;
}

static void keep_op(void *user, int index, sm_op *op) {
    run *r = user;
    r->kept[index] = op;
}

// "q_proj" of "model.layers.3.self_attn.q_proj.weight", "lm_head" of "lm_head.weight".
static void layer_type(const char *name, char *out, size_t cap) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", name);
    size_t n = strlen(buf);
    if (n > 7 && !strcmp(buf + n - 7, ".weight")) buf[n - 7] = 0;
    const char *dot = strrchr(buf, '.');
    snprintf(out, cap, "%s", dot ? dot + 1 : buf);
}

// Refuses an OUT directory that could not be written at the end: prints, returns 1.
static int check_out_dir(const char *dir, bool force) {
    struct stat sb;
    if (!*dir) {
        fprintf(stderr, "structmat compress: the output path is empty\n");
        return 1;
    }
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "structmat compress: %s: exists and is not a directory\n", dir);
            return 1;
        }
        if (!force) {
            fprintf(stderr, "structmat compress: %s: exists (use --force to replace it)\n", dir);
            return 1;
        }
    }
    char *copy = strdup(dir);
    if (!copy) return cli_fail("compress", "out of memory");
    const char *parent = dirname(copy);
    int rc = 0;
    if (stat(parent, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "structmat compress: %s: the directory %s does not exist\n", dir, parent);
        rc = 1;
    } else if (access(parent, W_OK | X_OK) != 0) {
        fprintf(stderr, "structmat compress: %s: cannot write to the directory %s: %s\n", dir,
                parent, strerror(errno));
        rc = 1;
    }
    free(copy);
    return rc;
}

typedef struct args {
    cli_common c;
    const char *model, *target, *methods, *calib, *uniform, *report, *curves, *save_curves, *probe;
    sm_objective objective;
    int solver;
    int npin, nkeep;
    const char **pin_re, **pin_spec, **keep;
} args;

// Runs --probe: the source model with the kept operators in place; prints the top 5.
static int probe(const args *a, const sm_compress *cz, sm_op **kept, FILE *js) {
    sm_model *m = NULL;
    sm_tokenizer *tok = NULL;
    sm_context *ctx = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    float *logits = NULL;
    int rc = 0;
    if (sm_model_load(a->model, &m) != SM_OK) return cli_fail("compress", "--probe");
    sm_model_info f;
    sm_model_get_info(m, &f);
    for (int i = 0; i < sm_compress_count(cz) && !rc; i++) {
        sm_compress_matrix mx;
        sm_compress_get_matrix(cz, i, &mx);
        for (int64_t j = 0; j < f.n_linear && kept[i]; j++)
            if (!strcmp(sm_model_linear_name(m, j), mx.name)) {
                if (sm_model_linear_set(m, j, kept[i]) != SM_OK)
                    rc = cli_fail("compress", mx.name);
                else
                    kept[i] = NULL;
            }
    }
    if (!rc && sm_tokenizer_load_for_model(a->model, m, &tok) != SM_OK)
        rc = cli_fail("compress", "--probe");
    if (!rc && sm_tokenizer_encode(tok, a->probe, strlen(a->probe), true, &ids, &n) != SM_OK)
        rc = cli_fail("compress", "--probe");
    if (!rc && n == 0) {
        fprintf(stderr, "structmat compress: --probe: the text has no tokens\n");
        rc = 1;
    }
    if (!rc && sm_context_init(m, 0, 0, &ctx) != SM_OK) rc = cli_fail("compress", "--probe");
    if (!rc && !(logits = malloc(sizeof(float) * (size_t)f.vocab_size)))
        rc = cli_fail("compress", "out of memory");
    if (!rc && sm_context_forward(ctx, ids, n, SM_LOGITS_LAST, logits) != SM_OK)
        rc = cli_fail("compress", "--probe");
    if (!rc) {
        int32_t top[5];
        int k = f.vocab_size < 5 ? (int)f.vocab_size : 5;
        sm_topk(logits, f.vocab_size, k, top);
        double lse = sm_logsumexp(logits, f.vocab_size);
        if (js) {
            fprintf(js, ",\"probe\":[");
            for (int i = 0; i < k; i++)
                fprintf(js, "%s{\"id\":%d,\"logprob\":%.9g}", i ? "," : "", (int)top[i],
                        (double)logits[top[i]] - lse);
            fprintf(js, "]");
        } else {
            printf("probe: next tokens after the text (id, ln p):");
            for (int i = 0; i < k; i++)
                printf(" %d %.9g", (int)top[i], (double)logits[top[i]] - lse);
            printf("\n");
        }
    }
    free(logits), free(ids);
    sm_context_free(ctx);
    sm_tokenizer_free(tok);
    sm_model_free(m);
    return rc;
}

// The table by layer type and the totals (text), or the summary's by_layer_type (JSON).
static void by_type(const sm_compress *cz, bool json) {
    int n = sm_compress_count(cz), nt = 0;
    char(*types)[48] = calloc((size_t)n, sizeof *types);
    int64_t *cnt = calloc((size_t)n, sizeof *cnt), *w = calloc((size_t)n, sizeof *w),
            *b = calloc((size_t)n, sizeof *b);
    double *e = calloc((size_t)n, sizeof *e), *en = calloc((size_t)n, sizeof *en);
    if (!types || !cnt || !w || !b || !e || !en) goto out;
    for (int i = 0; i < n; i++) {
        sm_compress_matrix mx;
        sm_compress_get_matrix(cz, i, &mx);
        char t[48];
        layer_type(mx.name, t, sizeof t);
        int k = 0;
        while (k < nt && strcmp(types[k], t)) k++;
        if (k == nt) memcpy(types[nt++], t, sizeof t);
        cnt[k]++, w[k] += mx.rows * mx.cols, b[k] += mx.final_bytes;
        e[k] += mx.final_error, en[k] += mx.energy;
    }
    if (json)
        printf(",\"by_layer_type\":[");
    else
        printf("\n%-14s %8s %12s %12s %7s %10s\n", "layer type", "matrices", "weights", "bytes",
               "bpw", "rel_error");
    for (int k = 0; k < nt; k++) {
        double bpw = 8.0 * (double)b[k] / (double)w[k], rel = en[k] > 0 ? sqrt(e[k] / en[k]) : 0;
        if (json)
            printf("%s{\"layer_type\":\"%s\",\"matrices\":%lld,\"weights\":%lld,\"bytes\":%lld,"
                   "\"bpw\":%.6g,\"rel_error\":%.6g}",
                   k ? "," : "", types[k], (long long)cnt[k], (long long)w[k], (long long)b[k], bpw,
                   rel);
        else
            printf("%-14s %8lld %12lld %12lld %7.3f %10.5f\n", types[k], (long long)cnt[k],
                   (long long)w[k], (long long)b[k], bpw, rel);
    }
    if (json) printf("]");
out:
    free(types), free(cnt), free(w), free(b), free(e), free(en);
}

static int compress_run(const args *a) {
    run r = {.c = a->c};
    sm_calib *cal = NULL;
    sm_compress *cz = NULL;
    int rc = 0;
    if (a->calib && sm_calib_open(a->calib, &cal) != SM_OK) return cli_fail("compress", "--calib");
    sm_compress_opts o = {.methods = a->methods,
                          .objective = a->objective,
                          .calib = cal,
                          .npin = a->npin,
                          .pin_regex = a->pin_re,
                          .pin_spec = a->pin_spec,
                          .nkeep = a->nkeep,
                          .keep = a->keep,
                          .uniform = a->uniform,
                          .solver = a->solver,
                          .seed = a->c.seed,
                          .spectra = a->report != NULL,
                          .progress = progress,
                          .user = &r,
                          .keep_op = a->probe ? keep_op : NULL};
    if (sm_compress_open(a->model, &o, &cz) != SM_OK) {
        sm_calib_free(cal);
        return cli_fail("compress", NULL);
    }
    r.cz = cz;
    int n = sm_compress_count(cz);
    int64_t wts = sm_compress_weights(cz), budget = 0;
    if (a->target && sm_compress_parse_size(cz, a->target, &budget) != SM_OK)
        rc = cli_fail("compress", "--target");
    if (!rc && a->probe && !(r.kept = calloc((size_t)n, sizeof *r.kept)))
        rc = cli_fail("compress", "out of memory");
    double t0 = sm_now();
    if (!rc && a->curves) {
        if (sm_compress_load_curves(cz, a->curves) != SM_OK) rc = cli_fail("compress", "--curves");
    } else if (!rc) {
        if (!a->c.json)
            fprintf(stderr,
                    "compress: %s: %d matrices, %lld weights; measuring candidates "
                    "(methods %s, %s objective)\n",
                    a->model, n, (long long)wts,
                    a->uniform   ? "--uniform"
                    : a->methods ? a->methods
                                 : "all",
                    sm_compress_objective(cz) == SM_OBJECTIVE_ACTIVATION ? "activation" : "weight");
        sm_progress_init(&r.pr, "measure", n);
        sm_status s = sm_compress_measure(cz);
        sm_progress_end(&r.pr);
        if (s != SM_OK)
            rc = g_interrupted ? (fprintf(stderr, "structmat compress: interrupted; nothing "
                                                  "was written\n"),
                                  130)
                               : cli_fail("compress", NULL);
    }
    double t_measure = sm_now() - t0;
    if (!rc && a->save_curves && sm_compress_save_curves(cz, a->save_curves, a->c.force) != SM_OK)
        rc = cli_fail("compress", "--save-curves");
    int64_t lo = 0, hi = 0;
    if (!rc) sm_compress_range(cz, &lo, &hi);
    if (!rc && !a->uniform && budget < lo) {
        fprintf(stderr,
                "structmat compress: the target %s (%lld bytes, %.4g bpw) cannot be "
                "reached: the smallest reachable size with these methods is %lld bytes "
                "(%.4g bpw, %.6g MB)\n",
                a->target, (long long)budget, 8.0 * (double)budget / (double)wts, (long long)lo,
                8.0 * (double)lo / (double)wts, (double)lo / 1e6);
        rc = 1;
    }
    if (!rc && sm_compress_allocate(cz, a->uniform ? hi : budget) != SM_OK)
        rc = cli_fail("compress", NULL);
    if (!rc && !a->c.json)
        printf("%-44s %-52s %10s %7s %10s\n", "tensor", "spec", "bytes", "bpw", "rel_error");
    double t1 = sm_now();
    if (!rc) {
        sm_progress_init(&r.pr, "write", n);
        sm_status s = sm_compress_write(cz, a->c.out, a->c.force);
        sm_progress_end(&r.pr);
        if (s != SM_OK)
            rc = g_interrupted ? (fprintf(stderr,
                                          "structmat compress: interrupted; %s was not "
                                          "written (nor changed)\n",
                                          a->c.out),
                                  130)
                               : cli_fail("compress", a->c.out);
    }
    double t_write = sm_now() - t1;
    int64_t total = 0;
    for (int i = 0; !rc && i < n; i++) {
        sm_compress_matrix mx;
        sm_compress_get_matrix(cz, i, &mx);
        total += mx.final_bytes;
    }
    if (!rc && !a->c.json) {
        by_type(cz, false);
        printf("\ntotal: %lld bytes = %.4f bits per weight over %lld weights", (long long)total,
               8.0 * (double)total / (double)wts, (long long)wts);
        if (a->target)
            printf("; target %lld bytes (%.4g bpw): %.4f of it", (long long)budget,
                   8.0 * (double)budget / (double)wts, (double)total / (double)budget);
        printf("\nmeasure %.1f s, write %.1f s; wrote %s\n", t_measure, t_write, a->c.out);
    }
    if (!rc && a->c.json) {
        printf("{\"summary\":{\"output\":");
        cli_json_str(stdout, a->c.out);
        printf(",\"target_bytes\":%lld,\"bytes\":%lld,\"bpw\":%.6g,\"weights\":%lld,"
               "\"ratio\":%.6g,\"matrices\":%d,\"measure_seconds\":%.3f,\"write_seconds\":%.3f,"
               "\"objective\":\"%s\"",
               (long long)budget, (long long)total, 8.0 * (double)total / (double)wts,
               (long long)wts, budget ? (double)total / (double)budget : 0.0, n, t_measure, t_write,
               sm_compress_objective(cz) == SM_OBJECTIVE_ACTIVATION ? "activation" : "weight");
        by_type(cz, true);
    }
    if (!rc && a->target && !a->uniform && (double)total < 0.99 * (double)budget)
        fprintf(stderr, "structmat compress: warning: %lld bytes is below 99%% of the target%s\n",
                (long long)total, total >= hi ? " (every matrix has its largest candidate)" : "");
    if (!rc && a->report && sm_compress_report_html(cz, a->report, a->c.force) != SM_OK)
        rc = cli_fail("compress", "--report");
    if (!rc && a->probe) rc = probe(a, cz, r.kept, a->c.json ? stdout : NULL);
    if (a->c.json && !rc) printf("}}\n");
    fflush(stdout);
    for (int i = 0; r.kept && i < n; i++) sm_op_free(r.kept[i]);
    free(r.kept);
    sm_compress_free(cz);
    sm_calib_free(cal);
    return rc;
}

static int parse(int argc, char **argv, args *a) {
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&a->c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *v = NULL;
        if (cli_is_help(argv[i])) {
            usage(stdout);
            return -1;
        }
#define VAL(name, dst)                                                                             \
    else if (strcmp(argv[i], name) == 0) {                                                         \
        if (!(v = cli_value(argc, argv, &i))) return 2;                                            \
        dst = v;                                                                                   \
    }
        if (0) {
        }
        VAL("--target", a->target)
        VAL("--methods", a->methods)
        VAL("--calib", a->calib)
        VAL("--uniform", a->uniform)
        VAL("--report", a->report)
        VAL("--curves", a->curves)
        VAL("--save-curves", a->save_curves)
        VAL("--probe", a->probe)
#undef VAL
        else if (strcmp(argv[i], "--objective") == 0) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            if (!strcmp(v, "weight"))
                a->objective = SM_OBJECTIVE_WEIGHT;
            else if (!strcmp(v, "activation"))
                a->objective = SM_OBJECTIVE_ACTIVATION;
            else {
                fprintf(stderr, "structmat compress: --objective weight or activation\n");
                return 2;
            }
        }
        else if (strcmp(argv[i], "--solver") == 0) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            if (strcmp(v, "exact") && strcmp(v, "random")) {
                fprintf(stderr, "structmat compress: --solver exact or random\n");
                return 2;
            }
            a->solver = !strcmp(v, "random");
        }
        else if (strcmp(argv[i], "--tensor-spec") == 0) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            const char *eq = strrchr(v, '=');
            // The spec itself holds '=' (rank=8): split at the first '=' followed by a
            // structure name, i.e. the last '=' whose right side has no ':' before a '='.
            eq = NULL;
            for (const char *p = v; (p = strchr(p, '=')) != NULL; p++) {
                const char *rest = p + 1, *colon = strchr(rest, ':'), *e2 = strchr(rest, '=');
                if (!e2 || (colon && colon < e2)) {
                    eq = p;
                    break;
                }
            }
            if (!eq || eq == v || !eq[1]) {
                fprintf(stderr, "structmat compress: --tensor-spec needs REGEX=SPEC (got \"%s\")\n",
                        v);
                return 2;
            }
            char *re = strndup(v, (size_t)(eq - v));
            if (!re) return 2;
            a->pin_re[a->npin] = re;
            a->pin_spec[a->npin++] = eq + 1;
        }
        else if (strcmp(argv[i], "--keep") == 0) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            a->keep[a->nkeep++] = v;
        }
        else if (strcmp(argv[i], "--max-memory") == 0) {
            size_t limit;
            if (!(v = cli_value(argc, argv, &i))) return 2;
            if (sm_parse_bytes(v, &limit) != SM_OK) {
                fprintf(stderr, "structmat compress: --max-memory: %s\n", sm_last_error());
                return 2;
            }
            sm_set_alloc_limit(limit);
        }
        else if (argv[i][0] == '-') {
            fprintf(stderr, "structmat compress: unknown option %s\n", argv[i]);
            return 2;
        }
        else if (!a->model) {
            a->model = argv[i];
        }
        else {
            fprintf(stderr, "structmat compress: one MODEL only\n");
            return 2;
        }
    }
    if (!a->model || !a->c.out || (!a->target && !a->uniform)) {
        fprintf(stderr, "structmat compress: need MODEL, -o OUT and --target SIZE (or "
                        "--uniform SPEC)\n\n");
        usage(stderr);
        return 2;
    }
    if (a->curves && a->save_curves) {
        fprintf(stderr, "structmat compress: --curves and --save-curves together: the curves "
                        "are already saved\n");
        return 2;
    }
    return 0;
}

int cmd_compress(int argc, char **argv) {
    args a = {.c = {.seed = 24301}};
    a.pin_re = calloc((size_t)argc + 1, sizeof *a.pin_re);
    a.pin_spec = calloc((size_t)argc + 1, sizeof *a.pin_spec);
    a.keep = calloc((size_t)argc + 1, sizeof *a.keep);
    int rc = a.pin_re && a.pin_spec && a.keep ? parse(argc, argv, &a) : 1;
    if (rc == -1)
        rc = 0;
    else if (rc == 0) {
        // Every output is checked before the long measurement, not after it.
        if (check_out_dir(a.c.out, a.c.force)) rc = 1;
        if (!rc && a.report && cli_check_output("compress", a.report, a.c.force)) rc = 1;
        if (!rc && a.save_curves && cli_check_output("compress", a.save_curves, a.c.force)) rc = 1;
        if (!rc) {
            sm_set_threads(a.c.threads);
            g_interrupted = 0;
            struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGINT, &sa, &old_int);
            sigaction(SIGTERM, &sa, &old_term);
            rc = compress_run(&a);
            sigaction(SIGINT, &old_int, NULL);
            sigaction(SIGTERM, &old_term, NULL);
        }
    }
    for (int i = 0; i < a.npin; i++) free((char *)a.pin_re[i]);
    free(a.pin_re), free(a.pin_spec), free(a.keep);
    return rc;
}
