// Hugging Face config.json -> sm_model_config. Only the fields a Llama-family runtime needs are
// read; missing required fields and values that cannot describe a model are errors naming the
// file and the key.
#include "../base/base.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_MAX_BYTES (16 << 20)

typedef struct cfg_ctx {
    const char *path;
    const cJSON *root;
} cfg_ctx;

// A present, non-null key.
static const cJSON *get(const cfg_ctx *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static bool as_int(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || fabs(d) > 9007199254740992.0) return false;
    *out = (int64_t)d;
    return true;
}

// An integer > 0; def < 0 means required.
static sm_status get_pos_int(const cfg_ctx *c, const char *key, int64_t def, int64_t *out) {
    const cJSON *v = get(c, key);
    if (!v) {
        if (def < 0) return sm_fail(SM_ERR_FORMAT, "%s: missing \"%s\"", c->path, key);
        *out = def;
        return SM_OK;
    }
    if (!as_int(v, out) || *out <= 0)
        return sm_fail(SM_ERR_FORMAT, "%s: \"%s\" must be a positive integer", c->path, key);
    return SM_OK;
}

static sm_status get_pos_real(const cfg_ctx *c, const cJSON *v, const char *key, double def,
                              double *out) {
    if (!v) {
        *out = def;
        return SM_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble <= 0)
        return sm_fail(SM_ERR_FORMAT, "%s: \"%s\" must be a positive number", c->path, key);
    *out = v->valuedouble;
    return SM_OK;
}

static sm_status get_str(const cfg_ctx *c, const char *key, const char *def, char *out,
                         size_t cap) {
    const cJSON *v = get(c, key);
    const char *s = def;
    if (v) {
        if (!cJSON_IsString(v) || !v->valuestring)
            return sm_fail(SM_ERR_FORMAT, "%s: \"%s\" must be a string", c->path, key);
        s = v->valuestring;
    }
    if (strlen(s) >= cap)
        return sm_fail(SM_ERR_UNSUPPORTED, "%s: \"%s\" = \"%s\" is longer than %zu characters",
                       c->path, key, s, cap - 1);
    snprintf(out, cap, "%s", s);
    return SM_OK;
}

// A token id: an integer >= 0, null/absent (-1), or a list whose first entry is taken.
static sm_status get_token(const cfg_ctx *c, const char *key, int64_t *out) {
    const cJSON *v = get(c, key);
    *out = -1;
    if (v && cJSON_IsArray(v)) v = v->child; // NULL for an empty list
    if (!v || cJSON_IsNull(v)) return SM_OK;
    if (!as_int(v, out) || *out < 0) {
        *out = -1;
        return sm_fail(SM_ERR_FORMAT, "%s: \"%s\" must be a token id (an integer >= 0)", c->path,
                       key);
    }
    return SM_OK;
}

static sm_status parse(const cfg_ctx *c, sm_model_config *cfg) {
    const char *p = c->path;
    sm_status s = SM_OK;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((s = (x)) != SM_OK) return s;                                                          \
    } while (0)
    TRY(get_str(c, "model_type", "", cfg->model_type, sizeof cfg->model_type));
    TRY(get_pos_int(c, "hidden_size", -1, &cfg->hidden_size));
    TRY(get_pos_int(c, "intermediate_size", -1, &cfg->intermediate_size));
    TRY(get_pos_int(c, "num_hidden_layers", -1, &cfg->num_hidden_layers));
    TRY(get_pos_int(c, "num_attention_heads", -1, &cfg->num_attention_heads));
    TRY(get_pos_int(c, "vocab_size", -1, &cfg->vocab_size));
    TRY(get_pos_int(c, "num_key_value_heads", cfg->num_attention_heads, &cfg->num_key_value_heads));
    int64_t heads = cfg->num_attention_heads;
    if (!get(c, "head_dim") && cfg->hidden_size % heads != 0)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: \"num_attention_heads\" = %lld does not divide \"hidden_size\" = %lld",
                       p, (long long)heads, (long long)cfg->hidden_size);
    TRY(get_pos_int(c, "head_dim", cfg->hidden_size / heads, &cfg->head_dim));
    if (heads % cfg->num_key_value_heads != 0)
        return sm_fail(SM_ERR_FORMAT,
                       "%s: \"num_key_value_heads\" = %lld does not divide \"num_attention_heads\""
                       " = %lld",
                       p, (long long)cfg->num_key_value_heads, (long long)heads);
    TRY(get_pos_int(c, "max_position_embeddings", 2048, &cfg->max_position_embeddings));
    TRY(get_pos_real(c, get(c, "rms_norm_eps"), "rms_norm_eps", 1e-6, &cfg->rms_norm_eps));
    // Newer transformers versions move rope_theta into a rope_parameters object.
    const cJSON *theta = get(c, "rope_theta");
    const cJSON *rp = get(c, "rope_parameters");
    if (!theta && cJSON_IsObject(rp)) theta = cJSON_GetObjectItemCaseSensitive(rp, "rope_theta");
    if (theta && cJSON_IsNull(theta)) theta = NULL;
    TRY(get_pos_real(c, theta, "rope_theta", 10000.0, &cfg->rope_theta));
    const cJSON *tie = get(c, "tie_word_embeddings");
    if (tie && !cJSON_IsBool(tie))
        return sm_fail(SM_ERR_FORMAT, "%s: \"tie_word_embeddings\" must be true or false", p);
    cfg->tie_word_embeddings = tie && cJSON_IsTrue(tie);
    TRY(get_token(c, "bos_token_id", &cfg->bos_token_id));
    TRY(get_token(c, "eos_token_id", &cfg->eos_token_id));
    TRY(get_str(c, "hidden_act", "silu", cfg->hidden_act, sizeof cfg->hidden_act));
    // "dtype" replaced "torch_dtype" in newer transformers versions.
    const char *dkey = get(c, "torch_dtype") ? "torch_dtype" : "dtype";
    TRY(get_str(c, dkey, "", cfg->torch_dtype, sizeof cfg->torch_dtype));
#undef TRY
    return SM_OK;
}

sm_status sm_config_load(const char *path, sm_model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    char *file = NULL;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        if (asprintf(&file, "%s/config.json", path) < 0) file = NULL;
    } else {
        file = strdup(path);
    }
    if (!file) return sm_fail(SM_ERR_ALLOC, "out of memory");
    char *text = NULL;
    sm_status s = sm_read_file(file, &text, NULL, CONFIG_MAX_BYTES);
    cfg_ctx c = {.path = file};
    if (s == SM_OK) {
        c.root = cJSON_ParseWithOpts(text, NULL, true);
        if (!c.root)
            s = sm_fail(SM_ERR_FORMAT, "%s: not valid JSON", file);
        else if (!cJSON_IsObject(c.root))
            s = sm_fail(SM_ERR_FORMAT, "%s: not a JSON object", file);
    }
    if (s == SM_OK) s = parse(&c, cfg);
    if (s != SM_OK) memset(cfg, 0, sizeof *cfg);
    cJSON_Delete((cJSON *)c.root);
    free(text);
    free(file);
    return s;
}
