// Activation-aware fitting on the shared model with statistics collected by the runtime (the
// first 16384 bytes of data/tinyshakespeare.txt in chunks of 256 tokens): for every one of the 28
// layer matrices, the activation-aware relative error sqrt(tr(dW H dW^T) / tr(W H W^T)) of
// - lowrank:ratio=0.5 fitted with the statistics (whitened SVD) is below the plain SVD's;
// - sparse:density=0.5 and sparse:nm=2:4 with them (Wanda scores + least-squares update) are
//   below magnitude pruning's;
// - monarch, blocklowrank (blocks=4) and blast (blocks=4) at ratio=0.5 and cur:ratio=0.5 with
//   them (activation-aware block coordinate descent, PrecGD on the activation loss, U solved for
//   the activation objective) are below the same structures fitted without.
// `test_slow_actaware_model --table` prints the errors (BENCHMARKS.md).
#include "structmat_model.h"
#include "testutil.h"

static double act_error(const float *W, int64_t m, int64_t n, const char *spec, const sm_stats *s,
                        bool use) {
    sm_op *op = NULL;
    sm_fit_opts o = {.seed = 1, .stats = use ? s : NULL};
    CHECK_OK(sm_op_fit(W, m, n, spec, &o, &op));
    if (!op) return INFINITY;
    float *D = malloc(sizeof(float) * (size_t)(m * n));
    double e = INFINITY;
    CHECK_OK(sm_op_to_dense(op, D));
    CHECK_OK(sm_act_rel_error(W, D, m, n, s->gram, &e));
    free(D);
    sm_op_free(op);
    return e;
}

int main(int argc, char **argv) {
    bool table = argc > 1 && strcmp(argv[1], "--table") == 0;
    const char *path = "models/shakespeare-llama-3m";
    sm_model *model = NULL;
    sm_tokenizer *tok = NULL;
    sm_calib *cal = NULL;
    CHECK_OK(sm_model_load(path, &model));
    if (model) CHECK_OK(sm_tokenizer_load_for_model(path, model, &tok));
    char *text = malloc(16384);
    FILE *f = fopen("data/tinyshakespeare.txt", "rb");
    size_t len = f ? fread(text, 1, 16384, f) : 0;
    if (f) fclose(f);
    CHECK(len == 16384);
    if (!model || !tok || len == 0) return 1;
    int32_t *ids = NULL;
    int64_t nids = 0;
    CHECK_OK(sm_tokenizer_encode(tok, text, len, false, &ids, &nids));
    CHECK_OK(sm_calib_init(model, 256, &cal));
    for (int64_t i = 0; cal && i < nids; i += 256)
        CHECK_OK(sm_calib_run(cal, ids + i, nids - i < 256 ? nids - i : 256));
    if (!cal) return 1;
    if (table)
        printf("| matrix | lowrank | + stats | sparse 0.5 | + stats | 2:4 | + stats | monarch | "
               "+ stats | blocklowrank | + stats | blast | + stats | cur | + stats |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    const char *names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                           "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                           "mlp.down_proj"};
    const char *specs[] = {"lowrank:ratio=0.5",      "sparse:density=0.5",
                           "sparse:nm=2:4",          "monarch:blocks=4,ratio=0.5",
                           "blocklowrank:blocks=4,ratio=0.5", "blast:blocks=4,ratio=0.5",
                           "cur:ratio=0.5"};
    enum { NS = sizeof specs / sizeof *specs };
    double sum[2 * NS] = {0};
    for (int l = 0; l < 4; l++)
        for (int k = 0; k < 7; k++) {
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, names[k]);
            int64_t m, n;
            float *W = read_matrix(path, name, &m, &n);
            sm_stats s;
            if (!W) continue;
            CHECK_OK(sm_calib_get(cal, name, n, &s));
            double e[2 * NS];
            for (int j = 0; j < NS; j++) {
                e[2 * j] = act_error(W, m, n, specs[j], &s, false);
                e[2 * j + 1] = act_error(W, m, n, specs[j], &s, true);
                if (!(e[2 * j + 1] < e[2 * j])) {
                    fprintf(stderr, "%s %s: with statistics %.5f, without %.5f\n", name, specs[j],
                            e[2 * j + 1], e[2 * j]);
                    g_failures++;
                }
            }
            for (int j = 0; j < 2 * NS; j++) sum[j] += e[j] / 28;
            if (table) {
                printf("| %d.%s |", l, names[k]);
                for (int j = 0; j < 2 * NS; j++) printf(" %.4f |", e[j]);
                printf("\n");
                fflush(stdout);
            }
            free(W);
        }
    if (table) {
        printf("| mean |");
        for (int j = 0; j < 2 * NS; j++) printf(" %.4f |", sum[j]);
        printf("\n");
    }
    free(ids), free(text);
    sm_calib_free(cal), sm_tokenizer_free(tok), sm_model_free(model);
    TEST_END();
}
