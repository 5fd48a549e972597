// Seed corpora: small valid inputs for every harness, built here from the library's own writers
// and fits (and the repository's small config.json), so seeds stay in step with the formats and
// nothing large is committed. fuzz/make_corpus.c writes them to directories; the regression test
// runs each through its harness and checks that valid seeds are accepted.
// Seed names: "bad-..." must be refused, "any-..." may go either way (structures still being
// built), every other seed must be accepted.
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct seeds {
    sm_fuzz_emit_fn emit;
    void *ctx;
    int count;
} seeds;

static void put(seeds *s, const char *name, const void *data, size_t size) {
    s->emit(s->ctx, name, data, size);
    s->count++;
}

// A growable byte buffer.
typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void add(bytes *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void adds(bytes *b, const char *s) {
    add(b, s, strlen(s));
}

static void add_i32(bytes *b, int32_t v) {
    add(b, &v, 4);
}

static void add_f32(bytes *b, float v) {
    add(b, &v, 4);
}

static uint8_t *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

// Writes w to a scratch file and appends the file's bytes to b.
static void add_writer(bytes *b, sm_st_writer *w) {
    char path[256];
    sm_fuzz_path(path, sizeof path, "corpus", "seed.safetensors");
    if (sm_st_writer_write(w, path, true) != SM_OK) {
        fprintf(stderr, "corpus: %s\n", sm_last_error());
        abort();
    }
    size_t n;
    uint8_t *p = read_all(path, &n);
    if (!p) abort();
    add(b, p, n);
    free(p);
}

static void fill(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((int32_t)(seed >> 8) - (1 << 23)) / (float)(1 << 24);
    }
}

// An operator of spec fitted to a random (m, n) matrix.
static sm_op *fit(const char *spec, int64_t m, int64_t n, uint32_t seed) {
    float *W = malloc((size_t)(m * n) * sizeof *W);
    fill(W, m * n, seed);
    sm_op *op = NULL;
    if (sm_op_fit(W, m, n, spec, NULL, &op) != SM_OK) op = NULL;
    free(W);
    return op;
}

// --- operators: the specs the seeds are made of
// ----------------------------------------------------

typedef struct op_seed {
    const char *spec;
    int64_t m, n;
} op_seed;

static const op_seed k_ops[] = {
    {"dense", 3, 5},
    {"dense:dtype=q4", 4, 70},
    {"dense:dtype=bf16", 2, 3},
    {"lowrank:rank=2,dtype=f16", 6, 5},
    {"lowrank:rank=2,dtype=q8", 5, 9},
    {"monarch:blocks=2,rank=1", 8, 8},
    {"monarch:blocks=2,rank=2,dtype=q4", 4, 6},
    {"blockdiag:blocks=2,dtype=bf16", 8, 6},
    {"blocklowrank:blocks=2,rank=1,dtype=q8", 8, 8},
    {"kron:a=2x2,terms=2", 8, 6},
    {"kron:a=2x3,dtype=f16", 4, 6},
    {"lowrank:rank=1+dense:dtype=q8", 4, 6},
    {"lowrank:rank=1+monarch:blocks=2,rank=1+kron:a=2x2", 4, 4},
};
#define NOPS (int)(sizeof k_ops / sizeof k_ops[0])

// Structures whose code is still being written: their seeds are "any-".
static const op_seed k_new_ops[] = {
    {"blast:blocks=2,rank=2,iters=3", 8, 8},
    {"sparse:density=0.5", 6, 6},
    {"rtn:bits=4,group=64", 4, 64},
    {"gptq:bits=3,group=64", 4, 64},
    {"onebit", 6, 6},
    {"cur:rank=2", 6, 6},
    {"bitstack:k=2", 6, 6},
};
#define NNEW (int)(sizeof k_new_ops / sizeof k_new_ops[0])

static void slug(char *out, size_t cap, const char *prefix, const char *spec) {
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (const char *s = spec; *s && n + 1 < cap; s++)
        out[n++] = (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ? *s : '_';
    out[n] = 0;
}

// --- safetensors
// -------------------------------------------------------------------------------------

static void seeds_safetensors(seeds *s) {
    float f[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};
    double d[3] = {1, -1, 0.5};
    int8_t i8[5] = {-128, -1, 0, 1, 127};
    int32_t i32 = 42;
    uint8_t flags[2] = {0, 1};
    sm_st_writer *w = sm_st_writer_init();
    sm_st_writer_add(w, "f32", SM_DTYPE_F32, 2, (int64_t[]){2, 3}, f, sizeof f);
    sm_st_writer_add(w, "f16", SM_DTYPE_F16, 1, (int64_t[]){4}, h, sizeof h);
    sm_st_writer_add(w, "bf16", SM_DTYPE_BF16, 2, (int64_t[]){2, 2}, h, sizeof h);
    sm_st_writer_add(w, "f64", SM_DTYPE_F64, 1, (int64_t[]){3}, d, sizeof d);
    sm_st_writer_add(w, "i8", SM_DTYPE_I8, 3, (int64_t[]){1, 5, 1}, i8, sizeof i8);
    sm_st_writer_add(w, "scalar", SM_DTYPE_I32, 0, NULL, &i32, 4);
    sm_st_writer_add(w, "empty", SM_DTYPE_U8, 2, (int64_t[]){0, 3}, NULL, 0);
    sm_st_writer_add(w, "bool", SM_DTYPE_BOOL, 1, (int64_t[]){2}, flags, 2);
    sm_st_writer_meta(w, "format", "pt");
    sm_st_writer_meta(w, "note", "seed \"quoted\" \\ \t");
    bytes b = {0};
    add_writer(&b, w);
    sm_st_writer_free(w);
    put(s, "tensors", b.p, b.n);
    put(s, "bad-truncated", b.p, b.n - 3);
    put(s, "bad-short", b.p, 7);
    free(b.p);
    static const char empty[] = "\x02\0\0\0\0\0\0\0{}";
    put(s, "empty-header", empty, sizeof empty - 1);

    // Operator files: one per structure, then three operators in one file.
    for (int i = 0; i < NOPS; i++) {
        sm_op *op = fit(k_ops[i].spec, k_ops[i].m, k_ops[i].n, (uint32_t)i);
        if (!op) continue;
        char path[256], name[96];
        sm_fuzz_path(path, sizeof path, "corpus", "ops.safetensors");
        const char *names[] = {"layer.weight"};
        const sm_op *ops[] = {op};
        if (sm_ops_save(path, 1, names, ops, true) == SM_OK) {
            size_t n;
            uint8_t *p = read_all(path, &n);
            slug(name, sizeof name, "op-", k_ops[i].spec);
            if (p) put(s, name, p, n);
            free(p);
        }
        sm_op_free(op);
    }
    sm_op *a = fit("lowrank:rank=1", 4, 4, 1), *c = fit("dense:dtype=f16", 2, 4, 2),
          *e = fit("blockdiag:blocks=2", 4, 2, 3);
    if (a && c && e) {
        char path[256];
        sm_fuzz_path(path, sizeof path, "corpus", "ops.safetensors");
        const char *names[] = {"a.weight", "b", "c.proj"};
        const sm_op *ops[] = {a, c, e};
        if (sm_ops_save(path, 3, names, ops, true) == SM_OK) {
            size_t n;
            uint8_t *p = read_all(path, &n);
            if (p) put(s, "ops-three", p, n);
            free(p);
        }
    }
    sm_op_free(a), sm_op_free(c), sm_op_free(e);
}

static void seeds_st_index(seeds *s) {
    float x[4] = {1, 2, 3, 4}, y[2] = {5, 6};
    bytes b = {0};
    adds(&b, "{\"metadata\": {\"total_size\": 24}, \"weight_map\": {\"a\": "
             "\"model-00001-of-00002.safetensors\", \"b\": \"model-00001-of-00002.safetensors\", "
             "\"c\": \"model-00002-of-00002.safetensors\"}}");
    adds(&b, SM_FUZZ_SEP);
    sm_st_writer *w = sm_st_writer_init();
    sm_st_writer_add(w, "a", SM_DTYPE_F32, 2, (int64_t[]){2, 1}, x, 8);
    sm_st_writer_add(w, "b", SM_DTYPE_F32, 1, (int64_t[]){2}, x + 2, 8);
    sm_st_writer_meta(w, "format", "pt");
    add_writer(&b, w);
    sm_st_writer_free(w);
    adds(&b, SM_FUZZ_SEP);
    w = sm_st_writer_init();
    sm_st_writer_add(w, "c", SM_DTYPE_F32, 1, (int64_t[]){2}, y, 8);
    sm_st_writer_add(w, "unlisted", SM_DTYPE_F16, 1, (int64_t[]){1}, y, 2);
    add_writer(&b, w);
    sm_st_writer_free(w);
    put(s, "two-shards", b.p, b.n);
    // The same with "c" listed in the wrong shard.
    const char *at = memchr(b.p, '}', b.n);
    size_t off = 0;
    for (size_t i = 0; at && i + 33 < b.n; i++)
        if (!memcmp(b.p + i, "\"c\": \"model-00002", 17)) off = i;
    if (off) {
        b.p[off + 16] = '1';
        put(s, "bad-wrong-shard", b.p, b.n);
    }
    free(b.p);
}

// --- config.json
// -------------------------------------------------------------------------------------

static const char k_qwen_config[] =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 8, "
    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
    "\"num_key_value_heads\": 1, \"head_dim\": 6, \"vocab_size\": 16, "
    "\"max_position_embeddings\": 8, \"rms_norm_eps\": 1e-6, \"rope_parameters\": "
    "{\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}, \"tie_word_embeddings\": true, "
    "\"bos_token_id\": null, \"eos_token_id\": [2, 3], \"hidden_act\": \"silu\", "
    "\"dtype\": \"bfloat16\", \"use_sliding_window\": false}";

static const char k_llama_config[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 8, "
    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
    "\"num_key_value_heads\": 1, \"vocab_size\": 16, \"max_position_embeddings\": 8, "
    "\"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s, "
    "\"bos_token_id\": 1, \"eos_token_id\": 2, \"hidden_act\": \"silu\", "
    "\"torch_dtype\": \"float32\", \"rope_scaling\": null}";

static void seeds_config(seeds *s) {
    size_t n;
    uint8_t *p = read_all("models/shakespeare-llama-3m/config.json", &n);
    if (p) put(s, "shakespeare", p, n);
    free(p);
    put(s, "qwen2", k_qwen_config, strlen(k_qwen_config));
    char buf[1024];
    snprintf(buf, sizeof buf, k_llama_config, "false");
    put(s, "llama", buf, strlen(buf));
    static const char missing[] = "{\"model_type\": \"llama\", \"intermediate_size\": 16}";
    put(s, "bad-missing", missing, strlen(missing));
}

// --- spec strings
// ------------------------------------------------------------------------------------

static void spec_seed(seeds *s, const char *prefix, int pattern, int64_t m, int64_t n,
                      const char *spec) {
    bytes b = {0};
    uint8_t head[2] = {(uint8_t)(pattern << 5 | (m - 1)), (uint8_t)(n - 1)};
    add(&b, head, 2);
    adds(&b, spec);
    char name[128];
    slug(name, sizeof name, prefix, spec);
    snprintf(name + strlen(name), sizeof name - strlen(name), "-p%d-%lldx%lld", pattern,
             (long long)m, (long long)n);
    put(s, name, b.p, b.n);
    free(b.p);
}

static void seeds_spec(seeds *s) {
    for (int i = 0; i < NOPS; i++) spec_seed(s, "", 0, k_ops[i].m, k_ops[i].n, k_ops[i].spec);
    for (int i = 0; i < NNEW; i++)
        spec_seed(s, "any-", 0, k_new_ops[i].m, k_new_ops[i].n, k_new_ops[i].spec);
    // Numeric edge cases: each value pattern on a structure or two; 1 x n and n x 1.
    static const char *const edge[] = {"lowrank:ratio=0.5", "kron:a=2x2,terms=2",
                                       "monarch:blocks=2,ratio=0.5", "dense:dtype=q4"};
    for (int p = 1; p < 8; p++)
        for (int i = 0; i < 4; i++) // q4's F16 scales cannot hold 1e30 / 7: refused
            spec_seed(s, p == 5 && i == 3 ? "bad-" : "", p, 8, 8, edge[i]);
    spec_seed(s, "", 0, 1, 16, "lowrank:rank=1,solver=random,oversample=3,power=1");
    spec_seed(s, "", 0, 16, 1, "blockdiag:blocks=1,dtype=q8");
    spec_seed(s, "", 0, 32, 32, "blocklowrank:blocks=4,ratio=0.25,dtype=bf16");
    spec_seed(s, "bad-", 0, 8, 8, "lowrank:rank=9");
    spec_seed(s, "bad-", 0, 8, 8, "monarch:blocks=3");
    spec_seed(s, "bad-", 0, 8, 8, "lowrank:rank=1,rank=2");
    spec_seed(s, "bad-", 0, 8, 8, "Lowrank");
}

// --- stored operators with their metadata
// --------------------------------------------------------------

// The opload text form of op with the given spec and shape strings.
static void op_text(bytes *b, const sm_op *op, const char *spec, const char *shape) {
    adds(b, spec);
    adds(b, "\n");
    adds(b, shape);
    adds(b, "\n");
    sm_part *parts = NULL;
    int np = 0;
    if (sm_op_parts(op, &parts, &np) != SM_OK) abort();
    for (int i = 0; i < np; i++) {
        char line[160];
        int len =
            snprintf(line, sizeof line, "%s %s ", parts[i].name, sm_dtype_name(parts[i].dtype));
        for (int d = 0; d < parts[i].ndim; d++)
            len += snprintf(line + len, sizeof line - (size_t)len, "%s%lld", d ? "x" : "",
                            (long long)parts[i].shape[d]);
        if (parts[i].ndim == 0) snprintf(line + len, sizeof line - (size_t)len, "-");
        adds(b, line);
        adds(b, "\n");
    }
    adds(b, "\n");
    for (int i = 0; i < np; i++) add(b, parts[i].data, parts[i].nbytes);
    free(parts);
}

static void seeds_opload(seeds *s) {
    for (int i = 0; i < NOPS; i++) {
        sm_op *op = fit(k_ops[i].spec, k_ops[i].m, k_ops[i].n, (uint32_t)i + 100);
        if (!op) continue;
        char shape[64], name[128];
        snprintf(shape, sizeof shape, "%lld,%lld", (long long)k_ops[i].m, (long long)k_ops[i].n);
        bytes b = {0};
        op_text(&b, op, sm_op_spec(op), shape);
        slug(name, sizeof name, "", k_ops[i].spec);
        put(s, name, b.p, b.n);
        b.n = 0;
        // The same parts under metadata that lies about the shape.
        snprintf(shape, sizeof shape, "%lld,%lld", (long long)k_ops[i].m + 1,
                 (long long)k_ops[i].n);
        op_text(&b, op, sm_op_spec(op), shape);
        slug(name, sizeof name, "bad-shape-", k_ops[i].spec);
        put(s, name, b.p, b.n);
        free(b.p);
        sm_op_free(op);
    }
    // Lies about the rank and the bit width.
    sm_op *op = fit("lowrank:rank=2,dtype=q8", 6, 5, 7);
    if (op) {
        bytes b = {0};
        op_text(&b, op, "lowrank:rank=3,dtype=q8", "6,5");
        put(s, "bad-rank", b.p, b.n);
        b.n = 0;
        op_text(&b, op, "lowrank:rank=2,dtype=q4", "6,5");
        put(s, "bad-bits", b.p, b.n);
        free(b.p);
        sm_op_free(op);
    }
    for (int i = 0; i < NNEW; i++) {
        op = fit(k_new_ops[i].spec, k_new_ops[i].m, k_new_ops[i].n, 5);
        if (!op) continue;
        char shape[64], name[128];
        snprintf(shape, sizeof shape, "%lld,%lld", (long long)k_new_ops[i].m,
                 (long long)k_new_ops[i].n);
        bytes b = {0};
        op_text(&b, op, sm_op_spec(op), shape);
        slug(name, sizeof name, "any-", k_new_ops[i].spec);
        put(s, name, b.p, b.n);
        free(b.p);
        sm_op_free(op);
    }
}

// --- llama2.c checkpoints
// ----------------------------------------------------------------------------

// A tiny model: dim 8, hidden 16, 1 layer, 2 heads (head_dim 4), 1 kv head, vocab 16, seq_len 8.
static void llama2c_seed(seeds *s, const char *name, int version, bool shared) {
    const int32_t D = 8, H = 16, L = 1, NH = 2, KV = 1, V = 16, S = 8, hd = D / NH;
    int64_t floats = (int64_t)V * D + 2 * L * D + D          // embedding, norms
                     + (int64_t)L * D * D * 2                // wq, wo
                     + (int64_t)L * KV * hd * D * 2          // wk, wv
                     + (int64_t)L * H * D * 3                // w1, w2, w3
                     + (shared ? 0 : (int64_t)V * D)         // wcls
                     + (version == 0 ? (int64_t)S * hd : 0); // freq_cis tables
    bytes b = {0};
    if (version == 0) {
        int32_t hdr[7] = {D, H, L, NH, KV, shared ? V : -V, S};
        add(&b, hdr, sizeof hdr);
    } else {
        uint32_t magic = 0x616b3432u;
        add(&b, &magic, 4);
        add_i32(&b, 1);
        int32_t hdr[7] = {D, H, L, NH, KV, V, S};
        add(&b, hdr, sizeof hdr);
        uint8_t sh = shared ? 1 : 0;
        add(&b, &sh, 1);
        uint8_t zero[256] = {0};
        add(&b, zero, 256 - b.n);
    }
    float *w = malloc((size_t)floats * sizeof *w);
    fill(w, floats, (uint32_t)(version * 2 + shared));
    add(&b, w, (size_t)floats * sizeof *w);
    free(w);
    put(s, name, b.p, b.n);
    if (version == 1 && shared) {
        put(s, "bad-v1-cut", b.p, b.n - 4);
        b.p[4] = 2; // version 2 (Q8_0): refused
        put(s, "bad-v2", b.p, b.n);
    }
    free(b.p);
}

static void seeds_llama2c(seeds *s) {
    llama2c_seed(s, "v0-shared", 0, true);
    llama2c_seed(s, "v0-separate", 0, false);
    llama2c_seed(s, "v1-shared", 1, true);
    llama2c_seed(s, "v1-separate", 1, false);
    // The real stories260K header, cut after it: a size mismatch to refuse.
    size_t n;
    uint8_t *p = read_all("models/stories260K.bin", &n);
    if (p && n > 64) put(s, "bad-stories260K-head", p, 64);
    free(p);
}

// --- GGUF (fuzz_gguf.c) -----------------------------------------------------------------------

static void add_u32(bytes *b, uint32_t v) {
    add(b, &v, 4);
}
static void add_u64(bytes *b, uint64_t v) {
    add(b, &v, 8);
}
static void add_gstr(bytes *b, const char *str) {
    add_u64(b, strlen(str));
    adds(b, str);
}
static void add_gkey(bytes *b, const char *key, uint32_t type) {
    add_gstr(b, key);
    add_u32(b, type);
}

// A one-layer llama GGUF (dim 32, 2 heads of 16, 1 KV head, hidden 32, vocab 16) whose matrices
// are of type qtype (0 F32 or 8 Q8_0), with a gpt2 (spm false) or llama (spm true) vocabulary.
static void gguf_seed(seeds *s, const char *name, uint32_t qtype, bool spm, bool tied) {
    enum { D = 32, H = 32, V = 16 };
    static const char *const toks[V] = {"a", "b",  "c",   "d",        "e",   "f",    "g", "h",
                                        "i", "ab", "abc", "\xc4\xa0", "<s>", "</s>", "x", "y"};
    static const char *const lin[7] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                       "ffn_gate", "ffn_up", "ffn_down"};
    const int64_t shape[7][2] = {{D, D}, {16, D}, {16, D}, {D, D}, {H, D}, {H, D}, {D, H}};
    struct {
        char name[32];
        int64_t rows, cols;
        uint32_t type;
    } t[12];
    int nt = 0;
#define T(nm, r, c, ty)                                                                            \
    (snprintf(t[nt].name, 32, "%s", nm), t[nt].rows = r, t[nt].cols = c, t[nt++].type = ty)
    T("token_embd.weight", V, D, qtype);
    T("output_norm.weight", 0, D, 0);
    if (!tied) T("output.weight", V, D, qtype);
    T("blk.0.attn_norm.weight", 0, D, 0);
    T("blk.0.ffn_norm.weight", 0, D, 0);
    for (int k = 0; k < 7; k++) {
        char nm[32];
        snprintf(nm, sizeof nm, "blk.0.%s.weight", lin[k]);
        T(nm, shape[k][0], shape[k][1], qtype);
    }
#undef T
    bytes b = {0};
    adds(&b, "GGUF");
    add_u32(&b, 3);
    add_u64(&b, (uint64_t)nt);
    add_u64(&b, 14);
    add_gkey(&b, "general.architecture", 8), add_gstr(&b, "llama");
    add_gkey(&b, "llama.embedding_length", 4), add_u32(&b, D);
    add_gkey(&b, "llama.block_count", 4), add_u32(&b, 1);
    add_gkey(&b, "llama.feed_forward_length", 4), add_u32(&b, H);
    add_gkey(&b, "llama.attention.head_count", 4), add_u32(&b, 2);
    add_gkey(&b, "llama.attention.head_count_kv", 4), add_u32(&b, 1);
    add_gkey(&b, "llama.context_length", 4), add_u32(&b, 64);
    add_gkey(&b, "llama.attention.layer_norm_rms_epsilon", 6), add_f32(&b, 1e-5f);
    add_gkey(&b, "tokenizer.ggml.model", 8), add_gstr(&b, spm ? "llama" : "gpt2");
    add_gkey(&b, "tokenizer.ggml.tokens", 9), add_u32(&b, 8), add_u64(&b, V);
    for (int i = 0; i < V; i++) add_gstr(&b, toks[i]);
    add_gkey(&b, "tokenizer.ggml.scores", 9), add_u32(&b, 6), add_u64(&b, V);
    for (int i = 0; i < V; i++) add_f32(&b, -(float)i);
    add_gkey(&b, "tokenizer.ggml.token_type", 9), add_u32(&b, 5), add_u64(&b, V);
    for (int i = 0; i < V; i++) add_i32(&b, i == 12 || i == 13 ? 3 : 1);
    add_gkey(&b, "tokenizer.ggml.merges", 9), add_u32(&b, 8), add_u64(&b, 2);
    add_gstr(&b, "a b"), add_gstr(&b, "ab c");
    add_gkey(&b, "tokenizer.ggml.bos_token_id", 4), add_u32(&b, 12);
    uint64_t off = 0;
    size_t nbytes[12];
    for (int i = 0; i < nt; i++) {
        int64_t n = (t[i].rows ? t[i].rows : 1) * t[i].cols;
        nbytes[i] = t[i].type == 8 ? (size_t)(n / 32 * 34) : (size_t)n * 4;
        add_gstr(&b, t[i].name);
        add_u32(&b, t[i].rows ? 2 : 1);
        add_u64(&b, (uint64_t)t[i].cols);
        if (t[i].rows) add_u64(&b, (uint64_t)t[i].rows);
        add_u32(&b, t[i].type);
        add_u64(&b, off);
        off += (nbytes[i] + 31) / 32 * 32;
    }
    while (b.n % 32) add(&b, "", 1);
    uint32_t seed = 7;
    for (int i = 0; i < nt; i++) {
        int64_t n = (t[i].rows ? t[i].rows : 1) * t[i].cols;
        float *x = malloc((size_t)n * sizeof *x);
        fill(x, n, seed++);
        if (!t[i].rows)
            for (int64_t j = 0; j < n; j++) x[j] += 1; // norms near 1
        if (t[i].type == 8) {
            for (int64_t blk = 0; blk < n / 32; blk++) { // d = 1/127, q = round(127 x)
                uint16_t d = sm_f32_to_f16(1.0f / 127);
                add(&b, &d, 2);
                for (int j = 0; j < 32; j++) {
                    int8_t q = (int8_t)(x[blk * 32 + j] * 127);
                    add(&b, &q, 1);
                }
            }
        } else {
            add(&b, x, (size_t)n * 4);
        }
        while (b.n % 32) add(&b, "", 1);
        free(x);
    }
    put(s, name, b.p, b.n);
    // The same file cut short: refused.
    char cut[64];
    snprintf(cut, sizeof cut, "bad-%s-cut", name);
    put(s, cut, b.p, b.n - 40);
    free(b.p);
}

static void seeds_gguf(seeds *s) {
    gguf_seed(s, "llama-f32-gpt2", 0, false, false);
    gguf_seed(s, "llama-q8_0-spm-tied", 8, true, true);
    bytes b = {0};
    adds(&b, "GGUF");
    add_u32(&b, 3);
    add_u64(&b, 0);
    add_u64(&b, 1);
    add_gkey(&b, "nested", 9), add_u32(&b, 9), add_u64(&b, 2);
    add_u32(&b, 8), add_u64(&b, 1), add_gstr(&b, "x");
    add_u32(&b, 4), add_u64(&b, 2), add_u32(&b, 1), add_u32(&b, 2);
    put(s, "nested-arrays", b.p, b.n);
    free(b.p);
}

// --- tokenizer.bin
// -----------------------------------------------------------------------------------

static void add_token(bytes *b, const char *piece, float score) {
    add_f32(b, score);
    add_i32(b, (int32_t)strlen(piece));
    adds(b, piece);
}

static void seeds_tokenizer(seeds *s) {
    bytes b = {0};
    add_i32(&b, 8);
    add_token(&b, "<unk>", 0);
    add_token(&b, "<s>", 0);
    add_token(&b, "</s>", 0);
    for (int i = 0; i < 256; i++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", i);
        add_token(&b, piece, 0);
    }
    static const char *const merges[] = {" ",  "e",  "t",        "h",           "a",  " t",
                                         "th", "he", "the",      " the",        "at", " c",
                                         "c",  "s",  "\xc3\xbc", "\xe2\x98\x83"};
    for (int i = 0; i < (int)(sizeof merges / sizeof *merges); i++)
        add_token(&b, merges[i], (float)(i % 5) - 1.5f);
    size_t vocab_end = b.n;
    adds(&b, SM_FUZZ_SEP);
    adds(&b, "the cat sat on the hat. th\xc3\xbc \xe2\x98\x83 \xff <0x41>");
    put(s, "bytes-and-merges", b.p, b.n);
    put(s, "no-text", b.p, vocab_end);
    put(s, "bad-cut", b.p, vocab_end - 2);
    free(b.p);
    // No byte tokens: text made of the pieces it has encodes; other bytes are refused.
    b = (bytes){0};
    add_i32(&b, 2);
    add_token(&b, "<unk>", 0);
    add_token(&b, "<s>", 0);
    add_token(&b, "</s>", 0);
    add_token(&b, "a", -1);
    add_token(&b, "b", -2);
    add_token(&b, "ab", 1);
    add_token(&b, "ab", 2); // a duplicate piece: the lower id is used
    adds(&b, SM_FUZZ_SEP);
    adds(&b, "abbaab");
    put(s, "small", b.p, b.n);
    free(b.p);
}

// --- Hugging Face model directories
// --------------------------------------------------------------------

// config SEP model.safetensors for a tiny llama (or qwen2, always tied) model; head: the file has
// lm_head (else the config's tie decides whether that is valid); lowrank: q_proj stored as a
// structmat lowrank operator.
static void hf_seed(seeds *s, const char *name, bool tied, bool head, bool qwen, sm_dtype dt,
                    bool lowrank) {
    const int64_t D = 8, H = 16, V = 16, KV = qwen ? 6 : 4, Q = qwen ? 12 : 8;
    bytes b = {0};
    if (qwen) {
        adds(&b, k_qwen_config);
    } else {
        char buf[1024];
        snprintf(buf, sizeof buf, k_llama_config, tied ? "true" : "false");
        adds(&b, buf);
    }
    adds(&b, SM_FUZZ_SEP);
    sm_st_writer *w = sm_st_writer_init();
    float *store[32];
    int ns = 0;
    struct {
        const char *name;
        int64_t r, c;
    } t[] = {{"model.embed_tokens.weight", V, D},
             {"model.layers.0.input_layernorm.weight", D, 0},
             {"model.layers.0.self_attn.q_proj.weight", Q, D},
             {"model.layers.0.self_attn.k_proj.weight", KV, D},
             {"model.layers.0.self_attn.v_proj.weight", KV, D},
             {"model.layers.0.self_attn.o_proj.weight", D, Q},
             {"model.layers.0.post_attention_layernorm.weight", D, 0},
             {"model.layers.0.mlp.gate_proj.weight", H, D},
             {"model.layers.0.mlp.up_proj.weight", H, D},
             {"model.layers.0.mlp.down_proj.weight", D, H},
             {"model.norm.weight", D, 0},
             {"lm_head.weight", V, D},
             {"model.layers.0.self_attn.q_proj.bias", Q, 0},
             {"model.layers.0.self_attn.k_proj.bias", KV, 0},
             {"model.layers.0.self_attn.v_proj.bias", KV, 0}};
    int nt = (int)(sizeof t / sizeof *t);
    sm_op *op = NULL;
    sm_part *parts = NULL;
    int np = 0;
    for (int i = 0; i < nt; i++) {
        bool bias = strstr(t[i].name, ".bias") != NULL;
        if ((!head && !strcmp(t[i].name, "lm_head.weight")) || (bias && !qwen)) continue;
        int64_t count = t[i].r * (t[i].c ? t[i].c : 1);
        float *x = store[ns++] = malloc((size_t)count * sizeof(float));
        fill(x, count, (uint32_t)i);
        if (lowrank && strstr(t[i].name, "q_proj.weight")) {
            if (sm_op_fit(x, t[i].r, t[i].c, "lowrank:rank=2", NULL, &op) != SM_OK ||
                sm_op_parts(op, &parts, &np) != SM_OK)
                abort();
            char key[128];
            for (int p = 0; p < np; p++) {
                snprintf(key, sizeof key, "%s.%s", t[i].name, parts[p].name);
                sm_st_writer_add(w, key, parts[p].dtype, parts[p].ndim, parts[p].shape,
                                 parts[p].data, parts[p].nbytes);
            }
            sm_st_writer_meta(w, "structmat.format_version", "1");
            snprintf(key, sizeof key, "structmat.spec.%s", t[i].name);
            sm_st_writer_meta(w, key, sm_op_spec(op));
            snprintf(key, sizeof key, "structmat.shape.%s", t[i].name);
            char shape[32];
            snprintf(shape, sizeof shape, "%lld,%lld", (long long)t[i].r, (long long)t[i].c);
            sm_st_writer_meta(w, key, shape);
            continue;
        }
        sm_dtype d = t[i].c ? dt : SM_DTYPE_F32; // vectors F32, matrices dt
        if (d != SM_DTYPE_F32) {
            uint16_t *h = (uint16_t *)x; // converted in place (2 bytes per value fit in 4)
            for (int64_t k = 0; k < count; k++)
                h[k] = d == SM_DTYPE_F16 ? sm_f32_to_f16(x[k]) : sm_f32_to_bf16(x[k]);
        }
        int64_t shape[2] = {t[i].r, t[i].c};
        sm_st_writer_add(w, t[i].name, d, t[i].c ? 2 : 1, shape, x,
                         (size_t)count * sm_dtype_size(d));
    }
    add_writer(&b, w);
    sm_st_writer_free(w);
    free(parts);
    sm_op_free(op);
    for (int i = 0; i < ns; i++) free(store[i]);
    put(s, name, b.p, b.n);
    free(b.p);
}

static void seeds_model_hf(seeds *s) {
    hf_seed(s, "llama-tied-f32", true, false, false, SM_DTYPE_F32, false);
    hf_seed(s, "llama-untied-bf16", false, true, false, SM_DTYPE_BF16, false);
    hf_seed(s, "llama-f16-lowrank-q", false, true, false, SM_DTYPE_F16, true);
    hf_seed(s, "qwen2-tied-biases", true, false, true, SM_DTYPE_F32, false);
    // Untied in the config, but the file has no lm_head.
    hf_seed(s, "bad-untied-without-head", false, false, false, SM_DTYPE_F32, false);
}

// --- tokenizer.json ------------------------------------------------------------------------------

static void add_utf8(bytes *b, unsigned cp) {
    uint8_t u[4];
    int n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
    if (n == 1) u[0] = (uint8_t)cp;
    if (n == 2) u[0] = (uint8_t)(0xc0 | cp >> 6), u[1] = (uint8_t)(0x80 | (cp & 63));
    if (n == 3)
        u[0] = (uint8_t)(0xe0 | cp >> 12), u[1] = (uint8_t)(0x80 | (cp >> 6 & 63)),
        u[2] = (uint8_t)(0x80 | (cp & 63));
    add(b, u, (size_t)n);
}

static const char k_bpe_text[] = "Hello, world! the cat  sat\ton the hat\r\n"
                                 "\xc3\xbcn\xc3\xaf"
                                 "c\xc3\xb6"
                                 "d\xc3\xa9 \xf0\x9f\x99\x82 <|endoftext|> "
                                 "123456 \xe2\x96\x81 \xff";

static void seeds_tokenizer_json(seeds *s) {
    // Byte-level (GPT-2): the 256 bytes as GPT-2's alphabet (printable Latin-1 as itself, the
    // rest from U+0100 on), four merges, an added special token.
    bytes b = {0};
    adds(&b, "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 260, \"content\": "
             "\"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
             "\"normalized\": false, \"special\": true}], \"normalizer\": null, "
             "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
             "\"trim_offsets\": true, \"use_regex\": true}, \"post_processor\": null, "
             "\"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
             "\"dropout\": null, \"unk_token\": null, \"byte_fallback\": false, \"vocab\": {");
    unsigned extra = 0;
    for (int c = 0; c < 256; c++) {
        bool keep = (c >= 33 && c <= 126) || (c >= 0xa1 && c <= 0xac) || c >= 0xae;
        unsigned cp = keep ? (unsigned)c : 256 + extra++;
        adds(&b, c ? ", \"" : "\"");
        if (cp == '"' || cp == '\\') adds(&b, "\\");
        add_utf8(&b, cp);
        char id[16];
        snprintf(id, sizeof id, "\": %d", c);
        adds(&b, id);
    }
    adds(&b, ", \"\xc4\xa0t\": 256, \"he\": 257, \"\xc4\xa0the\": 258, \"at\": 259, "
             "\"<|endoftext|>\": 260}, \"merges\": [\"\xc4\xa0 t\", \"h e\", \"\xc4\xa0t he\", "
             "\"a t\"]}}");
    size_t json_end = b.n;
    adds(&b, SM_FUZZ_SEP);
    adds(&b, k_bpe_text);
    put(s, "byte-level", b.p, b.n);
    put(s, "bad-cut", b.p, json_end - 3);
    free(b.p);
    // SentencePiece-style (Llama-2): "\u2581" for spaces, prepended; byte fallback; BOS from
    // the post-processor.
    b = (bytes){0};
    adds(&b, "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": {\"type\": "
             "\"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": "
             "\"\xe2\x96\x81\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
             "\"content\": \"\xe2\x96\x81\"}]}, \"pre_tokenizer\": null, \"post_processor\": "
             "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": "
             "\"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
             "\"pair\": [], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], "
             "\"tokens\": [\"<s>\"]}}}, \"decoder\": null, \"model\": {\"type\": \"BPE\", "
             "\"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": true, "
             "\"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2");
    for (int c = 0; c < 256; c++) {
        char tok[40];
        snprintf(tok, sizeof tok, ", \"<0x%02X>\": %d", c, 3 + c);
        adds(&b, tok);
    }
    adds(&b, ", \"\xe2\x96\x81\": 259, \"t\": 260, \"h\": 261, \"e\": 262, \"a\": 263, "
             "\"c\": 264, \"\xe2\x96\x81t\": 265, \"he\": 266, \"\xe2\x96\x81the\": 267, "
             "\"at\": 268, \"\xe2\x96\x81"
             "c\": 269}, \"merges\": [\"\xe2\x96\x81 t\", \"h e\", "
             "\"\xe2\x96\x81t he\", \"a t\", \"\xe2\x96\x81 c\"]}}");
    adds(&b, SM_FUZZ_SEP);
    adds(&b, k_bpe_text);
    put(s, "sentencepiece", b.p, b.n);
    free(b.p);
    static const char unsupported[] = "{\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": "
                                      "{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
    put(s, "bad-lowercase", unsupported, strlen(unsupported));
}

int sm_fuzz_seeds(const char *target, sm_fuzz_emit_fn emit, void *ctx) {
    seeds s = {emit, ctx, 0};
    sm_fuzz_init();
#define SEEDS(t)                                                                                   \
    if (!strcmp(target, #t)) {                                                                     \
        seeds_##t(&s);                                                                             \
        return s.count;                                                                            \
    }
    SM_FUZZ_TARGETS(SEEDS)
#undef SEEDS
    return -1;
}
