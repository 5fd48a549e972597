// A Hugging Face config.json: sm_config_load on the input as a file.
#include "fuzz.h"

#include <string.h>

static bool terminated(const char *s, size_t cap) {
    return memchr(s, 0, cap) != NULL;
}

int sm_fuzz_config(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    char path[256];
    sm_fuzz_path(path, sizeof path, "config", "config.json");
    sm_fuzz_write(path, data, size);
    sm_model_config c;
    memset(&c, 0x5a, sizeof c);
    if (sm_config_load(path, &c) != SM_OK) {
        SM_FUZZ_CHECK(sm_last_error()[0], "failed load without a message");
        SM_FUZZ_CHECK(c.hidden_size == 0 && c.vocab_size == 0, "failed load left values");
        return 0;
    }
    // What the loader promises of an accepted config.
    SM_FUZZ_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 &&
                      c.num_attention_heads > 0 && c.num_key_value_heads > 0 && c.head_dim > 0 &&
                      c.vocab_size > 0 && c.max_position_embeddings > 0,
                  "a size is not positive");
    SM_FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, "kv heads %lld, heads %lld",
                  (long long)c.num_key_value_heads, (long long)c.num_attention_heads);
    SM_FUZZ_CHECK(c.rms_norm_eps > 0 && c.rope_theta > 0, "eps %g theta %g", c.rms_norm_eps,
                  c.rope_theta);
    SM_FUZZ_CHECK(c.bos_token_id >= -1 && c.eos_token_id >= -1, "token ids");
    SM_FUZZ_CHECK(terminated(c.model_type, sizeof c.model_type) &&
                      terminated(c.hidden_act, sizeof c.hidden_act) &&
                      terminated(c.torch_dtype, sizeof c.torch_dtype),
                  "a string is not terminated");
    return 1;
}

SM_FUZZ_MAIN(config)
