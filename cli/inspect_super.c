// structmat inspect MODEL --super-weights [--prompt TEXT] [--spike-ratio R] [--json]
//
// Super weights (Yu et al., "The Super Weight in Large Language Models", 2024): a handful of
// down_proj weights whose removal destroys a model. They show up as a spike in one forward pass:
// in the layer that holds one, the largest |input| of down_proj (a "super activation" in channel
// j of the MLP's hidden state) and the largest |output| (row i of the residual update) are far
// above those of every other layer, and the weight is W[i][j] of that layer's down_proj. The
// paper finds them by plotting the per-layer maxima of one prompt and reading off the channels
// of the spikes; this does the same and prints the table of maxima (the spike plot as numbers).
//
// A layer is a candidate when both its max |input| and its max |output| are at least R times
// (default 5) the median of the same maxima over the other layers.
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "structmat_model.h"

#define DEFAULT_PROMPT "Summer is warm. Winter is cold." // the paper's probe prompt

typedef struct sw_layer {
    float in_max, out_max; // largest |x| into / |y| out of down_proj over the prompt
    int64_t in_col, in_tok, out_row, out_tok;
    float w;              // W[out_row][in_col]
    double in_ratio, out_ratio; // against the median of the other layers (NAN with one layer)
} sw_layer;

typedef struct sw_state {
    const sm_model *model;
    int64_t n_layers, seen, base; // tokens of earlier steps, the current step's first position
    sw_layer *layers;             // (n_layers)
    float *Y;                     // (n_batch, dim) scratch for down_proj's output
} sw_state;

static sm_status observe(void *user, int64_t i, int64_t T, const float *X) {
    sw_state *s = user;
    if (i == 0) { // q_proj of layer 0: a new step begins
        s->base = s->seen;
        s->seen += T;
    }
    if (i % 7 != 6 || i / 7 >= s->n_layers) return SM_OK;
    const sm_op *op = sm_model_linear(s->model, i);
    int64_t m = sm_op_rows(op), n = sm_op_cols(op);
    sw_layer *L = &s->layers[i / 7];
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++) {
            float a = fabsf(X[t * n + j]);
            if (a > L->in_max) L->in_max = a, L->in_col = j, L->in_tok = s->base + t;
        }
    sm_status st = sm_op_apply(op, T, X, s->Y, NULL);
    if (st != SM_OK) return st;
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < m; r++) {
            float a = fabsf(s->Y[t * m + r]);
            if (a > L->out_max) L->out_max = a, L->out_row = r, L->out_tok = s->base + t;
        }
    return SM_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// max / the median of the other layers' values (v (n), skipping index k).
static double spike(const float *v, int64_t n, int64_t k, double *tmp) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        if (i != k) tmp[c++] = v[i];
    if (!c) return NAN;
    qsort(tmp, (size_t)c, sizeof *tmp, cmp_double);
    double med = c % 2 ? tmp[c / 2] : 0.5 * (tmp[c / 2 - 1] + tmp[c / 2]);
    return med > 0 ? v[k] / med : (v[k] > 0 ? INFINITY : NAN);
}

static void json_num(const char *key, double v) {
    if (isfinite(v))
        printf(",\"%s\":%.9g", key, v);
    else
        printf(",\"%s\":null", key);
}

// Runs the prompt and fills s->layers; prints and returns 1 on failure.
static int measure(const char *path, const char *prompt, sm_model *model, sw_state *s,
                   int64_t *ntok) {
    sm_model_info info;
    sm_model_get_info(model, &info);
    sm_tokenizer *tok = NULL;
    sm_context *ctx = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    float *logits = NULL;
    int rc = 1;
    if (sm_tokenizer_load_for_model(path, model, &tok) != SM_OK) {
        cli_fail("inspect", "--super-weights needs the model's tokenizer");
        goto done;
    }
    if (sm_tokenizer_encode(tok, prompt, strlen(prompt), true, &ids, &n) != SM_OK) {
        cli_fail("inspect", "tokenizing the prompt");
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, "structmat inspect: the prompt has no tokens\n");
        goto done;
    }
    if (sm_context_init(model, 0, 0, &ctx) != SM_OK) {
        cli_fail("inspect", "context");
        goto done;
    }
    if (n > sm_context_size(ctx)) {
        fprintf(stderr, "structmat inspect: the prompt has %lld tokens, more than the context "
                "(%lld)\n", (long long)n, (long long)sm_context_size(ctx));
        goto done;
    }
    int64_t big = info.dim > info.hidden_dim ? info.dim : info.hidden_dim;
    s->Y = malloc(sizeof(float) * (size_t)(n * big));
    logits = malloc(sizeof(float) * (size_t)info.vocab_size);
    if (!s->Y || !logits) {
        cli_fail("inspect", "out of memory");
        goto done;
    }
    sm_context_set_observer(ctx, observe, s);
    if (sm_context_forward(ctx, ids, n, SM_LOGITS_LAST, logits) != SM_OK) {
        cli_fail("inspect", "forward pass");
        goto done;
    }
    for (int64_t l = 0; l < s->n_layers; l++) { // W[i][j]: row i of W is W^T e_i (apply_t)
        const sm_op *op = sm_model_linear(model, 7 * l + 6);
        int64_t m = sm_op_rows(op), nn = sm_op_cols(op);
        float *e = calloc((size_t)m, sizeof(float)), *row = malloc(sizeof(float) * (size_t)nn);
        sm_status st = e && row ? SM_OK : SM_ERR_ALLOC;
        if (st == SM_OK) {
            e[s->layers[l].out_row] = 1;
            st = sm_op_apply_t(op, 1, e, row, NULL);
        }
        if (st == SM_OK) s->layers[l].w = row[s->layers[l].in_col];
        free(e), free(row);
        if (st != SM_OK) {
            cli_fail("inspect", "reading a down_proj row");
            goto done;
        }
    }
    *ntok = n;
    rc = 0;
done:
    free(ids), free(logits);
    sm_context_free(ctx);
    sm_tokenizer_free(tok);
    return rc;
}

int inspect_super_weights(const char *path, const char *prompt, double ratio, bool json) {
    if (!prompt) prompt = DEFAULT_PROMPT;
    sm_model *model = NULL;
    if (sm_model_load(path, &model) != SM_OK) return cli_fail("inspect", path);
    sm_model_info info;
    sm_model_get_info(model, &info);
    sw_state s = {.model = model, .n_layers = info.n_layers};
    s.layers = calloc((size_t)info.n_layers + 1, sizeof *s.layers);
    double *tmp = malloc(sizeof(double) * (size_t)(info.n_layers + 1));
    float *vin = malloc(sizeof(float) * (size_t)(info.n_layers + 1));
    float *vout = malloc(sizeof(float) * (size_t)(info.n_layers + 1));
    int64_t ntok = 0;
    int rc = s.layers && tmp && vin && vout ? 0 : cli_fail("inspect", "out of memory");
    if (!rc) rc = measure(path, prompt, model, &s, &ntok);
    if (!rc) {
        int64_t L = info.n_layers, ncand = 0;
        for (int64_t l = 0; l < L; l++) vin[l] = s.layers[l].in_max, vout[l] = s.layers[l].out_max;
        for (int64_t l = 0; l < L; l++) {
            s.layers[l].in_ratio = spike(vin, L, l, tmp);
            s.layers[l].out_ratio = spike(vout, L, l, tmp);
        }
        if (!json)
            printf("down_proj of each layer over one forward pass of %lld tokens (\"%s\"):\n"
                   "%-5s %-40s %10s %6s %5s %10s %6s %5s %12s %8s %8s\n",
                   (long long)ntok, prompt, "layer", "tensor", "max|in|", "col j", "tok",
                   "max|out|", "row i", "tok", "W[i][j]", "in/med", "out/med");
        for (int64_t l = 0; l < L; l++) {
            const sw_layer *y = &s.layers[l];
            bool cand = y->in_ratio >= ratio && y->out_ratio >= ratio;
            ncand += cand;
            const char *name = sm_model_linear_name(model, 7 * l + 6);
            if (json) {
                printf("{\"layer\":%lld,\"tensor\":", (long long)l);
                cli_json_str(stdout, name);
                json_num("max_input", y->in_max);
                printf(",\"input_channel\":%lld,\"input_token\":%lld", (long long)y->in_col,
                       (long long)y->in_tok);
                json_num("max_output", y->out_max);
                printf(",\"output_row\":%lld,\"output_token\":%lld", (long long)y->out_row,
                       (long long)y->out_tok);
                json_num("weight", y->w);
                json_num("input_ratio", y->in_ratio);
                json_num("output_ratio", y->out_ratio);
                printf(",\"candidate\":%s}\n", cand ? "true" : "false");
            } else {
                printf("%-5lld %-40s %10.4g %6lld %5lld %10.4g %6lld %5lld %12.6g %8.2f %8.2f%s\n",
                       (long long)l, name, y->in_max, (long long)y->in_col, (long long)y->in_tok,
                       y->out_max, (long long)y->out_row, (long long)y->out_tok, y->w,
                       y->in_ratio, y->out_ratio, cand ? "  <- spike" : "");
            }
        }
        if (json) {
            printf("{\"summary\":{\"model\":");
            cli_json_str(stdout, path);
            printf(",\"prompt\":");
            cli_json_str(stdout, prompt);
            printf(",\"tokens\":%lld,\"layers\":%lld", (long long)ntok, (long long)L);
            json_num("spike_ratio", ratio);
            printf(",\"candidates\":[");
            for (int64_t l = 0, k = 0; l < L; l++) {
                const sw_layer *y = &s.layers[l];
                if (!(y->in_ratio >= ratio && y->out_ratio >= ratio)) continue;
                printf("%s{\"layer\":%lld,\"tensor\":", k++ ? "," : "", (long long)l);
                cli_json_str(stdout, sm_model_linear_name(model, 7 * l + 6));
                printf(",\"row\":%lld,\"col\":%lld", (long long)y->out_row, (long long)y->in_col);
                json_num("weight", y->w);
                json_num("max_input", y->in_max);
                json_num("max_output", y->out_max);
                printf("}");
            }
            printf("]}}\n");
        } else {
            printf("\ncandidate super weights (down_proj's max |input| and max |output| both >= "
                   "%g x the median of the other layers'):\n", ratio);
            for (int64_t l = 0; l < L; l++) {
                const sw_layer *y = &s.layers[l];
                if (!(y->in_ratio >= ratio && y->out_ratio >= ratio)) continue;
                printf("  layer %lld: %s [row %lld, col %lld] = %.6g  (input channel %lld: "
                       "|x| %.4g; output row %lld: |y| %.4g)\n",
                       (long long)l, sm_model_linear_name(model, 7 * l + 6),
                       (long long)y->out_row, (long long)y->in_col, y->w, (long long)y->in_col,
                       y->in_max, (long long)y->out_row, y->out_max);
            }
            if (!ncand) printf("  none: no layer's down_proj spikes that far above the others\n");
        }
    }
    free(s.layers), free(s.Y), free(tmp), free(vin), free(vout);
    sm_model_free(model);
    return rc;
}
