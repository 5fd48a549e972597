// One model, every checkpoint form: the Shakespeare model written again as safetensors F32 (one
// file), sharded (two files + index), BF16 and F16, as llama2.c version 0 and version 1 files
// (q/k rows permuted to Meta's interleaved RoPE order), and as a structmat checkpoint holding
// fitted operators, gives the same logits as the original (exactly for the F32 forms). A tiny
// random Qwen2-style model (q/k/v biases, tied head, head_dim != dim / heads, rope_theta from the
// config) matches a plain double-precision forward written here. Bad checkpoints are refused with
// messages naming the problem.
#include "structmat_model.h"
#include "testutil.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL "models/shakespeare-llama-3m"
#define PROMPT "ROMEO:\nWhat light"
#define T 17 // prompt tokens
#define V 256

static char g_dir[64];

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static char *path_in(const char *sub, const char *file) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    if (file)
        snprintf(p, 512, "%s/%s/%s", g_dir, sub, file);
    else
        snprintf(p, 512, "%s/%s", g_dir, sub);
    return p;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

// --- the Shakespeare model's tensors, as F32 -----------------------------------------------------

typedef struct tensor {
    char name[96];
    int ndim;
    int64_t shape[2];
    float *data;
    int64_t n;
} tensor;

static tensor g_t[64];
static int g_nt;

static const tensor *find(const char *name) {
    for (int i = 0; i < g_nt; i++)
        if (!strcmp(g_t[i].name, name)) return &g_t[i];
    fprintf(stderr, "no tensor %s\n", name);
    g_failures++;
    return NULL;
}

static void read_all_tensors(void) {
    sm_st *st = NULL;
    CHECK_OK(sm_st_open(MODEL, &st));
    for (int i = 0; st && i < sm_st_count(st) && g_nt < 64; i++) {
        const sm_tensor_info *ti = sm_st_get(st, i);
        tensor *t = &g_t[g_nt++];
        snprintf(t->name, sizeof t->name, "%s", ti->name);
        t->ndim = ti->ndim;
        t->shape[0] = ti->shape[0];
        t->shape[1] = ti->ndim > 1 ? ti->shape[1] : 1;
        CHECK_OK(sm_st_read_f32(st, ti->name, &t->data, &t->n));
    }
    sm_st_close(st);
}

static const char *k_config =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 256, "
    "\"intermediate_size\": 768, \"num_hidden_layers\": 4, \"num_attention_heads\": 8, "
    "\"num_key_value_heads\": 4, \"head_dim\": 32, \"hidden_act\": \"silu\", \"rms_norm_eps\": "
    "1e-05, \"rope_theta\": 10000.0, \"max_position_embeddings\": 256, \"vocab_size\": 256, "
    "\"tie_word_embeddings\": false}";

// Writes the tensors [i0, i1) of g_t (all when i1 = 0) to path in dtype (F32, F16 or BF16).
static void write_st(const char *path, sm_dtype dtype, int i0, int i1) {
    if (!i1) i1 = g_nt;
    sm_st_writer *w = sm_st_writer_init();
    uint16_t *half[64] = {0};
    for (int i = i0; i < i1; i++) {
        const tensor *t = &g_t[i];
        const void *data = t->data;
        size_t es = 4;
        if (dtype != SM_DTYPE_F32) {
            half[i] = malloc((size_t)t->n * 2);
            for (int64_t j = 0; j < t->n; j++)
                half[i][j] =
                    dtype == SM_DTYPE_BF16 ? sm_f32_to_bf16(t->data[j]) : sm_f32_to_f16(t->data[j]);
            data = half[i];
            es = 2;
        }
        CHECK_OK(sm_st_writer_add(w, t->name, dtype, t->ndim, t->shape, data, (size_t)t->n * es));
    }
    CHECK_OK(sm_st_writer_write(w, path, false));
    sm_st_writer_free(w);
    for (int i = 0; i < 64; i++) free(half[i]);
}

static void make_hf_dir(const char *sub, const char *config) {
    mkdir(path_in(sub, NULL), 0755);
    write_text(path_in(sub, "config.json"), config ? config : k_config);
}

// logits (T, V) of the prompt, prefilled in one batch; 0 on failure to load.
static int prompt_logits(const char *path, float *logits, sm_model_info *info) {
    sm_model *m = NULL;
    sm_status s = sm_model_load(path, &m);
    if (s != SM_OK) {
        fprintf(stderr, "load %s: %s\n", path, sm_last_error());
        g_failures++;
        return 0;
    }
    if (info) sm_model_get_info(m, info);
    sm_context *c = NULL;
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (unsigned char)PROMPT[i];
    CHECK_OK(sm_context_init(m, 64, 0, &c));
    if (c) CHECK_OK(sm_context_forward(c, ids, T, SM_LOGITS_ALL, logits));
    sm_context_free(c);
    sm_model_free(m);
    return c != NULL;
}

// --- llama2.c files ------------------------------------------------------------------------------

static void put(FILE *f, const float *x, int64_t n) {
    CHECK(fwrite(x, sizeof(float), (size_t)n, f) == (size_t)n);
}

// The L matrices "model.layers.l.<name>" back to back; q and k rows permuted from Hugging Face's
// rotate-half order to Meta's interleaved pairs (heads of hd rows: row j half + i -> 2 i + j).
static void put_layers(FILE *f, const char *name, int heads) {
    for (int l = 0; l < 4; l++) {
        char full[96];
        snprintf(full, sizeof full, "model.layers.%d.%s", l, name);
        const tensor *t = find(full);
        if (!t) return;
        if (!heads) {
            put(f, t->data, t->n);
            continue;
        }
        int64_t hd = t->shape[0] / heads, half = hd / 2, cols = t->shape[1];
        float *p = malloc(sizeof(float) * (size_t)t->n);
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < 2; j++)
                for (int64_t i = 0; i < half; i++)
                    memcpy(p + (h * hd + 2 * i + j) * cols,
                           t->data + (h * hd + j * half + i) * cols, sizeof(float) * (size_t)cols);
        put(f, p, t->n);
        free(p);
    }
}

static void put_norms(FILE *f, const char *name) {
    put_layers(f, name, 0);
}

static void write_llama2c(const char *path, int version) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    int32_t hdr[7] = {256, 768, 4, 8, 4, version == 0 ? -256 : 256, 256};
    if (version == 1) {
        uint32_t magic = 0x616b3432;
        int32_t v = 1;
        fwrite(&magic, 4, 1, f);
        fwrite(&v, 4, 1, f);
        fwrite(hdr, 4, 7, f);
        unsigned char pad[256 - 36] = {0}; // shared_classifier = 0, then zeros
        fwrite(pad, 1, sizeof pad, f);
        put_norms(f, "input_layernorm.weight");
        put_norms(f, "post_attention_layernorm.weight");
        put(f, find("model.norm.weight")->data, 256);
        put(f, find("model.embed_tokens.weight")->data, 256 * 256);
    } else {
        fwrite(hdr, 4, 7, f);
        put(f, find("model.embed_tokens.weight")->data, 256 * 256);
        put_norms(f, "input_layernorm.weight");
    }
    put_layers(f, "self_attn.q_proj.weight", 8);
    put_layers(f, "self_attn.k_proj.weight", 4);
    put_layers(f, "self_attn.v_proj.weight", 0);
    put_layers(f, "self_attn.o_proj.weight", 0);
    if (version == 0) put_norms(f, "post_attention_layernorm.weight");
    put_layers(f, "mlp.gate_proj.weight", 0); // w1
    put_layers(f, "mlp.down_proj.weight", 0); // w2
    put_layers(f, "mlp.up_proj.weight", 0);   // w3
    if (version == 0) {
        put(f, find("model.norm.weight")->data, 256);
        float *freq = calloc(256 * 16, sizeof(float)); // legacy RoPE tables: ignored by readers
        put(f, freq, 256 * 16);
        put(f, freq, 256 * 16);
        free(freq);
    }
    put(f, find("lm_head.weight")->data, 256 * 256);
    fclose(f);
}

// --- the forms against the original --------------------------------------------------------------

static void test_forms(void) {
    static float ref[T * V], got[T * V], rounded[T * V];
    sm_model_info fi;
    if (!prompt_logits(MODEL, ref, NULL)) return;

    make_hf_dir("f32", NULL);
    write_st(path_in("f32", "model.safetensors"), SM_DTYPE_F32, 0, 0);
    if (prompt_logits(path_in("f32", NULL), got, &fi)) check_close("F32 file", got, ref, T * V, 0);
    // The .safetensors path itself, config.json found next to it.
    if (prompt_logits(path_in("f32", "model.safetensors"), got, NULL))
        check_close("F32 file by path", got, ref, T * V, 0);

    make_hf_dir("sharded", NULL);
    int half = g_nt / 2;
    write_st(path_in("sharded", "model-00001-of-00002.safetensors"), SM_DTYPE_F32, 0, half);
    write_st(path_in("sharded", "model-00002-of-00002.safetensors"), SM_DTYPE_F32, half, g_nt);
    char index[8192];
    size_t len = (size_t)snprintf(index, sizeof index, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < g_nt; i++)
        len += (size_t)snprintf(index + len, sizeof index - len,
                                "%s\"%s\": \"model-0000%d-of-00002"
                                ".safetensors\"",
                                i ? ", " : "", g_t[i].name, i < half ? 1 : 2);
    snprintf(index + len, sizeof index - len, "}}");
    write_text(path_in("sharded", "model.safetensors.index.json"), index);
    if (prompt_logits(path_in("sharded", NULL), got, NULL))
        check_close("sharded", got, ref, T * V, 0);

    write_llama2c(path_in("v0.bin", NULL), 0);
    if (prompt_logits(path_in("v0.bin", NULL), got, &fi)) {
        check_close("llama2.c version 0", got, ref, T * V, 0);
        CHECK(fi.rope_layout == SM_ROPE_INTERLEAVED && !fi.tied && !strcmp(fi.format, "llama2c"));
    }
    write_llama2c(path_in("v1.bin", NULL), 1);
    if (prompt_logits(path_in("v1.bin", NULL), got, NULL))
        check_close("llama2.c version 1", got, ref, T * V, 0);

    // BF16 and F16: operators keep the stored dtype; the logits are those of the F32 model
    // whose weights are rounded the same way (to kernel rounding), and near the original's.
    for (int k = 0; k < 2; k++) {
        sm_dtype dt = k ? SM_DTYPE_F16 : SM_DTYPE_BF16;
        const char *sub = k ? "f16" : "bf16", *rsub = k ? "f16r" : "bf16r";
        make_hf_dir(sub, NULL);
        write_st(path_in(sub, "model.safetensors"), dt, 0, 0);
        for (int i = 0; i < g_nt; i++)
            for (int64_t j = 0; j < g_t[i].n; j++) {
                float x = g_t[i].data[j];
                g_t[i].data[j] =
                    k ? sm_f16_to_f32(sm_f32_to_f16(x)) : sm_bf16_to_f32(sm_f32_to_bf16(x));
                (void)x;
            }
        make_hf_dir(rsub, NULL);
        write_st(path_in(rsub, "model.safetensors"), SM_DTYPE_F32, 0, 0);
        for (int i = 0; i < g_nt; i++) free(g_t[i].data);
        g_nt = 0; // restore the exact weights
        read_all_tensors();
        if (!prompt_logits(path_in(rsub, NULL), rounded, NULL) ||
            !prompt_logits(path_in(sub, NULL), got, &fi))
            continue;
        check_close(k ? "F16 vs rounded F32" : "BF16 vs rounded F32", got, rounded, T * V, 2e-6);
        check_close(k ? "F16 vs F32" : "BF16 vs F32", got, ref, T * V, k ? 5e-3 : 5e-2);
        if (getenv("SM_VERBOSE"))
            fprintf(stderr, "%s: rel fro vs F32 %.3g\n", sub, rel_fro(got, ref, T * V));
        CHECK(fi.linear_bytes == 2 * fi.linear_params && fi.embed_bytes == 2 * 256 * 256);
        sm_model *m = NULL;
        CHECK_OK(sm_model_load(path_in(sub, NULL), &m));
        if (m) {
            CHECK(!strcmp(sm_op_spec(sm_model_linear(m, 3)),
                          k ? "dense:dtype=f16" : "dense:dtype=bf16"));
            CHECK(sm_op_nbytes(sm_model_linear(m, 28)) == 2 * 256 * 256);
        }
        sm_model_free(m);
    }
}

// A structmat checkpoint: some matrices stored as fitted operators (parts + metadata), the rest
// plain. The loaded model runs those operators as they are: its logits equal those of the
// original model with the same operators put in by sm_model_linear_set.
static void test_operator_checkpoint(void) {
    const int k = 3;
    const int idx[3] = {0, 13, 28}; // layer 0 q_proj, layer 1 down_proj, lm_head
    const char *spec[3] = {"lowrank:rank=16", "dense:dtype=q8", "lowrank:rank=32+dense:dtype=q4"};
    sm_model *orig = NULL;
    CHECK_OK(sm_model_load(MODEL, &orig));
    if (!orig) return;
    sm_op *ops[3] = {0}, *copy[3] = {0};
    sm_st_writer *w = sm_st_writer_init();
    CHECK_OK(sm_st_writer_meta(w, "structmat.format_version", "1"));
    sm_part *parts[3] = {0};
    char names[3][16][128];
    for (int i = 0; i < g_nt; i++) {
        bool stored_as_op = false;
        for (int j = 0; j < k; j++)
            stored_as_op |= !strcmp(g_t[i].name, sm_model_linear_name(orig, idx[j]));
        if (!stored_as_op)
            CHECK_OK(sm_st_writer_add(w, g_t[i].name, SM_DTYPE_F32, g_t[i].ndim, g_t[i].shape,
                                      g_t[i].data, (size_t)g_t[i].n * 4));
    }
    for (int j = 0; j < k; j++) {
        const char *name = sm_model_linear_name(orig, idx[j]);
        const tensor *t = find(name);
        if (!t) return;
        CHECK_OK(sm_op_fit(t->data, t->shape[0], t->shape[1], spec[j], NULL, &ops[j]));
        CHECK_OK(sm_op_fit(t->data, t->shape[0], t->shape[1], spec[j], NULL, &copy[j]));
        int np = 0;
        CHECK_OK(sm_op_parts(ops[j], &parts[j], &np));
        for (int p = 0; p < np && p < 16; p++) {
            snprintf(names[j][p], sizeof names[j][p], "%s.%s", name, parts[j][p].name);
            CHECK_OK(sm_st_writer_add(w, names[j][p], parts[j][p].dtype, parts[j][p].ndim,
                                      parts[j][p].shape, parts[j][p].data, parts[j][p].nbytes));
        }
        char key[160], shape[32];
        snprintf(key, sizeof key, "structmat.spec.%s", name);
        CHECK_OK(sm_st_writer_meta(w, key, sm_op_spec(ops[j])));
        snprintf(key, sizeof key, "structmat.shape.%s", name);
        snprintf(shape, sizeof shape, "%lld,%lld", (long long)t->shape[0], (long long)t->shape[1]);
        CHECK_OK(sm_st_writer_meta(w, key, shape));
    }
    make_hf_dir("ops", NULL);
    CHECK_OK(sm_st_writer_write(w, path_in("ops", "model.safetensors"), false));
    sm_st_writer_free(w);
    for (int j = 0; j < k; j++) {
        free(parts[j]);
        sm_op_free(ops[j]);
    }

    static float got[T * V], want[T * V];
    sm_model *m = NULL;
    CHECK_OK(sm_model_load(path_in("ops", NULL), &m));
    if (m) {
        for (int j = 0; j < k; j++)
            CHECK(!strcmp(sm_op_spec(sm_model_linear(m, idx[j])), sm_op_spec(copy[j])));
        sm_model_info fi;
        sm_model_get_info(m, &fi);
        CHECK(fi.linear_bytes < 4 * fi.linear_params); // q8 and q4 parts count as what they are
        sm_model_free(m);
    }
    // The original with the same operators set in memory.
    CHECK_FAIL(sm_model_linear_set(orig, 1, copy[0]), SM_ERR_SHAPE, "must be 128x256");
    CHECK_FAIL(sm_model_linear_set(orig, 29, copy[0]), SM_ERR_ARG, "no such layer");
    for (int j = 0; j < k; j++) CHECK_OK(sm_model_linear_set(orig, idx[j], copy[j]));
    sm_context *c = NULL;
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (unsigned char)PROMPT[i];
    CHECK_OK(sm_context_init(orig, 64, 0, &c));
    if (c) CHECK_OK(sm_context_forward(c, ids, T, SM_LOGITS_ALL, want));
    sm_context_free(c);
    sm_model_free(orig);
    if (prompt_logits(path_in("ops", NULL), got, NULL))
        check_close("operator checkpoint vs operators set in memory", got, want, T * V, 0);
}

// --- a tiny random Qwen2-style model against a double-precision forward --------------------------

enum {
    TD = 24,
    TH = 40,
    TL = 2,
    TNH = 4,
    TKV = 2,
    THD = 8,
    TV = 50,
    TQ = TNH * THD,
    TK = TKV * THD
};
#define THETA 5000.0
#define EPS 1e-6

typedef struct tiny {
    float emb[TV * TD], norm_a[TL][TD], norm_f[TL][TD], norm[TD];
    float wq[TL][TQ * TD], wk[TL][TK * TD], wv[TL][TK * TD], wo[TL][TD * TQ];
    float bq[TL][TQ], bk[TL][TK], bv[TL][TK];
    float wg[TL][TH * TD], wu[TL][TH * TD], wd[TL][TD * TH];
} tiny;

static void rmsnorm_d(double *o, const double *x, const float *w, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + EPS);
    for (int i = 0; i < n; i++) o[i] = w[i] * x[i] * s;
}

// y (m) = W (m, n) x (n) + b
static void matvec_d(double *y, const float *W, const double *x, int m, int n, const float *b) {
    for (int i = 0; i < m; i++) {
        double a = b ? b[i] : 0;
        for (int j = 0; j < n; j++) a += (double)W[i * n + j] * x[j];
        y[i] = a;
    }
}

static void rope_d(double *v, int heads, int pos) {
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < THD / 2; i++) {
            double a = pos / pow(THETA, 2.0 * i / THD), c = cos(a), s = sin(a);
            double *x = v + h * THD, x0 = x[i], x1 = x[i + THD / 2];
            x[i] = x0 * c - x1 * s;
            x[i + THD / 2] = x1 * c + x0 * s;
        }
}

static void tiny_reference(const tiny *w, const int32_t *tok, int n, double *logits) {
    double x[16][TD], xb[TD], q[16][TQ], k[16][TK], v[16][TK], att[TQ], o[TD], g[TH], u[TH];
    for (int t = 0; t < n; t++)
        for (int i = 0; i < TD; i++) x[t][i] = w->emb[tok[t] * TD + i];
    for (int l = 0; l < TL; l++) {
        for (int t = 0; t < n; t++) {
            rmsnorm_d(xb, x[t], w->norm_a[l], TD);
            matvec_d(q[t], w->wq[l], xb, TQ, TD, w->bq[l]);
            matvec_d(k[t], w->wk[l], xb, TK, TD, w->bk[l]);
            matvec_d(v[t], w->wv[l], xb, TK, TD, w->bv[l]);
            rope_d(q[t], TNH, t);
            rope_d(k[t], TKV, t);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < TNH; h++) {
                int kh = h / (TNH / TKV);
                double sc[16], mx = -1e300, sum = 0;
                for (int s = 0; s <= t; s++) {
                    sc[s] = 0;
                    for (int d = 0; d < THD; d++) sc[s] += q[t][h * THD + d] * k[s][kh * THD + d];
                    sc[s] /= sqrt((double)THD);
                    mx = fmax(mx, sc[s]);
                }
                for (int s = 0; s <= t; s++) sum += (sc[s] = exp(sc[s] - mx));
                for (int d = 0; d < THD; d++) {
                    double a = 0;
                    for (int s = 0; s <= t; s++) a += sc[s] / sum * v[s][kh * THD + d];
                    att[h * THD + d] = a;
                }
            }
            matvec_d(o, w->wo[l], att, TD, TQ, NULL);
            for (int i = 0; i < TD; i++) x[t][i] += o[i];
        }
        for (int t = 0; t < n; t++) {
            rmsnorm_d(xb, x[t], w->norm_f[l], TD);
            matvec_d(g, w->wg[l], xb, TH, TD, NULL);
            matvec_d(u, w->wu[l], xb, TH, TD, NULL);
            for (int i = 0; i < TH; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            matvec_d(o, w->wd[l], g, TD, TH, NULL);
            for (int i = 0; i < TD; i++) x[t][i] += o[i];
        }
    }
    for (int t = 0; t < n; t++) {
        rmsnorm_d(xb, x[t], w->norm, TD);
        for (int i = 0; i < TV; i++) {
            double a = 0;
            for (int j = 0; j < TD; j++) a += (double)w->emb[i * TD + j] * xb[j];
            logits[t * TV + i] = a;
        }
    }
}

static void test_tiny_qwen2(void) {
    static tiny w;
    fill_random(w.emb, TV * TD, 1);
    for (int l = 0; l < TL; l++) {
        float *mats[] = {w.wq[l], w.wk[l], w.wv[l], w.wo[l], w.wg[l], w.wu[l], w.wd[l]};
        int64_t sizes[] = {TQ * TD, TK * TD, TK * TD, TD * TQ, TH * TD, TH * TD, TD * TH};
        for (int j = 0; j < 7; j++) {
            fill_random(mats[j], sizes[j], 10 + 10 * l + j);
            for (int64_t i = 0; i < sizes[j]; i++) mats[j][i] *= 0.4f;
        }
        fill_random(w.bq[l], TQ, 100 + l);
        fill_random(w.bk[l], TK, 110 + l);
        fill_random(w.bv[l], TK, 120 + l);
        fill_random(w.norm_a[l], TD, 130 + l);
        fill_random(w.norm_f[l], TD, 140 + l);
        for (int i = 0; i < TD; i++) w.norm_a[l][i] += 1.5f, w.norm_f[l][i] += 1.5f;
    }
    fill_random(w.norm, TD, 150);
    for (int i = 0; i < TD; i++) w.norm[i] += 1.5f;

    sm_st_writer *wr = sm_st_writer_init();
    char names[64][96];
    int nn = 0;
#define ADD(data, r, c)                                                                            \
    do {                                                                                           \
        int64_t shp[2] = {(r), (c)};                                                               \
        CHECK_OK(sm_st_writer_add(wr, names[nn], SM_DTYPE_F32, (c) ? 2 : 1, shp, (data),           \
                                  sizeof(float) * (size_t)((r) * ((c) ? (c) : 1))));               \
        nn++;                                                                                      \
    } while (0)
    snprintf(names[nn], 96, "model.embed_tokens.weight");
    ADD(w.emb, TV, TD);
    snprintf(names[nn], 96, "model.norm.weight");
    ADD(w.norm, TD, 0);
    for (int l = 0; l < TL; l++) {
        const char *mn[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                            "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                            "mlp.down_proj"};
        float *md[] = {w.wq[l], w.wk[l], w.wv[l], w.wo[l], w.wg[l], w.wu[l], w.wd[l]};
        int64_t mr[] = {TQ, TK, TK, TD, TH, TH, TD}, mc[] = {TD, TD, TD, TQ, TD, TD, TH};
        for (int j = 0; j < 7; j++) {
            snprintf(names[nn], 96, "model.layers.%d.%s.weight", l, mn[j]);
            ADD(md[j], mr[j], mc[j]);
        }
        float *bd[] = {w.bq[l], w.bk[l], w.bv[l]};
        int64_t br[] = {TQ, TK, TK};
        for (int j = 0; j < 3; j++) {
            snprintf(names[nn], 96, "model.layers.%d.%s.bias", l, mn[j]);
            ADD(bd[j], br[j], 0);
        }
        snprintf(names[nn], 96, "model.layers.%d.input_layernorm.weight", l);
        ADD(w.norm_a[l], TD, 0);
        snprintf(names[nn], 96, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(w.norm_f[l], TD, 0);
    }
#undef ADD
    char config[1024];
    snprintf(config, sizeof config,
             "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", "
             "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
             "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
             "\"rms_norm_eps\": %g, \"rope_theta\": %g, \"max_position_embeddings\": 64, "
             "\"vocab_size\": %d, \"tie_word_embeddings\": true, \"bos_token_id\": 3, "
             "\"eos_token_id\": 4, \"use_sliding_window\": false, \"rope_scaling\": null}",
             TD, TH, TL, TNH, TKV, THD, EPS, THETA, TV);
    make_hf_dir("qwen2", config);
    CHECK_OK(sm_st_writer_write(wr, path_in("qwen2", "model.safetensors"), false));
    sm_st_writer_free(wr);

    const int n = 12;
    int32_t tok[12] = {3, 17, 0, 49, 22, 22, 5, 31, 8, 40, 13, 4};
    double want[12 * TV];
    tiny_reference(&w, tok, n, want);
    float wantf[12 * TV], got[12 * TV];
    for (int i = 0; i < n * TV; i++) wantf[i] = (float)want[i];
    sm_model *m = NULL;
    CHECK_OK(sm_model_load(path_in("qwen2", NULL), &m));
    if (!m) return;
    sm_model_info fi;
    sm_model_get_info(m, &fi);
    CHECK(!strcmp(fi.arch, "qwen2") && fi.qkv_bias && fi.tied && fi.head_dim == THD &&
          fi.bos_id == 3 && fi.eos_id == 4 && fi.rope_theta == THETA && fi.embed_bytes == 0);
    sm_context *c = NULL;
    CHECK_OK(sm_context_init(m, 0, 5, &c)); // steps of 5, 5, 2
    if (c) {
        CHECK_OK(sm_context_forward(c, tok, n, SM_LOGITS_ALL, got));
        check_close("tiny qwen2 vs double reference", got, wantf, n * TV, 2e-6);
        CHECK_OK(sm_context_rewind(c, 0));
        for (int t = 0; t < n; t++) {
            CHECK_OK(sm_context_forward(c, tok + t, 1, SM_LOGITS_LAST, got));
            check_close("tiny qwen2 decode vs double reference", got, wantf + t * TV, TV, 2e-6);
        }
        sm_context_free(c);
    }
    sm_model_free(m);
}

// --- bad checkpoints -----------------------------------------------------------------------------

// A directory with k_config edited (from -> to) and a link to the real weights.
static void edited_dir(const char *sub, const char *from, const char *to) {
    char config[2048];
    const char *at = strstr(k_config, from);
    CHECK(at != NULL);
    if (!at) return;
    snprintf(config, sizeof config, "%.*s%s%s", (int)(at - k_config), k_config, to,
             at + strlen(from));
    make_hf_dir(sub, config);
    char target[512];
    CHECK(realpath(MODEL "/model.safetensors", target) != NULL);
    CHECK(symlink(target, path_in(sub, "model.safetensors")) == 0);
}

static void config_case(const char *sub, const char *from, const char *to, sm_status st,
                        const char *needle) {
    edited_dir(sub, from, to);
    sm_model *m = NULL;
    CHECK_FAIL(sm_model_load(path_in(sub, NULL), &m), st, needle);
    CHECK(m == NULL);
}

static void test_bad_checkpoints(void) {
    config_case("nohidden", "\"hidden_size\": 256, ", "", SM_ERR_FORMAT, "missing \"hidden_size\"");
    config_case("notype", "\"model_type\": \"llama\", ", "", SM_ERR_FORMAT,
                "missing \"model_type\"");
    config_case("ffn512", "\"intermediate_size\": 768", "\"intermediate_size\": 512", SM_ERR_SHAPE,
                "\"model.layers.0.mlp.gate_proj.weight\" has shape [768, 256], "
                "the config implies [512, 256]");
    config_case("kv2", "\"num_key_value_heads\": 4", "\"num_key_value_heads\": 2", SM_ERR_SHAPE,
                "k_proj.weight\" has shape [128, 256], the config implies [64, 256]");
    config_case("gpt2", "\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"", SM_ERR_UNSUPPORTED,
                "unknown architecture: model_type \"gpt2\"");
    config_case("cls", "LlamaForCausalLM", "LlamaForSequenceClassification", SM_ERR_UNSUPPORTED,
                "unknown architecture \"LlamaForSequenceClassification\"");
    config_case("gelu", "\"silu\"", "\"gelu\"", SM_ERR_UNSUPPORTED, "hidden_act \"gelu\"");
    config_case("scaled", "\"rope_theta\": 10000.0",
                "\"rope_scaling\": {\"rope_type\": \"llama3\"}", SM_ERR_UNSUPPORTED,
                "rope_scaling \"llama3\"");
    sm_model *m = NULL;
    CHECK_FAIL(sm_model_load(path_in("absent", NULL), &m), SM_ERR_IO, "no such file");

    // A checkpoint without lm_head and untied.
    make_hf_dir("nohead", NULL);
    int head = -1;
    for (int i = 0; i < g_nt; i++)
        if (!strcmp(g_t[i].name, "lm_head.weight")) head = i;
    CHECK(head == g_nt - 1);
    write_st(path_in("nohead", "model.safetensors"), SM_DTYPE_F32, 0, g_nt - 1);
    CHECK_FAIL(sm_model_load(path_in("nohead", NULL), &m), SM_ERR_NOT_FOUND,
               "missing tensor \"lm_head.weight\" (tie_word_embeddings is false)");

    // llama2.c files: cut short, trailing bytes, later versions, impossible headers.
    FILE *src = fopen(path_in("v0.bin", NULL), "rb");
    CHECK(src != NULL);
    if (!src) return;
    fseek(src, 0, SEEK_END);
    long size = ftell(src);
    fseek(src, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 16);
    CHECK(fread(buf, 1, (size_t)size, src) == (size_t)size);
    fclose(src);
    struct {
        const char *name;
        long len;
        int32_t word[2]; // {index, value} patched into the first 8 int32s, index -1: none
        sm_status st;
        const char *needle;
    } cases[] = {
        {"short.bin", size - 4, {-1, 0}, SM_ERR_FORMAT, "too short"},
        {"tiny.bin", 20, {-1, 0}, SM_ERR_FORMAT, "too short for a llama2.c checkpoint"},
        {"long.bin", size + 8, {-1, 0}, SM_ERR_FORMAT, "size wrong"},
        {"heads0.bin", size, {3, 0}, SM_ERR_FORMAT, "n_heads = 0"},
        {"kv3.bin", size, {4, 3}, SM_ERR_FORMAT, "n_kv_heads = 3 does not divide n_heads = 8"},
        {"v2.bin", size, {0, 0x616b3432}, SM_ERR_UNSUPPORTED, "version 2 (Q8_0)"},
        {"v7.bin", size, {0, 0x616b3432}, SM_ERR_FORMAT, "version 7 is unknown"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = malloc((size_t)size + 16);
        memcpy(p, buf, (size_t)size);
        memset(p + size, 0, 16);
        if (cases[i].word[0] >= 0) memcpy(p + 4 * cases[i].word[0], &cases[i].word[1], 4);
        int32_t ver = !strcmp(cases[i].name, "v2.bin") ? 2 : 7;
        if (cases[i].word[1] == 0x616b3432) memcpy(p + 4, &ver, 4);
        FILE *f = fopen(path_in(cases[i].name, NULL), "wb");
        fwrite(p, 1, (size_t)cases[i].len, f);
        fclose(f);
        free(p);
        CHECK_FAIL(sm_model_load(path_in(cases[i].name, NULL), &m), cases[i].st, cases[i].needle);
        // Every message names the file.
        CHECK(strstr(sm_last_error(), cases[i].name) != NULL);
    }
    free(buf);

    // No tokenizer next to a non-byte-level model: drive it by ids.
    CHECK_OK(sm_model_load("models/stories260K.bin", &m));
    sm_tokenizer *tok = NULL;
    if (m)
        CHECK_FAIL(sm_tokenizer_load_for_model("models/stories260K.bin", m, &tok), SM_ERR_NOT_FOUND,
                   "not byte-level: give token ids");
    sm_model_free(m);
}

static void test_tied_with_unused_head(void) {
    // tie_word_embeddings true: the embedding is the output head and the stored lm_head.weight
    // is not used.
    edited_dir("tied", "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true");
    sm_model *m = NULL;
    CHECK_OK(sm_model_load(path_in("tied", NULL), &m));
    if (!m) return;
    sm_model_info fi;
    sm_model_get_info(m, &fi);
    CHECK(fi.tied && fi.embed_bytes == 0);
    float w[256 * 256];
    CHECK_OK(sm_op_to_dense(sm_model_linear(m, 28), w));
    const tensor *e = find("model.embed_tokens.weight");
    if (e) check_close("tied head = embedding", w, e->data, 256 * 256, 0);
    // Giving it the stored lm_head unties it, and the embedding (a view of the old head's
    // matrix until now) survives: the logits are the original untied model's.
    const tensor *h = find("lm_head.weight");
    sm_op *op = NULL;
    if (h) CHECK_OK(sm_op_fit(h->data, 256, 256, "dense", NULL, &op));
    if (op) CHECK_OK(sm_model_linear_set(m, 28, op));
    sm_model_get_info(m, &fi);
    CHECK(!fi.tied && fi.embed_bytes == 4 * 256 * 256);
    static float ref[T * V], got[T * V];
    sm_context *c = NULL;
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (unsigned char)PROMPT[i];
    CHECK_OK(sm_context_init(m, 64, 0, &c));
    if (c) CHECK_OK(sm_context_forward(c, ids, T, SM_LOGITS_ALL, got));
    sm_context_free(c);
    if (prompt_logits(MODEL, ref, NULL)) check_close("re-untied vs original", got, ref, T * V, 0);
    sm_model_free(m);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/sm_model_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    read_all_tensors();
    CHECK(g_nt == 39);
    if (g_nt == 39) {
        test_forms();
        test_operator_checkpoint();
        test_tiny_qwen2();
        test_bad_checkpoints();
        test_tied_with_unused_head();
    }
    for (int i = 0; i < g_nt; i++) free(g_t[i].data);
    remove_tree(g_dir);
    TEST_END();
}
