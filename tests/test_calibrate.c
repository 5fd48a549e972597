// Calibration statistics (sm_calib_*): the Grams against two independent computations, the token
// count, the file round trip, activation-aware low-rank fits against plain SVD on the collected
// statistics, sm_act_rel_error against a direct sum, and the errors for bad statistics.
//
//   1. Layer 0's q/k/v input is RMSNorm(embedding row) * input_layernorm: computed here in double
//      from the checkpoint's tensors (read with sm_st, not through the model), its Gram, sums of
//      squares and maxima must equal the collected ones to 1e-6 relative.
//   2. A second observer on a context of its own sums x x^T per linear layer (all 29, not per
//      input) with plain loops: every layer's statistics from sm_calib_get equal its own sums,
//      so q/k/v and gate/up really read one input each.
#include "base/base.h"
#include "structmat_model.h"
#include "testutil.h"

#include <sys/wait.h>
#include <unistd.h>

#define MODEL "models/shakespeare-llama-3m"
#define TEXT "data/tinyshakespeare.txt"
#define CTX 128

// Relative Frobenius distance of double arrays ||a - b|| / ||b||.
static double rel_d(const double *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// The text's first n bytes as byte-level token ids.
static int32_t *text_ids(int64_t n) {
    FILE *f = fopen(TEXT, "rb");
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; f && ids && i < n; i++) ids[i] = (int32_t)(unsigned char)fgetc(f);
    if (f) fclose(f);
    return ids;
}

// Chunk lengths run in every part of the test: full, full, and a short tail.
static const int64_t k_chunks[] = {CTX, CTX, 57};
#define NCHUNKS 3
#define NTOK (2 * CTX + 57)

// --- the second observer: naive sums per linear layer -------------------------------------------

typedef struct naive {
    int64_t nlin;
    int64_t *n;     // (nlin) input size
    int64_t *rows;  // (nlin) rows seen
    double **gram;  // (nlin) (n, n)
    double **sqsum; // (nlin) (n)
    float **absmax; // (nlin) (n)
} naive;

static sm_status naive_observe(void *user, int64_t i, int64_t T, const float *X) {
    naive *s = user;
    int64_t n = s->n[i];
    for (int64_t t = 0; t < T; t++) {
        const float *x = X + t * n; // (n)
        for (int64_t a = 0; a < n; a++) {
            s->sqsum[i][a] += (double)x[a] * x[a];
            if (fabsf(x[a]) > s->absmax[i][a]) s->absmax[i][a] = fabsf(x[a]);
            for (int64_t b = 0; b < n; b++) s->gram[i][a * n + b] += (double)x[a] * x[b];
        }
    }
    s->rows[i] += T;
    return SM_OK;
}

static sm_status failing_observer(void *user, int64_t i, int64_t T, const float *X) {
    int *calls = user;
    if (++*calls == 5)
        return sm_fail(SM_ERR_NUMERIC, "observer says stop at layer %lld", (long long)i);
    return SM_OK;
}

// --- 1 and 2: the collected statistics -----------------------------------------------------------

static void test_collect(sm_model *m, const char *dir) {
    sm_model_info f;
    sm_model_get_info(m, &f);
    int32_t *ids = text_ids(NTOK);
    sm_calib *cal = NULL;
    CHECK_OK(sm_calib_init(m, CTX, &cal));
    if (!cal || !ids) {
        free(ids);
        return;
    }
    CHECK(sm_calib_ctx_size(cal) == CTX);
    CHECK(sm_calib_count(cal) == 4 * f.n_layers + 1); // q/k/v, o, gate/up, down; the head
    int64_t off = 0;
    for (int c = 0; c < NCHUNKS; c++) {
        CHECK_OK(sm_calib_run(cal, ids + off, k_chunks[c]));
        off += k_chunks[c];
    }
    CHECK(sm_calib_tokens(cal) == NTOK);
    // Refused runs add nothing and leave the statistics usable.
    int32_t bad[2] = {65, 999};
    CHECK_FAIL(sm_calib_run(cal, bad, 2), SM_ERR_ARG, "outside the vocabulary");
    CHECK_FAIL(sm_calib_run(cal, ids, CTX + 1), SM_ERR_ARG, "tokens in a sequence");
    CHECK(sm_calib_tokens(cal) == NTOK);

    // 1: layer 0's attention input from the checkpoint's tensors, in double.
    sm_st *st = NULL;
    CHECK_OK(sm_st_open(MODEL, &st));
    float *E = NULL, *w = NULL;
    int64_t ne = 0, nw = 0;
    if (st) {
        CHECK_OK(sm_st_read_f32(st, "model.embed_tokens.weight", &E, &ne));
        CHECK_OK(sm_st_read_f32(st, "model.layers.0.input_layernorm.weight", &w, &nw));
    }
    int64_t D = f.dim;
    if (E && w && ne == f.vocab_size * D && nw == D) {
        double *G = calloc((size_t)(D * D), sizeof(double)), *sq = calloc((size_t)D, sizeof *sq);
        double *am = calloc((size_t)D, sizeof *am), *x = calloc((size_t)D, sizeof *x);
        for (int64_t t = 0; t < NTOK; t++) {
            const float *e = E + (int64_t)ids[t] * D;
            double ss = 0;
            for (int64_t j = 0; j < D; j++) ss += (double)e[j] * e[j];
            double inv = 1.0 / sqrt(ss / (double)D + f.rms_eps);
            for (int64_t j = 0; j < D; j++) {
                x[j] = (double)e[j] * inv * (double)w[j];
                sq[j] += x[j] * x[j];
                am[j] = fmax(am[j], fabs(x[j]));
            }
            for (int64_t a = 0; a < D; a++)
                for (int64_t b = 0; b < D; b++) G[a * D + b] += x[a] * x[b];
        }
        const char *qkv[3] = {"model.layers.0.self_attn.q_proj.weight",
                              "model.layers.0.self_attn.k_proj.weight",
                              "model.layers.0.self_attn.v_proj.weight"};
        for (int k = 0; k < 3; k++) {
            sm_stats s;
            CHECK_OK(sm_calib_get(cal, qkv[k], D, &s));
            double e = rel_d(s.gram, G, D * D), e2 = rel_d(s.sqsum, sq, D);
            if (!(e < 1e-6) || !(e2 < 1e-6))
                fprintf(stderr, "%s: Gram rel error %.3g, sqsum %.3g vs RMSNorm(embedding)\n",
                        qkv[k], e, e2);
            CHECK(e < 1e-6 && e2 < 1e-6);
            CHECK(s.tokens == NTOK);
        }
        int i0;
        CHECK_OK(sm_calib_find(cal, qkv[0], &i0));
        sm_calib_input in;
        CHECK_OK(sm_calib_input_get(cal, i0, &in));
        CHECK(strcmp(in.name, "model.layers.0.self_attn.q_proj") == 0 && in.n == D);
        double amd[4096];
        for (int64_t j = 0; j < D; j++) amd[j] = in.absmax[j];
        CHECK(rel_d(amd, am, D) < 1e-6);
        // Symmetric and with sqsum on the diagonal, as the definition gives.
        int asym = 0;
        for (int64_t a = 0; a < D; a++)
            for (int64_t b = 0; b < D; b++) asym += in.gram[a * D + b] != in.gram[b * D + a];
        CHECK(asym == 0);
        free(G), free(sq), free(am), free(x);
    } else {
        CHECK(!"embedding or input_layernorm unreadable");
    }
    free(E), free(w);
    sm_st_close(st);

    // 2: every layer against its own naive sums, collected by a second observer.
    naive nv = {.nlin = f.n_linear};
    nv.n = calloc((size_t)f.n_linear, sizeof *nv.n);
    nv.rows = calloc((size_t)f.n_linear, sizeof *nv.rows);
    nv.gram = calloc((size_t)f.n_linear, sizeof *nv.gram);
    nv.sqsum = calloc((size_t)f.n_linear, sizeof *nv.sqsum);
    nv.absmax = calloc((size_t)f.n_linear, sizeof *nv.absmax);
    for (int64_t i = 0; i < f.n_linear; i++) {
        int64_t n = sm_op_cols(sm_model_linear(m, i));
        nv.n[i] = n;
        nv.gram[i] = calloc((size_t)(n * n), sizeof(double));
        nv.sqsum[i] = calloc((size_t)n, sizeof(double));
        nv.absmax[i] = calloc((size_t)n, sizeof(float));
    }
    sm_context *ctx = NULL;
    CHECK_OK(sm_context_init(m, CTX, 32, &ctx)); // several steps per chunk here
    float *logits = malloc(sizeof(float) * (size_t)(CTX * f.vocab_size));
    if (ctx && logits) {
        sm_context_set_observer(ctx, naive_observe, &nv);
        off = 0;
        for (int c = 0; c < NCHUNKS; c++) {
            CHECK_OK(sm_context_rewind(ctx, 0));
            CHECK_OK(sm_context_forward(ctx, ids + off, k_chunks[c], SM_LOGITS_ALL, logits));
            off += k_chunks[c];
        }
        // An observer's failure stops the pass and is returned; the position stays.
        int calls = 0;
        sm_context_set_observer(ctx, failing_observer, &calls);
        CHECK_OK(sm_context_rewind(ctx, 0));
        CHECK_FAIL(sm_context_forward(ctx, ids, 8, SM_LOGITS_NONE, NULL), SM_ERR_NUMERIC,
                   "observer says stop at layer 4");
        CHECK(sm_context_pos(ctx) == 0);
        sm_context_set_observer(ctx, NULL, NULL);
        CHECK_OK(sm_context_forward(ctx, ids, 8, SM_LOGITS_NONE, NULL));
    }
    for (int64_t i = 0; i < f.n_linear; i++) {
        const char *name = sm_model_linear_name(m, i);
        int64_t n = nv.n[i];
        CHECK(nv.rows[i] == NTOK);
        sm_stats s;
        sm_status ss = sm_calib_get(cal, name, n, &s);
        CHECK_OK(ss);
        if (ss != SM_OK) continue;
        double e = rel_d(s.gram, nv.gram[i], n * n), e2 = rel_d(s.sqsum, nv.sqsum[i], n);
        if (!(e < 1e-12) || !(e2 < 1e-12))
            fprintf(stderr, "%s: Gram rel error %.3g, sqsum %.3g vs the naive sums\n", name, e, e2);
        CHECK(e < 1e-12 && e2 < 1e-12);
        int idx;
        sm_calib_input in;
        CHECK_OK(sm_calib_find(cal, name, &idx));
        CHECK_OK(sm_calib_input_get(cal, idx, &in));
        CHECK(memcmp(in.absmax, nv.absmax[i], sizeof(float) * (size_t)n) == 0);
    }
    sm_context_free(ctx);
    free(logits);
    for (int64_t i = 0; i < f.n_linear; i++)
        free(nv.gram[i]), free(nv.sqsum[i]), free(nv.absmax[i]);
    free(nv.n), free(nv.rows), free(nv.gram), free(nv.sqsum), free(nv.absmax);

    // The input names and the mapping of every linear layer.
    const char *expect[][2] = {
        {"model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.q_proj"},
        {"model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.q_proj"},
        {"model.layers.2.self_attn.o_proj.weight", "model.layers.2.self_attn.o_proj"},
        {"model.layers.3.mlp.up_proj.weight", "model.layers.3.mlp.gate_proj"},
        {"model.layers.3.mlp.down_proj.weight", "model.layers.3.mlp.down_proj"},
        {"lm_head.weight", "lm_head"},
    };
    for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++) {
        int idx = -1;
        sm_calib_input in = {0};
        CHECK_OK(sm_calib_find(cal, expect[k][0], &idx));
        if (idx >= 0) CHECK_OK(sm_calib_input_get(cal, idx, &in));
        CHECK(in.name && strcmp(in.name, expect[k][1]) == 0);
    }

    // The file round trip: the same tensors bit for bit, the metadata.
    char path[512];
    snprintf(path, sizeof path, "%s/stats.safetensors", dir);
    sm_calib_source src = {.model = MODEL,
                           .text = TEXT,
                           .text_begin = 0,
                           .text_end = NTOK,
                           .ctx = CTX,
                           .chunks = NCHUNKS,
                           .bos = -1};
    CHECK_OK(sm_calib_save(cal, path, &src, false));
    CHECK_FAIL(sm_calib_save(cal, path, &src, false), SM_ERR_EXISTS, "");
    sm_calib *rd = NULL;
    CHECK_OK(sm_calib_open(path, &rd));
    if (rd) {
        CHECK(sm_calib_tokens(rd) == NTOK);
        CHECK(sm_calib_count(rd) == sm_calib_count(cal));
        CHECK(sm_calib_ctx_size(rd) == 0);
        const char *v = sm_calib_meta(rd, "structmat.calib.format_version");
        CHECK(v && strcmp(v, "1") == 0);
        v = sm_calib_meta(rd, "structmat.calib.text_bytes");
        CHECK(v && strcmp(v, "0:313") == 0);
        v = sm_calib_meta(rd, "structmat.calib.chunks");
        CHECK(v && strcmp(v, "3") == 0);
        v = sm_calib_meta(rd, "structmat.calib.text");
        CHECK(v && strcmp(v, TEXT) == 0);
        for (int i = 0; i < sm_calib_count(cal); i++) {
            sm_calib_input a, b;
            CHECK_OK(sm_calib_input_get(cal, i, &a));
            int j = -1;
            for (int k = 0; k < sm_calib_count(rd); k++) {
                CHECK_OK(sm_calib_input_get(rd, k, &b));
                if (strcmp(a.name, b.name) == 0) {
                    j = k;
                    break;
                }
            }
            CHECK(j >= 0);
            if (j < 0) continue;
            CHECK(a.n == b.n);
            CHECK(memcmp(a.gram, b.gram, sizeof(double) * (size_t)(a.n * a.n)) == 0);
            CHECK(memcmp(a.sqsum, b.sqsum, sizeof(double) * (size_t)a.n) == 0);
            CHECK(memcmp(a.absmax, b.absmax, sizeof(float) * (size_t)a.n) == 0);
        }
        for (int64_t i = 0; i < f.n_linear; i++) {
            int a = -1, b = -2;
            CHECK_OK(sm_calib_find(cal, sm_model_linear_name(m, i), &a));
            CHECK_OK(sm_calib_find(rd, sm_model_linear_name(m, i), &b));
            sm_calib_input ia, ib;
            CHECK_OK(sm_calib_input_get(cal, a, &ia));
            CHECK_OK(sm_calib_input_get(rd, b, &ib));
            CHECK(strcmp(ia.name, ib.name) == 0);
        }
        // Wrong size: statistics of another model; no input: not a linear layer.
        sm_stats s;
        CHECK_FAIL(sm_calib_get(rd, "model.layers.0.mlp.down_proj.weight", 256, &s), SM_ERR_SHAPE,
                   "have 768 channels, the layer takes 256: statistics of another");
        CHECK_FAIL(sm_calib_get(rd, "model.embed_tokens.weight", 256, &s), SM_ERR_NOT_FOUND,
                   "no calibration statistics for \"model.embed_tokens.weight\"");
        CHECK_FAIL(sm_calib_run(rd, ids, 4), SM_ERR_ARG, "cannot be added to");
        CHECK_FAIL(sm_calib_save(rd, path, NULL, true), SM_ERR_ARG, "only collected");
        sm_calib_free(rd);
    }
    sm_calib_free(cal);
    free(ids);
}

// --- activation-aware fits beat plain SVD on the calibration objective ---------------------------

// tr(D H D^T) for D = W - W_hat, by the definition: sum over rows of d^T H d.
static double act_err2(const float *W, const float *Wh, int64_t m, int64_t n, const double *H) {
    double *d = malloc(sizeof(double) * (size_t)n), e = 0;
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) d[j] = (double)W[i * n + j] - (double)Wh[i * n + j];
        for (int64_t a = 0; a < n; a++) {
            double r = 0;
            for (int64_t b = 0; b < n; b++) r += H[a * n + b] * d[b];
            e += d[a] * r;
        }
    }
    free(d);
    return e;
}

static void test_fits(sm_model *m, const char *dir) {
    // Statistics of 8 chunks of 256 tokens from the middle of the text.
    sm_model_info f;
    sm_model_get_info(m, &f);
    enum { N = 256, CH = 8 };
    int32_t *ids = text_ids(200000);
    sm_calib *cal = NULL;
    CHECK_OK(sm_calib_init(m, N, &cal));
    for (int c = 0; c < CH && cal && ids; c++) CHECK_OK(sm_calib_run(cal, ids + 100000 + c * N, N));
    free(ids);
    if (!cal) return;
    char path[512];
    snprintf(path, sizeof path, "%s/fits.safetensors", dir);
    CHECK_OK(sm_calib_save(cal, path, NULL, false));
    sm_calib_free(cal);
    cal = NULL;
    CHECK_OK(sm_calib_open(path, &cal)); // as fit --calib reads them
    if (!cal) return;
    int worse = 0;
    for (int64_t i = 0; i < f.n_linear; i++) {
        const sm_op *lin = sm_model_linear(m, i);
        int64_t rows = sm_op_rows(lin), cols = sm_op_cols(lin);
        const char *name = sm_model_linear_name(m, i);
        float *W = malloc(sizeof(float) * (size_t)(rows * cols));
        float *P = malloc(sizeof(float) * (size_t)(rows * cols));
        float *A = malloc(sizeof(float) * (size_t)(rows * cols));
        sm_stats s;
        sm_op *plain = NULL, *aware = NULL;
        CHECK_OK(sm_op_to_dense(lin, W));
        CHECK_OK(sm_calib_get(cal, name, cols, &s));
        CHECK_OK(sm_op_fit(W, rows, cols, "lowrank:ratio=0.5", NULL, &plain));
        sm_fit_opts o = {.stats = &s};
        CHECK_OK(sm_op_fit(W, rows, cols, "lowrank:ratio=0.5", &o, &aware));
        if (plain && aware) {
            CHECK(strcmp(sm_op_spec(plain), sm_op_spec(aware)) == 0);
            CHECK_OK(sm_op_to_dense(plain, P));
            CHECK_OK(sm_op_to_dense(aware, A));
            float *Z = calloc((size_t)(rows * cols), sizeof(float)); // tr(W H W^T) = err of 0
            double den = act_err2(W, Z, rows, cols, s.gram);
            free(Z);
            double ep = sqrt(act_err2(W, P, rows, cols, s.gram) / den);
            double ea = sqrt(act_err2(W, A, rows, cols, s.gram) / den);
            // The library's figure (fit --calib's act_rel_error) is the same quantity.
            double lp = -1, la = -1;
            CHECK_OK(sm_act_rel_error(W, P, rows, cols, s.gram, &lp));
            CHECK_OK(sm_act_rel_error(W, A, rows, cols, s.gram, &la));
            CHECK(fabs(lp - ep) <= 1e-9 * ep && fabs(la - ea) <= 1e-9 * ea);
            if (!(ea < ep)) {
                fprintf(stderr, "%s: activation-aware act_rel_error %.6f >= plain SVD's %.6f\n",
                        name, ea, ep);
                worse++;
            }
            if (getenv("SM_TEST_VERBOSE")) printf("%-44s plain %.5f aware %.5f\n", name, ep, ea);
        }
        CHECK(worse == 0);
        sm_op_free(plain), sm_op_free(aware);
        free(W), free(P), free(A);
    }
    sm_calib_free(cal);
}

// --- sm_act_rel_error on a small case
// --------------------------------------------------------------

static void test_act_rel_error(void) {
    enum { M = 70, N = 13, T = 40 }; // M > the function's row block of 64
    float W[M * N], Wh[M * N], X[T * N];
    fill_random(W, M * N, 1), fill_random(Wh, M * N, 2), fill_random(X, T * N, 3);
    double H[N * N] = {0};
    for (int t = 0; t < T; t++)
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) H[a * N + b] += (double)X[t * N + a] * X[t * N + b];
    // ||X dW^T||_F^2 / ||X W^T||_F^2 directly from X.
    double num = 0, den = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < M; i++) {
            double y = 0, yh = 0;
            for (int j = 0; j < N; j++) {
                y += (double)X[t * N + j] * W[i * N + j];
                yh += (double)X[t * N + j] * Wh[i * N + j];
            }
            num += (y - yh) * (y - yh);
            den += y * y;
        }
    double rel = -1;
    CHECK_OK(sm_act_rel_error(W, Wh, M, N, H, &rel));
    CHECK(fabs(rel - sqrt(num / den)) < 1e-12 * sqrt(num / den));
    CHECK_OK(sm_act_rel_error(W, W, M, N, H, &rel));
    CHECK(rel == 0);
}

// --- bad files ---------------------------------------------------------------------------------

// Writes a one-input statistics file for layer "a.weight" -> input "a" of n channels; the flags
// break it one way each.
enum {
    BAD_NONE,
    BAD_NO_VERSION,
    BAD_VERSION,
    BAD_NO_TOKENS,
    BAD_NO_SQSUM,
    BAD_GRAM_F32,
    BAD_GRAM_SHAPE,
    BAD_NAN,
    BAD_NO_LAYERS
};

static void write_file(const char *path, int bad) {
    enum { n = 4 };
    double G[n * n] = {0}, sq[n] = {1, 1, 1, 1};
    float G32[n * n] = {0}, am[n] = {1, 1, 1, 1};
    for (int i = 0; i < n; i++) G[i * n + i] = 1, G32[i * n + i] = 1;
    if (bad == BAD_NAN) G[1] = NAN;
    sm_st_writer *w = sm_st_writer_init();
    if (bad != BAD_NO_VERSION)
        sm_st_writer_meta(w, "structmat.calib.format_version", bad == BAD_VERSION ? "2" : "1");
    if (bad != BAD_NO_TOKENS) sm_st_writer_meta(w, "structmat.calib.tokens", "10");
    if (bad != BAD_NO_LAYERS) sm_st_writer_meta(w, "structmat.calib.input.a.weight", "a");
    int64_t sh[2] = {n, bad == BAD_GRAM_SHAPE ? n - 1 : n};
    if (bad == BAD_GRAM_F32)
        sm_st_writer_add(w, "a.gram", SM_DTYPE_F32, 2, sh, G32, sizeof G32);
    else
        sm_st_writer_add(w, "a.gram", SM_DTYPE_F64, 2, sh, G,
                         sizeof(double) * (size_t)(sh[0] * sh[1]));
    if (bad != BAD_NO_SQSUM) sm_st_writer_add(w, "a.sqsum", SM_DTYPE_F64, 1, sh, sq, sizeof sq);
    sm_st_writer_add(w, "a.absmax", SM_DTYPE_F32, 1, sh, am, sizeof am);
    CHECK_OK(sm_st_writer_write(w, path, true));
    sm_st_writer_free(w);
}

static void test_bad_files(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    sm_calib *cal = NULL;
    sm_stats s;
    write_file(path, BAD_NONE);
    CHECK_OK(sm_calib_open(path, &cal));
    if (cal) {
        CHECK_OK(sm_calib_get(cal, "a.weight", 4, &s));
        CHECK(s.tokens == 10 && s.gram[0] == 1 && s.sqsum[3] == 1);
        CHECK_OK(sm_calib_get(cal, "a", 4, &s)); // ".weight" optional
        CHECK_FAIL(sm_calib_get(cal, "b.weight", 4, &s), SM_ERR_NOT_FOUND, "\"a.weight\"");
        sm_calib_free(cal);
    }
    struct {
        int bad;
        sm_status st;
        const char *needle;
    } cases[] = {
        {BAD_NO_VERSION, SM_ERR_FORMAT, "not a calibration statistics file"},
        {BAD_VERSION, SM_ERR_UNSUPPORTED, "format version \"2\""},
        {BAD_NO_TOKENS, SM_ERR_FORMAT, "tokens is missing"},
        {BAD_NO_SQSUM, SM_ERR_FORMAT, "missing tensor \"a.sqsum\""},
        {BAD_GRAM_F32, SM_ERR_FORMAT, "\"a.gram\" is F32"},
        {BAD_GRAM_SHAPE, SM_ERR_FORMAT, "\"a.gram\""},
        {BAD_NO_LAYERS, SM_ERR_FORMAT, "no \"structmat.calib.input.<layer>\""},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        write_file(path, cases[k].bad);
        cal = NULL;
        CHECK_FAIL(sm_calib_open(path, &cal), cases[k].st, cases[k].needle);
        CHECK(cal == NULL);
        sm_calib_free(cal);
    }
    write_file(path, BAD_NAN); // opens; the values are checked when got
    cal = NULL;
    CHECK_OK(sm_calib_open(path, &cal));
    if (cal) CHECK_FAIL(sm_calib_get(cal, "a.weight", 4, &s), SM_ERR_FORMAT, "a.gram[0, 1] = nan");
    sm_calib_free(cal);
    CHECK_FAIL(sm_calib_open("/nonexistent/stats.safetensors", &cal), SM_ERR_IO, "");
    // A model checkpoint is not a statistics file.
    CHECK_FAIL(sm_calib_open(MODEL "/model.safetensors", &cal), SM_ERR_FORMAT,
               "not a calibration statistics file");
}

// Statistics of another model (stories260K: dim 64) for this one's layers.
static void test_other_model(const char *dir) {
    sm_model *o = NULL;
    CHECK_OK(sm_model_load("models/stories260K.bin", &o));
    if (!o) return;
    sm_calib *cal = NULL;
    CHECK_OK(sm_calib_init(o, 16, &cal));
    int32_t ids[16] = {1, 300, 301, 302, 40, 41, 42, 43, 400, 401, 402, 403, 500, 501, 502, 503};
    if (cal) CHECK_OK(sm_calib_run(cal, ids, 16));
    char path[512];
    snprintf(path, sizeof path, "%s/other.safetensors", dir);
    if (cal) CHECK_OK(sm_calib_save(cal, path, NULL, false));
    sm_calib_free(cal);
    cal = NULL;
    CHECK_OK(sm_calib_open(path, &cal));
    sm_stats s;
    if (cal) {
        CHECK(sm_calib_tokens(cal) == 16);
        CHECK_FAIL(sm_calib_get(cal, "model.layers.0.self_attn.q_proj.weight", 256, &s),
                   SM_ERR_SHAPE, "statistics of another model?");
        CHECK_OK(sm_calib_get(cal, "model.layers.0.self_attn.q_proj.weight", 64, &s));
    }
    sm_calib_free(cal);
    sm_model_free(o);
}

// --- allocation failures -----------------------------------------------------------------------

// Child: collect, save, open, get and measure on stories260K with the k-th library allocation and
// all later ones failing (STRUCTMAT_FAIL_ALLOC_AFTER). Exit 0 on a clean SM_ERR_ALLOC, 2 when
// every step succeeded (k is past the last allocation), 1 otherwise.
static int alloc_child(const char *dir) {
    sm_model *m = NULL;
    sm_calib *cal = NULL, *rd = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/alloc.safetensors", dir);
    int32_t ids[8] = {1, 300, 301, 302, 40, 41, 42, 43};
    float W[64 * 64] = {0}, Wh[64 * 64] = {0};
    double rel;
    sm_stats s;
    sm_status st = sm_model_load("models/stories260K.bin", &m);
    if (st == SM_OK) st = sm_calib_init(m, 8, &cal);
    if (st == SM_OK) st = sm_calib_run(cal, ids, 8);
    if (st == SM_OK) st = sm_calib_save(cal, path, NULL, true);
    if (st == SM_OK) st = sm_calib_open(path, &rd);
    if (st == SM_OK) st = sm_calib_get(rd, "model.layers.1.mlp.up_proj.weight", 64, &s);
    if (st == SM_OK) st = sm_act_rel_error(W, Wh, 64, 64, s.gram, &rel);
    sm_calib_free(rd);
    sm_calib_free(cal);
    sm_model_free(m);
    if (st == SM_OK) return 2;
    if (st == SM_ERR_ALLOC && strstr(sm_last_error(), "out of memory")) return 0;
    fprintf(stderr, "%s: %s\n", sm_status_str(st), sm_last_error());
    return 1;
}

static void test_alloc_failures(const char *dir) {
    int k = 1, status = 0;
    for (; k <= 1000; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            char v[16];
            snprintf(v, sizeof v, "%d", k);
            setenv("STRUCTMAT_FAIL_ALLOC_AFTER", v, 1);
            execl("/proc/self/exe", "test_calibrate", "--alloc-child", dir, (char *)NULL);
            _exit(127);
        }
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) break;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 2 || k == 1) {
        fprintf(stderr, "allocation %d failing: child status %d (signal %d)\n", k,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        g_failures++;
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--alloc-child")) return alloc_child(argv[2]);
    char dir[] = "/tmp/test_calibrate_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    sm_model *m = NULL;
    CHECK_OK(sm_model_load(MODEL, &m));
    if (m) {
        test_collect(m, dir);
        test_fits(m, dir);
        sm_model_free(m);
    }
    test_act_rel_error();
    test_bad_files(dir);
    test_other_model(dir);
    test_alloc_failures(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) g_failures++;
    if (g_failures) fprintf(stderr, "%d failure(s)\n", g_failures);
    return g_failures ? 1 : 0;
}
