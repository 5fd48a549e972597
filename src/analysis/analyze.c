// Where a matrix's information lives: norms, spectrum-based ranks, outliers and WeightWatcher's
// power-law alpha. Singular values come from LAPACK sgesdd (values only); every statistic is
// accumulated in double.
#include "../linalg/linalg.h"

#include <math.h>
#include <string.h>

// WeightWatcher's fit (WW_powerlaw.WWFit, "ww" method): eigenvalues sorted ascending; for every
// candidate xmin = x_i except the largest, alpha_i = 1 + n / sum_{j>=i} ln(x_j / x_i) with
// n = N - i, and D_i = max_j |1 - (x_j / x_i)^(1 - alpha_i) - (j - i) / n| (D_i = 1 when
// alpha_i <= 1); the first i with the smallest D_i wins. Eigenvalues <= 1e-5 are dropped first.
#define SM_WW_EVAL_MIN 1e-5

static void powerlaw_fit(const double *sigma, int64_t k, sm_matrix_stats *st) {
    st->alpha = NAN;
    st->alpha_xmin = NAN;
    st->alpha_ks = NAN;
    st->alpha_n = 0;
    double *x = sm_alloc((size_t)(k > 0 ? k : 1) * sizeof(double));
    double *lx = sm_alloc((size_t)(k > 0 ? k : 1) * sizeof(double));
    if (!x || !lx) {
        sm_free(x), sm_free(lx);
        return;
    }
    int64_t N = 0;
    for (int64_t i = k - 1; i >= 0; i--) { // sigma is decreasing: ascending eigenvalues
        double ev = sigma[i] * sigma[i];
        if (ev > SM_WW_EVAL_MIN) x[N++] = ev;
    }
    for (int64_t i = 0; i < N; i++) lx[i] = log(x[i]);
    double tail = 0; // sum of lx[i..N-1]
    for (int64_t i = 0; i < N; i++) tail += lx[i];
    double best_d = INFINITY;
    for (int64_t i = 0; i + 1 < N; i++) {
        double n = (double)(N - i);
        double alpha = 1.0 + n / (tail - n * lx[i]);
        double d = 1.0;
        if (alpha > 1.0) {
            d = 0.0;
            for (int64_t j = i; j < N; j++) {
                double cdf = 1.0 - exp((1.0 - alpha) * (lx[j] - lx[i]));
                double e = fabs(cdf - (double)(j - i) / n);
                if (e > d) d = e;
            }
        }
        if (d < best_d) {
            best_d = d;
            st->alpha = alpha;
            st->alpha_xmin = x[i];
            st->alpha_ks = d;
            st->alpha_n = N - i;
        }
        tail -= lx[i];
    }
    sm_free(x), sm_free(lx);
}

sm_status sm_matrix_analyze(const float *W, int64_t m, int64_t n, sm_matrix_stats *st,
                            double *sigma_out) {
    memset(st, 0, sizeof *st);
    st->rows = m;
    st->cols = n;
    if (m <= 0 || n <= 0) return sm_fail(SM_ERR_SHAPE, "analyze: empty matrix");
    int64_t k = m < n ? m : n, mn = m * n;
    // Entry statistics (two passes: mean, then central moments).
    double sum = 0, sumsq = 0, amax = 0;
    for (int64_t i = 0; i < mn; i++) {
        double w = W[i];
        if (!isfinite(w))
            return sm_fail(SM_ERR_NUMERIC, "analyze: non-finite value %g at index %lld", w,
                           (long long)i);
        sum += w;
        sumsq += w * w;
        if (fabs(w) > amax) amax = fabs(w);
    }
    double mean = sum / (double)mn, m2 = 0, m4 = 0;
    for (int64_t i = 0; i < mn; i++) {
        double d = (double)W[i] - mean, d2 = d * d;
        m2 += d2;
        m4 += d2 * d2;
    }
    m2 /= (double)mn;
    m4 /= (double)mn;
    double rms = sqrt(sumsq / (double)mn);
    st->max_over_rms = rms > 0 ? amax / rms : 0;
    st->kurtosis = m2 > 0 ? m4 / (m2 * m2) - 3.0 : 0;

    float *s = sm_alloc((size_t)k * sizeof(float));
    double *sd = sm_alloc((size_t)k * sizeof(double));
    sm_status status = (s && sd) ? sm_svd(W, m, n, n, NULL, s, NULL)
                                 : sm_fail(SM_ERR_ALLOC, "analyze: out of memory");
    if (status != SM_OK) {
        sm_free(s), sm_free(sd);
        return status;
    }
    double ssum = 0, energy = 0;
    for (int64_t i = 0; i < k; i++) {
        sd[i] = s[i] > 0 ? (double)s[i] : 0.0;
        ssum += sd[i];
        energy += sd[i] * sd[i];
    }
    st->fro_norm = sqrt(sumsq); // from the entries: exact, unlike the sum of sigma^2
    st->spectral_norm = sd[0];
    st->stable_rank = sd[0] > 0 ? sumsq / (sd[0] * sd[0]) : 0;
    double h = 0;
    for (int64_t i = 0; i < k && ssum > 0; i++) {
        double p = sd[i] / ssum;
        if (p > 0) h -= p * log(p);
    }
    st->effective_rank = ssum > 0 ? exp(h) : 0;
    double acc = 0;
    st->k90 = st->k99 = k;
    bool got90 = false;
    for (int64_t i = 0; i < k; i++) {
        acc += sd[i] * sd[i];
        if (!got90 && acc >= 0.90 * energy) {
            st->k90 = i + 1;
            got90 = true;
        }
        if (acc >= 0.99 * energy) {
            st->k99 = i + 1;
            break;
        }
    }
    powerlaw_fit(sd, k, st);
    if (sigma_out) memcpy(sigma_out, sd, (size_t)k * sizeof(double));
    sm_free(s), sm_free(sd);
    return SM_OK;
}
