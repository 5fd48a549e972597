// Saving a model as a Hugging Face directory that sm_model_load reads back: the way a model whose
// linear layers were replaced (sm_model_linear_set) becomes a checkpoint.
#include "model.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

const void *sm_model_embedding(const sm_model *m, sm_dtype *dtype) {
    *dtype = m->embed_dtype;
    return m->embed;
}

// The single stored matrix of a plain dense operator (f32, f16, bf16), or NULL: such a layer is
// written as an ordinary tensor, readable by any safetensors user.
static const sm_part *plain_part(const sm_op *op, const sm_part *parts, int np) {
    const char *spec = sm_op_spec(op);
    bool plain = !strcmp(spec, "dense") || !strcmp(spec, "dense:dtype=f16") ||
                 !strcmp(spec, "dense:dtype=bf16");
    return plain && np == 1 && !strcmp(parts[0].name, "W") ? &parts[0] : NULL;
}

typedef struct saver {
    sm_st_writer *w;
    sm_part **parts; // (n_linear) views kept alive until the file is written
    int nops;        // operators stored with structmat metadata
} saver;

// Adds operator op under name: a plain tensor or its parts and structmat metadata.
static sm_status add_op(saver *sv, int64_t i, const char *name, const sm_op *op) {
    int np = 0;
    sm_status s = sm_op_parts(op, &sv->parts[i], &np);
    if (s != SM_OK) return s;
    const sm_part *p = plain_part(op, sv->parts[i], np);
    if (p) return sm_st_writer_add(sv->w, name, p->dtype, 2, p->shape, p->data, p->nbytes);
    for (int j = 0; j < np && s == SM_OK; j++) {
        p = &sv->parts[i][j];
        char *tn = NULL;
        if (asprintf(&tn, "%s.%s", name, p->name) < 0)
            return sm_fail(SM_ERR_ALLOC, "out of memory");
        s = sm_st_writer_add(sv->w, tn, p->dtype, p->ndim, p->shape, p->data, p->nbytes);
        free(tn);
    }
    char *ks = NULL, *kh = NULL, shape[64];
    snprintf(shape, sizeof shape, "%lld,%lld", (long long)sm_op_rows(op),
             (long long)sm_op_cols(op));
    if (asprintf(&ks, "structmat.spec.%s", name) < 0) ks = NULL;
    if (asprintf(&kh, "structmat.shape.%s", name) < 0) kh = NULL;
    if (s == SM_OK && (!ks || !kh)) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    if (s == SM_OK) s = sm_st_writer_meta(sv->w, ks, sm_op_spec(op));
    if (s == SM_OK) s = sm_st_writer_meta(sv->w, kh, shape);
    free(ks);
    free(kh);
    sv->nops++;
    return s;
}

static sm_status add_vec(saver *sv, const char *name, const float *x, int64_t n) {
    return sm_st_writer_add(sv->w, name, SM_DTYPE_F32, 1, &n, x, (size_t)n * sizeof(float));
}

// Every tensor of m into sv->w.
static sm_status add_tensors(saver *sv, const sm_model *m) {
    const sm_model_info *f = &m->info;
    int64_t D = f->dim, q_dim = sm_model_q_dim(m), kv_dim = sm_model_kv_dim(m);
    int64_t head = f->n_linear - 1;
    char name[256];
    sm_status s = SM_OK;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((s = (x)) != SM_OK) return s;                                                          \
    } while (0)
    for (int64_t i = 0; i < head; i++) TRY(add_op(sv, i, m->names[i], m->ops[i]));
    for (int64_t l = 0; l < f->n_layers; l++) {
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)l);
        TRY(add_vec(sv, name, m->rms_att + l * D, D));
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight",
                 (long long)l);
        TRY(add_vec(sv, name, m->rms_ffn + l * D, D));
        if (!m->bias) continue;
        const float *b = m->bias + l * (q_dim + 2 * kv_dim); // (q_dim + 2 kv_dim)
        static const char *const qkv[3] = {"q", "k", "v"};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "model.layers.%lld.self_attn.%s_proj.bias", (long long)l,
                     qkv[k]);
            TRY(add_vec(sv, name, b, k ? kv_dim : q_dim));
            b += k ? kv_dim : q_dim;
        }
    }
    TRY(add_vec(sv, "model.norm.weight", m->rms_final, D));
    // Tied: the output head is the embedding, stored once under the embedding's name (the
    // loader reads the embedding back from it, an operator's as its dense matrix).
    if (f->tied) return add_op(sv, head, "model.embed_tokens.weight", m->ops[head]);
    int64_t shape[2] = {f->vocab_size, D};
    TRY(sm_st_writer_add(sv->w, "model.embed_tokens.weight", m->embed_dtype, 2, shape, m->embed,
                         (size_t)(f->vocab_size * D) * sm_dtype_size(m->embed_dtype)));
    return add_op(sv, head, "lm_head.weight", m->ops[head]);
#undef TRY
}

static sm_status write_config(const sm_model *m, const char *path, bool force) {
    const sm_model_info *f = &m->info;
    cJSON *c = cJSON_CreateObject(), *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(strcmp(f->arch, "qwen2") ? "LlamaForCausalLM"
                                                                           : "Qwen2ForCausalLM"));
    cJSON_AddStringToObject(c, "model_type", f->arch);
    cJSON_AddNumberToObject(c, "hidden_size", (double)f->dim);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)f->hidden_dim);
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)f->n_layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)f->n_heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)f->n_kv_heads);
    cJSON_AddNumberToObject(c, "head_dim", (double)f->head_dim);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "rms_norm_eps", f->rms_eps);
    cJSON_AddNumberToObject(c, "rope_theta", f->rope_theta);
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)f->max_seq_len);
    cJSON_AddNumberToObject(c, "vocab_size", (double)f->vocab_size);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", f->tied);
    if (f->bos_id >= 0)
        cJSON_AddNumberToObject(c, "bos_token_id", f->bos_id);
    else
        cJSON_AddNullToObject(c, "bos_token_id");
    if (f->eos_id >= 0)
        cJSON_AddNumberToObject(c, "eos_token_id", f->eos_id);
    else
        cJSON_AddNullToObject(c, "eos_token_id");
    cJSON *sm = cJSON_AddObjectToObject(c, "structmat");
    cJSON_AddNumberToObject(sm, "format_version", SM_FORMAT_VERSION);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    if (!text) return sm_fail(SM_ERR_ALLOC, "out of memory");
    sm_atomic_file a;
    sm_status s = sm_atomic_open(&a, path, force);
    if (s == SM_OK) {
        if (fputs(text, a.f) < 0 || fputc('\n', a.f) == EOF) {
            s = sm_fail(SM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
            sm_atomic_abort(&a);
        } else {
            s = sm_atomic_commit(&a);
        }
    }
    free(text);
    return s;
}

// Whether dir may be replaced with force: a checkpoint (it has a config.json) or empty. Any
// other directory ("--save-model ~ --force") is not ours to delete.
static bool replaceable(const char *dir, const char *cfg) {
    struct stat sb;
    if (stat(cfg, &sb) == 0) return true;
    DIR *d = opendir(dir);
    if (!d) return false;
    bool empty = true;
    for (struct dirent *e; empty && (e = readdir(d)) != NULL;)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

sm_status sm_model_save(const sm_model *m, const char *dir, bool force) {
    if (!dir || !*dir) return sm_fail(SM_ERR_ARG, "save: no directory given");
    if (m->info.rope_layout != SM_ROPE_HALF)
        return sm_fail(SM_ERR_UNSUPPORTED,
                       "%s: the model uses interleaved RoPE (llama2.c), which a config.json "
                       "cannot express",
                       dir);
    struct stat sb;
    char *cfg = NULL, *st = NULL;
    if (asprintf(&cfg, "%s/config.json", dir) < 0) cfg = NULL;
    sm_status s = cfg ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
    if (s == SM_OK && force && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) && !replaceable(dir, cfg))
        s = sm_fail(SM_ERR_EXISTS,
                    "%s: a directory that holds no checkpoint (no config.json): not replaced", dir);
    free(cfg);
    cfg = NULL;
    // Written into a temporary sibling directory renamed into place at the end: DIR is at every
    // moment absent, the old directory or the complete new one.
    sm_atomic_dir ad = {0};
    if (s == SM_OK) s = sm_atomic_dir_open(&ad, dir, force);
    if (s != SM_OK) return s;
    if (asprintf(&cfg, "%s/config.json", ad.tmp) < 0) cfg = NULL;
    if (asprintf(&st, "%s/model.safetensors", ad.tmp) < 0) st = NULL;
    if (!cfg || !st) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    saver sv = {.w = sm_st_writer_init(),
                .parts = calloc((size_t)m->info.n_linear, sizeof *sv.parts)};
    if (s == SM_OK && (!sv.w || !sv.parts)) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    if (s == SM_OK) s = add_tensors(&sv, m);
    char ver[16];
    snprintf(ver, sizeof ver, "%d", SM_FORMAT_VERSION);
    if (s == SM_OK && sv.nops) s = sm_st_writer_meta(sv.w, "structmat.format_version", ver);
    if (s == SM_OK) s = sm_st_writer_write(sv.w, st, false);
    if (s == SM_OK) s = write_config(m, cfg, false);
    if (s == SM_OK)
        s = sm_atomic_dir_commit(&ad); // on failure it removes the temporary directory
    else
        sm_atomic_dir_abort(&ad);
    for (int64_t i = 0; sv.parts && i < m->info.n_linear; i++) free(sv.parts[i]);
    free(sv.parts);
    sm_st_writer_free(sv.w);
    free(cfg);
    free(st);
    return s;
}
