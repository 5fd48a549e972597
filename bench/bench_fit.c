// Fit time of a rank-R low-rank operator: exact SVD (LAPACK sgesdd) against the randomized one,
// with the relative Frobenius error ||W - W_R|| / ||W|| of each (exact = the optimum).
//
// The matrix is W = G1 diag(d) G2 with uniform random G1 (m, k), G2 (k, n), k = min(m, n) and
// d_j = (j + 1)^-1/2: a slowly decaying spectrum like a trained layer's. A flat (pure noise)
// spectrum would be the randomized method's worst case and says little about real weights.
#include "bench.h"

#include "base/base.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sm_status make_matrix(float *W, int64_t m, int64_t n, uint64_t seed) {
    int64_t k = m < n ? m : n;
    float *G1 = sm_alloc((size_t)(m * k) * sizeof(float));
    float *G2 = sm_alloc((size_t)(k * n) * sizeof(float));
    if (!G1 || !G2) {
        sm_free(G1), sm_free(G2);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    bench_fill_uniform(G1, m * k, seed);
    bench_fill_uniform(G2, k * n, seed + 7);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < k; j++) G1[i * k + j] *= (float)(1.0 / sqrt((double)(j + 1)));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, G1, (int)k,
                G2, (int)n, 0.0f, W, (int)n);
    sm_free(G1), sm_free(G2);
    return SM_OK;
}

typedef struct fit_result {
    bool ok;
    double seconds, rel_err;
    char error[256];
} fit_result;

static fit_result fit_one(const bench_opts *o, const char *spec, const float *W, int64_t m,
                          int64_t n, float *D) {
    fit_result r = {0};
    sm_fit_opts fo = {.seed = o->seed};
    sm_op *op = NULL;
    fprintf(stderr, "[bench] fit %s on %lldx%lld\n", spec, (long long)m, (long long)n);
    double t0 = sm_now();
    if (sm_op_fit(W, m, n, spec, &fo, &op) != SM_OK) {
        snprintf(r.error, sizeof r.error, "%s", sm_last_error());
        return r;
    }
    r.seconds = sm_now() - t0;
    if (sm_op_to_dense(op, D) != SM_OK) {
        snprintf(r.error, sizeof r.error, "to_dense: %s", sm_last_error());
        sm_op_free(op);
        return r;
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < m * n; i++) {
        double d = (double)W[i] - (double)D[i];
        num += d * d;
        den += (double)W[i] * (double)W[i];
    }
    r.rel_err = sqrt(num / den);
    r.ok = true;
    sm_op_free(op);
    return r;
}

static void print_fit(const bench_opts *o, const char *spec, int64_t m, int64_t n,
                      const fit_result *r, const fit_result *exact) {
    char shape[48];
    snprintf(shape, sizeof shape, "%lldx%lld", (long long)m, (long long)n);
    bool vs = exact && exact->ok && r->ok;
    if (o->json) {
        bench_json_begin("fit");
        bench_json_str("spec", spec);
        bench_json_str("shape", shape);
        bench_json_int("m", m);
        bench_json_int("n", n);
        bench_json_int("rank", o->fit_rank);
        bench_json_str("status", r->ok ? "ok" : "unavailable");
        if (r->ok) {
            bench_json_num("time_s", r->seconds);
            bench_json_num("rel_err", r->rel_err);
            if (vs) {
                bench_json_num("speedup_vs_exact", exact->seconds / r->seconds);
                bench_json_num("err_vs_exact", r->rel_err / exact->rel_err);
            }
        } else {
            bench_json_str("error", r->error);
        }
        bench_json_end();
        return;
    }
    if (!r->ok) {
        printf("%-34s %-10s  unavailable: %s\n", spec, shape, r->error);
    } else {
        printf("%-34s %-10s %9.3f %10.5f", spec, shape, r->seconds, r->rel_err);
        if (vs)
            printf("   %.1fx faster than exact, error %.4fx the optimum",
                   exact->seconds / r->seconds, r->rel_err / exact->rel_err);
        printf("\n");
    }
    fflush(stdout);
}

int bench_fit(const bench_opts *o) {
    char exact_spec[64], random_spec[96], name[160];
    snprintf(exact_spec, sizeof exact_spec, "lowrank:rank=%lld", (long long)o->fit_rank);
    snprintf(random_spec, sizeof random_spec, "lowrank:rank=%lld,solver=random",
             (long long)o->fit_rank);
    bool header = false;
    int fails = 0;
    for (int s = 0; s < o->nfit_shapes; s++) {
        int64_t m = o->fit_shapes[s][0], n = o->fit_shapes[s][1];
        char shape[48];
        snprintf(shape, sizeof shape, "%lldx%lld", (long long)m, (long long)n);
        snprintf(name, sizeof name, "fit %s %s", exact_spec, shape);
        bool want_exact = bench_selected(o, name);
        snprintf(name, sizeof name, "fit %s %s", random_spec, shape);
        bool want_random = bench_selected(o, name);
        if (!want_exact && !want_random) continue;
        if (!header && !o->json) {
            printf("\n%-34s %-10s %9s %10s\n", "fit: spec", "shape", "time_s", "rel_err");
            header = true;
        }
        float *W = sm_alloc((size_t)(m * n) * sizeof(float));
        float *D = sm_alloc((size_t)(m * n) * sizeof(float));
        if (!W || !D || make_matrix(W, m, n, o->seed + 100 + (uint64_t)s) != SM_OK) {
            fprintf(stderr, "structmat bench: out of memory for %s\n", shape);
            sm_free(W), sm_free(D);
            return fails + 1;
        }
        // The exact fit runs whenever the randomized one does: it is the reference for both
        // the speed-up and the error ratio.
        fit_result ex = fit_one(o, exact_spec, W, m, n, D);
        if (want_exact) print_fit(o, exact_spec, m, n, &ex, NULL);
        if (want_random) {
            fit_result rr = fit_one(o, random_spec, W, m, n, D);
            print_fit(o, random_spec, m, n, &rr, &ex);
        }
        if (!ex.ok) fails++; // the exact solver is always built
        sm_free(W), sm_free(D);
    }
    return fails;
}
