// The sweep behind lowrank's randomized-solver defaults (src/ops/lowrank.c): with the default
// oversampling and power iterations, solver=random stays within 1% of the optimal (Eckart-Young)
// Frobenius error, the optimum taken from a double-precision LAPACK SVD (dgesdd) of each matrix:
// - every compressible matrix of models/shakespeare-llama-3m (q/k/v/o/gate/up/down of layers 0-3
//   and lm_head) at ranks 8 to 128 below min(m, n), seeds 1 to 5;
// - 1024x768 and 768x1024 matrices with sigma_i = 1/i (ranks 16, 64, 256) and 0.9^i (16, 64).
#include "linalg/linalg.h"
#include "testutil.h"

#include <lapacke.h>

#define MODEL "models/shakespeare-llama-3m/model.safetensors"

static double worst_ratio;

static float *read_model_tensor(const char *name, int64_t *m, int64_t *n) {
    return read_matrix(MODEL, name, m, n);
}

// Checks err/opt <= 1.01 for solver=random at each rank below min(m, n) and each seed.
static void sweep(const char *what, const float *W, int64_t m, int64_t n, const int64_t *ranks,
                  int nranks, int nseeds) {
    int64_t k = m < n ? m : n;
    double *Wd = malloc(sizeof(double) * (size_t)(m * n)), *sig = malloc(sizeof(double) * k);
    for (int64_t i = 0; i < m * n; i++) Wd[i] = W[i];
    CHECK_OK(sm_svd_f64(Wd, m, n, NULL, sig, NULL));
    float *D = malloc(sizeof(float) * (size_t)(m * n));
    for (int ri = 0; ri < nranks; ri++) {
        int64_t r = ranks[ri];
        if (r >= k) continue;
        double opt = 0;
        for (int64_t i = r; i < k; i++) opt += sig[i] * sig[i];
        opt = sqrt(opt);
        char spec[80];
        snprintf(spec, sizeof spec, "lowrank:rank=%lld,solver=random", (long long)r);
        for (int s = 1; s <= nseeds; s++) {
            sm_fit_opts o = {.seed = (uint64_t)s};
            sm_op *op = NULL;
            CHECK_OK(sm_op_fit(W, m, n, spec, &o, &op));
            if (!op) continue;
            CHECK_OK(sm_op_to_dense(op, D));
            sm_op_free(op);
            double e = 0;
            for (int64_t i = 0; i < m * n; i++) e += ((double)W[i] - D[i]) * ((double)W[i] - D[i]);
            double ratio = sqrt(e) / opt;
            worst_ratio = fmax(worst_ratio, ratio);
            if (!(ratio <= 1.01)) {
                fprintf(stderr, "%s %lldx%lld rank %lld seed %d: err/opt = %.5f > 1.01\n", what,
                        (long long)m, (long long)n, (long long)r, s, ratio);
                g_failures++;
            }
        }
    }
    free(Wd), free(sig), free(D);
}

// W (m, n) = Q1 diag(sigma) Q2^T with Q1, Q2 orthonormal columns from QRs of Gaussian matrices.
static float *spectrum_matrix(int64_t m, int64_t n, const double *sigma, uint64_t seed) {
    int64_t k = m < n ? m : n;
    double *Q[2], *tau = malloc(sizeof(double) * (size_t)k);
    sm_rng g;
    sm_rng_seed(&g, seed);
    for (int f = 0; f < 2; f++) {
        int64_t rows = f ? n : m;
        Q[f] = malloc(sizeof(double) * (size_t)(rows * k));
        for (int64_t i = 0; i < rows * k; i++) Q[f][i] = sm_rng_normal(&g);
        CHECK(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (int)rows, (int)k, Q[f], (int)k, tau) == 0);
        CHECK(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (int)rows, (int)k, (int)k, Q[f], (int)k, tau) == 0);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t l = 0; l < k; l++) Q[f][i * k + l] *= f ? 1.0 : sigma[l];
    }
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t l = 0; l < k; l++) acc += Q[0][i * k + l] * Q[1][j * k + l];
            W[i * n + j] = (float)acc;
        }
    free(Q[0]), free(Q[1]), free(tau);
    return W;
}

int main(void) {
    static const char *const proj[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};
    static const int64_t ranks[] = {8, 16, 24, 32, 48, 64, 96, 128};
    for (int layer = 0; layer < 4; layer++)
        for (int p = 0; p < 7; p++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, proj[p]);
            int64_t m, n;
            float *W = read_model_tensor(name, &m, &n);
            if (W) sweep(name, W, m, n, ranks, 8, 5);
            free(W);
        }
    int64_t m, n;
    float *W = read_model_tensor("lm_head.weight", &m, &n);
    if (W) sweep("lm_head.weight", W, m, n, ranks, 8, 5);
    free(W);

    static const int64_t big_ranks[] = {16, 64, 256};
    for (int kind = 0; kind < 2; kind++)
        for (int t = 0; t < 2; t++) {
            int64_t bm = t ? 768 : 1024, bn = t ? 1024 : 768, k = 768;
            double *sig = malloc(sizeof(double) * (size_t)k);
            for (int64_t i = 0; i < k; i++)
                sig[i] = kind ? pow(0.9, (double)(i + 1)) : 1.0 / (double)(i + 1);
            float *B = spectrum_matrix(bm, bn, sig, 900 + (uint64_t)(2 * kind + t));
            // 0.9^i stops at rank 64: by rank 128 the optimum (~1e-6 of ||W||) is down at the
            // level of f32 rounding in any f32 solver.
            sweep(kind ? "sigma=0.9^i" : "sigma=1/i", B, bm, bn, big_ranks, kind ? 2 : 3, 2);
            free(sig), free(B);
        }
    if (getenv("SM_VERBOSE")) printf("worst err/opt %.5f\n", worst_ratio);
    TEST_END();
}
