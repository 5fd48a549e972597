// A Hugging Face model directory: config.json and model.safetensors from the input (config SEP
// safetensors): sm_model_load checks the config against the tensors (shapes, dtypes, tied heads,
// biases, stored structmat operators); an accepted model runs a short prefill and decode.
#include "fuzz.h"
#include "structmat_model.h"

#include <unistd.h>

int sm_fuzz_model_hf(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    const uint8_t *piece[2];
    size_t len[2];
    int k = sm_fuzz_split(data, size, piece, len, 2);
    char config[256], weights[256];
    sm_fuzz_path(config, sizeof config, "model_hf", "config.json");
    sm_fuzz_path(weights, sizeof weights, "model_hf", "model.safetensors");
    sm_fuzz_write(config, piece[0], len[0]);
    if (k > 1)
        sm_fuzz_write(weights, piece[1], len[1]);
    else
        unlink(weights);
    // Configs that ask for absurd sizes (2^31 - 1 layers, hidden_size 2^31 - 1; regression
    // inputs in tests/regress/model_hf) must be refused against the tensors before the loader
    // allocates: libFuzzer's -rss_limit_mb catches one that is not.
    sm_model *m = (sm_model *)1;
    if (sm_model_load(sm_fuzz_dir("model_hf"), &m) != SM_OK) {
        SM_FUZZ_CHECK(m == NULL && sm_last_error()[0], "failed load");
        return 0;
    }
    sm_fuzz_exercise_model(m);
    sm_model_free(m);
    return 1;
}

SM_FUZZ_MAIN(model_hf)
