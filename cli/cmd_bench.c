#include "cli.h"

int cmd_bench(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "structmat bench: not built yet\n");
    return 1;
}
