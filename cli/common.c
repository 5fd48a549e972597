#include "cli.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool cli_is_help(const char *a) {
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0;
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "structmat: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

// Digits only (decimal, or hexadecimal after 0x): strtoull alone also takes a sign, wrapping
// "-1" to 2^64 - 1, leading spaces, and saturates out-of-range values without a word.
static bool parse_u64(const char *s, uint64_t *out) {
    char *end;
    if (!s || !(*s >= '0' && *s <= '9')) return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end || errno) return false;
    *out = v;
    return true;
}

int cli_common_arg(cli_common *c, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    uint64_t v;
    if (strcmp(a, "--threads") == 0 || strcmp(a, "-t") == 0) {
        const char *s = cli_value(argc, argv, i);
        if (!parse_u64(s, &v) || v > 1024) {
            fprintf(stderr, "structmat: --threads needs a number in [0, 1024]\n");
            return -1;
        }
        c->threads = (int)v;
        return 1;
    }
    if (strcmp(a, "--seed") == 0) {
        const char *s = cli_value(argc, argv, i);
        if (!parse_u64(s, &v)) {
            fprintf(stderr, "structmat: --seed needs a non-negative integer\n");
            return -1;
        }
        c->seed = v;
        return 1;
    }
    if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
        c->out = cli_value(argc, argv, i);
        return c->out ? 1 : -1;
    }
    if (strcmp(a, "--json") == 0) {
        c->json = true;
        return 1;
    }
    if (strcmp(a, "--force") == 0) {
        c->force = true;
        return 1;
    }
    return 0;
}

int cli_fail(const char *cmd, const char *what) {
    const char *e = sm_last_error();
    fprintf(stderr, "structmat %s: %s%s%s\n", cmd, what ? what : "", what && *e ? ": " : "", e);
    return 1;
}

int cli_check_output(const char *cmd, const char *path, bool force) {
    struct stat sb;
    if (!*path) {
        fprintf(stderr, "structmat %s: the output path is empty\n", cmd);
        return 1;
    }
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "structmat %s: %s: is a directory (give a file name)\n", cmd, path);
        return 1;
    }
    if (!force && stat(path, &sb) == 0) {
        fprintf(stderr, "structmat %s: %s: exists (use --force to replace it)\n", cmd, path);
        return 1;
    }
    char *copy = strdup(path);
    if (!copy) {
        fprintf(stderr, "structmat %s: out of memory\n", cmd);
        return 1;
    }
    const char *dir = dirname(copy);
    int rc = 0;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "structmat %s: %s: the directory %s does not exist\n", cmd, path, dir);
        rc = 1;
    } else if (access(dir, W_OK) != 0) {
        fprintf(stderr, "structmat %s: %s: cannot write to the directory %s: %s\n", cmd, path, dir,
                strerror(errno));
        rc = 1;
    }
    free(copy);
    return rc;
}

void cli_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}
