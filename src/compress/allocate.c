// Phase 2 of compress: one candidate per matrix, the summed error minimal under a byte budget
// (a multiple-choice knapsack).
//
// Method: a Lagrangian sweep, then a greedy fill of the slack.
//   1. Per matrix only the lower convex hull of its (bytes, error) points matters to a
//      Lagrangian: for a multiplier lambda each matrix takes argmin error + lambda bytes, which
//      is a hull vertex. Walking lambda down from infinity is the same as starting every matrix
//      at its smallest candidate and taking hull steps in order of decreasing slope
//      (error saved per byte); stopping before the first step that does not fit gives the
//      Lagrangian solution, which is exactly optimal for the total it reaches (any choice with
//      fewer or equal bytes has at least its error).
//   2. The budget left over (one hull step can be a large share of it with few matrices, or
//      curves that are far from convex: quantizer bit widths are) is filled greedily: among all
//      candidates of all matrices, not only hull vertices, the move that lowers the error most
//      per added byte and still fits, repeated until none fits.
// Why not a dynamic program: it is exact only on a byte grid, costs matrices x candidates x grid
// cells, and must round bytes (up, to stay under the ceiling) so its answer carries a slack of
// up to a grid cell per matrix; the sweep is O(K log K) in the K candidates of the whole model,
// exact at its own totals, and the fill recovers most of the rest (tests/test_compress_alloc.c
// compares the result with brute force: on random, deliberately non-convex curves the optimum
// in 89% of instances and 1.03% more error in total).
#include "compress_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct step {
    int item, from, to; // hull vertex from -> to of one item
    double slope;       // error saved per byte
} step;

static int cmp_step(const void *a, const void *b) {
    const step *x = a, *y = b;
    if (x->slope != y->slope) return x->slope > y->slope ? -1 : 1;
    if (x->item != y->item) return x->item - y->item;
    return x->from - y->from;
}

static const sm_alloc_item *g_sort_item; // qsort has no user pointer
static int cmp_by_bytes(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    const sm_alloc_item *it = g_sort_item;
    if (it->bytes[i] != it->bytes[j]) return it->bytes[i] < it->bytes[j] ? -1 : 1;
    if (it->err[i] != it->err[j]) return it->err[i] < it->err[j] ? -1 : 1;
    return i - j;
}

// The lower convex hull of item's points, from the smallest (and among equal bytes the most
// accurate) to the most accurate: indices into hull (returns the count). order has n ints.
static int lower_hull(const sm_alloc_item *it, int *order, int *hull) {
    for (int j = 0; j < it->n; j++) order[j] = j;
    g_sort_item = it;
    qsort(order, (size_t)it->n, sizeof *order, cmp_by_bytes);
    int h = 0;
    for (int k = 0; k < it->n; k++) {
        int j = order[k];
        // Only points more accurate than every smaller one (the Pareto front) ...
        if (h > 0 && !(it->err[j] < it->err[hull[h - 1]])) continue;
        if (h > 0 && it->bytes[j] == it->bytes[hull[h - 1]]) h--;
        // ... and convex: drop the last vertex while it lies on or above the chord.
        while (h >= 2) {
            int a = hull[h - 2], b = hull[h - 1];
            double s1 = (it->err[a] - it->err[b]) / (double)(it->bytes[b] - it->bytes[a]);
            double s2 = (it->err[b] - it->err[j]) / (double)(it->bytes[j] - it->bytes[b]);
            if (s2 >= s1)
                h--;
            else
                break;
        }
        hull[h++] = j;
    }
    return h;
}

sm_status sm_allocate(const sm_alloc_item *items, int count, int64_t budget, int *choice,
                      int64_t *lagrangian_bytes) {
    int64_t total = 0, nc = 0;
    for (int i = 0; i < count; i++) {
        if (items[i].n < 1) return sm_fail(SM_ERR_ARG, "allocate: matrix %d has no candidate", i);
        nc += items[i].n;
    }
    int *order = malloc(sizeof(int) * (size_t)(nc + 1));
    int *hull = malloc(sizeof(int) * (size_t)(nc + 1));
    int *hstart = malloc(sizeof(int) * (size_t)(count + 1));
    step *steps = malloc(sizeof(step) * (size_t)(nc + 1));
    if (!order || !hull || !hstart || !steps) {
        free(order), free(hull), free(hstart), free(steps);
        return sm_fail(SM_ERR_ALLOC, "allocate: out of memory");
    }
    int nh = 0, ns = 0;
    for (int i = 0; i < count; i++) {
        hstart[i] = nh;
        int h = lower_hull(&items[i], order, hull + nh);
        choice[i] = hull[nh];
        total += items[i].bytes[hull[nh]];
        for (int k = 0; k + 1 < h; k++) {
            int a = hull[nh + k], b = hull[nh + k + 1];
            steps[ns++] = (step){i, a, b,
                                 (items[i].err[a] - items[i].err[b]) /
                                     (double)(items[i].bytes[b] - items[i].bytes[a])};
        }
        nh += h;
    }
    hstart[count] = nh;
    sm_status st = SM_OK;
    if (total > budget) {
        st = sm_fail(SM_ERR_ARG,
                     "the smallest reachable size is %lld bytes, above the budget of "
                     "%lld",
                     (long long)total, (long long)budget);
        goto done;
    }
    // 1. Hull steps in order of decreasing slope; an item's steps are in hull order, as the
    //    slopes of a convex hull decrease along it (ties keep the order by `from`'s position).
    qsort(steps, (size_t)ns, sizeof *steps, cmp_step);
    for (int k = 0; k < ns; k++) {
        const step *s = &steps[k];
        if (choice[s->item] != s->from) continue; // cannot happen on a strictly convex hull
        int64_t add = items[s->item].bytes[s->to] - items[s->item].bytes[s->from];
        if (total + add > budget) break;
        total += add;
        choice[s->item] = s->to;
    }
    if (lagrangian_bytes) *lagrangian_bytes = total;
    // 2. Greedy fill of the slack with any candidate, best error saved per byte first.
    for (;;) {
        int bi = -1, bj = -1;
        double best = 0;
        for (int i = 0; i < count; i++) {
            const sm_alloc_item *it = &items[i];
            int c = choice[i];
            for (int j = 0; j < it->n; j++) {
                int64_t add = it->bytes[j] - it->bytes[c];
                double gain = it->err[c] - it->err[j];
                if (!(gain > 0) || total + add > budget) continue;
                // A move that also saves bytes is better than any that costs some.
                double r = add <= 0 ? INFINITY : gain / (double)add;
                if (bi < 0 || r > best ||
                    (r == best && add < items[bi].bytes[bj] - items[bi].bytes[choice[bi]])) {
                    bi = i, bj = j, best = r;
                }
            }
        }
        if (bi < 0) break;
        total += items[bi].bytes[bj] - items[bi].bytes[choice[bi]];
        choice[bi] = bj;
    }
done:
    free(order), free(hull), free(hstart), free(steps);
    return st;
}
