// ggml block decoders and encoders against the gguf package (llama.cpp's, PyPI), bit for bit:
// tools/gguf_blocks.py writes random blocks of every type the package decodes, with its
// dequantization, and awkward F32 rows with its quantization, into one GGUF file (read here by
// the library's reader). Decoding must give the package's floats exactly (compared as bits),
// and fitting "ggml:type=T" must give the package's bytes exactly; the fitted operator's
// to_dense must equal the package's dequantization of its own bytes.
// Needs python3 with gguf and numpy: skipped (77) without them, a failure under CI=true.
#include "structmat_gguf.h"
#include "testutil.h"

#include "kernels/ggml_quants.h"

#include <stdint.h>
#include <unistd.h>

static const char *const k_decoded[] = {"Q4_0",  "Q4_1",  "Q5_0",  "Q5_1",   "Q8_0",
                                        "Q2_K",  "Q3_K",  "Q4_K",  "Q5_K",   "Q6_K",
                                        "TQ1_0", "TQ2_0", "MXFP4", "IQ4_NL", "BF16"};
static const char *const k_encoded[] = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"};

// Index of the first element whose bits differ, or -1.
static int64_t first_diff(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t x, y;
        memcpy(&x, &a[i], 4);
        memcpy(&y, &b[i], 4);
        if (x != y) return i;
    }
    return -1;
}

static void check_decoder(const sm_gguf *g, const char *tn) {
    char bn[32], dn[32];
    snprintf(bn, sizeof bn, "blocks.%s", tn);
    snprintf(dn, sizeof dn, "deq.%s", tn);
    const sm_gguf_tensor *b = sm_gguf_find(g, bn), *d = sm_gguf_find(g, dn);
    CHECK(b && d);
    if (!b || !d) return;
    CHECK(b->type == (uint32_t)sm_ggml_type_from_name(tn) && d->type == SM_GGML_F32);
    CHECK(b->nelem == d->nelem && b->nelem >= 64);
    float *got = malloc((size_t)b->nelem * sizeof *got);
    CHECK_OK(sm_ggml_dequantize(b->type, b->data, b->nelem, got));
    int64_t i = first_diff(got, d->data, b->nelem);
    if (i >= 0) {
        fprintf(stderr, "%s: element %lld (block %lld) decodes to %.9g, the package's is %.9g\n",
                tn, (long long)i, (long long)(i / (b->nelem / 64)), (double)got[i],
                (double)((const float *)d->data)[i]);
        g_failures++;
    }
    free(got);
}

static void check_encoder(const sm_gguf *g, const char *tn) {
    char xn[32], qn[32], spec[32];
    snprintf(xn, sizeof xn, "x.%s", tn);
    snprintf(qn, sizeof qn, "q.%s", tn);
    const sm_gguf_tensor *x = sm_gguf_find(g, xn), *q = sm_gguf_find(g, qn);
    CHECK(x && q && x->ndim == 2 && q->ndim == 2);
    if (!x || !q) return;
    int64_t m = x->shape[0], n = x->shape[1];
    uint32_t type = (uint32_t)sm_ggml_type_from_name(tn);
    // The library's encoder directly.
    uint8_t *bytes = malloc(q->nbytes);
    CHECK(sm_ggml_quantize_row(type, x->data, m * n, bytes));
    for (size_t k = 0; k < q->nbytes; k++)
        if (bytes[k] != ((const uint8_t *)q->data)[k]) {
            fprintf(stderr, "%s: byte %zu is 0x%02x, the package's 0x%02x\n", tn, k, bytes[k],
                    ((const uint8_t *)q->data)[k]);
            g_failures++;
            break;
        }
    free(bytes);
    // Through the operator: fit, parts, to_dense = the package's dequantization of its bytes.
    snprintf(spec, sizeof spec, "ggml:type=%s", tn);
    for (char *c = spec; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(x->data, m, n, spec, NULL, &op));
    if (!op) return;
    CHECK(!strcmp(sm_op_spec(op), spec));
    sm_part *parts;
    int np;
    CHECK_OK(sm_op_parts(op, &parts, &np));
    CHECK(np == 1 && parts[0].nbytes == q->nbytes && !memcmp(parts[0].data, q->data, q->nbytes));
    CHECK(sm_op_nbytes(op) == (int64_t)q->nbytes);
    free(parts);
    float *w = malloc((size_t)(m * n) * sizeof *w), *ref = malloc((size_t)(m * n) * sizeof *ref);
    CHECK_OK(sm_op_to_dense(op, w));
    CHECK_OK(sm_ggml_dequantize(type, q->data, m * n, ref));
    CHECK(first_diff(w, ref, m * n) < 0);
    free(w);
    free(ref);
    sm_op_free(op);
}

int main(void) {
    char dir[] = "/tmp/sm_gguf_blocks_XXXXXX", path[128], cmd[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/blocks.gguf", dir);
    snprintf(cmd, sizeof cmd, "python3 tools/gguf_blocks.py %s 2>/dev/null", path);
    if (system(cmd) != 0) {
        rmdir(dir);
        const char *ci = getenv("CI");
        fprintf(stderr, "tools/gguf_blocks.py failed: the gguf and numpy Python packages are "
                        "needed (make test-deps-py)\n");
        return ci && !strcmp(ci, "true") ? 1 : 77;
    }
    sm_gguf *g = NULL;
    CHECK_OK(sm_gguf_open(path, &g));
    if (g) {
        for (size_t i = 0; i < sizeof k_decoded / sizeof *k_decoded; i++)
            check_decoder(g, k_decoded[i]);
        for (size_t i = 0; i < sizeof k_encoded / sizeof *k_encoded; i++)
            check_encoder(g, k_encoded[i]);
        sm_gguf_close(g);
    }
    unlink(path);
    rmdir(dir);
    TEST_END();
}
