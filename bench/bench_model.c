// Model decode and prefill: a synthetic dense F32 Llama (random weights, the shapes of
// --model-shape) run through the model runtime (sm_context_forward).
//
// Decode (batch 1) streams every linear layer's weights once per token, so its limit is the
// machine's read bandwidth: the line reports the weight bytes a token reads (linear layers,
// norms and one embedding row), the achieved GB/s and its share of the best read bandwidth
// measured in the same run (the section's sweep, and sweeps of the weights' size between reps).
// Each rep rewinds the context to the end of a short prompt and decodes --decode-tokens tokens;
// per-token time is the rep's time over them (min and median of reps).
//
// Prefill (one batch of T tokens from an empty cache, logits of the last one) is GEMM-bound: its
// GFLOP/s counts the layers' linear multiply-adds (2 T params per layer; attention, norms and
// the one-row output head are the rest of the time) and is set against OpenBLAS sgemm running
// the same GEMMs, (T, in) x (out, in)^T for each of the layer's shapes weighted by how often
// the model has it, timed in reps alternating with the prefill reps so other work on the
// machine slows both.
#include "bench.h"

#include "base/base.h"
#include "model/model.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROMPT 16 // tokens in the cache before decode reps start

static void model_name(char *buf, size_t cap, const bench_opts *o, const char *phase) {
    const int64_t *s = o->model_shape;
    snprintf(buf, cap, "model %s%sd%lld f%lld l%lld h%lld v%lld", phase, *phase ? " " : "",
             (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3], (long long)s[4]);
}

static bool phase_selected(const bench_opts *o, const char *phase) {
    char name[160];
    model_name(name, sizeof name, o, phase);
    return bench_selected(o, name);
}

bool bench_model_selected(const bench_opts *o) {
    return phase_selected(o, "decode") || phase_selected(o, "prefill");
}

// A model of the given shapes with uniform random weights scaled by 1/sqrt(in) (so activations
// stay O(1) through the layers), unit norms, an untied F32 embedding and lm_head.
static sm_status build_model(const bench_opts *o, sm_model **out) {
    *out = NULL;
    sm_model_info info = {0};
    snprintf(info.arch, sizeof info.arch, "llama");
    snprintf(info.format, sizeof info.format, "synthetic");
    info.dim = o->model_shape[0];
    info.hidden_dim = o->model_shape[1];
    info.n_layers = o->model_shape[2];
    info.n_heads = info.n_kv_heads = o->model_shape[3];
    info.vocab_size = o->model_shape[4];
    info.head_dim = info.dim / info.n_heads;
    info.max_seq_len = 4096;
    info.rms_eps = 1e-5;
    info.rope_theta = 10000.0;
    info.rope_layout = SM_ROPE_HALF;
    info.bos_id = info.eos_id = -1;
    if (info.dim % info.n_heads)
        return sm_fail(SM_ERR_ARG, "--model-shape: heads do not divide dim");
    sm_status s = sm_model_check_dims(&info, "--model-shape");
    sm_model *m = NULL;
    if (s == SM_OK) s = sm_model_alloc(&info, &m);
    if (s != SM_OK) return s;
    int64_t big = info.vocab_size * info.dim; // the largest matrix: lm_head
    for (int64_t k = 0; k < m->info.n_linear; k++) {
        int64_t r, c;
        sm_model_linear_shape(m, k, &r, &c);
        if (r * c > big) big = r * c;
    }
    float *W = sm_alloc((size_t)big * sizeof(float));
    m->embed_own = sm_alloc((size_t)(info.vocab_size * info.dim) * sizeof(float));
    m->embed_dtype = SM_DTYPE_F32;
    if (!W || !m->embed_own) s = sm_fail(SM_ERR_ALLOC, "out of memory for the synthetic model");
    for (int64_t k = 0; k < m->info.n_linear && s == SM_OK; k++) {
        int64_t r, c;
        sm_model_linear_shape(m, k, &r, &c);
        bench_fill_uniform(W, r * c, o->seed + 1000 + (uint64_t)k);
        float scale = 1.0f / sqrtf((float)c);
        for (int64_t i = 0; i < r * c; i++) W[i] *= scale;
        s = sm_op_fit(W, r, c, "dense", NULL, &m->ops[k]);
    }
    if (s == SM_OK) {
        bench_fill_uniform(m->embed_own, info.vocab_size * info.dim, o->seed + 999);
        for (int64_t i = 0; i < 2 * info.n_layers * info.dim + info.dim; i++) m->params[i] = 1.0f;
        s = sm_model_finish(m);
    }
    sm_free(W);
    if (s != SM_OK) {
        sm_model_free(m);
        return s;
    }
    *out = m;
    return SM_OK;
}

static bool all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

static void min_median(double *t, int n, double *tmin, double *tmed) {
    *tmin = t[0];
    for (int r = 1; r < n; r++)
        if (t[r] < *tmin) *tmin = t[r];
    *tmed = bench_median(t, n);
}

static void shape_fields(const bench_opts *o, const sm_model_info *f) {
    bench_json_int("dim", f->dim);
    bench_json_int("hidden_dim", f->hidden_dim);
    bench_json_int("n_layers", f->n_layers);
    bench_json_int("n_heads", f->n_heads);
    bench_json_int("vocab", f->vocab_size);
    bench_json_int("params", f->linear_params + f->vocab_size * f->dim);
    bench_json_int("threads", o->threads);
    bench_json_str("isa", sm_isa_name(sm_isa_active()));
}

static void unavailable(const bench_opts *o, const char *name, const char *phase) {
    if (o->json) {
        bench_json_begin("model");
        bench_json_str("name", name);
        bench_json_str("phase", phase);
        bench_json_str("status", "error");
        bench_json_str("error", sm_last_error());
        bench_json_end();
    } else {
        printf("%-44s error: %s\n", name, sm_last_error());
    }
    sm_error_clear();
}

// Decode: returns 1 when a forward pass failed or gave non-finite logits.
static int run_decode(const bench_opts *o, sm_model *m, sm_context *c, const int32_t *toks,
                      float *logits, double bw_gbs) {
    char name[160];
    model_name(name, sizeof name, o, "decode");
    const sm_model_info *f = &m->info;
    int K = (int)o->decode_tokens, reps = o->reps ? o->reps : 10;
    double *t = malloc((size_t)reps * sizeof *t);
    if (!t) return 1;
    sm_status s = sm_context_rewind(c, 0);
    if (s == SM_OK) s = sm_context_forward(c, toks, PROMPT, SM_LOGITS_NONE, NULL);
    bool finite = true;
    // Between reps, a read sweep of the weights' size (bench_bandwidth, 3 passes): other work on
    // the machine then limits it as it limits decoding, and the best of these and of the
    // section's own sweep is the bandwidth decode is set against.
    int64_t wbytes = f->linear_bytes + f->other_bytes + f->dim * (int64_t)sizeof(float);
    bench_opts sweep = *o;
    sweep.quick = true;
    sweep.bw_mib = (double)wbytes / 1048576.0;
    double bw_near = 0;
    // rep -1 is the warm-up (page faults, first touch of the KV cache)
    for (int r = -1; r < reps && s == SM_OK; r++) {
        s = sm_context_rewind(c, PROMPT);
        double t0 = sm_now();
        for (int k = 0; k < K && s == SM_OK; k++)
            s = sm_context_forward(c, &toks[PROMPT + k], 1, SM_LOGITS_LAST, logits);
        if (r >= 0) t[r] = (sm_now() - t0) / K;
        finite = finite && all_finite(logits, f->vocab_size);
        if (r >= 0 && r % 2 == 0) bw_near = fmax(bw_near, bench_bandwidth(&sweep, false));
    }
    if (s != SM_OK || !finite) {
        if (s == SM_OK) sm_fail(SM_ERR_NUMERIC, "non-finite logits");
        unavailable(o, name, "decode");
        free(t);
        return 1;
    }
    double tmin, tmed;
    min_median(t, reps, &tmin, &tmed);
    free(t);
    // wbytes: what one token must read: every linear layer, the norms, one embedding row. The
    // KV cache it also reads (positions so far) is reported apart; it is small here.
    double kv = 0;
    for (int k = 0; k < K; k++)
        kv += 2.0 * (double)(f->n_layers * sm_model_kv_dim(m)) * sizeof(float) * (PROMPT + k + 1);
    kv /= K;
    double gbs = (double)wbytes / tmin / 1e9;
    double bw = isfinite(bw_gbs) ? fmax(bw_gbs, bw_near) : bw_near;
    double pct = 100.0 * gbs / bw;
    if (o->json) {
        bench_json_begin("model");
        bench_json_str("name", name);
        bench_json_str("phase", "decode");
        bench_json_str("status", "ok");
        shape_fields(o, f);
        bench_json_int("tokens", K);
        bench_json_int("reps", reps);
        bench_json_num("time_ms", tmin * 1e3);
        bench_json_num("median_ms", tmed * 1e3);
        bench_json_num("tokens_per_s", 1.0 / tmin);
        bench_json_int("weight_bytes", wbytes);
        bench_json_num("kv_bytes", kv);
        bench_json_num("gbs", gbs);
        bench_json_num("bw_gbs", bw);
        bench_json_num("bw_sweep_gbs", bw_gbs);
        bench_json_num("bw_near_gbs", bw_near);
        bench_json_num("bw_pct", pct);
        bench_json_num("load1", bench_load());
        bench_json_end();
    } else {
        printf("%-44s %7.2f ms/token (median %.2f) %7.1f tok/s  %.1f MB/token  %5.1f GB/s  "
               "%5.1f%% of %.1f GB/s (sweeps: %.1f first, %.1f between reps)  "
               "(+%.2f MB KV/token)\n",
               name, tmin * 1e3, tmed * 1e3, 1.0 / tmin, wbytes / 1e6, gbs, pct, bw, bw_gbs,
               bw_near, kv / 1e6);
        fflush(stdout);
    }
    return 0;
}

// One rep of the reference: OpenBLAS sgemm over the layers' shapes, each timed once and
// weighted by its count in the model. X (T, hidden) and Wt (hidden, hidden) bound every shape.
static double sgemm_rep(const sm_model *m, int64_t T, const float *X, const float *W, float *Y) {
    double total = 0;
    for (int j = 0; j < SM_LIN_PER_LAYER; j++) {
        int64_t r, c;
        sm_model_linear_shape(m, j, &r, &c);
        double t0 = sm_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)r, (int)c, 1.0f, X,
                    (int)c, W, (int)c, 0.0f, Y, (int)r);
        total += (sm_now() - t0) * (double)m->info.n_layers;
    }
    return total;
}

static int run_prefill(const bench_opts *o, sm_model *m, sm_context *c, const int32_t *toks,
                       float *logits) {
    char name[160];
    model_name(name, sizeof name, o, "prefill");
    const sm_model_info *f = &m->info;
    int64_t T = o->prefill_tokens;
    int reps = o->reps ? o->reps : 5;
    int64_t wmax = 0, inmax = 0, outmax = 0;
    for (int j = 0; j < SM_LIN_PER_LAYER; j++) {
        int64_t r, cc;
        sm_model_linear_shape(m, j, &r, &cc);
        if (r * cc > wmax) wmax = r * cc;
        if (cc > inmax) inmax = cc;
        if (r > outmax) outmax = r;
    }
    double *t = malloc((size_t)reps * sizeof *t), *tg = malloc((size_t)reps * sizeof *tg);
    float *X = sm_alloc((size_t)(T * inmax) * sizeof(float));
    float *W = sm_alloc((size_t)wmax * sizeof(float));
    float *Y = sm_alloc((size_t)(T * outmax) * sizeof(float));
    sm_status s = t && tg && X && W && Y ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
    if (s == SM_OK) {
        bench_fill_uniform(X, T * inmax, o->seed + 7);
        bench_fill_uniform(W, wmax, o->seed + 8);
    }
    bool finite = true;
    for (int r = -1; r < reps && s == SM_OK; r++) {
        s = sm_context_rewind(c, 0);
        double t0 = sm_now();
        if (s == SM_OK) s = sm_context_forward(c, toks, T, SM_LOGITS_LAST, logits);
        double dt = sm_now() - t0;
        double dg = sgemm_rep(m, T, X, W, Y);
        if (r >= 0) t[r] = dt, tg[r] = dg;
        finite = finite && all_finite(logits, f->vocab_size);
    }
    sm_free(X);
    sm_free(W);
    sm_free(Y);
    if (s != SM_OK || !finite) {
        if (s == SM_OK) sm_fail(SM_ERR_NUMERIC, "non-finite logits");
        unavailable(o, name, "prefill");
        free(t);
        free(tg);
        return 1;
    }
    double tmin, tmed, gmin, gmed;
    min_median(t, reps, &tmin, &tmed);
    min_median(tg, reps, &gmin, &gmed);
    free(t);
    free(tg);
    int64_t head = f->vocab_size * f->dim; // lm_head runs on the last token only
    double flops = 2.0 * (double)T * (double)(f->linear_params - head);
    double gf = flops / tmin / 1e9, sg = flops / gmin / 1e9;
    if (o->json) {
        bench_json_begin("model");
        bench_json_str("name", name);
        bench_json_str("phase", "prefill");
        bench_json_str("status", "ok");
        shape_fields(o, f);
        bench_json_int("T", T);
        bench_json_int("reps", reps);
        bench_json_num("time_ms", tmin * 1e3);
        bench_json_num("median_ms", tmed * 1e3);
        bench_json_num("tokens_per_s", (double)T / tmin);
        bench_json_num("flops", flops);
        bench_json_num("gflops", gf);
        bench_json_num("sgemm_ms", gmin * 1e3);
        bench_json_num("sgemm_gflops", sg);
        bench_json_num("vs_sgemm", gf / sg);
        bench_json_num("load1", bench_load());
        bench_json_end();
    } else {
        printf("%-44s T=%lld %8.1f ms (median %.1f) %7.1f tok/s  %6.1f GFLOP/s  sgemm %6.1f "
               "GFLOP/s  %4.0f%% of sgemm\n",
               name, (long long)T, tmin * 1e3, tmed * 1e3, (double)T / tmin, gf, sg,
               100.0 * gf / sg);
        fflush(stdout);
    }
    return 0;
}

int bench_model(const bench_opts *o, double bw_gbs) {
    if (!bench_model_selected(o)) return 0;
    char name[160];
    model_name(name, sizeof name, o, "");
    fprintf(stderr, "[bench] %s: building the synthetic model\n", name);
    sm_model *m = NULL;
    if (build_model(o, &m) != SM_OK) {
        unavailable(o, name, "build");
        return 1;
    }
    int64_t T = o->prefill_tokens, need = PROMPT + o->decode_tokens;
    int64_t n_ctx = T > need ? T : need;
    sm_context *c = NULL;
    int32_t *toks = malloc((size_t)n_ctx * sizeof *toks);
    float *logits = malloc((size_t)m->info.vocab_size * sizeof *logits);
    if (!toks || !logits || sm_context_init(m, n_ctx, T, &c) != SM_OK) {
        if (!toks || !logits) sm_fail(SM_ERR_ALLOC, "out of memory");
        unavailable(o, name, "context");
        free(toks);
        free(logits);
        sm_model_free(m);
        return 1;
    }
    uint64_t st = o->seed * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; i < n_ctx; i++) {
        st ^= st << 13, st ^= st >> 7, st ^= st << 17;
        toks[i] = (int32_t)(st % (uint64_t)m->info.vocab_size);
    }
    int fails = 0;
    if (phase_selected(o, "decode")) {
        fprintf(stderr, "[bench] model decode\n");
        fails += run_decode(o, m, c, toks, logits, bw_gbs);
    }
    if (phase_selected(o, "prefill")) {
        fprintf(stderr, "[bench] model prefill, T = %lld\n", (long long)T);
        fails += run_prefill(o, m, c, toks, logits);
    }
    sm_context_free(c);
    free(toks);
    free(logits);
    sm_model_free(m);
    return fails;
}
