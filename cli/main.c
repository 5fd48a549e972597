// structmat <command> [args]
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} k_commands[] = {
    {"inspect", cmd_inspect, "spectra, ranks, norms and outliers of a checkpoint's matrices"},
    {"calibrate", cmd_calibrate, "collect activation statistics of a model on a text for --calib"},
    {"fit", cmd_fit, "fit matrices to a structure; error, size and speed figures"},
    {"compress", cmd_compress, "compress a whole model to a target size, choosing per matrix"},
    {"export", cmd_export, "write a compressed checkpoint as a plain dense one"},
    {"eval", cmd_eval, "perplexity, bits per byte and KL divergence of a model on a text"},
    {"generate", cmd_generate, "generate text or token ids from a prompt"},
    {"bench", cmd_bench, "apply throughput of every structure against dense OpenBLAS"},
    {"specs", cmd_specs, "the structures, their keys and defaults"},
};
#define NCMD (int)(sizeof k_commands / sizeof k_commands[0])

static void usage(FILE *f) {
    fprintf(f, "structmat %s: structured, low-rank and low-bit weight matrices\n\n"
               "usage: structmat <command> [options]   (structmat <command> --help)\n\n",
            SM_VERSION);
    for (int i = 0; i < NCMD; i++) fprintf(f, "  %-9s %s\n", k_commands[i].name, k_commands[i].what);
    fprintf(f, "\n  --version  version and kernel level\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("structmat %s (kernels: %s, cpu: %s)\n", SM_VERSION, sm_isa_name(sm_isa_active()),
               sm_isa_name(sm_isa_detect()));
        return 0;
    }
    for (int i = 0; i < NCMD; i++)
        if (strcmp(argv[1], k_commands[i].name) == 0) return k_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "structmat: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
