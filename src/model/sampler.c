// Sampling the next token from logits: greedy, temperature, top-p; and small logit helpers.
#include "model.h"

#include <math.h>
#include <string.h>

typedef struct cand {
    double p;
    int32_t id;
} cand;

struct sm_sampler {
    sm_sampler_params par;
    int64_t vocab;
    sm_rng rng;
    double *prob; // (vocab)
    cand *cands;  // (vocab) nucleus candidates
};

sm_status sm_sampler_init(const sm_sampler_params *p, int64_t vocab_size, sm_sampler **out) {
    *out = NULL;
    if (!p || vocab_size <= 0 || vocab_size > INT32_MAX)
        return sm_fail(SM_ERR_ARG, "sampler: need parameters and a vocabulary (got %lld tokens)",
                       (long long)vocab_size);
    if (!isfinite(p->temperature) || !isfinite(p->top_p))
        return sm_fail(SM_ERR_ARG, "sampler: temperature %g and top_p %g must be finite",
                       (double)p->temperature, (double)p->top_p);
    sm_sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->prob = sm_alloc((size_t)vocab_size * sizeof *s->prob);
        s->cands = sm_alloc((size_t)vocab_size * sizeof *s->cands);
    }
    if (!s || !s->prob || !s->cands) {
        sm_sampler_free(s);
        return sm_fail(SM_ERR_ALLOC, "sampler: out of memory");
    }
    s->par = *p;
    s->vocab = vocab_size;
    sm_rng_seed(&s->rng, p->seed);
    *out = s;
    return SM_OK;
}

void sm_sampler_free(sm_sampler *s) {
    if (!s) return;
    sm_free(s->prob);
    sm_free(s->cands);
    free(s);
}

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int32_t sm_sampler_sample(sm_sampler *s, const float *logits) {
    int64_t V = s->vocab;
    if (s->par.temperature <= 0) return sm_argmax(logits, V);
    // p_i = softmax(logits / T), in double.
    double inv_t = 1.0 / (double)s->par.temperature, mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < V; i++) mx = fmax(mx, (double)logits[i] * inv_t);
    for (int64_t i = 0; i < V; i++) {
        s->prob[i] = exp((double)logits[i] * inv_t - mx);
        sum += s->prob[i];
    }
    double coin = sm_rng_uniform(&s->rng);
    float top_p = s->par.top_p;
    if (top_p <= 0 || top_p >= 1) {
        double r = coin * sum, acc = 0;
        for (int64_t i = 0; i < V; i++) {
            acc += s->prob[i];
            if (r < acc) return (int32_t)i;
        }
        return sm_argmax(logits, V); // rounding left r at the very top
    }
    // Nucleus: the most probable tokens (ties to the lowest id) until their mass reaches top_p.
    // A token below (1 - top_p) / (V - 1) of the mass can never be among them (llama2.c's
    // observation), so only the others are sorted.
    double cutoff = (1.0 - top_p) / (double)(V > 1 ? V - 1 : 1) * sum;
    int64_t n = 0;
    for (int64_t i = 0; i < V; i++)
        if (s->prob[i] >= cutoff) s->cands[n++] = (cand){s->prob[i], (int32_t)i};
    if (n == 0) return sm_argmax(logits, V); // top_p < 1/V: the nucleus is the top token
    qsort(s->cands, (size_t)n, sizeof *s->cands, cmp_cand);
    double mass = 0, want = (double)top_p * sum;
    int64_t k = 0;
    while (k < n) {
        mass += s->cands[k++].p;
        if (mass >= want) break;
    }
    double r = coin * mass, acc = 0;
    for (int64_t i = 0; i < k; i++) {
        acc += s->cands[i].p;
        if (r < acc) return s->cands[i].id;
    }
    return s->cands[k - 1].id;
}

int32_t sm_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

void sm_topk(const float *x, int64_t n, int k, int32_t *ids) {
    SM_ASSERT(k >= 0 && k <= n);
    if (k == 0) return;
    // Selection by insertion: k is small (a handful of candidates to print).
    int m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (m == k && !(x[i] > x[ids[k - 1]])) continue;
        int j = m < k ? m++ : k - 1;
        while (j > 0 && x[i] > x[ids[j - 1]]) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = (int32_t)i;
    }
}

double sm_logsumexp(const float *x, int64_t n) {
    double mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, (double)x[i]);
    if (!isfinite(mx)) return mx;
    for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + log(sum);
}
