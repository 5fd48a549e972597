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

    // Limits: 8 terms, 12 items, 31-character words.
    char text[1024];
    strcpy(text, "dense");
    for (int i = 1; i < 8; i++) strcat(text, "+dense");
    round_trip(text);
    strcat(text, "+dense");
    parse_fails(text, "too many terms (at most 8)");
    strcpy(text, "x:a0=1");
    for (int i = 1; i < 12; i++) sprintf(text + strlen(text), ",a%d=1", i);
    round_trip(text);
    strcat(text, ",b=2");
    parse_fails(text, "too many items");
    const char *w31 = "abcdefghijklmnopqrstuvwxyz01234"; // 31 characters
    snprintf(text, sizeof text, "%s:%s=%s,flag", w31, w31, w31);
    round_trip(text);
    snprintf(text, sizeof text, "lowrank:rank=%s5", w31);
    parse_fails(text, "value too long");
    snprintf(text, sizeof text, "lowrank:%s5=1", w31);
    parse_fails(text, "key too long");
    snprintf(text, sizeof text, "%s5", w31);
    parse_fails(text, "name too long");
    parse_fails("lowrank:rank=3,", "expected a lower-case key");
    parse_fails("lowrank:", "expected a lower-case key");
    parse_fails("+lowrank", "structure name");
    parse_fails("lowrank:rank=+3", "missing value"); // '+' separates terms
    parse_fails("lowrank:rank=3++dense", "structure name");

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
    // Keys match whole words only; numbers are plain decimals.
    fit_fails("lowrank:ran=3", 8, 8, "unknown key \"ran\"");
    fit_fails("lowrank:rankk=3", 8, 8, "unknown key \"rankk\"");
    fit_fails("lowrank:rank=3-", 8, 8, "not a whole number");
    fit_fails("lowrank:rank=99999999999999999999", 8, 8, "not a whole number");
    fit_fails("lowrank:ratio=0x1p-1", 8, 8, "ratio=0x1p-1 is not a number");
    fit_fails("lowrank:ratio=nan", 8, 8, "is not a number");
    fit_fails("lowrank:ratio=inf", 8, 8, "is not a number");
    fit_fails("lowrank:ratio=1e-400", 8, 8, "out of range");
    fit_fails("lowrank:ratio=-0.5", 8, 8, "out of range");
    fit_fails("kron:a=0x4", 8, 8, "a=0x4 is not of the form PxQ");
    fit_fails("kron:a=4x", 8, 8, "a=4x is not of the form PxQ");
    fit_fails("kron:a=x4", 8, 8, "is not of the form PxQ");
    fit_fails("kron:a=4x-4", 8, 8, "is not of the form PxQ");
    fit_fails("kron:a=4x4x4", 8, 8, "is not of the form PxQ");
    fit_fails("kron:a=4X4", 8, 8, "is not of the form PxQ");
    fit_fails("kron:a=99999999999999999999x1", 8, 8,
              "a=99999999999999999999x1 is not of the form PxQ");
    fit_fails("kron:a=16x16", 8, 8, "does not divide");
    fit_fails("monarch:blocks=9", 8, 8, "does not divide");
    fit_fails("blockdiag:blocks=0", 8, 8, "out of range");

    check_canonical("lowrank:ratio=0.5", 256, 256, "lowrank:rank=64");
    check_canonical("lowrank:ratio=0.5,dtype=bf16", 256, 768, "lowrank:rank=96,dtype=bf16");
    check_canonical("dense:dtype=f32", 8, 8, "dense");
    check_canonical("lowrank:rank=01", 8, 8, "lowrank:rank=1");
    check_canonical("kron:a=04x2", 8, 8, "kron:a=4x2");
    check_canonical("lowrank:ratio=1", 8, 8, "lowrank:rank=4");
    check_canonical("blockdiag:blocks=8", 8, 8, "blockdiag:blocks=8");
    check_canonical("lowrank:rank=2+dense:dtype=q8", 8, 8, "lowrank:rank=2+dense:dtype=q8");
    TEST_END();
}
