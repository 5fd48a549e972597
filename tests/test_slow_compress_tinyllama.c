#include <stdlib.h>
// compress at scale: a synthetic checkpoint with the shapes of TinyLlama-1.1B (hidden 2048, 22
// layers, 32 heads, 4 key-value heads, MLP 5632, vocabulary 32000, untied; 1.1 billion BF16
// weights = 2.2 GB, random values, written here in two shards with an index) is compressed to
// 4 bpw with --methods rtn,lowrank (randomized SVD) in a fresh process, whose peak resident memory
// (VmHWM, mapped file pages included) must stay under 2 GB: the three phases keep only a few
// matrices in memory and release the mapped pages of each matrix as they go. Also checked: the
// stored size within [0.99, 1] of the target (summed from the output's header here), and the
// output loads and decodes a token to finite logits. Prints the times (BENCHMARKS.md).
// Slow (label "slow"): about 2 GB of disk in /tmp and tens of minutes on two cores.
#include "structmat_compress.h"
#include "testutil.h"

#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { DIM = 2048, LAYERS = 22, HEADS = 32, KV = 4, HD = 64, FFN = 5632, VOCAB = 32000 };

typedef struct tensor {
    char name[96];
    int ndim;
    int64_t shape[2];
} tensor;

static int list(tensor *t, int layer_lo, int layer_hi, bool first, bool last) {
    int n = 0;
    if (first) t[n++] = (tensor){"model.embed_tokens.weight", 2, {VOCAB, DIM}};
    for (int l = layer_lo; l < layer_hi; l++) {
        const struct {
            const char *what;
            int64_t r, c;
        } m[] = {{"self_attn.q_proj", HEADS * HD, DIM},
                 {"self_attn.k_proj", KV * HD, DIM},
                 {"self_attn.v_proj", KV * HD, DIM},
                 {"self_attn.o_proj", DIM, HEADS * HD},
                 {"mlp.gate_proj", FFN, DIM},
                 {"mlp.up_proj", FFN, DIM},
                 {"mlp.down_proj", DIM, FFN}};
        snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.input_layernorm.weight", l);
        t[n].ndim = 1, t[n].shape[0] = DIM, n++;
        snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.post_attention_layernorm.weight", l);
        t[n].ndim = 1, t[n].shape[0] = DIM, n++;
        for (int k = 0; k < 7; k++) {
            snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.%s.weight", l, m[k].what);
            t[n].ndim = 2, t[n].shape[0] = m[k].r, t[n].shape[1] = m[k].c, n++;
        }
    }
    if (last) {
        t[n++] = (tensor){"model.norm.weight", 1, {DIM, 0}};
        t[n++] = (tensor){"lm_head.weight", 2, {VOCAB, DIM}};
    }
    return n;
}

static int64_t numel(const tensor *t) {
    return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
}

// A shard: header, then BF16 data (norms 1, matrices uniform with variance 1/in).
static int64_t write_shard(const char *path, const tensor *t, int n, uint64_t seed) {
    char *hdr = malloc(1 << 20);
    int64_t off = 0, len = 0;
    len += sprintf(hdr + len, "{");
    for (int i = 0; i < n; i++) {
        int64_t b = 2 * numel(&t[i]);
        len += sprintf(hdr + len, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld", i ? "," : "",
                       t[i].name, (long long)t[i].shape[0]);
        if (t[i].ndim == 2) len += sprintf(hdr + len, ",%lld", (long long)t[i].shape[1]);
        len += sprintf(hdr + len, "],\"data_offsets\":[%lld,%lld]}", (long long)off,
                       (long long)(off + b));
        off += b;
    }
    len += sprintf(hdr + len, "}");
    while (len % 8) hdr[len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint8_t l8[8];
    for (int i = 0; i < 8; i++) l8[i] = (uint8_t)((uint64_t)len >> (8 * i));
    fwrite(l8, 1, 8, f);
    fwrite(hdr, 1, (size_t)len, f);
    enum { CH = 1 << 20 };
    uint16_t *buf = malloc(sizeof(uint16_t) * CH);
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int i = 0; i < n; i++) {
        float scale = t[i].ndim == 2 ? (float)(sqrt(3.0 / (double)t[i].shape[1])) : 0;
        for (int64_t done = 0; done < numel(&t[i]); done += CH) {
            int64_t k = numel(&t[i]) - done < CH ? numel(&t[i]) - done : CH;
            for (int64_t j = 0; j < k; j++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                float u = (float)(s >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
                buf[j] = sm_f32_to_bf16(t[i].ndim == 2 ? u * scale : 1.0f);
            }
            fwrite(buf, 2, (size_t)k, f);
        }
    }
    free(buf), free(hdr);
    return fclose(f) == 0 ? off : -1;
}

static int make_model(const char *dir) {
    static tensor t[256];
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return 1;
    fprintf(f,
            "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\","
            "\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,"
            "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"head_dim\":%d,"
            "\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,"
            "\"max_position_embeddings\":2048,\"vocab_size\":%d,"
            "\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\","
            "\"bos_token_id\":1,\"eos_token_id\":2}\n",
            DIM, FFN, LAYERS, HEADS, KV, HD, VOCAB);
    fclose(f);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    FILE *ix = fopen(p, "w");
    if (!ix) return 1;
    fprintf(ix, "{\"metadata\":{},\"weight_map\":{");
    int first = 1;
    for (int s = 0; s < 2; s++) {
        int n = list(t, s ? 11 : 0, s ? LAYERS : 11, s == 0, s == 1);
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-00002.safetensors", s + 1);
        snprintf(p, sizeof p, "%s/%s", dir, file);
        if (write_shard(p, t, n, (uint64_t)s + 7) < 0) return 1;
        for (int i = 0; i < n; i++) {
            fprintf(ix, "%s\"%s\":\"%s\"", first ? "" : ",", t[i].name, file);
            first = 0;
        }
    }
    fprintf(ix, "}}\n");
    return fclose(ix) != 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long vm_hwm_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static long vm_hwm_kb(void);

static bool progress(void *user, const sm_compress_event *ev) {
    if (ev->index % 10 == 0 || ev->index + 1 == ev->count)
        fprintf(stderr, "phase %d: %d/%d %s %.1f s, VmHWM so far %.0f MB\n", ev->phase,
                ev->index + 1, ev->count, ev->name, ev->seconds, vm_hwm_kb() / 1024.0);
    return true;
}

// The compression, in its own process: prints "hwm_kb seconds measure_s bytes budget".
static int child(const char *src, const char *out) {
    sm_compress *c = NULL;
    sm_compress_opts o = {.methods = "rtn,lowrank", .solver = 1, .progress = progress};
    double t0 = now(), tm = 0;
    int64_t budget = 0;
    sm_status s = sm_compress_open(src, &o, &c);
    if (s == SM_OK) s = sm_compress_measure(c);
    tm = now() - t0;
    if (s == SM_OK) s = sm_compress_parse_size(c, "4bpw", &budget);
    if (s == SM_OK) s = sm_compress_allocate(c, budget);
    if (s == SM_OK) s = sm_compress_write(c, out, false);
    if (s != SM_OK) {
        fprintf(stderr, "compress: %s\n", sm_last_error());
        return 1;
    }
    int64_t total = 0;
    for (int i = 0; i < sm_compress_count(c); i++) {
        sm_compress_matrix mx;
        sm_compress_get_matrix(c, i, &mx);
        total += mx.final_bytes;
    }
    sm_compress_free(c);
    printf("%ld %.1f %.1f %lld %lld\n", vm_hwm_kb(), now() - t0, tm, (long long)total,
           (long long)budget);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--child")) return child(argv[2], argv[3]);
    // About 2.2 GB of input and 0.5 GB of output go to /tmp: without the room, say so and skip.
    struct statvfs fs;
    if (statvfs("/tmp", &fs) == 0 && (double)fs.f_bavail * (double)fs.f_frsize < 3.5e9) {
        fprintf(stderr, "skipped: /tmp has %.1f GB free, the 1.1B-shaped compress needs 3.5 GB\n",
                (double)fs.f_bavail * (double)fs.f_frsize / 1e9);
        return 77;
    }
    char dir[] = "/tmp/test_slow_compress.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char src[600], out[600], cmd[1400];
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s", src);
    if (system(cmd) != 0) return 1;
    double t0 = now();
    CHECK(make_model(src) == 0);
    fprintf(stderr, "synthetic TinyLlama-shaped BF16 checkpoint: %.1f s\n", now() - t0);
    // A fresh process, so its peak memory is the compression's alone.
    snprintf(cmd, sizeof cmd, "/proc/%d/exe --child %s %s", (int)getpid(), src, out);
    FILE *p = popen(cmd, "r");
    long hwm = -1;
    double secs = 0, ms = 0;
    long long bytes = 0, budget = 0;
    CHECK(p && fscanf(p, "%ld %lf %lf %lld %lld", &hwm, &secs, &ms, &bytes, &budget) == 5);
    CHECK(p && pclose(p) == 0);
    fprintf(stderr,
            "compress --methods rtn,lowrank (solver=random) to 4 bpw: %.1f s (measure "
            "%.1f s), VmHWM %.0f MB, %lld bytes of %lld\n",
            secs, ms, hwm / 1024.0, bytes, budget);
    CHECK(hwm > 0 && hwm * 1024.0 < 2e9);
    // The stored size from the output's header.
    sm_st *st = NULL;
    CHECK_OK(sm_st_open(out, &st));
    int64_t stored = 0;
    for (int i = 0; st && i < sm_st_count(st); i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        if (!strstr(t->name, "embed_tokens") && !strstr(t->name, "norm.weight"))
            stored += (int64_t)t->nbytes;
    }
    sm_st_close(st);
    CHECK(stored == bytes && stored <= budget && stored >= 0.99 * (double)budget);
    // It runs: one token through the compressed model.
    sm_model *m = NULL;
    CHECK_OK(sm_model_load(out, &m));
    if (m) {
        sm_context *cx = NULL;
        float *logits = malloc(sizeof(float) * VOCAB);
        int32_t tok = 1;
        CHECK_OK(sm_context_init(m, 16, 1, &cx));
        if (cx) CHECK_OK(sm_context_forward(cx, &tok, 1, SM_LOGITS_LAST, logits));
        bool finite = true;
        for (int i = 0; cx && i < VOCAB; i++) finite &= isfinite(logits[i]);
        CHECK(finite);
        sm_context_free(cx);
        free(logits);
        sm_model_free(m);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) g_failures++;
    return g_failures ? 1 : 0;
}
