#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

sm_status sm_atomic_open(sm_atomic_file *a, const char *path, bool force) {
    memset(a, 0, sizeof *a);
    struct stat sb;
    if (!force && stat(path, &sb) == 0)
        return sm_fail(SM_ERR_EXISTS, "%s: exists (use --force to replace it)", path);
    size_t n = strlen(path) + 16;
    a->path = dup_str(path);
    a->tmp = malloc(n);
    if (!a->path || !a->tmp) {
        sm_atomic_abort(a);
        return sm_fail(SM_ERR_ALLOC, "%s: out of memory", path);
    }
    snprintf(a->tmp, n, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        sm_status s = sm_fail(SM_ERR_IO, "%s: cannot create a temporary file: %s", path,
                              strerror(errno));
        free(a->tmp);
        a->tmp = NULL;
        sm_atomic_abort(a);
        return s;
    }
    fchmod(fd, 0644);
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        close(fd);
        sm_atomic_abort(a);
        return sm_fail(SM_ERR_IO, "%s: %s", path, strerror(errno));
    }
    return SM_OK;
}

static void fsync_dir_of(const char *path) {
    char *d = dup_str(path);
    if (!d) return;
    int fd = open(dirname(d), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(d);
}

sm_status sm_atomic_commit(sm_atomic_file *a) {
    sm_status s = SM_OK;
    if (fflush(a->f) != 0 || ferror(a->f) || fsync(fileno(a->f)) != 0)
        s = sm_fail(SM_ERR_IO, "%s: write failed: %s", a->path, strerror(errno));
    if (fclose(a->f) != 0 && s == SM_OK)
        s = sm_fail(SM_ERR_IO, "%s: close failed: %s", a->path, strerror(errno));
    a->f = NULL;
    if (s == SM_OK && rename(a->tmp, a->path) != 0)
        s = sm_fail(SM_ERR_IO, "%s: rename failed: %s", a->path, strerror(errno));
    if (s == SM_OK) {
        fsync_dir_of(a->path);
        free(a->tmp);
        a->tmp = NULL;
    }
    sm_atomic_abort(a);
    return s;
}

void sm_atomic_abort(sm_atomic_file *a) {
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    memset(a, 0, sizeof *a);
}

sm_status sm_read_file(const char *path, char **data, size_t *size, size_t max_size) {
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sm_fail(SM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return sm_fail(SM_ERR_IO, "%s: not a regular file", path);
    }
    if ((size_t)sb.st_size > max_size) {
        fclose(f);
        return sm_fail(SM_ERR_FORMAT, "%s: %lld bytes, more than the %zu allowed", path,
                       (long long)sb.st_size, max_size);
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        fclose(f);
        return sm_fail(SM_ERR_ALLOC, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, (size_t)sb.st_size, f);
    fclose(f);
    if (got != (size_t)sb.st_size) {
        free(buf);
        return sm_fail(SM_ERR_IO, "%s: short read", path);
    }
    buf[got] = 0;
    *data = buf;
    if (size) *size = got;
    return SM_OK;
}
