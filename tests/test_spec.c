// The spec grammar: round trips, canonical forms and clear errors.
#include "testutil.h"

static void round_trip(const char *text) {
    sm_spec *a = NULL, *b = NULL;
    CHECK_OK(sm_spec_parse(text, &a));
    if (!a) return;
    char *printed = sm_spec_print(a);
    CHECK(strcmp(printed, text) == 0);
    CHECK_OK(sm_spec_parse(printed, &b));
    if (b) CHECK(sm_spec_equal(a, b));
    free(printed);
    sm_spec_free(a);
    sm_spec_free(b);
}

static void parse_fails(const char *text, const char *needle) {
    sm_spec *a = NULL;
    CHECK_FAIL(sm_spec_parse(text, &a), SM_ERR_SPEC, needle);
    CHECK(a == NULL);
}

static void fit_fails(const char *spec, int64_t m, int64_t n, const char *needle) {
    float *W = calloc((size_t)(m * n), sizeof(float));
    fill_random(W, m * n, 3);
    sm_op *op = NULL;
    sm_status st = sm_op_fit(W, m, n, spec, NULL, &op);
    if (st == SM_OK || !strstr(sm_last_error(), needle)) {
        fprintf(stderr, "fit \"%s\" on %lldx%lld: %s \"%s\", expected an error with \"%s\"\n",
                spec, (long long)m, (long long)n, sm_status_str(st), sm_last_error(), needle);
        g_failures++;
    }
    sm_op_free(op);
    free(W);
}

static void canonical(const char *spec, int64_t m, int64_t n, const char *want) {
    float *W = calloc((size_t)(m * n), sizeof(float));
    fill_random(W, m * n, 4);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, m, n, spec, NULL, &op));
    if (op && strcmp(sm_op_spec(op), want) != 0) {
        fprintf(stderr, "canonical(%s) = %s, expected %s\n", spec, sm_op_spec(op), want);
        g_failures++;
    }
    sm_op_free(op);
    free(W);
}

int main(void) {
    const char *good[] = {
        "dense", "dense:dtype=bf16", "lowrank:rank=64", "lowrank:ratio=0.25,dtype=q8",
        "monarch:blocks=4", "blast:blocks=4,ratio=0.5", "kron:a=16x16", "sparse:nm=2:4",
        "rtn:bits=4,group=128", "gptq:bits=3,group=128,actorder",
        "rtn:bits=3,group=128+lowrank:rank=16", "sparse:density=0.05+lowrank:rank=32",
        "onebit", "bitstack:k=16,levels=8", "x:keep-outliers=8,damp=1e-3",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) round_trip(good[i]);

    parse_fails("", "empty spec");
    parse_fails("Lowrank:rank=4", "structure name");
    parse_fails("lowrank:rank=4,rank=5", "duplicate key \"rank\"");
    parse_fails("lowrank:rank=", "missing value");
    parse_fails("lowrank: rank=4", "expected a lower-case key");
    parse_fails("lowrank:rank=4 ", "unexpected character");
    parse_fails("lowrank:rank=4+", "structure name");
    parse_fails("lowrank:RANK=4", "lower-case key");

    fit_fails("nosuch:rank=4", 8, 8, "unknown structure \"nosuch\"");
    fit_fails("lowrank:rank=9", 8, 12, "rank=9 is too large");
    fit_fails("lowrank:rank=0", 8, 8, "out of range");
    fit_fails("lowrank:rank=abc", 8, 8, "not a whole number");
    fit_fails("lowrank:ratio=1.5", 8, 8, "out of range");
    fit_fails("lowrank:ratio=0.01", 8, 8, "no room for rank 1");
    fit_fails("lowrank", 8, 8, "needs rank=R or ratio=X");
    fit_fails("lowrank:rank=2,ratio=0.5", 8, 8, "not both");
    fit_fails("lowrank:rank=2,blocks=4", 8, 8, "unknown key \"blocks\"");
    fit_fails("lowrank:rank=2,dtype=f8", 8, 8, "dtype=f8 is not one of");
    fit_fails("dense:dtype", 8, 8, "needs a value");

    canonical("lowrank:ratio=0.5", 256, 256, "lowrank:rank=64");
    canonical("lowrank:ratio=0.5,dtype=bf16", 256, 768, "lowrank:rank=96,dtype=bf16");
    canonical("dense:dtype=f32", 8, 8, "dense");
    canonical("lowrank:rank=2+dense:dtype=q8", 8, 8, "lowrank:rank=2+dense:dtype=q8");
    TEST_END();
}
