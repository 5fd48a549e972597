// A llama2.c checkpoint (.bin: the legacy version-0 header or version 1 "ak42"): sm_model_load
// on the input as a file; an accepted model runs a short prefill and decode.
#include "fuzz.h"
#include "structmat_model.h"

int sm_fuzz_llama2c(const uint8_t *data, size_t size) {
    sm_fuzz_init();
    char path[256];
    sm_fuzz_path(path, sizeof path, "llama2c", "model.bin");
    sm_fuzz_write(path, data, size);
    sm_model *m = (sm_model *)1;
    if (sm_model_load(path, &m) != SM_OK) {
        SM_FUZZ_CHECK(m == NULL && sm_last_error()[0], "failed load");
        return 0;
    }
    sm_model_info f;
    sm_model_get_info(m, &f);
    // The file holds every weight in F32, so the linear layers cannot hold more than it does.
    SM_FUZZ_CHECK(f.linear_params <= (int64_t)(size / 4) || f.tied,
                  "%lld linear parameters from a %zu-byte file", (long long)f.linear_params, size);
    sm_fuzz_exercise_model(m);
    sm_model_free(m);
    return 1;
}

SM_FUZZ_MAIN(llama2c)
