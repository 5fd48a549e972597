// The transformer runtime against PyTorch: the Shakespeare model (models/shakespeare-llama-3m,
// F32, byte-level) reproduces reference.json, written by the training script with PyTorch: the
// mean NLL of 8 chunks of 256 validation bytes and the logits after a prompt. The batched
// prefill path, token-by-token decode and chunked prefill agree; forward refuses bad input.
#include "structmat_model.h"
#include "testutil.h"

#include <cJSON.h>
#include <sys/wait.h>
#include <unistd.h>

#define MODEL "models/shakespeare-llama-3m"
#define TEXT "data/tinyshakespeare.txt"

static cJSON *g_ref;

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

static double ref_num(const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(g_ref, key);
    CHECK(cJSON_IsNumber(v));
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const cJSON *ref_arr(const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(g_ref, key);
    CHECK(cJSON_IsArray(v));
    return v;
}

// Mean NLL over 8 consecutive 256-byte chunks of the validation slice, bytes 1..255 of each
// predicted from their prefix in the chunk (no BOS), as reference.json defines it.
static void test_val_nll(const sm_model *m) {
    size_t len;
    char *text = read_all(TEXT, &len);
    CHECK(text != NULL);
    if (!text) return;
    size_t start = len - len / 10;
    CHECK(start + 8 * 256 <= len);
    sm_context *c = NULL;
    CHECK_OK(sm_context_init(m, 256, 0, &c));
    float *logits = malloc(sizeof(float) * 256 * 256); // (256 tokens, vocab 256)
    int32_t ids[256];
    double total = 0;
    int count = 0;
    for (int k = 0; k < 8 && c; k++) {
        for (int t = 0; t < 256; t++) ids[t] = (unsigned char)text[start + (size_t)k * 256 + t];
        CHECK_OK(sm_context_rewind(c, 0));
        CHECK_OK(sm_context_forward(c, ids, 256, SM_LOGITS_ALL, logits));
        for (int t = 1; t < 256; t++) {
            const float *row = logits + (t - 1) * 256;
            total += sm_logsumexp(row, 256) - row[ids[t]];
            count++;
        }
    }
    double nll = total / count, want = ref_num("nll_first_8x256_val_bytes");
    if (getenv("SM_VERBOSE")) fprintf(stderr, "nll %.8f ref %.8f\n", nll, want);
    CHECK(count == 2040);
    if (!(fabs(nll - want) <= 1e-4)) {
        fprintf(stderr, "validation NLL %.7f, reference %.7f\n", nll, want);
        g_failures++;
    }
    free(logits);
    sm_context_free(c);
    free(text);
}

static void test_prompt(const sm_model *m) {
    const char *prompt =
        ((const cJSON *)cJSON_GetObjectItemCaseSensitive(g_ref, "prompt"))->valuestring;
    sm_tokenizer *tok = NULL;
    CHECK_OK(sm_tokenizer_load_for_model(MODEL, m, &tok));
    if (!tok) return;
    CHECK(sm_tokenizer_vocab_size(tok) == 256 && sm_tokenizer_bos(tok) == -1);
    int32_t *ids = NULL;
    int64_t n = 0;
    CHECK_OK(sm_tokenizer_encode(tok, prompt, strlen(prompt), true, &ids, &n));
    CHECK(n == (int64_t)strlen(prompt) && ids && ids[0] == 'R');
    sm_context *c = NULL;
    CHECK_OK(sm_context_init(m, 0, 0, &c));
    CHECK(sm_context_size(c) == 256);
    float last[256], all[17 * 256], step[256];
    CHECK(n == 17);
    CHECK_OK(sm_context_forward(c, ids, n, SM_LOGITS_LAST, last));
    CHECK(sm_context_pos(c) == n);

    int32_t top[5];
    sm_topk(last, 256, 5, top);
    const cJSON *want_top = ref_arr("prompt_next_byte_top5");
    for (int i = 0; i < 5; i++) {
        int w = cJSON_GetArrayItem(want_top, i)->valueint;
        if (top[i] != w) {
            fprintf(stderr, "top-5[%d] = %d, reference %d\n", i, top[i], w);
            g_failures++;
        }
    }
    const cJSON *want_logits = ref_arr("prompt_last_logits_first8");
    for (int i = 0; i < 8; i++) {
        double w = cJSON_GetArrayItem(want_logits, i)->valuedouble;
        if (!(fabs(last[i] - w) <= 1e-4)) {
            fprintf(stderr, "logit[%d] = %.6f, reference %.6f\n", i, last[i], w);
            g_failures++;
        }
    }

    // The same prompt as one batch with every row's logits, then one token at a time (decode,
    // N = 1 GEMVs), then in uneven steps of a small batch: the same logits to rounding.
    CHECK_OK(sm_context_rewind(c, 0));
    CHECK_OK(sm_context_forward(c, ids, n, SM_LOGITS_ALL, all));
    check_close("last row of all vs last", all + 16 * 256, last, 256, 2e-6);
    CHECK_OK(sm_context_rewind(c, 0));
    double worst = 0;
    for (int64_t t = 0; t < n; t++) {
        CHECK_OK(sm_context_forward(c, ids + t, 1, SM_LOGITS_LAST, step));
        check_close("decode vs prefill", step, all + t * 256, 256, 2e-6);
        for (int i = 0; i < 256; i++) worst = fmax(worst, fabs(step[i] - all[t * 256 + i]));
    }
    CHECK(worst < 1e-4);
    if (getenv("SM_VERBOSE")) fprintf(stderr, "decode vs prefill: max abs diff %.3g\n", worst);
    sm_context *small = NULL;
    CHECK_OK(sm_context_init(m, 64, 5, &small)); // 17 tokens in steps of 5, 5, 5, 2
    if (small) {
        float chunked[17 * 256];
        CHECK_OK(sm_context_forward(small, ids, n, SM_LOGITS_ALL, chunked));
        check_close("chunked prefill vs one batch", chunked, all, 17 * 256, 2e-6);
        // Rewinding keeps the prefix: re-running the tail gives its logits again.
        CHECK_OK(sm_context_rewind(small, 10));
        CHECK_OK(sm_context_forward(small, ids + 10, n - 10, SM_LOGITS_LAST, step));
        check_close("rewind to 10 and finish", step, all + 16 * 256, 256, 2e-6);
        CHECK_FAIL(sm_context_rewind(small, 18), SM_ERR_ARG, "holds 17 tokens");
        // No logits: the cache fills all the same.
        CHECK_OK(sm_context_rewind(small, 0));
        CHECK_OK(sm_context_forward(small, ids, n - 1, SM_LOGITS_NONE, NULL));
        CHECK_OK(sm_context_forward(small, ids + n - 1, 1, SM_LOGITS_LAST, step));
        check_close("cache filled without logits", step, all + 16 * 256, 256, 2e-6);
        sm_context_free(small);
    }
    free(ids);
    sm_tokenizer_free(tok);
    sm_context_free(c);
}

static void test_forward_errors(sm_model *m) {
    sm_context *c = NULL;
    CHECK_FAIL(sm_context_init(m, 257, 0, &c), SM_ERR_ARG, "longer than the model's 256");
    CHECK_OK(sm_context_init(m, 16, 0, &c));
    if (!c) return;
    int32_t ids[17] = {0};
    float logits[256];
    CHECK_FAIL(sm_context_forward(c, ids, 17, SM_LOGITS_LAST, logits), SM_ERR_ARG,
               "exceed the context of 16 tokens");
    CHECK_FAIL(sm_context_forward(c, ids, 0, SM_LOGITS_LAST, logits), SM_ERR_ARG,
               "empty token list");
    ids[3] = 256;
    CHECK_FAIL(sm_context_forward(c, ids, 5, SM_LOGITS_LAST, logits), SM_ERR_ARG,
               "token id 256 at index 3 is outside the vocabulary (0..255)");
    ids[3] = -1;
    CHECK_FAIL(sm_context_forward(c, ids, 5, SM_LOGITS_LAST, logits), SM_ERR_ARG,
               "token id -1 at index 3");
    CHECK_FAIL(sm_context_forward(c, ids, 2, SM_LOGITS_LAST, NULL), SM_ERR_ARG, "no buffer");
    CHECK(sm_context_pos(c) == 0); // failed calls change nothing
    ids[3] = 0;
    CHECK_OK(sm_context_forward(c, ids, 10, SM_LOGITS_NONE, NULL));
    CHECK_FAIL(sm_context_forward(c, ids, 7, SM_LOGITS_LAST, logits), SM_ERR_ARG,
               "7 tokens at position 10 exceed the context of 16 tokens");
    CHECK_OK(sm_context_forward(c, ids, 6, SM_LOGITS_LAST, logits));
    CHECK(sm_context_pos(c) == 16);
    // The model's operators cannot change under a live context.
    sm_op *op = NULL;
    float w[256 * 256] = {0};
    CHECK_OK(sm_op_fit(w, 256, 256, "dense", NULL, &op));
    CHECK_FAIL(sm_model_linear_set(m, 0, op), SM_ERR_ARG, "while 1 context(s)");
    sm_op_free(op);
    sm_context_free(c);
}

static void test_info(const sm_model *m) {
    sm_model_info f;
    sm_model_get_info(m, &f);
    CHECK(!strcmp(f.arch, "llama") && !strcmp(f.format, "safetensors"));
    CHECK(f.dim == 256 && f.hidden_dim == 768 && f.n_layers == 4 && f.n_heads == 8 &&
          f.n_kv_heads == 4 && f.head_dim == 32 && f.vocab_size == 256 && f.max_seq_len == 256);
    CHECK(f.rope_layout == SM_ROPE_HALF && !f.tied && !f.qkv_bias);
    CHECK(f.bos_id == -1 && f.eos_id == -1);
    CHECK(f.n_linear == 29);
    // reference.json's parameter count: linear layers + embedding + norms.
    int64_t params = f.linear_params + f.embed_bytes / 4 + f.other_bytes / 4;
    CHECK(params == (int64_t)ref_num("params"));
    CHECK(f.linear_bytes == 4 * f.linear_params);
    CHECK(!strcmp(sm_model_linear_name(m, 0), "model.layers.0.self_attn.q_proj.weight"));
    CHECK(!strcmp(sm_model_linear_name(m, 13), "model.layers.1.mlp.down_proj.weight"));
    CHECK(!strcmp(sm_model_linear_name(m, 28), "lm_head.weight"));
    CHECK(!strcmp(sm_op_spec(sm_model_linear(m, 5)), "dense"));
    CHECK(sm_op_rows(sm_model_linear(m, 1)) == 128 && sm_op_cols(sm_model_linear(m, 6)) == 768);
}

// --- allocation failures -----------------------------------------------------------------------

// Child: load a model, make a context, run a prefill and a decode step, sample, tokenize; the
// k-th library allocation and all later ones fail (STRUCTMAT_FAIL_ALLOC_AFTER). Exit 0 on a clean
// SM_ERR_ALLOC, 2 when every step succeeded (k is past the last allocation), 1 otherwise.
static int alloc_child(const char *path) {
    sm_model *m = NULL;
    sm_context *c = NULL;
    sm_sampler *smp = NULL;
    sm_tokenizer *tok = NULL;
    int32_t *ids = NULL, next;
    int64_t n = 0;
    float logits[512];
    sm_status s = sm_model_load(path, &m);
    if (s == SM_OK) s = sm_context_init(m, 32, 4, &c);
    if (s == SM_OK)
        s = sm_context_forward(c, (int32_t[6]){1, 2, 3, 4, 5, 6}, 6, SM_LOGITS_LAST, logits);
    if (s == SM_OK)
        s = sm_sampler_init(&(sm_sampler_params){.temperature = 1, .top_p = 0.9f, .seed = 1}, 256,
                            &smp);
    if (s == SM_OK) {
        next = sm_sampler_sample(smp, logits);
        s = sm_context_forward(c, &next, 1, SM_LOGITS_LAST, logits);
    }
    if (s == SM_OK) s = sm_tokenizer_init_bytes(&tok);
    if (s == SM_OK) s = sm_tokenizer_encode(tok, "abc", 3, true, &ids, &n);
    free(ids);
    sm_tokenizer_free(tok);
    sm_sampler_free(smp);
    sm_context_free(c);
    sm_model_free(m);
    if (s == SM_OK) return 2;
    if (s == SM_ERR_ALLOC && strstr(sm_last_error(), "out of memory")) return 0;
    fprintf(stderr, "%s: %s: %s\n", path, sm_status_str(s), sm_last_error());
    return 1;
}

static void test_alloc_failures(void) {
    const char *paths[] = {"models/stories260K.bin", MODEL};
    for (size_t p = 0; p < 2; p++) {
        int k = 1, status = 0;
        for (; k <= 1000; k++) {
            pid_t pid = fork();
            if (pid == 0) {
                char v[16];
                snprintf(v, sizeof v, "%d", k);
                setenv("STRUCTMAT_FAIL_ALLOC_AFTER", v, 1);
                execl("/proc/self/exe", "test_model", "--alloc-child", paths[p], (char *)NULL);
                _exit(127);
            }
            CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) break;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 2 || k == 1) {
            fprintf(stderr, "%s with allocation %d failing: child status %d (signal %d)\n",
                    paths[p], k, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                    WIFSIGNALED(status) ? WTERMSIG(status) : 0);
            g_failures++;
        }
        if (getenv("SM_VERBOSE")) fprintf(stderr, "%s: %d allocations\n", paths[p], k - 1);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--alloc-child")) return alloc_child(argv[2]);
    size_t len;
    char *json = read_all(MODEL "/reference.json", &len);
    g_ref = json ? cJSON_Parse(json) : NULL;
    free(json);
    CHECK(g_ref != NULL);
    sm_model *m = NULL;
    CHECK_OK(sm_model_load(MODEL, &m));
    if (m && g_ref) {
        test_info(m);
        test_val_nll(m);
        test_prompt(m);
        test_forward_errors(m);
        test_alloc_failures();
    }
    sm_model_free(m);
    cJSON_Delete(g_ref);
    TEST_END();
}
