// Every structure, against its own dense matrix: apply and apply_t equal to_dense-then-GEMM
// (computed here in double) for N in {1, 3, 64} on odd shapes and every factor dtype; parts
// round-trip bit-exactly through sm_op_from_parts; sizes are consistent with the parts.
#include "testutil.h"

typedef struct ocase {
    const char *spec;
    int64_t m, n;
} ocase;

static const ocase k_cases[] = {
    {"dense", 37, 53},
    {"dense:dtype=f16", 37, 53},
    {"dense:dtype=bf16", 64, 130},
    {"dense:dtype=q8", 33, 131},
    {"dense:dtype=q4", 33, 131},
    {"lowrank:rank=5", 37, 53},
    {"lowrank:rank=7,dtype=q4", 70, 65},
    {"lowrank:rank=16,dtype=bf16", 128, 96},
    {"lowrank:ratio=0.3,dtype=q8", 96, 200},
    {"lowrank:rank=3+dense:dtype=q8", 40, 24},
    // STRUCTURES: each structure adds its cases here (square, rectangular, every dtype).
    // ISSUE-5 (blast, sparse, cur, sparse+lowrank):
    {"blast:blocks=4,rank=5", 48, 48},
    {"blast:blocks=3,rank=4,perm=stride,dtype=f16", 45, 63},
    {"blast:blocks=5,ratio=0.3,dtype=bf16", 40, 75},
    {"blast:blocks=2,rank=7,iters=20,dtype=q8", 66, 130},
    {"blast:blocks=4,rank=5,perm=stride,dtype=q4", 132, 100},
    {"blast:blocks=1,rank=3", 13, 17},
    {"sparse:density=0.5", 37, 53},
    {"sparse:density=0.03", 64, 130},
    {"sparse:density=0.2,format=csr", 70, 65},
    {"sparse:ratio=0.3,format=bitmap", 33, 131},
    {"sparse:density=1", 9, 17},
    {"sparse:nm=2:4", 36, 52},
    {"sparse:nm=1:3", 24, 33},
    {"sparse:density=0.1+lowrank:rank=3", 40, 24},
    {"lowrank:rank=2,dtype=f16+sparse:nm=2:4", 36, 52},
    {"cur:rank=5", 37, 53},
    {"cur:ratio=0.3,select=leverage,dtype=f16", 40, 75},
    {"cur:rank=4,dtype=bf16", 48, 48},
    {"cur:rank=7,dtype=q8", 66, 130},
    {"cur:rank=3,dtype=q4", 70, 65},
    // ISSUE-6 (rtn, gptq, onebit, bitstack, quantizer+lowrank):
    {"rtn:bits=4", 37, 64},
    {"rtn:bits=3,group=32,sym", 33, 96},
    {"rtn:bits=2,group=16", 40, 48},
    {"rtn:bits=8,group=53", 21, 53},
    {"rtn:bits=4,group=32,rotate=hadamard", 48, 96},
    {"rtn:bits=3,group=7,sym,rotate=hadamard", 20, 35},
    {"rtn:bits=2,group=64,rotate=hadamard", 64, 128},
    {"rtn:bits=4,group=32+lowrank:rank=4", 64, 128},
    {"rtn:bits=3,group=16,keep-outliers=64", 37, 64},
    {"rtn:bits=4,group=32,sym,rotate=hadamard,keep-outliers=1", 48, 96},
    {"rtn:bits=2,group=16,keep-outliers=5+lowrank:rank=3", 40, 48},
    {"onebit", 37, 53},
    {"onebit", 64, 128},
    {"onebit:keep-outliers=9", 37, 53},
    {"bitstack:k=2,levels=3", 37, 53},
    {"bitstack:k=4,levels=2,solver=random", 64, 96},
    {"bitstack:k=1,levels=1", 9, 7},
    {"onebit+lowrank:rank=3", 40, 24},
    {"bitstack:k=2,levels=2+rtn:bits=8,group=8", 24, 40},
    {"monarch:blocks=4", 48, 48},
    {"monarch:blocks=3", 45, 63},
    {"monarch:blocks=3,rank=2,dtype=f16", 63, 45},
    {"monarch:blocks=5,rank=3,dtype=bf16", 40, 75},
    {"monarch:blocks=2,ratio=0.4,dtype=q8", 66, 130},
    {"monarch:blocks=4,rank=5,dtype=q4", 132, 100},
    {"monarch:blocks=1,rank=3", 13, 17},
    {"blockdiag:blocks=4", 48, 48},
    {"blockdiag:blocks=3,dtype=f16", 39, 57},
    {"blockdiag:blocks=5,dtype=bf16", 35, 95},
    {"blockdiag:blocks=2,dtype=q8", 66, 140},
    {"blockdiag:blocks=3,dtype=q4", 150, 69},
    {"blocklowrank:blocks=4,rank=3", 48, 48},
    {"blocklowrank:blocks=3,rank=2,dtype=f16", 39, 57},
    {"blocklowrank:blocks=5,ratio=0.3,dtype=bf16", 35, 95},
    {"blocklowrank:blocks=2,rank=7,dtype=q8", 66, 140},
    {"blocklowrank:blocks=3,rank=4,dtype=q4", 150, 69},
    {"kron:a=4x4", 48, 48},
    {"kron:a=3x5,terms=2", 39, 55},
    {"kron:a=7x2,terms=3,dtype=f16", 35, 94},
    {"kron:a=16x3,terms=2,dtype=bf16", 96, 51},
    {"kron:a=2x3,terms=4,dtype=q8", 66, 201},
    {"kron:a=5x2,terms=3,dtype=q4", 150, 130},
    {"kron:a=1x1", 9, 7},
    {"monarch:blocks=2+lowrank:rank=2", 40, 24},
    {"monarch:blocks=3,rank=2+kron:a=3x2+blockdiag:blocks=3,dtype=q8", 45, 66},
};

static void ref_apply(const float *W, int64_t m, int64_t n, int64_t N, const float *X, float *Y,
                      bool t) {
    // t = false: Y (N, m) = X (N, n) W^T; t = true: Y (N, n) = X (N, m) W
    int64_t in = t ? m : n, out = t ? n : m;
    for (int64_t i = 0; i < N; i++)
        for (int64_t o = 0; o < out; o++) {
            double acc = 0;
            for (int64_t k = 0; k < in; k++)
                acc += (double)X[i * in + k] * (double)(t ? W[k * n + o] : W[o * n + k]);
            Y[i * out + o] = (float)acc;
        }
}

static void run_case(const ocase *c) {
    int64_t m = c->m, n = c->n;
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 11);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, c->spec, NULL, &op));
    if (!op) {
        free(W);
        return;
    }
    float *D = malloc(sizeof(float) * (size_t)(m * n));
    CHECK_OK(sm_op_to_dense(op, D));
    CHECK(sm_op_rows(op) == m && sm_op_cols(op) == n);
    const int64_t Ns[] = {1, 3, 64};
    for (int k = 0; k < 3; k++) {
        int64_t N = Ns[k], big = m > n ? m : n;
        float *X = malloc(sizeof(float) * (size_t)(N * big));
        float *Y = malloc(sizeof(float) * (size_t)(N * big));
        float *R = malloc(sizeof(float) * (size_t)(N * big));
        float *work = malloc(sizeof(float) * (sm_op_workspace(op, N) + 1));
        char what[160];
        fill_random(X, N * big, 100 + (unsigned)k);
        CHECK_OK(sm_op_apply(op, N, X, Y, work));
        ref_apply(D, m, n, N, X, R, false);
        snprintf(what, sizeof what, "%s %lldx%lld apply N=%lld", c->spec, (long long)m,
                 (long long)n, (long long)N);
        check_close(what, Y, R, N * m, 2e-5);
        CHECK_OK(sm_op_apply_t(op, N, X, Y, NULL)); // NULL work: the call allocates
        ref_apply(D, m, n, N, X, R, true);
        snprintf(what, sizeof what, "%s %lldx%lld apply_t N=%lld", c->spec, (long long)m,
                 (long long)n, (long long)N);
        check_close(what, Y, R, N * n, 2e-5);
        free(X), free(Y), free(R), free(work);
    }
    // Parts: bytes add up to nbytes, and a rebuilt operator is bit-identical.
    sm_part *parts = NULL;
    int np = 0;
    CHECK_OK(sm_op_parts(op, &parts, &np));
    size_t total = 0;
    for (int i = 0; i < np; i++) total += parts[i].nbytes;
    if ((int64_t)total != sm_op_nbytes(op)) {
        fprintf(stderr, "%s: parts hold %zu bytes, nbytes says %lld\n", c->spec, total,
                (long long)sm_op_nbytes(op));
        g_failures++;
    }
    sm_op *back = NULL;
    CHECK_OK(sm_op_from_parts(sm_op_spec(op), m, n, parts, np, &back));
    if (back) {
        float *D2 = malloc(sizeof(float) * (size_t)(m * n));
        CHECK_OK(sm_op_to_dense(back, D2));
        if (memcmp(D, D2, sizeof(float) * (size_t)(m * n)) != 0) {
            fprintf(stderr, "%s: rebuilt operator differs\n", c->spec);
            g_failures++;
        }
        CHECK(strcmp(sm_op_spec(back), sm_op_spec(op)) == 0);
        CHECK(sm_op_nbytes(back) == sm_op_nbytes(op));
        CHECK(sm_op_nparams(back) == sm_op_nparams(op));
        free(D2);
        sm_op_free(back);
    }
    // A missing part is refused with its name.
    if (np > 0) {
        sm_op *bad = NULL;
        CHECK_FAIL(sm_op_from_parts(sm_op_spec(op), m, n, parts, np - 1, &bad), SM_ERR_FORMAT,
                   "missing part");
    }
    free(parts);
    sm_op_free(op);
    free(D), free(W);
}

int main(void) {
    for (size_t i = 0; i < sizeof k_cases / sizeof *k_cases; i++) run_case(&k_cases[i]);
    TEST_END();
}
