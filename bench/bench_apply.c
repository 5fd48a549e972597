// Apply throughput of each structure against dense OpenBLAS (spec "dense": sgemv / sgemm).
//
// Each spec is fitted once per shape (sm_op_fit on a random matrix) and checked: apply must
// match to_dense-then-GEMM (relative Frobenius error <= 1e-4) for every N before it is timed.
// Timing: one warm-up pass, then min and median of reps, each rep a batch of calls with a
// preallocated workspace. For N = 1, the weight-streaming case, the calls rotate over copies of
// the operator (rebuilt from its parts) holding at least --working-set MiB, so the weights come
// from DRAM as in decoding a model, not from the cache. Every spec's reps alternate with reps
// of the dense baseline of its shape, and "vs dense" divides the two minima, so a burst of other
// work on the machine slows both rather than skewing the ratio.
#include "bench.h"

#include "base/base.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COPIES 4096       // tiny operators: bounded by count instead of bytes
#define CHECK_TOL 1e-4        // relative Frobenius error of apply vs to_dense-then-GEMM
#define MIN_REP_SECONDS 0.002 // a rep shorter than this is repeated (timer resolution)
#define REP_BUDGET 1.0        // seconds of timed reps per line when --reps is not given

static void case_name(char *buf, size_t cap, const char *spec, const int64_t *shape, int64_t N) {
    snprintf(buf, cap, "apply %s %lldx%lld N=%lld", spec, (long long)shape[0], (long long)shape[1],
             (long long)N);
}

static bool case_selected(const bench_opts *o, const char *spec, const int64_t *shape, int64_t N) {
    char name[256];
    case_name(name, sizeof name, spec, shape, N);
    return bench_selected(o, name);
}

bool bench_apply_selected(const bench_opts *o) {
    for (int s = 0; s < o->nshapes; s++)
        for (int i = 0; i < o->nspecs; i++)
            for (int b = 0; b < o->nbatch; b++)
                if (case_selected(o, o->specs[i], o->shapes[s], o->batch[b])) return true;
    return false;
}

// Relative Frobenius error of sm_op_apply against X D^T (D = to_dense), all in float through
// OpenBLAS; -1 if apply itself fails.
static double check_apply(const sm_op *op, const float *D, int64_t N, const float *X, float *Y,
                          float *Yref, float *work) {
    int64_t m = sm_op_rows(op), n = sm_op_cols(op);
    if (sm_op_apply(op, N, X, Y, work) != SM_OK) return -1;
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m, (int)n, 1.0f, D, (int)n, X, 1, 0.0f, Yref,
                    1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)m, (int)n, 1.0f, X,
                    (int)n, D, (int)n, 0.0f, Yref, (int)m);
    double num = 0, den = 0;
    for (int64_t i = 0; i < N * m; i++) {
        double d = (double)Y[i] - (double)Yref[i];
        num += d * d;
        den += (double)Yref[i] * (double)Yref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// Copies of op rebuilt from its parts until they hold ws_bytes (ops[0] = op). Returns how many
// there are; 1 when the parts cannot be read back (then the timing says so via "copies").
static int make_copies(sm_op *op, double ws_bytes, sm_op **ops) {
    ops[0] = op;
    int count = 1;
    double bytes = (double)sm_op_nbytes(op);
    sm_part *parts = NULL;
    int nparts = 0;
    if (bytes >= ws_bytes || sm_op_parts(op, &parts, &nparts) != SM_OK) return 1;
    while (bytes < ws_bytes && count < MAX_COPIES) {
        sm_op *c = NULL;
        if (sm_op_from_parts(sm_op_spec(op), sm_op_rows(op), sm_op_cols(op), parts, nparts, &c) !=
            SM_OK)
            break;
        ops[count++] = c;
        bytes += (double)sm_op_nbytes(c);
    }
    free(parts);
    return count;
}

// Seconds per apply over one rep: `inner` calls cycling over ops.
static double time_rep(sm_op **ops, int nops, int64_t N, const float *X, float *Y, float *work,
                       int64_t inner) {
    double t0 = sm_now();
    for (int64_t k = 0; k < inner; k++) sm_op_apply(ops[k % nops], N, X, Y, work);
    return (sm_now() - t0) / (double)inner;
}

static void min_median(double *t, int n, double *tmin, double *tmed) {
    *tmin = t[0];
    for (int r = 1; r < n; r++)
        if (t[r] < *tmin) *tmin = t[r];
    *tmed = bench_median(t, n);
}

// The dense baseline of one shape, kept while the other specs of that shape are timed: their
// reps alternate with reps of the baseline, so that "vs dense" compares times taken in the same
// seconds. (Other jobs on a shared machine come in bursts longer than one line's timing.)
typedef struct baseline {
    sm_op **ops; // (ncopies) operators; ops[0] the fitted one
    int ncopies;
    float *work;
    int64_t inner[4]; // calls per rep, per batch size
} baseline;

static void baseline_free(baseline *b) {
    for (int i = 0; i < b->ncopies; i++) sm_op_free(b->ops[i]);
    free(b->ops);
    sm_free(b->work);
    memset(b, 0, sizeof *b);
}

typedef struct apply_line {
    const char *spec, *canonical;
    const int64_t *shape;
    int64_t N, nbytes, macs, nparams;
    double tmin, tmed, fit_s, rel_err, bw_gbs, dense_t, ws_mib;
    int copies, reps, threads;
} apply_line;

static void print_header(const bench_opts *o) {
    if (o->json) return;
    printf("%-34s %-10s %3s %10s %10s %8s %7s %5s %8s %5s\n", "apply: spec", "shape", "N",
           "time_ms", "median_ms", "GFLOP/s", "GB/s", "%bw", "vs dense", "check");
    fflush(stdout);
}

static void print_line(const bench_opts *o, const apply_line *l) {
    double gflops = 2.0 * (double)l->macs * (double)l->N / l->tmin / 1e9;
    double gbs = (double)l->nbytes / l->tmin / 1e9, pct = 100.0 * gbs / l->bw_gbs;
    double vs = l->dense_t / l->tmin;
    bool pass = l->rel_err >= 0 && l->rel_err <= CHECK_TOL;
    char shape[48];
    snprintf(shape, sizeof shape, "%lldx%lld", (long long)l->shape[0], (long long)l->shape[1]);
    if (o->json) {
        bench_json_begin("apply");
        bench_json_str("spec", l->spec);
        bench_json_str("canonical", l->canonical);
        bench_json_str("shape", shape);
        bench_json_int("m", l->shape[0]);
        bench_json_int("n", l->shape[1]);
        bench_json_int("N", l->N);
        bench_json_str("status", "ok");
        bench_json_num("time_ms", l->tmin * 1e3);
        bench_json_num("median_ms", l->tmed * 1e3);
        bench_json_num("gflops", gflops);
        bench_json_num("gbs", gbs);
        bench_json_num("bw_pct", pct);
        bench_json_num("vs_dense", vs);
        bench_json_str("check", pass ? "PASS" : "FAIL");
        bench_json_num("rel_err", l->rel_err);
        bench_json_int("nbytes", l->nbytes);
        bench_json_int("nparams", l->nparams);
        bench_json_int("macs", l->macs);
        bench_json_num("fit_s", l->fit_s);
        bench_json_int("copies", l->copies);
        bench_json_num("ws_mib", l->ws_mib);
        bench_json_int("reps", l->reps);
        bench_json_int("threads", l->threads);
        bench_json_str("isa", sm_isa_name(sm_isa_active()));
        bench_json_end();
        return;
    }
    printf("%-34s %-10s %3lld %10.4f %10.4f %8.2f %7.2f %4.0f%% %7.2fx %5s", l->spec, shape,
           (long long)l->N, l->tmin * 1e3, l->tmed * 1e3, gflops, gbs, pct, vs,
           pass ? "PASS" : "FAIL");
    if (strcmp(l->spec, l->canonical) != 0) printf("  %s", l->canonical);
    printf("\n");
    fflush(stdout);
}

static void print_unavailable(const bench_opts *o, const char *spec, const int64_t *shape,
                              int64_t N, const char *why) {
    char sh[48];
    snprintf(sh, sizeof sh, "%lldx%lld", (long long)shape[0], (long long)shape[1]);
    if (o->json) {
        bench_json_begin("apply");
        bench_json_str("spec", spec);
        bench_json_str("shape", sh);
        bench_json_int("m", shape[0]);
        bench_json_int("n", shape[1]);
        bench_json_int("N", N);
        bench_json_str("status", "unavailable");
        bench_json_str("error", why);
        bench_json_end();
        return;
    }
    printf("%-34s %-10s %3lld  unavailable: %s\n", spec, sh, (long long)N, why);
    fflush(stdout);
}

// Fits, checks and times one spec on one shape for every selected N. With base == NULL the spec
// is the dense baseline: it is timed alone and its operators are kept in *keep for the others,
// whose reps then alternate with the baseline's. Returns the number of failed checks.
static int run_spec(const bench_opts *o, const char *spec, baseline *base, baseline *keep,
                    bool listed, const int64_t *shape, const float *W, const float *X, float *Y,
                    float *Yref, double bw_gbs) {
    int64_t m = shape[0], n = shape[1];
    bool want[4] = {false}, print[4] = {false}, any = false;
    for (int b = 0; b < o->nbatch; b++) {
        print[b] = listed && case_selected(o, spec, shape, o->batch[b]);
        want[b] = print[b];
        if (!base) // the baseline runs whenever anything on this shape and N does
            for (int i = 0; i < o->nspecs; i++)
                want[b] = want[b] || case_selected(o, o->specs[i], shape, o->batch[b]);
        any = any || want[b];
    }
    if (!any) return 0;

    fprintf(stderr, "[bench] %s on %lldx%lld: fitting\n", spec, (long long)m, (long long)n);
    sm_fit_opts fo = {.seed = o->seed};
    sm_op *op = NULL;
    double t0 = sm_now();
    if (sm_op_fit(W, m, n, spec, &fo, &op) != SM_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", sm_last_error());
        fprintf(stderr, "[bench] %s on %lldx%lld: unavailable: %s\n", spec, (long long)m,
                (long long)n, why);
        for (int b = 0; b < o->nbatch; b++)
            if (print[b]) print_unavailable(o, spec, shape, o->batch[b], why);
        return base ? 0 : 1; // dense always fits
    }
    double fit_s = sm_now() - t0;

    size_t wsz = 0;
    for (int b = 0; b < o->nbatch; b++) {
        size_t w = sm_op_workspace(op, o->batch[b]);
        if (w > wsz) wsz = w;
    }
    float *work = sm_alloc((wsz + 1) * sizeof(float));
    float *D = sm_alloc((size_t)(m * n) * sizeof(float));
    sm_op **ops = malloc(sizeof(sm_op *) * MAX_COPIES);
    if (!work || !D || !ops) {
        fprintf(stderr, "structmat bench: out of memory\n");
        sm_free(work), sm_free(D), free(ops);
        sm_op_free(op);
        return 1;
    }
    double rel[4] = {-1, -1, -1, -1}; // -1: to_dense or apply failed (a FAIL)
    bool dense_ok = sm_op_to_dense(op, D) == SM_OK;
    for (int b = 0; b < o->nbatch; b++)
        if (want[b] && dense_ok) rel[b] = check_apply(op, D, o->batch[b], X, Y, Yref, work);
    sm_free(D);

    int fails = 0, ncopies = 1;
    ops[0] = op;
    for (int b = 0; b < o->nbatch; b++) {
        if (!want[b]) continue;
        int64_t N = o->batch[b];
        // Only the weight-streaming case rotates; batches reuse one operator.
        if (N == 1 && ncopies == 1) ncopies = make_copies(op, o->ws_mib * 1048576.0, ops);
        int nops = N == 1 ? ncopies : 1;
        // Warm-up pass, which also sizes the reps.
        double tw = sm_now();
        for (int k = 0; k < nops; k++) sm_op_apply(ops[k], N, X, Y, work);
        tw = sm_now() - tw;
        int64_t mult = tw >= MIN_REP_SECONDS ? 1 : (int64_t)ceil(MIN_REP_SECONDS / fmax(tw, 1e-9));
        int64_t inner = (int64_t)nops * mult;
        int reps = o->reps;
        if (reps <= 0) {
            double per_rep = tw * (double)mult;
            reps = N == 1 ? 20 : (int)fmin(20, fmax(3, REP_BUDGET / per_rep));
        }
        apply_line l = {.spec = spec,
                        .canonical = sm_op_spec(op),
                        .shape = shape,
                        .N = N,
                        .nbytes = sm_op_nbytes(op),
                        .macs = sm_op_macs(op),
                        .nparams = sm_op_nparams(op),
                        .fit_s = fit_s,
                        .rel_err = rel[b],
                        .bw_gbs = bw_gbs,
                        .copies = nops,
                        .reps = reps,
                        .threads = o->threads};
        l.ws_mib = (double)nops * (double)l.nbytes / 1048576.0;
        double *t = malloc(sizeof(double) * (size_t)reps * 2), *td = t + reps, dmin, dmed;
        for (int r = 0; r < reps; r++) {
            if (base) {
                int bn = N == 1 ? base->ncopies : 1;
                td[r] = time_rep(base->ops, bn, N, X, Y, base->work, base->inner[b]);
            }
            t[r] = time_rep(ops, nops, N, X, Y, work, inner);
        }
        min_median(t, reps, &l.tmin, &l.tmed);
        if (base) {
            min_median(td, reps, &dmin, &dmed);
            l.dense_t = dmin;
        } else {
            l.dense_t = l.tmin;
            keep->inner[b] = inner;
        }
        free(t);
        if (!(rel[b] >= 0 && rel[b] <= CHECK_TOL)) {
            fails++;
            fprintf(stderr,
                    "[bench] %s on %lldx%lld N=%lld: apply differs from to_dense-GEMM "
                    "(relative error %.3g)\n",
                    spec, (long long)m, (long long)n, (long long)N, rel[b]);
        }
        if (print[b]) print_line(o, &l);
    }
    if (!base) {
        keep->ops = ops;
        keep->ncopies = ncopies;
        keep->work = work;
        return fails;
    }
    for (int i = 1; i < ncopies; i++) sm_op_free(ops[i]);
    free(ops);
    sm_op_free(op);
    sm_free(work);
    return fails;
}

int bench_apply(const bench_opts *o, double bw_gbs) {
    int fails = 0;
    int64_t maxN = 1;
    for (int b = 0; b < o->nbatch; b++)
        if (o->batch[b] > maxN) maxN = o->batch[b];
    // "dense" is the baseline of every ratio: run first on each shape, printed only if listed.
    bool listed = false;
    for (int i = 0; i < o->nspecs; i++) listed = listed || strcmp(o->specs[i], "dense") == 0;
    print_header(o);
    for (int s = 0; s < o->nshapes; s++) {
        const int64_t *shape = o->shapes[s];
        int64_t m = shape[0], n = shape[1];
        bool any = false;
        for (int i = 0; i < o->nspecs; i++)
            for (int b = 0; b < o->nbatch; b++)
                any = any || case_selected(o, o->specs[i], shape, o->batch[b]);
        if (!any) continue;
        float *W = sm_alloc((size_t)(m * n) * sizeof(float));
        float *X = sm_alloc((size_t)(maxN * n) * sizeof(float));
        float *Y = sm_alloc((size_t)(maxN * m) * sizeof(float));
        float *Yref = sm_alloc((size_t)(maxN * m) * sizeof(float));
        if (!W || !X || !Y || !Yref) {
            fprintf(stderr, "structmat bench: out of memory for %lldx%lld\n", (long long)m,
                    (long long)n);
            sm_free(W), sm_free(X), sm_free(Y), sm_free(Yref);
            return fails + 1;
        }
        // Entries of size ~1/sqrt(n) like a trained layer's; the values do not change speed.
        bench_fill_uniform(W, m * n, o->seed + (uint64_t)s);
        float sc = 1.7f / sqrtf((float)n);
        for (int64_t i = 0; i < m * n; i++) W[i] *= sc;
        bench_fill_uniform(X, maxN * n, o->seed + 1000 + (uint64_t)s);
        baseline base = {0};
        fails += run_spec(o, "dense", NULL, &base, listed, shape, W, X, Y, Yref, bw_gbs);
        for (int i = 0; i < o->nspecs; i++)
            if (strcmp(o->specs[i], "dense") != 0 && base.ops)
                fails += run_spec(o, o->specs[i], &base, NULL, true, shape, W, X, Y, Yref, bw_gbs);
        baseline_free(&base);
        sm_free(W), sm_free(X), sm_free(Y), sm_free(Yref);
    }
    return fails;
}
