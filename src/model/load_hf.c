// Loading a Hugging Face checkpoint: config.json + safetensors (one file, shards with an index,
// or a structmat checkpoint whose matrices are stored operators).
//
// Tensor names are those of transformers' LlamaForCausalLM / Qwen2ForCausalLM:
//   model.embed_tokens.weight                       (vocab, dim)
//   model.layers.L.input_layernorm.weight           (dim)
//   model.layers.L.self_attn.{q,k,v,o}_proj.weight  (q_dim, dim) (kv_dim, dim) x2 (dim, q_dim)
//   model.layers.L.self_attn.{q,k,v}_proj.bias      (q_dim) (kv_dim) (kv_dim), Qwen2
//   model.layers.L.post_attention_layernorm.weight  (dim)
//   model.layers.L.mlp.{gate,up,down}_proj.weight   (hidden, dim) x2 (dim, hidden)
//   model.norm.weight                               (dim)
//   lm_head.weight                                  (vocab, dim), absent when tied
// Plain matrices become dense operators in their stored dtype (no F32 expansion of BF16/F16).
#include "model.h"

#include <cJSON.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>

typedef struct hf_ctx {
    const sm_st *st;
    const char *where; // the path given, for tensors that are absent
} hf_ctx;

static void shape_str(const sm_tensor_info *t, char *buf, size_t cap) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && len < cap; d++)
        len +=
            (size_t)snprintf(buf + len, cap - len, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
}

static const sm_tensor_info *find(const hf_ctx *h, const char *name) {
    const sm_tensor_info *t = sm_st_find(h->st, name);
    if (!t) sm_fail(SM_ERR_NOT_FOUND, "%s: missing tensor \"%s\"", h->where, name);
    return t;
}

static sm_status check_shape(const sm_tensor_info *t, int ndim, int64_t d0, int64_t d1) {
    if (t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1)) return SM_OK;
    char got[128];
    shape_str(t, got, sizeof got);
    if (ndim == 1)
        return sm_fail(SM_ERR_SHAPE, "%s: tensor \"%s\" has shape %s, the config implies [%lld]",
                       t->file, t->name, got, (long long)d0);
    return sm_fail(SM_ERR_SHAPE, "%s: tensor \"%s\" has shape %s, the config implies [%lld, %lld]",
                   t->file, t->name, got, (long long)d0, (long long)d1);
}

// The operator for a (rows, cols) matrix: a stored structmat operator as it is, else a dense one
// in the tensor's dtype.
static sm_status load_op(const hf_ctx *h, const char *name, int64_t rows, int64_t cols,
                         sm_op **out) {
    sm_status s;
    if (sm_st_has_op(h->st, name)) {
        if ((s = sm_op_load(h->st, name, out)) != SM_OK) return s;
        if (sm_op_rows(*out) == rows && sm_op_cols(*out) == cols) return SM_OK;
        s = sm_fail(SM_ERR_SHAPE, "%s: operator \"%s\" is %lldx%lld, the config implies %lldx%lld",
                    h->where, name, (long long)sm_op_rows(*out), (long long)sm_op_cols(*out),
                    (long long)rows, (long long)cols);
        sm_op_free(*out);
        *out = NULL;
        return s;
    }
    const sm_tensor_info *t = find(h, name);
    if (!t) return SM_ERR_NOT_FOUND;
    if ((s = check_shape(t, 2, rows, cols)) != SM_OK) return s;
    const char *spec = NULL;
    switch (t->dtype) {
    case SM_DTYPE_F32:
        spec = "dense";
        break;
    case SM_DTYPE_F16:
        spec = "dense:dtype=f16";
        break;
    case SM_DTYPE_BF16:
        spec = "dense:dtype=bf16";
        break;
    case SM_DTYPE_F64:
        break; // converted to F32 below
    default:
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: tensor \"%s\" is %s (F32, F16, BF16 or F64 "
                       "expected)",
                       t->file, name, t->dtype_name);
    }
    if (spec) {
        sm_part p = {.name = "W",
                     .dtype = t->dtype,
                     .ndim = 2,
                     .shape = {rows, cols},
                     .data = t->data,
                     .nbytes = t->nbytes};
        s = sm_op_from_parts(spec, rows, cols, &p, 1, out);
    } else {
        float *w = NULL;
        int64_t n;
        s = sm_st_read_f32(h->st, name, &w, &n);
        if (s == SM_OK) s = sm_op_fit(w, rows, cols, "dense", NULL, out);
        free(w);
    }
    if (s != SM_OK) sm_error_prefix("%s: tensor \"%s\": ", t->file, name);
    return s;
}

// dst (n) = the 1-D tensor as F32
static sm_status load_vec(const hf_ctx *h, const char *name, int64_t n, float *dst) {
    const sm_tensor_info *t = find(h, name);
    if (!t) return SM_ERR_NOT_FOUND;
    sm_status s = check_shape(t, 1, n, 0);
    if (s != SM_OK) return s;
    s = sm_convert_to_f32(t->dtype, t->data, n, dst);
    if (s != SM_OK) sm_error_prefix("%s: tensor \"%s\": ", t->file, name);
    return s;
}

// The token embedding as a table of its own (when it cannot be a view of a tied lm_head).
static sm_status load_embedding(const hf_ctx *h, sm_model *m) {
    const char *name = "model.embed_tokens.weight";
    int64_t V = m->info.vocab_size, D = m->info.dim;
    sm_status s;
    if (sm_st_has_op(h->st, name)) { // a stored operator: its dense matrix, in F32
        sm_op *op = NULL;
        if ((s = load_op(h, name, V, D, &op)) != SM_OK) return s;
        m->embed_own = sm_alloc((size_t)(V * D) * sizeof(float));
        s = m->embed_own ? sm_op_to_dense(op, m->embed_own)
                         : sm_fail(SM_ERR_ALLOC, "out of memory for the embedding");
        m->embed_dtype = SM_DTYPE_F32;
        sm_op_free(op);
        return s;
    }
    const sm_tensor_info *t = find(h, name);
    if (!t) return SM_ERR_NOT_FOUND;
    if ((s = check_shape(t, 2, V, D)) != SM_OK) return s;
    bool keep = t->dtype == SM_DTYPE_F32 || t->dtype == SM_DTYPE_F16 || t->dtype == SM_DTYPE_BF16;
    m->embed_dtype = keep ? t->dtype : SM_DTYPE_F32;
    m->embed_own = sm_alloc((size_t)(V * D) * sm_dtype_size(m->embed_dtype));
    if (!m->embed_own) return sm_fail(SM_ERR_ALLOC, "out of memory for the embedding");
    if (keep) {
        memcpy(m->embed_own, t->data, t->nbytes);
        return SM_OK;
    }
    s = sm_convert_to_f32(t->dtype, t->data, V * D, m->embed_own);
    if (s != SM_OK) sm_error_prefix("%s: tensor \"%s\": ", t->file, name);
    return s;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

// What config.json says beyond sm_model_config: the architecture list and features this runtime
// does not implement (refused rather than computed wrongly).
static sm_status check_config_extras(const char *file, const sm_model_config *cfg) {
    if (!cfg->model_type[0])
        return sm_fail(SM_ERR_FORMAT, "%s: missing \"model_type\" (llama or qwen2 expected)", file);
    if (strcmp(cfg->model_type, "llama") && strcmp(cfg->model_type, "qwen2"))
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: unknown architecture: model_type \"%s\" (supported: llama, qwen2)",
                       file, cfg->model_type);
    if (strcmp(cfg->hidden_act, "silu"))
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (silu)", file,
                       cfg->hidden_act);
    char *text = NULL;
    sm_status s = sm_read_file(file, &text, NULL, 16 << 20);
    if (s != SM_OK) return s;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return sm_fail(SM_ERR_FORMAT, "%s: not valid JSON", file);
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (arch && !cJSON_IsNull(arch)) {
        if (!cJSON_IsArray(arch) || !cJSON_GetArraySize(arch))
            s = sm_fail(SM_ERR_FORMAT, "%s: \"architectures\" must be a list of names", file);
        for (const cJSON *a = cJSON_IsArray(arch) ? arch->child : NULL; a && s == SM_OK;
             a = a->next)
            if (!cJSON_IsString(a) || !ends_with(a->valuestring, "ForCausalLM"))
                s = sm_fail(SM_ERR_UNSUPPORTED,
                            "%s: unknown architecture \"%s\" (a *ForCausalLM model expected)", file,
                            cJSON_IsString(a) ? a->valuestring : "?");
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (s == SM_OK && rs && !cJSON_IsNull(rs)) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!ty) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "default"))
            s = sm_fail(SM_ERR_UNSUPPORTED, "%s: rope_scaling \"%s\" is not supported", file,
                        cJSON_IsString(ty) ? ty->valuestring : "?");
    }
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "use_sliding_window");
    if (s == SM_OK && cJSON_IsTrue(sw))
        s = sm_fail(SM_ERR_UNSUPPORTED, "%s: sliding-window attention is not supported", file);
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(root, "mlp_bias");
    if (s == SM_OK && cJSON_IsTrue(mb))
        s = sm_fail(SM_ERR_UNSUPPORTED, "%s: MLP biases (mlp_bias) are not supported", file);
    cJSON_Delete(root);
    return s;
}

// Biases other than q/k/v change the arithmetic: refuse them instead of ignoring them.
static sm_status check_biases(const hf_ctx *h) {
    for (int i = 0; i < sm_st_count(h->st); i++) {
        const sm_tensor_info *t = sm_st_get(h->st, i);
        if (!ends_with(t->name, ".bias")) continue;
        if (ends_with(t->name, "q_proj.bias") || ends_with(t->name, "k_proj.bias") ||
            ends_with(t->name, "v_proj.bias"))
            continue;
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: tensor \"%s\": only q, k and v biases are "
                       "supported",
                       t->file, t->name);
    }
    return SM_OK;
}

static sm_status load_weights(const hf_ctx *h, sm_model *m, const sm_model_config *cfg) {
    const sm_model_info *f = &m->info;
    int64_t D = f->dim, q_dim = sm_model_q_dim(m), kv_dim = sm_model_kv_dim(m);
    sm_status s = check_biases(h);
    char name[256];
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((s = (x)) != SM_OK) return s;                                                          \
    } while (0)
    TRY(s);
    for (int64_t l = 0; l < f->n_layers; l++) {
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)l);
        TRY(load_vec(h, name, D, m->rms_att + l * D));
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight",
                 (long long)l);
        TRY(load_vec(h, name, D, m->rms_ffn + l * D));
        for (int k = 0; k < SM_LIN_PER_LAYER; k++) {
            int64_t i = l * SM_LIN_PER_LAYER + k, r, c;
            sm_model_linear_shape(m, i, &r, &c);
            TRY(load_op(h, m->names[i], r, c, &m->ops[i]));
        }
        if (m->bias) {
            static const char *const qkv[3] = {"q", "k", "v"};
            float *b = m->bias + l * (q_dim + 2 * kv_dim); // (q_dim + 2 kv_dim)
            for (int k = 0; k < 3; k++) {
                snprintf(name, sizeof name, "model.layers.%lld.self_attn.%s_proj.bias",
                         (long long)l, qkv[k]);
                TRY(load_vec(h, name, k ? kv_dim : q_dim, b));
                b += k ? kv_dim : q_dim;
            }
        }
    }
    TRY(load_vec(h, "model.norm.weight", D, m->rms_final));
    int64_t head = f->n_linear - 1;
    if (cfg->tie_word_embeddings) {
        TRY(load_op(h, "model.embed_tokens.weight", f->vocab_size, D, &m->ops[head]));
    } else {
        if (!sm_st_find(h->st, "lm_head.weight") && !sm_st_has_op(h->st, "lm_head.weight"))
            return sm_fail(SM_ERR_NOT_FOUND,
                           "%s: missing tensor \"lm_head.weight\" "
                           "(tie_word_embeddings is false)",
                           h->where);
        TRY(load_op(h, "lm_head.weight", f->vocab_size, D, &m->ops[head]));
    }
    if (!sm_model_share_embedding(m)) TRY(load_embedding(h, m));
#undef TRY
    return SM_OK;
}

// The sizes that sm_model_alloc allocates by (layers x hidden_size norm vectors, per-layer
// tables, q/k/v biases) checked against the tensors before anything is allocated: a config.json
// asking for 2^31 - 1 layers or a hidden_size of 2^31 - 1 is refused here with the key named,
// instead of allocating gigabytes first and finding the tensors missing afterwards.
static sm_status check_config_tensors(const char *config, const sm_model_config *cfg,
                                      const hf_ctx *h) {
    char name[256], got[128];
    const sm_tensor_info *t = sm_st_find(h->st, "model.norm.weight");
    if (!t) return sm_fail(SM_ERR_NOT_FOUND, "%s: missing tensor \"model.norm.weight\"", h->where);
    if (t->ndim != 1 || t->shape[0] != cfg->hidden_size) {
        shape_str(t, got, sizeof got);
        return sm_fail(SM_ERR_SHAPE,
                       "%s: hidden_size = %lld, but tensor \"model.norm.weight\" in %s has shape "
                       "%s",
                       config, (long long)cfg->hidden_size, t->file, got);
    }
    // Every layer has its two norm tensors: more layers than half the tensors cannot be there.
    int64_t L = cfg->num_hidden_layers;
    snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)(L - 1));
    if (L > sm_st_count(h->st) / 2 || !sm_st_find(h->st, name))
        return sm_fail(SM_ERR_SHAPE,
                       "%s: num_hidden_layers = %lld, but %s has no tensor \"%s\" (%d tensors "
                       "in all)",
                       config, (long long)L, h->where, name, sm_st_count(h->st));
    // q/k/v biases are allocated for every layer from n_heads and n_kv_heads x head_dim.
    static const char *const qkv[3] = {"q", "k", "v"};
    int64_t dims[3] = {cfg->num_attention_heads * cfg->head_dim,
                       cfg->num_key_value_heads * cfg->head_dim,
                       cfg->num_key_value_heads * cfg->head_dim};
    if (!sm_st_find(h->st, "model.layers.0.self_attn.q_proj.bias")) return SM_OK;
    for (int k = 0; k < 3; k++) {
        snprintf(name, sizeof name, "model.layers.0.self_attn.%s_proj.bias", qkv[k]);
        t = sm_st_find(h->st, name);
        if (t && t->ndim == 1 && t->shape[0] == dims[k]) continue;
        if (t) shape_str(t, got, sizeof got);
        return sm_fail(SM_ERR_SHAPE, "%s: %s x head_dim = %lld x %lld, but tensor \"%s\" %s%s",
                       config, k ? "num_key_value_heads" : "num_attention_heads",
                       (long long)(k ? cfg->num_key_value_heads : cfg->num_attention_heads),
                       (long long)cfg->head_dim, name, t ? "has shape " : "is missing",
                       t ? got : "");
    }
    return SM_OK;
}

sm_status sm_model_load_hf(const char *path, sm_model **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return sm_fail(SM_ERR_IO, "%s: no such file or directory", path);
    char *dir = NULL, *config = NULL;
    if (S_ISDIR(sb.st_mode)) {
        dir = strdup(path);
    } else {
        char *tmp = strdup(path);
        dir = tmp ? strdup(dirname(tmp)) : NULL;
        free(tmp);
    }
    if (!dir || asprintf(&config, "%s/config.json", dir) < 0) {
        free(dir);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    free(dir);
    sm_model_config cfg;
    sm_st *st = NULL;
    sm_model *m = NULL;
    sm_status s = sm_config_load(config, &cfg);
    if (s == SM_OK) s = check_config_extras(config, &cfg);
    sm_model_info info = {0};
    if (s == SM_OK) {
        snprintf(info.arch, sizeof info.arch, "%s", cfg.model_type);
        snprintf(info.format, sizeof info.format, "safetensors");
        info.dim = cfg.hidden_size;
        info.hidden_dim = cfg.intermediate_size;
        info.n_layers = cfg.num_hidden_layers;
        info.n_heads = cfg.num_attention_heads;
        info.n_kv_heads = cfg.num_key_value_heads;
        info.head_dim = cfg.head_dim;
        info.vocab_size = cfg.vocab_size;
        info.max_seq_len = cfg.max_position_embeddings;
        info.rms_eps = cfg.rms_norm_eps;
        info.rope_theta = cfg.rope_theta;
        info.rope_layout = SM_ROPE_HALF;
        info.tied = cfg.tie_word_embeddings;
        info.bos_id = cfg.bos_token_id >= 0 && cfg.bos_token_id < cfg.vocab_size
                          ? (int32_t)cfg.bos_token_id
                          : -1;
        info.eos_id = cfg.eos_token_id >= 0 && cfg.eos_token_id < cfg.vocab_size
                          ? (int32_t)cfg.eos_token_id
                          : -1;
        s = sm_model_check_dims(&info, config);
    }
    if (s == SM_OK) s = sm_st_open(path, &st);
    hf_ctx h = {.st = st, .where = path};
    if (s == SM_OK) s = check_config_tensors(config, &cfg, &h);
    if (s == SM_OK) {
        info.qkv_bias = sm_st_find(st, "model.layers.0.self_attn.q_proj.bias") != NULL;
        s = sm_model_alloc(&info, &m);
    }
    if (s == SM_OK) s = load_weights(&h, m, &cfg);
    if (s == SM_OK) s = sm_model_finish(m);
    sm_st_close(st);
    free(config);
    if (s != SM_OK) {
        sm_model_free(m);
        return s;
    }
    *out = m;
    return SM_OK;
}
