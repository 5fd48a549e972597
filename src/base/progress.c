#include "base.h"

#include <unistd.h>

void sm_progress_init(sm_progress *p, const char *what, int64_t total) {
    p->what = what;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = sm_now();
    p->tty = isatty(2) && !getenv("STRUCTMAT_NO_PROGRESS");
}

void sm_progress_step(sm_progress *p, int64_t done, const char *item) {
    p->done = done;
    if (!p->tty) return;
    double now = sm_now();
    if (now - p->last < 0.1 && done < p->total) return;
    p->last = now;
    double el = now - p->t0;
    double eta = done > 0 ? el * (double)(p->total - done) / (double)done : 0.0;
    fprintf(stderr, "\r\033[K%s %lld/%lld  %.1fs elapsed, ETA %.1fs  %s", p->what,
            (long long)done, (long long)p->total, el, eta, item ? item : "");
    fflush(stderr);
}

void sm_progress_end(sm_progress *p) {
    if (p->tty) fprintf(stderr, "\r\033[K");
}
