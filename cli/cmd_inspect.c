// structmat inspect PATH [--json] [--tensor NAME]...
// structmat inspect MODEL --super-weights [--prompt TEXT] [--spike-ratio R] [--json]
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: structmat inspect PATH [--tensor NAME]... [--json] [--threads N]\n"
            "       structmat inspect MODEL --super-weights [--prompt TEXT] [--spike-ratio R] "
            "[--json]\n\n"
            "One row per 2-D weight of a checkpoint (a .safetensors file, a directory with\n"
            "model.safetensors or a sharded index; or a llama2.c .bin: its token embedding and\n"
            "linear layers, dtype F32): shape, dtype, Frobenius and spectral norm,\n"
            "stable rank ||W||_F^2/||W||_2^2, effective rank (Roy-Vetterli), k90/k99 (smallest k\n"
            "whose leading sigma_i^2 hold 90%%/99%% of the energy), max|w|/rms(w), excess kurtosis,\n"
            "and WeightWatcher's alpha (power-law fit of the eigenvalues of W^T W); then a summary.\n\n"
            "  --tensor NAME   only this tensor (repeatable)\n"
            "  --json          one JSON object per tensor per line, then {\"summary\": {...}}\n"
            "                  keys: tensor, shape, dtype, fro_norm, spectral_norm, stable_rank,\n"
            "                  effective_rank, k90, k99, max_over_rms, kurtosis, alpha, alpha_xmin,\n"
            "                  alpha_ks, alpha_n\n"
            "  --threads N     threads (default: all cores)\n\n"
            "--super-weights: super weights as the Super Weight paper (Yu et al., 2024) finds\n"
            "them: one forward pass of MODEL over the prompt records, per layer, the largest\n"
            "|input| of down_proj (channel = column j) and the largest |output| (row i), prints\n"
            "that table (the paper's spike plot), and reports as candidates the layers where\n"
            "both spike: at least R times the median of the other layers; the candidate super\n"
            "weight is W[i][j] of that layer's down_proj (its value is printed). Keep it in full\n"
            "precision when quantizing (keep-outliers=N of rtn/gptq keeps the N largest |w|).\n"
            "  --prompt TEXT     the prompt (default \"Summer is warm. Winter is cold.\")\n"
            "  --spike-ratio R   the candidate threshold (default 5)\n"
            "  --json            one object per layer (layer, tensor, max_input, input_channel,\n"
            "                    input_token, max_output, output_row, output_token, weight,\n"
            "                    input_ratio, output_ratio, candidate), then {\"summary\": {model,\n"
            "                    prompt, tokens, layers, spike_ratio, candidates: [{layer,\n"
            "                    tensor, row, col, weight, max_input, max_output}]}}\n\n"
            "examples: structmat inspect models/shakespeare-llama-3m\n"
            "          structmat inspect models/shakespeare-llama-3m --super-weights\n");
}

static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.9g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

static bool selected(const cli_matrix *it, const char **only, int nonly) {
    if (!nonly) return true;
    for (int j = 0; j < nonly; j++)
        if (strcmp(only[j], it->name) == 0) return true;
    return false;
}

// Analyses the selected items (every one when nonly is 0) and prints rows and the summary.
static int inspect_items(const cli_common *cp, const cli_matrices *src, const char **only,
                         int nonly) {
    const cli_common c = *cp;
    const cli_matrix *items = src->items;
    const char *path = src->path;
    int n = src->n;
    for (int j = 0; j < nonly; j++) {
        bool found = false;
        for (int i = 0; i < n; i++) found |= strcmp(items[i].name, only[j]) == 0;
        if (!found) {
            fprintf(stderr, "structmat inspect: %s: no matrix named \"%s\"\n", path, only[j]);
            return 1;
        }
    }
    int todo = 0;
    for (int i = 0; i < n; i++) todo += selected(&items[i], only, nonly);
    if (!c.json)
        printf("%-44s %-11s %-14s %9s %9s %8s %8s %5s %5s %8s %8s %7s\n", "tensor", "shape",
               "dtype|spec", "fro", "spectral", "stable_r", "eff_rank", "k90", "k99", "max/rms",
               "kurtosis", "alpha");
    sm_progress pr;
    sm_progress_init(&pr, "inspect", todo);
    int done = 0, rc = 0;
    double sum_alpha = 0, sum_stable = 0, sum_erank_frac = 0;
    int n_alpha = 0;
    int64_t params = 0;
    for (int i = 0; i < n; i++) {
        const cli_matrix *t = &items[i];
        if (!selected(t, only, nonly)) continue;
        sm_progress_step(&pr, done, t->name);
        float *W = NULL;
        sm_matrix_stats ms;
        if (cli_matrices_read(src, i, &W) != SM_OK ||
            sm_matrix_analyze(W, t->rows, t->cols, &ms, NULL) != SM_OK) {
            sm_progress_end(&pr);
            cli_fail("inspect", t->name);
            free(W);
            rc = 1;
            continue;
        }
        free(W);
        done++;
        params += t->rows * t->cols;
        sum_stable += ms.stable_rank;
        sum_erank_frac += ms.effective_rank / (double)(t->rows < t->cols ? t->rows : t->cols);
        if (isfinite(ms.alpha)) sum_alpha += ms.alpha, n_alpha++;
        if (c.json) {
            printf("{\"tensor\":");
            cli_json_str(stdout, t->name);
            printf(",\"shape\":[%lld,%lld],\"%s\":", (long long)t->rows, (long long)t->cols,
                   t->is_op ? "spec" : "dtype");
            cli_json_str(stdout, t->kind);
            json_num(stdout, "fro_norm", ms.fro_norm);
            json_num(stdout, "spectral_norm", ms.spectral_norm);
            json_num(stdout, "stable_rank", ms.stable_rank);
            json_num(stdout, "effective_rank", ms.effective_rank);
            printf(",\"k90\":%lld,\"k99\":%lld", (long long)ms.k90, (long long)ms.k99);
            json_num(stdout, "max_over_rms", ms.max_over_rms);
            json_num(stdout, "kurtosis", ms.kurtosis);
            json_num(stdout, "alpha", ms.alpha);
            json_num(stdout, "alpha_xmin", ms.alpha_xmin);
            json_num(stdout, "alpha_ks", ms.alpha_ks);
            printf(",\"alpha_n\":%lld}\n", (long long)ms.alpha_n);
        } else {
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)t->rows,
                     (long long)t->cols);
            printf("%-44s %-11s %-14s %9.4g %9.4g %8.2f %8.1f %5lld %5lld %8.2f %8.3f %7.3f\n",
                   t->name, shape, t->kind, ms.fro_norm, ms.spectral_norm, ms.stable_rank,
                   ms.effective_rank, (long long)ms.k90, (long long)ms.k99, ms.max_over_rms,
                   ms.kurtosis, ms.alpha);
        }
        fflush(stdout);
    }
    sm_progress_end(&pr);
    double ma = n_alpha ? sum_alpha / n_alpha : NAN;
    if (c.json) {
        printf("{\"summary\":{\"path\":");
        cli_json_str(stdout, path);
        printf(",\"matrices\":%d,\"params\":%lld", done, (long long)params);
        json_num(stdout, "mean_alpha", ma);
        json_num(stdout, "mean_stable_rank", done ? sum_stable / done : NAN);
        json_num(stdout, "mean_effective_rank_fraction", done ? sum_erank_frac / done : NAN);
        printf("}}\n");
    } else {
        printf("\n%d matrices, %lld parameters; mean alpha %.3f (WeightWatcher: 2-6 is typical of "
               "well-trained layers), mean stable rank %.2f, mean effective rank %.1f%% of full\n",
               done, (long long)params, ma, done ? sum_stable / done : 0.0,
               done ? 100.0 * sum_erank_frac / done : 0.0);
    }
    return rc;
}

// Options; only has room for every argument.
static int inspect_args(int argc, char **argv, const char **only) {
    cli_common c = {0};
    const char *path = NULL, *prompt = NULL;
    int nonly = 0;
    bool super = false;
    double ratio = 5;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--tensor") == 0) {
            if (!(only[nonly++] = cli_value(argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--super-weights") == 0) {
            super = true;
        } else if (strcmp(argv[i], "--prompt") == 0) {
            if (!(prompt = cli_value(argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--spike-ratio") == 0) {
            const char *v = cli_value(argc, argv, &i);
            char *end = NULL;
            if (!v) return 2;
            ratio = strtod(v, &end);
            if (!end || *end || end == v || !(ratio > 0) || !isfinite(ratio)) {
                fprintf(stderr, "structmat inspect: --spike-ratio %s: expected a number > 0\n", v);
                return 2;
            }
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "structmat inspect: unknown option %s\n", argv[i]);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "structmat inspect: one PATH only\n");
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    sm_set_threads(c.threads);
    if ((prompt || ratio != 5) && !super) {
        fprintf(stderr, "structmat inspect: --prompt and --spike-ratio go with --super-weights\n");
        return 2;
    }
    if (super && nonly) {
        fprintf(stderr, "structmat inspect: --super-weights looks at every down_proj; no "
                "--tensor\n");
        return 2;
    }
    if (super) return inspect_super_weights(path, prompt, ratio, c.json);
    cli_matrices src;
    if (cli_matrices_open("inspect", path, false, &src)) return 1;
    int rc = inspect_items(&c, &src, only, nonly);
    cli_matrices_close(&src);
    return rc;
}

int cmd_inspect(int argc, char **argv) {
    const char **only = calloc((size_t)argc + 1, sizeof *only);
    if (!only) return cli_fail("inspect", "out of memory");
    int rc = inspect_args(argc, argv, only);
    free(only);
    return rc;
}

