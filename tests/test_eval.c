// Evaluation: perplexity statistics and KL divergence against closed forms and a brute-force
// double computation from two contexts' raw logits; the KL-divergence base file (round trip,
// refusals, atomic writing); sm_model_save (a saved model, plain, quantized, tied, gives the
// logits of the model in memory, bit for bit).
#include "structmat_model.h"
#include "testutil.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL "models/shakespeare-llama-3m"
#define V 256
#define T 256 // one chunk of the model's context

static char g_dir[64];

static const char *path_in(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

// Removes dir and the files in it (one level: all this test writes).
static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_dir(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

// Whether a temporary sibling (".tmp-") was left in dir.
static bool temp_left(const char *dir) {
    DIR *d = opendir(dir);
    bool found = false;
    struct dirent *e;
    while (d && (e = readdir(d))) found |= strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    return found;
}

// The first n bytes of the validation slice (the last len//10 bytes of tinyshakespeare.txt).
static void val_tokens(int32_t *ids, int n) {
    FILE *f = fopen("data/tinyshakespeare.txt", "rb");
    CHECK(f != NULL);
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, len - len / 10, SEEK_SET);
    for (int i = 0; i < n; i++) ids[i] = (unsigned char)fgetc(f);
    fclose(f);
}

// --- statistics against closed forms ----------------------------------------------------------

static void test_closed_forms(void) {
    // p = (1/2, 1/4, 1/4), q = (1/4, 1/2, 1/4): KLD(p || q) = 1/2 ln 2 + 1/4 ln(1/2) = ln 2 / 4.
    float p[3] = {logf(0.5f), logf(0.25f), logf(0.25f)};
    // q unnormalised (shifted by 3): sm_eval_add renormalises.
    float q[3] = {logf(0.25f) + 3, logf(0.5f) + 3, logf(0.25f) + 3};
    sm_eval_stats s = {0};
    double k = sm_eval_add(&s, q, p, 3, 2);
    CHECK(fabs(k - log(2.0) / 4) < 1e-7);
    CHECK(fabs(s.nll - log(4.0)) < 1e-6);        // -ln q(2)
    CHECK(fabs(s.nll_base - log(4.0)) < 1e-6);   // -ln p(2)
    CHECK(s.top1_same == 0 && s.kld_count == 1); // argmax 0 vs 1
    CHECK(sm_eval_add(&s, p, p, 3, 0) == 0.0);   // identical rows: exactly 0
    CHECK(s.top1_same == 1 && s.count == 2);
    // The direction: KLD(a || b) and KLD(b || a) for a = (0.9, 0.1), b = (0.5, 0.5).
    float a[2] = {logf(0.9f), logf(0.1f)}, b[2] = {logf(0.5f), logf(0.5f)};
    sm_eval_stats s2 = {0};
    double kab = sm_eval_add(&s2, b, a, 2, 0); // KLD(a || b)
    double want = 0.9 * log(0.9 / 0.5) + 0.1 * log(0.1 / 0.5);
    CHECK(fabs(kab - want) < 1e-6);
    double kba = sm_eval_add(&s2, a, b, 2, 0); // KLD(b || a)
    CHECK(fabs(kba - (0.5 * log(0.5 / 0.9) + 0.5 * log(0.5 / 0.1))) < 1e-6);

    // Summary: the mean NLL, PPL and llama-perplexity's +/- against a two-pass computation.
    enum { N = 50 };
    sm_eval_stats st = {0};
    double x[N], mean = 0, kmean = 0;
    double kl[N];
    for (int i = 0; i < N; i++) {
        double pr = 0.05 + 0.9 * (double)((i * 37) % N) / N; // p(target)
        float row[2] = {(float)log(pr), (float)log(1 - pr)};
        float base[2] = {(float)log(0.5), (float)log(0.5)};
        kl[i] = sm_eval_add(&st, row, base, 2, 0);
        x[i] = -log((double)expf(row[0]) / ((double)expf(row[0]) + (double)expf(row[1])));
        mean += x[i] / N;
        kmean += kl[i] / N;
    }
    double var = 0, kvar = 0;
    for (int i = 0; i < N; i++) var += (x[i] - mean) * (x[i] - mean) / N;
    for (int i = 0; i < N; i++) kvar += (kl[i] - kmean) * (kl[i] - kmean) / N;
    sm_eval_summary sum;
    sm_eval_summarize(&st, &sum);
    CHECK(sum.count == N);
    CHECK(fabs(sum.nll - mean) < 1e-6);
    CHECK(fabs(sum.ppl - exp(mean)) < 1e-5);
    CHECK(fabs(sum.ppl_err - exp(mean) * sqrt(var / (N - 1))) < 1e-6);
    CHECK(fabs(sum.kld_mean - kmean) < 1e-12);
    CHECK(fabs(sum.kld_stderr - sqrt(kvar / (N - 1))) < 1e-9);
    CHECK(fabs(sum.nll_base - log(2.0)) < 1e-7);
    CHECK(fabs(sum.dnll - (mean - log(2.0))) < 1e-6);
    CHECK(fabs(log(sum.ppl_ratio) - sum.dnll) < 1e-12);
    // No base: the comparison figures are NAN, not zeros that look like a perfect match.
    sm_eval_stats none = {0};
    sm_eval_add(&none, p, NULL, 3, 0);
    sm_eval_summarize(&none, &sum);
    CHECK(isnan(sum.kld_mean) && isnan(sum.top1) && isnan(sum.ppl_ratio) && isnan(sum.ppl_err));
}

// --- on the model: log-probabilities and KLD against brute force ------------------------------

// A copy of m whose linear layers are spec fits of m's.
static sm_model *quantized(const char *spec) {
    sm_model *q = NULL;
    CHECK_OK(sm_model_load(MODEL, &q));
    if (!q) return NULL;
    sm_model_info f;
    sm_model_get_info(q, &f);
    for (int64_t i = 0; i < f.n_linear; i++) {
        const sm_op *op = sm_model_linear(q, i);
        int64_t r = sm_op_rows(op), c = sm_op_cols(op);
        float *W = malloc(sizeof(float) * (size_t)(r * c));
        sm_op *fit = NULL;
        CHECK_OK(sm_op_to_dense(op, W));
        CHECK_OK(sm_op_fit(W, r, c, spec, NULL, &fit));
        if (fit) CHECK_OK(sm_model_linear_set(q, i, fit));
        free(W);
    }
    return q;
}

// logits (n, V) of tokens, one decode step at a time (the path sm_eval_logprobs does not take).
static void decode_logits(const sm_model *m, const int32_t *ids, int n, float *logits) {
    sm_context *c = NULL;
    CHECK_OK(sm_context_init(m, T, 1, &c));
    for (int t = 0; c && t < n; t++)
        CHECK_OK(sm_context_forward(c, ids + t, 1, SM_LOGITS_LAST, logits + (size_t)t * V));
    sm_context_free(c);
}

static void log_softmax_ref(const float *x, double *out) {
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, x[v]);
    for (int v = 0; v < V; v++) sum += exp((double)x[v] - mx);
    for (int v = 0; v < V; v++) out[v] = (double)x[v] - mx - log(sum);
}

static void test_model_kld(void) {
    int32_t ids[T];
    val_tokens(ids, T);
    sm_model *m = NULL;
    CHECK_OK(sm_model_load(MODEL, &m));
    sm_model *q = quantized("dense:dtype=q4");
    if (!m || !q) {
        sm_model_free(m);
        sm_model_free(q);
        return;
    }
    float *lp = malloc(sizeof(float) * T * V), *lq = malloc(sizeof(float) * T * V);
    float *rm = malloc(sizeof(float) * T * V), *rq = malloc(sizeof(float) * T * V);
    sm_context *cm = NULL, *cq = NULL;
    CHECK_OK(sm_context_init(m, T, T, &cm));
    CHECK_OK(sm_context_init(q, T, T, &cq));
    CHECK_OK(sm_eval_logprobs(m, cm, ids, T, lp));
    CHECK_OK(sm_eval_logprobs(q, cq, ids, T, lq));
    // Running it again (the context is rewound) gives the same rows, bit for bit.
    float *again = malloc(sizeof(float) * T * V);
    CHECK_OK(sm_eval_logprobs(m, cm, ids, T, again));
    CHECK(memcmp(again, lp, sizeof(float) * T * V) == 0);
    free(again);
    decode_logits(m, ids, T, rm);
    decode_logits(q, ids, T, rq);

    // Per position: log-softmax against the decode path in double, and KLD(m || q) computed by
    // brute force from the two models' raw logits.
    double ref_m[V], ref_q[V], max_dl = 0, max_dk = 0, sum_k = 0, nll_m = 0, nll_q = 0;
    int top_same = 0;
    sm_eval_stats st = {0};
    for (int t = 0; t < T - 1; t++) {
        log_softmax_ref(rm + t * V, ref_m);
        log_softmax_ref(rq + t * V, ref_q);
        double kld = 0;
        int am = 0, aq = 0;
        for (int v = 0; v < V; v++) {
            max_dl = fmax(max_dl, fabs(lp[t * V + v] - ref_m[v]));
            kld += exp(ref_m[v]) * (ref_m[v] - ref_q[v]);
            if (ref_m[v] > ref_m[am]) am = v;
            if (ref_q[v] > ref_q[aq]) aq = v;
        }
        double got = sm_eval_add(&st, lq + t * V, lp + t * V, V, ids[t + 1]);
        max_dk = fmax(max_dk, fabs(got - kld) / fmax(kld, 1e-3));
        sum_k += kld;
        top_same += am == aq;
        nll_m -= ref_m[ids[t + 1]];
        nll_q -= ref_q[ids[t + 1]];
        CHECK(sm_eval_add(&(sm_eval_stats){0}, lp + t * V, lp + t * V, V, 0) == 0.0);
    }
    if (!(max_dl < 1e-4)) {
        fprintf(stderr, "log-probabilities: prefill vs decode differ by %.3g\n", max_dl);
        g_failures++;
    }
    // Prefill and decode round differently (F32, ~1e-6 relative); KLD tolerates that.
    if (!(max_dk < 5e-4)) {
        fprintf(stderr, "KLD vs brute force: relative difference %.3g\n", max_dk);
        g_failures++;
    }
    sm_eval_summary s;
    sm_eval_summarize(&st, &s);
    CHECK(s.count == T - 1);
    CHECK(fabs(s.kld_mean - sum_k / (T - 1)) < 1e-5 * fmax(1, sum_k / (T - 1)));
    CHECK(s.kld_mean > 1e-4);          // q4 changes the model measurably...
    CHECK(s.top1 < 1 && s.top1 > 0.8); // ...but not beyond recognition
    // Argmaxes of F32 rows against double ones: a near-tie may flip, no more.
    CHECK(fabs(s.top1 - (double)top_same / (T - 1)) <= 2.0 / (T - 1));
    CHECK(fabs(s.nll - nll_q / (T - 1)) < 1e-4 && fabs(s.nll_base - nll_m / (T - 1)) < 1e-4);
    CHECK(fabs(log(s.ppl_ratio) - s.dnll) < 1e-12);
    sm_context_free(cm);
    sm_context_free(cq);
    sm_model_free(m);
    sm_model_free(q);
    free(lp), free(lq), free(rm), free(rq);
}

// --- the base file ------------------------------------------------------------------------------

static void test_base_file(void) {
    enum { C = 3, N = 8, FIRST = 4, VOC = 5, ROWS = N - 1 - FIRST };
    sm_kld_base_info info = {.vocab = VOC, .n_ctx = N, .n_chunks = C, .first = FIRST, .bos = 1};
    int32_t toks[C * N];
    float rows[C][ROWS * VOC];
    for (int i = 0; i < C * N; i++) toks[i] = (i * 7) % VOC;
    for (int c = 0; c < C; c++) {
        fill_random(rows[c], ROWS * VOC, 11 + c);
        for (int i = 0; i < ROWS * VOC; i++) rows[c][i] = -fabsf(rows[c][i]) * 20;
    }
    const char *path = path_in("base.kld");
    sm_kld_base *b = NULL;
    CHECK_OK(sm_kld_base_create(path, &info, toks, false, &b));
    for (int c = 0; b && c < C; c++) CHECK_OK(sm_kld_base_write(b, rows[c]));
    if (b) CHECK_OK(sm_kld_base_commit(b));
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size == 64 + C * N * 4 + C * ROWS * VOC * 4);

    sm_kld_base *r = NULL;
    CHECK_OK(sm_kld_base_open(path, &r));
    if (r) {
        sm_kld_base_info got;
        sm_kld_base_get_info(r, &got);
        CHECK(got.vocab == VOC && got.n_ctx == N && got.n_chunks == C && got.first == FIRST &&
              got.bos == 1);
        CHECK(memcmp(sm_kld_base_tokens(r), toks, sizeof toks) == 0);
        float back[ROWS * VOC];
        for (int c = C - 1; c >= 0; c--) { // any order
            CHECK_OK(sm_kld_base_read(r, c, back));
            CHECK(memcmp(back, rows[c], sizeof back) == 0);
        }
        CHECK_FAIL(sm_kld_base_read(r, C, back), SM_ERR_ARG, "no chunk 3");
        sm_kld_base_free(r);
    }

    // An existing file is refused and left as it was; --force replaces it.
    CHECK_FAIL(sm_kld_base_create(path, &info, toks, false, &b), SM_ERR_EXISTS, "exists");
    CHECK(stat(path, &sb) == 0 && sb.st_size == 64 + C * N * 4 + C * ROWS * VOC * 4);
    // A file whose chunks are not all written is never renamed into place.
    const char *part = path_in("partial.kld");
    CHECK_OK(sm_kld_base_create(part, &info, toks, false, &b));
    if (b) {
        CHECK_OK(sm_kld_base_write(b, rows[0]));
        CHECK_FAIL(sm_kld_base_commit(b), SM_ERR_ARG, "1 of 3 chunks");
    }
    CHECK(stat(part, &sb) != 0);
    CHECK(!temp_left(g_dir));
    // Freed before commit (an interrupted evaluation): nothing left either.
    CHECK_OK(sm_kld_base_create(part, &info, toks, false, &b));
    sm_kld_base_free(b);
    CHECK(stat(part, &sb) != 0 && !temp_left(g_dir));

    // Bad inputs and damaged files.
    int32_t bad[C * N];
    memcpy(bad, toks, sizeof bad);
    bad[5] = VOC;
    CHECK_FAIL(sm_kld_base_create(part, &info, bad, false, &b), SM_ERR_ARG, "outside");
    sm_kld_base_info odd = info;
    odd.first = N - 1; // no scored row
    CHECK_FAIL(sm_kld_base_create(part, &odd, toks, false, &b), SM_ERR_FORMAT, "impossible");
    char *data = NULL;
    size_t len = 0;
    FILE *f = fopen(path, "rb");
    if (f) {
        data = malloc((size_t)sb.st_size);
        len = fread(data, 1, (size_t)sb.st_size, f);
        fclose(f);
    }
    CHECK(data && len == (size_t)sb.st_size);
    if (data) {
        const char *cut = path_in("cut.kld");
        f = fopen(cut, "wb");
        fwrite(data, 1, len - 4, f);
        fclose(f);
        CHECK_FAIL(sm_kld_base_open(cut, &r), SM_ERR_FORMAT, "truncated");
        data[0] = 'X';
        f = fopen(cut, "wb");
        fwrite(data, 1, len, f);
        fclose(f);
        CHECK_FAIL(sm_kld_base_open(cut, &r), SM_ERR_FORMAT, "not a structmat KL-divergence");
        data[0] = 'S';
        float pos = 0.5f; // a "log-probability" above 0 in chunk 1
        memcpy(data + 64 + C * N * 4 + ROWS * VOC * 4 + 8, &pos, 4);
        f = fopen(cut, "wb");
        fwrite(data, 1, len, f);
        fclose(f);
        CHECK_OK(sm_kld_base_open(cut, &r));
        float back[ROWS * VOC];
        if (r) {
            CHECK_OK(sm_kld_base_read(r, 0, back));
            CHECK_FAIL(sm_kld_base_read(r, 1, back), SM_ERR_FORMAT, "not a log-probability");
            sm_kld_base_free(r);
        }
        free(data);
    }
    CHECK_FAIL(sm_kld_base_open(path_in("none.kld"), &r), SM_ERR_IO, "none.kld");
}

// --- saving
// -----------------------------------------------------------------------------------------

// The logits (n, V) of ids under m.
static void logits_of(const sm_model *m, const int32_t *ids, int n, float *out) {
    sm_context *c = NULL;
    CHECK_OK(sm_context_init(m, T, T, &c));
    if (c) CHECK_OK(sm_context_forward(c, ids, n, SM_LOGITS_ALL, out));
    sm_context_free(c);
}

// Saves m to dir, loads it back, and checks the logits of ids are the same bit for bit.
static sm_model *save_and_compare(const sm_model *m, const char *dir, const int32_t *ids, int n,
                                  const char *what) {
    CHECK_OK(sm_model_save(m, dir, false));
    sm_model *back = NULL;
    CHECK_OK(sm_model_load(dir, &back));
    if (!back) return NULL;
    float *a = malloc(sizeof(float) * (size_t)n * V), *b = malloc(sizeof(float) * (size_t)n * V);
    logits_of(m, ids, n, a);
    logits_of(back, ids, n, b);
    check_close(what, b, a, (int64_t)n * V, 0);
    free(a), free(b);
    sm_model_info f1, f2;
    sm_model_get_info(m, &f1);
    sm_model_get_info(back, &f2);
    CHECK(f1.tied == f2.tied && f1.linear_bytes == f2.linear_bytes &&
          f1.embed_bytes == f2.embed_bytes);
    for (int64_t i = 0; i < f1.n_linear; i++)
        CHECK(!strcmp(sm_op_spec(sm_model_linear(m, i)), sm_op_spec(sm_model_linear(back, i))));
    return back;
}

// MODEL with a tied head: its safetensors less lm_head, config with tie_word_embeddings.
static void write_tied(const char *dir) {
    mkdir(dir, 0755);
    sm_st *st = NULL;
    CHECK_OK(sm_st_open(MODEL, &st));
    if (!st) return;
    sm_st_writer *w = sm_st_writer_init();
    for (int i = 0; i < sm_st_count(st); i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        if (strcmp(t->name, "lm_head.weight"))
            CHECK_OK(sm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes));
    }
    char p[300];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK_OK(sm_st_writer_write(w, p, false));
    sm_st_writer_free(w);
    sm_st_close(st);
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
               "\"hidden_size\": 256, \"intermediate_size\": 768, \"num_hidden_layers\": 4, "
               "\"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"hidden_act\": \"silu\", "
               "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"max_position_embeddings\": "
               "256, \"vocab_size\": 256, \"tie_word_embeddings\": true}\n");
    fclose(f);
}

static void test_save(void) {
    enum { n = 48 };
    int32_t ids[n];
    val_tokens(ids, n);
    sm_model *m = NULL, *back;
    CHECK_OK(sm_model_load(MODEL, &m));
    if (!m) return;
    // As loaded: every layer plain dense, written as ordinary tensors.
    back = save_and_compare(m, path_in("plain"), ids, n, "saved plain model");
    sm_model_free(back);
    CHECK_FAIL(sm_model_save(m, path_in("plain"), false), SM_ERR_EXISTS, "exists");
    CHECK_OK(sm_model_save(m, path_in("plain"), true));
    CHECK(!temp_left(g_dir) && !temp_left(path_in("plain")));
    // force replaces a checkpoint or an empty directory, never one holding something else.
    const char *other = path_in("other");
    mkdir(other, 0755);
    CHECK_FAIL(sm_model_save(m, other, false), SM_ERR_EXISTS, "exists");
    char keep[300];
    snprintf(keep, sizeof keep, "%s/keep.txt", other);
    FILE *kf = fopen(keep, "w");
    if (kf) fclose(kf);
    CHECK_FAIL(sm_model_save(m, other, true), SM_ERR_EXISTS, "holds no checkpoint");
    struct stat ksb;
    CHECK(stat(keep, &ksb) == 0);
    unlink(keep);
    CHECK_OK(sm_model_save(m, other, true)); // empty now
    CHECK(!temp_left(g_dir));

    // Quantized and low-rank layers: stored operators, the rest plain.
    sm_model *q = quantized("dense:dtype=q4");
    if (q) {
        sm_op *lr = NULL;
        const sm_op *o = sm_model_linear(m, 5);
        float *W = malloc(sizeof(float) * (size_t)(sm_op_rows(o) * sm_op_cols(o)));
        CHECK_OK(sm_op_to_dense(o, W));
        CHECK_OK(sm_op_fit(W, sm_op_rows(o), sm_op_cols(o), "lowrank:rank=16", NULL, &lr));
        free(W);
        if (lr) CHECK_OK(sm_model_linear_set(q, 5, lr));
        back = save_and_compare(q, path_in("q4"), ids, n, "saved q4 model");
        if (back) {
            CHECK(!strcmp(sm_op_spec(sm_model_linear(back, 5)), "lowrank:rank=16"));
            CHECK(!strcmp(sm_op_spec(sm_model_linear(back, 0)), "dense:dtype=q4"));
        }
        sm_model_free(back);
        sm_model_free(q);
    }

    // Tied: the head is the embedding, written once; replacing the head unties it.
    write_tied(path_in("tied-src"));
    sm_model *t = NULL;
    CHECK_OK(sm_model_load(path_in("tied-src"), &t));
    if (t) {
        sm_model_info f;
        sm_model_get_info(t, &f);
        CHECK(f.tied);
        back = save_and_compare(t, path_in("tied"), ids, n, "saved tied model");
        sm_model_free(back);
        const sm_op *head = sm_model_linear(t, f.n_linear - 1);
        float *W = malloc(sizeof(float) * V * 256);
        sm_op *hq = NULL;
        CHECK_OK(sm_op_to_dense(head, W));
        CHECK_OK(sm_op_fit(W, V, 256, "dense:dtype=q8", NULL, &hq));
        free(W);
        if (hq) CHECK_OK(sm_model_linear_set(t, f.n_linear - 1, hq));
        back = save_and_compare(t, path_in("untied"), ids, n, "saved untied model");
        sm_model_free(back);
        sm_model_free(t);
    }

    // llama2.c models (interleaved RoPE) cannot be described by a config.json.
    sm_model *s = NULL;
    CHECK_OK(sm_model_load("models/stories260K.bin", &s));
    if (s) CHECK_FAIL(sm_model_save(s, path_in("stories"), false), SM_ERR_UNSUPPORTED, "RoPE");
    sm_model_free(s);
    FILE *f = fopen(path_in("file"), "w");
    if (f) fclose(f);
    CHECK_FAIL(sm_model_save(m, path_in("file"), false), SM_ERR_IO, "not a directory");
    sm_model_free(m);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/test_eval-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_closed_forms();
    test_model_kld();
    test_base_file();
    test_save();
    remove_dir(g_dir);
    TEST_END();
}
