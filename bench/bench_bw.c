// The machine limit for weight streaming: a one-thread, read-only sweep summing floats.
#include "bench.h"

#include "base/base.h"

#include <math.h>
#include <stdio.h>

#define LANES                                                                                      \
    128 // independent partial sums: the compiler vectorizes them into 8 zmm (or 16
        // ymm) accumulators, so no add latency chain limits the loop

// noinline keeps the timed loop from being merged with the caller's; the clones let the
// compiler use the widest vectors the CPU has.
__attribute__((noinline, target_clones("avx512f", "avx2", "default"))) static float
sum_floats(const float *a, int64_t n) {
    float acc[LANES] = {0};
    for (int64_t i = 0; i + LANES <= n; i += LANES)
#pragma GCC unroll 128
        for (int j = 0; j < LANES; j++) acc[j] += a[i + j];
    float s = 0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

double bench_bandwidth(const bench_opts *o, bool print) {
    int64_t n = (int64_t)(o->bw_mib * 1048576.0 / sizeof(float));
    n -= n % LANES;
    float *a = sm_alloc((size_t)n * sizeof(float));
    if (!a) {
        fprintf(stderr, "structmat bench: no memory for a %.0f MiB sweep\n", o->bw_mib);
        return NAN;
    }
    for (int64_t i = 0; i < n; i++) a[i] = (float)(i & 1023); // touch every page first
    int passes = o->quick ? 3 : 10; // other work on the machine only ever slows a pass down
    double best = 1e30, check = 0;
    for (int p = 0; p < passes; p++) {
        double t = sm_now();
        check += sum_floats(a, n);
        t = sm_now() - t;
        if (t < best) best = t;
    }
    sm_free(a);
    double gbs = (double)n * sizeof(float) / best / 1e9;
    if (check != check) gbs = NAN; // the sum is consumed so the loop cannot be dropped
    if (print) {
        if (o->json) {
            bench_json_begin("bandwidth");
            bench_json_num("mib", o->bw_mib);
            bench_json_int("threads", 1);
            bench_json_int("passes", passes);
            bench_json_num("time_ms", best * 1e3);
            bench_json_num("gbs", gbs);
        } else {
            printf("bandwidth  read sweep of %.0f MiB, 1 thread, best of %d: %.1f GB/s\n\n",
                   o->bw_mib, passes, gbs);
            fflush(stdout);
        }
        if (o->json) bench_json_end();
    }
    return gbs;
}
