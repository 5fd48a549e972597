// Kernel tables, every ISA level this CPU has, against independent references:
// - decode of f16/bf16/q8/q4 equals, bit for bit, the format decoded here from its definition
//   (and the scalar table), on random codes (raw bits for f16/bf16: NaN, Inf, subnormals) with
//   unaligned pointers and awkward shapes, and writes nothing past the output;
// - gemv is within 1e-5 * sum |w||x| of a double-precision dot product of those decoded values
//   (and of the scalar table), rows * cols large enough to take the threaded path included;
// - the scalar f16/bf16 conversions equal the F16C instructions (all 65536 halfs; ~5M floats:
//   random, a stride over all 2^32 patterns, ties, subnormals, overflow, NaNs) and a
//   round-to-nearest-even written in double for bf16;
// - sm_isa_set refuses levels above sm_isa_detect, and STRUCTMAT_ISA picks the level in a fresh
//   process (this program re-executed with --print-isa).
#include "kernels/kernels.h"
#include "testutil.h"

#include <immintrin.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t g_rng = 0x1234567887654321ull;

static uint64_t rnd(void) { // splitmix64
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd_unit(void) { // [-1, 1)
    return (double)(rnd() >> 11) * 0x1.0p-52 - 1.0;
}

static uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float u2f(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// --- F16C as the reference for the scalar conversions -------------------------------------------

static bool g_f16c;

__attribute__((target("f16c"))) static float hw_h2f(uint16_t h) {
    return _cvtsh_ss(h);
}

__attribute__((target("f16c"))) static uint16_t hw_f2h(float x) {
    return (uint16_t)_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT);
}

// Round-to-nearest-even of x to bf16 computed on values in double: the two neighbours that
// truncation gives, the nearer one, ties to the even code. NaNs are handled by the caller.
static uint16_t ref_f2bf(float x) {
    uint32_t u = f2u(x), sign = u & 0x80000000u, a = u & 0x7fffffffu;
    uint32_t lo = a & 0xffff0000u;
    double v = fabs((double)x), vlo = (double)u2f(lo);
    // The neighbour above, as if the exponent range went on (so rounding past the largest
    // finite bf16 gives the Inf pattern lo + 0x10000).
    int e = (int)(lo >> 23);
    double ulp = ldexp(1.0, (e == 0 ? 1 : e) - 127 - 7);
    double vhi = vlo + ulp;
    uint32_t pick;
    if (v - vlo < vhi - v)
        pick = lo;
    else if (v - vlo > vhi - v)
        pick = lo + 0x10000u;
    else
        pick = (lo & 0x10000u) ? lo + 0x10000u : lo;
    return (uint16_t)((sign | pick) >> 16);
}

static void check_f32_to_f16_one(uint32_t u) {
    float x = u2f(u);
    uint16_t a = sm_f32_to_f16(x), b = hw_f2h(x);
    if (a != b && g_failures < 20) {
        fprintf(stderr, "sm_f32_to_f16(0x%08x = %.9g) = 0x%04x, F16C gives 0x%04x\n", u, (double)x,
                a, b);
        g_failures++;
    }
}

static void check_f32_to_bf16_one(uint32_t u) {
    float x = u2f(u);
    uint16_t a = sm_f32_to_bf16(x);
    bool ok;
    if ((u & 0x7fffffffu) > 0x7f800000u) // NaN: stays NaN, quiet, same sign, top payload kept
        ok = (a & 0x7f80) == 0x7f80 && (a & 0x40) && (a & 0x8000) == ((u >> 16) & 0x8000) &&
             (a & 0x3f) == ((u >> 16) & 0x3f);
    else
        ok = a == ref_f2bf(x);
    if (!ok && g_failures < 20) {
        fprintf(stderr, "sm_f32_to_bf16(0x%08x = %.9g) = 0x%04x, expected 0x%04x\n", u, (double)x,
                a, ref_f2bf(x));
        g_failures++;
    }
}

static void check_one_float(uint32_t u) {
    if (g_f16c) check_f32_to_f16_one(u);
    check_f32_to_bf16_one(u);
}

static void test_conversions(void) {
    g_f16c = __builtin_cpu_supports("f16c");
    // Every half, both directions where they compose.
    for (uint32_t h = 0; h < 65536; h++) {
        float a = sm_f16_to_f32((uint16_t)h);
        if (g_f16c) {
            float b = hw_h2f((uint16_t)h);
            if (f2u(a) != f2u(b) && g_failures < 20) {
                fprintf(stderr, "sm_f16_to_f32(0x%04x) = 0x%08x, F16C gives 0x%08x\n", h, f2u(a),
                        f2u(b));
                g_failures++;
            }
        }
        // Non-NaN halves survive a round trip through f32 exactly.
        if ((h & 0x7c00) != 0x7c00 || (h & 0x3ff) == 0) CHECK(sm_f32_to_f16(a) == h);
        float bf = sm_bf16_to_f32((uint16_t)h);
        CHECK(f2u(bf) == h << 16);
    }
    // Random bit patterns, and a stride over all of them (every exponent, both signs).
    for (int i = 0; i < (1 << 20); i++) check_one_float((uint32_t)rnd());
    for (uint64_t u = 0; u < (1ull << 32); u += 1021) check_one_float((uint32_t)u);
    // Around every rounding boundary of both formats, for every exponent and sign: the low
    // 13 (f16) or 16 (bf16) bits at just below / at / just above half, with even and odd kept
    // bits, plus the extremes of the dropped bits.
    static const uint32_t low13[] = {0x0fff, 0x1000, 0x1001, 0x0000, 0x0001, 0x1fff};
    static const uint32_t low16[] = {0x7fff, 0x8000, 0x8001, 0x0000, 0x0001, 0xffff};
    for (uint32_t s = 0; s < 2; s++)
        for (uint32_t e = 0; e < 256; e++)
            for (uint32_t keep = 0; keep < 4; keep++)
                for (int k = 0; k < 6; k++) {
                    uint32_t base = s << 31 | e << 23;
                    check_one_float(base | (keep | 0x3fcu) << 13 | low13[k]);
                    check_one_float(base | keep << 13 | low13[k]);
                    check_one_float(base | (keep | 0x7cu) << 16 | low16[k]);
                    check_one_float(base | keep << 16 | low16[k]);
                }
    // Named edges: f16 max, the overflow threshold 65520, the smallest subnormal and half of it,
    // the normal/subnormal boundary, Inf, quiet and signalling NaNs with low and high payloads.
    static const float edges[] = {65504.0f,   65519.996f,   65520.0f,        65536.0f,
                                  0x1.0p-24f, 0x1.0p-25f,   0x1.000002p-25f, 0x1.8p-24f,
                                  0x1.0p-14f, 0x1.ff8p-15f, 0x1.ffcp-15f,    3.4028235e38f,
                                  1e-45f,     0.0f};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        check_one_float(f2u(edges[i]));
        check_one_float(f2u(-edges[i]));
    }
    static const uint32_t nans[] = {0x7f800000, 0x7f800001, 0x7f802000, 0x7fc00000, 0x7fffffff,
                                    0xff800001, 0xffc00001, 0x7fa00000, 0x7f8fffff};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) check_one_float(nans[i]);
}

// --- ISA selection ------------------------------------------------------------------------------

// Runs this program with STRUCTMAT_ISA=value and --print-isa; returns its first output word.
static void isa_in_child(const char *self, const char *value, char *out, size_t cap) {
    int fd[2];
    out[0] = 0;
    if (pipe(fd) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        if (value)
            setenv("STRUCTMAT_ISA", value, 1);
        else
            unsetenv("STRUCTMAT_ISA");
        execl(self, self, "--print-isa", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    ssize_t n = read(fd[0], out, cap - 1);
    out[n > 0 ? n : 0] = 0;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    char *nl = strchr(out, '\n');
    if (nl) *nl = 0;
}

static void test_isa(const char *self) {
    sm_isa best = sm_isa_detect();
    for (int l = SM_ISA_SCALAR; l <= SM_ISA_AVX512; l++) {
        if (l > (int)best) {
            CHECK_FAIL(sm_isa_set((sm_isa)l), SM_ERR_UNSUPPORTED, sm_isa_name((sm_isa)l));
            CHECK(sm_isa_active() <= best);
            // A table asked for above the CPU is the best one it has, never an unusable one.
            CHECK(sm_kernels_for((sm_isa)l) == sm_kernels_for(best));
        } else {
            CHECK_OK(sm_isa_set((sm_isa)l));
            CHECK(sm_isa_active() == (sm_isa)l);
            CHECK(sm_kernels_get() == sm_kernels_for((sm_isa)l));
        }
    }
    CHECK(sm_isa_set((sm_isa)7) == SM_ERR_UNSUPPORTED);
    CHECK(sm_isa_set((sm_isa)-1) == SM_ERR_UNSUPPORTED);
    CHECK_OK(sm_isa_set(best));

    char got[64];
    static const char *names[] = {"scalar", "avx2", "avx512"};
    for (int l = 0; l < 3; l++) {
        isa_in_child(self, names[l], got, sizeof got);
        const char *want = l <= (int)best ? names[l] : sm_isa_name(best); // above: ignored
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "STRUCTMAT_ISA=%s: active level \"%s\", expected \"%s\"\n", names[l],
                    got, want);
            g_failures++;
        }
    }
    isa_in_child(self, "bogus", got, sizeof got);
    CHECK(strcmp(got, sm_isa_name(best)) == 0);
    isa_in_child(self, NULL, got, sizeof got);
    CHECK(strcmp(got, sm_isa_name(best)) == 0);
}

// --- kernels
// --------------------------------------------------------------------------------------

static const char *k_store_names[SM_STORE_COUNT] = {"f32", "f16", "bf16", "q8", "q4"};

static bool is_quant(sm_store s) {
    return s == SM_STORE_Q8 || s == SM_STORE_Q4;
}

static int64_t ngroups(int64_t cols) {
    return (cols + 63) / 64;
}

// Entry (r, c) of a factor decoded from the definition in kernels.h, independently of the
// library's kernels (f16 through F16C when present).
static float ref_value(sm_store st, const unsigned char *data, const uint16_t *scales, int64_t cols,
                       int64_t r, int64_t c) {
    size_t rb = st == SM_STORE_F32  ? (size_t)cols * 4
                : st == SM_STORE_Q8 ? (size_t)cols
                : st == SM_STORE_Q4 ? (size_t)(cols + 1) / 2
                                    : (size_t)cols * 2;
    const unsigned char *row = data + (size_t)r * rb;
    uint16_t h;
    float s = 0;
    if (is_quant(st))
        s = g_f16c ? hw_h2f(scales[r * ngroups(cols) + c / 64])
                   : sm_f16_to_f32(scales[r * ngroups(cols) + c / 64]);
    switch (st) {
    case SM_STORE_F32: {
        float v;
        memcpy(&v, row + 4 * c, 4);
        return v;
    }
    case SM_STORE_F16:
        memcpy(&h, row + 2 * c, 2);
        return g_f16c ? hw_h2f(h) : sm_f16_to_f32(h);
    case SM_STORE_BF16:
        memcpy(&h, row + 2 * c, 2);
        return u2f((uint32_t)h << 16);
    case SM_STORE_Q8:
        return s * (float)(int8_t)row[c];
    default: {
        int nib = (row[c / 2] >> (4 * (c & 1))) & 15;
        return s * (float)(nib < 8 ? nib : nib - 16);
    }
    }
}

typedef struct kbuf {
    unsigned char *data_mem, *data; // data = data_mem + offset (unaligned)
    uint16_t *scales_mem, *scales;
    float *x_mem, *x;
    size_t data_bytes;
} kbuf;

// Random codes for a (rows, cols) factor. finite: values a gemv can meet (weights in [-1, 1),
// scales in [1e-3, 1e-1], both signs); otherwise raw bits (f16/bf16 NaN, Inf, subnormals).
static void make_factor(kbuf *b, sm_store st, int64_t rows, int64_t cols, bool finite, int offset) {
    size_t rb = sm_store_row_bytes(st, cols);
    b->data_bytes = (size_t)rows * rb;
    // Elements stay aligned to their own size; vectors do not.
    size_t elem = st == SM_STORE_F32 ? 4 : (st == SM_STORE_F16 || st == SM_STORE_BF16) ? 2 : 1;
    size_t off = (size_t)offset * elem;
    b->data_mem = malloc(b->data_bytes + off + 1);
    b->data = b->data_mem + off;
    int64_t nsc = rows * ngroups(cols);
    b->scales_mem = malloc(sizeof(uint16_t) * (size_t)(nsc + offset + 1));
    b->scales = b->scales_mem + offset;
    b->x_mem = malloc(sizeof(float) * (size_t)(cols + offset + 1));
    b->x = b->x_mem + offset;
    for (int64_t i = 0; i < cols; i++) b->x[i] = (float)rnd_unit();
    for (int64_t i = 0; i < nsc; i++) {
        float s = (float)(1e-3 + 0.099 * (rnd_unit() * 0.5 + 0.5)) * (rnd() & 1 ? -1.0f : 1.0f);
        b->scales[i] = sm_f32_to_f16(s);
    }
    for (int64_t r = 0; r < rows; r++) {
        unsigned char *row = b->data + (size_t)r * rb;
        for (int64_t c = 0; c < cols; c++) {
            float w = (float)rnd_unit();
            uint16_t h;
            switch (st) {
            case SM_STORE_F32:
                memcpy(row + 4 * c, &w, 4);
                break;
            case SM_STORE_F16:
                h = finite ? sm_f32_to_f16(w) : (uint16_t)rnd();
                memcpy(row + 2 * c, &h, 2);
                break;
            case SM_STORE_BF16:
                h = finite ? sm_f32_to_bf16(w) : (uint16_t)rnd();
                memcpy(row + 2 * c, &h, 2);
                break;
            default:
                break;
            }
        }
        // q8: any byte (-128 included); q4: any byte, so the pad nibble of an odd row is junk
        // that the kernels must ignore.
        if (is_quant(st))
            for (size_t i = 0; i < rb; i++) row[i] = (unsigned char)rnd();
    }
}

static void free_factor(kbuf *b) {
    free(b->data_mem);
    free(b->scales_mem);
    free(b->x_mem);
}

#define CANARY 0x7fa5a5a5u // a NaN no kernel produces

static void check_decode(const sm_kernels *k, const sm_kernels *ref, sm_isa isa, sm_store st,
                         int64_t rows, int64_t cols, const kbuf *b) {
    int64_t n = rows * cols;
    uint32_t *out = malloc(sizeof(float) * (size_t)(n + 1 + 16));
    uint32_t *o = out + 1; // unaligned for the vector stores too
    float *want = malloc(sizeof(float) * (size_t)(n + 1));
    for (int64_t i = 0; i < n + 16; i++) o[i] = CANARY;
    k->decode[st](rows, cols, b->data, b->scales, (float *)o);
    ref->decode[st](rows, cols, b->data, b->scales, want);
    for (int64_t r = 0, bad = 0; r < rows && !bad; r++)
        for (int64_t c = 0; c < cols; c++) {
            float v = ref_value(st, b->data, b->scales, cols, r, c);
            uint32_t got = o[r * cols + c];
            if (got != f2u(v) || f2u(want[r * cols + c]) != f2u(v)) {
                fprintf(stderr,
                        "decode %s/%s %lldx%lld at (%lld, %lld): 0x%08x, scalar 0x%08x, "
                        "expected 0x%08x\n",
                        sm_isa_name(isa), k_store_names[st], (long long)rows, (long long)cols,
                        (long long)r, (long long)c, got, f2u(want[r * cols + c]), f2u(v));
                g_failures++;
                bad = 1;
                break;
            }
        }
    for (int64_t i = n; i < n + 16; i++)
        if (o[i] != CANARY) {
            fprintf(stderr, "decode %s/%s %lldx%lld wrote past the output\n", sm_isa_name(isa),
                    k_store_names[st], (long long)rows, (long long)cols);
            g_failures++;
            break;
        }
    free(out);
    free(want);
}

static void check_gemv(const sm_kernels *k, const sm_kernels *ref, sm_isa isa, sm_store st,
                       int64_t rows, int64_t cols, const kbuf *b) {
    float *ymem = malloc(sizeof(float) * (size_t)(rows + 1 + 8));
    float *y = ymem + 1;
    float *yr = malloc(sizeof(float) * (size_t)(rows + 1));
    for (int64_t i = 0; i < rows + 8; i++) y[i] = u2f(CANARY);
    k->gemv[st](rows, cols, b->data, b->scales, b->x, y);
    ref->gemv[st](rows, cols, b->data, b->scales, b->x, yr);
    for (int64_t r = 0; r < rows; r++) {
        double exact = 0, mag = 0;
        for (int64_t c = 0; c < cols; c++) {
            double w = ref_value(st, b->data, b->scales, cols, r, c), xv = b->x[c];
            exact += w * xv;
            mag += fabs(w * xv);
        }
        double tol = 1e-5 * mag + 1e-30;
        double e_k = fabs((double)y[r] - exact), e_ref = fabs((double)yr[r] - exact);
        double e_kr = fabs((double)y[r] - (double)yr[r]);
        if (!(e_k <= tol) || !(e_ref <= tol) || !(e_kr <= 2 * tol)) {
            fprintf(stderr,
                    "gemv %s/%s %lldx%lld row %lld: %.9g, scalar %.9g, exact %.9g "
                    "(tolerance %.3g)\n",
                    sm_isa_name(isa), k_store_names[st], (long long)rows, (long long)cols,
                    (long long)r, (double)y[r], (double)yr[r], exact, tol);
            g_failures++;
            break;
        }
    }
    for (int64_t i = rows; i < rows + 8; i++)
        if (f2u(y[i]) != CANARY) {
            fprintf(stderr, "gemv %s/%s %lldx%lld wrote past y\n", sm_isa_name(isa),
                    k_store_names[st], (long long)rows, (long long)cols);
            g_failures++;
            break;
        }
    free(ymem);
    free(yr);
}

static void test_kernels(void) {
    static const int64_t cols_list[] = {1, 3, 15, 16, 17, 31, 63, 64, 65, 127, 130, 1000};
    static const int64_t rows_list[] = {1, 2, 5, 33};
    // rows * cols above 1 << 18: the threaded paths.
    static const int64_t big[][2] = {{517, 1000}, {2051, 130}, {64, 4099}};
    const sm_kernels *ref = sm_kernels_for(SM_ISA_SCALAR);
    int offset = 0;
    for (int l = SM_ISA_SCALAR; l <= (int)sm_isa_detect(); l++) {
        const sm_kernels *k = sm_kernels_for((sm_isa)l);
        for (int s = 0; s < SM_STORE_COUNT; s++) {
            sm_store st = (sm_store)s;
            int ncase = 4 * 12 + 3;
            for (int ci = 0; ci < ncase; ci++) {
                int64_t rows = ci < 48 ? rows_list[ci / 12] : big[ci - 48][0];
                int64_t cols = ci < 48 ? cols_list[ci % 12] : big[ci - 48][1];
                offset = offset % 7 + 1;
                kbuf b;
                make_factor(&b, st, rows, cols, true, offset);
                check_decode(k, ref, (sm_isa)l, st, rows, cols, &b);
                check_gemv(k, ref, (sm_isa)l, st, rows, cols, &b);
                free_factor(&b);
                if (st == SM_STORE_F16 || st == SM_STORE_BF16) {
                    make_factor(&b, st, rows, cols, false, offset);
                    check_decode(k, ref, (sm_isa)l, st, rows, cols, &b);
                    free_factor(&b);
                }
            }
            // No columns: y is zero, and nothing is read (f32 is cblas, which refuses lda = 0).
            if (st == SM_STORE_F32) continue;
            float y[3] = {1, 1, 1}, x = 0;
            uint16_t dummy = 0;
            k->gemv[st](3, 0, &dummy, &dummy, &x, y);
            CHECK(y[0] == 0 && y[1] == 0 && y[2] == 0);
        }
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--print-isa") == 0) {
        printf("%s\n", sm_isa_name(sm_isa_active()));
        return 0;
    }
    test_conversions();
    test_kernels();
    test_isa(argv[0]);
    TEST_END();
}
