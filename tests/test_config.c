// Hugging Face config.json: the shared model's config, the documented defaults, token-id forms,
// and every missing or nonsensical required value refused naming the file and the key.
#include "testutil.h"

#include <unistd.h>

static char g_dir[64];
static char g_path[128];

static void write_config(const char *text) {
    FILE *f = fopen(g_path, "wb");
    if (!f || fputs(text, f) < 0) {
        fprintf(stderr, "cannot write %s\n", g_path);
        exit(1);
    }
    fclose(f);
}

static void test_shared_model(void) {
    sm_model_config c;
    const char *paths[] = {"models/shakespeare-llama-3m/config.json",
                           "models/shakespeare-llama-3m"};
    for (int i = 0; i < 2; i++) {
        CHECK_OK(sm_config_load(paths[i], &c));
        CHECK(strcmp(c.model_type, "llama") == 0);
        CHECK(c.hidden_size == 256 && c.intermediate_size == 768 && c.num_hidden_layers == 4);
        CHECK(c.num_attention_heads == 8 && c.num_key_value_heads == 4 && c.head_dim == 32);
        CHECK(c.vocab_size == 256 && c.max_position_embeddings == 256);
        CHECK(c.rms_norm_eps == 1e-5 && c.rope_theta == 10000.0);
        CHECK(!c.tie_word_embeddings);
        CHECK(c.bos_token_id == -1 && c.eos_token_id == -1);
        CHECK(strcmp(c.hidden_act, "silu") == 0 && strcmp(c.torch_dtype, "float32") == 0);
    }
}

#define REQUIRED                                                                                   \
    "\"hidden_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "                  \
    "\"vocab_size\": 1000, \"intermediate_size\": 200"

static void test_defaults(void) {
    sm_model_config c;
    write_config("{" REQUIRED "}");
    CHECK_OK(sm_config_load(g_path, &c));
    CHECK(c.hidden_size == 96 && c.num_hidden_layers == 2 && c.vocab_size == 1000);
    CHECK(c.intermediate_size == 200 && c.num_attention_heads == 6);
    CHECK(c.head_dim == 16 && c.num_key_value_heads == 6);
    CHECK(c.rope_theta == 10000.0 && c.rms_norm_eps == 1e-6);
    CHECK(c.bos_token_id == -1 && c.eos_token_id == -1 && !c.tie_word_embeddings);
    CHECK(strcmp(c.hidden_act, "silu") == 0 && c.model_type[0] == 0 && c.torch_dtype[0] == 0);

    // Token ids: a list gives its first entry, an empty list or null gives -1.
    write_config("{" REQUIRED ", \"bos_token_id\": [7, 8], \"eos_token_id\": 2}");
    CHECK_OK(sm_config_load(g_path, &c));
    CHECK(c.bos_token_id == 7 && c.eos_token_id == 2);
    write_config("{" REQUIRED ", \"bos_token_id\": [], \"eos_token_id\": null}");
    CHECK_OK(sm_config_load(g_path, &c));
    CHECK(c.bos_token_id == -1 && c.eos_token_id == -1);

    // An explicit head_dim need not divide hidden_size (Qwen3, Gemma); kv heads, theta and
    // eps given; rope_theta inside rope_parameters; "dtype" as newer transformers write it.
    write_config("{\"hidden_size\": 100, \"num_hidden_layers\": 1, \"num_attention_heads\": 8, "
                 "\"vocab_size\": 50, \"intermediate_size\": 64, \"head_dim\": 64, "
                 "\"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": "
                 "true, \"rope_parameters\": {\"rope_theta\": 1000000.0}, \"dtype\": \"bfloat16\","
                 " \"model_type\": \"qwen3\", \"max_position_embeddings\": 40960}");
    CHECK_OK(sm_config_load(g_path, &c));
    CHECK(c.head_dim == 64 && c.num_key_value_heads == 2 && c.rms_norm_eps == 1e-5);
    CHECK(c.rope_theta == 1e6 && c.tie_word_embeddings && !strcmp(c.torch_dtype, "bfloat16"));
    CHECK(!strcmp(c.model_type, "qwen3") && c.max_position_embeddings == 40960);
}

typedef struct bad {
    const char *json;
    sm_status st;
    const char *needle;
} bad;

static const bad k_bad[] = {
    {"{\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"vocab_size\": 1000, "
     "\"intermediate_size\": 200}",
     SM_ERR_FORMAT, "missing \"hidden_size\""},
    {"{\"hidden_size\": 96, \"num_attention_heads\": 6, \"vocab_size\": 1000, "
     "\"intermediate_size\": 200}",
     SM_ERR_FORMAT, "missing \"num_hidden_layers\""},
    {"{\"hidden_size\": 96, \"num_hidden_layers\": 2, \"vocab_size\": 1000, "
     "\"intermediate_size\": 200}",
     SM_ERR_FORMAT, "missing \"num_attention_heads\""},
    {"{\"hidden_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"intermediate_size\": 200}",
     SM_ERR_FORMAT, "missing \"vocab_size\""},
    {"{\"hidden_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 1000}",
     SM_ERR_FORMAT, "missing \"intermediate_size\""},
    {"{\"hidden_size\": null, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 1000, \"intermediate_size\": 200}",
     SM_ERR_FORMAT, "missing \"hidden_size\""},
    {"{\"hidden_size\": 0, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 1000, \"intermediate_size\": 200}",
     SM_ERR_FORMAT, "\"hidden_size\" must be a positive integer"},
    {"{\"hidden_size\": 96.5, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 1000, \"intermediate_size\": 200}",
     SM_ERR_FORMAT, "\"hidden_size\" must be a positive integer"},
    {"{\"hidden_size\": \"96\", \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 1000, \"intermediate_size\": 200}",
     SM_ERR_FORMAT, "\"hidden_size\" must be a positive integer"},
    {"{\"hidden_size\": 96, \"num_hidden_layers\": -2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 1000, \"intermediate_size\": 200}",
     SM_ERR_FORMAT, "\"num_hidden_layers\" must be a positive integer"},
    {"{\"hidden_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 0, "
     "\"vocab_size\": 1000, \"intermediate_size\": 200}",
     SM_ERR_FORMAT, "\"num_attention_heads\" must be a positive integer"},
    {"{\"hidden_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 0, \"intermediate_size\": 200}",
     SM_ERR_FORMAT, "\"vocab_size\" must be a positive integer"},
    {"{\"hidden_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 1000, \"intermediate_size\": 0}",
     SM_ERR_FORMAT, "\"intermediate_size\" must be a positive integer"},
    {"{\"hidden_size\": 100, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
     "\"vocab_size\": 1000, \"intermediate_size\": 200}",
     SM_ERR_FORMAT, "\"num_attention_heads\" = 6 does not divide \"hidden_size\" = 100"},
    {"{" REQUIRED ", \"num_key_value_heads\": 4}", SM_ERR_FORMAT,
     "\"num_key_value_heads\" = 4 does not divide \"num_attention_heads\" = 6"},
    {"{" REQUIRED ", \"num_key_value_heads\": 0}", SM_ERR_FORMAT,
     "\"num_key_value_heads\" must be a positive integer"},
    {"{" REQUIRED ", \"head_dim\": 0}", SM_ERR_FORMAT, "\"head_dim\" must be a positive integer"},
    {"{" REQUIRED ", \"rms_norm_eps\": -1e-6}", SM_ERR_FORMAT,
     "\"rms_norm_eps\" must be a positive number"},
    {"{" REQUIRED ", \"rope_theta\": 0}", SM_ERR_FORMAT, "\"rope_theta\" must be a positive"},
    {"{" REQUIRED ", \"rope_theta\": \"big\"}", SM_ERR_FORMAT, "\"rope_theta\" must be"},
    {"{" REQUIRED ", \"max_position_embeddings\": 0}", SM_ERR_FORMAT,
     "\"max_position_embeddings\" must be a positive integer"},
    {"{" REQUIRED ", \"bos_token_id\": -3}", SM_ERR_FORMAT, "\"bos_token_id\" must be a token"},
    {"{" REQUIRED ", \"eos_token_id\": [\"x\"]}", SM_ERR_FORMAT,
     "\"eos_token_id\" must be a token"},
    {"{" REQUIRED ", \"tie_word_embeddings\": \"yes\"}", SM_ERR_FORMAT,
     "\"tie_word_embeddings\" must be true or false"},
    {"{" REQUIRED ", \"hidden_act\": 3}", SM_ERR_FORMAT, "\"hidden_act\" must be a string"},
    {"{" REQUIRED ", \"hidden_act\": \"a-very-long-activation-name\"}", SM_ERR_UNSUPPORTED,
     "\"hidden_act\" = \"a-very-long-activation-name\" is longer than 15"},
    {"{" REQUIRED, SM_ERR_FORMAT, "not valid JSON"},
    {"{" REQUIRED "} trailing", SM_ERR_FORMAT, "not valid JSON"},
    {"[1]", SM_ERR_FORMAT, "not a JSON object"},
    {"", SM_ERR_FORMAT, "not valid JSON"},
};

static void test_bad(void) {
    sm_model_config c;
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        write_config(k_bad[i].json);
        sm_status s = sm_config_load(g_path, &c);
        if (s != k_bad[i].st || !strstr(sm_last_error(), k_bad[i].needle) ||
            !strstr(sm_last_error(), g_path)) {
            fprintf(stderr, "case %zu: %s \"%s\", expected %s with \"%s\" naming the file\n", i,
                    sm_status_str(s), sm_last_error(), sm_status_str(k_bad[i].st), k_bad[i].needle);
            g_failures++;
        }
    }
    CHECK_FAIL(sm_config_load("/nonexistent/structmat/config.json", &c), SM_ERR_IO,
               "/nonexistent/structmat/config.json");
    CHECK_FAIL(sm_config_load(g_dir, &c), SM_ERR_IO, "config.json"); // no config.json yet there
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/sm-test-config-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_path, sizeof g_path, "%s/cfg.json", g_dir);
    test_shared_model();
    test_defaults();
    test_bad();
    unlink(g_path);
    rmdir(g_dir);
    TEST_END();
}
