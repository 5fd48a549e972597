#include "cli.h"

int cmd_inspect(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "structmat inspect: not built yet\n");
    return 1;
}
