// Loading a llama.cpp GGUF model (architectures llama and qwen2) into the runtime.
//
// Hyperparameters are the "<arch>." keys llama.cpp writes:
//   embedding_length, block_count, feed_forward_length, attention.head_count,
//   attention.head_count_kv (default: head_count), attention.layer_norm_rms_epsilon,
//   context_length, rope.freq_base (default 10000), attention.key_length (default
//   embedding_length / head_count), rope.dimension_count (must be the head size), vocab_size
//   (default: token_embd's rows).
// Tensors (GGUF dims reversed into PyTorch's [out, in]):
//   token_embd.weight (vocab, dim)            output_norm.weight (dim)
//   output.weight (vocab, dim), absent when tied to token_embd
//   blk.L.attn_norm.weight, blk.L.ffn_norm.weight (dim)
//   blk.L.{attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down}.weight
//   blk.L.{attn_q, attn_k, attn_v}.bias (qwen2)
// F32, F16 and BF16 matrices become dense operators in their type; block-quantized ones "ggml"
// operators that keep their blocks (src/ops/ggml.c). A quantized token_embd is expanded to F32
// for the lookup table (its operator, when tied, keeps the blocks).
//
// llama.cpp's converter permutes the rows of attn_q and attn_k of arch "llama" so that its
// adjacent-pair RoPE reproduces Hugging Face's rotate_half: within each head of size hd, GGUF row
// 2i + a holds HF row a hd/2 + i (a = 0, 1). The rows are moved back here (whole rows, so
// quantized blocks move untouched) and the model runs with SM_ROPE_HALF, as a config.json
// checkpoint does. Qwen2 files are not permuted (llama.cpp runs them with NEOX RoPE).
#include "model.h"
#include "structmat_gguf.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

bool sm_model_is_gguf(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char magic[4];
    bool yes = read(fd, magic, 4) == 4 && !memcmp(magic, "GGUF", 4);
    close(fd);
    return yes;
}

typedef struct gg_ctx {
    const sm_gguf *g;
    const char *path;
    const char *arch;
    bool permute; // attn_q / attn_k rows are in llama.cpp's RoPE order
} gg_ctx;

// "<arch>.<suffix>" as an integer; def when absent and not required.
static sm_status arch_int(const gg_ctx *c, const char *suffix, bool required, int64_t def,
                          int64_t *v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    sm_status s = sm_gguf_get_int(c->g, key, v);
    if (s == SM_ERR_NOT_FOUND && !required) {
        sm_error_clear();
        *v = def;
        return SM_OK;
    }
    return s;
}

static sm_status arch_float(const gg_ctx *c, const char *suffix, bool required, double def,
                            double *v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    sm_status s = sm_gguf_get_float(c->g, key, v);
    if (s == SM_ERR_NOT_FOUND && !required) {
        sm_error_clear();
        *v = def;
        return SM_OK;
    }
    return s;
}

static const sm_gguf_tensor *find(const gg_ctx *c, const char *name) {
    const sm_gguf_tensor *t = sm_gguf_find(c->g, name);
    if (!t) sm_fail(SM_ERR_NOT_FOUND, "%s: missing tensor \"%s\"", c->path, name);
    return t;
}

static sm_status check_shape(const gg_ctx *c, const sm_gguf_tensor *t, int ndim, int64_t d0,
                             int64_t d1) {
    if (t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1)) return SM_OK;
    if (ndim == 1)
        return sm_fail(SM_ERR_SHAPE,
                       "%s: tensor \"%s\" has %d dims [%lld, ...], the metadata implies [%lld]",
                       c->path, t->name, t->ndim, (long long)t->shape[0], (long long)d0);
    return sm_fail(SM_ERR_SHAPE,
                   "%s: tensor \"%s\" has %d dims [%lld, %lld, ...], the metadata implies "
                   "[%lld, %lld]",
                   c->path, t->name, t->ndim, (long long)t->shape[0],
                   (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)d0, (long long)d1);
}

// dst = src (rows of row_bytes) with the rows of each head of hd rows moved from llama.cpp's
// order back to Hugging Face's: dst row h hd + a hd/2 + i = src row h hd + 2i + a.
static void unpermute_rows(const uint8_t *src, uint8_t *dst, int64_t rows, size_t row_bytes,
                           int64_t hd) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t h = r / hd, k = r % hd, a = k / (hd / 2), i = k % (hd / 2);
        memcpy(dst + (size_t)r * row_bytes, src + (size_t)(h * hd + 2 * i + a) * row_bytes,
               row_bytes);
    }
}

// The operator for tensor `name` (rows, cols); head_dim > 0 undoes the RoPE permutation.
static sm_status load_op(const gg_ctx *c, const char *name, int64_t rows, int64_t cols,
                         int64_t head_dim, sm_op **out) {
    const sm_gguf_tensor *t = find(c, name);
    if (!t) return SM_ERR_NOT_FOUND;
    sm_status s = check_shape(c, t, 2, rows, cols);
    if (s != SM_OK) return s;
    char spec[32];
    sm_dtype dt = SM_DTYPE_U8;
    switch (t->type) {
    case SM_GGML_F32:
        snprintf(spec, sizeof spec, "dense"), dt = SM_DTYPE_F32;
        break;
    case SM_GGML_F16:
        snprintf(spec, sizeof spec, "dense:dtype=f16"), dt = SM_DTYPE_F16;
        break;
    case SM_GGML_BF16:
        snprintf(spec, sizeof spec, "dense:dtype=bf16"), dt = SM_DTYPE_BF16;
        break;
    default: {
        const char *tn = t->type_name;
        if (!sm_ggml_can_decode(t->type) || t->type == SM_GGML_F64)
            return sm_fail(SM_ERR_UNSUPPORTED,
                           "%s: tensor \"%s\" is %s, a type this runtime cannot apply", c->path,
                           name, tn);
        size_t k = (size_t)snprintf(spec, sizeof spec, "ggml:type=");
        for (size_t i = 0; tn[i] && k + 1 < sizeof spec; i++)
            spec[k++] = (char)(tn[i] >= 'A' && tn[i] <= 'Z' ? tn[i] + 32 : tn[i]);
        spec[k] = 0;
    }
    }
    size_t row_bytes = t->nbytes / (size_t)rows;
    const void *data = t->data;
    uint8_t *moved = NULL;
    if (head_dim > 0) {
        moved = sm_alloc(t->nbytes);
        if (!moved) return sm_fail(SM_ERR_ALLOC, "out of memory for \"%s\"", name);
        unpermute_rows(t->data, moved, rows, row_bytes, head_dim);
        data = moved;
    }
    int64_t esz = dt == SM_DTYPE_U8 ? 1 : (int64_t)sm_dtype_size(dt);
    sm_part p = {.name = "",
                 .dtype = dt,
                 .ndim = 2,
                 .shape = {rows, (int64_t)row_bytes / esz},
                 .data = data,
                 .nbytes = t->nbytes};
    snprintf(p.name, sizeof p.name, "%s", dt == SM_DTYPE_U8 ? "blocks" : "W");
    s = sm_op_from_parts(spec, rows, cols, &p, 1, out);
    sm_free(moved);
    if (s != SM_OK) sm_error_prefix("%s: tensor \"%s\": ", c->path, name);
    return s;
}

// dst (n) = the 1-D tensor as F32; head_dim > 0 undoes the RoPE permutation (q/k biases).
static sm_status load_vec(const gg_ctx *c, const char *name, int64_t n, int64_t head_dim,
                          float *dst) {
    const sm_gguf_tensor *t = find(c, name);
    if (!t) return SM_ERR_NOT_FOUND;
    sm_status s = check_shape(c, t, 1, n, 0);
    if (s == SM_OK) s = sm_ggml_dequantize(t->type, t->data, n, dst);
    if (s != SM_OK) {
        sm_error_prefix("%s: tensor \"%s\": ", c->path, name);
        return s;
    }
    if (head_dim > 0) {
        float *tmp = malloc((size_t)n * sizeof *tmp);
        if (!tmp) return sm_fail(SM_ERR_ALLOC, "out of memory");
        unpermute_rows((const uint8_t *)dst, (uint8_t *)tmp, n, sizeof(float), head_dim);
        memcpy(dst, tmp, (size_t)n * sizeof *tmp);
        free(tmp);
    }
    return SM_OK;
}

static sm_status load_embedding(const gg_ctx *c, sm_model *m) {
    int64_t V = m->info.vocab_size, D = m->info.dim;
    const sm_gguf_tensor *t = find(c, "token_embd.weight");
    if (!t) return SM_ERR_NOT_FOUND;
    sm_status s = check_shape(c, t, 2, V, D);
    if (s != SM_OK) return s;
    bool keep = t->type == SM_GGML_F32 || t->type == SM_GGML_F16 || t->type == SM_GGML_BF16;
    m->embed_dtype = t->type == SM_GGML_F16    ? SM_DTYPE_F16
                     : t->type == SM_GGML_BF16 ? SM_DTYPE_BF16
                                               : SM_DTYPE_F32;
    m->embed_own = sm_alloc((size_t)(V * D) * sm_dtype_size(m->embed_dtype));
    if (!m->embed_own) return sm_fail(SM_ERR_ALLOC, "out of memory for the embedding");
    if (keep) {
        memcpy(m->embed_own, t->data, t->nbytes);
        return SM_OK;
    }
    s = sm_ggml_dequantize(t->type, t->data, V * D, m->embed_own);
    if (s != SM_OK) sm_error_prefix("%s: tensor \"token_embd.weight\": ", c->path);
    return s;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

// What the runtime does not compute is refused rather than ignored: biases other than q/k/v,
// RoPE frequency factors (Llama 3.1 scaling), experts.
static sm_status check_extras(const gg_ctx *c) {
    for (int64_t i = 0; i < sm_gguf_tensor_count(c->g); i++) {
        const sm_gguf_tensor *t = sm_gguf_tensor_get(c->g, i);
        if (ends_with(t->name, ".bias") && !ends_with(t->name, "attn_q.bias") &&
            !ends_with(t->name, "attn_k.bias") && !ends_with(t->name, "attn_v.bias"))
            return sm_fail(SM_ERR_UNSUPPORTED,
                           "%s: tensor \"%s\": only q, k and v biases are supported", c->path,
                           t->name);
        if (!strcmp(t->name, "rope_freqs.weight"))
            return sm_fail(SM_ERR_UNSUPPORTED,
                           "%s: rope_freqs.weight (RoPE frequency scaling) is not supported",
                           c->path);
    }
    char key[128];
    const char *st;
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    if (sm_gguf_get_str(c->g, key, &st, NULL) == SM_OK && strcmp(st, "none"))
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: %s \"%s\" is not supported", c->path, key, st);
    int64_t experts = 0;
    sm_status s = arch_int(c, "expert_count", false, 0, &experts);
    if (s != SM_OK) return s;
    if (experts > 0)
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: mixture-of-experts models are not supported",
                       c->path);
    sm_error_clear();
    return SM_OK;
}

static sm_status read_info(const gg_ctx *c, sm_model_info *info) {
    int64_t D, L, H, nh, nkv, ctx, hd, rope_dims, vocab;
    double eps, theta;
    sm_status s;
    if ((s = arch_int(c, "embedding_length", true, 0, &D)) != SM_OK ||
        (s = arch_int(c, "block_count", true, 0, &L)) != SM_OK ||
        (s = arch_int(c, "feed_forward_length", true, 0, &H)) != SM_OK ||
        (s = arch_int(c, "attention.head_count", true, 0, &nh)) != SM_OK ||
        (s = arch_int(c, "attention.head_count_kv", false, nh, &nkv)) != SM_OK ||
        (s = arch_int(c, "context_length", true, 0, &ctx)) != SM_OK ||
        (s = arch_float(c, "attention.layer_norm_rms_epsilon", true, 0, &eps)) != SM_OK ||
        (s = arch_float(c, "rope.freq_base", false, 10000.0, &theta)) != SM_OK)
        return s;
    if (nh <= 0)
        return sm_fail(SM_ERR_FORMAT, "%s: %s.attention.head_count = %lld", c->path, c->arch,
                       (long long)nh);
    if ((s = arch_int(c, "attention.key_length", false, D / nh, &hd)) != SM_OK ||
        (s = arch_int(c, "rope.dimension_count", false, hd, &rope_dims)) != SM_OK)
        return s;
    if (rope_dims != hd)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: RoPE on %lld of the %lld dimensions of a head is not supported",
                       c->path, (long long)rope_dims, (long long)hd);
    int64_t vlen;
    if ((s = arch_int(c, "attention.value_length", false, hd, &vlen)) != SM_OK) return s;
    if (vlen != hd)
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: key_length %lld != value_length %lld", c->path,
                       (long long)hd, (long long)vlen);
    const sm_gguf_tensor *emb = find(c, "token_embd.weight");
    if (!emb) return SM_ERR_NOT_FOUND;
    if ((s = arch_int(c, "vocab_size", false, emb->shape[0], &vocab)) != SM_OK) return s;
    snprintf(info->arch, sizeof info->arch, "%s", c->arch);
    snprintf(info->format, sizeof info->format, "gguf");
    info->dim = D;
    info->hidden_dim = H;
    info->n_layers = L;
    info->n_heads = nh;
    info->n_kv_heads = nkv;
    info->head_dim = hd;
    info->vocab_size = vocab;
    info->max_seq_len = ctx;
    info->rms_eps = eps;
    info->rope_theta = theta;
    info->rope_layout = SM_ROPE_HALF;
    info->tied = sm_gguf_find(c->g, "output.weight") == NULL;
    info->qkv_bias = sm_gguf_find(c->g, "blk.0.attn_q.bias") != NULL;
    int64_t id;
    info->bos_id = info->eos_id = -1;
    if (sm_gguf_get_int(c->g, "tokenizer.ggml.bos_token_id", &id) == SM_OK && id >= 0 && id < vocab)
        info->bos_id = (int32_t)id;
    if (sm_gguf_get_int(c->g, "tokenizer.ggml.eos_token_id", &id) == SM_OK && id >= 0 && id < vocab)
        info->eos_id = (int32_t)id;
    sm_error_clear();
    return sm_model_check_dims(info, c->path);
}

static sm_status load_weights(const gg_ctx *c, sm_model *m) {
    const sm_model_info *f = &m->info;
    int64_t D = f->dim, q_dim = sm_model_q_dim(m), kv_dim = sm_model_kv_dim(m);
    int64_t hd = c->permute ? f->head_dim : 0;
    static const char *const lin[SM_LIN_PER_LAYER] = {
        "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    char name[96];
    sm_status s;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((s = (x)) != SM_OK) return s;                                                          \
    } while (0)
    for (int64_t l = 0; l < f->n_layers; l++) {
        snprintf(name, sizeof name, "blk.%lld.attn_norm.weight", (long long)l);
        TRY(load_vec(c, name, D, 0, m->rms_att + l * D));
        snprintf(name, sizeof name, "blk.%lld.ffn_norm.weight", (long long)l);
        TRY(load_vec(c, name, D, 0, m->rms_ffn + l * D));
        for (int k = 0; k < SM_LIN_PER_LAYER; k++) {
            int64_t i = l * SM_LIN_PER_LAYER + k, r, cols;
            sm_model_linear_shape(m, i, &r, &cols);
            snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)l, lin[k]);
            TRY(load_op(c, name, r, cols, k == SM_LIN_Q || k == SM_LIN_K ? hd : 0, &m->ops[i]));
        }
        if (m->bias) {
            float *b = m->bias + l * (q_dim + 2 * kv_dim); // (q_dim + 2 kv_dim)
            for (int k = 0; k < 3; k++) {
                snprintf(name, sizeof name, "blk.%lld.%s.bias", (long long)l, lin[k]);
                TRY(load_vec(c, name, k ? kv_dim : q_dim, k < 2 ? hd : 0, b));
                b += k ? kv_dim : q_dim;
            }
        }
    }
    TRY(load_vec(c, "output_norm.weight", D, 0, m->rms_final));
    TRY(load_op(c, f->tied ? "token_embd.weight" : "output.weight", f->vocab_size, D, 0,
                &m->ops[f->n_linear - 1]));
    if (!sm_model_share_embedding(m)) TRY(load_embedding(c, m));
#undef TRY
    return SM_OK;
}

static sm_status expect(const gg_ctx *c, const char *name, int ndim, int64_t d0, int64_t d1) {
    const sm_gguf_tensor *t = find(c, name);
    return t ? check_shape(c, t, ndim, d0, d1) : SM_ERR_NOT_FOUND;
}

// Every tensor the model needs is present with its shape before anything is allocated for the
// sizes the metadata claims: they are then bounded by the file's own contents.
static sm_status check_tensors(const gg_ctx *c, const sm_model_info *f) {
    int64_t D = f->dim, H = f->hidden_dim, q = f->n_heads * f->head_dim;
    int64_t kv = f->n_kv_heads * f->head_dim;
    static const char *const lin[SM_LIN_PER_LAYER] = {
        "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    const int64_t shape[SM_LIN_PER_LAYER][2] = {{q, D}, {kv, D}, {kv, D}, {D, q},
                                                {H, D}, {H, D},  {D, H}};
    char name[96];
    sm_status s;
    if ((s = expect(c, "token_embd.weight", 2, f->vocab_size, D)) != SM_OK ||
        (s = expect(c, "output_norm.weight", 1, D, 0)) != SM_OK ||
        (!f->tied && (s = expect(c, "output.weight", 2, f->vocab_size, D)) != SM_OK))
        return s;
    for (int64_t l = 0; l < f->n_layers; l++) {
        for (int k = 0; k < SM_LIN_PER_LAYER; k++) {
            snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)l, lin[k]);
            if ((s = expect(c, name, 2, shape[k][0], shape[k][1])) != SM_OK) return s;
        }
        for (int k = 0; k < 3 && f->qkv_bias; k++) {
            snprintf(name, sizeof name, "blk.%lld.%s.bias", (long long)l, lin[k]);
            if ((s = expect(c, name, 1, k ? kv : q, 0)) != SM_OK) return s;
        }
        snprintf(name, sizeof name, "blk.%lld.attn_norm.weight", (long long)l);
        if ((s = expect(c, name, 1, D, 0)) != SM_OK) return s;
        snprintf(name, sizeof name, "blk.%lld.ffn_norm.weight", (long long)l);
        if ((s = expect(c, name, 1, D, 0)) != SM_OK) return s;
    }
    return SM_OK;
}

sm_status sm_model_load_gguf(const char *path, sm_model **out) {
    *out = NULL;
    sm_gguf *g = NULL;
    sm_model *m = NULL;
    sm_status s = sm_gguf_open(path, &g);
    if (s != SM_OK) return s;
    gg_ctx c = {.g = g, .path = path};
    s = sm_gguf_get_str(g, "general.architecture", &c.arch, NULL);
    if (s == SM_OK && strcmp(c.arch, "llama") && strcmp(c.arch, "qwen2"))
        s = sm_fail(SM_ERR_UNSUPPORTED,
                    "%s: unknown architecture: general.architecture \"%s\" (supported: llama, "
                    "qwen2)",
                    path, c.arch);
    sm_model_info info = {0};
    if (s == SM_OK) {
        c.permute = !strcmp(c.arch, "llama");
        s = check_extras(&c);
    }
    if (s == SM_OK) s = read_info(&c, &info);
    if (s == SM_OK) s = check_tensors(&c, &info);
    if (s == SM_OK) s = sm_model_alloc(&info, &m);
    if (s == SM_OK) s = load_weights(&c, m);
    if (s == SM_OK) s = sm_model_finish(m);
    sm_gguf_close(g);
    if (s != SM_OK) {
        sm_model_free(m);
        return s;
    }
    *out = m;
    return SM_OK;
}
