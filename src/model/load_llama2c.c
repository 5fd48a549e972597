// Loading a llama2.c checkpoint (karpathy/llama2.c, export.py), F32 little-endian.
//
// Version 0 (legacy_export, what run.c reads):
//   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//     (vocab_size < 0: the classifier is separate, |vocab_size| tokens)
//   token_embedding (vocab, dim), rms_att (L, dim), wq (L, dim, dim), wk (L, kv_dim, dim),
//   wv (L, kv_dim, dim), wo (L, dim, dim), rms_ffn (L, dim), w1 (L, hidden, dim),
//   w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final (dim),
//   freq_cis_real, freq_cis_imag (seq_len, head_size / 2) each: legacy RoPE tables, skipped,
//   wcls (vocab, dim) when vocab_size < 0.
// Version 1 (version1_export): uint32 magic 0x616b3432 ("ak42"), int32 version = 1, the seven
//   int32 above (vocab_size positive), uint8 shared_classifier, zeros up to byte 256; then
//   rms_att (L, dim), rms_ffn (L, dim), rms_final (dim), token_embedding, wq, wk, wv, wo, w1, w2,
//   w3 with the shapes above, and wcls when not shared. No RoPE tables.
// Version 2 (Q8_0 groups) is refused. llama2.c models use interleaved RoPE, theta 10000, eps 1e-5;
// its w1, w2, w3 are Hugging Face's gate, down, up.
#include "model.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LLAMA2C_MAGIC 0x616b3432u
#define LLAMA2C_V1_HEADER 256

// A cursor over the weights: each take() hands out the next count floats.
typedef struct cursor {
    const unsigned char *p;
} cursor;

static const float *take(cursor *c, int64_t count) {
    const float *r = (const float *)c->p;
    c->p += (size_t)count * sizeof(float);
    return r;
}

// op = a dense F32 operator over w (rows, cols), copied out of the mapping.
static sm_status make_op(const float *w, int64_t rows, int64_t cols, sm_op **op) {
    sm_part p = {.name = "W",
                 .dtype = SM_DTYPE_F32,
                 .ndim = 2,
                 .shape = {rows, cols},
                 .data = w,
                 .nbytes = (size_t)(rows * cols) * sizeof(float)};
    return sm_op_from_parts("dense", rows, cols, &p, 1, op);
}

// The L per-layer matrices (L, rows, cols) starting at w into the operators of kind `which`.
static sm_status make_layer_ops(sm_model *m, int which, const float *w, int64_t rows,
                                int64_t cols) {
    for (int64_t l = 0; l < m->info.n_layers; l++) {
        sm_op **op = &m->ops[l * SM_LIN_PER_LAYER + which];
        sm_status s = make_op(w + l * rows * cols, rows, cols, op);
        if (s != SM_OK) {
            sm_error_prefix("%s: ", m->names[l * SM_LIN_PER_LAYER + which]);
            return s;
        }
    }
    return SM_OK;
}

static sm_status build(sm_model *m, const unsigned char *base, int version, bool shared) {
    const sm_model_info *f = &m->info;
    int64_t L = f->n_layers, D = f->dim, H = f->hidden_dim, V = f->vocab_size;
    int64_t kv_dim = sm_model_kv_dim(m), q_dim = sm_model_q_dim(m);
    cursor c = {base};
    const float *emb, *rms_att, *rms_ffn, *rms_final, *wq, *wk, *wv, *wo, *w1, *w2, *w3, *wcls;
    if (version == 0) {
        emb = take(&c, V * D);
        rms_att = take(&c, L * D);
        wq = take(&c, L * q_dim * D);
        wk = take(&c, L * kv_dim * D);
        wv = take(&c, L * kv_dim * D);
        wo = take(&c, L * D * q_dim);
        rms_ffn = take(&c, L * D);
        w1 = take(&c, L * H * D);
        w2 = take(&c, L * D * H);
        w3 = take(&c, L * H * D);
        rms_final = take(&c, D);
        take(&c, f->max_seq_len * f->head_dim); // freq_cis_real, freq_cis_imag: unused
    } else {
        rms_att = take(&c, L * D);
        rms_ffn = take(&c, L * D);
        rms_final = take(&c, D);
        emb = take(&c, V * D);
        wq = take(&c, L * q_dim * D);
        wk = take(&c, L * kv_dim * D);
        wv = take(&c, L * kv_dim * D);
        wo = take(&c, L * D * q_dim);
        w1 = take(&c, L * H * D);
        w2 = take(&c, L * D * H);
        w3 = take(&c, L * H * D);
    }
    wcls = shared ? emb : take(&c, V * D);
    // Unaligned-safe copies (the version-0 weights start at byte 28).
    memcpy(m->rms_att, rms_att, (size_t)(L * D) * sizeof(float));
    memcpy(m->rms_ffn, rms_ffn, (size_t)(L * D) * sizeof(float));
    memcpy(m->rms_final, rms_final, (size_t)D * sizeof(float));
    sm_status s;
    if ((s = make_layer_ops(m, SM_LIN_Q, wq, q_dim, D)) != SM_OK ||
        (s = make_layer_ops(m, SM_LIN_K, wk, kv_dim, D)) != SM_OK ||
        (s = make_layer_ops(m, SM_LIN_V, wv, kv_dim, D)) != SM_OK ||
        (s = make_layer_ops(m, SM_LIN_O, wo, D, q_dim)) != SM_OK ||
        (s = make_layer_ops(m, SM_LIN_GATE, w1, H, D)) != SM_OK ||
        (s = make_layer_ops(m, SM_LIN_DOWN, w2, D, H)) != SM_OK ||
        (s = make_layer_ops(m, SM_LIN_UP, w3, H, D)) != SM_OK)
        return s;
    if ((s = make_op(wcls, V, D, &m->ops[f->n_linear - 1])) != SM_OK) {
        sm_error_prefix("%s: ", shared ? "token_embedding (shared classifier)" : "wcls");
        return s;
    }
    if (sm_model_share_embedding(m)) return SM_OK;
    m->embed_own = sm_alloc((size_t)(V * D) * sizeof(float));
    if (!m->embed_own) return sm_fail(SM_ERR_ALLOC, "out of memory for the embedding");
    memcpy(m->embed_own, emb, (size_t)(V * D) * sizeof(float));
    m->embed_dtype = SM_DTYPE_F32;
    return SM_OK;
}

// Bytes of the weights after the header, or -1 when a count overflows.
static int64_t weights_bytes(const sm_model_info *f, int version, bool shared) {
    int64_t L = f->n_layers, D = f->dim, H = f->hidden_dim, V = f->vocab_size;
    int64_t kv = f->n_kv_heads * f->head_dim, q = f->n_heads * f->head_dim;
    // Every factor is below 2^31, so each product of three fits in int64 only when checked.
    int64_t terms[] = {V * D,
                       L * D,
                       L * q,
                       L * kv,
                       L * kv,
                       L * D,
                       L * D,
                       L * H,
                       L * D,
                       L * H,
                       D,
                       shared ? 0 : V * D,
                       version == 0 ? f->max_seq_len * f->head_dim : 0};
    int64_t mult[] = {1, 1, D, D, D, q, 1, D, H, D, 1, 1, 1};
    int64_t total = 0;
    for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++) {
        int64_t t;
        if (__builtin_mul_overflow(terms[i], mult[i], &t) ||
            __builtin_add_overflow(total, t, &total))
            return -1;
    }
    return total > INT64_MAX / 4 ? -1 : total * 4;
}

sm_status sm_model_load_llama2c(const char *path, sm_model **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return sm_fail(SM_ERR_IO, "%s: cannot open", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return sm_fail(SM_ERR_IO, "%s: cannot stat", path);
    }
    int64_t size = sb.st_size;
    if (size < 28) {
        close(fd);
        return sm_fail(SM_ERR_FORMAT,
                       "%s: file too short for a llama2.c checkpoint (%lld bytes; "
                       "the header alone is 28)",
                       path, (long long)size);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return sm_fail(SM_ERR_IO, "%s: cannot map the file", path);
    const unsigned char *base = map;
    uint32_t magic;
    memcpy(&magic, base, 4);
    int version = 0;
    int32_t hdr[7];
    int64_t header_bytes = 28;
    bool shared;
    sm_status s = SM_OK;
    if (magic == LLAMA2C_MAGIC) {
        int32_t v = -1;
        if (size >= 8) memcpy(&v, base + 4, 4);
        if (v == 2)
            s = sm_fail(SM_ERR_UNSUPPORTED,
                        "%s: llama2.c version 2 (Q8_0) checkpoints are not "
                        "supported; export version 0 or 1 (F32)",
                        path);
        else if (v != 1)
            s = sm_fail(SM_ERR_FORMAT,
                        "%s: llama2.c checkpoint version %d is unknown (0, 1 and 2 "
                        "exist; 0 and 1 are read)",
                        path, v);
        else if (size < LLAMA2C_V1_HEADER)
            s = sm_fail(SM_ERR_FORMAT,
                        "%s: file too short for a version-1 header (%lld bytes, "
                        "header %d)",
                        path, (long long)size, LLAMA2C_V1_HEADER);
        version = v;
        header_bytes = LLAMA2C_V1_HEADER;
        if (s == SM_OK) memcpy(hdr, base + 8, sizeof hdr);
        shared = s == SM_OK && base[36] != 0;
        if (s == SM_OK && hdr[5] <= 0)
            s = sm_fail(SM_ERR_FORMAT, "%s: vocab_size = %d in a version-1 header", path, hdr[5]);
    } else {
        memcpy(hdr, base, sizeof hdr);
        shared = hdr[5] > 0;
    }
    sm_model_info info = {0};
    if (s == SM_OK) {
        snprintf(info.arch, sizeof info.arch, "llama");
        snprintf(info.format, sizeof info.format, "llama2c");
        info.dim = hdr[0];
        info.hidden_dim = hdr[1];
        info.n_layers = hdr[2];
        info.n_heads = hdr[3];
        info.n_kv_heads = hdr[4];
        info.vocab_size = hdr[5] < 0 ? -(int64_t)hdr[5] : hdr[5];
        info.max_seq_len = hdr[6];
        info.head_dim = info.n_heads > 0 ? info.dim / info.n_heads : 0;
        info.rms_eps = 1e-5;
        info.rope_theta = 10000.0;
        info.rope_layout = SM_ROPE_INTERLEAVED;
        info.tied = shared;
        info.bos_id = 1;
        info.eos_id = 2;
        s = sm_model_check_dims(&info, path);
        if (s == SM_OK && info.dim % info.n_heads)
            s = sm_fail(SM_ERR_FORMAT, "%s: n_heads = %lld does not divide dim = %lld", path,
                        (long long)info.n_heads, (long long)info.dim);
    }
    if (s == SM_OK) {
        int64_t need = weights_bytes(&info, version, shared);
        if (need < 0 || header_bytes + need != size)
            s = sm_fail(SM_ERR_FORMAT,
                        "%s: file %s: %lld bytes, but a version-%d checkpoint with dim %lld, "
                        "hidden_dim %lld, %lld layers, %lld heads, %lld kv heads, vocab %lld (%s "
                        "classifier), seq_len %lld has %lld",
                        path, need >= 0 && size < header_bytes + need ? "too short" : "size wrong",
                        (long long)size, version, (long long)info.dim, (long long)info.hidden_dim,
                        (long long)info.n_layers, (long long)info.n_heads,
                        (long long)info.n_kv_heads, (long long)info.vocab_size,
                        shared ? "shared" : "separate", (long long)info.max_seq_len,
                        (long long)(header_bytes + need));
    }
    sm_model *m = NULL;
    if (s == SM_OK) s = sm_model_alloc(&info, &m);
    if (s == SM_OK) {
        s = build(m, base + header_bytes, version, shared);
        if (s != SM_OK) sm_error_prefix("%s: ", path);
    }
    if (s == SM_OK) s = sm_model_finish(m);
    munmap(map, (size_t)size);
    if (s != SM_OK) {
        sm_model_free(m);
        return s;
    }
    *out = m;
    return SM_OK;
}
