// structmat fit PATH (--tensor NAME... | --all) --spec SPEC [--json] [-o FILE]
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: structmat fit PATH (--tensor NAME... | --all) --spec SPEC [options]\n\n"
            "Fits each matrix to the structure SPEC (see `structmat specs`) and prints the relative\n"
            "Frobenius error ||W - W_hat||_F / ||W||_F, parameters, bytes, bits per weight\n"
            "(bytes * 8 / (m n)), multiply-adds per input row and the fit time.\n\n"
            "  --tensor NAME   a tensor to fit (repeatable)\n"
            "  --all           every 2-D weight except the token embedding\n"
            "  --spec SPEC     e.g. lowrank:ratio=0.5, monarch:blocks=4, dense:dtype=bf16\n"
            "  -o FILE         write the fitted operators as a structmat safetensors file\n"
            "  --force         replace FILE if it exists\n"
            "  --json          one JSON object per tensor per line, then {\"summary\": {...}};\n"
            "                  keys: tensor, spec, shape, rel_error, params, bytes, bpw, macs,\n"
            "                  fit_seconds\n"
            "  --seed S        seed of randomized solvers (default 24301)\n"
            "  --threads N     threads (default: all cores)\n\n"
            "examples:\n"
            "  structmat fit models/shakespeare-llama-3m --all --spec lowrank:ratio=0.5\n"
            "  structmat fit models/shakespeare-llama-3m --tensor model.layers.0.mlp.up_proj.weight \\\n"
            "      --spec monarch:blocks=4 --json\n");
}

// The token embedding is a lookup table, not a linear map: --all leaves it out.
static bool is_embedding(const char *name) {
    static const char *const pats[] = {"embed_tokens", "tok_embeddings", "wte.", "token_embd",
                                       "word_embeddings"};
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++)
        if (strstr(name, pats[i])) return true;
    return false;
}

static double rel_error(const float *W, const float *D, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)W[i] - (double)D[i];
        num += d * d;
        den += (double)W[i] * (double)W[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// Fits names[0..nnames) of st (checked to be 2-D tensors), prints a row each and the summary,
// and writes the operators to c->out if asked.
static int fit_list(const cli_common *cp, const sm_st *st, const char *spec, const char **names,
                    int nnames) {
    const cli_common c = *cp;
    sm_op **ops = calloc((size_t)nnames + 1, sizeof *ops);
    if (!ops) return cli_fail("fit", "out of memory");
    if (!c.json)
        printf("%-44s %-28s %-11s %9s %9s %9s %6s %9s %8s\n", "tensor", "spec", "shape",
               "rel_error", "params", "bytes", "bpw", "macs", "fit_s");
    sm_fit_opts fo = {.seed = c.seed};
    sm_progress pr;
    sm_progress_init(&pr, "fit", nnames);
    int rc = 0, done = 0;
    int64_t tot_dense = 0, tot_params = 0, tot_bytes = 0;
    double tot_err2 = 0, tot_energy = 0, tot_time = 0, sum_rel = 0;
    for (int j = 0; j < nnames && rc == 0; j++) {
        const sm_tensor_info *t = sm_st_find(st, names[j]);
        int64_t m = t->shape[0], n = t->shape[1], cnt;
        sm_progress_step(&pr, j, t->name);
        // The tensor first (its dtype may be unreadable; then the shape means nothing), and
        // the fit before the second buffer, which sm_op_fit's shape checks make safe to size.
        float *W = NULL, *D = NULL;
        char what[300];
        snprintf(what, sizeof what, "%s (%lldx%lld)", t->name, (long long)m, (long long)n);
        if (sm_st_read_f32(st, t->name, &W, &cnt) != SM_OK) {
            sm_progress_end(&pr);
            rc = cli_fail("fit", t->name);
            break;
        }
        double t0 = sm_now();
        if (sm_op_fit(W, m, n, spec, &fo, &ops[j]) != SM_OK) {
            sm_progress_end(&pr);
            rc = cli_fail("fit", what);
            free(W);
            break;
        }
        double secs = sm_now() - t0;
        D = malloc(sizeof(float) * (size_t)(m * n));
        if (!D || sm_op_to_dense(ops[j], D) != SM_OK) {
            sm_progress_end(&pr);
            if (!D) fprintf(stderr, "structmat fit: %s: out of memory\n", what);
            rc = D ? cli_fail("fit", what) : 1;
            free(W), free(D);
            break;
        }
        double err = rel_error(W, D, m * n), energy = 0;
        for (int64_t i = 0; i < m * n; i++) energy += (double)W[i] * W[i];
        free(W), free(D);
        const sm_op *op = ops[j];
        int64_t params = sm_op_nparams(op), bytes = sm_op_nbytes(op), macs = sm_op_macs(op);
        double bpw = (double)bytes * 8.0 / (double)(m * n);
        done++;
        tot_dense += m * n, tot_params += params, tot_bytes += bytes;
        tot_err2 += err * err * energy, tot_energy += energy, tot_time += secs, sum_rel += err;
        if (c.json) {
            printf("{\"tensor\":");
            cli_json_str(stdout, t->name);
            printf(",\"spec\":");
            cli_json_str(stdout, sm_op_spec(op));
            printf(",\"shape\":[%lld,%lld],\"rel_error\":%.9g,\"params\":%lld,\"bytes\":%lld,"
                   "\"bpw\":%.6g,\"macs\":%lld,\"fit_seconds\":%.6g}\n",
                   (long long)m, (long long)n, err, (long long)params, (long long)bytes, bpw,
                   (long long)macs, secs);
        } else {
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)m, (long long)n);
            printf("%-44s %-28s %-11s %9.5f %9lld %9lld %6.2f %9lld %8.3f\n", t->name,
                   sm_op_spec(op), shape, err, (long long)params, (long long)bytes, bpw,
                   (long long)macs, secs);
        }
        fflush(stdout);
    }
    sm_progress_end(&pr);
    if (rc == 0 && done > 0) {
        double werr = tot_energy > 0 ? sqrt(tot_err2 / tot_energy) : 0;
        if (c.json) {
            printf("{\"summary\":{\"spec\":");
            cli_json_str(stdout, spec);
            printf(",\"matrices\":%d,\"dense_params\":%lld,\"params\":%lld,\"bytes\":%lld,"
                   "\"param_ratio\":%.6g,\"bpw\":%.6g,\"mean_rel_error\":%.9g,"
                   "\"overall_rel_error\":%.9g,\"fit_seconds\":%.6g}}\n",
                   done, (long long)tot_dense, (long long)tot_params, (long long)tot_bytes,
                   (double)tot_params / (double)tot_dense,
                   (double)tot_bytes * 8.0 / (double)tot_dense, sum_rel / done, werr, tot_time);
        } else {
            printf("\n%s: %d matrices, %lld of %lld parameters (%.1f%%), %.3f bits per weight, "
                   "mean rel_error %.4f, overall %.4f, %.2f s\n",
                   spec, done, (long long)tot_params, (long long)tot_dense,
                   100.0 * (double)tot_params / (double)tot_dense,
                   (double)tot_bytes * 8.0 / (double)tot_dense, sum_rel / done, werr, tot_time);
        }
    }
    if (rc == 0 && c.out) {
        if (sm_ops_save(c.out, done, names, (const sm_op *const *)ops, c.force) != SM_OK)
            rc = cli_fail("fit", NULL);
        else if (!c.json)
            fprintf(stderr, "wrote %s\n", c.out);
    }
    for (int j = 0; j < nnames; j++) sm_op_free(ops[j]);
    free(ops);
    return rc;
}

// The tensors to fit: names, or with all every 2-D weight but the embedding; then fit_list.
static int fit_checkpoint(const cli_common *c, const char *path, const char *spec,
                          const char **names, int nnames, bool all) {
    sm_st *st;
    if (sm_st_open(path, &st) != SM_OK) return cli_fail("fit", NULL);
    const char **list = names;
    int rc = 0;
    if (all) {
        list = calloc((size_t)sm_st_count(st) + 1, sizeof *list);
        if (!list) {
            sm_st_close(st);
            return cli_fail("fit", "out of memory");
        }
        for (int i = 0; i < sm_st_count(st); i++) {
            const sm_tensor_info *t = sm_st_get(st, i);
            if (t->ndim == 2 && !is_embedding(t->name)) list[nnames++] = t->name;
        }
        if (nnames == 0) {
            fprintf(stderr, "structmat fit: %s: no 2-D weights to fit\n", path);
            rc = 1;
        }
    }
    for (int j = 0; j < nnames && rc == 0; j++) {
        const sm_tensor_info *t = sm_st_find(st, list[j]);
        if (!t || t->ndim != 2) {
            fprintf(stderr, "structmat fit: %s: %s \"%s\"\n", path,
                    t ? "not a matrix:" : "no tensor named", list[j]);
            rc = 1;
        }
    }
    if (rc == 0) rc = fit_list(c, st, spec, list, nnames);
    if (list != names) free(list);
    sm_st_close(st);
    return rc;
}

// Options; names has room for every argument.
static int fit_args(int argc, char **argv, const char **names) {
    cli_common c = {.seed = 24301};
    const char *path = NULL, *spec = NULL;
    int nnames = 0;
    bool all = false;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--tensor") == 0) {
            if (!(names[nnames++] = cli_value(argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--spec") == 0) {
            if (!(spec = cli_value(argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--all") == 0) {
            all = true;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "structmat fit: unknown option %s\n", argv[i]);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "structmat fit: one PATH only\n");
            return 2;
        }
    }
    if (!path || !spec || (!all && !nnames) || (all && nnames)) {
        fprintf(stderr, "structmat fit: need PATH, --spec and either --tensor or --all\n\n");
        usage(stderr);
        return 2;
    }
    // Each name is one operator of the output: a repeat would be fitted twice and then refused.
    for (int j = 0; j < nnames; j++)
        for (int k = 0; k < j; k++)
            if (strcmp(names[j], names[k]) == 0) {
                fprintf(stderr, "structmat fit: --tensor %s is given twice\n", names[j]);
                return 2;
            }
    // Refuse an output that cannot be written now, not after every fit.
    if (c.out && cli_check_output("fit", c.out, c.force)) return 1;
    sm_set_threads(c.threads);
    sm_spec *parsed;
    if (sm_spec_parse(spec, &parsed) != SM_OK) return cli_fail("fit", NULL);
    sm_spec_free(parsed);
    return fit_checkpoint(&c, path, spec, names, nnames, all);
}

int cmd_fit(int argc, char **argv) {
    const char **names = calloc((size_t)argc + 1, sizeof *names);
    if (!names) return cli_fail("fit", "out of memory");
    int rc = fit_args(argc, argv, names);
    free(names);
    return rc;
}
