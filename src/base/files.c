#include "base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
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

// --- directories ----------------------------------------------------------------------------------

// Removes dir and the plain files in it (what the writers put there; nothing deeper).
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    rmdir(dir);
}

sm_status sm_atomic_dir_open(sm_atomic_dir *d, const char *path, bool force) {
    memset(d, 0, sizeof *d);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return sm_fail(SM_ERR_IO, "%s: exists and is not a directory", path);
        if (!force) return sm_fail(SM_ERR_EXISTS, "%s: exists (use --force to replace it)", path);
    }
    size_t n = strlen(path) + 16;
    d->path = dup_str(path);
    d->tmp = malloc(n);
    if (!d->path || !d->tmp) {
        sm_atomic_dir_abort(d);
        return sm_fail(SM_ERR_ALLOC, "%s: out of memory", path);
    }
    snprintf(d->tmp, n, "%s.tmp-XXXXXX", path);
    if (!mkdtemp(d->tmp)) {
        sm_status s = sm_fail(SM_ERR_IO, "%s: cannot create a temporary directory: %s", path,
                              strerror(errno));
        free(d->tmp);
        d->tmp = NULL;
        sm_atomic_dir_abort(d);
        return s;
    }
    chmod(d->tmp, 0755);
    return SM_OK;
}

// fsync of every plain file in dir, then of dir itself.
static sm_status sync_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return sm_fail(SM_ERR_IO, "%s: %s", dir, strerror(errno));
    sm_status s = SM_OK;
    for (struct dirent *e; (e = readdir(d)) != NULL && s == SM_OK;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0)
            s = sm_fail(SM_ERR_IO, "%s/%s: fsync failed: %s", dir, e->d_name, strerror(errno));
        if (fd >= 0) close(fd);
    }
    if (s == SM_OK && fsync(dirfd(d)) != 0)
        s = sm_fail(SM_ERR_IO, "%s: fsync failed: %s", dir, strerror(errno));
    closedir(d);
    return s;
}

sm_status sm_atomic_dir_commit(sm_atomic_dir *d) {
    sm_status s = sync_dir(d->tmp);
    struct stat sb;
    bool exists = s == SM_OK && lstat(d->path, &sb) == 0;
    if (s == SM_OK && !exists && rename(d->tmp, d->path) != 0)
        s = sm_fail(SM_ERR_IO, "%s: rename failed: %s", d->path, strerror(errno));
    if (s == SM_OK && exists) {
        // One step: the old directory takes the temporary name, the new one the path.
        if (renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->path, RENAME_EXCHANGE) != 0)
            s = sm_fail(SM_ERR_IO, "%s: exchanging it with the new directory failed: %s",
                        d->path, strerror(errno));
    }
    if (s == SM_OK) {
        fsync_dir_of(d->path);
        if (!exists) { // nothing left at tmp
            free(d->tmp);
            d->tmp = NULL;
        }
    }
    sm_atomic_dir_abort(d); // removes tmp: the unfinished new directory, or the old one
    return s;
}

void sm_atomic_dir_abort(sm_atomic_dir *d) {
    if (d->tmp) remove_flat_dir(d->tmp);
    free(d->tmp);
    free(d->path);
    memset(d, 0, sizeof *d);
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
