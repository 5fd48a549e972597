// The fuzz harnesses (fuzz/fuzz_*.c) outside libFuzzer: every seed of every harness's corpus
// (fuzz/corpus.c) and every input in tests/regress/<target>/ -- each one a crash or invariant
// failure the fuzzers found, kept after its fix -- is run through the harness, which aborts on a
// failed invariant. Seeds must be accepted (refused when named "bad-"), so the corpora stay
// meaningful as the formats change; regression inputs named "bad-" must be refused.
#include "../fuzz/fuzz.h"
#include "testutil.h"

#include <dirent.h>

typedef int (*harness_fn)(const uint8_t *, size_t);

typedef struct run {
    const char *target;
    harness_fn fn;
    int seeds;
} run;

static bool starts(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

static void seed(void *ctx, const char *name, const void *data, size_t size) {
    run *r = ctx;
    // The harness may keep pointers into the input only while it runs: give it its own copy.
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    int accepted = r->fn(copy, size);
    free(copy);
    r->seeds++;
    if (starts(name, "any-")) return;
    bool want = !starts(name, "bad-");
    if (accepted != want) {
        fprintf(stderr, "%s seed %s: %s (%s)\n", r->target, name, want ? "refused" : "accepted",
                sm_last_error());
        g_failures++;
    }
}

static int replay_dir(const char *target, harness_fn fn) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/regress/%s", target);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
        size_t got = fread(buf, 1, (size_t)size, f);
        fclose(f);
        CHECK(got == (size_t)size);
        int accepted = fn(buf, got);
        if (starts(e->d_name, "bad-") && accepted) {
            fprintf(stderr, "%s: accepted\n", path);
            g_failures++;
        }
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    int verbose = argc > 1 && !strcmp(argv[1], "-v");
#define RUN(t)                                                                                     \
    {                                                                                              \
        run r = {#t, sm_fuzz_##t, 0};                                                              \
        CHECK(sm_fuzz_seeds(#t, seed, &r) > 0);                                                    \
        int n = replay_dir(#t, sm_fuzz_##t);                                                       \
        if (verbose) printf("%-12s %3d seeds, %3d regression inputs\n", #t, r.seeds, n);           \
    }
    SM_FUZZ_TARGETS(RUN)
#undef RUN
    TEST_END();
}
