// sm_atomic_dir (src/base/files.c): a directory of files written to a temporary sibling and put
// in place in one step. Fresh, refused, replaced and aborted outputs; then a child writing a
// two-file directory over an existing one is killed with SIGKILL at 20 seeded points, and the
// directory must each time be wholly the old one or wholly the new one.
#include "base/base.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FILE_BYTES (2 << 20) // per file, so that a write takes long enough to be interrupted

static char g_dir[256];

static void write_file(const char *dir, const char *name, int gen, size_t bytes) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f, "generation %d\n", gen);
    for (size_t i = 0; i < bytes; i++) fputc('a' + gen % 26, f);
    CHECK(fclose(f) == 0);
}

// The generation a directory holds when it is whole: exactly the files a and b, both complete
// and of one generation; -1 otherwise (-2 when the directory is absent).
static int generation(const char *dir, size_t bytes) {
    DIR *d = opendir(dir);
    if (!d) return -2;
    int count = 0, gen[2] = {-1, -1};
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        count++;
        int k = !strcmp(e->d_name, "a") ? 0 : !strcmp(e->d_name, "b") ? 1 : -1;
        if (k < 0) continue;
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        int g = -1;
        if (f && fscanf(f, "generation %d\n", &g) == 1) {
            long body = 0;
            int c;
            while ((c = fgetc(f)) != EOF)
                if (c == 'a' + g % 26) body++;
            if ((size_t)body != bytes) g = -1;
        }
        if (f) fclose(f);
        gen[k] = g;
    }
    closedir(d);
    return count == 2 && gen[0] >= 0 && gen[0] == gen[1] ? gen[0] : -1;
}

static int count_tmp(const char *path) {
    char pat[256];
    snprintf(pat, sizeof pat, "%s.tmp-*", path);
    glob_t g;
    int n = glob(pat, 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
    globfree(&g);
    return n;
}

static void remove_tmp(const char *path) {
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf %s.tmp-*", path);
    CHECK(system(cmd) == 0);
}

// Writes generation gen of the two-file directory at path (replacing it when force).
static sm_status write_dir(const char *path, int gen, bool force, size_t bytes) {
    sm_atomic_dir d;
    sm_status s = sm_atomic_dir_open(&d, path, force);
    if (s != SM_OK) return s;
    write_file(d.tmp, "a", gen, bytes);
    write_file(d.tmp, "b", gen, bytes);
    return sm_atomic_dir_commit(&d);
}

static void test_basic(void) {
    char path[128], file[160];
    snprintf(path, sizeof path, "%s/out", g_dir);
    CHECK_OK(write_dir(path, 1, false, 10));
    CHECK(generation(path, 10) == 1);
    CHECK(count_tmp(path) == 0);
    // Existing: refused without force, and nothing is left behind.
    CHECK_FAIL(write_dir(path, 2, false, 10), SM_ERR_EXISTS, "exists");
    CHECK(generation(path, 10) == 1);
    CHECK(count_tmp(path) == 0);
    // Replaced with force: a file only the old directory had is gone with it.
    snprintf(file, sizeof file, "%s/c", path);
    FILE *f = fopen(file, "w");
    CHECK(f && fclose(f) == 0);
    CHECK_OK(write_dir(path, 3, true, 10));
    CHECK(generation(path, 10) == 3);
    CHECK(access(file, F_OK) != 0);
    CHECK(count_tmp(path) == 0);
    // Aborted: the old directory stays, the temporary one goes.
    sm_atomic_dir d;
    CHECK_OK(sm_atomic_dir_open(&d, path, true));
    write_file(d.tmp, "a", 4, 10);
    sm_atomic_dir_abort(&d);
    CHECK(generation(path, 10) == 3);
    CHECK(count_tmp(path) == 0);
    // A plain file in the way is not replaced by a directory.
    snprintf(file, sizeof file, "%s/plain", g_dir);
    f = fopen(file, "w");
    CHECK(f && fclose(f) == 0);
    CHECK_FAIL(write_dir(file, 1, true, 10), SM_ERR_IO, "not a directory");
    CHECK(count_tmp(file) == 0);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static pid_t spawn_writer(const char *path, int gen) {
    pid_t pid = fork();
    if (pid == 0) _exit(write_dir(path, gen, true, FILE_BYTES) == SM_OK ? 0 : 1);
    return pid;
}

static void test_sigkill(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/killed", g_dir);
    CHECK_OK(write_dir(path, 0, false, FILE_BYTES));
    // How long one replacement takes, to spread the kill points over it.
    double t0 = now();
    pid_t pid = spawn_writer(path, 1);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    double span = now() - t0;
    CHECK(generation(path, FILE_BYTES) == 1);
    unsigned seed = 24301;
    int gen = 1, killed = 0, outcomes[2] = {0, 0};
    for (int k = 0; k < 20; k++) {
        pid = spawn_writer(path, gen + 1);
        seed = seed * 1103515245u + 12345u;
        double delay = span * 1.1 * (double)(seed >> 16 & 0x7fff) / 32768.0;
        struct timespec ts = {(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
        if (kill(pid, SIGKILL) == 0) killed++;
        CHECK(waitpid(pid, &status, 0) == pid);
        int g = generation(path, FILE_BYTES);
        if (g != gen && g != gen + 1) {
            fprintf(stderr, "kill %d at %.1f ms: %s is %s (generation %d or %d expected)\n", k,
                    delay * 1e3, path,
                    g == -2   ? "absent"
                    : g == -1 ? "a mix or cut"
                              : "stale",
                    gen, gen + 1);
            g_failures++;
            return;
        }
        outcomes[g - gen]++;
        gen = g;
        remove_tmp(path); // what the killed writer left: its own or the old directory
    }
    CHECK(killed >= 10); // the points must mostly hit a running writer
    // Which of the two a random point gives depends on the machine's timing, so both outcomes are
    // pinned below by kills at known points rather than required of the sweep.
    if (getenv("VERBOSE"))
        printf("replacement %.1f ms; %d of 20 killed while running; old %d, new %d\n", span * 1e3,
               killed, outcomes[0], outcomes[1]);
}

// A writer that kills itself just before or just after its commit: the directory must then be
// exactly the old or exactly the new generation.
static void test_kill_at_commit(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/edges", g_dir);
    CHECK_OK(write_dir(path, 0, false, 10));
    for (int after = 0; after < 2; after++) {
        pid_t pid = fork();
        if (pid == 0) {
            sm_atomic_dir d;
            if (sm_atomic_dir_open(&d, path, true) != SM_OK) _exit(1);
            write_file(d.tmp, "a", after + 1, 10);
            write_file(d.tmp, "b", after + 1, 10);
            if (after && sm_atomic_dir_commit(&d) != SM_OK) _exit(1);
            raise(SIGKILL);
            _exit(1);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
        CHECK(generation(path, 10) == (after ? 2 : 0));
        remove_tmp(path);
    }
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/sm-atomic-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_basic();
    test_kill_at_commit();
    test_sigkill();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_END();
}
