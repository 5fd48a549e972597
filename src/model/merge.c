// The shared BPE merge loop (merge.h).
#include "merge.h"

typedef struct heap {
    sm_merge_pair *a;
    int64_t n;
} heap;

static bool before(const sm_merge_pair *a, const sm_merge_pair *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static void heap_push(heap *h, sm_merge_pair p) {
    int64_t i = h->n++;
    while (i > 0 && before(&p, &h->a[(i - 1) / 2])) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = p;
}

static sm_merge_pair heap_pop(heap *h) {
    sm_merge_pair top = h->a[0], last = h->a[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->a[c + 1], &h->a[c])) c++;
        if (!before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

static void push(heap *h, const int32_t *sym, const int64_t *next, int64_t i, sm_merge_fn fn,
                 const void *ctx) {
    int64_t j = next[i];
    double key;
    int32_t res;
    if (j >= 0 && fn(ctx, sym[i], sym[j], &key, &res))
        heap_push(h, (sm_merge_pair){key, i, j, sym[i], sym[j], res});
}

void sm_merge_symbols(int32_t *sym, int64_t ns, int64_t *next, int64_t *prev, sm_merge_pair *buf,
                      sm_merge_fn fn, const void *ctx) {
    heap h = {buf, 0};
    for (int64_t i = 0; i < ns; i++) {
        next[i] = i + 1 < ns ? i + 1 : -1;
        prev[i] = i - 1;
    }
    for (int64_t i = 0; i + 1 < ns; i++) push(&h, sym, next, i, fn, ctx);
    while (h.n) {
        sm_merge_pair p = heap_pop(&h);
        if (sym[p.left] != p.lid || next[p.left] != p.right || sym[p.right] != p.rid) continue;
        sym[p.left] = p.res; // the left symbol absorbs the right one
        int64_t r = next[p.right];
        next[p.left] = r;
        if (r >= 0) prev[r] = p.left;
        sym[p.right] = -1;
        if (prev[p.left] >= 0) push(&h, sym, next, prev[p.left], fn, ctx);
        push(&h, sym, next, p.left, fn, ctx);
    }
}
