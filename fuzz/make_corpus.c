// Writes the seed corpora: make_corpus OUTDIR [TARGET...] creates OUTDIR/<target>/<seed> for
// every harness (or those named). Run from the repository root (a few seeds read its small
// model files).
#include "fuzz.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct out {
    char dir[1024];
    int failed;
} out;

static void emit(void *ctx, const char *name, const void *data, size_t size) {
    out *o = ctx;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", o->dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size) {
        fprintf(stderr, "make_corpus: %s: %s\n", path, strerror(errno));
        o->failed = 1;
    }
    if (f) fclose(f);
}

static int make(const char *root, const char *target) {
    out o = {.failed = 0};
    snprintf(o.dir, sizeof o.dir, "%s/%s", root, target);
    if (mkdir(o.dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_corpus: %s: %s\n", o.dir, strerror(errno));
        return 1;
    }
    int n = sm_fuzz_seeds(target, emit, &o);
    if (n < 0) {
        fprintf(stderr, "make_corpus: unknown target %s\n", target);
        return 1;
    }
    printf("%s: %d seeds\n", o.dir, n);
    return o.failed;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: make_corpus OUTDIR [TARGET...]\n");
        return 2;
    }
    if (mkdir(argv[1], 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_corpus: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    int rc = 0;
    if (argc > 2) {
        for (int i = 2; i < argc; i++) rc |= make(argv[1], argv[i]);
        return rc;
    }
#define MAKE(t) rc |= make(argv[1], #t);
    SM_FUZZ_TARGETS(MAKE)
#undef MAKE
    return rc;
}
