#include "base.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char g_msg[1024];
// The --max-memory refusal of the last failed sm_alloc on this thread, until an SM_ERR_ALLOC
// failure reports it: callers of sm_alloc write their own "out of memory for ..." over the
// allocator's message, and the reader must still learn that the budget, not the machine, ran out.
static _Thread_local char g_budget[256];

const char *sm_status_str(sm_status s) {
    switch (s) {
    case SM_OK: return "ok";
    case SM_ERR_ALLOC: return "out of memory";
    case SM_ERR_ARG: return "invalid argument";
    case SM_ERR_SHAPE: return "shape mismatch";
    case SM_ERR_SPEC: return "bad spec";
    case SM_ERR_IO: return "I/O error";
    case SM_ERR_FORMAT: return "malformed file";
    case SM_ERR_UNSUPPORTED: return "unsupported";
    case SM_ERR_NUMERIC: return "numerical error";
    case SM_ERR_NOT_FOUND: return "not found";
    case SM_ERR_EXISTS: return "already exists";
    }
    return "unknown status";
}

const char *sm_last_error(void) {
    return g_msg;
}

void sm_error_clear(void) {
    g_msg[0] = 0;
    g_budget[0] = 0;
}

void sm_error_note_budget(void) {
    snprintf(g_budget, sizeof g_budget, "%s", g_msg);
}

sm_status sm_fail(sm_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    if (s == SM_ERR_ALLOC && g_budget[0]) {
        if (strcmp(g_msg, g_budget)) {
            size_t n = strlen(g_msg);
            snprintf(g_msg + n, sizeof g_msg - n, ": %s", g_budget);
        }
        g_budget[0] = 0;
    }
    return s;
}

void sm_error_prefix(const char *fmt, ...) {
    char pre[512], old[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    snprintf(g_msg, sizeof g_msg, "%s%s", pre, old);
}

void sm_assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "structmat: assertion failed at %s:%d: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}
