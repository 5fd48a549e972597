// The model object: allocation, the linear-layer table, loading by path, info.
#include "model.h"

#include <string.h>
#include <sys/stat.h>

static const char *const k_lin_names[SM_LIN_PER_LAYER] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

sm_status sm_model_check_dims(const sm_model_info *i, const char *where) {
    struct {
        const char *name;
        int64_t v;
    } pos[] = {{"dim", i->dim},
               {"hidden_dim", i->hidden_dim},
               {"n_layers", i->n_layers},
               {"n_heads", i->n_heads},
               {"n_kv_heads", i->n_kv_heads},
               {"head_dim", i->head_dim},
               {"vocab_size", i->vocab_size},
               {"max_seq_len", i->max_seq_len}};
    for (size_t k = 0; k < sizeof pos / sizeof pos[0]; k++)
        if (pos[k].v <= 0 || pos[k].v > INT32_MAX)
            return sm_fail(SM_ERR_FORMAT, "%s: %s = %lld is not a positive 32-bit size", where,
                           pos[k].name, (long long)pos[k].v);
    if (i->n_heads % i->n_kv_heads)
        return sm_fail(SM_ERR_FORMAT, "%s: n_kv_heads = %lld does not divide n_heads = %lld", where,
                       (long long)i->n_kv_heads, (long long)i->n_heads);
    if (i->head_dim % 2 || i->head_dim > SM_MAX_HEAD_DIM)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: head_dim = %lld (RoPE needs an even head_dim of "
                       "at most %d)",
                       where, (long long)i->head_dim, SM_MAX_HEAD_DIM);
    if (!(i->rms_eps > 0) || !(i->rope_theta > 0))
        return sm_fail(SM_ERR_FORMAT, "%s: rms_eps and rope_theta must be positive", where);
    return SM_OK;
}

sm_status sm_model_alloc(const sm_model_info *info, sm_model **out) {
    *out = NULL;
    const sm_model_info *i = info;
    SM_ASSERT(i->dim > 0 && i->n_layers > 0 && i->n_heads > 0 && i->n_kv_heads > 0 &&
              i->head_dim > 0 && i->vocab_size > 0 && i->hidden_dim > 0);
    sm_model *m = calloc(1, sizeof *m);
    if (!m) return sm_fail(SM_ERR_ALLOC, "out of memory");
    m->info = *info;
    int64_t L = i->n_layers, nlin = L * SM_LIN_PER_LAYER + 1;
    m->info.n_linear = nlin;
    int64_t q_dim = i->n_heads * i->head_dim, kv_dim = i->n_kv_heads * i->head_dim;
    int64_t nbias = i->qkv_bias ? L * (q_dim + 2 * kv_dim) : 0;
    int64_t nvec = 2 * L * i->dim + i->dim + nbias;
    m->ops = calloc((size_t)nlin, sizeof *m->ops);
    m->names = calloc((size_t)nlin, sizeof *m->names);
    m->params = sm_calloc((size_t)nvec, sizeof(float));
    bool ok = m->ops && m->names && m->params;
    for (int64_t k = 0; k < nlin && ok; k++) {
        int r = k == nlin - 1 ? asprintf(&m->names[k], "lm_head.weight")
                              : asprintf(&m->names[k], "model.layers.%lld.%s.weight",
                                         (long long)(k / SM_LIN_PER_LAYER),
                                         k_lin_names[k % SM_LIN_PER_LAYER]);
        if (r < 0) {
            m->names[k] = NULL;
            ok = false;
        }
    }
    if (!ok) {
        sm_model_free(m);
        return sm_fail(SM_ERR_ALLOC, "out of memory for a model of %lld layers", (long long)L);
    }
    m->rms_att = m->params;                               // (L, dim)
    m->rms_ffn = m->rms_att + L * i->dim;                 // (L, dim)
    m->rms_final = m->rms_ffn + L * i->dim;               // (dim)
    m->bias = i->qkv_bias ? m->rms_final + i->dim : NULL; // (L, q_dim + 2 kv_dim)
    m->info.other_bytes = nvec * (int64_t)sizeof(float);
    *out = m;
    return SM_OK;
}

void sm_model_free(sm_model *m) {
    if (!m) return;
    SM_ASSERT(__atomic_load_n(&m->n_contexts, __ATOMIC_SEQ_CST) == 0);
    for (int64_t k = 0; m->ops && k < m->info.n_linear; k++) sm_op_free(m->ops[k]);
    for (int64_t k = 0; m->names && k < m->info.n_linear; k++) free(m->names[k]);
    free(m->ops);
    free(m->names);
    sm_free(m->params);
    sm_free(m->embed_own);
    free(m);
}

void sm_model_linear_shape(const sm_model *m, int64_t i, int64_t *rows, int64_t *cols) {
    const sm_model_info *f = &m->info;
    int64_t q_dim = sm_model_q_dim(m), kv_dim = sm_model_kv_dim(m);
    if (i == f->n_linear - 1) {
        *rows = f->vocab_size;
        *cols = f->dim;
        return;
    }
    switch (i % SM_LIN_PER_LAYER) {
    case SM_LIN_Q:
        *rows = q_dim, *cols = f->dim;
        break;
    case SM_LIN_K:
    case SM_LIN_V:
        *rows = kv_dim, *cols = f->dim;
        break;
    case SM_LIN_O:
        *rows = f->dim, *cols = q_dim;
        break;
    case SM_LIN_GATE:
    case SM_LIN_UP:
        *rows = f->hidden_dim, *cols = f->dim;
        break;
    default:
        *rows = f->dim, *cols = f->hidden_dim;
        break; // down
    }
}

// The stored matrix of a plain dense operator (f32, f16 or bf16), or NULL for any other.
static const void *dense_matrix(const sm_op *op, sm_dtype *dtype) {
    const char *spec = sm_op_spec(op);
    if (strcmp(spec, "dense") && strcmp(spec, "dense:dtype=f16") &&
        strcmp(spec, "dense:dtype=bf16"))
        return NULL;
    sm_part *parts = NULL;
    int np = 0;
    if (sm_op_parts(op, &parts, &np) != SM_OK) {
        sm_error_clear();
        return NULL;
    }
    const void *data = NULL;
    if (np == 1 && !strcmp(parts[0].name, "W")) {
        data = parts[0].data;
        *dtype = parts[0].dtype;
    }
    free(parts);
    return data;
}

// A tied model reads its embedding rows from lm_head's own matrix when lm_head is plain dense,
// so the table is stored once. Returns whether the embedding is now such a view.
bool sm_model_share_embedding(sm_model *m) {
    sm_dtype dt;
    const sm_op *head = m->ops[m->info.n_linear - 1];
    const void *w = m->info.tied && head ? dense_matrix(head, &dt) : NULL;
    if (!w) return false;
    sm_free(m->embed_own);
    m->embed_own = NULL;
    m->embed = w;
    m->embed_dtype = dt;
    return true;
}

static void sum_info(sm_model *m) {
    m->info.linear_params = m->info.linear_bytes = 0;
    for (int64_t k = 0; k < m->info.n_linear; k++) {
        m->info.linear_params += sm_op_nparams(m->ops[k]);
        m->info.linear_bytes += sm_op_nbytes(m->ops[k]);
    }
    m->info.embed_bytes =
        m->embed_own ? m->info.vocab_size * m->info.dim * (int64_t)sm_dtype_size(m->embed_dtype)
                     : 0;
}

sm_status sm_model_finish(sm_model *m) {
    for (int64_t k = 0; k < m->info.n_linear; k++) {
        int64_t r, c;
        sm_model_linear_shape(m, k, &r, &c);
        if (!m->ops[k]) return sm_fail(SM_ERR_NOT_FOUND, "no operator for %s", m->names[k]);
        if (sm_op_rows(m->ops[k]) != r || sm_op_cols(m->ops[k]) != c)
            return sm_fail(SM_ERR_SHAPE, "%s is %lldx%lld, the config implies %lldx%lld",
                           m->names[k], (long long)sm_op_rows(m->ops[k]),
                           (long long)sm_op_cols(m->ops[k]), (long long)r, (long long)c);
    }
    if (m->embed_own)
        m->embed = m->embed_own;
    else if (!sm_model_share_embedding(m))
        return sm_fail(SM_ERR_NOT_FOUND, "no token embedding");
    SM_ASSERT(m->embed_dtype == SM_DTYPE_F32 || m->embed_dtype == SM_DTYPE_F16 ||
              m->embed_dtype == SM_DTYPE_BF16);
    sum_info(m);
    return SM_OK;
}

void sm_model_get_info(const sm_model *m, sm_model_info *info) {
    *info = m->info;
}

const sm_op *sm_model_linear(const sm_model *m, int64_t i) {
    SM_ASSERT(i >= 0 && i < m->info.n_linear);
    return m->ops[i];
}

const char *sm_model_linear_name(const sm_model *m, int64_t i) {
    SM_ASSERT(i >= 0 && i < m->info.n_linear);
    return m->names[i];
}

sm_status sm_model_linear_set(sm_model *m, int64_t i, sm_op *op) {
    if (i < 0 || i >= m->info.n_linear || !op)
        return sm_fail(SM_ERR_ARG, "linear layer %lld: no such layer (0..%lld) or no operator",
                       (long long)i, (long long)m->info.n_linear - 1);
    int n = __atomic_load_n(&m->n_contexts, __ATOMIC_SEQ_CST);
    if (n)
        return sm_fail(SM_ERR_ARG, "cannot replace %s while %d context(s) of the model exist",
                       m->names[i], n);
    int64_t r, c;
    sm_model_linear_shape(m, i, &r, &c);
    if (sm_op_rows(op) != r || sm_op_cols(op) != c)
        return sm_fail(SM_ERR_SHAPE, "%s must be %lldx%lld, the operator is %lldx%lld", m->names[i],
                       (long long)r, (long long)c, (long long)sm_op_rows(op),
                       (long long)sm_op_cols(op));
    bool head = i == m->info.n_linear - 1;
    if (head && m->info.tied && !m->embed_own) {
        // The embedding is a view of the operator being replaced: keep a copy of it.
        size_t bytes = (size_t)(m->info.vocab_size * m->info.dim) * sm_dtype_size(m->embed_dtype);
        void *own = sm_alloc(bytes);
        if (!own) return sm_fail(SM_ERR_ALLOC, "out of memory for the embedding");
        memcpy(own, m->embed, bytes);
        m->embed_own = own;
        m->embed = own;
    }
    sm_op_free(m->ops[i]);
    m->ops[i] = op;
    if (head) m->info.tied = false;
    sum_info(m);
    return SM_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

bool sm_is_embedding_name(const char *name) {
    static const char *const pats[] = {"embed_tokens", "tok_embeddings", "wte.", "token_embd",
                                       "word_embeddings"};
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++)
        if (strstr(name, pats[i])) return true;
    return false;
}

bool sm_model_is_llama2c(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return false;
    return !ends_with(path, ".safetensors") && !ends_with(path, ".json") &&
           !sm_model_is_gguf(path);
}

sm_status sm_model_load(const char *path, sm_model **out) {
    *out = NULL;
    if (!path || !*path) return sm_fail(SM_ERR_ARG, "no model path");
    struct stat sb;
    if (stat(path, &sb) != 0) return sm_fail(SM_ERR_IO, "%s: no such file or directory", path);
    if (sm_model_is_gguf(path)) return sm_model_load_gguf(path, out);
    return sm_model_is_llama2c(path) ? sm_model_load_llama2c(path, out)
                                     : sm_model_load_hf(path, out);
}
