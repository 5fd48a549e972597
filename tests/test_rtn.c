// rtn (src/ops/rtn.c, quant.c) against a round-to-nearest written here from its documented
// definition (DESIGN.md, quant.h): per group of a row, asymmetric range [min(w, 0), max(w, 0)]
// in 2^B - 1 steps with the scale rounded to F16 first and z = round(-min / s), or symmetric
// s = 2 max|w| / (2^B - 1), z = 2^(B-1); q = clamp(round(w / s) + z), w ~ s (q - z).
// - to_dense equals the reference bit for bit, for B = 2, 3, 4, 8, sym and asym, with rows that
//   are all zero, all positive, constant, tiny (below the F16 range) or sit on rounding ties;
// - the "codes", "scales" and "zeros" parts are the documented bit streams (packed here);
//   nbytes is their sum; canonical specs resolve the defaults;
// - apply equals dequantize-then-GEMM for N = 1 and 64 at every kernel level;
// - rtn + lowrank:rank=R (LoRC) has the error of the best rank-R approximation of the RTN
//   residual (Eckart-Young, singular values by LAPACK), decreasing in R;
// - invalid specs and parts give clear errors.
#include "ops/quant.h"
#include "testutil.h"

typedef struct ref_grid {
    float s;
    int z;
} ref_grid;

static ref_grid ref_fit(const float *w, int64_t len, int bits, bool sym) {
    int maxq = (1 << bits) - 1;
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < len; i++) {
        if (w[i] < lo) lo = w[i];
        if (w[i] > hi) hi = w[i];
    }
    float s;
    if (sym) {
        float a = -lo > hi ? -lo : hi;
        if (a == 0) a = 1;
        s = 2 * a / (float)maxq;
    } else {
        if (lo == 0 && hi == 0) lo = -1, hi = 1;
        s = (hi - lo) / (float)maxq;
    }
    uint16_t h = sm_f32_to_f16(s);
    if ((h & 0x7fff) == 0) h = 1;
    ref_grid g = {sm_f16_to_f32(h), 1 << (bits - 1)};
    if (!sym) {
        double z = nearbyint(-(double)lo / (double)g.s);
        g.z = z < 0 ? 0 : z > maxq ? maxq : (int)z;
    }
    return g;
}

static int ref_code(ref_grid g, float w, int bits) {
    float q = nearbyintf(w / g.s) + (float)g.z;
    int maxq = (1 << bits) - 1;
    return q < 0 ? 0 : q > maxq ? maxq : (int)q;
}

static void put_bits(uint8_t *row, int64_t c, int bits, int v) {
    for (int k = 0; k < bits; k++)
        if ((v >> k) & 1) row[(c * bits + k) / 8] |= (uint8_t)(1u << ((c * bits + k) % 8));
}

static const sm_part *find(const sm_part *p, int np, const char *name) {
    for (int i = 0; i < np; i++)
        if (strcmp(p[i].name, name) == 0) return &p[i];
    return NULL;
}

static void check_reference(int bits, bool sym, int64_t m, int64_t n, int64_t group) {
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, (unsigned)(bits * 100 + m));
    for (int64_t c = 0; c < n; c++) {
        W[0 * n + c] = 0;                                   // all zero
        W[1 * n + c] = 0.1f + 0.01f * (float)(c % 7);       // all positive
        W[2 * n + c] = -0.25f;                              // constant
        W[3 * n + c] = 1e-9f * (float)(c % 5 - 2);          // below the F16 range
        W[4 * n + c] = (float)(c % 4) * 0.125f - 0.1875f;   // halfway points of a grid
    }
    char spec[96];
    snprintf(spec, sizeof spec, "rtn:bits=%d,group=%lld%s", bits, (long long)group,
             sym ? ",sym" : "");
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, spec, NULL, &op));
    if (!op) return;
    int64_t ng = n / group;
    size_t rb = (size_t)(n * bits + 7) / 8, zb = (size_t)(ng * bits + 7) / 8;
    float *D = malloc(sizeof(float) * (size_t)(m * n)), *R = malloc(sizeof(float) * (size_t)(m * n));
    uint8_t *codes = calloc((size_t)m * rb, 1), *zeros = calloc((size_t)m * zb + 1, 1);
    uint16_t *scales = malloc(sizeof(uint16_t) * (size_t)(m * ng));
    for (int64_t r = 0; r < m; r++)
        for (int64_t g = 0; g < ng; g++) {
            ref_grid gr = ref_fit(W + r * n + g * group, group, bits, sym);
            scales[r * ng + g] = sm_f32_to_f16(gr.s);
            if (!sym) put_bits(zeros + r * zb, g, bits, gr.z);
            for (int64_t c = g * group; c < (g + 1) * group; c++) {
                int q = ref_code(gr, W[r * n + c], bits);
                put_bits(codes + r * rb, c, bits, q);
                R[r * n + c] = gr.s * (float)(q - gr.z);
            }
        }
    CHECK_OK(sm_op_to_dense(op, D));
    for (int64_t i = 0; i < m * n; i++)
        if (memcmp(&D[i], &R[i], sizeof(float)) != 0) {
            fprintf(stderr, "%s %lldx%lld: entry %lld (row %lld) is %.9g, reference %.9g\n", spec,
                    (long long)m, (long long)n, (long long)i, (long long)(i / n), (double)D[i],
                    (double)R[i]);
            g_failures++;
            break;
        }
    sm_part *parts;
    int np;
    CHECK_OK(sm_op_parts(op, &parts, &np));
    CHECK(np == (sym ? 2 : 3));
    const sm_part *pc = find(parts, np, "codes"), *ps = find(parts, np, "scales");
    const sm_part *pz = find(parts, np, "zeros");
    CHECK(pc && pc->dtype == SM_DTYPE_U8 && pc->ndim == 2 && pc->shape[0] == m &&
          pc->shape[1] == (int64_t)rb && memcmp(pc->data, codes, (size_t)m * rb) == 0);
    CHECK(ps && ps->dtype == SM_DTYPE_F16 && ps->shape[0] == m && ps->shape[1] == ng &&
          memcmp(ps->data, scales, sizeof(uint16_t) * (size_t)(m * ng)) == 0);
    if (!sym)
        CHECK(pz && pz->dtype == SM_DTYPE_U8 && pz->shape[0] == m && pz->shape[1] == (int64_t)zb &&
              memcmp(pz->data, zeros, (size_t)m * zb) == 0);
    else
        CHECK(!pz);
    CHECK(sm_op_nbytes(op) == (int64_t)(m * rb + (sym ? 0 : m * zb)) + 2 * m * ng);
    CHECK(sm_op_nparams(op) == m * n);
    free(parts), free(W), free(D), free(R), free(codes), free(zeros), free(scales);
    sm_op_free(op);
}

static void check_apply(void) {
    int64_t m = 96, n = 512;
    float *W = malloc(sizeof(float) * (size_t)(m * n)), *D = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 5);
    static const char *specs[] = {"rtn:bits=2,group=128", "rtn:bits=3", "rtn:bits=4,sym",
                                  "rtn:bits=8,group=256", "rtn:bits=4,group=16",
                                  "rtn:bits=4,group=128,rotate=hadamard"};
    for (int s = 0; s < 6; s++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, specs[s], NULL, &op));
        if (!op) continue;
        CHECK_OK(sm_op_to_dense(op, D));
        for (int isa = 0; isa <= (int)sm_isa_detect(); isa++) {
            CHECK_OK(sm_isa_set((sm_isa)isa));
            for (int64_t N = 1; N <= 64; N += 63) {
                float *X = malloc(sizeof(float) * (size_t)(N * n)), *Y = malloc(sizeof(float) * (size_t)(N * m));
                float *R = malloc(sizeof(float) * (size_t)(N * m));
                fill_random(X, N * n, 9 + (unsigned)N);
                CHECK_OK(sm_op_apply(op, N, X, Y, NULL));
                for (int64_t i = 0; i < N; i++)
                    for (int64_t r = 0; r < m; r++) {
                        double acc = 0;
                        for (int64_t c = 0; c < n; c++) acc += (double)X[i * n + c] * D[r * n + c];
                        R[i * m + r] = (float)acc;
                    }
                char what[128];
                snprintf(what, sizeof what, "%s apply N=%lld isa %s", specs[s], (long long)N,
                         sm_isa_name((sm_isa)isa));
                check_close(what, Y, R, N * m, 1e-5);
                free(X), free(Y), free(R);
            }
        }
        CHECK_OK(sm_isa_set(sm_isa_detect()));
        sm_op_free(op);
    }
    free(W), free(D);
}

static void check_lorc(void) {
    int64_t m = 48, n = 64;
    float *W = malloc(sizeof(float) * (size_t)(m * n)), *D = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 12);
    sm_op *q = NULL;
    CHECK_OK(sm_op_fit(W, m, n, "rtn:bits=3,group=32", NULL, &q));
    if (!q) return;
    CHECK_OK(sm_op_to_dense(q, D));
    double *E = malloc(sizeof(double) * (size_t)(m * n)), S[48];
    for (int64_t i = 0; i < m * n; i++) E[i] = (double)W[i] - D[i];
    CHECK_OK(sm_svd_f64(E, m, n, NULL, S, NULL));
    double prev = INFINITY;
    for (int rank = 0; rank <= 16; rank += 4) {
        char spec[64];
        snprintf(spec, sizeof spec, "rtn:bits=3,group=32+lowrank:rank=%d", rank);
        sm_op *op = NULL;
        if (rank == 0) snprintf(spec, sizeof spec, "rtn:bits=3,group=32");
        CHECK_OK(sm_op_fit(W, m, n, spec, NULL, &op));
        if (!op) continue;
        CHECK_OK(sm_op_to_dense(op, D));
        double err = 0, opt = 0;
        for (int64_t i = 0; i < m * n; i++) err += ((double)W[i] - D[i]) * ((double)W[i] - D[i]);
        for (int i = rank; i < 48; i++) opt += S[i] * S[i];
        if (!(fabs(err - opt) <= 1e-4 * opt) || !(err < prev)) {
            fprintf(stderr, "%s: squared error %.9g, optimum %.9g (previous rank %.9g)\n", spec, err,
                    opt, prev);
            g_failures++;
        }
        prev = err;
        sm_op_free(op);
    }
    sm_op_free(q);
    free(W), free(D), free(E);
}

static void check_errors(void) {
    float W[4 * 64];
    fill_random(W, 4 * 64, 2);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=5", NULL, &op), SM_ERR_SPEC,
               "bits=5 is not supported (choose 2, 3, 4 or 8)");
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn", NULL, &op), SM_ERR_SPEC, "needs bits=B");
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=four", NULL, &op), SM_ERR_SPEC, "not a whole number");
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=4,group=48", NULL, &op), SM_ERR_SPEC,
               "group=48 does not divide the row length 64 (in features) of a 4x64 matrix; "
               "valid groups: 1, 2, 4, 8, 16, 32, 64");
    CHECK_FAIL(sm_op_fit(W, 4, 60, "rtn:bits=4", NULL, &op), SM_ERR_SPEC,
               "group=64 (the default) does not divide the row length 60");
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=4,group=0", NULL, &op), SM_ERR_SPEC, "group");
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=4,sym,asym", NULL, &op), SM_ERR_SPEC, "not both");
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=4,sym=1", NULL, &op), SM_ERR_SPEC, "is a flag");
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=4,rotate=fourier", NULL, &op), SM_ERR_SPEC, "rotate");
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=4,rank=3", NULL, &op), SM_ERR_SPEC, "rank");
    W[3] = 1e6f; // a scale of 1e6 * 2 / 15 does not fit F16
    CHECK_FAIL(sm_op_fit(W, 4, 64, "rtn:bits=4", NULL, &op), SM_ERR_NUMERIC, "F16 range");
    W[3] = 0.5f;
    // Canonical specs resolve defaults.
    CHECK_OK(sm_op_fit(W, 4, 64, "rtn:bits=4", NULL, &op));
    if (op) {
        CHECK(strcmp(sm_op_spec(op), "rtn:bits=4,group=64") == 0);
        sm_part *parts;
        int np;
        CHECK_OK(sm_op_parts(op, &parts, &np));
        sm_op *back = NULL;
        // A part of the wrong shape, and a non-finite scale.
        parts[0].shape[1] = 31;
        CHECK_FAIL(sm_op_from_parts("rtn:bits=4,group=64", 4, 64, parts, np, &back),
                   SM_ERR_FORMAT, "part \"codes\" is U8 [4, 31]");
        parts[0].shape[1] = 32;
        uint16_t sc[4];
        memcpy(sc, parts[1].data, sizeof sc);
        sc[2] = 0x7c00;
        parts[1].data = sc;
        CHECK_FAIL(sm_op_from_parts("rtn:bits=4,group=64", 4, 64, parts, np, &back),
                   SM_ERR_NUMERIC, "exceeds the F16 range");
        CHECK_FAIL(sm_op_from_parts("rtn:bits=4,group=64,sym", 4, 64, parts, np, &back),
                   SM_ERR_NUMERIC, "F16");
        CHECK(back == NULL);
        free(parts);
        sm_op_free(op);
    }
    CHECK_OK(sm_op_fit(W, 4, 64, "rtn:bits=2,group=32,sym,rotate=hadamard", NULL, &op));
    if (op) CHECK(strcmp(sm_op_spec(op), "rtn:bits=2,group=32,sym,rotate=hadamard") == 0);
    sm_op_free(op);
}

int main(void) {
    static const int widths[] = {2, 3, 4, 8};
    for (int w = 0; w < 4; w++)
        for (int sym = 0; sym < 2; sym++) {
            check_reference(widths[w], sym, 7, 96, 32);
            check_reference(widths[w], sym, 6, 35, 7);
            check_reference(widths[w], sym, 5, 64, 64);
            check_reference(widths[w], sym, 9, 48, 1);
        }
    check_apply();
    check_lorc();
    check_errors();
    TEST_END();
}
