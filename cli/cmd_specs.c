#include "cli.h"

#include <string.h>

int cmd_specs(int argc, char **argv) {
    if (argc > 1 && cli_is_help(argv[1])) {
        printf("usage: structmat specs\n\nPrints every structure with its keys and defaults.\n"
               "A spec is term[+term...], term = name[:key=value|flag,...], e.g.\n"
               "lowrank:rank=64, monarch:blocks=4, kron:a=16x16,terms=2, dense:dtype=bf16\n");
        return 0;
    }
    fputs(sm_spec_help(), stdout);
    return 0;
}
