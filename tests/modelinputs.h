// Stand-in calibration inputs for the shared model's linear layers, until `structmat calibrate`
// exists: every token's embedding row goes through the layer's RMSNorm (q/k/v, gate/up), then
// v_proj with its key-value heads repeated (o_proj), or gate/up and SiLU (down_proj). Attention
// mixing over tokens is left out: the inputs have the right scales and channel structure, which
// is what activation-aware fitting needs, not the exact values a forward pass would give.
#ifndef SM_MODELINPUTS_H
#define SM_MODELINPUTS_H

#include "testutil.h"

#define MODEL_DIR "models/shakespeare-llama-3m"

static const char *const k_proj[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                     "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                     "mlp.down_proj"};
#define NPROJ 7
#define NLAYERS 4

// A 1-D tensor as floats (malloc'd), or NULL with a failure counted.
static inline float *read_vector(const char *name, int64_t *len) {
    sm_st *st = NULL;
    float *v = NULL;
    if (sm_st_open(MODEL_DIR, &st) != SM_OK || sm_st_read_f32(st, name, &v, len) != SM_OK) {
        fprintf(stderr, "%s: cannot read %s: %s\n", MODEL_DIR, name, sm_last_error());
        g_failures++;
        v = NULL;
    }
    sm_st_close(st);
    return v;
}

// X (N, d) <- RMSNorm of the rows of E (N, d) times the norm weights g (d).
static inline void rmsnorm_rows(const float *E, int64_t N, int64_t d, const float *g, float *X) {
    for (int64_t i = 0; i < N; i++) {
        double ss = 0;
        for (int64_t j = 0; j < d; j++) ss += (double)E[i * d + j] * E[i * d + j];
        float inv = (float)(1.0 / sqrt(ss / (double)d + 1e-5));
        for (int64_t j = 0; j < d; j++) X[i * d + j] = E[i * d + j] * inv * g[j];
    }
}

// C (N, m) = A (N, k) B^T, B (m, k).
static inline void mul_abt(const float *A, const float *B, float *C, int64_t N, int64_t k,
                           int64_t m) {
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < m; j++) {
            double acc = 0;
            for (int64_t l = 0; l < k; l++) acc += (double)A[i * k + l] * B[j * k + l];
            C[i * m + j] = (float)acc;
        }
}

// The weight of layer l, projection p (m, n) and its stand-in inputs X (N, n), both malloc'd.
// Returns false (failure counted) when the model cannot be read.
static inline bool model_layer(int l, int p, float **W, int64_t *m, int64_t *n, float **X,
                               int64_t *N) {
    char name[128];
    int64_t vm = 0, vn = 0, d = 0, len = 0;
    *W = *X = NULL;
    *m = *n = *N = 0;
    snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, k_proj[p]);
    *W = read_matrix(MODEL_DIR, name, m, n);
    float *E = read_matrix(MODEL_DIR, "model.embed_tokens.weight", N, &d);
    snprintf(name, sizeof name, "model.layers.%d.%s.weight", l,
             p < 4 ? "input_layernorm" : "post_attention_layernorm");
    float *g = read_vector(name, &len);
    if (!*W || !E || !g) {
        free(*W), free(E), free(g);
        return false;
    }
    float *xn = malloc(sizeof(float) * (size_t)(*N * d));
    rmsnorm_rows(E, *N, d, g, xn);
    if (p == 3) { // o_proj: v_proj outputs, key-value heads repeated for the query heads
        snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.weight", l);
        float *Wv = read_matrix(MODEL_DIR, name, &vm, &vn);
        float *v = malloc(sizeof(float) * (size_t)(*N * vm));
        mul_abt(xn, Wv, v, *N, d, vm);
        int64_t rep = *n / vm, hd = 32; // 8 query heads over 4 key-value heads of 32
        *X = malloc(sizeof(float) * (size_t)(*N * *n));
        for (int64_t i = 0; i < *N; i++)
            for (int64_t h = 0; h < *n / hd; h++)
                for (int64_t e = 0; e < hd; e++)
                    (*X)[i * *n + h * hd + e] = v[i * vm + (h / rep) * hd + e];
        free(Wv), free(v), free(xn);
    } else if (p == 6) { // down_proj: silu(x Wg^T) * (x Wu^T)
        int64_t im = 0;
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate_proj.weight", l);
        float *Wg = read_matrix(MODEL_DIR, name, &im, &vn);
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", l);
        float *Wu = read_matrix(MODEL_DIR, name, &im, &vn);
        float *a = malloc(sizeof(float) * (size_t)(*N * im)), *b = malloc(sizeof(float) * (size_t)(*N * im));
        mul_abt(xn, Wg, a, *N, d, im);
        mul_abt(xn, Wu, b, *N, d, im);
        for (int64_t i = 0; i < *N * im; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
        *X = a;
        free(Wg), free(Wu), free(b), free(xn);
    } else {
        *X = xn;
    }
    free(E), free(g);
    return true;
}

// H (n, n) = X^T X in double.
static inline double *gram_of(const float *X, int64_t N, int64_t n) {
    double *H = calloc((size_t)(n * n), sizeof(double));
    for (int64_t t = 0; t < N; t++)
        for (int64_t i = 0; i < n; i++) {
            double xi = X[t * n + i];
            for (int64_t j = 0; j < n; j++) H[i * n + j] += xi * X[t * n + j];
        }
    return H;
}

// tr(D H D^T) for D (m, n).
static inline double quad_loss(const float *D, int64_t m, int64_t n, const double *H) {
    double total = 0;
    double *t = malloc(sizeof(double) * (size_t)n);
    for (int64_t r = 0; r < m; r++) {
        const float *d = D + r * n;
        for (int64_t i = 0; i < n; i++) {
            double acc = 0;
            for (int64_t j = 0; j < n; j++) acc += H[i * n + j] * d[j];
            t[i] = acc;
        }
        for (int64_t i = 0; i < n; i++) total += d[i] * t[i];
    }
    free(t);
    return total;
}

#endif
