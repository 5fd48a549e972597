// The spec grammar and every structure's fit: input = two bytes choosing the matrix (shape up to
// 32x32 and one of eight value patterns: random, zero, rank 1, rank 2, subnormal, huge, one-hot,
// rows of mixed scale), then the spec text.
//   parse -> print -> parse is the same spec and prints the same text;
//   a spec that fits: the operator is finite and consistent (sm_fuzz_exercise_op), its canonical
//   spec parses, and refitting with the canonical spec gives the same spec and the same matrix.
// (Specs asking for more than MAX_ITERS iterations are only parsed.)
#include "fuzz.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPEC 2048

static void make_matrix(float *W, int64_t m, int64_t n, int pattern, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 12345u;
    for (int64_t i = 0; i < m * n; i++) {
        s = s * 1664525u + 1013904223u;
        W[i] = (float)((int32_t)(s >> 8) - (1 << 23)) / (float)(1 << 23);
    }
    switch (pattern) {
    case 1:
        memset(W, 0, (size_t)(m * n) * sizeof *W);
        break;
    case 2: // u v^T from the first row and column of the random values
    case 3: // sum of two such products (rank 2 when both sides are at least 2)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                float v = (float)(i + 1) * (float)((j % 5) - 2);
                if (pattern == 3) v += (float)((i % 3) - 1) * (float)(j + 1) * 0.5f;
                W[i * n + j] = v;
            }
        break;
    case 4:
        for (int64_t i = 0; i < m * n; i++) W[i] *= 1e-42f; // subnormal floats
        break;
    case 5:
        for (int64_t i = 0; i < m * n; i++) W[i] *= 1e30f;
        break;
    case 6:
        memset(W, 0, (size_t)(m * n) * sizeof *W);
        W[(m / 2) * n + n / 2] = 1.0f;
        break;
    case 7:
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) W[i * n + j] *= powf(10.0f, (float)(i % 20) - 10.0f);
        break;
    default:
        break;
    }
}

// Iterations the spec asks for beyond this are parsed but not fitted: their cost is what was
// asked (blast:iters=1000000 takes minutes), and a per-input time limit would report them.
#define MAX_ITERS 2000

static bool too_costly(const char *text) {
    for (const char *p = strstr(text, "iters="); p; p = strstr(p + 1, "iters="))
        if ((p > text && (p[-1] == ':' || p[-1] == ',')) && strtoll(p + 6, NULL, 10) > MAX_ITERS)
            return true;
    return false;
}

static void check_roundtrip(const char *text) {
    sm_spec *a = (sm_spec *)1;
    if (sm_spec_parse(text, &a) != SM_OK) {
        SM_FUZZ_CHECK(a == NULL && sm_last_error()[0], "failed parse of \"%s\"", text);
        return;
    }
    char *p1 = sm_spec_print(a);
    SM_FUZZ_CHECK(p1 != NULL, "print");
    sm_spec *b = NULL;
    SM_FUZZ_CHECK(sm_spec_parse(p1, &b) == SM_OK, "\"%s\" printed as \"%s\", which does not parse",
                  text, p1);
    SM_FUZZ_CHECK(sm_spec_equal(a, b) && sm_spec_equal(b, a), "\"%s\" -> \"%s\" is another spec",
                  text, p1);
    char *p2 = sm_spec_print(b);
    SM_FUZZ_CHECK(p2 && !strcmp(p1, p2), "\"%s\" prints as \"%s\" then \"%s\"", text, p1, p2);
    free(p1), free(p2);
    sm_spec_free(a), sm_spec_free(b);
}

int sm_fuzz_spec(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    if (size < 2) return 0;
    int64_t m = 1 + (data[0] & 31), n = 1 + (data[1] & 31);
    int pattern = data[0] >> 5;
    size_t len = size - 2 < MAX_SPEC ? size - 2 : MAX_SPEC;
    char *text = malloc(len + 1);
    memcpy(text, data + 2, len);
    text[len] = 0; // an embedded NUL ends the spec early, as it would in C
    check_roundtrip(text);
    if (too_costly(text)) {
        free(text);
        return 0;
    }

    float *W = malloc((size_t)(m * n) * sizeof *W);
    make_matrix(W, m, n, pattern, data[1] >> 5);
    sm_fit_opts o = {.seed = 7};
    sm_op *op = (sm_op *)1;
    sm_status s = sm_op_fit(W, m, n, text, &o, &op);
    int accepted = s == SM_OK;
    if (s != SM_OK) {
        SM_FUZZ_CHECK(op == NULL && sm_last_error()[0], "failed fit of \"%s\"", text);
    } else {
        sm_fuzz_exercise_op(op, true);
        // The canonical spec names the same operator: refitting with it reproduces it.
        char *canon = strdup(sm_op_spec(op));
        sm_op *again = NULL;
        SM_FUZZ_CHECK(sm_op_fit(W, m, n, canon, &o, &again) == SM_OK,
                      "\"%s\" fits, its canonical \"%s\" does not", text, canon);
        SM_FUZZ_CHECK(!strcmp(sm_op_spec(again), canon), "\"%s\" refits as \"%s\"", canon,
                      sm_op_spec(again));
        if (m * n <= 1024) {
            float D1[1024], D2[1024];
            SM_FUZZ_CHECK(sm_op_to_dense(op, D1) == SM_OK && sm_op_to_dense(again, D2) == SM_OK,
                          "to_dense");
            SM_FUZZ_CHECK(!memcmp(D1, D2, (size_t)(m * n) * sizeof(float)),
                          "\"%s\" and its canonical \"%s\" fit different matrices", text, canon);
        }
        sm_op_free(again);
        free(canon);
        sm_op_free(op);
    }
    free(W);
    free(text);
    return accepted;
}

SM_FUZZ_MAIN(spec)
