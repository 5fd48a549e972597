// What the harnesses share: files in a private directory, splitting inputs, exercising operators.
#include "fuzz.h"
#include "structmat_model.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void sm_fuzz_die(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "%s:%d: invariant failed: %s: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (last error: \"%s\")\n", sm_last_error());
    abort();
}

static char g_dir[64];
static char g_sub[128];

// Removes dir, its files and its subdirectories' files (the harnesses make no deeper ones).
static void remove_tree(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (d) {
        char path[PATH_MAX];
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct stat sb;
            if (depth > 0 && lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
                remove_tree(path, depth - 1);
            else
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void remove_dir(void) {
    if (g_dir[0]) remove_tree(g_dir, 1);
    g_dir[0] = 0;
}

void sm_fuzz_init(void) {
    static bool done;
    if (done) return;
    done = true;
    sm_set_threads(1);
}

static void make_base(void) {
    struct stat sb;
    const char *base =
        stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && !access("/dev/shm", W_OK)
            ? "/dev/shm"
            : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(g_dir, sizeof g_dir, "%s/sm-fuzz-XXXXXX", base);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", g_dir, strerror(errno));
        abort();
    }
    atexit(remove_dir);
}

const char *sm_fuzz_dir(const char *harness) {
    if (!g_dir[0]) make_base();
    snprintf(g_sub, sizeof g_sub, "%s/%s", g_dir, harness);
    if (mkdir(g_sub, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", g_sub, strerror(errno));
        abort();
    }
    return g_sub;
}

void sm_fuzz_path(char *buf, size_t cap, const char *harness, const char *name) {
    snprintf(buf, cap, "%s/%s", sm_fuzz_dir(harness), name);
}

void sm_fuzz_write(const char *path, const void *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
        abort();
    }
    const char *p = data;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) {
            fprintf(stderr, "fuzz: writing %s: %s\n", path, strerror(errno));
            abort();
        }
        p += w;
        size -= (size_t)w;
    }
    close(fd);
}

int sm_fuzz_split(const uint8_t *data, size_t size, const uint8_t **piece, size_t *len, int max) {
    const size_t sl = strlen(SM_FUZZ_SEP);
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; k + 1 < max && i + sl <= size; i++)
        if (!memcmp(data + i, SM_FUZZ_SEP, sl)) {
            piece[k] = data + start;
            len[k++] = i - start;
            start = i + sl;
            i = start - 1;
        }
    piece[k] = data + start;
    len[k++] = size - start;
    return k;
}

// --- operators
// ------------------------------------------------------------------------------------

static float *buf_f32(int64_t count) {
    // Exactly the size asked for (at least 1 byte), so the sanitizer sees any overrun.
    float *p = malloc(count > 0 ? (size_t)count * sizeof(float) : 1);
    SM_FUZZ_CHECK(p != NULL, "out of memory for %lld floats", (long long)count);
    return p;
}

static void fill(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((int32_t)(seed >> 8) - (1 << 23)) / (float)(1 << 23); // [-1, 1)
    }
}

static bool all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

// Y (N, out) = X (N, in) with the operator, the workspace an exact-size buffer.
static void apply(const sm_op *op, bool t, int64_t N, const float *X, float *Y) {
    size_t need = sm_op_workspace(op, N);
    float *work = need ? buf_f32((int64_t)need) : NULL;
    sm_status s = t ? sm_op_apply_t(op, N, X, Y, work) : sm_op_apply(op, N, X, Y, work);
    SM_FUZZ_CHECK(s == SM_OK, "%s of %s failed", t ? "apply_t" : "apply", sm_op_spec(op));
    free(work);
}

// ||got - ref||_F <= 1e-3 ||X||_F ||D||_F, ref = X D^T (or X D) in double.
static void check_product(const sm_op *op, bool t, int64_t N, const float *X, const float *Y,
                          const float *D) {
    int64_t m = sm_op_rows(op), n = sm_op_cols(op), in = t ? m : n, out = t ? n : m;
    double err = 0, xn = 0, dn = 0;
    for (int64_t i = 0; i < N * in; i++) xn += (double)X[i] * X[i];
    for (int64_t i = 0; i < m * n; i++) dn += (double)D[i] * D[i];
    for (int64_t b = 0; b < N; b++)
        for (int64_t o = 0; o < out; o++) {
            double acc = 0;
            for (int64_t k = 0; k < in; k++)
                acc += (double)X[b * in + k] * (double)(t ? D[k * n + o] : D[o * n + k]);
            double d = (double)Y[b * out + o] - acc;
            err += d * d;
        }
    // Relative to the sizes, plus the spacing of subnormal floats (each of the `in` products and
    // sums of an element may round by it when the values are that small).
    double bound = 1e-3 * sqrt(xn) * sqrt(dn) +
                   2.0 * (double)in * sqrt((double)(N * out)) * (double)FLT_TRUE_MIN;
    SM_FUZZ_CHECK(
        sqrt(err) <= bound, "%s of %s (%lldx%lld) differs from to_dense: error %g, bound %g",
        t ? "apply_t" : "apply", sm_op_spec(op), (long long)m, (long long)n, sqrt(err), bound);
}

void sm_fuzz_exercise_op(const sm_op *op, bool finite) {
    int64_t m = sm_op_rows(op), n = sm_op_cols(op);
    const char *spec = sm_op_spec(op);
    SM_FUZZ_CHECK(m > 0 && n > 0 && m <= INT_MAX && n <= INT_MAX, "shape %lldx%lld", (long long)m,
                  (long long)n);
    SM_FUZZ_CHECK(spec && *spec, "operator without a spec");
    sm_spec *sp = NULL;
    SM_FUZZ_CHECK(sm_spec_parse(spec, &sp) == SM_OK, "canonical spec \"%s\" does not parse", spec);
    sm_spec_free(sp);
    int64_t nparams = sm_op_nparams(op), nbytes = sm_op_nbytes(op), macs = sm_op_macs(op);
    SM_FUZZ_CHECK(nparams >= 0 && nbytes >= 0 && macs >= 0, "%s: params %lld bytes %lld macs %lld",
                  spec, (long long)nparams, (long long)nbytes, (long long)macs);

    // The parts are what is stored: their sizes add up to nbytes, and they rebuild the operator.
    sm_part *parts = NULL;
    int np = 0;
    SM_FUZZ_CHECK(sm_op_parts(op, &parts, &np) == SM_OK, "%s: parts", spec);
    int64_t sum = 0;
    for (int i = 0; i < np; i++) {
        int64_t count = 1;
        for (int d = 0; d < parts[i].ndim; d++) count *= parts[i].shape[d];
        SM_FUZZ_CHECK((size_t)count * sm_dtype_size(parts[i].dtype) == parts[i].nbytes,
                      "%s: part \"%s\" has %zu bytes for its shape", spec, parts[i].name,
                      parts[i].nbytes);
        sum += (int64_t)parts[i].nbytes;
    }
    SM_FUZZ_CHECK(sum == nbytes, "%s: parts hold %lld bytes, nbytes says %lld", spec,
                  (long long)sum, (long long)nbytes);
    sm_op *back = NULL;
    SM_FUZZ_CHECK(sm_op_from_parts(spec, m, n, parts, np, &back) == SM_OK,
                  "%s (%lldx%lld): its own parts are refused", spec, (long long)m, (long long)n);
    SM_FUZZ_CHECK(!strcmp(sm_op_spec(back), spec), "reloaded spec %s != %s", sm_op_spec(back),
                  spec);
    free(parts);

    const int64_t N = 3;
    bool small = m * n <= (1 << 16);
    float *D = NULL;
    if (small) {
        D = buf_f32(m * n);
        float *D2 = buf_f32(m * n);
        SM_FUZZ_CHECK(sm_op_to_dense(op, D) == SM_OK, "%s: to_dense", spec);
        SM_FUZZ_CHECK(sm_op_to_dense(back, D2) == SM_OK, "%s: to_dense of the reload", spec);
        SM_FUZZ_CHECK(!memcmp(D, D2, (size_t)(m * n) * sizeof(float)),
                      "%s: to_dense differs after a round trip through parts", spec);
        SM_FUZZ_CHECK(!finite || all_finite(D, m * n),
                      "%s: fitted to a finite matrix, to_dense "
                      "has a non-finite value",
                      spec);
        free(D2);
    }
    for (int t = 0; t < 2; t++) {
        int64_t in = t ? m : n, out = t ? n : m;
        float *X = buf_f32(N * in), *Y = buf_f32(N * out), *Y2 = buf_f32(N * out);
        fill(X, N * in, (uint32_t)(m * 31 + n + t));
        apply(op, t, N, X, Y);
        apply(back, t, N, X, Y2);
        SM_FUZZ_CHECK(!memcmp(Y, Y2, (size_t)(N * out) * sizeof(float)),
                      "%s: %s differs after a round trip through parts", spec,
                      t ? "apply_t" : "apply");
        // Fitted operators have balanced factors, so float rounding stays far inside the bound;
        // loaded ones may hold any values (cancellation), so only their memory safety is checked.
        if (finite && D && all_finite(D, m * n)) {
            SM_FUZZ_CHECK(all_finite(Y, N * out), "%s: %s of a finite operator is not finite", spec,
                          t ? "apply_t" : "apply");
            check_product(op, t, N, X, Y, D);
        }
        free(X), free(Y), free(Y2);
    }
    free(D);
    sm_op_free(back);
}

// --- models
// -----------------------------------------------------------------------------------------

void sm_fuzz_exercise_model(const sm_model *m) {
    sm_model_info f;
    sm_model_get_info(m, &f);
    SM_FUZZ_CHECK(f.dim > 0 && f.n_layers > 0 && f.vocab_size > 0 && f.max_seq_len > 0 &&
                      f.n_linear == 7 * f.n_layers + 1,
                  "info: dim %lld layers %lld vocab %lld seq %lld linear %lld", (long long)f.dim,
                  (long long)f.n_layers, (long long)f.vocab_size, (long long)f.max_seq_len,
                  (long long)f.n_linear);
    int64_t params = 0;
    for (int64_t i = 0; i < f.n_linear; i++) {
        const sm_op *op = sm_model_linear(m, i);
        SM_FUZZ_CHECK(op && sm_model_linear_name(m, i), "linear %lld", (long long)i);
        params += sm_op_nparams(op);
    }
    SM_FUZZ_CHECK(params == f.linear_params, "linear params %lld, info says %lld",
                  (long long)params, (long long)f.linear_params);
    int64_t n_ctx = f.max_seq_len < 4 ? f.max_seq_len : 4;
    sm_context *c = NULL;
    if (sm_context_init(m, n_ctx, 0, &c) != SM_OK) {
        // Only memory may stop a context of at most 4 positions.
        SM_FUZZ_CHECK(0, "context of %lld positions refused", (long long)n_ctx);
    }
    int32_t ids[2] = {0, (int32_t)(f.vocab_size - 1)};
    int64_t n = n_ctx < 2 ? n_ctx : 2;
    float *logits = malloc((size_t)(2 * f.vocab_size) * sizeof(float)); // (2, vocab)
    SM_FUZZ_CHECK(logits != NULL, "out of memory for logits");
    SM_FUZZ_CHECK(sm_context_forward(c, ids, n, SM_LOGITS_ALL, logits) == SM_OK, "prefill");
    SM_FUZZ_CHECK(sm_context_pos(c) == n, "position %lld after %lld tokens",
                  (long long)sm_context_pos(c), (long long)n);
    if (n < n_ctx)
        SM_FUZZ_CHECK(sm_context_forward(c, ids + 1, 1, SM_LOGITS_LAST, logits) == SM_OK, "decode");
    int32_t bad = (int32_t)f.vocab_size;
    SM_FUZZ_CHECK(sm_context_forward(c, &bad, 1, SM_LOGITS_LAST, logits) != SM_OK,
                  "id %d outside the vocabulary accepted", bad);
    free(logits);
    sm_context_free(c);
}
