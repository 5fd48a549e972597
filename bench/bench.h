// `structmat bench`: the machine's read bandwidth, apply throughput of every structure against
// dense OpenBLAS, and exact versus randomized SVD fit times. cli/cmd_bench.c parses options and
// runs the three sections; each prints one line per result (text, or one JSON object per line).
#ifndef SM_BENCH_H
#define SM_BENCH_H

#include "structmat.h"

#include <stdbool.h>
#include <stdint.h>

#define BENCH_MAX_SHAPES 8
#define BENCH_MAX_SPECS 32

typedef struct bench_opts {
    int threads; // OpenMP and OpenBLAS threads
    bool json, quick;
    const char *filter; // run only results whose name contains it (NULL: all)
    int reps;           // timed repetitions (0: a per-case default)
    uint64_t seed;
    double bw_mib; // size of the bandwidth sweep
    double ws_mib; // N = 1: rotate over copies of the operator until they hold this much
    int nshapes;
    int64_t shapes[BENCH_MAX_SHAPES][2]; // (out, in)
    int nspecs;
    const char *specs[BENCH_MAX_SPECS];
    int nbatch;
    int64_t batch[4]; // N values
    int64_t fit_rank;
    int nfit_shapes;
    int64_t fit_shapes[BENCH_MAX_SHAPES][2];
    int64_t model_shape[5]; // synthetic model: dim, hidden_dim, n_layers, n_heads, vocab
    int64_t prefill_tokens; // T of the prefill line
    int64_t decode_tokens;  // tokens per decode rep
} bench_opts;

// The default run, or the small one of --quick.
void bench_opts_init(bench_opts *o, bool quick);

// Whether a result called `name` ("bandwidth", "apply dense:dtype=q8 4096x4096 N=1",
// "fit lowrank:rank=256 1024x1024") passes --filter.
bool bench_selected(const bench_opts *o, const char *name);

// Single-thread read bandwidth in GB/s (best of a few sweeps); prints its line if `print`.
double bench_bandwidth(const bench_opts *o, bool print);
// Apply section; bw_gbs is the measured bandwidth for the "% of bandwidth" column. Returns the
// number of operators whose apply did not match to_dense-then-GEMM.
int bench_apply(const bench_opts *o, double bw_gbs);
// Fit section (exact vs randomized SVD). Returns the number of failures (none are fatal).
int bench_fit(const bench_opts *o);
// Whether any apply result would be selected by the filter.
bool bench_apply_selected(const bench_opts *o);
// Model section (bench_model.c): decode and prefill of a synthetic dense F32 model; bw_gbs as
// for bench_apply. Results are named "model decode d768 f2048 l12 h12 v32000" and "model
// prefill ...". Returns the number of lines that failed (a forward error or non-finite logits).
int bench_model(const bench_opts *o, double bw_gbs);
bool bench_model_selected(const bench_opts *o);

// One line naming the CPU, kernel level, threads, OpenBLAS build and the 1-minute load average
// (other work on the machine is what makes timings noisy).
void bench_machine(const bench_opts *o);
double bench_load(void); // 1-minute load average, NAN when unknown

// Shared helpers (bench.c).
void bench_fill_uniform(float *x, int64_t n, uint64_t seed); // [-1, 1)
double bench_median(double *v, int n);                       // sorts v
// Result-line helpers: JSON object pieces, or text.
void bench_json_begin(const char *bench);
void bench_json_str(const char *key, const char *value);
void bench_json_num(const char *key, double value);
void bench_json_int(const char *key, int64_t value);
void bench_json_end(void);

#endif
