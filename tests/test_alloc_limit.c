// The process-wide allocation budget behind --max-memory (sm_set_alloc_limit, src/base/alloc.c):
// an allocation past the limit is refused with SM_ERR_ALLOC and a message naming the limit and
// what is in use, smaller ones succeed, freeing gives the bytes back, and the message survives
// a caller that reports its own "out of memory". Sizes are parsed as README documents them.
#include "base/base.h"
#include "testutil.h"

static void test_parse(void) {
    static const struct {
        const char *text;
        size_t bytes; // closed form
    } ok[] = {{"123", 123},           {"1B", 1},           {"800kB", 800000},
              {"500MB", 500000000},   {"2GB", 2000000000}, {"1.5GB", 1500000000},
              {"3TB", 3000000000000}, {"64KiB", 65536},    {"1.5GiB", 1610612736},
              {"2 MiB", 2097152}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t b = 0;
        CHECK_OK(sm_parse_bytes(ok[i].text, &b));
        if (b != ok[i].bytes) {
            fprintf(stderr, "sm_parse_bytes(\"%s\") = %zu, expected %zu\n", ok[i].text, b,
                    ok[i].bytes);
            g_failures++;
        }
    }
    static const char *const bad[] = {"", "MB", "-1MB", "0", "0.1B", "5XB", "12 MBs", "1e99GB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t b = 7;
        CHECK_FAIL(sm_parse_bytes(bad[i], &b), SM_ERR_ARG, bad[i]);
        CHECK(b == 7);
    }
}

static void test_limit(void) {
    // Nothing in this process has allocated through the library yet.
    CHECK(sm_alloc_in_use() == 0 && sm_alloc_limit() == 0);
    sm_set_alloc_limit(1000000);
    CHECK(sm_alloc_limit() == 1000000);

    CHECK(sm_alloc(2000000) == NULL);
    CHECK(
        strstr(sm_last_error(), "allocating 2 MB would exceed --max-memory 1 MB (0 bytes in use)"));
    CHECK(sm_alloc_in_use() == 0); // a refusal books nothing

    char *small = sm_alloc(1000);
    CHECK(small != NULL);
    for (int i = 0; small && i < 1000; i++) small[i] = (char)i; // writable, all of it
    CHECK(sm_alloc_in_use() >= 1000 && sm_alloc_in_use() < 1000 + 4096);

    // 600 kB fits next to it, a second 600 kB does not: the count is of live bytes.
    void *a = sm_alloc(600000), *b = sm_alloc(600000);
    CHECK(a != NULL && b == NULL);
    CHECK(strstr(sm_last_error(), "allocating 600 kB would exceed --max-memory 1 MB (60"));
    sm_free(a);
    b = sm_alloc(600000); // freed bytes are given back
    CHECK(b != NULL);
    sm_free(b);
    CHECK(sm_calloc(1000, 1000) == NULL); // calloc counts too

    // A caller's own SM_ERR_ALLOC message keeps the reason: a 1000x1000 dense fit needs 4 MB.
    float *W = calloc(1000 * 1000, sizeof *W);
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 1000, 1000, "dense", NULL, &op), SM_ERR_ALLOC,
               "would exceed --max-memory 1 MB");
    CHECK(op == NULL);
    // ... once: the next, unrelated failure does not repeat it.
    CHECK(sm_fail(SM_ERR_ALLOC, "x") == SM_ERR_ALLOC && !strcmp(sm_last_error(), "x"));

    sm_free(small);
    CHECK(sm_alloc_in_use() == 0);
    sm_set_alloc_limit(0); // no bound: the same fit succeeds
    CHECK_OK(sm_op_fit(W, 1000, 1000, "dense", NULL, &op));
    CHECK(sm_alloc_in_use() >= 4000000);
    sm_op_free(op);
    CHECK(sm_alloc_in_use() == 0);
    free(W);
}

int main(void) {
    test_parse();
    test_limit();
    TEST_END();
}
