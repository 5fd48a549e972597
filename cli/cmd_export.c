// structmat export MODEL --dense -o DIR [--dtype f32|f16|bf16] [--force]
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "structmat_compress.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: structmat export MODEL --dense -o DIR [options]\n\n"
            "Writes a plain dense Hugging Face checkpoint of MODEL (a compressed checkpoint from\n"
            "structmat compress or fit --save-model), for tools that read only dense weights:\n"
            "every structmat operator becomes its dense matrix, everything else is copied as\n"
            "stored, and config.json loses its \"structmat\" object. One operator is held at a\n"
            "time; DIR is written atomically (an existing DIR is the old or the new one).\n\n"
            "  --dense        the dense export (the only kind so far)\n"
            "  --dtype T      f32 (default), f16 or bf16: the dtype of the decoded matrices\n"
            "  -o DIR         the output directory\n"
            "  --force        replace DIR if it exists\n\n"
            "example:\n"
            "  structmat export m3 --dense -o m3-dense\n");
}

int cmd_export(int argc, char **argv) {
    cli_common c = {0};
    const char *model = NULL;
    bool dense = false;
    sm_dtype dt = SM_DTYPE_F32;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--dense")) {
            dense = true;
        } else if (!strcmp(argv[i], "--dtype")) {
            const char *v = cli_value(argc, argv, &i);
            if (!v) return 2;
            dt = !strcmp(v, "f32")    ? SM_DTYPE_F32
                 : !strcmp(v, "f16")  ? SM_DTYPE_F16
                 : !strcmp(v, "bf16") ? SM_DTYPE_BF16
                                      : SM_DTYPE_UNKNOWN;
            if (dt == SM_DTYPE_UNKNOWN) {
                fprintf(stderr, "structmat export: --dtype f32, f16 or bf16\n");
                return 2;
            }
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "structmat export: unknown option %s\n", argv[i]);
            return 2;
        } else if (!model) {
            model = argv[i];
        } else {
            fprintf(stderr, "structmat export: one MODEL only\n");
            return 2;
        }
    }
    if (!model || !c.out || !dense) {
        fprintf(stderr, "structmat export: need MODEL, --dense and -o DIR\n\n");
        usage(stderr);
        return 2;
    }
    struct stat sb;
    if (stat(c.out, &sb) == 0 && !c.force) {
        fprintf(stderr, "structmat export: %s: exists (use --force to replace it)\n", c.out);
        return 1;
    }
    sm_set_threads(c.threads);
    if (sm_export_dense(model, c.out, dt, c.force) != SM_OK) return cli_fail("export", NULL);
    if (!c.json)
        fprintf(stderr, "wrote %s\n", c.out);
    else {
        printf("{\"output\":");
        cli_json_str(stdout, c.out);
        printf(",\"dtype\":\"%s\"}\n", sm_dtype_name(dt));
    }
    return 0;
}
