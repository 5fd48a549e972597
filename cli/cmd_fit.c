// structmat fit PATH (--tensor NAME... | --all) --spec SPEC [--calib STATS] [--json] [-o FILE]
//               [--save-model DIR] [--allow-nonfinite]
#include "cli.h"

#include <dirent.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "structmat_model.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: structmat fit PATH (--tensor NAME... | --all) --spec SPEC [options]\n\n"
            "Fits each matrix to the structure SPEC (see `structmat specs`) and prints the relative\n"
            "Frobenius error ||W - W_hat||_F / ||W||_F, parameters, bytes, bits per weight\n"
            "(bytes * 8 / (m n)), multiply-adds per input row and the fit time. PATH is a\n"
            "safetensors file or checkpoint directory, or a llama2.c .bin (its matrices get the\n"
            "Hugging Face names, e.g. model.layers.0.self_attn.q_proj.weight).\n\n"
            "  --tensor NAME     a matrix to fit (repeatable)\n"
            "  --all             every 2-D weight except the token embedding\n"
            "  --spec SPEC       e.g. lowrank:ratio=0.5, monarch:blocks=4, dense:dtype=bf16\n"
            "  -o FILE           write the fitted operators as a structmat safetensors file\n"
            "  --save-model DIR  write the whole model with the fitted matrices in place as a\n"
            "                    checkpoint directory that eval and generate load (PATH must be\n"
            "                    a model they load, with half-split RoPE: not a llama2.c file);\n"
            "                    DIR appears complete or not at all\n"
            "  --calib STATS     activation-aware: fit each matrix to ||X (W - W_hat)^T||_F with\n"
            "                    its input statistics from `structmat calibrate`, and report\n"
            "                    act_rel_error = sqrt(tr(dW H dW^T) / tr(W H W^T)), H = X^T X\n"
            "  --allow-nonfinite fit matrices holding NaN or Inf with those values replaced by\n"
            "                    0 (a warning gives the count and the first); rel_error is then\n"
            "                    measured against the replaced matrix. Without it such a matrix\n"
            "                    is refused, naming it and its first non-finite value\n"
            "  --force           replace FILE, or DIR when it holds a checkpoint (as a whole)\n"
            "  --json            one JSON object per tensor per line, then {\"summary\": {...}};\n"
            "                    keys: tensor, spec, shape, rel_error, params, bytes, bpw, macs,\n"
            "                    fit_seconds; with --calib also act_rel_error (and\n"
            "                    mean_act_rel_error in the summary)\n"
            "  --seed S          seed of randomized solvers (default 24301)\n"
            "  --threads N       threads (default: all cores)\n\n"
            "examples:\n"
            "  structmat fit models/shakespeare-llama-3m --all --spec lowrank:ratio=0.5\n"
            "  structmat fit models/shakespeare-llama-3m --tensor model.layers.0.mlp.up_proj.weight \\\n"
            "      --spec monarch:blocks=4 --json\n"
            "  structmat fit models/shakespeare-llama-3m --all --spec dense:dtype=q4 --save-model q4\n"
            "  structmat fit models/stories260K.bin --all --spec lowrank:ratio=0.5\n"
            "  structmat calibrate models/shakespeare-llama-3m -f data/tinyshakespeare.txt \\\n"
            "      -o s.calib\n"
            "  structmat fit models/shakespeare-llama-3m --all --spec lowrank:ratio=0.5 \\\n"
            "      --calib s.calib\n");
}

// --allow-nonfinite: NaN and +-Inf in the matrices are fitted as 0.
static bool g_allow_nonfinite;

// Replaces the non-finite values of W (m, n) by 0 and says so on stderr.
static void zero_nonfinite(const char *name, float *W, int64_t m, int64_t n) {
    int64_t count = 0, first = -1;
    for (int64_t i = 0; i < m * n; i++)
        if (!isfinite(W[i])) {
            if (first < 0) first = i;
            count++;
            W[i] = 0.0f;
        }
    if (count)
        fprintf(stderr,
                "structmat fit: warning: %s: %lld non-finite values replaced by 0 (the first at "
                "row %lld, column %lld; --allow-nonfinite)\n",
                name, (long long)count, (long long)(first / n), (long long)(first % n));
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

// Fits the matrices sel[0..nsel) of src (to their calibration statistics in cal, when given),
// prints a row each and the summary, and writes the operators to c->out and (save_model) the
// model with them in place to save_model if asked.
static int fit_list(const cli_common *cp, const cli_matrices *src, const char *spec,
                    const int *sel, int nsel, const char *save_model, sm_calib *cal) {
    const cli_common c = *cp;
    sm_op **ops = calloc((size_t)nsel + 1, sizeof *ops);
    const char **names = calloc((size_t)nsel + 1, sizeof *names);
    if (!ops || !names) {
        free(ops), free(names);
        return cli_fail("fit", "out of memory");
    }
    if (!c.json)
        printf("%-44s %-28s %-11s %9s %9s %9s %6s %9s %8s%s\n", "tensor", "spec", "shape",
               "rel_error", "params", "bytes", "bpw", "macs", "fit_s", cal ? "   act_err" : "");
    sm_fit_opts fo = {.seed = c.seed};
    sm_progress pr;
    sm_progress_init(&pr, "fit", nsel);
    int rc = 0, done = 0;
    int64_t tot_dense = 0, tot_params = 0, tot_bytes = 0;
    double tot_err2 = 0, tot_energy = 0, tot_time = 0, sum_rel = 0, sum_act = 0;
    for (int j = 0; j < nsel && rc == 0; j++) {
        const cli_matrix *t = &src->items[sel[j]];
        int64_t m = t->rows, n = t->cols;
        names[j] = t->name;
        sm_progress_step(&pr, j, t->name);
        // The matrix first (its dtype may be unreadable; then the shape means nothing), and
        // the fit before the second buffer, which sm_op_fit's shape checks make safe to size.
        float *W = NULL, *D = NULL;
        char what[300];
        snprintf(what, sizeof what, "%s (%lldx%lld)", t->name, (long long)m, (long long)n);
        if (cli_matrices_read(src, sel[j], &W) != SM_OK) {
            sm_progress_end(&pr);
            rc = cli_fail("fit", t->name);
            free(W);
            break;
        }
        if (g_allow_nonfinite) zero_nonfinite(t->name, W, m, n);
        sm_stats stats;
        if (cal && sm_calib_get(cal, t->name, n, &stats) != SM_OK) {
            sm_progress_end(&pr);
            rc = cli_fail("fit", "--calib");
            free(W);
            break;
        }
        fo.stats = cal ? &stats : NULL;
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
        double err = rel_error(W, D, m * n), energy = 0, act = NAN;
        for (int64_t i = 0; i < m * n; i++) energy += (double)W[i] * W[i];
        if (cal && sm_act_rel_error(W, D, m, n, stats.gram, &act) != SM_OK) {
            sm_progress_end(&pr);
            rc = cli_fail("fit", what);
            free(W), free(D);
            break;
        }
        free(W), free(D);
        const sm_op *op = ops[j];
        int64_t params = sm_op_nparams(op), bytes = sm_op_nbytes(op), macs = sm_op_macs(op);
        double bpw = (double)bytes * 8.0 / (double)(m * n);
        done++;
        tot_dense += m * n, tot_params += params, tot_bytes += bytes;
        tot_err2 += err * err * energy, tot_energy += energy, tot_time += secs, sum_rel += err;
        if (cal) sum_act += act;
        if (c.json) {
            printf("{\"tensor\":");
            cli_json_str(stdout, t->name);
            printf(",\"spec\":");
            cli_json_str(stdout, sm_op_spec(op));
            printf(",\"shape\":[%lld,%lld],\"rel_error\":%.9g,\"params\":%lld,\"bytes\":%lld,"
                   "\"bpw\":%.6g,\"macs\":%lld,\"fit_seconds\":%.6g",
                   (long long)m, (long long)n, err, (long long)params, (long long)bytes, bpw,
                   (long long)macs, secs);
            if (cal) printf(",\"act_rel_error\":%.9g", act);
            printf("}\n");
        } else {
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)m, (long long)n);
            printf("%-44s %-28s %-11s %9.5f %9lld %9lld %6.2f %9lld %8.3f", t->name,
                   sm_op_spec(op), shape, err, (long long)params, (long long)bytes, bpw,
                   (long long)macs, secs);
            if (cal) printf(" %9.5f", act);
            printf("\n");
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
                   "\"overall_rel_error\":%.9g,\"fit_seconds\":%.6g",
                   done, (long long)tot_dense, (long long)tot_params, (long long)tot_bytes,
                   (double)tot_params / (double)tot_dense,
                   (double)tot_bytes * 8.0 / (double)tot_dense, sum_rel / done, werr, tot_time);
            if (cal) printf(",\"mean_act_rel_error\":%.9g", sum_act / done);
            printf("}}\n");
        } else {
            printf("\n%s: %d matrices, %lld of %lld parameters (%.1f%%), %.3f bits per weight, "
                   "mean rel_error %.4f, overall %.4f, %.2f s\n",
                   spec, done, (long long)tot_params, (long long)tot_dense,
                   100.0 * (double)tot_params / (double)tot_dense,
                   (double)tot_bytes * 8.0 / (double)tot_dense, sum_rel / done, werr, tot_time);
            if (cal)
                printf("activation-aware (--calib): mean act_rel_error %.4f\n", sum_act / done);
        }
    }
    if (rc == 0 && c.out) {
        if (sm_ops_save(c.out, done, names, (const sm_op *const *)ops, c.force) != SM_OK)
            rc = cli_fail("fit", NULL);
        else if (!c.json)
            fprintf(stderr, "wrote %s\n", c.out);
    }
    if (rc == 0 && save_model) {
        // The model takes the operators over, then is written with them in place.
        for (int j = 0; j < done && rc == 0; j++) {
            if (sm_model_linear_set(src->model, src->items[sel[j]].linear, ops[j]) != SM_OK)
                rc = cli_fail("fit", names[j]);
            else
                ops[j] = NULL;
        }
        if (rc == 0 && sm_model_save(src->model, save_model, c.force) != SM_OK)
            rc = cli_fail("fit", NULL);
        else if (rc == 0 && !c.json)
            fprintf(stderr, "wrote %s\n", save_model);
    }
    for (int j = 0; j < nsel; j++) sm_op_free(ops[j]);
    free(ops), free(names);
    return rc;
}

// The matrices to fit: names, or with all every one but the embedding; then fit_list.
static int fit_checkpoint(const cli_common *c, const char *path, const char *spec,
                          const char **names, int nnames, bool all, const char *save_model,
                          sm_calib *cal) {
    cli_matrices src;
    if (cli_matrices_open("fit", path, save_model != NULL, &src)) return 1;
    int *sel = calloc((size_t)src.n + (size_t)nnames + 1, sizeof *sel);
    int nsel = 0, rc = 0;
    if (!sel) rc = cli_fail("fit", "out of memory");
    if (!rc && all) {
        for (int i = 0; i < src.n; i++)
            if (!src.items[i].embedding) sel[nsel++] = i;
        if (nsel == 0) {
            fprintf(stderr, "structmat fit: %s: no 2-D weights to fit\n", path);
            rc = 1;
        }
    }
    for (int j = 0; j < nnames && !rc; j++) {
        int i = cli_matrices_find(&src, names[j]);
        if (i < 0) {
            fprintf(stderr, "structmat fit: %s: %s \"%s\"\n", path,
                    cli_matrices_why_absent(&src, names[j]), names[j]);
            rc = 1;
        } else if (save_model && src.items[i].linear < 0) {
            fprintf(stderr,
                    "structmat fit: --save-model: %s is the token embedding, a lookup table that "
                    "stays as it is\n",
                    names[j]);
            rc = 1;
        } else {
            sel[nsel++] = i;
        }
    }
    if (!rc && save_model) {
        sm_model_info f;
        sm_model_get_info(src.model, &f);
        // Refused now rather than after fitting (sm_model_save says the same).
        if (f.rope_layout != SM_ROPE_HALF) {
            fprintf(stderr,
                    "structmat fit: --save-model: %s uses interleaved RoPE (llama2.c), which a "
                    "config.json cannot express; -o writes the operators\n",
                    path);
            rc = 1;
        }
    }
    // Statistics for every matrix, of the right size, before any is fitted.
    for (int j = 0; j < nsel && !rc && cal; j++) {
        sm_stats s;
        if (sm_calib_get(cal, src.items[sel[j]].name, src.items[sel[j]].cols, &s) != SM_OK)
            rc = cli_fail("fit", "--calib");
    }
    if (!rc) rc = fit_list(c, &src, spec, sel, nsel, save_model, cal);
    free(sel);
    cli_matrices_close(&src);
    return rc;
}

// Refuses a --save-model directory that cannot be written at the end (the rules of
// sm_model_save, checked before fitting): prints and returns 1.
static int check_model_dir(const char *dir, bool force) {
    struct stat sb;
    if (!*dir) {
        fprintf(stderr, "structmat fit: the --save-model path is empty\n");
        return 1;
    }
    if (stat(dir, &sb) != 0) return cli_check_output("fit", dir, false); // its parent
    if (!S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "structmat fit: --save-model %s: exists and is not a directory\n", dir);
        return 1;
    }
    if (!force) {
        fprintf(stderr, "structmat fit: --save-model %s: exists (use --force to replace it)\n",
                dir);
        return 1;
    }
    // Replaced as a whole, so only a checkpoint (config.json) or an empty directory.
    char *cfg = NULL, *copy = strdup(dir);
    int rc = 0;
    if (asprintf(&cfg, "%s/config.json", dir) < 0) cfg = NULL;
    if (!cfg || !copy) {
        rc = cli_fail("fit", "out of memory");
    } else if (stat(cfg, &sb) != 0) {
        DIR *d = opendir(dir);
        int entries = 0;
        for (struct dirent *e; d && (e = readdir(d)) != NULL;)
            entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
        if (d) closedir(d);
        if (!d || entries) {
            fprintf(stderr,
                    "structmat fit: --save-model %s: a directory that holds no checkpoint (no "
                    "config.json): not replaced\n",
                    dir);
            rc = 1;
        }
    }
    if (!rc && access(dirname(copy), W_OK) != 0) {
        fprintf(stderr, "structmat fit: --save-model %s: cannot write next to it\n", dir);
        rc = 1;
    }
    free(cfg), free(copy);
    return rc;
}

// Options; names has room for every argument.
static int fit_args(int argc, char **argv, const char **names) {
    cli_common c = {.seed = 24301};
    const char *path = NULL, *spec = NULL, *save_model = NULL, *calib = NULL;
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
        } else if (strcmp(argv[i], "--save-model") == 0) {
            if (!(save_model = cli_value(argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--calib") == 0) {
            if (!(calib = cli_value(argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--allow-nonfinite") == 0) {
            g_allow_nonfinite = true;
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
    if (save_model && check_model_dir(save_model, c.force)) return 1;
    sm_set_threads(c.threads);
    sm_spec *parsed;
    if (sm_spec_parse(spec, &parsed) != SM_OK) return cli_fail("fit", NULL);
    sm_spec_free(parsed);
    sm_calib *cal = NULL;
    if (calib && sm_calib_open(calib, &cal) != SM_OK) return cli_fail("fit", "--calib");
    int rc = fit_checkpoint(&c, path, spec, names, nnames, all, save_model, cal);
    sm_calib_free(cal);
    return rc;
}

int cmd_fit(int argc, char **argv) {
    const char **names = calloc((size_t)argc + 1, sizeof *names);
    if (!names) return cli_fail("fit", "out of memory");
    int rc = fit_args(argc, argv, names);
    free(names);
    return rc;
}
