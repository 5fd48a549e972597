#include "cli.h"

int cmd_fit(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "structmat fit: not built yet\n");
    return 1;
}
