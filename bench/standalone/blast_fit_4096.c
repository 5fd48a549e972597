// BLAST fit time on a 4096 x 4096 matrix at half the parameters (blocks=4: rank 1022; default
// 300 iterations): it must take under 20 minutes of CPU time (all threads; about 9 on this 2-core
// machine, so minutes of wall time when the machine is idle) and end below its low-rank warm
// start. `build/bench_blast_fit_4096 --print` prints the time, the dense-GEMM-equivalent GFLOP/s of the
// iterations (each does four m n R products: 8 m n R flops; their time is the fit's minus that of
// iters=0) and, for scale, the GFLOP/s of one such sgemm here. The matrix has a decaying spectrum
// (sigma_k = 1 / (1 + k / 64)) with random singular vectors, so that there is structure to find.
#include "testutil.h"

#include <cblas.h>
#include <time.h>

double sm_now(void);

int main(int argc, char **argv) {
    bool print = argc > 1 && strcmp(argv[1], "--print") == 0;
    const int64_t n = 4096;
    float *A = malloc(sizeof(float) * (size_t)(n * n)),
          *B = malloc(sizeof(float) * (size_t)(n * n));
    float *W = malloc(sizeof(float) * (size_t)(n * n)),
          *D = malloc(sizeof(float) * (size_t)(n * n));
    fill_random(A, n * n, 1), fill_random(B, n * n, 2);
    for (int64_t k = 0; k < n; k++)
        for (int64_t j = 0; j < n; j++) B[k * n + j] *= (float)(1.0 / (1.0 + (double)k / 64));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, A, (int)n,
                B, (int)n, 0.0f, W, (int)n);
    sm_op *op = NULL, *lr = NULL, *warm = NULL;
    sm_fit_opts o = {.seed = 1, .verbose = print};
    double t0 = sm_now();
    CHECK_OK(sm_op_fit(W, n, n, "blast:blocks=4,ratio=0.5,iters=0", &o, &warm));
    double t_warm = sm_now() - t0;
    sm_op_free(warm);
    t0 = sm_now();
    clock_t c0 = clock();
    CHECK_OK(sm_op_fit(W, n, n, "blast:blocks=4,ratio=0.5", &o, &op));
    double t_fit = sm_now() - t0, cpu_fit = (double)(clock() - c0) / CLOCKS_PER_SEC;
    if (!op) return 1;
    CHECK_OK(sm_op_to_dense(op, D));
    double e = rel_fro(D, W, n * n);
    int64_t R = sm_op_nparams(op) / (n + n + 16);
    char spec[64];
    snprintf(spec, sizeof spec, "lowrank:rank=%lld", (long long)R);
    t0 = sm_now();
    CHECK_OK(sm_op_fit(W, n, n, spec, NULL, &lr));
    double t_svd = sm_now() - t0;
    if (lr) {
        CHECK_OK(sm_op_to_dense(lr, D));
        double elr = rel_fro(D, W, n * n);
        if (!(e < elr)) {
            fprintf(stderr, "blast %.5f is not below its low-rank warm start %.5f\n", e, elr);
            g_failures++;
        }
        if (print)
            printf("lowrank:rank=%lld error %.5f (exact SVD %.1f s)\n", (long long)R, elr, t_svd);
    }
    CHECK(cpu_fit < 1200); // CPU time, all threads: wall time depends on what else runs
    // One m n R product as a GEMM, for scale: (1024, 4096) x (4096, R), four times.
    t0 = sm_now();
    for (int k = 0; k < 4; k++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(n / 4), (int)R, (int)n, 1.0f,
                    W + k * (n / 4) * n, (int)n, A, (int)R, 0.0f, B, (int)R);
    double t_gemm = sm_now() - t0, gflop = 2.0 * (double)n * (double)n * (double)R / 1e9;
    if (print)
        printf("%s: %.1f s (%.1f min; warm start %.1f s), error %.5f; 300 iterations of 8 m n R "
               "flops = %.0f GFLOP in %.1f s = %.1f GFLOP/s; one m n R sgemm here: %.1f GFLOP/s\n",
               sm_op_spec(op), t_fit, t_fit / 60, t_warm, e, 300 * 4 * gflop, t_fit - t_warm,
               300 * 4 * gflop / (t_fit - t_warm), gflop / t_gemm);
    if (print) // with other jobs on the machine, the CPU time says what the fit itself used
        printf("fit CPU time (all threads) %.1f s\n", cpu_fit);
    sm_op_free(op), sm_op_free(lr);
    free(A), free(B), free(W), free(D);
    TEST_END();
}
