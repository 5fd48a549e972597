// Shared pieces of `structmat bench`: the default plan, the filter, and result-line output.
#include "bench.h"

#include "cli.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The structures compared with dense, in the order printed. Specs that do not fit a shape (or
// whose structure is not built) are reported as unavailable.
static const char *k_specs[] = {
    "dense",
    "dense:dtype=bf16",
    "dense:dtype=f16",
    "dense:dtype=q8",
    "dense:dtype=q4",
    "lowrank:ratio=0.25",
    "lowrank:ratio=0.25,dtype=q8",
    "monarch:blocks=4",
    "blockdiag:blocks=4",
    "blocklowrank:blocks=4,ratio=0.25",
    "kron:a=32x32",
    // Apply speed does not depend on how well the factors fit: iters=0 keeps BLAST's fit to its
    // warm start here (the iterations take minutes at 4096 x 4096; BENCHMARKS.md times them).
    "blast:blocks=4,ratio=0.5,iters=0",
    "blast:blocks=16,ratio=0.5,iters=0",
    "sparse:density=0.5",
    "sparse:nm=2:4",
    "sparse:density=0.05",
    // Low-bit: batch-1 apply straight from packed codes / sign bits (BENCHMARKS.md, "Low-bit").
    "rtn:bits=4",
    "rtn:bits=4,group=128",
    "rtn:bits=2",
    "onebit",
};

void bench_opts_init(bench_opts *o, bool quick) {
    memset(o, 0, sizeof *o);
    o->threads = 1;
    o->quick = quick;
    o->seed = 1;
    o->nspecs = (int)(sizeof k_specs / sizeof k_specs[0]);
    for (int i = 0; i < o->nspecs; i++) o->specs[i] = k_specs[i];
    o->nbatch = 2;
    o->batch[0] = 1;
    o->batch[1] = 64;
    if (quick) {
        // Seconds, not minutes: shapes that every default spec divides, tiny working sets.
        o->bw_mib = 64;
        o->ws_mib = 8;
        o->reps = 3;
        o->nshapes = 2;
        o->shapes[0][0] = 256, o->shapes[0][1] = 256;
        o->shapes[1][0] = 256, o->shapes[1][1] = 768;
        o->fit_rank = 32;
        o->nfit_shapes = 1;
        o->fit_shapes[0][0] = 256, o->fit_shapes[0][1] = 256;
        o->model_shape[0] = 64, o->model_shape[1] = 128, o->model_shape[2] = 2;
        o->model_shape[3] = 4, o->model_shape[4] = 256;
        o->prefill_tokens = 16;
        o->decode_tokens = 4;
        return;
    }
    // DESIGN.md: bandwidth sweeps >= 1 GiB; N = 1 rotates over > 4x the L3, written for a 48 MiB
    // L3. This VM reports 480 MiB, yet a 192 MiB set reads ~15% faster than 1 GiB while 512 MiB
    // and 2 GiB of copies time the same, so the default set is 512 MiB (BENCHMARKS.md).
    o->bw_mib = 1024;
    o->ws_mib = 512;
    o->nshapes = 3;
    o->shapes[0][0] = 1024, o->shapes[0][1] = 1024;
    o->shapes[1][0] = 4096, o->shapes[1][1] = 4096;
    o->shapes[2][0] = 4096, o->shapes[2][1] = 11008;
    o->fit_rank = 256;
    o->nfit_shapes = 2;
    o->fit_shapes[0][0] = 1024, o->fit_shapes[0][1] = 1024;
    o->fit_shapes[1][0] = 4096, o->fit_shapes[1][1] = 4096;
    // A ~110M-parameter Llama (TinyStories-110M-like shapes; 85M in the layers, 24.6M each in
    // the embedding and the output head): 438 MB of F32 linear weights per decoded token.
    o->model_shape[0] = 768, o->model_shape[1] = 2048, o->model_shape[2] = 12;
    o->model_shape[3] = 12, o->model_shape[4] = 32000;
    o->prefill_tokens = 128;
    o->decode_tokens = 16;
}

bool bench_selected(const bench_opts *o, const char *name) {
    return !o->filter || strstr(name, o->filter) != NULL;
}

void bench_fill_uniform(float *x, int64_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17; // xorshift64: fast, and good enough here
        x[i] = (float)((double)(s >> 11) * 0x1.0p-52 - 1.0);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static bool g_first;

void bench_json_begin(const char *bench) {
    printf("{");
    g_first = true;
    bench_json_str("bench", bench);
}

static void sep(const char *key) {
    if (!g_first) printf(", ");
    g_first = false;
    cli_json_str(stdout, key);
    printf(": ");
}

void bench_json_str(const char *key, const char *value) {
    sep(key);
    cli_json_str(stdout, value);
}

void bench_json_num(const char *key, double value) {
    sep(key);
    if (isfinite(value))
        printf("%.6g", value);
    else
        printf("null");
}

void bench_json_int(const char *key, int64_t value) {
    sep(key);
    printf("%lld", (long long)value);
}

void bench_json_end(void) {
    printf("}\n");
    fflush(stdout);
}

// The CPU model from /proc/cpuinfo ("?" elsewhere).
static void cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "?");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ') v++;
                snprintf(buf, cap, "%s", v);
                buf[strcspn(buf, "\n")] = 0;
            }
            break;
        }
    fclose(f);
}

double bench_load(void) {
    double l = NAN;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = NAN;
        fclose(f);
    }
    return l;
}

void bench_machine(const bench_opts *o) {
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    const char *blas = openblas_get_config();
    if (o->json) {
        bench_json_begin("machine");
        bench_json_str("cpu", cpu);
        bench_json_int("threads", o->threads);
        bench_json_str("isa", sm_isa_name(sm_isa_active()));
        bench_json_str("openblas", blas ? blas : "?");
        bench_json_str("version", SM_VERSION);
        bench_json_num("load1", bench_load());
        bench_json_end();
        return;
    }
    printf("structmat %s bench: %s; kernels %s; %d thread(s); %s; load average %.2f\n\n",
           SM_VERSION, cpu, sm_isa_name(sm_isa_active()), o->threads, blas ? blas : "OpenBLAS ?",
           bench_load());
    fflush(stdout);
}
