#include "base.h"

#include <ctype.h>
#include <malloc.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

// Failure injection for tests: STRUCTMAT_FAIL_ALLOC_AFTER=k fails the k-th allocation and later.
static atomic_long g_alloc_count;
static long g_fail_after = -2; // -2: not read yet, -1: never

// The --max-memory budget: live bytes of sm_alloc (as malloc_usable_size reports them, so that
// sm_free can subtract exactly what was added without a header in front of the block; signed,
// because memory from plain malloc handed to sm_free by mistake would otherwise wrap it).
static atomic_llong g_in_use;
static atomic_size_t g_limit; // 0: none

static bool should_fail(void) {
    if (g_fail_after == -2) {
        const char *e = getenv("STRUCTMAT_FAIL_ALLOC_AFTER");
        g_fail_after = e ? atol(e) : -1;
    }
    if (g_fail_after < 0) return false;
    return atomic_fetch_add(&g_alloc_count, 1) + 1 >= g_fail_after;
}

size_t sm_mul_size(size_t a, size_t b, bool *ok) {
    if (a != 0 && b > SIZE_MAX / a) {
        *ok = false;
        return 0;
    }
    return a * b;
}

void sm_set_alloc_limit(size_t bytes) {
    atomic_store(&g_limit, bytes);
}

size_t sm_alloc_limit(void) {
    return atomic_load(&g_limit);
}

size_t sm_alloc_in_use(void) {
    long long n = atomic_load(&g_in_use);
    return n > 0 ? (size_t)n : 0;
}

// "1.5 MB": bytes in powers of 10, as --max-memory and compress --target read them.
static void fmt_bytes(char *buf, size_t cap, double b) {
    static const char *const unit[] = {"bytes", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) b /= 1000, u++;
    snprintf(buf, cap, u ? "%.4g %s" : "%.0f %s", b, unit[u]);
}

// Reserves `bytes` against the limit; false (with the message set) when it would exceed it.
static bool reserve(size_t bytes) {
    size_t limit = atomic_load(&g_limit);
    long long cur = atomic_load(&g_in_use);
    for (;;) {
        long long used = cur > 0 ? cur : 0;
        if (limit && (bytes > limit || (size_t)used > limit - bytes)) {
            char want[32], lim[32], have[32];
            fmt_bytes(want, sizeof want, (double)bytes);
            fmt_bytes(lim, sizeof lim, (double)limit);
            fmt_bytes(have, sizeof have, (double)used);
            sm_error_clear(); // an earlier refusal's note is not appended to this one
            sm_fail(SM_ERR_ALLOC, "allocating %s would exceed --max-memory %s (%s in use)", want,
                    lim, have);
            sm_error_note_budget();
            return false;
        }
        if (atomic_compare_exchange_weak(&g_in_use, &cur, cur + (long long)bytes)) return true;
    }
}

void *sm_alloc(size_t bytes) {
    if (should_fail()) return NULL;
    if (bytes > ((size_t)1 << 46)) return NULL; // 64 TiB: certainly a corrupt size
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    if (!reserve(rounded)) return NULL;
    void *p = aligned_alloc(64, rounded);
    // What sm_free will subtract is the block's usable size; book the difference now.
    long long got = p ? (long long)malloc_usable_size(p) : 0;
    atomic_fetch_add(&g_in_use, got - (long long)rounded);
    return p;
}

void *sm_calloc(size_t count, size_t size) {
    bool ok = true;
    size_t bytes = sm_mul_size(count, size, &ok);
    if (!ok) return NULL;
    void *p = sm_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void sm_free(void *p) {
    if (!p) return;
    atomic_fetch_sub(&g_in_use, (long long)malloc_usable_size(p));
    free(p);
}

sm_status sm_parse_bytes(const char *text, size_t *bytes) {
    static const struct {
        const char *name;
        double scale;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"kB", 1e3},
                 {"KB", 1e3},
                 {"MB", 1e6},
                 {"GB", 1e9},
                 {"TB", 1e12},
                 {"KiB", 1024.0},
                 {"MiB", 1048576.0},
                 {"GiB", 1073741824.0},
                 {"TiB", 1099511627776.0}};
    char *end = NULL;
    if (!text || !(isdigit((unsigned char)text[0]) || text[0] == '.'))
        return sm_fail(SM_ERR_ARG, "\"%s\" is not a size (e.g. 500MB, 2GB, 1.5GiB)",
                       text ? text : "");
    double v = strtod(text, &end);
    while (*end == ' ') end++;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].name)) continue;
        double b = floor(v * units[i].scale);
        if (!(b >= 1) || b > 9.0e18)
            return sm_fail(SM_ERR_ARG, "\"%s\": a size from 1 byte to 9 EB expected", text);
        *bytes = (size_t)b;
        return SM_OK;
    }
    return sm_fail(SM_ERR_ARG, "\"%s\" is not a size (e.g. 500MB, 2GB, 1.5GiB)", text);
}
