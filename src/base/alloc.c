#include "base.h"

#include <stdatomic.h>
#include <string.h>

// Failure injection for tests: STRUCTMAT_FAIL_ALLOC_AFTER=k fails the k-th allocation and later.
static atomic_long g_alloc_count;
static long g_fail_after = -2; // -2: not read yet, -1: never

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

void *sm_alloc(size_t bytes) {
    if (should_fail()) return NULL;
    if (bytes > ((size_t)1 << 46)) return NULL; // 64 TiB: certainly a corrupt size
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    return aligned_alloc(64, rounded);
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
    free(p);
}
