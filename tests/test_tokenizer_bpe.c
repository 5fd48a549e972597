// BPE tokenizers against Hugging Face's tokenizers (PyPI): tools/tokenizer_ref.py trains
// byte-level (GPT-2 regex, with and without add_prefix_space; Llama-3's and Qwen2's Split
// regexes) and SentencePiece-style (Llama-2-like: "▁", byte fallback) tokenizers on
// tinyshakespeare and records the ids tokenizers gives hand-picked hard texts (Unicode scripts,
// emoji with ZWJ and skin tones, combining marks, digits in several scripts, contractions in both
// cases, runs of spaces, tabs, CR/LF, code, embedded special tokens) and a 3000-byte passage.
// Checked here, for each tokenizer.json and for the GGUF vocabularies written from the same
// tokenizers: identical ids, a lossless round trip (decode of encode == text), BOS from the
// post-processor. The GGUF SentencePiece vocabulary (llama.cpp's score-greedy encoding, which
// may split differently from BPE ranks) is checked for round trips. Invalid UTF-8 still round
// trips. Needs python3 with tokenizers and gguf: skipped (77) without them, a failure under
// CI=true.
#include "structmat_model.h"
#include "testutil.h"

#include <cJSON.h>
#include <unistd.h>

static char g_dir[64];

// The concatenated pieces of ids[from..n) decoded in order == text (len bytes).
static bool round_trip(const sm_tokenizer *t, const int32_t *ids, int64_t n, int64_t from,
                       const char *text, size_t len) {
    char *back = malloc(len * 4 + 64);
    size_t bl = 0;
    bool ok = true;
    for (int64_t i = from; i < n && ok; i++) {
        size_t pl;
        const char *p = sm_tokenizer_decode(t, i > 0 ? ids[i - 1] : -1, ids[i], &pl);
        if (bl + pl > len * 4 + 64)
            ok = false;
        else
            memcpy(back + bl, p, pl), bl += pl;
    }
    ok = ok && bl == len && !memcmp(back, text, len);
    free(back);
    return ok;
}

// How a tokenizer's decoding relates to its input.
enum {
    LOSSLESS,   // decode(encode(text)) == text
    PREFIXED,   // add_prefix_space: a space is added before every segment (lossy in tokenizers too)
    SPM_JSON,   // lossless unless the text holds "▁" itself (which decodes to a space)
    SPM_SCORES, // tokenizer.bin-style: " " + text without BOS, text after BOS
};

static void check_tokenizer(const char *name, const sm_tokenizer *t, const cJSON *texts,
                            const cJSON *want, int32_t bos, int mode, const cJSON *skip) {
    int idx = 0, shown = 0;
    const cJSON *tx;
    cJSON_ArrayForEach(tx, texts) {
        const char *text = tx->valuestring;
        size_t len = strlen(text);
        if (skip && cJSON_IsTrue(cJSON_GetArrayItem(skip, idx))) {
            idx++; // NFC would change it: tokenizers normalizes, structmat does not
            continue;
        }
        bool trip = mode == LOSSLESS || mode == SPM_SCORES ||
                    (mode == SPM_JSON && !strstr(text, "\xe2\x96\x81"));
        char *spaced = malloc(len + 2);
        spaced[0] = ' ';
        memcpy(spaced + 1, text, len + 1);
        int32_t *ids = NULL;
        int64_t n = 0;
        CHECK_OK(sm_tokenizer_encode(t, text, len, false, &ids, &n));
        const cJSON *w = want ? cJSON_GetArrayItem(want, idx) : NULL;
        if (w) {
            int64_t k = 0, nw = cJSON_GetArraySize(w);
            while (k < n && k < nw && ids[k] == cJSON_GetArrayItem(w, (int)k)->valueint) k++;
            if ((k < n || k < nw) && shown++ < 3) {
                fprintf(stderr,
                        "%s, text %d: %lld ids vs tokenizers' %lld; first difference at "
                        "%lld: %d vs %d\n",
                        name, idx, (long long)n, (long long)nw, (long long)k, k < n ? ids[k] : -1,
                        k < nw ? cJSON_GetArrayItem(w, (int)k)->valueint : -1);
                g_failures++;
            }
        }
        bool rt = mode == SPM_SCORES && len ? round_trip(t, ids, n, 0, spaced, len + 1)
                                            : round_trip(t, ids, n, 0, text, len);
        if (trip && !rt && shown++ < 3) {
            fprintf(stderr, "%s, text %d: decode(encode(text)) is not the text\n", name, idx);
            g_failures++;
        }
        free(ids);
        free(spaced);
        // With BOS: the same ids after it, and still a round trip.
        CHECK(sm_tokenizer_bos(t) == bos);
        int32_t *ids2 = NULL;
        int64_t n2 = 0;
        CHECK_OK(sm_tokenizer_encode(t, text, len, true, &ids2, &n2));
        CHECK(n2 == n + (bos >= 0) && (bos < 0 || ids2[0] == bos));
        CHECK(!trip || round_trip(t, ids2, n2, bos >= 0, text, len));
        free(ids2);
        idx++;
    }
}

static void run_case(const cJSON *tk, const cJSON *texts, const cJSON *not_nfc) {
    const char *name = cJSON_GetObjectItem(tk, "name")->valuestring;
    const cJSON *ids = cJSON_GetObjectItem(tk, "ids"), *gg = cJSON_GetObjectItem(tk, "gguf");
    int32_t bos = cJSON_GetObjectItem(tk, "bos")->valueint;
    char path[160];
    snprintf(path, sizeof path, "%s/%s.json", g_dir, name);
    sm_tokenizer *t = NULL;
    CHECK_OK(sm_tokenizer_load_json(path, &t));
    if (t) {
        int mode = !strcmp(name, "gpt2sp") ? PREFIXED : !strcmp(name, "spm") ? SPM_JSON : LOSSLESS;
        check_tokenizer(name, t, texts, ids, bos, mode, !strcmp(name, "qwen2") ? not_nfc : NULL);
        // Invalid UTF-8 (a lone continuation byte, a cut 3-byte sequence, 0xFF) still encodes to
        // ids that decode to the same bytes.
        static const char bad[] = "ok \x80 then \xe6\x97 and \xff end";
        int32_t *v = NULL;
        int64_t n = 0;
        CHECK_OK(sm_tokenizer_encode(t, bad, sizeof bad - 1, false, &v, &n));
        CHECK(mode == PREFIXED || round_trip(t, v, n, 0, bad, sizeof bad - 1));
        free(v);
        sm_tokenizer_free(t);
    }
    if (cJSON_IsString(gg)) {
        snprintf(path, sizeof path, "%s/%s", g_dir, gg->valuestring);
        CHECK_OK(sm_tokenizer_load_gguf(path, &t));
        if (!t) return;
        char label[64];
        snprintf(label, sizeof label, "%s (GGUF)", name);
        bool spm = !strcmp(name, "spm"); // SentencePiece scores: BOS <s>, round trips only
        check_tokenizer(label, t, texts, spm ? NULL : ids, spm ? 1 : -1,
                        spm ? SPM_SCORES : LOSSLESS, !strcmp(name, "qwen2") ? not_nfc : NULL);
        sm_tokenizer_free(t);
    }
}

static void test_refusals(void) {
    char path[160];
    snprintf(path, sizeof path, "%s/bad.json", g_dir);
    struct {
        const char *json, *needle;
        sm_status st;
    } cases[] = {
        {"{", "not valid JSON", SM_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "model type \"WordPiece\"",
         SM_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", "empty vocabulary",
         SM_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a "
         "b\"]}}",
         "not in the vocabulary", SM_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}", "no valid id",
         SM_ERR_FORMAT},
        {"{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\", "
         "\"vocab\": {\"a\": 0}, \"merges\": []}}",
         "pre-tokenizer \"Whitespace\"", SM_ERR_UNSUPPORTED},
        {"{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
         "\"behavior\": \"Isolated\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}",
         "pre-tokenizer pattern", SM_ERR_UNSUPPORTED},
        {"{\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": {\"type\": \"BPE\", \"vocab\": "
         "{\"a\": 0}}}",
         "normalizer \"Lowercase\"", SM_ERR_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        FILE *f = fopen(path, "w");
        fputs(cases[i].json, f);
        fclose(f);
        sm_tokenizer *t = (sm_tokenizer *)1;
        CHECK_FAIL(sm_tokenizer_load_json(path, &t), cases[i].st, cases[i].needle);
        CHECK(t == NULL);
    }
    unlink(path);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/sm_tokbpe_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    char cmd[256], path[160];
    snprintf(cmd, sizeof cmd, "python3 tools/tokenizer_ref.py %s 2>/dev/null", g_dir);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
        if (system(cmd)) {
        }
        const char *ci = getenv("CI");
        fprintf(stderr, "tools/tokenizer_ref.py failed: the tokenizers and gguf Python packages "
                        "are needed (make test-deps-py)\n");
        return ci && !strcmp(ci, "true") ? 1 : 77;
    }
    snprintf(path, sizeof path, "%s/cases.json", g_dir);
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        text = calloc(1, (size_t)n + 1);
        if (fread(text, 1, (size_t)n, f) != (size_t)n) text[0] = 0;
        fclose(f);
    }
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(root != NULL);
    if (root) {
        const cJSON *texts = cJSON_GetObjectItem(root, "texts"), *tk;
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(root, "tokenizers")) == 5);
        const cJSON *not_nfc = cJSON_GetObjectItem(root, "not_nfc");
        cJSON_ArrayForEach(tk, cJSON_GetObjectItem(root, "tokenizers")) {
            run_case(tk, texts, not_nfc);
        }
        cJSON_Delete(root);
    }
    test_refusals();
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) {
    }
    TEST_END();
}
