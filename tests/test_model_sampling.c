// Sampling helpers: argmax and top-k ties, logsumexp against a direct double sum, and the sampler:
// greedy at temperature 0, frequencies that match softmax(logits / T) within a few standard
// deviations, top-p keeping exactly the smallest nucleus (ties to the lowest ids), and the same
// tokens for the same seed.
#include "structmat_model.h"
#include "testutil.h"

// counts (V) of `draws` samples from logits (V).
static void draw(const sm_sampler_params *p, const float *logits, int V, int draws, int *counts) {
    sm_sampler *s = NULL;
    CHECK_OK(sm_sampler_init(p, V, &s));
    memset(counts, 0, sizeof(int) * (size_t)V);
    for (int i = 0; s && i < draws; i++) {
        int32_t t = sm_sampler_sample(s, logits);
        CHECK(t >= 0 && t < V);
        if (t >= 0 && t < V) counts[t]++;
    }
    sm_sampler_free(s);
}

// Every count within 5 standard deviations of draws * prob (prob in double, exact softmax).
static void check_freq(const char *what, const int *counts, const double *prob, int V, int draws) {
    for (int i = 0; i < V; i++) {
        double mean = draws * prob[i], sd = sqrt(draws * prob[i] * (1 - prob[i]));
        if (fabs(counts[i] - mean) > 5 * sd + 1e-9) {
            fprintf(stderr, "%s: token %d drawn %d times, expected %.1f +- %.1f\n", what, i,
                    counts[i], mean, sd);
            g_failures++;
        }
    }
}

static void softmax_d(const float *x, int V, double temp, double *p) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++) mx = fmax(mx, x[i] / temp);
    for (int i = 0; i < V; i++) sum += (p[i] = exp(x[i] / temp - mx));
    for (int i = 0; i < V; i++) p[i] /= sum;
}

int main(void) {
    // argmax, top-k: ties go to the lowest index.
    float x[8] = {1, 3, 3, -2, 3, 0, 2, 2};
    CHECK(sm_argmax(x, 8) == 1);
    int32_t top[5];
    sm_topk(x, 8, 5, top);
    int32_t want_top[5] = {1, 2, 4, 6, 7};
    for (int i = 0; i < 5; i++) CHECK(top[i] == want_top[i]);
    int32_t all[8];
    sm_topk(x, 8, 8, all);
    CHECK(all[5] == 0 && all[6] == 5 && all[7] == 3);

    // logsumexp: a direct sum where it is safe, and no overflow for large logits.
    float y[4] = {0.5f, -1.25f, 2.0f, 0.0f};
    double direct = log(exp(0.5) + exp(-1.25) + exp(2.0) + exp(0.0));
    CHECK(fabs(sm_logsumexp(y, 4) - direct) < 1e-12);
    float big[3] = {1000, 1000, 999};
    CHECK(fabs(sm_logsumexp(big, 3) - (1000 + log(2 + exp(-1.0)))) < 1e-9);

    // The sampler.
    enum { V = 6, DRAWS = 40000 };
    float logits[V] = {1.0f, 0.2f, -0.5f, 2.0f, 2.0f, -3.0f};
    int counts[V];
    double prob[V];
    draw(&(sm_sampler_params){.temperature = 0, .seed = 7}, logits, V, 100, counts);
    CHECK(counts[3] == 100); // greedy: the lower of the two tied maxima
    draw(&(sm_sampler_params){.temperature = 1, .top_p = 1, .seed = 7}, logits, V, DRAWS, counts);
    softmax_d(logits, V, 1, prob);
    check_freq("T=1", counts, prob, V, DRAWS);
    draw(&(sm_sampler_params){.temperature = 2.5f, .top_p = 0, .seed = 8}, logits, V, DRAWS,
         counts);
    softmax_d(logits, V, 2.5, prob);
    check_freq("T=2.5", counts, prob, V, DRAWS);

    // top-p: probabilities 0.4, 0.3, 0.2, 0.1 and top_p 0.5 keep {0, 1} in the ratio 4 : 3.
    float q[4] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f)};
    draw(&(sm_sampler_params){.temperature = 1, .top_p = 0.5f, .seed = 9}, q, 4, DRAWS, counts);
    double nucleus[4] = {4.0 / 7, 3.0 / 7, 0, 0};
    check_freq("top-p 0.5", counts, nucleus, 4, DRAWS);
    CHECK(counts[2] == 0 && counts[3] == 0);
    // Equal probabilities: the nucleus of top_p 0.5 is the two lowest ids.
    float flat[4] = {0, 0, 0, 0};
    draw(&(sm_sampler_params){.temperature = 1, .top_p = 0.5f, .seed = 10}, flat, 4, DRAWS, counts);
    double half[4] = {0.5, 0.5, 0, 0};
    check_freq("top-p ties", counts, half, 4, DRAWS);
    // top_p below every probability: the top token only.
    draw(&(sm_sampler_params){.temperature = 1, .top_p = 0.01f, .seed = 11}, q, 4, 1000, counts);
    CHECK(counts[0] == 1000);

    // Same seed, same tokens; another seed, other tokens.
    sm_sampler *a = NULL, *b = NULL, *c = NULL;
    sm_sampler_params p = {.temperature = 1, .top_p = 0.9f, .seed = 42};
    CHECK_OK(sm_sampler_init(&p, V, &a));
    CHECK_OK(sm_sampler_init(&p, V, &b));
    p.seed = 43;
    CHECK_OK(sm_sampler_init(&p, V, &c));
    int same = 1, differ = 0;
    for (int i = 0; a && b && c && i < 200; i++) {
        int32_t ta = sm_sampler_sample(a, logits), tb = sm_sampler_sample(b, logits);
        same &= ta == tb;
        differ |= ta != sm_sampler_sample(c, logits);
    }
    CHECK(same && differ);
    sm_sampler_free(a);
    sm_sampler_free(b);
    sm_sampler_free(c);

    sm_sampler *bad = NULL;
    CHECK_FAIL(sm_sampler_init(&(sm_sampler_params){.temperature = 1}, 0, &bad), SM_ERR_ARG,
               "vocabulary");
    CHECK_FAIL(sm_sampler_init(&(sm_sampler_params){.temperature = NAN}, 4, &bad), SM_ERR_ARG,
               "finite");
    TEST_END();
}
