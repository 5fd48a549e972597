// The transformer forward pass (Llama family) over a context: its arena and KV cache.
//
// One step runs T tokens (1 <= T <= n_batch) at positions pos .. pos + T - 1:
//
//   x = embed[tokens]                                          (T, dim)
//   for each layer l:
//     xb = rmsnorm(x) * rms_att[l]
//     q = xb Wq^T (+ bq), k = xb Wk^T (+ bk), v = xb Wv^T (+ bv)
//     rope(q), rope(k)                 both stored in the rotate-half order afterwards;
//                                      k, v appended to the (head-major) cache
//     att = softmax(q k^T / sqrt(head_dim), causal) v          per head, GQA: head h reads
//                                                              kv head h / (n_heads / n_kv_heads)
//     x += att Wo^T
//     xb = rmsnorm(x) * rms_ffn[l]
//     x += (silu(xb Wgate^T) * (xb Wup^T)) Wdown^T
//   logits = rmsnorm(x) * rms_final Wcls^T                     only for the rows asked for
//
// Every linear layer is sm_op_apply with N = T: a GEMM for prefill, a GEMV for decode (T = 1),
// so each weight is streamed once per step. Queries and keys leave RoPE in the rotate-half order
// for either layout (an interleaved pair (2i, 2i+1) is written to (i, i + head_dim/2)): q.k is
// the same sum either way, and a llama2.c checkpoint and its Hugging Face conversion (whose q/k
// rows are permuted accordingly) compute identical scores.
#include "model.h"

#include <math.h>
#include <string.h>

struct sm_context {
    sm_model *m; // read-only here; non-const only to count live contexts
    int64_t n_ctx, n_batch, pos;
    void *arena;
    size_t nbytes;
    float *x;        // (n_batch, dim) residual stream
    float *xb;       // (n_batch, dim) normed input of a sublayer
    float *xb2;      // (n_batch, dim) sublayer output before the residual add
    float *q;        // (n_batch, q_dim) queries, rotate-half order per head
    float *k;        // (n_batch, kv_dim) keys of this step, before they go to the cache
    float *v;        // (n_batch, kv_dim) values of this step
    float *att;      // (n_batch, q_dim) attention output, heads side by side
    float *hb;       // (n_batch, hidden_dim) gate, then silu(gate) * up
    float *hb2;      // (n_batch, hidden_dim) up
    float *scores;   // (n_heads, n_ctx) attention weights, one row per head
    float *rope_cos; // (n_ctx, head_dim / 2)
    float *rope_sin; // (n_ctx, head_dim / 2)
    // Head-major caches: one head's keys (values) for all positions are contiguous, so the
    // attention of a head streams them in order.
    float *key_cache;            // (n_layers, n_kv_heads, n_ctx, head_dim) keys after RoPE
    float *val_cache;            // (n_layers, n_kv_heads, n_ctx, head_dim)
    float *work;                 // operator scratch: the most any operator needs for n_batch rows
    sm_linear_observer observer; // sees each linear layer's input (calibration), or NULL
    void *observer_user;
};

// --- layers -------------------------------------------------------------------------------------

// out (T, C) = x (T, C) / rms(x) * w (C), per row
static void rmsnorm_forward(float *out, const float *x, const float *w, int64_t T, int64_t C,
                            double eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * C;
        float *ot = out + t * C;
        double ss = 0;
        for (int64_t i = 0; i < C; i++) ss += (double)xt[i] * xt[i];
        float s = (float)(1.0 / sqrt(ss / (double)C + eps));
        for (int64_t i = 0; i < C; i++) ot[i] = w[i] * (xt[i] * s);
    }
}

// Rotates each head of x (T rows of n_heads heads, row stride ld) by the angles of positions
// pos0 .. pos0 + T - 1, leaving every pair j at (j, j + head_dim/2).
static void rope_forward(float *x, int64_t T, int64_t ld, int64_t n_heads, int64_t hd, int64_t pos0,
                         sm_rope_layout layout, const float *cos_tab, const float *sin_tab) {
    int64_t half = hd / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *c = cos_tab + (pos0 + t) * half; // (half)
        const float *s = sin_tab + (pos0 + t) * half; // (half)
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + t * ld + h * hd; // (hd)
            if (layout == SM_ROPE_HALF) {
                for (int64_t j = 0; j < half; j++) {
                    float a = v[j], b = v[j + half];
                    v[j] = a * c[j] - b * s[j];
                    v[j + half] = b * c[j] + a * s[j];
                }
            } else {
                float tmp[SM_MAX_HEAD_DIM];
                memcpy(tmp, v, (size_t)hd * sizeof(float));
                for (int64_t j = 0; j < half; j++) {
                    float a = tmp[2 * j], b = tmp[2 * j + 1];
                    v[j] = a * c[j] - b * s[j];
                    v[j + half] = b * c[j] + a * s[j];
                }
            }
        }
    }
}

static float dot(const float *a, const float *b, int64_t n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// Writes x (T, n_kv_heads * hd) to positions pos0 .. pos0 + T - 1 of cache (n_kv_heads, n_ctx, hd).
static void cache_store(float *cache, const float *x, int64_t T, int64_t pos0, int64_t n_kv_heads,
                        int64_t hd, int64_t n_ctx) {
    for (int64_t h = 0; h < n_kv_heads; h++)
        for (int64_t t = 0; t < T; t++)
            memcpy(cache + (h * n_ctx + pos0 + t) * hd, x + (t * n_kv_heads + h) * hd,
                   (size_t)hd * sizeof(float));
}

// Causal grouped-query attention of T queries at positions pos0 .. pos0 + T - 1 over the cached
// keys and values 0 .. pos0 + T - 1 of one layer.
static void attention_forward(float *out, const float *q, const float *kc, const float *vc,
                              float *scores, int64_t T, int64_t pos0, int64_t n_heads,
                              int64_t n_kv_heads, int64_t hd, int64_t n_ctx) {
    // out (T, n_heads * hd), q (T, n_heads * hd), kc/vc (n_kv_heads, n_ctx, hd),
    // scores (n_heads, n_ctx)
    int64_t q_dim = n_heads * hd, group = n_heads / n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    // Heads are independent; each has its own row of scores. A static schedule keeps the heads
    // of a group (which read the same keys and values) together on a thread. Decode steps stay
    // on one thread: threads that spin after a parallel region would compete with the BLAS
    // threads of the next GEMV, and one core streams the cache at full speed anyway.
#pragma omp parallel for schedule(static) if (T > 1 && T * (pos0 + T) * q_dim > 32768)
    for (int64_t h = 0; h < n_heads; h++) {
        float *sc = scores + h * n_ctx;                  // (n_ctx)
        const float *kh = kc + (h / group) * n_ctx * hd; // (n_ctx, hd) this head's keys
        const float *vh = vc + (h / group) * n_ctx * hd; // (n_ctx, hd) and values
        for (int64_t t = 0; t < T; t++) {
            const float *qh = q + t * q_dim + h * hd; // (hd)
            int64_t n = pos0 + t + 1;                 // positions this query sees
            float mx = -INFINITY;
            for (int64_t s = 0; s < n; s++) {
                sc[s] = dot(qh, kh + s * hd, hd) * scale;
                if (sc[s] > mx) mx = sc[s];
            }
            float sum = 0;
            for (int64_t s = 0; s < n; s++) {
                sc[s] = expf(sc[s] - mx);
                sum += sc[s];
            }
            float inv = 1.0f / sum;
            float *oh = out + t * q_dim + h * hd; // (hd)
            memset(oh, 0, (size_t)hd * sizeof(float));
            for (int64_t s = 0; s < n; s++) {
                const float *vs = vh + s * hd; // (hd)
                float a = sc[s] * inv;
#pragma omp simd
                for (int64_t d = 0; d < hd; d++) oh[d] += a * vs[d];
            }
        }
    }
}

// hb (n) = silu(hb) * hb2
static void swiglu_forward(float *hb, const float *hb2, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = hb[i];
        hb[i] = g / (1.0f + expf(-g)) * hb2[i];
    }
}

// x (n) += y (n)
static void residual_forward(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

// Y (T, out) = X (T, in) W^T (+ bias (out) on every row) for linear layer i; an observer sees X
// first (one branch when there is none).
static sm_status linear_forward(const sm_context *c, int64_t i, int64_t T, const float *X, float *Y,
                                const float *bias) {
    const sm_op *op = c->m->ops[i];
    sm_status st = SM_OK;
    if (c->observer && (st = c->observer(c->observer_user, i, T, X)) != SM_OK) return st;
    st = sm_op_apply(op, T, X, Y, c->work);
    if (st != SM_OK || !bias) return st;
    int64_t out = sm_op_rows(op);
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < out; j++) Y[t * out + j] += bias[j];
    return SM_OK;
}

// --- contexts ------------------------------------------------------------------------------------

static size_t round64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

// The float count of each arena buffer, in the order they are laid out.
enum {
    B_X,
    B_XB,
    B_XB2,
    B_Q,
    B_K,
    B_V,
    B_ATT,
    B_HB,
    B_HB2,
    B_SCORES,
    B_COS,
    B_SIN,
    B_KEY,
    B_VAL,
    B_WORK,
    B_N
};

sm_status sm_context_init(const sm_model *mc, int64_t n_ctx, int64_t n_batch, sm_context **out) {
    *out = NULL;
    sm_model *m = (sm_model *)mc;
    const sm_model_info *f = &m->info;
    if (n_ctx < 0 || n_batch < 0)
        return sm_fail(SM_ERR_ARG, "context: n_ctx = %lld and n_batch = %lld must be >= 0",
                       (long long)n_ctx, (long long)n_batch);
    if (n_ctx == 0) n_ctx = f->max_seq_len < 4096 ? f->max_seq_len : 4096;
    if (n_ctx > f->max_seq_len)
        return sm_fail(SM_ERR_ARG, "context of %lld tokens is longer than the model's %lld",
                       (long long)n_ctx, (long long)f->max_seq_len);
    if (n_batch == 0) n_batch = n_ctx < 512 ? n_ctx : 512;
    if (n_batch > n_ctx) n_batch = n_ctx;
    int64_t q_dim = sm_model_q_dim(m), kv_dim = sm_model_kv_dim(m);
    size_t work = 0;
    for (int64_t k = 0; k < f->n_linear; k++) { // decode (N = 1) may take another path
        size_t w1 = sm_op_workspace(m->ops[k], 1), wb = sm_op_workspace(m->ops[k], n_batch);
        if (w1 > work) work = w1;
        if (wb > work) work = wb;
    }
    size_t count[B_N] = {
        [B_X] = (size_t)(n_batch * f->dim),
        [B_XB] = (size_t)(n_batch * f->dim),
        [B_XB2] = (size_t)(n_batch * f->dim),
        [B_Q] = (size_t)(n_batch * q_dim),
        [B_K] = (size_t)(n_batch * kv_dim),
        [B_V] = (size_t)(n_batch * kv_dim),
        [B_ATT] = (size_t)(n_batch * q_dim),
        [B_HB] = (size_t)(n_batch * f->hidden_dim),
        [B_HB2] = (size_t)(n_batch * f->hidden_dim),
        [B_SCORES] = (size_t)(f->n_heads * n_ctx),
        [B_COS] = (size_t)(n_ctx * f->head_dim / 2),
        [B_SIN] = (size_t)(n_ctx * f->head_dim / 2),
        [B_KEY] = (size_t)(f->n_layers * n_ctx * kv_dim),
        [B_VAL] = (size_t)(f->n_layers * n_ctx * kv_dim),
        [B_WORK] = work,
    };
    size_t bytes = 0;
    for (int b = 0; b < B_N; b++) bytes += round64(count[b] * sizeof(float));
    sm_context *c = calloc(1, sizeof *c);
    void *arena = sm_alloc(bytes);
    if (!c || !arena) {
        free(c);
        sm_free(arena);
        return sm_fail(SM_ERR_ALLOC,
                       "context: out of memory for %zu bytes (n_ctx %lld, n_batch "
                       "%lld)",
                       bytes, (long long)n_ctx, (long long)n_batch);
    }
    float *buf[B_N];
    char *p = arena;
    for (int b = 0; b < B_N; b++) {
        buf[b] = (float *)p;
        p += round64(count[b] * sizeof(float));
    }
    *c = (sm_context){
        .m = m,
        .n_ctx = n_ctx,
        .n_batch = n_batch,
        .arena = arena,
        .nbytes = bytes,
        .x = buf[B_X],
        .xb = buf[B_XB],
        .xb2 = buf[B_XB2],
        .q = buf[B_Q],
        .k = buf[B_K],
        .v = buf[B_V],
        .att = buf[B_ATT],
        .hb = buf[B_HB],
        .hb2 = buf[B_HB2],
        .scores = buf[B_SCORES],
        .rope_cos = buf[B_COS],
        .rope_sin = buf[B_SIN],
        .key_cache = buf[B_KEY],
        .val_cache = buf[B_VAL],
        .work = work ? buf[B_WORK] : NULL,
    };
    // Angles in F32 as Hugging Face (inv_freq, then position * inv_freq) and llama2.c compute
    // them, so the rotations match theirs to the last bit or nearly.
    int64_t half = f->head_dim / 2;
    for (int64_t j = 0; j < half; j++) {
        float inv = 1.0f / powf((float)f->rope_theta, (float)(2 * j) / (float)f->head_dim);
        for (int64_t pos = 0; pos < n_ctx; pos++) {
            float a = (float)pos * inv;
            c->rope_cos[pos * half + j] = cosf(a);
            c->rope_sin[pos * half + j] = sinf(a);
        }
    }
    __atomic_fetch_add(&m->n_contexts, 1, __ATOMIC_SEQ_CST);
    *out = c;
    return SM_OK;
}

void sm_context_free(sm_context *c) {
    if (!c) return;
    __atomic_fetch_sub(&c->m->n_contexts, 1, __ATOMIC_SEQ_CST);
    sm_free(c->arena);
    free(c);
}

int64_t sm_context_size(const sm_context *c) {
    return c->n_ctx;
}

int64_t sm_context_pos(const sm_context *c) {
    return c->pos;
}

size_t sm_context_nbytes(const sm_context *c) {
    return c->nbytes;
}

void sm_context_set_observer(sm_context *c, sm_linear_observer fn, void *user) {
    c->observer = fn;
    c->observer_user = user;
}

sm_status sm_context_rewind(sm_context *c, int64_t pos) {
    if (pos < 0 || pos > c->pos)
        return sm_fail(SM_ERR_ARG, "cannot rewind to position %lld: the context holds %lld tokens",
                       (long long)pos, (long long)c->pos);
    c->pos = pos;
    return SM_OK;
}

// --- forward -------------------------------------------------------------------------------------

// One step of T <= n_batch tokens at c->pos. logits: NULL, (vocab) for the last token (last_only)
// or (T, vocab).
static sm_status forward_step(sm_context *c, const int32_t *tokens, int64_t T, float *logits,
                              bool last_only) {
    const sm_model *m = c->m;
    const sm_model_info *f = &m->info;
    int64_t dim = f->dim, hd = f->head_dim, hidden = f->hidden_dim, pos = c->pos;
    int64_t q_dim = sm_model_q_dim(m), kv_dim = sm_model_kv_dim(m);
    sm_status st = SM_OK;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x)) != SM_OK) return st;                                                        \
    } while (0)

    // x (T, dim) = the embedding rows of the tokens
    size_t esize = sm_dtype_size(m->embed_dtype);
    for (int64_t t = 0; t < T; t++) {
        const char *row = (const char *)m->embed + (size_t)tokens[t] * (size_t)dim * esize;
        TRY(sm_convert_to_f32(m->embed_dtype, row, dim, c->x + t * dim));
    }

    for (int64_t l = 0; l < f->n_layers; l++) {
        float *kc = c->key_cache + l * c->n_ctx * kv_dim; // (n_kv_heads, n_ctx, hd)
        float *vc = c->val_cache + l * c->n_ctx * kv_dim; // (n_kv_heads, n_ctx, hd)
        const float *bias = m->bias ? m->bias + l * (q_dim + 2 * kv_dim) : NULL;
        int64_t lin = l * SM_LIN_PER_LAYER; // this layer's first linear layer (q)

        // attention block
        rmsnorm_forward(c->xb, c->x, m->rms_att + l * dim, T, dim, f->rms_eps);
        TRY(linear_forward(c, lin + SM_LIN_Q, T, c->xb, c->q, bias));
        TRY(linear_forward(c, lin + SM_LIN_K, T, c->xb, c->k, bias ? bias + q_dim : NULL));
        TRY(linear_forward(c, lin + SM_LIN_V, T, c->xb, c->v, bias ? bias + q_dim + kv_dim : NULL));
        rope_forward(c->q, T, q_dim, f->n_heads, hd, pos, f->rope_layout, c->rope_cos, c->rope_sin);
        rope_forward(c->k, T, kv_dim, f->n_kv_heads, hd, pos, f->rope_layout, c->rope_cos,
                     c->rope_sin);
        cache_store(kc, c->k, T, pos, f->n_kv_heads, hd, c->n_ctx);
        cache_store(vc, c->v, T, pos, f->n_kv_heads, hd, c->n_ctx);
        attention_forward(c->att, c->q, kc, vc, c->scores, T, pos, f->n_heads, f->n_kv_heads, hd,
                          c->n_ctx);
        TRY(linear_forward(c, lin + SM_LIN_O, T, c->att, c->xb2, NULL));
        residual_forward(c->x, c->xb2, T * dim);

        // MLP block
        rmsnorm_forward(c->xb, c->x, m->rms_ffn + l * dim, T, dim, f->rms_eps);
        TRY(linear_forward(c, lin + SM_LIN_GATE, T, c->xb, c->hb, NULL));
        TRY(linear_forward(c, lin + SM_LIN_UP, T, c->xb, c->hb2, NULL));
        swiglu_forward(c->hb, c->hb2, T * hidden);
        TRY(linear_forward(c, lin + SM_LIN_DOWN, T, c->hb, c->xb2, NULL));
        residual_forward(c->x, c->xb2, T * dim);
    }
    c->pos += T;

    if (!logits) return SM_OK;
    // Only the rows whose logits are wanted go through the final norm and the output head.
    int64_t first = last_only ? T - 1 : 0, rows = T - first;
    rmsnorm_forward(c->xb, c->x + first * dim, m->rms_final, rows, dim, f->rms_eps);
    TRY(linear_forward(c, f->n_linear - 1, rows, c->xb, logits, NULL));
#undef TRY
    return SM_OK;
}

sm_status sm_context_forward(sm_context *c, const int32_t *tokens, int64_t n, sm_logits which,
                             float *logits) {
    const sm_model_info *f = &c->m->info;
    if (n <= 0 || !tokens)
        return sm_fail(SM_ERR_ARG, "forward: empty token list (n = %lld)", (long long)n);
    if (which != SM_LOGITS_NONE && which != SM_LOGITS_LAST && which != SM_LOGITS_ALL)
        return sm_fail(SM_ERR_ARG, "forward: unknown logits mode %d", (int)which);
    if (which != SM_LOGITS_NONE && !logits)
        return sm_fail(SM_ERR_ARG, "forward: logits asked for but no buffer given");
    if (n > c->n_ctx - c->pos)
        return sm_fail(SM_ERR_ARG,
                       "forward: %lld tokens at position %lld exceed the context of %lld tokens",
                       (long long)n, (long long)c->pos, (long long)c->n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= f->vocab_size)
            return sm_fail(SM_ERR_ARG,
                           "forward: token id %lld at index %lld is outside the vocabulary "
                           "(0..%lld)",
                           (long long)tokens[i], (long long)i, (long long)f->vocab_size - 1);
    int64_t start = c->pos;
    for (int64_t i = 0; i < n; i += c->n_batch) {
        int64_t T = n - i < c->n_batch ? n - i : c->n_batch;
        bool last = i + T == n;
        float *out = NULL;
        if (which == SM_LOGITS_ALL) out = logits + i * f->vocab_size;
        if (which == SM_LOGITS_LAST && last) out = logits;
        sm_status st = forward_step(c, tokens + i, T, out, which == SM_LOGITS_LAST);
        if (st != SM_OK) {
            c->pos = start; // the cache past start is garbage now
            return st;
        }
    }
    return SM_OK;
}
