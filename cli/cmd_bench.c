// structmat bench: options; the measuring lives in bench/*.c.
#include "cli.h"

#include "../bench/bench.h"
#include "base/base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: structmat bench [options]\n\n"
            "Measures (1) the machine's one-thread read bandwidth (a sweep over 1 GiB), (2) the\n"
            "apply throughput of each structure against dense OpenBLAS at 1024x1024, 4096x4096\n"
            "and 4096x11008 (out x in) for N = 1 and N = 64, each operator first checked against\n"
            "to_dense-then-GEMM (PASS/FAIL), and (3) fit time and error of lowrank:rank=256 with\n"
            "the exact and the randomized SVD at 1024x1024 and 4096x4096. N = 1 rotates over\n"
            "copies of the operator holding --working-set MiB so weights stream from DRAM.\n"
            "Specs that cannot be fitted are reported as unavailable. (4) runs a synthetic dense\n"
            "F32 Llama with random weights (--model-shape; default dim 768, ffn 2048, 12 layers,\n"
            "12 heads, vocab 32000: ~110M parameters) through the model runtime: batch-1 decode\n"
            "as GB/s of weight traffic per token against the bandwidth of (1), and a prefill of\n"
            "T tokens as GFLOP/s against OpenBLAS sgemm on the same layer shapes. The default\n"
            "run takes a few minutes; progress goes to stderr.\n\n"
            "options:\n"
            "  --quick            small shapes and working sets (a smoke test, seconds)\n"
            "  --filter SUBSTR    only results whose name contains SUBSTR; names are\n"
            "                     \"bandwidth\", \"apply SPEC MxN N=K\", \"fit SPEC MxN\",\n"
            "                     \"model decode dD fF lL hH vV\", \"model prefill ...\"\n"
            "  --model            only the model section (and the bandwidth it is set against)\n"
            "  --model-shape D,F,L,H,V  synthetic model: dim, ffn, layers, heads, vocab\n"
            "                     (default 768,2048,12,12,32000; --quick 64,128,2,4,256)\n"
            "  --prefill-tokens T prefill batch (default 128; --quick 16)\n"
            "  --decode-tokens K  tokens per decode rep (default 16; --quick 4)\n"
            "  --reps N           timed repetitions per line (default: 20 passes for N = 1,\n"
            "                     about 1 s worth for N = 64, model decode 10, prefill 5;\n"
            "                     --quick: 3)\n"
            "  --threads N        OpenMP and OpenBLAS threads (default 1; 0 = all cores)\n"
            "  --json             one JSON object per line: bench = machine | bandwidth | apply |\n"
            "                     fit; apply lines have spec, canonical, shape, m, n, N, status,\n"
            "                     time_ms (min), median_ms, gflops (2 macs N / s), gbs (operator\n"
            "                     bytes / s), bw_pct, vs_dense (dense time / time), check\n"
            "                     (PASS | FAIL), rel_err, nbytes, nparams, macs, fit_s, copies,\n"
            "                     ws_mib, reps, threads, isa; unavailable ones have status and\n"
            "                     error; fit lines have spec, shape, rank, status, time_s,\n"
            "                     rel_err, speedup_vs_exact, err_vs_exact; model lines have\n"
            "                     name, phase (decode | prefill), status, dim, hidden_dim,\n"
            "                     n_layers, n_heads, vocab, params, threads, isa, reps,\n"
            "                     time_ms (min), median_ms, tokens_per_s, load1; decode adds\n"
            "                     tokens, weight_bytes (per token), kv_bytes, gbs, bw_gbs (the\n"
            "                     best of bw_sweep_gbs and bw_near_gbs, sweeps between reps),\n"
            "                     bw_pct; prefill adds T, flops (layers' GEMMs), gflops,\n"
            "                     sgemm_ms, sgemm_gflops, vs_sgemm; machine and end\n"
            "                     lines have load1, the 1-minute load average\n"
            "  --shapes LIST      apply shapes, e.g. 1024x1024,4096x11008,11008x4096\n"
            "  --specs LIST       specs separated by ';' (dense is always run as the baseline)\n"
            "  --batch LIST       N values (default 1,64)\n"
            "  --working-set MIB  N = 1 rotation target (default 512; --quick 8)\n"
            "  --seed S           random matrices' seed (default 1)\n"
            "\nExit status 1 if an apply check fails.\n");
}

static bool parse_shape(const char *s, int64_t *m, int64_t *n) {
    char *end;
    long long a = strtoll(s, &end, 10);
    if (*end != 'x') return false;
    long long b = strtoll(end + 1, &end, 10);
    if ((*end && *end != ',') || a <= 0 || b <= 0 || a > (1 << 20) || b > (1 << 20)) return false;
    *m = a, *n = b;
    return true;
}

static bool parse_shapes(const char *s, int64_t (*out)[2], int *count) {
    *count = 0;
    while (*s) {
        if (*count == BENCH_MAX_SHAPES || !parse_shape(s, &out[*count][0], &out[*count][1]))
            return false;
        (*count)++;
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return *count > 0;
}

static bool parse_batch(const char *s, int64_t *out, int *count) {
    *count = 0;
    for (;;) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1 || v > (1 << 16) || *count == 4) return false;
        out[(*count)++] = v;
        if (!*end) return true;
        if (*end != ',') return false;
        s = end + 1;
    }
}

static bool parse_model_shape(const char *s, int64_t *out) {
    for (int k = 0; k < 5; k++) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1 || v > (1 << 20)) return false;
        out[k] = v;
        if (k == 4) return !*end;
        if (*end != ',') return false;
        s = end + 1;
    }
    return false;
}

static bool parse_pos(const char *s, double lo, double hi, double *v) {
    char *end;
    if (!s || !*s) return false;
    *v = strtod(s, &end);
    return !*end && *v >= lo && *v <= hi;
}

int cmd_bench(int argc, char **argv) {
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--quick") == 0) quick = true;
    }
    bench_opts o;
    bench_opts_init(&o, quick);
    cli_common c = {.threads = 1, .seed = o.seed};
    static char specs_buf[4096];
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i];
        double v;
        if (strcmp(a, "--quick") == 0) {
            continue;
        } else if (strcmp(a, "--model") == 0) {
            if (!o.filter) o.filter = "model ";
        } else if (strcmp(a, "--model-shape") == 0) {
            const char *s = cli_value(argc, argv, &i);
            if (!s || !parse_model_shape(s, o.model_shape)) {
                fprintf(stderr,
                        "structmat bench: --model-shape needs DIM,FFN,LAYERS,HEADS,VOCAB\n");
                return 2;
            }
        } else if (strcmp(a, "--prefill-tokens") == 0 || strcmp(a, "--decode-tokens") == 0) {
            bool pre = a[2] == 'p';
            if (!parse_pos(cli_value(argc, argv, &i), 1, 1 << 16, &v) || v != floor(v)) {
                fprintf(stderr, "structmat bench: %s needs a whole number >= 1\n", a);
                return 2;
            }
            *(pre ? &o.prefill_tokens : &o.decode_tokens) = (int64_t)v;
        } else if (strcmp(a, "--filter") == 0) {
            if (!(o.filter = cli_value(argc, argv, &i))) return 2;
        } else if (strcmp(a, "--reps") == 0) {
            if (!parse_pos(cli_value(argc, argv, &i), 1, 100000, &v) || v != floor(v)) {
                fprintf(stderr, "structmat bench: --reps needs a whole number >= 1\n");
                return 2;
            }
            o.reps = (int)v;
        } else if (strcmp(a, "--working-set") == 0) {
            if (!parse_pos(cli_value(argc, argv, &i), 0, 1 << 20, &v)) {
                fprintf(stderr, "structmat bench: --working-set needs MiB >= 0\n");
                return 2;
            }
            o.ws_mib = v;
        } else if (strcmp(a, "--shapes") == 0) {
            const char *s = cli_value(argc, argv, &i);
            if (!s || !parse_shapes(s, o.shapes, &o.nshapes)) {
                fprintf(stderr, "structmat bench: --shapes needs MxN[,MxN...] (at most %d)\n",
                        BENCH_MAX_SHAPES);
                return 2;
            }
        } else if (strcmp(a, "--batch") == 0) {
            const char *s = cli_value(argc, argv, &i);
            if (!s || !parse_batch(s, o.batch, &o.nbatch)) {
                fprintf(stderr, "structmat bench: --batch needs N[,N...] (at most 4, N >= 1)\n");
                return 2;
            }
        } else if (strcmp(a, "--specs") == 0) {
            const char *s = cli_value(argc, argv, &i);
            if (!s || strlen(s) >= sizeof specs_buf) return 2;
            strcpy(specs_buf, s);
            o.nspecs = 0;
            for (char *t = strtok(specs_buf, ";"); t && o.nspecs < BENCH_MAX_SPECS;
                 t = strtok(NULL, ";"))
                o.specs[o.nspecs++] = t;
            if (o.nspecs == 0) {
                fprintf(stderr, "structmat bench: --specs needs SPEC[;SPEC...]\n");
                return 2;
            }
        } else {
            fprintf(stderr, "structmat bench: unknown option \"%s\" (see --help)\n", a);
            return 2;
        }
    }
    if (c.out) {
        fprintf(stderr, "structmat bench: results go to stdout; redirect them (no -o)\n");
        return 2;
    }
    o.json = c.json;
    o.seed = c.seed;
    o.threads = c.threads > 0 ? c.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    sm_set_threads(o.threads);

    double t0 = sm_now();
    bench_machine(&o);
    bool bw_print = bench_selected(&o, "bandwidth"), apply = bench_apply_selected(&o);
    bool model = bench_model_selected(&o);
    double bw = NAN;
    if (bw_print || apply || model) {
        fprintf(stderr, "[bench] bandwidth: %.0f MiB sweep\n", o.bw_mib);
        bw = bench_bandwidth(&o, bw_print);
    }
    int fails = 0;
    if (apply) fails += bench_apply(&o, bw);
    fails += bench_fit(&o);
    fails += bench_model(&o, bw);
    // The load at the end says whether other work ran meanwhile (timings then are noisy).
    double secs = sm_now() - t0;
    if (o.json) {
        bench_json_begin("end");
        bench_json_num("seconds", secs);
        bench_json_num("load1", bench_load());
        bench_json_int("failures", fails);
        bench_json_end();
    } else {
        printf("\n%d check(s) failed; %.0f s; load average at the end %.2f\n", fails, secs,
               bench_load());
    }
    return fails ? 1 : 0;
}
